/* common/docker_host.c - see docker_host.h. */
#include "common/docker_host.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "common/str.h"

static bool is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

void wg_docker_host_release(struct wg_docker_host *h)
{
    free(h->path);
    free(h->name);
    free(h->display);
    free(h->base);
    memset(h, 0, sizeof(*h));
}

/* Fills h from s. On failure h holds nothing and err says why. */
/* "unix://" + p: an absolute socket path that fits sun_path. */
static int parse_unix(const char *p, bool tls, struct wg_docker_host *h, char *err, size_t errlen)
{
    struct sockaddr_un sun;

    if (p[0] != '/')
        return wg_errf(err, errlen,
                       "unix host needs an absolute path: unix:///var/run/docker.sock");
    if (strlen(p) >= sizeof(sun.sun_path))
        return wg_errf(err, errlen, "unix socket path is longer than %zu bytes",
                       sizeof(sun.sun_path) - 1);
    if (strpbrk(p, "?#"))
        return wg_errf(err, errlen, "unix host takes no query or fragment");
    if (tls)
        return wg_errf(err, errlen, "TLS is for tcp:// hosts only");
    h->is_unix = true;
    h->path = strdup(p);
    h->display = wg_strf("unix://%s", p);
    /* The host name is not looked up on a unix socket; Docker ignores it. */
    h->base = strdup("http://docker");
    return 0;
}

/* What follows the host name of a tcp host: "", "/", ":PORT" or ":PORT/". */
static int parse_port(const char *after, unsigned long *port, char *err, size_t errlen)
{
    char *end;

    if (*after != ':') {
        if (*after && strcmp(after, "/") != 0)
            return wg_errf(err, errlen,
                           "Docker host takes no path, query or fragment: use tcp://host:port");
        return 0;
    }
    if (!isdigit((unsigned char)after[1]))
        return wg_errf(err, errlen, "bad port in the Docker host: expected 1-65535");
    errno = 0;
    *port = strtoul(after + 1, &end, 10);
    if (errno || *port == 0 || *port > 65535 || (*end && strcmp(end, "/") != 0))
        return wg_errf(err, errlen, "bad port in the Docker host: expected 1-65535");
    return 0;
}

/* The host name of a tcp host (h->name is set): a name or an IPv4 address,
 * or an IPv6 address only inside brackets. */
static int check_name(const struct wg_docker_host *h, bool bracketed, char *err, size_t errlen)
{
    unsigned char addr[sizeof(struct in6_addr)];

    for (const char *c = h->name; *c; c++)
        if (!is_alnum((unsigned char)*c) && !strchr(".-_:%", *c))
            return wg_errf(err, errlen, "bad character in the Docker host name");
    if (bracketed && inet_pton(AF_INET6, h->name, addr) != 1)
        return wg_errf(err, errlen, "not an IPv6 address inside [ ]");
    if (!bracketed && strchr(h->name, ':'))
        return wg_errf(err, errlen, "write an IPv6 address as tcp://[address]:port");
    return 0;
}

/* "tcp://" + p: host[:port] or [v6]:port, an optional trailing "/". */
static int parse_tcp(const char *p, bool tls, struct wg_docker_host *h, char *err, size_t errlen)
{
    unsigned char addr[sizeof(struct in6_addr)];
    const char *name = p, *name_end, *after;
    unsigned long port = tls ? 2376 : 2375;
    bool bracketed = *p == '[';
    int rc;

    if (bracketed) {
        name = p + 1;
        name_end = strchr(name, ']');
        if (!name_end)
            return wg_errf(err, errlen, "unterminated [ in the Docker host");
        after = name_end + 1;
    } else {
        name_end = p + strcspn(p, ":/?#");
        after = name_end;
    }
    if (name_end == name)
        return wg_errf(err, errlen, "Docker host has no host name: use tcp://host:port");
    rc = parse_port(after, &port, err, errlen);
    if (rc < 0)
        return rc;
    h->name = strndup(name, (size_t)(name_end - name));
    if (!h->name)
        return -ENOMEM;
    rc = check_name(h, bracketed, err, errlen);
    if (rc < 0)
        return rc;
    h->numeric = inet_pton(AF_INET, h->name, addr) == 1 || inet_pton(AF_INET6, h->name, addr) == 1;
    h->port = (uint16_t)port;
    h->tls = tls;
    h->display = wg_strf(bracketed ? "tcp://[%s]:%u" : "tcp://%s:%u", h->name, h->port);
    h->base = wg_strf(bracketed ? "%s://[%s]:%u" : "%s://%s:%u", tls ? "https" : "http", h->name,
                      h->port);
    return 0;
}

int wg_docker_host_parse(const char *s, bool tls, struct wg_docker_host *h, char *err,
                         size_t errlen)
{
    int rc;

    memset(h, 0, sizeof(*h));
    if (errlen > 0)
        err[0] = '\0';
    if (!s)
        s = WG_DOCKER_DEFAULT_HOST;
    for (const char *c = s; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f) {
            rc = wg_errf(err, errlen, "Docker host has a space or control character");
            goto out;
        }
    if (strncmp(s, "unix://", 7) == 0)
        rc = parse_unix(s + 7, tls, h, err, errlen);
    else if (strncmp(s, "tcp://", 6) == 0)
        rc = parse_tcp(s + 6, tls, h, err, errlen);
    else
        rc = wg_errf(err, errlen,
                     "Docker host must be unix:///path/to/docker.sock or tcp://host:port");
    if (rc == 0 && (!h->display || !h->base || (h->is_unix && !h->path)))
        rc = -ENOMEM;
out:
    if (rc == -ENOMEM)
        snprintf(err, errlen, "out of memory");
    if (rc < 0)
        wg_docker_host_release(h);
    return rc;
}

int wg_docker_host_check(const char *s, bool tls, char *err, size_t errlen)
{
    struct wg_docker_host h;
    int rc = wg_docker_host_parse(s, tls, &h, err, errlen);

    if (rc == 0)
        wg_docker_host_release(&h);
    return rc;
}
