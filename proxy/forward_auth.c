/* proxy/forward_auth.c - see forward_auth.h. */
#include "proxy/forward_auth.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "common/list.h"

#define BUCKETS 4096
#define HEAD_MAX 8192 /* the service's answer head; more is a failure */

struct entry {
    struct entry *next;  /* bucket chain */
    struct wg_list fifo; /* oldest first */
    unsigned char key[WG_FAUTH_KEY_LEN];
    uint64_t expires_ms; /* loop time */
    int status;
    char *www, *loc; /* owned, NULL when absent */
};

struct wg_fauth {
    uv_loop_t *loop;
    const struct wg_forward_auth_cfg *cfg;
    struct wg_log *log;
    struct entry *table[BUCKETS];
    struct wg_list fifo;
    struct wg_list live; /* flights on the wire */
    struct flight *flights[BUCKETS];
    unsigned n_live;
    struct wg_fauth_stats stats;
};

/* One sub-request on the wire. Requests with the same key while one is in
 * flight wait for its answer instead of sending their own (a page's first
 * load asks once, not once per subresource). */
struct flight {
    struct flight *next; /* fa->flights bucket chain while live */
    struct wg_list link; /* on fa->live while live */
    struct wg_fauth *fa; /* NULL once the object is freed */
    struct wg_list waiters;
    unsigned char key[WG_FAUTH_KEY_LEN];
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect;
    uv_write_t write;
    char *out;
    size_t out_len;
    char in[HEAD_MAX];
    size_t in_len;
    int open; /* handles not closed yet */
    bool connected;
    bool closing; /* answered, failed or given up: no waiter is added */
};

/* One caller waiting for a flight's answer. */
struct wg_fauth_req {
    struct wg_list link; /* on its flight's waiters until answered or cancelled */
    wg_fauth_cb *cb;
    void *arg;
};

static unsigned bucket_of(const unsigned char key[WG_FAUTH_KEY_LEN])
{
    return ((unsigned)key[0] << 8 | key[1]) % BUCKETS;
}

void wg_fauth_key(const char *session, const char *cookie, size_t cookie_len, const char *authz,
                  size_t authz_len, unsigned char key[WG_FAUTH_KEY_LEN])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned n = 0;
    memset(key, 0, WG_FAUTH_KEY_LEN);
    if (ctx == NULL)
        return;
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
        (void)(EVP_DigestUpdate(ctx, session, strlen(session) + 1) &&
               EVP_DigestUpdate(ctx, cookie, cookie_len) && EVP_DigestUpdate(ctx, "\0", 1) &&
               EVP_DigestUpdate(ctx, authz, authz_len) && EVP_DigestFinal_ex(ctx, key, &n));
    EVP_MD_CTX_free(ctx);
}

/* ---- the cache ------------------------------------------------------------- */

static void entry_free(struct wg_fauth *fa, struct entry *e)
{
    struct entry **pp = &fa->table[bucket_of(e->key)];
    while (*pp != NULL && *pp != e)
        pp = &(*pp)->next;
    if (*pp == e)
        *pp = e->next;
    wg_list_remove(&e->fifo);
    fa->stats.cached--;
    free(e->www);
    free(e->loc);
    free(e);
}

static struct entry *find(struct wg_fauth *fa, const unsigned char key[WG_FAUTH_KEY_LEN])
{
    for (struct entry *e = fa->table[bucket_of(key)]; e != NULL; e = e->next)
        if (memcmp(e->key, key, WG_FAUTH_KEY_LEN) == 0)
            return e;
    return NULL;
}

bool wg_fauth_cached(struct wg_fauth *fa, const unsigned char key[WG_FAUTH_KEY_LEN],
                     struct wg_fauth_answer *a)
{
    struct entry *e = find(fa, key);
    if (e == NULL)
        return false;
    if (uv_now(fa->loop) >= e->expires_ms) {
        entry_free(fa, e);
        return false;
    }
    memset(a, 0, sizeof(*a));
    a->status = e->status;
    if (e->www != NULL)
        snprintf(a->www_authenticate, sizeof(a->www_authenticate), "%s", e->www);
    if (e->loc != NULL)
        snprintf(a->location, sizeof(a->location), "%s", e->loc);
    fa->stats.cache_hits++;
    return true;
}

