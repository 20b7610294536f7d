/* test/unit/redis_connect_fixture.c - see redis_connect_fixture.h. */
#include "redis_connect_fixture.h"

#include <stddef.h>

#include "loop_fixture.h"

static void count_up(struct wg_redis *r, bool connected, const char *reason, void *arg)
{
    (void)r;
    (void)reason;
    if (connected)
        (*(int *)arg)++;
}

struct wg_redis *wg_test_redis_connect(uv_loop_t *loop, const char *url,
                                       const struct wg_redis_opts *opts, struct wg_log *log)
{
    struct wg_redis *r = NULL;
    int ups = 0;

    if (wg_redis_new(loop, url, opts, log, &r) != 0)
        return NULL;
    wg_redis_on_state(r, count_up, &ups);
    if (!wg_test_run_until(loop, &ups, 1, 3000)) {
        wg_redis_free(r);
        return NULL;
    }
    wg_redis_on_state(r, NULL, NULL);
    return r;
}
