/* test/unit/test_docker_host.c - common/docker_host: the Docker host grammar
 * shared by the configuration, the Docker client and wakegatectl. Pure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/docker_host.h"

static void test_host_parse(void **state)
{
    struct wg_docker_host h;
    char err[256];

    (void)state;
    assert_int_equal(wg_docker_host_parse(NULL, false, &h, err, sizeof(err)), 0);
    assert_true(h.is_unix);
    assert_string_equal(h.path, "/var/run/docker.sock");
    assert_string_equal(h.display, "unix:///var/run/docker.sock");
    assert_string_equal(h.base, "http://docker");
    wg_docker_host_release(&h);

    assert_int_equal(
        wg_docker_host_parse("tcp://docker.example.com:2376", true, &h, err, sizeof(err)), 0);
    assert_false(h.is_unix);
    assert_false(h.numeric);
    assert_true(h.tls);
    assert_string_equal(h.name, "docker.example.com");
    assert_int_equal(h.port, 2376);
    assert_string_equal(h.base, "https://docker.example.com:2376");
    wg_docker_host_release(&h);

    assert_int_equal(wg_docker_host_parse("tcp://10.0.0.5", false, &h, err, sizeof(err)), 0);
    assert_true(h.numeric);
    assert_int_equal(h.port, 2375);
    assert_string_equal(h.base, "http://10.0.0.5:2375");
    wg_docker_host_release(&h);

    assert_int_equal(wg_docker_host_parse("tcp://10.0.0.5", true, &h, err, sizeof(err)), 0);
    assert_int_equal(h.port, 2376);
    wg_docker_host_release(&h);

    assert_int_equal(wg_docker_host_parse("tcp://[::1]:2375/", false, &h, err, sizeof(err)), 0);
    assert_true(h.numeric);
    assert_string_equal(h.name, "::1");
    assert_string_equal(h.display, "tcp://[::1]:2375");
    assert_string_equal(h.base, "http://[::1]:2375");
    wg_docker_host_release(&h);

    const char *bad[] = {
        "unix://relative.sock",
        "unix://",
        "unix:///x.sock?a=1",
        "tcp://",
        "tcp://:2375",
        "tcp://h:0",
        "tcp://h:65536",
        "tcp://h:abc",
        "tcp://h:-1",
        "tcp://h:2375/path",
        "tcp://h?x",
        "tcp://::1:2375",
        "tcp://[::1",
        "tcp://[nothex]:1",
        "http://h:2375",
        "ssh://h",
        "tcp://h h:1",
        "tcp://h\n:1",
        "",
        "tcp://h@x:1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(wg_docker_host_parse(bad[i], false, &h, err, sizeof(err)), -EINVAL);
        assert_true(err[0] != '\0');
        assert_null(h.display);
    }
    assert_int_equal(wg_docker_host_check("unix:///x.sock", true, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "TLS"));

    char longpath[200] = "unix:///";
    memset(longpath + 8, 'a', 150);
    longpath[158] = '\0';
    assert_int_equal(wg_docker_host_check(longpath, false, err, sizeof(err)), -EINVAL);
    assert_int_equal(wg_docker_host_check("unix:///run/docker.sock", false, err, sizeof(err)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
