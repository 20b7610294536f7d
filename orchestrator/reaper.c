/* orchestrator/reaper.c - the idle reaper: every sessions.idle.reap_every it
 * reads the idle candidates with wg_store_reap_scan() (a range of
 * wg:active, never every session), keeps those of this host, decides each
 * with wg_orch_reap_decide() and starts a sleep task (sleeper.c) for those
 * due, none when a task of the session is already live. It also remembers,
 * per session, how many saves failed in a row, for the retry backoff
 * (forgotten on a good save; a restart begins again at the first step). */
#include "orchestrator/orch_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- failed saves (the retry backoff) ----------------------------------------------------------
 */

static struct orch_save_fail *fail_find(const struct wg_orch *o, const char *id)
{
    for (size_t i = 0; i < o->n_fails; i++)
        if (strcmp(o->fails[i].id, id) == 0)
            return &o->fails[i];
    return NULL;
}

unsigned reaper_save_failures(const struct wg_orch *o, const char *id)
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

void reaper_save_result(struct wg_orch *o, const char *id, bool ok)
{
    if (ok)
        fail_forget(o, id);
    else
        fail_note(o, id);
}

/* ---- the reaper ------------------------------------------------------------------------------ */

static void reap_one(struct wg_orch *o, const struct wg_store_reap *e, int64_t now)
{
    const struct wg_idle_cfg *idle = &o->cfg->sessions.idle;
    const struct wg_save_cfg *save = &o->cfg->sessions.save;
    struct wg_orch_reap_in in = {0};
    enum wg_orch_reap_action a;
    struct orch_sleep *s;
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
    in.retry_wait_ms =
        wg_orch_save_backoff_ms(reaper_save_failures(o, e->id) ? reaper_save_failures(o, e->id) : 1,
                                save->retry_backoff_ms, save->retry_max_ms);
    a = wg_orch_reap_decide(&in, &why);
    if (a == WG_ORCH_REAP_NONE)
        return;
    if (sleeper_find(o, e->id) || waker_find(o, e->id))
        return; /* an actor is at work; the next pass looks again */
    s = sleeper_new(o, e->id);
    if (!s)
        return;
    o->m.reap_due++;
    s->tier = a == WG_ORCH_REAP_PAUSE ? WG_ORCH_TIER_PAUSE : WG_ORCH_TIER_STOP;
    s->idle_cutoff = e->last_active;
    snprintf(s->from, sizeof(s->from), "reaper");
    WG_INFO(o->log, ORCH_SUBSYS, "idle session",
            "session=%s state=%s idle_ms=%" PRId64 " tier=%s why=\"%s\"", e->id,
            wg_session_state_name(e->state), now - e->last_active, wg_orch_tier_name(s->tier), why);
    orch_task_begin(&s->t);
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
    wg_cpu_watch_start(o->cpu);
}

void reaper_stop(struct wg_orch *o)
{
    uv_timer_stop(&o->reap_timer);
    wg_cpu_watch_stop(o->cpu);
}

/* ---- the container's own work ---------------------------------------------------------------- */

static uint64_t cpu_threshold(const char *tmpl, void *arg)
{
    const struct wg_orch *o = arg;

    /* A template a reload removed: the sessions: block's rule. */
    return wg_config_template_or_default(o->cfg, tmpl)->idle.cpu_threshold_nano;
}

static void on_cpu_touch(const struct wg_store_res *res, void *arg)
{
    struct wg_orch *o = arg;

    if (res->status != 0 && !o->closing)
        WG_WARN(o->log, ORCH_SUBSYS, "cannot record the activity of busy containers",
                "error=\"%s\"", res->error);
}

/* Sessions whose container used at least its template's CPU threshold, or
 * touched its busy file: the same activity a request writes (ZADD
 * wg:active XX GT), so the reaper leaves them awake, and a sleep still
 * draining is called off. Once a sleep of this host is past draining the
 * session is left out: the save hook's own work must not call it off. */
static void cpu_active(const struct wg_cpu_active *v, size_t n, void *arg)
{
    struct wg_orch *o = arg;
    struct wg_store_activity *acts = calloc(n, sizeof(*acts));
    int64_t now = orch_now_ms(o);
    size_t k = 0;

    if (!acts)
        return;
    for (size_t i = 0; i < n; i++) {
        const struct orch_sleep *s = sleeper_find(o, v[i].session);
        if (s && (s->from_paused ||
                  WG_SESSION_IN(s->t.rec.state, WG_SESSION_BIT(WG_SESSION_SAVING) |
                                                    WG_SESSION_BIT(WG_SESSION_STOPPING))))
            continue;
        if (stale_container(o, v[i].container))
            continue; /* a stale copy: the session lives on another host */
        WG_DEBUG(o->log, ORCH_SUBSYS, "container busy, session active",
                 "session=%s container=%.12s cpus=%.3f busy_file_ms=%" PRId64, v[i].session,
                 v[i].container, (double)v[i].nano_cpus / 1e9, v[i].at_ms);
        /* A busy file's time in the future counts as now. */
        acts[k++] = (struct wg_store_activity){
            v[i].session, v[i].at_ms > 0 && v[i].at_ms < now ? v[i].at_ms : now};
    }
    if (k && !o->closing)
        (void)wg_store_touch(o->store, acts, k, on_cpu_touch, o);
    free(acts);
}

static const char *busy_file(const char *tmpl, void *arg)
{
    const struct wg_orch *o = arg;

    return wg_config_template_or_default(o->cfg, tmpl)->idle.busy_file;
}

int reaper_cpu_new(struct wg_orch *o)
{
    const struct wg_idle_cfg *idle = &o->cfg->sessions.idle;
    struct wg_cpu_watch_opts co = {
        .interval_ms = idle->cpu_interval_ms,
        .stats_concurrency = idle->cpu_stats_concurrency,
        .local = idle->cpu_cgroup_files && wg_docker_is_local(o->docker),
        .threshold = cpu_threshold,
        .busy_file = busy_file,
        .active = cpu_active,
        .arg = o,
    };

    if (idle->cpu_interval_ms == 0)
        return 0;
    return wg_cpu_watch_new(o->loop, o->docker, o->log, &co, &o->cpu);
}

void reaper_free(struct wg_orch *o)
{
    free(o->fails);
    o->fails = NULL;
    o->n_fails = o->cap_fails = 0;
}
