/* test/unit/test_session_cache.c - the proxy's session cache (proxy/session_cache),
 * its activity writes in particular, against a real redis-server.
 *
 * The .c file is included to look at entries and to flush at a chosen
 * moment. Each test starts its own redis-server on a unix socket in a
 * mkdtemp() directory and kills it by pid in the teardown; a missing
 * redis-server fails the tests, they never skip. Every test ends by
 * asserting that its loop closes with no live handle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proxy/session_cache.c"

#include "common/clock.h"
#include "loop_fixture.h"
#include "redis_fixture.h"

#define INTERVAL_MS 200
#define OLD_MS 1000000000000LL /* the records' clock: "last active in 2001" */

struct fx {
    uv_loop_t loop;
    bool loop_closed;
    struct wg_test_redis srv;
    char url[256];
    char *log_buf;
    size_t log_len;
    struct wg_log log;
    struct wg_config cfg;
    int64_t clock;
    struct wg_redis *r;
    struct wg_store *st;
    struct wg_session_cache *s;
};

/* ---- fixture --------------------------------------------------------------------------------- */

static int64_t fake_clock(void *arg)
{
    return ((struct fx *)arg)->clock;
}

static void count_up(struct wg_redis *r, bool connected, const char *reason, void *arg)
{
    (void)r;
    (void)reason;
    if (connected)
        (*(int *)arg)++;
}

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    struct wg_redis_opts ro = {.name = "test"};
    struct wg_store_opts so = {0};
    int ups = 0;

    if (fx == NULL)
        return -1;
    *state = fx;
    fx->log.level = WG_LOG_INFO;
    fx->log.format = WG_LOG_LOGFMT;
    fx->log.out = open_memstream(&fx->log_buf, &fx->log_len);
    if (fx->log.out == NULL)
        return -1;
    fx->clock = OLD_MS;
    fx->cfg.redis_url = fx->url;
    fx->cfg.docker_name = "h1";
    fx->cfg.sessions.port = 8080;
    fx->cfg.sessions.idle.activity_interval_ms = INTERVAL_MS;
    fx->cfg.redis_outage_grace_ms = 30000;
    fx->cfg.redis_state_timeout_ms = 400;
    if (uv_loop_init(&fx->loop) != 0 ||
        wg_test_redis_start_in_tmp(&fx->srv, "session_cache", fx->url, sizeof(fx->url)) != 0)
        return -1;
    if (wg_redis_new(&fx->loop, fx->url, &ro, &fx->log, &fx->r) != 0)
        return -1;
    wg_redis_on_state(fx->r, count_up, &ups);
    if (!wg_test_run_until(&fx->loop, &ups, 1, 3000))
        return -1;
    wg_redis_on_state(fx->r, NULL, NULL);
    so.clock_ms = fake_clock;
    so.clock_arg = fx;
    if (wg_store_new(fx->r, &so, &fx->st) != 0)
        return -1;
    if (wg_session_cache_new(&fx->loop, &fx->cfg, &fx->log, fx->st, &fx->s) != 0)
        return -1;
    for (int i = 0; i < 300 && !wg_session_cache_connected(fx->s); i++)
        wg_test_run_for(&fx->loop, 10);
    return wg_session_cache_connected(fx->s) ? 0 : -1;
}

static int teardown(void **state)
{
    struct fx *fx = *state;

    if (fx == NULL)
        return 0;
    wg_test_redis_stop(&fx->srv);
    if (!fx->loop_closed) {
        uv_run(&fx->loop, UV_RUN_NOWAIT);
        uv_loop_close(&fx->loop);
    }
    if (fx->log.out != NULL)
        fclose(fx->log.out);
    free(fx->log_buf);
    wg_test_redis_remove_files(&fx->srv);
    free(fx);
    return 0;
}

