/* proxy/conn_access.c - the credentials of private session routes.
 *
 * Order, so that a request without valid credentials learns nothing: the
 * token is looked for in the head (the wg_token query parameter, the
 * X-Wakegate-Token header, the wg_token cookies) and its MAC, session id
 * and expiry checked in process (common/access) before anything else. No
 * valid one: 401 at once, without a cache lookup, a fetch or a wake, so
 * the answer is the same bytes whether or not the session exists. A valid
 * one for session X leads to X's lookup, and its generation must equal the
 * one the session cache holds (a revoke replaces it through wg:state).
 *
 * A GET or HEAD whose query carries our token is answered with a 303 to
 * the same URL without it, which sets the cookie (HttpOnly, SameSite=Lax,
 * Secure under https, host-only, Path of the session), so the token leaves
 * the address bar, the history and Referer. Our token, header and cookie
 * never go upstream (http_rebuild strips them); the access line logs the
 * path without the query. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/access.h"
#include "common/clock.h"
#include "proxy/conn_int.h"
#include "proxy/forward_auth.h"
#include "proxy/http_rebuild.h"

/* Tokens checked per request at most: a head full of wg_token cookies
 * must not cost hundreds of HMACs. */
#define TRIES_MAX 8

/* A credential: valid MAC, this session, not expired. *tries counts the
 * HMACs spent on this request. */
static bool credential_ok(struct wg_conn *c, const char *tok, size_t len, int64_t now_s,
                          unsigned *tries)
{
    struct wg_access_claims cl;
    struct exchange *x = c->x;

    if (*tries >= TRIES_MAX)
        return false;
    ++*tries;
    if (wg_access_verify(c->px->access_key, tok, len, &cl) != 0)
        return false;
    if (strcmp(cl.id, x->session_id) != 0 || cl.expires <= now_s)
        return false;
    x->access_gen = cl.gen;
    x->access_expires = cl.expires;
    return true;
}

static bool header_credential(struct wg_conn *c, int64_t now_s, unsigned *tries)
{
    const struct wg_http_msg *req = &c->x->req;
    size_t nl = sizeof(WG_ACCESS_HEADER) - 1;

    for (size_t i = 0; i < req->fields_len; i++) {
        const struct wg_http_field *f = &req->fields[i];
        if (wg_http_field_named(f, WG_ACCESS_HEADER, nl) &&
            credential_ok(c, f->value, f->value_len, now_s, tries))
            return true;
    }
    return false;
}

static bool cookie_credential(struct wg_conn *c, int64_t now_s, unsigned *tries)
{
    const struct wg_http_msg *req = &c->x->req;
    size_t cl = sizeof(WG_ACCESS_COOKIE) - 1;

    for (size_t i = 0; i < req->fields_len; i++) {
        const struct wg_http_field *f = &req->fields[i];
        const char *name, *val;
        size_t pos = 0, nlen, vlen;

        if (!wg_http_field_named(f, "cookie", 6))
            continue;
        while (wg_access_cookie_next(f->value, f->value_len, &pos, &name, &nlen, &val, &vlen)) {
            if (nlen == cl && memcmp(name, WG_ACCESS_COOKIE, cl) == 0 &&
                credential_ok(c, val, vlen, now_s, tries))
                return true;
        }
    }
    return false;
}

/* https as the client sees it: our own TLS listener, or a trusted proxy's
 * X-Forwarded-Proto. */
static bool client_https(struct wg_conn *c)
{
    const struct wg_http_field *f;

    if (c->https)
        return true;
    if (!c->peer_trusted || (f = wg_http_find(&c->x->req, "x-forwarded-proto")) == NULL)
        return false;
    return f->value_len == 5 && strncasecmp(f->value, "https", 5) == 0;
}

/* The redirect's header lines, while the target is readable: Location
 * without our parameter, and the cookie when the query's token is the
 * credential. False when out of memory (then no redirect: the request
 * goes on, its token stripped upstream). */
