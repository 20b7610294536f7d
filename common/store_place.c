/* common/store_place.c - hosts and placement: an orchestrator's heartbeat,
 * the lost-host sweep, the placed create and the wake that re-places a lost
 * session. Each is one script (store_scripts.c), so two gateways never fill
 * one last slot twice and two sweeps never move a session twice. */
#include "common/store.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "common/store_int.h"

/* {"k":"v",...}: the labels a placement requires, as the scripts read them. */
static bool labels_ok(const char *text)
{
    json_t *o, *v;
    const char *k;
    bool ok;

    if (!text || !text[0])
        return true;
    if (strlen(text) > WG_SESSION_PLACE_MAX)
        return false;
    o = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    ok = json_is_object(o);
    json_object_foreach(o, k, v)
    {
        if (!json_is_string(v))
            ok = false;
    }
    json_decref(o);
    return ok;
}

int wg_store_create_placed(struct wg_store *s, const char *id,
                           const struct wg_session_update *fields,
                           const struct wg_store_place *place, const char *detail_json,
                           wg_store_cb *cb, void *arg)
{
    bool explicit = place && place->host && place->host[0];
    bool fallback = place && place->fallback_host && place->fallback_host[0];

    if (!s || !place || (fields && (fields->set & (WG_SF_HOST | WG_SF_PIN))) ||
        !labels_ok(place->labels_json) || (explicit && !store_host_ok(place->host)) ||
        (fallback && !store_host_ok(place->fallback_host)))
        return -EINVAL;
    return store_create_send(s, id, fields, explicit ? "host" : "place",
                             explicit   ? place->host
                             : fallback ? place->fallback_host
                                        : "",
                             place->labels_json, place->pin, detail_json, cb, arg);
}

int wg_store_host_beat(struct wg_store *s, const char *name, const char *json, uint64_t ttl_ms,
                       wg_store_cb *cb, void *arg)
{
    struct store_argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || !store_host_ok(name) || !json || ttl_ms == 0)
        return -EINVAL;
    if ((rc = store_op_start(s, OP_BEAT, NULL, cb, arg, &op)) < 0)
        return rc;
    store_av_str(&a, "EVAL");
    store_av_str(&a, store_script_beat);
    store_av_str(&a, "0");
    store_av_str(&a, name);
    store_av_str(&a, json);
    store_av_u64(&a, ttl_ms);
    store_av_i64(&a, store_now_ms(s));
    store_av_u64(&a, s->events_max);
    rc = store_send(op, s->redis, R_MAIN, 0, &a);
    store_av_release(&a);
    return rc < 0 ? store_op_abort(op, rc) : 0;
}

int wg_store_host_sweep(struct wg_store *s, size_t batch, uint64_t ttl_ms, wg_store_cb *cb,
                        void *arg)
{
    struct store_argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || batch == 0 || batch > WG_STORE_BATCH_MAX || ttl_ms == 0)
        return -EINVAL;
    if ((rc = store_op_start(s, OP_SWEEP, NULL, cb, arg, &op)) < 0)
        return rc;
    store_av_str(&a, "EVAL");
    store_av_str(&a, store_script_sweep);
    store_av_str(&a, "0");
    store_av_i64(&a, store_now_ms(s));
    store_av_u64(&a, batch);
    store_av_u64(&a, s->events_max);
    store_av_str(&a, WG_STORE_CHANNEL_STATE);
    store_av_str(&a, s->fence_host);
    store_av_u64(&a, ttl_ms);
    rc = store_send(op, s->redis, R_MAIN, 0, &a);
    store_av_release(&a);
    return rc < 0 ? store_op_abort(op, rc) : 0;
}

