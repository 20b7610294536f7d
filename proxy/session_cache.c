/* proxy/session_cache.c - see session_cache.h. */
#include "proxy/session_cache.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/redis.h"
#include "common/store.h"

#define BUCKETS 16384
/* Entries at most; past it unknown ids are refused rather than cached, so a
 * spray of random ids cannot grow memory without bound. Entries are never
 * freed while the cache lives: exchanges hold pointers to them for their
 * activity (an eviction would have to skip entries with act_listed or
 * act_open, and any in the batch in flight). */
#define ENTRIES_MAX 200000
/* How long "no such session" is believed before asking again. */
#define NOT_FOUND_TTL_MS 1000
#define WAKE_REPEAT_MS 1000
/* After a resubscription, how long a running session whose record is missing
 * is still served: Redis may have restarted empty, and the orchestrator
 * re-adopts running containers within moments. */
#define RESUBSCRIBE_GRACE_MS 10000

struct wg_sess_entry {
    struct wg_sess_entry *next;
    char id[WG_SESSION_ID_MAX + 1];
    bool known; /* a fetch or a state message filled it */
    bool fetching;
    bool not_found;
    bool stale;               /* messages may have been missed: fetch again on next use, and
                               * believe the next read or message whatever its version (Redis
                               * may have lost its data and numbered records anew) */
    uint64_t fetch_failed_ms; /* loop time the last fetch failed, 0: it did not */
    enum wg_session_state state;
    char ip[WG_SESSION_IP_MAX + 1];
    char container_id[WG_SESSION_CONTAINER_ID_MAX + 1]; /* "" when the record names none */
    uint16_t port;
    char host[WG_SESSION_HOST_MAX + 1];
    uint64_t version;
    uint64_t gen; /* the record's access generation (revokes replace it) */
    /* The record's template, from the last read: it is fixed for the
     * record's life, and state messages do not carry it. */
    char template_name[WG_SESSION_TEMPLATE_MAX + 1];
    bool template_known;
    uint64_t state_at_ms; /* loop time the state was learnt */
    int64_t failed_since; /* loop ms the entry entered failed */
    uint64_t fetched_at_ms;
    uint64_t last_wake_ms;
    bool woken;
    struct wg_list waiters;
    unsigned nwaiters;
    /* activity (see session_cache.h) */
    struct wg_list act_link; /* on s->act_list while act_listed */
    bool act_listed;         /* act_open > 0 or act_dirty */
    bool act_dirty;          /* act_ms not written yet */
    unsigned act_open;       /* exchanges open now */
    uint64_t act_ms;         /* loop time of the last activity */
    struct wg_list streams;  /* struct wg_sess_stream */
    char *error;             /* in failed: the record's error (the waking page says it) */
};

/* The batch of activity in flight; outlives the cache like struct pending. */
struct act_flush {
    struct wg_session_cache *s;
    size_t n;
    struct {
        struct wg_sess_entry *e;
        uint64_t at; /* loop time written */
    } items[];
};

/* A callback context that outlives the cache: a store callback may run after
 * wg_session_cache_free(), and then finds s == NULL. */
struct pending {
    struct wg_list link;
    struct wg_session_cache *s;
    uint64_t sub_gen; /* the cache's subscriptions when the read was sent */
    char id[WG_SESSION_ID_MAX + 1];
};

struct wg_session_cache {
    uv_loop_t *loop;
    const struct wg_config *cfg;
    struct wg_log *log;
    struct wg_store *store;
    struct wg_redis *sub;
    bool sub_up;
    uint64_t down_since_ms;
    uint64_t resubscribed_ms; /* loop time of the last (re)subscription */
    uint64_t sub_gen;         /* (re)subscriptions so far */
    char from[WG_STORE_NAME_MAX + 1];
    struct wg_sess_entry *table[BUCKETS];
    size_t nentries;
    struct wg_list pending; /* struct pending, for fetches and wakes in flight */
    wg_session_cache_addr_gone_fn *addr_gone;
    void *addr_gone_arg;
    struct wg_session_cache_stats stats;
    /* activity */
    uv_timer_t act_timer;
    struct wg_list act_list;           /* entries to write on the next flush */
    size_t act_listed;                 /* entries on it */
    struct act_flush *act_inflight;    /* NULL when no batch is out */
    struct wg_store_activity *act_buf; /* reused by every flush */
    size_t act_cap;
    bool act_failing; /* the last batch failed: log the next failure only after a success */
    /* checks of the state channel (see session_cache.h) */
    uv_timer_t check_timer;
    char check_token[WG_STORE_TOKEN_LEN + 1]; /* our channel: wg:check:{token} */
    uint64_t confirmed_ms; /* loop time: all published before it has reached us */
    bool silent;           /* subscribed, but no check came back within state_timeout */
    bool check_inflight;
    uint64_t check_sent_ms;       /* loop time the check in flight went out */
    uint64_t check_unanswered_ms; /* the oldest check Redis took whose message has not come
                                     back (until confirmed_ms passes it) */
    uint64_t check_every_ms;
    uint64_t check_tick_ms; /* loop time of the last tick */
    bool refetch_due;       /* a read failed while requests waited for it */
    int handles;            /* timers open; the memory goes with the last close */
};

static uint64_t now_ms(const struct wg_session_cache *s)
{
    return uv_now(s->loop);
}

