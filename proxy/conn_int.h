/* proxy/conn_int.h - what the files of one client connection share. Not an
 * API: only proxy/conn*.c and their unit tests include it.
 *
 *   conn.c          lifetime, the exchange cache, client reads, writes and
 *                   backpressure, the timer, our errors, close and linger
 *   conn_request.c  the request: head, parse, route, rebuild, body, and the
 *                   upstream connection it goes to (connect, retry, release)
 *   conn_response.c the response: head, body, 1xx, the switch to a tunnel,
 *                   the end of the exchange and its access line
 *   conn_session.c  session routes: the session's facts, acting on the
 *                   decision (proxy, hold, wake, answer), the hold's outcome
 *   conn_decide.c   the pure decisions: request class, session action
 *   conn_stream.c   streams on session routes: whether they still count as
 *                   use, and their end when the session leaves running
 *   conn_tls.c      the TLS record layer of a connection on a tls: listener:
 *                   ciphertext in and out through conn.c's reads and writes
 *
 * Ownership: a connection owns its client handle, its timer and the write
 * requests it queued; it borrows one upstream connection at a time from the
 * pool. `refs` counts open handles plus write requests and shutdowns in
 * flight; the memory is freed when it reaches zero, never earlier, so a
 * libuv callback never sees a freed connection. Every close path goes
 * through conn_close(), which is idempotent.
 *
 * One exchange (struct exchange) holds everything about one request and
 * its response; the connection holds only what outlives an exchange. */
#ifndef WG_PROXY_CONN_INT_H
#define WG_PROXY_CONN_INT_H

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "common/buf.h"
#include "common/config.h"
#include "common/http_head.h"
#include "common/list.h"
#include "common/session.h"
#include "proxy/h2.h"
#include "proxy/http_rebuild.h"
#include "proxy/route.h"
#include "proxy/server.h"
#include "proxy/session_cache.h"
#include "proxy/stream_use.h"
#include "proxy/upstream.h"

#define SIDE_CLIENT 0
#define SIDE_UP 1

/* The methods the gateway passes on: the Allow of "OPTIONS *" and of the
 * 405 that refuses CONNECT and TRACE (RFC 9110 section 15.5.6: a 405 MUST
 * carry Allow). */
#define WG_PROXY_ALLOW "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"

enum conn_state {
    CS_HEAD,       /* waiting for a request head; [transient] once bytes arrive */
    CS_WAITING,    /* [transient] held until its session runs (or the wake deadline) */
    CS_CONNECTING, /* [transient] head parsed, waiting for the upstream */
    CS_PROXY,      /* [transient] request forwarded, body and response flowing */
    CS_TUNNEL,     /* upgraded: bytes both ways */
    CS_LINGER,     /* final response sent and FIN sent; discarding input */
    CS_H2,         /* HTTP/2: c->h2 reads and writes; each stream is a connection of its own */
};

/* How a request for a session that is not running is answered. */
enum conn_req_class {
    RC_HOLD = 0, /* API, fetch, WebSocket: wake and hold until ready */
    RC_NAVIGATE, /* a browser navigation: wake and answer the waking page */
    RC_PROBE,    /* probes, non-waking paths and user agents: status, no wake */
};

/* Where a request on a session route stands with its credentials. */
enum conn_access {
    ACCESS_OPEN = 0, /* a public route (or no session route): nothing to check */
    ACCESS_DENIED,   /* private, and no valid credential: 401, no lookup */
    ACCESS_CHECK,    /* a credential with a good MAC for this session, not expired: its
                      * generation is checked against the session cache's */
    ACCESS_FORWARD,  /* no token of ours: access.forward_auth decides (proxy/forward_auth) */
};

/* One request/response exchange: from the first byte of a request head to
 * the end of its response (or of the connection, for a tunnel). Taken from
 * the loop's cache when a head starts and given back when the exchange
 * ends, so an idle keep-alive connection holds only struct wg_conn.
 * exchange_init() (conn.c) is the one place that sets every field. */
struct exchange {
    /* Zeroed by exchange_init(): every field before up_addr. */
    struct wg_conn *conn;
    llhttp_t req_parser;
    struct wg_http_msg req;
    struct wg_http_scan req_scan;
    llhttp_t resp_parser;
    struct wg_http_msg resp;
    struct wg_http_scan resp_scan;
    struct wg_buf up_head;   /* rebuilt request head, kept for a retry */
    struct wg_buf up_in;     /* a partial response head */
    struct wg_buf held_head; /* response head waiting to go out with the first body bytes */

