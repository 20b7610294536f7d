/* common/net.c - see net.h. */
#include "common/net.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The bound port of tcp, or 0. */
static int bound_port(uv_tcp_t *tcp)
{
    struct sockaddr_storage bound;
    int len = sizeof(bound);

    if (uv_tcp_getsockname(tcp, (struct sockaddr *)&bound, &len) != 0)
        return 0;
    return ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                             : ((struct sockaddr_in *)&bound)->sin_port);
}

int wg_net_listen(uv_tcp_t *tcp, const struct sockaddr *sa, int backlog, uv_connection_cb cb,
                  int *ret_port)
{
    int r = uv_tcp_bind(tcp, sa, 0);
    if (r < 0)
        return r;
    r = uv_listen((uv_stream_t *)tcp, backlog, cb);
    if (r < 0)
        return r;
    if (ret_port != NULL)
        *ret_port = bound_port(tcp);
    return 0;
}

/* 0 when nothing listens on sa (port 0: nothing to check), else a
 * negative libuv error (UV_EADDRINUSE). */
static int probe_free(const struct sockaddr *sa, socklen_t len)
{
    int one = 1, r = 0;
    uint16_t p = sa->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
                                           : ((const struct sockaddr_in *)sa)->sin_port;

    if (p == 0)
        return 0;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return uv_translate_sys_error(errno);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 || bind(fd, sa, len) < 0)
        r = uv_translate_sys_error(errno);
    close(fd);
    return r;
}

/* libuv 1.44 has no UV_TCP_REUSEPORT: the socket is made here and handed
 * to tcp (uv_tcp_open), which owns it from then on. */
int wg_net_listen_reuseport(uv_tcp_t *tcp, const struct sockaddr *sa, int port, int backlog,
                            uv_connection_cb cb, int *ret_port)
{
    struct sockaddr_storage addr;
    socklen_t len =
        sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int one = 1, r;

    memcpy(&addr, sa, len);
    /* The first socket of the group: another process listening there with
     * SO_REUSEPORT (a second gateway by mistake) would take half the
     * connections silently. A bind without it fails then, as a bind of one
     * loop always did. */
    if (port <= 0 && (r = probe_free(sa, len)) < 0)
        return r;
    if (port > 0 && addr.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&addr)->sin6_port = htons((uint16_t)port);
    else if (port > 0)
        ((struct sockaddr_in *)&addr)->sin_port = htons((uint16_t)port);
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return uv_translate_sys_error(errno);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&addr, len) < 0 || listen(fd, backlog) < 0) {
        r = uv_translate_sys_error(errno);
        close(fd);
        return r;
    }
    r = uv_tcp_open(tcp, fd);
    if (r < 0) {
        close(fd);
        return r;
    }
    r = uv_listen((uv_stream_t *)tcp, backlog, cb);
    if (r < 0)
        return r;
    if (ret_port != NULL)
        *ret_port = bound_port(tcp);
    return 0;
}

bool wg_net_same_ip(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return false;
    if (a->sa_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (a->sa_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
    return false;
}
