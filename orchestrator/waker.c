/* orchestrator/waker.c - one session's wake, from the command to its
 * container started; wake_ready.c takes it from there to ready, and
 * wake_fail.c handles its deaths while starting and its failure.
 *
 * A wake task (struct orch_wake) runs these phases (orch_int.h has the
 * task model):
 *
 *   LOCK -> GET -> CAS (-> starting; the command is acknowledged here)
 *        -> QUEUED (admission: docker.max_concurrent_starts)
 *        -> DOCKER (inspect | create + record the id; start | unpause;
 *                   inspect the started container for its address and health)
 *        -> READY_WAIT (TCP or HTTP probe, or Docker health: events + polling)
 *        -> PUBLISH (starting -> running with ip and port)
 *
 * Which Docker step follows which is decided by the pure functions of
 * orch_policy.h (wg_orch_step_after_*()).
 *
 * Two things can interrupt it: the wake deadline (sessions.wake_timeout after
 * the move to starting) and the container's death (a "die" event, or an
 * inspect that finds it exited). Both are taken at once when the task waits,
 * or noted in w->pend and taken when its call in flight returns, so a task
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

#include "common/container_spec.h"

#define RETRY_MS 100
#define STORE_RETRY_MS 200

static void wake_locked(struct orch_task *t, bool held, const char *why);
static void wake_get(struct orch_wake *w);
static void wake_decide(struct orch_wake *w);
static void wake_cas(struct orch_wake *w);
static void wake_admit(struct orch_wake *w);
static void wake_run(struct orch_wake *w);

uint64_t wake_timeout_ms(const struct wg_orch *o)
{
    return o->cfg->sessions.wake_timeout_ms;
}

/* Whether the command that made this task has outlived the wake timeout
 * (its requester's hold has ended). */
static bool wake_expired(const struct orch_wake *w)
{
    return wg_orch_wake_stale(w->cmd_at, orch_now_ms(w->t.o), wake_timeout_ms(w->t.o));
}

static void wake_ack(struct orch_wake *w)
{
    if (w->entry_id[0]) {
        orch_ack(w->t.o, w->entry_id);
        w->entry_id[0] = '\0';
    }
}

/* Ends a task that did not (or no longer needs to) act: acknowledges its command. */
static void wake_drop(struct orch_wake *w)
{
    wake_ack(w);
    orch_task_finish(&w->t);
}

static void wake_fail_timeout(struct orch_wake *w)
{
    /* No answer from the engine is not the session's failure. */
    if (w->engine_error[0]) {
        wake_engine_give_up(w);
        return;
    }
    wake_fail(w, "timeout", "wake timeout", -1,
              "not ready within %" PRIu64 " ms (wake timeout), marking session failed",
              wake_timeout_ms(w->t.o));
}

/* In a wake's callbacks, after orch_task_returned(): a deadline or a death
 * noted while the call was in flight is taken now. */
static bool wake_diverted(struct orch_wake *w)
{
    enum orch_pend p = w->pend;
    enum orch_phase ph = w->t.phase;

    if (p == PEND_NONE)
        return false;
    w->pend = PEND_NONE;
    if (p == PEND_DEADLINE &&
        (ph == PH_DOCKER || ph == PH_READY_WAIT || ph == PH_BACKOFF || ph == PH_QUEUED)) {
        wake_fail_timeout(w);
        return true;
    }
    if (p == PEND_CRASH && (ph == PH_DOCKER || ph == PH_READY_WAIT)) {
        wake_crash(w);
        return true;
    }
    return false;
}

bool wake_returned(struct orch_wake *w)
{
    return orch_task_returned(&w->t) || wake_diverted(w);
}

/* ---- an unreachable engine ----------------------------------------------------------------- */

/* Docker's truth is known again since the engine went away: the events
 * stream is open and the reconciliation round its opening began is over. */
static bool engine_truth_known(const struct wg_orch *o)
{
    return o->events_open && !o->reconcile_busy && !o->reconcile_again;
}

static void engine_retry_cb(uv_timer_t *h)
{
    struct orch_wake *w = h->data;
    struct wg_orch *o = w->t.o;
    uint32_t ms;

    if (w->t.finished || w->t.phase != PH_DOCKER || w->t.busy)
        return;
    /* A restarted engine stops the containers that outlived it (without
     * live-restore) and frees their addresses. Sessions it stopped leave
     * running in that round, before this wake's container may be given one
     * of their addresses, so no gateway sends their requests there. */
    if (!engine_truth_known(o)) {
        ms = wg_orch_engine_retry_ms(w->engine_tries, w->deadline_wall - orch_now_ms(o));
        uv_timer_start(&w->t.timer, engine_retry_cb, ms > 10 ? ms : 10, 0);
        return;
    }
    wake_docker_steps(w);
}

/* Tries the Docker steps again after a backoff, within the deadline. The
 * steps start over from the look at the container, so a create or start
 * that the engine carried out before it went away is found, not repeated. */
