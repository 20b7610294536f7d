/* orchestrator/sleeper.c - idle sessions go to sleep without losing work:
 * the reaper finds them, a sleep task drains, saves and then pauses, stops
 * or removes the container.
 *
 * The reaper. Every sessions.idle.reap_every it reads the idle candidates
 * with wg_store_reap_scan() (a range of wg:active, never every session),
 * keeps those of this host, decides each with wg_orch_reap_decide() and
 * starts a sleep task for those due (none when a task of the session is
 * already live).
 *
 * A sleep task, under the session lock:
 *
 *   running --(idle check)--> draining --drain--(idle check)--> saving
 *      --exec hook--(idle check)--> stopping --docker stop--> asleep
 *                                   paused   (pause tier; docker pause after)
 *   pause tier without save_before_pause: draining --(idle check)--> paused
 *   paused, stop tier: saved since the pause -> stopping; else -> saving
 *      (docker unpause first) -> ...
 *   destroy (API, no force): as stop, then docker remove and the record goes
 *   force=1 (sleep or destroy): no drain, no save: -> stopping -> asleep, or
 *      docker remove and the record goes
 *
 * "Idle check": the move is made with wg_store_transition_idle() against the
 * last_active the decision saw, so activity written by any proxy after that
 * (a request, an open stream) refuses the move atomically and the session
 * goes back to running. A request that reaches a proxy while the session is
 * draining or saving is held there and sends a wake command; the wake
 * cancels the sleep at once (sleeper_request()), which releases the held
 * requests: the container never stopped. A request during stopping waits
 * for the wake queued behind this task, which starts the container again.
 *
 * A failed save (exit status, timeout, exec error) is recorded in last_save
 * and in a save_failed event; the session goes back to running and the
 * reaper tries again after the backoff, unless sessions.save.on_failure is
 * stop (stop tier only). A destroy is never carried out after a failed
 * save: force=1 is the operator's way to discard work. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "orchestrator/orch_int.h"

#define SLEEP_STOP_TIMEOUT_S 10
#define SAVE_EXEC_SLACK_MS                                                                         \
    ((WG_ORCH_SAVE_KILL_AFTER_S + 5) * 1000) /* beyond the in-container timeout */
#define SAVE_EVENT_OUTPUT_MAX 1024           /* bytes of hook output in an event */
#define SAVE_ARGV_MAX 80

static void sleep_done(struct orch_task *t);
static void sleep_after_save(struct orch_task *t);
static void sleep_save(struct orch_task *t);
static void sleep_docker_final(struct orch_task *t);

static const char *reason_of(const struct orch_task *t)
{
    return t->by_api ? "api" : "idle";
}

/* The activity check of each move: the operator's destroy is not called
 * off by a request. */
static int64_t cutoff_of(const struct orch_task *t)
{
    return t->tier == WG_ORCH_TIER_DESTROY || t->forced ? -1 : t->idle_cutoff;
}

/* ---- failure memory (retry backoff) ---------------------------------------------------------- */

static struct orch_save_fail *fail_find(const struct wg_orch *o, const char *id)
{
    for (size_t i = 0; i < o->n_fails; i++)
        if (strcmp(o->fails[i].id, id) == 0)
            return &o->fails[i];
    return NULL;
}

static unsigned fail_count(const struct wg_orch *o, const char *id)
{
    const struct orch_save_fail *f = fail_find(o, id);

    return f ? f->failures : 0;
}

static void fail_note(struct wg_orch *o, const char *id)
{
    struct orch_save_fail *f = fail_find(o, id);

    if (f) {
        if (f->failures < 64)
            f->failures++;
        return;
    }
    if (o->n_fails == o->cap_fails) {
        size_t cap = o->cap_fails ? o->cap_fails * 2 : 16;
        struct orch_save_fail *n = realloc(o->fails, cap * sizeof(*n));
        if (!n)
            return; /* the backoff falls back to its first step */
        o->fails = n;
        o->cap_fails = cap;
    }
    f = &o->fails[o->n_fails++];
    snprintf(f->id, sizeof(f->id), "%s", id);
    f->failures = 1;
}

static void fail_forget(struct wg_orch *o, const char *id)
{
    struct orch_save_fail *f = fail_find(o, id);

    if (f)
        *f = o->fails[--o->n_fails];
}

/* ---- small helpers --------------------------------------------------------------------------- */

static void sleep_detail(const struct orch_task *t, const char *extra, char *out, size_t len)
{
    snprintf(out, len, "{\"reason\":\"%s\",\"tier\":\"%s\"%s%s%s}", reason_of(t),
             wg_orch_tier_name(t->tier), t->forced ? ",\"force\":true" : "", extra ? "," : "",
             extra ? extra : "");
}

/* The task's last_save as a record update. */
static void save_update(const struct orch_task *t, struct wg_session_update *u)
{
    if (!t->save.at)
        return;
    u->set |= WG_SF_LAST_SAVE;
    u->last_save.at = t->save.at;
    u->last_save.ok = t->save.ok;
    u->last_save.exit_code = t->save.exit_code;
    u->last_save.commit = t->save.commit;
    u->last_save.output = t->save.output[0] ? t->save.output : NULL;
    if (t->save.ok) { /* the failure it may have left is over */
        u->set |= WG_SF_ERROR;
        u->error = NULL;
    }
}

static void sleep_done(struct orch_task *t)
{
    if (t->entry_id[0]) {
        orch_ack(t->o, t->entry_id);
        t->entry_id[0] = '\0';
    }
    orch_task_finish(t);
}

/* The store refused a step: say why, and stop. A record already running
 * means a request cancelled the sleep; the save result is kept anyway. */
