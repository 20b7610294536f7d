/* src/workers.c - the proxy's worker loops (workers: N > 1).
 *
 * Each loop runs on its own thread and owns a whole data plane: a struct
 * wg_proxy listening on the public address with SO_REUSEPORT (the kernel
 * spreads connections over the loops), its upstream pool, and its own
 * Redis command connection, store and session cache (whose wg:state
 * subscriber keeps that replica fresh). Nothing on the hot path is shared
 * but atomics: the gateway-wide connection count (limits.connections_max)
 * and the TLS state (one object, its ticket keys and certificates behind
 * its own locks, so a ticket resumes on any loop).
 *
 * The main thread talks to a loop only through its mailbox (set->lock) and
 * its uv_async_t: stop, stop now, or a reload (a router built for that loop
 * and the templates of app->cfg). It reads the loops' counters (atomics)
 * and readiness (atomics published by each loop's tick) for /metrics and
 * /readyz, under set->lock, which a loop takes before freeing its proxy.
 *
 * Each loop reads a shallow copy of app->cfg (which the main thread never
 * changes after startup, but for its templates on SIGHUP): the copy's
 * templates follow each reload, and the templates replaced are freed only
 * once every loop has moved on (struct retired). */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/listener.h"
#include "common/buf.h"
#include "common/redis.h"
#include "common/store.h"
#include "proxy/metrics.h"
#include "proxy/proxy.h"
#include "proxy/route.h"
#include "proxy/session_cache.h"
#include "proxy/tls.h"
#include "src/app.h"

/* Exit codes (src/main.c). */
#define EXIT_RUNTIME 1
#define EXIT_LISTEN 4

/* How often a loop publishes its readiness for /readyz. */
#define TICK_MS 200

/* The configuration whose templates the loops used before a reload: freed
 * by the last loop to move on. */
struct retired {
    _Atomic unsigned refs;
    struct wg_config cfg;
};

struct reload_msg {
    struct reload_msg *next;
    struct wg_router *router;
    struct wg_sessions_cfg *templates;
    size_t templates_len;
    struct retired *retired;
};

struct worker {
    struct app_workers *set;
    unsigned index;
    char name[16]; /* "worker3": the Redis connection's log name */
    uv_thread_t thread;
    bool thread_started;
    uv_loop_t loop;
    bool loop_ready;          /* initialised, with wake */
    struct wg_config cfg;     /* shallow copy of app->cfg, templates its own */
    struct wg_router *router; /* until the thread gives it to its proxy */
    struct wg_proxy *px;
    struct wg_redis *redis;
    struct wg_store *store;
    struct wg_session_cache *sessions;
    uv_async_t wake;
    uv_timer_t tick;
    bool tick_started;
    bool closing;
    int port, redirect_port; /* in: to bind (0: any); out: bound */
    int result;              /* the start: 0 or the exit code */
    _Atomic bool listening;  /* published by tick */
    _Atomic bool cache_live; /* the session cache's state channel delivers (or no cache) */
    /* Its Redis command connection's counters (struct wg_redis_stats),
     * published by tick: the connection itself is not thread-safe. */
    _Atomic uint64_t redis_commands, redis_timeouts, redis_failed, redis_error_replies,
        redis_connects, redis_failovers;
    _Atomic bool redis_connected;
    /* Under set->lock: */
    bool stop, stop_now, gone; /* gone: px and sessions freed, mailbox closed */
    struct reload_msg *msgs;
    struct reload_msg *unapplied; /* the worker's own, from its close to its loop's end */
};

struct app_workers {
    struct app *app;
    unsigned n;
    struct worker *w;
    struct wg_proxy_shared shared;
    struct wg_tls *tls; /* a reference, for reloads; NULL: plain HTTP */
    uv_mutex_t lock;
    uv_sem_t started;
    uv_async_t ended; /* main loop: a thread is about to return */
    bool ended_init;
    _Atomic unsigned nended;
    bool joined;
    uint64_t grace_ms;
    void (*done)(void *);
    void *done_arg;
    struct wg_router **pending; /* prepared by a reload, one per loop */
};

static void retired_release(struct retired *old)
{
    if (old != NULL && --old->refs == 0) {
        wg_config_free(&old->cfg);
        free(old);
    }
}

static void msg_free(struct reload_msg *m)
{
    wg_router_free(m->router);
    retired_release(m->retired);
    free(m);
}

/* ---- on the worker's thread ---------------------------------------------- */

