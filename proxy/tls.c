/* proxy/tls.c - certificates, SNI, session tickets and ALPN of the public
 * listener; see tls.h. */
#include "proxy/tls.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "common/clock.h"
#include "proxy/tls_names.h"

/* Mozilla's "intermediate" TLS 1.2 list: forward secret and AEAD only.
 * TLS 1.3 suites are all AEAD; OpenSSL's defaults stand. */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define SESSION_ID_CONTEXT "wakegate"

/* ALPN, in our order of preference. Only HTTP/1.1 for now; the HTTP/2
 * part adds "\x02h2" in front (and conn_tls.c reads the choice with
 * SSL_get0_alpn_selected once the handshake is done). */
static const unsigned char alpn_protos[] = "\x02h2\x08http/1.1";
static const unsigned char alpn_protos_h1[] = "\x08http/1.1";

struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    int64_t created_ms; /* monotonic */
    bool valid;
};

/* One configuration's certificates: a context per pair and the names that
 * pick them. Replaced whole on reload. */
struct cert_set {
    SSL_CTX **ctx; /* [0] the default */
    size_t len;
    struct wg_tls_names names;
    struct wg_tls_cert_info *info; /* per ctx, for metrics and the expiry warning */
};

struct wg_tls {
    struct cert_set *certs;
    struct ticket_key keys[2]; /* [0] encrypts, [1] the previous: decrypts only */
    /* Fetched once: EVP_aes_256_cbc() would look the cipher up by name on
     * every ticket. */
    EVP_CIPHER *ticket_cipher;
    uint64_t rotate_ms;
    bool h2; /* http2.enabled: "h2" offered first */
    struct wg_tls_stats stats;
    /* Every worker loop shares this object (a ticket issued on one loop
     * resumes on another): keys_lock guards keys (rotated by whichever
     * loop issues a ticket), certs_lock the certs pointer (replaced by a
     * reload on the main thread). Each loop holds a reference. */
    uv_mutex_t keys_lock;
    uv_rwlock_t certs_lock;
    _Atomic unsigned refs;
};

static void cert_set_free(struct cert_set *set)
{
    if (set == NULL)
        return;
    for (size_t i = 0; i < set->len; i++)
        SSL_CTX_free(set->ctx[i]);
    free(set->ctx);
    free(set->info);
    wg_tls_names_free(&set->names);
    free(set);
}

/* ---- session tickets ----------------------------------------------------- */

static int key_fill(struct ticket_key *k)
{
    if (RAND_bytes(k->name, sizeof k->name) != 1 || RAND_bytes(k->aes, sizeof k->aes) != 1 ||
        RAND_bytes(k->hmac, sizeof k->hmac) != 1)
        return -EIO;
    k->created_ms = wg_clock_mono_ms();
    k->valid = true;
    return 0;
}

/* Lazily, on the next ticket: no timer to own, and an idle gateway keeps
 * no key longer than it would have. A key older than two periods protects
 * nothing any more. */
static void keys_rotate_if_due(struct wg_tls *t)
{
    int64_t age = wg_clock_mono_ms() - t->keys[0].created_ms;
    struct ticket_key fresh;

    if (t->keys[0].valid && age < (int64_t)t->rotate_ms)
        return;
    if (key_fill(&fresh) < 0)
        return; /* keep the current key rather than none */
    if (t->keys[0].valid && age < 2 * (int64_t)t->rotate_ms)
        t->keys[1] = t->keys[0];
    else
        OPENSSL_cleanse(&t->keys[1], sizeof t->keys[1]);
    t->keys[0] = fresh;
    OPENSSL_cleanse(&fresh, sizeof fresh);
}

static int ticket_mac_init(EVP_MAC_CTX *hctx, const struct ticket_key *k)
{
    OSSL_PARAM params[3];

    params[0] =
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, sizeof k->hmac);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    return EVP_MAC_CTX_set_params(hctx, params) == 1 ? 0 : -1;
}

