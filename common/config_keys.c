/* common/config_keys.c - the keys of the file: one table of struct field
 * per mapping, the setters every value goes through (from the file, the
 * environment or a flag), and the checks that span the keys of one
 * mapping (run by the walk once the mapping is read). */
#include "common/config.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "common/config_int.h"
#include "common/docker_host.h"
#include "common/redis_url.h"
#include "common/str.h"

/* Consumers add durations to a monotonic clock in ms; a year keeps that far
 * from overflow while allowing any sensible timeout. */
#define DURATION_MAX_MS (365ull * 24 * 3600 * 1000)
/* Head and buffer limits feed size_t arithmetic in the proxy. */
#define SIZE_LIMIT_MAX (1ull << 30)
/* A readiness request path goes into one request line; real ones are short. */
#define HTTP_PATH_MAX 1024
/* The probe takes 32-bit milliseconds; a readiness attempt or pause of more
 * than a minute is a mistake, not a tuning. */
#define PROBE_MS_MAX (60u * 1000)
/* Starting or stopping the private redis-server for longer than an hour is a
 * mistake, not a tuning. */
#define REDIS_PRIVATE_TIMEOUT_MAX_MS (3600u * 1000)

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

static int set_str(char **dst, const char *s, char *msg, size_t msglen)
{
    if (s != NULL && s[0] == '\0')
        return wg_errf(msg, msglen, "must not be empty");
    if (config_replace_str(dst, s) < 0) {
        wg_errf(msg, msglen, "out of memory");
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
        wg_errf(msg, msglen, "out of memory");
        return -ENOMEM;
    }
    if (r < 0)
        return wg_errf(msg, msglen,
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
        wg_errf(msg, msglen, "out of memory");
        return r;
    }
    if (r < 0)
        return wg_errf(msg, msglen,
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
        return wg_errf(msg, msglen, "invalid Docker host \"%s\": %s", s, why);
    return set_str(dst, s, msg, msglen);
}

static int set_http_path(char **dst, const char *s, char *msg, size_t msglen)
{
    size_t n;

    if (s == NULL)
        return set_str(dst, NULL, msg, msglen);
    n = strlen(s);
    if (s[0] != '/' || n > HTTP_PATH_MAX)
        return wg_errf(msg, msglen,
                       "invalid request path \"%s\" (use a path starting with /, like /healthz, "
                       "of at most %u bytes)",
                       s, HTTP_PATH_MAX);
    /* It is sent as is in a request line: visible ASCII only, no fragment. */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f || s[i] == '#')
            return wg_errf(msg, msglen,
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
        return wg_errf(msg, msglen, "invalid duration \"%s\" (use 250ms, 30s, 20m or 1h)", s);
    if (v < f->min && f->min <= 1)
        return wg_errf(msg, msglen, "must be more than 0");
    if (v < f->min) {
        fmt_duration(f->min, max, sizeof max);
        return wg_errf(msg, msglen, "%s is shorter than the minimum of %s", s, max);
    }
    if (v > f->max) {
        fmt_duration(f->max, max, sizeof max);
        return wg_errf(msg, msglen, "%s is longer than the maximum of %s", s, max);
    }
    store_number(dst, sizeof(uint64_t), v);
    return 0;
}

static int set_size(const struct field *f, void *dst, const char *s, char *msg, size_t msglen)
{
    char lo[32], hi[32];
    uint64_t v;

    if (wg_config_parse_size(s, &v) < 0)
        return wg_errf(msg, msglen, "invalid size \"%s\" (use 512, 64KiB, 1MiB or 1GiB)", s);
    if (v < f->min || v > f->max) {
        fmt_size(f->min, lo, sizeof lo);
        fmt_size(f->max, hi, sizeof hi);
        return wg_errf(msg, msglen, "%s is out of range (%s to %s)", s, lo, hi);
    }
    store_number(dst, f->size, v);
    return 0;
}

static int set_uint(const struct field *f, void *dst, const char *s, char *msg, size_t msglen)
{
    uint64_t v;

    if (config_parse_digits(s, strlen(s), &v) < 0)
        return wg_errf(msg, msglen, "invalid number \"%s\"", s);
    if (v < f->min || v > f->max)
        return wg_errf(msg, msglen, "%s is out of range (%llu to %llu)", s,
                       (unsigned long long)f->min, (unsigned long long)f->max);
    store_number(dst, f->size, v);
    return 0;
}

static int set_cpus(void *dst, const char *s, char *msg, size_t msglen)
{
    uint64_t v;

    if (wg_config_parse_cpus(s, &v) < 0)
        return wg_errf(msg, msglen, "invalid CPU count \"%s\" (use 1, 0.5 or 2.25)", s);
    /* Below a hundredth of a CPU a session cannot even start; more than a
     * host has is no limit. */
    if (v < 10000000ull || v > 1024ull * 1000000000ull)
        return wg_errf(msg, msglen, "%s is out of range (0.01 to 1024)", s);
    store_number(dst, sizeof(uint64_t), v);
    return 0;
}

/* Sets one scalar field of base from text s (NULL only for nullable fields).
 * On failure writes the problem, without a location, to msg. */
int config_set_scalar(const struct field *f, void *base, const char *s, char *msg, size_t msglen)
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
            return wg_errf(msg, msglen, "invalid boolean \"%s\" (use true or false)", s);
        *(bool *)dst = v != 0;
        return 0;
    case K_WORKERS:
        if (strcmp(s, "auto") == 0) {
            *(unsigned *)dst = 0;
            return 0;
        }
        if (set_uint(f, dst, s, msg, msglen) < 0)
            return wg_errf(msg, msglen, "invalid worker count \"%s\" (use auto or 1 to %d)", s,
                           WG_WORKERS_MAX);
        return 0;
    case K_ROLE:
        if (lookup(roles, s, &v) < 0)
            return wg_errf(msg, msglen, "unknown role \"%s\" (use all, proxy or orchestrator)", s);
        *(enum wg_role *)dst = (enum wg_role)v;
        return 0;
    case K_LEVEL:
        if (lookup(levels, s, &v) < 0)
            return wg_errf(msg, msglen, "unknown log level \"%s\" (use debug, info, warn or error)",
                           s);
        *(enum wg_log_level *)dst = (enum wg_log_level)v;
        return 0;
    case K_FORMAT:
        if (lookup(formats, s, &v) < 0)
            return wg_errf(msg, msglen, "unknown log format \"%s\" (use logfmt or json)", s);
        *(enum wg_log_format *)dst = (enum wg_log_format)v;
        return 0;
    case K_ON_FAILURE:
        if (lookup(on_failures, s, &v) < 0)
            return wg_errf(msg, msglen, "unknown value \"%s\" (use keep_awake or stop)", s);
        *(enum wg_save_failure *)dst = (enum wg_save_failure)v;
        return 0;
    case K_REDIS_URL:
        return set_redis_url(dst, s, msg, msglen);
    case K_DOCKER_HOST:
        return set_docker_host(dst, s, msg, msglen);
    case K_HTTP_PATH:
        return set_http_path(dst, s, msg, msglen);
    case K_CPUS:
        return set_cpus(dst, s, msg, msglen);
    case K_MAIN_PORT:
        return config_set_main_port(base, s, msg, msglen);
    default:
        assert(!"not a scalar kind");
        return -EINVAL;
    }
}

