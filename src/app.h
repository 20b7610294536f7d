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
struct wg_proxy;
struct wg_redis;
struct app_redis_child;
struct wg_store;

struct app {
    uv_loop_t loop;
    struct wg_config cfg;
    struct wg_config_flags flags;
    struct wg_log log;
    struct wg_proxy *px;               /* role all|proxy */
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
