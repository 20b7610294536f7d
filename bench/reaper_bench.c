/* bench/reaper_bench.c - one idle-reaper pass, wakegate's range read
 * (wg_store_reap_scan(), paged the way orchestrator/reaper.c pages it)
 * against the naive peer, a full scan (wg_store_list(): SMEMBERS
 * wg:sessions, one HGETALL per record, one ZMSCORE wg:active, then idle
 * decided from each record's last_active), in the same run on the same
 * Redis, for several session counts. See bench/README.md.
 *
 * Per case: FLUSHALL, fill N records in the store's exact format, then run
 * both passes alternately. Each pass is timed on the loop (call to last
 * callback) and its Redis commands are counted from INFO commandstats
 * deltas on a separate synchronous connection, read outside the timed
 * window (the bench's own INFO calls are left out by name).
 *
 * Exit status: 0; 1 when a pass returned the wrong sessions, or wakegate's
 * pass issued more than 2 per page + idle + REAP_SLACK commands (the claim);
 * 2 on a usage or setup error. Wall-clock time is never asserted. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <uv.h>

#include "common/log.h"
#include "common/redis.h"
#include "common/session.h"
#include "common/store.h"
#include "common/clock.h"

#define HOST "bench-host"
#define IMAGE "registry.example.com/preview/app:2024-06-01"
#define PORT 3000
#define MIN_MS 60000LL
#define TIER_MS (20 * MIN_MS)        /* the configured stop tier; no pause tier */
#define SHORT_STOP_MS (10 * MIN_MS)  /* override on recent sessions: widens the range */
#define SHORT_PAUSE_MS (15 * MIN_MS) /* override on idle sessions */
#define OVERRIDE_BLOCKS 10           /* blocks 0..9 hold the store-made sessions */
#define FILL_BATCH 1000              /* sessions per pipelined fill batch */
#ifndef REAP_SLACK
#define REAP_SLACK 2 /* the claim: 2 per page + idle + this */
#endif
#define CMDSTATS_MAX 256
#define WAIT_MS 120000 /* no single step may take longer */

static const char spec_json[] =
    "{\"cmd\":[\"npm\",\"run\",\"dev\"],\"env\":[\"NODE_ENV=development\",\"PORT=3000\"],"
    "\"labels\":{\"team\":\"bench\"},\"binds\":[\"/srv/work/bench:/work\"]}";

struct cmdstat {
    char name[64];
    long long calls;
    long long usec; /* Redis's own time in the command */
};

struct cmdstats {
    size_t n;
    struct cmdstat s[CMDSTATS_MAX];
};

/* One kind of pass over one case: every pass's time and command count. */
struct series {
    size_t n;
    double *ms;
    long long *cmds;
    double *server_ms;   /* Redis's own time in the pass's commands */
    char breakdown[256]; /* of the first measured pass, "zrange=1 ..." */
    size_t pages;        /* wakegate: pages of the first measured pass */
};

struct bcase {
    size_t sessions, idle;
    size_t stride;
    bool *is_idle;
    int64_t now; /* the fill's "now" */
    double fill_s;
    double busy_pct; /* the machine's CPU use while we were idle, % of one CPU */
    struct series wg, full;
    long long wg_allowed; /* the claim's bound per pass */
    bool ok;
    char why[256];
};

struct bench {
    uv_loop_t loop;
    struct wg_log log;
    struct wg_redis *r;
    struct wg_store *st;
    redisContext *sync;
    bool clock_fixed;
    int64_t clock;
    char redis_version[32];
    /* one call in flight */
    bool done;
    int status;
    char error[256];
    /* the pass being run */
    struct bcase *c;
    bool *seen;
    size_t got, wrong, dup, bad;
    size_t pages;
    bool more;
};

/* The store's clock: fixed while records are made through the store's own
 * scripts (their stamps are in the past), the wall clock for the passes. */
static int64_t bench_clock(void *arg)
{
    const struct bench *b = arg;

    return b->clock_fixed ? b->clock : wg_clock_wall_ms();
}

static bool run_until_done(struct bench *b)
{
    uint64_t deadline = uv_hrtime() + (uint64_t)WAIT_MS * 1000000u;

    while (!b->done) {
        if (uv_hrtime() > deadline)
            return false;
        uv_run(&b->loop, UV_RUN_ONCE);
    }
    return true;
}

static void start_call(struct bench *b)
{
    b->done = false;
    b->status = 0;
    b->error[0] = '\0';
}

/* ---- the synchronous side: fill, INFO ------------------------------------------------------ */

static redisReply *sync_cmd(struct bench *b, const char *fmt, const char *arg)
{
    redisReply *rep = arg ? redisCommand(b->sync, fmt, arg) : redisCommand(b->sync, fmt);

    if (!rep) {
        fprintf(stderr, "reaper_bench: redis: %s\n", b->sync->errstr);
        return NULL;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "reaper_bench: redis: %s\n", rep->str);
        freeReplyObject(rep);
        return NULL;
    }
    return rep;
}

