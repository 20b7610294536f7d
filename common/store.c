/* common/store.c - the store's calls: how one call runs its Redis commands
 * and delivers its result, the argument builder, the reply helpers and the
 * checks the other store*.c files share; wg_store_new() and wg_store_free().
 * See store.h for the API and store_int.h for the parts.
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
 * - Nothing here owns a libuv handle: everything asynchronous is wg_redis's. */
#include "common/store.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/redis.h"
#include "common/store_int.h"
#include "common/str.h"

#define SUBSYS "store"
#define HASH_FIELDS_MAX 256 /* pairs of a record's HGETALL we accept */

int64_t store_now_ms(const struct wg_store *s)
{
    return s->clock_ms ? s->clock_ms(s->clock_arg) : wg_clock_wall_ms();
}

void store_av_add(struct store_argv *a, const char *s, size_t len)
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

void store_av_str(struct store_argv *a, const char *s)
{
    store_av_add(a, s, strlen(s));
}

/* Keeps s (malloc'd; NULL: out of memory) until the arguments are released. */
static void av_own(struct store_argv *a, char *s)
{
    char **owned;

    if (!a->err && !s)
        a->err = -ENOMEM;
    if (a->err) {
        free(s);
        return;
    }
    owned = realloc(a->owned, (a->n_owned + 1) * sizeof(*owned));
    if (!owned) {
        free(s);
        a->err = -ENOMEM;
        return;
    }
    a->owned = owned;
    a->owned[a->n_owned++] = s;
    store_av_add(a, s, strlen(s));
}

void store_av_i64(struct store_argv *a, int64_t v)
{
    av_own(a, wg_strf("%" PRId64, v));
}

void store_av_u64(struct store_argv *a, uint64_t v)
{
    av_own(a, wg_strf("%" PRIu64, v));
}

void store_av_key(struct store_argv *a, const char *prefix, const char *name)
{
    av_own(a, wg_strf("%s%s", prefix, name));
}

void store_av_release(struct store_argv *a)
{
    for (size_t i = 0; i < a->n_owned; i++)
        free(a->owned[i]);
    free(a->owned);
    free(a->v);
    free(a->len);
    memset(a, 0, sizeof(*a));
}

/* Records the first failure; later ones (and outcomes) do not replace it. */
void store_op_fail(struct op *op, int status, const char *fmt, ...)
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
 * and ends with store_op_abort() if the first one fails. */
int store_op_start(struct wg_store *s, enum op_kind kind, const char *id, wg_store_cb *cb,
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

void store_op_unlink(struct op *op)
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

void store_op_free(struct op *op)
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
 * (releasing nothing: store_op_free() releases up to n_ids, and the moved-from
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
    res->host = op->host;
    if (op->kind == OP_SWEEP)
        res->sweep = &op->sweep;
    if (op->kind == OP_BEAT)
        res->homed = op->sweep.hosts;
}

/* Runs the callback once. Reached from part_cb() when the last reply is in,
 * and from wg_store_free() (status -ECANCELED). */
static void op_deliver(struct op *op)
{
    struct wg_store_res res;
    struct wg_log *log = op->s ? op->s->log : NULL;

    store_op_unlink(op);
    op->delivered = true;
    op_result(op, &res);
    if (res.status == WG_STORE_FENCED && op->s && op->s->on_fenced)
        op->s->on_fenced(&res, op->s->on_fenced_arg);
    if (res.status < 0 && wg_log_enabled(log, WG_LOG_DEBUG)) {
        char q[ERR_MAX + 16];
        WG_DEBUG(log, SUBSYS, "store call failed", "session=%s status=%d error=%s",
                 op->id[0] ? op->id : "-", res.status,
                 wg_log_quote(q, sizeof(q), res.error, strlen(res.error)));
    }
    op->cb(&res, op->arg);
}

static void handle_reply(struct op *op, enum role role, size_t idx, const redisReply *reply)
{
    switch (op->kind) {
    case OP_CREATE:
    case OP_SCRIPT:
        store_script_reply(op, reply);
        return;
    case OP_GET:
    case OP_LIST:
        store_records_reply(op, role, idx, reply);
        return;
    case OP_TOUCH:
    case OP_RANGE:
    case OP_COUNTS:
    case OP_REAP:
        store_activity_reply(op, role, idx, reply);
        return;
    case OP_XADD: /* event_add, wake_add */
        if (store_copy_stream_id(reply, op->event_id) < 0)
            store_op_fail(op, -EPROTO, "unexpected reply to XADD");
        return;
    case OP_LOCK_SET:
    case OP_LOCK_EVAL:
        store_lock_reply(op, reply);
        return;
    case OP_GROUP:
    case OP_WAKE_READ:
    case OP_WAKE_ACK:
    case OP_WAKE_CLAIM:
        store_wake_reply(op, reply);
        return;
    case OP_PUBLISH:
        if (reply->type != REDIS_REPLY_INTEGER)
            store_op_fail(op, -EPROTO, "unexpected reply to PUBLISH");
        return;
    case OP_BEAT:
    case OP_SWEEP:
    case OP_WAKE_ADD:
    case OP_ADOPT:
        store_place_reply(op, reply);
        return;
    }
}

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
            store_op_free(op);
        return;
    }
    if (status < 0) {
        /* r is alive: wg_redis calls back before it frees itself. */
        const char *why = status == -ECANCELED ? "" : wg_redis_last_error(r);
        store_op_fail(op, status, "redis: %s%s%s", strerror(-status), why[0] ? ": " : "", why);
    } else if (reply->type == REDIS_REPLY_ERROR &&
               !(op->kind == OP_GROUP && strncmp(reply->str, "BUSYGROUP", 9) == 0)) {
        store_op_fail(op, -EIO, "%.*s", (int)reply->len, reply->str);
    } else if (op->status >= 0) {
        handle_reply(op, role, idx, reply);
    }
    if (op->outstanding == 0) {
        op_deliver(op);
        store_op_free(op);
    }
}

