/* common/redis.c - one Redis connection on a libuv loop; see redis.h.
 *
 * Ownership, written down once:
 * - r owns four handles (conn_timer, cmd_timer, watch_timer, defer), the
 *   poll handle of each hiredis context (struct watch) until it has closed,
 *   while a name lookup runs one uv_getaddrinfo_t, and while the sentinels
 *   are asked one uv_work_t (common/redis_sentinel_mode.c, which also owns
 *   r->watcher, a connection of its own). r->refs counts them; r is freed
 *   when the count reaches 0 after wg_redis_free(). Its memory therefore outlives
 *   every callback that runs inside a loop turn, so code that calls out to
 *   user code only needs to re-check r->state == ST_CLOSED afterwards (this
 *   is our `disposed` guard; r itself cannot vanish under us).
 * - The hiredis context is owned by r while r->ac points at it. hiredis may
 *   free it itself (I/O error, failed connect), telling us through a NULL
 *   reply, on_connect() or on_disconnect(); redis_conn_end() detaches it first, so
 *   each context is ended once. hiredis closes the context's poll handle
 *   through watch_cleanup() when it frees the context.
 * - A struct req handed to hiredis stays allocated until hiredis calls
 *   reply_cb() for it, even after its outcome was delivered (timeout, loss,
 *   cancel): `done` marks that, and the late call only frees it.
 *
 * hiredis 0.14 facts this file relies on:
 * - redisAsyncFree() inside a reply callback only flags the context; hiredis
 *   frees it when the callback returns. Outside callbacks it frees at once,
 *   calling every pending reply callback with a NULL reply.
 * - onConnect and onDisconnect are not protected that way: the context must
 *   not be freed from inside them, and after a failed connect or a
 *   disconnect hiredis frees it right after the callback.
 * - Replies arrive in command order; pub/sub messages go to per-channel
 *   callbacks instead.
 *
 * Why not hiredis 0.14's adapters/libuv.h: when libuv reports a socket error
 * on a poll handle (a TCP reset, or a unix socket whose server died with
 * unread data: EPOLLERR), it stops the handle and calls back with UV_EBADF;
 * that adapter returns without telling hiredis, so the connection hangs for
 * good, and a subscriber, which has no command timeout, never recovers. The
 * few lines of struct watch below hand such an error to hiredis as the I/O
 * it was waiting for, so its read or write fails and it reports the loss.
 * (test_server_reset covers it.) */
#include "common/redis.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/async.h>

#include "common/log.h"
#include "common/redis_int.h"
#include "common/redis_url.h"

static void go_ready(struct wg_redis *r);
static void cmd_timer_cb(uv_timer_t *t);

/* ---- small helpers -------------------------------------------------------------------------- */

static void list_push(struct req_list *l, struct req *q)
{
    q->next = NULL;
    if (l->tail)
        l->tail->next = q;
    else
        l->head = q;
    l->tail = q;
}

static struct req *list_pop(struct req_list *l)
{
    struct req *q = l->head;
    if (q) {
        l->head = q->next;
        if (!l->head)
            l->tail = NULL;
        q->next = NULL;
    }
    return q;
}

/* Empties l and returns its chain. */
static struct req *list_take(struct req_list *l)
{
    struct req *q = l->head;
    l->head = l->tail = NULL;
    return q;
}

static void req_free(struct req *q)
{
    if (!q)
        return;
    free(q->cmd);
    free(q);
}

static void deliver(struct req *q, int status, redisReply *reply)
{
    if (q->kind != REQ_USER)
        return;
    if (q->r) {
        q->r->st.commands++;
        if (status == -ETIMEDOUT)
            q->r->st.timeouts++;
        else if (status < 0 && status != -ECANCELED)
            q->r->st.failed++;
        else if (status == 0 && reply && reply->type == REDIS_REPLY_ERROR)
            q->r->st.error_replies++;
    }
    if (q->cb)
        q->cb(status, reply, q->arg);
}

uint64_t redis_next_random(struct wg_redis *r)
{
    /* xorshift64*: jitter only, no need for more. */
    r->rng ^= r->rng >> 12;
    r->rng ^= r->rng << 25;
    r->rng ^= r->rng >> 27;
    return r->rng * 2685821657736338717ULL;
}

/* ---- state reporting and backoff ------------------------------------------------------------ */

