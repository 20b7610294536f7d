/* orchestrator/orch_policy.h - the orchestrator's decisions as pure functions.
 *
 * Everything here is free of I/O and loops, so the unit tests (test/unit/
 * test_orch.c) can walk every case: what a wake command does to a session in
 * each state, which Docker step of a wake follows which, what a container's
 * death means, how reconciliation corrects a record from Docker's truth,
 * when a transient state is stuck, the crash-loop backoff, the idle reaper
 * and which step of a sleep follows which. The container spec of a record
 * is common/container_spec.
 * orchestrator/orch.c and its parts act on these answers and log them. */
#ifndef WG_ORCHESTRATOR_ORCH_POLICY_H
#define WG_ORCHESTRATOR_ORCH_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/session.h"

#define WG_ORCH_CRASH_WINDOW_MS 10000u /* a death this soon after a start is a crash loop */
#define WG_ORCH_MAX_RESTARTS 3u        /* crash restarts before giving up */
#define WG_ORCH_BACKOFF_BASE_MS 1000u  /* 1 s, 2 s, 4 s, ... */
#define WG_ORCH_BACKOFF_MAX_MS 60000u
#define WG_ORCH_FAILED_COOLDOWN_MS 30000u /* a failed session is not retried sooner */

/* ---- wakes ------------------------------------------------------------------------------- */

enum wg_orch_wake_action {
    WG_ORCH_WAKE_NOOP,     /* running already: nothing to do */
    WG_ORCH_WAKE_START,    /* move to starting (CAS), then create/start/unpause */
    WG_ORCH_WAKE_RESUME,   /* starting, and nobody works on it (we hold the lock): take over */
    WG_ORCH_WAKE_COOLDOWN, /* failed too recently: refuse until the cool-down passed */
    WG_ORCH_WAKE_WAIT,     /* draining, saving or stopping: try again shortly */
    WG_ORCH_WAKE_REFUSE,   /* destroyed or out of range: drop the command */
};

/* What a wake of a session in `state` (since state_since, ms) does at `now`.
 * force (the command's force flag, or a crash restart) skips the cool-down
 * of a failed session. */
enum wg_orch_wake_action wg_orch_wake_decide(enum wg_session_state state, int64_t state_since,
                                             int64_t now, uint64_t cooldown_ms, bool force);
const char *wg_orch_wake_action_name(enum wg_orch_wake_action a);

/* A command stamped `at` (ms) is too old to act on at `now`: whoever asked
 * has given up (its hold ended with a 504). A command from the future (clock
 * skew between hosts) is not stale. */
bool wg_orch_wake_stale(int64_t at, int64_t now, uint64_t wake_timeout_ms);

/* Delay before crash restart number restarts+1: base << restarts, capped. */
uint32_t wg_orch_backoff_ms(unsigned restarts);

/* ---- the steps of a wake --------------------------------------------------------------- */

/* Whether a wake that moved to starting runs its Docker steps now: the
 * starts in flight are below the cap and no wake queued before it. */
bool wg_orch_admit_now(unsigned in_flight, unsigned max_starts, bool queue_empty);

enum wg_orch_wake_step {
    WG_ORCH_STEP_CREATE,  /* create a container: none, gone, or not this session's */
    WG_ORCH_STEP_FIND,    /* the create found the name taken: look the container up by name */
    WG_ORCH_STEP_START,   /* docker start */
    WG_ORCH_STEP_UNPAUSE, /* docker unpause */
    WG_ORCH_STEP_STARTED, /* start or unpause answered: inspect the started container */
    WG_ORCH_STEP_READY,   /* it runs: on to readiness */
    WG_ORCH_STEP_CRASH,   /* it stopped after our start: a crash while starting */
    WG_ORCH_STEP_FAIL,    /* a Docker error: the wake fails */
};
const char *wg_orch_wake_step_name(enum wg_orch_wake_step s);

/* What follows each Docker call of a wake. status is the call's (0,
 * WG_DOCKER_E*, or -errno; see orchestrator/docker.h). */
/* The first look at the record's container: labelled for this session,
 * paused, running, as the inspect showed. */
enum wg_orch_wake_step wg_orch_step_after_inspect(int status, bool labelled, bool paused,
                                                  bool running);
