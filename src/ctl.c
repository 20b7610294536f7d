/* src/ctl.c - wakegatectl, the operator CLI; see ctl.h and docs/cli.md.
 *
 * Shape of the file: pure helpers (formatting, exit codes), the command
 * line, one HTTP primitive (libcurl multi driven by a plain loop, so a
 * stream can be stopped between polls), the admin API commands, then
 * doctor (Redis with hiredis, the Docker engine with the same HTTP
 * primitive, and a probe container).
 *
 * Ownership: struct ctl owns the loaded configuration and the admin base
 * URL; a struct http_call owns its response body until http_call_release().
 * Everything a peer sends is capped (API bodies, one SSE message, Docker
 * bodies) and every call has a timeout, except `events -f`, which runs
 * until interrupted.
 *
 * Output: tables and key/value lines on stdout; errors on stderr, each
 * naming the URL, the status and the API's own error text. Text that comes
 * from sessions (save output, errors, event details) is printed with
 * control bytes replaced, so a container cannot drive the terminal. */
#include "src/ctl.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "common/buf.h"
#include "common/config.h"
#include "common/redis_url.h"
#include "common/session.h"
#include "orchestrator/docker.h"
#include "src/redis_child.h"

#define PROG "wakegatectl"

#define BODY_MAX (16u << 20)       /* an admin API or Docker answer */
#define SSE_LINE_MAX (1u << 20)    /* one SSE line (the API sends one data line per event) */
#define CONNECT_TIMEOUT_MS 3000L   /* every connect, admin API and Docker */
#define CALL_TIMEOUT_MS 30000L     /* one admin API call without ?wait */
#define WAIT_MARGIN_MS 30000L      /* beyond the server's own wait deadline */
#define EVENTS_QUIET_MS 500        /* `events` without -f: the replay is over */
#define EVENTS_FIRST_BYTE_MS 10000 /* `events`: the stream must start by then */
#define RECONNECT_MS 1000          /* `events -f` after the stream was lost */
#define POLL_MS 100                /* how often a transfer looks at the stop flag */
#define DOCTOR_HTTP_MS 5000L       /* each doctor HTTP check */
#define DOCTOR_REDIS_MS 3000       /* the Redis connect and PING, each */
#define PROBE_WAIT_MS 20000L       /* the probe container, start to exit */
#define PROBE_CONNECT_S 2          /* nc -w inside the probe */
#define PROBE_TARGETS_MAX 4
#define URL_MAX 1024

/* The stop flag of `events -f`: a signal handler has no argument, so this
 * one is file-scope. Nothing else is. */
static volatile sig_atomic_t interrupted;

/* ---- pure helpers ------------------------------------------------------ */

char *wg_ctl_fmt_duration(int64_t ms, char *out, size_t outlen)
{
    int64_t s = ms < 0 ? 0 : ms / 1000;
    if (s < 60)
        snprintf(out, outlen, "%" PRId64 "s", s);
    else if (s < 3600)
        snprintf(out, outlen, "%" PRId64 "m%02" PRId64 "s", s / 60, s % 60);
    else if (s < 86400 && (s % 3600) / 60 == 0)
        snprintf(out, outlen, "%" PRId64 "h", s / 3600);
    else if (s < 86400)
        snprintf(out, outlen, "%" PRId64 "h%02" PRId64 "m", s / 3600, (s % 3600) / 60);
    else if ((s % 86400) / 3600 == 0)
        snprintf(out, outlen, "%" PRId64 "d", s / 86400);
    else
        snprintf(out, outlen, "%" PRId64 "d%02" PRId64 "h", s / 86400, (s % 86400) / 3600);
    return out;
}

char *wg_ctl_fmt_ago(int64_t ms, char *out, size_t outlen)
{
    int64_t s = ms < 0 ? 0 : ms / 1000;
    if (s < 60)
        snprintf(out, outlen, "%" PRId64 "s", s);
    else if (s < 3600)
        snprintf(out, outlen, "%" PRId64 "m", s / 60);
    else if (s < 86400)
        snprintf(out, outlen, "%" PRId64 "h", s / 3600);
    else
        snprintf(out, outlen, "%" PRId64 "d", s / 86400);
    return out;
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

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "2026-11-21T19:10:39Z", with milliseconds when with_ms. */
static char *fmt_time(int64_t ms, bool with_ms, char *out, size_t outlen)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char base[32];
    if (ms <= 0 || gmtime_r(&t, &tm) == NULL) {
        snprintf(out, outlen, "-");
        return out;
    }
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    if (with_ms)
        snprintf(out, outlen, "%s.%03dZ", base, (int)(ms % 1000));
    else
        snprintf(out, outlen, "%sZ", base);
    return out;
}

/* Text from a session or a peer, made safe for a terminal: control bytes
 * (but newline and tab where allowed) become '?'. */
static void put_clean(FILE *f, const char *s, bool keep_newlines)
{
    for (; s != NULL && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        bool ok = ch >= 0x20 && ch != 0x7f;
        if (!ok && keep_newlines && (ch == '\n' || ch == '\t'))
            ok = true;
        fputc(ok ? ch : '?', f);
    }
}

static void clean_copy(char *dst, size_t dstlen, const char *src)
{
    size_t o = 0;
    for (; src != NULL && *src && o + 1 < dstlen; src++) {
        unsigned char ch = (unsigned char)*src;
        dst[o++] = ch >= 0x20 && ch != 0x7f ? (char)ch : '?';
    }
    dst[o] = '\0';
}

/* snprintf for messages, where a cut is acceptable (and not worth a
 * warning at every call). */
static void msgf(char *out, size_t outlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void msgf(char *out, size_t outlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, outlen, fmt, ap);
    va_end(ap);
}

static const char *reason_phrase(long status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "";
    }
}

