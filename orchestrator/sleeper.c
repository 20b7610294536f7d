/* orchestrator/sleeper.c - idle sessions go to sleep without losing work:
 * the reaper (reaper.c) finds them, or a sleep or destroy command names
 * one; a sleep task drains, saves and then pauses, stops or removes the
 * container.
 *
 * A sleep task (struct orch_sleep), under the session lock; which step
 * follows which is decided by the pure wg_orch_sleep_*() of orch_policy.h:
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
 *   now=1 (sleep): as the stop tier, but neither activity nor a request
 *      calls it off (open streams are the reason an operator asks for it:
 *      the session leaves running at draining, and the proxies close its
 *      streams then); a failed save keeps the container awake whatever
 *      sessions.save.on_failure says, and the waiting caller learns why
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
/* From the stopping message to the stop: the proxies close the session's
 * streams on that message (WebSocket close 1001 "going away"), which the
 * tab should get before the app's own end of the socket. Pub/sub takes
 * well under a millisecond. */
#define SLEEP_STOP_GRACE_MS 50
/* The exec call's bound beyond the in-container timeout. */
#define SAVE_EXEC_SLACK_MS ((WG_ORCH_SAVE_KILL_AFTER_S + 5) * 1000)
#define SAVE_EVENT_OUTPUT_MAX 1024 /* bytes of hook output in an event */
#define SAVE_ARGV_MAX 80

static void sleep_done(struct orch_sleep *s);
static void sleep_after_save(struct orch_sleep *s);
static void sleep_save(struct orch_sleep *s);
static void sleep_docker_final(struct orch_sleep *s);
static void move_to_final(struct orch_sleep *s, unsigned from, enum wg_session_state to,
                          const char *extra);
static void to_saving(struct orch_sleep *s, unsigned from);

static const char *reason_of(const struct orch_sleep *s)
{
    return s->by_api ? "api" : "idle";
}

/* The activity check of each move: the operator's destroy is not called
 * off by a request. */
static int64_t cutoff_of(const struct orch_sleep *s)
{
    return s->tier == WG_ORCH_TIER_DESTROY || s->forced || s->now ? -1 : s->idle_cutoff;
}

/* ---- small helpers --------------------------------------------------------------------------- */

static void sleep_detail(const struct orch_sleep *s, const char *extra, char *out, size_t len)
{
    snprintf(out, len, "{\"reason\":\"%s\",\"tier\":\"%s\"%s%s%s%s}", reason_of(s),
             wg_orch_tier_name(s->tier), s->forced ? ",\"force\":true" : "",
             s->now ? ",\"now\":true" : "", extra ? "," : "", extra ? extra : "");
}

/* The task's last_save as a record update. */
static void save_update(const struct orch_sleep *s, struct wg_session_update *u)
{
    if (!s->save.at)
        return;
    u->set |= WG_SF_LAST_SAVE;
    u->last_save.at = s->save.at;
    u->last_save.ok = s->save.ok;
    u->last_save.exit_code = s->save.exit_code;
    u->last_save.commit = s->save.commit;
    u->last_save.output = s->save.output[0] ? s->save.output : NULL;
    if (s->save.ok) { /* the failure it may have left is over */
        u->set |= WG_SF_ERROR;
        u->error = NULL;
    }
}

static void sleep_done(struct orch_sleep *s)
{
    if (s->entry_id[0]) {
        orch_ack(s->t.o, s->entry_id);
        s->entry_id[0] = '\0';
    }
    orch_task_finish(&s->t);
}

/* The store refused a step: say why, and stop. A record already running
 * means a request cancelled the sleep; the save result is kept anyway. */
static void on_saved_kept(const struct wg_store_res *res, void *arg)
{
    struct orch_sleep *s = arg;

    if (orch_task_returned(&s->t))
        return;
    if (res->status != 0)
        WG_DEBUG(s->t.o->log, ORCH_SUBSYS, "cannot record the save result",
                 "session=%s error=\"%s\"", s->t.id, res->error[0] ? res->error : "refused");
    sleep_done(s);
}

static void keep_save_and_finish(struct orch_sleep *s)
{
    struct wg_session_update u = {0};
    const unsigned awake = WG_SESSION_BIT(WG_SESSION_RUNNING) | WG_SESSION_BIT(WG_SESSION_PAUSED) |
                           WG_SESSION_BIT(WG_SESSION_DRAINING);

    save_update(s, &u);
    if (!u.set) {
        sleep_done(s);
        return;
    }
    orch_task_call(&s->t);
    orch_task_fence(&s->t, &u);
    if (wg_store_update(s->t.o->store, s->t.id, awake, &u, on_saved_kept, s) < 0) {
        orch_task_returned(&s->t);
        sleep_done(s);
    }
}

