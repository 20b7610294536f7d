/* proxy/conn_response.c - the response side of a client connection: the
 * upstream's head is scanned, parsed, validated and rebuilt for the client
 * (1xx relayed, 101 switching to a tunnel), the body re-framed; then the
 * exchange ends with its access line, and the connection takes the next
 * request or closes. */
#include <inttypes.h>
#include <string.h>

#include "proxy/conn_int.h"

/* ---- the end of an exchange ---------------------------------------------------- */

/* No allocation: array increments and one histogram. */
void conn_access_count(struct wg_conn *c)
{
    struct wg_proxy *px = c->px;
    struct exchange *x = c->x;

    if (x == NULL)
        return;
    if (x->status >= 100 && x->status < 600) {
        unsigned k = (unsigned)x->status / 100;
        uint64_t end_ns = uv_hrtime();
        uint64_t start_ns = x->head_ns != 0 ? x->head_ns : end_ns;
        px->stats.responses_by_class[k]++;
        if (x->route_slot < px->route_nrows)
            px->route_rows[x->route_slot].by_class[k]++;
        wg_hist_observe_ns(&px->stats.request_duration, end_ns - start_ns);
    }
    conn_hold_end(c, WG_HOLD_FAILED);
}

void conn_access_line(struct wg_conn *c)
{
    struct wg_proxy *px = c->px;
    struct exchange *x = c->x;
    uint64_t now = conn_now_ms(c);
    char qhost[128], qpath[300], stream[48] = "", h2[64] = "";

    if (x == NULL || !px->cfg->access_log || !wg_log_enabled(px->log, WG_LOG_INFO))
        return;
    wg_log_quote(qhost, sizeof(qhost), x->log_host, strlen(x->log_host));
    wg_log_quote(qpath, sizeof(qpath), x->log_path, strlen(x->log_path));
    /* A tunnel's line is written when it closes: bytes both ways, and how
     * long the stream lasted after its 101. */
    if (x->status == 101)
        snprintf(stream, sizeof(stream), " stream_ms=%" PRIu64, now - x->stream_start_ms);
    /* An HTTP/2 stream: which connection and stream it was. */
    if (conn_is_h2_stream(c))
        snprintf(h2, sizeof(h2), " proto=h2 h2_conn=%" PRIu64 " h2_stream=%" PRId32, c->h2_parent,
                 c->h2_stream_id);
    wg_log_write(
        px->log, WG_LOG_INFO, "access", "request",
        "conn=%" PRIu64 " method=%s host=%s path=%s status=%d bytes_in=%" PRIu64
        " bytes_out=%" PRIu64 " upstream=%s upstream_ms=%" PRId64 " total_ms=%" PRIu64 "%s%s",
        c->id, x->log_method[0] ? x->log_method : "-", qhost[0] ? qhost : "-",
        qpath[0] ? qpath : "-", x->status, x->req_bytes_in, x->resp_bytes_out,
        x->up_name[0] ? x->up_name : "-",
        x->up_first_byte_ms ? (int64_t)(x->up_first_byte_ms - x->up_start_ms) : (int64_t)-1,
        now - x->req_start_ms, stream, h2);
}

void conn_access_log(struct wg_conn *c)
{
    conn_access_count(c);
    conn_access_line(c);
}

/* The next exchange starts: what the client pipelined is processed now. */
void conn_finish_exchange(struct wg_conn *c)
{
    struct exchange *x = c->x;
    bool req_complete = x->req.complete;
    bool up_reusable = !x->resp.conn_close && req_complete && x->up_pending == 0 && !x->up_eof &&
                       x->resp_framing != WG_HTTP_FRAME_CLOSE;
    conn_access_log(c);
    conn_release_upstream(c, up_reusable);
    conn_activity_end(c);
    conn_stream_end(c);

    if (!x->resp_keep_alive || !req_complete) {
        conn_begin_close(c);
        return;
    }
    conn_exchange_put(c);
    c->state = CS_HEAD;
    c->idle_since = conn_now_ms(c);
    conn_update_reading(c);
    conn_arm(c);
    conn_drain_inbuf(c);
}

