/* proxy/conn.c - one client connection: the HTTP/1.1 state machine that
 * reads request heads, forwards requests and their bodies upstream, relays
 * responses, tunnels upgrades and enforces the limits of PROXY-RULES.md.
 *
 * Ownership: a connection owns its client handle, its timer and the write
 * requests it queued; it borrows one upstream connection at a time from the
 * pool. `refs` counts open handles plus writes and shutdowns in flight; the
 * memory is freed when it reaches zero, never earlier, so a libuv callback
 * never sees a freed connection. Every close path goes through conn_close(),
 * which is idempotent. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/list.h"
#include "proxy/server.h"
#include "proxy/session_cache.h"

#define SIDE_CLIENT 0
#define SIDE_UP 1
#define LINGER_MS 2000
#define MAX_RETRIES 1
/* Room in c->in beyond a full head: a client may send this much ahead
 * (pipelined requests, an early body) before we stop reading it. */
#define PIPELINE_BUFFER_MAX (2 * WG_READ_BUF_SIZE)

enum conn_state {
    CS_HEAD,       /* waiting for a request head; [transient] once bytes arrive */
    CS_WAITING,    /* [transient] held until its session runs (or the wake deadline) */
    CS_CONNECTING, /* [transient] head parsed, waiting for the upstream */
    CS_PROXY,      /* [transient] request forwarded, body and response flowing */
    CS_TUNNEL,     /* upgraded: bytes both ways */
    CS_LINGER,     /* final response sent and FIN sent; discarding input */
};

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
};

/* How a request for a session that is not running is answered. */
enum req_class {
    RC_HOLD = 0, /* API, fetch, WebSocket: wake and hold until ready */
    RC_NAVIGATE, /* a browser navigation: wake and answer the waking page */
    RC_PROBE,    /* probes, non-waking paths and user agents: status, no wake */
};

/* What one request/response exchange needs. Allocated when a head starts
 * and returned when the exchange ends, so an idle keep-alive connection
 * holds only struct wg_conn. */
struct exchange {
    llhttp_t req_parser;
    struct wg_http_msg req;
    llhttp_t resp_parser;
    struct wg_http_msg resp;
    struct wg_http_scan resp_scan;
    struct wg_buf up_head;   /* rebuilt request head, kept for a retry */
    struct wg_buf up_in;     /* a partial response head */
    struct wg_buf held_head; /* response head waiting to go out with the first body bytes */
    struct sockaddr_storage up_addr;
    char up_name[80];
    char log_method[16];
    char log_host[96];
    char log_path[256];
    /* session routes */
    struct wg_conn *conn;
    struct wg_sess_waiter waiter;
    char session_id[WG_SESSION_ID_MAX + 1];
    char status_url[128];
    uint16_t session_port;
    enum req_class req_class;
    bool is_session;
    bool status_path;
    bool waited;
    bool held_wake;    /* held while its session was not running */
    bool hold_counted; /* held_released counted */
    bool ttfb_counted; /* upstream_latency (and wake_first_byte) observed */
    uint64_t wait_start_ms;
    /* For the histograms (uv_hrtime(): finer than loop time, no syscall). */
    uint64_t head_ns;               /* first byte of the head */
    uint64_t up_ns;                 /* upstream connection taken */
    uint64_t wait_ns;               /* hold started */
    struct wg_sess_entry *activity; /* the session counts as active while set */
    struct exchange *next_free;
};

union peer_addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
};

struct wg_conn {
    uv_tcp_t client; /* first: handle callbacks cast back */
    uv_timer_t timer;
    struct wg_proxy *px;
    struct exchange *x; /* NULL while idle */
    struct wg_list link;
    uint64_t id;
    int refs;
    enum conn_state state;
    bool closing;
    bool client_eof;
    bool up_eof;
    bool reading_client;
    bool draining;          /* gateway shutting down: close after this response */
    bool close_after_flush; /* shut down once the client write queue is empty */
    bool in_process;        /* guards client_process against re-entry */
    bool peer_trusted;
    bool client_shut_sent;
    union peer_addr peer;

    /* request side */
    struct wg_http_scan req_scan;
    struct wg_buf in; /* client bytes not yet processed */
    bool head_started;
    bool req_keep_alive;
    bool body_too_large;
    bool req_head_written; /* some request byte reached the upstream socket */
    bool sent_100;
    enum wg_http_framing req_framing;
    uint64_t req_body_bytes;
    unsigned requests;

    /* upstream side */
    struct wg_upconn *up;
    uint64_t up_gen; /* changes with every upstream borrowed */
    bool up_reused;
    bool resp_head_received;
    bool resp_head_sent;
    bool resp_keep_alive;
    unsigned retries;
    enum wg_http_framing resp_framing;
    size_t pending[2];

    /* times (loop ms) */
    uint64_t idle_since;
    uint64_t head_start_ms;
    uint64_t req_start_ms;
    uint64_t up_start_ms;
    uint64_t up_first_byte_ms;
    uint64_t last_client_read_ms;
    uint64_t last_client_write_ms;
    uint64_t last_up_read_ms;
    uint64_t last_up_write_ms;
    uint64_t linger_start_ms;

    /* for the access log */
    int status;
    uint32_t route_slot; /* row of px->route_rows the response is counted in */
    uint64_t req_bytes_in;
    uint64_t resp_bytes_out;
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

static void conn_close(struct wg_conn *c);
static void conn_arm(struct wg_conn *c);
static void update_reading(struct wg_conn *c);
static void client_drain_inbuf(struct wg_conn *c);
static void upstream_failed(struct wg_conn *c, int status, const char *why, bool retryable);
static void send_error(struct wg_conn *c, int status);
static void begin_close(struct wg_conn *c);
static void up_process(struct wg_conn *c, const char *data, size_t len);
static void finish_exchange(struct wg_conn *c);

static inline uint64_t now_ms(const struct wg_conn *c)
{
    return uv_now(c->px->loop);
}

static inline const struct wg_limits *limits(const struct wg_conn *c)
{
    return &c->px->cfg->limits;
}

/* ---- exchanges ----------------------------------------------------------- */

/* Exchanges kept for reuse per loop: enough for a burst, bounded so a spike
 * of connections does not pin memory after it. */
#define EXCHANGE_CACHE_MAX 256

static struct exchange *exchange_get(struct wg_conn *c)
{
    struct wg_proxy *px = c->px;
    const struct wg_limits *lim = &px->cfg->limits;
    struct exchange *x = px->exchange_cache;

