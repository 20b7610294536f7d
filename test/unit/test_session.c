/* test/unit/test_session.c - common/session: states, the table of
 * moves, ids, the hash codec and JSON. Pure: no sockets, no loop. */
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

#include "common/session.h"

#define N_STATES WG_SESSION_STATE_COUNT
#define B(x) WG_SESSION_BIT(WG_SESSION_##x)

/* ---- states ---------------------------------------------------------------------------------- */

static void test_state_names(void **state)
{
    static const char *const names[N_STATES] = {"creating", "starting",  "running", "draining",
                                                "saving",   "stopping",  "asleep",  "paused",
                                                "failed",   "destroyed", "lost"};
    static const char *const bad[] = {"",       "RUNNING",  "Running", "runningx",
                                      "runnin", " running", "?",       "destroy"};
    enum wg_session_state st;

    (void)state;
    for (unsigned i = 0; i < N_STATES; i++) {
        assert_string_equal(wg_session_state_name((enum wg_session_state)i), names[i]);
        assert_int_equal(wg_session_state_parse(names[i], strlen(names[i]), &st), 0);
        assert_int_equal(st, i);
    }
    assert_string_equal(wg_session_state_name((enum wg_session_state)N_STATES), "?");
    assert_string_equal(wg_session_state_name((enum wg_session_state) - 1), "?");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(wg_session_state_parse(bad[i], strlen(bad[i]), &st), -EINVAL);
    /* Length is honoured: an embedded NUL or a prefix is not a name. */
    assert_int_equal(wg_session_state_parse("asleep\0x", 8, &st), -EINVAL);
    assert_int_equal(wg_session_state_parse("asleepy", 6, &st), 0);
    assert_int_equal(st, WG_SESSION_ASLEEP);
    assert_int_equal(wg_session_state_parse(NULL, 0, &st), -EINVAL);
}

static void test_transient(void **state)
{
    unsigned expect = B(CREATING) | B(STARTING) | B(DRAINING) | B(SAVING) | B(STOPPING);

    (void)state;
    assert_int_equal(WG_SESSION_TRANSIENT, expect);
    for (unsigned i = 0; i < N_STATES; i++)
        assert_int_equal(wg_session_state_transient((enum wg_session_state)i), (expect >> i) & 1u);
    assert_false(wg_session_state_transient((enum wg_session_state)N_STATES));
    assert_true(WG_SESSION_IN(WG_SESSION_SAVING, WG_SESSION_TRANSIENT));
    assert_false(WG_SESSION_IN(WG_SESSION_RUNNING, WG_SESSION_TRANSIENT));
    assert_int_equal(WG_SESSION_ANY, (1u << N_STATES) - 1);
}

/* ---- the table ------------------------------------------------------------------------------- */

/* Written independently of session.c: a change of the table must change
 * this list too, on purpose. Every move not listed must be rejected. */
static const char *const valid_moves[] = {
    "creating>starting",  "creating>asleep",    "creating>running",  "creating>paused",
    "creating>failed",    "starting>running",   "starting>failed",   "running>draining",
    "running>paused",     "running>stopping",   "running>failed",    "running>asleep",
    "draining>saving",    "draining>paused",    "draining>running",  "draining>failed",
    "draining>asleep",    "saving>stopping",    "saving>paused",     "saving>running",
    "saving>failed",      "saving>asleep",      "stopping>asleep",   "stopping>failed",
    "asleep>starting",    "asleep>running",     "asleep>paused",     "paused>starting",
    "paused>saving",      "paused>stopping",    "paused>running",    "paused>asleep",
    "paused>failed",      "failed>starting",    "failed>stopping",   "failed>asleep",
    "creating>destroyed", "starting>destroyed", "running>destroyed", "draining>destroyed",
    "saving>destroyed",   "stopping>destroyed", "asleep>destroyed",  "paused>destroyed",
    "failed>destroyed",   "starting>asleep",    "creating>lost",     "starting>lost",
    "running>lost",       "draining>lost",      "saving>lost",       "stopping>lost",
    "asleep>lost",        "paused>lost",        "failed>lost",       "lost>asleep",
    "lost>starting",      "lost>running",       "lost>paused",       "lost>destroyed",
};

static bool listed(enum wg_session_state from, enum wg_session_state to)
{
    char key[32];

    snprintf(key, sizeof(key), "%s>%s", wg_session_state_name(from), wg_session_state_name(to));
    for (size_t i = 0; i < sizeof(valid_moves) / sizeof(valid_moves[0]); i++)
        if (strcmp(valid_moves[i], key) == 0)
            return true;
    return false;
}