static void handle_closed(uv_handle_t *h)
{
    (void)h;
}

/* Every path to the end of the loop: after a drain, on stop now, after a
 * failed start. Idempotent. */
static void worker_close(struct worker *w)
{
    struct reload_msg *msgs;

    if (w->closing)
        return;
    w->closing = true;
    uv_mutex_lock(&w->set->lock);
    w->gone = true;
    msgs = w->msgs;
    w->msgs = NULL;
    uv_mutex_unlock(&w->set->lock);
    /* Reloads never applied: freed once the loop has ended (worker_main),
     * since one may hold the last reference to the templates this worker's
     * closing connections still point at. */
    w->unapplied = msgs;
    /* Connections first: they may wait on the session cache. */
    wg_proxy_free(w->px);
    w->px = NULL;
    wg_router_free(w->router);
    w->router = NULL;
    wg_session_cache_free(w->sessions);
    w->sessions = NULL;
    wg_store_free(w->store);
    w->store = NULL;
    wg_redis_free(w->redis);
    w->redis = NULL;
    if (w->tick_started)
        uv_close((uv_handle_t *)&w->tick, handle_closed);
    uv_close((uv_handle_t *)&w->wake, handle_closed);
}

static void drained(void *arg)
{
    worker_close(arg);
}

static void on_tick(uv_timer_t *t)
{
    struct worker *w = t->data;

    w->listening = w->px != NULL && wg_proxy_listening(w->px);
    w->cache_live = w->sessions == NULL || wg_session_cache_connected(w->sessions);
    if (w->redis != NULL) {
        struct wg_redis_stats st;
        wg_redis_get_stats(w->redis, &st);
        w->redis_commands = st.commands;
        w->redis_timeouts = st.timeouts;
        w->redis_failed = st.failed;
        w->redis_error_replies = st.error_replies;
        w->redis_connects = st.connects;
        w->redis_failovers = st.failovers;
        w->redis_connected = st.connected;
    }
}

static void apply_reload(struct worker *w, struct reload_msg *m)
{
    w->cfg.templates = m->templates;
    w->cfg.templates_len = m->templates_len;
    wg_proxy_set_router(w->px, m->router);
    m->router = NULL;
    msg_free(m);
    WG_INFO(&w->set->app->log, "main", "worker loop took the reloaded routes", "worker=%u",
            w->index);
}

static void on_wake(uv_async_t *a)
{
    struct worker *w = a->data;
    struct reload_msg *msgs, *last = NULL;
    bool stop, stop_now;

    if (w->closing)
        return;
    uv_mutex_lock(&w->set->lock);
    stop = w->stop;
    stop_now = w->stop_now;
    msgs = w->msgs;
    w->msgs = NULL;
    uv_mutex_unlock(&w->set->lock);
    /* The mailbox is newest first: apply in the order sent. */
    while (msgs != NULL) {
        struct reload_msg *next = msgs->next;
        msgs->next = last;
        last = msgs;
        msgs = next;
    }
    while (last != NULL) {
        struct reload_msg *next = last->next;
        apply_reload(w, last);
        last = next;
    }
    if (stop_now)
        worker_close(w);
    else if (stop)
        wg_proxy_shutdown(w->px, w->set->grace_ms, drained, w);
}

/* The loop's parts, then its listener. Returns 0 or the exit code. */
static int worker_setup(struct worker *w)
{
    struct app *app = w->set->app;
    int r;

    r = wg_proxy_new(&w->loop, &w->cfg, &app->log, w->router, &w->px);
    if (r == 0)
        w->router = NULL; /* the proxy's; on failure still ours, as in main() */
    if (r < 0) {
        WG_ERROR(&app->log, "main", "cannot create the proxy", "worker=%u error=%s", w->index,
                 uv_strerror(r));
        return EXIT_RUNTIME;
    }
    wg_proxy_set_shared(w->px, &w->set->shared);
    if (w->set->tls != NULL)
        wg_proxy_set_tls(w->px, wg_tls_ref(w->set->tls));
    if (w->cfg.redis_url != NULL) {
        r = app_redis_new(&w->loop, &w->cfg, w->name, &app->log, &w->redis);
        if (r == 0)
            r = wg_store_new(w->redis, NULL, &w->store);
        if (r == 0)
            r = wg_session_cache_new(&w->loop, &w->cfg, &app->log, w->store, &w->sessions);
        if (r < 0) {
            WG_ERROR(&app->log, "main", "cannot set up the session cache", "worker=%u error=%s",
                     w->index, strerror(-r));
            return EXIT_RUNTIME;
        }
        wg_proxy_set_session_cache(w->px, w->sessions);
    }
    r = wg_proxy_listen_shared(w->px, w->port, w->redirect_port, &w->port, &w->redirect_port);
    if (r < 0) {
        WG_ERROR(&app->log, "main", "cannot listen", "worker=%u listen=%s error=\"%s\"", w->index,
                 w->cfg.listen.text, uv_strerror(r));
        return EXIT_LISTEN;
    }
    r = uv_timer_init(&w->loop, &w->tick);
    if (r < 0)
        return EXIT_RUNTIME;
    w->tick.data = w;
    w->tick_started = true;
    uv_timer_start(&w->tick, on_tick, 0, TICK_MS);
    return 0;
}