    if (x != NULL) {
        px->exchange_cache = x->next_free;
        px->exchange_cache_len--;
    } else {
        x = malloc(sizeof(*x));
        if (x == NULL)
            return NULL;
    }
    memset(x, 0, offsetof(struct exchange, up_addr));
    x->up_name[0] = x->log_method[0] = x->log_host[0] = x->log_path[0] = '\0';
    x->next_free = NULL;
    x->conn = c;
    x->waiter.entry = NULL;
    x->session_id[0] = x->status_url[0] = '\0';
    x->session_port = 0;
    x->req_class = RC_HOLD;
    x->is_session = x->status_path = x->waited = false;
    x->held_wake = x->hold_counted = x->ttfb_counted = false;
    x->wait_start_ms = 0;
    x->head_ns = x->up_ns = x->wait_ns = 0;
    x->activity = NULL;
    llhttp_init(&x->req_parser, HTTP_REQUEST, &px->req_settings);
    x->req_parser.data = &x->req;
    llhttp_init(&x->resp_parser, HTTP_RESPONSE, &px->resp_settings);
    x->resp_parser.data = &x->resp;
    x->resp.is_response = true;
    wg_buf_init(&x->up_in, lim->head_max + WG_READ_BUF_SIZE);
    wg_buf_init(&x->up_head, lim->head_max * 2 + 1024);
    wg_buf_init(&x->held_head, lim->head_max * 2 + 1024);
    return x;
}

/* The exchange no longer keeps its session active. Reached from the end of
 * an exchange (finish_exchange, exchange_put) and from conn_close, which
 * runs before the session cache can be freed: idempotent. */
static void activity_end(struct wg_conn *c)
{
    if (c->x != NULL && c->x->activity != NULL)
        wg_session_cache_activity_end(c->px->session_cache, &c->x->activity);
}

/* Ends the exchange: its buffers are released, the struct is cached. */
static void exchange_put(struct wg_conn *c)
{
    struct wg_proxy *px = c->px;
    struct exchange *x = c->x;
    if (x == NULL)
        return;
    activity_end(c);
    c->x = NULL;
    if (px->session_cache != NULL)
        wg_session_cache_unwait(px->session_cache, &x->waiter);
    wg_buf_release(&x->up_in);
    wg_buf_release(&x->up_head);
    wg_buf_release(&x->held_head);
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
    exchange_put(c);
    free(c);
    wg_proxy_conn_gone(px);
}

static void handle_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

static void release_upstream(struct wg_conn *c, bool reusable)
{
    if (c->up == NULL)
        return;
    wg_pool_release(c->px->pool, c->up, reusable && c->pending[SIDE_UP] == 0);
    c->up = NULL;
    c->up_gen++;
    c->pending[SIDE_UP] = 0;
    c->up_eof = false;
}

/* A request held for a wake leaves the hold: counted once, at the first of
 * the release (served), the wake deadline, a close while held, or the end of
 * its exchange (failed: answered while not served). */
static void hold_end(struct wg_conn *c, enum wg_proxy_hold_outcome outcome)
{
    struct exchange *x = c->x;
    if (x == NULL || !x->held_wake || x->hold_counted)
        return;
    x->hold_counted = true;
    c->px->stats.held_released[outcome]++;
}

/* Reached from client EOF/errors, timeouts, write failures, the end of a
 * linger, gateway shutdown and proxy free: idempotent. */
static void conn_close(struct wg_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->state == CS_WAITING)
        hold_end(c, WG_HOLD_ABANDONED);
    if (c->x != NULL && c->px->session_cache != NULL)
        wg_session_cache_unwait(c->px->session_cache, &c->x->waiter);
    activity_end(c);
    release_upstream(c, false);
    wg_list_remove(&c->link);
    c->px->stats.connections_open--;
    uv_close((uv_handle_t *)&c->timer, handle_closed);
    uv_close((uv_handle_t *)&c->client, handle_closed);
}

/* ---- access log ----------------------------------------------------------- */

static void copy_span(char *dst, size_t dstlen, const char *p, size_t n)
{
    if (p == NULL)
        n = 0;
    if (n >= dstlen)
        n = dstlen - 1;
    memcpy(dst, p ? p : "", n);
    dst[n] = '\0';
}

/* The end of an exchange's response (or its 101 head): the counters, then
 * the access line. No allocation: array increments and one histogram. */
static void access_log(struct wg_conn *c)
{
    struct wg_proxy *px = c->px;
    uint64_t now = now_ms(c);
    char qhost[128], qpath[300];

    if (c->status >= 100 && c->status < 600) {
        unsigned k = (unsigned)c->status / 100;
        uint64_t end_ns = uv_hrtime();
        uint64_t start_ns = c->x != NULL && c->x->head_ns != 0 ? c->x->head_ns : end_ns;
        px->stats.responses_by_class[k]++;
        if (c->route_slot < px->route_nrows)
            px->route_rows[c->route_slot].by_class[k]++;
        wg_hist_observe_ns(&px->stats.request_duration, end_ns - start_ns);
    }
    hold_end(c, WG_HOLD_FAILED);
    if (!px->cfg->access_log || !wg_log_enabled(px->log, WG_LOG_INFO) || c->x == NULL)
        return;
    wg_log_quote(qhost, sizeof(qhost), c->x->log_host, strlen(c->x->log_host));
    wg_log_quote(qpath, sizeof(qpath), c->x->log_path, strlen(c->x->log_path));
    wg_log_write(px->log, WG_LOG_INFO, "access", "request",
                 "conn=%" PRIu64 " method=%s host=%s path=%s status=%d bytes_in=%" PRIu64
                 " bytes_out=%" PRIu64 " upstream=%s upstream_ms=%" PRId64 " total_ms=%" PRIu64,
                 c->id, c->x->log_method[0] ? c->x->log_method : "-", qhost[0] ? qhost : "-",
                 qpath[0] ? qpath : "-", c->status, c->req_bytes_in, c->resp_bytes_out,
                 c->x->up_name[0] ? c->x->up_name : "-",
                 c->up_first_byte_ms ? (int64_t)(c->up_first_byte_ms - c->up_start_ms)
                                     : (int64_t)-1,
                 now - c->req_start_ms);
}

/* ---- writes ------------------------------------------------------------- */

static uv_stream_t *side_stream(struct wg_conn *c, int side)
{
    if (side == SIDE_CLIENT)
        return (uv_stream_t *)&c->client;
    return c->up ? wg_upconn_stream(c->up) : NULL;
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
        upstream_failed(c, 502, uv_err_name(err), c->up_reused || !c->req_head_written);
    }
}

static void write_cb(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct wg_conn *c = w->c;
    bool stale = w->side == SIDE_UP && w->gen != c->up_gen;

    if (!stale && !c->closing) {
        c->pending[w->side] -= w->len;
        if (status < 0) {
            side_failed(c, w->side, status);
        } else {
            if (w->side == SIDE_CLIENT)
                c->last_client_write_ms = now_ms(c);
            else
                c->last_up_write_ms = now_ms(c);
            if (w->side == SIDE_CLIENT && c->pending[SIDE_CLIENT] == 0 && c->close_after_flush)
                begin_close(c);
            else if (c->state == CS_TUNNEL && c->client_eof && c->up_eof &&
                     c->pending[SIDE_CLIENT] == 0 && c->pending[SIDE_UP] == 0)
                conn_close(c);
            else
                update_reading(c);
        }
    }
    free(w);
    conn_unref(c);
}

/* Writes bufs to one side: straight to the socket when nothing is queued,
 * the rest copied into a write request. Failures are handled here; callers
 * check c->closing (and the upstream generation) afterwards. */
