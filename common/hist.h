/* common/hist.h - Prometheus histograms and the text exposition helpers.
 *
 * A histogram counts observations in fixed buckets. The bounds are upper
 * bounds in nanoseconds, ascending, in a static array the histogram points
 * at (so a histogram is plain data: no allocation, copyable, zeroable).
 * Observing is a binary search over the bounds plus three additions: no
 * allocation, no syscall, no floating point; it is meant for the request
 * hot path.
 *
 * Exposition follows the Prometheus text format 0.0.4: a family is written
 * as one "# HELP" and one "# TYPE" line (wg_hist_family()), then its samples
 * (wg_hist_write() per label set): cumulative "_bucket" lines with le in
 * seconds ending with le="+Inf", then "_sum" (seconds) and "_count" (equal
 * to the +Inf bucket). Label values are escaped with wg_hist_label_escape(). */
#ifndef WG_COMMON_HIST_H
#define WG_COMMON_HIST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* Most finite buckets a histogram may have. */
#define WG_HIST_BUCKETS_MAX 24

struct wg_hist {
    const uint64_t *bounds_ns; /* ascending upper bounds, nbounds of them; borrowed */
    size_t nbounds;
    _Atomic uint64_t
        counts[WG_HIST_BUCKETS_MAX + 1]; /* per bucket, not cumulative; [nbounds] is +Inf */
    _Atomic uint64_t n;
    _Atomic uint64_t sum_ns;
};

/* Buckets for a proxy's latencies: 0.5 ms, 1, 2.5, 5, 10, 25, 50, 100,
 * 250, 500 ms, 1 s, 2.5, 5, 10, 30 s. */
extern const uint64_t wg_hist_latency_bounds[15];
/* Buckets for wakes and their phases, saves: 5 ms ... 120 s. */
extern const uint64_t wg_hist_wake_bounds[14];

#define WG_HIST_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Zeroes h and points it at bounds (ascending, static, nbounds <=
 * WG_HIST_BUCKETS_MAX; more are ignored). */
void wg_hist_init(struct wg_hist *h, const uint64_t *bounds_ns, size_t nbounds);

/* Counts one observation of ns nanoseconds: in the first bucket whose bound
 * is >= ns (Prometheus' "le"), else in +Inf. */
void wg_hist_observe_ns(struct wg_hist *h, uint64_t ns);

/* Appends "# HELP name help\n# TYPE name type\n". help must hold no
 * newline or backslash (it is ours, not a peer's). */
void wg_hist_family(struct wg_buf *out, const char *name, const char *type, const char *help);

/* Appends h's samples. labels: NULL, or label pairs already escaped
 * without braces ("phase=\"queue\""); they are put before le. */
void wg_hist_write(struct wg_buf *out, const char *name, const char *labels,
                   const struct wg_hist *h);

/* Appends value escaped for a label value: backslash, double quote and
 * newline become \\, \" and \n. */
void wg_hist_label_escape(struct wg_buf *out, const char *value);

#endif
