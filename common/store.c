/* orchestrator/store.c - session records and their bus in Redis; see store.h.
 *
 * Ownership, written down once:
 * - A call makes one struct op, linked on s->ops until its callback runs.
 *   Each Redis command of the op is a struct part handed to wg_redis as the
 *   callback argument; op->outstanding counts the parts whose reply is still
 *   due. The callback runs when the count reaches 0 (or at once with
 *   -ECANCELED from wg_store_free()); the op is freed when it has been
 *   delivered and nothing is outstanding.
 * - wg_store_free() delivers -ECANCELED to every linked op and detaches it
 *   (op->s = NULL), then frees s at once: detached ops never touch s again,
 *   their late replies only count down and free them. wg_redis always calls
 *   a part back (reply, timeout, loss, or -ECANCELED from wg_redis_free()),
 *   so no op leaks.
 * - Nothing here owns a libuv handle: everything asynchronous is wg_redis's.
 *
 * Atomicity: every write that must not interleave with another actor's is
 * one Lua script (EVAL), so Redis runs it whole. Redis caches compiled
 * scripts by their SHA, so EVAL costs the script text on the wire only; the
 * texts are small. */
#include "common/store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <jansson.h>

#include "common/log.h"
#include "common/redis.h"

#define SUBSYS "store"
#define ERR_MAX 256
#define HASH_FIELDS_MAX 256 /* pairs of a record's HGETALL we accept */
#define TOUCH_CHUNK 256     /* sessions per ZADD */

/* ---- Lua ---------------------------------------------------------------------------------------
 */

/* The transient states, as wg_session_state_transient() has them: a session
 * in one of them sits in wg:transient, scored by state_since. */
#define TRANSIENT_LUA                                                                              \
    "local TRANSIENT = {creating = true, starting = true, draining = true, saving = true,\n"       \
    "                   stopping = true}\n"

/* Keeps wg:idle_short (KEYS[6]) true for record h: the session's shortest
 * idle override that is on, so the reaper can widen its range for sessions
 * whose tiers are shorter than the configured ones. */
#define IDLE_SHORT_LUA                                                                             \
    "local function idle_short(h, id)\n"                                                           \
    "  local best = nil\n"                                                                         \
    "  for _, f in ipairs({'idle_pause_after_ms', 'idle_stop_after_ms'}) do\n"                     \
    "    local v = tonumber(redis.call('HGET', h, f) or '')\n"                                     \
    "    if v and v > 0 and (best == nil or v < best) then best = v end\n"                         \
    "  end\n"                                                                                      \
    "  if best then redis.call('ZADD', KEYS[6], best, id)\n"                                       \
    "  else redis.call('ZREM', KEYS[6], id) end\n"                                                 \
    "end\n"

/* Moves (or, with ARGV[3] == "", updates) one record. See
 * wg_store_transition() for the contract; the replies are
 *   {'missing'} | {'rejected', '', HGETALL, ZSCORE} | {'active', '', HGETALL, ZSCORE}
 *   | {'ok', event id, HGETALL, ZSCORE}.
 * KEYS: record, wg:events, wg:active, wg:sessions, wg:transient, wg:idle_short,
 * wg:counts.
 * ARGV: id, allowed current states ("*" = any value, else names separated by
 * spaces), new state ("" = no move), now (ms), events cap, detail ("" =
 * none), state channel, "1" to add one to restarts, idle cutoff ("" = none:
 * else the move is refused as 'active' when the wg:active score is later),
 * then field/value pairs (an empty value removes the field).
 * The record read back for the reply is taken before a destroyed record is
 * deleted, with its final state. */
static const char script_transition[] = TRANSIENT_LUA IDLE_SHORT_LUA
    "local h, id = KEYS[1], ARGV[1]\n"
    "if redis.call('EXISTS', h) == 0 then return {'missing'} end\n"
    "local cur = redis.call('HGET', h, 'state') or ''\n"
    "local ok = ARGV[2] == '*'\n"
    "if not ok then\n"
    "  for s in string.gmatch(ARGV[2], '%S+') do\n"
    "    if s == cur then ok = true break end\n"
    "  end\n"
    "end\n"
    "if not ok then\n"
    "  return {'rejected', '', redis.call('HGETALL', h), redis.call('ZSCORE', KEYS[3], id)}\n"
    "end\n"
    "if ARGV[9] ~= '' then\n"
    "  local sc = redis.call('ZSCORE', KEYS[3], id)\n"
    "  if sc and tonumber(sc) > tonumber(ARGV[9]) then\n"
    "    return {'active', '', redis.call('HGETALL', h), sc}\n"
    "  end\n"
    "end\n"
    "local to, now = ARGV[3], ARGV[4]\n"
    "local move = to ~= ''\n"
    "if not move then to = cur end\n"
    "local v = (tonumber(redis.call('HGET', h, 'v') or '') or 0) + 1\n"
    "redis.call('HSET', h, 'v', string.format('%d', v))\n"
    "for i = 10, #ARGV, 2 do\n"
    "  if ARGV[i + 1] == '' then redis.call('HDEL', h, ARGV[i])\n"
    "  else redis.call('HSET', h, ARGV[i], ARGV[i + 1]) end\n"
    "end\n"
    "if ARGV[8] == '1' then redis.call('HINCRBY', h, 'restarts', 1) end\n"
    "if move then redis.call('HSET', h, 'state', to, 'state_since', now) end\n"
    "if move then\n"
    "  if TRANSIENT[to] then redis.call('ZADD', KEYS[5], now, id)\n"
    "  else redis.call('ZREM', KEYS[5], id) end\n"
    "  redis.call('HINCRBY', KEYS[7], cur, -1)\n"
    "  if to ~= 'destroyed' then redis.call('HINCRBY', KEYS[7], to, 1) end\n"
    "end\n"
    "if move and to == 'running' and cur ~= 'draining' and cur ~= 'saving' then\n"
    "  redis.call('ZADD', KEYS[3], 'GT', now, id)\n"
    "elseif move and (to == 'asleep' or to == 'failed' or to == 'destroyed') then\n"
    "  local sc = tonumber(redis.call('ZSCORE', KEYS[3], id) or '')\n"
    "  local la = tonumber(redis.call('HGET', h, 'last_active') or '') or 0\n"
    "  if sc and sc > la then\n"
    "    redis.call('HSET', h, 'last_active', string.format('%d', math.floor(sc)))\n"
    "  end\n"
    "  redis.call('ZREM', KEYS[3], id)\n"
    "end\n"
    "local rec = redis.call('HGETALL', h)\n"
    "local msg = {id = id, state = to, v = v}\n"
    "if to == 'destroyed' then\n"
    "  redis.call('DEL', h)\n"
    "  redis.call('SREM', KEYS[4], id)\n"
    "  redis.call('ZREM', KEYS[6], id)\n"
    "else\n"
    "  idle_short(h, id)\n"
    "  msg.ip = redis.call('HGET', h, 'ip') or nil\n"
    "  msg.port = tonumber(redis.call('HGET', h, 'port') or '')\n"
    "end\n"
    "local eid = ''\n"
    "if move then\n"
    "  local ev = {'id', id, 'type', 'transition', 'from', cur, 'to', to, 'at', now,\n"
    "              'v', string.format('%d', v)}\n"
    "  if ARGV[6] ~= '' then ev[#ev + 1] = 'detail'; ev[#ev + 1] = ARGV[6] end\n"
    "  eid = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(ev))\n"
    "end\n"
    "redis.call('PUBLISH', ARGV[7], cjson.encode(msg))\n"
    "return {'ok', eid, rec, redis.call('ZSCORE', KEYS[3], id)}\n";

/* Get-or-create. Replies {'exists', '', HGETALL, ZSCORE} or
 * {'created', event id, HGETALL, nil}.
 * KEYS: record, wg:events, wg:sessions, wg:active, wg:transient, wg:idle_short,
 * wg:counts.
 * ARGV: id, now, events cap, detail, state channel, then field/value pairs
 * (empty values skipped). */
static const char script_create[] = IDLE_SHORT_LUA
    "local h, id, now = KEYS[1], ARGV[1], ARGV[2]\n"
    "if redis.call('EXISTS', h) == 1 then\n"
    "  return {'exists', '', redis.call('HGETALL', h), redis.call('ZSCORE', KEYS[4], id)}\n"
    "end\n"
    "redis.call('HSET', h, 'id', id, 'state', 'creating', 'state_since', now,\n"
    "           'created', now, 'v', '1')\n"
    "for i = 6, #ARGV, 2 do\n"
    "  if ARGV[i + 1] ~= '' then redis.call('HSET', h, ARGV[i], ARGV[i + 1]) end\n"
    "end\n"
    "redis.call('SADD', KEYS[3], id)\n"
    "redis.call('ZADD', KEYS[5], now, id)\n"
    "redis.call('HINCRBY', KEYS[7], 'creating', 1)\n"
    "idle_short(h, id)\n"
    "local ev = {'id', id, 'type', 'transition', 'from', '', 'to', 'creating', 'at', now,\n"
    "            'v', '1'}\n"
    "if ARGV[4] ~= '' then ev[#ev + 1] = 'detail'; ev[#ev + 1] = ARGV[4] end\n"
    "local eid = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ev))\n"
    "local msg = {id = id, state = 'creating', v = 1}\n"
    "msg.ip = redis.call('HGET', h, 'ip') or nil\n"
    "msg.port = tonumber(redis.call('HGET', h, 'port') or '')\n"
    "redis.call('PUBLISH', ARGV[5], cjson.encode(msg))\n"
    "return {'created', eid, redis.call('HGETALL', h), false}\n";

