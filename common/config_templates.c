/* common/config_templates.c - session templates: the built-in defaults of
 * one (the sessions: block is the template "default"), the templates:
 * mapping of named ones, their overridable list, and the lookup by name. */
#include "common/config.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "common/config_int.h"
#include "common/session.h"

/* A template name is what a record stores and a request names: the
 * grammar of a session id, so it needs no escaping anywhere; at most
 * WG_SESSION_TEMPLATE_MAX bytes, as the record keeps it. */

const struct wg_override_name wg_override_names[] = {
    {"cmd", WG_OVERRIDE_CMD},   {"labels", WG_OVERRIDE_LABELS}, {"port", WG_OVERRIDE_PORT},
    {"idle", WG_OVERRIDE_IDLE}, {"save", WG_OVERRIDE_SAVE},     {"limits", WG_OVERRIDE_LIMITS},
};
const size_t wg_override_names_len = sizeof wg_override_names / sizeof wg_override_names[0];

const struct wg_override_name wg_wake_class_names[] = {
    {"navigation", WG_WAKE_NAVIGATION},
    {"api", WG_WAKE_API},
    {"websocket", WG_WAKE_WEBSOCKET},
};
const size_t wg_wake_class_names_len = sizeof wg_wake_class_names / sizeof wg_wake_class_names[0];

int config_sessions_defaults(struct wg_sessions_cfg *t, const char *name)
{
    memset(t, 0, sizeof *t);
    if (config_replace_str(&t->name, name) < 0 ||
        config_replace_str(&t->image, "wakegate-demo:latest") < 0 ||
        config_replace_str(&t->save.path, "/workspace") < 0 ||
        config_replace_str(&t->idle.busy_file, "/tmp/wakegate-busy") < 0) {
        config_sessions_free(t);
        return -ENOMEM;
    }
    t->port = 8080;
    t->wake_on = WG_WAKE_ALL;
    t->page_after_ms = 1000;
    t->wake_timeout_ms = 30 * 1000;
    t->upstream_recheck_ms = 5 * 1000;
    t->idle.pause_after_ms = 0;
    t->idle.stop_after_ms = 20 * 60 * 1000;
    t->idle.activity_interval_ms = 1000;
    t->idle.reap_every_ms = 1000;
    t->idle.drain_ms = 2000;
    t->idle.stream_after_ms = 2 * 60 * 1000;
    t->idle.stream_heartbeat = 16;
    t->idle.cpu_interval_ms = 10 * 1000;
    t->idle.cpu_threshold_nano = 100000000ull;
    t->idle.cpu_stats_concurrency = 8;
    t->idle.cpu_cgroup_files = true;
    t->save.timeout_ms = 60 * 1000;
    t->save.on_failure = WG_SAVE_KEEP_AWAKE;
    t->save.before_pause = false;
    t->save.retry_backoff_ms = 10 * 1000;
    t->save.retry_max_ms = 10 * 60 * 1000;
    /* Those of orchestrator/probe.h (WG_PROBE_INTERVAL_MS, ..._CONNECT_TIMEOUT_MS). */
    t->readiness.interval_ms = 2;
    t->readiness.timeout_ms = 50;
    config_sandbox_defaults(&t->sandbox);
    /* A named template lets a caller set env only, until it says more. */
    t->overridable = 0;
    return 0;
}

void config_sessions_free(struct wg_sessions_cfg *t)
{
    if (t == NULL)
        return;
    free(t->name);
    free(t->image);
    config_free_strv(t->images, t->images_len);
    config_free_strv(t->cmd, t->cmd_len);
    config_free_strv(t->env, t->env_len);
    config_free_strv(t->binds_allow, t->binds_allow_len);
    free(t->readiness.http_path);
    free(t->port_name);
    config_free_ports(t->ports, t->ports_len);
    config_free_strv(t->save.command, t->save.command_len);
    free(t->save.path);
    free(t->idle.busy_file);
    free(t->access);
    free(t->waking_page);
    free(t->waking_page_html);
    free(t->placement.labels_json);
    config_sandbox_free(&t->sandbox);
    memset(t, 0, sizeof *t);
}

void config_free_templates(struct wg_sessions_cfg *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        config_sessions_free(&t[i]);
    free(t);
}

static bool name_ok(const char *s)
{
    return wg_session_id_valid(s, strlen(s)) && strlen(s) <= WG_SESSION_TEMPLATE_MAX;
}

/* Keys of sessions: that the whole process uses, whatever the template:
 * the wake deadline (held requests, stale wake commands, locks), the
 * proxy's recheck of a running session that refuses, and the reaper's own
 * rhythm. A template that set one would be silently ignored, so it is
 * refused instead. */
