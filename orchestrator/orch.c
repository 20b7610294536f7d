/* orchestrator/orch.c - the orchestrator runtime: boot, the wake consumer,
 * the Docker events stream, heartbeat, metrics and graceful shutdown. See
 * orch.h for the behaviour, orch_int.h for the task model and orch_task.c
 * for the task table. */
#include "orchestrator/orch_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/redis.h"

#define TICK_MS 1000
#define EVENTS_BACKOFF_MIN_MS 100
#define EVENTS_BACKOFF_MAX_MS 5000
#define READ_RETRY_MS 500
#define MARK_TTL_MS 60000

static void tick_cb(uv_timer_t *h);
static void read_next(struct wg_orch *o);
static void events_connect(struct wg_orch *o);

/* ---- small helpers ------------------------------------------------------------------------ */

static int64_t wall_ms(void *arg)
{
    (void)arg;
    return wg_clock_wall_ms();
}

int64_t orch_now_ms(const struct wg_orch *o)
{
    return o->clock_ms(o->clock_arg);
}

const char *orch_q(char *buf, size_t len, const char *v)
{
    if (!v)
        v = "";
    return wg_log_quote(buf, len, v, strlen(v));
}

void orch_docker_error(struct wg_orch *o, int status)
{
    if (status != 0 && status != -ECANCELED)
        o->st.docker_errors++;
}

void orch_unref(struct wg_orch *o)
{
    if (--o->refs == 0) {
        reaper_free(o);
        free(o);
    }
}

static void orch_handle_closed(uv_handle_t *h)
{
    orch_unref(h->data);
}

/* The lock token of this host: stable across restarts, so a restarted
 * orchestrator can take back the locks its previous life held (a wake in
 * progress when it crashed). Tokens are not secrets: anyone who can write
 * to Redis can delete a lock. */
static void make_token(struct wg_orch *o)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a 64 */
    char safe[33];
    size_t n = 0;

    for (const char *p = o->name; *p; p++) {
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
        if (n < sizeof(safe) - 1)
            safe[n++] = (*p == '.' || *p == ':') ? '_' : *p;
    }
    safe[n] = '\0';
    snprintf(o->token, sizeof(o->token), "orch-%s-%016" PRIx64, safe, h);
}

const struct wg_sessions_cfg *orch_template(const struct wg_orch *o, const struct wg_session *rec)
{
    return wg_config_template_or_default(o->cfg, rec->template_name);
}

/* ---- marks: kills and OOMs seen before a die ----------------------------------------------- */

void orch_mark(struct wg_orch *o, const char *container, bool kill, bool oom, bool ours)
{
    struct orch_mark *m = NULL;
    uint64_t now = uv_now(o->loop);

    if (!container || !container[0])
        return;
    for (unsigned i = 0; i < ORCH_MARKS; i++) {
        if (strcmp(o->marks[i].container, container) == 0 && now - o->marks[i].at < MARK_TTL_MS) {
            m = &o->marks[i];
            break;
        }
    }
    if (!m) {
        m = &o->marks[o->marks_next];
        o->marks_next = (o->marks_next + 1) % ORCH_MARKS;
        memset(m, 0, sizeof(*m));
        snprintf(m->container, sizeof(m->container), "%s", container);
    }
    m->at = now;
    m->kill |= kill;
    m->oom |= oom;
    m->ours |= ours;
}

bool orch_mark_take(struct wg_orch *o, const char *container, bool *kill, bool *oom, bool *ours)
{
    uint64_t now = uv_now(o->loop);

    *kill = *oom = *ours = false;
    if (!container || !container[0])
        return false;
    for (unsigned i = 0; i < ORCH_MARKS; i++) {
        struct orch_mark *m = &o->marks[i];
        if (strcmp(m->container, container) != 0)
            continue;
        if (now - m->at < MARK_TTL_MS) {
            *kill = m->kill;
            *oom = m->oom;
            *ours = m->ours;
        }
        memset(m, 0, sizeof(*m));
        return *kill || *oom || *ours;
    }
    return false;
}

/* ---- acks and events ------------------------------------------------------------------------- */

static void on_acked(const struct wg_store_res *res, void *arg)
{
    struct wg_orch *o = arg;

    if (res->status < 0 && !o->closing)
        WG_WARN(o->log, ORCH_SUBSYS, "wake command ack failed, it will be claimed again",
                "error=%s", strerror(-res->status));
}

