/* src/wire_orch.c - wires the orchestrator runtime (orchestrator/orch) for roles
 * all and orchestrator when Redis is configured: the waker, Docker's truth,
 * the heartbeat, its readiness check and its metrics. */
#include <string.h>

#include "admin/listener.h"
#include "common/config.h"
#include "orchestrator/orch.h"
#include "src/app.h"

static bool orch_ready(void *arg, char *why, size_t whylen)
{
    struct app *app = arg;
    if (app->orch == NULL) {
        snprintf(why, whylen, "orchestrator stopped");
        return false;
    }
    return wg_orch_ready(app->orch, why, whylen);
}

static void orch_metrics(void *arg, struct wg_buf *out)
{
    struct app *app = arg;
    wg_orch_metrics(app->orch, out);
}

int app_orch_start(struct app *app)
{
    char err[256];
    int r;

    if (!app_has_orchestrator(app) || app->redis == NULL)
        return 0;
    r = wg_orch_new(&app->loop, &app->cfg, &app->log, app->redis, NULL, &app->orch, err,
                    sizeof(err));
    if (r < 0) {
        WG_ERROR(&app->log, "main", "cannot start the orchestrator", "error=\"%s\"",
                 err[0] ? err : strerror(-r));
        return r;
    }
    if (app->admin != NULL) {
        wg_admin_add_ready_check(app->admin, orch_ready, app);
        wg_admin_add_metrics(app->admin, orch_metrics, app);
    }
    return 0;
}

void app_orch_free(struct app *app)
{
    wg_orch_free(app->orch);
    app->orch = NULL;
}
