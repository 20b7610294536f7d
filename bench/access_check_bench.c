/* bench/access_check_bench.c - the cost of a private route's check alone,
 * in process, without the noise of a whole request: what
 * proxy/conn_access.c does for a request carrying a valid cookie (the wall
 * clock, the query looked at, the Cookie field walked, the token verified:
 * a repeated token is a constant-time compare, a new one an HMAC-SHA256),
 * timed over many iterations. bench/access_cost.py measures whole requests. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/access.h"
#include "common/clock.h"

#define ITER 1000000

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* One check, as conn_access_prepare() does it for a cookie. */
static int check(struct wg_access_key *k, const char *target, const char *cookie)
{
    const char *v, *name, *val;
    size_t vl, pos = 0, nl, vlen;
    struct wg_access_claims cl;
    int64_t now_s = wg_clock_wall_ms() / 1000;

    if (wg_access_query_find(target, strlen(target), WG_ACCESS_QUERY, &v, &vl))
        return -1;
    while (wg_access_cookie_next(cookie, strlen(cookie), &pos, &name, &nl, &val, &vlen)) {
        if (nl == 8 && memcmp(name, WG_ACCESS_COOKIE, 8) == 0 &&
            wg_access_verify(k, val, vlen, &cl) == 0 && strcmp(cl.id, "bench-1") == 0 &&
            cl.expires > now_s)
            return 0;
    }
    return -1;
}

int main(void)
{
    static const unsigned char secret[] = "0123456789abcdef0123456789abcdef";
    struct wg_access_key *k;
    char tok[WG_ACCESS_TOKEN_MAX + 1], cookie[300];
    double t0, t1;
    int bad = 0;

    if (wg_access_key_new(secret, 32, &k) < 0)
        return 1;
    wg_access_mint(k, "bench-1", wg_clock_wall_ms() / 1000 + 3600, 42, tok, sizeof(tok));
    snprintf(cookie, sizeof(cookie), "theme=dark; wg_token=%s", tok);
    t0 = now_ns();
    for (int i = 0; i < ITER; i++)
        bad |= check(k, "/some/page?x=1", cookie);
    t1 = now_ns();
    printf("check with a repeated cookie: %.0f ns\n", (t1 - t0) / ITER);
    /* A new token every time: the HMAC itself. */
    t0 = now_ns();
    for (int i = 0; i < ITER / 10; i++) {
        wg_access_mint(k, "bench-1", wg_clock_wall_ms() / 1000 + 3600 + i, 42, tok, sizeof(tok));
        snprintf(cookie, sizeof(cookie), "theme=dark; wg_token=%s", tok);
        bad |= check(k, "/some/page?x=1", cookie);
    }
    t1 = now_ns();
    printf("mint + check of a new token (two HMACs): %.0f ns\n", (t1 - t0) / (ITER / 10));
    wg_access_key_free(k);
    return bad ? 1 : 0;
}
