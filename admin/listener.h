/* admin/listener.h - the admin listener: a small HTTP/1.1 server, separate
 * from the public one, for /healthz (liveness), /readyz (readiness),
 * /metrics and the admin API under /v1/. It knows no part of wakegate: the
 * parts that own a readiness condition, a metrics family or a path register
 * it here (the binary wires them, src/).
 *
 * The public listener never routes here, whatever the Host.
 *
 * Authentication. Every path under /v1/ (and /v1 itself) needs
 * "Authorization: Bearer <token>", with one of two tokens, each compared in
 * constant time (both are compared on every request):
 * - the admin token (admin.token, admin.token_file, WAKEGATE_ADMIN_TOKEN)
 *   allows everything;
 * - the read-only token (admin.read_token_file, WAKEGATE_ADMIN_READ_TOKEN)
 *   allows GET and HEAD on the read routes that handlers declare
 *   (wg_admin_add_read_route()) and nothing else: on any other method or
 *   route it gets 403 {"error":"token is read-only: ..."}. A route nobody
 *   declared needs the admin token, so a new write route is admin-only
 *   without anyone thinking of it.
 * Missing or wrong token: 401 with WWW-Authenticate. When neither token is
 * configured, /v1/ is refused with 503 "admin token not configured" - even
 * from loopback: the API can start containers with host bind mounts, so it
 * is never open by accident. /healthz, /readyz, /metrics and the dashboard's
 * files need no token. Refusals are counted by reason
 * (wakegate_admin_auth_failures_total, on /metrics).
 *
 * /readyz answers 200 when every registered check holds, in the order they
 * were registered (the first that fails gives the reason), and 503 "shutting
 * down" after wg_admin_set_draining(). /metrics is the concatenation of the
 * registered writers' text, in the order they were registered: each family
 * must come from exactly one of them.
 *
 * Requests on one connection are answered in order, one at a time: while a
 * handler has not answered, later pipelined requests wait in the connection's
 * buffer and the idle timeout is off (the handler owns the deadline). */
#ifndef WG_ADMIN_LISTENER_H
#define WG_ADMIN_LISTENER_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "common/buf.h"
#include "common/config.h"
#include "common/log.h"

struct wg_admin;     /* opaque */
struct wg_admin_req; /* opaque: one request handed to an async handler */

/* Bytes a streamed response may have queued to a client that does not
 * read; a write past it drops the client (wg_admin_stream_write()). */
#define WG_ADMIN_STREAM_QUEUE_MAX (1024 * 1024)
/* Request bodies larger than this are refused with 413. */
#define WG_ADMIN_BODY_MAX (1024 * 1024)
/* Bytes of Last-Event-ID kept; a longer value is passed on as invalid. */
#define WG_ADMIN_LAST_EVENT_ID_MAX 63

/* Readiness: return true when ready; else write a short reason. */
typedef bool wg_admin_ready_fn(void *arg, char *why, size_t whylen);
/* Appends Prometheus text exposition lines to out. */
typedef void wg_admin_metrics_fn(void *arg, struct wg_buf *out);

/* A request as the handler sees it. Spans are not NUL-terminated and are
 * valid only during the handler call: copy what you keep. */
struct wg_admin_request {
    const char *method;
    size_t method_len;
    const char *path; /* without the query */
    size_t path_len;
    const char *query; /* after '?', or NULL */
    size_t query_len;
    const char *body;
    size_t body_len;
    /* The Last-Event-ID header, or NULL. A value longer than
     * WG_ADMIN_LAST_EVENT_ID_MAX is given as "" (len 0, non-NULL). */
    const char *last_event_id;
    size_t last_event_id_len;
};

/* An async handler. From this call on it owns req and must finish it exactly
 * once, now or later: wg_admin_respond*() or, after wg_admin_stream_begin(),
 * wg_admin_stream_end(). The connection stays open meanwhile. If the client
 * goes away first (EOF, error, the admin is freed), req is marked dead, the
 * cancel callback (wg_admin_req_on_cancel) runs once from the loop, and the
 * eventual finish only frees req: nothing is sent. */
typedef void wg_admin_async_fn(void *arg, struct wg_admin_req *req,
                               const struct wg_admin_request *info);
/* Runs at most once, never inside a wg_admin_* call made with req. It may
 * finish req. */
typedef void wg_admin_cancel_fn(struct wg_admin_req *req, void *arg);

/* cfg and log must outlive it. */
int wg_admin_new(uv_loop_t *loop, const struct wg_config *cfg, struct wg_log *log,
                 struct wg_admin **ret_admin);
/* Binds cfg->admin_listen; *ret_port (may be NULL) gets the bound port. */
int wg_admin_listen(struct wg_admin *admin, int *ret_port);
/* Adds a readiness condition; all must hold for /readyz to answer 200.
 * 0 or -ENOSPC. */
int wg_admin_add_ready_check(struct wg_admin *admin, wg_admin_ready_fn *fn, void *arg);
/* Adds a writer of /metrics text after those registered before. 0 or
 * -ENOSPC. */
int wg_admin_add_metrics(struct wg_admin *admin, wg_admin_metrics_fn *fn, void *arg);
/* Serves requests whose path starts with prefix; the first registered match
 * wins. */
int wg_admin_add_async_handler(struct wg_admin *admin, const char *prefix, wg_admin_async_fn *fn,
                               void *arg);
