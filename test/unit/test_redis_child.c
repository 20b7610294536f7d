/* test/unit/test_redis_child.c - finding the private redis-server's program
 * (src/redis_child_find.c, included: src/ is no library). Configurations
 * are loaded from strings as the binary loads them, then the server is
 * looked for. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "src/redis_child_find.c"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NAME "t.yaml"

/* Loads and validates yaml, then looks for the server. */
static int find(struct wg_config *cfg, const char *yaml, char **ret_path, char *err, size_t errlen)
{
    assert_int_equal(wg_config_init_defaults(cfg), 0);
    err[0] = '\0';
    assert_int_equal(wg_config_load_string(cfg, NAME, yaml, strlen(yaml), err, errlen), 0);
    assert_int_equal(wg_config_validate(cfg, err, errlen), 0);
    return app_redis_child_find_server(cfg, ret_path, err, errlen);
}

static void assert_prefix(const char *got, const char *want)
{
    if (strncmp(got, want, strlen(want)) != 0)
        fail_msg("error text\n  got:  %s\n  want: %s...", got, want);
}

/* The configuration errors of a server that is not there, at its line. */
static void test_errors(void **state)
{
    static const struct {
        const char *yaml, *want;
    } cases[] = {
        {"redis:\n  private:\n    server: /nonexistent/redis-server\n",
         "t.yaml:3: redis.private.server: redis-server \"/nonexistent/redis-server\" cannot be "
         "run: No such file or directory; install it with \"apt-get install redis-server\", set "
         "redis.url to use another Redis, or set redis.private.enabled: false to run without "
         "Redis"},
        {"redis:\n  private:\n    server: /\n",
         "t.yaml:3: redis.private.server: redis-server \"/\" cannot be run: not an executable "
         "file"},
        {"redis:\n  private:\n    server: no-such-redis-server-here\n",
         "t.yaml:3: redis.private.server: \"no-such-redis-server-here\" not found in PATH ("},
    };
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX], *path = (char *)"unset";

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(find(&cfg, cases[i].yaml, &path, err, sizeof err), -EINVAL);
        assert_null(path);
        assert_prefix(err, cases[i].want);
        wg_config_free(&cfg);
    }
}

/* Without a private server (a URL, or disabled) nothing is looked for. */
static void test_not_private(void **state)
{
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX], *path = (char *)"unset";

    (void)state;
    assert_int_equal(
        find(&cfg, "redis:\n  url: \"redis://r:6379/0\"\n  private: {server: /nonexistent}\n",
             &path, err, sizeof err),
        0);
    assert_null(path);
    wg_config_free(&cfg);
    path = (char *)"unset";
    assert_int_equal(find(&cfg, "redis: {private: {enabled: false, server: /nonexistent}}\n", &path,
                          err, sizeof err),
                     0);
    assert_null(path);
    wg_config_free(&cfg);
}

/* A path is taken as is (made absolute); a name is looked up in PATH,
 * skipping relative entries and files that cannot be run. */
static void test_lookup(void **state)
{
    char bin[PATH_MAX], tmpl[] = "/tmp/wg-redis-child-XXXXXX", err[WG_CONFIG_ERR_MAX];
    char want[2 * PATH_MAX], cwd[PATH_MAX], *old_path = NULL, *path = NULL;
    const char *p;
    struct wg_config cfg;
    FILE *f;

    (void)state;
    if ((p = getenv("PATH")) != NULL)
        old_path = strdup(p);
    assert_non_null(mkdtemp(tmpl));
    snprintf(bin, sizeof bin, "%s/my-redis", tmpl);
    f = fopen(bin, "w");
    assert_non_null(f);
    fputs("#!/bin/sh\n", f);
    fclose(f);

    /* Not executable: skipped, so not found. */
    chmod(bin, 0644);
    setenv("PATH", tmpl, 1);
    assert_int_equal(find(&cfg, "redis: {private: {server: my-redis}}\n", &path, err, sizeof err),
                     -EINVAL);
    snprintf(want, sizeof want,
             "t.yaml:1: redis.private.server: \"my-redis\" not found in PATH (%s); install it "
             "with \"apt-get install redis-server\"",
             tmpl);
    assert_prefix(err, want);
    wg_config_free(&cfg);

    /* Executable in the last PATH entry: found there, link-free path kept. */
    chmod(bin, 0755);
    snprintf(want, sizeof want, "/nonexistent:relative:%s", tmpl);
    setenv("PATH", want, 1);
    assert_int_equal(find(&cfg, "redis: {private: {server: my-redis}}\n", &path, err, sizeof err),
                     0);
    assert_string_equal(path, bin);
    free(path);
    wg_config_free(&cfg);

    /* The default, from the defaults: no file line in the error. */
    setenv("PATH", tmpl, 1);
    assert_int_equal(find(&cfg, "", &path, err, sizeof err), -EINVAL);
    assert_prefix(err, "redis.private.server: \"redis-server\" not found in PATH (");
    wg_config_free(&cfg);

    /* A relative path is made absolute against the working directory. */
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(tmpl), 0);
    assert_int_equal(find(&cfg, "redis: {private: {server: ./my-redis}}\n", &path, err, sizeof err),
                     0);
    snprintf(want, sizeof want, "%s/./my-redis", tmpl);
    assert_string_equal(path, want);
    free(path);
    wg_config_free(&cfg);
    assert_int_equal(chdir(cwd), 0);

    unlink(bin);
    rmdir(tmpl);
    if (old_path != NULL)
        setenv("PATH", old_path, 1);
    else
        unsetenv("PATH");
    free(old_path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_not_private),
        cmocka_unit_test(test_lookup),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
