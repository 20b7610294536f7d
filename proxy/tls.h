/* proxy/tls.h - TLS termination on the public listener: the certificates
 * (one OpenSSL context each, chosen by SNI, the first the default), the
 * session ticket keys and their rotation, ALPN, and the counters. The
 * record layer of one connection is proxy/conn_tls.c.
 *
 * Protocol: TLS 1.2 and 1.3 only; TLS 1.2 offers ECDHE with AEAD ciphers
 * only; no compression, no renegotiation. Sessions resume with tickets
 * (TLS 1.2 tickets and TLS 1.3 PSKs alike) encrypted under our own keys
 * (SSL_CTX_set_tlsext_ticket_key_evp_cb): a new key every
 * tls.ticket_rotate, the previous one kept to decrypt for one more period,
 * so a ticket resumes for at most two periods; every resumption gets a
 * fresh ticket. No server-side session cache. The keys survive
 * certificate reloads. */
#ifndef WG_PROXY_TLS_H
#define WG_PROXY_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

#include "common/config.h"

struct wg_tls; /* opaque */

enum wg_tls_handshake_result {
    WG_TLS_HS_OK = 0,
    WG_TLS_HS_FAILED,  /* bad bytes, no common version or cipher, alert */
    WG_TLS_HS_TIMEOUT, /* limits.head_timeout passed before it finished */
    WG_TLS_HS_RESULTS,
};

struct wg_tls_stats {
    _Atomic uint64_t handshakes[WG_TLS_HS_RESULTS];
    _Atomic uint64_t tls12, tls13; /* handshakes done, by version */
    _Atomic uint64_t resumptions;  /* handshakes done that resumed a session */
    _Atomic uint64_t reloads_ok, reloads_failed;
    _Atomic uint64_t certificates; /* loaded now (gauge) */
    _Atomic uint64_t alpn_h2, alpn_http11,
        alpn_none; /* handshakes done, by the protocol ALPN chose */
};

/* Loads every certificate and key of cfg->tls (which must be enabled):
 * full chains, each key matched with its certificate. On failure err gets
 * "FILE:LINE: tls.certificates[i].cert: why" and nothing is kept. On
 * success *ret_tls is live; free it with wg_tls_free(). Reads files:
 * startup and SIGHUP only. */
int wg_tls_new(const struct wg_config *cfg, struct wg_tls **ret_tls, char *err, size_t errlen);

/* SIGHUP: replaces the certificates with those of cfg (a configuration
 * just loaded, which may be freed after the call). New handshakes use
 * them; open connections keep the ones they have. On failure the current
 * ones stay, err says why, and the failure is counted. Returns 0 or
 * -EINVAL / -ENOMEM. */
int wg_tls_reload(struct wg_tls *t, const struct wg_config *cfg, char *err, size_t errlen);

/* A server-side SSL for a new connection (the default certificate until
 * SNI picks another); NULL when out of memory. */
SSL *wg_tls_ssl_new(struct wg_tls *t);

/* A loaded certificate: the name it is shown by (its first DNS name, else
 * its common name) and when it stops being valid (Unix seconds; 0 when
 * unreadable). */
struct wg_tls_cert_info {
    char name[256];
    int64_t not_after;
};
/* The i-th loaded certificate now (the order of tls.certificates), or
 * NULL past the last. Valid until the next reload. */
const struct wg_tls_cert_info *wg_tls_cert(const struct wg_tls *t, size_t i);

/* The counters; the record layer counts handshakes through it. */
struct wg_tls_stats *wg_tls_stats(struct wg_tls *t);

/* Another owner of t (a worker loop): wg_tls_free() drops one reference,
 * the last frees. Every function here may be called from any thread; the
 * reload, wg_tls_cert() and wg_tls_free() from one thread at a time. */
struct wg_tls *wg_tls_ref(struct wg_tls *t);

/* NULL-safe; drops a reference. Connections may still hold SSLs: OpenSSL
 * counts its own references to the contexts. */
void wg_tls_free(struct wg_tls *t);

#endif
