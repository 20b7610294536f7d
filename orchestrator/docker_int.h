/* orchestrator/docker_int.h - what the files of the Docker client share.
 * Not an API: nothing outside orchestrator/docker*.c (and its unit test)
 * includes it.
 *
 * The files, one job each:
 *   docker.c            the client's lifetime (options, new, free) and the
 *                       public calls: each builds a request and decodes its
 *                       answer in a finish function
 *   docker_transport.c  requests on libcurl multi driven by the libuv loop:
 *                       queueing, sending, sockets and timers, the name
 *                       lookup and the API version negotiation, errors
 *   docker_json.c       pure: what may go into a request (ids, names, text),
 *                       the request bodies and the JSON answers' decoders
 *   docker_wire.c       pure: the answers below JSON (the Api-Version header
 *                       and the version to use, the multiplexed output
 *                       stream, the output tail, line splitting)
 *   docker_events.c     the /events stream
 *   docker_exec.c       exec: create, start attached, inspect
 *   docker_network.c    session networks: list by name, create, the
 *                       rules one must meet
 *
 * Ownership, written down once:
 * - d owns three handles (curl_timer: curl's timeout; wake: delayed
 *   requests and the name lookup's deadline; defer: work for the next loop
 *   turn), one struct docker_sock per socket curl asked us to watch, and,
 *   while a name lookup runs, one uv_getaddrinfo_t. d->refs counts them; d
 *   is freed when the count reaches 0 after wg_docker_free(). So d outlives
 *   every callback that runs inside a loop turn, and code that calls out to
 *   user code only re-checks d->closed afterwards (our `disposed` guard).
 * - A struct docker_sock is freed only in its poll handle's close callback.
 * - A struct docker_req is on at most one of d's lists (queued, active,
 *   delayed), as q->where says. It is unlinked before its outcome is
 *   delivered, so a callback never sees it on a list. An exec call is a
 *   struct docker_exec that runs its three steps as requests one after the
 *   other; it is freed when its outcome is delivered.
 *
 * curl facts the transport relies on:
 * - While curl runs one of our callbacks (socket, timer, write, header),
 *   curl_multi_add_handle/remove_handle/cleanup must not be called: they
 *   answer CURLM_RECURSIVE_API_CALL. User code runs inside curl only from
 *   the events stream's data and head hooks; there d->in_curl is set, new
 *   calls are queued for the `defer` handle (they always are), a stopped
 *   stream is removed by `defer`, and wg_docker_free() leaves the curl
 *   teardown to the transport, after curl returns.
 * - curl_multi_remove_handle() drops the handle's pending DONE message, so
 *   a request removed while messages are read is never seen again.
 * - curl tells the socket callback CURL_POLL_REMOVE before it closes a
 *   socket, so a uv_poll handle never watches a closed descriptor.
 * - libuv stops a poll handle after an error (EPOLLERR) and reports
 *   UV_EBADF; we hand curl the readiness it waited for plus
 *   CURL_CSELECT_ERR, so it reads or writes, meets the real error and
 *   reports it, and we re-arm the handle if curl still wants it. */
#ifndef WG_ORCHESTRATOR_DOCKER_INT_H
#define WG_ORCHESTRATOR_DOCKER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <jansson.h>
#include <uv.h>

#include "common/buf.h"
#include "common/docker_host.h"
#include "common/list.h"
#include "common/utf8.h"
#include "orchestrator/docker.h"

#define DOCKER_SUBSYS "docker"
#define DOCKER_QUOTED_MAX 300
#define DOCKER_VERSION_MAX 16
#define DOCKER_MESSAGE_MAX 512
#define DOCKER_ERROR_MAX 1024
#define DOCKER_TEXT_MAX WG_TEXT_MAX /* one string of a create spec, exec argv... */
#define DOCKER_CANCELED_TEXT "canceled: the Docker client is shutting down"

/* ---- types --------------------------------------------------------------------------------- */

enum neg {
    NEG_NONE,      /* version unknown; the first versioned call starts negotiation */
    NEG_RESOLVING, /* [transient] uv_getaddrinfo for a tcp host name */
    NEG_PINGING,   /* [transient] the negotiation ping is in flight */
    NEG_DONE,      /* d->version holds the version */
};

