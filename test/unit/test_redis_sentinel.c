/* test/unit/test_redis_sentinel.c - Redis Sentinel's pure parts: the
 * redis+sentinel:// URL, the sentinels' and the master's answers, the
 * +switch-master message, and redis.sentinel in the configuration (the URL
 * it builds, its errors). The connection itself is covered end to end
 * (test/e2e/test_sentinel.py: real sentinels and failovers). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/redis_sentinel.h"
#include "common/redis_url.h"

/* ---- the URL ------------------------------------------------------------------------------ */

static void test_url_sentinel(void **state)
{
    struct wg_redis_url u;
    char err[256];

    (void)state;
    assert_int_equal(wg_redis_url_parse("redis+sentinel://app:p%40ss@10.0.0.1:26380,s2,[::1]:7/"
                                        "mymaster/3?sentinel_password=s%3Ae",
                                        &u, err, sizeof err),
                     0);
    assert_string_equal(u.master_name, "mymaster");
    assert_int_equal(u.sentinels_len, 3);
    assert_string_equal(u.sentinels[0].host, "10.0.0.1");
    assert_int_equal(u.sentinels[0].port, 26380);
    assert_string_equal(u.sentinels[1].host, "s2");
    assert_int_equal(u.sentinels[1].port, WG_REDIS_URL_SENTINEL_PORT);
    assert_string_equal(u.sentinels[2].host, "::1");
    assert_int_equal(u.sentinels[2].port, 7);
    assert_int_equal(u.db, 3);
    assert_string_equal(u.user, "app");
    assert_string_equal(u.password, "p@ss");
    assert_string_equal(u.sentinel_password, "s:e");
    assert_null(u.host);
    /* No password of either kind in what is logged. */
    assert_string_equal(u.display,
                        "redis+sentinel://app@10.0.0.1:26380,s2:26379,[::1]:7/mymaster/3");
    wg_redis_url_release(&u);

    assert_int_equal(wg_redis_url_parse("REDIS+SENTINEL://h/m", &u, err, sizeof err), 0);
    assert_int_equal(u.db, 0);
    assert_null(u.password);
    assert_null(u.sentinel_password);
    wg_redis_url_release(&u);
}

static void test_url_sentinel_errors(void **state)
{
    static const struct {
        const char *url, *why;
    } bad[] = {
        {"redis+sentinel://h", "missing the master's name"},
        {"redis+sentinel://h/", "missing the master's name"},
        {"redis+sentinel:///m", "no sentinel address"},
        {"redis+sentinel://h,,h2/m", "missing host"},
        {"redis+sentinel://h:0/m", "bad port"},
        {"redis+sentinel://h/m/x", "bad database number"},
        {"redis+sentinel://h/m?password=x", "the only redis+sentinel parameter"},
        {"redis+sentinel://h/m?sentinel_password=%zz", "bad percent-escape"},
        {"redis+sentinel://h/m#f", "fragments are not supported"},
        {"redis+sentinel://a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q/m", "more than 16 sentinels"},
    };
    struct wg_redis_url u;
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (wg_redis_url_parse(bad[i].url, &u, err, sizeof err) != -EINVAL)
            fail_msg("%s: accepted", bad[i].url);
        if (!strstr(err, bad[i].why))
            fail_msg("%s: got \"%s\", want \"%s\"", bad[i].url, err, bad[i].why);
    }
}

/* ---- answers ------------------------------------------------------------------------------ */

static redisReply *str(const char *s)
{
    redisReply *r = calloc(1, sizeof(*r));
    r->type = REDIS_REPLY_STRING;
    r->str = strdup(s);
    r->len = strlen(s);
    return r;
}

static redisReply *arr(size_t n, ...)
{
    redisReply *r = calloc(1, sizeof(*r));
    va_list ap;

    r->type = REDIS_REPLY_ARRAY;
    r->elements = n;
    r->element = calloc(n ? n : 1, sizeof(*r->element));
    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        r->element[i] = va_arg(ap, redisReply *);
    va_end(ap);
    return r;
}

static redisReply *typed(int type, const char *s)
{
    redisReply *r = s ? str(s) : calloc(1, sizeof(*r));
    r->type = type;
    return r;
}

