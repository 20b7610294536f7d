/* proxy/http_rebuild.c - see http_rebuild.h. */
#include "proxy/http_rebuild.h"

#include "common/access.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define NAME_IS(f, lit) wg_http_field_named((f), lit, sizeof(lit) - 1)

static bool is_forwarding_field(const struct wg_http_field *f)
{
    return NAME_IS(f, "x-forwarded-for") || NAME_IS(f, "x-forwarded-host") ||
           NAME_IS(f, "x-forwarded-proto") || NAME_IS(f, "forwarded") || NAME_IS(f, "x-real-ip");
}

static int append_field(struct wg_buf *out, const char *name, size_t name_len, const char *value,
                        size_t value_len)
{
    int r = wg_buf_reserve(out, name_len + value_len + 4);
    if (r < 0)
        return r;
    char *p = out->data + out->len;
    memcpy(p, name, name_len);
    p += name_len;
    *p++ = ':';
    *p++ = ' ';
    memcpy(p, value, value_len);
    p += value_len;
    *p++ = '\r';
    *p++ = '\n';
    out->len = (size_t)(p - out->data);
    return 0;
}
#define APPEND_LIT(out, s) wg_buf_append((out), s, sizeof(s) - 1)

/* Decimal digits of v into dst (no NUL); returns how many. printf is
 * measurable on the per-request path, so heads are formatted by hand. */
static size_t u64_digits(char dst[20], uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

static int append_u64(struct wg_buf *out, uint64_t v)
{
    char d[20];
    return wg_buf_append(out, d, u64_digits(d, v));
}

static int append_framing(struct wg_buf *out, enum wg_http_framing framing, uint64_t length)
{
    int r;
    if (framing == WG_HTTP_FRAME_LENGTH) {
        if ((r = APPEND_LIT(out, "Content-Length: ")) < 0 || (r = append_u64(out, length)) < 0)
            return r;
        return APPEND_LIT(out, "\r\n");
    }
    if (framing == WG_HTTP_FRAME_CHUNKED)
        return APPEND_LIT(out, "Transfer-Encoding: chunked\r\n");
    return 0;
}

static void peer_text(const struct sockaddr *sa, char *dst, size_t len)
{
    dst[0] = '\0';
    if (sa == NULL)
        return;
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, dst, (socklen_t)len);
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a))
            inet_ntop(AF_INET, &a->s6_addr[12], dst, (socklen_t)len);
        else
            inet_ntop(AF_INET6, a, dst, (socklen_t)len);
    }
}

/* A Cookie field without our cookie; nothing when none is left. */
static int append_cookie(struct wg_buf *out, const struct wg_http_field *f)
{
    size_t mark = out->len;
    int r;

    if ((r = wg_buf_reserve(out, f->name_len + 2 * f->value_len + 4)) < 0)
        return r;
    memcpy(out->data + out->len, f->name, f->name_len);
    out->len += f->name_len;
    memcpy(out->data + out->len, ": ", 2);
    out->len += 2;
    size_t n =
        wg_access_cookie_strip(f->value, f->value_len, WG_ACCESS_COOKIE, out->data + out->len);
    if (n == 0) {
        out->len = mark;
        return 0;
    }
    out->len += n;
    memcpy(out->data + out->len, "\r\n", 2);
    out->len += 2;
    return 0;
}

/* The request's end-to-end fields, less Host and Expect; forwarding fields
 * only from a trusted peer, and its X-Forwarded-Host and -Proto are kept
 * aside (*ret_xfh, *ret_xfp) to replace ours. */
static int append_request_fields(struct wg_buf *out, const struct wg_http_msg *req,
                                 const struct wg_http_request_out *o,
                                 const struct wg_http_field **ret_xfh,
                                 const struct wg_http_field **ret_xfp)
{
    int r = 0;

    for (size_t i = 0; i < req->fields_len; i++) {
        const struct wg_http_field *f = &req->fields[i];
        if (NAME_IS(f, "host") || NAME_IS(f, "expect") || wg_http_field_is_hop(req, f))
            continue;
        if (o->strip_access && NAME_IS(f, WG_ACCESS_HEADER))
            continue;
        if (o->strip_access && NAME_IS(f, "cookie")) {
            if ((r = append_cookie(out, f)) < 0)
                break;
            continue;
        }
        if (is_forwarding_field(f)) {
            if (!o->peer_trusted)
                continue;
            if (NAME_IS(f, "x-forwarded-host")) {
                *ret_xfh = f;
                continue;
            }
            if (NAME_IS(f, "x-forwarded-proto")) {
                *ret_xfp = f;
                continue;
            }
            if (NAME_IS(f, "x-forwarded-for"))
                continue; /* folded into ours below */
        }
        if ((r = append_field(out, f->name, f->name_len, f->value, f->value_len)) < 0)
            break;
    }
    return r;
}

int wg_http_forwarded_for(struct wg_buf *out, const struct wg_http_msg *req,
                          const struct sockaddr *peer, bool peer_trusted)
{
    char text[INET6_ADDRSTRLEN];
    int r;

    peer_text(peer, text, sizeof(text));
    /* One X-Forwarded-For: a trusted peer's list (all its fields, in
     * order), then the peer itself. */
    if ((r = APPEND_LIT(out, "X-Forwarded-For: ")) < 0)
        return r;
    for (size_t i = 0; peer_trusted && i < req->fields_len; i++) {
        const struct wg_http_field *f = &req->fields[i];
        if (!NAME_IS(f, "x-forwarded-for") || f->value_len == 0 || wg_http_field_is_hop(req, f))
            continue;
        if ((r = wg_buf_append(out, f->value, f->value_len)) < 0 || (r = APPEND_LIT(out, ", ")) < 0)
            return r;
    }
    if ((r = wg_buf_append(out, text, strlen(text))) < 0)
        return r;
    return APPEND_LIT(out, "\r\n");
}

