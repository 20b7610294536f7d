/* proxy/admin.c - see admin.h. Requests are parsed with the same strict
 * head scanner and llhttp settings as the public listener.
 *
 * Ownership, written down once:
 * - A connection counts its open handles and write requests in flight
 *   (refs); its memory is freed when that reaches zero. ac_close() only
 *   marks and starts the closes.
 * - A request handed to an async handler is a struct wg_admin_req, owned by
 *   the handler until it finishes it. The connection points at it (ac->req)
 *   and it at the connection (req->ac) while both live; when the connection
 *   closes first the two are unlinked (req->ac = NULL: "dead") and the
 *   handler's cancel callback runs. A dead request never touches a
 *   connection, so it may outlive the connection and the admin itself.
 * - The cancel callback never runs inside a wg_admin_* call made with the
 *   request: those calls unlink the request before anything that can close
 *   the connection, and report a failure by their return value. */
#include "proxy/admin.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/hist.h"
#include "common/list.h"
#include "common/net.h"
#include "common/http_head.h"
#include "proxy/proxy.h"

#define ADMIN_MAX_HOOKS 16
#define ADMIN_IDLE_MS 30000
#define ADMIN_HEAD_MAX 1024 /* our own response heads, without extra headers */

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
    wg_admin_async_fn *afn;
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

enum auth { AUTH_MISSING = 0, AUTH_BAD, AUTH_OK };

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
    uint8_t minor;
    enum auth auth;
    bool has_last_event_id;
    size_t last_event_id_len;
    char last_event_id[WG_ADMIN_LAST_EVENT_ID_MAX + 1];
    struct wg_admin_req *req; /* owned by a handler, not answered yet */
    bool in_dispatch;         /* a handler is running on our stack */
    bool resume;              /* the timer's next run processes buffered input */
    bool close_when_drained;  /* close once queued reaches 0 */
    size_t queued;            /* bytes in write requests in flight */
};

struct wg_admin_req {
    struct admin_conn *ac; /* NULL once dead */
    wg_admin_cancel_fn *cancel;
    void *cancel_arg;
    bool head_only;
    bool streaming;
    bool chunked;
};

struct admin_write {
    uv_write_t req;
    struct admin_conn *ac;
    size_t len;
    char data[];
};

static void ac_process(struct admin_conn *ac);
static void ac_timer_cb(uv_timer_t *t);

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

/* Unlinks the pending request, if any: it is dead from now on. */
static struct wg_admin_req *ac_unlink_req(struct admin_conn *ac)
{
    struct wg_admin_req *req = ac->req;
    if (req != NULL) {
        ac->req = NULL;
        req->ac = NULL;
    }
    return req;
}

/* Reached from errors, EOF, idle timeout, Connection: close after the last
 * write, a slow stream reader, and wg_admin_free(); idempotent. A pending
 * request is cancelled last, when the connection is already closing, so the
 * handler's cancel callback sees a consistent state. */
static void ac_close(struct admin_conn *ac)
{
    if (ac->closing)
        return;
    ac->closing = true;
    uv_close((uv_handle_t *)&ac->timer, ac_handle_closed);
    uv_close((uv_handle_t *)&ac->tcp, ac_handle_closed);
    struct wg_admin_req *req = ac_unlink_req(ac);
    if (req != NULL && req->cancel != NULL) {
        wg_admin_cancel_fn *fn = req->cancel;
        req->cancel = NULL;
        fn(req, req->cancel_arg);
    }
}

static void ac_write_cb(uv_write_t *wr, int status)
{
    struct admin_write *w = (struct admin_write *)wr;
    struct admin_conn *ac = w->ac;
    ac->queued -= w->len;
    if (status < 0 || (ac->close_when_drained && ac->queued == 0))
        ac_close(ac);
    free(w);
    ac_unref(ac);
}

/* Queues the concatenation of parts (copied). Returns 0, or -EPIPE when the
 * connection is closing or the write could not start; never closes the
 * connection itself (the caller decides, after unlinking what it must). */
