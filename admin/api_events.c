/* admin/api_events.c - GET /v1/events: server-sent events from wg:events
 * (the format is in api.h). A stream first replays what follows its
 * Last-Event-ID or ?since (XRANGE on the shared command connection, a page
 * at a time, pausing while the client has not read), then is fed by the
 * one reader of the process (XREAD BLOCK on a connection of its own) that
 * fans new entries out to every live stream. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "admin/api_int.h"
#include "common/log.h"
#include "common/redis.h"

/* ---- stream ids and the SSE text ----------------------------------------------------------- */

static int parse_u64(const char *s, size_t len, uint64_t *ret)
{
    uint64_t v = 0;
    if (len == 0 || len > 20)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -EINVAL;
        v = v * 10 + d;
    }
    *ret = v;
    return 0;
}

int wg_api_sid_parse(const char *s, size_t len, struct wg_api_sid *ret)
{
    struct wg_api_sid sid = {0, 0};
    const char *dash = memchr(s, '-', len);
    if (dash == NULL) {
        if (parse_u64(s, len, &sid.ms) < 0)
            return -EINVAL;
    } else if (parse_u64(s, (size_t)(dash - s), &sid.ms) < 0 ||
               parse_u64(dash + 1, len - (size_t)(dash - s) - 1, &sid.seq) < 0) {
        return -EINVAL;
    }
    *ret = sid;
    return 0;
}

int wg_api_sid_cmp(const struct wg_api_sid *a, const struct wg_api_sid *b)
{
    if (a->ms != b->ms)
        return a->ms < b->ms ? -1 : 1;
    if (a->seq != b->seq)
        return a->seq < b->seq ? -1 : 1;
    return 0;
}

static void sid_format(const struct wg_api_sid *sid, char out[API_SID_TEXT_MAX])
{
    snprintf(out, API_SID_TEXT_MAX, "%" PRIu64 "-%" PRIu64, sid->ms, sid->seq);
}

/* An event type safe for the "event:" line; anything else is "message". */
static bool event_type_ok(const char *s, size_t len)
{
    if (len == 0 || len > 32)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '.'))
            return false;
    }
    return true;
}

int wg_api_sse_event(struct wg_buf *out, const char *stream_id, const struct wg_session_kv *kv,
                     size_t n)
{
    json_t *o = json_object();
    const char *type = "message";
    size_t type_len = 7;
    char *text = NULL;
    int rc = -ENOMEM;

    if (o == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *val = NULL;
        uint64_t num;
        if (api_span_is(kv[i].name, kv[i].name_len, "type") &&
            event_type_ok(kv[i].value, kv[i].value_len)) {
            type = kv[i].value;
            type_len = kv[i].value_len;
        }
        if ((api_span_is(kv[i].name, kv[i].name_len, "at") ||
             api_span_is(kv[i].name, kv[i].name_len, "v")) &&
            parse_u64(kv[i].value, kv[i].value_len, &num) == 0 && num <= INT64_MAX)
            val = json_integer((json_int_t)num);
        else if (api_span_is(kv[i].name, kv[i].name_len, "detail"))
            val = json_loadb(kv[i].value, kv[i].value_len, 0, NULL);
        if (val == NULL)
            val = json_stringn(kv[i].value, kv[i].value_len);
        if (val == NULL) { /* not UTF-8: what wakegate writes never is */
            char *clean = malloc(kv[i].value_len + 1);
            if (clean == NULL)
                goto out;
            wg_session_clean_text(clean, kv[i].value_len + 1, kv[i].value, kv[i].value_len);
            val = json_string(clean);
            free(clean);
            if (val == NULL)
                goto out;
        }
        /* A name that is not UTF-8 is left out (jansson refuses it). */
        char *name = strndup(kv[i].name, kv[i].name_len);
        if (name == NULL) {
            json_decref(val);
            goto out;
        }
        json_object_set_new(o, name, val);
        free(name);
    }
    /* ENSURE_ASCII: the text has no raw bytes a client could mis-split, and
     * jansson escapes every control character, so the data is one line. */
    text = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (text == NULL)
        goto out;
    rc = wg_buf_appendf(out, "id: %s\nevent: %.*s\ndata: %s\n\n", stream_id, (int)type_len, type,
                        text);
out:
    free(text);
    json_decref(o);
    return rc;
}

/* ---- a stream: replay until it meets the reader -------------------------------------------- */

static void reader_read(struct wg_api *api);
static void sse_fetch(struct call *c);

/* Ends a stream: the client is gone, too slow, or we shut down. The caller
 * runs api_call_maybe_free(c). */
