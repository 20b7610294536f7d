/* proxy/h2.c - an HTTP/2 server session (nghttp2) whose request streams
 * are bridged, each over a socketpair, to the HTTP/1.1 pipeline
 * (proxy/h2.h says why and what is bounded). */
#include "proxy/h2.h"

#include <errno.h>
#include <inttypes.h>
#include <llhttp.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/list.h"

#define SUBSYS "h2"
/* How often the session looks for stalled streams and idleness. */
#define TICK_MS 250
/* The socketpair's kernel buffers: small, so a stalled stream pushes back on
 * the pipeline soon rather than parking hundreds of KiB in the kernel. */
#define PAIR_SNDBUF (32 * 1024)
/* A header list this many times over the limit is an attack, not a big
 * cookie: the connection ends instead of a 431. */
#define HEADER_ABUSE_FACTOR 4
/* Request bytes waiting for the socketpair above which a stream's window
 * stays closed (its DATA is not consumed). */
#define REQ_PENDING_MAX (64 * 1024)
/* The response head read back from the pipeline, at most. */
#define RESP_HEAD_MAX (64 * 1024)
#define RESP_FIELDS_MAX 256

struct bucket {
    double tokens;
    uint64_t at_ms;
};

struct stream {
    struct wg_list link;
    struct wg_h2 *h;
    int32_t id;
    uv_pipe_t pipe;
    bool pipe_open; /* the handle is initialised (closed through uv_close) */
    bool pipe_closing;
    bool reading;
    bool stream_closed; /* nghttp2 closed the stream */

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
    size_t header_bytes;
    unsigned header_count;
    size_t unconsumed; /* DATA bytes not yet handed back as window */

