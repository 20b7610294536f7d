/* orchestrator/orch_int.h - what orch.c, waker.c and reconcile.c share.
 * Not an API: nothing outside orchestrator/orch*.c, waker.c and reconcile.c
 * includes it.
 *
 * Tasks. Every piece of work on one session is a struct orch_task: a wake
 * (waker.c), a recheck against Docker or an adoption (reconcile.c), the
 * handling of a container's death (reconcile.c), a forced sleep or destroy
 * (waker.c). Tasks of one session run one after the other, in arrival
 * order (waiting_turn), except that wakes coalesce into the wake in
 * progress. A task has at most one store or Docker call in flight (busy),
 * plus its timers and probe.
 *
 * Ownership. A task counts references: 1 while it is live (in o->tasks),
 * one per call in flight, one per open timer handle. orch_task_finish()
 * only marks it, unlinks it and starts the closes; the last reference frees
 * it. The orchestrator counts its own open handles plus live task memory
 * the same way, so it outlives every task. After wg_orch_free() set
 * o->closing, callbacks only drop their reference. */
#ifndef WG_ORCHESTRATOR_ORCH_INT_H
#define WG_ORCHESTRATOR_ORCH_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "common/config.h"
#include "common/hist.h"
#include "common/labels.h"
#include "common/list.h"
#include "common/log.h"
#include "common/session.h"
#include "common/store.h"
#include "orchestrator/docker.h"
#include "orchestrator/orch.h"
#include "orchestrator/orch_policy.h"
#include "orchestrator/probe.h"

#define ORCH_SUBSYS "orch"
#define ORCH_MARKS 128 /* recent kill/oom/self-stop marks kept */

enum orch_task_kind {
    TK_WAKE,    /* waker.c */
    TK_RECHECK, /* reconcile.c: compare one record with Docker and correct it */
    TK_DEATH,   /* reconcile.c: a container of a session died */
    TK_SLEEP,   /* sleeper.c: drain, save, then pause, stop or destroy (or at once, forced) */
};

enum orch_phase {
    PH_NEW,
    PH_WAIT_TURN, /* another task of this session goes first */
    PH_LOCK,
    PH_GET,
    PH_CAS,
    PH_QUEUED,     /* waiting for admission (starts in flight at the cap) */
    PH_DOCKER,     /* inspect / create / start / unpause */
    PH_READY_WAIT, /* probe or health */
    PH_BACKOFF,    /* crash restart delay */
    PH_PUBLISH,    /* starting -> running in flight */
    PH_FAILING,    /* log tail, -> failed, stop */
    PH_WORK,       /* recheck, death, stop, destroy steps */
    PH_DONE,
};

enum orch_pend { PEND_NONE, PEND_CRASH, PEND_DEADLINE };

struct wg_orch;

struct orch_task {
    struct wg_list link;  /* o->tasks, in arrival order */
    struct wg_list qlink; /* o->admit_q (PH_QUEUED) or o->recheck_q */
    struct wg_orch *o;
    enum orch_task_kind kind;
    enum orch_phase phase;
    char id[WG_SESSION_ID_MAX + 1];
    unsigned refs;
    bool finished;
    bool busy;        /* a call of this task is in flight */
    bool locked;      /* holds wg:lock:{id} */
    bool extend_busy; /* a lock extension is in flight */
    bool admitted;    /* counted in o->in_flight */
    bool in_queue;    /* qlink is linked */
    bool round;       /* part of a reconcile round (o->round_left) */
    bool slot;        /* counted in o->rechecks_running */
    void (*lock_next)(struct orch_task *t, bool held, const char *why);

    uv_timer_t deadline; /* wake deadline */
    uv_timer_t timer;    /* retries, health polling, backoff, delayed start */
    uv_timer_t extend;   /* lock extension */
    struct wg_probe *probe;

    struct wg_session rec; /* the record as last read or written (owned) */
    bool have_rec;
    char container[WG_SESSION_CONTAINER_ID_MAX + 1];
    char ip[WG_SESSION_IP_MAX + 1];
    uint16_t port; /* effective container port */

