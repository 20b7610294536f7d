/* test/unit/test_upstream.c - the upstream keep-alive pool (proxy/upstream):
 * connections are lent only to the owner they were made for, and
 * WG_POOL_PROVEN lends or connects only while a live connection of the
 * owner proves the IP is still its.
 *
 * Two loopback listeners of the test's own play the upstreams; each test
 * ends by asserting that its loop closes with no live handle (and under
 * ASan, that the buckets freed on the way were not touched again). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/upstream.h"

#include "loop_fixture.h"

#define PEERS_MAX 16

struct server {
    uv_tcp_t listener;
    struct sockaddr_in addr;
    uv_tcp_t *peers[PEERS_MAX]; /* accepted, in order */
    int npeers;
};

struct fx {
    uv_loop_t loop;
    struct server srv[2];
    struct wg_upstream_cfg cfg;
    struct wg_pool *pool;
    int connected; /* connect callbacks with status 0 */
    int failed;
    char rbuf[256];
};

static void on_peer_closed(uv_handle_t *h)
{
    free(h);
}

static void peer_alloc(uv_handle_t *h, size_t n, uv_buf_t *buf)
{
    static char sink[256];
    (void)h;
    (void)n;
    *buf = uv_buf_init(sink, sizeof(sink));
}

static void peer_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)s;
    (void)n;
    (void)buf;
}

static void on_accept(uv_stream_t *l, int status)
{
    struct server *srv = l->data;
    assert_int_equal(status, 0);
    uv_tcp_t *p = calloc(1, sizeof(*p));
    assert_non_null(p);
    uv_tcp_init(l->loop, p);
    assert_int_equal(uv_accept(l, (uv_stream_t *)p), 0);
    uv_read_start((uv_stream_t *)p, peer_alloc, peer_read);
    assert_true(srv->npeers < PEERS_MAX);
    srv->peers[srv->npeers++] = p;
}

static void server_start(uv_loop_t *loop, struct server *srv)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);

    memset(srv, 0, sizeof(*srv));
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    uv_ip4_addr("127.0.0.1", 0, &srv->addr);
    assert_int_equal(uv_tcp_bind(&srv->listener, (const struct sockaddr *)&srv->addr, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&srv->listener, 16, on_accept), 0);
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &len);
    memcpy(&srv->addr, &ss, sizeof(srv->addr));
}

/* Closes the accepted side of the n-th connection: the kernel has the FIN
 * for the pool's end at once (loopback), before the loop runs. */
static void server_drop(struct server *srv, int n)
{
    assert_true(n < srv->npeers && srv->peers[n] != NULL);
    uv_close((uv_handle_t *)srv->peers[n], on_peer_closed);
    srv->peers[n] = NULL;
}

static void server_stop(struct server *srv)
{
    for (int i = 0; i < srv->npeers; i++) {
        if (srv->peers[i] != NULL)
            server_drop(srv, i);
    }
    uv_close((uv_handle_t *)&srv->listener, NULL);
}

static void up_alloc(void *user, uv_buf_t *buf)
{
    struct fx *fx = user;
    *buf = uv_buf_init(fx->rbuf, sizeof(fx->rbuf));
}

static void up_read(void *user, ssize_t n, const uv_buf_t *buf)
{
    (void)user;
    (void)n;
    (void)buf;
}

static const struct wg_upconn_reader reader = {.alloc = up_alloc, .read = up_read};

static void on_connect(struct wg_upconn *uc, int status, void *user)
{
    struct fx *fx = user;
    (void)uc;
    if (status == 0)
        fx->connected++;
    else
        fx->failed++;
}

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    server_start(&fx->loop, &fx->srv[0]);
    server_start(&fx->loop, &fx->srv[1]);
    fx->cfg.connect_timeout_ms = 1000;
    fx->cfg.response_timeout_ms = 1000;
    fx->cfg.keepalive_idle_ms = 60000;
    fx->cfg.keepalive_max = 4;
    assert_int_equal(wg_pool_new(&fx->loop, &fx->cfg, NULL, &fx->pool), 0);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    wg_pool_free(fx->pool);
    server_stop(&fx->srv[0]);
    server_stop(&fx->srv[1]);
    wg_test_run_for(&fx->loop, 50);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    free(fx);
    return 0;
}

