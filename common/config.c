/* common/config.c - the configuration's defaults, the load sequence
 * (defaults, file, environment, flags, validation) and its release; the
 * ownership and error-text helpers the other config*.c files share.
 *
 * The parts: config_parse.c (durations, sizes, addresses, networks),
 * config_yaml.c (the YAML walk), config_keys.c (the key tables and their
 * setters), config_routes.c (routes[]), config_env.c (environment and
 * flags), config_validate.c (the whole configuration); config_int.h says
 * what they share. */
#include "common/config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "common/config_int.h"
#include "common/docker_host.h"

void config_free_strv(char **v, size_t n)
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
    free(r->access);
    memset(r, 0, sizeof *r);
}

void config_free_routes(struct wg_route_cfg *routes, size_t n)
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
    free(cfg->admin_read_token);
    free(cfg->admin_read_token_file);
    free(cfg->redis_url);
    free(cfg->redis_private.server);
    free(cfg->redis_private.dir);
    free(cfg->redis_private.socket_path);
    config_sentinel_free(&cfg->redis_sentinel);
    free(cfg->docker_host);
    free(cfg->docker_tls.ca);
    free(cfg->docker_tls.cert);
    free(cfg->docker_tls.key);
    free(cfg->docker_name);
    free(cfg->docker_labels_json);
    config_sessions_free(&cfg->sessions);
    config_free_templates(cfg->templates, cfg->templates_len);
    config_free_routes(cfg->routes, cfg->routes_len);
    config_tls_free(&cfg->tls);
    free(cfg->access.secret_file);
    free(cfg->access.link_url);
    free(cfg->access.forward_auth.url);
    free(cfg->access.forward_auth.addr.text);
    free(cfg->access.forward_auth.host);
    free(cfg->access.forward_auth.path);
    if (cfg->access.secret != NULL)
        explicit_bzero(cfg->access.secret, cfg->access.secret_len);
    free(cfg->access.secret);
    config_free_strv(cfg->non_waking_paths, cfg->non_waking_paths_len);
    config_free_strv(cfg->non_waking_user_agents, cfg->non_waking_user_agents_len);
    free(cfg->trusted_proxies);
    /* Zeroed, so a second free (the binary's error path after
     * wg_config_load() already freed) is harmless. */
    memset(cfg, 0, sizeof *cfg);
}

/* Replaces *dst with a copy of s (NULL clears it). */
int config_replace_str(char **dst, const char *s)
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

bool config_has_ctl_or_space(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f)
            return true;
    return false;
}

/* "FILE:LINE: KEY: msg", "FILE: KEY: msg" without a line, "KEY: msg"
 * without a file. Returns -EINVAL. */
int config_fail_at(char *err, size_t errlen, const char *file, size_t line, const char *key,
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

/* The sessions: mapping and the private redis-server. Returns 0 or -ENOMEM. */
static int init_sessions(struct wg_config *cfg)
{
    cfg->redis_private.enabled = true;
    if (config_replace_str(&cfg->redis_private.server, "redis-server") < 0)
        return -ENOMEM;
    cfg->redis_private.appendonly = true;
    cfg->redis_private.start_timeout_ms = 5 * 1000;
    cfg->redis_outage_grace_ms = 30 * 1000;
    cfg->redis_state_timeout_ms = 1000;
    cfg->redis_private.stop_timeout_ms = 5 * 1000;

    if (config_sessions_defaults(&cfg->sessions, "default") < 0)
        return -ENOMEM;
    cfg->sessions.overridable = WG_OVERRIDE_DEFAULT;
    return 0;
}

/* The proxy's limits and timeouts, and the log. */
static void init_limits(struct wg_config *cfg)
{
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
    cfg->limits.buffer_high_water = 32 * 1024;
    cfg->limits.tunnel_idle_ms = 3600 * 1000;

    cfg->upstream.connect_timeout_ms = 5 * 1000;
    cfg->upstream.response_timeout_ms = 60 * 1000;
    cfg->upstream.keepalive_idle_ms = 60 * 1000;
    cfg->upstream.keepalive_max = 256;

    cfg->log_level = WG_LOG_INFO;
    cfg->log_format = WG_LOG_LOGFMT;
    cfg->access_log = true;
    cfg->shutdown_grace_ms = 10 * 1000;
    cfg->access.link_ttl_ms = 3600 * 1000;
    cfg->access.link_ttl_max_ms = 24 * 3600 * 1000;
    cfg->access.forward_auth.timeout_ms = 2000;
    cfg->access.forward_auth.cache_ttl_ms = 10 * 1000;
    cfg->access.forward_auth.cache_max = 10000;
    cfg->access.forward_auth.max_in_flight = 256;
}

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
    if (config_replace_str(&cfg->docker_host, WG_DOCKER_DEFAULT_HOST) < 0)
        goto out;
    if (gethostname(host, sizeof host) < 0 || host[0] == '\0')
        snprintf(host, sizeof host, "local");
    host[sizeof host - 1] = '\0';
    if (config_replace_str(&cfg->docker_name, host) < 0)
        goto out;
    cfg->docker_tls.verify = true;
    cfg->tls.ticket_rotate_ms = 3600 * 1000;
    cfg->http2.enabled = true;
    cfg->http2.max_concurrent_streams = 100;
    cfg->http2.reset_burst = 200;
    cfg->http2.reset_rate = 33;
    cfg->http2.control_burst = 1000;
    cfg->http2.control_rate = 100;
    cfg->max_concurrent_starts = 8;
    cfg->heartbeat_ttl_ms = 10000;
    r = init_sessions(cfg);
    if (r < 0)
        goto out;
    init_limits(cfg);
out:
    if (r < 0)
        wg_config_free(cfg);
    return r;
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
        config_fail_at(err, errlen, NULL, 0, "configuration", "out of memory");
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
    cfg->token_files_optional = flags->token_files_optional;
    r = wg_config_validate(cfg, err, errlen);
    if (r < 0)
        goto out;
    r = wg_config_check_docker_host(cfg, err, errlen);
out:
    if (r < 0)
        wg_config_free(cfg);
    return r;
}

unsigned wg_config_workers(const struct wg_config *cfg)
{
    unsigned n = cfg->workers;

    /* libuv asks sched_getaffinity(), so a cpuset or taskset counts. */
    if (n == 0)
        n = uv_available_parallelism();
    if (n < 1)
        n = 1;
    return n > WG_WORKERS_MAX ? WG_WORKERS_MAX : n;
}
