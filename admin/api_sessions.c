/* admin/api_sessions.c - the session handlers of the admin API: create,
 * list and get, the commands (wake, sleep, destroy) and keepalive. Each
 * runs as a call (api.c) through store callbacks; ?wait=1 hands the call to
 * api_wait.c once its command is queued. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "admin/api_int.h"
#include "common/clock.h"
#include "common/log.h"

/* ---- POST /v1/sessions --------------------------------------------------------------------- */

static const char create_detail[] = "{\"by\":\"api\"}";

static void on_asleep(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    bool moved = (res->status == 0 || res->status == WG_STORE_REJECTED) && res->rec != NULL;
    c->pending--;
    if (c->api != NULL && !moved && res->status != -ECANCELED) {
        char q[API_ERR_MAX];
        WG_WARN(c->api->log, API_SUBSYS, "created session stays in creating, answering 201",
                "id=%s status=%d error=%s", c->id, res->status,
                wg_log_quote(q, sizeof(q), res->error, strlen(res->error)));
    }
    if (api_call_live(c))
        api_call_respond(c, 201, NULL,
                         moved ? api_session_json(res->rec) : json_incref(c->created));
    api_call_maybe_free(c);
}

static void on_created(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    c->pending--;
    /* A record made for a client that left still gets its move to asleep:
     * it must not be left in creating. */
    if (c->api == NULL || c->api->freeing || (c->req == NULL && res->status != 0)) {
        api_call_maybe_free(c);
        return;
    }
    if (res->status == WG_STORE_UNPLACED) {
        c->api->placements[api_place_outcome(res->error)]++;
        WG_WARN(c->api->log, API_SUBSYS, "no host for the session, answering 503",
                "id=%s template=%s reason=\"%s\"", c->id, c->create.template_name, res->error);
        api_call_error(c, 503, "Retry-After: 5\r\n", res->error);
    } else if (res->status == WG_STORE_EXISTS) {
        api_call_respond(c, 200, NULL, api_session_json(res->rec));
    } else if (res->status != 0) {
        api_call_fail(c, res->status, res->error, "create");
    } else {
        struct wg_api *api = c->api;
        api->created++;
        api->placements[API_PLACED]++;
        WG_INFO(api->log, API_SUBSYS, "session created",
                "id=%s image=%s port=%u host=%s epoch=%" PRIu64, c->id, c->create.image,
                (unsigned)c->create.port, res->rec->host, res->rec->epoch);
        c->created = api_session_json(res->rec);
        /* No container yet: the orchestrator makes it on the first wake. */
        int rc = wg_store_transition(api->store, c->id, WG_SESSION_BIT(WG_SESSION_CREATING),
                                     WG_SESSION_ASLEEP, NULL, create_detail, on_asleep, c);
        if (rc == 0)
            c->pending++;
        else
            api_call_respond(c, 201, NULL, json_incref(c->created));
    }
    api_call_maybe_free(c);
}

void api_handle_create(struct wg_api *api, struct wg_admin_req *req,
                       const struct wg_admin_request *info)
{
    struct wg_api_create cr;
    struct wg_session_update u;
    char err[API_ERR_MAX];
    int rc = wg_api_parse_create(info->body, info->body_len, api->cfg, &cr, err, sizeof(err));
    if (rc == -ENOMEM) {
        wg_admin_respond_error(req, 500, NULL, "out of memory");
        return;
    }
    if (rc < 0) {
        wg_admin_respond_error(req, 400, NULL, err);
        return;
    }
    struct call *c = api_call_new(api, req, C_CREATE, cr.id);
    if (c == NULL) {
        wg_api_create_release(&cr);
        return;
    }
    c->create = cr;
    wg_api_create_fields(&c->create, NULL, &u);
    /* This process runs an orchestrator: it is alive, so its host may take
     * the session while no heartbeat at all is there yet (it starts). */
    bool own = api->cfg->role != WG_ROLE_PROXY && api->cfg->docker_name != NULL;
    struct wg_store_place place = {.host = c->create.host,
                                   .labels_json = c->create.place_labels,
                                   .pin = c->create.pin,
                                   .fallback_host = own ? api->cfg->docker_name : NULL};
    rc = wg_store_create_placed(api->store, c->id, &u, &place, create_detail, on_created, c);
    if (rc == 0)
        c->pending++;
    else
        api_call_fail(c, rc, "wg_store_create refused the record", "create");
    api_call_maybe_free(c);
}

/* ---- GET /v1/sessions[/{id}] --------------------------------------------------------------- */

