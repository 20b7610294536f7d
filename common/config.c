/* common/config.c - defaults, the YAML file, the environment and the flags.
 *
 * The YAML file is walked against a table of fields (one table per mapping),
 * so a key that is not in a table is an unknown key, and every value goes
 * through the same setters whether it came from the file, the environment
 * or a flag. A setter writes a problem without a location; its caller knows
 * where the text came from and adds "FILE:LINE: KEY", "environment X" or
 * "flag --x" in front. */
#include "common/config.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "common/docker_host.h"
#include "common/redis_url.h"

/* A config file is written by an operator, but pointing --config at a huge
 * file by mistake should fail fast instead of filling memory. */
#define FILE_MAX (4u << 20)
/* A token is one line; anything bigger is the wrong file. */
#define TOKEN_FILE_MAX 4096
/* Consumers add durations to a monotonic clock in ms; a year keeps that far
 * from overflow while allowing any sensible timeout. */
#define DURATION_MAX_MS (365ull * 24 * 3600 * 1000)
/* Head and buffer limits feed size_t arithmetic in the proxy. */
#define SIZE_LIMIT_MAX (1ull << 30)
#define PATH_MAX_KEY 256
/* A readiness request path goes into one request line; real ones are short. */
#define HTTP_PATH_MAX 1024
/* The probe takes 32-bit milliseconds; a readiness attempt or pause of more
 * than a minute is a mistake, not a tuning. */
#define PROBE_MS_MAX (60u * 1000)
/* Starting or stopping the private redis-server for longer than an hour is a
 * mistake, not a tuning. */
#define REDIS_PRIVATE_TIMEOUT_MAX_MS (3600u * 1000)
/* A unix socket path, NUL included, fits in sockaddr_un.sun_path. */
#define SUN_PATH_MAX 108
#define REDIS_SOCKET_SUFFIX "/run/redis.sock"

#define SESSION_TOKEN "{session}"

/* ------------------------------------------------------------------------ */
/* Scalar parsers (public).                                                  */

/* Decimal digits only: no sign, no spaces, no base prefix. */
static int parse_digits(const char *s, size_t n, uint64_t *ret)
{
    uint64_t v = 0;

    if (n == 0)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned d;

        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -EINVAL;
        v = v * 10 + d;
    }
    *ret = v;
    return 0;
}

struct unit {
    const char *suffix;
    uint64_t mult;
};

static int parse_with_unit(const char *s, const struct unit *units, bool unitless_any,
                           uint64_t *ret)
{
    size_t n = 0;
    uint64_t v;

    if (s == NULL)
        return -EINVAL;
    while (s[n] >= '0' && s[n] <= '9')
        n++;
    if (parse_digits(s, n, &v) < 0)
        return -EINVAL;
    if (s[n] == '\0') {
        /* A bare number is only unambiguous for a duration when it is 0. */
        if (!unitless_any && v != 0)
            return -EINVAL;
        *ret = v;
        return 0;
    }
    for (const struct unit *u = units; u->suffix != NULL; u++) {
        if (strcmp(s + n, u->suffix) != 0)
            continue;
        if (v > UINT64_MAX / u->mult)
            return -EINVAL;
        *ret = v * u->mult;
        return 0;
    }
    return -EINVAL;
}

int wg_config_parse_duration(const char *s, uint64_t *ret_ms)
{
    static const struct unit units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 3600 * 1000}, {NULL, 0},
    };

    return parse_with_unit(s, units, false, ret_ms);
}

int wg_config_parse_size(const char *s, uint64_t *ret_bytes)
{
    /* Only binary units: "KB" means 1000 to some readers and 1024 to others. */
    static const struct unit units[] = {
        {"KiB", 1ull << 10},
        {"MiB", 1ull << 20},
        {"GiB", 1ull << 30},
        {NULL, 0},
    };

    return parse_with_unit(s, units, true, ret_bytes);
}

int wg_config_parse_addr(const char *s, struct wg_addr *ret_addr)
{
    struct wg_addr a;
    char host[INET6_ADDRSTRLEN + 1];
    const char *colon, *port_s;
    size_t host_len;
    uint64_t port;
    bool v6 = false;

    memset(&a, 0, sizeof a);
    if (s == NULL)
        return -EINVAL;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');

        if (close == NULL || close[1] != ':')
            return -EINVAL;
        v6 = true;
        host_len = (size_t)(close - s - 1);
        if (host_len == 0 || host_len >= sizeof host)
            return -EINVAL;
        memcpy(host, s + 1, host_len);
        port_s = close + 2;
    } else {
        colon = strchr(s, ':');
        /* A second colon is an IPv6 literal without brackets: ambiguous. */
        if (colon == NULL || strchr(colon + 1, ':') != NULL)
            return -EINVAL;
        host_len = (size_t)(colon - s);
        if (host_len >= sizeof host)
            return -EINVAL;
        memcpy(host, s, host_len);
        port_s = colon + 1;
    }
    host[host_len] = '\0';
    if (strlen(port_s) > 5 || parse_digits(port_s, strlen(port_s), &port) < 0 || port > 65535)
        return -EINVAL;

    if (v6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a.sa;

        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
            return -EINVAL;
        a.salen = sizeof *sin6;
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&a.sa;

        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        if (host[0] == '\0')
            sin->sin_addr.s_addr = htonl(INADDR_ANY);
        else if (strcasecmp(host, "localhost") == 0)
            /* Resolved here, not by DNS: "localhost" must never leave the box. */
            sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
            return -EINVAL;
        a.salen = sizeof *sin;
    }
    a.text = strdup(s);
    if (a.text == NULL)
        return -ENOMEM;
    *ret_addr = a;
    return 0;
}

static void mask_bits(uint8_t *addr, size_t len, unsigned prefix)
{
    for (size_t i = 0; i < len; i++) {
        unsigned bits = prefix >= 8 * (i + 1) ? 8 : prefix > 8 * i ? prefix - 8 * (unsigned)i : 0;

        addr[i] &= (uint8_t)(0xff00u >> bits);
    }
}

int wg_config_parse_cidr(const char *s, struct wg_cidr *ret_cidr)
{
    static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    struct wg_cidr c;
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash;
    size_t host_len;
    unsigned max;

    memset(&c, 0, sizeof c);
    if (s == NULL)
        return -EINVAL;
    slash = strchr(s, '/');
    host_len = slash != NULL ? (size_t)(slash - s) : strlen(s);
    if (host_len == 0 || host_len >= sizeof host)
        return -EINVAL;
    memcpy(host, s, host_len);
    host[host_len] = '\0';
    if (memchr(host, ':', host_len) != NULL) {
        c.family = AF_INET6;
        max = 128;
    } else {
        c.family = AF_INET;
        max = 32;
    }
    if (inet_pton(c.family, host, c.addr) != 1)
        return -EINVAL;
    c.prefix = max;
    if (slash != NULL) {
        uint64_t p;

        if (strlen(slash + 1) > 3 || parse_digits(slash + 1, strlen(slash + 1), &p) < 0 || p > max)
            return -EINVAL;
        c.prefix = (unsigned)p;
    }
    /* Host bits are dropped, so "10.0.0.1/8" means 10.0.0.0/8. */
    mask_bits(c.addr, max / 8, c.prefix);
    /* A v4-mapped network is a v4 network: wg_cidr_contains_any() compares
     * v4-mapped peers as v4, so both spellings must meet there. */
    if (c.family == AF_INET6 && c.prefix >= 96 && memcmp(c.addr, v4_mapped, 12) == 0) {
        memmove(c.addr, c.addr + 12, 4);
        memset(c.addr + 4, 0, 12);
        c.family = AF_INET;
        c.prefix -= 96;
    }
    *ret_cidr = c;
    return 0;
}