static bool build_redirect(struct wg_conn *c, const struct wg_route_match *m, const char *tok,
                           size_t tok_len, int64_t now_s, int64_t expires)
{
    struct exchange *x = c->x;
    const struct wg_http_msg *req = &x->req;
    struct wg_buf *b = &x->access_reply;
    int r;

    if ((r = wg_buf_append(b, "Location: ", 10)) < 0 ||
        (r = wg_buf_reserve(b, req->target_len)) < 0)
        return false;
    b->len +=
        wg_access_query_strip(req->target, req->target_len, WG_ACCESS_QUERY, b->data + b->len);
    if (wg_buf_append(b, "\r\nReferrer-Policy: no-referrer\r\n", 32) < 0)
        return false;
    if (!x->access_set_cookie)
        return wg_buf_append(b, "", 1) == 0; /* NUL: conn_send_local takes a string */
    /* Host-only (no Domain); a session captured in the path gets the path
     * up to its segment, so sessions sharing a host keep apart. */
    size_t path_len = 1;
    const char *path = "/";
    if (m->session != NULL && m->session >= req->target &&
        m->session < req->target + req->target_len) {
        path = req->target;
        path_len = (size_t)(m->session + m->session_len - req->target);
    }
    return wg_buf_append(b, "Set-Cookie: " WG_ACCESS_COOKIE "=", 12 + sizeof(WG_ACCESS_COOKIE)) ==
               0 &&
           wg_buf_append(b, tok, tok_len) == 0 && wg_buf_append(b, "; Path=", 7) == 0 &&
           wg_buf_append(b, path, path_len) == 0 &&
           wg_buf_appendf(b, "; Max-Age=%" PRId64 "; HttpOnly; SameSite=Lax%s\r\n", expires - now_s,
                          client_https(c) ? "; Secure" : "") == 0 &&
           wg_buf_append(b, "", 1) == 0;
}

/* Appends "Name: value\r\n". */
static bool put_field(struct wg_buf *b, const char *name, const char *v, size_t n)
{
    return wg_buf_append(b, name, strlen(name)) == 0 && wg_buf_append(b, ": ", 2) == 0 &&
           wg_buf_append(b, v, n) == 0 && wg_buf_append(b, "\r\n", 2) == 0;
}

/* The sub-request's fields, while the head is readable: the original
 * method, URI (our token left out), host and client, the cookies (ours left
 * out) and Authorization; and the credential's cache key. False when out of
 * memory (then the request is denied). */
static bool forward_prepare(struct wg_conn *c)
{
    struct exchange *x = c->x;
    const struct wg_http_msg *req = &x->req;
    struct wg_buf *b = &x->access_reply;
    const struct wg_http_field *authz = wg_http_find(req, "authorization");

    wg_buf_reset(b);
    if (!put_field(b, "X-Forwarded-Method", req->method, req->method_len) ||
        !put_field(b, "X-Forwarded-Proto", client_https(c) ? "https" : "http",
                   client_https(c) ? 5 : 4) ||
        !put_field(b, "X-Forwarded-Host", req->host ? req->host : "",
                   req->host ? req->host_len : 0) ||
        wg_http_forwarded_for(b, req, &c->peer.sa, c->peer_trusted) < 0 ||
        wg_buf_append(b, "X-Forwarded-Uri: ", 17) < 0 || wg_buf_reserve(b, req->target_len) < 0)
        return false;
    b->len +=
        wg_access_query_strip(req->target, req->target_len, WG_ACCESS_QUERY, b->data + b->len);
    if (wg_buf_append(b, "\r\n", 2) < 0)
        return false;
    /* Every Cookie field in one line, ours left out. */
    size_t line = b->len;
    if (wg_buf_append(b, "Cookie: ", 8) < 0)
        return false;
    size_t ck_at = b->len;
    for (size_t i = 0; i < req->fields_len; i++) {
        const struct wg_http_field *f = &req->fields[i];
        if (!wg_http_field_named(f, "cookie", 6))
            continue;
        if (wg_buf_reserve(b, 2 * f->value_len + 2) < 0)
            return false;
        size_t sep = b->len > ck_at ? 2 : 0;
        memcpy(b->data + b->len, "; ", sep);
        size_t n = wg_access_cookie_strip(f->value, f->value_len, WG_ACCESS_COOKIE,
                                          b->data + b->len + sep);
        if (n > 0)
            b->len += sep + n;
    }
    size_t cookie_len = b->len - ck_at;
    if (cookie_len == 0)
        b->len = line; /* no cookie left: no field */
    else if (wg_buf_append(b, "\r\n", 2) < 0)
        return false;
    /* The key is taken before Authorization is appended (the buffer may move). */
    wg_fauth_key(x->session_id, cookie_len > 0 ? b->data + ck_at : "", cookie_len,
                 authz ? authz->value : "", authz ? authz->value_len : 0, x->fauth_key);
    return authz == NULL || put_field(b, "Authorization", authz->value, authz->value_len);
}

