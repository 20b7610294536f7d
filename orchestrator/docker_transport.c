/* orchestrator/docker_transport.c - the Docker client's requests on libcurl
 * multi, driven by the libuv loop (docs/examples/multi-uv.c is the
 * pattern): queueing, sending, curl's sockets and timers, delayed requests,
 * the name lookup of a tcp host and the API version negotiation, and the
 * translation of curl's and the engine's failures into one status. See
 * docker_int.h for ownership and the curl facts this file relies on. */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/str.h"
#include "orchestrator/docker_int.h"

static void kick(struct wg_docker *d);
static void rearm_wake(struct wg_docker *d);

const char *docker_quote(char *dst, size_t dstlen, const char *s)
{
    return wg_log_quote(dst, dstlen, s, strlen(s));
}

/* ---- requests ------------------------------------------------------------------------------- */

struct docker_req *docker_req_new(struct wg_docker *d, enum req_kind kind, const char *method,
                                  char *path, docker_finish_fn *finish, wg_docker_cb *cb, void *arg)
{
    struct docker_req *q;

    if (!path)
        return NULL;
    q = calloc(1, sizeof(*q));
    if (!q) {
        free(path);
        return NULL;
    }
    wg_list_init(&q->node);
    q->d = d;
    q->kind = kind;
    q->method = method;
    q->path = path;
    q->finish = finish;
    q->cb = cb;
    q->arg = arg;
    q->versioned = kind != RK_PING;
    q->timeout_ms = d->timeout_ms;
    q->seq = ++d->seq;
    wg_buf_init(&q->resp, d->max_body + 1);
    wg_buf_init(&q->out, d->max_output + 1);
    return q;
}

int docker_req_set_json(struct docker_req *q, json_t *body)
{
    q->body = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!q->body)
        return -ENOMEM;
    q->body_len = strlen(q->body);
    return 0;
}

void docker_req_free(struct docker_req *q)
{
    if (!q)
        return;
    assert(!wg_list_linked(&q->node));
    if (q->easy)
        curl_easy_cleanup(q->easy);
    curl_slist_free_all(q->hdrs);
    curl_slist_free_all(q->resolve);
    wg_buf_release(&q->resp);
    wg_buf_release(&q->out);
    free(q->path);
    free(q->sent);
    free(q->body);
    free(q);
}

static void unlink_req(struct docker_req *q)
{
    wg_list_remove(&q->node);
    q->where = RQ_NONE;
}

void docker_deliver(struct docker_req *q, int status, const struct wg_docker_reply *r)
{
    if (q->delivered)
        return;
    q->delivered = true;
    if (q->cb)
        q->cb(status, r, q->arg);
}

/* Maps a curl failure to -errno; fills msg. */
static int curl_status(struct docker_req *q, CURLcode cc, char *msg, size_t msglen)
{
    struct wg_docker *d = q->d;
    long oserr = 0;

    if (q->easy)
        curl_easy_getinfo(q->easy, CURLINFO_OS_ERRNO, &oserr);
    switch (cc) {
    case CURLE_COULDNT_CONNECT:
        snprintf(msg, msglen, "cannot connect to %s: %s", d->h.display,
                 oserr > 0 ? strerror((int)oserr) : "connection refused");
        return oserr > 0 ? -(int)oserr : -ECONNREFUSED;
    case CURLE_COULDNT_RESOLVE_HOST:
        snprintf(msg, msglen, "cannot resolve %s", d->h.display);
        return -EHOSTUNREACH;
    case CURLE_OPERATION_TIMEDOUT:
        snprintf(msg, msglen, "timed out after %u ms", (unsigned)q->timeout_used);
        return -ETIMEDOUT;
    case CURLE_OUT_OF_MEMORY:
        snprintf(msg, msglen, "out of memory");
        return -ENOMEM;
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
        snprintf(msg, msglen, "connection to %s lost: %s", d->h.display,
                 q->errbuf[0] ? q->errbuf : curl_easy_strerror(cc));
        return -ECONNRESET;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_USE_SSL_FAILED:
        snprintf(msg, msglen, "TLS with %s: %s", d->h.display,
                 q->errbuf[0] ? q->errbuf : curl_easy_strerror(cc));
        return -EPROTO;
    default:
        snprintf(msg, msglen, "%s", q->errbuf[0] ? q->errbuf : curl_easy_strerror(cc));
        return -EIO;
    }
}

