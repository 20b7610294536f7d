/* common/config.h - wakegate configuration: defaults, YAML file, environment,
 * flags, in that order, each overriding the one before.
 *
 * The whole configuration is validated at startup. Every error names where
 * the value came from: "FILE:LINE: KEY: problem" for the YAML file,
 * "environment WAKEGATE_X: problem" or "flag --x: problem" otherwise.
 * After startup a configuration does not change; a SIGHUP reload builds a new
 * one and takes only its routes and its templates: entries.
 *
 * Ownership: every string and array in struct wg_config is owned by it and
 * released by wg_config_free(). */
#ifndef WG_COMMON_CONFIG_H
#define WG_COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/log.h"

#define WG_CONFIG_ERR_MAX 512
/* limits.buffer_high_water's floor: one page. The proxy's reads toward a
 * slow peer are cut to what is left under the mark, so a smaller mark would
 * only mean tiny reads. */
#define WG_BUFFER_HIGH_WATER_MIN 4096

enum wg_role { WG_ROLE_ALL = 0, WG_ROLE_PROXY, WG_ROLE_ORCHESTRATOR };

/* A "host:port", "[v6]:port" or ":port" listen or upstream address. */
struct wg_addr {
    char *text; /* as written */
    struct sockaddr_storage sa;
    socklen_t salen;
};

/* An IPv4 or IPv6 network, for trusted_proxies. */
struct wg_cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    unsigned prefix;
};

/* One routes[] entry. A route matches when every match field it sets
 * matches; the first matching route wins. */
struct wg_route_cfg {
    int line; /* line of the entry in the file, 0 if not from a file */
    /* match */
    char *host;         /* exact host, or one label holding "{session}"; NULL: any */
    char *path_prefix;  /* "/x/", may hold one "{session}" segment; NULL: any */
    char *header_name;  /* NULL: no header condition */
    char *header_value; /* exact value, "*" for presence, or "{session}"; NULL with a name: "*" */
    /* action */
    bool strip_prefix; /* remove the matched path_prefix before forwarding */
    bool has_upstream; /* static reverse proxy to upstream */
    struct wg_addr upstream;
    unsigned port;      /* session routes: container port; 0 = sessions.port */
    char *access;       /* "public" or "private" as written; NULL: the session's template's */
    bool access_public; /* session routes: no credentials needed (access: public) */
    /* access not written: the session's template decides (private unless it
     * says access: public), once its record is known */
    bool access_by_template;
};

/* Limits of PROXY-RULES.md. Durations are in milliseconds; 0 disables a
 * limit only where said. */
struct wg_limits {
    size_t request_line_max;         /* 8 KiB, else 414 */
    size_t header_line_max;          /* 8 KiB, else 431 */
    size_t head_max;                 /* 32 KiB, else 431 */
    unsigned header_count_max;       /* 100, else 431 */
    uint64_t head_timeout_ms;        /* 20 s total to receive the head, else 408 */
    uint64_t body_idle_ms;           /* 30 s without a body byte: close */
    uint64_t send_idle_ms;           /* 60 s with the client reading nothing: close */
    uint64_t keepalive_idle_ms;      /* 60 s between requests: close quietly */
    unsigned keepalive_requests_max; /* 10,000 requests per connection */
    uint64_t body_max;               /* request body bytes; 0 = no limit (default), else 413 */
    unsigned connections_max;        /* client connections at once; new ones are refused */
    size_t buffer_high_water;        /* 32 KiB: bytes queued to a slow peer, at most */
    uint64_t tunnel_idle_ms;         /* WebSocket/Upgrade tunnel with no byte either way */
};

struct wg_upstream_cfg {
    uint64_t connect_timeout_ms;  /* 5 s, else 504 */
    uint64_t response_timeout_ms; /* 60 s to the response head, else 504 */
    uint64_t keepalive_idle_ms;   /* 60 s a pooled connection may stay idle */
    unsigned keepalive_max;       /* idle connections kept per upstream address */
};