static void response_done(struct wg_conn *c)
{
    if (c->x->resp_framing == WG_HTTP_FRAME_CHUNKED)
        conn_write_str(c, SIDE_CLIENT, "0\r\n\r\n", 5);
    else
        conn_flush_held_head(c);
    if (c->closing)
        return;
    conn_finish_exchange(c);
}

int conn_on_response_body(llhttp_t *p, const char *at, size_t len)
{
    struct wg_http_msg *m = p->data;
    struct wg_conn *c = m->owner;
    conn_stream_body(c, at, len);
    conn_write_body(c, SIDE_CLIENT, c->x->resp_framing, at, len);
    return c->closing ? -1 : 0;
}

/* ---- the response head ----------------------------------------------------------- */

static void start_tunnel(struct wg_conn *c)
{
    c->state = CS_TUNNEL;
    c->x->last_up_read_ms = c->last_client_read_ms = conn_now_ms(c);
    conn_stream_started(c); /* its start: the access line's stream_ms */
    conn_update_reading(c);
    conn_arm(c);
    /* Bytes the client sent right after the upgrade request go now. */
    conn_drain_inbuf(c);
}

/* 101: only as the answer to a WebSocket upgrade, then a tunnel. */
static void response_switch(struct wg_conn *c)
{
    struct exchange *x = c->x;
    struct wg_buf hb;

    if (!x->req.upgrade_websocket || !x->resp.upgrade_websocket) {
        conn_upstream_failed(c, 502, "101 without a WebSocket upgrade", false);
        return;
    }
    wg_buf_init(&hb, conn_limits(c)->head_max * 2);
    struct wg_http_response_out o = {.client_minor = x->req.minor, .upgrade = true};
    int r = wg_http_response_rebuild(&x->resp, &o, &hb);
    x->resp.fields_len = 0;
    if (r < 0) {
        wg_buf_release(&hb);
        conn_upstream_failed(c, 502, "response head too large", false);
        return;
    }
    x->status = 101;
    x->resp_head_sent = true;
    x->resp_head_received = true;
    conn_write_str(c, SIDE_CLIENT, wg_buf_head(&hb), wg_buf_size(&hb));
    wg_buf_release(&hb);
    /* The access line is the tunnel's, written when it closes. */
    conn_access_count(c);
    start_tunnel(c);
}

/* 1xx: relayed to 1.1 clients (once for 100), then the final head follows. */
static void response_interim(struct wg_conn *c, int status)
{
    struct exchange *x = c->x;
    struct wg_buf hb;
    bool relay = x->req.minor >= 1 && !(status == 100 && x->sent_100);

    if (status == 100)
        x->sent_100 = true;
    wg_buf_init(&hb, conn_limits(c)->head_max * 2);
    if (relay) {
        struct wg_http_response_out o = {.client_minor = x->req.minor, .keep_alive = true};
        if (wg_http_response_rebuild(&x->resp, &o, &hb) == 0)
            conn_write_str(c, SIDE_CLIENT, wg_buf_head(&hb), wg_buf_size(&hb));
    }
    x->resp.fields_len = 0;
    x->resp.complete = false; /* llhttp completed the 1xx message, not the response */
    wg_buf_release(&hb);
    wg_http_scan_reset(&x->resp_scan, true);
}

/* The client's framing: chunked is never sent to HTTP/1.0, which gets a
 * close-delimited body instead. */
static enum wg_http_framing response_framing(const struct exchange *x, int status)
{
    bool no_body = x->resp.skip_body || status == 204 || status == 304;

    if (no_body)
        return (x->resp.has_content_length && status != 204) ? WG_HTTP_FRAME_LENGTH
                                                             : WG_HTTP_FRAME_NONE;
    if (x->resp.has_content_length)
        return WG_HTTP_FRAME_LENGTH;
    if (x->req.minor >= 1)
        return WG_HTTP_FRAME_CHUNKED;
    return WG_HTTP_FRAME_CLOSE;
}

/* A final head: rebuilt and held until the end of this read, to leave with
 * the first body bytes. */
