/* proxy/conn_decide.c - the connection's pure decisions: the class of a
 * request for a session, and what a request on a session route gets from
 * the session's state. No I/O, no clock: test/unit/test_conn_decide.c
 * covers every row. */
#include <string.h>
#include <strings.h>

#include "proxy/conn_int.h"

/* The sleep sequence after running: requests during it are held. */
#define SLEEPING_MASK                                                                              \
    (WG_SESSION_BIT(WG_SESSION_DRAINING) | WG_SESSION_BIT(WG_SESSION_SAVING) |                     \
     WG_SESSION_BIT(WG_SESSION_STOPPING))

static bool span_contains_nocase(const char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    if (m == 0 || m > n)
        return m == 0;
    for (size_t i = 0; i + m <= n; i++) {
        if (strncasecmp(hay + i, needle, m) == 0)
            return true;
    }
    return false;
}

enum conn_req_class conn_classify(const struct wg_config *cfg, const struct wg_http_msg *req)
{
    const struct wg_http_field *ua = wg_http_find(req, "user-agent");
    size_t plen = req->target_len;
    const char *q = memchr(req->target, '?', plen);
    if (q)
        plen = (size_t)(q - req->target);

    for (size_t i = 0; ua && i < cfg->non_waking_user_agents_len; i++) {
        if (span_contains_nocase(ua->value, ua->value_len, cfg->non_waking_user_agents[i]))
            return RC_PROBE;
    }
    for (size_t i = 0; i < cfg->non_waking_paths_len; i++) {
        const char *p = cfg->non_waking_paths[i];
        if (strlen(p) == plen && memcmp(p, req->target, plen) == 0)
            return RC_PROBE;
    }
    if (req->upgrade_websocket)
        return RC_HOLD;
    const struct wg_http_field *mode = wg_http_find(req, "sec-fetch-mode");
    if (mode != NULL)
        return mode->value_len == 8 && strncasecmp(mode->value, "navigate", 8) == 0 ? RC_NAVIGATE
                                                                                    : RC_HOLD;
    const struct wg_http_field *accept = wg_http_find(req, "accept");
    if (req->method_id == HTTP_GET && accept != NULL &&
        span_contains_nocase(accept->value, accept->value_len, "text/html"))
        return RC_NAVIGATE;
    return RC_HOLD;
}

static bool field_is(const struct wg_http_field *f, const char *v)
{
    size_t n = strlen(v);
    return f != NULL && f->value_len == n && strncasecmp(f->value, v, n) == 0;
}

unsigned conn_wake_class(const struct wg_http_msg *req)
{
    const struct wg_http_field *mode = wg_http_find(req, "sec-fetch-mode");
    const struct wg_http_field *dest = wg_http_find(req, "sec-fetch-dest");

    if (req->upgrade_websocket || field_is(mode, "websocket"))
        return WG_WAKE_WEBSOCKET;
    if (mode != NULL)
        return field_is(mode, "navigate") || field_is(mode, "nested-navigate") ? WG_WAKE_NAVIGATION
                                                                               : WG_WAKE_API;
    if (dest != NULL)
        return field_is(dest, "document") || field_is(dest, "iframe") || field_is(dest, "frame")
                   ? WG_WAKE_NAVIGATION
                   : WG_WAKE_API;
    const struct wg_http_field *accept = wg_http_find(req, "accept");
    if (req->method_id == HTTP_GET && accept != NULL &&
        span_contains_nocase(accept->value, accept->value_len, "text/html"))
        return WG_WAKE_NAVIGATION;
    return WG_WAKE_API;
}

static void answer(struct conn_session_decision *d, enum conn_session_action action, int status,
                   const char *state)
{
    d->action = action;
    d->status = status;
    d->state = state;
}

