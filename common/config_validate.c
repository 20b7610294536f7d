/* common/config_validate.c - the checks of the whole configuration, once
 * the file, the environment and the flags are in: routes, listeners,
 * docker.tls against docker.host, admin.token_file and
 * admin.read_token_file (read here), and where
 * the private redis-server keeps its data and socket. */
#include "common/config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/config_int.h"
#include "common/docker_host.h"
#include "common/str.h"

/* A token is one line; anything bigger is the wrong file. */
#define TOKEN_FILE_MAX 4096
/* A unix socket path, NUL included, fits in sockaddr_un.sun_path. */
#define SUN_PATH_MAX 108
#define REDIS_SOCKET_SUFFIX "/run/redis.sock"

/* One token file: which key names it, where it was set, where the token
 * goes. */
struct token_src {
    const char *key;  /* "admin.token_file" */
    const char *file; /* its value */
    int line;         /* its line in cfg->path, 0 if none */
    char **dst;       /* the token read */
};

static int read_token_file(const struct wg_config *cfg, const struct token_src *t, char *err,
                           size_t errlen)
{
    const char *file = t->file;
    const char *where = t->line > 0 ? cfg->path : NULL;
    size_t line = t->line > 0 ? (size_t)t->line : 0;
    char *buf = NULL;
    struct stat st;
    size_t len = 0;
    int r = config_read_small(file, TOKEN_FILE_MAX, &st, &buf, &len);

    if ((r == -EACCES || r == -EPERM) && cfg->token_files_optional)
        return 0; /* a CLI user who holds only the other token */
    if (r == -EINVAL) {
        r = config_fail_at(err, errlen, where, line, t->key,
                           "cannot read \"%s\": not a regular file", file);
        goto out;
    }
    if (r == -EFBIG) {
        r = config_fail_at(err, errlen, where, line, t->key,
                           "\"%s\" is larger than %d bytes; it should hold only the token", file,
                           TOKEN_FILE_MAX);
        goto out;
    }
    if (r < 0) {
        r = config_fail_at(err, errlen, where, line, t->key, "cannot read \"%s\": %s", file,
                           strerror(-r));
        goto out;
    }
    /* Editors and "echo" end the file with a newline that is not part of the token. */
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    buf[len] = '\0';
    if (len == 0 || strlen(buf) != len || config_has_ctl_or_space(buf)) {
        r = config_fail_at(
            err, errlen, where, line, t->key,
            "\"%s\" must hold one token: no spaces, control characters or empty file", file);
        goto out;
    }
    r = config_replace_str(t->dst, buf);
out:
    /* The token must not linger in freed memory. */
    if (buf != NULL) {
        explicit_bzero(buf, TOKEN_FILE_MAX + 1);
        free(buf);
    }
    return r;
}

/* The admin token and the read-only token, each from the environment or
 * its file. The environment's token wins over the file: the file is read
 * only when nothing set the token itself. */
static int read_tokens(struct wg_config *cfg, char *err, size_t errlen)
{
    bool read_from_env = cfg->admin_read_token != NULL;
    const struct token_src srcs[] = {
        {"admin.token_file", cfg->admin_token_file, cfg->admin_token_file_line, &cfg->admin_token},
        {"admin.read_token_file", cfg->admin_read_token_file, cfg->admin_read_token_file_line,
         &cfg->admin_read_token},
    };
    int r = 0;

    for (size_t i = 0; i < sizeof srcs / sizeof srcs[0]; i++) {
        if (*srcs[i].dst != NULL || srcs[i].file == NULL)
            continue;
        r = read_token_file(cfg, &srcs[i], err, errlen);
        if (r < 0)
            goto out;
    }
    /* One secret for both scopes would make the read-only one a lie. Not
     * checked for the CLI, whose --token (set as the admin token) may be
     * the read-only token itself. */
    if (!cfg->token_files_optional && cfg->admin_token != NULL && cfg->admin_read_token != NULL &&
        strcmp(cfg->admin_token, cfg->admin_read_token) == 0) {
        if (read_from_env || cfg->admin_read_token_file == NULL)
            r = config_fail_at(err, errlen, NULL, 0, "environment WAKEGATE_ADMIN_READ_TOKEN",
                               "must differ from the admin token");
        else
            r = config_fail_at(
                err, errlen, cfg->admin_read_token_file_line > 0 ? cfg->path : NULL,
                cfg->admin_read_token_file_line > 0 ? (size_t)cfg->admin_read_token_file_line : 0,
                "admin.read_token_file",
                "\"%s\" holds the admin token; the "
                "read-only token must differ from it",
                cfg->admin_read_token_file);
    }
out:
    return r;
}

