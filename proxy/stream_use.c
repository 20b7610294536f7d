/* proxy/stream_use.c - see stream_use.h. */
#include "proxy/stream_use.h"

#include <string.h>

/* ---- WebSocket frame headers (RFC 6455, 5.2) ------------------------------------ */

/* Header bytes needed for what hdr holds so far: 2, then 2 + the extended
 * length (0, 2 or 8) + the masking key (0 or 4). */
static uint8_t header_need(const struct wg_ws_parser *p)
{
    if (p->have < 2)
        return 2;
    uint8_t len7 = p->hdr[1] & 0x7f;
    uint8_t need = 2;
    if (len7 == 126)
        need += 2;
    else if (len7 == 127)
        need += 8;
    if (p->hdr[1] & 0x80)
        need += 4;
    return need;
}

/* The whole header is in hdr: checks it and reads the frame. Returns false
 * when it breaks the framing. */
static bool header_parse(struct wg_ws_parser *p, struct wg_ws_frame *f)
{
    uint8_t b0 = p->hdr[0], b1 = p->hdr[1];
    uint8_t len7 = b1 & 0x7f;

    f->fin = (b0 & 0x80) != 0;
    f->opcode = b0 & 0x0f;
    f->masked = (b1 & 0x80) != 0;
    if (len7 == 126) {
        f->len = ((uint64_t)p->hdr[2] << 8) | p->hdr[3];
    } else if (len7 == 127) {
        f->len = 0;
        for (int i = 0; i < 8; i++)
            f->len = (f->len << 8) | p->hdr[2 + i];
        if (f->len >> 63)
            return false;
    } else {
        f->len = len7;
    }
    /* RSV bits belong to extensions (permessage-deflate sets RSV1): not
     * checked, as the extension in use is the peers' business. */
    switch (f->opcode) {
    case WG_WS_CONT:
        if (!p->in_msg)
            return false;
        p->in_msg = !f->fin;
        return true;
    case WG_WS_TEXT:
    case WG_WS_BINARY:
        if (p->in_msg)
            return false;
        p->in_msg = !f->fin;
        return true;
    case WG_WS_CLOSE:
    case WG_WS_PING:
    case WG_WS_PONG:
        return f->fin && f->len <= 125;
    default:
        return false;
    }
}

int wg_ws_feed(struct wg_ws_parser *p, const char *data, size_t len, wg_ws_frame_fn *fn, void *arg)
{
    const unsigned char *d = (const unsigned char *)data;

    while (len > 0 && !p->failed) {
        if (p->skip > 0) {
            size_t n = p->skip < len ? (size_t)p->skip : len;
            p->skip -= n;
            d += n;
            len -= n;
            continue;
        }
        /* Header bytes, one step at a time: the need grows once the
         * second byte says how long the header is. */
        uint8_t need = header_need(p);
        size_t n = (size_t)(need - p->have);
        if (n > len)
            n = len;
        memcpy(p->hdr + p->have, d, n);
        p->have = (uint8_t)(p->have + n);
        d += n;
        len -= n;
        if (p->have < header_need(p))
            continue;
        struct wg_ws_frame f;
        if (!header_parse(p, &f)) {
            p->failed = true;
            break;
        }
        p->have = 0;
        p->skip = f.len;
        if (fn != NULL)
            fn(arg, &f);
    }
    return p->failed ? WG_WS_BAD : 0;
}

bool wg_ws_at_boundary(const struct wg_ws_parser *p)
{
    return !p->failed && p->skip == 0 && p->have == 0;
}

bool wg_ws_frame_counts(struct wg_ws_use *u, const struct wg_ws_frame *f, uint64_t now_ms,
                        uint64_t heartbeat_max)
{
    if (f->opcode & 0x8)
        return false; /* control: ping, pong, close */
    u->msg_bytes += f->len;
    if (u->msg_bytes > heartbeat_max) {
        if (f->fin)
            u->msg_bytes = 0;
        return true;
    }
    if (!f->fin)
        return false;
    /* A small whole message: a heartbeat, unless small ones come in a
     * burst (keystrokes). */
    u->msg_bytes = 0;
    bool burst = u->last_small_ms != 0 && now_ms - u->last_small_ms < WG_STREAM_BURST_MS;
    u->last_small_ms = now_ms;
    return burst;
}

/* ---- server-sent events (HTML, "Server-sent events", 9.2.5) ---------------------- */

/* The first CR or LF in d[0, n), or n. */
static size_t line_end(const char *d, size_t n)
{
    const char *lf = memchr(d, '\n', n);
    size_t m = lf ? (size_t)(lf - d) : n;
    const char *cr = memchr(d, '\r', m);
    return cr ? (size_t)(cr - d) : m;
}

bool wg_sse_feed(struct wg_sse_scan *s, const char *data, size_t len, uint64_t heartbeat_max)
{
    bool counts = s->event_bytes > heartbeat_max;
    size_t i = 0;

    while (i < len) {
        char ch = data[i];
        if (s->after_cr) {
            s->after_cr = false;
            if (ch == '\n') {
                i++;
                continue; /* CRLF: one line end */
            }
        }
        if (s->line == 0) {
            if (ch == '\n' || ch == '\r') {
                /* An empty line: the event ends. */
                s->event_bytes = 0;
                s->after_cr = ch == '\r';
                i++;
                continue;
            }
            s->line = ch == ':' ? 1 : 2;
        }
        size_t n = line_end(data + i, len - i);
        if (s->line == 2) {
            s->event_bytes += n;
            if (s->event_bytes > heartbeat_max)
                counts = true;
        }
        i += n;
        if (i == len)
            break; /* the line goes on in the next span */
        s->line = 0;
        s->after_cr = data[i] == '\r';
        i++;
    }
    return counts;
}