enum req_kind {
    RK_PING,
    RK_VERSION,
    RK_CREATE,
    RK_START,
    RK_STOP,
    RK_PAUSE,
    RK_UNPAUSE,
    RK_INSPECT,
    RK_REMOVE,
    RK_LIST,
    RK_LOGS,
    RK_EXEC_CREATE,
    RK_EXEC_START,
    RK_EXEC_INSPECT,
    RK_EVENTS,
    RK_NETWORK_LIST,
    RK_NETWORK_CREATE,
    RK_STATS,
};

enum req_where { RQ_NONE, RQ_QUEUED, RQ_ACTIVE, RQ_DELAYED };

struct docker_req;
struct docker_exec;
/* Settles a request whose transfer ended: decodes the answer into r and
 * delivers it (or, for an exec step, goes on with the next step). */
typedef void docker_finish_fn(struct docker_req *q, int status, struct wg_docker_reply *r);
/* The body bytes of a streamed call's 2xx answer. Returns 0 to go on; < 0
 * aborts the transfer as an overflow (-EMSGSIZE, -ENOMEM); > 0 aborts it
 * quietly (the stream was stopped). */
typedef int docker_data_fn(struct docker_req *q, const char *p, size_t n);
/* The head of a streamed call's 2xx answer is complete. Returns false to
 * abort the transfer (the stream was stopped). */
typedef bool docker_head_fn(struct docker_req *q);

struct docker_req {
    struct wg_list node;
    struct wg_docker *d;
    /* Texts a finishing request builds for its reply: they must outlive the
     * finish function's frame while the reply is delivered. */
    char finish_msg[DOCKER_MESSAGE_MAX];
    char finish_error[DOCKER_ERROR_MAX];
    enum req_kind kind;
    enum req_where where;
    uint64_t seq;
    const char *method;
    char *path; /* unversioned, with query */
    char *sent; /* as sent (versioned), once active */
    char *body; /* request body, or NULL */
    size_t body_len;
    CURL *easy;
    struct curl_slist *hdrs;
    struct curl_slist *resolve;
    uint32_t timeout_ms;   /* 0: none */
    uint64_t deadline;     /* uv_now() ms; 0: none */
    uint64_t not_before;   /* RQ_DELAYED: when to queue it */
    uint64_t t_sent;       /* uv_hrtime() */
    uint32_t timeout_used; /* what curl was given, ms (0: none) */
    long code;             /* response status, once known */
    struct wg_buf resp;    /* JSON body, error body, or the events line */
    struct wg_buf out;     /* logs, exec start: output tail */
    bool out_truncated;
    struct wg_docker_demux dm;
    bool versioned, ok_304, streamed;
    bool overflow;  /* a cap was hit; the write callback aborted */
    bool canceled;  /* events stream stopped; no callback runs */
    bool delivered; /* the outcome went out (free cancels the rest) */
    bool internal;  /* the negotiation ping */
    bool opened;    /* events: OPEN went out */
    char errbuf[CURL_ERROR_SIZE];
    char server_version[DOCKER_VERSION_MAX];
    char ref[WG_DOCKER_REF_MAX + 1]; /* what a finish function must know of the call
                                        (network list: the exact name) */
    docker_finish_fn *finish;
    docker_data_fn *on_data; /* streamed 2xx body; NULL: output (demultiplexed tail) */
    docker_head_fn *on_head; /* streamed 2xx head complete; NULL: nothing */
    size_t data_cap;         /* the cap on_data enforces, for the overflow message */
    size_t body_cap;         /* a body cap of its own (the running list); 0: d->max_body */
    wg_docker_cb *cb;
    void *arg;
    struct docker_exec *op;
    wg_docker_event_cb *ev_cb;
};

struct docker_sock {
    uv_poll_t poll;
    struct wg_docker *d;
    curl_socket_t fd;
    int events; /* UV_READABLE | UV_WRITABLE as curl wants */
    bool closing;
    struct wg_list node; /* d->socks */
};

struct wg_docker {
    uv_loop_t *loop;
    struct wg_log *log;
    struct wg_docker_host h;
    char *tls_ca, *tls_cert, *tls_key;
    bool tls_skip_verify;
    int max_major, max_minor;
    uint32_t timeout_ms, connect_timeout_ms;
    size_t max_body, max_output;
    char qhost[DOCKER_QUOTED_MAX];

