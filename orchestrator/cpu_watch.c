/* orchestrator/cpu_watch.c - the container's own work as activity (see
 * cpu_watch.h).
 *
 * A pass runs its steps one after the other, and nothing but the step at
 * work touches the table of containers (w->ents, sorted by container id):
 *   list -> inspect the new ones (local engine: their Pid) -> read the
 *   cgroup files (one work item in libuv's pool) -> stats calls for the
 *   rest -> decide and report -> done.
 * Ownership: w counts references (1 while live, the timer handle, each
 * call and the work item in flight); wg_cpu_watch_free() marks it closed
 * and the last reference frees it. */
#include "orchestrator/cpu_watch.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "common/buf.h"
#include "common/labels.h"
#include "common/log.h"
#include "common/session.h"
#include "common/str.h"
#include "orchestrator/docker.h"

#define CPU_SUBSYS "orch"
#define CPU_ID_MAX 64
#define CPU_FILE_MAX 4096 /* bytes read of a cgroup file */

struct cpu_ent {
    char container[CPU_ID_MAX + 1];
    char session[WG_SESSION_ID_MAX + 1];
    char tmpl[WG_SESSION_TEMPLATE_MAX + 1];
    char *path;                /* its cgroup file; NULL: not found (yet) */
    const char *busy;          /* its template's busy file (borrowed), or NULL */
    int64_t busy_ms, busy_new; /* its time as last reported; as read this pass (0: none) */
    int pid;                   /* from the inspect; 0: unknown */
    bool inspected;            /* the inspect answered */
    bool api;                  /* sampled through the stats API */
    bool have;                 /* usage_ns / at_ns hold the previous sample */
    bool fresh;                /* this pass sampled it: new_* */
    uint64_t usage_ns, at_ns, new_usage, new_at;
};

struct wg_cpu_watch {
    uv_loop_t *loop;
    struct wg_docker *docker;
    struct wg_log *log;
    struct wg_cpu_watch_opts o;
    char *proc_root, *cgroup_root;
    unsigned refs;
    bool closed;
    uv_timer_t timer;
    uv_work_t work;

    struct cpu_ent *ents;
    size_t n;
    /* the pass at work */
    bool busy;
    size_t next;        /* the next entry the inspect or stats step looks at */
    unsigned in_flight; /* its calls */
    uint64_t t0;        /* uv_hrtime() at its start */
    uint64_t read_t0;   /* ... and when its work item was queued */
    unsigned calls;
    uint64_t pass_files, pass_file_errors; /* counted by the work item */
    bool list_failing;
    wg_cpu_pass_fn *done;
    void *done_arg;

    struct wg_cpu_watch_stats st;
};

static void unref(struct wg_cpu_watch *w)
{
    if (--w->refs > 0)
        return;
    for (size_t i = 0; i < w->n; i++)
        free(w->ents[i].path);
    free(w->ents);
    free(w->proc_root);
    free(w->cgroup_root);
    free(w);
}

/* First thing in a callback: drops the call's reference; true when w must
 * not go on (closed; it may be freed then). */
static bool returned(struct wg_cpu_watch *w)
{
    bool closed = w->closed;

    unref(w);
    return closed;
}

/* ---- pure helpers ---------------------------------------------------------------------------- */

uint64_t wg_cpu_average(uint64_t usage0_ns, uint64_t at0_ns, uint64_t usage1_ns, uint64_t at1_ns)
{
    if (at1_ns <= at0_ns || usage1_ns < usage0_ns)
        return 0;
    /* ns of CPU per ns of wall, in nano CPUs; in double, as the product
     * overflows 64 bits past ~18 s of CPU time. */
    return (uint64_t)((double)(usage1_ns - usage0_ns) * 1e9 / (double)(at1_ns - at0_ns));
}

