/* common/config_yaml.c - the YAML file: libyaml loads it, and the walk
 * matches every mapping against its table of keys (config_keys.c), so a
 * key that is not in a table is an unknown key. The walk keeps the dotted
 * key and the line of the node it is at, for "FILE:LINE: KEY: problem". */
#include "common/config.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "common/config_int.h"

/* A config file is written by an operator, but pointing --config at a huge
 * file by mistake should fail fast instead of filling memory. */
#define FILE_MAX (4u << 20)

size_t config_walk_push(struct walk *w, const char *fmt, ...)
{
    size_t old = w->pathlen;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(w->path + old, sizeof w->path - old, fmt, ap);
    va_end(ap);
    w->pathlen = strlen(w->path);
    return old;
}

void config_walk_pop(struct walk *w, size_t old)
{
    w->path[old] = '\0';
    w->pathlen = old;
}

int config_walk_fail(struct walk *w, const yaml_node_t *n, const char *fmt, ...)
{
    char msg[WG_CONFIG_ERR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return config_fail_at(w->err, w->errlen, w->file, n->start_mark.line + 1,
                          w->pathlen > 0 ? w->path : "(top level)", "%s", msg);
}

bool config_walk_null(const yaml_node_t *n)
{
    const char *v;

    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    v = (const char *)n->data.scalar.value;
    return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
           strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

static const char *node_kind(const yaml_node_t *n)
{
    if (n->type == YAML_MAPPING_NODE)
        return "a mapping";
    if (n->type == YAML_SEQUENCE_NODE)
        return "a list";
    if (config_walk_null(n))
        return "nothing";
    return "a value";
}

/* The text of a scalar node; NULL for a null node when nullable. */
static int scalar(struct walk *w, const yaml_node_t *n, bool nullable, const char **ret)
{
    const char *v;

    if (n->type != YAML_SCALAR_NODE)
        return config_walk_fail(w, n, "expected a value, got %s", node_kind(n));
    if (config_walk_null(n)) {
        if (!nullable)
            return config_walk_fail(w, n, "missing value");
        *ret = NULL;
        return 0;
    }
    v = (const char *)n->data.scalar.value;
    /* A "\0" escape would silently cut the value at the first C NUL. */
    if (strlen(v) != n->data.scalar.length)
        return config_walk_fail(w, n, "contains a NUL character");
    *ret = v;
    return 0;
}

yaml_node_t *config_walk_get(struct walk *w, yaml_node_t *map, const char *key)
{
    if (map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(w->doc, p->key);

        if (k != NULL && k->type == YAML_SCALAR_NODE &&
            strcmp((const char *)k->data.scalar.value, key) == 0)
            return yaml_document_get_node(w->doc, p->value);
    }
    return NULL;
}

static int walk_value(struct walk *w, yaml_node_t *n, const struct field *f, void *base);

static int fail_unknown(struct walk *w, const yaml_node_t *key, const struct field *fields)
{
    char known[WG_CONFIG_ERR_MAX];
    size_t len = 0;

    known[0] = '\0';
    for (const struct field *f = fields; f->key != NULL && len < sizeof known; f++)
        len += (size_t)snprintf(known + len, sizeof known - len, "%s%s", len ? ", " : "", f->key);
    return config_walk_fail(w, key, "unknown key (expected one of: %s)", known);
}

/* One key of a mapping, p, of the pairs from start: it must be a known key,
 * given once. */
static int walk_pair(struct walk *w, yaml_node_t *map, yaml_node_pair_t *start, yaml_node_pair_t *p,
                     const struct field *fields, void *base)
{
    yaml_node_t *key = yaml_document_get_node(w->doc, p->key);
    yaml_node_t *value = yaml_document_get_node(w->doc, p->value);
    const struct field *f;
    const char *name;
    size_t old;
    int r = 0;

    if (key == NULL || value == NULL || key->type != YAML_SCALAR_NODE || config_walk_null(key))
        return config_walk_fail(w, key != NULL ? key : map, "keys must be plain names");
    name = (const char *)key->data.scalar.value;
    for (f = fields; f->key != NULL; f++)
        if (strcmp(f->key, name) == 0)
            break;
    old = config_walk_push(w, w->pathlen > 0 ? ".%s" : "%s", name);
    if (f->key == NULL) {
        r = fail_unknown(w, key, fields);
        goto out;
    }
    /* Every earlier key is a known one, so this loop stays short. */
    for (yaml_node_pair_t *q = start; q < p; q++) {
        yaml_node_t *prev = yaml_document_get_node(w->doc, q->key);

        if (strcmp((const char *)prev->data.scalar.value, name) == 0) {
            r = config_walk_fail(w, key, "duplicate key (first set on line %zu)",
                                 prev->start_mark.line + 1);
            goto out;
        }
    }
    r = walk_value(w, value, f, base);
out:
    config_walk_pop(w, old);
    return r;
}

/* Walks a mapping whose keys are described by fields; null is an empty
 * mapping, so "admin:" with nothing under it keeps the defaults. */
int config_walk_map(struct walk *w, yaml_node_t *map, const struct field *fields, void *base)
{
    yaml_node_pair_t *start;
    int r;

    if (config_walk_null(map))
        return 0;
    if (map->type != YAML_MAPPING_NODE)
        return config_walk_fail(w, map, "expected a mapping, got %s", node_kind(map));
    start = map->data.mapping.pairs.start;
    for (yaml_node_pair_t *p = start; p < map->data.mapping.pairs.top; p++) {
        r = walk_pair(w, map, start, p, fields, base);
        if (r < 0)
            return r;
    }
    return 0;
}

int config_walk_scalar(struct walk *w, const yaml_node_t *n, bool nullable, const char **ret)
{
    return scalar(w, n, nullable, ret);
}

/* The length of a list; null is an empty list. */
static int seq_items(struct walk *w, yaml_node_t *n, size_t *ret_len)
{
    if (config_walk_null(n)) {
        *ret_len = 0;
        return 0;
    }
    if (n->type != YAML_SEQUENCE_NODE)
        return config_walk_fail(w, n, "expected a list, got %s", node_kind(n));
    *ret_len = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    return 0;
}

static int walk_strlist(struct walk *w, yaml_node_t *n, const struct field *f, void *base)
{
    char ***dst = (char ***)((char *)base + f->off);
    size_t *dst_len = (size_t *)((char *)base + f->off_len);
    char **v = NULL;
    size_t len = 0;
    int r = 0;

    if (config_walk_null(n)) {
        /* For save.command that means the built-in hook; elsewhere an empty list. */
        config_free_strv(*dst, *dst_len);
        *dst = NULL;
        *dst_len = 0;
        return 0;
    }
    r = seq_items(w, n, &len);
    if (r < 0)
        goto out;
    if (f->kind == K_COMMAND && len == 0) {
        r = config_walk_fail(w, n, "must not be empty (leave it out for the built-in git save)");
        goto out;
    }
    /* One spare slot: command is passed to exec as a NULL-terminated argv. */
    v = calloc(len + 1, sizeof *v);
    if (v == NULL) {
        r = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < len && r == 0; i++) {
        yaml_node_t *item = yaml_document_get_node(w->doc, n->data.sequence.items.start[i]);
        size_t old = config_walk_push(w, "[%zu]", i);
        const char *s;

        r = scalar(w, item, false, &s);
        if (r == 0 && s[0] == '\0' && (f->kind != K_COMMAND || i == 0))
            r = config_walk_fail(w, item, "must not be empty");
        if (r == 0 && f->kind == K_PATHS && s[0] != '/')
            r = config_walk_fail(w, item, "path \"%s\" must start with /", s);
        if (r == 0 && f->kind == K_CAPS) {
            char msg[WG_CONFIG_ERR_MAX];

            r = config_set_capability(&v[i], s, msg, sizeof msg);
            if (r == -EINVAL)
                config_walk_fail(w, item, "%s", msg);
        } else if (r == 0 && (v[i] = strdup(s)) == NULL) {
            r = -ENOMEM;
        }
        config_walk_pop(w, old);
    }
    if (r < 0)
        goto out;
    config_free_strv(*dst, *dst_len);
    *dst = v;
    *dst_len = len;
    v = NULL;
out:
    config_free_strv(v, len);
    return r;
}

/* Reads a sequence's length and allocates that many zeroed elements (none
 * for an empty sequence). Returns 0, -EINVAL (with the error written) or
 * -ENOMEM. */
static int seq_alloc(struct walk *w, yaml_node_t *n, size_t elem, void **ret_v, size_t *ret_len)
{
    size_t len = 0;
    int r = seq_items(w, n, &len);
    if (r < 0)
        return r;
    *ret_v = NULL;
    *ret_len = len;
    if (len == 0)
        return 0;
    *ret_v = calloc(len, elem);
    return *ret_v == NULL ? -ENOMEM : 0;
}

static int walk_cidrs(struct walk *w, yaml_node_t *n, const struct field *f, void *base)
{
    struct wg_cidr **dst = (struct wg_cidr **)((char *)base + f->off);
    size_t *dst_len = (size_t *)((char *)base + f->off_len);
    struct wg_cidr *v = NULL;
    size_t len = 0;
    int r = 0;

    r = seq_alloc(w, n, sizeof *v, (void **)&v, &len);
    if (r < 0)
        goto out;
    for (size_t i = 0; i < len && r == 0; i++) {
        yaml_node_t *item = yaml_document_get_node(w->doc, n->data.sequence.items.start[i]);
        size_t old = config_walk_push(w, "[%zu]", i);
        const char *s;

        r = scalar(w, item, false, &s);
        if (r == 0 && wg_config_parse_cidr(s, &v[i]) < 0)
            r = config_walk_fail(
                w, item, "invalid network \"%s\" (use 10.0.0.0/8, fd00::/8 or one address)", s);
        config_walk_pop(w, old);
    }
    if (r < 0)
        goto out;
    free(*dst);
    *dst = v;
    *dst_len = len;
    v = NULL;
out:
    free(v);
    return r;
}

static int walk_routes(struct walk *w, yaml_node_t *n, const struct field *f, void *base)
{
    struct wg_route_cfg **dst = (struct wg_route_cfg **)((char *)base + f->off);
    size_t *dst_len = (size_t *)((char *)base + f->off_len);
    struct wg_route_cfg *v = NULL;
    size_t len = 0;
    int r = 0;

    r = seq_alloc(w, n, sizeof *v, (void **)&v, &len);
    if (r < 0)
        goto out;
    for (size_t i = 0; i < len && r == 0; i++) {
        yaml_node_t *item = yaml_document_get_node(w->doc, n->data.sequence.items.start[i]);
        size_t old = config_walk_push(w, "[%zu]", i);

        v[i].line = item->start_mark.line + 1 > INT_MAX ? 0 : (int)item->start_mark.line + 1;
        if (item->type != YAML_MAPPING_NODE)
            r = config_walk_fail(w, item, "expected a mapping, got %s", node_kind(item));
        else
            r = config_walk_map(w, item, config_route_fields, &v[i]);
        config_walk_pop(w, old);
    }
    if (r < 0)
        goto out;
    config_free_routes(*dst, *dst_len);
    *dst = v;
    *dst_len = len;
    v = NULL;
out:
    config_free_routes(v, len);
    return r;
}

static int walk_value(struct walk *w, yaml_node_t *n, const struct field *f, void *base)
{
    char msg[WG_CONFIG_ERR_MAX];
    const char *s;
    int r;

    switch (f->kind) {
    case K_MAP:
        r = config_walk_map(w, n, f->sub, (char *)base + f->rebase);
        if (r == 0 && f->check != NULL)
            r = f->check(w, n, (char *)base + f->rebase);
        return r;
    case K_TEMPLATES:
        return config_walk_templates(w, n, f, base);
    case K_OVERRIDES:
        return config_walk_overrides(w, n, f, base);
    case K_WAKE_ON:
        return config_walk_wake_on(w, n, f, base);
    case K_PATHS:
    case K_STRLIST:
    case K_COMMAND:
    case K_CAPS:
        return walk_strlist(w, n, f, base);
    case K_CIDRS:
        return walk_cidrs(w, n, f, base);
    case K_ROUTES:
        return walk_routes(w, n, f, base);
    case K_TLS_CERTS:
        return config_walk_tls_certs(w, n, f, base);
    case K_PORTS:
        return config_walk_ports(w, n, f, base);
    case K_LABELMAP:
        return config_walk_labelmap(w, n, f, base);
    default:
        break;
    }
    r = scalar(w, n, f->nullable, &s);
    if (r < 0)
        return r;
    msg[0] = '\0';
    r = config_set_scalar(f, base, s, msg, sizeof msg);
    if (r < 0)
        config_walk_fail(w, n, "%s", msg);
    return r;
}

/* Counts newlines before offset: libyaml gives reader errors (bad UTF-8,
 * control characters) as a byte offset, not a line. */
static size_t line_at(const char *s, size_t len, size_t offset)
{
    size_t line = 1;

    for (size_t i = 0; i < offset && i < len; i++)
        if (s[i] == '\n')
            line++;
    return line;
}

static int yaml_fail(const yaml_parser_t *p, const char *name, const char *yaml, size_t len,
                     char *err, size_t errlen)
{
    const char *what = p->problem != NULL ? p->problem : "unknown error";
    size_t line;

    if (p->error == YAML_MEMORY_ERROR) {
        config_fail_at(err, errlen, name, 0, "YAML", "out of memory");
        return -ENOMEM;
    }
    if (p->error == YAML_READER_ERROR)
        return config_fail_at(err, errlen, name, line_at(yaml, len, p->problem_offset),
                              "YAML syntax error", "%s", what);
    line = p->problem_mark.line + 1;
    if (p->context != NULL)
        return config_fail_at(err, errlen, name, line, "YAML syntax error",
                              "%s %s that started on line %zu", what, p->context,
                              p->context_mark.line + 1);
    return config_fail_at(err, errlen, name, line, "YAML syntax error", "%s", what);
}

int wg_config_load_string(struct wg_config *cfg, const char *name, const char *yaml, size_t len,
                          char *err, size_t errlen)
{
    struct walk w;
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    yaml_node_t *root;
    bool parser_live = false, doc_live = false, extra_live = false;
    int r;

    assert(cfg != NULL && name != NULL);
    if (yaml == NULL)
        yaml = "";
    r = config_replace_str(&cfg->path, name);
    if (r < 0)
        goto out;
    if (!yaml_parser_initialize(&parser)) {
        r = -ENOMEM;
        goto out;
    }
    parser_live = true;
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&parser, &doc)) {
        r = yaml_fail(&parser, name, yaml, len, err, errlen);
        goto out;
    }
    doc_live = true;

    memset(&w, 0, sizeof w);
    w.cfg = cfg;
    w.doc = &doc;
    w.file = name;
    w.err = err;
    w.errlen = errlen;
    root = yaml_document_get_root_node(&doc);
    /* An empty file, or one holding only comments, keeps every default. */
    if (root != NULL) {
        r = config_walk_map(&w, root, config_top_fields, cfg);
        if (r < 0)
            goto out;
    }

    if (!yaml_parser_load(&parser, &extra)) {
        r = yaml_fail(&parser, name, yaml, len, err, errlen);
        goto out;
    }
    extra_live = true;
    root = yaml_document_get_root_node(&extra);
    if (root != NULL)
        r = config_fail_at(err, errlen, name, root->start_mark.line + 1, "YAML",
                           "only one document is allowed in the file");
out:
    if (extra_live)
        yaml_document_delete(&extra);
    if (doc_live)
        yaml_document_delete(&doc);
    if (parser_live)
        yaml_parser_delete(&parser);
    if (r == -ENOMEM)
        config_fail_at(err, errlen, NULL, 0, name, "out of memory");
    return r;
}

