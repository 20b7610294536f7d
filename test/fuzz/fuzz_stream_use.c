/* test/fuzz/fuzz_stream_use.c - the WebSocket frame-header parser and the
 * server-sent events scanner (proxy/stream_use) on peer bytes.
 *
 * Input: one byte that picks a cut point, then the bytes of one direction
 * of a tunnel (or of an event stream). The bytes are fed whole, in two
 * pieces at the cut, and one byte at a time: the frames seen (and the
 * failure, if any) must be the same each way, and the scanner's state at
 * the end the same, since reads split a stream anywhere. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/stream_use.h"

#define FRAMES_MAX 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

struct seen {
    struct wg_ws_frame f[FRAMES_MAX];
    size_t n;
    struct wg_ws_use use;
};

static void on_frame(void *arg, const struct wg_ws_frame *f)
{
    struct seen *s = arg;
    CHECK(f->opcode <= 0xA);
    CHECK(!(f->opcode & 0x8) || (f->fin && f->len <= 125));
    CHECK(f->len >> 63 == 0);
    (void)wg_ws_frame_counts(&s->use, f, 1000 + s->n, 16);
    if (s->n < FRAMES_MAX)
        s->f[s->n] = *f;
    s->n++;
}

static void same(const struct seen *a, const struct seen *b)
{
    CHECK(a->n == b->n);
    for (size_t i = 0; i < a->n && i < FRAMES_MAX; i++) {
        CHECK(a->f[i].opcode == b->f[i].opcode && a->f[i].fin == b->f[i].fin);
        CHECK(a->f[i].masked == b->f[i].masked && a->f[i].len == b->f[i].len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t cut = size > 1 ? data[0] % size : 0;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    if (cut > n)
        cut = n;
    /* A copy of exactly n bytes, so a read past them is caught. */
    char *b = malloc(n ? n : 1);
    if (b == NULL)
        return 0;
    memcpy(b, p, n);

    struct wg_ws_parser w1 = {0}, w2 = {0}, w3 = {0};
    struct seen s1 = {0}, s2 = {0}, s3 = {0};
    int r1 = wg_ws_feed(&w1, b, n, on_frame, &s1);
    int r2 = wg_ws_feed(&w2, b, cut, on_frame, &s2);
    r2 |= wg_ws_feed(&w2, b + cut, n - cut, on_frame, &s2);
    int r3 = 0;
    for (size_t i = 0; i < n; i++)
        r3 |= wg_ws_feed(&w3, b + i, 1, on_frame, &s3);
    CHECK(r1 == 0 || r1 == WG_WS_BAD);
    CHECK(r1 == r2 && r1 == r3);
    same(&s1, &s2);
    same(&s1, &s3);
    CHECK(wg_ws_at_boundary(&w1) == wg_ws_at_boundary(&w2));
    CHECK(wg_ws_at_boundary(&w1) == wg_ws_at_boundary(&w3));

    struct wg_sse_scan e1 = {0}, e2 = {0};
    (void)wg_sse_feed(&e1, b, n, 16);
    (void)wg_sse_feed(&e2, b, cut, 16);
    (void)wg_sse_feed(&e2, b + cut, n - cut, 16);
    CHECK(e1.line == e2.line && e1.after_cr == e2.after_cr && e1.event_bytes == e2.event_bytes);
    free(b);
    return 0;
}
