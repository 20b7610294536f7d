/* orchestrator/docker_json.c - the Docker client's pure parts on the JSON
 * side: what may go into a request (ids, names, text), the request bodies
 * (create, exec) and the decoders of the answers (events, inspect, list).
 * No I/O: the unit test walks them directly. See docker_int.h. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/labels.h"
#include "common/utf8.h"
#include "orchestrator/docker_int.h"
#include "common/str.h"

/* ---- what may go into a request ------------------------------------------------------------ */

static bool is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool wg_docker_ref_valid(const char *ref)
{
    size_t n;

    if (!ref || !is_alnum((unsigned char)ref[0]))
        return false;
    n = strlen(ref);
    if (n > WG_DOCKER_REF_MAX)
        return false;
    for (size_t i = 1; i < n; i++) {
        unsigned char c = (unsigned char)ref[i];
        if (!is_alnum(c) && c != '_' && c != '.' && c != '-')
            return false;
    }
    return true;
}

bool docker_is_full_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n != 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

bool docker_session_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_alnum(c) && c != '_' && c != '-')
            return false;
    }
    return true;
}

bool docker_text_ok(const char *s, size_t max, bool empty_ok)
{
    return wg_text_ok(s, max, empty_ok, false);
}

const char *docker_json_str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* ---- time ----------------------------------------------------------------------------------- */

static int digits(const char **p, int n)
{
    int v = 0;

    for (int i = 0; i < n; i++, (*p)++) {
        if (**p < '0' || **p > '9')
            return -1;
        v = v * 10 + (**p - '0');
    }
    return v;
}

