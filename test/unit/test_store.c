/* test/unit/test_store.c - common/store against a real redis-server.
 *
 * As test_redis.c: each test starts its own redis-server on a unix socket
 * in a mkdtemp() directory and kills it by pid in the teardown (cmocka runs
 * it after a failed test too; PR_SET_PDEATHSIG covers a crash). A missing
 * redis-server fails the tests: they never skip. Every test ends by
 * asserting that its loop closes with no live handle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include "common/log.h"
#include "loop_fixture.h"
#include "redis_connect_fixture.h"
#include "redis_fixture.h"
#include "common/redis.h"
#include "common/session.h"
#include "common/store.h"

#define B(x) WG_SESSION_BIT(WG_SESSION_##x)

struct fx {
    uv_loop_t loop;
    bool loop_closed;
    struct wg_test_redis srv;
    char url[256];
    struct wg_log log;
    bool in_call;  /* set around each API call: callbacks must not see it */
    int64_t clock; /* the stores' wall clock */
    struct wg_redis *r;
    struct wg_store *st;
};

/* ---- fixture --------------------------------------------------------------------------------- */

static int64_t fake_clock(void *arg)
{
    return ((struct fx *)arg)->clock;
}

static bool run_until(struct fx *fx, const int *counter, int target, uint64_t ms)
{
    return wg_test_run_until(&fx->loop, counter, target, ms);
}

static void run_for(struct fx *fx, uint64_t ms)
{
    wg_test_run_for(&fx->loop, ms);
}

static struct wg_redis *open_connected(struct fx *fx, const char *name, uint32_t cmd_timeout_ms)
{
    struct wg_redis_opts o = {.name = name, .command_timeout_ms = cmd_timeout_ms};
    struct wg_redis *r = wg_test_redis_connect(&fx->loop, fx->url, &o, &fx->log);

    assert_non_null(r);
    return r;
}

static struct wg_store *open_store(struct fx *fx, struct wg_redis *r, uint32_t events_max)
{
    struct wg_store_opts o = {
        .events_max = events_max, .clock_ms = fake_clock, .clock_arg = fx, .log = &fx->log};
    struct wg_store *s = NULL;

    assert_int_equal(wg_store_new(r, &o, &s), 0);
    return s;
}

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    const char *lvl = getenv("WG_TEST_LOG");

    if (!fx)
        return -1;
    *state = fx;
    fx->log.level = WG_LOG_INFO;
    if (lvl)
        wg_log_level_parse(lvl, &fx->log.level);
    fx->log.format = WG_LOG_LOGFMT;
    fx->log.out = stderr;
    fx->clock = 1700000000000;
    if (uv_loop_init(&fx->loop) != 0)
        return -1;
    if (wg_test_redis_start_in_tmp(&fx->srv, "store", fx->url, sizeof(fx->url)) != 0)
        return -1;
    fx->r = open_connected(fx, "store", 0);
    fx->st = open_store(fx, fx->r, 0);
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;

    if (!fx)
        return 0;
    wg_test_redis_stop(&fx->srv);
    if (!fx->loop_closed) {
        /* A failed test may leave handles: the process ends soon anyway. */
        uv_run(&fx->loop, UV_RUN_NOWAIT);
        uv_loop_close(&fx->loop);
    }
    wg_test_redis_remove_files(&fx->srv);
    free(fx);
    return 0;
}

/* Frees the fixture's store and connection (plus extra ones), runs the loop
 * dry and checks that nothing is left on it. */
static void close_all(struct fx *fx)
{
    wg_store_free(fx->st);
    fx->st = NULL;
    wg_redis_free(fx->r);
    fx->r = NULL;
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    fx->loop_closed = true;
}

/* ---- recording results ----------------------------------------------------------------------- */

#define KEEP 32

struct got {
    struct fx *fx;
    int calls;
    bool inside;
    int status;
    char error[256];
    bool has_rec;
    struct wg_session rec;
    char event_id[64];
    size_t n_recs, n_bad, n_idle, n_wake;
    char ids[KEEP][WG_SESSION_ID_MAX + 1];
    enum wg_session_state states[KEEP];
    int64_t actives[KEEP];
    struct wg_store_idle idle[KEEP];
    struct wg_wake_cmd wake[KEEP];
    size_t n_reap;
    struct wg_store_reap reap[KEEP];
    char next_id[64];
    long long count;
};

static void got_init(struct got *g, struct fx *fx)
{
    memset(g, 0, sizeof(*g));
    g->fx = fx;
}

static void got_reset(struct got *g)
{
    struct fx *fx = g->fx;

    wg_session_release(&g->rec);
    got_init(g, fx);
}

static void got_cb(const struct wg_store_res *res, void *arg)
{
    struct got *g = arg;

    g->calls++;
    g->inside = g->inside || g->fx->in_call;
    g->status = res->status;
    assert_non_null(res->error);
    snprintf(g->error, sizeof(g->error), "%s", res->error);
    if (res->status == 0)
        assert_string_equal(res->error, "");
    wg_session_release(&g->rec);
    g->has_rec = res->rec != NULL;
    if (res->rec)
        assert_int_equal(wg_session_copy(&g->rec, res->rec), 0);
    snprintf(g->event_id, sizeof(g->event_id), "%s", res->event_id ? res->event_id : "");
    snprintf(g->next_id, sizeof(g->next_id), "%s", res->next_id ? res->next_id : "");
    g->n_recs = res->n_recs;
    g->n_bad = res->n_bad;
    for (size_t i = 0; i < res->n_recs && i < KEEP; i++) {
        snprintf(g->ids[i], sizeof(g->ids[i]), "%s", res->recs[i].id);
        g->states[i] = res->recs[i].state;
        g->actives[i] = res->recs[i].last_active;
    }
    g->n_idle = res->n_idle;
    for (size_t i = 0; i < res->n_idle && i < KEEP; i++)
        g->idle[i] = res->idle[i];
    g->n_wake = res->n_wake;
    for (size_t i = 0; i < res->n_wake && i < KEEP; i++)
        g->wake[i] = res->wake[i];
    g->n_reap = res->n_reap;
    for (size_t i = 0; i < res->n_reap && i < KEEP; i++)
        g->reap[i] = res->reap[i];
    g->count = res->count;
}

/* Issues one store call with in_call set and checks it was accepted. */
#define CALL(fx, expr)                                                                             \
    do {                                                                                           \
        (fx)->in_call = true;                                                                      \
        int rc_ = (expr);                                                                          \
        (fx)->in_call = false;                                                                     \
        assert_int_equal(rc_, 0);                                                                  \
    } while (0)

/* Issues one call and waits for its callback. */
#define DO(fx, g, expr)                                                                            \
    do {                                                                                           \
        got_reset(g);                                                                              \
        CALL(fx, expr);                                                                            \
        assert_int_equal((g)->calls, 0);                                                           \
        assert_true(run_until((fx), &(g)->calls, 1, 3000));                                        \
        assert_false((g)->inside);                                                                 \
    } while (0)

/* ---- raw Redis for checks -------------------------------------------------------------------- */

struct event {
    char eid[64];
    char id[64];
    char type[32];
    char from[16];
    char to[16];
    char at[24];
    char v[24];
    char detail[256];
};

struct raw {
    int calls;
    int status;
    int type;
    long long integer;
    char str[512];
    size_t elements;
    struct event ev[64];
    size_t n_ev;
};

static void copy_str(char *dst, size_t dstlen, const redisReply *r)
{
    snprintf(dst, dstlen, "%.*s", (int)r->len, r->str);
}

static void raw_cb(int status, redisReply *reply, void *arg)
{
    struct raw *w = arg;

    w->calls++;
    w->status = status;
    if (!reply)
        return;
    w->type = reply->type;
    w->integer = reply->integer;
    if (reply->str)
        copy_str(w->str, sizeof(w->str), reply);
    w->elements = reply->elements;
    /* XRANGE: [[id, [k, v, ...]], ...] */
    if (reply->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < reply->elements && w->n_ev < 64; i++) {
        const redisReply *e = reply->element[i];
        struct event *ev = &w->ev[w->n_ev];

        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        memset(ev, 0, sizeof(*ev));
        copy_str(ev->eid, sizeof(ev->eid), e->element[0]);
        for (size_t k = 0; k + 1 < e->element[1]->elements; k += 2) {
            const redisReply *f = e->element[1]->element[k], *v = e->element[1]->element[k + 1];
            if (strcmp(f->str, "id") == 0)
                copy_str(ev->id, sizeof(ev->id), v);
            else if (strcmp(f->str, "type") == 0)
                copy_str(ev->type, sizeof(ev->type), v);
            else if (strcmp(f->str, "from") == 0)
                copy_str(ev->from, sizeof(ev->from), v);
            else if (strcmp(f->str, "to") == 0)
                copy_str(ev->to, sizeof(ev->to), v);
            else if (strcmp(f->str, "at") == 0)
                copy_str(ev->at, sizeof(ev->at), v);
            else if (strcmp(f->str, "v") == 0)
                copy_str(ev->v, sizeof(ev->v), v);
            else if (strcmp(f->str, "detail") == 0)
                copy_str(ev->detail, sizeof(ev->detail), v);
        }
        w->n_ev++;
    }
}

