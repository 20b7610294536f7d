/* orchestrator/orch_int.h - what the files of the orchestrator runtime
 * share: orch.c (boot, wake consumer, events stream, heartbeat, metrics,
 * shutdown), orch_task.c (the task table and the session lock), waker.c,
 * wake_ready.c and wake_fail.c (the wake), reaper.c and sleeper.c (idle
 * sessions and the sleep), reconcile.c and reconcile_events.c (Docker's
 * truth). Not an API: nothing outside them includes it.
 *
 * Tasks. A task is one piece of work on one session. There are four kinds;
 * each is a struct that embeds the common head, struct orch_task, as its
 * first member, and has a table of operations (struct orch_task_ops) that
 * the task table (orch_task.c) calls instead of switching on a kind:
 *
 *   wake     struct orch_wake (waker.c, wake_ready.c, wake_fail.c): a wake
 *            command, a crash restart, or a recheck's hand-over. Lock, read
 *            the record, move it to starting (the command is acknowledged
 *            then), wait for admission, create / start / unpause, readiness
 *            (probe or Docker health), then starting -> running. On its
 *            deadline or after too many crashes it fails instead: the log
 *            tail, starting -> failed, and a stop of the container.
 *   recheck  struct orch_recheck (reconcile.c): compare one record with
 *            Docker under the lock and correct it, or first adopt a
 *            labelled container that has no record. A record left starting
 *            is handed over to a wake, with the lock.
 *   death    struct orch_death (reconcile_events.c): a container of a
 *            session died; the session moves (asleep, failed, or a crash
 *            restart).
 *   sleep    struct orch_sleep (sleeper.c): drain, save, then pause, stop
 *            or remove (or, forced, stop or remove at once).
 *
 * Turns. Tasks of one session run one after the other, in arrival order: a
 * task made while another task of its session is live waits (PH_WAIT_TURN),
 * and its ops->start runs when the ones before it have ended. Wake commands
 * coalesce into the session's wake instead of queueing behind it.
 *
 * Phases. t->phase says where a task is, for the decisions that depend on it
 * (a wake's deadline fails it only while it waits for admission, Docker or
 * readiness; a shutdown rolls back only the sleeps that have begun):
 *   a wake     NEW -> LOCK -> GET -> CAS -> QUEUED -> DOCKER -> READY_WAIT
 *              -> PUBLISH (BACKOFF between crash restarts, FAILING once it
 *              fails);
 *   a sleep    NEW -> LOCK -> WORK;
 *   a recheck  NEW -> WORK (it takes the lock from there), a death NEW ->
 *              WORK (no lock);
 *   every task DONE once it ended.
 *
 * The lock. Multi-step work on a session holds wg:lock:{id} with this host's
 * token (orch_task_lock()), extended every third of its TTL while held and
 * released when the task ends. A wake and a sleep hold it for their whole
 * run, a recheck while it looks and corrects; a death takes none (its move
 * is one compare-and-set).
 *
 * Calls. A task has at most one store or Docker call in flight (busy), plus
 * its timers and a probe. A deadline or a death that arrives while a wake's
 * call is in flight is noted (pend) and taken when the call returns.
 *
 * Ownership. A task counts references: 1 while it is live (in o->tasks),
 * one per call in flight, one per open timer handle (the head's two, and a
 * wake's deadline). orch_task_finish() only marks it, unlinks it and starts
 * the closes; the last reference frees it. The orchestrator counts its own
 * open handles plus live task memory the same way, so it outlives every
 * task. After wg_orch_free() set o->closing, callbacks only drop their
 * reference. */
#ifndef WG_ORCHESTRATOR_ORCH_INT_H
#define WG_ORCHESTRATOR_ORCH_INT_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/config.h"
#include "common/hist.h"
#include "common/labels.h"
#include "common/list.h"
#include "common/log.h"
#include "common/session.h"
#include "common/store.h"
#include "orchestrator/cpu_watch.h"
#include "orchestrator/docker.h"
#include "orchestrator/orch.h"
#include "orchestrator/orch_policy.h"
#include "orchestrator/probe.h"
#include "orchestrator/stale.h"