void orch_ack(struct wg_orch *o, const char *entry_id)
{
    const char *ids[1] = {entry_id};

    if (!entry_id || !entry_id[0] || o->closing)
        return;
    wg_store_wake_ack(o->store, o->name, WG_ORCH_GROUP, ids, 1, on_acked, o);
}

static void on_event_added(const struct wg_store_res *res, void *arg)
{
    struct wg_orch *o = arg;

    if (res->status < 0 && !o->closing)
        WG_DEBUG(o->log, ORCH_SUBSYS, "event append failed", "error=%s", strerror(-res->status));
}

void orch_event(struct wg_orch *o, const char *id, const char *type, const char *detail)
{
    if (o->closing)
        return;
    if (wg_store_event_add(o->store, id, type, detail, on_event_added, o) < 0)
        WG_DEBUG(o->log, ORCH_SUBSYS, "event not appended", "session=%s type=%s", id, type);
}

/* ---- the wake consumer ----------------------------------------------------------------------- */

static void handle_cmds(struct wg_orch *o, const struct wg_wake_cmd *cmds, size_t n)
{
    /* Commands read during a shutdown stay pending for the next run. */
    for (size_t i = 0; i < n && !o->closing && !o->shutting_down; i++) {
        const struct wg_wake_cmd *c = &cmds[i];
        o->st.commands++;
        if (c->bad) {
            WG_WARN(o->log, ORCH_SUBSYS, "garbled wake command, acknowledging it unread",
                    "entry=%s", c->entry_id);
            orch_ack(o, c->entry_id);
        } else if (c->op == WG_WAKE_OP_WAKE) {
            waker_command(o, c);
        } else {
            sleeper_command(o, c);
        }
    }
}

static void read_retry_cb(uv_timer_t *h)
{
    read_next(h->data);
}

static void read_failed(struct wg_orch *o, const struct wg_store_res *res, const char *what)
{
    if (res->status == -EIO && strstr(res->error, "NOGROUP"))
        o->group_ok = false; /* the stream or group was deleted: make it again */
    if (!o->read_err_logged)
        WG_WARN(o->log, ORCH_SUBSYS, "reading wake commands failed, retrying",
                "what=%s error=\"%s\" retry_ms=%d", what,
                res->error[0] ? res->error : strerror(-res->status), READ_RETRY_MS);
    o->read_err_logged = true;
    uv_timer_start(&o->read_timer, read_retry_cb, READ_RETRY_MS, 0);
}

static void on_read(const struct wg_store_res *res, void *arg)
{
    struct wg_orch *o = arg;

    o->read_busy = false;
    if (o->closing)
        return;
    if (res->status < 0) {
        read_failed(o, res, o->pending_read_done ? "XREADGROUP" : "XREADGROUP pending");
        return;
    }
    if (o->read_err_logged)
        WG_INFO(o->log, ORCH_SUBSYS, "reading wake commands again", "stream=%s%s",
                WG_STORE_KEY_WAKE_PREFIX, o->name);
    o->read_err_logged = false;
    if (!o->pending_read_done) {
        o->pending_read_done = true;
        if (res->n_wake)
            WG_INFO(o->log, ORCH_SUBSYS, "re-reading wake commands left pending by a previous run",
                    "count=%zu", res->n_wake);
    }
    handle_cmds(o, res->wake, res->n_wake);
    read_next(o);
}

static void read_next(struct wg_orch *o)
{
    int rc;

    if (o->closing || o->shutting_down || !o->consuming || o->read_busy)
        return;
    if (!o->group_ok) {
        uv_timer_start(&o->read_timer, read_retry_cb, READ_RETRY_MS, 0);
        return;
    }
    if (!o->pending_read_done)
        rc = wg_store_wake_read(o->store, o->blocking, o->name, WG_ORCH_GROUP, o->name,
                                WG_STORE_BATCH_MAX, 0, true, on_read, o);
    else
        rc = wg_store_wake_read(o->store, o->blocking, o->name, WG_ORCH_GROUP, o->name,
                                WG_ORCH_READ_COUNT, WG_ORCH_READ_BLOCK_MS, false, on_read, o);
    if (rc < 0) {
        WG_ERROR(o->log, ORCH_SUBSYS, "cannot send XREADGROUP, retrying", "error=%s",
                 strerror(-rc));
        uv_timer_start(&o->read_timer, read_retry_cb, READ_RETRY_MS, 0);
        return;
    }
    o->read_busy = true;
}

