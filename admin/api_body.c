/* admin/api_body.c - request bodies of the admin API: loaded as one JSON
 * object and validated strictly, so that a 400 names the field and nothing
 * is written for a bad request. The container spec's members follow the
 * rules of common/container_spec, the ones the waker reads them with. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/api_int.h"
#include "common/container_spec.h"
#include "common/str.h"

#define KEEPALIVE_MAX_MS (24ull * 60 * 60 * 1000)

/* The member, or NULL when absent or null. */
static json_t *member(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_null(v) ? NULL : v;
}

/* A request body that must be one JSON object (duplicate keys refused).
 * NULL with err set (not_object when it is empty or not an object). */
static json_t *load_object(const char *body, size_t len, const char *not_object, char *err,
                           size_t errlen)
{
    json_error_t je;
    json_t *root;

    if (body == NULL || len == 0) {
        wg_errf(err, errlen, "%s", not_object);
        return NULL;
    }
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) {
        wg_errf(err, errlen, "body: invalid JSON at line %d column %d: %s", je.line, je.column,
                je.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        wg_errf(err, errlen, "%s", not_object);
        return NULL;
    }
    return root;
}

/* ---- POST /v1/sessions --------------------------------------------------------------------- */

static int check_known(const json_t *root, char *err, size_t errlen)
{
    static const char *const known[] = {"id",     "template", "image", "cmd",  "env",
                                        "labels", "port",     "binds", "idle", "save",
                                        "limits", "host",     NULL};
    const char *k;
    json_t *v;
    char name[WG_CONTAINER_SPEC_NAME_SHOW_MAX + 1];
    json_object_foreach((json_t *)root, k, v)
    {
        bool is_known = false;
        for (size_t i = 0; known[i] && !is_known; i++)
            is_known = strcmp(k, known[i]) == 0;
        if (!is_known) {
            wg_container_spec_show_name(name, sizeof(name), k);
            wg_errf(err, errlen, "unknown field \"%s\"", name);
            return -EINVAL;
        }
    }
    return 0;
}

static bool image_valid(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > WG_SESSION_IMAGE_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return false;
    return true;
}

/* The template the body names ("template", default "default"). */
static const struct wg_sessions_cfg *take_template(const json_t *root, const struct wg_config *cfg,
                                                   struct wg_api_create *c, char *err,
                                                   size_t errlen)
{
    const struct wg_sessions_cfg *t;
    json_t *v = member(root, "template");
    char name[WG_CONTAINER_SPEC_NAME_SHOW_MAX + 1];

    if (v != NULL && !json_is_string(v)) {
        wg_errf(err, errlen, "field \"template\": must be a string");
        return NULL;
    }
    t = wg_config_template(cfg, v ? json_string_value(v) : "default");
    if (t == NULL) {
        wg_container_spec_show_name(name, sizeof(name), json_string_value(v));
        wg_errf(err, errlen, "field \"template\": unknown template \"%s\"", name);
        return NULL;
    }
    snprintf(c->template_name, sizeof(c->template_name), "%s", t->name);
    return t;
}

/* id (required), image and port (defaults from the template t). */
static int take_identity(const json_t *root, const struct wg_sessions_cfg *t,
                         struct wg_api_create *c, char *err, size_t errlen)
{
    json_t *v = member(root, "id");
    if (v == NULL) {
        wg_errf(err, errlen, "field \"id\": required");
        return -EINVAL;
    }
    if (!json_is_string(v) || !wg_session_id_valid(json_string_value(v), json_string_length(v))) {
        wg_errf(err, errlen, "field \"id\": must be a string matching ^[a-z0-9][a-z0-9_-]{0,62}$");
        return -EINVAL;
    }
    memcpy(c->id, json_string_value(v), json_string_length(v) + 1);

