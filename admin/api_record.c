/* admin/api_record.c - POST /v1/sessions/{id}/events: an operator's action
 * on a session, recorded in the event stream beside the gateway's own
 * events. wakegatectl exec writes `exec` (the command, before it runs) and
 * `exec_exit` (its exit status). Only these types, and only the detail
 * members below, so a caller cannot write what reads as a transition, a
 * save or a failure. Admin token only (not a read route). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/api_int.h"
#include "common/container_spec.h"
#include "common/log.h"
#include "common/str.h"

#define RECORD_CMD_ITEMS_MAX 256
#define RECORD_CMD_ITEM_MAX 4096
#define RECORD_USER_MAX 64

static bool hex_id(const json_t *v)
{
    const char *s = json_string_value(v);
    size_t len = s ? strlen(s) : 0;
    if (len < 12 || len > 64)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static bool printable(const json_t *v, size_t max)
{
    const char *s = json_string_value(v);
    size_t len = s ? strlen(s) : 0;
    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
            return false;
    return true;
}

static int check_cmd(const json_t *v, char *err, size_t errlen)
{
    const json_t *e;
    size_t i;
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > RECORD_CMD_ITEMS_MAX)
        return wg_errf(err, errlen, "field \"detail.cmd\": must be an array of 1 to %d strings",
                       RECORD_CMD_ITEMS_MAX);
    json_array_foreach(v, i, e)
    {
        if (!json_is_string(e) || json_string_length(e) > RECORD_CMD_ITEM_MAX)
            return wg_errf(err, errlen,
                           "field \"detail.cmd[%zu]\": must be a string of at most %d bytes", i,
                           RECORD_CMD_ITEM_MAX);
    }
    return 0;
}

/* One member of the detail. Returns 0 or -EINVAL with err. */
static int check_member(const char *k, const json_t *v, char *err, size_t errlen)
{
    char name[WG_CONTAINER_SPEC_NAME_SHOW_MAX + 1];
    if (strcmp(k, "cmd") == 0)
        return check_cmd(v, err, errlen);
    if (strcmp(k, "container") == 0 || strcmp(k, "exec_id") == 0)
        return hex_id(v)
                   ? 0
                   : wg_errf(err, errlen, "field \"detail.%s\": must be 12 to 64 hex digits", k);
    if (strcmp(k, "user") == 0)
        return printable(v, RECORD_USER_MAX)
                   ? 0
                   : wg_errf(err, errlen,
                             "field \"detail.user\": must be 1 to %d printable ASCII characters",
                             RECORD_USER_MAX);
    if (strcmp(k, "exit_code") == 0)
        return json_is_integer(v) && json_integer_value(v) >= -1000000 &&
                       json_integer_value(v) <= 1000000
                   ? 0
                   : wg_errf(err, errlen, "field \"detail.exit_code\": must be an integer");
    wg_container_spec_show_name(name, sizeof(name), k);
    return wg_errf(err, errlen, "unknown field \"detail.%s\"", name);
}

/* The body: {"type": "exec" | "exec_exit", "detail": {...}}. On success
 * *ret_type is a static string and *ret_detail the detail (owned) with
 * "from": "api" added. Returns 0, -EINVAL with err, or -ENOMEM. */
static int parse_record(const char *body, size_t len, const char **ret_type, json_t **ret_detail,
                        char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = NULL, *detail, *v;
    const char *k, *type;
    char name[WG_CONTAINER_SPEC_NAME_SHOW_MAX + 1];
    int rc = -EINVAL;

    root = body && len ? json_loadb(body, len, JSON_REJECT_DUPLICATES, &je) : NULL;
    if (!json_is_object(root)) {
        wg_errf(err, errlen, "body: must be a JSON object with \"type\" and \"detail\"");
        goto out;
    }
    json_object_foreach(root, k, v)
    {
        if (strcmp(k, "type") != 0 && strcmp(k, "detail") != 0) {
            wg_container_spec_show_name(name, sizeof(name), k);
            wg_errf(err, errlen, "unknown field \"%s\"", name);
            goto out;
        }
    }
    type = json_string_value(json_object_get(root, "type"));
    if (type == NULL || (strcmp(type, "exec") != 0 && strcmp(type, "exec_exit") != 0)) {
        wg_errf(err, errlen, "field \"type\": must be \"exec\" or \"exec_exit\"");
        goto out;
    }
    *ret_type = strcmp(type, "exec") == 0 ? "exec" : "exec_exit";
    detail = json_object_get(root, "detail");
    if (!json_is_object(detail)) {
        wg_errf(err, errlen, "field \"detail\": must be an object");
        goto out;
    }
    json_object_foreach(detail, k, v)
    {
        if (check_member(k, v, err, errlen) < 0)
            goto out;
    }
    if (strcmp(*ret_type, "exec") == 0 && json_object_get(detail, "cmd") == NULL) {
        wg_errf(err, errlen, "field \"detail.cmd\": required");
        goto out;
    }
    if (strcmp(*ret_type, "exec_exit") == 0 && json_object_get(detail, "exit_code") == NULL) {
        wg_errf(err, errlen, "field \"detail.exit_code\": required");
        goto out;
    }
    rc = -ENOMEM;
    if (json_object_set_new(detail, "from", json_string("api")) < 0)
        goto out;
    *ret_detail = json_incref(detail);
    rc = 0;
out:
    json_decref(root);
    return rc;
}

static void on_added(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    if (!api_call_resume(c, res, "record event"))
        return;
    const char *entry = res->event_id ? res->event_id : "";
    WG_INFO(c->api->log, API_SUBSYS, "operator event recorded", "id=%s type=%s entry=%s", c->id,
            c->ev_type, entry);
    api_call_respond(
        c, 201, NULL,
        json_pack("{s:s, s:s, s:s}", "id", c->id, "type", c->ev_type, "event_id", entry));
    api_call_maybe_free(c);
}

/* The session exists: write the event. */
static void on_get(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    char *text;
    int rc;

    if (!api_call_resume(c, res, "get"))
        return;
    text = json_dumps(c->ev_detail, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
    if (text == NULL) {
        api_call_error(c, 500, NULL, "out of memory");
    } else if (strlen(text) > WG_STORE_DETAIL_MAX) {
        api_call_error(c, 400, NULL, "field \"detail\": too long");
    } else {
        rc = wg_store_event_add(c->api->store, c->id, c->ev_type, text, on_added, c);
        if (rc == 0)
            c->pending++;
        else
            api_call_fail(c, rc, "wg_store_event_add refused the event", "record event");
    }
    free(text);
    api_call_maybe_free(c);
}

void api_handle_record_event(struct wg_api *api, struct wg_admin_req *req,
                             const struct wg_admin_request *info, const char *id)
{
    const char *type = NULL;
    json_t *detail = NULL;
    char err[API_ERR_MAX];
    int rc = parse_record(info->body, info->body_len, &type, &detail, err, sizeof(err));

    if (rc == -ENOMEM) {
        wg_admin_respond_error(req, 500, NULL, "out of memory");
        return;
    }
    if (rc < 0) {
        wg_admin_respond_error(req, 400, NULL, err);
        return;
    }
    struct call *c = api_call_new(api, req, C_RECORD, id);
    if (c == NULL) {
        json_decref(detail);
        return;
    }
    c->ev_type = type;
    c->ev_detail = detail;
    rc = wg_store_get(api->store, id, on_get, c);
    if (rc == 0)
        c->pending++;
    else
        api_call_fail(c, rc, "", "get");
    api_call_maybe_free(c);
}
