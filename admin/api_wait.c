/* admin/api_wait.c - ?wait=1 on wake and sleep: the call, its command
 * queued, waits until the session reaches the target state (200), fails
 * (502), has its sleep called off (409), is destroyed (409) or the deadline
 * passes (504). It follows wg:state on a subscriber connection of the API's
 * (made on the first wait) and re-reads the record after every
 * (re)subscription, with a slow poll as the backstop. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "admin/api_int.h"
#include "common/log.h"
#include "common/redis.h"

#define SLEEPING_STATES                                                                            \
    (WG_SESSION_BIT(WG_SESSION_DRAINING) | WG_SESSION_BIT(WG_SESSION_SAVING) |                     \
     WG_SESSION_BIT(WG_SESSION_STOPPING))

static void waiter_check(struct call *c);

/* A sleep that was under way and is back in running was called off: the
 * session was used, or its save failed. The wait ends there. */
static bool sleep_called_off(const struct call *c, enum wg_session_state state)
{
    return c->op == WG_WAKE_OP_SLEEP && c->seen_sleeping && state == WG_SESSION_RUNNING;
}

/* One state message for c's session. */
static void waiter_on_state(struct call *c, const struct wg_state_msg *m)
{
    if (WG_SESSION_IN(m->state, SLEEPING_STATES))
        c->seen_sleeping = true;
    if (WG_SESSION_IN(m->state, c->target) || m->state == WG_SESSION_FAILED ||
        m->state == WG_SESSION_DESTROYED || sleep_called_off(c, m->state)) {
        /* Answer from the record itself (its error, its ip...). */
        waiter_check(c);
    } else {
        c->seen_v = m->version;
        c->state = m->state;
        c->seen_other = true;
    }
}

static void sub_on_msg(const struct wg_redis_msg *msg, void *arg)
{
    struct wg_api *api = arg;
    struct wg_state_msg m;
    struct wg_list *n, *next;

    if (api->freeing)
        return;
    if (msg->kind == WG_REDIS_SUBSCRIBED) {
        /* Messages may have been lost while (re)connecting: read again. */
        for (n = api->waiters.next; n != &api->waiters; n = next) {
            next = n->next;
            waiter_check(wg_container_of(n, struct call, link));
        }
        return;
    }
    if (api->n_waiters == 0 || wg_store_parse_state_msg(msg->data, msg->len, &m) < 0)
        return;
    for (n = api->waiters.next; n != &api->waiters; n = next) {
        struct call *c = wg_container_of(n, struct call, link);
        next = n->next;
        if (strcmp(c->id, m.id) == 0 && m.version >= c->seen_v)
            waiter_on_state(c, &m);
    }
}

/* The subscriber is made on the first wait and kept. */
static void sub_ensure(struct wg_api *api)
{
    struct wg_redis_opts o = {.name = "api-state"};
    char q[API_ERR_MAX];
    int rc;
    if (api->sub != NULL || api->cfg->redis_url == NULL)
        return;
    rc = wg_redis_new(api->loop, api->cfg->redis_url, &o, api->log, &api->sub);
    if (rc == 0)
        rc = wg_redis_subscribe(api->sub, WG_STORE_CHANNEL_STATE, sub_on_msg, api);
    if (rc < 0) {
        WG_WARN(api->log, API_SUBSYS, "cannot subscribe to state changes, waits poll the record",
                "channel=%s error=%s", WG_STORE_CHANNEL_STATE,
                wg_log_quote(q, sizeof(q), strerror(-rc), strlen(strerror(-rc))));
        wg_redis_free(api->sub);
        api->sub = NULL;
    }
}

static void waiter_answer(struct call *c, const struct wg_session *rec)
{
    if (WG_SESSION_IN(rec->state, c->target)) {
        api_call_respond(c, 200, NULL, api_session_json(rec));
        return;
    }
    if (sleep_called_off(c, rec->state)) {
        bool save_failed = rec->last_save.at > 0 && !rec->last_save.ok;
        json_t *j = json_pack("{s:s, s:o*}", "error",
                              save_failed ? "sleep called off: the save failed, the container is "
                                            "kept awake"
                                          : "sleep called off: the session was used",
                              "session", api_session_json(rec));
        api_call_respond(c, 409, NULL, j);
        return;
    }
    json_t *j = json_pack("{s:s, s:o*}", "error",
                          rec->error && rec->error[0] ? rec->error : "session failed", "session",
                          api_session_json(rec));
    api_call_respond(c, 502, NULL, j);
}