/* Compare-and-delete / compare-and-pexpire: only the token's holder may
 * release or extend, so a holder whose lock expired cannot drop the next
 * holder's. */
static const char script_unlock[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";
static const char script_extend[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                    "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                                    "end\n"
                                    "return 0\n";

/* ---- objects -----------------------------------------------------------------------------------
 */

enum op_kind {
    OP_CREATE,
    OP_SCRIPT, /* transition, update, delete */
    OP_GET,
    OP_LIST,
    OP_TOUCH,
    OP_RANGE,
    OP_REAP,
    OP_COUNTS,
    OP_XADD, /* event_add, wake_add */
    OP_LOCK_SET,
    OP_LOCK_EVAL,
    OP_GROUP,
    OP_WAKE_READ,
    OP_WAKE_ACK,
    OP_WAKE_CLAIM,
};

enum role { R_MAIN, R_SCORE, R_MEMBERS, R_HASH };

struct op {
    struct op *prev, *next; /* on s->ops until delivered */
    struct wg_store *s;     /* NULL once delivered or cancelled */
    enum op_kind kind;
    wg_store_cb *cb;
    void *arg;
    unsigned outstanding; /* parts whose reply is due */
    bool delivered;
    int status; /* first failure, or the outcome */
    char error[ERR_MAX];
    char id[WG_SESSION_ID_MAX + 1];

    struct wg_session rec;
    bool has_rec;
    int64_t score; /* OP_GET: wg:active score, -1 if none */
    char event_id[WG_STORE_STREAM_ID_MAX + 1];
    char next_id[WG_STORE_STREAM_ID_MAX + 1];
    long long count;
    size_t n_bad;

    /* OP_LIST */
    char (*ids)[WG_SESSION_ID_MAX + 1];
    size_t n_ids;
    struct wg_session *recs;
    bool *have;
    int64_t *scores;

    /* OP_RANGE */
    struct wg_store_idle *idle;
    size_t n_idle;

    /* OP_COUNTS */
    long long state_counts[WG_SESSION_STATE_COUNT];

    /* OP_REAP */
    struct wg_store_reap *reap;
    bool *reap_have;
    uint64_t tier_ms;
    size_t offset, limit;
    int64_t cutoff;

    /* OP_WAKE_READ, OP_WAKE_CLAIM */
    struct wg_wake_cmd *wake;
    size_t n_wake, max_wake;
};

struct part {
    struct op *op;
    struct wg_redis *r; /* the connection it went out on, for the failure text */
    enum role role;
    size_t idx;
};

struct wg_store {
    struct wg_redis *redis;
    struct wg_log *log;
    uint32_t events_max;
    uint32_t wake_max;
    int64_t (*clock_ms)(void *arg);
    void *clock_arg;
    struct op *ops;
    bool closing; /* wg_store_free() runs: callbacks it calls may not start calls */
};

static int64_t realtime_ms(void *arg)
{
    struct timespec ts;

    (void)arg;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_ms(const struct wg_store *s)
{
    return s->clock_ms(s->clock_arg);
}

/* ---- argv builder ------------------------------------------------------------------------------
 */

/* Arguments for one command. Formatted numbers are owned here until the
 * command is handed to wg_redis, which copies it at once. */
struct argv {
    size_t n, cap;
    const char **v;
    size_t *len;
    char **owned;
    size_t n_owned;
    int err;
};

static void av_add(struct argv *a, const char *s, size_t len)
{
    if (a->err)
        return;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        const char **v = realloc(a->v, cap * sizeof(*v));
        size_t *l;

        if (v)
            a->v = v;
        l = v ? realloc(a->len, cap * sizeof(*l)) : NULL;
        if (!l) {
            a->err = -ENOMEM;
            return;
        }
        a->len = l;
        a->cap = cap;
    }
    a->v[a->n] = s;
    a->len[a->n] = len;
    a->n++;
}

static void av_str(struct argv *a, const char *s)
{
    av_add(a, s, strlen(s));
}

static void av_fmt(struct argv *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void av_fmt(struct argv *a, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL, **owned;
    int n;

    if (a->err)
        return;
    owned = realloc(a->owned, (a->n_owned + 1) * sizeof(*owned));
    if (!owned) {
        a->err = -ENOMEM;
        return;
    }
    a->owned = owned;
    va_start(ap, fmt);
    n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        a->err = -ENOMEM;
        return;
    }
    a->owned[a->n_owned++] = s;
    av_add(a, s, (size_t)n);
}

static void av_release(struct argv *a)
{
    for (size_t i = 0; i < a->n_owned; i++)
        free(a->owned[i]);
    free(a->owned);
    free(a->v);
    free(a->len);
    memset(a, 0, sizeof(*a));
}

/* ---- ops ---------------------------------------------------------------------------------------
 */

static void op_fail(struct op *op, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records the first failure; later ones (and outcomes) do not replace it. */
static void op_fail(struct op *op, int status, const char *fmt, ...)
{
    va_list ap;

    if (op->status < 0)
        return;
    op->status = status;
    va_start(ap, fmt);
    vsnprintf(op->error, sizeof(op->error), fmt, ap);
    va_end(ap);
}

/* On success *ret_op is linked on s->ops; the caller sends its commands
 * and ends with op_abort() if the first one fails. */
static int op_start(struct wg_store *s, enum op_kind kind, const char *id, wg_store_cb *cb,
                    void *arg, struct op **ret_op)
{
    struct op *op;

    if (s->closing)
        return -ECANCELED;
    op = calloc(1, sizeof(*op));
    if (!op)
        return -ENOMEM;
    op->s = s;
    op->kind = kind;
    op->cb = cb;
    op->arg = arg;
    op->score = -1;
    if (id)
        snprintf(op->id, sizeof(op->id), "%s", id);
    op->next = s->ops;
    if (s->ops)
        s->ops->prev = op;
    s->ops = op;
    *ret_op = op;
    return 0;
}

static void op_unlink(struct op *op)
{
    struct wg_store *s = op->s;

    if (!s)
        return;
    if (op->prev)
        op->prev->next = op->next;
    else
        s->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->prev = op->next = NULL;
    op->s = NULL;
}

static void op_free(struct op *op)
{
    wg_session_release(&op->rec);
    for (size_t i = 0; op->recs && i < op->n_ids; i++)
        wg_session_release(&op->recs[i]);
    free(op->recs);
    free(op->have);
    free(op->scores);
    free(op->ids);
    free(op->idle);
    free(op->reap);
    free(op->reap_have);
    free(op->wake);
    free(op);
}

static int cmp_rec(const void *a, const void *b)
{
    return strcmp(((const struct wg_session *)a)->id, ((const struct wg_session *)b)->id);
}

/* Merges a wg:active score into a record's last_active. */
static void merge_score(struct wg_session *rec, int64_t score)
{
    if (score > rec->last_active)
        rec->last_active = score;
}

/* Fills res from op. For lists, compacts the decoded records to the front
 * (releasing nothing: op_free() releases up to n_ids, and the moved-from
 * slots are zeroed). */
static void op_result(struct op *op, struct wg_store_res *res)
{
    memset(res, 0, sizeof(*res));
    res->status = op->status;
    res->error = op->status == 0 ? "" : op->error;
    res->event_id = op->event_id;
    res->next_id = op->next_id;
    res->count = op->count;
    res->n_bad = op->n_bad;
    if (op->status < 0)
        return;
    if (op->has_rec) {
        if (op->score >= 0)
            merge_score(&op->rec, op->score);
        res->rec = &op->rec;
    }
    if (op->kind == OP_LIST) {
        size_t k = 0;

        for (size_t i = 0; i < op->n_ids; i++) {
            if (!op->have[i])
                continue;
            if (op->scores[i] >= 0)
                merge_score(&op->recs[i], op->scores[i]);
            if (k != i) {
                op->recs[k] = op->recs[i];
                wg_session_init(&op->recs[i]);
            }
            k++;
        }
        if (k > 1)
            qsort(op->recs, k, sizeof(op->recs[0]), cmp_rec);
        res->recs = op->recs;
        res->n_recs = k;
    }
    res->idle = op->idle;
    res->n_idle = op->n_idle;
    if (op->kind == OP_COUNTS)
        res->state_counts = op->state_counts;
    if (op->kind == OP_REAP) {
        size_t k = 0;

        for (size_t i = 0; i < op->n_idle; i++) {
            if (!op->reap_have[i])
                continue;
            if (k != i)
                op->reap[k] = op->reap[i];
            k++;
        }
        res->reap = op->reap;
        res->n_reap = k;
        res->count = op->cutoff;
        res->idle = NULL;
        res->n_idle = 0;
    }
    res->wake = op->wake;
    res->n_wake = op->n_wake;
}

/* Runs the callback once. Reached from part_cb() when the last reply is in,
 * and from wg_store_free() (status -ECANCELED). */
static void op_deliver(struct op *op)
{
    struct wg_store_res res;
    struct wg_log *log = op->s ? op->s->log : NULL;

    op_unlink(op);
    op->delivered = true;
    op_result(op, &res);
    if (res.status < 0 && wg_log_enabled(log, WG_LOG_DEBUG)) {
        char q[ERR_MAX + 16];
        WG_DEBUG(log, SUBSYS, "store call failed", "session=%s status=%d error=%s",
                 op->id[0] ? op->id : "-", res.status,
                 wg_log_quote(q, sizeof(q), res.error, strlen(res.error)));
    }
    op->cb(&res, op->arg);
}

static void handle_reply(struct op *op, enum role role, size_t idx, const redisReply *reply);

static void part_cb(int status, redisReply *reply, void *arg)
{
    struct part *p = arg;
    struct op *op = p->op;
    struct wg_redis *r = p->r;
    enum role role = p->role;
    size_t idx = p->idx;

    free(p);
    op->outstanding--;
    if (op->delivered) {
        /* Cancelled by wg_store_free(): drop the reply. */
        if (op->outstanding == 0)
            op_free(op);
        return;
    }
    if (status < 0) {
        /* r is alive: wg_redis calls back before it frees itself. */
        const char *why = status == -ECANCELED ? "" : wg_redis_last_error(r);
        op_fail(op, status, "redis: %s%s%s", strerror(-status), why[0] ? ": " : "", why);
    } else if (reply->type == REDIS_REPLY_ERROR &&
               !(op->kind == OP_GROUP && strncmp(reply->str, "BUSYGROUP", 9) == 0)) {
        op_fail(op, -EIO, "%.*s", (int)reply->len, reply->str);
    } else if (op->status >= 0) {
        handle_reply(op, role, idx, reply);
    }
    if (op->outstanding == 0) {
        op_deliver(op);
        op_free(op);
    }
}

/* Sends one command of op on r. On success the reply will come to part_cb. */
static int send_part(struct op *op, struct wg_redis *r, enum role role, size_t idx, struct argv *a)
{
    struct part *p;
    int rc;

    if (a->err)
        return a->err;
    p = malloc(sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->op = op;
    p->r = r;
    p->role = role;
    p->idx = idx;
    rc = wg_redis_command_argv(r, part_cb, p, (int)a->n, a->v, a->len);
    if (rc < 0) {
        free(p);
        return rc;
    }
    op->outstanding++;
    return 0;
}

/* Ends a call whose first command could not be sent: nothing will call back,
 * so the op goes without delivery. Returns rc. */
static int op_abort(struct op *op, int rc)
{
    if (op->outstanding > 0) {
        /* Some command was sent: the callback will run; report the rest. */
        op_fail(op, rc, "%s", strerror(-rc));
        return 0;
    }
    op_unlink(op);
    op_free(op);
    return rc;
}

/* ---- reply helpers -----------------------------------------------------------------------------
 */

static bool is_str(const redisReply *r)
{
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

static bool str_eq(const redisReply *r, const char *s)
{
    return is_str(r) && r->len == strlen(s) && memcmp(r->str, s, r->len) == 0;
}

/* A ZSCORE reply: our scores are integral ms; anything else counts as none. */
static int64_t parse_score(const redisReply *r)
{
    char buf[64], *end;
    double d;

    if (!is_str(r) || r->len == 0 || r->len >= sizeof(buf))
        return -1;
    memcpy(buf, r->str, r->len);
    buf[r->len] = '\0';
    d = strtod(buf, &end);
    if (*end != '\0' || !isfinite(d) || d < 0 || d > 9e18)
        return -1;
    return (int64_t)d;
}

static bool stream_id_valid(const char *s, size_t len)
{
    const char *dash = memchr(s, '-', len);

    if (len < 3 || len > WG_STORE_STREAM_ID_MAX || !dash || dash == s || dash == s + len - 1)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!(s[i] >= '0' && s[i] <= '9') && s + i != dash)
            return false;
    return true;
}

static int copy_stream_id(const redisReply *r, char *dst)
{
    if (!is_str(r) || !stream_id_valid(r->str, r->len))
        return -EPROTO;
    memcpy(dst, r->str, r->len);
    dst[r->len] = '\0';
    return 0;
}

/* Decodes a record's HGETALL reply, checking that it belongs to `id`.
 * Returns 0, -ENOENT (empty), -EPROTO, -EBADMSG or -ENOMEM with err set. */
static int decode_hash(const redisReply *flat, const char *id, struct wg_session *ret, char *err,
                       size_t errlen)
{
    struct wg_session_kv *kv = NULL;
    struct wg_session rec;
    size_t n;
    int rc = 0;

    if (!flat || flat->type != REDIS_REPLY_ARRAY || flat->elements % 2 != 0) {
        snprintf(err, errlen, "session %s: record reply is not field/value pairs", id);
        rc = -EPROTO;
        goto out;
    }
    n = flat->elements / 2;
    if (n == 0) {
        snprintf(err, errlen, "session %s: no such session", id);
        rc = -ENOENT;
        goto out;
    }
    if (n > HASH_FIELDS_MAX) {
        snprintf(err, errlen, "session %s: record has %zu fields", id, n);
        rc = -EBADMSG;
        goto out;
    }
    kv = calloc(n, sizeof(*kv));
    if (!kv) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const redisReply *f = flat->element[2 * i], *v = flat->element[2 * i + 1];
        if (!is_str(f) || !is_str(v)) {
            snprintf(err, errlen, "session %s: record field is not a string", id);
            rc = -EPROTO;
            goto out;
        }
        kv[i] = (struct wg_session_kv){f->str, f->len, v->str, v->len};
    }
    {
        char why[160];
        rc = wg_session_decode(kv, n, &rec, why, sizeof(why));
        if (rc < 0) {
            snprintf(err, errlen, "session %s: garbled record: %s", id, why);
            goto out;
        }
    }
    if (strcmp(rec.id, id) != 0) {
        wg_session_release(&rec);
        snprintf(err, errlen, "session %s: garbled record: field id: does not match the key", id);
        rc = -EBADMSG;
        goto out;
    }
    *ret = rec;
out:
    free(kv);
    return rc;
}

/* {tag, event id, HGETALL, ZSCORE} from the create and transition scripts. */
static void handle_script(struct op *op, const redisReply *reply)
{
    const redisReply *tag, *flat;
    char err[ERR_MAX];
    int rc;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 || !is_str(reply->element[0]))
        goto proto;
    tag = reply->element[0];
    if (str_eq(tag, "missing")) {
        op_fail(op, -ENOENT, "session %s: no such session", op->id);
        return;
    }
    if (reply->elements < 3 || !is_str(reply->element[1]))
        goto proto;
    if (str_eq(tag, "ok") || str_eq(tag, "created"))
        op->status = 0;
    else if (str_eq(tag, "exists"))
        op->status = WG_STORE_EXISTS;
    else if (str_eq(tag, "rejected"))
        op->status = WG_STORE_REJECTED;
    else if (str_eq(tag, "active"))
        op->status = WG_STORE_ACTIVE;
    else
        goto proto;
    if (reply->element[1]->len > 0 && copy_stream_id(reply->element[1], op->event_id) < 0)
        goto proto;
    flat = reply->element[2];
    rc = decode_hash(flat, op->id, &op->rec, err, sizeof(err));
    if (rc < 0) {
        op_fail(op, rc, "%s", err);
        return;
    }
    op->has_rec = true;
    if (reply->elements > 3)
        op->score = parse_score(reply->element[3]);
    if (op->status == WG_STORE_REJECTED)
        snprintf(op->error, sizeof(op->error), "session %s is %s", op->id,
                 wg_session_state_name(op->rec.state));
    else if (op->status == WG_STORE_ACTIVE)
        snprintf(op->error, sizeof(op->error), "session %s was active at %" PRId64, op->id,
                 op->score);
    else if (op->status == WG_STORE_EXISTS)
        snprintf(op->error, sizeof(op->error), "session %s exists", op->id);
    return;
proto:
    op_fail(op, -EPROTO, "session %s: unexpected script reply", op->id);
}

static void handle_list_members(struct op *op, const redisReply *reply)
{
    struct wg_store *s = op->s;
    struct argv zm = {0};
    size_t n = 0;
    int rc = 0;

    if (reply->type != REDIS_REPLY_ARRAY) {
        op_fail(op, -EPROTO, "SMEMBERS %s: unexpected reply", WG_STORE_KEY_SESSIONS);
        return;
    }
    if (reply->elements > WG_STORE_LIST_MAX) {
        op_fail(op, -E2BIG, "%zu sessions, more than %d", reply->elements, WG_STORE_LIST_MAX);
        return;
    }
    if (reply->elements == 0)
        return;
    op->ids = calloc(reply->elements, sizeof(*op->ids));
    op->recs = calloc(reply->elements, sizeof(*op->recs));
    op->have = calloc(reply->elements, sizeof(*op->have));
    op->scores = calloc(reply->elements, sizeof(*op->scores));
    if (!op->ids || !op->recs || !op->have || !op->scores) {
        op_fail(op, -ENOMEM, "out of memory");
        return;
    }
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        if (!is_str(e) || !wg_session_id_valid(e->str, e->len)) {
            op->n_bad++;
            continue;
        }
        memcpy(op->ids[n], e->str, e->len);
        op->ids[n][e->len] = '\0';
        op->scores[n] = -1;
        n++;
    }
    op->n_ids = n;
    av_str(&zm, "ZMSCORE");
    av_str(&zm, WG_STORE_KEY_ACTIVE);
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct argv a = {0};
        av_str(&a, "HGETALL");
        av_fmt(&a, WG_STORE_KEY_SESSION_PREFIX "%s", op->ids[i]);
        rc = send_part(op, s->redis, R_HASH, i, &a);
        av_release(&a);
        av_str(&zm, op->ids[i]);
    }
    if (rc == 0 && n > 0)
        rc = send_part(op, s->redis, R_SCORE, 0, &zm);
    av_release(&zm);
    if (rc < 0)
        op_fail(op, rc, "sending the record reads: %s", strerror(-rc));
}

