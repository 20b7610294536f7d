/* proxy/h2.c - an HTTP/2 server session (nghttp2) whose request streams
 * are bridged, each to a client connection of its own in memory, to the
 * HTTP/1.1 pipeline (proxy/h2.h says why and what is bounded). */
#include "proxy/h2.h"

#include <errno.h>
#include <inttypes.h>
#include <llhttp.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/list.h"

#define SUBSYS "h2"
/* How often the session looks for stalled streams and idleness. */
#define TICK_MS 250
/* Request bytes handed to a stream's connection at a time, as one socket
 * read would: it may stop reading after any of them. */
#define DELIVER_MAX (16 * 1024)
/* A header list this many times over the limit is an attack, not a big
 * cookie: the connection ends instead of a 431. */
#define HEADER_ABUSE_FACTOR 4
/* Request bytes waiting for the stream's connection at or above which its
 * window stays closed (its DATA is not consumed). */
#define REQ_PENDING_MAX (64 * 1024)
/* The response head written by the pipeline, at most. */
#define RESP_HEAD_MAX (64 * 1024)
#define RESP_FIELDS_MAX 256
/* Frames gathered into one write: a TLS record's worth. */
#define FLUSH_CHUNK 16384
/* Response bytes a stream may hold past the mark its connection stops
 * reading the upstream at: what one upstream read and a head add. */
#define BODY_SLACK (256 * 1024)

struct bucket {
    double tokens;
    uint64_t at_ms;
};

struct wg_h2_stream {
    struct wg_list link;
    struct wg_list dirty_link; /* in h->dirty while it has work for the service pass */
    struct wg_h2 *h;
    int32_t id;
    void *conn;        /* the stream's connection; NULL before it and once it left */
    bool conn_reading; /* the connection takes request bytes now */
    bool abort_conn;   /* the client left: the service pass ends the connection */
    bool dirty;
    bool stream_closed;    /* nghttp2 closed the stream */
    struct wg_buf req_out; /* request bytes the connection has not taken */
    size_t reported;       /* the send queue size the connection was last told */

    /* the request */
    struct wg_buf head;    /* regular fields as "name: value\r\n" */
    struct wg_buf cookies; /* cookie crumbs joined by "; " (RFC 9113 8.2.3) */
    char method[24];
    char *path, *authority, *host;
    bool has_length;   /* content-length given */
    bool chunked;      /* the body goes as chunks (no content-length) */
    bool head_method;  /* HEAD: the response has no body */
    bool headers_done; /* the request head went to the pipeline */
    bool req_ended;    /* END_STREAM seen */
    bool too_large;    /* over a header limit: answered 431 */
    bool bad_request;  /* a request line or Host HTTP/1.1 could not carry: 400 */
    size_t header_bytes;
    unsigned header_count;
    size_t unconsumed; /* DATA bytes not yet handed back as window */

    /* the response */
    llhttp_t parser;
    bool parser_ready;
    struct wg_buf resp_head; /* fields as name NUL value NUL ..., lowercase names */
    size_t field_starts[RESP_FIELDS_MAX];
    unsigned nfields;
    bool in_value;
    bool submitted; /* HEADERS queued */
    bool final;     /* the final (non-1xx) response */
    bool resp_eof;  /* the whole body is in body */
    bool deferred;  /* the data source said "later" */
    struct wg_buf body;
    uint64_t waiting_since_ms; /* body waits for window since; 0: not waiting */
};

struct wg_h2 {
    uv_loop_t *loop;
    struct wg_log *log;
    uint64_t conn_id;
    struct wg_h2_limits lim;
    struct wg_h2_stats *stats;
    struct wg_h2_io io;
    nghttp2_session *session;
    llhttp_settings_t resp_settings;
    uv_timer_t timer;
    uv_idle_t idle; /* the service pass, while streams are dirty */
    struct wg_list streams;
    struct wg_list dirty;
    unsigned handles; /* open libuv handles (timer, idle) */
    bool freeing;
    bool over; /* the session ends: read nothing more */
    bool done_called;
    bool in_callback; /* inside nghttp2: no mem_send now */
    uint64_t idle_since_ms;
    unsigned nstreams; /* request streams nghttp2 has not closed */
    struct bucket resets, controls;
};

static uint64_t now_ms(const struct wg_h2 *h)
{
    return uv_now(h->loop);
}

/* ---- token buckets --------------------------------------------------------------- */

static bool bucket_take(struct bucket *b, uint64_t burst, uint64_t rate, uint64_t now)
{
    if (b->at_ms == 0) {
        b->tokens = (double)burst;
        b->at_ms = now;
    }
    b->tokens += (double)(now - b->at_ms) * (double)rate / 1000.0;
    if (b->tokens > (double)burst)
        b->tokens = (double)burst;
    b->at_ms = now;
    if (b->tokens < 1.0)
        return false;
    b->tokens -= 1.0;
    return true;
}

