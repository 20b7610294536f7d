/* orchestrator/reconcile.c - keeping Redis truthful about this host's
 * containers: reconcile rounds (startup, and after the events stream
 * reconnects), rechecks of one session (struct orch_recheck), and the
 * recovery of sessions stuck in transient states. What the events stream
 * says is handled in reconcile_events.c.
 *
 * A round lists the labelled containers and the records; every record of
 * this host that may disagree with Docker, and every labelled container
 * without a record (adopted), gets a recheck task. A recheck takes the
 * session's lock (a holder is at work: skip), reads the record again,
 * inspects the container, asks wg_orch_reconcile_decide() and applies the
 * answer with a compare-and-set from the state it read, so a concurrent
 * move is never overwritten. Each correction is logged and appended to
 * wg:events as type "reconcile". At most WG_ORCH_RECHECK_MAX run at once. */
#include "orchestrator/orch_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

struct seen_container {
    char id[WG_SESSION_CONTAINER_ID_MAX + 1];
    char session[WG_SESSION_ID_MAX + 1];
    char image[WG_SESSION_IMAGE_MAX + 1];
    enum wg_orch_docker_state state;
    uint16_t port;                                   /* label wakegate.port, 0 when absent or bad */
    bool claimed;                                    /* matched to a record (or adopted) */
    bool made_here;                                  /* label wakegate.host: wakegate created it */
    char template_name[WG_SESSION_TEMPLATE_MAX + 1]; /* label wakegate.template */
    bool has_stop, has_pause; /* labels wakegate.idle.stop_after / pause_after */
    uint64_t stop_ms, pause_ms;
};

/* A round in progress: the container list, until the records arrive. */
struct round {
    struct wg_orch *o;
    struct seen_container *c;
    size_t n;
};

static void recheck_locked(struct orch_task *t, bool held, const char *why);
static void recheck_get(struct orch_recheck *k);
static void recheck_decide(struct orch_recheck *k);
static void recheck_adopt(struct orch_recheck *k);

/* The idle tiers a container's labels set for its session; a bad value is
 * ignored (logged), the configured default then applies. */
static void label_idle(struct wg_orch *o, json_t *labels, struct seen_container *c)
{
    const char *kv[5] = {NULL};
    size_t n = 0;
    char err[160];

    for (int i = 0; i < 2; i++) {
        const char *k = i ? WG_LABEL_IDLE_PAUSE_AFTER : WG_LABEL_IDLE_STOP_AFTER;
        const char *v = json_string_value(json_object_get(labels, k));
        if (v) {
            kv[n++] = k;
            kv[n++] = v;
        }
    }
    if (n && wg_orch_idle_labels(kv, &c->has_stop, &c->stop_ms, &c->has_pause, &c->pause_ms, err,
                                 sizeof(err)) < 0)
        WG_WARN(o->log, ORCH_SUBSYS, "ignoring a bad idle label",
                "session=%s container=%.12s "
                "error=\"%s\"",
                c->session, c->id, err);
}

static uint16_t label_port(json_t *labels)
{
    const char *v = json_string_value(json_object_get(labels, WG_LABEL_PORT));
    unsigned long p;
    char *end;

    if (!v || !*v)
        return 0;
    p = strtoul(v, &end, 10);
    return (*end || p == 0 || p > 65535) ? 0 : (uint16_t)p;
}

/* ---- the recheck kind ---------------------------------------------------------------------- */

void reconcile_next(struct wg_orch *o)
{
    while (!o->closing && o->rechecks_running < WG_ORCH_RECHECK_MAX &&
           !wg_list_empty(&o->recheck_q)) {
        struct orch_task *t = wg_container_of(o->recheck_q.next, struct orch_task, qlink);
        struct orch_recheck *k = orch_recheck_of(t);

        orch_task_dequeue(t);
        k->slot = true;
        o->rechecks_running++;
        t->phase = PH_WORK;
        if (k->adopt)
            recheck_adopt(k);
        else
            orch_task_lock(t, recheck_locked);
    }
}

static void recheck_begin(struct orch_task *t)
{
    wg_list_push_back(&t->o->recheck_q, &t->qlink);
    t->in_queue = true;
    reconcile_next(t->o);
}

/* Leaves its reconcile slot and round (the last one of a round ends it). */
static void recheck_release(struct orch_recheck *k)
{
    struct wg_orch *o = k->t.o;

    if (k->slot) {
        k->slot = false;
        o->rechecks_running--;
    }
    if (k->round) {
        k->round = false;
        if (--o->round_left == 0 && !o->closing)
            orch_reconciled(o);
    }
}

static void recheck_cancel(struct orch_task *t)
{
    orch_task_dequeue(t);
    recheck_release(orch_recheck_of(t));
}

