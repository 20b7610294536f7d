/* common/container_spec.c - the container spec's one set of rules, its
 * encoder and decoder; see container_spec.h. */
#include "common/container_spec.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/labels.h"
#include "common/session.h"
#include "common/str.h"
#include "common/utf8.h"

void wg_container_spec_show_name(char *dst, size_t dstlen, const char *name)
{
    size_t o = 0;
    if (dstlen == 0)
        return;
    for (size_t i = 0; name[i] && o + 1 < dstlen && i < WG_CONTAINER_SPEC_NAME_SHOW_MAX; i++) {
        unsigned char ch = (unsigned char)name[i];
        dst[o++] = ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\' ? (char)ch : '?';
    }
    dst[o] = '\0';
}

int wg_container_spec_duration(const json_t *v, const char *field, uint64_t *ret_ms, char *err,
                               size_t errlen)
{
    if (!json_is_string(v) || wg_config_parse_duration(json_string_value(v), ret_ms) < 0) {
        wg_errf(err, errlen, "field \"%s\": must be a duration such as \"30s\" or \"20m\"", field);
        return -EINVAL;
    }
    return 0;
}

/* ---- the rules ------------------------------------------------------------------------- */

static bool is_abs_path(const char *s, size_t len)
{
    if (len == 0 || s[0] != '/')
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

static bool is_volume_name(const char *s, size_t len)
{
    if (len == 0 || len > 255)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        bool alnum =
            (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!alnum && (i == 0 || (ch != '_' && ch != '.' && ch != '-')))
            return false;
    }
    return true;
}

/* "host:container[:ro|rw]": host an absolute path or a volume name,
 * container an absolute path. */
static bool bind_ok(const char *s)
{
    const char *c1 = strchr(s, ':');
    if (c1 == NULL)
        return false;
    const char *c2 = strchr(c1 + 1, ':');
    size_t hl = (size_t)(c1 - s);
    size_t cl = c2 ? (size_t)(c2 - c1 - 1) : strlen(c1 + 1);
    if (!is_abs_path(s, hl) && !is_volume_name(s, hl))
        return false;
    if (!is_abs_path(c1 + 1, cl))
        return false;
    if (c2 != NULL && strcmp(c2 + 1, "ro") != 0 && strcmp(c2 + 1, "rw") != 0)
        return false;
    return true;
}

/* The text rule of a spec string, for err. */
#define TEXT_RULE "must be UTF-8 text of at most 4096 bytes without control characters"

static bool env_ok(const char *s)
{
    const char *eq = strchr(s, '=');
    return eq != NULL && eq != s;
}

static bool nonempty_ok(const char *s)
{
    return s[0] != '\0';
}

/* An array of at most WG_CONTAINER_SPEC_ITEMS_MAX strings, each passing
 * ok; shape says what ok wants, for err. */
static int check_strings(const json_t *v, const char *field, bool lines, bool (*ok)(const char *),
                         const char *shape, char *err, size_t errlen)
{
    size_t i;
    json_t *e;
    if (!json_is_array(v)) {
        wg_errf(err, errlen, "field \"%s\": must be an array of strings", field);
        return -EINVAL;
    }
    if (json_array_size(v) > WG_CONTAINER_SPEC_ITEMS_MAX) {
        wg_errf(err, errlen, "field \"%s\": has more than %d entries", field,
                WG_CONTAINER_SPEC_ITEMS_MAX);
        return -EINVAL;
    }
    json_array_foreach(v, i, e)
    {
        if (!json_is_string(e)) {
            wg_errf(err, errlen, "field \"%s[%zu]\": must be a string", field, i);
            return -EINVAL;
        }
        if (!ok(json_string_value(e))) {
            wg_errf(err, errlen, "field \"%s[%zu]\": must be %s", field, i, shape);
            return -EINVAL;
        }
        /* What the Docker client would refuse at the first wake. */
        if (!wg_text_ok(json_string_value(e), WG_TEXT_MAX, true, lines)) {
            wg_errf(err, errlen, "field \"%s[%zu]\": %s", field, i, TEXT_RULE);
            return -EINVAL;
        }
    }
    return 0;
}

static int check_cmd(const json_t *v, char *err, size_t errlen)
{
    return check_strings(v, "cmd", true, nonempty_ok, "a non-empty string", err, errlen);
}

static int check_env(const json_t *v, char *err, size_t errlen)
{
    return check_strings(v, "env", false, env_ok, "\"NAME=value\"", err, errlen);
}

static int check_binds(const json_t *v, char *err, size_t errlen)
{
    return check_strings(v, "binds", false, bind_ok,
                         "\"host:container[:ro|rw]\" (absolute paths, or a volume name for host)",
                         err, errlen);
}