static void on_back_to_running(const struct wg_store_res *res, void *arg)
{
    struct orch_sleep *s = arg;

    if (orch_task_returned(&s->t))
        return;
    if (res->status == WG_STORE_REJECTED && res->rec && res->rec->state == WG_SESSION_RUNNING) {
        keep_save_and_finish(s); /* a request cancelled it first */
        return;
    }
    if (res->status != 0)
        WG_WARN(s->t.o->log, ORCH_SUBSYS, "cannot move the session back to running",
                "session=%s error=\"%s\"", s->t.id, res->error[0] ? res->error : "refused");
    sleep_done(s);
}

/* Back to running from draining or saving (activity, a failed save, a
 * shutdown), with the save result when there is one. */
static void back_to_running(struct orch_sleep *s, const char *why, const char *error)
{
    struct wg_session_update u = {0};
    char extra[256], detail[400], clean[WG_SESSION_ERROR_MAX + 1];
    unsigned from = WG_SESSION_BIT(WG_SESSION_DRAINING) | WG_SESSION_BIT(WG_SESSION_SAVING);

    save_update(s, &u);
    if (error) {
        u.set |= WG_SF_ERROR;
        u.error = wg_session_clean_text(clean, sizeof(clean), error, strlen(error));
    }
    snprintf(extra, sizeof(extra), "\"cancelled\":\"%s\"", why); /* why: a constant word */
    sleep_detail(s, extra, detail, sizeof(detail));
    orch_task_call(&s->t);
    orch_task_fence(&s->t, &u);
    if (wg_store_transition(s->t.o->store, s->t.id, from, WG_SESSION_RUNNING, &u, detail,
                            on_back_to_running, s) < 0) {
        orch_task_returned(&s->t);
        sleep_done(s);
    }
}

/* ---- the final docker step: stop, pause or remove ------------------------------------------- */

static void on_final_state(const struct wg_store_res *res, void *arg)
{
    struct orch_sleep *s = arg;
    struct wg_orch *o = s->t.o;

    if (orch_task_returned(&s->t))
        return;
    if (res->status == 0) {
        o->m.sleeps[s->by_api][s->tier]++;
        WG_INFO(o->log, ORCH_SUBSYS,
                s->tier == WG_ORCH_TIER_DESTROY ? "session destroyed after its save"
                : s->tier == WG_ORCH_TIER_PAUSE ? "session paused"
                                                : "session asleep",
                "session=%s container=%.12s reason=%s saved=%s commit=%s", s->t.id, s->container,
                reason_of(s), s->save.at ? (s->save.ok ? "ok" : "failed") : "no",
                s->save.commit[0] ? s->save.commit : "-");
    } else {
        WG_WARN(o->log, ORCH_SUBSYS, "cannot record the end of the sleep",
                "session=%s error=\"%s\"", s->t.id, res->error[0] ? res->error : "refused");
    }
    sleep_done(s);
}

/* The Docker call of the sleep failed: a destroy leaves everything as it
 * is; a pause goes back to running, a stop to failed, with the error. */
static void final_failed(struct orch_sleep *s, const struct wg_docker_reply *r)
{
    struct wg_orch *o = s->t.o;
    struct wg_session_update u = {.set = WG_SF_ERROR, .error = r->error};
    int rc;

    WG_ERROR(o->log, ORCH_SUBSYS, "docker call of the sleep failed",
             "session=%s container=%.12s tier=%s docker=\"%s\"", s->t.id, s->container,
             wg_orch_tier_name(s->tier), r->error);
    if (s->tier == WG_ORCH_TIER_DESTROY) {
        sleep_done(s); /* the session and its container stay */
        return;
    }
    orch_task_call(&s->t);
    orch_task_fence(&s->t, &u);
    if (s->tier == WG_ORCH_TIER_PAUSE)
        rc = wg_store_transition(o->store, s->t.id, WG_SESSION_BIT(WG_SESSION_PAUSED),
                                 WG_SESSION_RUNNING, &u, "{\"reason\":\"pause failed\"}",
                                 on_final_state, s);
    else
        rc = wg_store_transition(o->store, s->t.id, WG_SESSION_BIT(WG_SESSION_STOPPING),
                                 WG_SESSION_FAILED, &u, "{\"reason\":\"stop failed\"}",
                                 on_final_state, s);
    if (rc < 0) {
        orch_task_returned(&s->t);
        sleep_done(s);
    }
}

/* The container stopped or is gone: stopping -> asleep, or, for a destroy,
 * the record is deleted. gone: Docker said it does not exist. */
static void final_record(struct orch_sleep *s, bool gone)
{
    struct wg_orch *o = s->t.o;
    struct wg_session_update u = {0};
    char detail[256];
    int rc;

    sleep_detail(s, NULL, detail, sizeof(detail));
    orch_task_call(&s->t);
    orch_task_fence(&s->t, &u);
    if (s->tier == WG_ORCH_TIER_STOP) {
        u.set = WG_SF_IP;
        u.ip = NULL;
        if (gone) {
            u.set |= WG_SF_CONTAINER_ID;
            u.container_id = NULL;
        }
        rc = wg_store_transition(o->store, s->t.id, WG_SESSION_BIT(WG_SESSION_STOPPING),
                                 WG_SESSION_ASLEEP, &u, detail, on_final_state, s);
    } else {
        rc = wg_store_transition(o->store, s->t.id, WG_SESSION_ANY, WG_SESSION_DESTROYED, &u,
                                 detail, on_final_state, s);
    }
    if (rc < 0) {
        orch_task_returned(&s->t);
        sleep_done(s);
    }
}

