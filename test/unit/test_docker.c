/* test/unit/test_docker.c - orchestrator/docker: the pure parts, and the loop plumbing.
 *
 * The pure parts (version negotiation, the stream demultiplexer, the
 * events line parser, the create-body builder, the inspect and list
 * parsers) are called through the client's private header,
 * orchestrator/docker_int.h. The loop tests need no engine: a missing socket, a socket
 * nobody listens on, a peer that accepts and never answers, and a small
 * scripted peer for answers a real engine does not give on demand (an old
 * API version, an oversized event line, a stream that ends). The real
 * engine is exercised by test/e2e/test_docker_client.py. Every loop test
 * ends by asserting that its loop closes with no live handle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "orchestrator/docker_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- ids, sessions, text ------------------------------------------------------------------ */

static void test_ref_valid(void **state)
{
    char long_ok[WG_DOCKER_REF_MAX + 1], too_long[WG_DOCKER_REF_MAX + 2];

    (void)state;
    assert_true(
        wg_docker_ref_valid("73664a59c1110d042b19abc6afaa8cc734254ec13b9312ea9eca991042fae858"));
    assert_true(wg_docker_ref_valid("73664a59c111"));
    assert_true(wg_docker_ref_valid("wg-session_42.v2"));
    assert_true(wg_docker_ref_valid("a"));
    memset(long_ok, 'a', sizeof(long_ok) - 1);
    long_ok[sizeof(long_ok) - 1] = '\0';
    assert_true(wg_docker_ref_valid(long_ok));
    memset(too_long, 'a', sizeof(too_long) - 1);
    too_long[sizeof(too_long) - 1] = '\0';
    assert_false(wg_docker_ref_valid(too_long));

    const char *bad[] = {"",      "../etc", "a/b",  "a b",   "-x",          ".x",  "_x",   "a?b",
                         "a%2fb", "a#b",    "a\nb", "/name", "caf\xc3\xa9", "a:b", "a&v=1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(wg_docker_ref_valid(bad[i]));
    assert_false(wg_docker_ref_valid(NULL));
}

static void test_full_id_and_session(void **state)
{
    (void)state;
    assert_true(
        docker_is_full_id("73664a59c1110d042b19abc6afaa8cc734254ec13b9312ea9eca991042fae858"));
    assert_false(
        docker_is_full_id("73664A59c1110d042b19abc6afaa8cc734254ec13b9312ea9eca991042fae858"));
    assert_false(docker_is_full_id("73664a59c111"));
    assert_false(docker_is_full_id(NULL));
    assert_true(docker_session_valid("42"));
    assert_true(docker_session_valid("s-42_a"));
    assert_false(docker_session_valid(""));
    assert_false(docker_session_valid("a.b"));
    assert_false(docker_session_valid("a b"));
    assert_false(docker_session_valid(NULL));
}

static void test_text_ok(void **state)
{
    (void)state;
    assert_true(docker_text_ok("plain", 100, false));
    assert_true(docker_text_ok("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 100, false));
    assert_true(docker_text_ok("", 100, true));
    assert_false(docker_text_ok("", 100, false));
    assert_false(docker_text_ok("tab\there", 100, false));
    assert_false(docker_text_ok("nl\n", 100, false));
    assert_false(docker_text_ok("del\x7f", 100, false));
    assert_false(docker_text_ok("\xc3", 100, false));         /* truncated sequence */
    assert_false(docker_text_ok("\xc0\xaf", 100, false));     /* overlong */
    assert_false(docker_text_ok("\xed\xa0\x80", 100, false)); /* surrogate */
    assert_false(docker_text_ok("\xf4\x90\x80\x80", 100, false));
    assert_false(docker_text_ok("abcdef", 5, false));
}

/* ---- API version -------------------------------------------------------------------------- */

static void test_version_negotiate(void **state)
{
    char v[DOCKER_VERSION_MAX];
    int maj, min;

    (void)state;
    assert_int_equal(docker_version_parse("1.41", 4, &maj, &min), 0);
    assert_int_equal(maj, 1);
    assert_int_equal(min, 41);
    const char *bad[] = {"", "1", "1.", ".1", "1.4x", "1.41.2", "a.b", " 1.41", "1.1000"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(docker_version_parse(bad[i], strlen(bad[i]), &maj, &min), -EINVAL);

    assert_int_equal(docker_version_negotiate("1.41", 1, 41, v, sizeof(v)), 0);
    assert_string_equal(v, "1.41");
    assert_int_equal(docker_version_negotiate("1.43", 1, 41, v, sizeof(v)), 0);
    assert_string_equal(v, "1.41");
    assert_int_equal(docker_version_negotiate("1.40", 1, 41, v, sizeof(v)), 0);
    assert_string_equal(v, "1.40");
    assert_int_equal(docker_version_negotiate("2.0", 1, 41, v, sizeof(v)), 0);
    assert_string_equal(v, "1.41");
    assert_int_equal(docker_version_negotiate("1.25", 1, 41, v, sizeof(v)), 0);
    assert_string_equal(v, "1.25");
    assert_int_equal(docker_version_negotiate("1.24", 1, 41, v, sizeof(v)), -EPROTONOSUPPORT);
    assert_int_equal(docker_version_negotiate("0.99", 1, 41, v, sizeof(v)), -EPROTONOSUPPORT);
    assert_int_equal(docker_version_negotiate("", 1, 41, v, sizeof(v)), 0);
    assert_string_equal(v, "1.41");
    assert_int_equal(docker_version_negotiate("junk", 1, 41, v, sizeof(v)), -EINVAL);
}

static void test_header_value(void **state)
{
    const char *v;
    const char *l1 = "Api-Version: 1.41\r\n", *l2 = "api-version:1.40  \r\n";

    (void)state;
    assert_int_equal(docker_header_value(l1, strlen(l1), "Api-Version", &v), 4);
    assert_memory_equal(v, "1.41", 4);
    assert_int_equal(docker_header_value(l2, strlen(l2), "Api-Version", &v), 4);
    assert_memory_equal(v, "1.40", 4);
    assert_int_equal(docker_header_value("Api-Versions: 1\r\n", 17, "Api-Version", &v), -1);
    assert_int_equal(docker_header_value("Server: Docker\r\n", 16, "Api-Version", &v), -1);
    assert_int_equal(docker_header_value("\r\n", 2, "Api-Version", &v), -1);
    assert_int_equal(docker_header_value("Api-Version:\r\n", 14, "Api-Version", &v), 0);
}

/* ---- time --------------------------------------------------------------------------------- */

static void test_rfc3339(void **state)
{
    (void)state;
    /* 2024-05-01T10:20:30Z is 1714558830 s after the epoch. */
    assert_int_equal(docker_rfc3339_ms("2024-05-01T10:20:30Z"), 1714558830000LL);
    assert_int_equal(docker_rfc3339_ms("2024-05-01T10:20:30.123456789Z"), 1714558830123LL);
    assert_int_equal(docker_rfc3339_ms("2024-05-01T10:20:30.5Z"), 1714558830500LL);
    assert_int_equal(docker_rfc3339_ms("2024-05-01T12:20:30.000+02:00"), 1714558830000LL);
    assert_int_equal(docker_rfc3339_ms("2024-05-01T08:20:30-02:00"), 1714558830000LL);
    assert_int_equal(docker_rfc3339_ms("0001-01-01T00:00:00Z"), 0);
    assert_int_equal(docker_rfc3339_ms(""), 0);
    assert_int_equal(docker_rfc3339_ms(NULL), 0);
    assert_int_equal(docker_rfc3339_ms("2024-05-01 10:20:30Z"), 0);
    assert_int_equal(docker_rfc3339_ms("2024-05-01T10:20:30"), 0);
    assert_int_equal(docker_rfc3339_ms("2024-13-01T10:20:30Z"), 0);
    assert_int_equal(docker_rfc3339_ms("2024-05-01T10:20:30.Z"), 0);
    assert_int_equal(docker_rfc3339_ms("2024-05-01T10:20:30Zjunk"), 0);
}

/* ---- demultiplexer, tail, lines ----------------------------------------------------------- */

struct sink {
    char data[4096];
    size_t len;
    int streams[64];
    size_t pieces;
};

static void sink_fn(void *arg, int stream, const char *p, size_t n)
{
    struct sink *s = arg;

    assert_true(s->len + n <= sizeof(s->data));
    memcpy(s->data + s->len, p, n);
    s->len += n;
    if (s->pieces < 64)
        s->streams[s->pieces] = stream;
    s->pieces++;
}

static size_t frame(char *out, int stream, const char *data)
{
    size_t n = strlen(data);

    out[0] = (char)stream;
    out[1] = out[2] = out[3] = 0;
    out[4] = (char)(n >> 24);
    out[5] = (char)(n >> 16);
    out[6] = (char)(n >> 8);
    out[7] = (char)n;
    memcpy(out + 8, data, n);
    return n + 8;
}

static void test_demux(void **state)
{
    char stream[256];
    size_t n = 0;
    struct wg_docker_demux m;
    struct sink s;

    (void)state;
    n += frame(stream + n, 1, "hello ");
    n += frame(stream + n, 2, "err\n");
    n += frame(stream + n, 1, "");
    n += frame(stream + n, 1, "world\n");

    /* In one piece. */
    memset(&m, 0, sizeof(m));
    memset(&s, 0, sizeof(s));
    wg_docker_demux_feed(&m, stream, n, sink_fn, &s);
    wg_docker_demux_end(&m, sink_fn, &s);
    assert_int_equal(s.len, strlen("hello err\nworld\n"));
    assert_memory_equal(s.data, "hello err\nworld\n", s.len);
    assert_int_equal(s.streams[0], 1);
    assert_int_equal(s.streams[1], 2);
    assert_int_equal(m.mode, WG_DOCKER_DM_MUX);

    /* Byte by byte: headers split anywhere. */
    memset(&m, 0, sizeof(m));
    memset(&s, 0, sizeof(s));
    for (size_t i = 0; i < n; i++)
        wg_docker_demux_feed(&m, stream + i, 1, sink_fn, &s);
    wg_docker_demux_end(&m, sink_fn, &s);
    assert_int_equal(s.len, strlen("hello err\nworld\n"));
    assert_memory_equal(s.data, "hello err\nworld\n", s.len);

    /* Every split in two. */
    for (size_t cut = 0; cut <= n; cut++) {
        memset(&m, 0, sizeof(m));
        memset(&s, 0, sizeof(s));
        wg_docker_demux_feed(&m, stream, cut, sink_fn, &s);
        wg_docker_demux_feed(&m, stream + cut, n - cut, sink_fn, &s);
        assert_int_equal(s.len, strlen("hello err\nworld\n"));
        assert_memory_equal(s.data, "hello err\nworld\n", s.len);
    }

    /* A TTY stream is raw from its first byte. */
    memset(&m, 0, sizeof(m));
    memset(&s, 0, sizeof(s));
    wg_docker_demux_feed(&m, "plain text\n", 11, sink_fn, &s);
    assert_int_equal(m.mode, WG_DOCKER_DM_RAW);
    assert_int_equal(s.len, 11);
    assert_memory_equal(s.data, "plain text\n", 11);

    /* ... also when it starts like a header and is not one. */
    memset(&m, 0, sizeof(m));
    memset(&s, 0, sizeof(s));
    wg_docker_demux_feed(&m, "\x01", 1, sink_fn, &s);
    wg_docker_demux_feed(&m, "\x00x", 2, sink_fn, &s);
    wg_docker_demux_feed(&m, "yz", 2, sink_fn, &s);
    assert_int_equal(m.mode, WG_DOCKER_DM_RAW);
    assert_int_equal(s.len, 5);
    assert_memory_equal(s.data, "\x01\x00xyz", 5);

    /* A raw stream shorter than a header is given back at the end. */
    memset(&m, 0, sizeof(m));
    memset(&s, 0, sizeof(s));
    wg_docker_demux_feed(&m, "\x02\x00", 2, sink_fn, &s);
    assert_int_equal(s.len, 0);
    wg_docker_demux_end(&m, sink_fn, &s);
    assert_int_equal(s.len, 2);
}

static void test_tail(void **state)
{
    struct wg_buf b;
    bool trunc = false;

    (void)state;
    wg_buf_init(&b, 11);
    docker_tail_append(&b, 10, "abc", 3, &trunc);
    docker_tail_append(&b, 10, "defg", 4, &trunc);
    assert_false(trunc);
    assert_int_equal(wg_buf_size(&b), 7);
    docker_tail_append(&b, 10, "hijkl", 5, &trunc);
    assert_true(trunc);
    assert_int_equal(wg_buf_size(&b), 10);
    assert_memory_equal(wg_buf_head(&b), "cdefghijkl", 10);
    docker_tail_append(&b, 10, "0123456789ABC", 13, &trunc);
    assert_int_equal(wg_buf_size(&b), 10);
    assert_memory_equal(wg_buf_head(&b), "3456789ABC", 10);
    wg_buf_release(&b);

    /* Exactly the cap into an empty buffer is not a truncation. */
    trunc = false;
    wg_buf_init(&b, 11);
    docker_tail_append(&b, 10, "0123456789", 10, &trunc);
    assert_false(trunc);
    wg_buf_release(&b);
}

struct lines {
    char got[8][64];
    int n;
    int stop_after;
};

static int line_cb(void *arg, const char *line, size_t len)
{
    struct lines *l = arg;

    assert_true(l->n < 8 && len < 64);
    memcpy(l->got[l->n], line, len);
    l->got[l->n][len] = '\0';
    l->n++;
    return l->stop_after && l->n >= l->stop_after ? 1 : 0;
}

static void test_lines(void **state)
{
    struct wg_buf b;
    struct lines l;

    (void)state;
    memset(&l, 0, sizeof(l));
    wg_buf_init(&b, 33);
    assert_int_equal(docker_lines_feed(&b, 32, "one\ntw", 6, line_cb, &l), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(docker_lines_feed(&b, 32, "o\n\nthree", 8, line_cb, &l), 0);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.got[0], "one");
    assert_string_equal(l.got[1], "two");
    assert_string_equal(l.got[2], "");
    assert_int_equal(docker_lines_feed(&b, 32, "\n", 1, line_cb, &l), 0);
    assert_string_equal(l.got[3], "three");
    assert_int_equal(wg_buf_size(&b), 0);

    /* A line past the cap, whole or in pieces. */
    char big[40];
    memset(big, 'x', sizeof(big));
    assert_int_equal(docker_lines_feed(&b, 32, big, sizeof(big), line_cb, &l), -EMSGSIZE);
    wg_buf_reset(&b);
    assert_int_equal(docker_lines_feed(&b, 32, big, 20, line_cb, &l), 0);
    assert_int_equal(docker_lines_feed(&b, 32, big, 20, line_cb, &l), -EMSGSIZE);
    wg_buf_reset(&b);

    /* The callback stops the feed. */
    memset(&l, 0, sizeof(l));
    l.stop_after = 1;
    assert_int_equal(docker_lines_feed(&b, 32, "a\nb\nc\n", 6, line_cb, &l), 1);
    assert_int_equal(l.n, 1);
    wg_buf_release(&b);
}

/* ---- events ------------------------------------------------------------------------------- */

static const char EV_DIE[] =
    "{\"status\":\"die\",\"id\":\"73664a59c111\",\"from\":\"wakegate-test:latest\","
    "\"Type\":\"container\",\"Action\":\"die\",\"Actor\":{\"ID\":\"73664a59c111\","
    "\"Attributes\":{\"exitCode\":\"143\",\"image\":\"wakegate-test:latest\",\"name\":\"wg-42\","
    "\"wakegate.session\":\"42\"}},\"scope\":\"local\",\"time\":1714558830,"
    "\"timeNano\":1714558830123456789}";

static void test_event_parse(void **state)
{
    struct wg_docker_event ev;
    json_t *root;

    (void)state;
    root = json_loads(EV_DIE, 0, NULL);
    assert_int_equal(docker_event_from_json(root, &ev), 0);
    assert_int_equal(ev.kind, WG_DOCKER_EVENT);
    assert_string_equal(ev.type, "container");
    assert_string_equal(ev.action, "die");
    assert_string_equal(ev.id, "73664a59c111");
    assert_string_equal(ev.name, "wg-42");
    assert_string_equal(ev.session, "42");
    assert_int_equal(ev.exit_code, 143);
    assert_null(ev.health);
    assert_int_equal(ev.time_ns, 1714558830123456789LL);
    assert_string_equal(json_string_value(json_object_get(ev.attributes, "image")),
                        "wakegate-test:latest");
    json_decref(root);

    root = json_loads("{\"Type\":\"container\",\"Action\":\"health_status: healthy\","
                      "\"Actor\":{\"ID\":\"abc\",\"Attributes\":{}},\"time\":5}",
                      0, NULL);
    assert_int_equal(docker_event_from_json(root, &ev), 0);
    assert_string_equal(ev.health, "healthy");
    assert_null(ev.session);
    assert_int_equal(ev.exit_code, -1);
    assert_int_equal(ev.time_ns, 5000000000LL);
    json_decref(root);

    /* The old shape: status and id only. */
    root = json_loads("{\"status\":\"oom\",\"id\":\"abc\"}", 0, NULL);
    assert_int_equal(docker_event_from_json(root, &ev), 0);
    assert_string_equal(ev.action, "oom");
    assert_string_equal(ev.id, "abc");
    assert_string_equal(ev.type, "container");
    assert_null(ev.attributes);
    json_decref(root);

    const char *bad[] = {"[]", "{}", "{\"Action\":\"start\"}", "{\"Actor\":{\"ID\":\"x\"}}",
                         ("{\"Action\":\"die\",\"Actor\":{\"ID\":\"x\",\"Attributes\":"
                          "{\"exitCode\":\"12x\"}}}")};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        root = json_loads(bad[i], 0, NULL);
        assert_non_null(root);
        if (i < 4)
            assert_int_equal(docker_event_from_json(root, &ev), -EBADMSG);
        else {
            assert_int_equal(docker_event_from_json(root, &ev), 0);
            assert_int_equal(ev.exit_code, -1); /* a malformed exit code is absent */
        }
        json_decref(root);
    }
}

/* ---- create body -------------------------------------------------------------------------- */

static void assert_json_equal(json_t *got, const char *want_text)
{
    json_error_t jerr;
    json_t *want = json_loads(want_text, 0, &jerr);

    if (!want)
        fail_msg("bad expected JSON: %s", jerr.text);
    if (!json_equal(got, want)) {
        char *s = json_dumps(got, JSON_SORT_KEYS);
        fail_msg("JSON differs:\n got %s\nwant %s", s, want_text);
    }
    json_decref(want);
}

static void test_create_body(void **state)
{
    static const char *const cmd[] = {"sh", "-c", "echo \"$X\"; exec httpd", NULL};
    static const char *const env[] = {"X=1", "EMPTY=", "Q=\"quoted\" {json}", NULL};
    static const char *const binds[] = {"/srv/repos/42:/work:rw", NULL};
    static const struct wg_docker_label labels[] = {
        {"wakegate.port", "8080"}, {"com.example.note", "a \"b\" c"}, {NULL, NULL}};
    struct wg_docker_spec s = {
        .session = "42",
        .name = "wg-42",
        .image = "wakegate-demo:latest",
        .cmd = cmd,
        .env = env,
        .labels = labels,
        .port = 8080,
        .binds = binds,
        .network_mode = "bridge",
        .memory_bytes = 536870912,
        .nano_cpus = 1500000000,
    };
    char err[256];
    json_t *body = NULL;

    (void)state;
    assert_int_equal(docker_create_body(&s, &body, err, sizeof(err)), 0);
    assert_json_equal(body, "{\"Image\":\"wakegate-demo:latest\","
                            "\"Cmd\":[\"sh\",\"-c\",\"echo \\\"$X\\\"; exec httpd\"],"
                            "\"Env\":[\"X=1\",\"EMPTY=\",\"Q=\\\"quoted\\\" {json}\"],"
                            "\"Labels\":{\"wakegate.session\":\"42\",\"wakegate.port\":\"8080\","
                            "\"com.example.note\":\"a \\\"b\\\" c\"},"
                            "\"ExposedPorts\":{\"8080/tcp\":{}},"
                            "\"Tty\":false,\"OpenStdin\":false,\"AttachStdin\":false,"
                            "\"HostConfig\":{\"Init\":true,\"Binds\":[\"/srv/repos/42:/work:rw\"],"
                            "\"NetworkMode\":\"bridge\",\"Memory\":536870912,"
                            "\"MemorySwap\":536870912,\"NanoCpus\":1500000000,"
                            "\"CapDrop\":[\"ALL\"],\"SecurityOpt\":[\"no-new-privileges\"]}}");
    json_decref(body);

    /* The least: session and image; init is always on. */
    struct wg_docker_spec min = {.session = "s1", .image = "img"};
    assert_int_equal(docker_create_body(&min, &body, err, sizeof(err)), 0);
    assert_json_equal(body, "{\"Image\":\"img\",\"Labels\":{\"wakegate.session\":\"s1\"},"
                            "\"Tty\":false,\"OpenStdin\":false,\"AttachStdin\":false,"
                            "\"HostConfig\":{\"Init\":true,\"CapDrop\":[\"ALL\"],"
                            "\"SecurityOpt\":[\"no-new-privileges\"]}}");
    json_decref(body);

    /* The whole sandbox: pids, added capabilities, read-only root with a
     * tmpfs /tmp, user and runtime. */
    static const char *const caps[] = {"NET_BIND_SERVICE", NULL};
    struct wg_docker_spec sb = {.session = "s1",
                                .image = "img",
                                .pids_limit = 64,
                                .cap_add = caps,
                                .read_only_root = true,
                                .user = "1000:1000",
                                .runtime = "runsc"};
    assert_int_equal(docker_create_body(&sb, &body, err, sizeof(err)), 0);
    assert_json_equal(body, "{\"Image\":\"img\",\"Labels\":{\"wakegate.session\":\"s1\"},"
                            "\"Tty\":false,\"OpenStdin\":false,\"AttachStdin\":false,"
                            "\"User\":\"1000:1000\","
                            "\"HostConfig\":{\"Init\":true,\"PidsLimit\":64,"
                            "\"CapDrop\":[\"ALL\"],\"CapAdd\":[\"NET_BIND_SERVICE\"],"
                            "\"SecurityOpt\":[\"no-new-privileges\"],\"ReadonlyRootfs\":true,"
                            "\"Tmpfs\":{\"/tmp\":\"rw,nosuid,nodev,mode=1777\"},"
                            "\"Runtime\":\"runsc\"}}");
    json_decref(body);

    /* A bind on /tmp is the writable /tmp: no tmpfs beside it (the engine
     * refuses two mounts on one target). A bind under /tmp keeps it. */
    static const char *const tmp_bind[] = {"/srv/s1-tmp:/tmp/:rw", NULL};
    static const char *const under_tmp[] = {"/srv/cache:/tmp/cache", NULL};
    struct wg_docker_spec ro = {
        .session = "s1", .image = "img", .read_only_root = true, .binds = tmp_bind};
    assert_int_equal(docker_create_body(&ro, &body, err, sizeof(err)), 0);
    assert_true(
        json_is_true(json_object_get(json_object_get(body, "HostConfig"), "ReadonlyRootfs")));
    assert_null(json_object_get(json_object_get(body, "HostConfig"), "Tmpfs"));
    json_decref(body);
    ro.binds = under_tmp;
    assert_int_equal(docker_create_body(&ro, &body, err, sizeof(err)), 0);
    assert_non_null(json_object_get(json_object_get(body, "HostConfig"), "Tmpfs"));
    json_decref(body);
}

static void test_create_body_refusals(void **state)
{
    static const char *const empty[] = {NULL};
    static const char *const bad_utf8[] = {"sh", "\xff", NULL};
    static const char *const env_noeq[] = {"NOEQ", NULL};
    static const char *const env_noname[] = {"=v", NULL};
    static const char *const env_ctl[] = {"A=b\nc", NULL};
    static const char *const bind_bad[] = {"/only-host", NULL};
    static const struct wg_docker_label reserved[] = {{"wakegate.session", "other"}, {NULL, NULL}};
    static const struct wg_docker_label dup[] = {{"a", "1"}, {"a", "2"}, {NULL, NULL}};
    static const struct wg_docker_label noval[] = {{"a", NULL}, {NULL, NULL}};
    const struct wg_docker_spec base = {.session = "42", .image = "img"};
    struct wg_docker_spec s;
    char err[256];
    json_t *body = NULL;

#define REFUSED(field_assign, fragment)                                                            \
    do {                                                                                           \
        s = base;                                                                                  \
        field_assign;                                                                              \
        err[0] = '\0';                                                                             \
        assert_int_equal(docker_create_body(&s, &body, err, sizeof(err)), -EINVAL);                \
        if (!strstr(err, fragment))                                                                \
            fail_msg("error \"%s\" lacks \"%s\"", err, fragment);                                  \
    } while (0)

    (void)state;
    assert_int_equal(docker_create_body(NULL, &body, err, sizeof(err)), -EINVAL);
    REFUSED(s.session = NULL, "session");
    REFUSED(s.session = "a b", "session");
    REFUSED(s.session = "a/b", "session");
    REFUSED(s.image = NULL, "image");
    REFUSED(s.image = "", "image");
    REFUSED(s.image = "img --privileged", "image");
    REFUSED(s.name = "../x", "name");
    REFUSED(s.name = "", "name");
    REFUSED(s.cmd = empty, "cmd");
    REFUSED(s.cmd = bad_utf8, "cmd[1]");
    REFUSED(s.env = env_noeq, "env[0]");
    REFUSED(s.env = env_noname, "env[0]");
    REFUSED(s.env = env_ctl, "env[0]");
    REFUSED(s.binds = bind_bad, "binds[0]");
    REFUSED(s.labels = reserved, "reserved");
    REFUSED(s.labels = dup, "twice");
    REFUSED(s.labels = noval, "labels[0]");
    REFUSED(s.memory_bytes = -1, "negative");
    REFUSED(s.network_mode = "a b", "network");
    REFUSED(s.pids_limit = -1, "negative");
    REFUSED(s.user = "a b", "user");
    REFUSED(s.runtime = "run sc", "runtime");
#undef REFUSED
}

/* ---- inspect and list answers ------------------------------------------------------------- */

static const char INSPECT[] =
    "{\"Id\":\"73664a59c1110d042b19abc6afaa8cc734254ec13b9312ea9eca991042fae858\","
    "\"Name\":\"/wg-42\",\"State\":{\"Status\":\"running\",\"Running\":true,\"Paused\":false,"
    "\"Restarting\":false,\"OOMKilled\":false,\"Dead\":false,\"Pid\":3994,\"ExitCode\":0,"
    "\"Error\":\"\",\"StartedAt\":\"2024-05-01T10:20:30.123456789Z\","
    "\"FinishedAt\":\"0001-01-01T00:00:00Z\",\"Health\":{\"Status\":\"healthy\","
    "\"FailingStreak\":0,\"Log\":[]}},\"Config\":{\"Image\":\"wakegate-test:latest\","
    "\"Tty\":false,\"Labels\":{\"wakegate.session\":\"42\"}},"
    "\"NetworkSettings\":{\"IPAddress\":\"\",\"Networks\":{\"other\":{\"IPAddress\":\"10.9.0.3\"},"
    "\"bridge\":{\"IPAddress\":\"10.213.5.2\"}}}}";

static void test_inspect_parse(void **state)
{
    struct wg_docker_container c;
    json_t *root = json_loads(INSPECT, 0, NULL);

    (void)state;
    assert_int_equal(docker_container_from_json(root, &c), 0);
    assert_true(docker_is_full_id(c.id));
    assert_string_equal(c.name, "wg-42");
    assert_string_equal(c.image, "wakegate-test:latest");
    assert_string_equal(c.status, "running");
    assert_true(c.running);
    assert_false(c.paused);
    assert_int_equal(c.pid, 3994);
    assert_string_equal(c.health, "healthy");
    assert_string_equal(c.ip, "10.213.5.2"); /* the default bridge before other networks */
    assert_int_equal(c.started_ms, 1714558830123LL);
    assert_int_equal(c.finished_ms, 0);
    assert_string_equal(json_string_value(json_object_get(c.labels, "wakegate.session")), "42");
    json_decref(root);

    /* No health check, no labels, an exited container on a custom network. */
    root =
        json_loads("{\"Id\":\"abc\",\"Name\":\"x\",\"State\":{\"Status\":\"exited\","
                   "\"ExitCode\":137,\"OOMKilled\":true},\"Config\":{\"Labels\":null},"
                   "\"NetworkSettings\":{\"Networks\":{\"mynet\":{\"IPAddress\":\"10.9.0.3\"}}}}",
                   0, NULL);
    assert_int_equal(docker_container_from_json(root, &c), 0);
    assert_null(c.health);
    assert_true(c.oom_killed);
    assert_int_equal(c.exit_code, 137);
    assert_string_equal(c.ip, "10.9.0.3");
    assert_true(json_is_object(c.labels));
    assert_int_equal(json_object_size(c.labels), 0);
    json_decref(root);

    root = json_loads("{\"Id\":\"abc\"}", 0, NULL);
    assert_int_equal(docker_container_from_json(root, &c), -EBADMSG);
    json_decref(root);
    root = json_loads("[1]", 0, NULL);
    assert_int_equal(docker_container_from_json(root, &c), -EBADMSG);
    json_decref(root);
    assert_int_equal(docker_container_from_json(NULL, &c), -EBADMSG);
}

static void test_list_parse(void **state)
{
    struct wg_docker_summary *v;
    size_t n;
    json_t *root =
        json_loads("[{\"Id\":\"aaa\",\"Names\":[\"/wg-1\"],\"Image\":\"img\",\"State\":\"running\","
                   "\"Status\":\"Up 2 "
                   "minutes\",\"Created\":1714558830,\"Labels\":{\"wakegate.session\":\"1\"}},"
                   "{\"Id\":\"bbb\",\"Names\":[],\"State\":\"exited\"}]",
                   0, NULL);

    (void)state;
    assert_int_equal(docker_summaries_from_json(root, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].id, "aaa");
    assert_string_equal(v[0].name, "wg-1");
    assert_string_equal(v[0].state, "running");
    assert_int_equal(v[0].created, 1714558830);
    assert_string_equal(json_string_value(json_object_get(v[0].labels, "wakegate.session")), "1");
    assert_string_equal(v[1].name, "");
    assert_true(json_is_object(v[1].labels));
    free(v);
    json_decref(root);

    root = json_loads("[]", 0, NULL);
    assert_int_equal(docker_summaries_from_json(root, &v, &n), 0);
    assert_int_equal(n, 0);
    assert_null(v);
    json_decref(root);

    root = json_loads("[{\"Names\":[]}]", 0, NULL);
    assert_int_equal(docker_summaries_from_json(root, &v, &n), -EBADMSG);
    json_decref(root);
    root = json_loads("{}", 0, NULL);
    assert_int_equal(docker_summaries_from_json(root, &v, &n), -EBADMSG);
    json_decref(root);
}

static void test_label_filters(void **state)
{
    char *f = docker_label_filters("wakegate.session=a b&c", true), *dec;
    int declen;
    json_t *root;

    (void)state;
    assert_non_null(f);
    assert_null(strpbrk(f, " &\"{}[]")); /* all escaped */
    dec = curl_easy_unescape(NULL, f, 0, &declen);
    root = json_loadb(dec, (size_t)declen, 0, NULL);
    assert_json_equal(root, "{\"label\":[\"wakegate.session=a b&c\"],\"type\":[\"container\"]}");
    json_decref(root);
    curl_free(dec);
    free(f);
    assert_true(docker_label_ok("wakegate.session"));
    assert_false(docker_label_ok(""));
    assert_false(docker_label_ok("=x"));
    assert_false(docker_label_ok("a\nb"));
}

/* ---- the loop: no engine ------------------------------------------------------------------ */

struct fx {
    uv_loop_t loop;
    char dir[64];
    char sock[100];
    char host[120];
    struct wg_docker *d;
    void *peer; /* struct peer, freed after the loop closed its handles */
};

struct got {
    int calls;
    int status;
    long http;
    char error[512];
    char message[512];
    char api_version[16];
    bool inside; /* ran inside the issuing call */
    uint64_t at_ms;
    struct fx *fx;
};

static bool in_call;

static void got_cb(int status, const struct wg_docker_reply *r, void *arg)
{
    struct got *g = arg;

    g->calls++;
    g->status = status;
    g->http = r->http_status;
    g->inside = in_call;
    g->at_ms = uv_now(&g->fx->loop);
    snprintf(g->error, sizeof(g->error), "%s", r->error);
    snprintf(g->message, sizeof(g->message), "%s", r->message);
    snprintf(g->api_version, sizeof(g->api_version), "%s", r->api_version ? r->api_version : "");
}

static int fx_setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));

    assert_non_null(fx);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/wg-test-docker-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->sock, sizeof(fx->sock), "%s/docker.sock", fx->dir);
    snprintf(fx->host, sizeof(fx->host), "unix://%s", fx->sock);
    *state = fx;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *fx = *state;

    wg_docker_free(fx->d);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    unlink(fx->sock);
    rmdir(fx->dir);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    free(fx->peer);
    free(fx);
    return 0;
}

