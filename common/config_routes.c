/* common/config_routes.c - routes[]: the keys of one entry and the checks
 * of an entry as a whole (a match condition, at most one {session}, a
 * fixed upstream or a session capture). */
#include "common/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/config_int.h"

#define SESSION_TOKEN "{session}"
#define PORT_TOKEN "{port}"

static const struct field header_fields[] = {
    {.key = "name", .kind = K_STR, IN_ROUTE(header_name)},
    {.key = "value", .kind = K_STR, IN_ROUTE(header_value)},
    {.key = NULL},
};

static const struct field match_fields[] = {
    {.key = "host", .kind = K_STR, IN_ROUTE(host)},
    {.key = "path_prefix", .kind = K_STR, IN_ROUTE(path_prefix)},
    {.key = "header", .kind = K_MAP, .sub = header_fields},
    {.key = NULL},
};

const struct field config_route_fields[] = {
    {.key = "match", .kind = K_MAP, .sub = match_fields},
    {.key = "strip_prefix", .kind = K_BOOL, IN_ROUTE(strip_prefix)},
    {.key = "upstream", .kind = K_UPSTREAM, IN_ROUTE(upstream)},
    {.key = "port", .kind = K_UINT, IN_ROUTE(port), .min = 1, .max = 65535},
    {.key = "access", .kind = K_STR, IN_ROUTE(access)},
    {.key = NULL},
};

static size_t count_token(const char *s, const char *token)
{
    size_t n = 0;

    for (const char *p = s; p != NULL && (p = strstr(p, token)) != NULL; p += strlen(token))
        n++;
    return n;
}

static size_t count_session(const char *s)
{
    return count_token(s, SESSION_TOKEN);
}

/* The length of the capture token at p, or 0. */
static size_t token_at(const char *p)
{
    if (strncmp(p, SESSION_TOKEN, strlen(SESSION_TOKEN)) == 0)
        return strlen(SESSION_TOKEN);
    if (strncmp(p, PORT_TOKEN, strlen(PORT_TOKEN)) == 0)
        return strlen(PORT_TOKEN);
    return 0;
}

/* The router (proxy/route.c) checks how {port} sits beside {session}. */
static bool whole_segment(const char *pp, const char *cap, const char *token)
{
    size_t n = strlen(token);

    return cap == NULL || (cap > pp && cap[-1] == '/' && (cap[n] == '/' || cap[n] == '\0'));
}

/* Characters of RFC 9110 tokens, for header names. */
static bool is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* An error about routes[i], at the route's line when it came from a file. */
static int fail_route(const struct wg_config *cfg, size_t i, const char *sub, char *err,
                      size_t errlen, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int fail_route(const struct wg_config *cfg, size_t i, const char *sub, char *err,
                      size_t errlen, const char *fmt, ...)
{
    const struct wg_route_cfg *r = &cfg->routes[i];
    char msg[WG_CONFIG_ERR_MAX], key[96];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(key, sizeof key, "routes[%zu]%s%s", i, sub[0] != '\0' ? "." : "", sub);
    return config_fail_at(err, errlen, r->line > 0 ? cfg->path : NULL,
                          r->line > 0 ? (size_t)r->line : 0, key, "%s", msg);
}

static int check_host(const struct wg_config *cfg, size_t i, char *err, size_t errlen)
{
    const char *h = cfg->routes[i].host;

    for (const char *p = h; *p != '\0'; p++) {
        size_t token = token_at(p);

        if (token > 0) {
            p += token - 1;
            continue;
        }
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '.' || *p == '_'))
            return fail_route(cfg, i, "match.host", err, errlen,
                              "invalid character '%c' in \"%s\" (a host name without port, "
                              "with at most one {session} and one {port})",
                              *p, h);
    }
    return 0;
}

static int check_path(const struct wg_config *cfg, size_t i, char *err, size_t errlen)
{
    const char *pp = cfg->routes[i].path_prefix;
    const char *cap = strstr(pp, SESSION_TOKEN);

    if (pp[0] != '/')
        return fail_route(cfg, i, "match.path_prefix", err, errlen, "\"%s\" must start with /", pp);
    if (config_has_ctl_or_space(pp) || strpbrk(pp, "?#") != NULL)
        return fail_route(cfg, i, "match.path_prefix", err, errlen,
                          "\"%s\" must be a plain path (no spaces, ? or #)", pp);
    /* The router captures a whole segment, so a partial one would never match as written. */
    if (!whole_segment(pp, cap, SESSION_TOKEN))
        return fail_route(cfg, i, "match.path_prefix", err, errlen,
                          "{session} must be a whole path segment, as in /s/{session}/");
    if (!whole_segment(pp, strstr(pp, PORT_TOKEN), PORT_TOKEN))
        return fail_route(cfg, i, "match.path_prefix", err, errlen,
                          "{port} must be a whole path segment, as in /s/{session}/{port}/");
    return 0;
}

