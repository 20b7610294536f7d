/* proxy/conn_session.c - requests on session routes: the session's id and
 * the request's facts are taken from the head, the session cache is asked,
 * and the connection does what conn_decide_session() says: proxy, hold
 * until the session runs (with a wake), or answer by itself (the status
 * JSON, the waking page, an error). Also the hold's outcome and the
 * session's activity, which last as long as the exchange. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/conn_int.h"
#include "proxy/pages.h"

/* ---- the session's facts -------------------------------------------------------- */

/* A captured span copied to dst (room for n + 1), lowercased: hosts
 * compare without case, so ids and port names are lowercase throughout. */
static void copy_lower(char *dst, const char *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (src[i] >= 'A' && src[i] <= 'Z') ? (char)(src[i] - 'A' + 'a') : src[i];
    dst[n] = '\0';
}

/* Copies the captured id, lowercased. Returns false when it is no valid id. */
static bool take_session_id(struct exchange *x, const struct wg_route_match *m)
{
    size_t n = m->session_len;

    if (m->session == NULL || n == 0 || n > WG_SESSION_ID_MAX)
        return false;
    copy_lower(x->session_id, m->session, n);
    return wg_session_id_valid(x->session_id, n);
}

/* A {port} route: the port name, lowercased. A name that no template
 * has gets 404 at once, with no lookup and so no wake. */
static bool take_port_name(struct wg_conn *c, const struct wg_route_match *m)
{
    struct exchange *x = c->x;
    size_t n = m->port_len;

    x->port_name[0] = '\0';
    if (m->port == NULL)
        return true;
    if (n > WG_PORT_NAME_MAX)
        goto unknown;
    copy_lower(x->port_name, m->port, n);
    if (wg_port_name_valid(x->port_name, n) &&
        wg_config_port_name_known(c->px->cfg, x->port_name, n))
        return true;
unknown:
    c->px->stats.port_unknown++;
    conn_send_error(c, 404);
    return false;
}

/* A {port} request of a session whose record is read: the port of that
 * name in the session's template. Returns false with a 404 sent when the
 * template has no such port (never a wake); a template that a reload
 * removed has none. While no read told the template, the sessions: block
 * stands for it, as for the other settings of a template. */
static bool resolve_port(struct wg_conn *c, struct wg_sess_view *v)
{
    struct exchange *x = c->x;
    const struct wg_sessions_cfg *t;
    const struct wg_named_port *np;

    if (x->port_name[0] == '\0' || (v->status != WG_SESS_READY && v->status != WG_SESS_NOT_RUNNING))
        return true;
    t = v->template_name != NULL ? wg_config_template(c->px->cfg, v->template_name)
                                 : &c->px->cfg->sessions;
    np = wg_config_named_port(t, x->port_name, strlen(x->port_name));
    if (np == NULL) {
        c->px->stats.port_unknown++;
        WG_INFO(
            c->px->log, "conn", "the session's template has no port of that name, returning 404",
            "conn=%" PRIu64 " session=%s port=%s template=%s", c->id, x->session_id, x->port_name,
            v->template_name && v->template_name[0] ? v->template_name : "default");
        conn_send_error(c, 404);
        return false;
    }
    x->port_name[0] = '\0';
    x->session_port = (uint16_t)np->port;
    wg_session_cache_view_port(c->px->session_cache, v, x->session_port);
    return true;
}

/* Whether the request is for .../_wakegate/status, and where the waking
 * page polls: under the matched path prefix, if any. */
static void take_status_url(struct exchange *x, const struct wg_route_match *m)
{
    static const char status_suffix[] = "/_wakegate/status";
    const struct wg_http_msg *req = &x->req;
    size_t plen = req->target_len;
    const char *q = memchr(req->target, '?', plen);
    if (q)
        plen = (size_t)(q - req->target);
    size_t sl = sizeof(status_suffix) - 1;
    x->status_path = plen >= sl && memcmp(req->target + plen - sl, status_suffix, sl) == 0;
    size_t pre = m->prefix_len;
    while (pre > 0 && req->target[pre - 1] == '/')
        pre--;
    if (pre + sl + 1 < sizeof(x->status_url)) {
        memcpy(x->status_url, req->target, pre);
        memcpy(x->status_url + pre, status_suffix, sl + 1);
    } else {
        memcpy(x->status_url, status_suffix, sl + 1);
    }
}

