/* test/unit/test_tls_names.c - which certificate answers a server name
 * (proxy/tls_names.c), the redirect listener's Host check
 * (proxy/tls_redirect.c) and the keys of tls: (common/config_tls.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/config.h"
#include "proxy/tls_names.h"
#include "proxy/tls_redirect.h"

static void test_match_rules(void **state)
{
    static const struct {
        const char *pattern, *host;
        bool want;
    } cases[] = {
        {"a.example.com", "a.example.com", true},
        {"a.example.com", "A.Example.COM", true},
        {"a.example.com", "a.example.com.", true}, /* one trailing dot */
        {"a.example.com", "a.example.com..", false},
        {"a.example.com", "b.example.com", false},
        {"a.example.com", "xa.example.com", false},
        {"*.preview.example.com", "s-1.preview.example.com", true},
        {"*.preview.example.com", "S-1.PREVIEW.example.com", true},
        {"*.preview.example.com", "preview.example.com", false},     /* one label, not zero */
        {"*.preview.example.com", ".preview.example.com", false},    /* never empty */
        {"*.preview.example.com", "a.b.preview.example.com", false}, /* nor two */
        {"*.preview.example.com", "s-1.preview.example.org", false},
        {"*.preview.example.com", "s-1.xpreview.example.com", false},
        {"*.preview.example.com", "s-1.preview.example.com.", true},
        {"w*.example.com", "www.example.com", false}, /* partial labels: never */
        {"*", "example", false},
        {"*.", "a.", false},
        {"a.*.example.com", "a.b.example.com", false},
        {"a.example.com", "", false},
        {"a.example.com", ".", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (wg_tls_name_match(cases[i].pattern, cases[i].host) != cases[i].want)
            fail_msg("case %zu: %s vs %s: want %d", i, cases[i].pattern, cases[i].host,
                     cases[i].want);
}

static void test_find_prefers_exact_then_order(void **state)
{
    struct wg_tls_names n = {0};

    assert_int_equal(wg_tls_names_add(&n, "default.test", 0), 0);
    assert_int_equal(wg_tls_names_add(&n, "*.preview.test", 1), 0);
    assert_int_equal(wg_tls_names_add(&n, "A.Test", 2), 0);
    assert_int_equal(wg_tls_names_add(&n, "x.preview.test", 3), 0); /* exact beats wildcard */
    assert_int_equal(wg_tls_names_add(&n, "*.preview.test", 4), 0); /* the earlier wins */
    assert_int_equal(wg_tls_names_add(&n, "a.test", 5), 0);
    assert_int_equal(wg_tls_names_add(&n, "*", 6), 1); /* matches nothing: skipped */
    assert_int_equal(wg_tls_names_add(&n, "w*.test", 6), 1);
    assert_int_equal(wg_tls_names_add(&n, "", 6), 1);

    assert_int_equal(wg_tls_names_find(&n, "default.test"), 0);
    assert_int_equal(wg_tls_names_find(&n, "a.test"), 2);
    assert_int_equal(wg_tls_names_find(&n, "A.TEST."), 2);
    assert_int_equal(wg_tls_names_find(&n, "s-1.preview.test"), 1);
    assert_int_equal(wg_tls_names_find(&n, "x.preview.test"), 3);
    assert_int_equal(wg_tls_names_find(&n, "a.b.preview.test"), -1);
    assert_int_equal(wg_tls_names_find(&n, "preview.test"), -1);
    assert_int_equal(wg_tls_names_find(&n, "unknown.test"), -1);
    assert_int_equal(wg_tls_names_find(&n, ""), -1);
    wg_tls_names_free(&n);
    assert_int_equal(wg_tls_names_find(&n, "a.test"), -1);
    wg_tls_names_free(&n);
    wg_tls_names_free(NULL);
}

static void test_redirect_host(void **state)
{
    static const struct {
        const char *in, *want; /* want NULL: refused */
    } cases[] = {
        {"app.test", "app.test"},
        {"App.Test:8080", "app.test"},
        {"127.0.0.1:80", "127.0.0.1"},
        {"[::1]:8080", "[::1]"},
        {"[::1]", "[::1]"},
        {"app.test:", NULL},
        {"app.test:80x", NULL},
        {"evil.test@app.test", NULL},
        {"app.test/evil", NULL},
        {"app test", NULL},
        {"", NULL},
        {".app.test", NULL},
        {"-app.test", NULL},
        {"[::1", NULL},
        {"[::1]x", NULL},
        {"[g::1]", NULL},
        {"app.test:80:81", NULL},
    };
    char out[256];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool ok = wg_redirect_host_valid(cases[i].in, strlen(cases[i].in), out, sizeof out);
        if (ok != (cases[i].want != NULL) || (ok && strcmp(out, cases[i].want) != 0))
            fail_msg("case %zu: \"%s\": ok=%d out=%s", i, cases[i].in, ok, ok ? out : "-");
    }
    /* Too long for the caller's buffer: refused, never cut. */
    assert_false(wg_redirect_host_valid("abcdef.test", 11, out, 8));
}

