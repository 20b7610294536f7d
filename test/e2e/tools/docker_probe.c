/* test/e2e/tools/docker_probe.c - drives orchestrator/docker against a real engine.
 *
 *   docker_probe full HOST IMAGE       the whole container life, step by step
 *   docker_probe notfound HOST         calls on a container that does not exist
 *   docker_probe unreachable HOST      nobody (or a silent peer) at HOST
 *   docker_probe caps HOST             answers over the body cap
 *   docker_probe cycles HOST IMAGE N   N rounds of start/pause/unpause/stop, timed
 *   docker_probe up HOST IMAGE GOFILE  create + start + inspect, then wait until
 *                                      GOFILE exists (the test looks at the
 *                                      container meanwhile), then stop + remove
 *
 * Options (after the arguments): --timeout-ms N, --connect-timeout-ms N,
 * --max-body N, --tls, --tls-ca F, --tls-cert F, --tls-key F,
 * --tls-skip-verify, --debug (the library's debug lines on stderr).
 * Every step prints one JSON object per line on stdout ({"step": name,
 * "status": n, "http": n, "ms": t, ...}); test/e2e/test_docker_client.py
 * asserts on them. The probe itself asserts nothing but the loop's clean
 * close ("loop_closed" in the last line); its exit status is 0 when the
 * scenario ran to its end. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "common/labels.h"
#include "common/log.h"
#include "orchestrator/docker.h"

#define MAX_EVENTS 256

struct result {
    bool done;
    int status;
    long http;
    double ms;
    char *message, *error, *id, *output, *api_version;
    size_t output_len;
    bool truncated;
    int exit_code;
    json_t *extra; /* call-specific fields, printed as they are */
};

struct evlog {
    bool open;
    int opens;
    json_t *events; /* array of {"action", "id", "exit_code", "session", "time_ns"} */
    bool ended;
    int end_status;
    char *end_error;
};

static uv_loop_t loop;
static struct wg_docker *dk;
static struct result res;
static uint64_t t0;
static struct wg_log logger = {.level = WG_LOG_INFO, .format = WG_LOG_LOGFMT};

