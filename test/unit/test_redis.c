/* test/unit/test_redis.c - common/redis against a real redis-server.
 *
 * Each test that needs Redis starts its own redis-server on a unix socket in
 * a mkdtemp() directory and kills it by pid in the teardown, which cmocka
 * runs after a failed test too; PR_SET_PDEATHSIG covers a crash of this
 * process. A missing redis-server fails the tests: they never skip. Every
 * test ends by asserting that its loop closes with no live handle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "common/clock.h"
#include "common/log.h"
#include "loop_fixture.h"
#include "redis_fixture.h"
#include "common/redis.h"
#include "common/redis_url.h"

struct fx {
    uv_loop_t loop;
    bool loop_closed;
    struct wg_test_redis srv;
    char url[256];
    struct wg_log log;
    bool in_call; /* set around each API call: callbacks must not see it */
    int ups, downs;
    char reason[256];
};

struct result {
    struct fx *fx;
    int calls;
    int status;
    int type;
    long long integer;
    char str[512];
    size_t len;
    bool inside; /* the callback ran inside the issuing call */
    uint64_t at_ms;
};

/* ---- fixture ------------------------------------------------------------------------------ */

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
    if (uv_loop_init(&fx->loop) != 0)
        return -1;
    return wg_test_redis_start_in_tmp(&fx->srv, "redis", fx->url, sizeof(fx->url));
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

static bool run_until(struct fx *fx, const int *counter, int target, uint64_t ms)
{
    return wg_test_run_until(&fx->loop, counter, target, ms);
}

static void run_for(struct fx *fx, uint64_t ms)
{
    wg_test_run_for(&fx->loop, ms);
}

/* Frees r, runs the loop dry and checks that nothing is left on it. */
static void free_and_close(struct fx *fx, struct wg_redis *r)
{
    wg_redis_free(r);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    fx->loop_closed = true;
}

static void state_cb(struct wg_redis *r, bool connected, const char *reason, void *arg)
{
    struct fx *fx = arg;

    assert_true(wg_redis_connected(r) == connected);
    if (connected)
        fx->ups++;
    else
        fx->downs++;
    snprintf(fx->reason, sizeof(fx->reason), "%s", reason);
}

static void record_cb(int status, redisReply *reply, void *arg)
{
    struct result *res = arg;

    res->calls++;
    res->status = status;
    res->inside = res->inside || res->fx->in_call;
    res->at_ms = (uint64_t)wg_clock_mono_ms();
    if (reply) {
        res->type = reply->type;
        res->integer = reply->integer;
        res->len = reply->len < sizeof(res->str) - 1 ? reply->len : sizeof(res->str) - 1;
        if (reply->str)
            memcpy(res->str, reply->str, res->len);
        res->str[res->len] = '\0';
    } else {
        res->type = 0;
        res->str[0] = '\0';
    }
}

#define CMD(fx, r, res, ...)                                                                       \
    do {                                                                                           \
        (fx)->in_call = true;                                                                      \
        int rc_ = wg_redis_command((r), record_cb, (res), __VA_ARGS__);                            \
        (fx)->in_call = false;                                                                     \
        assert_int_equal(rc_, 0);                                                                  \
    } while (0)

static struct wg_redis *open_redis(struct fx *fx, const char *url, const struct wg_redis_opts *opts)
{
    struct wg_redis *r = NULL;

    assert_int_equal(wg_redis_new(&fx->loop, url, opts, &fx->log, &r), 0);
    assert_non_null(r);
    wg_redis_on_state(r, state_cb, fx);
    return r;
}

static struct wg_redis *open_connected(struct fx *fx, const struct wg_redis_opts *opts)
{
    int ups = fx->ups;
    struct wg_redis *r = open_redis(fx, fx->url, opts);