/* Whether the state channel delivers now: subscribed, no check of ours
 * sent redis.state_timeout ago or more is still out, and something was
 * confirmed within three times that (whatever kept checks from going out:
 * the command connection reconnecting after the subscriber, say). A check
 * is judged from when it was sent, so a subscriber that came back before
 * the command connection is not taken for a silent one. Otherwise entries
 * are unconfirmed. */
static bool checks_current(const struct wg_session_cache *s, uint64_t now)
{
    uint64_t t = s->cfg->redis_state_timeout_ms, oldest = 0;

    if (!s->sub_up)
        return false;
    if (s->check_unanswered_ms > s->confirmed_ms)
        oldest = s->check_unanswered_ms;
    else if (s->check_inflight && s->check_sent_ms > s->confirmed_ms)
        oldest = s->check_sent_ms;
    if (oldest != 0 && now - oldest >= t)
        return false;
    return now - s->confirmed_ms < 3 * t;
}

/* Once judged silent, the channel is live again only when a check comes
 * back (on_check_msg), not because time passed. */
static bool channel_live(const struct wg_session_cache *s, uint64_t now)
{
    return !s->silent && checks_current(s, now);
}

static unsigned hash_id(const char *id)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % BUCKETS;
}

static struct wg_sess_entry *find(struct wg_session_cache *s, const char *id)
{
    for (struct wg_sess_entry *e = s->table[hash_id(id)]; e; e = e->next) {
        if (strcmp(e->id, id) == 0)
            return e;
    }
    return NULL;
}

static struct wg_sess_entry *create(struct wg_session_cache *s, const char *id)
{
    if (s->nentries >= ENTRIES_MAX)
        return NULL;
    struct wg_sess_entry *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    snprintf(e->id, sizeof(e->id), "%s", id);
    wg_list_init(&e->waiters);
    wg_list_init(&e->act_link);
    wg_list_init(&e->streams);
    unsigned h = hash_id(id);
    e->next = s->table[h];
    s->table[h] = e;
    s->nentries++;
    return e;
}

/* Tells every waiter of e to look again. A waiter may wait again from its
 * callback: the list is detached first. */
static void notify(struct wg_session_cache *s, struct wg_sess_entry *e)
{
    struct wg_list todo;
    wg_list_init(&todo);
    if (wg_list_empty(&e->waiters))
        return;
    /* Splice e->waiters into todo. */
    todo.next = e->waiters.next;
    todo.prev = e->waiters.prev;
    todo.next->prev = &todo;
    todo.prev->next = &todo;
    wg_list_init(&e->waiters);
    s->stats.held -= e->nwaiters;
    e->nwaiters = 0;
    while (!wg_list_empty(&todo)) {
        struct wg_sess_waiter *w = wg_container_of(todo.next, struct wg_sess_waiter, link);
        wg_list_remove(&w->link);
        w->entry = NULL;
        w->changed(w);
    }
}

static void set_state(struct wg_session_cache *s, struct wg_sess_entry *e,
                      enum wg_session_state state)
{
    if (state == WG_SESSION_FAILED && (e->state != WG_SESSION_FAILED || !e->known))
        e->failed_since = (int64_t)now_ms(s);
    if (state != e->state)
        e->woken = false;
    if (state != WG_SESSION_FAILED) {
        free(e->error);
        e->error = NULL;
    }
    e->state = state;
    e->state_at_ms = now_ms(s);
    e->known = true;
}

/* The states in which a session's container still serves its streams. */
#define STREAMS_KEPT                                                                               \
    (WG_SESSION_BIT(WG_SESSION_RUNNING) | WG_SESSION_BIT(WG_SESSION_DRAINING) |                    \
     WG_SESSION_BIT(WG_SESSION_SAVING))

/* Tells every stream of e that its session left; each may close its
 * connection (and so remove itself): the list is detached first. */
static void streams_left(struct wg_session_cache *s, struct wg_sess_entry *e)
{
    struct wg_list todo;
    if (wg_list_empty(&e->streams))
        return;
    todo.next = e->streams.next;
    todo.prev = e->streams.prev;
    todo.next->prev = &todo;
    todo.prev->next = &todo;
    wg_list_init(&e->streams);
    while (!wg_list_empty(&todo)) {
        struct wg_sess_stream *st = wg_container_of(todo.next, struct wg_sess_stream, link);
        wg_list_remove(&st->link);
        wg_list_init(&st->link);
        st->entry = NULL;
        s->stats.streams_open--;
        s->stats.streams_ended++;
        st->left(st);
    }
}

/* Where the session is now: state, address and container. A container that
 * left its address (stopped, moved, gone, replaced) leaves pooled
 * connections to a dead or reused address: the proxy is told to drop them.
 * Streams are told when the session leaves the states that serve them. */
static void place(struct wg_session_cache *s, struct wg_sess_entry *e, enum wg_session_state state,
                  const char *ip, const char *container_id)
{
    bool was_there = e->known && e->state == WG_SESSION_RUNNING && e->ip[0];
    bool moved = state != WG_SESSION_RUNNING || strcmp(ip, e->ip) != 0 ||
                 strcmp(container_id, e->container_id) != 0;
    bool streams_go = !(WG_SESSION_BIT(state) & STREAMS_KEPT);
    if (was_there && moved && s->addr_gone != NULL)
        s->addr_gone(s->addr_gone_arg, e->ip);
    set_state(s, e, state);
    snprintf(e->ip, sizeof(e->ip), "%s", ip);
    snprintf(e->container_id, sizeof(e->container_id), "%s", container_id);
    if (streams_go)
        streams_left(s, e);
}

