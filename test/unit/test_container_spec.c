/* test/unit/test_container_spec.c - the container spec codec
 * (common/container_spec): the rules both sides apply, the text the admin
 * API writes, and the vectors the waker creates a container from. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/container_spec.h"
#include "common/session.h"

static json_t *obj_of(const char *text)
{
    json_error_t je;
    json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (o == NULL)
        fail_msg("test JSON %s: %s", text, je.text);
    return o;
}

/* Encodes the spec members of text; rc, with *ret_text (NULL on failure). */
static int encode_text(const char *text, char **ret_text, char *err, size_t errlen)
{
    json_t *o = obj_of(text);
    *ret_text = NULL;
    int rc = wg_container_spec_encode(o, ret_text, err, errlen);
    json_decref(o);
    return rc;
}

/* ---- the rules, on both sides -------------------------------------------------------------- */

struct bad_case {
    const char *spec;
    const char *err; /* must appear in the message */
};

static const struct bad_case bad_members[] = {
    {"{\"cmd\":\"sh\"}", "field \"cmd\": must be an array of strings"},
    {"{\"cmd\":[\"sh\",2]}", "field \"cmd[1]\": must be a string"},
    {"{\"cmd\":[\"\"]}", "field \"cmd[0]\": must be a non-empty string"},
    {"{\"cmd\":[1]}", "field \"cmd[0]\""},
    {"{\"env\":[\"A\"]}", "field \"env[0]\": must be \"NAME=value\""},
    {"{\"env\":[\"=1\"]}", "field \"env[0]\""},
    {"{\"env\":{\"A\":\"1\"}}", "field \"env\""},
    {"{\"labels\":[]}", "field \"labels\": must be an object of strings"},
    {"{\"labels\":[\"a\"]}", "field \"labels\""},
    {"{\"labels\":{\"k\":1}}", "field \"labels.k\": must be a string"},
    {"{\"labels\":{\"\":\"v\"}}", "field \"labels\": keys must not be empty"},
    {"{\"labels\":{\"wakegate.port\":\"1\"}}",
     "field \"labels.wakegate.port\": keys starting with \"wakegate.\" are reserved"},
    {"{\"labels\":{\"wakegate.session\":\"evil\"}}", "field \"labels.wakegate.session\""},
    {"{\"labels\":{\"a\\\"b\":1}}", "field \"labels.a?b\""},
    {"{\"binds\":[\"/a\"]}", "field \"binds[0]\": must be \"host:container[:ro|rw]\""},
    {"{\"binds\":[\"/a:b\"]}", "field \"binds[0]\""},
    {"{\"binds\":[\":/b\"]}", "field \"binds[0]\""},
    {"{\"binds\":[\"/a:/b:rx\"]}", "field \"binds[0]\""},
    {"{\"binds\":[\"-v:/b\"]}", "field \"binds[0]\""},
    {"{\"binds\":[\"/a:/b\",5]}", "field \"binds[1]\": must be a string"},
    {"{\"binds\":[null]}", "field \"binds[0]\""},
    {"{\"save\":[]}", "field \"save\": must be an object"},
    {"{\"save\":{\"command\":\"git\"}}", "field \"save.command\""},
    {"{\"save\":{\"command\":[]}}", "field \"save.command\": must not be empty"},
    {"{\"save\":{\"command\":[\"\"]}}", "field \"save.command[0]\""},
    {"{\"save\":{\"timeout\":\"0s\"}}", "field \"save.timeout\": must be more than 0s"},
    {"{\"save\":{\"timeout\":\"soon\"}}", "field \"save.timeout\": must be a duration"},
    {"{\"save\":{\"path\":\"rel\"}}", "field \"save.path\": must be an absolute path"},
    {"{\"save\":{\"on_failure\":\"x\"}}", "field \"save.on_failure\""},
    {"{\"save\":{\"hook\":1}}", "unknown field \"save.hook\""},
};
#define N_BAD (sizeof(bad_members) / sizeof(bad_members[0]))

static void test_encode_rejects(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_BAD; i++) {
        char err[256] = "";
        char *text = (char *)"untouched";
        json_t *o = obj_of(bad_members[i].spec);
        int rc = wg_container_spec_encode(o, &text, err, sizeof(err));
        json_decref(o);
        if (rc != -EINVAL)
            fail_msg("case %zu (%s): rc %d", i, bad_members[i].spec, rc);
        assert_string_equal(text, "untouched");
        if (strstr(err, bad_members[i].err) == NULL)
            fail_msg("case %zu (%s): error \"%s\" lacks \"%s\"", i, bad_members[i].spec, err,
                     bad_members[i].err);
    }
}

