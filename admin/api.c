/* admin/api.c - the admin API object: its calls (one per request), the
 * tick that drives deadlines, heartbeats and retries, its metrics and its
 * life; see api.h, and api_int.h for who owns what. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/api_int.h"
#include "common/access.h"
#include "common/log.h"
#include "common/redis.h"

/* ---- calls --------------------------------------------------------------------------------- */

bool api_call_live(const struct call *c)
{
    return c->api != NULL && !c->api->freeing && c->req != NULL;
}

static void call_free(struct call *c)
{
    wg_list_remove(&c->link);
    wg_api_create_release(&c->create);
    json_decref(c->created);
    json_decref(c->ev_detail);
    json_decref(c->hosts);
    json_decref(c->lost);
    free(c);
}

void api_call_maybe_free(struct call *c)
{
    if (c->req == NULL && c->pending == 0)
        call_free(c);
}

void api_call_unlist(struct call *c)
{
    struct wg_api *api = c->api;
    if (api != NULL && c->waiting) {
        api->n_waiters--;
        wg_list_remove(&c->link);
        wg_list_push_back(&api->plain, &c->link);
    }
    if (api != NULL && c->streaming) {
        api->n_streams--;
        wg_list_remove(&c->link);
        wg_list_push_back(&api->plain, &c->link);
    }
    c->waiting = false;
    c->streaming = false;
}

void api_call_respond(struct call *c, int status, const char *headers, json_t *j)
{
    struct wg_buf out;
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (c->req == NULL) {
        free(text);
        return;
    }
    api_call_unlist(c);
    struct wg_admin_req *req = c->req;
    c->req = NULL;
    if (text == NULL) {
        wg_admin_respond_error(req, 500, NULL, "out of memory");
        return;
    }
    wg_buf_init(&out, SIZE_MAX);
    if (wg_buf_appendf(&out, "%s\n", text) < 0)
        wg_admin_respond_error(req, 500, NULL, "out of memory");
    else
        wg_admin_respond_headers(req, status, "application/json", headers, wg_buf_head(&out),
                                 wg_buf_size(&out));
    wg_buf_release(&out);
    free(text);
}

void api_call_error(struct call *c, int status, const char *headers, const char *msg)
{
    if (c->req == NULL)
        return;
    api_call_unlist(c);
    struct wg_admin_req *req = c->req;
    c->req = NULL;
    wg_admin_respond_error(req, status, headers, msg);
}

/* The HTTP status and message of a store or Redis outcome. */
static int fail_status(int status, const char **msg)
{
    *msg = "redis error";
    switch (status) {
    case -ENOENT:
        *msg = "no such session";
        return 404;
    case -ETIMEDOUT:
    case -ECONNRESET:
    case -ENOTCONN:
        *msg = "redis unavailable";
        return 503;
    case -ECANCELED:
        *msg = "shutting down";
        return 503;
    case -EBADMSG:
        *msg = "session record in redis is garbled";
        return 500;
    case -E2BIG:
        *msg = "too many sessions to list";
        return 500;
    case -ENOMEM:
        *msg = "out of memory";
        return 500;
    case WG_STORE_UNPLACED:
        *msg = "no live host fits the session";
        return 503;
    default:
        return 500;
    }
}

void api_call_fail(struct call *c, int status, const char *detail, const char *doing)
{
    const char *msg;
    char q[API_ERR_MAX];
    int http = fail_status(status, &msg);

    if (http >= 500 && c->api != NULL)
        WG_WARN(c->api->log, API_SUBSYS, "redis call failed",
                "doing=%s id=%s status=%d error=%s http=%d", doing, c->id[0] ? c->id : "-", status,
                wg_log_quote(q, sizeof(q), detail ? detail : "", detail ? strlen(detail) : 0),
                http);
    /* The placement's reason is the answer: no live host, all full, or
     * the labels no host has. */
    if (status == WG_STORE_UNPLACED && detail && detail[0])
        msg = detail;
    api_call_error(c, http, http == 503 ? "Retry-After: 1\r\n" : NULL, msg);
}

