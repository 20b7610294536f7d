/* proxy/conn.c - one client connection: its lifetime, the exchange cache,
 * reading the client, writes with backpressure, the timer and its
 * deadlines, our error responses, close and linger. The request, the
 * response and session routes are in conn_request.c, conn_response.c and
 * conn_session.c (see conn_int.h for the ownership rules they share). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/net.h"
#include "proxy/conn_int.h"

#define LINGER_MS 2000
/* Room in c->in beyond a full head: a client may send this much ahead
 * (pipelined requests, an early body) before we stop reading it. */
#define PIPELINE_BUFFER_MAX (2 * WG_READ_BUF_SIZE)
/* Exchanges kept for reuse per loop: enough for a burst, bounded so a spike
 * of connections does not pin memory after it. */
#define EXCHANGE_CACHE_MAX 256
/* Buffers handed to one write: the held response head plus the caller's. */
#define WRITE_IOV_MAX 8

enum deadline_kind {
    DL_NONE,
    DL_IDLE,
    DL_HEAD,
    DL_CONNECT,
    DL_BODY_IDLE,
    DL_RESPONSE,
    DL_SEND_IDLE,
    DL_TUNNEL_IDLE,
    DL_LINGER,
    DL_WAKE,
    DL_STREAM_QUIET,
    DL_PAGE,
    DL_RECHECK,
};

/* A shutdown request; allocated per use, so two can never share one. */
struct shut {
    uv_shutdown_t req; /* first */
    struct wg_conn *c;
};

struct wreq {
    uv_write_t req; /* first: the callback casts back */
    struct wg_conn *c;
    uint64_t gen;
    size_t len;
    int side;
    char data[];
};

/* ---- exchanges ----------------------------------------------------------- */

/* The one place an exchange's fields are set: everything before up_addr is
 * zeroed, the strings are emptied, the parsers and buffers made ready. The
 * exchange starts with the first byte of its head. */
static void exchange_init(struct exchange *x, struct wg_conn *c)
{
    struct wg_proxy *px = c->px;
    const struct wg_limits *lim = &px->cfg->limits;

    memset(x, 0, offsetof(struct exchange, up_addr));
    x->up_name[0] = x->up_owner[0] = x->log_method[0] = x->log_host[0] = x->log_path[0] = '\0';
    x->session_id[0] = x->status_url[0] = '\0';
    x->next_free = NULL;
    x->conn = c;
    llhttp_init(&x->req_parser, HTTP_REQUEST, &px->req_settings);
    x->req_parser.data = &x->req;
    llhttp_init(&x->resp_parser, HTTP_RESPONSE, &px->resp_settings);
    x->resp_parser.data = &x->resp;
    x->resp.is_response = true;
    wg_http_scan_reset(&x->req_scan, false);
    wg_buf_init(&x->up_in, lim->head_max + WG_READ_BUF_SIZE);
    wg_buf_init(&x->up_head, lim->head_max * 2 + 1024);
    wg_buf_init(&x->held_head, lim->head_max * 2 + 1024);
    wg_buf_init(&x->access_reply, lim->head_max + 1024);
    x->head_start_ms = conn_now_ms(c);
    x->head_ns = uv_hrtime();
}

struct exchange *conn_exchange_get(struct wg_conn *c)
{
    struct wg_proxy *px = c->px;
    struct exchange *x = px->exchange_cache;

    if (x != NULL) {
        px->exchange_cache = x->next_free;
        px->exchange_cache_len--;
    } else {
        x = malloc(sizeof(*x));
        if (x == NULL)
            return NULL;
    }
    exchange_init(x, c);
    return x;
}

void conn_exchange_put(struct wg_conn *c)
{
    struct wg_proxy *px = c->px;
    struct exchange *x = c->x;
    if (x == NULL)
        return;
    conn_activity_end(c);
    conn_stream_end(c);
    conn_session_unwait(c);
    conn_tls_trim(c);
    c->x = NULL;
    wg_buf_release(&x->up_in);
    wg_buf_release(&x->up_head);
    wg_buf_release(&x->held_head);
    wg_buf_release(&x->access_reply);
    if (px->exchange_cache_len >= EXCHANGE_CACHE_MAX) {
        free(x);
        return;
    }
    x->next_free = px->exchange_cache;
    px->exchange_cache = x;
    px->exchange_cache_len++;
}

void wg_conn_free_cache(struct wg_proxy *px)
{
    while (px->exchange_cache != NULL) {
        struct exchange *x = px->exchange_cache;
        px->exchange_cache = x->next_free;
        free(x);
    }
    px->exchange_cache_len = 0;
}

/* ---- lifetime ----------------------------------------------------------- */

