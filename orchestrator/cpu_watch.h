/* orchestrator/cpu_watch.h - the container's own work as activity: the CPU
 * time of every running session container of one engine, sampled once per
 * interval.
 *
 * A pass: one GET /containers/json (label wakegate.session, status
 * running), so what it reads follows the running containers, never every
 * session; then each container's CPU time so far:
 *   - local engine (unix socket): from its cgroup file (cgroup v1
 *     cpuacct.usage, v2 cpu.stat usage_usec), found once per container
 *     from the inspect's Pid and /proc/PID/cgroup, and kept only when the
 *     path names the container's id; the files of a pass are read in one
 *     work item of libuv's pool, never on the loop;
 *   - otherwise, or when no file is found: GET /containers/{id}/stats
 *     (one-shot), at most opts.stats_concurrency in flight.
 * The first pass that sees a container only records its time; each later
 * pass gives its average CPU over the time between the two samples (nano
 * CPUs), and active_cb gets the sessions whose average reached their
 * threshold (threshold_cb, per container, from its wakegate.template
 * label).
 *
 * The container can also say it is busy: where its cgroup file is read
 * (local engine), the modification time of its template's busy file
 * (busy_cb, e.g. /tmp/wakegate-busy, `touch`ed by a job that waits on
 * something) is its activity, reported when it changed since the last pass
 * (a time in the future counts as now). The file is found from
 * /proc/PID/root one component at a time without following any link, so
 * the container cannot point it at a file of the host.
 *
 * Logging: one warning per failure streak of the list call, debug lines
 * otherwise. */
#ifndef WG_ORCHESTRATOR_CPU_WATCH_H
#define WG_ORCHESTRATOR_CPU_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct wg_docker;
struct wg_log;
struct wg_buf;
struct wg_cpu_watch; /* opaque */

/* One session whose container worked: its average over the last interval. */
struct wg_cpu_active {
    const char *session;
    const char *container;
    uint64_t nano_cpus; /* its average CPU; 0 for a busy file */
    int64_t at_ms;      /* the busy file's time (ms since the epoch); 0: now (its CPU) */
};

/* The threshold (nano CPUs) of a container made from template tmpl ("" when
 * it has no label: the sessions: block's). */
typedef uint64_t wg_cpu_threshold_fn(const char *tmpl, void *arg);
/* Its busy file, an absolute path, or NULL; the string must outlive w. */
typedef const char *wg_cpu_busy_file_fn(const char *tmpl, void *arg);
/* The sessions over their threshold in one pass (n may be 0: not called
 * then). v is valid only inside the call. */
typedef void wg_cpu_active_fn(const struct wg_cpu_active *v, size_t n, void *arg);
/* A pass ended (wg_cpu_watch_pass()). */
typedef void wg_cpu_pass_fn(void *arg);

struct wg_cpu_watch_opts {
    uint64_t interval_ms;       /* 0: no timer; passes only by wg_cpu_watch_pass() */
    unsigned stats_concurrency; /* stats and inspect calls in flight (0: 8) */
    bool local;                 /* the engine runs here: try the cgroup files */
    const char *proc_root;      /* "/proc" when NULL */
    const char *cgroup_root;    /* "/sys/fs/cgroup" when NULL */
    wg_cpu_threshold_fn *threshold;
    wg_cpu_busy_file_fn *busy_file; /* NULL: none */
    wg_cpu_active_fn *active;
    void *arg;
};

/* What the passes cost, for /metrics and bench/. */
struct wg_cpu_watch_stats {
    uint64_t passes, failed_passes;
    uint64_t list_calls, inspect_calls, stats_calls;
    uint64_t files_read, file_errors;
    uint64_t active; /* sessions reported active by their CPU */
    uint64_t busy;   /* sessions reported active by their busy file */
    size_t running;  /* containers the last pass saw */
    double last_pass_ms;
    double last_list_ms; /* of it: the running list, asked to parsed */
    double last_read_ms; /* of it: the cgroup files (the work item, queued to done) */
    unsigned last_calls; /* Docker calls of the last pass */
};

/* docker and log are borrowed and must outlive w. The timer (when
 * interval_ms) starts with wg_cpu_watch_start(). Returns 0 with *ret set,
 * -EINVAL or -ENOMEM. */
int wg_cpu_watch_new(uv_loop_t *loop, struct wg_docker *docker, struct wg_log *log,
                     const struct wg_cpu_watch_opts *opts, struct wg_cpu_watch **ret);
void wg_cpu_watch_start(struct wg_cpu_watch *w);
void wg_cpu_watch_stop(struct wg_cpu_watch *w);
/* One pass now (done runs when it ends, never inside this call). Returns
 * -EBUSY while a pass runs. */
int wg_cpu_watch_pass(struct wg_cpu_watch *w, wg_cpu_pass_fn *done, void *arg);
/* NULL-safe. No callback runs after it; the memory goes once the calls
 * and the work item in flight have returned (the loop must run on). Call
 * it before freeing docker. */
void wg_cpu_watch_free(struct wg_cpu_watch *w);
void wg_cpu_watch_get_stats(const struct wg_cpu_watch *w, struct wg_cpu_watch_stats *out);
void wg_cpu_watch_metrics(const struct wg_cpu_watch *w, struct wg_buf *out);

/* Pure helpers (unit-tested). The cgroup file of container's CPU time for
 * the process pid, from PROC/PID/cgroup: v1 cpuacct first, then v2; the
 * path must contain the container id. 0 with *ret malloc'd, -ENOENT. */
int wg_cpu_cgroup_path(const char *proc_root, const char *cgroup_root, int pid,
                       const char *container, char **ret);
/* The CPU time (ns) in a cgroup file that path names. 0, -errno, -EBADMSG. */
int wg_cpu_read_usage(const char *path, uint64_t *ret_ns);
/* The modification time (ms since the epoch) of path (absolute, plain
 * components) inside the root of process pid: each component opened with
 * O_NOFOLLOW under PROC/PID/root, the last one a regular file. 0, -errno
 * (-ELOOP for a link). */
int wg_cpu_busy_mtime(const char *proc_root, int pid, const char *path, int64_t *ret_ms);
/* Average CPU in nano CPUs between two samples (0 when the clock did not
 * move or the counter went back). */
uint64_t wg_cpu_average(uint64_t usage0_ns, uint64_t at0_ns, uint64_t usage1_ns, uint64_t at1_ns);

#endif