static char *dup_or_null(const char *s, size_t n)
{
    char *p;

    if (!s)
        return NULL;
    p = malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static void result_clear(struct result *r)
{
    free(r->message);
    free(r->error);
    free(r->id);
    free(r->output);
    free(r->api_version);
    json_decref(r->extra);
    memset(r, 0, sizeof(*r));
}

static json_t *container_json(const struct wg_docker_container *c)
{
    json_t *o = json_object();

    json_object_set_new(o, "id", json_string(c->id));
    json_object_set_new(o, "name", json_string(c->name));
    json_object_set_new(o, "image", json_string(c->image));
    json_object_set_new(o, "state", json_string(c->status));
    json_object_set_new(o, "running", json_boolean(c->running));
    json_object_set_new(o, "paused", json_boolean(c->paused));
    json_object_set_new(o, "oom_killed", json_boolean(c->oom_killed));
    json_object_set_new(o, "exit_code", json_integer(c->exit_code));
    json_object_set_new(o, "pid", json_integer(c->pid));
    json_object_set_new(o, "health", c->health ? json_string(c->health) : json_null());
    json_object_set_new(o, "ip", json_string(c->ip));
    json_object_set_new(o, "started_ms", json_integer(c->started_ms));
    json_object_set_new(o, "finished_ms", json_integer(c->finished_ms));
    json_object_set_new(o, "tty", json_boolean(c->tty));
    json_object_set(o, "labels", c->labels);
    return o;
}

static void on_reply(int status, const struct wg_docker_reply *r, void *arg)
{
    struct result *out = arg;

    out->done = true;
    out->status = status;
    out->http = r->http_status;
    out->ms = (double)(uv_hrtime() - t0) / 1e6;
    out->message = dup_or_null(r->message, strlen(r->message));
    out->error = dup_or_null(r->error, strlen(r->error));
    out->id = r->id ? dup_or_null(r->id, strlen(r->id)) : NULL;
    out->api_version = r->api_version ? dup_or_null(r->api_version, strlen(r->api_version)) : NULL;
    out->output = r->output ? dup_or_null(r->output, r->output_len) : NULL;
    out->output_len = r->output_len;
    out->truncated = r->output_truncated;
    out->exit_code = r->exit_code;
    out->extra = json_object();
    if (r->container)
        json_object_set_new(out->extra, "container", container_json(r->container));
    if (r->containers) {
        json_t *a = json_array();
        for (size_t i = 0; i < r->n_containers; i++) {
            json_t *o = json_object();
            json_object_set_new(o, "id", json_string(r->containers[i].id));
            json_object_set_new(o, "name", json_string(r->containers[i].name));
            json_object_set_new(o, "state", json_string(r->containers[i].state));
            json_object_set(o, "labels", r->containers[i].labels);
            json_array_append_new(a, o);
        }
        json_object_set_new(out->extra, "containers", a);
    }
    if (r->json && json_is_object(r->json) && json_object_get(r->json, "ApiVersion"))
        json_object_set(out->extra, "version", r->json);
}

/* Runs the loop until the pending call answered; the call was issued with
 * rc (its return value). */
static void wait_call(int rc)
{
    if (rc < 0) {
        res.done = true;
        res.status = rc;
        res.message = strdup("refused by the call itself");
        return;
    }
    while (!res.done)
        uv_run(&loop, UV_RUN_ONCE);
}

static void emit(const char *step)
{
    json_t *o = json_object();
    char *s;

    json_object_set_new(o, "step", json_string(step));
    json_object_set_new(o, "status", json_integer(res.status));
    json_object_set_new(o, "http", json_integer(res.http));
    json_object_set_new(o, "ms", json_real(res.ms));
    json_object_set_new(o, "message", res.message ? json_string(res.message) : json_null());
    json_object_set_new(o, "error", res.error ? json_string(res.error) : json_null());
    if (res.id)
        json_object_set_new(o, "id", json_string(res.id));
    if (res.api_version)
        json_object_set_new(o, "api_version", json_string(res.api_version));
    if (res.output) {
        json_object_set_new(o, "output", json_stringn(res.output, res.output_len));
        json_object_set_new(o, "output_len", json_integer((json_int_t)res.output_len));
        json_object_set_new(o, "truncated", json_boolean(res.truncated));
        json_object_set_new(o, "exit_code", json_integer(res.exit_code));
    }
    if (res.extra)
        json_object_update(o, res.extra);
    s = json_dumps(o, JSON_COMPACT);
    printf("%s\n", s);
    fflush(stdout);
    free(s);
    json_decref(o);
    result_clear(&res);
}

static void emit_obj(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    printf("%s\n", s);
    fflush(stdout);
    free(s);
    json_decref(o);
}

#define CALL(step, expr)                                                                           \
    do {                                                                                           \
        result_clear(&res);                                                                        \
        t0 = uv_hrtime();                                                                          \
        wait_call(expr);                                                                           \
        emit(step);                                                                                \
    } while (0)

/* Same, but keeps the result for the caller to read (then emit). */
#define CALL_KEEP(expr)                                                                            \
    do {                                                                                           \
        result_clear(&res);                                                                        \
        t0 = uv_hrtime();                                                                          \
        wait_call(expr);                                                                           \
    } while (0)

/* ---- events ------------------------------------------------------------------------------- */

static void on_event(const struct wg_docker_event *ev, void *arg)
{
    struct evlog *l = arg;
    json_t *o;

    if (ev->kind == WG_DOCKER_EVENTS_OPEN) {
        l->open = true;
        l->opens++;
        return;
    }
    if (json_array_size(l->events) >= MAX_EVENTS)
        return;
    o = json_object();
    json_object_set_new(o, "type", json_string(ev->type));
    json_object_set_new(o, "action", json_string(ev->action));
    json_object_set_new(o, "id", json_string(ev->id));
    json_object_set_new(o, "name", json_string(ev->name));
    json_object_set_new(o, "session", ev->session ? json_string(ev->session) : json_null());
    json_object_set_new(o, "exit_code", json_integer(ev->exit_code));
    json_object_set_new(o, "health", ev->health ? json_string(ev->health) : json_null());
    json_object_set_new(o, "time_ns", json_integer(ev->time_ns));
    json_array_append_new(l->events, o);
}

static void on_events_end(int status, const struct wg_docker_reply *r, void *arg)
{
    struct evlog *l = arg;

    l->ended = true;
    l->end_status = status;
    l->end_error = strdup(r->error);
}

static bool seen(const struct evlog *l, const char *id, const char *action)
{
    size_t i;
    json_t *e;

    json_array_foreach(l->events, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "id")), id) == 0 &&
            strcmp(json_string_value(json_object_get(e, "action")), action) == 0)
            return true;
    }
    return false;
}

