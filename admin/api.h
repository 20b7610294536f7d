/* admin/api.h - the admin API (/v1/...), served on the admin listener
 * (admin/listener) with Redis as its only backend.
 *
 *   POST   /v1/sessions               get-or-create: 201 + session when
 *                                     created, 200 + the existing session
 *                                     when the id exists (even if the body
 *                                     differs: the first creator wins and
 *                                     nothing is updated)
 *   GET    /v1/sessions               200 + JSON array, sorted by id
 *   GET    /v1/sessions/{id}          200 + session, 404
 *   POST   /v1/sessions/{id}/wake     202 {"id","state","op","command_id"};
 *                                     ?wait=1: 200 + session once running,
 *                                     502 if it failed, 504 + Retry-After
 *                                     after sessions.wake_timeout
 *   POST   /v1/sessions/{id}/sleep    the same with op sleep; ?wait=1 waits
 *                                     for asleep or paused, up to
 *                                     sessions.save.timeout + wake_timeout
 *   DELETE /v1/sessions/{id}          202; queues op destroy, with force for
 *                                     ?force=1. Without force the
 *                                     orchestrator decides (save first).
 *   GET    /v1/events                 server-sent events from wg:events
 *
 * Sessions are created in Redis only: creating then asleep at once, with
 * host = docker.name, the template's name ("template", default "default":
 * the sessions: block), the image and port (defaults: the template's), the
 * idle overrides, and spec = compact JSON of {cmd, env, labels, binds,
 * save, limits} (common/container_spec). The template decides what a
 * caller may set (admin/api_policy.c); a refusal is a 400 naming the field.
 * The orchestrator makes the container on the first wake. Commands go to
 * wg:wake:{record's host} with from = "api".
 *
 * Errors are JSON {"error": "..."}; a bad request body names the field:
 * {"error":"field \"port\": must be an integer 1..65535"} or
 * {"error":"unknown field \"imagee\""}. Nothing is written to Redis for a
 * request that fails validation, and a session id in a path is checked
 * before any Redis call (400 "invalid session id"). Unknown paths are 404,
 * known paths with a wrong method 405 with Allow. Redis unreachable: 503.
 *
 * Server-sent events: each wg:events entry is
 *     id: <stream id>\nevent: <type>\ndata: <JSON of the entry>\n\n
 * where the data has the entry's fields ("at" and "v" as numbers, "detail"
 * as parsed JSON). Replay starts after the Last-Event-ID header or
 * ?since=<stream id> ("<ms>-<seq>", or "<ms>" for "<ms>-0"; "0" replays the
 * whole capped stream); without either, only new events are sent. A comment
 * ": ping" goes out every heartbeat (15 s). One reader per process follows
 * the stream (XREAD BLOCK on its own connection) and fans out to every
 * client; replay uses XRANGE on the shared command connection. A client
 * that lets more than WG_ADMIN_STREAM_QUEUE_MAX bytes pile up is dropped.
 *
 * Scopes: the read-only token may list, show and follow the events (GET
 * and HEAD of /v1/sessions, /v1/sessions/{id} and /v1/events:
 * wg_api_read_routes); everything else needs the admin token. The admin
 * listener checks that before a request reaches the API.
 *
 * ?wait=1 follows wg:state on a subscriber connection of the API's (made on
 * the first wait) and re-reads the record after every (re)subscription. */
#ifndef WG_ADMIN_API_H
#define WG_ADMIN_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/buf.h"
#include "common/config.h"
#include "common/session.h"

struct wg_admin;
struct wg_log;
struct wg_redis;
struct wg_store;
struct wg_api; /* opaque */

#define WG_API_HEARTBEAT_MS 15000 /* SSE comment interval */
#define WG_API_STREAMS_MAX 1024   /* SSE clients at once; more get 503 */
#define WG_API_WAITERS_MAX 4096   /* ?wait=1 requests at once; more get 503 */
#define WG_API_REPLAY_PAGE 100    /* entries per XRANGE/XREAD */
#define WG_API_READ_BLOCK_MS 1000 /* XREAD BLOCK of the events reader */
#define WG_API_RETRY_AFTER_S 5    /* Retry-After of a 504 wait */

struct wg_api_opts {
    uint32_t heartbeat_ms; /* 0: WG_API_HEARTBEAT_MS */
};

/* Registers the /v1/ handler on admin. admin, redis (commands) and store
 * (on redis) are borrowed; cfg and log must outlive the api. opts may be
 * NULL. Returns 0 with *ret_api set, -EINVAL (docker.name is not a valid
 * host name), -ENOMEM, or an error from the admin. */
int wg_api_new(uv_loop_t *loop, const struct wg_config *cfg, struct wg_log *log,
               struct wg_admin *admin, struct wg_redis *redis, struct wg_store *store,
               const struct wg_api_opts *opts, struct wg_api **ret_api);

/* NULL-safe. Answers what is pending (503, or ends event streams), frees
 * the API's own Redis connections; the memory goes when its timer has
 * closed, so the loop must run on. Call it before wg_store_free() and
 * wg_redis_free() of the borrowed ones, and after wg_admin_free() or
 * wg_admin_remove_hooks(admin, api): the admin must not call it again. */
void wg_api_free(struct wg_api *api);

/* ---- pure parts (unit-tested) ------------------------------------------ */

/* The routes whose GET (and HEAD) the read-only token may call, as
 * wg_admin_add_read_route() patterns; NULL-terminated. Every other route
 * and method of the API needs the admin token. */
extern const char *const wg_api_read_routes[];

