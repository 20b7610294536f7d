/* src/ctl/create.c - the commands that write a session through the admin
 * API beside api.c's: create (with --wait) and keepalive; the options of
 * create and logs; and what `show` prints beyond the record's state: the
 * spec, and a failed session's log tail from its failure event. */
#include "src/ctl/ctl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/clock.h"
#include "src/ctl/ctl_int.h"

#define FAIL_EVENT_BACK_MS 5000 /* the failure event is at about state_since */
#define TAIL_MAX 1000000

/* ---- options ------------------------------------------------------------------------------- */

static int list_add(struct ctl_list *l, const char *flag, const char *v, bool need_eq)
{
    const char *eq = strchr(v, '=');
    if (need_eq && (eq == NULL || eq == v))
        return ctl_usage_error("%s '%s': expected NAME=VALUE", flag, v);
    if (l->n >= CTL_LIST_MAX)
        return ctl_usage_error("%s: at most %d", flag, CTL_LIST_MAX);
    l->v[l->n++] = v;
    return 0;
}

static int opt_tail(struct ctl_opts *o, const char *arg)
{
    char *end;
    long n;
    if (strcmp(arg, "all") != 0) {
        n = strtol(arg, &end, 10);
        if (end == arg || *end != '\0' || n < 0 || n > TAIL_MAX)
            return ctl_usage_error("--tail '%s': expected a number of lines (0..%d) or all", arg,
                                   TAIL_MAX);
    }
    o->tail = arg;
    o->flags |= F_TAIL;
    return 0;
}

int ctl_opt_more(struct ctl_opts *o, int opt, const char *arg)
{
    char *end;
    long port;
    switch (opt) {
    case O_TAIL:
        return opt_tail(o, arg);
    case O_TEMPLATE:
        o->template_name = arg;
        break;
    case O_IMAGE:
        o->image = arg;
        break;
    case O_PORT:
        port = strtol(arg, &end, 10);
        if (end == arg || *end != '\0' || port < 1 || port > 65535)
            return ctl_usage_error("--port '%s': expected 1..65535", arg);
        o->port = arg;
        break;
    case O_ENV:
        if (list_add(&o->env, "--env", arg, true) != 0)
            return WG_CTL_USAGE;
        break;
    case O_LABEL:
        if (list_add(&o->labels, "--label", arg, true) != 0)
            return WG_CTL_USAGE;
        break;
    case O_BIND:
        if (list_add(&o->binds, "--bind", arg, false) != 0)
            return WG_CTL_USAGE;
        break;
    case O_IDLE_PAUSE:
        o->idle_pause = arg;
        break;
    case O_IDLE_STOP:
        o->idle_stop = arg;
        break;
    default:
        return -1;
    }
    o->flags |= F_SPEC;
    return 0;
}

/* ---- create -------------------------------------------------------------------------------- */

static json_t *str_array(const char *const *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; a != NULL && i < n; i++)
        if (json_array_append_new(a, json_string(v[i])) < 0) {
            json_decref(a);
            a = NULL;
        }
    return a;
}

/* The create request, from the options given; NULL: out of memory, or an
 * argument that is not UTF-8 (said on stderr). */