    /* the request */
    enum wg_http_framing req_framing;
    uint64_t req_body_bytes;
    bool req_keep_alive;
    bool body_too_large;
    bool sent_100;

    /* the upstream connection borrowed (a retry borrows another) */
    struct wg_upconn *up;
    size_t up_pending;     /* bytes queued to it */
    bool up_reused;        /* taken from the pool */
    bool up_eof;           /* it sent FIN */
    bool req_head_written; /* some request byte reached its socket */
    bool up_proven;        /* only a connection of up_owner proven alive (WG_POOL_PROVEN) */
    bool proven_counted;   /* session_unconfirmed_proven counted */
    bool held_doubt;       /* held because nothing proved the address (conn_session_doubt) */
    unsigned retries;
    uint64_t up_unconfirmed_ms; /* up_proven: how long Redis has not confirmed the session */

    /* the response */
    enum wg_http_framing resp_framing;
    bool resp_head_received;
    bool resp_head_sent;
    bool resp_keep_alive;

    /* times (loop ms) */
    uint64_t head_start_ms; /* first byte of the head */
    uint64_t req_start_ms;  /* for the access line's total_ms */
    uint64_t up_start_ms;
    uint64_t up_first_byte_ms;
    uint64_t last_up_read_ms;
    uint64_t last_up_write_ms;
    /* For the histograms (uv_hrtime(): finer than loop time, no syscall). */
    uint64_t head_ns; /* first byte of the head */
    uint64_t up_ns;   /* upstream connection taken */
    uint64_t wait_ns; /* hold started */

    /* for the access log and the counters */
    int status;
    uint32_t route_slot; /* row of px->route_rows the response is counted in; 0 "none" */
    uint64_t req_bytes_in;
    uint64_t resp_bytes_out;

    /* session routes */
    struct wg_sess_waiter waiter;
    struct wg_sess_entry *activity; /* the session counts as active while set */
    uint64_t wait_start_ms;
    uint64_t page_after_ms; /* held navigation: the waking page this long after the hold began */
    uint16_t session_port;
    /* A {port} route: the port name, lowercased; "" once resolved to
     * session_port from the session's template (conn_session_route). */
    char port_name[WG_PORT_NAME_MAX + 1];
    enum conn_req_class req_class;
    unsigned wake_class; /* WG_WAKE_NAVIGATION, _API or _WEBSOCKET */
    bool is_session;
    bool status_path;
    bool waited;
    bool held_on_session;      /* held for the session, not only for its record's read */
    bool held_wake;            /* held while its session was not running */
    uint64_t recheck_start_ms; /* the first refused connect to the running session, 0: none */
    uint64_t recheck_at_ms;    /* when the held request looks at its session again, 0: not */
    unsigned rechecks;
    bool hold_counted; /* held_released counted */
    bool ttfb_counted; /* upstream_latency (and wake_first_byte) observed */

    /* streams on session routes (conn_stream.c) */
    struct wg_sess_entry *stream_entry; /* the session's entry: the activity can begin again */
    struct wg_sess_stream stream;       /* told when the session leaves running */
    struct wg_ws_parser ws[2];          /* tunnel frames, by the side they come from */
    struct wg_ws_use ws_use[2];
    struct wg_sse_scan sse;
    uint64_t stream_after_ms;  /* the template's idle.stream_after; 0: streams always count */
    uint64_t stream_heartbeat; /* the template's idle.stream_heartbeat */
    uint64_t stream_max_ms;    /* the template's idle.stream_max; 0: no cap */
    uint64_t stream_start_ms;  /* the 101 or the response head */
    uint64_t stream_use_ms;    /* loop time of the stream's last use */
    bool resp_sse;             /* the response body is text/event-stream */
    bool stream_left;          /* its session left running: it never counts again */
    bool stream_logged;        /* a tunnel's access line was written */

    /* private session routes (conn_access.c) */
    enum conn_access access;
    bool access_by_template;    /* no credential, and the route leaves access to the template */
    bool access_redirect;       /* GET/HEAD with our token in the query: 303 to the URL without */
    bool access_set_cookie;     /* ... and the query's token becomes the cookie */
    uint64_t access_gen;        /* the credential's generation, checked against the cache's */
    int64_t access_expires;     /* the credential's expiry (s since the epoch) */
    struct wg_buf access_reply; /* the redirect's Location and Set-Cookie lines, or the
                                 * forward auth sub-request's fields */
    struct wg_fauth_req *fauth_req; /* the sub-request in flight */
    unsigned char fauth_key[32];    /* its credential's cache key */

