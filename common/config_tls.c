/* common/config_tls.c - tls: the keys of TLS termination on the public
 * listener. The certificate and key files are checked readable here, where
 * their lines are known; loading them (and matching each key with its
 * certificate) needs libssl, so it belongs to the proxy (proxy/tls.h),
 * which names the same file, line and key. */
#include "common/config.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "common/config_int.h"

/* More pairs than this is a mistake, and each is a context in memory. */
#define TLS_CERTS_MAX 256
/* A header value of our own making: keep it to one short line. */
#define HSTS_MAX 256
/* Below a minute tickets would barely outlive a page load; more than a day
 * weakens forward secrecy for every session the key protected. */
#define TICKET_ROTATE_MIN_MS (60u * 1000)
#define TICKET_ROTATE_MAX_MS (24u * 3600 * 1000)

#define IN_TLS_CERT(m)                                                                             \
    .off = offsetof(struct wg_tls_cert_cfg, m), .size = sizeof(((struct wg_tls_cert_cfg *)0)->m)

static const struct field cert_fields[] = {
    {.key = "cert", .kind = K_STR, IN_TLS_CERT(cert)},
    {.key = "key", .kind = K_STR, IN_TLS_CERT(key)},
    {.key = NULL},
};

const struct field config_tls_fields[] = {
    {.key = "certificates", .kind = K_TLS_CERTS, IN_CFG(tls.certs), LEN_IN_CFG(tls.certs_len)},
    {.key = "ticket_rotate",
     .kind = K_DURATION,
     IN_CFG(tls.ticket_rotate_ms),
     .min = TICKET_ROTATE_MIN_MS,
     .max = TICKET_ROTATE_MAX_MS},
    {.key = "hsts", .kind = K_STR, IN_CFG(tls.hsts), .nullable = true},
    {.key = "redirect_listen", .kind = K_ADDR, IN_CFG(tls.redirect_listen)},
    {.key = NULL},
};

static void free_certs(struct wg_tls_cert_cfg *v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        free(v[i].cert);
        free(v[i].key);
    }
    free(v);
}

void config_tls_free(struct wg_tls_cfg *tls)
{
    free_certs(tls->certs, tls->certs_len);
    tls->certs = NULL;
    tls->certs_len = 0;
    free(tls->hsts);
    tls->hsts = NULL;
    free(tls->redirect_listen.text);
    tls->redirect_listen.text = NULL;
}

static int node_line(const yaml_node_t *n)
{
    return n->start_mark.line + 1 > INT_MAX ? 0 : (int)n->start_mark.line + 1;
}

/* Both files of one pair: given, and readable now. */
static int check_pair(struct walk *w, yaml_node_t *item, struct wg_tls_cert_cfg *c)
{
    static const char *const keys[] = {"cert", "key"};
    char msg[WG_CONFIG_ERR_MAX];
    int r = 0;

    for (size_t k = 0; k < 2 && r == 0; k++) {
        yaml_node_t *n = config_walk_get(w, item, keys[k]);
        size_t old;

        if (n == NULL)
            return config_walk_fail(w, item, "%s is required (a PEM file)", keys[k]);
        *(k == 0 ? &c->cert_line : &c->key_line) = node_line(n);
        old = config_walk_push(w, ".%s", keys[k]);
        if (config_check_readable((const char *)n->data.scalar.value, msg, sizeof msg) < 0)
            r = config_walk_fail(w, n, "%s", msg);
        config_walk_pop(w, old);
    }
    return r;
}

int config_walk_tls_certs(struct walk *w, yaml_node_t *n, const struct field *f, void *base)
{
    struct wg_tls_cert_cfg **dst = (struct wg_tls_cert_cfg **)((char *)base + f->off);
    size_t *dst_len = (size_t *)((char *)base + f->off_len);
    struct wg_tls_cert_cfg *v = NULL;
    size_t len;
    int r = 0;

    if (n->type != YAML_SEQUENCE_NODE)
        return config_walk_fail(w, n, "expected a list of {cert, key} mappings");
    len = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (len == 0 || len > TLS_CERTS_MAX)
        return config_walk_fail(w, n, "give 1 to %u certificates", TLS_CERTS_MAX);
    v = calloc(len, sizeof *v);
    if (v == NULL)
        return config_walk_fail(w, n, "out of memory");
    for (size_t i = 0; i < len && r == 0; i++) {
        yaml_node_t *item = yaml_document_get_node(w->doc, n->data.sequence.items.start[i]);
        size_t old = config_walk_push(w, "[%zu]", i);

        if (item->type != YAML_MAPPING_NODE)
            r = config_walk_fail(w, item, "expected a mapping with cert and key");
        else
            r = config_walk_map(w, item, cert_fields, &v[i]);
        if (r == 0)
            r = check_pair(w, item, &v[i]);
        config_walk_pop(w, old);
    }
    if (r < 0)
        goto out;
    free_certs(*dst, *dst_len);
    *dst = v;
    *dst_len = len;
    v = NULL;
out:
    free_certs(v, len);
    return r;
}

/* tls: given as a mapping turns TLS on for the public listener. */
int config_tls_check_map(struct walk *w, yaml_node_t *map, void *base)
{
    struct wg_tls_cfg *tls = &((struct wg_config *)base)->tls;
    size_t old;
    int r = 0;

    tls->enabled = !config_walk_null(map);
    tls->line = node_line(map);
    if (!tls->enabled)
        return 0;
    if (tls->certs_len == 0)
        return config_walk_fail(w, map, "certificates is required (one or more cert and key)");
    if (tls->hsts != NULL) {
        size_t n = strlen(tls->hsts);
        bool ok = n <= HSTS_MAX;

        /* It goes into every response head as is. */
        for (size_t i = 0; i < n && ok; i++)
            ok = (unsigned char)tls->hsts[i] >= 0x20 && (unsigned char)tls->hsts[i] < 0x7f;
        if (!ok) {
            old = config_walk_push(w, ".hsts");
            r = config_walk_fail(w, config_walk_get(w, map, "hsts"),
                                 "use a header value of printable ASCII of at most %u bytes, "
                                 "like \"max-age=31536000\"",
                                 HSTS_MAX);
            config_walk_pop(w, old);
        }
    }
    return r;
}