    assert_true(run_until(fx, &fx->ups, ups + 1, 3000));
    assert_true(wg_redis_connected(r));
    return r;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_url_check(void **state)
{
    static const char *const good[] = {
        "redis://127.0.0.1:6379/0", "redis://localhost", "redis://h:1",
        "redis://[::1]:7000/2",     "redis://h/",        "redis://:p%40ss@h:1/0",
        "redis://user:pw@h",        "REDIS://H:6380",    "unix:///tmp/r.sock",
        "unix:///tmp/r.sock?db=3",
    };
    static const char *const bad[] = {
        "",
        "http://h",
        "redis://",
        "redis://:6379",
        "redis://h:0",
        "redis://h:65536",
        "redis://h:12x",
        "redis://h/abc",
        "redis://h?db=1",
        "redis://h/1#x",
        "redis://u@h",
        "redis://:%zz@h",
        "redis://:%00@h",
        "redis://[::1",
        "rediss://h",
        "unix://relative.sock",
        "unix://",
        "unix:///p?db=x",
        "unix:///p?foo=1",
        "unix:///aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock",
        "unix:///",
        "unix:///tmp/r sock",
        "redis://h :1",
        "redis://h\t",
        "redis://:pw@h\x7f",
    };
    char err[256];
    struct wg_redis *r = NULL;
    uv_loop_t loop;
    struct wg_redis_opts opts = {.reconnect_min_ms = 500, .reconnect_max_ms = 100};

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        int rc = wg_redis_url_check(good[i], err, sizeof(err));
        if (rc != 0)
            fail_msg("%s rejected: %s", good[i], err);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        if (wg_redis_url_check(bad[i], err, sizeof(err)) != -EINVAL)
            fail_msg("%s accepted", bad[i]);
        assert_true(strlen(err) > 0);
    }
    wg_redis_url_check("rediss://h", err, sizeof(err));
    assert_non_null(strstr(err, "TLS"));
    assert_int_equal(wg_redis_url_check(NULL, err, sizeof(err)), -EINVAL);
    /* The reason never repeats the password. */
    assert_int_equal(wg_redis_url_check("redis://:s3cret@h:0", err, sizeof(err)), -EINVAL);
    assert_null(strstr(err, "s3cret"));

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(wg_redis_new(&loop, "http://x", NULL, NULL, &r), -EINVAL);
    assert_int_equal(wg_redis_new(&loop, "redis://h", &opts, NULL, &r), -EINVAL);
    assert_null(r);
    wg_redis_free(NULL);
    assert_false(wg_redis_connected(NULL));
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* What the parser takes apart: the one grammar of the configuration, the
 * connection and wakegatectl's doctor. */
static void test_url_parse(void **state)
{
    static const struct {
        const char *url;
        bool is_unix;
        const char *host_or_path;
        unsigned port;
        int db;
        const char *user, *password, *display;
    } cases[] = {
        {"redis://127.0.0.1:6379/0", false, "127.0.0.1", 6379, 0, NULL, NULL,
         "redis://127.0.0.1:6379/0"},
        {"redis://localhost", false, "localhost", 6379, 0, NULL, NULL, "redis://localhost:6379/0"},
        {"redis://h/", false, "h", 6379, 0, NULL, NULL, "redis://h:6379/0"},
        {"redis://[::1]:7000/2", false, "::1", 7000, 2, NULL, NULL, "redis://[::1]:7000/2"},
        {"redis://:p%40ss@h:1/0", false, "h", 1, 0, NULL, "p@ss", "redis://h:1/0"},
        {"redis://us%65r:pw@h", false, "h", 6379, 0, "user", "pw", "redis://user@h:6379/0"},
        {"REDIS://H:6380", false, "H", 6380, 0, NULL, NULL, "redis://H:6380/0"},
        {"redis://:@h", false, "h", 6379, 0, NULL, "", "redis://h:6379/0"},
        {"unix:///tmp/r.sock", true, "/tmp/r.sock", 0, 0, NULL, NULL, "unix:///tmp/r.sock"},
        {"unix:///tmp/r.sock?db=3", true, "/tmp/r.sock", 0, 3, NULL, NULL,
         "unix:///tmp/r.sock?db=3"},
    };
    struct wg_redis_url u;
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (wg_redis_url_parse(cases[i].url, &u, err, sizeof(err)) != 0)
            fail_msg("%s rejected: %s", cases[i].url, err);
        assert_int_equal(u.is_unix, cases[i].is_unix);
        assert_string_equal(u.is_unix ? u.path : u.host, cases[i].host_or_path);
        assert_null(u.is_unix ? u.host : u.path);
        assert_int_equal(u.port, cases[i].port);
        assert_int_equal(u.db, cases[i].db);
        if (cases[i].user)
            assert_string_equal(u.user, cases[i].user);
        else
            assert_null(u.user);
        if (cases[i].password)
            assert_string_equal(u.password, cases[i].password);
        else
            assert_null(u.password);
        assert_string_equal(u.display, cases[i].display);
        wg_redis_url_release(&u);
        assert_null(u.display);
    }
    /* A refused URL leaves nothing to release, and says why. */
    assert_int_equal(wg_redis_url_parse("redis://u:pw@h:99999", &u, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "bad port: expected 1-65535");
    assert_null(u.user);
    assert_null(u.password);
    assert_int_equal(wg_redis_url_parse("redis://u@h", &u, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "credentials must be written user:password@ or :password@");
    assert_int_equal(wg_redis_url_parse("unix:///", &u, NULL, 0), -EINVAL);
    wg_redis_url_release(&u);
}

static void test_connect_ping(void **state)
{
    struct fx *fx = *state;
    struct result ping = {.fx = fx};
    struct wg_redis *r = open_redis(fx, fx->url, NULL);

    /* Issued before the first attempt even started: held, then sent. */
    CMD(fx, r, &ping, "PING");
    assert_int_equal(ping.calls, 0);
    assert_true(run_until(fx, &ping.calls, 1, 3000));
    assert_int_equal(ping.status, 0);
    assert_int_equal(ping.type, REDIS_REPLY_STATUS);
    assert_string_equal(ping.str, "PONG");
    assert_false(ping.inside);
    assert_int_equal(fx->ups, 1);
    assert_int_equal(fx->downs, 0);
    assert_true(wg_redis_connected(r));
    free_and_close(fx, r);
    assert_int_equal(ping.calls, 1);
}

static void test_set_get(void **state)
{
    struct fx *fx = *state;
    struct result set = {.fx = fx}, get = {.fx = fx}, info = {.fx = fx}, err = {.fx = fx};
    struct result set2 = {.fx = fx}, get2 = {.fx = fx};
    char url[300];
    struct wg_redis *r;
    const char value[] = {'a', '\0', 'b'};
    const char *argv[] = {"SET", "k2", "hello world"};
    const char *argv_get[] = {"GET", "k2"};

    snprintf(url, sizeof(url), "%s?db=5", fx->url);
    r = open_redis(fx, url, NULL);
    assert_true(run_until(fx, &fx->ups, 1, 3000));

    CMD(fx, r, &set, "SET %s %b", "k1", value, sizeof(value));
    CMD(fx, r, &get, "GET %s", "k1");
    CMD(fx, r, &info, "CLIENT INFO");
    CMD(fx, r, &err, "INCR %s", "k1");
    fx->in_call = true;
    assert_int_equal(wg_redis_command_argv(r, record_cb, &set2, 3, argv, NULL), 0);
    assert_int_equal(wg_redis_command_argv(r, record_cb, &get2, 2, argv_get, NULL), 0);
    fx->in_call = false;
    assert_true(run_until(fx, &get2.calls, 1, 3000));

    assert_int_equal(set.status, 0);
    assert_string_equal(set.str, "OK");
    assert_int_equal(get.status, 0);
    assert_int_equal(get.type, REDIS_REPLY_STRING);
    assert_int_equal(get.len, 3);
    assert_memory_equal(get.str, value, 3);
    assert_non_null(strstr(info.str, " db=5 "));
    /* A Redis error is an answer: status 0, the text in the reply. */
    assert_int_equal(err.status, 0);
    assert_int_equal(err.type, REDIS_REPLY_ERROR);
    assert_non_null(strstr(err.str, "ERR"));
    assert_int_equal(set2.status, 0);
    assert_string_equal(get2.str, "hello world");
    assert_false(set.inside || get.inside || set2.inside || get2.inside);

    /* Refused synchronously; the callback never runs. */
    assert_int_equal(wg_redis_command(r, record_cb, &err, "SUBSCRIBE %s", "x"), -EINVAL);
    assert_int_equal(wg_redis_command(r, record_cb, &err, "monitor"), -EINVAL);
    assert_int_equal(wg_redis_command(r, record_cb, &err, ""), -EINVAL);
    assert_int_equal(wg_redis_command(r, record_cb, &err, "GET %q"), -EINVAL);
    assert_int_equal(wg_redis_command_argv(r, record_cb, &err, 0, argv, NULL), -EINVAL);
    run_for(fx, 20);
    assert_int_equal(err.calls, 1);
    free_and_close(fx, r);
}

#define PIPELINE 1000

struct pipe_state {
    struct fx *fx;
    int calls;
    int bad;
    long long got[PIPELINE];
};

static void incr_cb(int status, redisReply *reply, void *arg)
{
    struct pipe_state *ps = arg;

    if (status != 0 || !reply || reply->type != REDIS_REPLY_INTEGER || ps->fx->in_call)
        ps->bad++;
    else if (ps->calls < PIPELINE)
        ps->got[ps->calls] = reply->integer;
    ps->calls++;
}

static void test_pipeline(void **state)
{
    struct fx *fx = *state;
    struct pipe_state *ps = calloc(1, sizeof(*ps));
    struct wg_redis *r = open_connected(fx, NULL);
    uint64_t t0;

    assert_non_null(ps);
    ps->fx = fx;
    fx->in_call = true;
    for (int i = 0; i < PIPELINE; i++)
        assert_int_equal(wg_redis_command(r, incr_cb, ps, "INCR counter"), 0);
    fx->in_call = false;
    t0 = (uint64_t)wg_clock_mono_ms();
    assert_true(run_until(fx, &ps->calls, PIPELINE, 5000));
    assert_int_equal(ps->bad, 0);
    for (int i = 0; i < PIPELINE; i++)
        assert_int_equal(ps->got[i], i + 1);
    assert_true((uint64_t)wg_clock_mono_ms() - t0 < 2000);
    free(ps);
    free_and_close(fx, r);
}

static void test_command_timeout(void **state)
{
    struct fx *fx = *state;
    struct wg_redis_opts opts = {.name = "timeout",
                                 .command_timeout_ms = 100,
                                 .connect_timeout_ms = 3000,
                                 .reconnect_min_ms = 10,
                                 .reconnect_max_ms = 100};
    struct result slow = {.fx = fx}, behind = {.fx = fx}, set = {.fx = fx}, get = {.fx = fx};
    struct wg_redis *r = open_connected(fx, &opts);
    uint64_t t0 = (uint64_t)wg_clock_mono_ms();

    CMD(fx, r, &slow, "DEBUG SLEEP 0.5");
    CMD(fx, r, &behind, "PING");
    assert_true(run_until(fx, &behind.calls, 1, 2000));
    assert_int_equal(slow.calls, 1);
    assert_int_equal(slow.status, -ETIMEDOUT);
    /* Issued in the same turn, so it shares the deadline. */
    assert_int_equal(behind.status, -ETIMEDOUT);
    assert_true(slow.at_ms - t0 >= 90);
    assert_true(slow.at_ms - t0 < 450);
    assert_int_equal(fx->downs, 1);
    assert_non_null(strstr(fx->reason, "timed out"));
    assert_non_null(strstr(fx->reason, fx->srv.sock));

    /* The server answers again once DEBUG SLEEP ends: reconnected. */
    assert_true(run_until(fx, &fx->ups, 2, 3000));
    CMD(fx, r, &set, "SET after %s", "timeout");
    CMD(fx, r, &get, "GET after");
    assert_true(run_until(fx, &get.calls, 1, 2000));
    assert_int_equal(set.status, 0);
    assert_int_equal(get.status, 0);
    assert_string_equal(get.str, "timeout");

    /* Long after: the timed-out callbacks never ran again. */
    run_for(fx, 300);
    assert_int_equal(slow.calls, 1);
    assert_int_equal(behind.calls, 1);
    free_and_close(fx, r);
}

static void test_server_restart(void **state)
{
    struct fx *fx = *state;
    struct wg_redis_opts opts = {.reconnect_min_ms = 10, .reconnect_max_ms = 100};
    struct result before = {.fx = fx}, down = {.fx = fx}, set = {.fx = fx}, get = {.fx = fx};
    struct wg_redis *r = open_connected(fx, &opts);
    uint64_t t0;

    CMD(fx, r, &before, "PING");
    assert_true(run_until(fx, &before.calls, 1, 2000));
    assert_int_equal(before.status, 0);

    wg_test_redis_stop(&fx->srv);
    assert_true(run_until(fx, &fx->downs, 1, 2000));
    assert_false(wg_redis_connected(r));
    assert_non_null(strstr(fx->reason, fx->srv.sock));
    assert_string_equal(wg_redis_last_error(r), fx->reason);

    /* Fails fast, but never inside the call. */
    t0 = (uint64_t)wg_clock_mono_ms();
    CMD(fx, r, &down, "GET k");
    assert_int_equal(down.calls, 0);
    assert_true(run_until(fx, &down.calls, 1, 1000));
    assert_int_equal(down.status, -ENOTCONN);
    assert_false(down.inside);
    assert_true(down.at_ms - t0 < 100);
    /* Failed attempts while down are not reported again. */
    run_for(fx, 200);
    assert_int_equal(fx->downs, 1);

    assert_int_equal(wg_test_redis_start(&fx->srv), 0);
    assert_true(run_until(fx, &fx->ups, 2, 3000));
    CMD(fx, r, &set, "SET k %s", "v");
    CMD(fx, r, &get, "GET k");
    assert_true(run_until(fx, &get.calls, 1, 2000));
    assert_int_equal(set.status, 0);
    assert_string_equal(get.str, "v");
    free_and_close(fx, r);
}

/* The server dies with our command unread: the kernel resets the socket
 * (EPOLLERR, as a TCP reset would), which must count as a loss like EOF. */
static void test_server_reset(void **state)
{
    struct fx *fx = *state;
    struct wg_redis_opts opts = {.reconnect_min_ms = 10, .reconnect_max_ms = 100};
    struct result ping = {.fx = fx}, after = {.fx = fx};
    struct wg_redis *r = open_connected(fx, &opts);

    assert_int_equal(kill(fx->srv.pid, SIGSTOP), 0);
    CMD(fx, r, &ping, "PING");
    run_for(fx, 50);
    assert_int_equal(ping.calls, 0);
    wg_test_redis_stop(&fx->srv);
    assert_true(run_until(fx, &fx->downs, 1, 1000));
    assert_int_equal(ping.calls, 1);
    assert_int_equal(ping.status, -ECONNRESET);
    assert_non_null(strstr(fx->reason, "lost"));

    assert_int_equal(wg_test_redis_start(&fx->srv), 0);
    assert_true(run_until(fx, &fx->ups, 2, 3000));
    CMD(fx, r, &after, "PING");
    assert_true(run_until(fx, &after.calls, 1, 2000));
    assert_int_equal(after.status, 0);
    free_and_close(fx, r);
}

static void test_connect_timeout(void **state)
{
    struct fx *fx = *state;
    struct wg_redis_opts opts = {
        .connect_timeout_ms = 200, .reconnect_min_ms = 50, .reconnect_max_ms = 100};
    struct result ping = {.fx = fx};
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t slen = sizeof(sin);
    char url[64];
    struct wg_redis *r;
    uint64_t t0;
    int lfd;

    /* Accepts TCP connections (the kernel does) but never answers. */
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(lfd >= 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(lfd, 16), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &slen), 0);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%u/0", ntohs(sin.sin_port));

    t0 = (uint64_t)wg_clock_mono_ms();
    r = open_redis(fx, url, &opts);
    CMD(fx, r, &ping, "PING");
    assert_true(run_until(fx, &fx->downs, 1, 3000));
    assert_true((uint64_t)wg_clock_mono_ms() - t0 >= 190);
    assert_true((uint64_t)wg_clock_mono_ms() - t0 < 1500);
    assert_non_null(strstr(fx->reason, "timed out"));
    assert_non_null(strstr(fx->reason, url));
    assert_int_equal(fx->ups, 0);
    assert_false(wg_redis_connected(r));
    /* The held command failed with the attempt, not before. */
    assert_int_equal(ping.calls, 1);
    assert_int_equal(ping.status, -ENOTCONN);
    assert_true(ping.at_ms - t0 >= 190);
    /* It keeps trying and stays quiet about it. */
    run_for(fx, 400);
    assert_int_equal(fx->downs, 1);
    free_and_close(fx, r);
    close(lfd);
}

struct subs_seen {
    int subscribed;
    int messages;
    char channel[64];
    char data[64];
};

static void msg_cb(const struct wg_redis_msg *m, void *arg)
{
    struct subs_seen *ss = arg;

    snprintf(ss->channel, sizeof(ss->channel), "%.*s", (int)m->channel_len, m->channel);
    if (m->kind == WG_REDIS_SUBSCRIBED) {
        ss->subscribed++;
    } else {
        ss->messages++;
        snprintf(ss->data, sizeof(ss->data), "%.*s", (int)m->len, m->data);
    }
}

static void test_subscribe(void **state)
{
    struct fx *fx = *state;
    struct wg_redis_opts opts = {.reconnect_min_ms = 10, .reconnect_max_ms = 100};
    struct wg_redis_opts sopts = {
        .name = "pubsub", .reconnect_min_ms = 10, .reconnect_max_ms = 100};
    struct subs_seen seen = {0}, other = {0};
    struct result pub = {.fx = fx}, pub2 = {.fx = fx}, pub3 = {.fx = fx}, nope = {.fx = fx};
    struct wg_redis *r = open_connected(fx, &opts);
    struct wg_redis *sub = open_connected(fx, &sopts);

    assert_int_equal(wg_redis_subscribe(sub, "wg:test", msg_cb, &seen), 0);
    assert_int_equal(wg_redis_subscribe(sub, "wg:test", msg_cb, &seen), -EEXIST);
    assert_int_equal(wg_redis_subscribe(sub, "", msg_cb, &seen), -EINVAL);
    assert_true(run_until(fx, &seen.subscribed, 1, 2000));
    assert_string_equal(seen.channel, "wg:test");
    /* A subscriber takes no commands. */
    assert_int_equal(wg_redis_command(sub, record_cb, &nope, "PING"), -EINVAL);

    CMD(fx, r, &pub, "PUBLISH wg:test %s", "hello");
    assert_true(run_until(fx, &seen.messages, 1, 2000));
    assert_int_equal(pub.integer, 1);
    assert_string_equal(seen.data, "hello");

    /* Restart: both reconnect, and the subscriber renews its channels,
     * including one added while the server was down. */
    wg_test_redis_stop(&fx->srv);
    assert_true(run_until(fx, &fx->downs, 2, 2000));
    assert_int_equal(wg_redis_subscribe(sub, "wg:other", msg_cb, &other), 0);
    assert_int_equal(wg_test_redis_start(&fx->srv), 0);
    assert_true(run_until(fx, &seen.subscribed, 2, 3000));
    assert_true(run_until(fx, &other.subscribed, 1, 3000));
    assert_true(run_until(fx, &fx->ups, 4, 3000));
    CMD(fx, r, &pub2, "PUBLISH wg:test %s", "again");
    CMD(fx, r, &pub3, "PUBLISH wg:other %s", "too");
    assert_true(run_until(fx, &seen.messages, 2, 2000));
    assert_true(run_until(fx, &other.messages, 1, 2000));
    assert_string_equal(seen.data, "again");
    assert_string_equal(other.data, "too");
    assert_int_equal(nope.calls, 0);
    wg_redis_free(sub);
    free_and_close(fx, r);
}

static void test_free_pending(void **state)
{
    struct fx *fx = *state;
    struct result sent[6], held = {.fx = fx}, deferred = {.fx = fx}, resolving = {.fx = fx};
    struct wg_redis_opts opts = {.reconnect_min_ms = 10, .reconnect_max_ms = 50};
    struct wg_redis *r = open_connected(fx, NULL);
    char url[300];

    /* In flight: written to the server, no answer yet. */
    memset(sent, 0, sizeof(sent));
    for (int i = 0; i < 6; i++)
        sent[i].fx = fx;
    CMD(fx, r, &sent[0], "DEBUG SLEEP 0.2");
    for (int i = 1; i < 6; i++)
        CMD(fx, r, &sent[i], "PING");
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    wg_redis_free(r);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(sent[i].calls, 1);
        assert_int_equal(sent[i].status, -ECANCELED);
    }
    assert_int_equal(wg_redis_command(r, record_cb, &held, "PING"), -ECANCELED);
    wg_redis_free(r); /* idempotent until the loop runs */

