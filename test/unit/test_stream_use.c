/* test/unit/test_stream_use.c - proxy/stream_use: WebSocket frame headers
 * read in every split, every length form, masked and not, garbage refused
 * without a crash; the rule of use; server-sent events versus comment
 * heartbeats. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "proxy/stream_use.h"

#define FRAMES_MAX 64

struct seen {
    struct wg_ws_frame f[FRAMES_MAX];
    size_t n;
};

static void on_frame(void *arg, const struct wg_ws_frame *f)
{
    struct seen *s = arg;
    if (s->n < FRAMES_MAX)
        s->f[s->n++] = *f;
}

/* Appends one frame with a payload of len bytes of 'x' (masked with a key
 * when mask). Returns the new size. */
static size_t put_frame(unsigned char *buf, size_t at, int fin, int opcode, int mask, uint64_t len)
{
    unsigned char *p = buf + at;
    *p++ = (unsigned char)((fin ? 0x80 : 0) | opcode);
    unsigned char m = mask ? 0x80 : 0;
    if (len < 126) {
        *p++ = (unsigned char)(m | len);
    } else if (len < 65536) {
        *p++ = m | 126;
        *p++ = (unsigned char)(len >> 8);
        *p++ = (unsigned char)len;
    } else {
        *p++ = m | 127;
        for (int i = 7; i >= 0; i--)
            *p++ = (unsigned char)(len >> (8 * i));
    }
    if (mask) {
        memcpy(p, "\x11\x22\x33\x44", 4);
        p += 4;
    }
    memset(p, 'x', (size_t)len);
    p += len;
    return (size_t)(p - buf);
}

/* A stream of frames of every length form, masked and not, with control
 * frames between the fragments of a message. */
static size_t sample(unsigned char *buf, int mask)
{
    size_t n = 0;
    n = put_frame(buf, n, 1, WG_WS_TEXT, mask, 5);
    n = put_frame(buf, n, 1, WG_WS_PING, mask, 0);
    n = put_frame(buf, n, 0, WG_WS_BINARY, mask, 125);
    n = put_frame(buf, n, 1, WG_WS_PONG, mask, 4);
    n = put_frame(buf, n, 0, WG_WS_CONT, mask, 126);
    n = put_frame(buf, n, 1, WG_WS_CONT, mask, 65535);
    n = put_frame(buf, n, 1, WG_WS_BINARY, mask, 65536);
    n = put_frame(buf, n, 1, WG_WS_TEXT, mask, 0);
    n = put_frame(buf, n, 1, WG_WS_CLOSE, mask, 2);
    return n;
}

static void check_sample(const struct seen *s, int mask)
{
    static const struct {
        uint8_t op;
        bool fin;
        uint64_t len;
    } want[] = {
        {WG_WS_TEXT, true, 5},       {WG_WS_PING, true, 0},    {WG_WS_BINARY, false, 125},
        {WG_WS_PONG, true, 4},       {WG_WS_CONT, false, 126}, {WG_WS_CONT, true, 65535},
        {WG_WS_BINARY, true, 65536}, {WG_WS_TEXT, true, 0},    {WG_WS_CLOSE, true, 2},
    };
    assert_int_equal(s->n, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < s->n; i++) {
        assert_int_equal(s->f[i].opcode, want[i].op);
        assert_int_equal(s->f[i].fin, want[i].fin);
        assert_int_equal(s->f[i].len, want[i].len);
        assert_int_equal(s->f[i].masked, mask != 0);
    }
}

static unsigned char *sample_buf(void)
{
    unsigned char *buf = malloc(200000);
    assert_non_null(buf);
    return buf;
}

static void test_ws_whole(void **state)
{
    (void)state;
    unsigned char *buf = sample_buf();
    for (int mask = 0; mask <= 1; mask++) {
        struct wg_ws_parser p = {0};
        struct seen s = {0};
        size_t n = sample(buf, mask);
        assert_int_equal(wg_ws_feed(&p, (char *)buf, n, on_frame, &s), 0);
        check_sample(&s, mask);
        assert_true(wg_ws_at_boundary(&p));
    }
    free(buf);
}

