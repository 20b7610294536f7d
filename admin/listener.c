/* admin/listener.c - the admin listener: its life, what the parts register
 * (readiness checks, metrics writers, handlers, read routes), the answer to
 * a request the token check refused and the dispatch of a complete
 * request; see listener.h. The check itself is listener_auth.c,
 * connections listener_conn.c, answers listener_reply.c. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/listener_int.h"
#include "common/log.h"
#include "common/net.h"

void admin_maybe_free(struct wg_admin *a)
{
    if (!a->freeing || a->open_handles > 0 || !wg_list_empty(&a->conns))
        return;
    for (size_t i = 0; i < a->nhandlers; i++)
        free(a->handlers[i].prefix);
    for (size_t i = 0; i < a->nread_routes; i++)
        free(a->read_routes[i].pattern);
    free(a);
}

void admin_json_escape(struct wg_buf *out, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            wg_buf_appendf(out, "\\%c", c);
        else if (c < 0x20)
            wg_buf_appendf(out, "\\u%04x", c);
        else
            wg_buf_append(out, s, 1);
    }
}

/* ---- the built-in paths -------------------------------------------------------------------- */

static bool path_is(const struct wg_admin_request *r, const char *p)
{
    return r->path_len == strlen(p) && memcmp(r->path, p, r->path_len) == 0;
}

static bool path_is_builtin(const struct wg_admin_request *r)
{
    return path_is(r, "/healthz") || path_is(r, "/readyz") || path_is(r, "/metrics");
}

/* Writes the /metrics family of the token check's refusals. */
static void auth_metrics(const struct wg_admin *a, struct wg_buf *out)
{
    static const char *const reasons[REFUSED_N] = {"missing", "invalid", "read_only"};
    wg_buf_appendf(out, "# HELP wakegate_admin_auth_failures_total Admin API requests refused "
                        "by the token check, by reason.\n"
                        "# TYPE wakegate_admin_auth_failures_total counter\n");
    for (int i = 0; i < REFUSED_N; i++)
        wg_buf_appendf(out, "wakegate_admin_auth_failures_total{reason=\"%s\"} %" PRIu64 "\n",
                       reasons[i], a->refused[i]);
}

/* /readyz: the status, with the body written to out. */
static int readyz(struct wg_admin *a, bool is_get, struct wg_buf *out)
{
    char why[160] = "";
    bool ready = !a->draining;
    if (!ready)
        snprintf(why, sizeof(why), "shutting down");
    for (size_t i = 0; ready && i < a->nready; i++)
        ready = a->ready[i].fn(a->ready[i].arg, why, sizeof(why));
    if (ready) {
        wg_buf_appendf(out, "{\"status\":\"ready\"}\n");
    } else {
        wg_buf_appendf(out, "{\"status\":\"not ready\",\"reason\":\"");
        admin_json_escape(out, why);
        wg_buf_appendf(out, "\"}\n");
    }
    return !is_get ? 405 : ready ? 200 : 503;
}

/* The built-in paths, or 404. */
static void dispatch_builtin(struct admin_conn *ac, const struct wg_admin_request *req,
                             bool close_after)
{
    struct wg_admin *a = ac->admin;
    struct wg_buf out;
    const char *ctype = "application/json";
    const char *headers = NULL;
    int status = 404;
    bool is_get = strcmp(ac->method, "GET") == 0 || strcmp(ac->method, "HEAD") == 0;

    wg_buf_init(&out, 64 * 1024 * 1024);
    if (path_is(req, "/healthz")) {
        status = is_get ? 200 : 405;
        wg_buf_appendf(&out, "{\"status\":\"%s\"}\n", status == 200 ? "ok" : "method not allowed");
    } else if (path_is(req, "/readyz")) {
        status = readyz(a, is_get, &out);
    } else if (path_is(req, "/metrics")) {
        status = is_get ? 200 : 405;
        ctype = "text/plain; version=0.0.4; charset=utf-8";
        auth_metrics(a, &out);
        for (size_t i = 0; i < a->nmetrics; i++)
            a->metrics[i].fn(a->metrics[i].arg, &out);
    } else {
        wg_buf_appendf(&out, "{\"error\":\"not found\"}\n");
    }
    if (status == 405)
        headers = "Allow: GET, HEAD\r\n";
    admin_conn_send(ac, status, ctype, headers, wg_buf_head(&out), wg_buf_size(&out),
                    strcmp(ac->method, "HEAD") == 0, close_after);
    wg_buf_release(&out);
}

