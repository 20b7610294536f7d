/* admin/api_route.c - which handler a /v1/ request goes to, the routes the
 * read-only token may read, and the query strings the handlers read. The
 * token was checked by the admin listener before any of this runs. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "admin/api_int.h"

const char *const wg_api_read_routes[] = {
    "/v1/sessions", "/v1/sessions/{id}", "/v1/events", "/v1/openapi.json", "/v1/hosts", NULL,
};

const struct wg_api_op wg_api_ops[] = {
    {"/v1/sessions", WG_API_GET | WG_API_HEAD | WG_API_POST, "GET, HEAD, POST", WG_API_SESSIONS},
    {"/v1/sessions/{id}", WG_API_GET | WG_API_HEAD | WG_API_DELETE, "GET, HEAD, DELETE",
     WG_API_SESSION},
    {"/v1/sessions/{id}/wake", WG_API_POST, "POST", WG_API_WAKE},
    {"/v1/sessions/{id}/sleep", WG_API_POST, "POST", WG_API_SLEEP},
    {"/v1/sessions/{id}/keepalive", WG_API_POST, "POST", WG_API_KEEPALIVE},
    {"/v1/sessions/{id}/links", WG_API_POST, "POST", WG_API_LINKS},
    {"/v1/sessions/{id}/revoke", WG_API_POST, "POST", WG_API_REVOKE},
    {"/v1/sessions/{id}/events", WG_API_POST, "POST", WG_API_RECORD},
    /* The stream has no HEAD: it would be a stream with no body. */
    {"/v1/events", WG_API_GET, "GET", WG_API_EVENTS},
    {"/v1/openapi.json", WG_API_GET | WG_API_HEAD, "GET, HEAD", WG_API_OPENAPI},
    {"/v1/hosts", WG_API_GET | WG_API_HEAD, "GET, HEAD", WG_API_HOSTS},
    {NULL, 0, NULL, 0},
};

static unsigned method_bit(const char *m, size_t n)
{
    return api_span_is(m, n, "GET")      ? WG_API_GET
           : api_span_is(m, n, "HEAD")   ? WG_API_HEAD
           : api_span_is(m, n, "POST")   ? WG_API_POST
           : api_span_is(m, n, "DELETE") ? WG_API_DELETE
                                         : 0;
}

/* Whether path has the pattern's shape; *sid and *sid_len get the {id}
 * segment (any non-empty segment: it is checked after the method). */
static bool op_match(const char *pat, const char *path, size_t len, const char **sid,
                     size_t *sid_len)
{
    const char *s = path, *end = path + len;

    while (*pat != '\0') {
        if (strncmp(pat, "{id}", 4) == 0) {
            const char *slash = memchr(s, '/', (size_t)(end - s));
            const char *seg_end = slash ? slash : end;
            if (seg_end == s)
                return false;
            *sid = s;
            *sid_len = (size_t)(seg_end - s);
            s = seg_end;
            pat += 4;
            continue;
        }
        if (s == end || *pat != *s)
            return false;
        pat++;
        s++;
    }
    return s == end;
}

int wg_api_route(const char *method, size_t method_len, const char *path, size_t path_len,
                 enum wg_api_route_kind *kind, char id[WG_SESSION_ID_MAX + 1], const char **allow)
{
    unsigned m = method_bit(method, method_len);

    *allow = NULL;
    for (const struct wg_api_op *op = wg_api_ops; op->path != NULL; op++) {
        const char *sid = NULL;
        size_t sid_len = 0;

        if (!op_match(op->path, path, path_len, &sid, &sid_len))
            continue;
        *kind = op->kind;
        *allow = op->allow;
        if (!(op->methods & m))
            return 405;
        if (sid == NULL)
            return 0;
        if (!wg_session_id_valid(sid, sid_len))
            return 400;
        memcpy(id, sid, sid_len);
        id[sid_len] = '\0';
        return 0;
    }
    return 404;
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
    case WG_API_KEEPALIVE:
        api_handle_keepalive(api, req, info, id);
        break;
    case WG_API_LINKS:
        api_handle_links(api, req, info, id);
        break;
    case WG_API_REVOKE:
        api_handle_revoke(api, req, id);
        break;
    case WG_API_RECORD:
        api_handle_record_event(api, req, info, id);
        break;
    case WG_API_EVENTS:
        api_handle_events(api, req, info);
        break;
    case WG_API_OPENAPI:
        api_handle_openapi(req, info);
        break;
    case WG_API_HOSTS:
        api_handle_hosts(api, req);
        break;
    }
}

void api_handle(void *arg, struct wg_admin_req *req, const struct wg_admin_request *info)
{
    struct wg_api *api = arg;
    enum wg_api_route_kind kind = WG_API_SESSIONS;
    char id[WG_SESSION_ID_MAX + 1] = "";
    const char *allow = NULL;
    int st =
        wg_api_route(info->method, info->method_len, info->path, info->path_len, &kind, id, &allow);

    if (refuse_route(req, st, allow))
        return;
    if (api->freeing) {
        wg_admin_respond_error(req, 503, NULL, "shutting down");
        return;
    }
    handle_route(api, req, info, kind, id);
}
