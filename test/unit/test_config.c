/* test/unit/test_config.c - defaults, the YAML file, environment, flags,
 * validation and the scalar parsers of common/config*.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/config.h"

#define NAME "t.yaml"

static int load(struct wg_config *cfg, const char *yaml, char *err, size_t errlen)
{
    int r = wg_config_init_defaults(cfg);

    assert_int_equal(r, 0);
    err[0] = '\0';
    return wg_config_load_string(cfg, NAME, yaml, strlen(yaml), err, errlen);
}

static void assert_prefix(const char *got, const char *want)
{
    if (strncmp(got, want, strlen(want)) != 0)
        fail_msg("error text\n  got:  %s\n  want: %s...", got, want);
}

static unsigned port_of(const struct wg_addr *a)
{
    if (a->sa.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
}

static char *ip_of(const struct wg_addr *a, char *buf, size_t len)
{
    if (a->sa.ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&a->sa)->sin_addr, buf, len);
    else
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&a->sa)->sin6_addr, buf, len);
    return buf;
}

/* Writes text to a new temporary file; the caller unlinks path. */
static void write_temp(char *path, size_t len, const char *text, size_t text_len)
{
    const char *dir = getenv("TMPDIR");
    FILE *f;
    int fd;

    snprintf(path, len, "%s/wg-config-XXXXXX", dir != NULL && dir[0] ? dir : "/tmp");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, text_len, f), text_len);
    assert_int_equal(fclose(f), 0);
}

/* ------------------------------------------------------------------------ */

static void test_defaults(void **state)
{
    struct wg_config cfg;
    char ip[64], host[256];

    (void)state;
    assert_int_equal(wg_config_init_defaults(&cfg), 0);
    assert_null(cfg.path);
    assert_int_equal(cfg.role, WG_ROLE_ALL);
    assert_string_equal(cfg.listen.text, "0.0.0.0:8080");
    assert_int_equal(cfg.listen.sa.ss_family, AF_INET);
    assert_int_equal(cfg.listen.salen, sizeof(struct sockaddr_in));
    assert_string_equal(ip_of(&cfg.listen, ip, sizeof ip), "0.0.0.0");
    assert_int_equal(port_of(&cfg.listen), 8080);
    assert_string_equal(cfg.admin_listen.text, "127.0.0.1:8081");
    assert_string_equal(ip_of(&cfg.admin_listen, ip, sizeof ip), "127.0.0.1");
    assert_int_equal(port_of(&cfg.admin_listen), 8081);
    assert_null(cfg.admin_token);
    assert_null(cfg.admin_token_file);
    assert_null(cfg.redis_url);
    assert_true(cfg.redis_private.enabled);
    assert_string_equal(cfg.redis_private.server, "redis-server");
    assert_null(cfg.redis_private.dir);
    assert_true(cfg.redis_private.appendonly);
    assert_int_equal(cfg.redis_private.start_timeout_ms, 5000);
    assert_int_equal(cfg.redis_private.stop_timeout_ms, 5000);
    assert_false(cfg.redis_private.active);
    assert_int_equal(cfg.redis_outage_grace_ms, 30000);
    assert_int_equal(cfg.redis_state_timeout_ms, 1000);
    assert_string_equal(cfg.docker_host, "unix:///var/run/docker.sock");
    if (gethostname(host, sizeof host) == 0 && host[0] != '\0')
        assert_string_equal(cfg.docker_name, host);
    else
        assert_string_equal(cfg.docker_name, "local");
    assert_int_equal(cfg.max_concurrent_starts, 8);

    assert_string_equal(cfg.sessions.image, "wakegate-demo:latest");
    assert_int_equal(cfg.sessions.port, 8080);
    assert_int_equal(cfg.sessions.wake_timeout_ms, 30000);
    assert_int_equal(cfg.sessions.upstream_recheck_ms, 5000);
    assert_int_equal(cfg.sessions.idle.pause_after_ms, 0);
    assert_int_equal(cfg.sessions.idle.stop_after_ms, 20 * 60 * 1000);
    assert_null(cfg.sessions.save.command);
    assert_int_equal(cfg.sessions.save.command_len, 0);
    assert_string_equal(cfg.sessions.save.path, "/workspace");
    assert_int_equal(cfg.sessions.save.timeout_ms, 60000);
    assert_int_equal(cfg.sessions.save.on_failure, WG_SAVE_KEEP_AWAKE);
    assert_null(cfg.sessions.readiness.http_path);
    assert_int_equal(cfg.sessions.readiness.interval_ms, 2);
    assert_int_equal(cfg.sessions.readiness.timeout_ms, 50);
    assert_false(cfg.docker_tls.enabled);
    assert_null(cfg.docker_tls.ca);
    assert_null(cfg.docker_tls.cert);
    assert_null(cfg.docker_tls.key);
    assert_true(cfg.docker_tls.verify);
    assert_int_equal(cfg.docker_host_line, 0);

    assert_null(cfg.routes);
    assert_int_equal(cfg.routes_len, 0);
    assert_int_equal(cfg.non_waking_paths_len, 0);
    assert_int_equal(cfg.non_waking_user_agents_len, 0);
    assert_int_equal(cfg.trusted_proxies_len, 0);

    assert_int_equal(cfg.limits.request_line_max, 8192);
    assert_int_equal(cfg.limits.header_line_max, 8192);
    assert_int_equal(cfg.limits.head_max, 32768);
    assert_int_equal(cfg.limits.header_count_max, 100);
    assert_int_equal(cfg.limits.head_timeout_ms, 20000);
    assert_int_equal(cfg.limits.body_idle_ms, 30000);
    assert_int_equal(cfg.limits.send_idle_ms, 60000);
    assert_int_equal(cfg.limits.keepalive_idle_ms, 60000);
    assert_int_equal(cfg.limits.keepalive_requests_max, 10000);
    assert_int_equal(cfg.limits.body_max, 0);
    assert_int_equal(cfg.limits.connections_max, 20000);
    assert_int_equal(cfg.limits.buffer_high_water, 32 * 1024);
    assert_int_equal(cfg.limits.tunnel_idle_ms, 3600 * 1000);

    assert_int_equal(cfg.upstream.connect_timeout_ms, 5000);
    assert_int_equal(cfg.upstream.response_timeout_ms, 60000);
    assert_int_equal(cfg.upstream.keepalive_idle_ms, 60000);
    assert_int_equal(cfg.upstream.keepalive_max, 256);

    assert_int_equal(cfg.log_level, WG_LOG_INFO);
    assert_int_equal(cfg.log_format, WG_LOG_LOGFMT);
    assert_true(cfg.access_log);
    assert_int_equal(cfg.shutdown_grace_ms, 10000);

    char err[WG_CONFIG_ERR_MAX];
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    wg_config_free(&cfg);
}

static const char full_yaml[] =
    "# every key, none at its default\n"
    "listen: \"[::1]:9080\"\n"
    "role: proxy\n"
    "admin:\n"
    "  listen: \"localhost:9081\"\n"
    "  token: \"s3cret\"\n"
    "redis:\n"
    "  url: \"redis://10.0.0.5:6380/2\"\n"
    "  outage_grace: 5s\n"
    "docker:\n"
    "  host: \"tcp://10.0.0.6:2376\"\n"
    "  name: host-a\n"
    "  max_concurrent_starts: 3\n"
    "sessions:\n"
    "  image: \"ghcr.io/acme/dev:1\"\n"
    "  port: 3000\n"
    "  wake_timeout: 45s\n"
    "  idle:\n"
    "    pause_after: 5m\n"
    "    stop_after: 2h\n"
    "  save:\n"
    "    command: [\"sh\", \"-c\", \"git add -A && git commit -m save\"]\n"
    "    path: /home/dev/src\n"
    "    timeout: 90s\n"
    "    on_failure: stop\n"
    "routes:\n"
    "  - { access: public, match: { host: \"{session}.preview.localhost\" } }\n"
    "  - match:\n"
    "      path_prefix: \"/api/sessions/{session}/\"\n"
    "    strip_prefix: true\n"
    "    port: 8000\n"
    "    access: public\n"
    "  - match: { host: static.example.com, header: { name: X-Env, value: prod } }\n"
    "    upstream: \"127.0.0.1:9000\"\n"
    "  - match:\n"
    "      header: { name: X-Session, value: \"{session}\" }\n"
    "    access: public\n"
    "non_waking:\n"
    "  paths: [\"/healthz\", \"/favicon.ico\"]\n"
    "  user_agents: [kube-probe, Uptime-Kuma]\n"
    "trusted_proxies: [\"10.0.0.0/8\", \"fd00::/8\", \"192.168.1.5\"]\n"
    "limits:\n"
    "  request_line_max: 4KiB\n"
    "  header_line_max: 4096\n"
    "  head_max: 64KiB\n"
    "  header_count_max: 50\n"
    "  head_timeout: 10s\n"
    "  body_idle: 15s\n"
    "  send_idle: 45s\n"
    "  keepalive_idle: 30s\n"
    "  keepalive_requests_max: 500\n"
    "  body_max: 10MiB\n"
    "  connections_max: 1000\n"
    "  buffer_high_water: 1MiB\n"
    "  tunnel_idle: 2h\n"
    "upstream:\n"
    "  connect_timeout: 2s\n"
    "  response_timeout: 120s\n"
    "  keepalive_idle: 90s\n"
    "  keepalive_max: 16\n"
    "log:\n"
    "  level: debug\n"
    "  format: json\n"
    "  access: false\n"
    "shutdown_grace: 2500ms\n"
    "access:\n"
    "  link_ttl: 30m\n"
    "  link_ttl_max: 2h\n"
    "  link_url: \"https://{session}.preview.example.com/\"\n";

static void test_full_file(void **state)
{
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX], ip[64];

    (void)state;
    assert_int_equal(load(&cfg, full_yaml, err, sizeof err), 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);

    assert_string_equal(cfg.path, NAME);
    assert_int_equal(cfg.role, WG_ROLE_PROXY);
    assert_string_equal(cfg.listen.text, "[::1]:9080");
    assert_int_equal(cfg.listen.sa.ss_family, AF_INET6);
    assert_string_equal(ip_of(&cfg.listen, ip, sizeof ip), "::1");
    assert_int_equal(port_of(&cfg.listen), 9080);
    assert_string_equal(ip_of(&cfg.admin_listen, ip, sizeof ip), "127.0.0.1");
    assert_int_equal(port_of(&cfg.admin_listen), 9081);
    assert_string_equal(cfg.admin_token, "s3cret");
    assert_null(cfg.admin_token_file);
    assert_string_equal(cfg.redis_url, "redis://10.0.0.5:6380/2");
    assert_string_equal(cfg.docker_host, "tcp://10.0.0.6:2376");
    assert_string_equal(cfg.docker_name, "host-a");
    assert_int_equal(cfg.max_concurrent_starts, 3);

    assert_string_equal(cfg.sessions.image, "ghcr.io/acme/dev:1");
    assert_int_equal(cfg.sessions.port, 3000);
    assert_int_equal(cfg.sessions.wake_timeout_ms, 45000);
    assert_int_equal(cfg.sessions.idle.pause_after_ms, 5 * 60 * 1000);
    assert_int_equal(cfg.sessions.idle.stop_after_ms, 2 * 3600 * 1000);
    assert_int_equal(cfg.sessions.save.command_len, 3);
    assert_string_equal(cfg.sessions.save.command[0], "sh");
    assert_string_equal(cfg.sessions.save.command[2], "git add -A && git commit -m save");
    assert_null(cfg.sessions.save.command[3]);
    assert_string_equal(cfg.sessions.save.path, "/home/dev/src");
    assert_int_equal(cfg.sessions.save.timeout_ms, 90000);
    assert_int_equal(cfg.sessions.save.on_failure, WG_SAVE_STOP);

    assert_int_equal(cfg.routes_len, 4);
    assert_int_equal(cfg.routes[0].line, 27);
    assert_string_equal(cfg.routes[0].host, "{session}.preview.localhost");
    assert_null(cfg.routes[0].path_prefix);
    assert_false(cfg.routes[0].has_upstream);
    assert_int_equal(cfg.routes[0].port, 0);
    assert_int_equal(cfg.routes[1].line, 28);
    assert_string_equal(cfg.routes[1].path_prefix, "/api/sessions/{session}/");
    assert_true(cfg.routes[1].strip_prefix);
    assert_int_equal(cfg.routes[1].port, 8000);
    assert_true(cfg.routes[0].access_public && cfg.routes[1].access_public);
    assert_false(cfg.routes[2].access_public);
    assert_true(cfg.routes[3].access_public);
    assert_int_equal(cfg.access.link_ttl_ms, 30 * 60 * 1000);
    assert_int_equal(cfg.access.link_ttl_max_ms, 2 * 3600 * 1000);
    assert_string_equal(cfg.access.link_url, "https://{session}.preview.example.com/");
    assert_null(cfg.access.secret);
    assert_int_equal(cfg.routes[2].line, 33);
    assert_string_equal(cfg.routes[2].host, "static.example.com");
    assert_string_equal(cfg.routes[2].header_name, "X-Env");
    assert_string_equal(cfg.routes[2].header_value, "prod");
    assert_true(cfg.routes[2].has_upstream);
    assert_string_equal(cfg.routes[2].upstream.text, "127.0.0.1:9000");
    assert_int_equal(port_of(&cfg.routes[2].upstream), 9000);
    assert_false(cfg.routes[2].strip_prefix);
    assert_null(cfg.routes[3].host);
    assert_string_equal(cfg.routes[3].header_name, "X-Session");
    assert_string_equal(cfg.routes[3].header_value, "{session}");

    assert_int_equal(cfg.non_waking_paths_len, 2);
    assert_string_equal(cfg.non_waking_paths[0], "/healthz");
    assert_string_equal(cfg.non_waking_paths[1], "/favicon.ico");
    assert_int_equal(cfg.non_waking_user_agents_len, 2);
    assert_string_equal(cfg.non_waking_user_agents[1], "Uptime-Kuma");
    assert_int_equal(cfg.trusted_proxies_len, 3);
    assert_int_equal(cfg.trusted_proxies[0].family, AF_INET);
    assert_int_equal(cfg.trusted_proxies[0].prefix, 8);
    assert_int_equal(cfg.trusted_proxies[1].family, AF_INET6);
    assert_int_equal(cfg.trusted_proxies[2].prefix, 32);

    assert_int_equal(cfg.limits.request_line_max, 4096);
    assert_int_equal(cfg.limits.header_line_max, 4096);
    assert_int_equal(cfg.limits.head_max, 65536);
    assert_int_equal(cfg.limits.header_count_max, 50);
    assert_int_equal(cfg.limits.head_timeout_ms, 10000);
    assert_int_equal(cfg.limits.body_idle_ms, 15000);
    assert_int_equal(cfg.limits.send_idle_ms, 45000);
    assert_int_equal(cfg.limits.keepalive_idle_ms, 30000);
    assert_int_equal(cfg.limits.keepalive_requests_max, 500);
    assert_int_equal(cfg.limits.body_max, 10 << 20);
    assert_int_equal(cfg.limits.connections_max, 1000);
    assert_int_equal(cfg.limits.buffer_high_water, 1 << 20);
    assert_int_equal(cfg.limits.tunnel_idle_ms, 2 * 3600 * 1000);

    assert_int_equal(cfg.upstream.connect_timeout_ms, 2000);
    assert_int_equal(cfg.upstream.response_timeout_ms, 120000);
    assert_int_equal(cfg.upstream.keepalive_idle_ms, 90000);
    assert_int_equal(cfg.upstream.keepalive_max, 16);

    assert_int_equal(cfg.log_level, WG_LOG_DEBUG);
    assert_int_equal(cfg.log_format, WG_LOG_JSON);
    assert_false(cfg.access_log);
    assert_int_equal(cfg.shutdown_grace_ms, 2500);
    assert_int_equal(cfg.redis_outage_grace_ms, 5000);
    wg_config_free(&cfg);
}