static int cmdstats_read(struct bench *b, struct cmdstats *out)
{
    redisReply *rep = sync_cmd(b, "INFO commandstats", NULL);
    const char *p;

    if (!rep)
        return -1;
    out->n = 0;
    for (p = rep->str; p && *p;) {
        const char *eol = strchr(p, '\n');
        const char *colon, *calls, *usec;
        size_t len;

        if (strncmp(p, "cmdstat_", 8) == 0 && (colon = strchr(p, ':')) && (!eol || colon < eol) &&
            (calls = strstr(colon, "calls=")) && (!eol || calls < eol) && out->n < CMDSTATS_MAX) {
            len = (size_t)(colon - (p + 8));
            if (len >= sizeof(out->s[0].name))
                len = sizeof(out->s[0].name) - 1;
            memcpy(out->s[out->n].name, p + 8, len);
            out->s[out->n].name[len] = '\0';
            out->s[out->n].calls = atoll(calls + 6);
            usec = strstr(calls, "usec=");
            out->s[out->n].usec = usec && (!eol || usec < eol) ? atoll(usec + 5) : 0;
            out->n++;
        }
        p = eol ? eol + 1 : NULL;
    }
    freeReplyObject(rep);
    return 0;
}

static const struct cmdstat *cmdstats_find(const struct cmdstats *cs, const char *name)
{
    for (size_t i = 0; i < cs->n; i++)
        if (strcmp(cs->s[i].name, name) == 0)
            return &cs->s[i];
    return NULL;
}

/* The pass's commands: after - before, without the bench's own INFO (and
 * any CONFIG) calls; *usec gets Redis's time in them. Optionally
 * "name=count ..." into breakdown. */
static long long cmdstats_delta(const struct cmdstats *before, const struct cmdstats *after,
                                long long *usec, char *breakdown, size_t blen)
{
    long long total = 0;
    size_t used = 0;

    *usec = 0;
    if (breakdown && blen)
        breakdown[0] = '\0';
    for (size_t i = 0; i < after->n; i++) {
        const char *name = after->s[i].name;
        const struct cmdstat *was = cmdstats_find(before, name);
        long long d = after->s[i].calls - (was ? was->calls : 0);

        if (d <= 0 || strcmp(name, "info") == 0 || strncmp(name, "config", 6) == 0)
            continue;
        total += d;
        *usec += after->s[i].usec - (was ? was->usec : 0);
        if (breakdown && used < blen) {
            int w = snprintf(breakdown + used, blen - used, "%s%s=%lld", used ? " " : "", name, d);
            if (w > 0)
                used += (size_t)w;
        }
    }
    return total;
}

static void sess_id(char *out, size_t len, size_t i)
{
    snprintf(out, len, "bench-%07zu", i);
}

/* Block k = i / stride holds one idle session (r == 0) and stride - 1
 * recent ones. In the first OVERRIDE_BLOCKS blocks, r 0 and 1 are made
 * through the store's own scripts, and half of them carry an override. */
static bool via_store(const struct bcase *c, size_t i)
{
    return i / c->stride < OVERRIDE_BLOCKS && i % c->stride <= 1;
}

static int64_t last_active_of(const struct bcase *c, size_t i)
{
    if (c->is_idle[i]) /* 30 to 90 minutes ago */
        return c->now - 30 * MIN_MS - (int64_t)((i / c->stride) * 7919u % 3600u) * 1000;
    return c->now - (int64_t)(i * 7919u % 300000u); /* within the last 5 minutes */
}

/* The overrides (store-made sessions only): on recent sessions a stop tier
 * shorter than the configured one, so wg:idle_short widens the reaper's
 * range; on idle ones a pause tier. */
static void override_of(const struct bcase *c, size_t i, struct wg_session_update *u)
{
    size_t k = i / c->stride, r = i % c->stride;

    if (!via_store(c, i))
        return;
    if (r == 1 && k % 2 == 0) {
        u->set |= WG_SF_IDLE_STOP_AFTER;
        u->has_idle_stop_after = true;
        u->idle_stop_after_ms = SHORT_STOP_MS;
    } else if (r == 0 && k % 2 == 1) {
        u->set |= WG_SF_IDLE_PAUSE_AFTER;
        u->has_idle_pause_after = true;
        u->idle_pause_after_ms = SHORT_PAUSE_MS;
    }
}

static void container_of(char *out, size_t len, size_t i)
{
    snprintf(out, len, "%016zx%048x", i * 2654435761u, 0);
}

static void ip_of(char *out, size_t len, size_t i)
{
    snprintf(out, len, "172.%zu.%zu.%zu", 16 + (i >> 16) % 16, (i >> 8) & 255, i & 255);
}

/* The record a session has after create -> starting -> running, as the
 * store's scripts leave it: id state state_since host container_id ip port
 * image created v spec (last_active is the wg:active score while awake). */