struct wg_idle_cfg {
    uint64_t pause_after_ms; /* 0 = tier disabled */
    uint64_t stop_after_ms;  /* 0 = tier disabled */
    /* Proxies write a session's activity to Redis at most this often. */
    uint64_t activity_interval_ms; /* 1 s */
    uint64_t reap_every_ms;        /* 1 s between reaper passes */
    /* Between running -> draining and the save: requests in flight finish
     * and activity not yet written by the proxies lands (> activity_interval). */
    uint64_t drain_ms; /* 2 s */
    /* A stream (WebSocket, SSE, a long response) that carried only control
     * frames or heartbeats this long stops counting as activity; 0: an open
     * stream counts all its life. Read per template by the proxy. */
    uint64_t stream_after_ms; /* 2 min */
    /* A WebSocket message or SSE event of at most this many payload bytes
     * is a heartbeat, not use (proxy/stream_use.h). */
    uint64_t stream_heartbeat; /* 16 bytes */
    /* A stream counts at most this long after it began, data or not (the
     * session then sleeps unless requests keep it awake); 0: no cap. */
    uint64_t stream_max_ms; /* 0 */
    /* The container's own work (orchestrator/cpu_watch.c): every
     * cpu_interval (process-wide; 0 = off) the CPU time of each running
     * container of this host is sampled; a session whose average over the
     * interval reached cpu_threshold (per template, nano CPUs) is active. */
    uint64_t cpu_interval_ms;    /* 10 s */
    uint64_t cpu_threshold_nano; /* 0.1 CPU */
    /* Docker stats and inspect calls in flight during a pass: 8. */
    unsigned cpu_stats_concurrency;
    bool cpu_cgroup_files; /* true: a local engine's cgroup files; false: stats calls only */
    /* Per template: a file in the container whose modification time counts
     * as the session's activity ("/tmp/wakegate-busy"; NULL: none). Read
     * with the cgroup files, so a local engine only. */
    char *busy_file;
};

enum wg_save_failure { WG_SAVE_KEEP_AWAKE = 0, WG_SAVE_STOP };

struct wg_save_cfg {
    char **command; /* argv, NULL-terminated; NULL = built-in git hook */
    size_t command_len;
    char *path; /* work tree inside the container */
    uint64_t timeout_ms;
    enum wg_save_failure on_failure;
    bool before_pause;         /* run the hook before the pause tier too (default false) */
    uint64_t retry_backoff_ms; /* first wait after a failed save; doubles per failure */
    uint64_t retry_max_ms;     /* cap of that wait */
};

/* How the orchestrator decides that a started container without a Docker
 * HEALTHCHECK is ready (one with a HEALTHCHECK waits for "healthy"). */
struct wg_readiness_cfg {
    char *http_path;      /* NULL: a TCP connect is enough; else GET it, ready on 2xx/3xx */
    uint64_t interval_ms; /* 2 ms between a failed attempt and the next */
    uint64_t timeout_ms;  /* 50 ms per attempt (connect, and the status line for HTTP) */
};

/* What a session container may use and do (docs/configuration.md, "Sandbox").
 * The limits are never "unlimited": each has a default and a bounded range. */
struct wg_sandbox_cfg {
    uint64_t memory_bytes; /* HostConfig.Memory, and MemorySwap the same (no swap); 1 GiB */
    uint64_t nano_cpus;    /* HostConfig.NanoCpus: CPUs x 1e9; 1 CPU */
    unsigned pids;         /* HostConfig.PidsLimit; 512 */
    char **cap_add;        /* added after CapDrop ALL: "NET_BIND_SERVICE", ... (no CAP_) */
    size_t cap_add_len;
    bool read_only_root; /* ReadonlyRootfs with a tmpfs /tmp (default false) */
    char *user;          /* Config.User, "uid[:gid]" or a name; NULL: the image's */
    char *runtime;       /* HostConfig.Runtime ("runsc"); NULL: the engine's default */
    /* The session network (common/config_network.c): its name (NULL:
     * "wakegate-<template>", wg_config_network_name()), its IPv4 subnet
     * (NULL: the engine's pools) and whether it routes off the host. */
    char *network;
    char *subnet;
    bool egress; /* default false: an Internal network */
};

