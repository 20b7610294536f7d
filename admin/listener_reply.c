/* admin/listener_reply.c - how an async handler answers the request it was
 * handed: a whole response, a JSON error, or a stream (chunked, or closed
 * at its end for HTTP/1.0). See listener.h for the contract and
 * listener_int.h for who owns what. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/listener_int.h"
#include "common/log.h"

bool wg_admin_req_alive(const struct wg_admin_req *req)
{
    return req != NULL && req->ac != NULL;
}

void wg_admin_req_on_cancel(struct wg_admin_req *req, wg_admin_cancel_fn *fn, void *arg)
{
    req->cancel = fn;
    req->cancel_arg = fn ? arg : NULL;
}

void wg_admin_respond_headers(struct wg_admin_req *req, int status, const char *content_type,
                              const char *headers, const char *body, size_t len)
{
    if (req == NULL)
        return;
    if (req->streaming) { /* a programmer error; end what was started */
        wg_admin_stream_end(req);
        return;
    }
    struct admin_conn *ac = req->ac;
    bool head_only = req->head_only;
    free(req);
    if (ac == NULL)
        return;
    ac->req = NULL;
    admin_conn_send(ac, status, content_type ? content_type : "application/json", headers, body,
                    len, head_only, !ac->keep_alive || ac->admin->freeing);
    admin_conn_answered(ac);
}

void wg_admin_respond(struct wg_admin_req *req, int status, const char *content_type,
                      const char *body, size_t len)
{
    wg_admin_respond_headers(req, status, content_type, NULL, body, len);
}

void wg_admin_respond_error(struct wg_admin_req *req, int status, const char *headers,
                            const char *msg)
{
    struct wg_buf out;
    wg_buf_init(&out, 64 * 1024);
    wg_buf_appendf(&out, "{\"error\":\"");
    admin_json_escape(&out, msg ? msg : wg_http_reason(status));
    wg_buf_appendf(&out, "\"}\n");
    wg_admin_respond_headers(req, status, "application/json", headers, wg_buf_head(&out),
                             wg_buf_size(&out));
    wg_buf_release(&out);
}

int wg_admin_stream_begin(struct wg_admin_req *req, int status, const char *content_type,
                          const char *headers)
{
    struct admin_conn *ac = req->ac;
    char head[ADMIN_HEAD_MAX];
    if (req->streaming)
        return -EINVAL;
    req->streaming = true;
    if (ac == NULL)
        return -EPIPE;
    /* HTTP/1.0 has no chunked coding: the close ends the body. */
    req->chunked = ac->minor >= 1;
    bool close_after = !req->chunked || !ac->keep_alive || ac->admin->freeing;
    if (close_after)
        ac->keep_alive = false;
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nCache-Control: no-store\r\n%s%s",
                     status, wg_http_reason(status), content_type ? content_type : "text/plain",
                     req->chunked ? "Transfer-Encoding: chunked\r\n" : "",
                     close_after ? "Connection: close\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(head))
        return -EINVAL;
    uv_buf_t parts[3] = {
        uv_buf_init(head, (unsigned)n),
        uv_buf_init((char *)(headers ? headers : ""), headers ? (unsigned)strlen(headers) : 0),
        uv_buf_init((char *)"\r\n", 2),
    };
    if (req->head_only) {
        /* HEAD: the head alone, then the exchange is over for the client. */
        req->chunked = false;
    }
    if (admin_conn_write(ac, parts, 3) < 0) {
        admin_conn_unlink_req(ac);
        admin_conn_close(ac);
        return -EPIPE;
    }
    return 0;
}

int wg_admin_stream_write(struct wg_admin_req *req, const void *data, size_t len)
{
    struct admin_conn *ac = req->ac;
    char size_line[24];
    int n = 0;

    if (ac == NULL || !req->streaming)
        return -EPIPE;
    if (len == 0 || req->head_only)
        return 0;
    if (req->chunked)
        n = snprintf(size_line, sizeof(size_line), "%zx\r\n", len);
    size_t framed = len + (req->chunked ? (size_t)n + 2 : 0);
    if (ac->queued + framed > WG_ADMIN_STREAM_QUEUE_MAX) {
        WG_DEBUG(ac->admin->log, ADMIN_SUBSYS, "stream client reads too slowly, dropping it",
                 "queued=%zu", ac->queued);
        admin_conn_unlink_req(ac);
        admin_conn_close(ac);
        return -EPIPE;
    }
    uv_buf_t parts[3] = {
        uv_buf_init(size_line, (unsigned)n),
        uv_buf_init((char *)data, (unsigned)len),
        uv_buf_init((char *)"\r\n", req->chunked ? 2 : 0),
    };
    if (admin_conn_write(ac, parts, 3) < 0) {
        admin_conn_unlink_req(ac);
        admin_conn_close(ac);
        return -EPIPE;
    }
    return 0;
}

size_t wg_admin_stream_queued(const struct wg_admin_req *req)
{
    return req->ac ? req->ac->queued : 0;
}

void wg_admin_stream_end(struct wg_admin_req *req)
{
    if (req == NULL)
        return;
    struct admin_conn *ac = req->ac;
    bool chunked = req->chunked, head_only = req->head_only;
    free(req);
    if (ac == NULL)
        return;
    ac->req = NULL;
    if (chunked && !head_only) {
        uv_buf_t last = uv_buf_init((char *)"0\r\n\r\n", 5);
        if (admin_conn_write(ac, &last, 1) < 0) {
            admin_conn_close(ac);
            return;
        }
    }
    if (!ac->keep_alive)
        admin_conn_close_when_drained(ac);
    else
        admin_conn_answered(ac);
}
