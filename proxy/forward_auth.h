/* proxy/forward_auth.h - access.forward_auth: the operator's auth service
 * decides for private session routes, as nginx's auth_request and Traefik's
 * ForwardAuth do.
 *
 * A request to a private route with no valid token of ours is described by
 * a GET to the service (access.forward_auth.url) carrying the original
 * method, URI and host (X-Forwarded-Method, X-Forwarded-Uri,
 * X-Forwarded-Host, X-Forwarded-Proto, X-Forwarded-For), its cookies (ours
 * removed) and its Authorization. A 2xx answer allows; 401 and 403 are
 * passed back to the client (with the service's WWW-Authenticate and
 * Location); anything else, a connect failure or no answer within
 * access.forward_auth.timeout is a deny: 503, never an allow.
 *
 * Answers are cached per credential (SHA-256 of the Cookie and
 * Authorization sent) for access.forward_auth.cache_ttl, at most
 * access.forward_auth.cache_max of them (the oldest go first); a failure
 * is never cached. One connection per sub-request, Connection: close; a
 * request whose credential already has one in flight waits for it. */
#ifndef WG_PROXY_FORWARD_AUTH_H
#define WG_PROXY_FORWARD_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "common/config.h"
#include "common/log.h"

struct wg_fauth;     /* opaque: one per event loop */
struct wg_fauth_req; /* opaque: one sub-request */

#define WG_FAUTH_KEY_LEN 32
#define WG_FAUTH_HEADER_MAX 512 /* WWW-Authenticate or Location passed back */

/* What the service said. */
struct wg_fauth_answer {
    int status; /* 200 allow, 401, 403, or 503 (failed: deny) */
    char www_authenticate[WG_FAUTH_HEADER_MAX];
    char location[WG_FAUTH_HEADER_MAX];
};

typedef void wg_fauth_cb(void *arg, const struct wg_fauth_answer *a);

struct wg_fauth_stats {
    _Atomic uint64_t requests;   /* sub-requests sent */
    _Atomic uint64_t cache_hits; /* answers taken from the cache */
    _Atomic uint64_t failures;   /* sub-requests that failed or timed out (503) */
    _Atomic uint64_t joined;     /* requests that waited for a sub-request already in flight */
    _Atomic uint64_t cached;     /* answers in the cache now */
};

/* cfg->url must be set; cfg outlives the object. */
int wg_fauth_new(uv_loop_t *loop, const struct wg_forward_auth_cfg *cfg, struct wg_log *log,
                 struct wg_fauth **ret);
/* Pending sub-requests end without their callbacks. NULL-safe. */
void wg_fauth_free(struct wg_fauth *fa);

/* The cache key of a credential for one session: SHA-256 of session "\0"
 * cookie "\0" authorization. The session is part of it because the service
 * decides per request (it is told the host and URI): its yes for one
 * session is no answer for another. */
void wg_fauth_key(const char *session, const char *cookie, size_t cookie_len, const char *authz,
                  size_t authz_len, unsigned char key[WG_FAUTH_KEY_LEN]);
/* A cached answer for key: true with *a filled. */
bool wg_fauth_cached(struct wg_fauth *fa, const unsigned char key[WG_FAUTH_KEY_LEN],
                     struct wg_fauth_answer *a);
/* Sends the sub-request whose head lines (after the request line and Host,
 * before Connection: close) are fields[0, len), or, when one for key is in
 * flight, waits for its answer; cb runs once, never inside this call.
 * Returns 0 with *ret set (for wg_fauth_cancel), -EBUSY when
 * access.forward_auth.max_in_flight sub-requests are on the wire already,
 * or -ENOMEM. */
int wg_fauth_start(struct wg_fauth *fa, const unsigned char key[WG_FAUTH_KEY_LEN],
                   const char *fields, size_t len, wg_fauth_cb *cb, void *arg,
                   struct wg_fauth_req **ret);
/* The callback will not run. NULL-safe. */
void wg_fauth_cancel(struct wg_fauth_req *r);

const struct wg_fauth_stats *wg_fauth_stats(const struct wg_fauth *fa);

#endif