/* ---- output --------------------------------------------------------------------- */

static void maybe_done(struct wg_h2 *h)
{
    if (h->done_called || h->freeing)
        return;
    if (nghttp2_session_want_read(h->session) || nghttp2_session_want_write(h->session))
        return;
    h->done_called = true;
    h->over = true;
    h->io.done(h->io.arg);
}

/* Produces frames while the client's socket keeps up. Never from inside
 * an nghttp2 callback: the caller of the callback flushes after. */
static void flush(struct wg_h2 *h)
{
    /* Frames are gathered and written together: one TLS record and one
     * write for many small frames (a HEADERS, its DATA, acknowledgements),
     * not one each. */
    uint8_t out[FLUSH_CHUNK];
    size_t used = 0;

    if (h->freeing || h->in_callback)
        return;
    while (h->io.queued(h->io.arg) + used < h->lim.conn_buffer_max) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(h->session, &data);

        if (n < 0) {
            WG_WARN(h->log, SUBSYS, "cannot produce frames, closing",
                    "conn=%" PRIu64 " error=\"%s\"", h->conn_id, nghttp2_strerror((int)n));
            h->over = true;
            h->stats->goaway_error++;
            if (!h->done_called) {
                h->done_called = true;
                h->io.done(h->io.arg);
            }
            return;
        }
        if (n == 0)
            break;
        if (used + (size_t)n > sizeof out && used > 0) {
            h->io.write(h->io.arg, out, used);
            used = 0;
            if (h->freeing)
                return;
        }
        if ((size_t)n >= sizeof out) {
            h->io.write(h->io.arg, data, (size_t)n);
            if (h->freeing)
                return;
            continue;
        }
        memcpy(out + used, data, (size_t)n);
        used += (size_t)n;
    }
    if (used > 0) {
        h->io.write(h->io.arg, out, used);
        if (h->freeing)
            return;
    }
    maybe_done(h);
}

/* Ends the connection: GOAWAY with code, then close once it is out. */
static void end_session(struct wg_h2 *h, uint32_t code, const char *why)
{
    if (h->over)
        return;
    h->over = true;
    if (code == NGHTTP2_ENHANCE_YOUR_CALM)
        h->stats->goaway_calm++;
    else
        h->stats->goaway_error++;
    WG_WARN(h->log, SUBSYS, "ending the HTTP/2 connection",
            "conn=%" PRIu64 " reason=\"%s\" code=%s", h->conn_id, why,
            nghttp2_http2_strerror(code));
    nghttp2_session_terminate_session(h->session, code);
}

/* ---- streams ---------------------------------------------------------------------- */

static struct wg_h2_stream *stream_of(struct wg_h2 *h, int32_t id)
{
    return nghttp2_session_get_stream_user_data(h->session, id);
}

static void stream_free(struct wg_h2_stream *s)
{
    wg_list_remove(&s->link);
    if (s->dirty)
        wg_list_remove(&s->dirty_link);
    wg_buf_release(&s->req_out);
    wg_buf_release(&s->head);
    wg_buf_release(&s->cookies);
    wg_buf_release(&s->resp_head);
    wg_buf_release(&s->body);
    free(s->path);
    free(s->authority);
    free(s->host);
    free(s);
}

static void service(uv_idle_t *idle);

/* Work for the service pass: request bytes to hand over, a send queue size
 * to tell, an abort. */
static void mark(struct wg_h2_stream *s)
{
    struct wg_h2 *h = s->h;

    if (s->dirty || h->freeing)
        return;
    s->dirty = true;
    wg_list_push_back(&h->dirty, &s->dirty_link);
    uv_idle_start(&h->idle, service);
}

static void stream_reset(struct wg_h2_stream *s, uint32_t code)
{
    struct wg_h2 *h = s->h;

    if (s->stream_closed)
        return;
    h->stats->resets_sent++;
    nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, s->id, code);
    if (s->conn != NULL) {
        s->abort_conn = true;
        mark(s);
    }
}