static const char *jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static int64_t jint(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

/* ---- the command line -------------------------------------------------- */

enum {
    F_WAIT = 1u << 0,
    F_FORCE = 1u << 1,
    F_FOLLOW = 1u << 2,
    F_SINCE = 1u << 3,
};

struct ctl_opts {
    const char *admin;  /* --admin */
    const char *token;  /* --token */
    const char *config; /* --config */
    const char *since;  /* --since */
    bool json, help, version;
    unsigned flags; /* F_* given */
};

struct ctl {
    struct ctl_opts o;
    struct wg_config cfg;
    bool cfg_ok;
    char cfg_err[WG_CONFIG_ERR_MAX];
    char base[URL_MAX]; /* admin API base URL, no trailing '/' */
    const char *base_src;
    const char *token; /* borrowed: the flag, or cfg.admin_token */
    const char *token_src;
    bool env_token; /* WAKEGATE_ADMIN_TOKEN was set by the user (not by --token) */
};

struct cmd {
    const char *name;
    unsigned flags; /* F_* it accepts */
    int nargs;      /* 0 or 1 (the session id) */
    int (*run)(struct ctl *c, const char *id);
    const char *usage;
    const char *help;
};

static int cmd_ls(struct ctl *c, const char *id);
static int cmd_show(struct ctl *c, const char *id);
static int cmd_wake(struct ctl *c, const char *id);
static int cmd_sleep(struct ctl *c, const char *id);
static int cmd_rm(struct ctl *c, const char *id);
static int cmd_events(struct ctl *c, const char *id);
static int cmd_doctor(struct ctl *c, const char *id);

static const struct cmd commands[] = {
    {"ls", 0, 0, cmd_ls, "ls",
     "List the sessions: id, state, host, IP, idle time (now - last activity) and\n"
     "the last save. --json prints the API's array as is.\n"},
    {"show", 0, 1, cmd_show, "show ID",
     "Show one session's record, with the last save's output tail and the last\n"
     "error. --json prints the API's record as is.\n"},
    {"wake", F_WAIT, 1, cmd_wake, "wake ID [--wait]",
     "Queue a wake. With --wait, return once the session runs (exit 1 if it\n"
     "failed or did not run within the gateway's sessions.wake_timeout).\n"},
    {"sleep", F_WAIT | F_FORCE, 1, cmd_sleep, "sleep ID [--wait] [--force]",
     "Queue a sleep. Without --force the orchestrator saves the work first (and\n"
     "refuses while no save hook exists); --force stops without saving. With\n"
     "--wait, return once the session is asleep or paused.\n"},
    {"rm", F_FORCE, 1, cmd_rm, "rm ID [--force]",
     "Queue the destruction of a session and its container. Without --force the\n"
     "orchestrator saves first (and refuses while no save hook exists).\n"},
    {"events", F_FOLLOW | F_SINCE, 0, cmd_events, "events [-f] [--since ID|MS|DURATION]",
     "Print session events, one per line: time, session, transition (from -> to)\n"
     "or event type, detail. Without -f: the stored events (all of them, or those\n"
     "after --since), then exit. With -f: only new events (after --since when\n"
     "given) until interrupted; SIGINT or SIGTERM exits 0. --since takes a stream\n"
     "id (1700000000000-0), a time in ms since the epoch, or a duration (10m).\n"
     "--json prints each event's JSON as the API sends it, one per line.\n"},
    {"doctor", 0, 0, cmd_doctor, "doctor",
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
    "  sleep ID [--wait] [--force]  put a session to sleep\n"
    "  rm ID [--force]           destroy a session\n"
    "  events [-f] [--since X]   session events; -f follows\n"
    "  doctor                    check the installation\n"
    "  help [COMMAND]            this help, or a command's\n"
    "\n"
    "Options:\n"
    "      --admin URL     admin API (env WAKEGATE_ADMIN_URL; default from the\n"
    "                      configuration's admin.listen, 127.0.0.1:8081)\n"
    "      --token TOKEN   admin token (env WAKEGATE_ADMIN_TOKEN; default from the\n"
    "                      configuration's admin.token or admin.token_file)\n"
    "  -c, --config FILE   configuration file (env WAKEGATE_CONFIG), read as the\n"
    "                      daemon reads it, environment overrides included\n"
    "      --json          machine output: the API's JSON as is\n"
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

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
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
    case F_FOLLOW:
        return "-f";
    default:
        return "--since";
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
        {"follow", no_argument, NULL, 'f'},
        {"since", required_argument, NULL, 's'},
        {NULL, 0, NULL, 0},
    };
    int opt;

    *npos = 0;
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
        case 'f':
            o->flags |= F_FOLLOW;
            break;
        case 's':
            o->flags |= F_SINCE;
            o->since = optarg;
            break;
        case ':':
            return usage_error("option '%s' needs a value", argv[optind - 1]);
        default:
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    for (int i = optind; i < argc; i++) {
        if (*npos >= 3)
            return usage_error("unexpected argument '%s'", argv[i]);
        positional[(*npos)++] = argv[i];
    }
    return 0;
}

/* ---- HTTP (libcurl) ---------------------------------------------------- */

struct http_call;
/* Body bytes of a 2xx answer, for streams. Returns 0, or <0 to abort. */
typedef int http_bytes_fn(struct http_call *hc, const char *p, size_t n);
/* Asked every POLL_MS and after each read: true ends the transfer (not an
 * error; hc->stopped tells). */
typedef bool http_stop_fn(struct http_call *hc);

struct http_call {
    /* request */
    const char *method;
    char url[URL_MAX];
    bool url_bad;                        /* it did not fit: the call fails */
    const char *unix_socket;             /* Docker over a unix socket, else NULL */
    const struct wg_docker_tls_cfg *tls; /* https to Docker, else NULL */
    const char *token;                   /* bearer token, or NULL */
    const char *json_body;               /* request body (application/json), or NULL */
    const char *last_event_id;           /* SSE resume point, or NULL */
    long total_ms;                       /* 0: no total timeout (streams) */
    http_bytes_fn *on_bytes;             /* streams: 2xx body bytes go here */
    http_stop_fn *should_stop;
    void *arg;
    /* response */
    long status;          /* 0 until a status line came */
    struct wg_buf body;   /* the body (non-2xx bodies of streams too), capped */
    char api_version[32]; /* Docker's Api-Version header */
    char server[96];      /* the Server header */
    int64_t started;      /* mono_ms() when it was sent */
    int64_t last_byte;    /* mono_ms() of the last body byte */
    bool got_bytes;
    bool stopped; /* should_stop ended it */
    int cb_error; /* what on_bytes returned, when it aborted */
    char err[CURL_ERROR_SIZE + URL_MAX + 64];
};

static void http_call_init(struct http_call *hc, const char *method)
{
    memset(hc, 0, sizeof(*hc));
    hc->method = method;
    wg_buf_init(&hc->body, BODY_MAX);
}

static void http_call_release(struct http_call *hc)
{
    wg_buf_release(&hc->body);
}

static void http_url(struct http_call *hc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Sets the URL; one that does not fit makes the call fail, never go to a
 * cut address. */
static void http_url(struct http_call *hc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(hc->url, sizeof(hc->url), fmt, ap);
    va_end(ap);
    hc->url_bad = n < 0 || (size_t)n >= sizeof(hc->url);
}

/* The body as a C string (it is kept NUL-terminated past its size). */
static const char *http_body(struct http_call *hc)
{
    if (wg_buf_size(&hc->body) == 0 || wg_buf_reserve(&hc->body, 1) < 0)
        return "";
    hc->body.data[hc->body.len] = '\0';
    return wg_buf_head(&hc->body);
}

static size_t http_on_write(char *p, size_t size, size_t n, void *arg)
{
    struct http_call *hc = arg;
    size_t len = size * n;
    hc->got_bytes = true;
    hc->last_byte = mono_ms();
    if (hc->on_bytes != NULL && hc->status >= 200 && hc->status < 300) {
        int rc = hc->on_bytes(hc, p, len);
        if (rc < 0) {
            hc->cb_error = rc;
            return 0; /* curl ends the transfer with CURLE_WRITE_ERROR */
        }
        return len;
    }
    if (wg_buf_append(&hc->body, p, len) < 0) {
        hc->cb_error = -E2BIG;
        return 0;
    }
    return len;
}

static void header_value(const char *line, size_t len, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return;
    const char *v = line + nl + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    size_t vl = (size_t)(end - v) < outlen - 1 ? (size_t)(end - v) : outlen - 1;
    memcpy(out, v, vl);
    out[vl] = '\0';
}

static size_t http_on_header(char *p, size_t size, size_t n, void *arg)
{
    struct http_call *hc = arg;
    size_t len = size * n;
    if (len > 5 && strncmp(p, "HTTP/", 5) == 0) {
        /* A new status line (after a 100): forget the last. "HTTP/1.1 200"
         * or, over TLS to Docker, "HTTP/2 200". */
        const char *sp = memchr(p, ' ', len);
        hc->status = sp != NULL ? strtol(sp + 1, NULL, 10) : 0;
        hc->api_version[0] = hc->server[0] = '\0';
        return len;
    }
    header_value(p, len, "Api-Version", hc->api_version, sizeof(hc->api_version));
    header_value(p, len, "Server", hc->server, sizeof(hc->server));
    return len;
}

static int http_setup(struct http_call *hc, CURL *e, struct curl_slist **hdrs, char *errbuf)
{
    char line[512];
    int bad = 0;

    bad |= curl_easy_setopt(e, CURLOPT_URL, hc->url);
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    if (hc->total_ms > 0)
        bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, hc->total_ms);
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_on_write);
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, hc);
    bad |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, http_on_header);
    bad |= curl_easy_setopt(e, CURLOPT_HEADERDATA, hc);
    bad |= curl_easy_setopt(e, CURLOPT_USERAGENT, PROG "/" WG_VERSION);
    /* The admin API is where we were told it is: no proxy from the
     * environment may see the token. */
    bad |= curl_easy_setopt(e, CURLOPT_PROXY, "");
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (strcmp(hc->method, "GET") != 0)
        bad |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, hc->method);
    if (hc->unix_socket != NULL)
        bad |= curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, hc->unix_socket);
    if (hc->tls != NULL) {
        if (hc->tls->ca)
            bad |= curl_easy_setopt(e, CURLOPT_CAINFO, hc->tls->ca);
        if (hc->tls->cert)
            bad |= curl_easy_setopt(e, CURLOPT_SSLCERT, hc->tls->cert);
        if (hc->tls->key)
            bad |= curl_easy_setopt(e, CURLOPT_SSLKEY, hc->tls->key);
        bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, hc->tls->verify ? 1L : 0L);
        bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, hc->tls->verify ? 2L : 0L);
    }
    if (hc->token != NULL) {
        snprintf(line, sizeof(line), "Authorization: Bearer %s", hc->token);
        *hdrs = curl_slist_append(*hdrs, line);
        explicit_bzero(line, sizeof(line));
    }
    if (hc->last_event_id != NULL) {
        snprintf(line, sizeof(line), "Last-Event-ID: %s", hc->last_event_id);
        *hdrs = curl_slist_append(*hdrs, line);
    }
    if (hc->on_bytes != NULL)
        *hdrs = curl_slist_append(*hdrs, "Accept: text/event-stream");
    if (hc->json_body != NULL) {
        *hdrs = curl_slist_append(*hdrs, "Content-Type: application/json");
        bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, hc->json_body);
    } else if (strcmp(hc->method, "POST") == 0) {
        bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
        bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
    }
    /* No "Expect: 100-continue" round trip for our small bodies. */
    *hdrs = curl_slist_append(*hdrs, "Expect:");
    if (*hdrs != NULL)
        bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, *hdrs);
    return bad ? -EINVAL : 0;
}

/* Runs one request to its end, or until should_stop says so. Returns 0 when
 * an answer came (hc->status, any value) or the transfer was stopped, and
 * -1 when none came (hc->err says why: connect, timeout, ...). */