static const struct sockaddr *addr_of(struct fx *fx, int i)
{
    return (const struct sockaddr *)&fx->srv[i].addr;
}

/* Borrows a connection; a new one is connected before this returns. */
static struct wg_upconn *borrow(struct fx *fx, int srv, const char *owner, enum wg_pool_mode mode,
                                bool want_reused)
{
    struct wg_upconn *uc = NULL;
    bool reused = !want_reused;
    int before = fx->connected;

    assert_int_equal(wg_pool_acquire(fx->pool, addr_of(fx, srv), owner, mode, &reader, on_connect,
                                     fx, &uc, &reused),
                     0);
    assert_non_null(uc);
    assert_int_equal(reused, want_reused);
    if (!reused)
        assert_true(wg_test_run_until(&fx->loop, &fx->connected, before + 1, 1000));
    return uc;
}

static int proven(struct fx *fx, int srv, const char *owner)
{
    struct wg_upconn *uc = NULL;
    bool reused = false;
    return wg_pool_acquire(fx->pool, addr_of(fx, srv), owner, WG_POOL_PROVEN, &reader, on_connect,
                           fx, &uc, &reused);
}

/* A connection made for one session's container is never lent to another
 * owner at the same address. */
static void test_owner_separates(void **state)
{
    struct fx *fx = *state;

    struct wg_upconn *a = borrow(fx, 0, "a/aaaa", WG_POOL_ANY, false);
    wg_pool_release(fx->pool, a, true);
    assert_int_equal(wg_pool_idle_count(fx->pool), 1);

    struct wg_upconn *b = borrow(fx, 0, "b/bbbb", WG_POOL_ANY, false);
    assert_ptr_not_equal(a, b);
    wg_pool_release(fx->pool, b, true);
    assert_int_equal(wg_pool_idle_count(fx->pool), 2);

    struct wg_upconn *a2 = borrow(fx, 0, "a/aaaa", WG_POOL_ANY, true);
    assert_ptr_equal(a2, a);
    wg_pool_release(fx->pool, a2, true);
    /* A fixed upstream ("") shares nothing with either. */
    struct wg_upconn *f = borrow(fx, 0, NULL, WG_POOL_ANY, false);
    wg_pool_release(fx->pool, f, true);
    assert_int_equal(wg_pool_idle_count(fx->pool), 3);
    assert_int_equal(fx->srv[0].npeers, 3);
}

/* PROVEN: no connection of the owner, no proof; an idle live one is lent;
 * while it is idle and alive, a new connection to another port of the
 * same IP may be made; a borrowed one proves nothing. */
static void test_proven_needs_a_live_connection(void **state)
{
    struct fx *fx = *state;

    assert_int_equal(proven(fx, 0, "a/aaaa"), UV_ENOENT);
    struct wg_upconn *a = borrow(fx, 0, "a/aaaa", WG_POOL_ANY, false);
    /* Borrowed: neither lent again nor a proof of the IP. */
    assert_int_equal(proven(fx, 0, "a/aaaa"), UV_ENOENT);
    assert_int_equal(proven(fx, 1, "a/aaaa"), UV_ENOENT);
    wg_pool_release(fx->pool, a, true);

    struct wg_upconn *again = borrow(fx, 0, "a/aaaa", WG_POOL_PROVEN, true);
    assert_ptr_equal(again, a);
    wg_pool_release(fx->pool, again, true);
    /* Another owner at the same IP proves nothing for it. */
    assert_int_equal(proven(fx, 0, "b/bbbb"), UV_ENOENT);
    assert_int_equal(proven(fx, 1, "b/bbbb"), UV_ENOENT);
    /* The other port of the same IP: a new connection, proven by a. */
    struct wg_upconn *other = borrow(fx, 1, "a/aaaa", WG_POOL_PROVEN, false);
    assert_int_equal(fx->srv[1].npeers, 1);
    wg_pool_release(fx->pool, other, true);
    assert_int_equal(wg_pool_idle_count(fx->pool), 2);
}

