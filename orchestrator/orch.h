/* orchestrator/orch.h - the orchestrator runtime of one Docker host: makes
 * wakes real and keeps Redis truthful about this host's containers.
 *
 * What it runs, for the life of the process:
 *
 *  - The wake consumer. Commands arrive on wg:wake:{docker.name} (see
 *    common/store.h), read with the consumer group "orchestrators" (consumer
 *    = docker.name) on a connection of its own (XREADGROUP BLOCK 1 s). At
 *    startup the consumer's own pending entries are read again, and every
 *    WG_ORCH_CLAIM_EVERY_MS entries idle for WG_ORCH_CLAIM_MIN_IDLE_MS are
 *    claimed (XAUTOCLAIM), so no wake is lost after a crash. Entries older
 *    than sessions.wake_timeout are acknowledged and skipped.
 *
 *  - The waker (orchestrator/waker.c, wake_ready.c, wake_fail.c). A wake of a session moves it to
 *    starting with a compare-and-set (the herd of wakes from many gateways
 *    makes exactly one Docker start: concurrent commands for one session
 *    coalesce in this process, and the CAS settles races between
 *    processes), then acknowledges the command: from then on the record's
 *    state carries the wake, and a crashed orchestrator resumes it at its
 *    next start. Starts are admitted up to docker.max_concurrent_starts;
 *    the rest queue FIFO. Then create (when there is no container),
 *    unpause (paused) or start; then readiness: Docker health when the
 *    image has a HEALTHCHECK, else a TCP connect probe (orchestrator/probe)
 *    to ip:port, started after the start returned. Ready: starting ->
 *    running with ip and port, which wg:state carries to every proxy. Not
 *    ready by the wake deadline: the last log lines go into the event and
 *    the session fails; its container is stopped. A container that dies
 *    soon after its start is restarted with backoff (1 s, 2 s, 4 s), up to
 *    WG_ORCH_MAX_RESTARTS times.
 *
 *  - Docker's truth (orchestrator/reconcile.c, reconcile_events.c). The
 *    /events stream (label wakegate.session) runs for the process's life,
 *    reconnecting with backoff from the last event's time. A container that dies,
 *    is OOM-killed or is stopped by hand moves its session (asleep, or
 *    failed with {"reason":"oom"|"exit","exit_code":N}). At startup, and
 *    after each reconnect of the stream, the records of this host are
 *    reconciled with `docker ps -a` (label wakegate.session): Docker wins,
 *    and a labelled container without a record is adopted. Every few
 *    seconds sessions stuck in a transient state are recovered.
 *
 *  - A heartbeat (orchestrator/orch_hosts.c): wg:host:{docker.name} =
 *    {"name","starts_in_flight","max_concurrent_starts","queued","at",
 *    "running","sessions","cpus","mem_total","max_sessions","labels"} with
 *    a TTL of docker.heartbeat_ttl, written every ttl/3; the name joins
 *    wg:hosts. Every orchestrator also sweeps for lost hosts (their
 *    sessions go lost) at that period. Writes through this orchestrator's
 *    store are fenced to records homed on this host.
 *
 *  - The reaper and the sleeps (orchestrator/reaper.c, sleeper.c). Every
 *    sessions.idle.reap_every, idle sessions of this host are read from
 *    wg:active (a range, never every session) and put to sleep by tier:
 *    draining, the save hook (docker exec, git add/commit/push by default),
 *    then paused or stopping -> asleep. Activity after the decision, or a
 *    request during draining or saving, calls the sleep off; a failed save
 *    keeps the container awake and is retried with backoff.
 *
 * Sleep and destroy commands: with force=1 the orchestrator stops (sleep) or
 * removes the container and deletes the record (destroy) without a save.
 * Without force they go through the sleeper: the save runs first, and a
 * destroy whose save failed, or of a container that cannot be saved (not
 * running, not saved before it stopped), is refused with a destroy_refused
 * event.
 *
 * Locks: multi-step work on a session holds wg:lock:{id} with this host's
 * token (one per docker.name, so a restarted orchestrator can take back the
 * locks of its previous life); TTL twice the wake timeout, extended while
 * working.
 *
 * Logging: one line per decision, subsystem "orch", with the session, the
 * container and the Docker call and its answer. */
