/* admin/api_hosts.c - GET /v1/hosts: every orchestrator host an operator
 * should know of, with its heartbeat.
 *
 * The names are the members of wg:hosts and wg:lost_hosts (the placement
 * side keeps both). When wg:hosts does not exist (a deployment older than
 * placement) they come from a SCAN of wg:host:* instead, bounded
 * (API_HOSTS_SCAN_MAX rounds of COUNT 1000), for this operator call only:
 * nothing on a hot path ever scans. Then one MGET of their heartbeat keys.
 * A host is live when its heartbeat key exists and it is not in
 * wg:lost_hosts, returning when it is in both, lost otherwise (listed lost,
 * or its heartbeat expired). The heartbeat's JSON is passed on as it is
 * (fields unknown to this version included; a value that is no JSON
 * object is null), and its age comes from its "at" (ms). The steps run one
 * after the other on the shared connection; each is one pending callback
 * of the call. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "admin/api_int.h"
#include "common/clock.h"
#include "common/redis.h"
#include "common/store.h"

#define API_HOST_PREFIX "wg:host:"
#define API_HOSTS_MAX 1024     /* hosts in one answer */
#define API_HOSTS_SCAN_MAX 16  /* SCAN rounds of the fallback */
#define API_HOST_NAME_MAX 253  /* as wg_session_host_valid() allows */
#define API_HEARTBEAT_MAX 8192 /* bytes of one heartbeat value read */

static void hosts_lost(struct call *c);
static void hosts_scan(struct call *c);
static void hosts_heartbeats(struct call *c);

/* Adds name to c's host list (an object name -> {} until the heartbeats
 * are read); names that are no host name are skipped. */
static void hosts_add(struct call *c, const char *name, size_t len)
{
    char buf[API_HOST_NAME_MAX + 1];

    if (len == 0 || len > API_HOST_NAME_MAX || !wg_session_host_valid(name, len))
        return;
    if (json_object_size(c->hosts) >= API_HOSTS_MAX) {
        c->hosts_truncated = true;
        return;
    }
    memcpy(buf, name, len);
    buf[len] = '\0';
    if (!json_object_get(c->hosts, buf))
        json_object_set_new(c->hosts, buf, json_object());
}

static bool hosts_step_failed(struct call *c, int status, const redisReply *reply,
                              const char *doing)
{
    c->pending--;
    if (!api_call_live(c)) {
        api_call_maybe_free(c);
        return true;
    }
    if (status != 0 || reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        api_call_fail(c, status ? status : -EIO,
                      reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "", doing);
        api_call_maybe_free(c);
        return true;
    }
    return false;
}

static int hosts_command(struct call *c, wg_redis_reply_cb *cb, int argc, const char **argv)
{
    int rc = wg_redis_command_argv(c->api->redis, cb, c, argc, argv, NULL);

    if (rc == 0)
        c->pending++;
    else
        api_call_fail(c, rc, "", "hosts");
    return rc;
}

/* ---- the answer ------------------------------------------------------------------------------ */

static json_t *host_entry(const char *name, const redisReply *hb, bool lost, int64_t now)
{
    json_t *beat = NULL, *at;
    const char *state;

    if (hb && hb->type == REDIS_REPLY_STRING && hb->len <= API_HEARTBEAT_MAX) {
        beat = json_loadb(hb->str, hb->len, 0, NULL);
        if (beat && !json_is_object(beat)) {
            json_decref(beat);
            beat = NULL;
        }
    }
    bool present = hb && hb->type == REDIS_REPLY_STRING;
    state = present && !lost ? "live" : present ? "returning" : "lost";
    at = beat ? json_object_get(beat, "at") : NULL;
    return json_pack("{s:s, s:s, s:b, s:b, s:o, s:o}", "name", name, "state", state, "heartbeat",
                     present, "listed_lost", lost, "age_ms",
                     json_is_integer(at) ? json_integer(now - json_integer_value(at)) : json_null(),
                     "info", beat ? beat : json_null());
}

static int by_name(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;

    return strcmp(json_string_value(json_object_get(x, "name")),
                  json_string_value(json_object_get(y, "name")));
}

static void on_heartbeats(int status, redisReply *reply, void *arg)
{
    struct call *c = arg;
    size_t n = json_object_size(c->hosts), i = 0;
    json_t **entries, *list, *root, *v;
    const char *name;
    int64_t now = wg_clock_wall_ms();

    if (hosts_step_failed(c, status, reply, "hosts: heartbeats"))
        return;
    entries = calloc(n ? n : 1, sizeof(*entries));
    list = json_array();
    if (!entries || !list) {
        free(entries);
        json_decref(list);
        api_call_error(c, 500, NULL, "out of memory");
        api_call_maybe_free(c);
        return;
    }
    /* The MGET's order is the object's, which nothing changed since. */
    json_object_foreach(c->hosts, name, v)
    {
        const redisReply *hb =
            reply->type == REDIS_REPLY_ARRAY && i < reply->elements ? reply->element[i] : NULL;
        entries[i++] = host_entry(name, hb, json_object_get(c->lost, name) != NULL, now);
    }
    qsort(entries, n, sizeof(*entries), by_name);
    for (i = 0; i < n; i++)
        json_array_append_new(list, entries[i]);
    free(entries);
    root = json_pack("{s:o, s:s, s:b, s:I}", "hosts", list, "source",
                     c->hosts_from_scan ? "scan" : WG_STORE_KEY_HOSTS, "truncated",
                     c->hosts_truncated, "at", (json_int_t)now);
    api_call_respond(c, 200, NULL, root);
    api_call_maybe_free(c);
}

