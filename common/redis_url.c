/* common/redis_url.c - the Redis URL grammar; see redis_url.h. */
#include "common/redis_url.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include "common/str.h"

static int parse_uint(const char *s, size_t n, unsigned long max, unsigned long *ret)
{
    unsigned long v = 0;

    if (n == 0 || n > 10)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (unsigned long)(s[i] - '0');
        if (v > max)
            return -EINVAL;
    }
    *ret = v;
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into a new string. -EINVAL on a bad escape or %00. */
static int pct_decode(const char *s, size_t n, char **ret)
{
    char *out = malloc(n + 1);
    size_t o = 0;

    if (!out)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
        int lo = hi >= 0 ? hexval(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            explicit_bzero(out, o);
            free(out);
            return -EINVAL;
        }
        out[o++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[o] = '\0';
    *ret = out;
    return 0;
}

static bool has_ctl_or_space(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f)
            return true;
    return false;
}

void wg_redis_url_release(struct wg_redis_url *u)
{
    free(u->host);
    free(u->path);
    free(u->user);
    if (u->password)
        explicit_bzero(u->password, strlen(u->password));
    free(u->password);
    free(u->display);
    for (size_t i = 0; i < u->sentinels_len; i++)
        free(u->sentinels[i].host);
    free(u->sentinels);
    free(u->master_name);
    if (u->sentinel_password)
        explicit_bzero(u->sentinel_password, strlen(u->sentinel_password));
    free(u->sentinel_password);
    memset(u, 0, sizeof(*u));
}

/* p is what follows "unix://". */
static int parse_unix(const char *p, struct wg_redis_url *u, char *err, size_t errlen)
{
    const char *q = strchr(p, '?');
    size_t n = q ? (size_t)(q - p) : strlen(p);
    struct sockaddr_un sun;
    unsigned long db = 0;

    /* "/" alone is a directory, never a socket. */
    if (n < 2 || p[0] != '/')
        return wg_errf(err, errlen, "unix URL needs an absolute path: unix:///path/to/redis.sock");
    if (n >= sizeof(sun.sun_path))
        return wg_errf(err, errlen, "unix socket path is longer than %zu bytes",
                       sizeof(sun.sun_path) - 1);
    if (memchr(p, '#', n))
        return wg_errf(err, errlen, "fragments are not supported");
    if (q && (strncmp(q, "?db=", 4) != 0 || parse_uint(q + 4, strlen(q + 4), INT_MAX, &db) < 0))
        return wg_errf(err, errlen, "the only unix URL parameter is ?db=N");
    u->is_unix = true;
    u->db = (int)db;
    u->path = strndup(p, n);
    return u->path ? 0 : -ENOMEM;
}

/* The user:password@ of a redis:// URL, p..at. */
static int parse_credentials(const char *p, const char *at, struct wg_redis_url *u, char *err,
                             size_t errlen)
{
    const char *colon = memchr(p, ':', (size_t)(at - p));
    int rc;

    if (!colon)
        return wg_errf(err, errlen, "credentials must be written user:password@ or :password@");
    if (colon > p && (rc = pct_decode(p, (size_t)(colon - p), &u->user)) < 0)
        return rc == -EINVAL ? wg_errf(err, errlen, "bad percent-escape in the user name") : rc;
    rc = pct_decode(colon + 1, (size_t)(at - colon - 1), &u->password);
    if (rc == -EINVAL)
        return wg_errf(err, errlen, "bad percent-escape in the password");
    return rc;
}

/* host[:port] in p..end (host may be "[v6]"); port defaults to defport. */
static int parse_hostport(const char *p, const char *end, uint16_t defport, char **ret_host,
                          uint16_t *ret_port, char *err, size_t errlen)
{
    const char *host = p, *host_end, *after;
    unsigned long port = defport;

    if (*host == '[') {
        host_end = memchr(host, ']', (size_t)(end - host));
        if (!host_end)
            return wg_errf(err, errlen, "unterminated [ in the host");
        host++;
        after = host_end + 1;
    } else {
        host_end = host;
        while (host_end < end && *host_end != ':')
            host_end++;
        after = host_end;
    }
    if (host_end == host)
        return wg_errf(err, errlen, "missing host");
    if (after < end &&
        (*after != ':' || parse_uint(after + 1, (size_t)(end - after - 1), 65535, &port) < 0 ||
         port == 0))
        return wg_errf(err, errlen, "bad port: expected 1-65535");
    *ret_port = (uint16_t)port;
    *ret_host = strndup(host, (size_t)(host_end - host));
    return *ret_host ? 0 : -ENOMEM;
}

