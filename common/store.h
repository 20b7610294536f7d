/* common/store.h - session records and their bus in Redis.
 *
 * Keys (ARCHITECTURE.md "Redis keys" has the full story):
 *
 *   wg:session:{id}  hash    the record; fields in common/session.h
 *   wg:sessions      set     every id with a record (listing without SCAN)
 *   wg:active        zset    id -> last activity (ms), for awake sessions only:
 *                            added on entering running, removed on entering
 *                            asleep, failed or destroyed (its score is then
 *                            kept in the record's last_active)
 *   wg:idle_short    zset    id -> the shortest idle tier override that is on
 *                            (idle_pause_after_ms / idle_stop_after_ms > 0), for
 *                            sessions that have one; kept by the create and
 *                            transition scripts, so the reaper learns the
 *                            widest idle range it must read with one ZRANGE
 *   wg:counts        hash    state -> number of sessions in it, kept by the
 *                            create and transition scripts (HINCRBY on
 *                            every move), so "sessions by state" costs one
 *                            HGETALL, never a scan; records written around
 *                            the scripts are not counted
 *   wg:transient     zset    id -> state_since (ms) while the session is in a
 *                            transient state (creating, starting, draining,
 *                            saving, stopping), kept by the create and
 *                            transition scripts: finding stuck sessions reads
 *                            only these, never every record
 *   wg:events        stream  capped (XADD MAXLEN ~ events_max): one entry per
 *                            transition {id, type=transition, from, to, at, v,
 *                            detail?} (from is "" on creation) and per other
 *                            event {id, type, at, detail?}
 *   wg:state         pub/sub one JSON message per write to a record:
 *                            {"id","state","v"[,"ip","port","gen","cid"]} (gen:
 *                            the access generation, a decimal string; cid: the
 *                            record's container_id)
 *   wg:check:{token} pub/sub a gateway's own channel: the loop time it
 *                            published, to prove its subscriber still
 *                            delivers (wg_store_check_publish)
 *   wg:wake:{host}   stream  wake/sleep/destroy commands for one host's
 *                            orchestrator, consumed with a consumer group
 *                            {session, op, at, from?, force?, now?}
 *   wg:lock:{id}     string  a random token, SET NX PX; released and extended
 *                            only by the holder (compare-and-delete/-pexpire)
 *   wg:host:{name}   string  an orchestrator's heartbeat (JSON), SET PX ttl
 *   wg:hosts         zset    every host that ever beat -> its last beat (ms)
 *   wg:lost_hosts    zset    hosts whose heartbeat expired -> when the sweep
 *                            saw it (ms), until the host beats again
 *   wg:hostload      hash    host -> sessions homed there, kept by the create,
 *                            transition and wake scripts (not the heartbeat)
 *   wg:host_sessions:{host}  set  ids homed on host (no scan to find them)
 *   wg:lost_todo:{host}      set  ids of a lost host still to move to lost,
 *                            popped by the sweep in bounded batches
 *
 * {id} and {host} stand for the literal value (these are not cluster hash
 * tags): ids follow wg_session_id_valid(), hosts wg_session_host_valid().
 *
 * The store borrows a struct wg_redis for its commands (several modules may
 * share one). Blocking reads of a wake stream need a connection of their own,
 * with a command timeout longer than the block time; wg_store_wake_read()
 * takes it as an argument.
 *
 * Calls. Every call that returns 0 runs its callback exactly once, never
 * inside the call; a call that returns an error runs nothing. In the
 * callback, res->status is:
 *   0                 success, as described at each call;
 *   WG_STORE_*        a documented outcome (positive), see below;
 *   -ENOENT           no such session;
 *   -EIO              Redis answered with an error; res->error has its text;
 *   -EBADMSG          a record or entry in Redis is garbled (res->error
 *                     names the field); it is never written back;
 *   -EPROTO           a reply had an unexpected shape;
 *   -E2BIG            more sessions than WG_STORE_LIST_MAX;
 *   -ETIMEDOUT, -ECONNRESET, -ENOTCONN   from common/redis;
 *   -ECANCELED        wg_store_free() ran, or the wg_redis was freed.
 * res->error is never NULL: "" on success, a reason to put in the caller's
 * log line otherwise. Everything res points to is valid only inside the
 * callback: copy what you keep (wg_session_copy()). The callback may call
 * wg_store_free().
 *
 * Time. Stamps (state_since, created, event "at") come from the caller's wall
 * clock (opts.clock_ms, wg_clock_wall_ms() by default), in ms since the epoch.
 *
 * Logging: none above debug; the caller logs outcomes. */