/* Create answered (on success the id is recorded, then the start). */
enum wg_orch_wake_step wg_orch_step_after_create(int status);
/* Start answered; recreated: a container that vanished was created anew
 * once already in this wake. */
enum wg_orch_wake_step wg_orch_step_after_start(int status, bool recreated);
/* Unpause answered (a conflict: it was not paused any more). */
enum wg_orch_wake_step wg_orch_step_after_unpause(int status);
/* The inspect of the container after start or unpause answered. */
enum wg_orch_wake_step wg_orch_step_after_started(bool paused, bool running);

/* Whether a Docker call's status (0, WG_DOCKER_E*, -errno) with the HTTP
 * status it got (0: none) says the engine is unreachable rather than
 * anything about the container: nobody at the socket (-ECONNREFUSED,
 * -ENOENT), the connection lost (-ECONNRESET, -EPIPE), no answer in time
 * (-ETIMEDOUT), the name lookup (-EHOSTUNREACH, -ENETUNREACH), or a 502,
 * 503 or 504 from whatever answers in front of the engine. A 500 is the
 * engine's own answer about the container (an OCI runtime error): not
 * this. Neither are a TLS failure, a malformed answer or a cancel. */
bool wg_orch_engine_unreachable(int status, long http_status);

#define WG_ORCH_ENGINE_RETRY_MIN_MS 100u /* first retry of an unreachable engine */
#define WG_ORCH_ENGINE_RETRY_MAX_MS 1000u
/* Delay before retry number tries+1 of an unreachable engine within a
 * wake: WG_ORCH_ENGINE_RETRY_MIN_MS doubled per try, capped at
 * WG_ORCH_ENGINE_RETRY_MAX_MS, and never past the wake's deadline
 * (left_ms, the time left until it). */
uint32_t wg_orch_engine_retry_ms(unsigned tries, int64_t left_ms);

enum wg_orch_crash_action {
    WG_ORCH_CRASH_RESTART,   /* start it again after wg_orch_backoff_ms(restarts) */
    WG_ORCH_CRASH_FAIL_OOM,  /* OOM-killed: restarting would not help */
    WG_ORCH_CRASH_FAIL_LOOP, /* max_restarts restarts did not help */
};
/* A container that died while its wake waited for it, after `restarts`
 * crash restarts in this wake. */
enum wg_orch_crash_action wg_orch_wake_crash(bool oom, unsigned restarts, unsigned max_restarts);

/* Whether a die event (time_ns, 0: unknown) is the death of the run a wake
 * started at start_ns (0: nothing started yet), not of an earlier one. */
bool wg_orch_death_is_this_run(int64_t start_ns, int64_t time_ns);

/* ---- a container's death (Docker "die" events) ---------------------------------------- */

struct wg_orch_death {
    enum wg_session_state state; /* the record's state when the death is handled */
    bool by_hand;                /* a kill/stop through the Engine API preceded it (not ours) */
    bool oom;                    /* OOM-killed (the oom event, or State.OOMKilled) */
    int exit_code;               /* -1: unknown */
    int64_t uptime_ms;           /* from its start to its death; -1: unknown */
    unsigned restarts;           /* the record's consecutive crash restarts */
};

enum wg_orch_death_action {
    WG_ORCH_DEATH_IGNORE,  /* not ours to correct (asleep, failed, stopping, ...) */
    WG_ORCH_DEATH_ASLEEP,  /* stopped by hand, or a clean exit: asleep */
    WG_ORCH_DEATH_FAILED,  /* OOM, a crash, or a crash loop past its restarts */
    WG_ORCH_DEATH_RESTART, /* crash soon after its start: failed now, restart after backoff */
};

/* *ret_reason (may be NULL) gets "oom", "exit", "stopped", "exited" or
 * "crash loop" for the event detail. A death while starting is the wake's
 * own business (orchestrator/waker): this answers IGNORE for it. */
enum wg_orch_death_action wg_orch_death_decide(const struct wg_orch_death *d,
                                               uint32_t crash_window_ms, unsigned max_restarts,
                                               const char **ret_reason);
const char *wg_orch_death_action_name(enum wg_orch_death_action a);

/* ---- reconciliation ------------------------------------------------------------------- */

