/* test/unit/test_http.c - the HTTP head module (common/http_head: the head
 * scanner, the strict parser with the checks of PROXY-RULES.md) and the
 * proxy's head rebuilders (proxy/http_rebuild). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "http_fixture.h"
#include "proxy/http_rebuild.h"

static int req_status(const char *raw)
{
    struct wg_test_http ps;
    return wg_test_http_parse(&ps, raw, false);
}

static void test_scan_rules(void **state)
{
    (void)state;
    /* PROXY-RULES: obs-fold, empty names and bare LF are 400 */
    assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a\r\n Content-Length: 3\r\n\r\n"), 400);
    assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n"), 400);
    assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n"), 400);
    assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a\r\n\n"), 400);
    assert_int_equal(req_status("GET / HTTP/1.1\nHost: a\r\n\r\n"), 400);
    assert_int_equal(req_status("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    /* strict llhttp: bare CR, space before colon */
    assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"), 400);
    assert_int_equal(req_status("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), 400);
    /* incomplete */
    assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a\r\n"), -1);
    assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
}

/* RFC 9112 section 3: the request line's shape, checked by the scanner. */
static void test_request_line(void **state)
{
    static const struct {
        const char *raw;
        int status;
    } rows[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0},
        {"M-SEARCH * HTTP/1.1\r\nHost: a\r\n\r\n", 400}, /* "*" is for OPTIONS only */
        {"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 0},
        {"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400},
        {"GET / HTTP/1\r\nHost: a\r\n\r\n", 400},
        {"GET / http/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET /\r\nHost: a\r\n\r\n", 400},
        {"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400},
        {"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
        {"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505},
        {"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET /a%00 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET /a%20b HTTP/1.1\r\nHost: a\r\n\r\n", 0},
        {"GET /s/a/../b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET /s/a/./b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET /.. HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET /a/%2e%2E/b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET /a/.%2e HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET /a..b/...x/.git/a. HTTP/1.1\r\nHost: a\r\n\r\n", 0},
        {"GET /a?p=../x HTTP/1.1\r\nHost: a\r\n\r\n", 0},
        {"GET /a\\b HTTP/1.1\r\nHost: a\r\n\r\n", 400},          /* backslash in the path */
        {"GET /a?q=a\\b HTTP/1.1\r\nHost: a\r\n\r\n", 0},        /* ... in the query: passes */
        {"GET /a%0d%0aX:%20y HTTP/1.1\r\nHost: a\r\n\r\n", 400}, /* encoded CR LF in the path */
        {"GET /a%1F HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET /a%7f HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET /a?t=l1%0D%0Al2 HTTP/1.1\r\nHost: a\r\n\r\n", 0}, /* line breaks in the query */
        {"GET /a%20b%2F%7E%30 HTTP/1.1\r\nHost: a\r\n\r\n", 0},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: a/b\r\ncontent-type: c/d\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: A\r\nAuthorization: B\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: A\r\nContent-Type: a/b\r\n\r\n", 0},
        {"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA / HTTP/1.1\r\nHost: a\r\n\r\n", 400}, /* 33 */
        {"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 400}, /* still arriving */
        {"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", -1},   /* 32: may still end well */
        {"GET / HTTP/1.1\r\nHost:\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nx_forwarded_for: 1.2.3.4\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nX_Api_Key: 1\r\n\r\n", 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int got = req_status(rows[i].raw);
        if (got != rows[i].status)
            fail_msg("row %zu (%s): got %d, want %d", i, rows[i].raw, got, rows[i].status);
    }
}

static void test_scan_limits(void **state)
{
    (void)state;
    static char big[40000];
    struct wg_http_scan scan;
    size_t hl;

    /* request line over 8 KiB: 414, even before it ends */
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET /", 5);
    wg_http_scan_reset(&scan, false);
    assert_int_equal(wg_http_scan(&scan, big, 9000, &wg_test_http_limits, &hl), 414);

    /* one header line over 8 KiB: 431 */
    char *p = big;
    p += sprintf(p, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ");
    memset(p, 'b', 8300);
    p += 8300;
    p += sprintf(p, "\r\n\r\n");
    assert_int_equal(req_status(big), 431);

    /* 101 fields: 431 */
    p = big;
    p += sprintf(p, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < 100; i++)
        p += sprintf(p, "X-%d: v\r\n", i);
    p += sprintf(p, "\r\n");
    assert_int_equal(req_status(big), 431);

    /* whole head over 32 KiB with lines under the line limit: 431 */
    p = big;
    p += sprintf(p, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < 5; i++) {
        p += sprintf(p, "X-%d: ", i);
        memset(p, 'c', 7000);
        p += 7000;
        p += sprintf(p, "\r\n");
    }
    p += sprintf(p, "\r\n");
    assert_int_equal(req_status(big), 431);

    /* incremental scanning gives the same answer as one call */
    const char *raw = "GET /x HTTP/1.1\r\nHost: a\r\nA: b\r\n\r\n";
    wg_http_scan_reset(&scan, false);
    size_t n = strlen(raw);
    int r = WG_HTTP_SCAN_MORE;
    for (size_t i = 1; i <= n && r == WG_HTTP_SCAN_MORE; i++)
        r = wg_http_scan(&scan, raw, i, &wg_test_http_limits, &hl);
    assert_int_equal(r, WG_HTTP_SCAN_DONE);
    assert_int_equal(hl, n);
}

static void test_request_rules(void **state)
{
    (void)state;
    /* Transfer-Encoding */
    assert_int_equal(req_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
                     0);
    assert_int_equal(
        req_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n"),
        400);
    assert_int_equal(
        req_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 501);
    assert_int_equal(req_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
                                "chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
                     400);
    assert_int_equal(req_status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
    /* llhttp strict: CL with TE, two CLs, malformed CL */
    assert_int_equal(req_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: "
                                "3\r\nTransfer-Encoding: chunked\r\n\r\n"),
                     400);
    assert_int_equal(
        req_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
        400);
    assert_int_equal(req_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3x\r\n\r\n"), 400);
    /* versions */
    assert_int_equal(req_status("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
    assert_int_not_equal(req_status("GET /\r\n\r\n"), 0);
    /* targets and methods */
    assert_int_equal(req_status("GET http://host/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(req_status("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"), 405);
    assert_int_equal(req_status("TRACE / HTTP/1.1\r\nHost: a\r\n\r\n"), 405);
    assert_int_equal(req_status("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
    assert_int_equal(req_status("GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    /* Host */
    assert_int_equal(req_status("GET / HTTP/1.1\r\n\r\n"), 400);
    assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
    assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n"), 400);
    assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
    assert_int_equal(req_status("GET / HTTP/1.0\r\n\r\n"), 0);
    assert_int_equal(req_status("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"), 0);
    /* Expect */
    assert_int_equal(
        req_status(
            "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"),
        0);
    assert_int_equal(
        req_status("PUT / HTTP/1.1\r\nHost: a\r\nExpect: something\r\nContent-Length: 1\r\n\r\n"),
        417);
    /* WebSocket */
    assert_int_equal(
        req_status(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
        400);
    struct wg_test_http ps;
    assert_int_equal(
        wg_test_http_parse(&ps,
                           "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, "
                           "Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
                           false),
        0);
    assert_true(ps.msg.upgrade_websocket);
}

static void test_request_facts(void **state)
{
    (void)state;
    struct wg_test_http ps;
    assert_int_equal(
        wg_test_http_parse(
            &ps,
            "POST /p?q HTTP/1.1\r\nHost: h:1\r\nContent-Length: 12\r\nExpect: 100-Continue\r\n\r\n",
            false),
        0);
    assert_true(ps.msg.has_content_length);
    assert_int_equal(ps.msg.content_length, 12);
    assert_true(ps.msg.expect_continue);
    assert_false(ps.msg.conn_close);
    assert_int_equal(ps.msg.host_len, 3);
    assert_memory_equal(ps.msg.target, "/p?q", 4);

    assert_int_equal(wg_test_http_parse(&ps, "GET / HTTP/1.0\r\n\r\n", false), 0);
    assert_true(ps.msg.conn_close); /* 1.0 without keep-alive */
    assert_int_equal(
        wg_test_http_parse(&ps, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", false), 0);
    assert_false(ps.msg.conn_close);
    assert_int_equal(
        wg_test_http_parse(&ps, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false),
        0);
    assert_true(ps.msg.conn_close);
    assert_true(ps.msg.complete); /* no body: the message ends with the head */
    /* Expect on 1.0 is ignored: never a 1xx to a 1.0 client */
    assert_int_equal(
        wg_test_http_parse(
            &ps, "PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", false),
        0);
    assert_false(ps.msg.expect_continue);
}

static const char *find(const char *hay, size_t n, const char *needle)
{
    return memmem(hay, n, needle, strlen(needle));
}

static void test_request_rebuild(void **state)
{
    (void)state;
    struct wg_test_http ps;
    struct wg_buf out;
    struct sockaddr_in peer = {.sin_family = AF_INET};
    inet_pton(AF_INET, "10.1.2.3", &peer.sin_addr);
    wg_buf_init(&out, 1 << 16);

    assert_int_equal(
        wg_test_http_parse(
            &ps,
            "POST /x HTTP/1.1\r\nHost: a.example\r\nConnection: close, X-Forwarded-For, "
            "X-Secret\r\n"
            "X-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nTrailer: X\r\nProxy-Connection: x\r\n"
            "Upgrade: h2c\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\nForwarded: "
            "for=x\r\n"
            "X-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nTransfer-Encoding: chunked\r\n"
            "Expect: 100-continue\r\nX-Keep:  v  \r\n\r\n",
            false),
        0);
    struct wg_http_request_out o = {
        .target = ps.msg.target,
        .target_len = ps.msg.target_len,
        .peer = (struct sockaddr *)&peer,
        .framing = WG_HTTP_FRAME_CHUNKED,
    };
    assert_int_equal(wg_http_request_rebuild(&ps.msg, &o, &out), 0);
    const char *h = wg_buf_head(&out);
    size_t n = wg_buf_size(&out);
    const char *want =
        "POST /x HTTP/1.1\r\nHost: a.example\r\nX-Keep: v\r\nX-Forwarded-For: 10.1.2.3\r\n"
        "X-Forwarded-Host: a.example\r\nX-Forwarded-Proto: http\r\nTransfer-Encoding: "
        "chunked\r\n\r\n";
    assert_int_equal(n, strlen(want));
    assert_memory_equal(h, want, n);

    /* a trusted peer: its X-Forwarded-* are kept and extended */
    wg_buf_reset(&out);
    assert_int_equal(
        wg_test_http_parse(&ps,
                           "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\n"
                           "X-Forwarded-For: 2.2.2.2\r\nX-Forwarded-Proto: https\r\n\r\n",
                           false),
        0);
    o = (struct wg_http_request_out){
        .target = "/", .target_len = 1, .peer = (struct sockaddr *)&peer, .peer_trusted = true};
    assert_int_equal(wg_http_request_rebuild(&ps.msg, &o, &out), 0);
    assert_non_null(find(wg_buf_head(&out), wg_buf_size(&out),
                         "X-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.1.2.3\r\n"));
    assert_non_null(find(wg_buf_head(&out), wg_buf_size(&out), "X-Forwarded-Proto: https\r\n"));

    /* an upgrade keeps Upgrade, a stripped prefix keeps a leading slash */
    wg_buf_reset(&out);
    assert_int_equal(wg_test_http_parse(&ps,
                                        "GET /api?x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
                                        "Upgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
                                        false),
                     0);
    o = (struct wg_http_request_out){.target = "?x",
                                     .target_len = 2,
                                     .slash_prefix = true,
                                     .peer = (struct sockaddr *)&peer,
                                     .upgrade = true};
    assert_int_equal(wg_http_request_rebuild(&ps.msg, &o, &out), 0);
    assert_memory_equal(wg_buf_head(&out), "GET /?x HTTP/1.1\r\n", 18);
    assert_non_null(find(wg_buf_head(&out), wg_buf_size(&out),
                         "Connection: upgrade\r\nUpgrade: websocket\r\n"));
    assert_non_null(find(wg_buf_head(&out), wg_buf_size(&out), "Sec-WebSocket-Key: k\r\n"));

    /* HTTP/1.0 without Host gets the upstream as Host */
    wg_buf_reset(&out);
    assert_int_equal(wg_test_http_parse(&ps, "GET / HTTP/1.0\r\n\r\n", false), 0);
    o = (struct wg_http_request_out){
        .target = "/", .target_len = 1, .peer = (struct sockaddr *)&peer, .default_host = "up:80"};
    assert_int_equal(wg_http_request_rebuild(&ps.msg, &o, &out), 0);
    assert_non_null(find(wg_buf_head(&out), wg_buf_size(&out), "\r\nHost: up:80\r\n"));
    wg_buf_release(&out);
}

static void test_response(void **state)
{
    (void)state;
    struct wg_test_http ps;
    struct wg_buf out;
    wg_buf_init(&out, 1 << 16);

    assert_int_equal(
        wg_test_http_parse(
            &ps, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            true),
        502);
    assert_int_equal(
        wg_test_http_parse(&ps, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
                           true),
        502);
    assert_int_equal(
        wg_test_http_parse(&ps, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", true), 502);
    assert_int_equal(wg_test_http_parse(&ps, "HTTP/2.0 200 OK\r\n\r\n", true), 502);

    assert_int_equal(
        wg_test_http_parse(&ps,
                           "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: X-Hop\r\n"
                           "X-Hop: 1\r\nKeep-Alive: t\r\nX-End: e\r\n\r\n",
                           true),
        0);
    assert_true(ps.msg.chunked);
    /* a 1.0 client gets no chunking: close-delimited */
    struct wg_http_response_out o = {.client_minor = 0, .framing = WG_HTTP_FRAME_CLOSE};
    assert_int_equal(wg_http_response_rebuild(&ps.msg, &o, &out), 0);
    const char *want = "HTTP/1.1 200 OK\r\nX-End: e\r\nConnection: close\r\n\r\n";
    assert_int_equal(wg_buf_size(&out), strlen(want));
    assert_memory_equal(wg_buf_head(&out), want, strlen(want));

    /* a keep-alive 1.0 client with a length hears keep-alive */
    wg_buf_reset(&out);
    o = (struct wg_http_response_out){.client_minor = 0,
                                      .framing = WG_HTTP_FRAME_LENGTH,
                                      .content_length = 7,
                                      .keep_alive = true};
    assert_int_equal(wg_http_response_rebuild(&ps.msg, &o, &out), 0);
    assert_non_null(find(wg_buf_head(&out), wg_buf_size(&out),
                         "Content-Length: 7\r\nConnection: keep-alive\r\n"));

    /* a 1xx head carries no Connection */
    wg_buf_reset(&out);
    assert_int_equal(
        wg_test_http_parse(&ps, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", true), 0);
    assert_int_equal(ps.msg.status, 103);
    o = (struct wg_http_response_out){.client_minor = 1, .keep_alive = true};
    assert_int_equal(wg_http_response_rebuild(&ps.msg, &o, &out), 0);
    want = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n";
    assert_memory_equal(wg_buf_head(&out), want, strlen(want));

    /* 101 with websocket */
    assert_int_equal(
        wg_test_http_parse(
            &ps,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            true),
        0);
    assert_true(ps.msg.upgrade_websocket);
    wg_buf_release(&out);
}

static void test_helpers(void **state)
{
    (void)state;
    assert_true(wg_http_list_has("a, Close ,b", 11, "close"));
    assert_false(wg_http_list_has("closed", 6, "close"));
    assert_true(wg_http_method_idempotent(HTTP_GET));
    assert_false(wg_http_method_idempotent(HTTP_POST));
    assert_string_equal(wg_http_reason(431), "Request Header Fields Too Large");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_rules),    cmocka_unit_test(test_request_line),
        cmocka_unit_test(test_scan_limits),   cmocka_unit_test(test_request_rules),
        cmocka_unit_test(test_request_facts), cmocka_unit_test(test_request_rebuild),
        cmocka_unit_test(test_response),      cmocka_unit_test(test_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
