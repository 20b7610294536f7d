/* common/redis_sentinel_mode.c - a connection in sentinel mode (a
 * redis+sentinel:// URL): finding the master before each connect, and
 * following it when it moves. See common/redis.h.
 *
 * - Each attempt first asks the sentinels (wg_redis_sentinel_discover() of
 *   common/redis_sentinel.h) on libuv's thread pool, so the loop never
 *   waits on one; r is ST_DISCOVERING meanwhile and holds commands. The
 *   worker reads only r->t's sentinel fields and credentials, which never
 *   change, and writes only r->disc; the loop touches neither until the
 *   after-work callback. The job holds a reference on r.
 * - Each connection has a watcher of its own: an internal struct wg_redis
 *   (plain mode) subscribed to +switch-master on one sentinel, moved to the
 *   next one with a backoff when it is lost. One per connection, not one per
 *   loop: no state shared between connections or threads, and the cost is
 *   one idle connection to a sentinel per Redis connection (3 for role all).
 * - A switch of our master, or a check after the watcher resubscribed that
 *   names another master, drops the connection at once (even if the old
 *   master still answers) and connects again without backoff. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/redis_int.h"
#include "common/str.h"

void redis_set_target(struct wg_redis *r)
{
    bool v6 = r->t.host && strchr(r->t.host, ':') != NULL;

    free(r->target);
    r->target = NULL;
    /* On no memory, reasons name the URL instead. */
    if (r->t.master_name && r->t.host)
        r->target = wg_strf("%s%s%s:%u (master %s)", v6 ? "[" : "", r->t.host, v6 ? "]" : "",
                            r->t.port, r->t.master_name);
}

/* Counts and logs a move of the master between two connections. */
void redis_note_master(struct wg_redis *r)
{
    char now[sizeof(r->last_master)], qold[QUOTED_MAX], qnow[QUOTED_MAX];

    snprintf(now, sizeof(now), "%s:%u", r->t.host, r->t.port);
    if (r->last_master[0] && strcmp(r->last_master, now) != 0) {
        r->st.failovers++;
        WG_WARN(r->log, SUBSYS, "following a failover: connected to the new master",
                "name=%s master_name=%s old=%s new=%s", r->qname, r->t.master_name,
                redis_quote(qold, sizeof(qold), r->last_master),
                redis_quote(qnow, sizeof(qnow), now));
    } else {
        WG_INFO(r->log, SUBSYS, "connected to the master the sentinels named",
                "name=%s master_name=%s master=%s", r->qname, r->t.master_name,
                redis_quote(qnow, sizeof(qnow), now));
    }
    snprintf(r->last_master, sizeof(r->last_master), "%s", now);
}

/* The master moved to host:port (a +switch-master, or the sentinels'
 * answer to a check): leave the old one now, even if it still answers, so
 * that no command and no subscription stays on it. */
static void follow_switch(struct wg_redis *r, const char *host, uint16_t port, const char *why)
{
    char reason[REASON_MAX];

    if (ST_IN(r, ST_SENDS)) {
        if (r->t.host && strcmp(r->t.host, host) == 0 && r->t.port == port)
            return;
        snprintf(reason, sizeof(reason), "master %s moved to %s:%u (%s), leaving %s",
                 r->t.master_name, host, port, why, redis_tgt(r));
        r->failures = 0;
        redis_conn_end(r, -ECONNRESET, 0, reason, false);
    }
    /* No backoff: the new master is up, and commands issued in a backoff
     * fail at once, while an attempt holds them. */
    if (r->state == ST_BACKOFF) {
        r->failures = 0;
        uv_timer_stop(&r->conn_timer);
        redis_start_attempt(r);
    }
    /* An attempt under way checks ROLE on whatever it reaches. */
}

static void disc_work_cb(uv_work_t *w)
{
    struct wg_redis *r = w->data;

    wg_redis_sentinel_discover(&r->t, r->disc_first, r->connect_timeout_ms, r->disc);
}

