/* test/unit/test_conn_decide.c - the connection's pure decisions
 * (proxy/conn_decide.c): the class of a request for a session, from real
 * heads parsed by common/http_head, and every row of the session decision
 * (state, request class, status path, held before -> action). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "http_fixture.h"
#include "proxy/conn_int.h"

/* ---- request class ------------------------------------------------------------------- */

/* Parses a request head that must be valid. */
static void parse(struct wg_test_http *ps, const char *raw)
{
    assert_int_equal(wg_test_http_parse(ps, raw, false), 0);
}

static char *probe_paths[] = {"/healthz", "/api/ping"};
static char *probe_agents[] = {"kube-probe", "UptimeRobot"};

static struct wg_config probe_cfg = {
    .non_waking_paths = probe_paths,
    .non_waking_paths_len = 2,
    .non_waking_user_agents = probe_agents,
    .non_waking_user_agents_len = 2,
};

#define WS_FIELDS                                                                                  \
    "Connection: Upgrade\r\nUpgrade: websocket\r\n"                                                \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"

static const struct {
    const char *name;
    const char *head;
    enum conn_req_class want;
} class_rows[] = {
    {"bare GET is held", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", RC_HOLD},
    {"GET accepting html navigates", "GET / HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\n\r\n",
     RC_NAVIGATE},
    {"Accept compared without case",
     "GET /x HTTP/1.1\r\nHost: a\r\nAccept: application/xhtml+xml, TEXT/HTML;q=0.9\r\n\r\n",
     RC_NAVIGATE},
    {"GET accepting json is held", "GET / HTTP/1.1\r\nHost: a\r\nAccept: application/json\r\n\r\n",
     RC_HOLD},
    {"POST accepting html is held",
     "POST / HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\nContent-Length: 0\r\n\r\n", RC_HOLD},
    {"HEAD accepting html is held", "HEAD / HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\n\r\n",
     RC_HOLD},
    {"Sec-Fetch-Mode navigate", "GET / HTTP/1.1\r\nHost: a\r\nSec-Fetch-Mode: navigate\r\n\r\n",
     RC_NAVIGATE},
    {"Sec-Fetch-Mode compared without case",
     "GET / HTTP/1.1\r\nHost: a\r\nSec-Fetch-Mode: NaviGate\r\n\r\n", RC_NAVIGATE},
    {"Sec-Fetch-Mode navigate on a POST",
     "POST / HTTP/1.1\r\nHost: a\r\nSec-Fetch-Mode: navigate\r\nContent-Length: 0\r\n\r\n",
     RC_NAVIGATE},
    {"Sec-Fetch-Mode other than navigate wins over Accept",
     "GET / HTTP/1.1\r\nHost: a\r\nSec-Fetch-Mode: cors\r\nAccept: text/html\r\n\r\n", RC_HOLD},
    {"Sec-Fetch-Mode is the whole value",
     "GET / HTTP/1.1\r\nHost: a\r\nSec-Fetch-Mode: navigates\r\n\r\n", RC_HOLD},
    {"WebSocket is held, even as a navigation",
     "GET /ws HTTP/1.1\r\nHost: a\r\n" WS_FIELDS "Sec-Fetch-Mode: navigate\r\n"
     "Accept: text/html\r\n\r\n",
     RC_HOLD},
    {"non-waking path", "GET /healthz HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\n\r\n", RC_PROBE},
    {"non-waking path without its query",
     "GET /api/ping?x=1 HTTP/1.1\r\nHost: a\r\nSec-Fetch-Mode: navigate\r\n\r\n", RC_PROBE},
    {"non-waking path is exact, not a prefix", "GET /healthz/x HTTP/1.1\r\nHost: a\r\n\r\n",
     RC_HOLD},
    {"non-waking path is whole", "GET /health HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\n\r\n",
     RC_NAVIGATE},
    {"non-waking path before WebSocket", "GET /healthz HTTP/1.1\r\nHost: a\r\n" WS_FIELDS "\r\n",
     RC_PROBE},
    {"non-waking user agent, anywhere in it and without case",
     "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: Mozilla/5.0 Kube-Probe/1.29\r\n"
     "Sec-Fetch-Mode: navigate\r\n\r\n",
     RC_PROBE},
    {"second non-waking user agent",
     "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: uptimerobot/2.0\r\n\r\n", RC_PROBE},
    {"other user agent", "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: curl/8.0\r\n\r\n", RC_HOLD},
};

static void test_classify(void **state)
{
    (void)state;
    struct wg_test_http ps;

    for (size_t i = 0; i < sizeof(class_rows) / sizeof(class_rows[0]); i++) {
        parse(&ps, class_rows[i].head);
        enum conn_req_class got = conn_classify(&probe_cfg, &ps.msg);
        if (got != class_rows[i].want)
            fail_msg("%s: got %d, want %d", class_rows[i].name, got, class_rows[i].want);
    }
}

static void test_classify_no_lists(void **state)
{
    (void)state;
    struct wg_config cfg = {0};
    struct wg_test_http ps;

    parse(&ps, "GET /healthz HTTP/1.1\r\nHost: a\r\nUser-Agent: kube-probe\r\n"
               "Accept: text/html\r\n\r\n");
    assert_int_equal(conn_classify(&cfg, &ps.msg), RC_NAVIGATE);
}

static const struct {
    const char *name;
    const char *head;
    unsigned want;
} wake_rows[] = {
    {"WebSocket upgrade", "GET /ws HTTP/1.1\r\nHost: a\r\n" WS_FIELDS "\r\n", WG_WAKE_WEBSOCKET},
    {"WebSocket with its fetch metadata",
     "GET /ws HTTP/1.1\r\nHost: a\r\n" WS_FIELDS "Sec-Fetch-Mode: websocket\r\n"
     "Sec-Fetch-Dest: websocket\r\n\r\n",
     WG_WAKE_WEBSOCKET},
    {"navigation", "GET / HTTP/1.1\r\nHost: a\r\nSec-Fetch-Mode: navigate\r\n\r\n",
     WG_WAKE_NAVIGATION},
    {"an iframe, as older browsers say it",
     "GET / HTTP/1.1\r\nHost: a\r\nSec-Fetch-Mode: nested-navigate\r\n\r\n", WG_WAKE_NAVIGATION},
    {"fetch() from a page",
     "GET /api HTTP/1.1\r\nHost: a\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Dest: empty\r\n"
     "Accept: text/html\r\n\r\n",
     WG_WAKE_API},
    {"a script the page loads",
     "GET /app.js HTTP/1.1\r\nHost: a\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: "
     "script\r\n\r\n",
     WG_WAKE_API},
    {"Sec-Fetch-Dest document without the mode",
     "GET / HTTP/1.1\r\nHost: a\r\nSec-Fetch-Dest: document\r\n\r\n", WG_WAKE_NAVIGATION},
    {"Sec-Fetch-Dest image without the mode",
     "GET / HTTP/1.1\r\nHost: a\r\nSec-Fetch-Dest: image\r\nAccept: text/html\r\n\r\n",
     WG_WAKE_API},
    {"no metadata: a GET accepting html",
     "GET / HTTP/1.1\r\nHost: a\r\nAccept: text/html,*/*\r\n\r\n", WG_WAKE_NAVIGATION},
    {"no metadata: curl", "GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n", WG_WAKE_API},
    {"no metadata: a POST", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", WG_WAKE_API},
};

static void test_wake_class(void **state)
{
    (void)state;
    struct wg_test_http ps;

    for (size_t i = 0; i < sizeof(wake_rows) / sizeof(wake_rows[0]); i++) {
        parse(&ps, wake_rows[i].head);
        unsigned got = conn_wake_class(&ps.msg);
        if (got != wake_rows[i].want)
            fail_msg("%s: got %u, want %u", wake_rows[i].name, got, wake_rows[i].want);
    }
}

/* ---- session decision ------------------------------------------------------------------ */

#define COOLDOWN WG_SESSION_CACHE_FAILED_COOLDOWN_MS

struct decide_row {
    const char *name;
    struct conn_session_facts f;
    enum conn_session_action action;
    int status;
    const char *state;
    bool wake, activity, suppressed;
};

#define FACTS(st, sta, cls, path, wt, failed)                                                      \
    {                                                                                              \
        .status = (st), .state = (sta), .req_class = (cls), .status_path = (path), .waited = (wt), \
        .failed_for_ms = (failed), .confirmed = true                                               \
    }

/* name, facts, then the decision: action, status, state, wake, activity,
 * suppressed. */
#define ROW(name, facts, action, status, state, wake, activity, suppressed)                        \
    {                                                                                              \
        name, facts, action, status, state, wake, activity, suppressed                             \
    }

static const struct decide_row decide_rows[] = {
    /* .../_wakegate/status: the state, whatever the class; never a wake */
    ROW("status: pending waits", FACTS(WG_SESS_PENDING, 0, RC_HOLD, true, false, 0), SA_WAIT, 0,
        NULL, false, false, false),
    ROW("status: unknown", FACTS(WG_SESS_NOT_FOUND, 0, RC_HOLD, true, false, 0), SA_STATUS, 404,
        "unknown", false, false, false),
    ROW("status: unavailable", FACTS(WG_SESS_UNAVAILABLE, 0, RC_NAVIGATE, true, false, 0),
        SA_STATUS, 503, "unavailable", false, false, false),
    ROW("status: running", FACTS(WG_SESS_READY, WG_SESSION_RUNNING, RC_HOLD, true, false, 0),
        SA_STATUS, 200, "running", false, false, false),
    ROW("status: asleep",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_ASLEEP, RC_NAVIGATE, true, false, 0), SA_STATUS, 200,
        "asleep", false, false, false),
    ROW("status: asleep, probe",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_ASLEEP, RC_PROBE, true, false, 0), SA_STATUS, 200,
        "asleep", false, false, false),
    ROW("status: failed just now",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_FAILED, RC_HOLD, true, true, 0), SA_STATUS, 200,
        "failed", false, false, false),
    /* running: proxied; probes do not count as activity */
    ROW("ready, held class", FACTS(WG_SESS_READY, WG_SESSION_RUNNING, RC_HOLD, false, false, 0),
        SA_PROXY, 0, NULL, false, true, false),
    ROW("ready, navigation", FACTS(WG_SESS_READY, WG_SESSION_RUNNING, RC_NAVIGATE, false, true, 0),
        SA_PROXY, 0, NULL, false, true, false),
    ROW("ready, probe", FACTS(WG_SESS_READY, WG_SESSION_RUNNING, RC_PROBE, false, false, 0),
        SA_PROXY, 0, NULL, false, false, false),
    /* not known yet, unknown, Redis gone */
    ROW("pending waits", FACTS(WG_SESS_PENDING, 0, RC_HOLD, false, false, 0), SA_WAIT, 0, NULL,
        false, false, false),
    ROW("pending probe waits", FACTS(WG_SESS_PENDING, 0, RC_PROBE, false, false, 0), SA_WAIT, 0,
        NULL, false, false, false),
    ROW("not found", FACTS(WG_SESS_NOT_FOUND, 0, RC_NAVIGATE, false, true, 0), SA_ERROR, 404, NULL,
        false, false, false),
    ROW("unavailable", FACTS(WG_SESS_UNAVAILABLE, 0, RC_HOLD, false, false, 0), SA_ERROR, 503, NULL,
        false, false, false),
    /* probes: the state with 503, no wake */
    ROW("probe, asleep", FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_ASLEEP, RC_PROBE, false, false, 0),
        SA_STATUS, 503, "asleep", false, false, true),
    ROW("probe, starting",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_STARTING, RC_PROBE, false, false, 0), SA_STATUS, 503,
        "starting", false, false, true),
    ROW("probe, failed just now",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_FAILED, RC_PROBE, false, true, 0), SA_STATUS, 503,
        "failed", false, false, true),
    /* failed */
    ROW("failed while held", FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_FAILED, RC_HOLD, false, true, 0),
        SA_ERROR, 504, NULL, false, false, false),
    ROW("failed while held, navigation: the page that says why",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_FAILED, RC_NAVIGATE, false, true, COOLDOWN * 2),
        SA_PAGE, 503, "failed", false, false, false),
    ROW("failed moments ago",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_FAILED, RC_HOLD, false, false, COOLDOWN - 1),
        SA_ERROR, 503, NULL, false, false, false),
    ROW("failed moments ago, navigation: the page that says why",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_FAILED, RC_NAVIGATE, false, false, 0), SA_PAGE, 503,
        "failed", false, false, false),
    ROW("failed long ago: wake and hold",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_FAILED, RC_HOLD, false, false, COOLDOWN), SA_HOLD, 0,
        NULL, true, false, false),
    ROW("failed long ago, navigation: wake and page",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_FAILED, RC_NAVIGATE, false, false, COOLDOWN), SA_PAGE,
        503, "failed", true, false, false),
    /* asleep, paused, creating: wake, then hold or the page */
    ROW("asleep: wake and hold",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_ASLEEP, RC_HOLD, false, false, 0), SA_HOLD, 0, NULL,
        true, false, false),
    ROW("asleep, held before: wake and hold again",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_ASLEEP, RC_HOLD, false, true, 0), SA_HOLD, 0, NULL,
        true, false, false),
    ROW("asleep, navigation: wake and page",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_ASLEEP, RC_NAVIGATE, false, false, 0), SA_PAGE, 503,
        "asleep", true, false, false),
    ROW("paused: wake and hold",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_PAUSED, RC_HOLD, false, false, 0), SA_HOLD, 0, NULL,
        true, false, false),
    ROW("paused, navigation: wake and page",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_PAUSED, RC_NAVIGATE, false, false, 0), SA_PAGE, 503,
        "paused", true, false, false),
    /* lost (its host's heartbeat expired): as asleep - the wake re-places
     * it; never the old address */
    ROW("lost: wake and hold",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_LOST, RC_HOLD, false, false, 0), SA_HOLD, 0, NULL,
        true, false, false),
    ROW("lost, navigation: wake and page",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_LOST, RC_NAVIGATE, false, false, 0), SA_PAGE, 503,
        "lost", true, false, false),
    ROW("lost, probe: the state, no wake",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_LOST, RC_PROBE, false, false, 0), SA_STATUS, 503,
        "lost", false, false, true),
    ROW("creating, navigation: wake and page",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_CREATING, RC_NAVIGATE, false, false, 0), SA_PAGE, 503,
        "creating", true, false, false),
    /* starting: no second wake */
    ROW("starting: hold", FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_STARTING, RC_HOLD, false, false, 0),
        SA_HOLD, 0, NULL, false, false, false),
    ROW("starting, navigation: page",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_STARTING, RC_NAVIGATE, false, false, 0), SA_PAGE, 503,
        "starting", false, false, false),
    /* going to sleep: wake (cancels or repeats the sleep), everything held */
    ROW("draining: wake and hold",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_DRAINING, RC_HOLD, false, false, 0), SA_HOLD, 0, NULL,
        true, false, false),
    ROW("draining, navigation: held too",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_DRAINING, RC_NAVIGATE, false, false, 0), SA_HOLD, 0,
        NULL, true, false, false),
    ROW("saving, navigation: held too",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_SAVING, RC_NAVIGATE, false, false, 0), SA_HOLD, 0,
        NULL, true, false, false),
    ROW("stopping, navigation: held too",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_STOPPING, RC_NAVIGATE, false, true, 0), SA_HOLD, 0,
        NULL, true, false, false),
    ROW("stopping: wake and hold",
        FACTS(WG_SESS_NOT_RUNNING, WG_SESSION_STOPPING, RC_HOLD, false, false, 0), SA_HOLD, 0, NULL,
        true, false, false),
};

