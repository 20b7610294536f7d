/* orchestrator/orch_policy.c - the orchestrator's decisions; see orch_policy.h. */
#include "orchestrator/orch_policy.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/config.h"
#include "common/labels.h"
#include "orchestrator/docker.h"

#define S(x) WG_SESSION_##x
#define B(x) WG_SESSION_BIT(WG_SESSION_##x)

/* ---- wakes ------------------------------------------------------------------------------- */

enum wg_orch_wake_action wg_orch_wake_decide(enum wg_session_state state, int64_t state_since,
                                             int64_t now, uint64_t cooldown_ms, bool force)
{
    switch (state) {
    case S(RUNNING):
        return WG_ORCH_WAKE_NOOP;
    case S(STARTING):
        return WG_ORCH_WAKE_RESUME;
    case S(CREATING):
    case S(ASLEEP):
    case S(PAUSED):
    case S(LOST): /* pinned, or its host is back: wake it here */
        return WG_ORCH_WAKE_START;
    case S(FAILED):
        /* A clock that went back (state_since in the future) must not
         * block retries for ever: only a measured recent failure counts. */
        if (!force && now >= state_since && (uint64_t)(now - state_since) < cooldown_ms)
            return WG_ORCH_WAKE_COOLDOWN;
        return WG_ORCH_WAKE_START;
    case S(DRAINING):
    case S(SAVING):
    case S(STOPPING):
        return WG_ORCH_WAKE_WAIT;
    case S(DESTROYED):
    default:
        return WG_ORCH_WAKE_REFUSE;
    }
}

const char *wg_orch_wake_action_name(enum wg_orch_wake_action a)
{
    switch (a) {
    case WG_ORCH_WAKE_NOOP:
        return "noop";
    case WG_ORCH_WAKE_START:
        return "start";
    case WG_ORCH_WAKE_RESUME:
        return "resume";
    case WG_ORCH_WAKE_COOLDOWN:
        return "cooldown";
    case WG_ORCH_WAKE_WAIT:
        return "wait";
    case WG_ORCH_WAKE_REFUSE:
        return "refuse";
    }
    return "?";
}

bool wg_orch_wake_stale(int64_t at, int64_t now, uint64_t wake_timeout_ms)
{
    if (at <= 0)
        return false; /* no stamp: act on it */
    return now > at && (uint64_t)(now - at) > wake_timeout_ms;
}

uint32_t wg_orch_backoff_ms(unsigned restarts)
{
    uint64_t ms = WG_ORCH_BACKOFF_BASE_MS;

    for (unsigned i = 0; i < restarts && ms < WG_ORCH_BACKOFF_MAX_MS; i++)
        ms *= 2;
    return ms > WG_ORCH_BACKOFF_MAX_MS ? WG_ORCH_BACKOFF_MAX_MS : (uint32_t)ms;
}

/* ---- the steps of a wake --------------------------------------------------------------- */

bool wg_orch_admit_now(unsigned in_flight, unsigned max_starts, bool queue_empty)
{
    return in_flight < max_starts && queue_empty;
}

const char *wg_orch_wake_step_name(enum wg_orch_wake_step s)
{
    switch (s) {
    case WG_ORCH_STEP_CREATE:
        return "create";
    case WG_ORCH_STEP_FIND:
        return "find";
    case WG_ORCH_STEP_START:
        return "start";
    case WG_ORCH_STEP_UNPAUSE:
        return "unpause";
    case WG_ORCH_STEP_STARTED:
        return "started";
    case WG_ORCH_STEP_READY:
        return "ready";
    case WG_ORCH_STEP_CRASH:
        return "crash";
    case WG_ORCH_STEP_FAIL:
        return "fail";
    }
    return "?";
}

enum wg_orch_wake_step wg_orch_step_after_inspect(int status, bool labelled, bool paused,
                                                  bool running)
{
    if (status == WG_DOCKER_ENOTFOUND || (status == 0 && !labelled))
        return WG_ORCH_STEP_CREATE;
    if (status != 0)
        return WG_ORCH_STEP_FAIL;
    if (paused)
        return WG_ORCH_STEP_UNPAUSE;
    return running ? WG_ORCH_STEP_READY : WG_ORCH_STEP_START;
}

