/* src/ctl/main.c - wakegatectl, the operator CLI (also `wakegate ctl ...`):
 * the command line, the commands and their exit codes, and where the admin
 * API is (configuration, flags, environment). See ctl.h and docs/cli.md;
 * ctl_int.h for the other files. */
#include "src/ctl/ctl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "common/config.h"
#include "common/session.h"
#include "src/ctl/ctl_int.h"
#include "src/redis_child.h"

struct cmd {
    const char *name;
    unsigned flags; /* F_* it accepts */
    int nargs;      /* 0 or 1 (the session id) */
    int (*run)(struct ctl *c, const char *id);
    const char *usage;
    const char *help;
};

static const struct cmd commands[] = {
    {"ls", 0, 0, ctl_cmd_ls, "ls",
     "List the sessions: id, state, host, IP, idle time (now - last activity) and\n"
     "the last save. --json prints the API's array as is.\n"},
    {"show", 0, 1, ctl_cmd_show, "show ID",
     "Show one session's record: its state, container, spec (template, image,\n"
     "command, env names - never their values -, labels, binds, port, idle,\n"
     "limits, save), the last save's output tail and the last error; for a failed\n"
     "session, the log tail its failure event carries. --json prints the API's\n"
     "record as is.\n"},
    {"wake", F_WAIT, 1, ctl_cmd_wake, "wake ID [--wait]",
     "Queue a wake. With --wait, return once the session runs (exit 1 if it\n"
     "failed or did not run within the gateway's sessions.wake_timeout).\n"},
    {"sleep", F_WAIT | F_FORCE | F_NOW, 1, ctl_cmd_sleep, "sleep ID [--wait] [--force | --now]",
     "Queue a sleep. Without --force the orchestrator saves the work first (and\n"
     "refuses while no save hook exists); --force stops without saving. With\n"
     "--wait, return once the session is asleep or paused. A sleep is called off\n"
     "when the session is in use (exit 6); --now saves and stops it although it\n"
     "is (open WebSockets, requests: the gateways close its streams) and waits\n"
     "for the outcome: exit 0 once asleep, 6 when the save failed (the container\n"
     "is kept awake; the save's output is printed).\n"},
    {"rm", F_FORCE, 1, ctl_cmd_rm, "rm ID [--force]",
     "Queue the destruction of a session and its container. Without --force the\n"
     "orchestrator saves first (and refuses while no save hook exists).\n"},
    {"events", F_FOLLOW | F_SINCE, 0, ctl_cmd_events, "events [-f] [--since ID|MS|DURATION]",
     "Print session events, one per line: time, session, transition (from -> to)\n"
     "or event type, detail. Without -f: the stored events (all of them, or those\n"
     "after --since), then exit. With -f: only new events (after --since when\n"
     "given) until interrupted; SIGINT or SIGTERM exits 0. --since takes a stream\n"
     "id (1700000000000-0), a time in ms since the epoch, or a duration (10m).\n"
     "--json prints each event's JSON as the API sends it, one per line.\n"},
    {"create", F_WAIT | F_SPEC | F_CMD, 1, ctl_cmd_create,
     "create ID [--template T] [--image I] [--port N] [--env K=V]... [--label K=V]...\n"
     "              [--bind SRC:DST[:ro]]... [--idle-pause-after D] [--idle-stop-after D]\n"
     "              [--wait] [-- CMD ARGS...]",
     "Create a session (asleep: no container until its first wake) from a\n"
     "template (default: the sessions: block). --env, --label and --bind may be\n"
     "given many times; the words after -- are its command. What a caller may set\n"
     "is the template's to say (the API's 400 names the field). With --wait, wake\n"
     "it and return once it runs. An id that exists is exit 6, nothing changed.\n"
     "--json prints the API's record (with --wait: the running record).\n"},
    {"keepalive", 0, 2, ctl_cmd_keepalive, "keepalive ID DURATION",
     "Count an awake session as active until now + DURATION (30s, 20m, 2h; at most\n"
     "24h), for work that sends no requests. Exit 6 when it is not awake.\n"},
    {"logs", F_FOLLOW | F_TAIL, 1, ctl_cmd_logs, "logs ID [-f] [--tail N]",
     "Print the session container's output (stdout to stdout, stderr to stderr),\n"
     "read from the Docker engine of this configuration (docker.host); a session\n"
     "of another Docker host is exit 6. --tail N: the last N lines only. -f:\n"
     "follow until SIGINT or SIGTERM (exit 0). --json: one {\"stream\", \"line\"}\n"
     "object per line.\n"},
    {"exec", F_CMD, 1, ctl_cmd_exec, "exec ID -- CMD [ARGS...]",
     "Run a command in the running session's container (no stdin, no TTY), on\n"
     "the Docker engine of this configuration; its output is printed as logs\n"
     "prints it. The command is recorded as an `exec` event before it runs (no\n"
     "record, no run) and its exit status as `exec_exit`. Exit: the command's\n"
     "exit status; when it could not run, the exit codes of " PROG " --help (and a\n"
     "message).\n"},
    {"hosts", 0, 0, ctl_cmd_hosts, "hosts",
     "List the orchestrator hosts: name, state (live, lost, or returning: back\n"
     "while still listed lost), running containers, sessions, the maximum of\n"
     "sessions, CPUs, memory and labels from its heartbeat (\"-\" for what its\n"
     "orchestrator does not report), and the heartbeat's age. --json prints the\n"
     "API's answer as is.\n"},
    {"doctor", 0, 0, ctl_cmd_doctor, "doctor",
     "Check the installation, one line per check (OK, WARN or FAIL and why): the\n"
     "configuration, the admin token's file permissions, the admin API\n"
     "(/healthz, /readyz, the token), Redis (PING), the Docker engine (/_ping,\n"
     "API version, socket permissions), and that a session container can reach\n"
     "neither Redis nor the admin listener (a probe container from\n"
     "sessions.image, labelled wakegate.doctor=1, removed afterwards).\n"
     "Exit 0 when nothing FAILed (WARN does not fail), else 1. --json prints an\n"
     "array of {\"check\", \"status\", \"detail\"}.\n"},
};

