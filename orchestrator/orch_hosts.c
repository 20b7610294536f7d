/* orchestrator/orch_hosts.c - this host among the others: the heartbeat
 * with its capacity (wg:host:{name}, through the store's heartbeat script,
 * which also keeps wg:hosts and takes the host out of wg:lost_hosts), the
 * engine's CPUs and memory (GET /info at boot and after each reconnect),
 * the count of running session containers, and the lost-host sweep that
 * every orchestrator runs (the script is idempotent, so N sweepers do what
 * one would). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/config.h"
#include "common/labels.h"
#include "common/log.h"
#include "common/redis.h"
#include "orchestrator/orch_int.h"

/* Sessions moved to lost per sweep script: bounded, so one script never
 * holds Redis long; a sweep that leaves some runs again at once. */
#define SWEEP_BATCH 200
/* How early (ms) a heartbeat may go: half the tick. */
#define ORCH_TICK_SLACK_MS 500

uint64_t orch_hosts_period_ms(const struct wg_orch *o)
{
    uint64_t p = o->cfg->heartbeat_ttl_ms / 3;

    return p ? p : 1;
}

static void beat(struct wg_orch *o);

static void on_info(int status, const struct wg_docker_reply *r, void *arg)
{
    struct wg_orch *o = arg;
    json_t *ncpu, *mem;

    o->hosts.info_busy = false;
    if (o->closing || status != 0 || !r->json)
        return;
    ncpu = json_object_get(r->json, "NCPU");
    mem = json_object_get(r->json, "MemTotal");
    o->hosts.cpus = json_is_integer(ncpu) ? json_integer_value(ncpu) : 0;
    o->hosts.mem_total = json_is_integer(mem) ? json_integer_value(mem) : 0;
    o->hosts.have_info = true;
    WG_DEBUG(o->log, ORCH_SUBSYS, "engine capacity", "cpus=%lld mem_total=%lld", o->hosts.cpus,
             o->hosts.mem_total);
    beat(o); /* the figures now, not a period later */
}

static void on_running(int status, const struct wg_docker_reply *r, void *arg)
{
    struct wg_orch *o = arg;

    o->hosts.running_busy = false;
    if (o->closing || status != 0)
        return;
    o->hosts.running = (long long)r->n_containers;
}

static void on_beat(const struct wg_store_res *res, void *arg)
{
    struct wg_orch *o = arg;

    o->hosts.beat_busy = false;
    if (o->closing)
        return;
    if (res->status != 0) {
        WG_WARN(o->log, ORCH_SUBSYS, "heartbeat not written", "name=%s error=\"%s\"", o->name,
                res->error);
        return;
    }
    o->hosts.homed = res->homed;
    if (res->count == 1) {
        /* Our sessions were moved to lost while we were away: Docker's
         * truth brings back those still homed here (lost -> running,
         * paused or asleep); the others were re-placed and our writes to
         * them are fenced. */
        WG_INFO(o->log, ORCH_SUBSYS, "this host was lost and is back, reconciling", "name=%s",
                o->name);
        o->st.hosts_back++;
        /* The beat's answer is the lost check too: a host frozen past its TTL
         * (its connection never dropped, so nothing asked again) must not
         * adopt the containers of sessions destroyed while it was lost. */
        stale_note_lost(o);
        if (o->events_open && !o->reconcile_busy)
            reconcile_round(o);
        else
            o->reconcile_again = true;
    }
}

int orch_hosts_beat_json(const struct wg_orch *o, char *out, size_t outlen)
{
    struct wg_orch_beat b = {
        .name = o->name,
        .in_flight = o->in_flight,
        .max_starts = o->cfg->max_concurrent_starts,
        .queued = o->queued,
        .at_ms = orch_now_ms(o),
        .running = o->hosts.running,
        .sessions = o->hosts.homed,
        .cpus = o->hosts.cpus,
        .mem_total = o->hosts.mem_total,
        .max_sessions = o->cfg->max_sessions,
        .labels_json = o->cfg->docker_labels_json,
        .engine = o->docker_ok,
    };

    return wg_orch_heartbeat_json(out, outlen, &b);
}