static void worker_main(void *arg)
{
    struct worker *w = arg;
    struct app_workers *set = w->set;

    w->result = worker_setup(w);
    uv_sem_post(&set->started);
    if (w->result != 0)
        worker_close(w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&w->loop) == UV_EBUSY) {
        uv_run(&w->loop, UV_RUN_NOWAIT);
        uv_loop_close(&w->loop);
    }
    while (w->unapplied != NULL) {
        struct reload_msg *next = w->unapplied->next;
        msg_free(w->unapplied);
        w->unapplied = next;
    }
    set->nended++;
    uv_async_send(&set->ended);
}

/* ---- on the main thread -------------------------------------------------- */

static void join_all(struct app_workers *set)
{
    if (set->joined)
        return;
    set->joined = true;
    for (unsigned i = 0; i < set->n; i++)
        if (set->w[i].thread_started)
            uv_thread_join(&set->w[i].thread);
}

static void set_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_ended(uv_async_t *a)
{
    struct app_workers *set = a->data;
    unsigned started = 0;

    for (unsigned i = 0; i < set->n; i++)
        started += set->w[i].thread_started;
    if (set->nended < started || set->done == NULL)
        return;
    join_all(set);
    void (*done)(void *) = set->done;
    set->done = NULL;
    done(set->done_arg); /* may free the app, and set with it */
}

static void post(struct worker *w, struct reload_msg *m, bool stop, bool stop_now)
{
    bool gone;

    uv_mutex_lock(&w->set->lock);
    gone = w->gone;
    if (!gone && m != NULL) {
        m->next = w->msgs;
        w->msgs = m;
    }
    w->stop |= stop;
    w->stop_now |= stop_now;
    /* Under the lock: the worker sets gone under it before it closes its
     * async handle and loop, so a send made while gone is false always
     * reaches a live handle (libuv aborts on a send to a closed one). */
    if (!gone && w->loop_ready)
        uv_async_send(&w->wake);
    uv_mutex_unlock(&w->set->lock);
    if (gone && m != NULL)
        msg_free(m);
}

int app_workers_new(struct app *app, unsigned n, struct wg_router *router, struct wg_tls *tls)
{
    struct app_workers *set = calloc(1, sizeof(*set));
    int r = -ENOMEM;

    /* Each loop builds its own router from the configuration. */
    wg_router_free(router);
    if (set == NULL || (set->w = calloc(n, sizeof(*set->w))) == NULL)
        goto fail;
    set->app = app;
    set->n = n;
    for (unsigned i = 0; i < n; i++) {
        set->w[i].set = set;
        set->w[i].index = i;
    }
    set->tls = tls;
    tls = NULL;
    if ((r = uv_mutex_init(&set->lock)) < 0)
        goto fail;
    if ((r = uv_sem_init(&set->started, 0)) < 0) {
        uv_mutex_destroy(&set->lock);
        goto fail;
    }
    if ((r = uv_async_init(&app->loop, &set->ended, on_ended)) < 0) {
        uv_sem_destroy(&set->started);
        uv_mutex_destroy(&set->lock);
        goto fail;
    }
    set->ended.data = set;
    set->ended_init = true;
    app->workers = set;
    return 0;
fail:
    wg_tls_free(tls);
    if (set != NULL) {
        wg_tls_free(set->tls);
        free(set->w);
        free(set);
    }
    return r;
}

/* The loop and its mailbox's async, made here so that the main thread can
 * post to it from the moment the thread exists. */
