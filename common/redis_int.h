/* common/redis_int.h - what common/redis.c and common/redis_sentinel_mode.c
 * share: the connection's struct, its states, and the steps of a connect
 * that sentinel mode drives. Not an API: nothing outside common/redis*.c
 * includes it. Ownership and the hiredis facts relied on: common/redis.c. */
#ifndef WG_COMMON_REDIS_INT_H
#define WG_COMMON_REDIS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <hiredis/async.h>
#include <uv.h>

#include "common/log.h"
#include "common/redis.h"
#include "common/redis_sentinel.h"
#include "common/redis_url.h"

#define SUBSYS "redis"
#define REASON_MAX 256
#define QUOTED_MAX 300

enum conn_state {
    ST_STARTING,    /* [transient] first attempt runs on the next loop turn; commands held */
    ST_BACKOFF,     /* no connection; conn_timer runs to the next attempt; commands fail */
    ST_RESOLVING,   /* [transient] uv_getaddrinfo in flight; commands held */
    ST_CONNECTING,  /* [transient] hiredis connects, then the handshake; commands sent */
    ST_READY,       /* handshake answered; cmd_timer watches command deadlines */
    ST_CLOSED,      /* wg_redis_free() ran; handles are closing */
    ST_DISCOVERING, /* [transient] sentinel mode: the sentinels are asked on the thread pool;
                     * commands held */
};
#define ST_BIT(s) (1u << (s))
/* Commands wait in r->waiting: there is no context to hand them to yet. */
#define ST_HOLDS (ST_BIT(ST_STARTING) | ST_BIT(ST_RESOLVING) | ST_BIT(ST_DISCOVERING))
/* Commands go straight to hiredis, which buffers them until connected. */
#define ST_SENDS (ST_BIT(ST_CONNECTING) | ST_BIT(ST_READY))
/* An attempt is under way and conn_timer is its deadline. */
#define ST_ATTEMPT (ST_BIT(ST_RESOLVING) | ST_BIT(ST_CONNECTING))
#define ST_IN(r, mask) ((ST_BIT((r)->state) & (mask)) != 0)

enum reported { REPORTED_NONE, REPORTED_UP, REPORTED_DOWN };

enum req_kind { REQ_USER, REQ_HANDSHAKE, REQ_HANDSHAKE_LAST };

struct req {
    struct req *next;
    struct wg_redis *r;
    wg_redis_reply_cb *cb;
    void *arg;
    char *cmd; /* RESP text; ours until hiredis has copied it */
    size_t len;
    uint64_t deadline; /* uv_now() ms; 0 until the connection is ready */
    int status;        /* the outcome, while on r->deferred */
    enum req_kind kind;
    const char *what; /* handshake step, for the reason text */
    bool done;        /* outcome delivered; hiredis still holds the pointer */
};

struct req_list {
    struct req *head, *tail;
};

struct sub {
    struct sub *next;
    struct wg_redis *r;
    wg_redis_msg_cb *cb;
    void *arg;
    size_t len;
    char channel[];
};

struct wg_redis {
    uv_loop_t *loop;
    struct wg_log *log;
    struct wg_redis_url t;
    char name[QUOTED_MAX];  /* as given, for the sentinel watcher's name */
    char qname[QUOTED_MAX]; /* name and URL, quoted once for log lines */
    char qurl[QUOTED_MAX];
    uint32_t connect_timeout_ms;
    uint32_t command_timeout_ms;
    uint32_t reconnect_min_ms;
    uint32_t reconnect_max_ms;

    enum conn_state state;
    redisAsyncContext *ac; /* set in ST_SENDS states only */
    uv_timer_t conn_timer; /* the attempt's deadline, or the backoff delay */
    uv_timer_t cmd_timer;  /* at or before the oldest command's deadline */
    uv_idle_t defer;       /* delivers r->deferred on the next loop turn */
    uv_getaddrinfo_t gai;
    bool gai_busy;
    unsigned refs; /* open handles + the lookup in flight */

    struct req_list pending;  /* handed to hiredis, in reply order */
    struct req_list waiting;  /* held in ST_HOLDS states */
    struct req_list deferred; /* outcome known, delivered by `defer` */
    struct sub *subs;
    bool subscriber;

    unsigned failures; /* consecutive failed attempts, for the backoff */
    uint64_t rng;
    enum reported reported;
    wg_redis_state_cb *state_cb;
    void *state_arg;
    char last_error[REASON_MAX];
    struct wg_redis_stats st;

    /* Sentinel mode (t.master_name set): t.host and t.port are the master
     * the sentinels named last; target names it for reasons. */
    char *target;        /* NULL: t.display; see tgt() */
    uv_work_t disc_work; /* wg_redis_sentinel_discover() on the thread pool */
    struct wg_redis_sentinel_result *disc;
    bool disc_busy;
    bool disc_verify;  /* a check while connected, not an attempt */
    size_t disc_first; /* the sentinel to ask first, read by the worker */
    size_t next_sentinel;
    char last_master[WG_REDIS_SENTINEL_HOST_MAX + 8]; /* host:port of the last connection */
    struct wg_redis *watcher; /* subscribed to +switch-master on one sentinel */
    size_t watch_idx;         /* that sentinel */
    unsigned watch_failures;
    uv_timer_t watch_timer; /* the next watcher, after a backoff */
};

/* What reasons name: the URL, or in sentinel mode the master reached. */
static inline const char *redis_tgt(const struct wg_redis *r)
{
    return r->target ? r->target : r->t.display;
}

static inline const char *redis_quote(char *dst, size_t dstlen, const char *s)
{
    return wg_log_quote(dst, dstlen, s, strlen(s));
}

/* ---- common/redis.c ---- */

/* Ends the attempt or connection (see there); then backs off, unless r is
 * closed. */
void redis_conn_end(struct wg_redis *r, int status, uint64_t expired, const char *reason,
                    bool hiredis_frees);
/* Sentinel mode: an attempt that waits on the sentinels fails (and the
 * commands it holds) when they have not answered in 3 connect timeouts. */
void redis_arm_discovery_deadline(struct wg_redis *r);
void redis_fail_attempt(struct wg_redis *r, const char *what, const char *why);
/* One attempt: in sentinel mode, the sentinels first, then
 * redis_connect_host() to the master they named. */
void redis_start_attempt(struct wg_redis *r);
void redis_connect_host(struct wg_redis *r);
/* Drops one reference; the last one frees r (after wg_redis_free()). */
void redis_release(struct wg_redis *r);
uint64_t redis_next_random(struct wg_redis *r);
/* A connection to t (its strings taken, on failure too). */
int redis_create(uv_loop_t *loop, struct wg_redis_url *t, const struct wg_redis_opts *opts,
                 struct wg_log *log, struct wg_redis **ret);

/* ---- common/redis_sentinel_mode.c ---- */

/* r->target from the master r->t names. */
void redis_set_target(struct wg_redis *r);
/* Counts and logs a move of the master (go_ready, sentinel mode). */
void redis_note_master(struct wg_redis *r);
/* Asks the sentinels on the thread pool: for an attempt, or (verify) to
 * check the master of a live connection. */
void redis_start_discovery(struct wg_redis *r, bool verify);
/* watch_timer's callback: the +switch-master watcher on the next sentinel. */
void redis_watch_timer_cb(uv_timer_t *t);

#endif
