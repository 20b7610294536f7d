/* proxy/upstream.c - see upstream.h. */
#include "proxy/upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdint.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/list.h"
#include "common/net.h"

#define POOL_BUCKETS 256
#define SWEEP_INTERVAL_MS 1000

/* The idle connections of one address and owner. An empty bucket is kept
 * until the next sweep finds it still empty, so a connection borrowed and
 * given back per request finds its bucket again (no allocation on the
 * hot path); the sweep frees the rest, or the owners an address sees over
 * a gateway's life (one per session container there) would pile up. */
struct bucket {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct wg_list idle; /* most recently used first */
    size_t nidle;
    uint64_t empty_since; /* loop time + 1 it became empty; 0: holds connections */
    struct bucket *next;
    char owner[WG_POOL_OWNER_MAX + 1];
};

struct wg_upconn {
    uv_tcp_t tcp; /* first: handle callbacks cast back */
    uv_connect_t creq;
    struct wg_pool *pool;
    struct bucket *bucket; /* set while idle */
    struct wg_list idle_link;
    struct sockaddr_storage addr;
    char owner[WG_POOL_OWNER_MAX + 1]; /* what addr belonged to when connected */
    wg_upconn_connect_cb *cb;
    const struct wg_upconn_reader *reader;
    void *user;
    uint64_t idle_since;
    bool connecting;
    bool closing;
    bool reading;
};

struct wg_pool {
    uv_loop_t *loop;
    const struct wg_upstream_cfg *cfg;
    struct wg_log *log;
    uv_timer_t sweep;
    struct bucket *table[POOL_BUCKETS];
    _Atomic size_t nidle; /* read by the metrics on another thread */
    size_t live;          /* upconns not yet freed */
    int open_handles;
    bool freeing;
    char drain[64]; /* idle reads land here and are discarded */
};

static socklen_t addr_len(const struct sockaddr *sa)
{
    return sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* Compares family, address and port only: sockaddrs carry padding. */
static bool addr_equal(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return false;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

/* Over the IP and the owner, not the port: the buckets of one owner's IP
 * share a chain, so ip_proven() finds them all there. */
static unsigned bucket_hash(const struct sockaddr *sa, const char *owner)
{
    const unsigned char *p;
    size_t n;
    uint32_t h = 2166136261u;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const void *)sa;
        p = (const unsigned char *)&s->sin_addr;
        n = sizeof(s->sin_addr);
    } else {
        const struct sockaddr_in6 *s = (const void *)sa;
        p = (const unsigned char *)&s->sin6_addr;
        n = sizeof(s->sin6_addr);
    }
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    for (const unsigned char *o = (const unsigned char *)owner; *o; o++)
        h = (h ^ *o) * 16777619u;
    return h % POOL_BUCKETS;
}

static struct bucket *bucket_find(struct wg_pool *pool, const struct sockaddr *sa,
                                  const char *owner, bool create)
{
    unsigned h = bucket_hash(sa, owner);
    for (struct bucket *b = pool->table[h]; b; b = b->next) {
        if (addr_equal((const struct sockaddr *)&b->addr, sa) && strcmp(b->owner, owner) == 0)
            return b;
    }
    if (!create)
        return NULL;
    struct bucket *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    memcpy(&b->addr, sa, addr_len(sa));
    b->addrlen = addr_len(sa);
    snprintf(b->owner, sizeof(b->owner), "%s", owner);
    wg_list_init(&b->idle);
    b->next = pool->table[h];
    pool->table[h] = b;
    return b;
}

/* Frees b once it holds nothing. */
static void bucket_put(struct wg_pool *pool, struct bucket *b)
{
    if (b->nidle == 0 && b->empty_since == 0)
        b->empty_since = uv_now(pool->loop) + 1;
}

