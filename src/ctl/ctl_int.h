/* src/ctl/ctl_int.h - what the files of wakegatectl share (main.c, api.c,
 * table.c, http_client.c, sse.c, doctor.c, doctor_probe.c). Not an API:
 * nothing outside src/ctl/ includes it.
 *
 * Ownership: struct ctl owns the loaded configuration and the admin base
 * URL; a struct ctl_http owns its response body until ctl_http_release().
 * Everything a peer sends is capped (API bodies, one SSE message, Docker
 * bodies) and every call has a timeout, except `events -f`, which runs
 * until interrupted.
 *
 * Output: tables and key/value lines on stdout; errors on stderr, each
 * naming the URL, the status and the API's own error text. Text that comes
 * from sessions (save output, errors, event details) is printed with
 * control bytes replaced, so a container cannot drive the terminal. */
#ifndef WG_SRC_CTL_CTL_INT_H
#define WG_SRC_CTL_CTL_INT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <curl/curl.h>
#include <jansson.h>

#include "common/buf.h"
#include "common/config.h"
#include "src/ctl/ctl.h"

struct wg_redis_url;

#define PROG "wakegatectl"

#define POLL_MS 100          /* how often a transfer looks at the stop flag */
#define DOCTOR_HTTP_MS 5000L /* each doctor HTTP check */
#define URL_MAX 1024
#define CHECKS_MAX 16

/* Options that apply to some commands only. */
enum {
    F_WAIT = 1u << 0,
    F_FORCE = 1u << 1,
    F_FOLLOW = 1u << 2,
    F_SINCE = 1u << 3,
    F_NOW = 1u << 4,
    /* create, logs, exec (create.c, container.c) */
    F_TAIL = 1u << 8, /* --tail N */
    F_SPEC = 1u << 9, /* --template, --image, --port, --env, --label, --bind, --idle-* */
    F_CMD = 1u << 10, /* -- CMD ARGS... */
};

/* getopt values of the long-only options of create and logs (create.c):
 * above any character, so they never clash with a short option. */
enum {
    O_TAIL = 256,
    O_TEMPLATE,
    O_IMAGE,
    O_PORT,
    O_ENV,
    O_LABEL,
    O_BIND,
    O_IDLE_PAUSE,
    O_IDLE_STOP,
};

#define CTL_LIST_MAX 256 /* --env, --label, --bind: each at most (the API's own cap) */

/* A repeated option's values, borrowed from argv. */
struct ctl_list {
    const char *v[CTL_LIST_MAX];
    int n;
};

/* The command line, as given. */
struct ctl_opts {
    const char *admin;  /* --admin */
    const char *token;  /* --token */
    const char *config; /* --config */
    const char *since;  /* --since */
    bool json, help, version;
    unsigned flags;   /* F_* given */
    const char *arg2; /* keepalive's DURATION */
    /* create (F_SPEC) and logs (--tail) */
    const char *template_name, *image, *port, *idle_pause, *idle_stop, *tail;
    struct ctl_list env, labels, binds;
    /* the words after "--" (create, exec) */
    char **cmd;
    int ncmd;
    bool cmd_given;
};

/* One run of the CLI: its options, the configuration read as the daemon
 * reads it, and where the admin API is and with which token. */
struct ctl {
    struct ctl_opts o;
    struct wg_config cfg;
    bool cfg_ok;
    char cfg_err[WG_CONFIG_ERR_MAX];
    char base[URL_MAX]; /* admin API base URL, no trailing '/' */
    const char *base_src;
    const char *token; /* borrowed: the flag, cfg.admin_token or cfg.admin_read_token */
    const char *token_src;
    bool token_read_only; /* token is cfg.admin_read_token: no admin token was found */
    bool env_token;       /* WAKEGATE_ADMIN_TOKEN was set by the user (not by --token) */
};

/* The stop flag of `events -f` (sse.c): a signal handler has no argument,
 * so this one is global. Nothing else is. */
extern volatile sig_atomic_t ctl_interrupted;

/* ---- main.c ---- */

/* Prints "wakegatectl: ..." and the --help hint to stderr; returns
 * WG_CTL_USAGE. */
int ctl_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The commands (api.c, sse.c, doctor.c); id is the session id for those
 * that take one. Each returns one of enum wg_ctl_exit. */
