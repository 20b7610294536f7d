/* test/unit/test_api.c - the pure parts of the admin API (admin/api) and
 * the admin listener's token check (admin/listener): routing, request
 * validation, stream ids, query flags, SSE framing. No sockets, no Redis:
 * test/e2e/test_admin_api.py drives the rest against the real binary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "admin/api.h"
#include "admin/dashboard.h"
#include "admin/listener.h"
#include "common/config.h"

/* ---- routes ------------------------------------------------------------ */

struct route_case {
    const char *method, *path;
    int status;
    enum wg_api_route_kind kind;
    const char *id;
    const char *allow; /* for 405 */
};

static void test_route_table(void **state)
{
    static const struct route_case cases[] = {
        {"GET", "/v1/sessions", 0, WG_API_SESSIONS, NULL, NULL},
        {"HEAD", "/v1/sessions", 0, WG_API_SESSIONS, NULL, NULL},
        {"POST", "/v1/sessions", 0, WG_API_SESSIONS, NULL, NULL},
        {"PUT", "/v1/sessions", 405, 0, NULL, "GET, HEAD, POST"},
        {"GET", "/v1/sessions/s-1", 0, WG_API_SESSION, "s-1", NULL},
        {"DELETE", "/v1/sessions/s_1", 0, WG_API_SESSION, "s_1", NULL},
        {"POST", "/v1/sessions/s1", 405, 0, NULL, "GET, HEAD, DELETE"},
        {"POST", "/v1/sessions/s1/wake", 0, WG_API_WAKE, "s1", NULL},
        {"POST", "/v1/sessions/s1/sleep", 0, WG_API_SLEEP, "s1", NULL},
        {"GET", "/v1/sessions/s1/wake", 405, 0, NULL, "POST"},
        {"POST", "/v1/sessions/s1/keepalive", 0, WG_API_KEEPALIVE, "s1", NULL},
        {"POST", "/v1/sessions/s1/links", 0, WG_API_LINKS, "s1", NULL},
        {"POST", "/v1/sessions/s1/revoke", 0, WG_API_REVOKE, "s1", NULL},
        {"GET", "/v1/sessions/s1/revoke", 405, 0, NULL, "POST"},
        {"POST", "/v1/sessions/S1/links", 400, 0, NULL, NULL},
        {"GET", "/v1/openapi.json", 0, WG_API_OPENAPI, NULL, NULL},
        {"POST", "/v1/openapi.json", 405, 0, NULL, "GET, HEAD"},
        {"GET", "/v1/hosts", 0, WG_API_HOSTS, NULL, NULL},
        {"HEAD", "/v1/hosts", 0, WG_API_HOSTS, NULL, NULL},
        {"DELETE", "/v1/hosts", 405, 0, NULL, "GET, HEAD"},
        {"GET", "/v1/hosts/h1", 404, 0, NULL, NULL},
        {"GET", "/v1/events", 0, WG_API_EVENTS, NULL, NULL},
        {"HEAD", "/v1/events", 405, 0, NULL, "GET"},
        {"POST", "/v1/events", 405, 0, NULL, "GET"},
        /* ids are checked (400) once the shape and method are right */
        {"GET", "/v1/sessions/S1", 400, 0, NULL, NULL},
        {"GET", "/v1/sessions/a.b", 400, 0, NULL, NULL},
        {"GET", "/v1/sessions/%2e%2e", 400, 0, NULL, NULL},
        {"POST", "/v1/sessions/-x/wake", 400, 0, NULL, NULL},
        {"GET", "/v1/sessions/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         400, 0, NULL, NULL},
        /* not ours */
        {"GET", "/v1/sessions/", 404, 0, NULL, NULL},
        {"GET", "/v1/sessions//wake", 404, 0, NULL, NULL},
        {"POST", "/v1/sessions/s1/poke", 404, 0, NULL, NULL},
        {"POST", "/v1/sessions/s1/wake/", 404, 0, NULL, NULL},
        {"GET", "/v1/sessionsX", 404, 0, NULL, NULL},
        {"GET", "/v1/events/", 404, 0, NULL, NULL},
        {"GET", "/v1", 404, 0, NULL, NULL},
        {"GET", "/v2/sessions", 404, 0, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct route_case *c = &cases[i];
        enum wg_api_route_kind kind = 99;
        char id[WG_SESSION_ID_MAX + 1] = "";
        const char *allow = NULL;
        int st =
            wg_api_route(c->method, strlen(c->method), c->path, strlen(c->path), &kind, id, &allow);
        if (st != c->status)
            fail_msg("%s %s: %d, want %d", c->method, c->path, st, c->status);
        if (st == 0) {
            assert_int_equal(kind, c->kind);
            assert_string_equal(id, c->id ? c->id : "");
        }
        if (st == 405)
            assert_string_equal(allow, c->allow);
    }
}

/* The reference (docs/openapi.json, embedded as the binary serves it) and
 * the route table say the same: every route and method the table serves is
 * documented, and every /v1 path and method documented is served. */
static void test_openapi_matches_the_route_table(void **state)
{
    static const struct {
        unsigned bit;
        const char *name;
    } methods[] = {{WG_API_GET, "get"},
                   {WG_API_HEAD, "head"},
                   {WG_API_POST, "post"},
                   {WG_API_DELETE, "delete"}};
    static const char *const others[] = {"put", "patch", "options", "trace"};
    json_error_t jerr;
    json_t *doc = json_loadb((const char *)wg_api_openapi[0].data, wg_api_openapi[0].len, 0, &jerr);
    json_t *paths, *item;
    const char *path;
    size_t nops = 0;

    (void)state;
    if (doc == NULL)
        fail_msg("docs/openapi.json: line %d: %s", jerr.line, jerr.text);
    assert_string_equal(json_string_value(json_object_get(doc, "openapi")), "3.1.0");
    paths = json_object_get(doc, "paths");
    assert_non_null(paths);
    for (const struct wg_api_op *op = wg_api_ops; op->path != NULL; op++, nops++) {
        item = json_object_get(paths, op->path);
        if (item == NULL)
            fail_msg("%s is served but not in docs/openapi.json", op->path);
        for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
            bool served = (op->methods & methods[m].bit) != 0;
            bool documented = json_object_get(item, methods[m].name) != NULL;
            if (served != documented)
                fail_msg("%s %s: %s", methods[m].name, op->path,
                         served ? "served but not documented" : "documented but not served");
        }
        for (size_t m = 0; m < sizeof others / sizeof others[0]; m++)
            if (json_object_get(item, others[m]) != NULL)
                fail_msg("%s %s: documented but not served", others[m], op->path);
    }
    json_object_foreach(paths, path, item)
    {
        enum wg_api_route_kind kind;
        char id[WG_SESSION_ID_MAX + 1];
        const char *allow;
        char probe[128];
        bool found = false;

        if (strncmp(path, "/v1/", 4) != 0)
            continue;
        for (const struct wg_api_op *op = wg_api_ops; op->path != NULL; op++)
            found |= strcmp(op->path, path) == 0;
        if (!found)
            fail_msg("%s is documented but not in the route table", path);
        /* And the dispatch takes it: {id} filled with a valid id. */
        const char *at = strstr(path, "{id}");
        if (at)
            snprintf(probe, sizeof probe, "%.*ss-1%s", (int)(at - path), path, at + 4);
        else
            snprintf(probe, sizeof probe, "%s", path);
        int st = wg_api_route("OPTIONS", 7, probe, strlen(probe), &kind, id, &allow);
        if (st != 405)
            fail_msg("%s: the dispatch answers %d to a method it does not serve", probe, st);
    }
    assert_true(nops >= 9);
    json_decref(doc);
}

/* ---- POST /v1/sessions validation --------------------------------------- */

static struct wg_config cfg;
/* Templates with policies: the default one allows the images and binds of
 * test_create_full; "small" only env, its own image and /srv/work. */
static struct wg_config pcfg;
static const char policy_yaml[] = "sessions:\n"
                                  "  images: [\"reg.local:5000/app@*\"]\n"
                                  "  binds: {allow: [/srv/x, vol_1, /a/]}\n"
                                  "templates:\n"
                                  "  small:\n"
                                  "    image: small:1\n"
                                  "    images: [\"small:*\"]\n"
                                  "    cmd: [sh, -c, \"exec httpd\"]\n"
                                  "    env: [A=t, B=t]\n"
                                  "    port: 9000\n"
                                  "    idle: {stop_after: 5m}\n"
                                  "    binds: {allow: [/srv/work/, cache]}\n"
                                  "    limits: {memory: 512MiB, cpus: 1, pids: 100}\n"
                                  "    limits_max: {memory: 1GiB}\n"
                                  "    overridable: [limits]\n";

static int setup_cfg(void **state)
{
    char err[WG_CONFIG_ERR_MAX];

    memset(&cfg, 0, sizeof(cfg));
    if (wg_config_init_defaults(&cfg) < 0 || wg_config_init_defaults(&pcfg) < 0)
        return -1;
    if (wg_config_load_string(&pcfg, "p.yaml", policy_yaml, strlen(policy_yaml), err, sizeof err) <
        0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    return 0;
}

static int teardown_cfg(void **state)
{
    wg_config_free(&cfg);
    wg_config_free(&pcfg);
    return 0;
}

struct bad_case {
    const char *body;
    const char *err; /* must appear in the message */
};

static void test_create_rejects(void **state)
{
    static const struct bad_case cases[] = {
        {"", "body: must be a JSON object"},
        {"{", "body: invalid JSON"},
        {"[]", "body: must be a JSON object"},
        {"null", "body: invalid JSON"},
        {"{\"id\":\"a\",\"id\":\"b\"}", "body: invalid JSON"},
        {"{\"id\":\"a\"} x", "body: invalid JSON"},
        {"{}", "field \"id\": required"},
        {"{\"id\":null}", "field \"id\": required"},
        {"{\"id\":1}", "field \"id\": must be"},
        {"{\"id\":\"A\"}", "field \"id\": must be"},
        {"{\"id\":\"a/b\"}", "field \"id\": must be"},
        {"{\"id\":\"a\",\"imagee\":\"x\"}", "unknown field \"imagee\""},
        {"{\"imagee\":\"x\"}", "unknown field \"imagee\""},
        {"{\"id\":\"a\",\"x\\\"y\":1}", "unknown field \"x?y\""},
        {"{\"id\":\"a\",\"image\":\"\"}", "field \"image\""},
        {"{\"id\":\"a\",\"image\":\"a b\"}", "field \"image\""},
        {"{\"id\":\"a\",\"image\":[]}", "field \"image\""},
        {"{\"id\":\"a\",\"port\":0}", "field \"port\": must be an integer 1..65535"},
        {"{\"id\":\"a\",\"port\":65536}", "field \"port\""},
        {"{\"id\":\"a\",\"port\":-1}", "field \"port\""},
        {"{\"id\":\"a\",\"port\":\"80\"}", "field \"port\""},
        {"{\"id\":\"a\",\"port\":80.0}", "field \"port\""},
        {"{\"id\":\"a\",\"port\":true}", "field \"port\""},
        {"{\"id\":\"a\",\"cmd\":\"sh\"}", "field \"cmd\": must be an array of strings"},
        {"{\"id\":\"a\",\"cmd\":[\"sh\",2]}", "field \"cmd[1]\": must be a string"},
        {"{\"id\":\"a\",\"cmd\":[\"\"]}", "field \"cmd[0]\""},
        {"{\"id\":\"a\",\"env\":[\"A\"]}", "field \"env[0]\": must be \"NAME=value\""},
        {"{\"id\":\"a\",\"env\":[\"=1\"]}", "field \"env[0]\""},
        {"{\"id\":\"a\",\"env\":{\"A\":\"1\"}}", "field \"env\""},
        {"{\"id\":\"a\",\"labels\":[]}", "field \"labels\""},
        {"{\"id\":\"a\",\"labels\":{\"k\":1}}", "field \"labels.k\": must be a string"},
        {"{\"id\":\"a\",\"labels\":{\"\":\"v\"}}", "field \"labels\": keys must not be empty"},
        {"{\"id\":\"a\",\"labels\":{\"wakegate.port\":\"1\"}}", "field \"labels.wakegate.port\""},
        {"{\"id\":\"a\",\"binds\":[\"/a\"]}", "field \"binds[0]\""},
        {"{\"id\":\"a\",\"binds\":[\"/a:b\"]}", "field \"binds[0]\""},
        {"{\"id\":\"a\",\"binds\":[\":/b\"]}", "field \"binds[0]\""},
        {"{\"id\":\"a\",\"binds\":[\"/a:/b:rx\"]}", "field \"binds[0]\""},
        {"{\"id\":\"a\",\"binds\":[\"-v:/b\"]}", "field \"binds[0]\""},
        {"{\"id\":\"a\",\"binds\":[\"/a:/b\",5]}", "field \"binds[1]\": must be a string"},
        {"{\"id\":\"a\",\"idle\":1}", "field \"idle\": must be an object"},
        {"{\"id\":\"a\",\"idle\":{\"stop_after\":\"x\"}}", "field \"idle.stop_after\""},
        {"{\"id\":\"a\",\"idle\":{\"pause_after\":30}}", "field \"idle.pause_after\""},
        {"{\"id\":\"a\",\"idle\":{\"nap\":\"1s\"}}", "unknown field \"idle.nap\""},
        {"{\"id\":\"a\",\"idle\":{\"pause_after\":\"10m\",\"stop_after\":\"5m\"}}",
         "field \"idle.pause_after\": 600000ms is not shorter than idle.stop_after (300000ms)"},
        {"{\"id\":\"a\",\"idle\":{\"pause_after\":\"1h\"}}",
         "field \"idle.pause_after\": 3600000ms is not shorter than idle.stop_after"},
        {"{\"id\":\"a\",\"save\":[]}", "field \"save\": must be an object"},
        {"{\"id\":\"a\",\"save\":{\"command\":\"git\"}}", "field \"save.command\""},
        {"{\"id\":\"a\",\"save\":{\"command\":[]}}", "field \"save.command\": must not be empty"},
        {"{\"id\":\"a\",\"save\":{\"timeout\":\"0s\"}}", "field \"save.timeout\""},
        {"{\"id\":\"a\",\"save\":{\"path\":\"rel\"}}", "field \"save.path\""},
        {"{\"id\":\"a\",\"save\":{\"on_failure\":\"x\"}}", "field \"save.on_failure\""},
        {"{\"id\":\"a\",\"save\":{\"hook\":1}}", "unknown field \"save.hook\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct wg_api_create c;
        char err[256] = "";
        memset(&c, 0x5a, sizeof(c));
        int rc =
            wg_api_parse_create(cases[i].body, strlen(cases[i].body), &cfg, &c, err, sizeof(err));
        if (rc != -EINVAL)
            fail_msg("case %zu (%s): rc %d", i, cases[i].body, rc);
        if (strstr(err, cases[i].err) == NULL)
            fail_msg("case %zu (%s): error \"%s\" lacks \"%s\"", i, cases[i].body, err,
                     cases[i].err);
    }
}

static void test_create_spec_too_large(void **state)
{
    size_t n = 5 * 4100; /* over WG_SESSION_SPEC_MAX */
    char *body = malloc(n + 64);
    struct wg_api_create c;
    char err[256];
    assert_non_null(body);
    size_t k = (size_t)snprintf(body, n + 64, "{\"id\":\"a\",\"cmd\":[");
    for (int i = 0; i < 5; i++) { /* each string within WG_TEXT_MAX, all over the record's cap */
        body[k++] = '"';
        memset(body + k, 'x', 4000);
        k += 4000;
        body[k++] = '"';
        body[k++] = i < 4 ? ',' : ']';
    }
    strcpy(body + k, "}");
    assert_int_equal(wg_api_parse_create(body, strlen(body), &cfg, &c, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "16384"));
    free(body);
}

static void test_create_defaults(void **state)
{
    static const char body[] = "{\"id\":\"s1\"}";
    struct wg_api_create c;
    struct wg_session_update u;
    char err[256];
    assert_int_equal(wg_api_parse_create(body, strlen(body), &cfg, &c, err, sizeof(err)), 0);
    assert_string_equal(c.id, "s1");
    assert_string_equal(c.image, cfg.sessions.image);
    assert_int_equal(c.port, cfg.sessions.port);
    assert_null(c.spec);
    assert_false(c.has_pause_after);
    assert_false(c.has_stop_after);
    wg_api_create_fields(&c, "host-a", &u);
    assert_int_equal(u.set, WG_SF_HOST | WG_SF_IMAGE | WG_SF_PORT | WG_SF_TEMPLATE);
    assert_string_equal(u.host, "host-a");
    assert_string_equal(u.template_name, "default");
    wg_api_create_release(&c);
    wg_api_create_release(&c); /* idempotent */
}

static void test_create_full(void **state)
{
    static const char body[] =
        "{\"id\":\"s-2\",\"image\":\"reg.local:5000/app@sha256:ab\",\"port\":3000,"
        "\"cmd\":[\"sh\",\"-c\",\"echo \\u00e9\\n\"],\"env\":[\"A=1\",\"B=\"],"
        "\"labels\":{\"team\":\"x\",\"z\":\"\"},\"binds\":[\"/srv/x:/w\",\"vol_1:/c:ro\",\"/a:/"
        "b:rw\"],"
        "\"idle\":{\"pause_after\":\"30s\",\"stop_after\":\"0s\"},"
        "\"save\":{\"command\":[\"git\",\"push\"],\"timeout\":\"1m\",\"path\":\"/w\","
        "\"on_failure\":\"stop\"}}";
    struct wg_api_create c;
    struct wg_session_update u;
    char err[256] = "";
    int rc = wg_api_parse_create(body, strlen(body), &pcfg, &c, err, sizeof(err));
    if (rc != 0)
        fail_msg("rc %d: %s", rc, err);
    assert_string_equal(c.image, "reg.local:5000/app@sha256:ab");
    assert_int_equal(c.port, 3000);
    assert_true(c.has_pause_after);
    assert_int_equal(c.pause_after_ms, 30000);
    assert_true(c.has_stop_after);
    assert_int_equal(c.stop_after_ms, 0);
    assert_non_null(c.spec);
    /* Compact, ASCII, and only the container fields. */
    for (const char *p = c.spec; *p; p++)
        assert_true(*p >= 0x20 && *p < 0x7f);
    assert_null(strstr(c.spec, "\": "));
    json_error_t je;
    json_t *spec = json_loads(c.spec, 0, &je);
    assert_non_null(spec);
    assert_int_equal(json_object_size(spec), 5);
    assert_null(json_object_get(spec, "id"));
    assert_null(json_object_get(spec, "idle"));
    assert_string_equal(json_string_value(json_array_get(json_object_get(spec, "cmd"), 2)),
                        "echo \xc3\xa9\n");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(spec, "save"), "on_failure")), "stop");
    json_decref(spec);
    wg_api_create_fields(&c, "h", &u);
    assert_true(u.set & WG_SF_SPEC);
    assert_true(u.set & WG_SF_IDLE_PAUSE_AFTER);
    assert_true(u.set & WG_SF_IDLE_STOP_AFTER);
    assert_int_equal(u.idle_stop_after_ms, 0);
    wg_api_create_release(&c);
}

