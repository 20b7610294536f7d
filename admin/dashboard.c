/* admin/dashboard.c - see dashboard.h. Serving is a table lookup: the assets
 * are constant bytes in the binary, so there is nothing to open, allocate
 * or free, and no path ever reaches the file system. */
#include "admin/dashboard.h"

#include <stdbool.h>
#include <string.h>

#include "admin/listener.h"

#define DASHBOARD_PATH "/dashboard"

/* The page loads its script, style and icon from this origin and talks only
 * to this origin's /v1 and /metrics; nothing else may run, load or frame
 * it. No 'unsafe-inline': the HTML has no inline script or style. The
 * admin listener adds "Cache-Control: no-store" to every answer, which suits
 * assets that change with each build and a page that must never be served
 * stale from a shared cache. */
#define SECURITY_HEADERS                                                                           \
    "Content-Security-Policy: default-src 'self'; script-src 'self'; style-src 'self'; "           \
    "img-src 'self'; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "    \
    "form-action 'self'; frame-ancestors 'none'\r\n"                                               \
    "X-Content-Type-Options: nosniff\r\n"                                                          \
    "X-Frame-Options: DENY\r\n"                                                                    \
    "Referrer-Policy: no-referrer\r\n"                                                             \
    "Cross-Origin-Opener-Policy: same-origin\r\n"                                                  \
    "Cross-Origin-Resource-Policy: same-origin\r\n"

static bool span_is(const char *s, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(s, lit, len) == 0;
}

/* "/dashboard" itself or anything under "/dashboard/" ("/dashboardx" is not
 * ours). */
static bool is_dashboard_path(const char *path, size_t len)
{
    size_t pl = sizeof(DASHBOARD_PATH) - 1;
    return len >= pl && memcmp(path, DASHBOARD_PATH, pl) == 0 && (len == pl || path[pl] == '/');
}

const struct wg_asset *wg_dashboard_find(const char *path, size_t path_len)
{
    size_t pl = sizeof(DASHBOARD_PATH) - 1;
    const char *name;
    size_t name_len;

    if (!is_dashboard_path(path, path_len))
        return NULL;
    name = path + pl;
    name_len = path_len - pl;
    if (name_len > 0) { /* skip the '/' */
        name++;
        name_len--;
    }
    if (name_len == 0) {
        name = "index.html";
        name_len = strlen(name);
    }
    for (const struct wg_asset *a = wg_dashboard_assets; a->name != NULL; a++)
        if (span_is(name, name_len, a->name))
            return a;
    return NULL;
}

static void respond_not_allowed(struct wg_admin_req *req)
{
    wg_admin_respond_error(req, 405, "Allow: GET, HEAD\r\n" SECURITY_HEADERS, "method not allowed");
}

static void respond_redirect(struct wg_admin_req *req)
{
    static const char body[] = "see " DASHBOARD_PATH "\n";
    wg_admin_respond_headers(req, 302, "text/plain; charset=utf-8",
                             "Location: " DASHBOARD_PATH "\r\n" SECURITY_HEADERS, body,
                             sizeof(body) - 1);
}

/* The admin's handler for "/": the built-in paths never come here, and /v1/
 * only when no API handler took it (role proxy) - after the token check. */
static void dashboard_handle(void *arg, struct wg_admin_req *req,
                             const struct wg_admin_request *info)
{
    bool get = span_is(info->method, info->method_len, "GET") ||
               span_is(info->method, info->method_len, "HEAD");
    bool root = span_is(info->path, info->path_len, "/");

    if (!root && !is_dashboard_path(info->path, info->path_len)) {
        wg_admin_respond_error(req, 404, NULL, "not found");
        return;
    }
    if (!get) {
        respond_not_allowed(req);
        return;
    }
    if (root) {
        respond_redirect(req);
        return;
    }
    const struct wg_asset *a = wg_dashboard_find(info->path, info->path_len);
    if (a == NULL) {
        wg_admin_respond_error(req, 404, SECURITY_HEADERS, "not found");
        return;
    }
    wg_admin_respond_headers(req, 200, a->content_type, SECURITY_HEADERS, (const char *)a->data,
                             a->len);
}

int wg_dashboard_register(struct wg_admin *admin)
{
    /* The handler needs no state; its arg is a tag of its own so that
     * wg_admin_remove_hooks() with anyone else's arg (NULL included) leaves
     * it in place. */
    static char tag;
    return wg_admin_add_async_handler(admin, "/", dashboard_handle, &tag);
}