/* Every split point of the stream in two, and byte by byte. */
static void test_ws_split(void **state)
{
    (void)state;
    unsigned char *buf = sample_buf();
    for (int mask = 0; mask <= 1; mask++) {
        size_t n = sample(buf, mask);
        /* Payloads are skipped by count, so every cut is cheap. */
        for (size_t cut = 0; cut <= n; cut++) {
            struct wg_ws_parser p = {0};
            struct seen s = {0};
            assert_int_equal(wg_ws_feed(&p, (char *)buf, cut, on_frame, &s), 0);
            assert_int_equal(wg_ws_feed(&p, (char *)buf + cut, n - cut, on_frame, &s), 0);
            check_sample(&s, mask);
        }
        struct wg_ws_parser p = {0};
        struct seen s = {0};
        for (size_t i = 0; i < n; i++)
            assert_int_equal(wg_ws_feed(&p, (char *)buf + i, 1, on_frame, &s), 0);
        check_sample(&s, mask);
        assert_true(wg_ws_at_boundary(&p));
    }
    free(buf);
}

static void test_ws_boundary(void **state)
{
    (void)state;
    unsigned char buf[64];
    struct wg_ws_parser p = {0};
    size_t n = put_frame(buf, 0, 1, WG_WS_TEXT, 1, 10);

    assert_true(wg_ws_at_boundary(&p));
    wg_ws_feed(&p, (char *)buf, 1, NULL, NULL); /* half a header */
    assert_false(wg_ws_at_boundary(&p));
    wg_ws_feed(&p, (char *)buf + 1, 8, NULL, NULL); /* header, part of the payload */
    assert_false(wg_ws_at_boundary(&p));
    wg_ws_feed(&p, (char *)buf + 9, n - 9, NULL, NULL);
    assert_true(wg_ws_at_boundary(&p));
}

static int feed_bytes(const char *b, size_t n)
{
    struct wg_ws_parser p = {0};
    struct seen s = {0};
    return wg_ws_feed(&p, b, n, on_frame, &s);
}

static void test_ws_garbage(void **state)
{
    (void)state;
    /* A reserved opcode, a fragmented ping, a long ping, a continuation with
     * no message, a new message inside one, a 64-bit length with its top
     * bit set, and plain HTTP. */
    assert_int_equal(feed_bytes("\x83\x00", 2), WG_WS_BAD);
    assert_int_equal(feed_bytes("\x8b\x00", 2), WG_WS_BAD);
    assert_int_equal(feed_bytes("\x09\x00", 2), WG_WS_BAD);
    assert_int_equal(feed_bytes("\x89\x7e\x00\x7e", 4), WG_WS_BAD);
    assert_int_equal(feed_bytes("\x80\x00", 2), WG_WS_BAD);
    assert_int_equal(feed_bytes("\x01\x00\x81\x00", 4), WG_WS_BAD);
    assert_int_equal(feed_bytes("\x82\x7f\x80\x00\x00\x00\x00\x00\x00\x00", 10), WG_WS_BAD);
    assert_int_equal(feed_bytes("GET / HTTP/1.1\r\n\r\n", 18), WG_WS_BAD);

    /* Sticky: nothing more is parsed, nothing is called. */
    struct wg_ws_parser p = {0};
    struct seen s = {0};
    assert_int_equal(wg_ws_feed(&p, "\x83\x00", 2, on_frame, &s), WG_WS_BAD);
    assert_int_equal(wg_ws_feed(&p, "\x81\x00", 2, on_frame, &s), WG_WS_BAD);
    assert_int_equal(s.n, 0);
    assert_false(wg_ws_at_boundary(&p));

    /* Random bytes never crash and never read past what they were given. */
    unsigned seed = 12345;
    for (int round = 0; round < 2000; round++) {
        unsigned char r[257];
        size_t n = (size_t)(round % 257);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            r[i] = (unsigned char)(seed >> 16);
        }
        unsigned char *copy = malloc(n ? n : 1);
        memcpy(copy, r, n);
        struct wg_ws_parser q = {0};
        size_t half = n / 3;
        int a = wg_ws_feed(&q, (char *)copy, half, on_frame, &s);
        int b = wg_ws_feed(&q, (char *)copy + half, n - half, on_frame, &s);
        assert_true(a == 0 || a == WG_WS_BAD);
        assert_true(b == 0 || b == WG_WS_BAD);
        assert_true(a == 0 || b == WG_WS_BAD);
        free(copy);
        s.n = 0;
    }
}

static struct wg_ws_frame frame(uint8_t op, bool fin, uint64_t len)
{
    struct wg_ws_frame f = {.opcode = op, .fin = fin, .len = len};
    return f;
}