/* The template's wake_on leaves the request's class out. */
#define NO_WAKE(st, sta, cls)                                                                      \
    {                                                                                              \
        .status = (st), .state = (sta), .req_class = (cls), .no_wake = true,                       \
        .failed_for_ms = COOLDOWN                                                                  \
    }

static const struct decide_row no_wake_rows[] = {
    {"asleep, a reconnect that may not wake: the state",
     NO_WAKE(WG_SESS_NOT_RUNNING, WG_SESSION_ASLEEP, RC_HOLD), SA_STATUS, 503, "asleep", false,
     false, true},
    {"asleep, a navigation that may not wake: the state, no page",
     NO_WAKE(WG_SESS_NOT_RUNNING, WG_SESSION_ASLEEP, RC_NAVIGATE), SA_STATUS, 503, "asleep", false,
     false, true},
    {"paused: the state", NO_WAKE(WG_SESS_NOT_RUNNING, WG_SESSION_PAUSED, RC_HOLD), SA_STATUS, 503,
     "paused", false, false, true},
    {"lost: the state", NO_WAKE(WG_SESS_NOT_RUNNING, WG_SESSION_LOST, RC_HOLD), SA_STATUS, 503,
     "lost", false, false, true},
    {"draining: the sleep is not cancelled",
     NO_WAKE(WG_SESS_NOT_RUNNING, WG_SESSION_DRAINING, RC_HOLD), SA_STATUS, 503, "draining", false,
     false, true},
    {"stopping: no wake after it", NO_WAKE(WG_SESS_NOT_RUNNING, WG_SESSION_STOPPING, RC_HOLD),
     SA_STATUS, 503, "stopping", false, false, true},
    {"starting: it may wait for the start under way",
     NO_WAKE(WG_SESS_NOT_RUNNING, WG_SESSION_STARTING, RC_HOLD), SA_HOLD, 0, NULL, false, false,
     false},
    {"running: served", NO_WAKE(WG_SESS_READY, WG_SESSION_RUNNING, RC_HOLD), SA_PROXY, 0, NULL,
     false, true, false},
    {"failed moments ago: still the 503 of a failure",
     {.status = WG_SESS_NOT_RUNNING,
      .state = WG_SESSION_FAILED,
      .req_class = RC_HOLD,
      .no_wake = true,
      .failed_for_ms = 0},
     SA_ERROR,
     503,
     NULL,
     false,
     false,
     false},
};

