/* orchestrator/wake_ready.c - a wake from its container started to ready:
 * the inspect of the started container (its address, whether it has a
 * HEALTHCHECK), then readiness (a TCP or HTTP probe, or Docker health from
 * events and polling), then starting -> running with ip and port, which
 * wg:state carries to every proxy. waker.c gets the wake this far. */
#include "orchestrator/orch_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define STORE_RETRY_MS 200

static void wake_ready(struct orch_wake *w);

static uint64_t ns_between(uint64_t from_ns, uint64_t to_ns)
{
    return to_ns > from_ns && from_ns ? to_ns - from_ns : 0;
}

static unsigned ms_between(uint64_t from_ns, uint64_t to_ns)
{
    return (unsigned)(ns_between(from_ns, to_ns) / 1000000);
}

/* How readiness was decided, for the "session ready" line and event:
 * Docker health, the HTTP probe (the template's readiness.http_path) or a connect. */
static const char *ready_via(const struct orch_wake *w)
{
    if (w->health)
        return "health";
    return orch_template(w->t.o, &w->t.rec)->readiness.http_path ? "http" : "tcp";
}

/* ---- readiness ----------------------------------------------------------------------------- */

static void on_probe(int status, unsigned attempts, void *arg)
{
    struct orch_wake *w = arg;

    (void)status;
    w->probe = NULL; /* it frees itself after calling back */
    w->probe_attempts += attempts;
    wake_ready(w);
}

/* The template's ports that say ready: true, after the main port (or
 * Docker health) is ready: one probe after another, each a connect or its
 * http_path, all within the wake deadline. Returns true while one runs, or
 * when the wake failed starting one. */
static bool probe_next_port(struct orch_wake *w)
{
    struct wg_orch *o = w->t.o;
    const struct wg_sessions_cfg *t = orch_template(o, &w->t.rec);
    const struct wg_readiness_cfg *rd = &t->readiness;

    if (w->probe != NULL)
        return true; /* one runs: a second health report waits for it */
    while (w->next_port < t->ports_len) {
        const struct wg_named_port *p = &t->ports[w->next_port++];
        int rc;

        if (!p->ready || p->port == w->port)
            continue;
        if (p->http_path)
            rc = wg_probe_start_http(o->loop, w->ip, (uint16_t)p->port, p->http_path,
                                     (uint32_t)rd->interval_ms, (uint32_t)rd->timeout_ms, on_probe,
                                     w, &w->probe);
        else
            rc = wg_probe_start(o->loop, w->ip, (uint16_t)p->port, (uint32_t)rd->interval_ms,
                                (uint32_t)rd->timeout_ms, on_probe, w, &w->probe);
        if (rc < 0)
            wake_fail(w, "failed", "probe", -1,
                      "cannot probe port %s (%s:%u): %s, marking session failed", p->name, w->ip,
                      p->port, strerror(-rc));
        return true;
    }
    return false;
}

static void health_poll_cb(uv_timer_t *h);

static void wake_probe(struct orch_wake *w)
{
    struct wg_orch *o = w->t.o;
    const struct wg_readiness_cfg *rd = &orch_template(o, &w->t.rec)->readiness;
    int rc;

    if (!w->ip[0]) {
        wake_fail(w, "failed", "no address", -1,
                  "the container has no IP address to probe (network mode?), marking session "
                  "failed");
        return;
    }
    if (rd->http_path)
        rc = wg_probe_start_http(o->loop, w->ip, w->port, rd->http_path, (uint32_t)rd->interval_ms,
                                 (uint32_t)rd->timeout_ms, on_probe, w, &w->probe);
    else
        rc = wg_probe_start(o->loop, w->ip, w->port, (uint32_t)rd->interval_ms,
                            (uint32_t)rd->timeout_ms, on_probe, w, &w->probe);
    if (rc < 0)
        wake_fail(w, "failed", "probe", -1, "cannot probe %s:%u: %s, marking session failed", w->ip,
                  (unsigned)w->port, strerror(-rc));
}