    CURLM *multi;
    uv_timer_t curl_timer;
    uv_timer_t wake;
    uv_idle_t defer;
    uv_getaddrinfo_t gai;
    bool gai_busy;
    unsigned refs;
    int in_curl;  /* inside curl_multi_socket_action() */
    bool closed;  /* wg_docker_free() ran */
    bool torn;    /* curl and the handles are being released */
    bool tearing; /* inside curl_multi_cleanup() */

    enum neg neg;
    char version[DOCKER_VERSION_MAX];
    char *resolve_entry; /* "name:port:addr[,addr]" for CURLOPT_RESOLVE */
    uint64_t resolve_deadline;

    struct wg_list queued, active, delayed, socks;
    uint64_t seq;
};

/* ---- docker.c ------------------------------------------------------------------------------ */

/* Makes a request for path (taken) and submits it, or, with ret, hands it
 * back for the caller to adjust and submit. Returns 0 when cb will run (or
 * *ret is set), -EINVAL (no d), -ECANCELED (d is being freed) or -ENOMEM. */
int docker_call(struct wg_docker *d, enum req_kind kind, const char *method, char *path,
                docker_finish_fn *finish, wg_docker_cb *cb, void *arg, struct docker_req **ret);

/* docker_call() with a JSON body (consumed, as path is), submitted at
 * once. Returns as docker_call() does. */
int docker_call_json(struct wg_docker *d, enum req_kind kind, const char *method, char *path,
                     json_t *body, docker_finish_fn *finish, wg_docker_cb *cb, void *arg);

/* Drops one reference (a handle or the name lookup); the last frees d. Only
 * reachable after docker_teardown(). */
void docker_release(struct wg_docker *d);

/* ---- docker_transport.c -------------------------------------------------------------------- */

/* Sets up curl's multi handle and d's three handles (d->refs counts them).
 * Returns 0, or -ENOMEM with the reason in err. */
int docker_transport_init(struct wg_docker *d, char *err, size_t errlen);
/* Delivers -ECANCELED to every request not settled yet: wg_docker_free(). */
void docker_cancel_all(struct wg_docker *d);
/* Releases curl and closes every handle; idempotent. Never inside curl. */
void docker_teardown(struct wg_docker *d);

/* A request of kind for path (taken, freed on failure). NULL when out of
 * memory. The timeout is d's; the caller may adjust q before submitting. */
struct docker_req *docker_req_new(struct wg_docker *d, enum req_kind kind, const char *method,
                                  char *path, docker_finish_fn *finish, wg_docker_cb *cb,
                                  void *arg);
/* Takes a JSON body (consumed). Returns 0 or -ENOMEM. */
int docker_req_set_json(struct docker_req *q, json_t *body);
void docker_req_free(struct docker_req *q);
/* Queues q for the next loop turn. Returns 0, or -ECANCELED (q untouched;
 * the caller frees it). */
int docker_submit(struct docker_req *q);
/* Queues q after ms. */
void docker_delay(struct docker_req *q, uint32_t ms);
/* Ends a request that must not call back (a stopped events stream): frees
 * it now, or, inside curl, on the next loop turn. */
void docker_req_stop(struct docker_req *q);
/* Hands r to q's callback, once. */
void docker_deliver(struct docker_req *q, int status, const struct wg_docker_reply *r);
/* "METHOD PATH: STATUS MESSAGE" (the status only when it is an HTTP one). */
void docker_format_error(char *out, size_t outlen, const struct wg_docker_reply *r, int status);
/* Closes a streamed output (logs, exec start): bytes held while detecting
 * the stream's framing were raw output. */
void docker_output_end(struct docker_req *q);
/* The finish function of a ping: negotiates the version, then delivers. */
void docker_finish_ping(struct docker_req *q, int status, struct wg_docker_reply *r);
/* wg_log_quote() of a NUL-terminated string. */
const char *docker_quote(char *dst, size_t dstlen, const char *s);

/* ---- docker_json.c (pure) ------------------------------------------------------------------ */

/* The string member key of o, or "" (absent, not a string, o not an
 * object). */
