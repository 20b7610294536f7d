/* common/buf.h - a growable byte buffer with a hard cap.
 *
 * Every buffer a peer can grow has a cap; appending past it fails with
 * -E2BIG and leaves the buffer unchanged. Data lives in [off, len): bytes are
 * consumed from the front without moving until wg_buf_compact(). */
#ifndef WG_COMMON_BUF_H
#define WG_COMMON_BUF_H

#include <stddef.h>

struct wg_buf {
    char *data;
    size_t off; /* first unconsumed byte */
    size_t len; /* end of data */
    size_t cap; /* allocated size */
    size_t max; /* hard cap on cap */
};

void wg_buf_init(struct wg_buf *b, size_t max);
/* Frees the storage; the buffer can be reused afterwards. NULL-safe. */
void wg_buf_release(struct wg_buf *b);
/* Returns 0, -ENOMEM or -E2BIG. */
int wg_buf_append(struct wg_buf *b, const void *p, size_t n);
int wg_buf_appendf(struct wg_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Makes room for at least n more bytes at the end. Returns 0, -ENOMEM or -E2BIG. */
int wg_buf_reserve(struct wg_buf *b, size_t n);
static inline size_t wg_buf_size(const struct wg_buf *b)
{
    return b->len - b->off;
}
static inline const char *wg_buf_head(const struct wg_buf *b)
{
    return b->data + b->off;
}
/* Drops n bytes from the front; when empty, resets offsets to 0. */
void wg_buf_consume(struct wg_buf *b, size_t n);
/* Moves unconsumed bytes to the start of the storage. */
void wg_buf_compact(struct wg_buf *b);
/* Empties the buffer; keeps the storage. */
static inline void wg_buf_reset(struct wg_buf *b)
{
    b->off = b->len = 0;
}

#endif