bool conn_session_prepare(struct wg_conn *c, const struct wg_route_match *m)
{
    struct exchange *x = c->x;

    if (c->px->session_cache == NULL) {
        /* A proxy without Redis cannot know where sessions are. */
        conn_send_error(c, 503);
        return false;
    }
    if (!take_session_id(x, m)) {
        conn_send_error(c, 404);
        return false;
    }
    x->is_session = true;
    x->session_port = (uint16_t)m->route->port;
    if (!take_port_name(c, m))
        return false;
    x->req_class = conn_classify(c->px->cfg, &x->req);
    x->wake_class = conn_wake_class(&x->req);
    take_status_url(x, m);
    conn_access_prepare(c, m);
    return true;
}

/* ---- answers of our own ------------------------------------------------------------ */

/* A response of our own that may keep the connection: status JSON, the
 * waking page. */
void conn_send_local(struct wg_conn *c, int status, const char *ctype, const char *extra,
                     const char *body, size_t body_len)
{
    struct exchange *x = c->x;
    char head[256], tail[64 + 256 + 32]; /* + Strict-Transport-Security: tls.hsts */
    const char *hsts = c->https ? c->px->cfg->tls.hsts : NULL;
    bool head_only = x->req.method_id == HTTP_HEAD;

    x->resp_keep_alive = x->req_keep_alive && x->req.complete && !c->draining && !c->client_eof &&
                         c->requests < conn_limits(c)->keepalive_requests_max;
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n",
                     status, wg_http_reason(status), ctype, body_len);
    int t =
        snprintf(tail, sizeof(tail), "%s%s%s%s\r\n",
                 x->resp_keep_alive ? (x->req.minor == 0 ? "Connection: keep-alive\r\n" : "")
                                    : "Connection: close\r\n",
                 hsts ? "Strict-Transport-Security: " : "", hsts ? hsts : "", hsts ? "\r\n" : "");
    /* The extra lines (a redirect's Location) may be long: written from
     * where they are, as conn_write copies what the socket does not take. */
    uv_buf_t b[4] = {uv_buf_init(head, (unsigned)n),
                     uv_buf_init((char *)(extra ? extra : ""), extra ? (unsigned)strlen(extra) : 0),
                     uv_buf_init(tail, (unsigned)t),
                     uv_buf_init((char *)body, head_only ? 0 : (unsigned)body_len)};
    x->status = status;
    x->resp_head_sent = true;
    x->resp_framing = WG_HTTP_FRAME_NONE;
    c->state = CS_PROXY;
    conn_write(c, SIDE_CLIENT, b, 4);
    if (!c->closing)
        conn_finish_exchange(c);
}

static void send_session_status(struct wg_conn *c, int status, const char *state)
{
    char body[160];
    size_t n = wg_pages_status(body, sizeof(body), c->x->session_id, state);
    conn_send_local(c, status, "application/json", status == 503 ? "Retry-After: 1\r\n" : NULL,
                    body, n);
}

/* The waking page, 503 with Retry-After (and no-store, as every answer of
 * ours): the template's own page when it has one, else the built-in. */
static void send_waking_page(struct wg_conn *c, const struct wg_sess_view *v, const char *state)
{
    const struct wg_sessions_cfg *t = wg_config_template_or_default(c->px->cfg, v->template_name);
    struct wg_page_facts f = {
        .id = c->x->session_id,
        .state = state,
        .status_url = c->x->status_url,
        .reason =
            v->status == WG_SESS_NOT_RUNNING && v->state == WG_SESSION_FAILED ? v->error : NULL,
    };
    static const char ctype[] = "text/html; charset=utf-8";

    if (t->waking_page_html != NULL) {
        size_t n = wg_pages_render(NULL, 0, t->waking_page_html, t->waking_page_len, &f);
        char *body = malloc(n ? n : 1);
        if (body != NULL) {
            wg_pages_render(body, n, t->waking_page_html, t->waking_page_len, &f);
            conn_send_local(c, 503, ctype, "Retry-After: 1\r\n", body, n);
            free(body);
            return;
        }
        /* Out of memory: the built-in page, which needs none. */
    }
    char body[8192];
    size_t n = wg_pages_waking(body, sizeof(body), &f);
    conn_send_local(c, 503, ctype, "Retry-After: 1\r\n", body, n);
}

