/* src/ctl/http_client.c - one HTTP request with libcurl, to the admin API
 * or the Docker engine (a unix socket, or TCP with TLS): libcurl multi
 * driven by a plain loop, so a stream can be stopped between polls. */
#include "src/ctl/ctl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "common/buf.h"
#include "common/clock.h"
#include "src/ctl/ctl_int.h"

#define BODY_MAX (16u << 20)     /* an admin API or Docker answer */
#define CONNECT_TIMEOUT_MS 3000L /* every connect, admin API and Docker */

void ctl_http_init(struct ctl_http *hc, const char *method)
{
    memset(hc, 0, sizeof(*hc));
    hc->method = method;
    wg_buf_init(&hc->body, BODY_MAX);
}

void ctl_http_release(struct ctl_http *hc)
{
    wg_buf_release(&hc->body);
}

void ctl_http_url(struct ctl_http *hc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(hc->url, sizeof(hc->url), fmt, ap);
    va_end(ap);
    hc->url_bad = n < 0 || (size_t)n >= sizeof(hc->url);
}

const char *ctl_http_body(struct ctl_http *hc)
{
    if (wg_buf_size(&hc->body) == 0 || wg_buf_reserve(&hc->body, 1) < 0)
        return "";
    hc->body.data[hc->body.len] = '\0';
    return wg_buf_head(&hc->body);
}

static size_t http_on_write(char *p, size_t size, size_t n, void *arg)
{
    struct ctl_http *hc = arg;
    size_t len = size * n;
    hc->got_bytes = true;
    hc->last_byte = wg_clock_mono_ms();
    if (hc->on_bytes != NULL && hc->status >= 200 && hc->status < 300) {
        int rc = hc->on_bytes(hc, p, len);
        if (rc < 0) {
            hc->cb_error = rc;
            return 0; /* curl ends the transfer with CURLE_WRITE_ERROR */
        }
        return len;
    }
    if (wg_buf_append(&hc->body, p, len) < 0) {
        hc->cb_error = -E2BIG;
        return 0;
    }
    return len;
}

static void header_value(const char *line, size_t len, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return;
    const char *v = line + nl + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    size_t vl = (size_t)(end - v) < outlen - 1 ? (size_t)(end - v) : outlen - 1;
    memcpy(out, v, vl);
    out[vl] = '\0';
}

static size_t http_on_header(char *p, size_t size, size_t n, void *arg)
{
    struct ctl_http *hc = arg;
    size_t len = size * n;
    if (len > 5 && strncmp(p, "HTTP/", 5) == 0) {
        /* A new status line (after a 100): forget the last. "HTTP/1.1 200"
         * or, over TLS to Docker, "HTTP/2 200". */
        const char *sp = memchr(p, ' ', len);
        hc->status = sp != NULL ? strtol(sp + 1, NULL, 10) : 0;
        hc->api_version[0] = hc->server[0] = '\0';
        return len;
    }
    header_value(p, len, "Api-Version", hc->api_version, sizeof(hc->api_version));
    header_value(p, len, "Server", hc->server, sizeof(hc->server));
    return len;
}