enum wg_orch_docker_state {
    WG_ORCH_DOCKER_MISSING, /* no container (never created, removed, 404) */
    WG_ORCH_DOCKER_RUNNING,
    WG_ORCH_DOCKER_PAUSED,
    WG_ORCH_DOCKER_STOPPED, /* created, exited, dead */
};

/* Maps Docker's State.Status ("running", "paused", "restarting", "exited",
 * "created", "dead", "removing") to the above; restarting counts as running
 * and anything unknown as stopped. NULL: missing. */
enum wg_orch_docker_state wg_orch_docker_state_of(const char *status);
const char *wg_orch_docker_state_name(enum wg_orch_docker_state s);

enum wg_orch_fix_kind {
    WG_ORCH_FIX_NONE,   /* Redis agrees with Docker */
    WG_ORCH_FIX_UPDATE, /* fields only (container id, ip), no move */
    WG_ORCH_FIX_MOVE,   /* a transition to `to` */
    WG_ORCH_FIX_RESUME, /* a wake takes over (starting, or failed with a live container) */
    WG_ORCH_FIX_STOP,   /* stopping stuck with the container up: stop it, then asleep */
};

struct wg_orch_fix {
    enum wg_orch_fix_kind kind;
    enum wg_session_state to; /* MOVE */
    bool set_container;       /* write the container's id (and its ip when running) */
    bool clear_container;     /* remove container_id and ip from the record */
    const char *why;          /* for the log line and the event */
};

struct wg_orch_observed {
    enum wg_session_state state; /* the record's */
    bool stuck;                  /* a transient state past its deadline */
    bool record_has_container;   /* container_id is set */
    bool same_container;         /* ... and is the container Docker showed */
    bool ip_differs;             /* running, and the record's ip is not Docker's */
    enum wg_orch_docker_state docker;
    bool clean_exit; /* stopped: exit 0, or killed by a signal (137/143), not OOM */
};

/* Docker's truth wins. Transient states (creating, draining, saving,
 * stopping) that are not stuck are left alone: an actor is at work. Moves
 * are always allowed by the table (wg_session_can_move()). */
void wg_orch_reconcile_decide(const struct wg_orch_observed *ob, struct wg_orch_fix *ret_fix);
const char *wg_orch_fix_name(enum wg_orch_fix_kind k);

struct wg_orch_deadlines {
    uint64_t wake_timeout_ms; /* starting */
    uint64_t save_timeout_ms; /* saving */
};

/* How long a session may stay in `state` before it counts as stuck; 0 for
 * resting states (never stuck). starting: wake_timeout (plus a second, so
 * the waker's own deadline fires first); creating, draining, stopping:
 * twice the wake timeout, at least 60 s; saving: twice the save timeout. */
uint64_t wg_orch_stuck_after_ms(enum wg_session_state state, const struct wg_orch_deadlines *d);

/* ---- readiness -------------------------------------------------------------------------- */

enum wg_orch_ready_mode {
    WG_ORCH_READY_TCP,    /* no HEALTHCHECK: connect probe to ip:port */
    WG_ORCH_READY_HEALTH, /* HEALTHCHECK: wait for Docker's health = healthy */
};
/* health: State.Health.Status of an inspect after the start (NULL: none). */
enum wg_orch_ready_mode wg_orch_ready_mode_of(const char *health);
bool wg_orch_health_ready(const char *health);

/* ---- sleep -------------------------------------------------------------------------------- */

enum wg_orch_tier { WG_ORCH_TIER_PAUSE = 0, WG_ORCH_TIER_STOP, WG_ORCH_TIER_DESTROY };
const char *wg_orch_tier_name(enum wg_orch_tier t); /* "pause", "stop", "destroy" */

/* One idle candidate as the reaper sees it. Tiers are the effective ones
 * (the session's override, else the configured default); 0 is off. */
struct wg_orch_reap_in {
    enum wg_session_state state;
    int64_t now, last_active; /* ms */
    uint64_t pause_after_ms, stop_after_ms;
    int64_t save_at; /* last save (ms), 0: never */
    bool save_ok;
    uint64_t retry_wait_ms; /* the backoff owed after a failed save */
};

enum wg_orch_reap_action { WG_ORCH_REAP_NONE = 0, WG_ORCH_REAP_PAUSE, WG_ORCH_REAP_STOP };

