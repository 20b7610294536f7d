/* orchestrator/wake_fail.c - a wake that goes wrong. A container that dies
 * while its wake waits for it is restarted after a backoff (1 s, 2 s,
 * 4 s), up to WG_ORCH_MAX_RESTARTS times (wg_orch_wake_crash()); an OOM
 * kill, too many restarts, a Docker error or the wake deadline fail the
 * wake: the container's log tail goes into the event, starting -> failed
 * with the reason, and the container is stopped so a later wake starts
 * clean. An engine that never answered until the deadline fails nothing:
 * starting -> asleep, naming the call and its error. */
#include "orchestrator/orch_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define STOP_TIMEOUT_S 2    /* sessions have an init: a stop takes ~130 ms */
#define LOG_DETAIL_MAX 6000 /* bytes of log tail in an event: JSON escaping stays under the cap */

/* ---- deaths while starting ----------------------------------------------------------------- */

/* The session's wake, when it works on this container. */
static struct orch_wake *wake_of(struct wg_orch *o, const char *id, const char *container)
{
    struct orch_wake *w = waker_find(o, id);

    if (!w || !w->container[0] || strcmp(w->container, container) != 0)
        return NULL;
    return w;
}

bool waker_on_death(struct wg_orch *o, const char *id, const char *container, int exit_code,
                    bool oom, int64_t time_ns)
{
    struct orch_wake *w = wake_of(o, id, container);

    if (!w)
        return false;
    if (w->t.phase != PH_DOCKER && w->t.phase != PH_READY_WAIT)
        return true;
    if (!wg_orch_death_is_this_run(w->start_issued_ns, time_ns))
        return true; /* the death of an earlier run */
    w->crash_exit = exit_code;
    w->crash_oom = oom;
    if (w->t.busy) {
        if (w->pend == PEND_NONE)
            w->pend = PEND_CRASH;
        return true;
    }
    wake_crash(w);
    return true;
}

void waker_on_healthy(struct wg_orch *o, const char *id, const char *container)
{
    struct orch_wake *w = wake_of(o, id, container);

    if (w)
        wake_healthy(w);
}

static void restart_cb(uv_timer_t *h)
{
    struct orch_wake *w = h->data;

    if (w->t.finished)
        return;
    wake_start(w);
}

static void on_restart_counted(const struct wg_store_res *res, void *arg)
{
    struct orch_wake *w = arg;

    if (wake_returned(w))
        return;
    if (res->status == WG_STORE_REJECTED || res->status == WG_STORE_FENCED ||
        res->status == -ENOENT) {
        WG_WARN(w->t.o->log, ORCH_SUBSYS,
                "session left starting during a crash restart, leaving it", "session=%s", w->t.id);
        orch_task_finish(&w->t);
        return;
    }
    uv_timer_start(&w->t.timer, restart_cb, wg_orch_backoff_ms(w->restarts - 1), 0);
}

void wake_crash(struct orch_wake *w)
{
    struct wg_orch *o = w->t.o;
    struct wg_session_update u = {.set = WG_SF_RESTARTS_INCR};

    wg_probe_stop(w->probe);
    w->probe = NULL;
    uv_timer_stop(&w->t.timer);
    switch (wg_orch_wake_crash(w->crash_oom, w->restarts, WG_ORCH_MAX_RESTARTS)) {
    case WG_ORCH_CRASH_FAIL_OOM:
        wake_fail(w, "failed", "oom", w->crash_exit,
                  "the container was OOM-killed while starting, marking session failed");
        return;
    case WG_ORCH_CRASH_FAIL_LOOP:
        wake_fail(w, "failed", "exit", w->crash_exit,
                  "the container exited with %d while starting, %u restarts did not help, "
                  "marking session failed",
                  w->crash_exit, w->restarts);
        return;
    case WG_ORCH_CRASH_RESTART:
        break;
    }
    WG_WARN(o->log, ORCH_SUBSYS, "container exited while starting, restarting it after a backoff",
            "session=%s container=%.12s exit_code=%d restart=%u backoff_ms=%" PRIu32, w->t.id,
            w->container, w->crash_exit, w->restarts + 1, wg_orch_backoff_ms(w->restarts));
    w->restarts++;
    o->st.restarts++;
    w->t.phase = PH_BACKOFF;
    w->start_issued_ns = 0;
    orch_task_call(&w->t);
    orch_task_fence(&w->t, &u);
    if (wg_store_update(o->store, w->t.id, WG_SESSION_BIT(WG_SESSION_STARTING), &u,
                        on_restart_counted, w) < 0) {
        orch_task_returned(&w->t);
        uv_timer_start(&w->t.timer, restart_cb, wg_orch_backoff_ms(w->restarts - 1), 0);
    }
}