static void timeout_cb(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Runs the loop until pred(l, id, action) or ms pass. */
static bool wait_for(struct evlog *l, const char *id, const char *action, uint64_t ms)
{
    uv_timer_t t;
    bool expired = false, ok;

    uv_timer_init(&loop, &t);
    t.data = &expired;
    uv_timer_start(&t, timeout_cb, ms, 0);
    while (!expired && !l->ended && !(id ? seen(l, id, action) : l->open))
        uv_run(&loop, UV_RUN_ONCE);
    ok = id ? seen(l, id, action) : l->open;
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return ok;
}

static void sleep_ms(uint64_t ms)
{
    uv_timer_t t;
    bool expired = false;

    uv_timer_init(&loop, &t);
    t.data = &expired;
    uv_timer_start(&t, timeout_cb, ms, 0);
    while (!expired)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

static void emit_events(const char *step, struct evlog *l, bool ok)
{
    json_t *o = json_object();

    json_object_set_new(o, "step", json_string(step));
    json_object_set_new(o, "ok", json_boolean(ok));
    json_object_set_new(o, "opens", json_integer(l->opens));
    json_object_set(o, "events", l->events);
    json_object_set_new(o, "ended", json_boolean(l->ended));
    json_object_set_new(o, "end_status", json_integer(l->end_status));
    json_object_set_new(o, "end_error", l->end_error ? json_string(l->end_error) : json_null());
    emit_obj(o);
}

/* ---- scenarios ---------------------------------------------------------------------------- */

static const char *const probe_cmd[] = {
    "sh", "-c", "echo probe-log-line; echo probe-err-line >&2; exec httpd -f -p 8080 -h /www",
    NULL};

static int create_probe(const char *image, const char *session, const char *name)
{
    static const char *const env[] = {"PROBE=1", "EMPTY=", NULL};
    static const struct wg_docker_label labels[] = {{"wakegate.test", "probe"}, {NULL, NULL}};
    struct wg_docker_spec spec = {
        .session = session,
        .name = name,
        .image = image,
        .cmd = probe_cmd,
        .env = env,
        .labels = labels,
        .port = 8080,
        .memory_bytes = 256 << 20,
    };
    return wg_docker_create(dk, &spec, on_reply, &res, NULL, 0);
}

static void emit_sync(const char *step, int rc, const char *err)
{
    json_t *o = json_object();

    json_object_set_new(o, "step", json_string(step));
    json_object_set_new(o, "rc", json_integer(rc));
    json_object_set_new(o, "err", json_string(err ? err : ""));
    emit_obj(o);
}

static int scenario_full(const char *image)
{
    struct evlog ev = {.events = json_array()}, ev2 = {.events = json_array()};
    struct wg_docker_events *es = NULL, *es2 = NULL;
    struct wg_docker_events_opts eo;
    char session[64], name[64], label[128], id[80] = "", err[256];
    static const char *const exec_hi[] = {"sh", "-c", "echo hi; exit 3", NULL};
    static const char *const exec_both[] = {"sh", "-c", "echo to-out; echo to-err >&2", NULL};
    static const char *const exec_big[] = {"seq", "1", "30000", NULL};
    static const char *const exec_sleep[] = {"sh", "-c", "echo before-sleep; exec sleep 5", NULL};
    static const char *const exec_missing[] = {"/no/such/binary", NULL};
    struct wg_docker_spec bad = {.session = "bad session", .image = image};
    int64_t first_ns = 0;
    int rc;

    snprintf(session, sizeof(session), "probe-%d", (int)getpid());
    snprintf(name, sizeof(name), "wg-probe-%d", (int)getpid());
    snprintf(label, sizeof(label), "%s=%s", WG_LABEL_SESSION, session);

    /* The stream opens first, so start and die are in it. */
    memset(&eo, 0, sizeof(eo));
    eo.label = label;
    rc = wg_docker_events_start(dk, &eo, on_event, on_events_end, &ev, &es);
    emit_sync("events_start", rc, NULL);
    emit_events("events_open", &ev, wait_for(&ev, NULL, NULL, 5000));

    CALL("ping", wg_docker_ping(dk, on_reply, &res));
    CALL("version", wg_docker_version(dk, on_reply, &res));

    CALL_KEEP(create_probe(image, session, name));
    if (res.id)
        snprintf(id, sizeof(id), "%s", res.id);
    emit("create");
    if (!id[0])
        return 1;
    CALL("create_same_name", create_probe(image, session, name));
    CALL("inspect_created", wg_docker_inspect(dk, id, on_reply, &res));

    CALL("start", wg_docker_start(dk, id, on_reply, &res));
    CALL("start_again", wg_docker_start(dk, id, on_reply, &res));
    CALL("inspect_running", wg_docker_inspect(dk, id, on_reply, &res));
    CALL("inspect_by_name", wg_docker_inspect(dk, name, on_reply, &res));

    CALL("pause", wg_docker_pause(dk, id, on_reply, &res));
    CALL("inspect_paused", wg_docker_inspect(dk, id, on_reply, &res));
    CALL("pause_again", wg_docker_pause(dk, id, on_reply, &res));
    CALL("unpause", wg_docker_unpause(dk, id, on_reply, &res));

    CALL("exec_hi", wg_docker_exec(dk, id, exec_hi, 10000, on_reply, &res));
    CALL("exec_both", wg_docker_exec(dk, id, exec_both, 10000, on_reply, &res));
    CALL("exec_big", wg_docker_exec(dk, id, exec_big, 10000, on_reply, &res));
    CALL("exec_timeout", wg_docker_exec(dk, id, exec_sleep, 300, on_reply, &res));
    CALL("exec_missing", wg_docker_exec(dk, id, exec_missing, 10000, on_reply, &res));

    CALL("logs", wg_docker_logs(dk, id, 10, on_reply, &res));

    CALL("stop", wg_docker_stop(dk, id, 1, on_reply, &res));
    CALL("stop_again", wg_docker_stop(dk, id, 1, on_reply, &res));
    CALL("inspect_exited", wg_docker_inspect(dk, id, on_reply, &res));
    CALL("exec_stopped", wg_docker_exec(dk, id, exec_hi, 10000, on_reply, &res));
    CALL("list_session", wg_docker_list(dk, label, on_reply, &res));
    CALL("list_all", wg_docker_list(dk, NULL, on_reply, &res));

    CALL("remove", wg_docker_remove(dk, id, true, true, on_reply, &res));
    CALL("inspect_removed", wg_docker_inspect(dk, id, on_reply, &res));
    CALL("remove_again", wg_docker_remove(dk, id, true, true, on_reply, &res));
    CALL("start_removed", wg_docker_start(dk, id, on_reply, &res));

    emit_events("events", &ev, wait_for(&ev, id, "destroy", 5000));
    if (json_array_size(ev.events) > 0)
        first_ns = json_integer_value(json_object_get(json_array_get(ev.events, 0), "time_ns"));
    wg_docker_events_stop(es);
    es = NULL;

    /* A second stream replays from the first event's time. */
    eo.since_ns = first_ns;
    rc = wg_docker_events_start(dk, &eo, on_event, on_events_end, &ev2, &es2);
    emit_sync("events_since_start", rc, NULL);
    emit_events("events_since", &ev2, wait_for(&ev2, id, "destroy", 5000));

    /* Refused before anything is sent. */
    emit_sync("bad_ref_start", wg_docker_start(dk, "../../etc", on_reply, &res), NULL);
    emit_sync("bad_ref_inspect", wg_docker_inspect(dk, "a/b?c", on_reply, &res), NULL);
    emit_sync("bad_ref_empty", wg_docker_stop(dk, "", 1, on_reply, &res), NULL);
    err[0] = '\0';
    emit_sync("bad_spec", wg_docker_create(dk, &bad, on_reply, &res, err, sizeof(err)), err);

    /* Free with calls in flight: each answers -ECANCELED, the stream ends. */
    {
        struct result a = {0}, b = {0};
        char ref[64];
        snprintf(ref, sizeof(ref), "%s", id);
        wg_docker_inspect(dk, ref, on_reply, &a);
        wg_docker_exec(dk, ref, exec_hi, 1000, on_reply, &b);
        uv_run(&loop, UV_RUN_NOWAIT); /* let them go out */
        wg_docker_free(dk);
        dk = NULL;
        json_t *o = json_object();
        json_object_set_new(o, "step", json_string("free_pending"));
        json_object_set_new(o, "inspect_done", json_boolean(a.done));
        json_object_set_new(o, "inspect_status", json_integer(a.status));
        json_object_set_new(o, "exec_done", json_boolean(b.done));
        json_object_set_new(o, "exec_status", json_integer(b.status));
        json_object_set_new(o, "stream_ended", json_boolean(ev2.ended));
        json_object_set_new(o, "stream_status", json_integer(ev2.end_status));
        emit_obj(o);
        result_clear(&a);
        result_clear(&b);
    }
    json_decref(ev.events);
    json_decref(ev2.events);
    free(ev.end_error);
    free(ev2.end_error);
    return 0;
}

static int scenario_notfound(void)
{
    char ref[64];

    snprintf(ref, sizeof(ref), "wg-nonexistent-%d", (int)getpid());
    CALL("start", wg_docker_start(dk, ref, on_reply, &res));
    CALL("stop", wg_docker_stop(dk, ref, 1, on_reply, &res));
    CALL("inspect", wg_docker_inspect(dk, ref, on_reply, &res));
    CALL("pause", wg_docker_pause(dk, ref, on_reply, &res));
    CALL("logs", wg_docker_logs(dk, ref, 5, on_reply, &res));
    {
        static const char *const argv[] = {"true", NULL};
        CALL("exec", wg_docker_exec(dk, ref, argv, 5000, on_reply, &res));
    }
    CALL("remove", wg_docker_remove(dk, ref, true, false, on_reply, &res));
    return 0;
}

/* Two calls at once before any negotiation: both wait for the ping and
 * both get its failure. */
static int scenario_unreachable(void)
{
    struct result a = {0}, b = {0};
    struct evlog ev = {.events = json_array()};
    struct wg_docker_events *es = NULL;
    json_t *o;

    t0 = uv_hrtime();
    wg_docker_inspect(dk, "abc", on_reply, &a);
    wg_docker_start(dk, "abc", on_reply, &b);
    while (!a.done || !b.done)
        uv_run(&loop, UV_RUN_ONCE);
    o = json_object();
    json_object_set_new(o, "step", json_string("queued_pair"));
    json_object_set_new(o, "status_a", json_integer(a.status));
    json_object_set_new(o, "status_b", json_integer(b.status));
    json_object_set_new(o, "error_a", json_string(a.error));
    json_object_set_new(o, "ms", json_real((double)(uv_hrtime() - t0) / 1e6));
    emit_obj(o);
    result_clear(&a);
    result_clear(&b);

    CALL("ping", wg_docker_ping(dk, on_reply, &res));
    CALL("inspect", wg_docker_inspect(dk, "abc", on_reply, &res));

    t0 = uv_hrtime();
    wg_docker_events_start(dk, NULL, on_event, on_events_end, &ev, &es);
    while (!ev.ended)
        uv_run(&loop, UV_RUN_ONCE);
    o = json_object();
    json_object_set_new(o, "step", json_string("events"));
    json_object_set_new(o, "status", json_integer(ev.end_status));
    json_object_set_new(o, "opens", json_integer(ev.opens));
    json_object_set_new(o, "error", json_string(ev.end_error));
    json_object_set_new(o, "ms", json_real((double)(uv_hrtime() - t0) / 1e6));
    emit_obj(o);
    json_decref(ev.events);
    free(ev.end_error);
    return 0;
}

static int scenario_caps(void)
{
    CALL("ping", wg_docker_ping(dk, on_reply, &res));
    CALL("version", wg_docker_version(dk, on_reply, &res));
    CALL("list", wg_docker_list(dk, NULL, on_reply, &res));
    return 0;
}

static int scenario_up(const char *image, const char *gofile)
{
    char session[64], id[80];
    uint64_t waited = 0;

    snprintf(session, sizeof(session), "up-%d", (int)getpid());
    CALL_KEEP(create_probe(image, session, NULL));
    if (res.status != 0 || !res.id) {
        emit("create");
        return 1;
    }
    snprintf(id, sizeof(id), "%s", res.id);
    emit("create");
    CALL("start", wg_docker_start(dk, id, on_reply, &res));
    CALL("inspect", wg_docker_inspect(dk, id, on_reply, &res));
    while (access(gofile, F_OK) != 0 && waited < 60000) {
        sleep_ms(20);
        waited += 20;
    }
    CALL("stop", wg_docker_stop(dk, id, 1, on_reply, &res));
    CALL("remove", wg_docker_remove(dk, id, true, true, on_reply, &res));
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int scenario_cycles(const char *image, int n)
{
    static const char *const ops[] = {"create", "start", "pause", "unpause", "stop", "remove"};
    double *t[6];
    char session[64], id[80];
    json_t *o = json_object();

    if (n < 1 || n > 100)
        return 2;
    for (int k = 0; k < 6; k++)
        t[k] = calloc((size_t)n, sizeof(double));
    for (int i = 0; i < n; i++) {
        snprintf(session, sizeof(session), "cycle-%d-%d", (int)getpid(), i);
        CALL_KEEP(create_probe(image, session, NULL));
        if (res.status != 0 || !res.id) {
            emit("cycle_create_failed");
            return 1;
        }
        snprintf(id, sizeof(id), "%s", res.id);
        t[0][i] = res.ms;
        CALL_KEEP(wg_docker_start(dk, id, on_reply, &res));
        t[1][i] = res.status ? -1 : res.ms;
        sleep_ms(100); /* let the container settle, as a real session would */
        CALL_KEEP(wg_docker_pause(dk, id, on_reply, &res));
        t[2][i] = res.status ? -1 : res.ms;
        CALL_KEEP(wg_docker_unpause(dk, id, on_reply, &res));
        t[3][i] = res.status ? -1 : res.ms;
        CALL_KEEP(wg_docker_stop(dk, id, 1, on_reply, &res));
        t[4][i] = res.status ? -1 : res.ms;
        CALL_KEEP(wg_docker_remove(dk, id, true, true, on_reply, &res));
        t[5][i] = res.status ? -1 : res.ms;
    }
    result_clear(&res);
    json_object_set_new(o, "step", json_string("cycles"));
    json_object_set_new(o, "n", json_integer(n));
    for (int k = 0; k < 6; k++) {
        json_t *a = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(a, json_real(t[k][i]));
        qsort(t[k], (size_t)n, sizeof(double), cmp_double);
        json_object_set_new(o, ops[k], a);
        char key[32];
        snprintf(key, sizeof(key), "%s_median", ops[k]);
        json_object_set_new(o, key, json_real(t[k][n / 2]));
        free(t[k]);
    }
    emit_obj(o);
    return 0;
}

int main(int argc, char **argv)
{
    struct wg_docker_opts opts;
    const char *scenario, *image = NULL;
    char err[256];
    int rc, nargs = 0, cycles = 0;
    const char *args[4] = {0};
    json_t *o;

    memset(&opts, 0, sizeof(opts));
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--timeout-ms") == 0 && i + 1 < argc)
            opts.timeout_ms = (uint32_t)atoi(argv[++i]);
        else if (strcmp(argv[i], "--connect-timeout-ms") == 0 && i + 1 < argc)
            opts.connect_timeout_ms = (uint32_t)atoi(argv[++i]);
        else if (strcmp(argv[i], "--max-body") == 0 && i + 1 < argc)
            opts.max_body = (size_t)atol(argv[++i]);
        else if (strcmp(argv[i], "--tls") == 0)
            opts.tls = true;
        else if (strcmp(argv[i], "--tls-ca") == 0 && i + 1 < argc)
            opts.tls_ca = argv[++i];
        else if (strcmp(argv[i], "--tls-cert") == 0 && i + 1 < argc)
            opts.tls_cert = argv[++i];
        else if (strcmp(argv[i], "--tls-key") == 0 && i + 1 < argc)
            opts.tls_key = argv[++i];
        else if (strcmp(argv[i], "--tls-skip-verify") == 0)
            opts.tls_skip_verify = true;
        else if (strcmp(argv[i], "--debug") == 0)
            logger.level = WG_LOG_DEBUG;
        else if (nargs < 4)
            args[nargs++] = argv[i];
    }
    if (nargs < 2) {
        fprintf(stderr, "usage: docker_probe full|notfound|unreachable|caps|cycles|up HOST [IMAGE] "
                        "[N|GOFILE]\n");
        return 2;
    }
    scenario = args[0];
    opts.host = args[1];
    image = args[2];
    if (args[3] && strcmp(scenario, "cycles") == 0)
        cycles = atoi(args[3]);
    logger.out = stderr;

    uv_loop_init(&loop);
    rc = wg_docker_new(&loop, &opts, &logger, &dk, err, sizeof(err));
    if (rc < 0) {
        o = json_object();
        json_object_set_new(o, "step", json_string("new"));
        json_object_set_new(o, "rc", json_integer(rc));
        json_object_set_new(o, "err", json_string(err));
        emit_obj(o);
        return 1;
    }
    if (strcmp(scenario, "full") == 0 && image)
        rc = scenario_full(image);
    else if (strcmp(scenario, "notfound") == 0)
        rc = scenario_notfound();
    else if (strcmp(scenario, "unreachable") == 0)
        rc = scenario_unreachable();
    else if (strcmp(scenario, "caps") == 0)
        rc = scenario_caps();
    else if (strcmp(scenario, "cycles") == 0 && image)
        rc = scenario_cycles(image, cycles ? cycles : 5);
    else if (strcmp(scenario, "up") == 0 && image && args[3])
        rc = scenario_up(image, args[3]);
    else
        rc = 2;
    wg_docker_free(dk);
    uv_run(&loop, UV_RUN_DEFAULT);
    o = json_object();
    json_object_set_new(o, "step", json_string("end"));
    json_object_set_new(o, "rc", json_integer(rc));
    json_object_set_new(o, "loop_closed", json_boolean(uv_loop_close(&loop) == 0));
    emit_obj(o);
    result_clear(&res);
    return rc;
}
