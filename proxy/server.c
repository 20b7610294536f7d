/* proxy/server.c - the public listener and the per-loop proxy context. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/access.h"
#include "common/net.h"
#include "proxy/forward_auth.h"
#include "proxy/server.h"
#include "proxy/session_cache.h"
#include "proxy/tls.h"
#include "proxy/tls_redirect.h"

static void maybe_finish(struct wg_proxy *px);

int wg_proxy_new(uv_loop_t *loop, const struct wg_config *cfg, struct wg_log *log,
                 struct wg_router *router, struct wg_proxy **ret_proxy)
{
    struct wg_proxy *px = calloc(1, sizeof(*px));
    int r = -ENOMEM;

    if (px == NULL)
        goto out;
    px->loop = loop;
    px->cfg = cfg;
    px->log = log;
    wg_list_init(&px->conns);
    px->fields = calloc(cfg->limits.header_count_max + 1, sizeof(*px->fields));
    if (px->fields == NULL)
        goto out_free;
    px->gw_open = &px->own_open;
    px->conn_id = &px->own_conn_id;
    px->route_nrows = wg_router_len(router) + 1;
    px->route_rows = calloc(px->route_nrows, sizeof(*px->route_rows));
    if (px->route_rows == NULL)
        goto out_fields;
    r = uv_mutex_init(&px->rows_lock);
    if (r < 0) {
        free(px->route_rows);
        goto out_fields;
    }
    wg_hist_init(&px->stats.request_duration, wg_hist_latency_bounds,
                 WG_HIST_LEN(wg_hist_latency_bounds));
    wg_hist_init(&px->stats.upstream_latency, wg_hist_latency_bounds,
                 WG_HIST_LEN(wg_hist_latency_bounds));
    wg_hist_init(&px->stats.wake_first_byte, wg_hist_wake_bounds, WG_HIST_LEN(wg_hist_wake_bounds));
    if (cfg->access.secret != NULL) {
        r = wg_access_key_new(cfg->access.secret, cfg->access.secret_len, &px->access_key);
        if (r < 0)
            goto out_rows;
    }
    if (cfg->access.forward_auth.url != NULL) {
        r = wg_fauth_new(loop, &cfg->access.forward_auth, log, &px->fauth);
        if (r < 0)
            goto out_key;
    }
    r = wg_pool_new(loop, &cfg->upstream, log, &px->pool);
    if (r < 0)
        goto out_key;
    r = uv_tcp_init(loop, &px->listener);
    if (r < 0)
        goto out_pool;
    px->listener.data = px;
    r = uv_timer_init(loop, &px->grace_timer);
    if (r < 0) {
        /* The listener is initialised: it must be closed, not freed. */
        px->open_handles = 1;
        px->freeing = true;
        px->router = router;
        wg_pool_free(px->pool);
        px->pool = NULL;
        uv_close((uv_handle_t *)&px->listener, NULL);
        return r;
    }
    px->grace_timer.data = px;
    px->open_handles = 2;
    wg_conn_settings_init(px);
    px->router = router;
    *ret_proxy = px;
    return 0;

out_pool:
    wg_pool_free(px->pool);
out_key:
    wg_fauth_free(px->fauth);
    wg_access_key_free(px->access_key);
out_rows:
    uv_mutex_destroy(&px->rows_lock);
    free(px->route_rows);
out_fields:
    free(px->fields);
out_free:
    free(px);
out:
    return r;
}

static void on_connection(uv_stream_t *server, int status)
{
    struct wg_proxy *px = server->data;
    if (status < 0) {
        WG_WARN(px->log, "proxy", "accept failed", "error=%s", uv_strerror(status));
        return;
    }
    wg_conn_accept(px);
}

/* port, redirect_port < 0: bind alone (one loop); >= 0: with SO_REUSEPORT
 * beside the other loops, on that port when > 0. */