static void handle_list(struct op *op, enum role role, size_t idx, const redisReply *reply)
{
    char err[ERR_MAX];
    int rc;

    switch (role) {
    case R_MEMBERS:
        handle_list_members(op, reply);
        return;
    case R_HASH:
        if (idx >= op->n_ids)
            return;
        rc = decode_hash(reply, op->ids[idx], &op->recs[idx], err, sizeof(err));
        if (rc == 0)
            op->have[idx] = true;
        else if (rc == -EBADMSG)
            op->n_bad++;
        else if (rc != -ENOENT) /* deleted since SMEMBERS: not an error */
            op_fail(op, rc, "%s", err);
        return;
    case R_SCORE:
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != op->n_ids) {
            op_fail(op, -EPROTO, "ZMSCORE %s: unexpected reply", WG_STORE_KEY_ACTIVE);
            return;
        }
        for (size_t i = 0; i < op->n_ids; i++)
            op->scores[i] = parse_score(reply->element[i]);
        return;
    case R_MAIN:
        return;
    }
}

static void handle_range(struct op *op, const redisReply *reply)
{
    size_t n;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 2 != 0) {
        op_fail(op, -EPROTO, "ZRANGEBYSCORE %s: unexpected reply", WG_STORE_KEY_ACTIVE);
        return;
    }
    n = reply->elements / 2;
    if (n == 0)
        return;
    op->idle = calloc(n, sizeof(*op->idle));
    if (!op->idle) {
        op_fail(op, -ENOMEM, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const redisReply *m = reply->element[2 * i];
        int64_t score = parse_score(reply->element[2 * i + 1]);
        struct wg_store_idle *e = &op->idle[op->n_idle];

        if (!is_str(m) || !wg_session_id_valid(m->str, m->len) || score < 0) {
            op->n_bad++;
            continue;
        }
        memcpy(e->id, m->str, m->len);
        e->id[m->len] = '\0';
        e->last_active = score;
        op->n_idle++;
    }
}