static void on_final_docker(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_sleep *s = arg;
    struct wg_orch *o = s->t.o;

    if (orch_task_returned(&s->t))
        return;
    if (status != 0 && status != WG_DOCKER_ENOTFOUND) {
        orch_docker_error(o, status);
        final_failed(s, r);
        return;
    }
    if (s->tier == WG_ORCH_TIER_PAUSE) {
        /* The record said paused before the freeze. */
        o->m.sleeps[s->by_api][s->tier]++;
        WG_INFO(o->log, ORCH_SUBSYS, "session paused", "session=%s container=%.12s reason=%s",
                s->t.id, s->container, reason_of(s));
        sleep_done(s);
        return;
    }
    final_record(s, status == WG_DOCKER_ENOTFOUND);
}

/* A frozen process cannot act on SIGTERM: a paused container is thawed
 * before its stop, so the stop is the clean one it would have been. The
 * unpause's own failure (not paused any more) does not matter. */
static void on_thawed_for_stop(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_sleep *s = arg;

    (void)r;
    if (orch_task_returned(&s->t))
        return;
    if (status != 0)
        WG_DEBUG(s->t.o->log, ORCH_SUBSYS, "unpause before the stop failed, stopping anyway",
                 "session=%s status=%d", s->t.id, status);
    s->t.rec.state = WG_SESSION_STOPPING;
    sleep_docker_final(s);
}

static void stop_grace_cb(uv_timer_t *h)
{
    struct orch_sleep *s = h->data;

    if (s->t.finished || s->t.o->closing)
        return;
    sleep_docker_final(s);
}

static void sleep_docker_final(struct orch_sleep *s)
{
    struct wg_orch *o = s->t.o;
    int rc = 0;
    enum wg_orch_sleep_call call =
        wg_orch_sleep_call(s->tier, s->t.rec.state, s->from_paused, s->container[0] != '\0');

    if (call == WG_ORCH_CALL_STOP && !s->stop_graced && !o->closing) {
        s->stop_graced = true;
        uv_timer_start(&s->t.timer, stop_grace_cb, SLEEP_STOP_GRACE_MS, 0);
        return;
    }
    s->t.phase = PH_WORK;
    orch_task_call(&s->t);
    switch (call) {
    case WG_ORCH_CALL_NONE:
        on_final_docker(0, NULL, s); /* nothing to stop: only the record moves */
        return;
    case WG_ORCH_CALL_THAW:
        rc = wg_docker_unpause(o->docker, s->container, on_thawed_for_stop, s);
        break;
    case WG_ORCH_CALL_PAUSE:
        rc = wg_docker_pause(o->docker, s->container, on_final_docker, s);
        break;
    case WG_ORCH_CALL_STOP:
        orch_mark(o, s->container, false, false, true);
        rc = wg_docker_stop(o->docker, s->container, SLEEP_STOP_TIMEOUT_S, on_final_docker, s);
        break;
    case WG_ORCH_CALL_REMOVE:
        orch_mark(o, s->container, false, false, true);
        rc = wg_docker_remove(o->docker, s->container, true, true, on_final_docker, s);
        break;
    }
    if (rc < 0) {
        orch_task_returned(&s->t);
        WG_ERROR(o->log, ORCH_SUBSYS, "cannot send the docker call", "session=%s error=%s", s->t.id,
                 strerror(-rc));
        sleep_done(s);
    }
}

/* ---- the move before the docker step --------------------------------------------------------- */

static void on_pre_final(const struct wg_store_res *res, void *arg)
{
    struct orch_sleep *s = arg;

    if (orch_task_returned(&s->t))
        return;
    if (res->status == 0) {
        sleep_docker_final(s);
        return;
    }
    if (res->status == WG_STORE_ACTIVE) {
        s->t.o->m.cancelled[s->t.rec.state == WG_SESSION_SAVING ? 1 : 0]++;
        WG_INFO(s->t.o->log, ORCH_SUBSYS,
                "session used while it was put to sleep, keeping it awake",
                "session=%s last_active=%" PRId64 " decided_at=%" PRId64, s->t.id,
                res->rec ? res->rec->last_active : 0, s->idle_cutoff);
        back_to_running(s, "activity", NULL);
        return;
    }
    if (res->status == WG_STORE_REJECTED && res->rec && res->rec->state == WG_SESSION_RUNNING) {
        keep_save_and_finish(s); /* cancelled by a request: sleeper_request() */
        return;
    }
    WG_WARN(s->t.o->log, ORCH_SUBSYS, "cannot go on with the sleep",
            "session=%s state=%s error=\"%s\"", s->t.id,
            res->rec ? wg_session_state_name(res->rec->state) : "-",
            res->error[0] ? res->error : "refused");
    sleep_done(s);
}

