/* src/ctl/container.c - `logs` and `exec`: a session's container on the
 * Docker engine of this configuration (docker.host, docker.tls), reached
 * the way doctor reaches it (doctor.c: the endpoint, the version from
 * /_ping). The record comes from the admin API first: its container and
 * the Docker host (docker.name) that owns it. Output is demultiplexed
 * (orchestrator/docker.h) to stdout and stderr, with control bytes other
 * than newline and tab replaced, as for every text from a session. */
#include "src/ctl/ctl.h"

#include <errno.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "common/clock.h"
#include "common/session.h"
#include "common/utf8.h"
#include "orchestrator/docker.h"
#include "src/ctl/ctl_int.h"

#define DK_CALL_MS 10000L         /* one engine call that is not a stream */
#define DK_STALL_MS 30000         /* logs without -f: no byte for this long is a failure */
#define LINE_MAX_JSON (64u << 10) /* --json: a longer line is cut into several objects */

/* The container of a session, on our engine. */
struct target {
    struct docker_ep ep;
    char container[WG_SESSION_CONTAINER_ID_MAX + 1];
    char state[24];
};

/* One stream being printed. */
struct out {
    struct ctl *c;
    struct wg_docker_demux dm;
    struct wg_buf line[3]; /* --json: the partial line of each stream */
    bool follow;
    bool stalled;
    bool out_gone;
};

static void on_stop_signal(int sig)
{
    (void)sig;
    ctl_interrupted = 1;
}

static void catch_stop_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* ---- finding the container ----------------------------------------------------------------- */

/* The engine answered; negotiate its API version as doctor does. Returns
 * an exit code after printing why not. */
static int engine_open(struct ctl *c, struct docker_ep *ep)
{
    const char *host = c->cfg.docker_host ? c->cfg.docker_host : WG_DOCKER_DEFAULT_HOST;
    struct ctl_http hc;
    int rc = WG_CTL_OK;

    if (ctl_docker_ep_init(ep, host, &c->cfg.docker_tls) < 0) {
        fprintf(stderr, PROG ": docker.host %s cannot be taken apart\n", host);
        return WG_CTL_CONFIG;
    }
    ctl_dk_request(ep, &hc, "GET", "/_ping", false, NULL, DK_CALL_MS);
    if (ctl_http_run(&hc) < 0) {
        fprintf(stderr, PROG ": cannot reach the Docker engine (docker.host %s): %s\n", host,
                hc.err);
        rc = WG_CTL_UNREACHABLE;
    } else if (hc.status != 200) {
        fprintf(stderr, PROG ": the Docker engine (docker.host %s) answered /_ping with %ld\n",
                host, hc.status);
        rc = WG_CTL_FAILED;
    } else {
        int have = ctl_docker_api_minor(hc.api_version);
        if (have >= ctl_docker_api_minor(WG_DOCKER_API_MIN) &&
            have < ctl_docker_api_minor(WG_DOCKER_API_MAX))
            ctl_msgf(ep->version, sizeof(ep->version), "%s", hc.api_version);
    }
    ctl_http_release(&hc);
    return rc;
}

/* The record through the admin API, then: owned by our Docker host, with
 * a container (and running, for exec), and the engine answering. Returns
 * an exit code after printing why not. */
static int target_find(struct ctl *c, const char *id, bool need_running, struct target *t)
{
    json_t *rec = NULL;
    const char *host, *cid, *state;
    const char *ours = c->cfg.docker_name ? c->cfg.docker_name : "";
    int rc;

    memset(t, 0, sizeof(*t));
    rc = ctl_api_record(c, id, &rec);
    if (rc != WG_CTL_OK)
        return rc;
    host = ctl_jstr(rec, "host");
    cid = ctl_jstr(rec, "container_id");
    state = ctl_jstr(rec, "state") ? ctl_jstr(rec, "state") : "?";
    ctl_clean_copy(t->state, sizeof(t->state), state);
    rc = WG_CTL_CONFLICT;
    /* A record with no host (made by hand) is ours, as the API takes it. */
    if (host != NULL && strcmp(host, ours) != 0) {
        char h[WG_SESSION_HOST_MAX + 1];
        ctl_clean_copy(h, sizeof(h), host);
        fprintf(stderr,
                PROG ": %s runs on the Docker host '%s', and this configuration's docker.name is "
                     "'%s' (docker.host %s): run " PROG " with that host's configuration\n",
                id, h, ours, c->cfg.docker_host ? c->cfg.docker_host : WG_DOCKER_DEFAULT_HOST);
    } else if (need_running && strcmp(state, "running") != 0) {
        fprintf(stderr, PROG ": %s is %s: exec needs a running session (" PROG " wake %s --wait)\n",
                id, t->state, id);
    } else if (cid == NULL || strlen(cid) >= sizeof(t->container) ||
               strspn(cid, "0123456789abcdef") != strlen(cid)) {
        fprintf(stderr, PROG ": %s has no container (state %s): no logs to read\n", id, t->state);
    } else {
        snprintf(t->container, sizeof(t->container), "%s", cid);
        rc = engine_open(c, &t->ep);
    }
    json_decref(rec);
    return rc;
}

