/* orchestrator/orch_policy.c - the orchestrator's decisions; see orch_policy.h. */
#include "orchestrator/orch_policy.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/config.h"

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
        switch (st) {
        case S(STARTING):
            fix_set(f, WG_ORCH_FIX_RESUME, st, "starting with no container: wake again");
            break;
        case S(CREATING):
            fix_set(f, WG_ORCH_FIX_MOVE, S(ASLEEP), "creating stuck with no container");
            f->clear_container = true;
            break;
        case S(ASLEEP):
        case S(FAILED):
            if (ob->record_has_container) {
                fix_set(f, WG_ORCH_FIX_UPDATE, st, "the container is gone");
                f->clear_container = true;
            }
            break;
        default: /* running, paused, draining, saving, stopping */
            fix_set(f, WG_ORCH_FIX_MOVE, S(ASLEEP), "the container is gone");
            f->clear_container = true;
            break;
        }
        break;

    case WG_ORCH_DOCKER_RUNNING:
        switch (st) {
        case S(STARTING):
            fix_set(f, WG_ORCH_FIX_RESUME, st, "starting with nobody waking it");
            break;
        case S(FAILED):
            fix_set(f, WG_ORCH_FIX_RESUME, st, "Docker says running while Redis says failed");
            break;
        case S(RUNNING):
            if (!ob->same_container || ob->ip_differs) {
                fix_set(f, WG_ORCH_FIX_UPDATE, st, "container id or address changed");
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
        break;

    case WG_ORCH_DOCKER_PAUSED:
        switch (st) {
        case S(STARTING):
            fix_set(f, WG_ORCH_FIX_RESUME, st, "starting with nobody waking it");
            break;
        case S(PAUSED):
            if (!ob->same_container) {
                fix_set(f, WG_ORCH_FIX_UPDATE, st, "container id changed");
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
        break;

    case WG_ORCH_DOCKER_STOPPED:
        switch (st) {
        case S(STARTING):
            fix_set(f, WG_ORCH_FIX_RESUME, st, "starting with nobody waking it");
            break;
        case S(ASLEEP):
        case S(FAILED):
            if (!ob->same_container) {
                fix_set(f, WG_ORCH_FIX_UPDATE, st, "container id changed");
                f->set_container = true;
            }
            break;
        case S(CREATING):
        case S(STOPPING):
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

/* The built-in hook. $1 work tree, $2 session, $3 time. Commits only a dirty
 * tree; pushes whenever a remote exists, so a commit whose push failed last
 * time goes out on the next attempt. The identity is the repository's own
 * when it has one. */
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
    "  if git rev-parse -q --abbrev-ref '@{upstream}' >/dev/null 2>&1; then\n"
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
    size_t n = 0;

    _Static_assert(WG_ORCH_SAVE_KILL_AFTER_S < 10, "one digit");
#define PUSH(v)                                                                                    \
    do {                                                                                           \
        if (n + 1 >= max)                                                                          \
            return -ENOSPC;                                                                        \
        argv[n++] = (v);                                                                           \
    } while (0)
    snprintf(secs, secs_len, "%" PRIu64, (timeout_ms + 999) / 1000);
    PUSH("timeout");
    PUSH("-s");
    PUSH("TERM");
    PUSH("-k");
    PUSH(kill_after);
    PUSH(secs);
    if (command) {
        for (size_t i = 0; command[i]; i++)
            PUSH(command[i]);
    } else {
        PUSH("sh");
        PUSH("-c");
        PUSH(save_script);
        PUSH("wakegate-save");
        PUSH(path);
        PUSH(session);
        PUSH(when);
    }
#undef PUSH
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
        bool stop = strcmp(labels[i], "wakegate.idle.stop_after") == 0;
        uint64_t ms;

        if (!stop && strcmp(labels[i], "wakegate.idle.pause_after") != 0)
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

int wg_orch_heartbeat_json(char *out, size_t outlen, const char *name, unsigned in_flight,
                           unsigned max_starts, unsigned queued, int64_t at_ms)
{
    json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:I}", "name", name, "starts_in_flight",
                          (json_int_t)in_flight, "max_concurrent_starts", (json_int_t)max_starts,
                          "queued", (json_int_t)queued, "at", (json_int_t)at_ms);
    int n;

    if (!o)
        return -ENOMEM;
    n = (int)json_dumpb(o, out, outlen, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (n <= 0 || (size_t)n >= outlen)
        return -ENOSPC;
    out[n] = '\0';
    return n;
}