enum wg_admin_auth admin_auth_of(const struct admin_conn *ac, const char *authz, size_t len)
{
    const struct wg_admin *a = ac->admin;
    const struct wg_admin_tokens tokens = {a->cfg->admin_token, a->cfg->admin_read_token};
    const char *patterns[ADMIN_MAX_HOOKS];
    const char *q = strchr(ac->target, '?');
    size_t path_len = q ? (size_t)(q - ac->target) : strlen(ac->target);

    for (size_t i = 0; i < a->nread_routes; i++)
        patterns[i] = a->read_routes[i].pattern;
    return wg_admin_auth_check(&tokens, patterns, a->nread_routes, ac->method, ac->target, path_len,
                               authz, len);
}

/* Answers a /v1/ request that the token check refused; true when it did. */
static bool refuse_unauthenticated(struct admin_conn *ac, bool close_after)
{
    static const char not_configured[] = "{\"error\":\"admin token not configured\"}\n";
    static const char unauthorized[] = "{\"error\":\"unauthorized\"}\n";
    static const char read_only[] =
        "{\"error\":\"token is read-only: this request needs the admin token\"}\n";
    struct wg_admin *a = ac->admin;
    bool head_only = strcmp(ac->method, "HEAD") == 0;
    char path[96];

    switch (ac->auth) {
    case WG_ADMIN_AUTH_OK:
        return false;
    case WG_ADMIN_AUTH_NOT_CONFIGURED:
        admin_conn_send(ac, 503, "application/json", NULL, not_configured,
                        sizeof(not_configured) - 1, head_only, close_after);
        return true;
    case WG_ADMIN_AUTH_READ_ONLY:
        a->refused[REFUSED_READ_ONLY]++;
        /* A client configured with the wrong token is worth seeing in
         * the log; 401s are not (anyone can send those). */
        WG_INFO(a->log, ADMIN_SUBSYS, "refused: read-only token on an admin request",
                "method=%s path=%s", ac->method,
                wg_log_quote(path, sizeof(path), ac->target, strcspn(ac->target, "?")));
        admin_conn_send(ac, 403, "application/json",
                        "WWW-Authenticate: Bearer realm=\"wakegate\", "
                        "error=\"insufficient_scope\"\r\n",
                        read_only, sizeof(read_only) - 1, head_only, close_after);
        return true;
    case WG_ADMIN_AUTH_MISSING:
    case WG_ADMIN_AUTH_INVALID:
        break;
    }
    bool missing = ac->auth == WG_ADMIN_AUTH_MISSING;
    a->refused[missing ? REFUSED_MISSING : REFUSED_INVALID]++;
    admin_conn_send(
        ac, 401, "application/json",
        missing ? "WWW-Authenticate: Bearer realm=\"wakegate\"\r\n"
                : "WWW-Authenticate: Bearer realm=\"wakegate\", error=\"invalid_token\"\r\n",
        unauthorized, sizeof(unauthorized) - 1, head_only, close_after);
    return true;
}

/* The request as handlers see it: spans into ac. */
static void request_of(struct admin_conn *ac, struct wg_admin_request *req)
{
    memset(req, 0, sizeof(*req));
    req->method = ac->method;
    req->method_len = strlen(ac->method);
    req->path = ac->target;
    req->path_len = strlen(ac->target);
    const char *q = strchr(ac->target, '?');
    if (q) {
        req->path_len = (size_t)(q - ac->target);
        req->query = q + 1;
        req->query_len = strlen(q + 1);
    }
    req->body = wg_buf_head(&ac->body);
    req->body_len = wg_buf_size(&ac->body);
    if (ac->has_last_event_id) {
        req->last_event_id = ac->last_event_id;
        req->last_event_id_len = ac->last_event_id_len;
    }
}

/* Hands the request to h; from now on h owns it (and its deadline). */
static void dispatch_async(struct admin_conn *ac, const struct handler_hook *h,
                           const struct wg_admin_request *req)
{
    struct wg_admin_req *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        admin_conn_error(ac, 500);
        return;
    }
    r->ac = ac;
    r->head_only = strcmp(ac->method, "HEAD") == 0;
    ac->req = r;
    uv_timer_stop(&ac->timer);
    ac->in_dispatch = true;
    h->afn(h->arg, r, req);
    ac->in_dispatch = false;
}