static void wake_engine_retry(struct orch_wake *w)
{
    struct wg_orch *o = w->t.o;
    int64_t left = w->deadline_wall - orch_now_ms(o);
    uint32_t ms = wg_orch_engine_retry_ms(w->engine_tries, left);
    char q[300], qc[48];

    if (w->engine_tries == 0)
        WG_WARN(o->log, ORCH_SUBSYS,
                "Docker engine unreachable, retrying within the wake deadline, not failing",
                "session=%s container=%.12s call=%s error=%s retry_ms=%" PRIu32
                " deadline_in_ms=%" PRId64,
                w->t.id, w->container[0] ? w->container : "-",
                orch_q(qc, sizeof(qc), w->engine_call), orch_q(q, sizeof(q), w->engine_error), ms,
                left);
    else
        WG_DEBUG(o->log, ORCH_SUBSYS, "Docker engine still unreachable, retrying",
                 "session=%s call=%s tries=%u retry_ms=%" PRIu32, w->t.id,
                 orch_q(qc, sizeof(qc), w->engine_call), w->engine_tries, ms);
    w->engine_tries++;
    wg_probe_stop(w->probe);
    w->probe = NULL;
    w->t.phase = PH_DOCKER;
    uv_timer_start(&w->t.timer, engine_retry_cb, ms, 0);
}

bool wake_docker_returned(struct orch_wake *w, int status, const struct wg_docker_reply *r,
                          const char *call)
{
    if (orch_task_returned(&w->t))
        return true;
    if (!wg_orch_engine_unreachable(status, r->http_status)) {
        w->engine_tries = 0;
        w->engine_error[0] = '\0';
        return wake_diverted(w);
    }
    orch_docker_error(w->t.o, status);
    snprintf(w->engine_call, sizeof(w->engine_call), "%s", call);
    snprintf(w->engine_error, sizeof(w->engine_error), "%s", r->error[0] ? r->error : "no answer");
    /* A death noted meanwhile is seen again by the next look at the
     * container. */
    if (w->pend == PEND_DEADLINE) {
        w->pend = PEND_NONE;
        wake_engine_give_up(w);
        return true;
    }
    w->pend = PEND_NONE;
    wake_engine_retry(w);
    return true;
}

/* ---- the kind ------------------------------------------------------------------------------ */

static void delayed_begin_cb(uv_timer_t *h)
{
    struct orch_wake *w = h->data;

    w->delay_ms = 0;
    w->t.phase = PH_NEW;
    orch_task_lock(&w->t, wake_locked);
}

static void wake_begin(struct orch_task *t)
{
    struct orch_wake *w = orch_wake_of(t);

    if (w->delay_ms) {
        w->t.phase = PH_BACKOFF;
        uv_timer_start(&w->t.timer, delayed_begin_cb, w->delay_ms, 0);
        return;
    }
    orch_task_lock(&w->t, wake_locked);
}

/* Leaves the admission queue or count, stops the probe, closes the
 * deadline. */
static void wake_cancel(struct orch_task *t)
{
    struct orch_wake *w = orch_wake_of(t);
    struct wg_orch *o = t->o;

    if (orch_task_dequeue(t))
        o->queued--;
    if (w->admitted) {
        w->admitted = false;
        o->in_flight--;
    }
    wg_probe_stop(w->probe);
    w->probe = NULL;
    orch_task_close_timer(t, &w->deadline);
}

const struct orch_task_ops orch_wake_ops = {
    .name = "wake",
    .size = sizeof(struct orch_wake),
    .start = wake_begin,
    .cancel = wake_cancel,
};

static struct orch_wake *wake_setup(struct orch_task *t)
{
    struct orch_wake *w;

    if (!t)
        return NULL;
    w = orch_wake_of(t);
    orch_task_init_timer(t, &w->deadline);
    w->fail_exit = -1;
    return w;
}

static struct orch_wake *wake_new(struct wg_orch *o, const char *id)
{
    return wake_setup(orch_task_new(o, &orch_wake_ops, id));
}

struct orch_wake *waker_find(struct wg_orch *o, const char *id)
{
    struct orch_task *t = orch_task_find(o, id, &orch_wake_ops);

    return t ? orch_wake_of(t) : NULL;
}

/* ---- commands ------------------------------------------------------------------------------ */

void waker_command(struct wg_orch *o, const struct wg_wake_cmd *cmd)
{
    int64_t now = orch_now_ms(o);
    struct orch_wake *w;

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
    w = waker_find(o, cmd->session);
    if (w) {
        o->st.coalesced++;
        w->force |= cmd->force;
        WG_DEBUG(o->log, ORCH_SUBSYS, "wake coalesced into the wake in progress",
                 "session=%s entry=%s from=%s", cmd->session, cmd->entry_id,
                 cmd->from[0] ? cmd->from : "-");
        orch_ack(o, cmd->entry_id);
        return;
    }
    w = wake_new(o, cmd->session);
    if (!w) {
        WG_ERROR(o->log, ORCH_SUBSYS, "out of memory, leaving the wake command pending",
                 "session=%s entry=%s", cmd->session, cmd->entry_id);
        return;
    }
    snprintf(w->entry_id, sizeof(w->entry_id), "%s", cmd->entry_id);
    snprintf(w->from, sizeof(w->from), "%s", cmd->from);
    w->cmd_at = cmd->at > 0 ? cmd->at : now;
    w->force = cmd->force;
    WG_INFO(o->log, ORCH_SUBSYS, "wake command", "session=%s entry=%s from=%s force=%d%s",
            cmd->session, cmd->entry_id, cmd->from[0] ? cmd->from : "-", cmd->force,
            w->t.phase == PH_WAIT_TURN ? " waiting_for=another_task" : "");
    orch_task_begin(&w->t);
}

