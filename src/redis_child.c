/* src/redis_child.c - the private redis-server: directories, stale servers,
 * spawn, output, supervision and stop. See redis_child.h. */
#include "src/redis_child.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/log.h"
#include "admin/listener.h"
#include "src/app.h"

#define SUBSYS "redis-server"
#define SETPRIV "/usr/bin/setpriv"
/* The child's whole environment: it needs nothing of ours, and ours holds
 * secrets (WAKEGATE_ADMIN_TOKEN). */
#define CHILD_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
/* After the child exits, how long its last output may take to arrive (a
 * forked AOF rewrite may hold the pipes open longer; it is not waited for). */
#define DRAIN_MS 200
/* One PING attempt on the socket while starting. */
#define PING_TIMEOUT_MS 200
#define PING_EVERY_MS 10
/* A stale server that ignored SIGTERM gets SIGKILL, then this long to go. */
#define STALE_KILL_WAIT_MS 2000
#define TAIL_LINES 5
#define TAIL_LINE_MAX 200
#define READ_CHUNK 4096

enum rc_state {
    RC_NONE,     /* nothing spawned yet */
    RC_RUNNING,  /* the child runs (while starting: not answered PING yet) */
    RC_EXITED,   /* [transient] it exited; its last output drains for DRAIN_MS */
    RC_BACKOFF,  /* [transient] waiting to start it again */
    RC_FAILED,   /* it exited while wakegate was starting: not restarted */
    RC_STOPPING, /* [transient] SIGTERM sent; SIGKILL at stop_timeout */
    RC_STOPPED,
};

struct child_run;

/* One of the child's output pipes, cut into lines. */
struct out_stream {
    uv_pipe_t pipe;
    struct child_run *run;
    bool open; /* reading; false once closing */
    size_t len;
    bool cut; /* the current line was longer than the cap: the rest is dropped */
    char line[APP_REDIS_CHILD_LINE_MAX + 1];
    char rd[READ_CHUNK];
};

/* One spawned process. It owns its handles and frees itself when the last
 * one has closed; the supervisor only points at the current one. */
struct child_run {
    struct app_redis_child *rc;
    uv_process_t proc;
    struct out_stream out[2];
    unsigned open; /* handles not yet closed */
    int pid;
    uint64_t started_ms;
    bool exited, settled;
    int64_t exit_status;
    int term_signal;
};

struct app_redis_child {
    uv_loop_t *loop;
    struct wg_log *log;
    struct app *app; /* for its stop-signal handles; valid until closing */
    char *server;
    char dir[PATH_MAX], run_dir[PATH_MAX], sock[PATH_MAX], conf[PATH_MAX], pidfile[PATH_MAX],
        lockfile[PATH_MAX];
    bool appendonly;
    bool setpriv;
    uint64_t stop_timeout_ms;
    int lock_fd;
    enum rc_state state;
    bool starting;         /* inside app_redis_child_start(): an exit is a failure, not a restart */
    bool closing;          /* app_redis_child_free() ran */
    struct child_run *run; /* the current process, NULL while there is none */
    unsigned runs;         /* runs not yet freed */
    uv_timer_t timer;      /* drain, restart backoff or stop deadline: one at a time */
    /* SIGTERM and SIGINT, and what starts them; unreferenced: see on_signal(). */
    uv_signal_t sig[2];
    uv_prepare_t arm;
    unsigned handles; /* of the four above, not yet closed */
    uint64_t restarts;
    uint64_t backoff_ms;
    /* The last lines, for the report of an exit. */
    char tail[TAIL_LINES][TAIL_LINE_MAX + 1];
    unsigned tail_next, tail_len;
    /* Output rate cap. */
    uint64_t window_ms;
    unsigned window_lines;
    uint64_t suppressed;
};

/* ------------------------------------------------------------------------ */
/* Output.                                                                   */

static const char *redis_level(char c)
{
    switch (c) {
    case '.':
        return "debug";
    case '-':
        return "verbose";
    case '*':
        return "notice";
    case '#':
        return "warning";
    default:
        return NULL;
    }
}

/* Redis writes "PID:ROLE DD Mon YYYY HH:MM:SS.mmm LEVEL text". Finds the
 * pid, the level character and the text; false for any other line. */
static bool parse_redis_line(const char *s, long *ret_pid, char *ret_level, const char **ret_text)
{
    const char *p = s;
    long pid = 0;
    int words = 0;

    if (*p < '0' || *p > '9')
        return false;
    while (*p >= '0' && *p <= '9' && pid < 100000000)
        pid = pid * 10 + (*p++ - '0');
    if (*p++ != ':' || *p == '\0' || *p == ' ' || p[1] != ' ')
        return false;
    p += 2;
    /* Day, month, year and time. */
    while (words < 4) {
        const char *sp = strchr(p, ' ');

        if (sp == NULL || sp == p)
            return false;
        p = sp + 1;
        words++;
    }
    if (redis_level(*p) == NULL || p[1] != ' ')
        return false;
    *ret_pid = pid;
    *ret_level = *p;
    *ret_text = p + 2;
    return true;
}