static void fx_new(struct fx *fx, uint32_t timeout_ms)
{
    struct wg_docker_opts o = {
        .host = fx->host, .timeout_ms = timeout_ms, .connect_timeout_ms = 500};
    char err[256];

    assert_int_equal(wg_docker_new(&fx->loop, &o, NULL, &fx->d, err, sizeof(err)), 0);
}

static void run_until(struct fx *fx, const int *calls, int want)
{
    uint64_t start = uv_now(&fx->loop);

    while (*calls < want) {
        uv_run(&fx->loop, UV_RUN_ONCE);
        assert_true(uv_now(&fx->loop) - start < 10000);
    }
}

static void test_new_refuses(void **state)
{
    struct fx *fx = *state;
    struct wg_docker_opts o = {.host = "tcp://h:99999"};
    char err[256];

    err[0] = '\0';
    assert_int_equal(wg_docker_new(&fx->loop, &o, NULL, &fx->d, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "port"));
    assert_null(fx->d);
    o.host = "unix:///x.sock";
    o.api_version = "one";
    assert_int_equal(wg_docker_new(&fx->loop, &o, NULL, &fx->d, err, sizeof(err)), -EINVAL);
    o.api_version = NULL;
    o.tls_ca = "/ca.pem";
    assert_int_equal(wg_docker_new(&fx->loop, &o, NULL, &fx->d, err, sizeof(err)), -EINVAL);
    o = (struct wg_docker_opts){.host = "tcp://h", .tls = true, .tls_cert = "/c.pem"};
    assert_int_equal(wg_docker_new(&fx->loop, &o, NULL, &fx->d, err, sizeof(err)), -EINVAL);
    assert_null(fx->d);
}