void waker_restart_later(struct wg_orch *o, const char *id, uint32_t delay_ms)
{
    struct orch_wake *w = waker_find(o, id);

    if (w) {
        w->crash_restart = true;
        w->force = true;
        return;
    }
    w = wake_new(o, id);
    if (!w) {
        WG_ERROR(o->log, ORCH_SUBSYS, "out of memory, not restarting the crashed container",
                 "session=%s", id);
        return;
    }
    w->crash_restart = true;
    w->force = true;
    w->delay_ms = delay_ms;
    w->cmd_at = orch_now_ms(o) + delay_ms;
    snprintf(w->from, sizeof(w->from), "crash-restart");
    orch_task_begin(&w->t);
}

/* ---- lock, record, compare-and-set --------------------------------------------------------- */

static void relock_cb(uv_timer_t *h)
{
    struct orch_wake *w = h->data;

    orch_task_lock(&w->t, wake_locked);
}

static void wake_locked(struct orch_task *t, bool held, const char *why)
{
    struct orch_wake *w = orch_wake_of(t);

    if (!held) {
        if (wake_expired(w)) {
            WG_WARN(t->o->log, ORCH_SUBSYS,
                    "session stayed locked past the wake timeout, dropping the wake",
                    "session=%s why=\"%s\"", t->id, why);
            wake_drop(w);
            return;
        }
        WG_DEBUG(t->o->log, ORCH_SUBSYS, "session locked, retrying", "session=%s why=\"%s\"", t->id,
                 why);
        t->phase = PH_LOCK;
        uv_timer_start(&t->timer, relock_cb, RETRY_MS, 0);
        return;
    }
    wake_get(w);
}

static void regets_cb(uv_timer_t *h)
{
    wake_get(h->data);
}

static void on_wake_get(const struct wg_store_res *res, void *arg)
{
    struct orch_wake *w = arg;
    struct wg_orch *o = w->t.o;

    if (orch_task_returned(&w->t))
        return;
    if (res->status == -ENOENT) {
        WG_WARN(o->log, ORCH_SUBSYS, "wake for a session that has no record, dropping it",
                "session=%s from=%s", w->t.id, w->from[0] ? w->from : "-");
        wake_drop(w);
        return;
    }
    if (res->status != 0) {
        if (wake_expired(w)) {
            WG_ERROR(o->log, ORCH_SUBSYS, "cannot read the session, dropping the wake",
                     "session=%s error=\"%s\"", w->t.id, res->error);
            wake_drop(w);
            return;
        }
        WG_WARN(o->log, ORCH_SUBSYS, "cannot read the session, retrying", "session=%s error=\"%s\"",
                w->t.id, res->error);
        uv_timer_start(&w->t.timer, regets_cb, STORE_RETRY_MS, 0);
        return;
    }
    orch_task_keep_rec(&w->t, res->rec);
    /* A record without a host (made by hand) is claimed by the host whose
     * stream carried the wake: the move to starting writes our name. */
    if (w->t.rec.host[0] && strcmp(w->t.rec.host, o->name) != 0) {
        WG_WARN(o->log, ORCH_SUBSYS, "wake for a session of another host, dropping it",
                "session=%s host=%s", w->t.id, w->t.rec.host[0] ? w->t.rec.host : "-");
        wake_drop(w);
        return;
    }
    wake_decide(w);
}

static void wake_get(struct orch_wake *w)
{
    w->t.phase = PH_GET;
    orch_task_call(&w->t);
    if (wg_store_get(w->t.o->store, w->t.id, on_wake_get, w) < 0) {
        orch_task_returned(&w->t);
        wake_drop(w);
    }
}

static void deadline_cb(uv_timer_t *h)
{
    struct orch_wake *w = h->data;

    if (w->t.finished)
        return;
    switch (w->t.phase) {
    case PH_QUEUED:
    case PH_DOCKER:
    case PH_READY_WAIT:
    case PH_BACKOFF:
        if (w->t.busy) {
            w->pend = PEND_DEADLINE;
            return;
        }
        wake_fail_timeout(w);
        return;
    default:
        return; /* publishing (ready wins) or already failing */
    }
}

static void arm_deadline(struct orch_wake *w, int64_t since_ms)
{
    int64_t now = orch_now_ms(w->t.o);
    int64_t left;

    w->deadline_wall = since_ms + (int64_t)wake_timeout_ms(w->t.o);
    left = w->deadline_wall - now;
    if (left < 0)
        left = 0;
    if (left > (int64_t)wake_timeout_ms(w->t.o))
        left = (int64_t)wake_timeout_ms(w->t.o);
    uv_timer_start(&w->deadline, deadline_cb, (uint64_t)left, 0);
}

