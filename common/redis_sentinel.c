/* common/redis_sentinel.c - finding the Redis master through Sentinel; see
 * redis_sentinel.h. */
#include "common/redis_sentinel.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

static int parse_port(const char *s, size_t n, uint16_t *port)
{
    unsigned long v = 0;

    if (n == 0 || n > 5)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -EINVAL;
    *port = (uint16_t)v;
    return 0;
}

/* A host as a sentinel or a message names it: no space, no control
 * character, shorter than the buffer. */
static int copy_host(const char *s, size_t n, char *host, size_t hostlen)
{
    if (n == 0 || n >= hostlen)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
            return -EINVAL;
    memcpy(host, s, n);
    host[n] = '\0';
    return 0;
}

int wg_redis_sentinel_parse_addr(const redisReply *reply, char *host, size_t hostlen,
                                 uint16_t *port, const char **why)
{
    *why = "no answer";
    if (!reply)
        return -EINVAL;
    if (reply->type == REDIS_REPLY_NIL) {
        *why = "does not monitor this master";
        return 1;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        *why = reply->str;
        return -EINVAL;
    }
    *why = "unexpected answer";
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return -EINVAL;
    if (copy_host(reply->element[0]->str, reply->element[0]->len, host, hostlen) < 0 ||
        parse_port(reply->element[1]->str, reply->element[1]->len, port) < 0)
        return -EINVAL;
    *why = "";
    return 0;
}

bool wg_redis_sentinel_role_is_master(const redisReply *reply, const char **role, size_t *rolelen)
{
    static const char bad[] = "an unexpected answer to ROLE";

    *role = bad;
    *rolelen = sizeof(bad) - 1;
    if (!reply)
        return false;
    if (reply->type == REDIS_REPLY_ERROR) {
        *role = reply->str;
        *rolelen = reply->len;
        return false;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return false;
    *role = reply->element[0]->str;
    *rolelen = reply->element[0]->len;
    return *rolelen == 6 && strncasecmp(*role, "master", 6) == 0;
}

/* The next space-separated word of s..end; NULL when none. */
static const char *word(const char **s, const char *end, size_t *n)
{
    const char *w;

    while (*s < end && **s == ' ')
        (*s)++;
    if (*s == end)
        return NULL;
    w = *s;
    while (*s < end && **s != ' ')
        (*s)++;
    *n = (size_t)(*s - w);
    return w;
}

int wg_redis_sentinel_parse_switch(const char *msg, size_t len, const char *master, char *host,
                                   size_t hostlen, uint16_t *port)
{
    const char *p = msg, *end = msg + len, *w[5];
    size_t n[5];

    for (int i = 0; i < 5; i++)
        if (!(w[i] = word(&p, end, &n[i])))
            return -EINVAL;
    if (word(&p, end, &n[0]) != NULL)
        return -EINVAL;
    if (copy_host(w[3], n[3], host, hostlen) < 0 || parse_port(w[4], n[4], port) < 0)
        return -EINVAL;
    if (strlen(master) != n[0] || memcmp(master, w[0], n[0]) != 0)
        return 1;
    return 0;
}

static void note(struct wg_redis_sentinel_result *res, size_t idx, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void note(struct wg_redis_sentinel_result *res, size_t idx, bool ok, const char *fmt, ...)
{
    struct wg_redis_sentinel_note *n;
    va_list ap;

    if (res->notes_len == WG_REDIS_URL_SENTINELS_MAX)
        return;
    n = &res->notes[res->notes_len++];
    n->sentinel = idx;
    n->ok = ok;
    va_start(ap, fmt);
    vsnprintf(n->text, sizeof(n->text), fmt, ap);
    va_end(ap);
}

/* A blocking connection with timeout_ms on the connect and every answer,
 * authenticated when password is set. NULL with why filled on failure. */
static redisContext *open_sync(const char *host, uint16_t port, const char *user,
                               const char *password, uint32_t timeout_ms, char *why, size_t whylen)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    redisReply *rep;

    if (!c) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    if (c->err || redisSetTimeout(c, tv) != REDIS_OK) {
        snprintf(why, whylen, "connect: %.100s", c->err ? c->errstr : "cannot set the timeout");
        redisFree(c);
        return NULL;
    }
    if (!password)
        return c;
    rep =
        user ? redisCommand(c, "AUTH %s %s", user, password) : redisCommand(c, "AUTH %s", password);
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
        snprintf(why, whylen, "AUTH: %.100s", rep ? rep->str : c->errstr);
        freeReplyObject(rep);
        redisFree(c);
        return NULL;
    }
    freeReplyObject(rep);
    return c;
}

/* Asks sentinel i; 0 with res->host/port when its master says ROLE master. */
static int ask_one(const struct wg_redis_url *u, size_t i, uint32_t timeout_ms,
                   struct wg_redis_sentinel_result *res)
{
    const struct wg_redis_url_host *s = &u->sentinels[i];
    char why[128], host[WG_REDIS_SENTINEL_HOST_MAX];
    const char *what, *role;
    size_t rolelen;
    uint16_t port = 0;
    redisContext *c;
    redisReply *rep;
    int rc;

    c = open_sync(s->host, s->port, NULL, u->sentinel_password, timeout_ms, why, sizeof(why));
    if (!c) {
        note(res, i, false, "%s", why);
        return -1;
    }
    rep = redisCommand(c, "SENTINEL get-master-addr-by-name %s", u->master_name);
    rc = rep ? wg_redis_sentinel_parse_addr(rep, host, sizeof(host), &port, &what) : -EINVAL;
    if (rc != 0)
        note(res, i, false, "SENTINEL get-master-addr-by-name: %.120s", rep ? what : c->errstr);
    freeReplyObject(rep);
    redisFree(c);
    if (rc != 0)
        return -1;

    c = open_sync(host, port, u->user, u->password, timeout_ms, why, sizeof(why));
    if (!c) {
        note(res, i, false, "named %.100s:%u, which does not answer: %.60s", host, port, why);
        return -1;
    }
    rep = redisCommand(c, "ROLE");
    if (!wg_redis_sentinel_role_is_master(rep, &role, &rolelen)) {
        if (rep)
            note(res, i, false, "named %.100s:%u, whose ROLE is %.*s, not master", host, port,
                 (int)(rolelen > 40 ? 40 : rolelen), role);
        else
            note(res, i, false, "named %.100s:%u, which does not answer ROLE: %.60s", host, port,
                 c->errstr);
        freeReplyObject(rep);
        redisFree(c);
        return -1;
    }
    freeReplyObject(rep);
    redisFree(c);
    note(res, i, true, "named %.100s:%u, which says ROLE master", host, port);
    memcpy(res->host, host, sizeof(host));
    res->port = port;
    res->sentinel = i;
    return 0;
}

void wg_redis_sentinel_discover(const struct wg_redis_url *u, size_t first, uint32_t timeout_ms,
                                struct wg_redis_sentinel_result *res)
{
    memset(res, 0, sizeof(*res));
    res->status = -EHOSTUNREACH;
    for (size_t k = 0; k < u->sentinels_len; k++) {
        if (ask_one(u, (first + k) % u->sentinels_len, timeout_ms, res) == 0) {
            res->status = 0;
            return;
        }
    }
}