static void test_missing_socket(void **state)
{
    struct fx *fx = *state;
    struct got a = {.fx = fx}, b = {.fx = fx}, c = {.fx = fx};

    fx_new(fx, 2000);
    in_call = true;
    assert_int_equal(wg_docker_ping(fx->d, got_cb, &a), 0);
    assert_int_equal(wg_docker_inspect(fx->d, "abc", got_cb, &b), 0);
    assert_int_equal(wg_docker_start(fx->d, "abc", got_cb, &c), 0);
    in_call = false;
    run_until(fx, &c.calls, 1);
    run_until(fx, &a.calls, 1);
    assert_false(a.inside || b.inside || c.inside);
    assert_int_equal(a.status, -ENOENT);
    assert_int_equal(b.status, -ENOENT);
    assert_int_equal(c.status, -ENOENT);
    assert_int_equal(a.http, 0);
    assert_non_null(strstr(a.error, "GET /_ping: cannot connect to unix://"));
    assert_non_null(strstr(b.error, "GET /containers/abc/json: API version negotiation failed"));
    assert_null(wg_docker_api_version(fx->d));
    assert_int_equal(a.calls + b.calls + c.calls, 3);
}

static void test_refused_socket(void **state)
{
    struct fx *fx = *state;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    struct got a = {.fx = fx};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    /* Bound but not listening: connect() is refused. */
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", fx->sock);
    assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    fx_new(fx, 2000);
    assert_int_equal(wg_docker_version(fx->d, got_cb, &a), 0);
    run_until(fx, &a.calls, 1);
    assert_int_equal(a.status, -ECONNREFUSED);
    close(fd);
}

