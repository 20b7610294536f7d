/* proxy/admin.c - see admin.h. Requests are parsed with the same strict
 * head scanner and llhttp settings as the public listener. */
#include "proxy/admin.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/list.h"
#include "common/net.h"
#include "proxy/http.h"
#include "proxy/proxy.h"

#define ADMIN_MAX_HOOKS 16
#define ADMIN_BODY_MAX (1024 * 1024)
#define ADMIN_IDLE_MS 30000

struct ready_hook {
    wg_admin_ready_fn *fn;
    void *arg;
};
struct metrics_hook {
    wg_admin_metrics_fn *fn;
    void *arg;
};
struct handler_hook {
    char *prefix;
    wg_admin_handler_fn *fn;
    void *arg;
};

struct wg_admin {
    uv_loop_t *loop;
    const struct wg_config *cfg;
    struct wg_log *log;
    struct wg_proxy *px;
    uv_tcp_t listener;
    bool listening;
    bool draining;
    bool freeing;
    int open_handles;
    struct wg_list conns;
    llhttp_settings_t settings;
    struct ready_hook ready[ADMIN_MAX_HOOKS];
    size_t nready;
    struct metrics_hook metrics[ADMIN_MAX_HOOKS];
    size_t nmetrics;
    struct handler_hook handlers[ADMIN_MAX_HOOKS];
    size_t nhandlers;
    struct wg_http_field fields[128];
};

struct admin_conn {
    uv_tcp_t tcp; /* first */
    uv_timer_t timer;
    struct wg_admin *admin;
    struct wg_list link;
    int refs;
    bool closing;
    bool head_done;
    llhttp_t parser;
    struct wg_http_msg msg;
    struct wg_http_scan scan;
    struct wg_buf in;
    struct wg_buf body;
    char method[16];
    char target[1024];
    bool keep_alive;
};

struct admin_write {
    uv_write_t req;
    struct admin_conn *ac;
    bool close_after;
    char data[];
};

static void maybe_free(struct wg_admin *a)
{
    if (!a->freeing || a->open_handles > 0 || !wg_list_empty(&a->conns))
        return;
    for (size_t i = 0; i < a->nhandlers; i++)
        free(a->handlers[i].prefix);
    free(a);
}

static void ac_unref(struct admin_conn *ac)
{
    if (--ac->refs > 0)
        return;
    struct wg_admin *a = ac->admin;
    wg_buf_release(&ac->in);
    wg_buf_release(&ac->body);
    wg_list_remove(&ac->link);
    free(ac);
    maybe_free(a);
}

static void ac_handle_closed(uv_handle_t *h)
{
    ac_unref(h->data);
}

/* Reached from errors, EOF, idle timeout, Connection: close and free. */
static void ac_close(struct admin_conn *ac)
{
    if (ac->closing)
        return;
    ac->closing = true;
    uv_close((uv_handle_t *)&ac->timer, ac_handle_closed);
    uv_close((uv_handle_t *)&ac->tcp, ac_handle_closed);
}

static void ac_write_cb(uv_write_t *req, int status)
{
    struct admin_write *w = (struct admin_write *)req;
    struct admin_conn *ac = w->ac;
    if (status < 0 || w->close_after)
        ac_close(ac);
    free(w);
    ac_unref(ac);
}

static void ac_respond(struct admin_conn *ac, int status, const char *ctype, const char *body,
                       size_t body_len, bool close_after)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%s\r\n",
                     status, wg_http_reason(status), ctype, body_len,
                     close_after ? "Connection: close\r\n" : "");
    struct admin_write *w = malloc(sizeof(*w) + (size_t)n + body_len);
    if (w == NULL) {
        ac_close(ac);
        return;
    }
    memcpy(w->data, head, (size_t)n);
    if (body_len)
        memcpy(w->data + n, body, body_len);
    w->ac = ac;
    w->close_after = close_after;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)((size_t)n + body_len));
    if (uv_write(&w->req, (uv_stream_t *)&ac->tcp, &b, 1, ac_write_cb) < 0) {
        free(w);
        ac_close(ac);
        return;
    }
    ac->refs++;
}

static void ac_error(struct admin_conn *ac, int status)
{
    const char *r = wg_http_reason(status);
    char body[128];
    int n = snprintf(body, sizeof(body), "%s\n", r);
    ac_respond(ac, status, "text/plain; charset=utf-8", body, (size_t)n, true);
}

