/* proxy/http_rebuild.h - the canonical heads the proxy writes: the upstream
 * request head and the client response head, rebuilt from parsed fields
 * (common/http_head.h), never copied from the peer's bytes.
 *
 * Pure code: no sockets, no allocation except into caller-owned buffers. */
#ifndef WG_PROXY_HTTP_REBUILD_H
#define WG_PROXY_HTTP_REBUILD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/buf.h"
#include "common/http_head.h"

enum wg_http_framing {
    WG_HTTP_FRAME_NONE = 0, /* no body */
    WG_HTTP_FRAME_LENGTH,   /* Content-Length */
    WG_HTTP_FRAME_CHUNKED,  /* re-framed as chunked */
    WG_HTTP_FRAME_CLOSE,    /* delimited by closing the connection */
};

struct wg_http_request_out {
    const char *target; /* rewritten target, e.g. after strip_prefix */
    size_t target_len;
    bool slash_prefix;           /* write "/" before target (a stripped prefix took the path) */
    const char *default_host;    /* Host for a 1.0 request that sent none (the upstream) */
    const struct sockaddr *peer; /* client address */
    bool peer_trusted;           /* keep and append to its X-Forwarded-* */
    enum wg_http_framing framing;
    uint64_t content_length;
    bool upgrade; /* forward Connection: upgrade / Upgrade: websocket */
    /* Leave out our credentials (common/access.h): the wg_token query
     * parameter, the X-Wakegate-Token field and the wg_token cookies (the
     * Cookie field is rebuilt without them, and dropped when empty). */
    bool strip_access;
    bool https; /* the client came over TLS: X-Forwarded-Proto https unless a trusted peer said */
};

/* Writes the canonical upstream request head: "METHOD target HTTP/1.1",
 * Host, the end-to-end fields, X-Forwarded-For/-Host/-Proto, framing.
 * Returns 0 or -E2BIG/-ENOMEM. */
int wg_http_request_rebuild(const struct wg_http_msg *req, const struct wg_http_request_out *o,
                            struct wg_buf *out);

/* Writes the X-Forwarded-For line of a request from peer: a trusted
 * peer's own list first, then the peer (a v4-mapped address as IPv4).
 * What the upstream and the forward-auth service both see. Returns 0 or
 * -E2BIG/-ENOMEM. */
int wg_http_forwarded_for(struct wg_buf *out, const struct wg_http_msg *req,
                          const struct sockaddr *peer, bool peer_trusted);

struct wg_http_response_out {
    uint8_t client_minor; /* client's HTTP/1.minor */
    enum wg_http_framing framing;
    uint64_t content_length;
    bool keep_alive; /* else Connection: close */
    bool upgrade;    /* a 101 to relay with Connection/Upgrade */
    /* Strict-Transport-Security value (tls.hsts) replacing the upstream's;
     * NULL: the upstream's fields pass as they are. */
    const char *hsts;
};

/* Writes the client response head: "HTTP/1.1 status reason", end-to-end
 * fields, framing and Connection. Returns 0 or -E2BIG/-ENOMEM. */
int wg_http_response_rebuild(const struct wg_http_msg *resp, const struct wg_http_response_out *o,
                             struct wg_buf *out);

#endif
