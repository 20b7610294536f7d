/* test/unit/test_admin_auth.c - the admin listener's token check
 * (admin/listener_auth.c): method + path + presented token -> allow, 401,
 * 403 or 503, with the admin API's own read routes (wg_api_read_routes). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "admin/api.h"
#include "admin/listener.h"

#define ADMIN "adm-7f3"
#define READ "rd-91c"

static size_t api_nread(void)
{
    size_t n = 0;
    while (wg_api_read_routes[n] != NULL)
        n++;
    return n;
}

/* The status the listener answers (0: the request goes on), with the API's
 * read routes. authz NULL: no Authorization header. */
static int status_of(const struct wg_admin_tokens *t, const char *method, const char *target,
                     const char *authz)
{
    const char *q = strchr(target, '?');
    size_t pl = q ? (size_t)(q - target) : strlen(target);
    return wg_admin_auth_status(wg_admin_auth_check(t, wg_api_read_routes, api_nread(), method,
                                                    target, pl, authz, authz ? strlen(authz) : 0));
}

struct req {
    const char *method;
    const char *target;
};

/* Everything the read-only token may do. */
static const struct req reads[] = {
    {"GET", "/v1/sessions"},       {"HEAD", "/v1/sessions"},        {"GET", "/v1/sessions/s-1"},
    {"HEAD", "/v1/sessions/s-1"},  {"GET", "/v1/sessions/s-1?x=1"}, {"GET", "/v1/events"},
    {"GET", "/v1/events?since=0"}, {"HEAD", "/v1/events"}, /* the API answers 405; the token is no
                                                              reason to refuse */
    {"GET", "/v1/hosts"},          {"HEAD", "/v1/hosts"},
};

/* Writes, and reads of routes nobody declared: admin only. */
static const struct req writes[] = {
    {"POST", "/v1/sessions"},
    {"DELETE", "/v1/sessions/s-1"},
    {"DELETE", "/v1/sessions/s-1?force=1"},
    {"POST", "/v1/sessions/s-1/wake"},
    {"POST", "/v1/sessions/s-1/wake?wait=1"},
    {"POST", "/v1/sessions/s-1/sleep"},
    {"POST", "/v1/sessions/s-1/keepalive"},
    {"PUT", "/v1/sessions/s-1"},
    {"PATCH", "/v1/sessions/s-1"},
    {"OPTIONS", "/v1/sessions"},
    {"POST", "/v1/events"},
    {"POST", "/v1/hosts"},
    {"DELETE", "/v1/hosts"},
    /* A GET on a route that is not declared readable: a new route (or a
     * sub-path of a read route) is admin-only until declared. */
    {"GET", "/v1/sessions/s-1/wake"},
    {"GET", "/v1/sessions/s-1/links"},
    {"GET", "/v1/sessions/"},
    {"GET", "/v1/sessions//"},
    {"GET", "/v1/sessionsx"},
    {"GET", "/v1"},
    {"GET", "/v1/"},
    {"GET", "/v1/templates"},
    {"get", "/v1/sessions"}, /* methods are case-sensitive */
};

static void test_read_token_reads_only(void **state)
{
    const struct wg_admin_tokens t = {ADMIN, READ};
    (void)state;
    for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
        const struct req *r = &reads[i];
        assert_int_equal(status_of(&t, r->method, r->target, "Bearer " READ), 0);
        assert_int_equal(status_of(&t, r->method, r->target, "Bearer " ADMIN), 0);
    }
    for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++) {
        const struct req *r = &writes[i];
        if (status_of(&t, r->method, r->target, "Bearer " READ) != 403)
            fail_msg("%s %s with the read token: not 403", r->method, r->target);
        assert_int_equal(status_of(&t, r->method, r->target, "Bearer " ADMIN), 0);
    }
}

static void test_missing_and_wrong_tokens(void **state)
{
    const struct wg_admin_tokens t = {ADMIN, READ};
    static const char *const wrong[] = {
        "Bearer nope",
        "Bearer " ADMIN "x",
        "Bearer " READ "x",
        "Bearer adm-7f",
        "Bearer rd-91",
        "Basic " ADMIN,
        ADMIN,
        "Bearer",
        "Bearer ",
        "",
        "Bearer " READ " ",
        "Bearer " ADMIN READ,
        "Bearer\t" READ "\t",
    };
    (void)state;
    for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
        assert_int_equal(wg_admin_auth_check(&t, wg_api_read_routes, api_nread(), reads[i].method,
                                             reads[i].target, strcspn(reads[i].target, "?"), NULL,
                                             0),
                         WG_ADMIN_AUTH_MISSING);
        for (size_t k = 0; k < sizeof wrong / sizeof wrong[0]; k++) {
            enum wg_admin_auth a = wg_admin_auth_check(
                &t, wg_api_read_routes, api_nread(), reads[i].method, reads[i].target,
                strcspn(reads[i].target, "?"), wrong[k], strlen(wrong[k]));
            if (a != WG_ADMIN_AUTH_INVALID)
                fail_msg("%s %s with '%s': %d, not invalid", reads[i].method, reads[i].target,
                         wrong[k], (int)a);
        }
    }
    /* A wrong token on a write is 401 too, not 403: 403 says the token is
     * a real one. */
    assert_int_equal(status_of(&t, "POST", "/v1/sessions", "Bearer nope"), 401);
    assert_int_equal(status_of(&t, "POST", "/v1/sessions", NULL), 401);
    /* The scheme is case-insensitive; blanks after it are skipped. */
    assert_int_equal(status_of(&t, "GET", "/v1/sessions", "bearer " READ), 0);
    assert_int_equal(status_of(&t, "GET", "/v1/sessions", "BEARER \t " READ), 0);
    assert_int_equal(status_of(&t, "POST", "/v1/sessions", "bearer " READ), 403);
}