static bool connect_failure(CURLcode cc)
{
    return cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
           cc == CURLE_SSL_CONNECT_ERROR;
}

/* The engine may have been restarted, upgraded or moved: negotiate (and
 * look the name up) again on the next call. */
static void forget_engine(struct wg_docker *d)
{
    if (d->neg != NEG_DONE)
        return;
    d->neg = NEG_NONE;
    d->version[0] = '\0';
    free(d->resolve_entry);
    d->resolve_entry = NULL;
}

/* The HTTP status is shown only when it is the outcome (status > 0): a
 * transfer may fail after a 200 head, e.g. an exec that outlives its
 * timeout. */
void docker_format_error(char *out, size_t outlen, const struct wg_docker_reply *r, int status)
{
    if (status > 0)
        snprintf(out, outlen, "%s %s: %ld %s", r->method, r->path, r->http_status, r->message);
    else
        snprintf(out, outlen, "%s %s: %s", r->method, r->path, r->message);
}

/* Settles q with a status that has no HTTP answer behind it (cancel, a
 * failed negotiation, a deadline passed before sending). */
static void req_fail(struct docker_req *q, int status, const char *message)
{
    struct wg_docker *d = q->d;
    struct wg_docker_reply r;
    char error[DOCKER_ERROR_MAX];

    memset(&r, 0, sizeof(r));
    r.method = q->method;
    r.path = q->sent ? q->sent : q->path;
    r.message = message;
    r.error = error;
    r.body = "";
    r.api_version = d->neg == NEG_DONE ? d->version : NULL;
    docker_format_error(error, sizeof(error), &r, status);
    q->finish(q, status, &r);
}

/* The status of an answer that came (cc was CURLE_OK): 0 for a 2xx (or a
 * 304 where that means "already"), else the positive code of the HTTP
 * status, with Docker's message (or the body's first line) in r->message.
 * r->body and r->json point into q->resp (json owned by the caller). */
static int answer_status(struct docker_req *q, long code, struct wg_docker_reply *r, char *msg,
                         size_t msglen)
{
    bool body_is_data = q->streamed && code / 100 == 2;
    const char *m;
    int status;

    if (!body_is_data && wg_buf_append(&q->resp, "", 1) == 0) {
        r->body = wg_buf_head(&q->resp);
        r->body_len = wg_buf_size(&q->resp) - 1;
        if (r->body_len > 0)
            r->json = json_loadb(r->body, r->body_len, 0, NULL);
    }
    if (code / 100 == 2 || (code == 304 && q->ok_304))
        return 0;
    m = json_string_value(json_object_get(r->json, "message"));
    status = code == 404   ? WG_DOCKER_ENOTFOUND
             : code == 409 ? WG_DOCKER_ECONFLICT
                           : WG_DOCKER_EHTTP;
    if (m)
        r->message = m;
    else if (r->body_len > 0)
        snprintf(msg, msglen, "%.*s", (int)strcspn(r->body, "\r\n"), r->body);
    else
        snprintf(msg, msglen, "HTTP %ld", code);
    return status;
}

/* q's transfer ended (q is unlinked and off the multi handle). */
static void req_done(struct docker_req *q, CURLcode cc)
{
    struct wg_docker *d = q->d;
    struct wg_docker_reply r;
    char msg[DOCKER_MESSAGE_MAX], error[DOCKER_ERROR_MAX], qerr[DOCKER_QUOTED_MAX];
    int status = 0;
    long code = 0;

    memset(&r, 0, sizeof(r));
    msg[0] = error[0] = '\0';
    r.method = q->method;
    r.path = q->sent ? q->sent : q->path;
    r.message = msg;
    r.error = error;
    r.body = "";
    r.elapsed_us = (uv_hrtime() - q->t_sent) / 1000;
    if (q->easy)
        curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &code);
    r.http_status = code;

    if (q->overflow) {
        snprintf(msg, sizeof(msg), "answer larger than %zu bytes",
                 q->data_cap && code / 100 == 2 ? q->data_cap
                 : q->body_cap                  ? q->body_cap
                                                : d->max_body);
        status = -EMSGSIZE;
    } else if (cc != CURLE_OK) {
        status = curl_status(q, cc, msg, sizeof(msg));
        if (connect_failure(cc))
            forget_engine(d);
    } else {
        status = answer_status(q, code, &r, msg, sizeof(msg));
    }
    r.api_version = d->neg == NEG_DONE ? d->version : NULL;
    if (status != 0)
        docker_format_error(error, sizeof(error), &r, status);
    WG_DEBUG(d->log, DOCKER_SUBSYS, "request done",
             "req=%llu method=%s path=%s http=%ld status=%d us=%llu%s%s",
             (unsigned long long)q->seq, q->method, r.path, code, status,
             (unsigned long long)r.elapsed_us, status ? " error=" : "",
             status ? docker_quote(qerr, sizeof(qerr), error) : "");
    q->finish(q, status, &r);
    json_decref(r.json);
}