/* HGETALL wg:counts: state name -> count; unknown names and junk are
 * skipped (counted in n_bad). */
static void handle_counts(struct op *op, const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 2 != 0) {
        op_fail(op, -EPROTO, "HGETALL %s: unexpected reply", WG_STORE_KEY_COUNTS);
        return;
    }
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
        const redisReply *k = reply->element[i], *v = reply->element[i + 1];
        enum wg_session_state st;
        char buf[24], *end;
        long long n;

        if (!is_str(k) || wg_session_state_parse(k->str, k->len, &st) < 0 || !is_str(v) ||
            v->len == 0 || v->len >= sizeof(buf)) {
            op->n_bad++;
            continue;
        }
        memcpy(buf, v->str, v->len);
        buf[v->len] = '\0';
        n = strtoll(buf, &end, 10);
        if (*end) {
            op->n_bad++;
            continue;
        }
        op->state_counts[st] = n;
    }
}

/* The fields a reaper pass reads of each candidate, in HMGET order. */
static const char *const reap_fields[] = {
    "state",   "host",    "idle_stop_after_ms", "idle_pause_after_ms",
    "save_at", "save_ok", "state_since",
};
#define REAP_FIELDS (sizeof(reap_fields) / sizeof(reap_fields[0]))

/* A decimal field of HMGET: nil gives def, junk gives false. */
static bool reap_num(const redisReply *r, int64_t def, int64_t *out)
{
    char buf[24], *end;
    long long v;

    if (r->type == REDIS_REPLY_NIL) {
        *out = def;
        return true;
    }
    if (!is_str(r) || r->len == 0 || r->len >= sizeof(buf))
        return false;
    memcpy(buf, r->str, r->len);
    buf[r->len] = '\0';
    errno = 0;
    v = strtoll(buf, &end, 10);
    if (errno || *end != '\0' || v < 0)
        return false;
    *out = v;
    return true;
}

static void handle_reap_hash(struct op *op, size_t idx, const redisReply *reply)
{
    struct wg_store_reap *e = &op->reap[idx];
    const redisReply *const *f;
    int64_t stop = -1, pause = -1, save_at = 0, save_ok = 0, since = 0;

    if (idx >= op->n_idle || reply->type != REDIS_REPLY_ARRAY || reply->elements != REAP_FIELDS) {
        op_fail(op, -EPROTO, "HMGET: unexpected reply");
        return;
    }
    f = (const redisReply *const *)reply->element;
    if (f[0]->type == REDIS_REPLY_NIL)
        return; /* the record went away since the range read: not idle any more */
    if (!is_str(f[0]) || wg_session_state_parse(f[0]->str, f[0]->len, &e->state) < 0 ||
        (f[1]->type != REDIS_REPLY_NIL && (!is_str(f[1]) || f[1]->len > WG_SESSION_HOST_MAX)) ||
        !reap_num(f[2], -1, &stop) || !reap_num(f[3], -1, &pause) || !reap_num(f[4], 0, &save_at) ||
        !reap_num(f[5], 0, &save_ok) || save_ok > 1 || !reap_num(f[6], 0, &since)) {
        op->n_bad++;
        return;
    }
    if (is_str(f[1])) { /* no host: a record no orchestrator owns yet */
        memcpy(e->host, f[1]->str, f[1]->len);
        e->host[f[1]->len] = '\0';
    }
    e->has_stop_after = stop >= 0;
    e->stop_after_ms = stop >= 0 ? (uint64_t)stop : 0;
    e->has_pause_after = pause >= 0;
    e->pause_after_ms = pause >= 0 ? (uint64_t)pause : 0;
    e->save_at = save_at;
    e->save_ok = save_ok == 1;
    e->state_since = since;
    op->reap_have[idx] = true;
}

/* wg:active members scored at or before the cutoff: one HMGET each. */
static void handle_reap_range(struct op *op, const redisReply *reply)
{
    int rc = 0;

    handle_range(op, reply);
    if (op->status < 0 || op->n_idle == 0)
        return;
    op->reap = calloc(op->n_idle, sizeof(*op->reap));
    op->reap_have = calloc(op->n_idle, sizeof(*op->reap_have));
    if (!op->reap || !op->reap_have) {
        op_fail(op, -ENOMEM, "out of memory");
        return;
    }
    for (size_t i = 0; i < op->n_idle && rc == 0; i++) {
        struct argv a = {0};

        memcpy(op->reap[i].id, op->idle[i].id, sizeof(op->reap[i].id));
        op->reap[i].last_active = op->idle[i].last_active;
        av_str(&a, "HMGET");
        av_fmt(&a, WG_STORE_KEY_SESSION_PREFIX "%s", op->idle[i].id);
        for (size_t k = 0; k < REAP_FIELDS; k++)
            av_str(&a, reap_fields[k]);
        rc = send_part(op, op->s->redis, R_HASH, i, &a);
        av_release(&a);
    }
    if (rc < 0)
        op_fail(op, rc, "sending the record reads: %s", strerror(-rc));
}

