/* proxy/conn_tls.c - the TLS record layer of one client connection, on
 * memory BIOs: ciphertext read from the socket goes into rbio, SSL turns
 * it into plaintext that conn.c processes as if it had been read; plaintext
 * written to the client is encrypted into wbio and written to the socket by
 * conn.c's own write path (so its queue, high-water mark and send_idle
 * deadline count ciphertext). No OpenSSL call ever touches the socket, so
 * none blocks the loop.
 *
 * Bounds: rbio holds at most one partial record between reads (everything
 * complete is decrypted at once, and WG_TLS_CIPHER_MAX is enforced anyway);
 * wbio is emptied after every call; plaintext goes through conn.c's capped
 * buffers. */
#include <inttypes.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/conn_int.h"
#include "proxy/tls.h"

/* A TLS record carries at most 16 KiB of plaintext plus its overhead. */
#define TLS_RECORD_MAX (16384 + 256)
/* Ciphertext waiting in rbio: one read plus one partial record. */
#define WG_TLS_CIPHER_MAX (WG_READ_BUF_SIZE + TLS_RECORD_MAX)
/* Plaintext coalesced into one record before SSL_write. */
#define COALESCE_MAX 16384
/* At the end of an exchange, an empty BIO whose buffer grew past this is
 * replaced, so an idle keep-alive connection does not keep a read's (or a
 * large response's) worth of memory. Not during an exchange: a stream
 * would grow the buffer again on every read. */
#define BIO_KEEP_MAX (2 * TLS_RECORD_MAX)

struct wg_conn_tls {
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by ssl */
    bool handshake_done;
    bool failed;
    bool alpn_h2; /* the client and we agreed on HTTP/2 */
};

int conn_tls_start(struct wg_conn *c)
{
    struct wg_conn_tls *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return UV_ENOMEM;
    t->ssl = wg_tls_ssl_new(c->px->tls);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        SSL_free(t->ssl);
        free(t);
        return UV_ENOMEM;
    }
    /* An empty rbio asks for more instead of reporting EOF. */
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_accept_state(t->ssl);
    c->tls = t;
    return 0;
}

void conn_tls_free(struct wg_conn *c)
{
    if (c->tls == NULL)
        return;
    SSL_free(c->tls->ssl);
    free(c->tls);
    c->tls = NULL;
}

bool conn_tls_handshaking(const struct wg_conn *c)
{
    return c->tls != NULL && !c->tls->handshake_done;
}

/* What SSL wrote (records, alerts, tickets) goes to the socket now. */
static void flush(struct wg_conn *c)
{
    struct wg_conn_tls *t = c->tls;
    char *p;
    long n = BIO_get_mem_data(t->wbio, &p);

    if (n <= 0)
        return;
    uv_buf_t b = uv_buf_init(p, (unsigned)n);
    conn_write_raw(c, SIDE_CLIENT, &b, 1);
    /* conn_write_raw copied what the socket did not take. */
    (void)BIO_reset(t->wbio);
}

static void handshake_failed(struct wg_conn *c, const char *why)
{
    struct wg_tls_stats *st = wg_tls_stats(c->px->tls);
    unsigned long e = ERR_peek_last_error();
    char reason[160] = "";

    c->tls->failed = true;
    st->handshakes[WG_TLS_HS_FAILED]++;
    if (e != 0)
        ERR_error_string_n(e, reason, sizeof reason);
    ERR_clear_error();
    WG_INFO(c->px->log, "tls", "handshake failed, closing", "conn=%" PRIu64 " why=\"%s%s%s\"",
            c->id, why, reason[0] ? ": " : "", reason);
    flush(c); /* the alert, when SSL made one */
    conn_close(c);
}

static void handshake_done(struct wg_conn *c)
{
    struct wg_tls_stats *st = wg_tls_stats(c->px->tls);
    SSL *s = c->tls->ssl;

    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;

    c->tls->handshake_done = true;
    st->handshakes[WG_TLS_HS_OK]++;
    SSL_get0_alpn_selected(s, &alpn, &alpn_len);
    if (alpn_len == 2 && memcmp(alpn, "h2", 2) == 0) {
        st->alpn_h2++;
        c->tls->alpn_h2 = true;
    } else if (alpn_len == 8 && memcmp(alpn, "http/1.1", 8) == 0)
        st->alpn_http11++;
    else
        st->alpn_none++;
    if (SSL_version(s) == TLS1_3_VERSION)
        st->tls13++;
    else
        st->tls12++;
    if (SSL_session_reused(s))
        st->resumptions++;
    WG_DEBUG(c->px->log, "tls", "handshake done", "conn=%" PRIu64 " version=%s resumed=%d sni=%s",
             c->id, SSL_get_version(s), SSL_session_reused(s),
             SSL_get_servername(s, TLSEXT_NAMETYPE_host_name)
                 ? SSL_get_servername(s, TLSEXT_NAMETYPE_host_name)
                 : "-");
}

/* Returns false when the connection is done with (closed, or EOF told). */
static bool drive_handshake(struct wg_conn *c)
{
    struct wg_conn_tls *t = c->tls;
    int r;

    ERR_clear_error();
    r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        handshake_done(c);
        flush(c);
        if (!c->closing && t->alpn_h2) {
            if (conn_h2_start(c) < 0)
                return false;
            conn_h2_drained(c); /* our SETTINGS go out now */
        }
        return !c->closing;
    }
    switch (SSL_get_error(t->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        flush(c);
        return false;
    case SSL_ERROR_ZERO_RETURN:
        handshake_failed(c, "closed by the client");
        return false;
    default:
        handshake_failed(c, "bad handshake");
        return false;
    }
}

