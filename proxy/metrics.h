/* proxy/metrics.h - what the proxy reports on the admin listener: the
 * /metrics families it owns (connections, requests and responses, routes,
 * upstreams, held requests) and its /readyz condition (the public listener
 * is bound). The binary registers both with the admin listener (src/proxy.c).
 * docs/metrics.md lists every family. */
#ifndef WG_PROXY_METRICS_H
#define WG_PROXY_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"

struct wg_proxy;

/* Appends the proxy's Prometheus text exposition to out. */
void wg_proxy_metrics_write(const struct wg_proxy *px, struct wg_buf *out);
/* The same for the n worker loops of one gateway (n >= 1), each family
 * once, every counter, gauge and histogram summed over the loops. Safe on
 * another thread than the loops': the counters are atomics, the route
 * tables are read under their lock. */
void wg_proxy_metrics_write_all(const struct wg_proxy *const *pxs, size_t n, struct wg_buf *out);

/* Whether the proxy is ready to take traffic: its public listener is bound
 * and accepting. When not, why (whylen bytes) gets the reason. */
bool wg_proxy_ready(const struct wg_proxy *px, char *why, size_t whylen);

#endif