static void tail_push(struct app_redis_child *rc, const char *text)
{
    snprintf(rc->tail[rc->tail_next], sizeof rc->tail[0], "%s", text);
    rc->tail_next = (rc->tail_next + 1) % TAIL_LINES;
    if (rc->tail_len < TAIL_LINES)
        rc->tail_len++;
}

/* The last lines, oldest first, joined by " | " and quoted for the log. */
static void tail_quoted(const struct app_redis_child *rc, char *out, size_t outlen)
{
    char joined[TAIL_LINES * (TAIL_LINE_MAX + 3) + 1];
    size_t len = 0;

    joined[0] = '\0';
    for (unsigned i = 0; i < rc->tail_len; i++) {
        unsigned k = (rc->tail_next + TAIL_LINES - rc->tail_len + i) % TAIL_LINES;

        len += (size_t)snprintf(joined + len, sizeof joined - len, "%s%s", i ? " | " : "",
                                rc->tail[k]);
        if (len >= sizeof joined)
            len = sizeof joined - 1;
    }
    wg_log_quote(out, outlen, joined, len);
}

static void emit_line(struct child_run *run, char *line, size_t len, bool cut)
{
    struct app_redis_child *rc = run->rc;
    char quoted[2 * APP_REDIS_CHILD_LINE_MAX + 16];
    const char *text;
    char level;
    long pid;
    uint64_t now = (uint64_t)wg_clock_mono_ms();

    if (len > 0 && line[len - 1] == '\r')
        len--;
    line[len] = '\0';
    if (len == 0 && !cut)
        return;
    if (!parse_redis_line(line, &pid, &level, &text)) {
        pid = run->pid;
        level = 0;
        text = line;
    }
    tail_push(rc, text);
    if (now - rc->window_ms >= 1000) {
        if (rc->suppressed > 0)
            WG_WARN(rc->log, SUBSYS, "output lines dropped over the rate cap",
                    "dropped=%" PRIu64 " cap_per_s=%u", rc->suppressed,
                    APP_REDIS_CHILD_LINES_PER_S);
        rc->window_ms = now;
        rc->window_lines = 0;
        rc->suppressed = 0;
    }
    if (rc->window_lines >= APP_REDIS_CHILD_LINES_PER_S) {
        rc->suppressed++;
        return;
    }
    rc->window_lines++;
    wg_log_quote(quoted, sizeof quoted, text, strlen(text));
    if (level != 0)
        WG_INFO(rc->log, SUBSYS, "output", "pid=%ld redis_level=%s text=%s%s", pid,
                redis_level(level), quoted, cut ? " cut=true" : "");
    else
        WG_INFO(rc->log, SUBSYS, "output", "pid=%ld text=%s%s", pid, quoted,
                cut ? " cut=true" : "");
}

static void run_handle_closed(uv_handle_t *h);
static void run_settle(struct child_run *run);

static void stream_close(struct out_stream *os)
{
    if (!os->open)
        return;
    os->open = false;
    if (os->len > 0 || os->cut)
        emit_line(os->run, os->line, os->len, os->cut);
    os->len = 0;
    os->cut = false;
    uv_close((uv_handle_t *)&os->pipe, run_handle_closed);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct out_stream *os = h->data;

    (void)hint;
    buf->base = os->rd;
    buf->len = sizeof os->rd;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct out_stream *os = s->data;
    struct child_run *run = os->run;
    const char *p = buf->base, *end = buf->base + (nread > 0 ? nread : 0);

    if (nread < 0) {
        /* EOF (or an error, which ends the output just the same). */
        stream_close(os);
        if (run->exited && !run->out[0].open && !run->out[1].open && !run->settled &&
            run == run->rc->run) {
            uv_timer_stop(&run->rc->timer);
            run_settle(run);
        }
        return;
    }
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)((nl != NULL ? nl : end) - p);
        size_t room = APP_REDIS_CHILD_LINE_MAX - os->len;

        if (n > room) {
            os->cut = true;
            n = room;
        }
        memcpy(os->line + os->len, p, n);
        os->len += n;
        if (nl == NULL)
            break;
        emit_line(run, os->line, os->len, os->cut);
        os->len = 0;
        os->cut = false;
        p = nl + 1;
    }
}

/* ------------------------------------------------------------------------ */
/* Lifetime.                                                                 */

static void maybe_free(struct app_redis_child *rc)
{
    if (!rc->closing || rc->handles > 0 || rc->runs > 0)
        return;
    if (rc->lock_fd >= 0)
        close(rc->lock_fd);
    free(rc->server);
    free(rc);
}

static void own_handle_closed(uv_handle_t *h)
{
    struct app_redis_child *rc = h->data;

    rc->handles--;
    maybe_free(rc);
}

