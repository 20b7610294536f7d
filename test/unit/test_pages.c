/* test/unit/test_pages.c - the bodies the proxy answers with by itself
 * (proxy/pages): the status JSON and the waking page. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "proxy/pages.h"

static void test_status(void **state)
{
    (void)state;
    char buf[160];

    size_t n = wg_pages_status(buf, sizeof(buf), "s-42", "asleep");
    assert_int_equal(n, strlen(buf));
    assert_string_equal(buf, "{\"session\":\"s-42\",\"state\":\"asleep\"}\n");
}

static void test_status_truncated(void **state)
{
    (void)state;
    char buf[16];

    size_t n = wg_pages_status(buf, sizeof(buf), "s-42", "asleep");
    assert_int_equal(n, sizeof(buf) - 1);
    assert_int_equal(strlen(buf), n);
}

static void test_waking(void **state)
{
    (void)state;
    char buf[2048];

    size_t n = wg_pages_waking(buf, sizeof(buf), "abc", "asleep", "/s/abc/_wakegate/status");
    assert_int_equal(n, strlen(buf));
    assert_non_null(strstr(buf, "<title>Waking abc</title>"));
    assert_non_null(strstr(buf, "<h1>Waking up abc</h1>"));
    assert_non_null(strstr(buf, "<p id=\"s\">state: asleep</p>"));
    assert_non_null(strstr(buf, "var u='/s/abc/_wakegate/status',"));
    assert_non_null(strstr(buf, "border-radius:50%;"));
    assert_null(strstr(buf, "http:"));
    assert_null(strstr(buf, "https:"));
    assert_true(n > 0 && buf[n - 1] == '\n');
}

/* Too small for the page: one line instead. */
static void test_waking_fallback(void **state)
{
    (void)state;
    char buf[64];

    size_t n = wg_pages_waking(buf, sizeof(buf), "abc", "asleep", "/_wakegate/status");
    assert_string_equal(buf, "waking abc\n");
    assert_int_equal(n, strlen("waking abc\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_status_truncated),
        cmocka_unit_test(test_waking),
        cmocka_unit_test(test_waking_fallback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