static void test_parse_addr(void **state)
{
    char host[64];
    uint16_t port = 0;
    const char *why;
    redisReply *r;

    (void)state;
    r = arr(2, str("10.1.2.3"), str("6380"));
    assert_int_equal(wg_redis_sentinel_parse_addr(r, host, sizeof host, &port, &why), 0);
    assert_string_equal(host, "10.1.2.3");
    assert_int_equal(port, 6380);
    freeReplyObject(r);

    r = typed(REDIS_REPLY_NIL, NULL);
    assert_int_equal(wg_redis_sentinel_parse_addr(r, host, sizeof host, &port, &why), 1);
    assert_string_equal(why, "does not monitor this master");
    freeReplyObject(r);

    r = typed(REDIS_REPLY_ERROR, "NOAUTH Authentication required.");
    assert_int_equal(wg_redis_sentinel_parse_addr(r, host, sizeof host, &port, &why), -EINVAL);
    assert_string_equal(why, "NOAUTH Authentication required.");
    freeReplyObject(r);

    const char *bad_ports[] = {"0", "65536", "", "12a", "123456"};
    for (size_t i = 0; i < sizeof(bad_ports) / sizeof(bad_ports[0]); i++) {
        r = arr(2, str("h"), str(bad_ports[i]));
        assert_int_equal(wg_redis_sentinel_parse_addr(r, host, sizeof host, &port, &why), -EINVAL);
        freeReplyObject(r);
    }
    r = arr(2, str("a b"), str("1"));
    assert_int_equal(wg_redis_sentinel_parse_addr(r, host, sizeof host, &port, &why), -EINVAL);
    freeReplyObject(r);
    r = arr(1, str("h"));
    assert_int_equal(wg_redis_sentinel_parse_addr(r, host, sizeof host, &port, &why), -EINVAL);
    freeReplyObject(r);
    assert_int_equal(wg_redis_sentinel_parse_addr(NULL, host, sizeof host, &port, &why), -EINVAL);
}

static void test_role(void **state)
{
    const char *role;
    size_t n;
    redisReply *r;

    (void)state;
    r = arr(3, str("master"), typed(REDIS_REPLY_INTEGER, NULL), arr(0));
    assert_true(wg_redis_sentinel_role_is_master(r, &role, &n));
    freeReplyObject(r);

    /* A master just demoted answers slave: never used. */
    r = arr(5, str("slave"), str("10.0.0.2"), typed(REDIS_REPLY_INTEGER, NULL), str("connect"),
            typed(REDIS_REPLY_INTEGER, NULL));
    assert_false(wg_redis_sentinel_role_is_master(r, &role, &n));
    assert_int_equal(n, 5);
    assert_memory_equal(role, "slave", 5);
    freeReplyObject(r);

    r = arr(2, str("sentinel"), arr(0));
    assert_false(wg_redis_sentinel_role_is_master(r, &role, &n));
    freeReplyObject(r);
    r = typed(REDIS_REPLY_ERROR, "ERR unknown command");
    assert_false(wg_redis_sentinel_role_is_master(r, &role, &n));
    assert_memory_equal(role, "ERR unknown command", n);
    freeReplyObject(r);
    r = str("master");
    assert_false(wg_redis_sentinel_role_is_master(r, &role, &n));
    freeReplyObject(r);
    assert_false(wg_redis_sentinel_role_is_master(NULL, &role, &n));
}

