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

/* Writes the reason into err and returns -EINVAL, for "rc = fail(...)". */
static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* Fills h from s. On failure h holds nothing and err says why. */
int wg_docker_host_parse(const char *s, bool tls, struct wg_docker_host *h, char *err,
                         size_t errlen)
{
    struct sockaddr_un sun;
    unsigned char addr[sizeof(struct in6_addr)];
    int rc = 0;

    memset(h, 0, sizeof(*h));
    if (errlen > 0)
        err[0] = '\0';
    if (!s)
        s = WG_DOCKER_DEFAULT_HOST;
    for (const char *c = s; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f) {
            rc = fail(err, errlen, "Docker host has a space or control character");
            goto out;
        }
    if (strncmp(s, "unix://", 7) == 0) {
        const char *p = s + 7;
        if (p[0] != '/') {
            rc = fail(err, errlen, "unix host needs an absolute path: unix:///var/run/docker.sock");
            goto out;
        }
        if (strlen(p) >= sizeof(sun.sun_path)) {
            rc = fail(err, errlen, "unix socket path is longer than %zu bytes",
                      sizeof(sun.sun_path) - 1);
            goto out;
        }
        if (strpbrk(p, "?#")) {
            rc = fail(err, errlen, "unix host takes no query or fragment");
            goto out;
        }
        if (tls) {
            rc = fail(err, errlen, "TLS is for tcp:// hosts only");
            goto out;
        }
        h->is_unix = true;
        h->path = strdup(p);
        h->display = wg_strf("unix://%s", p);
        /* The host name is not looked up on a unix socket; Docker ignores it. */
        h->base = strdup("http://docker");
    } else if (strncmp(s, "tcp://", 6) == 0) {
        const char *p = s + 6, *name, *name_end, *after;
        unsigned long port = tls ? 2376 : 2375;

        if (*p == '[') {
            name = p + 1;
            name_end = strchr(name, ']');
            if (!name_end) {
                rc = fail(err, errlen, "unterminated [ in the Docker host");
                goto out;
            }
            after = name_end + 1;
        } else {
            name = p;
            name_end = p + strcspn(p, ":/?#");
            after = name_end;
        }
        if (name_end == name) {
            rc = fail(err, errlen, "Docker host has no host name: use tcp://host:port");
            goto out;
        }
        if (*after == ':') {
            char *end;
            if (!isdigit((unsigned char)after[1])) {
                rc = fail(err, errlen, "bad port in the Docker host: expected 1-65535");
                goto out;
            }
            errno = 0;
            port = strtoul(after + 1, &end, 10);
            if (errno || port == 0 || port > 65535 || (*end && strcmp(end, "/") != 0)) {
                rc = fail(err, errlen, "bad port in the Docker host: expected 1-65535");
                goto out;
            }
        } else if (*after && strcmp(after, "/") != 0) {
            {
                rc = fail(err, errlen,
                          "Docker host takes no path, query or fragment: use tcp://host:port");
                goto out;
            }
        }
        h->name = strndup(name, (size_t)(name_end - name));
        if (!h->name) {
            rc = -ENOMEM;
            goto out;
        }
        for (const char *c = h->name; *c; c++)
            if (!is_alnum((unsigned char)*c) && !strchr(".-_:%", *c)) {
                rc = fail(err, errlen, "bad character in the Docker host name");
                goto out;
            }
        if (*p == '[' && inet_pton(AF_INET6, h->name, addr) != 1) {
            rc = fail(err, errlen, "not an IPv6 address inside [ ]");
            goto out;
        }
        if (*p != '[' && strchr(h->name, ':')) {
            rc = fail(err, errlen, "write an IPv6 address as tcp://[address]:port");
            goto out;
        }
        h->numeric =
            inet_pton(AF_INET, h->name, addr) == 1 || inet_pton(AF_INET6, h->name, addr) == 1;
        h->port = (uint16_t)port;
        h->tls = tls;
        h->display = wg_strf(*p == '[' ? "tcp://[%s]:%u" : "tcp://%s:%u", h->name, h->port);
        h->base = wg_strf(*p == '[' ? "%s://[%s]:%u" : "%s://%s:%u", tls ? "https" : "http",
                          h->name, h->port);
    } else {
        {
            rc = fail(err, errlen,
                      "Docker host must be unix:///path/to/docker.sock or tcp://host:port");
            goto out;
        }
    }
    if (!h->display || !h->base || (h->is_unix && !h->path))
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
