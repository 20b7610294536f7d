/* src/redis_child.h - the private redis-server: when no redis.url is set and
 * redis.private.enabled is true (the default), wakegate starts a redis-server
 * of its own and supervises it (redis.private in docs/configuration.md).
 *
 * The configuration has already pointed cfg.redis_url at the server's socket
 * (wg_config_validate()), so every Redis client of the process connects
 * there without knowing that the server is private. It records
 * redis.private.server as written; app_redis_child_find_server() finds the
 * program, before anything starts (and for --check-config).
 *
 * redis.private.dir holds (both directories mode 0700 and ours):
 *   appendonlydir/          the AOF, with appendonly: true
 *   run/redis.conf          written at every start: port 0 (no TCP listener),
 *                           unixsocket run/redis.sock (mode 0700), appendonly
 *   run/redis.sock          the only way in
 *   run/redis-server.pid    the child's pid, for the next start
 *   run/wakegate.lock       flock()ed by the wakegate that uses the directory
 *
 * Start: takes the lock (another live wakegate on the same directory is a
 * configuration conflict), stops a redis-server left by an earlier wakegate
 * that was killed (the pid in run/redis-server.pid, and only when
 * /proc/PID says it is a redis-server serving our socket or config), refuses
 * a server it did not start that answers on the socket, writes the config,
 * spawns the server and waits, running the loop so its output is logged,
 * until the socket answers PING (redis.private.start_timeout). Waiting here
 * instead of leaving it to the reconnecting clients means the parts that
 * need Redis start against a server that answers (no "Redis unreachable"
 * at every start, no first commands failing), and a server that cannot
 * start (a bad directory, a broken AOF) stops startup with its own words.
 *
 * The child runs in a session of its own (a Ctrl-C to wakegate's process
 * group reaches wakegate only, which drains with Redis still up), and under
 * setpriv --pdeathsig TERM (util-linux, essential in Debian) when
 * /usr/bin/setpriv exists, so the kernel stops it if wakegate dies, even by
 * SIGKILL; the pid file covers the rest (setpriv missing, a kill between
 * fork and prctl).
 *
 * Supervision: its stdout and stderr become log lines (subsystem
 * "redis-server", one per line, lines cut at APP_REDIS_CHILD_LINE_MAX, at
 * most APP_REDIS_CHILD_LINES_PER_S per second). An unexpected exit is
 * logged with its status and last lines, and the server is started again
 * after a backoff (APP_REDIS_CHILD_BACKOFF_MIN_MS doubling to ..._MAX_MS;
 * back to the minimum after a run of APP_REDIS_CHILD_STABLE_MS); the Redis
 * clients reconnect by themselves. /readyz is not ready while it is down;
 * /metrics has wakegate_redis_private_up and
 * wakegate_redis_private_restarts_total. */
#ifndef WG_SRC_REDIS_CHILD_H
#define WG_SRC_REDIS_CHILD_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

struct app;
struct app_redis_child; /* opaque */
struct wg_config;

#define APP_REDIS_CHILD_BACKOFF_MIN_MS 100
#define APP_REDIS_CHILD_BACKOFF_MAX_MS 5000
#define APP_REDIS_CHILD_STABLE_MS 10000
#define APP_REDIS_CHILD_LINE_MAX 1024
#define APP_REDIS_CHILD_LINES_PER_S 100

/* Finds redis.private.server as exec would (src/redis_child_find.c): a name
 * with a slash is a path, made absolute with its symlinks kept (redis-server
 * picks its mode from argv[0], and Debian's is a link to redis-check-rdb); a
 * bare name is looked up in PATH. Returns 0 with *ret_path set (malloc'd;
 * NULL unless cfg->redis_private.active), -EINVAL with
 * "FILE:LINE: redis.private.server: ..." in err (naming the Debian package),
 * or -ENOMEM. Creates and starts nothing. */
int app_redis_child_find_server(const struct wg_config *cfg, char **ret_path, char *err,
                                size_t errlen);

/* Does nothing unless app->cfg.redis_private.active; else starts the server
 * app->redis_server (app_redis_child_find_server()'s)
 * as described above. Call it before anything connects to Redis. Returns 0;
 * -EBUSY when the directory belongs to another wakegate or a server wakegate
 * did not start answers on the socket (a configuration conflict: exit 3);
 * another -errno when the directory cannot be prepared or the server does
 * not start or answer. Each failure is logged. app->redis_child is set as
 * soon as there is something to clean up, so app_redis_child_free() undoes
 * a failed start too. */
int app_redis_child_start(struct app *app);

/* NULL-safe and idempotent; sets app->redis_child to NULL. Call it after the
 * Redis clients are freed. Sends SIGTERM (redis-server then writes its AOF
 * and exits), SIGKILL after redis.private.stop_timeout. The object frees
 * itself once the child has exited and its handles are closed: the loop
 * must run on, and it does not end before the child is gone. Until then it
 * keeps SIGTERM and SIGINT handled (main's handles are closed by then), so a
 * late stop signal does not kill wakegate while the child writes its AOF. */
void app_redis_child_free(struct app *app);

/* Whether a failed app_redis_child_start() is for the operator to fix in the
 * configuration (exit code 3): the directory (its owner, its permissions, a
 * read-only file system, its length), another wakegate on it, or a server
 * wakegate did not start on its socket. Otherwise (the server exited or did
 * not answer while starting, no memory) it is a runtime failure. */
static inline bool app_redis_child_config_error(int r)
{
    return r == -EBUSY || r == -EPERM || r == -EACCES || r == -EROFS || r == -ENAMETOOLONG ||
           r == -ENOTDIR || r == -EEXIST || r == -ENOENT || r == -ELOOP;
}

#endif
