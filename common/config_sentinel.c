/* common/config_sentinel.c - redis.sentinel: its keys, its checks, and the
 * redis+sentinel:// URL (common/redis_url.h) it becomes.
 *
 * Why a URL: every part that talks to Redis makes its own connection from
 * cfg->redis_url (the proxy's cache, the orchestrator, the API, doctor).
 * Building one URL here gives all of them sentinel mode without a change,
 * and keeps one grammar for what the configuration accepts and what the
 * connection does. The passwords come from files, never inline, and are
 * percent-encoded into the URL, which, like a redis:// URL with a password,
 * is never logged (common/redis_url.h's display drops them). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config_int.h"
#include "common/redis_url.h"
#include "common/str.h"

#define PASSWORD_FILE_MAX 4096

const struct field config_sentinel_fields[] = {
    {.key = "master", .kind = K_STR, IN_CFG(redis_sentinel.master), .nullable = true},
    {.key = "addresses",
     .kind = K_STRLIST,
     IN_CFG(redis_sentinel.addresses),
     LEN_IN_CFG(redis_sentinel.addresses_len)},
    {.key = "password_file", .kind = K_STR, IN_CFG(redis_sentinel.password_file), .nullable = true},
    {.key = "master_password_file",
     .kind = K_STR,
     IN_CFG(redis_sentinel.master_password_file),
     .nullable = true},
    {.key = "master_user", .kind = K_STR, IN_CFG(redis_sentinel.master_user), .nullable = true},
    {.key = "db", .kind = K_UINT, IN_CFG(redis_sentinel.db), .min = 0, .max = INT_MAX},
    {.key = NULL},
};

void config_sentinel_free(struct wg_redis_sentinel_cfg *s)
{
    free(s->master);
    config_free_strv(s->addresses, s->addresses_len);
    free(s->password_file);
    free(s->master_password_file);
    free(s->master_user);
    memset(s, 0, sizeof(*s));
}

static bool node_has_value(struct walk *w, yaml_node_t *map, const char *key)
{
    yaml_node_t *n = config_walk_get(w, map, key);

    return n != NULL && !config_walk_null(n);
}

int config_sentinel_check_redis(struct walk *w, yaml_node_t *map, void *base)
{
    yaml_node_t *sentinel = config_walk_get(w, map, "sentinel");
    size_t old;
    int r;

    (void)base;
    if (sentinel == NULL || config_walk_null(sentinel) || !node_has_value(w, map, "url"))
        return 0;
    /* Refused rather than one silently winning: either choice would connect
     * somewhere the operator did not mean half the time. */
    old = config_walk_push(w, ".sentinel");
    r = config_walk_fail(w, sentinel,
                         "set redis.url or redis.sentinel, not both (with Sentinel, the master's "
                         "password and db are redis.sentinel.master_password_file and .db)");
    config_walk_pop(w, old);
    return r;
}

int config_sentinel_check_map(struct walk *w, yaml_node_t *map, void *base)
{
    struct wg_redis_sentinel_cfg *s = &((struct wg_config *)base)->redis_sentinel;
    char url[600], why[256];

    s->line = map->start_mark.line + 1 > INT_MAX ? 0 : (int)map->start_mark.line + 1;
    if (s->master == NULL)
        return config_walk_fail(w, map, "needs master: the name the sentinels monitor");
    if (s->addresses_len == 0)
        return config_walk_fail(w, map, "needs addresses: the sentinels' host:port list");
    if (s->addresses_len > WG_REDIS_URL_SENTINELS_MAX)
        return config_walk_fail(w, map, "at most %d addresses", WG_REDIS_URL_SENTINELS_MAX);
    if (strpbrk(s->master, "/?#%@,") != NULL || config_has_ctl_or_space(s->master))
        return config_walk_fail(
            w, map, "master \"%s\": no spaces, control characters or / ? # %% @ ,", s->master);
    for (size_t i = 0; i < s->addresses_len; i++) {
        const char *a = s->addresses[i];

        /* The URL grammar checks host and port; the characters it would
         * read as separators are refused first. */
        if (strpbrk(a, "/?#@,") != NULL ||
            snprintf(url, sizeof url, "redis://%s", a) >= (int)sizeof url ||
            wg_redis_url_check(url, why, sizeof why) < 0) {
            size_t old = config_walk_push(w, ".addresses");
            int r = config_walk_fail(w, config_walk_get(w, map, "addresses"),
                                     "address \"%s\" is not host:port", a);
            config_walk_pop(w, old);
            return r;
        }
    }
    return 0;
}