static bool has_value(struct walk *w, yaml_node_t *map, const char *key)
{
    yaml_node_t *n = config_walk_get(w, map, key);

    return n != NULL && !config_walk_null(n);
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
        old = config_walk_push(w, ".token_file");
        r = config_walk_fail(w, config_walk_get(w, map, "token_file"),
                             "set admin.token or admin.token_file, not both");
        config_walk_pop(w, old);
        return r;
    }
    if (token_file) {
        yaml_node_t *n = config_walk_get(w, map, "token_file");

        free(cfg->admin_token);
        cfg->admin_token = NULL;
        cfg->admin_token_file_line =
            n->start_mark.line + 1 > INT_MAX ? 0 : (int)n->start_mark.line + 1;
    } else if (token) {
        free(cfg->admin_token_file);
        cfg->admin_token_file = NULL;
        cfg->admin_token_file_line = 0;
    }
    /* The read-only token comes only from a file (or the environment), so
     * there is no inline value to drop; its line names it in errors. */
    if (has_value(w, map, "read_token_file")) {
        yaml_node_t *n = config_walk_get(w, map, "read_token_file");

        cfg->admin_read_token_file_line =
            n->start_mark.line + 1 > INT_MAX ? 0 : (int)n->start_mark.line + 1;
    } else if (config_walk_get(w, map, "read_token_file") != NULL) {
        cfg->admin_read_token_file_line = 0;
    }
    return 0;
}