/* What the API would refuse, the waker refuses too, with the same words. */
static void test_decode_rejects_what_encode_rejects(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_BAD; i++) {
        struct wg_container_spec sp;
        char err[256] = "";
        memset(&sp, 0x5a, sizeof(sp));
        int rc = wg_container_spec_decode(bad_members[i].spec, &sp, err, sizeof(err));
        if (rc != -EINVAL)
            fail_msg("case %zu (%s): rc %d", i, bad_members[i].spec, rc);
        if (strstr(err, bad_members[i].err) == NULL)
            fail_msg("case %zu (%s): error \"%s\" lacks \"%s\"", i, bad_members[i].spec, err,
                     bad_members[i].err);
    }
}

static void test_decode_rejects_text(void **state)
{
    const char *bad[] = {"not json", "[]", "\"s\"", "{\"cmd\":[\"a\"],\"cmd\":[\"b\"]}"};
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct wg_container_spec sp;
        char err[256] = "";
        memset(&sp, 0x5a, sizeof(sp));
        if (wg_container_spec_decode(bad[i], &sp, err, sizeof(err)) != -EINVAL)
            fail_msg("accepted %s", bad[i]);
        assert_true(err[0] != '\0');
        assert_true(strncmp(err, "spec ", 5) == 0);
    }
}

/* The entry cap holds for each array and for labels, on both sides. */
static void test_entry_cap(void **state)
{
    static const char *const arrays[] = {"cmd", "env", "binds"};
    const char *item[] = {"x", "K=V", "/h:/c"};
    char err[256];
    (void)state;
    for (size_t m = 0; m < 3; m++) {
        for (int extra = 0; extra <= 1; extra++) {
            json_t *a = json_array();
            for (int i = 0; i < WG_CONTAINER_SPEC_ITEMS_MAX + extra; i++)
                json_array_append_new(a, json_string(item[m]));
            json_t *o = json_pack("{s:o}", arrays[m], a);
            char *text = NULL;
            struct wg_container_spec sp = {0};
            int rc = wg_container_spec_encode(o, &text, err, sizeof(err));
            char *dumped = json_dumps(o, JSON_COMPACT);
            int drc = wg_container_spec_decode(dumped, &sp, err, sizeof(err));
            if (extra) {
                assert_int_equal(rc, -EINVAL);
                assert_int_equal(drc, -EINVAL);
                assert_non_null(strstr(err, "more than 256 entries"));
            } else {
                assert_int_equal(rc, 0);
                assert_int_equal(drc, 0);
            }
            wg_container_spec_release(&sp);
            free(dumped);
            free(text);
            json_decref(o);
        }
    }
    json_t *labels = json_object();
    for (int i = 0; i <= WG_CONTAINER_SPEC_ITEMS_MAX; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%d", i);
        json_object_set_new(labels, k, json_string("v"));
    }
    json_t *o = json_pack("{s:o}", "labels", labels);
    char *text = NULL;
    assert_int_equal(wg_container_spec_encode(o, &text, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "field \"labels\": has more than 256 entries"));
    json_decref(o);
}

/* ---- encode ---------------------------------------------------------------------------- */