    /* wake */
    char entry_id[WG_STORE_STREAM_ID_MAX + 1]; /* to acknowledge; "" when none or done */
    char from[WG_STORE_NAME_MAX + 1];
    int64_t cmd_at;     /* the command's stamp (ms wall) */
    bool force;         /* skip the failed cool-down */
    bool crash_restart; /* a restart after a crash while running: keeps restarts */
    bool cas_retried;
    bool recreated; /* a create after start said 404: once only */
    bool health;    /* readiness from Docker health */
    enum orch_pend pend;
    int crash_exit;
    bool crash_oom;
    unsigned restarts;       /* crash restarts within this wake */
    int64_t start_issued_ns; /* wall ns when start/unpause was sent (for late die events) */
    uint64_t t_starting, t_admitted, t_docker, t_ready; /* uv_hrtime() */
    int64_t deadline_wall;                              /* ms wall */
    uint32_t delay_ms;                                  /* crash restart: wait before the wake */
    unsigned probe_attempts;
    unsigned polls;

    /* failing */
    const char *fail_outcome; /* "failed" or "timeout" */
    char fail_reason[32];     /* event detail "reason" */
    char fail_error[WG_SESSION_ERROR_MAX + 1];
    int fail_exit; /* -1: none */

    /* recheck / death */
    char hint[WG_SESSION_CONTAINER_ID_MAX + 1]; /* the container to look at */
    bool adopt;                                 /* no record: create it first */
    bool adopted;                               /* we created its record (in creating) */
    bool startup;                               /* at startup every transient state is orphaned */
    char adopt_image[WG_SESSION_IMAGE_MAX + 1];
    uint16_t adopt_port;
    bool adopt_has_stop, adopt_has_pause; /* idle labels of the adopted container */
    uint64_t adopt_stop_ms, adopt_pause_ms;
    int death_exit;
    bool death_by_hand, death_oom;
    int64_t death_ns;
    /* sleep (sleeper.c) */
    enum wg_orch_tier tier;
    bool by_api;         /* a sleep/destroy command, else the reaper */
    bool forced;         /* force=1: no drain, no save */
    int64_t idle_cutoff; /* the last_active the decision saw: later activity cancels */
    bool from_paused;    /* the container was unpaused for the save */
    bool shutdown_rollback;
    bool rollback_done;    /* the shutdown's move back to running is written */
    uint64_t save_started; /* uv_hrtime() */
    struct {
        bool ok, timeout;
        int exit_code;
        int64_t at; /* 0 until the hook answered: nothing to record */
        char commit[WG_SESSION_COMMIT_MAX + 1];
        char output[WG_SESSION_OUTPUT_MAX + 1];
    } save;

    struct {
        bool found;
        char status[16];
        char ip[WG_SESSION_IP_MAX + 1];
        char id[WG_SESSION_CONTAINER_ID_MAX + 1];
        int exit_code;
        bool oom;
        int64_t started_ms, finished_ms;
    } seen;
};

/* A kill, oom or self-stop seen for a container, for the next die event. */
struct orch_mark {
    char container[WG_SESSION_CONTAINER_ID_MAX + 1];
    uint64_t at; /* uv_now */
    bool kill, oom, ours;
};

struct orch_metrics {
    struct wg_hist queue, docker_start, ready, total;
    struct wg_hist save;
    uint64_t sleeps[2][3]; /* [by_api][tier]: reached paused, asleep or destroyed */
    uint64_t cancelled[2]; /* [0] during draining, [1] during saving */
    uint64_t saves_ok, saves_failed, saves_timeout;
    uint64_t reap_passes, reap_candidates, reap_due, reap_errors;
    uint64_t rollbacks; /* sleeps rolled back by a shutdown */
};

/* A session whose last save failed: how many times in a row, for the
 * retry backoff. Forgotten on a successful save. */
struct orch_save_fail {
    char id[WG_SESSION_ID_MAX + 1];
    unsigned failures;
};