static int ac_write(struct admin_conn *ac, const uv_buf_t *parts, size_t nparts)
{
    size_t total = 0, off = 0;
    if (ac->closing)
        return -EPIPE;
    for (size_t i = 0; i < nparts; i++)
        total += parts[i].len;
    if (total == 0)
        return 0;
    struct admin_write *w = malloc(sizeof(*w) + total);
    if (w == NULL)
        return -EPIPE;
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i].len)
            memcpy(w->data + off, parts[i].base, parts[i].len);
        off += parts[i].len;
    }
    w->ac = ac;
    w->len = total;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)total);
    if (uv_write(&w->req, (uv_stream_t *)&ac->tcp, &b, 1, ac_write_cb) < 0) {
        free(w);
        return -EPIPE;
    }
    ac->refs++;
    ac->queued += total;
    return 0;
}

/* Asks the connection to close once everything queued has been written. */
static void ac_close_when_drained(struct admin_conn *ac)
{
    ac->close_when_drained = true;
    if (ac->queued == 0)
        ac_close(ac);
}

/* A whole response with Content-Length framing. headers: extra lines or
 * NULL. */
static void ac_send(struct admin_conn *ac, int status, const char *ctype, const char *headers,
                    const char *body, size_t body_len, bool head_only, bool close_after)
{
    char head[ADMIN_HEAD_MAX];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%s",
                     status, wg_http_reason(status), ctype, body_len,
                     close_after ? "Connection: close\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(head)) {
        ac_close(ac);
        return;
    }
    uv_buf_t parts[4] = {
        uv_buf_init(head, (unsigned)n),
        uv_buf_init((char *)(headers ? headers : ""), headers ? (unsigned)strlen(headers) : 0),
        uv_buf_init((char *)"\r\n", 2),
        uv_buf_init((char *)body, head_only ? 0 : (unsigned)body_len),
    };
    if (ac_write(ac, parts, 4) < 0) {
        ac_close(ac);
        return;
    }
    if (close_after)
        ac_close_when_drained(ac);
}

static void ac_error(struct admin_conn *ac, int status)
{
    const char *r = wg_http_reason(status);
    char body[128];
    int n = snprintf(body, sizeof(body), "%s\n", r);
    ac_send(ac, status, "text/plain; charset=utf-8", NULL, body, (size_t)n, false, true);
}

/* After an async answer: go on with what the client pipelined, from the
 * loop (the timer at 0), not from the handler's stack. */
static void ac_answered(struct admin_conn *ac)
{
    if (ac->closing || ac->close_when_drained || ac->in_dispatch)
        return;
    ac->resume = true;
    uv_timer_start(&ac->timer, ac_timer_cb, 0, ADMIN_IDLE_MS);
}

/* wakegate_route_requests_total: every class of every row, zeros included,
 * so a series exists before its first request. */