static int check_header(const struct wg_config *cfg, size_t i, char *err, size_t errlen)
{
    const struct wg_route_cfg *r = &cfg->routes[i];

    if (r->header_name == NULL)
        return fail_route(cfg, i, "match.header", err, errlen, "name is required");
    for (const char *p = r->header_name; *p != '\0'; p++)
        if (!is_tchar(*p))
            return fail_route(cfg, i, "match.header.name", err, errlen,
                              "\"%s\" is not a valid header name", r->header_name);
    if (r->header_value != NULL) {
        for (const char *p = r->header_value; *p != '\0'; p++)
            if (((unsigned char)*p < ' ' && *p != '\t') || *p == 0x7f)
                return fail_route(cfg, i, "match.header.value", err, errlen,
                                  "contains a control character");
        if (strstr(r->header_value, PORT_TOKEN) != NULL)
            return fail_route(cfg, i, "match.header.value", err, errlen,
                              "{port} is taken from match.host or match.path_prefix only");
        if (strstr(r->header_value, SESSION_TOKEN) != NULL &&
            strcmp(r->header_value, SESSION_TOKEN) != 0)
            return fail_route(cfg, i, "match.header.value", err, errlen,
                              "to capture, the value must be exactly {session}");
    }
    return 0;
}

int config_check_route(const struct wg_config *cfg, size_t i, char *err, size_t errlen)
{
    const struct wg_route_cfg *r = &cfg->routes[i];
    size_t captures, ports;
    int rc;

    if (r->host == NULL && r->path_prefix == NULL && r->header_name == NULL &&
        r->header_value == NULL)
        return fail_route(cfg, i, "", err, errlen,
                          "a route needs at least one match condition (match.host, "
                          "match.path_prefix or match.header)");
    captures =
        count_session(r->host) + count_session(r->path_prefix) + count_session(r->header_value);
    if (captures > 1)
        return fail_route(cfg, i, "", err, errlen,
                          "{session} appears %zu times; a route captures it once", captures);
    ports = count_token(r->host, PORT_TOKEN) + count_token(r->path_prefix, PORT_TOKEN);
    if (ports > 1)
        return fail_route(cfg, i, "", err, errlen,
                          "{port} appears %zu times; a route captures it once", ports);
    if (ports > 0 && (captures == 0 || r->has_upstream))
        return fail_route(cfg, i, "", err, errlen,
                          "{port} names a port of a session: the route must capture {session} "
                          "too, and have no upstream");
    if (ports > 0 && r->port != 0)
        return fail_route(cfg, i, "port", err, errlen, "the port comes from {port}; remove port:");
    if (r->host != NULL && (rc = check_host(cfg, i, err, errlen)) < 0)
        return rc;
    if (r->path_prefix != NULL && (rc = check_path(cfg, i, err, errlen)) < 0)
        return rc;
    if ((r->header_name != NULL || r->header_value != NULL) &&
        (rc = check_header(cfg, i, err, errlen)) < 0)
        return rc;
    if (r->strip_prefix && r->path_prefix == NULL)
        return fail_route(cfg, i, "strip_prefix", err, errlen, "requires match.path_prefix");
    if (r->port > 65535)
        return fail_route(cfg, i, "port", err, errlen, "%u is out of range (1 to 65535)", r->port);
    if (r->access != NULL && strcmp(r->access, "public") != 0 && strcmp(r->access, "private") != 0)
        return fail_route(cfg, i, "access", err, errlen,
                          "\"%s\" is not public or private (the default)", r->access);
    if (r->access != NULL && r->has_upstream)
        return fail_route(cfg, i, "access", err, errlen,
                          "applies to session routes only (this route has upstream)");
    if (r->has_upstream) {
        const struct sockaddr *sa = (const struct sockaddr *)&r->upstream.sa;
        unsigned port = 0;

        if (sa->sa_family == AF_INET)
            port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
        else if (sa->sa_family == AF_INET6)
            port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
        if (r->upstream.salen == 0 || port == 0)
            return fail_route(cfg, i, "upstream", err, errlen,
                              "\"%s\" needs an address and a port other than 0",
                              r->upstream.text != NULL ? r->upstream.text : "");
        if (captures > 0)
            return fail_route(cfg, i, "", err, errlen,
                              "a route with upstream goes to one fixed address and cannot "
                              "capture {session}");
        if (r->port != 0)
            return fail_route(cfg, i, "port", err, errlen,
                              "applies to session routes only (this route has upstream)");
    } else if (captures == 0) {
        return fail_route(cfg, i, "", err, errlen,
                          "a session route (no upstream) must capture {session} in "
                          "match.host, match.path_prefix or match.header.value");
    }
    return 0;
}