    v = member(root, "image");
    const char *image = v ? json_string_value(v) : t->image;
    if (v != NULL && (image == NULL || !image_valid(image))) {
        wg_errf(err, errlen,
                "field \"image\": must be a string of 1..255 printable ASCII characters");
        return -EINVAL;
    }
    if (image == NULL || !image_valid(image)) {
        wg_errf(err, errlen, "field \"image\": required (sessions.image is not usable)");
        return -EINVAL;
    }
    if (!wg_api_policy_image(t, image)) {
        wg_errf(err, errlen,
                "field \"image\": \"%s\" is not allowed by template \"%s\" (its image or "
                "images)",
                image, t->name);
        return -EINVAL;
    }
    snprintf(c->image, sizeof(c->image), "%s", image);

    v = member(root, "port");
    if (v == NULL) {
        c->port = (uint16_t)t->port;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 65535) {
        wg_errf(err, errlen, "field \"port\": must be an integer 1..65535");
        return -EINVAL;
    }
    c->port = (uint16_t)json_integer_value(v);
    return 0;
}

/* The idle overrides: {"pause_after": DURATION, "stop_after": DURATION}. */
static int take_idle(const json_t *v, struct wg_api_create *c, char *err, size_t errlen)
{
    const char *k;
    json_t *e;
    char name[WG_CONTAINER_SPEC_NAME_SHOW_MAX + 1];
    if (!json_is_object(v)) {
        wg_errf(err, errlen, "field \"idle\": must be an object");
        return -EINVAL;
    }
    json_object_foreach((json_t *)v, k, e)
    {
        if (json_is_null(e))
            continue;
        if (strcmp(k, "pause_after") == 0) {
            if (wg_container_spec_duration(e, "idle.pause_after", &c->pause_after_ms, err, errlen) <
                0)
                return -EINVAL;
            c->has_pause_after = true;
        } else if (strcmp(k, "stop_after") == 0) {
            if (wg_container_spec_duration(e, "idle.stop_after", &c->stop_after_ms, err, errlen) <
                0)
                return -EINVAL;
            c->has_stop_after = true;
        } else {
            wg_container_spec_show_name(name, sizeof(name), k);
            wg_errf(err, errlen, "unknown field \"idle.%s\"", name);
            return -EINVAL;
        }
    }
    return 0;
}

/* The fields a caller gave that the template does not let it set. */
static int check_overridable(const json_t *root, const struct wg_sessions_cfg *t, char *err,
                             size_t errlen)
{
    for (size_t i = 0; i < wg_override_names_len; i++) {
        const struct wg_override_name *o = &wg_override_names[i];
        if (member(root, o->name) && !(t->overridable & o->bit))
            return wg_errf(err, errlen,
                           "field \"%s\": template \"%s\" does not let a caller set it "
                           "(its overridable list)",
                           o->name, t->name);
    }
    return 0;
}

/* Every bind's source against the template's allow-list. The shape of
 * each entry is the container spec's to check. */
static int check_binds(const json_t *root, const struct wg_sessions_cfg *t, char *err,
                       size_t errlen)
{
    json_t *binds = member(root, "binds"), *b;
    char why[API_ERR_MAX];
    size_t i;

    if (!json_is_array(binds))
        return 0;
    json_array_foreach(binds, i, b)
    {
        if (!json_is_string(b))
            continue;
        if (wg_api_policy_bind(t, json_string_value(b), why, sizeof why) < 0)
            return wg_errf(err, errlen, "field \"binds[%zu]\": %s", i, why);
    }
    return 0;
}

/* The template's cmd when the caller gave none; its env before the
 * caller's, a caller's NAME= replacing the template's. */