enum wg_orch_wake_step wg_orch_step_after_create(int status)
{
    if (status == 0)
        return WG_ORCH_STEP_START;
    /* The name is taken: a crash between create and recording the id. */
    return status == WG_DOCKER_ECONFLICT ? WG_ORCH_STEP_FIND : WG_ORCH_STEP_FAIL;
}

enum wg_orch_wake_step wg_orch_step_after_start(int status, bool recreated)
{
    if (status == 0)
        return WG_ORCH_STEP_STARTED;
    if (status == WG_DOCKER_ENOTFOUND && !recreated)
        return WG_ORCH_STEP_CREATE;
    return WG_ORCH_STEP_FAIL;
}

enum wg_orch_wake_step wg_orch_step_after_unpause(int status)
{
    switch (status) {
    case 0:
        return WG_ORCH_STEP_STARTED;
    case WG_DOCKER_ECONFLICT: /* not paused (any more): start it */
        return WG_ORCH_STEP_START;
    case WG_DOCKER_ENOTFOUND:
        return WG_ORCH_STEP_CREATE;
    default:
        return WG_ORCH_STEP_FAIL;
    }
}

enum wg_orch_wake_step wg_orch_step_after_started(bool paused, bool running)
{
    if (paused)
        return WG_ORCH_STEP_UNPAUSE;
    return running ? WG_ORCH_STEP_READY : WG_ORCH_STEP_CRASH;
}

bool wg_orch_engine_unreachable(int status, long http_status)
{
    switch (status) {
    case -ECONNREFUSED:
    case -ENOENT:
    case -ECONNRESET:
    case -EPIPE:
    case -ETIMEDOUT:
    case -EHOSTUNREACH:
    case -ENETUNREACH:
        return true;
    case WG_DOCKER_EHTTP:
        return http_status == 502 || http_status == 503 || http_status == 504;
    default:
        return false;
    }
}

uint32_t wg_orch_engine_retry_ms(unsigned tries, int64_t left_ms)
{
    uint32_t ms = WG_ORCH_ENGINE_RETRY_MAX_MS;

    if (tries < 16 && (WG_ORCH_ENGINE_RETRY_MIN_MS << tries) < WG_ORCH_ENGINE_RETRY_MAX_MS)
        ms = WG_ORCH_ENGINE_RETRY_MIN_MS << tries;
    if (left_ms <= 0)
        return 0;
    return (int64_t)ms > left_ms ? (uint32_t)left_ms : ms;
}

enum wg_orch_crash_action wg_orch_wake_crash(bool oom, unsigned restarts, unsigned max_restarts)
{
    if (oom)
        return WG_ORCH_CRASH_FAIL_OOM;
    return restarts >= max_restarts ? WG_ORCH_CRASH_FAIL_LOOP : WG_ORCH_CRASH_RESTART;
}

bool wg_orch_death_is_this_run(int64_t start_ns, int64_t time_ns)
{
    return start_ns != 0 && !(time_ns > 0 && time_ns < start_ns);
}

/* ---- deaths ------------------------------------------------------------------------------ */

enum wg_orch_death_action wg_orch_death_decide(const struct wg_orch_death *d,
                                               uint32_t crash_window_ms, unsigned max_restarts,
                                               const char **ret_reason)
{
    const char *reason = "";
    enum wg_orch_death_action a = WG_ORCH_DEATH_IGNORE;

    /* Only states where the container is supposed to be up are corrected;
     * starting belongs to the waker, stopping to whoever stops it. */
    if (!WG_SESSION_IN(d->state, B(RUNNING) | B(PAUSED) | B(DRAINING) | B(SAVING)))
        goto out;
    if (d->oom) {
        reason = "oom";
        a = WG_ORCH_DEATH_FAILED;
    } else if (d->by_hand) {
        reason = "stopped";
        a = WG_ORCH_DEATH_ASLEEP;
    } else if (d->exit_code == 0) {
        reason = "exited";
        a = WG_ORCH_DEATH_ASLEEP;
    } else if (d->state == S(RUNNING) && d->uptime_ms >= 0 &&
               (uint64_t)d->uptime_ms < crash_window_ms) {
        if (d->restarts < max_restarts) {
            reason = "exit";
            a = WG_ORCH_DEATH_RESTART;
        } else {
            reason = "crash loop";
            a = WG_ORCH_DEATH_FAILED;
        }
    } else {
        reason = "exit";
        a = WG_ORCH_DEATH_FAILED;
    }
out:
    if (ret_reason)
        *ret_reason = reason;
    return a;
}