static void close_all(struct fx *fx)
{
    wg_session_cache_free(fx->s);
    fx->s = NULL;
    wg_store_free(fx->st);
    fx->st = NULL;
    wg_redis_free(fx->r);
    fx->r = NULL;
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    fx->loop_closed = true;
}

/* How many log lines so far contain text. */
static int log_count(struct fx *fx, const char *text)
{
    int n = 0;
    fflush(fx->log.out);
    for (const char *p = fx->log_buf; p != NULL && (p = strstr(p, text)) != NULL; p++)
        n++;
    return n;
}

/* ---- Redis helpers --------------------------------------------------------------------------- */

struct raw {
    int calls;
    int status;
    int type;
    long long integer;
    char str[64];
};

static void raw_cb(int status, redisReply *reply, void *arg)
{
    struct raw *w = arg;
    w->calls++;
    w->status = status;
    if (reply == NULL)
        return;
    w->type = reply->type;
    w->integer = reply->integer;
    if (reply->str != NULL)
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
    assert_int_equal(w->status, 0);
}

/* The session's wg:active score, or -1 when it has none. */
static int64_t score(struct fx *fx, const char *id)
{
    struct raw w;
    raw(fx, &w, "ZSCORE %s %s", WG_STORE_KEY_ACTIVE, id);
    return w.type == REDIS_REPLY_STRING ? strtoll(w.str, NULL, 10) : -1;
}

struct got {
    int calls;
    int status;
};

static void got_cb(const struct wg_store_res *res, void *arg)
{
    struct got *g = arg;
    g->calls++;
    g->status = res->status;
}

/* A running record at 127.0.0.1:port, in wg:active with score OLD_MS. */
static void make_running(struct fx *fx, const char *id)
{
    struct wg_session_update u = {
        .set = WG_SF_HOST | WG_SF_IP | WG_SF_PORT, .host = "h1", .ip = "127.0.0.1", .port = 9};
    struct got g = {0};
    assert_int_equal(wg_store_create(fx->st, id, NULL, NULL, got_cb, &g), 0);
    assert_true(wg_test_run_until(&fx->loop, &g.calls, 1, 3000));
    assert_int_equal(g.status, 0);
    assert_int_equal(
        wg_store_transition(fx->st, id, WG_SESSION_ANY, WG_SESSION_RUNNING, &u, NULL, got_cb, &g),
        0);
    assert_true(wg_test_run_until(&fx->loop, &g.calls, 2, 3000));
    assert_int_equal(g.status, 0);
    assert_int_equal(score(fx, id), OLD_MS);
}

/* Looks the session up until the cache has it: a READY view. */
static void ready(struct fx *fx, const char *id, struct wg_sess_view *v)
{
    for (int i = 0; i < 300; i++) {
        wg_session_cache_lookup(fx->s, id, 0, v);
        if (v->status != WG_SESS_PENDING)
            break;
        wg_test_run_for(&fx->loop, 10);
    }
    assert_int_equal(v->status, WG_SESS_READY);
    assert_non_null(v->entry);
}

/* One short exchange, as conn.c brackets it. */
static void request(struct fx *fx, const struct wg_sess_view *v)
{
    struct wg_sess_entry *h = wg_session_cache_activity_begin(fx->s, v);
    assert_non_null(h);
    wg_session_cache_activity_end(fx->s, &h);
    assert_null(h);
}

/* ---- tests ----------------------------------------------------------------------------------- */

/* Requests only mark the entry; one flush per interval writes every marked
 * session in one batch, with the time of its last activity. */