/* ---- holding --------------------------------------------------------------------- */

/* Counted once, at the first of the release (served), the wake deadline,
 * a close while held, or the end of its exchange (failed: answered while
 * not served). */
void conn_hold_end(struct wg_conn *c, enum wg_proxy_hold_outcome outcome)
{
    struct exchange *x = c->x;
    if (x == NULL || !x->held_wake || x->hold_counted)
        return;
    x->hold_counted = true;
    c->px->stats.held_released[outcome]++;
}

void conn_session_unwait(struct wg_conn *c)
{
    conn_access_cancel(c);
    if (c->x != NULL && c->px->session_cache != NULL)
        wg_session_cache_unwait(c->px->session_cache, &c->x->waiter);
}

/* Reached from the end of an exchange (conn_finish_exchange,
 * conn_exchange_put) and from conn_close, which runs before the session
 * cache can be freed. */
void conn_activity_end(struct wg_conn *c)
{
    if (c->x != NULL && c->x->activity != NULL)
        wg_session_cache_activity_end(c->px->session_cache, &c->x->activity);
}

static void session_changed(struct wg_sess_waiter *w)
{
    struct exchange *x = wg_container_of(w, struct exchange, waiter);
    struct wg_conn *c = x->conn;
    if (!c->closing && c->state == CS_WAITING)
        conn_session_route(c);
}

/* for_read: held only until the record is read (a first request on a loop
 * whose cache has not seen the session yet). That is no wait for the
 * session itself: a failure it then reads is answered as to any request,
 * not as "the wake we waited for failed". */
static void session_wait_for(struct wg_conn *c, bool for_read)
{
    struct exchange *x = c->x;
    if (!for_read)
        x->held_on_session = true;
    if (!x->waited) {
        x->waited = true;
        x->wait_start_ms = conn_now_ms(c);
        x->wait_ns = uv_hrtime();
    }
    x->waiter.changed = session_changed;
    if (wg_session_cache_wait(c->px->session_cache, x->session_id, &x->waiter) < 0) {
        WG_WARN(c->px->log, "conn", "too many requests held, returning 503",
                "conn=%" PRIu64 " session=%s", c->id, x->session_id);
        conn_send_error(c, 503);
        return;
    }
    if (c->state != CS_WAITING) {
        c->state = CS_WAITING;
        conn_update_reading(c);
        conn_arm(c);
    }
}

static void session_wait(struct wg_conn *c)
{
    session_wait_for(c, false);
}

/* ---- a running session that refuses ---------------------------------------------- */

/* The cache says running but the connect failed: the container may have
 * died or been stopped (an engine restart stops them) a moment before the
 * orchestrator tells us. Held as a wake would be, the request follows
 * what the session does next: it is proxied to the address of a new life
 * of the container, or woken with the others when the session leaves
 * running, or tried again at the same address after a backoff while the
 * session stays running, until sessions.upstream_recheck has passed
 * since the first refusal; then the caller's 502. Only when the request
 * may be sent again (conn_upstream_failed's rule): nothing was sent, or
 * it went to a pooled connection that died before answering and it is
 * idempotent without a body. A request the application may have acted on
 * is never replayed. */
bool conn_session_recheck(struct wg_conn *c, const char *why)
{
    struct exchange *x = c->x;
    uint64_t now = conn_now_ms(c), at;
    bool replayable = !x->req_head_written || (x->req_framing == WG_HTTP_FRAME_NONE &&
                                               wg_http_method_idempotent(x->req.method_id));

    if (!x->is_session || !replayable || x->resp_head_received || x->resp_head_sent || c->draining)
        return false;
    at = conn_recheck_at(x->recheck_start_ms ? x->recheck_start_ms : now, now, x->rechecks,
                         c->px->cfg->sessions.upstream_recheck_ms);
    if (at == 0)
        return false;
    if (x->recheck_start_ms == 0)
        x->recheck_start_ms = now;
    x->rechecks++;
    x->recheck_at_ms = at;
    c->px->stats.session_rechecks++;
    x->retries = 0; /* the next address gets its own fresh-connection retry */
    WG_INFO(c->px->log, "conn", "session upstream failed, holding the request and looking again",
            "conn=%" PRIu64 " session=%s upstream=%s error=\"%s\" recheck=%u retry_ms=%" PRIu64,
            c->id, x->session_id, x->up_name, why, x->rechecks, x->recheck_at_ms - now);
    session_wait(c);
    return true;
}