static int listen_at(struct wg_proxy *px, int port, int redirect_port, int *ret_port,
                     int *ret_redirect_port)
{
    const struct wg_config *cfg = px->cfg;
    const struct sockaddr *sa = (const struct sockaddr *)&cfg->listen.sa;
    int bound = 0;
    int r = port < 0
                ? wg_net_listen(&px->listener, sa, 4096, on_connection, &bound)
                : wg_net_listen_reuseport(&px->listener, sa, port, 4096, on_connection, &bound);
    if (r < 0)
        return r;
    px->listening = true;
    if (ret_port != NULL)
        *ret_port = bound;
    if (px->tls != NULL && cfg->tls.redirect_listen.text != NULL) {
        int rport = 0;
        r = wg_redirect_start(px->loop, cfg, px->log, bound, redirect_port, &px->redirect, &rport);
        if (r < 0) {
            WG_ERROR(px->log, "proxy", "cannot listen", "tls.redirect_listen=%s error=\"%s\"",
                     cfg->tls.redirect_listen.text, uv_strerror(r));
            return r;
        }
        if (ret_redirect_port != NULL)
            *ret_redirect_port = rport;
        if (redirect_port <= 0) /* once: alone, or the first loop */
            WG_INFO(px->log, "proxy", "redirecting plain HTTP to https",
                    "redirect_listen=%s port=%d", cfg->tls.redirect_listen.text, rport);
    }
    return 0;
}

int wg_proxy_listen(struct wg_proxy *px, int *ret_port)
{
    return listen_at(px, -1, -1, ret_port, NULL);
}

int wg_proxy_listen_shared(struct wg_proxy *px, int port, int redirect_port, int *ret_port,
                           int *ret_redirect_port)
{
    return listen_at(px, port, redirect_port, ret_port, ret_redirect_port);
}

/* The old row of the route labelled like routes[i] of the new table, or 0
 * (none is row 0 of both, so 0 never names a route here). Reloads are rare
 * and tables small: a linear search per route. */
static size_t old_row_of(const struct wg_proxy *px, const char *label)
{
    for (size_t j = 1; j < px->route_nrows; j++) {
        const char *old = wg_router_label(px->router, j - 1);
        if (old != NULL && strcmp(old, label) == 0)
            return j;
    }
    return 0;
}

void wg_proxy_set_router(struct wg_proxy *px, struct wg_router *router)
{
    size_t n = wg_router_len(router) + 1;
    struct wg_route_row *rows = calloc(n, sizeof(*rows));
    uint32_t *map = px->route_nrows > 0 ? calloc(px->route_nrows, sizeof(*map)) : NULL;

    if (rows == NULL || (px->route_nrows > 0 && map == NULL)) {
        WG_WARN(px->log, "proxy", "out of memory, counting no more requests per route",
                "routes=%zu", n - 1);
        free(rows);
        rows = NULL;
        n = 0;
        wg_conn_remap_routes(px, NULL, px->route_nrows);
    } else if (px->route_nrows > 0) {
        /* Totals follow their label: an unchanged route keeps counting. */
        rows[0] = px->route_rows[0];
        for (size_t j = 1; j < px->route_nrows; j++)
            map[j] = WG_ROUTE_SLOT_UNCOUNTED;
        for (size_t i = 1; i < n; i++) {
            size_t j = old_row_of(px, wg_router_label(router, i - 1));
            if (j > 0) {
                rows[i] = px->route_rows[j];
                map[j] = (uint32_t)i;
            }
        }
        wg_conn_remap_routes(px, map, px->route_nrows);
    }
    free(map);
    uv_mutex_lock(&px->rows_lock);
    struct wg_route_row *old_rows = px->route_rows;
    struct wg_router *old_router = px->router;
    px->route_rows = rows;
    px->route_nrows = n;
    px->router = router;
    uv_mutex_unlock(&px->rows_lock);
    free(old_rows);
    /* Connections copy the upstream they were routed to, so the old table
     * can go at once. */
    wg_router_free(old_router);
}

/* The lock is not part of what px is to a reader: const readers take it. */
void wg_proxy_routes_lock(const struct wg_proxy *px)
{
    uv_mutex_lock((uv_mutex_t *)&px->rows_lock);
}

void wg_proxy_routes_unlock(const struct wg_proxy *px)
{
    uv_mutex_unlock((uv_mutex_t *)&px->rows_lock);
}

void wg_proxy_set_shared(struct wg_proxy *px, struct wg_proxy_shared *sh)
{
    px->gw_open = sh != NULL ? &sh->connections_open : &px->own_open;
    px->conn_id = sh != NULL ? &sh->conn_id : &px->own_conn_id;
}

bool wg_proxy_route_stats(const struct wg_proxy *px, size_t i, const char **ret_label,
                          const _Atomic uint64_t **ret_by_class)
{
    const char *label = i == 0 ? "none" : wg_router_label(px->router, i - 1);

    if (i >= px->route_nrows || label == NULL)
        return false;
    *ret_label = label;
    *ret_by_class = px->route_rows[i].by_class;
    return true;
}

static void handle_closed(uv_handle_t *h)
{
    struct wg_proxy *px = h->data;
    px->open_handles--;
    maybe_finish(px);
}