/* Runs one raw command to completion on the fixture's connection. */
static void raw(struct fx *fx, struct raw *w, const char *fmt, ...)
{
    va_list ap;
    int rc;

    memset(w, 0, sizeof(*w));
    va_start(ap, fmt);
    rc = wg_redis_vcommand(fx->r, raw_cb, w, fmt, ap);
    va_end(ap);
    assert_int_equal(rc, 0);
    assert_true(run_until(fx, &w->calls, 1, 3000));
    assert_int_equal(w->status, 0);
}

static long long raw_int(struct fx *fx, const char *fmt, const char *arg)
{
    struct raw w;

    raw(fx, &w, fmt, arg);
    assert_int_equal(w.type, REDIS_REPLY_INTEGER);
    return w.integer;
}

/* A sorted-set score (ZSCORE replies with a string). */
static long long raw_score(struct fx *fx, const char *fmt, const char *arg)
{
    struct raw w;

    raw(fx, &w, fmt, arg);
    assert_int_equal(w.type, REDIS_REPLY_STRING);
    return atoll(w.str);
}

static long long xlen(struct fx *fx)
{
    return raw_int(fx, "XLEN %s", WG_STORE_KEY_EVENTS);
}

/* ---- wg:state subscriber --------------------------------------------------------------------- */

struct subs {
    int subscribed;
    int messages;
    struct wg_state_msg msg[32];
    int bad;
};

static void sub_cb(const struct wg_redis_msg *m, void *arg)
{
    struct subs *ss = arg;

    if (m->kind == WG_REDIS_SUBSCRIBED) {
        ss->subscribed++;
        return;
    }
    if (ss->messages < 32 && wg_store_parse_state_msg(m->data, m->len, &ss->msg[ss->messages]) == 0)
        ss->messages++;
    else
        ss->bad++;
}

/* ---- helpers --------------------------------------------------------------------------------- */

static void create(struct fx *fx, const char *id)
{
    struct got g;

    got_init(&g, fx);
    DO(fx, &g, wg_store_create(fx->st, id, NULL, NULL, got_cb, &g));
    assert_int_equal(g.status, 0);
    got_reset(&g);
}

static void move(struct fx *fx, const char *id, enum wg_session_state to)
{
    struct got g;

    got_init(&g, fx);
    DO(fx, &g, wg_store_transition(fx->st, id, WG_SESSION_ANY, to, NULL, NULL, got_cb, &g));
    if (g.status != 0)
        fail_msg("%s -> %s: %d %s", id, wg_session_state_name(to), g.status, g.error);
    got_reset(&g);
}

/* ---- tests ----------------------------------------------------------------------------------- */