void conn_session_recheck_due(struct wg_conn *c)
{
    c->x->recheck_at_ms = 0;
    wg_session_cache_unwait(c->px->session_cache, &c->x->waiter);
    conn_session_route(c);
}

/* ---- doubt ------------------------------------------------------------------------ */

static const char *owner_container(const struct exchange *x)
{
    const char *slash = strchr(x->up_owner, '/');
    return slash && slash[1] ? slash + 1 : "-";
}

/* Redis cannot confirm that the session's container still holds its
 * address, and no live connection to that container proves it: a new
 * connection might reach another session's container there. The request
 * waits for Redis as a held request waits for a wake (the state channel's
 * return re-reads the session and tells its waiters) until the wake
 * deadline, and then gets 503 (conn_session_doubt_expired). */
void conn_session_doubt(struct wg_conn *c)
{
    struct exchange *x = c->x;

    if (!x->held_doubt) {
        x->held_doubt = true;
        c->px->stats.session_doubt_held++;
        WG_INFO(c->px->log, "conn",
                "Redis cannot confirm the session's container at its address and no live "
                "connection to that container proves it, holding the request",
                "conn=%" PRIu64 " session=%s container=%.12s upstream=%s unconfirmed_ms=%" PRIu64,
                c->id, x->session_id, owner_container(x), x->up_name, x->up_unconfirmed_ms);
    }
    session_wait(c);
}

/* Answers a request held in doubt that Redis did not resolve: at the wake
 * deadline, or when the cache gives up on the session (redis.outage_grace). */
static void doubt_refuse(struct wg_conn *c, const char *why)
{
    struct exchange *x = c->x;

    c->px->stats.session_doubt_refused++;
    WG_WARN(c->px->log, "conn", why,
            "conn=%" PRIu64 " session=%s container=%.12s upstream=%s held_ms=%" PRIu64, c->id,
            x->session_id, owner_container(x), x->up_name, conn_now_ms(c) - x->wait_start_ms);
    conn_session_unwait(c);
    conn_send_error(c, 503);
}

void conn_session_doubt_expired(struct wg_conn *c)
{
    doubt_refuse(c, "Redis did not confirm the session's container at its address by the wake "
                    "deadline, returning 503");
}

/* ---- acting on the decision ------------------------------------------------------ */

/* dst = a, or a "/" b, cut to cap - 1 bytes: what snprintf would write,
 * without its format parsing on every proxied request. */
static void join(char *dst, size_t cap, const char *a, const char *b)
{
    size_t n = strnlen(a, cap - 1);

    memcpy(dst, a, n);
    if (b != NULL && n + 1 < cap) {
        size_t m = strnlen(b, cap - 2 - n);
        dst[n++] = '/';
        memcpy(dst + n, b, m);
        n += m;
    }
    dst[n] = '\0';
}

/* The session runs at v's address: to its upstream, over a connection made
 * for its container (proven_only: only where a live connection proves the
 * address the container's, else held for Redis: conn_session_doubt). */
static void session_proxy(struct wg_conn *c, const struct wg_sess_view *v,
                          const struct conn_session_decision *d)
{
    struct exchange *x = c->x;
    bool activity = d->activity;

    /* Probes do not keep a session awake; everything else proxied does,
     * for as long as its exchange lasts (a stream: its whole life). */
    if (activity && x->activity == NULL) {
        x->activity = wg_session_cache_activity_begin(c->px->session_cache, v);
        conn_stream_begin(c, v);
    }
    conn_hold_end(c, WG_HOLD_SERVED);
    memcpy(&x->up_addr, &v->addr, v->addr_len);
    join(x->up_name, sizeof(x->up_name), v->addr_text, NULL);
    join(x->up_owner, sizeof(x->up_owner), x->session_id, v->container_id);
    x->up_proven = d->proven_only;
    x->up_unconfirmed_ms = v->unconfirmed_ms;
    conn_connect_upstream(c, false);
}

