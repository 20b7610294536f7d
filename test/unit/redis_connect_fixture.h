/* test/unit/redis_connect_fixture.h - a wg_redis connected to a test's
 * redis-server, for the unit tests that drive the store on a private loop. */
#ifndef WG_TEST_REDIS_CONNECT_FIXTURE_H
#define WG_TEST_REDIS_CONNECT_FIXTURE_H

#include <uv.h>

#include "common/log.h"
#include "common/redis.h"

/* A new connection to url that has finished its handshake, or NULL when it
 * could not be made or did not connect within 3 s (the caller fails). */
struct wg_redis *wg_test_redis_connect(uv_loop_t *loop, const char *url,
                                       const struct wg_redis_opts *opts, struct wg_log *log);

#endif
