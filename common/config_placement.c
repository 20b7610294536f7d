/* common/config_placement.c - placement labels: docker.labels (what a host
 * offers) and a template's placement: {labels, pin} (what its sessions
 * need), both a mapping of label -> string kept as compact JSON text, the
 * form the heartbeat carries and the placement script compares. */
#include "common/config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/config_int.h"

/* A handful describe a host (zone, gpu, disk); more is a mistake, and the
 * placement script compares them for every live host. */
#define LABELS_MAX 16
#define LABEL_KEY_MAX 63
#define LABEL_VALUE_MAX 63

#define IN_PLACE(m)                                                                                \
    .off = offsetof(struct wg_sessions_cfg, placement.m) -                                         \
           offsetof(struct wg_sessions_cfg, placement),                                            \
    .size = sizeof(((struct wg_sessions_cfg *)0)->placement.m)

const struct field config_placement_fields[] = {
    {.key = "labels", .kind = K_LABELMAP, IN_PLACE(labels_json), .nullable = true},
    {.key = "pin", .kind = K_BOOL, IN_PLACE(pin)},
    {.key = NULL},
};

/* Keys as Docker labels write them: letters, digits, '.', '-', '_', '/'. */
static bool key_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > LABEL_KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_' || c == '/'))
            return false;
    }
    return true;
}

/* Printable ASCII: the value is compared byte for byte and shown in errors. */
static bool value_ok(const char *s)
{
    size_t n = strlen(s);

    if (n > LABEL_VALUE_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            return false;
    return true;
}

int config_walk_labelmap(struct walk *w, yaml_node_t *n, const struct field *f, void *base)
{
    char **dst = (char **)((char *)base + f->off);
    json_t *o = NULL;
    char *text = NULL;
    size_t len;
    int r = 0;

    if (config_walk_null(n))
        goto swap;
    if (n->type != YAML_MAPPING_NODE)
        return config_walk_fail(w, n, "expected a mapping of label names to strings");
    len = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    if (len > LABELS_MAX)
        return config_walk_fail(w, n, "%zu labels; at most %d", len, LABELS_MAX);
    if (len == 0)
        goto swap;
    if ((o = json_object()) == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < len && r == 0; i++) {
        yaml_node_pair_t *pair = &n->data.mapping.pairs.start[i];
        yaml_node_t *k = yaml_document_get_node(w->doc, pair->key);
        yaml_node_t *val = yaml_document_get_node(w->doc, pair->value);
        const char *name = k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : "";
        size_t old = config_walk_push(w, ".%s", name);
        const char *v;

        if (!key_ok(name))
            r = config_walk_fail(w, k,
                                 "invalid label name (1 to %d letters, digits, '.', '-', '_', '/')",
                                 LABEL_KEY_MAX);
        else if (json_object_get(o, name) != NULL)
            r = config_walk_fail(w, k, "label \"%s\" is given twice", name);
        else if ((r = config_walk_scalar(w, val, false, &v)) == 0 && !value_ok(v))
            r = config_walk_fail(w, val, "a label value is up to %d printable ASCII characters",
                                 LABEL_VALUE_MAX);
        if (r == 0 && json_object_set_new(o, name, json_string(v)) < 0)
            r = -ENOMEM;
        config_walk_pop(w, old);
    }
    if (r == 0 && (text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS)) == NULL)
        r = -ENOMEM;
    json_decref(o);
    if (r < 0)
        return r;
swap:
    free(*dst);
    *dst = text;
    return 0;
}