static void test_empty_files_keep_defaults(void **state)
{
    static const char *const texts[] = {"", "# nothing\n", "---\n", "~\n", "admin:\nlimits:\n"};
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX];

    (void)state;
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        assert_int_equal(load(&cfg, texts[i], err, sizeof err), 0);
        assert_string_equal(cfg.listen.text, "0.0.0.0:8080");
        assert_int_equal(cfg.limits.head_max, 32768);
        assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
        wg_config_free(&cfg);
    }
}

/* A second file over a loaded one replaces strings and lists; ASan's leak
 * check proves the old ones were freed. */
static void test_reload_over_values(void **state)
{
    static const char second[] = "listen: \":7000\"\n"
                                 "admin: { token_file: /run/secrets/t }\n"
                                 "redis: { url: null }\n"
                                 "docker: { name: host-b }\n"
                                 "sessions: { image: other, save: { command: null } }\n"
                                 "routes:\n"
                                 "  - match: { path_prefix: \"/s/{session}\" }\n"
                                 "non_waking: { paths: [], user_agents: [probe] }\n"
                                 "trusted_proxies: []\n";
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX];

    (void)state;
    assert_int_equal(load(&cfg, full_yaml, err, sizeof err), 0);
    assert_int_equal(
        wg_config_load_string(&cfg, "second.yaml", second, strlen(second), err, sizeof err), 0);
    assert_string_equal(cfg.path, "second.yaml");
    assert_string_equal(cfg.listen.text, ":7000");
    /* token_file set by a later file drops the earlier inline token. */
    assert_null(cfg.admin_token);
    assert_string_equal(cfg.admin_token_file, "/run/secrets/t");
    assert_int_equal(cfg.admin_token_file_line, 2);
    assert_null(cfg.redis_url);
    assert_string_equal(cfg.docker_name, "host-b");
    assert_string_equal(cfg.sessions.image, "other");
    assert_null(cfg.sessions.save.command);
    assert_int_equal(cfg.sessions.save.command_len, 0);
    assert_int_equal(cfg.routes_len, 1);
    assert_int_equal(cfg.routes[0].line, 7);
    assert_int_equal(cfg.non_waking_paths_len, 0);
    assert_int_equal(cfg.non_waking_user_agents_len, 1);
    assert_int_equal(cfg.trusted_proxies_len, 0);
    /* Untouched keys keep the first file's values. */
    assert_int_equal(cfg.limits.head_max, 65536);
    /* A failed load leaves a config that still frees cleanly. */
    assert_int_equal(wg_config_load_string(&cfg, "bad.yaml", "routes: [{match: {x: 1}}]",
                                           strlen("routes: [{match: {x: 1}}]"), err, sizeof err),
                     -EINVAL);
    wg_config_free(&cfg);
    wg_config_free(&cfg);
    wg_config_free(NULL);
    /* Loadable again after a free. */
    assert_int_equal(load(&cfg, full_yaml, err, sizeof err), 0);
    wg_config_free(&cfg);
}

struct error_case {
    const char *yaml;
    const char *want; /* prefix of the error text */
};

