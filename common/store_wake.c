/* common/store_wake.c - the wake streams (wg:wake:{host}): commands to one
 * host's orchestrators, read through a consumer group, and the parsers of
 * their entries. */
#include "common/store.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/store_int.h"

static const char *const wake_op_names[] = {
    [WG_WAKE_OP_WAKE] = "wake", [WG_WAKE_OP_SLEEP] = "sleep", [WG_WAKE_OP_DESTROY] = "destroy"};

const char *wg_wake_op_name(enum wg_wake_op op)
{
    return (unsigned)op <= WG_WAKE_OP_DESTROY ? wake_op_names[op] : "?";
}

int wg_store_wake_group(struct wg_store *s, const char *host, const char *group, wg_store_cb *cb,
                        void *arg)
{
    struct store_argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || !store_host_ok(host) || !wg_store_name_valid(group))
        return -EINVAL;
    if ((rc = store_op_start(s, OP_GROUP, NULL, cb, arg, &op)) < 0)
        return rc;
    store_av_str(&a, "XGROUP");
    store_av_str(&a, "CREATE");
    store_av_key(&a, WG_STORE_KEY_WAKE_PREFIX, host);
    store_av_str(&a, group);
    store_av_str(&a, "0");
    store_av_str(&a, "MKSTREAM");
    rc = store_send(op, s->redis, R_MAIN, 0, &a);
    store_av_release(&a);
    return rc < 0 ? store_op_abort(op, rc) : 0;
}

/* An op that collects up to count wake entries. */
static int wake_op(struct wg_store *s, enum op_kind kind, size_t count, wg_store_cb *cb, void *arg,
                   struct op **ret_op)
{
    struct op *op;
    int rc = store_op_start(s, kind, NULL, cb, arg, &op);

    if (rc < 0)
        return rc;
    op->wake = calloc(count, sizeof(*op->wake));
    if (!op->wake) {
        store_op_unlink(op);
        store_op_free(op);
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
    struct store_argv a = {0};
    struct op *op;
    int rc;

    if (!s || !blocking || !cb || !store_host_ok(host) || !wg_store_name_valid(group) ||
        !wg_store_name_valid(consumer) || count == 0 || count > WG_STORE_BATCH_MAX)
        return -EINVAL;
    if ((rc = wake_op(s, OP_WAKE_READ, count, cb, arg, &op)) < 0)
        return rc;
    store_av_str(&a, "XREADGROUP");
    store_av_str(&a, "GROUP");
    store_av_str(&a, group);
    store_av_str(&a, consumer);
    store_av_str(&a, "COUNT");
    store_av_u64(&a, count);
    if (block_ms) {
        store_av_str(&a, "BLOCK");
        store_av_u64(&a, block_ms);
    }
    store_av_str(&a, "STREAMS");
    store_av_key(&a, WG_STORE_KEY_WAKE_PREFIX, host);
    store_av_str(&a, pending ? "0" : ">");
    rc = store_send(op, blocking, R_MAIN, 0, &a);
    store_av_release(&a);
    return rc < 0 ? store_op_abort(op, rc) : 0;
}

int wg_store_wake_ack(struct wg_store *s, const char *host, const char *group,
                      const char *const *entry_ids, size_t n, wg_store_cb *cb, void *arg)
{
    struct store_argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || !store_host_ok(host) || !wg_store_name_valid(group) || !entry_ids || n == 0 ||
        n > WG_STORE_BATCH_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!entry_ids[i] || !store_stream_id_valid(entry_ids[i], strlen(entry_ids[i])))
            return -EINVAL;
    if ((rc = store_op_start(s, OP_WAKE_ACK, NULL, cb, arg, &op)) < 0)
        return rc;
    store_av_str(&a, "XACK");
    store_av_key(&a, WG_STORE_KEY_WAKE_PREFIX, host);
    store_av_str(&a, group);
    for (size_t i = 0; i < n; i++)
        store_av_str(&a, entry_ids[i]);
    rc = store_send(op, s->redis, R_MAIN, 0, &a);
    store_av_release(&a);
    return rc < 0 ? store_op_abort(op, rc) : 0;
}

