/* proxy/conn_request.c - the request side of a client connection: the head
 * is scanned, parsed and checked, routed and rebuilt; the body is re-framed
 * to the upstream; the upstream connection is borrowed, retried once when
 * that is safe, and given back. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "proxy/conn_int.h"

#define MAX_RETRIES 1

/* ---- the body ------------------------------------------------------------ */

int conn_on_request_body(llhttp_t *p, const char *at, size_t len)
{
    struct wg_http_msg *m = p->data;
    struct wg_conn *c = m->owner;
    struct exchange *x = c->x;
    const struct wg_limits *lim = conn_limits(c);

    x->req_body_bytes += len;
    if (lim->body_max && x->req_body_bytes > lim->body_max) {
        x->body_too_large = true;
        return -1;
    }
    conn_write_body(c, SIDE_UP, x->req_framing, at, len);
    return c->closing || x->up == NULL ? -1 : 0;
}

static void request_body_done(struct wg_conn *c)
{
    if (c->x->req_framing == WG_HTTP_FRAME_CHUNKED)
        conn_write_str(c, SIDE_UP, "0\r\n\r\n", 5);
    conn_update_reading(c);
    conn_arm(c);
}

/* ---- the upstream connection ------------------------------------------------- */

void conn_release_upstream(struct wg_conn *c, bool reusable)
{
    struct exchange *x = c->x;
    if (x == NULL || x->up == NULL)
        return;
    wg_pool_release(c->px->pool, x->up, reusable && x->up_pending == 0);
    x->up = NULL;
    c->up_gen++;
    x->up_pending = 0;
    x->up_eof = false;
}

/* A new attempt (the first, or a retry) has its connection: no response
 * byte seen yet, the rebuilt head goes out. */