static void close_own(struct app_redis_child *rc, uv_handle_t *h)
{
    if (h->loop != NULL && !uv_is_closing(h))
        uv_close(h, own_handle_closed);
}

/* Reached from app_redis_child_free() when no child runs, and from
 * run_settle() when the stopped child is gone; idempotent. */
static void finish(struct app_redis_child *rc)
{
    rc->state = RC_STOPPED;
    close_own(rc, (uv_handle_t *)&rc->timer);
    close_own(rc, (uv_handle_t *)&rc->sig[0]);
    close_own(rc, (uv_handle_t *)&rc->sig[1]);
    close_own(rc, (uv_handle_t *)&rc->arm);
}

static void run_handle_closed(uv_handle_t *h)
{
    struct child_run *run = h->type == UV_PROCESS ? h->data : ((struct out_stream *)h->data)->run;
    struct app_redis_child *rc = run->rc;

    if (--run->open > 0)
        return;
    if (rc->run == run)
        rc->run = NULL;
    free(run);
    rc->runs--;
    maybe_free(rc);
}

/* ------------------------------------------------------------------------ */
/* Files.                                                                    */

/* Writes text to path through a temporary file and a rename, mode 0600. */
static int write_file(const char *path, const char *text, size_t len)
{
    char tmp[PATH_MAX + 8];
    int fd, r = 0;

    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return -ENAMETOOLONG;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    while (len > 0) {
        ssize_t n = write(fd, text, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            break;
        }
        text += n;
        len -= (size_t)n;
    }
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0)
        unlink(tmp);
    return r;
}

/* A pid read from a file, or 0. */
static int read_pid(const char *path)
{
    char buf[32];
    ssize_t n;
    long pid = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    for (char *p = buf; *p >= '0' && *p <= '9' && pid < INT_MAX / 10; p++)
        pid = pid * 10 + (*p - '0');
    return pid > 1 ? (int)pid : 0;
}

/* mkdir -p with mode 0700 for what it creates. */
static int make_dirs(const char *path)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);

    if (n >= sizeof buf)
        return -ENAMETOOLONG;
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;

        *p = '\0';
        if (mkdir(buf, 0700) < 0 && errno != EEXIST)
            return -errno;
        *p = c;
        if (c == '\0')
            break;
    }
    return 0;
}

/* The data directory and its run/ directory, both ours; run/ is 0700. */
static int prepare_dirs(struct app_redis_child *rc)
{
    struct stat st;
    int r;

    r = make_dirs(rc->run_dir);
    if (r < 0) {
        WG_ERROR(rc->log, SUBSYS, "cannot create redis.private.dir", "dir=%s error=\"%s\"",
                 rc->run_dir, strerror(-r));
        return r;
    }
    if (stat(rc->dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
        WG_ERROR(rc->log, SUBSYS, "redis.private.dir must be a directory owned by wakegate's user",
                 "dir=%s uid=%u", rc->dir, (unsigned)geteuid());
        return -EPERM;
    }
    if ((st.st_mode & 077) != 0)
        WG_WARN(rc->log, SUBSYS,
                "redis.private.dir is open to other users; the session records in it are not",
                "dir=%s mode=%04o", rc->dir, (unsigned)(st.st_mode & 07777));
    /* Not followed: nobody else gets to put the socket somewhere else. */
    if (lstat(rc->run_dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
        WG_ERROR(rc->log, SUBSYS,
                 "the runtime directory must be a directory owned by wakegate's user",
                 "dir=%s uid=%u", rc->run_dir, (unsigned)geteuid());
        return -EPERM;
    }
    if ((st.st_mode & 07777) != 0700 && chmod(rc->run_dir, 0700) < 0) {
        r = -errno;
        WG_ERROR(rc->log, SUBSYS, "cannot make the runtime directory private",
                 "dir=%s error=\"%s\"", rc->run_dir, strerror(-r));
        return r;
    }
    return 0;
}

/* One wakegate per directory: the lock lives as long as this process (the
 * child does not inherit it). */
static int take_lock(struct app_redis_child *rc)
{
    char buf[32];
    int fd, n;

    fd = open(rc->lockfile, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        WG_ERROR(rc->log, SUBSYS, "cannot open the lock file", "file=%s error=\"%s\"", rc->lockfile,
                 strerror(errno));
        return -errno;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;

        close(fd);
        if (e == EWOULDBLOCK) {
            WG_ERROR(rc->log, SUBSYS,
                     "redis.private.dir is used by another wakegate: give each its own "
                     "directory, or share a Redis through redis.url",
                     "dir=%s other_pid=%d", rc->dir, read_pid(rc->lockfile));
            return -EBUSY;
        }
        WG_ERROR(rc->log, SUBSYS, "cannot lock redis.private.dir", "file=%s error=\"%s\"",
                 rc->lockfile, strerror(e));
        return -e;
    }
    n = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n)
        WG_WARN(rc->log, SUBSYS, "cannot write our pid into the lock file", "file=%s error=\"%s\"",
                rc->lockfile, strerror(errno));
    rc->lock_fd = fd;
    return 0;
}

/* Whether the socket accepts a connection; with ping, whether it answers
 * PING with PONG (not while Redis is still loading its data). */
static bool socket_answers(const char *path, bool ping)
{
    struct sockaddr_un sun;
    struct timeval tv = {.tv_sec = 0, .tv_usec = PING_TIMEOUT_MS * 1000};
    char buf[64];
    size_t got = 0;
    bool ok = false;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return false;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0)
        goto out;
    if (!ping) {
        ok = true;
        goto out;
    }
    if (send(fd, "PING\r\n", 6, MSG_NOSIGNAL) != 6)
        goto out;
    while (got < sizeof buf && memchr(buf, '\n', got) == NULL) {
        ssize_t n = recv(fd, buf + got, sizeof buf - got, 0);

        if (n <= 0)
            break;
        got += (size_t)n;
    }
    ok = got >= 5 && memcmp(buf, "+PONG", 5) == 0;
out:
    close(fd);
    return ok;
}

