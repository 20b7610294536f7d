/* common/session.c - the session model; see session.h. */
#include "common/session.h"
#include "common/utf8.h"
#include "common/str.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- states ------------------------------------------------------------------------------------
 */

static const char *const state_names[WG_SESSION_STATE_COUNT] = {
    [WG_SESSION_CREATING] = "creating", [WG_SESSION_STARTING] = "starting",
    [WG_SESSION_RUNNING] = "running",   [WG_SESSION_DRAINING] = "draining",
    [WG_SESSION_SAVING] = "saving",     [WG_SESSION_STOPPING] = "stopping",
    [WG_SESSION_ASLEEP] = "asleep",     [WG_SESSION_PAUSED] = "paused",
    [WG_SESSION_FAILED] = "failed",     [WG_SESSION_DESTROYED] = "destroyed",
    [WG_SESSION_LOST] = "lost",
};

const char *wg_session_state_name(enum wg_session_state s)
{
    if ((unsigned)s >= WG_SESSION_STATE_COUNT)
        return "?";
    return state_names[s];
}

int wg_session_state_parse(const char *s, size_t len, enum wg_session_state *ret_state)
{
    if (!s)
        return -EINVAL;
    for (unsigned i = 0; i < WG_SESSION_STATE_COUNT; i++) {
        if (strlen(state_names[i]) == len && memcmp(state_names[i], s, len) == 0) {
            *ret_state = (enum wg_session_state)i;
            return 0;
        }
    }
    return -EINVAL;
}

bool wg_session_state_transient(enum wg_session_state s)
{
    return (unsigned)s < WG_SESSION_STATE_COUNT && WG_SESSION_IN(s, WG_SESSION_TRANSIENT);
}

/* ---- the table of valid moves ------------------------------------------------------------------
 */

#define S(x) WG_SESSION_##x

struct move {
    enum wg_session_state from, to;
    const char *reason;
};

/* Derived from DESIGN.md "Session lifecycle". Three kinds of move:
 * the lifecycle's own steps (wake, sleep, save), cancellations (a request
 * during draining/saving keeps the session awake), and corrections, where
 * Docker's truth wins over Redis (reconciliation at startup and from the
 * /events stream, and recovery of a session stuck in a transient state).
 * Corrections are listed so that they are visible and logged as moves, not
 * written around the table. `stopping` has no way back to running: a request
 * during a stop is held and wakes the session after `asleep`. Every state but
 * destroyed may go to destroyed; nothing leaves destroyed. */