static void conn_unref(struct wg_conn *c)
{
    if (--c->refs > 0)
        return;
    struct wg_proxy *px = c->px;
    wg_buf_release(&c->in);
    conn_exchange_put(c);
    conn_tls_free(c);
    free(c);
    wg_proxy_conn_gone(px);
}

static void handle_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

void conn_close(struct wg_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->state == CS_WAITING)
        conn_hold_end(c, WG_HOLD_ABANDONED);
    conn_session_unwait(c);
    conn_activity_end(c);
    conn_stream_end(c);
    conn_release_upstream(c, false);
    wg_h2_free(c->h2); /* its streams' connections see their client leave */
    c->h2 = NULL;
    if (c->vstream != NULL) {
        struct wg_h2_stream *vs = c->vstream;
        c->vstream = NULL;
        wg_h2_stream_detach(vs);
    }
    wg_list_remove(&c->link);
    if (!conn_is_h2_stream(c)) {
        c->px->stats.connections_open--;
        (*c->px->gw_open)--;
    }
    uv_close((uv_handle_t *)&c->timer, handle_closed);
    uv_close((uv_handle_t *)&c->client, handle_closed);
}

/* ---- writes ------------------------------------------------------------- */

static uv_stream_t *side_stream(struct wg_conn *c, int side)
{
    if (side == SIDE_CLIENT)
        return (uv_stream_t *)&c->client;
    return c->x != NULL && c->x->up != NULL ? wg_upconn_stream(c->x->up) : NULL;
}

/* Bytes queued to one side. The upstream side is asked only while an
 * exchange exists (its count is 0 while no upstream is borrowed). */
static size_t *side_pending(struct wg_conn *c, int side)
{
    return side == SIDE_CLIENT ? &c->client_pending : &c->x->up_pending;
}

static void side_failed(struct wg_conn *c, int side, int err)
{
    if (side == SIDE_CLIENT) {
        WG_DEBUG(c->px->log, "conn", "client write failed", "conn=%" PRIu64 " err=%s", c->id,
                 uv_err_name(err));
        conn_close(c);
    } else {
        /* A pooled connection that died under us is the stale keep-alive
         * race: worth one retry when the request can be replayed. */
        conn_upstream_failed(c, 502, uv_err_name(err), c->x->up_reused || !c->x->req_head_written);
    }
}

static void write_cb(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct wg_conn *c = w->c;
    bool stale = w->side == SIDE_UP && w->gen != c->up_gen;

    c->px->stats.buffered_bytes[w->side] -= w->len;
    if (!stale && !c->closing) {
        *side_pending(c, w->side) -= w->len;
        if (status < 0) {
            side_failed(c, w->side, status);
        } else {
            if (w->side == SIDE_CLIENT)
                c->last_client_write_ms = conn_now_ms(c);
            else
                c->x->last_up_write_ms = conn_now_ms(c);
            if (w->side == SIDE_CLIENT && c->h2 != NULL)
                conn_h2_drained(c);
            if (c->closing)
                ; /* the session ended it */
            else if (w->side == SIDE_CLIENT && c->client_pending == 0 && c->close_after_flush)
                conn_begin_close(c);
            else if (c->state == CS_TUNNEL && c->client_eof && c->x->up_eof &&
                     c->client_pending == 0 && c->x->up_pending == 0)
                conn_close(c);
            else
                conn_update_reading(c);
        }
    }
    free(w);
    conn_unref(c);
}

/* Queues what uv_try_write did not take: bufs from byte `off` of `total`,
 * copied into one write request. */
static void queue_write(struct wg_conn *c, int side, uv_stream_t *s, const uv_buf_t *bufs,
                        unsigned nbufs, size_t total, size_t off)
{
    size_t *pending = side_pending(c, side);
    struct wreq *w = malloc(sizeof(*w) + (total - off));
    if (w == NULL) {
        side_failed(c, side, UV_ENOMEM);
        return;
    }
    size_t o = 0, skip = off;
    for (unsigned i = 0; i < nbufs; i++) {
        size_t len = bufs[i].len;
        const char *p = bufs[i].base;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        p += skip;
        len -= skip;
        skip = 0;
        memcpy(w->data + o, p, len);
        o += len;
    }
    if (side == SIDE_CLIENT && c->x != NULL)
        wg_buf_reset(&c->x->held_head);
    w->c = c;
    w->gen = c->up_gen;
    w->len = total - off;
    w->side = side;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
    int r = uv_write(&w->req, s, &b, 1, write_cb);
    if (r < 0) {
        free(w);
        side_failed(c, side, r);
        return;
    }
    c->refs++;
    c->px->stats.buffered_bytes[side] += w->len;
    if (side == SIDE_UP)
        c->x->req_head_written = true;
    bool was_empty = *pending == 0;
    *pending += w->len;
    if (side == SIDE_CLIENT && was_empty) {
        c->last_client_write_ms = conn_now_ms(c);
        conn_arm(c);
    }
    if (*pending >= conn_limits(c)->buffer_high_water)
        conn_update_reading(c);
}

