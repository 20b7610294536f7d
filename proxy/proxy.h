/* proxy/proxy.h - the data plane of one event loop: the public listener,
 * client connections, the router and the upstream pool.
 *
 * Everything hangs off struct wg_proxy; nothing is global: each worker
 * loop (src/workers.c) owns one, and what they share is passed in
 * (struct wg_proxy_shared, the TLS state). */
#ifndef WG_PROXY_PROXY_H
#define WG_PROXY_PROXY_H

#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "common/config.h"
#include "common/hist.h"
#include "common/log.h"
#include "proxy/h2.h"

struct wg_proxy; /* opaque */
struct wg_router;

/* How a request held for a session's wake left the hold. */
enum wg_proxy_hold_outcome {
    WG_HOLD_SERVED = 0, /* the session ran: sent to its upstream */
    WG_HOLD_TIMEOUT,    /* sessions.wake_timeout passed: 504 */
    WG_HOLD_FAILED,     /* answered otherwise: the wake failed, the session went away, Redis */
    WG_HOLD_ABANDONED,  /* the client closed (or shutdown closed it) while held */
    WG_HOLD_PAGE,       /* a navigation held past page_after: the waking page */
    WG_HOLD_OUTCOMES,
};

/* Counters for health and metrics; read-only for callers. Atomics: the
 * loop writes them, the main thread reads them for /metrics while worker
 * loops run (an increment is one locked add, uncontended). */
struct wg_proxy_stats {
    _Atomic uint64_t connections_accepted;
    _Atomic uint64_t connections_refused; /* over limits.connections_max */
    _Atomic uint64_t connections_open;
    _Atomic uint64_t requests;
    _Atomic uint64_t responses_by_class[6]; /* index status/100: [1]..[5] */
    _Atomic uint64_t upstream_errors;       /* connect failures, resets, bad framing */
    _Atomic uint64_t upstream_retries;
    /* Requests for a running session Redis could not confirm
     * (redis.outage_grace): sent where a live connection proved the
     * container's address; held for want of such a proof; and of those,
     * answered 503 because Redis still could not confirm it. */
    _Atomic uint64_t session_unconfirmed_proven;
    _Atomic uint64_t session_doubt_held;
    _Atomic uint64_t session_doubt_refused;
    _Atomic uint64_t session_rechecks; /* a running session's failed connect held to look again */
    _Atomic uint64_t port_unknown;     /* {port} routes: 404 for a port name the template lacks */
    struct wg_h2_stats h2;             /* HTTP/2 sessions and streams (proxy/h2.h) */
    _Atomic uint64_t bytes_in;         /* from clients */
    _Atomic uint64_t bytes_out;        /* to clients */
    /* Bytes in write requests now, [0] to clients, [1] to upstreams: what
     * sockets did not take. Each connection keeps its share under
     * limits.buffer_high_water per direction. */
    _Atomic uint64_t buffered_bytes[2];
    /* One observation per response counted in responses_by_class: from the
     * first byte of the head to the end of the response (a 101: its head). */
    struct wg_hist request_duration;
    /* One per request that got a response byte from an upstream: from taking
     * the upstream connection (its connect included when not pooled) to the
     * first byte read from it; the span of upstream_ms in the access log. */
    struct wg_hist upstream_latency;
    /* Requests held while their session woke (not running when they came):
     * from the start of the hold to the first byte from the session. */
    struct wg_hist wake_first_byte;
    _Atomic uint64_t held_released[WG_HOLD_OUTCOMES]; /* the same requests, by outcome */
    /* Private session routes: 401s, and link visits turned into a cookie
     * (the 303 that sets it). */
    _Atomic uint64_t access_denied;
    _Atomic uint64_t access_links;
};

/* cfg and log must outlive the proxy. Takes ownership of router. On success
 * *ret_proxy is live; free it with wg_proxy_free() after shutdown. */
int wg_proxy_new(uv_loop_t *loop, const struct wg_config *cfg, struct wg_log *log,
                 struct wg_router *router, struct wg_proxy **ret_proxy);

