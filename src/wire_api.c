/* src/wire_api.c - wires the admin API (admin/api) onto the admin listener,
 * in every role that has Redis: the API speaks only to Redis (placement
 * picks the host; commands go to the record's host's stream), so a
 * proxy-only gateway serves it too when it has an admin token. */
#include <stdbool.h>
#include <string.h>

#include "admin/api.h"
#include "admin/listener.h"
#include "src/app.h"

int app_api_start(struct app *app)
{
    if (app->store == NULL || app->admin == NULL)
        return 0;
    bool any_token = (app->cfg.admin_token != NULL && app->cfg.admin_token[0] != '\0') ||
                     (app->cfg.admin_read_token != NULL && app->cfg.admin_read_token[0] != '\0');
    /* A proxy without a token keeps its admin listener to health and
     * metrics, as before: no 503 /v1/ to warn about. */
    if (!app_has_orchestrator(app) && !any_token)
        return 0;
    int r = wg_api_new(&app->loop, &app->cfg, &app->log, app->admin, app->redis, app->store, NULL,
                       &app->api);
    if (r < 0) {
        WG_ERROR(&app->log, "main", "cannot set up the admin API", "error=%s docker_name=%s",
                 strerror(-r), app->cfg.docker_name ? app->cfg.docker_name : "-");
        return r;
    }
    bool admin_token = app->cfg.admin_token != NULL && app->cfg.admin_token[0] != '\0';
    bool read_token = app->cfg.admin_read_token != NULL && app->cfg.admin_read_token[0] != '\0';
    if (!admin_token && !read_token)
        WG_WARN(&app->log, "main", "no admin token configured, /v1/ answers 503", "hint=%s",
                "set admin.token_file or WAKEGATE_ADMIN_TOKEN");
    else if (!admin_token)
        WG_WARN(&app->log, "main", "only a read-only token configured, /v1/ writes are refused",
                "hint=%s", "set admin.token_file or WAKEGATE_ADMIN_TOKEN");
    return 0;
}

void app_api_free(struct app *app)
{
    /* The admin may outlive the API (free_app frees it first today, which
     * makes this a no-op): it must not call into a freed one. */
    if (app->admin != NULL && app->api != NULL)
        wg_admin_remove_hooks(app->admin, app->api);
    wg_api_free(app->api);
    app->api = NULL;
}
