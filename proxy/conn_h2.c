/* proxy/conn_h2.c - a client connection that chose HTTP/2 by ALPN: the
 * glue between conn.c (its socket, TLS, write queue and timer) and the
 * session of proxy/h2.c, which bridges each stream to a connection of its
 * own (wg_conn_open_vstream). */
#include <inttypes.h>

#include "proxy/conn_int.h"

static void io_write(void *arg, const uint8_t *data, size_t len)
{
    struct wg_conn *c = arg;
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);

    /* Encrypted, written, and what the socket does not take copied. */
    conn_write(c, SIDE_CLIENT, &b, 1);
}

static size_t io_queued(void *arg)
{
    const struct wg_conn *c = arg;
    return c->client_pending;
}

static void *io_open_stream(void *arg, struct wg_h2_stream *s)
{
    return wg_conn_open_vstream(arg, s);
}

static void io_stream_bytes(void *conn, const char *data, size_t n)
{
    struct wg_conn *c = conn;

    c->last_client_read_ms = conn_now_ms(c);
    conn_client_bytes(c, data, n);
}

static void io_stream_abort(void *conn)
{
    conn_close(conn);
}

static void io_stream_pending(void *conn, size_t n)
{
    conn_vstream_pending(conn, n);
}

static void io_done(void *arg)
{
    struct wg_conn *c = arg;

    /* The GOAWAY is queued: FIN and close once it is out. */
    c->close_after_flush = true;
    if (c->client_pending == 0)
        conn_close(c);
}

static void io_reading_changed(void *arg)
{
    conn_update_reading(arg);
}

int conn_h2_start(struct wg_conn *c)
{
    const struct wg_config *cfg = c->px->cfg;
    const struct wg_limits *lim = &cfg->limits;
    struct wg_h2_limits hl = {
        .max_concurrent_streams = cfg->http2.max_concurrent_streams,
        .header_list_max = lim->head_max,
        .header_count_max = lim->header_count_max,
        .reset_burst = cfg->http2.reset_burst,
        .reset_rate = cfg->http2.reset_rate,
        .control_burst = cfg->http2.control_burst,
        .control_rate = cfg->http2.control_rate,
        .stream_buffer_max = lim->buffer_high_water,
        .conn_buffer_max = lim->buffer_high_water * 2,
        .idle_ms = lim->keepalive_idle_ms,
        .send_idle_ms = lim->send_idle_ms,
    };
    struct wg_h2_io io = {
        .arg = c,
        .write = io_write,
        .queued = io_queued,
        .open_stream = io_open_stream,
        .stream_bytes = io_stream_bytes,
        .stream_abort = io_stream_abort,
        .stream_pending = io_stream_pending,
        .done = io_done,
        .reading_changed = io_reading_changed,
    };
    int r = wg_h2_new(c->px->loop, c->px->log, c->id, &hl, &c->px->stats.h2, &io, &c->h2);

    if (r < 0) {
        WG_WARN(c->px->log, "h2", "cannot start an HTTP/2 session, closing", "conn=%" PRIu64,
                c->id);
        conn_close(c);
        return r;
    }
    c->state = CS_H2;
    conn_arm(c);
    if (c->draining)
        wg_h2_shutdown(c->h2);
    return 0;
}

void conn_h2_bytes(struct wg_conn *c, const char *data, size_t n)
{
    c->px->stats.bytes_in += (uint64_t)n;
    /* A session that ends (< 0) reads nothing more: wg_h2_reading says so. */
    (void)wg_h2_feed(c->h2, (const uint8_t *)data, n);
    if (!c->closing)
        conn_update_reading(c);
}

void conn_h2_drained(struct wg_conn *c)
{
    wg_h2_drained(c->h2);
}
