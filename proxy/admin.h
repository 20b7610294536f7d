/* proxy/admin.h - the admin listener: a small HTTP/1.1 server, separate
 * from the public one, for /healthz (liveness), /readyz (readiness) and
 * /metrics. Other parts register handlers for their own paths.
 *
 * The public listener never routes here, whatever the Host. */
#ifndef WG_PROXY_ADMIN_H
#define WG_PROXY_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "common/buf.h"
#include "common/config.h"
#include "common/log.h"

struct wg_admin; /* opaque */
struct wg_proxy;

/* Readiness: return true when ready; else write a short reason. */
typedef bool wg_admin_ready_fn(void *arg, char *why, size_t whylen);
/* Appends Prometheus text exposition lines to out. */
typedef void wg_admin_metrics_fn(void *arg, struct wg_buf *out);

struct wg_admin_request {
    const char *method;
    size_t method_len;
    const char *path; /* without the query */
    size_t path_len;
    const char *query; /* after '?', or NULL */
    size_t query_len;
    const char *body;
    size_t body_len;
};

/* A handler writes its body to out and sets *content_type; returns the
 * HTTP status. Runs synchronously. */
typedef int wg_admin_handler_fn(void *arg, const struct wg_admin_request *req,
                                struct wg_buf *out, const char **content_type);

/* px may be NULL (no proxy metrics). cfg, log and px must outlive it. */
int wg_admin_new(uv_loop_t *loop, const struct wg_config *cfg, struct wg_log *log,
                 struct wg_proxy *px, struct wg_admin **ret_admin);
/* Binds cfg->admin_listen; *ret_port (may be NULL) gets the bound port. */
int wg_admin_listen(struct wg_admin *admin, int *ret_port);
/* Adds a readiness condition; all must hold for /readyz to answer 200. */
int wg_admin_add_ready_check(struct wg_admin *admin, wg_admin_ready_fn *fn, void *arg);
int wg_admin_add_metrics(struct wg_admin *admin, wg_admin_metrics_fn *fn, void *arg);
/* Serves requests whose path starts with prefix. */
int wg_admin_add_handler(struct wg_admin *admin, const char *prefix, wg_admin_handler_fn *fn,
                         void *arg);
/* From now on /readyz answers 503 "shutting down". */
void wg_admin_set_draining(struct wg_admin *admin);
/* Closes the listener and connections; frees itself when they are closed. */
void wg_admin_free(struct wg_admin *admin);

#endif