/* ---- failing ------------------------------------------------------------------------------- */

static void on_fail_stopped(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_wake *w = arg;

    if (orch_task_returned(&w->t))
        return;
    if (status != 0 && status != WG_DOCKER_ENOTFOUND) {
        orch_docker_error(w->t.o, status);
        WG_WARN(w->t.o->log, ORCH_SUBSYS, "cannot stop the failed session's container",
                "session=%s container=%.12s docker=\"%s\"", w->t.id, w->container, r->error);
    } else {
        WG_INFO(w->t.o->log, ORCH_SUBSYS, "stopped the failed session's container",
                "session=%s container=%.12s http=%ld", w->t.id, w->container, r->http_status);
    }
    orch_task_finish(&w->t);
}

static void on_failed(const struct wg_store_res *res, void *arg)
{
    struct orch_wake *w = arg;
    struct wg_orch *o = w->t.o;
    int rc;

    if (orch_task_returned(&w->t))
        return;
    if (res->status != 0)
        WG_WARN(o->log, ORCH_SUBSYS, "cannot move the session to failed",
                "session=%s state=%s error=\"%s\"", w->t.id,
                res->rec ? wg_session_state_name(res->rec->state) : "-",
                res->error[0] ? res->error : "refused");
    if (!w->container[0]) {
        orch_task_finish(&w->t);
        return;
    }
    /* Stopped, a later wake starts clean. */
    orch_mark(o, w->container, false, false, true);
    orch_task_call(&w->t);
    rc = wg_docker_stop(o->docker, w->container, STOP_TIMEOUT_S, on_fail_stopped, w);
    if (rc < 0) {
        orch_task_returned(&w->t);
        orch_task_finish(&w->t);
    }
}

/* The event detail of the failure: reason, error, exit code, restarts and
 * the log tail, as JSON text (malloc'd), or NULL when it does not fit. */
static char *fail_detail(const struct orch_wake *w, const char *logs, size_t logs_len)
{
    char tail[LOG_DETAIL_MAX];
    json_t *d;
    char *detail = NULL;

    d = json_pack("{s:s, s:s}", "reason", w->fail_reason, "error", w->fail_error);
    if (d && w->fail_exit >= 0)
        json_object_set_new(d, "exit_code", json_integer(w->fail_exit));
    if (d && w->restarts)
        json_object_set_new(d, "restarts", json_integer(w->restarts));
    if (d && logs) {
        wg_session_clean_text(tail, sizeof(tail), logs, logs_len);
        json_object_set_new(d, "logs", json_string(tail));
    }
    if (d)
        detail = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    if (detail && strlen(detail) > WG_STORE_DETAIL_MAX) {
        free(detail);
        detail = NULL;
    }
    return detail;
}

static void publish_failed(struct orch_wake *w, const char *logs, size_t logs_len)
{
    struct wg_orch *o = w->t.o;
    struct wg_session_update u = {0};
    char *detail = fail_detail(w, logs, logs_len);

    u.set = WG_SF_ERROR | WG_SF_IP;
    u.error = w->fail_error;
    u.ip = NULL;
    if (w->container[0]) {
        u.set |= WG_SF_CONTAINER_ID;
        u.container_id = w->container;
    }
    if (w->fail_outcome[0] == 't')
        o->st.wakes_timeout++;
    else
        o->st.wakes_failed++;
    orch_task_call(&w->t);
    orch_task_fence(&w->t, &u);
    if (wg_store_transition(o->store, w->t.id, WG_SESSION_BIT(WG_SESSION_STARTING),
                            WG_SESSION_FAILED, &u, detail, on_failed, w) < 0) {
        orch_task_returned(&w->t);
        WG_ERROR(o->log, ORCH_SUBSYS, "cannot send the move to failed", "session=%s", w->t.id);
        orch_task_finish(&w->t);
    }
    free(detail);
}

static void on_fail_logs(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_wake *w = arg;

    if (orch_task_returned(&w->t))
        return;
    if (status != 0) {
        orch_docker_error(w->t.o, status);
        publish_failed(w, NULL, 0);
        return;
    }
    publish_failed(w, r->output ? r->output : "", r->output_len);
}

/* A wake that ends (failed, or given up on an unreachable engine): off the
 * start queue, no probe, no timers, phase failing. False when it already
 * ended. */