static void on_list(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    c->pending--;
    if (api_call_live(c)) {
        if (res->status != 0) {
            api_call_fail(c, res->status, res->error, "list");
        } else {
            json_t *a = json_array();
            for (size_t i = 0; a != NULL && i < res->n_recs; i++)
                if (json_array_append_new(a, api_session_json(&res->recs[i])) < 0) {
                    json_decref(a);
                    a = NULL;
                }
            if (res->n_bad > 0)
                WG_WARN(c->api->log, API_SUBSYS, "garbled session records left out of the list",
                        "count=%zu", res->n_bad);
            api_call_respond(c, 200, NULL, a);
        }
    }
    api_call_maybe_free(c);
}

static void on_get(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    c->pending--;
    if (api_call_live(c)) {
        if (res->status != 0)
            api_call_fail(c, res->status, res->error, "get");
        else
            api_call_respond(c, 200, NULL, api_session_json(res->rec));
    }
    api_call_maybe_free(c);
}

void api_handle_read(struct wg_api *api, struct wg_admin_req *req, const char *id)
{
    struct call *c = api_call_new(api, req, id ? C_GET : C_LIST, id);
    int rc;
    if (c == NULL)
        return;
    rc = id ? wg_store_get(api->store, id, on_get, c) : wg_store_list(api->store, on_list, c);
    if (rc == 0)
        c->pending++;
    else
        api_call_fail(c, rc, "", id ? "get" : "list");
    api_call_maybe_free(c);
}

/* ---- wake, sleep, destroy ------------------------------------------------------------------ */

static void on_cmd_added(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    if (!api_call_resume(c, res, wg_wake_op_name(c->op)))
        return;
    struct wg_api *api = c->api;
    api->commands[c->op]++;
    snprintf(c->cmd_id, sizeof(c->cmd_id), "%s", res->event_id ? res->event_id : "");
    WG_INFO(api->log, API_SUBSYS, "command queued",
            "id=%s op=%s force=%d now=%d wait=%d entry=%s host=%s", c->id, wg_wake_op_name(c->op),
            c->force, c->now, c->wait, c->cmd_id, res->host && res->host[0] ? res->host : "-");
    if (!c->wait) {
        json_t *j =
            json_pack("{s:s, s:s, s:s, s:s}", "id", c->id, "state", wg_session_state_name(c->state),
                      "op", wg_wake_op_name(c->op), "command_id", c->cmd_id);
        if (j != NULL && c->op == WG_WAKE_OP_DESTROY)
            json_object_set_new(j, "force", json_boolean(c->force));
        if (j != NULL && c->now)
            json_object_set_new(j, "now", json_true());
        api_call_respond(c, 202, NULL, j);
    } else {
        api_wait_begin(c);
    }
    api_call_maybe_free(c);
}

static void on_cmd_get(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    if (!api_call_resume(c, res, "get"))
        return;
    struct wg_api *api = c->api;
    const struct wg_session *rec = res->rec;
    c->state = rec->state;
    c->seen_v = rec->version;
    c->seen_other = rec->state != WG_SESSION_FAILED;
    if (c->wait && api->n_waiters >= WG_API_WAITERS_MAX) {
        api_call_error(c, 503, "Retry-After: 1\r\n", "too many requests waiting");
        api_call_maybe_free(c);
        return;
    }
    struct wg_wake_cmd cmd;
    memset(&cmd, 0, sizeof(cmd));
    snprintf(cmd.session, sizeof(cmd.session), "%s", c->id);
    cmd.op = c->op;
    cmd.force = c->force;
    cmd.now = c->now;
    snprintf(cmd.from, sizeof(cmd.from), "api");
    /* The record's host owns the container; a record without one (made by
     * hand) goes to ours. */
    const char *host = rec->host[0] ? rec->host : api->cfg->docker_name;
    int rc = wg_store_wake_add(api->store, host, &cmd, on_cmd_added, c);
    if (rc == 0)
        c->pending++;
    else
        api_call_fail(c, rc, "wg_store_wake_add refused the command", wg_wake_op_name(c->op));
    api_call_maybe_free(c);
}

