/* proxy/metrics.c - the proxy's /metrics text and /readyz condition; see
 * metrics.h. Everything is read through proxy.h: the counters live in
 * struct wg_proxy (per loop), this file only formats them. */
#include "proxy/metrics.h"
#include "proxy/forward_auth.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hist.h"
#include "proxy/proxy.h"
#include "proxy/tls.h"

/* The counters and gauges of connections, requests, responses, upstreams
 * and bytes. */
static void counter_metrics(const struct wg_proxy_stats *s, size_t idle, struct wg_buf *out)
{
    wg_buf_appendf(out,
                   "# HELP wakegate_connections_open Client connections open now.\n"
                   "# TYPE wakegate_connections_open gauge\n"
                   "wakegate_connections_open %" PRIu64 "\n"
                   "# HELP wakegate_connections_accepted_total Client connections accepted.\n"
                   "# TYPE wakegate_connections_accepted_total counter\n"
                   "wakegate_connections_accepted_total %" PRIu64 "\n"
                   "# HELP wakegate_connections_refused_total Client connections refused over "
                   "limits.connections_max.\n"
                   "# TYPE wakegate_connections_refused_total counter\n"
                   "wakegate_connections_refused_total %" PRIu64 "\n"
                   "# HELP wakegate_requests_total Request heads received.\n"
                   "# TYPE wakegate_requests_total counter\n"
                   "wakegate_requests_total %" PRIu64 "\n"
                   "# HELP wakegate_responses_total Responses sent, by status class.\n"
                   "# TYPE wakegate_responses_total counter\n",
                   s->connections_open, s->connections_accepted, s->connections_refused,
                   s->requests);
    for (int k = 1; k <= 5; k++)
        wg_buf_appendf(out, "wakegate_responses_total{class=\"%dxx\"} %" PRIu64 "\n", k,
                       s->responses_by_class[k]);
    wg_buf_appendf(
        out,
        "# HELP wakegate_upstream_errors_total Upstream connect failures, resets and bad framing.\n"
        "# TYPE wakegate_upstream_errors_total counter\n"
        "wakegate_upstream_errors_total %" PRIu64 "\n"
        "# HELP wakegate_upstream_retries_total Requests retried on a fresh upstream connection.\n"
        "# TYPE wakegate_upstream_retries_total counter\n"
        "wakegate_upstream_retries_total %" PRIu64 "\n"
        "# HELP wakegate_session_upstream_rechecks_total Requests to a running session whose "
        "connect failed, held to look at the session again.\n"
        "# TYPE wakegate_session_upstream_rechecks_total counter\n"
        "wakegate_session_upstream_rechecks_total %" PRIu64 "\n"
        "# HELP wakegate_client_bytes_received_total Bytes read from clients.\n"
        "# TYPE wakegate_client_bytes_received_total counter\n"
        "wakegate_client_bytes_received_total %" PRIu64 "\n"
        "# HELP wakegate_client_bytes_sent_total Bytes written to clients.\n"
        "# TYPE wakegate_client_bytes_sent_total counter\n"
        "wakegate_client_bytes_sent_total %" PRIu64 "\n"
        "# HELP wakegate_upstream_idle_connections Idle upstream connections in the keep-alive "
        "pool.\n"
        "# TYPE wakegate_upstream_idle_connections gauge\n"
        "wakegate_upstream_idle_connections %zu\n"
        "# HELP wakegate_buffered_bytes Bytes queued to slow peers now (what their sockets did "
        "not take), by direction; at most limits.buffer_high_water per connection and direction, "
        "plus a response head.\n"
        "# TYPE wakegate_buffered_bytes gauge\n"
        "wakegate_buffered_bytes{to=\"client\"} %" PRIu64 "\n"
        "wakegate_buffered_bytes{to=\"upstream\"} %" PRIu64 "\n",
        s->upstream_errors, s->upstream_retries, s->session_rechecks, s->bytes_in, s->bytes_out,
        idle, s->buffered_bytes[0], s->buffered_bytes[1]);
}

static void port_metrics(const struct wg_proxy_stats *s, struct wg_buf *out)
{
    wg_buf_appendf(out,
                   "# HELP wakegate_session_port_unknown_total Requests on {port} routes answered "
                   "404 because no template, or not the session's, has a port of that name.\n"
                   "# TYPE wakegate_session_port_unknown_total counter\n"
                   "wakegate_session_port_unknown_total %" PRIu64 "\n",
                   s->port_unknown);
}

/* The row labelled label in px's table, or NULL. Tables are small and
 * scrapes rare: a linear search. */