const struct orch_task_ops orch_recheck_ops = {
    .name = "recheck",
    .size = sizeof(struct orch_recheck),
    .start = recheck_begin,
    .cancel = recheck_cancel,
};

static struct orch_recheck *recheck_new(struct wg_orch *o, const char *id)
{
    struct orch_task *t = orch_task_new(o, &orch_recheck_ops, id);

    return t ? orch_recheck_of(t) : NULL;
}

void reconcile_recheck(struct wg_orch *o, const char *id, const char *container, bool startup)
{
    struct orch_recheck *k;

    if (o->closing || orch_session_live(o, id))
        return;
    k = recheck_new(o, id);
    if (!k)
        return;
    snprintf(k->hint, sizeof(k->hint), "%s", container ? container : "");
    k->startup = startup;
    orch_task_begin(&k->t);
}

/* ---- adoption ------------------------------------------------------------------------------ */

static void on_adopt_created(const struct wg_store_res *res, void *arg)
{
    struct orch_recheck *k = arg;
    struct wg_orch *o = k->t.o;

    if (orch_task_returned(&k->t))
        return;
    if (res->status == 0) {
        o->st.adopted++;
        WG_INFO(o->log, ORCH_SUBSYS, "adopting a labelled container that had no record",
                "session=%s container=%.12s image=%s port=%u", k->t.id, k->hint, k->adopt_image,
                (unsigned)k->adopt_port);
        orch_event(o, k->t.id, "reconcile",
                   "{\"action\":\"adopt\",\"why\":\"a container labelled wakegate.session had no "
                   "record\"}");
    } else if (res->status == WG_STORE_EXISTS) {
        if (!res->rec || strcmp(res->rec->host, o->name) != 0) {
            /* A record appeared since the round read them: judge it now. */
            char host[WG_SESSION_HOST_MAX + 1], tmpl[WG_SESSION_TEMPLATE_MAX + 1];
            snprintf(host, sizeof(host), "%s", res->rec ? res->rec->host : "");
            snprintf(tmpl, sizeof(tmpl), "%s", res->rec ? res->rec->template_name : "");
            orch_task_finish(&k->t);
            if (host[0])
                stale_remove(o, k->t.id, k->hint, host, tmpl,
                             "the session lives on another host now");
            else
                WG_WARN(o->log, ORCH_SUBSYS,
                        "labelled container of a session whose record names no host, leaving it",
                        "session=%s container=%.12s", k->t.id, k->hint);
            return;
        }
    } else {
        WG_WARN(o->log, ORCH_SUBSYS, "cannot adopt the labelled container, will try again",
                "session=%s container=%.12s error=\"%s\"", k->t.id, k->hint, res->error);
        orch_task_finish(&k->t);
        return;
    }
    k->adopt = false;
    k->adopted = true;
    orch_task_lock(&k->t, recheck_locked);
}

/* The record of a labelled container without one: this host, its image,
 * port and idle labels. */
static void recheck_adopt(struct orch_recheck *k)
{
    struct wg_orch *o = k->t.o;
    struct wg_session_update u = {0};
    char detail[160];

    u.set = WG_SF_HOST | WG_SF_IMAGE | WG_SF_PORT | WG_SF_CONTAINER_ID;
    u.host = o->name;
    u.image = k->adopt_image[0] ? k->adopt_image : o->cfg->sessions.image;
    u.port = k->adopt_port;
    u.container_id = k->hint;
    if (k->adopt_has_stop) {
        u.set |= WG_SF_IDLE_STOP_AFTER;
        u.has_idle_stop_after = true;
        u.idle_stop_after_ms = k->adopt_stop_ms;
    }
    if (k->adopt_has_pause) {
        u.set |= WG_SF_IDLE_PAUSE_AFTER;
        u.has_idle_pause_after = true;
        u.idle_pause_after_ms = k->adopt_pause_ms;
    }
    snprintf(detail, sizeof(detail), "{\"reason\":\"adopt\",\"container\":\"%s\"}", k->hint);
    orch_task_call(&k->t);
    if (wg_store_create(o->store, k->t.id, &u, detail, on_adopt_created, k) < 0) {
        orch_task_returned(&k->t);
        WG_WARN(o->log, ORCH_SUBSYS, "cannot adopt the labelled container: bad fields",
                "session=%s container=%.12s", k->t.id, k->hint);
        orch_task_finish(&k->t);
    }
}

/* ---- rechecks ------------------------------------------------------------------------------ */

