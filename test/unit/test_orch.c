/* test/unit/test_orch.c - the orchestrator's decisions (orchestrator/orch_policy)
 * and its TCP probe (orchestrator/probe).
 *
 * The decisions are walked case by case: a wake in every state, the
 * failed cool-down, stale commands, the crash-loop backoff, admission and
 * which Docker step of a wake follows each answer, what a container's
 * death means, the reconcile table (and, for every input, that each move
 * it asks for is one the lifecycle table allows), stuck-state limits,
 * readiness modes, the idle reaper, which step of a sleep follows which
 * (and that its moves are allowed), a save's result, a shutdown's rollback
 * of the sleeps, and the heartbeat (the record's container spec:
 * test_container_spec.c). The probe runs on a private loop against
 * loopback sockets and each test ends by asserting that the loop closes
 * with no live handle. The runtime itself (Redis, Docker) is exercised by
 * test/e2e/test_orchestrator.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "orchestrator/docker.h"
#include "orchestrator/orch_policy.h"
#include "orchestrator/probe.h"

#define S(x) WG_SESSION_##x

/* ---- wakes ---------------------------------------------------------------------------------- */

static void test_wake_decide_by_state(void **state)
{
    (void)state;
    const int64_t now = 1000000;
    struct {
        enum wg_session_state st;
        enum wg_orch_wake_action want;
    } cases[] = {
        {S(CREATING), WG_ORCH_WAKE_START},   {S(STARTING), WG_ORCH_WAKE_RESUME},
        {S(RUNNING), WG_ORCH_WAKE_NOOP},     {S(DRAINING), WG_ORCH_WAKE_WAIT},
        {S(SAVING), WG_ORCH_WAKE_WAIT},      {S(STOPPING), WG_ORCH_WAKE_WAIT},
        {S(ASLEEP), WG_ORCH_WAKE_START},     {S(PAUSED), WG_ORCH_WAKE_START},
        {S(DESTROYED), WG_ORCH_WAKE_REFUSE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum wg_orch_wake_action a = wg_orch_wake_decide(cases[i].st, now - 5, now, 30000, false);
        if (a != cases[i].want)
            fail_msg("%s: %s, expected %s", wg_session_state_name(cases[i].st),
                     wg_orch_wake_action_name(a), wg_orch_wake_action_name(cases[i].want));
        /* START is only answered where the table lets the state move to starting. */
        if (a == WG_ORCH_WAKE_START)
            assert_true(wg_session_can_move(cases[i].st, S(STARTING)));
    }
    assert_int_equal(wg_orch_wake_decide((enum wg_session_state)77, 0, now, 30000, false),
                     WG_ORCH_WAKE_REFUSE);
}

static void test_wake_failed_cooldown(void **state)
{
    (void)state;
    const int64_t now = 1000000;
    assert_int_equal(wg_orch_wake_decide(S(FAILED), now - 1, now, 30000, false),
                     WG_ORCH_WAKE_COOLDOWN);
    assert_int_equal(wg_orch_wake_decide(S(FAILED), now - 29999, now, 30000, false),
                     WG_ORCH_WAKE_COOLDOWN);
    assert_int_equal(wg_orch_wake_decide(S(FAILED), now - 30000, now, 30000, false),
                     WG_ORCH_WAKE_START);
    /* force (an explicit wake, a crash restart) skips it */
    assert_int_equal(wg_orch_wake_decide(S(FAILED), now - 1, now, 30000, true), WG_ORCH_WAKE_START);
    /* a clock that went back never blocks retries for ever */
    assert_int_equal(wg_orch_wake_decide(S(FAILED), now + 60000, now, 30000, false),
                     WG_ORCH_WAKE_START);
    assert_int_equal(wg_orch_wake_decide(S(FAILED), now, now, 0, false), WG_ORCH_WAKE_START);
    assert_true(wg_session_can_move(S(FAILED), S(STARTING)));
}

static void test_wake_stale(void **state)
{
    (void)state;
    assert_false(wg_orch_wake_stale(1000, 1000, 30000));
    assert_false(wg_orch_wake_stale(1000, 31000, 30000));
    assert_true(wg_orch_wake_stale(1000, 31001, 30000));
    assert_false(wg_orch_wake_stale(50000, 1000, 30000)); /* from the future: skew */
    assert_false(wg_orch_wake_stale(0, 99999999, 30000)); /* no stamp */
    assert_false(wg_orch_wake_stale(-5, 99999999, 30000));
}

static void test_backoff(void **state)
{
    (void)state;
    assert_int_equal(wg_orch_backoff_ms(0), 1000);
    assert_int_equal(wg_orch_backoff_ms(1), 2000);
    assert_int_equal(wg_orch_backoff_ms(2), 4000);
    assert_int_equal(wg_orch_backoff_ms(3), 8000);
    assert_int_equal(wg_orch_backoff_ms(6), WG_ORCH_BACKOFF_MAX_MS); /* 64 s capped at 60 s */
    assert_int_equal(wg_orch_backoff_ms(100), WG_ORCH_BACKOFF_MAX_MS);
    assert_int_equal(wg_orch_backoff_ms(~0u), WG_ORCH_BACKOFF_MAX_MS);
}

/* ---- deaths --------------------------------------------------------------------------------- */

static enum wg_orch_death_action death(enum wg_session_state st, bool by_hand, bool oom, int code,
                                       int64_t up, unsigned restarts, const char **why)
{
    struct wg_orch_death d = {st, by_hand, oom, code, up, restarts};
    return wg_orch_death_decide(&d, WG_ORCH_CRASH_WINDOW_MS, WG_ORCH_MAX_RESTARTS, why);
}

static void test_death_decide(void **state)
{
    const char *why = NULL;

    (void)state;
    /* by hand: asleep, whatever the code */
    assert_int_equal(death(S(RUNNING), true, false, 137, 500, 0, &why), WG_ORCH_DEATH_ASLEEP);
    assert_string_equal(why, "stopped");
    assert_int_equal(death(S(PAUSED), true, false, 143, -1, 0, &why), WG_ORCH_DEATH_ASLEEP);
    /* OOM wins over everything, even by hand */
    assert_int_equal(death(S(RUNNING), true, true, 137, 500, 0, &why), WG_ORCH_DEATH_FAILED);
    assert_string_equal(why, "oom");
    /* a clean exit on its own: asleep */
    assert_int_equal(death(S(RUNNING), false, false, 0, 500, 0, &why), WG_ORCH_DEATH_ASLEEP);
    assert_string_equal(why, "exited");
    /* a crash soon after the start: restart while restarts remain */
    assert_int_equal(death(S(RUNNING), false, false, 3, 9999, 0, &why), WG_ORCH_DEATH_RESTART);
    assert_string_equal(why, "exit");
    assert_int_equal(death(S(RUNNING), false, false, 3, 100, 2, &why), WG_ORCH_DEATH_RESTART);
    assert_int_equal(death(S(RUNNING), false, false, 3, 100, 3, &why), WG_ORCH_DEATH_FAILED);
    assert_string_equal(why, "crash loop");
    /* a crash long after the start, or of unknown age: failed, no restart */
    assert_int_equal(death(S(RUNNING), false, false, 3, 10000, 0, &why), WG_ORCH_DEATH_FAILED);
    assert_string_equal(why, "exit");
    assert_int_equal(death(S(RUNNING), false, false, 1, -1, 0, &why), WG_ORCH_DEATH_FAILED);
    /* only running restarts; paused, draining, saving fail */
    assert_int_equal(death(S(PAUSED), false, false, 3, 100, 0, &why), WG_ORCH_DEATH_FAILED);
    assert_int_equal(death(S(DRAINING), false, false, 3, 100, 0, &why), WG_ORCH_DEATH_FAILED);
    assert_int_equal(death(S(SAVING), false, false, 0, 100, 0, &why), WG_ORCH_DEATH_ASLEEP);
    /* not ours to correct */
    enum wg_session_state ignored[] = {S(CREATING), S(STARTING), S(STOPPING),
                                       S(ASLEEP),   S(FAILED),   S(DESTROYED)};
    for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++)
        assert_int_equal(death(ignored[i], false, true, 137, 10, 0, &why), WG_ORCH_DEATH_IGNORE);
    assert_int_equal(death(S(RUNNING), false, false, 3, 100, 0, NULL), WG_ORCH_DEATH_RESTART);
}