/* OpenSSL's contract: 1 ticket ok, 2 ok and issue a new one, 0 unknown key
 * (full handshake), -1 error. Always 2 on success, as OpenSSL's own ticket
 * handling does: a TLS 1.3 client uses a ticket once, so without a fresh
 * one every other connection of a client would be a full handshake (and a
 * ticket of the previous key gets one of the current key). */
static int ticket_cb(SSL *s, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *ctx,
                     EVP_MAC_CTX *hctx, int enc)
{
    struct wg_tls *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(s));
    int r = 0;

    uv_mutex_lock(&t->keys_lock);
    keys_rotate_if_due(t);
    if (!t->keys[0].valid) {
        r = enc ? -1 : 0;
        goto out;
    }
    if (enc) {
        const struct ticket_key *k = &t->keys[0];
        memcpy(key_name, k->name, sizeof k->name);
        r = RAND_bytes(iv, EVP_CIPHER_get_iv_length(t->ticket_cipher)) != 1 ||
                    EVP_EncryptInit_ex(ctx, t->ticket_cipher, NULL, k->aes, iv) != 1 ||
                    ticket_mac_init(hctx, k) < 0
                ? -1
                : 1;
        goto out;
    }
    for (int i = 0; i < 2; i++) {
        const struct ticket_key *k = &t->keys[i];
        if (!k->valid || memcmp(key_name, k->name, sizeof k->name) != 0)
            continue;
        r = ticket_mac_init(hctx, k) < 0 ||
                    EVP_DecryptInit_ex(ctx, t->ticket_cipher, NULL, k->aes, iv) != 1
                ? -1
                : 2;
        goto out;
    }
out:
    uv_mutex_unlock(&t->keys_lock);
    return r;
}

/* ---- SNI and ALPN -------------------------------------------------------- */

/* Picks the certificate for the client's server name among the current
 * ones (a reload between accept and ClientHello is no harm: the client
 * gets the newest). No name, or none matching: the default stays. */
static int servername_cb(SSL *s, int *alert, void *arg)
{
    struct wg_tls *t = arg;
    const char *host = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
    int i;

    if (host == NULL)
        return SSL_TLSEXT_ERR_OK;
    uv_rwlock_rdlock(&t->certs_lock);
    i = wg_tls_names_find(&t->certs->names, host);
    if (i < 0)
        i = 0;
    /* The SSL takes its own reference: the context outlives a reload. */
    if (SSL_get_SSL_CTX(s) != t->certs->ctx[i])
        SSL_set_SSL_CTX(s, t->certs->ctx[i]);
    uv_rwlock_rdunlock(&t->certs_lock);
    return SSL_TLSEXT_ERR_OK;
}

static int alpn_cb(SSL *s, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    const struct wg_tls *t = arg;
    unsigned char *sel;
    const unsigned char *ours = t->h2 ? alpn_protos : alpn_protos_h1;
    unsigned ours_len = t->h2 ? sizeof alpn_protos - 1 : sizeof alpn_protos_h1 - 1;

    (void)s;
    if (SSL_select_next_proto(&sel, outlen, ours, ours_len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no protocol in common: go on without ALPN */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* ---- loading ------------------------------------------------------------- */

/* "FILE:LINE: tls.certificates[i].KEY: msg: <OpenSSL's reason>". */
static int load_fail(const struct wg_config *cfg, size_t i, bool key, const char *msg, char *err,
                     size_t errlen)
{
    const struct wg_tls_cert_cfg *c = &cfg->tls.certs[i];
    int line = key ? c->key_line : c->cert_line;
    unsigned long e = ERR_peek_last_error();
    char why[256] = "";
    char where[64] = "";

    if (e != 0)
        ERR_error_string_n(e, why, sizeof why);
    ERR_clear_error();
    if (cfg->path != NULL && line > 0)
        snprintf(where, sizeof where, ":%d", line);
    snprintf(err, errlen, "%s%s%stls.certificates[%zu].%s: %s%s%s", cfg->path ? cfg->path : "",
             where, cfg->path ? ": " : "", i, key ? "key" : "cert", msg, why[0] ? ": " : "", why);
    return -EINVAL;
}

static SSL_CTX *ctx_new(struct wg_tls *t)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (ctx == NULL)
        return NULL;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1 ||
        SSL_CTX_set_session_id_context(ctx, (const unsigned char *)SESSION_ID_CONTEXT,
                                       sizeof SESSION_ID_CONTEXT - 1) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Idle keep-alive connections give their record buffers back. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* Tickets only: every gateway of a fleet would need the same cache. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_timeout(ctx, (long)(t->rotate_ms / 1000));
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, t);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, t);
    SSL_CTX_set_app_data(ctx, t);
    return ctx;
}

