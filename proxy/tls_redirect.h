/* proxy/tls_redirect.h - tls.redirect_listen: a plain listener answering
 * every request with a 308 to https://<Host>/<target> on the public TLS
 * listener's port. Owns its listener and connections; independent of the
 * proxy's lifetime. */
#ifndef WG_PROXY_TLS_REDIRECT_H
#define WG_PROXY_TLS_REDIRECT_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "common/config.h"
#include "common/log.h"

struct wg_redirect; /* opaque */

/* Binds cfg->tls.redirect_listen; https_port is the port the redirects
 * name (omitted when 443). shared_port >= 0: with SO_REUSEPORT, beside the
 * other worker loops (on that port when > 0, wg_net_listen_reuseport);
 * < 0: alone. Returns 0 or a negative libuv error; *ret_port (may be NULL)
 * gets the bound port. */
int wg_redirect_start(uv_loop_t *loop, const struct wg_config *cfg, struct wg_log *log,
                      int https_port, int shared_port, struct wg_redirect **ret_r, int *ret_port);

/* Closes the listener and every connection; the memory goes with the last
 * close callback, so run the loop afterwards. NULL-safe, idempotent. */
void wg_redirect_free(struct wg_redirect *r);

/* Host field value v[0, n) without its port, lower case, into out: false
 * when it is not a DNS name ([A-Za-z0-9.-]) or a bracketed IPv6 literal,
 * optionally followed by ":digits". */
bool wg_redirect_host_valid(const char *v, size_t n, char *out, size_t outlen);

#endif
