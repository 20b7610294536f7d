/* test/unit/test_cpu_watch.c - orchestrator/cpu_watch: the pure parts (the
 * cgroup file of a container from /proc/PID/cgroup, reading it, the
 * average) against fake /proc and cgroup trees in a temporary directory,
 * and the table merge through the private functions (the .c is included). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "orchestrator/cpu_watch.c"
#include "test/unit/loop_fixture.h"

#include <sys/stat.h>

#define CID "73664a59c1110d042b19abc6afaa8cc734254ec13b9312ea9eca991042fae858"
#define CID2 "1111111111110d042b19abc6afaa8cc734254ec13b9312ea9eca991042fae858"

static char root[256];

static void put(const char *rel, const char *text)
{
    char path[512], *p;
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", root, rel);
    for (p = path + strlen(root) + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        mkdir(path, 0700);
        *p = '/';
    }
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof(root), "/tmp/wg-cpu-test-XXXXXX");
    assert_non_null(mkdtemp(root));
    return 0;
}

static int teardown(void **state)
{
    char cmd[300];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_v1_path(void **state)
{
    char proc[300], cg[300], *path = NULL;
    uint64_t ns = 0;

    (void)state;
    snprintf(proc, sizeof(proc), "%s/proc", root);
    snprintf(cg, sizeof(cg), "%s/cg", root);
    put("proc/42/cgroup",
        "9:name=systemd:/p/" CID "\n4:memory:/p/" CID "\n2:cpuacct:/p/" CID "\n0::/\n");
    put("cg/cpuacct/p/" CID "/cpuacct.usage", "123456789\n");
    assert_int_equal(wg_cpu_cgroup_path(proc, cg, 42, CID, &path), 0);
    assert_non_null(strstr(path, "/cg/cpuacct/p/" CID "/cpuacct.usage"));
    assert_int_equal(wg_cpu_read_usage(path, &ns), 0);
    assert_int_equal(ns, 123456789ull);
    free(path);
    /* Another container's process (a pid reused, another namespace). */
    assert_int_equal(wg_cpu_cgroup_path(proc, cg, 42, CID2, &path), -ENOENT);
    assert_int_equal(wg_cpu_cgroup_path(proc, cg, 43, CID, &path), -ENOENT);
    assert_int_equal(wg_cpu_cgroup_path(proc, cg, 0, CID, &path), -ENOENT);
}

static void test_v2_path(void **state)
{
    char proc[300], cg[300], *path = NULL;
    uint64_t ns = 0;

    (void)state;
    snprintf(proc, sizeof(proc), "%s/proc2", root);
    snprintf(cg, sizeof(cg), "%s/cg2", root);
    put("proc2/7/cgroup", "0::/system.slice/docker-" CID ".scope\n");
    put("cg2/system.slice/docker-" CID ".scope/cpu.stat",
        "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n");
    assert_int_equal(wg_cpu_cgroup_path(proc, cg, 7, CID, &path), 0);
    assert_int_equal(wg_cpu_read_usage(path, &ns), 0);
    assert_int_equal(ns, 2500000ull);
    free(path);
    put("cg2/bad/cpu.stat", "user_usec 1\n");
    snprintf(proc, sizeof(proc), "%s/cg2/bad/cpu.stat", root);
    assert_int_equal(wg_cpu_read_usage(proc, &ns), -EBADMSG);
}

static void test_busy_file(void **state)
{
    char proc[300], real[400], link[400];
    int64_t ms = 0;

    (void)state;
    snprintf(proc, sizeof(proc), "%s/procb", root);
    put("procb/9/root/tmp/wakegate-busy", "");
    put("procb/9/root/etc/secret", "");
    assert_int_equal(wg_cpu_busy_mtime(proc, 9, "/tmp/wakegate-busy", &ms), 0);
    assert_true(ms > 1000000000000ll);
    assert_int_equal(wg_cpu_busy_mtime(proc, 9, "/tmp/none", &ms), -ENOENT);
    assert_int_equal(wg_cpu_busy_mtime(proc, 10, "/tmp/wakegate-busy", &ms), -ENOENT);
    /* A link, last or on the way, is never followed (it could name a file
     * of the host). */
    snprintf(real, sizeof(real), "%s/procb/9/root/etc/secret", root);
    snprintf(link, sizeof(link), "%s/procb/9/root/tmp/linked", root);
    assert_int_equal(symlink(real, link), 0);
    assert_int_equal(wg_cpu_busy_mtime(proc, 9, "/tmp/linked", &ms), -ELOOP);
    snprintf(real, sizeof(real), "%s/procb/9/root/tmp", root);
    snprintf(link, sizeof(link), "%s/procb/9/root/run", root);
    assert_int_equal(symlink(real, link), 0);
    {
        int rc = wg_cpu_busy_mtime(proc, 9, "/run/wakegate-busy", &ms);
        assert_true(rc == -ELOOP || rc == -ENOTDIR);
    }
    /* Not a regular file. */
    assert_int_equal(wg_cpu_busy_mtime(proc, 9, "/tmp", &ms), -EINVAL);
}