static void unlock_and_retry_cb(uv_timer_t *h)
{
    struct orch_wake *w = h->data;

    if (wake_expired(w)) {
        WG_WARN(w->t.o->log, ORCH_SUBSYS,
                "session stayed in a transient state past the wake timeout, dropping the wake",
                "session=%s state=%s", w->t.id, wg_session_state_name(w->t.rec.state));
        wake_drop(w);
        return;
    }
    orch_task_lock(&w->t, wake_locked);
}

/* The session is starting and this task holds its lock: the deadline runs
 * from since_ms, then admission. */
static void wake_starting(struct orch_wake *w, int64_t since_ms)
{
    w->t_starting = uv_hrtime();
    wake_ack(w);
    arm_deadline(w, since_ms);
    wake_admit(w);
}

static void wake_decide(struct orch_wake *w)
{
    struct wg_orch *o = w->t.o;
    const struct wg_session *rec = &w->t.rec;
    int64_t now = orch_now_ms(o);
    enum wg_orch_wake_action a = wg_orch_wake_decide(rec->state, rec->state_since, now,
                                                     WG_ORCH_FAILED_COOLDOWN_MS, w->force);

    switch (a) {
    case WG_ORCH_WAKE_NOOP:
        WG_INFO(o->log, ORCH_SUBSYS, "session already running, nothing to do",
                "session=%s container=%.12s", w->t.id, rec->container_id);
        wake_drop(w);
        return;
    case WG_ORCH_WAKE_REFUSE:
        WG_WARN(o->log, ORCH_SUBSYS, "session cannot be woken, dropping the wake",
                "session=%s state=%s", w->t.id, wg_session_state_name(rec->state));
        wake_drop(w);
        return;
    case WG_ORCH_WAKE_COOLDOWN:
        WG_INFO(o->log, ORCH_SUBSYS, "session failed recently, not retrying before its cool-down",
                "session=%s failed_ms_ago=%" PRId64 " cooldown_ms=%u error=%s", w->t.id,
                now - rec->state_since, WG_ORCH_FAILED_COOLDOWN_MS, rec->error ? "set" : "none");
        wake_drop(w);
        return;
    case WG_ORCH_WAKE_WAIT:
        /* Someone drains, saves or stops it: let go of the lock and look
         * again shortly (a stop ends in asleep, which a wake may start). */
        WG_DEBUG(o->log, ORCH_SUBSYS, "session busy in a transient state, waiting",
                 "session=%s state=%s", w->t.id, wg_session_state_name(rec->state));
        orch_task_unlock(&w->t);
        w->t.phase = PH_LOCK;
        uv_timer_start(&w->t.timer, unlock_and_retry_cb, RETRY_MS, 0);
        return;
    case WG_ORCH_WAKE_RESUME:
        WG_INFO(o->log, ORCH_SUBSYS,
                "session left starting by a previous run, taking over its wake",
                "session=%s starting_ms_ago=%" PRId64, w->t.id, now - rec->state_since);
        wake_starting(w, rec->state_since);
        return;
    case WG_ORCH_WAKE_START:
        wake_cas(w);
        return;
    }
}

static void on_wake_cas(const struct wg_store_res *res, void *arg)
{
    struct orch_wake *w = arg;
    struct wg_orch *o = w->t.o;

    if (orch_task_returned(&w->t))
        return;
    if (res->status == 0) {
        enum wg_session_state was = w->t.rec.state;
        orch_task_keep_rec(&w->t, res->rec);
        w->t_starting = uv_hrtime();
        wake_ack(w);
        arm_deadline(w, w->t.rec.state_since);
        WG_INFO(o->log, ORCH_SUBSYS, "session starting", "session=%s was=%s container=%.12s%s",
                w->t.id, wg_session_state_name(was),
                w->t.rec.container_id[0] ? w->t.rec.container_id : "-",
                w->crash_restart ? " crash_restart=1" : "");
        wake_admit(w);
        return;
    }
    if (res->status == WG_STORE_REJECTED && !w->cas_retried) {
        /* Another actor moved it first: decide again from what it did. */
        w->cas_retried = true;
        orch_task_keep_rec(&w->t, res->rec);
        WG_DEBUG(o->log, ORCH_SUBSYS, "move to starting refused, deciding again",
                 "session=%s state=%s", w->t.id, wg_session_state_name(w->t.rec.state));
        wake_decide(w);
        return;
    }
    if (res->status == WG_STORE_REJECTED || res->status == WG_STORE_FENCED ||
        res->status == -ENOENT || wake_expired(w)) {
        WG_WARN(o->log, ORCH_SUBSYS, "cannot move the session to starting, dropping the wake",
                "session=%s state=%s error=\"%s\"", w->t.id,
                res->rec ? wg_session_state_name(res->rec->state) : "-",
                res->error[0] ? res->error : "refused");
        wake_drop(w);
        return;
    }
    WG_WARN(o->log, ORCH_SUBSYS, "move to starting failed, retrying", "session=%s error=\"%s\"",
            w->t.id, res->error);
    uv_timer_start(&w->t.timer, regets_cb, STORE_RETRY_MS, 0);
}