static void on_saved_kept(const struct wg_store_res *res, void *arg)
{
    struct orch_task *t = arg;

    if (orch_task_returned(t))
        return;
    if (res->status != 0)
        WG_DEBUG(t->o->log, ORCH_SUBSYS, "cannot record the save result", "session=%s error=\"%s\"",
                 t->id, res->error[0] ? res->error : "refused");
    sleep_done(t);
}

static void keep_save_and_finish(struct orch_task *t)
{
    struct wg_session_update u = {0};
    const unsigned awake = WG_SESSION_BIT(WG_SESSION_RUNNING) | WG_SESSION_BIT(WG_SESSION_PAUSED) |
                           WG_SESSION_BIT(WG_SESSION_DRAINING);

    save_update(t, &u);
    if (!u.set) {
        sleep_done(t);
        return;
    }
    orch_task_call(t);
    if (wg_store_update(t->o->store, t->id, awake, &u, on_saved_kept, t) < 0) {
        orch_task_returned(t);
        sleep_done(t);
    }
}

static void on_back_to_running(const struct wg_store_res *res, void *arg)
{
    struct orch_task *t = arg;

    if (orch_task_returned(t))
        return;
    if (res->status == WG_STORE_REJECTED && res->rec && res->rec->state == WG_SESSION_RUNNING) {
        keep_save_and_finish(t); /* a request cancelled it first */
        return;
    }
    if (res->status != 0)
        WG_WARN(t->o->log, ORCH_SUBSYS, "cannot move the session back to running",
                "session=%s error=\"%s\"", t->id, res->error[0] ? res->error : "refused");
    sleep_done(t);
}

/* Back to running from draining or saving (activity, a failed save, a
 * shutdown), with the save result when there is one. */
static void back_to_running(struct orch_task *t, const char *why, const char *error)
{
    struct wg_session_update u = {0};
    char extra[256], detail[400], clean[WG_SESSION_ERROR_MAX + 1];
    unsigned from = WG_SESSION_BIT(WG_SESSION_DRAINING) | WG_SESSION_BIT(WG_SESSION_SAVING);

    save_update(t, &u);
    if (error) {
        u.set |= WG_SF_ERROR;
        u.error = wg_session_clean_text(clean, sizeof(clean), error, strlen(error));
    }
    snprintf(extra, sizeof(extra), "\"cancelled\":\"%s\"", why); /* why: a constant word */
    sleep_detail(t, extra, detail, sizeof(detail));
    orch_task_call(t);
    if (wg_store_transition(t->o->store, t->id, from, WG_SESSION_RUNNING, &u, detail,
                            on_back_to_running, t) < 0) {
        orch_task_returned(t);
        sleep_done(t);
    }
}

/* ---- the final docker step: stop, pause or remove ------------------------------------------- */

static void on_final_state(const struct wg_store_res *res, void *arg)
{
    struct orch_task *t = arg;
    struct wg_orch *o = t->o;

    if (orch_task_returned(t))
        return;
    if (res->status == 0) {
        o->m.sleeps[t->by_api][t->tier]++;
        WG_INFO(o->log, ORCH_SUBSYS,
                t->tier == WG_ORCH_TIER_DESTROY ? "session destroyed after its save"
                : t->tier == WG_ORCH_TIER_PAUSE ? "session paused"
                                                : "session asleep",
                "session=%s container=%.12s reason=%s saved=%s commit=%s", t->id, t->container,
                reason_of(t), t->save.at ? (t->save.ok ? "ok" : "failed") : "no",
                t->save.commit[0] ? t->save.commit : "-");
    } else {
        WG_WARN(o->log, ORCH_SUBSYS, "cannot record the end of the sleep",
                "session=%s error=\"%s\"", t->id, res->error[0] ? res->error : "refused");
    }
    sleep_done(t);
}

static void on_final_docker(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_task *t = arg;
    struct wg_orch *o = t->o;
    struct wg_session_update u = {0};
    char detail[256];
    int rc;

    if (orch_task_returned(t))
        return;
    if (status != 0 && status != WG_DOCKER_ENOTFOUND) {
        orch_docker_error(o, status);
        WG_ERROR(o->log, ORCH_SUBSYS, "docker call of the sleep failed",
                 "session=%s container=%.12s tier=%s docker=\"%s\"", t->id, t->container,
                 wg_orch_tier_name(t->tier), r->error);
        if (t->tier == WG_ORCH_TIER_DESTROY) {
            sleep_done(t); /* the session and its container stay */
            return;
        }
        u.set = WG_SF_ERROR;
        u.error = r->error;
        orch_task_call(t);
        if (t->tier == WG_ORCH_TIER_PAUSE)
            rc = wg_store_transition(o->store, t->id, WG_SESSION_BIT(WG_SESSION_PAUSED),
                                     WG_SESSION_RUNNING, &u, "{\"reason\":\"pause failed\"}",
                                     on_final_state, t);
        else
            rc = wg_store_transition(o->store, t->id, WG_SESSION_BIT(WG_SESSION_STOPPING),
                                     WG_SESSION_FAILED, &u, "{\"reason\":\"stop failed\"}",
                                     on_final_state, t);
        if (rc < 0) {
            orch_task_returned(t);
            sleep_done(t);
        }
        return;
    }
    if (t->tier == WG_ORCH_TIER_PAUSE) {
        /* The record said paused before the freeze. */
        o->m.sleeps[t->by_api][t->tier]++;
        WG_INFO(o->log, ORCH_SUBSYS, "session paused", "session=%s container=%.12s reason=%s",
                t->id, t->container, reason_of(t));
        sleep_done(t);
        return;
    }
    sleep_detail(t, NULL, detail, sizeof(detail));
    orch_task_call(t);
    switch (t->tier) {
    case WG_ORCH_TIER_STOP:
        u.set = WG_SF_IP;
        u.ip = NULL;
        if (status == WG_DOCKER_ENOTFOUND) {
            u.set |= WG_SF_CONTAINER_ID;
            u.container_id = NULL;
        }
        rc = wg_store_transition(o->store, t->id, WG_SESSION_BIT(WG_SESSION_STOPPING),
                                 WG_SESSION_ASLEEP, &u, detail, on_final_state, t);
        break;
    case WG_ORCH_TIER_DESTROY:
    default:
        rc = wg_store_delete(o->store, t->id, WG_SESSION_ANY, detail, on_final_state, t);
        break;
    }
    if (rc < 0) {
        orch_task_returned(t);
        sleep_done(t);
    }
}

