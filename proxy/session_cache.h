/* proxy/session_cache.h - the proxy's session route cache: its view of
 * sessions (not the session model, which is common/session.h).
 *
 * An in-process cache of session id -> state and container address, so that
 * a request for a running session costs no Redis round trip. It is filled on
 * first use (one HGETALL per session, shared by every request that waits
 * for it) and kept fresh by the wg:state channel, which the orchestrators
 * publish on for every change. When the subscription is (re)established
 * every entry is marked stale and fetched again on its next use, because
 * messages may have been missed.
 *
 * Each entry also holds the record's access generation (gen), so the
 * check of a signed link or cookie needs no Redis round trip: a revoke's
 * wg:state message replaces it on every gateway.
 *
 * Each entry is tied to the session's container: the container id comes
 * with the address (record and state messages), and a change of either
 * tells the proxy the address is gone (wg_session_cache_on_addr_gone).
 *
 * The state channel is checked as well as kept: a subscriber that a
 * partition silenced hears nothing and learns of it only when TCP
 * keepalive gives up. Every quarter of redis.state_timeout the cache
 * publishes the time on a channel of its own (wg:check:{token}) through
 * the store and reads it back on the subscriber; what came back proves
 * that every message published before it has arrived. No check back
 * within redis.state_timeout counts as a lost channel (and /readyz says
 * so) until one comes.
 *
 * While Redis cannot confirm an entry (the state channel is lost or
 * silent, or the entry's read fails), the cache does not know whether the
 * container still runs at its address: the orchestrators may have stopped
 * it and given the address to another session's container. A running
 * entry is then handed out unconfirmed (view.confirmed false), for
 * redis.outage_grace after the last moment the cache knew, and the caller
 * may use it only while a connection opened to that container when the
 * entry was confirmed is alive to prove the address is still the
 * container's (proxy/upstream.h, WG_POOL_PROVEN); otherwise it holds the
 * request until Redis confirms the session (waiters are told when the
 * channel is back and the entry read again) or its deadline, then 503.
 * Wakes and unknown sessions are refused (503).
 *
 * Waiting: a request for a session that is not running registers a waiter
 * and is told every time the entry changes; it then looks again. The
 * caller enforces its own deadline. Waiters are counted per session and in
 * total, against caps.
 *
 * Activity: an exchange proxied to a session (a request, a long response, a
 * WebSocket or SSE stream) is bracketed by wg_session_cache_activity_begin()
 * and _end(). That only marks the cache entry (loop time, no syscall, no
 * allocation); one flush timer per cache writes every marked entry to
 * wg:active in one wg_store_touch() batch each
 * sessions.idle.activity_interval: an entry with exchanges still open is
 * written with the flush's time on every flush, one whose exchanges ended
 * with the time of the last end. So a session is written at most once per
 * interval by this gateway. A failed batch is logged once per failure streak
 * and its marks are kept for the next flush; the entries themselves are the
 * bound (an entry with open exchanges or unwritten activity is never dropped
 * from the cache: entries live as long as the cache). */
#ifndef WG_PROXY_SESSION_CACHE_H
#define WG_PROXY_SESSION_CACHE_H

#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "common/config.h"
#include "common/list.h"
#include "common/log.h"
#include "common/session.h"

struct wg_session_cache; /* opaque */
struct wg_store;
struct wg_sess_entry;

/* How long after entering failed a session refuses wakes at once. */
#define WG_SESSION_CACHE_FAILED_COOLDOWN_MS (30 * 1000)
#define WG_SESSION_CACHE_HOLD_PER_SESSION_MAX 1024
#define WG_SESSION_CACHE_HOLD_TOTAL_MAX 10000
/* The part of a failed session's error kept for the waking page. */
#define WG_SESSION_CACHE_ERROR_MAX 512

enum wg_sess_status {
    WG_SESS_READY = 0,   /* running, with an address: proxy now */
    WG_SESS_PENDING,     /* being fetched from Redis: wait */
    WG_SESS_NOT_RUNNING, /* known and not running; view.state says which */
    WG_SESS_NOT_FOUND,   /* no such session */
    WG_SESS_UNAVAILABLE, /* Redis unreachable and nothing usable cached */
};

struct wg_sess_view {
    enum wg_sess_status status;
    enum wg_session_state state;  /* valid unless PENDING, NOT_FOUND or UNAVAILABLE */
    uint64_t gen;                 /* the access generation, valid with state */
    struct sockaddr_storage addr; /* READY: ip and port */
    socklen_t addr_len;
    char addr_text[64];
    /* READY: the container the entry is tied to ("" when the record names
     * none), and whether Redis confirms the entry now. Unconfirmed: only a
     * connection opened while it was confirmed may carry the request; for
     * unconfirmed_ms now. */
    char container_id[WG_SESSION_CONTAINER_ID_MAX + 1];
    bool confirmed;
    uint64_t unconfirmed_ms;
    int64_t failed_for_ms;       /* NOT_RUNNING in failed: time since it failed */
    const char *template_name;   /* the record's template ("" for "default"), or NULL while no
                                    read of the record has told it */
    struct wg_sess_entry *entry; /* private: READY, for wg_session_cache_activity_begin() */
    const char *error; /* NOT_RUNNING in failed: the record's error (valid until the callback
                          returns), or NULL while not read */
};

struct wg_sess_waiter {
    struct wg_list link;
    struct wg_sess_entry *entry; /* private */
    /* The session's entry changed; look again (wg_session_cache_lookup). The
     * waiter is already removed: wait again to keep waiting. */
    void (*changed)(struct wg_sess_waiter *w);
};