/* /proc/PID/<what> into buf, NUL-terminated. Returns the bytes read, or
 * <= 0 when the process is gone or the file unreadable. */
static ssize_t read_proc(int pid, const char *what, char *buf, size_t len)
{
    char path[64];
    ssize_t n;
    int fd;

    snprintf(path, sizeof path, "/proc/%d/%s", pid, what);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    n = read(fd, buf, len - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    return n;
}

/* Whether /proc/PID is a redis-server set up as this directory's server:
 * its executable is a redis binary and its command line names our socket
 * (the process title we configure: "redis-server unixsocket:PATH") or our
 * config file (before the title is set). */
static bool is_our_server(const struct app_redis_child *rc, int pid)
{
    char path[64], exe[PATH_MAX], cmd[4096];
    const char *base, *hit;
    size_t want;
    ssize_t n;

    snprintf(path, sizeof path, "/proc/%d/exe", pid);
    n = readlink(path, exe, sizeof exe - 1);
    if (n <= 0)
        return false;
    exe[n] = '\0';
    base = strrchr(exe, '/');
    base = base != NULL ? base + 1 : exe;
    /* Debian's redis-server is a link to redis-check-rdb. */
    if (strncmp(base, "redis-", 6) != 0)
        return false;
    n = read_proc(pid, "cmdline", cmd, sizeof cmd);
    if (n <= 0)
        return false;
    for (ssize_t i = 0; i < n; i++)
        if (cmd[i] == '\0')
            cmd[i] = ' ';
    cmd[n] = '\0';
    for (hit = cmd; (hit = strstr(hit, "unixsocket:")) != NULL; hit++) {
        want = strlen(rc->sock);
        if (strncmp(hit + 11, rc->sock, want) == 0 &&
            (hit[11 + want] == ' ' || hit[11 + want] == '\0'))
            return true;
    }
    want = strlen(rc->conf);
    for (hit = cmd; (hit = strstr(hit, rc->conf)) != NULL; hit++)
        if (hit > cmd && hit[-1] == ' ' && (hit[want] == ' ' || hit[want] == '\0'))
            return true;
    return false;
}

/* Gone, or a zombie (dead; its parent reaps it). */
static bool process_gone(int pid)
{
    char buf[256], *p;

    if (kill(pid, 0) < 0 && errno == ESRCH)
        return true;
    if (read_proc(pid, "stat", buf, sizeof buf) <= 0)
        return true;
    p = strrchr(buf, ')');
    return p != NULL && p[1] == ' ' && p[2] == 'Z';
}

static bool wait_gone(int pid, uint64_t ms)
{
    uint64_t deadline = (uint64_t)wg_clock_mono_ms() + ms;

    while (!process_gone(pid)) {
        if ((uint64_t)wg_clock_mono_ms() >= deadline)
            return false;
        poll(NULL, 0, PING_EVERY_MS);
    }
    return true;
}

/* A redis-server of an earlier wakegate that died without stopping it. We
 * hold the lock, so no live wakegate owns it. Blocking: runs before the
 * loop does anything. */
static int stop_stale(struct app_redis_child *rc)
{
    int pid = read_pid(rc->pidfile);

    if (pid > 0 && pid != getpid() && !process_gone(pid)) {
        if (!is_our_server(rc, pid)) {
            WG_INFO(rc->log, SUBSYS,
                    "the pid file names a process that is not our redis-server; leaving it alone",
                    "pidfile=%s pid=%d", rc->pidfile, pid);
        } else {
            WG_WARN(rc->log, SUBSYS, "stopping the redis-server an earlier wakegate left running",
                    "pid=%d socket=%s", pid, rc->sock);
            kill(pid, SIGTERM);
            if (!wait_gone(pid, rc->stop_timeout_ms)) {
                WG_WARN(rc->log, SUBSYS, "the stale redis-server ignored SIGTERM, killing it",
                        "pid=%d timeout_ms=%" PRIu64, pid, rc->stop_timeout_ms);
                kill(pid, SIGKILL);
                if (!wait_gone(pid, STALE_KILL_WAIT_MS)) {
                    WG_ERROR(rc->log, SUBSYS, "the stale redis-server does not go away", "pid=%d",
                             pid);
                    return -EBUSY;
                }
            }
        }
    }
    unlink(rc->pidfile);
    if (socket_answers(rc->sock, false)) {
        WG_ERROR(rc->log, SUBSYS,
                 "a server wakegate did not start answers on the private socket; stop it or "
                 "choose another redis.private.dir",
                 "socket=%s", rc->sock);
        return -EBUSY;
    }
    return 0;
}

/* A value for redis.conf, double-quoted. Returns 0 or -ENOMEM/-E2BIG. */
static int conf_quote(struct wg_buf *b, const char *s)
{
    int r = wg_buf_append(b, "\"", 1);

    for (; *s != '\0' && r == 0; s++) {
        if (*s == '"' || *s == '\\')
            r = wg_buf_append(b, "\\", 1);
        if (r == 0)
            r = wg_buf_append(b, s, 1);
    }
    return r < 0 ? r : wg_buf_append(b, "\"", 1);
}

static int write_conf(struct app_redis_child *rc)
{
    struct wg_buf b;
    int r;

    wg_buf_init(&b, 64 * 1024);
    r = wg_buf_appendf(&b, "# Written by wakegate at every start of its private redis-server: "
                           "edits are lost.\n# See redis.private in wakegate's "
                           "docs/configuration.md.\n"
                           "port 0\nbind 127.0.0.1\nprotected-mode yes\nunixsocket ");
    if (r == 0)
        r = conf_quote(&b, rc->sock);
    if (r == 0)
        r = wg_buf_appendf(&b, "\nunixsocketperm 700\ndaemonize no\nsupervised no\nlogfile \"\"\n"
                               "loglevel notice\nalways-show-logo no\nset-proc-title yes\n"
                               "proc-title-template \"{title} {listen-addr} {server-mode}\"\n"
                               "dir ");
    if (r == 0)
        r = conf_quote(&b, rc->dir);
    if (r == 0)
        r = wg_buf_appendf(&b, "\nsave \"\"\nappendonly %s\nappendfsync everysec\n",
                           rc->appendonly ? "yes" : "no");
    if (r == 0)
        r = write_file(rc->conf, b.data + b.off, wg_buf_size(&b));
    wg_buf_release(&b);
    if (r < 0)
        WG_ERROR(rc->log, SUBSYS, "cannot write the redis-server config", "file=%s error=\"%s\"",
                 rc->conf, strerror(-r));
    return r;
}

static void write_pidfile(struct app_redis_child *rc, int pid)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%d\n", pid);
    int r = write_file(rc->pidfile, buf, (size_t)n);

    if (r < 0)
        WG_WARN(rc->log, SUBSYS, "cannot write the pid file; a stale server will not be found",
                "file=%s error=\"%s\"", rc->pidfile, strerror(-r));
}