#ifndef WG_COMMON_STORE_H
#define WG_COMMON_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "common/session.h"

struct wg_log;
struct wg_redis;
struct wg_store; /* opaque */
struct wg_store_res;

#define WG_STORE_KEY_SESSION_PREFIX "wg:session:"
#define WG_STORE_KEY_SESSIONS "wg:sessions"
#define WG_STORE_KEY_ACTIVE "wg:active"
#define WG_STORE_KEY_TRANSIENT "wg:transient"
#define WG_STORE_KEY_IDLE_SHORT "wg:idle_short"
#define WG_STORE_KEY_COUNTS "wg:counts"
#define WG_STORE_KEY_EVENTS "wg:events"
#define WG_STORE_CHANNEL_STATE "wg:state"
/* wg:check:{token}: a subscriber's own channel, to prove its subscription
 * still delivers (wg_store_check_publish). */
#define WG_STORE_CHANNEL_CHECK "wg:check:"
#define WG_STORE_KEY_WAKE_PREFIX "wg:wake:"
#define WG_STORE_KEY_LOCK_PREFIX "wg:lock:"
#define WG_STORE_KEY_HOST_PREFIX "wg:host:"
#define WG_STORE_KEY_HOSTS "wg:hosts"
#define WG_STORE_KEY_LOST_HOSTS "wg:lost_hosts"
#define WG_STORE_KEY_HOSTLOAD "wg:hostload"
#define WG_STORE_KEY_HOST_SESSIONS_PREFIX "wg:host_sessions:"
#define WG_STORE_KEY_LOST_TODO_PREFIX "wg:lost_todo:"
/* Redis's own time (ms) of the last sweep, and until when no host is
 * judged (a gap in the sweeps longer than a TTL: see wg_store_host_sweep). */
#define WG_STORE_KEY_SWEEP_AT "wg:sweep_at"
#define WG_STORE_KEY_SWEEP_HOLD "wg:sweep_hold"

#define WG_STORE_EVENTS_MAX 10000 /* default approximate cap of wg:events */
#define WG_STORE_WAKE_MAX 10000   /* default approximate cap of each wg:wake:{host} */
#define WG_STORE_LIST_MAX 100000  /* sessions wg_store_list() accepts */
#define WG_STORE_BATCH_MAX 1000   /* entries per wake read/claim, ids per range */
#define WG_STORE_DETAIL_MAX 16384 /* bytes of an event's detail JSON */
#define WG_STORE_TOKEN_LEN 32     /* lock tokens: 128 random bits in hex */
#define WG_STORE_STREAM_ID_MAX 41 /* "<ms>-<seq>", both up to 20 digits */
#define WG_STORE_NAME_MAX 63      /* group, consumer and requester names */

/* Positive outcomes. */
enum {
    WG_STORE_EXISTS = 1,   /* create: the id existed, res->rec is that record (200, not
                            * 201); wake_group: the group existed */
    WG_STORE_REJECTED = 2, /* transition/update/delete: the current state is not one the
                            * move allows; res->rec is the current record, unchanged, and
                            * no event was appended */
    WG_STORE_BUSY = 3,     /* lock_acquire: someone else holds the lock */
    WG_STORE_NOT_HELD = 4, /* lock_release/extend: not held with that token (expired,
                            * or another holder's); nothing changed */
    WG_STORE_ACTIVE = 5,   /* transition_idle: the session was active after the cutoff;
                            * res->rec is the current record (last_active says when),
                            * nothing was written */
    WG_STORE_FENCED = 6,   /* transition/update/delete with a fence: the record's host or
                            * epoch is not the writer's (it was re-placed); res->rec is
                            * the current record, nothing was written */
    WG_STORE_UNPLACED = 7, /* create (placed) / wake_add of a lost session: no live host
                            * fits; res->error says why (no live host, every host full,
                            * no host with the labels); nothing was written */
};

