/* orchestrator/docker.c - the Docker Engine API client: its lifetime and
 * its calls; see docker.h for the API and docker_int.h for how the client's
 * files share the work. Each call checks its arguments, builds a request
 * (docker_json.c makes the bodies), hands it to the transport
 * (docker_transport.c) and decodes the answer in its finish function. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/labels.h"
#include "common/str.h"
#include "orchestrator/docker_int.h"

/* ---- lifetime ------------------------------------------------------------------------------- */

void docker_release(struct wg_docker *d)
{
    if (--d->refs > 0)
        return;
    wg_docker_host_release(&d->h);
    free(d->tls_ca);
    free(d->tls_cert);
    free(d->tls_key);
    free(d->resolve_entry);
    free(d);
    curl_global_cleanup();
}

void wg_docker_free(struct wg_docker *d)
{
    if (!d || d->closed)
        return;
    d->closed = true;
    docker_cancel_all(d);
    if (!d->in_curl)
        docker_teardown(d);
}

/* Checks and copies the options into d. Returns 0, -EINVAL with the
 * reason in err, or -ENOMEM. */
static int take_opts(struct wg_docker *d, const struct wg_docker_opts *o, char *err, size_t errlen)
{
    const char *api = o->api_version ? o->api_version : WG_DOCKER_API_MAX;
    int rc;

    rc = wg_docker_host_parse(o->host, o->tls, &d->h, err, errlen);
    if (rc < 0)
        return rc;
    if (docker_version_parse(api, strlen(api), &d->max_major, &d->max_minor) < 0) {
        snprintf(err, errlen, "API version must look like 1.41");
        return -EINVAL;
    }
    if ((o->tls_ca || o->tls_cert || o->tls_key) && !o->tls) {
        snprintf(err, errlen, "TLS files are given but TLS is off");
        return -EINVAL;
    }
    if (!!o->tls_cert != !!o->tls_key) {
        snprintf(err, errlen, "a TLS client certificate needs its key, and a key its certificate");
        return -EINVAL;
    }
    if ((o->tls_ca && !(d->tls_ca = strdup(o->tls_ca))) ||
        (o->tls_cert && !(d->tls_cert = strdup(o->tls_cert))) ||
        (o->tls_key && !(d->tls_key = strdup(o->tls_key))))
        return -ENOMEM;
    d->tls_skip_verify = o->tls_skip_verify;
    d->timeout_ms = o->timeout_ms ? o->timeout_ms : WG_DOCKER_TIMEOUT_MS;
    d->connect_timeout_ms =
        o->connect_timeout_ms ? o->connect_timeout_ms : WG_DOCKER_CONNECT_TIMEOUT_MS;
    d->max_body = o->max_body ? o->max_body : WG_DOCKER_MAX_BODY;
    d->max_output = o->max_output ? o->max_output : WG_DOCKER_MAX_OUTPUT;
    docker_quote(d->qhost, sizeof(d->qhost), d->h.display);
    return 0;
}

int wg_docker_new(uv_loop_t *loop, const struct wg_docker_opts *opts, struct wg_log *log,
                  struct wg_docker **ret, char *err, size_t errlen)
{
    struct wg_docker_opts o;
    struct wg_docker *d;
    char dummy[1];
    int rc;

    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    if (!loop || !ret) {
        snprintf(err, errlen, "no loop or result pointer");
        return -EINVAL;
    }
    memset(&o, 0, sizeof(o));
    if (opts)
        o = *opts;
    d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->loop = loop;
    d->log = log;
    if ((rc = take_opts(d, &o, err, errlen)) < 0 ||
        (rc = docker_transport_init(d, err, errlen)) < 0)
        goto out;
    *ret = d;
    return 0;
out:
    if (rc == -ENOMEM && !err[0])
        snprintf(err, errlen, "out of memory");
    wg_docker_host_release(&d->h);
    free(d->tls_ca);
    free(d->tls_cert);
    free(d->tls_key);
    free(d);
    return rc;
}

bool wg_docker_is_local(const struct wg_docker *d)
{
    return d != NULL && d->h.is_unix;
}

const char *wg_docker_api_version(const struct wg_docker *d)
{
    return d && d->neg == NEG_DONE ? d->version : NULL;
}

/* ---- calls ---------------------------------------------------------------------------------- */

static void finish_plain(struct docker_req *q, int status, struct wg_docker_reply *r)
{
    docker_deliver(q, status, r);
}

static void finish_create(struct docker_req *q, int status, struct wg_docker_reply *r)
{
    if (status == 0) {
        r->id = docker_id_from_json(r->json);
        if (!r->id) {
            status = -EBADMSG;
            r->message = "the answer has no container Id";
        }
    }
    docker_deliver(q, status, r);
}

