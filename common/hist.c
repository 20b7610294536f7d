/* common/hist.c - see hist.h. */
#include "common/hist.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define MS UINT64_C(1000000)
#define S UINT64_C(1000000000)

const uint64_t wg_hist_latency_bounds[15] = {
    MS / 2,   MS,       5 * MS / 2, 5 * MS,    10 * MS, 25 * MS, 50 * MS, 100 * MS,
    250 * MS, 500 * MS, S,          5 * S / 2, 5 * S,   10 * S,  30 * S,
};

const uint64_t wg_hist_wake_bounds[14] = {
    5 * MS, 10 * MS,   25 * MS, 50 * MS, 100 * MS, 250 * MS, 500 * MS,
    S,      5 * S / 2, 5 * S,   10 * S,  30 * S,   60 * S,   120 * S,
};

void wg_hist_init(struct wg_hist *h, const uint64_t *bounds_ns, size_t nbounds)
{
    memset(h, 0, sizeof(*h));
    h->bounds_ns = bounds_ns;
    h->nbounds = nbounds < WG_HIST_BUCKETS_MAX ? nbounds : WG_HIST_BUCKETS_MAX;
}

void wg_hist_observe_ns(struct wg_hist *h, uint64_t ns)
{
    size_t lo = 0, hi = h->nbounds;

    /* The first bound >= ns; hi == nbounds is +Inf. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (h->bounds_ns[mid] < ns)
            lo = mid + 1;
        else
            hi = mid;
    }
    h->counts[lo]++;
    h->n++;
    h->sum_ns += ns;
}

/* ns as decimal seconds, exactly, without trailing zeros: "0.0005", "30". */
static void seconds_text(char *dst, size_t len, uint64_t ns)
{
    int n = snprintf(dst, len, "%" PRIu64 ".%09" PRIu64, ns / S, ns % S);
    if (n <= 0 || (size_t)n >= len)
        return;
    while (n > 0 && dst[n - 1] == '0')
        dst[--n] = '\0';
    if (n > 0 && dst[n - 1] == '.')
        dst[--n] = '\0';
}

void wg_hist_family(struct wg_buf *out, const char *name, const char *type, const char *help)
{
    wg_buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void wg_hist_write(struct wg_buf *out, const char *name, const char *labels,
                   const struct wg_hist *h)
{
    const char *sep = labels != NULL && labels[0] != '\0' ? "," : "";
    const char *l = labels != NULL ? labels : "";
    char le[32];
    char sum[32];
    uint64_t cum = 0;

    for (size_t i = 0; i < h->nbounds; i++) {
        cum += h->counts[i];
        seconds_text(le, sizeof(le), h->bounds_ns[i]);
        wg_buf_appendf(out, "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n", name, l, sep, le, cum);
    }
    cum += h->counts[h->nbounds];
    snprintf(sum, sizeof(sum), "%" PRIu64 ".%09" PRIu64, h->sum_ns / S, h->sum_ns % S);
    wg_buf_appendf(out, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, l, sep, cum);
    /* The count is the +Inf bucket (equal to n), so that a scrape racing
     * an observation on another thread never shows them apart. */
    if (l[0] != '\0') {
        wg_buf_appendf(out, "%s_sum{%s} %s\n%s_count{%s} %" PRIu64 "\n", name, l, sum, name, l,
                       cum);
    } else {
        wg_buf_appendf(out, "%s_sum %s\n%s_count %" PRIu64 "\n", name, sum, name, cum);
    }
}

void wg_hist_label_escape(struct wg_buf *out, const char *value)
{
    const char *run = value;

    for (const char *p = value;; p++) {
        const char *esc = NULL;
        if (*p == '\\')
            esc = "\\\\";
        else if (*p == '"')
            esc = "\\\"";
        else if (*p == '\n')
            esc = "\\n";
        else if (*p != '\0')
            continue;
        if (p > run)
            wg_buf_append(out, run, (size_t)(p - run));
        if (esc == NULL)
            return;
        wg_buf_append(out, esc, 2);
        run = p + 1;
    }
}
