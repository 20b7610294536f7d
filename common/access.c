/* common/access.c - see access.h. */
#include "common/access.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define DOMAIN "wakegate-access-v1\n"

/* Tokens whose MAC was verified, so the same cookie on every request of a
 * page costs a compare instead of an HMAC. Direct-mapped by a hash of the
 * text; a slot holds only a token this key verified, and a hit is a full,
 * constant-time compare of the text (a forged token never hits). */
#define SEEN_SLOTS 256

struct seen {
    size_t len; /* 0: empty */
    char tok[WG_ACCESS_TOKEN_MAX];
    struct wg_access_claims claims;
};

struct wg_access_key {
    EVP_MAC *mac;
    /* Initialised with the key once; EVP_MAC_init() with a NULL key starts
     * a new computation with the same key, so a check costs no key setup
     * and no allocation. */
    EVP_MAC_CTX *ctx;
    struct seen seen[SEEN_SLOTS];
};

/* The slot of a token: from the first 8 characters of its MAC, which
 * (base64 of an HMAC) are as good as random for a real token; a made-up
 * one only picks which remembered token it is compared with. */
static unsigned seen_slot(const char *tok, size_t len)
{
    uint64_t h;

    memcpy(&h, tok + len - WG_ACCESS_MAC_LEN, sizeof(h));
    h *= 0x9e3779b97f4a7c15ull;
    return (unsigned)(h >> 32) % SEEN_SLOTS;
}

/* Equal bytes, in a time that depends on n only (no early exit), eight
 * bytes a step: the text of a token verified before is a secret of its
 * holder, and a comparison that stopped early would tell a guesser how
 * much of it was right. */
static bool equal_ct(const char *a, const char *b, size_t n)
{
    uint64_t acc = 0, x, y;
    size_t i = 0;

    for (; i + sizeof(x) <= n; i += sizeof(x)) {
        memcpy(&x, a + i, sizeof(x));
        memcpy(&y, b + i, sizeof(y));
        acc |= x ^ y;
    }
    for (; i < n; i++)
        acc |= (unsigned char)(a[i] ^ b[i]);
    return acc == 0;
}

int wg_access_key_new(const unsigned char *secret, size_t len, struct wg_access_key **ret)
{
    struct wg_access_key *k;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    int r = -EIO;

    if (secret == NULL || len < WG_ACCESS_SECRET_MIN)
        return -EINVAL;
    k = calloc(1, sizeof(*k));
    if (k == NULL)
        return -ENOMEM;
    k->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (k->mac == NULL)
        goto out;
    k->ctx = EVP_MAC_CTX_new(k->mac);
    if (k->ctx == NULL)
        goto out;
    if (!EVP_MAC_init(k->ctx, secret, len, params))
        goto out;
    *ret = k;
    return 0;
out:
    wg_access_key_free(k);
    return r;
}

void wg_access_key_free(struct wg_access_key *k)
{
    if (k == NULL)
        return;
    EVP_MAC_CTX_free(k->ctx);
    EVP_MAC_free(k->mac);
    OPENSSL_cleanse(k->seen, sizeof(k->seen));
    free(k);
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* 32 bytes -> 43 characters, no padding. */
static void encode_mac(const unsigned char in[32], char out[WG_ACCESS_MAC_LEN])
{
    size_t o = 0;
    for (size_t i = 0; i < 32; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < 32)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < 32)
            v |= in[i + 2];
        out[o++] = b64url[(v >> 18) & 63];
        out[o++] = b64url[(v >> 12) & 63];
        if (i + 1 < 32)
            out[o++] = b64url[(v >> 6) & 63];
        if (i + 2 < 32)
            out[o++] = b64url[v & 63];
    }
}

/* The MAC of msg[0, len) as its 43 characters. */
static int compute(struct wg_access_key *k, const char *msg, size_t len,
                   char out[WG_ACCESS_MAC_LEN])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    size_t mdlen = 0;

    if (!EVP_MAC_init(k->ctx, NULL, 0, NULL) ||
        !EVP_MAC_update(k->ctx, (const unsigned char *)DOMAIN, sizeof(DOMAIN) - 1) ||
        !EVP_MAC_update(k->ctx, (const unsigned char *)msg, len) ||
        !EVP_MAC_final(k->ctx, md, &mdlen, sizeof(md)) || mdlen != 32)
        return -EIO;
    encode_mac(md, out);
    OPENSSL_cleanse(md, sizeof(md));
    return 0;
}