struct wg_store_opts {
    /* An orchestrator's store: every transition, update and delete through
     * it is fenced to records homed on this host (see WG_STORE_FENCED).
     * NULL: no fence (gateways, the admin API). */
    const char *fence_host;
    /* Called (before the call's own callback) for every write this store
     * had fenced, so the owner logs each one once; may be NULL. */
    void (*on_fenced)(const struct wg_store_res *res, void *arg);
    void *on_fenced_arg;
    uint32_t events_max; /* 0: WG_STORE_EVENTS_MAX */
    uint32_t wake_max;   /* 0: WG_STORE_WAKE_MAX */
    /* Wall clock in ms since the epoch; NULL: wg_clock_wall_ms(). */
    int64_t (*clock_ms)(void *arg);
    void *clock_arg;
    struct wg_log *log; /* debug lines only; may be NULL */
};

struct wg_store_idle {
    char id[WG_SESSION_ID_MAX + 1];
    int64_t last_active; /* ms */
};

enum wg_wake_op { WG_WAKE_OP_WAKE = 0, WG_WAKE_OP_SLEEP, WG_WAKE_OP_DESTROY };

/* One command of a wake stream. */
struct wg_wake_cmd {
    char entry_id[WG_STORE_STREAM_ID_MAX + 1]; /* set by the parsers, ignored by wake_add */
    char session[WG_SESSION_ID_MAX + 1];
    enum wg_wake_op op;
    bool force;                       /* sleep/destroy without the save */
    bool now;                         /* sleep: save and stop, whatever the activity */
    int64_t at;                       /* ms; wake_add stamps it when 0 */
    char from[WG_STORE_NAME_MAX + 1]; /* who asked (a gateway name); may be "" */
    bool bad; /* parsers: garbled or deleted entry; ack it, do not act on it */
};

/* A wg:state message as published. */
struct wg_state_msg {
    char id[WG_SESSION_ID_MAX + 1];
    enum wg_session_state state;
    char ip[WG_SESSION_IP_MAX + 1]; /* "" when absent */
    uint16_t port;                  /* 0 when absent */
    uint64_t version;
    uint64_t gen; /* the record's access generation; 0 when absent */
    char container_id[WG_SESSION_CONTAINER_ID_MAX + 1]; /* "cid"; "" when absent */
};

/* What a reaper pass reads of one idle candidate (wg_store_reap_scan()). */
struct wg_store_reap {
    char id[WG_SESSION_ID_MAX + 1];
    int64_t last_active; /* its wg:active score, ms */
    enum wg_session_state state;
    char host[WG_SESSION_HOST_MAX + 1];
    bool has_stop_after, has_pause_after; /* per-session overrides */
    uint64_t stop_after_ms, pause_after_ms;
    int64_t save_at; /* last save, 0: never */
    bool save_ok;
    int64_t state_since;
};

struct wg_store_activity {
    const char *id;
    int64_t at_ms;
};

/* What one lost-host sweep saw and did (wg_store_host_sweep()). */
struct wg_store_sweep {
    long long hosts;      /* members of wg:hosts */
    long long live;       /* of them, with a heartbeat */
    long long lost;       /* members of wg:lost_hosts after the sweep */
    long long newly_lost; /* hosts this sweep marked lost */
    long long moved;      /* sessions this sweep moved to lost */
    long long left;       /* sessions of lost hosts still to move (another sweep now) */
    long long held_ms;    /* > 0: judged nothing, hosts get this long to beat again */
};

/* Placement of a new session (wg_store_create_placed()). */
struct wg_store_place {
    /* "": choose a live host (least loaded that has every label); else
     * this host, which must be live (an operator's choice; not checked
     * against max_sessions nor labels). */
    const char *host;
    const char *labels_json; /* {"k":"v",...} a host must have; NULL or "" for none */
    bool pin;                /* stored: a lost host's wake waits for the host */
    /* When no host at all is live: this one (a gateway that runs an
     * orchestrator itself, alive since it answers, whose first heartbeat
     * may not be written yet); NULL: refused with "no live host". */
    const char *fallback_host;
};