static void check_rows(const struct decide_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct decide_row *r = &rows[i];
        struct conn_session_decision d;
        memset(&d, 0xa5, sizeof(d));
        conn_decide_session(&r->f, &d);
        if (d.action != r->action || d.status != r->status || d.wake != r->wake ||
            d.activity != r->activity || d.suppressed != r->suppressed)
            fail_msg("%s: got action=%d status=%d wake=%d activity=%d suppressed=%d", r->name,
                     d.action, d.status, d.wake, d.activity, d.suppressed);
        if (r->state != NULL && (d.state == NULL || strcmp(d.state, r->state) != 0))
            fail_msg("%s: state %s, want %s", r->name, d.state ? d.state : "(null)", r->state);
    }
}

static void test_decide_no_wake(void **state)
{
    (void)state;
    check_rows(no_wake_rows, sizeof(no_wake_rows) / sizeof(no_wake_rows[0]));
    /* Whatever the state and class, no_wake never wakes: the state, but
     * for a start under way or a failure's own answer. */
    for (int st = 0; st < WG_SESSION_STATE_COUNT; st++) {
        for (int cls = RC_HOLD; cls <= RC_PROBE; cls++) {
            struct conn_session_facts f =
                NO_WAKE(WG_SESS_NOT_RUNNING, (enum wg_session_state)st, (enum conn_req_class)cls);
            struct conn_session_decision d;
            conn_decide_session(&f, &d);
            assert_false(d.wake);
            /* A start under way may be waited for (held, or its page). */
            if (st != WG_SESSION_STARTING && cls != RC_PROBE && st != WG_SESSION_FAILED)
                assert_int_equal(d.action, SA_STATUS);
        }
    }
}