static const char *const process_keys[][2] = {
    {"wake_timeout", NULL},       {"upstream_recheck", NULL}, {"idle", "activity_interval"},
    {"idle", "reap_every"},       {"idle", "drain"},          {"save", "retry_backoff"},
    {"save", "retry_max"},        {"idle", "cpu_interval"},   {"idle", "cpu_stats_concurrency"},
    {"idle", "cpu_cgroup_files"},
};

static int refuse_process_keys(struct walk *w, yaml_node_t *map)
{
    for (size_t i = 0; i < sizeof process_keys / sizeof process_keys[0]; i++) {
        const char *k = process_keys[i][0], *sub = process_keys[i][1];
        yaml_node_t *n = config_walk_get(w, map, k);
        size_t old;
        int r;

        if (n != NULL && sub != NULL)
            n = n->type == YAML_MAPPING_NODE ? config_walk_get(w, n, sub) : NULL;
        if (n == NULL)
            continue;
        old = sub ? config_walk_push(w, ".%s.%s", k, sub) : config_walk_push(w, ".%s", k);
        r = config_walk_fail(w, n, "one value serves every session: set sessions.%s%s%s instead", k,
                             sub ? "." : "", sub ? sub : "");
        config_walk_pop(w, old);
        return r;
    }
    return 0;
}

/* templates: {NAME: {keys of sessions:}, ...}. Each starts from the
 * built-in defaults, not from the sessions: block, so the order of the
 * file does not matter. */
int config_walk_templates(struct walk *w, yaml_node_t *n, const struct field *f, void *base)
{
    struct wg_sessions_cfg **dst = (struct wg_sessions_cfg **)((char *)base + f->off);
    size_t *dst_len = (size_t *)((char *)base + f->off_len);
    struct wg_sessions_cfg *v = NULL;
    size_t len = 0;
    int r = 0;

    if (config_walk_null(n))
        goto swap;
    if (n->type != YAML_MAPPING_NODE)
        return config_walk_fail(w, n, "expected a mapping of template names");
    len = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    v = calloc(len ? len : 1, sizeof *v);
    if (v == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < len && r == 0; i++) {
        yaml_node_pair_t *p = &n->data.mapping.pairs.start[i];
        yaml_node_t *k = yaml_document_get_node(w->doc, p->key);
        yaml_node_t *val = yaml_document_get_node(w->doc, p->value);
        const char *name = k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : "";
        size_t old = config_walk_push(w, ".%s", name);

        if (!name_ok(name))
            r = config_walk_fail(w, k,
                                 "invalid template name (use [a-z0-9][a-z0-9_-]*, at most %d)",
                                 WG_SESSION_TEMPLATE_MAX);
        else if (strcmp(name, "default") == 0)
            r = config_walk_fail(w, k,
                                 "\"default\" is the sessions: block; name this one otherwise");
        for (size_t j = 0; j < i && r == 0; j++)
            if (strcmp(v[j].name, name) == 0)
                r = config_walk_fail(w, k, "template \"%s\" is given twice", name);
        if (r == 0)
            r = config_sessions_defaults(&v[i], name);
        if (r == 0 && val->type != YAML_MAPPING_NODE)
            r = config_walk_fail(w, val, "expected a mapping");
        if (r == 0)
            r = config_walk_map(w, val, config_sessions_fields, &v[i]);
        if (r == 0)
            r = config_check_sessions(w, val, &v[i]);
        if (r == 0)
            r = refuse_process_keys(w, val);
        config_walk_pop(w, old);
    }
    if (r < 0) {
        config_free_templates(v, len);
        return r;
    }
swap:
    config_free_templates(*dst, *dst_len);
    *dst = v;
    *dst_len = len;
    return 0;
}

/* A list of names from a table -> a mask; null is the empty mask. hint
 * says which names exist, for the error. */
static int walk_name_mask(struct walk *w, yaml_node_t *n, const struct wg_override_name *names,
                          size_t names_len, const char *what, const char *hint, unsigned *ret)
{
    unsigned mask = 0;

    if (config_walk_null(n)) {
        *ret = 0;
        return 0;
    }
    if (n->type != YAML_SEQUENCE_NODE)
        return config_walk_fail(w, n, "expected a list");
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
         it++) {
        yaml_node_t *item = yaml_document_get_node(w->doc, *it);
        size_t old = config_walk_push(w, "[%zu]", (size_t)(it - n->data.sequence.items.start));
        const char *s;
        bool found = false;
        int r = config_walk_scalar(w, item, false, &s);

        for (size_t i = 0; r == 0 && i < names_len; i++)
            if (strcmp(s, names[i].name) == 0) {
                mask |= names[i].bit;
                found = true;
            }
        if (r == 0 && !found)
            r = config_walk_fail(w, item, "unknown %s \"%s\" (%s)", what, s, hint);
        config_walk_pop(w, old);
        if (r < 0)
            return r;
    }
    *ret = mask;
    return 0;
}

