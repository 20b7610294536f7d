/* orchestrator/probe.c - TCP connect and HTTP readiness probe; see probe.h.
 *
 * Ownership: the probe counts its open handles (the pacing timer and the
 * socket of the current attempt). wg_probe_stop() and a success only mark
 * it and start the closes; the last close callback frees it. An attempt
 * whose connect or write is still pending when its socket is closed gets
 * that callback with UV_ECANCELED before the close callback, and ignores it.
 *
 * The HTTP probe is the TCP probe with one more step after the connect:
 * write the request (built once, owned by the probe) and read the first
 * bytes of the answer into the attempt. The pacing timer bounds the whole
 * attempt, so a server that accepts and then says nothing is a timeout. */
#include "orchestrator/probe.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "HTTP/1.1 200" and the byte after it decide an attempt. */
#define STATUS_PREFIX 13

struct attempt {
    uv_tcp_t tcp;
    uv_connect_t req;
    uv_write_t wreq;
    struct wg_probe *p;
    char head[STATUS_PREFIX]; /* the answer so far (HTTP) */
    size_t head_len;
    bool closing;
};

struct wg_probe {
    uv_loop_t *loop;
    struct sockaddr_storage sa;
    uint32_t interval_ms;
    uint32_t timeout_ms;
    char *request; /* HTTP: the request to send; NULL: connect only */
    size_t request_len;
    wg_probe_cb *cb;
    void *arg;
    uv_timer_t timer; /* the next attempt, or the current attempt's timeout */
    struct attempt *cur;
    unsigned refs; /* open handles */
    unsigned attempts;
    bool done; /* stopped or succeeded: no more attempts, no callback */
};

static void next_attempt(uv_timer_t *t);

/* The status code of the HTTP/1.x status line that buf (len bytes so far)
 * starts with. Returns the code (000-999, as written), 0 when more bytes
 * are needed, or -EBADMSG when it is not a status line. Some servers end
 * the line right after the code, so "HTTP/1.1 200\r" counts. */
static int status_code(const char *buf, size_t len)
{
    static const char shape[] = "HTTP/1.d ddd"; /* d: a digit */
    size_t n = len < STATUS_PREFIX ? len : STATUS_PREFIX;

    for (size_t i = 0; i < n; i++) {
        char c = buf[i];
        bool ok;

        if (i == STATUS_PREFIX - 1)
            ok = c == ' ' || c == '\r';
        else if (shape[i] == 'd')
            ok = c >= '0' && c <= '9';
        else
            ok = c == shape[i];
        if (!ok)
            return -EBADMSG;
    }
    if (len < STATUS_PREFIX)
        return 0;
    return (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
}

static bool path_valid(const char *path)
{
    size_t n = strlen(path);

    if (path[0] != '/' || n > WG_PROBE_HTTP_PATH_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)path[i] <= ' ' || (unsigned char)path[i] >= 0x7f || path[i] == '#')
            return false;
    return true;
}