static struct pending *pending_new(struct wg_session_cache *s, const char *id)
{
    struct pending *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->s = s;
    p->sub_gen = s->sub_gen;
    snprintf(p->id, sizeof(p->id), "%s", id);
    wg_list_push_back(&s->pending, &p->link);
    return p;
}

/* Returns the cache, or NULL when it is gone; frees p either way. */
static struct wg_session_cache *pending_end(struct pending *p)
{
    struct wg_session_cache *s = p->s;
    if (s != NULL)
        wg_list_remove(&p->link);
    free(p);
    return s;
}

/* A read or message after a resubscription carries a version lower than the
 * one held: Redis lost writes (a failover promoted a replica that had not
 * received them, or it restarted from an older save). What Redis says now is
 * the truth from here on; the orchestrator reconciles the record with Docker
 * after its own reconnect. Said once per session, with both versions. */
static void version_went_back(struct wg_session_cache *s, const struct wg_sess_entry *e,
                              uint64_t now_v, const char *how)
{
    s->stats.versions_lost++;
    WG_WARN(s->log, "sessions",
            "session state went back after a Redis resync, lost in failover; taking Redis's",
            "session=%s old_v=%" PRIu64 " new_v=%" PRIu64 " old_state=%s seen_by=%s", e->id,
            e->version, now_v, wg_session_state_name(e->state), how);
}

static void fetch(struct wg_session_cache *s, struct wg_sess_entry *e);

/* What a read says of the session, into its entry. */
static void take_record(struct wg_session_cache *s, struct wg_sess_entry *e,
                        const struct wg_session *r)
{
    place(s, e, r->state, r->ip, r->container_id);
    if (r->state == WG_SESSION_FAILED && r->error != NULL) {
        /* Kept for the waking page; a failed copy shows none. */
        free(e->error);
        e->error = strndup(r->error, WG_SESSION_CACHE_ERROR_MAX);
    }
    snprintf(e->host, sizeof(e->host), "%s", r->host);
    e->port = r->port;
    e->version = r->version;
    e->gen = r->gen;
}

static void fetch_done(const struct wg_store_res *res, void *arg)
{
    struct pending *p = arg;
    char id[WG_SESSION_ID_MAX + 1];
    snprintf(id, sizeof(id), "%s", p->id);
    /* Sent before the last resubscription (a failover may lie between):
     * its answer may be the old master's, so it goes by the versions like
     * any message, and the entry is read again. */
    bool before_resync = p->sub_gen != (p->s ? p->s->sub_gen : 0);
    struct wg_session_cache *s = pending_end(p);
    if (s == NULL)
        return;
    struct wg_sess_entry *e = find(s, id);
    if (e == NULL)
        return;
    e->fetching = false;
    e->fetched_at_ms = now_ms(s);
    if (res->status == 0 && res->rec != NULL && before_resync && e->stale) {
        const struct wg_session *r = res->rec;
        if (!e->known || r->version > e->version)
            take_record(s, e, r);
        fetch(s, e);
        notify(s, e);
        return;
    }
    if (res->status == 0 && res->rec != NULL) {
        const struct wg_session *r = res->rec;
        bool was_stale = e->stale;
        snprintf(e->template_name, sizeof(e->template_name), "%s", r->template_name);
        e->template_known = true;
        e->not_found = false;
        e->stale = false;
        e->fetch_failed_ms = 0;
        /* A state message newer than this read may have arrived meanwhile;
         * after a resubscription any read is newer than what we held. */
        if (!e->known || was_stale || r->version >= e->version) {
            if (e->known && was_stale && r->version < e->version)
                version_went_back(s, e, r->version, "read");
            take_record(s, e, r);
        }
    } else if (res->status == -ENOENT && e->stale && e->known && e->state == WG_SESSION_RUNNING &&
               e->ip[0] && e->nwaiters == 0) {
        /* The read after a resubscription, which nobody waits for: Redis
         * may be back empty, and its records are written again in a
         * moment. The next request reads again, as if it were not tried. */
        WG_DEBUG(s->log, "sessions", "record missing after resubscription, read again on use",
                 "session=%s", id);
    } else if (res->status == -ENOENT && e->stale && e->known && e->state == WG_SESSION_RUNNING &&
               e->ip[0] && now_ms(s) - s->resubscribed_ms < RESUBSCRIBE_GRACE_MS) {
        /* Keep serving the cached address; read again in a moment. */
        WG_INFO(s->log, "sessions", "record missing after resubscription, serving from cache",
                "session=%s ip=%s", id, e->ip);
        e->fetch_failed_ms = now_ms(s);
    } else if (res->status == -ENOENT) {
        e->not_found = true;
        e->known = false;
        e->stale = false;
        e->fetch_failed_ms = 0;
    } else {
        /* Redis trouble: keep what we had; the next lookup asks again. */
        e->stale = true;
        if (e->nwaiters > 0) {
            /* Read again every check tick while requests wait: said once
             * per run of failures, not per tick. */
            if (e->fetch_failed_ms == 0)
                WG_WARN(s->log, "sessions", "session fetch failed", "session=%s error=\"%s\"", id,
                        res->error);
            else
                WG_DEBUG(s->log, "sessions", "session fetch failed again",
                         "session=%s error=\"%s\"", id, res->error);
            e->fetch_failed_ms = now_ms(s);
            /* Held requests wait for a read: the check tick reads again. */
            s->refetch_due = true;
        } else {
            /* The read after a resubscription, which nobody waits for (the
             * reads' connection may come back after the subscriber's): the
             * next request reads again, as if it had not been tried. */
            WG_DEBUG(s->log, "sessions", "session fetch failed", "session=%s error=\"%s\"", id,
                     res->error);
        }
    }
    notify(s, e);
}