static void test_death_moves_are_allowed(void **state)
{
    (void)state;
    /* Every move a death asks for exists in the lifecycle table. */
    for (int s = 0; s < WG_SESSION_STATE_COUNT; s++) {
        for (int bits = 0; bits < 8; bits++) {
            int codes[] = {0, 1, 137};
            for (size_t c = 0; c < 3; c++) {
                for (unsigned r = 0; r < 5; r++) {
                    enum wg_orch_death_action a =
                        death((enum wg_session_state)s, bits & 1, bits & 2, codes[c],
                              (bits & 4) ? 100 : 60000, r, NULL);
                    if (a == WG_ORCH_DEATH_ASLEEP)
                        assert_true(wg_session_can_move((enum wg_session_state)s, S(ASLEEP)));
                    else if (a != WG_ORCH_DEATH_IGNORE)
                        assert_true(wg_session_can_move((enum wg_session_state)s, S(FAILED)));
                    if (a == WG_ORCH_DEATH_RESTART) /* via failed -> starting */
                        assert_true(wg_session_can_move(S(FAILED), S(STARTING)));
                }
            }
        }
    }
}

/* ---- reconciliation ---------------------------------------------------------------------- */

static void test_docker_state_of(void **state)
{
    (void)state;
    assert_int_equal(wg_orch_docker_state_of(NULL), WG_ORCH_DOCKER_MISSING);
    assert_int_equal(wg_orch_docker_state_of("running"), WG_ORCH_DOCKER_RUNNING);
    assert_int_equal(wg_orch_docker_state_of("restarting"), WG_ORCH_DOCKER_RUNNING);
    assert_int_equal(wg_orch_docker_state_of("paused"), WG_ORCH_DOCKER_PAUSED);
    assert_int_equal(wg_orch_docker_state_of("exited"), WG_ORCH_DOCKER_STOPPED);
    assert_int_equal(wg_orch_docker_state_of("created"), WG_ORCH_DOCKER_STOPPED);
    assert_int_equal(wg_orch_docker_state_of("dead"), WG_ORCH_DOCKER_STOPPED);
    assert_int_equal(wg_orch_docker_state_of("something new"), WG_ORCH_DOCKER_STOPPED);
    assert_string_equal(wg_orch_docker_state_name(WG_ORCH_DOCKER_PAUSED), "paused");
}

static struct wg_orch_fix fix(enum wg_session_state st, enum wg_orch_docker_state ds, bool stuck,
                              bool has, bool same, bool clean)
{
    struct wg_orch_observed ob = {.state = st,
                                  .stuck = stuck,
                                  .record_has_container = has,
                                  .same_container = same,
                                  .docker = ds,
                                  .clean_exit = clean};
    struct wg_orch_fix f;

    wg_orch_reconcile_decide(&ob, &f);
    return f;
}

#define EXPECT_MOVE(f, state_to)                                                                   \
    do {                                                                                           \
        assert_int_equal((f).kind, WG_ORCH_FIX_MOVE);                                              \
        assert_int_equal((f).to, (state_to));                                                      \
    } while (0)

static void test_reconcile_table(void **state)
{
    struct wg_orch_fix f;

    (void)state;
    /* Docker says running while Redis says asleep or paused: running. */
    f = fix(S(ASLEEP), WG_ORCH_DOCKER_RUNNING, false, true, true, true);
    EXPECT_MOVE(f, S(RUNNING));
    assert_true(f.set_container);
    EXPECT_MOVE(fix(S(PAUSED), WG_ORCH_DOCKER_RUNNING, false, true, true, true), S(RUNNING));
    /* failed or starting with a live container: a wake takes over (failed
     * cannot move straight to running) */
    assert_int_equal(fix(S(FAILED), WG_ORCH_DOCKER_RUNNING, false, true, true, true).kind,
                     WG_ORCH_FIX_RESUME);
    assert_int_equal(fix(S(STARTING), WG_ORCH_DOCKER_RUNNING, true, true, true, true).kind,
                     WG_ORCH_FIX_RESUME);
    assert_int_equal(fix(S(STARTING), WG_ORCH_DOCKER_MISSING, true, false, false, true).kind,
                     WG_ORCH_FIX_RESUME);
    assert_int_equal(fix(S(STARTING), WG_ORCH_DOCKER_STOPPED, true, true, true, true).kind,
                     WG_ORCH_FIX_RESUME);
    /* container missing: asleep, id cleared */
    f = fix(S(RUNNING), WG_ORCH_DOCKER_MISSING, false, true, false, true);
    EXPECT_MOVE(f, S(ASLEEP));
    assert_true(f.clear_container);
    f = fix(S(ASLEEP), WG_ORCH_DOCKER_MISSING, false, true, false, true);
    assert_int_equal(f.kind, WG_ORCH_FIX_UPDATE);
    assert_true(f.clear_container);
    f = fix(S(FAILED), WG_ORCH_DOCKER_MISSING, false, true, false, true); /* stays failed */
    assert_int_equal(f.kind, WG_ORCH_FIX_UPDATE);
    assert_int_equal(fix(S(ASLEEP), WG_ORCH_DOCKER_MISSING, false, false, false, true).kind,
                     WG_ORCH_FIX_NONE);
    /* stopped while running: asleep when clean, failed otherwise */
    EXPECT_MOVE(fix(S(RUNNING), WG_ORCH_DOCKER_STOPPED, false, true, true, true), S(ASLEEP));
    EXPECT_MOVE(fix(S(RUNNING), WG_ORCH_DOCKER_STOPPED, false, true, true, false), S(FAILED));
    /* paused by hand */
    EXPECT_MOVE(fix(S(RUNNING), WG_ORCH_DOCKER_PAUSED, false, true, true, true), S(PAUSED));
    assert_int_equal(fix(S(FAILED), WG_ORCH_DOCKER_PAUSED, false, true, true, true).kind,
                     WG_ORCH_FIX_NONE);
    /* agreement, or only the id/address drifted */
    assert_int_equal(fix(S(RUNNING), WG_ORCH_DOCKER_RUNNING, false, true, true, true).kind,
                     WG_ORCH_FIX_NONE);
    assert_int_equal(fix(S(RUNNING), WG_ORCH_DOCKER_RUNNING, false, false, false, true).kind,
                     WG_ORCH_FIX_UPDATE);
    assert_int_equal(fix(S(ASLEEP), WG_ORCH_DOCKER_STOPPED, false, true, true, true).kind,
                     WG_ORCH_FIX_NONE);
    assert_int_equal(fix(S(ASLEEP), WG_ORCH_DOCKER_STOPPED, false, false, false, true).kind,
                     WG_ORCH_FIX_UPDATE);
    /* adoption: a record just made in creating */
    EXPECT_MOVE(fix(S(CREATING), WG_ORCH_DOCKER_RUNNING, true, true, true, true), S(RUNNING));
    EXPECT_MOVE(fix(S(CREATING), WG_ORCH_DOCKER_PAUSED, true, true, true, true), S(PAUSED));
    EXPECT_MOVE(fix(S(CREATING), WG_ORCH_DOCKER_STOPPED, true, true, true, false), S(ASLEEP));
    /* transient states that are not stuck are left to their actor */
    enum wg_session_state tr[] = {S(CREATING), S(STARTING), S(DRAINING), S(SAVING), S(STOPPING)};
    for (size_t i = 0; i < 5; i++)
        for (int ds = 0; ds < 4; ds++)
            assert_int_equal(
                fix(tr[i], (enum wg_orch_docker_state)ds, false, true, false, false).kind,
                WG_ORCH_FIX_NONE);
    /* stopping stuck with the container up: stop it */
    assert_int_equal(fix(S(STOPPING), WG_ORCH_DOCKER_RUNNING, true, true, true, true).kind,
                     WG_ORCH_FIX_STOP);
    EXPECT_MOVE(fix(S(STOPPING), WG_ORCH_DOCKER_STOPPED, true, true, true, true), S(ASLEEP));
    EXPECT_MOVE(fix(S(DRAINING), WG_ORCH_DOCKER_RUNNING, true, true, true, true), S(RUNNING));
    EXPECT_MOVE(fix(S(SAVING), WG_ORCH_DOCKER_PAUSED, true, true, true, true), S(PAUSED));
    EXPECT_MOVE(fix(S(DRAINING), WG_ORCH_DOCKER_PAUSED, true, true, true, true), S(PAUSED));
    assert_int_equal(fix(S(DESTROYED), WG_ORCH_DOCKER_RUNNING, true, true, true, true).kind,
                     WG_ORCH_FIX_NONE);
}

