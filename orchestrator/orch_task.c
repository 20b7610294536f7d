/* orchestrator/orch_task.c - the task table every kind of task runs in:
 * making tasks (waiting their turn behind the session's other tasks),
 * references and the end of a task, the hand-over of a recheck to a wake,
 * and the session lock (acquire, take back from a previous life, extend,
 * release). orch_int.h describes the task model. */
#include "orchestrator/orch_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOCK_TTL_MIN_MS 5000

/* ---- tasks ------------------------------------------------------------------------------- */

static void task_free(struct orch_task *t)
{
    struct wg_orch *o = t->o;

    wg_session_release(&t->rec);
    free(t);
    orch_unref(o);
}

void orch_task_unref(struct orch_task *t)
{
    if (--t->refs == 0)
        task_free(t);
}

static void task_timer_closed(uv_handle_t *h)
{
    orch_task_unref(h->data);
}

void orch_task_init_timer(struct orch_task *t, uv_timer_t *timer)
{
    uv_timer_init(t->o->loop, timer);
    timer->data = t;
    t->refs++;
}

void orch_task_close_timer(struct orch_task *t, uv_timer_t *timer)
{
    uv_close((uv_handle_t *)timer, task_timer_closed);
}

struct orch_task *orch_task_find(struct wg_orch *o, const char *id, const struct orch_task_ops *ops)
{
    struct wg_list *it;

    for (it = o->tasks.next; it != &o->tasks; it = it->next) {
        struct orch_task *t = wg_container_of(it, struct orch_task, link);
        if (t->ops == ops && strcmp(t->id, id) == 0)
            return t;
    }
    return NULL;
}

/* Whether a task of session id is at work (not waiting for its turn). */
static bool session_busy(struct wg_orch *o, const char *id, const struct orch_task *except)
{
    struct wg_list *it;

    for (it = o->tasks.next; it != &o->tasks; it = it->next) {
        struct orch_task *t = wg_container_of(it, struct orch_task, link);
        if (t != except && t->phase != PH_WAIT_TURN && strcmp(t->id, id) == 0)
            return true;
    }
    return false;
}

bool orch_session_live(struct wg_orch *o, const char *id)
{
    struct wg_list *it;

    for (it = o->tasks.next; it != &o->tasks; it = it->next)
        if (strcmp(wg_container_of(it, struct orch_task, link)->id, id) == 0)
            return true;
    return false;
}

/* A task's memory with its head set up and its two timers open; not
 * linked yet. */
static struct orch_task *task_alloc(struct wg_orch *o, const struct orch_task_ops *ops,
                                    const char *id)
{
    struct orch_task *t;

    if (o->closing)
        return NULL;
    t = calloc(1, ops->size);
    if (!t)
        return NULL;
    t->o = o;
    t->ops = ops;
    snprintf(t->id, sizeof(t->id), "%s", id);
    wg_session_init(&t->rec);
    wg_list_init(&t->qlink);
    t->refs = 1;
    o->refs++;
    orch_task_init_timer(t, &t->timer);
    orch_task_init_timer(t, &t->extend);
    return t;
}

struct orch_task *orch_task_new(struct wg_orch *o, const struct orch_task_ops *ops, const char *id)
{
    struct orch_task *t = task_alloc(o, ops, id);

    if (!t)
        return NULL;
    t->phase = orch_session_live(o, id) ? PH_WAIT_TURN : PH_NEW;
    wg_list_push_back(&o->tasks, &t->link);
    return t;
}

static void lock_held(struct orch_task *t, uint64_t first_ms);

struct orch_task *orch_task_successor(struct orch_task *from, const struct orch_task_ops *ops)
{
    struct orch_task *t = task_alloc(from->o, ops, from->id);
    uint64_t due;

    if (!t)
        return NULL;
    if (from->have_rec && !orch_task_keep_rec(t, &from->rec)) {
        t->refs--; /* never linked: only the timers keep it until they close */
        orch_task_close_timer(t, &t->timer);
        orch_task_close_timer(t, &t->extend);
        return NULL;
    }
    t->phase = PH_NEW;
    wg_list_insert_after(&from->link, &t->link);
    if (from->locked) {
        /* The lock's TTL runs on: the next extension keeps its time. */
        due = uv_timer_get_due_in(&from->extend);
        from->locked = false;
        uv_timer_stop(&from->extend);
        lock_held(t, due);
    }
    return t;
}

void orch_task_begin(struct orch_task *t)
{
    if (t->finished || t->phase == PH_WAIT_TURN)
        return;
    t->ops->start(t);
}

bool orch_task_keep_rec(struct orch_task *t, const struct wg_session *rec)
{
    if (!rec)
        return false;
    wg_session_release(&t->rec);
    t->have_rec = wg_session_copy(&t->rec, rec) == 0;
    return t->have_rec;
}

void orch_task_call(struct orch_task *t)
{
    t->busy = true;
    t->refs++;
}

bool orch_task_returned(struct orch_task *t)
{
    bool stop = t->finished || t->o->closing;

    t->busy = false;
    if (stop) {
        orch_task_unref(t);
        return true;
    }
    t->refs--; /* the live reference remains */
    return false;
}

static void on_lock_released(const struct wg_store_res *res, void *arg)
{
    struct orch_task *t = arg;

    if (res->status == WG_STORE_NOT_HELD && !t->o->closing)
        WG_DEBUG(t->o->log, ORCH_SUBSYS, "lock already gone at release", "session=%s", t->id);
    orch_task_unref(t);
}