static const _Atomic uint64_t *row_of(const struct wg_proxy *px, const char *label)
{
    const char *l;
    const _Atomic uint64_t *by_class;

    for (size_t i = 0; wg_proxy_route_stats(px, i, &l, &by_class); i++)
        if (strcmp(l, label) == 0)
            return by_class;
    return NULL;
}

/* wakegate_route_requests_total: every class of every row, zeros included,
 * so a series exists before its first request. With several loops, the rows
 * of the first one's table, each summed with the rows of the same label in
 * the others (during a reload a loop may still have its old table: a route
 * it does not have yet adds nothing). */
static void route_metrics(const struct wg_proxy *const *pxs, size_t n, struct wg_buf *out)
{
    const char *label;
    const _Atomic uint64_t *by_class;

    wg_hist_family(out, "wakegate_route_requests_total", "counter",
                   "Responses sent, by route and status class (route \"none\": no route "
                   "matched, or the request was refused before routing).");
    for (size_t w = 0; w < n; w++)
        wg_proxy_routes_lock(pxs[w]);
    for (size_t i = 0; wg_proxy_route_stats(pxs[0], i, &label, &by_class); i++) {
        uint64_t sum[6];
        for (int k = 1; k <= 5; k++)
            sum[k] = by_class[k];
        for (size_t w = 1; w < n; w++) {
            const _Atomic uint64_t *other = row_of(pxs[w], label);
            for (int k = 1; k <= 5 && other != NULL; k++)
                sum[k] += other[k];
        }
        for (int k = 1; k <= 5; k++) {
            wg_buf_appendf(out, "wakegate_route_requests_total{route=\"");
            wg_hist_label_escape(out, label);
            wg_buf_appendf(out, "\",class=\"%dxx\"} %" PRIu64 "\n", k, sum[k]);
        }
    }
    for (size_t w = n; w > 0; w--)
        wg_proxy_routes_unlock(pxs[w - 1]);
}

/* The latency histograms. */
static void histogram_metrics(const struct wg_proxy_stats *s, struct wg_buf *out)
{
    wg_hist_family(out, "wakegate_request_duration_seconds", "histogram",
                   "Time from the first byte of a request head to the end of its response "
                   "(an upgrade: to the 101 head); one per response counted in "
                   "wakegate_responses_total.");
    wg_hist_write(out, "wakegate_request_duration_seconds", NULL, &s->request_duration);
    wg_hist_family(out, "wakegate_upstream_latency_seconds", "histogram",
                   "Time from taking an upstream connection (its connect included when not "
                   "pooled) to the first byte of the upstream's answer.");
    wg_hist_write(out, "wakegate_upstream_latency_seconds", NULL, &s->upstream_latency);
    wg_hist_family(out, "wakegate_wake_first_byte_seconds", "histogram",
                   "Requests held while their session woke: time from the start of the hold "
                   "to the first byte from the session.");
    wg_hist_write(out, "wakegate_wake_first_byte_seconds", NULL, &s->wake_first_byte);
}

static void held_metrics(const struct wg_proxy_stats *s, struct wg_buf *out)
{
    wg_buf_appendf(out,
                   "# HELP wakegate_held_requests_released_total Requests held while their "
                   "session woke, by how the hold ended.\n"
                   "# TYPE wakegate_held_requests_released_total counter\n"
                   "wakegate_held_requests_released_total{outcome=\"served\"} %" PRIu64 "\n"
                   "wakegate_held_requests_released_total{outcome=\"timeout\"} %" PRIu64 "\n"
                   "wakegate_held_requests_released_total{outcome=\"failed\"} %" PRIu64 "\n"
                   "wakegate_held_requests_released_total{outcome=\"abandoned\"} %" PRIu64 "\n"
                   "wakegate_held_requests_released_total{outcome=\"page\"} %" PRIu64 "\n",
                   s->held_released[WG_HOLD_SERVED], s->held_released[WG_HOLD_TIMEOUT],
                   s->held_released[WG_HOLD_FAILED], s->held_released[WG_HOLD_ABANDONED],
                   s->held_released[WG_HOLD_PAGE]);
}