static void conn_write(struct wg_conn *c, int side, uv_buf_t *bufs, unsigned nbufs)
{
    uv_stream_t *s = side_stream(c, side);
    uv_buf_t iov[8];
    size_t total = 0, off = 0;
    int r;

    if (c->closing || s == NULL)
        return;
    if (side == SIDE_CLIENT && c->x != NULL && wg_buf_size(&c->x->held_head) > 0 && nbufs < 8) {
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
        c->resp_bytes_out += total;
        c->px->stats.bytes_out += total;
    }

    if (c->pending[side] == 0) {
        r = uv_try_write(s, bufs, nbufs);
        if (r > 0 && side == SIDE_UP)
            c->req_head_written = true;
        if (r == (int)total) {
            if (side == SIDE_UP)
                c->last_up_write_ms = now_ms(c);
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
    r = uv_write(&w->req, s, &b, 1, write_cb);
    if (r < 0) {
        free(w);
        side_failed(c, side, r);
        return;
    }
    c->refs++;
    if (side == SIDE_UP)
        c->req_head_written = true;
    bool was_empty = c->pending[side] == 0;
    c->pending[side] += w->len;
    if (side == SIDE_CLIENT && was_empty) {
        c->last_client_write_ms = now_ms(c);
        conn_arm(c);
    }
    if (c->pending[side] > limits(c)->buffer_high_water)
        update_reading(c);
}

/* A held head never reached the client, so an error can still be answered
 * in its place. */
static void drop_held_head(struct wg_conn *c)
{
    if (c->x == NULL || wg_buf_size(&c->x->held_head) == 0)
        return;
    wg_buf_reset(&c->x->held_head);
    c->resp_head_sent = false;
}

/* Sends a response head kept back for coalescing, if any. */
static void flush_held_head(struct wg_conn *c)
{
    if (c->x != NULL && wg_buf_size(&c->x->held_head) > 0)
        conn_write(c, SIDE_CLIENT, NULL, 0);
}

static void write_str(struct wg_conn *c, int side, const char *s, size_t n)
{
    uv_buf_t b = uv_buf_init((char *)s, (unsigned)n);
    conn_write(c, side, &b, 1);
}

/* Writes one body span with the given framing. */
static void write_body(struct wg_conn *c, int side, enum wg_http_framing framing, const char *at,
                       size_t len)
{
    if (framing == WG_HTTP_FRAME_CHUNKED) {
        char hdr[24];
        int n = snprintf(hdr, sizeof(hdr), "%zx\r\n", len);
        uv_buf_t b[3] = {uv_buf_init(hdr, (unsigned)n), uv_buf_init((char *)at, (unsigned)len),
                         uv_buf_init("\r\n", 2)};
        conn_write(c, side, b, 3);
    } else {
        write_str(c, side, at, len);
    }
}

/* ---- reading control and timers ------------------------------------------ */

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);
static void up_alloc(void *user, uv_buf_t *buf);
static void up_read(void *user, ssize_t n, const uv_buf_t *buf);
static const struct wg_upconn_reader up_reader = {up_alloc, up_read};

/* Reading resumes below half the high-water mark, so a slow peer does not
 * toggle it on every write. */
static bool below_mark(const struct wg_conn *c, int side, bool reading)
{
    size_t hw = limits(c)->buffer_high_water;
    return c->pending[side] < (reading ? hw : hw / 2);
}

/* Whether one more full read fits in c->in. */
static bool inbuf_has_room(const struct wg_conn *c)
{
    return wg_buf_size(&c->in) + WG_READ_BUF_SIZE <= c->in.max;
}

static void update_reading(struct wg_conn *c)
{
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
            if (c->x->req.complete)
                want_client = !c->client_eof && inbuf_has_room(c);
            else
                want_client = !c->client_eof && below_mark(c, SIDE_UP, c->reading_client);
            want_up = c->up != NULL && !c->x->resp.complete && below_mark(c, SIDE_CLIENT, true);
            break;
        case CS_TUNNEL:
            want_client = !c->client_eof && below_mark(c, SIDE_UP, c->reading_client);
            want_up = c->up != NULL && !c->up_eof && below_mark(c, SIDE_CLIENT, true);
            break;
        case CS_LINGER:
            want_client = !c->client_eof;
            break;
        }
    }
    if (want_client != c->reading_client && !c->closing) {
        if (want_client)
            uv_read_start((uv_stream_t *)&c->client, client_alloc, client_read);
        else
            uv_read_stop((uv_stream_t *)&c->client);
        c->reading_client = want_client;
    }
    if (c->up != NULL)
        wg_upconn_read(c->up, want_up);
}

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
    const struct wg_limits *lim = limits(c);
    const struct wg_upstream_cfg *ucfg = &c->px->cfg->upstream;
    uint64_t d = UINT64_MAX;
    enum deadline_kind k = DL_NONE;

    switch (c->state) {
    case CS_HEAD:
        if (c->head_started)
            take_earlier(&d, &k, c->head_start_ms + lim->head_timeout_ms, DL_HEAD);
        else
            take_earlier(&d, &k,
                         c->idle_since +
                             (c->requests == 0 ? lim->head_timeout_ms : lim->keepalive_idle_ms),
                         DL_IDLE);
        break;
    case CS_WAITING:
        take_earlier(&d, &k, c->x->wait_start_ms + c->px->cfg->sessions.wake_timeout_ms, DL_WAKE);
        break;
    case CS_CONNECTING:
        take_earlier(&d, &k, c->up_start_ms + ucfg->connect_timeout_ms, DL_CONNECT);
        break;
    case CS_PROXY:
        /* A body stalled by our own backpressure is not idle. */
        if (!c->x->req.complete && c->reading_client)
            take_earlier(&d, &k,
                         max_u64(c->last_client_read_ms, c->last_up_write_ms) + lim->body_idle_ms,
                         DL_BODY_IDLE);
        if (!c->resp_head_received)
            take_earlier(&d, &k,
                         max_u64(c->last_up_write_ms, c->up_start_ms) + ucfg->response_timeout_ms,
                         DL_RESPONSE);
        break;
    case CS_TUNNEL:
        take_earlier(&d, &k,
                     max_u64(max_u64(c->last_client_read_ms, c->last_up_read_ms),
                             max_u64(c->last_client_write_ms, c->last_up_write_ms)) +
                         lim->tunnel_idle_ms,
                     DL_TUNNEL_IDLE);
        break;
    case CS_LINGER:
        take_earlier(&d, &k, c->linger_start_ms + LINGER_MS, DL_LINGER);
        break;
    }
    if (c->pending[SIDE_CLIENT] > 0 && c->state != CS_LINGER)
        take_earlier(&d, &k, c->last_client_write_ms + lim->send_idle_ms, DL_SEND_IDLE);
    if (ret_kind)
        *ret_kind = k;
    return d;
}

static void timer_cb(uv_timer_t *t);

static void conn_arm(struct wg_conn *c)
{
    if (c->closing)
        return;
    uint64_t now = now_ms(c);
    uint64_t d = conn_deadline(c, NULL);
    if (d == UINT64_MAX) {
        uv_timer_stop(&c->timer);
        return;
    }
    uv_timer_start(&c->timer, timer_cb, d > now ? d - now : 0, 0);
}

static void timer_cb(uv_timer_t *t)
{
    struct wg_conn *c = t->data;
    enum deadline_kind k;
    uint64_t now = now_ms(c);
    uint64_t d = conn_deadline(c, &k);

    if (d > now) {
        if (d != UINT64_MAX)
            uv_timer_start(&c->timer, timer_cb, d - now, 0);
        return;
    }
    switch (k) {
    case DL_NONE:
        break;
    case DL_IDLE:
        conn_close(c);
        break;
    case DL_HEAD:
        WG_INFO(c->px->log, "conn", "request head timeout, returning 408", "conn=%" PRIu64, c->id);
        send_error(c, 408);
        break;
    case DL_CONNECT:
        upstream_failed(c, 504, "connect timeout", false);
        break;
    case DL_RESPONSE:
        upstream_failed(c, 504, "response header timeout", false);
        break;
    case DL_BODY_IDLE:
        WG_INFO(c->px->log, "conn", "request body idle, closing", "conn=%" PRIu64, c->id);
        conn_close(c);
        break;
    case DL_SEND_IDLE:
        WG_INFO(c->px->log, "conn", "client reads nothing, closing", "conn=%" PRIu64 " queued=%zu",
                c->id, c->pending[SIDE_CLIENT]);
        conn_close(c);
        break;
    case DL_TUNNEL_IDLE:
        WG_INFO(c->px->log, "conn", "tunnel idle, closing", "conn=%" PRIu64, c->id);
        conn_close(c);
        break;
    case DL_LINGER:
        conn_close(c);
        break;
    case DL_WAKE:
        WG_INFO(c->px->log, "conn", "session not ready by the wake deadline, returning 504",
                "conn=%" PRIu64 " session=%s", c->id, c->x->session_id);
        hold_end(c, WG_HOLD_TIMEOUT);
        wg_session_cache_unwait(c->px->session_cache, &c->x->waiter);
        send_error(c, 504);
        break;
    }
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

/* Half-closes a stream (FIN after the queued writes). Returns 0 or a
 * negative libuv error. */
static int conn_shutdown(struct wg_conn *c, uv_stream_t *s)
{
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
static void begin_close(struct wg_conn *c)
{
    if (c->closing || c->state == CS_LINGER)
        return;
    flush_held_head(c);
    c->close_after_flush = true;
    if (c->pending[SIDE_CLIENT] > 0)
        return;
    release_upstream(c, false);
    c->state = CS_LINGER;
    c->linger_start_ms = now_ms(c);
    if (c->client_shut_sent || conn_shutdown(c, (uv_stream_t *)&c->client) < 0) {
        conn_close(c);
        return;
    }
    c->client_shut_sent = true;
    if (c->client_eof) {
        conn_close(c);
        return;
    }
    update_reading(c);
    conn_arm(c);
}

/* Our own response (errors, 404): always the last on the connection. */
static void send_error(struct wg_conn *c, int status)
{
    char buf[512];
    const char *reason = wg_http_reason(status);
    const char *extra = (status == 503 || status == 504) ? "Retry-After: 1\r\n" : "";

    if (c->closing)
        return;
    drop_held_head(c);
    if (c->resp_head_sent) {
        conn_close(c);
        return;
    }
    release_upstream(c, false);
    int n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n%s\r\n%s\n",
                     status, reason, strlen(reason) + 1, extra, reason);
    c->status = status;
    c->resp_head_sent = true;
    if (c->state == CS_HEAD && !c->req_start_ms)
        c->req_start_ms = now_ms(c);
    c->state = CS_PROXY; /* leaves CS_HEAD so no further head is parsed */
    write_str(c, SIDE_CLIENT, buf, (size_t)n);
    access_log(c);
    begin_close(c);
}

/* ---- the request ----------------------------------------------------------- */

static int on_req_body(llhttp_t *p, const char *at, size_t len)
{
    struct wg_http_msg *m = p->data;
    struct wg_conn *c = m->owner;
    const struct wg_limits *lim = limits(c);

    c->req_body_bytes += len;
    if (lim->body_max && c->req_body_bytes > lim->body_max) {
        c->body_too_large = true;
        return -1;
    }
    write_body(c, SIDE_UP, c->req_framing, at, len);
    return c->closing || c->up == NULL ? -1 : 0;
}

static int on_resp_body(llhttp_t *p, const char *at, size_t len);

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
    px->req_settings.on_body = on_req_body;
    px->req_settings.on_message_complete = on_message_complete_pause;
    wg_http_settings_init(&px->resp_settings);
    px->resp_settings.on_body = on_resp_body;
    px->resp_settings.on_message_complete = on_message_complete_pause;
}