int wg_access_mint(struct wg_access_key *k, const char *id, int64_t expires, uint64_t gen,
                   char *out, size_t outlen)
{
    int n;

    if (k == NULL || id == NULL || !wg_session_id_valid(id, strlen(id)) || expires < 0 ||
        outlen < WG_ACCESS_TOKEN_MAX + 1)
        return -EINVAL;
    n = snprintf(out, outlen, "%s.%" PRId64 ".%016" PRIx64 ".", id, expires, gen);
    if (n < 0 || (size_t)n + WG_ACCESS_MAC_LEN + 1 > outlen)
        return -EINVAL;
    if (compute(k, out, (size_t)n - 1, out + n) < 0)
        return -EIO;
    out[n + WG_ACCESS_MAC_LEN] = '\0';
    return n + WG_ACCESS_MAC_LEN;
}

/* Decimal without sign or leading zeros, at most 18 digits (no overflow). */
static bool parse_dec(const char *s, size_t n, int64_t *ret)
{
    int64_t v = 0;
    if (n == 0 || n > 18 || (n > 1 && s[0] == '0'))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *ret = v;
    return true;
}

static bool parse_hex16(const char *s, size_t n, uint64_t *ret)
{
    uint64_t v = 0;
    if (n != 16)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            return false;
        v = v << 4 | d;
    }
    *ret = v;
    return true;
}

int wg_access_verify(struct wg_access_key *k, const char *tok, size_t len,
                     struct wg_access_claims *ret)
{
    char want[WG_ACCESS_MAC_LEN];
    const char *d1, *d2, *d3;
    struct wg_access_claims c;

    if (k == NULL || tok == NULL || len > WG_ACCESS_TOKEN_MAX || len < WG_ACCESS_MAC_LEN + 6)
        return -EACCES;
    struct seen *sl = &k->seen[seen_slot(tok, len)];
    if (sl->len == len && equal_ct(sl->tok, tok, len)) {
        *ret = sl->claims;
        return 0;
    }
    d3 = tok + len - WG_ACCESS_MAC_LEN - 1;
    if (*d3 != '.')
        return -EACCES;
    if (compute(k, tok, (size_t)(d3 - tok), want) < 0 ||
        CRYPTO_memcmp(want, d3 + 1, WG_ACCESS_MAC_LEN) != 0)
        return -EACCES;
    /* Authentic: the rest was written by wg_access_mint(), but is still
     * parsed strictly. */
    d1 = memchr(tok, '.', (size_t)(d3 - tok));
    if (d1 == NULL)
        return -EACCES;
    d2 = memchr(d1 + 1, '.', (size_t)(d3 - d1 - 1));
    if (d2 == NULL || (size_t)(d1 - tok) > WG_SESSION_ID_MAX ||
        !wg_session_id_valid(tok, (size_t)(d1 - tok)) ||
        !parse_dec(d1 + 1, (size_t)(d2 - d1 - 1), &c.expires) ||
        !parse_hex16(d2 + 1, (size_t)(d3 - d2 - 1), &c.gen))
        return -EACCES;
    memcpy(c.id, tok, (size_t)(d1 - tok));
    c.id[d1 - tok] = '\0';
    memcpy(sl->tok, tok, len);
    sl->len = len;
    sl->claims = c;
    *ret = c;
    return 0;
}

uint64_t wg_access_new_gen(void)
{
    uint64_t v = 0;
    while (v == 0) {
        if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v))
            abort(); /* no randomness: nothing safe to hand out */
    }
    return v;
}

/* ---- query and cookies ------------------------------------------------------ */