static int http_run(struct http_call *hc)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = NULL;
    CURL *e = curl_easy_init();
    CURLM *m = curl_multi_init();
    CURLcode result = CURLE_OK;
    int running = 1, rc = -1;

    if (hc->url_bad) {
        snprintf(hc->err, sizeof(hc->err), "%s %.64s...: URL too long", hc->method, hc->url);
        goto out;
    }
    if (e == NULL || m == NULL || http_setup(hc, e, &hdrs, errbuf) < 0 ||
        curl_multi_add_handle(m, e) != CURLM_OK) {
        snprintf(hc->err, sizeof(hc->err), "%s %s: cannot set up the request", hc->method, hc->url);
        goto out;
    }
    hc->started = hc->last_byte = mono_ms();
    for (;;) {
        if (curl_multi_perform(m, &running) != CURLM_OK) {
            snprintf(hc->err, sizeof(hc->err), "%s %s: transfer failed", hc->method, hc->url);
            goto out_remove;
        }
        if (!running)
            break;
        if (hc->should_stop != NULL && hc->should_stop(hc)) {
            hc->stopped = true;
            rc = 0;
            goto out_remove;
        }
        curl_multi_poll(m, NULL, 0, POLL_MS, NULL);
    }
    int left;
    CURLMsg *msg = curl_multi_info_read(m, &left);
    if (msg != NULL && msg->msg == CURLMSG_DONE)
        result = msg->data.result;
    if (result == CURLE_OK || (result == CURLE_WRITE_ERROR && hc->cb_error != 0)) {
        if (hc->cb_error == -E2BIG)
            snprintf(hc->err, sizeof(hc->err), "%s %s: answer larger than %u bytes", hc->method,
                     hc->url, BODY_MAX);
        else
            rc = 0;
        if (hc->status == 0 && rc == 0) {
            snprintf(hc->err, sizeof(hc->err), "%s %s: no HTTP answer", hc->method, hc->url);
            rc = -1;
        }
    } else {
        snprintf(hc->err, sizeof(hc->err), "%s %s: %s", hc->method, hc->url,
                 errbuf[0] ? errbuf : curl_easy_strerror(result));
    }
out_remove:
    curl_multi_remove_handle(m, e);
out:
    curl_slist_free_all(hdrs);
    curl_multi_cleanup(m);
    curl_easy_cleanup(e);
    return rc;
}

/* ---- context: configuration, admin URL, token -------------------------- */

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
    struct wg_config_flags flags = {
        .config_path = c->o.config,
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
            return usage_error("--admin '%s': expected http://HOST:PORT or HOST:PORT", c->o.admin);
    } else if (env_url != NULL && env_url[0] != '\0') {
        c->base_src = "WAKEGATE_ADMIN_URL";
        if (admin_url_set(c, env_url) < 0)
            return usage_error("environment WAKEGATE_ADMIN_URL '%s': expected http://HOST:PORT",
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
    }
    return 0;
}

/* ---- the admin API ----------------------------------------------------- */

static bool id_ok(const char *id)
{
    return id != NULL && wg_session_id_valid(id, strlen(id));
}

/* The API's {"error": ...}, copied (cleaned) into out; "" if none. */
static void api_error_text(struct http_call *hc, char *out, size_t outlen)
{
    json_t *j = json_loads(http_body(hc), 0, NULL);
    const char *e = json_is_object(j) ? jstr(j, "error") : NULL;
    clean_copy(out, outlen, e ? e : "");
    json_decref(j);
}

/* Prints the failure of an answered call; returns its exit code. */
static int api_report(struct ctl *c, struct http_call *hc)
{
    char err[512];
    api_error_text(hc, err, sizeof(err));
    int rc = wg_ctl_exit_for_status(hc->status, err);
    if (c->o.json && wg_buf_size(&hc->body) > 0 && hc->body.data[hc->body.off] == '{')
        fwrite(wg_buf_head(&hc->body), 1, wg_buf_size(&hc->body), stdout);
    fprintf(stderr, PROG ": %s %s: %ld %s%s%s\n", hc->method, hc->url, hc->status,
            reason_phrase(hc->status), err[0] ? ": " : "", err);
    if (rc == WG_CTL_AUTH && hc->status != 503) {
        if (c->token != NULL)
            fprintf(stderr, PROG ": the token from %s was refused\n", c->token_src);
        else
            fprintf(stderr, PROG ": no token was sent: pass --token, set WAKEGATE_ADMIN_TOKEN or "
                                 "admin.token_file\n");
    }
    return rc;
}

/* One call to the admin API. Returns WG_CTL_OK with a 2xx answer in hc, or
 * an exit code after printing the error. hc is the caller's to release. */
static int api_call(struct ctl *c, struct http_call *hc, const char *path, long total_ms)
{
    http_url(hc, "%s%s", c->base, path);
    hc->token = c->token;
    hc->total_ms = total_ms;
    if (http_run(hc) < 0) {
        fprintf(stderr, PROG ": cannot reach the admin API (%s): %s\n", c->base_src, hc->err);
        return WG_CTL_UNREACHABLE;
    }
    if (hc->status < 200 || hc->status >= 300)
        return api_report(c, hc);
    return WG_CTL_OK;
}

/* The answer as JSON of the expected type; prints why not. */
static json_t *api_json(struct http_call *hc, bool array)
{
    json_error_t jerr;
    json_t *j = json_loadb(wg_buf_head(&hc->body), wg_buf_size(&hc->body), 0, &jerr);
    if (j == NULL || (array ? !json_is_array(j) : !json_is_object(j))) {
        fprintf(stderr, PROG ": %s %s: unexpected answer (%s)\n", hc->method, hc->url,
                j ? "wrong JSON type" : jerr.text);
        json_decref(j);
        return NULL;
    }
    return j;
}

static void print_raw(struct http_call *hc)
{
    fwrite(wg_buf_head(&hc->body), 1, wg_buf_size(&hc->body), stdout);
}

/* "ok 3m ago a1b2c3d", "FAILED exit 1 20s ago" or "-". */
static void fmt_save(const json_t *save, int64_t now, char *out, size_t outlen)
{
    char ago[16];
    if (!json_is_object(save)) {
        snprintf(out, outlen, "-");
        return;
    }
    wg_ctl_fmt_ago(now - jint(save, "at"), ago, sizeof(ago));
    if (json_is_true(json_object_get(save, "ok"))) {
        const char *commit = jstr(save, "commit");
        snprintf(out, outlen, "ok %s ago%s%.7s", ago, commit ? " " : "", commit ? commit : "");
    } else {
        snprintf(out, outlen, "FAILED exit %" PRId64 " %s ago", jint(save, "exit_code"), ago);
    }
}

enum { COL_ID, COL_STATE, COL_HOST, COL_IP, COL_IDLE, COL_SAVE, NCOLS };

struct row {
    char cell[NCOLS][WG_SESSION_HOST_MAX + 1];
};

static void ls_row(const json_t *s, int64_t now, struct row *r)
{
    const char *ip = jstr(s, "ip");
    int64_t last = jint(s, "last_active");
    clean_copy(r->cell[COL_ID], sizeof(r->cell[0]), jstr(s, "id"));
    clean_copy(r->cell[COL_STATE], sizeof(r->cell[0]), jstr(s, "state"));
    clean_copy(r->cell[COL_HOST], sizeof(r->cell[0]), jstr(s, "host") ? jstr(s, "host") : "-");
    clean_copy(r->cell[COL_IP], sizeof(r->cell[0]), ip ? ip : "-");
    if (last > 0)
        wg_ctl_fmt_duration(now - last, r->cell[COL_IDLE], sizeof(r->cell[0]));
    else
        snprintf(r->cell[COL_IDLE], sizeof(r->cell[0]), "-");
    fmt_save(json_object_get(s, "last_save"), now, r->cell[COL_SAVE], sizeof(r->cell[0]));
}

static void ls_print(const struct row *rows, size_t n)
{
    static const struct row head = {{"ID", "STATE", "HOST", "IP", "IDLE", "LAST SAVE"}};
    int w[NCOLS];
    for (int k = 0; k < NCOLS; k++)
        w[k] = (int)strlen(head.cell[k]);
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < NCOLS; k++)
            if ((int)strlen(rows[i].cell[k]) > w[k])
                w[k] = (int)strlen(rows[i].cell[k]);
    for (size_t i = 0; i <= n; i++) {
        const struct row *r = i == 0 ? &head : &rows[i - 1];
        for (int k = 0; k < NCOLS - 1; k++)
            printf("%-*s  ", w[k], r->cell[k]);
        printf("%s\n", r->cell[NCOLS - 1]);
    }
}

static int cmd_ls(struct ctl *c, const char *unused)
{
    struct http_call hc;
    struct row *rows = NULL;
    json_t *j = NULL;
    int rc;

    http_call_init(&hc, "GET");
    rc = api_call(c, &hc, "/v1/sessions", CALL_TIMEOUT_MS);
    if (rc != WG_CTL_OK)
        goto out;
    if (c->o.json) {
        print_raw(&hc);
        goto out;
    }
    rc = WG_CTL_FAILED;
    j = api_json(&hc, true);
    if (j == NULL)
        goto out;
    size_t n = json_array_size(j);
    rows = calloc(n ? n : 1, sizeof(*rows));
    if (rows == NULL)
        goto out;
    int64_t now = now_ms();
    for (size_t i = 0; i < n; i++)
        ls_row(json_array_get(j, i), now, &rows[i]);
    ls_print(rows, n);
    rc = WG_CTL_OK;
out:
    free(rows);
    json_decref(j);
    http_call_release(&hc);
    return rc;
}

