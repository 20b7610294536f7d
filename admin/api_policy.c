/* admin/api_policy.c - what a template lets a caller of POST /v1/sessions
 * ask for: which images, which bind sources, which limits. Pure checks on
 * text, no I/O: the request is refused with a 400 before anything is
 * written, so nothing is created for a refused request.
 *
 * Bind sources are judged on their normalised path ("." and empty segments
 * dropped, ".." refused outright, since what it climbs to depends on
 * symlinks this process cannot see on the Docker host). The host's root,
 * the Docker socket and the directories it lives in are refused whatever
 * the allow-list says: each hands out root on the host. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/api_int.h"
#include "common/container_spec.h"
#include "common/session.h"
#include "common/str.h"

/* The floors of the configuration's limits (common/config_sandbox.c). */
#define LIMIT_MEMORY_MIN (6ull << 20)
#define LIMIT_CPUS_MIN 10000000ull
#define LIMIT_PIDS_MIN 8u

bool wg_api_policy_image(const struct wg_sessions_cfg *t, const char *image)
{
    if (t->image != NULL && strcmp(image, t->image) == 0)
        return true;
    for (size_t i = 0; i < t->images_len; i++) {
        const char *a = t->images[i];
        size_t n = strlen(a);

        if (n > 0 && a[n - 1] == '*' ? strncmp(image, a, n - 1) == 0 : strcmp(image, a) == 0)
            return true;
    }
    return false;
}

/* src (an absolute path) without ".", empty segments or a trailing '/';
 * "/" for the root. -EINVAL for a ".." segment. */