    /* the response */
    llhttp_t parser;
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
    struct wg_list streams;
    unsigned handles; /* open libuv handles (timer and pipes) */
    bool freeing;
    bool over; /* the session ends: read nothing more */
    bool done_called;
    bool in_callback; /* inside nghttp2: no mem_send now */
    uint64_t idle_since_ms;
    unsigned nstreams; /* request streams nghttp2 has not closed */
    struct bucket resets, controls;
    char readbuf[16384]; /* every stream's reads: each is parsed before the next */
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
    if (h->freeing || h->in_callback)
        return;
    while (h->io.queued(h->io.arg) < h->lim.conn_buffer_max) {
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
        h->io.write(h->io.arg, data, (size_t)n);
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

static struct stream *stream_of(struct wg_h2 *h, int32_t id)
{
    return nghttp2_session_get_stream_user_data(h->session, id);
}

static void stream_free(struct stream *s)
{
    wg_list_remove(&s->link);
    wg_buf_release(&s->head);
    wg_buf_release(&s->cookies);
    wg_buf_release(&s->resp_head);
    wg_buf_release(&s->body);
    free(s->path);
    free(s->authority);
    free(s->host);
    free(s);
}

static void session_maybe_freed(struct wg_h2 *h);

static void pipe_closed(uv_handle_t *handle)
{
    struct stream *s = handle->data;
    struct wg_h2 *h = s->h;

    h->handles--;
    s->pipe_open = false;
    if (s->stream_closed || h->freeing)
        stream_free(s);
    session_maybe_freed(h);
}

/* Closing our end tells the pipeline's connection that its client left. */
static void stream_close_pipe(struct stream *s)
{
    if (!s->pipe_open || s->pipe_closing)
        return;
    s->pipe_closing = true;
    uv_close((uv_handle_t *)&s->pipe, pipe_closed);
}

static void stream_reset(struct stream *s, uint32_t code)
{
    struct wg_h2 *h = s->h;

    if (s->stream_closed)
        return;
    h->stats->resets_sent++;
    nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, s->id, code);
    stream_close_pipe(s);
}

static int stream_read_start(struct stream *s);

static ssize_t body_read(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *user)
{
    struct stream *s = source->ptr;
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
        if (!s->reading && !s->resp_eof && wg_buf_size(&s->body) < s->h->lim.stream_buffer_max / 2)
            stream_read_start(s);
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

static void body_more(struct stream *s)
{
    if (s->submitted && s->deferred) {
        s->deferred = false;
        nghttp2_session_resume_data(s->h->session, s->id);
    }
}

/* A response of our own (431, 502): a small text body. */
static void submit_local(struct stream *s, int status, const char *text)
{
    char st[4], len[24];
    nghttp2_nv nv[] = {
        {(uint8_t *)":status", (uint8_t *)st, 7, 0, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"text/plain; charset=utf-8", 12, 25,
         NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-length", (uint8_t *)len, 14, 0, NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = body_read};

    snprintf(st, sizeof st, "%03d", status);
    nv[0].valuelen = 3;
    nv[2].valuelen = (size_t)snprintf(len, sizeof len, "%zu", strlen(text));
    wg_buf_reset(&s->body);
    if (!s->head_method)
        wg_buf_append(&s->body, text, strlen(text));
    s->resp_eof = true;
    s->final = true;
    s->submitted = true;
    nghttp2_submit_response(s->h->session, s->id, nv, 3, &prd);
}

/* ---- the response read back from the pipeline ------------------------------------ */

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
    struct stream *s = p->data;

    if (s->in_value || s->nfields == 0) {
        if (s->in_value && wg_buf_append(&s->resp_head, "", 1) < 0)
            return -1; /* the value's NUL */
        if (s->nfields == RESP_FIELDS_MAX)
            return -1;
        s->field_starts[s->nfields++] = wg_buf_size(&s->resp_head);
        s->in_value = false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = at[i];
        c = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        if (wg_buf_append(&s->resp_head, &c, 1) < 0)
            return -1;
    }
    return 0;
}

static int on_resp_value(llhttp_t *p, const char *at, size_t len)
{
    struct stream *s = p->data;

    if (!s->in_value) {
        if (wg_buf_append(&s->resp_head, "", 1) < 0) /* the name's NUL */
            return -1;
        s->in_value = true;
    }
    return wg_buf_append(&s->resp_head, at, len) < 0 ? -1 : 0;
}

static int on_resp_headers_complete(llhttp_t *p)
{
    struct stream *s = p->data;
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
    struct stream *s = p->data;

    if (!s->final)
        return 0;
    /* Bounded by stream_buffer_max plus one read (the read pauses above it). */
    if (wg_buf_append(&s->body, at, len) < 0)
        return -1;
    if (s->waiting_since_ms == 0)
        s->waiting_since_ms = now_ms(s->h);
    body_more(s);
    return 0;
}

static int on_resp_complete(llhttp_t *p)
{
    struct stream *s = p->data;

    if (!s->final)
        return 0; /* an interim answer ended: the final one follows */
    s->resp_eof = true;
    body_more(s);
    return HPE_PAUSED; /* nothing after the final answer is ours to read */
}

static void pipe_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct stream *s = handle->data;
    (void)suggested;
    *buf = uv_buf_init(s->h->readbuf, sizeof s->h->readbuf);
}

static void stream_read_stop(struct stream *s)
{
    if (s->reading && s->pipe_open && !s->pipe_closing)
        uv_read_stop((uv_stream_t *)&s->pipe);
    s->reading = false;
}

/* The pipeline's answer ended early or made no sense: 502 when nothing was
 * sent yet, else the stream is reset. */
static void stream_broken(struct stream *s, const char *why)
{
    WG_DEBUG(s->h->log, SUBSYS, "stream bridge ended early",
             "conn=%" PRIu64 " stream=%" PRId32 " why=\"%s\"", s->h->conn_id, s->id, why);
    if (!s->submitted)
        submit_local(s, 502, "Bad Gateway\n");
    else
        stream_reset(s, NGHTTP2_INTERNAL_ERROR);
    stream_read_stop(s);
    stream_close_pipe(s);
}

static void pipe_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct stream *s = st->data;
    struct wg_h2 *h = s->h;

    if (n == 0)
        return;
    if (n < 0) {
        if (n == UV_EOF && llhttp_finish(&s->parser) == HPE_OK && s->resp_eof)
            stream_close_pipe(s);
        else if (!s->resp_eof)
            stream_broken(s, n == UV_EOF ? "end of answer" : uv_strerror((int)n));
        stream_read_stop(s);
        flush(h);
        return;
    }
    if (!s->resp_eof) {
        llhttp_errno_t e = llhttp_execute(&s->parser, buf->base, (size_t)n);
        if (e == HPE_PAUSED || s->resp_eof) {
            stream_read_stop(s);
            stream_close_pipe(s);
        } else if (e != HPE_OK) {
            stream_broken(s, llhttp_errno_name(e));
        } else if (wg_buf_size(&s->body) >= h->lim.stream_buffer_max) {
            stream_read_stop(s);
        }
    }
    flush(h);
}

static int stream_read_start(struct stream *s)
{
    if (s->reading || !s->pipe_open || s->pipe_closing)
        return 0;
    int r = uv_read_start((uv_stream_t *)&s->pipe, pipe_alloc, pipe_read);
    s->reading = r == 0;
    return r;
}

/* ---- the request written to the pipeline ---------------------------------------- */

struct pipe_write {
    uv_write_t req;
    struct stream *s;
    size_t len;
    char data[];
};

static void consume_window(struct stream *s)
{
    if (s->unconsumed == 0 || s->stream_closed || !s->pipe_open)
        return;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&s->pipe) >= REQ_PENDING_MAX)
        return;
    nghttp2_session_consume(s->h->session, s->id, s->unconsumed);
    s->unconsumed = 0;
}

