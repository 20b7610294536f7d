/* test/unit/test_probe.c - the HTTP readiness probe of orchestrator/probe.c:
 * its status-line parser and request, then the probe on a private loop
 * against a scripted loopback server (503, reset, early close, silence,
 * garbage, then 2xx/3xx). The TCP probe's own tests are in test_orch.c.
 *
 * The .c file is included to reach its static functions. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orchestrator/probe.c"

/* ---- status line ------------------------------------------------------------------------- */

static void test_status_code(void **state)
{
    static const struct {
        const char *in;
        int want;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\n", 200},
        {"HTTP/1.0 204 No Content\r\n", 204},
        {"HTTP/1.1 301 Moved Permanently\r\n", 301},
        {"HTTP/1.1 399 x", 399},
        {"HTTP/1.1 503 Service Unavailable\r\n", 503},
        {"HTTP/1.1 200\r\n", 200}, /* no reason phrase, no space */
        {"HTTP/1.1 200 ", 200},    /* decided without the rest */
        {"HTTP/1.1 101 Switching\r\n", 101},
        /* more bytes needed */
        {"", 0},
        {"H", 0},
        {"HTTP/1.", 0},
        {"HTTP/1.1 20", 0},
        {"HTTP/1.1 200", 0},
        /* not a status line */
        {"http/1.1 200 OK\r\n", -EBADMSG},
        {"HTTP/2 200\r\n", -EBADMSG},
        {"HTTP/1.x 200 OK\r\n", -EBADMSG},
        {"HTTP/1.1  200 OK\r\n", -EBADMSG},
        {"HTTP/1.1 2000 OK\r\n", -EBADMSG},
        {"HTTP/1.1 20 OK\r\n", -EBADMSG},
        {"HTTP/1.1 2x0 OK\r\n", -EBADMSG},
        {"HTTP/1.1 200\n", -EBADMSG},
        {"SSH-2.0-OpenSSH\r\n", -EBADMSG},
        {"<html>", -EBADMSG},
        {"X", -EBADMSG},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = status_code(cases[i].in, strlen(cases[i].in));

        if (got != cases[i].want)
            fail_msg("status_code(\"%s\") = %d, want %d", cases[i].in, got, cases[i].want);
    }
}

static void test_request_bytes(void **state)
{
    struct wg_probe p;

    (void)state;
    memset(&p, 0, sizeof(p));
    assert_int_equal(build_request(&p, "10.213.0.5", 8080, "/healthz?x=1"), 0);
    assert_string_equal(p.request, "GET /healthz?x=1 HTTP/1.1\r\nHost: 10.213.0.5:8080\r\n"
                                   "Connection: close\r\n\r\n");
    assert_int_equal(p.request_len, strlen(p.request));
    free(p.request);
    assert_int_equal(build_request(&p, "fd00::5", 3000, "/"), 0);
    assert_string_equal(p.request, "GET / HTTP/1.1\r\nHost: [fd00::5]:3000\r\n"
                                   "Connection: close\r\n\r\n");
    free(p.request);
}

static void test_path_valid(void **state)
{
    char long_path[WG_PROBE_HTTP_PATH_MAX + 2];

    (void)state;
    assert_true(path_valid("/"));
    assert_true(path_valid("/ready"));
    assert_true(path_valid("/a/b?c=d&e=%20"));
    assert_false(path_valid(""));
    assert_false(path_valid("ready"));
    assert_false(path_valid("/a b"));
    assert_false(path_valid("/a\r\nX: y"));
    assert_false(path_valid("/a#frag"));
    assert_false(path_valid("/caf\xc3\xa9"));
    memset(long_path, 'a', sizeof(long_path));
    long_path[0] = '/';
    long_path[WG_PROBE_HTTP_PATH_MAX] = '\0'; /* exactly the maximum */
    assert_true(path_valid(long_path));
    long_path[WG_PROBE_HTTP_PATH_MAX] = 'a';
    long_path[WG_PROBE_HTTP_PATH_MAX + 1] = '\0';
    assert_false(path_valid(long_path));
}

/* ---- a scripted server on a private loop ------------------------------------------------- */

enum how {
    ANSWER,  /* read the request, write `answer`, close */
    RESET,   /* RST at once, before reading */
    EOF_NOW, /* read the request, close without a byte */
    SILENT,  /* read the request, say nothing until the peer closes */
};

struct step {
    enum how how;
    const char *answer;
};

#define MAX_REQ 64

struct server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port;
    const struct step *steps;
    size_t nsteps;
    size_t accepted;
    char *requests[MAX_REQ]; /* what each connection sent (until the blank line) */
    size_t nreq;
    unsigned open; /* connections not yet closed */
};

struct sconn {
    uv_tcp_t tcp;
    uv_write_t w;
    struct server *s;
    const struct step *step;
    char buf[2048];
    size_t len;
    bool answered;
};

static void sconn_closed(uv_handle_t *h)
{
    struct sconn *c = h->data;

    c->s->open--;
    free(c);
}