static void grace_expired(uv_timer_t *t)
{
    struct wg_proxy *px = t->data;
    WG_WARN(px->log, "proxy", "shutdown grace expired, closing remaining connections",
            "open=%" PRIu64, px->stats.connections_open);
    wg_conn_close_all(px);
}

static void maybe_finish(struct wg_proxy *px)
{
    if (px->shutting_down && px->done_cb != NULL && px->live_conns == 0) {
        wg_proxy_done_cb *cb = px->done_cb;
        px->done_cb = NULL;
        if (!px->freeing)
            uv_timer_stop(&px->grace_timer);
        cb(px->done_arg);
        return; /* cb may have freed px */
    }
    if (px->freeing && px->open_handles == 0 && px->live_conns == 0) {
        wg_conn_free_cache(px);
        wg_access_key_free(px->access_key);
        wg_fauth_free(px->fauth);
        wg_tls_free(px->tls);
        free(px->route_rows);
        uv_mutex_destroy(&px->rows_lock);
        wg_router_free(px->router);
        free(px->fields);
        free(px);
    }
}

void wg_proxy_conn_gone(struct wg_proxy *px)
{
    px->live_conns--;
    maybe_finish(px);
}

static void stop_listening(struct wg_proxy *px)
{
    if (!px->listening)
        return;
    px->listening = false;
    wg_redirect_free(px->redirect);
    px->redirect = NULL;
    uv_read_stop((uv_stream_t *)&px->listener);
    /* Closing the socket makes new connects fail fast instead of queueing. */
    uv_close((uv_handle_t *)&px->listener, handle_closed);
}

void wg_proxy_shutdown(struct wg_proxy *px, uint64_t grace_ms, wg_proxy_done_cb *done, void *arg)
{
    if (px->shutting_down)
        return;
    px->shutting_down = true;
    px->done_cb = done;
    px->done_arg = arg;
    stop_listening(px);
    WG_INFO(px->log, "proxy", "draining connections", "open=%" PRIu64 " grace_ms=%" PRIu64,
            px->stats.connections_open, grace_ms);
    wg_conn_drain_all(px);
    uv_timer_start(&px->grace_timer, grace_expired, grace_ms, 0);
    maybe_finish(px);
}

static void session_addr_gone(void *arg, const char *ip)
{
    struct wg_proxy *px = arg;
    struct sockaddr_storage sa;
    if (uv_ip4_addr(ip, 0, (struct sockaddr_in *)&sa) != 0 &&
        uv_ip6_addr(ip, 0, (struct sockaddr_in6 *)&sa) != 0)
        return;
    size_t before = wg_pool_idle_count(px->pool);
    wg_pool_drop_ip(px->pool, (const struct sockaddr *)&sa);
    wg_conn_addr_gone(px, (const struct sockaddr *)&sa);
    WG_DEBUG(px->log, "proxy", "pooled connections dropped: session left its address",
             "ip=%s dropped=%zu", ip, before - wg_pool_idle_count(px->pool));
}

void wg_proxy_set_session_cache(struct wg_proxy *px, struct wg_session_cache *cache)
{
    px->session_cache = cache;
    if (cache != NULL)
        wg_session_cache_on_addr_gone(cache, session_addr_gone, px);
}

struct wg_fauth *wg_proxy_fauth(const struct wg_proxy *px)
{
    return px->fauth;
}

const struct wg_proxy_stats *wg_proxy_stats(const struct wg_proxy *px)
{
    return &px->stats;
}

size_t wg_proxy_upstream_idle(const struct wg_proxy *px)
{
    return px->pool != NULL ? wg_pool_idle_count(px->pool) : 0;
}

void wg_proxy_set_tls(struct wg_proxy *px, struct wg_tls *tls)
{
    wg_tls_free(px->tls);
    px->tls = tls;
}

struct wg_tls *wg_proxy_tls(const struct wg_proxy *px)
{
    return px->tls;
}

int wg_proxy_listening(const struct wg_proxy *px)
{
    return px->listening;
}

void wg_proxy_free(struct wg_proxy *px)
{
    if (px == NULL || px->freeing)
        return;
    px->freeing = true;
    px->done_cb = NULL;
    wg_conn_close_all(px);
    wg_pool_free(px->pool);
    px->pool = NULL;
    if (px->listening) {
        stop_listening(px);
    } else if (!uv_is_closing((uv_handle_t *)&px->listener)) {
        uv_close((uv_handle_t *)&px->listener, handle_closed);
    }
    uv_close((uv_handle_t *)&px->grace_timer, handle_closed);
}
