/* common/http_head.c - see http_head.h. The rules implemented here are those of
 * PROXY-RULES.md; each check names the row it enforces. */
#include "common/http_head.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- scanning ----------------------------------------------------------- */

static bool is_tchar(unsigned char c);

/* The method of a request line, as far as it has arrived: tchars, at most
 * WG_HTTP_METHOD_MAX of them, then one SP. Returns 0 (fine so far) or 400.
 * Checked before the line ends, so an endless method is refused as such,
 * not as a long target (414). */
static int check_method(const char *line, size_t len)
{
    size_t i = 0;

    while (i < len && i <= WG_HTTP_METHOD_MAX && line[i] != ' ') {
        if (!is_tchar((unsigned char)line[i]))
            return 400;
        i++;
    }
    if (i > WG_HTTP_METHOD_MAX || (i == 0 && len > 0))
        return 400;
    return 0;
}

/* Whether the path of target[0, len) (up to '?') has a "." or ".." segment,
 * also spelt with %2e. Browsers and ordinary clients remove them before
 * sending; left in, a route's prefix match and what the upstream resolves
 * would disagree ("/s/a/../b/x" matches session a's prefix, and after the
 * prefix is stripped the upstream would see "/../b/x"). */
static bool has_dot_segment(const char *t, size_t len)
{
    size_t end = len, i = 0;
    const char *q = memchr(t, '?', len);

    if (q != NULL)
        end = (size_t)(q - t);
    while (i < end) {
        size_t dots = 0, other = 0;
        while (i < end && t[i] == '/')
            i++;
        while (i < end && t[i] != '/') {
            if (t[i] == '.') {
                dots++;
                i++;
            } else if (t[i] == '%' && end - i >= 3 && t[i + 1] == '2' &&
                       (t[i + 2] == 'e' || t[i + 2] == 'E')) {
                dots++;
                i += 3;
            } else {
                other++;
                i++;
            }
        }
        if (other == 0 && (dots == 1 || dots == 2))
            return true;
    }
    return false;
}

/* Bytes in the path (up to '?') that an upstream reads as something other
 * than what our prefix match saw:
 * - a backslash, which some servers and frameworks take for '/', so that
 *   "/s/a\..\b" would slip past the dot-segment rule;
 * - an encoded control byte ("%0d%0a", %00-%1f, %7f), which an upstream that
 *   decodes the path into a header (a redirect's Location) turns into a line
 *   break.
 * RFC 3986 section 3.3 allows neither in a path (a backslash is not a pchar), and
 * browsers send neither: a backslash in an http URL becomes '/'. The query is not
 * checked: a form sent by GET encodes a textarea's line breaks there. */
static bool path_has_unsafe_byte(const char *t, size_t len)
{
    const char *q = memchr(t, '?', len);
    size_t end = q != NULL ? (size_t)(q - t) : len;

    for (size_t i = 0; i < end; i++) {
        if (t[i] == '\\')
            return true;
        if (t[i] != '%' || end - i < 3)
            continue;
        if ((t[i + 1] == '0' || t[i + 1] == '1') && isxdigit((unsigned char)t[i + 2]))
            return true;
        if (t[i + 1] == '7' && (t[i + 2] == 'f' || t[i + 2] == 'F'))
            return true;
    }
    return false;
}

/* RFC 9112 section 3: method SP request-target SP HTTP-version, exactly.
 * The target is visible ASCII without a fragment ('#' never travels in a
 * request), an encoded NUL, a dot segment or an unsafe path byte; the version is "HTTP/" DIGIT "."
 * DIGIT. Returns 0, 400 (malformed), or 505 (a well-formed version whose major is not 1). */
