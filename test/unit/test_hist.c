/* test/unit/test_hist.c - common/hist: bucket choice at and around the
 * bounds, the exposition text, label escaping. Pure: no sockets, no loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hist.h"

static const uint64_t small_bounds[3] = {1000, 5000, 2000000000};

static char *text_of(struct wg_buf *b)
{
    wg_buf_append(b, "", 1);
    return b->data + b->off;
}

static void test_bounds_are_ascending(void **state)
{
    (void)state;
    for (size_t i = 1; i < WG_HIST_LEN(wg_hist_latency_bounds); i++)
        assert_true(wg_hist_latency_bounds[i - 1] < wg_hist_latency_bounds[i]);
    for (size_t i = 1; i < WG_HIST_LEN(wg_hist_wake_bounds); i++)
        assert_true(wg_hist_wake_bounds[i - 1] < wg_hist_wake_bounds[i]);
    assert_int_equal(wg_hist_latency_bounds[0], 500000);
    assert_int_equal(wg_hist_latency_bounds[WG_HIST_LEN(wg_hist_latency_bounds) - 1],
                     30000000000ull);
    assert_true(WG_HIST_LEN(wg_hist_latency_bounds) <= WG_HIST_BUCKETS_MAX);
    assert_true(WG_HIST_LEN(wg_hist_wake_bounds) <= WG_HIST_BUCKETS_MAX);
}

/* A value equal to a bound belongs to that bound's bucket (le means <=). */
static void test_observe_picks_the_first_bound_not_below(void **state)
{
    struct wg_hist h;
    static const struct {
        uint64_t ns;
        size_t bucket;
    } cases[] = {
        {0, 0},    {1, 0},    {999, 0},        {1000, 0},       {1001, 1},
        {5000, 1}, {5001, 2}, {2000000000, 2}, {2000000001, 3}, {UINT64_MAX / 2, 3},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        wg_hist_init(&h, small_bounds, 3);
        wg_hist_observe_ns(&h, cases[i].ns);
        for (size_t b = 0; b <= 3; b++)
            assert_int_equal(h.counts[b], b == cases[i].bucket ? 1 : 0);
        assert_int_equal(h.n, 1);
        assert_int_equal(h.sum_ns, cases[i].ns);
    }
}

/* Every bucket of the real bounds, against a linear scan. */
static void test_observe_matches_a_linear_scan(void **state)
{
    struct wg_hist h;
    const uint64_t *b = wg_hist_latency_bounds;
    size_t n = WG_HIST_LEN(wg_hist_latency_bounds);
    (void)state;
    wg_hist_init(&h, b, n);
    for (size_t i = 0; i < n; i++) {
        uint64_t probes[3] = {b[i] - 1, b[i], b[i] + 1};
        for (int k = 0; k < 3; k++) {
            uint64_t counts[WG_HIST_BUCKETS_MAX + 1];
            size_t want = 0;
            while (want < n && b[want] < probes[k])
                want++;
            memcpy(counts, h.counts, sizeof(counts));
            wg_hist_observe_ns(&h, probes[k]);
            for (size_t j = 0; j <= n; j++)
                assert_int_equal(h.counts[j], counts[j] + (j == want));
        }
    }
    assert_int_equal(h.n, 3 * n);
}

static void test_write_is_cumulative_and_ends_with_inf(void **state)
{
    struct wg_hist h;
    struct wg_buf b;
    (void)state;
    wg_hist_init(&h, small_bounds, 3);
    wg_hist_observe_ns(&h, 500);        /* le 0.000001 */
    wg_hist_observe_ns(&h, 4000);       /* le 0.000005 */
    wg_hist_observe_ns(&h, 4000);       /* le 0.000005 */
    wg_hist_observe_ns(&h, 3000000000); /* +Inf */
    wg_buf_init(&b, 1 << 20);
    wg_hist_family(&b, "x_seconds", "histogram", "Some time.");
    wg_hist_write(&b, "x_seconds", NULL, &h);
    assert_string_equal(text_of(&b), "# HELP x_seconds Some time.\n"
                                     "# TYPE x_seconds histogram\n"
                                     "x_seconds_bucket{le=\"0.000001\"} 1\n"
                                     "x_seconds_bucket{le=\"0.000005\"} 3\n"
                                     "x_seconds_bucket{le=\"2\"} 3\n"
                                     "x_seconds_bucket{le=\"+Inf\"} 4\n"
                                     "x_seconds_sum 3.000008500\n"
                                     "x_seconds_count 4\n");
    wg_buf_release(&b);
}

