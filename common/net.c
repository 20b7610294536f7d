/* common/net.c - see net.h. */
#include "common/net.h"

#include <netinet/in.h>
#include <string.h>

int wg_net_listen(uv_tcp_t *tcp, const struct sockaddr *sa, int backlog, uv_connection_cb cb,
                  int *ret_port)
{
    struct sockaddr_storage bound;
    int len = sizeof(bound);
    int r = uv_tcp_bind(tcp, sa, 0);
    if (r < 0)
        return r;
    r = uv_listen((uv_stream_t *)tcp, backlog, cb);
    if (r < 0)
        return r;
    if (ret_port == NULL)
        return 0;
    *ret_port = 0;
    if (uv_tcp_getsockname(tcp, (struct sockaddr *)&bound, &len) == 0)
        *ret_port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                      : ((struct sockaddr_in *)&bound)->sin_port);
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
