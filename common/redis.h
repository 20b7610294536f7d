/* common/redis.h - one Redis connection on a libuv loop (hiredis 0.14 async).
 *
 * A struct wg_redis is one logical connection that stays alive across server
 * restarts: it connects, reconnects with jittered exponential backoff after a
 * loss, and enforces the connect and command timeouts that hiredis 0.14 lacks.
 *
 * URLs: common/redis_url.h (redis://[[user]:password@]host[:port][/db] or
 * unix:///path/to/redis.sock[?db=N]). Host names are resolved with uv_getaddrinfo() on every
 * attempt, so the loop never blocks in DNS. The password may be percent-encoded; it never appears
 * in logs or in reasons.
 *
 * Connecting. An attempt is: name lookup, TCP/unix connect, then a handshake
 * (AUTH when a password is given, SELECT when db != 0, PING). The whole
 * attempt must finish within connect_timeout_ms, so a server that accepts but
 * never answers counts as unreachable. "Connected" means the handshake
 * answered.
 *
 * Commands. Each command's callback runs exactly once, never inside the call
 * that issued it, with one of:
 *      0            reply is the answer. A Redis error answer is status 0
 *                   with reply->type == REDIS_REPLY_ERROR and its text in
 *                   reply->str: it is an answer, the caller decides.
 *   -ETIMEDOUT      no answer within command_timeout_ms.
 *   -ECONNRESET     the connection was lost (or dropped, see below) after
 *                   the command was sent.
 *   -ENOTCONN       there was no connection: issued while disconnected
 *                   (fails fast, on the next loop turn), or the connection
 *                   attempt it waited for failed.
 *   -ECANCELED      wg_redis_free() ran.
 * reply is NULL unless status is 0, and is valid only inside the callback:
 * copy what you keep.
 * While an attempt is in progress (lookup, connect, handshake) commands are
 * held and sent once connected; they fail with -ENOTCONN when the attempt
 * fails, so nothing waits longer than connect_timeout_ms + command_timeout_ms.
 * Commands issued in one loop turn go out in one write (pipelining).
 *
 * Timeouts. When a command times out the server is taken as unresponsive:
 * every expired command gets -ETIMEDOUT, the connection is dropped, the other
 * commands in flight on it get -ECONNRESET, and a reconnect follows. Replies
 * are matched to commands by order, so this is the only way to stop waiting
 * for one reply without mismatching the next ones. It also catches a dead
 * peer in seconds instead of TCP's minutes. Hence command_timeout_ms must
 * exceed the slowest command's run time, and blocking commands (BLPOP,
 * XREADGROUP BLOCK) belong on a connection of their own whose timeout is
 * longer than the block time.
 *
 * Pub/sub. The first wg_redis_subscribe() makes the connection a subscriber
 * for the rest of its life (Redis accepts almost no other commands on it):
 * use one wg_redis for commands and another for subscriptions. Subscriptions
 * are renewed after every reconnect; messages published while disconnected
 * are lost, which the WG_REDIS_SUBSCRIBED event signals so the owner can
 * resynchronise.
 *
 * Sentinel mode (a redis+sentinel:// URL, which the configuration builds
 * from redis.sentinel): each attempt first asks the sentinels in turn for
 * the master (on libuv's thread pool, each step within connect_timeout_ms)
 * and checks that it answers ROLE master; the handshake checks ROLE again.
 * A +switch-master of our master (each connection watches one sentinel), a
 * -READONLY answer or a loss ends the connection and the next attempt asks
 * again; a switch reconnects without backoff. To the user it is a reconnect
 * like any other: a state change, and WG_REDIS_SUBSCRIBED on subscribers.
 * common/redis_sentinel_mode.c.
 *
 * Logging: connection state changes at info (connected) and warn (lost, or
 * the first failed attempt); everything else at debug. */
#ifndef WG_COMMON_REDIS_H
#define WG_COMMON_REDIS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>
#include <uv.h>

struct wg_log;
struct wg_redis; /* opaque */

#define WG_REDIS_CONNECT_TIMEOUT_MS 2000
#define WG_REDIS_COMMAND_TIMEOUT_MS 5000
#define WG_REDIS_RECONNECT_MIN_MS 100
#define WG_REDIS_RECONNECT_MAX_MS 10000

/* Zero fields take the defaults above. */
struct wg_redis_opts {
    const char *name;            /* on log lines, e.g. "store" or "pubsub"; copied */
    uint32_t connect_timeout_ms; /* lookup + connect + handshake, per attempt */
    uint32_t command_timeout_ms; /* from the time the command can be sent */
    uint32_t reconnect_min_ms;   /* first retry delay; doubles per failure... */
    uint32_t reconnect_max_ms;   /* ...up to this; each delay is jittered 50-100% */
};