/* What a caller of POST /v1/sessions may set besides env (always) and
 * image, binds (by the allow-lists): templates[].overridable. */
enum wg_override {
    WG_OVERRIDE_CMD = 1u << 0,
    WG_OVERRIDE_LABELS = 1u << 1,
    WG_OVERRIDE_PORT = 1u << 2,
    WG_OVERRIDE_IDLE = 1u << 3,
    WG_OVERRIDE_SAVE = 1u << 4,
    WG_OVERRIDE_LIMITS = 1u << 5, /* up to limits_max */
};
/* The name of each overridable field (as in the request and in
 * templates[].overridable) and its bit, for the configuration and the API. */
struct wg_override_name {
    const char *name;
    unsigned bit;
};
extern const struct wg_override_name wg_override_names[];
extern const size_t wg_override_names_len;
/* The sessions: block's, so callers of before templates keep working. */
#define WG_OVERRIDE_DEFAULT                                                                        \
    (WG_OVERRIDE_CMD | WG_OVERRIDE_LABELS | WG_OVERRIDE_PORT | WG_OVERRIDE_IDLE | WG_OVERRIDE_SAVE)

/* The request classes that may wake a sleeping session: a template's
 * wake_on. A class not listed gets 503 with the state and wakes nothing. */
enum wg_wake_class {
    WG_WAKE_NAVIGATION = 1u << 0, /* a browser navigation (Sec-Fetch-Mode: navigate, ...) */
    WG_WAKE_API = 1u << 1,        /* fetch, XHR, scripts, curl: everything else */
    WG_WAKE_WEBSOCKET = 1u << 2,  /* a WebSocket upgrade */
};
#define WG_WAKE_ALL (WG_WAKE_NAVIGATION | WG_WAKE_API | WG_WAKE_WEBSOCKET)
extern const struct wg_override_name wg_wake_class_names[];
extern const size_t wg_wake_class_names_len;

/* The largest operator waking page (sessions.waking_page). */
#define WG_WAKING_PAGE_MAX 65536

/* A named port of a session (a template's ports:): routes reach it by
 * name through a {port} capture (proxy/route.h). */
#define WG_PORT_NAME_MAX 32
struct wg_named_port {
    char *name;      /* [a-z0-9]{1,32}: wg_port_name_valid() */
    unsigned port;   /* the container port */
    bool ready;      /* a wake waits until it accepts too (after the main port) */
    char *http_path; /* with ready: GET it, ready on 2xx/3xx; NULL: a connect */
    int line;        /* its line in the file, 0 if none */
};

/* A session template: the sessions: block is the one named "default", each
 * templates: entry another (docs/configuration.md, "Templates"). */
struct wg_sessions_cfg {
    char *name; /* "default", or the key under templates: */
    char *image;
    char **images; /* more images a caller may name: exact, or a prefix ending in '*' */
    size_t images_len;
    char **cmd; /* NULL-terminated; NULL: the image's CMD */
    size_t cmd_len;
    char **env; /* "KEY=value", before the caller's (which win) */
    size_t env_len;
    char **binds_allow; /* host path prefixes ("/srv/work/") or volume names a bind may use */
    size_t binds_allow_len;
    unsigned overridable; /* enum wg_override */
    unsigned wake_on;     /* enum wg_wake_class: the classes that wake (default all) */
    /* A navigation is held this long for its session to run (the app
     * answers); only a longer wake shows the waking page. 0: the page at
     * once. */
    uint64_t page_after_ms; /* 1 s */
    /* The operator's waking page (a path), read at load into
     * waking_page_html (NUL-terminated, at most WG_WAKING_PAGE_MAX bytes);
     * NULL: the built-in page. */
    char *waking_page;
    char *waking_page_html;
    size_t waking_page_len;
    /* access: "public" or "private" (default) as written; a session route
     * that says neither follows it (docs/configuration.md, "access") */
    char *access;
    bool access_public;
    struct {
        uint64_t memory_bytes, nano_cpus; /* 0: the template's own limit */
        unsigned pids;
    } limits_max;
    unsigned port;
    char *port_name;             /* port: written as a name of ports: (resolved into port) */
    struct wg_named_port *ports; /* ports:, in the file's order */
    size_t ports_len;
    uint64_t wake_timeout_ms;
    uint64_t upstream_recheck_ms; /* a running session's refused connect: held and retried this
                                     long (0: a 502 at once) */
    struct wg_idle_cfg idle;
    struct wg_save_cfg save;
    struct wg_readiness_cfg readiness;
    struct wg_sandbox_cfg sandbox;
    /* placement: {labels: {k: v}, pin: false}: the labels a host must have
     * (docker.labels) for a session of this template, as compact JSON
     * text, NULL for none; pin keeps a session of a lost host waiting for
     * that host instead of re-placing it. */
    struct {
        char *labels_json;
        bool pin;
    } placement;
};

