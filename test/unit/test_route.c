/* test/unit/test_route.c - route compilation and matching. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/route.h"

#define NO_MATCH (-1)
#define MAX_FIELDS 4

/* The table every case in match_cases runs against; the index comments are
 * what the cases' want_route refers to. */
/* clang-format off */
static const struct wg_route_cfg table[] = {
    /* 0 */  {.line = 10, .host = "static.example.com", .has_upstream = true},
    /* 1 */  {.line = 12, .host = "{session}.preview.localhost"},
    /* 2 */  {.line = 13, .host = "s-{session}-app.preview.example.com"},
    /* 3 */  {.line = 14, .path_prefix = "/api/sessions/{session}/", .strip_prefix = true,
              .port = 8000},
    /* 4 */  {.line = 17, .path_prefix = "/static", .strip_prefix = true},
    /* 5 */  {.line = 18, .path_prefix = "/assets/"},
    /* 6 */  {.line = 19, .header_name = "X-Wakegate-Session", .header_value = "{session}"},
    /* 7 */  {.line = 20, .path_prefix = "/v/", .header_name = "X-Mode", .header_value = "canary"},
    /* 8 */  {.line = 21, .header_name = "X-Debug"},
    /* 9 */  {.line = 22, .path_prefix = "/files/{session}", .strip_prefix = true},
    /* 10 */ {.line = 23, .host = "[::1]"},
    /* 11 */ {.line = 24, .host = "api.example.com", .path_prefix = "/sessions/{session}",
              .strip_prefix = true},
    /* 12 */ {.line = 25, .host = "example.org.", .path_prefix = "/", .header_name = "X-Key",
              .header_value = "*"},
};
/* clang-format on */
#define TABLE_LEN (sizeof(table) / sizeof(table[0]))

struct match_case {
    const char *name;
    const char *host; /* NULL: no Host header */
    const char *target;
    const char *fields[MAX_FIELDS][2]; /* name, value; ends at a NULL name */
    int want_route;
    const char *want_session; /* NULL: no capture */
    size_t want_strip;
};

