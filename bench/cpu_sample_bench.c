/* bench/cpu_sample_bench.c - what one pass of the CPU sampler
 * (orchestrator/cpu_watch.c) costs: Docker calls and milliseconds, against
 * the stand-in engine bench/fake_engine.py serves (its running containers'
 * cgroup files are a fake tree under DIR). See bench/README.md.
 *
 * Runs PASSES passes back to back and prints one line per pass: the
 * running containers it saw, its Docker calls by kind, the cgroup files it
 * read (each with the container's busy file) and its duration (first call
 * to done, on the loop). Pass 1 also
 * finds each container's cgroup file (one inspect each); the later ones
 * are the steady cost per interval. With --api every container is sampled
 * through the stats call instead (a remote engine).
 *
 * Exit status: 0; 1 when a pass failed or saw another count of running
 * containers than --expect; 2 on a usage or setup error. Wall-clock time
 * is never asserted. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "orchestrator/cpu_watch.h"
#include "orchestrator/docker.h"

struct bench {
    struct wg_cpu_watch *w;
    struct wg_cpu_watch_stats prev;
    int pass, passes;
    size_t expect;
    int status;
    uint64_t active;
};

static uint64_t threshold(const char *tmpl, void *arg)
{
    (void)tmpl;
    (void)arg;
    return 100000000ull; /* 0.1 CPU, the default */
}

static const char *busy_file(const char *tmpl, void *arg)
{
    (void)tmpl;
    (void)arg;
    return "/tmp/wakegate-busy"; /* the default */
}

static void active(const struct wg_cpu_active *v, size_t n, void *arg)
{
    struct bench *b = arg;
    (void)v;
    b->active += n;
}

static void pass_done(void *arg);

static void next_pass(struct bench *b)
{
    if (b->pass >= b->passes || wg_cpu_watch_pass(b->w, pass_done, b) < 0) {
        if (b->pass < b->passes)
            b->status = 1;
        wg_cpu_watch_free(b->w);
        b->w = NULL;
    }
}

static void pass_done(void *arg)
{
    struct bench *b = arg;
    struct wg_cpu_watch_stats s;

    wg_cpu_watch_get_stats(b->w, &s);
    b->pass++;
    printf("pass=%d running=%zu calls=%u list=%" PRIu64 " inspect=%" PRIu64 " stats=%" PRIu64
           " files=%" PRIu64 " file_errors=%" PRIu64 " failed=%" PRIu64 " busy=%" PRIu64
           " list_ms=%.2f read_ms=%.2f ms=%.2f\n",
           b->pass, s.running, s.last_calls, s.list_calls - b->prev.list_calls,
           s.inspect_calls - b->prev.inspect_calls, s.stats_calls - b->prev.stats_calls,
           s.files_read - b->prev.files_read, s.file_errors - b->prev.file_errors,
           s.failed_passes - b->prev.failed_passes, s.busy - b->prev.busy, s.last_list_ms,
           s.last_read_ms, s.last_pass_ms);
    fflush(stdout);
    if (s.failed_passes != b->prev.failed_passes || s.running != b->expect)
        b->status = 1;
    b->prev = s;
    next_pass(b);
}

int main(int argc, char **argv)
{
    const char *sock = NULL, *dir = NULL;
    char host[512], proc[512], cg[512], err[256];
    struct bench b = {.passes = 5};
    struct wg_docker_opts dopts = {0};
    struct wg_docker *d = NULL;
    bool api = false;
    unsigned conc = 8;
    uv_loop_t loop;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc)
            sock = argv[++i];
        else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(argv[i], "--passes") == 0 && i + 1 < argc)
            b.passes = atoi(argv[++i]);
        else if (strcmp(argv[i], "--expect") == 0 && i + 1 < argc)
            b.expect = (size_t)strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--concurrency") == 0 && i + 1 < argc)
            conc = (unsigned)atoi(argv[++i]);
        else if (strcmp(argv[i], "--api") == 0)
            api = true;
        else {
            fprintf(stderr,
                    "usage: %s --socket PATH --dir DIR --expect N [--passes K] [--api] "
                    "[--concurrency C]\n",
                    argv[0]);
            return 2;
        }
    }
    if (!sock || !dir || b.passes < 1)
        return 2;
    snprintf(host, sizeof(host), "unix://%s", sock);
    snprintf(proc, sizeof(proc), "%s/proc", dir);
    snprintf(cg, sizeof(cg), "%s/cgroup", dir);
    uv_loop_init(&loop);
    dopts.host = host;
    dopts.timeout_ms = 120000;
    if (wg_docker_new(&loop, &dopts, NULL, &d, err, sizeof(err)) < 0) {
        fprintf(stderr, "docker client: %s\n", err);
        return 2;
    }
    struct wg_cpu_watch_opts o = {
        .stats_concurrency = conc,
        .local = !api,
        .proc_root = proc,
        .cgroup_root = cg,
        .threshold = threshold,
        .busy_file = busy_file,
        .active = active,
        .arg = &b,
    };
    if (wg_cpu_watch_new(&loop, d, NULL, &o, &b.w) < 0)
        return 2;
    next_pass(&b);
    uv_run(&loop, UV_RUN_DEFAULT);
    wg_docker_free(d);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        fprintf(stderr, "loop not closed cleanly\n");
    return b.status;
}