static void proxy_metrics(struct wg_admin *a, struct wg_buf *out)
{
    if (a->px == NULL)
        return;
    const struct wg_proxy_stats *s = wg_proxy_stats(a->px);
    wg_buf_appendf(out,
                   "# HELP wakegate_connections_open Client connections open now.\n"
                   "# TYPE wakegate_connections_open gauge\n"
                   "wakegate_connections_open %" PRIu64 "\n"
                   "# HELP wakegate_connections_accepted_total Client connections accepted.\n"
                   "# TYPE wakegate_connections_accepted_total counter\n"
                   "wakegate_connections_accepted_total %" PRIu64 "\n"
                   "# HELP wakegate_connections_refused_total Client connections refused over limits.connections_max.\n"
                   "# TYPE wakegate_connections_refused_total counter\n"
                   "wakegate_connections_refused_total %" PRIu64 "\n"
                   "# HELP wakegate_requests_total Request heads received.\n"
                   "# TYPE wakegate_requests_total counter\n"
                   "wakegate_requests_total %" PRIu64 "\n"
                   "# HELP wakegate_responses_total Responses sent, by status class.\n"
                   "# TYPE wakegate_responses_total counter\n",
                   s->connections_open, s->connections_accepted, s->connections_refused,
                   s->requests);
    for (int k = 1; k <= 5; k++)
        wg_buf_appendf(out, "wakegate_responses_total{class=\"%dxx\"} %" PRIu64 "\n", k,
                       s->responses_by_class[k]);
    wg_buf_appendf(out,
                   "# HELP wakegate_upstream_errors_total Upstream connect failures, resets and bad framing.\n"
                   "# TYPE wakegate_upstream_errors_total counter\n"
                   "wakegate_upstream_errors_total %" PRIu64 "\n"
                   "# HELP wakegate_upstream_retries_total Requests retried on a fresh upstream connection.\n"
                   "# TYPE wakegate_upstream_retries_total counter\n"
                   "wakegate_upstream_retries_total %" PRIu64 "\n"
                   "# HELP wakegate_client_bytes_received_total Bytes read from clients.\n"
                   "# TYPE wakegate_client_bytes_received_total counter\n"
                   "wakegate_client_bytes_received_total %" PRIu64 "\n"
                   "# HELP wakegate_client_bytes_sent_total Bytes written to clients.\n"
                   "# TYPE wakegate_client_bytes_sent_total counter\n"
                   "wakegate_client_bytes_sent_total %" PRIu64 "\n",
                   s->upstream_errors, s->upstream_retries, s->bytes_in, s->bytes_out);
}

static bool path_is(const struct wg_admin_request *r, const char *p)
{
    return r->path_len == strlen(p) && memcmp(r->path, p, r->path_len) == 0;
}

static void ac_dispatch(struct admin_conn *ac)
{
    struct wg_admin *a = ac->admin;
    struct wg_admin_request req = {0};
    struct wg_buf out;
    const char *ctype = "application/json";
    int status = 404;
    bool close_after = !ac->keep_alive || a->freeing;

    req.method = ac->method;
    req.method_len = strlen(ac->method);
    req.path = ac->target;
    req.path_len = strlen(ac->target);
    const char *q = strchr(ac->target, '?');
    if (q) {
        req.path_len = (size_t)(q - ac->target);
        req.query = q + 1;
        req.query_len = strlen(q + 1);
    }
    req.body = wg_buf_head(&ac->body);
    req.body_len = wg_buf_size(&ac->body);
    wg_buf_init(&out, 64 * 1024 * 1024);

    bool is_get = strcmp(ac->method, "GET") == 0 || strcmp(ac->method, "HEAD") == 0;
    if (path_is(&req, "/healthz")) {
        status = is_get ? 200 : 405;
        wg_buf_appendf(&out, "{\"status\":\"%s\"}\n", status == 200 ? "ok" : "method not allowed");
    } else if (path_is(&req, "/readyz")) {
        char why[160] = "";
        bool ready = !a->draining;
        if (!ready)
            snprintf(why, sizeof(why), "shutting down");
        else if (a->px != NULL && !wg_proxy_listening(a->px)) {
            ready = false;
            snprintf(why, sizeof(why), "public listener not bound");
        }
        for (size_t i = 0; ready && i < a->nready; i++)
            ready = a->ready[i].fn(a->ready[i].arg, why, sizeof(why));
        status = !is_get ? 405 : ready ? 200 : 503;
        if (ready)
            wg_buf_appendf(&out, "{\"status\":\"ready\"}\n");
        else
            wg_buf_appendf(&out, "{\"status\":\"not ready\",\"reason\":\"%s\"}\n", why);
    } else if (path_is(&req, "/metrics")) {
        status = is_get ? 200 : 405;
        ctype = "text/plain; version=0.0.4; charset=utf-8";
        proxy_metrics(a, &out);
        for (size_t i = 0; i < a->nmetrics; i++)
            a->metrics[i].fn(a->metrics[i].arg, &out);
    } else {
        for (size_t i = 0; i < a->nhandlers; i++) {
            size_t pl = strlen(a->handlers[i].prefix);
            if (req.path_len >= pl && memcmp(req.path, a->handlers[i].prefix, pl) == 0) {
                status = a->handlers[i].fn(a->handlers[i].arg, &req, &out, &ctype);
                break;
            }
        }
        if (status == 404 && wg_buf_size(&out) == 0)
            wg_buf_appendf(&out, "{\"error\":\"not found\"}\n");
    }
    bool head_only = strcmp(ac->method, "HEAD") == 0;
    ac_respond(ac, status, ctype, head_only ? "" : wg_buf_head(&out),
               head_only ? 0 : wg_buf_size(&out), close_after);
    wg_buf_release(&out);
}