/* Frees the buckets empty since before the last sweep. */
static void free_empty(struct wg_pool *pool)
{
    uint64_t now = uv_now(pool->loop) + 1;

    for (size_t i = 0; i < POOL_BUCKETS; i++) {
        struct bucket **p = &pool->table[i];
        while (*p != NULL) {
            struct bucket *b = *p;
            if (b->nidle == 0 && b->empty_since != 0 && now - b->empty_since >= SWEEP_INTERVAL_MS) {
                *p = b->next;
                free(b);
            } else {
                p = &b->next;
            }
        }
    }
}

static void maybe_free_pool(struct wg_pool *pool)
{
    if (!pool->freeing || pool->live > 0 || pool->open_handles > 0)
        return;
    for (size_t i = 0; i < POOL_BUCKETS; i++) {
        struct bucket *b = pool->table[i];
        while (b) {
            struct bucket *next = b->next;
            free(b);
            b = next;
        }
        pool->table[i] = NULL;
    }
    free(pool);
}

static void upconn_closed(uv_handle_t *h)
{
    struct wg_upconn *uc = (struct wg_upconn *)h;
    struct wg_pool *pool = uc->pool;
    free(uc);
    pool->live--;
    maybe_free_pool(pool);
}

static void unlink_idle(struct wg_upconn *uc)
{
    struct bucket *b = uc->bucket;
    if (b == NULL)
        return;
    wg_list_remove(&uc->idle_link);
    b->nidle--;
    uc->pool->nidle--;
    uc->bucket = NULL;
    bucket_put(uc->pool, b);
}

/* Reached from release (not reusable), idle EOF/data, sweep, drop and
 * pool free: idempotent through uc->closing. */
static void upconn_close(struct wg_upconn *uc)
{
    if (uc->closing)
        return;
    uc->closing = true;
    unlink_idle(uc);
    uc->cb = NULL;
    uc->user = NULL;
    uc->reader = NULL;
    uv_close((uv_handle_t *)&uc->tcp, upconn_closed);
}

static void sweep_closed(uv_handle_t *h)
{
    struct wg_pool *pool = h->data;
    pool->open_handles--;
    maybe_free_pool(pool);
}

/* Closes b's idle connections, oldest first: all of them, or (all false)
 * those idle for keepalive_idle. An emptied b stays until a sweep frees it. */
static void bucket_close_idle(struct wg_pool *pool, struct bucket *b, bool all)
{
    uint64_t now = uv_now(pool->loop);
    for (size_t n = b->nidle; n > 0; n--) {
        struct wg_upconn *uc = wg_container_of(b->idle.prev, struct wg_upconn, idle_link);
        if (!all && now - uc->idle_since < pool->cfg->keepalive_idle_ms)
            return;
        upconn_close(uc);
    }
}

/* Calls bucket_close_idle on every bucket that holds connections to ip's
 * address (NULL: every bucket). */
static void close_idle(struct wg_pool *pool, const struct sockaddr *ip, bool all)
{
    for (size_t i = 0; i < POOL_BUCKETS; i++) {
        struct bucket *b = pool->table[i];
        while (b != NULL) {
            struct bucket *next = b->next;
            if (ip == NULL || wg_net_same_ip((const struct sockaddr *)&b->addr, ip))
                bucket_close_idle(pool, b, all);
            b = next;
        }
    }
}

static void sweep_cb(uv_timer_t *t)
{
    close_idle(t->data, NULL, false);
    free_empty(t->data);
}

int wg_pool_new(uv_loop_t *loop, const struct wg_upstream_cfg *cfg, struct wg_log *log,
                struct wg_pool **ret_pool)
{
    struct wg_pool *pool = calloc(1, sizeof(*pool));
    int r;
    if (pool == NULL)
        return -ENOMEM;
    pool->loop = loop;
    pool->cfg = cfg;
    pool->log = log;
    r = uv_timer_init(loop, &pool->sweep);
    if (r < 0) {
        free(pool);
        return r;
    }
    pool->open_handles = 1;
    pool->sweep.data = pool;
    uv_timer_start(&pool->sweep, sweep_cb, SWEEP_INTERVAL_MS, SWEEP_INTERVAL_MS);
    /* The sweep alone must not keep the loop alive at shutdown. */
    uv_unref((uv_handle_t *)&pool->sweep);
    *ret_pool = pool;
    return 0;
}