/* .../_wakegate/status: the state, never a wake. */
static void decide_status_path(const struct conn_session_facts *f, struct conn_session_decision *d)
{
    switch (f->status) {
    case WG_SESS_PENDING:
        d->action = SA_WAIT;
        return;
    case WG_SESS_NOT_FOUND:
        answer(d, SA_STATUS, 404, "unknown");
        return;
    case WG_SESS_UNAVAILABLE:
        answer(d, SA_STATUS, 503, "unavailable");
        return;
    case WG_SESS_READY:
    case WG_SESS_NOT_RUNNING:
        answer(d, SA_STATUS, 200, wg_session_state_name(f->state));
        return;
    }
}

/* Known and not running: by request class and state. */
static void decide_not_running(const struct conn_session_facts *f, struct conn_session_decision *d)
{
    const char *state = wg_session_state_name(f->state);

    if (f->req_class == RC_PROBE) {
        d->suppressed = true;
        answer(d, SA_STATUS, 503, state);
        return;
    }
    if (f->state == WG_SESSION_FAILED &&
        (f->waited || f->failed_for_ms < WG_SESSION_CACHE_FAILED_COOLDOWN_MS)) {
        /* The wake we waited for failed, or it failed moments ago: a
         * browser gets the page that says why, and a way to try again. */
        if (f->req_class == RC_NAVIGATE)
            answer(d, SA_PAGE, 503, state);
        else
            answer(d, SA_ERROR, f->waited ? 504 : 503, NULL);
        return;
    }
    /* A class the template does not let wake: the state, and no wake, so
     * a background tab's reconnects do not undo a sleep (nor cancel one
     * under way). A start already under way it may wait for. */
    if (f->no_wake && f->state != WG_SESSION_STARTING) {
        d->suppressed = true;
        answer(d, SA_STATUS, 503, state);
        return;
    }
    /* A start is under way: its end releases the hold. */
    d->wake = f->state != WG_SESSION_STARTING;
    /* Going to sleep: the wake cancels the sleep (draining, saving) or
     * wakes it again once stopped, usually within moments, so even a
     * browser navigation is held rather than shown the waking page. */
    if (f->req_class == RC_NAVIGATE && !(WG_SESSION_BIT(f->state) & SLEEPING_MASK)) {
        /* A fast wake (an unpause, a quick start) is answered by the app
         * itself: the page only after the template's page_after. */
        if (f->page_after) {
            d->action = SA_HOLD;
            d->page_later = true;
            return;
        }
        answer(d, SA_PAGE, 503, state);
        return;
    }
    d->action = SA_HOLD;
}

uint64_t conn_recheck_at(uint64_t start_ms, uint64_t now, unsigned rechecks, uint64_t bound)
{
    uint64_t delay = CONN_RECHECK_MAX_MS;

    if (bound == 0 || now >= start_ms + bound)
        return 0;
    if (rechecks < 4)
        delay = (uint64_t)CONN_RECHECK_FIRST_MS << rechecks;
    return now + delay < start_ms + bound ? now + delay : start_ms + bound;
}

void conn_decide_session(const struct conn_session_facts *f, struct conn_session_decision *d)
{
    memset(d, 0, sizeof(*d));
    if (f->status_path) {
        decide_status_path(f, d);
        return;
    }
    switch (f->status) {
    case WG_SESS_READY:
        /* Unconfirmed, the address may belong to another session's
         * container by now: only while a connection that leads to this
         * container proves it may the request go there. */
        d->action = SA_PROXY;
        d->activity = f->req_class != RC_PROBE;
        d->proven_only = !f->confirmed;
        return;
    case WG_SESS_PENDING:
        d->action = SA_WAIT;
        return;
    case WG_SESS_NOT_FOUND:
        answer(d, SA_ERROR, 404, NULL);
        return;
    case WG_SESS_UNAVAILABLE:
        answer(d, SA_ERROR, 503, NULL);
        return;
    case WG_SESS_NOT_RUNNING:
        decide_not_running(f, d);
        return;
    }
}