/* Tells the owner about a change of the reported state; logs every attempt. */
static void notify(struct wg_redis *r, bool connected, bool was_ready, const char *reason)
{
    char qreason[QUOTED_MAX];
    enum reported now = connected ? REPORTED_UP : REPORTED_DOWN;

    if (r->reported == now) {
        WG_DEBUG(r->log, SUBSYS, "connect attempt failed, retrying", "name=%s url=%s reason=%s",
                 r->qname, r->qurl, redis_quote(qreason, sizeof(qreason), reason));
        return;
    }
    r->reported = now;
    if (connected)
        WG_INFO(r->log, SUBSYS, "connected", "name=%s url=%s", r->qname, r->qurl);
    else if (was_ready)
        WG_WARN(r->log, SUBSYS, "connection lost, failing in-flight commands and reconnecting",
                "name=%s url=%s reason=%s", r->qname, r->qurl,
                redis_quote(qreason, sizeof(qreason), reason));
    else
        WG_WARN(r->log, SUBSYS, "cannot connect, retrying with backoff", "name=%s url=%s reason=%s",
                r->qname, r->qurl, redis_quote(qreason, sizeof(qreason), reason));
    if (r->state_cb)
        r->state_cb(r, connected, reason, r->state_arg);
}

static void reconnect_cb(uv_timer_t *t)
{
    redis_start_attempt(t->data);
}

/* Arms the next attempt: min * 2^failures capped at max, then "equal jitter"
 * (50-100%) so that gateways restarted together do not reconnect in step. */
static void schedule_reconnect(struct wg_redis *r)
{
    uint64_t d = r->reconnect_min_ms;

    for (unsigned i = 0; i < r->failures && d < r->reconnect_max_ms; i++)
        d *= 2;
    if (d > r->reconnect_max_ms)
        d = r->reconnect_max_ms;
    d = d / 2 + redis_next_random(r) % (d - d / 2 + 1);
    if (r->failures < UINT_MAX)
        r->failures++;
    WG_DEBUG(r->log, SUBSYS, "reconnect scheduled", "name=%s delay_ms=%llu failures=%u", r->qname,
             (unsigned long long)d, r->failures);
    uv_timer_start(&r->conn_timer, reconnect_cb, d, 0);
}

/* ---- ending a connection -------------------------------------------------------------------- */

/* Ends the current attempt or connection and settles every command waiting
 * on it: those whose deadline is at or before `expired` (uv_now() ms; 0 for
 * none) get -ETIMEDOUT, the rest `status`. Then, unless r is closed, it
 * schedules the next attempt and reports the state.
 * Reached from: the connect and command timers, a refused handshake reply,
 * hiredis reporting a loss from inside its own teardown (hiredis_frees: the
 * context must not be freed here), a failed attempt start, and
 * wg_redis_free(). It may run re-entrantly from a callback it calls (owner
 * frees r); that is safe because it empties r's lists and detaches r->ac
 * before calling anyone. */
void redis_conn_end(struct wg_redis *r, int status, uint64_t expired, const char *reason,
                    bool hiredis_frees)
{
    redisAsyncContext *ac = r->ac;
    bool was_ready = r->state == ST_READY;
    struct req *sent, *held, *q, *next;

    r->ac = NULL;
    if (ac)
        ac->data = NULL;
    sent = list_take(&r->pending);
    held = list_take(&r->waiting);
    for (q = sent; q; q = q->next)
        q->done = true;
    if (r->state != ST_CLOSED) {
        r->state = ST_BACKOFF;
        uv_timer_stop(&r->conn_timer);
        uv_timer_stop(&r->cmd_timer);
        snprintf(r->last_error, sizeof(r->last_error), "%s", reason);
    }

    /* Sent requests stay allocated: hiredis calls reply_cb() once more for
     * each, from redisAsyncFree() below or from the teardown we are in. */
    for (q = sent; q; q = next) {
        next = q->next;
        deliver(q, q->deadline && q->deadline <= expired ? -ETIMEDOUT : status, NULL);
    }
    for (q = held; q; q = next) {
        next = q->next;
        deliver(q, status, NULL);
        req_free(q);
    }
    if (ac && !hiredis_frees)
        redisAsyncFree(ac);
    if (r->state == ST_CLOSED)
        return;
    schedule_reconnect(r);
    notify(r, false, was_ready, reason);
}

/* hiredis is tearing ac down after an I/O error or a failed connect. */
static void conn_lost(struct wg_redis *r, const redisAsyncContext *ac)
{
    char reason[REASON_MAX];
    const char *why = ac->c.errstr[0] ? ac->c.errstr : "connection closed";

    if (r->state == ST_READY) {
        snprintf(reason, sizeof(reason), "connection to %s lost: %s", redis_tgt(r), why);
        redis_conn_end(r, -ECONNRESET, 0, reason, true);
    } else {
        snprintf(reason, sizeof(reason), "connect to %s: %s", redis_tgt(r), why);
        redis_conn_end(r, -ENOTCONN, 0, reason, true);
    }
}

void redis_fail_attempt(struct wg_redis *r, const char *what, const char *why)
{
    char reason[REASON_MAX];

    snprintf(reason, sizeof(reason), "%s %s: %s", what, redis_tgt(r), why);
    redis_conn_end(r, -ENOTCONN, 0, reason, false);
}