static void test_table_matrix(void **state)
{
    size_t accepted = 0;

    (void)state;
    for (unsigned f = 0; f < N_STATES; f++) {
        for (unsigned t = 0; t < N_STATES; t++) {
            enum wg_session_state from = f, to = t;
            bool want = listed(from, to);

            if (wg_session_can_move(from, to) != want)
                fail_msg("%s -> %s: table says %d, expected %d", wg_session_state_name(from),
                         wg_session_state_name(to), !want, want);
            /* Every valid move says why; invalid ones have no reason. */
            if (want) {
                assert_non_null(wg_session_move_reason(from, to));
                assert_true(strlen(wg_session_move_reason(from, to)) > 0);
                accepted++;
            } else {
                assert_null(wg_session_move_reason(from, to));
            }
            /* allowed_from() agrees with can_move(). */
            assert_int_equal((wg_session_allowed_from(to) >> f) & 1u, want);
        }
    }
    assert_int_equal(accepted, sizeof(valid_moves) / sizeof(valid_moves[0]));
    assert_int_equal(wg_session_allowed_from((enum wg_session_state)N_STATES), 0);
}

static void test_table_properties(void **state)
{
    (void)state;
    /* destroyed is terminal, and reachable from everything else. */
    for (unsigned t = 0; t < N_STATES; t++)
        assert_false(wg_session_can_move(WG_SESSION_DESTROYED, (enum wg_session_state)t));
    assert_int_equal(wg_session_allowed_from(WG_SESSION_DESTROYED), WG_SESSION_ANY & ~B(DESTROYED));
    /* No self-moves: an update is not a transition. */
    for (unsigned s = 0; s < N_STATES; s++)
        assert_false(wg_session_can_move((enum wg_session_state)s, (enum wg_session_state)s));
    /* Nothing goes back to creating. */
    assert_int_equal(wg_session_allowed_from(WG_SESSION_CREATING), 0);
    /* A sample of moves that must stay invalid, with the reason they are. */
    assert_false(wg_session_can_move(WG_SESSION_ASLEEP, WG_SESSION_STOPPING));  /* nothing runs */
    assert_false(wg_session_can_move(WG_SESSION_STOPPING, WG_SESSION_RUNNING)); /* held instead */
    assert_false(wg_session_can_move(WG_SESSION_STOPPING, WG_SESSION_STARTING));
    assert_false(wg_session_can_move(WG_SESSION_RUNNING, WG_SESSION_SAVING)); /* drain first */
    assert_false(wg_session_can_move(WG_SESSION_RUNNING, WG_SESSION_STARTING));
    /* An unreachable engine is not the session's failure. */
    assert_true(wg_session_can_move(WG_SESSION_STARTING, WG_SESSION_ASLEEP));
    assert_false(wg_session_can_move(WG_SESSION_DRAINING, WG_SESSION_STOPPING)); /* save first */
    assert_false(wg_session_can_move(WG_SESSION_ASLEEP, WG_SESSION_CREATING));
    assert_false(wg_session_can_move(WG_SESSION_FAILED, WG_SESSION_RUNNING)); /* via starting */
    /* Every transient state has a way out to failed or a resting state, so a
     * stuck one can always be recovered. */
    for (unsigned s = 0; s < N_STATES; s++) {
        if (!wg_session_state_transient((enum wg_session_state)s))
            continue;
        assert_true(wg_session_can_move((enum wg_session_state)s, WG_SESSION_FAILED) ||
                    wg_session_can_move((enum wg_session_state)s, WG_SESSION_RUNNING));
    }
    /* Out-of-range values are never valid. */
    assert_false(wg_session_can_move((enum wg_session_state)N_STATES, WG_SESSION_RUNNING));
    assert_false(wg_session_can_move(WG_SESSION_RUNNING, (enum wg_session_state)99));
}

/* ---- ids ------------------------------------------------------------------------------------- */