    /* Held: the first attempt has not started. */
    r = open_redis(fx, fx->url, NULL);
    CMD(fx, r, &held, "PING");
    wg_redis_free(r);
    assert_int_equal(held.calls, 1);
    assert_int_equal(held.status, -ECANCELED);

    /* A deferred -ENOTCONN not yet delivered. */
    snprintf(url, sizeof(url), "unix://%s/absent.sock", fx->srv.dir);
    r = open_redis(fx, url, &opts);
    assert_true(run_until(fx, &fx->downs, 1, 2000));
    CMD(fx, r, &deferred, "PING");
    wg_redis_free(r);
    assert_int_equal(deferred.calls, 1);
    assert_int_equal(deferred.status, -ECANCELED);

    /* Most likely a name lookup in flight (localhost comes from /etc/hosts);
     * it may have finished and failed already: either way, one callback. */
    r = open_redis(fx, "redis://localhost:1/0", &opts);
    CMD(fx, r, &resolving, "PING");
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    wg_redis_free(r);
    assert_int_equal(resolving.calls, 1);
    assert_true(resolving.status == -ECANCELED || resolving.status == -ENOTCONN);

    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    fx->loop_closed = true;
    for (int i = 0; i < 6; i++)
        assert_int_equal(sent[i].calls, 1);
    assert_int_equal(held.calls + deferred.calls + resolving.calls, 3);
}