static void test_requests_batched(void **state)
{
    struct fx *fx = *state;
    static const char *const ids[] = {"a", "b", "c"};
    struct wg_sess_view v[3];
    const struct wg_session_cache_stats *st = wg_session_cache_stats(fx->s);

    for (int i = 0; i < 3; i++) {
        make_running(fx, ids[i]);
        ready(fx, ids[i], &v[i]);
    }
    int64_t before = wg_clock_wall_ms();
    for (int k = 0; k < 100; k++)
        for (int i = 0; i < 3; i++)
            request(fx, &v[i]);
    /* Nothing went to Redis yet. */
    assert_int_equal(st->activity_batches, 0);
    assert_int_equal(score(fx, "a"), OLD_MS);
    assert_int_equal(fx->s->act_listed, 3);

    wg_test_run_for(&fx->loop, INTERVAL_MS * 3 / 2);
    assert_int_equal(st->activity_batches, 1);
    assert_int_equal(st->activity_touches, 3);
    assert_int_equal(st->activity_errors, 0);
    assert_int_equal(st->activity_open, 0);
    for (int i = 0; i < 3; i++) {
        int64_t sc = score(fx, ids[i]);
        assert_true(sc >= before - 50 && sc <= wg_clock_wall_ms() + 50);
    }
    assert_int_equal(fx->s->act_listed, 0);

    /* Quiet: no more writes, and the timer stopped. */
    wg_test_run_for(&fx->loop, INTERVAL_MS * 3);
    assert_int_equal(st->activity_batches, 1);
    assert_false(uv_is_active((uv_handle_t *)&fx->s->act_timer));

    /* A session that left wg:active (asleep) is not brought back. */
    struct raw w;
    raw(fx, &w, "ZREM %s b", WG_STORE_KEY_ACTIVE);
    request(fx, &v[1]);
    wg_test_run_for(&fx->loop, INTERVAL_MS * 3 / 2);
    assert_int_equal(st->activity_batches, 2);
    assert_int_equal(score(fx, "b"), -1);

    /* Views without an entry (not running) begin nothing. */
    struct wg_sess_view none = {.status = WG_SESS_NOT_RUNNING};
    struct wg_sess_entry *h = wg_session_cache_activity_begin(fx->s, &none);
    assert_null(h);
    wg_session_cache_activity_end(fx->s, &h);
    wg_session_cache_activity_end(fx->s, NULL);
    close_all(fx);
}

/* An exchange still open is written on every flush with that flush's time,
 * then once more when it ends, then never again. */
static void test_open_exchange(void **state)
{
    struct fx *fx = *state;
    struct wg_sess_view v;
    const struct wg_session_cache_stats *st = wg_session_cache_stats(fx->s);

    make_running(fx, "ws");
    ready(fx, "ws", &v);
    struct wg_sess_entry *h = wg_session_cache_activity_begin(fx->s, &v);
    assert_int_equal(st->activity_open, 1);
    int64_t last = OLD_MS;
    for (int i = 0; i < 3; i++) {
        wg_test_run_for(&fx->loop, INTERVAL_MS + INTERVAL_MS / 4);
        int64_t sc = score(fx, "ws");
        assert_true(sc > last);
        last = sc;
    }
    assert_true(st->activity_batches >= 3 && st->activity_batches <= 4);
    wg_session_cache_activity_end(fx->s, &h);
    assert_int_equal(st->activity_open, 0);
    wg_test_run_for(&fx->loop, INTERVAL_MS * 3 / 2);
    uint64_t batches = st->activity_batches;
    int64_t final = score(fx, "ws");
    assert_true(final >= last);
    wg_test_run_for(&fx->loop, INTERVAL_MS * 3);
    assert_int_equal(st->activity_batches, batches);
    assert_int_equal(score(fx, "ws"), final);
    close_all(fx);
}

/* A failed batch keeps its marks for the next flush and is logged once per
 * failure streak. */