/* With page_after, a navigation is held (the app answers a fast wake) and
 * marked for the page later; the sleep sequence's holds stay plain. */
static void test_decide_page_after(void **state)
{
    (void)state;
    static const struct {
        enum wg_session_state state;
        enum conn_session_action action;
        bool wake, page_later;
    } rows[] = {
        {WG_SESSION_ASLEEP, SA_HOLD, true, true},    {WG_SESSION_PAUSED, SA_HOLD, true, true},
        {WG_SESSION_CREATING, SA_HOLD, true, true},  {WG_SESSION_STARTING, SA_HOLD, false, true},
        {WG_SESSION_DRAINING, SA_HOLD, true, false}, {WG_SESSION_STOPPING, SA_HOLD, true, false},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct conn_session_facts f = {.status = WG_SESS_NOT_RUNNING,
                                       .state = rows[i].state,
                                       .req_class = RC_NAVIGATE,
                                       .failed_for_ms = COOLDOWN,
                                       .page_after = true};
        struct conn_session_decision d;
        conn_decide_session(&f, &d);
        assert_int_equal(d.action, rows[i].action);
        assert_int_equal(d.wake, rows[i].wake);
        assert_int_equal(d.page_later, rows[i].page_later);
    }
    /* Other classes are never marked; a failure's page comes at once. */
    struct conn_session_facts f = {.status = WG_SESS_NOT_RUNNING,
                                   .state = WG_SESSION_ASLEEP,
                                   .req_class = RC_HOLD,
                                   .page_after = true};
    struct conn_session_decision d;
    conn_decide_session(&f, &d);
    assert_false(d.page_later);
    f.state = WG_SESSION_FAILED;
    f.req_class = RC_NAVIGATE;
    f.failed_for_ms = 0;
    conn_decide_session(&f, &d);
    assert_int_equal(d.action, SA_PAGE);
    assert_int_equal(d.status, 503);
}