static const char global_help[] =
    "Usage: " PROG " [OPTIONS] COMMAND [ARGS]     (also: wakegate ctl ...)\n"
    "\n"
    "The operator CLI of wakegate: talks to a running gateway's admin API.\n"
    "\n"
    "Commands:\n"
    "  ls                        list sessions\n"
    "  show ID                   one session's record\n"
    "  wake ID [--wait]          wake a session\n"
    "  sleep ID [--wait] [--force | --now]  put a session to sleep\n"
    "  rm ID [--force]           destroy a session\n"
    "  events [-f] [--since X]   session events; -f follows\n"
    "  create ID [...]           create a session (create --help)\n"
    "  keepalive ID DURATION     keep an awake session awake\n"
    "  logs ID [-f] [--tail N]   the container's output\n"
    "  exec ID -- CMD...         run a command in the container\n"
    "  hosts                     the orchestrator hosts and their heartbeats\n"
    "  doctor                    check the installation\n"
    "  help [COMMAND]            this help, or a command's\n"
    "\n"
    "Options:\n"
    "      --admin URL     admin API (env WAKEGATE_ADMIN_URL; default from the\n"
    "                      configuration's admin.listen, 127.0.0.1:8081)\n"
    "      --token TOKEN   admin token (env WAKEGATE_ADMIN_TOKEN; default from the\n"
    "                      configuration's admin.token or admin.token_file; else\n"
    "                      the read-only token, env WAKEGATE_ADMIN_READ_TOKEN or\n"
    "                      admin.read_token_file: ls, show, events and hosts)\n"
    "  -c, --config FILE   configuration file (env WAKEGATE_CONFIG), read as the\n"
    "                      daemon reads it, environment overrides included\n"
    "      --json          machine output: the API's JSON as is (every command)\n"
    "  -h, --help          help (COMMAND --help: the command's)\n"
    "  -V, --version       the version\n"
    "\n"
    "Exit codes: 0 ok, 1 operation or check failed, 2 usage, 3 configuration,\n"
    "4 admin API unreachable, 5 not found, 6 conflict/refused, 7 auth.\n";

static const struct cmd *cmd_find(const char *name)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void cmd_help(const struct cmd *cmd, FILE *out)
{
    fprintf(out, "Usage: " PROG " [OPTIONS] %s\n\n%s\nOptions: see " PROG " --help.\n", cmd->usage,
            cmd->help);
}

int ctl_usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, PROG ": ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '" PROG " --help'.\n");
    return WG_CTL_USAGE;
}

