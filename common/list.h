/* common/list.h - an intrusive circular doubly linked list.
 * A head is an empty node pointing at itself; entries embed a node. */
#ifndef WG_COMMON_LIST_H
#define WG_COMMON_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct wg_list {
    struct wg_list *prev, *next;
};

#define wg_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static inline void wg_list_init(struct wg_list *h)
{
    h->prev = h->next = h;
}
static inline bool wg_list_empty(const struct wg_list *h)
{
    return h->next == h;
}
/* Whether a node is linked; a removed node is reset to point at itself. */
static inline bool wg_list_linked(const struct wg_list *n)
{
    return n->next != n && n->next != NULL;
}
static inline void wg_list_insert_after(struct wg_list *at, struct wg_list *n)
{
    n->prev = at;
    n->next = at->next;
    at->next->prev = n;
    at->next = n;
}
static inline void wg_list_push_front(struct wg_list *h, struct wg_list *n)
{
    wg_list_insert_after(h, n);
}
static inline void wg_list_push_back(struct wg_list *h, struct wg_list *n)
{
    wg_list_insert_after(h->prev, n);
}
static inline void wg_list_remove(struct wg_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

#endif