static void unconfirmed_metrics(const struct wg_proxy_stats *s, struct wg_buf *out)
{
    wg_buf_appendf(out,
                   "# HELP wakegate_session_unconfirmed_requests_total Requests for a running "
                   "session that Redis could not confirm (within redis.outage_grace): sent where "
                   "a live connection proved its container's address, or held for want of one.\n"
                   "# TYPE wakegate_session_unconfirmed_requests_total counter\n"
                   "wakegate_session_unconfirmed_requests_total{outcome=\"proven\"} %" PRIu64 "\n"
                   "wakegate_session_unconfirmed_requests_total{outcome=\"held\"} %" PRIu64 "\n"
                   "# HELP wakegate_session_unconfirmed_refused_total Requests held for want of "
                   "a proof that Redis still could not confirm: answered 503.\n"
                   "# TYPE wakegate_session_unconfirmed_refused_total counter\n"
                   "wakegate_session_unconfirmed_refused_total %" PRIu64 "\n",
                   s->session_unconfirmed_proven, s->session_doubt_held, s->session_doubt_refused);
}

static void access_metrics(const struct wg_proxy_stats *s, struct wg_buf *out)
{
    wg_buf_appendf(out,
                   "# HELP wakegate_access_denied_total Requests to private session routes "
                   "answered 401 (no valid link, cookie or header).\n"
                   "# TYPE wakegate_access_denied_total counter\n"
                   "wakegate_access_denied_total %" PRIu64 "\n"
                   "# HELP wakegate_access_links_total Signed link visits exchanged for a "
                   "cookie (the 303 that sets it).\n"
                   "# TYPE wakegate_access_links_total counter\n"
                   "wakegate_access_links_total %" PRIu64 "\n",
                   s->access_denied, s->access_links);
}

/* Only with access.forward_auth: the sum of every loop's client. */
static void forward_auth_metrics(const struct wg_proxy *const *pxs, size_t n, struct wg_buf *out)
{
    struct wg_fauth_stats sum = {0}, *f = &sum;
    bool any = false;

    for (size_t w = 0; w < n; w++) {
        const struct wg_fauth *fa = wg_proxy_fauth(pxs[w]);
        if (fa == NULL)
            continue;
        const struct wg_fauth_stats *s = wg_fauth_stats(fa);
        any = true;
        sum.requests += s->requests;
        sum.cache_hits += s->cache_hits;
        sum.failures += s->failures;
        sum.joined += s->joined;
        sum.cached += s->cached;
    }
    if (!any)
        return;
    wg_buf_appendf(out,
                   "# HELP wakegate_forward_auth_requests_total Sub-requests sent to "
                   "access.forward_auth.\n"
                   "# TYPE wakegate_forward_auth_requests_total counter\n"
                   "wakegate_forward_auth_requests_total %" PRIu64 "\n"
                   "# HELP wakegate_forward_auth_cache_hits_total Answers taken from the forward "
                   "auth cache.\n"
                   "# TYPE wakegate_forward_auth_cache_hits_total counter\n"
                   "wakegate_forward_auth_cache_hits_total %" PRIu64 "\n"
                   "# HELP wakegate_forward_auth_failures_total Sub-requests that failed or timed "
                   "out (answered 503).\n"
                   "# TYPE wakegate_forward_auth_failures_total counter\n"
                   "wakegate_forward_auth_failures_total %" PRIu64 "\n"
                   "# HELP wakegate_forward_auth_joined_total Requests that waited for a "
                   "sub-request already in flight for their credential.\n"
                   "# TYPE wakegate_forward_auth_joined_total counter\n"
                   "wakegate_forward_auth_joined_total %" PRIu64 "\n"
                   "# HELP wakegate_forward_auth_cached Answers in the forward auth cache.\n"
                   "# TYPE wakegate_forward_auth_cached gauge\n"
                   "wakegate_forward_auth_cached %" PRIu64 "\n",
                   f->requests, f->cache_hits, f->failures, f->joined, f->cached);
}