/* A fresh BIO in place of an empty one that holds a large buffer; NULL
 * when it may stay. */
static BIO *bio_fresh_for(BIO *b)
{
    BUF_MEM *bm = NULL;
    BIO *fresh;

    if (BIO_ctrl_pending(b) != 0 || BIO_get_mem_ptr(b, &bm) != 1 || bm == NULL ||
        bm->max <= BIO_KEEP_MAX || (fresh = BIO_new(BIO_s_mem())) == NULL)
        return NULL;
    BIO_set_mem_eof_return(fresh, -1);
    return fresh;
}

void conn_tls_trim(struct wg_conn *c)
{
    struct wg_conn_tls *t = c->tls;
    BIO *fresh;

    if (t == NULL || c->closing || t->failed)
        return;
    if ((fresh = bio_fresh_for(t->rbio)) != NULL) {
        SSL_set0_rbio(t->ssl, fresh); /* frees the old one */
        t->rbio = fresh;
    }
    if ((fresh = bio_fresh_for(t->wbio)) != NULL) {
        SSL_set0_wbio(t->ssl, fresh);
        t->wbio = fresh;
    }
}

void conn_tls_read(struct wg_conn *c, const char *data, size_t n)
{
    struct wg_conn_tls *t = c->tls;
    char *plain = c->px->readbuf; /* data is copied into rbio first */

    if (t->failed)
        return;
    if (BIO_write(t->rbio, data, (int)n) != (int)n) {
        conn_close(c);
        return;
    }
    if (BIO_ctrl_pending(t->rbio) > WG_TLS_CIPHER_MAX) {
        /* Cannot happen while every complete record is decrypted at once. */
        WG_INFO(c->px->log, "tls", "too much ciphertext buffered, closing", "conn=%" PRIu64, c->id);
        conn_close(c);
        return;
    }
    if (!t->handshake_done && !drive_handshake(c))
        return;
    /* Everything complete now: what is left in rbio is a partial record. */
    while (!c->closing && !c->client_eof) {
        ERR_clear_error();
        int r = SSL_read(t->ssl, plain, (int)sizeof c->px->readbuf);
        if (r > 0) {
            conn_client_bytes(c, plain, (size_t)r);
            continue;
        }
        int e = SSL_get_error(t->ssl, r);
        flush(c); /* a TLS 1.3 key update or ticket may have been written */
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_ZERO_RETURN) {
            /* close_notify: the same as a FIN for the exchange. */
            conn_client_eof(c);
            return;
        }
        WG_INFO(c->px->log, "tls", "bad record from the client, closing", "conn=%" PRIu64, c->id);
        ERR_clear_error();
        conn_close(c);
        return;
    }
    if (!c->closing)
        flush(c);
}

size_t conn_tls_read_size(const struct wg_conn *c, bool to_up, size_t len)
{
    /* Decrypting len bytes yields at most len plus the partial record
     * already in rbio; a read kept in c->in must fit its room check. */
    if (!to_up && len > WG_READ_BUF_SIZE - TLS_RECORD_MAX)
        return WG_READ_BUF_SIZE - TLS_RECORD_MAX;
    return len;
}

/* One SSL_write of the span; the memory BIO takes it all. */
static bool encrypt(struct wg_conn *c, const char *p, size_t n)
{
    ERR_clear_error();
    if (SSL_write(c->tls->ssl, p, (int)n) == (int)n)
        return true;
    ERR_clear_error();
    WG_DEBUG(c->px->log, "tls", "write failed, closing", "conn=%" PRIu64, c->id);
    conn_close(c);
    return false;
}

void conn_tls_write(struct wg_conn *c, const uv_buf_t *bufs, unsigned nbufs, size_t total)
{
    char small[COALESCE_MAX];

    if (c->tls->failed || !c->tls->handshake_done)
        return;
    if (nbufs > 1 && total <= sizeof small) {
        /* A head, chunk framing and a small body: one record, one write. */
        size_t o = 0;
        for (unsigned i = 0; i < nbufs; i++) {
            memcpy(small + o, bufs[i].base, bufs[i].len);
            o += bufs[i].len;
        }
        if (!encrypt(c, small, o))
            return;
    } else {
        for (unsigned i = 0; i < nbufs; i++)
            if (bufs[i].len > 0 && !encrypt(c, bufs[i].base, bufs[i].len))
                return;
    }
    flush(c);
}

void conn_tls_close_notify(struct wg_conn *c)
{
    struct wg_conn_tls *t = c->tls;

    if (t->failed || !t->handshake_done)
        return;
    ERR_clear_error();
    (void)SSL_shutdown(t->ssl); /* 0: ours is sent, theirs not awaited */
    ERR_clear_error();
    flush(c);
}

void conn_tls_timed_out(struct wg_conn *c)
{
    if (!conn_tls_handshaking(c))
        return;
    wg_tls_stats(c->px->tls)->handshakes[WG_TLS_HS_TIMEOUT]++;
    WG_INFO(c->px->log, "tls", "handshake timeout, closing", "conn=%" PRIu64, c->id);
}
