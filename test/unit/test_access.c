/* test/unit/test_access.c - access tokens (mint, verify, tampering) and the
 * pure helpers that find and remove our credentials in a request. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/access.h"

static const unsigned char KEY[] = "0123456789abcdef0123456789abcdef";
static const unsigned char OTHER[] = "fedcba9876543210fedcba9876543210";

static void test_mint_verify(void **state)
{
    struct wg_access_key *k, *k2;
    struct wg_access_claims c;
    char tok[WG_ACCESS_TOKEN_MAX + 1];
    int n;

    (void)state;
    assert_int_equal(wg_access_key_new(KEY, 31, &k), -EINVAL);
    assert_int_equal(wg_access_key_new(KEY, 32, &k), 0);
    assert_int_equal(wg_access_key_new(OTHER, 32, &k2), 0);
    n = wg_access_mint(k, "s-1", 1700000000, 0x0123456789abcdefULL, tok, sizeof tok);
    assert_int_equal(n, (int)strlen(tok));
    assert_int_equal(strncmp(tok, "s-1.1700000000.0123456789abcdef.", 32), 0);
    assert_int_equal(strlen(tok), 32 + WG_ACCESS_MAC_LEN);
    assert_int_equal(wg_access_verify(k, tok, (size_t)n, &c), 0);
    assert_string_equal(c.id, "s-1");
    assert_int_equal(c.expires, 1700000000);
    assert_true(c.gen == 0x0123456789abcdefULL);
    /* Deterministic, and another key does not accept it. */
    char again[WG_ACCESS_TOKEN_MAX + 1];
    wg_access_mint(k, "s-1", 1700000000, 0x0123456789abcdefULL, again, sizeof again);
    assert_string_equal(tok, again);
    assert_int_equal(wg_access_verify(k2, tok, (size_t)n, &c), -EACCES);

    /* Every changed byte is refused. */
    for (int i = 0; i < n; i++) {
        char t[WG_ACCESS_TOKEN_MAX + 1];
        memcpy(t, tok, (size_t)n + 1);
        t[i] = t[i] == 'a' ? 'b' : 'a';
        assert_int_equal(wg_access_verify(k, t, (size_t)n, &c), -EACCES);
    }
    /* Another session's id, expiry or generation with the same MAC. */
    char forged[WG_ACCESS_TOKEN_MAX + 1];
    snprintf(forged, sizeof forged, "s-2%s", tok + 3);
    assert_int_equal(wg_access_verify(k, forged, strlen(forged), &c), -EACCES);
    /* Truncated, empty, too long. */
    assert_int_equal(wg_access_verify(k, tok, (size_t)n - 1, &c), -EACCES);
    assert_int_equal(wg_access_verify(k, "", 0, &c), -EACCES);
    char big[300];
    memset(big, 'a', sizeof big);
    assert_int_equal(wg_access_verify(k, big, sizeof big, &c), -EACCES);
    /* Bad input to mint. */
    assert_int_equal(wg_access_mint(k, "Bad.Id", 1, 1, tok, sizeof tok), -EINVAL);
    assert_int_equal(wg_access_mint(k, "s-1", -1, 1, tok, sizeof tok), -EINVAL);
    assert_int_equal(wg_access_mint(k, "s-1", 1, 1, tok, 10), -EINVAL);
    /* A 63-byte id fits. */
    char id[64];
    memset(id, 'a', 63);
    id[63] = '\0';
    n = wg_access_mint(k, id, 99999999999LL, UINT64_MAX, tok, sizeof tok);
    assert_true(n > 0 && n <= WG_ACCESS_TOKEN_MAX);
    assert_int_equal(wg_access_verify(k, tok, (size_t)n, &c), 0);
    assert_string_equal(c.id, id);
    wg_access_key_free(k);
    wg_access_key_free(k2);
    wg_access_key_free(NULL);
    assert_true(wg_access_new_gen() != 0);
    assert_true(wg_access_new_gen() != wg_access_new_gen());
}

static void strip(const char *in, const char *want)
{
    char out[256];
    size_t n = wg_access_query_strip(in, strlen(in), "wg_token", out);
    out[n] = '\0';
    assert_string_equal(out, want);
}

static void test_query(void **state)
{
    const char *v;
    size_t n;
    (void)state;

    assert_true(wg_access_query_find("/x?wg_token=abc", 15, "wg_token", &v, &n));
    assert_int_equal(n, 3);
    assert_memory_equal(v, "abc", 3);
    assert_true(wg_access_query_find("/x?a=1&wg_token=q&b", 19, "wg_token", &v, &n));
    assert_int_equal(n, 1);
    assert_false(wg_access_query_find("/x?xwg_token=1", 14, "wg_token", &v, &n));
    assert_false(wg_access_query_find("/wg_token=1", 11, "wg_token", &v, &n));
    assert_false(wg_access_query_find("/x?wg_tokens=1", 14, "wg_token", &v, &n));

    strip("/x?wg_token=abc", "/x");
    strip("/x?a=1&wg_token=abc", "/x?a=1");
    strip("/x?wg_token=abc&a=1", "/x?a=1");
    strip("/x?a=1&wg_token=abc&b=2&wg_token=d", "/x?a=1&b=2");
    strip("/x?a=1", "/x?a=1");
    strip("/x", "/x");
    strip("/x?", "/x");
    strip("/x?wg_tokenx=1", "/x?wg_tokenx=1");
}

static void cstrip(const char *in, const char *want)
{
    char out[512];
    size_t n = wg_access_cookie_strip(in, strlen(in), "wg_token", out);
    out[n] = '\0';
    assert_string_equal(out, want);
}

static void test_cookies(void **state)
{
    const char *v = "a=1; wg_token=\"tok\" ;b = 2;;noval; =x";
    size_t pos = 0, nl, vl;
    const char *name, *val;
    (void)state;

    assert_true(wg_access_cookie_next(v, strlen(v), &pos, &name, &nl, &val, &vl));
    assert_int_equal(nl, 1);
    assert_memory_equal(val, "1", 1);
    assert_true(wg_access_cookie_next(v, strlen(v), &pos, &name, &nl, &val, &vl));
    assert_int_equal(nl, 8);
    assert_memory_equal(name, "wg_token", 8);
    assert_int_equal(vl, 3);
    assert_memory_equal(val, "tok", 3);
    assert_true(wg_access_cookie_next(v, strlen(v), &pos, &name, &nl, &val, &vl));
    assert_memory_equal(name, "b", 1);
    assert_int_equal(nl, 1);
    assert_memory_equal(val, "2", 1);
    assert_false(wg_access_cookie_next(v, strlen(v), &pos, &name, &nl, &val, &vl));

    cstrip("a=1; wg_token=x; b=2", "a=1; b=2");
    cstrip("wg_token=x", "");
    cstrip("wg_token=x;wg_token=y", "");
    cstrip("a=1;b=2;wg_token=3", "a=1; b=2");
    cstrip("wg_tokenx=1; a", "wg_tokenx=1; a");
    cstrip(" wg_token = x ; c=3 ", "c=3");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mint_verify),
        cmocka_unit_test(test_query),
        cmocka_unit_test(test_cookies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