/* Binds and listens on cfg->listen. Returns 0 or a negative libuv error;
 * *ret_port (may be NULL) gets the bound port (useful for port 0). */
int wg_proxy_listen(struct wg_proxy *px, int *ret_port);
/* The same for one of several worker loops: with SO_REUSEPORT, on port
 * (and the tls.redirect_listen one on redirect_port) when > 0, as the
 * first loop was given for port 0. *ret_redirect_port (may be NULL) gets
 * the redirect listener's bound port, when there is one. */
int wg_proxy_listen_shared(struct wg_proxy *px, int port, int redirect_port, int *ret_port,
                           int *ret_redirect_port);

/* Replaces the routing table (SIGHUP). Requests already routed keep the
 * upstream they were given; new heads use the new table. Takes ownership. */
void wg_proxy_set_router(struct wg_proxy *px, struct wg_router *router);

struct wg_session_cache;
/* Gives the proxy the session cache that session routes resolve through
 * (borrowed; must outlive the proxy's connections). */
void wg_proxy_set_session_cache(struct wg_proxy *px, struct wg_session_cache *cache);

typedef void wg_proxy_done_cb(void *arg);
/* Stops accepting, closes idle connections, lets requests in flight finish
 * for up to grace_ms, then closes what is left. done runs once, when no
 * client connection remains. */
void wg_proxy_shutdown(struct wg_proxy *px, uint64_t grace_ms, wg_proxy_done_cb *done, void *arg);

const struct wg_proxy_stats *wg_proxy_stats(const struct wg_proxy *px);
/* access.forward_auth's client, NULL without it. */
struct wg_fauth *wg_proxy_fauth(const struct wg_proxy *px);
/* Responses by route and status class (by_class[1]..[5], index status/100).
 * Row 0 is route "none": no route matched, or the request was refused before
 * it was routed. Row i > 0 is routes[i - 1] of the current table, labelled
 * with wg_router_label(). Sums over the rows equal responses_by_class, except
 * for responses of requests in flight across a reload whose route changed.
 * On a reload (wg_proxy_set_router) a route whose label is unchanged keeps its
 * totals (and its requests in flight are counted in it); a changed, moved or
 * new route starts at 0, and the rows of removed routes are dropped. Returns
 * false when i is past the last row. */
bool wg_proxy_route_stats(const struct wg_proxy *px, size_t i, const char **ret_label,
                          const _Atomic uint64_t **ret_by_class);
/* A reader on another thread than the proxy's loop holds this around its
 * wg_proxy_route_stats() calls: a reload replaces the rows and labels. */
void wg_proxy_routes_lock(const struct wg_proxy *px);
void wg_proxy_routes_unlock(const struct wg_proxy *px);

/* What the worker loops of one gateway share (owned by the binary's
 * wiring, outliving every proxy that points to it). */
struct wg_proxy_shared {
    /* Client connections open in every loop: limits.connections_max holds
     * for the gateway, not per loop. */
    _Atomic uint64_t connections_open;
    /* The last connection id given: ids are unique in the gateway's log. */
    _Atomic uint64_t conn_id;
};
/* Counts this proxy's connections in sh (NULL: in its own counter). Call
 * before wg_proxy_listen(). */
void wg_proxy_set_shared(struct wg_proxy *px, struct wg_proxy_shared *sh);
/* Idle upstream connections in the keep-alive pool now. */
size_t wg_proxy_upstream_idle(const struct wg_proxy *px);
/* Whether the public listener is bound and accepting. */
int wg_proxy_listening(const struct wg_proxy *px);

struct wg_tls;
/* TLS on the public listener (proxy/tls.h): connections accepted from now
 * on speak TLS. Takes ownership; call before wg_proxy_listen(). */
void wg_proxy_set_tls(struct wg_proxy *px, struct wg_tls *tls);
/* The listener's TLS state (for reloads and metrics), NULL: plain HTTP. */
struct wg_tls *wg_proxy_tls(const struct wg_proxy *px);

/* Closes every handle; the proxy frees itself once they are closed, so run
 * the loop afterwards. NULL-safe. */
void wg_proxy_free(struct wg_proxy *px);

#endif