static void recheck_locked(struct orch_task *t, bool held, const char *why)
{
    if (!held) {
        WG_DEBUG(t->o->log, ORCH_SUBSYS, "session locked, skipping its recheck",
                 "session=%s why=\"%s\"", t->id, why);
        orch_task_finish(t);
        return;
    }
    recheck_get(orch_recheck_of(t));
}

static void on_recheck_inspect(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_recheck *k = arg;
    struct wg_orch *o = k->t.o;

    if (orch_task_returned(&k->t))
        return;
    memset(&k->seen, 0, sizeof(k->seen));
    if (status == 0) {
        const struct wg_docker_container *c = r->container;
        const char *lab = json_string_value(json_object_get(c->labels, WG_LABEL_SESSION));
        if (lab && strcmp(lab, k->t.id) == 0) {
            k->seen.found = true;
            snprintf(k->seen.id, sizeof(k->seen.id), "%s", c->id);
            snprintf(k->seen.status, sizeof(k->seen.status), "%s", c->status);
            snprintf(k->seen.ip, sizeof(k->seen.ip), "%s", c->ip ? c->ip : "");
            k->seen.exit_code = c->exit_code;
            k->seen.oom = c->oom_killed;
            k->seen.started_ms = c->started_ms;
            k->seen.finished_ms = c->finished_ms;
        }
    } else if (status != WG_DOCKER_ENOTFOUND) {
        orch_docker_error(o, status);
        WG_WARN(o->log, ORCH_SUBSYS, "cannot inspect the session's container, recheck later",
                "session=%s container=%.12s docker=\"%s\"", k->t.id, k->hint, r->error);
        orch_task_finish(&k->t);
        return;
    }
    recheck_decide(k);
}

static void on_recheck_list(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_recheck *k = arg;
    const struct wg_docker_summary *best = NULL;

    if (orch_task_returned(&k->t))
        return;
    if (status != 0) {
        orch_docker_error(k->t.o, status);
        orch_task_finish(&k->t);
        return;
    }
    for (size_t i = 0; i < r->n_containers; i++) {
        const struct wg_docker_summary *s = &r->containers[i];
        if (!best || wg_orch_docker_state_of(s->state) == WG_ORCH_DOCKER_RUNNING)
            best = s;
    }
    if (!best) {
        memset(&k->seen, 0, sizeof(k->seen));
        recheck_decide(k);
        return;
    }
    snprintf(k->hint, sizeof(k->hint), "%s", best->id);
    orch_task_call(&k->t);
    if (wg_docker_inspect(k->t.o->docker, k->hint, on_recheck_inspect, k) < 0) {
        orch_task_returned(&k->t);
        orch_task_finish(&k->t);
    }
}

static void on_recheck_get(const struct wg_store_res *res, void *arg)
{
    struct orch_recheck *k = arg;
    struct wg_orch *o = k->t.o;
    char label[WG_SESSION_ID_MAX + 32];
    int rc;

    if (orch_task_returned(&k->t))
        return;
    if (res->status != 0) {
        if (res->status != -ENOENT)
            WG_WARN(o->log, ORCH_SUBSYS, "cannot read the session for a recheck",
                    "session=%s error=\"%s\"", k->t.id, res->error);
        orch_task_finish(&k->t);
        return;
    }
    if (!orch_task_keep_rec(&k->t, res->rec)) {
        orch_task_finish(&k->t);
        return;
    }
    if (strcmp(k->t.rec.host, o->name) != 0) {
        /* A record homed elsewhere is never moved from here; a container
         * of it that runs here (started by hand, say) is stale. */
        char host[WG_SESSION_HOST_MAX + 1], tmpl[WG_SESSION_TEMPLATE_MAX + 1];
        char hint[WG_SESSION_CONTAINER_ID_MAX + 1];
        WG_DEBUG(o->log, ORCH_SUBSYS, "recheck of a session homed on another host, not touching it",
                 "session=%s host=%s container=%.12s", k->t.id,
                 k->t.rec.host[0] ? k->t.rec.host : "-", k->hint[0] ? k->hint : "-");
        snprintf(host, sizeof(host), "%s", k->t.rec.host);
        snprintf(tmpl, sizeof(tmpl), "%s", k->t.rec.template_name);
        snprintf(hint, sizeof(hint), "%s", k->hint);
        orch_task_finish(&k->t);
        if (host[0] && hint[0])
            stale_remove(o, k->t.id, hint, host, tmpl,
                         "started while the session lives on another host");
        return;
    }
    if (!k->hint[0])
        snprintf(k->hint, sizeof(k->hint), "%s", k->t.rec.container_id);
    orch_task_call(&k->t);
    if (k->hint[0]) {
        rc = wg_docker_inspect(o->docker, k->hint, on_recheck_inspect, k);
    } else {
        /* No id anywhere: look for a container labelled for this session. */
        snprintf(label, sizeof(label), "%s=%s", WG_LABEL_SESSION, k->t.id);
        rc = wg_docker_list(o->docker, label, on_recheck_list, k);
    }
    if (rc < 0) {
        orch_task_returned(&k->t);
        WG_WARN(o->log, ORCH_SUBSYS, "cannot send the docker call of a recheck",
                "session=%s container=%.12s error=%s", k->t.id, k->hint, strerror(-rc));
        orch_task_finish(&k->t);
    }
}