/* An engine answer that is not 2xx: printed; its exit code. */
static int engine_report(struct ctl_http *hc, const char *what)
{
    char msg[512];
    ctl_docker_message(hc, msg, sizeof(msg));
    fprintf(stderr, PROG ": %s: %s %s: %ld%s%s\n", what, hc->method, hc->url, hc->status,
            msg[0] ? ": " : "", msg);
    return hc->status == 404   ? WG_CTL_NOT_FOUND
           : hc->status == 409 ? WG_CTL_CONFLICT
                               : WG_CTL_FAILED;
}

/* ---- output -------------------------------------------------------------------------------- */

/* --json: one {"stream", "line"} object; bytes that are not UTF-8 become
 * '?', so the object is always valid JSON. */
static void json_line(struct out *o, int stream, const char *p, size_t n)
{
    char *text = malloc(n + 1);
    size_t k = 0;
    if (text == NULL)
        return;
    for (size_t i = 0; i < n;) {
        size_t sl = wg_utf8_seq((const unsigned char *)p + i, n - i);
        if (sl == 0) {
            text[k++] = '?';
            i++;
        } else {
            memcpy(text + k, p + i, sl);
            k += sl;
            i += sl;
        }
    }
    json_t *j =
        json_pack("{s:s, s:s%}", "stream", stream == 2 ? "stderr" : "stdout", "line", text, k);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (s != NULL)
        printf("%s\n", s);
    free(s);
    json_decref(j);
    free(text);
    (void)o;
}

static void json_feed(struct out *o, int stream, const char *p, size_t n)
{
    struct wg_buf *b = &o->line[stream == 2 ? 2 : 1];
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (wg_buf_size(b) + take > LINE_MAX_JSON) {
            size_t room = LINE_MAX_JSON - wg_buf_size(b);
            wg_buf_append(b, p, room);
            json_line(o, stream, wg_buf_head(b), wg_buf_size(b));
            wg_buf_reset(b);
            p += room;
            n -= room;
            continue;
        }
        wg_buf_append(b, p, take);
        if (nl == NULL)
            return;
        json_line(o, stream, wg_buf_head(b), wg_buf_size(b));
        wg_buf_reset(b);
        p += take + 1;
        n -= take + 1;
    }
}

static void json_flush(struct out *o)
{
    for (int s = 1; s <= 2; s++)
        if (wg_buf_size(&o->line[s]) > 0) {
            json_line(o, s, wg_buf_head(&o->line[s]), wg_buf_size(&o->line[s]));
            wg_buf_reset(&o->line[s]);
        }
}