static bool wake_end_work(struct orch_wake *w)
{
    if (w->t.finished || w->t.phase == PH_FAILING)
        return false;
    if (orch_task_dequeue(&w->t))
        w->t.o->queued--;
    wg_probe_stop(w->probe);
    w->probe = NULL;
    uv_timer_stop(&w->t.timer);
    uv_timer_stop(&w->deadline);
    w->t.phase = PH_FAILING;
    return true;
}

void wake_fail(struct orch_wake *w, const char *outcome, const char *reason, int exit_code,
               const char *fmt, ...)
{
    struct wg_orch *o = w->t.o;
    char raw[WG_SESSION_ERROR_MAX + 1], q[WG_SESSION_ERROR_MAX + 64];
    va_list ap;
    int rc;

    if (!wake_end_work(w))
        return;
    w->fail_outcome = outcome;
    w->fail_exit = exit_code;
    snprintf(w->fail_reason, sizeof(w->fail_reason), "%s", reason);
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    wg_session_clean_text(w->fail_error, sizeof(w->fail_error), raw, strlen(raw));
    WG_ERROR(o->log, ORCH_SUBSYS, "wake failed",
             "session=%s container=%.12s reason=\"%s\" exit_code=%d restarts=%u error=%s", w->t.id,
             w->container[0] ? w->container : "-", reason, exit_code, w->restarts,
             orch_q(q, sizeof(q), w->fail_error));
    if (!w->container[0]) {
        publish_failed(w, NULL, 0);
        return;
    }
    orch_task_call(&w->t);
    rc = wg_docker_logs(o->docker, w->container, WG_ORCH_LOG_TAIL_LINES, on_fail_logs, w);
    if (rc < 0) {
        orch_task_returned(&w->t);
        publish_failed(w, NULL, 0);
    }
}

/* ---- an engine that never answered --------------------------------------------------------- */

static void on_engine_gave_up(const struct wg_store_res *res, void *arg)
{
    struct orch_wake *w = arg;

    if (orch_task_returned(&w->t))
        return;
    if (res->status != 0)
        WG_WARN(w->t.o->log, ORCH_SUBSYS, "cannot move the session to asleep",
                "session=%s state=%s error=\"%s\"", w->t.id,
                res->rec ? wg_session_state_name(res->rec->state) : "-",
                res->error[0] ? res->error : "refused");
    orch_task_finish(&w->t);
}

void wake_engine_give_up(struct orch_wake *w)
{
    struct wg_orch *o = w->t.o;
    struct wg_session_update u = {0};
    char err[WG_SESSION_ERROR_MAX + 1], raw[WG_SESSION_ERROR_MAX + 1], q[WG_SESSION_ERROR_MAX + 64];
    char qc[48];
    char *detail = NULL;
    json_t *d;

    if (!wake_end_work(w))
        return;
    o->st.wakes_unreachable++;
    snprintf(raw, sizeof(raw), "Docker engine unreachable (docker %s): %s", w->engine_call,
             w->engine_error);
    wg_session_clean_text(err, sizeof(err), raw, strlen(raw));
    /* The container is left as it is: whatever the engine did before it
     * went away, reconciliation finds when it is back. */
    WG_ERROR(o->log, ORCH_SUBSYS,
             "Docker engine unreachable until the wake deadline, session asleep, not failed",
             "session=%s container=%.12s call=%s tries=%u error=%s", w->t.id,
             w->container[0] ? w->container : "-", orch_q(qc, sizeof(qc), w->engine_call),
             w->engine_tries, orch_q(q, sizeof(q), w->engine_error));
    u.set = WG_SF_ERROR | WG_SF_IP;
    u.error = err;
    if (w->container[0]) {
        u.set |= WG_SF_CONTAINER_ID;
        u.container_id = w->container;
    }
    d = json_pack("{s:s, s:s, s:s}", "reason", "engine unreachable", "call", w->engine_call,
                  "error", err);
    if (d)
        detail = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    orch_task_call(&w->t);
    orch_task_fence(&w->t, &u);
    if (wg_store_transition(o->store, w->t.id, WG_SESSION_BIT(WG_SESSION_STARTING),
                            WG_SESSION_ASLEEP, &u,
                            detail && strlen(detail) <= WG_STORE_DETAIL_MAX ? detail : NULL,
                            on_engine_gave_up, w) < 0) {
        orch_task_returned(&w->t);
        WG_ERROR(o->log, ORCH_SUBSYS, "cannot send the move to asleep", "session=%s", w->t.id);
        orch_task_finish(&w->t);
    }
    free(detail);
}
