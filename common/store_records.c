/* common/store_records.c - reading records: one (wg_store_get()) or every
 * one (wg_store_list(): the ids, then one pipelined HGETALL per id and one
 * ZMSCORE for their wg:active scores). */
#include "common/store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/store_int.h"

static void handle_list_members(struct op *op, const redisReply *reply)
{
    struct wg_store *s = op->s;
    struct store_argv zm = {0};
    size_t n = 0;
    int rc = 0;

    if (reply->type != REDIS_REPLY_ARRAY) {
        store_op_fail(op, -EPROTO, "SMEMBERS %s: unexpected reply", WG_STORE_KEY_SESSIONS);
        return;
    }
    if (reply->elements > WG_STORE_LIST_MAX) {
        store_op_fail(op, -E2BIG, "%zu sessions, more than %d", reply->elements, WG_STORE_LIST_MAX);
        return;
    }
    if (reply->elements == 0)
        return;
    op->ids = calloc(reply->elements, sizeof(*op->ids));
    op->recs = calloc(reply->elements, sizeof(*op->recs));
    op->have = calloc(reply->elements, sizeof(*op->have));
    op->scores = calloc(reply->elements, sizeof(*op->scores));
    if (!op->ids || !op->recs || !op->have || !op->scores) {
        store_op_fail(op, -ENOMEM, "out of memory");
        return;
    }
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        if (!store_reply_str(e) || !wg_session_id_valid(e->str, e->len)) {
            op->n_bad++;
            continue;
        }
        memcpy(op->ids[n], e->str, e->len);
        op->ids[n][e->len] = '\0';
        op->scores[n] = -1;
        n++;
    }
    op->n_ids = n;
    store_av_str(&zm, "ZMSCORE");
    store_av_str(&zm, WG_STORE_KEY_ACTIVE);
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct store_argv a = {0};
        store_av_str(&a, "HGETALL");
        store_av_key(&a, WG_STORE_KEY_SESSION_PREFIX, op->ids[i]);
        rc = store_send(op, s->redis, R_HASH, i, &a);
        store_av_release(&a);
        store_av_str(&zm, op->ids[i]);
    }
    if (rc == 0 && n > 0)
        rc = store_send(op, s->redis, R_SCORE, 0, &zm);
    store_av_release(&zm);
    if (rc < 0)
        store_op_fail(op, rc, "sending the record reads: %s", strerror(-rc));
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
        rc = store_decode_hash(reply, op->ids[idx], &op->recs[idx], err, sizeof(err));
        if (rc == 0)
            op->have[idx] = true;
        else if (rc == -EBADMSG)
            op->n_bad++;
        else if (rc != -ENOENT) /* deleted since SMEMBERS: not an error */
            store_op_fail(op, rc, "%s", err);
        return;
    case R_SCORE:
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != op->n_ids) {
            store_op_fail(op, -EPROTO, "ZMSCORE %s: unexpected reply", WG_STORE_KEY_ACTIVE);
            return;
        }
        for (size_t i = 0; i < op->n_ids; i++)
            op->scores[i] = store_parse_score(reply->element[i]);
        return;
    case R_MAIN:
        return;
    }
}

void store_records_reply(struct op *op, enum role role, size_t idx, const redisReply *reply)
{
    char err[ERR_MAX];
    int rc;

    if (op->kind == OP_LIST) {
        handle_list(op, role, idx, reply);
        return;
    }
    if (role == R_SCORE) { /* OP_GET: the wg:active score */
        op->score = store_parse_score(reply);
        return;
    }
    rc = store_decode_hash(reply, op->id, &op->rec, err, sizeof(err));
    if (rc < 0)
        store_op_fail(op, rc, "%s", err);
    else
        op->has_rec = true;
}

int wg_store_get(struct wg_store *s, const char *id, wg_store_cb *cb, void *arg)
{
    struct store_argv a = {0}, z = {0};
    struct op *op;
    int rc;

    if (!s || !cb || !store_id_ok(id))
        return -EINVAL;
    if ((rc = store_op_start(s, OP_GET, id, cb, arg, &op)) < 0)
        return rc;
    store_av_str(&a, "HGETALL");
    store_av_key(&a, WG_STORE_KEY_SESSION_PREFIX, id);
    rc = store_send(op, s->redis, R_MAIN, 0, &a);
    if (rc == 0) {
        store_av_str(&z, "ZSCORE");
        store_av_str(&z, WG_STORE_KEY_ACTIVE);
        store_av_str(&z, id);
        rc = store_send(op, s->redis, R_SCORE, 0, &z);
    }
    store_av_release(&a);
    store_av_release(&z);
    return rc < 0 ? store_op_abort(op, rc) : 0;
}

int wg_store_list(struct wg_store *s, wg_store_cb *cb, void *arg)
{
    struct store_argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb)
        return -EINVAL;
    if ((rc = store_op_start(s, OP_LIST, NULL, cb, arg, &op)) < 0)
        return rc;
    store_av_str(&a, "SMEMBERS");
    store_av_str(&a, WG_STORE_KEY_SESSIONS);
    rc = store_send(op, s->redis, R_MEMBERS, 0, &a);
    store_av_release(&a);
    return rc < 0 ? store_op_abort(op, rc) : 0;
}
