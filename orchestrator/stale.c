/* orchestrator/stale.c - a returning host's stale containers (see stale.h):
 * the verdict of a reconcile round, the task that saves and removes one
 * (struct orch_stale), and the check, before the first heartbeat after a
 * gap, of whether this host was marked lost meanwhile.
 *
 * The task takes no lock and writes no record field: the record belongs to
 * the session's live host, which may be waking it now. It inspects the
 * container; a running one (a paused one is unpaused first) runs the
 * template's save hook with WAKEGATE_SAVE_REF set to a side ref, so the
 * built-in hook pushes there and never over the live container's newer
 * work; then the container is removed by force, whatever the save gave.
 * The outcome is one `stale_removed` event on the session (or
 * `stale_remove_failed`, and the next tick reconciles again). A container
 * that does not run is removed without a save: starting it would run the
 * stale app beside the live one. */
#include "orchestrator/orch_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "common/buf.h"
#include "common/redis.h"
#include "common/store.h"
#include "orchestrator/stale.h"

#define STALE_ARGV_MAX 72
#define STALE_EXEC_SLACK_MS 10000 /* the exec call's bound beyond the hook's own timeout */
#define STALE_OUTPUT_MAX 512      /* of the hook's output in the event */
#define STALE_REF_MAX 200

/* ---- the pure decisions -------------------------------------------------------------------- */

enum wg_stale_verdict wg_stale_decide(const struct wg_stale_in *in, const char **why)
{
    if (in->has_record) {
        if (!in->record_host || !in->record_host[0]) {
            *why = "its record names no host yet";
            return WG_STALE_LEAVE;
        }
        if (strcmp(in->record_host, in->me) == 0) {
            *why = "its record is this host's";
            return WG_STALE_OURS;
        }
        *why = "the session lives on another host now";
        return WG_STALE_REMOVE;
    }
    if (!in->made_here) {
        *why = "a container labelled wakegate.session had no record";
        return WG_STALE_ADOPT;
    }
    switch (in->lost) {
    case WG_STALE_LOST_NO:
        *why = "a container wakegate made had no record (Redis lost it)";
        return WG_STALE_ADOPT;
    case WG_STALE_LOST_YES:
        *why = "the session was destroyed while this host was lost";
        return WG_STALE_REMOVE;
    default:
        *why = "whether this host was lost is not known yet";
        return WG_STALE_LEAVE;
    }
}

int wg_stale_ref(char *out, size_t len, const char *session, const char *host, int64_t ms)
{
    char safe[WG_SESSION_HOST_MAX + 1];
    size_t n = 0;
    int w;

    for (const char *p = host; *p && n < sizeof(safe) - 1; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-';
        safe[n++] = ok ? c : '-';
    }
    safe[n] = '\0';
    w = snprintf(out, len, "refs/heads/wakegate/stale/%s/%s-%" PRId64, session, safe, ms);
    return w < 0 || (size_t)w >= len ? -ENOSPC : w;
}

/* ---- the task ------------------------------------------------------------------------------ */

struct orch_stale {
    struct orch_task t;
    char container[WG_SESSION_CONTAINER_ID_MAX + 1];
    char record_host[WG_SESSION_HOST_MAX + 1]; /* "" when there is no record */
    char template_name[WG_SESSION_TEMPLATE_MAX + 1];
    char why[96];
    char docker[16]; /* the state the inspect saw */
    char ref[STALE_REF_MAX];
    bool saved;            /* the hook ran */
    uint64_t save_started; /* uv_hrtime() */
    struct {
        bool ok, timeout;
        int exit_code;
        char commit[WG_SESSION_COMMIT_MAX + 1];
        char output[WG_SESSION_OUTPUT_MAX + 1];
        char error[160];
    } save;
};

static struct orch_stale *stale_of(struct orch_task *t)
{
    return (struct orch_stale *)t;
}

static void stale_save(struct orch_stale *st);
static void stale_remove_now(struct orch_stale *st);

static const struct wg_sessions_cfg *stale_template(const struct orch_stale *st)
{
    const struct wg_sessions_cfg *t = wg_config_template(st->t.o->cfg, st->template_name);

    return t ? t : &st->t.o->cfg->sessions;
}

static void on_stale_event(const struct wg_store_res *res, void *arg)
{
    (void)res;
    (void)arg;
}