/* Only with tls:. */
static void tls_metrics(const struct wg_proxy *px, struct wg_buf *out)
{
    struct wg_tls *t = wg_proxy_tls(px);
    if (t == NULL)
        return;
    const struct wg_tls_stats *s = wg_tls_stats(t);
    wg_buf_appendf(out,
                   "# HELP wakegate_tls_handshakes_total TLS handshakes on the public listener, "
                   "by result (timeout: limits.head_timeout passed first).\n"
                   "# TYPE wakegate_tls_handshakes_total counter\n"
                   "wakegate_tls_handshakes_total{result=\"ok\"} %" PRIu64 "\n"
                   "wakegate_tls_handshakes_total{result=\"failed\"} %" PRIu64 "\n"
                   "wakegate_tls_handshakes_total{result=\"timeout\"} %" PRIu64 "\n"
                   "# HELP wakegate_tls_protocol_total TLS handshakes done, by protocol version.\n"
                   "# TYPE wakegate_tls_protocol_total counter\n"
                   "wakegate_tls_protocol_total{version=\"TLSv1.2\"} %" PRIu64 "\n"
                   "wakegate_tls_protocol_total{version=\"TLSv1.3\"} %" PRIu64 "\n"
                   "# HELP wakegate_tls_resumptions_total TLS handshakes that resumed a session "
                   "from a ticket.\n"
                   "# TYPE wakegate_tls_resumptions_total counter\n"
                   "wakegate_tls_resumptions_total %" PRIu64 "\n"
                   "# HELP wakegate_tls_certificate_reloads_total Certificate reloads on SIGHUP, "
                   "by result (failed: the current certificates stay).\n"
                   "# TYPE wakegate_tls_certificate_reloads_total counter\n"
                   "wakegate_tls_certificate_reloads_total{result=\"ok\"} %" PRIu64 "\n"
                   "wakegate_tls_certificate_reloads_total{result=\"failed\"} %" PRIu64 "\n"
                   "# HELP wakegate_tls_certificates Certificates loaded now.\n"
                   "# TYPE wakegate_tls_certificates gauge\n"
                   "wakegate_tls_certificates %" PRIu64 "\n",
                   s->handshakes[WG_TLS_HS_OK], s->handshakes[WG_TLS_HS_FAILED],
                   s->handshakes[WG_TLS_HS_TIMEOUT], s->tls12, s->tls13, s->resumptions,
                   s->reloads_ok, s->reloads_failed, s->certificates);
    wg_hist_family(out, "wakegate_tls_certificate_not_after_seconds", "gauge",
                   "When each loaded certificate stops being valid (Unix time), by its place "
                   "in tls.certificates and its first DNS name: alert on it minus time().");
    const struct wg_tls_cert_info *ci;
    for (size_t i = 0; (ci = wg_tls_cert(t, i)) != NULL; i++) {
        wg_buf_appendf(out, "wakegate_tls_certificate_not_after_seconds{index=\"%zu\",name=\"", i);
        wg_hist_label_escape(out, ci->name);
        wg_buf_appendf(out, "\"} %" PRId64 "\n", ci->not_after);
    }
    wg_buf_appendf(out,
                   "# HELP wakegate_tls_alpn_total TLS handshakes done, by the protocol ALPN "
                   "chose (none: the client offered none of ours).\n"
                   "# TYPE wakegate_tls_alpn_total counter\n"
                   "wakegate_tls_alpn_total{protocol=\"h2\"} %" PRIu64 "\n"
                   "wakegate_tls_alpn_total{protocol=\"http/1.1\"} %" PRIu64 "\n"
                   "wakegate_tls_alpn_total{protocol=\"none\"} %" PRIu64 "\n",
                   s->alpn_h2, s->alpn_http11, s->alpn_none);
}

/* HTTP/2 sessions and streams (only with tls:). */
static void h2_metrics(const struct wg_proxy *px, const struct wg_h2_stats *h, struct wg_buf *out)
{
    if (wg_proxy_tls(px) == NULL)
        return;
    wg_buf_appendf(
        out,
        "# HELP wakegate_http2_connections_total Client connections that spoke HTTP/2.\n"
        "# TYPE wakegate_http2_connections_total counter\n"
        "wakegate_http2_connections_total %" PRIu64 "\n"
        "# HELP wakegate_http2_streams_total HTTP/2 request streams opened by clients.\n"
        "# TYPE wakegate_http2_streams_total counter\n"
        "wakegate_http2_streams_total %" PRIu64 "\n"
        "# HELP wakegate_http2_streams_open HTTP/2 request streams open now.\n"
        "# TYPE wakegate_http2_streams_open gauge\n"
        "wakegate_http2_streams_open %" PRIu64 "\n"
        "# HELP wakegate_http2_resets_received_total RST_STREAM frames from clients.\n"
        "# TYPE wakegate_http2_resets_received_total counter\n"
        "wakegate_http2_resets_received_total %" PRIu64 "\n"
        "# HELP wakegate_http2_resets_sent_total Streams the gateway reset (an answer that "
        "waited too long for the client's window, a broken answer).\n"
        "# TYPE wakegate_http2_resets_sent_total counter\n"
        "wakegate_http2_resets_sent_total %" PRIu64 "\n"
        "# HELP wakegate_http2_goaways_total HTTP/2 connections the gateway ended, by reason "
        "(calm: a reset, PING, SETTINGS or header flood; error: a protocol error).\n"
        "# TYPE wakegate_http2_goaways_total counter\n"
        "wakegate_http2_goaways_total{reason=\"calm\"} %" PRIu64 "\n"
        "wakegate_http2_goaways_total{reason=\"error\"} %" PRIu64 "\n"
        "# HELP wakegate_http2_headers_too_large_total HTTP/2 requests answered 431.\n"
        "# TYPE wakegate_http2_headers_too_large_total counter\n"
        "wakegate_http2_headers_too_large_total %" PRIu64 "\n",
        h->connections, h->streams, h->streams_open, h->resets_received, h->resets_sent,
        h->goaway_calm, h->goaway_error, h->headers_too_large);
}