static int append_record(struct bench *b, const struct bcase *c, size_t i)
{
    struct wg_session rec;
    struct wg_session_hash h;
    const char *argv[2 + 2 * WG_SESSION_FIELDS];
    size_t argvlen[2 + 2 * WG_SESSION_FIELDS];
    char key[96], id[WG_SESSION_ID_MAX + 1], score[24], err[128];
    static char spec[sizeof(spec_json)];
    int64_t la = last_active_of(c, i), created = la - 60 * MIN_MS;
    int argc = 0;

    memcpy(spec, spec_json, sizeof(spec_json));
    wg_session_init(&rec);
    sess_id(rec.id, sizeof(rec.id), i);
    rec.state = WG_SESSION_RUNNING;
    rec.state_since = created + 2000;
    snprintf(rec.host, sizeof(rec.host), "%s", HOST);
    container_of(rec.container_id, sizeof(rec.container_id), i);
    ip_of(rec.ip, sizeof(rec.ip), i);
    rec.port = PORT;
    snprintf(rec.image, sizeof(rec.image), "%s", IMAGE);
    rec.created = created;
    rec.spec = spec;
    rec.version = 3;
    /* Every record the store makes has an access generation (common/access.h). */
    rec.gen = 1 + (uint64_t)i;
    if (wg_session_encode(&rec, &h, err, sizeof(err)) < 0) {
        fprintf(stderr, "reaper_bench: encode %s: %s\n", rec.id, err);
        return -1;
    }
    snprintf(key, sizeof(key), WG_STORE_KEY_SESSION_PREFIX "%s", rec.id);
    argv[argc] = "HSET";
    argvlen[argc++] = 4;
    argv[argc] = key;
    argvlen[argc++] = strlen(key);
    for (size_t f = 0; f < h.n; f++) {
        argv[argc] = h.kv[f].name;
        argvlen[argc++] = h.kv[f].name_len;
        argv[argc] = h.kv[f].value;
        argvlen[argc++] = h.kv[f].value_len;
    }
    redisAppendCommandArgv(b->sync, argc, argv, argvlen);
    memcpy(id, rec.id, sizeof(id));
    redisAppendCommand(b->sync, "SADD %s %s", WG_STORE_KEY_SESSIONS, id);
    snprintf(score, sizeof(score), "%" PRId64, la);
    redisAppendCommand(b->sync, "ZADD %s %s %s", WG_STORE_KEY_ACTIVE, score, id);
    return 3;
}

static int drain_replies(struct bench *b, int n)
{
    int rc = 0;

    for (int k = 0; k < n; k++) {
        redisReply *rep = NULL;

        if (redisGetReply(b->sync, (void **)&rep) != REDIS_OK || !rep) {
            fprintf(stderr, "reaper_bench: fill: %s\n", b->sync->errstr);
            return -1;
        }
        if (rep->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "reaper_bench: fill: %s\n", rep->str);
            rc = -1;
        }
        freeReplyObject(rep);
    }
    return rc;
}

/* ---- the store side ------------------------------------------------------------------------ */

static void on_store(const struct wg_store_res *res, void *arg)
{
    struct bench *b = arg;

    b->status = res->status;
    snprintf(b->error, sizeof(b->error), "%s", res->error);
    b->done = true;
}

static int store_step(struct bench *b, const char *what, const char *id, int rc)
{
    if (rc == 0 && !run_until_done(b))
        rc = -ETIMEDOUT;
    else if (rc == 0)
        rc = b->status;
    if (rc != 0) {
        fprintf(stderr, "reaper_bench: %s %s: %d %s\n", what, id, rc, rc < 0 ? b->error : "");
        return -1;
    }
    return 0;
}

/* create -> starting -> running, then one touch, each at its time. */
static int make_via_store(struct bench *b, const struct bcase *c, size_t i)
{
    struct wg_session_update cu = {0}, ru = {0};
    struct wg_store_activity act;
    char id[WG_SESSION_ID_MAX + 1], cid[WG_SESSION_CONTAINER_ID_MAX + 1], ip[WG_SESSION_IP_MAX + 1];
    int64_t la = last_active_of(c, i), created = la - 60 * MIN_MS;

    sess_id(id, sizeof(id), i);
    container_of(cid, sizeof(cid), i);
    ip_of(ip, sizeof(ip), i);
    cu.set = WG_SF_HOST | WG_SF_IMAGE | WG_SF_PORT | WG_SF_SPEC;
    cu.host = HOST;
    cu.image = IMAGE;
    cu.port = PORT;
    cu.spec = spec_json;
    override_of(c, i, &cu);
    ru.set = WG_SF_CONTAINER_ID | WG_SF_IP;
    ru.container_id = cid;
    ru.ip = ip;

    b->clock_fixed = true;
    b->clock = created;
    start_call(b);
    if (store_step(b, "create", id, wg_store_create(b->st, id, &cu, NULL, on_store, b)) < 0)
        return -1;
    b->clock = created + 50;
    start_call(b);
    if (store_step(b, "starting", id,
                   wg_store_transition(b->st, id, WG_SESSION_BIT(WG_SESSION_CREATING),
                                       WG_SESSION_STARTING, NULL, NULL, on_store, b)) < 0)
        return -1;
    b->clock = created + 2000;
    start_call(b);
    if (store_step(b, "running", id,
                   wg_store_transition(b->st, id, WG_SESSION_BIT(WG_SESSION_STARTING),
                                       WG_SESSION_RUNNING, &ru, NULL, on_store, b)) < 0)
        return -1;
    b->clock_fixed = false;
    act.id = id;
    act.at_ms = la;
    start_call(b);
    return store_step(b, "touch", id, wg_store_touch(b->st, &act, 1, on_store, b));
}

/* The pipelined records must be what the store writes: same fields, same
 * values where they do not depend on the session. */
