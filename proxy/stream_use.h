/* proxy/stream_use.h - what a stream's bytes say about its session's use:
 * WebSocket frame headers told apart in the tunnel (data versus ping, pong
 * and close), server-sent events told apart from comment heartbeats, and
 * the rule that says which of them count as use of the session.
 *
 * Pure code: no I/O, no allocation, no clock (the caller passes the time).
 * Payload bytes are never copied: the WebSocket parser keeps at most one
 * frame header (14 bytes) and skips payloads by count; the event scanner
 * looks only at line starts. */
#ifndef WG_PROXY_STREAM_USE_H
#define WG_PROXY_STREAM_USE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Two small data messages in one direction less than this apart count
 * as use (typing in a terminal is a burst of small frames; heartbeats are
 * seconds apart). */
#define WG_STREAM_BURST_MS 1000

enum wg_ws_opcode {
    WG_WS_CONT = 0x0,
    WG_WS_TEXT = 0x1,
    WG_WS_BINARY = 0x2,
    WG_WS_CLOSE = 0x8,
    WG_WS_PING = 0x9,
    WG_WS_PONG = 0xA,
};

/* One frame header, as read. */
struct wg_ws_frame {
    uint8_t opcode; /* enum wg_ws_opcode */
    bool fin;
    bool masked;
    uint64_t len; /* payload length */
};

/* The state of one direction of a tunnel. Zeroed is ready. */
struct wg_ws_parser {
    uint64_t skip;   /* payload bytes of the current frame still to pass */
    uint8_t hdr[14]; /* the header read so far */
    uint8_t have;    /* bytes in hdr */
    bool in_msg;     /* a fragmented data message is open (continuations expected) */
    bool failed;     /* not WebSocket framing: nothing more is parsed */
};

/* Called once per complete frame header, before its payload passes. */
typedef void wg_ws_frame_fn(void *arg, const struct wg_ws_frame *f);

/* Returned once the bytes are no WebSocket framing (sticky). */
#define WG_WS_BAD 1

/* Reads the frame headers in data[0, len), which follows what earlier calls
 * were given; fn (may be NULL) gets each one. A header split across calls
 * is kept. Returns 0, or WG_WS_BAD from the first byte that breaks RFC 6455
 * framing (a reserved opcode, a fragmented or long control frame, a 64-bit
 * length with its top bit set, a continuation without a message or a new
 * message inside one) and on every later call. */
int wg_ws_feed(struct wg_ws_parser *p, const char *data, size_t len, wg_ws_frame_fn *fn, void *arg);

/* Whether the parser stands between two frames: a frame of ours (a close)
 * may be written into the stream here. */
bool wg_ws_at_boundary(const struct wg_ws_parser *p);

/* The rule for one direction of a WebSocket. */
struct wg_ws_use {
    uint64_t msg_bytes;     /* payload of the data message in progress */
    uint64_t last_small_ms; /* when the last small whole message ended; 0: none */
};

/* Whether frame f is use: a data frame (text, binary, continuation) whose
 * message has carried more than heartbeat_max payload bytes, or a small
 * whole message within WG_STREAM_BURST_MS of the previous small one in
 * this direction. Ping, pong and close never are. */
bool wg_ws_frame_counts(struct wg_ws_use *u, const struct wg_ws_frame *f, uint64_t now_ms,
                        uint64_t heartbeat_max);

/* Server-sent events (text/event-stream): an event whose field lines
 * (everything but comment lines, ":...") carry more than heartbeat_max
 * bytes counts; comment-only events and tiny ones are heartbeats. Zeroed
 * is ready (at the start of a line). */
struct wg_sse_scan {
    uint64_t event_bytes; /* bytes of field lines of the event in progress */
    uint8_t line;         /* 0 at a line start, 1 in a comment line, 2 in a field line */
    bool after_cr;        /* the last byte was CR: a LF next ends no further line */
};

/* Scans data[0, len) of the body (after de-chunking). Returns true when an
 * event in it crossed heartbeat_max (or was already over it). */
bool wg_sse_feed(struct wg_sse_scan *s, const char *data, size_t len, uint64_t heartbeat_max);

#endif
