/* proxy/pages.h - the bodies the proxy answers with by itself for a session
 * route: the status JSON (probes, .../_wakegate/status) and the waking page
 * a browser gets while its session wakes.
 *
 * Pure code: no I/O, no allocation; the caller sends the bytes. */
#ifndef WG_PROXY_PAGES_H
#define WG_PROXY_PAGES_H

#include <stddef.h>

/* {"session":"ID","state":"STATE"} and a newline, into buf (truncated to
 * len - 1 bytes, NUL-terminated). Returns the body's length. id is a valid
 * session id and state a state name (or "unknown"/"unavailable"): nothing
 * to escape. */
size_t wg_pages_status(char *buf, size_t len, const char *id, const char *state);

/* The waking page: it polls status_url and reloads itself once the session
 * runs; nothing external (no script, style or font from elsewhere). When it
 * does not fit in len, a one-line "waking ID" instead. Returns the body's
 * length. */
size_t wg_pages_waking(char *buf, size_t len, const char *id, const char *state,
                       const char *status_url);

#endif