/* clang-format off */
static const struct match_case match_cases[] = {
    /* exact host */
    {"exact host", "static.example.com", "/", {{0}}, 0, NULL, 0},
    {"exact host with port", "static.example.com:8080", "/x", {{0}}, 0, NULL, 0},
    {"exact host, empty port", "static.example.com:", "/", {{0}}, 0, NULL, 0},
    {"exact host, other case", "STATIC.Example.COM", "/", {{0}}, 0, NULL, 0},
    {"exact host, trailing dot", "static.example.com.", "/", {{0}}, 0, NULL, 0},
    {"exact host, trailing dot and port", "static.example.com.:80", "/", {{0}}, 0, NULL, 0},
    {"exact host, two trailing dots", "static.example.com..", "/", {{0}}, NO_MATCH, NULL, 0},
    {"exact host, longer name", "xstatic.example.com", "/", {{0}}, NO_MATCH, NULL, 0},
    {"exact host, parent name", "example.com", "/", {{0}}, NO_MATCH, NULL, 0},
    {"host with a bad port", "static.example.com:8o", "/", {{0}}, NO_MATCH, NULL, 0},
    {"pattern with a trailing dot", "example.org", "/", {{"X-Key", "1"}}, 12, NULL, 0},
    /* IPv6 literals */
    {"IPv6 literal with port", "[::1]:8080", "/", {{0}}, 10, NULL, 0},
    {"IPv6 literal", "[::1]", "/", {{0}}, 10, NULL, 0},
    {"IPv6 literal, unclosed", "[::1", "/", {{0}}, NO_MATCH, NULL, 0},
    {"IPv6 literal, junk after", "[::1]x", "/", {{0}}, NO_MATCH, NULL, 0},
    {"bare IPv6 address", "::1", "/", {{0}}, NO_MATCH, NULL, 0},
    /* {session} labels */
    {"session label", "abc.preview.localhost", "/", {{0}}, 1, "abc", 0},
    {"session label, port and case", "Ab-1_x.PREVIEW.localhost:443", "/", {{0}}, 1, "Ab-1_x", 0},
    {"session label, trailing dot", "abc.preview.localhost.", "/", {{0}}, 1, "abc", 0},
    {"session label, empty", ".preview.localhost", "/", {{0}}, NO_MATCH, NULL, 0},
    {"session label, two labels", "a.b.preview.localhost", "/", {{0}}, NO_MATCH, NULL, 0},
    {"session label, bad char", "a%b.preview.localhost", "/", {{0}}, NO_MATCH, NULL, 0},
    {"session label, prefix and suffix", "s-42-app.preview.example.com", "/", {{0}}, 2, "42", 0},
    {"session label, dash inside", "s-a-b-app.preview.example.com", "/", {{0}}, 2, "a-b", 0},
    {"session label, no prefix", "42-app.preview.example.com", "/", {{0}}, NO_MATCH, NULL, 0},
    {"session label, empty between", "s--app.preview.example.com", "/", {{0}}, NO_MATCH, NULL, 0},
    /* path prefixes */
    {"session segment", "h", "/api/sessions/42/x", {{0}}, 3, "42", 17},
    {"session segment, query", "h", "/api/sessions/42/?a=b", {{0}}, 3, "42", 17},
    {"session segment, no slash after", "h", "/api/sessions/42", {{0}}, NO_MATCH, NULL, 0},
    {"session segment, bad char", "h", "/api/sessions/4.2/x", {{0}}, NO_MATCH, NULL, 0},
    {"session segment, empty", "h", "/api/sessions//x", {{0}}, NO_MATCH, NULL, 0},
    {"session segment, escaped", "h", "/api/sessions/4%2F2/x", {{0}}, NO_MATCH, NULL, 0},
    {"literal prefix, whole path", "h", "/static", {{0}}, 4, NULL, 7},
    {"literal prefix, below", "h", "/static/css/a.css", {{0}}, 4, NULL, 7},
    {"literal prefix, query", "h", "/static?q=1", {{0}}, 4, NULL, 7},
    {"literal prefix, fragment", "h", "/static#top", {{0}}, 4, NULL, 7},
    {"literal prefix, not a boundary", "h", "/staticfoo", {{0}}, NO_MATCH, NULL, 0},
    {"literal prefix, case", "h", "/Static/x", {{0}}, NO_MATCH, NULL, 0},
    {"literal prefix, in query only", "h", "/x?/static", {{0}}, NO_MATCH, NULL, 0},
    {"slash prefix, no strip", "h", "/assets/a.css", {{0}}, 5, NULL, 0},
    {"slash prefix, without slash", "h", "/assets", {{0}}, NO_MATCH, NULL, 0},
    {"slash prefix, longer segment", "h", "/assetsfoo/", {{0}}, NO_MATCH, NULL, 0},
    {"trailing session segment", "h", "/files/abc", {{0}}, 9, "abc", 10},
    {"trailing session segment, below", "h", "/files/abc/readme", {{0}}, 9, "abc", 10},
    {"trailing session segment, query", "h", "/files/abc?raw=1", {{0}}, 9, "abc", 10},
    {"host and path", "api.example.com", "/sessions/7", {{0}}, 11, "7", 11},
    {"host and path, wrong host", "www.example.com", "/sessions/7", {{0}}, NO_MATCH, NULL, 0},
    /* headers */
    {"header capture", "h", "/", {{"X-Wakegate-Session", "s1"}}, 6, "s1", 0},
    {"header capture, name case", "h", "/", {{"x-wakegate-SESSION", "s1"}}, 6, "s1", 0},
    {"header capture, bad char", "h", "/", {{"X-Wakegate-Session", "a.b"}}, NO_MATCH, NULL, 0},
    {"header capture, empty", "h", "/", {{"X-Wakegate-Session", ""}}, NO_MATCH, NULL, 0},
    {"header capture, first field decides", "h", "/",
     {{"X-Wakegate-Session", "a b"}, {"X-Wakegate-Session", "ok"}}, NO_MATCH, NULL, 0},
    {"header capture, among others", "h", "/",
     {{"Accept", "*/*"}, {"X-Wakegate-Session", "z9"}}, 6, "z9", 0},
    {"header exact", "h", "/v/1", {{"X-Mode", "canary"}}, 7, NULL, 0},
    {"header exact, value case", "h", "/v/1", {{"X-Mode", "Canary"}}, NO_MATCH, NULL, 0},
    {"header exact, longer value", "h", "/v/1", {{"X-Mode", "canary2"}}, NO_MATCH, NULL, 0},
    {"header exact, other path", "h", "/w/1", {{"X-Mode", "canary"}}, NO_MATCH, NULL, 0},
    {"header presence", "h", "/", {{"X-Debug", "anything"}}, 8, NULL, 0},
    {"header presence, empty value", "h", "/", {{"x-debug", ""}}, 8, NULL, 0},
    {"header name is not a prefix", "h", "/", {{"X-Debugger", "1"}}, NO_MATCH, NULL, 0},
    /* first match wins */
    {"host route before path route", "static.example.com", "/static/x", {{0}}, 0, NULL, 0},
    {"host capture before header", "abc.preview.localhost", "/",
     {{"X-Wakegate-Session", "s1"}}, 1, "abc", 0},
    {"path route before header", "h", "/static", {{"X-Debug", "1"}}, 4, NULL, 7},
    /* no Host at all: only routes without a host condition */
    {"no host, path route", NULL, "/static/x", {{0}}, 4, NULL, 7},
    {"no host, nothing else", NULL, "/", {{0}}, NO_MATCH, NULL, 0},
    {"nothing matches", "nowhere.example", "/index.html", {{"Accept", "text/html"}}, NO_MATCH, NULL,
     0},
};
/* clang-format on */

