/* proxy/tls_names.h - which certificate answers a server name (SNI): the
 * names of each certificate, exact ("preview.example.com") or wildcard
 * ("*.preview.example.com", standing for exactly one more label). Pure: no
 * OpenSSL, so the rules are unit tested on their own. */
#ifndef WG_PROXY_TLS_NAMES_H
#define WG_PROXY_TLS_NAMES_H

#include <stdbool.h>
#include <stddef.h>

struct wg_tls_name {
    char *name;    /* lower case, without the "*." of a wildcard */
    unsigned cert; /* index of its certificate */
    bool wildcard; /* the name was "*.<name>" */
};

struct wg_tls_names {
    struct wg_tls_name *v;
    size_t len, cap;
};

/* Whether pattern (a certificate name, "*." allowed as its first label
 * only) covers host (a server name); both compared without regard to case,
 * one trailing dot of host ignored. A wildcard stands for one whole label,
 * never empty, never more than one: "*.a.b" covers "x.a.b", not "a.b" nor
 * "y.x.a.b". */
bool wg_tls_name_match(const char *pattern, const char *host);

/* Adds a certificate's name. Names that cannot match anything ("*" alone,
 * "*" inside a label, empty) are skipped (returns 1). Returns 0, 1 or
 * -ENOMEM. */
int wg_tls_names_add(struct wg_tls_names *n, const char *name, unsigned cert);

/* The certificate for host: an exact name first, then a wildcard; the
 * earlier certificate among equals. -1 when none (the caller uses the
 * default certificate). */
int wg_tls_names_find(const struct wg_tls_names *n, const char *host);

/* NULL-safe; n may be filled again after. */
void wg_tls_names_free(struct wg_tls_names *n);

#endif