static void request_body_done(struct wg_conn *c)
{
    if (c->req_framing == WG_HTTP_FRAME_CHUNKED)
        write_str(c, SIDE_UP, "0\r\n\r\n", 5);
    update_reading(c);
    conn_arm(c);
}

static void on_upstream_ready(struct wg_conn *c)
{
    c->state = CS_PROXY;
    c->resp_head_received = false;
    c->up_first_byte_ms = 0;
    c->x->resp.fields = NULL;
    c->x->resp.fields_cap = 0;
    wg_http_msg_begin(&c->x->resp);
    wg_http_scan_reset(&c->x->resp_scan, true);
    wg_buf_reset(&c->x->up_in);
    c->last_up_write_ms = now_ms(c);
    c->req_head_written = false;
    write_str(c, SIDE_UP, wg_buf_head(&c->x->up_head), wg_buf_size(&c->x->up_head));
    if (c->closing || c->up == NULL)
        return;
    /* We removed Expect from the forwarded head, so the 100 is ours. */
    if (c->x->req.expect_continue && !c->x->req.complete && !c->sent_100) {
        c->sent_100 = true;
        write_str(c, SIDE_CLIENT, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    }
    update_reading(c);
    conn_arm(c);
    client_drain_inbuf(c);
}

static void upstream_connected(struct wg_upconn *uc, int status, void *user)
{
    struct wg_conn *c = user;
    if (status < 0) {
        char why[96];
        snprintf(why, sizeof(why), "connect: %s", uv_err_name(status));
        /* Nothing was sent: any method may be retried on a fresh connection. */
        upstream_failed(c, 502, why, true);
        return;
    }
    c->up_reused = false;
    on_upstream_ready(c);
}

static void connect_upstream(struct wg_conn *c, bool fresh)
{
    bool reused = false;
    struct wg_upconn *uc = NULL;

    c->state = CS_CONNECTING;
    c->up_start_ms = now_ms(c);
    c->x->up_ns = uv_hrtime();
    update_reading(c);
    int r = wg_pool_acquire(c->px->pool, (const struct sockaddr *)&c->x->up_addr, fresh, &up_reader,
                            upstream_connected, c, &uc, &reused);
    if (r < 0) {
        char why[96];
        snprintf(why, sizeof(why), "connect: %s", uv_err_name(r));
        upstream_failed(c, 502, why, false);
        return;
    }
    c->up = uc;
    c->up_gen++;
    c->pending[SIDE_UP] = 0;
    c->up_eof = false;
    if (reused) {
        c->up_reused = true;
        on_upstream_ready(c);
        return;
    }
    conn_arm(c);
}

/* Failure talking to the upstream: retried once on a fresh connection when
 * nothing was sent, or when a reused connection died before any response
 * byte for a replayable request; otherwise the client gets `status`, or a
 * close if the response had started. */
static void upstream_failed(struct wg_conn *c, int status, const char *why, bool retryable)
{
    struct wg_proxy *px = c->px;
    bool replayable = !c->req_head_written || (c->req_framing == WG_HTTP_FRAME_NONE &&
                                               wg_http_method_idempotent(c->x->req.method_id));

    if (c->closing)
        return;
    px->stats.upstream_errors++;
    drop_held_head(c);
    release_upstream(c, false);
    if (retryable && replayable && !c->resp_head_received && c->retries < MAX_RETRIES) {
        c->retries++;
        px->stats.upstream_retries++;
        WG_INFO(px->log, "conn", "upstream failed, retrying on a fresh connection",
                "conn=%" PRIu64 " upstream=%s error=\"%s\"", c->id, c->x->up_name, why);
        connect_upstream(c, true);
        return;
    }
    WG_WARN(px->log, "conn", c->resp_head_sent ? "upstream failed, closing" : "upstream failed",
            "conn=%" PRIu64 " upstream=%s error=\"%s\" status=%d", c->id, c->x->up_name, why,
            c->resp_head_sent ? 0 : status);
    if (c->resp_head_sent) {
        conn_close(c);
        return;
    }
    send_error(c, status);
}

static void record_request_for_log(struct wg_conn *c)
{
    const struct wg_http_msg *m = &c->x->req;
    size_t plen = m->target_len;
    copy_span(c->x->log_method, sizeof(c->x->log_method), m->method, m->method_len);
    copy_span(c->x->log_host, sizeof(c->x->log_host), m->host, m->host_len);
    if (m->target) {
        const char *q = memchr(m->target, '?', plen);
        if (q)
            plen = (size_t)(q - m->target);
    }
    copy_span(c->x->log_path, sizeof(c->x->log_path), m->target, plen);
}

/* ---- session routes ---------------------------------------------------------- */

static bool span_contains_nocase(const char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    if (m == 0 || m > n)
        return m == 0;
    for (size_t i = 0; i + m <= n; i++) {
        if (strncasecmp(hay + i, needle, m) == 0)
            return true;
    }
    return false;
}

/* Decided while the head's fields are still readable. */
static enum req_class classify(const struct wg_conn *c)
{
    const struct wg_config *cfg = c->px->cfg;
    const struct wg_http_msg *req = &c->x->req;
    const struct wg_http_field *ua = wg_http_find(req, "user-agent");
    size_t plen = req->target_len;
    const char *q = memchr(req->target, '?', plen);
    if (q)
        plen = (size_t)(q - req->target);

    for (size_t i = 0; ua && i < cfg->non_waking_user_agents_len; i++) {
        if (span_contains_nocase(ua->value, ua->value_len, cfg->non_waking_user_agents[i]))
            return RC_PROBE;
    }
    for (size_t i = 0; i < cfg->non_waking_paths_len; i++) {
        const char *p = cfg->non_waking_paths[i];
        if (strlen(p) == plen && memcmp(p, req->target, plen) == 0)
            return RC_PROBE;
    }
    if (req->upgrade_websocket)
        return RC_HOLD;
    const struct wg_http_field *mode = wg_http_find(req, "sec-fetch-mode");
    if (mode != NULL)
        return mode->value_len == 8 && strncasecmp(mode->value, "navigate", 8) == 0 ? RC_NAVIGATE
                                                                                    : RC_HOLD;
    const struct wg_http_field *accept = wg_http_find(req, "accept");
    if (req->method_id == HTTP_GET && accept != NULL &&
        span_contains_nocase(accept->value, accept->value_len, "text/html"))
        return RC_NAVIGATE;
    return RC_HOLD;
}

/* Fills the exchange's session facts from the route match. Returns false
 * when the request was answered (bad id, no session support). */
static bool session_prepare(struct wg_conn *c, const struct wg_route_match *m)
{
    struct exchange *x = c->x;
    const struct wg_http_msg *req = &x->req;
    size_t n = m->session_len;

    if (c->px->session_cache == NULL) {
        /* A proxy without Redis cannot know where sessions are. */
        send_error(c, 503);
        return false;
    }
    if (m->session == NULL || n == 0 || n > WG_SESSION_ID_MAX) {
        send_error(c, 404);
        return false;
    }
    /* Hosts compare without case, so ids are lowercase throughout. */
    for (size_t i = 0; i < n; i++) {
        char ch = m->session[i];
        x->session_id[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
    }
    x->session_id[n] = '\0';
    if (!wg_session_id_valid(x->session_id, n)) {
        send_error(c, 404);
        return false;
    }
    x->is_session = true;
    x->session_port = (uint16_t)m->route->port;
    x->req_class = classify(c);

    size_t plen = req->target_len;
    const char *q = memchr(req->target, '?', plen);
    if (q)
        plen = (size_t)(q - req->target);
    static const char status_suffix[] = "/_wakegate/status";
    size_t sl = sizeof(status_suffix) - 1;
    x->status_path = plen >= sl && memcmp(req->target + plen - sl, status_suffix, sl) == 0;
    /* Where the waking page polls: under the matched path prefix, if any. */
    size_t pre = m->prefix_len;
    while (pre > 0 && req->target[pre - 1] == '/')
        pre--;
    if (pre + sl + 1 < sizeof(x->status_url)) {
        memcpy(x->status_url, req->target, pre);
        memcpy(x->status_url + pre, status_suffix, sl + 1);
    } else {
        memcpy(x->status_url, status_suffix, sl + 1);
    }
    return true;
}

/* A response of our own that may keep the connection: status JSON, the
 * waking page. */
static void send_local(struct wg_conn *c, int status, const char *ctype, const char *extra,
                       const char *body, size_t body_len)
{
    char head[512];
    bool head_only = c->x->req.method_id == HTTP_HEAD;

    c->resp_keep_alive = c->req_keep_alive && c->x->req.complete && !c->draining &&
                         !c->client_eof && c->requests < limits(c)->keepalive_requests_max;
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%s%s\r\n",
                     status, wg_http_reason(status), ctype, body_len, extra ? extra : "",
                     c->resp_keep_alive ? (c->x->req.minor == 0 ? "Connection: keep-alive\r\n" : "")
                                        : "Connection: close\r\n");
    uv_buf_t b[2] = {uv_buf_init(head, (unsigned)n),
                     uv_buf_init((char *)body, head_only ? 0 : (unsigned)body_len)};
    c->status = status;
    c->resp_head_sent = true;
    c->resp_framing = WG_HTTP_FRAME_NONE;
    c->state = CS_PROXY;
    conn_write(c, SIDE_CLIENT, b, 2);
    if (!c->closing)
        finish_exchange(c);
}

static void send_session_status(struct wg_conn *c, int status, const char *state)
{
    char body[160];
    int n = snprintf(body, sizeof(body), "{\"session\":\"%s\",\"state\":\"%s\"}\n",
                     c->x->session_id, state);
    send_local(c, status, "application/json", status == 503 ? "Retry-After: 1\r\n" : NULL, body,
               (size_t)n);
}

/* The page a browser gets while its session wakes: it polls the status
 * endpoint and reloads itself once the session runs. Nothing external. */
static void send_waking_page(struct wg_conn *c, const char *state)
{
    char body[2048];
    int n = snprintf(
        body, sizeof(body),
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width\">"
        "<title>Waking %s</title>"
        "<style>body{font:16px system-ui,sans-serif;margin:20vh auto;max-width:32em;"
        "text-align:center;color:#333}.d{display:inline-block;width:.6em;height:.6em;"
        "border-radius:50%%;background:#48c;animation:p 1s infinite alternate}"
        "@keyframes p{from{opacity:.2}to{opacity:1}}</style></head>\n"
        "<body><p><span class=\"d\"></span></p><h1>Waking up %s</h1>"
        "<p id=\"s\">state: %s</p>\n"
        "<script>(function(){var u=%s%s%s,t=Date.now();function poll(){"
        "fetch(u,{cache:'no-store'}).then(function(r){return r.json()}).then(function(j){"
        "document.getElementById('s').textContent='state: '+j.state;"
        "if(j.state==='running'){location.reload();return}"
        "if(j.state==='failed'&&Date.now()-t>3000){document.getElementById('s').textContent="
        "'this session failed to start';return}setTimeout(poll,300)})"
        ".catch(function(){setTimeout(poll,1000)})}setTimeout(poll,200)})();</script>"
        "</body></html>\n",
        c->x->session_id, c->x->session_id, state, "'", c->x->status_url, "'");
    if (n < 0 || (size_t)n >= sizeof(body))
        n = snprintf(body, sizeof(body), "waking %s\n", c->x->session_id);
    send_local(c, 200, "text/html; charset=utf-8", "Retry-After: 1\r\n", body, (size_t)n);
}

static void session_decide(struct wg_conn *c);

/* The sleep sequence after running: requests during it are held. */
#define SLEEPING_MASK                                                                              \
    (WG_SESSION_BIT(WG_SESSION_DRAINING) | WG_SESSION_BIT(WG_SESSION_SAVING) |                     \
     WG_SESSION_BIT(WG_SESSION_STOPPING))

static void session_changed(struct wg_sess_waiter *w)
{
    struct exchange *x = wg_container_of(w, struct exchange, waiter);
    struct wg_conn *c = x->conn;
    if (!c->closing && c->state == CS_WAITING)
        session_decide(c);
}

static void session_wait(struct wg_conn *c)
{
    struct exchange *x = c->x;
    if (!x->waited) {
        x->waited = true;
        x->wait_start_ms = now_ms(c);
        x->wait_ns = uv_hrtime();
    }
    x->waiter.changed = session_changed;
    if (wg_session_cache_wait(c->px->session_cache, x->session_id, &x->waiter) < 0) {
        WG_WARN(c->px->log, "conn", "too many requests held, returning 503",
                "conn=%" PRIu64 " session=%s", c->id, x->session_id);
        send_error(c, 503);
        return;
    }
    if (c->state != CS_WAITING) {
        c->state = CS_WAITING;
        update_reading(c);
        conn_arm(c);
    }
}

/* Looks at the session and acts: proxy, wait, wake, or answer. Runs when
 * the head is parsed and again each time the session's entry changes. */
static void session_decide(struct wg_conn *c)
{
    struct wg_proxy *px = c->px;
    struct exchange *x = c->x;
    struct wg_sess_view v;

    wg_session_cache_lookup(px->session_cache, x->session_id, x->session_port, &v);
    if (x->status_path) {
        switch (v.status) {
        case WG_SESS_PENDING:
            session_wait(c);
            return;
        case WG_SESS_NOT_FOUND:
            send_session_status(c, 404, "unknown");
            return;
        case WG_SESS_UNAVAILABLE:
            send_session_status(c, 503, "unavailable");
            return;
        default:
            send_session_status(c, 200, wg_session_state_name(v.state));
            return;
        }
    }
    switch (v.status) {
    case WG_SESS_READY:
        /* Probes do not keep a session awake; everything else proxied does,
         * for as long as its exchange lasts (a stream: its whole life). */
        if (x->req_class != RC_PROBE && x->activity == NULL)
            x->activity = wg_session_cache_activity_begin(px->session_cache, &v);
        hold_end(c, WG_HOLD_SERVED);
        memcpy(&x->up_addr, &v.addr, v.addr_len);
        snprintf(x->up_name, sizeof(x->up_name), "%s", v.addr_text);
        connect_upstream(c, false);
        return;
    case WG_SESS_PENDING:
        session_wait(c);
        return;
    case WG_SESS_NOT_FOUND:
        send_error(c, 404);
        return;
    case WG_SESS_UNAVAILABLE:
        send_error(c, 503);
        return;
    case WG_SESS_NOT_RUNNING:
        break;
    }
    const char *state = wg_session_state_name(v.state);
    if (x->req_class == RC_PROBE) {
        wg_session_cache_note_suppressed(px->session_cache);
        send_session_status(c, 503, state);
        return;
    }
    if (v.state == WG_SESSION_FAILED &&
        (x->waited || v.failed_for_ms < WG_SESSION_CACHE_FAILED_COOLDOWN_MS)) {
        /* The wake we waited for failed, or it failed moments ago. */
        send_error(c, x->waited ? 504 : 503);
        return;
    }
    if (v.state != WG_SESSION_STARTING &&
        wg_session_cache_wake(px->session_cache, x->session_id) < 0) {
        WG_WARN(px->log, "conn", "cannot request a wake, returning 503",
                "conn=%" PRIu64 " session=%s", c->id, x->session_id);
        send_error(c, 503);
        return;
    }
    /* Going to sleep: the wake cancels the sleep (draining, saving) or
     * wakes it again once stopped, usually within moments, so even a
     * browser navigation is held rather than shown the waking page. */
    if (x->req_class == RC_NAVIGATE && !(WG_SESSION_BIT(v.state) & SLEEPING_MASK)) {
        send_waking_page(c, state);
        return;
    }
    /* From here the hold waits for a wake, not only for a record. */
    x->held_wake = true;
    session_wait(c);
}

/* A complete head sits in head[0, head_len): parse, check, route, rebuild,
 * then go upstream. On any refusal the client gets the status and the
 * connection closes; nothing reaches an upstream. */
static void start_request(struct wg_conn *c, const char *head, size_t head_len)
{
    struct wg_proxy *px = c->px;
    const struct wg_limits *lim = limits(c);
    struct wg_route_match m;
    int r;

    c->head_started = false;
    c->req_start_ms = c->head_start_ms ? c->head_start_ms : now_ms(c);
    c->head_start_ms = 0;
    c->status = 0;
    c->req_bytes_in = head_len;
    c->resp_bytes_out = 0;
    c->req_body_bytes = 0;
    c->body_too_large = false;
    c->sent_100 = false;
    c->resp_head_sent = false;
    c->resp_head_received = false;
    c->retries = 0;
    c->x->up_name[0] = '\0';
    c->up_start_ms = 0;
    c->up_first_byte_ms = 0;
    c->requests++;
    px->stats.requests++;

    llhttp_reset(&c->x->req_parser);
    c->x->req.fields = px->fields;
    c->x->req.fields_cap = lim->header_count_max;
    c->x->req.owner = c;
    wg_http_msg_begin(&c->x->req);
    r = wg_http_parse_head(&c->x->req_parser, &c->x->req, head, head_len);
    record_request_for_log(c);
    if (r != 0) {
        WG_DEBUG(px->log, "conn", "request refused", "conn=%" PRIu64 " status=%d llhttp=\"%s\"",
                 c->id, r,
                 llhttp_get_error_reason(&c->x->req_parser)
                     ? llhttp_get_error_reason(&c->x->req_parser)
                     : "");
        send_error(c, r);
        return;
    }
    if (lim->body_max && c->x->req.has_content_length && c->x->req.content_length > lim->body_max) {
        send_error(c, 413);
        return;
    }

    struct wg_route_input in = {
        .host = c->x->req.host,
        .host_len = c->x->req.host_len,
        .target = c->x->req.target,
        .target_len = c->x->req.target_len,
        .fields = c->x->req.fields,
        .fields_len = c->x->req.fields_len,
    };
    if (px->router == NULL || wg_router_match(px->router, &in, &m) != 0) {
        send_error(c, 404);
        return;
    }
    c->route_slot = (uint32_t)m.route->index + 1;
    if (!m.route->has_upstream && !session_prepare(c, &m))
        return;

    const char *target = c->x->req.target + m.strip_len;
    size_t target_len = c->x->req.target_len - m.strip_len;

    c->req_keep_alive = !c->x->req.conn_close;
    if (llhttp_get_upgrade(&c->x->req_parser) && !c->x->req.upgrade_websocket)
        c->req_keep_alive = false; /* an upgrade we do not tunnel ends the connection */
    c->req_framing = c->x->req.chunked              ? WG_HTTP_FRAME_CHUNKED
                     : c->x->req.has_content_length ? WG_HTTP_FRAME_LENGTH
                                                    : WG_HTTP_FRAME_NONE;

    wg_buf_reset(&c->x->up_head);
    struct wg_http_request_out o = {
        .target = target,
        .target_len = target_len,
        .peer = &c->peer.sa,
        .peer_trusted = c->peer_trusted,
        .framing = c->req_framing,
        .content_length = c->x->req.content_length,
        .upgrade = c->x->req.upgrade_websocket,
        .default_host = m.route->has_upstream ? m.route->upstream_text : c->x->session_id,
    };
    /* "/prefix" stripped from "/prefix" or "/prefix?q" leaves no path. */
    if (m.strip_len > 0 && (target_len == 0 || target[0] != '/'))
        o.slash_prefix = true;
    r = wg_http_request_rebuild(&c->x->req, &o, &c->x->up_head);
    /* The fields live in the loop's scratch: not valid past this point. */
    c->x->req.fields_len = 0;
    c->x->req.fields = NULL;
    if (r < 0) {
        send_error(c, r == -E2BIG ? 431 : 500);
        return;
    }
    if (c->x->is_session) {
        session_decide(c);
        return;
    }
    memcpy(&c->x->up_addr, &m.route->upstream, m.route->upstream_len);
    size_t nl = strnlen(m.route->upstream_text, sizeof(c->x->up_name) - 1);
    memcpy(c->x->up_name, m.route->upstream_text, nl);
    c->x->up_name[nl] = '\0';
    connect_upstream(c, false);
}

/* Handles client bytes in data[0, len) for the current state. Returns how
 * many were used; the caller keeps the rest for later. */
static size_t client_process(struct wg_conn *c, const char *data, size_t len)
{
    size_t used = 0;

    while (used < len && !c->closing) {
        switch (c->state) {
        case CS_HEAD: {
            size_t head_len = 0;
            if (!c->head_started) {
                if (c->x == NULL && (c->x = exchange_get(c)) == NULL) {
                    conn_close(c);
                    return len;
                }
                c->head_started = true;
                c->x->log_method[0] = c->x->log_host[0] = c->x->log_path[0] = '\0';
                c->x->up_name[0] = '\0';
                c->head_start_ms = now_ms(c);
                c->x->head_ns = uv_hrtime();
                c->route_slot = 0; /* "none" until routed */
                wg_http_scan_reset(&c->req_scan, false);
                conn_arm(c);
            }
            int r = wg_http_scan(&c->req_scan, data + used, len - used, limits(c), &head_len);
            if (r == WG_HTTP_SCAN_MORE)
                return used;
            if (r != WG_HTTP_SCAN_DONE) {
                c->req_start_ms = c->head_start_ms;
                send_error(c, r);
                return len;
            }
            start_request(c, data + used, head_len);
            used += head_len;
            break;
        }
        case CS_PROXY: {
            if (c->x->req.complete || c->up == NULL)
                return used; /* pipelined: waits for this exchange */
            uint64_t gen = c->up_gen;
            llhttp_errno_t e = llhttp_execute(&c->x->req_parser, data + used, len - used);
            size_t n = len - used;
            if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE)
                n = (size_t)(llhttp_get_error_pos(&c->x->req_parser) - (data + used));
            c->req_bytes_in += n;
            used += n;
            if (c->closing)
                return len;
            if (e != HPE_OK && e != HPE_PAUSED && e != HPE_PAUSED_UPGRADE) {
                if (c->body_too_large) {
                    WG_INFO(c->px->log, "conn", "request body over limits.body_max, returning 413",
                            "conn=%" PRIu64, c->id);
                    send_error(c, 413);
                } else if (gen == c->up_gen && c->up != NULL) {
                    WG_INFO(c->px->log, "conn", "bad request body framing, returning 400",
                            "conn=%" PRIu64 " llhttp=\"%s\"", c->id, llhttp_errno_name(e));
                    send_error(c, 400);
                }
                return len;
            }
            if (c->x->req.complete)
                request_body_done(c);
            break;
        }
        case CS_TUNNEL:
            write_str(c, SIDE_UP, data + used, len - used);
            c->req_bytes_in += len - used;
            return len;
        case CS_LINGER:
            return len;
        case CS_WAITING:
        case CS_CONNECTING:
            return used;
        }
    }
    return used;
}