static void response_final(struct wg_conn *c, int status)
{
    struct exchange *x = c->x;
    struct wg_buf hb;
    bool no_body = x->resp.skip_body || status == 204 || status == 304;
    enum wg_http_framing framing = response_framing(x, status);

    x->resp_framing = no_body ? WG_HTTP_FRAME_NONE : framing;
    x->resp_keep_alive = x->req_keep_alive && !c->draining && !c->client_eof &&
                         framing != WG_HTTP_FRAME_CLOSE && !x->req.upgrade_websocket &&
                         x->req.complete && c->requests < conn_limits(c)->keepalive_requests_max;

    struct wg_http_response_out o = {
        .client_minor = x->req.minor,
        .framing = framing,
        .content_length = x->resp.content_length,
        .keep_alive = x->resp_keep_alive,
        .hsts = c->https ? c->px->cfg->tls.hsts : NULL,
    };
    conn_stream_response_head(c);
    wg_buf_init(&hb, conn_limits(c)->head_max * 2);
    int r = wg_http_response_rebuild(&x->resp, &o, &hb);
    x->resp.fields_len = 0;
    x->resp.fields = NULL;
    if (r < 0) {
        wg_buf_release(&hb);
        conn_upstream_failed(c, 502, "response head too large", false);
        return;
    }
    x->status = status;
    x->resp_head_received = true;
    x->resp_head_sent = true;
    wg_buf_release(&x->held_head);
    x->held_head = hb;
    conn_arm(c);
}

/* A whole response head sits in head[0, head_len). */
static void handle_response_head(struct wg_conn *c, const char *head, size_t head_len)
{
    struct wg_proxy *px = c->px;
    struct exchange *x = c->x;

    llhttp_reset(&x->resp_parser);
    x->resp.fields = px->fields;
    x->resp.fields_cap = conn_limits(c)->header_count_max;
    x->resp.owner = c;
    x->resp.skip_body = x->req.method_id == HTTP_HEAD;
    wg_http_msg_begin(&x->resp);
    int r = wg_http_parse_head(&x->resp_parser, &x->resp, head, head_len);
    if (r != 0) {
        const char *reason = llhttp_get_error_reason(&x->resp_parser);
        WG_DEBUG(px->log, "conn", "invalid response head",
                 "conn=%" PRIu64 " status=%d llhttp=%s reason=\"%s\"", c->id, r,
                 llhttp_errno_name(llhttp_get_errno(&x->resp_parser)), reason ? reason : "");
        conn_upstream_failed(c, 502, "invalid response head", false);
        return;
    }
    if (x->resp.status == 101)
        response_switch(c);
    else if (x->resp.status < 200)
        response_interim(c, x->resp.status);
    else
        response_final(c, x->resp.status);
}

/* ---- upstream bytes --------------------------------------------------------------- */

/* A read takes only what fits under the client's mark, so the bytes queued
 * to a slow reader stay within limits.buffer_high_water (plus the response
 * head and chunk framing); 0 makes libuv report UV_ENOBUFS (up_read). */
static void up_alloc(void *user, uv_buf_t *buf)
{
    struct wg_conn *c = user;
    buf->base = c->px->readbuf;
    buf->len = conn_read_room(c, SIDE_CLIENT);
}

/* The exchange's response is complete with data[used, len) still unread. */
static void response_complete(struct wg_conn *c, size_t used, size_t len)
{
    if (used < len)
        c->x->resp.conn_close = true; /* bytes after a response: not reusable */
    response_done(c);
}

/* Handles upstream bytes. Whatever is not used (a partial head) is kept in
 * c->x->up_in. */