int wg_store_wake_add(struct wg_store *s, const char *host, const struct wg_wake_cmd *cmd,
                      wg_store_cb *cb, void *arg)
{
    struct store_argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || !store_host_ok(host) || !cmd || !store_id_ok(cmd->session) ||
        (unsigned)cmd->op > WG_WAKE_OP_DESTROY || cmd->at < 0 ||
        (cmd->from[0] && !wg_store_name_valid(cmd->from)))
        return -EINVAL;
    if ((rc = store_op_start(s, OP_WAKE_ADD, cmd->session, cb, arg, &op)) < 0)
        return rc;
    store_av_str(&a, "EVAL");
    store_av_str(&a, store_script_wake);
    store_av_str(&a, "0");
    store_av_str(&a, cmd->session);
    store_av_str(&a, host);
    store_av_i64(&a, store_now_ms(s));
    store_av_u64(&a, s->wake_max);
    store_av_u64(&a, s->events_max);
    store_av_str(&a, WG_STORE_CHANNEL_STATE);
    store_av_str(&a, wg_wake_op_name(cmd->op));
    store_av_i64(&a, cmd->at ? cmd->at : store_now_ms(s));
    store_av_str(&a, cmd->from);
    store_av_str(&a, cmd->force ? "1" : "");
    store_av_str(&a, cmd->now ? "1" : "");
    rc = store_send(op, s->redis, R_MAIN, 0, &a);
    store_av_release(&a);
    return rc < 0 ? store_op_abort(op, rc) : 0;
}

int wg_store_host_adopt(struct wg_store *s, const char *name, const char *const *ids, size_t n,
                        wg_store_cb *cb, void *arg)
{
    struct op *op;
    size_t chunks = n ? (n + WG_STORE_BATCH_MAX - 1) / WG_STORE_BATCH_MAX : 1;
    int rc;

    if (!s || !cb || !store_host_ok(name) || (n && !ids) || n > WG_STORE_LIST_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!store_id_ok(ids[i]))
            return -EINVAL;
    if ((rc = store_op_start(s, OP_ADOPT, NULL, cb, arg, &op)) < 0)
        return rc;
    for (size_t c = 0; c < chunks; c++) {
        struct store_argv a = {0};
        size_t from = c * WG_STORE_BATCH_MAX, to = from + WG_STORE_BATCH_MAX;

        if (to > n)
            to = n;
        store_av_str(&a, "EVAL");
        store_av_str(&a, store_script_adopt);
        store_av_str(&a, "0");
        store_av_str(&a, name);
        store_av_str(&a, c + 1 == chunks ? "1" : "");
        for (size_t i = from; i < to; i++)
            store_av_str(&a, ids[i]);
        rc = store_send(op, s->redis, R_MAIN, c, &a);
        store_av_release(&a);
        if (rc < 0)
            return store_op_abort(op, rc); /* 0 when an earlier chunk is out */
    }
    return 0;
}

static bool reply_int(const redisReply *r, long long *ret)
{
    if (r->type != REDIS_REPLY_INTEGER)
        return false;
    *ret = r->integer;
    return true;
}

void store_place_reply(struct op *op, const redisReply *reply)
{
    long long *v[7] = {&op->sweep.hosts, &op->sweep.live, &op->sweep.lost,   &op->sweep.newly_lost,
                       &op->sweep.moved, &op->sweep.left, &op->sweep.held_ms};
    const redisReply *e;

    switch (op->kind) {
    case OP_BEAT:
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
            !reply_int(reply->element[0], &op->count) ||
            !reply_int(reply->element[1], &op->sweep.hosts))
            goto proto;
        return;
    case OP_ADOPT: {
        long long added;

        if (!reply_int(reply, &added))
            goto proto;
        op->count += added;
        return;
    }
    case OP_SWEEP:
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 7)
            goto proto;
        for (size_t i = 0; i < 7; i++)
            if (!reply_int(reply->element[i], v[i]))
                goto proto;
        return;
    case OP_WAKE_ADD:
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
            !store_reply_str(reply->element[0]) || !store_reply_str(reply->element[1]))
            goto proto;
        e = reply->element[1];
        if (store_reply_eq(reply->element[0], "unplaced")) {
            op->status = WG_STORE_UNPLACED;
            snprintf(op->error, sizeof(op->error), "session %s: %.*s", op->id, (int)e->len, e->str);
            return;
        }
        if (!store_reply_eq(reply->element[0], "ok") || reply->elements != 3 ||
            !store_reply_str(reply->element[2]) || reply->element[2]->len > WG_SESSION_HOST_MAX ||
            store_copy_stream_id(e, op->event_id) < 0)
            goto proto;
        memcpy(op->host, reply->element[2]->str, reply->element[2]->len);
        op->host[reply->element[2]->len] = '\0';
        return;
    default:
        return;
    }
proto:
    store_op_fail(op, -EPROTO, "unexpected reply to a placement script");
}