/* ------------------------------------------------------------------------ */
/* Spawn and supervision.                                                    */

static void child_exited(uv_process_t *proc, int64_t exit_status, int term_signal);

/* Starts one process; on success rc->run is it. Returns 0 or -errno (the
 * caller logs). */
static int spawn_run(struct app_redis_child *rc)
{
    char *args[8], *env[] = {(char *)CHILD_PATH, NULL};
    uv_stdio_container_t stdio[3];
    uv_process_options_t opts;
    struct child_run *run;
    size_t n = 0;
    int r;

    run = calloc(1, sizeof *run);
    if (run == NULL)
        return -ENOMEM;
    run->rc = rc;
    rc->runs++;
    for (int i = 0; i < 2; i++) {
        run->out[i].run = run;
        uv_pipe_init(rc->loop, &run->out[i].pipe, 0);
        run->out[i].pipe.data = &run->out[i];
        run->out[i].open = true;
        run->open++;
    }
    if (rc->setpriv) {
        args[n++] = (char *)SETPRIV;
        args[n++] = (char *)"--pdeathsig";
        args[n++] = (char *)"TERM";
        args[n++] = (char *)"--";
    }
    args[n++] = rc->server;
    args[n++] = rc->conf;
    args[n] = NULL;
    memset(stdio, 0, sizeof stdio);
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&run->out[0].pipe;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&run->out[1].pipe;
    memset(&opts, 0, sizeof opts);
    opts.file = args[0];
    opts.args = args;
    opts.env = env;
    opts.cwd = rc->dir;
    opts.exit_cb = child_exited;
    opts.stdio_count = 3;
    opts.stdio = stdio;
    run->proc.data = run;
    /* Its own session (setsid): a signal to our process group (Ctrl-C in a
     * terminal, a script's kill of the group) reaches only wakegate, which
     * drains with Redis still up and then stops the child. The handle stays
     * referenced, so wakegate still waits for it; --pdeathsig covers a
     * wakegate that dies. */
    opts.flags = UV_PROCESS_DETACHED;
    r = uv_spawn(rc->loop, &run->proc, &opts);
    /* The handle is initialized even when the spawn failed. */
    run->open++;
    if (r < 0) {
        run->exited = run->settled = true;
        for (int i = 0; i < 2; i++) {
            run->out[i].open = false;
            uv_close((uv_handle_t *)&run->out[i].pipe, run_handle_closed);
        }
        uv_close((uv_handle_t *)&run->proc, run_handle_closed);
        return r;
    }
    run->pid = run->proc.pid;
    run->started_ms = (uint64_t)wg_clock_mono_ms();
    for (int i = 0; i < 2; i++)
        if (uv_read_start((uv_stream_t *)&run->out[i].pipe, on_alloc, on_read) < 0)
            stream_close(&run->out[i]);
    rc->run = run;
    rc->state = RC_RUNNING;
    write_pidfile(rc, run->pid);
    return 0;
}

