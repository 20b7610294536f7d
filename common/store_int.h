/* common/store_int.h - what the files of the store share (store.c,
 * store_scripts.c, store_records.c, store_transition.c, store_activity.c,
 * store_events.c, store_locks.c, store_wake.c). Not an API: nothing outside
 * common/store*.c includes it.
 *
 * A call makes one struct op (store_op_start()), sends its commands with
 * store_send() (each a struct part, one reply each), and the replies come
 * to the reply function of the file that made the op (store.c dispatches
 * on op->kind); the op is delivered when no reply is due. */
#ifndef WG_COMMON_STORE_INT_H
#define WG_COMMON_STORE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "common/session.h"
#include "common/store.h"

#define ERR_MAX 256

/* What a call is; it picks the reply function of the op (store.c). */
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
    OP_PUBLISH,
    OP_BEAT,     /* host_beat */
    OP_SWEEP,    /* host_sweep */
    OP_WAKE_ADD, /* wake_add: the wake script */
    OP_ADOPT,    /* host_adopt */
};

/* What one command of an op reads: its main answer, a wg:active score (or
 * range), a member list, or one record (idx says which). */
enum role { R_MAIN, R_SCORE, R_MEMBERS, R_HASH };

/* One call, from store_op_start() until its callback ran and no reply is due. */
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

    /* OP_SWEEP, OP_WAKE_ADD */
    struct wg_store_sweep sweep;
    char host[WG_SESSION_HOST_MAX + 1];

    /* OP_WAKE_READ, OP_WAKE_CLAIM */
    struct wg_wake_cmd *wake;
    size_t n_wake, max_wake;
};

/* One command of an op: the argument wg_redis calls back with. */
struct part {
    struct op *op;
    struct wg_redis *r; /* the connection it went out on, for the failure text */
    enum role role;
    size_t idx;
};

struct wg_store {
    struct wg_redis *redis;
    char fence_host[WG_SESSION_HOST_MAX + 1]; /* "" = no fence */
    void (*on_fenced)(const struct wg_store_res *res, void *arg);
    void *on_fenced_arg;
    struct wg_log *log;
    uint32_t events_max;
    uint32_t wake_max;
    int64_t (*clock_ms)(void *arg); /* NULL: wg_clock_wall_ms() */
    void *clock_arg;
    struct op *ops;
    bool closing; /* wg_store_free() runs: callbacks it calls may not start calls */
};

/* Arguments for one command. Formatted numbers are owned here until the
 * command is handed to wg_redis, which copies it at once. */
struct store_argv {
    size_t n, cap;
    const char **v;
    size_t *len;
    char **owned;
    size_t n_owned;
    int err;
};

/* ---- store.c: arguments ---- */

void store_av_add(struct store_argv *a, const char *s, size_t len);
void store_av_str(struct store_argv *a, const char *s);
void store_av_i64(struct store_argv *a, int64_t v);
void store_av_u64(struct store_argv *a, uint64_t v);
/* prefix + name, e.g. "wg:session:" + id. */
void store_av_key(struct store_argv *a, const char *prefix, const char *name);
void store_av_release(struct store_argv *a);

/* ---- store.c: ops ---- */

/* The caller's wall clock (opts.clock_ms), else CLOCK_REALTIME, in ms. */
int64_t store_now_ms(const struct wg_store *s);
/* On success *ret_op is linked on s->ops; the caller sends its commands
 * and ends with store_op_abort() if the first one fails. */
int store_op_start(struct wg_store *s, enum op_kind kind, const char *id, wg_store_cb *cb,
                   void *arg, struct op **ret_op);
/* Records the first failure; later ones (and outcomes) do not replace it. */
void store_op_fail(struct op *op, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sends one command of op on r. On success the reply will come to the op's
 * reply function. */
int store_send(struct op *op, struct wg_redis *r, enum role role, size_t idx, struct store_argv *a);
/* Ends a call whose first command could not be sent. Returns rc. */
int store_op_abort(struct op *op, int rc);
void store_op_unlink(struct op *op);
void store_op_free(struct op *op);

/* ---- store.c: replies ---- */

bool store_reply_str(const redisReply *r);
bool store_reply_eq(const redisReply *r, const char *s);
/* A ZSCORE reply: our scores are integral ms; anything else counts as none (-1). */
int64_t store_parse_score(const redisReply *r);
bool store_stream_id_valid(const char *s, size_t len);
int store_copy_stream_id(const redisReply *r, char *dst);
/* Decodes a record's HGETALL reply, checking that it belongs to `id`.
 * Returns 0, -ENOENT (empty), -EPROTO, -EBADMSG or -ENOMEM with err set. */
int store_decode_hash(const redisReply *flat, const char *id, struct wg_session *ret, char *err,
                      size_t errlen);

/* ---- store.c: checks ---- */

bool store_id_ok(const char *id);
bool store_host_ok(const char *host);
/* NULL is no detail; otherwise JSON text of bounded size. */
bool store_detail_ok(const char *detail);

/* ---- the reply functions, by op kind ---- */

void store_records_reply(struct op *op, enum role role, size_t idx, const redisReply *reply);
void store_script_reply(struct op *op, const redisReply *reply);
void store_activity_reply(struct op *op, enum role role, size_t idx, const redisReply *reply);
void store_lock_reply(struct op *op, const redisReply *reply);
void store_wake_reply(struct op *op, const redisReply *reply);
void store_place_reply(struct op *op, const redisReply *reply);
/* store_transition.c: the create script's call, placement args included:
 * mode "" (host from fields), "place" or "host". */
int store_create_send(struct wg_store *s, const char *id, const struct wg_session_update *fields,
                      const char *mode, const char *host, const char *labels_json, bool pin,
                      const char *detail_json, wg_store_cb *cb, void *arg);

/* ---- store_scripts.c ---- */

extern const char store_script_transition[];
extern const char store_script_create[];
extern const char store_script_unlock[];
extern const char store_script_extend[];
extern const char store_script_beat[];
extern const char store_script_sweep[];
extern const char store_script_wake[];
extern const char store_script_adopt[];

#endif