static void beat(struct wg_orch *o)
{
    /* 16 labels of 63-byte names and values fit with room to spare. */
    char val[4096];
    int n;

    o->last_heartbeat = uv_now(o->loop);
    /* Before the beat, on the same connection: the beat takes this host out
     * of wg:lost_hosts, and the check must see whether it was in. */
    stale_lost_check(o);
    if (o->docker_ok && !o->hosts.running_busy &&
        wg_docker_list_running(o->docker, WG_LABEL_SESSION, on_running, o) == 0)
        o->hosts.running_busy = true;
    if (o->hosts.beat_busy)
        return;
    if ((n = orch_hosts_beat_json(o, val, sizeof(val))) < 0) {
        WG_ERROR(o->log, ORCH_SUBSYS, "cannot make the heartbeat, this host will be lost",
                 "name=%s error=%s", o->name, strerror(-n));
        return;
    }
    if (wg_store_host_beat(o->store, o->name, val, o->cfg->heartbeat_ttl_ms, on_beat, o) == 0)
        o->hosts.beat_busy = true;
}

static void sweep(struct wg_orch *o);

static void on_sweep(const struct wg_store_res *res, void *arg)
{
    struct wg_orch *o = arg;
    const struct wg_store_sweep *sw = res->sweep;

    o->hosts.sweep_busy = false;
    if (o->closing)
        return;
    if (res->status != 0 || !sw) {
        WG_WARN(o->log, ORCH_SUBSYS, "lost-host sweep failed", "error=\"%s\"", res->error);
        return;
    }
    if (sw->held_ms > 0) {
        if (!o->hosts.sweep_held)
            WG_WARN(o->log, ORCH_SUBSYS,
                    "no host judged lost for now: the sweeps stopped for longer than a heartbeat "
                    "TTL (Redis stalled, restarted or failed over), every host beats again first",
                    "hold_ms=%lld", sw->held_ms);
        o->hosts.sweep_held = true;
        return;
    }
    o->hosts.sweep_held = false;
    o->hosts.sweep = *sw;
    o->hosts.have_sweep = true;
    o->st.sessions_lost += (uint64_t)sw->moved;
    if (sw->newly_lost > 0)
        WG_WARN(o->log, ORCH_SUBSYS, "hosts lost: heartbeat expired, their sessions go lost",
                "newly_lost=%lld lost=%lld live=%lld", sw->newly_lost, sw->lost, sw->live);
    if (sw->moved > 0)
        WG_INFO(o->log, ORCH_SUBSYS, "sessions of lost hosts moved to lost", "moved=%lld left=%lld",
                sw->moved, sw->left);
    if (sw->left > 0 && sw->moved > 0)
        sweep(o); /* the next batch now, not a period later */
}

static void sweep(struct wg_orch *o)
{
    if (o->hosts.sweep_busy)
        return;
    o->hosts.last_sweep = uv_now(o->loop);
    if (wg_store_host_sweep(o->store, SWEEP_BATCH, o->cfg->heartbeat_ttl_ms, on_sweep, o) == 0)
        o->hosts.sweep_busy = true;
}

static void on_adopted(const struct wg_store_res *res, void *arg)
{
    struct wg_orch *o = arg;

    o->hosts.adopt_busy = false;
    if (o->closing)
        return;
    if (res->status != 0) {
        WG_WARN(o->log, ORCH_SUBSYS, "cannot count this host's sessions, retrying", "error=\"%s\"",
                res->error);
        return;
    }
    o->hosts.adopted = true;
    if (res->count > 0)
        WG_INFO(o->log, ORCH_SUBSYS, "sessions of this host written before placement counted",
                "name=%s sessions=%lld", o->name, res->count);
}

static void on_adopt_list(const struct wg_store_res *res, void *arg)
{
    struct wg_orch *o = arg;
    const char **ids = NULL;
    size_t n = 0;

    if (o->closing) {
        o->hosts.adopt_busy = false;
        return;
    }
    if (res->status != 0 || (res->n_recs && !(ids = calloc(res->n_recs, sizeof(*ids))))) {
        o->hosts.adopt_busy = false;
        return; /* the next tick tries again */
    }
    for (size_t i = 0; i < res->n_recs; i++)
        if (strcmp(res->recs[i].host, o->name) == 0)
            ids[n++] = res->recs[i].id;
    /* The ids point into res: the store copies the arguments at once. */
    if (wg_store_host_adopt(o->store, o->name, ids, n, on_adopted, o) < 0)
        o->hosts.adopt_busy = false;
    free(ids);
}

/* Once per process: records of this host that a version before placement
 * wrote join its sets, and its count is made exact (one list, as the
 * startup reconciliation reads). */
static void adopt(struct wg_orch *o)
{
    if (o->hosts.adopted || o->hosts.adopt_busy)
        return;
    if (wg_store_list(o->store, on_adopt_list, o) == 0)
        o->hosts.adopt_busy = true;
}

