/* proxy/conn_stream.c - streams on session routes (a WebSocket tunnel, a
 * streamed response): whether they still count as use of their session,
 * and what happens to them when the session leaves running.
 *
 * An exchange proxied to a session keeps the session active
 * (x->activity, see conn_session.c). Once it streams, it keeps it only
 * while it carries use: WebSocket data frames and SSE events above the
 * template's idle.stream_heartbeat, any other streamed body read above
 * it, request body bytes (proxy/stream_use.h has the rule). After
 * idle.stream_after with only control frames and heartbeats its activity
 * ends; the next use begins it again. */
#include <inttypes.h>
#include <string.h>
#include <strings.h>

#include "proxy/conn_int.h"

/* The close frame a client gets when its session leaves running: 1001
 * "going away", unmasked (server to client). */
static const char going_away_frame[] = "\x88\x0c\x03\xe9going away";
#define GOING_AWAY_LEN 14

static void stream_left(struct wg_sess_stream *st);

void conn_stream_begin(struct wg_conn *c, const struct wg_sess_view *v)
{
    struct exchange *x = c->x;
    const struct wg_sessions_cfg *t;

    if (x->activity == NULL || x->stream_entry != NULL)
        return;
    /* A template that a reload removed: the defaults of sessions:. */
    t = wg_config_template_or_default(c->px->cfg, v->template_name);
    x->stream_entry = x->activity;
    x->stream_after_ms = t->idle.stream_after_ms;
    x->stream_heartbeat = t->idle.stream_heartbeat;
    x->stream_max_ms = t->idle.stream_max_ms;
    x->stream.left = stream_left;
    wg_session_cache_stream_add(c->px->session_cache, v->entry, &x->stream);
}

void conn_stream_end(struct wg_conn *c)
{
    struct exchange *x = c->x;

    if (x == NULL)
        return;
    if (c->px->session_cache != NULL)
        wg_session_cache_stream_remove(c->px->session_cache, &x->stream);
    if (x->status == 101 && !x->stream_logged) {
        x->stream_logged = true;
        conn_access_line(c);
    }
}

void conn_stream_started(struct wg_conn *c)
{
    struct exchange *x = c->x;
    x->stream_use_ms = x->stream_start_ms = conn_now_ms(c);
}

/* Past the template's idle.stream_max, the stream never counts again. */
static bool stream_capped(const struct wg_conn *c)
{
    const struct exchange *x = c->x;
    return x->stream_max_ms > 0 && x->stream_start_ms > 0 &&
           conn_now_ms(c) >= x->stream_start_ms + x->stream_max_ms;
}

/* The stream carried use: it counts again if it had stopped. */
void conn_stream_used(struct wg_conn *c)
{
    struct exchange *x = c->x;

    x->stream_use_ms = conn_now_ms(c);
    if (x->activity != NULL || x->stream_entry == NULL || x->stream_left ||
        c->px->session_cache == NULL || stream_capped(c))
        return;
    x->activity = wg_session_cache_activity_resume(c->px->session_cache, x->stream_entry);
    WG_DEBUG(c->px->log, "conn", "stream carries data again, counting as activity",
             "conn=%" PRIu64 " session=%s", c->id, x->session_id);
    conn_arm(c);
}

uint64_t conn_stream_deadline(const struct wg_conn *c)
{
    const struct exchange *x = c->x;

    uint64_t d = UINT64_MAX;

    if (x == NULL || x->activity == NULL || x->stream_entry == NULL)
        return UINT64_MAX;
    if (c->state != CS_TUNNEL && !(c->state == CS_PROXY && x->resp_head_received))
        return UINT64_MAX;
    if (x->stream_after_ms > 0)
        d = x->stream_use_ms + x->stream_after_ms;
    if (x->stream_max_ms > 0 && x->stream_start_ms + x->stream_max_ms < d)
        d = x->stream_start_ms + x->stream_max_ms;
    return d;
}

void conn_stream_quiet(struct wg_conn *c)
{
    if (stream_capped(c))
        WG_DEBUG(c->px->log, "conn", "stream open past idle.stream_max, no longer counting",
                 "conn=%" PRIu64 " session=%s open_ms=%" PRIu64, c->id, c->x->session_id,
                 conn_now_ms(c) - c->x->stream_start_ms);
    else
        WG_DEBUG(c->px->log, "conn",
                 "stream carried only heartbeats, no longer counting as activity",
                 "conn=%" PRIu64 " session=%s quiet_ms=%" PRIu64, c->id, c->x->session_id,
                 conn_now_ms(c) - c->x->stream_use_ms);
    conn_activity_end(c);
    conn_arm(c);
}

/* ---- what the bytes say -------------------------------------------------------- */