static int scan_request_line(const char *line, size_t len)
{
    const char *sp1 = memchr(line, ' ', len);
    const char *sp2, *v;
    size_t vlen;

    /* The method was checked by the caller (check_method). */
    if (sp1 == NULL)
        return 400;
    sp2 = memchr(sp1 + 1, ' ', len - (size_t)(sp1 + 1 - line));
    if (sp2 == NULL || sp2 == sp1 + 1)
        return 400;
    for (const char *t = sp1 + 1; t < sp2; t++) {
        unsigned char c = (unsigned char)*t;
        if (c < 0x21 || c > 0x7e || c == '#')
            return 400;
        if (c == '%' && sp2 - t > 2 && t[1] == '0' && t[2] == '0')
            return 400;
    }
    if (sp1[1] == '/' && (has_dot_segment(sp1 + 1, (size_t)(sp2 - sp1 - 1)) ||
                          path_has_unsafe_byte(sp1 + 1, (size_t)(sp2 - sp1 - 1))))
        return 400;
    v = sp2 + 1;
    vlen = len - (size_t)(v - line);
    if (vlen != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
        v[7] < '0' || v[7] > '9')
        return 400;
    return v[5] == '1' ? 0 : 505;
}

int wg_http_scan(struct wg_http_scan *s, const char *buf, size_t len, const struct wg_limits *lim,
                 size_t *ret_head_len)
{
    /* Responses come from upstreams we chose: an oversized one is a 502 at
     * the caller, so every limit maps to the same status there. */
    const int line_too_long = s->is_response ? 502 : 414;
    const int head_too_big = s->is_response ? 502 : 431;
    size_t pos = s->pos;

    while (pos < len) {
        const char *lf = memchr(buf + pos, '\n', len - pos);
        if (lf == NULL)
            break;
        size_t j = (size_t)(lf - buf);
        /* A bare LF line end: 400, then close. */
        if (j == s->line_start || buf[j - 1] != '\r')
            return s->is_response ? 502 : 400;
        size_t line_len = j - 1 - s->line_start;
        const char *line = buf + s->line_start;
        /* A bare CR inside a line: refuse now rather than when the head ends. */
        if (memchr(line, '\r', line_len) != NULL)
            return s->is_response ? 502 : 400;
        if (s->line_start == 0) {
            /* An empty first line: we do not skip leading blank lines. */
            if (line_len == 0)
                return s->is_response ? 502 : 400;
            /* The method first: an endless method is a 400, not a 414. */
            if (!s->is_response && check_method(line, line_len) != 0)
                return 400;
            if (line_len > lim->request_line_max)
                return line_too_long;
            if (!s->is_response) {
                int r = scan_request_line(line, line_len);
                if (r != 0)
                    return r;
            }
        } else if (line_len == 0) {
            *ret_head_len = j + 1;
            s->pos = j + 1;
            return WG_HTTP_SCAN_DONE;
        } else {
            if (line_len > lim->header_line_max)
                return head_too_big;
            /* obs-fold (a line starting with SP or HTAB) and an empty field
             * name: llhttp accepts both even in strict mode. */
            if (line[0] == ' ' || line[0] == '\t' || line[0] == ':')
                return s->is_response ? 502 : 400;
            if (++s->fields > lim->header_count_max)
                return head_too_big;
        }
        pos = j + 1;
        s->line_start = pos;
        if (pos > lim->head_max)
            return head_too_big;
    }
    s->pos = pos;
    /* Partial line: enforce the limits before the line ends, so a peer cannot
     * make us buffer more than the cap. */
    size_t partial = len - s->line_start;
    const char *cr = memchr(buf + s->line_start, '\r', partial);
    if (cr != NULL && cr + 1 < buf + len)
        return s->is_response ? 502 : 400; /* CR not followed by LF */
    if (s->line_start == 0 && !s->is_response) {
        int r = check_method(buf, partial);
        if (r != 0)
            return r;
    }
    if (s->line_start == 0 && partial > lim->request_line_max + 1)
        return line_too_long;
    if (s->line_start > 0 && partial > lim->header_line_max + 1)
        return head_too_big;
    if (len > lim->head_max)
        return head_too_big;
    return WG_HTTP_SCAN_MORE;
}

/* ---- parsing ------------------------------------------------------------ */