static const struct move moves[] = {
    {S(CREATING), S(STARTING), "first wake: create and start the container"},
    {S(CREATING), S(ASLEEP), "created without a wake, or adopted a stopped container"},
    {S(CREATING), S(RUNNING), "adopted a running container labelled wakegate.session"},
    {S(CREATING), S(PAUSED), "adopted a paused container labelled wakegate.session"},
    {S(CREATING), S(FAILED), "docker create failed, or creating stuck past its deadline"},

    {S(STARTING), S(RUNNING), "ready: Docker health is healthy, or the probe answered"},
    {S(STARTING), S(FAILED), "start failed, or not ready by the wake deadline"},
    {S(STARTING), S(ASLEEP), "the Docker engine was unreachable until the wake deadline"},

    {S(RUNNING), S(DRAINING), "idle past a tier: let in-flight requests finish first"},
    {S(RUNNING), S(PAUSED), "short-idle tier: freeze; memory and files are kept"},
    {S(RUNNING), S(STOPPING), "forced sleep or delete (force=1): no save"},
    {S(RUNNING), S(FAILED), "the container died or was OOM-killed (Docker events)"},
    {S(RUNNING), S(ASLEEP), "the container was stopped outside wakegate"},

    {S(DRAINING), S(SAVING), "in-flight work done (or drain deadline): run the save hook"},
    {S(DRAINING), S(PAUSED), "drained; short-idle tier without a save: freeze"},
    {S(DRAINING), S(RUNNING), "a request arrived: sleep cancelled, or drain stuck"},
    {S(DRAINING), S(FAILED), "the container died while draining"},
    {S(DRAINING), S(ASLEEP), "the container was stopped outside wakegate while draining"},

    {S(SAVING), S(STOPPING), "saved; long-idle tier: stop"},
    {S(SAVING), S(PAUSED), "saved; short-idle tier: freeze"},
    {S(SAVING), S(RUNNING), "a request arrived, or the save failed: keep the container awake"},
    {S(SAVING), S(FAILED), "the container died during the save"},
    {S(SAVING), S(ASLEEP), "the container was stopped outside wakegate while saving"},

    {S(STOPPING), S(ASLEEP), "stopped"},
    {S(STOPPING), S(FAILED), "stop failed, or stopping stuck past its deadline"},

    {S(ASLEEP), S(STARTING), "wake: start the container (re-create it when missing)"},
    {S(ASLEEP), S(RUNNING), "Docker says running while Redis said asleep"},
    {S(ASLEEP), S(PAUSED), "Docker says paused while Redis said asleep"},

    {S(PAUSED), S(STARTING), "wake: unpause"},
    {S(PAUSED), S(SAVING), "long-idle tier while paused without a save: unpause and save"},
    {S(PAUSED), S(STOPPING), "long-idle tier while paused after a save: stop"},
    {S(PAUSED), S(RUNNING), "unpaused outside wakegate"},
    {S(PAUSED), S(ASLEEP), "stopped outside wakegate while paused"},
    {S(PAUSED), S(FAILED), "the container died or vanished while paused"},

    {S(FAILED), S(STARTING), "retry after the crash-loop cooldown, or an explicit wake"},
    {S(FAILED), S(STOPPING), "stop a container that a failed start left running"},
    {S(FAILED), S(ASLEEP), "Docker shows the container stopped: failure cleared"},

    {S(CREATING), S(DESTROYED), "deleted"},
    {S(STARTING), S(DESTROYED), "deleted"},
    {S(RUNNING), S(DESTROYED), "deleted"},
    {S(DRAINING), S(DESTROYED), "deleted"},
    {S(SAVING), S(DESTROYED), "deleted"},
    {S(STOPPING), S(DESTROYED), "deleted"},
    {S(ASLEEP), S(DESTROYED), "deleted (saved before it slept)"},
    {S(PAUSED), S(DESTROYED), "deleted"},
    {S(FAILED), S(DESTROYED), "deleted"},

    /* A lost host: its heartbeat expired (the store's sweep). Nothing can
     * be asked of its engine, so every state it held goes to lost; its
     * container, if the host comes back, is the returning host's to clean. */
    {S(CREATING), S(LOST), "its host's heartbeat expired"},
    {S(STARTING), S(LOST), "its host's heartbeat expired"},
    {S(RUNNING), S(LOST), "its host's heartbeat expired"},
    {S(DRAINING), S(LOST), "its host's heartbeat expired"},
    {S(SAVING), S(LOST), "its host's heartbeat expired"},
    {S(STOPPING), S(LOST), "its host's heartbeat expired"},
    {S(ASLEEP), S(LOST), "its host's heartbeat expired"},
    {S(PAUSED), S(LOST), "its host's heartbeat expired"},
    {S(FAILED), S(LOST), "its host's heartbeat expired"},
    {S(LOST), S(ASLEEP), "re-placed on a live host by a wake; its work comes back from git"},
    {S(LOST), S(STARTING), "a wake on its host, back or pinned"},
    {S(LOST), S(RUNNING), "its host came back and Docker says running"},
    {S(LOST), S(PAUSED), "its host came back and Docker says paused"},
    {S(LOST), S(DESTROYED), "deleted"},
};

#undef S

static const struct move *find_move(enum wg_session_state from, enum wg_session_state to)
{
    for (size_t i = 0; i < sizeof(moves) / sizeof(moves[0]); i++)
        if (moves[i].from == from && moves[i].to == to)
            return &moves[i];
    return NULL;
}

bool wg_session_can_move(enum wg_session_state from, enum wg_session_state to)
{
    return find_move(from, to) != NULL;
}

unsigned wg_session_allowed_from(enum wg_session_state to)
{
    unsigned mask = 0;

    for (size_t i = 0; i < sizeof(moves) / sizeof(moves[0]); i++)
        if (moves[i].to == to)
            mask |= WG_SESSION_BIT(moves[i].from);
    return mask;
}

const char *wg_session_move_reason(enum wg_session_state from, enum wg_session_state to)
{
    const struct move *m = find_move(from, to);

    return m ? m->reason : NULL;
}

/* ---- ids ---------------------------------------------------------------------------------------
 */

static bool is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
    return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