static void fill_input(const struct match_case *c, struct wg_http_field *fields,
                       struct wg_route_input *in)
{
    memset(in, 0, sizeof(*in));
    in->host = c->host;
    in->host_len = c->host ? strlen(c->host) : 0;
    in->target = c->target;
    in->target_len = strlen(c->target);
    for (size_t i = 0; i < MAX_FIELDS && c->fields[i][0] != NULL; i++) {
        fields[i].name = c->fields[i][0];
        fields[i].name_len = strlen(c->fields[i][0]);
        fields[i].value = c->fields[i][1];
        fields[i].value_len = strlen(c->fields[i][1]);
        in->fields_len = i + 1;
    }
    in->fields = fields;
}

/* The capture must be a span of the input, never a copy. */
static bool span_inside(const char *p, size_t len, const char *s, size_t s_len)
{
    return s != NULL && p >= s && p + len <= s + s_len;
}

static void check_case(const struct wg_router *router, const struct match_case *c)
{
    struct wg_http_field fields[MAX_FIELDS];
    struct wg_route_input in;
    struct wg_route_match m;
    int rc;

    fill_input(c, fields, &in);
    rc = wg_router_match(router, &in, &m);
    if (c->want_route == NO_MATCH) {
        if (rc != WG_ROUTE_NO_MATCH)
            fail_msg("%s: matched routes[%zu], want no match", c->name, m.route->index);
        assert_null(m.route);
        return;
    }
    if (rc != 0)
        fail_msg("%s: no match, want routes[%d]", c->name, c->want_route);
    if (m.route->index != (size_t)c->want_route)
        fail_msg("%s: matched routes[%zu], want routes[%d]", c->name, m.route->index,
                 c->want_route);
    if (c->want_session == NULL) {
        if (m.session != NULL)
            fail_msg("%s: captured \"%.*s\", want none", c->name, (int)m.session_len, m.session);
    } else {
        bool inside = span_inside(m.session, m.session_len, in.host, in.host_len) ||
                      span_inside(m.session, m.session_len, in.target, in.target_len);

        for (size_t i = 0; i < in.fields_len; i++)
            inside |= span_inside(m.session, m.session_len, fields[i].value, fields[i].value_len);
        if (m.session == NULL || m.session_len != strlen(c->want_session) ||
            memcmp(m.session, c->want_session, m.session_len) != 0)
            fail_msg("%s: captured \"%.*s\", want \"%s\"", c->name, (int)m.session_len,
                     m.session ? m.session : "", c->want_session);
        if (!inside)
            fail_msg("%s: the capture does not point into the input", c->name);
    }
    if (m.strip_len != c->want_strip)
        fail_msg("%s: strip_len %zu, want %zu", c->name, m.strip_len, c->want_strip);
}

static void test_match_table(void **state)
{
    struct wg_router *router = NULL;
    char err[256] = "";
    size_t n = sizeof(match_cases) / sizeof(match_cases[0]);

    assert_int_equal(wg_router_new(table, TABLE_LEN, &router, err, sizeof(err)), 0);
    assert_int_equal(wg_router_len(router), TABLE_LEN);
    assert_true(n >= 30);
    for (size_t i = 0; i < n; i++)
        check_case(router, &match_cases[i]);
    wg_router_free(router);
}