static void test_failure_keeps_marks(void **state)
{
    struct fx *fx = *state;
    struct wg_sess_view v;
    struct raw w;
    const struct wg_session_cache_stats *st = wg_session_cache_stats(fx->s);

    make_running(fx, "a");
    ready(fx, "a", &v);
    /* ZADD on a string: WRONGTYPE. */
    raw(fx, &w, "DEL %s", WG_STORE_KEY_ACTIVE);
    raw(fx, &w, "SET %s x", WG_STORE_KEY_ACTIVE);
    int64_t before = wg_clock_wall_ms();
    request(fx, &v);
    wg_test_run_for(&fx->loop, INTERVAL_MS * 3 + INTERVAL_MS / 2);
    assert_true(st->activity_errors >= 2);
    assert_int_equal(st->activity_batches, 0);
    assert_int_equal(log_count(fx, "activity not written"), 1);
    struct wg_sess_entry *e = find(fx->s, "a");
    assert_true(e->act_listed && e->act_dirty);
    assert_true(uv_is_active((uv_handle_t *)&fx->s->act_timer));

    raw(fx, &w, "DEL %s", WG_STORE_KEY_ACTIVE);
    raw(fx, &w, "ZADD %s %lld a", WG_STORE_KEY_ACTIVE, (long long)OLD_MS);
    wg_test_run_for(&fx->loop, INTERVAL_MS * 3 / 2);
    assert_int_equal(st->activity_batches, 1);
    assert_int_equal(st->activity_touches, 1);
    assert_false(e->act_listed || e->act_dirty);
    /* The request's time, kept through the failures. */
    int64_t sc = score(fx, "a");
    assert_true(sc >= before - 50 && sc < before + INTERVAL_MS);
    assert_int_equal(log_count(fx, "activity written again"), 1);
    close_all(fx);
}

/* Freed with a batch in flight and marks pending: nothing leaks (ASan), the
 * late reply finds no cache, the loop closes. */
/* A stream whose activity ended (quiet) is written once, then not; resumed
 * it is written on every flush again. */
static void test_stream_resume(void **state)
{
    struct fx *fx = *state;
    struct wg_sess_view v;
    const struct wg_session_cache_stats *st = wg_session_cache_stats(fx->s);

    make_running(fx, "ws");
    ready(fx, "ws", &v);
    struct wg_sess_entry *h = wg_session_cache_activity_begin(fx->s, &v);
    struct wg_sess_entry *e = h;
    wg_session_cache_activity_end(fx->s, &h);
    wg_test_run_for(&fx->loop, INTERVAL_MS * 3 / 2);
    int64_t quiet = score(fx, "ws");
    wg_test_run_for(&fx->loop, INTERVAL_MS * 2);
    assert_int_equal(score(fx, "ws"), quiet);
    h = wg_session_cache_activity_resume(fx->s, e);
    assert_ptr_equal(h, e);
    assert_int_equal(st->activity_open, 1);
    wg_test_run_for(&fx->loop, INTERVAL_MS * 3 / 2);
    int64_t again = score(fx, "ws");
    assert_true(again > quiet);
    wg_test_run_for(&fx->loop, INTERVAL_MS * 3 / 2);
    assert_true(score(fx, "ws") > again);
    wg_session_cache_activity_end(fx->s, &h);
    assert_int_equal(st->activity_open, 0);
    close_all(fx);
}

struct left {
    struct wg_sess_stream st;
    struct fx *fx;
    struct left *other; /* removed from inside the callback, when set */
    int calls;
};

static void on_left(struct wg_sess_stream *st)
{
    struct left *l = wg_container_of(st, struct left, st);
    l->calls++;
    assert_null(st->entry);
    if (l->other != NULL)
        wg_session_cache_stream_remove(l->fx->s, &l->other->st);
}

static void move_to(struct fx *fx, const char *id, enum wg_session_state to, const char *error)
{
    struct wg_session_update u = {0};
    struct got g = {0};
    if (error != NULL) {
        u.set = WG_SF_ERROR;
        u.error = error;
    }
    assert_int_equal(wg_store_transition(fx->st, id, WG_SESSION_ANY, to, &u, NULL, got_cb, &g), 0);
    assert_true(wg_test_run_until(&fx->loop, &g.calls, 1, 3000));
    assert_int_equal(g.status, 0);
    wg_test_run_for(&fx->loop, 50); /* the state message */
}