/* An absolute path of plain components: the orchestrator opens it one
 * component at a time, never following a link, under a container's root. */
static bool busy_path_valid(const char *p)
{
    size_t len = strlen(p);

    if (len < 2 || len > 255 || p[0] != '/' || p[len - 1] == '/')
        return false;
    for (const char *c = p + 1; *c;) {
        const char *e = strchr(c, '/');
        size_t n = e ? (size_t)(e - c) : strlen(c);
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return false;
        c += n + (e ? 1 : 0);
    }
    return true;
}

static int check_idle(struct walk *w, yaml_node_t *map, void *base)
{
    const struct wg_idle_cfg *idle = base;

    /* A pause tier that starts after the stop tier would never run. */
    if (idle->pause_after_ms != 0 && idle->stop_after_ms != 0 &&
        idle->pause_after_ms >= idle->stop_after_ms)
        return config_walk_fail(w, map, "pause_after must be shorter than stop_after (or 0s)");
    /* Touches written just before the drain began must land before the save. */
    if (idle->drain_ms < idle->activity_interval_ms)
        return config_walk_fail(w, map, "drain must be at least activity_interval");
    /* Walked one component at a time inside the container's root. */
    if (idle->busy_file && !busy_path_valid(idle->busy_file))
        return config_walk_fail(w, map,
                                "busy_file must be an absolute path of at most 255 bytes, without "
                                "\".\", \"..\" or empty components (or null)");
    /* Shorter, the sample is mostly noise and the cost per second grows. */
    if (idle->cpu_interval_ms != 0 && idle->cpu_interval_ms < 100)
        return config_walk_fail(w, map, "cpu_interval must be 0s (off) or at least 100ms");
    return 0;
}

static int check_save(struct walk *w, yaml_node_t *map, void *base)
{
    const struct wg_save_cfg *save = base;

    if (save->retry_max_ms < save->retry_backoff_ms)
        return config_walk_fail(w, map, "retry_max must be at least retry_backoff");
    return 0;
}

int config_read_small(const char *path, size_t max, struct stat *st, char **ret, size_t *ret_len)
{
    char *buf = NULL;
    size_t len = 0;
    int fd, r;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0 || fstat(fd, st) < 0) {
        r = -errno;
        goto out;
    }
    if (!S_ISREG(st->st_mode)) {
        r = -EINVAL;
        goto out;
    }
    buf = malloc(max + 1);
    if (buf == NULL) {
        r = -ENOMEM;
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, buf + len, max + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > max) {
            r = -EFBIG;
            goto out;
        }
    }
    buf[len] = '\0';
    *ret = buf;
    *ret_len = len;
    buf = NULL;
    r = 0;
out:
    if (buf != NULL) {
        explicit_bzero(buf, max + 1);
        free(buf);
    }
    if (fd >= 0)
        close(fd);
    return r;
}

