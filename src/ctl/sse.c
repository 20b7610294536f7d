/* src/ctl/sse.c - `events`: the admin API's /v1/events stream (SSE) read
 * line by line; without -f until the replay goes quiet, with -f until
 * interrupted, reconnecting after the last event printed. */
#include "src/ctl/ctl.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/config.h"
#include "src/ctl/ctl_int.h"

#define SSE_LINE_MAX (1u << 20)    /* one SSE line (the API sends one data line per event) */
#define EVENTS_QUIET_MS 500        /* `events` without -f: the replay is over */
#define EVENTS_FIRST_BYTE_MS 10000 /* `events`: the stream must start by then */
#define RECONNECT_MS 1000          /* `events -f` after the stream was lost */

volatile sig_atomic_t ctl_interrupted;

struct sse {
    struct ctl *c;
    bool follow;
    struct wg_buf line;     /* a partial line, capped at SSE_LINE_MAX */
    struct wg_buf data;     /* the data of the message being read */
    char id[48];            /* its id */
    char last_id[48];       /* of the last event printed: the resume point */
    bool out_gone;          /* stdout closed: stop quietly */
    ctl_event_fn *on_event; /* ctl_events_scan(): each event here, nothing printed */
    void *on_event_arg;
};

static void sse_dispatch(struct sse *s)
{
    if (wg_buf_size(&s->data) == 0) /* a comment (": ping") or an empty message */
        return;
    if (wg_buf_append(&s->data, "", 1) < 0)
        return;
    const char *data = wg_buf_head(&s->data);
    if (s->on_event != NULL)
        s->on_event(s->on_event_arg, data);
    else if (s->c->o.json)
        printf("%s\n", data);
    else
        ctl_print_event(data);
    if (fflush(stdout) != 0 || ferror(stdout))
        s->out_gone = true;
    if (s->id[0])
        snprintf(s->last_id, sizeof(s->last_id), "%s", s->id);
    wg_buf_reset(&s->data);
    s->id[0] = '\0';
}

static void sse_line(struct sse *s, const char *l, size_t len)
{
    if (len > 0 && l[len - 1] == '\r')
        len--;
    if (len == 0) {
        sse_dispatch(s);
        return;
    }
    if (l[0] == ':')
        return;
    const char *colon = memchr(l, ':', len);
    size_t nl = colon ? (size_t)(colon - l) : len;
    const char *v = colon ? colon + 1 : l + len;
    if (v < l + len && *v == ' ')
        v++;
    size_t vl = (size_t)(l + len - v);
    if (nl == 4 && memcmp(l, "data", 4) == 0) {
        if (wg_buf_size(&s->data) > 0)
            wg_buf_append(&s->data, "\n", 1);
        wg_buf_append(&s->data, v, vl);
    } else if (nl == 2 && memcmp(l, "id", 2) == 0 && vl < sizeof(s->id)) {
        memcpy(s->id, v, vl);
        s->id[vl] = '\0';
    }
}

static int sse_on_bytes(struct ctl_http *hc, const char *p, size_t n)
{
    struct sse *s = hc->arg;
    while (n > 0 && !s->out_gone) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (wg_buf_append(&s->line, p, take) < 0)
            return -E2BIG;
        if (nl == NULL)
            break;
        sse_line(s, wg_buf_head(&s->line), wg_buf_size(&s->line));
        wg_buf_reset(&s->line);
        p += take + 1;
        n -= take + 1;
    }
    return 0;
}

static bool sse_should_stop(struct ctl_http *hc)
{
    struct sse *s = hc->arg;
    if (ctl_interrupted || s->out_gone)
        return true;
    if (!hc->got_bytes && wg_clock_mono_ms() - hc->started >= EVENTS_FIRST_BYTE_MS)
        return true;
    /* Without -f the replay is over when the stream goes quiet. */
    return !s->follow && hc->got_bytes && wg_clock_mono_ms() - hc->last_byte >= EVENTS_QUIET_MS;
}

static void on_stop_signal(int sig)
{
    (void)sig;
    ctl_interrupted = 1;
}

/* --since: a stream id, ms since the epoch, or a duration back from now. */
static int since_param(const char *v, char *out, size_t outlen)
{
    size_t i = 0, digits = 0;
    uint64_t dur;
    while (isdigit((unsigned char)v[i]))
        i++, digits++;
    if (digits > 0 && digits <= 20 && v[i] == '\0') {
        snprintf(out, outlen, "%s", v);
        return 0;
    }
    if (digits > 0 && digits <= 20 && v[i] == '-') {
        size_t j = i + 1;
        while (isdigit((unsigned char)v[j]))
            j++;
        if (j > i + 1 && j - i - 1 <= 20 && v[j] == '\0') {
            snprintf(out, outlen, "%s", v);
            return 0;
        }
    }
    if (wg_config_parse_duration(v, &dur) == 0) {
        int64_t at = wg_clock_wall_ms() - (int64_t)dur;
        snprintf(out, outlen, "%" PRId64, at > 0 ? at : 0);
        return 0;
    }
    return -EINVAL;
}