/* The shortest idle override: widens the range to read. */
static void handle_reap_short(struct op *op, const redisReply *reply)
{
    uint64_t tier = op->tier_ms;
    struct argv a = {0};
    int rc;

    if (reply->type != REDIS_REPLY_ARRAY || (reply->elements != 0 && reply->elements != 2)) {
        op_fail(op, -EPROTO, "ZRANGE %s: unexpected reply", WG_STORE_KEY_IDLE_SHORT);
        return;
    }
    if (reply->elements == 2) {
        int64_t shortest = parse_score(reply->element[1]);
        if (shortest > 0 && (tier == 0 || (uint64_t)shortest < tier))
            tier = (uint64_t)shortest;
    }
    if (tier == 0)
        return; /* no tier is on anywhere: nothing can be idle */
    op->cutoff = now_ms(op->s) - (int64_t)tier;
    av_str(&a, "ZRANGEBYSCORE");
    av_str(&a, WG_STORE_KEY_ACTIVE);
    av_str(&a, "-inf");
    av_fmt(&a, "%" PRId64, op->cutoff);
    av_str(&a, "WITHSCORES");
    av_str(&a, "LIMIT");
    av_fmt(&a, "%zu", op->offset);
    av_fmt(&a, "%zu", op->limit);
    rc = send_part(op, op->s->redis, R_SCORE, 0, &a);
    av_release(&a);
    if (rc < 0)
        op_fail(op, rc, "sending the range read: %s", strerror(-rc));
}

static void handle_reply(struct op *op, enum role role, size_t idx, const redisReply *reply)
{
    char err[ERR_MAX];
    int rc;

    switch (op->kind) {
    case OP_CREATE:
    case OP_SCRIPT:
        handle_script(op, reply);
        return;
    case OP_GET:
        if (role == R_SCORE) {
            op->score = parse_score(reply);
            return;
        }
        rc = decode_hash(reply, op->id, &op->rec, err, sizeof(err));
        if (rc < 0)
            op_fail(op, rc, "%s", err);
        else
            op->has_rec = true;
        return;
    case OP_LIST:
        handle_list(op, role, idx, reply);
        return;
    case OP_TOUCH:
    case OP_WAKE_ACK:
        if (reply->type != REDIS_REPLY_INTEGER) {
            op_fail(op, -EPROTO, "unexpected reply to %s", op->kind == OP_TOUCH ? "ZADD" : "XACK");
            return;
        }
        op->count += reply->integer;
        return;
    case OP_RANGE:
        handle_range(op, reply);
        return;
    case OP_COUNTS:
        handle_counts(op, reply);
        return;
    case OP_REAP:
        if (role == R_MEMBERS)
            handle_reap_short(op, reply);
        else if (role == R_SCORE)
            handle_reap_range(op, reply);
        else
            handle_reap_hash(op, idx, reply);
        return;
    case OP_XADD:
        if (copy_stream_id(reply, op->event_id) < 0)
            op_fail(op, -EPROTO, "unexpected reply to XADD");
        return;
    case OP_LOCK_SET:
        if (reply->type == REDIS_REPLY_NIL) {
            op->status = WG_STORE_BUSY;
            snprintf(op->error, sizeof(op->error), "lock of session %s is held", op->id);
        } else if (!str_eq(reply, "OK")) {
            op_fail(op, -EPROTO, "unexpected reply to SET NX");
        }
        return;
    case OP_LOCK_EVAL:
        if (reply->type != REDIS_REPLY_INTEGER) {
            op_fail(op, -EPROTO, "unexpected reply from the lock script");
        } else if (reply->integer != 1) {
            op->status = WG_STORE_NOT_HELD;
            snprintf(op->error, sizeof(op->error), "lock of session %s is not held with this token",
                     op->id);
        }
        return;
    case OP_GROUP:
        if (reply->type == REDIS_REPLY_ERROR) { /* BUSYGROUP: part_cb let only that through */
            op->status = WG_STORE_EXISTS;
            snprintf(op->error, sizeof(op->error), "%.*s", (int)reply->len, reply->str);
        } else if (!str_eq(reply, "OK")) {
            op_fail(op, -EPROTO, "unexpected reply to XGROUP CREATE");
        }
        return;
    case OP_WAKE_READ:
        rc = wg_store_parse_xreadgroup(reply, op->wake, op->max_wake, &op->n_wake);
        if (rc < 0)
            op_fail(op, rc, "unexpected reply to XREADGROUP");
        return;
    case OP_WAKE_CLAIM:
        rc = wg_store_parse_xautoclaim(reply, op->next_id, op->wake, op->max_wake, &op->n_wake);
        if (rc < 0)
            op_fail(op, rc, "unexpected reply to XAUTOCLAIM");
        return;
    }
}

/* ---- life --------------------------------------------------------------------------------------
 */

int wg_store_new(struct wg_redis *redis, const struct wg_store_opts *opts,
                 struct wg_store **ret_store)
{
    struct wg_store *s;

    if (!redis || !ret_store)
        return -EINVAL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->redis = redis;
    s->log = opts ? opts->log : NULL;
    s->events_max = opts && opts->events_max ? opts->events_max : WG_STORE_EVENTS_MAX;
    s->wake_max = opts && opts->wake_max ? opts->wake_max : WG_STORE_WAKE_MAX;
    s->clock_ms = opts && opts->clock_ms ? opts->clock_ms : realtime_ms;
    s->clock_arg = opts ? opts->clock_arg : NULL;
    *ret_store = s;
    return 0;
}

void wg_store_free(struct wg_store *s)
{
    if (!s || s->closing)
        return;
    /* The callbacks below may call wg_store_free(s) again (a no-op now) or
     * try new calls (refused): s stays valid until the loop is done. Each
     * op is unlinked before its callback, so the list is walked afresh. */
    s->closing = true;
    while (s->ops) {
        struct op *op = s->ops;

        op->status = -ECANCELED;
        snprintf(op->error, sizeof(op->error), "store closed");
        op_deliver(op);
        if (op->outstanding == 0) /* not expected: linked ops await replies */
            op_free(op);
    }
    free(s);
}

/* ---- checks ------------------------------------------------------------------------------------
 */

static bool id_ok(const char *id)
{
    return id && wg_session_id_valid(id, strlen(id));
}

static bool host_ok(const char *host)
{
    return host && wg_session_host_valid(host, strlen(host));
}

bool wg_store_name_valid(const char *s)
{
    size_t len;

    if (!s || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') ||
                (s[0] >= '0' && s[0] <= '9')))
        return false;
    len = strlen(s);
    if (len > WG_STORE_NAME_MAX)
        return false;
    for (size_t i = 1; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return false;
    }
    return true;
}

static bool token_ok(const char *t)
{
    size_t len = t ? strlen(t) : 0;

    if (len == 0 || len > 64)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z') ||
              (t[i] >= '0' && t[i] <= '9') || t[i] == '_' || t[i] == '-'))
            return false;
    return true;
}

/* NULL is no detail; otherwise JSON text of bounded size. */
static bool detail_ok(const char *detail)
{
    json_error_t jerr;
    json_t *j;
    size_t len;

    if (!detail)
        return true;
    len = strlen(detail);
    if (len == 0 || len > WG_STORE_DETAIL_MAX)
        return false;
    j = json_loadb(detail, len, JSON_DECODE_ANY, &jerr);
    if (!j)
        return false;
    json_decref(j);
    return true;
}

static bool event_type_ok(const char *t)
{
    size_t len = t ? strlen(t) : 0;

    if (len == 0 || len > 32 || !(t[0] >= 'a' && t[0] <= 'z') || strcmp(t, "transition") == 0)
        return false;
    for (size_t i = 1; i < len; i++)
        if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= '0' && t[i] <= '9') || t[i] == '_' ||
              t[i] == '.'))
            return false;
    return true;
}

/* ---- records -----------------------------------------------------------------------------------
 */

static void av_fields(struct argv *a, const struct wg_session_hash *h)
{
    for (size_t i = 0; i < h->n; i++) {
        av_add(a, h->kv[i].name, h->kv[i].name_len);
        av_add(a, h->kv[i].value, h->kv[i].value_len);
    }
}

int wg_store_create(struct wg_store *s, const char *id, const struct wg_session_update *fields,
                    const char *detail_json, wg_store_cb *cb, void *arg)
{
    struct wg_session_hash h;
    struct argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || !id_ok(id) || !detail_ok(detail_json))
        return -EINVAL;
    if (fields && (fields->set & WG_SF_RESTARTS_INCR))
        return -EINVAL;
    if ((rc = wg_session_update_encode(fields, &h, NULL, 0)) < 0)
        return rc;
    if ((rc = op_start(s, OP_CREATE, id, cb, arg, &op)) < 0)
        return rc;
    av_str(&a, "EVAL");
    av_str(&a, script_create);
    av_str(&a, "7");
    av_fmt(&a, WG_STORE_KEY_SESSION_PREFIX "%s", id);
    av_str(&a, WG_STORE_KEY_EVENTS);
    av_str(&a, WG_STORE_KEY_SESSIONS);
    av_str(&a, WG_STORE_KEY_ACTIVE);
    av_str(&a, WG_STORE_KEY_TRANSIENT);
    av_str(&a, WG_STORE_KEY_IDLE_SHORT);
    av_str(&a, WG_STORE_KEY_COUNTS);
    av_str(&a, id);
    av_fmt(&a, "%" PRId64, now_ms(s));
    av_fmt(&a, "%" PRIu32, s->events_max);
    av_str(&a, detail_json ? detail_json : "");
    av_str(&a, WG_STORE_CHANNEL_STATE);
    av_fields(&a, &h);
    rc = send_part(op, s->redis, R_MAIN, 0, &a);
    av_release(&a);
    return rc < 0 ? op_abort(op, rc) : 0;
}