static void fetch(struct wg_session_cache *s, struct wg_sess_entry *e)
{
    if (e->fetching)
        return;
    struct pending *p = pending_new(s, e->id);
    if (p == NULL)
        return;
    if (wg_store_get(s->store, e->id, fetch_done, p) < 0) {
        pending_end(p);
        return;
    }
    e->fetching = true;
    s->stats.fetches++;
}

static void fill_addr(struct wg_session_cache *s, const struct wg_sess_entry *e, uint16_t port,
                      struct wg_sess_view *v)
{
    uint16_t p = port ? port : e->port ? e->port : (uint16_t)s->cfg->sessions.port;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&v->addr;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&v->addr;

    if (uv_ip4_addr(e->ip, p, in4) == 0) {
        v->addr_len = sizeof(*in4);
        snprintf(v->addr_text, sizeof(v->addr_text), "%s:%u", e->ip, p);
    } else if (uv_ip6_addr(e->ip, p, in6) == 0) {
        v->addr_len = sizeof(*in6);
        snprintf(v->addr_text, sizeof(v->addr_text), "[%s]:%u", e->ip, p);
    } else {
        v->addr_len = 0;
    }
}

/* A running entry's view: its address, container, state and generation. */
static void fill_view(struct wg_session_cache *s, struct wg_sess_entry *e, uint16_t port,
                      struct wg_sess_view *v)
{
    fill_addr(s, e, port, v);
    snprintf(v->container_id, sizeof(v->container_id), "%s", e->container_id);
    v->state = e->state;
    v->gen = e->gen;
    v->template_name = e->template_known ? e->template_name : NULL;
}

void wg_session_cache_view_port(struct wg_session_cache *s, struct wg_sess_view *v, uint16_t port)
{
    if (v->status == WG_SESS_READY && v->entry != NULL && port != 0)
        fill_addr(s, v->entry, port, v);
}

void wg_session_cache_lookup(struct wg_session_cache *s, const char *id, uint16_t port,
                             struct wg_sess_view *v)
{
    uint64_t now = now_ms(s);
    struct wg_sess_entry *e = find(s, id);

    bool live = channel_live(s, now);

    memset(v, 0, sizeof(*v));
    s->stats.lookups++;
    if (e == NULL) {
        if (!live || (e = create(s, id)) == NULL) {
            v->status = WG_SESS_UNAVAILABLE;
            return;
        }
        fetch(s, e);
        v->status = e->fetching ? WG_SESS_PENDING : WG_SESS_UNAVAILABLE;
        return;
    }
    /* Redis gone, or answering this entry's read with errors: the container
     * may have left the address meanwhile. Only running sessions, for a
     * while, and unconfirmed (see session_cache.h). */
    bool fetch_failing = e->stale && e->fetch_failed_ms && now - e->fetch_failed_ms < 1000;
    if (!live || fetch_failing) {
        /* Since when: the last moment the cache knew. */
        uint64_t since = !s->sub_up ? s->down_since_ms : !live ? s->confirmed_ms : now;
        if (fetch_failing && e->fetch_failed_ms < since)
            since = e->fetch_failed_ms;
        bool usable = e->known && e->state == WG_SESSION_RUNNING && e->ip[0] &&
                      now - since < s->cfg->redis_outage_grace_ms;
        if (usable) {
            fill_view(s, e, port, v);
            v->confirmed = false;
            v->unconfirmed_ms = now - since;
            v->status = v->addr_len ? WG_SESS_READY : WG_SESS_UNAVAILABLE;
            v->entry = v->addr_len ? e : NULL;
            return;
        }
        v->status = WG_SESS_UNAVAILABLE;
        return;
    }
    if (e->not_found && !e->fetching && now - e->fetched_at_ms >= NOT_FOUND_TTL_MS)
        fetch(s, e);
    if (e->stale) {
        /* Not served before it is read again: the container may be gone and
         * its address given to another session. */
        fetch(s, e);
        if (e->fetching) {
            v->status = WG_SESS_PENDING;
            return;
        }
    }
    if (!e->known) {
        v->status = e->fetching    ? WG_SESS_PENDING
                    : e->not_found ? WG_SESS_NOT_FOUND
                                   : WG_SESS_UNAVAILABLE;
        return;
    }
    v->state = e->state;
    v->gen = e->gen;
    v->template_name = e->template_known ? e->template_name : NULL;
    if (e->state == WG_SESSION_RUNNING && e->ip[0]) {
        fill_view(s, e, port, v);
        if (v->addr_len) {
            v->confirmed = true;
            v->status = WG_SESS_READY;
            v->entry = e;
            return;
        }
    }
    v->status = WG_SESS_NOT_RUNNING;
    if (e->state == WG_SESSION_FAILED) {
        v->failed_for_ms = (int64_t)now - e->failed_since;
        v->error = e->error;
    }
}