int wg_config_load_file(struct wg_config *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int r = 0;

    assert(cfg != NULL && path != NULL);
    f = fopen(path, "re");
    if (f == NULL) {
        r = -errno;
        config_fail_at(err, errlen, NULL, 0, path, "cannot open: %s", strerror(-r));
        goto out;
    }
    for (;;) {
        size_t n;

        if (len == cap) {
            char *grown;

            /* Room for one byte past the cap tells "too big" from "exactly the cap". */
            if (cap > FILE_MAX) {
                r = -EFBIG;
                config_fail_at(err, errlen, NULL, 0, path, "file is larger than %u MiB",
                               FILE_MAX >> 20);
                goto out;
            }
            cap = cap == 0 ? 16384 : cap * 2 > FILE_MAX ? FILE_MAX + 1 : cap * 2;
            grown = realloc(buf, cap);
            if (grown == NULL) {
                r = -ENOMEM;
                config_fail_at(err, errlen, NULL, 0, path, "out of memory");
                goto out;
            }
            buf = grown;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f)) {
                r = errno != 0 ? -errno : -EIO;
                config_fail_at(err, errlen, NULL, 0, path, "cannot read: %s", strerror(-r));
                goto out;
            }
            break;
        }
    }
    r = wg_config_load_string(cfg, path, buf != NULL ? buf : "", len, err, errlen);
out:
    free(buf);
    if (f != NULL)
        fclose(f);
    return r;
}