const char *docker_json_str(const json_t *o, const char *key);
/* A container id as Docker returns it: 64 lowercase hex digits. */
bool docker_is_full_id(const char *s);
/* A session id for the label: 1-128 bytes of [A-Za-z0-9_-]. */
bool docker_session_valid(const char *s);
/* Printable UTF-8 (no control characters), 1..max bytes (0 allowed when
 * empty_ok): what may go into a JSON string we build. */
bool docker_text_ok(const char *s, size_t max, bool empty_ok);
/* A label filter "key" or "key=value" that may go into a query. */
bool docker_label_ok(const char *label);
/* RFC 3339 ("2024-05-01T10:20:30.123456789Z", or with +hh:mm) to ms since
 * the epoch. Docker's zero time ("0001-01-01T00:00:00Z"), anything before
 * 1970 and anything malformed give 0. */
int64_t docker_rfc3339_ms(const char *s);
/* Builds the POST /containers/create body from spec. Every string is
 * checked, so nothing the caller passes can change the body's shape.
 * Returns 0 with *ret (owned by the caller), -EINVAL with a reason in err,
 * or -ENOMEM. */
int docker_create_body(const struct wg_docker_spec *s, json_t **ret, char *err, size_t errlen);
/* The exec create body for argv and env ("NAME=value" entries, or NULL for
 * none; each entry checked as above). Returns 0 with *ret (owned by the
 * caller), -EINVAL or -ENOMEM. */
int docker_exec_body(const char *const *argv, const char *const *env, json_t **ret);
/* `filters` query value for the label filter (and type=container when
 * with_type): {"label":["k=v"]}, percent-encoded. NULL when out of memory. */
char *docker_label_filters(const char *label, bool with_type);
/* Fills ev from one parsed events line. Strings point into root. Returns 0
 * or -EBADMSG (not an event object). */
int docker_event_from_json(json_t *root, struct wg_docker_event *ev);
/* Fills c from an inspect answer; strings point into root (which may get
 * an empty Config.Labels added). Returns 0, -EBADMSG or -ENOMEM. */
int docker_container_from_json(json_t *root, struct wg_docker_container *c);
/* Fills a new array from a list answer. Returns 0 (*ret NULL when empty),
 * -EBADMSG or -ENOMEM. */
int docker_summaries_from_json(json_t *root, struct wg_docker_summary **ret, size_t *ret_n);
/* The Id of a create answer (a container) or an exec create answer when it
 * is a full id (docker_is_full_id()), else NULL. */
const char *docker_id_from_json(json_t *root);
/* cpu_stats.cpu_usage.total_usage (ns) of a stats answer. -EBADMSG when
 * absent. */
int docker_stats_cpu_from_json(json_t *root, uint64_t *ret_ns);

/* ---- docker_wire.c (pure) ------------------------------------------------------------------ */

/* "1.41" (n bytes) -> 1, 41. Returns 0 or -EINVAL. */
int docker_version_parse(const char *s, size_t n, int *ret_major, int *ret_minor);
/* The version to use given the engine's (server, may be "" when it sent
 * none) and ours. Writes "M.m" to out. Returns 0, -EPROTONOSUPPORT when
 * the engine is older than WG_DOCKER_API_MIN, or -EINVAL for a malformed
 * server version. */
int docker_version_negotiate(const char *server, int our_major, int our_minor, char *out,
                             size_t outlen);
/* If line (one header line as curl hands it, CRLF included) is `name:
 * value`, points *ret at the trimmed value and returns its length; else -1. */
long docker_header_value(const char *line, size_t n, const char *name, const char **ret);
/* Appends p to b keeping only the last cap bytes; *trunc is set when
 * anything was dropped. b must have been initialised with max > cap. */
void docker_tail_append(struct wg_buf *b, size_t cap, const char *p, size_t n, bool *trunc);
typedef int docker_line_fn(void *arg, const char *line, size_t len);
/* Splits p into '\n'-terminated lines, calling fn for each complete one; a
 * partial line waits in b. Returns 0, -EMSGSIZE when a line grows past cap,
 * -ENOMEM, or fn's non-zero answer (which stops the feed). */
int docker_lines_feed(struct wg_buf *b, size_t cap, const char *p, size_t n, docker_line_fn *fn,
                      void *arg);

#endif