/* ---- curl callbacks: bodies and headers ----------------------------------------------------- */

static void out_sink(void *arg, int stream, const char *p, size_t n)
{
    struct docker_req *q = arg;

    (void)stream; /* stdout and stderr interleave, as a terminal shows them */
    docker_tail_append(&q->out, q->d->max_output, p, n, &q->out_truncated);
}

void docker_output_end(struct docker_req *q)
{
    wg_docker_demux_end(&q->dm, out_sink, q);
}

static size_t write_cb(char *p, size_t size, size_t nmemb, void *arg)
{
    struct docker_req *q = arg;
    struct wg_docker *d = q->d;
    size_t n = size * nmemb;
    int rc;

    if (q->canceled || d->closed)
        return 0; /* aborts the transfer */
    if (!q->code)
        curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &q->code);
    if (q->streamed && q->code / 100 == 2) {
        if (q->on_data) {
            rc = q->on_data(q, p, n);
            if (rc < 0)
                q->overflow = true;
            return rc ? 0 : n;
        }
        wg_docker_demux_feed(&q->dm, p, n, out_sink, q);
        return n;
    }
    if (wg_buf_size(&q->resp) + n > (q->body_cap ? q->body_cap : d->max_body) ||
        wg_buf_append(&q->resp, p, n) < 0) {
        q->overflow = true;
        return 0;
    }
    return n;
}

static size_t header_cb(char *p, size_t size, size_t nmemb, void *arg)
{
    struct docker_req *q = arg;
    struct wg_docker *d = q->d;
    size_t n = size * nmemb;
    const char *v;
    long vn;

    if (q->canceled || d->closed)
        return 0;
    if (n >= 5 && strncmp(p, "HTTP/", 5) == 0) {
        q->code = 0; /* a new response (after a 1xx) */
        q->server_version[0] = '\0';
    }
    if (q->kind == RK_PING && (vn = docker_header_value(p, n, "Api-Version", &v)) > 0 &&
        (size_t)vn < sizeof(q->server_version)) {
        memcpy(q->server_version, v, (size_t)vn);
        q->server_version[vn] = '\0';
    }
    if (q->on_head && !q->opened && (n == 2 || n == 1) && (p[0] == '\r' || p[0] == '\n')) {
        long code = 0;
        curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &code);
        if (code / 100 == 2) {
            q->opened = true;
            if (!q->on_head(q))
                return 0;
        }
    }
    return n;
}

/* ---- sending -------------------------------------------------------------------------------- */

/* How to reach the engine: the unix socket, or TCP with the pinned
 * address and TLS. Returns whether an option failed (out of memory). */
static bool set_connection(struct docker_req *q, CURL *e)
{
    struct wg_docker *d = q->d;
    bool bad = false;

    bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)d->connect_timeout_ms) != CURLE_OK;
    if (d->h.is_unix) {
        bad |= curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, d->h.path) != CURLE_OK;
    } else {
        bad |= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
        if (q->resolve)
            bad |= curl_easy_setopt(e, CURLOPT_RESOLVE, q->resolve) != CURLE_OK;
    }
    if (!d->h.tls)
        return bad;
    if (d->tls_ca)
        bad |= curl_easy_setopt(e, CURLOPT_CAINFO, d->tls_ca) != CURLE_OK;
    if (d->tls_cert)
        bad |= curl_easy_setopt(e, CURLOPT_SSLCERT, d->tls_cert) != CURLE_OK;
    if (d->tls_key)
        bad |= curl_easy_setopt(e, CURLOPT_SSLKEY, d->tls_key) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, d->tls_skip_verify ? 0L : 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, d->tls_skip_verify ? 0L : 2L) != CURLE_OK;
    return bad;
}

