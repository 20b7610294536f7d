/* proxy/h2.h - HTTP/2 to clients (RFC 9113), on nghttp2, bridged to the
 * HTTP/1.1 pipeline.
 *
 * One struct wg_h2 per client connection that chose "h2" by ALPN. The
 * connection hands it the decrypted bytes it reads and writes out what it
 * produces. Each request stream becomes one HTTP/1.1 request on a
 * socketpair whose other end the proxy takes as a client connection of its
 * own (io->open_stream): so a stream goes through the very routing, request
 * classes, holds, waking page, access control and limits that an HTTP/1.1
 * request goes through, and upstreams stay HTTP/1.1 over the keep-alive
 * pool. The HTTP/1.1 response read back from the socketpair becomes the
 * stream's HEADERS and DATA.
 *
 * Memory is bounded per stream and per connection:
 * - a request body is consumed (its flow-control window opened again) only
 *   as the socketpair takes it, so at most one window per stream waits;
 * - a response body is read from the socketpair only while the stream has
 *   less than limits->stream_buffer_max waiting for the client's window;
 *   the socketpair's small buffers then push back on the pipeline, which
 *   stops reading the upstream (limits.buffer_high_water);
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
#include <stdint.h>
#include <uv.h>

#include "common/log.h"

struct wg_h2; /* opaque */

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

/* Counters, kept by the caller (one per loop) and updated by every session. */
struct wg_h2_stats {
    uint64_t connections;       /* sessions begun */
    uint64_t streams;           /* request streams opened */
    uint64_t streams_open;      /* now */
    uint64_t resets_received;   /* RST_STREAM from clients */
    uint64_t resets_sent;       /* streams we reset (stalls, errors, bridge failures) */
    uint64_t goaway_calm;       /* connections ended: a token bucket ran out */
    uint64_t goaway_error;      /* connections ended: a protocol error or a flood nghttp2 saw */
    uint64_t headers_too_large; /* 431 answers */
};

struct wg_h2_io {
    void *arg;
    /* Bytes for the client; the connection writes them (through TLS) and
     * queues what its socket does not take. */
    void (*write)(void *arg, const uint8_t *data, size_t len);
    /* Bytes given to write() that the socket has not taken yet. */
    size_t (*queued)(void *arg);
    /* fd is one end of a socketpair carrying one HTTP/1.1 request: the
     * pipeline takes it as a client connection. Returns 0, or < 0 when it
     * cannot (fd is closed either way). */
    int (*open_stream)(void *arg, int fd);
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
/* Ends every stream and frees the session once its handles are closed.
 * No io callback runs after this. NULL-safe. */
void wg_h2_free(struct wg_h2 *h);

#endif