/* What a template refuses: each a 400 naming the field. */
static void test_create_policy_rejects(void **state)
{
    static const struct bad_case cases[] = {
        {"{\"id\":\"a\",\"template\":\"nope\"}", "field \"template\": unknown template \"nope\""},
        {"{\"id\":\"a\",\"template\":1}", "field \"template\": must be a string"},
        {"{\"id\":\"a\",\"image\":\"evil:1\"}", "field \"image\": \"evil:1\" is not allowed"},
        {"{\"id\":\"a\",\"template\":\"small\",\"image\":\"big:1\"}", "field \"image\""},
        {"{\"id\":\"a\",\"binds\":[\"/:/host\"]}", "field \"binds[0]\": the host's root"},
        {"{\"id\":\"a\",\"binds\":[\"//./:/host\"]}", "field \"binds[0]\": the host's root"},
        {"{\"id\":\"a\",\"binds\":[\"/srv/x/../../etc:/e\"]}",
         "field \"binds[0]\": a source with \"..\""},
        {"{\"id\":\"a\",\"binds\":[\"/srv/x/y:/w\",\"/var/run/docker.sock:/s\"]}",
         "field \"binds[1]\": the Docker socket"},
        {"{\"id\":\"a\",\"binds\":[\"/srv/x/docker.sock:/s\"]}", "the Docker socket"},
        {"{\"id\":\"a\",\"binds\":[\"/run:/r\"]}", "field \"binds[0]\": \"/run\" is refused"},
        {"{\"id\":\"a\",\"binds\":[\"/var/run/:/r\"]}", "\"/var/run\" is refused"},
        {"{\"id\":\"a\",\"binds\":[\"/srv/xy:/w\"]}", "source \"/srv/xy\" is outside"},
        {"{\"id\":\"a\",\"binds\":[\"vol_2:/w\"]}", "volume \"vol_2\" is not in"},
        {"{\"id\":\"a\",\"template\":\"small\",\"binds\":[\"/srv/x:/w\"]}",
         "outside template \"small\""},
        {"{\"id\":\"a\",\"template\":\"small\",\"cmd\":[\"x\"]}",
         "field \"cmd\": template \"small\" does not let a caller set it"},
        {"{\"id\":\"a\",\"template\":\"small\",\"port\":80}", "field \"port\": template"},
        {"{\"id\":\"a\",\"limits\":{\"memory\":\"64MiB\"}}",
         "field \"limits\": template \"default\""},
        {"{\"id\":\"a\",\"template\":\"small\",\"limits\":{\"memory\":\"2GiB\"}}",
         "field \"limits.memory\": 2147483648 is over template \"small\"'s maximum of 1073741824"},
        {"{\"id\":\"a\",\"template\":\"small\",\"limits\":{\"pids\":101}}",
         "field \"limits.pids\": 101 is over"},
        {"{\"id\":\"a\",\"template\":\"small\",\"limits\":{\"cpus\":2}}", "field \"limits.cpus\""},
        {"{\"id\":\"a\",\"template\":\"small\",\"limits\":{\"pids\":2}}", "under the minimum"},
        {"{\"id\":\"a\",\"template\":\"small\",\"limits\":{\"disk\":2}}",
         "unknown field \"limits.disk\""},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct wg_api_create c;
        char err[256] = "";
        int rc =
            wg_api_parse_create(cases[i].body, strlen(cases[i].body), &pcfg, &c, err, sizeof(err));
        if (rc != -EINVAL)
            fail_msg("case %zu (%s): rc %d", i, cases[i].body, rc);
        if (strstr(err, cases[i].err) == NULL)
            fail_msg("case %zu (%s): error \"%s\" lacks \"%s\"", i, cases[i].body, err,
                     cases[i].err);
    }
}