/* Judges a record read while waiting. */
static void waiter_eval(struct call *c, const struct wg_session *rec)
{
    if (rec->version < c->seen_v)
        return; /* older than what a message told */
    c->seen_v = rec->version;
    c->state = rec->state;
    if (WG_SESSION_IN(rec->state, SLEEPING_STATES))
        c->seen_sleeping = true;
    if (WG_SESSION_IN(rec->state, c->target) ||
        (rec->state == WG_SESSION_FAILED && c->seen_other) || sleep_called_off(c, rec->state))
        waiter_answer(c, rec);
    else if (rec->state != WG_SESSION_FAILED)
        c->seen_other = true;
}

static void on_wait_get(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    c->pending--;
    c->checking = false;
    if (api_call_live(c) && c->waiting) {
        if (res->status == -ENOENT)
            api_call_error(c, 409, NULL, "session was destroyed while waiting");
        else if (res->status == 0 && res->rec != NULL)
            waiter_eval(c, res->rec);
        /* Other failures: the next poll or message tries again. */
        if (c->req != NULL && c->recheck) {
            c->recheck = false;
            waiter_check(c);
        }
    }
    api_call_maybe_free(c);
}

static void waiter_check(struct call *c)
{
    if (c->checking) {
        c->recheck = true;
        return;
    }
    c->next_poll = api_now_ms(c->api) + API_WAIT_POLL_MS;
    if (wg_store_get(c->api->store, c->id, on_wait_get, c) == 0) {
        c->pending++;
        c->checking = true;
    }
}

/* A sleep may first run the save hook. */
static uint64_t wait_budget_ms(const struct wg_api *api, enum wg_wake_op op)
{
    return api->cfg->sessions.wake_timeout_ms +
           (op == WG_WAKE_OP_SLEEP ? api->cfg->sessions.save.timeout_ms : 0);
}

void api_wait_begin(struct call *c)
{
    struct wg_api *api = c->api;
    /* Registered before the record is read again, so no change can slip
     * between the read and the messages. */
    wg_list_remove(&c->link);
    wg_list_push_back(&api->waiters, &c->link);
    c->waiting = true;
    api->n_waiters++;
    c->deadline = api_now_ms(api) + wait_budget_ms(api, c->op);
    sub_ensure(api);
    api_tick_ensure(api);
    waiter_check(c);
}

static const char *op_verb(enum wg_wake_op op)
{
    return op == WG_WAKE_OP_WAKE ? "running" : op == WG_WAKE_OP_SLEEP ? "asleep or paused" : "gone";
}

static void waiter_timed_out(struct call *c)
{
    struct wg_api *api = c->api;
    char hdr[64], msg[128];
    snprintf(hdr, sizeof(hdr), "Retry-After: %d\r\n", WG_API_RETRY_AFTER_S);
    snprintf(msg, sizeof(msg), "session did not become %s in time (%" PRIu64 " ms)", op_verb(c->op),
             wait_budget_ms(api, c->op));
    WG_INFO(api->log, API_SUBSYS, "wait timed out, returning 504", "id=%s op=%s state=%s", c->id,
            wg_wake_op_name(c->op), wg_session_state_name(c->state));
    api_call_respond(c, 504, hdr,
                     json_pack("{s:s, s:s, s:s}", "error", msg, "id", c->id, "state",
                               wg_session_state_name(c->state)));
    api_call_maybe_free(c);
}

void api_wait_tick(struct wg_api *api, uint64_t now)
{
    struct wg_list *n, *next;
    for (n = api->waiters.next; n != &api->waiters; n = next) {
        struct call *c = wg_container_of(n, struct call, link);
        next = n->next;
        if (now >= c->deadline) {
            waiter_timed_out(c);
        } else if (now >= c->next_poll) {
            /* Pub/sub loses messages while reconnecting; a slow poll is the
             * backstop. */
            waiter_check(c);
        }
    }
}