static ssize_t body_read(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *user)
{
    struct wg_h2_stream *s = source->ptr;
    size_t n = wg_buf_size(&s->body);
    (void)session;
    (void)id;
    (void)user;

    if (n > length)
        n = length;
    if (n > 0) {
        memcpy(buf, wg_buf_head(&s->body), n);
        wg_buf_consume(&s->body, n);
        s->waiting_since_ms = wg_buf_size(&s->body) > 0 ? now_ms(s->h) : 0;
        if (s->conn != NULL)
            mark(s); /* its send queue shrank */
    }
    if (wg_buf_size(&s->body) == 0 && s->resp_eof) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return (ssize_t)n;
    }
    if (n == 0) {
        s->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static void body_more(struct wg_h2_stream *s)
{
    if (s->submitted && s->deferred) {
        s->deferred = false;
        nghttp2_session_resume_data(s->h->session, s->id);
    }
}

/* A response of our own (405, 431, 502, 503): a small text body. */
static void submit_local(struct wg_h2_stream *s, int status, const char *text)
{
    char st[4], len[24];
    nghttp2_nv nv[] = {
        {(uint8_t *)":status", (uint8_t *)st, 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"text/plain; charset=utf-8", 12, 25,
         NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-length", (uint8_t *)len, 14, 0, NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = body_read};

    if (s->submitted || s->stream_closed)
        return;
    snprintf(st, sizeof st, "%03d", status);
    nv[2].valuelen = (size_t)snprintf(len, sizeof len, "%zu", strlen(text));
    wg_buf_reset(&s->body);
    if (!s->head_method)
        wg_buf_append(&s->body, text, strlen(text));
    s->resp_eof = true;
    s->final = true;
    s->submitted = true;
    nghttp2_submit_response(s->h->session, s->id, nv, 3, &prd);
}

/* The pipeline's answer ended early or made no sense: 502 when nothing was
 * sent yet, else the stream is reset. */
static void stream_broken(struct wg_h2_stream *s, const char *why)
{
    WG_DEBUG(s->h->log, SUBSYS, "stream answer broken",
             "conn=%" PRIu64 " stream=%" PRId32 " why=\"%s\"", s->h->conn_id, s->id, why);
    s->resp_eof = true;
    if (!s->submitted)
        submit_local(s, 502, "Bad Gateway\n");
    else
        stream_reset(s, NGHTTP2_INTERNAL_ERROR);
}

/* ---- the response written by the pipeline ---------------------------------------- */

/* Connection-specific fields have no place in HTTP/2 (RFC 9113 8.2.2). */
static bool hop_field(const char *name, size_t len)
{
    static const char *const hop[] = {"connection", "keep-alive", "proxy-connection",
                                      "transfer-encoding", "upgrade"};
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
        if (strlen(hop[i]) == len && memcmp(hop[i], name, len) == 0)
            return true;
    return false;
}

static int on_resp_field(llhttp_t *p, const char *at, size_t len)
{
    struct wg_h2_stream *s = p->data;

    if (s->in_value || s->nfields == 0) {
        if (s->in_value && wg_buf_append(&s->resp_head, "", 1) < 0)
            return -1; /* the value's NUL */
        if (s->nfields == RESP_FIELDS_MAX)
            return -1;
        s->field_starts[s->nfields++] = wg_buf_size(&s->resp_head);
        s->in_value = false;
    }
    size_t from = s->resp_head.len;
    if (wg_buf_append(&s->resp_head, at, len) < 0)
        return -1;
    /* HTTP/2 field names are lowercase (RFC 9113 8.2.1). */
    for (char *c = s->resp_head.data + from; c < s->resp_head.data + s->resp_head.len; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    return 0;
}

static int on_resp_value(llhttp_t *p, const char *at, size_t len)
{
    struct wg_h2_stream *s = p->data;

    if (!s->in_value) {
        if (wg_buf_append(&s->resp_head, "", 1) < 0) /* the name's NUL */
            return -1;
        s->in_value = true;
    }
    return wg_buf_append(&s->resp_head, at, len) < 0 ? -1 : 0;
}

static int on_resp_headers_complete(llhttp_t *p)
{
    struct wg_h2_stream *s = p->data;
    struct wg_h2 *h = s->h;
    int status = p->status_code;
    nghttp2_nv nv[RESP_FIELDS_MAX + 1];
    size_t n = 0;
    char st[4];
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = body_read};
    const char *base;

    if (s->in_value && wg_buf_append(&s->resp_head, "", 1) < 0)
        return -1;
    s->in_value = false;
    if (status < 200) {
        /* Interim answers (100, 103) are not passed on: the final one follows. */
        wg_buf_reset(&s->resp_head);
        s->nfields = 0;
        return 0;
    }
    snprintf(st, sizeof st, "%03d", status > 999 ? 999 : status);
    nv[n++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)st, 7, 3, NGHTTP2_NV_FLAG_NONE};
    base = wg_buf_head(&s->resp_head);
    for (unsigned i = 0; i < s->nfields; i++) {
        const char *name = base + s->field_starts[i];
        size_t nlen = strlen(name);
        const char *value = name + nlen + 1;

        if (nlen == 0 || hop_field(name, nlen))
            continue;
        nv[n++] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, nlen, strlen(value),
                               NGHTTP2_NV_FLAG_NONE};
    }
    s->final = true;
    s->submitted = true;
    /* HEAD, 204 and 304 carry no body: END_STREAM on the HEADERS. */
    bool bodiless = s->head_method || status == 204 || status == 304;
    if (bodiless)
        s->resp_eof = true;
    if (nghttp2_submit_response(h->session, s->id, nv, n, bodiless ? NULL : &prd) != 0)
        return -1;
    return s->head_method ? 1 : 0; /* 1: llhttp expects no body */
}

static int on_resp_body(llhttp_t *p, const char *at, size_t len)
{
    struct wg_h2_stream *s = p->data;

    if (!s->final)
        return 0;
    /* The connection stops reading its upstream past buffer_high_water. */
    if (wg_buf_append(&s->body, at, len) < 0)
        return -1;
    if (s->waiting_since_ms == 0)
        s->waiting_since_ms = now_ms(s->h);
    body_more(s);
    return 0;
}

static int on_resp_complete(llhttp_t *p)
{
    struct wg_h2_stream *s = p->data;

    if (!s->final)
        return 0; /* an interim answer ended: the final one follows */
    s->resp_eof = true;
    body_more(s);
    return HPE_PAUSED; /* nothing after the final answer is ours to read */
}

size_t wg_h2_stream_write(struct wg_h2_stream *s, const uv_buf_t *bufs, unsigned nbufs)
{
    for (unsigned i = 0; i < nbufs && !s->resp_eof && s->parser_ready; i++) {
        llhttp_errno_t e;

        if (bufs[i].len == 0)
            continue;
        e = llhttp_execute(&s->parser, bufs[i].base, bufs[i].len);
        if (e != HPE_OK && e != HPE_PAUSED)
            stream_broken(s, llhttp_errno_name(e));
    }
    mark(s); /* to send */
    s->reported = wg_buf_size(&s->body);
    return s->reported;
}

/* The end of the connection's bytes: a body delimited by the close ends. */
static void response_end(struct wg_h2_stream *s, const char *why)
{
    if (s->resp_eof)
        return;
    if (s->parser_ready && llhttp_finish(&s->parser) == HPE_OK && s->resp_eof)
        return;
    stream_broken(s, why);
}

void wg_h2_stream_shutdown(struct wg_h2_stream *s)
{
    response_end(s, "the answer ended early");
    body_more(s);
    mark(s);
}

int32_t wg_h2_stream_id(const struct wg_h2_stream *s)
{
    return s->id;
}

void wg_h2_stream_reading(struct wg_h2_stream *s, bool on)
{
    s->conn_reading = on;
    if (on && wg_buf_size(&s->req_out) > 0)
        mark(s);
}

void wg_h2_stream_detach(struct wg_h2_stream *s)
{
    struct wg_h2 *h = s->h;

    if (s->conn == NULL)
        return;
    s->conn = NULL;
    if (h->freeing)
        return;
    response_end(s, "the connection closed before its answer was whole");
    body_more(s);
    if (s->stream_closed) {
        stream_free(s);
        return;
    }
    mark(s); /* to flush */
}

/* ---- the request handed to the pipeline ------------------------------------------ */

/* A stream's own window opens again only as its connection takes the
 * bytes; the connection's window opened at once when they came
 * (on_data_chunk), so one stream whose connection does not read (a held
 * request, a slow upstream) never holds the others' uploads, and nothing
 * is owed when a stream ends with bytes not taken. */
static void consume_window(struct wg_h2_stream *s)
{
    if (s->unconsumed == 0 || s->stream_closed || wg_buf_size(&s->req_out) >= REQ_PENDING_MAX)
        return;
    nghttp2_session_consume_stream(s->h->session, s->id, s->unconsumed);
    s->unconsumed = 0;
}

static void req_add(struct wg_h2_stream *s, const void *data, size_t len)
{
    if (s->conn == NULL)
        return; /* nobody takes it */
    if (wg_buf_append(&s->req_out, data, len) < 0) {
        stream_reset(s, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    mark(s);
}

static void req_add_chunk(struct wg_h2_stream *s, const uint8_t *data, size_t len)
{
    char size[24];

    if (!s->chunked) {
        req_add(s, data, len);
        return;
    }
    snprintf(size, sizeof size, "%zx\r\n", len);
    req_add(s, size, strlen(size));
    req_add(s, data, len);
    req_add(s, "\r\n", 2);
}

static void request_end(struct wg_h2_stream *s)
{
    if (s->req_ended)
        return;
    s->req_ended = true;
    if (s->chunked && s->headers_done)
        req_add(s, "0\r\n\r\n", 5);
}

/* The request head as HTTP/1.1, for a connection of its own. */
static void request_start(struct wg_h2_stream *s, bool end_stream)
{
    struct wg_h2 *h = s->h;
    const char *host = s->authority ? s->authority : s->host;
    struct wg_buf *out = &s->req_out;

    if (s->path == NULL || s->method[0] == '\0') {
        /* nghttp2's messaging checks leave only CONNECT without a path. */
        submit_local(s, 405, "Method Not Allowed\n");
        return;
    }
    s->chunked = !end_stream && !s->has_length;
    /* Past REQ_PENDING_MAX the stream's window stays shut, but the client
     * may still send what it was given (a window, 64 KiB), in DATA frames
     * as small as a byte: each is 6 bytes more as a chunk ("1\r\nX\r\n"). */
    wg_buf_init(out, h->lim.header_list_max * 2 + 512 + REQ_PENDING_MAX + 7 * 65536 + 4096);
    if (wg_buf_append(out, s->method, strlen(s->method)) < 0 || wg_buf_append(out, " ", 1) < 0 ||
        wg_buf_append(out, s->path, strlen(s->path)) < 0 ||
        wg_buf_append(out, " HTTP/1.1\r\n", 11) < 0 ||
        (host &&
         (wg_buf_append(out, "Host: ", 6) < 0 || wg_buf_append(out, host, strlen(host)) < 0 ||
          wg_buf_append(out, "\r\n", 2) < 0)) ||
        wg_buf_append(out, wg_buf_head(&s->head), wg_buf_size(&s->head)) < 0 ||
        (wg_buf_size(&s->cookies) > 0 &&
         (wg_buf_append(out, "cookie: ", 8) < 0 ||
          wg_buf_append(out, wg_buf_head(&s->cookies), wg_buf_size(&s->cookies)) < 0 ||
          wg_buf_append(out, "\r\n", 2) < 0)) ||
        (s->chunked && wg_buf_append(out, "Transfer-Encoding: chunked\r\n", 28) < 0) ||
        wg_buf_append(out, "Connection: close\r\n\r\n", 21) < 0) {
        wg_buf_release(out);
        h->stats->headers_too_large++;
        submit_local(s, 431, "Request Header Fields Too Large\n");
        return;
    }
    wg_buf_release(&s->head); /* copied into the request */
    wg_buf_release(&s->cookies);
    llhttp_init(&s->parser, HTTP_RESPONSE, &h->resp_settings);
    s->parser.data = s;
    s->parser_ready = true;
    wg_buf_init(&s->resp_head, RESP_HEAD_MAX);
    s->headers_done = true;
    s->conn = h->io.open_stream(h->io.arg, s);
    if (s->conn == NULL) {
        wg_buf_release(out);
        WG_WARN(h->log, SUBSYS, "cannot make a connection for a stream, answering 503",
                "conn=%" PRIu64 " stream=%" PRId32, h->conn_id, s->id);
        submit_local(s, 503, "Service Unavailable\n");
        return;
    }
    mark(s);
    if (end_stream)
        request_end(s);
}

/* ---- the service pass --------------------------------------------------------------- */

/* Hands a stream's request bytes over while its connection reads, tells it
 * its send queue, or ends it. Calls into the connection, which may call
 * back (wg_h2_stream_*), and may detach and so free s: s is not used after
 * a call that may have freed it. */
static void serve_stream(struct wg_h2_stream *s)
{
    struct wg_h2 *h = s->h;

    if (s->conn != NULL && s->abort_conn) {
        void *c = s->conn;
        h->io.stream_abort(c); /* detaches: s may be gone */
        return;
    }
    while (s->conn != NULL && s->conn_reading && wg_buf_size(&s->req_out) > 0) {
        size_t n = wg_buf_size(&s->req_out);
        const char *p = wg_buf_head(&s->req_out);

        if (n > DELIVER_MAX)
            n = DELIVER_MAX;
        /* Consuming moves only the offset: p stays valid through the call,
         * and nothing adds to req_out during a service pass (only nghttp2's
         * callbacks do). The connection may read on, stop, answer, or close
         * (detach; s stays, its stream not being closed: see above). */
        wg_buf_consume(&s->req_out, n);
        h->io.stream_bytes(s->conn, p, n);
    }
    if (s->conn == NULL)
        return; /* detached by the connection: s is freed if the stream closed */
    if (wg_buf_size(&s->req_out) == 0)
        wg_buf_compact(&s->req_out);
    consume_window(s);
    if (s->conn != NULL && s->reported != wg_buf_size(&s->body)) {
        s->reported = wg_buf_size(&s->body);
        h->io.stream_pending(s->conn, s->reported);
    }
}

static void flush(struct wg_h2 *h);

static void service(uv_idle_t *idle)
{
    struct wg_h2 *h = idle->data;

    /* Streams marked while serving wait for the next pass. */
    struct wg_list todo;
    wg_list_init(&todo);
    while (!wg_list_empty(&h->dirty)) {
        struct wg_list *l = h->dirty.next;
        wg_list_remove(l);
        wg_list_push_back(&todo, l);
    }
    while (!wg_list_empty(&todo) && !h->freeing) {
        struct wg_h2_stream *s = wg_container_of(todo.next, struct wg_h2_stream, dirty_link);
        wg_list_remove(&s->dirty_link);
        s->dirty = false;
        serve_stream(s);
    }
    if (h->freeing) {
        /* Unlinked from this frame's list before it goes. */
        while (!wg_list_empty(&todo)) {
            struct wg_h2_stream *s = wg_container_of(todo.next, struct wg_h2_stream, dirty_link);
            wg_list_remove(&s->dirty_link);
            s->dirty = false;
        }
        return;
    }
    if (wg_list_empty(&h->dirty))
        uv_idle_stop(&h->idle);
    flush(h);
}

/* ---- nghttp2 callbacks ------------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    struct wg_h2 *h = user;
    struct wg_h2_stream *s;

    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    s = calloc(1, sizeof *s);
    if (s == NULL)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    s->h = h;
    s->id = frame->hd.stream_id;
    wg_buf_init(&s->head, h->lim.header_list_max + 1024);
    wg_buf_init(&s->cookies, h->lim.header_list_max);
    wg_buf_init(&s->body, h->lim.stream_buffer_max + BODY_SLACK);
    wg_list_push_back(&h->streams, &s->link);
    h->stats->streams++;
    h->stats->streams_open++;
    h->nstreams++;
    nghttp2_session_set_stream_user_data(session, s->id, s);
    return 0;
}

static char *dup_span(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s != NULL) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static bool is_name(const uint8_t *name, size_t len, const char *want)
{
    return strlen(want) == len && memcmp(name, want, len) == 0;
}

/* What goes into the HTTP/1.1 request line or Host: visible ASCII only,
 * so no space or control byte can change how the pipeline reads it. */
static bool visible(const uint8_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] <= 0x20 || v[i] >= 0x7f)
            return false;
    return n > 0;
}

static int take_pseudo(struct wg_h2_stream *s, const uint8_t *name, size_t nlen,
                       const uint8_t *value, size_t vlen)
{
    char **dst = NULL;

    if ((is_name(name, nlen, ":method") || is_name(name, nlen, ":path") ||
         is_name(name, nlen, ":authority")) &&
        !visible(value, vlen)) {
        s->bad_request = true;
        return 0;
    }
    if (is_name(name, nlen, ":method")) {
        if (vlen >= sizeof s->method) {
            s->bad_request = true;
            return 0;
        }
        memcpy(s->method, value, vlen);
        s->method[vlen] = '\0';
        s->head_method = strcmp(s->method, "HEAD") == 0;
        return 0;
    }
    if (is_name(name, nlen, ":path"))
        dst = &s->path;
    else if (is_name(name, nlen, ":authority"))
        dst = &s->authority;
    else
        return 0; /* :scheme: https, by the connection; :protocol is not offered */
    free(*dst);
    *dst = dup_span(value, vlen);
    return *dst ? 0 : -1;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
    struct wg_h2 *h = user;
    struct wg_h2_stream *s = stream_of(h, frame->hd.stream_id);
    (void)session;
    (void)flags;

    if (s == NULL)
        return 0;
    s->header_bytes += nlen + vlen + 32; /* RFC 9113 6.5.2's measure, trailers included */
    s->header_count++;
    if (s->header_bytes > h->lim.header_list_max * HEADER_ABUSE_FACTOR) {
        end_session(h, NGHTTP2_ENHANCE_YOUR_CALM, "a header list far over the limit");
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (s->headers_done || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers: counted above, not passed on */
    if (s->header_bytes > h->lim.header_list_max || s->header_count > h->lim.header_count_max)
        s->too_large = true;
    if (s->too_large)
        return 0;
    if (nlen > 0 && name[0] == ':')
        return take_pseudo(s, name, nlen, value, vlen) < 0 ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
                                                           : 0;
    if (is_name(name, nlen, "cookie")) {
        if ((wg_buf_size(&s->cookies) > 0 && wg_buf_append(&s->cookies, "; ", 2) < 0) ||
            wg_buf_append(&s->cookies, value, vlen) < 0)
            s->too_large = true;
        return 0;
    }
    if (is_name(name, nlen, "host")) {
        if (!visible(value, vlen)) {
            s->bad_request = true;
            return 0;
        }
        free(s->host);
        s->host = dup_span(value, vlen);
        return s->host ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (is_name(name, nlen, "content-length"))
        s->has_length = true;
    if (wg_buf_append(&s->head, name, nlen) < 0 || wg_buf_append(&s->head, ": ", 2) < 0 ||
        wg_buf_append(&s->head, value, vlen) < 0 || wg_buf_append(&s->head, "\r\n", 2) < 0)
        s->too_large = true;
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    struct wg_h2 *h = user;
    struct wg_h2_stream *s;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    uint64_t now = now_ms(h);
    (void)session;

    switch (frame->hd.type) {
    case NGHTTP2_PING:
    case NGHTTP2_SETTINGS:
        if (!bucket_take(&h->controls, h->lim.control_burst, h->lim.control_rate, now))
            end_session(h, NGHTTP2_ENHANCE_YOUR_CALM, "a flood of PING or SETTINGS frames");
        return 0;
    case NGHTTP2_RST_STREAM:
        h->stats->resets_received++;
        if (!bucket_take(&h->resets, h->lim.reset_burst, h->lim.reset_rate, now))
            end_session(h, NGHTTP2_ENHANCE_YOUR_CALM, "streams reset faster than reset_rate");
        return 0;
    case NGHTTP2_DATA:
        if (frame->hd.length == 0 && !end &&
            !bucket_take(&h->controls, h->lim.control_burst, h->lim.control_rate, now))
            end_session(h, NGHTTP2_ENHANCE_YOUR_CALM, "a flood of empty DATA frames");
        s = stream_of(h, frame->hd.stream_id);
        if (s != NULL && end)
            request_end(s);
        return 0;
    case NGHTTP2_HEADERS:
        s = stream_of(h, frame->hd.stream_id);
        if (s == NULL)
            return 0;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            if (s->too_large) {
                h->stats->headers_too_large++;
                submit_local(s, 431, "Request Header Fields Too Large\n");
                return 0;
            }
            if (s->bad_request) {
                submit_local(s, 400, "Bad Request\n");
                return 0;
            }
            request_start(s, end);
        } else if (end) {
            request_end(s); /* after trailers */
        }
        return 0;
    default:
        return 0;
    }
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user)
{
    struct wg_h2 *h = user;
    struct wg_h2_stream *s = stream_of(h, id);
    (void)flags;

    if (s == NULL || !s->headers_done || s->conn == NULL) {
        /* Nobody reads it: the windows open again at once. */
        nghttp2_session_consume(session, id, len);
        return 0;
    }
    nghttp2_session_consume_connection(session, len);
    s->unconsumed += len;
    req_add_chunk(s, data, len);
    consume_window(s);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t code, void *user)
{
    struct wg_h2 *h = user;
    struct wg_h2_stream *s = stream_of(h, id);
    (void)session;
    (void)code;

    if (s == NULL)
        return 0;
    s->stream_closed = true;
    h->stats->streams_open--;
    h->nstreams--;
    h->idle_since_ms = now_ms(h); /* idle from the last stream's end, if no other opens */
    nghttp2_session_set_stream_user_data(h->session, id, NULL);
    if (s->conn != NULL) {
        /* Its connection ends in the service pass, then s goes (detach). */
        s->abort_conn = true;
        mark(s);
        return 0;
    }
    stream_free(s);
    return 0;
}

/* Our END_STREAM went out while the client still sends: the rest of its
 * body is not wanted (RFC 9113 8.1). */
static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    struct wg_h2 *h = user;
    struct wg_h2_stream *s;

    if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) ||
        (frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS))
        return 0;
    s = stream_of(h, frame->hd.stream_id);
    if (s != NULL && !s->req_ended)
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
    return 0;
}