static int http_setup(struct ctl_http *hc, CURL *e, struct curl_slist **hdrs, char *errbuf)
{
    char line[512];
    int bad = 0;

    bad |= curl_easy_setopt(e, CURLOPT_URL, hc->url);
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    if (hc->total_ms > 0)
        bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, hc->total_ms);
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_on_write);
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, hc);
    bad |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, http_on_header);
    bad |= curl_easy_setopt(e, CURLOPT_HEADERDATA, hc);
    bad |= curl_easy_setopt(e, CURLOPT_USERAGENT, PROG "/" WG_VERSION);
    /* The admin API is where we were told it is: no proxy from the
     * environment may see the token. */
    bad |= curl_easy_setopt(e, CURLOPT_PROXY, "");
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (strcmp(hc->method, "GET") != 0)
        bad |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, hc->method);
    if (hc->unix_socket != NULL)
        bad |= curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, hc->unix_socket);
    if (hc->tls != NULL) {
        if (hc->tls->ca)
            bad |= curl_easy_setopt(e, CURLOPT_CAINFO, hc->tls->ca);
        if (hc->tls->cert)
            bad |= curl_easy_setopt(e, CURLOPT_SSLCERT, hc->tls->cert);
        if (hc->tls->key)
            bad |= curl_easy_setopt(e, CURLOPT_SSLKEY, hc->tls->key);
        bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, hc->tls->verify ? 1L : 0L);
        bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, hc->tls->verify ? 2L : 0L);
    }
    if (hc->token != NULL) {
        snprintf(line, sizeof(line), "Authorization: Bearer %s", hc->token);
        *hdrs = curl_slist_append(*hdrs, line);
        explicit_bzero(line, sizeof(line));
    }
    if (hc->last_event_id != NULL) {
        snprintf(line, sizeof(line), "Last-Event-ID: %s", hc->last_event_id);
        *hdrs = curl_slist_append(*hdrs, line);
    }
    if (hc->on_bytes != NULL)
        *hdrs = curl_slist_append(*hdrs, "Accept: text/event-stream");
    if (hc->json_body != NULL) {
        *hdrs = curl_slist_append(*hdrs, "Content-Type: application/json");
        bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, hc->json_body);
    } else if (strcmp(hc->method, "POST") == 0) {
        bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
        bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
    }
    /* No "Expect: 100-continue" round trip for our small bodies. */
    *hdrs = curl_slist_append(*hdrs, "Expect:");
    if (*hdrs != NULL)
        bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, *hdrs);
    return bad ? -EINVAL : 0;
}

int ctl_http_run(struct ctl_http *hc)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = NULL;
    CURL *e = curl_easy_init();
    CURLM *m = curl_multi_init();
    CURLcode result = CURLE_OK;
    int running = 1, rc = -1;

    if (hc->url_bad) {
        snprintf(hc->err, sizeof(hc->err), "%s %.64s...: URL too long", hc->method, hc->url);
        goto out;
    }
    if (e == NULL || m == NULL || http_setup(hc, e, &hdrs, errbuf) < 0 ||
        curl_multi_add_handle(m, e) != CURLM_OK) {
        snprintf(hc->err, sizeof(hc->err), "%s %s: cannot set up the request", hc->method, hc->url);
        goto out;
    }
    hc->started = hc->last_byte = wg_clock_mono_ms();
    for (;;) {
        if (curl_multi_perform(m, &running) != CURLM_OK) {
            snprintf(hc->err, sizeof(hc->err), "%s %s: transfer failed", hc->method, hc->url);
            goto out_remove;
        }
        if (!running)
            break;
        if (hc->should_stop != NULL && hc->should_stop(hc)) {
            hc->stopped = true;
            rc = 0;
            goto out_remove;
        }
        curl_multi_poll(m, NULL, 0, POLL_MS, NULL);
    }
    int left;
    CURLMsg *msg = curl_multi_info_read(m, &left);
    if (msg != NULL && msg->msg == CURLMSG_DONE)
        result = msg->data.result;
    if (result == CURLE_OK || (result == CURLE_WRITE_ERROR && hc->cb_error != 0)) {
        if (hc->cb_error == -E2BIG)
            snprintf(hc->err, sizeof(hc->err), "%s %s: answer larger than %u bytes", hc->method,
                     hc->url, BODY_MAX);
        else
            rc = 0;
        if (hc->status == 0 && rc == 0) {
            snprintf(hc->err, sizeof(hc->err), "%s %s: no HTTP answer", hc->method, hc->url);
            rc = -1;
        }
    } else {
        snprintf(hc->err, sizeof(hc->err), "%s %s: %s", hc->method, hc->url,
                 errbuf[0] ? errbuf : curl_easy_strerror(result));
    }
out_remove:
    curl_multi_remove_handle(m, e);
out:
    curl_slist_free_all(hdrs);
    curl_multi_cleanup(m);
    curl_easy_cleanup(e);
    return rc;
}
