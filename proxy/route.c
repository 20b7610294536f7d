/* proxy/route.c - compiling the routes list and matching requests against it. */
#include "proxy/route.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MARK "{session}"
#define MARK_LEN (sizeof(MARK) - 1)
#define PORT_MARK "{port}"
#define PORT_MARK_LEN (sizeof(PORT_MARK) - 1)

enum value_kind {
    VALUE_ANY = 0, /* the field is present, any value */
    VALUE_EXACT,
    VALUE_SESSION, /* present, non-empty, captured */
};

enum cap_kind {
    CAP_NONE = 0,
    CAP_SESSION, /* {session}: [A-Za-z0-9_-]+ */
    CAP_PORT,    /* {port}: [A-Za-z0-9]+, a port name (common/config.h) */
};

/* A literal, or pre + capture + post, or pre + capture + mid + capture +
 * post. The literals point into the router's own block. */
struct pattern {
    bool set;
    bool ends_slash;      /* path: the whole pattern ends in '/' */
    enum cap_kind cap[2]; /* in the order they appear; CAP_NONE: none */
    const char *pre;
    size_t pre_len;
    const char *mid; /* between the two captures */
    size_t mid_len;
    const char *post;
    size_t post_len;
};

/* Where the marks of a pattern are, in order. */
struct marks {
    size_t n;
    size_t at[2];
    enum cap_kind kind[2];
};

struct compiled {
    struct wg_route pub; /* what wg_router_match hands out */
    struct pattern host;
    struct pattern path;
    const char *header_name; /* NULL: no header condition */
    size_t header_name_len;
    enum value_kind header_kind;
    const char *header_value;
    size_t header_value_len;
    char label[WG_ROUTE_LABEL_MAX]; /* wg_router_label() */
};

/* One block: this header, the compiled routes, then the copied strings. */
struct wg_router {
    size_t len;
    struct compiled routes[];
};

/* A span of the input that {session} or {port} matched. */
struct capture {
    const char *p;
    size_t len;
};

struct captures {
    struct capture session, port;
};

static size_t mark_len(enum cap_kind k)
{
    return k == CAP_PORT ? PORT_MARK_LEN : MARK_LEN;
}

static bool is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool is_session_char(unsigned char c)
{
    return is_alnum(c) || c == '-' || c == '_';
}

static bool all_session_chars(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!is_session_char((unsigned char)s[i]))
            return false;
    }
    return true;
}

/* ASCII only: locale-dependent tolower() would let a Turkish locale fold 'I'
 * differently from the peer. */
static unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

static bool ascii_ieq(const char *a, const char *b, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i]))
            return false;
    }
    return true;
}

static bool is_port_char(unsigned char c)
{
    return is_alnum(c);
}

static bool is_cap_char(enum cap_kind k, unsigned char c)
{
    return k == CAP_PORT ? is_port_char(c) : is_session_char(c);
}