/* A named template fills in its image, port, cmd, env (the caller's
 * NAME= wins) and idle tiers; limits within its maxima go to the spec. */
static void test_create_template(void **state)
{
    static const char body[] = "{\"id\":\"t1\",\"template\":\"small\",\"env\":[\"B=c\",\"C=c\"],"
                               "\"binds\":[\"/srv/work/./t1/:/w\",\"cache:/c\"],"
                               "\"limits\":{\"memory\":\"1GiB\",\"cpus\":0.5,\"pids\":8}}";
    struct wg_api_create c;
    struct wg_session_update u;
    char err[256] = "";
    json_t *spec;
    (void)state;
    int rc = wg_api_parse_create(body, strlen(body), &pcfg, &c, err, sizeof(err));
    if (rc != 0)
        fail_msg("rc %d: %s", rc, err);
    assert_string_equal(c.template_name, "small");
    assert_string_equal(c.image, "small:1");
    assert_int_equal(c.port, 9000);
    assert_true(c.has_stop_after);
    assert_int_equal(c.stop_after_ms, 5 * 60 * 1000);
    assert_true(c.has_pause_after);
    assert_int_equal(c.pause_after_ms, 0);
    spec = json_loads(c.spec, 0, NULL);
    assert_non_null(spec);
    assert_string_equal(json_string_value(json_array_get(json_object_get(spec, "cmd"), 2)),
                        "exec httpd");
    json_t *env = json_object_get(spec, "env");
    assert_int_equal(json_array_size(env), 3);
    assert_string_equal(json_string_value(json_array_get(env, 0)), "A=t");
    assert_string_equal(json_string_value(json_array_get(env, 1)), "B=c");
    assert_string_equal(json_string_value(json_array_get(env, 2)), "C=c");
    json_t *lim = json_object_get(spec, "limits");
    assert_int_equal(json_integer_value(json_object_get(lim, "memory")), 1ll << 30);
    assert_int_equal(json_integer_value(json_object_get(lim, "nano_cpus")), 500000000);
    assert_int_equal(json_integer_value(json_object_get(lim, "pids")), 8);
    json_decref(spec);
    wg_api_create_fields(&c, "h", &u);
    assert_true(u.set & WG_SF_TEMPLATE);
    assert_string_equal(u.template_name, "small");
    wg_api_create_release(&c);
}

