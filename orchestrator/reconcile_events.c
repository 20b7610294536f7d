/* orchestrator/reconcile_events.c - what the Docker events stream says
 * about this host's containers: a kill or an OOM is remembered for the die
 * that follows; a die is the business of the session's wake while it
 * starts, else of a death task (struct orch_death) that moves the session
 * (asleep, failed, or failed with a crash restart); healthy goes to the
 * wake waiting for it; a container started, paused, unpaused or destroyed
 * outside wakegate gets a recheck. The stream itself is opened and kept by
 * orch.c. */
#include "orchestrator/orch_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* ---- deaths ---------------------------------------------------------------------------------- */

static void on_death_moved(const struct wg_store_res *res, void *arg)
{
    struct orch_death *d = arg;

    if (orch_task_returned(&d->t))
        return;
    if (res->status != 0)
        WG_WARN(d->t.o->log, ORCH_SUBSYS, "cannot record the container's death",
                "session=%s error=\"%s\"", d->t.id,
                res->error[0] ? res->error : "the state changed meanwhile");
    orch_task_finish(&d->t);
}

/* What the decision needs of the death, from the event, the inspect and
 * the record. */
static void death_observe(const struct orch_death *d, const struct wg_session *rec,
                          struct wg_orch_death *in)
{
    memset(in, 0, sizeof(*in));
    in->state = rec->state;
    in->by_hand = d->death_by_hand;
    in->oom = d->death_oom || d->seen.oom;
    in->exit_code = d->death_exit;
    in->uptime_ms = d->seen.started_ms && d->seen.finished_ms >= d->seen.started_ms
                        ? d->seen.finished_ms - d->seen.started_ms
                        : -1;
    if (in->uptime_ms < 0 && in->state == WG_SESSION_RUNNING && d->death_ns > 0)
        in->uptime_ms = d->death_ns / 1000000 - rec->state_since;
    in->restarts = rec->restarts;
}

/* The session fails: the error text, and the log line. */
static void death_failed(struct orch_death *d, const struct wg_orch_death *in,
                         enum wg_orch_death_action a, const char *reason, uint32_t backoff,
                         char *err, size_t errlen)
{
    if (a == WG_ORCH_DEATH_RESTART)
        snprintf(err, errlen,
                 "the container exited with %d after %" PRId64 " ms, restarting it in %u ms",
                 in->exit_code, in->uptime_ms, backoff);
    else if (in->oom)
        snprintf(err, errlen, "the container was OOM-killed");
    else
        snprintf(err, errlen, "the container exited with %d%s", in->exit_code,
                 strcmp(reason, "crash loop") == 0 ? " (crash loop: restarts exhausted)" : "");
    WG_WARN(d->t.o->log, ORCH_SUBSYS,
            a == WG_ORCH_DEATH_RESTART ? "container crashed, marking session failed and "
                                         "restarting it after a backoff"
                                       : "container died, marking session failed",
            "session=%s container=%.12s was=%s exit_code=%d oom=%d uptime_ms=%" PRId64
            " restarts=%u backoff_ms=%u",
            d->t.id, d->hint, wg_session_state_name(in->state), in->exit_code, in->oom,
            in->uptime_ms, in->restarts, backoff);
}

/* Moves the session as decided: asleep, or failed (then, for a crash soon
 * after its start, a restart after the backoff). */
static void death_move(struct orch_death *d, const struct wg_orch_death *in,
                       enum wg_orch_death_action a, const char *reason)
{
    struct wg_orch *o = d->t.o;
    struct wg_session_update u = {.set = WG_SF_IP | WG_SF_CONTAINER_ID, .container_id = d->hint};
    enum wg_session_state to = WG_SESSION_FAILED;
    uint32_t backoff = a == WG_ORCH_DEATH_RESTART ? wg_orch_backoff_ms(in->restarts) : 0;
    char detail[256], err[256];

    if (backoff)
        snprintf(detail, sizeof(detail),
                 "{\"reason\":\"%s\",\"exit_code\":%d,\"restart_in_ms\":%" PRIu32 "}", reason,
                 in->exit_code, backoff);
    else
        snprintf(detail, sizeof(detail), "{\"reason\":\"%s\",\"exit_code\":%d}", reason,
                 in->exit_code);
    if (a == WG_ORCH_DEATH_ASLEEP) {
        to = WG_SESSION_ASLEEP;
        WG_INFO(o->log, ORCH_SUBSYS, "container stopped outside wakegate, session asleep",
                "session=%s container=%.12s was=%s exit_code=%d reason=%s", d->t.id, d->hint,
                wg_session_state_name(in->state), in->exit_code, reason);
    } else {
        death_failed(d, in, a, reason, backoff, err, sizeof(err));
        u.set |= WG_SF_ERROR;
        u.error = err;
    }
    if (a == WG_ORCH_DEATH_RESTART) {
        o->st.restarts++;
        waker_restart_later(o, d->t.id, backoff);
    }
    orch_task_call(&d->t);
    orch_task_fence(&d->t, &u);
    if (wg_store_transition(o->store, d->t.id, WG_SESSION_BIT(in->state), to, &u, detail,
                            on_death_moved, d) < 0) {
        orch_task_returned(&d->t);
        orch_task_finish(&d->t);
    }
}