int config_check_readable(const char *path, char *msg, size_t msglen)
{
    struct stat st;
    int fd, r = 0;

    /* O_NONBLOCK so a FIFO put there by mistake cannot hang startup. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0 || fstat(fd, &st) < 0)
        r = wg_errf(msg, msglen, "cannot read \"%s\": %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        r = wg_errf(msg, msglen, "cannot read \"%s\": not a regular file", path);
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

    tls->enabled = !config_walk_null(map);
    tls->line = map->start_mark.line + 1 > INT_MAX ? 0 : (int)map->start_mark.line + 1;
    if ((tls->cert != NULL) != (tls->key != NULL)) {
        const char *given = tls->cert != NULL ? "cert" : "key";

        old = config_walk_push(w, ".%s", given);
        r = config_walk_fail(
            w, config_walk_get(w, map, given),
            "set docker.tls.cert and docker.tls.key together (a client certificate "
            "goes with its key)");
        config_walk_pop(w, old);
        return r;
    }
    for (size_t i = 0; i < sizeof files / sizeof files[0] && r == 0; i++) {
        yaml_node_t *n = config_walk_get(w, map, files[i]);

        if (n == NULL || config_walk_null(n))
            continue;
        old = config_walk_push(w, ".%s", files[i]);
        if (config_check_readable((const char *)n->data.scalar.value, msg, sizeof msg) < 0)
            r = config_walk_fail(w, n, "%s", msg);
        config_walk_pop(w, old);
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

    if ((n = config_walk_get(w, map, "server")) != NULL)
        p->server_line = n->start_mark.line + 1 > INT_MAX ? 0 : (int)n->start_mark.line + 1;
    if ((n = config_walk_get(w, map, "dir")) != NULL)
        p->dir_line = n->start_mark.line + 1 > INT_MAX ? 0 : (int)n->start_mark.line + 1;
    return 0;
}

/* Remembers docker.host's line for wg_config_check_docker_host(). */
static int check_docker(struct walk *w, yaml_node_t *map, void *base)
{
    struct wg_config *cfg = base;
    yaml_node_t *n = config_walk_get(w, map, "host");

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
    {.key = "read_token_file", .kind = K_STR, IN_CFG(admin_read_token_file), .nullable = true},
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
    F_TIME("outage_grace", redis_outage_grace_ms, 0),
    F_TIME("state_timeout", redis_state_timeout_ms, 4),
    {.key = "sentinel",
     .kind = K_MAP,
     .sub = config_sentinel_fields,
     .check = config_sentinel_check_map},
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
    F_COUNT("max_sessions", max_sessions, 0, 1000000),
    {.key = "labels", .kind = K_LABELMAP, IN_CFG(docker_labels_json), .nullable = true},
    {.key = "heartbeat_ttl",
     .kind = K_DURATION,
     IN_CFG(heartbeat_ttl_ms),
     .min = 1000,
     .max = 600000},
    {.key = NULL},
};

/* A member of a sub-struct of struct wg_sessions_cfg, for the idle, save
 * and readiness mappings (rebased to it). */
#define IN(type, m) .off = offsetof(type, m), .size = sizeof(((type *)0)->m)
#define F_STIME(k, type, m, lo)                                                                    \
    {                                                                                              \
        .key = k, .kind = K_DURATION, IN(type, m), .min = lo, .max = DURATION_MAX_MS               \
    }

static const struct field idle_fields[] = {
    F_STIME("pause_after", struct wg_idle_cfg, pause_after_ms, 0),
    F_STIME("stop_after", struct wg_idle_cfg, stop_after_ms, 0),
    F_STIME("activity_interval", struct wg_idle_cfg, activity_interval_ms, 10),
    F_STIME("reap_every", struct wg_idle_cfg, reap_every_ms, 10),
    F_STIME("drain", struct wg_idle_cfg, drain_ms, 0),
    F_STIME("stream_after", struct wg_idle_cfg, stream_after_ms, 0),
    F_STIME("stream_max", struct wg_idle_cfg, stream_max_ms, 0),
    {.key = "stream_heartbeat",
     .kind = K_SIZE,
     IN(struct wg_idle_cfg, stream_heartbeat),
     .min = 0,
     .max = 65536},
    F_STIME("cpu_interval", struct wg_idle_cfg, cpu_interval_ms, 0),
    {.key = "cpu_threshold", .kind = K_CPUS, IN(struct wg_idle_cfg, cpu_threshold_nano)},
    {.key = "cpu_stats_concurrency",
     .kind = K_UINT,
     IN(struct wg_idle_cfg, cpu_stats_concurrency),
     .min = 1,
     .max = 256},
    {.key = "cpu_cgroup_files", .kind = K_BOOL, IN(struct wg_idle_cfg, cpu_cgroup_files)},
    {.key = "busy_file", .kind = K_STR, IN(struct wg_idle_cfg, busy_file), .nullable = true},
    {.key = NULL},
};

static const struct field save_fields[] = {
    {.key = "command",
     .kind = K_COMMAND,
     IN(struct wg_save_cfg, command),
     .off_len = offsetof(struct wg_save_cfg, command_len),
     .nullable = true},
    {.key = "path", .kind = K_STR, IN(struct wg_save_cfg, path)},
    F_STIME("timeout", struct wg_save_cfg, timeout_ms, 1),
    {.key = "on_failure", .kind = K_ON_FAILURE, IN(struct wg_save_cfg, on_failure)},
    {.key = "before_pause", .kind = K_BOOL, IN(struct wg_save_cfg, before_pause)},
    F_STIME("retry_backoff", struct wg_save_cfg, retry_backoff_ms, 1),
    F_STIME("retry_max", struct wg_save_cfg, retry_max_ms, 1),
    {.key = NULL},
};

static const struct field readiness_fields[] = {
    {.key = "http_path",
     .kind = K_HTTP_PATH,
     IN(struct wg_readiness_cfg, http_path),
     .nullable = true},
    {.key = "interval",
     .kind = K_DURATION,
     IN(struct wg_readiness_cfg, interval_ms),
     .min = 1,
     .max = PROBE_MS_MAX},
    {.key = "timeout",
     .kind = K_DURATION,
     IN(struct wg_readiness_cfg, timeout_ms),
     .min = 1,
     .max = PROBE_MS_MAX},
    {.key = NULL},
};

static const struct field binds_fields[] = {
    {.key = "allow", .kind = K_STRLIST, IN_SESS(binds_allow), LEN_IN_SESS(binds_allow_len)},
    {.key = NULL},
};

int config_check_sessions(struct walk *w, yaml_node_t *map, void *base)
{
    struct wg_sandbox_cfg *sb = &((struct wg_sessions_cfg *)base)->sandbox;
    int r = config_check_sandbox(w, map, sb);

    if (r == 0)
        r = config_check_network(w, map, sb);
    if (r == 0)
        r = config_check_template_access(w, map, base);
    if (r == 0)
        r = config_check_waking_page(w, map, base);
    if (r == 0)
        r = config_check_ports(w, map, base);
    return r < 0 ? r : config_check_binds_allow(w, map, base);
}

const struct field config_sessions_fields[] = {
    {.key = "image", .kind = K_STR, IN_SESS(image)},
    {.key = "images", .kind = K_STRLIST, IN_SESS(images), LEN_IN_SESS(images_len)},
    {.key = "cmd", .kind = K_COMMAND, IN_SESS(cmd), LEN_IN_SESS(cmd_len), .nullable = true},
    {.key = "env", .kind = K_STRLIST, IN_SESS(env), LEN_IN_SESS(env_len)},
    {.key = "port", .kind = K_MAIN_PORT, IN_SESS(port)},
    {.key = "ports", .kind = K_PORTS, IN_SESS(ports), LEN_IN_SESS(ports_len)},
    {.key = "wake_timeout",
     .kind = K_DURATION,
     IN_SESS(wake_timeout_ms),
     .min = 1,
     .max = DURATION_MAX_MS},
    {.key = "upstream_recheck",
     .kind = K_DURATION,
     IN_SESS(upstream_recheck_ms),
     .min = 0,
     .max = DURATION_MAX_MS},
    {.key = "idle",
     .kind = K_MAP,
     .sub = idle_fields,
     .check = check_idle,
     .rebase = offsetof(struct wg_sessions_cfg, idle)},
    {.key = "save",
     .kind = K_MAP,
     .sub = save_fields,
     .check = check_save,
     .rebase = offsetof(struct wg_sessions_cfg, save)},
    {.key = "readiness",
     .kind = K_MAP,
     .sub = readiness_fields,
     .rebase = offsetof(struct wg_sessions_cfg, readiness)},
    {.key = "limits", .kind = K_MAP, .sub = config_sandbox_limits_fields},
    {.key = "limits_max", .kind = K_MAP, .sub = config_sandbox_limits_max_fields},
    {.key = "capabilities", .kind = K_MAP, .sub = config_sandbox_caps_fields},
    {.key = "read_only_root", .kind = K_BOOL, IN_SESS(sandbox.read_only_root)},
    {.key = "user", .kind = K_STR, IN_SESS(sandbox.user), .nullable = true},
    {.key = "runtime", .kind = K_STR, IN_SESS(sandbox.runtime), .nullable = true},
    {.key = "network", .kind = K_MAP, .sub = config_network_fields},
    {.key = "binds", .kind = K_MAP, .sub = binds_fields},
    {.key = "overridable", .kind = K_OVERRIDES, IN_SESS(overridable)},
    {.key = "wake_on", .kind = K_WAKE_ON, IN_SESS(wake_on)},
    {.key = "page_after",
     .kind = K_DURATION,
     IN_SESS(page_after_ms),
     .min = 0,
     .max = DURATION_MAX_MS},
    {.key = "waking_page", .kind = K_STR, IN_SESS(waking_page), .nullable = true},
    {.key = "access", .kind = K_STR, IN_SESS(access), .nullable = true},
    {.key = "placement",
     .kind = K_MAP,
     .sub = config_placement_fields,
     .rebase = offsetof(struct wg_sessions_cfg, placement)},
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
    F_SIZE("buffer_high_water", limits.buffer_high_water, WG_BUFFER_HIGH_WATER_MIN, SIZE_LIMIT_MAX),
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

static const struct field http2_fields[] = {
    {.key = "enabled", .kind = K_BOOL, IN_CFG(http2.enabled)},
    F_COUNT("max_concurrent_streams", http2.max_concurrent_streams, 1, 10000),
    F_COUNT("reset_burst", http2.reset_burst, 1, 1000000),
    F_COUNT("reset_rate", http2.reset_rate, 1, 1000000),
    F_COUNT("control_burst", http2.control_burst, 1, 1000000),
    F_COUNT("control_rate", http2.control_rate, 1, 1000000),
    {.key = NULL},
};

static const struct field log_fields[] = {
    {.key = "level", .kind = K_LEVEL, IN_CFG(log_level)},
    {.key = "format", .kind = K_FORMAT, IN_CFG(log_format)},
    {.key = "access", .kind = K_BOOL, IN_CFG(access_log)},
    {.key = NULL},
};

const struct field config_top_fields[] = {
    {.key = "listen", .kind = K_ADDR, IN_CFG(listen)},
    {.key = "role", .kind = K_ROLE, IN_CFG(role)},
    {.key = "admin", .kind = K_MAP, .sub = admin_fields, .check = check_admin},
    {.key = "redis", .kind = K_MAP, .sub = redis_fields, .check = config_sentinel_check_redis},
    {.key = "docker", .kind = K_MAP, .sub = docker_fields, .check = check_docker},
    {.key = "sessions",
     .kind = K_MAP,
     .sub = config_sessions_fields,
     .check = config_check_sessions,
     .rebase = offsetof(struct wg_config, sessions)},
    {.key = "templates", .kind = K_TEMPLATES, IN_CFG(templates), LEN_IN_CFG(templates_len)},
    F_LIST("routes", K_ROUTES, routes),
    {.key = "access", .kind = K_MAP, .sub = config_access_fields, .check = config_access_check_map},
    {.key = "tls", .kind = K_MAP, .sub = config_tls_fields, .check = config_tls_check_map},
    {.key = "non_waking", .kind = K_MAP, .sub = non_waking_fields},
    F_LIST("trusted_proxies", K_CIDRS, trusted_proxies),
    {.key = "limits", .kind = K_MAP, .sub = limits_fields},
    {.key = "upstream", .kind = K_MAP, .sub = upstream_fields},
    {.key = "http2", .kind = K_MAP, .sub = http2_fields},
    {.key = "log", .kind = K_MAP, .sub = log_fields},
    F_TIME("shutdown_grace", shutdown_grace_ms, 0),
    {.key = "workers", .kind = K_WORKERS, IN_CFG(workers), .min = 1, .max = WG_WORKERS_MAX},
    {.key = NULL},
};