static void recheck_get(struct orch_recheck *k)
{
    orch_task_call(&k->t);
    if (wg_store_get(k->t.o->store, k->t.id, on_recheck_get, k) < 0) {
        orch_task_returned(&k->t);
        orch_task_finish(&k->t);
    }
}

static void on_fix_applied(const struct wg_store_res *res, void *arg)
{
    struct orch_recheck *k = arg;

    if (orch_task_returned(&k->t))
        return;
    if (res->status != 0)
        WG_WARN(k->t.o->log, ORCH_SUBSYS, "correction not applied",
                "session=%s state=%s error=\"%s\"", k->t.id,
                res->rec ? wg_session_state_name(res->rec->state) : "-",
                res->error[0] ? res->error : "the state changed meanwhile");
    orch_task_finish(&k->t);
}

static void fix_event(struct orch_recheck *k, const struct wg_orch_fix *f,
                      enum wg_orch_docker_state ds)
{
    json_t *d = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "action", wg_orch_fix_name(f->kind),
                          "was", wg_session_state_name(k->t.rec.state), "to",
                          wg_session_state_name(f->to), "docker", wg_orch_docker_state_name(ds),
                          "container", k->seen.found ? k->seen.id : "", "why", f->why);
    char *text = d ? json_dumps(d, JSON_COMPACT) : NULL;

    orch_event(k->t.o, k->t.id, "reconcile", text);
    free(text);
    json_decref(d);
}

static void on_stuck_stopped(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_recheck *k = arg;
    struct wg_session_update u = {.set = WG_SF_IP, .ip = NULL};

    if (orch_task_returned(&k->t))
        return;
    if (status != 0 && status != WG_DOCKER_ENOTFOUND) {
        orch_docker_error(k->t.o, status);
        WG_WARN(k->t.o->log, ORCH_SUBSYS, "cannot stop the container of a stuck session",
                "session=%s container=%.12s docker=\"%s\"", k->t.id, k->seen.id, r->error);
        orch_task_finish(&k->t);
        return;
    }
    orch_task_call(&k->t);
    orch_task_fence(&k->t, &u);
    if (wg_store_transition(
            k->t.o->store, k->t.id, WG_SESSION_BIT(WG_SESSION_STOPPING), WG_SESSION_ASLEEP, &u,
            "{\"reason\":\"reconcile\",\"why\":\"stopping stuck\"}", on_fix_applied, k) < 0) {
        orch_task_returned(&k->t);
        orch_task_finish(&k->t);
    }
}

/* A session's deadlines as its tasks keep them: the wake timeout of
 * sessions: (the waker's, for every template) and its template's save
 * timeout (the sleeper's), so a long save of a template with a long
 * save.timeout is not taken for stuck. */
static void template_deadlines(const struct wg_orch *o, const struct wg_sessions_cfg *t,
                               struct wg_orch_deadlines *dl)
{
    dl->wake_timeout_ms = o->cfg->sessions.wake_timeout_ms;
    dl->save_timeout_ms = t->save.timeout_ms;
}

/* What the recheck saw, as wg_orch_reconcile_decide() takes it. */
static void recheck_observe(const struct orch_recheck *k, enum wg_orch_docker_state ds,
                            struct wg_orch_observed *ob)
{
    const struct wg_orch *o = k->t.o;
    const struct wg_session *rec = &k->t.rec;
    struct wg_orch_deadlines dl;
    uint64_t after;

    template_deadlines(o, orch_template(o, rec), &dl);
    after = wg_orch_stuck_after_ms(rec->state, &dl);
    int64_t age = orch_now_ms(o) - rec->state_since;

    memset(ob, 0, sizeof(*ob));
    ob->state = rec->state;
    /* At startup no actor of this process works on anything yet: every
     * transient state is orphaned, except creating (the admin API, maybe
     * in another process, may be mid-create). */
    ob->stuck = wg_session_state_transient(rec->state) &&
                ((k->startup && rec->state != WG_SESSION_CREATING) || k->adopted ||
                 (after && age >= 0 && (uint64_t)age > after));
    ob->record_has_container = rec->container_id[0] != '\0';
    ob->same_container = k->seen.found && strcmp(rec->container_id, k->seen.id) == 0;
    ob->ip_differs = ds == WG_ORCH_DOCKER_RUNNING && strcmp(rec->ip, k->seen.ip) != 0;
    ob->docker = ds;
    ob->clean_exit = !k->seen.oom && (k->seen.exit_code == 0 || k->seen.exit_code == 137 ||
                                      k->seen.exit_code == 143);
}