static void on_restart(uv_timer_t *t);

static void schedule_restart(struct app_redis_child *rc)
{
    uint64_t delay = rc->backoff_ms;

    rc->backoff_ms = rc->backoff_ms * 2 > APP_REDIS_CHILD_BACKOFF_MAX_MS
                         ? APP_REDIS_CHILD_BACKOFF_MAX_MS
                         : rc->backoff_ms * 2;
    rc->state = RC_BACKOFF;
    uv_timer_start(&rc->timer, on_restart, delay, 0);
}

static void on_restart(uv_timer_t *t)
{
    struct app_redis_child *rc = t->data;
    int r;

    rc->restarts++;
    rc->tail_len = 0;
    r = spawn_run(rc);
    if (r < 0) {
        WG_ERROR(rc->log, SUBSYS, "cannot start redis-server again, retrying",
                 "error=\"%s\" restarts=%" PRIu64 " retry_in_ms=%" PRIu64, uv_strerror(r),
                 rc->restarts, rc->backoff_ms);
        schedule_restart(rc);
        return;
    }
    WG_INFO(rc->log, SUBSYS, "redis-server started again", "pid=%d restarts=%" PRIu64, rc->run->pid,
            rc->restarts);
}

/* The child has exited and its output has drained (or DRAIN_MS passed):
 * report it, then restart it, or finish a stop. */
static void run_settle(struct child_run *run)
{
    struct app_redis_child *rc = run->rc;
    char tail[TAIL_LINES * (TAIL_LINE_MAX + 3) * 2 + 8];
    uint64_t uptime = (uint64_t)wg_clock_mono_ms() - run->started_ms;

    if (run->settled)
        return;
    run->settled = true;
    stream_close(&run->out[0]);
    stream_close(&run->out[1]);
    if (rc->run == run)
        rc->run = NULL;
    if (rc->closing) {
        WG_INFO(rc->log, SUBSYS, "redis-server stopped", "pid=%d exit_status=%" PRId64 " signal=%d",
                run->pid, run->exit_status, run->term_signal);
        unlink(rc->pidfile);
        finish(rc);
        return;
    }
    unlink(rc->pidfile);
    tail_quoted(rc, tail, sizeof tail);
    if (rc->starting) {
        WG_ERROR(rc->log, SUBSYS, "redis-server exited while starting",
                 "pid=%d exit_status=%" PRId64 " signal=%d last_output=%s", run->pid,
                 run->exit_status, run->term_signal, tail);
        rc->state = RC_FAILED;
        return;
    }
    if (uptime >= APP_REDIS_CHILD_STABLE_MS)
        rc->backoff_ms = APP_REDIS_CHILD_BACKOFF_MIN_MS;
    WG_ERROR(rc->log, SUBSYS, "redis-server exited unexpectedly, restarting it",
             "pid=%d exit_status=%" PRId64 " signal=%d uptime_ms=%" PRIu64 " restart_in_ms=%" PRIu64
             " last_output=%s",
             run->pid, run->exit_status, run->term_signal, uptime, rc->backoff_ms, tail);
    schedule_restart(rc);
}

static void on_drain_deadline(uv_timer_t *t)
{
    struct app_redis_child *rc = t->data;

    if (rc->run != NULL && rc->run->exited)
        run_settle(rc->run);
}