/* One MGET of every heartbeat, in the order of c->hosts. */
static void hosts_heartbeats(struct call *c)
{
    size_t n = json_object_size(c->hosts), i = 1;
    const char **argv;
    char **keys;
    const char *name;
    json_t *v;

    if (n == 0) {
        api_call_respond(c, 200, NULL,
                         json_pack("{s:[], s:s, s:b, s:I}", "hosts", "source",
                                   c->hosts_from_scan ? "scan" : WG_STORE_KEY_HOSTS, "truncated",
                                   false, "at", (json_int_t)wg_clock_wall_ms()));
        return;
    }
    argv = calloc(n + 1, sizeof(*argv));
    keys = calloc(n, sizeof(*keys));
    if (!argv || !keys) {
        free(argv);
        free(keys);
        api_call_error(c, 500, NULL, "out of memory");
        return;
    }
    argv[0] = "MGET";
    json_object_foreach(c->hosts, name, v)
    {
        size_t len = strlen(API_HOST_PREFIX) + strlen(name) + 1;
        keys[i - 1] = malloc(len);
        if (keys[i - 1])
            snprintf(keys[i - 1], len, "%s%s", API_HOST_PREFIX, name);
        argv[i] = keys[i - 1] ? keys[i - 1] : API_HOST_PREFIX;
        i++;
    }
    hosts_command(c, on_heartbeats, (int)n + 1, argv);
    for (size_t k = 0; k < n; k++)
        free(keys[k]);
    free(keys);
    free(argv);
}

/* ---- the names ------------------------------------------------------------------------------- */

static void on_scan(int status, redisReply *reply, void *arg)
{
    struct call *c = arg;
    const redisReply *cur, *keys;
    const size_t pl = strlen(API_HOST_PREFIX);

    if (hosts_step_failed(c, status, reply, "hosts: scan"))
        return;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_ARRAY) {
        api_call_fail(c, -EPROTO, "", "hosts: scan");
        api_call_maybe_free(c);
        return;
    }
    cur = reply->element[0];
    keys = reply->element[1];
    for (size_t i = 0; i < keys->elements; i++) {
        const redisReply *k = keys->element[i];
        if (k->type == REDIS_REPLY_STRING && k->len > pl &&
            memcmp(k->str, API_HOST_PREFIX, pl) == 0)
            hosts_add(c, k->str + pl, k->len - pl);
    }
    snprintf(c->hosts_cursor, sizeof(c->hosts_cursor), "%.*s", (int)cur->len, cur->str);
    if (strcmp(c->hosts_cursor, "0") == 0 || ++c->hosts_scans >= API_HOSTS_SCAN_MAX) {
        c->hosts_truncated |= strcmp(c->hosts_cursor, "0") != 0;
        hosts_heartbeats(c);
    } else {
        hosts_scan(c);
    }
    api_call_maybe_free(c);
}

static void hosts_scan(struct call *c)
{
    const char *argv[] = {"SCAN", c->hosts_cursor, "MATCH", API_HOST_PREFIX "*", "COUNT", "1000"};

    c->hosts_from_scan = true;
    hosts_command(c, on_scan, 6, argv);
}

static void take_members(struct call *c, const redisReply *reply, json_t *into)
{
    if (reply->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *m = reply->element[i];
        if (m->type != REDIS_REPLY_STRING)
            continue;
        hosts_add(c, m->str, m->len);
        if (into && m->len <= API_HOST_NAME_MAX) {
            char buf[API_HOST_NAME_MAX + 1];
            memcpy(buf, m->str, m->len);
            buf[m->len] = '\0';
            json_object_set_new(into, buf, json_true());
        }
    }
}

static void on_lost(int status, redisReply *reply, void *arg)
{
    struct call *c = arg;

    if (hosts_step_failed(c, status, reply, "hosts: lost hosts"))
        return;
    take_members(c, reply, c->lost);
    if (c->hosts_set_missing) {
        snprintf(c->hosts_cursor, sizeof(c->hosts_cursor), "0");
        hosts_scan(c);
    } else {
        hosts_heartbeats(c);
    }
    api_call_maybe_free(c);
}

static void hosts_lost(struct call *c)
{
    const char *argv[] = {"ZRANGE", WG_STORE_KEY_LOST_HOSTS, "0", "-1"};

    hosts_command(c, on_lost, 4, argv);
}

static void on_hosts(int status, redisReply *reply, void *arg)
{
    struct call *c = arg;

    if (hosts_step_failed(c, status, reply, "hosts: hosts"))
        return;
    /* An empty set does not exist in Redis: no placement side yet. */
    c->hosts_set_missing = reply->type != REDIS_REPLY_ARRAY || reply->elements == 0;
    take_members(c, reply, NULL);
    hosts_lost(c);
    api_call_maybe_free(c);
}

void api_handle_hosts(struct wg_api *api, struct wg_admin_req *req)
{
    struct call *c = api_call_new(api, req, C_HOSTS, NULL);
    const char *argv[] = {"ZRANGE", WG_STORE_KEY_HOSTS, "0", "-1"};

    if (!c)
        return;
    c->hosts = json_object();
    c->lost = json_object();
    if (!c->hosts || !c->lost) {
        api_call_error(c, 500, NULL, "out of memory");
        api_call_maybe_free(c);
        return;
    }
    hosts_command(c, on_hosts, 4, argv);
    api_call_maybe_free(c);
}
