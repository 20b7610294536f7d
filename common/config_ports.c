/* common/config_ports.c - a template's named ports: the ports: mapping
 * (name -> container port, with whether a wake waits for it), the main
 * port written as one of those names, and the lookups by name that the
 * proxy's {port} routes make. */
#include "common/config.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "common/config_int.h"
#include "common/str.h"

/* Enough for an app, its API, a dashboard and a debugger; a longer list
 * is a mistake, and the proxy looks names up by a linear scan. */
#define PORTS_MAX 32

#define IN_PORT(m)                                                                                 \
    .off = offsetof(struct wg_named_port, m), .size = sizeof(((struct wg_named_port *)0)->m)

static const struct field port_fields[] = {
    {.key = "port", .kind = K_UINT, IN_PORT(port), .min = 1, .max = 65535},
    {.key = "ready", .kind = K_BOOL, IN_PORT(ready)},
    {.key = "http_path", .kind = K_HTTP_PATH, IN_PORT(http_path), .nullable = true},
    {.key = NULL},
};

bool wg_port_name_valid(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > WG_PORT_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

void config_free_ports(struct wg_named_port *ports, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(ports[i].name);
        free(ports[i].http_path);
    }
    free(ports);
}

/* One entry: "8000", or {port: 8000, ready: true, http_path: /health}. */
static int walk_entry(struct walk *w, yaml_node_t *val, struct wg_named_port *p)
{
    char msg[WG_CONFIG_ERR_MAX];
    const char *s;
    int r;

    if (val->type == YAML_MAPPING_NODE) {
        r = config_walk_map(w, val, port_fields, p);
        if (r == 0 && p->port == 0)
            r = config_walk_fail(w, val, "needs port: the container port");
        if (r == 0 && p->http_path != NULL && !p->ready)
            r = config_walk_fail(w, val, "http_path is the readiness of a port: set ready: true");
        return r;
    }
    r = config_walk_scalar(w, val, false, &s);
    if (r < 0)
        return r;
    msg[0] = '\0';
    r = config_set_scalar(&port_fields[0], p, s, msg, sizeof msg);
    if (r < 0)
        config_walk_fail(w, val, "%s", msg);
    return r;
}

/* ports: {NAME: PORT or {port, ready, http_path}, ...}; null: none. */
int config_walk_ports(struct walk *w, yaml_node_t *n, const struct field *f, void *base)
{
    struct wg_named_port **dst = (struct wg_named_port **)((char *)base + f->off);
    size_t *dst_len = (size_t *)((char *)base + f->off_len);
    struct wg_named_port *v = NULL;
    size_t len = 0;
    int r = 0;

    if (config_walk_null(n))
        goto swap;
    if (n->type != YAML_MAPPING_NODE)
        return config_walk_fail(w, n, "expected a mapping of port names to ports");
    len = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    if (len > PORTS_MAX)
        return config_walk_fail(w, n, "%zu ports; at most %d", len, PORTS_MAX);
    v = calloc(len ? len : 1, sizeof *v);
    if (v == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < len && r == 0; i++) {
        yaml_node_pair_t *pair = &n->data.mapping.pairs.start[i];
        yaml_node_t *k = yaml_document_get_node(w->doc, pair->key);
        yaml_node_t *val = yaml_document_get_node(w->doc, pair->value);
        const char *name = k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : "";
        size_t old = config_walk_push(w, ".%s", name);

        v[i].line = k->start_mark.line + 1 > INT_MAX ? 0 : (int)k->start_mark.line + 1;
        if (!wg_port_name_valid(name, strlen(name)))
            r = config_walk_fail(w, k,
                                 "invalid port name (use 1 to %d lowercase letters and digits; "
                                 "no '-' or '_', which a host label joins it to a session id by)",
                                 WG_PORT_NAME_MAX);
        for (size_t j = 0; j < i && r == 0; j++)
            if (strcmp(v[j].name, name) == 0)
                r = config_walk_fail(w, k, "port \"%s\" is given twice", name);
        if (r == 0 && config_replace_str(&v[i].name, name) < 0)
            r = -ENOMEM;
        if (r == 0)
            r = walk_entry(w, val, &v[i]);
        config_walk_pop(w, old);
    }
    if (r < 0) {
        config_free_ports(v, len);
        return r;
    }
swap:
    config_free_ports(*dst, *dst_len);
    *dst = v;
    *dst_len = len;
    return 0;
}

int config_set_main_port(struct wg_sessions_cfg *t, const char *s, char *msg, size_t msglen)
{
    uint64_t v;

    if (config_parse_digits(s, strlen(s), &v) == 0) {
        if (v < 1 || v > 65535)
            return wg_errf(msg, msglen, "%s is out of range (1 to 65535)", s);
        t->port = (unsigned)v;
        return config_replace_str(&t->port_name, NULL);
    }
    if (!wg_port_name_valid(s, strlen(s)))
        return wg_errf(msg, msglen, "invalid port \"%s\" (a number, or a name of ports:)", s);
    if (config_replace_str(&t->port_name, s) < 0)
        return wg_errf(msg, msglen, "out of memory");
    return 0;
}

int config_check_ports(struct walk *w, yaml_node_t *map, struct wg_sessions_cfg *t)
{
    const struct wg_named_port *p;
    size_t old;
    int r;

    if (t->port_name == NULL)
        return 0;
    p = wg_config_named_port(t, t->port_name, strlen(t->port_name));
    if (p != NULL) {
        t->port = p->port;
        return 0;
    }
    old = config_walk_push(w, ".port");
    yaml_node_t *n = config_walk_get(w, map, "port");
    r = config_walk_fail(w, n ? n : map,
                         "\"%s\" is neither a number nor a name of ports:", t->port_name);
    config_walk_pop(w, old);
    return r;
}

const struct wg_named_port *wg_config_named_port(const struct wg_sessions_cfg *t, const char *name,
                                                 size_t len)
{
    for (size_t i = 0; t != NULL && i < t->ports_len; i++) {
        const struct wg_named_port *p = &t->ports[i];
        if (strlen(p->name) == len && memcmp(p->name, name, len) == 0)
            return p;
    }
    return NULL;
}

bool wg_config_port_name_known(const struct wg_config *cfg, const char *name, size_t len)
{
    if (wg_config_named_port(&cfg->sessions, name, len) != NULL)
        return true;
    for (size_t i = 0; i < cfg->templates_len; i++)
        if (wg_config_named_port(&cfg->templates[i], name, len) != NULL)
            return true;
    return false;
}