#define ORCH_SUBSYS "orch"
#define ORCH_MARKS 128 /* recent kill/oom/self-stop marks kept */

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
struct orch_task;

/* What a kind of task does at the moments the task table decides. */
struct orch_task_ops {
    const char *name; /* "wake", "recheck", "death", "sleep" */
    size_t size;      /* of the kind's struct, which begins with struct orch_task */
    /* Its turn came: it was the session's first task, or the ones before
     * it ended. Not called for a task that ended while it waited. */
    void (*start)(struct orch_task *t);
    /* The task ends (orch_task_finish(), also from wg_orch_free()): leave
     * the kind's queue and counts, stop its probe, close its own handles
     * (each holds a reference). NULL when the kind holds nothing more. */
    void (*cancel)(struct orch_task *t);
};

extern const struct orch_task_ops orch_wake_ops, orch_recheck_ops, orch_death_ops, orch_sleep_ops;

/* Runs with held false when someone else holds the lock or Redis failed
 * (why says which; the caller logs it). */
typedef void orch_lock_next(struct orch_task *t, bool held, const char *why);

/* The head every kind of task begins with. */
struct orch_task {
    struct wg_list link;  /* o->tasks, in arrival order */
    struct wg_list qlink; /* o->admit_q (a wake waiting for admission) or o->recheck_q */
    struct wg_orch *o;
    const struct orch_task_ops *ops;
    enum orch_phase phase;
    char id[WG_SESSION_ID_MAX + 1];
    unsigned refs;
    bool finished;
    bool busy;        /* a call of this task is in flight */
    bool locked;      /* holds wg:lock:{id} */
    bool extend_busy; /* a lock extension is in flight */
    bool in_queue;    /* qlink is linked */
    orch_lock_next *lock_next;

    uv_timer_t timer;  /* retries, health polling, backoff, delayed start, drain */
    uv_timer_t extend; /* lock extension */

    struct wg_session rec; /* the record as last read or written (owned) */
    bool have_rec;
};

/* A container as a recheck or a death saw it (inspect). */
struct orch_seen {
    bool found;
    char status[16];
    char ip[WG_SESSION_IP_MAX + 1];
    char id[WG_SESSION_CONTAINER_ID_MAX + 1];
    int exit_code;
    bool oom;
    int64_t started_ms, finished_ms;
};

/* A wake (waker.c, wake_ready.c, wake_fail.c). */
struct orch_wake {
    struct orch_task t;
    uv_timer_t deadline; /* the wake deadline */
    struct wg_probe *probe;
    char container[WG_SESSION_CONTAINER_ID_MAX + 1];
    char ip[WG_SESSION_IP_MAX + 1];
    uint16_t port; /* effective container port */
    bool admitted; /* counted in o->in_flight */

    /* the command */
    char entry_id[WG_STORE_STREAM_ID_MAX + 1]; /* to acknowledge; "" when none or done */
    char from[WG_STORE_NAME_MAX + 1];
    int64_t cmd_at;     /* the command's stamp (ms wall) */
    bool force;         /* skip the failed cool-down */
    bool crash_restart; /* a restart after a crash while running: keeps restarts */
    uint32_t delay_ms;  /* crash restart: wait before the wake */

    /* on the way */
    bool cas_retried;
    bool recreated;    /* a create after start said 404: once only */
    bool network_made; /* this wake created the network: listed once more only */
    char network_id[WG_DOCKER_REF_MAX + 1]; /* the session network the container joins */
    bool health;                            /* readiness from Docker health */
    enum orch_pend pend;
    int crash_exit;
    bool crash_oom;
    unsigned restarts;       /* crash restarts within this wake */
    int64_t start_issued_ns; /* wall ns when start/unpause was sent (for late die events) */
    uint64_t t_starting, t_admitted, t_docker, t_ready; /* uv_hrtime() */
    int64_t deadline_wall;                              /* ms wall */
    unsigned probe_attempts;
    unsigned polls;
    size_t next_port; /* the template's ports: from here on may still need probing */

    /* the engine unreachable: the last Docker call got no answer (cleared
     * by the next one that does); retried until the deadline */
    unsigned engine_tries;
    char engine_call[24];
    char engine_error[256];