int wg_session_cache_wait(struct wg_session_cache *s, const char *id, struct wg_sess_waiter *w)
{
    struct wg_sess_entry *e = find(s, id);
    if (e == NULL)
        return -ENOENT;
    if (e->nwaiters >= WG_SESSION_CACHE_HOLD_PER_SESSION_MAX ||
        s->stats.held >= WG_SESSION_CACHE_HOLD_TOTAL_MAX) {
        s->stats.hold_refused++;
        return -ENOSPC;
    }
    w->entry = e;
    wg_list_push_back(&e->waiters, &w->link);
    e->nwaiters++;
    s->stats.held++;
    return 0;
}

void wg_session_cache_unwait(struct wg_session_cache *s, struct wg_sess_waiter *w)
{
    if (w == NULL || w->entry == NULL)
        return;
    wg_list_remove(&w->link);
    w->entry->nwaiters--;
    s->stats.held--;
    w->entry = NULL;
}

static void wake_done(const struct wg_store_res *res, void *arg)
{
    struct pending *p = arg;
    char id[WG_SESSION_ID_MAX + 1];
    snprintf(id, sizeof(id), "%s", p->id);
    struct wg_session_cache *s = pending_end(p);
    if (s == NULL)
        return;
    struct wg_sess_entry *e = find(s, id);
    /* The wake went to the record's host, which placement may have just
     * changed (a lost host's session re-placed): remember it. */
    if (res->status == 0) {
        if (e != NULL && res->host && res->host[0] && strcmp(e->host, res->host) != 0) {
            WG_INFO(s->log, "sessions", "wake sent to another host", "session=%s was=%s host=%s",
                    id, e->host[0] ? e->host : "-", res->host);
            snprintf(e->host, sizeof(e->host), "%s", res->host);
        }
        return;
    }
    WG_WARN(s->log, "sessions", "wake command not sent", "session=%s error=\"%s\"", id, res->error);
    if (e != NULL)
        e->last_wake_ms = 0; /* let the next request try again */
}

int wg_session_cache_wake(struct wg_session_cache *s, const char *id)
{
    struct wg_sess_entry *e = find(s, id);
    uint64_t now = now_ms(s);
    struct wg_wake_cmd cmd;

    if (!s->sub_up)
        return -ENOTCONN;
    if (e == NULL)
        return -ENOENT;
    /* One command per session per second: the herd of requests of one
     * gateway becomes one command, and orchestrators coalesce the rest. */
    if (e->woken && now - e->last_wake_ms < WAKE_REPEAT_MS)
        return 0;
    memset(&cmd, 0, sizeof(cmd));
    snprintf(cmd.session, sizeof(cmd.session), "%s", id);
    cmd.op = WG_WAKE_OP_WAKE;
    snprintf(cmd.from, sizeof(cmd.from), "%s", s->from);
    struct pending *p = pending_new(s, id);
    if (p == NULL)
        return -ENOMEM;
    const char *host = e->host[0] ? e->host : s->cfg->docker_name;
    int r = wg_store_wake_add(s->store, host, &cmd, wake_done, p);
    if (r < 0) {
        pending_end(p);
        return r;
    }
    e->woken = true;
    e->last_wake_ms = now;
    s->stats.wakes_sent++;
    WG_INFO(s->log, "sessions", "wake requested", "session=%s host=%s state=%s", id, host,
            wg_session_state_name(e->state));
    return 0;
}

void wg_session_cache_note_suppressed(struct wg_session_cache *s)
{
    s->stats.wakes_suppressed++;
}

/* ---- activity ------------------------------------------------------------ */

static void act_tick(uv_timer_t *t);

static void act_list_add(struct wg_session_cache *s, struct wg_sess_entry *e)
{
    if (!e->act_listed) {
        e->act_listed = true;
        wg_list_push_back(&s->act_list, &e->act_link);
        s->act_listed++;
    }
    /* Started by the first mark after a quiet spell, so the first write of
     * a session comes at most one interval after its first request. */
    if (!uv_is_active((uv_handle_t *)&s->act_timer))
        uv_timer_start(&s->act_timer, act_tick, s->cfg->sessions.idle.activity_interval_ms, 0);
}

static void act_list_remove(struct wg_session_cache *s, struct wg_sess_entry *e)
{
    if (!e->act_listed)
        return;
    e->act_listed = false;
    wg_list_remove(&e->act_link);
    s->act_listed--;
}

/* The hot path: no allocation, no syscall (uv_now is the loop's cached
 * time), and no Redis call. */
static void act_mark(struct wg_session_cache *s, struct wg_sess_entry *e)
{
    e->act_dirty = true;
    e->act_ms = now_ms(s);
    if (!e->act_listed || !uv_is_active((uv_handle_t *)&s->act_timer))
        act_list_add(s, e);
}

struct wg_sess_entry *wg_session_cache_activity_begin(struct wg_session_cache *s,
                                                      const struct wg_sess_view *v)
{
    struct wg_sess_entry *e = v->entry;
    if (e == NULL)
        return NULL;
    e->act_open++;
    s->stats.activity_open++;
    act_mark(s, e);
    return e;
}

void wg_session_cache_activity_end(struct wg_session_cache *s, struct wg_sess_entry **handle)
{
    if (handle == NULL || *handle == NULL)
        return;
    struct wg_sess_entry *e = *handle;
    *handle = NULL;
    e->act_open--;
    s->stats.activity_open--;
    act_mark(s, e);
}