void wg_http_msg_begin(struct wg_http_msg *msg)
{
    void *owner = msg->owner;
    struct wg_http_field *fields = msg->fields;
    size_t cap = msg->fields_cap;
    bool is_response = msg->is_response;
    bool skip_body = msg->skip_body;

    memset(msg, 0, sizeof(*msg));
    msg->owner = owner;
    msg->fields = fields;
    msg->fields_cap = cap;
    msg->is_response = is_response;
    msg->skip_body = skip_body;
}

static int on_message_begin(llhttp_t *p)
{
    wg_http_msg_begin(p->data);
    return 0;
}

/* The whole head is parsed in one call, so a span callback runs once; a
 * second call continues the same span. */
static void span_extend(const char **sp, size_t *slen, const char *at, size_t len)
{
    if (*sp == NULL)
        *sp = at;
    *slen += len;
}

static int on_method(llhttp_t *p, const char *at, size_t len)
{
    struct wg_http_msg *m = p->data;
    span_extend(&m->method, &m->method_len, at, len);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct wg_http_msg *m = p->data;
    span_extend(&m->target, &m->target_len, at, len);
    return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t len)
{
    struct wg_http_msg *m = p->data;
    span_extend(&m->reason, &m->reason_len, at, len);
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct wg_http_msg *m = p->data;
    if (m->headers_done)
        return 0; /* a chunked trailer: dropped, as the Trailer header is */
    if (m->fields_len > 0 && m->fields[m->fields_len - 1].value == NULL &&
        m->fields[m->fields_len - 1].name + m->fields[m->fields_len - 1].name_len == at) {
        m->fields[m->fields_len - 1].name_len += len;
        return 0;
    }
    if (m->fields_len >= m->fields_cap) {
        m->error = m->is_response ? 502 : 431;
        return -1;
    }
    struct wg_http_field *f = &m->fields[m->fields_len++];
    f->name = at;
    f->name_len = len;
    f->value = NULL;
    f->value_len = 0;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct wg_http_msg *m = p->data;
    if (m->headers_done)
        return 0;
    if (m->fields_len == 0) {
        m->error = m->is_response ? 502 : 400;
        return -1;
    }
    struct wg_http_field *f = &m->fields[m->fields_len - 1];
    if (f->value != NULL && f->value + f->value_len != at) {
        /* A second value span with no field between: obs-fold. */
        m->error = m->is_response ? 502 : 400;
        return -1;
    }
    span_extend(&f->value, &f->value_len, at, len);
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    struct wg_http_msg *m = p->data;
    if (m->headers_done || m->fields_len == 0)
        return 0;
    struct wg_http_field *f = &m->fields[m->fields_len - 1];
    if (f->value == NULL) {
        f->value = f->name + f->name_len; /* empty value: any non-NULL span */
        f->value_len = 0;
    }
    while (f->value_len > 0 && (f->value[0] == ' ' || f->value[0] == '\t')) {
        f->value++;
        f->value_len--;
    }
    while (f->value_len > 0 &&
           (f->value[f->value_len - 1] == ' ' || f->value[f->value_len - 1] == '\t'))
        f->value_len--;
    return 0;
}

bool wg_http_field_named(const struct wg_http_field *f, const char *name, size_t len)
{
    return f->name_len == len && strncasecmp(f->name, name, len) == 0;
}
#define NAME_IS(f, lit) wg_http_field_named((f), lit, sizeof(lit) - 1)

static bool value_is(const char *v, size_t vlen, const char *lit)
{
    size_t n = strlen(lit);
    return vlen == n && strncasecmp(v, lit, n) == 0;
}

static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Calls fn on each trimmed, non-empty token of a comma list. Returns false
 * if fn does. */
static bool list_each(const char *v, size_t len, bool (*fn)(const char *, size_t, void *),
                      void *arg)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < len && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end > start && !fn(v + start, end - start, arg))
            return false;
    }
    return true;
}