static const struct error_case error_cases[] = {
    /* unknown keys */
    {"bogus: 1\n", "t.yaml:1: bogus: unknown key (expected one of: listen, role, admin,"},
    {"limits:\n  head_max: 8KiB\n  nope: 1\n",
     "t.yaml:3: limits.nope: unknown key (expected one of: request_line_max,"},
    {"routes:\n  - match: {hots: x}\n",
     "t.yaml:2: routes[0].match.hots: unknown key (expected one of: host, path_prefix, header)"},
    {"sessions:\n  save:\n    when: always\n", "t.yaml:3: sessions.save.when: unknown key"},
    {"listen: \":1\"\nlisten: \":2\"\n", "t.yaml:2: listen: duplicate key (first set on line 1)"},
    /* durations and sizes */
    {"limits:\n  head_timeout: 3x\n",
     "t.yaml:2: limits.head_timeout: invalid duration \"3x\" (use 250ms, 30s, 20m or 1h)"},
    {"limits: {head_timeout: 0s}\n", "t.yaml:1: limits.head_timeout: must be more than 0"},
    {"limits: {head_timeout: 99999999999999999999s}\n",
     "t.yaml:1: limits.head_timeout: invalid duration"},
    {"limits: {tunnel_idle: 9000h}\n",
     "t.yaml:1: limits.tunnel_idle: 9000h is longer than the maximum of 8760h"},
    {"limits:\n  head_max: 8KB\n",
     "t.yaml:2: limits.head_max: invalid size \"8KB\" (use 512, 64KiB, 1MiB or 1GiB)"},
    {"limits: {head_max: 2GiB}\n", "t.yaml:1: limits.head_max: 2GiB is out of range (1 to 1GiB)"},
    {"limits: {buffer_high_water: 1KiB}\n",
     "t.yaml:1: limits.buffer_high_water: 1KiB is out of range (4KiB to 1GiB)"},
    {"limits: {header_count_max: 0}\n",
     "t.yaml:1: limits.header_count_max: 0 is out of range (1 to 65535)"},
    {"sessions: {port: 80x}\n",
     "t.yaml:1: sessions.port: \"80x\" is neither a number nor a name of ports:"},
    {"sessions: {port: 70000}\n", "t.yaml:1: sessions.port: 70000 is out of range (1 to 65535)"},
    {"sessions: {port: Web}\n",
     "t.yaml:1: sessions.port: invalid port \"Web\" (a number, or a name of ports:)"},
    /* addresses and URLs */
    {"listen: 1.2.3:80\n", "t.yaml:1: listen: invalid address \"1.2.3:80\""},
    {"admin: {listen: \"example.com:80\"}\n",
     "t.yaml:1: admin.listen: invalid address \"example.com:80\""},
    {"redis:\n  url: http://x\n", "t.yaml:2: redis.url: invalid Redis URL \"http://x\""},
    /* The connection's own grammar (common/redis_url.h): refused at load. */
    {"redis:\n  url: \"redis://h:99999\"\n",
     "t.yaml:2: redis.url: invalid Redis URL \"redis://h:99999\" (use redis://host:port/db or "
     "unix:///path.sock)"},
    {"redis: {url: \"redis://pw@h\"}\n", "t.yaml:1: redis.url: invalid Redis URL"},
    {"redis: {url: \"unix:///\"}\n", "t.yaml:1: redis.url: invalid Redis URL"},
    {"docker: {host: /var/run/docker.sock}\n",
     "t.yaml:1: docker.host: invalid Docker host \"/var/run/docker.sock\""},
    {"trusted_proxies: [10.0.0.0/8, 10.0.0.0/33]\n",
     "t.yaml:1: trusted_proxies[1]: invalid network \"10.0.0.0/33\""},
    /* wrong types and missing values */
    {"admin: [1, 2]\n", "t.yaml:1: admin: expected a mapping, got a list"},
    {"listen:\n  a: 1\n", "t.yaml:2: listen: expected a value, got a mapping"},
    {"non_waking:\n  paths: /healthz\n",
     "t.yaml:2: non_waking.paths: expected a list, got a value"},
    {"routes:\n  - foo\n", "t.yaml:2: routes[0]: expected a mapping, got a value"},
    {"- a\n- b\n", "t.yaml:1: (top level): expected a mapping, got a list"},
    {"listen:\n", "t.yaml:1: listen: missing value"},
    {"docker: {name: \"\"}\n", "t.yaml:1: docker.name: must not be empty"},
    {"docker: {name: \"a\\0b\"}\n", "t.yaml:1: docker.name: contains a NUL character"},
    {"non_waking: {paths: [healthz]}\n",
     "t.yaml:1: non_waking.paths[0]: path \"healthz\" must start with /"},
    {"sessions:\n  save:\n    command: []\n", "t.yaml:3: sessions.save.command: must not be empty"},
    /* enumerations */
    {"log:\n  level: loud\n",
     "t.yaml:2: log.level: unknown log level \"loud\" (use debug, info, warn or error)"},
    {"log: {format: xml}\n", "t.yaml:1: log.format: unknown log format \"xml\""},
    {"log:\n  access: yes\n", "t.yaml:2: log.access: invalid boolean \"yes\" (use true or false)"},
    {"role: both\n", "t.yaml:1: role: unknown role \"both\" (use all, proxy or orchestrator)"},
    {"sessions: {save: {on_failure: explode}}\n",
     "t.yaml:1: sessions.save.on_failure: unknown value \"explode\" (use keep_awake or stop)"},
    /* cross-field rules checked while loading */
    {"admin:\n  token: abc\n  token_file: /x\n",
     "t.yaml:3: admin.token_file: set admin.token or admin.token_file, not both"},
    {"sessions:\n  idle:\n    pause_after: 30m\n    stop_after: 20m\n",
     "t.yaml:3: sessions.idle: pause_after must be shorter than stop_after"},
    /* YAML itself */
    {"listen: \"unterminated\nrole: all\n",
     "t.yaml:3: YAML syntax error: found unexpected end of stream while scanning a quoted "
     "scalar that started on line 1"},
    {"listen: \":8080\"\nadmin:\n  listen: [a, b\nrole: all\n",
     "t.yaml:4: YAML syntax error: did not find expected ',' or ']'"},
    {"listen: :1\n role: all\n", "t.yaml:2: YAML syntax error: mapping values are not allowed"},
    {"listen: \":1\"\n role: all\n",
     "t.yaml:2: YAML syntax error: did not find expected key while parsing a block mapping that "
     "started on line 1"},
    {"listen: \":1\"\nrole: all\nx: \xff\n", "t.yaml:3: YAML syntax error: invalid leading UTF-8"},
    {"listen: \":1\"\n---\nlisten: \":2\"\n", "t.yaml:3: YAML: only one document is allowed"},
    {"listen: *nope\n", "t.yaml:1: YAML syntax error: found undefined alias"},
    /* A self-referencing alias must end in a type error, not a loop. */
    {"admin: &a {listen: *a}\n", "t.yaml:1: admin.listen: expected a value, got a mapping"},
    /* routes, checked by wg_config_validate at the route's line */
    {"routes:\n  - match: {host: \"{session}.a\"}\n  - upstream: \"127.0.0.1:9000\"\n",
     "t.yaml:3: routes[1]: a route needs at least one match condition"},
    {"routes:\n  - match:\n      host: a.example.com\n",
     "t.yaml:2: routes[0]: a session route (no upstream) must capture {session}"},
    {"routes:\n  - match: {host: \"{session}.a\", path_prefix: \"/s/{session}/\"}\n",
     "t.yaml:2: routes[0]: {session} appears 2 times; a route captures it once"},
    {"routes:\n  - match: {host: \"{session}.{session}.a\"}\n",
     "t.yaml:2: routes[0]: {session} appears 2 times"},
    {"routes:\n  - match: {host: \"{session}.a\"}\n    strip_prefix: true\n",
     "t.yaml:2: routes[0].strip_prefix: requires match.path_prefix"},
    {"routes:\n  - match: {path_prefix: \"s/{session}/\"}\n",
     "t.yaml:2: routes[0].match.path_prefix: \"s/{session}/\" must start with /"},
    {"routes:\n  - match: {path_prefix: \"/s-{session}/\"}\n",
     "t.yaml:2: routes[0].match.path_prefix: {session} must be a whole path segment"},
    {"routes:\n  - match: {host: \"{session}.a.com:8080\"}\n",
     "t.yaml:2: routes[0].match.host: invalid character ':'"},
    {"routes:\n  - match: {header: {value: \"{session}\"}}\n",
     "t.yaml:2: routes[0].match.header: name is required"},
    {"routes:\n  - match: {header: {name: \"X Session\", value: \"{session}\"}}\n",
     "t.yaml:2: routes[0].match.header.name: \"X Session\" is not a valid header name"},
    {"routes:\n  - match: {header: {name: X-S, value: \"s-{session}\"}}\n",
     "t.yaml:2: routes[0].match.header.value: to capture, the value must be exactly {session}"},
    {"routes:\n  - match: {host: \"{session}.a\"}\n    port: 0\n",
     "t.yaml:3: routes[0].port: 0 is out of range (1 to 65535)"},
    {"routes:\n  - match: {host: a.com}\n    upstream: \"127.0.0.1:9000\"\n    port: 80\n",
     "t.yaml:2: routes[0].port: applies to session routes only"},
    {"routes:\n  - match: {host: \"{session}.a\"}\n    upstream: \"127.0.0.1:9000\"\n",
     "t.yaml:2: routes[0]: a route with upstream goes to one fixed address"},
    {"routes:\n  - match: {host: a.com}\n    upstream: \"127.0.0.1:0\"\n",
     "t.yaml:2: routes[0].upstream: \"127.0.0.1:0\" needs an address and a port other than 0"},
    {"routes:\n  - match: {host: a.com}\n    upstream: \"a.com:80\"\n",
     "t.yaml:3: routes[0].upstream: invalid address \"a.com:80\""},
    /* docker.tls: files opened while loading, the host checked by validate */
    {"docker:\n  host: \"unix:///x.sock\"\n  tls: {}\n",
     "t.yaml:3: docker.tls: needs a tcp:// docker.host (\"unix:///x.sock\" is a unix socket, "
     "which takes no TLS)"},
    {"docker:\n  tls:\n    verify: false\n",
     "t.yaml:3: docker.tls: needs a tcp:// docker.host (\"unix:///var/run/docker.sock\""},
    {"docker:\n  host: \"tcp://h:2376\"\n  tls:\n    cert: /nonexistent/cert.pem\n"
     "    key: /nonexistent/key.pem\n",
     "t.yaml:4: docker.tls.cert: cannot read \"/nonexistent/cert.pem\": No such file or directory"},
    {"docker:\n  host: \"tcp://h:2376\"\n  tls:\n    ca: /nonexistent/ca.pem\n",
     "t.yaml:4: docker.tls.ca: cannot read \"/nonexistent/ca.pem\": No such file or directory"},
    {"docker: {host: \"tcp://h:2376\", tls: {ca: /}}\n",
     "t.yaml:1: docker.tls.ca: cannot read \"/\": not a regular file"},
    {"docker:\n  host: \"tcp://h:2376\"\n  tls:\n    verify: true\n    key: /nonexistent/key.pem\n",
     "t.yaml:5: docker.tls.key: set docker.tls.cert and docker.tls.key together"},
    {"docker:\n  tls:\n    cert: \"\"\n", "t.yaml:3: docker.tls.cert: must not be empty"},
    {"docker: {tls: {verify: maybe}}\n",
     "t.yaml:1: docker.tls.verify: invalid boolean \"maybe\" (use true or false)"},
    {"docker:\n  tls:\n    pin: abc\n",
     "t.yaml:3: docker.tls.pin: unknown key (expected one of: ca, cert, key, verify)"},
    {"docker: {tls: [a]}\n", "t.yaml:1: docker.tls: expected a mapping, got a list"},
    /* sessions.readiness */
    {"sessions:\n  readiness:\n    http_path: healthz\n",
     "t.yaml:3: sessions.readiness.http_path: invalid request path \"healthz\" (use a path "
     "starting with /"},
    {"sessions: {readiness: {http_path: \"/a b\"}}\n",
     "t.yaml:1: sessions.readiness.http_path: invalid request path \"/a b\" (no spaces"},
    {"sessions: {readiness: {http_path: \"/ready#x\"}}\n",
     "t.yaml:1: sessions.readiness.http_path: invalid request path \"/ready#x\""},
    {"sessions: {readiness: {http_path: \"/caf\xc3\xa9\"}}\n",
     "t.yaml:1: sessions.readiness.http_path: invalid request path"},
    {"sessions: {readiness: {http_path: \"\"}}\n",
     "t.yaml:1: sessions.readiness.http_path: invalid request path \"\""},
    {"sessions:\n  readiness:\n    interval: 0s\n",
     "t.yaml:3: sessions.readiness.interval: must be more than 0"},
    {"sessions:\n  readiness:\n    timeout: 2m\n",
     "t.yaml:3: sessions.readiness.timeout: 2m is longer than the maximum of 1m"},
    {"sessions:\n  readiness:\n    timeout: 50\n",
     "t.yaml:3: sessions.readiness.timeout: invalid duration \"50\""},
    {"sessions:\n  readiness:\n    path: /x\n",
     "t.yaml:3: sessions.readiness.path: unknown key (expected one of: http_path, interval, "
     "timeout)"},
    /* sessions: the sandbox */
    {"sessions:\n  limits:\n    memory: 1MiB\n",
     "t.yaml:3: sessions.limits.memory: 1MiB is out of range (6MiB to 1024GiB)"},
    {"sessions: {limits: {cpus: 0}}\n",
     "t.yaml:1: sessions.limits.cpus: 0 is out of range (0.01 to 1024)"},
    {"sessions: {limits: {cpus: 1.5x}}\n",
     "t.yaml:1: sessions.limits.cpus: invalid CPU count \"1.5x\""},
    {"sessions: {limits: {pids: 0}}\n", "t.yaml:1: sessions.limits.pids: 0 is out of range"},
    {"sessions: {limits: {pids: unlimited}}\n",
     "t.yaml:1: sessions.limits.pids: invalid number \"unlimited\""},
    {"sessions:\n  capabilities:\n    add: [CHOWN, SYS_FOO]\n",
     "t.yaml:3: sessions.capabilities.add[1]: unknown capability \"SYS_FOO\""},
    {"sessions: {capabilities: {add: [ALL]}}\n",
     "t.yaml:1: sessions.capabilities.add[0]: \"ALL\" would undo the sandbox's CapDrop ALL"},
    {"sessions:\n  user: \"a b\"\n", "t.yaml:2: sessions.user: invalid user \"a b\""},
    {"sessions:\n  runtime: \"run/sc\"\n",
     "t.yaml:2: sessions.runtime: invalid runtime \"run/sc\""},
    /* the session network */
    {"sessions:\n  network:\n    name: host\n",
     "t.yaml:3: sessions.network.name: \"host\" is a network of the engine's own"},
    {"templates:\n  a:\n    network: {name: Bridge}\n",
     "t.yaml:3: templates.a.network.name: \"Bridge\" is a network of the engine's own"},
    {"sessions: {network: {name: \"a b\"}}\n",
     "t.yaml:1: sessions.network.name: invalid network name \"a b\""},
    {"sessions:\n  network:\n    subnet: 10.0.0.1\n",
     "t.yaml:3: sessions.network.subnet: invalid subnet \"10.0.0.1\""},
    {"sessions: {network: {subnet: \"fd00::/64\"}}\n",
     "t.yaml:1: sessions.network.subnet: invalid subnet \"fd00::/64\""},
    {"sessions: {network: {subnet: 10.0.0.0/30}}\n",
     "t.yaml:1: sessions.network.subnet: invalid subnet \"10.0.0.0/30\""},
    {"sessions: {network: {egress: sometimes}}\n",
     "t.yaml:1: sessions.network.egress: invalid boolean \"sometimes\""},
    /* templates */
    {"templates:\n  Big: {image: x}\n", "t.yaml:2: templates.Big: invalid template name"},
    {"templates:\n  default: {image: x}\n",
     "t.yaml:2: templates.default: \"default\" is the sessions: block"},
    {"templates: [a]\n", "t.yaml:1: templates: expected a mapping of template names"},
    {"templates:\n  a:\n    overridable: [cmd, env]\n",
     "t.yaml:3: templates.a.overridable[1]: unknown field \"env\""},
    {"templates:\n  a:\n    limits: {pids: 1}\n",
     "t.yaml:3: templates.a.limits.pids: 1 is out of range"},
    {"templates:\n  a:\n    binds: {allow: [/srv, /]}\n",
     "t.yaml:3: templates.a.binds.allow[1]: \"/\" would allow every source"},
    {"sessions:\n  binds:\n    allow: [\"/./\"]\n",
     "t.yaml:3: sessions.binds.allow[0]: \"/\" would"},
    {"sessions: {binds: {allow: [/srv/../etc]}}\n",
     "t.yaml:1: sessions.binds.allow[0]: a path with \"..\""},
    {"templates:\n  a:\n    imag: x\n", "t.yaml:3: templates.a.imag: unknown key"},
    {"templates:\n  a:\n    wake_timeout: 5s\n",
     "t.yaml:3: templates.a.wake_timeout: one value serves every session: set "
     "sessions.wake_timeout instead"},
    {"templates:\n  a:\n    upstream_recheck: 1s\n",
     "t.yaml:3: templates.a.upstream_recheck: one value serves every session: set "
     "sessions.upstream_recheck instead"},
    {"templates:\n  a:\n    idle:\n      stop_after: 5m\n      reap_every: 2s\n",
     "t.yaml:5: templates.a.idle.reap_every: one value serves every session: set "
     "sessions.idle.reap_every instead"},
    {"templates:\n  a: {save: {retry_max: 1h}}\n",
     "t.yaml:2: templates.a.save.retry_max: one value serves every session"},
    {"templates:\n  a: {idle: {cpu_interval: 1s}}\n",
     "t.yaml:2: templates.a.idle.cpu_interval: one value serves every session"},
    {"templates:\n  a: {idle: {cpu_stats_concurrency: 2}}\n",
     "t.yaml:2: templates.a.idle.cpu_stats_concurrency: one value serves every session"},
    {"sessions: {idle: {cpu_interval: 50ms}}\n",
     "t.yaml:1: sessions.idle: cpu_interval must be 0s (off) or at least 100ms"},
    {"sessions: {idle: {cpu_threshold: 0}}\n",
     "t.yaml:1: sessions.idle.cpu_threshold: 0 is out of range"},
    {"sessions: {idle: {cpu_stats_concurrency: 0}}\n",
     "t.yaml:1: sessions.idle.cpu_stats_concurrency: 0 is out of range"},
    {"sessions: {idle: {busy_file: tmp/busy}}\n",
     "t.yaml:1: sessions.idle: busy_file must be an absolute path"},
    {"templates:\n  a: {idle: {busy_file: /tmp/../etc/x}}\n",
     "t.yaml:2: templates.a.idle: busy_file must be an absolute path"},
    {"sessions: {idle: {busy_file: /tmp/}}\n",
     "t.yaml:1: sessions.idle: busy_file must be an absolute path"},
    /* admin.token_file is read by validate */
    {"admin:\n  token_file: /nonexistent/token\n",
     "t.yaml:2: admin.token_file: cannot read \"/nonexistent/token\": No such file or directory"},
    {"admin:\n  token_file: /\n", "t.yaml:2: admin.token_file: cannot read \"/\": not a regular"},
    /* redis.private */
    {"redis: {private: {enabled: maybe}}\n",
     "t.yaml:1: redis.private.enabled: invalid boolean \"maybe\" (use true or false)"},
    {"redis:\n  private:\n    port: 6379\n",
     "t.yaml:3: redis.private.port: unknown key (expected one of: enabled, server, dir, "
     "appendonly, start_timeout, stop_timeout)"},
    {"redis: {private: {start_timeout: 0s}}\n",
     "t.yaml:1: redis.private.start_timeout: must be more than 0"},
    {"redis: {private: {stop_timeout: 2h}}\n",
     "t.yaml:1: redis.private.stop_timeout: 2h is longer than the maximum of 1h"},
    {"redis: {private: {server: \"\"}}\n", "t.yaml:1: redis.private.server: must not be empty"},
    {"redis: {private: []}\n", "t.yaml:1: redis.private: expected a mapping, got a list"},
    /* ... checked by validate: the server is found, the socket path fits */
    /* redis.private.server is not looked for here: test_redis_child.c. */
    {"redis:\n  private:\n    server: /bin/sh\n    dir: \"/tmp/a b\"\n",
     "t.yaml:4: redis.private.dir: \"/tmp/a b\" must not contain spaces"},
    {"redis:\n  private: {server: /bin/sh, dir: \"/tmp/a?b\"}\n",
     "t.yaml:2: redis.private.dir: \"/tmp/a?b\" must not contain"},
    {"redis:\n  private: {server: /bin/sh, dir: /}\n",
     "t.yaml:2: redis.private.dir: must be a directory of its own, not /"},
    {"redis:\n  private:\n    server: /bin/sh\n    dir: "
     "/tmp/0123456789012345678901234567890123456789"
     "01234567890123456789012345678901234567890123456789\n",
     "t.yaml:4: redis.private.dir: the socket \"/tmp/0123456789"},
};

static void test_error_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof error_cases / sizeof error_cases[0]; i++) {
        const struct error_case *c = &error_cases[i];
        struct wg_config cfg;
        char err[WG_CONFIG_ERR_MAX];
        int r;

        r = load(&cfg, c->yaml, err, sizeof err);
        if (r == 0)
            r = wg_config_validate(&cfg, err, sizeof err);
        if (r != -EINVAL)
            fail_msg("case %zu (%s): returned %d, want -EINVAL", i, c->want, r);
        assert_prefix(err, c->want);
        wg_config_free(&cfg);
    }
}