/* The parameters of target's query: [*qs, end). False without a query. */
static bool query_span(const char *target, size_t len, const char **qs, const char **end)
{
    const char *q = memchr(target, '?', len);
    if (q == NULL)
        return false;
    *qs = q + 1;
    *end = target + len;
    const char *hash = memchr(*qs, '#', (size_t)(*end - *qs));
    if (hash != NULL)
        *end = hash;
    return true;
}

static bool param_named(const char *p, size_t plen, const char *name, const char **val,
                        size_t *vlen)
{
    size_t nl = strlen(name);
    if (plen < nl || memcmp(p, name, nl) != 0)
        return false;
    if (plen == nl) {
        *val = p + nl;
        *vlen = 0;
        return true;
    }
    if (p[nl] != '=')
        return false;
    *val = p + nl + 1;
    *vlen = plen - nl - 1;
    return true;
}

bool wg_access_query_find(const char *target, size_t len, const char *name, const char **val,
                          size_t *vlen)
{
    const char *p, *end;

    if (!query_span(target, len, &p, &end))
        return false;
    while (p <= end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        if (param_named(p, (size_t)(pe - p), name, val, vlen))
            return true;
        if (amp == NULL)
            break;
        p = amp + 1;
    }
    return false;
}

size_t wg_access_query_strip(const char *target, size_t len, const char *name, char *out)
{
    const char *p, *end;
    const char *val;
    size_t vlen, o;
    bool first = true;

    if (!query_span(target, len, &p, &end)) {
        memcpy(out, target, len);
        return len;
    }
    o = (size_t)(p - 1 - target);
    memcpy(out, target, o);
    while (p <= end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        if (pe > p && !param_named(p, (size_t)(pe - p), name, &val, &vlen)) {
            out[o++] = first ? '?' : '&';
            memcpy(out + o, p, (size_t)(pe - p));
            o += (size_t)(pe - p);
            first = false;
        }
        if (amp == NULL)
            break;
        p = amp + 1;
    }
    /* A fragment (never sent by clients, but kept as received). */
    memcpy(out + o, end, (size_t)(target + len - end));
    return o + (size_t)(target + len - end);
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

bool wg_access_cookie_next(const char *v, size_t len, size_t *pos, const char **name, size_t *nlen,
                           const char **val, size_t *vlen)
{
    while (*pos < len) {
        const char *p = v + *pos;
        const char *semi = memchr(p, ';', len - *pos);
        const char *pe = semi ? semi : v + len;
        *pos = semi ? (size_t)(semi - v) + 1 : len;
        while (p < pe && is_space(*p))
            p++;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        if (eq == NULL || eq == p)
            continue; /* no name: not a cookie */
        const char *ne = eq;
        while (ne > p && is_space(ne[-1]))
            ne--;
        const char *vs = eq + 1, *ve = pe;
        while (vs < ve && is_space(*vs))
            vs++;
        while (ve > vs && is_space(ve[-1]))
            ve--;
        if (ve - vs >= 2 && *vs == '"' && ve[-1] == '"') {
            vs++;
            ve--;
        }
        *name = p;
        *nlen = (size_t)(ne - p);
        *val = vs;
        *vlen = (size_t)(ve - vs);
        return true;
    }
    return false;
}

size_t wg_access_cookie_strip(const char *v, size_t len, const char *name, char *out)
{
    size_t pos = 0, o = 0, nl = strlen(name);

    while (pos < len) {
        const char *p = v + pos;
        const char *semi = memchr(p, ';', len - pos);
        const char *pe = semi ? semi : v + len;
        pos = semi ? (size_t)(semi - v) + 1 : len;
        while (p < pe && is_space(*p))
            p++;
        const char *te = pe;
        while (te > p && is_space(te[-1]))
            te--;
        if (te == p)
            continue;
        const char *eq = memchr(p, '=', (size_t)(te - p));
        const char *ne = eq ? eq : te;
        while (ne > p && is_space(ne[-1]))
            ne--;
        if ((size_t)(ne - p) == nl && memcmp(p, name, nl) == 0)
            continue;
        if (o > 0) {
            out[o++] = ';';
            out[o++] = ' ';
        }
        memcpy(out + o, p, (size_t)(te - p));
        o += (size_t)(te - p);
    }
    return o;
}