/* The event: what was found, what the save gave, whether it is gone. */
static void stale_event(struct orch_stale *st, const char *type, bool removed,
                        const char *remove_error)
{
    struct wg_orch *o = st->t.o;
    json_t *d = json_object(), *save = NULL;
    char *text = NULL;

    if (!d)
        return;
    json_object_set_new(d, "host", json_string(o->name));
    json_object_set_new(d, "container", json_string(st->container));
    json_object_set_new(d, "record_host",
                        st->record_host[0] ? json_string(st->record_host) : json_null());
    json_object_set_new(d, "why", json_string(st->why));
    json_object_set_new(d, "docker", json_string(st->docker[0] ? st->docker : "missing"));
    if (st->saved) {
        const char *out = st->save.output;
        size_t olen = strlen(out);
        if (olen > STALE_OUTPUT_MAX)
            out += olen - STALE_OUTPUT_MAX;
        save = json_pack("{s:b,s:i,s:s}", "ok", st->save.ok, "exit_code", st->save.exit_code, "ref",
                         st->ref);
        if (save && st->save.commit[0])
            json_object_set_new(save, "commit", json_string(st->save.commit));
        if (save && st->save.timeout)
            json_object_set_new(save, "timeout", json_true());
        if (save && st->save.error[0])
            json_object_set_new(save, "error", json_string(st->save.error));
        if (save && out[0])
            json_object_set_new(save, "output", json_string(out));
    }
    json_object_set_new(d, "save", save ? save : json_null());
    json_object_set_new(d, "removed", json_boolean(removed));
    if (remove_error)
        json_object_set_new(d, "error", json_string(remove_error));
    text = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    if (text && wg_store_event_add(o->store, st->t.id, type, text, on_stale_event, NULL) < 0)
        WG_DEBUG(o->log, ORCH_SUBSYS, "cannot append the stale event", "session=%s", st->t.id);
    free(text);
}

static void on_stale_removed(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_stale *st = arg;
    struct wg_orch *o = st->t.o;

    if (orch_task_returned(&st->t))
        return;
    if (status != 0 && status != WG_DOCKER_ENOTFOUND) {
        orch_docker_error(o, status);
        WG_WARN(o->log, ORCH_SUBSYS, "cannot remove a stale container, trying again",
                "session=%s container=%.12s docker=\"%s\"", st->t.id, st->container, r->error);
        stale_event(st, "stale_remove_failed", false, r->error);
        o->reconcile_again = true; /* the tick's next round finds it again */
        orch_task_finish(&st->t);
        return;
    }
    o->stale_removed++;
    WG_INFO(o->log, ORCH_SUBSYS, "removed a stale container",
            "session=%s container=%.12s record_host=%s docker=%s saved=%s commit=%s ref=%s "
            "why=\"%s\"",
            st->t.id, st->container, st->record_host[0] ? st->record_host : "-", st->docker,
            !st->saved    ? "no"
            : st->save.ok ? "yes"
                          : "failed",
            st->save.commit[0] ? st->save.commit : "-", st->saved ? st->ref : "-", st->why);
    stale_event(st, "stale_removed", true, NULL);
    orch_task_finish(&st->t);
}

static void stale_remove_now(struct orch_stale *st)
{
    struct wg_orch *o = st->t.o;

    orch_mark(o, st->container, false, false, true); /* its die is ours, not a death */
    orch_task_call(&st->t);
    if (wg_docker_remove(o->docker, st->container, true, false, on_stale_removed, st) < 0) {
        orch_task_returned(&st->t);
        WG_WARN(o->log, ORCH_SUBSYS, "cannot send the removal of a stale container",
                "session=%s container=%.12s", st->t.id, st->container);
        o->reconcile_again = true;
        orch_task_finish(&st->t);
    }
}