/* Without redis.url, validation points redis_url at the private server. */
static void test_redis_private(void **state)
{
    static const char file[] = "redis:\n"
                               "  private:\n"
                               "    server: /bin/sh\n"
                               "    dir: /tmp/wg-priv/\n"
                               "    appendonly: false\n"
                               "    start_timeout: 2s\n"
                               "    stop_timeout: 250ms\n";
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX];

    (void)state;
    assert_int_equal(load(&cfg, file, err, sizeof err), 0);
    assert_false(cfg.redis_private.active);
    assert_null(cfg.redis_url);
    assert_false(cfg.redis_private.appendonly);
    assert_int_equal(cfg.redis_private.start_timeout_ms, 2000);
    assert_int_equal(cfg.redis_private.stop_timeout_ms, 250);
    assert_int_equal(cfg.redis_private.server_line, 3);
    assert_int_equal(cfg.redis_private.dir_line, 4);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_true(cfg.redis_private.active);
    /* As written: the binary finds the program (src/redis_child.h). */
    assert_string_equal(cfg.redis_private.server, "/bin/sh");
    /* The trailing slash is dropped. */
    assert_string_equal(cfg.redis_private.dir, "/tmp/wg-priv");
    assert_string_equal(cfg.redis_private.socket_path, "/tmp/wg-priv/run/redis.sock");
    assert_string_equal(cfg.redis_url, "unix:///tmp/wg-priv/run/redis.sock");
    /* Validating again gives the same result, not "a URL was configured". */
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_true(cfg.redis_private.active);
    assert_string_equal(cfg.redis_url, "unix:///tmp/wg-priv/run/redis.sock");
    wg_config_free(&cfg);

    /* A URL wins: nothing private. */
    assert_int_equal(
        load(&cfg, "redis:\n  url: \"redis://r:6379/0\"\n  private: {server: /nonexistent}\n", err,
             sizeof err),
        0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_false(cfg.redis_private.active);
    assert_null(cfg.redis_private.socket_path);
    assert_string_equal(cfg.redis_url, "redis://r:6379/0");
    wg_config_free(&cfg);

    /* Disabled: no Redis at all. */
    assert_int_equal(
        load(&cfg, "redis: {private: {enabled: false, server: /nonexistent}}\n", err, sizeof err),
        0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_false(cfg.redis_private.active);
    assert_null(cfg.redis_url);
    wg_config_free(&cfg);

    /* An explicit null dir is the default. */
    assert_int_equal(load(&cfg, "redis: {private: {dir: null}}\n", err, sizeof err), 0);
    assert_null(cfg.redis_private.dir);
    wg_config_free(&cfg);
}

/* A relative dir is made absolute; the default dir follows systemd, root,
 * XDG and HOME, in that order. */
static void test_redis_private_dir(void **state)
{
    char err[WG_CONFIG_ERR_MAX], cwd[PATH_MAX], want[2 * PATH_MAX], *old_home = NULL;
    const char *p;
    struct wg_config cfg;

    (void)state;
    if ((p = getenv("HOME")) != NULL)
        old_home = strdup(p);
    assert_int_equal(
        load(&cfg, "redis: {private: {server: my-redis, dir: rel/dir}}\n", err, sizeof err), 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(want, sizeof want, "%s/rel/dir", cwd);
    if (strlen(want) + strlen("/run/redis.sock") < 108)
        assert_string_equal(cfg.redis_private.dir, want);
    wg_config_free(&cfg);

    /* The default directory. */
    setenv("STATE_DIRECTORY", "/var/lib/wg-state:/var/lib/other", 1);
    assert_int_equal(load(&cfg, "redis: {private: {server: my-redis}}\n", err, sizeof err), 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_string_equal(cfg.redis_private.dir, "/var/lib/wg-state/redis");
    assert_string_equal(cfg.redis_url, "unix:///var/lib/wg-state/redis/run/redis.sock");
    wg_config_free(&cfg);
    unsetenv("STATE_DIRECTORY");
    setenv("XDG_STATE_HOME", "/xdg/state", 1);
    setenv("HOME", "/home/someone", 1);
    assert_int_equal(load(&cfg, "redis: {private: {server: my-redis}}\n", err, sizeof err), 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_string_equal(cfg.redis_private.dir,
                        geteuid() == 0 ? "/var/lib/wakegate/redis" : "/xdg/state/wakegate/redis");
    wg_config_free(&cfg);
    unsetenv("XDG_STATE_HOME");

    if (old_home != NULL)
        setenv("HOME", old_home, 1);
    else
        unsetenv("HOME");
    free(old_home);
}

/* ------------------------------------------------------------------------ */
/* Environment and flags.                                                    */

static const char *const *fake_env;

static char *fake_getenv(const char *name)
{
    size_t n = strlen(name);

    for (const char *const *e = fake_env; *e != NULL; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return (char *)*e + n + 1;
    return NULL;
}

static void test_env_overrides_file(void **state)
{
    static const char *const env[] = {
        "WAKEGATE_REDIS_URL=unix:///run/redis.sock",
        "WAKEGATE_DOCKER_HOST=tcp://docker:2376",
        "WAKEGATE_ADMIN_TOKEN=from-env",
        "WAKEGATE_LISTEN=127.0.0.1:2222",
        "WAKEGATE_ADMIN_LISTEN=[::1]:2223",
        "WAKEGATE_LOG_LEVEL=warn",
        NULL,
    };
    static const char file[] = "listen: \":1111\"\n"
                               "admin: {listen: \":1112\", token_file: /nonexistent/token}\n"
                               "redis: {url: \"redis://r:6379/0\"}\n"
                               "docker: {host: \"unix:///x.sock\"}\n"
                               "log: {level: debug}\n";
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX], ip[64];

    (void)state;
    assert_int_equal(load(&cfg, file, err, sizeof err), 0);
    fake_env = env;
    assert_int_equal(wg_config_apply_env(&cfg, fake_getenv, err, sizeof err), 0);
    assert_string_equal(cfg.redis_url, "unix:///run/redis.sock");
    assert_string_equal(cfg.docker_host, "tcp://docker:2376");
    assert_string_equal(cfg.admin_token, "from-env");
    assert_string_equal(cfg.listen.text, "127.0.0.1:2222");
    assert_int_equal(port_of(&cfg.listen), 2222);
    assert_string_equal(ip_of(&cfg.admin_listen, ip, sizeof ip), "::1");
    assert_int_equal(cfg.log_level, WG_LOG_WARN);
    /* The environment's token wins: the missing token_file is never read. */
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_string_equal(cfg.admin_token, "from-env");
    wg_config_free(&cfg);
}

static void test_env_empty_is_unset(void **state)
{
    static const char *const env[] = {"WAKEGATE_LISTEN=", "WAKEGATE_REDIS_URL=", NULL};
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX];

    (void)state;
    assert_int_equal(load(&cfg, "listen: \":1111\"\n", err, sizeof err), 0);
    fake_env = env;
    assert_int_equal(wg_config_apply_env(&cfg, fake_getenv, err, sizeof err), 0);
    assert_string_equal(cfg.listen.text, ":1111");
    assert_null(cfg.redis_url);
    wg_config_free(&cfg);
}

static void test_env_errors(void **state)
{
    static const struct {
        const char *var;
        const char *want;
    } cases[] = {
        {"WAKEGATE_LISTEN=nope", "environment WAKEGATE_LISTEN: invalid address \"nope\""},
        {"WAKEGATE_ADMIN_LISTEN=1.2.3.4", "environment WAKEGATE_ADMIN_LISTEN: invalid address"},
        {"WAKEGATE_REDIS_URL=localhost:6379",
         "environment WAKEGATE_REDIS_URL: invalid Redis URL \"localhost:6379\""},
        {"WAKEGATE_DOCKER_HOST=http://x", "environment WAKEGATE_DOCKER_HOST: invalid Docker host"},
        {"WAKEGATE_LOG_LEVEL=verbose",
         "environment WAKEGATE_LOG_LEVEL: unknown log level \"verbose\""},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *env[] = {cases[i].var, NULL};
        struct wg_config cfg;
        char err[WG_CONFIG_ERR_MAX] = "";

        assert_int_equal(wg_config_init_defaults(&cfg), 0);
        fake_env = env;
        assert_int_equal(wg_config_apply_env(&cfg, fake_getenv, err, sizeof err), -EINVAL);
        assert_prefix(err, cases[i].want);
        wg_config_free(&cfg);
    }
}

/* workers: auto (0, the default) or 1..64, from the file or WAKEGATE_WORKERS. */
static void test_workers_key(void **state)
{
    static const struct {
        const char *yaml;
        unsigned want;
        const char *err;
    } cases[] = {
        {"listen: \"127.0.0.1:1\"\n", 0, NULL},
        {"workers: auto\n", 0, NULL},
        {"workers: 1\n", 1, NULL},
        {"workers: 64\n", 64, NULL},
        {"workers: 0\n", 0, NAME ":1: workers: invalid worker count \"0\" (use auto or 1 to 64)"},
        {"workers: 65\n", 0, NAME ":1: workers: invalid worker count \"65\""},
        {"workers: two\n", 0, NAME ":1: workers: invalid worker count \"two\""},
    };
    const char *env[] = {"WAKEGATE_WORKERS=3", NULL};
    const char *bad_env[] = {"WAKEGATE_WORKERS=-1", NULL};
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX];

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int r = load(&cfg, cases[i].yaml, err, sizeof err);
        if (cases[i].err != NULL) {
            assert_int_equal(r, -EINVAL);
            assert_prefix(err, cases[i].err);
            wg_config_free(&cfg);
            continue;
        }
        assert_int_equal(r, 0);
        assert_int_equal(cfg.workers, cases[i].want);
        if (cases[i].want > 0)
            assert_int_equal(wg_config_workers(&cfg), cases[i].want);
        else
            assert_true(wg_config_workers(&cfg) >= 1 && wg_config_workers(&cfg) <= WG_WORKERS_MAX);
        wg_config_free(&cfg);
    }
    assert_int_equal(load(&cfg, "workers: 2\n", err, sizeof err), 0);
    fake_env = env;
    assert_int_equal(wg_config_apply_env(&cfg, fake_getenv, err, sizeof err), 0);
    assert_int_equal(cfg.workers, 3);
    fake_env = bad_env;
    assert_int_equal(wg_config_apply_env(&cfg, fake_getenv, err, sizeof err), -EINVAL);
    assert_prefix(err, "environment WAKEGATE_WORKERS: invalid worker count \"-1\"");
    wg_config_free(&cfg);
}

static void test_flags_override_env(void **state)
{
    static const char *const env[] = {
        "WAKEGATE_LISTEN=127.0.0.1:2222",
        "WAKEGATE_ADMIN_LISTEN=127.0.0.1:2223",
        "WAKEGATE_LOG_LEVEL=warn",
        NULL,
    };
    struct wg_config_flags flags = {
        .role = "orchestrator",
        .log_level = "error",
        .listen = ":3333",
        .admin_listen = "[::1]:3334",
    };
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX];

    (void)state;
    assert_int_equal(load(&cfg, "role: proxy\nlog: {level: debug}\n", err, sizeof err), 0);
    fake_env = env;
    assert_int_equal(wg_config_apply_env(&cfg, fake_getenv, err, sizeof err), 0);
    assert_int_equal(wg_config_apply_flags(&cfg, &flags, err, sizeof err), 0);
    assert_int_equal(cfg.role, WG_ROLE_ORCHESTRATOR);
    assert_int_equal(cfg.log_level, WG_LOG_ERROR);
    assert_string_equal(cfg.listen.text, ":3333");
    assert_string_equal(cfg.admin_listen.text, "[::1]:3334");
    assert_int_equal(port_of(&cfg.admin_listen), 3334);
    wg_config_free(&cfg);

    /* Unset flags change nothing. */
    struct wg_config_flags none = {0};
    assert_int_equal(wg_config_init_defaults(&cfg), 0);
    assert_int_equal(wg_config_apply_flags(&cfg, &none, err, sizeof err), 0);
    assert_string_equal(cfg.listen.text, "0.0.0.0:8080");
    wg_config_free(&cfg);
}

static void test_flag_errors(void **state)
{
    static const struct {
        struct wg_config_flags flags;
        const char *want;
    } cases[] = {
        {{.listen = "8080"}, "flag --listen: invalid address \"8080\""},
        {{.admin_listen = "[::1]"}, "flag --admin-listen: invalid address \"[::1]\""},
        {{.role = "both"}, "flag --role: unknown role \"both\" (use all, proxy or orchestrator)"},
        {{.log_level = "trace"}, "flag --log-level: unknown log level \"trace\""},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct wg_config cfg;
        char err[WG_CONFIG_ERR_MAX] = "";

        assert_int_equal(wg_config_init_defaults(&cfg), 0);
        assert_int_equal(wg_config_apply_flags(&cfg, &cases[i].flags, err, sizeof err), -EINVAL);
        assert_prefix(err, cases[i].want);
        wg_config_free(&cfg);
    }
}

static void unset_wakegate_env(void)
{
    static const char *const vars[] = {
        "WAKEGATE_CONFIG",      "WAKEGATE_REDIS_URL",        "WAKEGATE_DOCKER_HOST",
        "WAKEGATE_ADMIN_TOKEN", "WAKEGATE_LISTEN",           "WAKEGATE_ADMIN_LISTEN",
        "WAKEGATE_LOG_LEVEL",   "WAKEGATE_ADMIN_READ_TOKEN",
    };

    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
}

/* The binary's whole sequence, with the real environment. */
static void test_load_sequence(void **state)
{
    static const char file[] = "listen: \":1111\"\nlog: {level: debug}\nrole: proxy\n";
    char path[PATH_MAX], err[WG_CONFIG_ERR_MAX];
    struct wg_config_flags flags = {0};
    struct wg_config cfg;

    (void)state;
    unset_wakegate_env();
    write_temp(path, sizeof path, file, strlen(file));

    /* WAKEGATE_CONFIG finds the file when there is no --config. */
    setenv("WAKEGATE_CONFIG", path, 1);
    setenv("WAKEGATE_LISTEN", ":2222", 1);
    flags.role = "all";
    assert_int_equal(wg_config_load(&cfg, &flags, err, sizeof err), 0);
    assert_string_equal(cfg.path, path);
    assert_string_equal(cfg.listen.text, ":2222");
    assert_int_equal(cfg.log_level, WG_LOG_DEBUG);
    assert_int_equal(cfg.role, WG_ROLE_ALL);
    wg_config_free(&cfg);

    /* --config wins over WAKEGATE_CONFIG. */
    setenv("WAKEGATE_CONFIG", "/nonexistent/wakegate.yaml", 1);
    flags.config_path = path;
    assert_int_equal(wg_config_load(&cfg, &flags, err, sizeof err), 0);
    wg_config_free(&cfg);

    /* A missing file is an I/O error that names it; cfg is released. */
    flags.config_path = NULL;
    assert_int_equal(wg_config_load(&cfg, &flags, err, sizeof err), -ENOENT);
    assert_string_equal(err, "/nonexistent/wakegate.yaml: cannot open: No such file or directory");
    assert_null(cfg.listen.text);
    wg_config_free(&cfg);

    /* No file at all: defaults plus environment. */
    unsetenv("WAKEGATE_CONFIG");
    assert_int_equal(wg_config_load(&cfg, NULL, err, sizeof err), 0);
    assert_null(cfg.path);
    assert_string_equal(cfg.listen.text, ":2222");
    wg_config_free(&cfg);

    /* An environment error stops the sequence. */
    setenv("WAKEGATE_LOG_LEVEL", "loud", 1);
    assert_int_equal(wg_config_load(&cfg, NULL, err, sizeof err), -EINVAL);
    assert_prefix(err, "environment WAKEGATE_LOG_LEVEL: unknown log level \"loud\"");

    unset_wakegate_env();
    unlink(path);
}