/* The names a certificate answers for: its DNS subject alternative names,
 * or its common name when it has none (older self-made certificates). The
 * first of them names it in metrics and logs (set->info[idx]), with the
 * end of its validity. */
static int add_names(struct cert_set *set, SSL_CTX *ctx, unsigned idx)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    struct wg_tls_cert_info *info = &set->info[idx];
    const ASN1_TIME *na = X509_get0_notAfter(x);
    struct tm tm;
    int r = 0, found = 0;

    for (int i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans) && r >= 0; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        const unsigned char *s;
        int len;

        if (g->type != GEN_DNS)
            continue;
        s = ASN1_STRING_get0_data(g->d.dNSName);
        len = ASN1_STRING_length(g->d.dNSName);
        if (len <= 0 || memchr(s, '\0', (size_t)len) != NULL)
            continue; /* an embedded NUL is an attack, not a name */
        char name[256];
        if ((size_t)len >= sizeof name)
            continue;
        memcpy(name, s, (size_t)len);
        name[len] = '\0';
        r = wg_tls_names_add(&set->names, name, idx);
        if (found++ == 0)
            snprintf(info->name, sizeof info->name, "%s", name);
    }
    GENERAL_NAMES_free(sans);
    if (r >= 0 && found == 0) {
        char cn[256];
        if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn) >
            0) {
            r = wg_tls_names_add(&set->names, cn, idx);
            snprintf(info->name, sizeof info->name, "%s", cn);
        }
    }
    info->not_after = na != NULL && ASN1_TIME_to_tm(na, &tm) == 1 ? (int64_t)timegm(&tm) : 0;
    return r < 0 ? r : 0;
}

static int load_pair(struct wg_tls *t, const struct wg_config *cfg, size_t i, struct cert_set *set,
                     char *err, size_t errlen)
{
    const struct wg_tls_cert_cfg *c = &cfg->tls.certs[i];
    SSL_CTX *ctx = ctx_new(t);

    if (ctx == NULL)
        return load_fail(cfg, i, false, "cannot set up TLS", err, errlen);
    set->ctx[set->len++] = ctx;
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx, c->cert) != 1)
        return load_fail(cfg, i, false, "cannot load the certificate chain (PEM)", err, errlen);
    if (SSL_CTX_use_PrivateKey_file(ctx, c->key, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_last_error();
        /* OpenSSL checks the pair as it loads the key. */
        bool mismatch =
            ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH;
        return load_fail(cfg, i, true,
                         mismatch ? "the key does not match the certificate"
                                  : "cannot load the private key (PEM)",
                         err, errlen);
    }
    if (SSL_CTX_check_private_key(ctx) != 1)
        return load_fail(cfg, i, true, "the key does not match the certificate", err, errlen);
    if (add_names(set, ctx, (unsigned)i) < 0)
        return load_fail(cfg, i, false, "out of memory", err, errlen);
    return 0;
}