static int check_format(struct bench *b, size_t via, size_t piped)
{
    static const char *const same[] = {"state", "host", "image", "port", "v", "spec"};
    char ka[96], kb[96], ia[WG_SESSION_ID_MAX + 1], ib[WG_SESSION_ID_MAX + 1];
    redisReply *ra, *rb;
    int rc = -1;

    sess_id(ia, sizeof(ia), via);
    sess_id(ib, sizeof(ib), piped);
    snprintf(ka, sizeof(ka), WG_STORE_KEY_SESSION_PREFIX "%s", ia);
    snprintf(kb, sizeof(kb), WG_STORE_KEY_SESSION_PREFIX "%s", ib);
    ra = sync_cmd(b, "HGETALL %s", ka);
    rb = sync_cmd(b, "HGETALL %s", kb);
    if (!ra || !rb)
        goto out;
    if (ra->elements == 0 || ra->elements != rb->elements) {
        fprintf(stderr, "reaper_bench: format: %s has %zu fields, %s (store-made) %zu\n", ib,
                rb->elements / 2, ia, ra->elements / 2);
        goto out;
    }
    for (size_t f = 0; f < ra->elements; f += 2) {
        const char *name = ra->element[f]->str;
        const redisReply *va = ra->element[f + 1], *vb = NULL;

        for (size_t g = 0; g < rb->elements; g += 2)
            if (strcmp(rb->element[g]->str, name) == 0)
                vb = rb->element[g + 1];
        if (!vb) {
            fprintf(stderr, "reaper_bench: format: %s lacks field %s\n", ib, name);
            goto out;
        }
        for (size_t k = 0; k < sizeof(same) / sizeof(same[0]); k++)
            if (strcmp(name, same[k]) == 0 && strcmp(va->str, vb->str) != 0) {
                fprintf(stderr,
                        "reaper_bench: format: field %s: %s has \"%s\", store-made \"%s\"\n", name,
                        ib, vb->str, va->str);
                goto out;
            }
    }
    rc = 0;
out:
    if (ra)
        freeReplyObject(ra);
    if (rb)
        freeReplyObject(rb);
    return rc;
}

static long long sync_int(struct bench *b, const char *fmt, const char *arg)
{
    redisReply *rep = sync_cmd(b, fmt, arg);
    long long v = -1;

    if (rep && rep->type == REDIS_REPLY_INTEGER)
        v = rep->integer;
    if (rep)
        freeReplyObject(rep);
    return v;
}

static int fill(struct bench *b, struct bcase *c)
{
    uint64_t t0 = uv_hrtime();
    size_t overrides = 0, i = 0;
    redisReply *rep;

    if (!(rep = sync_cmd(b, "FLUSHALL", NULL)))
        return -1;
    freeReplyObject(rep);
    c->now = wg_clock_wall_ms();
    while (i < c->sessions) {
        size_t end = i + FILL_BATCH < c->sessions ? i + FILL_BATCH : c->sessions;
        int pending = 0;

        for (; i < end; i++) {
            int n;

            if (via_store(c, i))
                continue;
            if ((n = append_record(b, c, i)) < 0) {
                drain_replies(b, pending);
                return -1;
            }
            pending += n;
        }
        if (drain_replies(b, pending) < 0)
            return -1;
    }
    for (i = 0; i < c->sessions; i++) {
        struct wg_session_update u = {0};

        if (!via_store(c, i))
            continue;
        override_of(c, i, &u);
        overrides += u.set != 0;
        if (make_via_store(b, c, i) < 0)
            return -1;
    }
    /* a store-made recent session without override vs a pipelined one */
    if (check_format(b, c->stride + 1, c->sessions - 1) < 0)
        return -1;
    if (sync_int(b, "SCARD %s", WG_STORE_KEY_SESSIONS) != (long long)c->sessions ||
        sync_int(b, "ZCARD %s", WG_STORE_KEY_ACTIVE) != (long long)c->sessions ||
        sync_int(b, "ZCARD %s", WG_STORE_KEY_IDLE_SHORT) != (long long)overrides ||
        sync_int(b, "ZCARD %s", WG_STORE_KEY_TRANSIENT) != 0) {
        fprintf(stderr, "reaper_bench: fill: key sizes are not what was written\n");
        return -1;
    }
    c->fill_s = (double)(uv_hrtime() - t0) / 1e9;
    return 0;
}

/* ---- the passes ---------------------------------------------------------------------------- */

static void note_id(struct bench *b, const char *id)
{
    const char *p = id + strlen("bench-");
    char *end;
    unsigned long long i;

    if (strncmp(id, "bench-", 6) != 0)
        goto wrong;
    i = strtoull(p, &end, 10);
    if (*end != '\0' || i >= b->c->sessions || !b->c->is_idle[i])
        goto wrong;
    if (b->seen[i]) {
        b->dup++;
        return;
    }
    b->seen[i] = true;
    b->got++;
    return;
wrong:
    b->wrong++;
}

static void on_reap(const struct wg_store_res *res, void *arg)
{
    struct bench *b = arg;

    b->status = res->status;
    snprintf(b->error, sizeof(b->error), "%s", res->error);
    b->pages++;
    b->bad += res->n_bad;
    /* What reap_one() looks at first: this host's candidates. */
    for (size_t i = 0; res->status == 0 && i < res->n_reap; i++) {
        const struct wg_store_reap *e = &res->reap[i];
        if (strcmp(e->host, HOST) != 0 || e->state != WG_SESSION_RUNNING)
            b->wrong++;
        else
            note_id(b, e->id);
    }
    /* orchestrator/sleeper.c on_reap_scan(): a full page means more wait. */
    b->more = res->status == 0 && res->n_reap + res->n_bad == WG_STORE_BATCH_MAX && res->count >= 0;
    b->done = true;
}

/* The effective shortest tier of a record: its override if it has one on,
 * else the configured tier (what wg:idle_short + the tier give the reaper). */
static int64_t tier_of(const struct wg_session *rec)
{
    int64_t t = -1;

    if (rec->has_idle_pause_after && rec->idle_pause_after_ms > 0)
        t = (int64_t)rec->idle_pause_after_ms;
    if (rec->has_idle_stop_after && rec->idle_stop_after_ms > 0 &&
        (t < 0 || (int64_t)rec->idle_stop_after_ms < t))
        t = (int64_t)rec->idle_stop_after_ms;
    return t >= 0 ? t : TIER_MS;
}