struct frame_ctx {
    struct wg_conn *c;
    int side;
    bool used;
};

static void on_frame(void *arg, const struct wg_ws_frame *f)
{
    struct frame_ctx *fc = arg;
    struct exchange *x = fc->c->x;
    if (wg_ws_frame_counts(&x->ws_use[fc->side], f, conn_now_ms(fc->c), x->stream_heartbeat))
        fc->used = true;
}

/* Tunnel bytes from one side (SIDE_CLIENT or SIDE_UP), before they are
 * written to the other. Bytes that are no WebSocket framing count, as
 * any byte did before frames were told apart. */
void conn_stream_tunnel_bytes(struct wg_conn *c, int side, const char *data, size_t len)
{
    struct exchange *x = c->x;
    struct frame_ctx fc = {.c = c, .side = side};

    if (x->stream_entry == NULL || len == 0)
        return;
    if (x->ws[side].failed) {
        conn_stream_used(c);
        return;
    }
    if (wg_ws_feed(&x->ws[side], data, len, on_frame, &fc) != 0) {
        WG_DEBUG(c->px->log, "conn", "tunnel bytes are no WebSocket frames, counting all as data",
                 "conn=%" PRIu64 " from=%s", c->id, side == SIDE_CLIENT ? "client" : "upstream");
        fc.used = true;
    }
    if (fc.used)
        conn_stream_used(c);
}

/* A response's head: whether its body is server-sent events. Runs while
 * the head's fields are readable. */
void conn_stream_response_head(struct wg_conn *c)
{
    struct exchange *x = c->x;
    const struct wg_http_field *ct = wg_http_find(&x->resp, "content-type");
    static const char sse[] = "text/event-stream";

    if (x->stream_entry == NULL)
        return; /* not a session's stream: no look at its fields */
    x->resp_sse = ct != NULL && ct->value_len >= sizeof(sse) - 1 &&
                  strncasecmp(ct->value, sse, sizeof(sse) - 1) == 0;
    conn_stream_started(c);
}

void conn_stream_body(struct wg_conn *c, const char *at, size_t len)
{
    struct exchange *x = c->x;
    bool used;

    if (x->stream_entry == NULL)
        return;
    if (x->resp_sse)
        used = wg_sse_feed(&x->sse, at, len, x->stream_heartbeat);
    else
        used = len > x->stream_heartbeat;
    if (used)
        conn_stream_used(c);
}

/* ---- the session left running ------------------------------------------------- */

/* A tunnel: the client gets a close frame 1001 where a frame may start
 * (else the connection just closes), then the connection lingers for its
 * answer; the upstream connection is dropped. */
static void tunnel_going_away(struct wg_conn *c)
{
    struct exchange *x = c->x;
    bool framed = wg_ws_at_boundary(&x->ws[SIDE_UP]);

    conn_release_upstream(c, false);
    x->up_eof = true;
    if (framed)
        conn_write_str(c, SIDE_CLIENT, going_away_frame, GOING_AWAY_LEN);
    conn_stream_end(c);
    if (!c->closing)
        conn_begin_close(c);
}

/* A streamed response: a chunked body gets its last chunk and a
 * close-delimited one its FIN, so the client sees an ended response (an
 * EventSource reconnects by itself); a body of known length cannot end
 * early and is cut. */
static void response_going_away(struct wg_conn *c)
{
    struct exchange *x = c->x;

    switch (x->resp_framing) {
    case WG_HTTP_FRAME_CHUNKED:
        conn_write_str(c, SIDE_CLIENT, "0\r\n\r\n", 5);
        break;
    case WG_HTTP_FRAME_CLOSE:
        break;
    default:
        conn_close(c);
        return;
    }
    if (c->closing)
        return;
    x->resp.conn_close = true; /* the upstream connection is not reused */
    x->resp_keep_alive = false;
    conn_finish_exchange(c);
}

/* Reached from the session cache when the session of a registered
 * exchange leaves running, draining and saving. */
static void stream_left(struct wg_sess_stream *st)
{
    struct exchange *x = wg_container_of(st, struct exchange, stream);
    struct wg_conn *c = x->conn;

    x->stream_left = true;
    if (c->closing)
        return;
    conn_activity_end(c);
    if (c->state == CS_TUNNEL) {
        WG_INFO(c->px->log, "conn", "session left running, closing its WebSocket with 1001",
                "conn=%" PRIu64 " session=%s", c->id, x->session_id);
        tunnel_going_away(c);
    } else if (c->state == CS_PROXY && x->resp_head_received && !x->resp.complete) {
        WG_INFO(c->px->log, "conn", "session left running, ending its streamed response",
                "conn=%" PRIu64 " session=%s", c->id, x->session_id);
        response_going_away(c);
    }
}