static void on_upstream_ready(struct wg_conn *c)
{
    struct exchange *x = c->x;

    c->state = CS_PROXY;
    x->resp_head_received = false;
    x->up_first_byte_ms = 0;
    x->resp.fields = NULL;
    x->resp.fields_cap = 0;
    wg_http_msg_begin(&x->resp);
    wg_http_scan_reset(&x->resp_scan, true);
    wg_buf_reset(&x->up_in);
    x->last_up_write_ms = conn_now_ms(c);
    x->req_head_written = false;
    conn_write_str(c, SIDE_UP, wg_buf_head(&x->up_head), wg_buf_size(&x->up_head));
    if (c->closing || x->up == NULL)
        return;
    /* We removed Expect from the forwarded head, so the 100 is ours. */
    if (x->req.expect_continue && !x->req.complete && !x->sent_100) {
        x->sent_100 = true;
        conn_write_str(c, SIDE_CLIENT, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    }
    conn_update_reading(c);
    conn_arm(c);
    conn_drain_inbuf(c);
}

static void upstream_connected(struct wg_upconn *uc, int status, void *user)
{
    struct wg_conn *c = user;
    if (status < 0) {
        char why[96];
        snprintf(why, sizeof(why), "connect: %s", uv_err_name(status));
        /* Nothing was sent: any method may be retried on a fresh connection. */
        conn_upstream_failed(c, 502, why, true);
        return;
    }
    on_upstream_ready(c);
}

void conn_connect_upstream(struct wg_conn *c, bool fresh)
{
    struct exchange *x = c->x;
    bool reused = false;
    struct wg_upconn *uc = NULL;

    c->state = CS_CONNECTING;
    x->up_start_ms = conn_now_ms(c);
    x->up_ns = uv_hrtime();
    conn_update_reading(c);
    enum wg_pool_mode mode = x->up_proven ? WG_POOL_PROVEN : fresh ? WG_POOL_FRESH : WG_POOL_ANY;
    int r = wg_pool_acquire(c->px->pool, (const struct sockaddr *)&x->up_addr, x->up_owner, mode,
                            &conn_up_reader, upstream_connected, c, &uc, &reused);
    if (r == UV_ENOENT && x->up_proven) {
        conn_session_doubt(c);
        return;
    }
    if (r < 0) {
        char why[96];
        snprintf(why, sizeof(why), "connect: %s", uv_err_name(r));
        conn_upstream_failed(c, 502, why, false);
        return;
    }
    x->up = uc;
    c->up_gen++;
    x->up_pending = 0;
    x->up_eof = false;
    x->up_reused = reused;
    if (x->up_proven && !x->proven_counted) {
        x->proven_counted = true;
        c->px->stats.session_unconfirmed_proven++;
    }
    if (reused) {
        on_upstream_ready(c);
        return;
    }
    conn_arm(c);
}

/* Retried once on a fresh connection when nothing was sent, or when a
 * reused connection died before any response byte for a replayable
 * request; otherwise the client gets `status`, or a close if the response
 * had started. */
void conn_upstream_failed(struct wg_conn *c, int status, const char *why, bool retryable)
{
    struct wg_proxy *px = c->px;
    struct exchange *x = c->x;
    bool replayable = !x->req_head_written || (x->req_framing == WG_HTTP_FRAME_NONE &&
                                               wg_http_method_idempotent(x->req.method_id));

    if (c->closing)
        return;
    px->stats.upstream_errors++;
    conn_drop_held_head(c);
    conn_release_upstream(c, false);
    if (retryable && replayable && !x->resp_head_received && x->retries < MAX_RETRIES) {
        x->retries++;
        px->stats.upstream_retries++;
        WG_INFO(px->log, "conn", "upstream failed, retrying on a fresh connection",
                "conn=%" PRIu64 " upstream=%s error=\"%s\"", c->id, x->up_name, why);
        conn_connect_upstream(c, true);
        return;
    }
    if (conn_session_recheck(c, why))
        return;
    WG_WARN(px->log, "conn", x->resp_head_sent ? "upstream failed, closing" : "upstream failed",
            "conn=%" PRIu64 " upstream=%s error=\"%s\" status=%d", c->id, x->up_name, why,
            x->resp_head_sent ? 0 : status);
    if (x->resp_head_sent) {
        conn_close(c);
        return;
    }
    conn_send_error(c, status);
}

/* ---- the head ------------------------------------------------------------ */

static void copy_span(char *dst, size_t dstlen, const char *p, size_t n)
{
    if (p == NULL)
        n = 0;
    if (n >= dstlen)
        n = dstlen - 1;
    memcpy(dst, p ? p : "", n);
    dst[n] = '\0';
}

static void record_request_for_log(struct exchange *x)
{
    const struct wg_http_msg *m = &x->req;
    size_t plen = m->target_len;
    copy_span(x->log_method, sizeof(x->log_method), m->method, m->method_len);
    copy_span(x->log_host, sizeof(x->log_host), m->host, m->host_len);
    if (m->target) {
        const char *q = memchr(m->target, '?', plen);
        if (q)
            plen = (size_t)(q - m->target);
    }
    copy_span(x->log_path, sizeof(x->log_path), m->target, plen);
}

/* Parses and checks the head. Returns false when it was refused (the
 * client got the status). */
static bool parse_request(struct wg_conn *c, const char *head, size_t head_len)
{
    struct wg_proxy *px = c->px;
    struct exchange *x = c->x;
    const struct wg_limits *lim = conn_limits(c);

    llhttp_reset(&x->req_parser);
    x->req.fields = px->fields;
    x->req.fields_cap = lim->header_count_max;
    x->req.owner = c;
    wg_http_msg_begin(&x->req);
    int r = wg_http_parse_head(&x->req_parser, &x->req, head, head_len);
    record_request_for_log(x);
    if (r != 0) {
        const char *reason = llhttp_get_error_reason(&x->req_parser);
        WG_DEBUG(px->log, "conn", "request refused", "conn=%" PRIu64 " status=%d llhttp=\"%s\"",
                 c->id, r, reason ? reason : "");
        conn_send_error(c, r);
        return false;
    }
    if (lim->body_max && x->req.has_content_length && x->req.content_length > lim->body_max) {
        conn_send_error(c, 413);
        return false;
    }
    /* Known from the head, so an answer of our own (OPTIONS *) keeps the
     * connection as the upstream's would. */
    x->req_keep_alive = !x->req.conn_close;
    if (llhttp_get_upgrade(&x->req_parser) && !x->req.upgrade_websocket)
        x->req_keep_alive = false; /* an upgrade we do not tunnel ends the connection */
    return true;
}

/* Routes the request (*m). Returns false when it was answered: no route,
 * or a session route refused it. */

static bool route_request(struct wg_conn *c, struct wg_route_match *m)
{
    struct wg_proxy *px = c->px;
    struct exchange *x = c->x;
    struct wg_route_input in = {
        .host = x->req.host,
        .host_len = x->req.host_len,
        .target = x->req.target,
        .target_len = x->req.target_len,
        .fields = x->req.fields,
        .fields_len = x->req.fields_len,
    };

    /* "OPTIONS *" asks about the gateway itself (RFC 9110, 9.3.7), not any
     * route's upstream: answered here. */
    if (x->req.target_len == 1 && x->req.target[0] == '*') {
        conn_send_local(c, 200, "text/plain", "Allow: " WG_PROXY_ALLOW "\r\n", "", 0);
        return false;
    }
    if (px->router == NULL || wg_router_match(px->router, &in, m) != 0) {
        conn_send_error(c, 404);
        return false;
    }
    x->route_slot = (uint32_t)m->route->index + 1;
    return m->route->has_upstream || conn_session_prepare(c, m);
}

/* Rebuilds the upstream head into x->up_head, and decides the request's
 * framing. Returns false when it was answered. */
static bool rebuild_request(struct wg_conn *c, const struct wg_route_match *m)
{
    struct exchange *x = c->x;
    const char *target = x->req.target + m->strip_len;
    size_t target_len = x->req.target_len - m->strip_len;

    x->req_framing = x->req.chunked              ? WG_HTTP_FRAME_CHUNKED
                     : x->req.has_content_length ? WG_HTTP_FRAME_LENGTH
                                                 : WG_HTTP_FRAME_NONE;

    wg_buf_reset(&x->up_head);
    struct wg_http_request_out o = {
        .target = target,
        .target_len = target_len,
        .peer = &c->peer.sa,
        .peer_trusted = c->peer_trusted,
        .framing = x->req_framing,
        .content_length = x->req.content_length,
        .upgrade = x->req.upgrade_websocket,
        .default_host = m->route->has_upstream ? m->route->upstream_text : x->session_id,
        /* Our credentials are for us, never for the session's app. */
        .strip_access = x->is_session,
        .https = c->https,
    };
    /* "/prefix" stripped from "/prefix" or "/prefix?q" leaves no path. */
    if (m->strip_len > 0 && (target_len == 0 || target[0] != '/'))
        o.slash_prefix = true;
    int r = wg_http_request_rebuild(&x->req, &o, &x->up_head);
    /* The fields live in the loop's scratch: not valid past this point. */
    x->req.fields_len = 0;
    x->req.fields = NULL;
    if (r < 0) {
        conn_send_error(c, r == -E2BIG ? 431 : 500);
        return false;
    }
    return true;
}

/* A complete head sits in head[0, head_len): parse, check, route, rebuild,
 * then go upstream. On any refusal the client gets the status and the
 * connection closes; nothing reaches an upstream. */
/* RFC 9110 section 10.1.1: a server MAY omit the 100 (Continue) when it has
 * already received the content. A Content-Length body that arrived with its
 * head (`after` bytes follow the head) meets the expectation: a 100 then is
 * only an extra response that the client has to skip. */
static void expectation_met(struct exchange *x, size_t after)
{
    if (x->req.expect_continue && x->req.has_content_length && !x->req.chunked &&
        after >= x->req.content_length)
        x->req.expect_continue = false;
}

/* The head is data[0, head_len) of the avail bytes that have arrived. */
static void start_request(struct wg_conn *c, const char *head, size_t head_len, size_t avail)
{
    struct exchange *x = c->x;
    struct wg_route_match m;

    x->req_start_ms = x->head_start_ms ? x->head_start_ms : conn_now_ms(c);
    x->req_bytes_in = head_len;
    c->requests++;
    c->px->stats.requests++;
    if (!parse_request(c, head, head_len))
        return;
    expectation_met(x, avail - head_len);
    if (!route_request(c, &m) || !rebuild_request(c, &m))
        return;
    if (x->is_session) {
        conn_session_route(c);
        return;
    }
    memcpy(&x->up_addr, &m.route->upstream, m.route->upstream_len);
    size_t nl = strnlen(m.route->upstream_text, sizeof(x->up_name) - 1);
    memcpy(x->up_name, m.route->upstream_text, nl);
    x->up_name[nl] = '\0';
    conn_connect_upstream(c, false);
}

/* ---- client bytes ------------------------------------------------------------ */

/* Head bytes in data[0, len). The first byte of a head takes the exchange.
 * Returns how many bytes were used: 0 while the head is incomplete (the
 * caller keeps them), all of them after a refusal. */
static size_t read_head(struct wg_conn *c, const char *data, size_t len)
{
    size_t head_len = 0;

    if (c->x == NULL) {
        c->x = conn_exchange_get(c);
        if (c->x == NULL) {
            conn_close(c);
            return len;
        }
        conn_arm(c);
    }
    int r = wg_http_scan(&c->x->req_scan, data, len, conn_limits(c), &head_len);
    if (r == WG_HTTP_SCAN_MORE)
        return 0;
    if (r != WG_HTTP_SCAN_DONE) {
        c->x->req_start_ms = c->x->head_start_ms;
        conn_send_error(c, r);
        return len;
    }
    start_request(c, data, head_len, len);
    return head_len;
}

/* A request body failed to parse (llhttp error e). */
static void body_refused(struct wg_conn *c, llhttp_errno_t e, uint64_t gen)
{
    if (c->x->body_too_large) {
        WG_INFO(c->px->log, "conn", "request body over limits.body_max, returning 413",
                "conn=%" PRIu64, c->id);
        conn_send_error(c, 413);
    } else if (gen == c->up_gen && c->x->up != NULL) {
        WG_INFO(c->px->log, "conn", "bad request body framing, returning 400",
                "conn=%" PRIu64 " llhttp=\"%s\"", c->id, llhttp_errno_name(e));
        conn_send_error(c, 400);
    }
}

/* Body bytes in data[0, len), forwarded as they are parsed. Returns how
 * many were used; all of them after an error or a close. */
static size_t read_body(struct wg_conn *c, const char *data, size_t len)
{
    uint64_t gen = c->up_gen;
    size_t n;
    llhttp_errno_t e = wg_http_execute_body(&c->x->req_parser, &c->x->req, data, len,
                                            conn_limits(c)->head_max, &n);

    c->x->req_bytes_in += n;
    if (c->closing)
        return len;
    if (e != HPE_OK && e != HPE_PAUSED && e != HPE_PAUSED_UPGRADE) {
        body_refused(c, e, gen);
        return len;
    }
    if (c->x->req.complete)
        request_body_done(c);
    return n;
}

size_t conn_request_process(struct wg_conn *c, const char *data, size_t len)
{
    size_t used = 0, n;

    while (used < len && !c->closing) {
        switch (c->state) {
        case CS_HEAD:
            n = read_head(c, data + used, len - used);
            if (n == 0)
                return used;
            used += n;
            break;
        case CS_PROXY:
            if (c->x->req.complete || c->x->up == NULL)
                return used; /* pipelined: waits for this exchange */
            used += read_body(c, data + used, len - used);
            break;
        case CS_TUNNEL:
            conn_stream_tunnel_bytes(c, SIDE_CLIENT, data + used, len - used);
            conn_write_str(c, SIDE_UP, data + used, len - used);
            c->x->req_bytes_in += len - used;
            return len;
        case CS_LINGER:
        case CS_H2: /* conn_client_bytes hands HTTP/2 to its session */
            return len;
        case CS_WAITING:
        case CS_CONNECTING:
            return used;
        }
    }
    return used;
}