static void on_claimed(const struct wg_store_res *res, void *arg)
{
    struct wg_orch *o = arg;

    o->claim_busy = false;
    if (o->closing)
        return;
    if (res->status < 0) {
        WG_WARN(o->log, ORCH_SUBSYS, "claiming idle wake commands failed", "error=\"%s\"",
                res->error[0] ? res->error : strerror(-res->status));
        return;
    }
    if (res->n_wake)
        WG_INFO(o->log, ORCH_SUBSYS, "claimed wake commands left unacknowledged",
                "count=%zu min_idle_ms=%d", res->n_wake, WG_ORCH_CLAIM_MIN_IDLE_MS);
    snprintf(o->claim_next, sizeof(o->claim_next), "%s", res->next_id);
    handle_cmds(o, res->wake, res->n_wake);
}

static void claim(struct wg_orch *o)
{
    if (o->claim_busy || !o->group_ok)
        return;
    o->last_claim = uv_now(o->loop);
    if (wg_store_wake_claim(o->store, o->name, WG_ORCH_GROUP, o->name, WG_ORCH_CLAIM_MIN_IDLE_MS,
                            o->claim_next[0] ? o->claim_next : "0-0", 100, on_claimed, o) == 0)
        o->claim_busy = true;
}

void orch_reconciled(struct wg_orch *o)
{
    o->reconcile_busy = false;
    o->last_scan = uv_now(o->loop);
    if (!o->reconciled)
        WG_INFO(o->log, ORCH_SUBSYS, "startup reconciliation done, consuming wake commands",
                "stream=%s%s group=%s consumer=%s", WG_STORE_KEY_WAKE_PREFIX, o->name,
                WG_ORCH_GROUP, o->name);
    o->reconciled = true;
    if (!o->shutting_down)
        reaper_start(o);
    if (!o->consuming) {
        o->consuming = true;
        read_next(o);
        claim(o);
    }
    if (!o->reconcile_again)
        o->orphan_transients = false;
    if (o->reconcile_again) {
        o->reconcile_again = false;
        reconcile_round(o);
    }
}

static void on_group(const struct wg_store_res *res, void *arg)
{
    struct wg_orch *o = arg;

    o->group_busy = false;
    if (o->closing)
        return;
    if (res->status < 0) {
        WG_WARN(o->log, ORCH_SUBSYS, "cannot create the wake consumer group, retrying",
                "stream=%s%s error=\"%s\"", WG_STORE_KEY_WAKE_PREFIX, o->name,
                res->error[0] ? res->error : strerror(-res->status));
        return;
    }
    o->group_ok = true;
    WG_DEBUG(o->log, ORCH_SUBSYS, "wake consumer group ready", "stream=%s%s created=%d",
             WG_STORE_KEY_WAKE_PREFIX, o->name, res->status == 0);
}

/* ---- Docker: ping and events ----------------------------------------------------------------- */

static void on_ping(int status, const struct wg_docker_reply *r, void *arg)
{
    struct wg_orch *o = arg;

    o->ping_busy = false;
    if (o->closing)
        return;
    if (status == 0) {
        if (!o->docker_ok) {
            WG_INFO(o->log, ORCH_SUBSYS, "Docker engine answered", "host=%s api=%s",
                    o->cfg->docker_host, r->api_version ? r->api_version : "?");
            o->docker_ok = true;
            o->last_heartbeat = 0;
            orch_hosts_engine_back(o);
            /* The engine is back: the events stream (and the reconcile
             * round that follows it) now, not after the backoff its
             * failures built up while the engine was away. */
            if (!o->events) {
                uv_timer_stop(&o->events_timer);
                o->events_backoff_ms = 0;
            }
            tick_cb(&o->tick); /* group and heartbeat now, not at the next tick */
        }
        o->ping_err_logged = false;
        if (!o->events && !uv_is_active((uv_handle_t *)&o->events_timer))
            events_connect(o);
        return;
    }
    orch_docker_error(o, status);
    if (o->docker_ok || !o->ping_err_logged)
        WG_WARN(o->log, ORCH_SUBSYS, "Docker engine does not answer, not ready",
                "host=%s error=\"%s\"", o->cfg->docker_host, r->error);
    o->ping_err_logged = true;
    o->docker_ok = false;
}

