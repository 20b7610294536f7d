/* proxy/tls_names.c - SNI names of the certificates; see tls_names.h. */
#include "proxy/tls_names.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A DNS name is at most 253 bytes; a server name longer is no name of ours. */
#define NAME_MAX_LEN 253

/* host's length without one trailing dot; 0 when it is not a plausible name. */
static size_t host_len(const char *host)
{
    size_t n = strlen(host);

    if (n > 0 && host[n - 1] == '.')
        n--;
    return n > NAME_MAX_LEN ? 0 : n;
}

/* Whether host[0, hn) equals name (a stored, lower-case name) or, for a
 * wildcard, is one non-empty label followed by "." and name. */
static bool covers(const char *name, bool wildcard, const char *host, size_t hn)
{
    size_t nn = strlen(name);
    const char *dot;

    if (!wildcard)
        return hn == nn && strncasecmp(host, name, nn) == 0;
    dot = memchr(host, '.', hn);
    if (dot == NULL || dot == host)
        return false;
    return (size_t)(host + hn - (dot + 1)) == nn && strncasecmp(dot + 1, name, nn) == 0;
}

bool wg_tls_name_match(const char *pattern, const char *host)
{
    bool wildcard = strncmp(pattern, "*.", 2) == 0;
    const char *name = wildcard ? pattern + 2 : pattern;
    size_t hn = host_len(host);

    if (hn == 0 || name[0] == '\0' || strchr(name, '*') != NULL)
        return false;
    return covers(name, wildcard, host, hn);
}

int wg_tls_names_add(struct wg_tls_names *n, const char *name, unsigned cert)
{
    bool wildcard = strncmp(name, "*.", 2) == 0;
    const char *s = wildcard ? name + 2 : name;
    size_t len = strlen(s);
    char *copy;

    /* "*" elsewhere (partial labels like "w*.example.com") is not honoured
     * by browsers either. */
    if (len == 0 || len > NAME_MAX_LEN || strchr(s, '*') != NULL)
        return 1;
    if (n->len == n->cap) {
        size_t cap = n->cap ? n->cap * 2 : 8;
        struct wg_tls_name *v = realloc(n->v, cap * sizeof(*v));
        if (v == NULL)
            return -ENOMEM;
        n->v = v;
        n->cap = cap;
    }
    copy = malloc(len + 1);
    if (copy == NULL)
        return -ENOMEM;
    for (size_t i = 0; i <= len; i++)
        copy[i] = (char)tolower((unsigned char)s[i]);
    n->v[n->len++] = (struct wg_tls_name){.name = copy, .cert = cert, .wildcard = wildcard};
    return 0;
}

int wg_tls_names_find(const struct wg_tls_names *n, const char *host)
{
    size_t hn = host_len(host);

    if (hn == 0)
        return -1;
    /* Two passes: an exact name beats any wildcard, whatever the order. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < n->len; i++)
            if (n->v[i].wildcard == (pass == 1) && covers(n->v[i].name, n->v[i].wildcard, host, hn))
                return (int)n->v[i].cert;
    return -1;
}

void wg_tls_names_free(struct wg_tls_names *n)
{
    if (n == NULL)
        return;
    for (size_t i = 0; i < n->len; i++)
        free(n->v[i].name);
    free(n->v);
    n->v = NULL;
    n->len = n->cap = 0;
}