static int worker_prepare(struct app_workers *set, unsigned i, int port, int redirect_port)
{
    struct worker *w = &set->w[i];
    char err[WG_CONFIG_ERR_MAX];
    int r;

    snprintf(w->name, sizeof(w->name), "worker%u", i);
    w->cfg = set->app->cfg;
    w->port = port;
    w->redirect_port = redirect_port;
    r = wg_router_new(w->cfg.routes, w->cfg.routes_len, &w->router, err, sizeof(err));
    if (r < 0)
        return r;
    r = uv_loop_init(&w->loop);
    if (r < 0)
        return r;
    r = uv_async_init(&w->loop, &w->wake, on_wake);
    if (r < 0) {
        uv_loop_close(&w->loop);
        return r;
    }
    w->wake.data = w;
    w->loop_ready = true;
    return 0;
}

int app_workers_start(struct app *app, int *ret_port)
{
    struct app_workers *set = app->workers;
    int port = 0, redirect_port = 0;

    for (unsigned i = 0; i < set->n; i++) {
        struct worker *w = &set->w[i];
        int r = worker_prepare(set, i, port, redirect_port);
        if (r == 0)
            r = uv_thread_create(&w->thread, worker_main, w);
        if (r < 0) {
            WG_ERROR(&app->log, "main", "cannot start a worker loop", "worker=%u error=%s", i,
                     uv_strerror(r));
            return EXIT_RUNTIME;
        }
        w->thread_started = true;
        /* One after the other: the first binds port 0 to a port the others
         * then share. */
        uv_sem_wait(&set->started);
        if (w->result != 0)
            return w->result;
        port = w->port;
        redirect_port = w->redirect_port;
    }
    *ret_port = port;
    WG_INFO(&app->log, "main", "proxy worker loops started", "workers=%u port=%d", set->n, port);
    return 0;
}

static bool workers_ready(void *arg, char *why, size_t whylen)
{
    struct app_workers *set = arg;

    for (unsigned i = 0; i < set->n; i++) {
        const struct worker *w = &set->w[i];
        if (!w->listening) {
            snprintf(why, whylen, "public listener not bound (worker %u)", i);
            return false;
        }
        if (!w->cache_live) {
            snprintf(why, whylen,
                     "session state channel (redis pub/sub) not subscribed (worker %u)", i);
            return false;
        }
    }
    return true;
}

static void workers_metrics(void *arg, struct wg_buf *out)
{
    struct app_workers *set = arg;
    const struct wg_proxy *pxs[WG_WORKERS_MAX];
    struct wg_session_cache_stats sc = {0};
    size_t n = 0, ncaches = 0;

    /* A loop takes the lock before it frees its proxy and cache. */
    uv_mutex_lock(&set->lock);
    for (unsigned i = 0; i < set->n; i++) {
        const struct worker *w = &set->w[i];
        if (w->gone || w->px == NULL)
            continue;
        pxs[n++] = w->px;
        if (w->sessions != NULL) {
            app_session_cache_stats_add(&sc, wg_session_cache_stats(w->sessions));
            ncaches++;
        }
    }
    if (n > 0)
        wg_proxy_metrics_write_all(pxs, n, out);
    if (ncaches > 0)
        app_session_cache_metrics(&sc, out);
    wg_buf_appendf(out, "# HELP wakegate_workers Proxy worker loops (workers:).\n"
                        "# TYPE wakegate_workers gauge\n");
    wg_buf_appendf(out, "wakegate_workers %u\n", set->n);
    wg_buf_appendf(out, "# HELP wakegate_worker_connections_total Client connections accepted, "
                        "by worker loop.\n"
                        "# TYPE wakegate_worker_connections_total counter\n");
    for (unsigned i = 0; i < set->n; i++) {
        const struct worker *w = &set->w[i];
        uint64_t v = w->gone || w->px == NULL ? 0 : wg_proxy_stats(w->px)->connections_accepted;
        wg_buf_appendf(out, "wakegate_worker_connections_total{worker=\"%u\"} %" PRIu64 "\n", i, v);
    }
    uv_mutex_unlock(&set->lock);
}

int app_workers_report(struct app *app)
{
    int r = wg_admin_add_ready_check(app->admin, workers_ready, app->workers);
    if (r == 0)
        r = wg_admin_add_metrics(app->admin, workers_metrics, app->workers);
    if (r < 0)
        WG_ERROR(&app->log, "main", "cannot report the proxy on the admin listener", "error=%s",
                 strerror(-r));
    return r;
}