void conn_access_prepare(struct wg_conn *c, const struct wg_route_match *m)
{
    struct exchange *x = c->x;
    const struct wg_http_msg *req = &x->req;
    const char *qtok = NULL;
    size_t qlen = 0;
    bool ok = false;

    if (m->route->access_public) {
        x->access = ACCESS_OPEN;
        return;
    }
    x->access = ACCESS_DENIED;
    int64_t now_s = wg_clock_wall_ms() / 1000;
    bool in_query =
        wg_access_query_find(req->target, req->target_len, WG_ACCESS_QUERY, &qtok, &qlen);
    /* No key, no token can be checked: fail closed (forward auth may still allow). */
    if (c->px->access_key != NULL) {
        unsigned tries = 0;
        if (in_query && credential_ok(c, qtok, qlen, now_s, &tries)) {
            ok = true;
            x->access_set_cookie = true;
        } else {
            ok = header_credential(c, now_s, &tries) || cookie_credential(c, now_s, &tries);
        }
    }
    if (!ok) {
        if (c->px->fauth != NULL && forward_prepare(c))
            x->access = ACCESS_FORWARD;
        /* A template may open its sessions; that is known from the record
         * only, so the check waits for the lookup (conn_access_template). */
        x->access_by_template =
            m->route->access_by_template && wg_config_any_public_template(c->px->cfg);
        return;
    }
    x->access = ACCESS_CHECK;
    /* A redirect only where a client follows it with the same request: a
     * WebSocket or a POST keeps its token, stripped upstream. */
    if (in_query && (req->method_id == HTTP_GET || req->method_id == HTTP_HEAD) &&
        !req->upgrade_websocket) {
        int64_t expires = x->access_set_cookie ? x->access_expires : 0;
        x->access_redirect = build_redirect(c, m, qtok, qlen, now_s, expires);
        if (!x->access_redirect)
            wg_buf_reset(&x->access_reply);
    }
}

static const char signin_page[] =
    "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
    "<meta name=\"viewport\" content=\"width=device-width\">"
    "<title>Private preview</title>"
    "<style>body{font:16px system-ui,sans-serif;margin:20vh auto;max-width:32em;"
    "text-align:center;color:#333}</style></head>\n"
    "<body><h1>This preview is private</h1>"
    "<p>Open it with the link you were given: the link signs you in.</p>"
    "<p>If it has expired or was revoked, ask for a new one.</p></body></html>\n";

static const char denied_json[] =
    "{\"error\":\"unauthorized\",\"detail\":\"this session is private: send a signed link's "
    "token in the wg_token cookie, the X-Wakegate-Token header or the wg_token query "
    "parameter\"}\n";

void conn_access_deny(struct wg_conn *c)
{
    static const char challenge[] = "WWW-Authenticate: Wakegate-Token\r\n";

    c->px->stats.access_denied++;
    if (c->x->req_class == RC_NAVIGATE)
        conn_send_local(c, 401, "text/html; charset=utf-8", challenge, signin_page,
                        sizeof(signin_page) - 1);
    else
        conn_send_local(c, 401, "application/json", challenge, denied_json,
                        sizeof(denied_json) - 1);
}

bool conn_access_template_open(struct wg_conn *c, const struct wg_sess_view *v)
{
    const struct wg_sessions_cfg *t;

    /* Only a record that was read says which template: not found, Redis
     * away or a template a reload removed all stay private, so a session
     * that does not exist answers as a private one does. */
    if ((v->status != WG_SESS_READY && v->status != WG_SESS_NOT_RUNNING) ||
        v->template_name == NULL)
        return false;
    t = wg_config_template(c->px->cfg, v->template_name);
    return t != NULL && t->access_public;
}