static void on_stale_saved(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_stale *st = arg;
    struct wg_orch *o = st->t.o;
    const struct wg_sessions_cfg *t;

    if (orch_task_returned(&st->t))
        return;
    t = stale_template(st);
    st->save.exit_code = status == 0 ? r->exit_code : -1;
    wg_orch_save_result(status, st->save.exit_code, (uv_hrtime() - st->save_started) / 1000000,
                        t->save.timeout_ms, &st->save.ok, &st->save.timeout);
    if (r && r->output_len)
        wg_session_clean_text(st->save.output, sizeof(st->save.output), r->output, r->output_len);
    if (status != 0) {
        orch_docker_error(o, status);
        wg_session_clean_text(st->save.error, sizeof(st->save.error), r->error, strlen(r->error));
    }
    if (st->save.ok && r)
        wg_orch_save_commit(r->output ? r->output : "", r->output_len, st->save.commit,
                            sizeof(st->save.commit));
    if (!st->save.ok) {
        /* A failed save keeps the container, as it keeps a live one awake:
         * it holds the only copy of that work. No request reaches it (its
         * session lives elsewhere); the next round saves it again, or an
         * operator removes it. */
        o->stale_save_failed++;
        WG_ERROR(o->log, ORCH_SUBSYS,
                 "the save of a stale container failed: it is kept, running, until a save "
                 "succeeds or it is removed by hand",
                 "session=%s container=%.12s exit_code=%d timeout=%d ref=%s error=\"%s\"", st->t.id,
                 st->container, st->save.exit_code, st->save.timeout, st->ref,
                 st->save.error[0] ? st->save.error : "-");
        stale_event(st, "stale_save_failed", false, NULL);
        orch_task_finish(&st->t);
        return;
    }
    stale_remove_now(st);
}