static void wake_cas(struct orch_wake *w)
{
    struct wg_session_update u = {0};
    char detail[256];
    json_t *d;
    char *text = NULL;

    w->t.phase = PH_CAS;
    if (w->crash_restart)
        u.set |= WG_SF_RESTARTS_INCR;
    if (!w->t.rec.host[0]) {
        u.set |= WG_SF_HOST;
        u.host = w->t.o->name;
    }
    d = json_pack("{s:s, s:s, s:s}", "reason", w->crash_restart ? "crash restart" : "wake", "from",
                  w->from, "entry", w->entry_id);
    if (d)
        text = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    snprintf(detail, sizeof(detail), "%s", text ? text : "{\"reason\":\"wake\"}");
    free(text);
    orch_task_call(&w->t);
    orch_task_fence(&w->t, &u);
    if (wg_store_transition(w->t.o->store, w->t.id,
                            WG_SESSION_BIT(WG_SESSION_ASLEEP) | WG_SESSION_BIT(WG_SESSION_PAUSED) |
                                WG_SESSION_BIT(WG_SESSION_CREATING) |
                                WG_SESSION_BIT(WG_SESSION_FAILED) | WG_SESSION_BIT(WG_SESSION_LOST),
                            WG_SESSION_STARTING, &u, detail, on_wake_cas, w) < 0) {
        orch_task_returned(&w->t);
        wake_drop(w);
    }
}

/* ---- admission ----------------------------------------------------------------------------- */

static void wake_admit(struct orch_wake *w)
{
    struct wg_orch *o = w->t.o;

    w->t.phase = PH_QUEUED;
    if (wg_orch_admit_now(o->in_flight, o->cfg->max_concurrent_starts,
                          wg_list_empty(&o->admit_q))) {
        wake_run(w);
        return;
    }
    wg_list_push_back(&o->admit_q, &w->t.qlink);
    w->t.in_queue = true;
    o->queued++;
    WG_INFO(o->log, ORCH_SUBSYS, "start queued: starts in flight at the cap",
            "session=%s in_flight=%u max=%u queued=%u", w->t.id, o->in_flight,
            o->cfg->max_concurrent_starts, o->queued);
}

void waker_admit_next(struct wg_orch *o)
{
    while (!o->closing && o->in_flight < o->cfg->max_concurrent_starts &&
           !wg_list_empty(&o->admit_q)) {
        struct orch_task *t = wg_container_of(o->admit_q.next, struct orch_task, qlink);
        orch_task_dequeue(t);
        o->queued--;
        wake_run(orch_wake_of(t));
    }
}

/* ---- Docker -------------------------------------------------------------------------------- */

void wake_send_failed(struct orch_wake *w, const char *what, int rc)
{
    orch_task_returned(&w->t);
    wake_fail(w, "failed", "docker", -1, "cannot send docker %s: %s, marking session failed", what,
              strerror(-rc));
}

static void on_wake_inspect(int status, const struct wg_docker_reply *r, void *arg);

static void wake_run(struct orch_wake *w)
{
    struct wg_orch *o = w->t.o;

    w->admitted = true;
    o->in_flight++;
    w->t_admitted = uv_hrtime();
    wake_docker_steps(w);
}

void wake_docker_steps(struct orch_wake *w)
{
    struct wg_orch *o = w->t.o;
    int rc;

    w->t.phase = PH_DOCKER;
    w->port = w->t.rec.port ? w->t.rec.port : (uint16_t)o->cfg->sessions.port;
    /* A recheck that handed over may know a container the record lacks. */
    if (!w->container[0])
        snprintf(w->container, sizeof(w->container), "%s", w->t.rec.container_id);
    if (!w->container[0]) {
        wake_create(w);
        return;
    }
    orch_task_call(&w->t);
    rc = wg_docker_inspect(o->docker, w->container, on_wake_inspect, w);
    if (rc < 0)
        wake_send_failed(w, "inspect", rc);
}

static bool labelled_for(const struct wg_docker_container *c, const char *id)
{
    const char *v = json_string_value(json_object_get(c->labels, WG_LABEL_SESSION));
    return v && strcmp(v, id) == 0;
}