/* docker.tls: https to a tcp:// engine (Docker's --tlsverify). */
struct wg_docker_tls_cfg {
    bool enabled; /* docker.tls was given as a mapping */
    char *ca;     /* PEM CA bundle; NULL: the system's */
    char *cert;   /* PEM client certificate; set together with key */
    char *key;    /* PEM client key */
    bool verify;  /* check the engine's certificate and name (default true) */
    int line;     /* line of docker.tls in path, 0 if not from a file */
};

/* redis.private: the redis-server wakegate starts and supervises itself
 * when no redis.url is set (src/redis_child.c). */
struct wg_redis_private_cfg {
    bool enabled;              /* default true; false without redis.url: no Redis at all */
    char *server;              /* "redis-server": a path, or a name; as written (the binary
                                * finds the program: src/redis_child.h) */
    char *dir;                 /* data; NULL: the default for the user (docs/configuration.md) */
    bool appendonly;           /* AOF persistence (default true); false: memory only */
    uint64_t start_timeout_ms; /* 5 s for the first PING to answer at startup */
    uint64_t stop_timeout_ms;  /* 5 s between SIGTERM and SIGKILL at shutdown */
    int server_line, dir_line; /* their lines in path, 0 if not from a file */
    /* Filled by wg_config_validate(): */
    bool active;       /* no redis.url and enabled: redis_url is this server's socket */
    char *socket_path; /* <dir>/run/redis.sock */
};

/* redis.sentinel: find the master through Redis Sentinel instead of
 * redis.url (common/config_sentinel.c builds redis_url from it). */
struct wg_redis_sentinel_cfg {
    char *master;     /* the name the sentinels monitor; NULL: not used */
    char **addresses; /* "host:port" (port 26379 by default) */
    size_t addresses_len;
    char *password_file;        /* the sentinels' password (AUTH); NULL: none */
    char *master_password_file; /* the master's and replicas' password; NULL: none */
    char *master_user;          /* the master's ACL user; NULL: AUTH without one */
    unsigned db;                /* the master's database, 0 */
    int line;                   /* line of redis.sentinel in path, 0 if not from a file */
    /* Filled by wg_config_validate(): */
    bool active; /* redis_url is the redis+sentinel:// URL built from this */
};

/* access.forward_auth: a sub-request to the operator's auth service for
 * private routes, as nginx's auth_request and Traefik's ForwardAuth do. */
struct wg_forward_auth_cfg {
    char *url;              /* "http://127.0.0.1:9091/auth"; NULL: none */
    uint64_t timeout_ms;    /* 2 s for the whole sub-request, else 503 */
    uint64_t cache_ttl_ms;  /* 10 s an answer is kept per credential; 0: not cached */
    unsigned cache_max;     /* 10,000 answers kept at most (the oldest go first) */
    unsigned max_in_flight; /* 256 sub-requests at once per loop; more: 503 at once */
    /* Filled by wg_config_validate() from url: */
    struct wg_addr addr;
    char *host; /* "127.0.0.1:9091", the Host of the sub-request */
    char *path; /* "/auth" */
};