/* The record fields a correction writes; err is the buffer of the error
 * text of a move to failed. */
static void fix_fields(const struct orch_recheck *k, const struct wg_orch_fix *f,
                       enum wg_orch_docker_state ds, struct wg_session_update *u, char *err,
                       size_t errlen)
{
    if (f->clear_container) {
        u->set |= WG_SF_CONTAINER_ID | WG_SF_IP;
        u->container_id = NULL;
        u->ip = NULL;
    }
    if (f->set_container && k->seen.found) {
        u->set |= WG_SF_CONTAINER_ID;
        u->container_id = k->seen.id;
        if (ds == WG_ORCH_DOCKER_RUNNING || ds == WG_ORCH_DOCKER_PAUSED) {
            u->set |= WG_SF_IP;
            u->ip = k->seen.ip;
            if (!k->t.rec.port) {
                u->set |= WG_SF_PORT;
                u->port = (uint16_t)k->t.o->cfg->sessions.port;
            }
        }
    }
    if (f->kind != WG_ORCH_FIX_MOVE)
        return;
    if (f->to == WG_SESSION_ASLEEP || f->to == WG_SESSION_FAILED) {
        u->set |= WG_SF_IP;
        u->ip = NULL;
    }
    if (f->to == WG_SESSION_FAILED) {
        snprintf(err, errlen, "reconcile: %s (exit code %d%s)", f->why, k->seen.exit_code,
                 k->seen.oom ? ", OOM-killed" : "");
        u->set |= WG_SF_ERROR;
        u->error = err;
    }
    if (f->to == WG_SESSION_RUNNING) {
        u->set |= WG_SF_ERROR;
        u->error = NULL;
    }
}

/* An update or a move, as one compare-and-set from the state read. */
static void fix_apply(struct orch_recheck *k, const struct wg_orch_fix *f,
                      enum wg_orch_docker_state ds)
{
    struct wg_orch *o = k->t.o;
    const enum wg_session_state st = k->t.rec.state;
    struct wg_session_update u = {0};
    char detail[512], err[WG_SESSION_ERROR_MAX + 1];
    int rc;

    fix_fields(k, f, ds, &u, err, sizeof(err));
    snprintf(detail, sizeof(detail),
             "{\"reason\":\"reconcile\",\"docker\":\"%s\",\"exit_code\":%d}",
             wg_orch_docker_state_name(ds), k->seen.found ? k->seen.exit_code : -1);
    orch_task_call(&k->t);
    orch_task_fence(&k->t, &u);
    if (f->kind == WG_ORCH_FIX_UPDATE)
        rc = wg_store_update(o->store, k->t.id, WG_SESSION_BIT(st), &u, on_fix_applied, k);
    else
        rc = wg_store_transition(o->store, k->t.id, WG_SESSION_BIT(st), f->to, &u, detail,
                                 on_fix_applied, k);
    if (rc < 0) {
        orch_task_returned(&k->t);
        WG_WARN(o->log, ORCH_SUBSYS, "cannot send the correction", "session=%s error=%s", k->t.id,
                strerror(-rc));
        orch_task_finish(&k->t);
    }
}