static void test_switch(void **state)
{
    static const char ok[] = "mymaster 10.0.0.1 6379 10.0.0.2 6380";
    char host[64];
    uint16_t port = 0;

    (void)state;
    assert_int_equal(
        wg_redis_sentinel_parse_switch(ok, strlen(ok), "mymaster", host, sizeof host, &port), 0);
    assert_string_equal(host, "10.0.0.2");
    assert_int_equal(port, 6380);
    assert_int_equal(
        wg_redis_sentinel_parse_switch(ok, strlen(ok), "other", host, sizeof host, &port), 1);
    assert_int_equal(
        wg_redis_sentinel_parse_switch(ok, strlen(ok), "mymaste", host, sizeof host, &port), 1);
    static const char *const bad[] = {
        "mymaster 10.0.0.1 6379 10.0.0.2",
        "mymaster 10.0.0.1 6379 10.0.0.2 0",
        "mymaster 10.0.0.1 6379 10.0.0.2 6380 extra",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(wg_redis_sentinel_parse_switch(bad[i], strlen(bad[i]), "mymaster", host,
                                                        sizeof host, &port),
                         -EINVAL);
}

/* ---- the configuration -------------------------------------------------------------------- */

static int load(struct wg_config *cfg, const char *yaml, char *err, size_t errlen)
{
    assert_int_equal(wg_config_init_defaults(cfg), 0);
    err[0] = '\0';
    return wg_config_load_string(cfg, "t.yaml", yaml, strlen(yaml), err, errlen);
}

static void write_file(char *path, size_t len, const char *text)
{
    int fd;

    snprintf(path, len, "/tmp/wg-sentinel-XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void test_config_builds_url(void **state)
{
    char spw[64], mpw[64], yaml[1024], err[WG_CONFIG_ERR_MAX];
    struct wg_config cfg;
    struct wg_redis_url u;

    (void)state;
    write_file(spw, sizeof spw, "sent pw\n");
    write_file(mpw, sizeof mpw, "m@ster/pw\n");
    snprintf(yaml, sizeof yaml,
             "redis:\n"
             "  sentinel:\n"
             "    master: mymaster\n"
             "    addresses: [\"10.0.0.1:26379\", \"s2\", \"[::1]:26381\"]\n"
             "    password_file: %s\n"
             "    master_password_file: %s\n"
             "    db: 2\n",
             spw, mpw);
    assert_int_equal(load(&cfg, yaml, err, sizeof err), 0);
    assert_int_equal(cfg.redis_sentinel.line, 3);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_true(cfg.redis_sentinel.active);
    assert_false(cfg.redis_private.active);
    assert_int_equal(wg_redis_url_parse(cfg.redis_url, &u, err, sizeof err), 0);
    assert_string_equal(u.master_name, "mymaster");
    assert_int_equal(u.sentinels_len, 3);
    assert_string_equal(u.sentinels[2].host, "::1");
    assert_string_equal(u.password, "m@ster/pw");
    assert_string_equal(u.sentinel_password, "sent pw");
    assert_int_equal(u.db, 2);
    wg_redis_url_release(&u);
    /* Validating again starts over and builds the same. */
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), 0);
    assert_true(cfg.redis_sentinel.active);
    assert_non_null(strstr(cfg.redis_url, "redis+sentinel://"));
    wg_config_free(&cfg);
    unlink(spw);
    unlink(mpw);
}

static void test_config_errors(void **state)
{
    static const struct {
        const char *yaml, *want;
    } cases[] = {
        {"redis:\n  url: redis://h\n  sentinel:\n    master: m\n    addresses: [a]\n",
         "t.yaml:4: redis.sentinel: set redis.url or redis.sentinel, not both"},
        {"redis:\n  sentinel:\n    addresses: [a]\n", "t.yaml:3: redis.sentinel: needs master"},
        {"redis:\n  sentinel:\n    master: m\n", "t.yaml:3: redis.sentinel: needs addresses"},
        {"redis:\n  sentinel:\n    master: m\n    addresses: [\"a:0\"]\n",
         "t.yaml:4: redis.sentinel.addresses: address \"a:0\" is not host:port"},
        {"redis:\n  sentinel:\n    master: \"a b\"\n    addresses: [a]\n",
         "t.yaml:3: redis.sentinel: master \"a b\""},
        {"redis:\n  sentinel:\n    master: m\n    addresses: [a]\n    password: x\n",
         "t.yaml:5: redis.sentinel.password: unknown key"},
    };
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int r = load(&cfg, cases[i].yaml, err, sizeof err);
        if (r == 0)
            fail_msg("accepted:\n%s", cases[i].yaml);
        if (strncmp(err, cases[i].want, strlen(cases[i].want)) != 0)
            fail_msg("got:  %s\nwant: %s", err, cases[i].want);
        wg_config_free(&cfg);
    }

    /* A password file that cannot be read: named with the key's line. */
    assert_int_equal(load(&cfg,
                          "redis:\n  sentinel:\n    master: m\n    addresses: [a]\n"
                          "    password_file: /nonexistent/pw\n",
                          err, sizeof err),
                     0);
    assert_int_equal(wg_config_validate(&cfg, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "t.yaml:3: redis.sentinel.password_file: cannot read "
                                "\"/nonexistent/pw\""));
    wg_config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_sentinel),  cmocka_unit_test(test_url_sentinel_errors),
        cmocka_unit_test(test_parse_addr),    cmocka_unit_test(test_role),
        cmocka_unit_test(test_switch),        cmocka_unit_test(test_config_builds_url),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