/* ---- the session ---------------------------------------------------------------- */

static void session_maybe_freed(struct wg_h2 *h)
{
    if (!h->freeing || h->handles > 0)
        return;
    while (!wg_list_empty(&h->streams))
        stream_free(wg_container_of(h->streams.next, struct wg_h2_stream, link));
    nghttp2_session_del(h->session);
    free(h);
}

static void handle_closed(uv_handle_t *handle)
{
    struct wg_h2 *h = handle->data;
    h->handles--;
    session_maybe_freed(h);
}

/* Stalls and idleness. */
static void tick(uv_timer_t *t)
{
    struct wg_h2 *h = t->data;
    uint64_t now = now_ms(h);

    for (struct wg_list *l = h->streams.next; l != &h->streams; l = l->next) {
        struct wg_h2_stream *s = wg_container_of(l, struct wg_h2_stream, link);
        if (!s->stream_closed && s->waiting_since_ms != 0 &&
            now - s->waiting_since_ms >= h->lim.send_idle_ms) {
            WG_INFO(h->log, SUBSYS,
                    "a stream's answer waited too long for the client's window, resetting it",
                    "conn=%" PRIu64 " stream=%" PRId32 " waiting_bytes=%zu", h->conn_id, s->id,
                    wg_buf_size(&s->body));
            s->waiting_since_ms = 0;
            stream_reset(s, NGHTTP2_CANCEL);
        }
    }
    if (!h->over && h->nstreams == 0 && now - h->idle_since_ms >= h->lim.idle_ms) {
        h->over = true;
        nghttp2_submit_goaway(h->session, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(h->session), NGHTTP2_NO_ERROR,
                              NULL, 0);
        nghttp2_session_terminate_session(h->session, NGHTTP2_NO_ERROR);
    }
    flush(h);
}