static void ping(struct wg_orch *o)
{
    if (o->ping_busy)
        return;
    o->last_ping = uv_now(o->loop);
    if (wg_docker_ping(o->docker, on_ping, o) == 0)
        o->ping_busy = true;
}

static void on_docker_event(const struct wg_docker_event *ev, void *arg)
{
    struct wg_orch *o = arg;

    if (o->closing)
        return;
    if (ev->kind == WG_DOCKER_EVENTS_OPEN) {
        WG_INFO(o->log, ORCH_SUBSYS, "Docker events stream open", "label=%s since_ns=%" PRId64,
                WG_LABEL_SESSION, o->events_since_ns);
        o->events_open = true;
        o->events_backoff_ms = 0;
        if (o->events_since_ns == 0)
            o->events_since_ns = orch_now_ms(o) * 1000000;
        /* Startup, or catching up after a gap: Docker's truth again. */
        reconcile_round(o);
        return;
    }
    if (ev->time_ns >= o->events_since_ns)
        o->events_since_ns = ev->time_ns + 1;
    reconcile_on_event(o, ev);
}

static void events_retry_cb(uv_timer_t *h)
{
    struct wg_orch *o = h->data;

    if (!o->docker_ok) {
        ping(o); /* reconnects from on_ping */
        return;
    }
    events_connect(o);
}

static void on_events_end(int status, const struct wg_docker_reply *r, void *arg)
{
    struct wg_orch *o = arg;

    o->events = NULL;
    o->events_open = false;
    if (o->closing)
        return;
    orch_docker_error(o, status);
    if (status < 0 && status != -ECONNRESET)
        o->docker_ok = false;
    o->events_backoff_ms = o->events_backoff_ms ? o->events_backoff_ms * 2 : EVENTS_BACKOFF_MIN_MS;
    if (o->events_backoff_ms > EVENTS_BACKOFF_MAX_MS)
        o->events_backoff_ms = EVENTS_BACKOFF_MAX_MS;
    WG_WARN(o->log, ORCH_SUBSYS, "Docker events stream ended, reconnecting, not ready meanwhile",
            "error=\"%s\" retry_ms=%" PRIu32, r->error, o->events_backoff_ms);
    uv_timer_start(&o->events_timer, events_retry_cb, o->events_backoff_ms, 0);
}

static void events_connect(struct wg_orch *o)
{
    struct wg_docker_events_opts eo = {.label = WG_LABEL_SESSION, .since_ns = o->events_since_ns};
    int rc;

    if (o->closing || o->events)
        return;
    rc = wg_docker_events_start(o->docker, &eo, on_docker_event, on_events_end, o, &o->events);
    if (rc < 0) {
        WG_ERROR(o->log, ORCH_SUBSYS, "cannot open the Docker events stream, retrying", "error=%s",
                 strerror(-rc));
        o->events = NULL;
        uv_timer_start(&o->events_timer, events_retry_cb, EVENTS_BACKOFF_MAX_MS, 0);
    }
}

/* ---- Redis coming back ---------------------------------------------------------------------- */

/* The wake connection's state: after a loss, Redis may be back empty (a
 * restart without persistence, a failover): Docker's truth again, so the
 * records of running containers are re-adopted at once, and the consumer
 * group is made again. */
static void on_redis_state(struct wg_redis *r, bool connected, const char *reason, void *arg)
{
    struct wg_orch *o = arg;

    (void)r;
    if (o->closing)
        return;
    if (!connected) {
        o->redis_lost = true;
        stale_redis_lost(o);
        orch_hosts_redis_lost(o);
        return;
    }
    if (!o->redis_lost)
        return;
    o->redis_lost = false;
    o->group_ok = false;
    (void)reason;
    WG_INFO(o->log, ORCH_SUBSYS, "Redis is back, reconciling with Docker again", "name=%s",
            o->name);
    o->orphan_transients = true;
    tick_cb(&o->tick);
    if (o->events_open)
        reconcile_round(o);
}