/* Whether a candidate is due, and for which tier. running: stop when idle
 * past stop_after, else pause when past pause_after; paused: stop when past
 * stop_after; any other state: none (an actor is at work, or it sleeps).
 * A stop whose last save failed during this idle spell (save_at at or after
 * last_active) waits until save_at + retry_wait_ms. *why says why. */
enum wg_orch_reap_action wg_orch_reap_decide(const struct wg_orch_reap_in *in, const char **why);

/* The wait after `failures` consecutive failed saves (1 = first_ms, then
 * doubled), capped at max_ms. 0 failures: 0. */
uint64_t wg_orch_save_backoff_ms(unsigned failures, uint64_t first_ms, uint64_t max_ms);

/* The save hook's argv for docker exec: the in-container `timeout -s TERM
 * -k 5 SECS` (the engine cannot kill an exec; TERM first so git removes its
 * lock files) around `command`, or, when command is NULL, the built-in hook:
 * sh -c SCRIPT wakegate-save PATH SESSION WHEN, which commits a dirty work
 * tree at PATH ("wakegate auto-save: session SESSION at WHEN"), pushes to
 * the upstream (or origin) when there is one, and prints
 * "wakegate-commit: <HEAD>". A PATH that is missing or not a git work tree
 * has nothing to save (exit 0). argv gets at most max entries including the
 * terminating NULL; secs is the buffer for the timeout's text. Returns the
 * count (without the NULL) or -ENOSPC. */
#define WG_ORCH_SAVE_KILL_AFTER_S 5
int wg_orch_save_argv(const char *const *command, const char *path, const char *session,
                      const char *when, uint64_t timeout_ms, const char **argv, size_t max,
                      char *secs, size_t secs_len);

/* The commit the hook reported: the last "wakegate-commit: <hex>" line of
 * output, 7..64 lowercase hex. Returns true with commit filled. */
bool wg_orch_save_commit(const char *output, size_t len, char *commit, size_t commit_len);

/* Idle overrides from container labels wakegate.idle.stop_after and
 * wakegate.idle.pause_after (durations as in the config: "90s", "20m";
 * "0s" turns the tier off). labels: key, value, key, value, ..., NULL.
 * Returns 0, or -EINVAL with err naming the label. */
int wg_orch_idle_labels(const char *const *labels, bool *has_stop, uint64_t *stop_ms,
                        bool *has_pause, uint64_t *pause_ms, char *err, size_t errlen);

/* ---- the steps of a sleep ------------------------------------------------------------- */

/* Every step of a sleep task is one of these; which one follows which is
 * decided by the functions below:
 *   first (the record read):  DRAIN, SAVE (paused: unpause, then the hook),
 *                             STOP, DOCKER, REFUSE or NOTHING
 *   after the drain:          SAVE, PAUSE or KEEP_AWAKE
 *   after the save:           PAUSE, STOP, REFUSE or KEEP_AWAKE
 * PAUSE and STOP move the record, then make the Docker call (DOCKER makes
 * only the call, then moves or deletes the record). */
enum wg_orch_sleep_step {
    WG_ORCH_SLEEP_NOTHING,    /* nothing to put to sleep: the task ends */
    WG_ORCH_SLEEP_DRAIN,      /* running -> draining, then wait sessions.idle.drain */
    WG_ORCH_SLEEP_SAVE,       /* -> saving, then the save hook */
    WG_ORCH_SLEEP_PAUSE,      /* -> paused, then docker pause */
    WG_ORCH_SLEEP_STOP,       /* -> stopping, then docker stop, then asleep */
    WG_ORCH_SLEEP_DOCKER,     /* the Docker call at once (a destroy: remove, then the record) */
    WG_ORCH_SLEEP_REFUSE,     /* a destroy that cannot save: destroy_refused (and keep awake) */
    WG_ORCH_SLEEP_KEEP_AWAKE, /* back to running: a failed save, or a shutdown */
};
const char *wg_orch_sleep_step_name(enum wg_orch_sleep_step s);

/* A sleep task's view of the session when it read the record. */
struct wg_orch_sleep_in {
    enum wg_session_state state;
    enum wg_orch_tier tier;
    bool forced;        /* force=1: no drain, no save */
    bool has_container; /* the record names a container */
    bool saved_since;   /* its last save was good and is not older than its last activity */
};