static void test_tokenless_paths(void **state)
{
    static const char *const paths[] = {"/metrics", "/healthz",    "/readyz",
                                        "/",        "/dashboard",  "/dashboard/app.js",
                                        "/v1x",     "/v2/sessions"};
    const struct wg_admin_tokens t = {ADMIN, READ};
    const struct wg_admin_tokens none = {NULL, NULL};
    (void)state;
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        assert_int_equal(status_of(&t, "GET", paths[i], NULL), 0);
        assert_int_equal(status_of(&t, "POST", paths[i], "Bearer nope"), 0);
        assert_int_equal(status_of(&none, "GET", paths[i], NULL), 0);
    }
}

static void test_not_configured(void **state)
{
    const struct wg_admin_tokens none = {NULL, NULL};
    const struct wg_admin_tokens empty = {"", ""};
    const struct wg_admin_tokens read_only = {NULL, READ};
    (void)state;
    assert_int_equal(status_of(&none, "GET", "/v1/sessions", "Bearer x"), 503);
    assert_int_equal(status_of(&none, "GET", "/v1/sessions", NULL), 503);
    assert_int_equal(status_of(&empty, "POST", "/v1/sessions", "Bearer "), 503);
    /* Only a read token: reads with it, no write at all. */
    assert_int_equal(status_of(&read_only, "GET", "/v1/sessions", "Bearer " READ), 0);
    assert_int_equal(status_of(&read_only, "POST", "/v1/sessions", "Bearer " READ), 403);
    assert_int_equal(status_of(&read_only, "POST", "/v1/sessions", NULL), 401);
    assert_int_equal(status_of(&read_only, "GET", "/v1/sessions", "Bearer "), 401);
    /* Only an admin token: as before the read-only token existed. */
    const struct wg_admin_tokens admin_only = {ADMIN, NULL};
    assert_int_equal(status_of(&admin_only, "GET", "/v1/sessions", "Bearer " ADMIN), 0);
    assert_int_equal(status_of(&admin_only, "POST", "/v1/sessions", "Bearer " ADMIN), 0);
    assert_int_equal(status_of(&admin_only, "GET", "/v1/sessions", "Bearer " READ), 401);
}

/* No read route declared (role proxy: no API): every /v1 request is an
 * admin one. */
static void test_no_read_routes(void **state)
{
    const struct wg_admin_tokens t = {ADMIN, READ};
    (void)state;
    assert_int_equal(wg_admin_scope_for("GET", 3, "/v1/sessions", 12, NULL, 0),
                     WG_ADMIN_SCOPE_ADMIN);
    assert_int_equal(wg_admin_auth_check(&t, NULL, 0, "GET", "/v1/sessions", 12, "Bearer " READ,
                                         strlen("Bearer " READ)),
                     WG_ADMIN_AUTH_READ_ONLY);
    assert_int_equal(wg_admin_scope_for("GET", 3, "/metrics", 8, NULL, 0), WG_ADMIN_SCOPE_NONE);
}

static void test_route_match(void **state)
{
    static const struct {
        const char *pattern, *path;
        bool match;
    } cases[] = {
        {"/v1/sessions", "/v1/sessions", true},
        {"/v1/sessions", "/v1/sessions/", false},
        {"/v1/sessions", "/v1/session", false},
        {"/v1/sessions/{id}", "/v1/sessions/a", true},
        {"/v1/sessions/{id}", "/v1/sessions/a-b_c9", true},
        {"/v1/sessions/{id}", "/v1/sessions/", false},
        {"/v1/sessions/{id}", "/v1/sessions", false},
        {"/v1/sessions/{id}", "/v1/sessions/a/", false},
        {"/v1/sessions/{id}", "/v1/sessions/a/wake", false},
        {"/v1/sessions/{id}/logs", "/v1/sessions/a/logs", true},
        {"/v1/sessions/{id}/logs", "/v1/sessions//logs", false},
        {"/v1/sessions/{id", "/v1/sessions/a", false}, /* broken pattern */
        {"/v1/{a}/{b}", "/v1/x/y", true},
        {"/v1/{a}/{b}", "/v1/x", false},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (wg_admin_route_match(cases[i].pattern, cases[i].path, strlen(cases[i].path)) !=
            cases[i].match)
            fail_msg("%s ~ %s: expected %d", cases[i].pattern, cases[i].path, cases[i].match);
}

static void test_statuses(void **state)
{
    (void)state;
    assert_int_equal(wg_admin_auth_status(WG_ADMIN_AUTH_OK), 0);
    assert_int_equal(wg_admin_auth_status(WG_ADMIN_AUTH_NOT_CONFIGURED), 503);
    assert_int_equal(wg_admin_auth_status(WG_ADMIN_AUTH_MISSING), 401);
    assert_int_equal(wg_admin_auth_status(WG_ADMIN_AUTH_INVALID), 401);
    assert_int_equal(wg_admin_auth_status(WG_ADMIN_AUTH_READ_ONLY), 403);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_token_reads_only),
        cmocka_unit_test(test_missing_and_wrong_tokens),
        cmocka_unit_test(test_tokenless_paths),
        cmocka_unit_test(test_not_configured),
        cmocka_unit_test(test_no_read_routes),
        cmocka_unit_test(test_route_match),
        cmocka_unit_test(test_statuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
