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

    struct wg_page_facts f = {"abc", "asleep", "/s/abc/_wakegate/status", NULL};
    size_t n = wg_pages_waking(buf, sizeof(buf), &f);
    assert_int_equal(n, strlen(buf));
    assert_non_null(strstr(buf, "<title>Waking abc</title>"));
    assert_non_null(strstr(buf, "<h1>Waking up abc</h1>"));
    assert_non_null(strstr(buf, "<p id=\"s\">state: asleep</p>"));
    assert_non_null(strstr(buf, "var u='/s/abc/_wakegate/status',"));
    assert_non_null(strstr(buf, "border-radius:50%;"));
    assert_null(strstr(buf, "http:"));
    assert_null(strstr(buf, "https:"));
    assert_true(n > 0 && buf[n - 1] == '\n');
    assert_null(strstr(buf, "Try again"));
}

/* A failed session: the reason, escaped, and a link that tries again; the
 * page stops polling. */
static void test_waking_failed(void **state)
{
    (void)state;
    char buf[8192];
    struct wg_page_facts f = {"abc", "failed", "/_wakegate/status",
                              "not ready by the wake deadline: <script>alert('x')</script> & \x01"
                              "\xff"};

    size_t n = wg_pages_waking(buf, sizeof(buf), &f);
    assert_int_equal(n, strlen(buf));
    assert_non_null(strstr(buf, "<h1>Could not wake abc</h1>"));
    assert_non_null(strstr(buf, "state: failed"));
    assert_non_null(strstr(buf, "not ready by the wake deadline: &lt;script&gt;alert(&#39;x&#39;)"
                                "&lt;/script&gt; &amp; \xef\xbf\xbd</code>"));
    assert_null(strstr(buf, "<script>alert"));
    assert_non_null(strstr(buf, "<a href=\"\">Try again</a>"));
    assert_non_null(strstr(buf, "if(true)return;"));

    /* No reason known: the page says it failed, without one. */
    f.reason = NULL;
    n = wg_pages_waking(buf, sizeof(buf), &f);
    assert_non_null(strstr(buf, "This session failed to start</p>"));
}

static void test_render(void **state)
{
    (void)state;
    static const char tpl[] = "<h1>{{session}} is {{state}}</h1>{{reason}}{x}{{unknown}}"
                              "<a data-u=\"{{status_url}}\">{{session}}</a>{";
    struct wg_page_facts f = {"s-1", "starting", "/p/_wakegate/status?a=1&b=\"2\"", NULL};
    char buf[512];

    size_t n = wg_pages_render(NULL, 0, tpl, sizeof(tpl) - 1, &f);
    assert_true(n < sizeof(buf));
    assert_int_equal(wg_pages_render(buf, sizeof(buf), tpl, sizeof(tpl) - 1, &f), n);
    buf[n] = '\0';
    assert_string_equal(buf, "<h1>s-1 is starting</h1>{x}{{unknown}}"
                             "<a data-u=\"/p/_wakegate/status?a=1&amp;b=&quot;2&quot;\">s-1</a>{");
    /* Failed: the reason, escaped. */
    f.state = "failed";
    f.reason = "exit 1 \"<oops>\"";
    n = wg_pages_render(buf, sizeof(buf), "{{reason}}", 10, &f);
    buf[n] = '\0';
    assert_string_equal(buf, "exit 1 &quot;&lt;oops&gt;&quot;");
    /* Too small: only len bytes are written, the whole length returned. */
    memset(buf, 'z', sizeof(buf));
    n = wg_pages_render(buf, 4, tpl, sizeof(tpl) - 1, &f);
    assert_true(n > 4);
    assert_memory_equal(buf, "<h1>z", 5);
}

/* Too small for the page: one line instead. */
static void test_waking_fallback(void **state)
{
    (void)state;
    char buf[64];

    struct wg_page_facts f = {"abc", "asleep", "/_wakegate/status", NULL};
    size_t n = wg_pages_waking(buf, sizeof(buf), &f);
    assert_string_equal(buf, "waking abc\n");
    assert_int_equal(n, strlen("waking abc\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status),        cmocka_unit_test(test_status_truncated),
        cmocka_unit_test(test_waking),        cmocka_unit_test(test_waking_fallback),
        cmocka_unit_test(test_waking_failed), cmocka_unit_test(test_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
