/* common/store_activity.c - activity and what reads it: touches (ZADD
 * wg:active), the idle and transient ranges, the counts by state and the
 * reaper's scan. */
#include "common/store.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/store_int.h"

#define TOUCH_CHUNK 256 /* sessions per ZADD */

static void handle_range(struct op *op, const redisReply *reply)
{
    size_t n;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 2 != 0) {
        store_op_fail(op, -EPROTO, "ZRANGEBYSCORE %s: unexpected reply", WG_STORE_KEY_ACTIVE);
        return;
    }
    n = reply->elements / 2;
    if (n == 0)
        return;
    op->idle = calloc(n, sizeof(*op->idle));
    if (!op->idle) {
        store_op_fail(op, -ENOMEM, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const redisReply *m = reply->element[2 * i];
        int64_t score = store_parse_score(reply->element[2 * i + 1]);
        struct wg_store_idle *e = &op->idle[op->n_idle];

        if (!store_reply_str(m) || !wg_session_id_valid(m->str, m->len) || score < 0) {
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
        store_op_fail(op, -EPROTO, "HGETALL %s: unexpected reply", WG_STORE_KEY_COUNTS);
        return;
    }
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
        const redisReply *k = reply->element[i], *v = reply->element[i + 1];
        enum wg_session_state st;
        char buf[24], *end;
        long long n;

        if (!store_reply_str(k) || wg_session_state_parse(k->str, k->len, &st) < 0 ||
            !store_reply_str(v) || v->len == 0 || v->len >= sizeof(buf)) {
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
    if (!store_reply_str(r) || r->len == 0 || r->len >= sizeof(buf))
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
        store_op_fail(op, -EPROTO, "HMGET: unexpected reply");
        return;
    }
    f = (const redisReply *const *)reply->element;
    if (f[0]->type == REDIS_REPLY_NIL)
        return; /* the record went away since the range read: not idle any more */
    if (!store_reply_str(f[0]) || wg_session_state_parse(f[0]->str, f[0]->len, &e->state) < 0 ||
        (f[1]->type != REDIS_REPLY_NIL &&
         (!store_reply_str(f[1]) || f[1]->len > WG_SESSION_HOST_MAX)) ||
        !reap_num(f[2], -1, &stop) || !reap_num(f[3], -1, &pause) || !reap_num(f[4], 0, &save_at) ||
        !reap_num(f[5], 0, &save_ok) || save_ok > 1 || !reap_num(f[6], 0, &since)) {
        op->n_bad++;
        return;
    }
    if (store_reply_str(f[1])) { /* no host: a record no orchestrator owns yet */
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
        store_op_fail(op, -ENOMEM, "out of memory");
        return;
    }
    for (size_t i = 0; i < op->n_idle && rc == 0; i++) {
        struct store_argv a = {0};

        memcpy(op->reap[i].id, op->idle[i].id, sizeof(op->reap[i].id));
        op->reap[i].last_active = op->idle[i].last_active;
        store_av_str(&a, "HMGET");
        store_av_key(&a, WG_STORE_KEY_SESSION_PREFIX, op->idle[i].id);
        for (size_t k = 0; k < REAP_FIELDS; k++)
            store_av_str(&a, reap_fields[k]);
        rc = store_send(op, op->s->redis, R_HASH, i, &a);
        store_av_release(&a);
    }
    if (rc < 0)
        store_op_fail(op, rc, "sending the record reads: %s", strerror(-rc));
}

/* The shortest idle override: widens the range to read. */
static void handle_reap_short(struct op *op, const redisReply *reply)
{
    uint64_t tier = op->tier_ms;
    struct store_argv a = {0};
    int rc;

    if (reply->type != REDIS_REPLY_ARRAY || (reply->elements != 0 && reply->elements != 2)) {
        store_op_fail(op, -EPROTO, "ZRANGE %s: unexpected reply", WG_STORE_KEY_IDLE_SHORT);
        return;
    }
    if (reply->elements == 2) {
        int64_t shortest = store_parse_score(reply->element[1]);
        if (shortest > 0 && (tier == 0 || (uint64_t)shortest < tier))
            tier = (uint64_t)shortest;
    }
    if (tier == 0)
        return; /* no tier is on anywhere: nothing can be idle */
    op->cutoff = store_now_ms(op->s) - (int64_t)tier;
    store_av_str(&a, "ZRANGEBYSCORE");
    store_av_str(&a, WG_STORE_KEY_ACTIVE);
    store_av_str(&a, "-inf");
    store_av_i64(&a, op->cutoff);
    store_av_str(&a, "WITHSCORES");
    store_av_str(&a, "LIMIT");
    store_av_u64(&a, op->offset);
    store_av_u64(&a, op->limit);
    rc = store_send(op, op->s->redis, R_SCORE, 0, &a);
    store_av_release(&a);
    if (rc < 0)
        store_op_fail(op, rc, "sending the range read: %s", strerror(-rc));
}

void store_activity_reply(struct op *op, enum role role, size_t idx, const redisReply *reply)
{
    switch (op->kind) {
    case OP_TOUCH:
        if (reply->type != REDIS_REPLY_INTEGER) {
            store_op_fail(op, -EPROTO, "unexpected reply to ZADD");
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
    default:
        return;
    }
}

int wg_store_touch(struct wg_store *s, const struct wg_store_activity *acts, size_t n,
                   wg_store_cb *cb, void *arg)
{
    struct op *op;
    int rc = 0;

    if (!s || !cb || !acts || n == 0)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!store_id_ok(acts[i].id) || acts[i].at_ms < 0)
            return -EINVAL;
    if ((rc = store_op_start(s, OP_TOUCH, NULL, cb, arg, &op)) < 0)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i += TOUCH_CHUNK) {
        struct store_argv a = {0};

        store_av_str(&a, "ZADD");
        store_av_str(&a, WG_STORE_KEY_ACTIVE);
        store_av_str(&a, "XX");
        store_av_str(&a, "GT");
        store_av_str(&a, "CH");
        for (size_t k = i; k < n && k < i + TOUCH_CHUNK; k++) {
            store_av_i64(&a, acts[k].at_ms);
            store_av_str(&a, acts[k].id);
        }
        rc = store_send(op, s->redis, R_MAIN, 0, &a);
        store_av_release(&a);
    }
    return rc < 0 ? store_op_abort(op, rc) : 0;
}

