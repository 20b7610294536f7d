/* orchestrator/probe.c - TCP connect probe; see probe.h.
 *
 * Ownership: the probe counts its open handles (the pacing timer and the
 * socket of the current attempt). wg_probe_stop() and a success only mark
 * it and start the closes; the last close callback frees it. An attempt
 * whose connect is still pending when its socket is closed gets its connect
 * callback with UV_ECANCELED before the close callback, and ignores it. */
#include "orchestrator/probe.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct attempt {
    uv_tcp_t tcp;
    uv_connect_t req;
    struct wg_probe *p;
    bool closing;
};

struct wg_probe {
    uv_loop_t *loop;
    struct sockaddr_storage sa;
    uint32_t interval_ms;
    uint32_t timeout_ms;
    wg_probe_cb *cb;
    void *arg;
    uv_timer_t timer; /* the next attempt, or the current attempt's timeout */
    struct attempt *cur;
    unsigned refs; /* open handles */
    unsigned attempts;
    bool done; /* stopped or succeeded: no more attempts, no callback */
};

static void next_attempt(uv_timer_t *t);

static void probe_unref(struct wg_probe *p)
{
    if (--p->refs == 0)
        free(p);
}

static void timer_closed(uv_handle_t *h)
{
    probe_unref(h->data);
}

static void attempt_closed(uv_handle_t *h)
{
    struct attempt *a = h->data;
    struct wg_probe *p = a->p;

    free(a);
    probe_unref(p);
}

/* Callers: a refused connect, a connect timeout, success, stop. */
static void attempt_close(struct wg_probe *p)
{
    struct attempt *a = p->cur;

    if (!a)
        return;
    p->cur = NULL;
    a->closing = true;
    uv_close((uv_handle_t *)&a->tcp, attempt_closed);
}

static void probe_finish(struct wg_probe *p)
{
    if (p->done)
        return;
    p->done = true;
    attempt_close(p);
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, timer_closed);
}

static void on_timeout(uv_timer_t *t)
{
    struct wg_probe *p = t->data;

    attempt_close(p);
    /* The attempt took the whole connect timeout: try again at once. */
    uv_timer_start(&p->timer, next_attempt, 0, 0);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct attempt *a = req->data;
    struct wg_probe *p = a->p;

    if (a->closing || p->done)
        return; /* closed by a timeout or a stop: UV_ECANCELED */
    uv_timer_stop(&p->timer);
    if (status == 0) {
        wg_probe_cb *cb = p->cb;
        void *arg = p->arg;
        unsigned n = p->attempts;

        probe_finish(p);
        cb(0, n, arg);
        return;
    }
    attempt_close(p);
    uv_timer_start(&p->timer, next_attempt, p->interval_ms, 0);
}

static void next_attempt(uv_timer_t *t)
{
    struct wg_probe *p = t->data;
    struct attempt *a;
    int r;

    if (p->done)
        return;
    a = calloc(1, sizeof(*a));
    if (!a)
        goto retry;
    a->p = p;
    if (uv_tcp_init(p->loop, &a->tcp) < 0) {
        free(a);
        goto retry;
    }
    a->tcp.data = a;
    a->req.data = a;
    p->refs++;
    p->cur = a;
    p->attempts++;
    r = uv_tcp_connect(&a->req, &a->tcp, (const struct sockaddr *)&p->sa, on_connect);
    if (r < 0) {
        attempt_close(p);
        goto retry;
    }
    uv_timer_start(&p->timer, on_timeout, p->timeout_ms, 0);
    return;
retry:
    uv_timer_start(&p->timer, next_attempt, p->interval_ms, 0);
}

int wg_probe_start(uv_loop_t *loop, const char *ip, uint16_t port, uint32_t interval_ms,
                   uint32_t connect_timeout_ms, wg_probe_cb *cb, void *arg, struct wg_probe **ret)
{
    struct wg_probe *p;
    int r;

    if (!loop || !ip || !port || !cb || !ret)
        return -EINVAL;
    p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    if (strchr(ip, ':'))
        r = uv_ip6_addr(ip, port, (struct sockaddr_in6 *)&p->sa);
    else
        r = uv_ip4_addr(ip, port, (struct sockaddr_in *)&p->sa);
    if (r < 0) {
        free(p);
        return -EINVAL;
    }
    p->loop = loop;
    p->interval_ms = interval_ms ? interval_ms : WG_PROBE_INTERVAL_MS;
    p->timeout_ms = connect_timeout_ms ? connect_timeout_ms : WG_PROBE_CONNECT_TIMEOUT_MS;
    p->cb = cb;
    p->arg = arg;
    if ((r = uv_timer_init(loop, &p->timer)) < 0) {
        free(p);
        return r;
    }
    p->timer.data = p;
    p->refs = 1;
    /* The first attempt on the next loop turn: cb never runs inside this call. */
    uv_timer_start(&p->timer, next_attempt, 0, 0);
    *ret = p;
    return 0;
}

void wg_probe_stop(struct wg_probe *p)
{
    if (p)
        probe_finish(p);
}