bool wg_session_id_valid(const char *s, size_t len)
{
    if (!s || len == 0 || len > WG_SESSION_ID_MAX || !is_lower_alnum(s[0]))
        return false;
    for (size_t i = 1; i < len; i++)
        if (!is_lower_alnum(s[i]) && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

bool wg_session_host_valid(const char *s, size_t len)
{
    if (!s || len == 0 || len > WG_SESSION_HOST_MAX || !is_alnum(s[0]))
        return false;
    for (size_t i = 1; i < len; i++)
        if (!is_alnum(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

/* ---- text --------------------------------------------------------------------------------------
 */

static bool text_char_ok(unsigned char c)
{
    return c >= 0x20 ? c != 0x7f : (c == '\n' || c == '\t');
}

/* Free text as stored: valid UTF-8, no NUL, no control byte but \n and \t. */
static bool text_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;

    for (size_t i = 0; i < len;) {
        size_t n = wg_utf8_seq(p + i, len - i);
        if (n == 0 || (n == 1 && !text_char_ok(p[i])))
            return false;
        i += n;
    }
    return true;
}

char *wg_session_clean_text(char *dst, size_t dstlen, const char *src, size_t len)
{
    const unsigned char *p = (const unsigned char *)src;
    size_t start = 0, o = 0;

    if (dstlen == 0)
        return dst;
    if (!src)
        len = 0;
    if (len > dstlen - 1) {
        start = len - (dstlen - 1);
        /* Do not begin inside a character: skip its continuation bytes. */
        for (int k = 0; k < 3 && start < len && (p[start] & 0xc0) == 0x80; k++)
            start++;
    }
    for (size_t i = start; i < len;) {
        size_t n = wg_utf8_seq(p + i, len - i);
        if (n == 0 || (n == 1 && !text_char_ok(p[i]))) {
            dst[o++] = '?';
            i++;
            continue;
        }
        memcpy(dst + o, p + i, n);
        o += n;
        i += n;
    }
    dst[o] = '\0';
    return dst;
}

/* ---- field rules -------------------------------------------------------------------------------
 */

enum kind {
    K_ID,    /* session id pattern */
    K_STATE, /* a state name */
    K_UINT,  /* decimal, 0..max */
    K_INT,   /* decimal with optional '-', INT32 range */
    K_BOOL,  /* "0" or "1" */
    K_PORT,  /* 1..65535 */
    K_HOST,  /* wg_session_host_valid */
    K_HEX,   /* lowercase hex, min..max bytes */
    K_IP,    /* textual IPv4 or IPv6 */
    K_IMAGE, /* printable ASCII without space, 1..max */
    K_TEXT,  /* text_valid, 1..max */
};

enum fidx {
    F_ID,
    F_STATE,
    F_STATE_SINCE,
    F_HOST,
    F_CONTAINER_ID,
    F_IP,
    F_PORT,
    F_IMAGE,
    F_CREATED,
    F_LAST_ACTIVE,
    F_RESTARTS,
    F_SAVE_AT,
    F_SAVE_OK,
    F_SAVE_EXIT,
    F_SAVE_COMMIT,
    F_SAVE_OUTPUT,
    F_ERROR,
    F_V,
    F_IDLE_STOP,
    F_IDLE_PAUSE,
    F_SPEC,
    F_TEMPLATE,
    F_GEN,
    F_EPOCH,
    F_PIN,
    F_PLACE_LABELS,
    F__COUNT
};

_Static_assert(F__COUNT == WG_SESSION_FIELDS, "session.h lists every hash field");
_Static_assert(F__COUNT <= 32, "seen[] is a 32-bit mask");

struct field_def {
    const char *name;
    enum kind kind;
    size_t min, max; /* bytes, for K_HEX, K_IMAGE, K_TEXT */
    uint64_t nmax;   /* K_UINT */
};

static const struct field_def fields[F__COUNT] = {
    [F_ID] = {"id", K_ID, 0, 0, 0},
    [F_STATE] = {"state", K_STATE, 0, 0, 0},
    [F_STATE_SINCE] = {"state_since", K_UINT, 0, 0, INT64_MAX},
    [F_HOST] = {"host", K_HOST, 0, 0, 0},
    [F_CONTAINER_ID] = {"container_id", K_HEX, 1, WG_SESSION_CONTAINER_ID_MAX, 0},
    [F_IP] = {"ip", K_IP, 0, 0, 0},
    [F_PORT] = {"port", K_PORT, 0, 0, 0},
    [F_IMAGE] = {"image", K_IMAGE, 1, WG_SESSION_IMAGE_MAX, 0},
    [F_CREATED] = {"created", K_UINT, 0, 0, INT64_MAX},
    [F_LAST_ACTIVE] = {"last_active", K_UINT, 0, 0, INT64_MAX},
    [F_RESTARTS] = {"restarts", K_UINT, 0, 0, UINT32_MAX},
    [F_SAVE_AT] = {"save_at", K_UINT, 0, 0, INT64_MAX},
    [F_SAVE_OK] = {"save_ok", K_BOOL, 0, 0, 0},
    [F_SAVE_EXIT] = {"save_exit_code", K_INT, 0, 0, 0},
    [F_SAVE_COMMIT] = {"save_commit", K_HEX, 4, WG_SESSION_COMMIT_MAX, 0},
    [F_SAVE_OUTPUT] = {"save_output", K_TEXT, 1, WG_SESSION_OUTPUT_MAX, 0},
    [F_ERROR] = {"error", K_TEXT, 1, WG_SESSION_ERROR_MAX, 0},
    [F_V] = {"v", K_UINT, 0, 0, INT64_MAX},
    [F_IDLE_STOP] = {"idle_stop_after_ms", K_UINT, 0, 0, INT64_MAX},
    [F_IDLE_PAUSE] = {"idle_pause_after_ms", K_UINT, 0, 0, INT64_MAX},
    [F_SPEC] = {"spec", K_TEXT, 2, WG_SESSION_SPEC_MAX, 0},
    [F_TEMPLATE] = {"template", K_IMAGE, 1, WG_SESSION_TEMPLATE_MAX, 0},
    [F_GEN] = {"gen", K_UINT, 0, 0, UINT64_MAX},
    [F_EPOCH] = {"epoch", K_UINT, 0, 0, INT64_MAX},
    [F_PIN] = {"pin", K_BOOL, 0, 0, 0},
    [F_PLACE_LABELS] = {"place_labels", K_TEXT, 2, WG_SESSION_PLACE_MAX, 0},
};

/* Plain decimal: 1-20 digits, no sign, no leading zero (but "0"), <= max. */
static int parse_uint(const char *s, size_t len, uint64_t max, uint64_t *ret)
{
    uint64_t v = 0;

    if (len == 0 || len > 20 || (len > 1 && s[0] == '0'))
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - d) / 10)
            return -EINVAL;
        v = v * 10 + d;
    }
    if (v > max)
        return -EINVAL;
    *ret = v;
    return 0;
}

static int parse_int(const char *s, size_t len, int *ret)
{
    uint64_t v;
    bool neg = len > 0 && s[0] == '-';

    if (parse_uint(s + neg, len - neg, neg ? (uint64_t)INT32_MAX + 1 : INT32_MAX, &v) < 0 ||
        (neg && v == 0))
        return -EINVAL;
    *ret = neg ? (int)(-(int64_t)v) : (int)v;
    return 0;
}

static bool ip_valid(const char *s, size_t len)
{
    char tmp[WG_SESSION_IP_MAX + 1];
    unsigned char addr[16];

    if (len == 0 || len > WG_SESSION_IP_MAX || memchr(s, '\0', len))
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    return inet_pton(AF_INET, tmp, addr) == 1 || inet_pton(AF_INET6, tmp, addr) == 1;
}

/* The one check both directions use. Returns a short problem text, or NULL
 * when the value is acceptable. Never echoes the value: it may be hostile. */
static const char *field_problem(enum fidx f, const char *v, size_t len)
{
    const struct field_def *d = &fields[f];
    uint64_t u;
    int i;
    enum wg_session_state st;

    switch (d->kind) {
    case K_ID:
        return wg_session_id_valid(v, len) ? NULL : "not a valid session id";
    case K_STATE:
        return wg_session_state_parse(v, len, &st) == 0 ? NULL : "unknown state";
    case K_UINT:
        return parse_uint(v, len, d->nmax, &u) == 0 ? NULL : "not a number in range";
    case K_INT:
        return parse_int(v, len, &i) == 0 ? NULL : "not an integer in range";
    case K_BOOL:
        return len == 1 && (v[0] == '0' || v[0] == '1') ? NULL : "not 0 or 1";
    case K_PORT:
        return parse_uint(v, len, 65535, &u) == 0 && u > 0 ? NULL : "not a port 1-65535";
    case K_HOST:
        return wg_session_host_valid(v, len) ? NULL : "not a valid host name";
    case K_HEX:
        if (len < d->min || len > d->max)
            return "bad length";
        for (size_t k = 0; k < len; k++)
            if (!((v[k] >= '0' && v[k] <= '9') || (v[k] >= 'a' && v[k] <= 'f')))
                return "not lowercase hex";
        return NULL;
    case K_IP:
        return ip_valid(v, len) ? NULL : "not an IP address";
    case K_IMAGE:
        if (len < d->min || len > d->max)
            return "bad length";
        for (size_t k = 0; k < len; k++)
            if (v[k] <= 0x20 || v[k] >= 0x7f)
                return "not printable ASCII";
        return NULL;
    case K_TEXT:
        if (len < d->min || len > d->max)
            return "bad length";
        return text_valid(v, len) ? NULL : "not clean UTF-8 text";
    }
    return "unknown kind";
}

static int field_lookup(const char *name, size_t len)
{
    for (int f = 0; f < F__COUNT; f++)
        if (strlen(fields[f].name) == len && memcmp(fields[f].name, name, len) == 0)
            return f;
    return -1;
}

/* ---- record ------------------------------------------------------------------------------------
 */

void wg_session_init(struct wg_session *rec)
{
    memset(rec, 0, sizeof(*rec));
}

void wg_session_release(struct wg_session *rec)
{
    if (!rec)
        return;
    free(rec->error);
    rec->error = NULL;
    free(rec->spec);
    rec->spec = NULL;
    free(rec->last_save.output);
    rec->last_save.output = NULL;
    wg_session_init(rec);
}

int wg_session_copy(struct wg_session *dst, const struct wg_session *src)
{
    *dst = *src;
    dst->error = NULL;
    dst->spec = NULL;
    dst->last_save.output = NULL;
    if (src->error && !(dst->error = strdup(src->error)))
        goto nomem;
    if (src->spec && !(dst->spec = strdup(src->spec)))
        goto nomem;
    if (src->last_save.output && !(dst->last_save.output = strdup(src->last_save.output)))
        goto nomem;
    return 0;
nomem:
    wg_session_release(dst);
    return -ENOMEM;
}

/* Copies a checked value into a fixed array of size cap (> len). */
static void set_fixed(char *dst, size_t cap, const char *v, size_t len)
{
    if (len >= cap)
        len = cap - 1; /* not reached: the rules bound every fixed field */
    memcpy(dst, v, len);
    dst[len] = '\0';
}

/* The fixed-size text member that field f fills, with its size; NULL for
 * other fields. */
static char *fixed_text(struct wg_session *rec, enum fidx f, size_t *ret_size)
{
    switch (f) {
    case F_ID:
        *ret_size = sizeof(rec->id);
        return rec->id;
    case F_HOST:
        *ret_size = sizeof(rec->host);
        return rec->host;
    case F_CONTAINER_ID:
        *ret_size = sizeof(rec->container_id);
        return rec->container_id;
    case F_IP:
        *ret_size = sizeof(rec->ip);
        return rec->ip;
    case F_IMAGE:
        *ret_size = sizeof(rec->image);
        return rec->image;
    case F_TEMPLATE:
        *ret_size = sizeof(rec->template_name);
        return rec->template_name;
    case F_PLACE_LABELS:
        *ret_size = sizeof(rec->place_labels);
        return rec->place_labels;
    case F_SAVE_COMMIT:
        *ret_size = sizeof(rec->last_save.commit);
        return rec->last_save.commit;
    default:
        return NULL;
    }
}

/* The allocated text member that field f fills; NULL for other fields. */
static char **owned_text(struct wg_session *rec, enum fidx f)
{
    switch (f) {
    case F_SAVE_OUTPUT:
        return &rec->last_save.output;
    case F_ERROR:
        return &rec->error;
    case F_SPEC:
        return &rec->spec;
    default:
        return NULL;
    }
}

/* A field that is neither kind of text: a number, the state or a flag. */
static void store_value(struct wg_session *rec, enum fidx f, const char *v, size_t len)
{
    uint64_t u = 0;

    if (fields[f].kind == K_UINT || fields[f].kind == K_PORT)
        parse_uint(v, len, fields[f].kind == K_PORT ? 65535 : fields[f].nmax, &u);
    switch (f) {
    case F_STATE:
        wg_session_state_parse(v, len, &rec->state);
        break;
    case F_STATE_SINCE:
        rec->state_since = (int64_t)u;
        break;
    case F_PORT:
        rec->port = (uint16_t)u;
        break;
    case F_CREATED:
        rec->created = (int64_t)u;
        break;
    case F_LAST_ACTIVE:
        rec->last_active = (int64_t)u;
        break;
    case F_RESTARTS:
        rec->restarts = (uint32_t)u;
        break;
    case F_SAVE_AT:
        rec->last_save.at = (int64_t)u;
        break;
    case F_SAVE_OK:
        rec->last_save.ok = v[0] == '1';
        break;
    case F_SAVE_EXIT:
        parse_int(v, len, &rec->last_save.exit_code);
        break;
    case F_V:
        rec->version = u;
        break;
    case F_GEN:
        rec->gen = u;
        break;
    case F_EPOCH:
        rec->epoch = u;
        break;
    case F_PIN:
        rec->pin = v[0] == '1';
        break;
    case F_IDLE_STOP:
        rec->has_idle_stop_after = true;
        rec->idle_stop_after_ms = u;
        break;
    case F_IDLE_PAUSE:
        rec->has_idle_pause_after = true;
        rec->idle_pause_after_ms = u;
        break;
    default:
        break;
    }
}

/* Stores one checked value into rec. Owned strings it allocates are
 * released with rec. */
static int field_store(struct wg_session *rec, enum fidx f, const char *v, size_t len)
{
    size_t size = 0;
    char *fixed = fixed_text(rec, f, &size);
    char **owned = owned_text(rec, f);

    if (fixed) {
        set_fixed(fixed, size, v, len);
        return 0;
    }
    if (owned) {
        *owned = strndup(v, len);
        return *owned ? 0 : -ENOMEM;
    }
    store_value(rec, f, v, len);
    return 0;
}

int wg_session_decode(const struct wg_session_kv *kv, size_t n, struct wg_session *ret_rec,
                      char *err, size_t errlen)
{
    struct wg_session rec;
    uint32_t seen = 0;
    int rc = 0;

    wg_session_init(&rec);
    wg_errf(err, errlen, "%s", "");
    if (!kv && n > 0) {
        rc = -EINVAL;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        int f = kv[i].name ? field_lookup(kv[i].name, kv[i].name_len) : -1;
        const char *problem;

        if (f < 0)
            continue; /* a newer writer's field */
        if (seen & (1u << f)) {
            wg_errf(err, errlen, "field %s: given twice", fields[f].name);
            rc = -EBADMSG;
            goto out;
        }
        seen |= 1u << f;
        problem = kv[i].value ? field_problem((enum fidx)f, kv[i].value, kv[i].value_len)
                              : "missing value";
        if (problem) {
            wg_errf(err, errlen, "field %s: %s", fields[f].name, problem);
            rc = -EBADMSG;
            goto out;
        }
        if ((rc = field_store(&rec, (enum fidx)f, kv[i].value, kv[i].value_len)) < 0)
            goto out;
    }
    if (!(seen & (1u << F_ID)) || !(seen & (1u << F_STATE))) {
        wg_errf(err, errlen, "field %s: missing", !(seen & (1u << F_ID)) ? "id" : "state");
        rc = -EBADMSG;
        goto out;
    }
    *ret_rec = rec;
    return 0;
out:
    if (rc == -ENOMEM)
        wg_errf(err, errlen, "out of memory");
    wg_session_release(&rec);
    return rc;
}

/* A hash being encoded. The first failure sticks: later puts do nothing,
 * so an encoder puts every field and checks rc once at the end. */
struct enc {
    struct wg_session_hash *out;
    char *err;
    size_t errlen;
    int rc; /* 0, or the first failure (-EINVAL, with err set) */
};

/* Appends one field after checking it; len 0 with allow_empty means
 * "remove" (updates only). */
static void put(struct enc *e, enum fidx f, const char *v, size_t len, bool allow_empty)
{
    struct wg_session_hash *out = e->out;
    const char *problem;

    if (e->rc < 0)
        return;
    if (!(allow_empty && len == 0) && (problem = field_problem(f, v, len)) != NULL) {
        wg_errf(e->err, e->errlen, "field %s: %s", fields[f].name, problem);
        e->rc = -EINVAL;
        return;
    }
    if (out->n >= WG_SESSION_FIELDS) {
        wg_errf(e->err, e->errlen, "too many fields");
        e->rc = -EINVAL;
        return;
    }
    out->kv[out->n] = (struct wg_session_kv){
        .name = fields[f].name, .name_len = strlen(fields[f].name), .value = v, .value_len = len};
    out->n++;
}

static void put_str(struct enc *e, enum fidx f, const char *s, bool allow_empty)
{
    put(e, f, s ? s : "", s ? strlen(s) : 0, allow_empty);
}

static void put_u64(struct enc *e, enum fidx f, uint64_t v)
{
    char *buf = e->out->num[e->out->n < WG_SESSION_FIELDS ? e->out->n : 0];
    int n;

    if (e->rc < 0)
        return;
    n = snprintf(buf, sizeof(e->out->num[0]), "%" PRIu64, v);
    put(e, f, buf, (size_t)n, false);
}

static void put_i64(struct enc *e, enum fidx f, int64_t v)
{
    char *buf = e->out->num[e->out->n < WG_SESSION_FIELDS ? e->out->n : 0];
    int n;

    if (e->rc < 0)
        return;
    n = snprintf(buf, sizeof(e->out->num[0]), "%" PRId64, v);
    put(e, f, buf, (size_t)n, false);
}

int wg_session_encode(const struct wg_session *rec, struct wg_session_hash *out, char *err,
                      size_t errlen)
{
    struct enc e = {.out = out, .err = err, .errlen = errlen};

    out->n = 0;
    wg_errf(err, errlen, "%s", "");
    put_str(&e, F_ID, rec->id, false);
    put_str(&e, F_STATE, wg_session_state_name(rec->state), false);
    if (rec->state_since)
        put_i64(&e, F_STATE_SINCE, rec->state_since);
    if (rec->host[0])
        put_str(&e, F_HOST, rec->host, false);
    if (rec->container_id[0])
        put_str(&e, F_CONTAINER_ID, rec->container_id, false);
    if (rec->ip[0])
        put_str(&e, F_IP, rec->ip, false);
    if (rec->port)
        put_u64(&e, F_PORT, rec->port);
    if (rec->image[0])
        put_str(&e, F_IMAGE, rec->image, false);
    if (rec->created)
        put_i64(&e, F_CREATED, rec->created);
    if (rec->last_active)
        put_i64(&e, F_LAST_ACTIVE, rec->last_active);
    if (rec->restarts)
        put_u64(&e, F_RESTARTS, rec->restarts);
    if (rec->last_save.at) {
        put_i64(&e, F_SAVE_AT, rec->last_save.at);
        put_str(&e, F_SAVE_OK, rec->last_save.ok ? "1" : "0", false);
        put_i64(&e, F_SAVE_EXIT, rec->last_save.exit_code);
        if (rec->last_save.commit[0])
            put_str(&e, F_SAVE_COMMIT, rec->last_save.commit, false);
        if (rec->last_save.output && rec->last_save.output[0])
            put_str(&e, F_SAVE_OUTPUT, rec->last_save.output, false);
    }
    if (rec->error && rec->error[0])
        put_str(&e, F_ERROR, rec->error, false);
    if (rec->spec && rec->spec[0])
        put_str(&e, F_SPEC, rec->spec, false);
    if (rec->template_name[0])
        put_str(&e, F_TEMPLATE, rec->template_name, false);
    if (rec->version)
        put_u64(&e, F_V, rec->version);
    if (rec->gen)
        put_u64(&e, F_GEN, rec->gen);
    if (rec->epoch)
        put_u64(&e, F_EPOCH, rec->epoch);
    if (rec->pin)
        put_str(&e, F_PIN, "1", false);
    if (rec->place_labels[0])
        put_str(&e, F_PLACE_LABELS, rec->place_labels, false);
    if (rec->has_idle_stop_after)
        put_u64(&e, F_IDLE_STOP, rec->idle_stop_after_ms);
    if (rec->has_idle_pause_after)
        put_u64(&e, F_IDLE_PAUSE, rec->idle_pause_after_ms);
    return e.rc;
}

int wg_session_update_encode(const struct wg_session_update *u, struct wg_session_hash *out,
                             char *err, size_t errlen)
{
    struct enc e = {.out = out, .err = err, .errlen = errlen};

    out->n = 0;
    wg_errf(err, errlen, "%s", "");
    if (!u)
        return 0;
    if ((u->set & WG_SF_RESTARTS) && (u->set & WG_SF_RESTARTS_INCR)) {
        wg_errf(err, errlen, "restarts: both set and increment");
        return -EINVAL;
    }
    if (u->set & WG_SF_HOST)
        put_str(&e, F_HOST, u->host, true);
    if (u->set & WG_SF_CONTAINER_ID)
        put_str(&e, F_CONTAINER_ID, u->container_id, true);
    if (u->set & WG_SF_IP)
        put_str(&e, F_IP, u->ip, true);
    if ((u->set & WG_SF_PORT) && u->port)
        put_u64(&e, F_PORT, u->port);
    else if (u->set & WG_SF_PORT)
        put_str(&e, F_PORT, NULL, true);
    if (u->set & WG_SF_IMAGE)
        put_str(&e, F_IMAGE, u->image, true);
    if (u->set & WG_SF_RESTARTS)
        put_u64(&e, F_RESTARTS, u->restarts);
    if ((u->set & WG_SF_LAST_SAVE) && u->last_save.at > 0) {
        put_i64(&e, F_SAVE_AT, u->last_save.at);
        put_str(&e, F_SAVE_OK, u->last_save.ok ? "1" : "0", false);
        put_i64(&e, F_SAVE_EXIT, u->last_save.exit_code);
        put_str(&e, F_SAVE_COMMIT, u->last_save.commit, true);
        put_str(&e, F_SAVE_OUTPUT, u->last_save.output, true);
    } else if (u->set & WG_SF_LAST_SAVE) {
        if (u->last_save.at < 0) {
            wg_errf(err, errlen, "field save_at: negative");
            return -EINVAL;
        }
        for (enum fidx f = F_SAVE_AT; f <= F_SAVE_OUTPUT; f++)
            put_str(&e, f, NULL, true);
    }
    if (u->set & WG_SF_ERROR)
        put_str(&e, F_ERROR, u->error, true);
    if (u->set & WG_SF_SPEC)
        put_str(&e, F_SPEC, u->spec, true);
    if (u->set & WG_SF_TEMPLATE)
        put_str(&e, F_TEMPLATE, u->template_name, true);
    if (u->set & WG_SF_GEN)
        put_u64(&e, F_GEN, u->gen);
    if (u->set & WG_SF_PIN) {
        put_str(&e, F_PIN, u->pin ? "1" : "", true);
        put_str(&e, F_PLACE_LABELS, u->place_labels, true);
    }
    if ((u->set & WG_SF_IDLE_STOP_AFTER) && u->has_idle_stop_after)
        put_u64(&e, F_IDLE_STOP, u->idle_stop_after_ms);
    else if (u->set & WG_SF_IDLE_STOP_AFTER)
        put_str(&e, F_IDLE_STOP, NULL, true);
    if ((u->set & WG_SF_IDLE_PAUSE_AFTER) && u->has_idle_pause_after)
        put_u64(&e, F_IDLE_PAUSE, u->idle_pause_after_ms);
    else if (u->set & WG_SF_IDLE_PAUSE_AFTER)
        put_str(&e, F_IDLE_PAUSE, NULL, true);
    return e.rc;
}

/* ---- JSON --------------------------------------------------------------------------------------
 */

/* NULL (out of memory, or text that is not UTF-8) poisons the object build. */
static json_t *str_or_null(const char *s)
{
    return s && s[0] ? json_string(s) : json_null();
}

static json_t *time_or_null(int64_t ms)
{
    return ms > 0 ? json_integer(ms) : json_null();
}

/* Sets key to v; a NULL v (failed constructor) fails the build. */
static int set(json_t *obj, const char *key, json_t *v)
{
    return v && json_object_set_new(obj, key, v) == 0 ? 0 : -ENOMEM;
}

/* The record's container spec as the admin API shows it: its members as
 * written, but env as the variables' names only - values may be secrets,
 * and the read-only token reads every record. {} for none, null for a text
 * that is not a JSON object (a record written by hand). */
static json_t *spec_json(const char *text)
{
    json_t *spec = text && text[0] ? json_loads(text, 0, NULL) : json_object();
    json_t *env, *names, *e;
    size_t i;

    if (spec == NULL || !json_is_object(spec)) {
        json_decref(spec);
        return json_null();
    }
    env = json_object_get(spec, "env");
    if (env == NULL)
        return spec;
    names = json_array();
    json_array_foreach(env, i, e)
    {
        const char *v = json_string_value(e), *eq = v ? strchr(v, '=') : NULL;
        if (names != NULL && v != NULL &&
            json_array_append_new(names, json_stringn(v, eq ? (size_t)(eq - v) : strlen(v))) < 0) {
            json_decref(names);
            names = NULL;
        }
    }
    if (names == NULL || json_object_set_new(spec, "env", names) < 0) {
        json_decref(spec);
        return NULL;
    }
    return spec;
}

json_t *wg_session_to_json(const struct wg_session *rec)
{
    json_t *o = json_object(), *save = NULL, *idle = NULL;
    int rc = 0;

    if (!o)
        return NULL;
    rc |= set(o, "id", json_string(rec->id));
    rc |= set(o, "state", json_string(wg_session_state_name(rec->state)));
    rc |= set(o, "state_since", time_or_null(rec->state_since));
    rc |= set(o, "host", str_or_null(rec->host));
    rc |= set(o, "container_id", str_or_null(rec->container_id));
    rc |= set(o, "ip", str_or_null(rec->ip));
    rc |= set(o, "port", rec->port ? json_integer(rec->port) : json_null());
    rc |= set(o, "last_active", time_or_null(rec->last_active));
    if (rec->last_save.at > 0) {
        save = json_object();
        if (save) {
            rc |= set(save, "at", json_integer(rec->last_save.at));
            rc |= set(save, "ok", json_boolean(rec->last_save.ok));
            rc |= set(save, "exit_code", json_integer(rec->last_save.exit_code));
            rc |= set(save, "commit", str_or_null(rec->last_save.commit));
            rc |= set(save, "output", str_or_null(rec->last_save.output));
        }
        rc |= set(o, "last_save", save);
    } else {
        rc |= set(o, "last_save", json_null());
    }
    rc |= set(o, "error", str_or_null(rec->error));
    rc |= set(o, "image", str_or_null(rec->image));
    if (rec->template_name[0])
        rc |= set(o, "template", json_string(rec->template_name));
    rc |= set(o, "created", time_or_null(rec->created));
    if (rec->epoch)
        rc |= set(o, "epoch", json_integer((json_int_t)rec->epoch));
    if (rec->pin)
        rc |= set(o, "pin", json_true());
    if (rec->place_labels[0]) {
        json_t *pl = json_loads(rec->place_labels, 0, NULL);
        rc |= set(o, "placement_labels", json_is_object(pl) ? pl : json_null());
        if (pl && !json_is_object(pl))
            json_decref(pl);
    }
    rc |= set(o, "restarts", json_integer(rec->restarts));
    rc |= set(o, "version", json_integer((json_int_t)rec->version));
    rc |= set(o, "spec", spec_json(rec->spec));
    if (rec->has_idle_stop_after || rec->has_idle_pause_after) {
        idle = json_object();
        if (idle && rec->has_idle_stop_after)
            rc |= set(idle, "stop_after_ms", json_integer((json_int_t)rec->idle_stop_after_ms));
        if (idle && rec->has_idle_pause_after)
            rc |= set(idle, "pause_after_ms", json_integer((json_int_t)rec->idle_pause_after_ms));
        rc |= set(o, "idle", idle);
    }
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}