static int ac_on_body(llhttp_t *p, const char *at, size_t len)
{
    struct wg_http_msg *m = p->data;
    struct admin_conn *ac = m->owner;
    return wg_buf_append(&ac->body, at, len) < 0 ? -1 : 0;
}

static int ac_on_complete(llhttp_t *p)
{
    struct wg_http_msg *m = p->data;
    m->complete = true;
    return HPE_PAUSED;
}

static void ac_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct admin_conn *ac = h->data;
    if (wg_buf_reserve(&ac->in, 16 * 1024) < 0) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = ac->in.data + ac->in.len;
    buf->len = ac->in.cap - ac->in.len;
}

/* Processes what sits in ac->in: one request at a time. */
static void ac_process(struct admin_conn *ac)
{
    struct wg_admin *a = ac->admin;
    while (!ac->closing && wg_buf_size(&ac->in) > 0) {
        const char *data = wg_buf_head(&ac->in);
        size_t len = wg_buf_size(&ac->in);
        if (!ac->head_done) {
            size_t head_len = 0;
            int r = wg_http_scan(&ac->scan, data, len, &a->cfg->limits, &head_len);
            if (r == WG_HTTP_SCAN_MORE)
                return;
            if (r != WG_HTTP_SCAN_DONE) {
                ac_error(ac, r);
                return;
            }
            llhttp_reset(&ac->parser);
            ac->msg.fields = a->fields;
            ac->msg.fields_cap = sizeof(a->fields) / sizeof(a->fields[0]);
            ac->msg.owner = ac;
            wg_http_msg_begin(&ac->msg);
            wg_buf_reset(&ac->body);
            r = wg_http_parse_head(&ac->parser, &ac->msg, data, head_len);
            if (r != 0) {
                ac_error(ac, r);
                return;
            }
            if (ac->msg.has_content_length && ac->msg.content_length > ADMIN_BODY_MAX) {
                ac_error(ac, 413);
                return;
            }
            size_t ml = ac->msg.method_len < sizeof(ac->method) - 1 ? ac->msg.method_len
                                                                    : sizeof(ac->method) - 1;
            memcpy(ac->method, ac->msg.method, ml);
            ac->method[ml] = '\0';
            if (ac->msg.target_len >= sizeof(ac->target)) {
                ac_error(ac, 414);
                return;
            }
            memcpy(ac->target, ac->msg.target, ac->msg.target_len);
            ac->target[ac->msg.target_len] = '\0';
            ac->keep_alive = !ac->msg.conn_close;
            ac->msg.fields_len = 0;
            ac->head_done = true;
            wg_buf_consume(&ac->in, head_len);
            continue;
        }
        if (ac->msg.complete)
            break;
        llhttp_errno_t e = llhttp_execute(&ac->parser, data, len);
        size_t n = len;
        if (e == HPE_PAUSED)
            n = (size_t)(llhttp_get_error_pos(&ac->parser) - data);
        else if (e != HPE_OK) {
            ac_error(ac, wg_buf_size(&ac->body) >= ADMIN_BODY_MAX ? 413 : 400);
            return;
        }
        wg_buf_consume(&ac->in, n);
        if (!ac->msg.complete)
            return;
    }
    if (!ac->closing && ac->head_done && ac->msg.complete) {
        ac->head_done = false;
        wg_http_scan_reset(&ac->scan, false);
        ac_dispatch(ac);
        uv_timer_again(&ac->timer);
        if (!ac->closing && wg_buf_size(&ac->in) > 0)
            ac_process(ac);
    }
}