static void kv_time(const char *key, const json_t *rec, const char *field, const char *rel,
                    int64_t now)
{
    char t[40], d[24];
    int64_t ms = jint(rec, field);
    if (ms <= 0)
        return;
    printf("%-13s %s (%s %s)\n", key, fmt_time(ms, false, t, sizeof(t)), rel,
           wg_ctl_fmt_duration(now - ms, d, sizeof(d)));
}

static void kv_str(const char *key, const char *value)
{
    printf("%-13s ", key);
    put_clean(stdout, value ? value : "-", false);
    putchar('\n');
}

static void show_save(const json_t *save, int64_t now)
{
    char line[128], t[40];
    fmt_save(save, now, line, sizeof(line));
    kv_str("last save", line);
    if (!json_is_object(save))
        return;
    printf("%-13s %s, exit %" PRId64 "%s%s\n", "  at",
           fmt_time(jint(save, "at"), false, t, sizeof(t)), jint(save, "exit_code"),
           jstr(save, "commit") ? ", commit " : "",
           jstr(save, "commit") ? jstr(save, "commit") : "");
    const char *output = jstr(save, "output");
    if (output == NULL || output[0] == '\0')
        return;
    printf("  output\n");
    /* Line by line, each prefixed, so the tail reads as a quote. */
    for (const char *p = output; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char *one = strndup(p, len);
        fputs("    | ", stdout);
        put_clean(stdout, one ? one : "", false);
        putchar('\n');
        free(one);
        p += len + (nl ? 1 : 0);
    }
}

static void show_record(const json_t *rec)
{
    int64_t now = now_ms();
    char buf[128];
    const json_t *idle = json_object_get(rec, "idle");

    kv_str("id", jstr(rec, "id"));
    kv_str("state", jstr(rec, "state"));
    kv_time("  since", rec, "state_since", "for", now);
    kv_str("host", jstr(rec, "host"));
    kv_str("image", jstr(rec, "image"));
    kv_str("container", jstr(rec, "container_id"));
    if (jstr(rec, "ip") != NULL) {
        snprintf(buf, sizeof(buf), "%s:%" PRId64, jstr(rec, "ip"), jint(rec, "port"));
        kv_str("address", buf);
    } else {
        snprintf(buf, sizeof(buf), "- (port %" PRId64 ")", jint(rec, "port"));
        kv_str("address", buf);
    }
    kv_time("created", rec, "created", "age", now);
    if (jint(rec, "last_active") > 0)
        kv_time("last active", rec, "last_active", "idle", now);
    else
        kv_str("last active", "-");
    printf("%-13s %" PRId64 "\n", "restarts", jint(rec, "restarts"));
    if (json_is_object(idle)) {
        char p[24] = "-", s[24] = "-";
        if (json_object_get(idle, "pause_after_ms"))
            wg_ctl_fmt_duration(jint(idle, "pause_after_ms"), p, sizeof(p));
        if (json_object_get(idle, "stop_after_ms"))
            wg_ctl_fmt_duration(jint(idle, "stop_after_ms"), s, sizeof(s));
        printf("%-13s pause after %s, stop after %s\n", "idle policy", p, s);
    }
    show_save(json_object_get(rec, "last_save"), now);
    kv_str("error", jstr(rec, "error"));
    printf("%-13s %" PRId64 "\n", "version", jint(rec, "version"));
}

static int cmd_show(struct ctl *c, const char *id)
{
    struct http_call hc;
    char path[128];
    json_t *j = NULL;
    int rc;

    http_call_init(&hc, "GET");
    snprintf(path, sizeof(path), "/v1/sessions/%s", id);
    rc = api_call(c, &hc, path, CALL_TIMEOUT_MS);
    if (rc != WG_CTL_OK)
        goto out;
    if (c->o.json) {
        print_raw(&hc);
        goto out;
    }
    j = api_json(&hc, false);
    if (j == NULL) {
        rc = WG_CTL_FAILED;
        goto out;
    }
    show_record(j);
out:
    json_decref(j);
    http_call_release(&hc);
    return rc;
}

/* The server waits up to wake_timeout (+ the save timeout for a sleep):
 * give it that and a margin, as far as our copy of the configuration
 * knows. */
static long wait_timeout_ms(const struct ctl *c)
{
    uint64_t ms = 10 * 60 * 1000;
    if (c->cfg_ok)
        ms = c->cfg.sessions.wake_timeout_ms + c->cfg.sessions.save.timeout_ms;
    return (long)(ms > 3600000 ? 3600000 : ms) + WAIT_MARGIN_MS;
}

static void command_done(const char *op, const char *id, bool waited, const json_t *j)
{
    const char *state = jstr(j, "state");
    if (!waited) {
        printf("%s queued for %s (state %s, command %s)\n", op, id, state ? state : "?",
               jstr(j, "command_id") ? jstr(j, "command_id") : "?");
    } else if (jstr(j, "ip") != NULL && state != NULL && strcmp(state, "running") == 0) {
        printf("%s is running at %s:%" PRId64 "\n", id, jstr(j, "ip"), jint(j, "port"));
    } else {
        printf("%s is %s\n", id, state ? state : "?");
    }
}

/* wake, sleep, rm: one queued command, maybe waited for. */
static int run_command(struct ctl *c, const char *method, const char *op, const char *id, bool wait,
                       bool force)
{
    struct http_call hc;
    char path[160];
    json_t *j = NULL;
    int rc;

    http_call_init(&hc, method);
    if (strcmp(op, "destroy") == 0)
        snprintf(path, sizeof(path), "/v1/sessions/%s%s", id, force ? "?force=1" : "");
    else
        snprintf(path, sizeof(path), "/v1/sessions/%s/%s%s%s", id, op, wait || force ? "?" : "",
                 wait && force ? "wait=1&force=1"
                 : wait        ? "wait=1"
                 : force       ? "force=1"
                               : "");
    rc = api_call(c, &hc, path, wait ? wait_timeout_ms(c) : CALL_TIMEOUT_MS);
    if (rc != WG_CTL_OK)
        goto out;
    if (c->o.json) {
        print_raw(&hc);
        goto out;
    }
    j = api_json(&hc, false);
    if (j == NULL) {
        rc = WG_CTL_FAILED;
        goto out;
    }
    command_done(op, id, wait, j);
out:
    json_decref(j);
    http_call_release(&hc);
    return rc;
}

static int cmd_wake(struct ctl *c, const char *id)
{
    return run_command(c, "POST", "wake", id, c->o.flags & F_WAIT, false);
}

static int cmd_sleep(struct ctl *c, const char *id)
{
    return run_command(c, "POST", "sleep", id, c->o.flags & F_WAIT, c->o.flags & F_FORCE);
}

static int cmd_rm(struct ctl *c, const char *id)
{
    return run_command(c, "DELETE", "destroy", id, false, c->o.flags & F_FORCE);
}

/* ---- events ------------------------------------------------------------ */

struct sse {
    struct ctl *c;
    bool follow;
    struct wg_buf line; /* a partial line, capped at SSE_LINE_MAX */
    struct wg_buf data; /* the data of the message being read */
    char id[48];        /* its id */
    char last_id[48];   /* of the last event printed: the resume point */
    bool out_gone;      /* stdout closed: stop quietly */
};

static void event_print_human(const char *data)
{
    json_t *j = json_loads(data, 0, NULL);
    char t[40], what[96];
    if (!json_is_object(j)) {
        put_clean(stdout, data, false);
        putchar('\n');
        json_decref(j);
        return;
    }
    const char *type = jstr(j, "type");
    if (type != NULL && strcmp(type, "transition") == 0) {
        const char *from = jstr(j, "from");
        snprintf(what, sizeof(what), "%s -> %s", from && from[0] ? from : "(new)",
                 jstr(j, "to") ? jstr(j, "to") : "?");
    } else {
        snprintf(what, sizeof(what), "%s", type ? type : "event");
    }
    /* The API checks session ids, but an entry written by hand is not:
     * every text from the entry is printed cleaned. */
    char sid[80];
    clean_copy(sid, sizeof(sid), jstr(j, "id") ? jstr(j, "id") : "-");
    printf("%s  %-20s  ", fmt_time(jint(j, "at"), true, t, sizeof(t)), sid);
    put_clean(stdout, what, false);
    const json_t *detail = json_object_get(j, "detail");
    if (detail != NULL && !json_is_null(detail)) {
        char *d = json_dumps(detail, JSON_COMPACT | JSON_ENCODE_ANY);
        putchar(' ');
        put_clean(stdout, d ? d : "?", false);
        free(d);
    }
    putchar('\n');
    json_decref(j);
}

static void sse_dispatch(struct sse *s)
{
    if (wg_buf_size(&s->data) == 0) /* a comment (": ping") or an empty message */
        return;
    if (wg_buf_append(&s->data, "", 1) < 0)
        return;
    const char *data = wg_buf_head(&s->data);
    if (s->c->o.json)
        printf("%s\n", data);
    else
        event_print_human(data);
    if (fflush(stdout) != 0 || ferror(stdout))
        s->out_gone = true;
    if (s->id[0])
        snprintf(s->last_id, sizeof(s->last_id), "%s", s->id);
    wg_buf_reset(&s->data);
    s->id[0] = '\0';
}