/* X-Forwarded-For, -Host and -Proto. */
static int append_forwarded(struct wg_buf *out, const struct wg_http_msg *req,
                            const struct wg_http_request_out *o, const char *host, size_t host_len,
                            const struct wg_http_field *xfh, const struct wg_http_field *xfp)
{
    int r;

    if ((r = wg_http_forwarded_for(out, req, o->peer, o->peer_trusted)) < 0)
        goto out;
    if (xfh != NULL)
        r = append_field(out, "X-Forwarded-Host", 16, xfh->value, xfh->value_len);
    else if (host != NULL)
        r = append_field(out, "X-Forwarded-Host", 16, host, host_len);
    if (r < 0)
        goto out;
    if (xfp != NULL)
        r = append_field(out, "X-Forwarded-Proto", 17, xfp->value, xfp->value_len);
    else
        r = o->https ? APPEND_LIT(out, "X-Forwarded-Proto: https\r\n")
                     : APPEND_LIT(out, "X-Forwarded-Proto: http\r\n");
out:
    return r;
}

static int append_target(struct wg_buf *out, const struct wg_http_request_out *o)
{
    int r;

    if (!o->strip_access || memchr(o->target, '?', o->target_len) == NULL)
        return wg_buf_append(out, o->target, o->target_len);
    if ((r = wg_buf_reserve(out, o->target_len)) < 0)
        return r;
    out->len +=
        wg_access_query_strip(o->target, o->target_len, WG_ACCESS_QUERY, out->data + out->len);
    return 0;
}

int wg_http_request_rebuild(const struct wg_http_msg *req, const struct wg_http_request_out *o,
                            struct wg_buf *out)
{
    int r;
    const struct wg_http_field *xfh = NULL;
    const struct wg_http_field *xfp = NULL;

    if ((r = wg_buf_append(out, req->method, req->method_len)) < 0 ||
        (r = wg_buf_append(out, " /", o->slash_prefix ? 2 : 1)) < 0 ||
        (r = append_target(out, o)) < 0 || (r = APPEND_LIT(out, " HTTP/1.1\r\n")) < 0)
        goto out;
    /* Upstream requests are HTTP/1.1, which requires a Host. */
    const char *host = req->host;
    size_t host_len = req->host_len;
    if (host == NULL && o->default_host != NULL) {
        host = o->default_host;
        host_len = strlen(host);
    }
    if (host != NULL && (r = append_field(out, "Host", 4, host, host_len)) < 0)
        goto out;
    if ((r = append_request_fields(out, req, o, &xfh, &xfp)) < 0 ||
        (r = append_forwarded(out, req, o, host, host_len, xfh, xfp)) < 0 ||
        (r = append_framing(out, o->framing, o->content_length)) < 0)
        goto out;
    if (o->upgrade)
        r = APPEND_LIT(out, "Connection: upgrade\r\nUpgrade: websocket\r\n");
    if (r < 0)
        goto out;
    r = APPEND_LIT(out, "\r\n");
out:
    return r;
}

int wg_http_response_rebuild(const struct wg_http_msg *resp, const struct wg_http_response_out *o,
                             struct wg_buf *out)
{
    int r;
    if ((r = APPEND_LIT(out, "HTTP/1.1 ")) < 0 ||
        (r = append_u64(out, (uint64_t)resp->status)) < 0 || (r = APPEND_LIT(out, " ")) < 0)
        goto out;
    if (resp->reason_len > 0)
        r = wg_buf_append(out, resp->reason, resp->reason_len);
    else
        r = wg_buf_append(out, wg_http_reason(resp->status), strlen(wg_http_reason(resp->status)));
    if (r < 0 || (r = APPEND_LIT(out, "\r\n")) < 0)
        goto out;

    for (size_t i = 0; i < resp->fields_len; i++) {
        const struct wg_http_field *f = &resp->fields[i];
        if (wg_http_field_is_hop(resp, f) || (o->hsts && NAME_IS(f, "strict-transport-security")))
            continue;
        if ((r = append_field(out, f->name, f->name_len, f->value, f->value_len)) < 0)
            goto out;
    }
    if (o->hsts != NULL && resp->status >= 200 &&
        (r = append_field(out, "Strict-Transport-Security", 25, o->hsts, strlen(o->hsts))) < 0)
        goto out;
    if ((r = append_framing(out, o->framing, o->content_length)) < 0)
        goto out;
    if (o->upgrade) {
        r = APPEND_LIT(out, "Connection: upgrade\r\nUpgrade: websocket\r\n");
    } else if (resp->status >= 200) {
        if (!o->keep_alive)
            r = APPEND_LIT(out, "Connection: close\r\n");
        else if (o->client_minor == 0)
            r = APPEND_LIT(out, "Connection: keep-alive\r\n");
    }
    if (r < 0)
        goto out;
    r = APPEND_LIT(out, "\r\n");
out:
    return r;
}