static void cache_put(struct wg_fauth *fa, const unsigned char key[WG_FAUTH_KEY_LEN],
                      const struct wg_fauth_answer *a)
{
    struct entry *e = find(fa, key);
    if (fa->cfg->cache_ttl_ms == 0 || a->status == 503)
        return;
    if (e != NULL)
        entry_free(fa, e);
    /* The bound: the oldest answer goes first. */
    while (fa->stats.cached >= fa->cfg->cache_max && !wg_list_empty(&fa->fifo))
        entry_free(fa, wg_container_of(fa->fifo.next, struct entry, fifo));
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return;
    memcpy(e->key, key, WG_FAUTH_KEY_LEN);
    e->expires_ms = uv_now(fa->loop) + fa->cfg->cache_ttl_ms;
    e->status = a->status;
    e->www = a->www_authenticate[0] ? strdup(a->www_authenticate) : NULL;
    e->loc = a->location[0] ? strdup(a->location) : NULL;
    unsigned b = bucket_of(key);
    e->next = fa->table[b];
    fa->table[b] = e;
    wg_list_push_back(&fa->fifo, &e->fifo);
    fa->stats.cached++;
}

/* ---- one sub-request ---------------------------------------------------------- */

static void flight_closed(uv_handle_t *h)
{
    struct flight *f = h->data;
    if (--f->open == 0) {
        free(f->out);
        free(f);
    }
}

/* Off the live lists: no later request joins it. */
static void flight_unlink(struct flight *f)
{
    struct wg_fauth *fa = f->fa;
    struct flight **pp;

    if (fa == NULL)
        return;
    for (pp = &fa->flights[bucket_of(f->key)]; *pp != NULL && *pp != f; pp = &(*pp)->next)
        ;
    if (*pp == f)
        *pp = f->next;
    wg_list_remove(&f->link);
    fa->n_live--;
    f->fa = NULL;
}

static void flight_close(struct flight *f)
{
    if (f->closing)
        return;
    f->closing = true;
    flight_unlink(f);
    uv_close((uv_handle_t *)&f->tcp, flight_closed);
    uv_close((uv_handle_t *)&f->timer, flight_closed);
}

static void finish(struct flight *f, const struct wg_fauth_answer *a, const char *why)
{
    struct wg_fauth *fa = f->fa;
    struct wg_list ready;

    if (f->closing)
        return;
    if (fa != NULL) {
        if (a->status == 503) {
            fa->stats.failures++;
            WG_WARN(fa->log, "access", "forward auth failed, denying (503)", "reason=\"%s\"", why);
        }
        cache_put(fa, f->key, a);
    }
    /* The waiters move to a list of our own first: a callback may cancel
     * another waiter, which then leaves this list. */
    wg_list_init(&ready);
    while (!wg_list_empty(&f->waiters)) {
        struct wg_list *n = f->waiters.next;
        wg_list_remove(n);
        wg_list_push_back(&ready, n);
    }
    flight_close(f);
    while (!wg_list_empty(&ready)) {
        struct wg_fauth_req *r = wg_container_of(ready.next, struct wg_fauth_req, link);
        wg_fauth_cb *cb = r->cb;
        void *arg = r->arg;
        wg_list_remove(&r->link);
        free(r);
        cb(arg, a);
    }
}

static void fail(struct flight *f, const char *why)
{
    struct wg_fauth_answer a = {.status = 503};
    finish(f, &a, why);
}

/* The value of header name in the head, trimmed, without control bytes. */
static void header_value(const char *head, size_t len, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    const char *p = memchr(head, '\n', len);
    out[0] = '\0';
    while (p != NULL && (size_t)(p + 1 - head) < len) {
        const char *line = p + 1;
        const char *eol = memchr(line, '\n', len - (size_t)(line - head));
        if (eol == NULL)
            return;
        size_t ll = (size_t)(eol - line);
        if (ll > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            size_t n = (size_t)(ve - v);
            if (n >= outlen)
                return; /* too long to pass back: left out */
            for (size_t i = 0; i < n; i++)
                if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
                    return;
            memcpy(out, v, n);
            out[n] = '\0';
            return;
        }
        p = eol;
    }
}