/* ---- hiredis callbacks ---------------------------------------------------------------------- */

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct wg_redis *r = ac->data;

    if (!r)
        return;
    if (status == REDIS_OK) {
        WG_DEBUG(r->log, SUBSYS, "socket connected, handshake pending", "name=%s url=%s", r->qname,
                 r->qurl);
        return;
    }
    conn_lost(r, ac);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct wg_redis *r = ac->data;

    if (r)
        conn_lost(r, ac);
}

/* The handshake step that checks a sentinel's answer (compared by address). */
static const char ROLE_STEP[] = "ROLE";

static void handshake_reply(struct wg_redis *r, const struct req *q, const redisReply *reply)
{
    char reason[REASON_MAX];
    const char *role;
    size_t rolelen;

    /* The sentinels' answer may be a master demoted since: writes to it
     * would be lost or refused. */
    if (q->what == ROLE_STEP && !wg_redis_sentinel_role_is_master(reply, &role, &rolelen)) {
        snprintf(reason, sizeof(reason), "%s answers ROLE %.*s, not master", redis_tgt(r),
                 (int)rolelen, role);
        r->next_sentinel = (r->next_sentinel + 1) % r->t.sentinels_len;
        redis_conn_end(r, -ENOTCONN, 0, reason, false);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(reason, sizeof(reason), "%s refused by %s: %.*s", q->what, redis_tgt(r),
                 (int)reply->len, reply->str);
        redis_conn_end(r, -ENOTCONN, 0, reason, false);
        return;
    }
    if (q->kind == REQ_HANDSHAKE_LAST)
        go_ready(r);
}

static void reply_cb(redisAsyncContext *ac, void *reply_, void *privdata)
{
    struct req *q = privdata;
    struct wg_redis *r = q->r;
    redisReply *reply = reply_;

    /* hiredis calls the reply callbacks before on_disconnect() when it drops
     * a context, so a NULL reply can be the first news of a loss. */
    if (!reply && !q->done && ac->data == r)
        conn_lost(r, ac);
    if (q->done) {
        req_free(q);
        return;
    }
    if (!reply) {
        /* Not reachable while the invariants hold: every request of a
         * detached context was marked done. Stay safe anyway. */
        req_free(q);
        return;
    }
    struct req *head = list_pop(&r->pending);
    assert(head == q);
    (void)head;
    if (q->kind == REQ_USER) {
        /* A master that became a replica answers writes with -READONLY:
         * with Sentinel, that means the master moved. */
        bool demoted = r->t.master_name && reply->type == REDIS_REPLY_ERROR && reply->len >= 8 &&
                       strncmp(reply->str, "READONLY", 8) == 0;
        char reason[REASON_MAX];

        deliver(q, 0, reply);
        if (demoted && r->state == ST_READY) {
            snprintf(reason, sizeof(reason),
                     "%s answered READONLY: no longer the master, asking the sentinels",
                     redis_tgt(r));
            r->failures = 0;
            redis_conn_end(r, -ECONNRESET, 0, reason, false);
        }
    } else
        handshake_reply(r, q, reply);
    req_free(q);
    if (r->state == ST_READY && !r->pending.head)
        uv_timer_stop(&r->cmd_timer);
}

static void sub_cb(redisAsyncContext *ac, void *reply_, void *privdata)
{
    struct sub *s = privdata;
    redisReply *reply = reply_;
    struct wg_redis_msg m;

    /* NULL: hiredis drops the context; the next connection subscribes again. */
    if (!reply || ac->data != s->r)
        return;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return;
    memset(&m, 0, sizeof(m));
    m.channel = reply->element[1]->str;
    m.channel_len = reply->element[1]->len;
    if (strcasecmp(reply->element[0]->str, "subscribe") == 0) {
        m.kind = WG_REDIS_SUBSCRIBED;
        WG_DEBUG(s->r->log, SUBSYS, "subscribed", "name=%s channel=%.*s", s->r->qname, (int)s->len,
                 s->channel);
    } else if (strcasecmp(reply->element[0]->str, "message") == 0 &&
               reply->element[2]->type == REDIS_REPLY_STRING) {
        m.kind = WG_REDIS_MESSAGE;
        m.data = reply->element[2]->str;
        m.len = reply->element[2]->len;
    } else {
        return;
    }
    s->cb(&m, s->arg);
}

/* ---- sending -------------------------------------------------------------------------------- */

static void defer_cb(uv_idle_t *h)
{
    struct wg_redis *r = h->data;
    struct req *q = list_take(&r->deferred), *next;

    for (; q; q = next) {
        next = q->next;
        deliver(q, q->status, NULL);
        req_free(q);
    }
    if (r->state != ST_CLOSED && !r->deferred.head)
        uv_idle_stop(h);
}

