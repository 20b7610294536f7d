/* admin/dashboard.h - the operator dashboard on the admin listener.
 *
 * Static HTML, JS and CSS from admin/dashboard/, embedded in the binary at
 * build time (tools/embed.py writes dashboard_assets.c), served in every
 * role:
 *
 *   GET /                      302 to /dashboard
 *   GET /dashboard[/]          index.html
 *   GET /dashboard/NAME        the embedded file NAME, else 404
 *
 * The page holds no data, so fetching it needs no token. The script reads
 * /v1/sessions and /v1/events with the token the operator gives it (the
 * read-only one is enough; from the URL fragment, which browsers never
 * send, or a form; kept in the tab's sessionStorage) and /metrics, which
 * needs none. Every answer carries a
 * Content-Security-Policy that allows nothing but this origin. */
#ifndef WG_ADMIN_DASHBOARD_H
#define WG_ADMIN_DASHBOARD_H

#include <stddef.h>

struct wg_admin;

/* One embedded file. */
struct wg_asset {
    const char *name;         /* file name under /dashboard/, e.g. "app.js" */
    const char *content_type; /* from the file's extension */
    const unsigned char *data;
    size_t len;
};

/* Generated (dashboard_assets.c); the last entry has name NULL. */
extern const struct wg_asset wg_dashboard_assets[];
/* Generated (api_openapi_doc.c): docs/openapi.json, then the end entry. */
extern const struct wg_asset wg_api_openapi[];

/* The asset a request path names (path_len bytes, no query), or NULL.
 * "/dashboard" and "/dashboard/" name index.html. */
const struct wg_asset *wg_dashboard_find(const char *path, size_t path_len);

/* Serves the paths above on admin. The handler's prefix is "/", so it
 * answers every path that the built-in ones and the handlers registered
 * before it leave (404 for those that are not its own): register it last.
 * 0 or -errno. */
int wg_dashboard_register(struct wg_admin *admin);

#endif