struct wg_session_cache_stats {
    _Atomic uint64_t lookups;
    _Atomic uint64_t fetches;
    _Atomic uint64_t wakes_sent;
    _Atomic uint64_t wakes_suppressed; /* probes and non-waking requests */
    _Atomic uint64_t held;             /* waiters now */
    _Atomic uint64_t hold_refused;     /* over the caps */
    _Atomic uint64_t state_messages;
    _Atomic uint64_t activity_open;    /* exchanges to sessions open now (streams included) */
    _Atomic uint64_t activity_batches; /* wg_store_touch() batches that succeeded */
    _Atomic uint64_t activity_touches; /* session activity entries written by them */
    _Atomic uint64_t activity_errors;  /* batches that failed (their marks were kept) */
    _Atomic uint64_t streams_open;     /* streams registered (wg_session_cache_stream_add) now */
    _Atomic uint64_t streams_ended;    /* streams told their session left running */
    _Atomic uint64_t versions_lost; /* records whose version went back after a resync (failover) */
};

/* store is borrowed and must outlive the cache. cfg->redis_url is used for
 * a subscriber connection of the cache's own; the flush timer of activity
 * is a handle on loop. */
int wg_session_cache_new(uv_loop_t *loop, const struct wg_config *cfg, struct wg_log *log,
                         struct wg_store *store, struct wg_session_cache **ret);
/* Waiters still registered are dropped without a call; activity not yet
 * written is dropped (no final flush). Every exchange must have ended its
 * activity before. The memory goes when the flush timer has closed, so the
 * loop must run on. NULL-safe. */
void wg_session_cache_free(struct wg_session_cache *s);

/* id must pass wg_session_id_valid(). port overrides the record's port when
 * non-zero (a route's port). Starts a fetch when the session is not cached. */
void wg_session_cache_lookup(struct wg_session_cache *s, const char *id, uint16_t port,
                             struct wg_sess_view *v);

/* Points a READY view at another port of its container (a named port of
 * the session's template), as a lookup with that port would have; other
 * views are left as they are. */
void wg_session_cache_view_port(struct wg_session_cache *s, struct wg_sess_view *v, uint16_t port);

/* Registers w on the session. Returns 0, or -ENOSPC over the hold caps. */
int wg_session_cache_wait(struct wg_session_cache *s, const char *id, struct wg_sess_waiter *w);
/* NULL-safe and idempotent. */
void wg_session_cache_unwait(struct wg_session_cache *s, struct wg_sess_waiter *w);

/* Asks the session's orchestrator to wake it. Repeats within a second are
 * coalesced into the one already sent. Returns 0, or -ENOTCONN when Redis is
 * unreachable. */
int wg_session_cache_wake(struct wg_session_cache *s, const char *id);
/* Counts a request that could have woken a session but was not allowed to. */
void wg_session_cache_note_suppressed(struct wg_session_cache *s);

/* An exchange proxied to the session of v (a READY view from
 * wg_session_cache_lookup(), taken in the same callback) begins: the session counts
 * as active until wg_session_cache_activity_end(). Returns the handle to give
 * back, or NULL when v has no entry (nothing to end then). Probes and status
 * requests must not call it. */
struct wg_sess_entry *wg_session_cache_activity_begin(struct wg_session_cache *s,
                                                      const struct wg_sess_view *v);
/* Ends what *handle began, marks the session active now, and sets *handle
 * to NULL. NULL-safe (handle or *handle), so it may be called from every
 * path that ends an exchange. */
void wg_session_cache_activity_end(struct wg_session_cache *s, struct wg_sess_entry **handle);

/* The exchange whose activity ended (wg_session_cache_activity_end) counts
 * again: a stream that carried use after a quiet spell. e is the handle
 * activity_begin() returned before (entries live as long as the cache).
 * Returns e. */
struct wg_sess_entry *wg_session_cache_activity_resume(struct wg_session_cache *s,
                                                       struct wg_sess_entry *e);

/* A stream proxied to a session (a WebSocket, a streamed response) is
 * told when its session leaves the states that keep streams (running,
 * draining, saving): the container is being stopped or paused, so the
 * client is better told now (a WebSocket close 1001, the end of a
 * response) than left hanging. */
struct wg_sess_stream {
    struct wg_list link;
    struct wg_sess_entry *entry; /* private */
    /* Already removed when called; may close the connection. */
    void (*left)(struct wg_sess_stream *st);
};
/* e: a READY view's entry (v->entry). NULL-safe on e (nothing happens). */
void wg_session_cache_stream_add(struct wg_session_cache *s, struct wg_sess_entry *e,
                                 struct wg_sess_stream *st);
/* NULL-safe and idempotent. */
void wg_session_cache_stream_remove(struct wg_session_cache *s, struct wg_sess_stream *st);

/* Called with the IP (text) a session's container had when it leaves it:
 * no longer running there, running elsewhere, or another container of the
 * session runs there now. */
typedef void wg_session_cache_addr_gone_fn(void *arg, const char *ip);
void wg_session_cache_on_addr_gone(struct wg_session_cache *s, wg_session_cache_addr_gone_fn *fn,
                                   void *arg);

/* True while the state channel is subscribed and its checks come back. */
bool wg_session_cache_connected(const struct wg_session_cache *s);
const struct wg_session_cache_stats *wg_session_cache_stats(const struct wg_session_cache *s);

#endif