static void on_wake_inspect(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_wake *w = arg;
    struct wg_orch *o = w->t.o;
    const struct wg_docker_container *c = r->container;
    bool labelled;

    if (wake_docker_returned(w, status, r, "inspect"))
        return;
    labelled = status == 0 && labelled_for(c, w->t.id);
    switch (wg_orch_step_after_inspect(status, labelled, labelled && c->paused,
                                       labelled && c->running)) {
    case WG_ORCH_STEP_CREATE:
        WG_INFO(o->log, ORCH_SUBSYS, "the session's container is gone, creating a new one",
                "session=%s container=%.12s docker=\"%s\"", w->t.id, w->container,
                status ? r->error : "not labelled for this session");
        w->container[0] = '\0';
        wake_create(w);
        return;
    case WG_ORCH_STEP_UNPAUSE:
        wake_unpause(w);
        return;
    case WG_ORCH_STEP_READY:
        WG_INFO(o->log, ORCH_SUBSYS, "container already running, checking readiness",
                "session=%s container=%.12s", w->t.id, w->container);
        w->start_issued_ns = orch_now_ms(o) * 1000000;
        w->t_docker = uv_hrtime();
        wake_started(w, c);
        return;
    case WG_ORCH_STEP_START:
        wake_start(w);
        return;
    default:
        orch_docker_error(o, status);
        wake_fail(w, "failed", "docker", -1, "docker inspect failed: %s, marking session failed",
                  r->error);
        return;
    }
}

static void on_wake_saved(const struct wg_store_res *res, void *arg)
{
    struct orch_wake *w = arg;
    struct wg_orch *o = w->t.o;

    if (wake_returned(w))
        return;
    if (res->status == WG_STORE_REJECTED || res->status == WG_STORE_FENCED ||
        res->status == -ENOENT) {
        WG_WARN(o->log, ORCH_SUBSYS,
                "session left starting while its container was created, leaving it",
                "session=%s container=%.12s state=%s", w->t.id, w->container,
                res->rec ? wg_session_state_name(res->rec->state) : "gone");
        orch_task_finish(&w->t);
        return;
    }
    if (res->status != 0)
        WG_WARN(o->log, ORCH_SUBSYS,
                "cannot record the container id yet, starting anyway (the ready move writes it)",
                "session=%s container=%.12s error=\"%s\"", w->t.id, w->container, res->error);
    wake_start(w);
}

static void wake_save_id(struct orch_wake *w)
{
    struct wg_session_update u = {.set = WG_SF_CONTAINER_ID, .container_id = w->container};

    orch_task_call(&w->t);

    orch_task_fence(&w->t, &u);
    if (wg_store_update(w->t.o->store, w->t.id, WG_SESSION_BIT(WG_SESSION_STARTING), &u,
                        on_wake_saved, w) < 0) {
        orch_task_returned(&w->t);
        wake_start(w);
    }
}

static void on_name_inspect(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_wake *w = arg;

    if (wake_docker_returned(w, status, r, "inspect"))
        return;
    if (status == 0 && labelled_for(r->container, w->t.id)) {
        snprintf(w->container, sizeof(w->container), "%s", r->container->id);
        WG_INFO(w->t.o->log, ORCH_SUBSYS,
                "a container of this session already exists (its id was never recorded), using it",
                "session=%s container=%.12s", w->t.id, w->container);
        wake_save_id(w);
        return;
    }
    orch_docker_error(w->t.o, status);
    wake_fail(w, "failed", "docker", -1,
              "container name %s%s is taken by a container of another session, marking session "
              "failed",
              w->t.o->container_prefix, w->t.id);
}

static void on_wake_created(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_wake *w = arg;
    struct wg_orch *o = w->t.o;
    const struct wg_sessions_cfg *t = wg_config_template(o->cfg, w->t.rec.template_name);
    char name[WG_SESSION_ID_MAX + 16];
    int rc;

    if (wake_docker_returned(w, status, r, "create"))
        return;
    switch (wg_orch_step_after_create(status)) {
    case WG_ORCH_STEP_START:
        snprintf(w->container, sizeof(w->container), "%s", r->id);
        WG_INFO(o->log, ORCH_SUBSYS, "container created",
                "session=%s container=%.12s image=%s docker_ms=%" PRIu64, w->t.id, w->container,
                w->t.rec.image[0] ? w->t.rec.image : (t ? t->image : "-"), r->elapsed_us / 1000);
        wake_save_id(w);
        return;
    case WG_ORCH_STEP_FIND:
        /* The name is taken: a crash between create and recording the id. */
        snprintf(name, sizeof(name), "%s%s", o->container_prefix, w->t.id);
        orch_task_call(&w->t);
        rc = wg_docker_inspect(o->docker, name, on_name_inspect, w);
        if (rc < 0)
            wake_send_failed(w, "inspect", rc);
        return;
    default:
        orch_docker_error(o, status);
        if (t != NULL && t->sandbox.runtime && status > 0 && strstr(r->message, "runtime"))
            wake_fail(w, "failed", "docker create", -1,
                      "docker create failed: the engine has no runtime \"%s\" (%s%s.runtime): "
                      "%s, marking session failed",
                      t->sandbox.runtime, t == &o->cfg->sessions ? "sessions" : "templates.",
                      t == &o->cfg->sessions ? "" : t->name, r->error);
        else
            wake_fail(w, "failed", "docker create", -1,
                      "docker create failed: %s, marking session failed", r->error);
        return;
    }
}

/* The docker spec of the session's container, from its record's spec sp
 * (decoded by the caller): its name, image, command, environment with
 * WAKEGATE_SESSION, labels with the port, and binds. The arrays and texts
 * are the caller's buffers. */