static void test_encode_text(void **state)
{
    char err[256] = "";
    char *text = NULL;
    (void)state;
    /* The five members in their order, compact and ASCII; other members
     * (the create request's own) are left out. */
    int rc = encode_text(
        "{\"id\":\"s-2\",\"save\":{\"command\":[\"git\",\"push\"],\"timeout\":\"1m\",\"path\":\"/"
        "w\",\"on_failure\":\"stop\"},\"binds\":[\"/srv/x:/w\",\"vol_1:/c:ro\",\"/a:/b:rw\"],"
        "\"labels\":{\"team\":\"x\",\"z\":\"\"},\"env\":[\"A=1\",\"B=\"],"
        "\"cmd\":[\"sh\",\"-c\",\"echo \\u00e9\"],\"idle\":{\"pause_after\":\"30s\"}}",
        &text, err, sizeof(err));
    if (rc != 0)
        fail_msg("rc %d: %s", rc, err);
    assert_string_equal(text, "{\"cmd\":[\"sh\",\"-c\",\"echo \\u00E9\"],\"env\":[\"A=1\",\"B=\"],"
                              "\"labels\":{\"team\":\"x\",\"z\":\"\"},\"binds\":[\"/srv/x:/w\","
                              "\"vol_1:/c:ro\",\"/a:/b:rw\"],\"save\":{\"command\":[\"git\","
                              "\"push\"],\"timeout\":\"1m\",\"path\":\"/w\",\"on_failure\":"
                              "\"stop\"}}");
    free(text);

    /* Nothing given, or only nulls: no spec at all. */
    const char *none[] = {"{}", "{\"id\":\"a\"}",
                          "{\"cmd\":null,\"env\":null,\"labels\":null,\"binds\":null,"
                          "\"save\":null}"};
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
        text = (char *)"untouched";
        json_t *o = obj_of(none[i]);
        assert_int_equal(wg_container_spec_encode(o, &text, err, sizeof(err)), 0);
        assert_null(text);
        json_decref(o);
    }
    /* [] is kept as given: it means the image's CMD. Nulls inside save are absent. */
    assert_int_equal(encode_text("{\"cmd\":[],\"save\":{\"path\":null}}", &text, err, sizeof(err)),
                     0);
    assert_string_equal(text, "{\"cmd\":[],\"save\":{\"path\":null}}");
    free(text);
}

static void test_encode_size_limit(void **state)
{
    size_t n = 5 * 4100; /* over WG_SESSION_SPEC_MAX */
    char *body = malloc(n + 64);
    char err[256];
    char *text = NULL;
    (void)state;
    assert_non_null(body);
    /* Each string within its own cap (WG_TEXT_MAX), all of them over the
     * record's. */
    size_t k = (size_t)snprintf(body, n + 64, "{\"cmd\":[");
    for (int i = 0; i < 5; i++) {
        body[k++] = '"';
        memset(body + k, 'x', 4000);
        k += 4000;
        body[k++] = '"';
        body[k++] = i < 4 ? ',' : ']';
    }
    strcpy(body + k, "}");
    assert_int_equal(encode_text(body, &text, err, sizeof(err)), -EINVAL);
    assert_null(text);
    assert_string_equal(err, "body: cmd, env, labels, binds and save together are over 16384 "
                             "bytes of JSON");
    free(body);
}

/* ---- decode ---------------------------------------------------------------------------- */

static void test_decode(void **state)
{
    struct wg_container_spec sp;
    char err[256];
    (void)state;
    assert_int_equal(
        wg_container_spec_decode("{\"cmd\":[\"sh\",\"-c\",\"x\"],\"env\":[\"A=1\",\"B=\"],"
                                 "\"labels\":{\"team\":\"e2e\",\"z\":\"\"},"
                                 "\"binds\":[\"/h:/c:ro\"],\"save\":{\"path\":\"/w\"},"
                                 "\"future\":{\"x\":1}}",
                                 &sp, err, sizeof(err)),
        0);
    assert_string_equal(sp.cmd[0], "sh");
    assert_string_equal(sp.cmd[2], "x");
    assert_null(sp.cmd[3]);
    assert_string_equal(sp.env[1], "B=");
    assert_null(sp.env[2]);
    assert_string_equal(sp.labels[0], "team");
    assert_string_equal(sp.labels[1], "e2e");
    assert_string_equal(sp.labels[2], "z");
    assert_string_equal(sp.labels[3], "");
    assert_null(sp.labels[4]);
    assert_string_equal(sp.binds[0], "/h:/c:ro");
    assert_null(sp.binds[1]);
    wg_container_spec_release(&sp);
    assert_null(sp.cmd);
    wg_container_spec_release(&sp); /* idempotent */
    wg_container_spec_release(NULL);

    /* absent, empty, null members, [] cmd: the image's defaults */
    const char *empties[] = {NULL, "", "{}", "{\"cmd\":null,\"env\":null,\"labels\":null}",
                             "{\"cmd\":[]}"};
    for (size_t i = 0; i < sizeof(empties) / sizeof(empties[0]); i++) {
        assert_int_equal(wg_container_spec_decode(empties[i], &sp, err, sizeof(err)), 0);
        assert_null(sp.cmd);
        assert_null(sp.env);
        assert_null(sp.labels);
        assert_null(sp.binds);
        wg_container_spec_release(&sp);
    }
    assert_int_equal(wg_container_spec_decode("{\"env\":[]}", &sp, err, sizeof(err)), 0);
    assert_non_null(sp.env);
    assert_null(sp.env[0]);
    wg_container_spec_release(&sp);
}