const char *wg_orch_death_action_name(enum wg_orch_death_action a)
{
    switch (a) {
    case WG_ORCH_DEATH_IGNORE:
        return "ignore";
    case WG_ORCH_DEATH_ASLEEP:
        return "asleep";
    case WG_ORCH_DEATH_FAILED:
        return "failed";
    case WG_ORCH_DEATH_RESTART:
        return "restart";
    }
    return "?";
}

/* ---- reconciliation ------------------------------------------------------------------- */

enum wg_orch_docker_state wg_orch_docker_state_of(const char *status)
{
    if (!status)
        return WG_ORCH_DOCKER_MISSING;
    if (strcmp(status, "running") == 0 || strcmp(status, "restarting") == 0)
        return WG_ORCH_DOCKER_RUNNING;
    if (strcmp(status, "paused") == 0)
        return WG_ORCH_DOCKER_PAUSED;
    return WG_ORCH_DOCKER_STOPPED;
}

const char *wg_orch_docker_state_name(enum wg_orch_docker_state s)
{
    switch (s) {
    case WG_ORCH_DOCKER_MISSING:
        return "missing";
    case WG_ORCH_DOCKER_RUNNING:
        return "running";
    case WG_ORCH_DOCKER_PAUSED:
        return "paused";
    case WG_ORCH_DOCKER_STOPPED:
        return "stopped";
    }
    return "?";
}

static void fix_set(struct wg_orch_fix *f, enum wg_orch_fix_kind kind, enum wg_session_state to,
                    const char *why)
{
    f->kind = kind;
    f->to = to;
    f->why = why;
}

static void fix_missing(const struct wg_orch_observed *ob, struct wg_orch_fix *f)
{
    switch (ob->state) {
    case S(STARTING):
        fix_set(f, WG_ORCH_FIX_RESUME, ob->state, "starting with no container: wake again");
        break;
    case S(CREATING):
        fix_set(f, WG_ORCH_FIX_MOVE, S(ASLEEP), "creating stuck with no container");
        f->clear_container = true;
        break;
    case S(ASLEEP):
    case S(FAILED):
        if (ob->record_has_container) {
            fix_set(f, WG_ORCH_FIX_UPDATE, ob->state, "the container is gone");
            f->clear_container = true;
        }
        break;
    default: /* running, paused, draining, saving, stopping */
        fix_set(f, WG_ORCH_FIX_MOVE, S(ASLEEP), "the container is gone");
        f->clear_container = true;
        break;
    }
}

static void fix_running(const struct wg_orch_observed *ob, struct wg_orch_fix *f)
{
    switch (ob->state) {
    case S(STARTING):
        fix_set(f, WG_ORCH_FIX_RESUME, ob->state, "starting with nobody waking it");
        break;
    case S(FAILED):
        fix_set(f, WG_ORCH_FIX_RESUME, ob->state, "Docker says running while Redis says failed");
        break;
    case S(RUNNING):
        if (!ob->same_container || ob->ip_differs) {
            fix_set(f, WG_ORCH_FIX_UPDATE, ob->state, "container id or address changed");
            f->set_container = true;
        }
        break;
    case S(STOPPING):
        fix_set(f, WG_ORCH_FIX_STOP, S(ASLEEP), "stopping stuck with the container running");
        f->set_container = true;
        break;
    default: /* creating, asleep, paused, draining, saving */
        fix_set(f, WG_ORCH_FIX_MOVE, S(RUNNING), "Docker says running");
        f->set_container = true;
        break;
    }
}