/* Processes bytes kept in c->in after a state change made them usable. */
static void client_drain_inbuf(struct wg_conn *c)
{
    if (c->in_process || c->closing || wg_buf_size(&c->in) == 0)
        return;
    c->in_process = true;
    size_t used = client_process(c, wg_buf_head(&c->in), wg_buf_size(&c->in));
    c->in_process = false;
    if (!c->closing)
        wg_buf_consume(&c->in, used);
    if (wg_buf_size(&c->in) == 0)
        wg_buf_release(&c->in);
}

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct wg_conn *c = h->data;
    buf->base = c->px->readbuf;
    buf->len = sizeof(c->px->readbuf);
}

static void client_eof(struct wg_conn *c)
{
    c->client_eof = true;
    switch (c->state) {
    case CS_HEAD:
    case CS_LINGER:
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
        c->req_keep_alive = false;
        update_reading(c);
        return;
    case CS_TUNNEL:
        if (c->up_eof && c->pending[SIDE_UP] == 0 && c->pending[SIDE_CLIENT] == 0) {
            conn_close(c);
            return;
        }
        if (c->up != NULL)
            conn_shutdown(c, wg_upconn_stream(c->up));
        update_reading(c);
        return;
    }
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct wg_conn *c = s->data;

    if (n == 0 || c->closing)
        return;
    if (n < 0) {
        if (n == UV_EOF)
            client_eof(c);
        else
            conn_close(c);
        return;
    }
    c->last_client_read_ms = now_ms(c);
    c->px->stats.bytes_in += (uint64_t)n;

    if (wg_buf_size(&c->in) == 0) {
        c->in_process = true;
        size_t used = client_process(c, buf->base, (size_t)n);
        c->in_process = false;
        if (c->closing || used == (size_t)n)
            return;
        if (wg_buf_append(&c->in, buf->base + used, (size_t)n - used) < 0) {
            send_error(c, 431);
            return;
        }
        update_reading(c);
        return;
    }
    if (wg_buf_append(&c->in, buf->base, (size_t)n) < 0) {
        send_error(c, 431);
        return;
    }
    client_drain_inbuf(c);
    update_reading(c);
}

