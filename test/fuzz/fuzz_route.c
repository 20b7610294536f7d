/* test/fuzz/fuzz_route.c - the router: pattern compilation and matching.
 *
 * Input: one flags byte, then '\n'-separated lines.
 *   flags & 1: the first four lines are a route of our own (host pattern,
 *              path prefix, header name, header value; an empty line is
 *              "not set"), compiled in front of the fixed table below.
 *   flags & 2: that route strips its prefix.
 * The next lines are the request: Host value, target, then header fields
 * "name:value" (no ':' gives an empty value). Host, target and fields are
 * passed as spans into the input itself, so any read past them is caught. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/route.h"

#define MAX_FIELDS 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Every shape of pattern, so that random requests reach every match path. */
static const struct wg_route_cfg fixed[] = {
    {.host = "static.example.com", .has_upstream = true},
    {.host = "{session}.preview.localhost"},
    {.host = "s-{session}-app.preview.example.com"},
    {.host = "[::1]"},
    {.path_prefix = "/api/sessions/{session}/", .strip_prefix = true},
    {.path_prefix = "/files/{session}", .strip_prefix = true},
    {.path_prefix = "/static", .strip_prefix = true},
    {.path_prefix = "/assets/"},
    {.host = "api.example.com", .path_prefix = "/s/{session}/x", .strip_prefix = true},
    {.header_name = "X-Session", .header_value = "{session}"},
    {.path_prefix = "/v/", .header_name = "X-Mode", .header_value = "canary"},
    {.header_name = "X-Debug", .header_value = "*"},
};
#define FIXED_LEN (sizeof(fixed) / sizeof(fixed[0]))

struct reader {
    const char *p;
    const char *end;
};

static bool next_line(struct reader *r, const char **ret, size_t *ret_len)
{
    const char *nl;

    if (r->p >= r->end)
        return false;
    nl = memchr(r->p, '\n', (size_t)(r->end - r->p));
    *ret = r->p;
    *ret_len = nl ? (size_t)(nl - r->p) : (size_t)(r->end - r->p);
    r->p = nl ? nl + 1 : r->end;
    return true;
}

/* An empty or missing line leaves the field unset. */
static char *line_dup(struct reader *r)
{
    const char *s;
    size_t len;

    if (!next_line(r, &s, &len) || len == 0)
        return NULL;
    return strndup(s, len);
}

static bool inside(const char *p, size_t len, const char *s, size_t s_len)
{
    return s != NULL && p >= s && len <= s_len && p - s <= (ptrdiff_t)(s_len - len);
}

static bool session_chars(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

static void check_match(const struct wg_router *router, const struct wg_route_input *in)
{
    struct wg_route_match m, again;
    size_t path_len = 0;
    int rc = wg_router_match(router, in, &m);

    CHECK(rc == 0 || rc == WG_ROUTE_NO_MATCH);
    CHECK(wg_router_match(router, in, &again) == rc);
    CHECK(memcmp(&m, &again, sizeof(m)) == 0);
    if (rc == WG_ROUTE_NO_MATCH) {
        CHECK(m.route == NULL && m.session == NULL && m.strip_len == 0);
        return;
    }
    CHECK(m.route != NULL);
    CHECK(m.route->index < wg_router_len(router));
    CHECK(m.route->captures_session == (m.session != NULL));
    if (m.session != NULL) {
        bool found = inside(m.session, m.session_len, in->host, in->host_len) ||
                     inside(m.session, m.session_len, in->target, in->target_len);

        for (size_t i = 0; i < in->fields_len; i++)
            found = found ||
                    inside(m.session, m.session_len, in->fields[i].value, in->fields[i].value_len);
        CHECK(m.session_len > 0);
        CHECK(found);
        CHECK(session_chars(m.session, m.session_len));
    } else {
        CHECK(m.session_len == 0);
    }
    while (path_len < in->target_len && in->target[path_len] != '?' && in->target[path_len] != '#')
        path_len++;
    CHECK(m.strip_len <= in->target_len);
    CHECK(m.strip_len <= path_len);
    CHECK(m.strip_len == 0 || (m.route->strip_prefix && in->target[0] == '/'));
}

static struct wg_router *fixed_router(void)
{
    static struct wg_router *router;
    char err[256];

    /* Built once and kept: it is still reachable at exit, so not a leak. */
    if (router == NULL && wg_router_new(fixed, FIXED_LEN, &router, err, sizeof(err)) != 0) {
        fprintf(stderr, "fixed table: %s\n", err);
        abort();
    }
    return router;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct reader r = {(const char *)data, (const char *)data + size};
    struct wg_route_cfg cfgs[FIXED_LEN + 1];
    struct wg_router *own = NULL;
    const struct wg_router *router = fixed_router();
    struct wg_http_field fields[MAX_FIELDS];
    struct wg_route_input in = {.fields = fields};
    uint8_t flags;

    if (size == 0)
        return 0;
    flags = data[0];
    r.p++;
    memset(cfgs, 0, sizeof(cfgs));
    if (flags & 1) {
        char err[256] = "";
        int rc;

        cfgs[0].host = line_dup(&r);
        cfgs[0].path_prefix = line_dup(&r);
        cfgs[0].header_name = line_dup(&r);
        cfgs[0].header_value = line_dup(&r);
        cfgs[0].strip_prefix = flags & 2;
        memcpy(&cfgs[1], fixed, sizeof(fixed));
        rc = wg_router_new(cfgs, FIXED_LEN + 1, &own, err, sizeof(err));
        CHECK(rc == 0 || rc == -EINVAL);
        if (rc == 0) {
            CHECK(wg_router_len(own) == FIXED_LEN + 1);
            router = own;
        } else {
            CHECK(strncmp(err, "routes[0]: match.", 17) == 0);
            CHECK(own == NULL);
        }
        free(cfgs[0].host);
        free(cfgs[0].path_prefix);
        free(cfgs[0].header_name);
        free(cfgs[0].header_value);
    }

    next_line(&r, &in.host, &in.host_len);
    next_line(&r, &in.target, &in.target_len);
    while (in.fields_len < MAX_FIELDS) {
        struct wg_http_field *f = &fields[in.fields_len];
        const char *colon;
        const char *s;
        size_t len;

        if (!next_line(&r, &s, &len))
            break;
        colon = memchr(s, ':', len);
        f->name = s;
        f->name_len = colon ? (size_t)(colon - s) : len;
        f->value = colon ? colon + 1 : s + len;
        f->value_len = colon ? len - f->name_len - 1 : 0;
        in.fields_len++;
    }
    check_match(router, &in);

    wg_router_free(own);
    return 0;
}