/* from -> to (stopping or paused), refused when used since the decision. */
static void move_to_final(struct orch_sleep *s, unsigned from, enum wg_session_state to,
                          const char *extra)
{
    struct wg_session_update u = {0};
    char detail[512];

    save_update(s, &u);
    sleep_detail(s, extra, detail, sizeof(detail));
    orch_task_call(&s->t);
    orch_task_fence(&s->t, &u);
    if (wg_store_transition_idle(s->t.o->store, s->t.id, from, to, cutoff_of(s), &u, detail,
                                 on_pre_final, s) < 0) {
        orch_task_returned(&s->t);
        sleep_done(s);
    }
}

/* ---- the save -------------------------------------------------------------------------------- */

static void on_save_event(const struct wg_store_res *res, void *arg)
{
    (void)res;
    (void)arg;
}

static void record_save_event(struct orch_sleep *s, double seconds, const char *docker_error)
{
    json_t *d = json_object();
    char *text = NULL;
    const char *out = s->save.output;
    size_t olen = strlen(out);

    if (!d)
        return;
    if (olen > SAVE_EVENT_OUTPUT_MAX) /* the tail says why; the record keeps more */
        out += olen - SAVE_EVENT_OUTPUT_MAX;
    json_object_set_new(d, "ok", json_boolean(s->save.ok));
    json_object_set_new(d, "exit_code", json_integer(s->save.exit_code));
    json_object_set_new(d, "tier", json_string(wg_orch_tier_name(s->tier)));
    json_object_set_new(d, "reason", json_string(reason_of(s)));
    json_object_set_new(d, "duration_ms", json_integer((json_int_t)(seconds * 1000)));
    if (s->save.commit[0])
        json_object_set_new(d, "commit", json_string(s->save.commit));
    if (s->save.timeout)
        json_object_set_new(d, "timeout", json_true());
    if (docker_error && docker_error[0])
        json_object_set_new(d, "error", json_string(docker_error));
    if (!s->save.ok)
        json_object_set_new(d, "failures", json_integer(reaper_save_failures(s->t.o, s->t.id)));
    if (out[0]) {
        char clean[SAVE_EVENT_OUTPUT_MAX + 1];
        wg_session_clean_text(clean, sizeof(clean), out, strlen(out));
        json_object_set_new(d, "output", json_string(clean));
    }
    text = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    if (text && wg_store_event_add(s->t.o->store, s->t.id, s->save.ok ? "save" : "save_failed",
                                   text, on_save_event, NULL) < 0)
        WG_DEBUG(s->t.o->log, ORCH_SUBSYS, "cannot append the save event", "session=%s", s->t.id);
    free(text);
}

/* Fills s->save from the exec's answer, counts it, and remembers a failure
 * for the retry backoff. Returns the Docker error ("" when the exec ran). */
static const char *save_take_result(struct orch_sleep *s, int status,
                                    const struct wg_docker_reply *r, uint64_t elapsed_ns)
{
    struct wg_orch *o = s->t.o;

    s->save.at = orch_now_ms(o);
    s->save.exit_code = status == 0 ? r->exit_code : -1;
    wg_orch_save_result(status, s->save.exit_code, elapsed_ns / 1000000,
                        orch_template(o, &s->t.rec)->save.timeout_ms, &s->save.ok,
                        &s->save.timeout);
    if (r && r->output_len)
        wg_session_clean_text(s->save.output, sizeof(s->save.output), r->output, r->output_len);
    else if (status != 0 && r && r->error[0])
        wg_session_clean_text(s->save.output, sizeof(s->save.output), r->error, strlen(r->error));
    if (s->save.ok && r)
        wg_orch_save_commit(r->output ? r->output : "", r->output_len, s->save.commit,
                            sizeof(s->save.commit));
    if (s->save.ok) {
        o->m.saves_ok++;
        reaper_save_result(o, s->t.id, true);
    } else {
        if (s->save.timeout)
            o->m.saves_timeout++;
        else
            o->m.saves_failed++;
        reaper_save_result(o, s->t.id, false);
    }
    if (status == 0)
        return "";
    orch_docker_error(o, status);
    return r && r->error[0] ? r->error : strerror(-status);
}

