/* proxy/pages.h - the bodies the proxy answers with by itself for a session
 * route: the status JSON (probes, .../_wakegate/status) and the waking page
 * a browser gets while its session wakes (or after it failed).
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

/* What a waking page shows. */
struct wg_page_facts {
    const char *id;         /* a valid session id */
    const char *state;      /* a state name */
    const char *status_url; /* where the page polls (.../_wakegate/status) */
    const char *reason;     /* failed: the record's error (any bytes), or NULL */
};

/* The built-in waking page: it polls status_url and reloads itself once
 * the session runs; for a failed session it shows the reason and a link
 * that tries again. Nothing external (no script, style or font from
 * elsewhere). When it does not fit in len, a one-line "waking ID" instead.
 * Returns the body's length. */
size_t wg_pages_waking(char *buf, size_t len, const struct wg_page_facts *f);

/* The operator's page: tpl[0, tpl_len) with each {{session}}, {{state}},
 * {{reason}} (empty unless failed) and {{status_url}} replaced by the
 * value, HTML-escaped (& < > " ' and invalid UTF-8 as U+FFFD), so the
 * values are safe in text and in quoted attributes (not inside a script).
 * Writes at most len bytes into buf (no NUL) and returns the length of the
 * whole page, which may be more than len: call with len 0 to size it. */
size_t wg_pages_render(char *buf, size_t len, const char *tpl, size_t tpl_len,
                       const struct wg_page_facts *f);

#endif