    /* Set by exchange_init() to empty strings; not zeroed (size). */
    struct sockaddr_storage up_addr;
    char up_name[80];
    char up_owner[WG_POOL_OWNER_MAX + 1]; /* "" or "<session>/<container id>" */
    char log_method[16];
    char log_host[96];
    char log_path[256];
    char session_id[WG_SESSION_ID_MAX + 1];
    char status_url[128];

    struct exchange *next_free; /* in the loop's cache */
};

union peer_addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
};

/* What outlives an exchange: an idle keep-alive connection is this alone. */
struct wg_conn {
    uv_tcp_t client; /* first: handle callbacks cast back */
    uv_timer_t timer;
    struct wg_proxy *px;
    struct exchange *x; /* NULL while idle; in CS_HEAD set exactly once a head started */
    struct wg_list link;
    uint64_t id;
    int refs;
    enum conn_state state;
    bool closing;
    bool client_eof;
    bool reading_client;
    bool draining;          /* gateway shutting down: close after this response */
    bool close_after_flush; /* shut down once the client write queue is empty */
    bool in_process;        /* guards conn_request_process against re-entry */
    bool peer_trusted;
    bool client_shut_sent;
    struct wg_conn_tls *tls; /* NULL on a plain listener (conn_tls.c) */
    struct wg_h2 *h2;        /* HTTP/2 chosen by ALPN (conn_h2.c), else NULL */
    /* https as the client sees it: our TLS, or a stream of our HTTP/2 over
     * it (X-Forwarded-Proto, Secure cookies, HSTS) */
    bool https;
    /* One HTTP/2 stream's request, in memory (wg_conn_open_vstream): no
     * socket; its client side is the stream (NULL once detached). Counted
     * with the streams, not with the connections: conn_is_h2_stream(). */
    struct wg_h2_stream *vstream;
    uint64_t h2_parent;   /* an HTTP/2 stream's: the id of its connection; else 0 */
    int32_t h2_stream_id; /* h2_stream: its stream id there */
    unsigned requests;
    uint64_t up_gen;       /* changes with every upstream borrowed or given back */
    size_t client_pending; /* bytes queued to the client */
    struct wg_buf in;      /* client bytes not yet processed */

    /* times (loop ms) */
    uint64_t idle_since;
    uint64_t last_client_read_ms;
    uint64_t last_client_write_ms;
    uint64_t linger_start_ms;

    union peer_addr peer;
};

/* Loop time: no syscall. */
static inline uint64_t conn_now_ms(const struct wg_conn *c)
{
    return uv_now(c->px->loop);
}

static inline const struct wg_limits *conn_limits(const struct wg_conn *c)
{
    return &c->px->cfg->limits;
}

/* ---- conn.c ---- */

/* Takes an exchange for a head that starts now; NULL when out of memory. */
struct exchange *conn_exchange_get(struct wg_conn *c);
/* Ends the exchange: its buffers are released, the struct is cached. */
void conn_exchange_put(struct wg_conn *c);
/* Reached from client EOF/errors, timeouts, write failures, the end of a
 * linger, gateway shutdown and proxy free: idempotent. */
void conn_close(struct wg_conn *c);
/* Re-arms the timer for the earliest deadline of the current state. */
void conn_arm(struct wg_conn *c);
/* Starts or stops reading each side for the state and the queues. */
void conn_update_reading(struct wg_conn *c);
/* The size of the next read whose bytes are queued to `side`: what is left
 * under limits.buffer_high_water (at most the loop's read buffer), 0 when
 * nothing is. Reading stops at 0 (conn_update_reading), so a connection never
 * queues more than the mark plus a response head and chunk framing. */
size_t conn_read_room(struct wg_conn *c, int side);
/* Writes bufs to one side: straight to the socket when nothing is queued,
 * the rest copied into a write request. Failures are handled here; callers
 * check c->closing (and the upstream generation) afterwards. */