static void test_id_valid(void **state)
{
    static const char *const good[] = {
        "a",          "0",
        "42",         "s-42",
        "my_session", "a-",
        "a_",         "abc-def_123",
        "z9",         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", /* 63 */
    };
    static const char *const bad[] = {
        "",
        "../x",
        "a/b",
        "a b",
        "A",
        "Abc",
        "abC",
        "-a",
        "_a",
        "a.b",
        "a:b",
        "a{b}",
        "a\tb",
        "a\n",
        "é",
        "a%2f",
        "..",
        "a\\b",
        "*",
        "a*",
        " a",
        "a ",
        "\xff",
        "a\x7f",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", /* 64 */
    };
    char big[200];

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!wg_session_id_valid(good[i], strlen(good[i])))
            fail_msg("rejected \"%s\"", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (wg_session_id_valid(bad[i], strlen(bad[i])))
            fail_msg("accepted \"%s\"", bad[i]);
    assert_int_equal(strlen(good[9]), 63);
    assert_int_equal(strlen(bad[24]), 64);
    /* An embedded NUL, counted in the length, is invalid. */
    assert_false(wg_session_id_valid("ab\0cd", 5));
    assert_false(wg_session_id_valid("\0", 1));
    /* The length given is what counts, not a terminator. */
    assert_true(wg_session_id_valid("abc/def", 3));
    assert_false(wg_session_id_valid(NULL, 0));
    assert_false(wg_session_id_valid(NULL, 3));
    memset(big, 'a', sizeof(big));
    assert_false(wg_session_id_valid(big, sizeof(big)));

    assert_true(wg_session_host_valid("host-a", 6));
    assert_true(wg_session_host_valid("docker-01.eu.example.com", 24));
    assert_true(wg_session_host_valid("Host_B", 6));
    assert_false(wg_session_host_valid("", 0));
    assert_false(wg_session_host_valid(".a", 2));
    assert_false(wg_session_host_valid("a b", 3));
    assert_false(wg_session_host_valid("a:b", 3));
    assert_false(wg_session_host_valid("a/b", 3));
    assert_false(wg_session_host_valid("a\0b", 3));
}

/* ---- codec ----------------------------------------------------------------------------------- */