static json_t *create_body(const struct ctl_opts *o, const char *id)
{
    json_t *b = json_pack("{s:s}", "id", id), *labels = NULL, *idle = NULL;
    int bad = b == NULL;

    if (!bad && o->template_name)
        bad |= json_object_set_new(b, "template", json_string(o->template_name));
    if (!bad && o->image)
        bad |= json_object_set_new(b, "image", json_string(o->image));
    if (!bad && o->port)
        bad |= json_object_set_new(b, "port", json_integer(strtol(o->port, NULL, 10)));
    if (!bad && o->env.n)
        bad |= json_object_set_new(b, "env", str_array(o->env.v, o->env.n));
    if (!bad && o->binds.n)
        bad |= json_object_set_new(b, "binds", str_array(o->binds.v, o->binds.n));
    if (!bad && o->ncmd > 0)
        bad |= json_object_set_new(b, "cmd", str_array((const char *const *)o->cmd, o->ncmd));
    if (!bad && o->labels.n) {
        labels = json_object();
        bad |= labels == NULL;
        for (int i = 0; !bad && i < o->labels.n; i++) {
            const char *eq = strchr(o->labels.v[i], '=');
            char *k = strndup(o->labels.v[i], (size_t)(eq - o->labels.v[i]));
            bad |= k == NULL || json_object_set_new(labels, k, json_string(eq + 1)) < 0;
            free(k);
        }
        bad |= json_object_set_new(b, "labels", labels);
    }
    if (!bad && (o->idle_pause || o->idle_stop)) {
        idle = json_object();
        bad |= idle == NULL;
        if (!bad && o->idle_pause)
            bad |= json_object_set_new(idle, "pause_after", json_string(o->idle_pause));
        if (!bad && o->idle_stop)
            bad |= json_object_set_new(idle, "stop_after", json_string(o->idle_stop));
        bad |= json_object_set_new(b, "idle", idle);
    }
    if (bad) {
        fprintf(stderr, PROG ": create: an argument is not UTF-8 text (or out of memory)\n");
        json_decref(b);
        return NULL;
    }
    return b;
}

/* The server waits up to wake_timeout: give it that and a margin. */
static long wake_wait_ms(const struct ctl *c)
{
    uint64_t ms = 10 * 60 * 1000;
    if (c->cfg_ok)
        ms = c->cfg.sessions.wake_timeout_ms;
    return (long)(ms > 3600000 ? 3600000 : ms) + WAIT_MARGIN_MS;
}

/* create --wait: wake it and wait until it runs. */
static int create_wake(struct ctl *c, const char *id)
{
    struct ctl_http hc;
    char path[128];
    json_t *j = NULL;
    int rc;

    ctl_http_init(&hc, "POST");
    snprintf(path, sizeof(path), "/v1/sessions/%s/wake?wait=1", id);
    rc = ctl_api_call(c, &hc, path, wake_wait_ms(c));
    if (rc == WG_CTL_OK && c->o.json) {
        ctl_print_raw(&hc);
    } else if (rc == WG_CTL_OK) {
        j = ctl_api_json(&hc, false);
        if (j == NULL)
            rc = WG_CTL_FAILED;
        else
            printf("%s is running at %s:%" PRId64 "\n", id,
                   ctl_jstr(j, "ip") ? ctl_jstr(j, "ip") : "?", ctl_jint(j, "port"));
    }
    json_decref(j);
    ctl_http_release(&hc);
    return rc;
}

int ctl_cmd_create(struct ctl *c, const char *id)
{
    struct ctl_http hc;
    json_t *body = create_body(&c->o, id), *j = NULL;
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    int rc;

    ctl_http_init(&hc, "POST");
    if (text == NULL) {
        rc = WG_CTL_USAGE;
        goto out;
    }
    hc.json_body = text;
    rc = ctl_api_call(c, &hc, "/v1/sessions", CALL_TIMEOUT_MS);
    if (rc != WG_CTL_OK)
        goto out;
    /* The API answers 200 with the record unchanged for an id that exists:
     * what was asked for is not what the session is, so say so. */
    if (hc.status == 200) {
        if (c->o.json)
            ctl_print_raw(&hc);
        fprintf(stderr,
                PROG ": create %s: the session exists; nothing changed (wake it, or rm it "
                     "first)\n",
                id);
        rc = WG_CTL_CONFLICT;
        goto out;
    }
    if (c->o.flags & F_WAIT) {
        rc = create_wake(c, id);
        goto out;
    }
    if (c->o.json) {
        ctl_print_raw(&hc);
        goto out;
    }
    j = ctl_api_json(&hc, false);
    if (j == NULL) {
        rc = WG_CTL_FAILED;
        goto out;
    }
    printf("created %s (template %s, image %s, state %s)\n", id,
           ctl_jstr(j, "template") ? ctl_jstr(j, "template") : "default",
           ctl_jstr(j, "image") ? ctl_jstr(j, "image") : "-",
           ctl_jstr(j, "state") ? ctl_jstr(j, "state") : "?");
out:
    json_decref(j);
    json_decref(body);
    free(text);
    ctl_http_release(&hc);
    return rc;
}