static void on_list(const struct wg_store_res *res, void *arg)
{
    struct bench *b = arg;
    int64_t now = wg_clock_wall_ms();

    b->status = res->status;
    snprintf(b->error, sizeof(b->error), "%s", res->error);
    b->pages = 1;
    b->bad += res->n_bad;
    for (size_t i = 0; res->status == 0 && i < res->n_recs; i++) {
        const struct wg_session *rec = &res->recs[i];
        if (rec->state == WG_SESSION_RUNNING && strcmp(rec->host, HOST) == 0 &&
            now - rec->last_active >= tier_of(rec))
            note_id(b, rec->id);
    }
    b->more = false;
    b->done = true;
}

/* One pass; returns 0 with *ms and *cmds set, or -1 (setup trouble). The
 * result's correctness lands in c->ok. */
static int one_pass(struct bench *b, struct bcase *c, bool reaper, double *ms, long long *cmds,
                    double *server_ms, char *breakdown, size_t blen)
{
    long long usec;
    struct cmdstats before, after;
    size_t offset = 0;
    uint64_t t0, t1;
    int rc;

    memset(b->seen, 0, c->sessions * sizeof(*b->seen));
    b->c = c;
    b->got = b->wrong = b->dup = b->bad = b->pages = 0;
    if (cmdstats_read(b, &before) < 0)
        return -1;
    t0 = uv_hrtime();
    do {
        start_call(b);
        rc = reaper ? wg_store_reap_scan(b->st, TIER_MS, offset, WG_STORE_BATCH_MAX, on_reap, b)
                    : wg_store_list(b->st, on_list, b);
        if (rc < 0 || !run_until_done(b) || b->status != 0) {
            fprintf(stderr, "reaper_bench: %s: %d %s\n", reaper ? "reap_scan" : "list",
                    rc < 0 ? rc : b->status, b->error);
            return -1;
        }
        offset += WG_STORE_BATCH_MAX;
    } while (b->more);
    t1 = uv_hrtime();
    if (cmdstats_read(b, &after) < 0)
        return -1;
    *ms = (double)(t1 - t0) / 1e6;
    *cmds = cmdstats_delta(&before, &after, &usec, breakdown, blen);
    *server_ms = (double)usec / 1e3;
    if (c->ok && (b->got != c->idle || b->wrong || b->dup || b->bad)) {
        c->ok = false;
        snprintf(c->why, sizeof(c->why),
                 "%s pass found %zu of %zu idle sessions, %zu wrong, %zu twice, %zu garbled",
                 reaper ? "wakegate" : "full-scan", b->got, c->idle, b->wrong, b->dup, b->bad);
    }
    if (reaper && c->ok && *cmds > c->wg_allowed) {
        c->ok = false;
        snprintf(c->why, sizeof(c->why),
                 "wakegate pass issued %lld commands, more than 2 per page + idle + %d = %lld",
                 *cmds, REAP_SLACK, c->wg_allowed);
    }
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* Nearest rank on a sorted copy. */
static double pct(const double *v, size_t n, double p)
{
    double *s = malloc(n * sizeof(*s));
    double r;
    size_t k;

    if (!s || n == 0) {
        free(s);
        return 0;
    }
    memcpy(s, v, n * sizeof(*s));
    qsort(s, n, sizeof(*s), cmp_double);
    k = (size_t)(p / 100.0 * (double)n + 0.999999);
    k = k == 0 ? 0 : k - 1;
    r = s[k < n ? k : n - 1];
    free(s);
    return r;
}

static long long median_ll(const long long *v, size_t n)
{
    long long *s = malloc(n * sizeof(*s)), r;

    if (!s || n == 0) {
        free(s);
        return 0;
    }
    memcpy(s, v, n * sizeof(*s));
    qsort(s, n, sizeof(*s), cmp_ll);
    r = s[(n - 1) / 2];
    free(s);
    return r;
}

static long long max_ll(const long long *v, size_t n)
{
    long long m = 0;
    for (size_t i = 0; i < n; i++)
        m = v[i] > m ? v[i] : m;
    return m;
}

/* Busy ticks of all CPUs (as benchlib.py's busy: everything but idle and
 * iowait). */
static long long busy_ticks(void)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    int n;

    if (!f)
        return -1;
    n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
               &v[5], &v[6], &v[7]);
    fclose(f);
    if (n != 8)
        return -1;
    return (long long)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
}

/* While Redis and this program sit idle, whatever is busy is someone else's
 * load: it makes the times noisy (never the command counts). */
static double background_busy(void)
{
    long long b0 = busy_ticks(), b1;
    uint64_t t0 = uv_hrtime();
    struct timespec half = {.tv_nsec = 500000000};

    nanosleep(&half, NULL);
    b1 = busy_ticks();
    if (b0 < 0 || b1 < 0)
        return -1;
    return (double)(b1 - b0) / (double)sysconf(_SC_CLK_TCK) / ((double)(uv_hrtime() - t0) / 1e9) *
           100;
}