/* The started container as an inspect showed it. */
static void after_inspect(struct orch_wake *w, const struct wg_docker_container *c)
{
    switch (wg_orch_step_after_started(c->paused, c->running)) {
    case WG_ORCH_STEP_UNPAUSE:
        wake_unpause(w);
        return;
    case WG_ORCH_STEP_CRASH:
        w->crash_exit = c->exit_code;
        w->crash_oom = c->oom_killed;
        wake_crash(w);
        return;
    default:
        break;
    }
    snprintf(w->ip, sizeof(w->ip), "%s", c->ip ? c->ip : "");
    w->health = wg_orch_ready_mode_of(c->health) == WG_ORCH_READY_HEALTH;
    w->next_port = 0;
    w->t.phase = PH_READY_WAIT;
    if (!w->health) {
        wake_probe(w);
        return;
    }
    if (wg_orch_health_ready(c->health)) {
        wake_ready(w);
        return;
    }
    uv_timer_start(&w->t.timer, health_poll_cb, WG_ORCH_HEALTH_POLL_MS, 0);
}

static void on_health_inspect(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_wake *w = arg;

    if (wake_docker_returned(w, status, r, "inspect"))
        return;
    if (status != 0) {
        orch_docker_error(w->t.o, status);
        if (status == WG_DOCKER_ENOTFOUND) {
            wake_fail(w, "failed", "gone", -1,
                      "the container was removed while starting, marking session failed");
            return;
        }
        uv_timer_start(&w->t.timer, health_poll_cb, WG_ORCH_HEALTH_POLL_MS, 0);
        return;
    }
    if (!r->container->running || r->container->paused) {
        after_inspect(w, r->container);
        return;
    }
    if (r->container->ip && r->container->ip[0])
        snprintf(w->ip, sizeof(w->ip), "%s", r->container->ip);
    if (wg_orch_health_ready(r->container->health)) {
        wake_ready(w);
        return;
    }
    uv_timer_start(&w->t.timer, health_poll_cb, WG_ORCH_HEALTH_POLL_MS, 0);
}

static void health_poll_cb(uv_timer_t *h)
{
    struct orch_wake *w = h->data;
    int rc;

    if (w->t.finished || w->t.busy || w->t.phase != PH_READY_WAIT)
        return;
    w->polls++;
    orch_task_call(&w->t);
    rc = wg_docker_inspect(w->t.o->docker, w->container, on_health_inspect, w);
    if (rc < 0)
        wake_send_failed(w, "inspect", rc);
}

void wake_healthy(struct orch_wake *w)
{
    if (w->t.phase != PH_READY_WAIT || !w->health || w->t.busy)
        return; /* a poll in flight sees it too */
    uv_timer_stop(&w->t.timer);
    wake_ready(w);
}

static void on_inspect_started(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_wake *w = arg;

    if (wake_docker_returned(w, status, r, "inspect"))
        return;
    if (status != 0) {
        orch_docker_error(w->t.o, status);
        wake_fail(w, "failed", "docker inspect", -1,
                  "docker inspect after the start failed: %s, marking session failed", r->error);
        return;
    }
    after_inspect(w, r->container);
}

void wake_started(struct orch_wake *w, const struct wg_docker_container *c)
{
    int rc;

    if (c) {
        after_inspect(w, c);
        return;
    }
    orch_task_call(&w->t);
    rc = wg_docker_inspect(w->t.o->docker, w->container, on_inspect_started, w);
    if (rc < 0)
        wake_send_failed(w, "inspect", rc);
}

/* ---- ready --------------------------------------------------------------------------------- */

static void publish_retry_cb(uv_timer_t *h);

