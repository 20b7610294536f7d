/* common/store_locks.c - per-session locks: a random token, SET NX PX;
 * released and extended only by the holder (compare-and-delete/-pexpire). */
#include "common/store.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "common/store_int.h"

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

void store_lock_reply(struct op *op, const redisReply *reply)
{
    if (op->kind == OP_LOCK_SET) {
        if (reply->type == REDIS_REPLY_NIL) {
            op->status = WG_STORE_BUSY;
            snprintf(op->error, sizeof(op->error), "lock of session %s is held", op->id);
        } else if (!store_reply_eq(reply, "OK")) {
            store_op_fail(op, -EPROTO, "unexpected reply to SET NX");
        }
        return;
    }
    if (reply->type != REDIS_REPLY_INTEGER) {
        store_op_fail(op, -EPROTO, "unexpected reply from the lock script");
    } else if (reply->integer != 1) {
        op->status = WG_STORE_NOT_HELD;
        snprintf(op->error, sizeof(op->error), "lock of session %s is not held with this token",
                 op->id);
    }
}

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
    struct store_argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || !store_id_ok(id) || !token_ok(token) || ttl_ms == 0)
        return -EINVAL;
    if ((rc = store_op_start(s, OP_LOCK_SET, id, cb, arg, &op)) < 0)
        return rc;
    store_av_str(&a, "SET");
    store_av_key(&a, WG_STORE_KEY_LOCK_PREFIX, id);
    store_av_str(&a, token);
    store_av_str(&a, "NX");
    store_av_str(&a, "PX");
    store_av_u64(&a, ttl_ms);
    rc = store_send(op, s->redis, R_MAIN, 0, &a);
    store_av_release(&a);
    return rc < 0 ? store_op_abort(op, rc) : 0;
}

static int lock_eval(struct wg_store *s, const char *script, const char *id, const char *token,
                     uint32_t ttl_ms, wg_store_cb *cb, void *arg)
{
    struct store_argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || !store_id_ok(id) || !token_ok(token))
        return -EINVAL;
    if ((rc = store_op_start(s, OP_LOCK_EVAL, id, cb, arg, &op)) < 0)
        return rc;
    store_av_str(&a, "EVAL");
    store_av_str(&a, script);
    store_av_str(&a, "1");
    store_av_key(&a, WG_STORE_KEY_LOCK_PREFIX, id);
    store_av_str(&a, token);
    if (ttl_ms)
        store_av_u64(&a, ttl_ms);
    rc = store_send(op, s->redis, R_MAIN, 0, &a);
    store_av_release(&a);
    return rc < 0 ? store_op_abort(op, rc) : 0;
}

int wg_store_lock_release(struct wg_store *s, const char *id, const char *token, wg_store_cb *cb,
                          void *arg)
{
    return lock_eval(s, store_script_unlock, id, token, 0, cb, arg);
}

int wg_store_lock_extend(struct wg_store *s, const char *id, const char *token, uint32_t ttl_ms,
                         wg_store_cb *cb, void *arg)
{
    if (ttl_ms == 0)
        return -EINVAL;
    return lock_eval(s, store_script_extend, id, token, ttl_ms, cb, arg);
}
