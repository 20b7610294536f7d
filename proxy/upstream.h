/* proxy/upstream.h - upstream TCP connections and their keep-alive pool.
 *
 * Idle connections are kept per upstream address (IP and port) and owner,
 * most recently used first, up to upstream.keepalive_max each, and closed
 * after upstream.keepalive_idle. While idle a connection is read from, so
 * that a close or stray bytes from the upstream remove it from the pool at
 * once.
 *
 * The owner is what the address belonged to when the connection was
 * opened: "" for a fixed upstream, a session's container for a session
 * route (see proxy/session_cache.h). An address can pass from one session's
 * container to another's; a connection is handed out only to a borrower
 * that names the same owner, so one made for a session is never reused for
 * another. An open TCP connection cannot move to another container, and a
 * container closes its connections before its address can go to another:
 * so an idle connection whose peer is still there (checked with one
 * recv(MSG_PEEK) when it counts) proves that its owner still holds the
 * address. WG_POOL_PROVEN lends only such a connection, or connects anew
 * while one proves the IP.
 *
 * A struct wg_upconn is owned by the pool. The user (a client connection)
 * borrows it between wg_pool_acquire() and wg_pool_release(); while
 * borrowed, its tcp handle's reads and writes belong to the user, and
 * wg_upconn_user() gives the user pointer back in callbacks. */
#ifndef WG_PROXY_UPSTREAM_H
#define WG_PROXY_UPSTREAM_H

#include <stdbool.h>
#include <sys/socket.h>
#include <uv.h>

#include "common/config.h"
#include "common/log.h"

struct wg_pool;   /* opaque */
struct wg_upconn; /* opaque */

/* An owner: at most this many bytes. */
#define WG_POOL_OWNER_MAX 160

enum wg_pool_mode {
    WG_POOL_ANY = 0, /* a pooled connection of the owner, else a new one */
    WG_POOL_FRESH,   /* always a new connection */
    WG_POOL_PROVEN,  /* a pooled connection of the owner that is alive now, else a new one
                      * while an idle connection of the owner to the same IP (any port)
                      * is alive now; else UV_ENOENT */
};

/* status is 0, or a negative libuv error (UV_ECONNREFUSED, UV_ECANCELED...). */
typedef void wg_upconn_connect_cb(struct wg_upconn *uc, int status, void *user);
/* The borrower's read callbacks. A connection keeps reading for its whole
 * life (no epoll change per request); the pool hands reads to the borrower
 * while borrowed, and treats any read while idle as the end. */
typedef void wg_upconn_alloc_cb(void *user, uv_buf_t *buf);
typedef void wg_upconn_read_cb(void *user, ssize_t nread, const uv_buf_t *buf);

struct wg_upconn_reader {
    wg_upconn_alloc_cb *alloc;
    wg_upconn_read_cb *read;
};

int wg_pool_new(uv_loop_t *loop, const struct wg_upstream_cfg *cfg, struct wg_log *log,
                struct wg_pool **ret_pool);
/* Closes every idle connection; borrowed ones are closed when released.
 * The pool frees itself once all its handles are closed. NULL-safe. */
void wg_pool_free(struct wg_pool *pool);

/* Borrows a connection to addr, made for owner (a string of at most
 * WG_POOL_OWNER_MAX bytes, copied; NULL is ""), for user, as mode says. A
 * pooled one is returned at once with *ret_reused = true and cb is never
 * called. Otherwise a connect starts, *ret_reused = false, and cb runs
 * once, never inside this call. Returns 0 or a negative libuv error
 * (UV_ENOENT: WG_POOL_PROVEN found no proof; UV_EINVAL: the owner is too
 * long). */
int wg_pool_acquire(struct wg_pool *pool, const struct sockaddr *addr, const char *owner,
                    enum wg_pool_mode mode, const struct wg_upconn_reader *reader,
                    wg_upconn_connect_cb *cb, void *user, struct wg_upconn **ret_uc,
                    bool *ret_reused);

/* Flow control for the borrower: stop or resume reading (idempotent). */
void wg_upconn_read(struct wg_upconn *uc, bool on);

/* Gives a borrowed connection back: pooled if reusable (the user has no
 * write in flight), else closed. The user must
 * not touch uc afterwards. */
void wg_pool_release(struct wg_pool *pool, struct wg_upconn *uc, bool reusable);

/* Drops the idle connections to addr's IP, whatever the port and owner (a
 * container moved or stopped; routes may reach it on several ports). */
void wg_pool_drop_ip(struct wg_pool *pool, const struct sockaddr *addr);

uv_stream_t *wg_upconn_stream(struct wg_upconn *uc);
/* Idle connections held, for metrics and tests. */
size_t wg_pool_idle_count(const struct wg_pool *pool);

#endif