static void test_decide_session(void **state)
{
    (void)state;

    for (size_t i = 0; i < sizeof(decide_rows) / sizeof(decide_rows[0]); i++) {
        const struct decide_row *r = &decide_rows[i];
        struct conn_session_decision d;
        memset(&d, 0xa5, sizeof(d));
        conn_decide_session(&r->f, &d);
        if (d.action != r->action || d.status != r->status || d.wake != r->wake ||
            d.activity != r->activity || d.suppressed != r->suppressed || d.proven_only)
            fail_msg("%s: got action=%d status=%d wake=%d activity=%d suppressed=%d", r->name,
                     d.action, d.status, d.wake, d.activity, d.suppressed);
        if (r->state != NULL && (d.state == NULL || strcmp(d.state, r->state) != 0))
            fail_msg("%s: state %s, want %s", r->name, d.state ? d.state : "(null)", r->state);
    }
}

/* A running entry Redis cannot confirm is proxied like a confirmed one,
 * but only over a connection proven to reach its container; nothing else
 * is ever marked so. */
static void test_decide_unconfirmed(void **state)
{
    (void)state;

    for (int st = WG_SESS_READY; st <= WG_SESS_UNAVAILABLE; st++) {
        for (int cls = RC_HOLD; cls <= RC_PROBE; cls++) {
            for (int bits = 0; bits < 8; bits++) {
                struct conn_session_facts f = {
                    .status = st,
                    .state = st == WG_SESS_READY ? WG_SESSION_RUNNING : WG_SESSION_ASLEEP,
                    .req_class = cls,
                    .status_path = bits & 1,
                    .waited = bits & 2,
                    .confirmed = bits & 4,
                };
                struct conn_session_decision d;
                conn_decide_session(&f, &d);
                bool proxy = st == WG_SESS_READY && !f.status_path;
                assert_int_equal(d.action == SA_PROXY, proxy);
                assert_int_equal(d.proven_only, proxy && !f.confirmed);
                if (proxy)
                    assert_int_equal(d.activity, cls != RC_PROBE);
            }
        }
    }
}