static void log_notes(struct wg_redis *r, const struct wg_redis_sentinel_result *res)
{
    char qtext[QUOTED_MAX];

    for (size_t i = 0; i < res->notes_len; i++) {
        const struct wg_redis_sentinel_note *n = &res->notes[i];
        const struct wg_redis_url_host *h = &r->t.sentinels[n->sentinel];
        enum wg_log_level lvl = WG_LOG_DEBUG;

        /* A check while connected, and retries while down, stay quiet. */
        if (!r->disc_verify && n->ok)
            lvl = WG_LOG_INFO;
        else if (!r->disc_verify && r->reported != REPORTED_DOWN)
            lvl = WG_LOG_WARN;
        WG_LOG(r->log, lvl, SUBSYS, n->ok ? "sentinel answered" : "sentinel did not help",
               "name=%s master_name=%s sentinel=%s:%u answer=%s", r->qname, r->t.master_name,
               h->host, h->port, redis_quote(qtext, sizeof(qtext), n->text));
    }
}

static void disc_after_cb(uv_work_t *w, int status)
{
    struct wg_redis *r = w->data;
    struct wg_redis_sentinel_result *res = r->disc;
    char *host;

    r->disc = NULL;
    r->disc_busy = false;
    if (r->state == ST_CLOSED) {
        free(res);
        redis_release(r);
        return;
    }
    r->refs--;
    if (status < 0) /* not cancelled but for wg_redis_free(); stay safe */
        res->status = status;
    log_notes(r, res);
    if (r->disc_verify) {
        if (res->status == 0)
            follow_switch(r, res->host, res->port, "the sentinels' answer");
        goto out;
    }
    if (r->state != ST_DISCOVERING)
        goto out;
    if (res->status < 0) {
        char reason[REASON_MAX];

        r->next_sentinel = (r->next_sentinel + 1) % r->t.sentinels_len;
        snprintf(reason, sizeof(reason),
                 "no sentinel of %s named a master that answers ROLE master", r->t.display);
        redis_conn_end(r, -ENOTCONN, 0, reason, false);
        goto out;
    }
    host = strdup(res->host);
    if (!host) {
        redis_fail_attempt(r, "find", "out of memory");
        goto out;
    }
    free(r->t.host);
    r->t.host = host;
    r->t.port = res->port;
    r->next_sentinel = res->sentinel;
    redis_set_target(r);
    r->state = ST_STARTING; /* holds commands until redis_connect_host() moves on */
    redis_connect_host(r);
out:
    free(res);
}

/* Asks the sentinels on the thread pool: for an attempt (r is then
 * ST_DISCOVERING), or, verify, to check the master of a live connection. */
void redis_start_discovery(struct wg_redis *r, bool verify)
{
    int rc;

    if (r->disc_busy) {
        /* A check still runs: its answer serves the attempt. */
        if (!verify) {
            r->disc_verify = false;
            r->state = ST_DISCOVERING;
            redis_arm_discovery_deadline(r);
        }
        return;
    }
    r->disc = malloc(sizeof(*r->disc));
    if (!r->disc) {
        if (!verify)
            redis_fail_attempt(r, "find", "out of memory");
        return;
    }
    r->disc_first = r->next_sentinel;
    r->disc_verify = verify;
    r->disc_work.data = r;
    rc = uv_queue_work(r->loop, &r->disc_work, disc_work_cb, disc_after_cb);
    if (rc < 0) {
        free(r->disc);
        r->disc = NULL;
        if (!verify)
            redis_fail_attempt(r, "find", uv_strerror(rc));
        return;
    }
    r->disc_busy = true;
    r->refs++;
    if (!verify) {
        r->state = ST_DISCOVERING;
        redis_arm_discovery_deadline(r);
    }
}

static void watcher_start(struct wg_redis *r);