static int check_labels(const json_t *v, char *err, size_t errlen)
{
    static const char prefix[] = WG_LABEL_PREFIX;
    const char *k;
    json_t *e;
    char name[WG_CONTAINER_SPEC_NAME_SHOW_MAX + 1];
    if (!json_is_object(v)) {
        wg_errf(err, errlen, "field \"labels\": must be an object of strings");
        return -EINVAL;
    }
    if (json_object_size(v) > WG_CONTAINER_SPEC_ITEMS_MAX) {
        wg_errf(err, errlen, "field \"labels\": has more than %d entries",
                WG_CONTAINER_SPEC_ITEMS_MAX);
        return -EINVAL;
    }
    json_object_foreach((json_t *)v, k, e)
    {
        wg_container_spec_show_name(name, sizeof(name), k);
        if (k[0] == '\0') {
            wg_errf(err, errlen, "field \"labels\": keys must not be empty");
            return -EINVAL;
        }
        if (strncmp(k, prefix, sizeof(prefix) - 1) == 0) {
            wg_errf(err, errlen,
                    "field \"labels.%s\": keys starting with \"" WG_LABEL_PREFIX "\" are reserved",
                    name);
            return -EINVAL;
        }
        if (!json_is_string(e)) {
            wg_errf(err, errlen, "field \"labels.%s\": must be a string", name);
            return -EINVAL;
        }
        if (!wg_text_ok(k, 256, false, false)) {
            wg_errf(err, errlen,
                    "field \"labels.%s\": keys must be UTF-8 text of at most 256 "
                    "bytes without control characters",
                    name);
            return -EINVAL;
        }
        if (!wg_text_ok(json_string_value(e), WG_TEXT_MAX, true, false)) {
            wg_errf(err, errlen, "field \"labels.%s\": " TEXT_RULE, name);
            return -EINVAL;
        }
    }
    return 0;
}

/* One member of save; k is known to be one of the four. */
static int check_save_member(const char *k, const json_t *e, char *err, size_t errlen)
{
    uint64_t ms;
    if (strcmp(k, "command") == 0) {
        if (check_strings(e, "save.command", true, nonempty_ok, "a non-empty string", err, errlen) <
            0)
            return -EINVAL;
        if (json_array_size(e) == 0) {
            wg_errf(err, errlen, "field \"save.command\": must not be empty");
            return -EINVAL;
        }
    } else if (strcmp(k, "timeout") == 0) {
        if (wg_container_spec_duration(e, "save.timeout", &ms, err, errlen) < 0)
            return -EINVAL;
        if (ms == 0) {
            wg_errf(err, errlen, "field \"save.timeout\": must be more than 0s");
            return -EINVAL;
        }
    } else if (strcmp(k, "path") == 0) {
        const char *s = json_string_value(e);
        if (s == NULL || !is_abs_path(s, strlen(s))) {
            wg_errf(err, errlen, "field \"save.path\": must be an absolute path");
            return -EINVAL;
        }
    } else {
        const char *s = json_string_value(e);
        if (s == NULL || (strcmp(s, "keep_awake") != 0 && strcmp(s, "stop") != 0)) {
            wg_errf(err, errlen, "field \"save.on_failure\": must be \"keep_awake\" or \"stop\"");
            return -EINVAL;
        }
    }
    return 0;
}

static int check_save(const json_t *v, char *err, size_t errlen)
{
    static const char *const known[] = {"command", "timeout", "path", "on_failure", NULL};
    const char *k;
    json_t *e;
    char name[WG_CONTAINER_SPEC_NAME_SHOW_MAX + 1];
    if (!json_is_object(v)) {
        wg_errf(err, errlen, "field \"save\": must be an object");
        return -EINVAL;
    }
    json_object_foreach((json_t *)v, k, e)
    {
        bool is_known = false;
        if (json_is_null(e))
            continue;
        for (size_t i = 0; known[i] && !is_known; i++)
            is_known = strcmp(k, known[i]) == 0;
        if (!is_known) {
            wg_container_spec_show_name(name, sizeof(name), k);
            wg_errf(err, errlen, "unknown field \"save.%s\"", name);
            return -EINVAL;
        }
        if (check_save_member(k, e, err, errlen) < 0)
            return -EINVAL;
    }
    return 0;
}

/* The members, in the order they are checked and encoded. */
static const struct {
    const char *name;
    int (*check)(const json_t *v, char *err, size_t errlen);
} members[] = {
    {"cmd", check_cmd},     {"env", check_env},   {"labels", check_labels},
    {"binds", check_binds}, {"save", check_save},
};
#define N_MEMBERS (sizeof(members) / sizeof(members[0]))

/* The member, or NULL when absent or null. */
static json_t *member(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_null(v) ? NULL : v;
}

static int check_members(const json_t *obj, char *err, size_t errlen)
{
    for (size_t i = 0; i < N_MEMBERS; i++) {
        const json_t *v = member(obj, members[i].name);
        if (v != NULL && members[i].check(v, err, errlen) < 0)
            return -EINVAL;
    }
    return 0;
}

/* ---- encode ---------------------------------------------------------------------------- */

int wg_container_spec_check(const json_t *obj, char *err, size_t errlen)
{
    return check_members(obj, err, errlen);
}