/* ---- heartbeat and the tick ------------------------------------------------------------------ */

static void on_counts(const struct wg_store_res *res, void *arg)
{
    struct wg_orch *o = arg;

    o->counts_busy = false;
    if (o->closing || res->status != 0)
        return;
    memcpy(o->state_counts, res->state_counts, sizeof(o->state_counts));
    o->have_counts = true;
}

static void tick_cb(uv_timer_t *h)
{
    struct wg_orch *o = h->data;
    uint64_t now = uv_now(o->loop);

    if (o->closing)
        return;
    if (!o->docker_ok || now - o->last_ping >= WG_ORCH_HEARTBEAT_EVERY_MS)
        ping(o);
    orch_hosts_tick(o, now);
    /* No consumer group while the engine does not answer (nothing
     * consumes yet); the heartbeat goes on once the engine answered
     * before, saying so (orch_hosts.c). */
    if (!o->docker_ok)
        return;
    if (!o->group_ok && !o->group_busy &&
        wg_store_wake_group(o->store, o->name, WG_ORCH_GROUP, on_group, o) == 0)
        o->group_busy = true;
    if (!o->counts_busy && now - o->last_counts >= WG_ORCH_COUNTS_EVERY_MS &&
        wg_store_counts(o->store, on_counts, o) == 0) {
        o->counts_busy = true;
        o->last_counts = now;
    }
    if (o->consuming && now - o->last_claim >= WG_ORCH_CLAIM_EVERY_MS)
        claim(o);
    /* A round that failed (Redis or Docker away) is tried again here. */
    if (o->events_open && o->reconcile_again && !o->reconcile_busy)
        reconcile_round(o);
    if (o->reconciled && !o->reconcile_busy && now - o->last_scan >= WG_ORCH_STUCK_SCAN_EVERY_MS) {
        o->last_scan = now;
        reconcile_scan_stuck(o);
    }
}

/* ---- public ---------------------------------------------------------------------------------- */

static const char *tls_mode(const struct wg_docker_opts *d)
{
    if (!d->tls)
        return "off";
    return d->tls_skip_verify ? "unverified" : "on";
}

static int check_cfg(const struct wg_config *cfg, char *err, size_t errlen)
{
    if (!cfg->redis_url) {
        snprintf(err, errlen, "the orchestrator needs Redis (redis.url)");
        return -EINVAL;
    }
    if (!cfg->docker_name || !wg_session_host_valid(cfg->docker_name, strlen(cfg->docker_name)) ||
        !wg_store_name_valid(cfg->docker_name)) {
        snprintf(err, errlen,
                 "docker.name must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$ (it names this host's "
                 "wake stream and its consumer)");
        return -EINVAL;
    }
    return 0;
}

/* The Docker client, the store on the shared connection, and the blocking
 * connection for the wake stream. Returns 0, or < 0 with the reason in err
 * (the caller frees what was made). */
static int make_clients(struct wg_orch *o, const struct wg_docker_opts *dopts, char *err,
                        size_t errlen)
{
    struct wg_redis_opts ropts = {0};
    struct wg_store_opts sopts = {0};
    int rc;

    rc = wg_docker_new(o->loop, dopts, o->log, &o->docker, err, errlen);
    if (rc < 0)
        return rc;
    sopts.log = o->log;
    sopts.fence_host = o->name;
    sopts.on_fenced = orch_on_fenced;
    sopts.on_fenced_arg = o;
    sopts.clock_ms = o->clock_ms;
    sopts.clock_arg = o->clock_arg;
    if ((rc = wg_store_new(o->redis, &sopts, &o->store)) < 0) {
        snprintf(err, errlen, "cannot create the session store: %s", strerror(-rc));
        return rc;
    }
    ropts.name = "wake";
    ropts.command_timeout_ms = WG_ORCH_READ_BLOCK_MS + WG_REDIS_COMMAND_TIMEOUT_MS;
    if ((rc = wg_redis_new(o->loop, o->cfg->redis_url, &ropts, o->log, &o->blocking)) < 0) {
        snprintf(err, errlen, "cannot set up the wake stream connection: %s", strerror(-rc));
        return rc;
    }
    wg_redis_on_state(o->blocking, on_redis_state, o);
    return 0;
}

