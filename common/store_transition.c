/* common/store_transition.c - the writes that go through a script: create,
 * transition (and its idle-checked form), update and delete. */
#include "common/store.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/access.h"
#include "common/store_int.h"

/* {tag, event id, HGETALL, ZSCORE} from the create and transition scripts. */
void store_script_reply(struct op *op, const redisReply *reply)
{
    const redisReply *tag, *flat;
    char err[ERR_MAX];
    int rc;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        !store_reply_str(reply->element[0]))
        goto proto;
    tag = reply->element[0];
    if (store_reply_eq(tag, "missing")) {
        store_op_fail(op, -ENOENT, "session %s: no such session", op->id);
        return;
    }
    if (store_reply_eq(tag, "unplaced")) {
        op->status = WG_STORE_UNPLACED;
        if (reply->elements > 1 && store_reply_str(reply->element[1]))
            snprintf(op->error, sizeof(op->error), "%.*s", (int)reply->element[1]->len,
                     reply->element[1]->str);
        else
            snprintf(op->error, sizeof(op->error), "no host");
        return;
    }
    if (reply->elements < 3 || !store_reply_str(reply->element[1]))
        goto proto;
    if (store_reply_eq(tag, "ok") || store_reply_eq(tag, "created"))
        op->status = 0;
    else if (store_reply_eq(tag, "exists"))
        op->status = WG_STORE_EXISTS;
    else if (store_reply_eq(tag, "rejected"))
        op->status = WG_STORE_REJECTED;
    else if (store_reply_eq(tag, "active"))
        op->status = WG_STORE_ACTIVE;
    else if (store_reply_eq(tag, "fenced"))
        op->status = WG_STORE_FENCED;
    else
        goto proto;
    if (reply->element[1]->len > 0 && store_copy_stream_id(reply->element[1], op->event_id) < 0)
        goto proto;
    flat = reply->element[2];
    rc = store_decode_hash(flat, op->id, &op->rec, err, sizeof(err));
    if (rc < 0) {
        store_op_fail(op, rc, "%s", err);
        return;
    }
    op->has_rec = true;
    if (reply->elements > 3)
        op->score = store_parse_score(reply->element[3]);
    if (op->status == WG_STORE_REJECTED)
        snprintf(op->error, sizeof(op->error), "session %s is %s", op->id,
                 wg_session_state_name(op->rec.state));
    else if (op->status == WG_STORE_ACTIVE)
        snprintf(op->error, sizeof(op->error), "session %s was active at %" PRId64, op->id,
                 op->score);
    else if (op->status == WG_STORE_EXISTS)
        snprintf(op->error, sizeof(op->error), "session %s exists", op->id);
    else if (op->status == WG_STORE_FENCED)
        snprintf(op->error, sizeof(op->error), "session %s is homed on %.120s at epoch %" PRIu64,
                 op->id, op->rec.host[0] ? op->rec.host : "-", op->rec.epoch);
    return;
proto:
    store_op_fail(op, -EPROTO, "session %s: unexpected script reply", op->id);
}

static void av_fields(struct store_argv *a, const struct wg_session_hash *h)
{
    for (size_t i = 0; i < h->n; i++) {
        store_av_add(a, h->kv[i].name, h->kv[i].name_len);
        store_av_add(a, h->kv[i].value, h->kv[i].value_len);
    }
}

int wg_store_create(struct wg_store *s, const char *id, const struct wg_session_update *fields,
                    const char *detail_json, wg_store_cb *cb, void *arg)
{
    return store_create_send(s, id, fields, "", "", "", false, detail_json, cb, arg);
}