/* ---- keepalive ----------------------------------------------------------------------------- */

int ctl_cmd_keepalive(struct ctl *c, const char *id)
{
    struct ctl_http hc;
    char path[128], t[40], d[24];
    json_t *body = json_pack("{s:s}", "duration", c->o.arg2), *j = NULL;
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    int rc;

    ctl_http_init(&hc, "POST");
    if (text == NULL) {
        rc = ctl_usage_error("keepalive: DURATION '%s' is not text", c->o.arg2);
        goto out;
    }
    hc.json_body = text;
    snprintf(path, sizeof(path), "/v1/sessions/%s/keepalive", id);
    rc = ctl_api_call(c, &hc, path, CALL_TIMEOUT_MS);
    if (rc != WG_CTL_OK)
        goto out;
    if (c->o.json) {
        ctl_print_raw(&hc);
        goto out;
    }
    j = ctl_api_json(&hc, false);
    if (j == NULL) {
        rc = WG_CTL_FAILED;
        goto out;
    }
    int64_t until = ctl_jint(j, "keepalive_until");
    printf("%s kept alive until %s (in %s, state %s)\n", id,
           ctl_fmt_time(until, false, t, sizeof(t)),
           wg_ctl_fmt_duration(until - wg_clock_wall_ms(), d, sizeof(d)),
           ctl_jstr(j, "state") ? ctl_jstr(j, "state") : "?");
out:
    json_decref(j);
    json_decref(body);
    free(text);
    ctl_http_release(&hc);
    return rc;
}

/* ---- the record ---------------------------------------------------------------------------- */

int ctl_api_record(struct ctl *c, const char *id, json_t **ret)
{
    struct ctl_http hc;
    char path[128];
    int rc;

    *ret = NULL;
    ctl_http_init(&hc, "GET");
    snprintf(path, sizeof(path), "/v1/sessions/%s", id);
    rc = ctl_api_call(c, &hc, path, CALL_TIMEOUT_MS);
    if (rc == WG_CTL_OK) {
        *ret = ctl_api_json(&hc, false);
        if (*ret == NULL)
            rc = WG_CTL_FAILED;
    }
    ctl_http_release(&hc);
    return rc;
}

/* ---- show: the spec ------------------------------------------------------------------------ */

static void kv_begin(const char *key)
{
    printf("%-13s ", key);
}

/* An array of strings as "a, b, c" (cleaned); "-" when absent or empty. */
static void kv_list(const char *key, const json_t *a, const char *suffix)
{
    const json_t *e;
    size_t i;
    kv_begin(key);
    if (json_array_size(a) == 0) {
        puts("-");
        return;
    }
    json_array_foreach(a, i, e)
    {
        if (i > 0)
            fputs(", ", stdout);
        ctl_put_clean(stdout, json_string_value(e) ? json_string_value(e) : "?", false);
    }
    printf("%s\n", suffix);
}

/* A JSON value, compact and cleaned; dflt when absent. */
static void kv_json(const char *key, const json_t *v, const char *dflt)
{
    char *text = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    kv_begin(key);
    ctl_put_clean(stdout, text ? text : dflt, false);
    putchar('\n');
    free(text);
}

