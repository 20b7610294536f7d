/* proxy/server.h - internal to proxy/: the per-loop data plane context that
 * server.c owns and the connection (conn*.c) reads. Not part of the public
 * API (proxy.h). */
#ifndef WG_PROXY_SERVER_H
#define WG_PROXY_SERVER_H

#include <llhttp.h>
#include <uv.h>

#include "common/config.h"
#include "common/list.h"
#include "common/log.h"
#include "proxy/http_rebuild.h"
#include "proxy/proxy.h"
#include "proxy/route.h"
#include "proxy/upstream.h"

#define WG_READ_BUF_SIZE (64 * 1024)

struct exchange;

/* Responses of one route by status class, [1]..[5] (wg_proxy_route_stats()). */
struct wg_route_row {
    _Atomic uint64_t by_class[6];
};
/* A connection's route_slot when its request is counted in no row. */
#define WG_ROUTE_SLOT_UNCOUNTED UINT32_MAX

struct wg_proxy {
    uv_loop_t *loop;
    const struct wg_config *cfg;
    struct wg_log *log;
    struct wg_router *router;
    struct wg_pool *pool;
    struct wg_session_cache *session_cache; /* NULL without Redis: session routes answer 503 */
    /* access.secret_file's key, for the credentials of private session
     * routes; NULL without one (a private route then refuses everyone). */
    struct wg_access_key *access_key;
    struct wg_fauth *fauth;       /* access.forward_auth, NULL without it */
    struct wg_tls *tls;           /* tls: of the public listener, NULL: plain HTTP */
    struct wg_redirect *redirect; /* tls.redirect_listen, NULL without it */

    uv_tcp_t listener;
    _Atomic bool listening; /* read by the main thread for /readyz */
    bool shutting_down;
    bool freeing;
    int open_handles; /* listener, grace timer */
    uv_timer_t grace_timer;
    wg_proxy_done_cb *done_cb;
    void *done_arg;

    struct wg_list conns;
    size_t live_conns; /* allocated, including ones still closing */
    /* Client connections open in the whole gateway, for
     * limits.connections_max: own_open, or the counter every worker loop
     * shares (wg_proxy_set_shared). */
    _Atomic uint64_t *gw_open;
    _Atomic uint64_t own_open;
    /* The last connection id given: own_conn_id, or the gateway's counter
     * (ids name one connection in the logs of every loop). */
    _Atomic uint64_t *conn_id;
    _Atomic uint64_t own_conn_id;
    struct wg_proxy_stats stats;
    /* Row 0 "none", row k + 1 routes[k] of router; NULL (and 0) after an
     * allocation failure on reload: nothing is counted per route then. */
    struct wg_route_row *route_rows;
    size_t route_nrows;
    /* Held by this loop while it replaces router and route_rows (a reload),
     * and by a reader on another thread (the metrics): the loop itself reads
     * them without it, being their only writer. */
    uv_mutex_t rows_lock;

    llhttp_settings_t req_settings;
    llhttp_settings_t resp_settings;

    /* Scratch shared by every connection of this loop: a read lands here and
     * is processed before the next read, and a head's fields are used only
     * while the head is rebuilt. */
    char readbuf[WG_READ_BUF_SIZE];
    struct wg_http_field *fields; /* limits.header_count_max entries */

    /* Per-exchange state kept for reuse (conn.c; the type is in conn_int.h). */
    struct exchange *exchange_cache;
    unsigned exchange_cache_len;
};

/* conn.c: client connections */
void wg_conn_accept(struct wg_proxy *px);
/* Closes idle connections now; busy ones close after their response. */
void wg_conn_drain_all(struct wg_proxy *px);
/* Closes every connection now. */
void wg_conn_close_all(struct wg_proxy *px);
void wg_conn_settings_init(struct wg_proxy *px);
/* A reload replaced the route rows: a request in flight counted in old row
 * j is counted in row map[j] from now on (WG_ROUTE_SLOT_UNCOUNTED: in none);
 * n is the old row count, map NULL means none for all. */
void wg_conn_remap_routes(struct wg_proxy *px, const uint32_t *map, size_t n);
/* A session's container left the address ip (port ignored): connects in
 * flight to it for session routes are given up and their requests look at
 * their session again (conn_session_recheck), since the address may be
 * handed to another session's container next. */
void wg_conn_addr_gone(struct wg_proxy *px, const struct sockaddr *ip);
/* Frees the cached per-exchange state. */
void wg_conn_free_cache(struct wg_proxy *px);
/* server.c: a connection freed its memory. */
void wg_proxy_conn_gone(struct wg_proxy *px);

#endif