static bool below_mark(struct wg_conn *c, int side, bool reading);
static void write_raw(struct wg_conn *c, int side, uv_stream_t *s, uv_buf_t *bufs, unsigned nbufs,
                      size_t total);

void conn_write(struct wg_conn *c, int side, uv_buf_t *bufs, unsigned nbufs)
{
    uv_stream_t *s = side_stream(c, side);
    uv_buf_t iov[WRITE_IOV_MAX];
    size_t total = 0;

    if (c->closing || s == NULL)
        return;
    if (side == SIDE_CLIENT && c->x != NULL && wg_buf_size(&c->x->held_head) > 0 &&
        nbufs < WRITE_IOV_MAX) {
        /* One write for head and body: a small response is one syscall. */
        iov[0] = uv_buf_init(c->x->held_head.data + c->x->held_head.off,
                             (unsigned)wg_buf_size(&c->x->held_head));
        for (unsigned i = 0; i < nbufs; i++)
            iov[i + 1] = bufs[i];
        bufs = iov;
        nbufs++;
    }
    for (unsigned i = 0; i < nbufs; i++)
        total += bufs[i].len;
    if (total == 0)
        return;
    if (side == SIDE_CLIENT) {
        if (c->x != NULL)
            c->x->resp_bytes_out += total;
        if (!conn_is_h2_stream(c)) /* counted as HTTP/2 frames on its connection */
            c->px->stats.bytes_out += total;
        if (c->tls != NULL) {
            conn_tls_write(c, bufs, nbufs, total);
            if (c->x != NULL)
                wg_buf_reset(&c->x->held_head);
            return;
        }
    }
    write_raw(c, side, s, bufs, nbufs, total);
}

void conn_write_raw(struct wg_conn *c, int side, uv_buf_t *bufs, unsigned nbufs)
{
    uv_stream_t *s = side_stream(c, side);
    size_t total = 0;

    if (c->closing || s == NULL)
        return;
    for (unsigned i = 0; i < nbufs; i++)
        total += bufs[i].len;
    if (total > 0)
        write_raw(c, side, s, bufs, nbufs, total);
}

/* Straight to the socket when nothing is queued; the rest copied into a
 * write request. */
static void write_raw(struct wg_conn *c, int side, uv_stream_t *s, uv_buf_t *bufs, unsigned nbufs,
                      size_t total)
{
    size_t off = 0;

    if (side == SIDE_CLIENT && c->vstream != NULL) {
        /* An HTTP/2 stream's connection: its session takes it all, and
         * tells the size of what waits (conn_vstream_pending). */
        size_t was = c->client_pending;
        c->client_pending = wg_h2_stream_write(c->vstream, bufs, nbufs);
        if (was == 0 && c->client_pending > 0)
            c->last_client_write_ms = conn_now_ms(c);
        if (c->x != NULL)
            wg_buf_reset(&c->x->held_head);
        if (!below_mark(c, SIDE_CLIENT, true))
            conn_update_reading(c);
        return;
    }
    if (*side_pending(c, side) == 0) {
        int r = uv_try_write(s, bufs, nbufs);
        if (r > 0 && side == SIDE_UP)
            c->x->req_head_written = true;
        if (r == (int)total) {
            if (side == SIDE_UP)
                c->x->last_up_write_ms = conn_now_ms(c);
            else if (c->x != NULL)
                wg_buf_reset(&c->x->held_head);
            return;
        }
        if (r < 0 && r != UV_EAGAIN) {
            side_failed(c, side, r);
            return;
        }
        if (r > 0)
            off = (size_t)r;
    }
    queue_write(c, side, s, bufs, nbufs, total, off);
}

void conn_drop_held_head(struct wg_conn *c)
{
    if (c->x == NULL || wg_buf_size(&c->x->held_head) == 0)
        return;
    wg_buf_reset(&c->x->held_head);
    c->x->resp_head_sent = false;
}

void conn_flush_held_head(struct wg_conn *c)
{
    if (c->x != NULL && wg_buf_size(&c->x->held_head) > 0)
        conn_write(c, SIDE_CLIENT, NULL, 0);
}

void conn_write_str(struct wg_conn *c, int side, const char *s, size_t n)
{
    uv_buf_t b = uv_buf_init((char *)s, (unsigned)n);
    conn_write(c, side, &b, 1);
}