static void recheck_decide(struct orch_recheck *k)
{
    struct wg_orch *o = k->t.o;
    const enum wg_session_state st = k->t.rec.state;
    enum wg_orch_docker_state ds =
        k->seen.found ? wg_orch_docker_state_of(k->seen.status) : WG_ORCH_DOCKER_MISSING;
    struct wg_orch_observed ob;
    struct wg_orch_fix f;

    recheck_observe(k, ds, &ob);
    wg_orch_reconcile_decide(&ob, &f);
    if (f.kind == WG_ORCH_FIX_NONE) {
        WG_DEBUG(o->log, ORCH_SUBSYS, "session agrees with Docker", "session=%s state=%s docker=%s",
                 k->t.id, wg_session_state_name(st), wg_orch_docker_state_name(ds));
        orch_task_finish(&k->t);
        return;
    }
    o->st.corrections++;
    WG_INFO(o->log, ORCH_SUBSYS, "reconciling session with Docker",
            "session=%s state=%s docker=%s container=%.12s action=%s to=%s why=\"%s\"", k->t.id,
            wg_session_state_name(st), wg_orch_docker_state_name(ds),
            k->seen.found ? k->seen.id : (k->t.rec.container_id[0] ? k->t.rec.container_id : "-"),
            wg_orch_fix_name(f.kind), wg_session_state_name(f.to), f.why);
    fix_event(k, &f, ds);
    switch (f.kind) {
    case WG_ORCH_FIX_RESUME:
        if (k->seen.found)
            snprintf(k->t.rec.container_id, sizeof(k->t.rec.container_id), "%s", k->seen.id);
        recheck_release(k);
        /* A stuck start whose container is not up fails now (the deadline
         * passed); otherwise the wake gets a fresh deadline. The wake takes
         * this task's lock and ends it. */
        waker_take_over(&k->t, k->startup || ds == WG_ORCH_DOCKER_RUNNING ||
                                   ds == WG_ORCH_DOCKER_PAUSED || st == WG_SESSION_FAILED);
        return;
    case WG_ORCH_FIX_STOP:
        orch_mark(o, k->seen.id, false, false, true);
        orch_task_call(&k->t);
        if (wg_docker_stop(o->docker, k->seen.id, 10, on_stuck_stopped, k) < 0) {
            orch_task_returned(&k->t);
            orch_task_finish(&k->t);
        }
        return;
    default:
        fix_apply(k, &f, ds);
        return;
    }
}

/* ---- rounds -----------------------------------------------------------------------------------
 */

static struct seen_container *best_for(struct round *rd, const char *id, const char *prefer)
{
    struct seen_container *best = NULL;

    for (size_t i = 0; i < rd->n; i++) {
        struct seen_container *c = &rd->c[i];
        if (strcmp(c->session, id) != 0)
            continue;
        if (prefer && prefer[0] && strcmp(c->id, prefer) == 0)
            return c;
        if (!best || (c->state == WG_ORCH_DOCKER_RUNNING && best->state != WG_ORCH_DOCKER_RUNNING))
            best = c;
    }
    return best;
}

static void round_task(struct wg_orch *o, const char *id, const struct seen_container *c,
                       bool adopt)
{
    struct orch_recheck *k = recheck_new(o, id);

    if (!k)
        return;
    if (c)
        snprintf(k->hint, sizeof(k->hint), "%s", c->id);
    k->startup = !o->reconciled || o->orphan_transients;
    k->adopt = adopt;
    if (adopt) {
        snprintf(k->adopt_image, sizeof(k->adopt_image), "%s", c->image);
        k->adopt_port = c->port ? c->port : (uint16_t)o->cfg->sessions.port;
        k->adopt_has_stop = c->has_stop;
        k->adopt_stop_ms = c->stop_ms;
        k->adopt_has_pause = c->has_pause;
        k->adopt_pause_ms = c->pause_ms;
    }
    k->round = true;
    o->round_left++;
    orch_task_begin(&k->t);
}