/* The histograms and the five timers (o->refs counts them), then the tick. */
static void start_handles(struct wg_orch *o)
{
    wg_hist_init(&o->m.queue, wg_hist_wake_bounds, WG_HIST_LEN(wg_hist_wake_bounds));
    wg_hist_init(&o->m.docker_start, wg_hist_wake_bounds, WG_HIST_LEN(wg_hist_wake_bounds));
    wg_hist_init(&o->m.ready, wg_hist_wake_bounds, WG_HIST_LEN(wg_hist_wake_bounds));
    wg_hist_init(&o->m.total, wg_hist_wake_bounds, WG_HIST_LEN(wg_hist_wake_bounds));
    wg_hist_init(&o->m.save, wg_hist_wake_bounds, WG_HIST_LEN(wg_hist_wake_bounds));
    o->refs = 1 + 5;
    uv_timer_init(o->loop, &o->tick);
    uv_timer_init(o->loop, &o->events_timer);
    uv_timer_init(o->loop, &o->read_timer);
    uv_timer_init(o->loop, &o->reap_timer);
    uv_timer_init(o->loop, &o->shutdown_timer);
    o->tick.data = o->events_timer.data = o->read_timer.data = o;
    o->reap_timer.data = o->shutdown_timer.data = o;
    uv_timer_start(&o->tick, tick_cb, 0, TICK_MS);
}

int wg_orch_new(uv_loop_t *loop, const struct wg_config *cfg, struct wg_log *log,
                struct wg_redis *redis, const struct wg_orch_opts *opts, struct wg_orch **ret,
                char *err, size_t errlen)
{
    struct wg_docker_opts dopts = {0};
    struct wg_orch *o = NULL;
    int rc;

    if (errlen > 0)
        err[0] = '\0';
    if (!loop || !cfg || !redis || !ret) {
        snprintf(err, errlen, "the orchestrator needs Redis (redis.url)");
        return -EINVAL;
    }
    if ((rc = check_cfg(cfg, err, errlen)) < 0)
        return rc;
    o = calloc(1, sizeof(*o));
    if (!o)
        return -ENOMEM;
    o->loop = loop;
    o->cfg = cfg;
    o->log = log;
    o->name = cfg->docker_name;
    o->redis = redis;
    o->clock_ms = opts && opts->clock_ms ? opts->clock_ms : wall_ms;
    o->clock_arg = opts ? opts->clock_arg : NULL;
    wg_list_init(&o->tasks);
    wg_list_init(&o->admit_q);
    wg_list_init(&o->recheck_q);
    make_token(o);
    stale_redis_lost(o); /* not known until asked, before the first heartbeat */
    snprintf(o->container_prefix, sizeof(o->container_prefix), "wg-");

    dopts.host = opts && opts->docker_host ? opts->docker_host : cfg->docker_host;
    dopts.tls = cfg->docker_tls.enabled;
    dopts.tls_ca = cfg->docker_tls.ca;
    dopts.tls_cert = cfg->docker_tls.cert;
    dopts.tls_key = cfg->docker_tls.key;
    dopts.tls_skip_verify = !cfg->docker_tls.verify;
    if ((rc = make_clients(o, &dopts, err, errlen)) < 0)
        goto fail;
    if ((rc = reaper_cpu_new(o)) < 0) {
        snprintf(err, errlen, "cannot set up the CPU sampler: %s", strerror(-rc));
        goto fail;
    }
    start_handles(o);
    WG_INFO(log, ORCH_SUBSYS, "orchestrator starting",
            "name=%s docker=%s tls=%s max_concurrent_starts=%u wake_timeout_ms=%" PRIu64, o->name,
            dopts.host, tls_mode(&dopts), cfg->max_concurrent_starts,
            cfg->sessions.wake_timeout_ms);
    *ret = o;
    return 0;

fail:
    wg_redis_free(o->blocking);
    wg_store_free(o->store);
    wg_docker_free(o->docker);
    free(o);
    return rc;
}