/* A host back after it was lost: Docker's truth brings its own sessions
 * back from lost; a wake of one (pinned, or its host live again) starts it. */
static void test_lost_comes_back(void **state)
{
    (void)state;
    EXPECT_MOVE(fix(S(LOST), WG_ORCH_DOCKER_RUNNING, false, true, true, true), S(RUNNING));
    EXPECT_MOVE(fix(S(LOST), WG_ORCH_DOCKER_PAUSED, false, true, true, true), S(PAUSED));
    EXPECT_MOVE(fix(S(LOST), WG_ORCH_DOCKER_STOPPED, false, true, true, false), S(ASLEEP));
    EXPECT_MOVE(fix(S(LOST), WG_ORCH_DOCKER_MISSING, false, true, false, true), S(ASLEEP));
    EXPECT_MOVE(fix(S(LOST), WG_ORCH_DOCKER_MISSING, false, false, false, true), S(ASLEEP));
    assert_int_equal(wg_orch_wake_decide(S(LOST), 0, 1000, 30000, false), WG_ORCH_WAKE_START);
}

static void test_reconcile_moves_are_allowed(void **state)
{
    (void)state;
    /* Exhaustive: whatever Redis and Docker say, a MOVE is in the table, a
     * RESUME comes from a state that can (be) start(ing), a STOP only from
     * stopping. */
    for (int s = 0; s < WG_SESSION_STATE_COUNT; s++) {
        for (int ds = 0; ds < 4; ds++) {
            for (int bits = 0; bits < 32; bits++) {
                struct wg_orch_fix f = fix((enum wg_session_state)s, (enum wg_orch_docker_state)ds,
                                           bits & 1, bits & 2, bits & 4, bits & 8);
                assert_non_null(f.why);
                switch (f.kind) {
                case WG_ORCH_FIX_MOVE:
                    if (!wg_session_can_move((enum wg_session_state)s, f.to))
                        fail_msg("%s -> %s (docker %s) is not in the table",
                                 wg_session_state_name((enum wg_session_state)s),
                                 wg_session_state_name(f.to),
                                 wg_orch_docker_state_name((enum wg_orch_docker_state)ds));
                    break;
                case WG_ORCH_FIX_RESUME:
                    assert_true(s == S(STARTING) || s == S(FAILED));
                    break;
                case WG_ORCH_FIX_STOP:
                    assert_int_equal(s, S(STOPPING));
                    assert_true(wg_session_can_move(S(STOPPING), S(ASLEEP)));
                    break;
                default:
                    break;
                }
                assert_false(f.set_container && f.clear_container);
            }
        }
    }
}

static void test_stuck_after(void **state)
{
    struct wg_orch_deadlines d = {.wake_timeout_ms = 10000, .save_timeout_ms = 60000};

    (void)state;
    assert_int_equal(wg_orch_stuck_after_ms(S(STARTING), &d), 11000);
    assert_int_equal(wg_orch_stuck_after_ms(S(CREATING), &d), 60000); /* at least 60 s */
    assert_int_equal(wg_orch_stuck_after_ms(S(DRAINING), &d), 60000);
    assert_int_equal(wg_orch_stuck_after_ms(S(STOPPING), &d), 60000);
    assert_int_equal(wg_orch_stuck_after_ms(S(SAVING), &d), 120000);
    d.wake_timeout_ms = 45000;
    assert_int_equal(wg_orch_stuck_after_ms(S(STOPPING), &d), 90000);
    for (int s = 0; s < WG_SESSION_STATE_COUNT; s++)
        if (!wg_session_state_transient((enum wg_session_state)s))
            assert_int_equal(wg_orch_stuck_after_ms((enum wg_session_state)s, &d), 0);
}

static void test_readiness(void **state)
{
    (void)state;
    assert_int_equal(wg_orch_ready_mode_of(NULL), WG_ORCH_READY_TCP);
    assert_int_equal(wg_orch_ready_mode_of(""), WG_ORCH_READY_TCP);
    assert_int_equal(wg_orch_ready_mode_of("starting"), WG_ORCH_READY_HEALTH);
    assert_int_equal(wg_orch_ready_mode_of("unhealthy"), WG_ORCH_READY_HEALTH);
    assert_true(wg_orch_health_ready("healthy"));
    assert_false(wg_orch_health_ready("starting"));
    assert_false(wg_orch_health_ready("unhealthy"));
    assert_false(wg_orch_health_ready(NULL));
}

/* ---- metrics --------------------------------------------------------------------------------- */

static void test_heartbeat_json(void **state)
{
    char buf[512], small[16];
    json_error_t jerr;
    struct wg_orch_beat b = {.name = "host-a",
                             .in_flight = 3,
                             .max_starts = 8,
                             .queued = 5,
                             .at_ms = 1795283000123,
                             .running = 4,
                             .sessions = 7,
                             .cpus = 2,
                             .mem_total = 4096,
                             .max_sessions = 50,
                             .labels_json = "{\"gpu\":\"1\"}"};

    (void)state;
    int n = wg_orch_heartbeat_json(buf, sizeof(buf), &b);
    assert_true(n > 0 && (size_t)n == strlen(buf));
    json_t *o = json_loads(buf, 0, &jerr);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "name")), "host-a");
    assert_int_equal(json_integer_value(json_object_get(o, "starts_in_flight")), 3);
    assert_int_equal(json_integer_value(json_object_get(o, "max_concurrent_starts")), 8);
    assert_int_equal(json_integer_value(json_object_get(o, "queued")), 5);
    assert_int_equal(json_integer_value(json_object_get(o, "at")), 1795283000123);
    assert_int_equal(json_integer_value(json_object_get(o, "running")), 4);
    assert_int_equal(json_integer_value(json_object_get(o, "sessions")), 7);
    assert_int_equal(json_integer_value(json_object_get(o, "cpus")), 2);
    assert_int_equal(json_integer_value(json_object_get(o, "mem_total")), 4096);
    assert_int_equal(json_integer_value(json_object_get(o, "max_sessions")), 50);
    assert_string_equal(json_string_value(json_object_get(json_object_get(o, "labels"), "gpu")),
                        "1");
    json_decref(o);
    /* Unknown figures are 0, no labels an empty object. */
    b.running = -1;
    b.labels_json = NULL;
    n = wg_orch_heartbeat_json(buf, sizeof(buf), &b);
    assert_true(n > 0);
    o = json_loads(buf, 0, &jerr);
    assert_int_equal(json_integer_value(json_object_get(o, "running")), 0);
    assert_int_equal(json_object_size(json_object_get(o, "labels")), 0);
    json_decref(o);
    b.labels_json = "[1]";
    assert_int_equal(wg_orch_heartbeat_json(buf, sizeof(buf), &b), -EINVAL);
    b.labels_json = NULL;
    assert_int_equal(wg_orch_heartbeat_json(small, sizeof(small), &b), -ENOSPC);
}

/* ---- probe (private loop, loopback) ------------------------------------------------------ */

struct probe_ctx {
    int calls;
    unsigned attempts;
    uint64_t at;
    uv_loop_t *loop;
};

static void probe_done(int status, unsigned attempts, void *arg)
{
    struct probe_ctx *c = arg;
    assert_int_equal(status, 0);
    c->calls++;
    c->attempts = attempts;
    c->at = uv_now(c->loop);
}