void wg_pool_free(struct wg_pool *pool)
{
    if (pool == NULL || pool->freeing)
        return;
    pool->freeing = true;
    close_idle(pool, NULL, true);
    uv_close((uv_handle_t *)&pool->sweep, sweep_closed);
}

static void upconn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct wg_upconn *uc = (struct wg_upconn *)h;
    if (uc->reader != NULL) {
        uc->reader->alloc(uc->user, buf);
        return;
    }
    buf->base = uc->pool->drain;
    buf->len = sizeof(uc->pool->drain);
}

static void upconn_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct wg_upconn *uc = (struct wg_upconn *)s;
    if (uc->reader != NULL) {
        uc->reader->read(uc->user, n, buf);
        return;
    }
    /* An idle upstream has nothing to say: EOF, an error or stray bytes all
     * end the connection. */
    if (n != 0)
        upconn_close(uc);
}

void wg_upconn_read(struct wg_upconn *uc, bool on)
{
    if (uc->closing || uc->connecting || uc->reading == on)
        return;
    if (on) {
        if (uv_read_start((uv_stream_t *)&uc->tcp, upconn_alloc, upconn_read_cb) < 0)
            return;
    } else {
        uv_read_stop((uv_stream_t *)&uc->tcp);
    }
    uc->reading = on;
}

static void connect_cb(uv_connect_t *req, int status)
{
    struct wg_upconn *uc = req->data;
    wg_upconn_connect_cb *cb = uc->cb;
    uc->connecting = false;
    uc->cb = NULL;
    if (uc->closing)
        return;
    if (status == 0)
        wg_upconn_read(uc, true);
    if (cb != NULL)
        cb(uc, status, uc->user);
}

/* Whether an idle connection's peer is still there, as of now: the kernel
 * has neither an EOF, a reset nor stray bytes for it. The idle read would
 * see those too, but only once the loop gets to them; one recv() says it
 * now. A container that stops closes its sockets before its address can
 * be given to another, so a live connection proves the address is its. */
