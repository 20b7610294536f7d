/* orchestrator/api.c - the admin API; see api.h.
 *
 * Ownership, written down once:
 * - Every request the API takes is a struct call, linked on one of the
 *   api's lists (plain, waiters, streams) until it is answered and none of
 *   its Redis or store callbacks is due (pending == 0); then it is freed.
 * - c->req is the admin request while it is unanswered; every answer goes
 *   through call_respond*() or stream_drop(), which clear it. The admin's
 *   cancel callback (client gone) answers it at once (the answer is only
 *   dropped), so a dead request is never kept.
 * - wg_api_free() answers every call, unlinks it and sets c->api = NULL:
 *   callbacks that arrive later (the store and the shared wg_redis cancel
 *   theirs when freed) only count down and free it.
 * - The API owns one timer (tick), and, made on first use, a subscriber
 *   connection (wg:state, for ?wait=1) and a reader connection (XREAD BLOCK
 *   on wg:events, for the event streams). Its memory goes in the timer's
 *   close callback. */
#include "orchestrator/api.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "common/list.h"
#include "common/log.h"
#include "common/redis.h"
#include "common/store.h"
#include "proxy/admin.h"

#define SUBSYS "api"
#define TICK_MS 100
#define READER_RETRY_MS 1000
#define WAIT_POLL_MS 1000 /* backstop read of a waited-on record */
#define SID_TEXT_MAX 42
#define ERR_MAX 256
#define FIELD_SHOW_MAX 64 /* bytes of an unknown field's name echoed back */

/* ---- pure parts -------------------------------------------------------- */

static bool seg_is(const char *s, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(s, lit, len) == 0;
}

int wg_api_route(const char *method, size_t method_len, const char *path, size_t path_len,
                 enum wg_api_route_kind *kind, char id[WG_SESSION_ID_MAX + 1], const char **allow)
{
    static const char pfx[] = "/v1/sessions";
    const size_t pl = sizeof(pfx) - 1;
    bool get = seg_is(method, method_len, "GET") || seg_is(method, method_len, "HEAD");
    bool post = seg_is(method, method_len, "POST");
    bool del = seg_is(method, method_len, "DELETE");
    const char *sid = NULL;
    size_t sid_len = 0;

    *allow = NULL;
    if (seg_is(path, path_len, "/v1/events")) {
        *kind = WG_API_EVENTS;
        *allow = "GET";
        return seg_is(method, method_len, "GET") ? 0 : 405;
    }
    if (seg_is(path, path_len, pfx)) {
        *kind = WG_API_SESSIONS;
        *allow = "GET, HEAD, POST";
        return get || post ? 0 : 405;
    }
    if (path_len <= pl + 1 || memcmp(path, pfx, pl) != 0 || path[pl] != '/')
        return 404;
    sid = path + pl + 1;
    const char *slash = memchr(sid, '/', path_len - pl - 1);
    if (slash == NULL) {
        sid_len = path_len - pl - 1;
        *kind = WG_API_SESSION;
        *allow = "GET, HEAD, DELETE";
        if (!get && !del)
            return 405;
    } else {
        sid_len = (size_t)(slash - sid);
        const char *rest = slash + 1;
        size_t rest_len = path_len - (size_t)(rest - path);
        if (seg_is(rest, rest_len, "wake"))
            *kind = WG_API_WAKE;
        else if (seg_is(rest, rest_len, "sleep"))
            *kind = WG_API_SLEEP;
        else
            return 404;
        if (sid_len == 0)
            return 404;
        *allow = "POST";
        if (!post)
            return 405;
    }
    if (!wg_session_id_valid(sid, sid_len))
        return 400;
    memcpy(id, sid, sid_len);
    id[sid_len] = '\0';
    return 0;
}

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* A client's field name, safe to echo: printable ASCII, bounded. */
static void show_name(char *dst, size_t dstlen, const char *src)
{
    size_t o = 0;
    for (size_t i = 0; src[i] && o + 1 < dstlen && i < FIELD_SHOW_MAX; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[o++] = ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\' ? (char)ch : '?';
    }
    dst[o] = '\0';
}

static bool is_abs_path(const char *s, size_t len)
{
    if (len == 0 || s[0] != '/')
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

static bool is_volume_name(const char *s, size_t len)
{
    if (len == 0 || len > 255)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        bool alnum =
            (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!alnum && (i == 0 || (ch != '_' && ch != '.' && ch != '-')))
            return false;
    }
    return true;
}

/* "host:container[:ro|rw]": host an absolute path or a volume name,
 * container an absolute path. */
static bool bind_valid(const char *s)
{
    const char *c1 = strchr(s, ':');
    if (c1 == NULL)
        return false;
    const char *c2 = strchr(c1 + 1, ':');
    size_t hl = (size_t)(c1 - s);
    size_t cl = c2 ? (size_t)(c2 - c1 - 1) : strlen(c1 + 1);
    if (!is_abs_path(s, hl) && !is_volume_name(s, hl))
        return false;
    if (!is_abs_path(c1 + 1, cl))
        return false;
    if (c2 != NULL && strcmp(c2 + 1, "ro") != 0 && strcmp(c2 + 1, "rw") != 0)
        return false;
    return true;
}

/* An array of strings; each must pass ok (NULL: any non-empty string).
 * What: the field name for err. */
static int check_str_array(const json_t *v, const char *what, bool (*ok)(const char *),
                           const char *shape, char *err, size_t errlen)
{
    size_t i;
    json_t *e;
    if (!json_is_array(v)) {
        seterr(err, errlen, "field \"%s\": must be an array of strings", what);
        return -EINVAL;
    }
    json_array_foreach(v, i, e)
    {
        if (!json_is_string(e)) {
            seterr(err, errlen, "field \"%s[%zu]\": must be a string", what, i);
            return -EINVAL;
        }
        const char *s = json_string_value(e);
        if (ok != NULL ? !ok(s) : s[0] == '\0') {
            seterr(err, errlen, "field \"%s[%zu]\": must be %s", what, i, shape);
            return -EINVAL;
        }
    }
    return 0;
}

static bool env_ok(const char *s)
{
    const char *eq = strchr(s, '=');
    return eq != NULL && eq != s;
}

static int check_duration(const json_t *v, const char *what, bool *has, uint64_t *ms, char *err,
                          size_t errlen)
{
    if (!json_is_string(v) || wg_config_parse_duration(json_string_value(v), ms) < 0) {
        seterr(err, errlen, "field \"%s\": must be a duration such as \"30s\" or \"20m\"", what);
        return -EINVAL;
    }
    if (has != NULL)
        *has = true;
    return 0;
}