/* Delivers status on the next loop turn, so no callback runs inside the call
 * that issued the command. */
static void defer(struct wg_redis *r, struct req *q, int status)
{
    q->status = status;
    list_push(&r->deferred, q);
    uv_idle_start(&r->defer, defer_cb);
}

static void arm(struct wg_redis *r, struct req *q, uint64_t now)
{
    q->deadline = now + r->command_timeout_ms;
    if (!uv_is_active((uv_handle_t *)&r->cmd_timer))
        uv_timer_start(&r->cmd_timer, cmd_timer_cb, r->command_timeout_ms, 0);
}

/* Hands q to hiredis on r->ac. Callers: submit() in ST_SENDS states, and
 * connect_to() for the handshake and the held commands. */
static void send_req(struct wg_redis *r, struct req *q)
{
    if (redisAsyncFormattedCommand(r->ac, reply_cb, q, q->cmd, q->len) != REDIS_OK) {
        /* Only while hiredis tears the context down; its disconnect
         * callback follows and starts the reconnect. */
        defer(r, q, -ENOTCONN);
        return;
    }
    free(q->cmd); /* hiredis copied it into its output buffer */
    q->cmd = NULL;
    list_push(&r->pending, q);
    if (r->state == ST_READY)
        arm(r, q, uv_now(r->loop));
}

/* True for commands that would make hiredis keep one callback for many
 * replies: those go through wg_redis_subscribe() or are not supported. */
static bool forbidden(const char *cmd, size_t len)
{
    static const char *const deny[] = {"subscribe",    "psubscribe",   "ssubscribe", "unsubscribe",
                                       "punsubscribe", "sunsubscribe", "monitor"};
    const char *nl = memchr(cmd, '\n', len);
    const char *name;
    char *end;
    unsigned long n;

    /* hiredis formats "*argc\r\n$len\r\nNAME\r\n..." and NUL-terminates it. */
    if (!nl || nl + 1 >= cmd + len || nl[1] != '$')
        return true;
    n = strtoul(nl + 2, &end, 10);
    if (end[0] != '\r' || end[1] != '\n')
        return true;
    name = end + 2;
    if (n > (size_t)(cmd + len - name))
        return true;
    for (size_t i = 0; i < sizeof(deny) / sizeof(deny[0]); i++)
        if (strlen(deny[i]) == n && strncasecmp(name, deny[i], n) == 0)
            return true;
    return false;
}

/* Takes ownership of cmd (hiredis-formatted). */
static int submit(struct wg_redis *r, char *cmd, size_t len, wg_redis_reply_cb *cb, void *arg)
{
    struct req *q;

    if (forbidden(cmd, len)) {
        redisFreeCommand(cmd);
        return -EINVAL;
    }
    q = calloc(1, sizeof(*q));
    if (!q) {
        redisFreeCommand(cmd);
        return -ENOMEM;
    }
    q->r = r;
    q->cb = cb;
    q->arg = arg;
    q->cmd = cmd;
    q->len = len;
    q->kind = REQ_USER;
    if (ST_IN(r, ST_SENDS))
        send_req(r, q);
    else if (ST_IN(r, ST_HOLDS))
        list_push(&r->waiting, q);
    else
        defer(r, q, -ENOTCONN);
    return 0;
}

static int send_internal(struct wg_redis *r, enum req_kind kind, const char *what, int argc,
                         const char **argv)
{
    struct req *q = calloc(1, sizeof(*q));
    int n;

    if (!q)
        return -ENOMEM;
    n = redisFormatCommandArgv(&q->cmd, argc, argv, NULL);
    if (n < 0) {
        free(q);
        return -ENOMEM;
    }
    q->len = (size_t)n;
    q->r = r;
    q->kind = kind;
    q->what = what;
    send_req(r, q);
    return 0;
}

static void send_subscribe(struct wg_redis *r, struct sub *s)
{
    if (redisAsyncCommand(r->ac, sub_cb, s, "SUBSCRIBE %b", s->channel, s->len) != REDIS_OK)
        WG_DEBUG(r->log, SUBSYS, "subscribe not sent, context closing", "name=%s", r->qname);
}

/* ---- the context's poll handle -------------------------------------------------------------- */

struct watch {
    uv_poll_t poll;
    redisAsyncContext *ac; /* NULL once hiredis let go of the context */
    struct wg_redis *r;
    int events;
};

