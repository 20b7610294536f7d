/* proxy/tls_redirect.c - tls.redirect_listen: a plain HTTP listener whose
 * only answer is a 308 to the same host and path over https on the public
 * (TLS) listener's port; see tls_redirect.h.
 *
 * The target is built from the client's Host, checked as a host name or an
 * IP literal (its port dropped: the redirect never names a port of the
 * client's choosing), and the request target, which must be origin-form
 * ("/..."); anything else is a 400. One request per connection. */
#include "proxy/tls_redirect.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/list.h"
#include "common/net.h"

/* A redirect needs the request line and Host; more is not read. Small, as
 * a connection holds two of these. */
#define HEAD_MAX 4096
#define HOST_MAX 253

struct wg_redirect {
    uv_loop_t *loop;
    struct wg_log *log;
    uv_tcp_t listener;
    int https_port;
    uint64_t timeout_ms;
    unsigned conns, conns_max;
    unsigned handles; /* the listener and every connection's two */
    struct wg_list conns_list;
    bool freeing;
};

struct rconn {
    uv_tcp_t tcp; /* first: callbacks cast back */
    uv_timer_t timer;
    uv_write_t wreq;
    struct wg_redirect *r;
    struct wg_list link;
    int open; /* handles not yet closed */
    bool closing;
    size_t len;
    char head[HEAD_MAX];
    char out[HEAD_MAX + 256];
};

static void maybe_free(struct wg_redirect *r)
{
    if (r->freeing && r->handles == 0)
        free(r);
}

static void rconn_closed(uv_handle_t *h)
{
    struct rconn *k = h->data;
    struct wg_redirect *r = k->r;

    r->handles--;
    if (--k->open == 0) {
        r->conns--;
        free(k);
    }
    maybe_free(r);
}

/* Reached from errors, EOF, the timer, the end of the answer and
 * wg_redirect_free(): idempotent. */
static void rconn_close(struct rconn *k)
{
    if (k->closing)
        return;
    k->closing = true;
    wg_list_remove(&k->link);
    uv_close((uv_handle_t *)&k->timer, rconn_closed);
    uv_close((uv_handle_t *)&k->tcp, rconn_closed);
}

static void written(uv_write_t *w, int status)
{
    rconn_close(w->data);
}

static void answer(struct rconn *k, int n)
{
    uv_buf_t b = uv_buf_init(k->out, (unsigned)n);

    uv_read_stop((uv_stream_t *)&k->tcp);
    k->wreq.data = k;
    if (uv_write(&k->wreq, (uv_stream_t *)&k->tcp, &b, 1, written) < 0)
        rconn_close(k);
}

static void bad_request(struct rconn *k)
{
    static const char msg[] = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                              "Content-Length: 12\r\nConnection: close\r\n\r\nBad Request\n";
    memcpy(k->out, msg, sizeof msg - 1);
    answer(k, (int)sizeof msg - 1);
}

/* Host without its port, lower case, into out; false when it is not a
 * plain DNS name or IP literal. */
bool wg_redirect_host_valid(const char *v, size_t n, char *out, size_t outlen)
{
    size_t hn = n;

    if (n > 0 && v[0] == '[') { /* [v6]:port */
        const char *e = memchr(v, ']', n);
        if (e == NULL)
            return false;
        hn = (size_t)(e - v) + 1;
        for (size_t i = 1; i + 1 < hn; i++)
            if (!isxdigit((unsigned char)v[i]) && v[i] != ':' && v[i] != '.')
                return false;
    } else {
        const char *colon = memchr(v, ':', n);
        if (colon != NULL)
            hn = (size_t)(colon - v);
        for (size_t i = 0; i < hn; i++)
            if (!isalnum((unsigned char)v[i]) && v[i] != '-' && v[i] != '.')
                return false;
    }
    if (hn < n) { /* ":port": digits only, then dropped */
        if (v[hn] != ':' || hn + 1 == n)
            return false;
        for (size_t i = hn + 1; i < n; i++)
            if (!isdigit((unsigned char)v[i]))
                return false;
    }
    if (hn == 0 || hn > HOST_MAX || hn >= outlen || v[0] == '.' || v[0] == '-')
        return false;
    for (size_t i = 0; i < hn; i++)
        out[i] = (char)tolower((unsigned char)v[i]);
    out[hn] = '\0';
    return true;
}