    /* failing */
    const char *fail_outcome; /* "failed" or "timeout" */
    char fail_reason[32];     /* event detail "reason" */
    char fail_error[WG_SESSION_ERROR_MAX + 1];
    int fail_exit; /* -1: none */
};

/* A recheck against Docker, or an adoption (reconcile.c). */
struct orch_recheck {
    struct orch_task t;
    char hint[WG_SESSION_CONTAINER_ID_MAX + 1]; /* the container to look at */
    bool startup;                               /* at startup every transient state is orphaned */
    bool round;                                 /* part of a reconcile round (o->round_left) */
    bool slot;                                  /* counted in o->rechecks_running */
    bool adopt;                                 /* no record: create it first */
    bool adopted;                               /* we created its record (in creating) */
    char adopt_image[WG_SESSION_IMAGE_MAX + 1];
    uint16_t adopt_port;
    bool adopt_has_stop, adopt_has_pause; /* idle labels of the adopted container */
    uint64_t adopt_stop_ms, adopt_pause_ms;
    struct orch_seen seen;
};

/* The death of a session's container (reconcile_events.c). */
struct orch_death {
    struct orch_task t;
    char hint[WG_SESSION_CONTAINER_ID_MAX + 1]; /* the container that died */
    int death_exit;                             /* -1: unknown */
    bool death_by_hand, death_oom;
    int64_t death_ns;
    struct orch_seen seen;
};

/* A sleep or destroy (sleeper.c). */
struct orch_sleep {
    struct orch_task t;
    char container[WG_SESSION_CONTAINER_ID_MAX + 1];
    char entry_id[WG_STORE_STREAM_ID_MAX + 1]; /* to acknowledge; "" when none or done */
    char from[WG_STORE_NAME_MAX + 1];
    int64_t cmd_at;
    enum wg_orch_tier tier;
    bool by_api;         /* a sleep/destroy command, else the reaper */
    bool forced;         /* force=1: no drain, no save */
    bool now;            /* now=1: drain, save, stop; activity and requests do not call it off */
    int64_t idle_cutoff; /* the last_active the decision saw: later activity cancels */
    bool from_paused;    /* the container was unpaused for the save */
    bool stop_graced;    /* the proxies had their moment before the stop */
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
};

/* The kind's struct of a task; t must be of that kind. */
static inline struct orch_wake *orch_wake_of(struct orch_task *t)
{
    assert(t->ops == &orch_wake_ops);
    return (struct orch_wake *)t;
}
static inline struct orch_recheck *orch_recheck_of(struct orch_task *t)
{
    assert(t->ops == &orch_recheck_ops);
    return (struct orch_recheck *)t;
}
static inline struct orch_death *orch_death_of(struct orch_task *t)
{
    assert(t->ops == &orch_death_ops);
    return (struct orch_death *)t;
}
static inline struct orch_sleep *orch_sleep_of(struct orch_task *t)
{
    assert(t->ops == &orch_sleep_ops);
    return (struct orch_sleep *)t;
}

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
    /* A session network is being created (wake_network.c): the engine
     * keeps no name unique, so one create at a time, the others list
     * again after it. */
    bool network_creating;
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
    struct wg_cpu_watch *cpu; /* owned; NULL when idle.cpu_interval is 0s */

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
    /* The next round follows a Redis loss: Redis may have lost writes (a
     * failover promoted a replica behind the master), so a transient state
     * no actor of this process works on is orphaned, as at startup. */
    bool orphan_transients;

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

    /* reaper (reaper.c) */
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

    /* stale containers (stale.c): whether this host was lost, as read
     * before its first heartbeat after a gap */
    enum wg_stale_lost lost;
    bool lost_check_due, lost_check_busy;
    uint64_t stale_removed, stale_save_failed;

    struct wg_orch_stats st;
    struct orch_metrics m;

    /* this host among the others (orch_hosts.c) */
    struct {
        bool have_info, info_busy;
        bool engine_seen;          /* the engine answered once: a host from then on */
        bool adopted, adopt_busy;  /* this host's older records are in its sets */
        long long cpus, mem_total; /* the engine's NCPU and MemTotal */
        long long running;         /* session containers running here */
        bool running_busy;
        long long homed; /* sessions homed here (wg:hostload, as last read) */
        bool beat_busy, sweep_busy, have_sweep;
        bool sweep_held;     /* the last sweep was held (logged once) */
        uint64_t last_sweep; /* uv_now */
        struct wg_store_sweep sweep;
        /* Since when (uv_now, 0: not now) this process has heard Redis
         * without a break, and the connects count that began it. */
        uint64_t redis_since, redis_connects;
    } hosts;
};