struct error_case {
    struct wg_route_cfg cfg;
    const char *want; /* the whole message after the route's prefix */
};

static const struct error_case error_cases[] = {
    {{.host = "{session}.{session}.example.com"},
     "match.host: \"{session}.{session}.example.com\": holds {session} more than once"},
    {{.host = "{sess}.example.com"},
     "match.host: \"{sess}.example.com\": '{' and '}' may appear only as {session} or {port}"},
    {{.host = "a}.example.com"},
     "match.host: \"a}.example.com\": '{' and '}' may appear only as {session} or {port}"},
    {{.host = "{session"},
     "match.host: \"{session\": '{' and '}' may appear only as {session} or {port}"},
    {{.host = "a..example.com"}, "match.host: \"a..example.com\": has an empty label"},
    {{.host = ".example.com"}, "match.host: \".example.com\": has an empty label"},
    {{.host = "example.com.."}, "match.host: \"example.com..\": has an empty label"},
    {{.host = "[::g]"}, "match.host: \"[::g]\": invalid character in IPv6 literal"},
    {{.host = ""}, "match.host: \"\": must not be empty"},
    {{.host = "example.com:80"},
     "match.host: \"example.com:80\": must not hold a port; the port of the Host header is "
     "ignored"},
    {{.host = "*.example.com"},
     "match.host: \"*.example.com\": '*' wildcards are not supported; use one {session} label"},
    {{.host = "ex ample.com"},
     "match.host: \"ex ample.com\": may hold only letters, digits, '-', '_', '.' and {session}"},
    {{.host = "[::1]:80"},
     "match.host: \"[::1]:80\": an IPv6 literal must be \"[address]\", without a port"},
    {{.host = "[{session}]"},
     "match.host: \"[{session}]\": an IP literal cannot hold {session} or {port}"},
    {{.path_prefix = "api/"}, "match.path_prefix: \"api/\": must start with '/'"},
    {{.path_prefix = ""}, "match.path_prefix: \"\": must start with '/'"},
    {{.path_prefix = "/api/s{session}/"},
     "match.path_prefix: \"/api/s{session}/\": {session} must be a whole path segment"},
    {{.path_prefix = "/api/{session}x/"},
     "match.path_prefix: \"/api/{session}x/\": {session} must be a whole path segment"},
    {{.path_prefix = "/{session}/{session}/"},
     "match.path_prefix: \"/{session}/{session}/\": holds {session} more than once"},
    {{.path_prefix = "/a?b"},
     "match.path_prefix: \"/a?b\": must not hold '?' or '#'; only the path is matched"},
    {{.path_prefix = "/a b/"},
     "match.path_prefix: \"/a b/\": may hold only visible ASCII characters"},
    {{.path_prefix = "/a/{id}/"},
     "match.path_prefix: \"/a/{id}/\": '{' and '}' may appear only as {session} or {port}"},
    {{.host = "{session}.example.com", .path_prefix = "/s/{session}/"},
     "match.path_prefix: \"/s/{session}/\": {session} is already captured by match.host"},
    {{.path_prefix = "/s/{session}/", .header_name = "X-S", .header_value = "{session}"},
     "match.header: {session} is already captured by match.path_prefix"},
    {{.header_name = "X Bad"}, "match.header: \"X Bad\": the field name is not a valid HTTP token"},
    {{.header_name = ""}, "match.header: \"\": the field name must not be empty"},
    {{.header_name = "X-S", .header_value = "a{session}"},
     "match.header: \"a{session}\": {session} must be the whole value"},
    {{.header_name = "X-S", .header_value = "{x}"},
     "match.header: \"{x}\": '{' and '}' may appear only as {session} or {port}"},
    {{.header_name = "X-S", .header_value = " v"},
     "match.header: \" v\": the value must not start or end with whitespace"},
    {{.header_name = "X-S", .header_value = "a\nb"},
     "match.header: \"a\nb\": the value holds a control character"},
    {{.header_value = "v"}, "match.header: a value needs a field name"},
    /* named ports */
    {{.host = "{port}.example.com"},
     "match.host: {port} names a port of a session: the route must capture {session} too"},
    {{.host = "{port}.{session}.x", .has_upstream = true},
     "match.host: {port} names a port of a session: the route must capture {session} too"},
    {{.host = "{port}{session}.x"},
     "match.host: \"{port}{session}.x\": {session} and {port} need a separator between them"},
    {{.host = "{port}a-{session}.x"},
     "match.host: \"{port}a-{session}.x\": the separator after {port} must start with a "
     "character a port name cannot hold ('-', '_' or '.')"},
    {{.host = "{session}-a{port}.x"},
     "match.host: \"{session}-a{port}.x\": the separator before {port} must end with a "
     "character a port name cannot hold ('-', '_' or '.')"},
    {{.host = "{port}.{port}.x"}, "match.host: \"{port}.{port}.x\": holds {port} more than once"},
    {{.path_prefix = "/s/{session}/p{port}/"},
     "match.path_prefix: \"/s/{session}/p{port}/\": {port} must be a whole path segment"},
    {{.host = "{port}.{session}.x", .path_prefix = "/{port}/"},
     "match.path_prefix: \"/{port}/\": {port} is already captured by match.host"},
    {{.header_name = "X-S", .header_value = "{port}"},
     "match.header: \"{port}\": {port} is taken from the host or the path only"},
    {{.host = "{port}.{session}.x", .port = 8000},
     "port: the port comes from {port} in match.host; remove port:"},
};