static void fix_paused(const struct wg_orch_observed *ob, struct wg_orch_fix *f)
{
    switch (ob->state) {
    case S(STARTING):
        fix_set(f, WG_ORCH_FIX_RESUME, ob->state, "starting with nobody waking it");
        break;
    case S(PAUSED):
        if (!ob->same_container) {
            fix_set(f, WG_ORCH_FIX_UPDATE, ob->state, "container id changed");
            f->set_container = true;
        }
        break;
    case S(FAILED):
        break; /* the next wake unpauses it */
    case S(STOPPING):
        fix_set(f, WG_ORCH_FIX_STOP, S(ASLEEP), "stopping stuck with the container paused");
        f->set_container = true;
        break;
    default: /* creating, running, draining, saving, asleep */
        fix_set(f, WG_ORCH_FIX_MOVE, S(PAUSED), "Docker says paused");
        f->set_container = true;
        break;
    }
}

static void fix_stopped(const struct wg_orch_observed *ob, struct wg_orch_fix *f)
{
    switch (ob->state) {
    case S(STARTING):
        fix_set(f, WG_ORCH_FIX_RESUME, ob->state, "starting with nobody waking it");
        break;
    case S(ASLEEP):
    case S(FAILED):
        if (!ob->same_container) {
            fix_set(f, WG_ORCH_FIX_UPDATE, ob->state, "container id changed");
            f->set_container = true;
        }
        break;
    case S(CREATING):
    case S(STOPPING):
    case S(LOST): /* its host is back: the container it left stopped */
        fix_set(f, WG_ORCH_FIX_MOVE, S(ASLEEP), "Docker says stopped");
        f->set_container = true;
        break;
    default: /* running, paused, draining, saving */
        if (ob->clean_exit)
            fix_set(f, WG_ORCH_FIX_MOVE, S(ASLEEP), "Docker says stopped");
        else
            fix_set(f, WG_ORCH_FIX_MOVE, S(FAILED), "Docker says exited with an error");
        f->set_container = true;
        break;
    }
}

void wg_orch_reconcile_decide(const struct wg_orch_observed *ob, struct wg_orch_fix *f)
{
    const enum wg_session_state st = ob->state;
    const bool transient = wg_session_state_transient(st);

    memset(f, 0, sizeof(*f));
    f->kind = WG_ORCH_FIX_NONE;
    f->to = st;
    f->why = "in agreement";
    if (st == S(DESTROYED) || (transient && !ob->stuck))
        return;
    switch (ob->docker) {
    case WG_ORCH_DOCKER_MISSING:
        fix_missing(ob, f);
        break;
    case WG_ORCH_DOCKER_RUNNING:
        fix_running(ob, f);
        break;
    case WG_ORCH_DOCKER_PAUSED:
        fix_paused(ob, f);
        break;
    case WG_ORCH_DOCKER_STOPPED:
        fix_stopped(ob, f);
        break;
    }
}

const char *wg_orch_fix_name(enum wg_orch_fix_kind k)
{
    switch (k) {
    case WG_ORCH_FIX_NONE:
        return "none";
    case WG_ORCH_FIX_UPDATE:
        return "update";
    case WG_ORCH_FIX_MOVE:
        return "move";
    case WG_ORCH_FIX_RESUME:
        return "resume";
    case WG_ORCH_FIX_STOP:
        return "stop";
    }
    return "?";
}

uint64_t wg_orch_stuck_after_ms(enum wg_session_state state, const struct wg_orch_deadlines *d)
{
    uint64_t twice_wake = 2 * d->wake_timeout_ms;

    if (twice_wake < 60000)
        twice_wake = 60000;
    switch (state) {
    case S(STARTING):
        return d->wake_timeout_ms + 1000;
    case S(CREATING):
    case S(DRAINING):
    case S(STOPPING):
        return twice_wake;
    case S(SAVING):
        return d->save_timeout_ms ? 2 * d->save_timeout_ms : twice_wake;
    default:
        return 0;
    }
}

/* ---- sleep ------------------------------------------------------------------------------ */