struct wake_spec_bufs {
    struct wg_docker_label labels[WG_CONTAINER_SPEC_ITEMS_MAX + 4];
    const char *env[WG_CONTAINER_SPEC_ITEMS_MAX + 2];
    char name[WG_SESSION_ID_MAX + 16], port[8];
    char session_env[WG_SESSION_ID_MAX + 32];
};

/* A caller's limit (0: none) within max (0: the template's own limit). */
static uint64_t caller_limit(uint64_t asked, uint64_t max, uint64_t own)
{
    uint64_t cap = max ? max : own;

    return asked == 0 ? own : asked < cap ? asked : cap;
}

/* The limits and the sandbox, from the session's template as it is now:
 * they are the operator's, so a container created after a reload gets the
 * new ones. A limit the caller set at create time is in the spec; it is
 * held to the template's maximum as it is now too, so a reload that lowers
 * a maximum applies to sessions made before it. */
static void wake_sandbox_spec(const struct wg_sessions_cfg *t, const struct wg_container_spec *sp,
                              struct wg_docker_spec *ds)
{
    const struct wg_sandbox_cfg *sb = &t->sandbox;

    ds->memory_bytes =
        (int64_t)caller_limit(sp->memory_bytes, t->limits_max.memory_bytes, sb->memory_bytes);
    ds->nano_cpus = (int64_t)caller_limit(sp->nano_cpus, t->limits_max.nano_cpus, sb->nano_cpus);
    ds->pids_limit = (int64_t)caller_limit(sp->pids, t->limits_max.pids, sb->pids);
    ds->cap_add = (const char *const *)sb->cap_add;
    ds->read_only_root = sb->read_only_root;
    ds->user = sb->user;
    ds->runtime = sb->runtime;
}

static void wake_docker_spec(const struct orch_wake *w, const struct wg_sessions_cfg *t,
                             const struct wg_container_spec *sp, struct wake_spec_bufs *b,
                             struct wg_docker_spec *ds)
{
    const struct wg_orch *o = w->t.o;
    size_t nl = 0, ne = 0;
    bool own_session_env = false;

    for (size_t i = 0; sp->labels && sp->labels[i] && nl < WG_CONTAINER_SPEC_ITEMS_MAX; i += 2)
        b->labels[nl++] = (struct wg_docker_label){sp->labels[i], sp->labels[i + 1]};
    snprintf(b->port, sizeof(b->port), "%u", (unsigned)w->port);
    b->labels[nl++] = (struct wg_docker_label){WG_LABEL_PORT, b->port};
    b->labels[nl++] = (struct wg_docker_label){WG_LABEL_TEMPLATE, t->name};
    b->labels[nl++] = (struct wg_docker_label){WG_LABEL_HOST, o->name};
    b->labels[nl] = (struct wg_docker_label){NULL, NULL};
    snprintf(b->name, sizeof(b->name), "%s%s", o->container_prefix, w->t.id);
    ds->session = w->t.id;
    ds->name = b->name;
    ds->image = w->t.rec.image[0] ? w->t.rec.image : t->image;
    ds->cmd = (const char *const *)sp->cmd;
    /* The app and the save hook learn which session they serve; the spec's
     * own value wins. */
    for (size_t i = 0; sp->env && sp->env[i] && ne < WG_CONTAINER_SPEC_ITEMS_MAX; i++) {
        own_session_env |= strncmp(sp->env[i], "WAKEGATE_SESSION=", 17) == 0;
        b->env[ne++] = sp->env[i];
    }
    snprintf(b->session_env, sizeof(b->session_env), "WAKEGATE_SESSION=%s", w->t.id);
    if (!own_session_env)
        b->env[ne++] = b->session_env;
    b->env[ne] = NULL;
    ds->env = b->env;
    ds->binds = (const char *const *)sp->binds;
    ds->labels = b->labels;
    ds->port = w->port;
    wake_sandbox_spec(t, sp, ds);
}

void wake_create_container(struct orch_wake *w)
{
    struct wg_orch *o = w->t.o;
    struct wg_container_spec sp = {0};
    struct wake_spec_bufs bufs;
    struct wg_docker_spec ds = {0};
    const struct wg_sessions_cfg *t = wg_config_template(o->cfg, w->t.rec.template_name);
    char err[256];
    int rc;

    /* Fail closed: a template removed by a reload gives no sandbox to
     * fall back on that the operator chose for this session. */
    if (t == NULL) {
        wake_fail(w, "failed", "template", -1,
                  "the session's template \"%s\" is not configured, marking session failed",
                  w->t.rec.template_name);
        return;
    }
    if (wg_container_spec_decode(w->t.rec.spec, &sp, err, sizeof(err)) < 0) {
        wake_fail(w, "failed", "bad spec", -1,
                  "the session's spec is invalid: %s, marking "
                  "session failed",
                  err);
        return;
    }
    wake_docker_spec(w, t, &sp, &bufs, &ds);
    /* By id: the engine may hold two networks of the name (wake_network.c),
     * which always ran before and set it. */
    ds.network_mode = w->network_id;
    w->t.phase = PH_DOCKER;
    orch_task_call(&w->t);
    rc = wg_docker_create(o->docker, &ds, on_wake_created, w, err, sizeof(err));
    wg_container_spec_release(&sp);
    if (rc == -EINVAL) {
        orch_task_returned(&w->t);
        wake_fail(w, "failed", "bad spec", -1,
                  "docker create refused the spec: %s, marking "
                  "session failed",
                  err);
    } else if (rc < 0) {
        wake_send_failed(w, "create", rc);
    }
}