/* What a call produced; which members are set is said at each call. */
struct wg_store_res {
    int status;
    const char *error;
    const struct wg_session *rec;
    const char *event_id;          /* stream entry id, "" when none */
    const struct wg_session *recs; /* list: sorted by id */
    size_t n_recs;
    size_t n_bad; /* list, range_idle: entries skipped as garbled */
    const struct wg_store_idle *idle;
    size_t n_idle;
    const struct wg_wake_cmd *wake;
    size_t n_wake;
    const struct wg_store_reap *reap; /* reap_scan */
    size_t n_reap;
    const long long *state_counts; /* counts: WG_SESSION_STATE_COUNT entries */
    const char *next_id;           /* wake_claim: where the next claim starts; "0-0" when done */
    long long count;
    const char *host;                   /* wake_add: the stream's host; "" otherwise */
    long long homed;                    /* host_beat: the host\'s wg:hostload count */
    const struct wg_store_sweep *sweep; /* host_sweep */
};

typedef void wg_store_cb(const struct wg_store_res *res, void *arg);

/* redis is borrowed and must outlive s or be freed first (then pending calls
 * end with -ECANCELED). opts may be NULL. Returns 0 with *ret_store set, or
 * -EINVAL, -ENOMEM. */
int wg_store_new(struct wg_redis *redis, const struct wg_store_opts *opts,
                 struct wg_store **ret_store);

/* NULL-safe. Every pending callback runs with -ECANCELED before this returns;
 * replies that arrive later are dropped. May be called from a callback. */
void wg_store_free(struct wg_store *s);

/* ---- records ----------------------------------------------------------------------------------
 */

/* Get-or-create, atomically: when wg:session:{id} does not exist it is
 * written in state creating with created = state_since = now, v = 1, and
 * fields (host, image, port, idle overrides...; NULL for none); the id joins
 * wg:sessions, a transition event from "" to creating is appended (detail:
 * JSON text or NULL) and published. Status 0: created (201), res->rec and
 * res->event_id set. WG_STORE_EXISTS: nothing written, res->rec is the
 * existing record (200). Returns 0, or -EINVAL for a bad id, field or detail
 * (not JSON, or over WG_STORE_DETAIL_MAX), or -ENOMEM. */
int wg_store_create(struct wg_store *s, const char *id, const struct wg_session_update *fields,
                    const char *detail_json, wg_store_cb *cb, void *arg);

/* res->rec, with last_active the later of the record's and wg:active's.
 * -ENOENT when absent. */
int wg_store_get(struct wg_store *s, const char *id, wg_store_cb *cb, void *arg);

/* Every record: SMEMBERS wg:sessions, then one pipelined HGETALL per id and
 * one ZMSCORE. res->recs/n_recs sorted by id; ids whose record vanished
 * meanwhile are left out; garbled ones are counted in n_bad. */
int wg_store_list(struct wg_store *s, wg_store_cb *cb, void *arg);

/* The one way a state changes. One Lua script, atomically: reads the current
 * state; accepts the move only when it is in from_mask (WG_SESSION_BIT()s;
 * WG_SESSION_ANY for "whatever it is") AND the table allows current -> to
 * (wg_session_allowed_from()); then writes state, state_since = now and
 * fields, bumps v, keeps wg:active (see the keys), appends the transition
 * event with detail_json (JSON text or NULL) to wg:events and publishes on
 * wg:state. A move to destroyed deletes the record instead (see
 * wg_store_delete()). Status 0: res->rec is the new record, res->event_id the
 * event. WG_STORE_REJECTED: nothing was written; res->rec is the current
 * record, whose state says why. -ENOENT: no record. WG_SF_RESTARTS_INCR in
 * fields adds one to restarts in the same script.
 * Returns 0, or -EINVAL (bad id, to, field or detail; or no state in
 * from_mask can move to `to`), -ENOMEM. */
int wg_store_transition(struct wg_store *s, const char *id, unsigned from_mask,
                        enum wg_session_state to, const struct wg_session_update *fields,
                        const char *detail_json, wg_store_cb *cb, void *arg);

/* wg_store_transition(), refused with WG_STORE_ACTIVE (nothing written)
 * when the session's wg:active score is later than idle_cutoff_ms: someone
 * used it after the caller decided it was idle. The check and the move are
 * one script, so a touch lands either before (refused) or after the move.
 * idle_cutoff_ms < 0: no check. A move to running from draining or saving
 * (a cancelled sleep) keeps the wg:active score: cancelling is not use. */