struct freer {
    struct fx *fx;
    struct wg_redis *r;
    int calls;
    int status;
};

static void free_in_reply_cb(int status, redisReply *reply, void *arg)
{
    struct freer *f = arg;

    f->calls++;
    f->status = status;
    wg_redis_free(f->r);
    wg_redis_free(f->r);
}

static void free_in_state_cb(struct wg_redis *r, bool connected, const char *reason, void *arg)
{
    struct freer *f = arg;

    f->calls++;
    if (!connected)
        wg_redis_free(r);
}

static void free_in_msg_cb(const struct wg_redis_msg *m, void *arg)
{
    struct freer *f = arg;

    f->calls++;
    if (m->kind == WG_REDIS_MESSAGE)
        wg_redis_free(f->r);
}

static void test_free_in_callbacks(void **state)
{
    struct fx *fx = *state;
    struct freer f1 = {.fx = fx}, f2 = {.fx = fx}, f3 = {.fx = fx};
    struct result rest[3], pub = {.fx = fx}, held = {.fx = fx};
    struct wg_redis *r, *sub, *lost;

    /* From a reply callback, with more replies pending behind it. */
    r = open_connected(fx, NULL);
    f1.r = r;
    assert_int_equal(wg_redis_command(r, free_in_reply_cb, &f1, "PING"), 0);
    for (int i = 0; i < 3; i++) {
        memset(&rest[i], 0, sizeof(rest[i]));
        rest[i].fx = fx;
        CMD(fx, r, &rest[i], "PING");
    }
    assert_true(run_until(fx, &f1.calls, 1, 2000));
    assert_int_equal(f1.status, 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(rest[i].calls, 1);
        assert_int_equal(rest[i].status, -ECANCELED);
    }

    /* From a message callback. */
    sub = open_connected(fx, NULL);
    r = open_connected(fx, NULL);
    f2.r = sub;
    assert_int_equal(wg_redis_subscribe(sub, "c", free_in_msg_cb, &f2), 0);
    assert_true(run_until(fx, &f2.calls, 1, 2000));
    CMD(fx, r, &pub, "PUBLISH c x");
    assert_true(run_until(fx, &f2.calls, 2, 2000));

    /* From the state callback when the server goes away, with a command
     * in flight. */
    struct wg_redis_opts lopts = {.name = "lost"};
    lost = open_connected(fx, &lopts);
    wg_redis_on_state(lost, free_in_state_cb, &f3);
    CMD(fx, lost, &held, "DEBUG SLEEP 1");
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    wg_test_redis_stop(&fx->srv);
    assert_true(run_until(fx, &f3.calls, 1, 2000));
    assert_int_equal(held.calls, 1);
    assert_int_equal(held.status, -ECONNRESET);
    free_and_close(fx, r);
}