static int cert_set_load(struct wg_tls *t, const struct wg_config *cfg, struct cert_set **ret,
                         char *err, size_t errlen)
{
    struct cert_set *set = calloc(1, sizeof(*set));
    int r = -ENOMEM;

    if (set == NULL || (set->ctx = calloc(cfg->tls.certs_len, sizeof(*set->ctx))) == NULL ||
        (set->info = calloc(cfg->tls.certs_len, sizeof(*set->info))) == NULL) {
        snprintf(err, errlen, "tls: out of memory");
        goto out;
    }
    for (size_t i = 0; i < cfg->tls.certs_len; i++) {
        r = load_pair(t, cfg, i, set, err, errlen);
        if (r < 0)
            goto out;
    }
    *ret = set;
    set = NULL;
    r = 0;
out:
    cert_set_free(set);
    return r;
}

int wg_tls_new(const struct wg_config *cfg, struct wg_tls **ret_tls, char *err, size_t errlen)
{
    struct wg_tls *t = calloc(1, sizeof(*t));
    int r = -ENOMEM;

    if (t == NULL) {
        snprintf(err, errlen, "tls: out of memory");
        goto out;
    }
    t->rotate_ms = cfg->tls.ticket_rotate_ms;
    t->h2 = cfg->http2.enabled;
    t->refs = 1;
    if (uv_mutex_init(&t->keys_lock) < 0) {
        snprintf(err, errlen, "tls: cannot create a lock");
        goto out_free;
    }
    if (uv_rwlock_init(&t->certs_lock) < 0) {
        snprintf(err, errlen, "tls: cannot create a lock");
        goto out_mutex;
    }
    t->ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
    if (t->ticket_cipher == NULL) {
        snprintf(err, errlen, "tls: OpenSSL has no AES-256-CBC for session tickets");
        r = -EINVAL;
        goto out_locks;
    }
    r = cert_set_load(t, cfg, &t->certs, err, errlen);
    if (r < 0)
        goto out_cipher;
    t->stats.certificates = t->certs->len;
    *ret_tls = t;
    return 0;
out_cipher:
    EVP_CIPHER_free(t->ticket_cipher);
out_locks:
    uv_rwlock_destroy(&t->certs_lock);
out_mutex:
    uv_mutex_destroy(&t->keys_lock);
out_free:
    free(t);
out:
    return r;
}

int wg_tls_reload(struct wg_tls *t, const struct wg_config *cfg, char *err, size_t errlen)
{
    struct cert_set *set = NULL;
    int r;

    if (!cfg->tls.enabled) {
        t->stats.reloads_failed++;
        snprintf(err, errlen, "tls: removed from the file; turning TLS off needs a restart");
        return -EINVAL;
    }
    r = cert_set_load(t, cfg, &set, err, errlen);
    if (r < 0) {
        t->stats.reloads_failed++;
        return r;
    }
    /* Connections hold their own references to the contexts they use. */
    uv_rwlock_wrlock(&t->certs_lock);
    struct cert_set *old = t->certs;
    t->certs = set;
    uv_rwlock_wrunlock(&t->certs_lock);
    cert_set_free(old);
    t->stats.certificates = set->len;
    t->stats.reloads_ok++;
    return 0;
}

SSL *wg_tls_ssl_new(struct wg_tls *t)
{
    uv_rwlock_rdlock(&t->certs_lock);
    SSL *ssl = SSL_new(t->certs->ctx[0]);
    uv_rwlock_rdunlock(&t->certs_lock);
    return ssl;
}

struct wg_tls *wg_tls_ref(struct wg_tls *t)
{
    if (t != NULL)
        t->refs++;
    return t;
}

struct wg_tls_stats *wg_tls_stats(struct wg_tls *t)
{
    return &t->stats;
}

const struct wg_tls_cert_info *wg_tls_cert(const struct wg_tls *t, size_t i)
{
    return t != NULL && t->certs != NULL && i < t->certs->len ? &t->certs->info[i] : NULL;
}

void wg_tls_free(struct wg_tls *t)
{
    if (t == NULL || --t->refs > 0)
        return;
    cert_set_free(t->certs);
    uv_rwlock_destroy(&t->certs_lock);
    uv_mutex_destroy(&t->keys_lock);
    EVP_CIPHER_free(t->ticket_cipher);
    OPENSSL_cleanse(t->keys, sizeof t->keys);
    free(t);
}