int64_t docker_rfc3339_ms(const char *s)
{
    const char *p = s;
    struct tm tm;
    int Y, M, D, h, m, sec, ms = 0, off = 0;
    time_t t;

    if (!s)
        return 0;
    memset(&tm, 0, sizeof(tm));
    if ((Y = digits(&p, 4)) < 0 || *p++ != '-' || (M = digits(&p, 2)) < 0 || *p++ != '-' ||
        (D = digits(&p, 2)) < 0 || (*p != 'T' && *p != 't') || (p++, (h = digits(&p, 2)) < 0) ||
        *p++ != ':' || (m = digits(&p, 2)) < 0 || *p++ != ':' || (sec = digits(&p, 2)) < 0)
        return 0;
    if (*p == '.') {
        int scale = 100;
        p++;
        if (*p < '0' || *p > '9')
            return 0;
        for (; *p >= '0' && *p <= '9'; p++) {
            ms += (*p - '0') * scale;
            scale /= 10;
        }
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if ((oh = digits(&p, 2)) < 0 || *p++ != ':' || (om = digits(&p, 2)) < 0)
            return 0;
        off = sign * (oh * 60 + om);
    } else {
        return 0;
    }
    if (*p || Y < 1970 || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
        return 0;
    tm.tm_year = Y - 1900;
    tm.tm_mon = M - 1;
    tm.tm_mday = D;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = sec;
    t = timegm(&tm);
    if (t == (time_t)-1)
        return 0;
    return (int64_t)t * 1000 + ms - (int64_t)off * 60000;
}

/* ---- answers: events, inspect, list, exec ---------------------------------------------------- */

int docker_event_from_json(json_t *root, struct wg_docker_event *ev)
{
    json_t *actor, *attrs, *t;
    const char *s;

    memset(ev, 0, sizeof(*ev));
    if (!json_is_object(root))
        return -EBADMSG;
    ev->kind = WG_DOCKER_EVENT;
    ev->type = docker_json_str(root, "Type");
    ev->action = docker_json_str(root, "Action");
    if (!ev->action[0])
        ev->action = docker_json_str(root, "status"); /* the pre-1.22 field */
    actor = json_object_get(root, "Actor");
    ev->id = docker_json_str(actor, "ID");
    if (!ev->id[0])
        ev->id = docker_json_str(root, "id");
    attrs = json_object_get(actor, "Attributes");
    ev->attributes = json_is_object(attrs) ? attrs : NULL;
    if (!ev->action[0] || !ev->id[0])
        return -EBADMSG;
    if (!ev->type[0])
        ev->type = "container";
    ev->name = docker_json_str(attrs, "name");
    s = json_string_value(json_object_get(attrs, WG_LABEL_SESSION));
    ev->session = s;
    ev->exit_code = -1;
    s = json_string_value(json_object_get(attrs, "exitCode"));
    if (s && *s) {
        char *end;
        long v;
        errno = 0;
        v = strtol(s, &end, 10);
        if (!errno && !*end && v >= INT_MIN && v <= INT_MAX)
            ev->exit_code = (int)v;
    }
    if (strncmp(ev->action, "health_status:", 14) == 0) {
        ev->health = ev->action + 14;
        while (*ev->health == ' ')
            ev->health++;
    }
    t = json_object_get(root, "timeNano");
    if (json_is_integer(t))
        ev->time_ns = (int64_t)json_integer_value(t);
    else if (json_is_integer(t = json_object_get(root, "time")))
        ev->time_ns = (int64_t)json_integer_value(t) * 1000000000;
    return 0;
}

/* An object at root[key], created empty when absent or not an object, so
 * that callers always get one. NULL only when out of memory. */
static json_t *object_at(json_t *parent, const char *key)
{
    json_t *o = json_object_get(parent, key);

    if (json_is_object(o))
        return o;
    if (!json_is_object(parent) || json_object_set_new(parent, key, json_object()) < 0)
        return NULL;
    return json_object_get(parent, key);
}

static const char *container_ip(json_t *net)
{
    const char *ip = docker_json_str(net, "IPAddress");
    json_t *nets = json_object_get(net, "Networks"), *v;
    const char *k;

    if (ip[0])
        return ip;
    ip = docker_json_str(json_object_get(nets, "bridge"), "IPAddress");
    if (ip[0])
        return ip;
    json_object_foreach(nets, k, v)
    {
        ip = docker_json_str(v, "IPAddress");
        if (ip[0])
            return ip;
    }
    return "";
}

int docker_container_from_json(json_t *root, struct wg_docker_container *c)
{
    json_t *state, *config, *health;
    const char *name;

    memset(c, 0, sizeof(*c));
    state = json_object_get(root, "State");
    c->id = docker_json_str(root, "Id");
    if (!json_is_object(state) || !c->id[0])
        return -EBADMSG;
    name = docker_json_str(root, "Name");
    c->name = name[0] == '/' ? name + 1 : name;
    config = object_at(root, "Config");
    c->image = docker_json_str(config, "Image");
    c->tty = json_is_true(json_object_get(config, "Tty"));
    c->labels = object_at(config, "Labels");
    if (!c->labels)
        return -ENOMEM;
    c->status = docker_json_str(state, "Status");
    c->running = json_is_true(json_object_get(state, "Running"));
    c->paused = json_is_true(json_object_get(state, "Paused"));
    c->restarting = json_is_true(json_object_get(state, "Restarting"));
    c->oom_killed = json_is_true(json_object_get(state, "OOMKilled"));
    c->dead = json_is_true(json_object_get(state, "Dead"));
    c->exit_code = (int)json_integer_value(json_object_get(state, "ExitCode"));
    c->pid = (int)json_integer_value(json_object_get(state, "Pid"));
    c->error = docker_json_str(state, "Error");
    health = json_object_get(state, "Health");
    c->health = json_is_object(health) ? docker_json_str(health, "Status") : NULL;
    c->ip = container_ip(json_object_get(root, "NetworkSettings"));
    c->started_at = docker_json_str(state, "StartedAt");
    c->finished_at = docker_json_str(state, "FinishedAt");
    c->started_ms = docker_rfc3339_ms(c->started_at);
    c->finished_ms = docker_rfc3339_ms(c->finished_at);
    return 0;
}

int docker_summaries_from_json(json_t *root, struct wg_docker_summary **ret, size_t *ret_n)
{
    struct wg_docker_summary *v;
    size_t n, i;
    json_t *row;

    *ret = NULL;
    *ret_n = 0;
    if (!json_is_array(root))
        return -EBADMSG;
    n = json_array_size(root);
    if (n == 0)
        return 0;
    v = calloc(n, sizeof(*v));
    if (!v)
        return -ENOMEM;
    json_array_foreach(root, i, row)
    {
        const char *name = json_string_value(json_array_get(json_object_get(row, "Names"), 0));
        v[i].id = docker_json_str(row, "Id");
        if (!json_is_object(row) || !v[i].id[0]) {
            free(v);
            return -EBADMSG;
        }
        name = name ? name : "";
        v[i].name = name[0] == '/' ? name + 1 : name;
        v[i].image = docker_json_str(row, "Image");
        v[i].state = docker_json_str(row, "State");
        v[i].status = docker_json_str(row, "Status");
        v[i].created = (int64_t)json_integer_value(json_object_get(row, "Created"));
        v[i].labels = object_at(row, "Labels");
        if (!v[i].labels) {
            free(v);
            return -ENOMEM;
        }
    }
    *ret = v;
    *ret_n = n;
    return 0;
}

/* The Id of a create answer (a container) or an exec create answer. */
const char *docker_id_from_json(json_t *root)
{
    const char *id = json_string_value(json_object_get(root, "Id"));

    return docker_is_full_id(id) ? id : NULL;
}

/* ---- request bodies ------------------------------------------------------------------------- */

/* A JSON array of the NULL-terminated strings, each checked by docker_text_ok(). */
static int string_array(const char *const *v, const char *what, bool empty_items_ok, json_t **ret,
                        char *err, size_t errlen)
{
    json_t *a = json_array();
    int rc = 0;

    if (!a)
        return -ENOMEM;
    bool lines = strcmp(what, "argv") == 0 || strcmp(what, "cmd") == 0;

    for (size_t i = 0; v[i]; i++) {
        if (!wg_text_ok(v[i], DOCKER_TEXT_MAX, empty_items_ok, lines)) {
            rc =
                wg_errf(err, errlen, "%s[%zu] is empty, too long, or not printable UTF-8", what, i);
            goto out;
        }
        if (json_array_append_new(a, json_string(v[i])) < 0) {
            rc = -ENOMEM;
            goto out;
        }
    }
    *ret = a;
    return 0;
out:
    json_decref(a);
    return rc;
}

/* obj[key] = the strings as an array (string_array()). */
static int set_strings(json_t *obj, const char *key, const char *const *v, const char *what,
                       bool empty_items_ok, char *err, size_t errlen)
{
    json_t *a = NULL;
    int rc = string_array(v, what, empty_items_ok, &a, err, errlen);

    if (rc < 0)
        return rc;
    return json_object_set_new(obj, key, a) < 0 ? -ENOMEM : 0;
}

/* The fields that are one value each. */
static int check_spec(const struct wg_docker_spec *s, char *err, size_t errlen)
{
    if (!s)
        return wg_errf(err, errlen, "no spec");
    if (!docker_session_valid(s->session))
        return wg_errf(err, errlen, "session id must be 1-128 characters of [A-Za-z0-9_-]");
    if (!docker_text_ok(s->image, 512, false) || strpbrk(s->image, " "))
        return wg_errf(err, errlen,
                       "image must be a non-empty name without spaces or control characters");
    if (s->name && !wg_docker_ref_valid(s->name))
        return wg_errf(err, errlen,
                       "container name must match [A-Za-z0-9][A-Za-z0-9_.-]* (up to %d bytes)",
                       WG_DOCKER_REF_MAX);
    if (s->network_mode &&
        (!docker_text_ok(s->network_mode, 256, false) || strchr(s->network_mode, ' ')))
        return wg_errf(err, errlen,
                       "network mode must be a name without spaces or control characters");
    if (s->memory_bytes < 0 || s->nano_cpus < 0 || s->pids_limit < 0)
        return wg_errf(err, errlen, "memory, CPU and pids limits cannot be negative");
    if (s->user && (!docker_text_ok(s->user, 256, false) || strpbrk(s->user, " ")))
        return wg_errf(err, errlen, "user must be a name or uid without spaces");
    if (s->runtime && (!docker_text_ok(s->runtime, 128, false) || strpbrk(s->runtime, " ")))
        return wg_errf(err, errlen, "runtime must be a name without spaces");
    if (s->cmd && !s->cmd[0])
        return wg_errf(err, errlen, "cmd is empty: pass NULL for the image's CMD");
    return 0;
}

/* Cmd and Env. */
static int add_process(json_t *body, const struct wg_docker_spec *s, char *err, size_t errlen)
{
    int rc;

    if (s->cmd && (rc = set_strings(body, "Cmd", s->cmd, "cmd", true, err, errlen)) < 0)
        return rc;
    if (!s->env)
        return 0;
    for (size_t i = 0; s->env[i]; i++) {
        const char *eq = strchr(s->env[i], '=');
        if (!eq || eq == s->env[i])
            return wg_errf(err, errlen, "env[%zu] must be KEY=value", i);
    }
    return set_strings(body, "Env", s->env, "env", false, err, errlen);
}

/* The session's label first, so a caller's label cannot take its key. */
static int add_labels(json_t *labels, const struct wg_docker_spec *s, char *err, size_t errlen)
{
    int bad = json_object_set_new(labels, WG_LABEL_SESSION, json_string(s->session));

    for (size_t i = 0; s->labels && s->labels[i].key; i++) {
        const struct wg_docker_label *l = &s->labels[i];
        if (!docker_text_ok(l->key, 256, false) || !l->value ||
            !docker_text_ok(l->value, DOCKER_TEXT_MAX, true))
            return wg_errf(err, errlen, "labels[%zu] needs a printable key and value", i);
        if (json_object_get(labels, l->key))
            return wg_errf(err, errlen, "label \"%s\" is given twice or is reserved", l->key);
        bad |= json_object_set_new(labels, l->key, json_string(l->value));
    }
    return bad ? -ENOMEM : 0;
}

/* Whether a bind ("source:target[:options]") already mounts /tmp: the
 * engine refuses a tmpfs and a bind on one target ("Duplicate mount
 * point"), and the bind gives the writable /tmp already. */
static bool binds_mount_tmp(const char *const *binds)
{
    for (size_t i = 0; binds && binds[i]; i++) {
        const char *target = strchr(binds[i], ':');
        size_t n;

        if (target == NULL)
            continue;
        target++;
        n = strcspn(target, ":");
        while (n > 1 && target[n - 1] == '/')
            n--;
        if (n == 4 && strncmp(target, "/tmp", 4) == 0)
            return true;
    }
    return false;
}

/* What the code in the container may do: no capability but those added,
 * no gain of privileges through setuid binaries, and optionally a read-only
 * root (with a writable /tmp), a user and a runtime. */
static int add_sandbox(json_t *body, json_t *hc, const struct wg_docker_spec *s, char *err,
                       size_t errlen)
{
    static const char *const drop_all[] = {"ALL", NULL};
    static const char *const nnp[] = {"no-new-privileges", NULL};
    int bad = 0, rc;

    if ((rc = set_strings(hc, "CapDrop", drop_all, "cap_drop", false, err, errlen)) < 0)
        return rc;
    if (s->cap_add && s->cap_add[0] &&
        (rc = set_strings(hc, "CapAdd", s->cap_add, "cap_add", false, err, errlen)) < 0)
        return rc;
    if ((rc = set_strings(hc, "SecurityOpt", nnp, "security_opt", false, err, errlen)) < 0)
        return rc;
    if (s->read_only_root)
        bad |= json_object_set_new(hc, "ReadonlyRootfs", json_true());
    if (s->read_only_root && !binds_mount_tmp(s->binds)) {
        json_t *tmpfs = json_object();

        /* Its pages count against the container's memory limit. */
        bad |= json_object_set_new(tmpfs, "/tmp", json_string("rw,nosuid,nodev,mode=1777"));
        bad |= json_object_set_new(hc, "Tmpfs", tmpfs);
    }
    if (s->user)
        bad |= json_object_set_new(body, "User", json_string(s->user));
    if (s->runtime)
        bad |= json_object_set_new(hc, "Runtime", json_string(s->runtime));
    return bad ? -ENOMEM : 0;
}

/* ExposedPorts, the terminal settings, and HostConfig: always an init (a
 * fast stop, see DESIGN.md), then binds, network and limits. */
static int add_config(json_t *body, json_t *hc, const struct wg_docker_spec *s, char *err,
                      size_t errlen)
{
    int bad = 0, rc;

    if (s->port) {
        char key[16];
        json_t *ports = json_object();
        snprintf(key, sizeof(key), "%u/tcp", (unsigned)s->port);
        bad |= json_object_set_new(ports, key, json_object());
        bad |= json_object_set_new(body, "ExposedPorts", ports);
    }
    bad |= json_object_set_new(body, "Tty", json_false());
    bad |= json_object_set_new(body, "OpenStdin", json_false());
    bad |= json_object_set_new(body, "AttachStdin", json_false());
    bad |= json_object_set_new(hc, "Init", json_true());
    if (s->binds) {
        for (size_t i = 0; s->binds[i]; i++) {
            const char *colon = strchr(s->binds[i], ':');
            if (!colon || colon == s->binds[i] || !colon[1])
                return wg_errf(err, errlen, "binds[%zu] must be host-path:container-path[:options]",
                               i);
        }
        if ((rc = set_strings(hc, "Binds", s->binds, "binds", false, err, errlen)) < 0)
            return rc;
    }
    if (s->network_mode)
        bad |= json_object_set_new(hc, "NetworkMode", json_string(s->network_mode));
    if (s->memory_bytes) {
        bad |= json_object_set_new(hc, "Memory", json_integer(s->memory_bytes));
        /* Swap would let a hog outlive its limit at the host's expense. */
        bad |= json_object_set_new(hc, "MemorySwap", json_integer(s->memory_bytes));
    }
    if (s->nano_cpus)
        bad |= json_object_set_new(hc, "NanoCpus", json_integer(s->nano_cpus));
    if (s->pids_limit)
        bad |= json_object_set_new(hc, "PidsLimit", json_integer(s->pids_limit));
    if (bad)
        return -ENOMEM;
    return add_sandbox(body, hc, s, err, errlen);
}

int docker_create_body(const struct wg_docker_spec *s, json_t **ret, char *err, size_t errlen)
{
    json_t *body = NULL, *hc, *labels;
    int rc, bad = 0;

    if (errlen > 0)
        err[0] = '\0';
    if ((rc = check_spec(s, err, errlen)) < 0)
        goto out;
    body = json_object();
    hc = json_object();
    labels = json_object();
    if (!body || !hc || !labels) {
        json_decref(hc);
        json_decref(labels);
        rc = -ENOMEM;
        goto out;
    }
    /* json_object_set_new() takes the value even when it fails (and fails
     * on a NULL value): collect failures in `bad`, check once per part. */
    bad |= json_object_set_new(body, "HostConfig", hc);
    bad |= json_object_set_new(body, "Labels", labels);
    bad |= json_object_set_new(body, "Image", json_string(s->image));
    rc = bad ? -ENOMEM : 0;
    if (rc < 0 || (rc = add_process(body, s, err, errlen)) < 0 ||
        (rc = add_labels(labels, s, err, errlen)) < 0 ||
        (rc = add_config(body, hc, s, err, errlen)) < 0)
        goto out;
    *ret = body;
    return 0;
out:
    if (rc == -ENOMEM)
        snprintf(err, errlen, "out of memory");
    json_decref(body);
    return rc;
}

int docker_exec_body(const char *const *argv, const char *const *env, json_t **ret)
{
    json_t *cmd = NULL, *envs = NULL, *body;
    char dummy[1];
    int rc;

    rc = string_array(argv, "argv", true, &cmd, dummy, sizeof(dummy));
    if (rc < 0)
        return rc;
    if (env && env[0] && (rc = string_array(env, "env", false, &envs, dummy, sizeof(dummy))) < 0) {
        json_decref(cmd);
        return rc;
    }
    body = json_pack("{s:b,s:b,s:b,s:b,s:o}", "AttachStdin", 0, "AttachStdout", 1, "AttachStderr",
                     1, "Tty", 0, "Cmd", cmd);
    if (!body) {
        json_decref(envs);
        return -ENOMEM;
    }
    if (envs && json_object_set_new(body, "Env", envs) < 0) {
        json_decref(body);
        return -ENOMEM;
    }
    *ret = body;
    return 0;
}

int docker_stats_cpu_from_json(json_t *root, uint64_t *ret_ns)
{
    json_t *v = json_object_get(json_object_get(json_object_get(root, "cpu_stats"), "cpu_usage"),
                                "total_usage");

    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -EBADMSG;
    *ret_ns = (uint64_t)json_integer_value(v);
    return 0;
}

char *docker_label_filters(const char *label, bool with_type)
{
    json_t *f =
        json_pack(with_type ? "{s:[s],s:[s]}" : "{s:[s]}", "label", label, "type", "container");
    char *s = f ? json_dumps(f, JSON_COMPACT) : NULL, *esc, *out;

    json_decref(f);
    if (!s)
        return NULL;
    esc = curl_easy_escape(NULL, s, 0);
    free(s);
    if (!esc)
        return NULL;
    out = strdup(esc);
    curl_free(esc);
    return out;
}

bool docker_label_ok(const char *label)
{
    return docker_text_ok(label, 512, false) && label[0] != '=';
}