static void test_average(void **state)
{
    (void)state;
    /* Half a second of CPU in 5 s: 0.1 CPU. */
    assert_int_equal(wg_cpu_average(1000, 0, 1000 + 500000000ull, 5000000000ull), 100000000ull);
    assert_int_equal(wg_cpu_average(0, 5, 10, 5), 0);   /* no time passed */
    assert_int_equal(wg_cpu_average(10, 0, 5, 100), 0); /* counter went back: a new cgroup */
    /* Far past 2^64 / 1e9 ns of CPU time. */
    assert_int_equal(wg_cpu_average(100000000000000ull, 0, 100002000000000ull, 1000000000ull),
                     2000000000ull);
}

static void test_merge(void **state)
{
    struct wg_cpu_watch w = {0};
    json_t *l1 = json_pack("{s:s,s:s}", "wakegate.session", "s1", "wakegate.template", "gpu");
    json_t *l2 = json_pack("{s:s}", "wakegate.session", "s2");
    json_t *bad = json_pack("{s:s}", "wakegate.session", "no/slash");
    struct wg_docker_summary rows[3] = {{.id = CID2, .labels = l1},
                                        {.id = CID, .labels = l2},
                                        {.id = "abcdefabcdef", .labels = bad}};

    (void)state;
    assert_int_equal(table_merge(&w, rows, 3), 0);
    assert_int_equal(w.n, 2);
    assert_string_equal(w.ents[0].container, CID2); /* sorted by id */
    assert_string_equal(w.ents[0].tmpl, "gpu");
    assert_string_equal(w.ents[1].session, "s2");
    w.ents[1].have = true;
    w.ents[1].usage_ns = 77;
    w.ents[1].path = strdup("/x");
    /* CID2 stopped: CID keeps its sample and file. */
    assert_int_equal(table_merge(&w, &rows[1], 1), 0);
    assert_int_equal(w.n, 1);
    assert_true(w.ents[0].have);
    assert_int_equal(w.ents[0].usage_ns, 77);
    assert_string_equal(w.ents[0].path, "/x");
    assert_int_equal(table_merge(&w, NULL, 0), 0);
    assert_int_equal(w.n, 0);
    free(w.ents);
    json_decref(l1);
    json_decref(l2);
    json_decref(bad);
}

/* ---- on a loop: no engine at the socket ---------------------------------------------------- */

static void count_done(void *arg)
{
    (*(int *)arg)++;
}

static void test_pass_without_engine(void **state)
{
    uv_loop_t loop;
    struct wg_docker_opts dopts = {0};
    struct wg_docker *d = NULL;
    struct wg_cpu_watch *w = NULL;
    struct wg_cpu_watch_opts o = {.local = true, .interval_ms = 50};
    struct wg_cpu_watch_stats st;
    char host[400], err[200];
    int done = 0;

    (void)state;
    snprintf(host, sizeof(host), "unix://%s/no-engine.sock", root);
    dopts.host = host;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(wg_docker_new(&loop, &dopts, NULL, &d, err, sizeof(err)), 0);
    assert_int_equal(wg_cpu_watch_new(&loop, d, NULL, &o, &w), 0);
    assert_int_equal(wg_cpu_watch_pass(w, count_done, &done), 0);
    assert_int_equal(wg_cpu_watch_pass(w, count_done, &done), -EBUSY);
    assert_true(wg_test_run_until(&loop, &done, 1, 5000));
    wg_cpu_watch_get_stats(w, &st);
    assert_int_equal(st.passes, 1);
    assert_int_equal(st.failed_passes, 1);
    assert_int_equal(st.list_calls, 1);
    /* The timer's passes, then a free while one is in flight. */
    wg_cpu_watch_start(w);
    wg_test_run_for(&loop, 120);
    wg_cpu_watch_free(w);
    wg_docker_free(d);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_path),   cmocka_unit_test(test_v2_path),
        cmocka_unit_test(test_busy_file), cmocka_unit_test(test_average),
        cmocka_unit_test(test_merge),     cmocka_unit_test(test_pass_without_engine),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