struct token_find {
    const char *token;
    bool found;
};

static bool token_find_cb(const char *t, size_t n, void *arg)
{
    struct token_find *tf = arg;
    if (value_is(t, n, tf->token)) {
        tf->found = true;
        return false;
    }
    return true;
}

bool wg_http_list_has(const char *value, size_t len, const char *token)
{
    struct token_find tf = {token, false};
    list_each(value, len, token_find_cb, &tf);
    return tf.found;
}

struct te_check {
    unsigned count;
    bool chunked_last;
    bool bad; /* malformed, identity, or chunked not last */
    bool chunked_seen;
};

static bool te_check_cb(const char *t, size_t n, void *arg)
{
    struct te_check *c = arg;
    c->count++;
    if (c->chunked_seen)
        c->bad = true; /* anything after chunked */
    for (size_t i = 0; i < n; i++) {
        if (!is_tchar((unsigned char)t[i]))
            c->bad = true;
    }
    if (value_is(t, n, "chunked")) {
        c->chunked_seen = true;
        c->chunked_last = true;
    } else {
        c->chunked_last = false;
        if (value_is(t, n, "identity"))
            c->bad = true;
    }
    return true;
}

/* Transfer-Encoding must be exactly "chunked". Anything else is refused:
 * 400 when malformed or ambiguous, 501 for a well-formed coding we lack. */
static int check_transfer_encoding(const struct wg_http_field *f)
{
    if (value_is(f->value, f->value_len, "chunked"))
        return 0;
    struct te_check c = {0};
    list_each(f->value, f->value_len, te_check_cb, &c);
    if (c.count == 0 || c.bad)
        return 400;
    return 501;
}

/* A Host value: reg-name or IP literal, optional port. No spaces, CTLs or
 * userinfo. */
static bool host_valid(const char *h, size_t len)
{
    /* An empty Host names no authority: nothing to route by. */
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)h[i];
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
            continue;
        if (strchr("-._~%!$&'()*+,;=:[]", c) != NULL && c != 0)
            continue;
        return false;
    }
    return true;
}

static void note_connection(struct wg_http_msg *m, const struct wg_http_field *f)
{
    if (wg_http_list_has(f->value, f->value_len, "close"))
        m->conn_close = true;
    if (wg_http_list_has(f->value, f->value_len, "upgrade"))
        m->conn_upgrade = true;
}

/* Version, method and target form. Returns 0 or the status to answer. */
static int check_request_line(const struct wg_http_msg *m)
{
    if (m->major != 1 || m->minor > 1)
        return 505;
    if (m->method_id == HTTP_CONNECT || m->method_id == HTTP_TRACE)
        return 405;
    if (m->target_len == 0)
        return 400;
    /* Origin-form only; "*" for OPTIONS. Absolute-form means a forward
     * proxy, which we are not. */
    if (m->target[0] != '/') {
        if (!(m->target_len == 1 && m->target[0] == '*' && m->method_id == HTTP_OPTIONS))
            return 400;
    }
    return 0;
}

/* A field name that reads as one the proxy acts on once '_' is taken for
 * '-' ("Transfer_Encoding", "X_Forwarded_For"). Applications behind
 * gateways that fold '_' into '-' (CGI, WSGI, PHP) would take it for the
 * real one: framing beside ours, or a forwarding header we did not write. */
static bool name_is_lookalike(const struct wg_http_field *f)
{
    static const char *const names[] = {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
    };
    char folded[32];

    if (f->name_len >= sizeof(folded) || memchr(f->name, '_', f->name_len) == NULL)
        return false;
    for (size_t i = 0; i < f->name_len; i++)
        folded[i] = f->name[i] == '_' ? '-' : f->name[i];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i]) == f->name_len && strncasecmp(names[i], folded, f->name_len) == 0)
            return true;
    return false;
}

/* Fields defined as one value that decide what the request means (RFC 9110
 * section 5.3: a sender MUST NOT send such a field line twice). Given twice,
 * we and the upstream, or two layers behind us, may act on different ones:
 * forward auth is asked about the first Authorization while an application
 * may read the last; one parser takes the first Content-Type, another the
 * last. */