int wg_store_get(struct wg_store *s, const char *id, wg_store_cb *cb, void *arg)
{
    struct argv a = {0}, z = {0};
    struct op *op;
    int rc;

    if (!s || !cb || !id_ok(id))
        return -EINVAL;
    if ((rc = op_start(s, OP_GET, id, cb, arg, &op)) < 0)
        return rc;
    av_str(&a, "HGETALL");
    av_fmt(&a, WG_STORE_KEY_SESSION_PREFIX "%s", id);
    rc = send_part(op, s->redis, R_MAIN, 0, &a);
    if (rc == 0) {
        av_str(&z, "ZSCORE");
        av_str(&z, WG_STORE_KEY_ACTIVE);
        av_str(&z, id);
        rc = send_part(op, s->redis, R_SCORE, 0, &z);
    }
    av_release(&a);
    av_release(&z);
    return rc < 0 ? op_abort(op, rc) : 0;
}

int wg_store_list(struct wg_store *s, wg_store_cb *cb, void *arg)
{
    struct argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb)
        return -EINVAL;
    if ((rc = op_start(s, OP_LIST, NULL, cb, arg, &op)) < 0)
        return rc;
    av_str(&a, "SMEMBERS");
    av_str(&a, WG_STORE_KEY_SESSIONS);
    rc = send_part(op, s->redis, R_MEMBERS, 0, &a);
    av_release(&a);
    return rc < 0 ? op_abort(op, rc) : 0;
}

/* Sends the transition script. to_name "" updates in place; allowed is the
 * mask of current states accepted, or ~0u for any value (destroy only). */
static int run_script(struct wg_store *s, const char *id, unsigned allowed, const char *to_name,
                      int64_t idle_cutoff_ms, const struct wg_session_update *fields,
                      const char *detail_json, wg_store_cb *cb, void *arg)
{
    struct wg_session_hash h;
    struct argv a = {0};
    char names[WG_SESSION_STATE_COUNT * 12] = "";
    size_t off = 0;
    struct op *op;
    int rc;

    if ((rc = wg_session_update_encode(fields, &h, NULL, 0)) < 0)
        return rc;
    if (allowed == ~0u) {
        snprintf(names, sizeof(names), "*");
    } else {
        for (unsigned st = 0; st < WG_SESSION_STATE_COUNT; st++)
            if (WG_SESSION_IN(st, allowed))
                off += (size_t)snprintf(names + off, sizeof(names) - off, "%s%s", off ? " " : "",
                                        wg_session_state_name((enum wg_session_state)st));
    }
    if ((rc = op_start(s, OP_SCRIPT, id, cb, arg, &op)) < 0)
        return rc;
    av_str(&a, "EVAL");
    av_str(&a, script_transition);
    av_str(&a, "7");
    av_fmt(&a, WG_STORE_KEY_SESSION_PREFIX "%s", id);
    av_str(&a, WG_STORE_KEY_EVENTS);
    av_str(&a, WG_STORE_KEY_ACTIVE);
    av_str(&a, WG_STORE_KEY_SESSIONS);
    av_str(&a, WG_STORE_KEY_TRANSIENT);
    av_str(&a, WG_STORE_KEY_IDLE_SHORT);
    av_str(&a, WG_STORE_KEY_COUNTS);
    av_str(&a, id);
    av_str(&a, names);
    av_str(&a, to_name);
    av_fmt(&a, "%" PRId64, now_ms(s));
    av_fmt(&a, "%" PRIu32, s->events_max);
    av_str(&a, detail_json ? detail_json : "");
    av_str(&a, WG_STORE_CHANNEL_STATE);
    av_str(&a, fields && (fields->set & WG_SF_RESTARTS_INCR) ? "1" : "0");
    if (idle_cutoff_ms >= 0)
        av_fmt(&a, "%" PRId64, idle_cutoff_ms);
    else
        av_str(&a, "");
    av_fields(&a, &h);
    rc = send_part(op, s->redis, R_MAIN, 0, &a);
    av_release(&a);
    return rc < 0 ? op_abort(op, rc) : 0;
}

int wg_store_transition(struct wg_store *s, const char *id, unsigned from_mask,
                        enum wg_session_state to, const struct wg_session_update *fields,
                        const char *detail_json, wg_store_cb *cb, void *arg)
{
    return wg_store_transition_idle(s, id, from_mask, to, -1, fields, detail_json, cb, arg);
}

int wg_store_transition_idle(struct wg_store *s, const char *id, unsigned from_mask,
                             enum wg_session_state to, int64_t idle_cutoff_ms,
                             const struct wg_session_update *fields, const char *detail_json,
                             wg_store_cb *cb, void *arg)
{
    unsigned allowed;

    if (!s || !cb || !id_ok(id) || (unsigned)to >= WG_SESSION_STATE_COUNT ||
        !detail_ok(detail_json))
        return -EINVAL;
    allowed = from_mask & wg_session_allowed_from(to);
    if (allowed == 0)
        return -EINVAL;
    if (to == WG_SESSION_DESTROYED && (from_mask & WG_SESSION_ANY) == WG_SESSION_ANY)
        allowed = ~0u;
    return run_script(s, id, allowed, wg_session_state_name(to), idle_cutoff_ms, fields,
                      detail_json, cb, arg);
}

int wg_store_update(struct wg_store *s, const char *id, unsigned state_mask,
                    const struct wg_session_update *fields, wg_store_cb *cb, void *arg)
{
    unsigned allowed = state_mask & WG_SESSION_ANY & ~WG_SESSION_BIT(WG_SESSION_DESTROYED);

    if (!s || !cb || !id_ok(id) || allowed == 0)
        return -EINVAL;
    return run_script(s, id, allowed, "", -1, fields, NULL, cb, arg);
}

int wg_store_delete(struct wg_store *s, const char *id, unsigned from_mask, const char *detail_json,
                    wg_store_cb *cb, void *arg)
{
    return wg_store_transition(s, id, from_mask, WG_SESSION_DESTROYED, NULL, detail_json, cb, arg);
}

/* ---- activity ----------------------------------------------------------------------------------
 */

int wg_store_touch(struct wg_store *s, const struct wg_store_activity *acts, size_t n,
                   wg_store_cb *cb, void *arg)
{
    struct op *op;
    int rc = 0;

    if (!s || !cb || !acts || n == 0)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!id_ok(acts[i].id) || acts[i].at_ms < 0)
            return -EINVAL;
    if ((rc = op_start(s, OP_TOUCH, NULL, cb, arg, &op)) < 0)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i += TOUCH_CHUNK) {
        struct argv a = {0};

        av_str(&a, "ZADD");
        av_str(&a, WG_STORE_KEY_ACTIVE);
        av_str(&a, "XX");
        av_str(&a, "GT");
        av_str(&a, "CH");
        for (size_t k = i; k < n && k < i + TOUCH_CHUNK; k++) {
            av_fmt(&a, "%" PRId64, acts[k].at_ms);
            av_str(&a, acts[k].id);
        }
        rc = send_part(op, s->redis, R_MAIN, 0, &a);
        av_release(&a);
    }
    return rc < 0 ? op_abort(op, rc) : 0;
}

/* Members of a score index (wg:active, wg:transient) scored at or before
 * cutoff_ms, oldest first. */
static int range_index(struct wg_store *s, const char *key, int64_t cutoff_ms, size_t offset,
                       size_t limit, wg_store_cb *cb, void *arg)
{
    struct argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || limit == 0 || limit > WG_STORE_BATCH_MAX)
        return -EINVAL;
    if ((rc = op_start(s, OP_RANGE, NULL, cb, arg, &op)) < 0)
        return rc;
    av_str(&a, "ZRANGEBYSCORE");
    av_str(&a, key);
    av_str(&a, "-inf");
    av_fmt(&a, "%" PRId64, cutoff_ms);
    av_str(&a, "WITHSCORES");
    av_str(&a, "LIMIT");
    av_fmt(&a, "%zu", offset);
    av_fmt(&a, "%zu", limit);
    rc = send_part(op, s->redis, R_MAIN, 0, &a);
    av_release(&a);
    return rc < 0 ? op_abort(op, rc) : 0;
}

int wg_store_range_idle(struct wg_store *s, int64_t cutoff_ms, size_t offset, size_t limit,
                        wg_store_cb *cb, void *arg)
{
    return range_index(s, WG_STORE_KEY_ACTIVE, cutoff_ms, offset, limit, cb, arg);
}

int wg_store_range_transient(struct wg_store *s, int64_t cutoff_ms, size_t offset, size_t limit,
                             wg_store_cb *cb, void *arg)
{
    return range_index(s, WG_STORE_KEY_TRANSIENT, cutoff_ms, offset, limit, cb, arg);
}