struct wg_sess_entry *wg_session_cache_activity_resume(struct wg_session_cache *s,
                                                       struct wg_sess_entry *e)
{
    e->act_open++;
    s->stats.activity_open++;
    act_mark(s, e);
    return e;
}

void wg_session_cache_stream_add(struct wg_session_cache *s, struct wg_sess_entry *e,
                                 struct wg_sess_stream *st)
{
    if (e == NULL)
        return;
    st->entry = e;
    wg_list_push_back(&e->streams, &st->link);
    s->stats.streams_open++;
}

void wg_session_cache_stream_remove(struct wg_session_cache *s, struct wg_sess_stream *st)
{
    if (st == NULL || st->entry == NULL)
        return;
    wg_list_remove(&st->link);
    wg_list_init(&st->link);
    st->entry = NULL;
    s->stats.streams_open--;
}

static void act_done(const struct wg_store_res *res, void *arg)
{
    struct act_flush *f = arg;
    struct wg_session_cache *s = f->s;

    if (s == NULL) {
        free(f);
        return;
    }
    s->act_inflight = NULL;
    if (res->status == 0) {
        s->stats.activity_batches++;
        s->stats.activity_touches += f->n;
        if (s->act_failing) {
            s->act_failing = false;
            WG_INFO(s->log, "sessions", "activity written again", "sessions=%zu", f->n);
        }
        free(f);
        return;
    }
    s->stats.activity_errors++;
    if (!s->act_failing) {
        s->act_failing = true;
        WG_WARN(s->log, "sessions", "activity not written, keeping it for the next flush",
                "sessions=%zu status=%d error=\"%s\"", f->n, res->status, res->error);
    }
    /* Marked again, unless a later activity did so meanwhile: ZADD GT makes
     * the retry of an older time harmless either way. */
    for (size_t i = 0; i < f->n; i++) {
        struct wg_sess_entry *e = f->items[i].e;
        if (!e->act_dirty) {
            e->act_dirty = true;
            e->act_ms = f->items[i].at;
        }
        act_list_add(s, e);
    }
    free(f);
}

/* Writes every marked entry in one batch: open exchanges as of now, ended
 * ones with their last activity. One batch in flight at a time; a flush
 * that finds one out waits for the next tick. */
static void act_flush(struct wg_session_cache *s)
{
    uint64_t now = now_ms(s);
    int64_t offset =
        wg_clock_wall_ms() - (int64_t)now; /* loop time -> wall clock, once per flush */
    size_t n = 0;
    struct act_flush *f;

    if (s->act_inflight != NULL || s->act_listed == 0)
        return;
    if (s->act_cap < s->act_listed) {
        struct wg_store_activity *b = realloc(s->act_buf, s->act_listed * sizeof(*b));
        if (b == NULL)
            return; /* the marks stay for the next tick */
        s->act_buf = b;
        s->act_cap = s->act_listed;
    }
    f = malloc(sizeof(*f) + s->act_listed * sizeof(f->items[0]));
    if (f == NULL)
        return;
    f->s = s;
    struct wg_list *l = s->act_list.next;
    while (l != &s->act_list) {
        struct wg_sess_entry *e = wg_container_of(l, struct wg_sess_entry, act_link);
        l = l->next;
        uint64_t at = e->act_open > 0 ? now : e->act_ms;
        f->items[n].e = e;
        f->items[n].at = at;
        s->act_buf[n].id = e->id;
        s->act_buf[n].at_ms = (int64_t)at + offset;
        n++;
        e->act_dirty = false;
        if (e->act_open == 0)
            act_list_remove(s, e);
    }
    f->n = n;
    int r = wg_store_touch(s->store, s->act_buf, n, act_done, f);
    if (r < 0) {
        struct wg_store_res res = {.status = r, .error = "not sent"};
        s->act_inflight = f;
        act_done(&res, f);
        return;
    }
    s->act_inflight = f;
}

static void act_tick(uv_timer_t *t)
{
    struct wg_session_cache *s = t->data;
    act_flush(s);
    /* Open exchanges are written again next time; so are marks kept by a
     * failure or left by a batch still out. */
    if (s->act_listed > 0)
        uv_timer_start(&s->act_timer, act_tick, s->cfg->sessions.idle.activity_interval_ms, 0);
}