int wg_store_transition_idle(struct wg_store *s, const char *id, unsigned from_mask,
                             enum wg_session_state to, int64_t idle_cutoff_ms,
                             const struct wg_session_update *fields, const char *detail_json,
                             wg_store_cb *cb, void *arg);

/* Writes fields without a move, when the current state is in state_mask
 * (e.g. the container id learnt while starting). Bumps v and publishes on
 * wg:state (ip or port may have changed); appends no event. Outcomes as
 * wg_store_transition(). */
int wg_store_update(struct wg_store *s, const char *id, unsigned state_mask,
                    const struct wg_session_update *fields, wg_store_cb *cb, void *arg);

/* The move to destroyed: when the state is in from_mask (any state may move
 * to destroyed; a record whose state is garbled is accepted too when
 * from_mask is WG_SESSION_ANY), deletes wg:session:{id} and its wg:sessions
 * and wg:active entries, appends the event and publishes. Status 0: res->rec
 * is the last record, in state destroyed. The id may then be created anew. */
int wg_store_delete(struct wg_store *s, const char *id, unsigned from_mask, const char *detail_json,
                    wg_store_cb *cb, void *arg);

/* ---- activity ---------------------------------------------------------------------------------
 */

/* Records activity for many sessions: ZADD wg:active XX GT CH, up to 256
 * sessions per command, pipelined. XX: only awake sessions are in wg:active,
 * so a late touch never resurrects a sleeping or deleted one; GT: clocks of
 * several gateways never move activity back. res->count: entries changed.
 * Returns -EINVAL if any id is invalid or n is 0 (nothing is sent). */
int wg_store_touch(struct wg_store *s, const struct wg_store_activity *acts, size_t n,
                   wg_store_cb *cb, void *arg);

/* Awake sessions idle since cutoff_ms or earlier (score <= cutoff), oldest
 * first: ZRANGEBYSCORE wg:active -inf cutoff WITHSCORES LIMIT offset limit.
 * limit is 1..WG_STORE_BATCH_MAX. res->idle/n_idle; invalid members are
 * skipped and counted in n_bad. */
int wg_store_range_idle(struct wg_store *s, int64_t cutoff_ms, size_t offset, size_t limit,
                        wg_store_cb *cb, void *arg);

/* Sessions per state, from wg:counts (HGETALL): res->state_counts. */
int wg_store_counts(struct wg_store *s, wg_store_cb *cb, void *arg);

/* One reaper pass's read, touching only idle sessions: ZRANGE
 * wg:idle_short 0 0 WITHSCORES (the shortest per-session override); then,
 * with tier = the smaller of tier_ms (the shortest configured tier; 0: none)
 * and that override, ZRANGEBYSCORE wg:active -inf now-tier WITHSCORES LIMIT
 * offset limit; then one pipelined HMGET per member (state, host, idle
 * overrides, last save, state_since). Commands: 2 + the members in range (1
 * when no tier is on). res->reap/n_reap, oldest first (records deleted
 * meanwhile are left out, garbled ones counted in n_bad); res->count is the
 * cutoff used (ms), -1 when no tier is on. Whether each one is due is the
 * caller's decision (its own host, its own overrides). */
int wg_store_reap_scan(struct wg_store *s, uint64_t tier_ms, size_t offset, size_t limit,
                       wg_store_cb *cb, void *arg);

/* Sessions in a transient state since cutoff_ms or earlier, oldest first:
 * ZRANGEBYSCORE wg:transient -inf cutoff WITHSCORES LIMIT offset limit.
 * res->idle/n_idle, with last_active holding state_since. */
int wg_store_range_transient(struct wg_store *s, int64_t cutoff_ms, size_t offset, size_t limit,
                             wg_store_cb *cb, void *arg);

/* ---- events -----------------------------------------------------------------------------------
 */

/* Publishes stamp (a decimal u64) on wg:check:{token}, token being
 * WG_STORE_TOKEN_LEN hex digits (wg_store_lock_token()). A subscriber of
 * that channel that gets it back knows that everything published before
 * the call has reached it: Redis delivers to a subscriber in the order it
 * ran the PUBLISH commands. */
int wg_store_check_publish(struct wg_store *s, const char *token, uint64_t stamp, wg_store_cb *cb,
                           void *arg);