void conn_write_body(struct wg_conn *c, int side, enum wg_http_framing framing, const char *at,
                     size_t len)
{
    if (framing == WG_HTTP_FRAME_CHUNKED) {
        char hdr[24];
        int n = snprintf(hdr, sizeof(hdr), "%zx\r\n", len);
        uv_buf_t b[3] = {uv_buf_init(hdr, (unsigned)n), uv_buf_init((char *)at, (unsigned)len),
                         uv_buf_init("\r\n", 2)};
        conn_write(c, side, b, 3);
    } else {
        conn_write_str(c, side, at, len);
    }
}

/* ---- reading control ------------------------------------------------------ */

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

/* Reading resumes below half the high-water mark, so a slow peer does not
 * toggle it on every write; while reading, it goes on as long as a read has
 * room under the mark (conn_read_room). */
static bool below_mark(struct wg_conn *c, int side, bool reading)
{
    size_t hw = conn_limits(c)->buffer_high_water;
    return *side_pending(c, side) < (reading ? hw : hw / 2);
}

size_t conn_read_room(struct wg_conn *c, int side)
{
    size_t hw = conn_limits(c)->buffer_high_water;
    size_t pending = *side_pending(c, side);
    size_t room = pending < hw ? hw - pending : 0;
    return room < WG_READ_BUF_SIZE ? room : WG_READ_BUF_SIZE;
}

/* Whether one more full read fits in c->in. */
static bool inbuf_has_room(const struct wg_conn *c)
{
    return wg_buf_size(&c->in) + WG_READ_BUF_SIZE <= c->in.max;
}

void conn_update_reading(struct wg_conn *c)
{
    struct exchange *x = c->x;
    bool want_client = false, want_up = false;

    if (!c->closing) {
        switch (c->state) {
        case CS_HEAD:
            want_client = !c->client_eof;
            break;
        case CS_WAITING:
        case CS_CONNECTING:
            /* Keep reading (bytes wait in c->in), so the read interest does
             * not change per request and an early client close is seen. */
            want_client = !c->client_eof && inbuf_has_room(c);
            break;
        case CS_PROXY:
            if (x->req.complete)
                want_client = !c->client_eof && inbuf_has_room(c);
            else
                want_client = !c->client_eof && below_mark(c, SIDE_UP, c->reading_client);
            want_up = x->up != NULL && !x->resp.complete && below_mark(c, SIDE_CLIENT, true);
            break;
        case CS_TUNNEL:
            want_client = !c->client_eof && below_mark(c, SIDE_UP, c->reading_client);
            want_up = x->up != NULL && !x->up_eof && below_mark(c, SIDE_CLIENT, true);
            break;
        case CS_LINGER:
            want_client = !c->client_eof;
            break;
        case CS_H2:
            want_client = !c->client_eof && wg_h2_reading(c->h2);
            break;
        }
    }
    if (want_client != c->reading_client && !c->closing && c->vstream != NULL) {
        c->reading_client = want_client;
        wg_h2_stream_reading(c->vstream, want_client);
    } else if (want_client != c->reading_client && !c->closing) {
        if (want_client)
            uv_read_start((uv_stream_t *)&c->client, client_alloc, client_read);
        else
            uv_read_stop((uv_stream_t *)&c->client);
        c->reading_client = want_client;
    }
    if (x != NULL && x->up != NULL)
        wg_upconn_read(x->up, want_up);
}

/* ---- the timer ------------------------------------------------------------ */

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

static void take_earlier(uint64_t *d, enum deadline_kind *k, uint64_t cand, enum deadline_kind ck)
{
    if (cand < *d) {
        *d = cand;
        *k = ck;
    }
}