static void sse_line(struct sse *s, const char *l, size_t len)
{
    if (len > 0 && l[len - 1] == '\r')
        len--;
    if (len == 0) {
        sse_dispatch(s);
        return;
    }
    if (l[0] == ':')
        return;
    const char *colon = memchr(l, ':', len);
    size_t nl = colon ? (size_t)(colon - l) : len;
    const char *v = colon ? colon + 1 : l + len;
    if (v < l + len && *v == ' ')
        v++;
    size_t vl = (size_t)(l + len - v);
    if (nl == 4 && memcmp(l, "data", 4) == 0) {
        if (wg_buf_size(&s->data) > 0)
            wg_buf_append(&s->data, "\n", 1);
        wg_buf_append(&s->data, v, vl);
    } else if (nl == 2 && memcmp(l, "id", 2) == 0 && vl < sizeof(s->id)) {
        memcpy(s->id, v, vl);
        s->id[vl] = '\0';
    }
}

static int sse_on_bytes(struct http_call *hc, const char *p, size_t n)
{
    struct sse *s = hc->arg;
    while (n > 0 && !s->out_gone) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (wg_buf_append(&s->line, p, take) < 0)
            return -E2BIG;
        if (nl == NULL)
            break;
        sse_line(s, wg_buf_head(&s->line), wg_buf_size(&s->line));
        wg_buf_reset(&s->line);
        p += take + 1;
        n -= take + 1;
    }
    return 0;
}

static bool sse_should_stop(struct http_call *hc)
{
    struct sse *s = hc->arg;
    if (interrupted || s->out_gone)
        return true;
    if (!hc->got_bytes && mono_ms() - hc->started >= EVENTS_FIRST_BYTE_MS)
        return true;
    /* Without -f the replay is over when the stream goes quiet. */
    return !s->follow && hc->got_bytes && mono_ms() - hc->last_byte >= EVENTS_QUIET_MS;
}

static void on_stop_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* --since: a stream id, ms since the epoch, or a duration back from now. */
static int since_param(const char *v, char *out, size_t outlen)
{
    size_t i = 0, digits = 0;
    uint64_t dur;
    while (isdigit((unsigned char)v[i]))
        i++, digits++;
    if (digits > 0 && digits <= 20 && v[i] == '\0') {
        snprintf(out, outlen, "%s", v);
        return 0;
    }
    if (digits > 0 && digits <= 20 && v[i] == '-') {
        size_t j = i + 1;
        while (isdigit((unsigned char)v[j]))
            j++;
        if (j > i + 1 && j - i - 1 <= 20 && v[j] == '\0') {
            snprintf(out, outlen, "%s", v);
            return 0;
        }
    }
    if (wg_config_parse_duration(v, &dur) == 0) {
        int64_t at = now_ms() - (int64_t)dur;
        snprintf(out, outlen, "%" PRId64, at > 0 ? at : 0);
        return 0;
    }
    return -EINVAL;
}

static void sleep_interruptible(int ms)
{
    for (int t = 0; t < ms && !interrupted; t += POLL_MS)
        usleep(POLL_MS * 1000);
}

static int cmd_events(struct ctl *c, const char *unused)
{
    struct sse s = {.c = c, .follow = (c->o.flags & F_FOLLOW) != 0};
    char since[40] = "", path[96];
    struct sigaction sa;
    bool connected = false, lost = false;
    int rc = WG_CTL_OK;

    if (c->o.since != NULL && since_param(c->o.since, since, sizeof(since)) < 0)
        return usage_error("--since '%s': expected a stream id (1700000000000-0), ms since the "
                           "epoch, or a duration (10m)",
                           c->o.since);
    /* Without -f and --since: everything stored. */
    if (!s.follow && since[0] == '\0')
        snprintf(since, sizeof(since), "0");
    wg_buf_init(&s.line, SSE_LINE_MAX);
    wg_buf_init(&s.data, SSE_LINE_MAX);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    while (!interrupted && !s.out_gone) {
        struct http_call hc;
        http_call_init(&hc, "GET");
        hc.on_bytes = sse_on_bytes;
        hc.should_stop = sse_should_stop;
        hc.arg = &s;
        hc.last_event_id = s.last_id[0] ? s.last_id : NULL;
        snprintf(path, sizeof(path), "/v1/events%s%s", since[0] && !s.last_id[0] ? "?since=" : "",
                 since[0] && !s.last_id[0] ? since : "");
        http_url(&hc, "%s%s", c->base, path);
        hc.token = c->token;
        int r = http_run(&hc);
        /* A stream that was answered 2xx counts, even if it died later. */
        if (hc.status >= 200 && hc.status < 300) {
            connected = true;
            lost = false;
        }
        if (r < 0 && hc.cb_error == -E2BIG) {
            fprintf(stderr, PROG ": %s: an event longer than %u bytes\n", hc.url, SSE_LINE_MAX);
            rc = WG_CTL_FAILED;
        } else if (r < 0 && (!connected || !s.follow)) {
            fprintf(stderr, PROG ": cannot reach the admin API (%s): %s\n", c->base_src, hc.err);
            rc = WG_CTL_UNREACHABLE;
        } else if (r == 0 && hc.stopped && hc.status == 0 && !interrupted) {
            fprintf(stderr, PROG ": %s: no answer in %d ms\n", hc.url, EVENTS_FIRST_BYTE_MS);
            rc = WG_CTL_UNREACHABLE;
        } else if (r == 0 && hc.status != 0 && (hc.status < 200 || hc.status >= 300)) {
            rc = api_report(c, &hc);
        } else if (r == 0 && (hc.stopped || !s.follow)) {
            rc = WG_CTL_OK; /* interrupted, quiet, stdout gone, or the end of a replay */
        } else {
            /* Lost (or ended by the gateway) while following: resume after
             * the last event printed; with none yet, from about when the
             * stream was lost (our clock, not Redis's: close enough). Said
             * once per outage, however many attempts it takes. */
            if (!lost) {
                fprintf(stderr, PROG ": event stream %s, reconnecting\n",
                        r < 0 ? hc.err : "ended by the gateway");
                lost = true;
                if (!s.last_id[0])
                    snprintf(since, sizeof(since), "%" PRId64, now_ms() - RECONNECT_MS);
            }
            http_call_release(&hc);
            wg_buf_reset(&s.line);
            wg_buf_reset(&s.data);
            sleep_interruptible(RECONNECT_MS);
            continue;
        }
        http_call_release(&hc);
        break;
    }
    wg_buf_release(&s.line);
    wg_buf_release(&s.data);
    return rc;
}

/* ---- doctor ------------------------------------------------------------ */

enum level { LV_OK, LV_WARN, LV_FAIL };
static const char *const level_names[] = {"OK", "WARN", "FAIL"};

#define CHECKS_MAX 16

struct check {
    char name[24];
    enum level lv;
    char detail[768];
};

/* Where the Docker engine is, as the daemon would reach it. */
struct docker_ep {
    char base[URL_MAX];  /* http://localhost for a unix socket */
    char unix_path[108]; /* "" for tcp */
    const struct wg_docker_tls_cfg *tls;
    char version[16]; /* negotiated from /_ping: "1.41" */
};

struct doctor {
    struct ctl *c;
    struct check v[CHECKS_MAX];
    size_t n;
    bool admin_up;
    bool docker_up;
    struct docker_ep dk;
};

static void report(struct doctor *d, const char *name, enum level lv, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Records one check's outcome; prints it at once (the probe takes seconds,
 * so the lines before it should not wait), unless --json. */
static void report(struct doctor *d, const char *name, enum level lv, const char *fmt, ...)
{
    char raw[768];
    va_list ap;
    if (d->n >= CHECKS_MAX)
        return;
    struct check *k = &d->v[d->n++];
    snprintf(k->name, sizeof(k->name), "%s", name);
    k->lv = lv;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    clean_copy(k->detail, sizeof(k->detail), raw);
    if (!d->c->o.json) {
        printf("%-4s  %-17s %s\n", level_names[lv], k->name, k->detail);
        fflush(stdout);
    }
}

static bool check_config(struct doctor *d)
{
    const struct ctl *c = d->c;
    if (!c->cfg_ok) {
        report(d, "config", LV_FAIL, "%s", c->cfg_err);
        return false;
    }
    if (c->cfg.path != NULL)
        report(d, "config", LV_OK, "%s loads and validates", c->cfg.path);
    else
        report(d, "config", LV_OK,
               "no file (--config or WAKEGATE_CONFIG): defaults and environment");
    return true;
}

/* The token must not be readable by every local user: its file, or the
 * configuration file when the token is written in it. */