/* Sends one command of op on r. On success the reply will come to part_cb. */
int store_send(struct op *op, struct wg_redis *r, enum role role, size_t idx, struct store_argv *a)
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
int store_op_abort(struct op *op, int rc)
{
    if (op->outstanding > 0) {
        /* Some command was sent: the callback will run; report the rest. */
        store_op_fail(op, rc, "%s", strerror(-rc));
        return 0;
    }
    store_op_unlink(op);
    store_op_free(op);
    return rc;
}

bool store_reply_str(const redisReply *r)
{
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

bool store_reply_eq(const redisReply *r, const char *s)
{
    return store_reply_str(r) && r->len == strlen(s) && memcmp(r->str, s, r->len) == 0;
}

/* A ZSCORE reply: our scores are integral ms; anything else counts as none. */
int64_t store_parse_score(const redisReply *r)
{
    char buf[64], *end;
    double d;

    if (!store_reply_str(r) || r->len == 0 || r->len >= sizeof(buf))
        return -1;
    memcpy(buf, r->str, r->len);
    buf[r->len] = '\0';
    d = strtod(buf, &end);
    if (*end != '\0' || !isfinite(d) || d < 0 || d > 9e18)
        return -1;
    return (int64_t)d;
}

bool store_stream_id_valid(const char *s, size_t len)
{
    const char *dash = memchr(s, '-', len);

    if (len < 3 || len > WG_STORE_STREAM_ID_MAX || !dash || dash == s || dash == s + len - 1)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!(s[i] >= '0' && s[i] <= '9') && s + i != dash)
            return false;
    return true;
}

int store_copy_stream_id(const redisReply *r, char *dst)
{
    if (!store_reply_str(r) || !store_stream_id_valid(r->str, r->len))
        return -EPROTO;
    memcpy(dst, r->str, r->len);
    dst[r->len] = '\0';
    return 0;
}

/* Decodes a record's HGETALL reply, checking that it belongs to `id`.
 * Returns 0, -ENOENT (empty), -EPROTO, -EBADMSG or -ENOMEM with err set. */
int store_decode_hash(const redisReply *flat, const char *id, struct wg_session *ret, char *err,
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
        if (!store_reply_str(f) || !store_reply_str(v)) {
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

int wg_store_new(struct wg_redis *redis, const struct wg_store_opts *opts,
                 struct wg_store **ret_store)
{
    struct wg_store *s;

    if (!redis || !ret_store)
        return -EINVAL;
    if (opts && opts->fence_host && !store_host_ok(opts->fence_host))
        return -EINVAL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->redis = redis;
    if (opts && opts->fence_host)
        snprintf(s->fence_host, sizeof(s->fence_host), "%s", opts->fence_host);
    s->log = opts ? opts->log : NULL;
    s->on_fenced = opts ? opts->on_fenced : NULL;
    s->on_fenced_arg = opts ? opts->on_fenced_arg : NULL;
    s->events_max = opts && opts->events_max ? opts->events_max : WG_STORE_EVENTS_MAX;
    s->wake_max = opts && opts->wake_max ? opts->wake_max : WG_STORE_WAKE_MAX;
    s->clock_ms = opts ? opts->clock_ms : NULL;
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
            store_op_free(op);
    }
    free(s);
}

bool store_id_ok(const char *id)
{
    return id && wg_session_id_valid(id, strlen(id));
}

bool store_host_ok(const char *host)
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

/* NULL is no detail; otherwise JSON text of bounded size. */
bool store_detail_ok(const char *detail)
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