static void test_load_file_errors(void **state)
{
    char path[PATH_MAX], err[WG_CONFIG_ERR_MAX], want[PATH_MAX + 64];
    struct wg_config cfg;
    static const char bad[] = "log:\n  level: debug\n  colour: yes\n";

    (void)state;
    write_temp(path, sizeof path, bad, strlen(bad));
    assert_int_equal(wg_config_init_defaults(&cfg), 0);
    assert_int_equal(wg_config_load_file(&cfg, path, err, sizeof err), -EINVAL);
    snprintf(want, sizeof want, "%s:3: log.colour: unknown key", path);
    assert_prefix(err, want);
    wg_config_free(&cfg);
    unlink(path);

    assert_int_equal(wg_config_init_defaults(&cfg), 0);
    assert_int_equal(wg_config_load_file(&cfg, "/", err, sizeof err), -EISDIR);
    assert_string_equal(err, "/: cannot read: Is a directory");
    wg_config_free(&cfg);
}

/* access.secret_file and the private default of session routes. */
static void test_access(void **state)
{
    char path[PATH_MAX], yaml[PATH_MAX + 256], err[WG_CONFIG_ERR_MAX];
    struct wg_config cfg;
    static const char routes[] = "routes:\n"
                                 "  - match: { host: \"{session}.p.localhost\" }\n";

    (void)state;
    /* A private session route (the default) without a key: refused, naming the key. */
    assert_int_equal(load(&cfg, routes, err, sizeof err), 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), -EINVAL);
    assert_prefix(err, "t.yaml:2: access.secret_file: not set, and routes[0] is a private");
    wg_config_free(&cfg);
    /* Public, or role orchestrator (no public listener): no key needed. */
    assert_int_equal(load(&cfg,
                          "routes:\n  - match: { host: \"{session}.p.localhost\" }\n"
                          "    access: public\n",
                          err, sizeof err),
                     0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_true(cfg.routes[0].access_public);
    wg_config_free(&cfg);
    assert_int_equal(load(&cfg,
                          "role: orchestrator\nroutes:\n  - match: { host: \"{session}.x\" }\n",
                          err, sizeof err),
                     0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    wg_config_free(&cfg);
    /* A bad value, and access on a fixed upstream. */
    assert_int_equal(load(&cfg, "routes:\n  - match: { host: \"{session}.x\" }\n    access: open\n",
                          err, sizeof err),
                     0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), -EINVAL);
    assert_prefix(err, "t.yaml:2: routes[0].access: \"open\" is not public or private");
    wg_config_free(&cfg);
    assert_int_equal(load(&cfg,
                          "routes:\n  - match: { host: a.x }\n    upstream: \"127.0.0.1:9\"\n"
                          "    access: public\n",
                          err, sizeof err),
                     0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), -EINVAL);
    assert_prefix(err, "t.yaml:2: routes[0].access: applies to session routes only");
    wg_config_free(&cfg);

    /* The key: read, at least 32 bytes, never readable by others. */
    write_temp(path, sizeof path, "0123456789abcdef0123456789abcdef", 32);
    snprintf(yaml, sizeof yaml, "%saccess:\n  secret_file: \"%s\"\n", routes, path);
    assert_int_equal(load(&cfg, yaml, err, sizeof err), 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_int_equal(cfg.access.secret_len, 32);
    assert_memory_equal(cfg.access.secret, "0123456789abcdef", 16);
    assert_false(cfg.routes[0].access_public);
    wg_config_free(&cfg);
    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(load(&cfg, yaml, err, sizeof err), 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), -EINVAL);
    assert_prefix(err, "t.yaml:4: access.secret_file: ");
    assert_non_null(strstr(err, "readable by group or others"));
    wg_config_free(&cfg);
    unlink(path);
    write_temp(path, sizeof path, "short", 5);
    snprintf(yaml, sizeof yaml, "%saccess:\n  secret_file: \"%s\"\n", routes, path);
    assert_int_equal(load(&cfg, yaml, err, sizeof err), 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "fewer than 32 bytes"));
    wg_config_free(&cfg);
    unlink(path);
    snprintf(yaml, sizeof yaml, "%saccess:\n  secret_file: \"%s\"\n", routes, path);
    assert_int_equal(load(&cfg, yaml, err, sizeof err), 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), -EINVAL);
    assert_prefix(err, "t.yaml:4: access.secret_file: cannot read");
    wg_config_free(&cfg);

    /* Link lifetimes and the link URL. */
    assert_int_equal(load(&cfg, "access: { link_ttl: 48h, link_ttl_max: 24h }\n", err, sizeof err),
                     0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), -EINVAL);
    assert_prefix(err, "t.yaml: access.link_ttl: is longer than access.link_ttl_max");
    wg_config_free(&cfg);
    assert_int_equal(
        load(&cfg, "access: { link_url: \"https://x.example.com/\" }\n", err, sizeof err), 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), -EINVAL);
    assert_prefix(err, "t.yaml: access.link_url: ");
    wg_config_free(&cfg);
    assert_int_equal(load(&cfg, "access: { link_ttl: 0s }\n", err, sizeof err), -EINVAL);
    wg_config_free(&cfg);

    /* access.forward_auth: guards private routes without the key; its URL. */
    snprintf(yaml, sizeof yaml,
             "%saccess:\n  forward_auth: { url: \"http://127.0.0.1:9091/verify?x=1\", "
             "timeout: 300ms, cache_ttl: 0s, cache_max: 5 }\n",
             routes);
    assert_int_equal(load(&cfg, yaml, err, sizeof err), 0);
    if (wg_config_validate(&cfg, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(cfg.access.forward_auth.host, "127.0.0.1:9091");
    assert_string_equal(cfg.access.forward_auth.path, "/verify?x=1");
    assert_int_equal(cfg.access.forward_auth.timeout_ms, 300);
    assert_int_equal(cfg.access.forward_auth.cache_ttl_ms, 0);
    assert_int_equal(cfg.access.forward_auth.cache_max, 5);
    wg_config_free(&cfg);
    static const char *const bad_urls[] = {"https://a:1/", "http://nohost/", "http://:80/x",
                                           "http://1.2.3.4:80/a b", "ftp://x:1/"};
    for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++) {
        snprintf(yaml, sizeof yaml, "access:\n  forward_auth: { url: \"%s\" }\n", bad_urls[i]);
        assert_int_equal(load(&cfg, yaml, err, sizeof err), 0);
        assert_int_equal(wg_config_validate(&cfg, err, sizeof err), -EINVAL);
        assert_prefix(err, "t.yaml: access.forward_auth.url: ");
        wg_config_free(&cfg);
    }
    assert_int_equal(load(&cfg,
                          "access: { forward_auth: { url: \"http://127.0.0.1:1/\", "
                          "timeout: 0s } }\n",
                          err, sizeof err),
                     -EINVAL);
    wg_config_free(&cfg);
}

static void test_token_file(void **state)
{
    static const struct {
        const char *content;
        size_t len;
        const char *token; /* NULL: an error */
    } cases[] = {
        {"s3cret\n", 7, "s3cret"},
        {"s3cret\r\n", 8, "s3cret"},
        {"s3cret", 6, "s3cret"},
        {"\n", 1, NULL},
        {"", 0, NULL},
        {"two words\n", 10, NULL},
        {"a\0b\n", 4, NULL},
    };
    char path[PATH_MAX], yaml[PATH_MAX + 64], err[WG_CONFIG_ERR_MAX];
    struct wg_config cfg;

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_temp(path, sizeof path, cases[i].content, cases[i].len);
        snprintf(yaml, sizeof yaml, "admin:\n  token_file: \"%s\"\n", path);
        assert_int_equal(load(&cfg, yaml, err, sizeof err), 0);
        if (cases[i].token != NULL) {
            assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
            assert_string_equal(cfg.admin_token, cases[i].token);
        } else {
            assert_int_equal(wg_config_validate(&cfg, err, sizeof err), -EINVAL);
            assert_prefix(err, "t.yaml:2: admin.token_file: ");
        }
        wg_config_free(&cfg);
        unlink(path);
    }

    /* A file far bigger than a token is the wrong file. */
    char *big = malloc(10000);
    assert_non_null(big);
    memset(big, 'a', 10000);
    write_temp(path, sizeof path, big, 10000);
    free(big);
    snprintf(yaml, sizeof yaml, "admin:\n  token_file: \"%s\"\n", path);
    assert_int_equal(load(&cfg, yaml, err, sizeof err), 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "is larger than 4096 bytes"));
    wg_config_free(&cfg);
    unlink(path);
}

/* admin.read_token_file: read as the admin token's file is, and never the
 * admin token itself. */
static void test_read_token_file(void **state)
{
    char path[PATH_MAX], yaml[PATH_MAX + 128], err[WG_CONFIG_ERR_MAX], want[PATH_MAX + 128];
    struct wg_config cfg;

    (void)state;
    /* Read with its trailing newline dropped, next to the admin token. */
    write_temp(path, sizeof path, "r3ad\n", 5);
    snprintf(yaml, sizeof yaml, "admin:\n  token: s3cret\n  read_token_file: \"%s\"\n", path);
    assert_int_equal(load(&cfg, yaml, err, sizeof err), 0);
    assert_string_equal(cfg.admin_read_token_file, path);
    assert_int_equal(cfg.admin_read_token_file_line, 3);
    assert_null(cfg.admin_read_token);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_string_equal(cfg.admin_read_token, "r3ad");
    assert_string_equal(cfg.admin_token, "s3cret");
    wg_config_free(&cfg);
    unlink(path);

    /* The same content checks, naming its own key and line. */
    write_temp(path, sizeof path, "two words\n", 10);
    snprintf(yaml, sizeof yaml, "admin:\n  token: s3cret\n  read_token_file: \"%s\"\n", path);
    assert_int_equal(load(&cfg, yaml, err, sizeof err), 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), -EINVAL);
    assert_prefix(err, "t.yaml:3: admin.read_token_file: ");
    assert_non_null(strstr(err, "must hold one token"));
    wg_config_free(&cfg);
    unlink(path);

    snprintf(yaml, sizeof yaml, "admin:\n  read_token_file: /nonexistent/read.token\n");
    assert_int_equal(load(&cfg, yaml, err, sizeof err), 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), -EINVAL);
    assert_string_equal(err, "t.yaml:2: admin.read_token_file: cannot read "
                             "\"/nonexistent/read.token\": No such file or directory");
    wg_config_free(&cfg);

    /* Equal to the admin token (from a file of its own): refused. */
    write_temp(path, sizeof path, "s3cret\n", 7);
    snprintf(yaml, sizeof yaml, "admin:\n  token: s3cret\n  read_token_file: \"%s\"\n", path);
    assert_int_equal(load(&cfg, yaml, err, sizeof err), 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), -EINVAL);
    snprintf(want, sizeof want,
             "t.yaml:3: admin.read_token_file: \"%s\" holds the admin token; the read-only "
             "token must differ from it",
             path);
    assert_string_equal(err, want);
    wg_config_free(&cfg);
    unlink(path);

    /* null clears it, as for token_file. */
    assert_int_equal(load(&cfg, "admin:\n  read_token_file: /x\n", err, sizeof err), 0);
    assert_int_equal(
        wg_config_load_string(&cfg, NAME, "admin:\n  read_token_file: null\n", 31, err, sizeof err),
        0);
    assert_null(cfg.admin_read_token_file);
    assert_int_equal(cfg.admin_read_token_file_line, 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_null(cfg.admin_read_token);
    wg_config_free(&cfg);
}

/* WAKEGATE_ADMIN_READ_TOKEN wins over the file, which is then not read,
 * and must differ from the admin token too. */
static void test_read_token_env(void **state)
{
    static const char *const env[] = {"WAKEGATE_ADMIN_READ_TOKEN=from-env", NULL};
    static const char *const same[] = {"WAKEGATE_ADMIN_TOKEN=both",
                                       "WAKEGATE_ADMIN_READ_TOKEN=both", NULL};
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX];

    (void)state;
    assert_int_equal(
        load(&cfg, "admin: {token: a, read_token_file: /nonexistent/r}\n", err, sizeof err), 0);
    fake_env = env;
    assert_int_equal(wg_config_apply_env(&cfg, fake_getenv, err, sizeof err), 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_string_equal(cfg.admin_read_token, "from-env");
    assert_string_equal(cfg.admin_token, "a");
    wg_config_free(&cfg);

    assert_int_equal(load(&cfg, "listen: \":1111\"\n", err, sizeof err), 0);
    fake_env = same;
    assert_int_equal(wg_config_apply_env(&cfg, fake_getenv, err, sizeof err), 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), -EINVAL);
    assert_string_equal(err,
                        "environment WAKEGATE_ADMIN_READ_TOKEN: must differ from the admin token");
    wg_config_free(&cfg);

    /* The CLI's load: its --token may be the read-only token itself. */
    assert_int_equal(load(&cfg, "listen: \":1111\"\n", err, sizeof err), 0);
    assert_int_equal(wg_config_apply_env(&cfg, fake_getenv, err, sizeof err), 0);
    cfg.token_files_optional = true;
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_string_equal(cfg.admin_read_token, "both");
    wg_config_free(&cfg);
}

