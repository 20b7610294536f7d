/* src/app.h - the process: what main() builds for the configured role.
 *
 * Each part of the binary that needs wiring has its own src/wire_<part>.c with an
 * app_<part>_start() called from main() and an app_<part>_free() called from
 * free_app(); they keep their objects in struct app. Shared by src/ only. */
#ifndef WG_SRC_APP_H
#define WG_SRC_APP_H

#include <stdbool.h>
#include <uv.h>

#include "common/config.h"
#include "common/log.h"

struct wg_admin;
struct wg_buf;
struct wg_router;
struct wg_proxy;
struct wg_redis;
struct app_redis_child;
struct app_workers;
struct wg_store;
struct wg_tls;

struct app {
    uv_loop_t loop;
    struct wg_config cfg;
    struct wg_config_flags flags;
    struct wg_log log;
    struct wg_proxy *px;               /* role all|proxy with one worker: on this loop */
    struct app_workers *workers;       /* role all|proxy with workers > 1 (src/workers.c) */
    struct wg_admin *admin;            /* every role */
    struct wg_redis *redis;            /* commands; NULL when no Redis is configured */
    struct wg_store *store;            /* on redis; NULL without Redis */
    struct wg_orch *orch;              /* role all|orchestrator (src/wire_orch.c) */
    struct wg_api *api;                /* admin API, role all|orchestrator (src/wire_api.c) */
    struct wg_session_cache *sessions; /* proxy's session route cache (src/wire_session_cache.c) */
    struct app_redis_child *redis_child; /* private redis-server (src/redis_child.c) */
    char *redis_server;                  /* its program, found before the start; or NULL */
    uv_signal_t sig_term, sig_int, sig_hup;
    bool stopping;
    unsigned stop_waits; /* parts still draining after a stop signal, plus one */
};

static inline bool app_has_proxy(const struct app *app)
{
    return app->cfg.role != WG_ROLE_ORCHESTRATOR;
}

static inline bool app_has_orchestrator(const struct app *app)
{
    return app->cfg.role != WG_ROLE_PROXY;
}

/* src/wire_redis.c: a Redis command connection for loop, from cfg's redis:
 * section (the URL and its options); name goes on its log lines. Every
 * wg_redis of the process that runs commands is made here. Returns 0 or
 * -errno. */
int app_redis_new(uv_loop_t *loop, const struct wg_config *cfg, const char *name,
                  struct wg_log *log, struct wg_redis **ret);

/* src/workers.c: the proxy's worker loops, for workers > 1: one thread per
 * loop, each with its own proxy (listening with SO_REUSEPORT), Redis
 * command connection, store and session cache. The main loop keeps the
 * orchestrator and the admin listener. */
/* Prepares n loops; takes router (each loop builds its own from the
 * configuration) and tls (shared by the loops; NULL: plain HTTP). */
int app_workers_new(struct app *app, unsigned n, struct wg_router *router, struct wg_tls *tls);
/* Starts the threads, one after the other; returns 0 with the bound port,
 * or the exit code (EXIT_LISTEN: a loop could not listen). */
int app_workers_start(struct app *app, int *ret_port);
/* /readyz and /metrics of the loops on the admin listener. */
int app_workers_report(struct app *app);
/* SIGTERM: every loop drains within grace_ms; done runs on the main loop
 * once every thread has ended. */
void app_workers_shutdown(struct app *app, uint64_t grace_ms, void (*done)(void *), void *arg);
/* SIGHUP, after the configuration fresh loaded: builds each loop's router
 * from it. 0, or -errno with nothing changed and err set. */
int app_workers_prepare_reload(struct app *app, const struct wg_config *fresh, char *err,
                               size_t errlen);
/* Then, once app->cfg has the new templates: hands each loop its router and
 * them; old (holding the templates replaced) is moved out and freed once
 * every loop has moved on. */
void app_workers_commit_reload(struct app *app, struct wg_config *old);
/* Adds the loops' Redis command connections to sum (the counters; connected
 * stays true only if each is). Their counters lag by up to a loop's tick. */
struct wg_redis_stats;
void app_workers_redis_stats(struct app *app, struct wg_redis_stats *sum);
/* The shared TLS state (for certificate reloads), or NULL. */
struct wg_tls *app_workers_tls(struct app *app);
/* Closes every loop now and joins the threads. NULL-safe. */
void app_workers_free(struct app *app);

/* src/wire_session_cache.c: the session cache's metrics text for st (one
 * cache's counters, or the sum of several). */
struct wg_session_cache_stats;
void app_session_cache_metrics(const struct wg_session_cache_stats *st, struct wg_buf *out);
/* sum += st. */
void app_session_cache_stats_add(struct wg_session_cache_stats *sum,
                                 const struct wg_session_cache_stats *st);

/* src/wire_api.c: the admin API (needs admin, redis and store). */
int app_api_start(struct app *app);
void app_api_free(struct app *app);

/* src/wire_orch.c: the orchestrator runtime (needs redis; before the store is freed). */
int app_orch_start(struct app *app);
void app_orch_free(struct app *app);

/* src/wire_session_cache.c: the proxy's session cache (needs px and store). */
int app_session_cache_start(struct app *app);
void app_session_cache_free(struct app *app);

/* src/wire_redis_metrics.c: /metrics of the shared Redis command connection (app->redis;
 * nothing without Redis). Never fails the start: returns 0. */
int app_metrics_start(struct app *app);

/* src/wire_proxy.c: the proxy's readiness check and metrics on the admin
 * listener (role all|proxy; needs px and admin). Call it first, so that
 * /readyz and /metrics begin with the proxy. */
int app_proxy_start(struct app *app);

#endif