static void on_conn(uv_stream_t *server, int status)
{
    uv_tcp_t *c;

    if (status < 0)
        return;
    c = malloc(sizeof(*c));
    uv_tcp_init(server->loop, c);
    if (uv_accept(server, (uv_stream_t *)c) == 0)
        uv_close((uv_handle_t *)c, (uv_close_cb)free);
    else
        uv_close((uv_handle_t *)c, (uv_close_cb)free);
}

static int listen_on(uv_loop_t *loop, uv_tcp_t *srv, int port)
{
    struct sockaddr_in sa;
    struct sockaddr_storage got;
    int len = sizeof(got);

    uv_ip4_addr("127.0.0.1", port, &sa);
    uv_tcp_init(loop, srv);
    assert_int_equal(uv_tcp_bind(srv, (const struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)srv, 16, on_conn), 0);
    uv_tcp_getsockname(srv, (struct sockaddr *)&got, &len);
    return ntohs(((struct sockaddr_in *)&got)->sin_port);
}

/* Runs the loop out; every handle must be closed by then. */
static void loop_close_clean(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void test_probe_connects(void **state)
{
    uv_loop_t loop;
    uv_tcp_t srv;
    struct probe_ctx c = {.loop = &loop};
    struct wg_probe *p = NULL;

    (void)state;
    uv_loop_init(&loop);
    int port = listen_on(&loop, &srv, 0);
    assert_int_equal(wg_probe_start(&loop, "127.0.0.1", (uint16_t)port, 0, 0, probe_done, &c, &p),
                     0);
    assert_int_equal(c.calls, 0); /* never inside the call */
    while (c.calls == 0)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.attempts, 1);
    uv_close((uv_handle_t *)&srv, NULL);
    loop_close_clean(&loop);
}

struct late {
    uv_tcp_t *srv;
    int port;
};