static int fill_from_template(json_t *root, const struct wg_sessions_cfg *t)
{
    json_t *env = member(root, "env"), *merged, *e;
    size_t i;
    int bad = 0;

    if (t->cmd != NULL && member(root, "cmd") == NULL) {
        json_t *cmd = json_array();

        for (size_t k = 0; k < t->cmd_len; k++)
            bad |= json_array_append_new(cmd, json_string(t->cmd[k]));
        bad |= json_object_set_new(root, "cmd", cmd);
    }
    if (t->env_len == 0 || (env != NULL && !json_is_array(env)))
        return bad ? -ENOMEM : 0;
    merged = json_array();
    for (size_t k = 0; k < t->env_len; k++) {
        const char *eq = strchr(t->env[k], '=');
        size_t n = eq ? (size_t)(eq - t->env[k]) + 1 : strlen(t->env[k]);
        bool replaced = false;

        json_array_foreach(env, i, e) replaced |=
            json_is_string(e) && strncmp(json_string_value(e), t->env[k], n) == 0;
        if (!replaced)
            bad |= json_array_append_new(merged, json_string(t->env[k]));
    }
    if (env != NULL)
        bad |= json_array_extend(merged, env);
    bad |= json_object_set_new(root, "env", merged);
    return bad ? -ENOMEM : 0;
}

int wg_api_parse_create(const char *body, size_t len, const struct wg_config *cfg,
                        struct wg_api_create *out, char *err, size_t errlen)
{
    const struct wg_sessions_cfg *t = NULL;
    struct wg_api_create c;
    struct wg_session_update u;
    struct wg_session_hash h;
    char why[API_ERR_MAX];
    json_t *root = NULL, *v;
    int rc = -EINVAL;

    memset(&c, 0, sizeof(c));
    root = load_object(body, len, "body: must be a JSON object", err, errlen);
    if (root == NULL || check_known(root, err, errlen) < 0 ||
        (t = take_template(root, cfg, &c, err, errlen)) == NULL ||
        take_identity(root, t, &c, err, errlen) < 0)
        goto out;
    /* The shape of the caller's members first, so an error names the first
     * malformed one; then what the template allows. */
    rc = wg_container_spec_check(root, err, errlen);
    if (rc < 0)
        goto out;
    rc = -EINVAL;
    if (check_overridable(root, t, err, errlen) < 0 || check_binds(root, t, err, errlen) < 0)
        goto out;
    if ((v = member(root, "limits")) && api_limits_take(v, t, &c, err, errlen) < 0)
        goto out;
    if (fill_from_template(root, t) < 0) {
        rc = -ENOMEM;
        goto out;
    }
    rc = wg_container_spec_encode(root, &c.spec, err, errlen);
    if (rc == 0)
        rc = api_limits_into_spec(&c, err, errlen);
    if (rc < 0)
        goto out;
    rc = -EINVAL;
    if ((v = member(root, "idle")) && take_idle(v, &c, err, errlen) < 0)
        goto out;
    /* An operator's choice of host; placement checks that it is live. */
    if ((v = member(root, "host")) != NULL) {
        const char *hs = json_string_value(v);
        if (!hs || !wg_session_host_valid(hs, strlen(hs)) || strlen(hs) > WG_STORE_NAME_MAX) {
            wg_errf(err, errlen,
                    "field \"host\": must be an orchestrator name "
                    "(^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$)");
            goto out;
        }
        snprintf(c.host, sizeof(c.host), "%s", hs);
    }
    c.place_labels = t->placement.labels_json;
    c.pin = t->placement.pin;
    /* A named template's idle tiers are the session's own, so they hold
     * whatever the sessions: block says. */
    if (t != &cfg->sessions && !c.has_pause_after) {
        c.has_pause_after = true;
        c.pause_after_ms = t->idle.pause_after_ms;
    }
    if (t != &cfg->sessions && !c.has_stop_after) {
        c.has_stop_after = true;
        c.stop_after_ms = t->idle.stop_after_ms;
    }
    /* The configuration's own rule, for the tiers as they will apply. */
    uint64_t pause = c.has_pause_after ? c.pause_after_ms : t->idle.pause_after_ms;
    uint64_t stop = c.has_stop_after ? c.stop_after_ms : t->idle.stop_after_ms;
    if (pause > 0 && stop > 0 && pause >= stop) {
        wg_errf(err, errlen,
                "field \"idle.pause_after\": %" PRIu64 "ms is not shorter than idle.stop_after "
                "(%" PRIu64 "ms), so the pause would never happen",
                pause, stop);
        goto out;
    }
    /* What the store will check again; a failure here is ours to report. */
    wg_api_create_fields(&c, "localhost", &u);
    if (wg_session_update_encode(&u, &h, why, sizeof(why)) < 0) {
        wg_errf(err, errlen, "body: %s", why);
        goto out;
    }
    *out = c;
    memset(&c, 0, sizeof(c));
    rc = 0;
out:
    json_decref(root);
    wg_api_create_release(&c);
    return rc;
}