static void child_exited(uv_process_t *proc, int64_t exit_status, int term_signal)
{
    struct child_run *run = proc->data;
    struct app_redis_child *rc = run->rc;

    run->exited = true;
    run->exit_status = exit_status;
    run->term_signal = term_signal;
    uv_close((uv_handle_t *)proc, run_handle_closed);
    if (!rc->closing)
        rc->state = RC_EXITED;
    if (!run->out[0].open && !run->out[1].open) {
        uv_timer_stop(&rc->timer);
        run_settle(run);
        return;
    }
    /* Replaces a stop deadline: there is nothing left to kill. */
    uv_timer_start(&rc->timer, on_drain_deadline, DRAIN_MS, 0);
}

static void on_stop_deadline(uv_timer_t *t)
{
    struct app_redis_child *rc = t->data;

    if (rc->run == NULL || rc->run->exited)
        return;
    WG_WARN(rc->log, SUBSYS, "redis-server did not stop in time, killing it",
            "pid=%d stop_timeout_ms=%" PRIu64, rc->run->pid, rc->stop_timeout_ms);
    uv_process_kill(&rc->run->proc, SIGKILL);
}

/* Runs the loop until the socket answers PING, the child exits or the
 * timeout passes. */
static int wait_ready(struct app_redis_child *rc, uint64_t timeout_ms)
{
    uint64_t t0 = (uint64_t)wg_clock_mono_ms(), deadline = t0 + timeout_ms;
    char tail[TAIL_LINES * (TAIL_LINE_MAX + 3) * 2 + 8];

    for (;;) {
        uv_run(rc->loop, UV_RUN_NOWAIT);
        if (rc->state == RC_FAILED)
            return -ECHILD;
        if (rc->run != NULL && !rc->run->exited && socket_answers(rc->sock, true)) {
            WG_INFO(rc->log, SUBSYS, "private redis-server ready",
                    "pid=%d socket=%s dir=%s appendonly=%s startup_ms=%" PRIu64, rc->run->pid,
                    rc->sock, rc->dir, rc->appendonly ? "true" : "false",
                    (uint64_t)wg_clock_mono_ms() - t0);
            return 0;
        }
        if ((uint64_t)wg_clock_mono_ms() >= deadline) {
            tail_quoted(rc, tail, sizeof tail);
            WG_ERROR(rc->log, SUBSYS, "redis-server did not answer PING in time",
                     "socket=%s start_timeout_ms=%" PRIu64 " last_output=%s", rc->sock, timeout_ms,
                     tail);
            return -ETIMEDOUT;
        }
        poll(NULL, 0, PING_EVERY_MS);
    }
}

/* ------------------------------------------------------------------------ */
/* Admin hooks.                                                              */

static bool child_up(const struct app_redis_child *rc)
{
    return rc->state == RC_RUNNING && rc->run != NULL && !rc->run->exited;
}

static bool child_ready(void *arg, char *why, size_t whylen)
{
    struct app_redis_child *rc = arg;

    if (child_up(rc))
        return true;
    snprintf(why, whylen, "private redis-server is not running (restarts so far: %" PRIu64 ")",
             rc->restarts);
    return false;
}

static void child_metrics(void *arg, struct wg_buf *out)
{
    struct app_redis_child *rc = arg;

    wg_buf_appendf(out,
                   "# HELP wakegate_redis_private_up Whether the private redis-server is running.\n"
                   "# TYPE wakegate_redis_private_up gauge\n"
                   "wakegate_redis_private_up %d\n"
                   "# HELP wakegate_redis_private_restarts_total Starts of the private "
                   "redis-server after it exited unexpectedly.\n"
                   "# TYPE wakegate_redis_private_restarts_total counter\n"
                   "wakegate_redis_private_restarts_total %" PRIu64 "\n",
                   child_up(rc) ? 1 : 0, rc->restarts);
}

/* ------------------------------------------------------------------------ */
/* Stop signals.                                                             */

/* main.c closes its SIGTERM/SIGINT handles when it frees the app, and the
 * child is stopped after that: with no handle left, a signal then (a
 * script's "kill -TERM" right after a Ctrl-C, say) would kill wakegate by the
 * default action while the child is still writing its AOF. So we hold
 * handles of our own until the child is gone: unreferenced (they keep no
 * loop alive), and started only once main's are (arm_signals()), so every
 * signal reaches main's too and none is swallowed at startup. */
static void on_signal(uv_signal_t *h, int signum)
{
    struct app_redis_child *rc = h->data;

    /* Before that main handles it. */
    if (rc->closing)
        WG_INFO(rc->log, SUBSYS, "stop signal while stopping redis-server, still waiting for it",
                "signal=%d stop_timeout_ms=%" PRIu64, signum, rc->stop_timeout_ms);
}

/* Runs before each loop iteration until main's stop-signal handles are
 * active, then starts ours. */
