/* test/fuzz/fuzz_config.c - the YAML config loader, validation and the
 * scalar parsers.
 *
 * The input is a config file. It is loaded over the defaults, then loaded a
 * second time over the result, so the paths that replace strings and lists
 * run too (a leak or double free shows under ASan). The input, cut at its
 * first NUL or newline, is also given to each scalar parser. */
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"

#define NAME "fuzz.yaml"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static size_t captures(const char *s)
{
    size_t n = 0;

    for (const char *p = s; p != NULL && (p = strstr(p, "{session}")) != NULL; p += 9)
        n++;
    return n;
}

static void check_valid(const struct wg_config *cfg)
{
    CHECK(cfg->listen.text != NULL && cfg->listen.salen > 0);
    CHECK(cfg->admin_listen.text != NULL && cfg->admin_listen.salen > 0);
    CHECK(cfg->sessions.image != NULL && cfg->sessions.image[0] != '\0');
    CHECK(cfg->sessions.port >= 1 && cfg->sessions.port <= 65535);
    if (cfg->sessions.save.command != NULL) {
        CHECK(cfg->sessions.save.command_len > 0);
        CHECK(cfg->sessions.save.command[cfg->sessions.save.command_len] == NULL);
    }
    for (size_t i = 0; i < cfg->non_waking_paths_len; i++)
        CHECK(cfg->non_waking_paths[i][0] == '/');
    for (size_t i = 0; i < cfg->routes_len; i++) {
        const struct wg_route_cfg *r = &cfg->routes[i];
        size_t n = captures(r->host) + captures(r->path_prefix) + captures(r->header_value);

        CHECK(r->host != NULL || r->path_prefix != NULL || r->header_name != NULL);
        CHECK(n <= 1);
        CHECK(r->has_upstream ? n == 0 && r->port == 0 : n == 1);
        CHECK(!r->strip_prefix || r->path_prefix != NULL);
        CHECK(r->path_prefix == NULL || r->path_prefix[0] == '/');
        CHECK(r->port <= 65535);
        CHECK(r->line > 0);
    }
    for (size_t i = 0; i < cfg->trusted_proxies_len; i++) {
        const struct wg_cidr *c = &cfg->trusted_proxies[i];

        CHECK(c->prefix <= (c->family == AF_INET ? 32u : 128u));
    }
}

static void load_config(const uint8_t *data, size_t size)
{
    struct wg_config cfg;
    char err[WG_CONFIG_ERR_MAX];
    int r;

    if (wg_config_init_defaults(&cfg) < 0)
        return;
    for (int round = 0; round < 2; round++) {
        err[0] = '\0';
        r = wg_config_load_string(&cfg, NAME, (const char *)data, size, err, sizeof err);
        CHECK(r == 0 || r == -EINVAL || r == -ENOMEM);
        if (r < 0) {
            /* Every load error names the file. */
            CHECK(strncmp(err, NAME ":", strlen(NAME ":")) == 0);
            break;
        }
    }
    if (r == 0) {
        /* Never read a file that the input names. */
        free(cfg.admin_token_file);
        cfg.admin_token_file = NULL;
        free(cfg.admin_read_token_file);
        cfg.admin_read_token_file = NULL;
        free(cfg.access.secret_file);
        cfg.access.secret_file = NULL;
        err[0] = '\0';
        r = wg_config_validate(&cfg, err, sizeof err);
        CHECK(r == 0 || r == -EINVAL || r == -ENOMEM);
        if (r == 0)
            check_valid(&cfg);
        else if (r == -EINVAL)
            CHECK(strncmp(err, NAME ":", strlen(NAME ":")) == 0);
    }
    wg_config_free(&cfg);
    /* Idempotent: the binary's error path may free twice. */
    wg_config_free(&cfg);
}

static void parse_scalars(const uint8_t *data, size_t size)
{
    char s[128];
    size_t n = 0;
    uint64_t v;
    struct wg_addr a, b;
    struct wg_cidr c;

    while (n < size && n < sizeof s - 1 && data[n] != '\0' && data[n] != '\n') {
        s[n] = (char)data[n];
        n++;
    }
    s[n] = '\0';

    (void)wg_config_parse_duration(s, &v);
    (void)wg_config_parse_size(s, &v);

    memset(&a, 0, sizeof a);
    if (wg_config_parse_addr(s, &a) == 0) {
        /* The kept text parses to the same address. */
        CHECK(strcmp(a.text, s) == 0);
        CHECK(wg_config_parse_addr(a.text, &b) == 0);
        CHECK(a.salen == b.salen && memcmp(&a.sa, &b.sa, a.salen) == 0);
        free(b.text);
        free(a.text);
    }

    if (wg_config_parse_cidr(s, &c) == 0) {
        struct sockaddr_storage ss;

        /* A network holds its own (masked) address. */
        memset(&ss, 0, sizeof ss);
        if (c.family == AF_INET) {
            struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

            CHECK(c.prefix <= 32);
            sin->sin_family = AF_INET;
            memcpy(&sin->sin_addr, c.addr, 4);
        } else {
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

            CHECK(c.family == AF_INET6 && c.prefix <= 128);
            sin6->sin6_family = AF_INET6;
            memcpy(&sin6->sin6_addr, c.addr, 16);
        }
        CHECK(wg_cidr_contains_any(&c, 1, (const struct sockaddr *)&ss));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    load_config(data, size);
    parse_scalars(data, size);
    return 0;
}