static void check_token(struct doctor *d, bool env_token)
{
    const struct ctl *c = d->c;
    const struct wg_config *cfg = &c->cfg;
    const char *file = cfg->admin_token_file;
    const char *what = "admin.token_file";
    struct stat st;

    if (file == NULL && cfg->admin_token != NULL && !env_token && cfg->path != NULL) {
        file = cfg->path;
        what = "the configuration file holding admin.token";
    }
    if (file == NULL) {
        if (cfg->admin_token != NULL || c->token != NULL)
            report(d, "token", LV_OK, "from %s, no file to check",
                   c->token_src ? c->token_src : "the environment");
        else
            report(d, "token", LV_FAIL,
                   "no admin token configured: /v1 answers 503 (set admin.token_file)");
        return;
    }
    if (stat(file, &st) < 0) {
        report(d, "token", LV_FAIL, "%s %s: %s", what, file, strerror(errno));
        return;
    }
    unsigned mode = (unsigned)st.st_mode & 07777;
    if (st.st_mode & (S_IROTH | S_IWOTH))
        report(d, "token", LV_FAIL, "%s %s is world-%s (mode %04o): chmod 600 %s", what, file,
               st.st_mode & S_IROTH ? "readable" : "writable", mode, file);
    else
        report(d, "token", LV_OK, "%s %s is not world-readable (mode %04o, owner uid %u)", what,
               file, mode, (unsigned)st.st_uid);
}

/* GET base+path within DOCTOR_HTTP_MS; returns http_run()'s result. */
static int doctor_get(struct doctor *d, struct http_call *hc, const char *path, bool auth)
{
    http_call_init(hc, "GET");
    http_url(hc, "%s%s", d->c->base, path);
    hc->token = auth ? d->c->token : NULL;
    hc->total_ms = DOCTOR_HTTP_MS;
    return http_run(hc);
}

static void check_admin(struct doctor *d)
{
    struct http_call hc;
    char err[512];

    if (doctor_get(d, &hc, "/healthz", false) < 0) {
        report(d, "admin healthz", LV_FAIL, "%s (admin URL from %s)", hc.err, d->c->base_src);
    } else if (hc.status != 200) {
        report(d, "admin healthz", LV_FAIL, "%s answered %ld", hc.url, hc.status);
    } else {
        report(d, "admin healthz", LV_OK, "%s answered 200", hc.url);
        d->admin_up = true;
    }
    http_call_release(&hc);
    if (!d->admin_up) {
        report(d, "admin readyz", LV_WARN, "skipped: the admin API does not answer");
        report(d, "admin token", LV_WARN, "skipped: the admin API does not answer");
        return;
    }

    if (doctor_get(d, &hc, "/readyz", false) < 0) {
        report(d, "admin readyz", LV_FAIL, "%s", hc.err);
    } else if (hc.status == 200) {
        report(d, "admin readyz", LV_OK, "%s answered 200", hc.url);
    } else {
        json_t *j = json_loads(http_body(&hc), 0, NULL);
        const char *why = json_is_object(j) ? jstr(j, "reason") : NULL;
        report(d, "admin readyz", LV_FAIL, "%s answered %ld: %s", hc.url, hc.status,
               why ? why : "not ready");
        json_decref(j);
    }
    http_call_release(&hc);

    if (d->c->token == NULL) {
        report(d, "admin token", LV_FAIL,
               "no token to send: pass --token, set WAKEGATE_ADMIN_TOKEN or admin.token_file");
        return;
    }
    if (doctor_get(d, &hc, "/v1/sessions", true) < 0) {
        report(d, "admin token", LV_FAIL, "%s", hc.err);
        http_call_release(&hc);
        return;
    }
    api_error_text(&hc, err, sizeof(err));
    if (hc.status == 200) {
        json_t *j = json_loadb(wg_buf_head(&hc.body), wg_buf_size(&hc.body), 0, NULL);
        report(d, "admin token", LV_OK, "the token from %s is accepted (%zu sessions)",
               d->c->token_src, json_array_size(j));
        json_decref(j);
    } else if (hc.status == 404) {
        report(d, "admin token", LV_WARN,
               "%s answered 404: no session API here (role proxy, or no redis.url)", hc.url);
    } else {
        report(d, "admin token", LV_FAIL, "%s answered %ld%s%s (token from %s)", hc.url, hc.status,
               err[0] ? ": " : "", err, d->c->token_src);
    }
    http_call_release(&hc);
}

/* ---- doctor: Redis ---- */

/* How a Redis target is named in doctor's lines: no password, no db. */
static void redis_shown(const struct wg_redis_url *u, char *out, size_t outlen)
{
    if (u->is_unix)
        snprintf(out, outlen, "unix:%s", u->path);
    else if (strchr(u->host, ':') != NULL)
        snprintf(out, outlen, "[%s]:%u", u->host, u->port);
    else
        snprintf(out, outlen, "%s:%u", u->host, u->port);
}

static void check_redis(struct doctor *d)
{
    const char *url = d->c->cfg.redis_url;
    struct wg_redis_url t;
    struct timeval tv = {DOCTOR_REDIS_MS / 1000, (DOCTOR_REDIS_MS % 1000) * 1000};
    redisContext *rc = NULL;
    redisReply *reply = NULL;
    char shown[400];
    int64_t t0;

    memset(&t, 0, sizeof(t));
    if (url == NULL) {
        report(d, "redis", LV_WARN, "redis.url is not set: no sessions, no admin API");
        return;
    }
    /* It was validated with the configuration: this only takes it apart. */
    if (wg_redis_url_parse(url, &t, NULL, 0) < 0) {
        report(d, "redis", LV_FAIL, "redis.url cannot be taken apart");
        goto out;
    }
    redis_shown(&t, shown, sizeof(shown));
    t0 = mono_ms();
    rc = t.is_unix ? redisConnectUnixWithTimeout(t.path, tv)
                   : redisConnectWithTimeout(t.host, t.port, tv);
    if (rc == NULL || rc->err) {
        report(d, "redis", LV_FAIL, "cannot connect to %s: %s", shown,
               rc ? rc->errstr : "out of memory");
        goto out;
    }
    redisSetTimeout(rc, tv);
    if (t.password != NULL) {
        reply = t.user != NULL ? redisCommand(rc, "AUTH %s %s", t.user, t.password)
                               : redisCommand(rc, "AUTH %s", t.password);
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            report(d, "redis", LV_FAIL, "%s refused AUTH: %s", shown,
                   reply ? reply->str : rc->errstr);
            goto out;
        }
        freeReplyObject(reply);
        reply = NULL;
    }
    reply = redisCommand(rc, "PING");
    if (reply == NULL) {
        report(d, "redis", LV_FAIL, "%s: PING: %s", shown, rc->errstr);
    } else if (reply->type != REDIS_REPLY_STATUS || strcmp(reply->str, "PONG") != 0) {
        report(d, "redis", LV_FAIL, "%s answered PING with %s", shown,
               reply->str ? reply->str : "something else");
    } else {
        report(d, "redis", LV_OK, "%s answered PING (%" PRId64 " ms)", shown, mono_ms() - t0);
    }
out:
    freeReplyObject(reply);
    redisFree(rc);
    wg_redis_url_release(&t);
}

/* ---- doctor: Docker ---- */

static int docker_ep_init(struct docker_ep *e, const char *host,
                          const struct wg_docker_tls_cfg *tls)
{
    struct wg_docker_host h;
    char why[256];
    bool use_tls = tls && tls->enabled;
    int r;

    memset(e, 0, sizeof(*e));
    snprintf(e->version, sizeof(e->version), "%s", WG_DOCKER_API_MAX);
    r = wg_docker_host_parse(host, use_tls, &h, why, sizeof why);
    if (r < 0)
        return r;
    if (h.is_unix && strlen(h.path) >= sizeof(e->unix_path))
        r = -EINVAL;
    else if (strlen(h.base) >= sizeof(e->base))
        r = -EINVAL;
    if (r == 0) {
        snprintf(e->unix_path, sizeof(e->unix_path), "%s", h.is_unix ? h.path : "");
        snprintf(e->base, sizeof(e->base), "%s", h.base);
        e->tls = use_tls ? tls : NULL;
    }
    wg_docker_host_release(&h);
    return r;
}

/* One Engine API call; versioned paths get /v<version>. */
static int docker_call(struct doctor *d, struct http_call *hc, const char *method, const char *path,
                       bool versioned, const char *body, long total_ms)
{
    http_call_init(hc, method);
    http_url(hc, "%s%s%s%s", d->dk.base, versioned ? "/v" : "", versioned ? d->dk.version : "",
             path);
    hc->unix_socket = d->dk.unix_path[0] ? d->dk.unix_path : NULL;
    hc->tls = d->dk.tls;
    hc->json_body = body;
    hc->total_ms = total_ms;
    return http_run(hc);
}

/* Docker's {"message": ...} of an error answer. */
static void docker_message(struct http_call *hc, char *out, size_t outlen)
{
    json_t *j = json_loads(http_body(hc), 0, NULL);
    const char *m = json_is_object(j) ? jstr(j, "message") : NULL;
    clean_copy(out, outlen, m ? m : "");
    json_decref(j);
}

/* "1.41" -> 41; -1 when it is not 1.N. */
static int api_minor(const char *v)
{
    char *end;
    if (strncmp(v, "1.", 2) != 0 || !isdigit((unsigned char)v[2]))
        return -1;
    long n = strtol(v + 2, &end, 10);
    return *end == '\0' && n < 1000 ? (int)n : -1;
}

