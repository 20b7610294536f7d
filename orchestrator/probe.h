/* orchestrator/probe.h - readiness probe: "does ip:port accept yet?", or,
 * for an HTTP probe, "does GET path answer 2xx or 3xx yet?".
 *
 * Short attempts, retried at a fixed pace, never one long connect: right
 * after a container starts its bridge may have no ARP entry, and a single
 * connect would wait about 1 s for the kernel's ARP retry (DESIGN.md,
 * "Facts"). Each attempt gets timeout_ms; an attempt that failed early (a
 * refused connect; for HTTP also a reset, an early close or a status that
 * is not 2xx/3xx) is followed by the next one interval_ms later, and one
 * that used its whole timeout by the next one at once. The probe runs until
 * an attempt succeeds or it is stopped: the caller owns the deadline.
 *
 * The HTTP probe connects, sends
 *     GET <path> HTTP/1.1\r\nHost: <ip>:<port>\r\nConnection: close\r\n\r\n
 * and succeeds on an "HTTP/1.x 2xx" or "3xx" status line; it reads nothing
 * past that line and closes.
 *
 * Start it only after `docker start` (or unpause) has returned.
 *
 * Logging: none; the caller logs the outcome. */
#ifndef WG_ORCHESTRATOR_PROBE_H
#define WG_ORCHESTRATOR_PROBE_H

#include <stdint.h>
#include <uv.h>

struct wg_probe; /* opaque */

/* A refused connect on the bridge costs microseconds, and every millisecond
 * between "listening" and "seen listening" is wake latency a user feels. */
#define WG_PROBE_INTERVAL_MS 2
#define WG_PROBE_CONNECT_TIMEOUT_MS 50
#define WG_PROBE_HTTP_PATH_MAX 1024

/* Runs once, when an attempt succeeded (status 0); never inside
 * wg_probe_start*() and never after wg_probe_stop(). attempts: how many
 * attempts were made, this one included. */
typedef void wg_probe_cb(int status, unsigned attempts, void *arg);

/* TCP connect probe. ip: a textual IPv4 or IPv6 address. Zero interval or
 * timeout take the defaults above. The probe frees itself after it called
 * back; call wg_probe_stop() to end it earlier. Returns 0 with *ret set,
 * -EINVAL (bad address or port 0), -ENOMEM, or a libuv error. */
int wg_probe_start(uv_loop_t *loop, const char *ip, uint16_t port, uint32_t interval_ms,
                   uint32_t connect_timeout_ms, wg_probe_cb *cb, void *arg, struct wg_probe **ret);

/* HTTP probe of path (origin form: "/" then visible ASCII, no '#', at most
 * WG_PROBE_HTTP_PATH_MAX bytes; else -EINVAL); timeout_ms bounds connect,
 * send and the status line together. Otherwise as wg_probe_start(). */
int wg_probe_start_http(uv_loop_t *loop, const char *ip, uint16_t port, const char *path,
                        uint32_t interval_ms, uint32_t timeout_ms, wg_probe_cb *cb, void *arg,
                        struct wg_probe **ret);

/* NULL-safe. Stops attempts; cb does not run. Must not be called after cb
 * ran (the probe is gone then). Handles close asynchronously. */
void wg_probe_stop(struct wg_probe *p);

#endif