static void hist_add(struct wg_hist *sum, const struct wg_hist *h)
{
    for (size_t i = 0; i <= h->nbounds; i++)
        sum->counts[i] += h->counts[i];
    sum->n += h->n;
    sum->sum_ns += h->sum_ns;
}

static void h2_add(struct wg_h2_stats *sum, const struct wg_h2_stats *h)
{
    sum->connections += h->connections;
    sum->streams += h->streams;
    sum->streams_open += h->streams_open;
    sum->resets_received += h->resets_received;
    sum->resets_sent += h->resets_sent;
    sum->goaway_calm += h->goaway_calm;
    sum->goaway_error += h->goaway_error;
    sum->headers_too_large += h->headers_too_large;
}

/* sum += s, field by field (every field of struct wg_proxy_stats). */
static void stats_add(struct wg_proxy_stats *sum, const struct wg_proxy_stats *s)
{
    sum->connections_accepted += s->connections_accepted;
    sum->connections_refused += s->connections_refused;
    sum->connections_open += s->connections_open;
    sum->requests += s->requests;
    for (int k = 0; k < 6; k++)
        sum->responses_by_class[k] += s->responses_by_class[k];
    sum->upstream_errors += s->upstream_errors;
    sum->upstream_retries += s->upstream_retries;
    sum->session_unconfirmed_proven += s->session_unconfirmed_proven;
    sum->session_doubt_held += s->session_doubt_held;
    sum->session_doubt_refused += s->session_doubt_refused;
    sum->session_rechecks += s->session_rechecks;
    sum->port_unknown += s->port_unknown;
    h2_add(&sum->h2, &s->h2);
    sum->bytes_in += s->bytes_in;
    sum->bytes_out += s->bytes_out;
    sum->buffered_bytes[0] += s->buffered_bytes[0];
    sum->buffered_bytes[1] += s->buffered_bytes[1];
    hist_add(&sum->request_duration, &s->request_duration);
    hist_add(&sum->upstream_latency, &s->upstream_latency);
    hist_add(&sum->wake_first_byte, &s->wake_first_byte);
    for (int k = 0; k < WG_HOLD_OUTCOMES; k++)
        sum->held_released[k] += s->held_released[k];
    sum->access_denied += s->access_denied;
    sum->access_links += s->access_links;
}

void wg_proxy_metrics_write_all(const struct wg_proxy *const *pxs, size_t n, struct wg_buf *out)
{
    /* Large (three histograms): not on the stack of a small thread. */
    struct wg_proxy_stats *s = calloc(1, sizeof(*s));
    const struct wg_proxy_stats *first = wg_proxy_stats(pxs[0]);
    size_t idle = 0;

    if (s == NULL)
        return;
    wg_hist_init(&s->request_duration, first->request_duration.bounds_ns,
                 first->request_duration.nbounds);
    wg_hist_init(&s->upstream_latency, first->upstream_latency.bounds_ns,
                 first->upstream_latency.nbounds);
    wg_hist_init(&s->wake_first_byte, first->wake_first_byte.bounds_ns,
                 first->wake_first_byte.nbounds);
    for (size_t w = 0; w < n; w++) {
        stats_add(s, wg_proxy_stats(pxs[w]));
        idle += wg_proxy_upstream_idle(pxs[w]);
    }
    counter_metrics(s, idle, out);
    route_metrics(pxs, n, out);
    histogram_metrics(s, out);
    held_metrics(s, out);
    port_metrics(s, out);
    unconfirmed_metrics(s, out);
    access_metrics(s, out);
    forward_auth_metrics(pxs, n, out);
    /* The loops share one TLS state (its counters count for all). */
    tls_metrics(pxs[0], out);
    h2_metrics(pxs[0], &s->h2, out);
    free(s);
}

void wg_proxy_metrics_write(const struct wg_proxy *px, struct wg_buf *out)
{
    wg_proxy_metrics_write_all(&px, 1, out);
}

bool wg_proxy_ready(const struct wg_proxy *px, char *why, size_t whylen)
{
    if (wg_proxy_listening(px))
        return true;
    snprintf(why, whylen, "public listener not bound");
    return false;
}