int wg_container_spec_encode(const json_t *obj, char **ret_text, char *err, size_t errlen)
{
    json_t *spec = NULL, *v;
    char *text = NULL;
    int rc = check_members(obj, err, errlen);

    if (rc < 0)
        goto out;
    for (size_t i = 0; i < N_MEMBERS; i++) {
        if ((v = member(obj, members[i].name)) == NULL)
            continue;
        if ((spec == NULL && (spec = json_object()) == NULL) ||
            json_object_set(spec, members[i].name, v) < 0) {
            rc = -ENOMEM;
            goto out;
        }
    }
    if (spec != NULL) {
        text = json_dumps(spec, JSON_COMPACT | JSON_ENSURE_ASCII);
        if (text == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        if (strlen(text) > WG_SESSION_SPEC_MAX) {
            wg_errf(err, errlen,
                    "body: cmd, env, labels, binds and save together are over %d bytes of JSON",
                    WG_SESSION_SPEC_MAX);
            rc = -EINVAL;
            goto out;
        }
    }
    *ret_text = text;
    text = NULL;
out:
    free(text);
    json_decref(spec);
    return rc;
}

/* ---- decode ---------------------------------------------------------------------------- */

static void strv_free(char **v)
{
    if (v == NULL)
        return;
    for (size_t i = 0; v[i]; i++)
        free(v[i]);
    free(v);
}

void wg_container_spec_release(struct wg_container_spec *spec)
{
    if (spec == NULL)
        return;
    strv_free(spec->cmd);
    strv_free(spec->env);
    strv_free(spec->labels);
    strv_free(spec->binds);
    memset(spec, 0, sizeof(*spec));
}

/* A checked array of strings (NULL: absent) into a NULL-terminated vector. */
static int strv_from(const json_t *a, char ***ret)
{
    size_t n = json_array_size(a);
    char **v;
    if (a == NULL)
        return 0;
    v = calloc(n + 1, sizeof(*v));
    if (v == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if ((v[i] = strdup(json_string_value(json_array_get(a, i)))) == NULL) {
            strv_free(v);
            return -ENOMEM;
        }
    }
    *ret = v;
    return 0;
}

/* A checked labels object (NULL: absent) into key, value, ..., NULL. */
static int labels_from(json_t *o, char ***ret)
{
    const char *k;
    json_t *e;
    size_t n = 0;
    char **v;
    if (o == NULL)
        return 0;
    v = calloc(2 * json_object_size(o) + 1, sizeof(*v));
    if (v == NULL)
        return -ENOMEM;
    json_object_foreach(o, k, e)
    {
        if ((v[n] = strdup(k)) == NULL || (v[n + 1] = strdup(json_string_value(e))) == NULL) {
            strv_free(v);
            return -ENOMEM;
        }
        n += 2;
    }
    *ret = v;
    return 0;
}

/* The caller's limits the admin API checked against its template's maxima
 * (admin/api_policy.c); what is not a positive integer is the template's. */
static void limits_from(const json_t *lim, struct wg_container_spec *sp)
{
    json_t *v;

    if (!json_is_object(lim))
        return;
    if (json_is_integer(v = json_object_get(lim, "memory")) && json_integer_value(v) > 0)
        sp->memory_bytes = (uint64_t)json_integer_value(v);
    if (json_is_integer(v = json_object_get(lim, "nano_cpus")) && json_integer_value(v) > 0)
        sp->nano_cpus = (uint64_t)json_integer_value(v);
    if (json_is_integer(v = json_object_get(lim, "pids")) && json_integer_value(v) > 0 &&
        json_integer_value(v) <= UINT32_MAX)
        sp->pids = (unsigned)json_integer_value(v);
}

static int spec_from(json_t *root, struct wg_container_spec *sp)
{
    json_t *cmd = member(root, "cmd");
    /* [] means the image's CMD, as absent. */
    if (cmd != NULL && json_array_size(cmd) == 0)
        cmd = NULL;
    if (strv_from(cmd, &sp->cmd) < 0 || strv_from(member(root, "env"), &sp->env) < 0 ||
        strv_from(member(root, "binds"), &sp->binds) < 0 ||
        labels_from(member(root, "labels"), &sp->labels) < 0)
        return -ENOMEM;
    limits_from(member(root, "limits"), sp);
    return 0;
}

int wg_container_spec_decode(const char *text, struct wg_container_spec *ret_spec, char *err,
                             size_t errlen)
{
    struct wg_container_spec sp = {0};
    json_error_t jerr;
    json_t *root = NULL;
    int rc = 0;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (text == NULL || text[0] == '\0')
        goto done;
    root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        wg_errf(err, errlen, "spec is not JSON: %s", jerr.text);
        rc = -EINVAL;
        goto out;
    }
    if (!json_is_object(root)) {
        wg_errf(err, errlen, "spec must be a JSON object");
        rc = -EINVAL;
        goto out;
    }
    rc = check_members(root, err, errlen);
    if (rc == 0)
        rc = spec_from(root, &sp);
    if (rc < 0)
        goto out;
done:
    *ret_spec = sp;
    memset(&sp, 0, sizeof(sp));
out:
    wg_container_spec_release(&sp);
    json_decref(root);
    return rc;
}