/* access: private session routes (common/access.h). */
struct wg_access_cfg {
    char *secret_file;        /* the HMAC key: a file of random bytes, mode 0600 */
    int secret_file_line;     /* its line in path, 0 if none */
    uint64_t link_ttl_ms;     /* a link's lifetime when POST .../links gives none: 1 h */
    uint64_t link_ttl_max_ms; /* the longest lifetime a link may ask for: 24 h */
    char *link_url;           /* "https://{session}.preview.example.com/"; NULL: from the routes */
    struct wg_forward_auth_cfg forward_auth;
    /* Filled by wg_config_validate() from secret_file: */
    unsigned char *secret;
    size_t secret_len;
};

/* tls: one certificate and key pair of the public listener. */
struct wg_tls_cert_cfg {
    char *cert;              /* PEM full chain: the leaf first */
    char *key;               /* PEM private key */
    int cert_line, key_line; /* their lines in path, 0 if not from a file */
};

/* tls: TLS termination on the public listener (proxy/tls.h). The files are
 * checked readable when the file is read; they are loaded (and the key
 * matched with its certificate) by the proxy, at startup, on
 * --check-config and on SIGHUP. */
struct wg_tls_cfg {
    bool enabled;                  /* tls: was given as a mapping */
    struct wg_tls_cert_cfg *certs; /* the first is the default certificate */
    size_t certs_len;
    uint64_t ticket_rotate_ms;      /* 1 h: a new session ticket key this often */
    char *hsts;                     /* Strict-Transport-Security value; NULL: none */
    struct wg_addr redirect_listen; /* plain listener answering 308; text NULL: none */
    int line;                       /* line of tls: in path, 0 if not from a file */
};

/* http2: HTTP/2 to clients over tls: (proxy/h2.h). The header list, buffer
 * and idle limits are those of limits:. */
struct wg_http2_cfg {
    bool enabled;                         /* offered by ALPN beside http/1.1 (default true) */
    unsigned max_concurrent_streams;      /* 100 */
    unsigned reset_burst, reset_rate;     /* RST_STREAM from a client: 200 at once, 33/s */
    unsigned control_burst, control_rate; /* PING, SETTINGS, empty DATA: 1000 at once, 100/s */
};

struct wg_config {
    char *path; /* the file read (or the name given to load_string), or NULL */
    enum wg_role role;

    struct wg_addr listen;
    struct wg_addr admin_listen;
    char *admin_token; /* from token_file or WAKEGATE_ADMIN_TOKEN */
    char *admin_token_file;
    int admin_token_file_line; /* line of admin.token_file in path, 0 if none */
    /* The read-only token: GET and HEAD of the API's read routes only
     * (admin/listener.h). From read_token_file or WAKEGATE_ADMIN_READ_TOKEN;
     * never equal to admin_token. */
    char *admin_read_token;
    char *admin_read_token_file;
    int admin_read_token_file_line; /* line of admin.read_token_file in path, 0 if none */
    /* Set from wg_config_flags.token_files_optional before validation. */
    bool token_files_optional;

    /* After wg_config_validate(): the Redis everything connects to: redis.url,
     * or the private server's "unix://<dir>/run/redis.sock" (redis_private.active),
     * or NULL for no Redis (redis.private.enabled false), or the
     * redis+sentinel:// URL built from redis.sentinel (redis_sentinel.active). */
    char *redis_url;
    /* redis.outage_grace: how long after losing Redis a gateway still serves
     * a running session, and then only over connections opened to its
     * container before (proxy/session_cache.h). 30 s. */
    uint64_t redis_outage_grace_ms;
    /* redis.state_timeout: how long a gateway's state channel may go without
     * proof that it still delivers (a check of its own coming back) before
     * the gateway acts as if Redis were lost. 1 s. */
    uint64_t redis_state_timeout_ms;
    struct wg_redis_private_cfg redis_private;
    struct wg_redis_sentinel_cfg redis_sentinel;
    char *docker_host;
    /* Where docker_host came from, for errors found after loading: its
     * line in path, 0 for the default, -1 for WAKEGATE_DOCKER_HOST. */
    int docker_host_line;
    struct wg_docker_tls_cfg docker_tls;
    char *docker_name;
    unsigned max_concurrent_starts;
    /* docker.max_sessions: sessions placement may home on this host; 0
     * (the default): no limit. */
    unsigned max_sessions;
    /* docker.labels: {k: v} this host offers to templates' placement
     * labels, as compact JSON text; NULL for none. */
    char *docker_labels_json;
    /* docker.heartbeat_ttl: the heartbeat key's TTL (10 s); it is written
     * every ttl/3, and a host silent for a TTL is lost. */
    uint64_t heartbeat_ttl_ms;