/* Declares a read route: GET and HEAD of paths matching pattern (see
 * wg_admin_route_match()) accept the read-only token too. Registered with
 * arg like a handler, and removed with it. 0, -ENOSPC or -ENOMEM. */
int wg_admin_add_read_route(struct wg_admin *admin, const char *pattern, void *arg);
/* Removes every ready check, metrics hook, handler and read route registered with arg,
 * so that arg may be freed while the admin lives on. Requests already handed
 * to an async handler stay its own. */
void wg_admin_remove_hooks(struct wg_admin *admin, const void *arg);
/* From now on /readyz answers 503 "shutting down". */
void wg_admin_set_draining(struct wg_admin *admin);
/* Closes the listener and connections (their pending requests are cancelled
 * first, see wg_admin_async_fn); frees itself when they are closed. After it
 * no handler is called again. */
void wg_admin_free(struct wg_admin *admin);

/* ---- async requests ----------------------------------------------------- */

/* False once the client has gone (the answer would be dropped). */
bool wg_admin_req_alive(const struct wg_admin_req *req);
/* Sets (or with fn NULL clears) the cancel callback. */
void wg_admin_req_on_cancel(struct wg_admin_req *req, wg_admin_cancel_fn *fn, void *arg);

/* Finishes req with a whole response (Content-Length framing; no body for
 * HEAD). headers: extra "Name: value\r\n" lines, or NULL. Frees req. */
void wg_admin_respond(struct wg_admin_req *req, int status, const char *content_type,
                      const char *body, size_t len);
void wg_admin_respond_headers(struct wg_admin_req *req, int status, const char *content_type,
                              const char *headers, const char *body, size_t len);
/* JSON {"error": msg} with the given status; headers as above. Frees req. */
void wg_admin_respond_error(struct wg_admin_req *req, int status, const char *headers,
                            const char *msg);

/* Starts a streamed response: chunked to HTTP/1.1 clients, delimited by
 * closing the connection for HTTP/1.0 ones. headers as above. Returns 0, or
 * -EPIPE when the client is gone (req still needs wg_admin_stream_end()). */
int wg_admin_stream_begin(struct wg_admin_req *req, int status, const char *content_type,
                          const char *headers);
/* Queues data (copied). Returns 0, or -EPIPE when the client is gone - also
 * when this write would take the bytes queued to the client past
 * WG_ADMIN_STREAM_QUEUE_MAX: the slow client is then dropped. A failure
 * reported here is not reported again through the cancel callback. */
int wg_admin_stream_write(struct wg_admin_req *req, const void *data, size_t len);
/* Bytes queued to the client and not yet taken by the kernel. */
size_t wg_admin_stream_queued(const struct wg_admin_req *req);
/* Ends the stream (last chunk, or the close for HTTP/1.0). Frees req. */
void wg_admin_stream_end(struct wg_admin_req *req);

/* ---- the token check (listener_auth.c; pure) ---------------------------- */

/* Whether an Authorization value (len bytes, trimmed) is "Bearer <token>"
 * (scheme case-insensitive) with token equal to `token`, compared in time
 * independent of where they differ. False when token is NULL or "". */
bool wg_admin_bearer_ok(const char *token, const char *value, size_t len);

/* The token a request needs. */
enum wg_admin_scope {
    WG_ADMIN_SCOPE_NONE = 0, /* outside /v1: no token */
    WG_ADMIN_SCOPE_READ,     /* either token */
    WG_ADMIN_SCOPE_ADMIN,    /* the admin token only */
};

/* The outcome of the check, in the order it is made. */
enum wg_admin_auth {
    WG_ADMIN_AUTH_OK = 0,
    WG_ADMIN_AUTH_NOT_CONFIGURED, /* 503: no token configured at all */
    WG_ADMIN_AUTH_MISSING,        /* 401: no Authorization header */
    WG_ADMIN_AUTH_INVALID,        /* 401: neither token */
    WG_ADMIN_AUTH_READ_ONLY,      /* 403: the read-only token on an admin request */
};

/* The configured tokens; NULL or "" for none. */
struct wg_admin_tokens {
    const char *admin;
    const char *read;
};

/* Whether path (path_len bytes, no query) matches a read-route pattern:
 * the same bytes, where a segment "{name}" stands for one non-empty
 * segment ("/v1/sessions/{id}" matches "/v1/sessions/a", not
 * "/v1/sessions/a/wake" nor "/v1/sessions/"). */
bool wg_admin_route_match(const char *pattern, const char *path, size_t path_len);
/* NONE outside /v1; READ for GET or HEAD of a path matching one of the
 * nread patterns; ADMIN for everything else. */
enum wg_admin_scope wg_admin_scope_for(const char *method, size_t method_len, const char *path,
                                       size_t path_len, const char *const *read_routes,
                                       size_t nread);
/* The decision for a request that needs `need`, carrying authz (the
 * Authorization value, authz_len bytes; NULL when absent). */
enum wg_admin_auth wg_admin_auth_decide(const struct wg_admin_tokens *tokens,
                                        enum wg_admin_scope need, const char *authz,
                                        size_t authz_len);
/* Both steps: method (NUL-terminated) + path + presented header. */
enum wg_admin_auth wg_admin_auth_check(const struct wg_admin_tokens *tokens,
                                       const char *const *read_routes, size_t nread,
                                       const char *method, const char *path, size_t path_len,
                                       const char *authz, size_t authz_len);
/* The HTTP status of a refusal (0 for WG_ADMIN_AUTH_OK). */
int wg_admin_auth_status(enum wg_admin_auth a);

#endif