const char *wg_orch_tier_name(enum wg_orch_tier t)
{
    switch (t) {
    case WG_ORCH_TIER_PAUSE:
        return "pause";
    case WG_ORCH_TIER_STOP:
        return "stop";
    case WG_ORCH_TIER_DESTROY:
        return "destroy";
    }
    return "?";
}

static bool idle_past(const struct wg_orch_reap_in *in, uint64_t tier_ms)
{
    return tier_ms > 0 && in->now >= in->last_active &&
           (uint64_t)(in->now - in->last_active) >= tier_ms;
}

enum wg_orch_reap_action wg_orch_reap_decide(const struct wg_orch_reap_in *in, const char **why)
{
    const char *w;
    enum wg_orch_reap_action a = WG_ORCH_REAP_NONE;

    if (!WG_SESSION_IN(in->state, B(RUNNING) | B(PAUSED))) {
        w = "not awake and at rest";
    } else if (idle_past(in, in->stop_after_ms)) {
        bool failed_now = in->save_at > 0 && !in->save_ok && in->save_at >= in->last_active;
        if (failed_now && in->now < in->save_at + (int64_t)in->retry_wait_ms) {
            w = "the last save failed: waiting for the retry backoff";
        } else {
            w = failed_now ? "idle past stop_after: retrying the failed save"
                           : "idle past stop_after";
            a = WG_ORCH_REAP_STOP;
        }
    } else if (in->state == S(RUNNING) && idle_past(in, in->pause_after_ms)) {
        w = "idle past pause_after";
        a = WG_ORCH_REAP_PAUSE;
    } else {
        w = "not idle long enough";
    }
    if (why)
        *why = w;
    return a;
}

uint64_t wg_orch_save_backoff_ms(unsigned failures, uint64_t first_ms, uint64_t max_ms)
{
    uint64_t wait = first_ms;

    if (failures == 0)
        return 0;
    for (unsigned i = 1; i < failures && wait < max_ms; i++)
        wait = wait > UINT64_MAX / 2 ? UINT64_MAX : wait * 2;
    return wait < max_ms ? wait : max_ms;
}

/* ---- the steps of a sleep ------------------------------------------------------------- */

const char *wg_orch_sleep_step_name(enum wg_orch_sleep_step s)
{
    switch (s) {
    case WG_ORCH_SLEEP_NOTHING:
        return "nothing";
    case WG_ORCH_SLEEP_DRAIN:
        return "drain";
    case WG_ORCH_SLEEP_SAVE:
        return "save";
    case WG_ORCH_SLEEP_PAUSE:
        return "pause";
    case WG_ORCH_SLEEP_STOP:
        return "stop";
    case WG_ORCH_SLEEP_DOCKER:
        return "docker";
    case WG_ORCH_SLEEP_REFUSE:
        return "refuse";
    case WG_ORCH_SLEEP_KEEP_AWAKE:
        return "keep awake";
    }
    return "?";
}

/* force=1: the operator discards what is not saved. Destroy removes
 * whatever is there; sleep stops a container that runs (or is paused, or
 * was left by a failed start). */
static enum wg_orch_sleep_step sleep_forced(const struct wg_orch_sleep_in *in, const char **why)
{
    if (in->tier == WG_ORCH_TIER_DESTROY)
        return WG_ORCH_SLEEP_DOCKER;
    if (!WG_SESSION_IN(in->state, B(RUNNING) | B(PAUSED) | B(FAILED)) || !in->has_container) {
        *why = "nothing to stop";
        return WG_ORCH_SLEEP_NOTHING;
    }
    return WG_ORCH_SLEEP_STOP;
}

enum wg_orch_sleep_step wg_orch_sleep_first(const struct wg_orch_sleep_in *in, const char **why)
{
    const char *w = "nothing to put to sleep";
    enum wg_orch_sleep_step step = WG_ORCH_SLEEP_NOTHING;

