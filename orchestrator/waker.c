/* orchestrator/waker.c - one session's wake, from the command to ready (or
 * failed), and the forced sleep and destroy commands.
 *
 * A wake task runs these phases (orch_int.h has the enum):
 *
 *   LOCK -> GET -> CAS (-> starting; the command is acknowledged here)
 *        -> QUEUED (admission: docker.max_concurrent_starts)
 *        -> DOCKER (inspect | create + record the id; start | unpause;
 *                   inspect the started container for its address and health)
 *        -> READY_WAIT (TCP or HTTP probe, or Docker health: events + polling)
 *        -> PUBLISH (starting -> running with ip and port)
 *
 * Two things can interrupt it: the wake deadline (sessions.wake_timeout after
 * the move to starting) and the container's death (a "die" event, or an
 * inspect that finds it exited). Both are taken at once when the task waits,
 * or noted in t->pend and taken when its call in flight returns, so a task
 * never has two calls in flight. The deadline leads to FAILING: the log
 * tail, starting -> failed with {"reason":"wake timeout","logs":...}, and a
 * stop of the container. A death leads to BACKOFF and another start, up to
 * WG_ORCH_MAX_RESTARTS times, then to FAILING. */
#include "orchestrator/orch_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define RETRY_MS 100
#define STORE_RETRY_MS 200
#define STOP_TIMEOUT_S 2    /* sessions have an init: a stop takes ~130 ms */
#define LOG_DETAIL_MAX 6000 /* bytes of log tail in an event: JSON escaping stays under the cap */

