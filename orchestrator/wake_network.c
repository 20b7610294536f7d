/* orchestrator/wake_network.c - the wake's step before a container is
 * created: the session's template network exists on this engine and
 * isolates (orchestrator/docker_network.c says what that means). It is
 * made on first use, so every Docker host has its own, and checked on
 * every create, so a network someone changed by hand is never joined.
 *
 * The engine does not keep network names unique: two wakes that both find
 * no network and both create one get two of the same name, and a name
 * two networks share can no longer be started with ("ambiguous"). So an
 * orchestrator (one per engine) creates one network at a time: a wake
 * that finds none while a create is on its way lists again shortly. Should
 * two exist anyway (another orchestrator on the same engine, or by hand),
 * every wake picks the lowest id, and the name's trouble is logged. */
#include "orchestrator/orch_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define NETWORK_RELIST_MS 20 /* a create by another wake is on its way */

struct net_names {
    char buf[80];
    const char *name;
};

static const struct wg_sessions_cfg *wake_template(const struct orch_wake *w)
{
    return wg_config_template(w->t.o->cfg, w->t.rec.template_name);
}

static struct wg_docker_network_spec network_spec(const struct wg_sessions_cfg *t,
                                                  struct net_names *n)
{
    n->name = wg_config_network_name(t, n->buf, sizeof(n->buf));
    return (struct wg_docker_network_spec){
        .name = n->name,
        .subnet = t->sandbox.subnet,
        .template = t->name ? t->name : "default",
        .egress = t->sandbox.egress,
    };
}

static void network_call_failed(struct orch_wake *w, const char *call, const char *name, int status,
                                const struct wg_docker_reply *r)
{
    orch_docker_error(w->t.o, status);
    wake_fail(w, "failed", "network", -1,
              "docker %s of the session network %s failed: %s, marking session failed", call, name,
              r ? r->error : strerror(-status));
}

static void on_network_created(int status, const struct wg_docker_reply *r, void *arg);

/* The network every wake agrees on: the lowest id of those named so. */
static const struct wg_docker_network *pick(const struct wg_docker_reply *r)
{
    const struct wg_docker_network *best = NULL;

    for (size_t i = 0; i < r->n_networks; i++)
        if (best == NULL || strcmp(r->networks[i].id, best->id) < 0)
            best = &r->networks[i];
    return best;
}

static void relist_cb(uv_timer_t *h)
{
    wake_create(h->data);
}

static void create_network(struct orch_wake *w, const struct wg_docker_network_spec *spec)
{
    char err[256];
    int rc;

    if (w->t.o->network_creating) {
        uv_timer_start(&w->t.timer, relist_cb, NETWORK_RELIST_MS, 0);
        return;
    }
    orch_task_call(&w->t);
    rc = wg_docker_network_create(w->t.o->docker, spec, on_network_created, w, err, sizeof(err));
    w->t.o->network_creating = rc == 0;
    if (rc == -EINVAL) {
        orch_task_returned(&w->t);
        wake_fail(w, "failed", "network", -1,
                  "the session network %s cannot be made: %s, marking session failed", spec->name,
                  err);
    } else if (rc < 0) {
        wake_send_failed(w, "network create", rc);
    }
}

static void on_network_list(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_wake *w = arg;
    const struct wg_sessions_cfg *t;
    const struct wg_docker_network *n;
    struct wg_docker_network_spec spec;
    struct net_names names;
    char why[384];

    if (wake_docker_returned(w, status, r, "network list"))
        return;
    t = wake_template(w);
    if (t == NULL) {
        wake_create_container(w); /* it fails the wake, naming the template */
        return;
    }
    spec = network_spec(t, &names);
    if (status != 0) {
        network_call_failed(w, "network list", names.name, status, r);
        return;
    }
    n = pick(r);
    if (n == NULL && !w->network_made) {
        create_network(w, &spec);
        return;
    }
    if (n == NULL) {
        wake_fail(w, "failed", "network", -1,
                  "the session network %s was made but the engine does not list it, marking "
                  "session failed",
                  names.name);
        return;
    }
    /* Fail closed: a network that lets sessions reach each other, or one
     * the host rule does not cover, is never joined. */
    if (wg_docker_network_check(n, &spec, why, sizeof(why)) < 0) {
        wake_fail(w, "failed", "network", -1, "%s, marking session failed", why);
        return;
    }
    if (r->n_networks > 1)
        WG_WARN(w->t.o->log, ORCH_SUBSYS,
                "session networks share a name, which the engine cannot start containers on; "
                "remove all but one (docker network rm)",
                "session=%s network=%s count=%zu", w->t.id, names.name, r->n_networks);
    snprintf(w->network_id, sizeof(w->network_id), "%s", n->id);
    wake_create_container(w);
}

static void on_network_created(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_wake *w = arg;
    const struct wg_sessions_cfg *t;
    struct net_names n;

    /* Whatever became of this wake, the next create may go. */
    w->t.o->network_creating = false;
    if (wake_docker_returned(w, status, r, "network create"))
        return;
    t = wake_template(w);
    if (t == NULL) {
        wake_create_container(w);
        return;
    }
    network_spec(t, &n);
    /* A 409 (the engine saw another of that name): listed like any other. */
    if (status != 0 && status != WG_DOCKER_ECONFLICT) {
        network_call_failed(w, "network create", n.name, status, r);
        return;
    }
    if (status == 0)
        WG_INFO(w->t.o->log, ORCH_SUBSYS, "session network created",
                "session=%s network=%s id=%.12s egress=%s docker_ms=%" PRIu64, w->t.id, n.name,
                r->id, t->sandbox.egress ? "true" : "false", r->elapsed_us / 1000);
    /* Listed again: a wake that raced this one may have made one too. */
    w->network_made = true;
    wake_create(w);
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
    network_spec(t, &n);
    w->t.phase = PH_DOCKER;
    orch_task_call(&w->t);
    rc = wg_docker_network_list(w->t.o->docker, n.name, on_network_list, w);
    if (rc < 0)
        wake_send_failed(w, "network list", rc);
}
