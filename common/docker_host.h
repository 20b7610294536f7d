/* common/docker_host.h - the Docker host grammar: "unix:///path.sock" or
 * "tcp://host[:port]" (IPv6 as "tcp://[addr]:port").
 *
 * One parser for everyone who reads a docker.host: the configuration's
 * validation (so a bad host is refused at startup with its file and line),
 * the Docker client, and wakegatectl's doctor. Pure code: no lookup, no
 * connect. */
#ifndef WG_COMMON_DOCKER_HOST_H
#define WG_COMMON_DOCKER_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WG_DOCKER_DEFAULT_HOST "unix:///var/run/docker.sock"

struct wg_docker_host {
    bool is_unix;
    bool tls;
    bool numeric; /* tcp: an IP literal, no lookup needed */
    char *path;   /* unix: socket path */
    char *name;   /* tcp: host name or address, without brackets */
    uint16_t port;
    char *display; /* "unix:///x.sock", "tcp://h:2376" */
    char *base;    /* URL up to the path: "http://docker", "https://h:2376" */
};

/* Fills h from s (NULL: WG_DOCKER_DEFAULT_HOST); tls picks the default tcp
 * port (2376, else 2375) and is refused for a unix socket. Returns 0 with h
 * owning its strings (release with wg_docker_host_release()), -EINVAL with
 * the reason in err (NUL-terminated when errlen > 0) and h empty, or
 * -ENOMEM. */
int wg_docker_host_parse(const char *s, bool tls, struct wg_docker_host *h, char *err,
                         size_t errlen);
/* Frees h's strings and zeroes it; safe on a zeroed h. */
void wg_docker_host_release(struct wg_docker_host *h);
/* wg_docker_host_parse() without keeping the result. */
int wg_docker_host_check(const char *s, bool tls, char *err, size_t errlen);

#endif