/* Appends a non-transition event {id, type, at, detail?} to wg:events (hook
 * results and the like). type: ^[a-z][a-z0-9_.]{0,31}$, not "transition".
 * res->event_id. */
int wg_store_event_add(struct wg_store *s, const char *id, const char *type,
                       const char *detail_json, wg_store_cb *cb, void *arg);

/* ---- locks ------------------------------------------------------------------------------------
 */

/* Fills out with WG_STORE_TOKEN_LEN random hex digits and a NUL. Returns 0
 * or -errno from getrandom(). */
int wg_store_lock_token(char out[WG_STORE_TOKEN_LEN + 1]);

/* SET wg:lock:{id} token NX PX ttl_ms. Status 0: held by token until ttl_ms
 * pass; WG_STORE_BUSY: held by someone else. token: 1..64 of [A-Za-z0-9_-].
 * ttl_ms > 0. */
int wg_store_lock_acquire(struct wg_store *s, const char *id, const char *token, uint32_t ttl_ms,
                          wg_store_cb *cb, void *arg);
/* Deletes the lock if it holds token. Status 0 or WG_STORE_NOT_HELD. */
int wg_store_lock_release(struct wg_store *s, const char *id, const char *token, wg_store_cb *cb,
                          void *arg);
/* Resets the lock's TTL to ttl_ms if it holds token. Status 0 or
 * WG_STORE_NOT_HELD. */
int wg_store_lock_extend(struct wg_store *s, const char *id, const char *token, uint32_t ttl_ms,
                         wg_store_cb *cb, void *arg);

/* ---- wake streams -----------------------------------------------------------------------------
 */

/* Names (group, consumer, requester): ^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$. */
bool wg_store_name_valid(const char *s);
const char *wg_wake_op_name(enum wg_wake_op op);

/* XGROUP CREATE wg:wake:{host} group 0 MKSTREAM: from the start of the
 * stream, so wakes sent before the first orchestrator ran are not lost
 * (consumers skip entries older than they care for, by `at`). Status 0:
 * created; WG_STORE_EXISTS: it was there. */
int wg_store_wake_group(struct wg_store *s, const char *host, const char *group, wg_store_cb *cb,
                        void *arg);

/* XADD wg:wake:{H} MAXLEN ~ wake_max * session .. op .. at .. [from ..]
 * [force 1] [now 1], as one script that picks H from the record: its host
 * (host, the caller's guess, only when the record has none or is absent).
 * A wake of a session in state lost that is not pinned re-places it first
 * in the same script: a live host is chosen as for a new session (its old
 * host excluded), the record moves there (host, epoch + 1, container_id and
 * ip cleared, wg:hostload and wg:host_sessions moved) and lost -> asleep
 * with a `replaced` event, published; then the wake goes to the new host.
 * res->event_id is the entry id, res->host the stream's host.
 * WG_STORE_UNPLACED: a lost session and no live host fits; nothing queued. */
int wg_store_wake_add(struct wg_store *s, const char *host, const struct wg_wake_cmd *cmd,
                      wg_store_cb *cb, void *arg);

/* XREADGROUP GROUP group consumer COUNT count [BLOCK block_ms] STREAMS key
 * (pending ? 0 : >), sent on `blocking` (a wg_redis of the caller's, not the
 * store's when block_ms > 0; its command timeout must exceed block_ms).
 * block_ms 0 does not block. count is 1..WG_STORE_BATCH_MAX. res->wake/n_wake
 * (0 when the block timed out); entries flagged bad must still be acked. */
int wg_store_wake_read(struct wg_store *s, struct wg_redis *blocking, const char *host,
                       const char *group, const char *consumer, size_t count, uint32_t block_ms,
                       bool pending, wg_store_cb *cb, void *arg);

/* XACK wg:wake:{host} group id... (n 1..WG_STORE_BATCH_MAX). res->count:
 * entries acknowledged. */
int wg_store_wake_ack(struct wg_store *s, const char *host, const char *group,
                      const char *const *entry_ids, size_t n, wg_store_cb *cb, void *arg);