static void sleep_docker_final(struct orch_task *t);

/* A frozen process cannot act on SIGTERM: a paused container is thawed
 * before its stop, so the stop is the clean one it would have been. The
 * unpause's own failure (not paused any more) does not matter. */
static void on_thawed_for_stop(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_task *t = arg;

    (void)r;
    if (orch_task_returned(t))
        return;
    if (status != 0)
        WG_DEBUG(t->o->log, ORCH_SUBSYS, "unpause before the stop failed, stopping anyway",
                 "session=%s status=%d", t->id, status);
    t->rec.state = WG_SESSION_STOPPING;
    sleep_docker_final(t);
}

static void sleep_docker_final(struct orch_task *t)
{
    struct wg_orch *o = t->o;
    int rc;

    t->phase = PH_WORK;
    if (!t->container[0]) {
        orch_task_call(t);
        on_final_docker(0, NULL, t); /* nothing to stop: only the record moves */
        return;
    }
    orch_task_call(t);
    if (t->tier == WG_ORCH_TIER_STOP && t->rec.state == WG_SESSION_PAUSED && !t->from_paused) {
        rc = wg_docker_unpause(o->docker, t->container, on_thawed_for_stop, t);
    } else if (t->tier == WG_ORCH_TIER_PAUSE) {
        rc = wg_docker_pause(o->docker, t->container, on_final_docker, t);
    } else {
        orch_mark(o, t->container, false, false, true);
        if (t->tier == WG_ORCH_TIER_STOP)
            rc = wg_docker_stop(o->docker, t->container, SLEEP_STOP_TIMEOUT_S, on_final_docker, t);
        else
            rc = wg_docker_remove(o->docker, t->container, true, true, on_final_docker, t);
    }
    if (rc < 0) {
        orch_task_returned(t);
        WG_ERROR(o->log, ORCH_SUBSYS, "cannot send the docker call", "session=%s error=%s", t->id,
                 strerror(-rc));
        sleep_done(t);
    }
}

/* ---- the move before the docker step ----------------------------------------------------------
 */

static void on_pre_final(const struct wg_store_res *res, void *arg)
{
    struct orch_task *t = arg;

    if (orch_task_returned(t))
        return;
    if (res->status == 0) {
        sleep_docker_final(t);
        return;
    }
    if (res->status == WG_STORE_ACTIVE) {
        t->o->m.cancelled[t->rec.state == WG_SESSION_SAVING ? 1 : 0]++;
        WG_INFO(t->o->log, ORCH_SUBSYS, "session used while it was put to sleep, keeping it awake",
                "session=%s last_active=%" PRId64 " decided_at=%" PRId64, t->id,
                res->rec ? res->rec->last_active : 0, t->idle_cutoff);
        back_to_running(t, "activity", NULL);
        return;
    }
    if (res->status == WG_STORE_REJECTED && res->rec && res->rec->state == WG_SESSION_RUNNING) {
        keep_save_and_finish(t); /* cancelled by a request: sleeper_request() */
        return;
    }
    WG_WARN(t->o->log, ORCH_SUBSYS, "cannot go on with the sleep",
            "session=%s state=%s error=\"%s\"", t->id,
            res->rec ? wg_session_state_name(res->rec->state) : "-",
            res->error[0] ? res->error : "refused");
    sleep_done(t);
}

/* from -> to (stopping or paused), refused when used since the decision. */
static void move_to_final(struct orch_task *t, unsigned from, enum wg_session_state to,
                          const char *extra)
{
    struct wg_session_update u = {0};
    char detail[512];

    save_update(t, &u);
    sleep_detail(t, extra, detail, sizeof(detail));
    orch_task_call(t);
    if (wg_store_transition_idle(t->o->store, t->id, from, to, cutoff_of(t), &u, detail,
                                 on_pre_final, t) < 0) {
        orch_task_returned(t);
        sleep_done(t);
    }
}

/* ---- the save ---------------------------------------------------------------------------------
 */

static void on_save_event(const struct wg_store_res *res, void *arg)
{
    (void)res;
    (void)arg;
}