static uint64_t conn_deadline(const struct wg_conn *c, enum deadline_kind *ret_kind)
{
    const struct wg_limits *lim = conn_limits(c);
    const struct wg_upstream_cfg *ucfg = &c->px->cfg->upstream;
    const struct exchange *x = c->x;
    uint64_t d = UINT64_MAX;
    enum deadline_kind k = DL_NONE;

    switch (c->state) {
    case CS_HEAD:
        if (x != NULL)
            take_earlier(&d, &k, x->head_start_ms + lim->head_timeout_ms, DL_HEAD);
        else
            take_earlier(&d, &k,
                         c->idle_since +
                             (c->requests == 0 ? lim->head_timeout_ms : lim->keepalive_idle_ms),
                         DL_IDLE);
        break;
    case CS_WAITING:
        take_earlier(&d, &k, x->wait_start_ms + c->px->cfg->sessions.wake_timeout_ms, DL_WAKE);
        if (x->page_after_ms > 0)
            take_earlier(&d, &k, x->wait_start_ms + x->page_after_ms, DL_PAGE);
        if (x->recheck_at_ms)
            take_earlier(&d, &k, x->recheck_at_ms, DL_RECHECK);
        break;
    case CS_CONNECTING:
        take_earlier(&d, &k, x->up_start_ms + ucfg->connect_timeout_ms, DL_CONNECT);
        break;
    case CS_PROXY:
        /* A body stalled by our own backpressure is not idle. */
        if (!x->req.complete && c->reading_client)
            take_earlier(&d, &k,
                         max_u64(c->last_client_read_ms, x->last_up_write_ms) + lim->body_idle_ms,
                         DL_BODY_IDLE);
        if (!x->resp_head_received)
            take_earlier(&d, &k,
                         max_u64(x->last_up_write_ms, x->up_start_ms) + ucfg->response_timeout_ms,
                         DL_RESPONSE);
        take_earlier(&d, &k, conn_stream_deadline(c), DL_STREAM_QUIET);
        break;
    case CS_TUNNEL:
        take_earlier(&d, &k,
                     max_u64(max_u64(c->last_client_read_ms, x->last_up_read_ms),
                             max_u64(c->last_client_write_ms, x->last_up_write_ms)) +
                         lim->tunnel_idle_ms,
                     DL_TUNNEL_IDLE);
        take_earlier(&d, &k, conn_stream_deadline(c), DL_STREAM_QUIET);
        break;
    case CS_LINGER:
        take_earlier(&d, &k, c->linger_start_ms + LINGER_MS, DL_LINGER);
        break;
    case CS_H2:
        break; /* the session keeps its own idle and stall times */
    }
    /* An HTTP/2 stream's connection: its session resets a stream whose
     * answer waits too long for the client's window. */
    if (c->client_pending > 0 && c->state != CS_LINGER && c->vstream == NULL)
        take_earlier(&d, &k, c->last_client_write_ms + lim->send_idle_ms, DL_SEND_IDLE);
    if (ret_kind)
        *ret_kind = k;
    return d;
}

static void timer_cb(uv_timer_t *t);

void conn_arm(struct wg_conn *c)
{
    if (c->closing)
        return;
    uint64_t now = conn_now_ms(c);
    uint64_t d = conn_deadline(c, NULL);
    if (d == UINT64_MAX) {
        uv_timer_stop(&c->timer);
        return;
    }
    uv_timer_start(&c->timer, timer_cb, d > now ? d - now : 0, 0);
}

static void deadline_passed(struct wg_conn *c, enum deadline_kind k)
{
    switch (k) {
    case DL_NONE:
        break;
    case DL_IDLE:
        conn_tls_timed_out(c);
        conn_close(c);
        break;
    case DL_LINGER:
        conn_close(c);
        break;
    case DL_HEAD:
        WG_INFO(c->px->log, "conn", "request head timeout, returning 408", "conn=%" PRIu64, c->id);
        conn_send_error(c, 408);
        break;
    case DL_CONNECT:
        conn_upstream_failed(c, 504, "connect timeout", false);
        break;
    case DL_RESPONSE:
        conn_upstream_failed(c, 504, "response header timeout", false);
        break;
    case DL_BODY_IDLE:
        WG_INFO(c->px->log, "conn", "request body idle, closing", "conn=%" PRIu64, c->id);
        conn_close(c);
        break;
    case DL_SEND_IDLE:
        WG_INFO(c->px->log, "conn", "client reads nothing, closing", "conn=%" PRIu64 " queued=%zu",
                c->id, c->client_pending);
        conn_close(c);
        break;
    case DL_TUNNEL_IDLE:
        WG_INFO(c->px->log, "conn", "tunnel idle, closing", "conn=%" PRIu64, c->id);
        conn_close(c);
        break;
    case DL_STREAM_QUIET:
        conn_stream_quiet(c);
        break;
    case DL_PAGE:
        conn_session_page_due(c);
        break;
    case DL_WAKE:
        if (c->x->held_doubt) {
            conn_session_doubt_expired(c);
            break;
        }
        WG_INFO(c->px->log, "conn", "session not ready by the wake deadline, returning 504",
                "conn=%" PRIu64 " session=%s", c->id, c->x->session_id);
        conn_hold_end(c, WG_HOLD_TIMEOUT);
        conn_session_unwait(c);
        conn_send_error(c, 504);
        break;
    case DL_RECHECK:
        conn_session_recheck_due(c);
        break;
    }
}

/* Reads and writes only move timestamps; the deadline is computed here and
 * the timer re-armed when it was pushed back. */