/* Configures q's easy handle. Returns 0 or -ENOMEM. */
static int setup_easy(struct docker_req *q, const char *url, uint32_t timeout_ms)
{
    struct wg_docker *d = q->d;
    CURL *e = curl_easy_init();
    bool bad = false;

    if (!e)
        return -ENOMEM;
    q->easy = e;
    q->hdrs = curl_slist_append(NULL, "Expect:"); /* no 100-continue round trip */
    if (q->hdrs && strcmp(q->method, "POST") == 0)
        q->hdrs = curl_slist_append(q->hdrs, "Content-Type: application/json");
    if (!q->hdrs)
        return -ENOMEM;
    if (!d->h.is_unix && d->resolve_entry) {
        q->resolve = curl_slist_append(NULL, d->resolve_entry);
        if (!q->resolve)
            return -ENOMEM;
    }
    bad |= curl_easy_setopt(e, CURLOPT_URL, url) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PRIVATE, q) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, q->errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_USERAGENT, "wakegate/" WG_VERSION) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, q->hdrs) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, q) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERDATA, q) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms) != CURLE_OK;
    bad |= set_connection(q, e);
    if (strcmp(q->method, "POST") == 0) {
        bad |= curl_easy_setopt(e, CURLOPT_POST, 1L) != CURLE_OK;
        bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, q->body ? q->body : "") != CURLE_OK;
        bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)q->body_len) != CURLE_OK;
    } else if (strcmp(q->method, "GET") != 0) {
        bad |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, q->method) != CURLE_OK;
    }
    return bad ? -ENOMEM : 0;
}

/* Hands q (unlinked) to curl. On failure q's outcome is delivered and q is
 * freed; the caller re-checks d->closed. Called from pump() only, so never
 * inside curl. */
static void activate(struct docker_req *q)
{
    struct wg_docker *d = q->d;
    uint64_t now = uv_now(d->loop);
    uint32_t timeout = q->timeout_ms;
    char *url = NULL;
    int rc;

    if (q->deadline) {
        if (q->deadline <= now) {
            req_fail(q, -ETIMEDOUT, "timed out before it could be sent");
            docker_req_free(q);
            return;
        }
        if (!timeout || q->deadline - now < timeout)
            timeout = (uint32_t)(q->deadline - now);
    }
    q->sent = q->versioned ? wg_strf("/v%s%s", d->version, q->path) : strdup(q->path);
    url = q->sent ? wg_strf("%s%s", d->h.base, q->sent) : NULL;
    q->timeout_used = timeout;
    rc = url ? setup_easy(q, url, timeout) : -ENOMEM;
    if (rc == 0 && curl_multi_add_handle(d->multi, q->easy) != CURLM_OK)
        rc = -ENOMEM;
    free(url);
    if (rc < 0) {
        req_fail(q, rc, "out of memory");
        docker_req_free(q);
        return;
    }
    q->where = RQ_ACTIVE;
    wg_list_push_back(&d->active, &q->node);
    q->t_sent = uv_hrtime();
    WG_DEBUG(d->log, DOCKER_SUBSYS, "request", "req=%llu method=%s path=%s host=%s",
             (unsigned long long)q->seq, q->method, q->sent, d->qhost);
}

int docker_submit(struct docker_req *q)
{
    struct wg_docker *d = q->d;

    if (d->closed)
        return -ECANCELED;
    q->where = RQ_QUEUED;
    wg_list_push_back(&d->queued, &q->node);
    kick(d);
    return 0;
}

/* ---- negotiation ---------------------------------------------------------------------------- */

/* Fails every queued versioned request: negotiation failed. */
static void fail_queued(struct wg_docker *d, int status, const char *why)
{
    char msg[DOCKER_MESSAGE_MAX];
    struct wg_list *n;

    snprintf(msg, sizeof(msg), "API version negotiation failed: %s", why);
    /* Each delivery may change the lists: take the first one every time. */
    for (;;) {
        struct docker_req *q = NULL;
        if (d->closed)
            return; /* wg_docker_free() cancels the rest */
        for (n = d->queued.next; n != &d->queued; n = n->next) {
            struct docker_req *c = wg_container_of(n, struct docker_req, node);
            if (c->versioned) {
                q = c;
                break;
            }
        }
        if (!q)
            return;
        unlink_req(q);
        req_fail(q, status, msg);
        docker_req_free(q);
    }
}