static void route_metrics(const struct wg_proxy *px, struct wg_buf *out)
{
    const char *label;
    const uint64_t *by_class;

    wg_hist_family(out, "wakegate_route_requests_total", "counter",
                   "Responses sent, by route and status class (route \"none\": no route "
                   "matched, or the request was refused before routing).");
    for (size_t i = 0; wg_proxy_route_stats(px, i, &label, &by_class); i++) {
        for (int k = 1; k <= 5; k++) {
            wg_buf_appendf(out, "wakegate_route_requests_total{route=\"");
            wg_hist_label_escape(out, label);
            wg_buf_appendf(out, "\",class=\"%dxx\"} %" PRIu64 "\n", k, by_class[k]);
        }
    }
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
                   "# HELP wakegate_connections_refused_total Client connections refused over "
                   "limits.connections_max.\n"
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
    wg_buf_appendf(
        out,
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
        "wakegate_client_bytes_sent_total %" PRIu64 "\n"
        "# HELP wakegate_upstream_idle_connections Idle upstream connections in the keep-alive "
        "pool.\n"
        "# TYPE wakegate_upstream_idle_connections gauge\n"
        "wakegate_upstream_idle_connections %zu\n",
        s->upstream_errors, s->upstream_retries, s->bytes_in, s->bytes_out,
        wg_proxy_upstream_idle(a->px));
    route_metrics(a->px, out);
    wg_hist_family(out, "wakegate_request_duration_seconds", "histogram",
                   "Time from the first byte of a request head to the end of its response "
                   "(an upgrade: to the 101 head); one per response counted in "
                   "wakegate_responses_total.");
    wg_hist_write(out, "wakegate_request_duration_seconds", NULL, &s->request_duration);
    wg_hist_family(out, "wakegate_upstream_latency_seconds", "histogram",
                   "Time from taking an upstream connection (its connect included when not "
                   "pooled) to the first byte of the upstream's answer.");
    wg_hist_write(out, "wakegate_upstream_latency_seconds", NULL, &s->upstream_latency);
    wg_hist_family(out, "wakegate_wake_first_byte_seconds", "histogram",
                   "Requests held while their session woke: time from the start of the hold "
                   "to the first byte from the session.");
    wg_hist_write(out, "wakegate_wake_first_byte_seconds", NULL, &s->wake_first_byte);
    wg_buf_appendf(out,
                   "# HELP wakegate_held_requests_released_total Requests held while their "
                   "session woke, by how the hold ended.\n"
                   "# TYPE wakegate_held_requests_released_total counter\n"
                   "wakegate_held_requests_released_total{outcome=\"served\"} %" PRIu64 "\n"
                   "wakegate_held_requests_released_total{outcome=\"timeout\"} %" PRIu64 "\n"
                   "wakegate_held_requests_released_total{outcome=\"failed\"} %" PRIu64 "\n"
                   "wakegate_held_requests_released_total{outcome=\"abandoned\"} %" PRIu64 "\n",
                   s->held_released[WG_HOLD_SERVED], s->held_released[WG_HOLD_TIMEOUT],
                   s->held_released[WG_HOLD_FAILED], s->held_released[WG_HOLD_ABANDONED]);
}

/* ---- async requests ----------------------------------------------------- */

bool wg_admin_req_alive(const struct wg_admin_req *req)
{
    return req != NULL && req->ac != NULL;
}

void wg_admin_req_on_cancel(struct wg_admin_req *req, wg_admin_cancel_fn *fn, void *arg)
{
    req->cancel = fn;
    req->cancel_arg = fn ? arg : NULL;
}

void wg_admin_respond_headers(struct wg_admin_req *req, int status, const char *content_type,
                              const char *headers, const char *body, size_t len)
{
    if (req == NULL)
        return;
    if (req->streaming) { /* a programmer error; end what was started */
        wg_admin_stream_end(req);
        return;
    }
    struct admin_conn *ac = req->ac;
    bool head_only = req->head_only;
    free(req);
    if (ac == NULL)
        return;
    ac->req = NULL;
    ac_send(ac, status, content_type ? content_type : "application/json", headers, body, len,
            head_only, !ac->keep_alive || ac->admin->freeing);
    ac_answered(ac);
}

void wg_admin_respond(struct wg_admin_req *req, int status, const char *content_type,
                      const char *body, size_t len)
{
    wg_admin_respond_headers(req, status, content_type, NULL, body, len);
}

/* Appends s to out as a JSON string body without quotes. */
static void json_escape(struct wg_buf *out, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            wg_buf_appendf(out, "\\%c", c);
        else if (c < 0x20)
            wg_buf_appendf(out, "\\u%04x", c);
        else
            wg_buf_append(out, s, 1);
    }
}

void wg_admin_respond_error(struct wg_admin_req *req, int status, const char *headers,
                            const char *msg)
{
    struct wg_buf out;
    wg_buf_init(&out, 64 * 1024);
    wg_buf_appendf(&out, "{\"error\":\"");
    json_escape(&out, msg ? msg : wg_http_reason(status));
    wg_buf_appendf(&out, "\"}\n");
    wg_admin_respond_headers(req, status, "application/json", headers, wg_buf_head(&out),
                             wg_buf_size(&out));
    wg_buf_release(&out);
}