#ifndef WG_ORCHESTRATOR_ORCH_H
#define WG_ORCHESTRATOR_ORCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/store.h"

struct wg_config;
struct wg_log;
struct wg_buf;
struct wg_redis;
struct wg_orch; /* opaque */

#define WG_ORCH_GROUP "orchestrators"
#define WG_ORCH_READ_BLOCK_MS 1000
#define WG_ORCH_READ_COUNT 64
#define WG_ORCH_CLAIM_MIN_IDLE_MS 30000
#define WG_ORCH_CLAIM_EVERY_MS 10000
#define WG_ORCH_HEARTBEAT_EVERY_MS 3000
#define WG_ORCH_HEARTBEAT_TTL_MS 10000
#define WG_ORCH_STUCK_SCAN_EVERY_MS 5000
#define WG_ORCH_HEALTH_POLL_MS 50
#define WG_ORCH_LOG_TAIL_LINES 20
#define WG_ORCH_RECHECK_MAX 16 /* reconcile tasks at once */
#define WG_ORCH_KEY_HOST_PREFIX "wg:host:"
#define WG_ORCH_COUNTS_EVERY_MS 5000 /* sessions-by-state gauge refresh */

struct wg_orch_opts {
    /* The docker client's host; NULL: cfg->docker_host. */
    const char *docker_host;
    /* Wall clock in ms; NULL: CLOCK_REALTIME (tests move time). */
    int64_t (*clock_ms)(void *arg);
    void *clock_arg;
};

/* Counters for /metrics and tests. */
struct wg_orch_stats {
    unsigned starts_in_flight;
    unsigned queued;
    uint64_t wakes_ready, wakes_failed, wakes_timeout, wakes_unreachable;
    uint64_t commands, coalesced, stale, docker_errors, corrections, adopted, restarts;
    uint64_t sessions_lost, hosts_back, fenced;
    bool docker_ok, events_open, reconciled, consuming;
};

/* Creates the runtime and starts it: it pings Docker, opens the events
 * stream, reconciles, then consumes wakes. cfg and log must outlive it.
 * redis is the shared command connection (borrowed: the orchestrator makes
 * its own store on it and a blocking connection of its own from
 * cfg->redis_url). Returns 0 with *ret set, -EINVAL (bad docker.host or
 * docker.name, no redis url; reason in err) or -ENOMEM. */
int wg_orch_new(uv_loop_t *loop, const struct wg_config *cfg, struct wg_log *log,
                struct wg_redis *redis, const struct wg_orch_opts *opts, struct wg_orch **ret,
                char *err, size_t errlen);

/* NULL-safe. Cancels everything: calls in flight end, probes and timers
 * stop, locks are left to expire (or to this host's next life). Commands not
 * yet acknowledged stay pending in the stream. Handles close asynchronously:
 * the loop must run on. Must be called before `redis` is freed. */
void wg_orch_free(struct wg_orch *o);

/* Readiness: Docker answered its last ping and the events stream is open.
 * why gets the reason when not. */
bool wg_orch_ready(const struct wg_orch *o, char *why, size_t whylen);

/* Appends the Prometheus exposition of the orchestrator's metrics. */
void wg_orch_metrics(const struct wg_orch *o, struct wg_buf *out);

void wg_orch_get_stats(const struct wg_orch *o, struct wg_orch_stats *ret);

/* Graceful shutdown, before wg_orch_free(): no new work is taken (no wake
 * reads, no reaper pass, no new tasks); a sleep still draining is rolled
 * back to running at once; a save in flight may finish (and its stop or
 * pause with it) until grace_ms, after which the sleeps still saving are
 * rolled back to running. done runs once (never inside this call) when no
 * sleep is left in a transient state, or at the grace deadline once the
 * rollbacks are written. NULL-safe: with o NULL, done is not called. */
typedef void wg_orch_shutdown_cb(void *arg);
void wg_orch_shutdown(struct wg_orch *o, uint64_t grace_ms, wg_orch_shutdown_cb *done, void *arg);

#endif