static void test_refusals_no_callback(void **state)
{
    struct fx *fx = *state;
    struct got a = {.fx = fx};
    static const char *const argv[] = {"true", NULL};
    static const char *const empty[] = {NULL};
    struct wg_docker_events *e = NULL;
    struct wg_docker_events_opts eo = {.label = "", .since_ns = 0};

    fx_new(fx, 2000);
    assert_int_equal(wg_docker_start(fx->d, "../x", got_cb, &a), -EINVAL);
    assert_int_equal(wg_docker_stop(fx->d, "a b", 1, got_cb, &a), -EINVAL);
    assert_int_equal(wg_docker_pause(fx->d, NULL, got_cb, &a), -EINVAL);
    assert_int_equal(wg_docker_unpause(fx->d, "", got_cb, &a), -EINVAL);
    assert_int_equal(wg_docker_inspect(fx->d, "x/y", got_cb, &a), -EINVAL);
    assert_int_equal(wg_docker_remove(fx->d, "x?y", true, true, got_cb, &a), -EINVAL);
    assert_int_equal(wg_docker_logs(fx->d, "x#", 10, got_cb, &a), -EINVAL);
    assert_int_equal(wg_docker_exec(fx->d, "ok", empty, 100, got_cb, &a), -EINVAL);
    assert_int_equal(wg_docker_exec(fx->d, "ok", NULL, 100, got_cb, &a), -EINVAL);
    assert_int_equal(wg_docker_exec(fx->d, "../ok", argv, 100, got_cb, &a), -EINVAL);
    assert_int_equal(wg_docker_list(fx->d, "a\nb", got_cb, &a), -EINVAL);
    assert_int_equal(wg_docker_events_start(fx->d, &eo, NULL, got_cb, &a, &e), -EINVAL);
    assert_int_equal(wg_docker_create(fx->d, NULL, got_cb, &a, NULL, 0), -EINVAL);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    assert_int_equal(a.calls, 0);
}