/* ------------------------------------------------------------------------ */
/* docker.tls, docker.host with the Docker client's check, readiness.        */

static void test_placement_keys(void **state)
{
    char err[WG_CONFIG_ERR_MAX];
    struct wg_config cfg;
    const struct wg_sessions_cfg *t;

    (void)state;
    assert_int_equal(load(&cfg, "docker: {name: a}\n", err, sizeof err), 0);
    assert_int_equal(cfg.max_sessions, 0);
    assert_null(cfg.docker_labels_json);
    assert_int_equal(cfg.heartbeat_ttl_ms, 10000);
    assert_null(cfg.sessions.placement.labels_json);
    assert_false(cfg.sessions.placement.pin);
    wg_config_free(&cfg);

    assert_int_equal(load(&cfg,
                          "docker:\n  max_sessions: 40\n  heartbeat_ttl: 3s\n"
                          "  labels: {zone: b, disk: ssd}\n"
                          "templates:\n  g:\n    image: i\n"
                          "    placement: {labels: {gpu: \"1\"}, pin: true}\n",
                          err, sizeof err),
                     0);
    assert_int_equal(cfg.max_sessions, 40);
    assert_int_equal(cfg.heartbeat_ttl_ms, 3000);
    /* Compact JSON, keys sorted: what the heartbeat and the script read. */
    assert_string_equal(cfg.docker_labels_json, "{\"disk\":\"ssd\",\"zone\":\"b\"}");
    t = wg_config_template(&cfg, "g");
    assert_non_null(t);
    assert_string_equal(t->placement.labels_json, "{\"gpu\":\"1\"}");
    assert_true(t->placement.pin);
    wg_config_free(&cfg);

    static const struct {
        const char *yaml, *want;
    } bad[] = {
        {"docker: {labels: {\"a b\": x}}\n", "t.yaml:1: docker.labels.a b: invalid label name"},
        {"docker: {labels: [x]}\n", "t.yaml:1: docker.labels: expected a mapping"},
        {"docker: {labels: {a: x, a: y}}\n", "t.yaml:1: docker.labels.a: label \"a\" is given"},
        {"docker: {heartbeat_ttl: 100ms}\n", "t.yaml:1: docker.heartbeat_ttl:"},
        {"sessions: {placement: {pinned: true}}\n", "t.yaml:1: sessions.placement.pinned: unknown"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_not_equal(load(&cfg, bad[i].yaml, err, sizeof err), 0);
        assert_prefix(err, bad[i].want);
        wg_config_free(&cfg);
    }
}

static void test_docker_tls(void **state)
{
    char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX], yaml[4 * PATH_MAX];
    char err[WG_CONFIG_ERR_MAX];
    struct wg_config cfg;

    (void)state;
    write_temp(ca, sizeof ca, "ca\n", 3);
    write_temp(cert, sizeof cert, "cert\n", 5);
    write_temp(key, sizeof key, "key\n", 4);

    /* Everything set. */
    snprintf(yaml, sizeof yaml,
             "docker:\n  host: \"tcp://10.0.0.6:2376\"\n  tls:\n    ca: \"%s\"\n"
             "    cert: \"%s\"\n    key: \"%s\"\n    verify: true\n",
             ca, cert, key);
    assert_int_equal(load(&cfg, yaml, err, sizeof err), 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_true(cfg.docker_tls.enabled);
    assert_string_equal(cfg.docker_tls.ca, ca);
    assert_string_equal(cfg.docker_tls.cert, cert);
    assert_string_equal(cfg.docker_tls.key, key);
    assert_true(cfg.docker_tls.verify);
    assert_int_equal(cfg.docker_tls.line, 4);
    assert_int_equal(cfg.docker_host_line, 2);
    wg_config_free(&cfg);

    /* An empty mapping is TLS with the system's CAs and no client certificate. */
    assert_int_equal(load(&cfg, "docker: {host: \"tcp://d:2376\", tls: {}}\n", err, sizeof err), 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_true(cfg.docker_tls.enabled);
    assert_null(cfg.docker_tls.ca);
    assert_null(cfg.docker_tls.cert);
    assert_true(cfg.docker_tls.verify);
    wg_config_free(&cfg);

    /* verify: false with a client certificate (no CA needed). */
    snprintf(yaml, sizeof yaml,
             "docker:\n  host: \"tcp://[::1]:2376\"\n  tls: {cert: \"%s\", key: \"%s\", verify: "
             "false}\n",
             cert, key);
    assert_int_equal(load(&cfg, yaml, err, sizeof err), 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_true(cfg.docker_tls.enabled);
    assert_false(cfg.docker_tls.verify);
    assert_null(cfg.docker_tls.ca);
    wg_config_free(&cfg);

    /* "tls:" with nothing under it leaves TLS off, like any empty section. */
    assert_int_equal(load(&cfg, "docker:\n  tls:\n", err, sizeof err), 0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_false(cfg.docker_tls.enabled);
    wg_config_free(&cfg);

    /* A unix:// host from the environment meets the file's TLS in validate. */
    {
        static const char *const env[] = {"WAKEGATE_DOCKER_HOST=unix:///run/docker.sock", NULL};

        assert_int_equal(
            load(&cfg, "docker:\n  host: \"tcp://d:2376\"\n  tls: {}\n", err, sizeof err), 0);
        fake_env = env;
        assert_int_equal(wg_config_apply_env(&cfg, fake_getenv, err, sizeof err), 0);
        assert_int_equal(cfg.docker_host_line, -1);
        assert_int_equal(wg_config_validate(&cfg, err, sizeof err), -EINVAL);
        assert_prefix(err, "t.yaml:3: docker.tls: needs a tcp:// docker.host "
                           "(\"unix:///run/docker.sock\"");
        wg_config_free(&cfg);
    }

    unlink(ca);
    unlink(cert);
    unlink(key);
}

static void test_docker_host_check(void **state)
{
    static const char file[] = "listen: \":1111\"\ndocker:\n  name: a\n  host: "
                               "\"tcp://127.0.0.1:99999\"\n";
    static const char *const env_bad[] = {"WAKEGATE_DOCKER_HOST=tcp://10.0.0.1:99999", NULL};
    struct wg_config_flags flags = {0};
    char path[PATH_MAX], err[WG_CONFIG_ERR_MAX], want[PATH_MAX + 128];
    struct wg_config cfg;

    (void)state;
    /* From the file: the Docker host grammar refuses it with its line. */
    assert_int_equal(load(&cfg, file, err, sizeof err), -EINVAL);
    assert_string_equal(err, "t.yaml:4: docker.host: invalid Docker host "
                             "\"tcp://127.0.0.1:99999\": bad port in the Docker host: expected "
                             "1-65535");
    wg_config_free(&cfg);

    /* From the environment. */
    assert_int_equal(wg_config_init_defaults(&cfg), 0);
    fake_env = env_bad;
    assert_int_equal(wg_config_apply_env(&cfg, fake_getenv, err, sizeof err), -EINVAL);
    assert_prefix(err, "environment WAKEGATE_DOCKER_HOST: invalid Docker host "
                       "\"tcp://10.0.0.1:99999\": bad port");
    wg_config_free(&cfg);

    /* A tcp host with TLS passes the check made once TLS is known. */
    assert_int_equal(
        load(&cfg, "docker: {host: \"tcp://d:1\", tls: {verify: false}}\n", err, sizeof err), 0);
    assert_true(cfg.docker_tls.enabled);
    assert_int_equal(wg_config_check_docker_host(&cfg, err, sizeof err), 0);
    wg_config_free(&cfg);

    /* A value set around the setters is still checked, and located. */
    assert_int_equal(wg_config_init_defaults(&cfg), 0);
    free(cfg.docker_host);
    cfg.docker_host = strdup("tcp://h:0");
    assert_non_null(cfg.docker_host);
    assert_int_equal(wg_config_check_docker_host(&cfg, err, sizeof err), -EINVAL);
    assert_string_equal(err, "docker.host: invalid Docker host \"tcp://h:0\": bad port in the "
                             "Docker host: expected 1-65535");
    wg_config_free(&cfg);

    /* wg_config_load() refuses it and releases cfg. */
    unset_wakegate_env();
    write_temp(path, sizeof path, file, strlen(file));
    flags.config_path = path;
    assert_int_equal(wg_config_load(&cfg, &flags, err, sizeof err), -EINVAL);
    snprintf(want, sizeof want, "%s:4: docker.host: invalid Docker host", path);
    assert_prefix(err, want);
    assert_null(cfg.docker_host);
    unlink(path);
}

static void test_readiness(void **state)
{
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX];

    (void)state;
    assert_int_equal(load(&cfg,
                          "sessions:\n  readiness:\n    http_path: \"/healthz?full=1&x=%20\"\n"
                          "    interval: 20ms\n    timeout: 1s\n",
                          err, sizeof err),
                     0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_string_equal(cfg.sessions.readiness.http_path, "/healthz?full=1&x=%20");
    assert_int_equal(cfg.sessions.readiness.interval_ms, 20);
    assert_int_equal(cfg.sessions.readiness.timeout_ms, 1000);
    wg_config_free(&cfg);

    /* null is the TCP probe; the bounds are inclusive. */
    assert_int_equal(load(&cfg,
                          "sessions: {readiness: {http_path: null, interval: 1ms, timeout: 1m}}\n",
                          err, sizeof err),
                     0);
    assert_null(cfg.sessions.readiness.http_path);
    assert_int_equal(cfg.sessions.readiness.interval_ms, 1);
    assert_int_equal(cfg.sessions.readiness.timeout_ms, 60000);
    wg_config_free(&cfg);
}

/* idle.stream_after and idle.stream_heartbeat: per template, with their
 * defaults where a template says nothing. */
static void test_idle_stream_keys(void **state)
{
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX];
    const struct wg_sessions_cfg *t;

    (void)state;
    assert_int_equal(load(&cfg,
                          "sessions:\n  idle: {stream_after: 0s}\n"
                          "templates:\n  dev:\n    idle: {stream_after: 30s, stream_heartbeat: 0, "
                          "stream_max: 1h}\n"
                          "  plain: {}\n",
                          err, sizeof err),
                     0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_int_equal(cfg.sessions.idle.stream_after_ms, 0);
    assert_int_equal(cfg.sessions.idle.stream_heartbeat, 16);
    t = wg_config_template(&cfg, "dev");
    assert_int_equal(t->idle.stream_after_ms, 30000);
    assert_int_equal(t->idle.stream_heartbeat, 0);
    assert_int_equal(t->idle.stream_max_ms, 3600000);
    t = wg_config_template(&cfg, "plain");
    assert_int_equal(t->idle.stream_after_ms, 120000);
    assert_int_equal(t->idle.stream_heartbeat, 16);
    assert_int_equal(t->idle.stream_max_ms, 0);
    wg_config_free(&cfg);

    assert_int_not_equal(
        load(&cfg, "sessions:\n  idle: {stream_heartbeat: 65537}\n", err, sizeof err), 0);
    assert_prefix(err, NAME ":2: sessions.idle.stream_heartbeat");
    wg_config_free(&cfg);
}

static void test_wake_on(void **state)
{
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX];

    (void)state;
    assert_int_equal(load(&cfg,
                          "templates:\n  dev:\n    wake_on: [navigation]\n"
                          "  quiet:\n    wake_on: []\n  all: {}\n",
                          err, sizeof err),
                     0);
    assert_int_equal(cfg.sessions.wake_on, WG_WAKE_ALL);
    assert_int_equal(wg_config_template(&cfg, "dev")->wake_on, WG_WAKE_NAVIGATION);
    assert_int_equal(wg_config_template(&cfg, "quiet")->wake_on, 0);
    assert_int_equal(wg_config_template(&cfg, "all")->wake_on, WG_WAKE_ALL);
    wg_config_free(&cfg);

    assert_int_not_equal(load(&cfg, "sessions:\n  wake_on: [navigation, tabs]\n", err, sizeof err),
                         0);
    assert_prefix(err, NAME ":2: sessions.wake_on[1]: unknown request class \"tabs\"");
    wg_config_free(&cfg);
}

/* waking_page: read at load (UTF-8 text, at most WG_WAKING_PAGE_MAX bytes),
 * per template; page_after per template, 1 s by default. */
static void test_waking_page(void **state)
{
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX], page[256], big[256], bad[256], yaml[1024];
    static const char html[] = "<h1>{{session}}: {{state}}</h1>\n";
    char *large = malloc(WG_WAKING_PAGE_MAX + 2);

    (void)state;
    assert_non_null(large);
    memset(large, 'a', WG_WAKING_PAGE_MAX + 1);
    write_temp(page, sizeof page, html, sizeof(html) - 1);
    write_temp(big, sizeof big, large, WG_WAKING_PAGE_MAX + 1);
    write_temp(bad, sizeof bad, "<p>\x01</p>", 8);
    free(large);

    snprintf(yaml, sizeof yaml,
             "templates:\n  dev:\n    waking_page: %s\n    page_after: 250ms\n  plain: {}\n", page);
    assert_int_equal(load(&cfg, yaml, err, sizeof err), 0);
    const struct wg_sessions_cfg *t = wg_config_template(&cfg, "dev");
    assert_string_equal(t->waking_page_html, html);
    assert_int_equal(t->waking_page_len, sizeof(html) - 1);
    assert_int_equal(t->page_after_ms, 250);
    t = wg_config_template(&cfg, "plain");
    assert_null(t->waking_page_html);
    assert_int_equal(t->page_after_ms, 1000);
    assert_null(cfg.sessions.waking_page_html);
    wg_config_free(&cfg);

    snprintf(yaml, sizeof yaml, "sessions:\n  waking_page: %s\n", big);
    assert_int_not_equal(load(&cfg, yaml, err, sizeof err), 0);
    assert_prefix(err, NAME ":2: sessions.waking_page: ");
    assert_non_null(strstr(err, "is larger than 65536 bytes"));
    wg_config_free(&cfg);
    snprintf(yaml, sizeof yaml, "sessions:\n  waking_page: %s\n", bad);
    assert_int_not_equal(load(&cfg, yaml, err, sizeof err), 0);
    assert_non_null(strstr(err, "is not UTF-8 text"));
    wg_config_free(&cfg);
    assert_int_not_equal(
        load(&cfg, "templates:\n  x:\n    waking_page: /nonexistent/page.html\n", err, sizeof err),
        0);
    assert_prefix(err, NAME ":3: templates.x.waking_page: cannot read /nonexistent/page.html");
    wg_config_free(&cfg);
    unlink(page);
    unlink(big);
    unlink(bad);
}

/* ports: by name, in short and long form; port: as one of them; the
 * lookups the proxy's {port} routes make; and the errors. */
static void test_named_ports(void **state)
{
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX];
    const struct wg_sessions_cfg *t;
    const struct wg_named_port *p;
    static const struct {
        const char *yaml, *want;
    } bad[] = {
        {"sessions:\n  ports: {Web: 80}\n",
         "t.yaml:2: sessions.ports.Web: invalid port name (use 1 to 32 lowercase letters and "
         "digits; no '-' or '_', which a host label joins it to a session id by)"},
        {"sessions:\n  ports: {my-api: 80}\n",
         "t.yaml:2: sessions.ports.my-api: invalid port name"},
        {"sessions:\n  ports: {web: 0}\n",
         "t.yaml:2: sessions.ports.web: 0 is out of range (1 to 65535)"},
        {"sessions:\n  ports: {web: {ready: true}}\n",
         "t.yaml:2: sessions.ports.web: needs port: the container port"},
        {"sessions:\n  ports: {web: {port: 80, http_path: /h}}\n",
         "t.yaml:2: sessions.ports.web: http_path is the readiness of a port: set ready: true"},
        {"sessions:\n  ports: {web: {port: 80, colour: red}}\n",
         "t.yaml:2: sessions.ports.web.colour: unknown key"},
        {"sessions:\n  ports: [80]\n",
         "t.yaml:2: sessions.ports: expected a mapping of port names to ports"},
        {"templates:\n  a:\n    port: api\n    ports: {web: 80}\n",
         "t.yaml:3: templates.a.port: \"api\" is neither a number nor a name of ports:"},
        {"templates:\n  a:\n    ports: {web: 80, web: 81}\n",
         "t.yaml:3: templates.a.ports.web: port \"web\" is given twice"},
    };

    (void)state;
    assert_int_equal(load(&cfg,
                          "sessions:\n  ports: {dash: 9000}\n"
                          "templates:\n  app:\n    port: web\n"
                          "    ports:\n      web: 5173\n"
                          "      api: {port: 8000, ready: true, http_path: /health}\n"
                          "      docs: {port: 8080}\n",
                          err, sizeof err),
                     0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    t = wg_config_template(&cfg, "app");
    assert_int_equal(t->port, 5173);
    assert_int_equal(t->ports_len, 3);
    p = wg_config_named_port(t, "api", 3);
    assert_non_null(p);
    assert_int_equal(p->port, 8000);
    assert_true(p->ready);
    assert_string_equal(p->http_path, "/health");
    assert_int_equal(p->line, 8);
    p = wg_config_named_port(t, "docs", 4);
    assert_int_equal(p->port, 8080);
    assert_false(p->ready);
    assert_null(p->http_path);
    assert_false(wg_config_named_port(t, "web", 3)->ready);
    assert_null(wg_config_named_port(t, "dash", 4));
    assert_null(wg_config_named_port(t, "ap", 2));
    assert_true(wg_config_port_name_known(&cfg, "dash", 4));
    assert_true(wg_config_port_name_known(&cfg, "docs", 4));
    assert_false(wg_config_port_name_known(&cfg, "nope", 4));
    assert_true(wg_port_name_valid("8000", 4));
    assert_false(wg_port_name_valid("a-b", 3));
    assert_false(wg_port_name_valid("", 0));
    assert_false(wg_port_name_valid("abcdefghijklmnopqrstuvwxyz0123456", 33));
    wg_config_free(&cfg);

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int r = load(&cfg, bad[i].yaml, err, sizeof err);
        if (r == 0)
            r = wg_config_validate(&cfg, err, sizeof err);
        if (r != -EINVAL)
            fail_msg("case %zu: accepted, want \"%s\"", i, bad[i].want);
        assert_prefix(err, bad[i].want);
        wg_config_free(&cfg);
    }
}

static void test_templates(void **state)
{
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX];
    const struct wg_sessions_cfg *t;

    (void)state;
    assert_int_equal(
        load(&cfg,
             "templates:\n  small:\n    image: s:1\n    images: [\"s:*\"]\n"
             "    cmd: [sh, -c, x]\n    env: [A=1]\n    port: 9000\n"
             "    limits: {memory: 64MiB}\n    limits_max: {memory: 128MiB, pids: 99}\n"
             "    binds: {allow: [/srv/work/, cache]}\n    overridable: [cmd, limits]\n"
             "  tiny: {}\n"
             "sessions:\n  image: d:1\n",
             err, sizeof err),
        0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_int_equal(cfg.templates_len, 2);
    t = wg_config_template(&cfg, "small");
    assert_non_null(t);
    assert_string_equal(t->name, "small");
    assert_string_equal(t->image, "s:1");
    assert_string_equal(t->images[0], "s:*");
    assert_string_equal(t->cmd[2], "x");
    assert_null(t->cmd[3]);
    assert_string_equal(t->env[0], "A=1");
    assert_int_equal(t->port, 9000);
    assert_int_equal(t->sandbox.memory_bytes, 64ull << 20);
    assert_int_equal(t->sandbox.pids, 512); /* the built-in default, not the sessions: block's */
    assert_int_equal(t->limits_max.memory_bytes, 128ull << 20);
    assert_int_equal(t->limits_max.pids, 99);
    assert_int_equal(t->binds_allow_len, 2);
    assert_int_equal(t->overridable, WG_OVERRIDE_CMD | WG_OVERRIDE_LIMITS);
    /* A template starts from the built-in defaults: its own image, env only. */
    t = wg_config_template(&cfg, "tiny");
    assert_non_null(t);
    assert_string_equal(t->image, "wakegate-demo:latest");
    assert_int_equal(t->overridable, 0);
    assert_int_equal(t->binds_allow_len, 0);
    t = wg_config_template(&cfg, "default");
    assert_ptr_equal(t, &cfg.sessions);
    assert_string_equal(t->name, "default");
    assert_string_equal(t->image, "d:1");
    assert_int_equal(t->overridable, WG_OVERRIDE_DEFAULT);
    assert_ptr_equal(wg_config_template(&cfg, NULL), &cfg.sessions);
    assert_null(wg_config_template(&cfg, "nope"));
    wg_config_free(&cfg);
}

static void test_sandbox(void **state)
{
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX], name[80];
    uint64_t v;

    (void)state;
    /* The defaults are never unlimited. */
    assert_int_equal(wg_config_init_defaults(&cfg), 0);
    assert_int_equal(cfg.sessions.sandbox.memory_bytes, 1ull << 30);
    assert_int_equal(cfg.sessions.sandbox.nano_cpus, 1000000000ull);
    assert_int_equal(cfg.sessions.sandbox.pids, 512);
    assert_null(cfg.sessions.sandbox.cap_add);
    assert_false(cfg.sessions.sandbox.read_only_root);
    wg_config_free(&cfg);

    assert_int_equal(load(&cfg,
                          "sessions:\n  limits: {memory: 64MiB, cpus: 0.25, pids: 64}\n"
                          "  capabilities: {add: [net_bind_service, CAP_CHOWN]}\n"
                          "  read_only_root: true\n  user: \"1000:1000\"\n  runtime: runsc\n",
                          err, sizeof err),
                     0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_int_equal(cfg.sessions.sandbox.memory_bytes, 64ull << 20);
    assert_int_equal(cfg.sessions.sandbox.nano_cpus, 250000000ull);
    assert_int_equal(cfg.sessions.sandbox.pids, 64);
    assert_int_equal(cfg.sessions.sandbox.cap_add_len, 2);
    assert_string_equal(cfg.sessions.sandbox.cap_add[0], "NET_BIND_SERVICE");
    assert_string_equal(cfg.sessions.sandbox.cap_add[1], "CHOWN");
    assert_null(cfg.sessions.sandbox.cap_add[2]);
    assert_true(cfg.sessions.sandbox.read_only_root);
    assert_string_equal(cfg.sessions.sandbox.user, "1000:1000");
    assert_string_equal(cfg.sessions.sandbox.runtime, "runsc");
    wg_config_free(&cfg);

    /* The session network: a name of its own unless given, the subnet in
     * the form the engine shows, no egress unless said. */
    assert_int_equal(load(&cfg,
                          "sessions: {network: {subnet: 10.80.3.7/20}}\n"
                          "templates:\n  web: {network: {name: web-net, egress: true}}\n",
                          err, sizeof err),
                     0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_string_equal(cfg.sessions.sandbox.subnet, "10.80.0.0/20");
    assert_false(cfg.sessions.sandbox.egress);
    assert_string_equal(wg_config_network_name(&cfg.sessions, name, sizeof name),
                        "wakegate-default");
    assert_null(cfg.templates[0].sandbox.subnet);
    assert_true(cfg.templates[0].sandbox.egress);
    assert_string_equal(wg_config_network_name(&cfg.templates[0], name, sizeof name), "web-net");
    wg_config_free(&cfg);

    assert_int_equal(wg_config_parse_cpus("2", &v), 0);
    assert_int_equal(v, 2000000000ull);
    assert_int_equal(wg_config_parse_cpus("0.000000001", &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(wg_config_parse_cpus("1.", &v), -EINVAL);
    assert_int_equal(wg_config_parse_cpus(".5", &v), -EINVAL);
    assert_int_equal(wg_config_parse_cpus("-1", &v), -EINVAL);
    assert_int_equal(wg_config_parse_cpus("0.0000000001", &v), -EINVAL);
    assert_string_equal(wg_config_capability("cap_sys_admin"), "SYS_ADMIN");
    assert_null(wg_config_capability("ALL"));
}

/* ------------------------------------------------------------------------ */
/* Scalar parsers.                                                           */

static void test_parse_duration(void **state)
{
    static const struct {
        const char *s;
        uint64_t ms;
    } good[] = {
        {"250ms", 250},
        {"30s", 30000},
        {"20m", 1200000},
        {"1h", 3600000},
        {"0s", 0},
        {"0ms", 0},
        {"0", 0},
        {"007s", 7000},
        {"18446744073709551615ms", UINT64_MAX},
        {"5124095576030h", 5124095576030ull * 3600000},
    };
    static const char *const bad[] = {
        "",
        "s",
        "ms",
        "-1s",
        "+1s",
        "1",
        "30",
        "1.5s",
        "1 s",
        " 1s",
        "1s ",
        "1S",
        "1d",
        "1hh",
        "1h30m",
        "1sm",
        "0x10s",
        "18446744073709551616ms",
        "18446744073709551615s",
        "5124095576031h",
        "1e3ms",
    };
    uint64_t v;

    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        v = 1;
        if (wg_config_parse_duration(good[i].s, &v) != 0)
            fail_msg("duration \"%s\" rejected", good[i].s);
        assert_true(v == good[i].ms);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 12345;
        if (wg_config_parse_duration(bad[i], &v) != -EINVAL)
            fail_msg("duration \"%s\" accepted", bad[i]);
        assert_true(v == 12345);
    }
    assert_int_equal(wg_config_parse_duration(NULL, &v), -EINVAL);
}

static void test_parse_size(void **state)
{
    static const struct {
        const char *s;
        uint64_t bytes;
    } good[] = {
        {"512", 512},
        {"0", 0},
        {"0KiB", 0},
        {"64KiB", 65536},
        {"1MiB", 1 << 20},
        {"1GiB", 1ull << 30},
        {"18446744073709551615", UINT64_MAX},
        {"17179869183GiB", 17179869183ull << 30},
    };
    static const char *const bad[] = {
        "",
        "KiB",
        "8KB",
        "8kib",
        "8K",
        "8B",
        "1 KiB",
        "-1",
        "+1",
        "1.5MiB",
        "0x10",
        "18446744073709551616",
        "17179869184GiB",
        "1TiB",
        " 1",
        "1 ",
    };
    uint64_t v;

    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        v = 1;
        if (wg_config_parse_size(good[i].s, &v) != 0)
            fail_msg("size \"%s\" rejected", good[i].s);
        assert_true(v == good[i].bytes);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (wg_config_parse_size(bad[i], &v) != -EINVAL)
            fail_msg("size \"%s\" accepted", bad[i]);
    assert_int_equal(wg_config_parse_size(NULL, &v), -EINVAL);
}

static void test_parse_addr(void **state)
{
    static const struct {
        const char *s;
        int family;
        const char *ip;
        unsigned port;
    } good[] = {
        {"127.0.0.1:8080", AF_INET, "127.0.0.1", 8080},
        {"[::1]:8080", AF_INET6, "::1", 8080},
        {":8080", AF_INET, "0.0.0.0", 8080},
        {"localhost:80", AF_INET, "127.0.0.1", 80},
        {"LocalHost:80", AF_INET, "127.0.0.1", 80},
        {"0.0.0.0:0", AF_INET, "0.0.0.0", 0},
        {"[::]:443", AF_INET6, "::", 443},
        {"[::ffff:10.0.0.1]:1", AF_INET6, "::ffff:10.0.0.1", 1},
        {"10.1.2.3:65535", AF_INET, "10.1.2.3", 65535},
        {"10.1.2.3:080", AF_INET, "10.1.2.3", 80},
    };
    static const char *const bad[] = {
        "",
        "8080",
        ":",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "127.0.0.1:+80",
        "127.0.0.1:000080",
        "127.0.0.1:80 ",
        " 127.0.0.1:80",
        "::1:80",
        "[::1]",
        "[::1]80",
        "[]:80",
        "[127.0.0.1]:80",
        "[::1:80",
        "example.com:80",
        "1.2.3:80",
        "256.0.0.1:80",
        "[fe80::1%eth0]:80",
        "localhost",
    };
    struct wg_addr a;
    char ip[64];

    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        memset(&a, 0, sizeof a);
        if (wg_config_parse_addr(good[i].s, &a) != 0)
            fail_msg("address \"%s\" rejected", good[i].s);
        assert_string_equal(a.text, good[i].s);
        assert_int_equal(a.sa.ss_family, good[i].family);
        assert_int_equal(a.salen, good[i].family == AF_INET ? sizeof(struct sockaddr_in)
                                                            : sizeof(struct sockaddr_in6));
        assert_string_equal(ip_of(&a, ip, sizeof ip), good[i].ip);
        assert_int_equal(port_of(&a), good[i].port);
        free(a.text);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&a, 0, sizeof a);
        if (wg_config_parse_addr(bad[i], &a) != -EINVAL)
            fail_msg("address \"%s\" accepted", bad[i]);
        /* Nothing is written on failure. */
        assert_null(a.text);
        assert_int_equal(a.salen, 0);
    }
    assert_int_equal(wg_config_parse_addr(NULL, &a), -EINVAL);
}

static void test_parse_cidr(void **state)
{
    static const struct {
        const char *s;
        int family;
        const char *net;
        unsigned prefix;
    } good[] = {
        {"10.0.0.0/8", AF_INET, "10.0.0.0", 8},
        {"192.168.1.5", AF_INET, "192.168.1.5", 32},
        {"::1/128", AF_INET6, "::1", 128},
        {"::1", AF_INET6, "::1", 128},
        {"fd00::/8", AF_INET6, "fd00::", 8},
        {"0.0.0.0/0", AF_INET, "0.0.0.0", 0},
        {"::/0", AF_INET6, "::", 0},
        /* host bits are dropped */
        {"10.1.2.3/8", AF_INET, "10.0.0.0", 8},
        {"172.16.255.1/12", AF_INET, "172.16.0.0", 12},
        {"2001:db8::1/33", AF_INET6, "2001:db8::", 33},
        /* v4-mapped networks become v4 networks */
        {"::ffff:10.0.0.0/104", AF_INET, "10.0.0.0", 8},
        {"::ffff:10.0.0.7", AF_INET, "10.0.0.7", 32},
    };
    static const char *const bad[] = {
        "",
        "10.0.0.0/33",
        "::/129",
        "10.0.0.0/",
        "10.0.0.0/-1",
        "10.0.0.0/+8",
        "/8",
        "10.0.0/8",
        "10.0.0.0/8/8",
        "hostname",
        "10.0.0.0/ 8",
        "10.0.0.0/0008",
        "10.0.0.0 /8",
        "1.2.3.4.5",
    };
    struct wg_cidr c;
    char buf[64];

    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (wg_config_parse_cidr(good[i].s, &c) != 0)
            fail_msg("network \"%s\" rejected", good[i].s);
        assert_int_equal(c.family, good[i].family);
        assert_int_equal(c.prefix, good[i].prefix);
        inet_ntop(c.family, c.addr, buf, sizeof buf);
        assert_string_equal(buf, good[i].net);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (wg_config_parse_cidr(bad[i], &c) != -EINVAL)
            fail_msg("network \"%s\" accepted", bad[i]);
    assert_int_equal(wg_config_parse_cidr(NULL, &c), -EINVAL);
}

static bool contains(const struct wg_cidr *nets, size_t n, const char *ip)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof ss);
    if (strchr(ip, ':') != NULL) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

        sin6->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

        sin->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
    }
    return wg_cidr_contains_any(nets, n, (const struct sockaddr *)&ss);
}