static void full_record(struct wg_session *r)
{
    wg_session_init(r);
    strcpy(r->id, "s-42");
    r->state = WG_SESSION_RUNNING;
    r->state_since = 1700000000123;
    strcpy(r->host, "host-a");
    strcpy(r->container_id, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    strcpy(r->ip, "172.17.0.5");
    r->port = 8080;
    strcpy(r->image, "registry.local:5000/wakegate-demo:latest");
    strcpy(r->template_name, "gpu-small");
    r->created = 1690000000000;
    r->last_active = 1700000000456;
    r->restarts = 3;
    r->last_save.at = 1699999999000;
    r->last_save.ok = false;
    r->last_save.exit_code = -9;
    strcpy(r->last_save.commit, "0123456789abcdef0123456789abcdef01234567");
    r->last_save.output = strdup("error: failed to push\n\ttab ok, ünïcödé ✓\n");
    r->error = strdup("save failed: exit 1");
    r->spec = strdup("{\"cmd\":[\"sh\",\"-c\",\"httpd -f\"],\"env\":[\"A=1\"]}");
    r->version = 17;
    r->has_idle_stop_after = true;
    r->idle_stop_after_ms = 0; /* 0 = tier disabled, distinct from unset */
    r->has_idle_pause_after = true;
    r->idle_pause_after_ms = 30000;
    r->gen = UINT64_MAX - 7; /* past 2^53: Lua would round it, the codec must not */
    r->epoch = 3;
    r->pin = true;
    snprintf(r->place_labels, sizeof(r->place_labels), "%s", "{\"gpu\":\"1\"}");
}

static void assert_same(const struct wg_session *a, const struct wg_session *b)
{
    assert_string_equal(a->id, b->id);
    assert_int_equal(a->state, b->state);
    assert_int_equal(a->state_since, b->state_since);
    assert_string_equal(a->host, b->host);
    assert_string_equal(a->container_id, b->container_id);
    assert_string_equal(a->ip, b->ip);
    assert_int_equal(a->port, b->port);
    assert_string_equal(a->image, b->image);
    assert_int_equal(a->created, b->created);
    assert_int_equal(a->last_active, b->last_active);
    assert_int_equal(a->restarts, b->restarts);
    assert_int_equal(a->last_save.at, b->last_save.at);
    assert_int_equal(a->last_save.ok, b->last_save.ok);
    assert_int_equal(a->last_save.exit_code, b->last_save.exit_code);
    assert_string_equal(a->last_save.commit, b->last_save.commit);
    if (a->last_save.output || b->last_save.output)
        assert_string_equal(a->last_save.output, b->last_save.output);
    if (a->error || b->error)
        assert_string_equal(a->error, b->error);
    if (a->spec || b->spec)
        assert_string_equal(a->spec, b->spec);
    assert_string_equal(a->template_name, b->template_name);
    assert_int_equal(a->version, b->version);
    assert_true(a->gen == b->gen);
    assert_true(a->epoch == b->epoch);
    assert_int_equal(a->pin, b->pin);
    assert_string_equal(a->place_labels, b->place_labels);
    assert_int_equal(a->has_idle_stop_after, b->has_idle_stop_after);
    assert_int_equal(a->idle_stop_after_ms, b->idle_stop_after_ms);
    assert_int_equal(a->has_idle_pause_after, b->has_idle_pause_after);
    assert_int_equal(a->idle_pause_after_ms, b->idle_pause_after_ms);
}

static void test_codec_round_trip(void **state)
{
    struct wg_session rec, back, copy, min;
    struct wg_session_hash h;
    char err[160];

    (void)state;
    full_record(&rec);
    assert_int_equal(wg_session_encode(&rec, &h, err, sizeof(err)), 0);
    assert_int_equal(h.n, WG_SESSION_FIELDS);
    assert_int_equal(wg_session_decode(h.kv, h.n, &back, err, sizeof(err)), 0);
    assert_same(&rec, &back);
    assert_int_equal(wg_session_copy(&copy, &back), 0);
    assert_ptr_not_equal(copy.error, back.error);
    assert_same(&copy, &rec);
    wg_session_release(&copy);
    wg_session_release(&back);

    /* Every state survives the trip. */
    for (unsigned s = 0; s < N_STATES; s++) {
        rec.state = (enum wg_session_state)s;
        assert_int_equal(wg_session_encode(&rec, &h, err, sizeof(err)), 0);
        assert_int_equal(wg_session_decode(h.kv, h.n, &back, err, sizeof(err)), 0);
        assert_int_equal(back.state, s);
        wg_session_release(&back);
    }
    /* IPv6 and extreme values. */
    strcpy(rec.ip, "fd00:1:2:3:4:5:6:7");
    rec.port = 65535;
    rec.restarts = UINT32_MAX;
    rec.last_save.exit_code = INT32_MIN;
    rec.version = INT64_MAX;
    assert_int_equal(wg_session_encode(&rec, &h, err, sizeof(err)), 0);
    assert_int_equal(wg_session_decode(h.kv, h.n, &back, err, sizeof(err)), 0);
    assert_same(&rec, &back);
    wg_session_release(&back);
    wg_session_release(&rec);

    /* A minimal record: only id and state are written. */
    wg_session_init(&min);
    strcpy(min.id, "x");
    min.state = WG_SESSION_ASLEEP;
    assert_int_equal(wg_session_encode(&min, &h, err, sizeof(err)), 0);
    assert_int_equal(h.n, 2);
    assert_int_equal(wg_session_decode(h.kv, h.n, &back, err, sizeof(err)), 0);
    assert_same(&min, &back);
    assert_null(back.error);
    assert_null(back.last_save.output);
    assert_false(back.has_idle_stop_after);
    wg_session_release(&back);
    wg_session_release(NULL);
}

static void test_encode_refuses_bad_records(void **state)
{
    struct wg_session rec;
    struct wg_session_hash h;
    char err[160];

    (void)state;
    full_record(&rec);
    strcpy(rec.id, "Bad");
    assert_int_equal(wg_session_encode(&rec, &h, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "id"));
    strcpy(rec.id, "ok");
    strcpy(rec.ip, "not-an-ip");
    assert_int_equal(wg_session_encode(&rec, &h, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "ip"));
    strcpy(rec.ip, "10.0.0.1");
    strcpy(rec.container_id, "XYZ");
    assert_int_equal(wg_session_encode(&rec, &h, err, sizeof(err)), -EINVAL);
    strcpy(rec.container_id, "abc");
    free(rec.error);
    rec.error = strdup("bad \x01 control");
    assert_int_equal(wg_session_encode(&rec, &h, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "error"));
    free(rec.error);
    rec.error = NULL;
    rec.state_since = -5;
    assert_int_equal(wg_session_encode(&rec, &h, err, sizeof(err)), -EINVAL);
    rec.state_since = 1;
    rec.state = (enum wg_session_state)42;
    assert_int_equal(wg_session_encode(&rec, &h, err, sizeof(err)), -EINVAL);
    rec.state = WG_SESSION_RUNNING;
    assert_int_equal(wg_session_encode(&rec, &h, err, sizeof(err)), 0);
    wg_session_release(&rec);
}

#define KV(n, v)                                                                                   \
    {                                                                                              \
        n, sizeof(n) - 1, v, sizeof(v) - 1                                                         \
    }

/* Decodes base[] with one field replaced (or added) by name/value. */
static int decode_with(const char *name, const char *value, size_t vlen, char *err, size_t errlen)
{
    struct wg_session_kv kv[8] = {
        KV("id", "s1"),
        KV("state", "running"),
        KV("port", "8080"),
        KV("ip", "10.0.0.2"),
        KV("state_since", "1700000000000"),
    };
    size_t n = 5;
    struct wg_session rec;
    int rc;
    bool replaced = false;

    for (size_t i = 0; i < n; i++) {
        if (strcmp(kv[i].name, name) == 0) {
            kv[i].value = value;
            kv[i].value_len = vlen;
            replaced = true;
        }
    }
    if (!replaced)
        kv[n++] = (struct wg_session_kv){name, strlen(name), value, vlen};
    rc = wg_session_decode(kv, n, &rec, err, errlen);
    if (rc == 0)
        wg_session_release(&rec);
    return rc;
}

static void test_decode_garbled(void **state)
{
    static const struct {
        const char *name, *value;
    } bad[] = {
        {"id", "../x"},
        {"id", "A"},
        {"id", ""},
        {"state", "RUNNING"},
        {"state", "sleeping"},
        {"state", ""},
        {"port", "0"},
        {"port", "65536"},
        {"port", "-1"},
        {"port", "80a"},
        {"port", " 80"},
        {"port", "080"},
        {"port", "+80"},
        {"port", ""},
        {"state_since", "-1"},
        {"state_since", "1e12"},
        {"state_since", "99999999999999999999"},
        {"state_since", "18446744073709551616"},
        {"state_since", "9223372036854775808"},
        {"restarts", "4294967296"},
        {"v", "0x10"},
        {"ip", "10.0.0.256"},
        {"ip", "localhost"},
        {"ip", "10.0.0.1 "},
        {"ip", ""},
        {"container_id", "ABC"},
        {"container_id", "xyz"},
        {"container_id", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0"},
        {"host", "a b"},
        {"host", ""},
        {"image", "a b"},
        {"image", ""},
        {"save_ok", "yes"},
        {"save_ok", "2"},
        {"save_exit_code", "-0"},
        {"save_exit_code", "2147483648"},
        {"save_exit_code", "--1"},
        {"save_commit", "xyz1"},
        {"save_commit", "abc"},
        {"save_output", "bad \x1b[31m escape"},
        {"save_output", "\xc3\x28"},     /* invalid UTF-8 */
        {"save_output", "\xed\xa0\x80"}, /* a surrogate */
        {"save_output", "\xc0\xaf"},     /* overlong '/' */
        {"error", "\xff"},
        {"error", ""},
        {"idle_stop_after_ms", "-5"},
    };
    char err[160];

    (void)state;
    assert_int_equal(decode_with("extra", "x", 1, err, sizeof(err)), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = decode_with(bad[i].name, bad[i].value, strlen(bad[i].value), err, sizeof(err));
        if (rc != -EBADMSG)
            fail_msg("%s=\"%s\" decoded with %d", bad[i].name, bad[i].value, rc);
        /* The message names the field and never echoes the value. */
        assert_non_null(strstr(err, bad[i].name));
        if (strlen(bad[i].value) > 3)
            assert_null(strstr(err, bad[i].value));
    }
    /* Embedded NULs. */
    assert_int_equal(decode_with("id", "s\0x", 3, err, sizeof(err)), -EBADMSG);
    assert_int_equal(decode_with("error", "a\0b", 3, err, sizeof(err)), -EBADMSG);
    assert_int_equal(decode_with("ip", "10.0.0.1\0x", 10, err, sizeof(err)), -EBADMSG);
    /* A NULL value. */
    assert_int_equal(decode_with("host", NULL, 0, err, sizeof(err)), -EBADMSG);
}

static void test_decode_structure(void **state)
{
    struct wg_session rec;
    char err[160];
    char *huge;
    struct wg_session_kv only_id[] = {KV("id", "s1")};
    struct wg_session_kv only_state[] = {KV("state", "asleep")};
    struct wg_session_kv dup[] = {KV("id", "s1"), KV("state", "asleep"), KV("state", "running")};
    struct wg_session_kv unknown[] = {KV("zzz", "\xff\x00garbage"), KV("id", "s1"),
                                      KV("future_field", "1"), KV("state", "paused"),
                                      KV("STATE", "running")};
    struct wg_session_kv nul_name[] = {
        {"id\0x", 4, "s1", 2}, KV("id", "s1"), KV("state", "asleep")};
    struct wg_session_kv null_name[] = {{NULL, 0, "s1", 2}, KV("id", "s1"), KV("state", "asleep")};
    struct wg_session_kv big[3] = {KV("id", "s1"), KV("state", "asleep"), KV("error", "")};

    (void)state;
    assert_int_equal(wg_session_decode(NULL, 0, &rec, err, sizeof(err)), -EBADMSG);
    assert_non_null(strstr(err, "missing"));
    assert_int_equal(wg_session_decode(only_id, 1, &rec, err, sizeof(err)), -EBADMSG);
    assert_non_null(strstr(err, "state"));
    assert_int_equal(wg_session_decode(only_state, 1, &rec, err, sizeof(err)), -EBADMSG);
    assert_non_null(strstr(err, "id"));
    assert_int_equal(wg_session_decode(dup, 3, &rec, err, sizeof(err)), -EBADMSG);
    assert_non_null(strstr(err, "twice"));
    /* Unknown fields (names are case-sensitive) are ignored. */
    assert_int_equal(wg_session_decode(unknown, 5, &rec, err, sizeof(err)), 0);
    assert_int_equal(rec.state, WG_SESSION_PAUSED);
    wg_session_release(&rec);
    assert_int_equal(wg_session_decode(nul_name, 3, &rec, err, sizeof(err)), 0);
    wg_session_release(&rec);
    assert_int_equal(wg_session_decode(null_name, 3, &rec, err, sizeof(err)), 0);
    wg_session_release(&rec);

    /* Bounded lengths: at the cap it decodes, one byte over it does not. */
    huge = malloc(1 << 20);
    assert_non_null(huge);
    memset(huge, 'x', 1 << 20);
    big[2].value = huge;
    big[2].value_len = WG_SESSION_ERROR_MAX;
    assert_int_equal(wg_session_decode(big, 3, &rec, err, sizeof(err)), 0);
    assert_int_equal(strlen(rec.error), WG_SESSION_ERROR_MAX);
    wg_session_release(&rec);
    big[2].value_len = WG_SESSION_ERROR_MAX + 1;
    assert_int_equal(wg_session_decode(big, 3, &rec, err, sizeof(err)), -EBADMSG);
    big[2].value_len = 1 << 20;
    assert_int_equal(wg_session_decode(big, 3, &rec, err, sizeof(err)), -EBADMSG);
    big[2] = (struct wg_session_kv){"save_output", 11, huge, WG_SESSION_OUTPUT_MAX + 1};
    assert_int_equal(wg_session_decode(big, 3, &rec, err, sizeof(err)), -EBADMSG);
    big[2] = (struct wg_session_kv){"image", 5, huge, WG_SESSION_IMAGE_MAX + 1};
    assert_int_equal(wg_session_decode(big, 3, &rec, err, sizeof(err)), -EBADMSG);
    big[2] = (struct wg_session_kv){"host", 4, huge, WG_SESSION_HOST_MAX + 1};
    assert_int_equal(wg_session_decode(big, 3, &rec, err, sizeof(err)), -EBADMSG);
    big[2] = (struct wg_session_kv){"id", 2, huge, 1 << 20};
    assert_int_equal(wg_session_decode(big, 3, &rec, err, sizeof(err)), -EBADMSG);
    free(huge);

    /* A failed decode leaves the output alone. */
    memset(&rec, 0x5a, sizeof(rec));
    assert_int_equal(wg_session_decode(dup, 3, &rec, err, sizeof(err)), -EBADMSG);
    assert_int_equal(((unsigned char *)&rec)[0], 0x5a);
    /* err may be NULL. */
    assert_int_equal(wg_session_decode(dup, 3, &rec, NULL, 0), -EBADMSG);
}

/* ---- updates --------------------------------------------------------------------------------- */

static const struct wg_session_kv *find(const struct wg_session_hash *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (h->kv[i].name_len == strlen(name) &&
            memcmp(h->kv[i].name, name, h->kv[i].name_len) == 0)
            return &h->kv[i];
    return NULL;
}

static void test_update_encode(void **state)
{
    struct wg_session_update u = {0};
    struct wg_session_hash h;
    char err[160];
    const struct wg_session_kv *kv;

    (void)state;
    assert_int_equal(wg_session_update_encode(NULL, &h, err, sizeof(err)), 0);
    assert_int_equal(h.n, 0);
    assert_int_equal(wg_session_update_encode(&u, &h, err, sizeof(err)), 0);
    assert_int_equal(h.n, 0);

    u.set = WG_SF_IP | WG_SF_PORT | WG_SF_CONTAINER_ID | WG_SF_ERROR;
    u.ip = "10.1.2.3";
    u.port = 8000;
    u.container_id = "abcdef";
    u.error = NULL; /* clears */
    u.host = "ignored-not-set";
    assert_int_equal(wg_session_update_encode(&u, &h, err, sizeof(err)), 0);
    assert_int_equal(h.n, 4);
    assert_null(find(&h, "host"));
    kv = find(&h, "port");
    assert_non_null(kv);
    assert_memory_equal(kv->value, "8000", 4);
    kv = find(&h, "error");
    assert_non_null(kv);
    assert_int_equal(kv->value_len, 0);

    /* Clearing: port 0, last_save.at 0, has_ false. */
    memset(&u, 0, sizeof(u));
    u.set = WG_SF_PORT | WG_SF_LAST_SAVE | WG_SF_IDLE_STOP_AFTER | WG_SF_IDLE_PAUSE_AFTER;
    u.has_idle_pause_after = true;
    u.idle_pause_after_ms = 0;
    assert_int_equal(wg_session_update_encode(&u, &h, err, sizeof(err)), 0);
    assert_int_equal(find(&h, "port")->value_len, 0);
    assert_int_equal(find(&h, "save_at")->value_len, 0);
    assert_int_equal(find(&h, "save_output")->value_len, 0);
    assert_int_equal(find(&h, "idle_stop_after_ms")->value_len, 0);
    assert_memory_equal(find(&h, "idle_pause_after_ms")->value, "0", 1);

    /* A save result. */
    memset(&u, 0, sizeof(u));
    u.set = WG_SF_LAST_SAVE | WG_SF_RESTARTS;
    u.last_save.at = 1700000000000;
    u.last_save.ok = true;
    u.last_save.exit_code = 0;
    u.last_save.commit = "deadbeef";
    u.last_save.output = "[main deadbeef] wakegate auto-save\n";
    u.restarts = 0;
    assert_int_equal(wg_session_update_encode(&u, &h, err, sizeof(err)), 0);
    assert_memory_equal(find(&h, "save_ok")->value, "1", 1);
    assert_memory_equal(find(&h, "save_commit")->value, "deadbeef", 8);
    assert_memory_equal(find(&h, "restarts")->value, "0", 1);

    /* Refusals name the field. */
    memset(&u, 0, sizeof(u));
    u.set = WG_SF_IP;
    u.ip = "300.1.1.1";
    assert_int_equal(wg_session_update_encode(&u, &h, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "ip"));
    u.set = WG_SF_RESTARTS | WG_SF_RESTARTS_INCR;
    assert_int_equal(wg_session_update_encode(&u, &h, err, sizeof(err)), -EINVAL);
    u.set = WG_SF_LAST_SAVE;
    u.last_save.at = 1;
    u.last_save.output = "\x01";
    assert_int_equal(wg_session_update_encode(&u, &h, err, sizeof(err)), -EINVAL);
    u.last_save.at = -1;
    assert_int_equal(wg_session_update_encode(&u, &h, err, sizeof(err)), -EINVAL);
}

static void test_clean_text(void **state)
{
    char out[16], big[WG_SESSION_OUTPUT_MAX + 1];
    char *src;
    size_t n = 10000;

    (void)state;
    wg_session_clean_text(out, sizeof(out), "ok\n\tfine", 8);
    assert_string_equal(out, "ok\n\tfine");
    wg_session_clean_text(out, sizeof(out),
                          "a\x01"
                          "b\x7f"
                          "c\0d",
                          7);
    assert_string_equal(out, "a?b?c?d");
    wg_session_clean_text(out, sizeof(out), "\xff\xc3\x28", 3);
    assert_string_equal(out, "?\?(");
    /* The tail is kept, and the cut never splits a character. */
    wg_session_clean_text(out, 6, "0123456789", 10);
    assert_string_equal(out, "56789");
    wg_session_clean_text(out, 5, "ab\xc3\xa9\xc3\xa9", 6); /* "abéé": keep 4 bytes -> "éé" */
    assert_string_equal(out, "\xc3\xa9\xc3\xa9");
    wg_session_clean_text(out, 4, "ab\xc3\xa9\xc3\xa9", 6); /* 3 bytes would split: "é" */
    assert_string_equal(out, "\xc3\xa9");
    wg_session_clean_text(out, sizeof(out), NULL, 5);
    assert_string_equal(out, "");

    /* Whatever goes in, the result is storable. */
    src = malloc(n);
    assert_non_null(src);
    for (size_t i = 0; i < n; i++)
        src[i] = (char)(i * 131 + 7);
    wg_session_clean_text(big, sizeof(big), src, n);
    {
        struct wg_session_kv kv[] = {
            KV("id", "s"), KV("state", "running"), {"save_output", 11, big, strlen(big)}};
        struct wg_session rec;
        char err[160];
        assert_true(strlen(big) <= WG_SESSION_OUTPUT_MAX);
        assert_int_equal(wg_session_decode(kv, 3, &rec, err, sizeof(err)), 0);
        wg_session_release(&rec);
    }
    free(src);
}

/* ---- JSON ------------------------------------------------------------------------------------ */

static void test_json(void **state)
{
    struct wg_session rec;
    json_t *j, *save;
    static const char *const keys[] = {"id", "state", "state_since", "host",      "container_id",
                                       "ip", "port",  "last_active", "last_save", "error"};

    (void)state;
    full_record(&rec);
    j = wg_session_to_json(&rec);
    assert_non_null(j);
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (!json_object_get(j, keys[i]))
            fail_msg("missing key %s", keys[i]);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "s-42");
    assert_string_equal(json_string_value(json_object_get(j, "state")), "running");
    assert_int_equal(json_integer_value(json_object_get(j, "state_since")), 1700000000123);
    assert_int_equal(json_integer_value(json_object_get(j, "port")), 8080);
    assert_string_equal(json_string_value(json_object_get(j, "ip")), "172.17.0.5");
    save = json_object_get(j, "last_save");
    assert_true(json_is_object(save));
    assert_int_equal(json_integer_value(json_object_get(save, "at")), 1699999999000);
    assert_true(json_is_false(json_object_get(save, "ok")));
    assert_int_equal(json_integer_value(json_object_get(save, "exit_code")), -9);
    assert_string_equal(json_string_value(json_object_get(save, "commit")),
                        "0123456789abcdef0123456789abcdef01234567");
    assert_non_null(strstr(json_string_value(json_object_get(save, "output")), "✓"));
    assert_string_equal(json_string_value(json_object_get(j, "error")), "save failed: exit 1");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(j, "idle"), "stop_after_ms")), 0);
    json_decref(j);
    wg_session_release(&rec);

    /* Unset values are null. */
    wg_session_init(&rec);
    strcpy(rec.id, "bare");
    rec.state = WG_SESSION_ASLEEP;
    j = wg_session_to_json(&rec);
    assert_non_null(j);
    assert_true(json_is_null(json_object_get(j, "ip")));
    assert_true(json_is_null(json_object_get(j, "port")));
    assert_true(json_is_null(json_object_get(j, "last_save")));
    assert_true(json_is_null(json_object_get(j, "error")));
    assert_true(json_is_null(json_object_get(j, "container_id")));
    assert_true(json_is_null(json_object_get(j, "state_since")));
    assert_null(json_object_get(j, "idle"));
    {
        char *text = json_dumps(j, JSON_COMPACT);
        assert_non_null(text);
        assert_non_null(strstr(text, "\"state\":\"asleep\""));
        free(text);
    }
    json_decref(j);
}