/* The last '@' in p..end, or NULL. */
static const char *find_at(const char *p, const char *end)
{
    const char *at = NULL;

    for (const char *c = p; c < end; c++)
        if (*c == '@')
            at = c;
    return at;
}

/* p is what follows "redis://". */
static int parse_tcp(const char *p, struct wg_redis_url *u, char *err, size_t errlen)
{
    const char *end = p + strcspn(p, "/?#");
    const char *at, *host;
    unsigned long db = 0;
    int rc;

    if (*end == '?' || *end == '#')
        return wg_errf(err, errlen, "query and fragment are not supported in redis:// URLs");
    at = find_at(p, end);
    host = p;
    if (at) {
        rc = parse_credentials(p, at, u, err, errlen);
        if (rc < 0)
            return rc;
        host = at + 1;
    }
    rc = parse_hostport(host, end, WG_REDIS_URL_DEFAULT_PORT, &u->host, &u->port, err, errlen);
    if (rc < 0)
        return rc;
    if (*end == '/' && end[1] != '\0' && parse_uint(end + 1, strlen(end + 1), INT_MAX, &db) < 0)
        return wg_errf(err, errlen, "bad database number after the host: expected /N");
    u->db = (int)db;
    return 0;
}

/* The sentinels' host:port,host:port list in p..end. */
static int parse_sentinel_hosts(const char *p, const char *end, struct wg_redis_url *u, char *err,
                                size_t errlen)
{
    u->sentinels = calloc(WG_REDIS_URL_SENTINELS_MAX, sizeof(*u->sentinels));
    if (!u->sentinels)
        return -ENOMEM;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *item_end = comma ? comma : end;
        struct wg_redis_url_host *h;
        int rc;

        if (u->sentinels_len == WG_REDIS_URL_SENTINELS_MAX)
            return wg_errf(err, errlen, "more than %d sentinels", WG_REDIS_URL_SENTINELS_MAX);
        h = &u->sentinels[u->sentinels_len];
        rc = parse_hostport(p, item_end, WG_REDIS_URL_SENTINEL_PORT, &h->host, &h->port, err,
                            errlen);
        if (rc < 0)
            return rc;
        u->sentinels_len++;
        p = comma ? comma + 1 : end;
    }
    if (u->sentinels_len == 0)
        return wg_errf(err, errlen, "no sentinel address");
    return 0;
}

/* "?sentinel_password=PW" (percent-encoded), the only parameter. */
static int parse_sentinel_query(const char *q, struct wg_redis_url *u, char *err, size_t errlen)
{
    static const char key[] = "sentinel_password=";
    int rc;

    if (strncmp(q, key, sizeof(key) - 1) != 0 || strchr(q, '&') || strchr(q, '#'))
        return wg_errf(err, errlen, "the only redis+sentinel parameter is ?sentinel_password=");
    rc = pct_decode(q + sizeof(key) - 1, strlen(q + sizeof(key) - 1), &u->sentinel_password);
    if (rc == -EINVAL)
        return wg_errf(err, errlen, "bad percent-escape in the sentinel password");
    return rc;
}

