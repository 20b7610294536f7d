/* common/access.h - access tokens of private session routes: signed links,
 * the cookie they are exchanged for, and the header API clients send.
 *
 * A token is text of the form
 *
 *     <session id> "." <expiry, unix seconds> "." <generation, 16 hex> "." <mac>
 *
 * where mac is the unpadded base64url HMAC-SHA256 (43 characters), keyed
 * with the bytes of access.secret_file, of "wakegate-access-v1\n" followed
 * by everything before the last '.'. The session id names the session (it
 * holds no '.'), so a token of session A is refused on session B before any
 * lookup; the generation is the record's `gen`, replaced on revoke, so a
 * revoke invalidates every link and cookie of that session at once. The
 * same text is the link's query parameter, the cookie's value and the
 * header's value.
 *
 * Verification is pure and in process (no Redis): the MAC is compared in
 * constant time (CRYPTO_memcmp); expiry and generation are the caller's
 * (the generation comes from the proxy's session cache).
 *
 * A struct wg_access_key holds an OpenSSL MAC context and a small table of
 * tokens it verified (a repeated cookie costs a constant-time compare, not
 * an HMAC); it is not thread-safe: one per event loop. */
#ifndef WG_COMMON_ACCESS_H
#define WG_COMMON_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/session.h"

/* Names on the wire. The query parameter and the cookie share a name; the
 * header is ours, so Authorization stays the application's. */
#define WG_ACCESS_QUERY "wg_token"
#define WG_ACCESS_COOKIE "wg_token"
#define WG_ACCESS_HEADER "x-wakegate-token"

/* access.secret_file: at least this many bytes (256 bits), at most the max. */
#define WG_ACCESS_SECRET_MIN 32
#define WG_ACCESS_SECRET_MAX 4096

#define WG_ACCESS_MAC_LEN 43
/* id . 20 digits . 16 hex . mac */
#define WG_ACCESS_TOKEN_MAX (WG_SESSION_ID_MAX + 1 + 20 + 1 + 16 + 1 + WG_ACCESS_MAC_LEN)

struct wg_access_key; /* opaque */

struct wg_access_claims {
    char id[WG_SESSION_ID_MAX + 1];
    int64_t expires; /* unix seconds */
    uint64_t gen;
};

/* Copies the secret. Returns 0, -EINVAL (shorter than WG_ACCESS_SECRET_MIN)
 * or -ENOMEM (or -EIO when OpenSSL has no HMAC). */
int wg_access_key_new(const unsigned char *secret, size_t len, struct wg_access_key **ret);
/* NULL-safe. */
void wg_access_key_free(struct wg_access_key *k);

/* Writes the token (NUL-terminated) into out, which holds
 * WG_ACCESS_TOKEN_MAX + 1 bytes or more. Returns its length, or -EINVAL
 * (bad id, negative expiry, out too small), -EIO. */
int wg_access_mint(struct wg_access_key *k, const char *id, int64_t expires, uint64_t gen,
                   char *out, size_t outlen);

/* Checks the form and the MAC of tok[0, len). Returns 0 with *ret filled,
 * or -EACCES. Expiry and generation are not checked here. */
int wg_access_verify(struct wg_access_key *k, const char *tok, size_t len,
                     struct wg_access_claims *ret);

/* A random non-zero generation (getrandom). */
uint64_t wg_access_new_gen(void);

/* ---- finding and removing our credentials in a request (pure) ---------- */

/* The value of the first query parameter `name` in a request target
 * ("/p?a=1&name=v"). Returns true with *val / *vlen set (the raw value, not
 * decoded). */
bool wg_access_query_find(const char *target, size_t len, const char *name, const char **val,
                          size_t *vlen);
/* Copies target to out without any `name` parameter (and without a '?' left
 * with nothing after it). out holds len bytes. Returns the length written. */
size_t wg_access_query_strip(const char *target, size_t len, const char *name, char *out);

/* One cookie of a Cookie field value: iterate with *pos = 0 until false.
 * Name and value are trimmed of spaces; a quoted value loses its quotes. */
bool wg_access_cookie_next(const char *v, size_t len, size_t *pos, const char **name, size_t *nlen,
                           const char **val, size_t *vlen);
/* Copies a Cookie field value without the cookies named `name`, "; "
 * between the rest. out holds 2 * len bytes (a value written "a=1;b=2"
 * gains the spaces). Returns the length written (0: no
 * cookie left). */
size_t wg_access_cookie_strip(const char *v, size_t len, const char *name, char *out);

#endif