void api_handle_command(struct wg_api *api, struct wg_admin_req *req,
                        const struct wg_admin_request *info, const char *id, enum wg_wake_op op)
{
    bool wait = false, force = false, now = false;
    if (op != WG_WAKE_OP_DESTROY &&
        wg_api_query_flag(info->query, info->query_len, "wait", &wait) < 0) {
        wg_admin_respond_error(req, 400, NULL, "query wait: must be 0, 1, false or true");
        return;
    }
    if (op != WG_WAKE_OP_WAKE &&
        wg_api_query_flag(info->query, info->query_len, "force", &force) < 0) {
        wg_admin_respond_error(req, 400, NULL, "query force: must be 0, 1, false or true");
        return;
    }
    /* now=1: the save and the stop happen although the session is in use
     * (open streams, requests); force=1 skips the save, so both make no
     * sense together. */
    if (op == WG_WAKE_OP_SLEEP &&
        wg_api_query_flag(info->query, info->query_len, "now", &now) < 0) {
        wg_admin_respond_error(req, 400, NULL, "query now: must be 0, 1, false or true");
        return;
    }
    if (now && force) {
        wg_admin_respond_error(req, 400, NULL,
                               "query now and force: now saves then stops, force stops without "
                               "saving; send one");
        return;
    }
    struct call *c = api_call_new(api, req, C_COMMAND, id);
    if (c == NULL)
        return;
    c->op = op;
    c->wait = wait;
    c->force = force;
    c->now = now;
    c->target = op == WG_WAKE_OP_WAKE
                    ? WG_SESSION_BIT(WG_SESSION_RUNNING)
                    : WG_SESSION_BIT(WG_SESSION_ASLEEP) | WG_SESSION_BIT(WG_SESSION_PAUSED);
    int rc = wg_store_get(api->store, id, on_cmd_get, c);
    if (rc == 0)
        c->pending++;
    else
        api_call_fail(c, rc, "", "get");
    api_call_maybe_free(c);
}

/* ---- POST /v1/sessions/{id}/keepalive ------------------------------------------------------ */

/* For work that sends no requests (a build, an agent in the background):
 * the session's wg:active score becomes now + duration with the same
 * ZADD XX GT as the proxies' activity, so it never moves activity back and
 * never touches a session that is not awake. */

/* In wg:active (ARCHITECTURE.md "Activity"): from entering running until
 * asleep, failed or destroyed. */
#define AWAKE_MASK                                                                                 \
    (WG_SESSION_BIT(WG_SESSION_RUNNING) | WG_SESSION_BIT(WG_SESSION_PAUSED) |                      \
     WG_SESSION_BIT(WG_SESSION_DRAINING) | WG_SESSION_BIT(WG_SESSION_SAVING) |                     \
     WG_SESSION_BIT(WG_SESSION_STOPPING))

static void on_ka_get(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    if (!api_call_resume(c, res, "get"))
        return;
    const struct wg_session *rec = res->rec;
    const char *state = wg_session_state_name(rec->state);
    bool awake = (WG_SESSION_BIT(rec->state) & AWAKE_MASK) != 0;
    /* Not moved: not in wg:active, or its score was already later (an
     * earlier, longer keepalive). */
    if (c->ka_moved || (awake && rec->last_active >= c->ka_until)) {
        int64_t until = c->ka_moved ? c->ka_until : rec->last_active;
        WG_INFO(c->api->log, API_SUBSYS, "session kept alive", "id=%s until=%" PRId64 " state=%s",
                c->id, until, state);
        api_call_respond(c, 200, NULL,
                         json_pack("{s:s, s:I, s:s}", "id", c->id, "keepalive_until",
                                   (json_int_t)until, "state", state));
    } else {
        api_call_respond(c, 409, NULL,
                         json_pack("{s:s, s:s, s:s}", "error", "session is not awake", "id", c->id,
                                   "state", state));
    }
    api_call_maybe_free(c);
}

static void on_ka_touched(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    if (!api_call_resume(c, res, "keepalive"))
        return;
    c->ka_moved = res->count > 0;
    /* The record says whether the session exists and what state it is in
     * (and, after the touch on the same connection, its score). */
    int rc = wg_store_get(c->api->store, c->id, on_ka_get, c);
    if (rc == 0)
        c->pending++;
    else
        api_call_fail(c, rc, "", "get");
    api_call_maybe_free(c);
}

void api_handle_keepalive(struct wg_api *api, struct wg_admin_req *req,
                          const struct wg_admin_request *info, const char *id)
{
    uint64_t ms = 0;
    char err[API_ERR_MAX];
    if (api_parse_keepalive(info->body, info->body_len, &ms, err, sizeof(err)) < 0) {
        wg_admin_respond_error(req, 400, NULL, err);
        return;
    }
    struct call *c = api_call_new(api, req, C_KEEPALIVE, id);
    if (c == NULL)
        return;
    c->ka_until = wg_clock_wall_ms() + (int64_t)ms;
    struct wg_store_activity act = {.id = c->id, .at_ms = c->ka_until};
    int rc = wg_store_touch(api->store, &act, 1, on_ka_touched, c);
    if (rc == 0)
        c->pending++;
    else
        api_call_fail(c, rc, "wg_store_touch refused the activity", "keepalive");
    api_call_maybe_free(c);
}