static const char *flag_name(unsigned f)
{
    switch (f) {
    case F_WAIT:
        return "--wait";
    case F_FORCE:
        return "--force";
    case F_NOW:
        return "--now";
    case F_FOLLOW:
        return "-f";
    case F_SINCE:
        return "--since";
    case F_TAIL:
        return "--tail";
    case F_SPEC:
        return "--template/--image/--port/--env/--label/--bind/--idle-*";
    default:
        return "-- CMD";
    }
}

/* Options may come before or after the command (getopt permutes);
 * positional holds the rest, in order. Returns 0 or WG_CTL_USAGE. */
static int parse_args(int argc, char **argv, struct ctl_opts *o, char **positional, int *npos)
{
    static const struct option longs[] = {
        {"admin", required_argument, NULL, 'a'},
        {"token", required_argument, NULL, 't'},
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"wait", no_argument, NULL, 'w'},
        {"force", no_argument, NULL, 'F'},
        {"now", no_argument, NULL, 'N'},
        {"follow", no_argument, NULL, 'f'},
        {"since", required_argument, NULL, 's'},
        {"tail", required_argument, NULL, O_TAIL},
        {"template", required_argument, NULL, O_TEMPLATE},
        {"image", required_argument, NULL, O_IMAGE},
        {"port", required_argument, NULL, O_PORT},
        {"env", required_argument, NULL, O_ENV},
        {"label", required_argument, NULL, O_LABEL},
        {"bind", required_argument, NULL, O_BIND},
        {"idle-pause-after", required_argument, NULL, O_IDLE_PAUSE},
        {"idle-stop-after", required_argument, NULL, O_IDLE_STOP},
        {NULL, 0, NULL, 0},
    };
    int opt, rc;

    *npos = 0;
    /* The words after the first "--" are a command (create, exec): they
     * are not options, whatever they look like. */
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--") == 0) {
            o->cmd = argv + i + 1;
            o->ncmd = argc - i - 1;
            o->cmd_given = true;
            argc = i;
            break;
        }
    opterr = 0;
    optind = 0; /* glibc: start over, whatever parsed before us */
    while ((opt = getopt_long(argc, argv, ":c:hVf", longs, NULL)) != -1) {
        switch (opt) {
        case 'a':
            o->admin = optarg;
            break;
        case 't':
            o->token = optarg;
            break;
        case 'c':
            o->config = optarg;
            break;
        case 'j':
            o->json = true;
            break;
        case 'h':
            o->help = true;
            break;
        case 'V':
            o->version = true;
            break;
        case 'w':
            o->flags |= F_WAIT;
            break;
        case 'F':
            o->flags |= F_FORCE;
            break;
        case 'N':
            o->flags |= F_NOW;
            break;
        case 'f':
            o->flags |= F_FOLLOW;
            break;
        case 's':
            o->flags |= F_SINCE;
            o->since = optarg;
            break;
        case ':':
            return ctl_usage_error("option '%s' needs a value", argv[optind - 1]);
        default:
            rc = ctl_opt_more(o, opt, optarg);
            if (rc == 0)
                break;
            if (rc > 0)
                return rc;
            return ctl_usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    for (int i = optind; i < argc; i++) {
        if (*npos >= 3)
            return ctl_usage_error("unexpected argument '%s'", argv[i]);
        positional[(*npos)++] = argv[i];
    }
    return 0;
}

int wg_ctl_exit_for_status(long status, const char *err)
{
    if (status >= 200 && status < 300)
        return WG_CTL_OK;
    switch (status) {
    case 400:
        return WG_CTL_USAGE;
    case 401:
    case 403:
        return WG_CTL_AUTH;
    case 404:
        return WG_CTL_NOT_FOUND;
    case 409:
        return WG_CTL_CONFLICT;
    case 503:
        /* A gateway without a token refuses every /v1 call: an auth
         * problem, not a transient one. */
        if (err != NULL && strcmp(err, "admin token not configured") == 0)
            return WG_CTL_AUTH;
        return WG_CTL_FAILED;
    default:
        return WG_CTL_FAILED;
    }
}

/* "host:port" or "http(s)://host:port[/]" -> base URL without a trailing
 * '/'. Returns 0 or -EINVAL. */
static int admin_url_set(struct ctl *c, const char *u)
{
    const char *scheme = "";
    size_t len;
    if (u == NULL || u[0] == '\0' || strlen(u) >= URL_MAX - 16)
        return -EINVAL;
    for (const char *p = u; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return -EINVAL;
    if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) {
        if (strstr(u, "://") != NULL)
            return -EINVAL;
        scheme = "http://";
    }
    snprintf(c->base, sizeof(c->base), "%s%s", scheme, u);
    /* A path is kept: a reverse proxy may serve the API under a prefix. */
    len = strlen(c->base);
    while (len > 0 && c->base[len - 1] == '/')
        c->base[--len] = '\0';
    return 0;
}

/* Where to reach a listener bound to sa: the wildcard means loopback. */
static void admin_url_from_listen(struct ctl *c, const struct wg_addr *a)
{
    char ip[INET6_ADDRSTRLEN] = "127.0.0.1";
    unsigned port = 8081;
    if (a->sa.ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&a->sa;
        if (s4->sin_addr.s_addr != htonl(INADDR_ANY))
            inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        port = ntohs(s4->sin_port);
        snprintf(c->base, sizeof(c->base), "http://%s:%u", ip, port);
    } else if (a->sa.ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->sa;
        snprintf(ip, sizeof(ip), "::1");
        if (!IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr))
            inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        port = ntohs(s6->sin6_port);
        snprintf(c->base, sizeof(c->base), "http://[%s]:%u", ip, port);
    } else {
        snprintf(c->base, sizeof(c->base), "http://127.0.0.1:8081");
    }
}