void app_workers_shutdown(struct app *app, uint64_t grace_ms, void (*done)(void *), void *arg)
{
    struct app_workers *set = app->workers;

    set->grace_ms = grace_ms;
    set->done = done;
    set->done_arg = arg;
    for (unsigned i = 0; i < set->n; i++)
        post(&set->w[i], NULL, true, false);
    on_ended(&set->ended); /* no thread running: done now */
}

int app_workers_prepare_reload(struct app *app, const struct wg_config *fresh, char *err,
                               size_t errlen)
{
    struct app_workers *set = app->workers;
    struct wg_router **routers = calloc(set->n, sizeof(*routers));
    int r = -ENOMEM;

    if (routers == NULL) {
        snprintf(err, errlen, "out of memory");
        return r;
    }
    for (unsigned i = 0; i < set->n; i++) {
        r = wg_router_new(fresh->routes, fresh->routes_len, &routers[i], err, errlen);
        if (r < 0) {
            for (unsigned j = 0; j < i; j++)
                wg_router_free(routers[j]);
            free(routers);
            return r;
        }
    }
    set->pending = routers;
    return 0;
}

void app_workers_commit_reload(struct app *app, struct wg_config *old)
{
    struct app_workers *set = app->workers;
    struct retired *ret = calloc(1, sizeof(*ret));
    struct reload_msg **msgs = calloc(set->n, sizeof(*msgs));
    bool ok = ret != NULL && msgs != NULL;

    for (unsigned i = 0; ok && i < set->n; i++)
        ok = (msgs[i] = calloc(1, sizeof(**msgs))) != NULL;
    if (!ok) {
        /* The loops keep their routes and templates: the old ones stay
         * alive (leaked) since a loop may still read them. */
        WG_ERROR(&app->log, "main", "out of memory, the worker loops keep the current routes", "%s",
                 "");
        for (unsigned i = 0; msgs != NULL && i < set->n; i++)
            free(msgs[i]);
        for (unsigned i = 0; i < set->n; i++)
            wg_router_free(set->pending[i]);
        free(set->pending);
        set->pending = NULL;
        free(msgs);
        free(ret);
        memset(old, 0, sizeof(*old));
        return;
    }
    ret->cfg = *old;
    memset(old, 0, sizeof(*old));
    ret->refs = set->n;
    for (unsigned i = 0; i < set->n; i++) {
        msgs[i]->router = set->pending[i];
        msgs[i]->templates = app->cfg.templates;
        msgs[i]->templates_len = app->cfg.templates_len;
        msgs[i]->retired = ret;
        post(&set->w[i], msgs[i], false, false);
    }
    free(set->pending);
    set->pending = NULL;
    free(msgs);
}

void app_workers_redis_stats(struct app *app, struct wg_redis_stats *sum)
{
    struct app_workers *set = app->workers;

    for (unsigned i = 0; set != NULL && i < set->n; i++) {
        const struct worker *w = &set->w[i];
        sum->commands += w->redis_commands;
        sum->timeouts += w->redis_timeouts;
        sum->failed += w->redis_failed;
        sum->error_replies += w->redis_error_replies;
        sum->connects += w->redis_connects;
        sum->failovers += w->redis_failovers;
        sum->connected = sum->connected && w->redis_connected;
    }
}

struct wg_tls *app_workers_tls(struct app *app)
{
    return app->workers != NULL ? app->workers->tls : NULL;
}

void app_workers_free(struct app *app)
{
    struct app_workers *set = app->workers;

    if (set == NULL)
        return;
    for (unsigned i = 0; i < set->n; i++)
        post(&set->w[i], NULL, true, true);
    join_all(set);
    /* Threads that never started leave their loop and async to close here. */
    for (unsigned i = 0; i < set->n; i++) {
        struct worker *w = &set->w[i];
        wg_router_free(w->router);
        if (w->loop_ready && !w->thread_started) {
            uv_close((uv_handle_t *)&w->wake, NULL);
            uv_run(&w->loop, UV_RUN_NOWAIT);
            uv_loop_close(&w->loop);
        }
    }
    /* After the join: no thread sends to it any more. */
    uv_sem_destroy(&set->started);
    uv_mutex_destroy(&set->lock);
    wg_tls_free(set->tls);
    set->tls = NULL;
    free(set->w);
    set->w = NULL;
    set->n = 0;
    app->workers = NULL;
    uv_close((uv_handle_t *)&set->ended, set_closed);
}
