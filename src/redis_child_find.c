/* src/redis_child_find.c - finding the private redis-server's program (see
 * redis_child.h). The configuration records redis.private.server as written;
 * which file that names is a question for the process that will exec it. */
#include "src/redis_child.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/config.h"

/* Where a redis-server named without a slash is looked for when PATH is unset. */
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static const char hint[] =
    "install it with \"apt-get install redis-server\", set redis.url to use another "
    "Redis, or set redis.private.enabled: false to run without Redis";

/* Writes "FILE:LINE: redis.private.server: ...", or without the file and line
 * when the file did not set the key. Returns -EINVAL. */
static int server_error(const struct wg_config *cfg, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int server_error(const struct wg_config *cfg, char *err, size_t errlen, const char *fmt, ...)
{
    int line = cfg->redis_private.server_line;
    char msg[WG_CONFIG_ERR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (errlen == 0)
        return -EINVAL;
    if (line > 0 && cfg->path != NULL)
        snprintf(err, errlen, "%s:%d: redis.private.server: %s", cfg->path, line, msg);
    else
        snprintf(err, errlen, "redis.private.server: %s", msg);
    return -EINVAL;
}

/* 0 when path is a regular file we may execute; else -errno. */
static int check_executable(const char *path)
{
    struct stat st;

    if (stat(path, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -EACCES;
    return access(path, X_OK) < 0 ? -errno : 0;
}

/* dir[0..dirlen) + "/" + name in a new string. */
static char *join_path(const char *dir, size_t dirlen, const char *name)
{
    size_t n = dirlen + 1 + strlen(name) + 1;
    char *s = malloc(n);

    if (s != NULL)
        snprintf(s, n, "%.*s/%s", (int)dirlen, dir, name);
    return s;
}

/* A name with a slash is a path: made absolute, symlinks kept. */
static int find_path(const struct wg_config *cfg, const char *name, char **ret_path, char *err,
                     size_t errlen)
{
    char cwd[PATH_MAX];
    char *cand;
    int r;

    if (name[0] == '/') {
        cand = strdup(name);
    } else {
        if (getcwd(cwd, sizeof cwd) == NULL)
            return server_error(cfg, err, errlen, "cannot resolve \"%s\": %s", name,
                                strerror(errno));
        cand = join_path(cwd, strlen(cwd), name);
    }
    if (cand == NULL)
        return -ENOMEM;
    r = check_executable(cand);
    if (r < 0) {
        server_error(cfg, err, errlen, "redis-server \"%s\" cannot be run: %s; %s", cand,
                     r == -EACCES ? "not an executable file" : strerror(-r), hint);
        free(cand);
        return -EINVAL;
    }
    *ret_path = cand;
    return 0;
}

/* A bare name is looked up in PATH, as exec would. */
static int find_in_path(const struct wg_config *cfg, const char *name, char **ret_path, char *err,
                        size_t errlen)
{
    const char *path = getenv("PATH");
    char *cand;

    if (path == NULL || path[0] == '\0')
        path = DEFAULT_PATH;
    for (const char *p = path; *p != '\0'; p += *p == ':') {
        size_t n = strcspn(p, ":");

        /* Relative PATH entries would depend on the working directory. */
        if (n > 0 && p[0] == '/') {
            cand = join_path(p, n, name);
            if (cand == NULL)
                return -ENOMEM;
            if (check_executable(cand) == 0) {
                *ret_path = cand;
                return 0;
            }
            free(cand);
        }
        p += n;
    }
    return server_error(cfg, err, errlen, "\"%s\" not found in PATH (%s); %s", name, path, hint);
}

int app_redis_child_find_server(const struct wg_config *cfg, char **ret_path, char *err,
                                size_t errlen)
{
    const char *name = cfg->redis_private.server;
    int r;

    *ret_path = NULL;
    if (!cfg->redis_private.active)
        return 0;
    if (strchr(name, '/') != NULL)
        r = find_path(cfg, name, ret_path, err, errlen);
    else
        r = find_in_path(cfg, name, ret_path, err, errlen);
    if (r == -ENOMEM && errlen > 0)
        snprintf(err, errlen, "configuration: out of memory");
    return r;
}