void wg_orch_free(struct wg_orch *o)
{
    struct wg_list *it;

    if (!o || o->closing)
        return;
    o->closing = true;
    WG_INFO(o->log, ORCH_SUBSYS, "orchestrator stopping",
            "starts_in_flight=%u queued=%u tasks_cancelled=%s", o->in_flight, o->queued,
            wg_list_empty(&o->tasks) ? "0" : "some");
    while ((it = o->tasks.next) != &o->tasks)
        orch_task_finish(wg_container_of(it, struct orch_task, link));
    if (o->events)
        wg_docker_events_stop(o->events);
    o->events = NULL;
    wg_cpu_watch_free(o->cpu);
    o->cpu = NULL;
    /* Pending callbacks run now with -ECANCELED and drop their references. */
    wg_store_free(o->store);
    o->store = NULL;
    wg_docker_free(o->docker);
    o->docker = NULL;
    wg_redis_free(o->blocking);
    o->blocking = NULL;
    uv_close((uv_handle_t *)&o->tick, orch_handle_closed);
    uv_close((uv_handle_t *)&o->events_timer, orch_handle_closed);
    uv_close((uv_handle_t *)&o->read_timer, orch_handle_closed);
    uv_close((uv_handle_t *)&o->reap_timer, orch_handle_closed);
    uv_close((uv_handle_t *)&o->shutdown_timer, orch_handle_closed);
    orch_unref(o);
}

/* ---- graceful shutdown ----------------------------------------------------------------------- */

static void shutdown_finish(struct wg_orch *o)
{
    wg_orch_shutdown_cb *cb = o->shutdown_cb;

    o->shutdown_cb = NULL;
    uv_timer_stop(&o->shutdown_timer);
    if (cb)
        cb(o->shutdown_arg);
}

/* Polls until the sleeps are over; at the grace deadline rolls back the
 * saves still in flight and waits for those writes. */
static void shutdown_poll_cb(uv_timer_t *h)
{
    struct wg_orch *o = h->data;
    bool late = uv_now(o->loop) >= o->shutdown_deadline;

    if (o->closing || !o->shutdown_cb)
        return;
    if (sleeper_shutdown(o, late) == 0 || uv_now(o->loop) >= o->shutdown_deadline + 2000) {
        shutdown_finish(o);
        return;
    }
    uv_timer_start(&o->shutdown_timer, shutdown_poll_cb, 20, 0);
}

void wg_orch_shutdown(struct wg_orch *o, uint64_t grace_ms, wg_orch_shutdown_cb *done, void *arg)
{
    if (!o || o->closing || o->shutting_down)
        return;
    o->shutting_down = true;
    o->shutdown_cb = done;
    o->shutdown_arg = arg;
    o->shutdown_deadline = uv_now(o->loop) + grace_ms;
    reaper_stop(o);
    WG_INFO(o->log, ORCH_SUBSYS, "orchestrator shutting down: no new work, finishing sleeps",
            "sleeps=%u grace_ms=%" PRIu64, sleeper_shutdown(o, false), grace_ms);
    uv_timer_start(&o->shutdown_timer, shutdown_poll_cb, 0, 0);
}

bool wg_orch_ready(const struct wg_orch *o, char *why, size_t whylen)
{
    if (!o)
        return false;
    if (!o->docker_ok) {
        snprintf(why, whylen, "Docker engine at %s does not answer", o->cfg->docker_host);
        return false;
    }
    if (!o->events_open) {
        snprintf(why, whylen, "Docker events stream is not open");
        return false;
    }
    return true;
}

void wg_orch_get_stats(const struct wg_orch *o, struct wg_orch_stats *ret)
{
    *ret = o->st;
    ret->starts_in_flight = o->in_flight;
    ret->queued = o->queued;
    ret->docker_ok = o->docker_ok;
    ret->events_open = o->events_open;
    ret->reconciled = o->reconciled;
    ret->consuming = o->consuming;
}

