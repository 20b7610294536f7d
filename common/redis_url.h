/* common/redis_url.h - the Redis URL grammar:
 *
 *   redis://[[user]:password@]host[:port][/db]    port 6379, db 0 by default;
 *                                                 host may be "[v6 address]"
 *   unix:///path/to/redis.sock[?db=N]
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

struct wg_redis_url {
    bool is_unix;
    char *host; /* tcp: name or address, without brackets; NULL for unix */
    char *path; /* unix: the socket path; NULL for tcp */
    uint16_t port;
    int db;
    char *user;     /* NULL: AUTH without a user name */
    char *password; /* NULL: no AUTH; decoded, and zeroed by the release */
    char *display;  /* the URL without the password, for logs and reasons */
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