/* Every class and held-before flag over every state the cache can report
 * as not running: the status path never wakes, probes never wake, and
 * nothing but a running session is proxied. */
static void test_recheck_at(void **state)
{
    (void)state;
    /* A running session's refused connect: looked at again after 100,
     * 200, 400, 800 ms, then every second, never past the bound. */
    assert_int_equal(conn_recheck_at(1000, 1000, 0, 5000), 1100);
    assert_int_equal(conn_recheck_at(1000, 1100, 1, 5000), 1300);
    assert_int_equal(conn_recheck_at(1000, 1300, 2, 5000), 1700);
    assert_int_equal(conn_recheck_at(1000, 1700, 3, 5000), 2500);
    assert_int_equal(conn_recheck_at(1000, 2500, 4, 5000), 3500);
    assert_int_equal(conn_recheck_at(1000, 2500, 40, 5000), 3500);
    assert_int_equal(conn_recheck_at(1000, 5500, 6, 5000), 6000); /* the last look at the bound */
    /* Past the bound, or no bound: not held (the caller's 502). */
    assert_int_equal(conn_recheck_at(1000, 6000, 7, 5000), 0);
    assert_int_equal(conn_recheck_at(1000, 9000, 7, 5000), 0);
    assert_int_equal(conn_recheck_at(1000, 1000, 0, 0), 0);
}