    struct wg_sessions_cfg sessions;   /* the template "default" */
    struct wg_sessions_cfg *templates; /* templates:, in file order */
    size_t templates_len;

    struct wg_route_cfg *routes;
    size_t routes_len;

    struct wg_access_cfg access;
    struct wg_tls_cfg tls;
    struct wg_http2_cfg http2;

    char **non_waking_paths;
    size_t non_waking_paths_len;
    char **non_waking_user_agents;
    size_t non_waking_user_agents_len;

    struct wg_cidr *trusted_proxies; /* empty: we are the edge */
    size_t trusted_proxies_len;

    struct wg_limits limits;
    struct wg_upstream_cfg upstream;

    enum wg_log_level log_level;
    enum wg_log_format log_format;
    bool access_log;

    uint64_t shutdown_grace_ms; /* 10 s for requests in flight on SIGTERM */

    /* Proxy worker loops, each a thread with its own listening socket
     * (SO_REUSEPORT); 0 is "auto": the CPUs the process may use
     * (wg_config_workers()). */
    unsigned workers;
};

#define WG_WORKERS_MAX 64

/* The number of proxy worker loops cfg asks for: cfg->workers, or for
 * "auto" the CPUs this process may run on, capped at WG_WORKERS_MAX. */
unsigned wg_config_workers(const struct wg_config *cfg);

/* Command-line values that override everything else. NULL/unset fields do
 * not override. */
struct wg_config_flags {
    const char *config_path;
    const char *role;
    const char *log_level;
    const char *listen;
    const char *admin_listen;
    /* For wakegatectl, run by an operator who may hold only the read-only
     * token: a token file this user may not read (EACCES, EPERM) leaves its
     * token unset instead of failing, and the two tokens are not required
     * to differ (--token may be the read-only one). The daemon never sets
     * it. */
    bool token_files_optional;
};

/* Fills cfg with the documented defaults. Returns 0 or -ENOMEM. */
int wg_config_init_defaults(struct wg_config *cfg);

/* Merges a YAML file over cfg. Unknown keys are errors. On error returns
 * -EINVAL (or -errno for I/O) and writes "FILE:LINE: KEY: problem" to err. */
int wg_config_load_file(struct wg_config *cfg, const char *path, char *err, size_t errlen);

/* As wg_config_load_file, from a string; name stands for the file in errors. */
int wg_config_load_string(struct wg_config *cfg, const char *name, const char *yaml, size_t len,
                          char *err, size_t errlen);

/* Applies WAKEGATE_* variables read through getenv_fn (getenv when NULL). */
int wg_config_apply_env(struct wg_config *cfg, char *(*getenv_fn)(const char *), char *err,
                        size_t errlen);

/* Applies command-line flags (all but config_path). */
int wg_config_apply_flags(struct wg_config *cfg, const struct wg_config_flags *flags, char *err,
                          size_t errlen);

/* Checks cross-field rules (docker.tls needs a tcp:// docker.host, ...) and
 * resolves addresses; reads admin.token_file and admin.read_token_file
 * (the two tokens must differ) and access.secret_file (a private session
 * route needs the latter in roles with a public listener). Without
 * redis.url and with redis.private.enabled, fills redis.private.dir's
 * default and points redis_url at the private server's socket; it creates
 * nothing, and leaves finding redis.private.server's program to the
 * binary. Returns 0 or -EINVAL with err set. */