static int read_small(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t got;

    if (fd < 0)
        return -errno;
    got = read(fd, buf, len - 1);
    if (got < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    close(fd);
    buf[got] = '\0';
    return 0;
}

int wg_cpu_read_usage(const char *path, uint64_t *ret_ns)
{
    char buf[CPU_FILE_MAX], *p, *end;
    size_t pl = strlen(path);
    unsigned long long v;
    int rc = read_small(path, buf, sizeof(buf));

    if (rc < 0)
        return rc;
    if (pl >= 8 && strcmp(path + pl - 8, "cpu.stat") == 0) {
        p = strstr(buf, "usage_usec ");
        if (!p || (p != buf && p[-1] != '\n'))
            return -EBADMSG;
        p += 11;
        errno = 0;
        v = strtoull(p, &end, 10);
        if (end == p || errno)
            return -EBADMSG;
        *ret_ns = (uint64_t)v * 1000u;
        return 0;
    }
    errno = 0;
    v = strtoull(buf, &end, 10);
    if (end == buf || errno || (*end != '\n' && *end != '\0'))
        return -EBADMSG;
    *ret_ns = (uint64_t)v;
    return 0;
}

static bool controllers_have(const char *list, size_t len, const char *name)
{
    size_t nl = strlen(name);
    const char *p = list, *e = list + len;

    while (p < e) {
        const char *c = memchr(p, ',', (size_t)(e - p));
        size_t l = c ? (size_t)(c - p) : (size_t)(e - p);
        if (l == nl && memcmp(p, name, nl) == 0)
            return true;
        p += l + 1;
    }
    return false;
}

/* The first of root/<mount>/<cg>/<file> that exists, for each mount. */
static char *first_existing(const char *root, const char *const *mounts, const char *cg,
                            const char *file)
{
    struct stat sb;

    for (size_t i = 0; mounts[i]; i++) {
        char *p = wg_strf("%s%s%s%s/%s", root, mounts[i][0] ? "/" : "", mounts[i], cg, file);
        if (!p)
            return NULL;
        if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode))
            return p;
        free(p);
    }
    return NULL;
}

int wg_cpu_cgroup_path(const char *proc_root, const char *cgroup_root, int pid,
                       const char *container, char **ret)
{
    static const char *const v1[] = {"cpuacct", "cpu,cpuacct", "cpuacct,cpu", NULL};
    static const char *const v2[] = {"", "unified", NULL};
    char file[256], buf[CPU_FILE_MAX], *line, *save = NULL, *found = NULL, *v2cg = NULL;

    if (pid <= 0 || strlen(container) < 12)
        return -ENOENT;
    snprintf(file, sizeof(file), "%s/%d/cgroup", proc_root, pid);
    if (read_small(file, buf, sizeof(buf)) < 0)
        return -ENOENT;
    /* "hierarchy:controllers:path" per line. */
    for (line = strtok_r(buf, "\n", &save); line && !found; line = strtok_r(NULL, "\n", &save)) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        const char *cg = c2 ? c2 + 1 : NULL;
        /* A process of another pid namespace, or another container: its
         * path would not name this container. */
        if (!cg || cg[0] != '/' || !strstr(cg, container) || strstr(cg, "/.."))
            continue;
        if (controllers_have(c1 + 1, (size_t)(c2 - c1 - 1), "cpuacct"))
            found = first_existing(cgroup_root, v1, cg, "cpuacct.usage");
        else if (strncmp(line, "0::", 3) == 0)
            v2cg = (char *)cg;
    }
    if (!found && v2cg)
        found = first_existing(cgroup_root, v2, v2cg, "cpu.stat");
    if (!found)
        return -ENOENT;
    *ret = found;
    return 0;
}

