/* src/ctl/api.c - the commands that call the admin API: ls, show, wake,
 * sleep and rm, and how an answer that is not 2xx is reported. */
#include "src/ctl/ctl.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "src/ctl/ctl_int.h"
#include "common/http_head.h"

void ctl_api_error_text(struct ctl_http *hc, char *out, size_t outlen)
{
    json_t *j = json_loads(ctl_http_body(hc), 0, NULL);
    const char *e = json_is_object(j) ? ctl_jstr(j, "error") : NULL;
    ctl_clean_copy(out, outlen, e ? e : "");
    json_decref(j);
}

int ctl_api_report(struct ctl *c, struct ctl_http *hc)
{
    char err[512];
    ctl_api_error_text(hc, err, sizeof(err));
    int rc = wg_ctl_exit_for_status(hc->status, err);
    if (c->o.json && wg_buf_size(&hc->body) > 0 && hc->body.data[hc->body.off] == '{')
        fwrite(wg_buf_head(&hc->body), 1, wg_buf_size(&hc->body), stdout);
    fprintf(stderr, PROG ": %s %s: %ld %s%s%s\n", hc->method, hc->url, hc->status,
            wg_http_reason((int)hc->status), err[0] ? ": " : "", err);
    if (rc == WG_CTL_AUTH && hc->status == 403 && c->token != NULL)
        fprintf(stderr,
                PROG ": the token from %s is read-only: %s %s needs the admin token (--token, "
                     "WAKEGATE_ADMIN_TOKEN or admin.token_file)\n",
                c->token_src, hc->method, hc->url);
    else if (rc == WG_CTL_AUTH && hc->status != 503 && c->token != NULL)
        fprintf(stderr, PROG ": the token from %s was refused\n", c->token_src);
    else if (rc == WG_CTL_AUTH && hc->status != 503)
        fprintf(stderr,
                PROG ": no token was sent: pass --token, set WAKEGATE_ADMIN_TOKEN or "
                     "admin.token_file%s\n",
                c->cfg_ok && c->cfg.admin_token_file != NULL &&
                        access(c->cfg.admin_token_file, R_OK) != 0
                    ? " (which this user cannot read)"
                    : "");
    return rc;
}

int ctl_api_call(struct ctl *c, struct ctl_http *hc, const char *path, long total_ms)
{
    ctl_http_url(hc, "%s%s", c->base, path);
    hc->token = c->token;
    hc->total_ms = total_ms;
    if (ctl_http_run(hc) < 0) {
        fprintf(stderr, PROG ": cannot reach the admin API (%s): %s\n", c->base_src, hc->err);
        return WG_CTL_UNREACHABLE;
    }
    if (hc->status < 200 || hc->status >= 300)
        return ctl_api_report(c, hc);
    return WG_CTL_OK;
}

/* The answer as JSON of the expected type; prints why not. */
json_t *ctl_api_json(struct ctl_http *hc, bool array)
{
    json_error_t jerr;
    json_t *j = json_loadb(wg_buf_head(&hc->body), wg_buf_size(&hc->body), 0, &jerr);
    if (j == NULL || (array ? !json_is_array(j) : !json_is_object(j))) {
        fprintf(stderr, PROG ": %s %s: unexpected answer (%s)\n", hc->method, hc->url,
                j ? "wrong JSON type" : jerr.text);
        json_decref(j);
        return NULL;
    }
    return j;
}

void ctl_print_raw(struct ctl_http *hc)
{
    fwrite(wg_buf_head(&hc->body), 1, wg_buf_size(&hc->body), stdout);
    if (wg_buf_size(&hc->body) > 0 &&
        hc->body.data[hc->body.off + wg_buf_size(&hc->body) - 1] != '\n')
        putchar('\n');
}

int ctl_list(struct ctl *c, const char *path, bool array, int (*print)(const json_t *answer))
{
    struct ctl_http hc;
    json_t *j = NULL;
    int rc;

    ctl_http_init(&hc, "GET");
    rc = ctl_api_call(c, &hc, path, CALL_TIMEOUT_MS);
    if (rc != WG_CTL_OK)
        goto out;
    if (c->o.json) {
        ctl_print_raw(&hc);
        goto out;
    }
    rc = WG_CTL_FAILED;
    j = ctl_api_json(&hc, array);
    if (j == NULL || print(j) < 0)
        goto out;
    rc = WG_CTL_OK;
out:
    json_decref(j);
    ctl_http_release(&hc);
    return rc;
}

int ctl_cmd_ls(struct ctl *c, const char *unused)
{
    (void)unused;
    return ctl_list(c, "/v1/sessions", true, ctl_print_sessions);
}