int wg_admin_stream_begin(struct wg_admin_req *req, int status, const char *content_type,
                          const char *headers)
{
    struct admin_conn *ac = req->ac;
    char head[ADMIN_HEAD_MAX];
    if (req->streaming)
        return -EINVAL;
    req->streaming = true;
    if (ac == NULL)
        return -EPIPE;
    /* HTTP/1.0 has no chunked coding: the close ends the body. */
    req->chunked = ac->minor >= 1;
    bool close_after = !req->chunked || !ac->keep_alive || ac->admin->freeing;
    if (close_after)
        ac->keep_alive = false;
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nCache-Control: no-store\r\n%s%s",
                     status, wg_http_reason(status), content_type ? content_type : "text/plain",
                     req->chunked ? "Transfer-Encoding: chunked\r\n" : "",
                     close_after ? "Connection: close\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(head))
        return -EINVAL;
    uv_buf_t parts[3] = {
        uv_buf_init(head, (unsigned)n),
        uv_buf_init((char *)(headers ? headers : ""), headers ? (unsigned)strlen(headers) : 0),
        uv_buf_init((char *)"\r\n", 2),
    };
    if (req->head_only) {
        /* HEAD: the head alone, then the exchange is over for the client. */
        req->chunked = false;
    }
    if (ac_write(ac, parts, 3) < 0) {
        ac_unlink_req(ac);
        ac_close(ac);
        return -EPIPE;
    }
    return 0;
}

int wg_admin_stream_write(struct wg_admin_req *req, const void *data, size_t len)
{
    struct admin_conn *ac = req->ac;
    char size_line[24];
    int n = 0;

    if (ac == NULL || !req->streaming)
        return -EPIPE;
    if (len == 0 || req->head_only)
        return 0;
    if (req->chunked)
        n = snprintf(size_line, sizeof(size_line), "%zx\r\n", len);
    size_t framed = len + (req->chunked ? (size_t)n + 2 : 0);
    if (ac->queued + framed > WG_ADMIN_STREAM_QUEUE_MAX) {
        WG_DEBUG(ac->admin->log, "admin", "stream client reads too slowly, dropping it",
                 "queued=%zu", ac->queued);
        ac_unlink_req(ac);
        ac_close(ac);
        return -EPIPE;
    }
    uv_buf_t parts[3] = {
        uv_buf_init(size_line, (unsigned)n),
        uv_buf_init((char *)data, (unsigned)len),
        uv_buf_init((char *)"\r\n", req->chunked ? 2 : 0),
    };
    if (ac_write(ac, parts, 3) < 0) {
        ac_unlink_req(ac);
        ac_close(ac);
        return -EPIPE;
    }
    return 0;
}

size_t wg_admin_stream_queued(const struct wg_admin_req *req)
{
    return req->ac ? req->ac->queued : 0;
}

void wg_admin_stream_end(struct wg_admin_req *req)
{
    if (req == NULL)
        return;
    struct admin_conn *ac = req->ac;
    bool chunked = req->chunked, head_only = req->head_only;
    free(req);
    if (ac == NULL)
        return;
    ac->req = NULL;
    if (chunked && !head_only) {
        uv_buf_t last = uv_buf_init((char *)"0\r\n\r\n", 5);
        if (ac_write(ac, &last, 1) < 0) {
            ac_close(ac);
            return;
        }
    }
    if (!ac->keep_alive)
        ac_close_when_drained(ac);
    else
        ac_answered(ac);
}

bool wg_admin_bearer_ok(const char *token, const char *value, size_t len)
{
    static const char scheme[] = "bearer";
    const size_t sl = sizeof(scheme) - 1;
    size_t i, tl;

    if (token == NULL || token[0] == '\0' || value == NULL)
        return false;
    if (len <= sl || strncasecmp(value, scheme, sl) != 0 || (value[sl] != ' ' && value[sl] != '\t'))
        return false;
    for (i = sl; i < len && (value[i] == ' ' || value[i] == '\t'); i++)
        ;
    const unsigned char *given = (const unsigned char *)value + i;
    size_t gl = len - i;
    tl = strlen(token);
    /* Every byte of the token is compared whatever the input: the time
     * depends on the token's length, never on where a guess goes wrong. */
    volatile unsigned diff = gl != tl;
    for (size_t k = 0; k < tl; k++)
        diff |= (unsigned char)token[k] ^ (k < gl ? given[k] : 0u);
    return diff == 0;
}

static bool path_is(const struct wg_admin_request *r, const char *p)
{
    return r->path_len == strlen(p) && memcmp(r->path, p, r->path_len) == 0;
}