/* Kills and stops seen before this start say nothing about its deaths. */
static void forget_marks(struct orch_wake *w)
{
    bool kill, oom, ours;

    orch_mark_take(w->t.o, w->container, &kill, &oom, &ours);
}

/* The container runs (start or unpause answered): on to readiness. */
static void wake_docker_answered(struct orch_wake *w, const struct wg_docker_reply *r,
                                 const char *call)
{
    w->t_docker = uv_hrtime();
    WG_DEBUG(w->t.o->log, ORCH_SUBSYS, "docker call answered",
             "session=%s container=%.12s call=%s http=%ld docker_ms=%" PRIu64, w->t.id,
             w->container, call, r->http_status, r->elapsed_us / 1000);
    wake_started(w, NULL);
}

static void on_wake_started(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_wake *w = arg;
    struct wg_orch *o = w->t.o;

    if (wake_docker_returned(w, status, r, "start"))
        return;
    switch (wg_orch_step_after_start(status, w->recreated)) {
    case WG_ORCH_STEP_STARTED:
        wake_docker_answered(w, r, "start");
        return;
    case WG_ORCH_STEP_CREATE:
        w->recreated = true;
        WG_INFO(o->log, ORCH_SUBSYS, "container vanished before its start, creating a new one",
                "session=%s container=%.12s", w->t.id, w->container);
        w->container[0] = '\0';
        wake_create(w);
        return;
    default:
        orch_docker_error(o, status);
        wake_fail(w, "failed", "docker start", -1,
                  "docker start failed: %s, marking session failed", r->error);
        return;
    }
}

void wake_start(struct orch_wake *w)
{
    int rc;

    w->t.phase = PH_DOCKER;
    w->start_issued_ns = orch_now_ms(w->t.o) * 1000000;
    forget_marks(w);
    orch_task_call(&w->t);
    rc = wg_docker_start(w->t.o->docker, w->container, on_wake_started, w);
    if (rc < 0)
        wake_send_failed(w, "start", rc);
}

static void on_wake_unpaused(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_wake *w = arg;
    struct wg_orch *o = w->t.o;

    if (wake_docker_returned(w, status, r, "unpause"))
        return;
    switch (wg_orch_step_after_unpause(status)) {
    case WG_ORCH_STEP_STARTED:
        wake_docker_answered(w, r, "unpause");
        return;
    case WG_ORCH_STEP_START: /* not paused (any more): start it */
        wake_start(w);
        return;
    case WG_ORCH_STEP_CREATE:
        w->container[0] = '\0';
        wake_create(w);
        return;
    default:
        orch_docker_error(o, status);
        wake_fail(w, "failed", "docker unpause", -1,
                  "docker unpause failed: %s, marking session failed", r->error);
        return;
    }
}

void wake_unpause(struct orch_wake *w)
{
    int rc;

    w->t.phase = PH_DOCKER;
    w->start_issued_ns = orch_now_ms(w->t.o) * 1000000;
    forget_marks(w);
    orch_task_call(&w->t);
    rc = wg_docker_unpause(w->t.o->docker, w->container, on_wake_unpaused, w);
    if (rc < 0)
        wake_send_failed(w, "unpause", rc);
}

/* ---- recheck hand-over --------------------------------------------------------------------- */

void waker_take_over(struct orch_task *from, bool fresh_deadline)
{
    struct wg_orch *o = from->o;
    struct orch_wake *w = wake_setup(orch_task_successor(from, &orch_wake_ops));
    char id[WG_SESSION_ID_MAX + 1];

    snprintf(id, sizeof(id), "%s", from->id);
    orch_task_finish(from); /* its lock is the wake's now */
    if (!w) {
        WG_ERROR(o->log, ORCH_SUBSYS, "out of memory, not resuming the wake", "session=%s", id);
        return;
    }
    w->cmd_at = orch_now_ms(o);
    w->force = true;
    snprintf(w->from, sizeof(w->from), "reconcile");
    snprintf(w->container, sizeof(w->container), "%s", w->t.rec.container_id);
    if (w->t.rec.state == WG_SESSION_STARTING) {
        WG_INFO(o->log, ORCH_SUBSYS, "resuming the wake of a session left starting",
                "session=%s container=%.12s starting_ms_ago=%" PRId64, w->t.id,
                w->t.rec.container_id[0] ? w->t.rec.container_id : "-",
                w->cmd_at - w->t.rec.state_since);
        wake_starting(w, fresh_deadline ? w->cmd_at : w->t.rec.state_since);
        return;
    }
    wake_cas(w);
}