static int check_idle(const json_t *v, struct wg_api_create *out, char *err, size_t errlen)
{
    const char *k;
    json_t *e;
    char name[FIELD_SHOW_MAX + 1];
    int rc;
    if (!json_is_object(v)) {
        seterr(err, errlen, "field \"idle\": must be an object");
        return -EINVAL;
    }
    json_object_foreach((json_t *)v, k, e)
    {
        if (json_is_null(e))
            continue;
        if (strcmp(k, "pause_after") == 0)
            rc = check_duration(e, "idle.pause_after", &out->has_pause_after, &out->pause_after_ms,
                                err, errlen);
        else if (strcmp(k, "stop_after") == 0)
            rc = check_duration(e, "idle.stop_after", &out->has_stop_after, &out->stop_after_ms,
                                err, errlen);
        else {
            show_name(name, sizeof(name), k);
            seterr(err, errlen, "unknown field \"idle.%s\"", name);
            rc = -EINVAL;
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

static bool nonempty_ok(const char *s)
{
    return s[0] != '\0';
}

/* The save hook settings, shaped like sessions.save in the configuration;
 * kept in the spec for the save hook. */
static int check_save(const json_t *v, char *err, size_t errlen)
{
    const char *k;
    json_t *e;
    char name[FIELD_SHOW_MAX + 1];
    uint64_t ms;
    int rc = 0;
    if (!json_is_object(v)) {
        seterr(err, errlen, "field \"save\": must be an object");
        return -EINVAL;
    }
    json_object_foreach((json_t *)v, k, e)
    {
        if (json_is_null(e))
            continue;
        if (strcmp(k, "command") == 0) {
            rc = check_str_array(e, "save.command", nonempty_ok, "a non-empty string", err, errlen);
            if (rc == 0 && json_array_size(e) == 0) {
                seterr(err, errlen, "field \"save.command\": must not be empty");
                rc = -EINVAL;
            }
        } else if (strcmp(k, "timeout") == 0) {
            rc = check_duration(e, "save.timeout", NULL, &ms, err, errlen);
            if (rc == 0 && ms == 0) {
                seterr(err, errlen, "field \"save.timeout\": must be more than 0s");
                rc = -EINVAL;
            }
        } else if (strcmp(k, "path") == 0) {
            if (!json_is_string(e) ||
                !is_abs_path(json_string_value(e), strlen(json_string_value(e)))) {
                seterr(err, errlen, "field \"save.path\": must be an absolute path");
                rc = -EINVAL;
            }
        } else if (strcmp(k, "on_failure") == 0) {
            const char *s = json_string_value(e);
            if (s == NULL || (strcmp(s, "keep_awake") != 0 && strcmp(s, "stop") != 0)) {
                seterr(err, errlen,
                       "field \"save.on_failure\": must be \"keep_awake\" or \"stop\"");
                rc = -EINVAL;
            }
        } else {
            show_name(name, sizeof(name), k);
            seterr(err, errlen, "unknown field \"save.%s\"", name);
            rc = -EINVAL;
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int check_labels(const json_t *v, char *err, size_t errlen)
{
    const char *k;
    json_t *e;
    char name[FIELD_SHOW_MAX + 1];
    if (!json_is_object(v)) {
        seterr(err, errlen, "field \"labels\": must be an object of strings");
        return -EINVAL;
    }
    json_object_foreach((json_t *)v, k, e)
    {
        show_name(name, sizeof(name), k);
        if (k[0] == '\0') {
            seterr(err, errlen, "field \"labels\": keys must not be empty");
            return -EINVAL;
        }
        if (strncmp(k, "wakegate.", 9) == 0) {
            seterr(err, errlen,
                   "field \"labels.%s\": keys starting with \"wakegate.\" are reserved", name);
            return -EINVAL;
        }
        if (!json_is_string(e)) {
            seterr(err, errlen, "field \"labels.%s\": must be a string", name);
            return -EINVAL;
        }
    }
    return 0;
}

static bool image_valid(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > WG_SESSION_IMAGE_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return false;
    return true;
}

static const char *const create_fields[] = {"id",   "image", "cmd",  "env",  "labels",
                                            "port", "binds", "idle", "save", NULL};
static const char *const spec_fields[] = {"cmd", "env", "labels", "binds", "save", NULL};

/* The member, or NULL when absent or null. */
static json_t *member(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_null(v) ? NULL : v;
}

/* A request body that must be one JSON object (duplicate keys refused).
 * NULL with err set (not_object when it is empty or not an object). */
static json_t *load_object(const char *body, size_t len, const char *not_object, char *err,
                           size_t errlen)
{
    json_error_t je;
    json_t *root;

    if (body == NULL || len == 0) {
        seterr(err, errlen, "%s", not_object);
        return NULL;
    }
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) {
        seterr(err, errlen, "body: invalid JSON at line %d column %d: %s", je.line, je.column,
               je.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        seterr(err, errlen, "%s", not_object);
        return NULL;
    }
    return root;
}

int wg_api_parse_create(const char *body, size_t len, const struct wg_config *cfg,
                        struct wg_api_create *out, char *err, size_t errlen)
{
    struct wg_api_create c;
    json_t *root = NULL, *spec = NULL, *v;
    const char *k;
    char name[FIELD_SHOW_MAX + 1];
    int rc = -EINVAL;

    memset(&c, 0, sizeof(c));
    root = load_object(body, len, "body: must be a JSON object", err, errlen);
    if (root == NULL)
        goto out;
    json_object_foreach(root, k, v)
    {
        bool known = false;
        for (size_t i = 0; create_fields[i] && !known; i++)
            known = strcmp(k, create_fields[i]) == 0;
        if (!known) {
            show_name(name, sizeof(name), k);
            seterr(err, errlen, "unknown field \"%s\"", name);
            goto out;
        }
    }

    v = member(root, "id");
    if (v == NULL) {
        seterr(err, errlen, "field \"id\": required");
        goto out;
    }
    if (!json_is_string(v) || !wg_session_id_valid(json_string_value(v), json_string_length(v))) {
        seterr(err, errlen, "field \"id\": must be a string matching ^[a-z0-9][a-z0-9_-]{0,62}$");
        goto out;
    }
    memcpy(c.id, json_string_value(v), json_string_length(v) + 1);

    v = member(root, "image");
    const char *image = v ? json_string_value(v) : cfg->sessions.image;
    if (v != NULL && (image == NULL || !image_valid(image))) {
        seterr(err, errlen,
               "field \"image\": must be a string of 1..255 printable ASCII characters");
        goto out;
    }
    if (image == NULL || !image_valid(image)) {
        seterr(err, errlen, "field \"image\": required (sessions.image is not usable)");
        goto out;
    }
    snprintf(c.image, sizeof(c.image), "%s", image);

    v = member(root, "port");
    if (v != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 65535) {
            seterr(err, errlen, "field \"port\": must be an integer 1..65535");
            goto out;
        }
        c.port = (uint16_t)json_integer_value(v);
    } else {
        c.port = (uint16_t)cfg->sessions.port;
    }

    if ((v = member(root, "cmd")) &&
        check_str_array(v, "cmd", NULL, "a non-empty string", err, errlen) < 0)
        goto out;
    if ((v = member(root, "env")) &&
        check_str_array(v, "env", env_ok, "\"NAME=value\"", err, errlen) < 0)
        goto out;
    if ((v = member(root, "labels")) && check_labels(v, err, errlen) < 0)
        goto out;
    if ((v = member(root, "binds")) &&
        check_str_array(v, "binds", bind_valid,
                        "\"host:container[:ro|rw]\" (absolute paths, or a volume name for host)",
                        err, errlen) < 0)
        goto out;
    if ((v = member(root, "idle")) && check_idle(v, &c, err, errlen) < 0)
        goto out;
    if ((v = member(root, "save")) && check_save(v, err, errlen) < 0)
        goto out;

    for (size_t i = 0; spec_fields[i]; i++) {
        if ((v = member(root, spec_fields[i])) == NULL)
            continue;
        if (spec == NULL && (spec = json_object()) == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        if (json_object_set(spec, spec_fields[i], v) < 0) {
            rc = -ENOMEM;
            goto out;
        }
    }
    if (spec != NULL) {
        c.spec = json_dumps(spec, JSON_COMPACT | JSON_ENSURE_ASCII);
        if (c.spec == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        if (strlen(c.spec) > WG_SESSION_SPEC_MAX) {
            seterr(err, errlen,
                   "body: cmd, env, labels, binds and save together are over %d bytes of JSON",
                   WG_SESSION_SPEC_MAX);
            goto out;
        }
    }

    /* What the store will check again; a failure here is ours to report. */
    struct wg_session_update u;
    struct wg_session_hash h;
    char why[ERR_MAX];
    wg_api_create_fields(&c, "localhost", &u);
    if (wg_session_update_encode(&u, &h, why, sizeof(why)) < 0) {
        seterr(err, errlen, "body: %s", why);
        goto out;
    }
    *out = c;
    memset(&c, 0, sizeof(c));
    rc = 0;
out:
    json_decref(spec);
    json_decref(root);
    wg_api_create_release(&c);
    return rc;
}

void wg_api_create_release(struct wg_api_create *c)
{
    if (c == NULL)
        return;
    free(c->spec);
    c->spec = NULL;
}

void wg_api_create_fields(const struct wg_api_create *c, const char *host,
                          struct wg_session_update *u)
{
    memset(u, 0, sizeof(*u));
    u->set = WG_SF_HOST | WG_SF_IMAGE | WG_SF_PORT;
    u->host = host;
    u->image = c->image;
    u->port = c->port;
    if (c->spec != NULL) {
        u->set |= WG_SF_SPEC;
        u->spec = c->spec;
    }
    if (c->has_pause_after) {
        u->set |= WG_SF_IDLE_PAUSE_AFTER;
        u->has_idle_pause_after = true;
        u->idle_pause_after_ms = c->pause_after_ms;
    }
    if (c->has_stop_after) {
        u->set |= WG_SF_IDLE_STOP_AFTER;
        u->has_idle_stop_after = true;
        u->idle_stop_after_ms = c->stop_after_ms;
    }
}

static int parse_u64(const char *s, size_t len, uint64_t *ret)
{
    uint64_t v = 0;
    if (len == 0 || len > 20)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -EINVAL;
        v = v * 10 + d;
    }
    *ret = v;
    return 0;
}

int wg_api_sid_parse(const char *s, size_t len, struct wg_api_sid *ret)
{
    struct wg_api_sid sid = {0, 0};
    const char *dash = memchr(s, '-', len);
    if (dash == NULL) {
        if (parse_u64(s, len, &sid.ms) < 0)
            return -EINVAL;
    } else if (parse_u64(s, (size_t)(dash - s), &sid.ms) < 0 ||
               parse_u64(dash + 1, len - (size_t)(dash - s) - 1, &sid.seq) < 0) {
        return -EINVAL;
    }
    *ret = sid;
    return 0;
}

int wg_api_sid_cmp(const struct wg_api_sid *a, const struct wg_api_sid *b)
{
    if (a->ms != b->ms)
        return a->ms < b->ms ? -1 : 1;
    if (a->seq != b->seq)
        return a->seq < b->seq ? -1 : 1;
    return 0;
}

static void sid_format(const struct wg_api_sid *sid, char out[SID_TEXT_MAX])
{
    snprintf(out, SID_TEXT_MAX, "%" PRIu64 "-%" PRIu64, sid->ms, sid->seq);
}

bool wg_api_query_get(const char *q, size_t qlen, const char *key, const char **val, size_t *vlen)
{
    size_t kl = strlen(key);
    const char *p = q, *end = q ? q + qlen : NULL;
    while (p != NULL && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        const char *ke = eq ? eq : pe;
        if ((size_t)(ke - p) == kl && memcmp(p, key, kl) == 0) {
            *val = eq ? eq + 1 : pe;
            *vlen = eq ? (size_t)(pe - eq - 1) : 0;
            return true;
        }
        p = amp ? amp + 1 : end;
    }
    return false;
}

int wg_api_query_flag(const char *q, size_t qlen, const char *key, bool *ret)
{
    const char *v;
    size_t vl;
    if (!wg_api_query_get(q, qlen, key, &v, &vl)) {
        *ret = false;
        return 0;
    }
    if (vl == 0 || seg_is(v, vl, "1") || seg_is(v, vl, "true"))
        *ret = true;
    else if (seg_is(v, vl, "0") || seg_is(v, vl, "false"))
        *ret = false;
    else
        return -EINVAL;
    return 0;
}

/* An event type safe for the "event:" line; anything else is "message". */
static bool event_type_ok(const char *s, size_t len)
{
    if (len == 0 || len > 32)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '.'))
            return false;
    }
    return true;
}

int wg_api_sse_event(struct wg_buf *out, const char *stream_id, const struct wg_session_kv *kv,
                     size_t n)
{
    json_t *o = json_object();
    const char *type = "message";
    size_t type_len = 7;
    char *text = NULL;
    int rc = -ENOMEM;

    if (o == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *val = NULL;
        uint64_t num;
        if (seg_is(kv[i].name, kv[i].name_len, "type") &&
            event_type_ok(kv[i].value, kv[i].value_len)) {
            type = kv[i].value;
            type_len = kv[i].value_len;
        }
        if ((seg_is(kv[i].name, kv[i].name_len, "at") || seg_is(kv[i].name, kv[i].name_len, "v")) &&
            parse_u64(kv[i].value, kv[i].value_len, &num) == 0 && num <= INT64_MAX)
            val = json_integer((json_int_t)num);
        else if (seg_is(kv[i].name, kv[i].name_len, "detail"))
            val = json_loadb(kv[i].value, kv[i].value_len, 0, NULL);
        if (val == NULL)
            val = json_stringn(kv[i].value, kv[i].value_len);
        if (val == NULL) { /* not UTF-8: what wakegate writes never is */
            char *clean = malloc(kv[i].value_len + 1);
            if (clean == NULL)
                goto out;
            wg_session_clean_text(clean, kv[i].value_len + 1, kv[i].value, kv[i].value_len);
            val = json_string(clean);
            free(clean);
            if (val == NULL)
                goto out;
        }
        /* A name that is not UTF-8 is left out (jansson refuses it). */
        char *name = strndup(kv[i].name, kv[i].name_len);
        if (name == NULL) {
            json_decref(val);
            goto out;
        }
        json_object_set_new(o, name, val);
        free(name);
    }
    /* ENSURE_ASCII: the text has no raw bytes a client could mis-split, and
     * jansson escapes every control character, so the data is one line. */
    text = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (text == NULL)
        goto out;
    rc = wg_buf_appendf(out, "id: %s\nevent: %.*s\ndata: %s\n\n", stream_id, (int)type_len, type,
                        text);
out:
    free(text);
    json_decref(o);
    return rc;
}

/* ---- runtime ----------------------------------------------------------- */

enum call_kind { C_CREATE, C_LIST, C_GET, C_COMMAND, C_EVENTS, C_KEEPALIVE };

struct call {
    struct wg_list link;      /* api->plain, ->waiters or ->streams */
    struct wg_api *api;       /* NULL once the api is freed */
    struct wg_admin_req *req; /* NULL once answered */
    enum call_kind kind;
    int pending; /* store and Redis callbacks still due */
    char id[WG_SESSION_ID_MAX + 1];
    /* create */
    struct wg_api_create create;
    json_t *created; /* the record as created: the 201 if the move to asleep fails */
    /* wake, sleep, destroy */
    enum wg_wake_op op;
    bool force;
    bool wait;
    bool waiting;                /* on api->waiters */
    bool checking;               /* a read of the record is in flight */
    bool recheck;                /* read it again when that one is back */
    bool seen_other;             /* saw a state other than failed since the command */
    bool seen_sleeping;          /* sleep: saw draining, saving or stopping */
    unsigned target;             /* states that end the wait */
    enum wg_session_state state; /* the last one seen */
    uint64_t seen_v;
    uint64_t deadline; /* uv_now() ms */
    uint64_t next_poll;
    char cmd_id[WG_STORE_STREAM_ID_MAX + 1];
    /* keepalive */
    int64_t ka_until; /* wall ms asked for */
    bool ka_moved;    /* the touch moved the score */
    /* events */
    bool streaming;                /* on api->streams */
    bool live;                     /* caught up: the reader feeds it */
    bool need_tip;                 /* starts at the stream's end, not known yet */
    bool fetching;                 /* an XREVRANGE or XRANGE is in flight */
    bool stalled;                  /* replay waits for the client to read */
    struct wg_api_sid last;        /* last entry sent (or skipped) */
    bool issued_ready;             /* the reader was ready when the XRANGE went out... */
    struct wg_api_sid issued_live; /* ...and had delivered up to this */
    uint64_t next_ping, retry_at;
};

struct wg_api {
    uv_loop_t *loop;
    const struct wg_config *cfg;
    struct wg_log *log;
    struct wg_admin *admin;
    struct wg_redis *redis;
    struct wg_store *store;
    struct wg_redis *sub;    /* owned: wg:state, made on the first wait */
    struct wg_redis *reader; /* owned: XREAD BLOCK wg:events, made on the first stream */
    uv_timer_t tick;
    bool tick_on;
    bool freeing;
    uint32_t heartbeat_ms;
    struct wg_list plain, waiters, streams;
    size_t n_waiters, n_streams;
    /* the events reader */
    bool rd_running;        /* wanted: streams are open */
    bool rd_ready;          /* live is the stream position it follows */
    bool rd_inflight;       /* a command of the reader's is out */
    struct wg_api_sid live; /* the last entry it delivered */
    uint64_t rd_retry_at;
    /* metrics */
    uint64_t created;
    uint64_t commands[WG_WAKE_OP_DESTROY + 1];
};

static uint64_t now_ms(const struct wg_api *api)
{
    return uv_now(api->loop);
}

static bool call_live(const struct call *c)
{
    return c->api != NULL && !c->api->freeing && c->req != NULL;
}

static void call_free(struct call *c)
{
    wg_list_remove(&c->link);
    wg_api_create_release(&c->create);
    json_decref(c->created);
    free(c);
}

/* Ends c when it is answered and nothing of it is due any more. */
static void call_maybe_free(struct call *c)
{
    if (c->req == NULL && c->pending == 0)
        call_free(c);
}

static void tick_ensure(struct wg_api *api);

/* Leaves api->waiters or ->streams, for the plain list. */
static void call_unlist(struct call *c)
{
    struct wg_api *api = c->api;
    if (api != NULL && c->waiting) {
        api->n_waiters--;
        wg_list_remove(&c->link);
        wg_list_push_back(&api->plain, &c->link);
    }
    if (api != NULL && c->streaming) {
        api->n_streams--;
        wg_list_remove(&c->link);
        wg_list_push_back(&api->plain, &c->link);
    }
    c->waiting = false;
    c->streaming = false;
}

static void call_respond(struct call *c, int status, const char *headers, json_t *j)
{
    struct wg_buf out;
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (c->req == NULL) {
        free(text);
        return;
    }
    call_unlist(c);
    struct wg_admin_req *req = c->req;
    c->req = NULL;
    if (text == NULL) {
        wg_admin_respond_error(req, 500, NULL, "out of memory");
        return;
    }
    wg_buf_init(&out, SIZE_MAX);
    if (wg_buf_appendf(&out, "%s\n", text) < 0)
        wg_admin_respond_error(req, 500, NULL, "out of memory");
    else
        wg_admin_respond_headers(req, status, "application/json", headers, wg_buf_head(&out),
                                 wg_buf_size(&out));
    wg_buf_release(&out);
    free(text);
}

static void call_error(struct call *c, int status, const char *headers, const char *msg)
{
    if (c->req == NULL)
        return;
    call_unlist(c);
    struct wg_admin_req *req = c->req;
    c->req = NULL;
    wg_admin_respond_error(req, status, headers, msg);
}

/* Store and Redis outcomes as HTTP; 5xx are logged with Redis's text. */
static void call_fail(struct call *c, int status, const char *detail, const char *doing)
{
    int http = 500;
    const char *msg = "redis error";
    char q[ERR_MAX];

    switch (status) {
    case -ENOENT:
        http = 404;
        msg = "no such session";
        break;
    case -ETIMEDOUT:
    case -ECONNRESET:
    case -ENOTCONN:
        http = 503;
        msg = "redis unavailable";
        break;
    case -ECANCELED:
        http = 503;
        msg = "shutting down";
        break;
    case -EBADMSG:
        msg = "session record in redis is garbled";
        break;
    case -E2BIG:
        msg = "too many sessions to list";
        break;
    case -ENOMEM:
        msg = "out of memory";
        break;
    default:
        break;
    }
    if (http >= 500 && c->api != NULL)
        WG_WARN(c->api->log, SUBSYS, "redis call failed",
                "doing=%s id=%s status=%d error=%s http=%d", doing, c->id[0] ? c->id : "-", status,
                wg_log_quote(q, sizeof(q), detail ? detail : "", detail ? strlen(detail) : 0),
                http);
    call_error(c, http, http == 503 ? "Retry-After: 1\r\n" : NULL, msg);
}

static void on_cancel(struct wg_admin_req *req, void *arg)
{
    struct call *c = arg;
    /* The client is gone: finish req (nothing is sent) and forget it. */
    if (c->streaming)
        wg_admin_stream_end(req);
    else
        wg_admin_respond(req, 499, NULL, NULL, 0);
    c->req = NULL;
    call_unlist(c);
    call_maybe_free(c);
}

static struct call *call_new(struct wg_api *api, struct wg_admin_req *req, enum call_kind kind,
                             const char *id)
{
    struct call *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        wg_admin_respond_error(req, 500, NULL, "out of memory");
        return NULL;
    }
    c->api = api;
    c->req = req;
    c->kind = kind;
    if (id != NULL)
        snprintf(c->id, sizeof(c->id), "%s", id);
    wg_list_push_back(&api->plain, &c->link);
    wg_admin_req_on_cancel(req, on_cancel, c);
    return c;
}

static json_t *session_json(const struct wg_session *rec)
{
    return rec ? wg_session_to_json(rec) : NULL;
}

/* ---- POST /v1/sessions ------------------------------------------------- */

static const char create_detail[] = "{\"by\":\"api\"}";

static void on_asleep(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    bool moved = (res->status == 0 || res->status == WG_STORE_REJECTED) && res->rec != NULL;
    c->pending--;
    if (c->api != NULL && !moved && res->status != -ECANCELED) {
        char q[ERR_MAX];
        WG_WARN(c->api->log, SUBSYS, "created session stays in creating, answering 201",
                "id=%s status=%d error=%s", c->id, res->status,
                wg_log_quote(q, sizeof(q), res->error, strlen(res->error)));
    }
    if (call_live(c))
        call_respond(c, 201, NULL, moved ? session_json(res->rec) : json_incref(c->created));
    call_maybe_free(c);
}

static void on_created(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    c->pending--;
    /* A record made for a client that left still gets its move to asleep:
     * it must not be left in creating. */
    if (c->api == NULL || c->api->freeing || (c->req == NULL && res->status != 0)) {
        call_maybe_free(c);
        return;
    }
    if (res->status == WG_STORE_EXISTS) {
        call_respond(c, 200, NULL, session_json(res->rec));
    } else if (res->status != 0) {
        call_fail(c, res->status, res->error, "create");
    } else {
        struct wg_api *api = c->api;
        api->created++;
        WG_INFO(api->log, SUBSYS, "session created", "id=%s image=%s port=%u host=%s", c->id,
                c->create.image, (unsigned)c->create.port, api->cfg->docker_name);
        c->created = session_json(res->rec);
        /* No container yet: the orchestrator makes it on the first wake. */
        int rc = wg_store_transition(api->store, c->id, WG_SESSION_BIT(WG_SESSION_CREATING),
                                     WG_SESSION_ASLEEP, NULL, create_detail, on_asleep, c);
        if (rc == 0)
            c->pending++;
        else
            call_respond(c, 201, NULL, json_incref(c->created));
    }
    call_maybe_free(c);
}

static void handle_create(struct wg_api *api, struct wg_admin_req *req,
                          const struct wg_admin_request *info)
{
    struct wg_api_create cr;
    struct wg_session_update u;
    char err[ERR_MAX];
    int rc = wg_api_parse_create(info->body, info->body_len, api->cfg, &cr, err, sizeof(err));
    if (rc == -ENOMEM) {
        wg_admin_respond_error(req, 500, NULL, "out of memory");
        return;
    }
    if (rc < 0) {
        wg_admin_respond_error(req, 400, NULL, err);
        return;
    }
    struct call *c = call_new(api, req, C_CREATE, cr.id);
    if (c == NULL) {
        wg_api_create_release(&cr);
        return;
    }
    c->create = cr;
    wg_api_create_fields(&c->create, api->cfg->docker_name, &u);
    rc = wg_store_create(api->store, c->id, &u, create_detail, on_created, c);
    if (rc == 0)
        c->pending++;
    else
        call_fail(c, rc, "wg_store_create refused the record", "create");
    call_maybe_free(c);
}

/* ---- GET /v1/sessions[/{id}] ------------------------------------------- */

static void on_list(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    c->pending--;
    if (call_live(c)) {
        if (res->status != 0) {
            call_fail(c, res->status, res->error, "list");
        } else {
            json_t *a = json_array();
            for (size_t i = 0; a != NULL && i < res->n_recs; i++)
                if (json_array_append_new(a, session_json(&res->recs[i])) < 0) {
                    json_decref(a);
                    a = NULL;
                }
            if (res->n_bad > 0)
                WG_WARN(c->api->log, SUBSYS, "garbled session records left out of the list",
                        "count=%zu", res->n_bad);
            call_respond(c, 200, NULL, a);
        }
    }
    call_maybe_free(c);
}

static void on_get(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    c->pending--;
    if (call_live(c)) {
        if (res->status != 0)
            call_fail(c, res->status, res->error, "get");
        else
            call_respond(c, 200, NULL, session_json(res->rec));
    }
    call_maybe_free(c);
}

static void handle_read(struct wg_api *api, struct wg_admin_req *req, const char *id)
{
    struct call *c = call_new(api, req, id ? C_GET : C_LIST, id);
    int rc;
    if (c == NULL)
        return;
    rc = id ? wg_store_get(api->store, id, on_get, c) : wg_store_list(api->store, on_list, c);
    if (rc == 0)
        c->pending++;
    else
        call_fail(c, rc, "", id ? "get" : "list");
    call_maybe_free(c);
}

/* ---- wake, sleep, destroy ---------------------------------------------- */

static void waiter_check(struct call *c);

#define SLEEPING_STATES                                                                            \
    (WG_SESSION_BIT(WG_SESSION_DRAINING) | WG_SESSION_BIT(WG_SESSION_SAVING) |                     \
     WG_SESSION_BIT(WG_SESSION_STOPPING))

/* A sleep that was under way and is back in running was called off: the
 * session was used, or its save failed. The wait ends there. */
static bool sleep_called_off(const struct call *c, enum wg_session_state state)
{
    return c->op == WG_WAKE_OP_SLEEP && c->seen_sleeping && state == WG_SESSION_RUNNING;
}

static void sub_on_msg(const struct wg_redis_msg *msg, void *arg)
{
    struct wg_api *api = arg;
    struct wg_state_msg m;
    struct wg_list *n, *next;

    if (api->freeing)
        return;
    if (msg->kind == WG_REDIS_SUBSCRIBED) {
        /* Messages may have been lost while (re)connecting: read again. */
        for (n = api->waiters.next; n != &api->waiters; n = next) {
            next = n->next;
            waiter_check(wg_container_of(n, struct call, link));
        }
        return;
    }
    if (api->n_waiters == 0 || wg_store_parse_state_msg(msg->data, msg->len, &m) < 0)
        return;
    for (n = api->waiters.next; n != &api->waiters; n = next) {
        struct call *c = wg_container_of(n, struct call, link);
        next = n->next;
        if (strcmp(c->id, m.id) != 0 || m.version < c->seen_v)
            continue;
        if (WG_SESSION_IN(m.state, SLEEPING_STATES))
            c->seen_sleeping = true;
        if (WG_SESSION_IN(m.state, c->target) || m.state == WG_SESSION_FAILED ||
            m.state == WG_SESSION_DESTROYED || sleep_called_off(c, m.state)) {
            /* Answer from the record itself (its error, its ip...). */
            waiter_check(c);
        } else {
            c->seen_v = m.version;
            c->state = m.state;
            c->seen_other = true;
        }
    }
}

/* The subscriber is made on the first wait and kept. */
static void sub_ensure(struct wg_api *api)
{
    struct wg_redis_opts o = {.name = "api-state"};
    char q[ERR_MAX];
    int rc;
    if (api->sub != NULL || api->cfg->redis_url == NULL)
        return;
    rc = wg_redis_new(api->loop, api->cfg->redis_url, &o, api->log, &api->sub);
    if (rc == 0)
        rc = wg_redis_subscribe(api->sub, WG_STORE_CHANNEL_STATE, sub_on_msg, api);
    if (rc < 0) {
        WG_WARN(api->log, SUBSYS, "cannot subscribe to state changes, waits poll the record",
                "channel=%s error=%s", WG_STORE_CHANNEL_STATE,
                wg_log_quote(q, sizeof(q), strerror(-rc), strlen(strerror(-rc))));
        wg_redis_free(api->sub);
        api->sub = NULL;
    }
}

static void waiter_answer(struct call *c, const struct wg_session *rec)
{
    if (WG_SESSION_IN(rec->state, c->target)) {
        call_respond(c, 200, NULL, session_json(rec));
        return;
    }
    if (sleep_called_off(c, rec->state)) {
        bool save_failed = rec->last_save.at > 0 && !rec->last_save.ok;
        json_t *j = json_pack("{s:s, s:o*}", "error",
                              save_failed ? "sleep called off: the save failed, the container is "
                                            "kept awake"
                                          : "sleep called off: the session was used",
                              "session", session_json(rec));
        call_respond(c, 409, NULL, j);
        return;
    }
    json_t *j = json_pack("{s:s, s:o*}", "error",
                          rec->error && rec->error[0] ? rec->error : "session failed", "session",
                          session_json(rec));
    call_respond(c, 502, NULL, j);
}

/* Judges a record read while waiting. */
static void waiter_eval(struct call *c, const struct wg_session *rec)
{
    if (rec->version < c->seen_v)
        return; /* older than what a message told */
    c->seen_v = rec->version;
    c->state = rec->state;
    if (WG_SESSION_IN(rec->state, SLEEPING_STATES))
        c->seen_sleeping = true;
    if (WG_SESSION_IN(rec->state, c->target) ||
        (rec->state == WG_SESSION_FAILED && c->seen_other) || sleep_called_off(c, rec->state))
        waiter_answer(c, rec);
    else if (rec->state != WG_SESSION_FAILED)
        c->seen_other = true;
}

static void on_wait_get(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    c->pending--;
    c->checking = false;
    if (call_live(c) && c->waiting) {
        if (res->status == -ENOENT)
            call_error(c, 409, NULL, "session was destroyed while waiting");
        else if (res->status == 0 && res->rec != NULL)
            waiter_eval(c, res->rec);
        /* Other failures: the next poll or message tries again. */
        if (c->req != NULL && c->recheck) {
            c->recheck = false;
            waiter_check(c);
        }
    }
    call_maybe_free(c);
}

static void waiter_check(struct call *c)
{
    if (c->checking) {
        c->recheck = true;
        return;
    }
    c->next_poll = now_ms(c->api) + WAIT_POLL_MS;
    if (wg_store_get(c->api->store, c->id, on_wait_get, c) == 0) {
        c->pending++;
        c->checking = true;
    }
}

/* The start of a store callback that carries on a call: false when the call
 * is over (the client left, or the failure was just answered), in which case
 * the call has been released as far as this callback goes. */
static bool call_resume(struct call *c, const struct wg_store_res *res, const char *doing)
{
    c->pending--;
    if (call_live(c) && res->status != 0)
        call_fail(c, res->status, res->error, doing);
    if (!call_live(c) || res->status != 0) {
        call_maybe_free(c);
        return false;
    }
    return true;
}

static const char *op_verb(enum wg_wake_op op)
{
    return op == WG_WAKE_OP_WAKE ? "running" : op == WG_WAKE_OP_SLEEP ? "asleep or paused" : "gone";
}

static void on_cmd_added(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    if (!call_resume(c, res, wg_wake_op_name(c->op)))
        return;
    struct wg_api *api = c->api;
    api->commands[c->op]++;
    snprintf(c->cmd_id, sizeof(c->cmd_id), "%s", res->event_id ? res->event_id : "");
    WG_INFO(api->log, SUBSYS, "command queued", "id=%s op=%s force=%d wait=%d entry=%s", c->id,
            wg_wake_op_name(c->op), c->force, c->wait, c->cmd_id);
    if (!c->wait) {
        json_t *j =
            json_pack("{s:s, s:s, s:s, s:s}", "id", c->id, "state", wg_session_state_name(c->state),
                      "op", wg_wake_op_name(c->op), "command_id", c->cmd_id);
        if (j != NULL && c->op == WG_WAKE_OP_DESTROY)
            json_object_set_new(j, "force", json_boolean(c->force));
        call_respond(c, 202, NULL, j);
    } else {
        /* Registered before the record is read again, so no change can
         * slip between the read and the messages. */
        wg_list_remove(&c->link);
        wg_list_push_back(&api->waiters, &c->link);
        c->waiting = true;
        api->n_waiters++;
        /* A sleep may first run the save hook. */
        c->deadline = now_ms(api) + api->cfg->sessions.wake_timeout_ms +
                      (c->op == WG_WAKE_OP_SLEEP ? api->cfg->sessions.save.timeout_ms : 0);
        sub_ensure(api);
        tick_ensure(api);
        waiter_check(c);
    }
    call_maybe_free(c);
}

static void on_cmd_get(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    if (!call_resume(c, res, "get"))
        return;
    struct wg_api *api = c->api;
    const struct wg_session *rec = res->rec;
    c->state = rec->state;
    c->seen_v = rec->version;
    c->seen_other = rec->state != WG_SESSION_FAILED;
    if (c->wait && api->n_waiters >= WG_API_WAITERS_MAX) {
        call_error(c, 503, "Retry-After: 1\r\n", "too many requests waiting");
        call_maybe_free(c);
        return;
    }
    struct wg_wake_cmd cmd;
    memset(&cmd, 0, sizeof(cmd));
    snprintf(cmd.session, sizeof(cmd.session), "%s", c->id);
    cmd.op = c->op;
    cmd.force = c->force;
    snprintf(cmd.from, sizeof(cmd.from), "api");
    /* The record's host owns the container; a record without one (made by
     * hand) goes to ours. */
    const char *host = rec->host[0] ? rec->host : api->cfg->docker_name;
    int rc = wg_store_wake_add(api->store, host, &cmd, on_cmd_added, c);
    if (rc == 0)
        c->pending++;
    else
        call_fail(c, rc, "wg_store_wake_add refused the command", wg_wake_op_name(c->op));
    call_maybe_free(c);
}

static void handle_command(struct wg_api *api, struct wg_admin_req *req,
                           const struct wg_admin_request *info, const char *id, enum wg_wake_op op)
{
    bool wait = false, force = false;
    if (op != WG_WAKE_OP_DESTROY &&
        wg_api_query_flag(info->query, info->query_len, "wait", &wait) < 0) {
        wg_admin_respond_error(req, 400, NULL, "query wait: must be 0, 1, false or true");
        return;
    }
    if (op != WG_WAKE_OP_WAKE &&
        wg_api_query_flag(info->query, info->query_len, "force", &force) < 0) {
        wg_admin_respond_error(req, 400, NULL, "query force: must be 0, 1, false or true");
        return;
    }
    struct call *c = call_new(api, req, C_COMMAND, id);
    if (c == NULL)
        return;
    c->op = op;
    c->wait = wait;
    c->force = force;
    c->target = op == WG_WAKE_OP_WAKE
                    ? WG_SESSION_BIT(WG_SESSION_RUNNING)
                    : WG_SESSION_BIT(WG_SESSION_ASLEEP) | WG_SESSION_BIT(WG_SESSION_PAUSED);
    int rc = wg_store_get(api->store, id, on_cmd_get, c);
    if (rc == 0)
        c->pending++;
    else
        call_fail(c, rc, "", "get");
    call_maybe_free(c);
}

/* ---- POST /v1/sessions/{id}/keepalive --------------------------------- */

/* For work that sends no requests (a build, an agent in the background):
 * the session's wg:active score becomes now + duration with the same
 * ZADD XX GT as the proxies' activity, so it never moves activity back and
 * never touches a session that is not awake. */

#define KEEPALIVE_MAX_MS (24ull * 60 * 60 * 1000)
/* In wg:active (ARCHITECTURE.md "Activity"): from entering running until
 * asleep, failed or destroyed. */
#define AWAKE_MASK                                                                                 \
    (WG_SESSION_BIT(WG_SESSION_RUNNING) | WG_SESSION_BIT(WG_SESSION_PAUSED) |                      \
     WG_SESSION_BIT(WG_SESSION_DRAINING) | WG_SESSION_BIT(WG_SESSION_SAVING) |                     \
     WG_SESSION_BIT(WG_SESSION_STOPPING))

/* /v1/sessions/{id}/keepalive, which wg_api_route() does not know. Returns
 * 0 with id set, 404 for any other path, 405 for a method other than POST,
 * 400 for an invalid id. */
static int keepalive_route(const struct wg_admin_request *info, char id[WG_SESSION_ID_MAX + 1])
{
    static const char pfx[] = "/v1/sessions/", sfx[] = "/keepalive";
    const size_t pl = sizeof(pfx) - 1, sl = sizeof(sfx) - 1;

    if (info->path_len <= pl + sl || memcmp(info->path, pfx, pl) != 0 ||
        memcmp(info->path + info->path_len - sl, sfx, sl) != 0)
        return 404;
    const char *sid = info->path + pl;
    size_t n = info->path_len - pl - sl;
    if (memchr(sid, '/', n) != NULL)
        return 404;
    if (!seg_is(info->method, info->method_len, "POST"))
        return 405;
    if (!wg_session_id_valid(sid, n))
        return 400;
    memcpy(id, sid, n);
    id[n] = '\0';
    return 0;
}

/* {"duration": "10m"} or {"duration_ms": 600000}: exactly one, more than
 * 0 and at most 24 h. Returns 0 with *ret_ms, or -EINVAL with err. */
static int parse_keepalive(const char *body, size_t len, uint64_t *ret_ms, char *err, size_t errlen)
{
    json_t *root = NULL, *v;
    const char *k, *given = NULL;
    char name[FIELD_SHOW_MAX + 1];
    uint64_t ms = 0;
    int rc = -EINVAL;

    root = load_object(body, len, "body: must be a JSON object with \"duration\"", err, errlen);
    if (root == NULL)
        goto out;
    json_object_foreach(root, k, v)
    {
        bool text = strcmp(k, "duration") == 0;
        if (!text && strcmp(k, "duration_ms") != 0) {
            show_name(name, sizeof(name), k);
            seterr(err, errlen, "unknown field \"%s\"", name);
            goto out;
        }
        if (json_is_null(v))
            continue;
        if (given != NULL) {
            seterr(err, errlen, "fields \"duration\" and \"duration_ms\": give one");
            goto out;
        }
        given = text ? "duration" : "duration_ms";
        if (text) {
            if (check_duration(v, "duration", NULL, &ms, err, errlen) < 0)
                goto out;
        } else if (!json_is_integer(v) || json_integer_value(v) < 0) {
            seterr(err, errlen, "field \"duration_ms\": must be an integer (milliseconds)");
            goto out;
        } else {
            ms = (uint64_t)json_integer_value(v);
        }
    }
    if (given == NULL) {
        seterr(err, errlen, "field \"duration\": required");
        goto out;
    }
    if (ms == 0 || ms > KEEPALIVE_MAX_MS) {
        seterr(err, errlen, "field \"%s\": must be more than 0 and at most 24h", given);
        goto out;
    }
    *ret_ms = ms;
    rc = 0;
out:
    json_decref(root);
    return rc;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_ka_get(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    if (!call_resume(c, res, "get"))
        return;
    const struct wg_session *rec = res->rec;
    const char *state = wg_session_state_name(rec->state);
    bool awake = (WG_SESSION_BIT(rec->state) & AWAKE_MASK) != 0;
    /* Not moved: not in wg:active, or its score was already later (an
     * earlier, longer keepalive). */
    if (c->ka_moved || (awake && rec->last_active >= c->ka_until)) {
        int64_t until = c->ka_moved ? c->ka_until : rec->last_active;
        WG_INFO(c->api->log, SUBSYS, "session kept alive", "id=%s until=%" PRId64 " state=%s",
                c->id, until, state);
        call_respond(c, 200, NULL,
                     json_pack("{s:s, s:I, s:s}", "id", c->id, "keepalive_until", (json_int_t)until,
                               "state", state));
    } else {
        call_respond(c, 409, NULL,
                     json_pack("{s:s, s:s, s:s}", "error", "session is not awake", "id", c->id,
                               "state", state));
    }
    call_maybe_free(c);
}

static void on_ka_touched(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    if (!call_resume(c, res, "keepalive"))
        return;
    c->ka_moved = res->count > 0;
    /* The record says whether the session exists and what state it is in
     * (and, after the touch on the same connection, its score). */
    int rc = wg_store_get(c->api->store, c->id, on_ka_get, c);
    if (rc == 0)
        c->pending++;
    else
        call_fail(c, rc, "", "get");
    call_maybe_free(c);
}

static void handle_keepalive(struct wg_api *api, struct wg_admin_req *req,
                             const struct wg_admin_request *info, const char *id)
{
    uint64_t ms = 0;
    char err[ERR_MAX];
    if (parse_keepalive(info->body, info->body_len, &ms, err, sizeof(err)) < 0) {
        wg_admin_respond_error(req, 400, NULL, err);
        return;
    }
    struct call *c = call_new(api, req, C_KEEPALIVE, id);
    if (c == NULL)
        return;
    c->ka_until = wall_ms() + (int64_t)ms;
    struct wg_store_activity act = {.id = c->id, .at_ms = c->ka_until};
    int rc = wg_store_touch(api->store, &act, 1, on_ka_touched, c);
    if (rc == 0)
        c->pending++;
    else
        call_fail(c, rc, "wg_store_touch refused the activity", "keepalive");
    call_maybe_free(c);
}

/* ---- GET /v1/events ---------------------------------------------------- */

static void reader_read(struct wg_api *api);
static void sse_fetch(struct call *c);

/* Ends a stream: the client is gone, too slow, or we shut down. The caller
 * runs call_maybe_free(c). */
static void stream_drop(struct call *c)
{
    struct wg_admin_req *req = c->req;
    c->req = NULL;
    call_unlist(c);
    if (req != NULL)
        wg_admin_stream_end(req);
}

static int stream_send(struct call *c, const char *data, size_t len)
{
    if (c->req == NULL || wg_admin_stream_write(c->req, data, len) < 0) {
        stream_drop(c);
        return -EPIPE;
    }
    return 0;
}

/* One XRANGE/XREAD entry: [id, [field, value, ...] | nil]. Fills *sid and
 * appends the SSE message to out (nothing for a deleted entry). */
static int entry_format(const redisReply *e, struct wg_api_sid *sid, struct wg_buf *out)
{
    struct wg_session_kv kv[32];
    size_t n = 0;
    if (e == NULL || e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING ||
        wg_api_sid_parse(e->element[0]->str, e->element[0]->len, sid) < 0)
        return -EPROTO;
    const redisReply *f = e->element[1];
    if (f->type != REDIS_REPLY_ARRAY)
        return 0;
    for (size_t i = 0; i + 1 < f->elements && n < sizeof(kv) / sizeof(kv[0]); i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        kv[n++] = (struct wg_session_kv){k->str, k->len, v->str, v->len};
    }
    char text[SID_TEXT_MAX];
    sid_format(sid, text);
    return wg_api_sse_event(out, text, kv, n);
}

static void on_sse_range(int status, redisReply *reply, void *arg)
{
    struct call *c = arg;
    c->pending--;
    c->fetching = false;
    if (!call_live(c) || !c->streaming) {
        call_maybe_free(c);
        return;
    }
    struct wg_api *api = c->api;
    if (status != 0 || reply->type != REDIS_REPLY_ARRAY) {
        WG_DEBUG(api->log, SUBSYS, "event replay read failed, retrying", "status=%d", status);
        c->retry_at = now_ms(api) + READER_RETRY_MS;
        call_maybe_free(c);
        return;
    }
    struct wg_buf out;
    wg_buf_init(&out, SIZE_MAX);
    for (size_t i = 0; i < reply->elements; i++) {
        struct wg_api_sid sid;
        wg_buf_reset(&out);
        if (entry_format(reply->element[i], &sid, &out) < 0)
            continue;
        if (wg_api_sid_cmp(&sid, &c->last) <= 0)
            continue;
        c->last = sid;
        if (wg_buf_size(&out) > 0 && stream_send(c, wg_buf_head(&out), wg_buf_size(&out)) < 0)
            break;
    }
    wg_buf_release(&out);
    if (c->req != NULL) {
        if (reply->elements >= WG_API_REPLAY_PAGE) {
            sse_fetch(c);
        } else {
            /* A short page covers everything up to the reader's position
             * when it was sent: what is missing there was deleted. */
            if (c->issued_ready && wg_api_sid_cmp(&c->last, &c->issued_live) < 0)
                c->last = c->issued_live;
            if (api->rd_ready && wg_api_sid_cmp(&c->last, &api->live) >= 0)
                c->live = true;
            else if (api->rd_ready)
                sse_fetch(c);
            else
                c->retry_at = now_ms(api) + TICK_MS;
        }
    }
    call_maybe_free(c);
}

/* Replays what follows c->last, a page at a time, until it meets the
 * reader (then c->live). */
static void sse_fetch(struct call *c)
{
    struct wg_api *api = c->api;
    char start[SID_TEXT_MAX + 1], count[16];
    if (c->fetching || c->live || c->need_tip || c->req == NULL)
        return;
    if (wg_admin_stream_queued(c->req) > WG_ADMIN_STREAM_QUEUE_MAX / 2) {
        c->stalled = true; /* the tick resumes when the client has read */
        return;
    }
    c->stalled = false;
    c->issued_ready = api->rd_ready;
    c->issued_live = api->live;
    start[0] = '(';
    sid_format(&c->last, start + 1);
    snprintf(count, sizeof(count), "%d", WG_API_REPLAY_PAGE);
    if (wg_redis_command(api->redis, on_sse_range, c, "XRANGE %s %s + COUNT %s",
                         WG_STORE_KEY_EVENTS, start, count) == 0) {
        c->pending++;
        c->fetching = true;
    } else {
        c->retry_at = now_ms(api) + READER_RETRY_MS;
    }
}

/* The end of wg:events: [[id, fields]] or []. */
static int tip_parse(const redisReply *reply, struct wg_api_sid *sid)
{
    if (reply->type != REDIS_REPLY_ARRAY)
        return -EPROTO;
    if (reply->elements == 0) {
        *sid = (struct wg_api_sid){0, 0};
        return 0;
    }
    const redisReply *e = reply->element[0];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 1 ||
        e->element[0]->type != REDIS_REPLY_STRING)
        return -EPROTO;
    return wg_api_sid_parse(e->element[0]->str, e->element[0]->len, sid);
}

static void on_sse_tip(int status, redisReply *reply, void *arg)
{
    struct call *c = arg;
    c->pending--;
    c->fetching = false;
    if (call_live(c) && c->streaming) {
        if (status == 0 && tip_parse(reply, &c->last) == 0) {
            c->need_tip = false;
            sse_fetch(c);
        } else {
            c->retry_at = now_ms(c->api) + READER_RETRY_MS;
        }
    }
    call_maybe_free(c);
}

static void sse_tip(struct call *c)
{
    if (c->fetching || c->req == NULL)
        return;
    if (wg_redis_command(c->api->redis, on_sse_tip, c, "XREVRANGE %s + - COUNT 1",
                         WG_STORE_KEY_EVENTS) == 0) {
        c->pending++;
        c->fetching = true;
    } else {
        c->retry_at = now_ms(c->api) + READER_RETRY_MS;
    }
}

/* ---- the events reader: one XREAD BLOCK loop for every stream ---------- */

static void reader_failed(struct wg_api *api, int status, const redisReply *reply)
{
    char q[ERR_MAX];
    const char *why = status != 0 ? strerror(-status) : reply && reply->str ? reply->str : "?";
    WG_DEBUG(api->log, SUBSYS, "events reader failed, retrying", "status=%d error=%s", status,
             wg_log_quote(q, sizeof(q), why, strlen(why)));
    api->rd_retry_at = now_ms(api) + READER_RETRY_MS;
}

static void on_rd_read(int status, redisReply *reply, void *arg)
{
    struct wg_api *api = arg;
    api->rd_inflight = false;
    if (api->freeing)
        return;
    if (status != 0 || (reply->type != REDIS_REPLY_NIL && reply->type != REDIS_REPLY_ARRAY)) {
        reader_failed(api, status, reply);
        return;
    }
    /* nil: the block timed out. Else [[key, [entry...]]]. */
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
        reply->element[0]->type == REDIS_REPLY_ARRAY && reply->element[0]->elements == 2 &&
        reply->element[0]->element[1]->type == REDIS_REPLY_ARRAY) {
        const redisReply *entries = reply->element[0]->element[1];
        struct wg_buf out;
        wg_buf_init(&out, SIZE_MAX);
        for (size_t i = 0; i < entries->elements; i++) {
            struct wg_api_sid sid;
            wg_buf_reset(&out);
            if (entry_format(entries->element[i], &sid, &out) < 0)
                continue;
            if (wg_api_sid_cmp(&sid, &api->live) > 0)
                api->live = sid;
            struct wg_list *n, *next;
            for (n = api->streams.next; n != &api->streams; n = next) {
                struct call *c = wg_container_of(n, struct call, link);
                next = n->next;
                if (!c->live || wg_api_sid_cmp(&sid, &c->last) <= 0)
                    continue;
                c->last = sid;
                if (wg_buf_size(&out) > 0 &&
                    stream_send(c, wg_buf_head(&out), wg_buf_size(&out)) < 0)
                    call_maybe_free(c);
            }
        }
        wg_buf_release(&out);
    }
    reader_read(api);
}

static void on_rd_tip(int status, redisReply *reply, void *arg)
{
    struct wg_api *api = arg;
    api->rd_inflight = false;
    if (api->freeing)
        return;
    if (status != 0 || tip_parse(reply, &api->live) < 0) {
        reader_failed(api, status, reply);
        return;
    }
    api->rd_ready = true;
    reader_read(api);
}

static void reader_read(struct wg_api *api)
{
    char start[SID_TEXT_MAX], count[16], block[16];
    if (api->n_streams == 0) {
        /* Nobody listens: stop; the next stream starts from the end again. */
        api->rd_running = false;
        api->rd_ready = false;
        return;
    }
    sid_format(&api->live, start);
    snprintf(count, sizeof(count), "%d", WG_API_REPLAY_PAGE);
    snprintf(block, sizeof(block), "%d", WG_API_READ_BLOCK_MS);
    int rc = wg_redis_command(api->reader, on_rd_read, api, "XREAD COUNT %s BLOCK %s STREAMS %s %s",
                              count, block, WG_STORE_KEY_EVENTS, start);
    if (rc == 0)
        api->rd_inflight = true;
    else
        reader_failed(api, rc, NULL);
}

static void reader_tip(struct wg_api *api)
{
    int rc = wg_redis_command(api->reader, on_rd_tip, api, "XREVRANGE %s + - COUNT 1",
                              WG_STORE_KEY_EVENTS);
    if (rc == 0)
        api->rd_inflight = true;
    else
        reader_failed(api, rc, NULL);
}

static void reader_ensure(struct wg_api *api)
{
    if (api->reader == NULL) {
        struct wg_redis_opts o = {
            .name = "api-events",
            .command_timeout_ms = WG_API_READ_BLOCK_MS + WG_REDIS_COMMAND_TIMEOUT_MS,
        };
        if (wg_redis_new(api->loop, api->cfg->redis_url, &o, api->log, &api->reader) < 0) {
            api->reader = NULL;
            return; /* streams replay by polling XRANGE; the tick tries again */
        }
    }
    if (api->rd_running)
        return;
    api->rd_running = true;
    api->rd_ready = false;
    api->rd_retry_at = 0;
    if (!api->rd_inflight)
        reader_tip(api);
}

static void handle_events(struct wg_api *api, struct wg_admin_req *req,
                          const struct wg_admin_request *info)
{
    struct wg_api_sid since = {0, 0};
    bool has_since = false;
    const char *v;
    size_t vl;
    static const char hello[] = ": wakegate events\n\n";

    if (info->last_event_id != NULL) {
        if (wg_api_sid_parse(info->last_event_id, info->last_event_id_len, &since) < 0) {
            wg_admin_respond_error(req, 400, NULL,
                                   "header Last-Event-ID: must be a stream id \"<ms>-<seq>\"");
            return;
        }
        has_since = true;
    } else if (wg_api_query_get(info->query, info->query_len, "since", &v, &vl)) {
        if (wg_api_sid_parse(v, vl, &since) < 0) {
            wg_admin_respond_error(req, 400, NULL,
                                   "query since: must be a stream id \"<ms>-<seq>\" or \"<ms>\"");
            return;
        }
        has_since = true;
    }
    if (api->n_streams >= WG_API_STREAMS_MAX) {
        wg_admin_respond_error(req, 503, "Retry-After: 5\r\n", "too many event streams");
        return;
    }
    struct call *c = call_new(api, req, C_EVENTS, NULL);
    if (c == NULL)
        return;
    wg_list_remove(&c->link);
    wg_list_push_back(&api->streams, &c->link);
    c->streaming = true;
    api->n_streams++;
    c->next_ping = now_ms(api) + api->heartbeat_ms;
    if (wg_admin_stream_begin(req, 200, "text/event-stream; charset=utf-8",
                              "X-Accel-Buffering: no\r\n") < 0 ||
        stream_send(c, hello, sizeof(hello) - 1) < 0) {
        stream_drop(c);
        call_maybe_free(c);
        return;
    }
    tick_ensure(api);
    reader_ensure(api);
    /* Nothing can follow the largest id (and Redis refuses "(max"). */
    if (has_since && (since.ms != UINT64_MAX || since.seq != UINT64_MAX)) {
        c->last = since;
        sse_fetch(c);
    } else {
        c->need_tip = true;
        sse_tip(c);
    }
}

/* ---- tick: deadlines, heartbeats, retries ------------------------------ */

static void on_tick(uv_timer_t *t)
{
    struct wg_api *api = t->data;
    uint64_t now = now_ms(api);
    struct wg_list *n, *next;
    static const char ping[] = ": ping\n\n";

    for (n = api->waiters.next; n != &api->waiters; n = next) {
        struct call *c = wg_container_of(n, struct call, link);
        next = n->next;
        if (now >= c->deadline) {
            char hdr[64], msg[128];
            snprintf(hdr, sizeof(hdr), "Retry-After: %d\r\n", WG_API_RETRY_AFTER_S);
            snprintf(msg, sizeof(msg), "session did not become %s in time (%" PRIu64 " ms)",
                     op_verb(c->op),
                     api->cfg->sessions.wake_timeout_ms +
                         (c->op == WG_WAKE_OP_SLEEP ? api->cfg->sessions.save.timeout_ms : 0));
            WG_INFO(api->log, SUBSYS, "wait timed out, returning 504", "id=%s op=%s state=%s",
                    c->id, wg_wake_op_name(c->op), wg_session_state_name(c->state));
            call_respond(c, 504, hdr,
                         json_pack("{s:s, s:s, s:s}", "error", msg, "id", c->id, "state",
                                   wg_session_state_name(c->state)));
            call_maybe_free(c);
        } else if (now >= c->next_poll) {
            /* Pub/sub loses messages while reconnecting; a slow poll is the
             * backstop. */
            waiter_check(c);
        }
    }
    for (n = api->streams.next; n != &api->streams; n = next) {
        struct call *c = wg_container_of(n, struct call, link);
        next = n->next;
        if (now >= c->next_ping) {
            c->next_ping = now + api->heartbeat_ms;
            if (stream_send(c, ping, sizeof(ping) - 1) < 0) {
                call_maybe_free(c);
                continue;
            }
        }
        if (c->live || c->fetching)
            continue;
        if (c->stalled) {
            if (wg_admin_stream_queued(c->req) <= WG_ADMIN_STREAM_QUEUE_MAX / 2)
                sse_fetch(c);
        } else if (now >= c->retry_at) {
            if (c->need_tip)
                sse_tip(c);
            else
                sse_fetch(c);
        }
    }
    if (api->n_streams > 0 && !api->rd_running)
        reader_ensure(api);
    if (api->rd_running && !api->rd_inflight && now >= api->rd_retry_at) {
        if (api->rd_ready)
            reader_read(api);
        else
            reader_tip(api);
    }
    if (api->n_waiters == 0 && api->n_streams == 0 && !api->rd_running) {
        uv_timer_stop(&api->tick);
        api->tick_on = false;
    }
}

static void tick_ensure(struct wg_api *api)
{
    if (api->tick_on || api->freeing)
        return;
    api->tick_on = true;
    uv_timer_start(&api->tick, on_tick, TICK_MS, TICK_MS);
}

/* ---- the handler --------------------------------------------------------- */

static void api_handle(void *arg, struct wg_admin_req *req, const struct wg_admin_request *info)
{
    struct wg_api *api = arg;
    enum wg_api_route_kind kind = WG_API_SESSIONS;
    char id[WG_SESSION_ID_MAX + 1] = "";
    const char *allow = NULL;
    char hdr[96];
    bool keepalive = false;

    int st = keepalive_route(info, id);
    if (st != 404) {
        keepalive = true;
        allow = "POST";
    } else {
        st = wg_api_route(info->method, info->method_len, info->path, info->path_len, &kind, id,
                          &allow);
    }
    if (st == 405) {
        snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", allow);
        wg_admin_respond_error(req, 405, hdr, "method not allowed");
        return;
    }
    if (st == 400) {
        wg_admin_respond_error(req, 400, NULL, "invalid session id");
        return;
    }
    if (st != 0) {
        wg_admin_respond_error(req, 404, NULL, "not found");
        return;
    }
    if (api->freeing) {
        wg_admin_respond_error(req, 503, NULL, "shutting down");
        return;
    }
    if (keepalive) {
        handle_keepalive(api, req, info, id);
        return;
    }
    bool post = info->method_len == 4 && memcmp(info->method, "POST", 4) == 0;
    bool del = info->method_len == 6 && memcmp(info->method, "DELETE", 6) == 0;
    switch (kind) {
    case WG_API_SESSIONS:
        if (post)
            handle_create(api, req, info);
        else
            handle_read(api, req, NULL);
        break;
    case WG_API_SESSION:
        if (del)
            handle_command(api, req, info, id, WG_WAKE_OP_DESTROY);
        else
            handle_read(api, req, id);
        break;
    case WG_API_WAKE:
        handle_command(api, req, info, id, WG_WAKE_OP_WAKE);
        break;
    case WG_API_SLEEP:
        handle_command(api, req, info, id, WG_WAKE_OP_SLEEP);
        break;
    case WG_API_EVENTS:
        handle_events(api, req, info);
        break;
    }
}

/* ---- life -------------------------------------------------------------- */

static void api_metrics(void *arg, struct wg_buf *out)
{
    const struct wg_api *api = arg;
    wg_buf_appendf(
        out,
        "# HELP wakegate_api_sessions_created_total Sessions created through the admin API.\n"
        "# TYPE wakegate_api_sessions_created_total counter\n"
        "wakegate_api_sessions_created_total %" PRIu64 "\n"
        "# HELP wakegate_api_commands_total Commands the admin API queued, by op.\n"
        "# TYPE wakegate_api_commands_total counter\n",
        api->created);
    for (int op = WG_WAKE_OP_WAKE; op <= WG_WAKE_OP_DESTROY; op++)
        wg_buf_appendf(out, "wakegate_api_commands_total{op=\"%s\"} %" PRIu64 "\n",
                       wg_wake_op_name((enum wg_wake_op)op), api->commands[op]);
    wg_buf_appendf(out,
                   "# HELP wakegate_api_event_streams Open /v1/events streams.\n"
                   "# TYPE wakegate_api_event_streams gauge\n"
                   "wakegate_api_event_streams %zu\n"
                   "# HELP wakegate_api_waits Requests waiting for a session state (?wait=1).\n"
                   "# TYPE wakegate_api_waits gauge\n"
                   "wakegate_api_waits %zu\n",
                   api->n_streams, api->n_waiters);
}

static void tick_closed(uv_handle_t *h)
{
    free(h->data);
}

int wg_api_new(uv_loop_t *loop, const struct wg_config *cfg, struct wg_log *log,
               struct wg_admin *admin, struct wg_redis *redis, struct wg_store *store,
               const struct wg_api_opts *opts, struct wg_api **ret_api)
{
    struct wg_api *api;
    int rc;

    if (loop == NULL || cfg == NULL || admin == NULL || redis == NULL || store == NULL ||
        cfg->redis_url == NULL)
        return -EINVAL;
    if (cfg->docker_name == NULL ||
        !wg_session_host_valid(cfg->docker_name, strlen(cfg->docker_name)))
        return -EINVAL;
    api = calloc(1, sizeof(*api));
    if (api == NULL)
        return -ENOMEM;
    api->loop = loop;
    api->cfg = cfg;
    api->log = log;
    api->admin = admin;
    api->redis = redis;
    api->store = store;
    api->heartbeat_ms = opts && opts->heartbeat_ms ? opts->heartbeat_ms : WG_API_HEARTBEAT_MS;
    wg_list_init(&api->plain);
    wg_list_init(&api->waiters);
    wg_list_init(&api->streams);
    rc = uv_timer_init(loop, &api->tick);
    if (rc < 0) {
        free(api);
        return rc;
    }
    api->tick.data = api;
    rc = wg_admin_add_async_handler(admin, "/v1/", api_handle, api);
    if (rc < 0) {
        api->freeing = true;
        uv_close((uv_handle_t *)&api->tick, tick_closed);
        return rc;
    }
    /* After the handler: a metrics hook cannot be taken back, so it is
     * added only once nothing can fail any more (and is not vital). */
    if (wg_admin_add_metrics(admin, api_metrics, api) < 0)
        WG_DEBUG(log, SUBSYS, "no room for the API's metrics", "%s", "");
    *ret_api = api;
    return 0;
}

static void detach_all(struct wg_list *list)
{
    while (!wg_list_empty(list)) {
        struct call *c = wg_container_of(list->next, struct call, link);
        struct wg_admin_req *req = c->req;
        wg_list_remove(&c->link);
        c->req = NULL;
        c->api = NULL;
        c->waiting = c->streaming = false;
        if (req != NULL) {
            wg_admin_req_on_cancel(req, NULL, NULL);
            if (c->kind == C_EVENTS)
                wg_admin_stream_end(req);
            else
                wg_admin_respond_error(req, 503, "Retry-After: 1\r\n", "shutting down");
        }
        call_maybe_free(c);
    }
}

void wg_api_free(struct wg_api *api)
{
    if (api == NULL || api->freeing)
        return;
    api->freeing = true;
    detach_all(&api->plain);
    detach_all(&api->waiters);
    detach_all(&api->streams);
    api->n_waiters = api->n_streams = 0;
    wg_redis_free(api->sub);
    api->sub = NULL;
    wg_redis_free(api->reader);
    api->reader = NULL;
    uv_close((uv_handle_t *)&api->tick, tick_closed);
}
