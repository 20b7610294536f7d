/* admin/api_int.h - what the files of the admin API share. Not an API: only
 * admin/api*.c include it.
 *
 *   api.c           the API object, its calls (one per request), the tick,
 *                   metrics, life
 *   api_route.c     which handler a request goes to; query strings
 *   api_body.c      request bodies: loading and validation
 *   api_sessions.c  the session handlers: create, list/get, commands,
 *                   keepalive
 *   api_wait.c      ?wait=1: following a session until a state
 *   api_events.c    GET /v1/events: replay and the shared reader
 *   api_access.c    signed links of private sessions, and their revoke
 *   api_record.c    POST /v1/sessions/{id}/events: an operator's action
 *   api_hosts.c     GET /v1/hosts: the orchestrator hosts and their heartbeats
 *
 * Ownership, written down once:
 * - Every request the API takes is a struct call, linked on one of the
 *   api's lists (plain, waiters, streams) until it is answered and none of
 *   its Redis or store callbacks is due (pending == 0); then it is freed.
 * - c->req is the admin request while it is unanswered; every answer goes
 *   through api_call_respond(), api_call_error() or api_stream_drop(),
 *   which clear it. The admin's cancel callback (client gone) answers it at
 *   once (the answer is only dropped), so a dead request is never kept.
 * - wg_api_free() answers every call, unlinks it and sets c->api = NULL:
 *   callbacks that arrive later (the store and the shared wg_redis cancel
 *   theirs when freed) only count down and free it.
 * - The API owns one timer (tick), and, made on first use, a subscriber
 *   connection (wg:state, for ?wait=1) and a reader connection (XREAD BLOCK
 *   on wg:events, for the event streams). Its memory goes in the timer's
 *   close callback. */
#ifndef WG_ADMIN_API_INT_H
#define WG_ADMIN_API_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "admin/api.h"
#include "admin/listener.h"
#include "common/list.h"
#include "common/session.h"
#include "common/store.h"

#define API_SUBSYS "api"

/* What a create's placement came to (wakegate_placements_total). */
enum api_place_outcome {
    API_PLACED,
    API_PLACE_NO_HOST, /* no live host */
    API_PLACE_FULL,    /* every live host at its max_sessions */
    API_PLACE_LABELS,  /* no live host with the template's labels */
    API_PLACE_DOWN,    /* the operator's host is not live */
    API_PLACE_OUTCOMES
};
/* The outcome of a WG_STORE_UNPLACED reason, and the label names. */
enum api_place_outcome api_place_outcome(const char *reason);
extern const char *const api_place_outcome_names[API_PLACE_OUTCOMES];

#define API_TICK_MS 100
#define API_READER_RETRY_MS 1000
#define API_WAIT_POLL_MS 1000 /* backstop read of a waited-on record */
#define API_SID_TEXT_MAX 42
#define API_ERR_MAX 256

enum call_kind {
    C_CREATE,
    C_LIST,
    C_GET,
    C_COMMAND,
    C_EVENTS,
    C_KEEPALIVE,
    C_LINKS,
    C_REVOKE,
    C_RECORD,
    C_HOSTS,
};

