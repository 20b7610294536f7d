/* common/net.c - see net.h. */
#include "common/net.h"

#include <netinet/in.h>

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