static const struct wg_session *round_record_of(const struct wg_store_res *res, const char *id)
{
    size_t lo = 0, hi = res->n_recs;

    while (lo < hi) { /* recs are sorted by id */
        size_t mid = (lo + hi) / 2;
        int c = strcmp(res->recs[mid].id, id);
        if (c == 0)
            return &res->recs[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static void round_end(struct round *rd)
{
    free(rd->c);
    free(rd);
}

static void round_failed(struct wg_orch *o, const char *what, const char *error)
{
    WG_WARN(o->log, ORCH_SUBSYS, "reconciliation failed, retrying at the next tick",
            "step=%s error=\"%s\"", what, error);
    o->reconcile_busy = false;
    o->reconcile_again = true;
}

static void claim_session(struct round *rd, const char *id)
{
    for (size_t k = 0; k < rd->n; k++)
        if (strcmp(rd->c[k].session, id) == 0)
            rd->c[k].claimed = true;
}

/* The records of this host that may disagree with Docker get a recheck.
 * Returns how many records are this host's. */
static unsigned round_records(struct round *rd, const struct wg_store_res *res)
{
    struct wg_orch *o = rd->o;
    unsigned mine = 0;

    for (size_t i = 0; i < res->n_recs; i++) {
        const struct wg_session *rec = &res->recs[i];
        struct seen_container *c;
        struct wg_orch_observed ob = {0};
        struct wg_orch_fix f;

        if (strcmp(rec->host, o->name) != 0)
            continue;
        mine++;
        c = best_for(rd, rec->id, rec->container_id);
        claim_session(rd, rec->id);
        if (orch_session_live(o, rec->id))
            continue; /* its actor is at work */
        /* A first look from the lists; the recheck decides again from an
         * inspect under the lock. Sessions that agree are left alone. */
        ob.state = rec->state;
        ob.stuck = wg_session_state_transient(rec->state);
        ob.record_has_container = rec->container_id[0] != '\0';
        ob.same_container = c && strcmp(c->id, rec->container_id) == 0;
        ob.docker = c ? c->state : WG_ORCH_DOCKER_MISSING;
        ob.clean_exit = true;
        wg_orch_reconcile_decide(&ob, &f);
        if (f.kind == WG_ORCH_FIX_NONE &&
            !(ob.docker == WG_ORCH_DOCKER_RUNNING && rec->state == WG_SESSION_RUNNING))
            continue;
        round_task(o, rec->id, c, false);
    }
    return mine;
}

/* Labelled containers that no record of this host claimed: stale ones
 * (their session lives elsewhere, or was destroyed while this host was
 * lost) are saved and removed, each; the others are adopted (one per
 * session: the running one first), or left (stale.h has the rule). */
static void round_orphans(struct round *rd, const struct wg_store_res *res)
{
    struct wg_orch *o = rd->o;

    for (size_t k = 0; k < rd->n; k++) {
        struct seen_container *c = &rd->c[k];
        const struct wg_session *rec;
        const char *why = "";
        if (c->claimed)
            continue;
        if (!wg_session_id_valid(c->session, strlen(c->session))) {
            WG_WARN(o->log, ORCH_SUBSYS,
                    "container labelled with an invalid session id, ignoring it", "container=%.12s",
                    c->id);
            continue;
        }
        rec = round_record_of(res, c->session);
        struct wg_stale_in in = {.has_record = rec != NULL,
                                 .record_host = rec ? rec->host : "",
                                 .me = o->name,
                                 .made_here = c->made_here,
                                 .lost = o->lost};
        switch (wg_stale_decide(&in, &why)) {
        case WG_STALE_REMOVE:
            stale_remove(o, c->session, c->id, in.record_host,
                         rec ? rec->template_name : c->template_name, why);
            continue;
        case WG_STALE_LEAVE:
            WG_INFO(o->log, ORCH_SUBSYS, "leaving a labelled container for now",
                    "session=%s container=%.12s why=\"%s\"", c->session, c->id, why);
            if (o->lost == WG_STALE_LOST_UNKNOWN)
                o->reconcile_again = true;
            continue;
        case WG_STALE_OURS: /* a record of ours claims every container of its session */
            continue;
        case WG_STALE_ADOPT:
            break;
        }
        c = best_for(rd, c->session, NULL);
        claim_session(rd, c->session);
        if (!orch_session_live(o, c->session))
            round_task(o, c->session, c, true);
    }
}

static void on_round_records(const struct wg_store_res *res, void *arg)
{
    struct round *rd = arg;
    struct wg_orch *o = rd->o;
    unsigned mine;

    if (o->closing) {
        round_end(rd);
        return;
    }
    if (res->status != 0) {
        round_failed(o, "list records", res->error);
        round_end(rd);
        return;
    }
    o->round_left++; /* held while the tasks are made */
    mine = round_records(rd, res);
    round_orphans(rd, res);
    WG_INFO(o->log, ORCH_SUBSYS, "reconciling with Docker",
            "containers=%zu records=%zu records_here=%u garbled=%zu checks=%u", rd->n, res->n_recs,
            mine, res->n_bad, o->round_left - 1);
    round_end(rd);
    if (--o->round_left == 0)
        orch_reconciled(o);
}

static void on_round_containers(int status, const struct wg_docker_reply *r, void *arg)
{
    struct round *rd = arg;
    struct wg_orch *o = rd->o;

    if (o->closing) {
        round_end(rd);
        return;
    }
    if (status != 0) {
        orch_docker_error(o, status);
        round_failed(o, "docker list", r->error);
        round_end(rd);
        return;
    }
    rd->c = calloc(r->n_containers ? r->n_containers : 1, sizeof(*rd->c));
    if (!rd->c) {
        round_failed(o, "docker list", "out of memory");
        round_end(rd);
        return;
    }
    for (size_t i = 0; i < r->n_containers; i++) {
        const struct wg_docker_summary *s = &r->containers[i];
        const char *sess = json_string_value(json_object_get(s->labels, WG_LABEL_SESSION));
        struct seen_container *c = &rd->c[rd->n];
        if (!sess || strlen(sess) > WG_SESSION_ID_MAX ||
            strlen(s->id) > WG_SESSION_CONTAINER_ID_MAX)
            continue;
        snprintf(c->id, sizeof(c->id), "%s", s->id);
        snprintf(c->session, sizeof(c->session), "%s", sess);
        if (strlen(s->image) <= WG_SESSION_IMAGE_MAX)
            snprintf(c->image, sizeof(c->image), "%s", s->image);
        c->state = wg_orch_docker_state_of(s->state);
        c->port = label_port(s->labels);
        c->made_here = json_object_get(s->labels, WG_LABEL_HOST) != NULL;
        snprintf(c->template_name, sizeof(c->template_name), "%s",
                 json_string_value(json_object_get(s->labels, WG_LABEL_TEMPLATE))
                     ? json_string_value(json_object_get(s->labels, WG_LABEL_TEMPLATE))
                     : "");
        label_idle(o, s->labels, c);
        rd->n++;
    }
    if (wg_store_list(o->store, on_round_records, rd) < 0) {
        round_failed(o, "list records", "cannot send");
        round_end(rd);
    }
}

void reconcile_round(struct wg_orch *o)
{
    struct round *rd;

    if (o->closing)
        return;
    if (o->reconcile_busy) {
        o->reconcile_again = true;
        return;
    }
    rd = calloc(1, sizeof(*rd));
    if (!rd)
        return;
    rd->o = o;
    o->reconcile_busy = true;
    o->reconcile_again = false;
    if (wg_docker_list(o->docker, NULL, on_round_containers, rd) < 0) {
        round_failed(o, "docker list", "cannot send");
        round_end(rd);
    }
}

/* ---- stuck states ------------------------------------------------------------------------- */

/* One candidate's record: is it still stuck, and ours? */
static void on_scan_record(const struct wg_store_res *res, void *arg)
{
    struct wg_orch *o = arg;
    struct wg_orch_deadlines dl;

    if (--o->scan_pending == 0)
        o->scan_busy = false;
    if (o->closing || res->status != 0 || res->rec == NULL)
        return;
    const struct wg_session *rec = res->rec;
    template_deadlines(o, orch_template(o, rec), &dl);
    uint64_t after = wg_orch_stuck_after_ms(rec->state, &dl);
    int64_t age = orch_now_ms(o) - rec->state_since;

    if (!after || strcmp(rec->host, o->name) != 0 || age < 0 || (uint64_t)age <= after)
        return;
    if (orch_session_live(o, rec->id))
        return;
    WG_WARN(o->log, ORCH_SUBSYS, "session stuck in a transient state, rechecking it",
            "session=%s state=%s for_ms=%" PRId64 " limit_ms=%" PRIu64, rec->id,
            wg_session_state_name(rec->state), age, after);
    reconcile_recheck(o, rec->id, rec->container_id, false);
    if (o->scan_pending == 0 && o->reconcile_again && !o->reconcile_busy)
        reconcile_round(o);
}

/* The sessions in a transient state for longer than the shortest deadline
 * (from wg:transient, never every record); each is read and judged. */
static void on_scan(const struct wg_store_res *res, void *arg)
{
    struct wg_orch *o = arg;

    o->scan_busy = false;
    if (o->closing)
        return;
    if (res->status != 0) {
        WG_DEBUG(o->log, ORCH_SUBSYS, "stuck-state scan failed", "error=\"%s\"", res->error);
        return;
    }
    for (size_t i = 0; i < res->n_idle; i++) {
        if (orch_session_live(o, res->idle[i].id))
            continue;
        if (wg_store_get(o->store, res->idle[i].id, on_scan_record, o) == 0) {
            o->scan_pending++;
            o->scan_busy = true;
        }
    }
    if (o->scan_pending == 0 && o->reconcile_again && !o->reconcile_busy)
        reconcile_round(o);
}

void reconcile_scan_stuck(struct wg_orch *o)
{
    static const enum wg_session_state transient[] = {
        WG_SESSION_CREATING, WG_SESSION_STARTING, WG_SESSION_DRAINING,
        WG_SESSION_SAVING,   WG_SESSION_STOPPING,
    };
    struct wg_orch_deadlines dl;
    uint64_t shortest = UINT64_MAX;

    if (o->scan_busy || o->closing)
        return;
    /* The range read takes every session stuck past the shortest deadline
     * of any template; each candidate is then judged by its own. */
    for (size_t k = 0; k <= o->cfg->templates_len; k++) {
        template_deadlines(o, k == 0 ? &o->cfg->sessions : &o->cfg->templates[k - 1], &dl);
        for (size_t i = 0; i < sizeof(transient) / sizeof(transient[0]); i++) {
            uint64_t after = wg_orch_stuck_after_ms(transient[i], &dl);
            if (after && after < shortest)
                shortest = after;
        }
    }
    if (shortest == UINT64_MAX)
        return;
    if (wg_store_range_transient(o->store, orch_now_ms(o) - (int64_t)shortest, 0,
                                 WG_STORE_BATCH_MAX, on_scan, o) == 0)
        o->scan_busy = true;
}