    if (in->forced) {
        step = sleep_forced(in, &w);
        goto out;
    }
    switch (in->state) {
    case S(RUNNING):
        if (in->has_container)
            step = WG_ORCH_SLEEP_DRAIN;
        break;
    case S(PAUSED):
        /* Nothing runs in a frozen container: a save made before the pause
         * still holds everything. Otherwise thaw it for the save. */
        if (in->tier != WG_ORCH_TIER_PAUSE && in->has_container)
            step = in->saved_since ? WG_ORCH_SLEEP_STOP : WG_ORCH_SLEEP_SAVE;
        break;
    case S(CREATING):
    case S(ASLEEP):
    case S(FAILED):
        if (in->tier != WG_ORCH_TIER_DESTROY)
            break;
        if (!in->has_container || (in->state == S(ASLEEP) && in->saved_since)) {
            step = WG_ORCH_SLEEP_DOCKER; /* remove what is there, then the record */
            break;
        }
        step = WG_ORCH_SLEEP_REFUSE;
        w = "the container is not running, so it cannot be saved: send force=1 to destroy "
            "without saving";
        break;
    default:
        if (in->tier == WG_ORCH_TIER_DESTROY) {
            step = WG_ORCH_SLEEP_REFUSE;
            w = "the session is busy in a transient state: try again";
        }
        break;
    }
out:
    if (why)
        *why = w;
    return step;
}

enum wg_orch_sleep_step wg_orch_sleep_after_drain(enum wg_orch_tier tier, bool save_before_pause,
                                                  bool shutdown)
{
    if (shutdown)
        return WG_ORCH_SLEEP_KEEP_AWAKE;
    if (tier == WG_ORCH_TIER_PAUSE && !save_before_pause)
        return WG_ORCH_SLEEP_PAUSE;
    return WG_ORCH_SLEEP_SAVE;
}

enum wg_orch_sleep_step wg_orch_sleep_after_save(enum wg_orch_tier tier, bool saved,
                                                 bool stop_on_failure, bool shutdown)
{
    if (shutdown)
        return WG_ORCH_SLEEP_KEEP_AWAKE;
    if (saved)
        return tier == WG_ORCH_TIER_PAUSE ? WG_ORCH_SLEEP_PAUSE : WG_ORCH_SLEEP_STOP;
    if (tier == WG_ORCH_TIER_STOP && stop_on_failure)
        return WG_ORCH_SLEEP_STOP;
    /* A destroy is never carried out after a failed save. */
    return tier == WG_ORCH_TIER_DESTROY ? WG_ORCH_SLEEP_REFUSE : WG_ORCH_SLEEP_KEEP_AWAKE;
}

enum wg_orch_sleep_call wg_orch_sleep_call(enum wg_orch_tier tier, enum wg_session_state state,
                                           bool thawed, bool has_container)
{
    if (!has_container)
        return WG_ORCH_CALL_NONE;
    if (tier == WG_ORCH_TIER_STOP && state == S(PAUSED) && !thawed)
        return WG_ORCH_CALL_THAW;
    if (tier == WG_ORCH_TIER_PAUSE)
        return WG_ORCH_CALL_PAUSE;
    return tier == WG_ORCH_TIER_STOP ? WG_ORCH_CALL_STOP : WG_ORCH_CALL_REMOVE;
}

bool wg_orch_sleep_cancellable(enum wg_orch_tier tier, bool forced, enum wg_session_state state)
{
    return tier != WG_ORCH_TIER_DESTROY && !forced && WG_SESSION_IN(state, B(DRAINING) | B(SAVING));
}

void wg_orch_save_result(int status, int exit_code, uint64_t elapsed_ms, uint64_t timeout_ms,
                         bool *ret_ok, bool *ret_timeout)
{
    *ret_ok = status == 0 && exit_code == 0;
    *ret_timeout =
        status == -ETIMEDOUT || (status == 0 && exit_code != 0 && elapsed_ms >= timeout_ms);
}

enum wg_orch_sleep_shutdown wg_orch_sleep_on_shutdown(const struct wg_orch_sleep_shutdown_in *in)
{
    if (!in->begun)
        return WG_ORCH_SHUTDOWN_END;
    if (in->rolled_back)
        return WG_ORCH_SHUTDOWN_DONE; /* written: the exec in flight no longer matters */
    if (in->rolling_back)
        return WG_ORCH_SHUTDOWN_WAIT;
    /* Waiting out the drain: roll back now. */
    if (in->state == S(DRAINING) && !in->busy)
        return WG_ORCH_SHUTDOWN_ROLLBACK;
    /* The save in flight runs on in the container; the session is awake
     * again and the next run saves it anew. */
    if (in->late && in->state == S(SAVING))
        return in->busy ? WG_ORCH_SHUTDOWN_BESIDE : WG_ORCH_SHUTDOWN_ROLLBACK;
    return WG_ORCH_SHUTDOWN_WAIT;
}