static void test_cidr_contains(void **state)
{
    static const char *const spec[] = {"10.0.0.0/8", "fd00::/8", "192.168.1.5", "172.16.0.0/12",
                                       "::ffff:100.64.0.0/106"};
    struct wg_cidr nets[5];
    struct sockaddr_un un;

    (void)state;
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(wg_config_parse_cidr(spec[i], &nets[i]), 0);

    assert_true(contains(nets, 5, "10.2.3.4"));
    assert_true(contains(nets, 5, "10.255.255.255"));
    assert_false(contains(nets, 5, "11.0.0.1"));
    assert_false(contains(nets, 5, "9.255.255.255"));
    assert_true(contains(nets, 5, "192.168.1.5"));
    assert_false(contains(nets, 5, "192.168.1.6"));
    assert_true(contains(nets, 5, "172.31.255.255"));
    assert_false(contains(nets, 5, "172.32.0.0"));
    /* v6 */
    assert_true(contains(nets, 5, "fd12::1"));
    assert_false(contains(nets, 5, "fe80::1"));
    assert_false(contains(nets, 5, "::1"));
    /* v4-mapped peers count as v4 */
    assert_true(contains(nets, 5, "::ffff:10.9.9.9"));
    assert_true(contains(nets, 5, "::ffff:192.168.1.5"));
    assert_false(contains(nets, 5, "::ffff:192.168.1.6"));
    assert_true(contains(nets, 5, "100.64.0.1")); /* written as a v4-mapped network */
    assert_true(contains(nets, 5, "::ffff:100.127.255.255"));
    assert_false(contains(nets, 5, "100.128.0.0"));
    /* v4-compatible (not mapped) v6 is not v4 */
    assert_false(contains(nets, 5, "::10.0.0.1"));

    /* /0 holds everything of its family */
    struct wg_cidr any4, any6;
    assert_int_equal(wg_config_parse_cidr("0.0.0.0/0", &any4), 0);
    assert_int_equal(wg_config_parse_cidr("::/0", &any6), 0);
    assert_true(contains(&any4, 1, "203.0.113.9"));
    assert_true(contains(&any4, 1, "::ffff:203.0.113.9"));
    assert_false(contains(&any4, 1, "2001:db8::1"));
    assert_true(contains(&any6, 1, "2001:db8::1"));

    /* nothing, and other families */
    assert_false(contains(NULL, 0, "10.0.0.1"));
    assert_false(wg_cidr_contains_any(nets, 5, NULL));
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    assert_false(wg_cidr_contains_any(nets, 5, (const struct sockaddr *)&un));
}