static int normalise(const char *src, char *out, size_t outlen)
{
    size_t o = 0;

    for (const char *p = src; *p;) {
        const char *seg;
        size_t n;

        while (*p == '/')
            p++;
        seg = p;
        while (*p && *p != '/')
            p++;
        n = (size_t)(p - seg);
        if (n == 0 || (n == 1 && seg[0] == '.'))
            continue;
        if (n == 2 && seg[0] == '.' && seg[1] == '.')
            return -EINVAL;
        if (o + 1 + n + 1 > outlen)
            return -ENAMETOOLONG;
        out[o++] = '/';
        memcpy(out + o, seg, n);
        o += n;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
    return 0;
}

/* path is dir or under it (both normalised; dir not "/"). */
static bool under(const char *path, const char *dir)
{
    size_t n = strlen(dir);

    return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);

    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* A volume name is allowed when binds.allow names it (exactly, or a
 * prefix ending in '*'); path entries never match a volume. */
static bool volume_allowed(const struct wg_sessions_cfg *t, const char *name)
{
    for (size_t i = 0; i < t->binds_allow_len; i++) {
        const char *a = t->binds_allow[i];
        size_t n = strlen(a);

        if (a[0] == '/')
            continue;
        if (n > 0 && a[n - 1] == '*' ? strncmp(name, a, n - 1) == 0 : strcmp(name, a) == 0)
            return true;
    }
    return false;
}

static bool path_allowed(const struct wg_sessions_cfg *t, const char *path)
{
    char dir[WG_API_BIND_PATH_MAX];

    for (size_t i = 0; i < t->binds_allow_len; i++) {
        if (t->binds_allow[i][0] != '/' || normalise(t->binds_allow[i], dir, sizeof dir) < 0)
            continue;
        /* "/" in the list would allow everything: it never matches. */
        if (strcmp(dir, "/") != 0 && under(path, dir))
            return true;
    }
    return false;
}

int wg_api_policy_bind(const struct wg_sessions_cfg *t, const char *bind, char *why, size_t len)
{
    char src[WG_API_BIND_PATH_MAX], path[WG_API_BIND_PATH_MAX];
    const char *colon = strchr(bind, ':');
    size_t n = colon ? (size_t)(colon - bind) : strlen(bind);
    int r;

    if (n == 0 || n >= sizeof src)
        return wg_errf(why, len, "the source must be a host path or a volume name");
    memcpy(src, bind, n);
    src[n] = '\0';
    if (src[0] != '/') {
        if (!volume_allowed(t, src))
            return wg_errf(why, len, "volume \"%s\" is not in template \"%s\"'s binds.allow", src,
                           t->name);
        return 0;
    }
    r = normalise(src, path, sizeof path);
    if (r == -EINVAL)
        return wg_errf(why, len, "a source with \"..\" is refused");
    if (r < 0)
        return wg_errf(why, len, "the source is too long");
    if (strcmp(path, "/") == 0)
        return wg_errf(why, len, "the host's root \"/\" is refused");
    if (ends_with(path, "docker.sock"))
        return wg_errf(why, len, "the Docker socket (\"%s\") is refused", path);
    if (under(path, "/run") || under(path, "/var/run"))
        return wg_errf(why, len,
                       "\"%s\" is refused: /run and /var/run hold the Docker socket and other "
                       "daemons' sockets",
                       path);
    if (!path_allowed(t, path))
        return wg_errf(why, len, "source \"%s\" is outside template \"%s\"'s binds.allow", path,
                       t->name);
    return 0;
}

/* ---- a caller's limits ------------------------------------------------------------------------
 */

static int limit_value(const json_t *e, const char *key, uint64_t *ret, char *err, size_t errlen)
{
    const char *s = json_is_string(e) ? json_string_value(e) : NULL;

    if (strcmp(key, "memory") == 0) {
        if (json_is_integer(e) && json_integer_value(e) > 0)
            *ret = (uint64_t)json_integer_value(e);
        else if (s == NULL || wg_config_parse_size(s, ret) < 0)
            return wg_errf(err, errlen,
                           "field \"limits.memory\": must be bytes or a size (\"256MiB\")");
    } else if (strcmp(key, "cpus") == 0) {
        if (json_is_number(e) && json_number_value(e) > 0 && json_number_value(e) <= 1024)
            *ret = (uint64_t)llround(json_number_value(e) * 1e9);
        else if (s == NULL || wg_config_parse_cpus(s, ret) < 0)
            return wg_errf(err, errlen,
                           "field \"limits.cpus\": must be a number of CPUs (0.5, \"1.5\")");
    } else if (strcmp(key, "pids") == 0) {
        if (!json_is_integer(e) || json_integer_value(e) < 1)
            return wg_errf(err, errlen, "field \"limits.pids\": must be a positive integer");
        *ret = (uint64_t)json_integer_value(e);
    } else {
        char name[WG_CONTAINER_SPEC_NAME_SHOW_MAX + 1];

        wg_container_spec_show_name(name, sizeof name, key);
        return wg_errf(err, errlen, "unknown field \"limits.%s\"", name);
    }
    return 0;
}

int api_limits_take(const json_t *v, const struct wg_sessions_cfg *t, struct wg_api_create *c,
                    char *err, size_t errlen)
{
    const char *k;
    json_t *e;

    if (!json_is_object(v))
        return wg_errf(err, errlen, "field \"limits\": must be an object");
    json_object_foreach((json_t *)v, k, e)
    {
        uint64_t x, max, min;

        if (json_is_null(e))
            continue;
        if (limit_value(e, k, &x, err, errlen) < 0)
            return -EINVAL;
        if (strcmp(k, "memory") == 0) {
            max = t->limits_max.memory_bytes ? t->limits_max.memory_bytes : t->sandbox.memory_bytes;
            min = LIMIT_MEMORY_MIN;
            c->memory_bytes = x;
        } else if (strcmp(k, "cpus") == 0) {
            max = t->limits_max.nano_cpus ? t->limits_max.nano_cpus : t->sandbox.nano_cpus;
            min = LIMIT_CPUS_MIN;
            c->nano_cpus = x;
        } else {
            max = t->limits_max.pids ? t->limits_max.pids : t->sandbox.pids;
            min = LIMIT_PIDS_MIN;
            c->pids = (unsigned)(x > UINT32_MAX ? UINT32_MAX : x);
        }
        if (x > max)
            return wg_errf(err, errlen,
                           "field \"limits.%s\": %" PRIu64 " is over template \"%s\"'s maximum "
                           "of %" PRIu64 "%s",
                           k, x, t->name, max, strcmp(k, "cpus") == 0 ? " nano CPUs" : "");
        if (x < min)
            return wg_errf(err, errlen,
                           "field \"limits.%s\": %" PRIu64 " is under the minimum of %" PRIu64, k,
                           x, min);
    }
    return 0;
}

int api_limits_into_spec(struct wg_api_create *c, char *err, size_t errlen)
{
    json_t *root, *lim;
    char *text;
    int bad = 0;

    if (!c->memory_bytes && !c->nano_cpus && !c->pids)
        return 0;
    root = c->spec ? json_loads(c->spec, 0, NULL) : json_object();
    lim = json_object();
    if (root == NULL || lim == NULL) {
        json_decref(root);
        json_decref(lim);
        return -ENOMEM;
    }
    if (c->memory_bytes)
        bad |= json_object_set_new(lim, "memory", json_integer((json_int_t)c->memory_bytes));
    if (c->nano_cpus)
        bad |= json_object_set_new(lim, "nano_cpus", json_integer((json_int_t)c->nano_cpus));
    if (c->pids)
        bad |= json_object_set_new(lim, "pids", json_integer(c->pids));
    bad |= json_object_set_new(root, "limits", lim);
    text = bad ? NULL : json_dumps(root, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (text == NULL)
        return -ENOMEM;
    if (strlen(text) > WG_SESSION_SPEC_MAX) {
        free(text);
        return wg_errf(err, errlen, "body: the spec is over %d bytes", WG_SESSION_SPEC_MAX);
    }
    free(c->spec);
    c->spec = text;
    return 0;
}