static void stream_drop(struct call *c)
{
    struct wg_admin_req *req = c->req;
    c->req = NULL;
    api_call_unlist(c);
    if (req != NULL)
        wg_admin_stream_end(req);
}

static int stream_send(struct call *c, const char *data, size_t len)
{
    if (c->req == NULL || wg_admin_stream_write(c->req, data, len) < 0) {
        stream_drop(c);
        return -EPIPE;
    }
    return 0;
}

/* One XRANGE/XREAD entry: [id, [field, value, ...] | nil]. Fills *sid and
 * appends the SSE message to out (nothing for a deleted entry). */
static int entry_format(const redisReply *e, struct wg_api_sid *sid, struct wg_buf *out)
{
    struct wg_session_kv kv[32];
    size_t n = 0;
    if (e == NULL || e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING ||
        wg_api_sid_parse(e->element[0]->str, e->element[0]->len, sid) < 0)
        return -EPROTO;
    const redisReply *f = e->element[1];
    if (f->type != REDIS_REPLY_ARRAY)
        return 0;
    for (size_t i = 0; i + 1 < f->elements && n < sizeof(kv) / sizeof(kv[0]); i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        kv[n++] = (struct wg_session_kv){k->str, k->len, v->str, v->len};
    }
    char text[API_SID_TEXT_MAX];
    sid_format(sid, text);
    return wg_api_sse_event(out, text, kv, n);
}

static void on_sse_range(int status, redisReply *reply, void *arg)
{
    struct call *c = arg;
    c->pending--;
    c->fetching = false;
    if (!api_call_live(c) || !c->streaming) {
        api_call_maybe_free(c);
        return;
    }
    struct wg_api *api = c->api;
    if (status != 0 || reply->type != REDIS_REPLY_ARRAY) {
        WG_DEBUG(api->log, API_SUBSYS, "event replay read failed, retrying", "status=%d", status);
        c->retry_at = api_now_ms(api) + API_READER_RETRY_MS;
        api_call_maybe_free(c);
        return;
    }
    struct wg_buf out;
    wg_buf_init(&out, SIZE_MAX);
    for (size_t i = 0; i < reply->elements; i++) {
        struct wg_api_sid sid;
        wg_buf_reset(&out);
        if (entry_format(reply->element[i], &sid, &out) < 0)
            continue;
        if (wg_api_sid_cmp(&sid, &c->last) <= 0)
            continue;
        c->last = sid;
        if (wg_buf_size(&out) > 0 && stream_send(c, wg_buf_head(&out), wg_buf_size(&out)) < 0)
            break;
    }
    wg_buf_release(&out);
    if (c->req != NULL) {
        if (reply->elements >= WG_API_REPLAY_PAGE) {
            sse_fetch(c);
        } else {
            /* A short page covers everything up to the reader's position
             * when it was sent: what is missing there was deleted. */
            if (c->issued_ready && wg_api_sid_cmp(&c->last, &c->issued_live) < 0)
                c->last = c->issued_live;
            if (api->rd_ready && wg_api_sid_cmp(&c->last, &api->live) >= 0)
                c->live = true;
            else if (api->rd_ready)
                sse_fetch(c);
            else
                c->retry_at = api_now_ms(api) + API_TICK_MS;
        }
    }
    api_call_maybe_free(c);
}

/* Replays what follows c->last, a page at a time, until it meets the
 * reader (then c->live). */
static void sse_fetch(struct call *c)
{
    struct wg_api *api = c->api;
    char start[API_SID_TEXT_MAX + 1], count[16];
    if (c->fetching || c->live || c->need_tip || c->req == NULL)
        return;
    if (wg_admin_stream_queued(c->req) > WG_ADMIN_STREAM_QUEUE_MAX / 2) {
        c->stalled = true; /* the tick resumes when the client has read */
        return;
    }
    c->stalled = false;
    c->issued_ready = api->rd_ready;
    c->issued_live = api->live;
    start[0] = '(';
    sid_format(&c->last, start + 1);
    snprintf(count, sizeof(count), "%d", WG_API_REPLAY_PAGE);
    if (wg_redis_command(api->redis, on_sse_range, c, "XRANGE %s %s + COUNT %s",
                         WG_STORE_KEY_EVENTS, start, count) == 0) {
        c->pending++;
        c->fetching = true;
    } else {
        c->retry_at = api_now_ms(api) + API_READER_RETRY_MS;
    }
}