static void on_death_get(const struct wg_store_res *res, void *arg)
{
    struct orch_death *d = arg;
    struct wg_orch *o = d->t.o;
    struct wg_orch_death in;
    enum wg_orch_death_action a;
    const char *reason;

    if (orch_task_returned(&d->t))
        return;
    if (res->status != 0) {
        orch_task_finish(&d->t);
        return;
    }
    if (strcmp(res->rec->host, o->name) != 0) {
        /* The record belongs to the host the session lives on now: a
         * stale container's death here never moves it. */
        WG_DEBUG(o->log, ORCH_SUBSYS, "death of a container of a session homed on another host",
                 "session=%s container=%.12s host=%s", d->t.id, d->hint,
                 res->rec->host[0] ? res->rec->host : "-");
        orch_task_finish(&d->t);
        return;
    }
    if (res->rec->container_id[0] && strcmp(res->rec->container_id, d->hint) != 0) {
        WG_DEBUG(o->log, ORCH_SUBSYS, "death of a container the session no longer uses",
                 "session=%s container=%.12s current=%.12s", d->t.id, d->hint,
                 res->rec->container_id);
        orch_task_finish(&d->t);
        return;
    }
    death_observe(d, res->rec, &in);
    a = wg_orch_death_decide(&in, WG_ORCH_CRASH_WINDOW_MS, WG_ORCH_MAX_RESTARTS, &reason);
    if (a == WG_ORCH_DEATH_IGNORE) {
        WG_DEBUG(o->log, ORCH_SUBSYS, "container died, session state needs no change",
                 "session=%s container=%.12s state=%s exit_code=%d", d->t.id, d->hint,
                 wg_session_state_name(in.state), in.exit_code);
        orch_task_finish(&d->t);
        return;
    }
    death_move(d, &in, a, reason);
}

static void death_get(struct orch_death *d)
{
    orch_task_call(&d->t);
    if (wg_store_get(d->t.o->store, d->t.id, on_death_get, d) < 0) {
        orch_task_returned(&d->t);
        orch_task_finish(&d->t);
    }
}

static void on_death_inspect(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_death *d = arg;

    if (orch_task_returned(&d->t))
        return;
    memset(&d->seen, 0, sizeof(d->seen));
    if (status == 0) {
        const struct wg_docker_container *c = r->container;
        d->seen.found = true;
        d->seen.oom = c->oom_killed;
        d->seen.started_ms = c->started_ms;
        d->seen.finished_ms = c->finished_ms;
        if (d->death_exit < 0)
            d->death_exit = c->exit_code;
        if (c->running) {
            /* Restarted meanwhile (by hand, or by us): nothing died for good. */
            WG_DEBUG(d->t.o->log, ORCH_SUBSYS, "container died but runs again",
                     "session=%s container=%.12s", d->t.id, d->hint);
            orch_task_finish(&d->t);
            return;
        }
    }
    death_get(d);
}

/* No lock: the move is one compare-and-set from the state read. */
static void death_begin(struct orch_task *t)
{
    struct orch_death *d = orch_death_of(t);

    t->phase = PH_WORK;
    orch_task_call(t);
    if (wg_docker_inspect(t->o->docker, d->hint, on_death_inspect, d) < 0) {
        orch_task_returned(t);
        death_get(d);
    }
}

const struct orch_task_ops orch_death_ops = {
    .name = "death",
    .size = sizeof(struct orch_death),
    .start = death_begin,
    .cancel = NULL,
};

static void death_new(struct wg_orch *o, const struct wg_docker_event *ev, bool kill, bool oom)
{
    struct orch_task *t = orch_task_new(o, &orch_death_ops, ev->session);
    struct orch_death *d;

    if (!t)
        return;
    d = orch_death_of(t);
    snprintf(d->hint, sizeof(d->hint), "%s", ev->id);
    d->death_exit = ev->exit_code;
    d->death_by_hand = kill;
    d->death_oom = oom;
    d->death_ns = ev->time_ns;
    orch_task_begin(t);
}

/* ---- the events stream --------------------------------------------------------------------- */

void reconcile_on_event(struct wg_orch *o, const struct wg_docker_event *ev)
{
    const char *a = ev->action;

    if (!ev->session || !wg_session_id_valid(ev->session, strlen(ev->session)) || !ev->id[0] ||
        strlen(ev->id) > WG_SESSION_CONTAINER_ID_MAX || strcmp(ev->type, "container") != 0)
        return;
    WG_DEBUG(o->log, ORCH_SUBSYS, "docker event", "session=%s container=%.12s action=\"%s\"",
             ev->session, ev->id, a);
    if (strcmp(a, "kill") == 0) {
        orch_mark(o, ev->id, true, false, false);
    } else if (strcmp(a, "oom") == 0) {
        orch_mark(o, ev->id, false, true, false);
    } else if (strcmp(a, "die") == 0) {
        bool kill, oom, ours;
        orch_mark_take(o, ev->id, &kill, &oom, &ours);
        if (waker_on_death(o, ev->session, ev->id, ev->exit_code, oom, ev->time_ns))
            return;
        if (ours)
            return; /* our own stop: whoever stopped it moves the session */
        death_new(o, ev, kill, oom);
    } else if (ev->health) {
        if (wg_orch_health_ready(ev->health))
            waker_on_healthy(o, ev->session, ev->id);
    } else if (strcmp(a, "start") == 0 || strcmp(a, "unpause") == 0 || strcmp(a, "pause") == 0 ||
               strcmp(a, "destroy") == 0) {
        /* Done outside wakegate when no task of ours works on the session. */
        if (o->reconciled && !orch_session_live(o, ev->session))
            reconcile_recheck(o, ev->session, strcmp(a, "destroy") == 0 ? "" : ev->id, false);
    }
}
