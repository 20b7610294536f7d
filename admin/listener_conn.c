/* admin/listener_conn.c - one connection of the admin listener: reading,
 * the request head and body, writing, closing. Requests are parsed with
 * the same strict head scanner and llhttp settings as the public listener
 * (common/http_head). See listener_int.h for who owns what. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/listener_int.h"

static void ac_process(struct admin_conn *ac);
static void ac_timer_cb(uv_timer_t *t);

static void ac_unref(struct admin_conn *ac)
{
    if (--ac->refs > 0)
        return;
    struct wg_admin *a = ac->admin;
    wg_buf_release(&ac->in);
    wg_buf_release(&ac->body);
    wg_list_remove(&ac->link);
    free(ac);
    admin_maybe_free(a);
}

static void ac_handle_closed(uv_handle_t *h)
{
    ac_unref(h->data);
}

struct wg_admin_req *admin_conn_unlink_req(struct admin_conn *ac)
{
    struct wg_admin_req *req = ac->req;
    if (req != NULL) {
        ac->req = NULL;
        req->ac = NULL;
    }
    return req;
}

/* A pending request is cancelled last, when the connection is already
 * closing, so the handler's cancel callback sees a consistent state. */
void admin_conn_close(struct admin_conn *ac)
{
    if (ac->closing)
        return;
    ac->closing = true;
    uv_close((uv_handle_t *)&ac->timer, ac_handle_closed);
    uv_close((uv_handle_t *)&ac->tcp, ac_handle_closed);
    struct wg_admin_req *req = admin_conn_unlink_req(ac);
    if (req != NULL && req->cancel != NULL) {
        wg_admin_cancel_fn *fn = req->cancel;
        req->cancel = NULL;
        fn(req, req->cancel_arg);
    }
}

/* ---- writing ------------------------------------------------------------------------------- */

struct admin_write {
    uv_write_t req;
    struct admin_conn *ac;
    size_t len;
    char data[];
};

static void ac_write_cb(uv_write_t *wr, int status)
{
    struct admin_write *w = (struct admin_write *)wr;
    struct admin_conn *ac = w->ac;
    ac->queued -= w->len;
    if (status < 0 || (ac->close_when_drained && ac->queued == 0))
        admin_conn_close(ac);
    free(w);
    ac_unref(ac);
}

int admin_conn_write(struct admin_conn *ac, const uv_buf_t *parts, size_t nparts)
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

void admin_conn_close_when_drained(struct admin_conn *ac)
{
    ac->close_when_drained = true;
    if (ac->queued == 0)
        admin_conn_close(ac);
}

void admin_conn_send(struct admin_conn *ac, int status, const char *ctype, const char *headers,
                     const char *body, size_t body_len, bool head_only, bool close_after)
{
    char head[ADMIN_HEAD_MAX];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%s",
                     status, wg_http_reason(status), ctype, body_len,
                     close_after ? "Connection: close\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(head)) {
        admin_conn_close(ac);
        return;
    }
    uv_buf_t parts[4] = {
        uv_buf_init(head, (unsigned)n),
        uv_buf_init((char *)(headers ? headers : ""), headers ? (unsigned)strlen(headers) : 0),
        uv_buf_init((char *)"\r\n", 2),
        uv_buf_init((char *)body, head_only ? 0 : (unsigned)body_len),
    };
    if (admin_conn_write(ac, parts, 4) < 0) {
        admin_conn_close(ac);
        return;
    }
    if (close_after)
        admin_conn_close_when_drained(ac);
}

void admin_conn_error(struct admin_conn *ac, int status)
{
    const char *r = wg_http_reason(status);
    char body[128];
    int n = snprintf(body, sizeof(body), "%s\n", r);
    admin_conn_send(ac, status, "text/plain; charset=utf-8", NULL, body, (size_t)n, false, true);
}

/* The timer at 0 resumes us on the next loop turn. */
void admin_conn_answered(struct admin_conn *ac)
{
    if (ac->closing || ac->close_when_drained || ac->in_dispatch)
        return;
    ac->resume = true;
    uv_timer_start(&ac->timer, ac_timer_cb, 0, ADMIN_IDLE_MS);
}