static void test_get_or_create(void **state)
{
    struct fx *fx = *state;
    struct got g;
    struct wg_session_update u = {0};
    struct raw w;

    got_init(&g, fx);
    u.set = WG_SF_HOST | WG_SF_IMAGE | WG_SF_PORT | WG_SF_IDLE_STOP_AFTER;
    u.host = "host-a";
    u.image = "wakegate-demo:latest";
    u.port = 8080;
    u.has_idle_stop_after = true;
    u.idle_stop_after_ms = 600000;

    DO(fx, &g, wg_store_create(fx->st, "s1", &u, "{\"by\":\"admin\"}", got_cb, &g));
    assert_int_equal(g.status, 0); /* 201 */
    assert_true(g.has_rec);
    assert_string_equal(g.rec.id, "s1");
    assert_int_equal(g.rec.state, WG_SESSION_CREATING);
    assert_int_equal(g.rec.state_since, fx->clock);
    assert_int_equal(g.rec.created, fx->clock);
    assert_int_equal(g.rec.version, 1);
    assert_string_equal(g.rec.host, "host-a");
    assert_string_equal(g.rec.image, "wakegate-demo:latest");
    assert_int_equal(g.rec.port, 8080);
    assert_true(g.rec.has_idle_stop_after);
    assert_int_equal(g.rec.idle_stop_after_ms, 600000);
    assert_true(strlen(g.event_id) > 2);

    /* Again, with other fields: the existing record, untouched (200). */
    fx->clock += 5000;
    u.image = "other:1";
    DO(fx, &g, wg_store_create(fx->st, "s1", &u, NULL, got_cb, &g));
    assert_int_equal(g.status, WG_STORE_EXISTS);
    assert_true(g.has_rec);
    assert_string_equal(g.rec.image, "wakegate-demo:latest");
    assert_int_equal(g.rec.created, fx->clock - 5000);
    assert_int_equal(g.rec.version, 1);
    assert_string_equal(g.event_id, "");

    DO(fx, &g, wg_store_get(fx->st, "s1", got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.rec.state, WG_SESSION_CREATING);
    assert_int_equal(g.rec.version, 1);

    DO(fx, &g, wg_store_get(fx->st, "nope", got_cb, &g));
    assert_int_equal(g.status, -ENOENT);
    assert_false(g.has_rec);
    assert_true(strlen(g.error) > 0);

    /* One creation event, with the detail, and one set member. */
    raw(fx, &w, "XRANGE %s - +", WG_STORE_KEY_EVENTS);
    assert_int_equal(w.n_ev, 1);
    assert_string_equal(w.ev[0].id, "s1");
    assert_string_equal(w.ev[0].type, "transition");
    assert_string_equal(w.ev[0].from, "");
    assert_string_equal(w.ev[0].to, "creating");
    assert_string_equal(w.ev[0].detail, "{\"by\":\"admin\"}");
    assert_int_equal(raw_int(fx, "SCARD %s", WG_STORE_KEY_SESSIONS), 1);

    /* Refused synchronously; no callback. */
    got_reset(&g);
    assert_int_equal(wg_store_create(fx->st, "Bad", NULL, NULL, got_cb, &g), -EINVAL);
    assert_int_equal(wg_store_create(fx->st, "../x", NULL, NULL, got_cb, &g), -EINVAL);
    assert_int_equal(wg_store_create(fx->st, "ok", NULL, "{not json", got_cb, &g), -EINVAL);
    assert_int_equal(wg_store_get(fx->st, "", got_cb, &g), -EINVAL);
    u.set = WG_SF_IP;
    u.ip = "999.1.1.1";
    assert_int_equal(wg_store_create(fx->st, "ok", &u, NULL, got_cb, &g), -EINVAL);
    run_for(fx, 20);
    assert_int_equal(g.calls, 0);
    got_reset(&g);
    close_all(fx);
}

static void test_transition_chain(void **state)
{
    struct fx *fx = *state;
    struct wg_redis *subr = open_connected(fx, "pubsub", 0);
    struct subs ss = {0};
    struct got g;
    struct raw w;
    struct wg_session_update run = {0};
    static const enum wg_session_state chain[] = {WG_SESSION_STARTING, WG_SESSION_RUNNING,
                                                  WG_SESSION_DRAINING, WG_SESSION_SAVING,
                                                  WG_SESSION_STOPPING, WG_SESSION_ASLEEP};
    char eids[8][64];
    int64_t start;

    got_init(&g, fx);
    assert_int_equal(wg_redis_subscribe(subr, WG_STORE_CHANNEL_STATE, sub_cb, &ss), 0);
    assert_true(run_until(fx, &ss.subscribed, 1, 3000));

    DO(fx, &g, wg_store_create(fx->st, "chain-1", NULL, NULL, got_cb, &g));
    assert_int_equal(g.status, 0);
    snprintf(eids[0], sizeof(eids[0]), "%s", g.event_id);
    start = fx->clock;

    run.set = WG_SF_IP | WG_SF_PORT | WG_SF_CONTAINER_ID;
    run.ip = "172.17.0.9";
    run.port = 8080;
    run.container_id = "abcdef0123456789";
    for (size_t i = 0; i < sizeof(chain) / sizeof(chain[0]); i++) {
        char detail[64];

        fx->clock += 1000;
        snprintf(detail, sizeof(detail), "{\"step\":%zu}", i);
        DO(fx, &g,
           wg_store_transition(fx->st, "chain-1", WG_SESSION_ANY, chain[i],
                               chain[i] == WG_SESSION_RUNNING ? &run : NULL, detail, got_cb, &g));
        if (g.status != 0)
            fail_msg("step %zu: %d %s", i, g.status, g.error);
        assert_int_equal(g.rec.state, chain[i]);
        assert_int_equal(g.rec.state_since, fx->clock);
        assert_int_equal(g.rec.created, start);
        assert_int_equal(g.rec.version, i + 2);
        snprintf(eids[i + 1], sizeof(eids[i + 1]), "%s", g.event_id);
        if (chain[i] == WG_SESSION_RUNNING) {
            assert_string_equal(g.rec.ip, "172.17.0.9");
            /* Entering running counts as activity. */
            assert_int_equal(g.rec.last_active, fx->clock);
            raw(fx, &w, "ZSCORE %s chain-1", WG_STORE_KEY_ACTIVE);
            assert_int_equal(w.type, REDIS_REPLY_STRING);
            assert_int_equal(atoll(w.str), fx->clock);
        }
    }
    /* Asleep: out of wg:active, its last activity kept in the record. */
    assert_int_equal(g.rec.last_active, start + 2000);
    raw(fx, &w, "ZSCORE %s chain-1", WG_STORE_KEY_ACTIVE);
    assert_int_equal(w.type, REDIS_REPLY_NIL);

    /* The events, in order, with the ids the calls returned. */
    raw(fx, &w, "XRANGE %s - +", WG_STORE_KEY_EVENTS);
    assert_int_equal(w.n_ev, 7);
    for (size_t i = 0; i < 7; i++) {
        assert_string_equal(w.ev[i].eid, eids[i]);
        assert_string_equal(w.ev[i].id, "chain-1");
        assert_string_equal(w.ev[i].to, i == 0 ? "creating" : wg_session_state_name(chain[i - 1]));
        assert_string_equal(w.ev[i].from, i == 0   ? ""
                                          : i == 1 ? "creating"
                                                   : wg_session_state_name(chain[i - 2]));
        assert_int_equal(atoll(w.ev[i].v), (long long)i + 1);
        assert_int_equal(atoll(w.ev[i].at), start + (int64_t)i * 1000);
        if (i > 0) {
            char want[64];
            snprintf(want, sizeof(want), "{\"step\":%zu}", i - 1);
            assert_string_equal(w.ev[i].detail, want);
        }
    }

    /* The published messages, in order. */
    assert_true(run_until(fx, &ss.messages, 7, 3000));
    assert_int_equal(ss.bad, 0);
    for (int i = 0; i < 7; i++) {
        assert_string_equal(ss.msg[i].id, "chain-1");
        assert_int_equal(ss.msg[i].state, i == 0 ? WG_SESSION_CREATING : chain[i - 1]);
        assert_int_equal(ss.msg[i].version, (uint64_t)i + 1);
    }
    assert_string_equal(ss.msg[2].ip, "172.17.0.9");
    assert_int_equal(ss.msg[2].port, 8080);
    assert_string_equal(ss.msg[0].ip, "");
    assert_int_equal(ss.msg[0].port, 0);

    got_reset(&g);
    wg_redis_free(subr);
    close_all(fx);
}

static void test_transition_rejected(void **state)
{
    struct fx *fx = *state;
    struct got g;
    long long events;
    struct wg_session_update u = {0};

    got_init(&g, fx);
    create(fx, "rj");
    events = xlen(fx);

    /* The table forbids creating -> saving. */
    DO(fx, &g,
       wg_store_transition(fx->st, "rj", WG_SESSION_ANY, WG_SESSION_SAVING, NULL, NULL, got_cb,
                           &g));
    assert_int_equal(g.status, WG_STORE_REJECTED);
    assert_true(g.has_rec);
    assert_int_equal(g.rec.state, WG_SESSION_CREATING);
    assert_int_equal(g.rec.version, 1);
    assert_non_null(strstr(g.error, "creating"));

    /* The table allows creating -> starting, the caller's mask does not. */
    u.set = WG_SF_IP;
    u.ip = "10.9.9.9";
    DO(fx, &g,
       wg_store_transition(fx->st, "rj", B(ASLEEP) | B(PAUSED), WG_SESSION_STARTING, &u, NULL,
                           got_cb, &g));
    assert_int_equal(g.status, WG_STORE_REJECTED);
    assert_int_equal(g.rec.state, WG_SESSION_CREATING);
    assert_string_equal(g.rec.ip, ""); /* fields of a rejected move are not written */

    /* Nothing was appended or changed. */
    assert_int_equal(xlen(fx), events);
    DO(fx, &g, wg_store_get(fx->st, "rj", got_cb, &g));
    assert_int_equal(g.rec.version, 1);
    assert_string_equal(g.rec.ip, "");

    /* No such session. */
    DO(fx, &g,
       wg_store_transition(fx->st, "ghost", WG_SESSION_ANY, WG_SESSION_STARTING, NULL, NULL, got_cb,
                           &g));
    assert_int_equal(g.status, -ENOENT);
    assert_int_equal(xlen(fx), events);

    /* Impossible masks are the caller's bug: refused synchronously. */
    got_reset(&g);
    assert_int_equal(
        wg_store_transition(fx->st, "rj", B(ASLEEP), WG_SESSION_STOPPING, NULL, NULL, got_cb, &g),
        -EINVAL);
    assert_int_equal(wg_store_transition(fx->st, "rj", WG_SESSION_ANY, WG_SESSION_CREATING, NULL,
                                         NULL, got_cb, &g),
                     -EINVAL);
    assert_int_equal(wg_store_transition(fx->st, "rj", WG_SESSION_ANY, (enum wg_session_state)77,
                                         NULL, NULL, got_cb, &g),
                     -EINVAL);
    assert_int_equal(wg_store_update(fx->st, "rj", B(DESTROYED), NULL, got_cb, &g), -EINVAL);
    run_for(fx, 20);
    assert_int_equal(g.calls, 0);
    got_reset(&g);
    close_all(fx);
}

static void test_race(void **state)
{
    struct fx *fx = *state;
    struct wg_redis *r2 = open_connected(fx, "store2", 0);
    struct wg_store *st2 = open_store(fx, r2, 0);
    struct got a, b;
    long long events;
    char id[32];

    got_init(&a, fx);
    got_init(&b, fx);
    for (int round = 0; round < 20; round++) {
        snprintf(id, sizeof(id), "race-%d", round);
        create(fx, id);
        move(fx, id, WG_SESSION_RUNNING);
        events = xlen(fx);
        got_reset(&a);
        got_reset(&b);
        /* Both sent in the same loop turn, on two connections; alternate
         * which goes first. */
        if (round % 2) {
            CALL(fx, wg_store_transition(fx->st, id, B(RUNNING), WG_SESSION_DRAINING, NULL, NULL,
                                         got_cb, &a));
            CALL(fx, wg_store_transition(st2, id, B(RUNNING), WG_SESSION_DRAINING, NULL, NULL,
                                         got_cb, &b));
        } else {
            CALL(fx, wg_store_transition(st2, id, B(RUNNING), WG_SESSION_DRAINING, NULL, NULL,
                                         got_cb, &b));
            CALL(fx, wg_store_transition(fx->st, id, B(RUNNING), WG_SESSION_DRAINING, NULL, NULL,
                                         got_cb, &a));
        }
        assert_true(run_until(fx, &a.calls, 1, 3000));
        assert_true(run_until(fx, &b.calls, 1, 3000));
        /* Exactly one wins; the loser sees the winner's state. */
        assert_true((a.status == 0 && b.status == WG_STORE_REJECTED) ||
                    (b.status == 0 && a.status == WG_STORE_REJECTED));
        assert_int_equal((a.status == 0 ? b : a).rec.state, WG_SESSION_DRAINING);
        assert_int_equal(xlen(fx), events + 1);
    }
    got_reset(&a);
    got_reset(&b);
    wg_store_free(st2);
    wg_redis_free(r2);
    close_all(fx);
}

static void test_update(void **state)
{
    struct fx *fx = *state;
    struct got g;
    struct wg_session_update u = {0};
    long long events;
    int64_t since;

    got_init(&g, fx);
    create(fx, "up");
    move(fx, "up", WG_SESSION_STARTING);
    /* The access generation: random at creation, replaced by an update. */
    DO(fx, &g, wg_store_get(fx->st, "up", got_cb, &g));
    assert_int_equal(g.status, 0);
    uint64_t gen0 = g.rec.gen;
    assert_true(gen0 != 0);
    got_reset(&g);
    u.set = WG_SF_GEN;
    u.gen = gen0 + 1;
    DO(fx, &g, wg_store_update(fx->st, "up", WG_SESSION_ANY, &u, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_true(g.rec.gen == gen0 + 1);
    got_reset(&g);
    memset(&u, 0, sizeof(u));
    events = xlen(fx);
    since = fx->clock;
    fx->clock += 777;

    u.set = WG_SF_CONTAINER_ID | WG_SF_RESTARTS_INCR | WG_SF_ERROR;
    u.container_id = "feedface";
    u.error = "first attempt failed";
    DO(fx, &g, wg_store_update(fx->st, "up", B(STARTING), &u, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.rec.state, WG_SESSION_STARTING);
    assert_int_equal(g.rec.state_since, since);
    assert_string_equal(g.rec.container_id, "feedface");
    assert_int_equal(g.rec.restarts, 1);
    assert_string_equal(g.rec.error, "first attempt failed");
    assert_int_equal(g.rec.version, 4);
    assert_string_equal(g.event_id, "");
    assert_int_equal(xlen(fx), events);

    /* Clearing a field. */
    memset(&u, 0, sizeof(u));
    u.set = WG_SF_ERROR | WG_SF_RESTARTS_INCR;
    DO(fx, &g, wg_store_update(fx->st, "up", WG_SESSION_ANY, &u, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_null(g.rec.error);
    assert_int_equal(g.rec.restarts, 2);

    /* Only in the states given. */
    DO(fx, &g, wg_store_update(fx->st, "up", B(RUNNING), &u, got_cb, &g));
    assert_int_equal(g.status, WG_STORE_REJECTED);
    assert_int_equal(g.rec.version, 5);
    assert_int_equal(g.rec.restarts, 2);
    got_reset(&g);
    close_all(fx);
}

static void test_delete(void **state)
{
    struct fx *fx = *state;
    struct got g;
    struct raw w;

    got_init(&g, fx);
    create(fx, "del");
    move(fx, "del", WG_SESSION_RUNNING);
    DO(fx, &g, wg_store_delete(fx->st, "del", B(ASLEEP), NULL, got_cb, &g));
    assert_int_equal(g.status, WG_STORE_REJECTED);

    DO(fx, &g, wg_store_delete(fx->st, "del", WG_SESSION_ANY, "{\"force\":true}", got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.rec.state, WG_SESSION_DESTROYED);
    assert_int_equal(g.rec.version, 3);
    assert_true(strlen(g.event_id) > 2);
    DO(fx, &g, wg_store_get(fx->st, "del", got_cb, &g));
    assert_int_equal(g.status, -ENOENT);
    assert_int_equal(raw_int(fx, "SISMEMBER %s del", WG_STORE_KEY_SESSIONS), 0);
    raw(fx, &w, "ZSCORE %s del", WG_STORE_KEY_ACTIVE);
    assert_int_equal(w.type, REDIS_REPLY_NIL);
    raw(fx, &w, "XRANGE %s - +", WG_STORE_KEY_EVENTS);
    assert_string_equal(w.ev[w.n_ev - 1].from, "running");
    assert_string_equal(w.ev[w.n_ev - 1].to, "destroyed");

    /* Terminal: the id is gone, a new session may take it. */
    DO(fx, &g,
       wg_store_transition(fx->st, "del", WG_SESSION_ANY, WG_SESSION_STARTING, NULL, NULL, got_cb,
                           &g));
    assert_int_equal(g.status, -ENOENT);
    DO(fx, &g, wg_store_create(fx->st, "del", NULL, NULL, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.rec.version, 1);

    /* A garbled record can still be destroyed with WG_SESSION_ANY. */
    raw(fx, &w, "HSET %s%s id garbled state bogus v xx", WG_STORE_KEY_SESSION_PREFIX, "garbled");
    DO(fx, &g, wg_store_get(fx->st, "garbled", got_cb, &g));
    assert_int_equal(g.status, -EBADMSG);
    DO(fx, &g, wg_store_delete(fx->st, "garbled", B(RUNNING) | B(ASLEEP), NULL, got_cb, &g));
    assert_int_equal(g.status, -EBADMSG); /* rejected, and the record read back is garbled */
    DO(fx, &g, wg_store_delete(fx->st, "garbled", WG_SESSION_ANY, NULL, got_cb, &g));
    assert_int_equal(g.status, 0); /* state and v were rewritten on the way out */
    assert_int_equal(g.rec.state, WG_SESSION_DESTROYED);
    assert_int_equal(raw_int(fx, "EXISTS %s", WG_STORE_KEY_SESSION_PREFIX "garbled"), 0);
    got_reset(&g);
    close_all(fx);
}

static void test_lock(void **state)
{
    struct fx *fx = *state;
    struct got g;
    struct raw w;
    char t1[WG_STORE_TOKEN_LEN + 1], t2[WG_STORE_TOKEN_LEN + 1];

    got_init(&g, fx);
    assert_int_equal(wg_store_lock_token(t1), 0);
    assert_int_equal(wg_store_lock_token(t2), 0);
    assert_int_equal(strlen(t1), WG_STORE_TOKEN_LEN);
    assert_int_equal(strspn(t1, "0123456789abcdef"), WG_STORE_TOKEN_LEN);
    assert_string_not_equal(t1, t2);

    DO(fx, &g, wg_store_lock_acquire(fx->st, "lk", t1, 5000, got_cb, &g));
    assert_int_equal(g.status, 0);
    DO(fx, &g, wg_store_lock_acquire(fx->st, "lk", t2, 5000, got_cb, &g));
    assert_int_equal(g.status, WG_STORE_BUSY);
    DO(fx, &g, wg_store_lock_acquire(fx->st, "lk", t1, 5000, got_cb, &g));
    assert_int_equal(g.status, WG_STORE_BUSY); /* not reentrant */

    /* The wrong token neither releases nor extends. */
    DO(fx, &g, wg_store_lock_release(fx->st, "lk", t2, got_cb, &g));
    assert_int_equal(g.status, WG_STORE_NOT_HELD);
    DO(fx, &g, wg_store_lock_extend(fx->st, "lk", t2, 60000, got_cb, &g));
    assert_int_equal(g.status, WG_STORE_NOT_HELD);
    raw(fx, &w, "GET %s", WG_STORE_KEY_LOCK_PREFIX "lk");
    assert_string_equal(w.str, t1);
    assert_true(raw_int(fx, "PTTL %s", WG_STORE_KEY_LOCK_PREFIX "lk") <= 5000);

    /* The holder extends and releases. */
    DO(fx, &g, wg_store_lock_extend(fx->st, "lk", t1, 60000, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_true(raw_int(fx, "PTTL %s", WG_STORE_KEY_LOCK_PREFIX "lk") > 5000);
    DO(fx, &g, wg_store_lock_release(fx->st, "lk", t1, got_cb, &g));
    assert_int_equal(g.status, 0);
    DO(fx, &g, wg_store_lock_release(fx->st, "lk", t1, got_cb, &g));
    assert_int_equal(g.status, WG_STORE_NOT_HELD);

    /* Expiry frees it; the late holder cannot touch the next one's lock. */
    DO(fx, &g, wg_store_lock_acquire(fx->st, "lk", t2, 100, got_cb, &g));
    assert_int_equal(g.status, 0);
    run_for(fx, 200);
    DO(fx, &g, wg_store_lock_extend(fx->st, "lk", t2, 5000, got_cb, &g));
    assert_int_equal(g.status, WG_STORE_NOT_HELD);
    DO(fx, &g, wg_store_lock_acquire(fx->st, "lk", t1, 5000, got_cb, &g));
    assert_int_equal(g.status, 0);
    DO(fx, &g, wg_store_lock_release(fx->st, "lk", t2, got_cb, &g));
    assert_int_equal(g.status, WG_STORE_NOT_HELD);
    raw(fx, &w, "GET %s", WG_STORE_KEY_LOCK_PREFIX "lk");
    assert_string_equal(w.str, t1);

    got_reset(&g);
    assert_int_equal(wg_store_lock_acquire(fx->st, "lk", "bad token", 100, got_cb, &g), -EINVAL);
    assert_int_equal(wg_store_lock_acquire(fx->st, "lk", t1, 0, got_cb, &g), -EINVAL);
    assert_int_equal(wg_store_lock_extend(fx->st, "lk", t1, 0, got_cb, &g), -EINVAL);
    close_all(fx);
}

static void test_activity(void **state)
{
    struct fx *fx = *state;
    struct got g;
    struct wg_store_activity acts[4];
    enum { MANY = 300 };
    struct wg_store_activity *many = calloc(MANY, sizeof(*many));
    char(*ids)[16] = calloc(MANY, sizeof(*ids));

    assert_non_null(many);
    assert_non_null(ids);
    got_init(&g, fx);
    fx->clock = 1000;
    create(fx, "a");
    create(fx, "b");
    create(fx, "c");
    move(fx, "a", WG_SESSION_RUNNING);
    move(fx, "b", WG_SESSION_RUNNING);

    acts[0] = (struct wg_store_activity){"a", 5000};
    acts[1] = (struct wg_store_activity){"b", 3000};
    acts[2] = (struct wg_store_activity){"c", 9000}; /* asleep-ish: not in wg:active */
    acts[3] = (struct wg_store_activity){"a", 4000}; /* older: ignored */
    DO(fx, &g, wg_store_touch(fx->st, acts, 4, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.count, 2);
    assert_int_equal(raw_int(fx, "ZCARD %s", WG_STORE_KEY_ACTIVE), 2);

    DO(fx, &g, wg_store_range_idle(fx->st, 4000, 0, 10, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.n_idle, 1);
    assert_string_equal(g.idle[0].id, "b");
    assert_int_equal(g.idle[0].last_active, 3000);
    DO(fx, &g, wg_store_range_idle(fx->st, 10000, 0, 10, got_cb, &g));
    assert_int_equal(g.n_idle, 2);
    assert_string_equal(g.idle[0].id, "b");
    assert_string_equal(g.idle[1].id, "a");
    assert_int_equal(g.idle[1].last_active, 5000);
    DO(fx, &g, wg_store_range_idle(fx->st, 10000, 1, 10, got_cb, &g));
    assert_int_equal(g.n_idle, 1);
    assert_string_equal(g.idle[0].id, "a");
    DO(fx, &g, wg_store_range_idle(fx->st, 10, 0, 10, got_cb, &g));
    assert_int_equal(g.n_idle, 0);

    /* Reads merge wg:active into last_active. */
    DO(fx, &g, wg_store_get(fx->st, "a", got_cb, &g));
    assert_int_equal(g.rec.last_active, 5000);

    /* A batch larger than one ZADD. */
    for (int i = 0; i < MANY; i++) {
        snprintf(ids[i], sizeof(ids[i]), "m%d", i);
        CALL(fx, wg_store_create(fx->st, ids[i], NULL, NULL, got_cb, &g));
    }
    assert_true(run_until(fx, &g.calls, MANY, 5000));
    got_reset(&g);
    for (int i = 0; i < MANY; i++)
        CALL(fx, wg_store_transition(fx->st, ids[i], B(CREATING), WG_SESSION_RUNNING, NULL, NULL,
                                     got_cb, &g));
    assert_true(run_until(fx, &g.calls, MANY, 5000));
    assert_int_equal(g.status, 0);
    for (int i = 0; i < MANY; i++)
        many[i] = (struct wg_store_activity){ids[i], 100000 + i};
    DO(fx, &g, wg_store_touch(fx->st, many, MANY, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.count, MANY);
    DO(fx, &g, wg_store_range_idle(fx->st, 100000 + 9, 2, 5, got_cb, &g));
    assert_int_equal(g.n_idle, 5);
    assert_string_equal(g.idle[0].id, "m0"); /* b, a, then m0.. */
    assert_string_equal(g.idle[4].id, "m4");

    /* Leaving the awake states takes a session out of wg:active. */
    move(fx, "b", WG_SESSION_FAILED);
    DO(fx, &g, wg_store_range_idle(fx->st, 4000, 0, 10, got_cb, &g));
    assert_int_equal(g.n_idle, 0);
    DO(fx, &g, wg_store_get(fx->st, "b", got_cb, &g));
    assert_int_equal(g.rec.last_active, 3000);

    got_reset(&g);
    acts[0].id = "Bad!";
    assert_int_equal(wg_store_touch(fx->st, acts, 1, got_cb, &g), -EINVAL);
    assert_int_equal(wg_store_touch(fx->st, acts, 0, got_cb, &g), -EINVAL);
    assert_int_equal(wg_store_range_idle(fx->st, 0, 0, 0, got_cb, &g), -EINVAL);
    assert_int_equal(wg_store_range_idle(fx->st, 0, 0, WG_STORE_BATCH_MAX + 1, got_cb, &g),
                     -EINVAL);
    free(many);
    free(ids);
    close_all(fx);
}

/* wg:transient holds exactly the sessions in a transient state, scored by
 * state_since, so stuck sessions are found without reading every record. */
static void test_transient_index(void **state)
{
    struct fx *fx = *state;
    struct got g;

    got_init(&g, fx);
    fx->clock = 1000;
    create(fx, "t1"); /* creating */
    fx->clock = 2000;
    create(fx, "t2");
    assert_int_equal(raw_int(fx, "ZCARD %s", WG_STORE_KEY_TRANSIENT), 2);
    fx->clock = 3000;
    move(fx, "t1", WG_SESSION_ASLEEP);
    assert_int_equal(raw_int(fx, "ZCARD %s", WG_STORE_KEY_TRANSIENT), 1);
    fx->clock = 4000;
    move(fx, "t1", WG_SESSION_STARTING);

    DO(fx, &g, wg_store_range_transient(fx->st, 3500, 0, 10, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.n_idle, 1);
    assert_string_equal(g.idle[0].id, "t2");
    assert_int_equal(g.idle[0].last_active, 2000);
    DO(fx, &g, wg_store_range_transient(fx->st, 5000, 0, 10, got_cb, &g));
    assert_int_equal(g.n_idle, 2);
    assert_string_equal(g.idle[1].id, "t1");
    assert_int_equal(g.idle[1].last_active, 4000); /* the new state_since */

    move(fx, "t1", WG_SESSION_RUNNING);
    assert_int_equal(raw_int(fx, "ZCARD %s", WG_STORE_KEY_TRANSIENT), 1);
    DO(fx, &g, wg_store_delete(fx->st, "t2", WG_SESSION_ANY, NULL, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(raw_int(fx, "ZCARD %s", WG_STORE_KEY_TRANSIENT), 0);
    got_reset(&g);
    close_all(fx);
}

static void counts_cb(const struct wg_store_res *res, void *arg)
{
    struct {
        int calls;
        long long v[WG_SESSION_STATE_COUNT];
    } *cg = arg;

    cg->calls++;
    assert_int_equal(res->status, 0);
    assert_non_null(res->state_counts);
    memcpy(cg->v, res->state_counts, sizeof(cg->v));
}

/* A move refused when the session was used after the caller's cutoff: the
 * check and the move are one script. Leaving draining or saving for running
 * (a cancelled sleep) keeps the activity score. */
static void test_transition_idle(void **state)
{
    struct fx *fx = *state;
    struct got g;
    struct wg_store_activity act = {"i1", 0};

    got_init(&g, fx);
    fx->clock = 1000;
    create(fx, "i1");
    move(fx, "i1", WG_SESSION_RUNNING); /* wg:active = 1000 */
    fx->clock = 5000;
    DO(fx, &g,
       wg_store_transition_idle(fx->st, "i1", B(RUNNING), WG_SESSION_DRAINING, 1000, NULL, NULL,
                                got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.rec.state, WG_SESSION_DRAINING);

    act.at_ms = 5500; /* a request while draining */
    DO(fx, &g, wg_store_touch(fx->st, &act, 1, got_cb, &g));
    assert_int_equal(g.count, 1);
    DO(fx, &g,
       wg_store_transition_idle(fx->st, "i1", B(DRAINING), WG_SESSION_SAVING, 1000, NULL, NULL,
                                got_cb, &g));
    assert_int_equal(g.status, WG_STORE_ACTIVE);
    assert_true(g.has_rec);
    assert_int_equal(g.rec.state, WG_SESSION_DRAINING); /* nothing written */
    assert_int_equal(g.rec.last_active, 5500);
    assert_non_null(strstr(g.error, "active"));

    fx->clock = 6000;
    DO(fx, &g,
       wg_store_transition(fx->st, "i1", B(DRAINING) | B(SAVING), WG_SESSION_RUNNING, NULL, NULL,
                           got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(raw_score(fx, "ZSCORE %s i1", WG_STORE_KEY_ACTIVE), 5500);
    /* With a cutoff at or after the last activity the move goes through. */
    DO(fx, &g,
       wg_store_transition_idle(fx->st, "i1", B(RUNNING), WG_SESSION_PAUSED, 5500, NULL, NULL,
                                got_cb, &g));
    assert_int_equal(g.status, 0);
    /* No cutoff: no check. */
    act.at_ms = 9000;
    DO(fx, &g, wg_store_touch(fx->st, &act, 1, got_cb, &g));
    DO(fx, &g,
       wg_store_transition_idle(fx->st, "i1", B(PAUSED), WG_SESSION_STOPPING, -1, NULL, NULL,
                                got_cb, &g));
    assert_int_equal(g.status, 0);
    got_reset(&g);
    close_all(fx);
}

static void set_override(struct fx *fx, const char *id, bool stop, uint64_t ms, bool on)
{
    struct wg_session_update u = {0};
    struct got g;

    got_init(&g, fx);
    u.set = stop ? WG_SF_IDLE_STOP_AFTER : WG_SF_IDLE_PAUSE_AFTER;
    u.has_idle_stop_after = stop && on;
    u.idle_stop_after_ms = ms;
    u.has_idle_pause_after = !stop && on;
    u.idle_pause_after_ms = ms;
    DO(fx, &g, wg_store_update(fx->st, id, WG_SESSION_ANY, &u, got_cb, &g));
    assert_int_equal(g.status, 0);
    got_reset(&g);
}

/* One reaper pass reads the idle range only; per-session overrides shorter
 * than the configured tier widen it through wg:idle_short. */
static void test_reap_scan(void **state)
{
    struct fx *fx = *state;
    struct got g;
    struct wg_store_activity acts[3] = {{"r-busy", 0}, {"r-idle", 0}, {"r-short", 0}};

    got_init(&g, fx);
    fx->clock = 1000;
    create(fx, "r-busy");
    create(fx, "r-idle");
    create(fx, "r-short");
    create(fx, "r-asleep");
    move(fx, "r-busy", WG_SESSION_RUNNING);
    move(fx, "r-idle", WG_SESSION_RUNNING);
    move(fx, "r-short", WG_SESSION_RUNNING);
    acts[0].at_ms = 99000;
    acts[1].at_ms = 10000;
    acts[2].at_ms = 80000;
    DO(fx, &g, wg_store_touch(fx->st, acts, 3, got_cb, &g));
    fx->clock = 100000;

    /* Tier 60 s: cutoff 40000: only r-idle. */
    DO(fx, &g, wg_store_reap_scan(fx->st, 60000, 0, 10, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.count, 40000);
    assert_int_equal(g.n_reap, 1);
    assert_string_equal(g.reap[0].id, "r-idle");
    assert_int_equal(g.reap[0].last_active, 10000);
    assert_int_equal(g.reap[0].state, WG_SESSION_RUNNING);
    assert_false(g.reap[0].has_stop_after);
    assert_int_equal(g.reap[0].save_at, 0);

    /* A 15 s override on r-short widens the range to cutoff 85000. */
    set_override(fx, "r-short", true, 15000, true);
    assert_int_equal(raw_score(fx, "ZSCORE %s r-short", WG_STORE_KEY_IDLE_SHORT), 15000);
    DO(fx, &g, wg_store_reap_scan(fx->st, 60000, 0, 10, got_cb, &g));
    assert_int_equal(g.count, 85000);
    assert_int_equal(g.n_reap, 2);
    assert_string_equal(g.reap[0].id, "r-idle");
    assert_string_equal(g.reap[1].id, "r-short");
    assert_true(g.reap[1].has_stop_after);
    assert_int_equal(g.reap[1].stop_after_ms, 15000);
    /* A pause override of 0 is off: it does not count. */
    set_override(fx, "r-busy", false, 0, true);
    assert_int_equal(raw_int(fx, "ZCARD %s", WG_STORE_KEY_IDLE_SHORT), 1);
    /* Removing the override, then deleting, drop the index entry. */
    set_override(fx, "r-short", true, 0, false);
    assert_int_equal(raw_int(fx, "ZCARD %s", WG_STORE_KEY_IDLE_SHORT), 0);
    set_override(fx, "r-short", false, 5000, true);
    assert_int_equal(raw_score(fx, "ZSCORE %s r-short", WG_STORE_KEY_IDLE_SHORT), 5000);
    DO(fx, &g, wg_store_delete(fx->st, "r-short", WG_SESSION_ANY, NULL, got_cb, &g));
    assert_int_equal(raw_int(fx, "ZCARD %s", WG_STORE_KEY_IDLE_SHORT), 0);

    /* Paging, and no tier at all. */
    DO(fx, &g, wg_store_reap_scan(fx->st, 1, 1, 10, got_cb, &g));
    assert_int_equal(g.n_reap, 1);
    assert_string_equal(g.reap[0].id, "r-busy");
    DO(fx, &g, wg_store_reap_scan(fx->st, 0, 0, 10, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.count, -1);
    assert_int_equal(g.n_reap, 0);
    assert_int_equal(wg_store_reap_scan(fx->st, 1, 0, 0, got_cb, &g), -EINVAL);
    got_reset(&g);
    close_all(fx);
}

/* wg:counts follows every create, move and delete. */
static void test_counts(void **state)
{
    struct fx *fx = *state;
    struct got g;
    struct {
        int calls;
        long long v[WG_SESSION_STATE_COUNT];
    } cg;

    got_init(&g, fx);
    create(fx, "c1");
    create(fx, "c2");
    create(fx, "c3");
    move(fx, "c1", WG_SESSION_RUNNING);
    move(fx, "c2", WG_SESSION_RUNNING);
    move(fx, "c2", WG_SESSION_DRAINING);
    DO(fx, &g, wg_store_delete(fx->st, "c3", WG_SESSION_ANY, NULL, got_cb, &g));
    /* A refused move changes nothing. */
    DO(fx, &g,
       wg_store_transition(fx->st, "c1", B(ASLEEP), WG_SESSION_STARTING, NULL, NULL, got_cb, &g));
    assert_int_equal(g.status, WG_STORE_REJECTED);
    got_reset(&g);

    memset(&cg, 0, sizeof(cg));
    fx->in_call = true;
    assert_int_equal(wg_store_counts(fx->st, counts_cb, &cg), 0);
    fx->in_call = false;
    assert_true(run_until(fx, &cg.calls, 1, 3000));
    assert_int_equal(cg.v[WG_SESSION_CREATING], 0);
    assert_int_equal(cg.v[WG_SESSION_RUNNING], 1);
    assert_int_equal(cg.v[WG_SESSION_DRAINING], 1);
    assert_int_equal(cg.v[WG_SESSION_ASLEEP], 0);
    assert_int_equal(cg.v[WG_SESSION_DESTROYED], 0);
    close_all(fx);
}

static void test_list(void **state)
{
    struct fx *fx = *state;
    struct got g;
    struct raw w;

    got_init(&g, fx);
    DO(fx, &g, wg_store_list(fx->st, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.n_recs, 0);

    create(fx, "zeta");
    create(fx, "alpha");
    create(fx, "mid");
    move(fx, "mid", WG_SESSION_RUNNING);
    /* Garbage: a garbled record, a member without a record, an invalid id. */
    raw(fx, &w, "HSET %sjunk id junk state running port 99999", WG_STORE_KEY_SESSION_PREFIX);
    raw(fx, &w, "SADD %s junk vanished Bad!", WG_STORE_KEY_SESSIONS);

    DO(fx, &g, wg_store_list(fx->st, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.n_recs, 3);
    assert_int_equal(g.n_bad, 2);
    assert_string_equal(g.ids[0], "alpha");
    assert_string_equal(g.ids[1], "mid");
    assert_string_equal(g.ids[2], "zeta");
    assert_int_equal(g.states[1], WG_SESSION_RUNNING);
    assert_int_equal(g.actives[1], fx->clock);
    assert_int_equal(g.states[2], WG_SESSION_CREATING);
    got_reset(&g);
    close_all(fx);
}

static void test_events_capped(void **state)
{
    struct fx *fx = *state;
    struct wg_store *small = open_store(fx, fx->r, 100);
    struct got g;
    long long len;

    got_init(&g, fx);
    assert_int_equal(WG_STORE_EVENTS_MAX, 10000);
    create(fx, "cap");
    for (int i = 0; i < 1000; i++)
        CALL(fx, wg_store_event_add(small, "cap", "save", "{\"ok\":true}", got_cb, &g));
    assert_true(run_until(fx, &g.calls, 1000, 5000));
    assert_int_equal(g.status, 0);
    /* MAXLEN ~ trims whole nodes (100 entries each by default). */
    len = xlen(fx);
    assert_true(len >= 100);
    assert_true(len <= 300);
    /* Transitions go through the same cap. */
    got_reset(&g);
    for (int i = 0; i < 300; i++) {
        CALL(fx, wg_store_transition(small, "cap", WG_SESSION_ANY,
                                     i % 2 ? WG_SESSION_DRAINING : WG_SESSION_RUNNING, NULL, NULL,
                                     got_cb, &g));
    }
    assert_true(run_until(fx, &g.calls, 300, 5000));
    assert_int_equal(g.status, 0);
    assert_true(xlen(fx) <= 300);

    got_reset(&g);
    assert_int_equal(wg_store_event_add(small, "cap", "transition", NULL, got_cb, &g), -EINVAL);
    assert_int_equal(wg_store_event_add(small, "cap", "Bad", NULL, got_cb, &g), -EINVAL);
    assert_int_equal(wg_store_event_add(small, "cap", "save", "[1,", got_cb, &g), -EINVAL);
    wg_store_free(small);
    close_all(fx);
}

static void test_wake_stream(void **state)
{
    struct fx *fx = *state;
    struct wg_redis *blk = open_connected(fx, "wake-block", 3000);
    struct got g;
    struct raw w;
    struct wg_wake_cmd cmd;
    const char *ack[2];
    char keep[64];
    uint64_t t0;

    got_init(&g, fx);
    DO(fx, &g, wg_store_wake_group(fx->st, "host-a", "orch", got_cb, &g));
    assert_int_equal(g.status, 0);
    DO(fx, &g, wg_store_wake_group(fx->st, "host-a", "orch", got_cb, &g));
    assert_int_equal(g.status, WG_STORE_EXISTS);
    assert_non_null(strstr(g.error, "BUSYGROUP"));

    memset(&cmd, 0, sizeof(cmd));
    snprintf(cmd.session, sizeof(cmd.session), "s1");
    cmd.op = WG_WAKE_OP_WAKE;
    snprintf(cmd.from, sizeof(cmd.from), "gw-1");
    DO(fx, &g, wg_store_wake_add(fx->st, "host-a", &cmd, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_true(strlen(g.event_id) > 2);
    cmd.op = WG_WAKE_OP_SLEEP;
    cmd.force = true;
    cmd.now = true;
    cmd.at = 42;
    cmd.from[0] = '\0';
    snprintf(cmd.session, sizeof(cmd.session), "s2");
    DO(fx, &g, wg_store_wake_add(fx->st, "host-a", &cmd, got_cb, &g));
    assert_int_equal(g.status, 0);
    /* A garbled entry from someone else. */
    raw(fx, &w, "XADD %shost-a * session ../etc op wake at 1", WG_STORE_KEY_WAKE_PREFIX);

    DO(fx, &g, wg_store_wake_read(fx->st, blk, "host-a", "orch", "c1", 10, 500, false, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.n_wake, 3);
    assert_string_equal(g.wake[0].session, "s1");
    assert_int_equal(g.wake[0].op, WG_WAKE_OP_WAKE);
    assert_int_equal(g.wake[0].at, fx->clock);
    assert_string_equal(g.wake[0].from, "gw-1");
    assert_false(g.wake[0].force);
    assert_false(g.wake[0].now);
    assert_false(g.wake[0].bad);
    assert_string_equal(g.wake[1].session, "s2");
    assert_int_equal(g.wake[1].op, WG_WAKE_OP_SLEEP);
    assert_int_equal(g.wake[1].at, 42);
    assert_true(g.wake[1].force);
    assert_true(g.wake[1].now);
    assert_false(g.wake[1].bad);
    assert_true(g.wake[2].bad);
    snprintf(keep, sizeof(keep), "%s", g.wake[1].entry_id);

    /* Ack two; the other stays pending for c1. */
    ack[0] = g.wake[0].entry_id;
    ack[1] = g.wake[2].entry_id;
    {
        char a0[64], a1[64];
        snprintf(a0, sizeof(a0), "%s", ack[0]);
        snprintf(a1, sizeof(a1), "%s", ack[1]);
        ack[0] = a0;
        ack[1] = a1;
        DO(fx, &g, wg_store_wake_ack(fx->st, "host-a", "orch", ack, 2, got_cb, &g));
    }
    assert_int_equal(g.status, 0);
    assert_int_equal(g.count, 2);
    DO(fx, &g, wg_store_wake_read(fx->st, blk, "host-a", "orch", "c1", 10, 0, true, got_cb, &g));
    assert_int_equal(g.n_wake, 1);
    assert_string_equal(g.wake[0].entry_id, keep);

    /* Nothing new: the block times out with no entries. */
    t0 = uv_now(&fx->loop);
    DO(fx, &g, wg_store_wake_read(fx->st, blk, "host-a", "orch", "c1", 10, 200, false, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.n_wake, 0);
    assert_true(uv_now(&fx->loop) - t0 >= 150);

    /* c1 "crashed": c2 claims its pending entry. */
    DO(fx, &g, wg_store_wake_claim(fx->st, "host-a", "orch", "c2", 0, "0-0", 10, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.n_wake, 1);
    assert_string_equal(g.wake[0].entry_id, keep);
    assert_string_equal(g.wake[0].session, "s2");
    assert_string_equal(g.next_id, "0-0");
    DO(fx, &g, wg_store_wake_read(fx->st, blk, "host-a", "orch", "c1", 10, 0, true, got_cb, &g));
    assert_int_equal(g.n_wake, 0);
    DO(fx, &g, wg_store_wake_read(fx->st, blk, "host-a", "orch", "c2", 10, 0, true, got_cb, &g));
    assert_int_equal(g.n_wake, 1);

    /* A pending entry deleted from the stream comes back flagged bad. */
    raw(fx, &w, "XDEL %shost-a %s", WG_STORE_KEY_WAKE_PREFIX, keep);
    DO(fx, &g, wg_store_wake_read(fx->st, blk, "host-a", "orch", "c2", 10, 0, true, got_cb, &g));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.n_wake, 1);
    assert_true(g.wake[0].bad);
    assert_string_equal(g.wake[0].entry_id, keep);

    /* Errors: a missing group is a Redis error, kept for the log line. */
    DO(fx, &g, wg_store_wake_read(fx->st, blk, "host-b", "orch", "c1", 1, 0, false, got_cb, &g));
    assert_int_equal(g.status, -EIO);
    assert_non_null(strstr(g.error, "NOGROUP"));

    got_reset(&g);
    assert_int_equal(wg_store_wake_group(fx->st, "bad host", "orch", got_cb, &g), -EINVAL);
    assert_int_equal(
        wg_store_wake_read(fx->st, blk, "host-a", "orch", "c 1", 1, 0, false, got_cb, &g), -EINVAL);
    ack[0] = "nope";
    assert_int_equal(wg_store_wake_ack(fx->st, "host-a", "orch", ack, 1, got_cb, &g), -EINVAL);
    cmd.op = (enum wg_wake_op)9;
    assert_int_equal(wg_store_wake_add(fx->st, "host-a", &cmd, got_cb, &g), -EINVAL);
    wg_redis_free(blk);
    close_all(fx);
}

static void test_errors(void **state)
{
    struct fx *fx = *state;
    struct got g;
    struct raw w;

    got_init(&g, fx);
    /* A garbled record: -EBADMSG naming the field. */
    raw(fx, &w, "HSET %sg1 id g1 state running port 99999", WG_STORE_KEY_SESSION_PREFIX);
    DO(fx, &g, wg_store_get(fx->st, "g1", got_cb, &g));
    assert_int_equal(g.status, -EBADMSG);
    assert_non_null(strstr(g.error, "port"));
    assert_false(g.has_rec);
    /* A record whose id field lies about its key. */
    raw(fx, &w, "HSET %sg2 id other state running", WG_STORE_KEY_SESSION_PREFIX);
    DO(fx, &g, wg_store_get(fx->st, "g2", got_cb, &g));
    assert_int_equal(g.status, -EBADMSG);
    assert_non_null(strstr(g.error, "id"));
    /* The record was not written back by the read. */
    raw(fx, &w, "HGET %sg1 port", WG_STORE_KEY_SESSION_PREFIX);
    assert_string_equal(w.str, "99999");

    /* A Redis error answer: -EIO with Redis's text. */
    raw(fx, &w, "SET %s x", WG_STORE_KEY_SESSIONS);
    DO(fx, &g, wg_store_list(fx->st, got_cb, &g));
    assert_int_equal(g.status, -EIO);
    assert_non_null(strstr(g.error, "WRONGTYPE"));
    raw(fx, &w, "SET %s%s x", WG_STORE_KEY_SESSION_PREFIX, "str");
    DO(fx, &g, wg_store_get(fx->st, "str", got_cb, &g));
    assert_int_equal(g.status, -EIO);
    assert_non_null(strstr(g.error, "WRONGTYPE"));
    DO(fx, &g,
       wg_store_transition(fx->st, "str", WG_SESSION_ANY, WG_SESSION_STARTING, NULL, NULL, got_cb,
                           &g));
    assert_int_equal(g.status, -EIO);
    assert_true(strlen(g.error) > 0);

    /* Redis gone: transport errors pass through. */
    wg_test_redis_stop(&fx->srv);
    run_for(fx, 50);
    DO(fx, &g, wg_store_get(fx->st, "g1", got_cb, &g));
    assert_true(g.status == -ENOTCONN || g.status == -ECONNRESET);
    assert_non_null(strstr(g.error, "redis"));
    got_reset(&g);
    close_all(fx);
}

struct freer {
    struct got g;
    struct wg_store **st;
};

static void free_store_cb(const struct wg_store_res *res, void *arg)
{
    struct freer *f = arg;

    got_cb(res, &f->g);
    /* From a cancellation inside wg_store_free(): freeing again is a no-op,
     * and new calls are refused. */
    if (res->status == -ECANCELED)
        assert_int_equal(wg_store_get(*f->st, "cx", got_cb, &f->g), -ECANCELED);
    wg_store_free(*f->st);
    if (res->status != -ECANCELED)
        *f->st = NULL;
}

static void test_cancel(void **state)
{
    struct fx *fx = *state;
    struct got a, b, c, d;
    struct freer f;
    struct wg_store *st2;

    got_init(&a, fx);
    got_init(&b, fx);
    got_init(&c, fx);
    got_init(&d, fx);
    create(fx, "cx");

    /* Freed with calls in flight: each gets -ECANCELED, once, inside the
     * free; late replies are dropped. */
    st2 = open_store(fx, fx->r, 0);
    CALL(fx, wg_store_get(st2, "cx", got_cb, &a));
    CALL(fx, wg_store_list(st2, got_cb, &b));
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    assert_int_equal(a.calls + b.calls, 0);
    wg_store_free(st2);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.status, -ECANCELED);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.status, -ECANCELED);
    run_for(fx, 100);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);

    /* Freed from a callback while another call is pending. */
    memset(&f, 0, sizeof(f));
    got_init(&f.g, fx);
    st2 = open_store(fx, fx->r, 0);
    f.st = &st2;
    got_reset(&c);
    CALL(fx, wg_store_get(st2, "cx", free_store_cb, &f));
    CALL(fx, wg_store_get(st2, "cx", got_cb, &c));
    assert_true(run_until(fx, &f.g.calls, 1, 3000));
    assert_int_equal(f.g.status, 0);
    assert_null(st2);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.status, -ECANCELED);
    run_for(fx, 100);
    assert_int_equal(c.calls, 1);
    wg_session_release(&f.g.rec);

    /* A callback run by wg_store_free() itself frees again. */
    memset(&f, 0, sizeof(f));
    got_init(&f.g, fx);
    st2 = open_store(fx, fx->r, 0);
    f.st = &st2;
    got_reset(&c);
    CALL(fx, wg_store_get(st2, "cx", free_store_cb, &f));
    CALL(fx, wg_store_get(st2, "cx", got_cb, &c));
    wg_store_free(st2);
    st2 = NULL;
    assert_int_equal(f.g.calls, 1);
    assert_int_equal(f.g.status, -ECANCELED);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.status, -ECANCELED);
    run_for(fx, 100);
    assert_int_equal(f.g.calls + c.calls, 2);

    /* The connection freed under the store: pending calls end -ECANCELED. */
    got_reset(&d);
    CALL(fx, wg_store_get(fx->st, "cx", got_cb, &d));
    wg_redis_free(fx->r);
    fx->r = NULL;
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.status, -ECANCELED);
    got_reset(&a);
    got_reset(&b);
    got_reset(&c);
    got_reset(&d);
    close_all(fx);
}

static void test_state_msg(void **state)
{
    struct wg_state_msg m;
    static const char *const bad[] = {
        "",
        "{",
        "[]",
        "{\"state\":\"running\",\"v\":1}",
        "{\"id\":\"A\",\"state\":\"running\",\"v\":1}",
        "{\"id\":\"a\",\"state\":\"up\",\"v\":1}",
        "{\"id\":\"a\",\"state\":\"running\"}",
        "{\"id\":\"a\",\"state\":\"running\",\"v\":-1}",
        "{\"id\":\"a\",\"state\":\"running\",\"v\":1,\"port\":0}",
        "{\"id\":\"a\",\"state\":\"running\",\"v\":1,\"port\":\"80\"}",
        "{\"id\":\"a\",\"state\":\"running\",\"v\":1,\"ip\":\"x\"}",
        "{\"id\":\"a\",\"state\":\"running\",\"v\":1,\"ip\":\"1.2.3.4\\u0000x\"}",
        "{\"id\":\"a\",\"state\":\"running\",\"v\":1,\"gen\":5}",
        "{\"id\":\"a\",\"state\":\"running\",\"v\":1,\"gen\":\"-5\"}",
        "{\"id\":\"a\",\"state\":\"running\",\"v\":1,\"gen\":\"18446744073709551616\"}",
        "{\"id\":\"a\",\"state\":\"running\",\"v\":1,\"gen\":\"12x\"}",
        "{\"id\":\"a\",\"state\":\"running\",\"v\":1,\"cid\":\"\"}",
        "{\"id\":\"a\",\"state\":\"running\",\"v\":1,\"cid\":\"ABC\"}",
        "{\"id\":\"a\",\"state\":\"running\",\"v\":1,\"cid\":12}",
        "{\"id\":\"a\",\"state\":\"running\",\"v\":1,\"cid\":\"ab\\u0000c\"}",
        "{\"id\":\"a\",\"state\":\"running\",\"v\":1,\"cid\":"
        "\"00000000000000000000000000000000000000000000000000000000000000000\"}",
    };
    const char *good =
        "{\"v\":7,\"state\":\"running\",\"id\":\"s-1\",\"ip\":\"::1\",\"port\":8080}";

    (void)state;
    assert_int_equal(wg_store_parse_state_msg(good, strlen(good), &m), 0);
    assert_string_equal(m.id, "s-1");
    assert_int_equal(m.state, WG_SESSION_RUNNING);
    assert_string_equal(m.ip, "::1");
    assert_int_equal(m.port, 8080);
    assert_int_equal(m.version, 7);
    assert_true(m.gen == 0);
    const char *with_gen =
        "{\"v\":7,\"state\":\"asleep\",\"id\":\"s-1\",\"gen\":\"18446744073709551615\"}";
    assert_int_equal(wg_store_parse_state_msg(with_gen, strlen(with_gen), &m), 0);
    assert_true(m.gen == UINT64_MAX);
    assert_string_equal(m.container_id, "");
    const char *with_cid = "{\"v\":7,\"state\":\"running\",\"id\":\"s-1\",\"cid\":\"0a1b2c\"}";
    assert_int_equal(wg_store_parse_state_msg(with_cid, strlen(with_cid), &m), 0);
    assert_string_equal(m.container_id, "0a1b2c");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (wg_store_parse_state_msg(bad[i], strlen(bad[i]), &m) != -EBADMSG)
            fail_msg("accepted %s", bad[i]);
    assert_true(wg_store_name_valid("gw-1.example:a_b"));
    assert_false(wg_store_name_valid("-x"));
    assert_false(wg_store_name_valid(""));
    assert_false(wg_store_name_valid("a b"));
    assert_string_equal(wg_wake_op_name(WG_WAKE_OP_DESTROY), "destroy");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_msg),
        cmocka_unit_test_setup_teardown(test_get_or_create, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transition_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transient_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transition_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_activity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transition_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reap_scan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_capped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wake_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
    };

    /* WG_TEST_FILTER=test_lock runs one test (a glob). */
    if (getenv("WG_TEST_FILTER"))
        cmocka_set_test_filter(getenv("WG_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