/* ---- the response ---------------------------------------------------------- */

static int on_resp_body(llhttp_t *p, const char *at, size_t len)
{
    struct wg_http_msg *m = p->data;
    struct wg_conn *c = m->owner;
    write_body(c, SIDE_CLIENT, c->resp_framing, at, len);
    return c->closing ? -1 : 0;
}

/* The next exchange starts: what the client pipelined is processed now. */
static void finish_exchange(struct wg_conn *c)
{
    bool req_complete = c->x->req.complete;
    bool up_reusable = !c->x->resp.conn_close && req_complete && c->pending[SIDE_UP] == 0 &&
                       !c->up_eof && c->resp_framing != WG_HTTP_FRAME_CLOSE;
    access_log(c);
    release_upstream(c, up_reusable);
    activity_end(c);

    if (!c->resp_keep_alive || !req_complete) {
        begin_close(c);
        return;
    }
    exchange_put(c);
    c->state = CS_HEAD;
    c->head_started = false;
    c->req_start_ms = 0;
    c->idle_since = now_ms(c);
    c->resp_head_sent = false;
    c->resp_head_received = false;
    c->status = 0;
    c->route_slot = 0;
    update_reading(c);
    conn_arm(c);
    client_drain_inbuf(c);
}

static void response_done(struct wg_conn *c)
{
    if (c->resp_framing == WG_HTTP_FRAME_CHUNKED)
        write_str(c, SIDE_CLIENT, "0\r\n\r\n", 5);
    else
        flush_held_head(c);
    if (c->closing)
        return;
    finish_exchange(c);
}

