/* common/config_parse.c - the scalar parsers of the configuration (public,
 * see config.h): durations, sizes, addresses and networks. */
#include "common/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/config_int.h"

/* Decimal digits only: no sign, no spaces, no base prefix. */
int config_parse_digits(const char *s, size_t n, uint64_t *ret)
{
    uint64_t v = 0;

    if (n == 0)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned d;

        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -EINVAL;
        v = v * 10 + d;
    }
    *ret = v;
    return 0;
}

struct unit {
    const char *suffix;
    uint64_t mult;
};

static int parse_with_unit(const char *s, const struct unit *units, bool unitless_any,
                           uint64_t *ret)
{
    size_t n = 0;
    uint64_t v;

    if (s == NULL)
        return -EINVAL;
    while (s[n] >= '0' && s[n] <= '9')
        n++;
    if (config_parse_digits(s, n, &v) < 0)
        return -EINVAL;
    if (s[n] == '\0') {
        /* A bare number is only unambiguous for a duration when it is 0. */
        if (!unitless_any && v != 0)
            return -EINVAL;
        *ret = v;
        return 0;
    }
    for (const struct unit *u = units; u->suffix != NULL; u++) {
        if (strcmp(s + n, u->suffix) != 0)
            continue;
        if (v > UINT64_MAX / u->mult)
            return -EINVAL;
        *ret = v * u->mult;
        return 0;
    }
    return -EINVAL;
}

int wg_config_parse_duration(const char *s, uint64_t *ret_ms)
{
    static const struct unit units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 3600 * 1000}, {NULL, 0},
    };

    return parse_with_unit(s, units, false, ret_ms);
}

int wg_config_parse_size(const char *s, uint64_t *ret_bytes)
{
    /* Only binary units: "KB" means 1000 to some readers and 1024 to others. */
    static const struct unit units[] = {
        {"KiB", 1ull << 10},
        {"MiB", 1ull << 20},
        {"GiB", 1ull << 30},
        {NULL, 0},
    };

    return parse_with_unit(s, units, true, ret_bytes);
}

int wg_config_parse_addr(const char *s, struct wg_addr *ret_addr)
{
    struct wg_addr a;
    char host[INET6_ADDRSTRLEN + 1];
    const char *colon, *port_s;
    size_t host_len;
    uint64_t port;
    bool v6 = false;

    memset(&a, 0, sizeof a);
    if (s == NULL)
        return -EINVAL;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');

        if (close == NULL || close[1] != ':')
            return -EINVAL;
        v6 = true;
        host_len = (size_t)(close - s - 1);
        if (host_len == 0 || host_len >= sizeof host)
            return -EINVAL;
        memcpy(host, s + 1, host_len);
        port_s = close + 2;
    } else {
        colon = strchr(s, ':');
        /* A second colon is an IPv6 literal without brackets: ambiguous. */
        if (colon == NULL || strchr(colon + 1, ':') != NULL)
            return -EINVAL;
        host_len = (size_t)(colon - s);
        if (host_len >= sizeof host)
            return -EINVAL;
        memcpy(host, s, host_len);
        port_s = colon + 1;
    }
    host[host_len] = '\0';
    if (strlen(port_s) > 5 || config_parse_digits(port_s, strlen(port_s), &port) < 0 ||
        port > 65535)
        return -EINVAL;

    if (v6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a.sa;

        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
            return -EINVAL;
        a.salen = sizeof *sin6;
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&a.sa;

        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        if (host[0] == '\0')
            sin->sin_addr.s_addr = htonl(INADDR_ANY);
        else if (strcasecmp(host, "localhost") == 0)
            /* Resolved here, not by DNS: "localhost" must never leave the box. */
            sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
            return -EINVAL;
        a.salen = sizeof *sin;
    }
    a.text = strdup(s);
    if (a.text == NULL)
        return -ENOMEM;
    *ret_addr = a;
    return 0;
}

static void mask_bits(uint8_t *addr, size_t len, unsigned prefix)
{
    for (size_t i = 0; i < len; i++) {
        unsigned bits = prefix >= 8 * (i + 1) ? 8 : prefix > 8 * i ? prefix - 8 * (unsigned)i : 0;

        addr[i] &= (uint8_t)(0xff00u >> bits);
    }
}

int wg_config_parse_cidr(const char *s, struct wg_cidr *ret_cidr)
{
    static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    struct wg_cidr c;
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash;
    size_t host_len;
    unsigned max;

    memset(&c, 0, sizeof c);
    if (s == NULL)
        return -EINVAL;
    slash = strchr(s, '/');
    host_len = slash != NULL ? (size_t)(slash - s) : strlen(s);
    if (host_len == 0 || host_len >= sizeof host)
        return -EINVAL;
    memcpy(host, s, host_len);
    host[host_len] = '\0';
    if (memchr(host, ':', host_len) != NULL) {
        c.family = AF_INET6;
        max = 128;
    } else {
        c.family = AF_INET;
        max = 32;
    }
    if (inet_pton(c.family, host, c.addr) != 1)
        return -EINVAL;
    c.prefix = max;
    if (slash != NULL) {
        uint64_t p;

        if (strlen(slash + 1) > 3 || config_parse_digits(slash + 1, strlen(slash + 1), &p) < 0 ||
            p > max)
            return -EINVAL;
        c.prefix = (unsigned)p;
    }
    /* Host bits are dropped, so "10.0.0.1/8" means 10.0.0.0/8. */
    mask_bits(c.addr, max / 8, c.prefix);
    /* A v4-mapped network is a v4 network: wg_cidr_contains_any() compares
     * v4-mapped peers as v4, so both spellings must meet there. */
    if (c.family == AF_INET6 && c.prefix >= 96 && memcmp(c.addr, v4_mapped, 12) == 0) {
        memmove(c.addr, c.addr + 12, 4);
        memset(c.addr + 4, 0, 12);
        c.family = AF_INET;
        c.prefix -= 96;
    }
    *ret_cidr = c;
    return 0;
}

static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
    unsigned whole = prefix / 8, rest = prefix % 8;

    if (memcmp(a, b, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    return ((a[whole] ^ b[whole]) & (uint8_t)(0xff00u >> rest)) == 0;
}

bool wg_cidr_contains_any(const struct wg_cidr *nets, size_t n, const struct sockaddr *sa)
{
    uint8_t addr[16];
    int family;

    if (sa == NULL)
        return false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

        family = AF_INET;
        memcpy(addr, &sin->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            family = AF_INET;
            memcpy(addr, sin6->sin6_addr.s6_addr + 12, 4);
        } else {
            family = AF_INET6;
            memcpy(addr, sin6->sin6_addr.s6_addr, 16);
        }
    } else {
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if (nets[i].family == family && prefix_equal(nets[i].addr, addr, nets[i].prefix))
            return true;
    return false;
}
