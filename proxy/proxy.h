/* proxy/proxy.h - the data plane of one event loop: the public listener,
 * client connections, the router and the upstream pool.
 *
 * Everything hangs off struct wg_proxy; nothing is global, so more worker
 * loops can each own one later. */
#ifndef WG_PROXY_PROXY_H
#define WG_PROXY_PROXY_H

#include <stdint.h>
#include <uv.h>

#include "common/config.h"
#include "common/log.h"

struct wg_proxy; /* opaque */
struct wg_router;

/* Counters for health and metrics; read-only for callers. */
struct wg_proxy_stats {
    uint64_t connections_accepted;
    uint64_t connections_refused; /* over limits.connections_max */
    uint64_t connections_open;
    uint64_t requests;
    uint64_t responses_by_class[6]; /* index status/100: [1]..[5] */
    uint64_t upstream_errors;       /* connect failures, resets, bad framing */
    uint64_t upstream_retries;
    uint64_t bytes_in;  /* from clients */
    uint64_t bytes_out; /* to clients */
};

/* cfg and log must outlive the proxy. Takes ownership of router. On success
 * *ret_proxy is live; free it with wg_proxy_free() after shutdown. */
int wg_proxy_new(uv_loop_t *loop, const struct wg_config *cfg, struct wg_log *log,
                 struct wg_router *router, struct wg_proxy **ret_proxy);

/* Binds and listens on cfg->listen. Returns 0 or a negative libuv error;
 * *ret_port (may be NULL) gets the bound port (useful for port 0). */
int wg_proxy_listen(struct wg_proxy *px, int *ret_port);

/* Replaces the routing table (SIGHUP). Requests already routed keep the
 * upstream they were given; new heads use the new table. Takes ownership. */
void wg_proxy_set_router(struct wg_proxy *px, struct wg_router *router);

struct wg_sessions;
/* Gives the proxy the session cache that session routes resolve through
 * (borrowed; must outlive the proxy's connections). */
void wg_proxy_set_sessions(struct wg_proxy *px, struct wg_sessions *sessions);

typedef void wg_proxy_done_cb(void *arg);
/* Stops accepting, closes idle connections, lets requests in flight finish
 * for up to grace_ms, then closes what is left. done runs once, when no
 * client connection remains. */
void wg_proxy_shutdown(struct wg_proxy *px, uint64_t grace_ms, wg_proxy_done_cb *done, void *arg);

const struct wg_proxy_stats *wg_proxy_stats(const struct wg_proxy *px);
/* Idle upstream connections in the keep-alive pool now. */
size_t wg_proxy_upstream_idle(const struct wg_proxy *px);
/* Whether the public listener is bound and accepting. */
int wg_proxy_listening(const struct wg_proxy *px);

/* Closes every handle; the proxy frees itself once they are closed, so run
 * the loop afterwards. NULL-safe. */
void wg_proxy_free(struct wg_proxy *px);

#endif