static void start_tunnel(struct wg_conn *c)
{
    c->state = CS_TUNNEL;
    c->last_up_read_ms = c->last_client_read_ms = now_ms(c);
    update_reading(c);
    conn_arm(c);
    /* Bytes the client sent right after the upgrade request go now. */
    client_drain_inbuf(c);
}

/* A whole response head sits in head[0, head_len). */
static void handle_response_head(struct wg_conn *c, const char *head, size_t head_len)
{
    struct wg_proxy *px = c->px;
    struct wg_buf hb;
    int status;
    int r;

    llhttp_reset(&c->x->resp_parser);
    c->x->resp.fields = px->fields;
    c->x->resp.fields_cap = limits(c)->header_count_max;
    c->x->resp.owner = c;
    c->x->resp.skip_body = c->x->req.method_id == HTTP_HEAD;
    wg_http_msg_begin(&c->x->resp);
    r = wg_http_parse_head(&c->x->resp_parser, &c->x->resp, head, head_len);
    if (r != 0) {
        WG_DEBUG(px->log, "conn", "invalid response head",
                 "conn=%" PRIu64 " status=%d llhttp=%s reason=\"%s\"", c->id, r,
                 llhttp_errno_name(llhttp_get_errno(&c->x->resp_parser)),
                 llhttp_get_error_reason(&c->x->resp_parser)
                     ? llhttp_get_error_reason(&c->x->resp_parser)
                     : "");
        upstream_failed(c, 502, "invalid response head", false);
        return;
    }
    status = c->x->resp.status;
    wg_buf_init(&hb, limits(c)->head_max * 2);

    if (status == 101) {
        if (!c->x->req.upgrade_websocket || !c->x->resp.upgrade_websocket) {
            wg_buf_release(&hb);
            upstream_failed(c, 502, "101 without a WebSocket upgrade", false);
            return;
        }
        struct wg_http_response_out o = {.client_minor = c->x->req.minor, .upgrade = true};
        r = wg_http_response_rebuild(&c->x->resp, &o, &hb);
        c->x->resp.fields_len = 0;
        if (r < 0) {
            wg_buf_release(&hb);
            upstream_failed(c, 502, "response head too large", false);
            return;
        }
        c->status = 101;
        c->resp_head_sent = true;
        c->resp_head_received = true;
        write_str(c, SIDE_CLIENT, wg_buf_head(&hb), wg_buf_size(&hb));
        wg_buf_release(&hb);
        access_log(c);
        start_tunnel(c);
        return;
    }

    if (status < 200) {
        /* 1xx: relayed to 1.1 clients (once for 100), then the final head follows. */
        bool relay = c->x->req.minor >= 1 && !(status == 100 && c->sent_100);
        if (status == 100)
            c->sent_100 = true;
        if (relay) {
            struct wg_http_response_out o = {.client_minor = c->x->req.minor, .keep_alive = true};
            if (wg_http_response_rebuild(&c->x->resp, &o, &hb) == 0)
                write_str(c, SIDE_CLIENT, wg_buf_head(&hb), wg_buf_size(&hb));
        }
        c->x->resp.fields_len = 0;
        c->x->resp.complete = false; /* llhttp completed the 1xx message, not the response */
        wg_buf_release(&hb);
        wg_http_scan_reset(&c->x->resp_scan, true);
        return;
    }

    bool no_body = c->x->resp.skip_body || status == 204 || status == 304;
    enum wg_http_framing framing;
    if (no_body)
        framing = (c->x->resp.has_content_length && status != 204) ? WG_HTTP_FRAME_LENGTH
                                                                   : WG_HTTP_FRAME_NONE;
    else if (c->x->resp.has_content_length)
        framing = WG_HTTP_FRAME_LENGTH;
    else if (c->x->req.minor >= 1)
        framing = WG_HTTP_FRAME_CHUNKED;
    else
        framing = WG_HTTP_FRAME_CLOSE;
    c->resp_framing = no_body ? WG_HTTP_FRAME_NONE : framing;
    c->resp_keep_alive = c->req_keep_alive && !c->draining && !c->client_eof &&
                         framing != WG_HTTP_FRAME_CLOSE && !c->x->req.upgrade_websocket &&
                         c->x->req.complete && c->requests < limits(c)->keepalive_requests_max;

    struct wg_http_response_out o = {
        .client_minor = c->x->req.minor,
        .framing = framing,
        .content_length = c->x->resp.content_length,
        .keep_alive = c->resp_keep_alive,
    };
    r = wg_http_response_rebuild(&c->x->resp, &o, &hb);
    c->x->resp.fields_len = 0;
    c->x->resp.fields = NULL;
    if (r < 0) {
        wg_buf_release(&hb);
        upstream_failed(c, 502, "response head too large", false);
        return;
    }
    c->status = status;
    c->resp_head_received = true;
    c->resp_head_sent = true;
    /* Held until the end of this read, to leave with the first body bytes. */
    wg_buf_release(&c->x->held_head);
    c->x->held_head = hb;
    conn_arm(c);
}