static void check_docker(struct doctor *d)
{
    const struct wg_config *cfg = &d->c->cfg;
    const char *host = cfg->docker_host ? cfg->docker_host : WG_DOCKER_DEFAULT_HOST;
    struct http_call hc;

    if (docker_ep_init(&d->dk, host, &cfg->docker_tls) < 0) {
        report(d, "docker", LV_FAIL, "docker.host %s cannot be taken apart", host);
        return;
    }
    if (docker_call(d, &hc, "GET", "/_ping", false, NULL, DOCTOR_HTTP_MS) < 0) {
        report(d, "docker", LV_FAIL, "%s: %s", host, hc.err);
    } else if (hc.status != 200) {
        report(d, "docker", LV_FAIL, "%s: GET /_ping answered %ld", host, hc.status);
    } else {
        int have = api_minor(hc.api_version), min = api_minor(WG_DOCKER_API_MIN);
        if (have < 0) {
            report(d, "docker", LV_WARN, "%s answered /_ping without an API version", host);
        } else if (have < min) {
            report(d, "docker", LV_FAIL, "%s: engine API %s is older than the %s wakegate needs",
                   host, hc.api_version, WG_DOCKER_API_MIN);
        } else {
            if (have < api_minor(WG_DOCKER_API_MAX))
                msgf(d->dk.version, sizeof(d->dk.version), "%s", hc.api_version);
            report(d, "docker", LV_OK, "%s answered /_ping: API %s%s%s, using %s", host,
                   hc.api_version, hc.server[0] ? ", " : "", hc.server, d->dk.version);
            d->docker_up = true;
        }
    }
    http_call_release(&hc);
}

static void check_docker_access(struct doctor *d)
{
    const struct docker_ep *e = &d->dk;
    struct stat st;

    if (e->unix_path[0] == '\0') {
        if (e->tls == NULL)
            report(d, "docker access", LV_WARN,
                   "%s is plain tcp: whoever reaches it controls the engine (use docker.tls)",
                   e->base);
        else if (!e->tls->verify)
            report(d, "docker access", LV_WARN,
                   "%s: TLS without verifying the engine's certificate", e->base);
        else
            report(d, "docker access", LV_OK, "%s: TLS, the engine's certificate verified",
                   e->base);
        return;
    }
    if (stat(e->unix_path, &st) < 0) {
        report(d, "docker access", LV_FAIL, "%s: %s", e->unix_path, strerror(errno));
        return;
    }
    unsigned mode = (unsigned)st.st_mode & 07777;
    if (!S_ISSOCK(st.st_mode))
        report(d, "docker access", LV_FAIL, "%s is not a socket", e->unix_path);
    else if (st.st_mode & S_IWOTH)
        report(d, "docker access", LV_FAIL,
               "%s is world-writable (mode %04o): every local user controls the engine",
               e->unix_path, mode);
    else if (access(e->unix_path, R_OK | W_OK) < 0)
        report(d, "docker access", LV_FAIL,
               "%s (mode %04o, uid %u, gid %u) is not read-writable for uid %u: %s", e->unix_path,
               mode, (unsigned)st.st_uid, (unsigned)st.st_gid, (unsigned)getuid(), strerror(errno));
    else
        report(d, "docker access", LV_OK, "%s is accessible (mode %04o, uid %u, gid %u)",
               e->unix_path, mode, (unsigned)st.st_uid, (unsigned)st.st_gid);
}

/* ---- doctor: can a session container reach Redis or the admin port? ---- */

struct probe_target {
    const char *check;                 /* "isolation redis" */
    char listen[INET6_ADDRSTRLEN + 8]; /* where the service is, as configured */
    char addr[INET6_ADDRSTRLEN];       /* what the probe connects to */
    unsigned port;
    bool loopback; /* configured on loopback: the probe tries the gateway */
    int open;      /* -1 not probed, 0 refused, 1 reachable */
};

/* The default bridge's IPv4 gateway: the host as a session container sees
 * it. "" when the engine does not say. */
static void bridge_gateway(struct doctor *d, char *out, size_t outlen)
{
    struct http_call hc;
    out[0] = '\0';
    if (docker_call(d, &hc, "GET", "/networks/bridge", true, NULL, DOCTOR_HTTP_MS) == 0 &&
        hc.status == 200) {
        json_t *j = json_loads(http_body(&hc), 0, NULL);
        json_t *cfgs = json_object_get(json_object_get(j, "IPAM"), "Config");
        for (size_t i = 0; i < json_array_size(cfgs) && !out[0]; i++) {
            const char *gw = jstr(json_array_get(cfgs, i), "Gateway");
            struct in_addr a;
            if (gw != NULL && inet_pton(AF_INET, gw, &a) == 1)
                snprintf(out, outlen, "%s", gw);
        }
        json_decref(j);
    }
    http_call_release(&hc);
}

static bool sa_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return false;
}

static bool sa_any(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return false;
}

/* Fills t from a configured address. A loopback or wildcard listener is
 * tried at the bridge gateway (a wildcard one answers there; a loopback
 * one must not), anything else at its own address. */
static void target_from_sa(struct probe_target *t, const struct sockaddr *sa, const char *gw)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, ip, sizeof(ip));
        port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, ip, sizeof(ip));
        port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    }
    snprintf(t->listen, sizeof(t->listen), "%s%s%s:%u", sa->sa_family == AF_INET6 ? "[" : "", ip,
             sa->sa_family == AF_INET6 ? "]" : "", port);
    t->port = port;
    t->loopback = sa_loopback(sa);
    t->open = -1;
    if (t->loopback || sa_any(sa))
        snprintf(t->addr, sizeof(t->addr), "%s", gw);
    else
        snprintf(t->addr, sizeof(t->addr), "%s", ip);
}

/* The probe's shell script. Exit 3: no nc; 4: nc cannot even reach a
 * listener inside the container (an nc without -e, say), so a refusal
 * would prove nothing; 10 + bit i: target i accepted a connection.
 * Addresses are inet_ntop() output and ports numbers: nothing to quote. */
static void probe_script(const struct probe_target *t, size_t n, struct wg_buf *out)
{
    wg_buf_appendf(out,
                   "command -v nc >/dev/null 2>&1 || exit 3\n"
                   "nc -l -p 39999 -e true </dev/null >/dev/null 2>&1 &\n"
                   "i=0\n"
                   "until nc -w %d 127.0.0.1 39999 -e true </dev/null >/dev/null 2>&1; do\n"
                   "  i=$((i+1)); [ $i -ge 20 ] && exit 4; sleep 0.1\n"
                   "done\n"
                   "r=10\n",
                   PROBE_CONNECT_S);
    for (size_t i = 0; i < n; i++)
        wg_buf_appendf(out,
                       "if nc -w %d %s %u -e true </dev/null >/dev/null 2>&1; then "
                       "r=$((r+%u)); fi\n",
                       PROBE_CONNECT_S, t[i].addr, t[i].port, 1u << i);
    wg_buf_appendf(out, "exit $r\n");
}

static char *probe_body(const char *image, const char *script)
{
    json_t *b = json_pack("{s:s, s:[s,s,s], s:[], s:{s:s}, s:b, s:{s:b}}", "Image", image,
                          "Entrypoint", "/bin/sh", "-c", script, "Cmd", "Labels", "wakegate.doctor",
                          "1", "Tty", 0, "HostConfig", "AutoRemove", 0);
    char *text = b ? json_dumps(b, JSON_COMPACT) : NULL;
    json_decref(b);
    return text;
}

/* Creates, runs, waits for and removes one probe container. Returns its
 * exit code, or -1 with why set. */
static int probe_run(struct doctor *d, const char *image, const char *script, char *why,
                     size_t whylen)
{
    struct http_call hc;
    char path[256], msg[256], name[64], id[80] = "";
    char *body = probe_body(image, script);
    int code = -1;

    snprintf(name, sizeof(name), "wg-doctor-%d-%" PRId64, (int)getpid(), now_ms());
    snprintf(path, sizeof(path), "/containers/create?name=%s", name);
    if (body == NULL || docker_call(d, &hc, "POST", path, true, body, DOCTOR_HTTP_MS) < 0) {
        msgf(why, whylen, "create: %s", body ? hc.err : "out of memory");
        goto out_call;
    }
    if (hc.status != 201) {
        docker_message(&hc, msg, sizeof(msg));
        if (hc.status == 404)
            snprintf(why, whylen, "sessions.image %s is not on the engine (%s)", image, msg);
        else
            snprintf(why, whylen, "create: %ld %s", hc.status, msg);
        goto out_call;
    }
    json_t *j = json_loads(http_body(&hc), 0, NULL);
    clean_copy(id, sizeof(id), json_is_object(j) ? jstr(j, "Id") : NULL);
    json_decref(j);
    http_call_release(&hc);
    if (id[0] == '\0' || strspn(id, "0123456789abcdef") != strlen(id)) {
        snprintf(why, whylen, "create: the engine gave no container id");
        goto out;
    }

    snprintf(path, sizeof(path), "/containers/%s/start", id);
    if (docker_call(d, &hc, "POST", path, true, NULL, DOCTOR_HTTP_MS) < 0 ||
        (hc.status != 204 && hc.status != 304)) {
        docker_message(&hc, msg, sizeof(msg));
        msgf(why, whylen, "start: %s", hc.status ? msg : hc.err);
        goto out_remove;
    }
    http_call_release(&hc);
    snprintf(path, sizeof(path), "/containers/%s/wait", id);
    if (docker_call(d, &hc, "POST", path, true, NULL, PROBE_WAIT_MS) < 0 || hc.status != 200) {
        docker_message(&hc, msg, sizeof(msg));
        msgf(why, whylen, "wait: %s", hc.status ? msg : hc.err);
        goto out_remove;
    }
    j = json_loads(http_body(&hc), 0, NULL);
    if (json_is_integer(json_object_get(j, "StatusCode")))
        code = (int)jint(j, "StatusCode");
    else
        snprintf(why, whylen, "wait: no StatusCode in the answer");
    json_decref(j);
out_remove:
    http_call_release(&hc);
    /* Always, so a failed probe leaves nothing behind. */
    snprintf(path, sizeof(path), "/containers/%s?force=1", id);
    if (docker_call(d, &hc, "DELETE", path, true, NULL, DOCTOR_HTTP_MS) < 0 ||
        (hc.status != 204 && hc.status != 404))
        fprintf(stderr, PROG ": doctor: probe container %s not removed (label wakegate.doctor=1)\n",
                name);
out_call:
    http_call_release(&hc);
out:
    free(body);
    return code;
}