/* ---- orch_task.c: the task table --------------------------------------------------------- */

/* A new task of a kind for session id, linked into o->tasks (waiting its
 * turn when another task of the session is there). Returns NULL when out
 * of memory or closing. */
struct orch_task *orch_task_new(struct wg_orch *o, const struct orch_task_ops *ops, const char *id);
/* A new task of a kind that takes over from `from` (which must then end):
 * it takes from's place in the session's turn, its lock (and the lock's
 * extension) and a copy of its record. Returns NULL when out of memory. */
struct orch_task *orch_task_successor(struct orch_task *from, const struct orch_task_ops *ops);
/* Starts (or leaves waiting) a task made by orch_task_new(). */
void orch_task_begin(struct orch_task *t);
/* The live task of a kind for id, or NULL. */
struct orch_task *orch_task_find(struct wg_orch *o, const char *id,
                                 const struct orch_task_ops *ops);
/* Whether any task of session id is live (waiting or at work). */
bool orch_session_live(struct wg_orch *o, const char *id);
/* Idempotent: unlinks, releases the lock (unless closing), closes the
 * head's timers, lets the kind leave what it holds (ops->cancel), lets the
 * next task of the session begin, and starts what the freed room allows
 * (queued wakes and rechecks). */
void orch_task_finish(struct orch_task *t);
/* Takes t out of its queue (admission or rechecks). Returns whether it was
 * in one. */
bool orch_task_dequeue(struct orch_task *t);
/* Before a call: marks the task busy and takes a reference. */
void orch_task_call(struct orch_task *t);
/* First thing in a call's callback: drops the reference; true when the task
 * must not go on (finished or closing; it may be freed then). */
bool orch_task_returned(struct orch_task *t);
/* Releases the lock now (fire and forget) and stops extending it. */
void orch_task_unlock(struct orch_task *t);
/* Replaces t->rec with a copy of rec (have_rec then true). Returns false
 * when rec is NULL or out of memory (t->rec is then empty). */
bool orch_task_keep_rec(struct orch_task *t, const struct wg_session *rec);
/* Drops a reference taken for something else than a call. */
void orch_task_unref(struct orch_task *t);
/* Closes a timer handle a kind owns beside the head's; the task's
 * reference for it is dropped in the close callback. */
void orch_task_close_timer(struct orch_task *t, uv_timer_t *timer);
/* Inits a timer handle a kind owns beside the head's; takes a reference. */
void orch_task_init_timer(struct orch_task *t, uv_timer_t *timer);

/* Lock steps shared by the task kinds: acquire, or take back our own lock
 * from a previous life; next(t, held, why) runs when it is settled. */
void orch_task_lock(struct orch_task *t, orch_lock_next *next);

/* ---- orch.c ---------------------------------------------------------------------------------- */

int64_t orch_now_ms(const struct wg_orch *o);
/* Drops a reference to o's memory (a handle or a task's memory); the last
 * frees it. */
void orch_unref(struct wg_orch *o);
void orch_ack(struct wg_orch *o, const char *entry_id);
/* Records a correction, decision or failure as a wg:events entry (fire and
 * forget; failures logged at debug). detail: JSON text or NULL. */
void orch_event(struct wg_orch *o, const char *id, const char *type, const char *detail);

void orch_mark(struct wg_orch *o, const char *container, bool kill, bool oom, bool ours);
/* The template of rec (its readiness and save hook); the sessions: block
 * when it names none, or one a reload removed (a wake that creates a
 * container refuses that case itself: waker.c). */
const struct wg_sessions_cfg *orch_template(const struct wg_orch *o, const struct wg_session *rec);
/* Takes (and forgets) the mark of container: *kill / *oom / *ours. */
bool orch_mark_take(struct wg_orch *o, const char *container, bool *kill, bool *oom, bool *ours);