/* ------------------------------------------------------------------------ */
/* deploy/wakegate.example.yaml documents every key at its default, so it
 * must load, and load to the defaults. */

/* The source tree, from this binary (BUILD/test/unit/test_config) and
 * __FILE__, which meson gives relative to BUILD. Found without the working
 * directory, so the test runs the same from meson and by hand. */
static void source_root(char *out, size_t len)
{
    char exe[PATH_MAX], file[2 * PATH_MAX + 2], *real, *p;
    ssize_t n;

    n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    assert_true(n > 0);
    exe[n] = '\0';
    for (int i = 0; i < 3; i++) {
        p = strrchr(exe, '/');
        assert_non_null(p);
        *p = '\0';
    }
    if (__FILE__[0] == '/')
        snprintf(file, sizeof file, "%s", __FILE__);
    else
        snprintf(file, sizeof file, "%s/%s", exe, __FILE__);
    real = realpath(file, NULL);
    if (real == NULL)
        fail_msg("cannot find this test's source %s", file);
    for (int i = 0; i < 3; i++) {
        p = strrchr(real, '/');
        assert_non_null(p);
        *p = '\0';
    }
    snprintf(out, len, "%s", real);
    free(real);
}

static void test_example_file(void **state)
{
    char root[PATH_MAX], path[PATH_MAX + 64], err[WG_CONFIG_ERR_MAX];
    struct wg_config def, cfg;

    (void)state;
    source_root(root, sizeof root);
    snprintf(path, sizeof path, "%s/deploy/wakegate.example.yaml", root);
    assert_int_equal(wg_config_init_defaults(&def), 0);
    assert_int_equal(wg_config_init_defaults(&cfg), 0);
    if (wg_config_load_file(&cfg, path, err, sizeof err) != 0)
        fail_msg("%s", err);

    assert_int_equal(cfg.role, def.role);
    assert_string_equal(cfg.listen.text, def.listen.text);
    assert_string_equal(cfg.admin_listen.text, def.admin_listen.text);
    assert_string_equal(cfg.docker_host, def.docker_host);
    assert_int_equal(cfg.max_concurrent_starts, def.max_concurrent_starts);
    assert_int_equal(cfg.redis_private.enabled, def.redis_private.enabled);
    assert_string_equal(cfg.redis_private.server, def.redis_private.server);
    assert_null(cfg.redis_private.dir);
    assert_int_equal(cfg.redis_private.appendonly, def.redis_private.appendonly);
    assert_int_equal(cfg.redis_private.start_timeout_ms, def.redis_private.start_timeout_ms);
    assert_int_equal(cfg.redis_private.stop_timeout_ms, def.redis_private.stop_timeout_ms);
    assert_int_equal(cfg.redis_outage_grace_ms, def.redis_outage_grace_ms);
    assert_int_equal(cfg.redis_state_timeout_ms, def.redis_state_timeout_ms);
    assert_string_equal(cfg.sessions.image, def.sessions.image);
    assert_int_equal(cfg.sessions.port, def.sessions.port);
    assert_int_equal(cfg.sessions.wake_timeout_ms, def.sessions.wake_timeout_ms);
    {
        struct wg_idle_cfg a = cfg.sessions.idle, b = def.sessions.idle;
        assert_string_equal(a.busy_file, b.busy_file);
        a.busy_file = b.busy_file = NULL;
        assert_memory_equal(&a, &b, sizeof a);
    }
    assert_string_equal(cfg.sessions.save.path, def.sessions.save.path);
    assert_int_equal(cfg.sessions.save.timeout_ms, def.sessions.save.timeout_ms);
    assert_int_equal(cfg.sessions.save.on_failure, def.sessions.save.on_failure);
    assert_null(cfg.sessions.readiness.http_path);
    assert_int_equal(cfg.sessions.readiness.interval_ms, def.sessions.readiness.interval_ms);
    assert_int_equal(cfg.sessions.readiness.timeout_ms, def.sessions.readiness.timeout_ms);
    assert_int_equal(cfg.sessions.sandbox.memory_bytes, def.sessions.sandbox.memory_bytes);
    assert_int_equal(cfg.sessions.sandbox.nano_cpus, def.sessions.sandbox.nano_cpus);
    assert_int_equal(cfg.sessions.sandbox.pids, def.sessions.sandbox.pids);
    assert_int_equal(cfg.sessions.sandbox.cap_add_len, 0);
    assert_false(cfg.sessions.sandbox.read_only_root);
    assert_null(cfg.sessions.sandbox.user);
    assert_null(cfg.sessions.sandbox.runtime);
    assert_int_equal(cfg.sessions.overridable, def.sessions.overridable);
    assert_int_equal(cfg.sessions.images_len, 0);
    assert_int_equal(cfg.sessions.binds_allow_len, 0);
    assert_int_equal(cfg.templates_len, 0);
    assert_int_equal(cfg.docker_tls.enabled, def.docker_tls.enabled);
    assert_int_equal(cfg.docker_tls.verify, def.docker_tls.verify);
    assert_null(cfg.docker_tls.ca);
    assert_memory_equal(&cfg.limits, &def.limits, sizeof def.limits);
    assert_memory_equal(&cfg.upstream, &def.upstream, sizeof def.upstream);
    assert_int_equal(cfg.log_level, def.log_level);
    assert_int_equal(cfg.log_format, def.log_format);
    assert_int_equal(cfg.access_log, def.access_log);
    assert_int_equal(cfg.shutdown_grace_ms, def.shutdown_grace_ms);
    assert_true(cfg.routes_len >= 3);

    /* The example's token and key files are deployment paths that are not
     * here: a key of the test's stands in for the latter. */
    free(cfg.admin_token_file);
    cfg.admin_token_file = NULL;
    char key[PATH_MAX];
    write_temp(key, sizeof key, "0123456789abcdef0123456789abcdef", 32);
    assert_non_null(cfg.access.secret_file);
    free(cfg.access.secret_file);
    cfg.access.secret_file = strdup(key);
    if (wg_config_validate(&cfg, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(cfg.access.secret_len, 32);
    assert_int_equal(cfg.access.link_ttl_ms, def.access.link_ttl_ms);
    assert_int_equal(cfg.access.link_ttl_max_ms, def.access.link_ttl_max_ms);
    unlink(key);
    wg_config_free(&cfg);
    wg_config_free(&def);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_empty_files_keep_defaults),
        cmocka_unit_test(test_reload_over_values),
        cmocka_unit_test(test_error_cases),
        cmocka_unit_test(test_redis_private),
        cmocka_unit_test(test_redis_private_dir),
        cmocka_unit_test(test_env_overrides_file),
        cmocka_unit_test(test_env_empty_is_unset),
        cmocka_unit_test(test_env_errors),
        cmocka_unit_test(test_workers_key),
        cmocka_unit_test(test_flags_override_env),
        cmocka_unit_test(test_flag_errors),
        cmocka_unit_test(test_load_sequence),
        cmocka_unit_test(test_load_file_errors),
        cmocka_unit_test(test_token_file),
        cmocka_unit_test(test_read_token_file),
        cmocka_unit_test(test_read_token_env),
        cmocka_unit_test(test_access),
        cmocka_unit_test(test_docker_tls),
        cmocka_unit_test(test_placement_keys),
        cmocka_unit_test(test_docker_host_check),
        cmocka_unit_test(test_readiness),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_addr),
        cmocka_unit_test(test_parse_cidr),
        cmocka_unit_test(test_cidr_contains),
        cmocka_unit_test(test_example_file),
        cmocka_unit_test(test_sandbox),
        cmocka_unit_test(test_templates),
        cmocka_unit_test(test_named_ports),
        cmocka_unit_test(test_idle_stream_keys),
        cmocka_unit_test(test_wake_on),
        cmocka_unit_test(test_waking_page),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