static void sconn_close(struct sconn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, sconn_closed);
}

static void sconn_written(uv_write_t *w, int status)
{
    (void)status;
    sconn_close(w->data);
}

static void sconn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct sconn *c = h->data;

    (void)suggested;
    buf->base = c->buf + c->len;
    buf->len = sizeof(c->buf) - 1 - c->len;
}

static void sconn_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct sconn *c = st->data;
    struct server *s = c->s;

    (void)buf;
    if (nread < 0) {
        sconn_close(c); /* the probe closed (or reset) its side */
        return;
    }
    c->len += (size_t)nread;
    c->buf[c->len] = '\0';
    if (c->answered || !strstr(c->buf, "\r\n\r\n"))
        return;
    c->answered = true;
    if (s->nreq < MAX_REQ)
        s->requests[s->nreq++] = strdup(c->buf);
    switch (c->step->how) {
    case ANSWER: {
        uv_buf_t b = uv_buf_init((char *)c->step->answer, (unsigned)strlen(c->step->answer));

        c->w.data = c;
        assert_int_equal(uv_write(&c->w, st, &b, 1, sconn_written), 0);
        break;
    }
    case EOF_NOW:
        sconn_close(c);
        break;
    default:
        break; /* SILENT: keep reading until the peer goes */
    }
}

static void server_on_conn(uv_stream_t *l, int status)
{
    struct server *s = l->data;
    struct sconn *c;

    assert_int_equal(status, 0);
    c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->s = s;
    c->step = &s->steps[s->accepted < s->nsteps ? s->accepted : s->nsteps - 1];
    s->accepted++;
    uv_tcp_init(l->loop, &c->tcp);
    c->tcp.data = c;
    s->open++;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&c->tcp), 0);
    if (c->step->how == RESET) {
        assert_int_equal(uv_tcp_close_reset(&c->tcp, sconn_closed), 0);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, sconn_alloc, sconn_read);
}

static void server_start(uv_loop_t *loop, struct server *s, const struct step *steps, size_t n)
{
    struct sockaddr_in sa;
    struct sockaddr_storage got;
    int len = sizeof(got);

    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->steps = steps;
    s->nsteps = n;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    assert_int_equal(uv_tcp_bind(&s->listener, (const struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 16, server_on_conn), 0);
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &len);
    s->port = ntohs(((struct sockaddr_in *)&got)->sin_port);
}

static void server_free(struct server *s)
{
    for (size_t i = 0; i < s->nreq; i++)
        free(s->requests[i]);
    s->nreq = 0;
}

struct ctx {
    uv_loop_t *loop;
    struct server *srv;
    int calls;
    unsigned attempts;
    uint64_t at;
};

static void on_ready(int status, unsigned attempts, void *arg)
{
    struct ctx *c = arg;

    assert_int_equal(status, 0);
    c->calls++;
    c->attempts = attempts;
    c->at = uv_now(c->loop);
    /* The probe closes its attempt itself; the server's side then sees EOF. */
    uv_close((uv_handle_t *)&c->srv->listener, NULL);
}