void orch_docker_error(struct wg_orch *o, int status);
/* Writes v as a logfmt value (quoted when needed) into buf. */
const char *orch_q(char *buf, size_t len, const char *v);

/* Called by reconcile.c when a reconcile round is over. */
void orch_reconciled(struct wg_orch *o);

/* ---- waker.c, wake_ready.c, wake_fail.c ----------------------------------------------------- */

/* A wake command: coalesces into the session's wake, or starts one. */
void waker_command(struct wg_orch *o, const struct wg_wake_cmd *cmd);
/* A recheck that holds the lock hands over to a wake, which takes its lock
 * and record (starting, or failed with a live container); `from` ends.
 * fresh_deadline: the wake deadline runs from now, else from state_since. */
void waker_take_over(struct orch_task *from, bool fresh_deadline);
/* A session's crash restart: a wake task that waits delay_ms, then moves
 * failed -> starting without the cool-down. */
void waker_restart_later(struct wg_orch *o, const char *id, uint32_t delay_ms);
/* Starts queued wakes while there is room. */
void waker_admit_next(struct wg_orch *o);
/* The live wake of session id, or NULL. */
struct orch_wake *waker_find(struct wg_orch *o, const char *id);
/* A die event of a session's container. Returns whether a wake works on
 * that container (the event is then the wake's business). */
bool waker_on_death(struct wg_orch *o, const char *id, const char *container, int exit_code,
                    bool oom, int64_t time_ns);
/* A healthy event of a session's container: ready, when a wake waits on it. */
void waker_on_healthy(struct wg_orch *o, const char *id, const char *container);

/* Between waker.c, wake_ready.c and wake_fail.c. */
uint64_t wake_timeout_ms(const struct wg_orch *o);
/* After a call's callback: a deadline or a death noted while it was in
 * flight is taken now. Returns true when the task must not go on. */
bool wake_returned(struct orch_wake *w);
/* The container is created on the session's network (wake_network.c
 * makes or checks it first, then calls wake_create_container()). */
void wake_create(struct orch_wake *w);
void wake_create_container(struct orch_wake *w);
/* wake_returned() for a Docker call's callback: when the engine gave no
 * answer (wg_orch_engine_unreachable()), the wake retries its Docker steps
 * after a backoff, or ends without failing the session when its deadline
 * has passed; true then too. call names the call for the log. */
bool wake_docker_returned(struct orch_wake *w, int status, const struct wg_docker_reply *r,
                          const char *call);
/* The Docker steps of an admitted wake, from the look at its container. */
void wake_docker_steps(struct orch_wake *w);
/* The engine stayed unreachable until the deadline: starting -> asleep
 * with the call and its error, never failed; nothing is stopped. */