static bool is_tchar(unsigned char c)
{
    return is_alnum(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (ascii_lower(c) >= 'a' && ascii_lower(c) <= 'f');
}

/* ---- compiling ---------------------------------------------------------- */

static void route_error(char *err, size_t errlen, size_t index, const struct wg_route_cfg *cfg,
                        const char *key, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void route_error(char *err, size_t errlen, size_t index, const struct wg_route_cfg *cfg,
                        const char *key, const char *fmt, ...)
{
    int n;
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    if (cfg->line > 0)
        n = snprintf(err, errlen, "routes[%zu] (line %d): %s: ", index, cfg->line, key);
    else
        n = snprintf(err, errlen, "routes[%zu]: %s: ", index, key);
    if (n < 0 || (size_t)n >= errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

/* Finds the one "{session}" and the one "{port}" in s, either or both; any
 * other brace is an error. */
static const char *find_marks(const char *s, size_t len, struct marks *ret)
{
    struct marks m = {.n = 0};

    for (size_t i = 0; i < len; i++) {
        enum cap_kind k;

        if (s[i] != '{' && s[i] != '}')
            continue;
        if (s[i] == '{' && len - i >= MARK_LEN && memcmp(s + i, MARK, MARK_LEN) == 0)
            k = CAP_SESSION;
        else if (s[i] == '{' && len - i >= PORT_MARK_LEN &&
                 memcmp(s + i, PORT_MARK, PORT_MARK_LEN) == 0)
            k = CAP_PORT;
        else
            return "'{' and '}' may appear only as {session} or {port}";
        if (m.n == 1 && m.kind[0] == k)
            return k == CAP_PORT ? "holds {port} more than once" : "holds {session} more than once";
        m.at[m.n] = i;
        m.kind[m.n] = k;
        m.n++;
        i += mark_len(k) - 1;
    }
    *ret = m;
    return NULL;
}

/* Two captures side by side must be told apart: a separator between them,
 * and one that a port name cannot hold at the port's side. */
static const char *check_between(const char *s, const struct marks *m)
{
    size_t end0, mid_len;

    if (m->n < 2)
        return NULL;
    end0 = m->at[0] + mark_len(m->kind[0]);
    mid_len = m->at[1] - end0;
    if (mid_len == 0)
        return "{session} and {port} need a separator between them";
    if (m->kind[0] == CAP_PORT && is_port_char((unsigned char)s[end0]))
        return "the separator after {port} must start with a character a port name cannot hold "
               "('-', '_' or '.')";
    if (m->kind[1] == CAP_PORT && is_port_char((unsigned char)s[m->at[1] - 1]))
        return "the separator before {port} must end with a character a port name cannot hold "
               "('-', '_' or '.')";
    return NULL;
}

static bool is_mark_at(const struct marks *m, size_t i, size_t *ret_len)
{
    for (size_t k = 0; k < m->n; k++)
        if (m->at[k] == i) {
            *ret_len = mark_len(m->kind[k]);
            return true;
        }
    return false;
}

static const char *check_host(const char *s, size_t len, const struct marks *m)
{
    bool label_empty = true;
    size_t mlen;

    if (len == 0)
        return "must not be empty";
    if (s[0] == '[') {
        if (m->n > 0)
            return "an IP literal cannot hold {session} or {port}";
        if (len < 3 || s[len - 1] != ']')
            return "an IPv6 literal must be \"[address]\", without a port";
        for (size_t i = 1; i < len - 1; i++) {
            if (!is_hex((unsigned char)s[i]) && s[i] != ':' && s[i] != '.')
                return "invalid character in IPv6 literal";
        }
        return NULL;
    }
    /* A capture never holds a '.', so a mark with literal text on either
     * side is always confined to one label; only the literal labels need
     * checking. */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (is_mark_at(m, i, &mlen)) {
            i += mlen - 1;
            label_empty = false;
            continue;
        }
        if (c == '.') {
            if (label_empty)
                return "has an empty label";
            label_empty = true;
            continue;
        }
        if (c == ':')
            return "must not hold a port; the port of the Host header is ignored";
        if (c == '*')
            return "'*' wildcards are not supported; use one {session} label";
        if (!is_session_char(c))
            return "may hold only letters, digits, '-', '_', '.' and {session}";
        label_empty = false;
    }
    if (label_empty)
        return "has an empty label";
    return check_between(s, m);
}

static const char *check_path(const char *s, size_t len, const struct marks *m)
{
    size_t mlen;

    if (len == 0 || s[0] != '/')
        return "must start with '/'";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (is_mark_at(m, i, &mlen)) {
            i += mlen - 1;
            continue;
        }
        /* Targets on the wire are visible ASCII; anything else never matches. */
        if (c <= 0x20 || c >= 0x7f)
            return "may hold only visible ASCII characters";
        if (c == '?' || c == '#')
            return "must not hold '?' or '#'; only the path is matched";
    }
    for (size_t k = 0; k < m->n; k++) {
        size_t end = m->at[k] + mark_len(m->kind[k]);

        if (s[m->at[k] - 1] != '/' || (end < len && s[end] != '/'))
            return m->kind[k] == CAP_PORT ? "{port} must be a whole path segment"
                                          : "{session} must be a whole path segment";
    }
    return NULL;
}

static const char *check_header_name(const char *s, size_t len)
{
    if (len == 0)
        return "the field name must not be empty";
    for (size_t i = 0; i < len; i++) {
        if (!is_tchar((unsigned char)s[i]))
            return "the field name is not a valid HTTP token";
    }
    return NULL;
}

static const char *check_header_value(const char *s, size_t len)
{
    struct marks m;
    const char *msg = find_marks(s, len, &m);

    if (msg != NULL)
        return msg;
    for (size_t k = 0; k < m.n; k++)
        if (m.kind[k] == CAP_PORT)
            return "{port} is taken from the host or the path only";
    if (m.n > 0)
        return "{session} must be the whole value";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return "the value holds a control character";
    }
    /* Received values are trimmed, so padding could never match. */
    if (len > 0 && (s[0] == ' ' || s[0] == '\t' || s[len - 1] == ' ' || s[len - 1] == '\t'))
        return "the value must not start or end with whitespace";
    return NULL;
}

/* Copies s[0, len) and a NUL to *cursor, advancing it. */
static const char *arena_copy(char **cursor, const char *s, size_t len)
{
    char *p = *cursor;

    memcpy(p, s, len);
    p[len] = '\0';
    *cursor = p + len + 1;
    return p;
}

/* Splits a checked pattern s[0, len) with its marks m into p. */
static void pattern_set(struct pattern *p, const char *copy, size_t len, const struct marks *m)
{
    size_t end;

    p->set = true;
    p->ends_slash = len > 0 && copy[len - 1] == '/';
    p->pre = copy;
    if (m->n == 0) {
        p->pre_len = len;
        p->post = copy + len;
        p->post_len = 0;
        return;
    }
    p->pre_len = m->at[0];
    p->cap[0] = m->kind[0];
    end = m->at[0] + mark_len(m->kind[0]);
    if (m->n == 2) {
        p->cap[1] = m->kind[1];
        p->mid = copy + end;
        p->mid_len = m->at[1] - end;
        end = m->at[1] + mark_len(m->kind[1]);
    }
    p->post = copy + end;
    p->post_len = len - end;
}

static size_t cfg_strings_size(const struct wg_route_cfg *c)
{
    size_t n = 0;

    n += c->host ? strlen(c->host) + 1 : 0;
    n += c->path_prefix ? strlen(c->path_prefix) + 1 : 0;
    n += c->header_name ? strlen(c->header_name) + 1 : 0;
    n += c->header_value ? strlen(c->header_value) + 1 : 0;
    return n;
}

/* Appends s to the label being built in dst (used bytes *n), "{session}"
 * written as "<session>" and "{port}" as "<port>"; past the room the label
 * ends in "...". */
static void label_add(char *dst, size_t *n, const char *s)
{
    static const char repl[] = "<session>", port_repl[] = "<port>";
    const size_t room = WG_ROUTE_LABEL_MAX - 1;

    while (*s != '\0' && *n <= room) {
        const char *piece = s;
        size_t len = 1, skip = 1;
        if (strncmp(s, MARK, MARK_LEN) == 0) {
            piece = repl;
            len = sizeof(repl) - 1;
            skip = MARK_LEN;
        } else if (strncmp(s, PORT_MARK, PORT_MARK_LEN) == 0) {
            piece = port_repl;
            len = sizeof(port_repl) - 1;
            skip = PORT_MARK_LEN;
        }
        if (*n + len > room) {
            size_t at = *n < room - 3 ? *n : room - 3;
            memcpy(dst + at, "...", 4);
            *n = room + 1; /* full: nothing more goes in */
            return;
        }
        memcpy(dst + *n, piece, len);
        *n += len;
        s += skip;
    }
    if (*n <= room)
        dst[*n] = '\0';
}

/* "<index>:host=...,path=...,header=name:value", or "<index>:any". */
static void label_make(char *dst, size_t index, const struct wg_route_cfg *c)
{
    char head[32];
    size_t n = 0;
    const char *sep = "";

    snprintf(head, sizeof(head), "%zu:", index);
    dst[0] = '\0';
    label_add(dst, &n, head);
    if (c->host != NULL) {
        label_add(dst, &n, "host=");
        label_add(dst, &n, c->host);
        sep = ",";
    }
    if (c->path_prefix != NULL) {
        label_add(dst, &n, sep);
        label_add(dst, &n, "path=");
        label_add(dst, &n, c->path_prefix);
        sep = ",";
    }
    if (c->header_name != NULL) {
        label_add(dst, &n, sep);
        label_add(dst, &n, "header=");
        label_add(dst, &n, c->header_name);
        label_add(dst, &n, ":");
        label_add(dst, &n, c->header_value != NULL ? c->header_value : "*");
        sep = ",";
    }
    if (sep[0] == '\0')
        label_add(dst, &n, "any");
}

/* The route's fixed upstream, if it has one. Returns 0 or -EINVAL with err
 * written. */
static int compile_upstream(struct compiled *out, const struct wg_route_cfg *c, size_t index,
                            char *err, size_t errlen)
{
    if (!c->has_upstream)
        return 0;
    if (c->upstream.salen > sizeof(out->pub.upstream)) {
        route_error(err, errlen, index, c, "upstream", "address length is invalid");
        return -EINVAL;
    }
    memcpy(&out->pub.upstream, &c->upstream.sa, c->upstream.salen);
    out->pub.upstream_len = c->upstream.salen;
    /* Only for log lines, so a long name is cut rather than refused. */
    snprintf(out->pub.upstream_text, sizeof(out->pub.upstream_text), "%s",
             c->upstream.text ? c->upstream.text : "");
    return 0;
}

/* Which condition captured {session} and {port} so far, for the error
 * when another would capture one again. */
struct capture_keys {
    const char *session;
    const char *port;
};

/* Records the captures of key's pattern. Returns 0, or -EINVAL with err
 * written when another condition captures one of them already. */
static int take_captures(struct capture_keys *keys, const struct marks *m, const char *key,
                         const char *pattern, const struct wg_route_cfg *c, size_t index, char *err,
                         size_t errlen)
{
    for (size_t k = 0; k < m->n; k++) {
        const char *by = m->kind[k] == CAP_PORT ? keys->port : keys->session;
        if (by != NULL) {
            route_error(err, errlen, index, c, key, "\"%s\": %s is already captured by %s", pattern,
                        m->kind[k] == CAP_PORT ? PORT_MARK : MARK, by);
            return -EINVAL;
        }
    }
    for (size_t k = 0; k < m->n; k++)
        *(m->kind[k] == CAP_PORT ? &keys->port : &keys->session) = key;
    return 0;
}

/* match.host, with the captures it makes into keys. Returns 0 or -EINVAL
 * with err written. */
static int compile_host(struct compiled *out, char **cursor, const struct wg_route_cfg *c,
                        size_t index, struct capture_keys *keys, char *err, size_t errlen)
{
    size_t len;
    struct marks m;
    const char *msg;

    if (c->host == NULL)
        return 0;
    len = strlen(c->host);
    /* A Host of "example.com." names the same host; it is dropped on
     * input too. */
    if (len > 1 && c->host[len - 1] == '.')
        len--;
    msg = find_marks(c->host, len, &m);
    if (msg == NULL)
        msg = check_host(c->host, len, &m);
    if (msg != NULL) {
        route_error(err, errlen, index, c, "match.host", "\"%s\": %s", c->host, msg);
        return -EINVAL;
    }
    if (take_captures(keys, &m, "match.host", c->host, c, index, err, errlen) < 0)
        return -EINVAL;
    pattern_set(&out->host, arena_copy(cursor, c->host, len), len, &m);
    return 0;
}

/* match.path_prefix, like compile_host(). */
static int compile_path(struct compiled *out, char **cursor, const struct wg_route_cfg *c,
                        size_t index, struct capture_keys *keys, char *err, size_t errlen)
{
    size_t len;
    struct marks m;
    const char *msg;

    if (c->path_prefix == NULL)
        return 0;
    len = strlen(c->path_prefix);
    msg = find_marks(c->path_prefix, len, &m);
    if (msg == NULL)
        msg = check_path(c->path_prefix, len, &m);
    if (msg != NULL) {
        route_error(err, errlen, index, c, "match.path_prefix", "\"%s\": %s", c->path_prefix, msg);
        return -EINVAL;
    }
    if (take_captures(keys, &m, "match.path_prefix", c->path_prefix, c, index, err, errlen) < 0)
        return -EINVAL;
    pattern_set(&out->path, arena_copy(cursor, c->path_prefix, len), len, &m);
    return 0;
}

/* match.header's value: any, {session}, or exact. */
static int compile_header_value(struct compiled *out, char **cursor, const struct wg_route_cfg *c,
                                size_t index, struct capture_keys *keys, char *err, size_t errlen)
{
    const char *v = c->header_value;
    size_t len;
    const char *msg;

    if (v == NULL || strcmp(v, "*") == 0) {
        out->header_kind = VALUE_ANY;
        return 0;
    }
    if (strcmp(v, MARK) == 0) {
        if (keys->session != NULL) {
            route_error(err, errlen, index, c, "match.header",
                        "{session} is already captured by %s", keys->session);
            return -EINVAL;
        }
        out->header_kind = VALUE_SESSION;
        keys->session = "match.header";
        return 0;
    }
    len = strlen(v);
    msg = check_header_value(v, len);
    if (msg != NULL) {
        route_error(err, errlen, index, c, "match.header", "\"%s\": %s", v, msg);
        return -EINVAL;
    }
    out->header_kind = VALUE_EXACT;
    out->header_value = arena_copy(cursor, v, len);
    out->header_value_len = len;
    return 0;
}

/* match.header, like compile_host(). */
static int compile_header(struct compiled *out, char **cursor, const struct wg_route_cfg *c,
                          size_t index, struct capture_keys *keys, char *err, size_t errlen)
{
    size_t name_len;
    const char *msg;

    if (c->header_name == NULL && c->header_value != NULL) {
        route_error(err, errlen, index, c, "match.header", "a value needs a field name");
        return -EINVAL;
    }
    if (c->header_name == NULL)
        return 0;
    name_len = strlen(c->header_name);
    msg = check_header_name(c->header_name, name_len);
    if (msg != NULL) {
        route_error(err, errlen, index, c, "match.header", "\"%s\": %s", c->header_name, msg);
        return -EINVAL;
    }
    out->header_name = arena_copy(cursor, c->header_name, name_len);
    out->header_name_len = name_len;
    return compile_header_value(out, cursor, c, index, keys, err, errlen);
}

/* Checks one route and copies it into *out, its strings to *cursor.
 * Returns 0 or -EINVAL with err written. */
static int compile_route(struct compiled *out, char **cursor, const struct wg_route_cfg *c,
                         size_t index, char *err, size_t errlen)
{
    struct capture_keys keys = {NULL, NULL};
    int result;

    out->pub.index = index;
    out->pub.line = c->line;
    out->pub.strip_prefix = c->strip_prefix;
    out->pub.has_upstream = c->has_upstream;
    out->pub.port = c->port;
    out->pub.access_public = c->access_public;
    out->pub.access_by_template = c->access_by_template;
    result = compile_upstream(out, c, index, err, errlen);
    if (result < 0)
        goto out;
    result = compile_host(out, cursor, c, index, &keys, err, errlen);
    if (result < 0)
        goto out;
    result = compile_path(out, cursor, c, index, &keys, err, errlen);
    if (result < 0)
        goto out;
    result = compile_header(out, cursor, c, index, &keys, err, errlen);
    if (result < 0)
        goto out;
    if (keys.port != NULL && (keys.session == NULL || c->has_upstream)) {
        route_error(err, errlen, index, c, keys.port,
                    "{port} names a port of a session: the route must capture {session} too");
        result = -EINVAL;
        goto out;
    }
    if (keys.port != NULL && c->port != 0) {
        route_error(err, errlen, index, c, "port",
                    "the port comes from {port} in %s; remove port:", keys.port);
        result = -EINVAL;
        goto out;
    }
    out->pub.captures_session = keys.session != NULL;
    out->pub.captures_port = keys.port != NULL;
    label_make(out->label, index, c);
out:
    return result;
}

int wg_router_new(const struct wg_route_cfg *routes, size_t n, struct wg_router **ret_router,
                  char *err, size_t errlen)
{
    struct wg_router *r = NULL;
    size_t head = offsetof(struct wg_router, routes);
    size_t size;
    char *cursor;
    int result = 0;

    if (n > (SIZE_MAX - head) / sizeof(struct compiled)) {
        result = -ENOMEM;
        goto out;
    }
    size = head + n * sizeof(struct compiled);
    for (size_t i = 0; i < n; i++) {
        size_t s = cfg_strings_size(&routes[i]);

        if (s > SIZE_MAX - size) {
            result = -ENOMEM;
            goto out;
        }
        size += s;
    }
    r = calloc(1, size);
    if (r == NULL) {
        result = -ENOMEM;
        goto out;
    }
    r->len = n;
    cursor = (char *)&r->routes[n];
    for (size_t i = 0; i < n; i++) {
        result = compile_route(&r->routes[i], &cursor, &routes[i], i, err, errlen);
        if (result < 0)
            goto out;
    }
    *ret_router = r;
    r = NULL;
out:
    if (result == -ENOMEM && err != NULL && errlen > 0)
        snprintf(err, errlen, "routes: out of memory");
    free(r);
    return result;
}

void wg_router_free(struct wg_router *router)
{
    free(router);
}

size_t wg_router_len(const struct wg_router *router)
{
    return router ? router->len : 0;
}

const char *wg_router_label(const struct wg_router *router, size_t i)
{
    return router != NULL && i < router->len ? router->routes[i].label : NULL;
}

/* ---- matching ----------------------------------------------------------- */

/* Reduces a Host value to the name that patterns see: no ":port", at most
 * one trailing '.' dropped. Returns false when the value is not a host[:port]
 * shape, so that no host pattern matches it. */
static bool host_normalize(const char *h, size_t len, const char **ret_h, size_t *ret_len)
{
    size_t end;

    if (h == NULL || len == 0)
        return false;
    if (h[0] == '[') {
        const char *close = memchr(h, ']', len);

        if (close == NULL)
            return false;
        end = (size_t)(close - h) + 1;
    } else {
        const char *colon = memchr(h, ':', len);

        end = colon ? (size_t)(colon - h) : len;
    }
    if (end < len) {
        /* RFC 3986 allows an empty port after the colon. */
        if (h[end] != ':')
            return false;
        for (size_t i = end + 1; i < len; i++) {
            if (h[i] < '0' || h[i] > '9')
                return false;
        }
    }
    if (end > 1 && h[end - 1] == '.')
        end--;
    if (end == 0)
        return false;
    *ret_h = h;
    *ret_len = end;
    return true;
}

static void set_capture(struct captures *caps, enum cap_kind k, const char *p, size_t len)
{
    struct capture *c = k == CAP_PORT ? &caps->port : &caps->session;

    c->p = p;
    c->len = len;
}

/* Splits the span between a pattern's literals, m[0, len), into its two
 * captures. A port name holds no separator character (check_between), so
 * the longest run of port characters at the port's end of the span is the
 * port, and the rest after the separator the session. eq compares the
 * separator (with or without case). */
static bool split_two(const struct pattern *p, const char *m, size_t len, struct captures *caps,
                      bool (*eq)(const char *, const char *, size_t))
{
    size_t run = 0, rest;

    if (p->cap[0] == CAP_PORT) {
        while (run < len && is_port_char((unsigned char)m[run]))
            run++;
        if (run == 0 || len - run < p->mid_len + 1 || !eq(m + run, p->mid, p->mid_len))
            return false;
        rest = len - run - p->mid_len;
        for (size_t i = 0; i < rest; i++)
            if (!is_cap_char(p->cap[1], (unsigned char)m[run + p->mid_len + i]))
                return false;
        set_capture(caps, p->cap[0], m, run);
        set_capture(caps, p->cap[1], m + run + p->mid_len, rest);
        return true;
    }
    while (run < len && is_port_char((unsigned char)m[len - 1 - run]))
        run++;
    if (run == 0 || len - run < p->mid_len + 1 ||
        !eq(m + len - run - p->mid_len, p->mid, p->mid_len))
        return false;
    rest = len - run - p->mid_len;
    for (size_t i = 0; i < rest; i++)
        if (!is_cap_char(p->cap[0], (unsigned char)m[i]))
            return false;
    set_capture(caps, p->cap[0], m, rest);
    set_capture(caps, p->cap[1], m + len - run, run);
    return true;
}

static bool bytes_eq(const char *a, const char *b, size_t len)
{
    return len == 0 || memcmp(a, b, len) == 0;
}

static bool match_host(const struct pattern *p, const char *h, size_t len, struct captures *caps)
{
    size_t mid;

    if (!p->cap[0])
        return len == p->pre_len && ascii_ieq(h, p->pre, len);
    if (len <= p->pre_len + p->post_len)
        return false;
    if (!ascii_ieq(h, p->pre, p->pre_len) ||
        !ascii_ieq(h + len - p->post_len, p->post, p->post_len))
        return false;
    mid = len - p->pre_len - p->post_len;
    if (p->cap[1])
        return split_two(p, h + p->pre_len, mid, caps, ascii_ieq);
    for (size_t i = 0; i < mid; i++)
        if (!is_cap_char(p->cap[0], (unsigned char)h[p->pre_len + i]))
            return false;
    set_capture(caps, p->cap[0], h + p->pre_len, mid);
    return true;
}

/* One capture of a path: a whole segment from path[*at]. */
static bool match_segment(enum cap_kind k, const char *path, size_t len, size_t *at,
                          struct captures *caps)
{
    size_t start = *at;

    while (*at < len && path[*at] != '/') {
        if (!is_cap_char(k, (unsigned char)path[*at]))
            return false;
        (*at)++;
    }
    if (*at == start)
        return false;
    set_capture(caps, k, path + start, *at - start);
    return true;
}

/* On a match, *ret_covered is the number of path bytes the prefix spans. */
static bool match_path(const struct pattern *p, const char *path, size_t len, struct captures *caps,
                       size_t *ret_covered)
{
    size_t at = p->pre_len;

    if (len < p->pre_len || memcmp(path, p->pre, p->pre_len) != 0)
        return false;
    if (p->cap[0]) {
        if (!match_segment(p->cap[0], path, len, &at, caps))
            return false;
        if (p->cap[1]) {
            if (len - at < p->mid_len || !bytes_eq(path + at, p->mid, p->mid_len))
                return false;
            at += p->mid_len;
            if (!match_segment(p->cap[1], path, len, &at, caps))
                return false;
        }
        if (len - at < p->post_len || !bytes_eq(path + at, p->post, p->post_len))
            return false;
        at += p->post_len;
    }
    /* "/static" covers "/static" and "/static/x" but not "/staticfoo". */
    if (!p->ends_slash && at < len && path[at] != '/')
        return false;
    *ret_covered = at;
    return true;
}

/* The first field with the name decides: a second copy cannot override it. */
static bool match_header(const struct compiled *r, const struct wg_http_field *fields, size_t n,
                         struct captures *caps)
{
    const struct wg_http_field *f = NULL;

    for (size_t i = 0; i < n; i++) {
        if (fields[i].name_len == r->header_name_len &&
            ascii_ieq(fields[i].name, r->header_name, r->header_name_len)) {
            f = &fields[i];
            break;
        }
    }
    if (f == NULL)
        return false;
    switch (r->header_kind) {
    case VALUE_ANY:
        return true;
    case VALUE_EXACT:
        return f->value_len == r->header_value_len &&
               (f->value_len == 0 || memcmp(f->value, r->header_value, f->value_len) == 0);
    case VALUE_SESSION:
        if (f->value_len == 0 || !all_session_chars(f->value, f->value_len))
            return false;
        set_capture(caps, CAP_SESSION, f->value, f->value_len);
        return true;
    }
    return false;
}

int wg_router_match(const struct wg_router *router, const struct wg_route_input *in,
                    struct wg_route_match *m)
{
    const char *host = NULL;
    size_t host_len = 0;
    bool host_ok = host_normalize(in->host, in->host_len, &host, &host_len);
    size_t path_len = 0;

    if (in->target != NULL) {
        while (path_len < in->target_len && in->target[path_len] != '?' &&
               in->target[path_len] != '#')
            path_len++;
    }
    for (size_t i = 0; router != NULL && i < router->len; i++) {
        const struct compiled *r = &router->routes[i];
        struct captures caps = {{NULL, 0}, {NULL, 0}};
        size_t covered = 0;

        if (r->host.set && !(host_ok && match_host(&r->host, host, host_len, &caps)))
            continue;
        if (r->path.set && !match_path(&r->path, in->target, path_len, &caps, &covered))
            continue;
        if (r->header_name != NULL && !match_header(r, in->fields, in->fields_len, &caps))
            continue;
        m->route = &r->pub;
        m->session = caps.session.p;
        m->session_len = caps.session.len;
        m->port = caps.port.p;
        m->port_len = caps.port.len;
        m->prefix_len = covered;
        m->strip_len = r->pub.strip_prefix ? covered : 0;
        return 0;
    }
    memset(m, 0, sizeof(*m));
    return WG_ROUTE_NO_MATCH;
}
