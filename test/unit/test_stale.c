/* test/unit/test_stale.c - a returning host's stale containers
 * (orchestrator/stale.h): the verdict of a reconcile round for every kind
 * of container, the side ref's name, and the built-in save hook run for
 * real (sh and git, in a temporary directory) with WAKEGATE_SAVE_REF: it
 * pushes to the side ref and leaves the main line alone. The task itself
 * (Docker, Redis) is exercised by test/e2e/test_stale_host.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "orchestrator/orch_policy.h"
#include "orchestrator/stale.h"

static enum wg_stale_verdict decide(bool has_record, const char *host, bool made_here,
                                    enum wg_stale_lost lost)
{
    const char *why = NULL;
    struct wg_stale_in in = {.has_record = has_record,
                             .record_host = host,
                             .me = "host-a",
                             .made_here = made_here,
                             .lost = lost};
    enum wg_stale_verdict v = wg_stale_decide(&in, &why);

    assert_non_null(why);
    assert_true(why[0] != '\0');
    return v;
}

static void test_verdicts(void **state)
{
    (void)state;
    /* A record decides, whoever made the container and whatever the lost flag. */
    for (int made = 0; made < 2; made++) {
        for (int lost = -1; lost <= 1; lost++) {
            enum wg_stale_lost l = (enum wg_stale_lost)lost;
            assert_int_equal(decide(true, "host-a", made, l), WG_STALE_OURS);
            assert_int_equal(decide(true, "host-b", made, l), WG_STALE_REMOVE);
            assert_int_equal(decide(true, "", made, l), WG_STALE_LEAVE);
            /* A host name that only begins like ours is another host. */
            assert_int_equal(decide(true, "host-a2", made, l), WG_STALE_REMOVE);
        }
    }
    /* No record, made by hand: adopted as always. */
    for (int lost = -1; lost <= 1; lost++)
        assert_int_equal(decide(false, "", false, (enum wg_stale_lost)lost), WG_STALE_ADOPT);
    /* No record, made by wakegate: by whether this host was lost. */
    assert_int_equal(decide(false, "", true, WG_STALE_LOST_NO), WG_STALE_ADOPT);
    assert_int_equal(decide(false, "", true, WG_STALE_LOST_YES), WG_STALE_REMOVE);
    assert_int_equal(decide(false, "", true, WG_STALE_LOST_UNKNOWN), WG_STALE_LEAVE);
}

static void test_ref_names(void **state)
{
    char ref[128];

    (void)state;
    assert_int_equal(wg_stale_ref(ref, sizeof(ref), "s-1", "host-a", 1700000000123), 50);
    assert_string_equal(ref, "refs/heads/wakegate/stale/s-1/host-a-1700000000123");
    /* Dots (a ".." or a ".lock" end would not be a ref) and other bytes become '-'. */
    assert_true(wg_stale_ref(ref, sizeof(ref), "s_2", "a..b.lock", 5) > 0);
    assert_string_equal(ref, "refs/heads/wakegate/stale/s_2/a--b-lock-5");
    assert_true(wg_stale_ref(ref, sizeof(ref), "s", "Host_9", 0) > 0);
    assert_string_equal(ref, "refs/heads/wakegate/stale/s/Host_9-0");
    assert_int_equal(wg_stale_ref(ref, 20, "s-1", "host-a", 1), -ENOSPC);
}

/* ---- the built-in hook with WAKEGATE_SAVE_REF, for real ------------------------------------ */

static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

static void read_line(const char *cmd, char *out, size_t len)
{
    FILE *f = popen(cmd, "r");

    assert_non_null(f);
    out[0] = '\0';
    if (!fgets(out, (int)len, f))
        out[0] = '\0';
    pclose(f);
    out[strcspn(out, "\n")] = '\0';
}

/* Runs the built-in hook in dir's work tree with env (NULL: none added);
 * returns its exit code. */
static int run_hook(const char *work, const char *env)
{
    const char *argv[32];
    char secs[24];
    pid_t pid;
    int st;

    assert_true(wg_orch_save_argv(NULL, work, "s-1", "2026-01-01T00:00:00Z", 30000, argv, 32, secs,
                                  sizeof(secs)) > 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (env)
            putenv((char *)env);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_hook_pushes_to_the_side_ref(void **state)
{
    char dir[] = "/tmp/wg-stale-test-XXXXXX";
    char cmd[512], main_before[64], main_after[64], side[64], local[64];
    static char env[] = "WAKEGATE_SAVE_REF=refs/heads/wakegate/stale/s-1/host-a-7";

    (void)state;
    assert_non_null(mkdtemp(dir));
    /* A remote whose main line moved on (the live container's newer work)
     * and a stale clone with unsaved work of its own. */
    assert_int_equal(sh("set -e; cd %s; git init -q --bare remote.git;"
                        "git clone -q remote.git live 2>/dev/null; cd live;"
                        "git -c user.email=a@b -c user.name=a commit -q --allow-empty -m base;"
                        "git push -q origin HEAD:refs/heads/main; cd ..;"
                        "git clone -q -b main remote.git stale; cd live;"
                        "git -c user.email=a@b -c user.name=a commit -q --allow-empty -m newer;"
                        "git push -q origin HEAD:refs/heads/main; cd ../stale;"
                        "echo stale work > notes.txt",
                        dir),
                     0);
    snprintf(cmd, sizeof(cmd), "git -C %s/remote.git rev-parse refs/heads/main", dir);
    read_line(cmd, main_before, sizeof(main_before));
    snprintf(cmd, sizeof(cmd), "%s/stale", dir);
    assert_int_equal(run_hook(cmd, env), 0);
    snprintf(cmd, sizeof(cmd), "git -C %s/remote.git rev-parse refs/heads/main", dir);
    read_line(cmd, main_after, sizeof(main_after));
    assert_string_equal(main_before, main_after); /* the main line is untouched */
    snprintf(cmd, sizeof(cmd),
             "git -C %s/remote.git rev-parse refs/heads/wakegate/stale/s-1/host-a-7", dir);
    read_line(cmd, side, sizeof(side));
    snprintf(cmd, sizeof(cmd), "git -C %s/stale rev-parse HEAD", dir);
    read_line(cmd, local, sizeof(local));
    assert_int_equal(strlen(side), 40);
    assert_string_equal(side, local); /* the stale work, committed, is on the side ref */
    snprintf(cmd, sizeof(cmd), "git -C %s/remote.git show %s:notes.txt | grep -q 'stale work'", dir,
             side);
    assert_int_equal(sh("%s", cmd), 0);
    /* Without the variable the hook pushes to the main line as before, and
     * is refused there (the live work is newer): a failed save. */
    assert_int_equal(sh("echo more >> %s/stale/notes.txt", dir), 0);
    snprintf(cmd, sizeof(cmd), "%s/stale", dir);
    assert_int_not_equal(run_hook(cmd, NULL), 0);
    snprintf(cmd, sizeof(cmd), "git -C %s/remote.git rev-parse refs/heads/main", dir);
    read_line(cmd, main_after, sizeof(main_after));
    assert_string_equal(main_before, main_after);
    assert_int_equal(sh("rm -rf %s", dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verdicts),
        cmocka_unit_test(test_ref_names),
        cmocka_unit_test(test_hook_pushes_to_the_side_ref),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