static void neg_failed(struct wg_docker *d, int status, const char *why)
{
    char qwhy[DOCKER_QUOTED_MAX];

    d->neg = NEG_NONE;
    WG_DEBUG(d->log, DOCKER_SUBSYS, "negotiation failed", "host=%s status=%d reason=%s", d->qhost,
             status, docker_quote(qwhy, sizeof(qwhy), why));
    fail_queued(d, status, why);
}

void docker_finish_ping(struct docker_req *q, int status, struct wg_docker_reply *r)
{
    struct wg_docker *d = q->d;
    char version[DOCKER_VERSION_MAX];

    if (status == 0) {
        int rc = docker_version_negotiate(q->server_version, d->max_major, d->max_minor, version,
                                          sizeof(version));
        if (rc < 0) {
            status = rc == -EINVAL ? -EBADMSG : rc;
            snprintf(q->finish_msg, sizeof(q->finish_msg), "engine API version \"%s\" is %s",
                     q->server_version,
                     rc == -EINVAL ? "malformed" : "older than " WG_DOCKER_API_MIN);
            r->message = q->finish_msg;
            docker_format_error(q->finish_error, sizeof(q->finish_error), r, status);
            r->error = q->finish_error;
        } else if (!d->closed) {
            snprintf(d->version, sizeof(d->version), "%s", version);
            if (d->neg != NEG_DONE)
                WG_DEBUG(d->log, DOCKER_SUBSYS, "api version negotiated",
                         "host=%s engine=%s using=%s", d->qhost,
                         q->server_version[0] ? q->server_version : "none", version);
            d->neg = NEG_DONE;
            r->api_version = d->version;
            kick(d);
        }
    }
    if (q->internal) {
        if (status != 0 && d->neg == NEG_PINGING && !d->closed)
            neg_failed(d, status, r->error);
        return;
    }
    docker_deliver(q, status, r);
}

static int neg_ping(struct wg_docker *d)
{
    struct docker_req *q =
        docker_req_new(d, RK_PING, "GET", strdup("/_ping"), docker_finish_ping, NULL, NULL);

    if (!q)
        return -ENOMEM;
    q->internal = true;
    q->timeout_ms = d->connect_timeout_ms + d->timeout_ms;
    d->neg = NEG_PINGING;
    return docker_submit(q);
}

/* "name:port:addr[,addr]" for CURLOPT_RESOLVE from the lookup's answer,
 * malloc'd; NULL when it has no usable address (or out of memory). */
static char *resolve_entry(const struct wg_docker *d, const struct addrinfo *res)
{
    struct wg_buf b;
    char addr[INET6_ADDRSTRLEN];
    int n = 0;

    wg_buf_init(&b, 4096);
    wg_buf_appendf(&b, "%s:%u:", d->h.name, d->h.port);
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET)
            uv_ip4_name((const struct sockaddr_in *)ai->ai_addr, addr, sizeof(addr));
        else if (ai->ai_family == AF_INET6)
            uv_ip6_name((const struct sockaddr_in6 *)ai->ai_addr, addr, sizeof(addr));
        else
            continue;
        if (wg_buf_appendf(&b, ai->ai_family == AF_INET6 ? "%s[%s]" : "%s%s", n ? "," : "", addr) ==
            0)
            n++;
    }
    if (n == 0 || wg_buf_append(&b, "", 1) < 0) {
        wg_buf_release(&b);
        return NULL;
    }
    return b.data; /* NUL-terminated above; the caller's now */
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct wg_docker *d = req->data;
    char why[256], *entry;

    d->gai_busy = false;
    if (d->torn) {
        uv_freeaddrinfo(res);
        docker_release(d);
        return;
    }
    d->refs--;
    if (d->neg != NEG_RESOLVING) { /* the deadline passed meanwhile */
        uv_freeaddrinfo(res);
        return;
    }
    d->resolve_deadline = 0;
    if (status < 0) {
        uv_freeaddrinfo(res);
        snprintf(why, sizeof(why), "cannot resolve %s: %s", d->h.display, uv_strerror(status));
        neg_failed(d, -EHOSTUNREACH, why);
        return;
    }
    entry = resolve_entry(d, res);
    uv_freeaddrinfo(res);
    if (!entry) {
        snprintf(why, sizeof(why), "cannot resolve %s: no usable address", d->h.display);
        neg_failed(d, -EHOSTUNREACH, why);
        return;
    }
    free(d->resolve_entry);
    d->resolve_entry = entry;
    WG_DEBUG(d->log, DOCKER_SUBSYS, "resolved", "host=%s entry=%s", d->qhost, d->resolve_entry);
    if (neg_ping(d) < 0)
        neg_failed(d, -ENOMEM, "out of memory");
}