enum wg_api_route_kind {
    WG_API_SESSIONS = 0, /* /v1/sessions: GET list, POST create */
    WG_API_SESSION,      /* /v1/sessions/{id}: GET, DELETE */
    WG_API_WAKE,         /* /v1/sessions/{id}/wake: POST */
    WG_API_SLEEP,        /* /v1/sessions/{id}/sleep: POST */
    WG_API_KEEPALIVE,    /* /v1/sessions/{id}/keepalive: POST */
    WG_API_LINKS,        /* /v1/sessions/{id}/links: POST */
    WG_API_REVOKE,       /* /v1/sessions/{id}/revoke: POST */
    WG_API_RECORD,       /* /v1/sessions/{id}/events: POST (an operator's action) */
    WG_API_EVENTS,       /* /v1/events: GET */
    WG_API_OPENAPI,      /* /v1/openapi.json: GET (docs/openapi.json, embedded) */
    WG_API_HOSTS,        /* /v1/hosts: GET (the orchestrator hosts, their heartbeats) */
};

/* The methods of a route, as bits. */
#define WG_API_GET (1u << 0)
#define WG_API_HEAD (1u << 1)
#define WG_API_POST (1u << 2)
#define WG_API_DELETE (1u << 3)

/* One route of the API: the one table the dispatch reads, and that the
 * reference (docs/openapi.json) is checked against (test_api.c). {id} is
 * one path segment, a session id. */
struct wg_api_op {
    const char *path;
    unsigned methods;
    const char *allow; /* the Allow value of a 405 */
    enum wg_api_route_kind kind;
};
/* Ends with an entry whose path is NULL. */
extern const struct wg_api_op wg_api_ops[];

/* Maps method + path (without the query) to a route. Returns 0 with *kind
 * (and id, NUL-terminated, for the session routes), or the status to answer:
 * 404 (no such path), 405 (*allow gets the Allow value), 400 (the id is not
 * valid). HEAD is accepted where GET is, except for the event stream. */
int wg_api_route(const char *method, size_t method_len, const char *path, size_t path_len,
                 enum wg_api_route_kind *kind, char id[WG_SESSION_ID_MAX + 1], const char **allow);

/* A validated POST /v1/sessions body. */
struct wg_api_create {
    char id[WG_SESSION_ID_MAX + 1];
    char image[WG_SESSION_IMAGE_MAX + 1];
    char template_name[WG_SESSION_TEMPLATE_MAX + 1];
    uint16_t port;
    /* owned compact JSON {cmd,env,labels,binds,save[,limits]}: the caller's,
     * with the template's cmd and env filled in; NULL when none */
    char *spec;
    /* The caller's limits (0: the template's), within the template's maxima. */
    uint64_t memory_bytes, nano_cpus;
    unsigned pids;
    bool has_pause_after;
    uint64_t pause_after_ms;
    bool has_stop_after;
    uint64_t stop_after_ms;
    /* Placement: the operator's host ("" = choose one), and the template's
     * labels (borrowed from the configuration; NULL for none) and pin. */
    char host[WG_SESSION_HOST_MAX + 1];
    const char *place_labels;
    bool pin;
};

/* Validates body strictly: a JSON object with only the known fields, each
 * of its type (null counts as absent); id is required. Defaults from cfg.
 * Returns 0 with *out filled (release with wg_api_create_release()), -EINVAL
 * with err naming the field, or -ENOMEM. */
int wg_api_parse_create(const char *body, size_t len, const struct wg_config *cfg,
                        struct wg_api_create *out, char *err, size_t errlen);
void wg_api_create_release(struct wg_api_create *c);
/* The record fields of c for wg_store_create(); pointers into c and host
 * (NULL: no host field, placement chooses it). */
void wg_api_create_fields(const struct wg_api_create *c, const char *host,
                          struct wg_session_update *u);

/* ---- the template's policy (admin/api_policy.c) ---- */

#define WG_API_BIND_PATH_MAX 4096

/* Whether template t lets a caller name image: its own image, or one of
 * its images (exact, or a prefix ending in '*'). */
bool wg_api_policy_image(const struct wg_sessions_cfg *t, const char *image);
/* Whether template t lets a caller bind "source:target[:mode]": the
 * source's normalised path under one of t's binds.allow paths (a volume
 * name: named there), never "/", the Docker socket, /run or /var/run,
 * never with "..". Returns 0, or -EINVAL with the reason in why. */
int wg_api_policy_bind(const struct wg_sessions_cfg *t, const char *bind, char *why, size_t len);

/* A stream id "<ms>-<seq>" or "<ms>" (seq 0). Returns 0 or -EINVAL. */
struct wg_api_sid {
    uint64_t ms, seq;
};
int wg_api_sid_parse(const char *s, size_t len, struct wg_api_sid *ret);
int wg_api_sid_cmp(const struct wg_api_sid *a, const struct wg_api_sid *b);

/* Finds key in a query string ("a=1&b=2"); val and vlen get its value ("" for
 * a bare key). Returns true when present. */
bool wg_api_query_get(const char *q, size_t qlen, const char *key, const char **val, size_t *vlen);
/* A query flag: absent, "0" or "false" -> false; "", "1" or "true" ->
 * true. Returns 0 or -EINVAL for another value. */
int wg_api_query_flag(const char *q, size_t qlen, const char *key, bool *ret);

/* Appends one SSE message for a wg:events entry (fields as name/value
 * pairs) to out. Returns 0 or -ENOMEM/-E2BIG. */
int wg_api_sse_event(struct wg_buf *out, const char *stream_id, const struct wg_session_kv *kv,
                     size_t n);

#endif