int store_create_send(struct wg_store *s, const char *id, const struct wg_session_update *fields,
                      const char *mode, const char *host, const char *labels_json, bool pin,
                      const char *detail_json, wg_store_cb *cb, void *arg)
{
    struct wg_session_hash h;
    struct wg_session_update u = {0};
    struct store_argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || !store_id_ok(id) || !store_detail_ok(detail_json))
        return -EINVAL;
    if (fields && (fields->set & WG_SF_RESTARTS_INCR))
        return -EINVAL;
    /* Every record starts with a random access generation, so links of an
     * id that was destroyed and created again never open the new one. */
    if (fields != NULL)
        u = *fields;
    if (!(u.set & WG_SF_GEN)) {
        u.set |= WG_SF_GEN;
        u.gen = wg_access_new_gen();
    }
    if ((rc = wg_session_update_encode(&u, &h, NULL, 0)) < 0)
        return rc;
    if ((rc = store_op_start(s, OP_CREATE, id, cb, arg, &op)) < 0)
        return rc;
    store_av_str(&a, "EVAL");
    store_av_str(&a, store_script_create);
    store_av_str(&a, "7");
    store_av_key(&a, WG_STORE_KEY_SESSION_PREFIX, id);
    store_av_str(&a, WG_STORE_KEY_EVENTS);
    store_av_str(&a, WG_STORE_KEY_SESSIONS);
    store_av_str(&a, WG_STORE_KEY_ACTIVE);
    store_av_str(&a, WG_STORE_KEY_TRANSIENT);
    store_av_str(&a, WG_STORE_KEY_IDLE_SHORT);
    store_av_str(&a, WG_STORE_KEY_COUNTS);
    store_av_str(&a, id);
    store_av_i64(&a, store_now_ms(s));
    store_av_u64(&a, s->events_max);
    store_av_str(&a, detail_json ? detail_json : "");
    store_av_str(&a, WG_STORE_CHANNEL_STATE);
    store_av_str(&a, mode);
    store_av_str(&a, host ? host : "");
    store_av_str(&a, labels_json ? labels_json : "");
    store_av_str(&a, pin ? "1" : "");
    av_fields(&a, &h);
    rc = store_send(op, s->redis, R_MAIN, 0, &a);
    store_av_release(&a);
    return rc < 0 ? store_op_abort(op, rc) : 0;
}

/* Sends the transition script. to_name "" updates in place; allowed is the
 * mask of current states accepted, or ~0u for any value (destroy only). */
static int run_script(struct wg_store *s, const char *id, unsigned allowed, const char *to_name,
                      int64_t idle_cutoff_ms, const struct wg_session_update *fields,
                      const char *detail_json, wg_store_cb *cb, void *arg)
{
    struct wg_session_hash h;
    struct store_argv a = {0};
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
    if ((rc = store_op_start(s, OP_SCRIPT, id, cb, arg, &op)) < 0)
        return rc;
    store_av_str(&a, "EVAL");
    store_av_str(&a, store_script_transition);
    store_av_str(&a, "7");
    store_av_key(&a, WG_STORE_KEY_SESSION_PREFIX, id);
    store_av_str(&a, WG_STORE_KEY_EVENTS);
    store_av_str(&a, WG_STORE_KEY_ACTIVE);
    store_av_str(&a, WG_STORE_KEY_SESSIONS);
    store_av_str(&a, WG_STORE_KEY_TRANSIENT);
    store_av_str(&a, WG_STORE_KEY_IDLE_SHORT);
    store_av_str(&a, WG_STORE_KEY_COUNTS);
    store_av_str(&a, id);
    store_av_str(&a, names);
    store_av_str(&a, to_name);
    store_av_i64(&a, store_now_ms(s));
    store_av_u64(&a, s->events_max);
    store_av_str(&a, detail_json ? detail_json : "");
    store_av_str(&a, WG_STORE_CHANNEL_STATE);
    store_av_str(&a, fields && (fields->set & WG_SF_RESTARTS_INCR) ? "1" : "0");
    if (idle_cutoff_ms >= 0)
        store_av_i64(&a, idle_cutoff_ms);
    else
        store_av_str(&a, "");
    /* The fence: the caller's, else the store's (an orchestrator's). */
    if (fields && fields->fence_host && fields->fence_host[0])
        store_av_str(&a, fields->fence_host);
    else
        store_av_str(&a, s->fence_host);
    if (fields && fields->fence_epoch)
        store_av_u64(&a, fields->fence_epoch);
    else
        store_av_str(&a, "");
    av_fields(&a, &h);
    rc = store_send(op, s->redis, R_MAIN, 0, &a);
    store_av_release(&a);
    return rc < 0 ? store_op_abort(op, rc) : 0;
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

    if (!s || !cb || !store_id_ok(id) || (unsigned)to >= WG_SESSION_STATE_COUNT ||
        !store_detail_ok(detail_json))
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

    if (!s || !cb || !store_id_ok(id) || allowed == 0)
        return -EINVAL;
    return run_script(s, id, allowed, "", -1, fields, NULL, cb, arg);
}

int wg_store_delete(struct wg_store *s, const char *id, unsigned from_mask, const char *detail_json,
                    wg_store_cb *cb, void *arg)
{
    return wg_store_transition(s, id, from_mask, WG_SESSION_DESTROYED, NULL, detail_json, cb, arg);
}