int wg_store_wake_claim(struct wg_store *s, const char *host, const char *group,
                        const char *consumer, uint64_t min_idle_ms, const char *start, size_t count,
                        wg_store_cb *cb, void *arg)
{
    struct store_argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || !store_host_ok(host) || !wg_store_name_valid(group) ||
        !wg_store_name_valid(consumer) || !start || !store_stream_id_valid(start, strlen(start)) ||
        count == 0 || count > WG_STORE_BATCH_MAX)
        return -EINVAL;
    if ((rc = wake_op(s, OP_WAKE_CLAIM, count, cb, arg, &op)) < 0)
        return rc;
    store_av_str(&a, "XAUTOCLAIM");
    store_av_key(&a, WG_STORE_KEY_WAKE_PREFIX, host);
    store_av_str(&a, group);
    store_av_str(&a, consumer);
    store_av_u64(&a, min_idle_ms);
    store_av_str(&a, start);
    store_av_str(&a, "COUNT");
    store_av_u64(&a, count);
    rc = store_send(op, s->redis, R_MAIN, 0, &a);
    store_av_release(&a);
    return rc < 0 ? store_op_abort(op, rc) : 0;
}

void store_wake_reply(struct op *op, const redisReply *reply)
{
    int rc;

    switch (op->kind) {
    case OP_GROUP:
        if (reply->type == REDIS_REPLY_ERROR) { /* BUSYGROUP: part_cb let only that through */
            op->status = WG_STORE_EXISTS;
            snprintf(op->error, sizeof(op->error), "%.*s", (int)reply->len, reply->str);
        } else if (!store_reply_eq(reply, "OK")) {
            store_op_fail(op, -EPROTO, "unexpected reply to XGROUP CREATE");
        }
        return;
    case OP_WAKE_ACK:
        if (reply->type != REDIS_REPLY_INTEGER) {
            store_op_fail(op, -EPROTO, "unexpected reply to XACK");
            return;
        }
        op->count += reply->integer;
        return;
    case OP_WAKE_READ:
        rc = wg_store_parse_xreadgroup(reply, op->wake, op->max_wake, &op->n_wake);
        if (rc < 0)
            store_op_fail(op, rc, "unexpected reply to XREADGROUP");
        return;
    case OP_WAKE_CLAIM:
        rc = wg_store_parse_xautoclaim(reply, op->next_id, op->wake, op->max_wake, &op->n_wake);
        if (rc < 0)
            store_op_fail(op, rc, "unexpected reply to XAUTOCLAIM");
        return;
    default:
        return;
    }
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

        if (!store_reply_str(k) || !store_reply_str(v)) {
            e->bad = true;
            return;
        }
        if (store_reply_eq(k, "session")) {
            if (have_session || !wg_session_id_valid(v->str, v->len))
                goto bad;
            memcpy(e->session, v->str, v->len);
            e->session[v->len] = '\0';
            have_session = true;
        } else if (store_reply_eq(k, "op")) {
            bool found = false;
            for (unsigned o = 0; o <= WG_WAKE_OP_DESTROY; o++) {
                if (store_reply_eq(v, wake_op_names[o])) {
                    e->op = (enum wg_wake_op)o;
                    found = true;
                }
            }
            if (have_op || !found)
                goto bad;
            have_op = true;
        } else if (store_reply_eq(k, "at")) {
            if (have_at || !parse_ms(v->str, v->len, &e->at))
                goto bad;
            have_at = true;
        } else if (store_reply_eq(k, "from")) {
            char tmp[WG_STORE_NAME_MAX + 1];
            if (v->len > WG_STORE_NAME_MAX || memchr(v->str, '\0', v->len))
                goto bad;
            memcpy(tmp, v->str, v->len);
            tmp[v->len] = '\0';
            if (!wg_store_name_valid(tmp))
                goto bad;
            memcpy(e->from, tmp, v->len + 1);
        } else if (store_reply_eq(k, "force")) {
            if (!store_reply_eq(v, "0") && !store_reply_eq(v, "1"))
                goto bad;
            e->force = v->str[0] == '1';
        } else if (store_reply_eq(k, "now")) {
            if (!store_reply_eq(v, "0") && !store_reply_eq(v, "1"))
                goto bad;
            e->now = v->str[0] == '1';
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
            store_copy_stream_id(e->element[0], c->entry_id) < 0)
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
        !store_reply_str(stream->element[0]))
        return -EPROTO;
    return wg_store_parse_wake_entries(stream->element[1], out, max, ret_n);
}

int wg_store_parse_xautoclaim(const redisReply *reply, char *next_id, struct wg_wake_cmd *out,
                              size_t max, size_t *ret_n)
{
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
        store_copy_stream_id(reply->element[0], next_id) < 0)
        return -EPROTO;
    return wg_store_parse_wake_entries(reply->element[1], out, max, ret_n);
}
