/* admin/listener_int.h - what the files of the admin listener share:
 * listener.c (the listener, its registrations, dispatch), listener_auth.c
 * (the token check, pure), listener_conn.c
 * (a connection: reading, parsing, writing, closing) and listener_reply.c
 * (how a handler answers a request). Not an API: only those files include
 * it.
 *
 * Ownership, written down once:
 * - A connection counts its open handles and write requests in flight
 *   (refs); its memory is freed when that reaches zero. admin_conn_close()
 *   only marks and starts the closes.
 * - A request handed to an async handler is a struct wg_admin_req, owned by
 *   the handler until it finishes it. The connection points at it (ac->req)
 *   and it at the connection (req->ac) while both live; when the connection
 *   closes first the two are unlinked (req->ac = NULL: "dead") and the
 *   handler's cancel callback runs. A dead request never touches a
 *   connection, so it may outlive the connection and the admin itself.
 * - The cancel callback never runs inside a wg_admin_* call made with the
 *   request: those calls unlink the request before anything that can close
 *   the connection, and report a failure by their return value. */
#ifndef WG_ADMIN_LISTENER_INT_H
#define WG_ADMIN_LISTENER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "admin/listener.h"
#include "common/buf.h"
#include "common/http_head.h"
#include "common/list.h"

#define ADMIN_SUBSYS "admin"
#define ADMIN_MAX_HOOKS 16
#define ADMIN_IDLE_MS 30000
#define ADMIN_HEAD_MAX 1024 /* our own response heads, without extra headers */

struct ready_hook {
    wg_admin_ready_fn *fn;
    void *arg;
};
struct metrics_hook {
    wg_admin_metrics_fn *fn;
    void *arg;
};
struct handler_hook {
    char *prefix;
    wg_admin_async_fn *afn;
    void *arg;
};
struct read_route {
    char *pattern;
    void *arg;
};

/* The refusals counted on /metrics, by reason. */
enum admin_refusal { REFUSED_MISSING = 0, REFUSED_INVALID, REFUSED_READ_ONLY, REFUSED_N };

struct wg_admin {
    uv_loop_t *loop;
    const struct wg_config *cfg;
    struct wg_log *log;
    uv_tcp_t listener;
    bool listening;
    bool draining;
    bool freeing;
    int open_handles;
    struct wg_list conns;
    llhttp_settings_t settings;
    struct ready_hook ready[ADMIN_MAX_HOOKS];
    size_t nready;
    struct metrics_hook metrics[ADMIN_MAX_HOOKS];
    size_t nmetrics;
    struct handler_hook handlers[ADMIN_MAX_HOOKS];
    size_t nhandlers;
    struct read_route read_routes[ADMIN_MAX_HOOKS];
    size_t nread_routes;
    uint64_t refused[REFUSED_N];
    struct wg_http_field fields[128];
};

struct admin_conn {
    uv_tcp_t tcp; /* first */
    uv_timer_t timer;
    struct wg_admin *admin;
    struct wg_list link;
    int refs;
    bool closing;
    bool head_done;
    llhttp_t parser;
    struct wg_http_msg msg;
    struct wg_http_scan scan;
    struct wg_buf in;
    struct wg_buf body;
    char method[16];
    char target[1024];
    bool keep_alive;
    uint8_t minor;
    enum wg_admin_auth auth; /* the token check of the request's head */
    bool has_last_event_id;
    size_t last_event_id_len;
    char last_event_id[WG_ADMIN_LAST_EVENT_ID_MAX + 1];
    struct wg_admin_req *req; /* owned by a handler, not answered yet */
    bool in_dispatch;         /* a handler is running on our stack */
    bool resume;              /* the timer's next run processes buffered input */
    bool close_when_drained;  /* close once queued reaches 0 */
    size_t queued;            /* bytes in write requests in flight */
};

struct wg_admin_req {
    struct admin_conn *ac; /* NULL once dead */
    wg_admin_cancel_fn *cancel;
    void *cancel_arg;
    bool head_only;
    bool streaming;
    bool chunked;
};

/* ---- listener.c ---------------------------------------------------------------------------- */

/* The token check of the request whose method and target ac holds;
 * authz is the Authorization value (NULL when absent). */
enum wg_admin_auth admin_auth_of(const struct admin_conn *ac, const char *authz, size_t len);
/* Answers the complete request in ac (its head fields already taken). */
void admin_dispatch(struct admin_conn *ac);
/* Frees the admin once it is being freed and nothing of it is open. */
void admin_maybe_free(struct wg_admin *a);
/* Appends s to out as the body of a JSON string, without quotes. */
void admin_json_escape(struct wg_buf *out, const char *s);

/* ---- listener_conn.c ----------------------------------------------------------------------- */

/* Fills the llhttp settings every connection of the admin parses with. */
void admin_conn_settings(llhttp_settings_t *settings);
/* The listener's connection callback. */
void admin_conn_accept(uv_stream_t *server, int status);
/* Reached from errors, EOF, idle timeout, Connection: close after the last
 * write, a slow stream reader, and wg_admin_free(); idempotent. */
void admin_conn_close(struct admin_conn *ac);
/* Asks the connection to close once everything queued has been written. */
void admin_conn_close_when_drained(struct admin_conn *ac);
/* Unlinks the pending request, if any: it is dead from now on. */
struct wg_admin_req *admin_conn_unlink_req(struct admin_conn *ac);
/* Queues the concatenation of parts (copied). Returns 0, or -EPIPE when the
 * connection is closing or the write could not start; never closes the
 * connection itself (the caller decides, after unlinking what it must). */
int admin_conn_write(struct admin_conn *ac, const uv_buf_t *parts, size_t nparts);
/* A whole response with Content-Length framing. headers: extra lines or
 * NULL. Closes the connection when the write fails, or once it is written
 * when close_after. */
void admin_conn_send(struct admin_conn *ac, int status, const char *ctype, const char *headers,
                     const char *body, size_t body_len, bool head_only, bool close_after);
/* A plain-text error, then the close: for requests that never reached a
 * handler. */
void admin_conn_error(struct admin_conn *ac, int status);
/* After an async answer: go on with what the client pipelined, from the
 * loop, not from the handler's stack. */
void admin_conn_answered(struct admin_conn *ac);

#endif