static void watch_cb(uv_poll_t *h, int status, int events)
{
    struct watch *w = h->data;
    /* On an error libuv has stopped the handle and says nothing about the
     * events: retry what hiredis waits for, so that it meets the error. */
    int ev = status < 0 ? w->events : events;

    if (w->ac && (ev & UV_READABLE))
        redisAsyncHandleRead(w->ac);
    /* The read may have freed the context (cleanup cleared w->ac). */
    if (w->ac && (ev & UV_WRITABLE))
        redisAsyncHandleWrite(w->ac);
}

static void watch_update(struct watch *w, int add, int del)
{
    w->events = (w->events | add) & ~del;
    if (w->events)
        uv_poll_start(&w->poll, w->events, watch_cb);
    else
        uv_poll_stop(&w->poll);
}

static void watch_add_read(void *p)
{
    watch_update(p, UV_READABLE, 0);
}

static void watch_del_read(void *p)
{
    watch_update(p, 0, UV_READABLE);
}

static void watch_add_write(void *p)
{
    watch_update(p, UV_WRITABLE, 0);
}

static void watch_del_write(void *p)
{
    watch_update(p, 0, UV_WRITABLE);
}

static void watch_closed(uv_handle_t *h)
{
    struct watch *w = h->data;
    struct wg_redis *r = w->r;

    free(w);
    redis_release(r);
}

/* hiredis calls this from inside redisAsyncFree(), before it closes the fd. */
static void watch_cleanup(void *p)
{
    struct watch *w = p;

    w->ac = NULL;
    uv_close((uv_handle_t *)&w->poll, watch_closed);
}

static int watch_attach(struct wg_redis *r, redisAsyncContext *ac)
{
    struct watch *w = calloc(1, sizeof(*w));
    int rc;

    if (!w)
        return -ENOMEM;
    rc = uv_poll_init(r->loop, &w->poll, ac->c.fd);
    if (rc < 0) {
        free(w);
        return rc;
    }
    w->poll.data = w;
    w->ac = ac;
    w->r = r;
    r->refs++;
    ac->ev.data = w;
    ac->ev.addRead = watch_add_read;
    ac->ev.delRead = watch_del_read;
    ac->ev.addWrite = watch_add_write;
    ac->ev.delWrite = watch_del_write;
    ac->ev.cleanup = watch_cleanup;
    return 0;
}

/* ---- connecting ----------------------------------------------------------------------------- */

static void go_ready(struct wg_redis *r)
{
    uint64_t now = uv_now(r->loop);
    char reason[REASON_MAX];

    r->state = ST_READY;
    r->failures = 0;
    r->st.connects++;
    uv_timer_stop(&r->conn_timer);
    /* Commands held during the attempt start their clock now, not when
     * issued: the attempt had its own deadline. */
    for (struct req *q = r->pending.head; q; q = q->next)
        arm(r, q, now);
    for (struct sub *s = r->subs; s; s = s->next)
        send_subscribe(r, s);
    if (r->t.master_name)
        redis_note_master(r);
    snprintf(reason, sizeof(reason), "connected to %s", redis_tgt(r));
    notify(r, true, false, reason);
}

static void connect_timeout_cb(uv_timer_t *t)
{
    struct wg_redis *r = t->data;
    char why[64];

    assert(ST_IN(r, ST_ATTEMPT | ST_BIT(ST_DISCOVERING)));
    if (r->state == ST_DISCOVERING) {
        /* The job on the thread pool cannot be stopped: it runs on, and its
         * late answer serves the next attempt if one joins it (or is
         * dropped). The held commands fail now, as between attempts. */
        snprintf(why, sizeof(why), "no answer in %u ms", 3 * r->connect_timeout_ms);
        if (r->t.sentinels_len > 0)
            r->next_sentinel = (r->next_sentinel + 1) % r->t.sentinels_len;
        redis_fail_attempt(r, "asking the sentinels of", why);
        return;
    }
    snprintf(why, sizeof(why), "timed out after %u ms", r->connect_timeout_ms);
    redis_fail_attempt(r, r->state == ST_RESOLVING ? "name lookup for" : "connect to", why);
}

void redis_arm_discovery_deadline(struct wg_redis *r)
{
    /* One sentinel that does not answer (a connect timeout), then the next
     * one and the master's ROLE: a failover is followed within this. */
    uv_timer_start(&r->conn_timer, connect_timeout_cb, 3 * (uint64_t)r->connect_timeout_ms, 0);
}