/* Starts negotiation (d->neg == NEG_NONE): a name lookup first for a tcp
 * host name, then the ping. */
static void negotiate(struct wg_docker *d)
{
    char port[8];
    struct addrinfo hints;
    int rc;

    if (d->h.is_unix || d->h.numeric || d->resolve_entry) {
        if (neg_ping(d) < 0)
            neg_failed(d, -ENOMEM, "out of memory");
        return;
    }
    if (d->gai_busy) {
        /* An earlier lookup that timed out is stuck in the resolver; its
         * request cannot be reused until it returns. */
        neg_failed(d, -EHOSTUNREACH, "previous name lookup still running");
        return;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%u", d->h.port);
    rc = uv_getaddrinfo(d->loop, &d->gai, gai_cb, d->h.name, port, &hints);
    if (rc < 0) {
        neg_failed(d, -EHOSTUNREACH, uv_strerror(rc));
        return;
    }
    d->gai_busy = true;
    d->refs++;
    d->neg = NEG_RESOLVING;
    d->resolve_deadline = uv_now(d->loop) + d->connect_timeout_ms;
    rearm_wake(d);
}

/* ---- the loop side: deferred work, delayed requests ----------------------------------------- */

/* Removes stopped streams, sends what can be sent, starts negotiation when
 * a versioned call waits for it. Runs from `defer`, never inside curl. */
static void pump(struct wg_docker *d)
{
    struct wg_list *n, *next;
    bool waiting;

    for (n = d->active.next; n != &d->active; n = next) {
        struct docker_req *q = wg_container_of(n, struct docker_req, node);
        next = n->next;
        if (q->canceled) {
            curl_multi_remove_handle(d->multi, q->easy);
            unlink_req(q);
            docker_req_free(q);
        }
    }
    /* activate() may deliver a failure, whose callback may change the
     * lists: look for the first sendable one afresh each time. */
    for (;;) {
        struct docker_req *q = NULL;
        waiting = false;
        for (n = d->queued.next; n != &d->queued; n = n->next) {
            struct docker_req *c = wg_container_of(n, struct docker_req, node);
            if (!c->versioned || d->neg == NEG_DONE) {
                q = c;
                break;
            }
            waiting = true;
        }
        if (!q)
            break;
        unlink_req(q);
        activate(q);
        if (d->closed)
            return;
    }
    if (waiting && d->neg == NEG_NONE)
        negotiate(d);
}

static void defer_cb(uv_idle_t *h)
{
    struct wg_docker *d = h->data;

    uv_idle_stop(h); /* a kick() during pump() starts it again */
    if (!d->closed)
        pump(d);
}

static void kick(struct wg_docker *d)
{
    if (!d->torn)
        uv_idle_start(&d->defer, defer_cb);
}

static void wake_cb(uv_timer_t *t)
{
    struct wg_docker *d = t->data;
    uint64_t now = uv_now(d->loop);
    struct wg_list *n, *next;
    char why[256];

    if (d->closed)
        return;
    for (n = d->delayed.next; n != &d->delayed; n = next) {
        struct docker_req *q = wg_container_of(n, struct docker_req, node);
        next = n->next;
        if (q->not_before <= now) {
            unlink_req(q);
            docker_submit(q); /* d is open: cannot fail */
        }
    }
    if (d->neg == NEG_RESOLVING && d->resolve_deadline && d->resolve_deadline <= now) {
        d->resolve_deadline = 0;
        snprintf(why, sizeof(why), "name lookup for %s timed out after %u ms", d->h.display,
                 d->connect_timeout_ms);
        neg_failed(d, -ETIMEDOUT, why); /* gai_cb will find neg moved on */
        if (d->closed)
            return;
    }
    rearm_wake(d);
}

static void rearm_wake(struct wg_docker *d)
{
    uint64_t due = 0, now = uv_now(d->loop);
    struct wg_list *n;

    if (d->torn)
        return;
    for (n = d->delayed.next; n != &d->delayed; n = n->next) {
        struct docker_req *q = wg_container_of(n, struct docker_req, node);
        if (!due || q->not_before < due)
            due = q->not_before;
    }
    if (d->neg == NEG_RESOLVING && d->resolve_deadline && (!due || d->resolve_deadline < due))
        due = d->resolve_deadline;
    if (!due)
        uv_timer_stop(&d->wake);
    else
        uv_timer_start(&d->wake, wake_cb, due > now ? due - now : 0, 0);
}

void docker_delay(struct docker_req *q, uint32_t ms)
{
    struct wg_docker *d = q->d;

    q->where = RQ_DELAYED;
    q->not_before = uv_now(d->loop) + ms;
    wg_list_push_back(&d->delayed, &q->node);
    rearm_wake(d);
}

/* ---- curl on the loop ----------------------------------------------------------------------- */

/* Delivers the transfers curl finished. Never inside curl. */
static void check_done(struct wg_docker *d)
{
    CURLMsg *m;
    int left;

    while (!d->closed && (m = curl_multi_info_read(d->multi, &left))) {
        CURL *e = m->easy_handle;
        CURLcode cc = m->data.result;
        struct docker_req *q = NULL;

        if (m->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&q);
        curl_multi_remove_handle(d->multi, e); /* m is gone from here on */
        unlink_req(q);
        if (!q->canceled)
            req_done(q, cc);
        docker_req_free(q);
    }
}

static void drive(struct wg_docker *d, curl_socket_t s, int flags)
{
    int running;

    d->in_curl++;
    curl_multi_socket_action(d->multi, s, flags, &running);
    d->in_curl--;
    if (!d->closed)
        check_done(d);
    if (d->closed && !d->in_curl)
        docker_teardown(d);
}

static void sock_closed(uv_handle_t *h)
{
    struct docker_sock *k = h->data;
    struct wg_docker *d = k->d;

    free(k);
    docker_release(d);
}

static void sock_close(struct docker_sock *k)
{
    if (k->closing)
        return;
    k->closing = true;
    wg_list_remove(&k->node);
    uv_close((uv_handle_t *)&k->poll, sock_closed);
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
    struct docker_sock *k = h->data;
    struct wg_docker *d = k->d;
    int flags = 0;

    if (status < 0) /* libuv stopped the handle: let curl meet the error */
        events = k->events;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    if (status < 0)
        flags |= CURL_CSELECT_ERR;
    drive(d, k->fd, flags);
    /* k's memory lasts until its close callback, later in this loop turn. */
    if (status < 0 && !k->closing && k->events && !d->torn)
        uv_poll_start(&k->poll, k->events, poll_cb);
}

static int socket_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct wg_docker *d = userp;
    struct docker_sock *k = socketp;

    (void)e;
    if (what == CURL_POLL_REMOVE) {
        if (k) {
            sock_close(k);
            if (!d->tearing)
                curl_multi_assign(d->multi, s, NULL);
        }
        return 0;
    }
    if (d->torn)
        return 0;
    if (!k) {
        k = calloc(1, sizeof(*k));
        if (!k)
            return -1;
        if (uv_poll_init_socket(d->loop, &k->poll, s) < 0) {
            free(k);
            return -1;
        }
        k->poll.data = k;
        k->d = d;
        k->fd = s;
        wg_list_push_back(&d->socks, &k->node);
        d->refs++;
        curl_multi_assign(d->multi, s, k);
    }
    k->events =
        ((what & CURL_POLL_IN) ? UV_READABLE : 0) | ((what & CURL_POLL_OUT) ? UV_WRITABLE : 0);
    if (k->events)
        uv_poll_start(&k->poll, k->events, poll_cb);
    else
        uv_poll_stop(&k->poll);
    return 0;
}