/* The peer went away (its container stopped) and the loop has not read the
 * FIN yet: PROVEN sees it at once, closes it and proves nothing. */
static void test_proven_sees_a_dead_peer_at_once(void **state)
{
    struct fx *fx = *state;

    struct wg_upconn *a = borrow(fx, 0, "a/aaaa", WG_POOL_ANY, false);
    wg_pool_release(fx->pool, a, true);
    wg_test_run_for(&fx->loop, 10); /* the server accepted it */
    assert_int_equal(fx->srv[0].npeers, 1);
    server_drop(&fx->srv[0], 0);
    assert_int_equal(wg_pool_idle_count(fx->pool), 1); /* not read yet */
    assert_int_equal(proven(fx, 1, "a/aaaa"), UV_ENOENT);
    assert_int_equal(wg_pool_idle_count(fx->pool), 0);
    assert_int_equal(proven(fx, 0, "a/aaaa"), UV_ENOENT);
    /* An ordinary borrower connects anew. */
    struct wg_upconn *b = borrow(fx, 0, "a/aaaa", WG_POOL_ANY, false);
    wg_pool_release(fx->pool, b, true);
}

/* Buckets come and go with their connections: a full bucket of one gives
 * way to the newest (freeing and making the bucket again), a drop by IP
 * empties every owner's bucket there, and the pool goes on working. */
static void test_buckets_come_and_go(void **state)
{
    struct fx *fx = *state;
    struct wg_upconn *c[3];

    fx->cfg.keepalive_max = 1;
    for (int i = 0; i < 3; i++)
        c[i] = borrow(fx, 0, "a/aaaa", WG_POOL_ANY, false);
    for (int i = 0; i < 3; i++) {
        wg_pool_release(fx->pool, c[i], true);
        assert_int_equal(wg_pool_idle_count(fx->pool), 1);
    }
    struct wg_upconn *last = borrow(fx, 0, "a/aaaa", WG_POOL_ANY, true);
    assert_ptr_equal(last, c[2]);
    wg_pool_release(fx->pool, last, true);

    fx->cfg.keepalive_max = 4;
    struct wg_upconn *b = borrow(fx, 1, "b/bbbb", WG_POOL_ANY, false);
    struct wg_upconn *b2 = borrow(fx, 0, "b/bbbb", WG_POOL_ANY, false);
    wg_pool_release(fx->pool, b, true);
    wg_pool_release(fx->pool, b2, true);
    assert_int_equal(wg_pool_idle_count(fx->pool), 3);
    wg_pool_drop_ip(fx->pool, addr_of(fx, 0));
    assert_int_equal(wg_pool_idle_count(fx->pool), 0);
    assert_int_equal(proven(fx, 0, "a/aaaa"), UV_ENOENT);
    struct wg_upconn *d = borrow(fx, 0, "a/aaaa", WG_POOL_ANY, false);
    wg_pool_release(fx->pool, d, true);
    assert_int_equal(wg_pool_idle_count(fx->pool), 1);
}

static void test_owner_too_long(void **state)
{
    struct fx *fx = *state;
    char owner[WG_POOL_OWNER_MAX + 2];
    struct wg_upconn *uc = NULL;
    bool reused = false;

    memset(owner, 'x', sizeof(owner) - 1);
    owner[sizeof(owner) - 1] = '\0';
    assert_int_equal(wg_pool_acquire(fx->pool, addr_of(fx, 0), owner, WG_POOL_ANY, &reader,
                                     on_connect, fx, &uc, &reused),
                     UV_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_owner_separates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proven_needs_a_live_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proven_sees_a_dead_peer_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buckets_come_and_go, setup, teardown),
        cmocka_unit_test_setup_teardown(test_owner_too_long, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