static void record_save_event(struct orch_task *t, double seconds, const char *docker_error)
{
    json_t *d = json_object();
    char *text = NULL;
    const char *out = t->save.output;
    size_t olen = strlen(out);

    if (!d)
        return;
    if (olen > SAVE_EVENT_OUTPUT_MAX) /* the tail says why; the record keeps more */
        out += olen - SAVE_EVENT_OUTPUT_MAX;
    json_object_set_new(d, "ok", json_boolean(t->save.ok));
    json_object_set_new(d, "exit_code", json_integer(t->save.exit_code));
    json_object_set_new(d, "tier", json_string(wg_orch_tier_name(t->tier)));
    json_object_set_new(d, "reason", json_string(reason_of(t)));
    json_object_set_new(d, "duration_ms", json_integer((json_int_t)(seconds * 1000)));
    if (t->save.commit[0])
        json_object_set_new(d, "commit", json_string(t->save.commit));
    if (t->save.timeout)
        json_object_set_new(d, "timeout", json_true());
    if (docker_error && docker_error[0])
        json_object_set_new(d, "error", json_string(docker_error));
    if (!t->save.ok)
        json_object_set_new(d, "failures", json_integer(fail_count(t->o, t->id)));
    if (out[0]) {
        char clean[SAVE_EVENT_OUTPUT_MAX + 1];
        wg_session_clean_text(clean, sizeof(clean), out, strlen(out));
        json_object_set_new(d, "output", json_string(clean));
    }
    text = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    if (text && wg_store_event_add(t->o->store, t->id, t->save.ok ? "save" : "save_failed", text,
                                   on_save_event, NULL) < 0)
        WG_DEBUG(t->o->log, ORCH_SUBSYS, "cannot append the save event", "session=%s", t->id);
    free(text);
}

static void on_save_exec(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_task *t = arg;
    struct wg_orch *o = t->o;
    double seconds;
    const char *err = "";

    if (orch_task_returned(t))
        return;
    seconds = (double)(uv_hrtime() - t->save_started) / 1e9;
    wg_hist_observe_ns(&o->m.save, uv_hrtime() - t->save_started);
    t->save.at = orch_now_ms(o);
    t->save.exit_code = status == 0 ? r->exit_code : -1;
    t->save.timeout =
        status == -ETIMEDOUT || (status == 0 && r->exit_code != 0 &&
                                 seconds * 1000 >= (double)o->cfg->sessions.save.timeout_ms);
    t->save.ok = status == 0 && r->exit_code == 0;
    if (r && r->output_len)
        wg_session_clean_text(t->save.output, sizeof(t->save.output), r->output, r->output_len);
    else if (status != 0 && r && r->error[0])
        wg_session_clean_text(t->save.output, sizeof(t->save.output), r->error, strlen(r->error));
    if (t->save.ok && r)
        wg_orch_save_commit(r->output ? r->output : "", r->output_len, t->save.commit,
                            sizeof(t->save.commit));
    if (status != 0) {
        orch_docker_error(o, status);
        err = r && r->error[0] ? r->error : strerror(-status);
    }
    if (t->save.ok) {
        o->m.saves_ok++;
        fail_forget(o, t->id);
    } else {
        if (t->save.timeout)
            o->m.saves_timeout++;
        else
            o->m.saves_failed++;
        fail_note(o, t->id);
    }
    record_save_event(t, seconds, err);
    if (t->save.ok) {
        WG_INFO(o->log, ORCH_SUBSYS, "saved", "session=%s container=%.12s commit=%s ms=%.0f", t->id,
                t->container, t->save.commit[0] ? t->save.commit : "-", seconds * 1000);
    } else {
        char q[WG_SESSION_OUTPUT_MAX + 3];
        const char *tail = t->save.output;
        size_t tl = strlen(tail);
        if (tl > 300)
            tail += tl - 300;
        WG_WARN(o->log, ORCH_SUBSYS, "save failed",
                "session=%s container=%.12s exit_code=%d timeout=%d failures=%u docker=%s "
                "output=%s",
                t->id, t->container, t->save.exit_code, t->save.timeout, fail_count(o, t->id),
                orch_q(q, 256, err[0] ? err : "-"), orch_q(q + 256, sizeof(q) - 256, tail));
    }
    sleep_after_save(t);
}

static void sleep_after_save(struct orch_task *t)
{
    struct wg_orch *o = t->o;
    const unsigned saving = WG_SESSION_BIT(WG_SESSION_SAVING);
    char extra[160];

    if (t->shutdown_rollback) {
        back_to_running(t, "shutdown", NULL);
        return;
    }
    if (t->save.ok) {
        move_to_final(t, saving,
                      t->tier == WG_ORCH_TIER_PAUSE ? WG_SESSION_PAUSED : WG_SESSION_STOPPING,
                      "\"saved\":true");
        return;
    }
    if (t->tier == WG_ORCH_TIER_STOP && o->cfg->sessions.save.on_failure == WG_SAVE_STOP) {
        WG_WARN(o->log, ORCH_SUBSYS, "stopping although the save failed (on_failure: stop)",
                "session=%s", t->id);
        snprintf(extra, sizeof(extra), "\"saved\":false,\"on_failure\":\"stop\"");
        move_to_final(t, saving, WG_SESSION_STOPPING, extra);
        return;
    }
    if (t->tier == WG_ORCH_TIER_DESTROY)
        orch_event(o, t->id, "destroy_refused",
                   "{\"reason\":\"the save failed: the container is kept; send force=1 to "
                   "destroy without saving\"}");
    back_to_running(t, "save failed", "the save hook failed: the container is kept awake");
}