/* The spec as the API shows it: members as written, env names only (values
 * may be secrets), {} for none, null for a text that is not an object. */
static void test_json_spec(void **state)
{
    struct wg_session rec;
    json_t *j, *spec;
    char *text;

    (void)state;
    wg_session_init(&rec);
    strcpy(rec.id, "sp");
    rec.state = WG_SESSION_ASLEEP;
    j = wg_session_to_json(&rec);
    assert_true(json_is_object(json_object_get(j, "spec")));
    assert_int_equal(json_object_size(json_object_get(j, "spec")), 0);
    json_decref(j);

    rec.spec =
        strdup("{\"cmd\":[\"sh\",\"-c\",\"x\"],\"env\":[\"A=1\",\"API_KEY=s3cret=x\",\"E=\"],"
               "\"labels\":{\"k\":\"v\"},\"binds\":[\"/srv/a:/a:ro\"],"
               "\"limits\":{\"memory\":268435456}}");
    j = wg_session_to_json(&rec);
    spec = json_object_get(j, "spec");
    text = json_dumps(spec, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_non_null(text);
    assert_string_equal(text, "{\"cmd\":[\"sh\",\"-c\",\"x\"],\"env\":[\"A\",\"API_KEY\",\"E\"],"
                              "\"labels\":{\"k\":\"v\"},\"binds\":[\"/srv/a:/a:ro\"],"
                              "\"limits\":{\"memory\":268435456}}");
    free(text);
    text = json_dumps(j, JSON_COMPACT);
    assert_null(strstr(text, "s3cret"));
    free(text);
    json_decref(j);

    free(rec.spec);
    rec.spec = strdup("[1,2]");
    j = wg_session_to_json(&rec);
    assert_non_null(j);
    assert_true(json_is_null(json_object_get(j, "spec")));
    json_decref(j);
    wg_session_release(&rec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_names),
        cmocka_unit_test(test_transient),
        cmocka_unit_test(test_table_matrix),
        cmocka_unit_test(test_table_properties),
        cmocka_unit_test(test_id_valid),
        cmocka_unit_test(test_codec_round_trip),
        cmocka_unit_test(test_encode_refuses_bad_records),
        cmocka_unit_test(test_decode_garbled),
        cmocka_unit_test(test_decode_structure),
        cmocka_unit_test(test_update_encode),
        cmocka_unit_test(test_clean_text),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_json_spec),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
