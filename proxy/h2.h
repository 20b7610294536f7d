/* proxy/h2.h - HTTP/2 to clients (RFC 9113), on nghttp2, bridged to the
 * HTTP/1.1 pipeline.
 *
 * One struct wg_h2 per client connection that chose "h2" by ALPN. The
 * connection hands it the decrypted bytes it reads and writes out what it
 * produces. Each request stream becomes one HTTP/1.1 request handed, in
 * memory, to a client connection of its own that the proxy makes for it
 * (io->open_stream; no socket): so a stream goes through the very routing,
 * request classes, holds, waking page, access control and limits that an
 * HTTP/1.1 request goes through, and upstreams stay HTTP/1.1 over the
 * keep-alive pool. The HTTP/1.1 response that connection writes
 * (wg_h2_stream_write) becomes the stream's HEADERS and DATA.
 *
 * Calls between the two sides never nest: the session hands request bytes,
 * aborts and its send queue's size to a stream's connection only from its
 * own service pass (a uv_idle_t), never while the connection is inside one
 * of the wg_h2_stream_* calls, nor from inside nghttp2.
 *
 * Memory is bounded per stream and per connection:
 * - a request body is consumed (its flow-control window opened again) only
 *   as the stream's connection takes it, so at most one window per stream
 *   waits;
 * - the response bytes a stream holds for the client's window are its
 *   connection's send queue (io->stream_pending), so past
 *   limits.buffer_high_water the connection stops reading the upstream,
 *   as it does for a slow HTTP/1.1 client;
 * - nothing more is produced while limits->conn_buffer_max bytes wait for
 *   the client's socket, and the connection reads nothing meanwhile
 *   (wg_h2_reading), so a client that does not read cannot grow our
 *   output (PING and SETTINGS acknowledgements included: nghttp2 ends a
 *   session over 1000 queued ones).
 * Defences: at most max_concurrent_streams open streams; a header list
 * over header_list_max bytes or header_count_max fields gets 431; one
 * several times over, or more than 8 CONTINUATION frames, ends the
 * connection; RST_STREAM from the client spends a token of a bucket
 * (reset_burst, refilled at reset_rate per second; rapid reset,
 * CVE-2023-44487), and so do PING, SETTINGS and empty DATA frames (a bucket
 * of their own): an empty bucket ends the connection with GOAWAY
 * ENHANCE_YOUR_CALM. A stream whose response has waited send_idle_ms for
 * the client's window (a zero-window stall) is reset; with no stream open
 * for idle_ms the connection ends with GOAWAY. */
#ifndef WG_PROXY_H2_H
#define WG_PROXY_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "common/log.h"

struct wg_h2;        /* opaque */
struct wg_h2_stream; /* opaque: one request stream, as its connection sees it */

struct wg_h2_limits {
    uint32_t max_concurrent_streams;      /* SETTINGS_MAX_CONCURRENT_STREAMS */
    size_t header_list_max;               /* SETTINGS_MAX_HEADER_LIST_SIZE; over it: 431 */
    unsigned header_count_max;            /* fields per header list; over it: 431 */
    uint64_t reset_burst, reset_rate;     /* RST_STREAM token bucket */
    uint64_t control_burst, control_rate; /* PING, SETTINGS, empty DATA token bucket */
    size_t stream_buffer_max; /* response bytes waiting per stream before reading pauses */
    size_t conn_buffer_max;   /* bytes queued to the client before producing pauses */
    uint64_t idle_ms;         /* no stream open this long: GOAWAY, close */
    uint64_t send_idle_ms;    /* a response waiting for window this long: reset */
};

/* Counters, kept by the caller (one per loop) and updated by every session;
 * atomics, read from another thread (see struct wg_proxy_stats). */
struct wg_h2_stats {
    _Atomic uint64_t connections;     /* sessions begun */
    _Atomic uint64_t streams;         /* request streams opened */
    _Atomic uint64_t streams_open;    /* now */
    _Atomic uint64_t resets_received; /* RST_STREAM from clients */
    _Atomic uint64_t resets_sent;     /* streams we reset (stalls, errors, bridge failures) */
    _Atomic uint64_t goaway_calm;     /* connections ended: a token bucket ran out */
    _Atomic uint64_t goaway_error; /* connections ended: a protocol error or a flood nghttp2 saw */
    _Atomic uint64_t headers_too_large; /* 431 answers */
};

struct wg_h2_io {
    void *arg;
    /* Bytes for the client; the connection writes them (through TLS) and
     * queues what its socket does not take. */
    void (*write)(void *arg, const uint8_t *data, size_t len);
    /* Bytes given to write() that the socket has not taken yet. */
    size_t (*queued)(void *arg);
    /* A stream's request: the pipeline makes a connection for it and
     * returns it (NULL: it cannot; the stream gets 503). */
    void *(*open_stream)(void *arg, struct wg_h2_stream *s);
    /* Request bytes for a stream's connection, as a socket read would give
     * them; only while it reads (wg_h2_stream_reading). */
    void (*stream_bytes)(void *conn, const char *data, size_t n);
    /* The client reset or left the stream: its connection ends. */
    void (*stream_abort)(void *conn);
    /* Response bytes of the stream that wait for the client: what the
     * connection counts as its send queue. */
    void (*stream_pending)(void *conn, size_t n);
    /* The session is over: close the connection once its output is out. */
    void (*done)(void *arg);
    /* wg_h2_reading() may have turned true again. */
    void (*reading_changed)(void *arg);
};

/* Starts a server session and queues its SETTINGS. Returns 0 or -ENOMEM. */
int wg_h2_new(uv_loop_t *loop, struct wg_log *log, uint64_t conn_id,
              const struct wg_h2_limits *limits, struct wg_h2_stats *stats,
              const struct wg_h2_io *io, struct wg_h2 **ret);
/* Bytes read from the client. Returns 0, or < 0 when the session is over
 * (a protocol error or a flood: a GOAWAY is queued; io->done follows). */
int wg_h2_feed(struct wg_h2 *h, const uint8_t *data, size_t len);
/* Whether the connection should read: false while output waits for the
 * client (conn_buffer_max) or the session is over. */
bool wg_h2_reading(const struct wg_h2 *h);
/* The connection's queued output shrank: produce more. */
void wg_h2_drained(struct wg_h2 *h);
/* Graceful shutdown: GOAWAY; open streams finish, then io->done. */
void wg_h2_shutdown(struct wg_h2 *h);
/* Ends every stream (their connections get stream_abort now) and frees the
 * session once its handles are closed. No io callback runs after this
 * returns. NULL-safe. */
void wg_h2_free(struct wg_h2 *h);

/* ---- the side of a stream's connection ---- */

/* Response bytes (an HTTP/1.1 response) from the stream's connection.
 * Returns the response bytes the stream now holds for its client: the
 * connection's send queue, as a socket's would be after a write. */
size_t wg_h2_stream_write(struct wg_h2_stream *s, const uv_buf_t *bufs, unsigned nbufs);
/* The connection ended its side (its FIN): a body delimited by the close
 * ends here. */
void wg_h2_stream_shutdown(struct wg_h2_stream *s);
/* The stream's id on its HTTP/2 connection (for logs). */
int32_t wg_h2_stream_id(const struct wg_h2_stream *s);
/* Whether the connection takes request bytes now. */
void wg_h2_stream_reading(struct wg_h2_stream *s, bool on);
/* The connection is closing: the session forgets it (and answers 502 or
 * resets the stream if its response was not whole). */
void wg_h2_stream_detach(struct wg_h2_stream *s);

#endif