/* Members of a score index (wg:active, wg:transient) scored at or before
 * cutoff_ms, oldest first. */
static int range_index(struct wg_store *s, const char *key, int64_t cutoff_ms, size_t offset,
                       size_t limit, wg_store_cb *cb, void *arg)
{
    struct store_argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || limit == 0 || limit > WG_STORE_BATCH_MAX)
        return -EINVAL;
    if ((rc = store_op_start(s, OP_RANGE, NULL, cb, arg, &op)) < 0)
        return rc;
    store_av_str(&a, "ZRANGEBYSCORE");
    store_av_str(&a, key);
    store_av_str(&a, "-inf");
    store_av_i64(&a, cutoff_ms);
    store_av_str(&a, "WITHSCORES");
    store_av_str(&a, "LIMIT");
    store_av_u64(&a, offset);
    store_av_u64(&a, limit);
    rc = store_send(op, s->redis, R_MAIN, 0, &a);
    store_av_release(&a);
    return rc < 0 ? store_op_abort(op, rc) : 0;
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
    struct store_argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb)
        return -EINVAL;
    if ((rc = store_op_start(s, OP_COUNTS, NULL, cb, arg, &op)) < 0)
        return rc;
    store_av_str(&a, "HGETALL");
    store_av_str(&a, WG_STORE_KEY_COUNTS);
    rc = store_send(op, s->redis, R_MAIN, 0, &a);
    store_av_release(&a);
    return rc < 0 ? store_op_abort(op, rc) : 0;
}

int wg_store_reap_scan(struct wg_store *s, uint64_t tier_ms, size_t offset, size_t limit,
                       wg_store_cb *cb, void *arg)
{
    struct store_argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || limit == 0 || limit > WG_STORE_BATCH_MAX)
        return -EINVAL;
    if ((rc = store_op_start(s, OP_REAP, NULL, cb, arg, &op)) < 0)
        return rc;
    op->tier_ms = tier_ms;
    op->offset = offset;
    op->limit = limit;
    op->cutoff = -1;
    store_av_str(&a, "ZRANGE");
    store_av_str(&a, WG_STORE_KEY_IDLE_SHORT);
    store_av_str(&a, "0");
    store_av_str(&a, "0");
    store_av_str(&a, "WITHSCORES");
    rc = store_send(op, s->redis, R_MEMBERS, 0, &a);
    store_av_release(&a);
    return rc < 0 ? store_op_abort(op, rc) : 0;
}