/* Each bad route sits second, after a good one, so the message must name
 * index 1 and the route's own line. */
static void test_compile_errors(void **state)
{
    size_t n = sizeof(error_cases) / sizeof(error_cases[0]);

    for (size_t i = 0; i < n; i++) {
        struct wg_route_cfg cfgs[2] = {{.line = 3, .host = "ok.example.com"}, error_cases[i].cfg};
        struct wg_router *router = NULL;
        char err[256] = "";
        char want[300];

        cfgs[1].line = 14;
        snprintf(want, sizeof(want), "routes[1] (line 14): %s", error_cases[i].want);
        if (wg_router_new(cfgs, 2, &router, err, sizeof(err)) != -EINVAL)
            fail_msg("case %zu (%s): compiled, want an error", i, error_cases[i].want);
        assert_null(router);
        assert_string_equal(err, want);
    }
}

/* {port} beside {session}: a port name holds no '-', '_' or '.', so each
 * split below has one reading, whatever '-' the session id holds. */
static void test_named_ports(void **state)
{
    /* clang-format off */
    static const struct wg_route_cfg routes[] = {
        /* 0 */ {.host = "{port}.{session}.a.test"},
        /* 1 */ {.host = "{port}-{session}.b.test"},
        /* 2 */ {.host = "{session}--{port}.c.test"},
        /* 3 */ {.host = "d.test", .path_prefix = "/s/{session}/{port}/", .strip_prefix = true},
        /* 4 */ {.host = "e.test", .path_prefix = "/p/{port}", .header_name = "X-S",
                 .header_value = "{session}"},
        /* 5 */ {.host = "x{port}.{session}.f.test"},
    };
    static const struct {
        const char *host, *target;
        int route;
        const char *session, *port;
        size_t strip;
    } cases[] = {
        {"api.s1.a.test", "/", 0, "s1", "api", 0},
        {"API.my-app.a.test:443", "/", 0, "my-app", "API", 0},
        {"api.a.test", "/", NO_MATCH, NULL, NULL, 0},
        {"a-pi.s1.a.test", "/", NO_MATCH, NULL, NULL, 0},
        {"api-s1.b.test", "/", 1, "s1", "api", 0},
        {"api-my-app-8000.b.test", "/", 1, "my-app-8000", "api", 0},
        {"8000-x.b.test", "/", 1, "x", "8000", 0},
        {"api-.b.test", "/", NO_MATCH, NULL, NULL, 0},
        {"-s1.b.test", "/", NO_MATCH, NULL, NULL, 0},
        {"api_x-s1.b.test", "/", NO_MATCH, NULL, NULL, 0},
        {"my-app--web.c.test", "/", 2, "my-app", "web", 0},
        {"my-app---web.c.test", "/", 2, "my-app-", "web", 0},
        {"my-app-web.c.test", "/", NO_MATCH, NULL, NULL, 0},
        {"--web.c.test", "/", NO_MATCH, NULL, NULL, 0},
        {"d.test", "/s/s1/api/x?y", 3, "s1", "api", 10},
        {"d.test", "/s/s1/api", NO_MATCH, NULL, NULL, 0},
        {"d.test", "/s/s1//x", NO_MATCH, NULL, NULL, 0},
        {"d.test", "/s/s1/a-pi/x", NO_MATCH, NULL, NULL, 0},
        {"e.test", "/p/web/x", 4, "hdr", "web", 0},
        {"xweb.s1.f.test", "/", 5, "s1", "web", 0},
        {"web.s1.f.test", "/", NO_MATCH, NULL, NULL, 0},
    };
    /* clang-format on */
    struct wg_router *router = NULL;
    char err[256] = "";

    assert_int_equal(
        wg_router_new(routes, sizeof routes / sizeof routes[0], &router, err, sizeof err), 0);
    assert_true(wg_router_match(router, &(struct wg_route_input){.host = "x", .host_len = 1},
                                &(struct wg_route_match){0}) == WG_ROUTE_NO_MATCH);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct wg_http_field f = {.name = "X-S", .name_len = 3, .value = "hdr", .value_len = 3};
        struct wg_route_input in = {.host = cases[i].host,
                                    .host_len = strlen(cases[i].host),
                                    .target = cases[i].target,
                                    .target_len = strlen(cases[i].target),
                                    .fields = &f,
                                    .fields_len = 1};
        struct wg_route_match m;
        int r = wg_router_match(router, &in, &m);

        if (cases[i].route == NO_MATCH) {
            if (r != WG_ROUTE_NO_MATCH)
                fail_msg("case %zu (%s%s): matched route %zu", i, cases[i].host, cases[i].target,
                         m.route->index);
            continue;
        }
        if (r != 0 || (int)m.route->index != cases[i].route)
            fail_msg("case %zu (%s%s): want route %d", i, cases[i].host, cases[i].target,
                     cases[i].route);
        assert_true(m.route->captures_port);
        assert_int_equal(m.session_len, strlen(cases[i].session));
        assert_memory_equal(m.session, cases[i].session, m.session_len);
        assert_int_equal(m.port_len, strlen(cases[i].port));
        assert_memory_equal(m.port, cases[i].port, m.port_len);
        assert_int_equal(m.strip_len, cases[i].strip);
    }
    assert_string_equal(wg_router_label(router, 1), "1:host=<port>-<session>.b.test");
    wg_router_free(router);
}