int wg_h2_new(uv_loop_t *loop, struct wg_log *log, uint64_t conn_id,
              const struct wg_h2_limits *limits, struct wg_h2_stats *stats,
              const struct wg_h2_io *io, struct wg_h2 **ret)
{
    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    struct wg_h2 *h = calloc(1, sizeof *h);
    int r = -ENOMEM;

    if (h == NULL)
        return -ENOMEM;
    h->loop = loop;
    h->log = log;
    h->conn_id = conn_id;
    h->lim = *limits;
    h->stats = stats;
    h->io = *io;
    wg_list_init(&h->streams);
    wg_list_init(&h->dirty);
    llhttp_settings_init(&h->resp_settings);
    h->resp_settings.on_header_field = on_resp_field;
    h->resp_settings.on_header_value = on_resp_value;
    h->resp_settings.on_headers_complete = on_resp_headers_complete;
    h->resp_settings.on_body = on_resp_body;
    h->resp_settings.on_message_complete = on_resp_complete;
    if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0)
        goto out;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
    nghttp2_option_set_stream_reset_rate_limit(opt, limits->reset_burst, limits->reset_rate);
    nghttp2_option_set_max_continuations(opt, 8);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_settings(opt, 32);
    if (nghttp2_session_server_new2(&h->session, cbs, h, opt) != 0)
        goto out;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, limits->max_concurrent_streams},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)limits->header_list_max},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    if (nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0)
        goto out;
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    h->handles++;
    uv_idle_init(loop, &h->idle);
    h->idle.data = h;
    h->handles++;
    h->idle_since_ms = uv_now(loop);
    uv_timer_start(&h->timer, tick, TICK_MS, TICK_MS);
    stats->connections++;
    *ret = h;
    h = NULL;
    r = 0;
