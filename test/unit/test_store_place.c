/* test/unit/test_store_place.c - placement in common/store against a real
 * redis-server: the placed create (least loaded, max_sessions, labels, the
 * race for one last slot), the lost-host sweep, the wake that re-places a
 * lost session (or, pinned, waits for its host) and fenced writes. Each
 * test starts its own redis-server (redis_fixture.c) and ends by asserting
 * that its loop closes with no live handle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/log.h"
#include "common/redis.h"
#include "common/session.h"
#include "common/store.h"
#include "loop_fixture.h"
#include "redis_connect_fixture.h"
#include "redis_fixture.h"

#define B(x) WG_SESSION_BIT(WG_SESSION_##x)

struct fx {
    uv_loop_t loop;
    bool loop_closed;
    struct wg_test_redis srv;
    char url[256];
    struct wg_log log;
    int64_t clock;
    struct wg_redis *r, *r2;
    struct wg_store *st, *st2, *fenced;
};

static int64_t fake_clock(void *arg)
{
    return ((struct fx *)arg)->clock;
}

static struct wg_redis *open_connected(struct fx *fx, const char *name)
{
    struct wg_redis_opts o = {.name = name};
    struct wg_redis *r = wg_test_redis_connect(&fx->loop, fx->url, &o, &fx->log);

    assert_non_null(r);
    return r;
}

static struct wg_store *open_store(struct fx *fx, struct wg_redis *r, const char *fence)
{
    struct wg_store_opts o = {
        .fence_host = fence, .clock_ms = fake_clock, .clock_arg = fx, .log = &fx->log};
    struct wg_store *s = NULL;

    assert_int_equal(wg_store_new(r, &o, &s), 0);
    return s;
}

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));

    if (!fx)
        return -1;
    *state = fx;
    fx->log.level = WG_LOG_WARN;
    fx->log.format = WG_LOG_LOGFMT;
    fx->log.out = stderr;
    fx->clock = 1700000000000;
    if (uv_loop_init(&fx->loop) != 0)
        return -1;
    if (wg_test_redis_start_in_tmp(&fx->srv, "place", fx->url, sizeof(fx->url)) != 0)
        return -1;
    fx->r = open_connected(fx, "place");
    fx->r2 = open_connected(fx, "place2");
    fx->st = open_store(fx, fx->r, NULL);
    fx->st2 = open_store(fx, fx->r2, NULL);
    fx->fenced = open_store(fx, fx->r, "host-a");
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;

    if (!fx)
        return 0;
    wg_test_redis_stop(&fx->srv);
    if (!fx->loop_closed) {
        uv_run(&fx->loop, UV_RUN_NOWAIT);
        uv_loop_close(&fx->loop);
    }
    wg_test_redis_remove_files(&fx->srv);
    free(fx);
    return 0;
}

static void close_all(struct fx *fx)
{
    wg_store_free(fx->fenced);
    wg_store_free(fx->st2);
    wg_store_free(fx->st);
    wg_redis_free(fx->r2);
    wg_redis_free(fx->r);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    fx->loop_closed = true;
}

/* ---- results ------------------------------------------------------------------------------- */

struct got {
    int calls;
    int status;
    char error[256];
    struct wg_session rec;
    bool has_rec;
    char host[WG_SESSION_HOST_MAX + 1];
    long long count, homed;
    struct wg_store_sweep sweep;
};

static void got_cb(const struct wg_store_res *res, void *arg)
{
    struct got *g = arg;

    g->calls++;
    g->status = res->status;
    snprintf(g->error, sizeof(g->error), "%s", res->error);
    wg_session_release(&g->rec);
    g->has_rec = res->rec != NULL;
    if (res->rec)
        assert_int_equal(wg_session_copy(&g->rec, res->rec), 0);
    snprintf(g->host, sizeof(g->host), "%s", res->host ? res->host : "");
    g->count = res->count;
    g->homed = res->homed;
    if (res->sweep)
        g->sweep = *res->sweep;
}

static void got_reset(struct got *g)
{
    wg_session_release(&g->rec);
    memset(g, 0, sizeof(*g));
}

#define DO(fx, g, expr)                                                                            \
    do {                                                                                           \
        got_reset(g);                                                                              \
        assert_int_equal((expr), 0);                                                               \
        assert_true(wg_test_run_until(&(fx)->loop, &(g)->calls, 1, 3000));                         \
    } while (0)