int ctl_cmd_show(struct ctl *c, const char *id)
{
    struct ctl_http hc;
    char path[128];
    json_t *j = NULL;
    int rc;

    ctl_http_init(&hc, "GET");
    snprintf(path, sizeof(path), "/v1/sessions/%s", id);
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
    ctl_print_record(j);
    ctl_show_more(c, j);
out:
    json_decref(j);
    ctl_http_release(&hc);
    return rc;
}

/* The server waits up to wake_timeout (+ the save timeout for a sleep):
 * give it that and a margin, as far as our copy of the configuration
 * knows. */
static long wait_timeout_ms(const struct ctl *c)
{
    uint64_t ms = 10 * 60 * 1000;
    if (c->cfg_ok)
        ms = c->cfg.sessions.wake_timeout_ms + c->cfg.sessions.save.timeout_ms;
    return (long)(ms > 3600000 ? 3600000 : ms) + WAIT_MARGIN_MS;
}

static void command_done(const char *op, const char *id, bool waited, const json_t *j)
{
    const char *state = ctl_jstr(j, "state");
    if (!waited) {
        printf("%s queued for %s (state %s, command %s)\n", op, id, state ? state : "?",
               ctl_jstr(j, "command_id") ? ctl_jstr(j, "command_id") : "?");
    } else if (ctl_jstr(j, "ip") != NULL && state != NULL && strcmp(state, "running") == 0) {
        printf("%s is running at %s:%" PRId64 "\n", id, ctl_jstr(j, "ip"), ctl_jint(j, "port"));
    } else {
        printf("%s is %s\n", id, state ? state : "?");
    }
}

/* A sleep called off because its save failed: the tail of the hook's
 * output, from the record the 409 carries. */
static void print_save_failure(struct ctl_http *hc)
{
    json_t *j = json_loadb(wg_buf_head(&hc->body), wg_buf_size(&hc->body), 0, NULL);
    json_t *ls = json_object_get(json_object_get(j, "session"), "last_save");
    const char *out = ctl_jstr(ls, "output");
    char shown[1024];

    if (json_is_object(ls) && json_is_false(json_object_get(ls, "ok"))) {
        size_t n = out ? strlen(out) : 0;
        ctl_clean_copy(shown, sizeof(shown), out && n > 800 ? out + n - 800 : out ? out : "");
        fprintf(stderr, PROG ": the save failed (exit code %" PRId64 "): %s\n",
                ctl_jint(ls, "exit_code"), shown);
    }
    json_decref(j);
}

/* wake, sleep, rm: one queued command, maybe waited for. */
static int run_command(struct ctl *c, const char *method, const char *op, const char *id,
                       unsigned flags)
{
    struct ctl_http hc;
    char path[160];
    json_t *j = NULL;
    bool wait = flags & (F_WAIT | F_NOW);
    int rc;

    ctl_http_init(&hc, method);
    if (strcmp(op, "destroy") == 0)
        snprintf(path, sizeof(path), "/v1/sessions/%s%s", id, flags & F_FORCE ? "?force=1" : "");
    else
        snprintf(path, sizeof(path), "/v1/sessions/%s/%s?%s%s%s", id, op, wait ? "wait=1&" : "",
                 flags & F_FORCE ? "force=1&" : "", flags & F_NOW ? "now=1" : "");
    for (size_t n = strlen(path); n > 0 && (path[n - 1] == '&' || path[n - 1] == '?'); n--)
        path[n - 1] = '\0';
    rc = ctl_api_call(c, &hc, path, wait ? wait_timeout_ms(c) : CALL_TIMEOUT_MS);
    if (rc == WG_CTL_CONFLICT && strcmp(op, "sleep") == 0)
        print_save_failure(&hc);
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
    command_done(op, id, wait, j);
out:
    json_decref(j);
    ctl_http_release(&hc);
    return rc;
}

int ctl_cmd_wake(struct ctl *c, const char *id)
{
    return run_command(c, "POST", "wake", id, c->o.flags & F_WAIT);
}

int ctl_cmd_sleep(struct ctl *c, const char *id)
{
    if ((c->o.flags & F_NOW) && (c->o.flags & F_FORCE))
        return ctl_usage_error("sleep: --now saves then stops, --force stops without saving: "
                               "give one");
    /* --now waits: the caller learns whether the save went through. */
    return run_command(c, "POST", "sleep", id, c->o.flags & (F_WAIT | F_FORCE | F_NOW));
}

int ctl_cmd_rm(struct ctl *c, const char *id)
{
    return run_command(c, "DELETE", "destroy", id, c->o.flags & F_FORCE);
}