static void ev_nop(const struct wg_docker_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
}

static void test_free_cancels(void **state)
{
    struct fx *fx = *state;
    struct got a = {.fx = fx}, b = {.fx = fx}, c = {.fx = fx}, e = {.fx = fx};
    static const char *const argv[] = {"true", NULL};
    struct wg_docker_events *es;

    fx_new(fx, 2000);
    assert_int_equal(wg_docker_inspect(fx->d, "abc", got_cb, &a), 0);
    assert_int_equal(wg_docker_exec(fx->d, "abc", argv, 1000, got_cb, &b), 0);
    assert_int_equal(wg_docker_ping(fx->d, got_cb, &c), 0);
    assert_int_equal(wg_docker_events_start(fx->d, NULL, ev_nop, got_cb, &e, &es), 0);
    wg_docker_free(fx->d);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
    assert_int_equal(c.calls, 1);
    assert_int_equal(e.calls, 1);
    assert_int_equal(a.status, -ECANCELED);
    assert_int_equal(b.status, -ECANCELED);
    assert_int_equal(e.status, -ECANCELED);
    /* After free: calls are refused and free is idempotent. (es died with
     * its end callback.) */
    assert_int_equal(wg_docker_ping(fx->d, got_cb, &a), -ECANCELED);
    wg_docker_free(fx->d);
    fx->d = NULL;
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(a.calls, 1);
}