void orch_task_unlock(struct orch_task *t)
{
    struct wg_orch *o = t->o;

    if (!t->locked)
        return;
    t->locked = false;
    uv_timer_stop(&t->extend);
    if (!o->closing && wg_store_lock_release(o->store, t->id, o->token, on_lock_released, t) == 0)
        t->refs++;
}

bool orch_task_dequeue(struct orch_task *t)
{
    if (!t->in_queue)
        return false;
    wg_list_remove(&t->qlink);
    t->in_queue = false;
    return true;
}

/* The next task of t's session, in arrival order, when none is at work. */
static void begin_next_of_session(struct orch_task *t)
{
    struct wg_orch *o = t->o;
    struct wg_list *it;

    if (session_busy(o, t->id, t))
        return;
    for (it = o->tasks.next; it != &o->tasks; it = it->next) {
        struct orch_task *n = wg_container_of(it, struct orch_task, link);
        if (strcmp(n->id, t->id) == 0 && n->phase == PH_WAIT_TURN) {
            n->phase = PH_NEW;
            orch_task_begin(n);
            return;
        }
    }
}

void orch_task_finish(struct orch_task *t)
{
    struct wg_orch *o = t->o;

    if (t->finished)
        return;
    t->finished = true;
    t->phase = PH_DONE;
    wg_list_remove(&t->link);
    orch_task_unlock(t);
    orch_task_close_timer(t, &t->timer);
    orch_task_close_timer(t, &t->extend);
    if (t->ops->cancel)
        t->ops->cancel(t);
    if (!o->closing) {
        begin_next_of_session(t);
        /* A wake's admission or a recheck's slot may have been freed: these
         * act only when a queued task finds room. */
        reconcile_next(o);
        waker_admit_next(o);
    }
    orch_task_unref(t); /* the live reference */
}

/* ---- locks ----------------------------------------------------------------------------------- */

static uint32_t lock_ttl(const struct wg_orch *o)
{
    uint64_t ttl = 2 * o->cfg->sessions.wake_timeout_ms;

    if (ttl < LOCK_TTL_MIN_MS)
        ttl = LOCK_TTL_MIN_MS;
    return ttl > UINT32_MAX ? UINT32_MAX : (uint32_t)ttl;
}

static void on_lock_extended(const struct wg_store_res *res, void *arg)
{
    struct orch_task *t = arg;

    t->extend_busy = false;
    if (!t->finished && !t->o->closing && res->status == WG_STORE_NOT_HELD)
        WG_WARN(t->o->log, ORCH_SUBSYS, "lost the session lock while working, going on",
                "session=%s", t->id);
    orch_task_unref(t);
}

static void extend_cb(uv_timer_t *h)
{
    struct orch_task *t = h->data;

    if (t->finished || !t->locked || t->extend_busy)
        return;
    if (wg_store_lock_extend(t->o->store, t->id, t->o->token, lock_ttl(t->o), on_lock_extended,
                             t) == 0) {
        t->extend_busy = true;
        t->refs++;
    }
}

/* Extends the lock every third of its TTL, the first time after
 * first_ms (0: a full third). */
static void lock_held(struct orch_task *t, uint64_t first_ms)
{
    uint32_t every = lock_ttl(t->o) / 3;

    t->locked = true;
    uv_timer_start(&t->extend, extend_cb, first_ms ? first_ms : every, every);
}

static void on_lock_takeover(const struct wg_store_res *res, void *arg);

static void on_lock(const struct wg_store_res *res, void *arg)
{
    struct orch_task *t = arg;

    if (orch_task_returned(t))
        return;
    if (res->status == 0) {
        lock_held(t, 0);
        t->lock_next(t, true, "");
    } else if (res->status == WG_STORE_BUSY) {
        /* Ours from a previous life? Extending succeeds only for our token. */
        orch_task_call(t);
        if (wg_store_lock_extend(t->o->store, t->id, t->o->token, lock_ttl(t->o), on_lock_takeover,
                                 t) < 0) {
            orch_task_returned(t);
            t->lock_next(t, false, "locked by another actor");
        }
    } else {
        t->lock_next(t, false, res->error[0] ? res->error : strerror(-res->status));
    }
}

static void on_lock_takeover(const struct wg_store_res *res, void *arg)
{
    struct orch_task *t = arg;

    if (orch_task_returned(t))
        return;
    if (res->status == 0) {
        WG_INFO(t->o->log, ORCH_SUBSYS, "took back this host's lock from a previous run",
                "session=%s", t->id);
        lock_held(t, 0);
        t->lock_next(t, true, "");
    } else if (res->status == WG_STORE_NOT_HELD) {
        t->lock_next(t, false, "locked by another actor");
    } else {
        t->lock_next(t, false, res->error[0] ? res->error : strerror(-res->status));
    }
}

void orch_task_lock(struct orch_task *t, orch_lock_next *next)
{
    t->lock_next = next;
    t->phase = t->phase == PH_NEW ? PH_LOCK : t->phase;
    if (t->locked) {
        next(t, true, "");
        return;
    }
    orch_task_call(t);
    if (wg_store_lock_acquire(t->o->store, t->id, t->o->token, lock_ttl(t->o), on_lock, t) < 0) {
        orch_task_returned(t);
        next(t, false, "cannot send the lock command");
    }
}