static void on_save_exec(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_sleep *s = arg;
    struct wg_orch *o = s->t.o;
    uint64_t elapsed_ns;
    double seconds;
    const char *err;

    if (orch_task_returned(&s->t))
        return;
    elapsed_ns = uv_hrtime() - s->save_started;
    seconds = (double)elapsed_ns / 1e9;
    wg_hist_observe_ns(&o->m.save, elapsed_ns);
    err = save_take_result(s, status, r, elapsed_ns);
    record_save_event(s, seconds, err);
    if (s->save.ok) {
        WG_INFO(o->log, ORCH_SUBSYS, "saved", "session=%s container=%.12s commit=%s ms=%.0f",
                s->t.id, s->container, s->save.commit[0] ? s->save.commit : "-", seconds * 1000);
    } else {
        char q[WG_SESSION_OUTPUT_MAX + 3];
        const char *tail = s->save.output;
        size_t tl = strlen(tail);
        if (tl > 300)
            tail += tl - 300;
        WG_WARN(o->log, ORCH_SUBSYS, "save failed",
                "session=%s container=%.12s exit_code=%d timeout=%d failures=%u docker=%s "
                "output=%s",
                s->t.id, s->container, s->save.exit_code, s->save.timeout,
                reaper_save_failures(o, s->t.id), orch_q(q, 256, err[0] ? err : "-"),
                orch_q(q + 256, sizeof(q) - 256, tail));
    }
    sleep_after_save(s);
}

static void sleep_after_save(struct orch_sleep *s)
{
    struct wg_orch *o = s->t.o;
    const unsigned saving = WG_SESSION_BIT(WG_SESSION_SAVING);
    /* The operator who asked for a save now is told it failed instead. */
    bool stop_anyway = !s->now && orch_template(o, &s->t.rec)->save.on_failure == WG_SAVE_STOP;

    switch (wg_orch_sleep_after_save(s->tier, s->save.ok, stop_anyway, s->shutdown_rollback)) {
    case WG_ORCH_SLEEP_PAUSE:
        move_to_final(s, saving, WG_SESSION_PAUSED, "\"saved\":true");
        return;
    case WG_ORCH_SLEEP_STOP:
        if (s->save.ok) {
            move_to_final(s, saving, WG_SESSION_STOPPING, "\"saved\":true");
            return;
        }
        WG_WARN(o->log, ORCH_SUBSYS, "stopping although the save failed (on_failure: stop)",
                "session=%s", s->t.id);
        move_to_final(s, saving, WG_SESSION_STOPPING, "\"saved\":false,\"on_failure\":\"stop\"");
        return;
    case WG_ORCH_SLEEP_REFUSE:
        orch_event(o, s->t.id, "destroy_refused",
                   "{\"reason\":\"the save failed: the container is kept; send force=1 to "
                   "destroy without saving\"}");
        back_to_running(s, "save failed", "the save hook failed: the container is kept awake");
        return;
    default:
        if (s->shutdown_rollback)
            back_to_running(s, "shutdown", NULL);
        else
            back_to_running(s, "save failed", "the save hook failed: the container is kept awake");
        return;
    }
}