void conn_write(struct wg_conn *c, int side, uv_buf_t *bufs, unsigned nbufs);
void conn_write_str(struct wg_conn *c, int side, const char *s, size_t n);
/* Writes one body span with the given framing. */
void conn_write_body(struct wg_conn *c, int side, enum wg_http_framing framing, const char *at,
                     size_t len);
/* A held head never reached the client, so an error can still be answered
 * in its place. */
void conn_drop_held_head(struct wg_conn *c);
/* Sends a response head kept back for coalescing, if any. */
void conn_flush_held_head(struct wg_conn *c);
/* Half-closes a stream (FIN after the queued writes). Returns 0 or a
 * negative libuv error. */
int conn_shutdown(struct wg_conn *c, uv_stream_t *s);
/* FIN once our last response is flushed, then a linger. */
void conn_begin_close(struct wg_conn *c);
/* Our own response (errors, 404): always the last on the connection. */
void conn_send_error(struct wg_conn *c, int status);
/* Processes bytes kept in c->in after a state change made them usable. */
void conn_drain_inbuf(struct wg_conn *c);
/* Client bytes as read (plaintext: conn_tls.c hands its decrypted ones). */
void conn_client_bytes(struct wg_conn *c, const char *data, size_t n);
/* The client ended its side (FIN, or a TLS close_notify). */
void conn_client_eof(struct wg_conn *c);
/* Writes bytes to a side's socket as they are: conn_write() without the
 * held head, the counters or TLS (conn_tls.c writes its records here). */
void conn_write_raw(struct wg_conn *c, int side, uv_buf_t *bufs, unsigned nbufs);

/* ---- conn_h2.c: HTTP/2 over TLS (c->h2 set) ---- */

/* Whether c carries one HTTP/2 stream (connection ids start at 1). */
static inline bool conn_is_h2_stream(const struct wg_conn *c)
{
    return c->h2_parent != 0;
}

/* ALPN chose h2 when the handshake ended: an HTTP/2 session takes the
 * connection. Returns 0, or < 0 with the connection closed. */
int conn_h2_start(struct wg_conn *c);
/* One stream's request becomes a client connection of its own, with
 * parent's peer, over https, whose client side is the stream s. Returns
 * it, or NULL. */
struct wg_conn *wg_conn_open_vstream(struct wg_conn *parent, struct wg_h2_stream *s);
/* The stream holds n of our response bytes for its client: the
 * connection's send queue. */
void conn_vstream_pending(struct wg_conn *c, size_t n);
/* Plaintext from the client, for the session. */
void conn_h2_bytes(struct wg_conn *c, const char *data, size_t n);
/* Output left the socket: the session may produce more. */
void conn_h2_drained(struct wg_conn *c);

/* ---- conn_tls.c: the TLS record layer (c->tls set) ---- */

struct wg_conn_tls;
/* At accept: an SSL on memory BIOs. Returns 0 or UV_ENOMEM. */
int conn_tls_start(struct wg_conn *c);
/* With the connection's memory. NULL-safe (c->tls). */
void conn_tls_free(struct wg_conn *c);
/* Ciphertext read: the handshake, then plaintext to conn_client_bytes(). */
void conn_tls_read(struct wg_conn *c, const char *data, size_t n);
/* The size of the next ciphertext read, from the plaintext room len. */
size_t conn_tls_read_size(const struct wg_conn *c, bool to_up, size_t len);
/* Encrypts bufs (total bytes) and writes the records. */
void conn_tls_write(struct wg_conn *c, const uv_buf_t *bufs, unsigned nbufs, size_t total);
/* close_notify, written before the FIN. */
void conn_tls_close_notify(struct wg_conn *c);
/* Whether the handshake is not done yet (false on a plain connection). */
bool conn_tls_handshaking(const struct wg_conn *c);
/* The idle deadline passed: counted as a handshake timeout if it was one. */
void conn_tls_timed_out(struct wg_conn *c);
/* The exchange ended: large empty BIO buffers are given back. */
void conn_tls_trim(struct wg_conn *c);

/* ---- conn_request.c ---- */

/* Handles client bytes in data[0, len) for the current state. Returns how
 * many were used; the caller keeps the rest for later. */
size_t conn_request_process(struct wg_conn *c, const char *data, size_t len);
/* llhttp on_body of requests. */
int conn_on_request_body(llhttp_t *p, const char *at, size_t len);
/* Borrows a connection to x->up_addr (fresh: never a pooled one) and sends
 * the request once it is ready. */