static void wake_ready_done(struct orch_wake *w)
{
    struct wg_orch *o = w->t.o;
    uint64_t now = uv_hrtime();

    o->st.wakes_ready++;
    wg_hist_observe_ns(&o->m.queue, ns_between(w->t_starting, w->t_admitted));
    wg_hist_observe_ns(&o->m.docker_start, ns_between(w->t_admitted, w->t_docker));
    wg_hist_observe_ns(&o->m.ready, ns_between(w->t_docker, w->t_ready));
    wg_hist_observe_ns(&o->m.total, ns_between(w->t_starting, now));
    WG_INFO(o->log, ORCH_SUBSYS, "session ready",
            "session=%s container=%.12s ip=%s port=%u via=%s queue_ms=%u docker_ms=%u "
            "ready_ms=%u total_ms=%u probes=%u polls=%u restarts=%u",
            w->t.id, w->container, w->ip, (unsigned)w->port, ready_via(w),
            ms_between(w->t_starting, w->t_admitted), ms_between(w->t_admitted, w->t_docker),
            ms_between(w->t_docker, w->t_ready), ms_between(w->t_starting, now), w->probe_attempts,
            w->polls, w->restarts);
    orch_task_finish(&w->t);
}

static void on_running(const struct wg_store_res *res, void *arg)
{
    struct orch_wake *w = arg;
    struct wg_orch *o = w->t.o;

    if (orch_task_returned(&w->t))
        return;
    if (res->status == 0) {
        wake_ready_done(w);
        return;
    }
    if (res->status == WG_STORE_REJECTED || res->status == WG_STORE_FENCED ||
        res->status == -ENOENT) {
        WG_WARN(o->log, ORCH_SUBSYS, "session left starting before it was ready, leaving it",
                "session=%s container=%.12s state=%s", w->t.id, w->container,
                res->rec ? wg_session_state_name(res->rec->state) : "gone");
        orch_task_finish(&w->t);
        return;
    }
    if (orch_now_ms(o) < w->deadline_wall + 2 * (int64_t)wake_timeout_ms(o)) {
        WG_WARN(o->log, ORCH_SUBSYS, "cannot publish the ready session, retrying",
                "session=%s error=\"%s\"", w->t.id, res->error);
        uv_timer_start(&w->t.timer, publish_retry_cb, STORE_RETRY_MS, 0);
        return;
    }
    WG_ERROR(o->log, ORCH_SUBSYS,
             "cannot publish the ready session, leaving it to the stuck-state recovery",
             "session=%s error=\"%s\"", w->t.id, res->error);
    orch_task_finish(&w->t);
}

static void wake_publish(struct orch_wake *w)
{
    struct wg_session_update u = {0};
    char detail[256];

    u.set = WG_SF_CONTAINER_ID | WG_SF_IP | WG_SF_PORT | WG_SF_ERROR;
    u.container_id = w->container;
    u.ip = w->ip;
    u.port = w->port;
    u.error = NULL;
    if (!w->crash_restart) {
        u.set |= WG_SF_RESTARTS;
        u.restarts = 0;
    }
    snprintf(detail, sizeof(detail),
             "{\"reason\":\"ready\",\"via\":\"%s\",\"queue_ms\":%u,\"docker_ms\":%u,"
             "\"ready_ms\":%u}",
             ready_via(w), ms_between(w->t_starting, w->t_admitted),
             ms_between(w->t_admitted, w->t_docker), ms_between(w->t_docker, w->t_ready));
    orch_task_call(&w->t);
    orch_task_fence(&w->t, &u);
    if (wg_store_transition(w->t.o->store, w->t.id, WG_SESSION_BIT(WG_SESSION_STARTING),
                            WG_SESSION_RUNNING, &u, detail, on_running, w) < 0) {
        orch_task_returned(&w->t);
        WG_ERROR(w->t.o->log, ORCH_SUBSYS, "cannot send the move to running", "session=%s ip=%s",
                 w->t.id, w->ip);
        orch_task_finish(&w->t);
    }
}

static void publish_retry_cb(uv_timer_t *h)
{
    wake_publish(h->data);
}

static void wake_ready(struct orch_wake *w)
{
    if (w->ip[0] && probe_next_port(w))
        return;
    w->t_ready = uv_hrtime();
    w->t.phase = PH_PUBLISH;
    uv_timer_stop(&w->deadline);
    wake_publish(w);
}