static void timer_cb(uv_timer_t *t)
{
    struct wg_conn *c = t->data;
    enum deadline_kind k;
    uint64_t now = conn_now_ms(c);
    uint64_t d = conn_deadline(c, &k);

    if (d > now) {
        if (d != UINT64_MAX)
            uv_timer_start(&c->timer, timer_cb, d - now, 0);
        return;
    }
    deadline_passed(c, k);
}

/* ---- closing gracefully ---------------------------------------------------- */

static void shutdown_cb(uv_shutdown_t *req, int status)
{
    struct shut *sh = (struct shut *)req;
    struct wg_conn *c = sh->c;
    free(sh);
    if (status < 0 && !c->closing && c->state == CS_LINGER)
        conn_close(c);
    conn_unref(c);
}

int conn_shutdown(struct wg_conn *c, uv_stream_t *s)
{
    if (c->vstream != NULL && s == (uv_stream_t *)&c->client) {
        wg_h2_stream_shutdown(c->vstream);
        return 0;
    }
    if (c->tls != NULL && s == (uv_stream_t *)&c->client)
        conn_tls_close_notify(c); /* queued before the FIN */
    struct shut *sh = malloc(sizeof(*sh));
    if (sh == NULL)
        return UV_ENOMEM;
    sh->c = c;
    int r = uv_shutdown(&sh->req, s, shutdown_cb);
    if (r < 0) {
        free(sh);
        return r;
    }
    c->refs++;
    return 0;
}

/* Sends FIN once our last response is flushed, then reads and discards
 * what the client still sends for a short while: closing with unread input
 * would reset the connection and could destroy the response in flight. */
void conn_begin_close(struct wg_conn *c)
{
    if (c->closing || c->state == CS_LINGER)
        return;
    conn_flush_held_head(c);
    c->close_after_flush = true;
    if (c->client_pending > 0)
        return;
    conn_release_upstream(c, false);
    c->state = CS_LINGER;
    c->linger_start_ms = conn_now_ms(c);
    if (c->client_shut_sent || conn_shutdown(c, (uv_stream_t *)&c->client) < 0) {
        conn_close(c);
        return;
    }
    c->client_shut_sent = true;
    if (c->client_eof || c->vstream != NULL) {
        conn_close(c); /* a stream has no client to linger for */
        return;
    }
    conn_update_reading(c);
    conn_arm(c);
}

void conn_send_error(struct wg_conn *c, int status)
{
    struct exchange *x = c->x;
    char buf[512 + 64 + 256]; /* + "Strict-Transport-Security: " + tls.hsts */
    const char *reason = wg_http_reason(status);
    const char *hsts = c->https ? c->px->cfg->tls.hsts : NULL;
    const char *extra = (status == 503 || status == 504) ? "Retry-After: 1\r\n"
                        : status == 405                  ? "Allow: " WG_PROXY_ALLOW "\r\n"
                                                         : "";

    if (c->closing)
        return;
    if (x == NULL) {
        /* No request to answer: errors come only once a head started. */
        conn_close(c);
        return;
    }
    conn_drop_held_head(c);
    if (x->resp_head_sent) {
        conn_close(c);
        return;
    }
    conn_release_upstream(c, false);
    int n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n%s%s%s%s\r\n%s\n",
                     status, reason, strlen(reason) + 1, extra,
                     hsts ? "Strict-Transport-Security: " : "", hsts ? hsts : "",
                     hsts ? "\r\n" : "", reason);
    x->status = status;
    x->resp_head_sent = true;
    if (c->state == CS_HEAD && !x->req_start_ms)
        x->req_start_ms = conn_now_ms(c);
    c->state = CS_PROXY; /* leaves CS_HEAD so no further head is parsed */
    conn_write_str(c, SIDE_CLIENT, buf, (size_t)n);
    conn_access_log(c);
    conn_begin_close(c);
}

/* ---- reading the client ------------------------------------------------------ */

void conn_drain_inbuf(struct wg_conn *c)
{
    if (c->in_process || c->closing || wg_buf_size(&c->in) == 0)
        return;
    c->in_process = true;
    size_t used = conn_request_process(c, wg_buf_head(&c->in), wg_buf_size(&c->in));
    c->in_process = false;
    if (!c->closing)
        wg_buf_consume(&c->in, used);
    if (wg_buf_size(&c->in) == 0)
        wg_buf_release(&c->in);
}

/* A read that goes on to the upstream (a request body, a tunnel) takes only
 * what fits under the mark; one that waits in c->in (a head, pipelined
 * bytes) is bounded by c->in's cap instead. */