static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
    unsigned whole = prefix / 8, rest = prefix % 8;

    if (memcmp(a, b, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    return ((a[whole] ^ b[whole]) & (uint8_t)(0xff00u >> rest)) == 0;
}

bool wg_cidr_contains_any(const struct wg_cidr *nets, size_t n, const struct sockaddr *sa)
{
    uint8_t addr[16];
    int family;

    if (sa == NULL)
        return false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

        family = AF_INET;
        memcpy(addr, &sin->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            family = AF_INET;
            memcpy(addr, sin6->sin6_addr.s6_addr + 12, 4);
        } else {
            family = AF_INET6;
            memcpy(addr, sin6->sin6_addr.s6_addr, 16);
        }
    } else {
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if (nets[i].family == family && prefix_equal(nets[i].addr, addr, nets[i].prefix))
            return true;
    return false;
}

/* ------------------------------------------------------------------------ */
/* Ownership helpers.                                                        */

static void free_strv(char **v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void free_route(struct wg_route_cfg *r)
{
    free(r->host);
    free(r->path_prefix);
    free(r->header_name);
    free(r->header_value);
    free(r->upstream.text);
    memset(r, 0, sizeof *r);
}

static void free_routes(struct wg_route_cfg *routes, size_t n)
{
    if (routes == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free_route(&routes[i]);
    free(routes);
}

void wg_config_free(struct wg_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->path);
    free(cfg->listen.text);
    free(cfg->admin_listen.text);
    free(cfg->admin_token);
    free(cfg->admin_token_file);
    free(cfg->redis_url);
    free(cfg->redis_private.server);
    free(cfg->redis_private.dir);
    free(cfg->redis_private.socket_path);
    free(cfg->docker_host);
    free(cfg->docker_tls.ca);
    free(cfg->docker_tls.cert);
    free(cfg->docker_tls.key);
    free(cfg->docker_name);
    free(cfg->sessions.image);
    free(cfg->sessions.readiness.http_path);
    free_strv(cfg->sessions.save.command, cfg->sessions.save.command_len);
    free(cfg->sessions.save.path);
    free_routes(cfg->routes, cfg->routes_len);
    free_strv(cfg->non_waking_paths, cfg->non_waking_paths_len);
    free_strv(cfg->non_waking_user_agents, cfg->non_waking_user_agents_len);
    free(cfg->trusted_proxies);
    /* Zeroed, so a second free (the binary's error path after
     * wg_config_load() already freed) is harmless. */
    memset(cfg, 0, sizeof *cfg);
}

/* Replaces *dst with a copy of s (NULL clears it). */
static int replace_str(char **dst, const char *s)
{
    char *copy = NULL;

    if (s != NULL) {
        copy = strdup(s);
        if (copy == NULL)
            return -ENOMEM;
    }
    free(*dst);
    *dst = copy;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Error text.                                                               */

static int problem(char *msg, size_t msglen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int problem(char *msg, size_t msglen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, msglen, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* "FILE:LINE: KEY: msg", "FILE: KEY: msg" without a line, "KEY: msg"
 * without a file. Returns -EINVAL. */
static int fail_at(char *err, size_t errlen, const char *file, size_t line, const char *key,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int fail_at(char *err, size_t errlen, const char *file, size_t line, const char *key,
                   const char *fmt, ...)
{
    char msg[WG_CONFIG_ERR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (err == NULL || errlen == 0)
        return -EINVAL;
    if (file != NULL && line > 0)
        snprintf(err, errlen, "%s:%zu: %s: %s", file, line, key, msg);
    else if (file != NULL)
        snprintf(err, errlen, "%s: %s: %s", file, key, msg);
    else
        snprintf(err, errlen, "%s: %s", key, msg);
    return -EINVAL;
}

static void fmt_duration(uint64_t ms, char *buf, size_t len)
{
    if (ms != 0 && ms % (3600 * 1000) == 0)
        snprintf(buf, len, "%lluh", (unsigned long long)(ms / (3600 * 1000)));
    else if (ms != 0 && ms % (60 * 1000) == 0)
        snprintf(buf, len, "%llum", (unsigned long long)(ms / (60 * 1000)));
    else if (ms % 1000 == 0)
        snprintf(buf, len, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(buf, len, "%llums", (unsigned long long)ms);
}

static void fmt_size(uint64_t b, char *buf, size_t len)
{
    if (b != 0 && b % (1ull << 30) == 0)
        snprintf(buf, len, "%lluGiB", (unsigned long long)(b >> 30));
    else if (b != 0 && b % (1ull << 20) == 0)
        snprintf(buf, len, "%lluMiB", (unsigned long long)(b >> 20));
    else if (b != 0 && b % (1ull << 10) == 0)
        snprintf(buf, len, "%lluKiB", (unsigned long long)(b >> 10));
    else
        snprintf(buf, len, "%llu", (unsigned long long)b);
}

/* ------------------------------------------------------------------------ */
/* Fields and setters, shared by the file, the environment and the flags.    */

enum kind {
    K_MAP,         /* a nested mapping: sub */
    K_STR,         /* a non-empty string */
    K_ADDR,        /* struct wg_addr */
    K_UPSTREAM,    /* K_ADDR that also sets the route's has_upstream */
    K_DURATION,    /* uint64_t ms */
    K_SIZE,        /* size_t or uint64_t bytes */
    K_UINT,        /* unsigned */
    K_BOOL,        /* bool */
    K_ROLE,        /* enum wg_role */
    K_LEVEL,       /* enum wg_log_level */
    K_FORMAT,      /* enum wg_log_format */
    K_ON_FAILURE,  /* enum wg_save_failure */
    K_REDIS_URL,   /* char * */
    K_DOCKER_HOST, /* char * */
    K_HTTP_PATH,   /* char *: an origin-form request target, "/healthz" */
    K_PATHS,       /* char ** + size_t, each starting with '/' */
    K_STRLIST,     /* char ** + size_t, each non-empty */
    K_COMMAND,     /* NULL-terminated char ** + size_t, non-empty */
    K_CIDRS,       /* struct wg_cidr * + size_t */
    K_ROUTES,      /* struct wg_route_cfg * + size_t */
};

struct walk;

struct field {
    const char *key;
    enum kind kind;
    size_t off;     /* in the struct the field lives in */
    size_t size;    /* sizeof the member, for numbers */
    size_t off_len; /* lists: the length member */
    uint64_t min, max;
    bool nullable; /* null (or "~") clears the value instead of being an error */
    const struct field *sub;
    /* K_MAP: cross-field rules of that mapping, run after its keys. */
    int (*check)(struct walk *w, yaml_node_t *map, void *base);
};

#define IN_CFG(m) .off = offsetof(struct wg_config, m), .size = sizeof(((struct wg_config *)0)->m)
#define IN_ROUTE(m)                                                                                \
    .off = offsetof(struct wg_route_cfg, m), .size = sizeof(((struct wg_route_cfg *)0)->m)
#define LEN_IN_CFG(m) .off_len = offsetof(struct wg_config, m)

struct name_value {
    const char *name;
    int value;
};

static const struct name_value roles[] = {
    {"all", WG_ROLE_ALL},
    {"proxy", WG_ROLE_PROXY},
    {"orchestrator", WG_ROLE_ORCHESTRATOR},
    {NULL, 0},
};
/* The log module has its own parsers; these tables keep the config's error
 * text ("use debug, info, warn or error") next to the names it lists. */
static const struct name_value levels[] = {
    {"debug", WG_LOG_DEBUG},
    {"info", WG_LOG_INFO},
    {"warn", WG_LOG_WARN},
    {"error", WG_LOG_ERROR},
    {NULL, 0},
};
static const struct name_value formats[] = {
    {"logfmt", WG_LOG_LOGFMT},
    {"json", WG_LOG_JSON},
    {NULL, 0},
};
static const struct name_value on_failures[] = {
    {"keep_awake", WG_SAVE_KEEP_AWAKE},
    {"stop", WG_SAVE_STOP},
    {NULL, 0},
};
static const struct name_value bools[] = {
    {"true", 1}, {"True", 1}, {"TRUE", 1}, {"false", 0}, {"False", 0}, {"FALSE", 0}, {NULL, 0},
};

static int lookup(const struct name_value *t, const char *s, int *ret)
{
    for (; t->name != NULL; t++) {
        if (strcmp(t->name, s) == 0) {
            *ret = t->value;
            return 0;
        }
    }
    return -EINVAL;
}

static bool has_ctl_or_space(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f)
            return true;
    return false;
}

static int set_str(char **dst, const char *s, char *msg, size_t msglen)
{
    if (s != NULL && s[0] == '\0')
        return problem(msg, msglen, "must not be empty");
    if (replace_str(dst, s) < 0) {
        problem(msg, msglen, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

static int set_addr(struct wg_addr *dst, const char *s, char *msg, size_t msglen)
{
    struct wg_addr a;
    int r;

    r = wg_config_parse_addr(s, &a);
    if (r == -ENOMEM) {
        problem(msg, msglen, "out of memory");
        return -ENOMEM;
    }
    if (r < 0)
        return problem(msg, msglen,
                       "invalid address \"%s\" (use IP:port, [IPv6]:port, :port or localhost:port)",
                       s);
    free(dst->text);
    *dst = a;
    return 0;
}

static int set_redis_url(char **dst, const char *s, char *msg, size_t msglen)
{
    char why[256];
    int r;

    if (s == NULL)
        return set_str(dst, NULL, msg, msglen);
    /* The grammar of the connection itself, so what loads also connects;
     * the message stays the configuration's own. */
    r = wg_redis_url_check(s, why, sizeof why);
    if (r == -ENOMEM) {
        problem(msg, msglen, "out of memory");
        return r;
    }
    if (r < 0)
        return problem(msg, msglen,
                       "invalid Redis URL \"%s\" (use redis://host:port/db or unix:///path.sock)",
                       s);
    return set_str(dst, s, msg, msglen);
}

static int set_docker_host(char **dst, const char *s, char *msg, size_t msglen)
{
    char why[256];

    /* The whole grammar is checked again with the TLS setting once the file
     * is read (wg_config_check_docker_host); here TLS is not known yet. */
    if (wg_docker_host_check(s, false, why, sizeof why) < 0)
        return problem(msg, msglen, "invalid Docker host \"%s\": %s", s, why);
    return set_str(dst, s, msg, msglen);
}

static int set_http_path(char **dst, const char *s, char *msg, size_t msglen)
{
    size_t n;

    if (s == NULL)
        return set_str(dst, NULL, msg, msglen);
    n = strlen(s);
    if (s[0] != '/' || n > HTTP_PATH_MAX)
        return problem(msg, msglen,
                       "invalid request path \"%s\" (use a path starting with /, like /healthz, "
                       "of at most %u bytes)",
                       s, HTTP_PATH_MAX);
    /* It is sent as is in a request line: visible ASCII only, no fragment. */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f || s[i] == '#')
            return problem(msg, msglen,
                           "invalid request path \"%s\" (no spaces, control characters, # or "
                           "bytes above 127: percent-encode them)",
                           s);
    return set_str(dst, s, msg, msglen);
}

static void store_number(void *dst, size_t size, uint64_t v)
{
    if (size == sizeof(uint64_t)) {
        uint64_t x = v;

        memcpy(dst, &x, sizeof x);
    } else {
        unsigned x = (unsigned)v;

        assert(size == sizeof(unsigned));
        memcpy(dst, &x, sizeof x);
    }
}

static int set_duration(const struct field *f, void *dst, const char *s, char *msg, size_t msglen)
{
    char max[32];
    uint64_t v;

    if (wg_config_parse_duration(s, &v) < 0)
        return problem(msg, msglen, "invalid duration \"%s\" (use 250ms, 30s, 20m or 1h)", s);
    if (v < f->min)
        return problem(msg, msglen, "must be more than 0");
    if (v > f->max) {
        fmt_duration(f->max, max, sizeof max);
        return problem(msg, msglen, "%s is longer than the maximum of %s", s, max);
    }
    store_number(dst, sizeof(uint64_t), v);
    return 0;
}

static int set_size(const struct field *f, void *dst, const char *s, char *msg, size_t msglen)
{
    char lo[32], hi[32];
    uint64_t v;

    if (wg_config_parse_size(s, &v) < 0)
        return problem(msg, msglen, "invalid size \"%s\" (use 512, 64KiB, 1MiB or 1GiB)", s);
    if (v < f->min || v > f->max) {
        fmt_size(f->min, lo, sizeof lo);
        fmt_size(f->max, hi, sizeof hi);
        return problem(msg, msglen, "%s is out of range (%s to %s)", s, lo, hi);
    }
    store_number(dst, f->size, v);
    return 0;
}

static int set_uint(const struct field *f, void *dst, const char *s, char *msg, size_t msglen)
{
    uint64_t v;

    if (parse_digits(s, strlen(s), &v) < 0)
        return problem(msg, msglen, "invalid number \"%s\"", s);
    if (v < f->min || v > f->max)
        return problem(msg, msglen, "%s is out of range (%llu to %llu)", s,
                       (unsigned long long)f->min, (unsigned long long)f->max);
    store_number(dst, f->size, v);
    return 0;
}

/* Sets one scalar field of base from text s (NULL only for nullable fields).
 * On failure writes the problem, without a location, to msg. */
static int set_scalar(const struct field *f, void *base, const char *s, char *msg, size_t msglen)
{
    void *dst = (char *)base + f->off;
    int v, r;

    switch (f->kind) {
    case K_STR:
        return set_str(dst, s, msg, msglen);
    case K_ADDR:
        return set_addr(dst, s, msg, msglen);
    case K_UPSTREAM:
        r = set_addr(dst, s, msg, msglen);
        if (r == 0)
            ((struct wg_route_cfg *)base)->has_upstream = true;
        return r;
    case K_DURATION:
        return set_duration(f, dst, s, msg, msglen);
    case K_SIZE:
        return set_size(f, dst, s, msg, msglen);
    case K_UINT:
        return set_uint(f, dst, s, msg, msglen);
    case K_BOOL:
        if (lookup(bools, s, &v) < 0)
            return problem(msg, msglen, "invalid boolean \"%s\" (use true or false)", s);
        *(bool *)dst = v != 0;
        return 0;
    case K_ROLE:
        if (lookup(roles, s, &v) < 0)
            return problem(msg, msglen, "unknown role \"%s\" (use all, proxy or orchestrator)", s);
        *(enum wg_role *)dst = (enum wg_role)v;
        return 0;
    case K_LEVEL:
        if (lookup(levels, s, &v) < 0)
            return problem(msg, msglen, "unknown log level \"%s\" (use debug, info, warn or error)",
                           s);
        *(enum wg_log_level *)dst = (enum wg_log_level)v;
        return 0;
    case K_FORMAT:
        if (lookup(formats, s, &v) < 0)
            return problem(msg, msglen, "unknown log format \"%s\" (use logfmt or json)", s);
        *(enum wg_log_format *)dst = (enum wg_log_format)v;
        return 0;
    case K_ON_FAILURE:
        if (lookup(on_failures, s, &v) < 0)
            return problem(msg, msglen, "unknown value \"%s\" (use keep_awake or stop)", s);
        *(enum wg_save_failure *)dst = (enum wg_save_failure)v;
        return 0;
    case K_REDIS_URL:
        return set_redis_url(dst, s, msg, msglen);
    case K_DOCKER_HOST:
        return set_docker_host(dst, s, msg, msglen);
    case K_HTTP_PATH:
        return set_http_path(dst, s, msg, msglen);
    default:
        assert(!"not a scalar kind");
        return -EINVAL;
    }
}

/* ------------------------------------------------------------------------ */
/* The YAML walk.                                                            */

struct walk {
    struct wg_config *cfg;
    yaml_document_t *doc;
    const char *file;
    char *err;
    size_t errlen;
    char path[PATH_MAX_KEY]; /* dotted key of the node being walked */
    size_t pathlen;
};

static size_t push_path(struct walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static size_t push_path(struct walk *w, const char *fmt, ...)
{
    size_t old = w->pathlen;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(w->path + old, sizeof w->path - old, fmt, ap);
    va_end(ap);
    w->pathlen = strlen(w->path);
    return old;
}

static void pop_path(struct walk *w, size_t old)
{
    w->path[old] = '\0';
    w->pathlen = old;
}

static int fail_node(struct walk *w, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail_node(struct walk *w, const yaml_node_t *n, const char *fmt, ...)
{
    char msg[WG_CONFIG_ERR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fail_at(w->err, w->errlen, w->file, n->start_mark.line + 1,
                   w->pathlen > 0 ? w->path : "(top level)", "%s", msg);
}

static bool is_null(const yaml_node_t *n)
{
    const char *v;

    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    v = (const char *)n->data.scalar.value;
    return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
           strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

static const char *node_kind(const yaml_node_t *n)
{
    if (n->type == YAML_MAPPING_NODE)
        return "a mapping";
    if (n->type == YAML_SEQUENCE_NODE)
        return "a list";
    if (is_null(n))
        return "nothing";
    return "a value";
}

/* The text of a scalar node; NULL for a null node when nullable. */
static int scalar(struct walk *w, const yaml_node_t *n, bool nullable, const char **ret)
{
    const char *v;

    if (n->type != YAML_SCALAR_NODE)
        return fail_node(w, n, "expected a value, got %s", node_kind(n));
    if (is_null(n)) {
        if (!nullable)
            return fail_node(w, n, "missing value");
        *ret = NULL;
        return 0;
    }
    v = (const char *)n->data.scalar.value;
    /* A "\0" escape would silently cut the value at the first C NUL. */
    if (strlen(v) != n->data.scalar.length)
        return fail_node(w, n, "contains a NUL character");
    *ret = v;
    return 0;
}

static yaml_node_t *map_get(struct walk *w, yaml_node_t *map, const char *key)
{
    if (map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(w->doc, p->key);

        if (k != NULL && k->type == YAML_SCALAR_NODE &&
            strcmp((const char *)k->data.scalar.value, key) == 0)
            return yaml_document_get_node(w->doc, p->value);
    }
    return NULL;
}

static int walk_value(struct walk *w, yaml_node_t *n, const struct field *f, void *base);

static int fail_unknown(struct walk *w, const yaml_node_t *key, const struct field *fields)
{
    char known[WG_CONFIG_ERR_MAX];
    size_t len = 0;

    known[0] = '\0';
    for (const struct field *f = fields; f->key != NULL && len < sizeof known; f++)
        len += (size_t)snprintf(known + len, sizeof known - len, "%s%s", len ? ", " : "", f->key);
    return fail_node(w, key, "unknown key (expected one of: %s)", known);
}

/* One key of a mapping, p, of the pairs from start: it must be a known key,
 * given once. */
static int walk_pair(struct walk *w, yaml_node_t *map, yaml_node_pair_t *start, yaml_node_pair_t *p,
                     const struct field *fields, void *base)
{
    yaml_node_t *key = yaml_document_get_node(w->doc, p->key);
    yaml_node_t *value = yaml_document_get_node(w->doc, p->value);
    const struct field *f;
    const char *name;
    size_t old;
    int r = 0;

    if (key == NULL || value == NULL || key->type != YAML_SCALAR_NODE || is_null(key))
        return fail_node(w, key != NULL ? key : map, "keys must be plain names");
    name = (const char *)key->data.scalar.value;
    for (f = fields; f->key != NULL; f++)
        if (strcmp(f->key, name) == 0)
            break;
    old = push_path(w, w->pathlen > 0 ? ".%s" : "%s", name);
    if (f->key == NULL) {
        r = fail_unknown(w, key, fields);
        goto out;
    }
    /* Every earlier key is a known one, so this loop stays short. */
    for (yaml_node_pair_t *q = start; q < p; q++) {
        yaml_node_t *prev = yaml_document_get_node(w->doc, q->key);

        if (strcmp((const char *)prev->data.scalar.value, name) == 0) {
            r = fail_node(w, key, "duplicate key (first set on line %zu)",
                          prev->start_mark.line + 1);
            goto out;
        }
    }
    r = walk_value(w, value, f, base);
out:
    pop_path(w, old);
    return r;
}

/* Walks a mapping whose keys are described by fields; null is an empty
 * mapping, so "admin:" with nothing under it keeps the defaults. */
static int walk_map(struct walk *w, yaml_node_t *map, const struct field *fields, void *base)
{
    yaml_node_pair_t *start;
    int r;

    if (is_null(map))
        return 0;
    if (map->type != YAML_MAPPING_NODE)
        return fail_node(w, map, "expected a mapping, got %s", node_kind(map));
    start = map->data.mapping.pairs.start;
    for (yaml_node_pair_t *p = start; p < map->data.mapping.pairs.top; p++) {
        r = walk_pair(w, map, start, p, fields, base);
        if (r < 0)
            return r;
    }
    return 0;
}

/* The length of a list; null is an empty list. */
static int seq_items(struct walk *w, yaml_node_t *n, size_t *ret_len)
{
    if (is_null(n)) {
        *ret_len = 0;
        return 0;
    }
    if (n->type != YAML_SEQUENCE_NODE)
        return fail_node(w, n, "expected a list, got %s", node_kind(n));
    *ret_len = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    return 0;
}

static int walk_strlist(struct walk *w, yaml_node_t *n, const struct field *f, void *base)
{
    char ***dst = (char ***)((char *)base + f->off);
    size_t *dst_len = (size_t *)((char *)base + f->off_len);
    char **v = NULL;
    size_t len = 0;
    int r = 0;

    if (is_null(n)) {
        /* For save.command that means the built-in hook; elsewhere an empty list. */
        free_strv(*dst, *dst_len);
        *dst = NULL;
        *dst_len = 0;
        return 0;
    }
    r = seq_items(w, n, &len);
    if (r < 0)
        goto out;
    if (f->kind == K_COMMAND && len == 0) {
        r = fail_node(w, n, "must not be empty (leave it out for the built-in git save)");
        goto out;
    }
    /* One spare slot: command is passed to exec as a NULL-terminated argv. */
    v = calloc(len + 1, sizeof *v);
    if (v == NULL) {
        r = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < len && r == 0; i++) {
        yaml_node_t *item = yaml_document_get_node(w->doc, n->data.sequence.items.start[i]);
        size_t old = push_path(w, "[%zu]", i);
        const char *s;

        r = scalar(w, item, false, &s);
        if (r == 0 && s[0] == '\0' && (f->kind != K_COMMAND || i == 0))
            r = fail_node(w, item, "must not be empty");
        if (r == 0 && f->kind == K_PATHS && s[0] != '/')
            r = fail_node(w, item, "path \"%s\" must start with /", s);
        if (r == 0 && (v[i] = strdup(s)) == NULL)
            r = -ENOMEM;
        pop_path(w, old);
    }
    if (r < 0)
        goto out;
    free_strv(*dst, *dst_len);
    *dst = v;
    *dst_len = len;
    v = NULL;
out:
    free_strv(v, len);
    return r;
}

/* Reads a sequence's length and allocates that many zeroed elements (none
 * for an empty sequence). Returns 0, -EINVAL (with the error written) or
 * -ENOMEM. */
static int seq_alloc(struct walk *w, yaml_node_t *n, size_t elem, void **ret_v, size_t *ret_len)
{
    size_t len = 0;
    int r = seq_items(w, n, &len);
    if (r < 0)
        return r;
    *ret_v = NULL;
    *ret_len = len;
    if (len == 0)
        return 0;
    *ret_v = calloc(len, elem);
    return *ret_v == NULL ? -ENOMEM : 0;
}

static int walk_cidrs(struct walk *w, yaml_node_t *n, const struct field *f, void *base)
{
    struct wg_cidr **dst = (struct wg_cidr **)((char *)base + f->off);
    size_t *dst_len = (size_t *)((char *)base + f->off_len);
    struct wg_cidr *v = NULL;
    size_t len = 0;
    int r = 0;

    r = seq_alloc(w, n, sizeof *v, (void **)&v, &len);
    if (r < 0)
        goto out;
    for (size_t i = 0; i < len && r == 0; i++) {
        yaml_node_t *item = yaml_document_get_node(w->doc, n->data.sequence.items.start[i]);
        size_t old = push_path(w, "[%zu]", i);
        const char *s;

        r = scalar(w, item, false, &s);
        if (r == 0 && wg_config_parse_cidr(s, &v[i]) < 0)
            r = fail_node(w, item,
                          "invalid network \"%s\" (use 10.0.0.0/8, fd00::/8 or one address)", s);
        pop_path(w, old);
    }
    if (r < 0)
        goto out;
    free(*dst);
    *dst = v;
    *dst_len = len;
    v = NULL;
out:
    free(v);
    return r;
}

static const struct field header_fields[] = {
    {.key = "name", .kind = K_STR, IN_ROUTE(header_name)},
    {.key = "value", .kind = K_STR, IN_ROUTE(header_value)},
    {.key = NULL},
};

static const struct field match_fields[] = {
    {.key = "host", .kind = K_STR, IN_ROUTE(host)},
    {.key = "path_prefix", .kind = K_STR, IN_ROUTE(path_prefix)},
    {.key = "header", .kind = K_MAP, .sub = header_fields},
    {.key = NULL},
};

static const struct field route_fields[] = {
    {.key = "match", .kind = K_MAP, .sub = match_fields},
    {.key = "strip_prefix", .kind = K_BOOL, IN_ROUTE(strip_prefix)},
    {.key = "upstream", .kind = K_UPSTREAM, IN_ROUTE(upstream)},
    {.key = "port", .kind = K_UINT, IN_ROUTE(port), .min = 1, .max = 65535},
    {.key = NULL},
};

static int walk_routes(struct walk *w, yaml_node_t *n, const struct field *f, void *base)
{
    struct wg_route_cfg **dst = (struct wg_route_cfg **)((char *)base + f->off);
    size_t *dst_len = (size_t *)((char *)base + f->off_len);
    struct wg_route_cfg *v = NULL;
    size_t len = 0;
    int r = 0;

    r = seq_alloc(w, n, sizeof *v, (void **)&v, &len);
    if (r < 0)
        goto out;
    for (size_t i = 0; i < len && r == 0; i++) {
        yaml_node_t *item = yaml_document_get_node(w->doc, n->data.sequence.items.start[i]);
        size_t old = push_path(w, "[%zu]", i);

        v[i].line = item->start_mark.line + 1 > INT_MAX ? 0 : (int)item->start_mark.line + 1;
        if (item->type != YAML_MAPPING_NODE)
            r = fail_node(w, item, "expected a mapping, got %s", node_kind(item));
        else
            r = walk_map(w, item, route_fields, &v[i]);
        pop_path(w, old);
    }
    if (r < 0)
        goto out;
    free_routes(*dst, *dst_len);
    *dst = v;
    *dst_len = len;
    v = NULL;
out:
    free_routes(v, len);
    return r;
}

static bool has_value(struct walk *w, yaml_node_t *map, const char *key)
{
    yaml_node_t *n = map_get(w, map, key);

    return n != NULL && !is_null(n);
}

/* token and token_file are two ways to give one secret: a file that sets
 * one drops what an earlier layer set through the other. */
static int check_admin(struct walk *w, yaml_node_t *map, void *base)
{
    struct wg_config *cfg = base;
    bool token = has_value(w, map, "token"), token_file = has_value(w, map, "token_file");
    size_t old;
    int r;

    if (token && token_file) {
        old = push_path(w, ".token_file");
        r = fail_node(w, map_get(w, map, "token_file"),
                      "set admin.token or admin.token_file, not both");
        pop_path(w, old);
        return r;
    }
    if (token_file) {
        yaml_node_t *n = map_get(w, map, "token_file");

        free(cfg->admin_token);
        cfg->admin_token = NULL;
        cfg->admin_token_file_line =
            n->start_mark.line + 1 > INT_MAX ? 0 : (int)n->start_mark.line + 1;
    } else if (token) {
        free(cfg->admin_token_file);
        cfg->admin_token_file = NULL;
        cfg->admin_token_file_line = 0;
    }
    return 0;
}

static int check_idle(struct walk *w, yaml_node_t *map, void *base)
{
    const struct wg_config *cfg = base;
    const struct wg_idle_cfg *idle = &cfg->sessions.idle;

    /* A pause tier that starts after the stop tier would never run. */
    if (idle->pause_after_ms != 0 && idle->stop_after_ms != 0 &&
        idle->pause_after_ms >= idle->stop_after_ms)
        return fail_node(w, map, "pause_after must be shorter than stop_after (or 0s)");
    /* Touches written just before the drain began must land before the save. */
    if (idle->drain_ms < idle->activity_interval_ms)
        return fail_node(w, map, "drain must be at least activity_interval");
    return 0;
}

static int check_save(struct walk *w, yaml_node_t *map, void *base)
{
    const struct wg_config *cfg = base;
    const struct wg_save_cfg *save = &cfg->sessions.save;

    if (save->retry_max_ms < save->retry_backoff_ms)
        return fail_node(w, map, "retry_max must be at least retry_backoff");
    return 0;
}

/* A regular file that can be opened for reading; else why not, in msg. */
static int check_readable(const char *path, char *msg, size_t msglen)
{
    struct stat st;
    int fd, r = 0;

    /* O_NONBLOCK so a FIFO put there by mistake cannot hang startup. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0 || fstat(fd, &st) < 0)
        r = problem(msg, msglen, "cannot read \"%s\": %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        r = problem(msg, msglen, "cannot read \"%s\": not a regular file", path);
    if (fd >= 0)
        close(fd);
    return r;
}

/* docker.tls given as a mapping turns TLS on. The files are opened here,
 * where their lines are known, so a typo stops startup instead of the first
 * Docker call; the environment cannot set them, so nothing later changes
 * them. Whether the host is tcp:// is checked by wg_config_validate(), after
 * WAKEGATE_DOCKER_HOST. */
static int check_docker_tls(struct walk *w, yaml_node_t *map, void *base)
{
    static const char *const files[] = {"ca", "cert", "key"};
    struct wg_config *cfg = base;
    struct wg_docker_tls_cfg *tls = &cfg->docker_tls;
    char msg[WG_CONFIG_ERR_MAX];
    size_t old;
    int r = 0;

    tls->enabled = !is_null(map);
    tls->line = map->start_mark.line + 1 > INT_MAX ? 0 : (int)map->start_mark.line + 1;
    if ((tls->cert != NULL) != (tls->key != NULL)) {
        const char *given = tls->cert != NULL ? "cert" : "key";

        old = push_path(w, ".%s", given);
        r = fail_node(w, map_get(w, map, given),
                      "set docker.tls.cert and docker.tls.key together (a client certificate "
                      "goes with its key)");
        pop_path(w, old);
        return r;
    }
    for (size_t i = 0; i < sizeof files / sizeof files[0] && r == 0; i++) {
        yaml_node_t *n = map_get(w, map, files[i]);

        if (n == NULL || is_null(n))
            continue;
        old = push_path(w, ".%s", files[i]);
        if (check_readable((const char *)n->data.scalar.value, msg, sizeof msg) < 0)
            r = fail_node(w, n, "%s", msg);
        pop_path(w, old);
    }
    return r;
}

/* Remembers the lines of redis.private.server and .dir for later errors:
 * wg_config_validate() checks the socket path, the binary finds the server
 * (src/redis_child.h). */
static int check_redis_private(struct walk *w, yaml_node_t *map, void *base)
{
    struct wg_redis_private_cfg *p = &((struct wg_config *)base)->redis_private;
    yaml_node_t *n;

    if ((n = map_get(w, map, "server")) != NULL)
        p->server_line = n->start_mark.line + 1 > INT_MAX ? 0 : (int)n->start_mark.line + 1;
    if ((n = map_get(w, map, "dir")) != NULL)
        p->dir_line = n->start_mark.line + 1 > INT_MAX ? 0 : (int)n->start_mark.line + 1;
    return 0;
}

/* Remembers docker.host's line for wg_config_check_docker_host(). */
static int check_docker(struct walk *w, yaml_node_t *map, void *base)
{
    struct wg_config *cfg = base;
    yaml_node_t *n = map_get(w, map, "host");

    if (n != NULL)
        cfg->docker_host_line = n->start_mark.line + 1 > INT_MAX ? 0 : (int)n->start_mark.line + 1;
    return 0;
}

/* One table entry for a number of wg_config; m is the member path. */
#define F_TIME(k, m, lo)                                                                           \
    {                                                                                              \
        .key = k, .kind = K_DURATION, IN_CFG(m), .min = lo, .max = DURATION_MAX_MS                 \
    }
#define F_SIZE(k, m, lo, hi)                                                                       \
    {                                                                                              \
        .key = k, .kind = K_SIZE, IN_CFG(m), .min = lo, .max = hi                                  \
    }
#define F_COUNT(k, m, lo, hi)                                                                      \
    {                                                                                              \
        .key = k, .kind = K_UINT, IN_CFG(m), .min = lo, .max = hi                                  \
    }
#define F_LIST(k, kd, m)                                                                           \
    {                                                                                              \
        .key = k, .kind = kd, IN_CFG(m), LEN_IN_CFG(m##_len)                                       \
    }

static const struct field admin_fields[] = {
    {.key = "listen", .kind = K_ADDR, IN_CFG(admin_listen)},
    {.key = "token", .kind = K_STR, IN_CFG(admin_token), .nullable = true},
    {.key = "token_file", .kind = K_STR, IN_CFG(admin_token_file), .nullable = true},
    {.key = NULL},
};

static const struct field redis_private_fields[] = {
    {.key = "enabled", .kind = K_BOOL, IN_CFG(redis_private.enabled)},
    {.key = "server", .kind = K_STR, IN_CFG(redis_private.server)},
    {.key = "dir", .kind = K_STR, IN_CFG(redis_private.dir), .nullable = true},
    {.key = "appendonly", .kind = K_BOOL, IN_CFG(redis_private.appendonly)},
    {.key = "start_timeout",
     .kind = K_DURATION,
     IN_CFG(redis_private.start_timeout_ms),
     .min = 1,
     .max = REDIS_PRIVATE_TIMEOUT_MAX_MS},
    {.key = "stop_timeout",
     .kind = K_DURATION,
     IN_CFG(redis_private.stop_timeout_ms),
     .min = 1,
     .max = REDIS_PRIVATE_TIMEOUT_MAX_MS},
    {.key = NULL},
};

static const struct field redis_fields[] = {
    {.key = "url", .kind = K_REDIS_URL, IN_CFG(redis_url), .nullable = true},
    {.key = "private", .kind = K_MAP, .sub = redis_private_fields, .check = check_redis_private},
    {.key = NULL},
};

static const struct field docker_tls_fields[] = {
    {.key = "ca", .kind = K_STR, IN_CFG(docker_tls.ca)},
    {.key = "cert", .kind = K_STR, IN_CFG(docker_tls.cert)},
    {.key = "key", .kind = K_STR, IN_CFG(docker_tls.key)},
    {.key = "verify", .kind = K_BOOL, IN_CFG(docker_tls.verify)},
    {.key = NULL},
};

static const struct field docker_fields[] = {
    {.key = "host", .kind = K_DOCKER_HOST, IN_CFG(docker_host)},
    {.key = "tls", .kind = K_MAP, .sub = docker_tls_fields, .check = check_docker_tls},
    {.key = "name", .kind = K_STR, IN_CFG(docker_name)},
    F_COUNT("max_concurrent_starts", max_concurrent_starts, 1, 65535),
    {.key = NULL},
};

static const struct field idle_fields[] = {
    F_TIME("pause_after", sessions.idle.pause_after_ms, 0),
    F_TIME("stop_after", sessions.idle.stop_after_ms, 0),
    F_TIME("activity_interval", sessions.idle.activity_interval_ms, 10),
    F_TIME("reap_every", sessions.idle.reap_every_ms, 10),
    F_TIME("drain", sessions.idle.drain_ms, 0),
    {.key = NULL},
};

static const struct field save_fields[] = {
    {.key = "command",
     .kind = K_COMMAND,
     IN_CFG(sessions.save.command),
     LEN_IN_CFG(sessions.save.command_len),
     .nullable = true},
    {.key = "path", .kind = K_STR, IN_CFG(sessions.save.path)},
    F_TIME("timeout", sessions.save.timeout_ms, 1),
    {.key = "on_failure", .kind = K_ON_FAILURE, IN_CFG(sessions.save.on_failure)},
    {.key = "before_pause", .kind = K_BOOL, IN_CFG(sessions.save.before_pause)},
    F_TIME("retry_backoff", sessions.save.retry_backoff_ms, 1),
    F_TIME("retry_max", sessions.save.retry_max_ms, 1),
    {.key = NULL},
};

static const struct field readiness_fields[] = {
    {.key = "http_path",
     .kind = K_HTTP_PATH,
     IN_CFG(sessions.readiness.http_path),
     .nullable = true},
    {.key = "interval",
     .kind = K_DURATION,
     IN_CFG(sessions.readiness.interval_ms),
     .min = 1,
     .max = PROBE_MS_MAX},
    {.key = "timeout",
     .kind = K_DURATION,
     IN_CFG(sessions.readiness.timeout_ms),
     .min = 1,
     .max = PROBE_MS_MAX},
    {.key = NULL},
};

static const struct field sessions_fields[] = {
    {.key = "image", .kind = K_STR, IN_CFG(sessions.image)},
    F_COUNT("port", sessions.port, 1, 65535),
    F_TIME("wake_timeout", sessions.wake_timeout_ms, 1),
    {.key = "idle", .kind = K_MAP, .sub = idle_fields, .check = check_idle},
    {.key = "save", .kind = K_MAP, .sub = save_fields, .check = check_save},
    {.key = "readiness", .kind = K_MAP, .sub = readiness_fields},
    {.key = NULL},
};

static const struct field non_waking_fields[] = {
    F_LIST("paths", K_PATHS, non_waking_paths),
    F_LIST("user_agents", K_STRLIST, non_waking_user_agents),
    {.key = NULL},
};

static const struct field limits_fields[] = {
    F_SIZE("request_line_max", limits.request_line_max, 1, SIZE_LIMIT_MAX),
    F_SIZE("header_line_max", limits.header_line_max, 1, SIZE_LIMIT_MAX),
    F_SIZE("head_max", limits.head_max, 1, SIZE_LIMIT_MAX),
    F_COUNT("header_count_max", limits.header_count_max, 1, 65535),
    F_TIME("head_timeout", limits.head_timeout_ms, 1),
    F_TIME("body_idle", limits.body_idle_ms, 1),
    F_TIME("send_idle", limits.send_idle_ms, 1),
    F_TIME("keepalive_idle", limits.keepalive_idle_ms, 1),
    F_COUNT("keepalive_requests_max", limits.keepalive_requests_max, 1, UINT_MAX),
    F_SIZE("body_max", limits.body_max, 0, UINT64_MAX),
    F_COUNT("connections_max", limits.connections_max, 1, UINT_MAX),
    F_SIZE("buffer_high_water", limits.buffer_high_water, 1, SIZE_LIMIT_MAX),
    F_TIME("tunnel_idle", limits.tunnel_idle_ms, 1),
    {.key = NULL},
};

static const struct field upstream_fields[] = {
    F_TIME("connect_timeout", upstream.connect_timeout_ms, 1),
    F_TIME("response_timeout", upstream.response_timeout_ms, 1),
    F_TIME("keepalive_idle", upstream.keepalive_idle_ms, 1),
    F_COUNT("keepalive_max", upstream.keepalive_max, 0, 65535),
    {.key = NULL},
};

static const struct field log_fields[] = {
    {.key = "level", .kind = K_LEVEL, IN_CFG(log_level)},
    {.key = "format", .kind = K_FORMAT, IN_CFG(log_format)},
    {.key = "access", .kind = K_BOOL, IN_CFG(access_log)},
    {.key = NULL},
};

static const struct field top_fields[] = {
    {.key = "listen", .kind = K_ADDR, IN_CFG(listen)},
    {.key = "role", .kind = K_ROLE, IN_CFG(role)},
    {.key = "admin", .kind = K_MAP, .sub = admin_fields, .check = check_admin},
    {.key = "redis", .kind = K_MAP, .sub = redis_fields},
    {.key = "docker", .kind = K_MAP, .sub = docker_fields, .check = check_docker},
    {.key = "sessions", .kind = K_MAP, .sub = sessions_fields},
    F_LIST("routes", K_ROUTES, routes),
    {.key = "non_waking", .kind = K_MAP, .sub = non_waking_fields},
    F_LIST("trusted_proxies", K_CIDRS, trusted_proxies),
    {.key = "limits", .kind = K_MAP, .sub = limits_fields},
    {.key = "upstream", .kind = K_MAP, .sub = upstream_fields},
    {.key = "log", .kind = K_MAP, .sub = log_fields},
    F_TIME("shutdown_grace", shutdown_grace_ms, 0),
    {.key = NULL},
};

static int walk_value(struct walk *w, yaml_node_t *n, const struct field *f, void *base)
{
    char msg[WG_CONFIG_ERR_MAX];
    const char *s;
    int r;

    switch (f->kind) {
    case K_MAP:
        r = walk_map(w, n, f->sub, base);
        if (r == 0 && f->check != NULL)
            r = f->check(w, n, base);
        return r;
    case K_PATHS:
    case K_STRLIST:
    case K_COMMAND:
        return walk_strlist(w, n, f, base);
    case K_CIDRS:
        return walk_cidrs(w, n, f, base);
    case K_ROUTES:
        return walk_routes(w, n, f, base);
    default:
        break;
    }
    r = scalar(w, n, f->nullable, &s);
    if (r < 0)
        return r;
    msg[0] = '\0';
    r = set_scalar(f, base, s, msg, sizeof msg);
    if (r < 0)
        fail_node(w, n, "%s", msg);
    return r;
}

/* Counts newlines before offset: libyaml gives reader errors (bad UTF-8,
 * control characters) as a byte offset, not a line. */
static size_t line_at(const char *s, size_t len, size_t offset)
{
    size_t line = 1;

    for (size_t i = 0; i < offset && i < len; i++)
        if (s[i] == '\n')
            line++;
    return line;
}

static int yaml_fail(const yaml_parser_t *p, const char *name, const char *yaml, size_t len,
                     char *err, size_t errlen)
{
    const char *what = p->problem != NULL ? p->problem : "unknown error";
    size_t line;

    if (p->error == YAML_MEMORY_ERROR) {
        fail_at(err, errlen, name, 0, "YAML", "out of memory");
        return -ENOMEM;
    }
    if (p->error == YAML_READER_ERROR)
        return fail_at(err, errlen, name, line_at(yaml, len, p->problem_offset),
                       "YAML syntax error", "%s", what);
    line = p->problem_mark.line + 1;
    if (p->context != NULL)
        return fail_at(err, errlen, name, line, "YAML syntax error",
                       "%s %s that started on line %zu", what, p->context,
                       p->context_mark.line + 1);
    return fail_at(err, errlen, name, line, "YAML syntax error", "%s", what);
}

int wg_config_load_string(struct wg_config *cfg, const char *name, const char *yaml, size_t len,
                          char *err, size_t errlen)
{
    struct walk w;
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    yaml_node_t *root;
    bool parser_live = false, doc_live = false, extra_live = false;
    int r;

    assert(cfg != NULL && name != NULL);
    if (yaml == NULL)
        yaml = "";
    r = replace_str(&cfg->path, name);
    if (r < 0)
        goto out;
    if (!yaml_parser_initialize(&parser)) {
        r = -ENOMEM;
        goto out;
    }
    parser_live = true;
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&parser, &doc)) {
        r = yaml_fail(&parser, name, yaml, len, err, errlen);
        goto out;
    }
    doc_live = true;

    memset(&w, 0, sizeof w);
    w.cfg = cfg;
    w.doc = &doc;
    w.file = name;
    w.err = err;
    w.errlen = errlen;
    root = yaml_document_get_root_node(&doc);
    /* An empty file, or one holding only comments, keeps every default. */
    if (root != NULL) {
        r = walk_map(&w, root, top_fields, cfg);
        if (r < 0)
            goto out;
    }

    if (!yaml_parser_load(&parser, &extra)) {
        r = yaml_fail(&parser, name, yaml, len, err, errlen);
        goto out;
    }
    extra_live = true;
    root = yaml_document_get_root_node(&extra);
    if (root != NULL)
        r = fail_at(err, errlen, name, root->start_mark.line + 1, "YAML",
                    "only one document is allowed in the file");
out:
    if (extra_live)
        yaml_document_delete(&extra);
    if (doc_live)
        yaml_document_delete(&doc);
    if (parser_live)
        yaml_parser_delete(&parser);
    if (r == -ENOMEM)
        fail_at(err, errlen, NULL, 0, name, "out of memory");
    return r;
}

int wg_config_load_file(struct wg_config *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int r = 0;

    assert(cfg != NULL && path != NULL);
    f = fopen(path, "re");
    if (f == NULL) {
        r = -errno;
        fail_at(err, errlen, NULL, 0, path, "cannot open: %s", strerror(-r));
        goto out;
    }
    for (;;) {
        size_t n;

        if (len == cap) {
            char *grown;

            /* Room for one byte past the cap tells "too big" from "exactly the cap". */
            if (cap > FILE_MAX) {
                r = -EFBIG;
                fail_at(err, errlen, NULL, 0, path, "file is larger than %u MiB", FILE_MAX >> 20);
                goto out;
            }
            cap = cap == 0 ? 16384 : cap * 2 > FILE_MAX ? FILE_MAX + 1 : cap * 2;
            grown = realloc(buf, cap);
            if (grown == NULL) {
                r = -ENOMEM;
                fail_at(err, errlen, NULL, 0, path, "out of memory");
                goto out;
            }
            buf = grown;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f)) {
                r = errno != 0 ? -errno : -EIO;
                fail_at(err, errlen, NULL, 0, path, "cannot read: %s", strerror(-r));
                goto out;
            }
            break;
        }
    }
    r = wg_config_load_string(cfg, path, buf != NULL ? buf : "", len, err, errlen);
out:
    free(buf);
    if (f != NULL)
        fclose(f);
    return r;
}

/* ------------------------------------------------------------------------ */
/* Defaults, environment, flags.                                             */

int wg_config_init_defaults(struct wg_config *cfg)
{
    char host[256];
    int r;

    memset(cfg, 0, sizeof *cfg);
    cfg->role = WG_ROLE_ALL;
    r = wg_config_parse_addr("0.0.0.0:8080", &cfg->listen);
    if (r < 0)
        goto out;
    r = wg_config_parse_addr("127.0.0.1:8081", &cfg->admin_listen);
    if (r < 0)
        goto out;
    r = -ENOMEM;
    if (replace_str(&cfg->docker_host, "unix:///var/run/docker.sock") < 0)
        goto out;
    if (gethostname(host, sizeof host) < 0 || host[0] == '\0')
        snprintf(host, sizeof host, "local");
    host[sizeof host - 1] = '\0';
    if (replace_str(&cfg->docker_name, host) < 0)
        goto out;
    cfg->docker_tls.verify = true;
    cfg->max_concurrent_starts = 8;

    cfg->redis_private.enabled = true;
    if (replace_str(&cfg->redis_private.server, "redis-server") < 0)
        goto out;
    cfg->redis_private.appendonly = true;
    cfg->redis_private.start_timeout_ms = 5 * 1000;
    cfg->redis_private.stop_timeout_ms = 5 * 1000;

    if (replace_str(&cfg->sessions.image, "wakegate-demo:latest") < 0)
        goto out;
    cfg->sessions.port = 8080;
    cfg->sessions.wake_timeout_ms = 30 * 1000;
    cfg->sessions.idle.pause_after_ms = 0;
    cfg->sessions.idle.stop_after_ms = 20 * 60 * 1000;
    cfg->sessions.idle.activity_interval_ms = 1000;
    cfg->sessions.idle.reap_every_ms = 1000;
    cfg->sessions.idle.drain_ms = 2000;
    if (replace_str(&cfg->sessions.save.path, "/workspace") < 0)
        goto out;
    cfg->sessions.save.timeout_ms = 60 * 1000;
    cfg->sessions.save.on_failure = WG_SAVE_KEEP_AWAKE;
    cfg->sessions.save.before_pause = false;
    cfg->sessions.save.retry_backoff_ms = 10 * 1000;
    cfg->sessions.save.retry_max_ms = 10 * 60 * 1000;
    /* Those of orchestrator/probe.h (WG_PROBE_INTERVAL_MS, ..._CONNECT_TIMEOUT_MS). */
    cfg->sessions.readiness.interval_ms = 2;
    cfg->sessions.readiness.timeout_ms = 50;

    cfg->limits.request_line_max = 8 * 1024;
    cfg->limits.header_line_max = 8 * 1024;
    cfg->limits.head_max = 32 * 1024;
    cfg->limits.header_count_max = 100;
    cfg->limits.head_timeout_ms = 20 * 1000;
    cfg->limits.body_idle_ms = 30 * 1000;
    cfg->limits.send_idle_ms = 60 * 1000;
    cfg->limits.keepalive_idle_ms = 60 * 1000;
    cfg->limits.keepalive_requests_max = 10000;
    cfg->limits.body_max = 0;
    cfg->limits.connections_max = 20000;
    cfg->limits.buffer_high_water = 256 * 1024;
    cfg->limits.tunnel_idle_ms = 3600 * 1000;

    cfg->upstream.connect_timeout_ms = 5 * 1000;
    cfg->upstream.response_timeout_ms = 60 * 1000;
    cfg->upstream.keepalive_idle_ms = 60 * 1000;
    cfg->upstream.keepalive_max = 256;

    cfg->log_level = WG_LOG_INFO;
    cfg->log_format = WG_LOG_LOGFMT;
    cfg->access_log = true;
    cfg->shutdown_grace_ms = 10 * 1000;
    r = 0;
out:
    if (r < 0)
        wg_config_free(cfg);
    return r;
}

static const struct field env_fields[] = {
    {.key = "WAKEGATE_REDIS_URL", .kind = K_REDIS_URL, IN_CFG(redis_url)},
    {.key = "WAKEGATE_DOCKER_HOST", .kind = K_DOCKER_HOST, IN_CFG(docker_host)},
    {.key = "WAKEGATE_ADMIN_TOKEN", .kind = K_STR, IN_CFG(admin_token)},
    {.key = "WAKEGATE_LISTEN", .kind = K_ADDR, IN_CFG(listen)},
    {.key = "WAKEGATE_ADMIN_LISTEN", .kind = K_ADDR, IN_CFG(admin_listen)},
    {.key = "WAKEGATE_LOG_LEVEL", .kind = K_LEVEL, IN_CFG(log_level)},
    {.key = NULL},
};

int wg_config_apply_env(struct wg_config *cfg, char *(*getenv_fn)(const char *), char *err,
                        size_t errlen)
{
    char msg[WG_CONFIG_ERR_MAX], key[64];
    int r = 0;

    if (getenv_fn == NULL)
        getenv_fn = getenv;
    for (const struct field *f = env_fields; f->key != NULL; f++) {
        const char *s = getenv_fn(f->key);

        /* Compose files often pass "VAR=" for "not set". */
        if (s == NULL || s[0] == '\0')
            continue;
        r = set_scalar(f, cfg, s, msg, sizeof msg);
        if (r < 0) {
            snprintf(key, sizeof key, "environment %s", f->key);
            fail_at(err, errlen, NULL, 0, key, "%s", msg);
            goto out;
        }
        if (f->kind == K_DOCKER_HOST)
            cfg->docker_host_line = -1;
    }
out:
    return r;
}

int wg_config_apply_flags(struct wg_config *cfg, const struct wg_config_flags *flags, char *err,
                          size_t errlen)
{
    const struct {
        const char *name;
        const char *value;
        struct field f;
    } map[] = {
        {"role", flags->role, {.kind = K_ROLE, IN_CFG(role)}},
        {"log-level", flags->log_level, {.kind = K_LEVEL, IN_CFG(log_level)}},
        {"listen", flags->listen, {.kind = K_ADDR, IN_CFG(listen)}},
        {"admin-listen", flags->admin_listen, {.kind = K_ADDR, IN_CFG(admin_listen)}},
    };
    char msg[WG_CONFIG_ERR_MAX], key[64];
    int r = 0;

    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (map[i].value == NULL)
            continue;
        r = set_scalar(&map[i].f, cfg, map[i].value, msg, sizeof msg);
        if (r < 0) {
            snprintf(key, sizeof key, "flag --%s", map[i].name);
            fail_at(err, errlen, NULL, 0, key, "%s", msg);
            goto out;
        }
    }
out:
    return r;
}

/* ------------------------------------------------------------------------ */
/* Validation.                                                               */

static size_t count_session(const char *s)
{
    size_t n = 0;

    for (const char *p = s; p != NULL && (p = strstr(p, SESSION_TOKEN)) != NULL;
         p += strlen(SESSION_TOKEN))
        n++;
    return n;
}

/* Characters of RFC 9110 tokens, for header names. */
static bool is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* An error about routes[i], at the route's line when it came from a file. */
static int fail_route(const struct wg_config *cfg, size_t i, const char *sub, char *err,
                      size_t errlen, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int fail_route(const struct wg_config *cfg, size_t i, const char *sub, char *err,
                      size_t errlen, const char *fmt, ...)
{
    const struct wg_route_cfg *r = &cfg->routes[i];
    char msg[WG_CONFIG_ERR_MAX], key[96];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(key, sizeof key, "routes[%zu]%s%s", i, sub[0] != '\0' ? "." : "", sub);
    return fail_at(err, errlen, r->line > 0 ? cfg->path : NULL, r->line > 0 ? (size_t)r->line : 0,
                   key, "%s", msg);
}

static int check_host(const struct wg_config *cfg, size_t i, char *err, size_t errlen)
{
    const char *h = cfg->routes[i].host;
    const char *cap = strstr(h, SESSION_TOKEN);

    for (const char *p = h; *p != '\0'; p++) {
        if (cap != NULL && p == cap) {
            p += strlen(SESSION_TOKEN) - 1;
            continue;
        }
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '.' || *p == '_'))
            return fail_route(cfg, i, "match.host", err, errlen,
                              "invalid character '%c' in \"%s\" (a host name without port, "
                              "with at most one {session})",
                              *p, h);
    }
    return 0;
}

static int check_path(const struct wg_config *cfg, size_t i, char *err, size_t errlen)
{
    const char *pp = cfg->routes[i].path_prefix;
    const char *cap = strstr(pp, SESSION_TOKEN);

    if (pp[0] != '/')
        return fail_route(cfg, i, "match.path_prefix", err, errlen, "\"%s\" must start with /", pp);
    if (has_ctl_or_space(pp) || strpbrk(pp, "?#") != NULL)
        return fail_route(cfg, i, "match.path_prefix", err, errlen,
                          "\"%s\" must be a plain path (no spaces, ? or #)", pp);
    /* The router captures a whole segment, so a partial one would never match as written. */
    if (cap != NULL && (cap[-1] != '/' ||
                        (cap[strlen(SESSION_TOKEN)] != '/' && cap[strlen(SESSION_TOKEN)] != '\0')))
        return fail_route(cfg, i, "match.path_prefix", err, errlen,
                          "{session} must be a whole path segment, as in /s/{session}/");
    return 0;
}

static int check_header(const struct wg_config *cfg, size_t i, char *err, size_t errlen)
{
    const struct wg_route_cfg *r = &cfg->routes[i];

    if (r->header_name == NULL)
        return fail_route(cfg, i, "match.header", err, errlen, "name is required");
    for (const char *p = r->header_name; *p != '\0'; p++)
        if (!is_tchar(*p))
            return fail_route(cfg, i, "match.header.name", err, errlen,
                              "\"%s\" is not a valid header name", r->header_name);
    if (r->header_value != NULL) {
        for (const char *p = r->header_value; *p != '\0'; p++)
            if (((unsigned char)*p < ' ' && *p != '\t') || *p == 0x7f)
                return fail_route(cfg, i, "match.header.value", err, errlen,
                                  "contains a control character");
        if (strstr(r->header_value, SESSION_TOKEN) != NULL &&
            strcmp(r->header_value, SESSION_TOKEN) != 0)
            return fail_route(cfg, i, "match.header.value", err, errlen,
                              "to capture, the value must be exactly {session}");
    }
    return 0;
}

static int check_route(const struct wg_config *cfg, size_t i, char *err, size_t errlen)
{
    const struct wg_route_cfg *r = &cfg->routes[i];
    size_t captures;
    int rc;

    if (r->host == NULL && r->path_prefix == NULL && r->header_name == NULL &&
        r->header_value == NULL)
        return fail_route(cfg, i, "", err, errlen,
                          "a route needs at least one match condition (match.host, "
                          "match.path_prefix or match.header)");
    captures =
        count_session(r->host) + count_session(r->path_prefix) + count_session(r->header_value);
    if (captures > 1)
        return fail_route(cfg, i, "", err, errlen,
                          "{session} appears %zu times; a route captures it once", captures);
    if (r->host != NULL && (rc = check_host(cfg, i, err, errlen)) < 0)
        return rc;
    if (r->path_prefix != NULL && (rc = check_path(cfg, i, err, errlen)) < 0)
        return rc;
    if ((r->header_name != NULL || r->header_value != NULL) &&
        (rc = check_header(cfg, i, err, errlen)) < 0)
        return rc;
    if (r->strip_prefix && r->path_prefix == NULL)
        return fail_route(cfg, i, "strip_prefix", err, errlen, "requires match.path_prefix");
    if (r->port > 65535)
        return fail_route(cfg, i, "port", err, errlen, "%u is out of range (1 to 65535)", r->port);
    if (r->has_upstream) {
        const struct sockaddr *sa = (const struct sockaddr *)&r->upstream.sa;
        unsigned port = 0;

        if (sa->sa_family == AF_INET)
            port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
        else if (sa->sa_family == AF_INET6)
            port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
        if (r->upstream.salen == 0 || port == 0)
            return fail_route(cfg, i, "upstream", err, errlen,
                              "\"%s\" needs an address and a port other than 0",
                              r->upstream.text != NULL ? r->upstream.text : "");
        if (captures > 0)
            return fail_route(cfg, i, "", err, errlen,
                              "a route with upstream goes to one fixed address and cannot "
                              "capture {session}");
        if (r->port != 0)
            return fail_route(cfg, i, "port", err, errlen,
                              "applies to session routes only (this route has upstream)");
    } else if (captures == 0) {
        return fail_route(cfg, i, "", err, errlen,
                          "a session route (no upstream) must capture {session} in "
                          "match.host, match.path_prefix or match.header.value");
    }
    return 0;
}

static int read_token_file(struct wg_config *cfg, char *err, size_t errlen)
{
    const char *file = cfg->admin_token_file;
    const char *where = cfg->admin_token_file_line > 0 ? cfg->path : NULL;
    size_t line = cfg->admin_token_file_line > 0 ? (size_t)cfg->admin_token_file_line : 0;
    char buf[TOKEN_FILE_MAX + 1];
    struct stat st;
    size_t len = 0;
    int fd = -1, r = 0;

    /* O_NONBLOCK so a FIFO put there by mistake cannot hang startup. */
    fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0 || fstat(fd, &st) < 0) {
        r = fail_at(err, errlen, where, line, "admin.token_file", "cannot read \"%s\": %s", file,
                    strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        r = fail_at(err, errlen, where, line, "admin.token_file",
                    "cannot read \"%s\": not a regular file", file);
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof buf - len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = fail_at(err, errlen, where, line, "admin.token_file", "cannot read \"%s\": %s",
                        file, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len == sizeof buf) {
            r = fail_at(err, errlen, where, line, "admin.token_file",
                        "\"%s\" is larger than %d bytes; it should hold only the token", file,
                        TOKEN_FILE_MAX);
            goto out;
        }
    }
    /* Editors and "echo" end the file with a newline that is not part of the token. */
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    buf[len] = '\0';
    if (len == 0 || strlen(buf) != len || has_ctl_or_space(buf)) {
        r = fail_at(err, errlen, where, line, "admin.token_file",
                    "\"%s\" must hold one token: no spaces, control characters or empty file",
                    file);
        goto out;
    }
    r = replace_str(&cfg->admin_token, buf);
out:
    if (fd >= 0)
        close(fd);
    /* The token must not linger on the stack. */
    explicit_bzero(buf, sizeof buf);
    return r;
}

/* ------------------------------------------------------------------------ */
/* The private redis-server (redis.private).                                 */

/* An error about a redis.private key, at its line when the file set it. */
static int fail_private(const struct wg_config *cfg, const char *key, int line, char *err,
                        size_t errlen, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int fail_private(const struct wg_config *cfg, const char *key, int line, char *err,
                        size_t errlen, const char *fmt, ...)
{
    char msg[WG_CONFIG_ERR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fail_at(err, errlen, line > 0 ? cfg->path : NULL, line > 0 ? (size_t)line : 0, key, "%s",
                   msg);
}

/* dir + "/" + name (or name alone when dir is NULL) in a new string. */
static char *join_path(const char *dir, size_t dirlen, const char *name)
{
    size_t n = dirlen + 1 + strlen(name) + 1;
    char *s = malloc(n);

    if (s != NULL)
        snprintf(s, n, "%.*s/%s", (int)dirlen, dir, name);
    return s;
}

/* The default redis.private.dir: systemd's StateDirectory=, then
 * /var/lib/wakegate/redis for root, then the XDG state directory, then a
 * directory of our own under the temporary directory. */
static int default_private_dir(char *buf, size_t len)
{
    const char *s;
    int n;

    if ((s = getenv("STATE_DIRECTORY")) != NULL && s[0] == '/')
        n = snprintf(buf, len, "%.*s/redis", (int)strcspn(s, ":"), s);
    else if (geteuid() == 0)
        n = snprintf(buf, len, "/var/lib/wakegate/redis");
    else if ((s = getenv("XDG_STATE_HOME")) != NULL && s[0] == '/')
        n = snprintf(buf, len, "%s/wakegate/redis", s);
    else if ((s = getenv("HOME")) != NULL && s[0] == '/' && s[1] != '\0')
        n = snprintf(buf, len, "%s/.local/state/wakegate/redis", s);
    else if ((s = getenv("TMPDIR")) != NULL && s[0] == '/')
        n = snprintf(buf, len, "%s/wakegate-%u/redis", s, (unsigned)geteuid());
    else
        n = snprintf(buf, len, "/tmp/wakegate-%u/redis", (unsigned)geteuid());
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Without redis.url, points redis_url at the private server's socket. */
static int resolve_redis_private(struct wg_config *cfg, char *err, size_t errlen)
{
    struct wg_redis_private_cfg *p = &cfg->redis_private;
    const char *key = "redis.private.dir";
    char dir[PATH_MAX], cwd[PATH_MAX];
    char *sock = NULL, *url = NULL;
    size_t n;
    int r = 0;

    /* A second validation of the same configuration starts over. */
    if (p->active && cfg->redis_url != NULL && p->socket_path != NULL &&
        strncmp(cfg->redis_url, "unix://", 7) == 0 &&
        strcmp(cfg->redis_url + 7, p->socket_path) == 0) {
        free(cfg->redis_url);
        cfg->redis_url = NULL;
    }
    p->active = false;
    free(p->socket_path);
    p->socket_path = NULL;
    if (cfg->redis_url != NULL || !p->enabled)
        return 0;

    if (p->dir == NULL) {
        if (default_private_dir(dir, sizeof dir) < 0) {
            r = fail_private(cfg, key, 0, err, errlen,
                             "the default directory is too long; set redis.private.dir");
            goto out;
        }
    } else if (p->dir[0] == '/') {
        snprintf(dir, sizeof dir, "%s", p->dir);
    } else if (getcwd(cwd, sizeof cwd) == NULL ||
               (size_t)snprintf(dir, sizeof dir, "%s/%s", cwd, p->dir) >= sizeof dir) {
        r = fail_private(cfg, key, p->dir_line, err, errlen, "cannot make \"%s\" absolute", p->dir);
        goto out;
    }
    n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        dir[--n] = '\0';
    /* The path goes into a unix:// URL and a generated redis.conf. */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)dir[i];

        if (c <= ' ' || c == 0x7f || strchr("\"\\?#'", c) != NULL) {
            r = fail_private(cfg, key, p->dir_line, err, errlen,
                             "\"%s\" must not contain spaces, control characters, quotes, "
                             "backslashes, ? or #",
                             dir);
            goto out;
        }
    }
    if (strcmp(dir, "/") == 0) {
        r = fail_private(cfg, key, p->dir_line, err, errlen,
                         "must be a directory of its own, not /");
        goto out;
    }
    if (n + strlen(REDIS_SOCKET_SUFFIX) >= SUN_PATH_MAX) {
        r = fail_private(cfg, key, p->dir_line, err, errlen,
                         "the socket \"%s%s\" would be longer than the %d bytes a unix socket "
                         "path may have; choose a shorter directory",
                         dir, REDIS_SOCKET_SUFFIX, SUN_PATH_MAX - 1);
        goto out;
    }
    r = -ENOMEM;
    sock = join_path(dir, n, REDIS_SOCKET_SUFFIX + 1);
    if (sock == NULL || (url = malloc(strlen(sock) + 8)) == NULL || replace_str(&p->dir, dir) < 0)
        goto out;
    snprintf(url, strlen(sock) + 8, "unix://%s", sock);
    p->socket_path = sock;
    cfg->redis_url = url;
    p->active = true;
    sock = url = NULL;
    r = 0;
out:
    free(sock);
    free(url);
    if (r == -ENOMEM)
        fail_at(err, errlen, NULL, 0, "configuration", "out of memory");
    return r;
}

int wg_config_validate(struct wg_config *cfg, char *err, size_t errlen)
{
    int r = 0;

    for (size_t i = 0; i < cfg->routes_len; i++) {
        r = check_route(cfg, i, err, errlen);
        if (r < 0)
            goto out;
    }
    if (cfg->listen.salen == 0) {
        r = fail_at(err, errlen, NULL, 0, "listen", "not set");
        goto out;
    }
    if (cfg->admin_listen.salen == 0) {
        r = fail_at(err, errlen, NULL, 0, "admin.listen", "not set");
        goto out;
    }
    if (cfg->docker_tls.enabled && cfg->docker_host != NULL &&
        strncmp(cfg->docker_host, "unix://", 7) == 0) {
        r = fail_at(err, errlen, cfg->docker_tls.line > 0 ? cfg->path : NULL,
                    cfg->docker_tls.line > 0 ? (size_t)cfg->docker_tls.line : 0, "docker.tls",
                    "needs a tcp:// docker.host (\"%s\" is a unix socket, which takes no TLS)",
                    cfg->docker_host);
        goto out;
    }
    /* The environment's token wins over the file's token_file; read the
     * file only when nothing set the token itself. */
    if (cfg->admin_token == NULL && cfg->admin_token_file != NULL) {
        r = read_token_file(cfg, err, errlen);
        if (r < 0)
            goto out;
    }
    r = resolve_redis_private(cfg, err, errlen);
out:
    return r;
}

int wg_config_check_docker_host(const struct wg_config *cfg, char *err, size_t errlen)
{
    char msg[WG_CONFIG_ERR_MAX];
    int r;

    msg[0] = '\0';
    r = wg_docker_host_check(cfg->docker_host, cfg->docker_tls.enabled, msg, sizeof msg);
    if (r == 0)
        return 0;
    if (cfg->docker_host_line > 0)
        fail_at(err, errlen, cfg->path, (size_t)cfg->docker_host_line, "docker.host",
                "invalid Docker host \"%s\": %s", cfg->docker_host, msg);
    else
        fail_at(err, errlen, NULL, 0,
                cfg->docker_host_line < 0 ? "environment WAKEGATE_DOCKER_HOST" : "docker.host",
                "invalid Docker host \"%s\": %s", cfg->docker_host, msg);
    return r < 0 ? r : -EINVAL;
}

int wg_config_load(struct wg_config *cfg, const struct wg_config_flags *flags, char *err,
                   size_t errlen)
{
    static const struct wg_config_flags no_flags;
    const char *path;
    int r;

    if (flags == NULL)
        flags = &no_flags;
    r = wg_config_init_defaults(cfg);
    if (r < 0) {
        fail_at(err, errlen, NULL, 0, "configuration", "out of memory");
        goto out;
    }
    path = flags->config_path;
    if (path == NULL || path[0] == '\0')
        path = getenv("WAKEGATE_CONFIG");
    if (path != NULL && path[0] != '\0') {
        r = wg_config_load_file(cfg, path, err, errlen);
        if (r < 0)
            goto out;
    }
    r = wg_config_apply_env(cfg, NULL, err, errlen);
    if (r < 0)
        goto out;
    r = wg_config_apply_flags(cfg, flags, err, errlen);
    if (r < 0)
        goto out;
    r = wg_config_validate(cfg, err, errlen);
    if (r < 0)
        goto out;
    r = wg_config_check_docker_host(cfg, err, errlen);
out:
    if (r < 0)
        wg_config_free(cfg);
    return r;
}