/* ---- reading ------------------------------------------------------------------------------- */

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

void admin_conn_settings(llhttp_settings_t *settings)
{
    wg_http_settings_init(settings);
    settings->on_body = ac_on_body;
    settings->on_message_complete = ac_on_complete;
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
    ac->auth = admin_auth_of(ac, f ? f->value : NULL, f ? f->value_len : 0);
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

/* Parses the complete head of head_len bytes at the start of ac->in and
 * copies what the request needs. Returns 0, or the status to refuse it with. */
static int ac_take_head(struct admin_conn *ac, const char *data, size_t head_len)
{
    struct wg_admin *a = ac->admin;
    llhttp_reset(&ac->parser);
    ac->msg.fields = a->fields;
    ac->msg.fields_cap = sizeof(a->fields) / sizeof(a->fields[0]);
    ac->msg.owner = ac;
    wg_http_msg_begin(&ac->msg);
    wg_buf_reset(&ac->body);
    int r = wg_http_parse_head(&ac->parser, &ac->msg, data, head_len);
    if (r != 0)
        return r;
    if (ac->msg.has_content_length && ac->msg.content_length > WG_ADMIN_BODY_MAX)
        return 413;
    size_t ml =
        ac->msg.method_len < sizeof(ac->method) - 1 ? ac->msg.method_len : sizeof(ac->method) - 1;
    memcpy(ac->method, ac->msg.method, ml);
    ac->method[ml] = '\0';
    if (ac->msg.target_len >= sizeof(ac->target))
        return 414;
    memcpy(ac->target, ac->msg.target, ac->msg.target_len);
    ac->target[ac->msg.target_len] = '\0';
    ac->keep_alive = !ac->msg.conn_close;
    ac->minor = ac->msg.minor;
    ac_take_fields(ac);
    ac->msg.fields_len = 0;
    return 0;
}

/* Reads one step of the request in ac->in: the head when it is complete,
 * else body bytes. Returns 1 to go on, 0 to wait for more input, -1 when
 * the request was refused (the connection closes). */
static int ac_read_step(struct admin_conn *ac)
{
    const char *data = wg_buf_head(&ac->in);
    size_t len = wg_buf_size(&ac->in);
    if (!ac->head_done) {
        size_t head_len = 0;
        int r = wg_http_scan(&ac->scan, data, len, &ac->admin->cfg->limits, &head_len);
        if (r == WG_HTTP_SCAN_MORE)
            return 0;
        if (r == WG_HTTP_SCAN_DONE)
            r = ac_take_head(ac, data, head_len);
        if (r != 0) {
            admin_conn_error(ac, r);
            return -1;
        }
        ac->head_done = true;
        wg_buf_consume(&ac->in, head_len);
        return 1;
    }
    size_t n;
    llhttp_errno_t e =
        wg_http_execute_body(&ac->parser, &ac->msg, data, len, ac->admin->cfg->limits.head_max, &n);
    if (e != HPE_OK && e != HPE_PAUSED) {
        admin_conn_error(ac, wg_buf_size(&ac->body) >= WG_ADMIN_BODY_MAX ? 413 : 400);
        return -1;
    }
    wg_buf_consume(&ac->in, n);
    /* Paused before a trailer section that has already arrived: go on. */
    return ac->msg.complete || (ac->msg.in_trailers && wg_buf_size(&ac->in) > 0) ? 1 : 0;
}

/* Processes what sits in ac->in: one request at a time, and none while a
 * handler still owns one. */
static void ac_process(struct admin_conn *ac)
{
    while (!ac->closing && ac->req == NULL && !ac->close_when_drained && wg_buf_size(&ac->in) > 0) {
        if (ac->head_done && ac->msg.complete)
            break;
        if (ac_read_step(ac) <= 0)
            return;
    }
    if (!ac->closing && ac->req == NULL && ac->head_done && ac->msg.complete) {
        ac->head_done = false;
        wg_http_scan_reset(&ac->scan, false);
        admin_dispatch(ac);
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
        admin_conn_close(ac);
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
        admin_conn_close(ac);
}

void admin_conn_accept(uv_stream_t *server, int status)
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