static void finish_inspect(struct docker_req *q, int status, struct wg_docker_reply *r)
{
    struct wg_docker_container c;

    if (status == 0) {
        int rc = docker_container_from_json(r->json, &c);
        if (rc < 0) {
            status = rc;
            r->message = rc == -ENOMEM ? "out of memory" : "the answer is not a container";
        } else {
            r->container = &c;
        }
    }
    docker_deliver(q, status, r);
}

static void finish_list(struct docker_req *q, int status, struct wg_docker_reply *r)
{
    struct wg_docker_summary *v = NULL;
    size_t n = 0;

    if (status == 0) {
        int rc = docker_summaries_from_json(r->json, &v, &n);
        if (rc < 0) {
            status = rc;
            r->message = rc == -ENOMEM ? "out of memory" : "the answer is not a container list";
        }
        r->containers = v;
        r->n_containers = n;
    }
    docker_deliver(q, status, r);
    free(v);
}

static void finish_logs(struct docker_req *q, int status, struct wg_docker_reply *r)
{
    if (status == 0) {
        docker_output_end(q);
        r->output = wg_buf_size(&q->out) ? wg_buf_head(&q->out) : "";
        r->output_len = wg_buf_size(&q->out);
        r->output_truncated = q->out_truncated;
    }
    docker_deliver(q, status, r);
}

int docker_call(struct wg_docker *d, enum req_kind kind, const char *method, char *path,
                docker_finish_fn *finish, wg_docker_cb *cb, void *arg, struct docker_req **ret)
{
    struct docker_req *q;
    int rc;

    if (!d) {
        free(path);
        return -EINVAL;
    }
    if (d->closed) {
        free(path);
        return -ECANCELED;
    }
    q = docker_req_new(d, kind, method, path, finish, cb, arg);
    if (!q)
        return -ENOMEM;
    if (ret) { /* the caller adjusts q, then submits */
        *ret = q;
        return 0;
    }
    rc = docker_submit(q);
    if (rc < 0)
        docker_req_free(q);
    return rc;
}

int wg_docker_ping(struct wg_docker *d, wg_docker_cb *cb, void *arg)
{
    return docker_call(d, RK_PING, "GET", strdup("/_ping"), docker_finish_ping, cb, arg, NULL);
}

int wg_docker_version(struct wg_docker *d, wg_docker_cb *cb, void *arg)
{
    return docker_call(d, RK_VERSION, "GET", strdup("/version"), finish_plain, cb, arg, NULL);
}

int wg_docker_info(struct wg_docker *d, wg_docker_cb *cb, void *arg)
{
    return docker_call(d, RK_VERSION, "GET", strdup("/info"), finish_plain, cb, arg, NULL);
}

int docker_call_json(struct wg_docker *d, enum req_kind kind, const char *method, char *path,
                     json_t *body, docker_finish_fn *finish, wg_docker_cb *cb, void *arg)
{
    struct docker_req *q;
    int rc = docker_call(d, kind, method, path, finish, cb, arg, &q);

    if (rc < 0) {
        json_decref(body);
        return rc;
    }
    if ((rc = docker_req_set_json(q, body)) < 0 || (rc = docker_submit(q)) < 0)
        docker_req_free(q);
    return rc;
}

int wg_docker_create(struct wg_docker *d, const struct wg_docker_spec *spec, wg_docker_cb *cb,
                     void *arg, char *err, size_t errlen)
{
    char dummy[1], *name = NULL, *path;
    json_t *body = NULL;
    int rc;

    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    if (!d)
        return -EINVAL;
    if (d->closed)
        return -ECANCELED;
    rc = docker_create_body(spec, &body, err, errlen);
    if (rc < 0)
        return rc;
    if (spec->name) {
        name = curl_easy_escape(NULL, spec->name, 0);
        if (!name) {
            json_decref(body);
            return -ENOMEM;
        }
        path = wg_strf("/containers/create?name=%s", name);
        curl_free(name);
    } else {
        path = strdup("/containers/create");
    }
    return docker_call_json(d, RK_CREATE, "POST", path, body, finish_create, cb, arg);
}

static int container_action(struct wg_docker *d, enum req_kind kind, const char *ref,
                            const char *action, wg_docker_cb *cb, void *arg)
{
    struct docker_req *q;
    int rc;

    if (!wg_docker_ref_valid(ref))
        return -EINVAL;
    rc = docker_call(d, kind, "POST", wg_strf("/containers/%s/%s", ref, action), finish_plain, cb,
                     arg, &q);
    if (rc < 0)
        return rc;
    q->ok_304 = true;
    if ((rc = docker_submit(q)) < 0)
        docker_req_free(q);
    return rc;
}

int wg_docker_start(struct wg_docker *d, const char *ref, wg_docker_cb *cb, void *arg)
{
    return container_action(d, RK_START, ref, "start", cb, arg);
}