void admin_dispatch(struct admin_conn *ac)
{
    struct wg_admin *a = ac->admin;
    struct wg_admin_request req;
    bool close_after = !ac->keep_alive || a->freeing;

    request_of(ac, &req);
    if (refuse_unauthenticated(ac, close_after))
        return;
    const struct handler_hook *h = NULL;
    for (size_t i = 0; !path_is_builtin(&req) && h == NULL && i < a->nhandlers; i++) {
        size_t pl = strlen(a->handlers[i].prefix);
        if (req.path_len >= pl && memcmp(req.path, a->handlers[i].prefix, pl) == 0)
            h = &a->handlers[i];
    }
    if (h != NULL)
        dispatch_async(ac, h, &req);
    else
        dispatch_builtin(ac, &req, close_after);
}

/* ---- life and registrations ---------------------------------------------------------------- */

int wg_admin_new(uv_loop_t *loop, const struct wg_config *cfg, struct wg_log *log,
                 struct wg_admin **ret_admin)
{
    struct wg_admin *a = calloc(1, sizeof(*a));
    int r;
    if (a == NULL)
        return -ENOMEM;
    a->loop = loop;
    a->cfg = cfg;
    a->log = log;
    wg_list_init(&a->conns);
    admin_conn_settings(&a->settings);
    r = uv_tcp_init(loop, &a->listener);
    if (r < 0) {
        free(a);
        return r;
    }
    a->listener.data = a;
    a->open_handles = 1;
    *ret_admin = a;
    return 0;
}

int wg_admin_listen(struct wg_admin *a, int *ret_port)
{
    int r = wg_net_listen(&a->listener, (const struct sockaddr *)&a->cfg->admin_listen.sa, 128,
                          admin_conn_accept, ret_port);
    if (r == 0)
        a->listening = true;
    return r;
}

int wg_admin_add_ready_check(struct wg_admin *a, wg_admin_ready_fn *fn, void *arg)
{
    if (a->nready >= ADMIN_MAX_HOOKS)
        return -ENOSPC;
    a->ready[a->nready++] = (struct ready_hook){fn, arg};
    return 0;
}

int wg_admin_add_metrics(struct wg_admin *a, wg_admin_metrics_fn *fn, void *arg)
{
    if (a->nmetrics >= ADMIN_MAX_HOOKS)
        return -ENOSPC;
    a->metrics[a->nmetrics++] = (struct metrics_hook){fn, arg};
    return 0;
}

int wg_admin_add_async_handler(struct wg_admin *a, const char *prefix, wg_admin_async_fn *fn,
                               void *arg)
{
    if (a->nhandlers >= ADMIN_MAX_HOOKS)
        return -ENOSPC;
    char *p = strdup(prefix);
    if (p == NULL)
        return -ENOMEM;
    a->handlers[a->nhandlers++] = (struct handler_hook){p, fn, arg};
    return 0;
}

int wg_admin_add_read_route(struct wg_admin *a, const char *pattern, void *arg)
{
    if (a->nread_routes >= ADMIN_MAX_HOOKS)
        return -ENOSPC;
    char *p = strdup(pattern);
    if (p == NULL)
        return -ENOMEM;
    a->read_routes[a->nread_routes++] = (struct read_route){p, arg};
    return 0;
}

void wg_admin_remove_hooks(struct wg_admin *a, const void *arg)
{
    size_t k = 0;
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->nready; i++)
        if (a->ready[i].arg != arg)
            a->ready[k++] = a->ready[i];
    a->nready = k;
    k = 0;
    for (size_t i = 0; i < a->nmetrics; i++)
        if (a->metrics[i].arg != arg)
            a->metrics[k++] = a->metrics[i];
    a->nmetrics = k;
    k = 0;
    for (size_t i = 0; i < a->nhandlers; i++) {
        if (a->handlers[i].arg != arg)
            a->handlers[k++] = a->handlers[i];
        else
            free(a->handlers[i].prefix);
    }
    a->nhandlers = k;
    k = 0;
    for (size_t i = 0; i < a->nread_routes; i++) {
        if (a->read_routes[i].arg != arg)
            a->read_routes[k++] = a->read_routes[i];
        else
            free(a->read_routes[i].pattern);
    }
    a->nread_routes = k;
}

void wg_admin_set_draining(struct wg_admin *a)
{
    a->draining = true;
}

static void listener_closed(uv_handle_t *h)
{
    struct wg_admin *a = h->data;
    a->open_handles--;
    admin_maybe_free(a);
}

void wg_admin_free(struct wg_admin *a)
{
    if (a == NULL || a->freeing)
        return;
    a->freeing = true;
    struct wg_list *n = a->conns.next;
    while (n != &a->conns) {
        struct admin_conn *ac = wg_container_of(n, struct admin_conn, link);
        n = n->next;
        admin_conn_close(ac);
    }
    uv_close((uv_handle_t *)&a->listener, listener_closed);
}