out:
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (h != NULL) {
        if (h->session)
            nghttp2_session_del(h->session);
        free(h);
    }
    return r;
}

int wg_h2_feed(struct wg_h2 *h, const uint8_t *data, size_t len)
{
    ssize_t n;

    if (h->over && h->done_called)
        return -1;
    h->in_callback = true;
    n = nghttp2_session_mem_recv(h->session, data, len);
    h->in_callback = false;
    if (n < 0) {
        if (!h->over) {
            h->over = true;
            h->stats->goaway_error++;
            WG_INFO(h->log, SUBSYS, "ending the HTTP/2 connection",
                    "conn=%" PRIu64 " reason=\"%s\"", h->conn_id, nghttp2_strerror((int)n));
            if (n != NGHTTP2_ERR_FLOODED && n != NGHTTP2_ERR_BAD_CLIENT_MAGIC)
                nghttp2_session_terminate_session(h->session, NGHTTP2_PROTOCOL_ERROR);
        }
        flush(h);
        if (n == NGHTTP2_ERR_FLOODED || n == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
            if (!h->done_called) {
                h->done_called = true;
                h->io.done(h->io.arg);
            }
        }
        return -1;
    }
    flush(h);
    return h->over ? -1 : 0;
}

bool wg_h2_reading(const struct wg_h2 *h)
{
    return !h->over && h->io.queued(h->io.arg) < h->lim.conn_buffer_max;
}

