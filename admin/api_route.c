/* admin/api_route.c - which handler a /v1/ request goes to, the routes the
 * read-only token may read, and the query strings the handlers read. The
 * token was checked by the admin listener before any of this runs. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "admin/api_int.h"

const char *const wg_api_read_routes[] = {
    "/v1/sessions",
    "/v1/sessions/{id}",
    "/v1/events",
    NULL,
};

int wg_api_route(const char *method, size_t method_len, const char *path, size_t path_len,
                 enum wg_api_route_kind *kind, char id[WG_SESSION_ID_MAX + 1], const char **allow)
{
    static const char pfx[] = "/v1/sessions";
    const size_t pl = sizeof(pfx) - 1;
    bool get = api_span_is(method, method_len, "GET") || api_span_is(method, method_len, "HEAD");
    bool post = api_span_is(method, method_len, "POST");
    bool del = api_span_is(method, method_len, "DELETE");
    const char *sid = NULL;
    size_t sid_len = 0;

    *allow = NULL;
    if (api_span_is(path, path_len, "/v1/events")) {
        *kind = WG_API_EVENTS;
        *allow = "GET";
        return api_span_is(method, method_len, "GET") ? 0 : 405;
    }
    if (api_span_is(path, path_len, pfx)) {
        *kind = WG_API_SESSIONS;
        *allow = "GET, HEAD, POST";
        return get || post ? 0 : 405;
    }
    if (path_len <= pl + 1 || memcmp(path, pfx, pl) != 0 || path[pl] != '/')
        return 404;
    sid = path + pl + 1;
    const char *slash = memchr(sid, '/', path_len - pl - 1);
    if (slash == NULL) {
        sid_len = path_len - pl - 1;
        *kind = WG_API_SESSION;
        *allow = "GET, HEAD, DELETE";
        if (!get && !del)
            return 405;
    } else {
        sid_len = (size_t)(slash - sid);
        const char *rest = slash + 1;
        size_t rest_len = path_len - (size_t)(rest - path);
        if (api_span_is(rest, rest_len, "wake"))
            *kind = WG_API_WAKE;
        else if (api_span_is(rest, rest_len, "sleep"))
            *kind = WG_API_SLEEP;
        else
            return 404;
        if (sid_len == 0)
            return 404;
        *allow = "POST";
        if (!post)
            return 405;
    }
    if (!wg_session_id_valid(sid, sid_len))
        return 400;
    memcpy(id, sid, sid_len);
    id[sid_len] = '\0';
    return 0;
}

/* /v1/sessions/{id}/SUFFIX (keepalive, links, revoke), which wg_api_route()
 * does not know. Returns 0 with id set, 404 for any other path, 405 for a
 * method other than POST, 400 for an invalid id. */
static int post_route(const struct wg_admin_request *info, const char *sfx,
                      char id[WG_SESSION_ID_MAX + 1])
{
    static const char pfx[] = "/v1/sessions/";
    const size_t pl = sizeof(pfx) - 1, sl = strlen(sfx);

    if (info->path_len <= pl + sl || memcmp(info->path, pfx, pl) != 0 ||
        memcmp(info->path + info->path_len - sl, sfx, sl) != 0)
        return 404;
    const char *sid = info->path + pl;
    size_t n = info->path_len - pl - sl;
    if (memchr(sid, '/', n) != NULL)
        return 404;
    if (!api_span_is(info->method, info->method_len, "POST"))
        return 405;
    if (!wg_session_id_valid(sid, n))
        return 400;
    memcpy(id, sid, n);
    id[n] = '\0';
    return 0;
}

bool wg_api_query_get(const char *q, size_t qlen, const char *key, const char **val, size_t *vlen)
{
    size_t kl = strlen(key);
    const char *p = q, *end = q ? q + qlen : NULL;
    while (p != NULL && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        const char *ke = eq ? eq : pe;
        if ((size_t)(ke - p) == kl && memcmp(p, key, kl) == 0) {
            *val = eq ? eq + 1 : pe;
            *vlen = eq ? (size_t)(pe - eq - 1) : 0;
            return true;
        }
        p = amp ? amp + 1 : end;
    }
    return false;
}

int wg_api_query_flag(const char *q, size_t qlen, const char *key, bool *ret)
{
    const char *v;
    size_t vl;
    if (!wg_api_query_get(q, qlen, key, &v, &vl)) {
        *ret = false;
        return 0;
    }
    if (vl == 0 || api_span_is(v, vl, "1") || api_span_is(v, vl, "true"))
        *ret = true;
    else if (api_span_is(v, vl, "0") || api_span_is(v, vl, "false"))
        *ret = false;
    else
        return -EINVAL;
    return 0;
}

/* Answers a request that no handler takes (st: 405, 400 or 404); false
 * when st is 0. */
static bool refuse_route(struct wg_admin_req *req, int st, const char *allow)
{
    char hdr[96];
    if (st == 405) {
        snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", allow);
        wg_admin_respond_error(req, 405, hdr, "method not allowed");
    } else if (st == 400) {
        wg_admin_respond_error(req, 400, NULL, "invalid session id");
    } else if (st != 0) {
        wg_admin_respond_error(req, 404, NULL, "not found");
    }
    return st != 0;
}

static void handle_route(struct wg_api *api, struct wg_admin_req *req,
                         const struct wg_admin_request *info, enum wg_api_route_kind kind,
                         const char *id)
{
    bool post = api_span_is(info->method, info->method_len, "POST");
    bool del = api_span_is(info->method, info->method_len, "DELETE");
    switch (kind) {
    case WG_API_SESSIONS:
        if (post)
            api_handle_create(api, req, info);
        else
            api_handle_read(api, req, NULL);
        break;
    case WG_API_SESSION:
        if (del)
            api_handle_command(api, req, info, id, WG_WAKE_OP_DESTROY);
        else
            api_handle_read(api, req, id);
        break;
    case WG_API_WAKE:
        api_handle_command(api, req, info, id, WG_WAKE_OP_WAKE);
        break;
    case WG_API_SLEEP:
        api_handle_command(api, req, info, id, WG_WAKE_OP_SLEEP);
        break;
    case WG_API_EVENTS:
        api_handle_events(api, req, info);
        break;
    }
}

void api_handle(void *arg, struct wg_admin_req *req, const struct wg_admin_request *info)
{
    struct wg_api *api = arg;
    enum wg_api_route_kind kind = WG_API_SESSIONS;
    char id[WG_SESSION_ID_MAX + 1] = "";
    const char *allow = NULL;
    static const char *const posts[] = {"/keepalive", "/links", "/revoke"};
    int post = -1, st = 404;

    for (int i = 0; i < 3 && st == 404; i++) {
        st = post_route(info, posts[i], id);
        if (st != 404) {
            post = i;
            allow = "POST";
        }
    }
    if (post < 0)
        st = wg_api_route(info->method, info->method_len, info->path, info->path_len, &kind, id,
                          &allow);
    if (refuse_route(req, st, allow))
        return;
    if (api->freeing) {
        wg_admin_respond_error(req, 503, NULL, "shutting down");
        return;
    }
    if (post == 0)
        api_handle_keepalive(api, req, info, id);
    else if (post == 1)
        api_handle_links(api, req, info, id);
    else if (post == 2)
        api_handle_revoke(api, req, id);
    else
        handle_route(api, req, info, kind, id);
}