static void test_create_nulls_are_absent(void **state)
{
    static const char body[] = "{\"id\":\"n\",\"image\":null,\"port\":null,\"cmd\":null,"
                               "\"idle\":{\"stop_after\":null},\"save\":null}";
    struct wg_api_create c;
    char err[256] = "";
    assert_int_equal(wg_api_parse_create(body, strlen(body), &cfg, &c, err, sizeof(err)), 0);
    assert_string_equal(c.image, cfg.sessions.image);
    assert_null(c.spec);
    assert_false(c.has_stop_after);
    wg_api_create_release(&c);
}

/* ---- stream ids, queries ------------------------------------------------ */

static void test_sid(void **state)
{
    struct wg_api_sid a, b;
    assert_int_equal(wg_api_sid_parse("1-2", 3, &a), 0);
    assert_true(a.ms == 1 && a.seq == 2);
    assert_int_equal(wg_api_sid_parse("1700000000000", 13, &b), 0);
    assert_true(b.ms == 1700000000000ull && b.seq == 0);
    assert_int_equal(wg_api_sid_parse("0", 1, &a), 0);
    assert_int_equal(wg_api_sid_parse("18446744073709551615-18446744073709551615", 41, &a), 0);
    const char *bad[] = {"",   "-",  "1-", "-1", "a", "1-2-3", "1 -2", "18446744073709551616",
                         "+1", "1-x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (wg_api_sid_parse(bad[i], strlen(bad[i]), &a) != -EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
    struct wg_api_sid x = {5, 1}, y = {5, 2}, z = {6, 0};
    assert_true(wg_api_sid_cmp(&x, &y) < 0);
    assert_true(wg_api_sid_cmp(&y, &z) < 0);
    assert_true(wg_api_sid_cmp(&z, &x) > 0);
    assert_int_equal(wg_api_sid_cmp(&x, &x), 0);
}

static void test_query(void **state)
{
    static const char q[] = "since=1-2&wait&force=0&x=&waitx=1";
    const char *v;
    size_t vl;
    bool f;
    assert_true(wg_api_query_get(q, strlen(q), "since", &v, &vl));
    assert_int_equal(vl, 3);
    assert_memory_equal(v, "1-2", 3);
    assert_true(wg_api_query_get(q, strlen(q), "x", &v, &vl));
    assert_int_equal(vl, 0);
    assert_false(wg_api_query_get(q, strlen(q), "sinc", &v, &vl));
    assert_false(wg_api_query_get(NULL, 0, "since", &v, &vl));
    assert_int_equal(wg_api_query_flag(q, strlen(q), "wait", &f), 0);
    assert_true(f);
    assert_int_equal(wg_api_query_flag(q, strlen(q), "force", &f), 0);
    assert_false(f);
    assert_int_equal(wg_api_query_flag(q, strlen(q), "absent", &f), 0);
    assert_false(f);
    assert_int_equal(wg_api_query_flag("wait=true", 9, "wait", &f), 0);
    assert_true(f);
    assert_int_equal(wg_api_query_flag("wait=yes", 8, "wait", &f), -EINVAL);
    assert_int_equal(wg_api_query_flag("wait=10", 7, "wait", &f), -EINVAL);
}

/* ---- SSE ----------------------------------------------------------------- */

#define KV(n, v)                                                                                   \
    {                                                                                              \
        n, sizeof(n) - 1, v, sizeof(v) - 1                                                         \
    }

static void test_sse_event(void **state)
{
    struct wg_buf out;
    const struct wg_session_kv kv[] = {
        KV("id", "s1"),
        KV("type", "transition"),
        KV("from", ""),
        KV("to", "creating"),
        KV("at", "1700000000123"),
        KV("v", "1"),
        KV("detail", "{\"by\":\"api\"}"),
    };
    wg_buf_init(&out, 1 << 20);
    assert_int_equal(wg_api_sse_event(&out, "1700000000123-0", kv, 7), 0);
    static const char want[] =
        "id: 1700000000123-0\nevent: transition\n"
        "data: {\"id\":\"s1\",\"type\":\"transition\",\"from\":\"\",\"to\":\"creating\","
        "\"at\":1700000000123,\"v\":1,\"detail\":{\"by\":\"api\"}}\n\n";
    assert_int_equal(wg_buf_size(&out), sizeof(want) - 1);
    assert_memory_equal(wg_buf_head(&out), want, sizeof(want) - 1);

    /* Hostile entries stay one message: no raw newline in the data, a type
     * that could break the event line becomes "message", bad numbers and
     * detail stay strings, invalid UTF-8 is replaced. */
    const struct wg_session_kv evil[] = {
        KV("id", "x\n\ndata: fake"),  KV("type", "a\nb"),        KV("at", "-1"),
        KV("detail", "not json\r\n"), KV("note", "\xff\xfe ok"),
    };
    wg_buf_reset(&out);
    assert_int_equal(wg_api_sse_event(&out, "1-1", evil, 5), 0);
    char *text = strndup(wg_buf_head(&out), wg_buf_size(&out));
    assert_non_null(text);
    assert_non_null(strstr(text, "\nevent: message\n"));
    char *data = strstr(text, "data: ");
    assert_non_null(data);
    char *end = strchr(data, '\n');
    assert_string_equal(end, "\n\n");
    json_t *j = json_loadb(data + 6, (size_t)(end - data - 6), 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "at")), "-1");
    assert_string_equal(json_string_value(json_object_get(j, "detail")), "not json\r\n");
    assert_string_equal(json_string_value(json_object_get(j, "id")), "x\n\ndata: fake");
    assert_non_null(json_object_get(j, "note"));
    json_decref(j);
    free(text);
    wg_buf_release(&out);
}

