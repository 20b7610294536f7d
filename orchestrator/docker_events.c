/* orchestrator/docker_events.c - the Docker /events stream: one long GET
 * whose 2xx body is JSON lines, each handed to the caller as a struct
 * wg_docker_event, with WG_DOCKER_EVENTS_OPEN first once the engine
 * accepted the stream. See docker.h for the API and docker_int.h for
 * ownership: the caller's callbacks run inside curl here. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/labels.h"
#include "common/log.h"
#include "common/str.h"
#include "orchestrator/docker_int.h"

static int event_line(void *arg, const char *line, size_t len)
{
    struct docker_req *q = arg;
    struct wg_docker *d = q->d;
    struct wg_docker_event ev;
    json_t *root;

    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
        len--;
    if (len == 0)
        return 0;
    root = json_loadb(line, len, 0, NULL);
    if (root && docker_event_from_json(root, &ev) == 0)
        q->ev_cb(&ev, q->arg);
    else
        WG_DEBUG(d->log, DOCKER_SUBSYS, "events line ignored", "req=%llu len=%zu",
                 (unsigned long long)q->seq, len);
    json_decref(root);
    return q->canceled || d->closed ? 1 : 0;
}

static int events_data(struct docker_req *q, const char *p, size_t n)
{
    return docker_lines_feed(&q->resp, WG_DOCKER_MAX_EVENT_LINE, p, n, event_line, q);
}

static bool events_open(struct docker_req *q)
{
    struct wg_docker_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.kind = WG_DOCKER_EVENTS_OPEN;
    ev.type = ev.action = ev.id = ev.name = "";
    ev.exit_code = -1;
    q->ev_cb(&ev, q->arg);
    return !(q->canceled || q->d->closed);
}

static void finish_events(struct docker_req *q, int status, struct wg_docker_reply *r)
{
    if (status == 0) { /* a 2xx stream that ended: the engine closed it */
        status = -ECONNRESET;
        r->message = "the engine closed the events stream";
        docker_format_error(q->finish_error, sizeof(q->finish_error), r, status);
        r->error = q->finish_error;
    }
    docker_deliver(q, status, r);
}

int wg_docker_events_start(struct wg_docker *d, const struct wg_docker_events_opts *opts,
                           wg_docker_event_cb *ev_cb, wg_docker_cb *end_cb, void *arg,
                           struct wg_docker_events **ret)
{
    const char *label = opts && opts->label ? opts->label : WG_LABEL_SESSION;
    int64_t since = opts ? opts->since_ns : 0;
    char *f, *path;
    struct docker_req *q;
    int rc;

    if (!d || !ev_cb || !ret || !docker_label_ok(label) || since < 0)
        return -EINVAL;
    f = docker_label_filters(label, true);
    if (!f)
        return -ENOMEM;
    if (since > 0)
        path = wg_strf("/events?filters=%s&since=%lld.%09lld", f, (long long)(since / 1000000000),
                       (long long)(since % 1000000000));
    else
        path = wg_strf("/events?filters=%s", f);
    free(f);
    rc = docker_call(d, RK_EVENTS, "GET", path, finish_events, end_cb, arg, &q);
    if (rc < 0)
        return rc;
    q->ev_cb = ev_cb;
    q->on_data = events_data;
    q->on_head = events_open;
    q->data_cap = WG_DOCKER_MAX_EVENT_LINE;
    q->streamed = true;
    q->timeout_ms = 0;
    /* The buffer holds an error body or one partial line. */
    wg_buf_init(&q->resp,
                (d->max_body > WG_DOCKER_MAX_EVENT_LINE ? d->max_body : WG_DOCKER_MAX_EVENT_LINE) +
                    1);
    if ((rc = docker_submit(q)) < 0) {
        docker_req_free(q);
        return rc;
    }
    *ret = (struct wg_docker_events *)q;
    return 0;
}

void wg_docker_events_stop(struct wg_docker_events *e)
{
    struct docker_req *q = (struct docker_req *)e;

    if (!q)
        return;
    if (q->d->closed || q->canceled)
        return; /* wg_docker_free() settles it */
    docker_req_stop(q);
}