static void on_frame(void *arg, int stream, const char *p, size_t n)
{
    struct out *o = arg;
    FILE *f = stream == 2 ? stderr : stdout;
    if (o->c->o.json) {
        json_feed(o, stream, p, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        bool ok = (ch >= 0x20 && ch != 0x7f) || ch == '\n' || ch == '\t';
        fputc(ok ? ch : '?', f);
    }
}

static int on_stream_bytes(struct ctl_http *hc, const char *p, size_t n)
{
    struct out *o = hc->arg;
    wg_docker_demux_feed(&o->dm, p, n, on_frame, o);
    if (fflush(stdout) != 0 || ferror(stdout))
        o->out_gone = true;
    fflush(stderr);
    return 0;
}

static bool stream_should_stop(struct ctl_http *hc)
{
    struct out *o = hc->arg;
    if (ctl_interrupted || o->out_gone)
        return true;
    if (!o->follow && wg_clock_mono_ms() - hc->last_byte >= DK_STALL_MS) {
        o->stalled = true;
        return true;
    }
    return false;
}

static void out_init(struct out *o, struct ctl *c, bool follow)
{
    memset(o, 0, sizeof(*o));
    o->c = c;
    o->follow = follow;
    for (int s = 0; s < 3; s++)
        wg_buf_init(&o->line[s], LINE_MAX_JSON + 1);
}

static void out_end(struct out *o)
{
    wg_docker_demux_end(&o->dm, on_frame, o);
    if (o->c->o.json)
        json_flush(o);
    fflush(stdout);
    for (int s = 0; s < 3; s++)
        wg_buf_release(&o->line[s]);
}

/* Runs a streamed engine call into o. Returns an exit code after printing
 * why it failed. */
static int stream_run(struct out *o, struct ctl_http *hc, const char *what)
{
    int rc = WG_CTL_OK;
    hc->on_bytes = on_stream_bytes;
    hc->should_stop = stream_should_stop;
    hc->arg = o;
    if (ctl_http_run(hc) < 0) {
        fprintf(stderr, PROG ": %s: %s\n", what, hc->err);
        rc = WG_CTL_UNREACHABLE;
    } else if (hc->status != 0 && (hc->status < 200 || hc->status >= 300)) {
        rc = engine_report(hc, what);
    } else if (o->stalled) {
        fprintf(stderr, PROG ": %s: %s %s: nothing for %d s\n", what, hc->method, hc->url,
                DK_STALL_MS / 1000);
        rc = WG_CTL_FAILED;
    }
    out_end(o);
    return rc;
}

/* ---- logs ---------------------------------------------------------------------------------- */

int ctl_cmd_logs(struct ctl *c, const char *id)
{
    struct target t;
    struct out o;
    struct ctl_http hc;
    char path[256];
    bool follow = (c->o.flags & F_FOLLOW) != 0;
    int rc = target_find(c, id, false, &t);

    if (rc != WG_CTL_OK)
        return rc;
    catch_stop_signals();
    snprintf(path, sizeof(path), "/containers/%s/logs?stdout=1&stderr=1&tail=%s%s", t.container,
             c->o.tail ? c->o.tail : "all", follow ? "&follow=1" : "");
    out_init(&o, c, follow);
    ctl_dk_request(&t.ep, &hc, "GET", path, true, NULL, 0);
    rc = stream_run(&o, &hc, "logs");
    ctl_http_release(&hc);
    /* SIGINT or SIGTERM ends -f: that is its normal end. */
    return rc;
}

/* ---- exec ---------------------------------------------------------------------------------- */

/* Who runs it, for the event: the login behind sudo, else this uid's name. */
static const char *exec_user(void)
{
    const char *u = getenv("SUDO_USER");
    struct passwd *pw;
    if (u == NULL || u[0] == '\0') {
        pw = getpwuid(getuid());
        u = pw ? pw->pw_name : NULL;
    }
    if (u == NULL || strlen(u) > 64)
        return NULL;
    for (const char *p = u; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            return NULL;
    return u;
}

/* POST /v1/sessions/{id}/events. *event_id gets the entry's id. Returns an
 * exit code after printing why not. */
static int record_event(struct ctl *c, const char *id, const char *type, json_t *detail,
                        char *event_id, size_t idlen)
{
    struct ctl_http hc;
    char path[128];
    json_t *body = json_pack("{s:s, s:O}", "type", type, "detail", detail);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    int rc;

    ctl_http_init(&hc, "POST");
    event_id[0] = '\0';
    if (text == NULL) {
        fprintf(stderr, PROG ": exec: the command is not UTF-8 text (or out of memory)\n");
        rc = WG_CTL_USAGE;
        goto out;
    }
    hc.json_body = text;
    snprintf(path, sizeof(path), "/v1/sessions/%s/events", id);
    rc = ctl_api_call(c, &hc, path, CALL_TIMEOUT_MS);
    if (rc == WG_CTL_OK) {
        json_t *j = json_loadb(wg_buf_head(&hc.body), wg_buf_size(&hc.body), 0, NULL);
        ctl_clean_copy(event_id, idlen, ctl_jstr(j, "event_id"));
        json_decref(j);
    }
out:
    free(text);
    json_decref(body);
    ctl_http_release(&hc);
    return rc;
}

/* POST /containers/{id}/exec: the exec's id into eid. */
static int exec_create(struct ctl *c, const struct target *t, char *eid, size_t eidlen)
{
    struct ctl_http hc;
    char path[128];
    json_t *cmd = json_array(), *body, *j = NULL;
    char *text = NULL;
    int rc = WG_CTL_FAILED;

    for (int i = 0; cmd != NULL && i < c->o.ncmd; i++)
        json_array_append_new(cmd, json_string(c->o.cmd[i]));
    body = json_pack("{s:b, s:b, s:b, s:b, s:o}", "AttachStdin", 0, "AttachStdout", 1,
                     "AttachStderr", 1, "Tty", 0, "Cmd", cmd);
    text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (text == NULL)
        goto out;
    snprintf(path, sizeof(path), "/containers/%s/exec", t->container);
    ctl_dk_request(&t->ep, &hc, "POST", path, true, text, DK_CALL_MS);
    if (ctl_http_run(&hc) < 0) {
        fprintf(stderr, PROG ": exec: %s\n", hc.err);
        rc = WG_CTL_UNREACHABLE;
    } else if (hc.status != 201) {
        rc = engine_report(&hc, "exec");
    } else {
        j = json_loadb(wg_buf_head(&hc.body), wg_buf_size(&hc.body), 0, NULL);
        const char *id = ctl_jstr(j, "Id");
        if (id != NULL && strlen(id) < eidlen && strspn(id, "0123456789abcdef") == strlen(id)) {
            snprintf(eid, eidlen, "%s", id);
            rc = WG_CTL_OK;
        } else {
            fprintf(stderr, PROG ": exec: %s: no exec id in the engine's answer\n", hc.url);
        }
    }
    ctl_http_release(&hc);
out:
    json_decref(j);
    json_decref(body);
    free(text);
    return rc;
}

/* GET /exec/{id}/json until it is not running (the stream can end just
 * before the engine records the exit): the exit code, or -1. */
static int exec_exit_code(const struct target *t, const char *eid)
{
    char path[128];
    int code = -1;
    snprintf(path, sizeof(path), "/exec/%s/json", eid);
    for (int tries = 0; tries < 50 && code < 0; tries++) {
        struct ctl_http hc;
        ctl_dk_request(&t->ep, &hc, "GET", path, true, NULL, DK_CALL_MS);
        if (ctl_http_run(&hc) == 0 && hc.status == 200) {
            json_t *j = json_loadb(wg_buf_head(&hc.body), wg_buf_size(&hc.body), 0, NULL);
            if (!json_is_true(json_object_get(j, "Running")) &&
                json_is_integer(json_object_get(j, "ExitCode")))
                code = (int)json_integer_value(json_object_get(j, "ExitCode"));
            json_decref(j);
        }
        ctl_http_release(&hc);
        if (code < 0)
            usleep(100 * 1000);
    }
    return code;
}

/* Starts the exec attached and prints its output; then its exit code. */
static int exec_run(struct ctl *c, const struct target *t, const char *eid, int *code)
{
    struct ctl_http hc;
    struct out o;
    char path[128];
    int rc;

    snprintf(path, sizeof(path), "/exec/%s/start", eid);
    out_init(&o, c, true);
    ctl_dk_request(&t->ep, &hc, "POST", path, true, "{\"Detach\":false,\"Tty\":false}", 0);
    rc = stream_run(&o, &hc, "exec");
    ctl_http_release(&hc);
    if (rc != WG_CTL_OK)
        return rc;
    if (ctl_interrupted) {
        fprintf(stderr, PROG ": exec: interrupted; the command may still run in the container\n");
        return WG_CTL_FAILED;
    }
    *code = exec_exit_code(t, eid);
    if (*code < 0) {
        fprintf(stderr, PROG ": exec: the engine did not report the command's exit code\n");
        return WG_CTL_FAILED;
    }
    return WG_CTL_OK;
}

int ctl_cmd_exec(struct ctl *c, const char *id)
{
    struct target t;
    char eid[65] = "", ev[64], ev2[64];
    json_t *detail = NULL, *cmd = json_array();
    const char *user = exec_user();
    int code = -1, rc;

    for (int i = 0; cmd != NULL && i < c->o.ncmd; i++)
        json_array_append_new(cmd, json_string(c->o.cmd[i]));
    rc = target_find(c, id, true, &t);
    if (rc != WG_CTL_OK)
        goto out;
    /* The record first: a command that cannot be recorded is not run. */
    detail = json_pack("{s:O, s:s}", "cmd", cmd, "container", t.container);
    if (detail != NULL && user != NULL)
        json_object_set_new(detail, "user", json_string(user));
    rc = detail ? record_event(c, id, "exec", detail, ev, sizeof(ev)) : WG_CTL_FAILED;
    if (rc != WG_CTL_OK) {
        fprintf(stderr, PROG ": exec: not run: the command could not be recorded\n");
        goto out;
    }
    catch_stop_signals();
    rc = exec_create(c, &t, eid, sizeof(eid));
    if (rc == WG_CTL_OK)
        rc = exec_run(c, &t, eid, &code);
    json_decref(detail);
    detail =
        json_pack("{s:i, s:s}", "exit_code", rc == WG_CTL_OK ? code : -1, "container", t.container);
    if (detail != NULL && eid[0])
        json_object_set_new(detail, "exec_id", json_string(eid));
    if (detail == NULL || record_event(c, id, "exec_exit", detail, ev2, sizeof(ev2)) != WG_CTL_OK)
        fprintf(stderr, PROG ": exec: the exit status could not be recorded\n");
    if (rc != WG_CTL_OK)
        goto out;
    if (c->o.json) {
        json_t *j = json_pack("{s:s, s:i, s:s, s:s}", "id", id, "exit_code", code, "exec_id", eid,
                              "event_id", ev);
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (s != NULL)
            printf("%s\n", s);
        free(s);
        json_decref(j);
    }
    rc = code > 255 ? 255 : code;
out:
    json_decref(detail);
    json_decref(cmd);
    return rc;
}
