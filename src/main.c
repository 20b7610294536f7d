/* src/main.c - the wakegate binary: configuration, the loop, signals. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "admin/dashboard.h"
#include "admin/listener.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/store.h"
#include "common/log.h"
#include "common/redis.h"
#include "orchestrator/docker.h"
#include "orchestrator/orch.h"
#include "proxy/proxy.h"
#include "proxy/route.h"
#include "proxy/tls.h"
#include "src/app.h"
#include "src/ctl/ctl.h"
#include "src/redis_child.h"

/* Exit codes, documented in README.md. */
#define EXIT_OK 0
#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define EXIT_CONFIG 3
#define EXIT_LISTEN 4

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: wakegate [OPTIONS]\n"
            "\n"
            "An ingress for per-session containers: routes requests, wakes sleeping\n"
            "containers on demand and puts idle ones to sleep after saving their work.\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE        YAML configuration file (env WAKEGATE_CONFIG)\n"
            "      --role ROLE          all (default), proxy or orchestrator\n"
            "      --log-level LEVEL    debug, info, warn or error\n"
            "      --listen ADDR        public listener, e.g. 0.0.0.0:8080 (env WAKEGATE_LISTEN)\n"
            "      --admin-listen ADDR  admin listener, e.g. 127.0.0.1:8081 (env "
            "WAKEGATE_ADMIN_LISTEN)\n"
            "      --check-config       validate the configuration, print a summary and exit\n"
            "  -h, --help               show this help\n"
            "  -V, --version            show the version\n"
            "\n"
            "Environment: WAKEGATE_CONFIG, WAKEGATE_REDIS_URL, WAKEGATE_DOCKER_HOST,\n"
            "WAKEGATE_ADMIN_TOKEN, WAKEGATE_LISTEN, WAKEGATE_ADMIN_LISTEN, WAKEGATE_LOG_LEVEL,\n"
            "WAKEGATE_WORKERS (proxy worker loops: auto or 1 to 64, the workers: key).\n"
            "Precedence: defaults < file < environment < flags.\n"
            "\n"
            "Signals: SIGTERM/SIGINT drain and exit 0; SIGHUP reloads the routes, templates and\n"
            "certificates.\n"
            "Exit codes: 0 ok, 1 runtime failure, 2 usage, 3 configuration, 4 cannot listen.\n");
}

static void free_app(struct app *app);

/* Each part that drains on a stop signal calls this once when it is done;
 * the last one frees everything. */
static void part_stopped(struct app *app)
{
    if (app->stop_waits > 0 && --app->stop_waits > 0)
        return;
    WG_INFO(&app->log, "main", "connections closed and sleeps settled, exiting", "%s", "");
    free_app(app);
}

static void proxy_drained(void *arg)
{
    part_stopped(arg);
}

static void orch_settled(void *arg)
{
    part_stopped(arg);
}

static void close_signal(uv_signal_t *s)
{
    /* An early failure (config, listen) frees the app before the handlers
     * were set up: a zeroed handle has no loop. */
    if (s->loop != NULL && !uv_is_closing((uv_handle_t *)s))
        uv_close((uv_handle_t *)s, NULL);
}

static void free_app(struct app *app)
{
    close_signal(&app->sig_term);
    close_signal(&app->sig_int);
    close_signal(&app->sig_hup);
    wg_admin_free(app->admin);
    app->admin = NULL;
    /* Connections first: they may wait on the session cache. */
    app_workers_free(app);
    wg_proxy_free(app->px);
    app->px = NULL;
    app_session_cache_free(app);
    app_api_free(app);
    app_orch_free(app);
    wg_store_free(app->store);
    app->store = NULL;
    wg_redis_free(app->redis);
    app->redis = NULL;
    /* After the clients: it waits for the child to exit. */
    app_redis_child_free(app);
}