int wg_store_counts(struct wg_store *s, wg_store_cb *cb, void *arg)
{
    struct argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb)
        return -EINVAL;
    if ((rc = op_start(s, OP_COUNTS, NULL, cb, arg, &op)) < 0)
        return rc;
    av_str(&a, "HGETALL");
    av_str(&a, WG_STORE_KEY_COUNTS);
    rc = send_part(op, s->redis, R_MAIN, 0, &a);
    av_release(&a);
    return rc < 0 ? op_abort(op, rc) : 0;
}

int wg_store_reap_scan(struct wg_store *s, uint64_t tier_ms, size_t offset, size_t limit,
                       wg_store_cb *cb, void *arg)
{
    struct argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || limit == 0 || limit > WG_STORE_BATCH_MAX)
        return -EINVAL;
    if ((rc = op_start(s, OP_REAP, NULL, cb, arg, &op)) < 0)
        return rc;
    op->tier_ms = tier_ms;
    op->offset = offset;
    op->limit = limit;
    op->cutoff = -1;
    av_str(&a, "ZRANGE");
    av_str(&a, WG_STORE_KEY_IDLE_SHORT);
    av_str(&a, "0");
    av_str(&a, "0");
    av_str(&a, "WITHSCORES");
    rc = send_part(op, s->redis, R_MEMBERS, 0, &a);
    av_release(&a);
    return rc < 0 ? op_abort(op, rc) : 0;
}

/* ---- events ------------------------------------------------------------------------------------
 */

int wg_store_event_add(struct wg_store *s, const char *id, const char *type,
                       const char *detail_json, wg_store_cb *cb, void *arg)
{
    struct argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || !id_ok(id) || !event_type_ok(type) || !detail_ok(detail_json))
        return -EINVAL;
    if ((rc = op_start(s, OP_XADD, id, cb, arg, &op)) < 0)
        return rc;
    av_str(&a, "XADD");
    av_str(&a, WG_STORE_KEY_EVENTS);
    av_str(&a, "MAXLEN");
    av_str(&a, "~");
    av_fmt(&a, "%" PRIu32, s->events_max);
    av_str(&a, "*");
    av_str(&a, "id");
    av_str(&a, id);
    av_str(&a, "type");
    av_str(&a, type);
    av_str(&a, "at");
    av_fmt(&a, "%" PRId64, now_ms(s));
    if (detail_json) {
        av_str(&a, "detail");
        av_str(&a, detail_json);
    }
    rc = send_part(op, s->redis, R_MAIN, 0, &a);
    av_release(&a);
    return rc < 0 ? op_abort(op, rc) : 0;
}

/* ---- locks -------------------------------------------------------------------------------------
 */

int wg_store_lock_token(char out[WG_STORE_TOKEN_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[WG_STORE_TOKEN_LEN / 2];
    size_t got = 0;

    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof(raw); i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[WG_STORE_TOKEN_LEN] = '\0';
    return 0;
}

int wg_store_lock_acquire(struct wg_store *s, const char *id, const char *token, uint32_t ttl_ms,
                          wg_store_cb *cb, void *arg)
{
    struct argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || !id_ok(id) || !token_ok(token) || ttl_ms == 0)
        return -EINVAL;
    if ((rc = op_start(s, OP_LOCK_SET, id, cb, arg, &op)) < 0)
        return rc;
    av_str(&a, "SET");
    av_fmt(&a, WG_STORE_KEY_LOCK_PREFIX "%s", id);
    av_str(&a, token);
    av_str(&a, "NX");
    av_str(&a, "PX");
    av_fmt(&a, "%" PRIu32, ttl_ms);
    rc = send_part(op, s->redis, R_MAIN, 0, &a);
    av_release(&a);
    return rc < 0 ? op_abort(op, rc) : 0;
}

static int lock_eval(struct wg_store *s, const char *script, const char *id, const char *token,
                     uint32_t ttl_ms, wg_store_cb *cb, void *arg)
{
    struct argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || !id_ok(id) || !token_ok(token))
        return -EINVAL;
    if ((rc = op_start(s, OP_LOCK_EVAL, id, cb, arg, &op)) < 0)
        return rc;
    av_str(&a, "EVAL");
    av_str(&a, script);
    av_str(&a, "1");
    av_fmt(&a, WG_STORE_KEY_LOCK_PREFIX "%s", id);
    av_str(&a, token);
    if (ttl_ms)
        av_fmt(&a, "%" PRIu32, ttl_ms);
    rc = send_part(op, s->redis, R_MAIN, 0, &a);
    av_release(&a);
    return rc < 0 ? op_abort(op, rc) : 0;
}

int wg_store_lock_release(struct wg_store *s, const char *id, const char *token, wg_store_cb *cb,
                          void *arg)
{
    return lock_eval(s, script_unlock, id, token, 0, cb, arg);
}

int wg_store_lock_extend(struct wg_store *s, const char *id, const char *token, uint32_t ttl_ms,
                         wg_store_cb *cb, void *arg)
{
    if (ttl_ms == 0)
        return -EINVAL;
    return lock_eval(s, script_extend, id, token, ttl_ms, cb, arg);
}

/* ---- wake streams ------------------------------------------------------------------------------
 */

static const char *const wake_op_names[] = {
    [WG_WAKE_OP_WAKE] = "wake", [WG_WAKE_OP_SLEEP] = "sleep", [WG_WAKE_OP_DESTROY] = "destroy"};

const char *wg_wake_op_name(enum wg_wake_op op)
{
    return (unsigned)op <= WG_WAKE_OP_DESTROY ? wake_op_names[op] : "?";
}

int wg_store_wake_group(struct wg_store *s, const char *host, const char *group, wg_store_cb *cb,
                        void *arg)
{
    struct argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || !host_ok(host) || !wg_store_name_valid(group))
        return -EINVAL;
    if ((rc = op_start(s, OP_GROUP, NULL, cb, arg, &op)) < 0)
        return rc;
    av_str(&a, "XGROUP");
    av_str(&a, "CREATE");
    av_fmt(&a, WG_STORE_KEY_WAKE_PREFIX "%s", host);
    av_str(&a, group);
    av_str(&a, "0");
    av_str(&a, "MKSTREAM");
    rc = send_part(op, s->redis, R_MAIN, 0, &a);
    av_release(&a);
    return rc < 0 ? op_abort(op, rc) : 0;
}

int wg_store_wake_add(struct wg_store *s, const char *host, const struct wg_wake_cmd *cmd,
                      wg_store_cb *cb, void *arg)
{
    struct argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || !host_ok(host) || !cmd || !id_ok(cmd->session) ||
        (unsigned)cmd->op > WG_WAKE_OP_DESTROY || cmd->at < 0 ||
        (cmd->from[0] && !wg_store_name_valid(cmd->from)))
        return -EINVAL;
    if ((rc = op_start(s, OP_XADD, cmd->session, cb, arg, &op)) < 0)
        return rc;
    av_str(&a, "XADD");
    av_fmt(&a, WG_STORE_KEY_WAKE_PREFIX "%s", host);
    av_str(&a, "MAXLEN");
    av_str(&a, "~");
    av_fmt(&a, "%" PRIu32, s->wake_max);
    av_str(&a, "*");
    av_str(&a, "session");
    av_str(&a, cmd->session);
    av_str(&a, "op");
    av_str(&a, wg_wake_op_name(cmd->op));
    av_str(&a, "at");
    av_fmt(&a, "%" PRId64, cmd->at ? cmd->at : now_ms(s));
    if (cmd->from[0]) {
        av_str(&a, "from");
        av_str(&a, cmd->from);
    }
    if (cmd->force) {
        av_str(&a, "force");
        av_str(&a, "1");
    }
    rc = send_part(op, s->redis, R_MAIN, 0, &a);
    av_release(&a);
    return rc < 0 ? op_abort(op, rc) : 0;
}

/* An op that collects up to count wake entries. */
static int wake_op(struct wg_store *s, enum op_kind kind, size_t count, wg_store_cb *cb, void *arg,
                   struct op **ret_op)
{
    struct op *op;
    int rc = op_start(s, kind, NULL, cb, arg, &op);

    if (rc < 0)
        return rc;
    op->wake = calloc(count, sizeof(*op->wake));
    if (!op->wake) {
        op_unlink(op);
        op_free(op);
        return -ENOMEM;
    }
    op->max_wake = count;
    *ret_op = op;
    return 0;
}