int ctl_cmd_ls(struct ctl *c, const char *id);
int ctl_cmd_show(struct ctl *c, const char *id);
int ctl_cmd_wake(struct ctl *c, const char *id);
int ctl_cmd_sleep(struct ctl *c, const char *id);
int ctl_cmd_rm(struct ctl *c, const char *id);
int ctl_cmd_events(struct ctl *c, const char *id);
int ctl_cmd_doctor(struct ctl *c, const char *id);
int ctl_cmd_create(struct ctl *c, const char *id);
int ctl_cmd_keepalive(struct ctl *c, const char *id);
int ctl_cmd_logs(struct ctl *c, const char *id);
int ctl_cmd_exec(struct ctl *c, const char *id);
/* hosts.c */
int ctl_cmd_hosts(struct ctl *c, const char *id);
/* The hosts table of GET /v1/hosts's answer. Returns 0, or -1 when out of
 * memory. */
int ctl_print_hosts(const json_t *answer);

/* ---- sse.c ---- */

typedef void ctl_event_fn(void *arg, const char *data);
/* The stored events after since_ms (ms since the epoch), each event's data
 * JSON to fn, nothing printed; the replay ends when the stream goes quiet.
 * Returns an exit code; prints nothing on failure. */
int ctl_events_scan(struct ctl *c, int64_t since_ms, ctl_event_fn *fn, void *arg);

/* ---- create.c ---- */

/* The options of create and logs (getopt's value opt, its optarg): 0 when
 * taken, WG_CTL_USAGE after printing why it is bad, -1 when it is not one
 * of them. */
int ctl_opt_more(struct ctl_opts *o, int opt, const char *arg);
/* GET /v1/sessions/{id}: *ret the record (the caller's), or an exit code
 * after printing why. */
int ctl_api_record(struct ctl *c, const char *id, json_t **ret);
/* `show`: the spec's lines (template, command, env names, labels, binds,
 * limits, save hook), from the record's "spec". */
void ctl_print_spec(const json_t *rec);
/* `show`, after the record: the spec lines, and for a failed session the
 * log tail of its failure event (read from /v1/events). */
void ctl_show_more(struct ctl *c, const json_t *rec);

/* ---- table.c: readable output ---- */

/* "2026-11-21T19:10:39Z", with milliseconds when with_ms. */
char *ctl_fmt_time(int64_t ms, bool with_ms, char *out, size_t outlen);
/* Text from a session or a peer, made safe for a terminal: control bytes
 * (but newline and tab where allowed) become '?'. */
void ctl_put_clean(FILE *f, const char *s, bool keep_newlines);
/* Prints text on stdout line by line, each as "    | line" (cleaned):
 * an output tail read as a quote. */
void ctl_print_quoted(const char *text);
void ctl_clean_copy(char *dst, size_t dstlen, const char *src);
/* snprintf for messages, where a cut is acceptable (and not worth a
 * warning at every call). */