static void curl_timer_cb(uv_timer_t *t)
{
    struct wg_docker *d = t->data;

    if (!d->closed)
        drive(d, CURL_SOCKET_TIMEOUT, 0);
}

static int timer_fn(CURLM *m, long timeout_ms, void *userp)
{
    struct wg_docker *d = userp;

    (void)m;
    if (d->torn)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&d->curl_timer);
    else /* 0: on the next loop turn, never from inside curl */
        uv_timer_start(&d->curl_timer, curl_timer_cb, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- lifetime ------------------------------------------------------------------------------- */

static void handle_closed(uv_handle_t *h)
{
    docker_release(h->data);
}

int docker_transport_init(struct wg_docker *d, char *err, size_t errlen)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "curl_global_init failed");
        return -ENOMEM;
    }
    d->multi = curl_multi_init();
    if (!d->multi) {
        curl_global_cleanup();
        return -ENOMEM;
    }
    curl_multi_setopt(d->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(d->multi, CURLMOPT_SOCKETDATA, d);
    curl_multi_setopt(d->multi, CURLMOPT_TIMERFUNCTION, timer_fn);
    curl_multi_setopt(d->multi, CURLMOPT_TIMERDATA, d);
    wg_list_init(&d->queued);
    wg_list_init(&d->active);
    wg_list_init(&d->delayed);
    wg_list_init(&d->socks);
    /* Past this point nothing fails: these inits cannot, for a valid loop. */
    uv_timer_init(d->loop, &d->curl_timer);
    uv_timer_init(d->loop, &d->wake);
    uv_idle_init(d->loop, &d->defer);
    d->curl_timer.data = d->wake.data = d->defer.data = d->gai.data = d;
    d->refs = 3;
    return 0;
}