void wg_h2_drained(struct wg_h2 *h)
{
    bool was = h->io.queued(h->io.arg) >= h->lim.conn_buffer_max;

    flush(h);
    if (was && wg_h2_reading(h))
        h->io.reading_changed(h->io.arg);
}

void wg_h2_shutdown(struct wg_h2 *h)
{
    if (h->over)
        return;
    nghttp2_submit_shutdown_notice(h->session);
    nghttp2_submit_goaway(h->session, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(h->session), NGHTTP2_NO_ERROR,
                          NULL, 0);
    flush(h);
}

void wg_h2_free(struct wg_h2 *h)
{
    if (h == NULL || h->freeing)
        return;
    h->freeing = true;
    /* Every stream's connection ends now; each detaches at once. */
    for (struct wg_list *l = h->streams.next; l != &h->streams; l = l->next) {
        struct wg_h2_stream *s = wg_container_of(l, struct wg_h2_stream, link);
        void *c = s->conn;

        if (!s->stream_closed)
            h->stats->streams_open--;
        s->stream_closed = true;
        s->conn = NULL;
        if (c != NULL)
            h->io.stream_abort(c);
    }
    uv_timer_stop(&h->timer);
    uv_idle_stop(&h->idle);
    uv_close((uv_handle_t *)&h->timer, handle_closed);
    uv_close((uv_handle_t *)&h->idle, handle_closed);
}