/* overridable: [cmd, labels, port, idle, save, limits] -> a mask. */
int config_walk_overrides(struct walk *w, yaml_node_t *n, const struct field *f, void *base)
{
    return walk_name_mask(w, n, wg_override_names, wg_override_names_len, "field",
                          "use cmd, labels, port, idle, save or limits; env is always allowed",
                          (unsigned *)((char *)base + f->off));
}

/* wake_on: [navigation, api, websocket] -> a mask; [] or null: nothing
 * wakes the session but the API. */
int config_walk_wake_on(struct walk *w, yaml_node_t *n, const struct field *f, void *base)
{
    return walk_name_mask(w, n, wg_wake_class_names, wg_wake_class_names_len, "request class",
                          "use navigation, api or websocket", (unsigned *)((char *)base + f->off));
}

const struct wg_sessions_cfg *wg_config_template(const struct wg_config *cfg, const char *name)
{
    if (name == NULL || name[0] == '\0' || strcmp(name, "default") == 0)
        return &cfg->sessions;
    for (size_t i = 0; i < cfg->templates_len; i++)
        if (strcmp(cfg->templates[i].name, name) == 0)
            return &cfg->templates[i];
    return NULL;
}

/* access: public or private; the default is private, so an unknown word
 * is an error rather than a guess. */
int config_check_template_access(struct walk *w, yaml_node_t *map, struct wg_sessions_cfg *t)
{
    if (t->access != NULL && strcmp(t->access, "public") != 0 &&
        strcmp(t->access, "private") != 0) {
        yaml_node_t *n = config_walk_get(w, map, "access");
        size_t old = config_walk_push(w, ".access");
        int r = config_walk_fail(w, n ? n : map, "\"%s\" is not public or private (the default)",
                                 t->access);

        config_walk_pop(w, old);
        return r;
    }
    t->access_public = t->access != NULL && strcmp(t->access, "public") == 0;
    return 0;
}

const struct wg_sessions_cfg *wg_config_template_or_default(const struct wg_config *cfg,
                                                            const char *name)
{
    const struct wg_sessions_cfg *t = wg_config_template(cfg, name);

    return t != NULL ? t : &cfg->sessions;
}

bool wg_config_any_public_template(const struct wg_config *cfg)
{
    if (cfg->sessions.access_public)
        return true;
    for (size_t i = 0; i < cfg->templates_len; i++)
        if (cfg->templates[i].access_public)
            return true;
    return false;
}

/* binds.allow: a path entry must be absolute, free of "..", and not the
 * root (which would allow every source); a volume name is plain text. */
int config_check_binds_allow(struct walk *w, yaml_node_t *map, const struct wg_sessions_cfg *t)
{
    yaml_node_t *binds = config_walk_get(w, map, "binds");
    yaml_node_t *allow =
        binds && binds->type == YAML_MAPPING_NODE ? config_walk_get(w, binds, "allow") : NULL;

    for (size_t i = 0; i < t->binds_allow_len; i++) {
        const char *a = t->binds_allow[i];
        const char *why = NULL;
        bool root = true;

        if (a[0] == '/') {
            for (const char *p = a; *p; p++)
                root &= *p == '/' || (*p == '.' && (p[1] == '/' || p[1] == '\0') && p[-1] == '/');
            if (strstr(a, "/../") || strcmp(a + strlen(a) - (strlen(a) >= 3 ? 3 : 0), "/..") == 0)
                why = "a path with \"..\" is refused";
            else if (root)
                why = "\"/\" would allow every source on the host";
        } else if (strchr(a, ':') || strchr(a, ' ')) {
            why = "a volume name has no ':' or space";
        }
        if (why != NULL) {
            size_t old = config_walk_push(w, ".binds.allow[%zu]", i);
            yaml_node_t *n =
                allow && allow->type == YAML_SEQUENCE_NODE &&
                        (size_t)(allow->data.sequence.items.top -
                                 allow->data.sequence.items.start) > i
                    ? yaml_document_get_node(w->doc, allow->data.sequence.items.start[i])
                    : map;
            int r = config_walk_fail(w, n, "%s", why);

            config_walk_pop(w, old);
            return r;
        }
    }
    return 0;
}