static void test_no_server(void **state)
{
    struct fx *fx = *state;
    struct wg_redis_opts opts = {.reconnect_min_ms = 20, .reconnect_max_ms = 40};
    struct result held = {.fx = fx}, later = {.fx = fx};
    char url[300];
    struct wg_redis *r;

    snprintf(url, sizeof(url), "unix://%s/absent.sock", fx->srv.dir);
    r = open_redis(fx, url, &opts);
    CMD(fx, r, &held, "PING");
    assert_true(run_until(fx, &fx->downs, 1, 2000));
    assert_int_equal(held.calls, 1);
    assert_int_equal(held.status, -ENOTCONN);
    assert_non_null(strstr(fx->reason, "absent.sock"));
    CMD(fx, r, &later, "PING");
    assert_int_equal(later.calls, 0);
    assert_true(run_until(fx, &later.calls, 1, 500));
    assert_int_equal(later.status, -ENOTCONN);
    assert_false(held.inside || later.inside);
    wg_redis_free(r);

    /* A TCP port with nobody listening: refused, reported the same way. */
    {
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t slen = sizeof(sin);
        struct result tcp = {.fx = fx};
        int fd = socket(AF_INET, SOCK_STREAM, 0);

        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &slen), 0);
        close(fd); /* the port is now (very likely) free and closed */
        snprintf(url, sizeof(url), "redis://127.0.0.1:%u", ntohs(sin.sin_port));
        r = open_redis(fx, url, &opts);
        CMD(fx, r, &tcp, "PING");
        assert_true(run_until(fx, &fx->downs, 2, 2000));
        assert_non_null(strstr(fx->reason, "refused"));
        assert_int_equal(tcp.calls, 1);
        assert_int_equal(tcp.status, -ENOTCONN);
    }
    free_and_close(fx, r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_check),
        cmocka_unit_test(test_url_parse),
        cmocka_unit_test_setup_teardown(test_connect_ping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipeline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscribe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_in_callbacks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_server, setup, teardown),
    };

    /* WG_TEST_FILTER=test_subscribe runs one test (a glob). */
    if (getenv("WG_TEST_FILTER"))
        cmocka_set_test_filter(getenv("WG_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