void conn_connect_upstream(struct wg_conn *c, bool fresh);
/* The session's address is in doubt (WG_POOL_PROVEN found no proof): the
 * request is held until Redis confirms the session or the wake deadline,
 * when conn_session_doubt_expired() answers 503. conn_session.c. */
void conn_session_doubt(struct wg_conn *c);
void conn_session_doubt_expired(struct wg_conn *c);
/* Failure talking to the upstream: a retry, our error status, or a close. */
void conn_upstream_failed(struct wg_conn *c, int status, const char *why, bool retryable);
/* Gives the borrowed upstream connection back (pooled if reusable and
 * nothing is queued to it). NULL-safe on both c->x and the upstream. */
void conn_release_upstream(struct wg_conn *c, bool reusable);

/* ---- conn_response.c ---- */

extern const struct wg_upconn_reader conn_up_reader;
/* llhttp on_body of responses. */
int conn_on_response_body(llhttp_t *p, const char *at, size_t len);
/* The end of an exchange's response: the counters, then the access line. */
void conn_access_log(struct wg_conn *c);
/* The counters alone (a 101, whose line waits for the tunnel's end). */
void conn_access_count(struct wg_conn *c);
/* The access line alone; a tunnel's says how long it lasted. */
void conn_access_line(struct wg_conn *c);
/* The response is complete: the next exchange starts, or the connection
 * closes. */
void conn_finish_exchange(struct wg_conn *c);

/* ---- conn_session.c ---- */

/* Fills the exchange's session facts from the route match. Returns false
 * when the request was answered (bad id, no session support). */
bool conn_session_prepare(struct wg_conn *c, const struct wg_route_match *m);
/* Looks at the session and acts: proxy, wait, wake, or answer. Runs when
 * the head is parsed and again each time the session's entry changes. */
void conn_session_route(struct wg_conn *c);
/* A navigation held past its template's page_after: the waking page (or
 * the app, when the session runs by now). */
void conn_session_page_due(struct wg_conn *c);
/* The request leaves its hold for a wake (counted once). */
void conn_hold_end(struct wg_conn *c, enum wg_proxy_hold_outcome outcome);
/* No longer waiting on the session's entry. Idempotent. */
void conn_session_unwait(struct wg_conn *c);
/* A connect to the running session's upstream failed (why: for the log)
 * before anything was sent: the request is held and looks at its session
 * again after a backoff, within sessions.upstream_recheck. Returns false
 * (the caller answers) when it cannot be held. */
bool conn_session_recheck(struct wg_conn *c, const char *why);
/* The recheck's time came: the session is looked up again. */
void conn_session_recheck_due(struct wg_conn *c);
/* The exchange no longer keeps its session active. Idempotent. */
void conn_activity_end(struct wg_conn *c);

/* A response of our own that may keep the connection (status JSON, the
 * waking page, 401, the link's redirect, OPTIONS *); extra holds whole
 * "Name: value\r\n" header lines or is NULL; no body for HEAD. */
void conn_send_local(struct wg_conn *c, int status, const char *ctype, const char *extra,
                     const char *body, size_t body_len);

/* ---- conn_access.c ---- */

/* Finds our credentials in the head (query, header, cookies) while its
 * fields are readable and sets x->access: no Redis, no lookup. */
void conn_access_prepare(struct wg_conn *c, const struct wg_route_match *m);
/* The 401 of a private route: the sign-in page for a navigation, JSON
 * otherwise; the same bytes whether or not the session exists. */
void conn_access_deny(struct wg_conn *c);
/* Whether v's record belongs to a template that says access: public. */
bool conn_access_template_open(struct wg_conn *c, const struct wg_sess_view *v);
/* With the session's view: true when the request may go on; otherwise it
 * was answered (401, or the redirect that sets the cookie). */
bool conn_access_check(struct wg_conn *c, const struct wg_sess_view *v);
/* ACCESS_FORWARD, before any lookup: true when the service (or its cached
 * answer) allowed; otherwise the request was answered or waits for the
 * sub-request, whose end runs conn_session_route() again. */
bool conn_access_forward(struct wg_conn *c);
/* Ends a sub-request in flight without its answer. Idempotent. */
void conn_access_cancel(struct wg_conn *c);

/* ---- conn_stream.c ---- */

/* The exchange was proxied to v's session with activity: it becomes a
 * stream of that session (the template's stream settings, the session
 * cache's notice when the session leaves running). */