void ctl_msgf(char *out, size_t outlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
const char *ctl_jstr(const json_t *o, const char *key);
int64_t ctl_jint(const json_t *o, const char *key);
/* `ls`: the sessions of the API's array, one row each. Returns 0 or -ENOMEM. */
int ctl_print_sessions(const json_t *sessions);
/* `show`: one record, key by key. */
void ctl_print_record(const json_t *rec);
/* `events`: one event's JSON text as a line. */
void ctl_print_event(const char *data);

/* ---- http_client.c: one request with libcurl ---- */

struct ctl_http;
/* Body bytes of a 2xx answer, for streams. Returns 0, or <0 to abort. */
typedef int ctl_http_bytes_fn(struct ctl_http *hc, const char *p, size_t n);
/* Asked every POLL_MS and after each read: true ends the transfer (not an
 * error; hc->stopped tells). */
typedef bool ctl_http_stop_fn(struct ctl_http *hc);

struct ctl_http {
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
    ctl_http_bytes_fn *on_bytes;         /* streams: 2xx body bytes go here */
    ctl_http_stop_fn *should_stop;
    void *arg;
    /* response */
    long status;          /* 0 until a status line came */
    struct wg_buf body;   /* the body (non-2xx bodies of streams too), capped */
    char api_version[32]; /* Docker's Api-Version header */
    char server[96];      /* the Server header */
    int64_t started;      /* wg_clock_mono_ms() when it was sent */
    int64_t last_byte;    /* wg_clock_mono_ms() of the last body byte */
    bool got_bytes;
    bool stopped; /* should_stop ended it */
    int cb_error; /* what on_bytes returned, when it aborted */
    char err[CURL_ERROR_SIZE + URL_MAX + 64];
};

void ctl_http_init(struct ctl_http *hc, const char *method);
void ctl_http_release(struct ctl_http *hc);
/* Sets the URL; one that does not fit makes the call fail, never go to a
 * cut address. */
void ctl_http_url(struct ctl_http *hc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The body as a C string (it is kept NUL-terminated past its size). */
const char *ctl_http_body(struct ctl_http *hc);
/* Runs one request to its end, or until should_stop says so. Returns 0 when
 * an answer came (hc->status, any value) or the transfer was stopped, and
 * -1 when none came (hc->err says why: connect, timeout, ...). */
int ctl_http_run(struct ctl_http *hc);

/* ---- api.c: the admin API ---- */

/* The API's {"error": ...}, copied (cleaned) into out; "" if none. */
void ctl_api_error_text(struct ctl_http *hc, char *out, size_t outlen);
/* Prints the failure of an answered call; returns its exit code. */
int ctl_api_report(struct ctl *c, struct ctl_http *hc);
/* One call to the admin API. Returns WG_CTL_OK with a 2xx answer in hc, or
 * an exit code after printing the error. hc is the caller's to release. */
#define CALL_TIMEOUT_MS 30000L /* one admin API call without ?wait */
#define WAIT_MARGIN_MS 30000L  /* beyond the server's own wait deadline */

int ctl_api_call(struct ctl *c, struct ctl_http *hc, const char *path, long total_ms);
/* An API answer as JSON of the expected type (array or object); NULL after
 * saying why on stderr. */
json_t *ctl_api_json(struct ctl_http *hc, bool array);
/* GET path and print it: the answer as it came with --json, else print's
 * table of the parsed answer (array: it must be a JSON array). */
int ctl_list(struct ctl *c, const char *path, bool array, int (*print)(const json_t *answer));
/* --json: the API's answer as it came, ending in a newline. */
void ctl_print_raw(struct ctl_http *hc);

/* ---- doctor.c and doctor_probe.c ---- */

/* SKIP: the check did not run; its line says why. It does not fail. */
enum level { LV_OK, LV_WARN, LV_FAIL, LV_SKIP };

/* One line of doctor's report. */
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

/* One doctor run: its checks so far, and what later checks need to know. */
struct doctor {
    struct ctl *c;
    struct check v[CHECKS_MAX];
    size_t n;
    bool admin_up;
    bool docker_up;
    struct docker_ep dk;
};

/* Records one check's outcome; prints it at once (the probe takes seconds,
 * so the lines before it should not wait), unless --json. */
void ctl_report(struct doctor *d, const char *name, enum level lv, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* One Engine API call; versioned paths get /v<version>. */
int ctl_docker_call(struct doctor *d, struct ctl_http *hc, const char *method, const char *path,
                    bool versioned, const char *body, long total_ms);
/* Sets up (does not run) one Engine API request to e. */
void ctl_dk_request(const struct docker_ep *e, struct ctl_http *hc, const char *method,
                    const char *path, bool versioned, const char *body, long total_ms);
/* e for docker.host (and docker.tls), API version WG_DOCKER_API_MAX until
 * negotiated. Returns 0 or -EINVAL. */
int ctl_docker_ep_init(struct docker_ep *e, const char *host, const struct wg_docker_tls_cfg *tls);
/* "1.41" -> 41; -1 when it is not 1.N. */
int ctl_docker_api_minor(const char *v);
/* Docker's {"message": ...} of an error answer. */
void ctl_docker_message(struct ctl_http *hc, char *out, size_t outlen);
/* How a Redis target is named in doctor's lines: no password, no db. */
void ctl_redis_shown(const struct wg_redis_url *u, char *out, size_t outlen);
/* Can a session container reach Redis or the admin listener? A probe
 * container tells (doctor_probe.c). */
void ctl_check_isolation(struct doctor *d);

#endif