/* One line per target once the probe ran (or could not). */
static void isolation_report(struct doctor *d, const struct probe_target *t, const char *image,
                             const char *cannot)
{
    if (t->open == 1)
        report(d, t->check, LV_FAIL,
               "%s:%u accepts connections from a session container (%s; configured %s)%s", t->addr,
               t->port, image, t->listen, t->loopback ? ": the port is bound beyond loopback" : "");
    else if (t->open == 0 && t->loopback)
        report(d, t->check, LV_OK,
               "%s is loopback: containers cannot reach it (%s:%u refused a probe container)",
               t->listen, t->addr, t->port);
    else if (t->open == 0)
        report(d, t->check, LV_OK, "%s:%u is not reachable from a session container (%s)", t->addr,
               t->port, image);
    else if (t->loopback)
        report(d, t->check, LV_OK, "%s is loopback: containers cannot reach it (not probed: %s)",
               t->listen, cannot);
    else
        report(d, t->check, LV_WARN, "%s: cannot tell, %s", t->listen, cannot);
}

/* Builds the Redis target; false when there is nothing to probe (a line
 * was reported). */
static bool redis_probe_target(struct doctor *d, struct probe_target *t, const char *gw)
{
    struct wg_redis_url r;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char port[8], shown[400];
    bool probe = false;

    if (d->c->cfg.redis_url == NULL) {
        report(d, "isolation redis", LV_OK, "no redis.url configured");
        return false;
    }
    if (wg_redis_url_parse(d->c->cfg.redis_url, &r, NULL, 0) < 0) {
        report(d, "isolation redis", LV_WARN, "redis.url cannot be taken apart");
        return false;
    }
    redis_shown(&r, shown, sizeof(shown));
    snprintf(port, sizeof(port), "%u", r.port);
    if (r.is_unix)
        report(d, "isolation redis", LV_OK,
               "%s is a unix socket: containers reach it only if it is bind-mounted into them",
               shown);
    else if (getaddrinfo(r.host, port, &hints, &res) != 0 || res == NULL)
        report(d, "isolation redis", LV_WARN, "cannot resolve %s", r.host);
    else
        probe = true;
    if (probe) {
        t->check = "isolation redis";
        target_from_sa(t, res->ai_addr, gw);
        freeaddrinfo(res);
    }
    wg_redis_url_release(&r);
    return probe;
}

static void check_isolation(struct doctor *d)
{
    const char *image = d->c->cfg.sessions.image;
    struct probe_target t[PROBE_TARGETS_MAX];
    char gw[INET6_ADDRSTRLEN] = "", cannot[512] = "", *script = NULL;
    struct wg_buf sb;
    size_t n = 0, nprobe = 0;

    wg_buf_init(&sb, 64 * 1024);
    if (d->docker_up)
        bridge_gateway(d, gw, sizeof(gw));
    if (redis_probe_target(d, &t[n], gw))
        n++;
    t[n].check = "isolation admin";
    target_from_sa(&t[n], (const struct sockaddr *)&d->c->cfg.admin_listen.sa, gw);
    n++;

    if (!d->docker_up)
        snprintf(cannot, sizeof(cannot), "the Docker engine does not answer");
    else if (gw[0] == '\0')
        snprintf(cannot, sizeof(cannot), "the engine names no IPv4 gateway for its bridge");
    else if (image == NULL || image[0] == '\0')
        snprintf(cannot, sizeof(cannot), "sessions.image is not set");
    if (cannot[0] == '\0') {
        /* Probe what has an address, in order; bit i is t[i]. */
        for (size_t i = 0; i < n; i++)
            if (t[i].addr[0] && strchr(t[i].addr, ':') == NULL)
                nprobe = i + 1;
            else if (t[i].addr[0])
                t[i].addr[0] = '\0'; /* IPv6: the default bridge has none */
        probe_script(t, nprobe, &sb);
        if (wg_buf_append(&sb, "", 1) == 0)
            script = sb.data;
        int code = script ? probe_run(d, image, script, cannot, sizeof(cannot)) : -1;
        if (script == NULL)
            snprintf(cannot, sizeof(cannot), "out of memory");
        else if (code == 3)
            snprintf(cannot, sizeof(cannot), "sessions.image %s has no nc to probe with", image);
        else if (code == 4)
            snprintf(cannot, sizeof(cannot),
                     "the nc of %s cannot connect even inside the container (busybox nc with -e "
                     "is needed)",
                     image);
        else if (code >= 10 && code < 10 + (1 << nprobe))
            for (size_t i = 0; i < nprobe; i++)
                t[i].open = t[i].addr[0] ? ((code - 10) >> i) & 1 : -1;
        else if (code >= 0)
            snprintf(cannot, sizeof(cannot), "the probe container exited %d", code);
    }
    for (size_t i = 0; i < n; i++) {
        if (t[i].open < 0 && cannot[0] == '\0')
            snprintf(cannot, sizeof(cannot), "no IPv4 address to probe");
        isolation_report(d, &t[i], image ? image : "-", cannot);
    }
    wg_buf_release(&sb);
}

static void doctor_print_json(const struct doctor *d)
{
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < d->n; i++)
        json_array_append_new(a, json_pack("{s:s, s:s, s:s}", "check", d->v[i].name, "status",
                                           level_names[d->v[i].lv], "detail", d->v[i].detail));
    char *text = a ? json_dumps(a, JSON_COMPACT) : NULL;
    if (text != NULL)
        printf("%s\n", text);
    free(text);
    json_decref(a);
}

static int cmd_doctor(struct ctl *c, const char *unused)
{
    struct doctor *d = calloc(1, sizeof(*d));
    int rc = WG_CTL_OK;
    if (d == NULL)
        return WG_CTL_FAILED;
    d->c = c;
    if (check_config(d)) {
        check_token(d, c->env_token);
        check_admin(d);
        check_redis(d);
        check_docker(d);
        check_docker_access(d);
        check_isolation(d);
    }
    if (c->o.json)
        doctor_print_json(d);
    for (size_t i = 0; i < d->n; i++)
        if (d->v[i].lv == LV_FAIL)
            rc = WG_CTL_FAILED;
    free(d);
    return rc;
}

/* ---- main -------------------------------------------------------------- */

/* Checks the command line against the command; returns 0 or WG_CTL_USAGE. */
static int check_command(const struct cmd *cmd, char **pos, int npos, unsigned flags)
{
    if (npos - 1 < cmd->nargs)
        return usage_error("%s: missing session ID (usage: " PROG " %s)", cmd->name, cmd->usage);
    if (npos - 1 > cmd->nargs)
        return usage_error("%s: unexpected argument '%s' (usage: " PROG " %s)", cmd->name,
                           pos[cmd->nargs + 1], cmd->usage);
    for (unsigned f = F_WAIT; f <= F_SINCE; f <<= 1)
        if ((flags & f) && !(cmd->flags & f))
            return usage_error("%s: option %s does not apply (usage: " PROG " %s)", cmd->name,
                               flag_name(f), cmd->usage);
    if (cmd->nargs == 1 && !id_ok(pos[1])) {
        char shown[80];
        clean_copy(shown, sizeof(shown), pos[1]);
        return usage_error("invalid session id '%s': 1 to 63 of a-z 0-9 _ -, starting with a "
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
            return usage_error("no command given");
        fputs(global_help, stdout);
        return WG_CTL_OK;
    }
    bool help_cmd = strcmp(pos[0], "help") == 0;
    cmd = cmd_find(help_cmd ? pos[1] : pos[0]);
    if (cmd == NULL)
        return usage_error("unknown command '%s'", help_cmd ? pos[1] : pos[0]);
    if (help_cmd || c.o.help) {
        cmd_help(cmd, stdout);
        return WG_CTL_OK;
    }
    rc = check_command(cmd, pos, npos, c.o.flags);
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
    if (!c.cfg_ok && cmd->run != cmd_doctor) {
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
    if (fflush(stdout) != 0 && rc == WG_CTL_OK && !interrupted)
        rc = WG_CTL_FAILED;
    return rc;
}