static void on_state_msg(const struct wg_redis_msg *msg, void *arg)
{
    struct wg_session_cache *s = arg;

    if (msg->kind == WG_REDIS_SUBSCRIBED) {
        /* (Re)subscribed: whatever was published meanwhile is lost. */
        bool was_up = s->sub_up;
        s->sub_up = true;
        s->sub_gen++;
        s->resubscribed_ms = now_ms(s);
        s->confirmed_ms = now_ms(s);
        s->silent = false;
        /* Every record held is read again now, not at its next request:
         * a failover may have lost writes (a version going back is logged
         * by the read), and requests to running sessions then find them
         * fresh instead of waiting for their read. */
        for (size_t i = 0; i < BUCKETS; i++) {
            for (struct wg_sess_entry *e = s->table[i]; e; e = e->next) {
                e->stale = true;
                if (e->nwaiters > 0 || e->known)
                    fetch(s, e);
            }
        }
        WG_INFO(s->log, "sessions", was_up ? "state channel renewed" : "state channel live",
                "entries=%zu", s->nentries);
        return;
    }
    struct wg_state_msg m;
    if (wg_store_parse_state_msg(msg->data, msg->len, &m) < 0) {
        WG_WARN(s->log, "sessions", "bad state message ignored", "len=%zu", msg->len);
        return;
    }
    s->stats.state_messages++;
    struct wg_sess_entry *e = find(s, m.id);
    if (e == NULL)
        return; /* not cached here: nothing to update */
    if (e->known && !e->stale && m.version < e->version)
        return; /* older than what we hold */
    if (e->known && e->stale && m.version < e->version)
        version_went_back(s, e, m.version, "message");
    if (m.state == WG_SESSION_DESTROYED) {
        place(s, e, m.state, "", "");
        e->known = false;
        e->template_known = false; /* a session made again under this id may have another */
        e->not_found = true;
        e->fetched_at_ms = now_ms(s);
    } else {
        /* A running message without an address keeps the one we know (and
         * its container, unless it names another). */
        bool keep = !m.ip[0] && m.state == WG_SESSION_RUNNING;
        char cid[WG_SESSION_CONTAINER_ID_MAX + 1];
        snprintf(cid, sizeof(cid), "%s",
                 keep && !m.container_id[0] ? e->container_id : m.container_id);
        place(s, e, m.state, keep ? e->ip : m.ip, cid);
        e->not_found = false;
        if (m.port)
            e->port = m.port;
        e->gen = m.gen;
    }
    e->version = m.version;
    /* Fresh news after a resubscription: versions compare again from here. */
    e->stale = false;
    /* Messages carry no error: a read tells the waking page why it failed. */
    if (m.state == WG_SESSION_FAILED)
        fetch(s, e);
    notify(s, e);
}

/* ---- checks of the state channel ---------------------------------------------------------- */

/* Waiters learn that nothing will come for now. */
static void notify_all(struct wg_session_cache *s)
{
    for (size_t i = 0; i < BUCKETS; i++) {
        for (struct wg_sess_entry *e = s->table[i]; e; e = e->next)
            notify(s, e);
    }
}

static void check_done(const struct wg_store_res *res, void *arg)
{
    struct wg_session_cache *s = pending_end(arg);
    if (s == NULL)
        return;
    s->check_inflight = false;
    /* Taken by Redis: its message is due back on the subscriber. Not
     * published (the command connection is away): nothing is out to wait
     * for; the three-timeout bound of channel_live() still holds. */
    if (res->status == 0 && s->check_unanswered_ms <= s->confirmed_ms)
        s->check_unanswered_ms = s->check_sent_ms;
}

/* A subscriber connection that a partition silenced reports nothing for
 * as long as TCP keepalive takes: publishing on a channel of our own and
 * reading it back proves, every quarter of redis.state_timeout, that the
 * channel still delivers. */
/* Reads again the entries whose read failed while requests waited (the
 * connection of the reads came back after the subscriber, as after a
 * failover), so that they are decided before their deadline. */
static void refetch_waited(struct wg_session_cache *s)
{
    s->refetch_due = false;
    for (size_t i = 0; i < BUCKETS; i++) {
        for (struct wg_sess_entry *e = s->table[i]; e; e = e->next) {
            if (e->nwaiters > 0 && e->stale && e->fetch_failed_ms)
                fetch(s, e);
        }
    }
}

static void check_tick(uv_timer_t *t)
{
    struct wg_session_cache *s = t->data;
    uint64_t now = now_ms(s);

    /* A tick long after the last one follows a stall of the loop (the
     * process stopped, or swapped): the checks that came back meanwhile are
     * still unread, so silence is judged at the next tick. */
    bool stalled = now - s->check_tick_ms > 2 * s->check_every_ms;
    s->check_tick_ms = now;
    if (!s->sub_up)
        return;
    if (s->refetch_due)
        refetch_waited(s);
    if (!s->silent && !stalled && !checks_current(s, now)) {
        s->silent = true;
        WG_WARN(s->log, "sessions",
                "state channel silent: running sessions served only where a live connection "
                "proves their container's address, refusing wakes",
                "silent_ms=%" PRIu64 " state_timeout_ms=%" PRIu64, now - s->confirmed_ms,
                s->cfg->redis_state_timeout_ms);
        notify_all(s);
    }
    if (s->check_inflight)
        return;
    struct pending *p = pending_new(s, "");
    if (p == NULL)
        return;
    if (wg_store_check_publish(s->store, s->check_token, now, check_done, p) < 0) {
        pending_end(p);
        return;
    }
    s->check_inflight = true;
    s->check_sent_ms = now;
}

static void on_check_msg(const struct wg_redis_msg *msg, void *arg)
{
    struct wg_session_cache *s = arg;
    uint64_t now = now_ms(s), stamp = 0;

    if (msg->kind != WG_REDIS_MESSAGE || msg->len == 0 || msg->len > 20)
        return;
    for (size_t i = 0; i < msg->len; i++) {
        if (msg->data[i] < '0' || msg->data[i] > '9' || stamp > UINT64_MAX / 10)
            return;
        stamp = stamp * 10 + (uint64_t)(msg->data[i] - '0');
    }
    if (stamp > now || stamp <= s->confirmed_ms)
        return;
    s->confirmed_ms = stamp;
    if (s->silent && checks_current(s, now)) {
        s->silent = false;
        WG_INFO(s->log, "sessions", "state channel delivers again", "entries=%zu", s->nentries);
        notify_all(s); /* requests held in doubt look again */
    }
}