struct wg_orch {
    uv_loop_t *loop;
    const struct wg_config *cfg;
    struct wg_log *log;
    const char *name; /* cfg->docker_name */
    char token[WG_STORE_TOKEN_LEN + 33];
    char container_prefix[8];
    int64_t (*clock_ms)(void *arg);
    void *clock_arg;

    struct wg_redis *redis;    /* borrowed: the shared command connection */
    struct wg_redis *blocking; /* owned: XREADGROUP BLOCK */
    struct wg_store *store;    /* owned, on redis */
    struct wg_docker *docker;  /* owned */
    struct wg_docker_events *events;

    unsigned refs; /* open handles + live tasks' memory + 1 until freed */
    bool closing;

    uv_timer_t tick;         /* 1 s: heartbeat, ping, claims, stuck scans */
    uv_timer_t events_timer; /* events stream reconnect */
    uv_timer_t read_timer;   /* wake read retry */

    /* boot */
    bool group_ok, group_busy;
    bool docker_ok, ping_busy;
    bool events_open;
    uint32_t events_backoff_ms;
    int64_t events_since_ns;
    bool reconciled, reconcile_busy, reconcile_again;
    unsigned round_left;
    bool consuming, read_busy, pending_read_done, claim_busy, scan_busy;
    unsigned scan_pending; /* stuck-scan record reads in flight */
    char claim_next[WG_STORE_STREAM_ID_MAX + 1];
    uint64_t last_heartbeat, last_ping, last_claim, last_scan; /* uv_now */
    bool read_err_logged, ping_err_logged;
    bool redis_lost; /* the wake connection was lost: reconcile when it is back */

    struct wg_list tasks;
    struct wg_list admit_q;
    struct wg_list recheck_q;
    unsigned in_flight, queued, rechecks_running;

    struct orch_mark marks[ORCH_MARKS];
    unsigned marks_next;

    /* sessions by state, from wg:counts (refreshed by the tick) */
    long long state_counts[WG_SESSION_STATE_COUNT];
    bool have_counts, counts_busy;
    uint64_t last_counts; /* uv_now */

    /* reaper (sleeper.c) */
    uv_timer_t reap_timer;
    bool reap_busy;
    size_t reap_offset;
    struct orch_save_fail *fails;
    size_t n_fails, cap_fails;

    /* graceful shutdown (wg_orch_shutdown) */
    bool shutting_down;
    uv_timer_t shutdown_timer;
    wg_orch_shutdown_cb *shutdown_cb;
    void *shutdown_arg;
    uint64_t shutdown_deadline; /* uv_now */

    struct wg_orch_stats st;
    struct orch_metrics m;
};

/* ---- orch.c --------------------------------------------------------------------------------- */

int64_t orch_now_ms(const struct wg_orch *o);
/* A new task for session id, linked into o->tasks (waiting its turn when
 * another task of the session is there). Returns NULL when out of memory. */
struct orch_task *orch_task_new(struct wg_orch *o, enum orch_task_kind kind, const char *id);
/* Starts (or leaves waiting) a task made by orch_task_new(). */
void orch_task_begin(struct orch_task *t);
/* The live task of kind for id, or NULL. */
struct orch_task *orch_task_find(struct wg_orch *o, const char *id, enum orch_task_kind kind);
/* Idempotent: unlinks, releases the lock (unless closing), leaves the
 * admission count and queues, closes the timers, stops the probe, and lets
 * the next task of the session begin. */
void orch_task_finish(struct orch_task *t);
/* Before a call: marks the task busy and takes a reference. */
void orch_task_call(struct orch_task *t);
/* First thing in a call's callback: drops the reference; true when the task
 * must not go on (finished or closing; it may be freed then). */
bool orch_task_returned(struct orch_task *t);
/* Releases the lock now (fire and forget) and stops extending it. */
void orch_task_unlock(struct orch_task *t);
/* A recheck that becomes a wake leaves its reconcile slot and round. */
void orch_task_release_slot(struct orch_task *t);
/* Replaces t->rec with a copy of rec (have_rec then true). Returns false
 * when rec is NULL or out of memory (t->rec is then empty). */