static int run_case(struct bench *b, struct bcase *c, size_t k_wg, size_t k_full)
{
    size_t rounds = k_wg > k_full ? k_wg : k_full;
    double ms, sms;
    long long cmds;
    char scratch[256];

    c->stride = c->sessions / c->idle;
    c->is_idle = calloc(c->sessions, sizeof(*c->is_idle));
    free(b->seen);
    b->seen = calloc(c->sessions, sizeof(*b->seen));
    c->wg.ms = calloc(k_wg, sizeof(double));
    c->wg.cmds = calloc(k_wg, sizeof(long long));
    c->wg.server_ms = calloc(k_wg, sizeof(double));
    c->full.server_ms = calloc(k_full, sizeof(double));
    c->full.ms = calloc(k_full, sizeof(double));
    c->full.cmds = calloc(k_full, sizeof(long long));
    if (!c->is_idle || !b->seen || !c->wg.ms || !c->wg.cmds || !c->full.ms || !c->full.cmds ||
        !c->wg.server_ms || !c->full.server_ms)
        return -1;
    for (size_t i = 0; i < c->sessions; i += c->stride)
        c->is_idle[i] = true;
    c->ok = true;
    c->wg_allowed =
        2 * (long long)(c->idle / WG_STORE_BATCH_MAX + 1) + (long long)c->idle + REAP_SLACK;
    fprintf(stderr, "reaper_bench: %zu sessions, %zu idle: filling...\n", c->sessions, c->idle);
    if (fill(b, c) < 0)
        return -1;
    c->busy_pct = background_busy();
    fprintf(
        stderr,
        "reaper_bench:   filled in %.1f s; %zu + %zu passes; background load %.0f%% of a CPU%s\n",
        c->fill_s, k_wg, k_full, c->busy_pct, c->busy_pct > 20 ? " (times will be noisy)" : "");
    /* Warm-up of each (not counted): allocator, Redis's reply buffers. */
    if (one_pass(b, c, true, &ms, &cmds, &sms, NULL, 0) < 0 ||
        one_pass(b, c, false, &ms, &cmds, &sms, NULL, 0) < 0)
        return -1;
    /* Alternated, so drift of the machine hits both alike. */
    for (size_t r = 0; r < rounds; r++) {
        if (r < k_wg) {
            if (one_pass(b, c, true, &c->wg.ms[r], &c->wg.cmds[r], &c->wg.server_ms[r],
                         r == 0 ? c->wg.breakdown : scratch, sizeof(scratch)) < 0)
                return -1;
            if (r == 0)
                c->wg.pages = b->pages;
            c->wg.n++;
        }
        if (r < k_full) {
            if (one_pass(b, c, false, &c->full.ms[r], &c->full.cmds[r], &c->full.server_ms[r],
                         r == 0 ? c->full.breakdown : scratch, sizeof(scratch)) < 0)
                return -1;
            c->full.n++;
        }
    }
    return 0;
}

/* ---- output -------------------------------------------------------------------------------- */

static json_t *series_json(const struct series *s)
{
    json_t *ms = json_array(), *cmds = json_array(), *sms = json_array();

    for (size_t i = 0; i < s->n; i++) {
        json_array_append_new(ms, json_real(s->ms[i]));
        json_array_append_new(cmds, json_integer(s->cmds[i]));
        json_array_append_new(sms, json_real(s->server_ms[i]));
    }
    return json_pack("{s:f, s:o, s:i, s:I, s:I, s:s, s:f, s:f, s:f, s:f, s:o, s:o}",
                     "redis_ms_median", pct(s->server_ms, s->n, 50), "redis_ms", sms, "passes",
                     (int)s->n, "commands_median", (json_int_t)median_ll(s->cmds, s->n),
                     "commands_max", (json_int_t)max_ll(s->cmds, s->n), "commands_breakdown",
                     s->breakdown, "ms_median", pct(s->ms, s->n, 50), "ms_p95",
                     pct(s->ms, s->n, 95), "ms_min", pct(s->ms, s->n, 0), "ms_max",
                     pct(s->ms, s->n, 100), "ms", ms, "commands", cmds);
}

static double ratio(double a, double b)
{
    return b > 0 ? a / b : 0;
}

static void print_table(const struct bcase *cs, size_t n, const char *redis_version)
{
    printf("\nOne reaper pass: wakegate (wg_store_reap_scan, paged as the sleeper pages it) vs a "
           "full\n"
           "scan (wg_store_list: SMEMBERS + one HGETALL per record + ZMSCORE, idle decided from\n"
           "last_active). Redis %s on a unix socket, tier %lld min. ratio = wakegate / full scan.\n"
           "Redis ms = Redis's own time in the pass's commands (INFO commandstats usec).\n\n",
           redis_version, TIER_MS / MIN_MS);
    printf("%8s %5s | %27s | %28s | %28s | %19s | %5s | %s\n", "", "", "commands per pass",
           "ms per pass, median", "ms per pass, p95", "Redis ms, median", "bg", "");
    printf("%8s %5s | %8s %8s %9s | %8s %9s %9s | %8s %9s %9s | %8s %10s | %5s | %s\n", "sessions",
           "idle", "wakegate", "full", "ratio", "wakegate", "full", "ratio", "wakegate", "full",
           "ratio", "wakegate", "full", "load%", "check");
    for (size_t i = 0; i < n; i++) {
        const struct bcase *c = &cs[i];
        long long cw = median_ll(c->wg.cmds, c->wg.n), cf = median_ll(c->full.cmds, c->full.n);
        double mw = pct(c->wg.ms, c->wg.n, 50), mf = pct(c->full.ms, c->full.n, 50);
        double pw = pct(c->wg.ms, c->wg.n, 95), pf = pct(c->full.ms, c->full.n, 95);

        printf("%8zu %5zu | %8lld %8lld %9.3g | %8.3f %9.2f %9.3g | %8.3f %9.2f %9.3g | %8.3f "
               "%10.2f | %5.0f | %s\n",
               c->sessions, c->idle, cw, cf, ratio((double)cw, (double)cf), mw, mf, ratio(mw, mf),
               pw, pf, ratio(pw, pf), pct(c->wg.server_ms, c->wg.n, 50),
               pct(c->full.server_ms, c->full.n, 50), c->busy_pct, c->ok ? "ok" : "FAILED");
    }
    printf(
        "\nwakegate's commands in its first measured pass (the claim: at most 2 per page + idle + "
        "%d):\n",
        REAP_SLACK);
    for (size_t i = 0; i < n; i++)
        printf("  %6zu sessions, %4zu idle: %s; %zu page%s, at most %lld allowed\n", cs[i].sessions,
               cs[i].idle, cs[i].wg.breakdown, cs[i].wg.pages, cs[i].wg.pages == 1 ? "" : "s",
               cs[i].wg_allowed);
    printf("passes per case: wakegate %zu, full scan %zu..%zu (after one warm-up each); "
           "bg load%% = other processes' CPU use (%% of one CPU) in 0.5 s before the passes, "
           "above 20 the times are noisy\n",
           cs[0].wg.n, cs[n - 1].full.n, cs[0].full.n);
    for (size_t i = 0; i < n; i++)
        if (!cs[i].ok)
            printf("FAILED %zu/%zu: %s\n", cs[i].sessions, cs[i].idle, cs[i].why);
}