void wg_api_create_release(struct wg_api_create *c)
{
    if (c == NULL)
        return;
    free(c->spec);
    c->spec = NULL;
}

void wg_api_create_fields(const struct wg_api_create *c, const char *host,
                          struct wg_session_update *u)
{
    memset(u, 0, sizeof(*u));
    u->set = WG_SF_IMAGE | WG_SF_PORT;
    if (host != NULL) {
        u->set |= WG_SF_HOST;
        u->host = host;
    }
    u->image = c->image;
    if (c->template_name[0]) {
        u->set |= WG_SF_TEMPLATE;
        u->template_name = c->template_name;
    }
    u->port = c->port;
    if (c->spec != NULL) {
        u->set |= WG_SF_SPEC;
        u->spec = c->spec;
    }
    if (c->has_pause_after) {
        u->set |= WG_SF_IDLE_PAUSE_AFTER;
        u->has_idle_pause_after = true;
        u->idle_pause_after_ms = c->pause_after_ms;
    }
    if (c->has_stop_after) {
        u->set |= WG_SF_IDLE_STOP_AFTER;
        u->has_idle_stop_after = true;
        u->idle_stop_after_ms = c->stop_after_ms;
    }
}

/* ---- POST /v1/sessions/{id}/keepalive ------------------------------------------------------ */

/* One member of a keepalive body; *given names the one seen before, if
 * any. Returns 0 (with *ms set unless v is null) or -EINVAL. */
static int keepalive_member(const char *k, const json_t *v, const char **given, uint64_t *ms,
                            char *err, size_t errlen)
{
    char name[WG_CONTAINER_SPEC_NAME_SHOW_MAX + 1];
    bool text = strcmp(k, "duration") == 0;
    if (!text && strcmp(k, "duration_ms") != 0) {
        wg_container_spec_show_name(name, sizeof(name), k);
        wg_errf(err, errlen, "unknown field \"%s\"", name);
        return -EINVAL;
    }
    if (json_is_null(v))
        return 0;
    if (*given != NULL) {
        wg_errf(err, errlen, "fields \"duration\" and \"duration_ms\": give one");
        return -EINVAL;
    }
    *given = text ? "duration" : "duration_ms";
    if (text)
        return wg_container_spec_duration(v, "duration", ms, err, errlen);
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        wg_errf(err, errlen, "field \"duration_ms\": must be an integer (milliseconds)");
        return -EINVAL;
    }
    *ms = (uint64_t)json_integer_value(v);
    return 0;
}

int api_parse_keepalive(const char *body, size_t len, uint64_t *ret_ms, char *err, size_t errlen)
{
    json_t *root = NULL, *v;
    const char *k, *given = NULL;
    uint64_t ms = 0;
    int rc = -EINVAL;

    root = load_object(body, len, "body: must be a JSON object with \"duration\"", err, errlen);
    if (root == NULL)
        goto out;
    json_object_foreach(root, k, v)
    {
        if (keepalive_member(k, v, &given, &ms, err, errlen) < 0)
            goto out;
    }
    if (given == NULL) {
        wg_errf(err, errlen, "field \"duration\": required");
        goto out;
    }
    if (ms == 0 || ms > KEEPALIVE_MAX_MS) {
        wg_errf(err, errlen, "field \"%s\": must be more than 0 and at most 24h", given);
        goto out;
    }
    *ret_ms = ms;
    rc = 0;
out:
    json_decref(root);
    return rc;
}