static bool upconn_alive(struct wg_upconn *uc)
{
    uv_os_fd_t fd;
    char byte;

    if (uc->closing || uv_fileno((const uv_handle_t *)&uc->tcp, &fd) < 0)
        return false;
    ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* The newest idle connection of b that is alive; dead ones met on the way
 * are closed. NULL when none is. */
static struct wg_upconn *bucket_alive(struct bucket *b)
{
    for (size_t n = b->nidle; n > 0; n--) {
        struct wg_upconn *uc = wg_container_of(b->idle.next, struct wg_upconn, idle_link);
        if (upconn_alive(uc))
            return uc;
        upconn_close(uc);
    }
    return NULL;
}

/* Whether an idle connection of owner to addr's IP, on any port, is alive:
 * the IP still belongs to what owner names. */
static bool ip_proven(struct wg_pool *pool, const struct sockaddr *addr, const char *owner)
{
    struct bucket *b = pool->table[bucket_hash(addr, owner)];
    while (b != NULL) {
        struct bucket *next = b->next;
        if (wg_net_same_ip((const struct sockaddr *)&b->addr, addr) &&
            strcmp(b->owner, owner) == 0 && bucket_alive(b) != NULL)
            return true;
        b = next;
    }
    return false;
}

/* An idle connection of owner to addr to lend: the newest; with
 * WG_POOL_PROVEN only one that is alive now. */
static struct wg_upconn *take_idle(struct wg_pool *pool, const struct sockaddr *addr,
                                   const char *owner, enum wg_pool_mode mode)
{
    struct bucket *b = bucket_find(pool, addr, owner, false);
    if (b == NULL || wg_list_empty(&b->idle))
        return NULL;
    if (mode == WG_POOL_PROVEN)
        return bucket_alive(b);
    return wg_container_of(b->idle.next, struct wg_upconn, idle_link);
}

int wg_pool_acquire(struct wg_pool *pool, const struct sockaddr *addr, const char *owner,
                    enum wg_pool_mode mode, const struct wg_upconn_reader *reader,
                    wg_upconn_connect_cb *cb, void *user, struct wg_upconn **ret_uc,
                    bool *ret_reused)
{
    struct wg_upconn *uc = NULL;
    int r;

    if (owner == NULL)
        owner = "";
    if (strlen(owner) > WG_POOL_OWNER_MAX)
        return UV_EINVAL;
    if (mode != WG_POOL_FRESH && (uc = take_idle(pool, addr, owner, mode)) != NULL) {
        unlink_idle(uc);
        uc->user = user;
        uc->reader = reader;
        *ret_uc = uc;
        *ret_reused = true;
        return 0;
    }
    if (mode == WG_POOL_PROVEN && !ip_proven(pool, addr, owner))
        return UV_ENOENT;

    uc = calloc(1, sizeof(*uc));
    if (uc == NULL)
        return UV_ENOMEM;
    uc->pool = pool;
    wg_list_init(&uc->idle_link);
    memcpy(&uc->addr, addr, addr_len(addr));
    snprintf(uc->owner, sizeof(uc->owner), "%s", owner);
    r = uv_tcp_init(pool->loop, &uc->tcp);
    if (r < 0) {
        free(uc);
        return r;
    }
    pool->live++;
    uc->tcp.data = uc;
    uc->creq.data = uc;
    uc->cb = cb;
    uc->user = user;
    uc->reader = reader;
    uv_tcp_nodelay(&uc->tcp, 1);
    r = uv_tcp_connect(&uc->creq, &uc->tcp, addr, connect_cb);
    if (r < 0) {
        upconn_close(uc);
        return r;
    }
    uc->connecting = true;
    *ret_uc = uc;
    *ret_reused = false;
    return 0;
}

void wg_pool_release(struct wg_pool *pool, struct wg_upconn *uc, bool reusable)
{
    if (uc == NULL)
        return;
    uc->cb = NULL;
    uc->user = NULL;
    uc->reader = NULL;
    if (!reusable || pool->freeing || uc->connecting || uc->closing ||
        pool->cfg->keepalive_max == 0) {
        upconn_close(uc);
        return;
    }
    /* One lookup: closing the bucket's oldest leaves the bucket in place
     * (only a sweep frees an empty one). */
    struct bucket *b = bucket_find(pool, (const struct sockaddr *)&uc->addr, uc->owner, true);
    if (b != NULL && b->nidle >= pool->cfg->keepalive_max) {
        /* Full: the oldest gives way to the newest. */
        upconn_close(wg_container_of(b->idle.prev, struct wg_upconn, idle_link));
    }
    wg_upconn_read(uc, true);
    if (b == NULL || !uc->reading) {
        if (b != NULL)
            bucket_put(pool, b);
        upconn_close(uc);
        return;
    }
    uc->bucket = b;
    uc->idle_since = uv_now(pool->loop);
    wg_list_push_front(&b->idle, &uc->idle_link);
    b->nidle++;
    b->empty_since = 0;
    pool->nidle++;
}

void wg_pool_drop_ip(struct wg_pool *pool, const struct sockaddr *addr)
{
    close_idle(pool, addr, true);
}

uv_stream_t *wg_upconn_stream(struct wg_upconn *uc)
{
    return (uv_stream_t *)&uc->tcp;
}

size_t wg_pool_idle_count(const struct wg_pool *pool)
{
    return pool->nidle;
}