static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct wg_conn *c = h->data;
    bool to_up = c->state == CS_TUNNEL || (c->state == CS_PROXY && !c->x->req.complete);
    buf->base = c->px->readbuf;
    buf->len = to_up ? conn_read_room(c, SIDE_UP) : sizeof(c->px->readbuf);
    if (c->tls != NULL)
        buf->len = conn_tls_read_size(c, to_up, buf->len);
}

void conn_client_eof(struct wg_conn *c)
{
    c->client_eof = true;
    switch (c->state) {
    case CS_HEAD:
    case CS_LINGER:
    case CS_H2:
        conn_close(c);
        return;
    case CS_WAITING:
        /* Nobody to answer: free the hold slot now, not at the deadline. */
        conn_close(c);
        return;
    case CS_CONNECTING:
    case CS_PROXY:
        if (!c->x->req.complete) {
            /* Aborted upload: the upstream connection saw a partial body. */
            WG_INFO(c->px->log, "conn", "client closed mid-request", "conn=%" PRIu64, c->id);
            conn_close(c);
            return;
        }
        c->x->req_keep_alive = false;
        conn_update_reading(c);
        return;
    case CS_TUNNEL:
        if (c->x->up_eof && c->x->up_pending == 0 && c->client_pending == 0) {
            conn_close(c);
            return;
        }
        if (c->x->up != NULL)
            conn_shutdown(c, wg_upconn_stream(c->x->up));
        conn_update_reading(c);
        return;
    }
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct wg_conn *c = s->data;

    if (n == 0 || c->closing)
        return;
    if (n == UV_ENOBUFS) {
        /* No room under the mark (client_alloc): stop until the queue drains. */
        conn_update_reading(c);
        return;
    }
    if (n < 0) {
        if (n == UV_EOF)
            conn_client_eof(c);
        else
            conn_close(c);
        return;
    }
    c->last_client_read_ms = conn_now_ms(c);
    if (c->tls != NULL)
        conn_tls_read(c, buf->base, (size_t)n);
    else
        conn_client_bytes(c, buf->base, (size_t)n);
}

void conn_client_bytes(struct wg_conn *c, const char *data, size_t n)
{
    if (c->h2 != NULL) {
        conn_h2_bytes(c, data, n);
        return;
    }
    if (!conn_is_h2_stream(c))                /* counted as HTTP/2 frames on its connection */
        c->px->stats.bytes_in += (uint64_t)n; /* plaintext, as bytes_out */
    if (wg_buf_size(&c->in) == 0) {
        c->in_process = true;
        size_t used = conn_request_process(c, data, n);
        c->in_process = false;
        if (c->closing || used == n)
            return;
        if (wg_buf_append(&c->in, data + used, n - used) < 0) {
            conn_send_error(c, 431);
            return;
        }
        conn_update_reading(c);
        return;
    }
    if (wg_buf_append(&c->in, data, n) < 0) {
        conn_send_error(c, 431);
        return;
    }
    conn_drain_inbuf(c);
    conn_update_reading(c);
}

/* ---- parser settings --------------------------------------------------------- */

static int on_message_complete_pause(llhttp_t *p)
{
    struct wg_http_msg *m = p->data;
    m->complete = true;
    /* Stop right after this message: what follows is the next message, and
     * it waits for this exchange to end. */
    return HPE_PAUSED;
}

void wg_conn_settings_init(struct wg_proxy *px)
{
    wg_http_settings_init(&px->req_settings);
    px->req_settings.on_body = conn_on_request_body;
    px->req_settings.on_message_complete = on_message_complete_pause;
    wg_http_settings_init(&px->resp_settings);
    px->resp_settings.on_body = conn_on_response_body;
    px->resp_settings.on_message_complete = on_message_complete_pause;
}

/* ---- accept, drain ---------------------------------------------------------- */

/* The part of an accept that every client connection shares, once its
 * socket is c->client and its peer known. */
static void conn_begin(struct wg_conn *c)
{
    struct wg_proxy *px = c->px;
    const struct wg_config *cfg = px->cfg;

    uv_timer_init(px->loop, &c->timer);
    c->timer.data = c;
    c->refs++;
    c->id = ++*px->conn_id;
    wg_list_push_back(&px->conns, &c->link);
    wg_buf_init(&c->in, cfg->limits.head_max + PIPELINE_BUFFER_MAX);
    c->state = CS_HEAD;
    c->idle_since = conn_now_ms(c);
    c->draining = px->shutting_down;
}

static struct wg_conn *conn_alloc(struct wg_proxy *px)
{
    struct wg_conn *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    if (uv_tcp_init(px->loop, &c->client) < 0) {
        free(c);
        return NULL;
    }
    px->live_conns++;
    c->client.data = c;
    c->px = px;
    c->refs = 1;
    wg_list_init(&c->link);
    return c;
}