static int send_handshake(struct wg_redis *r)
{
    const char *argv[3];
    char db[16];
    int argc = 0;
    int rc;

    if (r->t.password) {
        argv[argc++] = "AUTH";
        if (r->t.user)
            argv[argc++] = r->t.user;
        argv[argc++] = r->t.password;
        if ((rc = send_internal(r, REQ_HANDSHAKE, "AUTH", argc, argv)) < 0)
            return rc;
    }
    if (r->t.db) {
        snprintf(db, sizeof(db), "%d", r->t.db);
        argv[0] = "SELECT";
        argv[1] = db;
        if ((rc = send_internal(r, REQ_HANDSHAKE, "SELECT", 2, argv)) < 0)
            return rc;
    }
    if (r->t.master_name) {
        argv[0] = "ROLE";
        if ((rc = send_internal(r, REQ_HANDSHAKE, ROLE_STEP, 1, argv)) < 0)
            return rc;
    }
    argv[0] = "PING";
    return send_internal(r, REQ_HANDSHAKE_LAST, "PING", 1, argv);
}

/* Opens the hiredis context to addr (a numeric address, or the socket path)
 * and queues the handshake, then the held commands behind it. */
static void connect_to(struct wg_redis *r, const char *addr)
{
    redisAsyncContext *ac;
    char why[128];
    struct req *q, *next;
    int rc;

    ac = r->t.is_unix ? redisAsyncConnectUnix(addr) : redisAsyncConnect(addr, r->t.port);
    if (!ac) {
        redis_fail_attempt(r, "connect to", "out of memory");
        return;
    }
    if (ac->err) {
        snprintf(why, sizeof(why), "%s", ac->errstr);
        redisAsyncFree(ac);
        redis_fail_attempt(r, "connect to", why);
        return;
    }
    if ((rc = watch_attach(r, ac)) < 0) {
        redisAsyncFree(ac);
        redis_fail_attempt(r, "connect to", uv_strerror(rc));
        return;
    }
    ac->data = r;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    if (!r->t.is_unix)
        redisEnableKeepAlive(&ac->c); /* a subscriber sends nothing to notice a dead peer */
    r->ac = ac;
    r->state = ST_CONNECTING;
    if (send_handshake(r) < 0) {
        redis_fail_attempt(r, "connect to", "out of memory");
        return;
    }
    for (q = list_take(&r->waiting); q; q = next) {
        next = q->next;
        send_req(r, q);
    }
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct wg_redis *r = req->data;
    char addr[INET6_ADDRSTRLEN] = "";
    const struct addrinfo *pick = NULL;

    r->gai_busy = false;
    if (r->state == ST_CLOSED) {
        uv_freeaddrinfo(res);
        redis_release(r);
        return;
    }
    r->refs--;
    if (r->state != ST_RESOLVING) { /* the attempt timed out meanwhile */
        uv_freeaddrinfo(res);
        return;
    }
    if (status < 0) {
        redis_fail_attempt(r, "name lookup for", uv_strerror(status));
        return;
    }
    /* hiredis itself prefers IPv4; keep that order. */
    for (const struct addrinfo *ai = res; ai && !pick; ai = ai->ai_next)
        if (ai->ai_family == AF_INET)
            pick = ai;
    for (const struct addrinfo *ai = res; ai && !pick; ai = ai->ai_next)
        if (ai->ai_family == AF_INET6)
            pick = ai;
    if (pick && pick->ai_family == AF_INET)
        uv_ip4_name((const struct sockaddr_in *)pick->ai_addr, addr, sizeof(addr));
    else if (pick)
        uv_ip6_name((const struct sockaddr_in6 *)pick->ai_addr, addr, sizeof(addr));
    uv_freeaddrinfo(res);
    if (!addr[0]) {
        redis_fail_attempt(r, "name lookup for", "no IPv4 or IPv6 address");
        return;
    }
    WG_DEBUG(r->log, SUBSYS, "resolved", "name=%s url=%s addr=%s", r->qname, r->qurl, addr);
    connect_to(r, addr);
}