static void sleep_interruptible(int ms)
{
    for (int t = 0; t < ms && !ctl_interrupted; t += POLL_MS)
        usleep(POLL_MS * 1000);
}

/* SIGINT and SIGTERM end `events` with exit 0, between two polls. */
static void catch_stop_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* The stream request: from since until an event was printed, then from the
 * last one printed (Last-Event-ID). */
static void events_request(struct sse *s, struct ctl_http *hc, const char *since)
{
    bool from_since = since[0] && !s->last_id[0];

    ctl_http_init(hc, "GET");
    hc->on_bytes = sse_on_bytes;
    hc->should_stop = sse_should_stop;
    hc->arg = s;
    hc->last_event_id = s->last_id[0] ? s->last_id : NULL;
    ctl_http_url(hc, "%s/v1/events%s%s", s->c->base, from_since ? "?since=" : "",
                 from_since ? since : "");
    hc->token = s->c->token;
}

int ctl_cmd_events(struct ctl *c, const char *unused)
{
    struct sse s = {.c = c, .follow = (c->o.flags & F_FOLLOW) != 0};
    char since[40] = "";
    bool connected = false, lost = false;
    int rc = WG_CTL_OK;

    if (c->o.since != NULL && since_param(c->o.since, since, sizeof(since)) < 0)
        return ctl_usage_error("--since '%s': expected a stream id (1700000000000-0), ms since the "
                               "epoch, or a duration (10m)",
                               c->o.since);
    /* Without -f and --since: everything stored. */
    if (!s.follow && since[0] == '\0')
        snprintf(since, sizeof(since), "0");
    wg_buf_init(&s.line, SSE_LINE_MAX);
    wg_buf_init(&s.data, SSE_LINE_MAX);
    catch_stop_signals();

    while (!ctl_interrupted && !s.out_gone) {
        struct ctl_http hc;
        events_request(&s, &hc, since);
        int r = ctl_http_run(&hc);
        /* A stream that was answered 2xx counts, even if it died later. */
        if (hc.status >= 200 && hc.status < 300) {
            connected = true;
            lost = false;
        }
        if (r < 0 && hc.cb_error == -E2BIG) {
            fprintf(stderr, PROG ": %s: an event longer than %u bytes\n", hc.url, SSE_LINE_MAX);
            rc = WG_CTL_FAILED;
        } else if (r < 0 && (!connected || !s.follow)) {
            fprintf(stderr, PROG ": cannot reach the admin API (%s): %s\n", c->base_src, hc.err);
            rc = WG_CTL_UNREACHABLE;
        } else if (r == 0 && hc.stopped && hc.status == 0 && !ctl_interrupted) {
            fprintf(stderr, PROG ": %s: no answer in %d ms\n", hc.url, EVENTS_FIRST_BYTE_MS);
            rc = WG_CTL_UNREACHABLE;
        } else if (r == 0 && hc.status != 0 && (hc.status < 200 || hc.status >= 300)) {
            rc = ctl_api_report(c, &hc);
        } else if (r == 0 && (hc.stopped || !s.follow)) {
            rc = WG_CTL_OK; /* interrupted, quiet, stdout gone, or the end of a replay */
        } else {
            /* Lost (or ended by the gateway) while following: resume after
             * the last event printed; with none yet, from about when the
             * stream was lost (our clock, not Redis's: close enough). Said
             * once per outage, however many attempts it takes. */
            if (!lost) {
                fprintf(stderr, PROG ": event stream %s, reconnecting\n",
                        r < 0 ? hc.err : "ended by the gateway");
                lost = true;
                if (!s.last_id[0])
                    snprintf(since, sizeof(since), "%" PRId64, wg_clock_wall_ms() - RECONNECT_MS);
            }
            ctl_http_release(&hc);
            wg_buf_reset(&s.line);
            wg_buf_reset(&s.data);
            sleep_interruptible(RECONNECT_MS);
            continue;
        }
        ctl_http_release(&hc);
        break;
    }
    wg_buf_release(&s.line);
    wg_buf_release(&s.data);
    return rc;
}

int ctl_events_scan(struct ctl *c, int64_t since_ms, ctl_event_fn *fn, void *arg)
{
    struct sse s = {.c = c, .on_event = fn, .on_event_arg = arg};
    struct ctl_http hc;
    char since[40];
    int rc = WG_CTL_OK;

    snprintf(since, sizeof(since), "%" PRId64, since_ms > 0 ? since_ms : 0);
    wg_buf_init(&s.line, SSE_LINE_MAX);
    wg_buf_init(&s.data, SSE_LINE_MAX);
    events_request(&s, &hc, since);
    int r = ctl_http_run(&hc);
    if (r < 0 || (hc.stopped && hc.status == 0))
        rc = WG_CTL_UNREACHABLE;
    else if (hc.status < 200 || hc.status >= 300)
        rc = wg_ctl_exit_for_status(hc.status, NULL);
    ctl_http_release(&hc);
    wg_buf_release(&s.line);
    wg_buf_release(&s.data);
    return rc;
}