/* Streams are told once when their session leaves running, draining and
 * saving; one may remove another from its callback; a failed session's
 * error is read for the waking page. */
static void test_streams_left(void **state)
{
    struct fx *fx = *state;
    struct wg_sess_view v;
    const struct wg_session_cache_stats *st = wg_session_cache_stats(fx->s);
    struct left a = {.fx = fx, .st.left = on_left}, b = {.fx = fx, .st.left = on_left},
                c = {.fx = fx, .st.left = on_left}, gone = {.fx = fx, .st.left = on_left};

    make_running(fx, "s1");
    ready(fx, "s1", &v);
    wg_session_cache_stream_add(fx->s, v.entry, &a.st);
    wg_session_cache_stream_add(fx->s, v.entry, &b.st);
    wg_session_cache_stream_add(fx->s, v.entry, &c.st);
    wg_session_cache_stream_add(fx->s, v.entry, &gone.st);
    wg_session_cache_stream_add(fx->s, NULL, &gone.st); /* no entry: nothing */
    assert_int_equal(st->streams_open, 4);
    wg_session_cache_stream_remove(fx->s, &gone.st);
    wg_session_cache_stream_remove(fx->s, &gone.st); /* idempotent */
    assert_int_equal(st->streams_open, 3);
    a.other = &b; /* a's callback ends b before b is told */

    move_to(fx, "s1", WG_SESSION_DRAINING, NULL);
    move_to(fx, "s1", WG_SESSION_SAVING, NULL);
    assert_int_equal(a.calls + b.calls + c.calls, 0);
    move_to(fx, "s1", WG_SESSION_STOPPING, NULL);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 0);
    assert_int_equal(c.calls, 1);
    assert_int_equal(gone.calls, 0);
    assert_int_equal(st->streams_open, 0);
    assert_int_equal(st->streams_ended, 2);
    wg_session_cache_stream_remove(fx->s, &a.st); /* after the notice: nothing */

    /* Failed: the error is read (messages carry none). */
    move_to(fx, "s1", WG_SESSION_FAILED, "not ready: <boom>");
    for (int i = 0; i < 100; i++) {
        wg_session_cache_lookup(fx->s, "s1", 0, &v);
        if (v.error != NULL)
            break;
        wg_test_run_for(&fx->loop, 10);
    }
    assert_int_equal(v.status, WG_SESS_NOT_RUNNING);
    assert_string_equal(v.error, "not ready: <boom>");
    close_all(fx);
}

static void test_free_in_flight(void **state)
{
    struct fx *fx = *state;
    struct wg_sess_view v;

    struct wg_sess_view vb;

    make_running(fx, "a");
    make_running(fx, "b");
    ready(fx, "a", &v);
    ready(fx, "b", &vb);
    request(fx, &v);
    act_flush(fx->s);
    assert_non_null(fx->s->act_inflight);
    request(fx, &vb);
    close_all(fx);
}

#define CID_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define CID_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

struct gone {
    int calls;
    char ip[64];
};

static void on_gone(void *arg, const char *ip)
{
    struct gone *g = arg;
    g->calls++;
    snprintf(g->ip, sizeof(g->ip), "%s", ip);
}

/* The entry carries the record's container; another container at the same
 * address (a state message naming it) is a departure from the address.
 * Without Redis the entry is handed out unconfirmed, for
 * redis.outage_grace only. */
