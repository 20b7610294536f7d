/* orchestrator/wake_network.c - the wake's step before a container is
 * created: the session's template network exists on this engine and
 * isolates (orchestrator/docker_network.c says what that means). It is
 * made on first use, so every Docker host has its own, and checked on
 * every create, so a network someone changed by hand is never joined. */
#include "orchestrator/orch_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

struct net_names {
    char buf[80];
    const char *name;
};

static const struct wg_sessions_cfg *wake_template(const struct orch_wake *w)
{
    return wg_config_template(w->t.o->cfg, w->t.rec.template_name);
}

static struct wg_docker_network_spec
network_spec(const struct orch_wake *w, const struct wg_sessions_cfg *t, struct net_names *n)
{
    n->name = wg_config_network_name(t, n->buf, sizeof(n->buf));
    return (struct wg_docker_network_spec){
        .name = n->name,
        .subnet = t->sandbox.subnet,
        .template = t->name ? t->name : "default",
        .egress = t->sandbox.egress,
    };
}

static void network_call_failed(struct orch_wake *w, const char *call, int status,
                                const struct wg_docker_reply *r)
{
    struct net_names n;
    const struct wg_sessions_cfg *t = wake_template(w);

    orch_docker_error(w->t.o, status);
    if (t)
        network_spec(w, t, &n);
    wake_fail(w, "failed", "network", -1,
              "docker %s of the session network %s failed: %s, marking session failed", call,
              t ? n.name : "-", r ? r->error : strerror(-status));
}

static void on_network_created(int status, const struct wg_docker_reply *r, void *arg);

static void on_network_inspect(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_wake *w = arg;
    const struct wg_sessions_cfg *t;
    struct wg_docker_network_spec spec;
    struct net_names n;
    char why[384], err[256];
    int rc;

    if (wake_docker_returned(w, status, r, "network inspect"))
        return;
    t = wake_template(w);
    if (t == NULL) {
        wake_create_container(w); /* it fails the wake, naming the template */
        return;
    }
    spec = network_spec(w, t, &n);
    if (status == WG_DOCKER_ENOTFOUND && !w->network_raced) {
        orch_task_call(&w->t);
        rc = wg_docker_network_create(w->t.o->docker, &spec, on_network_created, w, err,
                                      sizeof(err));
        if (rc == -EINVAL) {
            orch_task_returned(&w->t);
            wake_fail(w, "failed", "network", -1,
                      "the session network %s cannot be made: %s, marking session failed", n.name,
                      err);
        } else if (rc < 0) {
            wake_send_failed(w, "network create", rc);
        }
        return;
    }
    if (status != 0) {
        network_call_failed(w, "network inspect", status, r);
        return;
    }
    /* Fail closed: a network that lets sessions reach each other, or one
     * the host rule does not cover, is never joined. */
    if (wg_docker_network_check(r->network, &spec, why, sizeof(why)) < 0) {
        wake_fail(w, "failed", "network", -1, "%s, marking session failed", why);
        return;
    }
    wake_create_container(w);
}

static void on_network_created(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_wake *w = arg;
    struct net_names n;
    const struct wg_sessions_cfg *t;

    if (wake_docker_returned(w, status, r, "network create"))
        return;
    t = wake_template(w);
    /* 409: another wake (or orchestrator) made it first; it is checked
     * like any other, once. */
    if (status != 0 && status != WG_DOCKER_ECONFLICT) {
        network_call_failed(w, "network create", status, r);
        return;
    }
    if (status == WG_DOCKER_ECONFLICT || t == NULL) {
        w->network_raced = true;
        wake_create(w);
        return;
    }
    network_spec(w, t, &n);
    WG_INFO(w->t.o->log, ORCH_SUBSYS, "session network created",
            "session=%s network=%s id=%.12s egress=%s docker_ms=%" PRIu64, w->t.id, n.name, r->id,
            t->sandbox.egress ? "true" : "false", r->elapsed_us / 1000);
    wake_create_container(w);
}

void wake_create(struct orch_wake *w)
{
    const struct wg_sessions_cfg *t = wake_template(w);
    struct net_names n;
    int rc;

    if (t == NULL) {
        wake_create_container(w);
        return;
    }
    network_spec(w, t, &n);
    w->t.phase = PH_DOCKER;
    orch_task_call(&w->t);
    rc = wg_docker_network_inspect(w->t.o->docker, n.name, on_network_inspect, w);
    if (rc < 0)
        wake_send_failed(w, "network inspect", rc);
}
