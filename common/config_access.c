/* common/config_access.c - access: the keys of private session routes, and
 * their checks once the whole configuration is in: the secret file is read
 * here (a regular file, mode 0600 or stricter, of WG_ACCESS_SECRET_MIN
 * bytes or more), and a private session route without it refuses to start,
 * naming the key, in every role that has a public listener. */
#include "common/config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/access.h"
#include "common/config_int.h"

/* Keeps the line of access.secret_file, for errors found when it is read. */
int config_access_check_map(struct walk *w, yaml_node_t *map, void *base)
{
    struct wg_config *cfg = base;
    yaml_node_t *n = config_walk_get(w, map, "secret_file");

    if (n != NULL && !config_walk_null(n))
        cfg->access.secret_file_line =
            n->start_mark.line + 1 > INT_MAX ? 0 : (int)n->start_mark.line + 1;
    return 0;
}

static const struct field forward_auth_fields[] = {
    {.key = "url", .kind = K_STR, IN_CFG(access.forward_auth.url), .nullable = true},
    {.key = "timeout",
     .kind = K_DURATION,
     IN_CFG(access.forward_auth.timeout_ms),
     .min = 1,
     .max = 60 * 1000},
    {.key = "cache_ttl",
     .kind = K_DURATION,
     IN_CFG(access.forward_auth.cache_ttl_ms),
     .min = 0,
     .max = 3600 * 1000},
    {.key = "cache_max",
     .kind = K_UINT,
     IN_CFG(access.forward_auth.cache_max),
     .min = 1,
     .max = 1000000},
    {.key = "max_in_flight",
     .kind = K_UINT,
     IN_CFG(access.forward_auth.max_in_flight),
     .min = 1,
     .max = 100000},
    {.key = NULL},
};

const struct field config_access_fields[] = {
    {.key = "secret_file", .kind = K_STR, IN_CFG(access.secret_file), .nullable = true},
    {.key = "link_ttl",
     .kind = K_DURATION,
     IN_CFG(access.link_ttl_ms),
     .min = 1000,
     .max = 365ull * 24 * 3600 * 1000},
    {.key = "link_ttl_max",
     .kind = K_DURATION,
     IN_CFG(access.link_ttl_max_ms),
     .min = 1000,
     .max = 365ull * 24 * 3600 * 1000},
    {.key = "link_url", .kind = K_STR, IN_CFG(access.link_url), .nullable = true},
    {.key = "forward_auth", .kind = K_MAP, .sub = forward_auth_fields},
    {.key = NULL},
};

static int fail_secret(const struct wg_config *cfg, char *err, size_t errlen, const char *fmt,
                       const char *a, const char *b)
{
    const char *where = cfg->access.secret_file_line > 0 ? cfg->path : NULL;
    size_t line = cfg->access.secret_file_line > 0 ? (size_t)cfg->access.secret_file_line : 0;
    return config_fail_at(err, errlen, where, line, "access.secret_file", fmt, a, b);
}

static int read_secret(struct wg_config *cfg, char *err, size_t errlen)
{
    const char *file = cfg->access.secret_file;
    char *buf = NULL;
    struct stat st = {0};
    size_t len = 0;
    int r = config_read_small(file, WG_ACCESS_SECRET_MAX, &st, &buf, &len);

    if (r == -ENOMEM)
        goto out;
    if (r == -EINVAL) {
        r = fail_secret(cfg, err, errlen, "cannot read \"%s\": %s", file, "not a regular file");
        goto out;
    }
    if (r < 0 && r != -EFBIG) {
        r = fail_secret(cfg, err, errlen, "cannot read \"%s\": %s", file, strerror(-r));
        goto out;
    }
    /* Whoever reads the key can mint links to every session. */
    if ((st.st_mode & 077) != 0) {
        r = fail_secret(cfg, err, errlen, "\"%s\" is readable by group or others (%s)", file,
                        "chmod 600 it");
        goto out;
    }
    if (r == -EFBIG) {
        r = fail_secret(cfg, err, errlen, "\"%s\" is %s", file,
                        "larger than 4096 bytes; it should hold only the key");
        goto out;
    }
    if (len < WG_ACCESS_SECRET_MIN) {
        r = fail_secret(cfg, err, errlen, "\"%s\" holds %s", file,
                        "fewer than 32 bytes; make one with: head -c 32 /dev/urandom > FILE");
        goto out;
    }
    cfg->access.secret = (unsigned char *)buf;
    cfg->access.secret_len = len;
    buf = NULL;
    r = 0;
out:
    if (buf != NULL) {
        explicit_bzero(buf, len);
        free(buf);
    }
    return r;
}