/* Runs the loop out; every handle must be closed by then. */
static void loop_close_clean(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

/* Probes srv at /ready until ready; returns the context. */
static struct ctx run_probe(uv_loop_t *loop, struct server *srv, uint32_t interval_ms,
                            uint32_t timeout_ms)
{
    struct ctx c = {.loop = loop, .srv = srv};
    struct wg_probe *p = NULL;

    assert_int_equal(wg_probe_start_http(loop, "127.0.0.1", (uint16_t)srv->port, "/ready",
                                         interval_ms, timeout_ms, on_ready, &c, &p),
                     0);
    assert_int_equal(c.calls, 0); /* never inside the call */
    loop_close_clean(loop);
    assert_int_equal(srv->open, 0);
    return c;
}

static void test_http_ready_after_failures(void **state)
{
    static const struct step steps[] = {
        {ANSWER, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"},
        {RESET, NULL},
        {EOF_NOW, NULL},
        {ANSWER, "HTTP/1.1 404 Not Found\r\n\r\n"},
        {ANSWER, "garbage that is not HTTP\r\n"},
        {ANSWER, "HTTP/1.1 20"}, /* then closed: half a status line */
        {ANSWER, "HTTP/1.1 500 Internal Server Error\r\n\r\n"},
        {ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
    };
    uv_loop_t loop;
    struct server srv;
    char want[128];

    (void)state;
    uv_loop_init(&loop);
    server_start(&loop, &srv, steps, sizeof steps / sizeof steps[0]);
    struct ctx c = run_probe(&loop, &srv, 1, 1000);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.attempts, 8);
    assert_int_equal(srv.accepted, 8);
    /* Every request that was read is the documented one, byte for byte. */
    snprintf(want, sizeof want,
             "GET /ready HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n", srv.port);
    assert_int_equal(srv.nreq, 7); /* all but the reset one */
    for (size_t i = 0; i < srv.nreq; i++)
        assert_string_equal(srv.requests[i], want);
    server_free(&srv);
}

static void test_http_3xx_is_ready(void **state)
{
    static const struct step steps[] = {
        {ANSWER, "HTTP/1.0 302 Found\r\nLocation: /login\r\n\r\n"},
    };
    uv_loop_t loop;
    struct server srv;

    (void)state;
    uv_loop_init(&loop);
    server_start(&loop, &srv, steps, 1);
    struct ctx c = run_probe(&loop, &srv, 0, 0);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.attempts, 1);
    server_free(&srv);
}

/* A server that accepts and says nothing costs one timeout per attempt,
 * and the next attempt follows at once. */
static void test_http_silence_times_out(void **state)
{
    static const struct step steps[] = {
        {SILENT, NULL},
        {SILENT, NULL},
        {ANSWER, "HTTP/1.1 204 No Content\r\n\r\n"},
    };
    uv_loop_t loop;
    struct server srv;

    (void)state;
    uv_loop_init(&loop);
    server_start(&loop, &srv, steps, 3);
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    struct ctx c = run_probe(&loop, &srv, 500, 40);
    assert_int_equal(c.attempts, 3);
    assert_true(c.at - t0 >= 75); /* two timeouts of 40 ms */
    assert_true(c.at - t0 < 400); /* and no 500 ms interval after them */
    server_free(&srv);
}

/* A refused or failed attempt waits for the interval before the next. */
static void test_http_failure_waits_interval(void **state)
{
    static const struct step steps[] = {
        {ANSWER, "HTTP/1.1 503 x\r\n\r\n"},
        {ANSWER, "HTTP/1.1 503 x\r\n\r\n"},
        {ANSWER, "HTTP/1.1 200 OK\r\n\r\n"},
    };
    uv_loop_t loop;
    struct server srv;

    (void)state;
    uv_loop_init(&loop);
    server_start(&loop, &srv, steps, 3);
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    struct ctx c = run_probe(&loop, &srv, 60, 1000);
    assert_int_equal(c.attempts, 3);
    assert_true(c.at - t0 >= 115); /* two intervals of 60 ms */
    server_free(&srv);
}

static void stop_it(uv_timer_t *t)
{
    struct wg_probe **pp = t->data;

    wg_probe_stop(*pp);
    uv_close((uv_handle_t *)t, NULL);
}

static void never_ready(int status, unsigned attempts, void *arg)
{
    (void)status;
    (void)attempts;
    (void)arg;
    fail_msg("a stopped probe called back");
}

/* Stopped while an attempt waits for the status line: no callback, and the
 * attempt's socket (with its write and read) closes with the loop. */
static void test_http_stop_mid_attempt(void **state)
{
    static const struct step steps[] = {{SILENT, NULL}};
    uv_loop_t loop;
    uv_timer_t stopper;
    struct server srv;
    struct wg_probe *p = NULL;

    (void)state;
    uv_loop_init(&loop);
    server_start(&loop, &srv, steps, 1);
    assert_int_equal(wg_probe_start_http(&loop, "127.0.0.1", (uint16_t)srv.port, "/", 5, 10000,
                                         never_ready, NULL, &p),
                     0);
    uv_timer_init(&loop, &stopper);
    stopper.data = &p;
    uv_timer_start(&stopper, stop_it, 50, 0);
    while (uv_is_active((uv_handle_t *)&stopper))
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(srv.accepted, 1);
    uv_close((uv_handle_t *)&srv.listener, NULL);
    loop_close_clean(&loop);
    assert_int_equal(srv.open, 0);
    server_free(&srv);
}

static void test_http_bad_args(void **state)
{
    uv_loop_t loop;
    struct wg_probe *p = NULL;

    (void)state;
    uv_loop_init(&loop);
    assert_int_equal(wg_probe_start_http(&loop, "127.0.0.1", 80, NULL, 0, 0, never_ready, NULL, &p),
                     -EINVAL);
    assert_int_equal(
        wg_probe_start_http(&loop, "127.0.0.1", 80, "ready", 0, 0, never_ready, NULL, &p), -EINVAL);
    assert_int_equal(
        wg_probe_start_http(&loop, "127.0.0.1", 80, "/a\r\nb", 0, 0, never_ready, NULL, &p),
        -EINVAL);
    assert_int_equal(wg_probe_start_http(&loop, "not-an-ip", 80, "/", 0, 0, never_ready, NULL, &p),
                     -EINVAL);
    assert_int_equal(wg_probe_start_http(&loop, "127.0.0.1", 0, "/", 0, 0, never_ready, NULL, &p),
                     -EINVAL);
    loop_close_clean(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_code),
        cmocka_unit_test(test_request_bytes),
        cmocka_unit_test(test_path_valid),
        cmocka_unit_test(test_http_ready_after_failures),
        cmocka_unit_test(test_http_3xx_is_ready),
        cmocka_unit_test(test_http_silence_times_out),
        cmocka_unit_test(test_http_failure_waits_interval),
        cmocka_unit_test(test_http_stop_mid_attempt),
        cmocka_unit_test(test_http_bad_args),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