static void up_process(struct wg_conn *c, const char *data, size_t len)
{
    uint64_t gen = c->up_gen;
    size_t used = 0;

    while (used < len && !c->closing && gen == c->up_gen) {
        if (c->state == CS_TUNNEL) {
            conn_stream_tunnel_bytes(c, SIDE_UP, data + used, len - used);
            conn_write_str(c, SIDE_CLIENT, data + used, len - used);
            return;
        }
        if (c->state != CS_PROXY)
            return;
        if (!c->x->resp_head_received) {
            size_t head_len = 0;
            int r =
                wg_http_scan(&c->x->resp_scan, data + used, len - used, conn_limits(c), &head_len);
            if (r == WG_HTTP_SCAN_MORE)
                break;
            if (r != WG_HTTP_SCAN_DONE) {
                conn_upstream_failed(c, 502, "invalid or oversized response head", false);
                return;
            }
            handle_response_head(c, data + used, head_len);
            used += head_len;
            if (c->closing || gen != c->up_gen)
                return;
            if (c->state == CS_TUNNEL)
                continue;
            if (c->x->resp.complete) {
                response_complete(c, used, len);
                return;
            }
            continue;
        }
        size_t n;
        llhttp_errno_t e = wg_http_execute_body(&c->x->resp_parser, &c->x->resp, data + used,
                                                len - used, conn_limits(c)->head_max, &n);
        used += n;
        if (c->closing || gen != c->up_gen)
            return;
        if (e != HPE_OK && e != HPE_PAUSED && e != HPE_PAUSED_UPGRADE) {
            conn_upstream_failed(c, 502, llhttp_errno_name(e), false);
            return;
        }
        if (c->x->resp.complete) {
            response_complete(c, used, len);
            return;
        }
    }
    if (used < len && !c->closing && gen == c->up_gen && c->state == CS_PROXY &&
        !c->x->resp_head_received) {
        if (wg_buf_append(&c->x->up_in, data + used, len - used) < 0)
            conn_upstream_failed(c, 502, "response head too large", false);
    }
    if (!c->closing)
        conn_flush_held_head(c);
}

static void up_eof(struct wg_conn *c)
{
    struct exchange *x = c->x;

    x->up_eof = true;
    if (c->state == CS_TUNNEL) {
        if (c->client_eof && x->up_pending == 0 && c->client_pending == 0) {
            conn_close(c);
            return;
        }
        if (!c->client_shut_sent && conn_shutdown(c, (uv_stream_t *)&c->client) == 0)
            c->client_shut_sent = true;
        conn_update_reading(c);
        return;
    }
    if (x->resp_head_received) {
        /* A close-delimited body ends here; any other framing was cut short. */
        llhttp_finish(&x->resp_parser);
        if (x->resp.complete) {
            response_done(c);
            return;
        }
        conn_upstream_failed(c, 502, "upstream closed mid-response", false);
        return;
    }
    bool nothing_received = x->resp_scan.pos == 0 && wg_buf_size(&x->up_in) == 0;
    conn_upstream_failed(c, 502, "upstream closed before responding",
                         x->up_reused && nothing_received);
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
    struct exchange *x = c->x;
    if (n == UV_ENOBUFS) {
        /* No room under the client's mark: stop until its queue drains. */
        conn_update_reading(c);
        return;
    }
    if (n < 0) {
        if (n == UV_EOF) {
            up_eof(c);
        } else {
            bool nothing_received =
                !x->resp_head_received && x->resp_scan.pos == 0 && wg_buf_size(&x->up_in) == 0;
            conn_upstream_failed(c, 502, uv_err_name((int)n), x->up_reused && nothing_received);
        }
        return;
    }
    x->last_up_read_ms = conn_now_ms(c);
    if (!x->up_first_byte_ms) {
        x->up_first_byte_ms = x->last_up_read_ms;
        first_byte_observe(c);
    }

    if (wg_buf_size(&x->up_in) > 0 && !x->resp_head_received && c->state == CS_PROXY) {
        if (wg_buf_append(&x->up_in, buf->base, (size_t)n) < 0) {
            conn_upstream_failed(c, 502, "response head too large", false);
            return;
        }
        /* Take the bytes out of up_in first: processing may reuse it. */
        struct wg_buf held = x->up_in;
        wg_buf_init(&x->up_in, held.max);
        up_process(c, wg_buf_head(&held), wg_buf_size(&held));
        wg_buf_release(&held);
        return;
    }
    up_process(c, buf->base, (size_t)n);
}

const struct wg_upconn_reader conn_up_reader = {up_alloc, up_read};