void wake_engine_give_up(struct orch_wake *w);
/* A Docker call could not be sent: the wake fails. */
void wake_send_failed(struct orch_wake *w, const char *what, int rc);
/* The wake fails: the log tail, starting -> failed, the container stopped. */
void wake_fail(struct orch_wake *w, const char *outcome, const char *reason, int exit_code,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* A death while starting: restart after a backoff, or fail. */
void wake_crash(struct orch_wake *w);
void wake_start(struct orch_wake *w);
void wake_unpause(struct orch_wake *w);
/* wake_ready.c: the container runs (start or unpause answered, or it ran
 * already): its address and readiness from the inspect c (NULL: inspect
 * it first). */
void wake_started(struct orch_wake *w, const struct wg_docker_container *c);
/* wake_ready.c: Docker says healthy. */
void wake_healthy(struct orch_wake *w);

/* ---- sleeper.c ------------------------------------------------------------------------------ */

/* A sleep or destroy command: drain, save, then stop or remove; with
 * force, stop or remove at once. The command is acknowledged when the task
 * ends. */
void sleeper_command(struct wg_orch *o, const struct wg_wake_cmd *cmd);
/* A request (a wake command) for a session: cancels its sleep while it is
 * draining or saving. */
void sleeper_request(struct wg_orch *o, const char *id);
/* The live sleep of session id, or NULL. */
struct orch_sleep *sleeper_find(struct wg_orch *o, const char *id);
/* A new sleep task for session id (the caller sets its tier and begins
 * it), or NULL when out of memory. */
struct orch_sleep *sleeper_new(struct wg_orch *o, const char *id);
/* Shutdown: rolls back every sleep still draining (now) or saving (force:
 * at the grace deadline). Returns the sleeps still at work. */
unsigned sleeper_shutdown(struct wg_orch *o, bool force);
void sleeper_metrics(const struct wg_orch *o, struct wg_buf *out);

/* ---- reaper.c ------------------------------------------------------------------------------- */

/* Starts the reaper timer (once reconciled) and stops it. */
void reaper_start(struct wg_orch *o);
void reaper_stop(struct wg_orch *o);
/* Failed saves in a row of session id (0: none, or the last was good). */
unsigned reaper_save_failures(const struct wg_orch *o, const char *id);
/* A save of session id ended: ok forgets its failures, else one more. */
void reaper_save_result(struct wg_orch *o, const char *id, bool ok);
void reaper_free(struct wg_orch *o);
/* The CPU sampler of this host's running containers (cpu_watch.h): made
 * with the Docker client, started and stopped with the reaper. */
int reaper_cpu_new(struct wg_orch *o);

/* ---- reconcile.c, reconcile_events.c -------------------------------------------------------- */

void reconcile_round(struct wg_orch *o);

/* ---- orch_hosts.c: heartbeat, capacity, the lost-host sweep ---- */

/* docker.heartbeat_ttl / 3: how often the heartbeat and the sweep run. */
uint64_t orch_hosts_period_ms(const struct wg_orch *o);
/* From the tick: the sweep (even without the engine), the engine's
 * capacity when unknown, and the heartbeat when due. */
void orch_hosts_tick(struct wg_orch *o, uint64_t now);
/* The blocking connection lost Redis: no host is called lost until Redis has been
 * heard for a whole TTL again. */
void orch_hosts_redis_lost(struct wg_orch *o);
/* The engine answered again: read its capacity again. */
void orch_hosts_engine_back(struct wg_orch *o);
int orch_hosts_beat_json(const struct wg_orch *o, char *out, size_t outlen);
/* The store refused a write of ours: the session was re-placed (another
 * host, or a newer epoch). Logged once per write, counted. */
void orch_on_fenced(const struct wg_store_res *res, void *arg);
/* Fences a task's write with the epoch of the record it read (the host is
 * fenced by the store for every write of this orchestrator). */
void orch_task_fence(const struct orch_task *t, struct wg_session_update *u);
void orch_hosts_metrics(const struct wg_orch *o, struct wg_buf *out);
void reconcile_scan_stuck(struct wg_orch *o);
/* Asks for a recheck of one session (skipped when a task of it is live). */
void reconcile_recheck(struct wg_orch *o, const char *id, const char *container, bool startup);
/* Starts queued rechecks while there is room. */
void reconcile_next(struct wg_orch *o);
void reconcile_on_event(struct wg_orch *o, const struct wg_docker_event *ev);

/* ---- stale.c -------------------------------------------------------------------------------- */

/* A stale container of session id (stale.h): a task saves it to a side ref
 * when it runs, then removes it; no lock, no record write, one event.
 * record_host: the record's host, or "" when there is no record. Does
 * nothing when a stale task already works on that container. */
void stale_remove(struct wg_orch *o, const char *id, const char *container, const char *record_host,
                  const char *template_name, const char *why);
/* Whether a stale task works on that container (its CPU is no activity
 * of the session, which lives elsewhere). */
bool stale_container(struct wg_orch *o, const char *container);
/* Before a heartbeat: when due (at boot, after Redis was lost), asks
 * whether wg:lost_hosts holds this host, on the heartbeat's connection, so
 * the answer predates this heartbeat. */
void stale_lost_check(struct wg_orch *o);
/* The wake connection was lost: check again before the next heartbeat. */
/* The heartbeat said this host had been lost: what the lost check would say. */
void stale_note_lost(struct wg_orch *o);
void stale_redis_lost(struct wg_orch *o);
void stale_metrics(const struct wg_orch *o, struct wg_buf *out);

#endif