static bool has_duplicate_singleton(const struct wg_http_msg *m)
{
    unsigned content_type = 0, authorization = 0;

    for (size_t i = 0; i < m->fields_len; i++) {
        if (NAME_IS(&m->fields[i], "content-type"))
            content_type++;
        else if (NAME_IS(&m->fields[i], "authorization"))
            authorization++;
    }
    return content_type > 1 || authorization > 1;
}

static int validate_request(llhttp_t *p, struct wg_http_msg *m)
{
    unsigned host_count = 0;
    unsigned te_count = 0;
    const struct wg_http_field *te = NULL;
    const struct wg_http_field *upgrade = NULL;
    const struct wg_http_field *expect = NULL;
    bool ws_key = false;
    int r = check_request_line(m);

    if (r != 0)
        return r;
    for (size_t i = 0; i < m->fields_len; i++) {
        const struct wg_http_field *f = &m->fields[i];
        if (f->name_len == 0 || name_is_lookalike(f))
            return 400;
        if (NAME_IS(f, "host")) {
            host_count++;
            m->host = f->value;
            m->host_len = f->value_len;
        } else if (NAME_IS(f, "transfer-encoding")) {
            te_count++;
            te = f;
        } else if (NAME_IS(f, "connection")) {
            note_connection(m, f);
        } else if (NAME_IS(f, "upgrade")) {
            upgrade = f;
        } else if (NAME_IS(f, "sec-websocket-key")) {
            ws_key = f->value_len > 0;
        } else if (NAME_IS(f, "expect")) {
            if (expect != NULL)
                return 400;
            expect = f;
        }
    }

    /* Host is required on 1.1 and must appear only once. */
    if (host_count > 1 || (host_count == 0 && m->minor == 1))
        return 400;
    if (m->host != NULL && !host_valid(m->host, m->host_len))
        return 400;
    if (has_duplicate_singleton(m))
        return 400;

    if (te_count > 0) {
        /* Transfer-Encoding on HTTP/1.0 is a smuggling shape. */
        if (te_count > 1 || m->minor == 0)
            return 400;
        r = check_transfer_encoding(te);
        if (r != 0)
            return r;
    }

    if (expect != NULL) {
        if (!value_is(expect->value, expect->value_len, "100-continue"))
            return 417;
        /* Never send 1xx to a 1.0 client: the expectation is ignored. */
        m->expect_continue = m->minor >= 1;
    }

    if (m->conn_upgrade && upgrade != NULL &&
        wg_http_list_has(upgrade->value, upgrade->value_len, "websocket")) {
        if (m->method_id != HTTP_GET || m->minor == 0)
            return 400;
        if (!ws_key)
            return 400;
        m->upgrade_websocket = true;
    }

    m->chunked = (p->flags & F_CHUNKED) != 0;
    m->has_content_length = (p->flags & F_CONTENT_LENGTH) != 0;
    m->content_length = m->has_content_length ? p->content_length : 0;
    if (!llhttp_should_keep_alive(p))
        m->conn_close = true;
    return 0;
}