int wg_docker_stop(struct wg_docker *d, const char *ref, unsigned timeout_s, wg_docker_cb *cb,
                   void *arg)
{
    char action[32];
    struct docker_req *q;
    int rc;

    if (!wg_docker_ref_valid(ref) || timeout_s > 86400)
        return -EINVAL;
    snprintf(action, sizeof(action), "stop?t=%u", timeout_s);
    rc = docker_call(d, RK_STOP, "POST", wg_strf("/containers/%s/%s", ref, action), finish_plain,
                     cb, arg, &q);
    if (rc < 0)
        return rc;
    q->ok_304 = true;
    q->timeout_ms = d->timeout_ms + timeout_s * 1000u;
    if ((rc = docker_submit(q)) < 0)
        docker_req_free(q);
    return rc;
}

int wg_docker_pause(struct wg_docker *d, const char *ref, wg_docker_cb *cb, void *arg)
{
    return container_action(d, RK_PAUSE, ref, "pause", cb, arg);
}

int wg_docker_unpause(struct wg_docker *d, const char *ref, wg_docker_cb *cb, void *arg)
{
    return container_action(d, RK_UNPAUSE, ref, "unpause", cb, arg);
}

int wg_docker_inspect(struct wg_docker *d, const char *ref, wg_docker_cb *cb, void *arg)
{
    if (!wg_docker_ref_valid(ref))
        return -EINVAL;
    return docker_call(d, RK_INSPECT, "GET", wg_strf("/containers/%s/json", ref), finish_inspect,
                       cb, arg, NULL);
}

int wg_docker_remove(struct wg_docker *d, const char *ref, bool force, bool volumes,
                     wg_docker_cb *cb, void *arg)
{
    if (!wg_docker_ref_valid(ref))
        return -EINVAL;
    return docker_call(d, RK_REMOVE, "DELETE",
                       wg_strf("/containers/%s?force=%d&v=%d", ref, force ? 1 : 0, volumes ? 1 : 0),
                       finish_plain, cb, arg, NULL);
}

int wg_docker_list(struct wg_docker *d, const char *label, wg_docker_cb *cb, void *arg)
{
    char *f, *path;

    if (!label)
        label = WG_LABEL_SESSION;
    if (!d || !docker_label_ok(label))
        return -EINVAL;
    f = docker_label_filters(label, false);
    if (!f)
        return -ENOMEM;
    path = wg_strf("/containers/json?all=1&filters=%s", f);
    free(f);
    return docker_call(d, RK_LIST, "GET", path, finish_list, cb, arg, NULL);
}

int wg_docker_list_running(struct wg_docker *d, const char *label, wg_docker_cb *cb, void *arg)
{
    json_t *fj;
    char *f, *esc, *path;
    struct docker_req *q;
    int rc;

    if (!label)
        label = WG_LABEL_SESSION;
    if (!d || !docker_label_ok(label))
        return -EINVAL;
    fj = json_pack("{s:[s],s:[s]}", "label", label, "status", "running");
    f = fj ? json_dumps(fj, JSON_COMPACT) : NULL;
    json_decref(fj);
    esc = f ? curl_easy_escape(NULL, f, 0) : NULL;
    free(f);
    if (!esc)
        return -ENOMEM;
    path = wg_strf("/containers/json?filters=%s", esc);
    curl_free(esc);
    rc = docker_call(d, RK_LIST, "GET", path, finish_list, cb, arg, &q);
    if (rc < 0)
        return rc;
    q->body_cap = WG_DOCKER_MAX_LIST_BODY;
    wg_buf_init(&q->resp, q->body_cap + 1);
    if ((rc = docker_submit(q)) < 0)
        docker_req_free(q);
    return rc;
}

static void finish_stats(struct docker_req *q, int status, struct wg_docker_reply *r)
{
    if (status == 0 && docker_stats_cpu_from_json(r->json, &r->cpu_usage_ns) < 0) {
        status = -EBADMSG;
        r->message = "the answer has no cpu_stats.cpu_usage.total_usage";
    }
    docker_deliver(q, status, r);
}

int wg_docker_stats(struct wg_docker *d, const char *ref, wg_docker_cb *cb, void *arg)
{
    if (!wg_docker_ref_valid(ref))
        return -EINVAL;
    return docker_call(d, RK_STATS, "GET",
                       wg_strf("/containers/%s/stats?stream=false&one-shot=true", ref),
                       finish_stats, cb, arg, NULL);
}

int wg_docker_logs(struct wg_docker *d, const char *ref, unsigned tail, wg_docker_cb *cb, void *arg)
{
    struct docker_req *q;
    int rc;

    if (!wg_docker_ref_valid(ref))
        return -EINVAL;
    rc = docker_call(d, RK_LOGS, "GET",
                     wg_strf("/containers/%s/logs?stdout=1&stderr=1&tail=%u", ref, tail),
                     finish_logs, cb, arg, &q);
    if (rc < 0)
        return rc;
    q->streamed = true;
    if ((rc = docker_submit(q)) < 0)
        docker_req_free(q);
    return rc;
}