/* /v1 and everything under /v1/ is the token-protected API. */
static bool path_needs_token(const struct wg_admin_request *r)
{
    return (r->path_len == 3 && memcmp(r->path, "/v1", 3) == 0) ||
           (r->path_len > 3 && memcmp(r->path, "/v1/", 4) == 0);
}

static bool path_is_builtin(const struct wg_admin_request *r)
{
    return path_is(r, "/healthz") || path_is(r, "/readyz") || path_is(r, "/metrics");
}

/* The built-in paths, or 404. */
static void ac_dispatch_builtin(struct admin_conn *ac, const struct wg_admin_request *req,
                                bool close_after)
{
    struct wg_admin *a = ac->admin;
    struct wg_buf out;
    const char *ctype = "application/json";
    const char *headers = NULL;
    int status = 404;
    bool is_get = strcmp(ac->method, "GET") == 0 || strcmp(ac->method, "HEAD") == 0;

    wg_buf_init(&out, 64 * 1024 * 1024);
    if (path_is(req, "/healthz")) {
        status = is_get ? 200 : 405;
        wg_buf_appendf(&out, "{\"status\":\"%s\"}\n", status == 200 ? "ok" : "method not allowed");
    } else if (path_is(req, "/readyz")) {
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
        else {
            wg_buf_appendf(&out, "{\"status\":\"not ready\",\"reason\":\"");
            json_escape(&out, why);
            wg_buf_appendf(&out, "\"}\n");
        }
    } else if (path_is(req, "/metrics")) {
        status = is_get ? 200 : 405;
        ctype = "text/plain; version=0.0.4; charset=utf-8";
        proxy_metrics(a, &out);
        for (size_t i = 0; i < a->nmetrics; i++)
            a->metrics[i].fn(a->metrics[i].arg, &out);
    } else {
        wg_buf_appendf(&out, "{\"error\":\"not found\"}\n");
    }
    if (status == 405)
        headers = "Allow: GET, HEAD\r\n";
    ac_send(ac, status, ctype, headers, wg_buf_head(&out), wg_buf_size(&out),
            strcmp(ac->method, "HEAD") == 0, close_after);
    wg_buf_release(&out);
}

/* Answers a /v1/ request that lacks a valid token; true when it did. */
static bool ac_refuse_unauthenticated(struct admin_conn *ac, bool close_after)
{
    static const char not_configured[] = "{\"error\":\"admin token not configured\"}\n";
    static const char unauthorized[] = "{\"error\":\"unauthorized\"}\n";
    const char *token = ac->admin->cfg->admin_token;
    bool head_only = strcmp(ac->method, "HEAD") == 0;

    if (token == NULL || token[0] == '\0') {
        ac_send(ac, 503, "application/json", NULL, not_configured, sizeof(not_configured) - 1,
                head_only, close_after);
        return true;
    }
    if (ac->auth == AUTH_OK)
        return false;
    ac_send(ac, 401, "application/json",
            ac->auth == AUTH_MISSING
                ? "WWW-Authenticate: Bearer realm=\"wakegate\"\r\n"
                : "WWW-Authenticate: Bearer realm=\"wakegate\", error=\"invalid_token\"\r\n",
            unauthorized, sizeof(unauthorized) - 1, head_only, close_after);
    return true;
}