/* A password from a file: one line, the newline dropped. */
static int read_password(const struct wg_config *cfg, const char *key, const char *file, char **ret,
                         char *err, size_t errlen)
{
    const char *where = cfg->redis_sentinel.line > 0 ? cfg->path : NULL;
    size_t line = cfg->redis_sentinel.line > 0 ? (size_t)cfg->redis_sentinel.line : 0;
    char *buf = NULL;
    struct stat st;
    size_t len = 0;
    int r = config_read_small(file, PASSWORD_FILE_MAX, &st, &buf, &len);

    if (r < 0) {
        r = config_fail_at(err, errlen, where, line, key, "cannot read \"%s\": %s", file,
                           r == -EINVAL  ? "not a regular file"
                           : r == -EFBIG ? "larger than 4096 bytes"
                                         : strerror(-r));
        goto out;
    }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    buf[len] = '\0';
    /* Spaces are fine in a Redis password; control characters are not. */
    for (size_t i = 0; i < len && r == 0; i++)
        if ((unsigned char)buf[i] < ' ' || buf[i] == 0x7f)
            r = -EINVAL;
    if (len == 0 || r < 0) {
        r = config_fail_at(err, errlen, where, line, key,
                           "\"%s\" must hold one password on one line, without control "
                           "characters",
                           file);
        goto out;
    }
    *ret = buf;
    buf = NULL;
    r = 0;
out:
    if (buf != NULL) {
        explicit_bzero(buf, PASSWORD_FILE_MAX + 1);
        free(buf);
    }
    return r;
}

/* Appends s percent-encoded (all but RFC 3986's unreserved characters). */
static int append_pct(char **dst, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(*dst), sl = strlen(s);
    char *p = realloc(*dst, n + 3 * sl + 1);

    if (p == NULL)
        return -ENOMEM;
    *dst = p;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            p[n++] = (char)c;
        } else {
            p[n++] = '%';
            p[n++] = hex[c >> 4];
            p[n++] = hex[c & 15];
        }
    }
    p[n] = '\0';
    return 0;
}

static int append_str(char **dst, const char *s)
{
    char *p = wg_strf("%s%s", *dst, s);

    if (p == NULL)
        return -ENOMEM;
    free(*dst);
    *dst = p;
    return 0;
}

static void wipe_free(char *s)
{
    if (s != NULL) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

/* redis+sentinel://[user:pw@]a,b,c/MASTER/DB[?sentinel_password=PW] */
static int build_url(const struct wg_redis_sentinel_cfg *s, const char *master_pw,
                     const char *sentinel_pw, char **ret)
{
    char *url = wg_strf("redis+sentinel://");
    char db[16];
    int r = url ? 0 : -ENOMEM;

    if (r == 0 && master_pw != NULL) {
        if (s->master_user != NULL)
            r = append_pct(&url, s->master_user);
        r = r ? r : append_str(&url, ":");
        r = r ? r : append_pct(&url, master_pw);
        r = r ? r : append_str(&url, "@");
    }
    for (size_t i = 0; r == 0 && i < s->addresses_len; i++) {
        r = append_str(&url, i ? "," : "");
        r = r ? r : append_str(&url, s->addresses[i]);
    }
    snprintf(db, sizeof db, "/%u", s->db);
    r = r ? r : append_str(&url, "/");
    r = r ? r : append_str(&url, s->master);
    r = r ? r : append_str(&url, db);
    if (r == 0 && sentinel_pw != NULL) {
        r = append_str(&url, "?sentinel_password=");
        r = r ? r : append_pct(&url, sentinel_pw);
    }
    if (r < 0) {
        wipe_free(url);
        return r;
    }
    *ret = url;
    return 0;
}

int config_sentinel_resolve(struct wg_config *cfg, char *err, size_t errlen)
{
    struct wg_redis_sentinel_cfg *s = &cfg->redis_sentinel;
    const char *where = s->line > 0 ? cfg->path : NULL;
    size_t line = s->line > 0 ? (size_t)s->line : 0;
    char *master_pw = NULL, *sentinel_pw = NULL, *url = NULL;
    char why[256];
    int r = 0;

    /* A second validation of the same configuration starts over. */
    if (s->active) {
        wipe_free(cfg->redis_url);
        cfg->redis_url = NULL;
        s->active = false;
    }
    if (s->master == NULL)
        return 0;
    if (cfg->redis_url != NULL) /* the file cannot have both: the environment set it */
        return config_fail_at(err, errlen, where, line, "redis.sentinel",
                              "WAKEGATE_REDIS_URL is set too: give one of them");
    if (s->password_file != NULL &&
        (r = read_password(cfg, "redis.sentinel.password_file", s->password_file, &sentinel_pw, err,
                           errlen)) < 0)
        goto out;
    if (s->master_password_file != NULL &&
        (r = read_password(cfg, "redis.sentinel.master_password_file", s->master_password_file,
                           &master_pw, err, errlen)) < 0)
        goto out;
    if ((r = build_url(s, master_pw, sentinel_pw, &url)) < 0) {
        config_fail_at(err, errlen, NULL, 0, "configuration", "out of memory");
        goto out;
    }
    r = wg_redis_url_check(url, why, sizeof why);
    if (r < 0) {
        r = config_fail_at(err, errlen, where, line, "redis.sentinel", "%s", why);
        goto out;
    }
    cfg->redis_url = url;
    url = NULL;
    s->active = true;
out:
    wipe_free(url);
    wipe_free(master_pw);
    wipe_free(sentinel_pw);
    return r;
}