bool api_call_resume(struct call *c, const struct wg_store_res *res, const char *doing)
{
    c->pending--;
    if (api_call_live(c) && res->status != 0)
        api_call_fail(c, res->status, res->error, doing);
    if (!api_call_live(c) || res->status != 0) {
        api_call_maybe_free(c);
        return false;
    }
    return true;
}

static void on_cancel(struct wg_admin_req *req, void *arg)
{
    struct call *c = arg;
    /* The client is gone: finish req (nothing is sent) and forget it. */
    if (c->streaming)
        wg_admin_stream_end(req);
    else
        wg_admin_respond(req, 499, NULL, NULL, 0);
    c->req = NULL;
    api_call_unlist(c);
    api_call_maybe_free(c);
}

struct call *api_call_new(struct wg_api *api, struct wg_admin_req *req, enum call_kind kind,
                          const char *id)
{
    struct call *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        wg_admin_respond_error(req, 500, NULL, "out of memory");
        return NULL;
    }
    c->api = api;
    c->req = req;
    c->kind = kind;
    if (id != NULL)
        snprintf(c->id, sizeof(c->id), "%s", id);
    wg_list_push_back(&api->plain, &c->link);
    wg_admin_req_on_cancel(req, on_cancel, c);
    return c;
}

json_t *api_session_json(const struct wg_session *rec)
{
    return rec ? wg_session_to_json(rec) : NULL;
}

/* ---- tick: deadlines, heartbeats, retries -------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    struct wg_api *api = t->data;
    uint64_t now = api_now_ms(api);

    api_wait_tick(api, now);
    api_events_tick(api, now);
    if (api->n_waiters == 0 && api->n_streams == 0 && !api->rd_running) {
        uv_timer_stop(&api->tick);
        api->tick_on = false;
    }
}

void api_tick_ensure(struct wg_api *api)
{
    if (api->tick_on || api->freeing)
        return;
    api->tick_on = true;
    uv_timer_start(&api->tick, on_tick, API_TICK_MS, API_TICK_MS);
}

/* ---- life ---------------------------------------------------------------------------------- */

const char *const api_place_outcome_names[API_PLACE_OUTCOMES] = {
    [API_PLACED] = "placed",
    [API_PLACE_NO_HOST] = "no_live_host",
    [API_PLACE_FULL] = "full",
    [API_PLACE_LABELS] = "no_labels",
    [API_PLACE_DOWN] = "host_not_live",
};

enum api_place_outcome api_place_outcome(const char *reason)
{
    if (strstr(reason, "no live host has the labels"))
        return API_PLACE_LABELS;
    if (strstr(reason, "no live host"))
        return API_PLACE_NO_HOST;
    if (strstr(reason, "full"))
        return API_PLACE_FULL;
    return API_PLACE_DOWN;
}

static void api_metrics(void *arg, struct wg_buf *out)
{
    const struct wg_api *api = arg;
    wg_buf_appendf(
        out,
        "# HELP wakegate_api_sessions_created_total Sessions created through the admin API.\n"
        "# TYPE wakegate_api_sessions_created_total counter\n"
        "wakegate_api_sessions_created_total %" PRIu64 "\n"
        "# HELP wakegate_api_commands_total Commands the admin API queued, by op.\n"
        "# TYPE wakegate_api_commands_total counter\n",
        api->created);
    for (int op = WG_WAKE_OP_WAKE; op <= WG_WAKE_OP_DESTROY; op++)
        wg_buf_appendf(out, "wakegate_api_commands_total{op=\"%s\"} %" PRIu64 "\n",
                       wg_wake_op_name((enum wg_wake_op)op), api->commands[op]);
    wg_buf_appendf(out, "# HELP wakegate_placements_total Session creates by placement outcome.\n"
                        "# TYPE wakegate_placements_total counter\n");
    for (int k = 0; k < API_PLACE_OUTCOMES; k++)
        wg_buf_appendf(out, "wakegate_placements_total{outcome=\"%s\"} %" PRIu64 "\n",
                       api_place_outcome_names[k], api->placements[k]);
    wg_buf_appendf(out,
                   "# HELP wakegate_api_event_streams Open /v1/events streams.\n"
                   "# TYPE wakegate_api_event_streams gauge\n"
                   "wakegate_api_event_streams %zu\n"
                   "# HELP wakegate_api_waits Requests waiting for a session state (?wait=1).\n"
                   "# TYPE wakegate_api_waits gauge\n"
                   "wakegate_api_waits %zu\n"
                   "# HELP wakegate_api_links_total Signed links the admin API made.\n"
                   "# TYPE wakegate_api_links_total counter\n"
                   "wakegate_api_links_total %" PRIu64 "\n"
                   "# HELP wakegate_api_revokes_total Revokes of a session's links and cookies.\n"
                   "# TYPE wakegate_api_revokes_total counter\n"
                   "wakegate_api_revokes_total %" PRIu64 "\n",
                   api->n_streams, api->n_waiters, api->links, api->revokes);
}