static void probe_unref(struct wg_probe *p)
{
    if (--p->refs == 0) {
        free(p->request);
        free(p);
    }
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

/* Callers: an attempt that failed or timed out, success, stop. */
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

static void probe_succeeded(struct wg_probe *p)
{
    wg_probe_cb *cb = p->cb;
    void *arg = p->arg;
    unsigned n = p->attempts;

    probe_finish(p);
    cb(0, n, arg);
}

/* The attempt ended early (refused, reset, not 2xx/3xx): the next one after
 * the interval. */
static void attempt_failed(struct wg_probe *p)
{
    uv_timer_stop(&p->timer);
    attempt_close(p);
    uv_timer_start(&p->timer, next_attempt, p->interval_ms, 0);
}

static void on_timeout(uv_timer_t *t)
{
    struct wg_probe *p = t->data;

    attempt_close(p);
    /* The attempt took the whole timeout: try again at once. */
    uv_timer_start(&p->timer, next_attempt, 0, 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct attempt *a = h->data;

    (void)suggested;
    /* Never full while reading: STATUS_PREFIX bytes always decide. */
    buf->base = a->head + a->head_len;
    buf->len = sizeof(a->head) - a->head_len;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct attempt *a = s->data;
    struct wg_probe *p = a->p;
    int code;

    (void)buf;
    if (a->closing || p->done || nread == 0)
        return;
    if (nread < 0) {
        attempt_failed(p); /* reset, or closed before a whole status line */
        return;
    }
    a->head_len += (size_t)nread;
    code = status_code(a->head, a->head_len);
    if (code == 0)
        return;
    if (code >= 200 && code <= 399)
        probe_succeeded(p);
    else
        attempt_failed(p);
}

static void on_write(uv_write_t *req, int status)
{
    struct attempt *a = req->data;

    if (a->closing || a->p->done || status == 0)
        return;
    attempt_failed(a->p);
}

static void http_send(struct attempt *a)
{
    struct wg_probe *p = a->p;
    uv_buf_t b = uv_buf_init(p->request, (unsigned)p->request_len);

    a->wreq.data = a;
    if (uv_write(&a->wreq, (uv_stream_t *)&a->tcp, &b, 1, on_write) < 0 ||
        uv_read_start((uv_stream_t *)&a->tcp, on_alloc, on_read) < 0)
        attempt_failed(p);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct attempt *a = req->data;
    struct wg_probe *p = a->p;

    if (a->closing || p->done)
        return; /* closed by a timeout or a stop: UV_ECANCELED */
    if (status < 0)
        attempt_failed(p);
    else if (!p->request)
        probe_succeeded(p);
    else
        http_send(a); /* the attempt's timeout keeps running */
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

/* "GET path HTTP/1.1" with Host ip:port ([ip]:port for IPv6). */
static int build_request(struct wg_probe *p, const char *ip, uint16_t port, const char *path)
{
    const char *fmt = strchr(ip, ':')
                          ? "GET %s HTTP/1.1\r\nHost: [%s]:%u\r\nConnection: close\r\n\r\n"
                          : "GET %s HTTP/1.1\r\nHost: %s:%u\r\nConnection: close\r\n\r\n";
    int n = snprintf(NULL, 0, fmt, path, ip, (unsigned)port);

    if (n < 0)
        return -EINVAL;
    p->request = malloc((size_t)n + 1);
    if (!p->request)
        return -ENOMEM;
    snprintf(p->request, (size_t)n + 1, fmt, path, ip, (unsigned)port);
    p->request_len = (size_t)n;
    return 0;
}

static int probe_start(uv_loop_t *loop, const char *ip, uint16_t port, const char *path,
                       uint32_t interval_ms, uint32_t timeout_ms, wg_probe_cb *cb, void *arg,
                       struct wg_probe **ret)
{
    struct wg_probe *p;
    int r;

    if (!loop || !ip || !port || !cb || !ret || (path && !path_valid(path)))
        return -EINVAL;
    p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    if (strchr(ip, ':'))
        r = uv_ip6_addr(ip, port, (struct sockaddr_in6 *)&p->sa);
    else
        r = uv_ip4_addr(ip, port, (struct sockaddr_in *)&p->sa);
    if (r < 0) {
        r = -EINVAL;
        goto fail;
    }
    if (path && (r = build_request(p, ip, port, path)) < 0)
        goto fail;
    p->loop = loop;
    p->interval_ms = interval_ms ? interval_ms : WG_PROBE_INTERVAL_MS;
    p->timeout_ms = timeout_ms ? timeout_ms : WG_PROBE_CONNECT_TIMEOUT_MS;
    p->cb = cb;
    p->arg = arg;
    if ((r = uv_timer_init(loop, &p->timer)) < 0)
        goto fail;
    p->timer.data = p;
    p->refs = 1;
    /* The first attempt on the next loop turn: cb never runs inside this call. */
    uv_timer_start(&p->timer, next_attempt, 0, 0);
    *ret = p;
    return 0;
fail:
    free(p->request);
    free(p);
    return r;
}

int wg_probe_start(uv_loop_t *loop, const char *ip, uint16_t port, uint32_t interval_ms,
                   uint32_t connect_timeout_ms, wg_probe_cb *cb, void *arg, struct wg_probe **ret)
{
    return probe_start(loop, ip, port, NULL, interval_ms, connect_timeout_ms, cb, arg, ret);
}

int wg_probe_start_http(uv_loop_t *loop, const char *ip, uint16_t port, const char *path,
                        uint32_t interval_ms, uint32_t timeout_ms, wg_probe_cb *cb, void *arg,
                        struct wg_probe **ret)
{
    if (!path)
        return -EINVAL;
    return probe_start(loop, ip, port, path, interval_ms, timeout_ms, cb, arg, ret);
}

void wg_probe_stop(struct wg_probe *p)
{
    if (p)
        probe_finish(p);
}