int wg_store_wake_read(struct wg_store *s, struct wg_redis *blocking, const char *host,
                       const char *group, const char *consumer, size_t count, uint32_t block_ms,
                       bool pending, wg_store_cb *cb, void *arg)
{
    struct argv a = {0};
    struct op *op;
    int rc;

    if (!s || !blocking || !cb || !host_ok(host) || !wg_store_name_valid(group) ||
        !wg_store_name_valid(consumer) || count == 0 || count > WG_STORE_BATCH_MAX)
        return -EINVAL;
    if ((rc = wake_op(s, OP_WAKE_READ, count, cb, arg, &op)) < 0)
        return rc;
    av_str(&a, "XREADGROUP");
    av_str(&a, "GROUP");
    av_str(&a, group);
    av_str(&a, consumer);
    av_str(&a, "COUNT");
    av_fmt(&a, "%zu", count);
    if (block_ms) {
        av_str(&a, "BLOCK");
        av_fmt(&a, "%" PRIu32, block_ms);
    }
    av_str(&a, "STREAMS");
    av_fmt(&a, WG_STORE_KEY_WAKE_PREFIX "%s", host);
    av_str(&a, pending ? "0" : ">");
    rc = send_part(op, blocking, R_MAIN, 0, &a);
    av_release(&a);
    return rc < 0 ? op_abort(op, rc) : 0;
}

int wg_store_wake_ack(struct wg_store *s, const char *host, const char *group,
                      const char *const *entry_ids, size_t n, wg_store_cb *cb, void *arg)
{
    struct argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || !host_ok(host) || !wg_store_name_valid(group) || !entry_ids || n == 0 ||
        n > WG_STORE_BATCH_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!entry_ids[i] || !stream_id_valid(entry_ids[i], strlen(entry_ids[i])))
            return -EINVAL;
    if ((rc = op_start(s, OP_WAKE_ACK, NULL, cb, arg, &op)) < 0)
        return rc;
    av_str(&a, "XACK");
    av_fmt(&a, WG_STORE_KEY_WAKE_PREFIX "%s", host);
    av_str(&a, group);
    for (size_t i = 0; i < n; i++)
        av_str(&a, entry_ids[i]);
    rc = send_part(op, s->redis, R_MAIN, 0, &a);
    av_release(&a);
    return rc < 0 ? op_abort(op, rc) : 0;
}

int wg_store_wake_claim(struct wg_store *s, const char *host, const char *group,
                        const char *consumer, uint64_t min_idle_ms, const char *start, size_t count,
                        wg_store_cb *cb, void *arg)
{
    struct argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || !host_ok(host) || !wg_store_name_valid(group) ||
        !wg_store_name_valid(consumer) || !start || !stream_id_valid(start, strlen(start)) ||
        count == 0 || count > WG_STORE_BATCH_MAX)
        return -EINVAL;
    if ((rc = wake_op(s, OP_WAKE_CLAIM, count, cb, arg, &op)) < 0)
        return rc;
    av_str(&a, "XAUTOCLAIM");
    av_fmt(&a, WG_STORE_KEY_WAKE_PREFIX "%s", host);
    av_str(&a, group);
    av_str(&a, consumer);
    av_fmt(&a, "%" PRIu64, min_idle_ms);
    av_str(&a, start);
    av_str(&a, "COUNT");
    av_fmt(&a, "%zu", count);
    rc = send_part(op, s->redis, R_MAIN, 0, &a);
    av_release(&a);
    return rc < 0 ? op_abort(op, rc) : 0;
}

/* ---- parsers -----------------------------------------------------------------------------------
 */

static bool reply_eq(const redisReply *r, const char *s)
{
    return str_eq(r, s);
}

/* Parses decimal ms: digits only, <= INT64_MAX. */
static bool parse_ms(const char *s, size_t len, int64_t *ret)
{
    uint64_t v = 0;

    if (len == 0 || len > 19)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > INT64_MAX)
        return false;
    *ret = (int64_t)v;
    return true;
}

/* Fills e from an entry's field list; anything off marks it bad. */
static void parse_wake_fields(const redisReply *f, struct wg_wake_cmd *e)
{
    bool have_session = false, have_op = false, have_at = false;

    if (!f || f->type != REDIS_REPLY_ARRAY || f->elements % 2 != 0) {
        e->bad = true;
        return;
    }
    for (size_t i = 0; i < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];

        if (!is_str(k) || !is_str(v)) {
            e->bad = true;
            return;
        }
        if (reply_eq(k, "session")) {
            if (have_session || !wg_session_id_valid(v->str, v->len))
                goto bad;
            memcpy(e->session, v->str, v->len);
            e->session[v->len] = '\0';
            have_session = true;
        } else if (reply_eq(k, "op")) {
            bool found = false;
            for (unsigned o = 0; o <= WG_WAKE_OP_DESTROY; o++) {
                if (reply_eq(v, wake_op_names[o])) {
                    e->op = (enum wg_wake_op)o;
                    found = true;
                }
            }
            if (have_op || !found)
                goto bad;
            have_op = true;
        } else if (reply_eq(k, "at")) {
            if (have_at || !parse_ms(v->str, v->len, &e->at))
                goto bad;
            have_at = true;
        } else if (reply_eq(k, "from")) {
            char tmp[WG_STORE_NAME_MAX + 1];
            if (v->len > WG_STORE_NAME_MAX || memchr(v->str, '\0', v->len))
                goto bad;
            memcpy(tmp, v->str, v->len);
            tmp[v->len] = '\0';
            if (!wg_store_name_valid(tmp))
                goto bad;
            memcpy(e->from, tmp, v->len + 1);
        } else if (reply_eq(k, "force")) {
            if (!reply_eq(v, "0") && !reply_eq(v, "1"))
                goto bad;
            e->force = v->str[0] == '1';
        }
    }
    if (have_session && have_op && have_at)
        return;
bad:
    e->bad = true;
}

int wg_store_parse_wake_entries(const redisReply *entries, struct wg_wake_cmd *out, size_t max,
                                size_t *ret_n)
{
    if (!entries || entries->type != REDIS_REPLY_ARRAY || entries->elements > max)
        return -EPROTO;
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        struct wg_wake_cmd *c = &out[i];

        memset(c, 0, sizeof(*c));
        if (!e || e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            copy_stream_id(e->element[0], c->entry_id) < 0)
            return -EPROTO;
        parse_wake_fields(e->element[1], c); /* nil fields: deleted from the stream */
    }
    *ret_n = entries->elements;
    return 0;
}

int wg_store_parse_xreadgroup(const redisReply *reply, struct wg_wake_cmd *out, size_t max,
                              size_t *ret_n)
{
    const redisReply *stream;

    if (!reply)
        return -EPROTO;
    if (reply->type == REDIS_REPLY_NIL ||
        (reply->type == REDIS_REPLY_ARRAY && reply->elements == 0)) {
        *ret_n = 0;
        return 0;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 1)
        return -EPROTO;
    stream = reply->element[0];
    if (!stream || stream->type != REDIS_REPLY_ARRAY || stream->elements != 2 ||
        !is_str(stream->element[0]))
        return -EPROTO;
    return wg_store_parse_wake_entries(stream->element[1], out, max, ret_n);
}

int wg_store_parse_xautoclaim(const redisReply *reply, char *next_id, struct wg_wake_cmd *out,
                              size_t max, size_t *ret_n)
{
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
        copy_stream_id(reply->element[0], next_id) < 0)
        return -EPROTO;
    return wg_store_parse_wake_entries(reply->element[1], out, max, ret_n);
}

int wg_store_parse_state_msg(const char *data, size_t len, struct wg_state_msg *ret_msg)
{
    struct wg_state_msg m;
    json_error_t jerr;
    json_t *root, *id, *state, *v, *ip, *port;
    unsigned char addr[16];
    int rc = -EBADMSG;

    memset(&m, 0, sizeof(m));
    if (!data || len == 0 || len > 4096)
        return -EBADMSG;
    root = json_loadb(data, len, 0, &jerr);
    if (!root)
        return -EBADMSG;
    id = json_object_get(root, "id");
    state = json_object_get(root, "state");
    v = json_object_get(root, "v");
    ip = json_object_get(root, "ip");
    port = json_object_get(root, "port");
    if (!json_is_string(id) || !wg_session_id_valid(json_string_value(id), json_string_length(id)))
        goto out;
    memcpy(m.id, json_string_value(id), json_string_length(id) + 1);
    if (!json_is_string(state) ||
        wg_session_state_parse(json_string_value(state), json_string_length(state), &m.state) < 0)
        goto out;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        goto out;
    m.version = (uint64_t)json_integer_value(v);
    if (ip) {
        if (!json_is_string(ip) || json_string_length(ip) > WG_SESSION_IP_MAX ||
            strlen(json_string_value(ip)) != json_string_length(ip) ||
            (inet_pton(AF_INET, json_string_value(ip), addr) != 1 &&
             inet_pton(AF_INET6, json_string_value(ip), addr) != 1))
            goto out;
        memcpy(m.ip, json_string_value(ip), json_string_length(ip) + 1);
    }
    if (port) {
        if (!json_is_integer(port) || json_integer_value(port) < 1 ||
            json_integer_value(port) > 65535)
            goto out;
        m.port = (uint16_t)json_integer_value(port);
    }
    *ret_msg = m;
    rc = 0;
out:
    json_decref(root);
    return rc;
}