struct call {
    struct wg_list link;      /* api->plain, ->waiters or ->streams */
    struct wg_api *api;       /* NULL once the api is freed */
    struct wg_admin_req *req; /* NULL once answered */
    enum call_kind kind;
    int pending; /* store and Redis callbacks still due */
    char id[WG_SESSION_ID_MAX + 1];
    /* create */
    struct wg_api_create create;
    json_t *created; /* the record as created: the 201 if the move to asleep fails */
    /* wake, sleep, destroy */
    enum wg_wake_op op;
    bool force;
    bool now; /* sleep: save and stop whatever the activity */
    bool wait;
    bool waiting;                /* on api->waiters */
    bool checking;               /* a read of the record is in flight */
    bool recheck;                /* read it again when that one is back */
    bool seen_other;             /* saw a state other than failed since the command */
    bool seen_sleeping;          /* sleep: saw draining, saving or stopping */
    unsigned target;             /* states that end the wait */
    enum wg_session_state state; /* the last one seen */
    uint64_t seen_v;
    uint64_t deadline; /* uv_now() ms */
    uint64_t next_poll;
    char cmd_id[WG_STORE_STREAM_ID_MAX + 1];
    /* keepalive */
    int64_t ka_until; /* wall ms asked for */
    bool ka_moved;    /* the touch moved the score */
    /* links */
    int64_t link_expires; /* unix seconds */
    /* an operator's event (api_record.c): its type and detail, owned */
    const char *ev_type;
    json_t *ev_detail;
    /* hosts (api_hosts.c): name -> {} in the order read, and the lost set */
    json_t *hosts, *lost;
    bool hosts_set_missing, hosts_from_scan, hosts_truncated;
    unsigned hosts_scans;
    char hosts_cursor[24];
    /* events */
    bool streaming;                /* on api->streams */
    bool live;                     /* caught up: the reader feeds it */
    bool need_tip;                 /* starts at the stream's end, not known yet */
    bool fetching;                 /* an XREVRANGE or XRANGE is in flight */
    bool stalled;                  /* replay waits for the client to read */
    struct wg_api_sid last;        /* last entry sent (or skipped) */
    bool issued_ready;             /* the reader was ready when the XRANGE went out... */
    struct wg_api_sid issued_live; /* ...and had delivered up to this */
    uint64_t next_ping, retry_at;
};

struct wg_access_key;

struct wg_api {
    uv_loop_t *loop;
    const struct wg_config *cfg;
    struct wg_log *log;
    struct wg_admin *admin;
    struct wg_redis *redis;
    struct wg_store *store;
    struct wg_redis *sub;    /* owned: wg:state, made on the first wait */
    struct wg_redis *reader; /* owned: XREAD BLOCK wg:events, made on the first stream */
    uv_timer_t tick;
    bool tick_on;
    bool freeing;
    uint32_t heartbeat_ms;
    struct wg_list plain, waiters, streams;
    size_t n_waiters, n_streams;
    /* the events reader */
    bool rd_running;        /* wanted: streams are open */
    bool rd_ready;          /* live is the stream position it follows */
    bool rd_inflight;       /* a command of the reader's is out */
    struct wg_api_sid live; /* the last entry it delivered */
    uint64_t rd_retry_at;
    /* metrics */
    uint64_t created;
    uint64_t placements[API_PLACE_OUTCOMES]; /* creates by placement outcome */
    uint64_t commands[WG_WAKE_OP_DESTROY + 1];
    uint64_t links, revokes;
    struct wg_access_key *access_key; /* made on the first link (api_access.c) */
};

/* Whether the len bytes at s are the string lit. */
static inline bool api_span_is(const char *s, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(s, lit, len) == 0;
}

/* Loop time: deadlines, polls and heartbeats are measured on it. */
static inline uint64_t api_now_ms(const struct wg_api *api)
{
    return uv_now(api->loop);
}

/* ---- api.c: calls -------------------------------------------------------------------------- */

/* A call for req on api->plain, with the cancel callback set; NULL (req
 * answered 500) when out of memory. id may be NULL. */
struct call *api_call_new(struct wg_api *api, struct wg_admin_req *req, enum call_kind kind,
                          const char *id);
/* Whether the call still has a client and an API to answer for. */
bool api_call_live(const struct call *c);
/* Ends c when it is answered and nothing of it is due any more. */
void api_call_maybe_free(struct call *c);
/* Leaves api->waiters or ->streams, for the plain list. */
void api_call_unlist(struct call *c);
/* Answers with j (taken; NULL: 500) as JSON. */
void api_call_respond(struct call *c, int status, const char *headers, json_t *j);
/* Answers {"error": msg}. */
void api_call_error(struct call *c, int status, const char *headers, const char *msg);
/* Store and Redis outcomes as HTTP; 5xx are logged with Redis's text. */
void api_call_fail(struct call *c, int status, const char *detail, const char *doing);
/* The start of a store callback that carries on a call: false when the call
 * is over (the client left, or the failure was just answered), in which case
 * the call has been released as far as this callback goes. */