bool orch_task_keep_rec(struct orch_task *t, const struct wg_session *rec);
/* Drops a reference taken for something else than a call. */
void orch_task_unref(struct orch_task *t);

/* Lock steps shared by the task kinds: acquire, or take back our own lock
 * from a previous life; next(t, held) runs with held false when someone
 * else holds it or Redis failed (reason logged by the caller). */
typedef void orch_lock_next(struct orch_task *t, bool held, const char *why);
void orch_task_lock(struct orch_task *t, orch_lock_next *next);

void orch_ack(struct wg_orch *o, const char *entry_id);
/* Records a correction, decision or failure as a wg:events entry (fire and
 * forget; failures logged at debug). detail: JSON text or NULL. */
void orch_event(struct wg_orch *o, const char *id, const char *type, const char *detail);

void orch_mark(struct wg_orch *o, const char *container, bool kill, bool oom, bool ours);
/* Takes (and forgets) the mark of container: *kill / *oom / *ours. */
bool orch_mark_take(struct wg_orch *o, const char *container, bool *kill, bool *oom, bool *ours);

void orch_docker_error(struct wg_orch *o, int status);
/* Writes v as a logfmt value (quoted when needed) into buf. */
const char *orch_q(char *buf, size_t len, const char *v);

/* Called by reconcile.c when a reconcile round is over. */
void orch_reconciled(struct wg_orch *o);

/* ---- waker.c -------------------------------------------------------------------------------- */

/* A wake command: coalesces into the session's wake, or starts one. */
void waker_command(struct wg_orch *o, const struct wg_wake_cmd *cmd);
void waker_begin(struct orch_task *t);
/* A recheck that holds the lock hands over to a wake: t->rec is the record
 * (starting, or failed with a live container). */
void waker_take_over(struct orch_task *t, bool fresh_deadline);
/* A session's crash restart: a wake task that waits delay_ms, then moves
 * failed -> starting without the cool-down. */
void waker_restart_later(struct wg_orch *o, const char *id, uint32_t delay_ms);
/* Starts queued wakes while there is room. */
void waker_admit_next(struct wg_orch *o);
/* Docker events for the session's wake. */
void waker_on_death(struct orch_task *t, int exit_code, bool oom, int64_t time_ns);
void waker_on_healthy(struct orch_task *t);

/* ---- sleeper.c ------------------------------------------------------------------------------ */

/* A sleep or destroy command: drain, save, then stop or remove; with
 * force, stop or remove at once. The command is acknowledged when the task
 * ends. */
void sleeper_command(struct wg_orch *o, const struct wg_wake_cmd *cmd);
void sleeper_begin(struct orch_task *t);
/* A request (a wake command) for a session: cancels its sleep while it is
 * draining or saving. */
void sleeper_request(struct wg_orch *o, const char *id);
/* Starts the reaper timer (once reconciled) and stops it. */
void reaper_start(struct wg_orch *o);
void reaper_stop(struct wg_orch *o);
/* Shutdown: rolls back every sleep still draining (now) or saving (force:
 * at the grace deadline). Returns the sleeps still at work. */
unsigned sleeper_shutdown(struct wg_orch *o, bool force);
void sleeper_metrics(const struct wg_orch *o, struct wg_buf *out);
void sleeper_free(struct wg_orch *o);

/* ---- reconcile.c ---------------------------------------------------------------------------- */

void reconcile_round(struct wg_orch *o);
void reconcile_scan_stuck(struct wg_orch *o);
/* Asks for a recheck of one session (skipped when a task of it is live). */
void reconcile_recheck(struct wg_orch *o, const char *id, const char *container, bool startup);
void recheck_begin(struct orch_task *t);
/* Creates the record of an adopted container, then rechecks it. */
void recheck_adopt(struct orch_task *t, const struct wg_session_update *u, const char *detail);
void death_begin(struct orch_task *t);
void reconcile_next(struct wg_orch *o);
void reconcile_on_event(struct wg_orch *o, const struct wg_docker_event *ev);

#endif
