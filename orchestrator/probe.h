/* orchestrator/probe.h - TCP connect probe: "does ip:port accept yet?".
 *
 * Short connect attempts, retried at a fixed pace, never one long connect:
 * right after a container starts its bridge may have no ARP entry, and a
 * single connect would wait about 1 s for the kernel's ARP retry (DESIGN.md,
 * "Facts"). Each attempt gets connect_timeout_ms; a refused or timed-out
 * attempt is followed by the next one interval_ms later. The probe runs until
 * an attempt connects or it is stopped: the caller owns the deadline.
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

/* Runs once, when an attempt connected (status 0); never inside
 * wg_probe_start() and never after wg_probe_stop(). attempts: how many
 * connects were tried, this one included. */
typedef void wg_probe_cb(int status, unsigned attempts, void *arg);

/* ip: a textual IPv4 or IPv6 address. Zero interval or timeout take the
 * defaults above. The probe frees itself after it called back; call
 * wg_probe_stop() to end it earlier. Returns 0 with *ret set, -EINVAL (bad
 * address or port 0), -ENOMEM, or a libuv error. */
int wg_probe_start(uv_loop_t *loop, const char *ip, uint16_t port, uint32_t interval_ms,
                   uint32_t connect_timeout_ms, wg_probe_cb *cb, void *arg, struct wg_probe **ret);

/* NULL-safe. Stops attempts; cb does not run. Must not be called after cb
 * ran (the probe is gone then). Handles close asynchronously. */
void wg_probe_stop(struct wg_probe *p);

#endif