/* What the Docker client would refuse at the first wake is refused here. */
static void test_encode_refuses_what_docker_refuses(void **state)
{
    static const struct {
        const char *body, *err;
    } rows[] = {
        {"{\"env\":[\"A=b\\nc\"]}", "field \"env[0]\": must be UTF-8 text of at most 4096 bytes "
                                    "without control characters"},
        {"{\"env\":[\"A=\\u0001\"]}", "field \"env[0]\": must be UTF-8"},
        {"{\"cmd\":[\"a\\u001bb\"]}", "field \"cmd[0]\": must be UTF-8"},
        {"{\"binds\":[\"/a\\u00e9\\u007f:/c\"]}", "field \"binds[0]\": must be"},
        {"{\"labels\":{\"k\":\"v\\r\"}}", "field \"labels.k\": must be UTF-8"},
        {"{\"labels\":{\"k\\n\":\"v\"}}", "field \"labels.k?\": keys must be UTF-8"},
    };
    char err[256];
    char *text = NULL;

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        err[0] = '\0';
        assert_int_equal(encode_text(rows[i].body, &text, err, sizeof(err)), -EINVAL);
        assert_null(text);
        if (strncmp(err, rows[i].err, strlen(rows[i].err)) != 0)
            fail_msg("row %zu: got '%s', want '%s...'", i, err, rows[i].err);
    }
    /* A tab and a newline pass in a command (scripts). */
    assert_int_equal(encode_text("{\"cmd\":[\"sh\",\"-c\",\"a\\n\\tb\"]}", &text, err, sizeof(err)),
                     0);
    free(text);
}

/* Whatever the API writes, the waker reads back as given. */
static void test_round_trip(void **state)
{
    struct wg_container_spec sp;
    char err[256] = "";
    char *text = NULL;
    (void)state;
    assert_int_equal(encode_text("{\"id\":\"r\",\"cmd\":[\"a\\tb\\nc\",\"\\u00e9\"],"
                                 "\"env\":[\"K=v=w\"],\"labels\":{\"\\u00e9\":\"\"},"
                                 "\"binds\":[\"v:/c\"]}",
                                 &text, err, sizeof(err)),
                     0);
    assert_int_equal(wg_container_spec_decode(text, &sp, err, sizeof(err)), 0);
    assert_string_equal(sp.cmd[0], "a\tb\nc");
    assert_string_equal(sp.cmd[1], "\xc3\xa9");
    assert_string_equal(sp.env[0], "K=v=w");
    assert_string_equal(sp.labels[0], "\xc3\xa9");
    assert_string_equal(sp.labels[1], "");
    assert_string_equal(sp.binds[0], "v:/c");
    wg_container_spec_release(&sp);
    free(text);
}

/* ---- shared helpers -------------------------------------------------------------------- */

static void test_show_name_and_duration(void **state)
{
    char name[WG_CONTAINER_SPEC_NAME_SHOW_MAX + 1], tiny[3], err[128];
    char longname[200];
    uint64_t ms = 0;
    (void)state;
    wg_container_spec_show_name(name, sizeof(name), "a\"b\\c\x01\xc3\xa9");
    assert_string_equal(name, "a?b?c???");
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    wg_container_spec_show_name(name, sizeof(name), longname);
    assert_int_equal(strlen(name), WG_CONTAINER_SPEC_NAME_SHOW_MAX);
    wg_container_spec_show_name(tiny, sizeof(tiny), "abc");
    assert_string_equal(tiny, "ab");

    json_t *v = json_string("20m");
    assert_int_equal(wg_container_spec_duration(v, "idle.stop_after", &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 1200000);
    json_decref(v);
    v = json_integer(5);
    assert_int_equal(wg_container_spec_duration(v, "idle.stop_after", &ms, err, sizeof(err)),
                     -EINVAL);
    assert_string_equal(err, "field \"idle.stop_after\": must be a duration such as \"30s\" or "
                             "\"20m\"");
    json_decref(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_rejects),
        cmocka_unit_test(test_decode_rejects_what_encode_rejects),
        cmocka_unit_test(test_decode_rejects_text),
        cmocka_unit_test(test_entry_cap),
        cmocka_unit_test(test_encode_text),
        cmocka_unit_test(test_encode_size_limit),
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_encode_refuses_what_docker_refuses),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_show_name_and_duration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