static void stale_save(struct orch_stale *st)
{
    struct wg_orch *o = st->t.o;
    const struct wg_save_cfg *sc = &stale_template(st)->save;
    const char *argv[STALE_ARGV_MAX];
    char secs[24], when[32], ref_env[STALE_REF_MAX + 32];
    const char *env[] = {ref_env, NULL};
    time_t now = (time_t)(orch_now_ms(o) / 1000);
    struct tm tm;
    int rc;

    gmtime_r(&now, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (wg_stale_ref(st->ref, sizeof(st->ref), st->t.id, o->name, orch_now_ms(o)) < 0 ||
        wg_orch_save_argv((const char *const *)sc->command, sc->path, st->t.id, when,
                          sc->timeout_ms, argv, STALE_ARGV_MAX, secs, sizeof(secs)) < 0) {
        snprintf(st->save.error, sizeof(st->save.error), "the save command is too long");
        st->saved = true;
        st->save.exit_code = -1;
        stale_remove_now(st);
        return;
    }
    snprintf(ref_env, sizeof(ref_env), "WAKEGATE_SAVE_REF=%s", st->ref);
    WG_INFO(o->log, ORCH_SUBSYS, "saving a stale container to a side ref",
            "session=%s container=%.12s record_host=%s ref=%s", st->t.id, st->container,
            st->record_host[0] ? st->record_host : "-", st->ref);
    st->saved = true;
    st->save_started = uv_hrtime();
    orch_task_call(&st->t);
    rc = wg_docker_exec_env(o->docker, st->container, argv, env,
                            (uint32_t)(sc->timeout_ms + STALE_EXEC_SLACK_MS), on_stale_saved, st);
    if (rc < 0) {
        orch_task_returned(&st->t);
        st->save.exit_code = -1;
        snprintf(st->save.error, sizeof(st->save.error), "cannot send the exec: %s", strerror(-rc));
        stale_remove_now(st);
    }
}

static void on_stale_unpaused(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_stale *st = arg;

    if (orch_task_returned(&st->t))
        return;
    if (status != 0) {
        orch_docker_error(st->t.o, status);
        st->saved = true;
        st->save.exit_code = -1;
        snprintf(st->save.error, sizeof(st->save.error), "cannot unpause: %s", r->error);
        stale_remove_now(st);
        return;
    }
    stale_save(st);
}

static void on_stale_inspect(int status, const struct wg_docker_reply *r, void *arg)
{
    struct orch_stale *st = arg;
    struct wg_orch *o = st->t.o;
    const struct wg_docker_container *c = r->container;
    const char *lab;

    if (orch_task_returned(&st->t))
        return;
    if (status == WG_DOCKER_ENOTFOUND) {
        WG_DEBUG(o->log, ORCH_SUBSYS, "stale container already gone", "session=%s container=%.12s",
                 st->t.id, st->container);
        orch_task_finish(&st->t);
        return;
    }
    if (status != 0) {
        orch_docker_error(o, status);
        WG_WARN(o->log, ORCH_SUBSYS, "cannot inspect a stale container, trying again",
                "session=%s container=%.12s docker=\"%s\"", st->t.id, st->container, r->error);
        o->reconcile_again = true;
        orch_task_finish(&st->t);
        return;
    }
    lab = json_string_value(json_object_get(c->labels, WG_LABEL_SESSION));
    if (!lab || strcmp(lab, st->t.id) != 0) {
        orch_task_finish(&st->t); /* another container by now: not this task's */
        return;
    }
    snprintf(st->docker, sizeof(st->docker), "%s", c->status ? c->status : "");
    if (c->paused) {
        orch_task_call(&st->t);
        if (wg_docker_unpause(o->docker, st->container, on_stale_unpaused, st) < 0) {
            orch_task_returned(&st->t);
            stale_remove_now(st);
        }
        return;
    }
    if (c->running) {
        stale_save(st);
        return;
    }
    stale_remove_now(st);
}

static void stale_inspect(struct orch_stale *st)
{
    struct orch_task *t = &st->t;

    orch_task_call(t);
    if (wg_docker_inspect(t->o->docker, st->container, on_stale_inspect, st) < 0) {
        orch_task_returned(t);
        orch_task_finish(t);
    }
}

/* The record as it is now: {host or "", whether that host's heartbeat lives}. */
static const char stale_check_lua[] = "local h = redis.call('HGET', KEYS[1], 'host')\n"
                                      "if not h or h == '' then return {'', 0} end\n"
                                      "return {h, redis.call('EXISTS', ARGV[1] .. h)}\n";

static void on_stale_check(int status, redisReply *reply, void *arg)
{
    struct orch_stale *st = arg;
    struct wg_orch *o = st->t.o;
    const redisReply *host;

    if (orch_task_returned(&st->t))
        return;
    if (status != 0 || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_INTEGER) {
        WG_WARN(o->log, ORCH_SUBSYS, "cannot read a stale container's record, trying again",
                "session=%s container=%.12s", st->t.id, st->container);
        o->reconcile_again = true;
        orch_task_finish(&st->t);
        return;
    }
    host = reply->element[0];
    if (host->len > 0 && strlen(o->name) == host->len &&
        memcmp(host->str, o->name, host->len) == 0) {
        /* Placed back on this host since the round looked: its own again. */
        WG_INFO(o->log, ORCH_SUBSYS, "a stale container's session is this host's again, left",
                "session=%s container=%.12s", st->t.id, st->container);
        orch_task_finish(&st->t);
        return;
    }
    if (host->len > 0 && reply->element[1]->integer == 0) {
        /* Only a live host takes a session from this one: a record naming a
         * host without a heartbeat is more likely this host under an old
         * name (docker.name changed) or two engines mixed up than a move,
         * and removing would lose every container here. */
        WG_WARN(o->log, ORCH_SUBSYS,
                "a container's record names another host that is not live: left alone (was "
                "docker.name changed?)",
                "session=%s container=%.12s record_host=%.*s this_host=%s", st->t.id, st->container,
                (int)host->len, host->str, o->name);
        orch_task_finish(&st->t);
        return;
    }
    stale_inspect(st);
}

static void stale_begin(struct orch_task *t)
{
    struct orch_stale *st = stale_of(t);
    char key[sizeof(WG_STORE_KEY_SESSION_PREFIX) + WG_SESSION_ID_MAX + 1];
    const char *argv[] = {"EVAL", stale_check_lua, "1", key, WG_STORE_KEY_HOST_PREFIX};

    t->phase = PH_WORK;
    snprintf(key, sizeof(key), WG_STORE_KEY_SESSION_PREFIX "%s", t->id);
    orch_task_call(t);
    if (wg_redis_command_argv(t->o->redis, on_stale_check, st, 5, argv, NULL) < 0) {
        orch_task_returned(t);
        t->o->reconcile_again = true;
        orch_task_finish(t);
    }
}

static const struct orch_task_ops orch_stale_ops = {
    .name = "stale",
    .size = sizeof(struct orch_stale),
    .start = stale_begin,
    .cancel = NULL,
};

bool stale_container(struct wg_orch *o, const char *container)
{
    for (struct wg_list *l = o->tasks.next; l != &o->tasks; l = l->next) {
        struct orch_task *x = wg_container_of(l, struct orch_task, link);
        if (x->ops == &orch_stale_ops && !x->finished &&
            strcmp(stale_of(x)->container, container) == 0)
            return true;
    }
    return false;
}

void stale_remove(struct wg_orch *o, const char *id, const char *container, const char *record_host,
                  const char *template_name, const char *why)
{
    struct orch_task *t;
    struct orch_stale *st;

    if (o->closing || !container || !container[0])
        return;
    /* One task per container: a round that finds it again while it is at
     * work leaves it be. */
    if (stale_container(o, container))
        return;
    t = orch_task_new(o, &orch_stale_ops, id);
    if (!t)
        return;
    st = stale_of(t);
    snprintf(st->container, sizeof(st->container), "%s", container);
    snprintf(st->record_host, sizeof(st->record_host), "%s", record_host ? record_host : "");
    snprintf(st->template_name, sizeof(st->template_name), "%s",
             template_name ? template_name : "");
    snprintf(st->why, sizeof(st->why), "%s", why);
    WG_INFO(o->log, ORCH_SUBSYS, "found a stale container: saving and removing it",
            "session=%s container=%.12s record_host=%s why=\"%s\"", id, container,
            st->record_host[0] ? st->record_host : "-", why);
    orch_task_begin(t);
}

/* ---- was this host lost? ------------------------------------------------------------------- */

static void on_lost_check(int status, redisReply *reply, void *arg)
{
    struct wg_orch *o = arg;

    o->lost_check_busy = false;
    if (!o->closing) {
        /* wg:lost_hosts is a sorted set: a score when listed, nil when not. */
        if (status == 0 && reply && reply->type == REDIS_REPLY_STRING) {
            stale_note_lost(o);
        } else if (status == 0 && reply && reply->type == REDIS_REPLY_NIL) {
            o->lost = WG_STALE_LOST_NO;
            o->lost_check_due = false;
        } else if (status == 0 || status == -EIO) {
            /* Not a set we can read: adopt as before rather than hold anything. */
            o->lost = WG_STALE_LOST_NO;
            o->lost_check_due = false;
            WG_WARN(o->log, ORCH_SUBSYS, "cannot read the lost hosts, taking this host as not lost",
                    "key=%s", WG_STORE_KEY_LOST_HOSTS);
        }
    }
    orch_unref(o);
}

void stale_lost_check(struct wg_orch *o)
{
    const char *argv[] = {"ZSCORE", WG_STORE_KEY_LOST_HOSTS, o->name};

    if (!o->lost_check_due || o->lost_check_busy || o->closing)
        return;
    o->refs++; /* the reply may come after wg_orch_free(): it holds o's memory */
    if (wg_redis_command_argv(o->redis, on_lost_check, o, 3, argv, NULL) < 0) {
        o->refs--;
        return;
    }
    o->lost_check_busy = true;
}

void stale_note_lost(struct wg_orch *o)
{
    if (o->lost != WG_STALE_LOST_YES)
        WG_WARN(o->log, ORCH_SUBSYS,
                "this host was marked lost while it was away: containers of sessions "
                "destroyed meanwhile will be saved and removed, not adopted",
                "name=%s", o->name);
    o->lost = WG_STALE_LOST_YES;
    o->lost_check_due = false;
}

void stale_redis_lost(struct wg_orch *o)
{
    o->lost_check_due = true;
    o->lost = WG_STALE_LOST_UNKNOWN;
}

void stale_metrics(const struct wg_orch *o, struct wg_buf *out)
{
    wg_buf_appendf(out,
                   "# HELP wakegate_stale_containers_removed_total Containers of sessions placed "
                   "elsewhere or destroyed while this host was away, saved to a side ref and "
                   "removed.\n"
                   "# TYPE wakegate_stale_containers_removed_total counter\n"
                   "wakegate_stale_containers_removed_total %" PRIu64 "\n"
                   "# HELP wakegate_stale_saves_failed_total Saves of stale containers that "
                   "failed (the container was removed anyway).\n"
                   "# TYPE wakegate_stale_saves_failed_total counter\n"
                   "wakegate_stale_saves_failed_total %" PRIu64 "\n",
                   o->stale_removed, o->stale_save_failed);
}