static void test_ws_counts(void **state)
{
    (void)state;
    struct wg_ws_use u = {0};
    struct wg_ws_frame f;

    /* Control frames never count, whatever their size or rhythm. */
    f = frame(WG_WS_PING, true, 125);
    assert_false(wg_ws_frame_counts(&u, &f, 1000, 16));
    assert_false(wg_ws_frame_counts(&u, &f, 1001, 16));
    f = frame(WG_WS_PONG, true, 125);
    assert_false(wg_ws_frame_counts(&u, &f, 1002, 16));
    f = frame(WG_WS_CLOSE, true, 2);
    assert_false(wg_ws_frame_counts(&u, &f, 1003, 16));
    /* Data above the heartbeat size counts. */
    f = frame(WG_WS_TEXT, true, 17);
    assert_true(wg_ws_frame_counts(&u, &f, 2000, 16));
    /* {"type":"ping"} every 30 s: heartbeats. */
    f = frame(WG_WS_TEXT, true, 15);
    assert_false(wg_ws_frame_counts(&u, &f, 10000, 16));
    assert_false(wg_ws_frame_counts(&u, &f, 40000, 16));
    assert_false(wg_ws_frame_counts(&u, &f, 70000, 16));
    /* Keystrokes: small frames in a burst count from the second. */
    f = frame(WG_WS_BINARY, true, 2);
    assert_false(wg_ws_frame_counts(&u, &f, 100000, 16));
    assert_true(wg_ws_frame_counts(&u, &f, 100150, 16));
    assert_true(wg_ws_frame_counts(&u, &f, 100300, 16));
    /* A message in small fragments counts once it is over the size. */
    struct wg_ws_use v = {0};
    f = frame(WG_WS_TEXT, false, 10);
    assert_false(wg_ws_frame_counts(&v, &f, 5000, 16));
    f = frame(WG_WS_CONT, false, 10);
    assert_true(wg_ws_frame_counts(&v, &f, 5001, 16));
    f = frame(WG_WS_PING, true, 0); /* between fragments */
    assert_false(wg_ws_frame_counts(&v, &f, 5002, 16));
    f = frame(WG_WS_CONT, true, 1);
    assert_true(wg_ws_frame_counts(&v, &f, 5003, 16));
    /* ... and the next message starts from zero. */
    f = frame(WG_WS_TEXT, true, 3);
    assert_false(wg_ws_frame_counts(&v, &f, 9000, 16));
    /* Heartbeat size 0: every data frame counts. */
    struct wg_ws_use w = {0};
    f = frame(WG_WS_TEXT, true, 1);
    assert_true(wg_ws_frame_counts(&w, &f, 1, 0));
}

static bool sse(struct wg_sse_scan *s, const char *text)
{
    return wg_sse_feed(s, text, strlen(text), 16);
}

static void test_sse(void **state)
{
    (void)state;
    struct wg_sse_scan s = {0};

    /* Comment heartbeats, however long, never count. */
    assert_false(sse(&s, ": ping\n\n"));
    assert_false(sse(&s, ":aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n"));
    assert_false(sse(&s, ":\r:\r\r"));
    /* A tiny event is a heartbeat too. */
    assert_false(sse(&s, "data: {}\n\n"));
    /* An event with more than 16 bytes of fields counts. */
    assert_true(sse(&s, "event: update\ndata: {\"x\": 12345}\n\n"));
    /* Split anywhere: the line state carries over. */
    assert_false(sse(&s, ": keep"));
    assert_false(sse(&s, "alive, still a comment of some length\n"));
    assert_false(sse(&s, "\n"));
    assert_false(sse(&s, "data: 0123"));
    assert_true(sse(&s, "456789abcdef\n\n"));
    /* CRLF line ends: the LF after a CR is no empty line. */
    struct wg_sse_scan t = {0};
    assert_false(sse(&t, "data: 01234\r"));
    assert_true(sse(&t, "\ndata: 567890\r\n\r\n"));
    assert_false(sse(&t, "data: x\r\n\r\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ws_whole),    cmocka_unit_test(test_ws_split),
        cmocka_unit_test(test_ws_boundary), cmocka_unit_test(test_ws_garbage),
        cmocka_unit_test(test_ws_counts),   cmocka_unit_test(test_sse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