static int write_json(const char *path, const struct bcase *cs, size_t n, const char *redis_version,
                      const char *url)
{
    json_t *root, *cases = json_array();
    char date[64];
    time_t t = time(NULL);
    struct tm tm;
    int rc;

    localtime_r(&t, &tm);
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S%z", &tm);
    for (size_t i = 0; i < n; i++) {
        const struct bcase *c = &cs[i];
        double cw = (double)median_ll(c->wg.cmds, c->wg.n);
        double cf = (double)median_ll(c->full.cmds, c->full.n);

        json_array_append_new(
            cases,
            json_pack("{s:f, s:I, s:I, s:f, s:b, s:s, s:I, s:o, s:o, s:{s:f, s:f, s:f}}",
                      "background_busy_pct", c->busy_pct, "sessions", (json_int_t)c->sessions,
                      "idle", (json_int_t)c->idle, "fill_s", c->fill_s, "ok", c->ok, "problem",
                      c->why, "wakegate_commands_allowed", (json_int_t)c->wg_allowed, "wakegate",
                      series_json(&c->wg), "full_scan", series_json(&c->full),
                      "ratio_wakegate_over_full", "commands", ratio(cw, cf), "ms_median",
                      ratio(pct(c->wg.ms, c->wg.n, 50), pct(c->full.ms, c->full.n, 50)), "ms_p95",
                      ratio(pct(c->wg.ms, c->wg.n, 95), pct(c->full.ms, c->full.n, 95))));
    }
    root = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:s, s:o}", "date", date,
                     "redis_version", redis_version, "redis_url", url, "tier_ms",
                     (json_int_t)TIER_MS, "override_stop_ms", (json_int_t)SHORT_STOP_MS,
                     "override_pause_ms", (json_int_t)SHORT_PAUSE_MS, "batch_max",
                     (json_int_t)WG_STORE_BATCH_MAX, "wakegate_pass",
                     "wg_store_reap_scan, paged like orchestrator/sleeper.c", "full_scan_pass",
                     "wg_store_list (SMEMBERS, HGETALL per record, ZMSCORE), idle decided from "
                     "last_active and the record's override",
                     "cases", cases);
    if (!root)
        return -1;
    rc = json_dump_file(root, path, JSON_INDENT(1) | JSON_SORT_KEYS);
    json_decref(root);
    return rc;
}

/* ---- setup --------------------------------------------------------------------------------- */

static void on_state(struct wg_redis *r, bool connected, const char *reason, void *arg)
{
    struct bench *b = arg;

    (void)r;
    b->status = connected ? 0 : -ENOTCONN;
    snprintf(b->error, sizeof(b->error), "%s", reason ? reason : "");
    b->done = true;
}

static int sync_connect(struct bench *b, const char *url)
{
    struct timeval tv = {.tv_sec = 30};

    if (strncmp(url, "unix://", 7) == 0) {
        char path[256];
        snprintf(path, sizeof(path), "%s", url + 7);
        path[strcspn(path, "?")] = '\0';
        b->sync = redisConnectUnixWithTimeout(path, tv);
    } else if (strncmp(url, "redis://", 8) == 0 && !strchr(url + 8, '@')) {
        char host[256], *colon;
        int port = 6379;
        snprintf(host, sizeof(host), "%s", url + 8);
        host[strcspn(host, "/")] = '\0';
        if ((colon = strrchr(host, ':'))) {
            *colon = '\0';
            port = atoi(colon + 1);
        }
        b->sync = redisConnectWithTimeout(host, port, tv);
    } else {
        fprintf(stderr, "reaper_bench: URL must be unix:///path or redis://host:port\n");
        return -1;
    }
    if (!b->sync || b->sync->err) {
        fprintf(stderr, "reaper_bench: connect %s: %s\n", url,
                b->sync ? b->sync->errstr : "out of memory");
        return -1;
    }
    redisSetTimeout(b->sync, tv);
    return 0;
}