static char cert_path[64], key_path[64];

static int load(struct wg_config *cfg, const char *yaml, char *err, size_t errlen)
{
    assert_int_equal(wg_config_init_defaults(cfg), 0);
    err[0] = '\0';
    return wg_config_load_string(cfg, "t.yaml", yaml, strlen(yaml), err, errlen);
}

static void test_config_keys(void **state)
{
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX], yaml[1024];

    /* Off by default. */
    assert_int_equal(load(&cfg, "listen: :8443\n", err, sizeof err), 0);
    assert_false(cfg.tls.enabled);
    assert_int_equal(cfg.tls.ticket_rotate_ms, 3600 * 1000);
    wg_config_free(&cfg);

    snprintf(yaml, sizeof yaml,
             "tls:\n"
             "  certificates:\n"
             "    - cert: %s\n"
             "      key: %s\n"
             "    - {cert: %s, key: %s}\n"
             "  ticket_rotate: 20m\n"
             "  hsts: \"max-age=31536000; includeSubDomains\"\n"
             "  redirect_listen: \":8080\"\n",
             cert_path, key_path, cert_path, key_path);
    assert_int_equal(load(&cfg, yaml, err, sizeof err), 0);
    assert_true(cfg.tls.enabled);
    assert_int_equal(cfg.tls.certs_len, 2);
    assert_string_equal(cfg.tls.certs[0].cert, cert_path);
    assert_int_equal(cfg.tls.certs[0].cert_line, 3);
    assert_int_equal(cfg.tls.certs[0].key_line, 4);
    assert_int_equal(cfg.tls.certs[1].cert_line, 5);
    assert_int_equal(cfg.tls.ticket_rotate_ms, 20 * 60 * 1000);
    assert_string_equal(cfg.tls.hsts, "max-age=31536000; includeSubDomains");
    assert_string_equal(cfg.tls.redirect_listen.text, ":8080");
    wg_config_free(&cfg);

    static const struct {
        const char *yaml, *want;
    } bad[] = {
        {"tls:\n  hsts: x\n", "t.yaml:2: tls: certificates is required"},
        {"tls:\n  certificates: []\n", "t.yaml:2: tls.certificates: give 1 to 256"},
        {"tls:\n  certificates: [{cert: /nonexistent.pem, key: /nonexistent.key}]\n",
         "t.yaml:2: tls.certificates[0].cert: cannot read \"/nonexistent.pem\""},
        {"tls:\n  certificates:\n    - cert: /etc/hostname\n",
         "t.yaml:3: tls.certificates[0]: key is required"},
        {"tls:\n  certificates: [{cert: /x, key: /y, chain: /z}]\n",
         "t.yaml:2: tls.certificates[0].chain: unknown key"},
        {"tls:\n  ticket_rotate: 10s\n",
         "t.yaml:2: tls.ticket_rotate: 10s is shorter than the minimum of 1m"},
        {"tls:\n  redirect_listen: nowhere\n", "t.yaml:2: tls.redirect_listen: invalid address"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int r = load(&cfg, bad[i].yaml, err, sizeof err);
        if (r != -EINVAL || strncmp(err, bad[i].want, strlen(bad[i].want)) != 0)
            fail_msg("case %zu: r=%d\n  got:  %s\n  want: %s...", i, r, err, bad[i].want);
        wg_config_free(&cfg);
    }
    snprintf(yaml, sizeof yaml,
             "tls:\n  certificates: [{cert: %s, key: %s}]\n  hsts: \"max-age=1\\r\\nX: y\"\n",
             cert_path, key_path);
    assert_int_equal(load(&cfg, yaml, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "t.yaml:3: tls.hsts: use a header value"));
    wg_config_free(&cfg);
}

static int setup(void **state)
{
    int fd;

    snprintf(cert_path, sizeof cert_path, "/tmp/wg-unit-tls-XXXXXX");
    fd = mkstemp(cert_path);
    assert_true(fd >= 0);
    close(fd);
    snprintf(key_path, sizeof key_path, "/tmp/wg-unit-tls-XXXXXX");
    fd = mkstemp(key_path);
    assert_true(fd >= 0);
    close(fd);
    return 0;
}

static int teardown(void **state)
{
    unlink(cert_path);
    unlink(key_path);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_rules),
        cmocka_unit_test(test_find_prefers_exact_then_order),
        cmocka_unit_test(test_redirect_host),
        cmocka_unit_test(test_config_keys),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