static void test_decide_invariants(void **state)
{
    (void)state;

    for (int st = 0; st < WG_SESSION_STATE_COUNT; st++) {
        for (int cls = RC_HOLD; cls <= RC_PROBE; cls++) {
            for (int bits = 0; bits < 4; bits++) {
                struct conn_session_facts f = {
                    .status = WG_SESS_NOT_RUNNING,
                    .state = (enum wg_session_state)st,
                    .req_class = (enum conn_req_class)cls,
                    .status_path = bits & 1,
                    .waited = bits & 2,
                    .failed_for_ms = COOLDOWN,
                };
                struct conn_session_decision d;
                conn_decide_session(&f, &d);
                assert_int_not_equal(d.action, SA_PROXY);
                if (f.status_path || cls == RC_PROBE)
                    assert_false(d.wake);
                if (f.status_path)
                    assert_int_equal(d.action, SA_STATUS);
                assert_int_equal(d.suppressed, !f.status_path && cls == RC_PROBE);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),          cmocka_unit_test(test_classify_no_lists),
        cmocka_unit_test(test_decide_session),    cmocka_unit_test(test_decide_invariants),
        cmocka_unit_test(test_wake_class),        cmocka_unit_test(test_decide_no_wake),
        cmocka_unit_test(test_decide_page_after), cmocka_unit_test(test_classify),
        cmocka_unit_test(test_classify_no_lists), cmocka_unit_test(test_decide_session),
        cmocka_unit_test(test_decide_invariants), cmocka_unit_test(test_decide_unconfirmed),
        cmocka_unit_test(test_recheck_at),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