static void free_list(struct wg_docker *d, struct wg_list *l)
{
    while (!wg_list_empty(l)) {
        struct docker_req *q = wg_container_of(l->next, struct docker_req, node);
        if (q->where == RQ_ACTIVE)
            curl_multi_remove_handle(d->multi, q->easy);
        unlink_req(q);
        docker_req_free(q);
    }
}

/* Reached from wg_docker_free() outside curl, or from drive() once curl
 * has returned. */
void docker_teardown(struct wg_docker *d)
{
    if (d->torn)
        return;
    d->torn = true;
    free_list(d, &d->active);
    free_list(d, &d->queued);
    free_list(d, &d->delayed);
    d->tearing = true;
    curl_multi_cleanup(d->multi);
    d->multi = NULL;
    d->tearing = false;
    while (!wg_list_empty(&d->socks))
        sock_close(wg_container_of(d->socks.next, struct docker_sock, node));
    if (d->gai_busy)
        uv_cancel((uv_req_t *)&d->gai); /* may fail if running; gai_cb drops its ref */
    uv_close((uv_handle_t *)&d->curl_timer, handle_closed);
    uv_close((uv_handle_t *)&d->wake, handle_closed);
    uv_close((uv_handle_t *)&d->defer, handle_closed);
}

static void cancel_list(struct wg_list *l)
{
    /* No callback can change the lists now: calls answer -ECANCELED and
     * wg_docker_events_stop() does nothing once d is closed. */
    for (struct wg_list *n = l->next; n != l; n = n->next) {
        struct docker_req *q = wg_container_of(n, struct docker_req, node);
        if (!q->canceled && !q->delivered)
            req_fail(q, -ECANCELED, DOCKER_CANCELED_TEXT);
        q->delivered = true;
    }
}

void docker_cancel_all(struct wg_docker *d)
{
    cancel_list(&d->active);
    cancel_list(&d->queued);
    cancel_list(&d->delayed);
}

void docker_req_stop(struct docker_req *q)
{
    struct wg_docker *d = q->d;

    q->canceled = true;
    q->delivered = true;
    switch (q->where) {
    case RQ_QUEUED:
    case RQ_DELAYED:
        unlink_req(q);
        docker_req_free(q);
        break;
    case RQ_ACTIVE:
        if (d->in_curl) {
            kick(d); /* pump() removes it once curl has returned */
        } else {
            curl_multi_remove_handle(d->multi, q->easy);
            unlink_req(q);
            docker_req_free(q);
        }
        break;
    case RQ_NONE:
        break; /* its outcome is being delivered: freed after */
    }
}