/* Loads the configuration as the daemon does (file from --config or
 * WAKEGATE_CONFIG, then the environment, then validation, then the private
 * redis-server's program). Failure is kept in c->cfg_err: doctor reports
 * it, the other commands exit 3. */
static void ctl_load_config(struct ctl *c)
{
    /* A token file this user cannot read is not a configuration error
     * here: an operator may hold only the read-only token (or pass
     * --token), and the commands say what is missing when the API refuses. */
    struct wg_config_flags flags = {
        .config_path = c->o.config,
        .token_files_optional = true,
    };
    char *server = NULL;

    memset(&c->cfg, 0, sizeof(c->cfg));
    c->cfg_ok = wg_config_load(&c->cfg, &flags, c->cfg_err, sizeof(c->cfg_err)) == 0 &&
                app_redis_child_find_server(&c->cfg, &server, c->cfg_err, sizeof(c->cfg_err)) == 0;
    free(server);
    if (!c->cfg_ok)
        wg_config_free(&c->cfg);
}

/* Returns 0, or an exit code after printing why. */
static int ctl_resolve(struct ctl *c)
{
    const char *env_url = getenv("WAKEGATE_ADMIN_URL");
    const char *env_token = getenv("WAKEGATE_ADMIN_TOKEN");

    if (c->o.admin != NULL) {
        c->base_src = "--admin";
        if (admin_url_set(c, c->o.admin) < 0)
            return ctl_usage_error("--admin '%s': expected http://HOST:PORT or HOST:PORT",
                                   c->o.admin);
    } else if (env_url != NULL && env_url[0] != '\0') {
        c->base_src = "WAKEGATE_ADMIN_URL";
        if (admin_url_set(c, env_url) < 0)
            return ctl_usage_error("environment WAKEGATE_ADMIN_URL '%s': expected http://HOST:PORT",
                                   env_url);
    } else if (c->cfg_ok) {
        c->base_src = "admin.listen";
        admin_url_from_listen(c, &c->cfg.admin_listen);
    } else {
        c->base_src = "default";
        snprintf(c->base, sizeof(c->base), "http://127.0.0.1:8081");
    }
    if (c->o.token != NULL) {
        c->token = c->o.token;
        c->token_src = "--token";
    } else if (c->cfg_ok && c->cfg.admin_token != NULL && c->cfg.admin_token[0]) {
        c->token = c->cfg.admin_token;
        c->token_src = env_token && env_token[0] ? "WAKEGATE_ADMIN_TOKEN"
                       : c->cfg.admin_token_file ? "admin.token_file"
                                                 : "admin.token";
    } else if (c->cfg_ok && c->cfg.admin_read_token != NULL && c->cfg.admin_read_token[0]) {
        /* Only the read-only token: ls, show, events and hosts work; the others
         * get the API's 403, reported as such (ctl_api_report()). */
        const char *env_read = getenv("WAKEGATE_ADMIN_READ_TOKEN");
        c->token = c->cfg.admin_read_token;
        c->token_read_only = true;
        c->token_src =
            env_read && env_read[0] ? "WAKEGATE_ADMIN_READ_TOKEN" : "admin.read_token_file";
    }
    return 0;
}

