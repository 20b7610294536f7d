/* src/wire_proxy.c - wires the proxy's report onto the admin listener, for
 * roles all and proxy: /readyz needs its public listener bound, /metrics
 * shows its counters (proxy/metrics). */
#include <string.h>

#include "admin/listener.h"
#include "proxy/metrics.h"
#include "src/app.h"

static bool proxy_ready(void *arg, char *why, size_t whylen)
{
    return wg_proxy_ready(arg, why, whylen);
}

static void proxy_metrics(void *arg, struct wg_buf *out)
{
    wg_proxy_metrics_write(arg, out);
}

int app_proxy_start(struct app *app)
{
    int r;

    if (app->workers != NULL)
        return app_workers_report(app);
    if (app->px == NULL)
        return 0;
    r = wg_admin_add_ready_check(app->admin, proxy_ready, app->px);
    if (r == 0)
        r = wg_admin_add_metrics(app->admin, proxy_metrics, app->px);
    if (r < 0)
        WG_ERROR(&app->log, "main", "cannot report the proxy on the admin listener", "error=%s",
                 strerror(-r));
    return r;
}