static void late_listen(uv_timer_t *t)
{
    struct late *l = t->data;
    listen_on(t->loop, l->srv, l->port);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_probe_retries_until_listening(void **state)
{
    uv_loop_t loop;
    uv_tcp_t srv, tmp;
    uv_timer_t later;
    struct probe_ctx c = {.loop = &loop};
    struct wg_probe *p = NULL;
    struct late l = {.srv = &srv};

    (void)state;
    uv_loop_init(&loop);
    /* A free port: bind, read it, close; nobody listens on it for 120 ms. */
    l.port = listen_on(&loop, &tmp, 0);
    uv_close((uv_handle_t *)&tmp, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_timer_init(&loop, &later);
    later.data = &l;
    uv_timer_start(&later, late_listen, 120, 0);
    uint64_t t0 = uv_now(&loop);
    assert_int_equal(
        wg_probe_start(&loop, "127.0.0.1", (uint16_t)l.port, 10, 50, probe_done, &c, &p), 0);
    while (c.calls == 0)
        uv_run(&loop, UV_RUN_ONCE);
    assert_true(c.attempts >= 3); /* refused, refused, ..., connected */
    assert_true(c.at - t0 >= 110);
    assert_true(c.at - t0 < 1000); /* short attempts, no long connect */
    uv_close((uv_handle_t *)&srv, NULL);
    loop_close_clean(&loop);
}

static void stop_it(uv_timer_t *t)
{
    wg_probe_stop(t->data);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_probe_stop_without_callback(void **state)
{
    uv_loop_t loop;
    uv_tcp_t tmp;
    uv_timer_t stopper;
    struct probe_ctx c = {.loop = &loop};
    struct wg_probe *p = NULL;

    (void)state;
    uv_loop_init(&loop);
    int port = listen_on(&loop, &tmp, 0);
    uv_close((uv_handle_t *)&tmp, NULL);
    assert_int_equal(wg_probe_start(&loop, "127.0.0.1", (uint16_t)port, 5, 20, probe_done, &c, &p),
                     0);
    uv_timer_init(&loop, &stopper);
    stopper.data = p;
    uv_timer_start(&stopper, stop_it, 80, 0);
    uv_run(&loop, UV_RUN_DEFAULT); /* ends once the probe closed its handles */
    assert_int_equal(c.calls, 0);
    loop_close_clean(&loop);

    /* Stopped at once, before any attempt. */
    uv_loop_init(&loop);
    assert_int_equal(wg_probe_start(&loop, "127.0.0.1", 9, 5, 20, probe_done, &c, &p), 0);
    wg_probe_stop(p);
    loop_close_clean(&loop);
    assert_int_equal(c.calls, 0);
}

static void test_probe_bad_args(void **state)
{
    uv_loop_t loop;
    struct wg_probe *p = NULL;
    struct probe_ctx c = {.loop = &loop};

    (void)state;
    uv_loop_init(&loop);
    assert_int_equal(wg_probe_start(&loop, "not-an-ip", 80, 0, 0, probe_done, &c, &p), -EINVAL);
    assert_int_equal(wg_probe_start(&loop, "10.0.0.1", 0, 0, 0, probe_done, &c, &p), -EINVAL);
    assert_int_equal(wg_probe_start(&loop, NULL, 80, 0, 0, probe_done, &c, &p), -EINVAL);
    assert_int_equal(wg_probe_start(&loop, "10.0.0.1", 80, 0, 0, NULL, &c, &p), -EINVAL);
    wg_probe_stop(NULL);
    loop_close_clean(&loop);
}

/* ---- sleep ---------------------------------------------------------------------------------- */

static enum wg_orch_reap_action reap(enum wg_session_state st, int64_t idle, uint64_t pause,
                                     uint64_t stop, int64_t save_ago, bool save_ok, uint64_t wait)
{
    struct wg_orch_reap_in in = {.state = st,
                                 .now = 1000000,
                                 .last_active = 1000000 - idle,
                                 .pause_after_ms = pause,
                                 .stop_after_ms = stop,
                                 .save_at = save_ago >= 0 ? 1000000 - save_ago : 0,
                                 .save_ok = save_ok,
                                 .retry_wait_ms = wait};
    const char *why = NULL;
    enum wg_orch_reap_action a = wg_orch_reap_decide(&in, &why);

    assert_non_null(why);
    return a;
}

static void test_reap_decide(void **state)
{
    (void)state;
    /* Tiers. */
    assert_int_equal(reap(S(RUNNING), 999, 0, 1000, -1, false, 0), WG_ORCH_REAP_NONE);
    assert_int_equal(reap(S(RUNNING), 1000, 0, 1000, -1, false, 0), WG_ORCH_REAP_STOP);
    assert_int_equal(reap(S(RUNNING), 600, 500, 1000, -1, false, 0), WG_ORCH_REAP_PAUSE);
    assert_int_equal(reap(S(RUNNING), 1500, 500, 1000, -1, false, 0), WG_ORCH_REAP_STOP);
    assert_int_equal(reap(S(PAUSED), 600, 500, 1000, -1, false, 0), WG_ORCH_REAP_NONE);
    assert_int_equal(reap(S(PAUSED), 1000, 500, 1000, -1, false, 0), WG_ORCH_REAP_STOP);
    assert_int_equal(reap(S(PAUSED), 99999, 500, 0, -1, false, 0), WG_ORCH_REAP_NONE);
    assert_int_equal(reap(S(RUNNING), 99999, 0, 0, -1, false, 0), WG_ORCH_REAP_NONE); /* all off */
    /* Only sessions at rest and awake. */
    enum wg_session_state busy[] = {S(CREATING), S(STARTING), S(DRAINING), S(SAVING),
                                    S(STOPPING), S(ASLEEP),   S(FAILED)};
    for (size_t i = 0; i < sizeof(busy) / sizeof(busy[0]); i++)
        assert_int_equal(reap(busy[i], 99999, 1, 1, -1, false, 0), WG_ORCH_REAP_NONE);
    /* A failed save during this idle spell waits for its backoff... */
    assert_int_equal(reap(S(RUNNING), 5000, 0, 1000, 100, false, 500), WG_ORCH_REAP_NONE);
    assert_int_equal(reap(S(RUNNING), 5000, 0, 1000, 500, false, 500), WG_ORCH_REAP_STOP);
    /* ...one before the last activity does not, nor does a good save. */
    assert_int_equal(reap(S(RUNNING), 5000, 0, 1000, 6000, false, 500000), WG_ORCH_REAP_STOP);
    assert_int_equal(reap(S(RUNNING), 5000, 0, 1000, 100, true, 500000), WG_ORCH_REAP_STOP);
    /* The pause tier ignores the save backoff (it does not save by default). */
    assert_int_equal(reap(S(RUNNING), 600, 500, 1000, 100, false, 500000), WG_ORCH_REAP_PAUSE);
    /* A clock that went back never makes a session idle. */
    assert_int_equal(reap(S(RUNNING), -5000, 0, 1, -1, false, 0), WG_ORCH_REAP_NONE);
}

static void test_save_backoff(void **state)
{
    (void)state;
    assert_int_equal(wg_orch_save_backoff_ms(0, 10000, 600000), 0);
    assert_int_equal(wg_orch_save_backoff_ms(1, 10000, 600000), 10000);
    assert_int_equal(wg_orch_save_backoff_ms(2, 10000, 600000), 20000);
    assert_int_equal(wg_orch_save_backoff_ms(4, 10000, 600000), 80000);
    assert_int_equal(wg_orch_save_backoff_ms(10, 10000, 600000), 600000);
    assert_int_equal(wg_orch_save_backoff_ms(64, 10000, 600000), 600000);
}

static void test_save_argv(void **state)
{
    const char *argv[32];
    char secs[16];
    const char *cmd[] = {"/bin/save", "--all", NULL};
    int n;

    (void)state;
    n = wg_orch_save_argv(NULL, "/work", "s-1", "2026-01-01T00:00:00Z", 60000, argv, 32, secs,
                          sizeof(secs));
    assert_int_equal(n, 13);
    assert_string_equal(argv[0], "timeout");
    assert_string_equal(argv[1], "-s");
    assert_string_equal(argv[2], "TERM");
    assert_string_equal(argv[3], "-k");
    assert_string_equal(argv[4], "5");
    assert_string_equal(argv[5], "60");
    assert_string_equal(argv[6], "sh");
    assert_string_equal(argv[7], "-c");
    assert_non_null(strstr(argv[8], "git add -A"));
    assert_non_null(strstr(argv[8], "wakegate-commit: "));
    assert_string_equal(argv[9], "wakegate-save");
    assert_string_equal(argv[10], "/work");
    assert_string_equal(argv[11], "s-1");
    assert_string_equal(argv[12], "2026-01-01T00:00:00Z");
    assert_null(argv[13]);
    /* Seconds round up: a 1.5 s timeout is 2 s, never 1. */
    n = wg_orch_save_argv(cmd, "/work", "s-1", "t", 1500, argv, 32, secs, sizeof(secs));
    assert_int_equal(n, 8);
    assert_string_equal(argv[5], "2");
    assert_string_equal(argv[6], "/bin/save");
    assert_string_equal(argv[7], "--all");
    assert_null(argv[8]);
    assert_int_equal(wg_orch_save_argv(cmd, "/w", "s", "t", 1000, argv, 8, secs, sizeof(secs)),
                     -ENOSPC);
}

static void test_save_commit(void **state)
{
    char c[65];
    const char out[] = "wakegate-save: committed the changes\n"
                       "wakegate-commit: 0123456789abcdef0123456789abcdef01234567\n";
    const char last[] = "wakegate-commit: aaaaaaa\nwakegate-commit: bbbbbbbb\n";
    const char bad[] = "wakegate-commit: XYZ\nwakegate-commit: 123\nwakegate-commit: abc def0\n";

    (void)state;
    assert_true(wg_orch_save_commit(out, strlen(out), c, sizeof(c)));
    assert_string_equal(c, "0123456789abcdef0123456789abcdef01234567");
    assert_true(wg_orch_save_commit(last, strlen(last), c, sizeof(c)));
    assert_string_equal(c, "bbbbbbbb");
    assert_false(wg_orch_save_commit(bad, strlen(bad), c, sizeof(c)));
    assert_false(wg_orch_save_commit("", 0, c, sizeof(c)));
    /* No terminating newline. */
    assert_true(wg_orch_save_commit("wakegate-commit: abcdef1", 24, c, sizeof(c)));
    assert_string_equal(c, "abcdef1");
}

static void test_idle_labels(void **state)
{
    const char *labels[] = {
        "app", "x", "wakegate.idle.stop_after", "90s", "wakegate.idle.pause_after", "0s", NULL};
    const char *bad[] = {"wakegate.idle.stop_after", "soon", NULL};
    bool hs = false, hp = false;
    uint64_t stop = 0, pause = 7;
    char err[128];

    (void)state;
    assert_int_equal(wg_orch_idle_labels(labels, &hs, &stop, &hp, &pause, err, sizeof(err)), 0);
    assert_true(hs);
    assert_int_equal(stop, 90000);
    assert_true(hp);
    assert_int_equal(pause, 0);
    hs = hp = false;
    assert_int_equal(wg_orch_idle_labels(bad, &hs, &stop, &hp, &pause, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "wakegate.idle.stop_after"));
    assert_false(hs);
    assert_int_equal(wg_orch_idle_labels(NULL, &hs, &stop, &hp, &pause, err, sizeof(err)), 0);
}

/* ---- the steps of a wake ------------------------------------------------------------------ */

static void test_admit_now(void **state)
{
    (void)state;
    assert_true(wg_orch_admit_now(0, 8, true));
    assert_true(wg_orch_admit_now(7, 8, true));
    assert_false(wg_orch_admit_now(8, 8, true));  /* at the cap */
    assert_false(wg_orch_admit_now(9, 8, true));  /* above it (the cap went down) */
    assert_false(wg_orch_admit_now(0, 8, false)); /* someone queued first: FIFO */
    assert_false(wg_orch_admit_now(0, 0, true));
}

#define STEP(x) WG_ORCH_STEP_##x

static void expect_step(const char *what, enum wg_orch_wake_step got, enum wg_orch_wake_step want)
{
    if (got != want)
        fail_msg("%s: %s, expected %s", what, wg_orch_wake_step_name(got),
                 wg_orch_wake_step_name(want));
}

static void test_step_after_inspect(void **state)
{
    static const struct {
        int status;
        bool labelled, paused, running;
        enum wg_orch_wake_step want;
    } rows[] = {
        {WG_DOCKER_ENOTFOUND, false, false, false, STEP(CREATE)}, /* gone */
        {0, false, false, true, STEP(CREATE)},                    /* not this session's */
        {0, false, true, false, STEP(CREATE)},
        {0, true, true, false, STEP(UNPAUSE)},
        {0, true, true, true, STEP(UNPAUSE)}, /* paused wins over running */
        {0, true, false, true, STEP(READY)},  /* already running: readiness */
        {0, true, false, false, STEP(START)}, /* created or exited */
        {WG_DOCKER_ECONFLICT, false, false, false, STEP(FAIL)},
        {WG_DOCKER_EHTTP, false, false, false, STEP(FAIL)},
        {-ECONNREFUSED, false, false, false, STEP(FAIL)},
        {-ETIMEDOUT, false, false, false, STEP(FAIL)},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char what[64];
        snprintf(what, sizeof(what), "row %zu", i);
        expect_step(what,
                    wg_orch_step_after_inspect(rows[i].status, rows[i].labelled, rows[i].paused,
                                               rows[i].running),
                    rows[i].want);
    }
}

static void test_step_after_calls(void **state)
{
    (void)state;
    /* create */
    expect_step("create ok", wg_orch_step_after_create(0), STEP(START));
    expect_step("create name taken", wg_orch_step_after_create(WG_DOCKER_ECONFLICT), STEP(FIND));
    expect_step("create 404 (image)", wg_orch_step_after_create(WG_DOCKER_ENOTFOUND), STEP(FAIL));
    expect_step("create http", wg_orch_step_after_create(WG_DOCKER_EHTTP), STEP(FAIL));
    expect_step("create timeout", wg_orch_step_after_create(-ETIMEDOUT), STEP(FAIL));
    /* start: a container that vanished is created anew once */
    expect_step("start ok", wg_orch_step_after_start(0, false), STEP(STARTED));
    expect_step("start ok again", wg_orch_step_after_start(0, true), STEP(STARTED));
    expect_step("start 404", wg_orch_step_after_start(WG_DOCKER_ENOTFOUND, false), STEP(CREATE));
    expect_step("start 404 twice", wg_orch_step_after_start(WG_DOCKER_ENOTFOUND, true), STEP(FAIL));
    expect_step("start 409", wg_orch_step_after_start(WG_DOCKER_ECONFLICT, false), STEP(FAIL));
    expect_step("start http", wg_orch_step_after_start(WG_DOCKER_EHTTP, false), STEP(FAIL));
    expect_step("start lost", wg_orch_step_after_start(-ECONNRESET, false), STEP(FAIL));
    /* unpause: not paused any more means start it */
    expect_step("unpause ok", wg_orch_step_after_unpause(0), STEP(STARTED));
    expect_step("unpause 409", wg_orch_step_after_unpause(WG_DOCKER_ECONFLICT), STEP(START));
    expect_step("unpause 404", wg_orch_step_after_unpause(WG_DOCKER_ENOTFOUND), STEP(CREATE));
    expect_step("unpause http", wg_orch_step_after_unpause(WG_DOCKER_EHTTP), STEP(FAIL));
    expect_step("unpause lost", wg_orch_step_after_unpause(-ECONNRESET), STEP(FAIL));
    /* the inspect after start or unpause answered */
    expect_step("started paused", wg_orch_step_after_started(true, false), STEP(UNPAUSE));
    expect_step("started paused running", wg_orch_step_after_started(true, true), STEP(UNPAUSE));
    expect_step("started running", wg_orch_step_after_started(false, true), STEP(READY));
    expect_step("started exited", wg_orch_step_after_started(false, false), STEP(CRASH));
    for (int s = STEP(CREATE); s <= STEP(FAIL); s++)
        assert_string_not_equal(wg_orch_wake_step_name((enum wg_orch_wake_step)s), "?");
}

static void test_engine_unreachable(void **state)
{
    (void)state;
    /* No engine to talk to: retried within the wake deadline, never the
     * session's failure. */
    assert_true(wg_orch_engine_unreachable(-ECONNREFUSED, 0)); /* socket with nobody behind */
    assert_true(wg_orch_engine_unreachable(-ENOENT, 0));       /* no socket file */
    assert_true(wg_orch_engine_unreachable(-ECONNRESET, 0));   /* died mid-call */
    assert_true(wg_orch_engine_unreachable(-EPIPE, 0));
    assert_true(wg_orch_engine_unreachable(-ETIMEDOUT, 0));
    assert_true(wg_orch_engine_unreachable(-EHOSTUNREACH, 0));
    assert_true(wg_orch_engine_unreachable(WG_DOCKER_EHTTP, 502));
    assert_true(wg_orch_engine_unreachable(WG_DOCKER_EHTTP, 503));
    assert_true(wg_orch_engine_unreachable(WG_DOCKER_EHTTP, 504));
    /* The engine answered about the container, or the call itself is wrong. */
    assert_false(wg_orch_engine_unreachable(0, 200));
    assert_false(wg_orch_engine_unreachable(WG_DOCKER_EHTTP, 500)); /* OCI runtime error */
    assert_false(wg_orch_engine_unreachable(WG_DOCKER_EHTTP, 400));
    assert_false(wg_orch_engine_unreachable(WG_DOCKER_ENOTFOUND, 404));
    assert_false(wg_orch_engine_unreachable(WG_DOCKER_ECONFLICT, 409));
    assert_false(wg_orch_engine_unreachable(-EPROTO, 0)); /* TLS: a configuration error */
    assert_false(wg_orch_engine_unreachable(-EBADMSG, 200));
    assert_false(wg_orch_engine_unreachable(-EMSGSIZE, 200));
    assert_false(wg_orch_engine_unreachable(-ECANCELED, 0));
    assert_false(wg_orch_engine_unreachable(-ENOMEM, 0));
    assert_false(wg_orch_engine_unreachable(-EPROTONOSUPPORT, 0));
    /* Retries: 100, 200, 400, 800 ms, then every second, never past the
     * deadline. */
    assert_int_equal(wg_orch_engine_retry_ms(0, 20000), 100);
    assert_int_equal(wg_orch_engine_retry_ms(1, 20000), 200);
    assert_int_equal(wg_orch_engine_retry_ms(3, 20000), 800);
    assert_int_equal(wg_orch_engine_retry_ms(4, 20000), 1000);
    assert_int_equal(wg_orch_engine_retry_ms(40, 20000), 1000);
    assert_int_equal(wg_orch_engine_retry_ms(4, 300), 300);
    assert_int_equal(wg_orch_engine_retry_ms(0, 0), 0);
    assert_int_equal(wg_orch_engine_retry_ms(0, -5), 0);
}

static void test_wake_crash(void **state)
{
    (void)state;
    /* Restarts 1, 2, 3 after 1 s, 2 s, 4 s; then the wake fails. */
    for (unsigned r = 0; r < WG_ORCH_MAX_RESTARTS; r++)
        assert_int_equal(wg_orch_wake_crash(false, r, WG_ORCH_MAX_RESTARTS), WG_ORCH_CRASH_RESTART);
    assert_int_equal(wg_orch_backoff_ms(0), 1000);
    assert_int_equal(wg_orch_backoff_ms(WG_ORCH_MAX_RESTARTS - 1), 4000);
    assert_int_equal(wg_orch_wake_crash(false, WG_ORCH_MAX_RESTARTS, WG_ORCH_MAX_RESTARTS),
                     WG_ORCH_CRASH_FAIL_LOOP);
    assert_int_equal(wg_orch_wake_crash(false, 99, WG_ORCH_MAX_RESTARTS), WG_ORCH_CRASH_FAIL_LOOP);
    /* An OOM kill fails at once: a restart would not help. */
    assert_int_equal(wg_orch_wake_crash(true, 0, WG_ORCH_MAX_RESTARTS), WG_ORCH_CRASH_FAIL_OOM);
    assert_int_equal(wg_orch_wake_crash(true, 99, WG_ORCH_MAX_RESTARTS), WG_ORCH_CRASH_FAIL_OOM);
    assert_int_equal(wg_orch_wake_crash(false, 0, 0), WG_ORCH_CRASH_FAIL_LOOP);
}

static void test_death_is_this_run(void **state)
{
    (void)state;
    assert_false(wg_orch_death_is_this_run(0, 0)); /* nothing started yet */
    assert_false(wg_orch_death_is_this_run(0, 500));
    assert_true(wg_orch_death_is_this_run(100, 0));   /* no time: believed */
    assert_false(wg_orch_death_is_this_run(100, 99)); /* an earlier run's */
    assert_true(wg_orch_death_is_this_run(100, 100));
    assert_true(wg_orch_death_is_this_run(100, 101));
}

/* ---- the steps of a sleep ----------------------------------------------------------------- */

#define SL(x) WG_ORCH_SLEEP_##x
#define TIER(x) WG_ORCH_TIER_##x

static void expect_sleep(const char *what, enum wg_orch_sleep_step got,
                         enum wg_orch_sleep_step want)
{
    if (got != want)
        fail_msg("%s: %s, expected %s", what, wg_orch_sleep_step_name(got),
                 wg_orch_sleep_step_name(want));
}

static void test_sleep_first(void **state)
{
    static const struct {
        enum wg_session_state st;
        enum wg_orch_tier tier;
        bool forced, container, saved;
        enum wg_orch_sleep_step want;
        const char *why; /* a fragment of the reason, or NULL */
    } rows[] = {
        /* running: drain first, whatever the tier */
        {S(RUNNING), TIER(STOP), false, true, false, SL(DRAIN), NULL},
        {S(RUNNING), TIER(PAUSE), false, true, true, SL(DRAIN), NULL},
        {S(RUNNING), TIER(DESTROY), false, true, false, SL(DRAIN), NULL},
        {S(RUNNING), TIER(STOP), false, false, false, SL(NOTHING), "nothing"},
        /* paused: the stop tier saves (thawed) unless saved before the pause */
        {S(PAUSED), TIER(PAUSE), false, true, false, SL(NOTHING), "nothing"},
        {S(PAUSED), TIER(STOP), false, true, true, SL(STOP), NULL},
        {S(PAUSED), TIER(STOP), false, true, false, SL(SAVE), NULL},
        {S(PAUSED), TIER(DESTROY), false, true, true, SL(STOP), NULL},
        {S(PAUSED), TIER(DESTROY), false, true, false, SL(SAVE), NULL},
        {S(PAUSED), TIER(STOP), false, false, false, SL(NOTHING), "nothing"},
        /* at rest: only a destroy acts, and only without unsaved work */
        {S(ASLEEP), TIER(STOP), false, true, false, SL(NOTHING), "nothing"},
        {S(ASLEEP), TIER(DESTROY), false, true, true, SL(DOCKER), NULL},
        {S(ASLEEP), TIER(DESTROY), false, true, false, SL(REFUSE), "cannot be saved"},
        {S(ASLEEP), TIER(DESTROY), false, false, false, SL(DOCKER), NULL},
        {S(FAILED), TIER(DESTROY), false, true, true, SL(REFUSE), "cannot be saved"},
        {S(FAILED), TIER(DESTROY), false, false, false, SL(DOCKER), NULL},
        {S(CREATING), TIER(DESTROY), false, true, true, SL(REFUSE), "cannot be saved"},
        {S(CREATING), TIER(DESTROY), false, false, false, SL(DOCKER), NULL},
        {S(FAILED), TIER(STOP), false, true, false, SL(NOTHING), "nothing"},
        /* busy: a destroy is refused, a sleep has nothing to do */
        {S(STARTING), TIER(DESTROY), false, true, false, SL(REFUSE), "busy"},
        {S(DRAINING), TIER(DESTROY), false, true, false, SL(REFUSE), "busy"},
        {S(SAVING), TIER(DESTROY), false, true, true, SL(REFUSE), "busy"},
        {S(STOPPING), TIER(DESTROY), false, true, false, SL(REFUSE), "busy"},
        {S(DRAINING), TIER(STOP), false, true, false, SL(NOTHING), "nothing"},
        {S(STOPPING), TIER(PAUSE), false, true, false, SL(NOTHING), "nothing"},
        /* forced: a destroy removes whatever is there; a sleep stops what runs */
        {S(RUNNING), TIER(DESTROY), true, true, false, SL(DOCKER), NULL},
        {S(SAVING), TIER(DESTROY), true, true, false, SL(DOCKER), NULL},
        {S(ASLEEP), TIER(DESTROY), true, false, false, SL(DOCKER), NULL},
        {S(RUNNING), TIER(STOP), true, true, false, SL(STOP), NULL},
        {S(PAUSED), TIER(STOP), true, true, false, SL(STOP), NULL},
        {S(FAILED), TIER(STOP), true, true, false, SL(STOP), NULL},
        {S(RUNNING), TIER(STOP), true, false, false, SL(NOTHING), "nothing to stop"},
        {S(ASLEEP), TIER(STOP), true, true, false, SL(NOTHING), "nothing to stop"},
        {S(DRAINING), TIER(STOP), true, true, false, SL(NOTHING), "nothing to stop"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct wg_orch_sleep_in in = {rows[i].st, rows[i].tier, rows[i].forced, rows[i].container,
                                      rows[i].saved};
        const char *why = NULL;
        char what[96];
        enum wg_orch_sleep_step got = wg_orch_sleep_first(&in, &why);

        snprintf(what, sizeof(what), "row %zu (%s, %s%s)", i, wg_session_state_name(rows[i].st),
                 wg_orch_tier_name(rows[i].tier), rows[i].forced ? ", forced" : "");
        expect_sleep(what, got, rows[i].want);
        assert_non_null(why);
        if (rows[i].why && !strstr(why, rows[i].why))
            fail_msg("%s: why \"%s\" lacks \"%s\"", what, why, rows[i].why);
    }
}

/* Every first step asks only for moves the lifecycle table allows. */
static void test_sleep_first_moves_are_allowed(void **state)
{
    (void)state;
    for (int st = 0; st < WG_SESSION_STATE_COUNT; st++)
        for (int tier = TIER(PAUSE); tier <= TIER(DESTROY); tier++)
            for (int bits = 0; bits < 8; bits++) {
                struct wg_orch_sleep_in in = {(enum wg_session_state)st, (enum wg_orch_tier)tier,
                                              bits & 1, (bits & 2) != 0, (bits & 4) != 0};
                enum wg_orch_sleep_step s = wg_orch_sleep_first(&in, NULL);
                enum wg_session_state to;

                if (s == SL(DRAIN))
                    to = S(DRAINING);
                else if (s == SL(SAVE))
                    to = S(SAVING);
                else if (s == SL(STOP))
                    to = S(STOPPING);
                else if (s == SL(PAUSE) || s == SL(KEEP_AWAKE))
                    fail_msg("%s is not a first step", wg_orch_sleep_step_name(s));
                else
                    continue; /* no move: nothing, a refusal, or the Docker call first */
                if (!wg_session_can_move((enum wg_session_state)st, to))
                    fail_msg("%s -> %s (%s) is not a valid move",
                             wg_session_state_name((enum wg_session_state)st),
                             wg_session_state_name(to), wg_orch_sleep_step_name(s));
            }
}

static void test_sleep_after_drain_and_save(void **state)
{
    (void)state;
    /* After the drain: the pause tier saves only with save.before_pause. */
    expect_sleep("pause", wg_orch_sleep_after_drain(TIER(PAUSE), false, false), SL(PAUSE));
    expect_sleep("pause, save first", wg_orch_sleep_after_drain(TIER(PAUSE), true, false),
                 SL(SAVE));
    expect_sleep("stop", wg_orch_sleep_after_drain(TIER(STOP), false, false), SL(SAVE));
    expect_sleep("destroy", wg_orch_sleep_after_drain(TIER(DESTROY), false, false), SL(SAVE));
    for (int tier = TIER(PAUSE); tier <= TIER(DESTROY); tier++)
        expect_sleep("drain, shutdown",
                     wg_orch_sleep_after_drain((enum wg_orch_tier)tier, true, true),
                     SL(KEEP_AWAKE));
    /* After a good save: on to the tier's end. */
    expect_sleep("saved pause", wg_orch_sleep_after_save(TIER(PAUSE), true, false, false),
                 SL(PAUSE));
    expect_sleep("saved stop", wg_orch_sleep_after_save(TIER(STOP), true, false, false), SL(STOP));
    expect_sleep("saved destroy", wg_orch_sleep_after_save(TIER(DESTROY), true, false, false),
                 SL(STOP));
    /* After a failed save: kept awake; on_failure: stop applies to the stop
     * tier only; a destroy is refused. */
    expect_sleep("failed stop", wg_orch_sleep_after_save(TIER(STOP), false, false, false),
                 SL(KEEP_AWAKE));
    expect_sleep("failed stop, on_failure stop",
                 wg_orch_sleep_after_save(TIER(STOP), false, true, false), SL(STOP));
    expect_sleep("failed pause", wg_orch_sleep_after_save(TIER(PAUSE), false, true, false),
                 SL(KEEP_AWAKE));
    expect_sleep("failed destroy", wg_orch_sleep_after_save(TIER(DESTROY), false, false, false),
                 SL(REFUSE));
    expect_sleep("failed destroy, on_failure stop",
                 wg_orch_sleep_after_save(TIER(DESTROY), false, true, false), SL(REFUSE));
    /* A shutdown rolls back whatever the save said. */
    expect_sleep("saved, shutdown", wg_orch_sleep_after_save(TIER(STOP), true, false, true),
                 SL(KEEP_AWAKE));
    expect_sleep("failed, shutdown", wg_orch_sleep_after_save(TIER(DESTROY), false, true, true),
                 SL(KEEP_AWAKE));
    for (int s = SL(NOTHING); s <= SL(KEEP_AWAKE); s++)
        assert_string_not_equal(wg_orch_sleep_step_name((enum wg_orch_sleep_step)s), "?");
}

static void test_sleep_call(void **state)
{
    (void)state;
    assert_int_equal(wg_orch_sleep_call(TIER(STOP), S(STOPPING), false, false), WG_ORCH_CALL_NONE);
    assert_int_equal(wg_orch_sleep_call(TIER(DESTROY), S(ASLEEP), false, false), WG_ORCH_CALL_NONE);
    /* A frozen container is thawed before its stop, unless the save did. */
    assert_int_equal(wg_orch_sleep_call(TIER(STOP), S(PAUSED), false, true), WG_ORCH_CALL_THAW);
    assert_int_equal(wg_orch_sleep_call(TIER(STOP), S(PAUSED), true, true), WG_ORCH_CALL_STOP);
    assert_int_equal(wg_orch_sleep_call(TIER(STOP), S(STOPPING), false, true), WG_ORCH_CALL_STOP);
    assert_int_equal(wg_orch_sleep_call(TIER(PAUSE), S(PAUSED), false, true), WG_ORCH_CALL_PAUSE);
    assert_int_equal(wg_orch_sleep_call(TIER(DESTROY), S(STOPPING), false, true),
                     WG_ORCH_CALL_REMOVE);
    assert_int_equal(wg_orch_sleep_call(TIER(DESTROY), S(PAUSED), false, true),
                     WG_ORCH_CALL_REMOVE);
    assert_int_equal(wg_orch_sleep_call(TIER(DESTROY), S(RUNNING), false, true),
                     WG_ORCH_CALL_REMOVE);
}

static void test_sleep_cancellable(void **state)
{
    (void)state;
    for (int st = 0; st < WG_SESSION_STATE_COUNT; st++)
        for (int tier = TIER(PAUSE); tier <= TIER(DESTROY); tier++)
            for (int forced = 0; forced < 2; forced++) {
                bool want =
                    (st == S(DRAINING) || st == S(SAVING)) && tier != TIER(DESTROY) && !forced;
                if (wg_orch_sleep_cancellable((enum wg_orch_tier)tier, forced,
                                              (enum wg_session_state)st) != want)
                    fail_msg("%s %s forced=%d: expected %d",
                             wg_session_state_name((enum wg_session_state)st),
                             wg_orch_tier_name((enum wg_orch_tier)tier), forced, want);
                /* A cancel is the move back to running. */
                if (want)
                    assert_true(wg_session_can_move((enum wg_session_state)st, S(RUNNING)));
            }
}

static void test_save_result(void **state)
{
    bool ok, timeout;

    (void)state;
    wg_orch_save_result(0, 0, 1200, 60000, &ok, &timeout);
    assert_true(ok);
    assert_false(timeout);
    wg_orch_save_result(0, 1, 1200, 60000, &ok, &timeout);
    assert_false(ok);
    assert_false(timeout);
    /* The in-container timeout killed it (124 from TERM, 137 from KILL). */
    wg_orch_save_result(0, 124, 60000, 60000, &ok, &timeout);
    assert_false(ok);
    assert_true(timeout);
    wg_orch_save_result(0, 137, 65000, 60000, &ok, &timeout);
    assert_true(timeout);
    wg_orch_save_result(0, 124, 59999, 60000, &ok, &timeout); /* its own exit code 124 */
    assert_false(timeout);
    /* The exec call's own bound. */
    wg_orch_save_result(-ETIMEDOUT, -1, 70000, 60000, &ok, &timeout);
    assert_false(ok);
    assert_true(timeout);
    /* Docker errors are failures, not timeouts. */
    wg_orch_save_result(WG_DOCKER_ENOTFOUND, -1, 5, 60000, &ok, &timeout);
    assert_false(ok);
    assert_false(timeout);
    wg_orch_save_result(WG_DOCKER_ECONFLICT, -1, 5, 60000, &ok, &timeout);
    assert_false(timeout);
    wg_orch_save_result(-ECONNRESET, -1, 60000, 60000, &ok, &timeout);
    assert_false(ok);
    assert_false(timeout);
}

static void test_sleep_on_shutdown(void **state)
{
    static const struct {
        bool begun, rolled_back, rolling_back, busy, late;
        enum wg_session_state st;
        enum wg_orch_sleep_shutdown want;
    } rows[] = {
        {false, false, false, false, false, S(RUNNING), WG_ORCH_SHUTDOWN_END},
        {false, false, false, true, true, S(SAVING), WG_ORCH_SHUTDOWN_END},
        {true, true, true, true, true, S(SAVING), WG_ORCH_SHUTDOWN_DONE},
        {true, false, true, true, true, S(SAVING), WG_ORCH_SHUTDOWN_WAIT},
        /* a drain waited out is rolled back at once */
        {true, false, false, false, false, S(DRAINING), WG_ORCH_SHUTDOWN_ROLLBACK},
        {true, false, false, true, false, S(DRAINING), WG_ORCH_SHUTDOWN_WAIT},
        /* a save may finish until the grace period ends */
        {true, false, false, true, false, S(SAVING), WG_ORCH_SHUTDOWN_WAIT},
        {true, false, false, true, true, S(SAVING), WG_ORCH_SHUTDOWN_BESIDE},
        {true, false, false, false, true, S(SAVING), WG_ORCH_SHUTDOWN_ROLLBACK},
        /* a stop or pause in flight finishes */
        {true, false, false, true, true, S(STOPPING), WG_ORCH_SHUTDOWN_WAIT},
        {true, false, false, true, true, S(RUNNING), WG_ORCH_SHUTDOWN_WAIT},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct wg_orch_sleep_shutdown_in in = {rows[i].begun,        rows[i].rolled_back,
                                               rows[i].rolling_back, rows[i].busy,
                                               rows[i].late,         rows[i].st};
        enum wg_orch_sleep_shutdown got = wg_orch_sleep_on_shutdown(&in);
        if (got != rows[i].want)
            fail_msg("row %zu: %d, expected %d", i, got, rows[i].want);
        /* A rollback is the move back to running. */
        if (got == WG_ORCH_SHUTDOWN_ROLLBACK || got == WG_ORCH_SHUTDOWN_BESIDE)
            assert_true(wg_session_can_move(rows[i].st, S(RUNNING)));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wake_decide_by_state),
        cmocka_unit_test(test_wake_failed_cooldown),
        cmocka_unit_test(test_wake_stale),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_death_decide),
        cmocka_unit_test(test_death_moves_are_allowed),
        cmocka_unit_test(test_docker_state_of),
        cmocka_unit_test(test_reconcile_table),
        cmocka_unit_test(test_reconcile_moves_are_allowed),
        cmocka_unit_test(test_stuck_after),
        cmocka_unit_test(test_readiness),
        cmocka_unit_test(test_heartbeat_json),
        cmocka_unit_test(test_lost_comes_back),
        cmocka_unit_test(test_reap_decide),
        cmocka_unit_test(test_save_backoff),
        cmocka_unit_test(test_save_argv),
        cmocka_unit_test(test_save_commit),
        cmocka_unit_test(test_idle_labels),
        cmocka_unit_test(test_probe_connects),
        cmocka_unit_test(test_probe_retries_until_listening),
        cmocka_unit_test(test_probe_stop_without_callback),
        cmocka_unit_test(test_probe_bad_args),
        cmocka_unit_test(test_admit_now),
        cmocka_unit_test(test_step_after_inspect),
        cmocka_unit_test(test_step_after_calls),
        cmocka_unit_test(test_engine_unreachable),
        cmocka_unit_test(test_wake_crash),
        cmocka_unit_test(test_death_is_this_run),
        cmocka_unit_test(test_sleep_first),
        cmocka_unit_test(test_sleep_first_moves_are_allowed),
        cmocka_unit_test(test_sleep_after_drain_and_save),
        cmocka_unit_test(test_sleep_call),
        cmocka_unit_test(test_sleep_cancellable),
        cmocka_unit_test(test_save_result),
        cmocka_unit_test(test_sleep_on_shutdown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
