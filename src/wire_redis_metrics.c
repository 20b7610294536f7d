/* src/wire_redis_metrics.c - /metrics of the process's own parts that have no
 * exporter of their own: the Redis command connections (app->redis, which
 * every part's store on the main loop uses, and with workers > 1 each
 * worker loop's own, summed). Other Redis connections (the session
 * cache's subscriber, the orchestrator's blocking reader) are not counted
 * here. */
#include <inttypes.h>
#include <string.h>

#include "admin/listener.h"
#include "common/buf.h"
#include "common/log.h"
#include "common/redis.h"
#include "src/app.h"

static void redis_metrics(void *arg, struct wg_buf *out)
{
    struct app *app = arg;
    struct wg_redis_stats st;

    if (app->redis == NULL)
        return;
    wg_redis_get_stats(app->redis, &st);
    app_workers_redis_stats(app, &st);
    wg_buf_appendf(
        out,
        "# HELP wakegate_redis_connected Whether the shared Redis command connection is up "
        "(its handshake answered).\n"
        "# TYPE wakegate_redis_connected gauge\n"
        "wakegate_redis_connected %d\n"
        "# HELP wakegate_redis_connects_total Successful connects (handshakes) of the shared "
        "Redis command connection.\n"
        "# TYPE wakegate_redis_connects_total counter\n"
        "wakegate_redis_connects_total %" PRIu64 "\n"
        "# HELP wakegate_redis_commands_total Commands on the shared Redis connection whose "
        "outcome was delivered (answers and failures).\n"
        "# TYPE wakegate_redis_commands_total counter\n"
        "wakegate_redis_commands_total %" PRIu64 "\n"
        "# HELP wakegate_redis_errors_total Commands on the shared Redis connection that "
        "failed, by kind (timeout: no answer in time; connection: not connected or lost; "
        "reply: Redis answered with an error).\n"
        "# TYPE wakegate_redis_errors_total counter\n"
        "wakegate_redis_errors_total{kind=\"timeout\"} %" PRIu64 "\n"
        "wakegate_redis_errors_total{kind=\"connection\"} %" PRIu64 "\n"
        "wakegate_redis_errors_total{kind=\"reply\"} %" PRIu64 "\n"
        "# HELP wakegate_redis_failovers_total With redis.sentinel: connects of the Redis command "
        "connections (the main one and each worker's) to a master other than the one before "
        "(failovers followed).\n"
        "# TYPE wakegate_redis_failovers_total counter\n"
        "wakegate_redis_failovers_total %" PRIu64 "\n",
        st.connected ? 1 : 0, st.connects, st.commands, st.timeouts, st.failed, st.error_replies,
        st.failovers);
}

int app_metrics_start(struct app *app)
{
    if (app->redis == NULL)
        return 0;
    int r = wg_admin_add_metrics(app->admin, redis_metrics, app);
    if (r < 0)
        WG_WARN(&app->log, "main", "cannot export the Redis metrics, going on without them",
                "error=%s", strerror(-r));
    return 0;
}