void orch_on_fenced(const struct wg_store_res *res, void *arg)
{
    struct wg_orch *o = arg;
    const struct wg_session *rec = res->rec;

    o->st.fenced++;
    WG_WARN(o->log, ORCH_SUBSYS, "write refused: the session was re-placed, leaving it",
            "session=%s host=%s epoch=%" PRIu64 " this_host=%s", rec ? rec->id : "-",
            rec && rec->host[0] ? rec->host : "-", rec ? rec->epoch : 0, o->name);
}

void orch_task_fence(const struct orch_task *t, struct wg_session_update *u)
{
    u->fence_host = t->o->name;
    u->fence_epoch = t->have_rec ? t->rec.epoch : 0;
}

void orch_hosts_engine_back(struct wg_orch *o)
{
    o->hosts.have_info = false;
}

/* Whether this process may call other hosts lost: only once it has heard
 * Redis without a break for a whole heartbeat TTL. After a Redis outage, a
 * restart or a failover, every host's heartbeat may have expired at once;
 * the first orchestrator back must give the others a TTL to beat again
 * before their silence means anything, or one Redis blip would move every
 * other host's sessions to lost. */
static bool sweep_allowed(struct wg_orch *o, uint64_t now)
{
    struct wg_redis_stats st;

    wg_redis_get_stats(o->redis, &st);
    if (!st.connected || st.connects != o->hosts.redis_connects) {
        o->hosts.redis_connects = st.connects;
        o->hosts.redis_since = st.connected ? now : 0;
        return false;
    }
    if (o->hosts.redis_since == 0) {
        o->hosts.redis_since = now;
        return false;
    }
    return now - o->hosts.redis_since >= o->cfg->heartbeat_ttl_ms;
}

void orch_hosts_redis_lost(struct wg_orch *o)
{
    o->hosts.redis_since = 0;
}

void orch_hosts_tick(struct wg_orch *o, uint64_t now)
{
    uint64_t period = orch_hosts_period_ms(o);

    /* An orchestrator that never reached its engine is no host yet and
     * writes nothing. Once it has, neither needs the engine: it is alive
     * and says so (with "engine": false, so placement prefers others),
     * which keeps its sessions from going lost over an engine restart; and
     * it still notices that other hosts are gone. */
    if (o->docker_ok)
        o->hosts.engine_seen = true;
    if (!o->hosts.engine_seen)
        return;
    /* A tick early rather than late: the 1 s tick would otherwise stretch
     * a 1 s period to 2 s, too close to a short TTL. */
    if (now - o->last_heartbeat + ORCH_TICK_SLACK_MS >= period)
        beat(o);
    if (sweep_allowed(o, now) && now - o->hosts.last_sweep + ORCH_TICK_SLACK_MS >= period)
        sweep(o);
    adopt(o);
    if (o->docker_ok && !o->hosts.have_info && !o->hosts.info_busy &&
        wg_docker_info(o->docker, on_info, o) == 0)
        o->hosts.info_busy = true;
}

void orch_hosts_metrics(const struct wg_orch *o, struct wg_buf *out)
{
    wg_buf_appendf(out,
                   "# HELP wakegate_sessions_lost_total Sessions this orchestrator's sweeps moved "
                   "to lost (their host's heartbeat expired).\n"
                   "# TYPE wakegate_sessions_lost_total counter\n"
                   "wakegate_sessions_lost_total %" PRIu64 "\n"
                   "# HELP wakegate_host_returns_total Times this host came back after it was "
                   "marked lost.\n"
                   "# TYPE wakegate_host_returns_total counter\n"
                   "wakegate_host_returns_total %" PRIu64 "\n"
                   "# HELP wakegate_writes_fenced_total Record writes of this orchestrator "
                   "refused because the session was re-placed.\n"
                   "# TYPE wakegate_writes_fenced_total counter\n"
                   "wakegate_writes_fenced_total %" PRIu64 "\n",
                   o->st.sessions_lost, o->st.hosts_back, o->st.fenced);
    wg_buf_appendf(out,
                   "# HELP wakegate_hosts Orchestrator hosts by state, as the last lost-host "
                   "sweep saw them.\n"
                   "# TYPE wakegate_hosts gauge\n"
                   "wakegate_hosts{state=\"live\"} %lld\n"
                   "wakegate_hosts{state=\"lost\"} %lld\n",
                   o->hosts.sweep.live, o->hosts.sweep.lost);
}