static void tick_closed(uv_handle_t *h)
{
    struct wg_api *api = h->data;
    wg_access_key_free(api->access_key);
    free(api);
}

int wg_api_new(uv_loop_t *loop, const struct wg_config *cfg, struct wg_log *log,
               struct wg_admin *admin, struct wg_redis *redis, struct wg_store *store,
               const struct wg_api_opts *opts, struct wg_api **ret_api)
{
    struct wg_api *api;
    int rc;

    if (loop == NULL || cfg == NULL || admin == NULL || redis == NULL || store == NULL ||
        cfg->redis_url == NULL)
        return -EINVAL;
    if (cfg->docker_name == NULL ||
        !wg_session_host_valid(cfg->docker_name, strlen(cfg->docker_name)))
        return -EINVAL;
    api = calloc(1, sizeof(*api));
    if (api == NULL)
        return -ENOMEM;
    api->loop = loop;
    api->cfg = cfg;
    api->log = log;
    api->admin = admin;
    api->redis = redis;
    api->store = store;
    api->heartbeat_ms = opts && opts->heartbeat_ms ? opts->heartbeat_ms : WG_API_HEARTBEAT_MS;
    wg_list_init(&api->plain);
    wg_list_init(&api->waiters);
    wg_list_init(&api->streams);
    rc = uv_timer_init(loop, &api->tick);
    if (rc < 0) {
        free(api);
        return rc;
    }
    api->tick.data = api;
    rc = wg_admin_add_async_handler(admin, "/v1/", api_handle, api);
    for (size_t i = 0; rc == 0 && wg_api_read_routes[i] != NULL; i++)
        rc = wg_admin_add_read_route(admin, wg_api_read_routes[i], api);
    if (rc < 0) {
        wg_admin_remove_hooks(admin, api);
        api->freeing = true;
        uv_close((uv_handle_t *)&api->tick, tick_closed);
        return rc;
    }
    /* Last, once nothing can fail any more, so a failed start leaves no
     * hook behind for the caller to remove (and the metrics are not vital). */
    if (wg_admin_add_metrics(admin, api_metrics, api) < 0)
        WG_DEBUG(log, API_SUBSYS, "no room for the API's metrics", "%s", "");
    *ret_api = api;
    return 0;
}

static void detach_all(struct wg_list *list)
{
    while (!wg_list_empty(list)) {
        struct call *c = wg_container_of(list->next, struct call, link);
        struct wg_admin_req *req = c->req;
        wg_list_remove(&c->link);
        c->req = NULL;
        c->api = NULL;
        c->waiting = c->streaming = false;
        if (req != NULL) {
            wg_admin_req_on_cancel(req, NULL, NULL);
            if (c->kind == C_EVENTS)
                wg_admin_stream_end(req);
            else
                wg_admin_respond_error(req, 503, "Retry-After: 1\r\n", "shutting down");
        }
        api_call_maybe_free(c);
    }
}

void wg_api_free(struct wg_api *api)
{
    if (api == NULL || api->freeing)
        return;
    api->freeing = true;
    detach_all(&api->plain);
    detach_all(&api->waiters);
    detach_all(&api->streams);
    api->n_waiters = api->n_streams = 0;
    wg_redis_free(api->sub);
    api->sub = NULL;
    wg_redis_free(api->reader);
    api->reader = NULL;
    uv_close((uv_handle_t *)&api->tick, tick_closed);
}