static void on_stop_signal(uv_signal_t *s, int signum)
{
    struct app *app = s->data;
    if (app->stopping) {
        WG_WARN(&app->log, "main", "second stop signal, closing everything now", "signal=%d",
                signum);
        free_app(app);
        return;
    }
    app->stopping = true;
    WG_INFO(&app->log, "main", "stop signal, draining", "signal=%s grace_ms=%" PRIu64,
            signum == SIGTERM ? "SIGTERM" : "SIGINT", app->cfg.shutdown_grace_ms);
    wg_admin_set_draining(app->admin);
    /* The proxy drains its connections while the orchestrator finishes or
     * rolls back the sleeps in flight; both within shutdown_grace. */
    app->stop_waits = 1 + (app->px != NULL) + (app->workers != NULL) + (app->orch != NULL);
    if (app->px != NULL)
        wg_proxy_shutdown(app->px, app->cfg.shutdown_grace_ms, proxy_drained, app);
    if (app->workers != NULL)
        app_workers_shutdown(app, app->cfg.shutdown_grace_ms, proxy_drained, app);
    if (app->orch != NULL)
        wg_orch_shutdown(app->orch, app->cfg.shutdown_grace_ms, orch_settled, app);
    part_stopped(app);
}

/* Gives cur the templates of fresh, and fresh the old ones to free. */
static void swap_templates(struct wg_config *cur, struct wg_config *fresh)
{
    struct wg_sessions_cfg *t = cur->templates;
    size_t n = cur->templates_len;

    cur->templates = fresh->templates;
    cur->templates_len = fresh->templates_len;
    fresh->templates = t;
    fresh->templates_len = n;
}

/* SIGHUP, tls: the certificates only (the listener, tickets, hsts and the
 * redirect listener stay as started). A certificate that fails to load
 * keeps the current ones; connections keep the certificate they have. */
/* Each loaded certificate, once at startup and after a reload: its name
 * and days left; a warning from 14 days before it ends, an error after. */
static void log_certificates(struct app *app, struct wg_tls *tls)
{
    int64_t now = (int64_t)(wg_clock_wall_ms() / 1000);
    const struct wg_tls_cert_info *ci;

    for (size_t i = 0; (ci = wg_tls_cert(tls, i)) != NULL; i++) {
        int64_t left = ci->not_after - now;
        enum wg_log_level level = left < 0                ? WG_LOG_ERROR
                                  : left < 14 * 24 * 3600 ? WG_LOG_WARN
                                                          : WG_LOG_INFO;
        WG_LOG(&app->log, level, "main", left < 0 ? "certificate expired" : "certificate loaded",
               "index=%zu name=%s not_after=%" PRId64 " days_left=%" PRId64, i,
               ci->name[0] ? ci->name : "-", ci->not_after, left / (24 * 3600));
    }
}

static void reload_certificates(struct app *app, const struct wg_config *fresh)
{
    struct wg_tls *tls = app->px != NULL ? wg_proxy_tls(app->px) : app_workers_tls(app);
    char err[WG_CONFIG_ERR_MAX];

    if (tls == NULL) {
        if (fresh != NULL && fresh->tls.enabled)
            WG_WARN(&app->log, "main", "tls: added to the file, turning TLS on needs a restart",
                    "%s", "");
        return;
    }
    if (fresh == NULL) {
        wg_tls_stats(tls)->reloads_failed++;
        WG_ERROR(&app->log, "main", "certificate reload failed, keeping the current certificates",
                 "error=\"%s\"", "the configuration did not load");
        return;
    }
    if (wg_tls_reload(tls, fresh, err, sizeof(err)) < 0) {
        WG_ERROR(&app->log, "main", "certificate reload failed, keeping the current certificates",
                 "error=\"%s\"", err);
        return;
    }
    WG_INFO(&app->log, "main", "certificates reloaded", "certificates=%zu", fresh->tls.certs_len);
    log_certificates(app, tls);
}