static int validate_response(llhttp_t *p, struct wg_http_msg *m)
{
    unsigned te_count = 0;
    const struct wg_http_field *te = NULL;
    const struct wg_http_field *upgrade = NULL;

    if (m->major != 1 || m->minor > 1)
        return 502;
    /* reason-phrase = *( HTAB / SP / VCHAR / obs-text ): a NUL or another
     * control byte is not relayed to the client. */
    for (size_t i = 0; i < m->reason_len; i++) {
        unsigned char c = (unsigned char)m->reason[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return 502;
    }
    for (size_t i = 0; i < m->fields_len; i++) {
        const struct wg_http_field *f = &m->fields[i];
        if (f->name_len == 0)
            return 502;
        if (NAME_IS(f, "transfer-encoding")) {
            te_count++;
            te = f;
        } else if (NAME_IS(f, "connection")) {
            note_connection(m, f);
        } else if (NAME_IS(f, "upgrade")) {
            upgrade = f;
        }
    }
    if (te_count > 1 || (te != NULL && !value_is(te->value, te->value_len, "chunked")))
        return 502;
    if (m->status == 101)
        m->upgrade_websocket =
            upgrade != NULL && wg_http_list_has(upgrade->value, upgrade->value_len, "websocket");
    m->chunked = (p->flags & F_CHUNKED) != 0;
    m->has_content_length = (p->flags & F_CONTENT_LENGTH) != 0;
    m->content_length = m->has_content_length ? p->content_length : 0;
    if (!llhttp_should_keep_alive(p))
        m->conn_close = true;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct wg_http_msg *m = p->data;
    int r;

    m->major = llhttp_get_http_major(p);
    m->minor = llhttp_get_http_minor(p);
    if (m->is_response) {
        m->status = llhttp_get_status_code(p);
        r = validate_response(p, m);
    } else {
        m->method_id = llhttp_get_method(p);
        r = validate_request(p, m);
    }
    m->headers_done = true;
    if (r != 0) {
        m->error = r;
        return -1;
    }
    /* HEAD, 204 and 304 have no body whatever Content-Length says; llhttp
     * skips it on its own only when there is no Content-Length. */
    if (m->is_response && (m->skip_body || m->status == 204 || m->status == 304))
        return 1;
    /* A 101 ends HTTP on this connection: what follows is the tunnel. */
    if (m->is_response && m->status == 101)
        return 2;
    return 0;
}

/* ---- chunked framing ------------------------------------------------------ */

static int chunk_ext(llhttp_t *p, const char *at, size_t len)
{
    struct wg_http_msg *m = p->data;

    (void)at;
    m->chunk_ext_line += len;
    m->chunk_ext_bytes += len;
    if (m->chunk_ext_line > WG_HTTP_CHUNK_EXT_LINE_MAX ||
        m->chunk_ext_bytes > WG_HTTP_CHUNK_EXT_MSG_MAX) {
        m->error = m->is_response ? 502 : 400;
        return -1;
    }
    return 0;
}

static int on_chunk_header(llhttp_t *p)
{
    struct wg_http_msg *m = p->data;

    m->chunk_ext_line = 0;
    if (p->content_length != 0)
        return 0;
    /* The last chunk: the trailer section follows. Stop here so the caller
     * checks its line ends before llhttp reads them. */
    m->in_trailers = true;
    return HPE_PAUSED;
}

/* The trailer section (msg->in_trailers) as its bytes arrive: every line
 * ends in CRLF, no bare CR, at most max bytes in all. Returns 0 with
 * *ret_len the bytes to hand to llhttp now (through the blank line that
 * ends the section, which clears in_trailers, or all of len), or the
 * status: 400 for a request, 502 for a response. */
static int trailers_scan(struct wg_http_msg *m, const char *data, size_t len, size_t max,
                         size_t *ret_len)
{
    const int bad = m->is_response ? 502 : 400;

    for (size_t i = 0; i < len; i++) {
        char c = data[i];
        if (++m->trailer_bytes > max)
            return bad;
        if (c == '\n') {
            if (!m->trailer_cr)
                return bad; /* a bare LF */
            m->trailer_cr = false;
            if (m->trailer_line_len == 0) {
                m->in_trailers = false;
                *ret_len = i + 1;
                return 0;
            }
            m->trailer_line_len = 0;
            continue;
        }
        if (m->trailer_cr)
            return bad; /* a bare CR */
        if (c == '\r') {
            m->trailer_cr = true;
            continue;
        }
        m->trailer_line_len++;
    }
    *ret_len = len;
    return 0;
}

llhttp_errno_t wg_http_execute_body(llhttp_t *p, struct wg_http_msg *m, const char *data,
                                    size_t len, size_t trailer_max, size_t *ret_used)
{
    size_t feed = len;
    llhttp_errno_t e;

    if (m->in_trailers) {
        int r = trailers_scan(m, data, len, trailer_max, &feed);
        if (r != 0) {
            m->error = r;
            *ret_used = len;
            return HPE_USER;
        }
        if (llhttp_get_errno(p) == HPE_PAUSED)
            llhttp_resume(p);
    }
    e = llhttp_execute(p, data, feed);
    *ret_used = feed;
    if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE)
        *ret_used = (size_t)(llhttp_get_error_pos(p) - data);
    return e;
}