void wg_orch_metrics(const struct wg_orch *o, struct wg_buf *out)
{
    static const char hname[] = "wakegate_wake_duration_seconds";

    if (!o)
        return;
    wg_buf_appendf(out,
                   "# HELP wakegate_wakes_total Wakes that reached an end, by outcome.\n"
                   "# TYPE wakegate_wakes_total counter\n"
                   "wakegate_wakes_total{outcome=\"ready\"} %" PRIu64 "\n"
                   "wakegate_wakes_total{outcome=\"failed\"} %" PRIu64 "\n"
                   "wakegate_wakes_total{outcome=\"timeout\"} %" PRIu64 "\n"
                   "wakegate_wakes_total{outcome=\"engine_unreachable\"} %" PRIu64 "\n",
                   o->st.wakes_ready, o->st.wakes_failed, o->st.wakes_timeout,
                   o->st.wakes_unreachable);
    wg_hist_family(out, hname, "histogram",
                   "Time a wake spent in each phase (queue: waiting for admission; docker_start: "
                   "create/start/unpause; ready: start returned to ready; total: the move to "
                   "starting to ready).");
    wg_hist_write(out, hname, "phase=\"queue\"", &o->m.queue);
    wg_hist_write(out, hname, "phase=\"docker_start\"", &o->m.docker_start);
    wg_hist_write(out, hname, "phase=\"ready\"", &o->m.ready);
    wg_hist_write(out, hname, "phase=\"total\"", &o->m.total);
    wg_buf_appendf(
        out,
        "# HELP wakegate_docker_errors_total Docker Engine calls that failed.\n"
        "# TYPE wakegate_docker_errors_total counter\n"
        "wakegate_docker_errors_total %" PRIu64 "\n"
        "# HELP wakegate_starts_in_flight Container starts in progress on this host.\n"
        "# TYPE wakegate_starts_in_flight gauge\n"
        "wakegate_starts_in_flight %u\n"
        "# HELP wakegate_starts_queued Wakes waiting for admission on this host.\n"
        "# TYPE wakegate_starts_queued gauge\n"
        "wakegate_starts_queued %u\n"
        "# HELP wakegate_wake_commands_total Commands read from this host's wake stream.\n"
        "# TYPE wakegate_wake_commands_total counter\n"
        "wakegate_wake_commands_total %" PRIu64 "\n"
        "# HELP wakegate_wake_commands_coalesced_total Wake commands joined to a wake in "
        "progress.\n"
        "# TYPE wakegate_wake_commands_coalesced_total counter\n"
        "wakegate_wake_commands_coalesced_total %" PRIu64 "\n"
        "# HELP wakegate_wake_commands_stale_total Wake commands skipped as older than the wake "
        "timeout.\n"
        "# TYPE wakegate_wake_commands_stale_total counter\n"
        "wakegate_wake_commands_stale_total %" PRIu64 "\n"
        "# HELP wakegate_reconcile_corrections_total Records corrected from Docker's truth.\n"
        "# TYPE wakegate_reconcile_corrections_total counter\n"
        "wakegate_reconcile_corrections_total %" PRIu64 "\n"
        "# HELP wakegate_sessions_adopted_total Labelled containers adopted as sessions.\n"
        "# TYPE wakegate_sessions_adopted_total counter\n"
        "wakegate_sessions_adopted_total %" PRIu64 "\n"
        "# HELP wakegate_crash_restarts_total Containers restarted after a crash.\n"
        "# TYPE wakegate_crash_restarts_total counter\n"
        "wakegate_crash_restarts_total %" PRIu64 "\n"
        "# HELP wakegate_docker_events_open Whether the Docker events stream is open.\n"
        "# TYPE wakegate_docker_events_open gauge\n"
        "wakegate_docker_events_open %d\n",
        o->st.docker_errors, o->in_flight, o->queued, o->st.commands, o->st.coalesced, o->st.stale,
        o->st.corrections, o->st.adopted, o->st.restarts, o->events_open ? 1 : 0);
    if (o->have_counts) {
        wg_buf_appendf(out,
                       "# HELP wakegate_sessions Sessions in each state, all hosts (from "
                       "wg:counts, refreshed every %d s).\n# TYPE wakegate_sessions gauge\n",
                       WG_ORCH_COUNTS_EVERY_MS / 1000);
        for (int st = 0; st < WG_SESSION_STATE_COUNT; st++) {
            if (st == WG_SESSION_DESTROYED)
                continue;
            wg_buf_appendf(out, "wakegate_sessions{state=\"%s\"} %lld\n",
                           wg_session_state_name((enum wg_session_state)st),
                           o->state_counts[st] > 0 ? o->state_counts[st] : 0);
        }
    }
    sleeper_metrics(o, out);
    stale_metrics(o, out);
    orch_hosts_metrics(o, out);
    if (o->cpu)
        wg_cpu_watch_metrics(o->cpu, out);
}