/* A raw command's integer or string answer. */
struct raw {
    int calls;
    long long integer;
    char str[512];
};

static void raw_cb(int status, redisReply *reply, void *arg)
{
    struct raw *w = arg;

    w->calls++;
    assert_int_equal(status, 0);
    w->integer = reply->integer;
    if (reply->str)
        snprintf(w->str, sizeof(w->str), "%.*s", (int)reply->len, reply->str);
}

static void raw(struct fx *fx, struct raw *w, const char *fmt, ...)
{
    va_list ap;

    memset(w, 0, sizeof(*w));
    va_start(ap, fmt);
    assert_int_equal(wg_redis_vcommand(fx->r, raw_cb, w, fmt, ap), 0);
    va_end(ap);
    assert_true(wg_test_run_until(&fx->loop, &w->calls, 1, 3000));
}

static long long raw_int(struct fx *fx, const char *fmt, const char *arg)
{
    struct raw w;

    raw(fx, &w, fmt, arg);
    return w.integer;
}

/* ---- helpers ------------------------------------------------------------------------------- */

static void beat(struct fx *fx, const char *name, unsigned max, long long running,
                 const char *labels)
{
    char json[512];
    struct got g = {0};

    snprintf(json, sizeof(json),
             "{\"name\":\"%s\",\"running\":%lld,\"max_sessions\":%u,\"labels\":%s}", name, running,
             max, labels ? labels : "{}");
    DO(fx, &g, wg_store_host_beat(fx->st, name, json, 10000, got_cb, &g));
    assert_int_equal(g.status, 0);
    got_reset(&g);
}

static void fields(struct wg_session_update *u)
{
    memset(u, 0, sizeof(*u));
    u->set = WG_SF_IMAGE;
    u->image = "img:1";
}

/* Creates id with placement; returns the status, the host in host_out. */
static int create(struct fx *fx, struct wg_store *st, const char *id, const char *labels, bool pin,
                  char *host_out)
{
    struct wg_session_update u;
    struct wg_store_place p = {.labels_json = labels, .pin = pin};
    struct got g = {0};
    int status;

    fields(&u);
    DO(fx, &g, wg_store_create_placed(st, id, &u, &p, NULL, got_cb, &g));
    status = g.status;
    if (host_out)
        snprintf(host_out, WG_SESSION_HOST_MAX + 1, "%s", g.has_rec ? g.rec.host : "");
    if (status == 0) {
        assert_int_equal(g.rec.epoch, 1);
        assert_int_equal(g.rec.pin, pin);
    }
    got_reset(&g);
    return status;
}