void conn_session_page_due(struct wg_conn *c)
{
    struct exchange *x = c->x;
    struct wg_sess_view v;

    conn_session_unwait(c);
    wg_session_cache_lookup(c->px->session_cache, x->session_id, x->session_port, &v);
    if (v.status == WG_SESS_READY) {
        conn_session_route(c); /* it runs by now after all: decided as any request */
        return;
    }
    conn_hold_end(c, WG_HOLD_PAGE);
    send_waking_page(c, &v,
                     v.status == WG_SESS_NOT_RUNNING ? wg_session_state_name(v.state) : "starting");
}

void conn_session_route(struct wg_conn *c)
{
    struct wg_proxy *px = c->px;
    struct exchange *x = c->x;
    struct wg_sess_view v;
    struct conn_session_decision d;

    x->recheck_at_ms = 0; /* looked at now; a refused connect sets it again */
    /* No valid credential on a route that leaves access to the template:
     * the record says whether its template is public. A lookup, never a
     * wake, and the same answer for a private session as for none. */
    if (x->access_by_template) {
        wg_session_cache_lookup(px->session_cache, x->session_id, x->session_port, &v);
        if (v.status == WG_SESS_PENDING) {
            session_wait_for(c, true);
            return;
        }
        x->access_by_template = false;
        if (conn_access_template_open(c, &v))
            x->access = ACCESS_OPEN;
    }
    /* No valid credential: no lookup, so no fetch and no wake. */
    if (x->access == ACCESS_DENIED) {
        conn_access_deny(c);
        return;
    }
    if (x->access == ACCESS_FORWARD && !conn_access_forward(c))
        return;
    wg_session_cache_lookup(px->session_cache, x->session_id, x->session_port, &v);
    if (!conn_access_check(c, &v) || !resolve_port(c, &v))
        return;
    /* The record's template says which classes wake (sessions: while no
     * read told the template, or when a reload removed it). */
    const struct wg_sessions_cfg *t = wg_config_template_or_default(px->cfg, v.template_name);
    struct conn_session_facts f = {
        .status = v.status,
        .state = v.state,
        .failed_for_ms = v.failed_for_ms,
        .req_class = x->req_class,
        .status_path = x->status_path,
        .waited = x->held_on_session,
        .no_wake = (t->wake_on & x->wake_class) == 0,
        .page_after = t->page_after_ms > 0,
        .confirmed = v.confirmed,
    };
    conn_decide_session(&f, &d);
    if (d.suppressed)
        wg_session_cache_note_suppressed(px->session_cache);
    if (d.wake && wg_session_cache_wake(px->session_cache, x->session_id) < 0) {
        WG_WARN(px->log, "conn", "cannot request a wake, returning 503",
                "conn=%" PRIu64 " session=%s", c->id, x->session_id);
        conn_send_error(c, 503);
        return;
    }
    switch (d.action) {
    case SA_PROXY:
        session_proxy(c, &v, &d);
        return;
    case SA_HOLD:
        /* From here the hold waits for a wake, not only for a record. */
        x->held_wake = true;
        x->page_after_ms = d.page_later ? t->page_after_ms : 0;
        x->held_doubt = false;
        session_wait(c);
        /* Held already (for the record): the page's deadline is new. */
        if (d.page_later && !c->closing && c->state == CS_WAITING)
            conn_arm(c);
        return;
    case SA_WAIT:
        session_wait_for(c, true);
        return;
    case SA_PAGE:
        send_waking_page(c, &v, d.state);
        return;
    case SA_STATUS:
        send_session_status(c, d.status, d.state);
        return;
    case SA_ERROR:
        if (x->held_doubt && d.status == 503) {
            doubt_refuse(c, "Redis cannot confirm the session's container past "
                            "redis.outage_grace, returning 503");
            return;
        }
        conn_send_error(c, d.status);
        return;
    }
}
