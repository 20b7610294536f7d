/* common/net.h - small socket helpers shared by the listeners. */
#ifndef WG_COMMON_NET_H
#define WG_COMMON_NET_H

#include <stdbool.h>
#include <uv.h>

/* Binds tcp to sa and listens. On success *ret_port (may be NULL) gets the
 * bound port, which matters when sa asked for port 0. Returns 0 or a
 * negative libuv error. */
int wg_net_listen(uv_tcp_t *tcp, const struct sockaddr *sa, int backlog, uv_connection_cb cb,
                  int *ret_port);

/* The same with SO_REUSEPORT (and SO_REUSEADDR), so that several loops
 * each listen on sa and the kernel spreads the connections over them;
 * port > 0 replaces sa's port (the one the first loop was given for port
 * 0). tcp is initialised but not yet bound. */
int wg_net_listen_reuseport(uv_tcp_t *tcp, const struct sockaddr *sa, int port, int backlog,
                            uv_connection_cb cb, int *ret_port);

/* Whether a and b (IPv4 or IPv6) hold the same address, ports aside. */
bool wg_net_same_ip(const struct sockaddr *a, const struct sockaddr *b);

#endif