/* A complete head in r->in: the answer. */
static void parse_answer(struct flight *r, size_t head_len)
{
    struct wg_fauth_answer a;
    int st;

    memset(&a, 0, sizeof(a));
    /* RFC 9112 status line: exactly three digits, then SP (or the line's
     * end), so "2001" is not read as an allow. */
    if (head_len < 14 || strncmp(r->in, "HTTP/1.", 7) != 0 || r->in[7] < '0' || r->in[7] > '9' ||
        r->in[8] != ' ' || r->in[9] < '1' || r->in[9] > '5' || r->in[10] < '0' || r->in[10] > '9' ||
        r->in[11] < '0' || r->in[11] > '9' || (r->in[12] != ' ' && r->in[12] != '\r')) {
        fail(r, "not an HTTP/1 answer");
        return;
    }
    st = (r->in[9] - '0') * 100 + (r->in[10] - '0') * 10 + (r->in[11] - '0');
    if (st >= 200 && st < 300) {
        a.status = 200;
    } else if (st == 401 || st == 403) {
        a.status = st;
        header_value(r->in, head_len, "www-authenticate", a.www_authenticate,
                     sizeof(a.www_authenticate));
        header_value(r->in, head_len, "location", a.location, sizeof(a.location));
    } else {
        fail(r, "the service answered neither 2xx, 401 nor 403");
        return;
    }
    finish(r, &a, "");
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct flight *r = h->data;
    (void)suggested;
    *buf = uv_buf_init(r->in + r->in_len, (unsigned)(sizeof(r->in) - r->in_len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct flight *r = s->data;
    (void)buf;
    if (n < 0) {
        fail(r, n == UV_EOF ? "closed before its answer's head" : uv_strerror((int)n));
        return;
    }
    r->in_len += (size_t)n;
    for (size_t i = 3; i < r->in_len; i++) {
        if (memcmp(r->in + i - 3, "\r\n\r\n", 4) == 0) {
            parse_answer(r, i + 1);
            return;
        }
    }
    if (r->in_len == sizeof(r->in))
        fail(r, "answer head too large");
}

static void on_write(uv_write_t *w, int status)
{
    struct flight *r = w->data;
    if (status < 0)
        fail(r, uv_strerror(status));
}

static void on_connect(uv_connect_t *c, int status)
{
    struct flight *r = c->data;
    if (r->closing)
        return;
    if (status < 0) {
        fail(r, uv_strerror(status));
        return;
    }
    r->connected = true;
    uv_buf_t b = uv_buf_init(r->out, (unsigned)r->out_len);
    r->write.data = r;
    int e = uv_write(&r->write, (uv_stream_t *)&r->tcp, &b, 1, on_write);
    if (e == 0)
        e = uv_read_start((uv_stream_t *)&r->tcp, on_alloc, on_read);
    if (e < 0)
        fail(r, uv_strerror(e));
}

static void on_timer(uv_timer_t *t)
{
    struct flight *r = t->data;
    fail(r, r->connected ? "no answer within the timeout" : "cannot connect");
}

static struct flight *flight_find(struct wg_fauth *fa, const unsigned char key[WG_FAUTH_KEY_LEN])
{
    for (struct flight *f = fa->flights[bucket_of(key)]; f != NULL; f = f->next)
        if (memcmp(f->key, key, WG_FAUTH_KEY_LEN) == 0)
            return f;
    return NULL;
}

static struct flight *flight_new(struct wg_fauth *fa, const unsigned char key[WG_FAUTH_KEY_LEN],
                                 const char *fields, size_t len)
{
    static const char tail[] = "Connection: close\r\n\r\n";
    const struct wg_forward_auth_cfg *cfg = fa->cfg;
    struct flight *f = calloc(1, sizeof(*f));
    size_t n = 4 + strlen(cfg->path) + 17 + strlen(cfg->host) + 2 + len + sizeof(tail);

    if (f == NULL || (f->out = malloc(n)) == NULL) {
        free(f);
        return NULL;
    }
    int h = snprintf(f->out, n, "GET %s HTTP/1.1\r\nHost: %s\r\n", cfg->path, cfg->host);
    memcpy(f->out + h, fields, len);
    memcpy(f->out + (size_t)h + len, tail, sizeof(tail) - 1);
    f->out_len = (size_t)h + len + sizeof(tail) - 1;
    f->fa = fa;
    wg_list_init(&f->waiters);
    memcpy(f->key, key, WG_FAUTH_KEY_LEN);
    uv_tcp_init(fa->loop, &f->tcp);
    uv_timer_init(fa->loop, &f->timer);
    f->tcp.data = f->timer.data = f->connect.data = f;
    f->open = 2;
    unsigned b = bucket_of(key);
    f->next = fa->flights[b];
    fa->flights[b] = f;
    wg_list_push_back(&fa->live, &f->link);
    fa->n_live++;
    fa->stats.requests++;
    /* A refused connect is answered from the timer, never inside a call. */
    uv_timer_start(&f->timer, on_timer, cfg->timeout_ms, 0);
    if (uv_tcp_connect(&f->connect, &f->tcp, (const struct sockaddr *)&cfg->addr.sa, on_connect) <
        0)
        uv_timer_start(&f->timer, on_timer, 0, 0);
    return f;
}

int wg_fauth_start(struct wg_fauth *fa, const unsigned char key[WG_FAUTH_KEY_LEN],
                   const char *fields, size_t len, wg_fauth_cb *cb, void *arg,
                   struct wg_fauth_req **ret)
{
    struct flight *f = flight_find(fa, key);
    struct wg_fauth_req *r;

    if (f == NULL && fa->n_live >= fa->cfg->max_in_flight)
        return -EBUSY;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    if (f != NULL) {
        fa->stats.joined++;
    } else if ((f = flight_new(fa, key, fields, len)) == NULL) {
        free(r);
        return -ENOMEM;
    }
    r->cb = cb;
    r->arg = arg;
    wg_list_push_back(&f->waiters, &r->link);
    *ret = r;
    return 0;
}

void wg_fauth_cancel(struct wg_fauth_req *r)
{
    /* The flight goes on without it: its answer is cached for the next. */
    if (r != NULL) {
        wg_list_remove(&r->link);
        free(r);
    }
}

/* ---- life --------------------------------------------------------------------- */

int wg_fauth_new(uv_loop_t *loop, const struct wg_forward_auth_cfg *cfg, struct wg_log *log,
                 struct wg_fauth **ret)
{
    struct wg_fauth *fa;

    if (cfg == NULL || cfg->url == NULL || cfg->addr.salen == 0)
        return -EINVAL;
    fa = calloc(1, sizeof(*fa));
    if (fa == NULL)
        return -ENOMEM;
    fa->loop = loop;
    fa->cfg = cfg;
    fa->log = log;
    wg_list_init(&fa->fifo);
    wg_list_init(&fa->live);
    *ret = fa;
    return 0;
}

void wg_fauth_free(struct wg_fauth *fa)
{
    if (fa == NULL)
        return;
    while (!wg_list_empty(&fa->live)) {
        struct flight *f = wg_container_of(fa->live.next, struct flight, link);
        while (!wg_list_empty(&f->waiters)) {
            struct wg_fauth_req *r = wg_container_of(f->waiters.next, struct wg_fauth_req, link);
            wg_list_remove(&r->link);
            free(r);
        }
        flight_close(f);
    }
    while (!wg_list_empty(&fa->fifo))
        entry_free(fa, wg_container_of(fa->fifo.next, struct entry, fifo));
    free(fa);
}

const struct wg_fauth_stats *wg_fauth_stats(const struct wg_fauth *fa)
{
    return &fa->stats;
}