/* SIGHUP: the routes and the templates: entries change; a bad file leaves
 * everything as it was. The templates are swapped in place in app->cfg,
 * which the API and the orchestrator read on each use (they keep no
 * pointer into a template across a callback), so sessions created from
 * now on use the new ones. The sessions: block is read at startup only. */
static void on_hup(uv_signal_t *s, int signum)
{
    struct app *app = s->data;
    struct wg_config fresh;
    struct wg_router *router = NULL;
    char err[WG_CONFIG_ERR_MAX];

    memset(&fresh, 0, sizeof(fresh));
    if (wg_config_load(&fresh, &app->flags, err, sizeof(err)) < 0) {
        WG_ERROR(&app->log, "main", "reload failed, keeping the current routes", "error=\"%s\"",
                 err);
        reload_certificates(app, NULL);
        goto out;
    }
    reload_certificates(app, &fresh);
    /* Every worker loop gets a router of its own, or none does. */
    if ((app->workers != NULL && app_workers_prepare_reload(app, &fresh, err, sizeof(err)) < 0) ||
        (app->workers == NULL &&
         wg_router_new(fresh.routes, fresh.routes_len, &router, err, sizeof(err)) < 0)) {
        WG_ERROR(&app->log, "main", "reload failed, keeping the current routes", "error=\"%s\"",
                 err);
        goto out;
    }
    if (app->px != NULL)
        wg_proxy_set_router(app->px, router);
    else
        wg_router_free(router);
    WG_INFO(&app->log, "main", "routes reloaded", "routes=%zu", fresh.routes_len);
    swap_templates(&app->cfg, &fresh);
    /* The loops read the old templates until they take the new ones:
     * fresh (holding the old ones now) is theirs to free. */
    if (app->workers != NULL)
        app_workers_commit_reload(app, &fresh);
    WG_INFO(&app->log, "main", "templates reloaded", "templates=%zu", app->cfg.templates_len);
out:
    wg_config_free(&fresh);
}

/* /readyz: once Redis is configured, it must be reachable. */
static bool redis_ready(void *arg, char *why, size_t whylen)
{
    struct app *app = arg;
    if (app->redis != NULL && wg_redis_connected(app->redis))
        return true;
    const char *e = app->redis ? wg_redis_last_error(app->redis) : NULL;
    snprintf(why, whylen, "redis unreachable%s%s", e ? ": " : "", e ? e : "");
    return false;
}

/* The configuration and what was found from it. */
static void free_config(struct app *app)
{
    wg_config_free(&app->cfg);
    free(app->redis_server);
    app->redis_server = NULL;
}

static void print_summary(const struct wg_config *cfg, const char *redis_server)
{
    printf("configuration OK: %s\n", cfg->path ? cfg->path : "(defaults, no file)");
    printf("  listen        %s\n", cfg->listen.text ? cfg->listen.text : "-");
    printf("  admin.listen  %s\n", cfg->admin_listen.text ? cfg->admin_listen.text : "-");
    if (cfg->redis_private.active)
        printf("  redis         private: %s, dir %s, %s\n", redis_server, cfg->redis_private.dir,
               cfg->redis_url);
    else
        printf("  redis         %s\n",
               cfg->redis_url ? cfg->redis_url : "none (redis.private.enabled is false)");
    printf("  docker.host   %s\n", cfg->docker_host ? cfg->docker_host : "-");
    if (cfg->role == WG_ROLE_ORCHESTRATOR)
        printf("  workers       - (role orchestrator)\n");
    else
        printf("  workers       %u%s\n", wg_config_workers(cfg),
               cfg->workers == 0 ? " (auto)" : "");
    if (cfg->tls.enabled)
        printf("  tls           %zu certificate%s, default %s%s%s\n", cfg->tls.certs_len,
               cfg->tls.certs_len == 1 ? "" : "s", cfg->tls.certs[0].cert,
               cfg->tls.redirect_listen.text ? ", redirect from " : "",
               cfg->tls.redirect_listen.text ? cfg->tls.redirect_listen.text : "");
    printf("  routes        %zu\n", cfg->routes_len);
    for (size_t i = 0; i < cfg->routes_len; i++) {
        const struct wg_route_cfg *r = &cfg->routes[i];
        printf("    [%zu] host=%s path_prefix=%s%s -> %s\n", i, r->host ? r->host : "*",
               r->path_prefix ? r->path_prefix : "*", r->strip_prefix ? " (stripped)" : "",
               r->has_upstream ? r->upstream.text : "session");
    }
}

