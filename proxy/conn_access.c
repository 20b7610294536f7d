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

/* A credential: valid MAC, this session, not expired. */
static bool credential_ok(struct wg_conn *c, const char *tok, size_t len, int64_t now_s)
{
    struct wg_access_claims cl;
    struct exchange *x = c->x;

    if (wg_access_verify(c->px->access_key, tok, len, &cl) != 0)
        return false;
    if (strcmp(cl.id, x->session_id) != 0 || cl.expires <= now_s)
        return false;
    x->access_gen = cl.gen;
    return true;
}

static bool header_credential(struct wg_conn *c, int64_t now_s)
{
    const struct wg_http_msg *req = &c->x->req;
    size_t nl = sizeof(WG_ACCESS_HEADER) - 1;

    for (size_t i = 0; i < req->fields_len; i++) {
        const struct wg_http_field *f = &req->fields[i];
        if (wg_http_field_named(f, WG_ACCESS_HEADER, nl) &&
            credential_ok(c, f->value, f->value_len, now_s))
            return true;
    }
    return false;
}

static bool cookie_credential(struct wg_conn *c, int64_t now_s)
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
                credential_ok(c, val, vlen, now_s))
                return true;
        }
    }
    return false;
}

/* https as the client sees it: only a trusted proxy's X-Forwarded-Proto
 * says so (wakegate's own listener is plain HTTP). */
static bool client_https(struct wg_conn *c)
{
    const struct wg_http_field *f;

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
    if (c->px->access_key == NULL)
        return; /* fail closed: no key to check with (see wg_config_validate) */
    int64_t now_s = wg_clock_wall_ms() / 1000;
    bool in_query =
        wg_access_query_find(req->target, req->target_len, WG_ACCESS_QUERY, &qtok, &qlen);
    if (in_query && credential_ok(c, qtok, qlen, now_s)) {
        ok = true;
        x->access_set_cookie = true;
    } else {
        ok = header_credential(c, now_s) || cookie_credential(c, now_s);
    }
    if (!ok)
        return;
    x->access = ACCESS_CHECK;
    /* A redirect only where a client follows it with the same request: a
     * WebSocket or a POST keeps its token, stripped upstream. */
    if (in_query && (req->method_id == HTTP_GET || req->method_id == HTTP_HEAD) &&
        !req->upgrade_websocket) {
        int64_t expires = 0;
        struct wg_access_claims cl;
        if (x->access_set_cookie && wg_access_verify(c->px->access_key, qtok, qlen, &cl) == 0)
            expires = cl.expires;
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

bool conn_access_check(struct wg_conn *c, const struct wg_sess_view *v)
{
    struct exchange *x = c->x;

    switch (x->access) {
    case ACCESS_OPEN:
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
