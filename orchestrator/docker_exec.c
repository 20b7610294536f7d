/* orchestrator/docker_exec.c - wg_docker_exec(): exec create, start attached
 * (the output demultiplexed into a tail), then inspect for the exit code,
 * as one call. The engine cannot kill an exec: the caller wraps argv in an
 * in-container `timeout`, and this call's own deadline only bounds the wait.
 * See docker.h for the API and docker_int.h for ownership. */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/str.h"
#include "orchestrator/docker_int.h"

#define EXEC_POLL_MS 10   /* between exec inspects while the exec still runs */
#define EXEC_POLL_MAX 200 /* inspects after the output ended */

/* One exec call: its steps run as requests one after the other. */
struct docker_exec {
    struct wg_docker *d;
    char ref[WG_DOCKER_REF_MAX + 1];
    char exec_id[72];
    uint64_t deadline;
    uint32_t timeout_ms;
    unsigned polls;
    struct wg_buf out;
    bool truncated;
    wg_docker_cb *cb;
    void *arg;
};

static void exec_step(struct docker_req *q, int status, struct wg_docker_reply *r);

static void exec_deliver(struct docker_exec *op, int status, struct wg_docker_reply *r)
{
    r->output = wg_buf_size(&op->out) ? wg_buf_head(&op->out) : "";
    r->output_len = wg_buf_size(&op->out);
    r->output_truncated = op->truncated;
    if (op->cb)
        op->cb(status, r, op->arg);
    wg_buf_release(&op->out);
    free(op);
}

/* Queues the next step of op. Returns 0, or -ECANCELED/-ENOMEM. */
static int exec_next(struct docker_exec *op, enum req_kind kind, const char *method, char *path,
                     json_t *body, uint32_t delay_ms)
{
    struct wg_docker *d = op->d;
    struct docker_req *q;
    int rc;

    if (d->closed) {
        free(path);
        json_decref(body);
        return -ECANCELED;
    }
    q = docker_req_new(d, kind, method, path, exec_step, NULL, NULL);
    if (!q) {
        json_decref(body);
        return -ENOMEM;
    }
    if (body && (rc = docker_req_set_json(q, body)) < 0) {
        docker_req_free(q);
        return rc;
    }
    q->op = op;
    q->deadline = op->deadline;
    q->timeout_ms = op->timeout_ms;
    q->streamed = kind == RK_EXEC_START;
    if (delay_ms) {
        docker_delay(q, delay_ms);
        return 0;
    }
    rc = docker_submit(q);
    if (rc < 0)
        docker_req_free(q);
    return rc;
}

/* exec_next(), with the reason of a failure in r->message. */
static int exec_then(struct docker_exec *op, struct wg_docker_reply *r, enum req_kind kind,
                     const char *method, char *path, json_t *body, uint32_t delay_ms)
{
    int rc = exec_next(op, kind, method, path, body, delay_ms);

    if (rc < 0)
        r->message = rc == -ECANCELED ? DOCKER_CANCELED_TEXT : "out of memory";
    return rc;
}

/* The exec exists: start it attached. */
static int exec_created(struct docker_exec *op, struct wg_docker_reply *r)
{
    const char *id = docker_id_from_json(r->json);

    if (!id) {
        r->message = "the answer has no exec Id";
        return -EBADMSG;
    }
    snprintf(op->exec_id, sizeof(op->exec_id), "%s", id);
    return exec_then(op, r, RK_EXEC_START, "POST", wg_strf("/exec/%s/start", op->exec_id),
                     json_pack("{s:b,s:b}", "Detach", 0, "Tty", 0), 0);
}

/* Returns 1 when the exec has exited (r->exit_code set), 0 when another
 * inspect is queued, or a failure. */
static int exec_inspected(struct docker_exec *op, struct wg_docker_reply *r)
{
    json_t *code = json_object_get(r->json, "ExitCode");

    /* The output can end a moment before the engine records the exit. */
    if (json_is_true(json_object_get(r->json, "Running")) || !json_is_integer(code)) {
        if (++op->polls > EXEC_POLL_MAX || uv_now(op->d->loop) + EXEC_POLL_MS >= op->deadline) {
            r->message = "the exec's output ended but it did not exit in time";
            return -ETIMEDOUT;
        }
        return exec_then(op, r, RK_EXEC_INSPECT, "GET", wg_strf("/exec/%s/json", op->exec_id), NULL,
                         EXEC_POLL_MS);
    }
    r->exit_code = (int)json_integer_value(code);
    return 1;
}

static void exec_step(struct docker_req *q, int status, struct wg_docker_reply *r)
{
    struct docker_exec *op = q->op;
    char error[DOCKER_ERROR_MAX];
    int rc;

    q->op = NULL;
    if (q->delivered || !op)
        return;
    q->delivered = true;
    if (q->kind == RK_EXEC_START) {
        /* Keep what it printed, also when the step failed (a timeout). */
        docker_output_end(q);
        op->out = q->out;
        op->truncated = q->out_truncated;
        wg_buf_init(&q->out, 0);
    }
    if (status != 0) {
        exec_deliver(op, status, r);
        return;
    }
    switch (q->kind) {
    case RK_EXEC_CREATE:
        rc = exec_created(op, r);
        break;
    case RK_EXEC_START:
        rc = exec_then(op, r, RK_EXEC_INSPECT, "GET", wg_strf("/exec/%s/json", op->exec_id), NULL,
                       0);
        break;
    case RK_EXEC_INSPECT:
        rc = exec_inspected(op, r);
        break;
    default:
        assert(!"not an exec step");
        return;
    }
    if (rc == 0)
        return;
    if (rc > 0) {
        exec_deliver(op, 0, r);
        return;
    }
    docker_format_error(error, sizeof(error), r, rc);
    r->error = error;
    exec_deliver(op, rc, r);
}

int wg_docker_exec(struct wg_docker *d, const char *ref, const char *const *argv,
                   uint32_t timeout_ms, wg_docker_cb *cb, void *arg)
{
    return wg_docker_exec_env(d, ref, argv, NULL, timeout_ms, cb, arg);
}

int wg_docker_exec_env(struct wg_docker *d, const char *ref, const char *const *argv,
                       const char *const *env, uint32_t timeout_ms, wg_docker_cb *cb, void *arg)
{
    struct docker_exec *op;
    json_t *body = NULL;
    int rc;

    if (!d || !wg_docker_ref_valid(ref) || !argv || !argv[0])
        return -EINVAL;
    if (d->closed)
        return -ECANCELED;
    rc = docker_exec_body(argv, env, &body);
    if (rc < 0)
        return rc;
    op = calloc(1, sizeof(*op));
    if (!op) {
        json_decref(body);
        return -ENOMEM;
    }
    op->d = d;
    snprintf(op->ref, sizeof(op->ref), "%s", ref);
    op->timeout_ms = timeout_ms ? timeout_ms : d->timeout_ms;
    op->deadline = uv_now(d->loop) + op->timeout_ms;
    op->cb = cb;
    op->arg = arg;
    wg_buf_init(&op->out, d->max_output + 1);
    rc = exec_next(op, RK_EXEC_CREATE, "POST", wg_strf("/containers/%s/exec", op->ref), body, 0);
    if (rc < 0)
        free(op);
    return rc;
}