void wg_conn_accept(struct wg_proxy *px)
{
    const struct wg_config *cfg = px->cfg;
    struct wg_conn *c = conn_alloc(px);
    int namelen = sizeof(c->peer);

    if (c == NULL)
        return;
    if (uv_accept((uv_stream_t *)&px->listener, (uv_stream_t *)&c->client) < 0) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->client, handle_closed);
        return;
    }
    /* The cap is the gateway's: gw_open counts every worker loop's. */
    if (++*px->gw_open > cfg->limits.connections_max || px->shutting_down) {
        /* Over the cap: refuse this one; existing traffic is unaffected. */
        px->stats.connections_refused++;
        (*px->gw_open)--;
        c->closing = true;
        uv_close((uv_handle_t *)&c->client, handle_closed);
        return;
    }
    px->stats.connections_open++;
    px->stats.connections_accepted++;
    uv_tcp_getpeername(&c->client, &c->peer.sa, &namelen);
    c->peer_trusted =
        cfg->trusted_proxies_len > 0 &&
        wg_cidr_contains_any(cfg->trusted_proxies, cfg->trusted_proxies_len, &c->peer.sa);
    uv_tcp_nodelay(&c->client, 1);
    conn_begin(c);
    if (px->tls != NULL && conn_tls_start(c) < 0) {
        conn_close(c);
        return;
    }
    c->https = px->tls != NULL;
    conn_update_reading(c);
    conn_arm(c);
}

struct wg_conn *wg_conn_open_vstream(struct wg_conn *parent, struct wg_h2_stream *s)
{
    struct wg_conn *c = conn_alloc(parent->px);

    if (c == NULL)
        return NULL;
    /* The handle is never opened: it only keeps the connection's shape
     * (uv_close on it works as on any other). */
    c->vstream = s;
    c->h2_parent = parent->id;
    c->h2_stream_id = wg_h2_stream_id(s);
    c->https = true;
    c->peer = parent->peer;
    c->peer_trusted = parent->peer_trusted;
    conn_begin(c);
    conn_update_reading(c);
    conn_arm(c);
    return c;
}

void conn_vstream_pending(struct wg_conn *c, size_t n)
{
    if (c->closing)
        return;
    if (n < c->client_pending)
        c->last_client_write_ms = conn_now_ms(c);
    c->client_pending = n;
    if (n == 0 && c->close_after_flush)
        conn_begin_close(c);
    else
        conn_update_reading(c);
}

void wg_conn_drain_all(struct wg_proxy *px)
{
    struct wg_list *n;

    /* An HTTP/2 connection's GOAWAY may end it at once, and its streams'
     * connections with it (anywhere in the list): after one, the walk
     * starts again, skipping the connections already told. */
restart:
    n = px->conns.next;
    while (n != &px->conns) {
        struct wg_conn *c = wg_container_of(n, struct wg_conn, link);
        n = n->next;
        if (c->draining)
            continue;
        c->draining = true;
        if (c->h2 != NULL) {
            wg_h2_shutdown(c->h2); /* GOAWAY: its streams finish, then it ends */
            goto restart;
        }
        if (c->state == CS_HEAD && c->x == NULL && wg_buf_size(&c->in) == 0 &&
            !conn_is_h2_stream(c))
            conn_close(c);
    }
}

void wg_conn_remap_routes(struct wg_proxy *px, const uint32_t *map, size_t n)
{
    for (struct wg_list *l = px->conns.next; l != &px->conns; l = l->next) {
        struct wg_conn *c = wg_container_of(l, struct wg_conn, link);
        struct exchange *x = c->x;
        if (x != NULL)
            x->route_slot =
                map != NULL && x->route_slot < n ? map[x->route_slot] : WG_ROUTE_SLOT_UNCOUNTED;
    }
}

void wg_conn_addr_gone(struct wg_proxy *px, const struct sockaddr *ip)
{
    struct wg_list *n = px->conns.next;

    while (n != &px->conns) {
        struct wg_conn *c = wg_container_of(n, struct wg_conn, link);
        n = n->next;
        if (c->closing || c->state != CS_CONNECTING || c->x == NULL || !c->x->is_session ||
            !wg_net_same_ip((const struct sockaddr *)&c->x->up_addr, ip))
            continue;
        conn_upstream_failed(c, 502, "the session left this address", false);
    }
}

void wg_conn_close_all(struct wg_proxy *px)
{
    while (!wg_list_empty(&px->conns))
        conn_close(wg_container_of(px->conns.next, struct wg_conn, link));
}