static void on_sub_state(struct wg_redis *r, bool connected, const char *reason, void *arg)
{
    struct wg_session_cache *s = arg;
    if (connected)
        return; /* live once the subscription is confirmed */
    if (s->sub_up) {
        s->sub_up = false;
        s->down_since_ms = now_ms(s);
        WG_WARN(s->log, "sessions",
                "state channel lost: running sessions served only where a live connection "
                "proves their container's address, refusing wakes",
                "reason=\"%s\" grace_ms=%" PRIu64, reason ? reason : "",
                s->cfg->redis_outage_grace_ms);
        notify_all(s);
    }
}

int wg_session_cache_new(uv_loop_t *loop, const struct wg_config *cfg, struct wg_log *log,
                         struct wg_store *store, struct wg_session_cache **ret)
{
    struct wg_session_cache *s = calloc(1, sizeof(*s));
    struct wg_redis_opts ropts = {.name = "state-sub"};
    int r;

    if (s == NULL)
        return -ENOMEM;
    s->loop = loop;
    s->cfg = cfg;
    s->log = log;
    s->store = store;
    wg_list_init(&s->pending);
    wg_list_init(&s->act_list);
    snprintf(s->from, sizeof(s->from), "gw-%ld", (long)getpid());
    r = wg_redis_new(loop, cfg->redis_url, &ropts, log, &s->sub);
    if (r < 0)
        goto out_free;
    wg_redis_on_state(s->sub, on_sub_state, s);
    r = wg_redis_subscribe(s->sub, WG_STORE_CHANNEL_STATE, on_state_msg, s);
    if (r < 0)
        goto out_redis;
    char check_channel[sizeof(WG_STORE_CHANNEL_CHECK) + WG_STORE_TOKEN_LEN];
    if ((r = wg_store_lock_token(s->check_token)) < 0)
        goto out_redis;
    snprintf(check_channel, sizeof(check_channel), "%s%s", WG_STORE_CHANNEL_CHECK, s->check_token);
    r = wg_redis_subscribe(s->sub, check_channel, on_check_msg, s);
    if (r < 0)
        goto out_redis;
    /* Last: uv_timer_init() only fills the handle (it cannot fail), and once
     * the timers are initialised the memory goes only in the close callback
     * of the last one. */
    uv_timer_init(loop, &s->act_timer);
    uv_timer_init(loop, &s->check_timer);
    s->act_timer.data = s->check_timer.data = s;
    s->handles = 2;
    s->check_every_ms = cfg->redis_state_timeout_ms / 4 ? cfg->redis_state_timeout_ms / 4 : 1;
    s->check_tick_ms = now_ms(s);
    uv_timer_start(&s->check_timer, check_tick, s->check_every_ms, s->check_every_ms);
    *ret = s;
    return 0;

out_redis:
    wg_redis_free(s->sub);
out_free:
    free(s);
    return r;
}

static void timer_closed(uv_handle_t *h)
{
    struct wg_session_cache *s = h->data;
    if (--s->handles > 0)
        return;
    free(s->act_buf);
    free(s);
}

void wg_session_cache_free(struct wg_session_cache *s)
{
    if (s == NULL)
        return;
    wg_redis_free(s->sub);
    s->sub = NULL;
    while (!wg_list_empty(&s->pending)) {
        struct pending *p = wg_container_of(s->pending.next, struct pending, link);
        wg_list_remove(&p->link);
        p->s = NULL; /* its callback frees it */
    }
    for (size_t i = 0; i < BUCKETS; i++) {
        struct wg_sess_entry *e = s->table[i];
        while (e) {
            struct wg_sess_entry *next = e->next;
            while (!wg_list_empty(&e->waiters)) {
                struct wg_sess_waiter *w =
                    wg_container_of(e->waiters.next, struct wg_sess_waiter, link);
                wg_list_remove(&w->link);
                w->entry = NULL;
            }
            while (!wg_list_empty(&e->streams)) {
                struct wg_sess_stream *st =
                    wg_container_of(e->streams.next, struct wg_sess_stream, link);
                wg_list_remove(&st->link);
                wg_list_init(&st->link);
                st->entry = NULL;
            }
            free(e->error);
            free(e);
            e = next;
        }
        s->table[i] = NULL;
    }
    /* The batch out ends in act_done with s == NULL; unwritten marks go. */
    if (s->act_inflight != NULL) {
        s->act_inflight->s = NULL;
        s->act_inflight = NULL;
    }
    wg_list_init(&s->act_list);
    s->act_listed = 0;
    uv_close((uv_handle_t *)&s->check_timer, timer_closed);
    uv_close((uv_handle_t *)&s->act_timer, timer_closed);
}

void wg_session_cache_on_addr_gone(struct wg_session_cache *s, wg_session_cache_addr_gone_fn *fn,
                                   void *arg)
{
    s->addr_gone = fn;
    s->addr_gone_arg = arg;
}

bool wg_session_cache_connected(const struct wg_session_cache *s)
{
    return channel_live(s, now_ms(s));
}

const struct wg_session_cache_stats *wg_session_cache_stats(const struct wg_session_cache *s)
{
    return &s->stats;
}