void conn_stream_begin(struct wg_conn *c, const struct wg_sess_view *v);
/* No longer a stream of its session; a tunnel's access line is written.
 * Reached from conn_close, conn_finish_exchange and conn_exchange_put:
 * idempotent. */
void conn_stream_end(struct wg_conn *c);
/* The stream starts (a 101, a response head): its quiet time runs from now. */
void conn_stream_started(struct wg_conn *c);
/* A response head while its fields are readable: SSE or not, and started. */
void conn_stream_response_head(struct wg_conn *c);
/* The stream carried use now (it counts again if it had stopped). */
void conn_stream_used(struct wg_conn *c);
/* Tunnel bytes from side, before they go to the other side. */
void conn_stream_tunnel_bytes(struct wg_conn *c, int side, const char *data, size_t len);
/* A span of a streamed response body. */
void conn_stream_body(struct wg_conn *c, const char *at, size_t len);
/* When the stream stops counting (UINT64_MAX: it does not). */
uint64_t conn_stream_deadline(const struct wg_conn *c);
/* That deadline passed: the stream no longer counts as activity. */
void conn_stream_quiet(struct wg_conn *c);

/* ---- conn_decide.c: pure, no I/O ---- */

/* The class of a request for a session that is not running, decided while
 * the head's fields are readable: non-waking user agents and paths are
 * probes; a WebSocket is held; Sec-Fetch-Mode navigate, or (without
 * Sec-Fetch-Mode) a GET accepting text/html, is a navigation; the rest is
 * held. */
enum conn_req_class conn_classify(const struct wg_config *cfg, const struct wg_http_msg *req);
/* Which class of a template's wake_on the request is: a WebSocket
 * (Upgrade, or Sec-Fetch-Mode: websocket), a navigation (Sec-Fetch-Mode
 * navigate or nested-navigate; without it Sec-Fetch-Dest document, iframe
 * or frame; without either a GET accepting text/html), else an API call. */
unsigned conn_wake_class(const struct wg_http_msg *req);

/* What a request on a session route gets. */
enum conn_session_action {
    SA_PROXY,  /* running: to its upstream */
    SA_WAIT,   /* the record is being read: wait for it, no wake */
    SA_HOLD,   /* (wake,) then hold until the session runs */
    SA_PAGE,   /* (wake,) then the waking page */
    SA_STATUS, /* the status JSON: status, state */
    SA_ERROR,  /* our error response: status */
};

struct conn_session_facts {
    enum wg_sess_status status;  /* the cache's view */
    enum wg_session_state state; /* READY and NOT_RUNNING */
    int64_t failed_for_ms;       /* NOT_RUNNING in failed: time since it failed */
    enum conn_req_class req_class;
    bool status_path; /* .../_wakegate/status */
    bool waited;      /* held before: a look again after a change */
    bool no_wake;     /* the template's wake_on leaves out the request's class */
    bool page_after;  /* the template holds a navigation before its page (page_after > 0) */
    bool confirmed;   /* READY: Redis confirms the entry now */
};

struct conn_session_decision {
    enum conn_session_action action;
    int status;        /* SA_STATUS, SA_ERROR */
    const char *state; /* SA_STATUS, SA_PAGE: the state shown (static) */
    bool wake;         /* SA_HOLD, SA_PAGE: send a wake first; 503 when it cannot go */
    bool activity;     /* SA_PROXY: the exchange keeps the session active */
    bool proven_only;  /* SA_PROXY: only while a connection opened when the entry was
                        * confirmed proves the address (WG_POOL_PROVEN); none: held
                        * for Redis (conn_session_doubt) */
    bool suppressed;   /* could have woken the session and must not */
    bool page_later;   /* SA_HOLD of a navigation: the waking page after page_after */
};

void conn_decide_session(const struct conn_session_facts *f, struct conn_session_decision *d);

#define CONN_RECHECK_FIRST_MS 100 /* then doubled, up to CONN_RECHECK_MAX_MS */
#define CONN_RECHECK_MAX_MS 1000
/* When a request whose connect to its running session failed looks at the
 * session again: rechecks earlier looks since the first failure at
 * start_ms, now is the clock, bound is sessions.upstream_recheck. Returns
 * that time, or 0 when it is not held (bound 0, or past it: a 502). */
uint64_t conn_recheck_at(uint64_t start_ms, uint64_t now, unsigned rechecks, uint64_t bound);

#endif
