/* proxy/route.h - the router: Host / path prefix / header -> route.
 *
 * Routes are compiled once from the configuration into a self-contained
 * table (the router copies what it needs; the config may be freed after).
 * The first route whose every condition matches wins. Matching allocates
 * nothing and touches only the spans it is given.
 *
 * Host patterns: an exact host ("static.example.com", compared without case
 * and without the ":port" of the Host header), or one label holding
 * "{session}" with optional literal text around it inside that label
 * ("{session}.preview.localhost", "s-{session}.preview.example.com"). The
 * captured text is non-empty and holds no '.'.
 * Path prefixes: a literal prefix ("/static/"), which may hold one
 * "{session}" segment ("/api/sessions/{session}/"); the captured text is
 * non-empty and holds no '/'. Matching is on the path only (before '?' or
 * '#'), byte for byte: no case folding, no percent-decoding, no dot-segment
 * removal. A prefix that does not end in '/' stops at a segment boundary:
 * "/static" matches "/static", "/static/x" and "/static?q", not "/staticfoo".
 * Headers: a name (no case) and a value that is exact, "*" (present), or
 * "{session}" (present, non-empty; captured). Only the first field with the
 * name is looked at, so a repeated field cannot override it.
 *
 * Every {session} capture is a non-empty run of [A-Za-z0-9_-]; input with
 * any other byte there does not match. The captured span is returned as
 * received (case kept). A route holds at most one "{session}" in all its
 * conditions.
 *
 * Named ports: a session route may also hold one "{port}", in the host or
 * the path, which captures a non-empty run of [A-Za-z0-9] (a port name of
 * the session's template, common/config.h). In a path it is a whole
 * segment ("/s/{session}/{port}/"). In a host it is a label of its own
 * ("{port}.{session}.preview.example.com"), or shares the session's label
 * with a separator that a port name cannot hold on the port's side
 * ("{port}-{session}.preview.example.com", "{session}--{port}.x"): a port
 * name holds no '-', '_' or '.', so the split is never in doubt, whatever
 * '-' the session id holds. One label keeps every port under one wildcard
 * certificate. A {port} route must capture {session} and set no port:.
 * The Host value loses its ":port" ("[::1]:8080" -> "[::1]") and one
 * trailing '.'; a missing or malformed Host matches no host condition. */
#ifndef WG_PROXY_ROUTE_H
#define WG_PROXY_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "common/config.h"
#include "common/http_head.h"

struct wg_router; /* opaque */

/* A compiled route, owned by its router; read-only for callers. */
struct wg_route {
    size_t index; /* position in the routes list */
    int line;     /* config line, 0 if unknown */
    bool strip_prefix;
    bool has_upstream; /* static upstream route */
    struct sockaddr_storage upstream;
    socklen_t upstream_len;
    char upstream_text[80];  /* "127.0.0.1:9000", for logs */
    unsigned port;           /* session routes: container port (0 = default) */
    bool captures_session;   /* some condition holds {session} */
    bool captures_port;      /* some condition holds {port}: the session's named port */
    bool access_public;      /* session routes: access: public (no credentials needed) */
    bool access_by_template; /* access not written: the session's template decides */
};

struct wg_route_input {
    const char *host; /* Host header value as received, may end in ":port" */
    size_t host_len;
    const char *target; /* origin-form request target: path, maybe "?query" */
    size_t target_len;
    const struct wg_http_field *fields; /* request header fields */
    size_t fields_len;
};

struct wg_route_match {
    const struct wg_route *route;
    const char *session; /* span of the captured {session}, or NULL */
    size_t session_len;
    const char *port; /* span of the captured {port} (a port name, case kept), or NULL */
    size_t port_len;
    size_t strip_len;  /* leading target bytes to drop (strip_prefix), else 0 */
    size_t prefix_len; /* leading target bytes the path prefix covered (0: no path condition) */
};
/* strip_len counts the target bytes the matched path_prefix covers. The
 * caller removes them, and when what remains does not start with '/' it
 * prepends one: "/static" on "/static?q" leaves "?q", forwarded as "/?q";
 * "/api/sessions/{session}/" on "/api/sessions/7/x" leaves "x" -> "/x". */

#define WG_ROUTE_NO_MATCH 1

/* Bytes of a route's label, with its NUL (wg_router_label()). */
#define WG_ROUTE_LABEL_MAX 160

/* Compiles n routes. On success *ret_router is live (free with
 * wg_router_free()); on error returns -EINVAL/-ENOMEM and writes a message
 * naming the route ("routes[2] (line 14): match.host: ...") to err. */
int wg_router_new(const struct wg_route_cfg *routes, size_t n, struct wg_router **ret_router,
                  char *err, size_t errlen);
/* NULL-safe. */
void wg_router_free(struct wg_router *router);
size_t wg_router_len(const struct wg_router *router);
/* A readable name of routes[i] for metrics and logs, made when the router is
 * built: the index and the conditions as configured, "{session}" written as
 * "<session>" (a '}' inside a label value trips simple scrapers):
 * "0:host=<session>.preview.localhost", "2:path=/static/,header=X-Mode:canary",
 * "3:any". Cut with "..." past WG_ROUTE_LABEL_MAX - 1 bytes. Not escaped for
 * any format. NULL when i is out of range. */
const char *wg_router_label(const struct wg_router *router, size_t i);

/* Returns 0 with *m filled, or WG_ROUTE_NO_MATCH with *m zeroed. Allocates
 * nothing; the spans in *m point into in's buffers and live as long as they
 * do, m->route as long as the router. */
int wg_router_match(const struct wg_router *router, const struct wg_route_input *in,
                    struct wg_route_match *m);

#endif