static void ac_dispatch(struct admin_conn *ac)
{
    struct wg_admin *a = ac->admin;
    struct wg_admin_request req = {0};
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
    if (ac->has_last_event_id) {
        req.last_event_id = ac->last_event_id;
        req.last_event_id_len = ac->last_event_id_len;
    }

    if (path_needs_token(&req) && ac_refuse_unauthenticated(ac, close_after))
        return;
    const struct handler_hook *h = NULL;
    for (size_t i = 0; !path_is_builtin(&req) && h == NULL && i < a->nhandlers; i++) {
        size_t pl = strlen(a->handlers[i].prefix);
        if (req.path_len >= pl && memcmp(req.path, a->handlers[i].prefix, pl) == 0)
            h = &a->handlers[i];
    }
    if (h != NULL) {
        struct wg_admin_req *r = calloc(1, sizeof(*r));
        if (r == NULL) {
            ac_error(ac, 500);
            return;
        }
        r->ac = ac;
        r->head_only = strcmp(ac->method, "HEAD") == 0;
        ac->req = r;
        /* The handler owns the deadline from now on. */
        uv_timer_stop(&ac->timer);
        ac->in_dispatch = true;
        h->afn(h->arg, r, &req);
        ac->in_dispatch = false;
        return;
    }
    ac_dispatch_builtin(ac, &req, close_after);
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

/* What the dispatch needs from the head's fields, taken while they are
 * valid (they point into the shared field array and ac->in). */
static void ac_take_fields(struct admin_conn *ac)
{
    const struct wg_http_field *f = wg_http_find(&ac->msg, "authorization");
    if (f == NULL)
        ac->auth = AUTH_MISSING;
    else
        ac->auth = wg_admin_bearer_ok(ac->admin->cfg->admin_token, f->value, f->value_len)
                       ? AUTH_OK
                       : AUTH_BAD;
    f = wg_http_find(&ac->msg, "last-event-id");
    ac->has_last_event_id = f != NULL;
    ac->last_event_id_len = 0;
    ac->last_event_id[0] = '\0';
    if (f != NULL && f->value_len <= WG_ADMIN_LAST_EVENT_ID_MAX) {
        memcpy(ac->last_event_id, f->value, f->value_len);
        ac->last_event_id[f->value_len] = '\0';
        ac->last_event_id_len = f->value_len;
    }
}

/* Processes what sits in ac->in: one request at a time, and none while a
 * handler still owns one. */
static void ac_process(struct admin_conn *ac)
{
    struct wg_admin *a = ac->admin;
    while (!ac->closing && ac->req == NULL && !ac->close_when_drained && wg_buf_size(&ac->in) > 0) {
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
            if (ac->msg.has_content_length && ac->msg.content_length > WG_ADMIN_BODY_MAX) {
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
            ac->minor = ac->msg.minor;
            ac_take_fields(ac);
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
            ac_error(ac, wg_buf_size(&ac->body) >= WG_ADMIN_BODY_MAX ? 413 : 400);
            return;
        }
        wg_buf_consume(&ac->in, n);
        if (!ac->msg.complete)
            return;
    }
    if (!ac->closing && ac->req == NULL && ac->head_done && ac->msg.complete) {
        ac->head_done = false;
        wg_http_scan_reset(&ac->scan, false);
        ac_dispatch(ac);
        if (ac->closing || ac->req != NULL)
            return; /* a handler owns the request: its answer resumes us */
        uv_timer_again(&ac->timer);
        if (wg_buf_size(&ac->in) > 0)
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

/* Idle timeout, or (resume) the turn after an async answer. */
static void ac_timer_cb(uv_timer_t *t)
{
    struct admin_conn *ac = t->data;
    if (ac->resume) {
        ac->resume = false;
        ac_process(ac);
        return;
    }
    if (ac->req == NULL)
        ac_close(ac);
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
    uv_timer_start(&ac->timer, ac_timer_cb, ADMIN_IDLE_MS, ADMIN_IDLE_MS);
    wg_buf_init(&ac->in, a->cfg->limits.head_max + WG_ADMIN_BODY_MAX);
    wg_buf_init(&ac->body, WG_ADMIN_BODY_MAX);
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

int wg_admin_add_async_handler(struct wg_admin *a, const char *prefix, wg_admin_async_fn *fn,
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

void wg_admin_remove_hooks(struct wg_admin *a, const void *arg)
{
    size_t k = 0;
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->nready; i++)
        if (a->ready[i].arg != arg)
            a->ready[k++] = a->ready[i];
    a->nready = k;
    k = 0;
    for (size_t i = 0; i < a->nmetrics; i++)
        if (a->metrics[i].arg != arg)
            a->metrics[k++] = a->metrics[i];
    a->nmetrics = k;
    k = 0;
    for (size_t i = 0; i < a->nhandlers; i++) {
        if (a->handlers[i].arg != arg)
            a->handlers[k++] = a->handlers[i];
        else
            free(a->handlers[i].prefix);
    }
    a->nhandlers = k;
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