/* The whole head is in k->head[0, end). */
static void handle_head(struct rconn *k, size_t end)
{
    char *line_end = memchr(k->head, '\r', end);
    char *sp1, *sp2, *host = NULL, host_out[HOST_MAX + 1];
    size_t host_len = 0, target_len;
    int hosts = 0, n;

    if (line_end == NULL || (sp1 = memchr(k->head, ' ', (size_t)(line_end - k->head))) == NULL ||
        (sp2 = memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1))) == NULL ||
        (size_t)(line_end - sp2 - 1) != 8 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0 || sp1[1] != '/') {
        bad_request(k);
        return;
    }
    target_len = (size_t)(sp2 - sp1 - 1);
    for (size_t i = 0; i < target_len; i++)
        if ((unsigned char)sp1[1 + i] <= ' ' || (unsigned char)sp1[1 + i] >= 0x7f) {
            bad_request(k);
            return;
        }
    for (char *p = line_end + 2; p < k->head + end;) {
        char *e = memchr(p, '\r', (size_t)(k->head + end - p));
        if (e == NULL || e == p)
            break;
        if ((size_t)(e - p) > 5 && strncasecmp(p, "host:", 5) == 0) {
            host = p + 5;
            while (host < e && (*host == ' ' || *host == '\t'))
                host++;
            host_len = (size_t)(e - host);
            while (host_len > 0 && (host[host_len - 1] == ' ' || host[host_len - 1] == '\t'))
                host_len--;
            hosts++;
        }
        p = e + 2;
    }
    if (hosts != 1 || !wg_redirect_host_valid(host, host_len, host_out, sizeof host_out)) {
        bad_request(k);
        return;
    }
    char port[16] = "";
    if (k->r->https_port != 443)
        snprintf(port, sizeof port, ":%d", k->r->https_port);
    n = snprintf(k->out, sizeof k->out,
                 "HTTP/1.1 308 Permanent Redirect\r\nLocation: https://%s%s%.*s\r\n"
                 "Content-Length: 0\r\nConnection: close\r\n\r\n",
                 host_out, port, (int)target_len, sp1 + 1);
    if (n < 0 || (size_t)n >= sizeof k->out) {
        bad_request(k);
        return;
    }
    answer(k, n);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct rconn *k = h->data;
    buf->base = k->head + k->len;
    buf->len = sizeof k->head - k->len;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct rconn *k = s->data;
    char *end;

    if (n == 0 || k->closing)
        return;
    if (n < 0) {
        rconn_close(k);
        return;
    }
    k->len += (size_t)n;
    end = memmem(k->head, k->len, "\r\n\r\n", 4);
    if (end != NULL) {
        handle_head(k, (size_t)(end - k->head) + 4);
        return;
    }
    if (k->len == sizeof k->head)
        bad_request(k);
}

static void on_timeout(uv_timer_t *t)
{
    rconn_close(t->data);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct wg_redirect *r = server->data;
    struct rconn *k;

    if (status < 0 || (k = calloc(1, sizeof(*k))) == NULL)
        return;
    k->r = r;
    wg_list_push_back(&r->conns_list, &k->link);
    uv_tcp_init(r->loop, &k->tcp);
    uv_timer_init(r->loop, &k->timer);
    k->tcp.data = k->timer.data = k;
    k->open = 2;
    r->handles += 2;
    r->conns++;
    if (uv_accept(server, (uv_stream_t *)&k->tcp) < 0 || r->conns > r->conns_max) {
        rconn_close(k);
        return;
    }
    uv_timer_start(&k->timer, on_timeout, r->timeout_ms, 0);
    if (uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read) < 0)
        rconn_close(k);
}

int wg_redirect_start(uv_loop_t *loop, const struct wg_config *cfg, struct wg_log *log,
                      int https_port, int shared_port, struct wg_redirect **ret_r, int *ret_port)
{
    struct wg_redirect *r = calloc(1, sizeof(*r));
    int e;

    if (r == NULL)
        return UV_ENOMEM;
    r->loop = loop;
    r->log = log;
    wg_list_init(&r->conns_list);
    r->https_port = https_port;
    r->timeout_ms = cfg->limits.head_timeout_ms;
    r->conns_max = cfg->limits.connections_max;
    e = uv_tcp_init(loop, &r->listener);
    if (e < 0) {
        free(r);
        return e;
    }
    r->listener.data = r;
    r->handles = 1;
    const struct sockaddr *sa = (const struct sockaddr *)&cfg->tls.redirect_listen.sa;
    e = shared_port < 0
            ? wg_net_listen(&r->listener, sa, 512, on_connection, ret_port)
            : wg_net_listen_reuseport(&r->listener, sa, shared_port, 512, on_connection, ret_port);
    if (e < 0) {
        wg_redirect_free(r);
        return e;
    }
    *ret_r = r;
    return 0;
}

static void listener_closed(uv_handle_t *h)
{
    struct wg_redirect *r = h->data;
    r->handles--;
    maybe_free(r);
}

void wg_redirect_free(struct wg_redirect *r)
{
    if (r == NULL || r->freeing)
        return;
    r->freeing = true;
    uv_close((uv_handle_t *)&r->listener, listener_closed);
    while (!wg_list_empty(&r->conns_list))
        rconn_close(wg_container_of(r->conns_list.next, struct rconn, link));
}