static bool id_ok(const char *id)
{
    return id != NULL && wg_session_id_valid(id, strlen(id));
}

/* Checks the command line against the command; returns 0 or WG_CTL_USAGE. */
static int check_command(const struct cmd *cmd, char **pos, int npos, unsigned flags)
{
    if (npos - 1 < cmd->nargs && npos < 2)
        return ctl_usage_error("%s: missing session ID (usage: " PROG " %s)", cmd->name,
                               cmd->usage);
    if (npos - 1 > cmd->nargs)
        return ctl_usage_error("%s: unexpected argument '%s' (usage: " PROG " %s)", cmd->name,
                               pos[cmd->nargs + 1], cmd->usage);
    if (npos - 1 < cmd->nargs && npos >= 2)
        return ctl_usage_error("%s: missing argument (usage: " PROG " %s)", cmd->name, cmd->usage);
    for (unsigned f = F_WAIT; f <= F_CMD; f <<= 1)
        if ((flags & f) && !(cmd->flags & f))
            return ctl_usage_error("%s: option %s does not apply (usage: " PROG " %s)", cmd->name,
                                   flag_name(f), cmd->usage);
    if (cmd->nargs >= 1 && !id_ok(pos[1])) {
        char shown[80];
        ctl_clean_copy(shown, sizeof(shown), pos[1]);
        return ctl_usage_error("invalid session id '%s': 1 to 63 of a-z 0-9 _ -, starting with a "
                               "letter or digit",
                               shown);
    }
    return 0;
}

int wg_ctl_main(int argc, char **argv)
{
    struct ctl c;
    char *pos[3];
    int npos = 0, rc;
    const struct cmd *cmd;

    memset(&c, 0, sizeof(c));
    rc = parse_args(argc, argv, &c.o, pos, &npos);
    if (rc != 0)
        return rc;
    if (c.o.version) {
        printf(PROG " %s\n", WG_VERSION);
        return WG_CTL_OK;
    }
    if (npos == 0 || (strcmp(pos[0], "help") == 0 && npos == 1)) {
        if (!c.o.help && npos == 0)
            return ctl_usage_error("no command given");
        fputs(global_help, stdout);
        return WG_CTL_OK;
    }
    bool help_cmd = strcmp(pos[0], "help") == 0;
    cmd = cmd_find(help_cmd ? pos[1] : pos[0]);
    if (cmd == NULL)
        return ctl_usage_error("unknown command '%s'", help_cmd ? pos[1] : pos[0]);
    if (help_cmd || c.o.help) {
        cmd_help(cmd, stdout);
        return WG_CTL_OK;
    }
    if (c.o.cmd_given)
        c.o.flags |= F_CMD;
    rc = check_command(cmd, pos, npos, c.o.flags);
    if (rc == 0 && (cmd->flags & F_CMD) && c.o.ncmd == 0 &&
        (c.o.cmd_given || cmd->run == ctl_cmd_exec))
        rc = ctl_usage_error("%s: no command after -- (usage: " PROG " %s)", cmd->name, cmd->usage);
    if (rc == 0 && cmd->nargs == 2)
        c.o.arg2 = pos[2];
    if (rc != 0)
        return rc;

    const char *env_token = getenv("WAKEGATE_ADMIN_TOKEN");
    c.env_token = env_token != NULL && env_token[0] != '\0';
    /* --token wins over the environment and the file, as the environment
     * wins over the file in wg_config_load(): set it there, so a token file
     * this user cannot read does not stop a CLI that was given the token. */
    if (c.o.token != NULL && setenv("WAKEGATE_ADMIN_TOKEN", c.o.token, 1) < 0)
        return WG_CTL_FAILED;
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, PROG ": cannot initialise libcurl\n");
        return WG_CTL_FAILED;
    }
    ctl_load_config(&c);
    if (!c.cfg_ok && cmd->run != ctl_cmd_doctor) {
        fprintf(stderr, PROG ": configuration error: %s\n", c.cfg_err);
        rc = WG_CTL_CONFIG;
        goto out;
    }
    rc = ctl_resolve(&c);
    if (rc == 0)
        rc = cmd->run(&c, cmd->nargs ? pos[1] : NULL);
out:
    if (c.cfg_ok)
        wg_config_free(&c.cfg);
    curl_global_cleanup();
    if (fflush(stdout) != 0 && rc == WG_CTL_OK && !ctl_interrupted)
        rc = WG_CTL_FAILED;
    return rc;
}
