/* common/store_events.c - what the bus tells: events appended to wg:events,
 * and the wg:state messages (their parser; the scripts publish them). */
#include "common/store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/store_int.h"

static bool event_type_ok(const char *t)
{
    size_t len = t ? strlen(t) : 0;

    if (len == 0 || len > 32 || !(t[0] >= 'a' && t[0] <= 'z') || strcmp(t, "transition") == 0)
        return false;
    for (size_t i = 1; i < len; i++)
        if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= '0' && t[i] <= '9') || t[i] == '_' ||
              t[i] == '.'))
            return false;
    return true;
}
int wg_store_check_publish(struct wg_store *s, const char *token, uint64_t stamp, wg_store_cb *cb,
                           void *arg)
{
    struct store_argv a = {0};
    struct op *op;
    char channel[sizeof(WG_STORE_CHANNEL_CHECK) + WG_STORE_TOKEN_LEN];
    int rc;

    if (!s || !cb || !token || strlen(token) != WG_STORE_TOKEN_LEN)
        return -EINVAL;
    if ((rc = store_op_start(s, OP_PUBLISH, NULL, cb, arg, &op)) < 0)
        return rc;
    snprintf(channel, sizeof(channel), "%s%s", WG_STORE_CHANNEL_CHECK, token);
    store_av_str(&a, "PUBLISH");
    store_av_str(&a, channel);
    store_av_u64(&a, stamp);
    rc = store_send(op, s->redis, R_MAIN, 0, &a);
    store_av_release(&a);
    return rc < 0 ? store_op_abort(op, rc) : 0;
}

int wg_store_event_add(struct wg_store *s, const char *id, const char *type,
                       const char *detail_json, wg_store_cb *cb, void *arg)
{
    struct store_argv a = {0};
    struct op *op;
    int rc;

    if (!s || !cb || !store_id_ok(id) || !event_type_ok(type) || !store_detail_ok(detail_json))
        return -EINVAL;
    if ((rc = store_op_start(s, OP_XADD, id, cb, arg, &op)) < 0)
        return rc;
    store_av_str(&a, "XADD");
    store_av_str(&a, WG_STORE_KEY_EVENTS);
    store_av_str(&a, "MAXLEN");
    store_av_str(&a, "~");
    store_av_u64(&a, s->events_max);
    store_av_str(&a, "*");
    store_av_str(&a, "id");
    store_av_str(&a, id);
    store_av_str(&a, "type");
    store_av_str(&a, type);
    store_av_str(&a, "at");
    store_av_i64(&a, store_now_ms(s));
    if (detail_json) {
        store_av_str(&a, "detail");
        store_av_str(&a, detail_json);
    }
    rc = store_send(op, s->redis, R_MAIN, 0, &a);
    store_av_release(&a);
    return rc < 0 ? store_op_abort(op, rc) : 0;
}

int wg_store_parse_state_msg(const char *data, size_t len, struct wg_state_msg *ret_msg)
{
    struct wg_state_msg m;
    json_error_t jerr;
    json_t *root, *id, *state, *v, *ip, *port, *gen, *cid;
    unsigned char addr[16];
    int rc = -EBADMSG;

    memset(&m, 0, sizeof(m));
    if (!data || len == 0 || len > 4096)
        return -EBADMSG;
    root = json_loadb(data, len, 0, &jerr);
    if (!root)
        return -EBADMSG;
    id = json_object_get(root, "id");
    state = json_object_get(root, "state");
    v = json_object_get(root, "v");
    ip = json_object_get(root, "ip");
    port = json_object_get(root, "port");
    gen = json_object_get(root, "gen");
    cid = json_object_get(root, "cid");
    if (!json_is_string(id) || !wg_session_id_valid(json_string_value(id), json_string_length(id)))
        goto out;
    memcpy(m.id, json_string_value(id), json_string_length(id) + 1);
    if (!json_is_string(state) ||
        wg_session_state_parse(json_string_value(state), json_string_length(state), &m.state) < 0)
        goto out;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        goto out;
    m.version = (uint64_t)json_integer_value(v);
    if (ip) {
        if (!json_is_string(ip) || json_string_length(ip) > WG_SESSION_IP_MAX ||
            strlen(json_string_value(ip)) != json_string_length(ip) ||
            (inet_pton(AF_INET, json_string_value(ip), addr) != 1 &&
             inet_pton(AF_INET6, json_string_value(ip), addr) != 1))
            goto out;
        memcpy(m.ip, json_string_value(ip), json_string_length(ip) + 1);
    }
    if (port) {
        if (!json_is_integer(port) || json_integer_value(port) < 1 ||
            json_integer_value(port) > 65535)
            goto out;
        m.port = (uint16_t)json_integer_value(port);
    }
    /* A decimal string: Lua numbers would round a 64-bit value. */
    if (gen) {
        const char *g = json_string_value(gen);
        char *end = NULL;
        if (g == NULL || g[0] < '0' || g[0] > '9' || json_string_length(gen) > 20)
            goto out;
        errno = 0;
        unsigned long long u = strtoull(g, &end, 10);
        if (errno != 0 || end == NULL || *end != '\0')
            goto out;
        m.gen = (uint64_t)u;
    }
    /* The container the record names: lowercase hex, as the record holds it. */
    if (cid) {
        const char *c = json_string_value(cid);
        size_t n = json_string_length(cid);
        if (c == NULL || n == 0 || n > WG_SESSION_CONTAINER_ID_MAX || strlen(c) != n ||
            strspn(c, "0123456789abcdef") != n)
            goto out;
        memcpy(m.container_id, c, n + 1);
    }
    *ret_msg = m;
    rc = 0;
out:
    json_decref(root);
    return rc;
}