/* The built-in hook. $1 work tree, $2 session, $3 time. Commits only a dirty
 * tree; pushes whenever a remote exists, so a commit whose push failed last
 * time goes out on the next attempt. The identity is the repository's own
 * when it has one. With WAKEGATE_SAVE_REF set (a stale container's save,
 * orchestrator/stale.c) it pushes HEAD to that ref of the branch's remote
 * (else origin, else the first remote) and never to the main line, whose
 * newer work belongs to the session's live container. */
static const char save_script[] =
    "cd \"$1\" 2>/dev/null || { echo \"wakegate-save: no directory $1: nothing to save\"; exit 0; "
    "}\n"
    "git rev-parse --is-inside-work-tree >/dev/null 2>&1 || {\n"
    "  echo \"wakegate-save: $1 is not a git work tree: nothing to save\"; exit 0; }\n"
    "set -e\n"
    "if [ -n \"$(git status --porcelain)\" ]; then\n"
    "  who=\n"
    "  git config user.email >/dev/null || who=\"-c user.email=wakegate@localhost\"\n"
    "  git config user.name >/dev/null || who=\"$who -c user.name=wakegate\"\n"
    "  git add -A\n"
    "  git $who commit -q -m \"wakegate auto-save: session $2 at $3\"\n"
    "  echo \"wakegate-save: committed the changes\"\n"
    "else\n"
    "  echo \"wakegate-save: work tree clean\"\n"
    "fi\n"
    "if git rev-parse -q --verify HEAD >/dev/null; then\n"
    "  if [ -n \"$WAKEGATE_SAVE_REF\" ]; then\n"
    "    r=$(git config \"branch.$(git symbolic-ref -q --short HEAD || true).remote\" || true)\n"
    "    git remote get-url \"${r:-origin}\" >/dev/null 2>&1 || r=$(git remote | head -n 1)\n"
    "    if [ -n \"${r:-origin}\" ] && git remote get-url \"${r:-origin}\" >/dev/null 2>&1; then\n"
    "      git push -q \"${r:-origin}\" \"HEAD:$WAKEGATE_SAVE_REF\"\n"
    "      echo \"wakegate-save: pushed to ${r:-origin} $WAKEGATE_SAVE_REF\"\n"
    "    else\n"
    "      echo \"wakegate-save: no remote to keep the commit: the container must stay\"; exit 3\n"
    "    fi\n"
    "  elif git rev-parse -q --abbrev-ref '@{upstream}' >/dev/null 2>&1; then\n"
    "    git push -q\n"
    "    echo \"wakegate-save: pushed to the upstream\"\n"
    "  elif git remote get-url origin >/dev/null 2>&1; then\n"
    "    git push -q origin HEAD\n"
    "    echo \"wakegate-save: pushed to origin\"\n"
    "  else\n"
    "    echo \"wakegate-save: no remote: the commit stays in the container\"\n"
    "  fi\n"
    "  echo \"wakegate-commit: $(git rev-parse HEAD)\"\n"
    "fi\n";

int wg_orch_save_argv(const char *const *command, const char *path, const char *session,
                      const char *when, uint64_t timeout_ms, const char **argv, size_t max,
                      char *secs, size_t secs_len)
{
    static char kill_after[] = {'0' + WG_ORCH_SAVE_KILL_AFTER_S, '\0'};
    const char *const prefix[] = {"timeout", "-s", "TERM", "-k", kill_after, secs};
    const char *const built_in[] = {"sh", "-c",    save_script, "wakegate-save",
                                    path, session, when,        NULL};
    const char *const *tail = command ? command : built_in;
    const size_t np = sizeof(prefix) / sizeof(prefix[0]);
    size_t nt = 0, n = 0;

    _Static_assert(WG_ORCH_SAVE_KILL_AFTER_S < 10, "one digit");
    while (tail[nt])
        nt++;
    if (np + nt + 1 > max)
        return -ENOSPC;
    snprintf(secs, secs_len, "%" PRIu64, (timeout_ms + 999) / 1000);
    for (size_t i = 0; i < np; i++)
        argv[n++] = prefix[i];
    for (size_t i = 0; i < nt; i++)
        argv[n++] = tail[i];
    argv[n] = NULL;
    return (int)n;
}

