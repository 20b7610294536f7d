/* test/unit/http_fixture.c - see http_fixture.h. */
#include "http_fixture.h"

#include <string.h>

const struct wg_limits wg_test_http_limits = {
    .request_line_max = 8192,
    .header_line_max = 8192,
    .head_max = 32768,
    .header_count_max = 100,
};

static int on_complete(llhttp_t *p)
{
    ((struct wg_http_msg *)p->data)->complete = true;
    return HPE_PAUSED;
}

int wg_test_http_parse(struct wg_test_http *ps, const char *raw, bool response)
{
    struct wg_http_scan scan;
    int r;

    memset(ps, 0, sizeof(*ps));
    wg_http_scan_reset(&scan, response);
    r = wg_http_scan(&scan, raw, strlen(raw), &wg_test_http_limits, &ps->head_len);
    if (r == WG_HTTP_SCAN_MORE)
        return -1;
    if (r != WG_HTTP_SCAN_DONE)
        return r;
    wg_http_settings_init(&ps->settings);
    ps->settings.on_message_complete = on_complete;
    llhttp_init(&ps->parser, response ? HTTP_RESPONSE : HTTP_REQUEST, &ps->settings);
    ps->msg.is_response = response;
    ps->msg.fields = ps->fields;
    ps->msg.fields_cap = WG_TEST_HTTP_FIELDS;
    ps->parser.data = &ps->msg;
    return wg_http_parse_head(&ps->parser, &ps->msg, raw, ps->head_len);
}