static void pipe_written(uv_write_t *req, int status)
{
    struct pipe_write *w = (struct pipe_write *)req;
    struct stream *s = w->s;
    struct wg_h2 *h = s->h;

    free(w);
    if (status < 0 || s->pipe_closing || h->freeing)
        return;
    consume_window(s);
    flush(h);
}

/* Writes to the pipeline: what the socket takes at once, the rest copied. */
static int pipe_send(struct stream *s, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    struct pipe_write *w;
    int r = 0;

    if (!s->pipe_open || s->pipe_closing || len == 0)
        return 0;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&s->pipe) == 0) {
        r = uv_try_write((uv_stream_t *)&s->pipe, &b, 1);
        if (r == (int)len)
            return 0;
        if (r < 0 && r != UV_EAGAIN)
            return r;
        if (r > 0) {
            data += r;
            len -= (size_t)r;
        }
    }
    w = malloc(sizeof *w + len);
    if (w == NULL)
        return UV_ENOMEM;
    w->s = s;
    w->len = len;
    memcpy(w->data, data, len);
    b = uv_buf_init(w->data, (unsigned)len);
    r = uv_write(&w->req, (uv_stream_t *)&s->pipe, &b, 1, pipe_written);
    if (r < 0)
        free(w);
    return r;
}

static int pipe_send_chunk(struct stream *s, const uint8_t *data, size_t len)
{
    char size[24];
    int r;

    if (!s->chunked)
        return pipe_send(s, (const char *)data, len);
    snprintf(size, sizeof size, "%zx\r\n", len);
    if ((r = pipe_send(s, size, strlen(size))) < 0 ||
        (r = pipe_send(s, (const char *)data, len)) < 0)
        return r;
    return pipe_send(s, "\r\n", 2);
}

static void request_end(struct stream *s)
{
    if (s->req_ended)
        return;
    s->req_ended = true;
    if (s->chunked && s->headers_done && pipe_send(s, "0\r\n\r\n", 5) < 0)
        stream_broken(s, "cannot write the request's end");
}

/* The request head as HTTP/1.1, then the socketpair to the pipeline. */
static void request_start(struct stream *s, bool end_stream)
{
    struct wg_h2 *h = s->h;
    struct wg_buf out;
    int fds[2] = {-1, -1};
    const char *host = s->authority ? s->authority : s->host;
    int sz = PAIR_SNDBUF;

    wg_buf_init(&out, h->lim.header_list_max * 2 + 512);
    if (s->path == NULL || s->method[0] == '\0') {
        /* nghttp2's messaging checks leave only CONNECT without a path. */
        submit_local(s, 405, "Method Not Allowed\n");
        goto out;
    }
    s->chunked = !end_stream && !s->has_length;
    if (wg_buf_appendf(&out, "%s %s HTTP/1.1\r\n", s->method, s->path) < 0 ||
        (host && wg_buf_appendf(&out, "Host: %s\r\n", host) < 0) ||
        wg_buf_append(&out, wg_buf_head(&s->head), wg_buf_size(&s->head)) < 0 ||
        (wg_buf_size(&s->cookies) > 0 &&
         (wg_buf_append(&out, "cookie: ", 8) < 0 ||
          wg_buf_append(&out, wg_buf_head(&s->cookies), wg_buf_size(&s->cookies)) < 0 ||
          wg_buf_append(&out, "\r\n", 2) < 0)) ||
        (s->chunked && wg_buf_append(&out, "Transfer-Encoding: chunked\r\n", 28) < 0) ||
        wg_buf_append(&out, "Connection: close\r\n\r\n", 21) < 0) {
        submit_local(s, 431, "Request Header Fields Too Large\n");
        h->stats->headers_too_large++;
        goto out;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0) {
        WG_WARN(h->log, SUBSYS, "cannot open a stream bridge, answering 503",
                "conn=%" PRIu64 " stream=%" PRId32 " error=\"%s\"", h->conn_id, s->id,
                strerror(errno));
        submit_local(s, 503, "Service Unavailable\n");
        goto out;
    }
    setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    if (uv_pipe_init(h->loop, &s->pipe, 0) < 0) {
        close(fds[0]);
        close(fds[1]);
        submit_local(s, 503, "Service Unavailable\n");
        goto out;
    }
    s->pipe.data = s;
    s->pipe_open = true;
    h->handles++;
    if (uv_pipe_open(&s->pipe, fds[1]) < 0) {
        close(fds[1]);
        close(fds[0]);
        submit_local(s, 503, "Service Unavailable\n");
        stream_close_pipe(s);
        goto out;
    }
    if (h->io.open_stream(h->io.arg, fds[0]) < 0) {
        submit_local(s, 503, "Service Unavailable\n");
        stream_close_pipe(s);
        goto out;
    }
    llhttp_init(&s->parser, HTTP_RESPONSE, &h->resp_settings);
    s->parser.data = s;
    wg_buf_init(&s->resp_head, RESP_HEAD_MAX);
    s->headers_done = true;
    if (pipe_send(s, wg_buf_head(&out), wg_buf_size(&out)) < 0 || stream_read_start(s) < 0) {
        stream_broken(s, "cannot write the request");
        goto out;
    }
    if (end_stream)
        request_end(s);
out:
    wg_buf_release(&out);
}