static void test_events_stop_queued(void **state)
{
    struct fx *fx = *state;
    struct got e = {.fx = fx};
    struct wg_docker_events *es;

    fx_new(fx, 2000);
    assert_int_equal(wg_docker_events_start(fx->d, NULL, ev_nop, got_cb, &e, &es), 0);
    wg_docker_events_stop(es);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    assert_int_equal(e.calls, 0);
}

/* ---- a scripted peer ---------------------------------------------------------------------- */

struct peer;
typedef void peer_fn(struct peer *p, uv_stream_t *c, const char *line);

struct peer {
    uv_pipe_t srv;
    struct fx *fx;
    peer_fn *fn;
    uv_stream_t *last; /* the last connection that sent a request */
    int requests;
    int open;
    char lines[16][256];
};

struct pconn {
    uv_pipe_t h;
    struct peer *p;
    char buf[16384];
    size_t len;
};

static void pconn_closed(uv_handle_t *h)
{
    struct pconn *c = h->data;

    c->p->open--;
    free(c);
}

static void peer_close(struct peer *p, uv_stream_t *s)
{
    if (p->last == s)
        p->last = NULL;
    if (!uv_is_closing((uv_handle_t *)s))
        uv_close((uv_handle_t *)s, pconn_closed);
}

static void write_done(uv_write_t *w, int status)
{
    (void)status;
    free(w->data);
    free(w);
}

static void peer_send(uv_stream_t *s, const char *data, size_t n)
{
    uv_write_t *w = malloc(sizeof(*w));
    char *copy = malloc(n);
    uv_buf_t b;

    memcpy(copy, data, n);
    w->data = copy;
    b = uv_buf_init(copy, (unsigned)n);
    assert_int_equal(uv_write(w, s, &b, 1, write_done), 0);
}

static void peer_sends(uv_stream_t *s, const char *text)
{
    peer_send(s, text, strlen(text));
}

static void palloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct pconn *c = h->data;

    (void)hint;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void peer_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct pconn *c = s->data;
    struct peer *p = c->p;
    char *end;

    (void)b;
    if (n < 0) {
        peer_close(p, s);
        return;
    }
    c->len += (size_t)n;
    /* One request per head; bodies (small, with Content-Length) are skipped. */
    while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4))) {
        size_t head = (size_t)(end - c->buf) + 4, body = 0;
        char *cl = memmem(c->buf, head, "Content-Length: ", 16);
        char line[256];
        if (cl)
            body = strtoul(cl + 16, NULL, 10);
        if (c->len < head + body)
            return;
        snprintf(line, sizeof(line), "%.*s", (int)strcspn(c->buf, "\r"), c->buf);
        if (p->requests < 16)
            snprintf(p->lines[p->requests], sizeof(p->lines[0]), "%s", line);
        p->requests++;
        memmove(c->buf, c->buf + head + body, c->len - head - body);
        c->len -= head + body;
        p->last = s;
        p->fn(p, s, line);
        if (uv_is_closing((uv_handle_t *)s))
            return;
    }
}

static void on_peer_conn(uv_stream_t *srv, int status)
{
    struct peer *p = srv->data;
    struct pconn *c = calloc(1, sizeof(*c));

    assert_int_equal(status, 0);
    c->p = p;
    uv_pipe_init(srv->loop, &c->h, 0);
    c->h.data = c;
    assert_int_equal(uv_accept(srv, (uv_stream_t *)&c->h), 0);
    p->open++;
    uv_read_start((uv_stream_t *)&c->h, palloc, peer_read);
}

/* The peer outlives the test function: its connections close in the
 * fixture's teardown. */
static struct peer *peer_start(struct fx *fx, peer_fn *fn)
{
    struct peer *p = calloc(1, sizeof(*p));

    assert_non_null(p);
    fx->peer = p;
    p->fx = fx;
    p->fn = fn;
    uv_pipe_init(&fx->loop, &p->srv, 0);
    p->srv.data = p;
    assert_int_equal(uv_pipe_bind(&p->srv, fx->sock), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&p->srv, 16, on_peer_conn), 0);
    return p;
}

static void peer_stop(struct peer *p)
{
    uv_close((uv_handle_t *)&p->srv, NULL);
    if (p->last)
        peer_close(p, p->last);
}