bool conn_access_check(struct wg_conn *c, const struct wg_sess_view *v)
{
    struct exchange *x = c->x;

    switch (x->access) {
    case ACCESS_OPEN:
    case ACCESS_FORWARD: /* allowed by the service: ACCESS_OPEN by now */
        return true;
    case ACCESS_DENIED:
        conn_access_deny(c);
        return false;
    case ACCESS_CHECK:
        break;
    }
    switch (v->status) {
    case WG_SESS_PENDING:
    case WG_SESS_UNAVAILABLE:
        return true; /* waits for the record, or 503: nothing of the session shows */
    case WG_SESS_NOT_FOUND:
        conn_access_deny(c);
        return false;
    case WG_SESS_READY:
    case WG_SESS_NOT_RUNNING:
        break;
    }
    if (v->gen != x->access_gen) {
        conn_access_deny(c); /* revoked */
        return false;
    }
    if (x->access_redirect) {
        c->px->stats.access_links++;
        conn_send_local(c, 303, "text/plain; charset=utf-8", wg_buf_head(&x->access_reply), "", 0);
        return false;
    }
    return true;
}

/* ---- access.forward_auth ----------------------------------------------------- */

/* 401 or 403 from the service, passed back with its WWW-Authenticate and
 * Location. */
static void forward_denied(struct wg_conn *c, const struct wg_fauth_answer *a)
{
    char extra[2 * WG_FAUTH_HEADER_MAX + 64] = ""; /* the service may send neither header */
    int n = 0;

    c->px->stats.access_denied++;
    if (a->www_authenticate[0])
        n += snprintf(extra + n, sizeof(extra) - (size_t)n, "WWW-Authenticate: %s\r\n",
                      a->www_authenticate);
    if (a->location[0])
        n += snprintf(extra + n, sizeof(extra) - (size_t)n, "Location: %s\r\n", a->location);
    if (a->status == 401 && c->x->req_class == RC_NAVIGATE)
        conn_send_local(c, 401, "text/html; charset=utf-8", extra, signin_page,
                        sizeof(signin_page) - 1);
    else if (a->status == 401)
        conn_send_local(c, 401, "application/json", extra, denied_json, sizeof(denied_json) - 1);
    else
        conn_send_local(c, 403, "application/json", extra, "{\"error\":\"forbidden\"}\n", 22);
}

/* Acts on an answer; true when allowed. */
static bool forward_answer(struct wg_conn *c, const struct wg_fauth_answer *a)
{
    if (a->status == 200) {
        c->x->access = ACCESS_OPEN;
        return true;
    }
    if (a->status == 401 || a->status == 403)
        forward_denied(c, a);
    else
        conn_send_error(c, 503); /* failed or timed out: deny, never allow */
    return false;
}

static void forward_done(void *arg, const struct wg_fauth_answer *a)
{
    struct wg_conn *c = arg;

    c->x->fauth_req = NULL;
    if (c->closing)
        return;
    if (forward_answer(c, a))
        conn_session_route(c);
}

bool conn_access_forward(struct wg_conn *c)
{
    struct exchange *x = c->x;
    struct wg_fauth_answer a;

    if (x->fauth_req != NULL)
        return false;
    if (wg_fauth_cached(c->px->fauth, x->fauth_key, &a))
        return forward_answer(c, &a);
    if (wg_fauth_start(c->px->fauth, x->fauth_key, wg_buf_head(&x->access_reply),
                       wg_buf_size(&x->access_reply), forward_done, c, &x->fauth_req) < 0) {
        conn_send_error(c, 503);
        return false;
    }
    /* Held (no lookup, no wake) until the service answers; its own timeout
     * is access.forward_auth.timeout. */
    if (x->wait_start_ms == 0)
        x->wait_start_ms = conn_now_ms(c);
    c->state = CS_WAITING;
    conn_update_reading(c);
    conn_arm(c);
    return false;
}

void conn_access_cancel(struct wg_conn *c)
{
    if (c->x != NULL && c->x->fauth_req != NULL) {
        wg_fauth_cancel(c->x->fauth_req);
        c->x->fauth_req = NULL;
    }
}