static long long hostload(struct fx *fx, const char *host)
{
    struct raw w;

    raw(fx, &w, "HGET wg:hostload %s", host);
    return atoll(w.str);
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_least_loaded_and_max(void **state)
{
    struct fx *fx = *state;
    char host[WG_SESSION_HOST_MAX + 1];
    char id[16];
    int on_a = 0, on_b = 0;

    /* No host at all, then an explicit host that is not live. */
    struct got g = {0};
    struct wg_session_update u;
    struct wg_store_place p = {.host = "host-z"};
    assert_int_equal(create(fx, fx->st, "s0", NULL, false, NULL), WG_STORE_UNPLACED);
    fields(&u);
    DO(fx, &g, wg_store_create_placed(fx->st, "s0", &u, &p, NULL, got_cb, &g));
    assert_int_equal(g.status, WG_STORE_UNPLACED);
    assert_non_null(strstr(g.error, "host-z is not live"));
    got_reset(&g);
    assert_int_equal(raw_int(fx, "EXISTS wg:session:%s", "s0"), 0);
    /* A gateway that runs an orchestrator homes it on its own host while
     * no host at all is live. */
    p.host = NULL;
    p.fallback_host = "host-self";
    DO(fx, &g, wg_store_create_placed(fx->st, "s0", &u, &p, NULL, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_string_equal(g.rec.host, "host-self");
    got_reset(&g);
    assert_int_equal(hostload(fx, "host-self"), 1);
    /* A live host whose engine is away is the last choice, not refused. */
    {
        struct got b = {0};
        DO(fx, &b, wg_store_host_beat(fx->st, "host-0", "{\"engine\":false}", 10000, got_cb, &b));
        got_reset(&b);
    }

    beat(fx, "host-a", 3, 0, NULL);
    beat(fx, "host-b", 3, 0, NULL);
    for (int i = 1; i <= 6; i++) {
        snprintf(id, sizeof(id), "s%d", i);
        assert_int_equal(create(fx, fx->st, id, NULL, false, host), 0);
        on_a += strcmp(host, "host-a") == 0;
        on_b += strcmp(host, "host-b") == 0;
        /* Least loaded first, ties by name: a, b, a, b, ... */
        assert_string_equal(host, i % 2 ? "host-a" : "host-b");
    }
    assert_int_equal(on_a, 3);
    assert_int_equal(on_b, 3);
    assert_int_equal(hostload(fx, "host-0"), 0);
    assert_int_equal(hostload(fx, "host-a"), 3);
    assert_int_equal(raw_int(fx, "SCARD wg:host_sessions:%s", "host-b"), 3);
    /* Both full: the host whose engine is away takes it. */
    fields(&u);
    p.host = NULL;
    p.fallback_host = NULL;
    DO(fx, &g, wg_store_create_placed(fx->st, "s9", &u, &p, NULL, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_string_equal(g.rec.host, "host-0");
    got_reset(&g);
    {
        struct got b = {0};
        DO(fx, &b,
           wg_store_host_beat(fx->st, "host-0", "{\"engine\":false,\"max_sessions\":1}", 10000,
                              got_cb, &b));
        got_reset(&b);
    }
    /* All full: nothing written, and the reason says so. */
    DO(fx, &g, wg_store_create_placed(fx->st, "s7", &u, &p, NULL, got_cb, &g));
    assert_int_equal(g.status, WG_STORE_UNPLACED);
    assert_string_equal(g.error, "every live host is full");
    got_reset(&g);
    /* An operator's host is counted but not held to its max. */
    p.host = "host-b";
    DO(fx, &g, wg_store_create_placed(fx->st, "s7", &u, &p, NULL, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_string_equal(g.rec.host, "host-b");
    got_reset(&g);
    assert_int_equal(hostload(fx, "host-b"), 4);
    /* A destroy gives the slot back. */
    DO(fx, &g, wg_store_delete(fx->st, "s1", WG_SESSION_ANY, NULL, got_cb, &g));
    assert_int_equal(g.status, 0);
    got_reset(&g);
    assert_int_equal(hostload(fx, "host-a"), 2);
    assert_int_equal(create(fx, fx->st, "s8", NULL, false, host), 0);
    assert_string_equal(host, "host-a");
    close_all(fx);
}

static void test_last_slot_race(void **state)
{
    struct fx *fx = *state;
    struct wg_session_update u;
    struct wg_store_place p = {0};
    struct got g1 = {0}, g2 = {0};

    beat(fx, "host-a", 1, 0, NULL);
    fields(&u);
    /* Two gateways, two connections, sent together: one slot. */
    assert_int_equal(wg_store_create_placed(fx->st, "r1", &u, &p, NULL, got_cb, &g1), 0);
    assert_int_equal(wg_store_create_placed(fx->st2, "r2", &u, &p, NULL, got_cb, &g2), 0);
    assert_true(wg_test_run_until(&fx->loop, &g1.calls, 1, 3000));
    assert_true(wg_test_run_until(&fx->loop, &g2.calls, 1, 3000));
    assert_true((g1.status == 0) != (g2.status == 0));
    assert_int_equal(g1.status == 0 ? g2.status : g1.status, WG_STORE_UNPLACED);
    assert_int_equal(hostload(fx, "host-a"), 1);
    got_reset(&g1);
    got_reset(&g2);
    close_all(fx);
}

static void test_labels(void **state)
{
    struct fx *fx = *state;
    char host[WG_SESSION_HOST_MAX + 1];
    struct got g = {0};
    struct wg_session_update u;
    struct wg_store_place p = {.labels_json = "{\"gpu\":\"2\"}"};

    beat(fx, "host-a", 0, 0, NULL);
    beat(fx, "host-b", 0, 0, "{\"gpu\":\"1\",\"zone\":\"x\"}");
    for (int i = 0; i < 3; i++) {
        char id[8];
        snprintf(id, sizeof(id), "g%d", i);
        assert_int_equal(create(fx, fx->st, id, "{\"gpu\":\"1\"}", false, host), 0);
        assert_string_equal(host, "host-b");
    }
    /* Without labels the least loaded: a (0) before b (3). */
    assert_int_equal(create(fx, fx->st, "plain", NULL, false, host), 0);
    assert_string_equal(host, "host-a");
    fields(&u);
    DO(fx, &g, wg_store_create_placed(fx->st, "g9", &u, &p, NULL, got_cb, &g));
    assert_int_equal(g.status, WG_STORE_UNPLACED);
    assert_string_equal(g.error, "no live host has the labels {\"gpu\":\"2\"}");
    got_reset(&g);
    /* Labels that are not an object of strings are refused before Redis. */
    p.labels_json = "[1]";
    assert_int_equal(wg_store_create_placed(fx->st, "g9", &u, &p, NULL, got_cb, &g), -EINVAL);
    close_all(fx);
}

/* Sweeps that stopped for longer than a TTL (Redis stalled, restarted or
 * failed over): every heartbeat lapsed at once, and no host is judged until
 * a TTL has passed, so the hosts beat again first. */
static void test_sweep_held_after_a_gap(void **state)
{
    struct fx *fx = *state;
    char host[WG_SESSION_HOST_MAX + 1];
    struct got g = {0};
    struct raw w;

    beat(fx, "host-a", 0, 0, NULL);
    beat(fx, "host-b", 0, 0, NULL);
    assert_int_equal(create(fx, fx->st, "g0", NULL, false, host), 0);
    assert_int_equal(create(fx, fx->st, "g1", NULL, false, host), 0);
    assert_string_equal(host, "host-b"); /* the least loaded */
    DO(fx, &g, wg_store_host_sweep(fx->st, 2, 1000, got_cb, &g));
    assert_int_equal(g.sweep.held_ms, 0);
    assert_int_equal(g.sweep.live, 2);
    /* The last sweep seen 5 s ago, and host-b's heartbeat gone with the gap. */
    raw(fx, &w, "SET wg:sweep_at 1");
    raw(fx, &w, "DEL wg:host:host-b");
    DO(fx, &g, wg_store_host_sweep(fx->st, 2, 1000, got_cb, &g));
    assert_true(g.sweep.held_ms > 0 && g.sweep.held_ms <= 1000);
    assert_int_equal(g.sweep.newly_lost, 0);
    assert_int_equal(g.sweep.moved, 0);
    /* Still held on the next sweep, though it came at once. */
    DO(fx, &g, wg_store_host_sweep(fx->st2, 2, 1000, got_cb, &g));
    assert_true(g.sweep.held_ms > 0);
    assert_int_equal(raw_int(fx, "ZCARD %s", "wg:lost_hosts"), 0);
    /* The hold over, a host still silent is lost. */
    raw(fx, &w, "SET wg:sweep_hold 1");
    DO(fx, &g, wg_store_host_sweep(fx->st, 2, 1000, got_cb, &g));
    assert_int_equal(g.sweep.held_ms, 0);
    assert_int_equal(g.sweep.newly_lost, 1);
    assert_int_equal(g.sweep.moved, 1);
    close_all(fx);
}

static void test_sweep_and_replace(void **state)
{
    struct fx *fx = *state;
    char host[WG_SESSION_HOST_MAX + 1];
    struct got g = {0};
    struct raw w;
    struct wg_wake_cmd cmd = {.op = WG_WAKE_OP_WAKE};

    beat(fx, "host-a", 0, 0, NULL);
    for (int i = 0; i < 5; i++) {
        char id[8];
        snprintf(id, sizeof(id), "l%d", i);
        assert_int_equal(create(fx, fx->st, id, NULL, i == 4, host), 0);
        assert_string_equal(host, "host-a");
    }
    /* One awake, to see wg:active left with its score kept. */
    DO(fx, &g,
       wg_store_transition(fx->st, "l0", B(CREATING), WG_SESSION_RUNNING, NULL, NULL, got_cb, &g));
    assert_int_equal(g.status, 0);
    beat(fx, "host-b", 0, 0, NULL);
    /* Nothing is lost while both beat. */
    DO(fx, &g, wg_store_host_sweep(fx->st, 2, 60000, got_cb, &g));
    assert_int_equal(g.sweep.hosts, 2);
    assert_int_equal(g.sweep.live, 2);
    assert_int_equal(g.sweep.newly_lost, 0);
    assert_int_equal(g.sweep.moved, 0);
    /* host-a's heartbeat expires: bounded batches of 2. */
    raw(fx, &w, "DEL wg:host:host-a");
    /* host-a's own orchestrator sweeping: alive, whatever its key says. */
    DO(fx, &g, wg_store_host_sweep(fx->fenced, 2, 60000, got_cb, &g));
    assert_int_equal(g.sweep.newly_lost, 0);
    assert_int_equal(g.sweep.moved, 0);
    DO(fx, &g, wg_store_host_sweep(fx->st, 2, 60000, got_cb, &g));
    assert_int_equal(g.sweep.newly_lost, 1);
    assert_int_equal(g.sweep.lost, 1);
    assert_int_equal(g.sweep.live, 1);
    assert_int_equal(g.sweep.moved, 2);
    assert_int_equal(g.sweep.left, 3);
    DO(fx, &g, wg_store_host_sweep(fx->st2, 2, 60000, got_cb, &g));
    assert_int_equal(g.sweep.newly_lost, 0);
    assert_int_equal(g.sweep.moved, 2);
    DO(fx, &g, wg_store_host_sweep(fx->st, 2, 60000, got_cb, &g));
    assert_int_equal(g.sweep.moved, 1);
    assert_int_equal(g.sweep.left, 0);
    DO(fx, &g, wg_store_host_sweep(fx->st, 2, 60000, got_cb, &g));
    assert_int_equal(g.sweep.moved, 0);
    raw(fx, &w, "HGET wg:counts lost");
    assert_string_equal(w.str, "5");
    raw(fx, &w, "HGET wg:session:l0 state");
    assert_string_equal(w.str, "lost");
    assert_int_equal(raw_int(fx, "ZSCORE wg:active %s", "l0"), 0);
    raw(fx, &w, "ZSCORE wg:active l0");
    assert_string_equal(w.str, "");

    /* A wake of an unpinned lost session re-places it on host-b. */
    snprintf(cmd.session, sizeof(cmd.session), "l1");
    DO(fx, &g, wg_store_wake_add(fx->st, "host-a", &cmd, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_string_equal(g.host, "host-b");
    DO(fx, &g, wg_store_get(fx->st, "l1", got_cb, &g));
    assert_int_equal(g.rec.state, WG_SESSION_ASLEEP);
    assert_string_equal(g.rec.host, "host-b");
    assert_int_equal(g.rec.epoch, 2);
    assert_string_equal(g.rec.container_id, "");
    assert_int_equal(raw_int(fx, "XLEN wg:wake:%s", "host-b"), 1);
    assert_int_equal(hostload(fx, "host-a"), 4);
    assert_int_equal(hostload(fx, "host-b"), 1);
    /* A pinned one waits for its host: the command goes there, it stays lost. */
    snprintf(cmd.session, sizeof(cmd.session), "l4");
    DO(fx, &g, wg_store_wake_add(fx->st, "host-b", &cmd, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_string_equal(g.host, "host-a");
    raw(fx, &w, "HGET wg:session:l4 state");
    assert_string_equal(w.str, "lost");

    /* host-a comes back: it leaves wg:lost_hosts; its sessions stay lost
     * until its reconcile (Docker's truth) moves them. */
    struct got b = {0};
    DO(fx, &b, wg_store_host_beat(fx->st, "host-a", "{\"name\":\"host-a\"}", 10000, got_cb, &b));
    assert_int_equal(b.count, 1);
    assert_int_equal(b.homed, 4);
    DO(fx, &b, wg_store_host_beat(fx->st, "host-a", "{\"name\":\"host-a\"}", 10000, got_cb, &b));
    assert_int_equal(b.count, 0);
    assert_int_equal(raw_int(fx, "ZCARD wg:lost_hosts%s", ""), 0);
    /* Now live again, a wake of its own lost session goes to it. */
    snprintf(cmd.session, sizeof(cmd.session), "l2");
    DO(fx, &g, wg_store_wake_add(fx->st, "host-b", &cmd, got_cb, &g));
    assert_string_equal(g.host, "host-a");
    /* No live host: the wake is refused with the reason, nothing queued. */
    raw(fx, &w, "DEL wg:host:host-a");
    raw(fx, &w, "DEL wg:host:host-b");
    snprintf(cmd.session, sizeof(cmd.session), "l3");
    DO(fx, &g, wg_store_wake_add(fx->st, "host-a", &cmd, got_cb, &g));
    assert_int_equal(g.status, WG_STORE_UNPLACED);
    assert_non_null(strstr(g.error, "no live host"));
    got_reset(&g);
    got_reset(&b);
    close_all(fx);
}

static void test_fenced(void **state)
{
    struct fx *fx = *state;
    char host[WG_SESSION_HOST_MAX + 1];
    struct got g = {0};
    struct raw w;
    struct wg_session_update u = {0};

    beat(fx, "host-b", 0, 0, NULL);
    assert_int_equal(create(fx, fx->st, "f1", NULL, false, host), 0);
    assert_string_equal(host, "host-b");
    /* host-a's orchestrator may not touch host-b's session. */
    DO(fx, &g,
       wg_store_transition(fx->fenced, "f1", B(CREATING), WG_SESSION_ASLEEP, NULL, NULL, got_cb,
                           &g));
    assert_int_equal(g.status, WG_STORE_FENCED);
    assert_int_equal(g.rec.state, WG_SESSION_CREATING);
    assert_non_null(strstr(g.error, "host-b"));
    DO(fx, &g, wg_store_update(fx->fenced, "f1", WG_SESSION_ANY, &u, got_cb, &g));
    assert_int_equal(g.status, WG_STORE_FENCED);
    DO(fx, &g, wg_store_delete(fx->fenced, "f1", WG_SESSION_ANY, NULL, got_cb, &g));
    assert_int_equal(g.status, WG_STORE_FENCED);
    raw(fx, &w, "HGET wg:session:f1 v");
    assert_string_equal(w.str, "1");
    /* The right host with a stale epoch is fenced too; the current one passes. */
    u.fence_host = "host-b";
    u.fence_epoch = 7;
    DO(fx, &g,
       wg_store_transition(fx->fenced, "f1", B(CREATING), WG_SESSION_ASLEEP, &u, NULL, got_cb, &g));
    assert_int_equal(g.status, WG_STORE_FENCED);
    u.fence_epoch = 1;
    DO(fx, &g,
       wg_store_transition(fx->fenced, "f1", B(CREATING), WG_SESSION_ASLEEP, &u, NULL, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.rec.state, WG_SESSION_ASLEEP);
    got_reset(&g);
    close_all(fx);
}

static void test_adopt(void **state)
{
    struct fx *fx = *state;
    struct got g = {0};
    struct raw w;
    const char *ids[] = {"old1", "old2", "other"};

    /* Records of before placement, and a member whose record is gone. */
    raw(fx, &w, "HSET wg:session:old1 id old1 state asleep host host-a v 3");
    raw(fx, &w, "HSET wg:session:old2 id old2 state running host host-a v 9");
    raw(fx, &w, "HSET wg:session:other id other state asleep host host-b v 1");
    raw(fx, &w, "SADD wg:host_sessions:host-a gone");
    raw(fx, &w, "HSET wg:hostload host-a 7");
    DO(fx, &g, wg_store_host_adopt(fx->st, "host-a", ids, 3, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.count, 2);
    assert_int_equal(hostload(fx, "host-a"), 2);
    assert_int_equal(raw_int(fx, "SISMEMBER wg:host_sessions:host-a %s", "gone"), 0);
    /* Again: nothing new, the count stays exact. */
    DO(fx, &g, wg_store_host_adopt(fx->st, "host-a", ids, 3, got_cb, &g));
    assert_int_equal(g.count, 0);
    assert_int_equal(hostload(fx, "host-a"), 2);
    assert_int_equal(wg_store_host_adopt(fx->st, "host-a", (const char *[]){"Bad"}, 1, got_cb, &g),
                     -EINVAL);
    got_reset(&g);
    close_all(fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_least_loaded_and_max, setup, teardown),
        cmocka_unit_test_setup_teardown(test_last_slot_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_labels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sweep_and_replace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sweep_held_after_a_gap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fenced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adopt, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