static void kv_limits(const json_t *lim)
{
    char line[160] = "";
    size_t o = 0;
    if (!json_is_object(lim)) {
        kv_json("limits", NULL, "the template's");
        return;
    }
    if (json_object_get(lim, "memory"))
        o += (size_t)snprintf(line + o, sizeof(line) - o, "memory %" PRId64 " bytes",
                              ctl_jint(lim, "memory"));
    if (json_object_get(lim, "nano_cpus") && o < sizeof(line))
        o += (size_t)snprintf(line + o, sizeof(line) - o, "%scpus %.3g", o ? ", " : "",
                              (double)ctl_jint(lim, "nano_cpus") / 1e9);
    if (json_object_get(lim, "pids") && o < sizeof(line))
        snprintf(line + o, sizeof(line) - o, "%spids %" PRId64, o ? ", " : "",
                 ctl_jint(lim, "pids"));
    kv_json("limits", NULL, line[0] ? line : "the template's");
}

void ctl_print_spec(const json_t *rec)
{
    const json_t *spec = json_object_get(rec, "spec");
    const json_t *labels = json_object_get(spec, "labels");

    kv_json("template", NULL, ctl_jstr(rec, "template") ? ctl_jstr(rec, "template") : "default");
    if (!json_is_object(spec)) {
        kv_json("spec", NULL, "- (unreadable)");
        return;
    }
    kv_json("command", json_object_get(spec, "cmd"), "the image's");
    kv_list("env", json_object_get(spec, "env"),
            json_array_size(json_object_get(spec, "env")) ? " (values not shown)" : "");
    kv_begin("labels");
    if (json_object_size(labels) == 0) {
        puts("-");
    } else {
        const char *k;
        const json_t *v;
        bool first = true;
        json_object_foreach((json_t *)labels, k, v)
        {
            fputs(first ? "" : ", ", stdout);
            ctl_put_clean(stdout, k, false);
            putchar('=');
            ctl_put_clean(stdout, json_string_value(v) ? json_string_value(v) : "?", false);
            first = false;
        }
        putchar('\n');
    }
    kv_list("binds", json_object_get(spec, "binds"), "");
    kv_limits(json_object_get(spec, "limits"));
    kv_json("save hook", json_object_get(spec, "save"), "the template's");
}

/* ---- show: the failure's log tail ---------------------------------------------------------- */

struct fail_scan {
    const char *id;
    char *logs; /* the last failure event's detail.logs, owned */
    int64_t at;
};

static void on_scan_event(void *arg, const char *data)
{
    struct fail_scan *f = arg;
    json_t *j = json_loads(data, 0, NULL);
    const char *id = ctl_jstr(j, "id"), *to = ctl_jstr(j, "to");
    const char *logs = ctl_jstr(json_object_get(j, "detail"), "logs");
    if (id != NULL && strcmp(id, f->id) == 0 && to != NULL && strcmp(to, "failed") == 0 &&
        logs != NULL) {
        free(f->logs);
        f->logs = strdup(logs);
        f->at = ctl_jint(j, "at");
    }
    json_decref(j);
}

void ctl_show_more(struct ctl *c, const json_t *rec)
{
    struct fail_scan f = {.id = ctl_jstr(rec, "id")};
    const char *state = ctl_jstr(rec, "state");
    char t[40];

    if (f.id == NULL || state == NULL || strcmp(state, "failed") != 0)
        return;
    /* The move to failed and its event are one write: the event is at
     * about state_since. */
    int rc =
        ctl_events_scan(c, ctl_jint(rec, "state_since") - FAIL_EVENT_BACK_MS, on_scan_event, &f);
    if (rc != WG_CTL_OK) {
        printf("%-13s - (the event stream could not be read: exit %d)\n", "log tail", rc);
    } else if (f.logs == NULL) {
        printf("%-13s - (no failure event with a log tail; see " PROG " events)\n", "log tail");
    } else {
        printf("%-13s the container's last lines, in its failure event of %s\n", "log tail",
               ctl_fmt_time(f.at, false, t, sizeof(t)));
        ctl_print_quoted(f.logs);
    }
    free(f.logs);
}