int wg_cpu_busy_mtime(const char *proc_root, int pid, const char *path, int64_t *ret_ms)
{
    char buf[256], root[PATH_MAX], *comp, *next;
    struct stat st;
    int dfd, rc = 0;

    if (pid <= 0 || path[0] != '/' || strlen(path) >= sizeof(buf))
        return -EINVAL;
    snprintf(root, sizeof(root), "%s/%d/root", proc_root, pid);
    dfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    snprintf(buf, sizeof(buf), "%s", path + 1);
    for (comp = buf; (next = strchr(comp, '/')) != NULL; comp = next + 1) {
        int nfd;
        *next = '\0';
        nfd = openat(dfd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (nfd < 0) {
            rc = -errno;
            goto out;
        }
        close(dfd);
        dfd = nfd;
    }
    if (fstatat(dfd, comp, &st, AT_SYMLINK_NOFOLLOW) < 0)
        rc = -errno;
    else if (!S_ISREG(st.st_mode))
        rc = S_ISLNK(st.st_mode) ? -ELOOP : -EINVAL;
    else
        *ret_ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
out:
    close(dfd);
    return rc;
}

/* ---- the table ------------------------------------------------------------------------------- */

static int ent_cmp(const void *a, const void *b)
{
    return strcmp(((const struct cpu_ent *)a)->container, ((const struct cpu_ent *)b)->container);
}

static const char *label_of(json_t *labels, const char *key)
{
    const char *v = json_string_value(json_object_get(labels, key));
    return v ? v : "";
}

/* The running list as the new table: an entry seen before keeps its file,
 * Pid and last sample; the others' are dropped. */
static int table_merge(struct wg_cpu_watch *w, const struct wg_docker_summary *rows, size_t nrows)
{
    struct cpu_ent *nt = nrows ? calloc(nrows, sizeof(*nt)) : NULL;
    size_t n = 0, i = 0, j = 0;

    if (nrows && !nt)
        return -ENOMEM;
    for (size_t r = 0; r < nrows; r++) {
        const char *sess = label_of(rows[r].labels, WG_LABEL_SESSION);
        const char *tmpl = label_of(rows[r].labels, WG_LABEL_TEMPLATE);
        if (!rows[r].id || strlen(rows[r].id) > CPU_ID_MAX || !wg_docker_ref_valid(rows[r].id) ||
            !wg_session_id_valid(sess, strlen(sess)) || strlen(tmpl) > WG_SESSION_TEMPLATE_MAX)
            continue;
        snprintf(nt[n].container, sizeof(nt[n].container), "%s", rows[r].id);
        snprintf(nt[n].session, sizeof(nt[n].session), "%s", sess);
        snprintf(nt[n].tmpl, sizeof(nt[n].tmpl), "%s", tmpl);
        nt[n].busy = w->o.busy_file ? w->o.busy_file(tmpl, w->o.arg) : NULL;
        n++;
    }
    if (n > 1)
        qsort(nt, n, sizeof(*nt), ent_cmp);
    while (i < w->n || j < n) {
        int c = i == w->n ? 1 : j == n ? -1 : strcmp(w->ents[i].container, nt[j].container);
        if (c < 0) {
            free(w->ents[i++].path); /* gone */
        } else if (c > 0) {
            j++; /* new */
        } else {
            struct cpu_ent *old = &w->ents[i++], *e = &nt[j++];
            e->path = old->path;
            e->pid = old->pid;
            e->inspected = old->inspected;
            e->api = old->api;
            e->have = old->have;
            e->usage_ns = old->usage_ns;
            e->at_ns = old->at_ns;
            e->busy_ms = old->busy_ms;
        }
    }
    free(w->ents);
    w->ents = nt;
    w->n = n;
    return 0;
}

/* ---- the pass -------------------------------------------------------------------------------- */

static void step_inspect(struct wg_cpu_watch *w);
static void step_read(struct wg_cpu_watch *w);
static void step_stats(struct wg_cpu_watch *w);

static void pass_end(struct wg_cpu_watch *w, bool ok)
{
    wg_cpu_pass_fn *done = w->done;

    w->st.passes++;
    if (!ok)
        w->st.failed_passes++;
    w->st.running = w->n;
    w->st.last_pass_ms = (double)(uv_hrtime() - w->t0) / 1e6;
    w->st.last_calls = w->calls;
    w->busy = false;
    w->done = NULL;
    if (done)
        done(w->done_arg);
}

/* One entry's report this pass, if any: its CPU over the threshold, else
 * a busy file newer than the last one reported. */
static bool ent_report(struct wg_cpu_watch *w, struct cpu_ent *e, struct wg_cpu_active *out)
{
    bool cpu = false, busy = e->busy_new > e->busy_ms;
    uint64_t avg = 0;

    if (e->have) {
        uint64_t thr = w->o.threshold ? w->o.threshold(e->tmpl, w->o.arg) : UINT64_MAX;
        avg = wg_cpu_average(e->usage_ns, e->at_ns, e->new_usage, e->new_at);
        cpu = avg >= thr;
    }
    e->have = true;
    e->usage_ns = e->new_usage;
    e->at_ns = e->new_at;
    if (busy)
        e->busy_ms = e->busy_new;
    e->busy_new = 0;
    if (!cpu && !busy)
        return false;
    *out = (struct wg_cpu_active){e->session, e->container, cpu ? avg : 0, cpu ? 0 : e->busy_ms};
    w->st.active += cpu;
    w->st.busy += !cpu;
    return true;
}

static void decide(struct wg_cpu_watch *w)
{
    struct wg_cpu_active *v = w->n ? calloc(w->n, sizeof(*v)) : NULL;
    size_t nv = 0;

    for (size_t i = 0; v && i < w->n; i++) {
        struct cpu_ent *e = &w->ents[i];
        if (!e->fresh)
            continue;
        e->fresh = false;
        nv += ent_report(w, e, &v[nv]);
    }
    if (nv && w->o.active)
        w->o.active(v, nv, w->o.arg);
    free(v);
}

static void on_list(int status, const struct wg_docker_reply *r, void *arg)
{
    struct wg_cpu_watch *w = arg;

    if (returned(w))
        return;
    if (status != 0) {
        if (!w->list_failing)
            WG_WARN(w->log, CPU_SUBSYS, "cannot list the running containers, CPU not sampled",
                    "docker=\"%s\"", r->error);
        w->list_failing = true;
        pass_end(w, false);
        return;
    }
    if (w->list_failing)
        WG_INFO(w->log, CPU_SUBSYS, "running containers listed again, CPU sampled", "running=%zu",
                r->n_containers);
    w->list_failing = false;
    w->st.last_list_ms = (double)(uv_hrtime() - w->t0) / 1e6;
    if (table_merge(w, r->containers, r->n_containers) < 0) {
        pass_end(w, false);
        return;
    }
    w->next = 0;
    step_inspect(w);
}

static void on_inspect(int status, const struct wg_docker_reply *r, void *arg);

/* A call about one container: the entry is found again by its id. */
struct ent_call {
    struct wg_cpu_watch *w;
    char container[CPU_ID_MAX + 1];
};

static struct ent_call *ent_call_new(struct wg_cpu_watch *w, const struct cpu_ent *e)
{
    struct ent_call *ec = malloc(sizeof(*ec));

    if (ec) {
        ec->w = w;
        snprintf(ec->container, sizeof(ec->container), "%s", e->container);
    }
    return ec;
}

/* Takes (and frees) the call: its entry, or NULL; *closed when w must not
 * go on. */
static struct cpu_ent *ent_call_end(struct ent_call *ec, bool *closed)
{
    struct wg_cpu_watch *w = ec->w;
    struct cpu_ent key;

    snprintf(key.container, sizeof(key.container), "%s", ec->container);
    free(ec);
    *closed = returned(w);
    if (*closed)
        return NULL;
    w->in_flight--;
    return bsearch(&key, w->ents, w->n, sizeof(key), ent_cmp);
}

/* Local engine: the Pid of each container not seen before, a bounded
 * number of calls at once. Elsewhere every container goes to the API. */
static void step_inspect(struct wg_cpu_watch *w)
{
    while (w->next < w->n && w->in_flight < w->o.stats_concurrency) {
        struct cpu_ent *e = &w->ents[w->next++];
        if (e->inspected || e->api)
            continue;
        if (!w->o.local) {
            e->api = true;
            continue;
        }
        struct ent_call *ec = ent_call_new(w, e);
        if (!ec)
            continue;
        if (wg_docker_inspect(w->docker, e->container, on_inspect, ec) < 0) {
            free(ec);
            e->api = true;
            continue;
        }
        w->refs++;
        w->in_flight++;
        w->calls++;
        w->st.inspect_calls++;
    }
    if (w->in_flight == 0 && w->next >= w->n)
        step_read(w);
}

static void on_inspect(int status, const struct wg_docker_reply *r, void *arg)
{
    struct ent_call *ec = arg;
    struct wg_cpu_watch *w = ec->w;
    bool closed;
    struct cpu_ent *e = ent_call_end(ec, &closed);

    if (closed)
        return;
    if (e && (status == 0 || status == WG_DOCKER_ENOTFOUND)) {
        e->inspected = true;
        e->pid = status == 0 && r->container->running ? r->container->pid : 0;
        if (e->pid <= 0)
            e->api = true;
    } else if (e) {
        WG_DEBUG(w->log, CPU_SUBSYS, "inspect for the CPU sample failed, trying next pass",
                 "container=%.12s docker=\"%s\"", e->container, r->error);
    }
    step_inspect(w);
}

/* In libuv's pool: find the files not known yet, read every file. Only
 * this work touches the table while it runs. */
static void read_work(uv_work_t *req)
{
    struct wg_cpu_watch *w = req->data;

    for (size_t i = 0; i < w->n; i++) {
        struct cpu_ent *e = &w->ents[i];
        if (e->api)
            continue;
        if (!e->path && (e->pid <= 0 || wg_cpu_cgroup_path(w->proc_root, w->cgroup_root, e->pid,
                                                           e->container, &e->path) < 0)) {
            if (e->inspected)
                e->api = true; /* not on this host's files: through the engine */
            continue;
        }
        w->pass_files++;
        if (wg_cpu_read_usage(e->path, &e->new_usage) < 0) {
            /* Mostly a container that stopped since the list: the next
             * pass that still lists it inspects it again. */
            w->pass_file_errors++;
            free(e->path);
            e->path = NULL;
            e->pid = 0;
            e->inspected = false;
            continue;
        }
        e->new_at = uv_hrtime();
        e->fresh = true;
        if (e->busy && wg_cpu_busy_mtime(w->proc_root, e->pid, e->busy, &e->busy_new) < 0)
            e->busy_new = 0;
    }
}

static void read_done(uv_work_t *req, int status)
{
    struct wg_cpu_watch *w = req->data;

    (void)status;
    if (returned(w))
        return;
    w->st.last_read_ms = (double)(uv_hrtime() - w->read_t0) / 1e6;
    w->st.files_read += w->pass_files;
    w->st.file_errors += w->pass_file_errors;
    w->pass_files = w->pass_file_errors = 0;
    w->next = 0;
    step_stats(w);
}

static void step_read(struct wg_cpu_watch *w)
{
    bool any = false;

    for (size_t i = 0; i < w->n && !any; i++)
        any = !w->ents[i].api && (w->ents[i].path || w->ents[i].pid > 0);
    if (!any) {
        w->next = 0;
        step_stats(w);
        return;
    }
    w->work.data = w;
    w->read_t0 = uv_hrtime();
    if (uv_queue_work(w->loop, &w->work, read_work, read_done) < 0) {
        pass_end(w, false);
        return;
    }
    w->refs++;
}

static void on_stats(int status, const struct wg_docker_reply *r, void *arg);

static void step_stats(struct wg_cpu_watch *w)
{
    while (w->next < w->n && w->in_flight < w->o.stats_concurrency) {
        struct cpu_ent *e = &w->ents[w->next++];
        struct ent_call *ec;
        if (!e->api || !(ec = ent_call_new(w, e)))
            continue;
        if (wg_docker_stats(w->docker, e->container, on_stats, ec) < 0) {
            free(ec);
            continue;
        }
        w->refs++;
        w->in_flight++;
        w->calls++;
        w->st.stats_calls++;
    }
    if (w->in_flight == 0 && w->next >= w->n) {
        decide(w);
        pass_end(w, true);
    }
}

static void on_stats(int status, const struct wg_docker_reply *r, void *arg)
{
    struct ent_call *ec = arg;
    struct wg_cpu_watch *w = ec->w;
    bool closed;
    struct cpu_ent *e = ent_call_end(ec, &closed);

    if (closed)
        return;
    if (e && status == 0) {
        e->new_usage = r->cpu_usage_ns;
        e->new_at = uv_hrtime();
        e->fresh = true;
    } else if (e) {
        WG_DEBUG(w->log, CPU_SUBSYS, "stats call failed", "container=%.12s docker=\"%s\"",
                 e->container, r->error);
    }
    step_stats(w);
}

static int pass_begin(struct wg_cpu_watch *w)
{
    if (w->busy)
        return -EBUSY;
    if (wg_docker_list_running(w->docker, WG_LABEL_SESSION, on_list, w) < 0)
        return -EIO;
    w->busy = true;
    w->t0 = uv_hrtime();
    w->st.last_list_ms = w->st.last_read_ms = 0;
    w->calls = 1;
    w->st.list_calls++;
    w->refs++;
    return 0;
}

static void timer_cb(uv_timer_t *h)
{
    struct wg_cpu_watch *w = h->data;

    if (!w->closed)
        (void)pass_begin(w); /* a pass still at work: this tick is skipped */
}

static void timer_closed(uv_handle_t *h)
{
    unref(h->data);
}

/* ---- the API --------------------------------------------------------------------------------- */

int wg_cpu_watch_new(uv_loop_t *loop, struct wg_docker *docker, struct wg_log *log,
                     const struct wg_cpu_watch_opts *opts, struct wg_cpu_watch **ret)
{
    struct wg_cpu_watch *w;

    if (!loop || !docker || !opts)
        return -EINVAL;
    w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->loop = loop;
    w->docker = docker;
    w->log = log;
    w->o = *opts;
    if (!w->o.stats_concurrency)
        w->o.stats_concurrency = 8;
    w->proc_root = strdup(opts->proc_root ? opts->proc_root : "/proc");
    w->cgroup_root = strdup(opts->cgroup_root ? opts->cgroup_root : "/sys/fs/cgroup");
    if (!w->proc_root || !w->cgroup_root) {
        free(w->proc_root);
        free(w->cgroup_root);
        free(w);
        return -ENOMEM;
    }
    w->o.proc_root = w->o.cgroup_root = NULL;
    w->refs = 2; /* live + the timer */
    uv_timer_init(loop, &w->timer);
    w->timer.data = w;
    *ret = w;
    return 0;
}

void wg_cpu_watch_start(struct wg_cpu_watch *w)
{
    if (w && !w->closed && w->o.interval_ms && !uv_is_active((uv_handle_t *)&w->timer))
        uv_timer_start(&w->timer, timer_cb, w->o.interval_ms, w->o.interval_ms);
}

void wg_cpu_watch_stop(struct wg_cpu_watch *w)
{
    if (w && !w->closed)
        uv_timer_stop(&w->timer);
}

int wg_cpu_watch_pass(struct wg_cpu_watch *w, wg_cpu_pass_fn *done, void *arg)
{
    int rc;

    if (!w || w->closed)
        return -EINVAL;
    rc = pass_begin(w);
    if (rc == 0) {
        w->done = done;
        w->done_arg = arg;
    }
    return rc;
}

void wg_cpu_watch_free(struct wg_cpu_watch *w)
{
    if (!w || w->closed)
        return;
    w->closed = true;
    if (w->busy)
        uv_cancel((uv_req_t *)&w->work); /* fails harmlessly when not queued */
    uv_close((uv_handle_t *)&w->timer, timer_closed);
    unref(w);
}

void wg_cpu_watch_get_stats(const struct wg_cpu_watch *w, struct wg_cpu_watch_stats *out)
{
    if (w)
        *out = w->st;
    else
        memset(out, 0, sizeof(*out));
}

void wg_cpu_watch_metrics(const struct wg_cpu_watch *w, struct wg_buf *out)
{
    const struct wg_cpu_watch_stats *s = &w->st;

    wg_buf_appendf(
        out,
        "# HELP wakegate_cpu_sample_passes_total Passes of the CPU sampler, by result.\n"
        "# TYPE wakegate_cpu_sample_passes_total counter\n"
        "wakegate_cpu_sample_passes_total{result=\"ok\"} %" PRIu64 "\n"
        "wakegate_cpu_sample_passes_total{result=\"failed\"} %" PRIu64 "\n"
        "# HELP wakegate_cpu_sample_calls_total Docker calls of the CPU sampler, by kind.\n"
        "# TYPE wakegate_cpu_sample_calls_total counter\n"
        "wakegate_cpu_sample_calls_total{call=\"list\"} %" PRIu64 "\n"
        "wakegate_cpu_sample_calls_total{call=\"inspect\"} %" PRIu64 "\n"
        "wakegate_cpu_sample_calls_total{call=\"stats\"} %" PRIu64 "\n"
        "# HELP wakegate_cpu_sample_files_total cgroup files the CPU sampler read, by result.\n"
        "# TYPE wakegate_cpu_sample_files_total counter\n"
        "wakegate_cpu_sample_files_total{result=\"ok\"} %" PRIu64 "\n"
        "wakegate_cpu_sample_files_total{result=\"error\"} %" PRIu64 "\n"
        "# HELP wakegate_cpu_active_total Sessions marked active by their CPU use.\n"
        "# TYPE wakegate_cpu_active_total counter\n"
        "wakegate_cpu_active_total %" PRIu64 "\n"
        "# HELP wakegate_busy_file_active_total Sessions marked active by their busy file.\n"
        "# TYPE wakegate_busy_file_active_total counter\n"
        "wakegate_busy_file_active_total %" PRIu64 "\n"
        "# HELP wakegate_cpu_sample_running Running containers the last pass sampled.\n"
        "# TYPE wakegate_cpu_sample_running gauge\n"
        "wakegate_cpu_sample_running %zu\n"
        "# HELP wakegate_cpu_sample_last_pass_seconds Duration of the last pass.\n"
        "# TYPE wakegate_cpu_sample_last_pass_seconds gauge\n"
        "wakegate_cpu_sample_last_pass_seconds %.6f\n",
        s->passes - s->failed_passes, s->failed_passes, s->list_calls, s->inspect_calls,
        s->stats_calls, s->files_read - s->file_errors, s->file_errors, s->active, s->busy,
        s->running, s->last_pass_ms / 1000.0);
}