static void wake_locked(struct orch_task *t, bool held, const char *why);
static void wake_get(struct orch_task *t);
static void wake_decide(struct orch_task *t);
static void wake_cas(struct orch_task *t);
static void wake_admit(struct orch_task *t);
static void wake_run(struct orch_task *t);
static void wake_create(struct orch_task *t);
static void wake_start(struct orch_task *t);
static void wake_unpause(struct orch_task *t);
static void wake_inspect_started(struct orch_task *t);
static void wake_ready(struct orch_task *t, const char *via);
static void wake_crash(struct orch_task *t);
static void wake_fail(struct orch_task *t, const char *outcome, const char *reason, int exit_code,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static uint64_t wake_timeout_ms(const struct wg_orch *o)
{
    return o->cfg->sessions.wake_timeout_ms;
}

static uint64_t ns_between(uint64_t from_ns, uint64_t to_ns)
{
    return to_ns > from_ns && from_ns ? to_ns - from_ns : 0;
}

static unsigned ms_between(uint64_t from_ns, uint64_t to_ns)
{
    return (unsigned)(ns_between(from_ns, to_ns) / 1000000);
}

/* Whether the command that made this task has outlived the wake timeout
 * (its requester's hold has ended). */
static bool wake_expired(const struct orch_task *t)
{
    return wg_orch_wake_stale(t->cmd_at, orch_now_ms(t->o), wake_timeout_ms(t->o));
}

static void wake_ack(struct orch_task *t)
{
    if (t->entry_id[0]) {
        orch_ack(t->o, t->entry_id);
        t->entry_id[0] = '\0';
    }
}

/* Ends a task that did not (or no longer needs to) act: acknowledges its command. */
static void wake_drop(struct orch_task *t)
{
    wake_ack(t);
    orch_task_finish(t);
}

/* In a wake's callbacks, after orch_task_returned(): a deadline or a death
 * noted while the call was in flight is taken now. */
static bool wake_diverted(struct orch_task *t)
{
    enum orch_pend p = t->pend;

    if (p == PEND_NONE)
        return false;
    if (p == PEND_DEADLINE && (t->phase == PH_DOCKER || t->phase == PH_READY_WAIT ||
                               t->phase == PH_BACKOFF || t->phase == PH_QUEUED)) {
        t->pend = PEND_NONE;
        wake_fail(t, "timeout", "wake timeout", -1,
                  "not ready within %" PRIu64 " ms (wake timeout), marking session failed",
                  wake_timeout_ms(t->o));
        return true;
    }
    if (p == PEND_CRASH && (t->phase == PH_DOCKER || t->phase == PH_READY_WAIT)) {
        t->pend = PEND_NONE;
        wake_crash(t);
        return true;
    }
    t->pend = PEND_NONE;
    return false;
}

static bool wake_returned(struct orch_task *t)
{
    return orch_task_returned(t) || wake_diverted(t);
}

/* ---- commands ---------------------------------------------------------------------------------
 */

void waker_command(struct wg_orch *o, const struct wg_wake_cmd *cmd)
{
    int64_t now = orch_now_ms(o);
    struct orch_task *t;

    if (wg_orch_wake_stale(cmd->at, now, wake_timeout_ms(o))) {
        o->st.stale++;
        WG_INFO(o->log, ORCH_SUBSYS, "wake command older than the wake timeout, skipping it",
                "session=%s entry=%s from=%s age_ms=%" PRId64, cmd->session, cmd->entry_id,
                cmd->from[0] ? cmd->from : "-", now - cmd->at);
        orch_ack(o, cmd->entry_id);
        return;
    }
    /* A request reached a proxy: a sleep still draining or saving is off. */
    sleeper_request(o, cmd->session);
    t = orch_task_find(o, cmd->session, TK_WAKE);
    if (t) {
        o->st.coalesced++;
        t->force |= cmd->force;
        WG_DEBUG(o->log, ORCH_SUBSYS, "wake coalesced into the wake in progress",
                 "session=%s entry=%s from=%s", cmd->session, cmd->entry_id,
                 cmd->from[0] ? cmd->from : "-");
        orch_ack(o, cmd->entry_id);
        return;
    }
    t = orch_task_new(o, TK_WAKE, cmd->session);
    if (!t) {
        WG_ERROR(o->log, ORCH_SUBSYS, "out of memory, leaving the wake command pending",
                 "session=%s entry=%s", cmd->session, cmd->entry_id);
        return;
    }
    snprintf(t->entry_id, sizeof(t->entry_id), "%s", cmd->entry_id);
    snprintf(t->from, sizeof(t->from), "%s", cmd->from);
    t->cmd_at = cmd->at > 0 ? cmd->at : now;
    t->force = cmd->force;
    WG_INFO(o->log, ORCH_SUBSYS, "wake command", "session=%s entry=%s from=%s force=%d%s",
            cmd->session, cmd->entry_id, cmd->from[0] ? cmd->from : "-", cmd->force,
            t->phase == PH_WAIT_TURN ? " waiting_for=another_task" : "");
    orch_task_begin(t);
}

void waker_restart_later(struct wg_orch *o, const char *id, uint32_t delay_ms)
{
    struct orch_task *t = orch_task_find(o, id, TK_WAKE);

    if (t) {
        t->crash_restart = true;
        t->force = true;
        return;
    }
    t = orch_task_new(o, TK_WAKE, id);
    if (!t) {
        WG_ERROR(o->log, ORCH_SUBSYS, "out of memory, not restarting the crashed container",
                 "session=%s", id);
        return;
    }
    t->crash_restart = true;
    t->force = true;
    t->delay_ms = delay_ms;
    t->cmd_at = orch_now_ms(o) + delay_ms;
    snprintf(t->from, sizeof(t->from), "crash-restart");
    orch_task_begin(t);
}

/* ---- lock, record, compare-and-set ------------------------------------------------------------
 */

static void delayed_begin_cb(uv_timer_t *h)
{
    struct orch_task *t = h->data;

    t->delay_ms = 0;
    t->phase = PH_NEW;
    orch_task_lock(t, wake_locked);
}

void waker_begin(struct orch_task *t)
{
    if (t->delay_ms) {
        t->phase = PH_BACKOFF;
        uv_timer_start(&t->timer, delayed_begin_cb, t->delay_ms, 0);
        return;
    }
    orch_task_lock(t, wake_locked);
}

static void relock_cb(uv_timer_t *h)
{
    struct orch_task *t = h->data;

    orch_task_lock(t, wake_locked);
}

static void wake_locked(struct orch_task *t, bool held, const char *why)
{
    if (!held) {
        if (wake_expired(t)) {
            WG_WARN(t->o->log, ORCH_SUBSYS,
                    "session stayed locked past the wake timeout, dropping the wake",
                    "session=%s why=\"%s\"", t->id, why);
            wake_drop(t);
            return;
        }
        WG_DEBUG(t->o->log, ORCH_SUBSYS, "session locked, retrying", "session=%s why=\"%s\"", t->id,
                 why);
        t->phase = PH_LOCK;
        uv_timer_start(&t->timer, relock_cb, RETRY_MS, 0);
        return;
    }
    wake_get(t);
}

static void regets_cb(uv_timer_t *h)
{
    wake_get(h->data);
}

static void on_wake_get(const struct wg_store_res *res, void *arg)
{
    struct orch_task *t = arg;
    struct wg_orch *o = t->o;

    if (orch_task_returned(t))
        return;
    if (res->status == -ENOENT) {
        WG_WARN(o->log, ORCH_SUBSYS, "wake for a session that has no record, dropping it",
                "session=%s from=%s", t->id, t->from[0] ? t->from : "-");
        wake_drop(t);
        return;
    }
    if (res->status != 0) {
        if (wake_expired(t)) {
            WG_ERROR(o->log, ORCH_SUBSYS, "cannot read the session, dropping the wake",
                     "session=%s error=\"%s\"", t->id, res->error);
            wake_drop(t);
            return;
        }
        WG_WARN(o->log, ORCH_SUBSYS, "cannot read the session, retrying", "session=%s error=\"%s\"",
                t->id, res->error);
        uv_timer_start(&t->timer, regets_cb, STORE_RETRY_MS, 0);
        return;
    }
    orch_task_keep_rec(t, res->rec);
    /* A record without a host (made by hand) is claimed by the host whose
     * stream carried the wake: the move to starting writes our name. */
    if (t->rec.host[0] && strcmp(t->rec.host, o->name) != 0) {
        WG_WARN(o->log, ORCH_SUBSYS, "wake for a session of another host, dropping it",
                "session=%s host=%s", t->id, t->rec.host[0] ? t->rec.host : "-");
        wake_drop(t);
        return;
    }
    wake_decide(t);
}

static void wake_get(struct orch_task *t)
{
    t->phase = PH_GET;
    orch_task_call(t);
    if (wg_store_get(t->o->store, t->id, on_wake_get, t) < 0) {
        orch_task_returned(t);
        wake_drop(t);
    }
}

static void deadline_cb(uv_timer_t *h)
{
    struct orch_task *t = h->data;

    if (t->finished)
        return;
    switch (t->phase) {
    case PH_QUEUED:
    case PH_DOCKER:
    case PH_READY_WAIT:
    case PH_BACKOFF:
        if (t->busy) {
            t->pend = PEND_DEADLINE;
            return;
        }
        wake_fail(t, "timeout", "wake timeout", -1,
                  "not ready within %" PRIu64 " ms (wake timeout), marking session failed",
                  wake_timeout_ms(t->o));
        return;
    default:
        return; /* publishing (ready wins) or already failing */
    }
}

static void arm_deadline(struct orch_task *t, int64_t since_ms)
{
    int64_t now = orch_now_ms(t->o);
    int64_t left;

    t->deadline_wall = since_ms + (int64_t)wake_timeout_ms(t->o);
    left = t->deadline_wall - now;
    if (left < 0)
        left = 0;
    if (left > (int64_t)wake_timeout_ms(t->o))
        left = (int64_t)wake_timeout_ms(t->o);
    uv_timer_start(&t->deadline, deadline_cb, (uint64_t)left, 0);
}

static void unlock_and_retry_cb(uv_timer_t *h)
{
    struct orch_task *t = h->data;

    if (wake_expired(t)) {
        WG_WARN(t->o->log, ORCH_SUBSYS,
                "session stayed in a transient state past the wake timeout, dropping the wake",
                "session=%s state=%s", t->id, wg_session_state_name(t->rec.state));
        wake_drop(t);
        return;
    }
    orch_task_lock(t, wake_locked);
}

static void wake_decide(struct orch_task *t)
{
    struct wg_orch *o = t->o;
    int64_t now = orch_now_ms(o);
    enum wg_orch_wake_action a = wg_orch_wake_decide(t->rec.state, t->rec.state_since, now,
                                                     WG_ORCH_FAILED_COOLDOWN_MS, t->force);

    switch (a) {
    case WG_ORCH_WAKE_NOOP:
        WG_INFO(o->log, ORCH_SUBSYS, "session already running, nothing to do",
                "session=%s container=%.12s", t->id, t->rec.container_id);
        wake_drop(t);
        return;
    case WG_ORCH_WAKE_REFUSE:
        WG_WARN(o->log, ORCH_SUBSYS, "session cannot be woken, dropping the wake",
                "session=%s state=%s", t->id, wg_session_state_name(t->rec.state));
        wake_drop(t);
        return;
    case WG_ORCH_WAKE_COOLDOWN:
        WG_INFO(o->log, ORCH_SUBSYS, "session failed recently, not retrying before its cool-down",
                "session=%s failed_ms_ago=%" PRId64 " cooldown_ms=%u error=%s", t->id,
                now - t->rec.state_since, WG_ORCH_FAILED_COOLDOWN_MS,
                t->rec.error ? "set" : "none");
        wake_drop(t);
        return;
    case WG_ORCH_WAKE_WAIT:
        /* Someone drains, saves or stops it: let go of the lock and look
         * again shortly (a stop ends in asleep, which a wake may start). */
        WG_DEBUG(o->log, ORCH_SUBSYS, "session busy in a transient state, waiting",
                 "session=%s state=%s", t->id, wg_session_state_name(t->rec.state));
        orch_task_unlock(t);
        t->phase = PH_LOCK;
        uv_timer_start(&t->timer, unlock_and_retry_cb, RETRY_MS, 0);
        return;
    case WG_ORCH_WAKE_RESUME:
        WG_INFO(o->log, ORCH_SUBSYS,
                "session left starting by a previous run, taking over its wake",
                "session=%s starting_ms_ago=%" PRId64, t->id, now - t->rec.state_since);
        t->t_starting = uv_hrtime();
        wake_ack(t);
        arm_deadline(t, t->rec.state_since);
        wake_admit(t);
        return;
    case WG_ORCH_WAKE_START:
        wake_cas(t);
        return;
    }
}

static void on_wake_cas(const struct wg_store_res *res, void *arg)
{
    struct orch_task *t = arg;
    struct wg_orch *o = t->o;

    if (orch_task_returned(t))
        return;
    if (res->status == 0) {
        enum wg_session_state was = t->rec.state;
        orch_task_keep_rec(t, res->rec);
        t->t_starting = uv_hrtime();
        wake_ack(t);
        arm_deadline(t, t->rec.state_since);
        WG_INFO(o->log, ORCH_SUBSYS, "session starting", "session=%s was=%s container=%.12s%s",
                t->id, wg_session_state_name(was),
                t->rec.container_id[0] ? t->rec.container_id : "-",
                t->crash_restart ? " crash_restart=1" : "");
        wake_admit(t);
        return;
    }
    if (res->status == WG_STORE_REJECTED && !t->cas_retried) {
        /* Another actor moved it first: decide again from what it did. */
        t->cas_retried = true;
        orch_task_keep_rec(t, res->rec);
        WG_DEBUG(o->log, ORCH_SUBSYS, "move to starting refused, deciding again",
                 "session=%s state=%s", t->id, wg_session_state_name(t->rec.state));
        wake_decide(t);
        return;
    }
    if (res->status == WG_STORE_REJECTED || res->status == -ENOENT || wake_expired(t)) {
        WG_WARN(o->log, ORCH_SUBSYS, "cannot move the session to starting, dropping the wake",
                "session=%s state=%s error=\"%s\"", t->id,
                res->rec ? wg_session_state_name(res->rec->state) : "-",
                res->error[0] ? res->error : "refused");
        wake_drop(t);
        return;
    }
    WG_WARN(o->log, ORCH_SUBSYS, "move to starting failed, retrying", "session=%s error=\"%s\"",
            t->id, res->error);
    uv_timer_start(&t->timer, regets_cb, STORE_RETRY_MS, 0);
}

static void wake_cas(struct orch_task *t)
{
    struct wg_session_update u = {0};
    char detail[256];
    json_t *d;
    char *text = NULL;

    t->phase = PH_CAS;
    if (t->crash_restart)
        u.set |= WG_SF_RESTARTS_INCR;
    if (!t->rec.host[0]) {
        u.set |= WG_SF_HOST;
        u.host = t->o->name;
    }
    d = json_pack("{s:s, s:s, s:s}", "reason", t->crash_restart ? "crash restart" : "wake", "from",
                  t->from, "entry", t->entry_id);
    if (d)
        text = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    snprintf(detail, sizeof(detail), "%s", text ? text : "{\"reason\":\"wake\"}");
    free(text);
    orch_task_call(t);
    if (wg_store_transition(t->o->store, t->id,
                            WG_SESSION_BIT(WG_SESSION_ASLEEP) | WG_SESSION_BIT(WG_SESSION_PAUSED) |
                                WG_SESSION_BIT(WG_SESSION_CREATING) |
                                WG_SESSION_BIT(WG_SESSION_FAILED),
                            WG_SESSION_STARTING, &u, detail, on_wake_cas, t) < 0) {
        orch_task_returned(t);
        wake_drop(t);
    }
}

/* ---- admission --------------------------------------------------------------------------------
 */

static void wake_admit(struct orch_task *t)
{
    struct wg_orch *o = t->o;

    t->phase = PH_QUEUED;
    if (o->in_flight < o->cfg->max_concurrent_starts && wg_list_empty(&o->admit_q)) {
        wake_run(t);
        return;
    }
    wg_list_push_back(&o->admit_q, &t->qlink);
    t->in_queue = true;
    o->queued++;
    WG_INFO(o->log, ORCH_SUBSYS, "start queued: starts in flight at the cap",
            "session=%s in_flight=%u max=%u queued=%u", t->id, o->in_flight,
            o->cfg->max_concurrent_starts, o->queued);
}

void waker_admit_next(struct wg_orch *o)
{
    while (!o->closing && o->in_flight < o->cfg->max_concurrent_starts &&
           !wg_list_empty(&o->admit_q)) {
        struct orch_task *t = wg_container_of(o->admit_q.next, struct orch_task, qlink);
        wg_list_remove(&t->qlink);
        t->in_queue = false;
        o->queued--;
        wake_run(t);
    }
}

/* ---- Docker -----------------------------------------------------------------------------------
 */

/* After a call's submission failed: the task is not busy any more. */
static void docker_send_failed(struct orch_task *t, const char *what, int rc)
{
    orch_task_returned(t);
    wake_fail(t, "failed", "docker", -1, "cannot send docker %s: %s, marking session failed", what,
              strerror(-rc));
}

static void on_wake_inspect(int status, const struct wg_docker_reply *r, void *arg);

static void wake_run(struct orch_task *t)
{
    struct wg_orch *o = t->o;

    t->admitted = true;
    o->in_flight++;
    t->t_admitted = uv_hrtime();
    t->phase = PH_DOCKER;
    t->port = t->rec.port ? t->rec.port : (uint16_t)o->cfg->sessions.port;
    /* A recheck that handed over may know a container the record lacks. */
    if (!t->container[0])
        snprintf(t->container, sizeof(t->container), "%s", t->rec.container_id);
    if (!t->container[0]) {
        wake_create(t);
        return;
    }
    orch_task_call(t);
    int rc = wg_docker_inspect(o->docker, t->container, on_wake_inspect, t);
    if (rc < 0)
        docker_send_failed(t, "inspect", rc);
}

static bool labelled_for(const struct wg_docker_container *c, const char *id)
{
    const char *v = json_string_value(json_object_get(c->labels, WG_LABEL_SESSION));
    return v && strcmp(v, id) == 0;
}

static void after_inspect(struct orch_task *t, const struct wg_docker_container *c);

static void on_wake_inspect(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_task *t = arg;
    struct wg_orch *o = t->o;

    if (wake_returned(t))
        return;
    if (status == WG_DOCKER_ENOTFOUND || (status == 0 && !labelled_for(r->container, t->id))) {
        WG_INFO(o->log, ORCH_SUBSYS, "the session's container is gone, creating a new one",
                "session=%s container=%.12s docker=\"%s\"", t->id, t->container,
                status ? r->error : "not labelled for this session");
        t->container[0] = '\0';
        wake_create(t);
        return;
    }
    if (status != 0) {
        orch_docker_error(o, status);
        wake_fail(t, "failed", "docker", -1, "docker inspect failed: %s, marking session failed",
                  r->error);
        return;
    }
    if (r->container->paused) {
        wake_unpause(t);
    } else if (r->container->running) {
        WG_INFO(o->log, ORCH_SUBSYS, "container already running, checking readiness",
                "session=%s container=%.12s", t->id, t->container);
        t->start_issued_ns = orch_now_ms(o) * 1000000;
        t->t_docker = uv_hrtime();
        after_inspect(t, r->container);
    } else {
        wake_start(t);
    }
}

static void on_wake_saved(const struct wg_store_res *res, void *arg)
{
    struct orch_task *t = arg;
    struct wg_orch *o = t->o;

    if (wake_returned(t))
        return;
    if (res->status == WG_STORE_REJECTED || res->status == -ENOENT) {
        WG_WARN(o->log, ORCH_SUBSYS,
                "session left starting while its container was created, leaving it",
                "session=%s container=%.12s state=%s", t->id, t->container,
                res->rec ? wg_session_state_name(res->rec->state) : "gone");
        orch_task_finish(t);
        return;
    }
    if (res->status != 0)
        WG_WARN(o->log, ORCH_SUBSYS,
                "cannot record the container id yet, starting anyway (the ready move writes it)",
                "session=%s container=%.12s error=\"%s\"", t->id, t->container, res->error);
    wake_start(t);
}

static void wake_save_id(struct orch_task *t)
{
    struct wg_session_update u = {.set = WG_SF_CONTAINER_ID, .container_id = t->container};

    orch_task_call(t);
    if (wg_store_update(t->o->store, t->id, WG_SESSION_BIT(WG_SESSION_STARTING), &u, on_wake_saved,
                        t) < 0) {
        orch_task_returned(t);
        wake_start(t);
    }
}

static void on_name_inspect(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_task *t = arg;

    if (wake_returned(t))
        return;
    if (status == 0 && labelled_for(r->container, t->id)) {
        snprintf(t->container, sizeof(t->container), "%s", r->container->id);
        WG_INFO(t->o->log, ORCH_SUBSYS,
                "a container of this session already exists (its id was never recorded), using it",
                "session=%s container=%.12s", t->id, t->container);
        wake_save_id(t);
        return;
    }
    orch_docker_error(t->o, status);
    wake_fail(t, "failed", "docker", -1,
              "container name %s%s is taken by a container of another session, marking session "
              "failed",
              t->o->container_prefix, t->id);
}

static void on_wake_created(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_task *t = arg;
    struct wg_orch *o = t->o;
    char name[WG_SESSION_ID_MAX + 16];

    if (wake_returned(t))
        return;
    if (status == 0) {
        snprintf(t->container, sizeof(t->container), "%s", r->id);
        WG_INFO(o->log, ORCH_SUBSYS, "container created",
                "session=%s container=%.12s image=%s docker_ms=%" PRIu64, t->id, t->container,
                t->rec.image[0] ? t->rec.image : o->cfg->sessions.image, r->elapsed_us / 1000);
        wake_save_id(t);
        return;
    }
    if (status == WG_DOCKER_ECONFLICT) {
        /* The name is taken: a crash between create and recording the id. */
        snprintf(name, sizeof(name), "%s%s", o->container_prefix, t->id);
        orch_task_call(t);
        int rc = wg_docker_inspect(o->docker, name, on_name_inspect, t);
        if (rc < 0)
            docker_send_failed(t, "inspect", rc);
        return;
    }
    orch_docker_error(o, status);
    wake_fail(t, "failed", "docker create", -1, "docker create failed: %s, marking session failed",
              r->error);
}

static void wake_create(struct orch_task *t)
{
    struct wg_orch *o = t->o;
    struct wg_orch_spec sp = {0};
    struct wg_docker_label labels[WG_ORCH_SPEC_ITEMS_MAX + 2];
    struct wg_docker_spec ds = {0};
    const char *env[WG_ORCH_SPEC_ITEMS_MAX + 2];
    char err[256], name[WG_SESSION_ID_MAX + 16], port[8];
    char session_env[WG_SESSION_ID_MAX + 32];
    size_t nl = 0, ne = 0;
    int rc;

    if (wg_orch_spec_parse(t->rec.spec, &sp, err, sizeof(err)) < 0) {
        wake_fail(t, "failed", "bad spec", -1,
                  "the session's spec is invalid: %s, marking "
                  "session failed",
                  err);
        return;
    }
    for (size_t i = 0; sp.labels && sp.labels[i] && nl < WG_ORCH_SPEC_ITEMS_MAX; i += 2)
        labels[nl++] = (struct wg_docker_label){sp.labels[i], sp.labels[i + 1]};
    snprintf(port, sizeof(port), "%u", (unsigned)t->port);
    labels[nl++] = (struct wg_docker_label){"wakegate.port", port};
    labels[nl] = (struct wg_docker_label){NULL, NULL};
    snprintf(name, sizeof(name), "%s%s", o->container_prefix, t->id);
    ds.session = t->id;
    ds.name = name;
    ds.image = t->rec.image[0] ? t->rec.image : o->cfg->sessions.image;
    ds.cmd = (const char *const *)sp.cmd;
    /* The app and the save hook learn which session they serve; the spec's
     * own value wins. */
    bool own_session_env = false;
    for (size_t i = 0; sp.env && sp.env[i] && ne < WG_ORCH_SPEC_ITEMS_MAX; i++) {
        own_session_env |= strncmp(sp.env[i], "WAKEGATE_SESSION=", 17) == 0;
        env[ne++] = sp.env[i];
    }
    snprintf(session_env, sizeof(session_env), "WAKEGATE_SESSION=%s", t->id);
    if (!own_session_env)
        env[ne++] = session_env;
    env[ne] = NULL;
    ds.env = env;
    ds.binds = (const char *const *)sp.binds;
    ds.labels = labels;
    ds.port = t->port;
    t->phase = PH_DOCKER;
    orch_task_call(t);
    rc = wg_docker_create(o->docker, &ds, on_wake_created, t, err, sizeof(err));
    wg_orch_spec_release(&sp);
    if (rc == -EINVAL) {
        orch_task_returned(t);
        wake_fail(t, "failed", "bad spec", -1,
                  "docker create refused the spec: %s, marking "
                  "session failed",
                  err);
    } else if (rc < 0) {
        docker_send_failed(t, "create", rc);
    }
}

/* Kills and stops seen before this start say nothing about its deaths. */
static void forget_marks(struct orch_task *t)
{
    bool kill, oom, ours;

    orch_mark_take(t->o, t->container, &kill, &oom, &ours);
}

/* The container runs (start or unpause answered): on to readiness. */
static void wake_docker_answered(struct orch_task *t, const struct wg_docker_reply *r,
                                 const char *call)
{
    t->t_docker = uv_hrtime();
    WG_DEBUG(t->o->log, ORCH_SUBSYS, "docker call answered",
             "session=%s container=%.12s call=%s http=%ld docker_ms=%" PRIu64, t->id, t->container,
             call, r->http_status, r->elapsed_us / 1000);
    wake_inspect_started(t);
}

static void on_wake_started(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_task *t = arg;
    struct wg_orch *o = t->o;

    if (wake_returned(t))
        return;
    if (status == 0) {
        wake_docker_answered(t, r, "start");
        return;
    }
    if (status == WG_DOCKER_ENOTFOUND && !t->recreated) {
        t->recreated = true;
        WG_INFO(o->log, ORCH_SUBSYS, "container vanished before its start, creating a new one",
                "session=%s container=%.12s", t->id, t->container);
        t->container[0] = '\0';
        wake_create(t);
        return;
    }
    orch_docker_error(o, status);
    wake_fail(t, "failed", "docker start", -1, "docker start failed: %s, marking session failed",
              r->error);
}

static void wake_start(struct orch_task *t)
{
    int rc;

    t->phase = PH_DOCKER;
    t->start_issued_ns = orch_now_ms(t->o) * 1000000;
    forget_marks(t);
    orch_task_call(t);
    rc = wg_docker_start(t->o->docker, t->container, on_wake_started, t);
    if (rc < 0)
        docker_send_failed(t, "start", rc);
}

static void on_wake_unpaused(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_task *t = arg;
    struct wg_orch *o = t->o;

    if (wake_returned(t))
        return;
    if (status == 0) {
        wake_docker_answered(t, r, "unpause");
        return;
    }
    if (status == WG_DOCKER_ECONFLICT) { /* not paused (any more): start it */
        wake_start(t);
        return;
    }
    if (status == WG_DOCKER_ENOTFOUND) {
        t->container[0] = '\0';
        wake_create(t);
        return;
    }
    orch_docker_error(o, status);
    wake_fail(t, "failed", "docker unpause", -1,
              "docker unpause failed: %s, marking session failed", r->error);
}

static void wake_unpause(struct orch_task *t)
{
    int rc;

    t->phase = PH_DOCKER;
    t->start_issued_ns = orch_now_ms(t->o) * 1000000;
    forget_marks(t);
    orch_task_call(t);
    rc = wg_docker_unpause(t->o->docker, t->container, on_wake_unpaused, t);
    if (rc < 0)
        docker_send_failed(t, "unpause", rc);
}

/* ---- readiness --------------------------------------------------------------------------------
 */

/* How readiness was decided, for the "session ready" line and event:
 * Docker health, the HTTP probe (sessions.readiness.http_path) or a connect. */
static const char *ready_via(const struct orch_task *t)
{
    if (t->health)
        return "health";
    return t->o->cfg->sessions.readiness.http_path ? "http" : "tcp";
}

static void on_probe(int status, unsigned attempts, void *arg)
{
    struct orch_task *t = arg;

    (void)status;
    t->probe = NULL; /* it frees itself after calling back */
    t->probe_attempts = attempts;
    wake_ready(t, ready_via(t));
}

static void health_poll_cb(uv_timer_t *h);

static void after_inspect(struct orch_task *t, const struct wg_docker_container *c)
{
    struct wg_orch *o = t->o;
    const struct wg_readiness_cfg *rd = &o->cfg->sessions.readiness;
    int rc;

    if (c->paused) {
        wake_unpause(t);
        return;
    }
    if (!c->running) {
        t->crash_exit = c->exit_code;
        t->crash_oom = c->oom_killed;
        wake_crash(t);
        return;
    }
    snprintf(t->ip, sizeof(t->ip), "%s", c->ip ? c->ip : "");
    t->health = wg_orch_ready_mode_of(c->health) == WG_ORCH_READY_HEALTH;
    t->phase = PH_READY_WAIT;
    if (t->health) {
        if (wg_orch_health_ready(c->health)) {
            wake_ready(t, "health");
            return;
        }
        uv_timer_start(&t->timer, health_poll_cb, WG_ORCH_HEALTH_POLL_MS, 0);
        return;
    }
    if (!t->ip[0]) {
        wake_fail(t, "failed", "no address", -1,
                  "the container has no IP address to probe (network mode?), marking session "
                  "failed");
        return;
    }
    if (rd->http_path)
        rc = wg_probe_start_http(o->loop, t->ip, t->port, rd->http_path, (uint32_t)rd->interval_ms,
                                 (uint32_t)rd->timeout_ms, on_probe, t, &t->probe);
    else
        rc = wg_probe_start(o->loop, t->ip, t->port, (uint32_t)rd->interval_ms,
                            (uint32_t)rd->timeout_ms, on_probe, t, &t->probe);
    if (rc < 0)
        wake_fail(t, "failed", "probe", -1, "cannot probe %s:%u: %s, marking session failed", t->ip,
                  (unsigned)t->port, strerror(-rc));
}

static void on_health_inspect(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_task *t = arg;

    if (wake_returned(t))
        return;
    if (status != 0) {
        orch_docker_error(t->o, status);
        if (status == WG_DOCKER_ENOTFOUND) {
            wake_fail(t, "failed", "gone", -1,
                      "the container was removed while starting, marking session failed");
            return;
        }
        uv_timer_start(&t->timer, health_poll_cb, WG_ORCH_HEALTH_POLL_MS, 0);
        return;
    }
    if (!r->container->running || r->container->paused) {
        after_inspect(t, r->container);
        return;
    }
    if (r->container->ip && r->container->ip[0])
        snprintf(t->ip, sizeof(t->ip), "%s", r->container->ip);
    if (wg_orch_health_ready(r->container->health)) {
        wake_ready(t, "health");
        return;
    }
    uv_timer_start(&t->timer, health_poll_cb, WG_ORCH_HEALTH_POLL_MS, 0);
}

static void health_poll_cb(uv_timer_t *h)
{
    struct orch_task *t = h->data;
    int rc;

    if (t->finished || t->busy || t->phase != PH_READY_WAIT)
        return;
    t->polls++;
    orch_task_call(t);
    rc = wg_docker_inspect(t->o->docker, t->container, on_health_inspect, t);
    if (rc < 0)
        docker_send_failed(t, "inspect", rc);
}

void waker_on_healthy(struct orch_task *t)
{
    if (t->phase != PH_READY_WAIT || !t->health || t->busy)
        return; /* a poll in flight sees it too */
    uv_timer_stop(&t->timer);
    wake_ready(t, "health");
}

static void on_inspect_started(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_task *t = arg;

    if (wake_returned(t))
        return;
    if (status != 0) {
        orch_docker_error(t->o, status);
        wake_fail(t, "failed", "docker inspect", -1,
                  "docker inspect after the start failed: %s, marking session failed", r->error);
        return;
    }
    after_inspect(t, r->container);
}

static void wake_inspect_started(struct orch_task *t)
{
    int rc;

    orch_task_call(t);
    rc = wg_docker_inspect(t->o->docker, t->container, on_inspect_started, t);
    if (rc < 0)
        docker_send_failed(t, "inspect", rc);
}

/* ---- ready --------------------------------------------------------------------------------------
 */

static void publish_retry_cb(uv_timer_t *h);

static void on_running(const struct wg_store_res *res, void *arg)
{
    struct orch_task *t = arg;
    struct wg_orch *o = t->o;

    if (orch_task_returned(t))
        return;
    if (res->status == 0) {
        uint64_t now = uv_hrtime();
        o->st.wakes_ready++;
        wg_hist_observe_ns(&o->m.queue, ns_between(t->t_starting, t->t_admitted));
        wg_hist_observe_ns(&o->m.docker_start, ns_between(t->t_admitted, t->t_docker));
        wg_hist_observe_ns(&o->m.ready, ns_between(t->t_docker, t->t_ready));
        wg_hist_observe_ns(&o->m.total, ns_between(t->t_starting, now));
        WG_INFO(o->log, ORCH_SUBSYS, "session ready",
                "session=%s container=%.12s ip=%s port=%u via=%s queue_ms=%u docker_ms=%u "
                "ready_ms=%u total_ms=%u probes=%u polls=%u restarts=%u",
                t->id, t->container, t->ip, (unsigned)t->port, ready_via(t),
                ms_between(t->t_starting, t->t_admitted), ms_between(t->t_admitted, t->t_docker),
                ms_between(t->t_docker, t->t_ready), ms_between(t->t_starting, now),
                t->probe_attempts, t->polls, t->restarts);
        orch_task_finish(t);
        return;
    }
    if (res->status == WG_STORE_REJECTED || res->status == -ENOENT) {
        WG_WARN(o->log, ORCH_SUBSYS, "session left starting before it was ready, leaving it",
                "session=%s container=%.12s state=%s", t->id, t->container,
                res->rec ? wg_session_state_name(res->rec->state) : "gone");
        orch_task_finish(t);
        return;
    }
    if (orch_now_ms(o) < t->deadline_wall + 2 * (int64_t)wake_timeout_ms(o)) {
        WG_WARN(o->log, ORCH_SUBSYS, "cannot publish the ready session, retrying",
                "session=%s error=\"%s\"", t->id, res->error);
        uv_timer_start(&t->timer, publish_retry_cb, STORE_RETRY_MS, 0);
        return;
    }
    WG_ERROR(o->log, ORCH_SUBSYS,
             "cannot publish the ready session, leaving it to the stuck-state recovery",
             "session=%s error=\"%s\"", t->id, res->error);
    orch_task_finish(t);
}

static void wake_publish(struct orch_task *t)
{
    struct wg_session_update u = {0};
    char detail[256];

    u.set = WG_SF_CONTAINER_ID | WG_SF_IP | WG_SF_PORT | WG_SF_ERROR;
    u.container_id = t->container;
    u.ip = t->ip;
    u.port = t->port;
    u.error = NULL;
    if (!t->crash_restart) {
        u.set |= WG_SF_RESTARTS;
        u.restarts = 0;
    }
    snprintf(detail, sizeof(detail),
             "{\"reason\":\"ready\",\"via\":\"%s\",\"queue_ms\":%u,\"docker_ms\":%u,"
             "\"ready_ms\":%u}",
             ready_via(t), ms_between(t->t_starting, t->t_admitted),
             ms_between(t->t_admitted, t->t_docker), ms_between(t->t_docker, t->t_ready));
    orch_task_call(t);
    if (wg_store_transition(t->o->store, t->id, WG_SESSION_BIT(WG_SESSION_STARTING),
                            WG_SESSION_RUNNING, &u, detail, on_running, t) < 0) {
        orch_task_returned(t);
        WG_ERROR(t->o->log, ORCH_SUBSYS, "cannot send the move to running", "session=%s ip=%s",
                 t->id, t->ip);
        orch_task_finish(t);
    }
}

static void publish_retry_cb(uv_timer_t *h)
{
    wake_publish(h->data);
}

static void wake_ready(struct orch_task *t, const char *via)
{
    (void)via;
    t->t_ready = uv_hrtime();
    t->phase = PH_PUBLISH;
    uv_timer_stop(&t->deadline);
    wake_publish(t);
}

/* ---- deaths while starting ------------------------------------------------------------------ */

void waker_on_death(struct orch_task *t, int exit_code, bool oom, int64_t time_ns)
{
    if (t->phase != PH_DOCKER && t->phase != PH_READY_WAIT)
        return;
    if (!t->start_issued_ns || (time_ns > 0 && time_ns < t->start_issued_ns))
        return; /* the death of an earlier run */
    t->crash_exit = exit_code;
    t->crash_oom = oom;
    if (t->busy) {
        if (t->pend == PEND_NONE)
            t->pend = PEND_CRASH;
        return;
    }
    wake_crash(t);
}

static void restart_cb(uv_timer_t *h)
{
    struct orch_task *t = h->data;

    if (t->finished)
        return;
    wake_start(t);
}

static void on_restart_counted(const struct wg_store_res *res, void *arg)
{
    struct orch_task *t = arg;

    if (wake_returned(t))
        return;
    if (res->status == WG_STORE_REJECTED || res->status == -ENOENT) {
        WG_WARN(t->o->log, ORCH_SUBSYS, "session left starting during a crash restart, leaving it",
                "session=%s", t->id);
        orch_task_finish(t);
        return;
    }
    uv_timer_start(&t->timer, restart_cb, wg_orch_backoff_ms(t->restarts - 1), 0);
}

static void wake_crash(struct orch_task *t)
{
    struct wg_orch *o = t->o;
    struct wg_session_update u = {.set = WG_SF_RESTARTS_INCR};

    wg_probe_stop(t->probe);
    t->probe = NULL;
    uv_timer_stop(&t->timer);
    if (t->crash_oom) {
        wake_fail(t, "failed", "oom", t->crash_exit,
                  "the container was OOM-killed while starting, marking session failed");
        return;
    }
    if (t->restarts >= WG_ORCH_MAX_RESTARTS) {
        wake_fail(t, "failed", "exit", t->crash_exit,
                  "the container exited with %d while starting, %u restarts did not help, "
                  "marking session failed",
                  t->crash_exit, t->restarts);
        return;
    }
    WG_WARN(o->log, ORCH_SUBSYS, "container exited while starting, restarting it after a backoff",
            "session=%s container=%.12s exit_code=%d restart=%u backoff_ms=%" PRIu32, t->id,
            t->container, t->crash_exit, t->restarts + 1, wg_orch_backoff_ms(t->restarts));
    t->restarts++;
    o->st.restarts++;
    t->phase = PH_BACKOFF;
    t->start_issued_ns = 0;
    orch_task_call(t);
    if (wg_store_update(o->store, t->id, WG_SESSION_BIT(WG_SESSION_STARTING), &u,
                        on_restart_counted, t) < 0) {
        orch_task_returned(t);
        uv_timer_start(&t->timer, restart_cb, wg_orch_backoff_ms(t->restarts - 1), 0);
    }
}

/* ---- failing -------------------------------------------------------------------------------- */

static void on_fail_stopped(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_task *t = arg;

    if (orch_task_returned(t))
        return;
    if (status != 0 && status != WG_DOCKER_ENOTFOUND) {
        orch_docker_error(t->o, status);
        WG_WARN(t->o->log, ORCH_SUBSYS, "cannot stop the failed session's container",
                "session=%s container=%.12s docker=\"%s\"", t->id, t->container, r->error);
    } else {
        WG_INFO(t->o->log, ORCH_SUBSYS, "stopped the failed session's container",
                "session=%s container=%.12s http=%ld", t->id, t->container, r->http_status);
    }
    orch_task_finish(t);
}

static void on_failed(const struct wg_store_res *res, void *arg)
{
    struct orch_task *t = arg;
    struct wg_orch *o = t->o;
    int rc;

    if (orch_task_returned(t))
        return;
    if (res->status != 0)
        WG_WARN(o->log, ORCH_SUBSYS, "cannot move the session to failed",
                "session=%s state=%s error=\"%s\"", t->id,
                res->rec ? wg_session_state_name(res->rec->state) : "-",
                res->error[0] ? res->error : "refused");
    if (!t->container[0]) {
        orch_task_finish(t);
        return;
    }
    /* Stopped, a later wake starts clean. */
    orch_mark(o, t->container, false, false, true);
    orch_task_call(t);
    rc = wg_docker_stop(o->docker, t->container, STOP_TIMEOUT_S, on_fail_stopped, t);
    if (rc < 0) {
        orch_task_returned(t);
        orch_task_finish(t);
    }
}

static void publish_failed(struct orch_task *t, const char *logs, size_t logs_len)
{
    struct wg_orch *o = t->o;
    struct wg_session_update u = {0};
    char tail[LOG_DETAIL_MAX];
    json_t *d;
    char *detail = NULL;

    d = json_pack("{s:s, s:s}", "reason", t->fail_reason, "error", t->fail_error);
    if (d && t->fail_exit >= 0)
        json_object_set_new(d, "exit_code", json_integer(t->fail_exit));
    if (d && t->restarts)
        json_object_set_new(d, "restarts", json_integer(t->restarts));
    if (d && logs) {
        wg_session_clean_text(tail, sizeof(tail), logs, logs_len);
        json_object_set_new(d, "logs", json_string(tail));
    }
    if (d)
        detail = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    if (detail && strlen(detail) > WG_STORE_DETAIL_MAX) {
        free(detail);
        detail = NULL;
    }
    u.set = WG_SF_ERROR | WG_SF_IP;
    u.error = t->fail_error;
    u.ip = NULL;
    if (t->container[0]) {
        u.set |= WG_SF_CONTAINER_ID;
        u.container_id = t->container;
    }
    if (t->fail_outcome[0] == 't')
        o->st.wakes_timeout++;
    else
        o->st.wakes_failed++;
    orch_task_call(t);
    if (wg_store_transition(o->store, t->id, WG_SESSION_BIT(WG_SESSION_STARTING), WG_SESSION_FAILED,
                            &u, detail, on_failed, t) < 0) {
        orch_task_returned(t);
        WG_ERROR(o->log, ORCH_SUBSYS, "cannot send the move to failed", "session=%s", t->id);
        orch_task_finish(t);
    }
    free(detail);
}

static void on_fail_logs(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_task *t = arg;

    if (orch_task_returned(t))
        return;
    if (status != 0) {
        orch_docker_error(t->o, status);
        publish_failed(t, NULL, 0);
        return;
    }
    publish_failed(t, r->output ? r->output : "", r->output_len);
}

static void wake_fail(struct orch_task *t, const char *outcome, const char *reason, int exit_code,
                      const char *fmt, ...)
{
    struct wg_orch *o = t->o;
    char raw[WG_SESSION_ERROR_MAX + 1];
    va_list ap;
    int rc;

    if (t->finished || t->phase == PH_FAILING)
        return;
    if (t->in_queue) {
        wg_list_remove(&t->qlink);
        t->in_queue = false;
        o->queued--;
    }
    wg_probe_stop(t->probe);
    t->probe = NULL;
    uv_timer_stop(&t->timer);
    uv_timer_stop(&t->deadline);
    t->phase = PH_FAILING;
    t->fail_outcome = outcome;
    t->fail_exit = exit_code;
    snprintf(t->fail_reason, sizeof(t->fail_reason), "%s", reason);
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    wg_session_clean_text(t->fail_error, sizeof(t->fail_error), raw, strlen(raw));
    {
        char q[WG_SESSION_ERROR_MAX + 64];
        WG_ERROR(o->log, ORCH_SUBSYS, "wake failed",
                 "session=%s container=%.12s reason=\"%s\" exit_code=%d restarts=%u error=%s",
                 t->id, t->container[0] ? t->container : "-", reason, exit_code, t->restarts,
                 orch_q(q, sizeof(q), t->fail_error));
    }
    if (!t->container[0]) {
        publish_failed(t, NULL, 0);
        return;
    }
    orch_task_call(t);
    rc = wg_docker_logs(o->docker, t->container, WG_ORCH_LOG_TAIL_LINES, on_fail_logs, t);
    if (rc < 0) {
        orch_task_returned(t);
        publish_failed(t, NULL, 0);
    }
}

/* ---- recheck hand-over ------------------------------------------------------------------------
 */

void waker_take_over(struct orch_task *t, bool fresh_deadline)
{
    struct wg_orch *o = t->o;

    t->kind = TK_WAKE;
    t->cmd_at = orch_now_ms(o);
    t->force = true;
    snprintf(t->from, sizeof(t->from), "reconcile");
    snprintf(t->container, sizeof(t->container), "%s", t->rec.container_id);
    if (t->rec.state == WG_SESSION_STARTING) {
        WG_INFO(o->log, ORCH_SUBSYS, "resuming the wake of a session left starting",
                "session=%s container=%.12s starting_ms_ago=%" PRId64, t->id,
                t->rec.container_id[0] ? t->rec.container_id : "-", t->cmd_at - t->rec.state_since);
        t->t_starting = uv_hrtime();
        arm_deadline(t, fresh_deadline ? t->cmd_at : t->rec.state_since);
        wake_admit(t);
        return;
    }
    wake_cas(t);
}
