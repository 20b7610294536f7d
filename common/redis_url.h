/* common/redis_url.h - the Redis URL grammar:
 *
 *   redis://[[user]:password@]host[:port][/db]    port 6379, db 0 by default;
 *                                                 host may be "[v6 address]"
 *   unix:///path/to/redis.sock[?db=N]
 *   redis+sentinel://[[user]:password@]host:port[,host:port...]/MASTER[/db]
 *                    [?sentinel_password=PW]
 *       Redis Sentinel: the sentinels' addresses (port 26379 by default),
 *       the name they monitor the master under, and the master's db; the
 *       userinfo is the master's credentials, sentinel_password the
 *       sentinels' (AUTH without a user name). The configuration builds it
 *       from redis.sentinel (common/config.h), so every user of redis_url
 *       gets sentinel mode without a change; see common/redis.h.
 *
 * Schemes are case-insensitive (RFC 3986). The user name and password may be
 * percent-encoded (%00 is refused); no part may hold a space or a control
 * character. rediss:// (TLS) is not supported.
 *
 * One parser for everyone who reads a Redis URL: the configuration (so a bad
 * redis.url is refused at startup with its file and line), the connection
 * (common/redis) and wakegatectl's doctor. Pure code: no lookup, no connect. */
#ifndef WG_COMMON_REDIS_URL_H
#define WG_COMMON_REDIS_URL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WG_REDIS_URL_DEFAULT_PORT 6379
#define WG_REDIS_URL_SENTINEL_PORT 26379
#define WG_REDIS_URL_SENTINELS_MAX 16

struct wg_redis_url_host {
    char *host; /* name or address, without brackets */
    uint16_t port;
};

struct wg_redis_url {
    bool is_unix;
    char *host; /* tcp: name or address, without brackets; NULL for unix */
    char *path; /* unix: the socket path; NULL for tcp */
    uint16_t port;
    int db;
    char *user;     /* NULL: AUTH without a user name */
    char *password; /* NULL: no AUTH; decoded, and zeroed by the release */
    char *display;  /* the URL without the password, for logs and reasons */
    /* redis+sentinel:// only (master_name != NULL); host is then NULL and
     * port 0: the sentinels name the master. */
    char *master_name;
    struct wg_redis_url_host *sentinels;
    size_t sentinels_len;
    char *sentinel_password; /* NULL: no AUTH to the sentinels; zeroed by the release */
};

/* Fills u from url. Returns 0 with u owning its strings (release with
 * wg_redis_url_release()), or -EINVAL with the reason in err (NUL-terminated
 * when errlen > 0; it never holds the password) or -ENOMEM; u is then
 * empty. */
int wg_redis_url_parse(const char *url, struct wg_redis_url *u, char *err, size_t errlen);

/* Frees u's strings (the password zeroed first) and zeroes u; safe on a
 * zeroed u. */
void wg_redis_url_release(struct wg_redis_url *u);

/* wg_redis_url_parse() without keeping the result; url may be NULL (an
 * error). */
int wg_redis_url_check(const char *url, char *err, size_t errlen);

#endif