/* The end of wg:events: [[id, fields]] or []. */
static int tip_parse(const redisReply *reply, struct wg_api_sid *sid)
{
    if (reply->type != REDIS_REPLY_ARRAY)
        return -EPROTO;
    if (reply->elements == 0) {
        *sid = (struct wg_api_sid){0, 0};
        return 0;
    }
    const redisReply *e = reply->element[0];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 1 ||
        e->element[0]->type != REDIS_REPLY_STRING)
        return -EPROTO;
    return wg_api_sid_parse(e->element[0]->str, e->element[0]->len, sid);
}

static void on_sse_tip(int status, redisReply *reply, void *arg)
{
    struct call *c = arg;
    c->pending--;
    c->fetching = false;
    if (api_call_live(c) && c->streaming) {
        if (status == 0 && tip_parse(reply, &c->last) == 0) {
            c->need_tip = false;
            sse_fetch(c);
        } else {
            c->retry_at = api_now_ms(c->api) + API_READER_RETRY_MS;
        }
    }
    api_call_maybe_free(c);
}

static void sse_tip(struct call *c)
{
    if (c->fetching || c->req == NULL)
        return;
    if (wg_redis_command(c->api->redis, on_sse_tip, c, "XREVRANGE %s + - COUNT 1",
                         WG_STORE_KEY_EVENTS) == 0) {
        c->pending++;
        c->fetching = true;
    } else {
        c->retry_at = api_now_ms(c->api) + API_READER_RETRY_MS;
    }
}

/* ---- the events reader: one XREAD BLOCK loop for every stream ------------------------------ */

static void reader_failed(struct wg_api *api, int status, const redisReply *reply)
{
    char q[API_ERR_MAX];
    const char *why = status != 0 ? strerror(-status) : reply && reply->str ? reply->str : "?";
    WG_DEBUG(api->log, API_SUBSYS, "events reader failed, retrying", "status=%d error=%s", status,
             wg_log_quote(q, sizeof(q), why, strlen(why)));
    api->rd_retry_at = api_now_ms(api) + API_READER_RETRY_MS;
}

static void on_rd_read(int status, redisReply *reply, void *arg)
{
    struct wg_api *api = arg;
    api->rd_inflight = false;
    if (api->freeing)
        return;
    if (status != 0 || (reply->type != REDIS_REPLY_NIL && reply->type != REDIS_REPLY_ARRAY)) {
        reader_failed(api, status, reply);
        return;
    }
    /* nil: the block timed out. Else [[key, [entry...]]]. */
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
        reply->element[0]->type == REDIS_REPLY_ARRAY && reply->element[0]->elements == 2 &&
        reply->element[0]->element[1]->type == REDIS_REPLY_ARRAY) {
        const redisReply *entries = reply->element[0]->element[1];
        struct wg_buf out;
        wg_buf_init(&out, SIZE_MAX);
        for (size_t i = 0; i < entries->elements; i++) {
            struct wg_api_sid sid;
            wg_buf_reset(&out);
            if (entry_format(entries->element[i], &sid, &out) < 0)
                continue;
            if (wg_api_sid_cmp(&sid, &api->live) > 0)
                api->live = sid;
            struct wg_list *n, *next;
            for (n = api->streams.next; n != &api->streams; n = next) {
                struct call *c = wg_container_of(n, struct call, link);
                next = n->next;
                if (!c->live || wg_api_sid_cmp(&sid, &c->last) <= 0)
                    continue;
                c->last = sid;
                if (wg_buf_size(&out) > 0 &&
                    stream_send(c, wg_buf_head(&out), wg_buf_size(&out)) < 0)
                    api_call_maybe_free(c);
            }
        }
        wg_buf_release(&out);
    }
    reader_read(api);
}

static void on_rd_tip(int status, redisReply *reply, void *arg)
{
    struct wg_api *api = arg;
    api->rd_inflight = false;
    if (api->freeing)
        return;
    if (status != 0 || tip_parse(reply, &api->live) < 0) {
        reader_failed(api, status, reply);
        return;
    }
    api->rd_ready = true;
    reader_read(api);
}

static void reader_read(struct wg_api *api)
{
    char start[API_SID_TEXT_MAX], count[16], block[16];
    if (api->n_streams == 0) {
        /* Nobody listens: stop; the next stream starts from the end again. */
        api->rd_running = false;
        api->rd_ready = false;
        return;
    }
    sid_format(&api->live, start);
    snprintf(count, sizeof(count), "%d", WG_API_REPLAY_PAGE);
    snprintf(block, sizeof(block), "%d", WG_API_READ_BLOCK_MS);
    int rc = wg_redis_command(api->reader, on_rd_read, api, "XREAD COUNT %s BLOCK %s STREAMS %s %s",
                              count, block, WG_STORE_KEY_EVENTS, start);
    if (rc == 0)
        api->rd_inflight = true;
    else
        reader_failed(api, rc, NULL);
}

