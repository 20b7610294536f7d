/* admin/api_openapi.c - GET /v1/openapi.json: the API's reference
 * (docs/openapi.json), embedded byte for byte at build time, so the
 * document a client reads is the one this binary was built and tested
 * with (test_api.c checks it against the route table). */
#include "admin/api_int.h"
#include "admin/dashboard.h"

void api_handle_openapi(struct wg_admin_req *req, const struct wg_admin_request *info)
{
    const struct wg_asset *doc = &wg_api_openapi[0];

    (void)info;
    wg_admin_respond_headers(req, 200, doc->content_type, "Cache-Control: no-cache\r\n",
                             (const char *)doc->data, doc->len);
}