static int redis_version(struct bench *b)
{
    redisReply *rep = sync_cmd(b, "INFO server", NULL);
    const char *v;

    snprintf(b->redis_version, sizeof(b->redis_version), "?");
    if (!rep)
        return -1;
    if ((v = strstr(rep->str, "redis_version:"))) {
        v += strlen("redis_version:");
        snprintf(b->redis_version, sizeof(b->redis_version), "%.*s", (int)strcspn(v, "\r\n"), v);
    }
    freeReplyObject(rep);
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: reaper_bench URL [--cases N:IDLE,...] [--passes K] [--full-passes K]\n"
            "                        [--json PATH]\n"
            "  URL: unix:///path/redis.sock or redis://127.0.0.1:PORT of a redis-server whose\n"
            "       data this program may FLUSHALL\n"
            "  --cases        default 1000:100,10000:100,100000:100,100000:1000\n"
            "  --passes       wakegate passes per case (default 100)\n"
            "  --full-passes  full-scan passes per case (default 1,000,000 / N, 5..30)\n");
}

static size_t parse_cases(const char *s, struct bcase *out, size_t max)
{
    size_t n = 0;

    while (*s && n < max) {
        char *end;
        unsigned long long sess = strtoull(s, &end, 10), idle;
        if (*end != ':')
            return 0;
        idle = strtoull(end + 1, &end, 10);
        if (idle < 2 * OVERRIDE_BLOCKS || sess < 2 * idle || sess % idle != 0 ||
            sess > WG_STORE_LIST_MAX || (*end != ',' && *end != '\0'))
            return 0;
        out[n].sessions = sess;
        out[n].idle = idle;
        n++;
        s = *end ? end + 1 : end;
    }
    return n;
}

int main(int argc, char **argv)
{
    struct bench b = {0};
    struct bcase cs[16] = {{0}};
    size_t ncases = 0, k_wg = 100;
    long k_full_opt = 0;
    const char *url = NULL, *json_path = NULL;
    struct wg_redis_opts ro = {.name = "bench", .command_timeout_ms = 60000};
    struct wg_store_opts so = {.clock_ms = bench_clock, .clock_arg = &b};
    int rc = 2;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--cases") == 0 && i + 1 < argc) {
            ncases = parse_cases(argv[++i], cs, sizeof(cs) / sizeof(cs[0]));
            if (!ncases) {
                fprintf(stderr,
                        "reaper_bench: bad --cases (N:IDLE, IDLE >= %d, N a multiple "
                        "of IDLE and >= 2 IDLE, N <= %d)\n",
                        2 * OVERRIDE_BLOCKS, WG_STORE_LIST_MAX);
                return 2;
            }
        } else if (strcmp(argv[i], "--passes") == 0 && i + 1 < argc) {
            k_wg = strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--full-passes") == 0 && i + 1 < argc) {
            k_full_opt = strtol(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
            json_path = argv[++i];
        } else if (argv[i][0] != '-' && !url) {
            url = argv[i];
        } else {
            usage();
            return 2;
        }
    }
    if (!url || k_wg == 0 || k_full_opt < 0) {
        usage();
        return 2;
    }
    if (!ncases)
        ncases = parse_cases("1000:100,10000:100,100000:100,100000:1000", cs, 16);

    b.log.level = WG_LOG_WARN;
    b.log.format = WG_LOG_LOGFMT;
    b.log.out = stderr;
    if (uv_loop_init(&b.loop) != 0)
        return 2;
    if (sync_connect(&b, url) < 0 || redis_version(&b) < 0)
        goto out;
    if (wg_redis_new(&b.loop, url, &ro, &b.log, &b.r) < 0 || wg_store_new(b.r, &so, &b.st) < 0) {
        fprintf(stderr, "reaper_bench: cannot set up the store on %s\n", url);
        goto out;
    }
    start_call(&b);
    wg_redis_on_state(b.r, on_state, &b);
    if (!run_until_done(&b) || b.status != 0) {
        fprintf(stderr, "reaper_bench: no connection to %s: %s\n", url, b.error);
        goto out;
    }
    wg_redis_on_state(b.r, NULL, NULL);

    for (size_t i = 0; i < ncases; i++) {
        size_t k_full = k_full_opt ? (size_t)k_full_opt : 1000000 / cs[i].sessions;
        if (!k_full_opt)
            k_full = k_full < 5 ? 5 : k_full > 30 ? 30 : k_full;
        if (run_case(&b, &cs[i], k_wg, k_full) < 0) {
            fprintf(stderr, "reaper_bench: case %zu/%zu could not run\n", cs[i].sessions,
                    cs[i].idle);
            goto out;
        }
    }
    print_table(cs, ncases, b.redis_version);
    if (json_path && write_json(json_path, cs, ncases, b.redis_version, url) < 0)
        fprintf(stderr, "reaper_bench: cannot write %s\n", json_path);
    else if (json_path)
        printf("\nwrote %s\n", json_path);
    rc = 0;
    for (size_t i = 0; i < ncases; i++)
        if (!cs[i].ok)
            rc = 1;
out:
    wg_store_free(b.st);
    b.st = NULL;
    wg_redis_free(b.r);
    b.r = NULL;
    uv_run(&b.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&b.loop) != 0 && rc == 0) {
        fprintf(stderr, "reaper_bench: handles left on the loop\n");
        rc = 2;
    }
    if (b.sync)
        redisFree(b.sync);
    free(b.seen);
    for (size_t i = 0; i < ncases; i++) {
        free(cs[i].is_idle);
        free(cs[i].wg.ms);
        free(cs[i].wg.cmds);
        free(cs[i].full.ms);
        free(cs[i].full.cmds);
        free(cs[i].wg.server_ms);
        free(cs[i].full.server_ms);
    }
    return rc;
}