static const char STREAM_HEAD[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n";

static void send_chunk(uv_stream_t *s, const char *data)
{
    char head[32];

    snprintf(head, sizeof(head), "%zx\r\n", strlen(data));
    peer_sends(s, head);
    peer_sends(s, data);
    peer_sends(s, "\r\n");
}

/* An engine that speaks 1.24 only. */
static void old_engine(struct peer *p, uv_stream_t *s, const char *line)
{
    (void)p;
    (void)line;
    peer_sends(s, "HTTP/1.1 200 OK\r\nApi-Version: 1.24\r\nContent-Length: 2\r\n\r\nOK");
}

static void test_old_engine(void **state)
{
    struct fx *fx = *state;
    struct peer *p;
    struct got a = {.fx = fx}, b = {.fx = fx};

    p = peer_start(fx, old_engine);
    fx_new(fx, 2000);
    assert_int_equal(wg_docker_inspect(fx->d, "abc", got_cb, &a), 0);
    run_until(fx, &a.calls, 1);
    assert_int_equal(a.status, -EPROTONOSUPPORT);
    assert_non_null(strstr(a.error, "older than 1.25"));
    assert_int_equal(wg_docker_ping(fx->d, got_cb, &b), 0);
    run_until(fx, &b.calls, 1);
    assert_int_equal(b.status, -EPROTONOSUPPORT);
    assert_int_equal(p->requests, 2); /* two pings, no inspect */
    assert_string_equal(p->lines[0], "GET /_ping HTTP/1.1");
    wg_docker_free(fx->d);
    fx->d = NULL;
    peer_stop(p);
}

/* Answers by request line: versioned paths at 1.40, odd answers for tests. */
static void scripted(struct peer *p, uv_stream_t *s, const char *line)
{
    (void)p;
    if (strncmp(line, "GET /_ping", 10) == 0) {
        peer_sends(s, "HTTP/1.1 200 OK\r\nAPI-VERSION: 1.40\r\nContent-Length: 2\r\n\r\nOK");
    } else if (strstr(line, "/containers/err500/json")) {
        peer_sends(s, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 19\r\n\r\n"
                      "plain failure\r\nmore");
    } else if (strstr(line, "/containers/create")) {
        peer_sends(s, "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                      "Content-Length: 15\r\n\r\n{\"Warnings\":[]}");
    } else if (strstr(line, "/containers/big/json")) {
        char big[512];
        int n = snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n");
        memset(big + n, 'x', 200);
        peer_send(s, big, (size_t)n + 200);
    } else if (strstr(line, "/containers/x/start")) {
        peer_sends(s, "HTTP/1.1 304 Not Modified\r\n\r\n");
    } else if (strstr(line, "/containers/x/pause")) {
        peer_sends(s, "HTTP/1.1 304 Not Modified\r\n\r\n");
    } else if (strstr(line, "/containers/x/json")) {
        peer_sends(s, "HTTP/1.1 304 Not Modified\r\n\r\n"); /* not a success for inspect */
    } else if (strstr(line, "GET /v1.40/events")) {
        peer_sends(s, STREAM_HEAD);
        send_chunk(s, "{\"Type\":\"container\",\"Action\":\"start\",\"Actor\":{\"ID\":\"c1\","
                      "\"Attributes\":{\"wakegate.session\":\"7\"}},\"timeNano\":1}\n{\"Type\":");
        send_chunk(s, "\"container\",\"Action\":\"die\",\"Actor\":{\"ID\":\"c1\",\"Attributes\":"
                      "{\"exitCode\":\"2\"}},\"timeNano\":2}\r\nnot json\n\n");
    } else {
        peer_sends(s, "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                      "Content-Length: 30\r\n\r\n{\"message\":\"No such thing: x\"}");
    }
}

static void test_scripted_answers(void **state)
{
    struct fx *fx = *state;
    struct peer *p;
    struct got a = {.fx = fx}, b = {.fx = fx}, c = {.fx = fx}, d = {.fx = fx}, e = {.fx = fx},
               f = {.fx = fx}, g = {.fx = fx};
    struct wg_docker_spec spec = {.session = "7", .image = "img"};
    struct wg_docker_opts o = {.max_body = 100};
    char err[256];

    p = peer_start(fx, scripted);
    o.host = fx->host;
    assert_int_equal(wg_docker_new(&fx->loop, &o, NULL, &fx->d, err, sizeof(err)), 0);
    assert_int_equal(wg_docker_inspect(fx->d, "err500", got_cb, &a), 0);
    assert_int_equal(wg_docker_create(fx->d, &spec, got_cb, &b, err, sizeof(err)), 0);
    assert_int_equal(wg_docker_inspect(fx->d, "big", got_cb, &c), 0);
    assert_int_equal(wg_docker_start(fx->d, "x", got_cb, &d), 0);
    assert_int_equal(wg_docker_pause(fx->d, "x", got_cb, &e), 0);
    assert_int_equal(wg_docker_inspect(fx->d, "x", got_cb, &f), 0);
    assert_int_equal(wg_docker_remove(fx->d, "nothing", false, false, got_cb, &g), 0);
    run_until(fx, &a.calls, 1);
    run_until(fx, &b.calls, 1);
    run_until(fx, &c.calls, 1);
    run_until(fx, &d.calls, 1);
    run_until(fx, &e.calls, 1);
    run_until(fx, &f.calls, 1);
    run_until(fx, &g.calls, 1);

    assert_string_equal(wg_docker_api_version(fx->d), "1.40");
    assert_int_equal(a.status, WG_DOCKER_EHTTP);
    assert_int_equal(a.http, 500);
    assert_string_equal(a.message, "plain failure"); /* no JSON: the first line */
    assert_string_equal(a.error, "GET /v1.40/containers/err500/json: 500 plain failure");
    assert_string_equal(a.api_version, "1.40");
    assert_int_equal(b.status, -EBADMSG); /* 201 without an Id */
    assert_int_equal(c.status, -EMSGSIZE);
    assert_int_equal(d.status, 0);
    assert_int_equal(d.http, 304);
    assert_int_equal(e.status, 0);
    assert_int_equal(f.status, WG_DOCKER_EHTTP);
    assert_int_equal(g.status, WG_DOCKER_ENOTFOUND);
    assert_string_equal(g.message, "No such thing: x");
    assert_string_equal(g.error,
                        "DELETE /v1.40/containers/nothing?force=0&v=0: 404 No such thing: x");
    wg_docker_free(fx->d);
    fx->d = NULL;
    peer_stop(p);
}

struct evs {
    struct fx *fx;
    int opens, events;
    char actions[8][32];
    int exit_codes[8];
    const char *sessions[8];
    struct wg_docker_events *es;
    bool stop_in_cb, free_in_cb;
    struct got end;
    struct got *other;
};

static void ev_record(const struct wg_docker_event *ev, void *arg)
{
    struct evs *v = arg;

    if (ev->kind == WG_DOCKER_EVENTS_OPEN) {
        v->opens++;
        return;
    }
    if (v->events < 8) {
        snprintf(v->actions[v->events], sizeof(v->actions[0]), "%s", ev->action);
        v->exit_codes[v->events] = ev->exit_code;
        v->sessions[v->events] = ev->session ? "set" : NULL;
    }
    v->events++;
    if (v->stop_in_cb)
        wg_docker_events_stop(v->es);
    if (v->free_in_cb) {
        wg_docker_free(v->fx->d);
        v->fx->d = NULL;
    }
}

static void ev_end(int status, const struct wg_docker_reply *r, void *arg)
{
    struct evs *v = arg;

    got_cb(status, r, &v->end);
}

static void test_events_stream(void **state)
{
    struct fx *fx = *state;
    struct peer *p;
    struct evs v = {.fx = fx, .end = {.fx = fx}};
    struct wg_docker_events_opts eo = {.since_ns = 1714558830123456789LL};

    p = peer_start(fx, scripted);
    fx_new(fx, 2000);
    assert_int_equal(wg_docker_events_start(fx->d, &eo, ev_record, ev_end, &v, &v.es), 0);
    while (v.events < 2)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_int_equal(v.opens, 1);
    assert_string_equal(v.actions[0], "start");
    assert_string_equal(v.actions[1], "die");
    assert_int_equal(v.exit_codes[1], 2);
    assert_non_null(v.sessions[0]);
    assert_null(v.sessions[1]);
    assert_non_null(strstr(p->lines[1], "&since=1714558830.123456789 "));
    assert_non_null(strstr(p->lines[1], "filters=%7B%22label%22%3A%5B%22wakegate.session%22%5D"));
    /* The engine ends the stream: the owner hears -ECONNRESET. */
    peer_sends(p->last, "0\r\n\r\n");
    run_until(fx, &v.end.calls, 1);
    assert_int_equal(v.end.status, -ECONNRESET);
    assert_int_equal(v.events, 2); /* "not json" was skipped */
    wg_docker_free(fx->d);
    fx->d = NULL;
    peer_stop(p);
}

static void test_events_line_cap(void **state)
{
    struct fx *fx = *state;
    struct peer *p;
    struct evs v = {.fx = fx, .end = {.fx = fx}};
    char *big = malloc(WG_DOCKER_MAX_EVENT_LINE + 2);

    p = peer_start(fx, scripted);
    fx_new(fx, 2000);
    assert_int_equal(wg_docker_events_start(fx->d, NULL, ev_record, ev_end, &v, &v.es), 0);
    while (v.events < 2)
        uv_run(&fx->loop, UV_RUN_ONCE);
    memset(big, 'x', WG_DOCKER_MAX_EVENT_LINE + 1);
    big[WG_DOCKER_MAX_EVENT_LINE + 1] = '\0';
    send_chunk(p->last, big);
    free(big);
    run_until(fx, &v.end.calls, 1);
    assert_int_equal(v.end.status, -EMSGSIZE);
    wg_docker_free(fx->d);
    fx->d = NULL;
    peer_stop(p);
}

static void test_events_stop_in_callback(void **state)
{
    struct fx *fx = *state;
    struct peer *p;
    struct evs v = {.fx = fx, .end = {.fx = fx}, .stop_in_cb = true};
    struct got a = {.fx = fx};

    p = peer_start(fx, scripted);
    fx_new(fx, 2000);
    assert_int_equal(wg_docker_events_start(fx->d, NULL, ev_record, ev_end, &v, &v.es), 0);
    while (v.events < 1)
        uv_run(&fx->loop, UV_RUN_ONCE);
    /* The rest of the chunk is not delivered; the client stays usable. */
    assert_int_equal(wg_docker_ping(fx->d, got_cb, &a), 0);
    run_until(fx, &a.calls, 1);
    assert_int_equal(a.status, 0);
    assert_int_equal(v.events, 1);
    assert_int_equal(v.end.calls, 0);
    wg_docker_free(fx->d);
    fx->d = NULL;
    peer_stop(p);
}

static void test_free_in_event_callback(void **state)
{
    struct fx *fx = *state;
    struct peer *p;
    struct evs v = {.fx = fx, .end = {.fx = fx}, .free_in_cb = true};

    p = peer_start(fx, scripted);
    fx_new(fx, 2000);
    assert_int_equal(wg_docker_events_start(fx->d, NULL, ev_record, ev_end, &v, &v.es), 0);
    while (v.events < 1)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_null(fx->d);
    assert_int_equal(v.events, 1);
    assert_int_equal(v.end.calls, 1);
    assert_int_equal(v.end.status, -ECANCELED);
    peer_stop(p);
}

/* Accepts (the kernel does, from the backlog) and never answers. */
static void test_silent_peer_times_out(void **state)
{
    struct fx *fx = *state;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    struct got a = {.fx = fx}, b = {.fx = fx};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    uint64_t t0;

    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", fx->sock);
    assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    assert_int_equal(listen(fd, 8), 0);
    fx_new(fx, 200);
    uv_update_time(&fx->loop);
    t0 = uv_now(&fx->loop);
    assert_int_equal(wg_docker_ping(fx->d, got_cb, &a), 0);
    assert_int_equal(wg_docker_inspect(fx->d, "abc", got_cb, &b), 0);
    run_until(fx, &a.calls, 1);
    run_until(fx, &b.calls, 1);
    assert_int_equal(a.status, -ETIMEDOUT);
    assert_int_equal(b.status, -ETIMEDOUT);
    assert_non_null(strstr(a.error, "timed out after 200 ms"));
    /* The negotiation ping has the connect timeout (500 ms) on top. */
    assert_true(a.at_ms - t0 >= 190 && a.at_ms - t0 < 1500);
    assert_true(b.at_ms - t0 < 1500);
    close(fd);
}

/* A session network is joined only when it isolates as the template says. */
static void test_network_check(void **state)
{
    struct wg_docker_network_spec spec = {.name = "wakegate-default", .template = "default"};
    struct wg_docker_network good = {.id = "n1",
                                     .name = "wakegate-default",
                                     .driver = "bridge",
                                     .bridge = "wgs-0a1b2c3d",
                                     .template = "default",
                                     .internal = true,
                                     .icc = false};
    struct wg_docker_network n;
    char why[384];

    (void)state;
    assert_int_equal(wg_docker_network_check(&good, &spec, why, sizeof why), 0);
    n = good;
    n.icc = true;
    assert_int_equal(wg_docker_network_check(&n, &spec, why, sizeof why), -EINVAL);
    assert_non_null(strstr(why, "lets its containers reach each other"));
    n = good;
    n.template = "";
    assert_int_equal(wg_docker_network_check(&n, &spec, why, sizeof why), -EINVAL);
    assert_non_null(strstr(why, "was not made by wakegate"));
    n = good;
    n.bridge = "br-0a1b2c3d4e5f";
    assert_int_equal(wg_docker_network_check(&n, &spec, why, sizeof why), -EINVAL);
    assert_non_null(strstr(why, "does not cover"));
    n = good;
    n.driver = "macvlan";
    assert_int_equal(wg_docker_network_check(&n, &spec, why, sizeof why), -EINVAL);
    /* The template's egress changed since the network was made. */
    spec.egress = true;
    assert_int_equal(wg_docker_network_check(&good, &spec, why, sizeof why), -EINVAL);
    assert_non_null(strstr(why, "is internal but the template says egress: true"));
    good.internal = false;
    assert_int_equal(wg_docker_network_check(&good, &spec, why, sizeof why), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_valid),
        cmocka_unit_test(test_full_id_and_session),
        cmocka_unit_test(test_text_ok),
        cmocka_unit_test(test_version_negotiate),
        cmocka_unit_test(test_header_value),
        cmocka_unit_test(test_rfc3339),
        cmocka_unit_test(test_demux),
        cmocka_unit_test(test_tail),
        cmocka_unit_test(test_lines),
        cmocka_unit_test(test_event_parse),
        cmocka_unit_test(test_create_body),
        cmocka_unit_test(test_create_body_refusals),
        cmocka_unit_test(test_inspect_parse),
        cmocka_unit_test(test_list_parse),
        cmocka_unit_test(test_label_filters),
        cmocka_unit_test_setup_teardown(test_new_refuses, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_missing_socket, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_refused_socket, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_refusals_no_callback, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_free_cancels, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_events_stop_queued, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_old_engine, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_scripted_answers, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_events_stream, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_events_line_cap, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_events_stop_in_callback, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_free_in_event_callback, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_silent_peer_times_out, fx_setup, fx_teardown),
        cmocka_unit_test(test_network_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