/* XAUTOCLAIM wg:wake:{host} group consumer min_idle_ms start COUNT count:
 * takes over entries another consumer read but did not ack (it crashed).
 * start: "0-0" at first, then res->next_id until that is "0-0" again.
 * res->wake/n_wake, res->next_id. */
int wg_store_wake_claim(struct wg_store *s, const char *host, const char *group,
                        const char *consumer, uint64_t min_idle_ms, const char *start, size_t count,
                        wg_store_cb *cb, void *arg);

/* ---- hosts and placement (common/store_place.c) ------------------------------------------------
 */

/* Get-or-create as wg_store_create(), placing the session in the same
 * script: the host (place->host, or the least loaded live host that has
 * every label: live = its wg:host:{name} exists and it is not in
 * wg:lost_hosts; fits = its homed count in wg:hostload is below its
 * heartbeat's max_sessions, or that is 0; order: hosts whose engine
 * answers first (a host's orchestrator beats on while its engine is away:
 * its sessions wake once it is back), then homed/max (homed when no max),
 * then fewer running, then the name), epoch 1, pin and labels are
 * written with the record and the host's count raised at once, so two
 * gateways never fill one last slot twice. fields must not set the host.
 * Status 0 / WG_STORE_EXISTS as wg_store_create(); WG_STORE_UNPLACED:
 * nothing written, res->error says why. */
int wg_store_create_placed(struct wg_store *s, const char *id,
                           const struct wg_session_update *fields,
                           const struct wg_store_place *place, const char *detail_json,
                           wg_store_cb *cb, void *arg);

/* An orchestrator's heartbeat, one script: SET wg:host:{name} json PX
 * ttl_ms, SADD wg:hosts; when the host was in wg:lost_hosts it leaves it
 * (event {type=host_back, host}) and res->count is 1, else 0. res->homed:
 * the host's wg:hostload count (sessions homed there). */
int wg_store_host_beat(struct wg_store *s, const char *name, const char *json, uint64_t ttl_ms,
                       wg_store_cb *cb, void *arg);

/* The lost-host sweep, one idempotent script any orchestrator may run: a
 * host of wg:hosts without a heartbeat that is not yet lost joins
 * wg:lost_hosts (event {type=host_lost, host, sessions}) and the ids homed
 * there are queued in wg:lost_todo:{host}; then up to batch queued sessions
 * that are still homed there move to lost (each a normal transition: v
 * bumped, event, published). The store's own fence host (an orchestrator
 * sweeping) is never marked lost: it is alive, since it sweeps.
 * res->sweep says what it saw and did. */
int wg_store_host_sweep(struct wg_store *s, size_t batch, uint64_t ttl_ms, wg_store_cb *cb,
                        void *arg);

/* The records of a host written before placement kept its sets: ids (n
 * up to WG_STORE_LIST_MAX) whose record names host `name` join
 * wg:host_sessions:{name}, members whose record is gone or elsewhere
 * leave it, and wg:hostload's count of the host is set to its size (so it
 * heals). Sent in scripts of up to WG_STORE_BATCH_MAX ids, pipelined.
 * res->count: ids added. n may be 0 (only the pruning and the count). */
int wg_store_host_adopt(struct wg_store *s, const char *name, const char *const *ids, size_t n,
                        wg_store_cb *cb, void *arg);

/* Reply parsers, for callers that send the commands themselves. They fill at
 * most max entries of out and set *ret_n. A garbled entry (bad fields, or
 * deleted from the stream: nil fields) is returned with bad = true; a reply
 * of the wrong shape, or more than max entries, is -EPROTO. */
int wg_store_parse_wake_entries(const redisReply *entries, struct wg_wake_cmd *out, size_t max,
                                size_t *ret_n);
/* A nil reply (BLOCK timed out) gives 0 entries. */
int wg_store_parse_xreadgroup(const redisReply *reply, struct wg_wake_cmd *out, size_t max,
                              size_t *ret_n);
/* next_id receives the cursor (WG_STORE_STREAM_ID_MAX + 1 bytes). */
int wg_store_parse_xautoclaim(const redisReply *reply, char *next_id, struct wg_wake_cmd *out,
                              size_t max, size_t *ret_n);

/* Parses a wg:state message. Returns 0 or -EBADMSG. */
int wg_store_parse_state_msg(const char *data, size_t len, struct wg_state_msg *ret_msg);

#endif
