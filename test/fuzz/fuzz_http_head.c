/* Fuzz target: the request-head scanner, strict parser and rebuilder.
 *
 * Invariants: a head that passes is rebuilt into a head that itself scans
 * and parses cleanly, and rebuilding that again gives the same bytes (the
 * rebuilt head is canonical). The same bytes are also tried as a response. */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/config.h"
#include "proxy/http_rebuild.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_complete(llhttp_t *p)
{
    struct wg_http_msg *m = p->data;
    m->complete = true;
    return HPE_PAUSED;
}

static const struct wg_limits limits = {
    .request_line_max = 8192,
    .header_line_max = 8192,
    .head_max = 32768,
    .header_count_max = 100,
};
/* A rebuilt head may hold a few more fields and bytes than the client sent
 * (X-Forwarded-*, framing, Host for 1.0). */
static const struct wg_limits rebuilt_limits = {
    .request_line_max = 8192 + 2,
    .header_line_max = 8192 + 64,
    .head_max = 32768 + 1024,
    .header_count_max = 100 + 8,
};

/* Scans and parses buf as one head. Returns the head length, or 0. */
static size_t parse_one(const char *buf, size_t len, bool response, const struct wg_limits *lim,
                        llhttp_t *p, llhttp_settings_t *settings, struct wg_http_msg *m,
                        struct wg_http_field *fields)
{
    struct wg_http_scan scan;
    size_t head_len = 0;
    wg_http_scan_reset(&scan, response);
    if (wg_http_scan(&scan, buf, len, lim, &head_len) != WG_HTTP_SCAN_DONE)
        return 0;
    if (head_len > len)
        abort();
    llhttp_init(p, response ? HTTP_RESPONSE : HTTP_REQUEST, settings);
    memset(m, 0, sizeof(*m));
    m->is_response = response;
    m->fields = fields;
    m->fields_cap = lim->header_count_max;
    p->data = m;
    if (wg_http_parse_head(p, m, buf, head_len) != 0)
        return 0;
    return head_len;
}

static void rebuild_request(const struct wg_http_msg *m, struct wg_buf *out)
{
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    struct wg_http_request_out o = {
        .target = m->target,
        .target_len = m->target_len,
        .peer = (const struct sockaddr *)&peer,
        .framing = m->chunked              ? WG_HTTP_FRAME_CHUNKED
                   : m->has_content_length ? WG_HTTP_FRAME_LENGTH
                                           : WG_HTTP_FRAME_NONE,
        .content_length = m->content_length,
        .upgrade = m->upgrade_websocket,
        .default_host = "127.0.0.1:9000",
    };
    if (wg_http_request_rebuild(m, &o, out) < 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct wg_http_field fields[101], fields2[109];
    llhttp_settings_t settings;
    llhttp_t p, p2;
    struct wg_http_msg m, m2;
    struct wg_buf out1, out2;
    const char *buf = (const char *)data;

    wg_http_settings_init(&settings);
    settings.on_message_complete = on_complete;
    wg_buf_init(&out1, 1 << 20);
    wg_buf_init(&out2, 1 << 20);

    if (parse_one(buf, size, false, &limits, &p, &settings, &m, fields) > 0) {
        rebuild_request(&m, &out1);
        if (parse_one(wg_buf_head(&out1), wg_buf_size(&out1), false, &rebuilt_limits, &p2,
                      &settings, &m2, fields2) != wg_buf_size(&out1))
            abort(); /* a rebuilt head must be accepted whole */
        rebuild_request(&m2, &out2);
        if (wg_buf_size(&out1) != wg_buf_size(&out2) ||
            memcmp(wg_buf_head(&out1), wg_buf_head(&out2), wg_buf_size(&out1)) != 0)
            abort(); /* not canonical */
        if (m2.chunked != m.chunked || m2.content_length != m.content_length ||
            m2.upgrade_websocket != m.upgrade_websocket)
            abort(); /* framing changed in the rebuild */
    }

    wg_buf_reset(&out1);
    if (parse_one(buf, size, true, &limits, &p, &settings, &m, fields) > 0) {
        struct wg_http_response_out o = {
            .client_minor = 1,
            .framing = m.has_content_length ? WG_HTTP_FRAME_LENGTH : WG_HTTP_FRAME_CHUNKED,
            .content_length = m.content_length,
            .keep_alive = true,
        };
        if (wg_http_response_rebuild(&m, &o, &out1) < 0)
            abort();
        if (parse_one(wg_buf_head(&out1), wg_buf_size(&out1), true, &rebuilt_limits, &p2, &settings,
                      &m2, fields2) != wg_buf_size(&out1))
            abort();
        if (m2.status != m.status)
            abort();
    }
    wg_buf_release(&out1);
    wg_buf_release(&out2);
    return 0;
}