bool wg_orch_save_commit(const char *output, size_t len, char *commit, size_t commit_len)
{
    static const char tag[] = "wakegate-commit: ";
    const size_t tl = sizeof(tag) - 1;
    bool found = false;
    size_t i = 0;

    while (i < len) {
        const char *nl = memchr(output + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - output) : len, hex = 0;

        if (end - i > tl && memcmp(output + i, tag, tl) == 0) {
            const char *h = output + i + tl;
            size_t hl = end - i - tl;
            while (hex < hl &&
                   ((h[hex] >= '0' && h[hex] <= '9') || (h[hex] >= 'a' && h[hex] <= 'f')))
                hex++;
            if (hex == hl && hl >= 7 && hl <= 64 && hl < commit_len) {
                memcpy(commit, h, hl);
                commit[hl] = '\0';
                found = true;
            }
        }
        i = end + 1;
    }
    return found;
}

int wg_orch_idle_labels(const char *const *labels, bool *has_stop, uint64_t *stop_ms,
                        bool *has_pause, uint64_t *pause_ms, char *err, size_t errlen)
{
    for (size_t i = 0; labels && labels[i] && labels[i + 1]; i += 2) {
        bool stop = strcmp(labels[i], WG_LABEL_IDLE_STOP_AFTER) == 0;
        uint64_t ms;

        if (!stop && strcmp(labels[i], WG_LABEL_IDLE_PAUSE_AFTER) != 0)
            continue;
        if (wg_config_parse_duration(labels[i + 1], &ms) < 0) {
            snprintf(err, errlen, "label %s: must be a duration such as \"30s\" or \"20m\"",
                     labels[i]);
            return -EINVAL;
        }
        if (stop) {
            *has_stop = true;
            *stop_ms = ms;
        } else {
            *has_pause = true;
            *pause_ms = ms;
        }
    }
    return 0;
}

/* ---- readiness -------------------------------------------------------------------------- */

enum wg_orch_ready_mode wg_orch_ready_mode_of(const char *health)
{
    return health && health[0] ? WG_ORCH_READY_HEALTH : WG_ORCH_READY_TCP;
}

bool wg_orch_health_ready(const char *health)
{
    return health && strcmp(health, "healthy") == 0;
}

/* ---- metrics ------------------------------------------------------------------------------ */

static json_int_t known(long long v)
{
    return v > 0 ? (json_int_t)v : 0;
}

int wg_orch_heartbeat_json(char *out, size_t outlen, const struct wg_orch_beat *b)
{
    json_t *labels =
        b->labels_json && b->labels_json[0] ? json_loads(b->labels_json, 0, NULL) : json_object();
    json_t *o;
    int n;

    if (!json_is_object(labels)) {
        json_decref(labels);
        return -EINVAL;
    }
    o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:b}", "name", b->name,
                  "starts_in_flight", (json_int_t)b->in_flight, "max_concurrent_starts",
                  (json_int_t)b->max_starts, "queued", (json_int_t)b->queued, "at",
                  (json_int_t)b->at_ms, "running", known(b->running), "sessions",
                  known(b->sessions), "cpus", known(b->cpus), "mem_total", known(b->mem_total),
                  "max_sessions", (json_int_t)b->max_sessions, "labels", labels, "engine",
                  b->engine);
    if (!o)
        return -ENOMEM;
    n = (int)json_dumpb(o, out, outlen, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (n <= 0 || (size_t)n >= outlen)
        return -ENOSPC;
    out[n] = '\0';
    return n;
}
