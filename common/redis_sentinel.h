/* common/redis_sentinel.h - finding the Redis master through Sentinel.
 *
 * Used by common/redis.c for a redis+sentinel:// URL (common/redis_url.h),
 * and by doctor. Two kinds of code:
 * - pure parsers of the sentinels' and the master's answers (unit-tested);
 * - wg_redis_sentinel_discover(), which asks the sentinels in turn with
 *   hiredis's blocking API, each step within a timeout. It blocks: common/redis
 *   runs it on libuv's thread pool (uv_queue_work), as it runs name lookups,
 *   so a loop never waits on a sentinel. It touches nothing but its
 *   arguments and logs nothing: the caller logs the trace it fills. */
#ifndef WG_COMMON_REDIS_SENTINEL_H
#define WG_COMMON_REDIS_SENTINEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "common/redis_url.h"

#define WG_REDIS_SENTINEL_HOST_MAX 256
#define WG_REDIS_SENTINEL_NOTE_MAX 192

/* The answer to SENTINEL get-master-addr-by-name: a two-string array
 * [ip, port]. Returns 0 with host/port set; 1 for a nil (the sentinel does
 * not monitor that name); -EINVAL otherwise, with why set (never NULL). */
int wg_redis_sentinel_parse_addr(const redisReply *reply, char *host, size_t hostlen,
                                 uint16_t *port, const char **why);

/* True when the answer to ROLE is an array whose first element is
 * "master". *role is that first element ("slave", "sentinel"...) or a
 * description of a bad answer. */
bool wg_redis_sentinel_role_is_master(const redisReply *reply, const char **role, size_t *rolelen);

/* A +switch-master message: "NAME OLD-IP OLD-PORT NEW-IP NEW-PORT". Returns
 * 0 when it is about master (the new address in host/port), 1 when it is
 * about another master, -EINVAL when malformed. */
int wg_redis_sentinel_parse_switch(const char *msg, size_t len, const char *master, char *host,
                                   size_t hostlen, uint16_t *port);

/* What one sentinel said, for the log line of each attempt. */
struct wg_redis_sentinel_note {
    size_t sentinel; /* index in the URL's list */
    bool ok;         /* it named the master and the master said ROLE master */
    char text[WG_REDIS_SENTINEL_NOTE_MAX];
};

struct wg_redis_sentinel_result {
    int status; /* 0: found; -EHOSTUNREACH: no sentinel named a live master */
    char host[WG_REDIS_SENTINEL_HOST_MAX];
    uint16_t port;
    size_t sentinel; /* which one answered, when status is 0 */
    struct wg_redis_sentinel_note notes[WG_REDIS_URL_SENTINELS_MAX];
    size_t notes_len;
};

/* Asks u's sentinels in turn, from index first: the master's address, then
 * ROLE on that address (with u's credentials), which must say master (a
 * master just demoted must not be used). Stops at the first that passes.
 * Each connect and each answer has timeout_ms. Blocking; thread-safe (reads
 * u only). */
void wg_redis_sentinel_discover(const struct wg_redis_url *u, size_t first, uint32_t timeout_ms,
                                struct wg_redis_sentinel_result *res);

#endif