/* "http://HOST:PORT/PATH" (an address wg_config_parse_addr() takes, a path
 * without spaces or #). */
static int parse_forward_auth(struct wg_config *cfg, char *err, size_t errlen)
{
    struct wg_forward_auth_cfg *fa = &cfg->access.forward_auth;
    const char *u = fa->url, *hp, *slash;
    char host[300];

    if (strncmp(u, "http://", 7) != 0)
        goto bad;
    hp = u + 7;
    slash = strchr(hp, '/');
    size_t hl = slash != NULL ? (size_t)(slash - hp) : strlen(hp);
    if (hl == 0 || hp[0] == ':' || hl >= sizeof(host) || config_has_ctl_or_space(u) ||
        strchr(u, '#') != NULL)
        goto bad;
    memcpy(host, hp, hl);
    host[hl] = '\0';
    free(fa->addr.text);
    memset(&fa->addr, 0, sizeof(fa->addr));
    if (wg_config_parse_addr(host, &fa->addr) < 0 || fa->addr.salen == 0)
        goto bad;
    if (config_replace_str(&fa->host, host) < 0 ||
        config_replace_str(&fa->path, slash != NULL ? slash : "/") < 0)
        return -ENOMEM;
    return 0;
bad:
    return config_fail_at(err, errlen, cfg->path, 0, "access.forward_auth.url",
                          "\"%s\" must be http://HOST:PORT/PATH (an address and a port; no TLS, "
                          "no spaces or #)",
                          u);
}

static bool all_templates_public(const struct wg_config *cfg)
{
    if (!cfg->sessions.access_public)
        return false;
    for (size_t i = 0; i < cfg->templates_len; i++)
        if (!cfg->templates[i].access_public)
            return false;
    return true;
}

int config_check_access(struct wg_config *cfg, char *err, size_t errlen)
{
    const struct wg_access_cfg *a = &cfg->access;
    int r;

    for (size_t i = 0; i < cfg->routes_len; i++) {
        struct wg_route_cfg *rt = &cfg->routes[i];
        rt->access_public = rt->access != NULL && strcmp(rt->access, "public") == 0;
        rt->access_by_template = rt->access == NULL && !rt->has_upstream;
    }
    if (a->link_ttl_ms > a->link_ttl_max_ms)
        return config_fail_at(err, errlen, cfg->path, 0, "access.link_ttl",
                              "is longer than access.link_ttl_max");
    if (a->link_url != NULL &&
        (strstr(a->link_url, "{session}") == NULL ||
         (strncmp(a->link_url, "http://", 7) != 0 && strncmp(a->link_url, "https://", 8) != 0) ||
         config_has_ctl_or_space(a->link_url) || strpbrk(a->link_url, "?#") != NULL))
        return config_fail_at(err, errlen, cfg->path, 0, "access.link_url",
                              "\"%s\" must be an http:// or https:// URL holding {session}, "
                              "without ? or #",
                              a->link_url);
    if (a->secret_file != NULL && a->secret == NULL && (r = read_secret(cfg, err, errlen)) < 0)
        return r;
    if (a->forward_auth.url != NULL && (r = parse_forward_auth(cfg, err, errlen)) < 0)
        return r;
    /* Forward auth alone may guard the routes: links need the key, the
     * operator's auth service does not. */
    if (cfg->access.secret != NULL || a->forward_auth.url != NULL ||
        cfg->role == WG_ROLE_ORCHESTRATOR)
        return 0;
    for (size_t i = 0; i < cfg->routes_len; i++) {
        const struct wg_route_cfg *rt = &cfg->routes[i];
        if (rt->has_upstream || rt->access_public ||
            (rt->access_by_template && all_templates_public(cfg)))
            continue;
        return config_fail_at(err, errlen, cfg->path, rt->line > 0 ? (size_t)rt->line : 0,
                              "access.secret_file",
                              "not set, and routes[%zu] is a private session route (the "
                              "default): give a file of at least 32 random bytes (mode 0600), "
                              "or set access: public on the routes (or templates) that need "
                              "no credentials",
                              i);
    }
    return 0;
}