/* ---- the admin token ---------------------------------------------------- */

static void test_bearer(void **state)
{
    struct {
        const char *value;
        bool ok;
    } cases[] = {
        {"Bearer t0k", true},        {"bearer t0k", true}, {"BEARER \t t0k", true},
        {"Bearer t0k0", false},      {"Bearer t0", false}, {"Bearer T0K", false},
        {"Bearer", false},           {"Bearer ", false},   {"Bearert0k", false},
        {"Basic t0k", false},        {"t0k", false},       {"", false},
        {"Bearer t0k extra", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (wg_admin_bearer_ok("t0k", cases[i].value, strlen(cases[i].value)) != cases[i].ok)
            fail_msg("\"%s\": want %d", cases[i].value, cases[i].ok);
    assert_false(wg_admin_bearer_ok(NULL, "Bearer x", 8));
    assert_false(wg_admin_bearer_ok("", "Bearer ", 7));
    /* A value with an embedded NUL never matches a shorter token. */
    assert_false(wg_admin_bearer_ok("t0k", "Bearer t0k\0x", 12));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_table),
        cmocka_unit_test(test_openapi_matches_the_route_table),
        cmocka_unit_test(test_create_rejects),
        cmocka_unit_test(test_create_spec_too_large),
        cmocka_unit_test(test_create_defaults),
        cmocka_unit_test(test_create_full),
        cmocka_unit_test(test_create_policy_rejects),
        cmocka_unit_test(test_create_template),
        cmocka_unit_test(test_create_nulls_are_absent),
        cmocka_unit_test(test_sid),
        cmocka_unit_test(test_query),
        cmocka_unit_test(test_sse_event),
        cmocka_unit_test(test_bearer),
    };
    return cmocka_run_group_tests(tests, setup_cfg, teardown_cfg);
}