void wg_http_settings_init(llhttp_settings_t *s)
{
    llhttp_settings_init(s);
    s->on_message_begin = on_message_begin;
    s->on_method = on_method;
    s->on_url = on_url;
    s->on_status = on_status;
    s->on_header_field = on_header_field;
    s->on_header_value = on_header_value;
    s->on_header_value_complete = on_header_value_complete;
    s->on_headers_complete = on_headers_complete;
    s->on_chunk_header = on_chunk_header;
    s->on_chunk_extension_name = chunk_ext;
    s->on_chunk_extension_value = chunk_ext;
}

int wg_http_parse_head(llhttp_t *parser, struct wg_http_msg *msg, const char *head, size_t head_len)
{
    const int bad = msg->is_response ? 502 : 400;
    llhttp_errno_t e = llhttp_execute(parser, head, head_len);

    if (msg->error)
        return msg->error;
    switch (e) {
    case HPE_OK:
    case HPE_PAUSED:
    case HPE_PAUSED_UPGRADE:
        break;
    case HPE_INVALID_VERSION:
        return msg->is_response ? 502 : 505;
    case HPE_INVALID_METHOD:
        return msg->is_response ? 502 : 501;
    case HPE_INVALID_URL:
        return 400;
    default:
        return bad;
    }
    if (!msg->headers_done)
        return bad;
    return 0;
}

/* ---- fields --------------------------------------------------------------- */

/* Hop-by-hop in both directions; Transfer-Encoding and Content-Length are
 * re-framed by the proxy, Upgrade is re-added only on an upgrade. */
static bool hop_fixed(const struct wg_http_field *f)
{
    return NAME_IS(f, "connection") || NAME_IS(f, "keep-alive") || NAME_IS(f, "proxy-connection") ||
           NAME_IS(f, "te") || NAME_IS(f, "trailer") || NAME_IS(f, "transfer-encoding") ||
           NAME_IS(f, "upgrade") || NAME_IS(f, "content-length");
}

struct named_find {
    const struct wg_http_field *f;
    bool found;
};

static bool named_find_cb(const char *t, size_t n, void *arg)
{
    struct named_find *nf = arg;
    if (nf->f->name_len == n && strncasecmp(nf->f->name, t, n) == 0) {
        nf->found = true;
        return false;
    }
    return true;
}

bool wg_http_field_is_hop(const struct wg_http_msg *msg, const struct wg_http_field *f)
{
    if (hop_fixed(f))
        return true;
    for (size_t i = 0; i < msg->fields_len; i++) {
        const struct wg_http_field *c = &msg->fields[i];
        if (!NAME_IS(c, "connection"))
            continue;
        struct named_find nf = {f, false};
        list_each(c->value, c->value_len, named_find_cb, &nf);
        if (nf.found)
            return true;
    }
    return false;
}

const struct wg_http_field *wg_http_find(const struct wg_http_msg *msg, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < msg->fields_len; i++) {
        if (wg_http_field_named(&msg->fields[i], name, n))
            return &msg->fields[i];
    }
    return NULL;
}

bool wg_http_method_idempotent(uint8_t method_id)
{
    switch (method_id) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_OPTIONS:
    case HTTP_PUT:
    case HTTP_DELETE:
        return true;
    default:
        return false;
    }
}

const char *wg_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 103:
        return "Early Hints";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 417:
        return "Expectation Failed";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}