static void test_entry_tied_to_container(void **state)
{
    struct fx *fx = *state;
    struct wg_session_update u = {.set = WG_SF_HOST | WG_SF_IP | WG_SF_PORT | WG_SF_CONTAINER_ID,
                                  .host = "h1",
                                  .ip = "127.0.0.1",
                                  .port = 9,
                                  .container_id = CID_A};
    struct wg_sess_view v;
    struct gone gone = {0};
    struct got g = {0};

    wg_session_cache_on_addr_gone(fx->s, on_gone, &gone);
    assert_int_equal(wg_store_create(fx->st, "tied", NULL, NULL, got_cb, &g), 0);
    assert_true(wg_test_run_until(&fx->loop, &g.calls, 1, 3000));
    assert_int_equal(wg_store_transition(fx->st, "tied", WG_SESSION_ANY, WG_SESSION_RUNNING, &u,
                                         NULL, got_cb, &g),
                     0);
    assert_true(wg_test_run_until(&fx->loop, &g.calls, 2, 3000));
    ready(fx, "tied", &v);
    assert_string_equal(v.container_id, CID_A);
    assert_true(v.confirmed);

    /* Same address, another container: the message carries it (cid). */
    u.set = WG_SF_CONTAINER_ID;
    u.container_id = CID_B;
    assert_int_equal(wg_store_update(fx->st, "tied", WG_SESSION_ANY, &u, got_cb, &g), 0);
    assert_true(wg_test_run_until(&fx->loop, &g.calls, 3, 3000));
    for (int i = 0; i < 100 && gone.calls == 0; i++)
        wg_test_run_for(&fx->loop, 10);
    assert_int_equal(gone.calls, 1);
    assert_string_equal(gone.ip, "127.0.0.1");
    wg_session_cache_lookup(fx->s, "tied", 0, &v);
    assert_int_equal(v.status, WG_SESS_READY);
    assert_string_equal(v.container_id, CID_B);
    assert_true(v.confirmed);

    /* The state channel goes: unconfirmed, then nothing past the grace. */
    on_sub_state(NULL, false, "test", fx->s);
    assert_int_equal(log_count(fx, "state channel lost"), 1);
    wg_session_cache_lookup(fx->s, "tied", 0, &v);
    assert_int_equal(v.status, WG_SESS_READY);
    assert_false(v.confirmed);
    assert_string_equal(v.container_id, CID_B);
    assert_non_null(v.entry);
    fx->cfg.redis_outage_grace_ms = 0;
    wg_session_cache_lookup(fx->s, "tied", 0, &v);
    assert_int_equal(v.status, WG_SESS_UNAVAILABLE);
    assert_null(v.entry);
    close_all(fx);
}

/* Versions never go back, except after a resync: a failover may have lost
 * the writes behind the version the cache holds. Then the cache re-reads
 * every record it holds, takes what Redis says, and logs and counts each
 * session whose version went back. */
static void test_version_back_after_resync(void **state)
{
    struct fx *fx = *state;
    struct wg_session_update u = {.set = WG_SF_HOST | WG_SF_IP | WG_SF_PORT | WG_SF_CONTAINER_ID,
                                  .host = "h1",
                                  .ip = "127.0.0.1",
                                  .port = 9,
                                  .container_id = CID_A};
    struct wg_redis_msg sub = {
        .kind = WG_REDIS_SUBSCRIBED, .channel = "wg:state", .channel_len = 8};
    struct wg_sess_view v;
    struct got g = {0};
    struct wg_sess_entry *e;
    uint64_t redis_v;

    assert_int_equal(wg_store_create(fx->st, "vb", NULL, NULL, got_cb, &g), 0);
    assert_true(wg_test_run_until(&fx->loop, &g.calls, 1, 3000));
    assert_int_equal(
        wg_store_transition(fx->st, "vb", WG_SESSION_ANY, WG_SESSION_RUNNING, &u, NULL, got_cb, &g),
        0);
    assert_true(wg_test_run_until(&fx->loop, &g.calls, 2, 3000));
    ready(fx, "vb", &v);
    e = find(fx->s, "vb");
    assert_non_null(e);
    redis_v = e->version;
    /* The cache saw writes that Redis has since lost. */
    e->version = redis_v + 5;

    /* An older message outside a resync is ignored. */
    u.set = WG_SF_CONTAINER_ID;
    u.container_id = CID_B;
    assert_int_equal(wg_store_update(fx->st, "vb", WG_SESSION_ANY, &u, got_cb, &g), 0);
    assert_true(wg_test_run_until(&fx->loop, &g.calls, 3, 3000));
    wg_test_run_for(&fx->loop, 50);
    assert_int_equal(e->version, redis_v + 5);
    assert_string_equal(e->container_id, CID_A);
    assert_int_equal(fx->s->stats.versions_lost, 0);

    /* A resync: the record is read again at once, without a request. */
    on_state_msg(&sub, fx->s);
    for (int i = 0; i < 300 && e->stale; i++)
        wg_test_run_for(&fx->loop, 10);
    assert_false(e->stale);
    assert_int_equal(e->version, redis_v + 1);
    assert_string_equal(e->container_id, CID_B);
    assert_int_equal(fx->s->stats.versions_lost, 1);
    assert_int_equal(log_count(fx, "lost in failover"), 1);
    wg_session_cache_lookup(fx->s, "vb", 0, &v);
    assert_int_equal(v.status, WG_SESS_READY);
    assert_true(v.confirmed);
    close_all(fx);
}