bool api_call_resume(struct call *c, const struct wg_store_res *res, const char *doing);
/* The record as the API shows it; NULL for NULL. */
json_t *api_session_json(const struct wg_session *rec);
/* Starts the tick when it is not running. */
void api_tick_ensure(struct wg_api *api);

/* ---- api_route.c --------------------------------------------------------------------------- */

/* The /v1/ handler registered on the admin listener. */
void api_handle(void *arg, struct wg_admin_req *req, const struct wg_admin_request *info);

/* ---- api_body.c ---------------------------------------------------------------------------- */

/* {"duration": "10m"} or {"duration_ms": 600000}: exactly one, more than
 * 0 and at most 24 h. Returns 0 with *ret_ms, or -EINVAL with err. */
int api_parse_keepalive(const char *body, size_t len, uint64_t *ret_ms, char *err, size_t errlen);

/* ---- api_sessions.c ------------------------------------------------------------------------ */

void api_handle_create(struct wg_api *api, struct wg_admin_req *req,
                       const struct wg_admin_request *info);
/* GET /v1/sessions (id NULL) or /v1/sessions/{id}. */
void api_handle_read(struct wg_api *api, struct wg_admin_req *req, const char *id);
/* wake, sleep (with ?wait and ?force), DELETE (destroy, with ?force). */
void api_handle_command(struct wg_api *api, struct wg_admin_req *req,
                        const struct wg_admin_request *info, const char *id, enum wg_wake_op op);
void api_handle_keepalive(struct wg_api *api, struct wg_admin_req *req,
                          const struct wg_admin_request *info, const char *id);

/* ---- api_access.c ------------------------------------------------------------------------- */

/* POST /v1/sessions/{id}/links {"ttl"} and /v1/sessions/{id}/revoke. */
void api_handle_links(struct wg_api *api, struct wg_admin_req *req,
                      const struct wg_admin_request *info, const char *id);
void api_handle_revoke(struct wg_api *api, struct wg_admin_req *req, const char *id);
/* api_record.c: POST /v1/sessions/{id}/events {"type", "detail"}. */
void api_handle_record_event(struct wg_api *api, struct wg_admin_req *req,
                             const struct wg_admin_request *info, const char *id);
/* api_hosts.c: GET /v1/hosts. */
void api_handle_hosts(struct wg_api *api, struct wg_admin_req *req);
/* api_openapi.c: docs/openapi.json, embedded (wg_api_openapi, generated). */
void api_handle_openapi(struct wg_admin_req *req, const struct wg_admin_request *info);

/* ---- api_wait.c ---------------------------------------------------------------------------- */

/* Moves c (its command queued) onto api->waiters until its target state, a
 * failure or the deadline. */
void api_wait_begin(struct call *c);
/* The tick's part: deadlines and backstop reads. */
void api_wait_tick(struct wg_api *api, uint64_t now);

/* ---- api_events.c -------------------------------------------------------------------------- */

void api_handle_events(struct wg_api *api, struct wg_admin_req *req,
                       const struct wg_admin_request *info);
/* The tick's part: heartbeats, replay retries, the reader's restarts. */
void api_events_tick(struct wg_api *api, uint64_t now);

/* ---- api_policy.c: a caller's limits ---- */

/* "limits": {"memory": "256MiB" | bytes, "cpus": "0.5" | number, "pids": N},
 * each within template t's maximum (limits_max, else its own limit), into
 * c. Returns 0 or -EINVAL with err naming the field. */
int api_limits_take(const json_t *v, const struct wg_sessions_cfg *t, struct wg_api_create *c,
                    char *err, size_t errlen);
/* Adds the limits of c to its spec text as "limits": {"memory", "nano_cpus",
 * "pids"} (those set), for the waker. Returns 0, -EINVAL or -ENOMEM. */
int api_limits_into_spec(struct wg_api_create *c, char *err, size_t errlen);

#endif
