/* src/wire_redis.c - the one place that turns the configuration into a
 * Redis command connection (its URL and options): the main loop's
 * (app->redis) and each proxy worker loop's are made alike. */
#include "common/redis.h"
#include "src/app.h"

int app_redis_new(uv_loop_t *loop, const struct wg_config *cfg, const char *name,
                  struct wg_log *log, struct wg_redis **ret)
{
    struct wg_redis_opts ropts = {.name = name};

    return wg_redis_new(loop, cfg->redis_url, &ropts, log, ret);
}