void redis_watch_timer_cb(uv_timer_t *t)
{
    watcher_start(t->data);
}

/* The watcher's sentinel is gone: the next one, after a backoff. */
static void watcher_state_cb(struct wg_redis *w, bool connected, const char *reason, void *arg)
{
    struct wg_redis *r = arg;
    uint64_t d = r->reconnect_min_ms;

    (void)reason;
    if (connected)
        return;
    wg_redis_free(w);
    r->watcher = NULL;
    r->watch_idx = (r->watch_idx + 1) % r->t.sentinels_len;
    for (unsigned i = 0; i < r->watch_failures && d < r->reconnect_max_ms; i++)
        d *= 2;
    if (d > r->reconnect_max_ms)
        d = r->reconnect_max_ms;
    if (r->watch_failures < 32)
        r->watch_failures++;
    uv_timer_start(&r->watch_timer, redis_watch_timer_cb,
                   d / 2 + redis_next_random(r) % (d - d / 2 + 1), 0);
}

static void watcher_msg_cb(const struct wg_redis_msg *m, void *arg)
{
    struct wg_redis *r = arg;
    char host[WG_REDIS_SENTINEL_HOST_MAX], qmsg[QUOTED_MAX];
    uint16_t port;

    if (m->kind == WG_REDIS_SUBSCRIBED) {
        r->watch_failures = 0;
        /* A switch while no sentinel was heard would go unnoticed: ask. */
        if (r->state == ST_READY)
            redis_start_discovery(r, true);
        return;
    }
    if (wg_redis_sentinel_parse_switch(m->data, m->len, r->t.master_name, host, sizeof(host),
                                       &port) != 0)
        return;
    WG_INFO(r->log, SUBSYS, "sentinel reports a failover (+switch-master)",
            "name=%s master_name=%s message=%s", r->qname, r->t.master_name,
            wg_log_quote(qmsg, sizeof(qmsg), m->data, m->len));
    follow_switch(r, host, port, "+switch-master");
}

/* One subscriber to +switch-master on the sentinel r->watch_idx. */
static void watcher_start(struct wg_redis *r)
{
    const struct wg_redis_url_host *h = &r->t.sentinels[r->watch_idx];
    struct wg_redis_opts o = {
        .connect_timeout_ms = r->connect_timeout_ms,
        .command_timeout_ms = r->command_timeout_ms,
        .reconnect_min_ms = r->reconnect_min_ms,
        .reconnect_max_ms = r->reconnect_max_ms,
    };
    struct wg_redis_url t;
    char name[QUOTED_MAX + 16];

    memset(&t, 0, sizeof(t));
    snprintf(name, sizeof(name), "%s-sentinel", r->name);
    o.name = name;
    t.host = strdup(h->host);
    t.port = h->port;
    t.password = r->t.sentinel_password ? strdup(r->t.sentinel_password) : NULL;
    t.display = wg_strf("redis://%s%s%s:%u (sentinel)", strchr(h->host, ':') ? "[" : "", h->host,
                        strchr(h->host, ':') ? "]" : "", h->port);
    if (!t.host || !t.display || (r->t.sentinel_password && !t.password) ||
        redis_create(r->loop, &t, &o, r->log, &r->watcher) < 0) {
        wg_redis_url_release(&t);
        WG_WARN(r->log, SUBSYS, "cannot watch the sentinels, out of memory; trying again",
                "name=%s", r->qname);
        uv_timer_start(&r->watch_timer, redis_watch_timer_cb, r->reconnect_max_ms, 0);
        return;
    }
    wg_redis_on_state(r->watcher, watcher_state_cb, r);
    if (wg_redis_subscribe(r->watcher, "+switch-master", watcher_msg_cb, r) < 0) {
        wg_redis_free(r->watcher);
        r->watcher = NULL;
        uv_timer_start(&r->watch_timer, redis_watch_timer_cb, r->reconnect_max_ms, 0);
    }
}