/* Reads the flags into app->flags. Returns -1 to go on, else the exit code
 * (after --help, --version or a usage error). */
static int parse_flags(struct app *app, int argc, char **argv, bool *ret_check_only)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"role", required_argument, NULL, 'r'},
        {"log-level", required_argument, NULL, 'l'},
        {"listen", required_argument, NULL, 'L'},
        {"admin-listen", required_argument, NULL, 'A'},
        {"check-config", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int opt;

    while ((opt = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            app->flags.config_path = optarg;
            break;
        case 'r':
            app->flags.role = optarg;
            break;
        case 'l':
            app->flags.log_level = optarg;
            break;
        case 'L':
            app->flags.listen = optarg;
            break;
        case 'A':
            app->flags.admin_listen = optarg;
            break;
        case 'k':
            *ret_check_only = true;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        case 'V':
            printf("wakegate %s\n", WG_VERSION);
            return EXIT_OK;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "wakegate: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }
    return -1;
}

/* Loads and checks the configuration and builds the router from it, and
 * the certificates of tls: (loaded with OpenSSL here, so --check-config
 * checks them too). Returns 0 with *ret_router and *ret_tls (NULL without
 * tls:) set, or EXIT_CONFIG after saying why (the configuration is then
 * released). */
static int load_config(struct app *app, struct wg_router **ret_router, struct wg_tls **ret_tls)
{
    char err[WG_CONFIG_ERR_MAX];

    if (wg_config_load(&app->cfg, &app->flags, err, sizeof(err)) < 0 ||
        app_redis_child_find_server(&app->cfg, &app->redis_server, err, sizeof(err)) < 0) {
        fprintf(stderr, "wakegate: configuration error: %s\n", err);
        free_config(app);
        return EXIT_CONFIG;
    }
    if (wg_router_new(app->cfg.routes, app->cfg.routes_len, ret_router, err, sizeof(err)) < 0) {
        fprintf(stderr, "wakegate: configuration error: %s%s%s\n",
                app->cfg.path ? app->cfg.path : "", app->cfg.path ? ": " : "", err);
        free_config(app);
        return EXIT_CONFIG;
    }
    *ret_tls = NULL;
    if (app->cfg.tls.enabled && app_has_proxy(app) &&
        wg_tls_new(&app->cfg, ret_tls, err, sizeof(err)) < 0) {
        fprintf(stderr, "wakegate: configuration error: %s\n", err);
        wg_router_free(*ret_router);
        *ret_router = NULL;
        free_config(app);
        return EXIT_CONFIG;
    }
    return 0;
}

/* Redis and what lives on it: the store, the orchestrator, the admin API
 * and the proxy's session cache. Returns 0 or the exit code. */
static int start_redis_parts(struct app *app)
{
    int r;

    r = app_redis_new(&app->loop, &app->cfg, "main", &app->log, &app->redis);
    if (r < 0) {
        WG_ERROR(&app->log, "main", "cannot set up Redis", "url=%s error=%s", app->cfg.redis_url,
                 strerror(-r));
        return EXIT_CONFIG;
    }
    r = wg_store_new(app->redis, NULL, &app->store);
    if (r < 0) {
        WG_ERROR(&app->log, "main", "cannot set up the session store", "error=%s", strerror(-r));
        return EXIT_RUNTIME;
    }
    if (app_orch_start(app) < 0 || app_api_start(app) < 0)
        return EXIT_RUNTIME;
    wg_admin_add_ready_check(app->admin, redis_ready, app);
    if (app_session_cache_start(app) < 0)
        return EXIT_RUNTIME;
    return 0;
}

/* Everything after the proxy object: the admin listener and what registers
 * on it, Redis and its parts, both listeners bound. Returns 0 with the
 * bound ports, or the exit code (the caller frees the app). */
static int start_parts(struct app *app, int *ret_port, int *ret_admin_port)
{
    int r;

    r = wg_admin_new(&app->loop, &app->cfg, &app->log, &app->admin);
    if (r < 0) {
        WG_ERROR(&app->log, "main", "cannot create the admin listener", "error=%s", uv_strerror(r));
        return EXIT_RUNTIME;
    }
    if (app_proxy_start(app) < 0) /* first: /readyz and /metrics begin with the proxy */
        return EXIT_RUNTIME;
    r = app_redis_child_start(app); /* when it is the configured Redis */
    if (r < 0)
        return app_redis_child_config_error(r) ? EXIT_CONFIG : EXIT_RUNTIME;
    if (app->cfg.redis_url != NULL && (r = start_redis_parts(app)) != 0)
        return r;
    r = app->px != NULL ? wg_proxy_listen(app->px, ret_port) : 0;
    if (r < 0) {
        WG_ERROR(&app->log, "main", "cannot listen", "listen=%s error=\"%s\"", app->cfg.listen.text,
                 uv_strerror(r));
        return EXIT_LISTEN;
    }
    if (app->workers != NULL && (r = app_workers_start(app, ret_port)) != 0)
        return r;
    app_metrics_start(app); /* the shared Redis connection's, when there is one */
    /* Last: it answers the paths every other admin handler leaves. */
    r = wg_dashboard_register(app->admin);
    if (r < 0) {
        WG_ERROR(&app->log, "main", "cannot serve the dashboard", "error=%s", strerror(-r));
        return EXIT_RUNTIME;
    }
    r = wg_admin_listen(app->admin, ret_admin_port);
    if (r < 0) {
        WG_ERROR(&app->log, "main", "cannot listen", "admin_listen=%s error=\"%s\"",
                 app->cfg.admin_listen.text, uv_strerror(r));
        return EXIT_LISTEN;
    }
    return 0;
}

static void start_signals(struct app *app)
{
    uv_signal_init(&app->loop, &app->sig_term);
    uv_signal_init(&app->loop, &app->sig_int);
    uv_signal_init(&app->loop, &app->sig_hup);
    app->sig_term.data = app->sig_int.data = app->sig_hup.data = app;
    uv_signal_start(&app->sig_term, on_stop_signal, SIGTERM);
    uv_signal_start(&app->sig_int, on_stop_signal, SIGINT);
    uv_signal_start(&app->sig_hup, on_hup, SIGHUP);
}

/* libuv's thread pool (4 threads unless told) is shared by every loop of
 * the process: name lookups, the CPU sampler's file reads and, with
 * redis.sentinel, each Redis connection's blocking ask of the sentinels.
 * At a failover every connection asks at once (two per worker loop, plus
 * the main loop's, the orchestrator's and the API's); with 4 threads the
 * last would wait behind the others' timeouts. Sized before the pool
 * starts (its first use); an operator's UV_THREADPOOL_SIZE wins. */
static void size_threadpool(const struct wg_config *cfg)
{
    char n[16];

    if (getenv("UV_THREADPOOL_SIZE") != NULL)
        return;
    snprintf(n, sizeof(n), "%u", 8 + 2 * wg_config_workers(cfg));
    setenv("UV_THREADPOOL_SIZE", n, 0);
}

int main(int argc, char **argv)
{
    struct app app;
    struct wg_router *router = NULL;
    struct wg_tls *tls = NULL;
    bool check_only = false;
    int port = 0, admin_port = 0;
    int rc, r;

    if (argc > 1 && strcmp(argv[1], "ctl") == 0)
        return wg_ctl_main(argc - 1, argv + 1);
    memset(&app, 0, sizeof(app));
    rc = parse_flags(&app, argc, argv, &check_only);
    if (rc >= 0)
        return rc;
    rc = load_config(&app, &router, &tls);
    if (rc != 0)
        return rc;
    if (check_only) {
        print_summary(&app.cfg, app.redis_server);
        wg_tls_free(tls);
        wg_router_free(router);
        free_config(&app);
        return EXIT_OK;
    }

    size_threadpool(&app.cfg);
    /* One line per write, so lines from a crash are never half-flushed. */
    setvbuf(stderr, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    app.log.level = app.cfg.log_level;
    app.log.format = app.cfg.log_format;
    app.log.out = stderr;

    r = uv_loop_init(&app.loop);
    if (r < 0) {
        fprintf(stderr, "wakegate: event loop: %s\n", uv_strerror(r));
        wg_tls_free(tls);
        wg_router_free(router);
        free_config(&app);
        return EXIT_RUNTIME;
    }
    rc = EXIT_RUNTIME;
    if (app_has_proxy(&app) && wg_config_workers(&app.cfg) > 1) {
        r = app_workers_new(&app, wg_config_workers(&app.cfg), router, tls);
        if (r < 0) {
            WG_ERROR(&app.log, "main", "cannot create the proxy", "error=%s", strerror(-r));
            goto out_loop;
        }
    } else if (app_has_proxy(&app)) {
        r = wg_proxy_new(&app.loop, &app.cfg, &app.log, router, &app.px);
        if (r < 0) {
            WG_ERROR(&app.log, "main", "cannot create the proxy", "error=%s", uv_strerror(r));
            wg_tls_free(tls);
            wg_router_free(router);
            goto out_loop;
        }
        wg_proxy_set_tls(app.px, tls);
    } else {
        wg_router_free(router);
    }
    rc = start_parts(&app, &port, &admin_port);
    if (rc != 0)
        goto out_free;
    start_signals(&app);

    WG_INFO(&app.log, "main", "wakegate started",
            "version=%s listen=%s port=%d admin_listen=%s admin_port=%d routes=%zu config=%s",
            WG_VERSION, app.cfg.listen.text, port, app.cfg.admin_listen.text, admin_port,
            app.cfg.routes_len, app.cfg.path ? app.cfg.path : "-");
    if (app.cfg.tls.enabled && (app.px != NULL || app.workers != NULL))
        WG_INFO(&app.log, "main", "tls on the public listener",
                "certificates=%zu ticket_rotate_ms=%" PRIu64 " hsts=%d redirect_listen=%s",
                app.cfg.tls.certs_len, app.cfg.tls.ticket_rotate_ms, app.cfg.tls.hsts != NULL,
                app.cfg.tls.redirect_listen.text ? app.cfg.tls.redirect_listen.text : "-");
    if (app.cfg.tls.enabled && (app.px != NULL || app.workers != NULL))
        log_certificates(&app, app.px != NULL ? wg_proxy_tls(app.px) : app_workers_tls(&app));

    uv_run(&app.loop, UV_RUN_DEFAULT);
    rc = EXIT_OK;
    goto out_loop;

out_free:
    free_app(&app);
    uv_run(&app.loop, UV_RUN_DEFAULT);
out_loop:
    if (uv_loop_close(&app.loop) == UV_EBUSY) {
        /* Handles still open: run once more so their close callbacks free them. */
        uv_run(&app.loop, UV_RUN_NOWAIT);
        uv_loop_close(&app.loop);
    }
    free_config(&app);
    return rc;
}