/* p is what follows "redis+sentinel://": [cred@]hosts/MASTER[/db][?query]. */
static int parse_sentinel(const char *p, struct wg_redis_url *u, char *err, size_t errlen)
{
    const char *end = p + strcspn(p, "/?#");
    const char *at, *name, *name_end, *q;
    unsigned long db = 0;
    int rc;

    at = find_at(p, end);
    if (at) {
        rc = parse_credentials(p, at, u, err, errlen);
        if (rc < 0)
            return rc;
        p = at + 1;
    }
    rc = parse_sentinel_hosts(p, end, u, err, errlen);
    if (rc < 0)
        return rc;
    if (*end != '/' || end[1] == '\0' || end[1] == '/' || end[1] == '?')
        return wg_errf(err, errlen, "missing the master's name after the sentinels: /NAME");
    name = end + 1;
    name_end = name + strcspn(name, "/?#");
    q = name_end + strcspn(name_end, "?#");
    if (*q == '#')
        return wg_errf(err, errlen, "fragments are not supported");
    if (*name_end == '/' && q > name_end + 1 &&
        parse_uint(name_end + 1, (size_t)(q - name_end - 1), INT_MAX, &db) < 0)
        return wg_errf(err, errlen, "bad database number after the master's name: expected /N");
    if (*q == '?' && (rc = parse_sentinel_query(q + 1, u, err, errlen)) < 0)
        return rc;
    u->db = (int)db;
    u->master_name = strndup(name, (size_t)(name_end - name));
    return u->master_name ? 0 : -ENOMEM;
}

static char *make_display(const struct wg_redis_url *u)
{
    bool v6;

    if (u->master_name) {
        char *hosts = wg_strf("%s", ""), *next;

        for (size_t i = 0; hosts && i < u->sentinels_len; i++) {
            const struct wg_redis_url_host *h = &u->sentinels[i];
            bool hv6 = strchr(h->host, ':') != NULL;

            next = wg_strf("%s%s%s%s%s:%u", hosts, i ? "," : "", hv6 ? "[" : "", h->host,
                           hv6 ? "]" : "", h->port);
            free(hosts);
            hosts = next;
        }
        next = hosts ? wg_strf("redis+sentinel://%s%s%s/%s/%d", u->user ? u->user : "",
                               u->user ? "@" : "", hosts, u->master_name, u->db)
                     : NULL;
        free(hosts);
        return next;
    }
    v6 = !u->is_unix && strchr(u->host, ':') != NULL;
    if (u->is_unix)
        return u->db ? wg_strf("unix://%s?db=%d", u->path, u->db) : wg_strf("unix://%s", u->path);
    return wg_strf("redis://%s%s%s%s%s:%u/%d", u->user ? u->user : "", u->user ? "@" : "",
                   v6 ? "[" : "", u->host, v6 ? "]" : "", u->port, u->db);
}

int wg_redis_url_parse(const char *url, struct wg_redis_url *u, char *err, size_t errlen)
{
    int rc;

    memset(u, 0, sizeof(*u));
    if (errlen > 0)
        err[0] = '\0';
    if (!url)
        rc = wg_errf(err, errlen, "no URL");
    else if (has_ctl_or_space(url))
        rc = wg_errf(err, errlen, "contains spaces or control characters");
    else if (strncasecmp(url, "unix://", 7) == 0)
        rc = parse_unix(url + 7, u, err, errlen);
    else if (strncasecmp(url, "redis://", 8) == 0)
        rc = parse_tcp(url + 8, u, err, errlen);
    else if (strncasecmp(url, "redis+sentinel://", 17) == 0)
        rc = parse_sentinel(url + 17, u, err, errlen);
    else if (strncasecmp(url, "rediss://", 9) == 0)
        rc = wg_errf(err, errlen, "TLS (rediss://) is not supported");
    else
        rc = wg_errf(err, errlen, "expected redis://host:port/db or unix:///path.sock");
    if (rc == 0) {
        u->display = make_display(u);
        if (!u->display)
            rc = -ENOMEM;
    }
    if (rc == -ENOMEM && errlen > 0)
        snprintf(err, errlen, "out of memory");
    if (rc < 0)
        wg_redis_url_release(u);
    return rc;
}

int wg_redis_url_check(const char *url, char *err, size_t errlen)
{
    struct wg_redis_url u;
    int rc = wg_redis_url_parse(url, &u, err, errlen);

    if (rc == 0)
        wg_redis_url_release(&u);
    return rc;
}