static void test_write_with_labels(void **state)
{
    struct wg_hist h;
    struct wg_buf b;
    (void)state;
    wg_hist_init(&h, wg_hist_latency_bounds, 2);
    wg_hist_observe_ns(&h, 750000);
    wg_buf_init(&b, 1 << 20);
    wg_hist_write(&b, "y_seconds", "phase=\"a\"", &h);
    assert_string_equal(text_of(&b), "y_seconds_bucket{phase=\"a\",le=\"0.0005\"} 0\n"
                                     "y_seconds_bucket{phase=\"a\",le=\"0.001\"} 1\n"
                                     "y_seconds_bucket{phase=\"a\",le=\"+Inf\"} 1\n"
                                     "y_seconds_sum{phase=\"a\"} 0.000750000\n"
                                     "y_seconds_count{phase=\"a\"} 1\n");
    wg_buf_release(&b);
}

static void test_bound_text_of_every_real_bound(void **state)
{
    struct wg_hist h;
    struct wg_buf b;
    (void)state;
    wg_hist_init(&h, wg_hist_latency_bounds, WG_HIST_LEN(wg_hist_latency_bounds));
    wg_buf_init(&b, 1 << 20);
    wg_hist_write(&b, "z", NULL, &h);
    const char *t = text_of(&b);
    static const char *const les[] = {"0.0005", "0.001", "0.0025", "0.005", "0.01",
                                      "0.025",  "0.05",  "0.1",    "0.25",  "0.5",
                                      "1",      "2.5",   "5",      "10",    "30"};
    for (size_t i = 0; i < sizeof(les) / sizeof(les[0]); i++) {
        char want[64];
        snprintf(want, sizeof(want), "z_bucket{le=\"%s\"} 0\n", les[i]);
        assert_non_null(strstr(t, want));
    }
    assert_non_null(strstr(t, "z_sum 0.000000000\nz_count 0\n"));
    wg_buf_release(&b);
}

static void test_label_escape(void **state)
{
    struct wg_buf b;
    (void)state;
    wg_buf_init(&b, 1 << 20);
    wg_hist_label_escape(&b, "plain");
    wg_hist_label_escape(&b, "|a\"b\\c\nd|");
    wg_hist_label_escape(&b, "");
    wg_hist_label_escape(&b, "\"\\\n");
    assert_string_equal(text_of(&b), "plain|a\\\"b\\\\c\\nd|\\\"\\\\\\n");
    wg_buf_release(&b);
}

/* More bounds than fit are cut, never overrun. */
static void test_init_caps_the_bounds(void **state)
{
    static uint64_t many[WG_HIST_BUCKETS_MAX + 5];
    struct wg_hist h;
    (void)state;
    for (size_t i = 0; i < WG_HIST_BUCKETS_MAX + 5; i++)
        many[i] = (i + 1) * 10;
    wg_hist_init(&h, many, WG_HIST_BUCKETS_MAX + 5);
    assert_int_equal(h.nbounds, WG_HIST_BUCKETS_MAX);
    wg_hist_observe_ns(&h, UINT64_MAX);
    assert_int_equal(h.counts[WG_HIST_BUCKETS_MAX], 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds_are_ascending),
        cmocka_unit_test(test_observe_picks_the_first_bound_not_below),
        cmocka_unit_test(test_observe_matches_a_linear_scan),
        cmocka_unit_test(test_write_is_cumulative_and_ends_with_inf),
        cmocka_unit_test(test_write_with_labels),
        cmocka_unit_test(test_bound_text_of_every_real_bound),
        cmocka_unit_test(test_label_escape),
        cmocka_unit_test(test_init_caps_the_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