int wg_config_validate(struct wg_config *cfg, char *err, size_t errlen);

/* Checks cfg->docker_host with the Docker host grammar
 * (common/docker_host.h) and cfg->docker_tls.enabled; on failure
 * writes the reason where docker.host came from: "FILE:LINE: docker.host:
 * ...", "environment WAKEGATE_DOCKER_HOST: ..." or "docker.host: ...".
 * Returns 0 or -EINVAL. */
int wg_config_check_docker_host(const struct wg_config *cfg, char *err, size_t errlen);

/* The full sequence used by the binary: defaults, file (flags->config_path,
 * else WAKEGATE_CONFIG, else none), environment, flags, validation, and
 * wg_config_check_docker_host().
 * flags may be NULL. On error cfg has been released with wg_config_free(). */
int wg_config_load(struct wg_config *cfg, const struct wg_config_flags *flags, char *err,
                   size_t errlen);

/* Releases everything cfg owns. NULL-safe; cfg may be loaded again after. */
void wg_config_free(struct wg_config *cfg);

/* "250ms", "30s", "20m", "1h", "0s" -> milliseconds. Returns 0 or -EINVAL. */
int wg_config_parse_duration(const char *s, uint64_t *ret_ms);
/* The name of t's session network: its network.name, else
 * "wakegate-<template>" written into buf. */
const char *wg_config_network_name(const struct wg_sessions_cfg *t, char *buf, size_t len);
/* The template called name ("default": cfg->sessions), or NULL. */
const struct wg_sessions_cfg *wg_config_template(const struct wg_config *cfg, const char *name);
/* The template called name, or the sessions: block when no such template
 * is configured (a reload removed it, or no record told it yet): for the
 * settings that have a safe default. The sandbox of a wake never falls
 * back (wg_config_template). */
const struct wg_sessions_cfg *wg_config_template_or_default(const struct wg_config *cfg,
                                                            const char *name);
/* Whether s[0, len) is a port name: 1 to WG_PORT_NAME_MAX of [a-z0-9]. No
 * '-' or '_', so a name next to a session id in one host label is
 * unambiguous (proxy/route.h). */
bool wg_port_name_valid(const char *s, size_t len);
/* t's port called name[0, len), or NULL. */
const struct wg_named_port *wg_config_named_port(const struct wg_sessions_cfg *t, const char *name,
                                                 size_t len);
/* Whether the sessions: block or any template has a port called name[0, len):
 * a name no template has is refused before any lookup. */
bool wg_config_port_name_known(const struct wg_config *cfg, const char *name, size_t len);
/* Whether the sessions: block or a template says access: public. */
bool wg_config_any_public_template(const struct wg_config *cfg);

/* "1", "0.5", "2.25" CPUs -> nano CPUs (x 1e9; at most 9 decimals).
 * Returns 0 or -EINVAL. */
int wg_config_parse_cpus(const char *s, uint64_t *ret_nano);
/* A Linux capability name ("NET_ADMIN", "cap_net_admin") -> its canonical
 * form without "CAP_" in upper case ("NET_ADMIN"), or NULL when unknown. */
const char *wg_config_capability(const char *s);
/* "64KiB", "1MiB", "1GiB", "512" -> bytes. Returns 0 or -EINVAL. */
int wg_config_parse_size(const char *s, uint64_t *ret_bytes);
/* "127.0.0.1:8080", "[::1]:8080", ":8080" (any address), "localhost:80". */
int wg_config_parse_addr(const char *s, struct wg_addr *ret_addr);
/* "10.0.0.0/8", "::1/128", "192.168.1.5" (a /32). */
int wg_config_parse_cidr(const char *s, struct wg_cidr *ret_cidr);
/* Whether sa (AF_INET/AF_INET6, v4-mapped v6 counts as v4) is in any of the networks. */
bool wg_cidr_contains_any(const struct wg_cidr *nets, size_t n, const struct sockaddr *sa);

#endif