/* status: 0 or -errno as listed above; reply: only when status is 0. */
typedef void wg_redis_reply_cb(int status, redisReply *reply, void *arg);

/* connected: the handshake just answered; otherwise the connection was lost
 * or the attempt failed, and reason says why (it includes the URL and, when
 * Redis refused the handshake, its answer). Called on changes only: repeated
 * failed attempts while already disconnected do not call it again. Never
 * called after wg_redis_free(). It may call wg_redis_free(r). */
typedef void wg_redis_state_cb(struct wg_redis *r, bool connected, const char *reason, void *arg);

enum wg_redis_msg_kind {
    WG_REDIS_SUBSCRIBED, /* the subscription is (again) live; earlier messages may be lost */
    WG_REDIS_MESSAGE,    /* data/len is a published message */
};

struct wg_redis_msg {
    enum wg_redis_msg_kind kind;
    const char *channel; /* not NUL-terminated; valid only inside the callback */
    size_t channel_len;
    const char *data; /* WG_REDIS_MESSAGE only; not NUL-terminated */
    size_t len;
};

typedef void wg_redis_msg_cb(const struct wg_redis_msg *msg, void *arg);

/* Starts connecting at once; failures are retried for the object's lifetime
 * and reported through the state callback, never here. log may be NULL and
 * must outlive r. opts may be NULL. Returns 0 with *ret set, -EINVAL (bad
 * URL or opts; wg_redis_url_check() of common/redis_url.h gives the
 * reason), or -ENOMEM. */
int wg_redis_new(uv_loop_t *loop, const char *url, const struct wg_redis_opts *opts,
                 struct wg_log *log, struct wg_redis **ret);

/* NULL-safe and idempotent. Every pending command callback runs with
 * -ECANCELED before this returns; subscription and state callbacks stop.
 * The handles close asynchronously: the memory is released on a later loop
 * turn, so the loop must run on. May be called from any callback of r. */
void wg_redis_free(struct wg_redis *r);

/* Replaces the state callback (cb NULL: none). */
void wg_redis_on_state(struct wg_redis *r, wg_redis_state_cb *cb, void *arg);

/* True after the handshake answered and until the connection is lost. */
bool wg_redis_connected(const struct wg_redis *r);

/* The reason of the last failure ("" if none); valid until r's next state
 * change. */
const char *wg_redis_last_error(const struct wg_redis *r);

/* Sends a command; fmt is hiredis's: %s for a C string, %b for a binary
 * (pointer, size_t length) pair. cb may be NULL (no one is told). Returns 0
 * when cb will run; otherwise cb will not run and the result is -EINVAL (bad
 * format, a (P)SUBSCRIBE/(P)UNSUBSCRIBE/MONITOR command, or r is a
 * subscriber), -ECANCELED (from a callback that runs inside wg_redis_free()),
 * or -ENOMEM. */
int wg_redis_command(struct wg_redis *r, wg_redis_reply_cb *cb, void *arg, const char *fmt, ...);
int wg_redis_vcommand(struct wg_redis *r, wg_redis_reply_cb *cb, void *arg, const char *fmt,
                      va_list ap);
/* argvlen may be NULL when every argument is a C string. */
int wg_redis_command_argv(struct wg_redis *r, wg_redis_reply_cb *cb, void *arg, int argc,
                          const char *const *argv, const size_t *argvlen);

/* Subscribes to one channel, now if connected and again after every
 * reconnect, until wg_redis_free(). cb gets WG_REDIS_SUBSCRIBED each time
 * Redis confirms, then WG_REDIS_MESSAGE per message; it may call
 * wg_redis_free(r). Returns 0, -EINVAL (empty channel or NULL cb), -EEXIST
 * (already subscribed on r), -ECANCELED or -ENOMEM. */
int wg_redis_subscribe(struct wg_redis *r, const char *channel, wg_redis_msg_cb *cb, void *arg);

/* Counters for /metrics: commands whose outcome was delivered, and how they
 * failed (-ECANCELED at free is not a failure); successful handshakes. */
struct wg_redis_stats {
    uint64_t commands;
    uint64_t timeouts;      /* -ETIMEDOUT */
    uint64_t failed;        /* -ECONNRESET, -ENOTCONN */
    uint64_t error_replies; /* Redis answered with an error */
    uint64_t connects;
    uint64_t failovers; /* sentinel mode: connections made to a master other than the last */
    bool connected;
};
void wg_redis_get_stats(const struct wg_redis *r, struct wg_redis_stats *ret);

#endif