static void reader_tip(struct wg_api *api)
{
    int rc = wg_redis_command(api->reader, on_rd_tip, api, "XREVRANGE %s + - COUNT 1",
                              WG_STORE_KEY_EVENTS);
    if (rc == 0)
        api->rd_inflight = true;
    else
        reader_failed(api, rc, NULL);
}

static void reader_ensure(struct wg_api *api)
{
    if (api->reader == NULL) {
        struct wg_redis_opts o = {
            .name = "api-events",
            .command_timeout_ms = WG_API_READ_BLOCK_MS + WG_REDIS_COMMAND_TIMEOUT_MS,
        };
        if (wg_redis_new(api->loop, api->cfg->redis_url, &o, api->log, &api->reader) < 0) {
            api->reader = NULL;
            return; /* streams replay by polling XRANGE; the tick tries again */
        }
    }
    if (api->rd_running)
        return;
    api->rd_running = true;
    api->rd_ready = false;
    api->rd_retry_at = 0;
    if (!api->rd_inflight)
        reader_tip(api);
}

void api_handle_events(struct wg_api *api, struct wg_admin_req *req,
                       const struct wg_admin_request *info)
{
    struct wg_api_sid since = {0, 0};
    bool has_since = false;
    const char *v;
    size_t vl;
    static const char hello[] = ": wakegate events\n\n";

    if (info->last_event_id != NULL) {
        if (wg_api_sid_parse(info->last_event_id, info->last_event_id_len, &since) < 0) {
            wg_admin_respond_error(req, 400, NULL,
                                   "header Last-Event-ID: must be a stream id \"<ms>-<seq>\"");
            return;
        }
        has_since = true;
    } else if (wg_api_query_get(info->query, info->query_len, "since", &v, &vl)) {
        if (wg_api_sid_parse(v, vl, &since) < 0) {
            wg_admin_respond_error(req, 400, NULL,
                                   "query since: must be a stream id \"<ms>-<seq>\" or \"<ms>\"");
            return;
        }
        has_since = true;
    }
    if (api->n_streams >= WG_API_STREAMS_MAX) {
        wg_admin_respond_error(req, 503, "Retry-After: 5\r\n", "too many event streams");
        return;
    }
    struct call *c = api_call_new(api, req, C_EVENTS, NULL);
    if (c == NULL)
        return;
    wg_list_remove(&c->link);
    wg_list_push_back(&api->streams, &c->link);
    c->streaming = true;
    api->n_streams++;
    c->next_ping = api_now_ms(api) + api->heartbeat_ms;
    if (wg_admin_stream_begin(req, 200, "text/event-stream; charset=utf-8",
                              "X-Accel-Buffering: no\r\n") < 0 ||
        stream_send(c, hello, sizeof(hello) - 1) < 0) {
        stream_drop(c);
        api_call_maybe_free(c);
        return;
    }
    api_tick_ensure(api);
    reader_ensure(api);
    /* Nothing can follow the largest id (and Redis refuses "(max"). */
    if (has_since && (since.ms != UINT64_MAX || since.seq != UINT64_MAX)) {
        c->last = since;
        sse_fetch(c);
    } else {
        c->need_tip = true;
        sse_tip(c);
    }
}

/* ---- the tick's part ----------------------------------------------------------------------- */

void api_events_tick(struct wg_api *api, uint64_t now)
{
    struct wg_list *n, *next;
    static const char ping[] = ": ping\n\n";

    for (n = api->streams.next; n != &api->streams; n = next) {
        struct call *c = wg_container_of(n, struct call, link);
        next = n->next;
        if (now >= c->next_ping) {
            c->next_ping = now + api->heartbeat_ms;
            if (stream_send(c, ping, sizeof(ping) - 1) < 0) {
                api_call_maybe_free(c);
                continue;
            }
        }
        if (c->live || c->fetching)
            continue;
        if (c->stalled) {
            if (wg_admin_stream_queued(c->req) <= WG_ADMIN_STREAM_QUEUE_MAX / 2)
                sse_fetch(c);
        } else if (now >= c->retry_at) {
            if (c->need_tip)
                sse_tip(c);
            else
                sse_fetch(c);
        }
    }
    if (api->n_streams > 0 && !api->rd_running)
        reader_ensure(api);
    if (api->rd_running && !api->rd_inflight && now >= api->rd_retry_at) {
        if (api->rd_ready)
            reader_read(api);
        else
            reader_tip(api);
    }
}