static bool is_numeric(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Begins one attempt. Reached from the backoff timer (and so, the first
 * time, one loop turn after wg_redis_new()). */
void redis_start_attempt(struct wg_redis *r)
{
    WG_DEBUG(r->log, SUBSYS, "connecting", "name=%s url=%s", r->qname, r->qurl);
    if (r->t.master_name)
        redis_start_discovery(r, false);
    else
        redis_connect_host(r);
}

/* The attempt's lookup and connect to r->t.host (or the socket), within
 * the connect timeout. */
void redis_connect_host(struct wg_redis *r)
{
    struct addrinfo hints;
    int rc;

    uv_timer_start(&r->conn_timer, connect_timeout_cb, r->connect_timeout_ms, 0);
    if (r->t.is_unix || is_numeric(r->t.host)) {
        connect_to(r, r->t.is_unix ? r->t.path : r->t.host);
        return;
    }
    if (r->gai_busy) {
        /* The lookup of an earlier, timed-out attempt is stuck in the
         * resolver; its request cannot be reused until it returns. */
        redis_fail_attempt(r, "name lookup for", "previous lookup still running");
        return;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rc = uv_getaddrinfo(r->loop, &r->gai, gai_cb, r->t.host, NULL, &hints);
    if (rc < 0) {
        redis_fail_attempt(r, "name lookup for", uv_strerror(rc));
        return;
    }
    r->gai_busy = true;
    r->refs++;
    r->state = ST_RESOLVING;
}

static void cmd_timer_cb(uv_timer_t *t)
{
    struct wg_redis *r = t->data;
    struct req *head = r->pending.head;
    uint64_t now = uv_now(r->loop);
    char reason[REASON_MAX];

    if (r->state != ST_READY || !head || !head->deadline)
        return;
    /* Deadlines grow along the reply order, so the head expires first. */
    if (head->deadline > now) {
        uv_timer_start(t, cmd_timer_cb, head->deadline - now, 0);
        return;
    }
    snprintf(reason, sizeof(reason), "command timed out after %u ms on %s, dropping the connection",
             r->command_timeout_ms, redis_tgt(r));
    redis_conn_end(r, -ECONNRESET, now, reason, false);
}

/* ---- public API ----------------------------------------------------------------------------- */

static void handle_closed(uv_handle_t *h)
{
    redis_release(h->data);
}

/* Drops one reference (an open handle or the lookup in flight); the last
 * one frees r. Only reachable after wg_redis_free(). */
void redis_release(struct wg_redis *r)
{
    if (--r->refs > 0)
        return;
    assert(!r->pending.head && !r->waiting.head && !r->deferred.head && !r->ac);
    while (r->subs) {
        struct sub *s = r->subs;
        r->subs = s->next;
        free(s);
    }
    wg_redis_url_release(&r->t);
    free(r->target);
    free(r);
}

/* Takes t's strings (t is left empty) on success and on failure. */
int redis_create(uv_loop_t *loop, struct wg_redis_url *t, const struct wg_redis_opts *opts,
                 struct wg_log *log, struct wg_redis **ret)
{
    struct wg_redis *r;
    const char *name = opts && opts->name ? opts->name : "redis";

    r = calloc(1, sizeof(*r));
    if (!r) {
        wg_redis_url_release(t);
        return -ENOMEM;
    }
    r->t = *t;
    memset(t, 0, sizeof(*t));
    snprintf(r->name, sizeof(r->name), "%s", name);
    redis_quote(r->qname, sizeof(r->qname), name);
    r->connect_timeout_ms =
        opts && opts->connect_timeout_ms ? opts->connect_timeout_ms : WG_REDIS_CONNECT_TIMEOUT_MS;
    r->command_timeout_ms =
        opts && opts->command_timeout_ms ? opts->command_timeout_ms : WG_REDIS_COMMAND_TIMEOUT_MS;
    r->reconnect_min_ms =
        opts && opts->reconnect_min_ms ? opts->reconnect_min_ms : WG_REDIS_RECONNECT_MIN_MS;
    r->reconnect_max_ms =
        opts && opts->reconnect_max_ms ? opts->reconnect_max_ms : WG_REDIS_RECONNECT_MAX_MS;
    if (r->reconnect_min_ms > r->reconnect_max_ms) {
        wg_redis_url_release(&r->t);
        free(r);
        return -EINVAL;
    }
    r->loop = loop;
    r->log = log;
    redis_quote(r->qurl, sizeof(r->qurl), r->t.display);
    redis_set_target(r);
    r->rng = uv_hrtime() ^ (uint64_t)(uintptr_t)r;
    if (!r->rng)
        r->rng = 0x9e3779b97f4a7c15ULL;
    /* Watchers spread over the sentinels; the first to ask stays the first
     * listed. */
    if (r->t.master_name)
        r->watch_idx = (size_t)(redis_next_random(r) % r->t.sentinels_len);

    /* Past this point nothing fails: these inits cannot, for a valid loop. */
    uv_timer_init(loop, &r->conn_timer);
    uv_timer_init(loop, &r->cmd_timer);
    uv_timer_init(loop, &r->watch_timer);
    uv_idle_init(loop, &r->defer);
    r->conn_timer.data = r->cmd_timer.data = r->defer.data = r->gai.data = r;
    r->watch_timer.data = r;
    r->refs = 4;
    /* The first attempt runs on the next loop turn so that wg_redis_new()
     * calls nobody back; commands issued meanwhile are held. */
    r->state = ST_STARTING;
    uv_timer_start(&r->conn_timer, reconnect_cb, 0, 0);
    if (r->t.master_name)
        uv_timer_start(&r->watch_timer, redis_watch_timer_cb, 0, 0);
    *ret = r;
    return 0;
}

int wg_redis_new(uv_loop_t *loop, const char *url, const struct wg_redis_opts *opts,
                 struct wg_log *log, struct wg_redis **ret)
{
    struct wg_redis_url t;
    char err[REASON_MAX], qerr[QUOTED_MAX], qname[QUOTED_MAX];
    int rc;

    if (!loop || !url || !ret)
        return -EINVAL;
    rc = wg_redis_url_parse(url, &t, err, sizeof(err));
    if (rc < 0) {
        WG_DEBUG(log, SUBSYS, "bad url", "name=%s reason=%s",
                 redis_quote(qname, sizeof(qname), opts && opts->name ? opts->name : "redis"),
                 redis_quote(qerr, sizeof(qerr), err));
        return rc;
    }
    return redis_create(loop, &t, opts, log, ret);
}

void wg_redis_free(struct wg_redis *r)
{
    struct req *q, *next;

    if (!r || r->state == ST_CLOSED)
        return;
    r->state = ST_CLOSED;
    r->state_cb = NULL;
    if (r->gai_busy)
        uv_cancel((uv_req_t *)&r->gai); /* may fail if running; gai_cb drops its ref */
    if (r->disc_busy)
        uv_cancel((uv_req_t *)&r->disc_work); /* may fail if running; disc_after_cb drops its ref */
    wg_redis_free(r->watcher);
    r->watcher = NULL;
    redis_conn_end(r, -ECANCELED, 0, "closed", false);
    for (q = list_take(&r->deferred); q; q = next) {
        next = q->next;
        deliver(q, -ECANCELED, NULL);
        req_free(q);
    }
    uv_close((uv_handle_t *)&r->conn_timer, handle_closed);
    uv_close((uv_handle_t *)&r->cmd_timer, handle_closed);
    uv_close((uv_handle_t *)&r->watch_timer, handle_closed);
    uv_close((uv_handle_t *)&r->defer, handle_closed);
}

void wg_redis_on_state(struct wg_redis *r, wg_redis_state_cb *cb, void *arg)
{
    if (!r || r->state == ST_CLOSED)
        return;
    r->state_cb = cb;
    r->state_arg = arg;
}

bool wg_redis_connected(const struct wg_redis *r)
{
    return r && r->state == ST_READY;
}

const char *wg_redis_last_error(const struct wg_redis *r)
{
    return r ? r->last_error : "";
}

int wg_redis_vcommand(struct wg_redis *r, wg_redis_reply_cb *cb, void *arg, const char *fmt,
                      va_list ap)
{
    char *cmd = NULL;
    int n;

    if (!r || !fmt)
        return -EINVAL;
    if (r->state == ST_CLOSED)
        return -ECANCELED;
    if (r->subscriber)
        return -EINVAL;
    n = redisvFormatCommand(&cmd, fmt, ap);
    if (n < 0) /* hiredis 0.14 answers -1 to both a bad format and no memory */
        return -EINVAL;
    return submit(r, cmd, (size_t)n, cb, arg);
}

int wg_redis_command(struct wg_redis *r, wg_redis_reply_cb *cb, void *arg, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = wg_redis_vcommand(r, cb, arg, fmt, ap);
    va_end(ap);
    return rc;
}

int wg_redis_command_argv(struct wg_redis *r, wg_redis_reply_cb *cb, void *arg, int argc,
                          const char *const *argv, const size_t *argvlen)
{
    char *cmd = NULL;
    int n;

    if (!r || argc < 1 || !argv)
        return -EINVAL;
    if (r->state == ST_CLOSED)
        return -ECANCELED;
    if (r->subscriber)
        return -EINVAL;
    /* hiredis only reads argv; its prototype predates const-correctness. */
    n = redisFormatCommandArgv(&cmd, argc, (const char **)argv, argvlen);
    if (n < 0)
        return -ENOMEM;
    return submit(r, cmd, (size_t)n, cb, arg);
}

int wg_redis_subscribe(struct wg_redis *r, const char *channel, wg_redis_msg_cb *cb, void *arg)
{
    struct sub *s, **tail;
    size_t len;

    if (!r || !channel || !channel[0] || !cb)
        return -EINVAL;
    if (r->state == ST_CLOSED)
        return -ECANCELED;
    len = strlen(channel);
    for (tail = &r->subs; *tail; tail = &(*tail)->next)
        if ((*tail)->len == len && memcmp((*tail)->channel, channel, len) == 0)
            return -EEXIST;
    s = calloc(1, sizeof(*s) + len + 1);
    if (!s)
        return -ENOMEM;
    s->r = r;
    s->cb = cb;
    s->arg = arg;
    s->len = len;
    memcpy(s->channel, channel, len + 1);
    *tail = s;
    r->subscriber = true;
    if (r->state == ST_READY)
        send_subscribe(r, s);
    return 0;
}

void wg_redis_get_stats(const struct wg_redis *r, struct wg_redis_stats *ret)
{
    *ret = r->st;
    ret->connected = r->state == ST_READY;
}