static void sleep_save(struct orch_task *t)
{
    struct wg_orch *o = t->o;
    const struct wg_save_cfg *sc = &o->cfg->sessions.save;
    const char *argv[SAVE_ARGV_MAX];
    char secs[24], when[32];
    time_t now = (time_t)(orch_now_ms(o) / 1000);
    struct tm tm;
    int rc;

    t->phase = PH_WORK;
    gmtime_r(&now, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    rc = wg_orch_save_argv((const char *const *)sc->command, sc->path, t->id, when, sc->timeout_ms,
                           argv, SAVE_ARGV_MAX, secs, sizeof(secs));
    if (rc < 0) {
        WG_ERROR(o->log, ORCH_SUBSYS, "save command too long", "session=%s", t->id);
        back_to_running(t, "save failed", "the save command has too many arguments");
        return;
    }
    WG_INFO(o->log, ORCH_SUBSYS, "saving", "session=%s container=%.12s tier=%s reason=%s", t->id,
            t->container, wg_orch_tier_name(t->tier), reason_of(t));
    t->save_started = uv_hrtime();
    orch_task_call(t);
    rc = wg_docker_exec(o->docker, t->container, argv,
                        (uint32_t)(sc->timeout_ms + SAVE_EXEC_SLACK_MS), on_save_exec, t);
    if (rc < 0) {
        orch_task_returned(t);
        WG_ERROR(o->log, ORCH_SUBSYS, "cannot send the save exec", "session=%s error=%s", t->id,
                 strerror(-rc));
        back_to_running(t, "save failed", "cannot send the save exec");
    }
}

static void on_unpaused_for_save(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_task *t = arg;

    if (orch_task_returned(t))
        return;
    if (status != 0) {
        orch_docker_error(t->o, status);
        WG_ERROR(t->o->log, ORCH_SUBSYS, "cannot unpause the container for its save",
                 "session=%s container=%.12s docker=\"%s\"", t->id, t->container, r->error);
        back_to_running(t, "save failed", r->error[0] ? r->error : "cannot unpause");
        return;
    }
    sleep_save(t);
}

/* ---- into saving ------------------------------------------------------------------------------
 */

static void on_saving(const struct wg_store_res *res, void *arg)
{
    struct orch_task *t = arg;

    if (orch_task_returned(t))
        return;
    if (res->status == WG_STORE_ACTIVE) {
        t->o->m.cancelled[0]++;
        WG_INFO(t->o->log, ORCH_SUBSYS, "session used while draining, keeping it awake",
                "session=%s", t->id);
        back_to_running(t, "activity", NULL);
        return;
    }
    if (res->status != 0) {
        WG_INFO(t->o->log, ORCH_SUBSYS, "sleep called off before the save", "session=%s state=%s",
                t->id, res->rec ? wg_session_state_name(res->rec->state) : "-");
        sleep_done(t);
        return;
    }
    t->rec.state = WG_SESSION_SAVING;
    if (t->from_paused) {
        orch_task_call(t);
        if (wg_docker_unpause(t->o->docker, t->container, on_unpaused_for_save, t) < 0) {
            orch_task_returned(t);
            back_to_running(t, "save failed", "cannot send the unpause");
        }
        return;
    }
    sleep_save(t);
}

static void to_saving(struct orch_task *t, unsigned from)
{
    char detail[256];

    sleep_detail(t, NULL, detail, sizeof(detail));
    orch_task_call(t);
    if (wg_store_transition_idle(t->o->store, t->id, from, WG_SESSION_SAVING, cutoff_of(t), NULL,
                                 detail, on_saving, t) < 0) {
        orch_task_returned(t);
        sleep_done(t);
    }
}

/* ---- draining ---------------------------------------------------------------------------------
 */

static void drained_cb(uv_timer_t *h)
{
    struct orch_task *t = h->data;
    const unsigned draining = WG_SESSION_BIT(WG_SESSION_DRAINING);

    if (t->finished || t->o->closing)
        return;
    if (t->shutdown_rollback) {
        back_to_running(t, "shutdown", NULL);
        return;
    }
    if (t->tier == WG_ORCH_TIER_PAUSE && !t->o->cfg->sessions.save.before_pause)
        move_to_final(t, draining, WG_SESSION_PAUSED, "\"saved\":false");
    else
        to_saving(t, draining);
}

static void on_draining(const struct wg_store_res *res, void *arg)
{
    struct orch_task *t = arg;

    if (orch_task_returned(t))
        return;
    if (res->status != 0) {
        WG_DEBUG(t->o->log, ORCH_SUBSYS, "not draining", "session=%s status=%d error=\"%s\"", t->id,
                 res->status, res->error);
        sleep_done(t);
        return;
    }
    t->rec.state = WG_SESSION_DRAINING;
    t->phase = PH_WORK;
    uv_timer_start(&t->timer, drained_cb, t->o->cfg->sessions.idle.drain_ms, 0);
}

/* ---- start --------------------------------------------------------------------------------------
 */

static void refuse_destroy(struct orch_task *t, const char *why)
{
    char detail[300], q[200];

    WG_WARN(t->o->log, ORCH_SUBSYS, "destroy without force refused", "session=%s why=%s", t->id,
            orch_q(q, sizeof(q), why));
    snprintf(detail, sizeof(detail), "{\"reason\":\"%s\"}", why);
    orch_event(t->o, t->id, "destroy_refused", detail);
    sleep_done(t);
}

/* force=1: the operator discards what is not saved. Destroy removes
 * whatever is there; sleep stops a container that runs (or is paused, or
 * was left by a failed start). */
static void forced_start(struct orch_task *t, const struct wg_session *rec)
{
    const unsigned can_stop = WG_SESSION_BIT(WG_SESSION_RUNNING) |
                              WG_SESSION_BIT(WG_SESSION_PAUSED) | WG_SESSION_BIT(WG_SESSION_FAILED);

    if (t->tier == WG_ORCH_TIER_DESTROY) {
        sleep_docker_final(t);
        return;
    }
    if (!WG_SESSION_IN(rec->state, can_stop) || !t->container[0]) {
        WG_INFO(t->o->log, ORCH_SUBSYS, "nothing to stop", "session=%s state=%s", t->id,
                wg_session_state_name(rec->state));
        sleep_done(t);
        return;
    }
    move_to_final(t, can_stop, WG_SESSION_STOPPING, NULL);
}

static void on_sleep_get(const struct wg_store_res *res, void *arg)
{
    struct orch_task *t = arg;
    struct wg_orch *o = t->o;
    const struct wg_session *rec = res->rec;
    bool saved_since;
    char detail[256], extra[64];

    if (orch_task_returned(t))
        return;
    if (res->status != 0 || strcmp(rec->host, o->name) != 0) {
        if (res->status == 0)
            WG_DEBUG(o->log, ORCH_SUBSYS, "session of another host, not ours to put to sleep",
                     "session=%s host=%s", t->id, rec->host);
        else if (t->by_api)
            WG_WARN(o->log, ORCH_SUBSYS, "cannot read the session, dropping the command",
                    "session=%s error=\"%s\"", t->id, res->error);
        sleep_done(t);
        return;
    }
    if (!orch_task_keep_rec(t, rec)) {
        sleep_done(t);
        return;
    }
    snprintf(t->container, sizeof(t->container), "%s", rec->container_id);
    if (t->forced) {
        forced_start(t, rec);
        return;
    }
    /* A request after the command cancels it; one before it, whose
     * activity a proxy writes a moment later, does not. */
    if (t->by_api)
        t->idle_cutoff = rec->last_active > t->cmd_at ? rec->last_active : t->cmd_at;
    saved_since =
        rec->last_save.at > 0 && rec->last_save.ok && rec->last_save.at >= rec->last_active;
    switch (rec->state) {
    case WG_SESSION_RUNNING:
        if (!t->container[0])
            break;
        snprintf(extra, sizeof(extra), "\"idle_ms\":%" PRId64, orch_now_ms(o) - rec->last_active);
        sleep_detail(t, extra, detail, sizeof(detail));
        orch_task_call(t);
        if (wg_store_transition_idle(o->store, t->id, WG_SESSION_BIT(WG_SESSION_RUNNING),
                                     WG_SESSION_DRAINING, cutoff_of(t), NULL, detail, on_draining,
                                     t) < 0) {
            orch_task_returned(t);
            sleep_done(t);
        }
        return;
    case WG_SESSION_PAUSED:
        if (t->tier == WG_ORCH_TIER_PAUSE || !t->container[0])
            break;
        /* Nothing runs in a frozen container: a save made before the pause
         * still holds everything. Otherwise thaw it for the save. */
        if (saved_since) {
            move_to_final(t, WG_SESSION_BIT(WG_SESSION_PAUSED), WG_SESSION_STOPPING,
                          "\"saved\":\"before the pause\"");
        } else {
            t->from_paused = true;
            to_saving(t, WG_SESSION_BIT(WG_SESSION_PAUSED));
        }
        return;
    case WG_SESSION_CREATING:
    case WG_SESSION_ASLEEP:
    case WG_SESSION_FAILED:
        if (t->tier != WG_ORCH_TIER_DESTROY)
            break;
        if (!t->container[0] || (rec->state == WG_SESSION_ASLEEP && saved_since)) {
            sleep_docker_final(t); /* remove what is there, then the record */
            return;
        }
        refuse_destroy(t, "the container is not running, so it cannot be saved: send force=1 to "
                          "destroy without saving");
        return;
    default:
        if (t->tier == WG_ORCH_TIER_DESTROY) {
            refuse_destroy(t, "the session is busy in a transient state: try again");
            return;
        }
        break;
    }
    WG_DEBUG(o->log, ORCH_SUBSYS, "nothing to put to sleep", "session=%s state=%s tier=%s", t->id,
             wg_session_state_name(rec->state), wg_orch_tier_name(t->tier));
    sleep_done(t);
}

static void sleep_locked(struct orch_task *t, bool held, const char *why)
{
    if (!held) {
        if (t->by_api)
            WG_WARN(t->o->log, ORCH_SUBSYS, "session is locked, dropping the sleep command",
                    "session=%s why=\"%s\"", t->id, why);
        sleep_done(t);
        return;
    }
    orch_task_call(t);
    if (wg_store_get(t->o->store, t->id, on_sleep_get, t) < 0) {
        orch_task_returned(t);
        sleep_done(t);
    }
}

void sleeper_begin(struct orch_task *t)
{
    if (t->o->shutting_down) {
        sleep_done(t);
        return;
    }
    orch_task_lock(t, sleep_locked);
}

void sleeper_command(struct wg_orch *o, const struct wg_wake_cmd *cmd)
{
    struct orch_task *t = orch_task_new(o, TK_SLEEP, cmd->session);

    if (!t) {
        WG_ERROR(o->log, ORCH_SUBSYS, "out of memory, leaving the command pending",
                 "session=%s op=%s", cmd->session, wg_wake_op_name(cmd->op));
        return;
    }
    t->tier = cmd->op == WG_WAKE_OP_DESTROY ? WG_ORCH_TIER_DESTROY : WG_ORCH_TIER_STOP;
    t->by_api = true;
    t->forced = cmd->force;
    t->idle_cutoff = -1;
    t->cmd_at = cmd->at > 0 ? cmd->at : orch_now_ms(o);
    snprintf(t->entry_id, sizeof(t->entry_id), "%s", cmd->entry_id);
    snprintf(t->from, sizeof(t->from), "%s", cmd->from);
    WG_INFO(o->log, ORCH_SUBSYS, cmd->force ? "forced command" : "sleep command",
            "session=%s op=%s entry=%s from=%s", cmd->session, wg_wake_op_name(cmd->op),
            cmd->entry_id, cmd->from[0] ? cmd->from : "-");
    orch_task_begin(t);
}

/* ---- cancel on request -------------------------------------------------------------------------
 */

static void on_request_cancel(const struct wg_store_res *res, void *arg)
{
    struct orch_task *t = arg;

    if (!t->finished && !t->o->closing && res->status == 0) {
        t->o->m.cancelled[t->rec.state == WG_SESSION_SAVING ? 1 : 0]++;
        WG_INFO(t->o->log, ORCH_SUBSYS, "a request arrived: sleep cancelled", "session=%s was=%s",
                t->id, wg_session_state_name(t->rec.state));
    }
    orch_task_unref(t);
}

void sleeper_request(struct wg_orch *o, const char *id)
{
    struct orch_task *t = orch_task_find(o, id, TK_SLEEP);
    unsigned from = WG_SESSION_BIT(WG_SESSION_DRAINING) | WG_SESSION_BIT(WG_SESSION_SAVING);
    char detail[256];

    if (!t || t->finished || t->tier == WG_ORCH_TIER_DESTROY || t->forced ||
        !WG_SESSION_IN(t->rec.state, from))
        return;
    /* The task's own next move is refused once this lands (the state is no
     * longer draining or saving); a save in flight finishes and is kept. */
    sleep_detail(t, "\"cancelled\":\"request\"", detail, sizeof(detail));
    if (wg_store_transition(o->store, id, from, WG_SESSION_RUNNING, NULL, detail, on_request_cancel,
                            t) == 0)
        t->refs++;
}

/* ---- the reaper ---------------------------------------------------------------------------------
 */

static void reap_one(struct wg_orch *o, const struct wg_store_reap *e, int64_t now)
{
    const struct wg_idle_cfg *idle = &o->cfg->sessions.idle;
    const struct wg_save_cfg *save = &o->cfg->sessions.save;
    struct wg_orch_reap_in in = {0};
    enum wg_orch_reap_action a;
    struct orch_task *t;
    const char *why;

    if (strcmp(e->host, o->name) != 0)
        return;
    o->m.reap_candidates++;
    in.state = e->state;
    in.now = now;
    in.last_active = e->last_active;
    in.pause_after_ms = e->has_pause_after ? e->pause_after_ms : idle->pause_after_ms;
    in.stop_after_ms = e->has_stop_after ? e->stop_after_ms : idle->stop_after_ms;
    in.save_at = e->save_at;
    in.save_ok = e->save_ok;
    in.retry_wait_ms = wg_orch_save_backoff_ms(fail_count(o, e->id) ? fail_count(o, e->id) : 1,
                                               save->retry_backoff_ms, save->retry_max_ms);
    a = wg_orch_reap_decide(&in, &why);
    if (a == WG_ORCH_REAP_NONE)
        return;
    if (orch_task_find(o, e->id, TK_SLEEP) || orch_task_find(o, e->id, TK_WAKE))
        return; /* an actor is at work; the next pass looks again */
    t = orch_task_new(o, TK_SLEEP, e->id);
    if (!t)
        return;
    o->m.reap_due++;
    t->tier = a == WG_ORCH_REAP_PAUSE ? WG_ORCH_TIER_PAUSE : WG_ORCH_TIER_STOP;
    t->idle_cutoff = e->last_active;
    snprintf(t->from, sizeof(t->from), "reaper");
    WG_INFO(o->log, ORCH_SUBSYS, "idle session",
            "session=%s state=%s idle_ms=%" PRId64 " tier=%s why=\"%s\"", e->id,
            wg_session_state_name(e->state), now - e->last_active, wg_orch_tier_name(t->tier), why);
    orch_task_begin(t);
}

static void reap_pass(struct wg_orch *o);

static void on_reap_scan(const struct wg_store_res *res, void *arg)
{
    struct wg_orch *o = arg;
    int64_t now;

    o->reap_busy = false;
    if (o->closing)
        return;
    if (res->status != 0) {
        o->m.reap_errors++;
        WG_DEBUG(o->log, ORCH_SUBSYS, "reaper pass failed", "error=\"%s\"", res->error);
        o->reap_offset = 0;
        return;
    }
    now = orch_now_ms(o);
    for (size_t i = 0; i < res->n_reap && !o->shutting_down; i++)
        reap_one(o, &res->reap[i], now);
    /* A full page: more idle sessions wait beyond it. */
    if (res->n_reap + res->n_bad == WG_STORE_BATCH_MAX && res->count >= 0) {
        o->reap_offset += WG_STORE_BATCH_MAX;
        reap_pass(o);
    } else {
        o->reap_offset = 0;
    }
}

static void reap_pass(struct wg_orch *o)
{
    const struct wg_idle_cfg *idle = &o->cfg->sessions.idle;
    uint64_t tier = idle->pause_after_ms;

    if (o->reap_busy || o->closing || o->shutting_down || !o->docker_ok || !o->reconciled)
        return;
    if (idle->stop_after_ms && (tier == 0 || idle->stop_after_ms < tier))
        tier = idle->stop_after_ms;
    if (o->reap_offset == 0)
        o->m.reap_passes++;
    if (wg_store_reap_scan(o->store, tier, o->reap_offset, WG_STORE_BATCH_MAX, on_reap_scan, o) ==
        0)
        o->reap_busy = true;
}

static void reap_cb(uv_timer_t *h)
{
    reap_pass(h->data);
}

void reaper_start(struct wg_orch *o)
{
    uint64_t every = o->cfg->sessions.idle.reap_every_ms;

    if (o->closing || uv_is_active((uv_handle_t *)&o->reap_timer))
        return;
    uv_timer_start(&o->reap_timer, reap_cb, every, every);
}

void reaper_stop(struct wg_orch *o)
{
    uv_timer_stop(&o->reap_timer);
}

/* ---- shutdown and metrics ----------------------------------------------------------------------
 */

static void on_rolled_back(const struct wg_store_res *res, void *arg)
{
    struct orch_task *t = arg;

    t->rollback_done = true;
    if (!t->o->closing)
        WG_INFO(t->o->log, ORCH_SUBSYS,
                res->status == 0 ? "sleep rolled back: session running again"
                                 : "sleep not rolled back: the state moved on",
                "session=%s error=\"%s\"", t->id, res->error);
    orch_task_unref(t);
}

/* A move back to running beside the task's own call in flight. */
static void rollback_now(struct orch_task *t)
{
    char detail[256];

    sleep_detail(t, "\"cancelled\":\"shutdown\"", detail, sizeof(detail));
    if (wg_store_transition(t->o->store, t->id, WG_SESSION_BIT(WG_SESSION_SAVING),
                            WG_SESSION_RUNNING, NULL, detail, on_rolled_back, t) == 0)
        t->refs++;
    else
        t->rollback_done = true;
}

unsigned sleeper_shutdown(struct wg_orch *o, bool force)
{
    unsigned left = 0;
    struct wg_list *it, *next;

    for (it = o->tasks.next; it != &o->tasks; it = next) {
        struct orch_task *t = wg_container_of(it, struct orch_task, link);
        next = it->next;
        if (t->kind != TK_SLEEP || t->finished)
            continue;
        if (t->phase == PH_WAIT_TURN || t->phase == PH_NEW || t->phase == PH_LOCK) {
            sleep_done(t); /* not begun: nothing to roll back */
            continue;
        }
        if (t->rollback_done)
            continue; /* written: the exec in flight no longer matters */
        left++;
        if (t->shutdown_rollback)
            continue;
        if (t->rec.state == WG_SESSION_DRAINING && !t->busy) {
            /* Waiting out the drain: roll back now. */
            t->shutdown_rollback = true;
            o->m.rollbacks++;
            uv_timer_stop(&t->timer);
            back_to_running(t, "shutdown", NULL);
        } else if (force && t->rec.state == WG_SESSION_SAVING) {
            /* The save in flight runs on in the container; the session is
             * awake again and the next run saves it anew. */
            t->shutdown_rollback = true;
            o->m.rollbacks++;
            if (t->busy)
                rollback_now(t); /* the exec may outlive the process */
            else
                back_to_running(t, "shutdown", NULL);
        }
    }
    return left;
}

void sleeper_free(struct wg_orch *o)
{
    free(o->fails);
    o->fails = NULL;
    o->n_fails = o->cap_fails = 0;
}

void sleeper_metrics(const struct wg_orch *o, struct wg_buf *out)
{
    static const char hname[] = "wakegate_save_duration_seconds";
    static const char *const by[2] = {"idle", "api"};

    wg_buf_appendf(out, "# HELP wakegate_sleeps_total Sessions put to sleep, by reason and tier.\n"
                        "# TYPE wakegate_sleeps_total counter\n");
    for (int r = 0; r < 2; r++)
        for (int tier = 0; tier < 3; tier++)
            wg_buf_appendf(out, "wakegate_sleeps_total{reason=\"%s\",tier=\"%s\"} %" PRIu64 "\n",
                           by[r], wg_orch_tier_name((enum wg_orch_tier)tier), o->m.sleeps[r][tier]);
    wg_buf_appendf(
        out,
        "# HELP wakegate_sleeps_cancelled_total Sleeps called off because the session was used, "
        "by the state it was in.\n"
        "# TYPE wakegate_sleeps_cancelled_total counter\n"
        "wakegate_sleeps_cancelled_total{state=\"draining\"} %" PRIu64 "\n"
        "wakegate_sleeps_cancelled_total{state=\"saving\"} %" PRIu64 "\n"
        "# HELP wakegate_sleeps_rolled_back_total Sleeps rolled back to running by a shutdown.\n"
        "# TYPE wakegate_sleeps_rolled_back_total counter\n"
        "wakegate_sleeps_rolled_back_total %" PRIu64 "\n"
        "# HELP wakegate_saves_total Runs of the save hook, by result.\n"
        "# TYPE wakegate_saves_total counter\n"
        "wakegate_saves_total{result=\"ok\"} %" PRIu64 "\n"
        "wakegate_saves_total{result=\"failed\"} %" PRIu64 "\n"
        "wakegate_saves_total{result=\"timeout\"} %" PRIu64 "\n"
        "# HELP wakegate_save_failing_sessions Sessions whose last save failed (kept awake).\n"
        "# TYPE wakegate_save_failing_sessions gauge\n"
        "wakegate_save_failing_sessions %zu\n"
        "# HELP wakegate_reaper_passes_total Reaper passes over the idle range.\n"
        "# TYPE wakegate_reaper_passes_total counter\n"
        "wakegate_reaper_passes_total %" PRIu64 "\n"
        "# HELP wakegate_reaper_candidates_total Idle candidates of this host the reaper read.\n"
        "# TYPE wakegate_reaper_candidates_total counter\n"
        "wakegate_reaper_candidates_total %" PRIu64 "\n"
        "# HELP wakegate_reaper_sleeps_started_total Sleeps the reaper started.\n"
        "# TYPE wakegate_reaper_sleeps_started_total counter\n"
        "wakegate_reaper_sleeps_started_total %" PRIu64 "\n"
        "# HELP wakegate_reaper_errors_total Reaper passes that failed (Redis).\n"
        "# TYPE wakegate_reaper_errors_total counter\n"
        "wakegate_reaper_errors_total %" PRIu64 "\n",
        o->m.cancelled[0], o->m.cancelled[1], o->m.rollbacks, o->m.saves_ok, o->m.saves_failed,
        o->m.saves_timeout, o->n_fails, o->m.reap_passes, o->m.reap_candidates, o->m.reap_due,
        o->m.reap_errors);
    wg_hist_family(out, hname, "histogram", "Time the save hook took.");
    wg_hist_write(out, hname, NULL, &o->m.save);
}