static void ac_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct admin_conn *ac = s->data;
    if (n == 0 || ac->closing)
        return;
    if (n < 0) {
        ac_close(ac);
        return;
    }
    ac->in.len += (size_t)n;
    ac_process(ac);
}

static void ac_timeout(uv_timer_t *t)
{
    ac_close(t->data);
}

static void admin_on_connection(uv_stream_t *server, int status)
{
    struct wg_admin *a = server->data;
    struct admin_conn *ac;
    if (status < 0)
        return;
    ac = calloc(1, sizeof(*ac));
    if (ac == NULL)
        return;
    ac->admin = a;
    wg_list_init(&ac->link);
    if (uv_tcp_init(a->loop, &ac->tcp) < 0) {
        free(ac);
        return;
    }
    ac->tcp.data = ac;
    ac->refs = 1;
    wg_list_push_back(&a->conns, &ac->link);
    if (uv_accept(server, (uv_stream_t *)&ac->tcp) < 0) {
        ac->closing = true;
        uv_close((uv_handle_t *)&ac->tcp, ac_handle_closed);
        return;
    }
    uv_timer_init(a->loop, &ac->timer);
    ac->timer.data = ac;
    ac->refs++;
    uv_timer_start(&ac->timer, ac_timeout, ADMIN_IDLE_MS, ADMIN_IDLE_MS);
    wg_buf_init(&ac->in, a->cfg->limits.head_max + ADMIN_BODY_MAX);
    wg_buf_init(&ac->body, ADMIN_BODY_MAX);
    llhttp_init(&ac->parser, HTTP_REQUEST, &a->settings);
    ac->parser.data = &ac->msg;
    wg_http_scan_reset(&ac->scan, false);
    uv_read_start((uv_stream_t *)&ac->tcp, ac_alloc, ac_read);
}

int wg_admin_new(uv_loop_t *loop, const struct wg_config *cfg, struct wg_log *log,
                 struct wg_proxy *px, struct wg_admin **ret_admin)
{
    struct wg_admin *a = calloc(1, sizeof(*a));
    int r;
    if (a == NULL)
        return -ENOMEM;
    a->loop = loop;
    a->cfg = cfg;
    a->log = log;
    a->px = px;
    wg_list_init(&a->conns);
    wg_http_settings_init(&a->settings);
    a->settings.on_body = ac_on_body;
    a->settings.on_message_complete = ac_on_complete;
    r = uv_tcp_init(loop, &a->listener);
    if (r < 0) {
        free(a);
        return r;
    }
    a->listener.data = a;
    a->open_handles = 1;
    *ret_admin = a;
    return 0;
}

int wg_admin_listen(struct wg_admin *a, int *ret_port)
{
    int r = wg_net_listen(&a->listener, (const struct sockaddr *)&a->cfg->admin_listen.sa, 128,
                          admin_on_connection, ret_port);
    if (r == 0)
        a->listening = true;
    return r;
}

int wg_admin_add_ready_check(struct wg_admin *a, wg_admin_ready_fn *fn, void *arg)
{
    if (a->nready >= ADMIN_MAX_HOOKS)
        return -ENOSPC;
    a->ready[a->nready++] = (struct ready_hook){fn, arg};
    return 0;
}

int wg_admin_add_metrics(struct wg_admin *a, wg_admin_metrics_fn *fn, void *arg)
{
    if (a->nmetrics >= ADMIN_MAX_HOOKS)
        return -ENOSPC;
    a->metrics[a->nmetrics++] = (struct metrics_hook){fn, arg};
    return 0;
}

int wg_admin_add_handler(struct wg_admin *a, const char *prefix, wg_admin_handler_fn *fn,
                         void *arg)
{
    if (a->nhandlers >= ADMIN_MAX_HOOKS)
        return -ENOSPC;
    char *p = strdup(prefix);
    if (p == NULL)
        return -ENOMEM;
    a->handlers[a->nhandlers++] = (struct handler_hook){p, fn, arg};
    return 0;
}

void wg_admin_set_draining(struct wg_admin *a)
{
    a->draining = true;
}

static void listener_closed(uv_handle_t *h)
{
    struct wg_admin *a = h->data;
    a->open_handles--;
    maybe_free(a);
}

void wg_admin_free(struct wg_admin *a)
{
    if (a == NULL || a->freeing)
        return;
    a->freeing = true;
    struct wg_list *n = a->conns.next;
    while (n != &a->conns) {
        struct admin_conn *ac = wg_container_of(n, struct admin_conn, link);
        n = n->next;
        ac_close(ac);
    }
    uv_close((uv_handle_t *)&a->listener, listener_closed);
}