/* The first step. *why (may be NULL) gets the reason of a REFUSE (the
 * destroy_refused event's text) or of NOTHING. */
enum wg_orch_sleep_step wg_orch_sleep_first(const struct wg_orch_sleep_in *in, const char **why);
/* After the drain: shutdown is a graceful stop rolling the sleep back;
 * save_before_pause is sessions.save.before_pause. */
enum wg_orch_sleep_step wg_orch_sleep_after_drain(enum wg_orch_tier tier, bool save_before_pause,
                                                  bool shutdown);
/* After the save hook answered: saved is its result; stop_on_failure is
 * sessions.save.on_failure == stop (the stop tier only). */
enum wg_orch_sleep_step wg_orch_sleep_after_save(enum wg_orch_tier tier, bool saved,
                                                 bool stop_on_failure, bool shutdown);

enum wg_orch_sleep_call {
    WG_ORCH_CALL_NONE,   /* no container: only the record moves */
    WG_ORCH_CALL_THAW,   /* unpause first (a frozen process cannot act on SIGTERM), then stop */
    WG_ORCH_CALL_PAUSE,  /* docker pause */
    WG_ORCH_CALL_STOP,   /* docker stop */
    WG_ORCH_CALL_REMOVE, /* docker remove (force, volumes) */
};
/* The Docker call of the last step: state is the record's (as the task
 * knows it), thawed: the container was unpaused for the save already. */
enum wg_orch_sleep_call wg_orch_sleep_call(enum wg_orch_tier tier, enum wg_session_state state,
                                           bool thawed, bool has_container);

/* Whether a request (a wake command) cancels a sleep task: only one that is
 * draining or saving, and never a destroy or a forced one. */
bool wg_orch_sleep_cancellable(enum wg_orch_tier tier, bool forced, enum wg_session_state state);

/* The save hook's result: the exec's status (0, WG_DOCKER_E*, -errno), its
 * exit code and how long it took. A non-zero exit at or past the save
 * timeout is the in-container `timeout` killing it: a timeout. */
void wg_orch_save_result(int status, int exit_code, uint64_t elapsed_ms, uint64_t timeout_ms,
                         bool *ret_ok, bool *ret_timeout);

/* A graceful shutdown's look at one sleep task. */
struct wg_orch_sleep_shutdown_in {
    bool begun;        /* it got past its lock (it may have moved the record) */
    bool rolled_back;  /* the move back to running is written */
    bool rolling_back; /* the move back to running is under way */
    bool busy;         /* a call is in flight */
    bool late;         /* the grace period is over */
    enum wg_session_state state;
};
enum wg_orch_sleep_shutdown {
    WG_ORCH_SHUTDOWN_END,      /* not begun: end it, nothing to roll back */
    WG_ORCH_SHUTDOWN_DONE,     /* rolled back: nothing left to wait for */
    WG_ORCH_SHUTDOWN_WAIT,     /* at work (a save may finish): wait */
    WG_ORCH_SHUTDOWN_ROLLBACK, /* move it back to running now */
    WG_ORCH_SHUTDOWN_BESIDE,   /* move it back to running beside the call in flight */
};
/* DONE and END are not counted as sleeps still at work. */
enum wg_orch_sleep_shutdown wg_orch_sleep_on_shutdown(const struct wg_orch_sleep_shutdown_in *in);

/* ---- heartbeat ---------------------------------------------------------------------------- */

/* What a heartbeat says of a host; running, cpus and mem_total < 0 or 0
 * when unknown are written as 0. */
struct wg_orch_beat {
    const char *name;
    unsigned in_flight, max_starts, queued;
    int64_t at_ms;
    long long running;  /* session containers running on this host */
    long long sessions; /* sessions homed here */
    long long cpus, mem_total;
    unsigned max_sessions;   /* 0: no limit */
    bool engine;             /* the engine answers */
    const char *labels_json; /* {"k":"v"}; NULL: {} */
};

/* The heartbeat's JSON: {"name","starts_in_flight","max_concurrent_starts",
 * "queued","at","running","sessions","cpus","mem_total","max_sessions",
 * "labels","engine"} into out. Returns the length, -ENOSPC, or -EINVAL (labels_json
 * not a JSON object). */
int wg_orch_heartbeat_json(char *out, size_t outlen, const struct wg_orch_beat *b);

#endif