/* ---- nghttp2 callbacks ------------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    struct wg_h2 *h = user;
    struct stream *s;

    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    s = calloc(1, sizeof *s);
    if (s == NULL)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    s->h = h;
    s->id = frame->hd.stream_id;
    wg_buf_init(&s->head, h->lim.header_list_max + 1024);
    wg_buf_init(&s->cookies, h->lim.header_list_max);
    wg_buf_init(&s->body, h->lim.stream_buffer_max + 65536);
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

static int take_pseudo(struct stream *s, const uint8_t *name, size_t nlen, const uint8_t *value,
                       size_t vlen)
{
    char **dst = NULL;

    if (is_name(name, nlen, ":method")) {
        if (vlen >= sizeof s->method)
            return -1;
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
    struct stream *s = stream_of(h, frame->hd.stream_id);
    (void)session;
    (void)flags;

    if (s == NULL || s->headers_done || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;                        /* trailers: not passed on */
    s->header_bytes += nlen + vlen + 32; /* RFC 9113 6.5.2's measure */
    s->header_count++;
    if (s->header_bytes > h->lim.header_list_max * HEADER_ABUSE_FACTOR) {
        end_session(h, NGHTTP2_ENHANCE_YOUR_CALM, "a header list far over the limit");
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
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
    struct stream *s;
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
    struct stream *s = stream_of(h, id);
    (void)flags;

    if (s == NULL || !s->headers_done || !s->pipe_open || s->pipe_closing) {
        /* Nobody reads it: the window opens again at once. */
        nghttp2_session_consume(session, id, len);
        return 0;
    }
    s->unconsumed += len;
    if (pipe_send_chunk(s, data, len) < 0)
        stream_broken(s, "cannot write the request body");
    consume_window(s);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t code, void *user)
{
    struct wg_h2 *h = user;
    struct stream *s = stream_of(h, id);
    (void)session;
    (void)code;

    if (s == NULL)
        return 0;
    s->stream_closed = true;
    h->stats->streams_open--;
    h->nstreams--;
    nghttp2_session_set_stream_user_data(h->session, id, NULL);
    h->idle_since_ms = now_ms(h); /* idle from the last stream's end, if no other opens */
    stream_read_stop(s);
    if (s->pipe_open)
        stream_close_pipe(s); /* freed when the handle is closed */
    else
        stream_free(s);
    return 0;
}

/* Our END_STREAM went out while the client still sends: the rest of its
 * body is not wanted (RFC 9113 8.1). */
static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    struct wg_h2 *h = user;
    struct stream *s;

    if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) ||
        (frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS))
        return 0;
    s = stream_of(h, frame->hd.stream_id);
    if (s != NULL && !s->req_ended)
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
    return 0;
}

/* ---- the session ---------------------------------------------------------------- */

static void timer_closed(uv_handle_t *handle)
{
    struct wg_h2 *h = handle->data;
    h->handles--;
    session_maybe_freed(h);
}

static void session_maybe_freed(struct wg_h2 *h)
{
    if (!h->freeing || h->handles > 0)
        return;
    while (!wg_list_empty(&h->streams))
        stream_free(wg_container_of(h->streams.next, struct stream, link));
    nghttp2_session_del(h->session);
    free(h);
}

/* Stalls and idleness. */
static void tick(uv_timer_t *t)
{
    struct wg_h2 *h = t->data;
    uint64_t now = now_ms(h);

    for (struct wg_list *l = h->streams.next; l != &h->streams;) {
        struct stream *s = wg_container_of(l, struct stream, link);
        l = l->next;
        if (!s->stream_closed && s->waiting_since_ms != 0 &&
            now - s->waiting_since_ms >= h->lim.send_idle_ms) {
            WG_INFO(h->log, SUBSYS,
                    "a stream's answer waited too long for the client's window, "
                    "resetting it",
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
    for (struct wg_list *l = h->streams.next; l != &h->streams; l = l->next) {
        struct stream *s = wg_container_of(l, struct stream, link);
        if (!s->stream_closed)
            h->stats->streams_open--;
        s->stream_closed = true;
        stream_read_stop(s);
        stream_close_pipe(s);
    }
    uv_timer_stop(&h->timer);
    uv_close((uv_handle_t *)&h->timer, timer_closed);
}