static void up_alloc(void *user, uv_buf_t *buf)
{
    struct wg_conn *c = user;
    buf->base = c->px->readbuf;
    buf->len = sizeof(c->px->readbuf);
}

/* Handles upstream bytes. Whatever is not used (a partial head) is kept in
 * c->x->up_in. */
static void up_process(struct wg_conn *c, const char *data, size_t len)
{
    uint64_t gen = c->up_gen;
    size_t used = 0;

    while (used < len && !c->closing && gen == c->up_gen) {
        if (c->state == CS_TUNNEL) {
            write_str(c, SIDE_CLIENT, data + used, len - used);
            return;
        }
        if (c->state != CS_PROXY)
            return;
        if (!c->resp_head_received) {
            size_t head_len = 0;
            int r = wg_http_scan(&c->x->resp_scan, data + used, len - used, limits(c), &head_len);
            if (r == WG_HTTP_SCAN_MORE)
                break;
            if (r != WG_HTTP_SCAN_DONE) {
                upstream_failed(c, 502, "invalid or oversized response head", false);
                return;
            }
            handle_response_head(c, data + used, head_len);
            used += head_len;
            if (c->closing || gen != c->up_gen)
                return;
            if (c->state == CS_TUNNEL)
                continue;
            if (c->x->resp.complete) {
                if (used < len)
                    c->x->resp.conn_close = true; /* bytes after a response: not reusable */
                response_done(c);
                return;
            }
            continue;
        }
        llhttp_errno_t e = llhttp_execute(&c->x->resp_parser, data + used, len - used);
        size_t n = len - used;
        if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE)
            n = (size_t)(llhttp_get_error_pos(&c->x->resp_parser) - (data + used));
        used += n;
        if (c->closing || gen != c->up_gen)
            return;
        if (e != HPE_OK && e != HPE_PAUSED && e != HPE_PAUSED_UPGRADE) {
            upstream_failed(c, 502, llhttp_errno_name(e), false);
            return;
        }
        if (c->x->resp.complete) {
            if (used < len)
                c->x->resp.conn_close = true;
            response_done(c);
            return;
        }
    }
    if (used < len && !c->closing && gen == c->up_gen && c->state == CS_PROXY &&
        !c->resp_head_received) {
        if (wg_buf_append(&c->x->up_in, data + used, len - used) < 0)
            upstream_failed(c, 502, "response head too large", false);
    }
    if (!c->closing)
        flush_held_head(c);
}

static void up_eof(struct wg_conn *c)
{
    c->up_eof = true;
    if (c->state == CS_TUNNEL) {
        if (c->client_eof && c->pending[SIDE_UP] == 0 && c->pending[SIDE_CLIENT] == 0) {
            conn_close(c);
            return;
        }
        if (!c->client_shut_sent && conn_shutdown(c, (uv_stream_t *)&c->client) == 0)
            c->client_shut_sent = true;
        update_reading(c);
        return;
    }
    if (c->resp_head_received) {
        /* A close-delimited body ends here; any other framing was cut short. */
        llhttp_finish(&c->x->resp_parser);
        if (c->x->resp.complete) {
            response_done(c);
            return;
        }
        upstream_failed(c, 502, "upstream closed mid-response", false);
        return;
    }
    bool nothing_received = c->x->resp_scan.pos == 0 && wg_buf_size(&c->x->up_in) == 0;
    upstream_failed(c, 502, "upstream closed before responding", c->up_reused && nothing_received);
}

/* The first byte of the upstream's answer to this request (once, even
 * across a retry). */
static void first_byte_observe(struct wg_conn *c)
{
    struct wg_proxy *px = c->px;
    struct exchange *x = c->x;
    uint64_t now = uv_hrtime();

    if (x->ttfb_counted)
        return;
    x->ttfb_counted = true;
    wg_hist_observe_ns(&px->stats.upstream_latency, now - x->up_ns);
    if (x->held_wake)
        wg_hist_observe_ns(&px->stats.wake_first_byte, now - x->wait_ns);
}

static void up_read(void *user, ssize_t n, const uv_buf_t *buf)
{
    struct wg_conn *c = user;

    if (c == NULL || c->closing || n == 0)
        return;
    if (n < 0) {
        if (n == UV_EOF) {
            up_eof(c);
        } else {
            bool nothing_received = !c->resp_head_received && c->x->resp_scan.pos == 0 &&
                                    wg_buf_size(&c->x->up_in) == 0;
            upstream_failed(c, 502, uv_err_name((int)n), c->up_reused && nothing_received);
        }
        return;
    }
    c->last_up_read_ms = now_ms(c);
    if (!c->up_first_byte_ms) {
        c->up_first_byte_ms = c->last_up_read_ms;
        first_byte_observe(c);
    }

    if (wg_buf_size(&c->x->up_in) > 0 && !c->resp_head_received && c->state == CS_PROXY) {
        if (wg_buf_append(&c->x->up_in, buf->base, (size_t)n) < 0) {
            upstream_failed(c, 502, "response head too large", false);
            return;
        }
        /* Take the bytes out of up_in first: processing may reuse it. */
        struct wg_buf held = c->x->up_in;
        wg_buf_init(&c->x->up_in, held.max);
        up_process(c, wg_buf_head(&held), wg_buf_size(&held));
        wg_buf_release(&held);
        return;
    }
    up_process(c, buf->base, (size_t)n);
}

/* ---- accept, drain ---------------------------------------------------------- */

void wg_conn_accept(struct wg_proxy *px)
{
    const struct wg_config *cfg = px->cfg;
    struct wg_conn *c = calloc(1, sizeof(*c));
    int namelen = sizeof(c->peer);
    int r;

    if (c == NULL)
        return;
    if ((r = uv_tcp_init(px->loop, &c->client)) < 0) {
        free(c);
        return;
    }
    px->live_conns++;
    c->client.data = c;
    c->px = px;
    c->refs = 1;
    wg_list_init(&c->link);
    if (uv_accept((uv_stream_t *)&px->listener, (uv_stream_t *)&c->client) < 0) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->client, handle_closed);
        return;
    }
    px->stats.connections_open++;
    if (px->stats.connections_open > cfg->limits.connections_max || px->shutting_down) {
        /* Over the cap: refuse this one; existing traffic is unaffected. */
        px->stats.connections_refused++;
        px->stats.connections_open--;
        c->closing = true;
        uv_close((uv_handle_t *)&c->client, handle_closed);
        return;
    }
    px->stats.connections_accepted++;
    uv_timer_init(px->loop, &c->timer);
    c->timer.data = c;
    c->refs++;
    c->id = ++px->next_conn_id;
    wg_list_push_back(&px->conns, &c->link);
    uv_tcp_getpeername(&c->client, &c->peer.sa, &namelen);
    c->peer_trusted =
        cfg->trusted_proxies_len > 0 &&
        wg_cidr_contains_any(cfg->trusted_proxies, cfg->trusted_proxies_len, &c->peer.sa);
    uv_tcp_nodelay(&c->client, 1);
    wg_buf_init(&c->in, cfg->limits.head_max + PIPELINE_BUFFER_MAX);
    c->state = CS_HEAD;
    c->idle_since = now_ms(c);
    c->draining = px->shutting_down;
    update_reading(c);
    conn_arm(c);
}

void wg_conn_drain_all(struct wg_proxy *px)
{
    struct wg_list *n = px->conns.next;
    while (n != &px->conns) {
        struct wg_conn *c = wg_container_of(n, struct wg_conn, link);
        n = n->next;
        c->draining = true;
        if (c->state == CS_HEAD && !c->head_started && wg_buf_size(&c->in) == 0)
            conn_close(c);
    }
}

void wg_conn_remap_routes(struct wg_proxy *px, const uint32_t *map, size_t n)
{
    for (struct wg_list *l = px->conns.next; l != &px->conns; l = l->next) {
        struct wg_conn *c = wg_container_of(l, struct wg_conn, link);
        c->route_slot =
            map != NULL && c->route_slot < n ? map[c->route_slot] : WG_ROUTE_SLOT_UNCOUNTED;
    }
}

void wg_conn_close_all(struct wg_proxy *px)
{
    while (!wg_list_empty(&px->conns))
        conn_close(wg_container_of(px->conns.next, struct wg_conn, link));
}