static void sleep_save(struct orch_sleep *s)
{
    struct wg_orch *o = s->t.o;
    const struct wg_save_cfg *sc = &orch_template(o, &s->t.rec)->save;
    const char *argv[SAVE_ARGV_MAX];
    char secs[24], when[32];
    time_t now = (time_t)(orch_now_ms(o) / 1000);
    struct tm tm;
    int rc;

    s->t.phase = PH_WORK;
    gmtime_r(&now, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    rc = wg_orch_save_argv((const char *const *)sc->command, sc->path, s->t.id, when,
                           sc->timeout_ms, argv, SAVE_ARGV_MAX, secs, sizeof(secs));
    if (rc < 0) {
        WG_ERROR(o->log, ORCH_SUBSYS, "save command too long", "session=%s", s->t.id);
        back_to_running(s, "save failed", "the save command has too many arguments");
        return;
    }
    WG_INFO(o->log, ORCH_SUBSYS, "saving", "session=%s container=%.12s tier=%s reason=%s", s->t.id,
            s->container, wg_orch_tier_name(s->tier), reason_of(s));
    s->save_started = uv_hrtime();
    orch_task_call(&s->t);
    rc = wg_docker_exec(o->docker, s->container, argv,
                        (uint32_t)(sc->timeout_ms + SAVE_EXEC_SLACK_MS), on_save_exec, s);
    if (rc < 0) {
        orch_task_returned(&s->t);
        WG_ERROR(o->log, ORCH_SUBSYS, "cannot send the save exec", "session=%s error=%s", s->t.id,
                 strerror(-rc));
        back_to_running(s, "save failed", "cannot send the save exec");
    }
}

static void on_unpaused_for_save(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_sleep *s = arg;

    if (orch_task_returned(&s->t))
        return;
    if (status != 0) {
        orch_docker_error(s->t.o, status);
        WG_ERROR(s->t.o->log, ORCH_SUBSYS, "cannot unpause the container for its save",
                 "session=%s container=%.12s docker=\"%s\"", s->t.id, s->container, r->error);
        back_to_running(s, "save failed", r->error[0] ? r->error : "cannot unpause");
        return;
    }
    sleep_save(s);
}

/* ---- into saving ----------------------------------------------------------------------------- */

static void on_saving(const struct wg_store_res *res, void *arg)
{
    struct orch_sleep *s = arg;

    if (orch_task_returned(&s->t))
        return;
    if (res->status == WG_STORE_ACTIVE) {
        s->t.o->m.cancelled[0]++;
        WG_INFO(s->t.o->log, ORCH_SUBSYS, "session used while draining, keeping it awake",
                "session=%s", s->t.id);
        back_to_running(s, "activity", NULL);
        return;
    }
    if (res->status != 0) {
        WG_INFO(s->t.o->log, ORCH_SUBSYS, "sleep called off before the save", "session=%s state=%s",
                s->t.id, res->rec ? wg_session_state_name(res->rec->state) : "-");
        sleep_done(s);
        return;
    }
    s->t.rec.state = WG_SESSION_SAVING;
    if (s->from_paused) {
        orch_task_call(&s->t);
        if (wg_docker_unpause(s->t.o->docker, s->container, on_unpaused_for_save, s) < 0) {
            orch_task_returned(&s->t);
            back_to_running(s, "save failed", "cannot send the unpause");
        }
        return;
    }
    sleep_save(s);
}

static void to_saving(struct orch_sleep *s, unsigned from)
{
    struct wg_session_update u = {0};
    char detail[256];

    sleep_detail(s, NULL, detail, sizeof(detail));
    orch_task_call(&s->t);
    orch_task_fence(&s->t, &u);
    if (wg_store_transition_idle(s->t.o->store, s->t.id, from, WG_SESSION_SAVING, cutoff_of(s), &u,
                                 detail, on_saving, s) < 0) {
        orch_task_returned(&s->t);
        sleep_done(s);
    }
}

/* ---- draining -------------------------------------------------------------------------------- */

static void drained_cb(uv_timer_t *h)
{
    struct orch_sleep *s = h->data;
    const unsigned draining = WG_SESSION_BIT(WG_SESSION_DRAINING);

    if (s->t.finished || s->t.o->closing)
        return;
    switch (wg_orch_sleep_after_drain(s->tier, orch_template(s->t.o, &s->t.rec)->save.before_pause,
                                      s->shutdown_rollback)) {
    case WG_ORCH_SLEEP_KEEP_AWAKE:
        back_to_running(s, "shutdown", NULL);
        return;
    case WG_ORCH_SLEEP_PAUSE:
        move_to_final(s, draining, WG_SESSION_PAUSED, "\"saved\":false");
        return;
    default:
        to_saving(s, draining);
        return;
    }
}

static void on_draining(const struct wg_store_res *res, void *arg)
{
    struct orch_sleep *s = arg;

    if (orch_task_returned(&s->t))
        return;
    if (res->status != 0) {
        WG_DEBUG(s->t.o->log, ORCH_SUBSYS, "not draining", "session=%s status=%d error=\"%s\"",
                 s->t.id, res->status, res->error);
        sleep_done(s);
        return;
    }
    s->t.rec.state = WG_SESSION_DRAINING;
    s->t.phase = PH_WORK;
    uv_timer_start(&s->t.timer, drained_cb, s->t.o->cfg->sessions.idle.drain_ms, 0);
}

/* ---- start ----------------------------------------------------------------------------------- */

static void refuse_destroy(struct orch_sleep *s, const char *why)
{
    char detail[300], q[200];

    WG_WARN(s->t.o->log, ORCH_SUBSYS, "destroy without force refused", "session=%s why=%s", s->t.id,
            orch_q(q, sizeof(q), why));
    snprintf(detail, sizeof(detail), "{\"reason\":\"%s\"}", why);
    orch_event(s->t.o, s->t.id, "destroy_refused", detail);
    sleep_done(s);
}

static void sleep_drain(struct orch_sleep *s, const struct wg_session *rec)
{
    struct wg_orch *o = s->t.o;
    struct wg_session_update u = {0};
    char detail[256], extra[64];

    snprintf(extra, sizeof(extra), "\"idle_ms\":%" PRId64, orch_now_ms(o) - rec->last_active);
    sleep_detail(s, extra, detail, sizeof(detail));
    orch_task_call(&s->t);
    orch_task_fence(&s->t, &u);
    if (wg_store_transition_idle(o->store, s->t.id, WG_SESSION_BIT(WG_SESSION_RUNNING),
                                 WG_SESSION_DRAINING, cutoff_of(s), &u, detail, on_draining,
                                 s) < 0) {
        orch_task_returned(&s->t);
        sleep_done(s);
    }
}

/* The first step, from the record just read (and kept in s->t.rec). */
static void sleep_first(struct orch_sleep *s, const struct wg_session *rec)
{
    /* force=1 stops a container that runs, or is paused, or was left by a
     * failed start. */
    const unsigned can_stop = WG_SESSION_BIT(WG_SESSION_RUNNING) |
                              WG_SESSION_BIT(WG_SESSION_PAUSED) | WG_SESSION_BIT(WG_SESSION_FAILED);
    struct wg_orch_sleep_in in = {
        .state = rec->state,
        .tier = s->tier,
        .forced = s->forced,
        .has_container = s->container[0] != '\0',
        .saved_since =
            rec->last_save.at > 0 && rec->last_save.ok && rec->last_save.at >= rec->last_active,
    };
    const char *why;

    switch (wg_orch_sleep_first(&in, &why)) {
    case WG_ORCH_SLEEP_DRAIN:
        sleep_drain(s, rec);
        return;
    case WG_ORCH_SLEEP_SAVE: /* paused: thawed for the save */
        s->from_paused = true;
        to_saving(s, WG_SESSION_BIT(WG_SESSION_PAUSED));
        return;
    case WG_ORCH_SLEEP_STOP:
        if (s->forced)
            move_to_final(s, can_stop, WG_SESSION_STOPPING, NULL);
        else
            move_to_final(s, WG_SESSION_BIT(WG_SESSION_PAUSED), WG_SESSION_STOPPING,
                          "\"saved\":\"before the pause\"");
        return;
    case WG_ORCH_SLEEP_DOCKER:
        sleep_docker_final(s);
        return;
    case WG_ORCH_SLEEP_REFUSE:
        refuse_destroy(s, why);
        return;
    default:
        if (s->forced)
            WG_INFO(s->t.o->log, ORCH_SUBSYS, "nothing to stop", "session=%s state=%s", s->t.id,
                    wg_session_state_name(rec->state));
        else
            WG_DEBUG(s->t.o->log, ORCH_SUBSYS, "nothing to put to sleep",
                     "session=%s state=%s tier=%s", s->t.id, wg_session_state_name(rec->state),
                     wg_orch_tier_name(s->tier));
        sleep_done(s);
        return;
    }
}

static void on_sleep_get(const struct wg_store_res *res, void *arg)
{
    struct orch_sleep *s = arg;
    struct wg_orch *o = s->t.o;
    const struct wg_session *rec = res->rec;

    if (orch_task_returned(&s->t))
        return;
    if (res->status != 0 || strcmp(rec->host, o->name) != 0) {
        if (res->status == 0)
            WG_DEBUG(o->log, ORCH_SUBSYS, "session of another host, not ours to put to sleep",
                     "session=%s host=%s", s->t.id, rec->host);
        else if (s->by_api)
            WG_WARN(o->log, ORCH_SUBSYS, "cannot read the session, dropping the command",
                    "session=%s error=\"%s\"", s->t.id, res->error);
        sleep_done(s);
        return;
    }
    if (!orch_task_keep_rec(&s->t, rec)) {
        sleep_done(s);
        return;
    }
    snprintf(s->container, sizeof(s->container), "%s", rec->container_id);
    /* A request after the command cancels it; one before it, whose
     * activity a proxy writes a moment later, does not. */
    if (s->by_api && !s->forced && !s->now)
        s->idle_cutoff = rec->last_active > s->cmd_at ? rec->last_active : s->cmd_at;
    sleep_first(s, rec);
}

static void sleep_locked(struct orch_task *t, bool held, const char *why)
{
    struct orch_sleep *s = orch_sleep_of(t);

    if (!held) {
        if (s->by_api)
            WG_WARN(t->o->log, ORCH_SUBSYS, "session is locked, dropping the sleep command",
                    "session=%s why=\"%s\"", t->id, why);
        sleep_done(s);
        return;
    }
    orch_task_call(t);
    if (wg_store_get(t->o->store, t->id, on_sleep_get, s) < 0) {
        orch_task_returned(t);
        sleep_done(s);
    }
}

/* ---- the kind ------------------------------------------------------------------------------ */

static void sleep_begin(struct orch_task *t)
{
    if (t->o->shutting_down) {
        sleep_done(orch_sleep_of(t));
        return;
    }
    orch_task_lock(t, sleep_locked);
}

const struct orch_task_ops orch_sleep_ops = {
    .name = "sleep",
    .size = sizeof(struct orch_sleep),
    .start = sleep_begin,
    .cancel = NULL,
};

struct orch_sleep *sleeper_find(struct wg_orch *o, const char *id)
{
    struct orch_task *t = orch_task_find(o, id, &orch_sleep_ops);

    return t ? orch_sleep_of(t) : NULL;
}

struct orch_sleep *sleeper_new(struct wg_orch *o, const char *id)
{
    struct orch_task *t = orch_task_new(o, &orch_sleep_ops, id);

    return t ? orch_sleep_of(t) : NULL;
}

void sleeper_command(struct wg_orch *o, const struct wg_wake_cmd *cmd)
{
    struct orch_sleep *s = sleeper_new(o, cmd->session);

    if (!s) {
        WG_ERROR(o->log, ORCH_SUBSYS, "out of memory, leaving the command pending",
                 "session=%s op=%s", cmd->session, wg_wake_op_name(cmd->op));
        return;
    }
    s->tier = cmd->op == WG_WAKE_OP_DESTROY ? WG_ORCH_TIER_DESTROY : WG_ORCH_TIER_STOP;
    s->by_api = true;
    s->forced = cmd->force;
    s->now = cmd->op == WG_WAKE_OP_SLEEP && cmd->now && !cmd->force;
    s->idle_cutoff = -1;
    s->cmd_at = cmd->at > 0 ? cmd->at : orch_now_ms(o);
    snprintf(s->entry_id, sizeof(s->entry_id), "%s", cmd->entry_id);
    snprintf(s->from, sizeof(s->from), "%s", cmd->from);
    WG_INFO(o->log, ORCH_SUBSYS,
            cmd->force ? "forced command"
            : s->now   ? "save and stop now"
                       : "sleep command",
            "session=%s op=%s entry=%s from=%s", cmd->session, wg_wake_op_name(cmd->op),
            cmd->entry_id, cmd->from[0] ? cmd->from : "-");
    orch_task_begin(&s->t);
}

/* ---- cancel on request ----------------------------------------------------------------------- */

static void on_request_cancel(const struct wg_store_res *res, void *arg)
{
    struct orch_sleep *s = arg;

    if (!s->t.finished && !s->t.o->closing && res->status == 0) {
        s->t.o->m.cancelled[s->t.rec.state == WG_SESSION_SAVING ? 1 : 0]++;
        WG_INFO(s->t.o->log, ORCH_SUBSYS, "a request arrived: sleep cancelled", "session=%s was=%s",
                s->t.id, wg_session_state_name(s->t.rec.state));
    }
    orch_task_unref(&s->t);
}

void sleeper_request(struct wg_orch *o, const char *id)
{
    struct orch_sleep *s = sleeper_find(o, id);
    unsigned from = WG_SESSION_BIT(WG_SESSION_DRAINING) | WG_SESSION_BIT(WG_SESSION_SAVING);
    struct wg_session_update u = {0};
    char detail[256];

    if (!s || s->t.finished ||
        !wg_orch_sleep_cancellable(s->tier, s->forced || s->now, s->t.rec.state))
        return;
    /* The task's own next move is refused once this lands (the state is no
     * longer draining or saving); a save in flight finishes and is kept. */
    sleep_detail(s, "\"cancelled\":\"request\"", detail, sizeof(detail));
    orch_task_fence(&s->t, &u);
    if (wg_store_transition(o->store, id, from, WG_SESSION_RUNNING, &u, detail, on_request_cancel,
                            s) == 0)
        s->t.refs++;
}

/* ---- shutdown and metrics -------------------------------------------------------------------- */

static void on_rolled_back(const struct wg_store_res *res, void *arg)
{
    struct orch_sleep *s = arg;

    s->rollback_done = true;
    if (!s->t.o->closing)
        WG_INFO(s->t.o->log, ORCH_SUBSYS,
                res->status == 0 ? "sleep rolled back: session running again"
                                 : "sleep not rolled back: the state moved on",
                "session=%s error=\"%s\"", s->t.id, res->error);
    orch_task_unref(&s->t);
}

/* A move back to running beside the task's own call in flight. */
static void rollback_now(struct orch_sleep *s)
{
    char detail[256];

    struct wg_session_update u = {0};

    sleep_detail(s, "\"cancelled\":\"shutdown\"", detail, sizeof(detail));
    orch_task_fence(&s->t, &u);
    if (wg_store_transition(s->t.o->store, s->t.id, WG_SESSION_BIT(WG_SESSION_SAVING),
                            WG_SESSION_RUNNING, &u, detail, on_rolled_back, s) == 0)
        s->t.refs++;
    else
        s->rollback_done = true;
}

unsigned sleeper_shutdown(struct wg_orch *o, bool force)
{
    unsigned left = 0;
    struct wg_list *it, *next;

    for (it = o->tasks.next; it != &o->tasks; it = next) {
        struct orch_task *t = wg_container_of(it, struct orch_task, link);
        struct orch_sleep *s;
        struct wg_orch_sleep_shutdown_in in;

        next = it->next;
        if (t->ops != &orch_sleep_ops || t->finished)
            continue;
        s = orch_sleep_of(t);
        in = (struct wg_orch_sleep_shutdown_in){
            .begun = !(t->phase == PH_WAIT_TURN || t->phase == PH_NEW || t->phase == PH_LOCK),
            .rolled_back = s->rollback_done,
            .rolling_back = s->shutdown_rollback,
            .busy = t->busy,
            .late = force,
            .state = t->rec.state,
        };
        switch (wg_orch_sleep_on_shutdown(&in)) {
        case WG_ORCH_SHUTDOWN_END:
            sleep_done(s); /* not begun: nothing to roll back */
            continue;
        case WG_ORCH_SHUTDOWN_DONE:
            continue;
        case WG_ORCH_SHUTDOWN_WAIT:
            break;
        case WG_ORCH_SHUTDOWN_ROLLBACK:
            s->shutdown_rollback = true;
            o->m.rollbacks++;
            uv_timer_stop(&t->timer); /* a drain waited out */
            back_to_running(s, "shutdown", NULL);
            break;
        case WG_ORCH_SHUTDOWN_BESIDE:
            s->shutdown_rollback = true;
            o->m.rollbacks++;
            rollback_now(s); /* the exec may outlive the process */
            break;
        }
        left++;
    }
    return left;
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