/* An error about a redis.private key, at its line when the file set it. */
static int fail_private(const struct wg_config *cfg, const char *key, int line, char *err,
                        size_t errlen, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int fail_private(const struct wg_config *cfg, const char *key, int line, char *err,
                        size_t errlen, const char *fmt, ...)
{
    char msg[WG_CONFIG_ERR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return config_fail_at(err, errlen, line > 0 ? cfg->path : NULL, line > 0 ? (size_t)line : 0,
                          key, "%s", msg);
}

/* The default redis.private.dir: systemd's StateDirectory=, then
 * /var/lib/wakegate/redis for root, then the XDG state directory, then a
 * directory of our own under the temporary directory. */
static int default_private_dir(char *buf, size_t len)
{
    const char *s;
    int n;

    if ((s = getenv("STATE_DIRECTORY")) != NULL && s[0] == '/')
        n = snprintf(buf, len, "%.*s/redis", (int)strcspn(s, ":"), s);
    else if (geteuid() == 0)
        n = snprintf(buf, len, "/var/lib/wakegate/redis");
    else if ((s = getenv("XDG_STATE_HOME")) != NULL && s[0] == '/')
        n = snprintf(buf, len, "%s/wakegate/redis", s);
    else if ((s = getenv("HOME")) != NULL && s[0] == '/' && s[1] != '\0')
        n = snprintf(buf, len, "%s/.local/state/wakegate/redis", s);
    else if ((s = getenv("TMPDIR")) != NULL && s[0] == '/')
        n = snprintf(buf, len, "%s/wakegate-%u/redis", s, (unsigned)geteuid());
    else
        n = snprintf(buf, len, "/tmp/wakegate-%u/redis", (unsigned)geteuid());
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* redis.private.dir made absolute, without trailing slashes, into dir
 * (PATH_MAX bytes), and checked: it goes into a unix:// URL and a generated
 * redis.conf, and its socket must fit a sockaddr_un. Returns 0 or -EINVAL
 * with err set. */
static int private_dir(const struct wg_config *cfg, char *dir, char *err, size_t errlen)
{
    const struct wg_redis_private_cfg *p = &cfg->redis_private;
    const char *key = "redis.private.dir";
    char cwd[PATH_MAX];
    size_t n;

    if (p->dir == NULL) {
        if (default_private_dir(dir, PATH_MAX) < 0)
            return fail_private(cfg, key, 0, err, errlen,
                                "the default directory is too long; set redis.private.dir");
    } else if (p->dir[0] == '/') {
        snprintf(dir, PATH_MAX, "%s", p->dir);
    } else if (getcwd(cwd, sizeof cwd) == NULL ||
               (size_t)snprintf(dir, PATH_MAX, "%s/%s", cwd, p->dir) >= PATH_MAX) {
        return fail_private(cfg, key, p->dir_line, err, errlen, "cannot make \"%s\" absolute",
                            p->dir);
    }
    n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        dir[--n] = '\0';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)dir[i];

        if (c <= ' ' || c == 0x7f || strchr("\"\\?#'", c) != NULL)
            return fail_private(cfg, key, p->dir_line, err, errlen,
                                "\"%s\" must not contain spaces, control characters, quotes, "
                                "backslashes, ? or #",
                                dir);
    }
    if (strcmp(dir, "/") == 0)
        return fail_private(cfg, key, p->dir_line, err, errlen,
                            "must be a directory of its own, not /");
    if (n + strlen(REDIS_SOCKET_SUFFIX) >= SUN_PATH_MAX)
        return fail_private(cfg, key, p->dir_line, err, errlen,
                            "the socket \"%s%s\" would be longer than the %d bytes a unix socket "
                            "path may have; choose a shorter directory",
                            dir, REDIS_SOCKET_SUFFIX, SUN_PATH_MAX - 1);
    return 0;
}

/* Without redis.url, points redis_url at the private server's socket. */
static int resolve_redis_private(struct wg_config *cfg, char *err, size_t errlen)
{
    struct wg_redis_private_cfg *p = &cfg->redis_private;
    char dir[PATH_MAX];
    char *sock = NULL, *url = NULL;
    int r = 0;

    /* A second validation of the same configuration starts over. */
    if (p->active && cfg->redis_url != NULL && p->socket_path != NULL &&
        strncmp(cfg->redis_url, "unix://", 7) == 0 &&
        strcmp(cfg->redis_url + 7, p->socket_path) == 0) {
        free(cfg->redis_url);
        cfg->redis_url = NULL;
    }
    p->active = false;
    free(p->socket_path);
    p->socket_path = NULL;
    if (cfg->redis_url != NULL || !p->enabled)
        return 0;

    r = private_dir(cfg, dir, err, errlen);
    if (r < 0)
        goto out;
    r = -ENOMEM;
    sock = wg_strf("%s%s", dir, REDIS_SOCKET_SUFFIX);
    url = sock != NULL ? wg_strf("unix://%s", sock) : NULL;
    if (url == NULL || config_replace_str(&p->dir, dir) < 0)
        goto out;
    p->socket_path = sock;
    cfg->redis_url = url;
    p->active = true;
    sock = url = NULL;
    r = 0;
out:
    free(sock);
    free(url);
    if (r == -ENOMEM)
        config_fail_at(err, errlen, NULL, 0, "configuration", "out of memory");
    return r;
}

int wg_config_validate(struct wg_config *cfg, char *err, size_t errlen)
{
    int r = 0;

    for (size_t i = 0; i < cfg->routes_len; i++) {
        r = config_check_route(cfg, i, err, errlen);
        if (r < 0)
            goto out;
    }
    if (cfg->listen.salen == 0) {
        r = config_fail_at(err, errlen, NULL, 0, "listen", "not set");
        goto out;
    }
    if (cfg->admin_listen.salen == 0) {
        r = config_fail_at(err, errlen, NULL, 0, "admin.listen", "not set");
        goto out;
    }
    if (cfg->docker_tls.enabled && cfg->docker_host != NULL &&
        strncmp(cfg->docker_host, "unix://", 7) == 0) {
        r = config_fail_at(
            err, errlen, cfg->docker_tls.line > 0 ? cfg->path : NULL,
            cfg->docker_tls.line > 0 ? (size_t)cfg->docker_tls.line : 0, "docker.tls",
            "needs a tcp:// docker.host (\"%s\" is a unix socket, which takes no TLS)",
            cfg->docker_host);
        goto out;
    }
    r = read_tokens(cfg, err, errlen);
    if (r < 0)
        goto out;
    r = config_check_access(cfg, err, errlen);
    if (r < 0)
        goto out;
    r = config_sentinel_resolve(cfg, err, errlen);
    if (r < 0)
        goto out;
    r = resolve_redis_private(cfg, err, errlen);
out:
    return r;
}

int wg_config_check_docker_host(const struct wg_config *cfg, char *err, size_t errlen)
{
    char msg[WG_CONFIG_ERR_MAX];
    int r;

    msg[0] = '\0';
    r = wg_docker_host_check(cfg->docker_host, cfg->docker_tls.enabled, msg, sizeof msg);
    if (r == 0)
        return 0;
    if (cfg->docker_host_line > 0)
        config_fail_at(err, errlen, cfg->path, (size_t)cfg->docker_host_line, "docker.host",
                       "invalid Docker host \"%s\": %s", cfg->docker_host, msg);
    else
        config_fail_at(err, errlen, NULL, 0,
                       cfg->docker_host_line < 0 ? "environment WAKEGATE_DOCKER_HOST"
                                                 : "docker.host",
                       "invalid Docker host \"%s\": %s", cfg->docker_host, msg);
    return r < 0 ? r : -EINVAL;
}