static void arm_signals(uv_prepare_t *h)
{
    struct app_redis_child *rc = h->data;

    if (rc->closing || !uv_is_active((uv_handle_t *)&rc->app->sig_term) ||
        !uv_is_active((uv_handle_t *)&rc->app->sig_int))
        return;
    uv_signal_start(&rc->sig[0], on_signal, SIGTERM);
    uv_signal_start(&rc->sig[1], on_signal, SIGINT);
    uv_unref((uv_handle_t *)&rc->sig[0]);
    uv_unref((uv_handle_t *)&rc->sig[1]);
    uv_prepare_stop(h);
}

/* ------------------------------------------------------------------------ */
/* API.                                                                      */

static int set_path(char *dst, const char *a, const char *b)
{
    return (size_t)snprintf(dst, PATH_MAX, "%s%s", a, b) >= PATH_MAX ? -ENAMETOOLONG : 0;
}

int app_redis_child_start(struct app *app)
{
    const struct wg_redis_private_cfg *p = &app->cfg.redis_private;
    struct app_redis_child *rc;
    int r;

    if (!p->active)
        return 0;
    rc = calloc(1, sizeof *rc);
    if (rc == NULL)
        return -ENOMEM;
    rc->loop = &app->loop;
    rc->log = &app->log;
    rc->lock_fd = -1;
    rc->appendonly = p->appendonly;
    rc->stop_timeout_ms = p->stop_timeout_ms;
    rc->backoff_ms = APP_REDIS_CHILD_BACKOFF_MIN_MS;
    rc->setpriv = access(SETPRIV, X_OK) == 0;
    rc->server = app->redis_server != NULL ? strdup(app->redis_server) : NULL;
    rc->app = app;
    uv_timer_init(rc->loop, &rc->timer);
    rc->timer.data = rc;
    uv_signal_init(rc->loop, &rc->sig[0]);
    uv_signal_init(rc->loop, &rc->sig[1]);
    uv_prepare_init(rc->loop, &rc->arm);
    rc->sig[0].data = rc->sig[1].data = rc->arm.data = rc;
    rc->handles = 4;
    uv_prepare_start(&rc->arm, arm_signals);
    uv_unref((uv_handle_t *)&rc->arm);
    /* From here on app_redis_child_free() undoes everything. */
    app->redis_child = rc;
    if (rc->server == NULL)
        return -ENOMEM;
    if (set_path(rc->dir, p->dir, "") < 0 || set_path(rc->run_dir, p->dir, "/run") < 0 ||
        set_path(rc->sock, p->socket_path, "") < 0 ||
        set_path(rc->conf, rc->run_dir, "/redis.conf") < 0 ||
        set_path(rc->pidfile, rc->run_dir, "/redis-server.pid") < 0 ||
        set_path(rc->lockfile, rc->run_dir, "/wakegate.lock") < 0) {
        WG_ERROR(rc->log, SUBSYS, "redis.private.dir is too long", "dir=%s", p->dir);
        return -ENAMETOOLONG;
    }
    if (!rc->setpriv)
        WG_DEBUG(rc->log, SUBSYS,
                 "no setpriv: redis-server outlives a killed wakegate until the next start",
                 "path=%s", SETPRIV);
    r = prepare_dirs(rc);
    if (r == 0)
        r = take_lock(rc);
    if (r == 0)
        r = stop_stale(rc);
    if (r == 0)
        r = write_conf(rc);
    if (r < 0)
        return r;
    rc->starting = true;
    r = spawn_run(rc);
    if (r < 0) {
        WG_ERROR(rc->log, SUBSYS, "cannot start redis-server", "server=%s error=\"%s\"", rc->server,
                 uv_strerror(r));
        rc->starting = false;
        return r;
    }
    WG_INFO(rc->log, SUBSYS, "starting the private redis-server",
            "pid=%d server=%s config=%s pdeathsig=%s", rc->run->pid, rc->server, rc->conf,
            rc->setpriv ? "TERM" : "none");
    r = wait_ready(rc, p->start_timeout_ms);
    rc->starting = false;
    if (r < 0)
        return r;
    if (app->admin != NULL) {
        wg_admin_add_ready_check(app->admin, child_ready, rc);
        wg_admin_add_metrics(app->admin, child_metrics, rc);
    }
    return 0;
}

void app_redis_child_free(struct app *app)
{
    struct app_redis_child *rc = app->redis_child;

    if (rc == NULL)
        return;
    app->redis_child = NULL;
    if (app->admin != NULL)
        wg_admin_remove_hooks(app->admin, rc);
    rc->closing = true;
    if (rc->run == NULL) {
        finish(rc);
        return;
    }
    rc->state = RC_STOPPING;
    if (rc->run->exited)
        return; /* its output drains; run_settle() finishes */
    WG_INFO(rc->log, SUBSYS, "stopping the private redis-server", "pid=%d stop_timeout_ms=%" PRIu64,
            rc->run->pid, rc->stop_timeout_ms);
    uv_process_kill(&rc->run->proc, SIGTERM);
    uv_timer_start(&rc->timer, on_stop_deadline, rc->stop_timeout_ms, 0);
}