/* The cache's own checks keep the channel confirmed; when one sent comes
 * not back within redis.state_timeout, running entries are unconfirmed and
 * the gateway is not ready, until one comes back. A check that could not
 * be sent at all is no silence of the channel, for three timeouts. */
static void test_silent_channel(void **state)
{
    struct fx *fx = *state;
    struct wg_sess_view v;

    make_running(fx, "quiet");
    ready(fx, "quiet", &v);
    assert_true(v.confirmed);
    wg_test_run_for(&fx->loop, 1000); /* checks come and go */
    assert_true(wg_session_cache_connected(fx->s));
    wg_session_cache_lookup(fx->s, "quiet", 0, &v);
    assert_int_equal(v.status, WG_SESS_READY);
    assert_true(v.confirmed);
    assert_int_equal(log_count(fx, "state channel silent"), 0);

    /* No check goes out (here: one seems forever on its way, sent long
     * before the last confirmation): still live, for three timeouts. */
    fx->s->check_inflight = true;
    fx->s->check_sent_ms = 1;
    wg_test_run_for(&fx->loop, 300);
    assert_true(wg_session_cache_connected(fx->s));
    /* A check Redis took whose message never comes back (a subscriber that
     * a partition silenced; no other check goes out meanwhile): silent
     * once it is state_timeout old. */
    fx->s->check_unanswered_ms = uv_now(&fx->loop);
    wg_test_run_for(&fx->loop, 700);
    assert_false(wg_session_cache_connected(fx->s));
    assert_int_equal(log_count(fx, "state channel silent"), 1);
    wg_session_cache_lookup(fx->s, "quiet", 0, &v);
    assert_int_equal(v.status, WG_SESS_READY);
    assert_false(v.confirmed);
    assert_true(v.unconfirmed_ms >= 400);
    wg_session_cache_lookup(fx->s, "unseen", 0, &v);
    assert_int_equal(v.status, WG_SESS_UNAVAILABLE);

    /* Checks go out and come back again. */
    fx->s->check_unanswered_ms = 0;
    fx->s->check_inflight = false;
    for (int i = 0; i < 100 && !wg_session_cache_connected(fx->s); i++)
        wg_test_run_for(&fx->loop, 10);
    assert_true(wg_session_cache_connected(fx->s));
    assert_int_equal(log_count(fx, "state channel delivers again"), 1);
    wg_session_cache_lookup(fx->s, "quiet", 0, &v);
    assert_true(v.confirmed);
    close_all(fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_requests_batched, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_exchange, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_keeps_marks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streams_left, setup, teardown),
        cmocka_unit_test_setup_teardown(test_entry_tied_to_container, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_channel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version_back_after_resync, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