static void test_error_without_line(void **state)
{
    struct wg_route_cfg cfg = {.host = "a..b"};
    struct wg_router *router = NULL;
    char err[256] = "";
    char tiny[8] = "";

    assert_int_equal(wg_router_new(&cfg, 1, &router, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "routes[0]: match.host: \"a..b\": has an empty label");
    /* A short buffer is cut, never overrun; no buffer at all is allowed. */
    assert_int_equal(wg_router_new(&cfg, 1, &router, tiny, sizeof(tiny)), -EINVAL);
    assert_string_equal(tiny, "routes[");
    assert_int_equal(wg_router_new(&cfg, 1, &router, NULL, 0), -EINVAL);
    assert_null(router);
}

static void test_good_patterns(void **state)
{
    static const struct wg_route_cfg good[] = {
        {.host = "{session}"},
        {.host = "preview.{session}"},
        {.host = "{session}-x.example.com"},
        {.host = "[2001:db8::1]"},
        {.path_prefix = "/"},
        {.path_prefix = "/{session}"},
        {.path_prefix = "/{session}/"},
        {.path_prefix = "/a/{session}/b/c"},
        {.path_prefix = "/caf%C3%A9/"},
        {.header_name = "X-S", .header_value = "*"},
        {.header_name = "X-S", .header_value = ""},
        {.header_name = "X-S", .header_value = "a b\tc"},
    };
    struct wg_router *router = NULL;
    char err[256] = "";

    assert_int_equal(wg_router_new(good, sizeof(good) / sizeof(good[0]), &router, err, sizeof(err)),
                     0);
    assert_string_equal(err, "");
    wg_router_free(router);
}

/* The router keeps its own copies: the config may be freed right after. */
static void test_copies_config(void **state)
{
    struct wg_route_cfg cfg = {.line = 7, .strip_prefix = true, .has_upstream = true, .port = 3000};
    struct sockaddr_in *sin = (struct sockaddr_in *)&cfg.upstream.sa;
    struct wg_router *router = NULL;
    struct wg_route_input in = {0};
    struct wg_route_match m;
    char err[256] = "";

    cfg.host = strdup("{session}.dev.example.com");
    cfg.path_prefix = strdup("/app/");
    cfg.header_name = strdup("X-Tenant");
    cfg.header_value = strdup("blue");
    cfg.upstream.text = strdup("127.0.0.1:9000");
    sin->sin_family = AF_INET;
    sin->sin_port = htons(9000);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cfg.upstream.salen = sizeof(*sin);

    assert_int_equal(wg_router_new(&cfg, 1, &router, err, sizeof(err)), 0);
    memset(cfg.host, 'x', strlen(cfg.host));
    memset(cfg.path_prefix, 'x', strlen(cfg.path_prefix));
    free(cfg.host);
    free(cfg.path_prefix);
    free(cfg.header_name);
    free(cfg.header_value);
    free(cfg.upstream.text);
    memset(&cfg, 0, sizeof(cfg));

    in.host = "u1.dev.example.com";
    in.host_len = strlen(in.host);
    in.target = "/app/index.html";
    in.target_len = strlen(in.target);
    in.fields = &(struct wg_http_field){"x-tenant", 8, "blue", 4};
    in.fields_len = 1;
    assert_int_equal(wg_router_match(router, &in, &m), 0);
    assert_int_equal(m.route->index, 0);
    assert_int_equal(m.route->line, 7);
    assert_true(m.route->strip_prefix);
    assert_true(m.route->has_upstream);
    assert_true(m.route->captures_session);
    assert_int_equal(m.route->port, 3000);
    assert_int_equal(m.route->upstream_len, sizeof(struct sockaddr_in));
    sin = (struct sockaddr_in *)&m.route->upstream;
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(ntohs(sin->sin_port), 9000);
    assert_string_equal(m.route->upstream_text, "127.0.0.1:9000");
    assert_int_equal(m.session_len, 2);
    assert_memory_equal(m.session, "u1", 2);
    assert_int_equal(m.strip_len, 5);
    wg_router_free(router);
}

static void test_empty_and_unconditional(void **state)
{
    static const struct wg_route_cfg any = {.line = 1};
    struct wg_router *router = NULL;
    struct wg_route_input in = {0};
    struct wg_route_match m;

    assert_int_equal(wg_router_new(NULL, 0, &router, NULL, 0), 0);
    assert_int_equal(wg_router_len(router), 0);
    assert_int_equal(wg_router_match(router, &in, &m), WG_ROUTE_NO_MATCH);
    wg_router_free(router);
    router = NULL;
    wg_router_free(NULL);
    assert_int_equal(wg_router_len(NULL), 0);

    /* Validation elsewhere forbids a route without conditions; here it must
     * simply match anything, even an empty input. */
    assert_int_equal(wg_router_new(&any, 1, &router, NULL, 0), 0);
    assert_int_equal(wg_router_match(router, &in, &m), 0);
    assert_false(m.route->captures_session);
    assert_null(m.session);
    assert_int_equal(m.strip_len, 0);
    wg_router_free(router);
}

/* Matching is read-only on a shared router: any number of callers may use
 * one const router, and spans come from the input, never from storage the
 * match would have to allocate. */
static void test_match_on_const_router(void **state)
{
    struct wg_router *owned = NULL;
    const struct wg_router *router;
    char host[] = "abc.preview.localhost:8080";
    struct wg_route_input in = {
        .host = host, .host_len = sizeof(host) - 1, .target = "/", .target_len = 1};
    struct wg_route_match a, b;

    assert_int_equal(wg_router_new(table, TABLE_LEN, &owned, NULL, 0), 0);
    router = owned;
    assert_int_equal(wg_router_match(router, &in, &a), 0);
    assert_int_equal(wg_router_match(router, &in, &b), 0);
    assert_ptr_equal(a.route, b.route);
    assert_ptr_equal(a.session, host);
    assert_ptr_equal(b.session, host);
    assert_int_equal(a.session_len, 3);
    wg_router_free(owned);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_table),
        cmocka_unit_test(test_compile_errors),
        cmocka_unit_test(test_named_ports),
        cmocka_unit_test(test_error_without_line),
        cmocka_unit_test(test_good_patterns),
        cmocka_unit_test(test_copies_config),
        cmocka_unit_test(test_empty_and_unconditional),
        cmocka_unit_test(test_match_on_const_router),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
