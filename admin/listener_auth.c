/* admin/listener_auth.c - the token check of the admin listener: which
 * scope a request needs (none, read, admin) and whether the Authorization
 * it carries grants it. Pure: the listener calls it once per request head;
 * the unit tests call it with tables of their own. See listener.h. */
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "admin/listener.h"

bool wg_admin_bearer_ok(const char *token, const char *value, size_t len)
{
    static const char scheme[] = "bearer";
    const size_t sl = sizeof(scheme) - 1;
    size_t i, tl;

    if (token == NULL || token[0] == '\0' || value == NULL)
        return false;
    if (len <= sl || strncasecmp(value, scheme, sl) != 0 || (value[sl] != ' ' && value[sl] != '\t'))
        return false;
    for (i = sl; i < len && (value[i] == ' ' || value[i] == '\t'); i++)
        ;
    const unsigned char *given = (const unsigned char *)value + i;
    size_t gl = len - i;
    tl = strlen(token);
    /* Every byte of the token is compared whatever the input: the time
     * depends on the token's length, never on where a guess goes wrong. */
    volatile unsigned diff = gl != tl;
    for (size_t k = 0; k < tl; k++)
        diff |= (unsigned char)token[k] ^ (k < gl ? given[k] : 0u);
    return diff == 0;
}

static bool span_is(const char *s, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(s, lit, len) == 0;
}

bool wg_admin_route_match(const char *pattern, const char *path, size_t path_len)
{
    const char *p = pattern, *s = path, *end = path + path_len;

    while (*p != '\0' && s < end) {
        if (*p == '{' && (p == pattern || p[-1] == '/')) {
            const char *close = strchr(p, '}');
            const char *slash = memchr(s, '/', (size_t)(end - s));
            const char *seg_end = slash ? slash : end;
            if (close == NULL)
                return false; /* a broken pattern matches nothing */
            if (seg_end == s)
                return false; /* an empty segment is not an id */
            s = seg_end;
            p = close + 1;
            continue;
        }
        if (*p != *s)
            return false;
        p++;
        s++;
    }
    return *p == '\0' && s == end;
}

enum wg_admin_scope wg_admin_scope_for(const char *method, size_t method_len, const char *path,
                                       size_t path_len, const char *const *read_routes,
                                       size_t nread)
{
    /* /v1 and everything under /v1/ is the token-protected API. */
    bool api = span_is(path, path_len, "/v1") || (path_len > 3 && memcmp(path, "/v1/", 4) == 0);
    if (!api)
        return WG_ADMIN_SCOPE_NONE;
    /* Only a read, on a path a handler declared readable, may do with the
     * read-only token: any other method, and any route nobody declared
     * (a new one included), needs the admin token. */
    if (!span_is(method, method_len, "GET") && !span_is(method, method_len, "HEAD"))
        return WG_ADMIN_SCOPE_ADMIN;
    for (size_t i = 0; i < nread; i++)
        if (read_routes[i] != NULL && wg_admin_route_match(read_routes[i], path, path_len))
            return WG_ADMIN_SCOPE_READ;
    return WG_ADMIN_SCOPE_ADMIN;
}

enum wg_admin_auth wg_admin_auth_decide(const struct wg_admin_tokens *tokens,
                                        enum wg_admin_scope need, const char *authz,
                                        size_t authz_len)
{
    const char *admin = tokens->admin, *read = tokens->read;
    bool have_admin = admin != NULL && admin[0] != '\0';
    bool have_read = read != NULL && read[0] != '\0';

    if (need == WG_ADMIN_SCOPE_NONE)
        return WG_ADMIN_AUTH_OK;
    if (!have_admin && !have_read)
        return WG_ADMIN_AUTH_NOT_CONFIGURED;
    if (authz == NULL)
        return WG_ADMIN_AUTH_MISSING;
    /* Both comparisons run whatever the first says, so the time does not
     * tell which token a guess came close to. */
    bool is_admin = wg_admin_bearer_ok(admin, authz, authz_len);
    bool is_read = wg_admin_bearer_ok(read, authz, authz_len);
    if (is_admin)
        return WG_ADMIN_AUTH_OK;
    if (is_read)
        return need == WG_ADMIN_SCOPE_READ ? WG_ADMIN_AUTH_OK : WG_ADMIN_AUTH_READ_ONLY;
    return WG_ADMIN_AUTH_INVALID;
}

enum wg_admin_auth wg_admin_auth_check(const struct wg_admin_tokens *tokens,
                                       const char *const *read_routes, size_t nread,
                                       const char *method, const char *path, size_t path_len,
                                       const char *authz, size_t authz_len)
{
    enum wg_admin_scope need =
        wg_admin_scope_for(method, strlen(method), path, path_len, read_routes, nread);
    return wg_admin_auth_decide(tokens, need, authz, authz_len);
}

int wg_admin_auth_status(enum wg_admin_auth a)
{
    switch (a) {
    case WG_ADMIN_AUTH_OK:
        return 0;
    case WG_ADMIN_AUTH_NOT_CONFIGURED:
        return 503;
    case WG_ADMIN_AUTH_MISSING:
    case WG_ADMIN_AUTH_INVALID:
        return 401;
    case WG_ADMIN_AUTH_READ_ONLY:
        return 403;
    }
    return 401;
}
