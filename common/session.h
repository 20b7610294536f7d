/* common/session.h - the session model: lifecycle states, the table of
 * valid moves, session ids, and the record with its codecs (Redis hash, JSON).
 *
 * Pure code: no I/O, no loop. common/store does the Redis side.
 *
 * Session ids. One strict pattern, everywhere an id enters the system:
 *
 *     ^[a-z0-9][a-z0-9_-]{0,62}$
 *
 * An id becomes a DNS label ("{session}.preview.example.com"), a Redis key
 * part, a URL path segment and a container name, so: lowercase (DNS is
 * case-insensitive, and two spellings of one session must not be two
 * sessions), at most 63 bytes (the DNS label limit), no '.', '/', ':', '{',
 * space or control byte (no path traversal, no key-space games), and no
 * leading '-' or '_' (flag-like arguments, odd DNS labels). Callers that
 * receive mixed case (Host headers) decide themselves whether to fold it.
 *
 * Errors: 0, -errno, or a positive outcome documented at the function. */
#ifndef WG_COMMON_SESSION_H
#define WG_COMMON_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* HAProxy style: the [transient] states are those an actor is in the middle
 * of; a session stuck in one past its deadline is recovered by the lifecycle.
 * The others are resting states. The order is part of nothing persistent:
 * records store the names. */
enum wg_session_state {
    WG_SESSION_CREATING = 0, /* [transient] record made, no container yet */
    WG_SESSION_STARTING,     /* [transient] create/start/unpause issued, waiting for readiness */
    WG_SESSION_RUNNING,      /* ready: routes send traffic */
    WG_SESSION_DRAINING,     /* [transient] idle: waiting for in-flight requests before saving */
    WG_SESSION_SAVING,       /* [transient] the auto-save hook runs in the container */
    WG_SESSION_STOPPING,     /* [transient] docker stop issued */
    WG_SESSION_ASLEEP,       /* container stopped (or not created yet); work saved */
    WG_SESSION_PAUSED,       /* container frozen (light sleep); unpause wakes in ~10 ms */
    WG_SESSION_FAILED,       /* start, stop or the container failed; see error */
    WG_SESSION_DESTROYED,    /* terminal: container removed, record deleted */
    WG_SESSION_LOST,         /* its host's heartbeat expired: no route; a wake re-places it */
};
#define WG_SESSION_STATE_COUNT 11

#define WG_SESSION_BIT(s) (1u << (unsigned)(s))
#define WG_SESSION_TRANSIENT                                                                       \
    (WG_SESSION_BIT(WG_SESSION_CREATING) | WG_SESSION_BIT(WG_SESSION_STARTING) |                   \
     WG_SESSION_BIT(WG_SESSION_DRAINING) | WG_SESSION_BIT(WG_SESSION_SAVING) |                     \
     WG_SESSION_BIT(WG_SESSION_STOPPING))
#define WG_SESSION_ANY ((1u << WG_SESSION_STATE_COUNT) - 1u)
/* True when s is one of the states in mask (WG_SESSION_BIT()s or'ed). */
#define WG_SESSION_IN(s, mask) ((WG_SESSION_BIT(s) & (mask)) != 0)

/* "creating", "starting", ...; "?" for a value out of range. */
const char *wg_session_state_name(enum wg_session_state s);
/* Exact, case-sensitive names only. Returns 0 or -EINVAL. */
int wg_session_state_parse(const char *s, size_t len, enum wg_session_state *ret_state);
bool wg_session_state_transient(enum wg_session_state s);

/* The table of valid moves (session.c documents each). A state never moves
 * to itself: changing fields without a move is wg_store_update(). */
bool wg_session_can_move(enum wg_session_state from, enum wg_session_state to);
/* The states from which `to` may be entered, as a WG_SESSION_BIT() mask
 * (0 for an out-of-range `to`). */
unsigned wg_session_allowed_from(enum wg_session_state to);
/* Why that move exists, for log lines and docs; NULL when it is not valid. */
const char *wg_session_move_reason(enum wg_session_state from, enum wg_session_state to);

#define WG_SESSION_ID_MAX 63
/* The pattern above. s need not be NUL-terminated; an embedded NUL is
 * invalid. */
bool wg_session_id_valid(const char *s, size_t len);

/* Orchestrator host names (docker.name; part of the key wg:wake:{host}):
 * ^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$ - a DNS name or a simple word. */
bool wg_session_host_valid(const char *s, size_t len);

/* Bounds of the record's text fields, in bytes (without the NUL). Decoding
 * rejects longer values; the store refuses to write them. */
#define WG_SESSION_HOST_MAX 253        /* orchestrator host name (docker.name), see below */
#define WG_SESSION_CONTAINER_ID_MAX 64 /* Docker ids: 64 lowercase hex (12+ when short) */
#define WG_SESSION_IP_MAX 45           /* textual IPv4 or IPv6 */
#define WG_SESSION_IMAGE_MAX 255       /* image reference */
#define WG_SESSION_TEMPLATE_MAX 63     /* template name (sessions:/templates: in the config) */
#define WG_SESSION_COMMIT_MAX 64       /* git object name: SHA-1 (40) or SHA-256 (64) hex */
#define WG_SESSION_OUTPUT_MAX 4096     /* tail of the save hook's output */
#define WG_SESSION_ERROR_MAX 1024      /* last error text */
#define WG_SESSION_SPEC_MAX 16384      /* the container spec, JSON text */
#define WG_SESSION_PLACE_MAX 1024      /* the placement labels a host must have, JSON text */

struct wg_session_save {
    int64_t at; /* ms since the epoch; 0: never saved (then the rest is unset) */
    bool ok;
    int exit_code; /* the hook's exit status; negative: killed (timeout, signal) */
    char commit[WG_SESSION_COMMIT_MAX + 1]; /* "" when nothing was committed */
    char *output;                           /* owned, UTF-8, NULL when none */
};

/* A session record. Times are ms since the epoch, 0 when unknown. Strings
 * are "" (arrays) or NULL (pointers, owned) when unset. Release with
 * wg_session_release(). */
struct wg_session {
    char id[WG_SESSION_ID_MAX + 1];
    enum wg_session_state state;
    int64_t state_since;
    char host[WG_SESSION_HOST_MAX + 1]; /* the orchestrator host that owns the container */
    char container_id[WG_SESSION_CONTAINER_ID_MAX + 1];
    char ip[WG_SESSION_IP_MAX + 1];
    uint16_t port; /* container port routes reach; 0: the configured default */
    char image[WG_SESSION_IMAGE_MAX + 1];
    char template_name[WG_SESSION_TEMPLATE_MAX + 1]; /* "" for records of before templates */
    int64_t created;
    int64_t last_active;
    uint32_t restarts; /* consecutive crash restarts, for the backoff */
    struct wg_session_save last_save;
    char *error; /* owned, UTF-8, NULL when none */
    /* Owned JSON text: what the container is created from on its first wake
     * ({"cmd":[...],"env":[...],"labels":{...},"binds":[...]}, all optional),
     * written by the admin API from a validated request; NULL when none. */
    char *spec;
    uint64_t version; /* bumped by every write through the store; 1 after create */
    /* The access generation: random at creation, replaced by a revoke;
     * signed links and their cookies carry it (common/access.h). 0 for
     * records written before it existed. */
    uint64_t gen;
    /* Placement: bumped by every placement and re-placement (1 after the
     * first), so an orchestrator's write can be fenced by the host and
     * epoch it read; 0 for records of before placement. */
    uint64_t epoch;
    bool pin; /* its template pins it to its host: a lost host's wake waits for it */
    /* JSON object text of the labels a host must have ({"k":"v"}), "" for
     * none; a re-placement applies them again. */
    char place_labels[WG_SESSION_PLACE_MAX + 1];
    /* Per-session overrides from labels (wakegate.idle.stop_after, ...);
     * unset: the configured default applies. 0 disables the tier. */
    bool has_idle_stop_after;
    uint64_t idle_stop_after_ms;
    bool has_idle_pause_after;
    uint64_t idle_pause_after_ms;
};

/* Zeroes rec: no id, state creating, nothing owned. */
void wg_session_init(struct wg_session *rec);
/* Frees what rec owns and zeroes it. NULL-safe; rec may be reused. */
void wg_session_release(struct wg_session *rec);
/* Deep copy into dst (which must hold nothing owned). Returns 0 or -ENOMEM
 * (dst then holds nothing). */
int wg_session_copy(struct wg_session *dst, const struct wg_session *src);

/* One hash field. Neither string needs a NUL terminator. */
struct wg_session_kv {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* The Redis hash fields of a record, names as stored:
 *   id state state_since host container_id ip port image created last_active
 *   restarts save_at save_ok save_exit_code save_commit save_output error v
 *   idle_stop_after_ms idle_pause_after_ms spec template gen epoch pin
 *   place_labels
 * Numbers are plain decimal (no sign except save_exit_code, no leading
 * zeros, no spaces); save_ok is "0" or "1". An unset field is absent. */
#define WG_SESSION_FIELDS 26

/* Encoded fields. Values point into the record and into num[], so they are
 * valid while both live and are unchanged. */
struct wg_session_hash {
    size_t n;
    struct wg_session_kv kv[WG_SESSION_FIELDS];
    char num[WG_SESSION_FIELDS][24];
};

/* Encodes every set field of rec, after checking each with the rules that
 * decoding applies (so what is written can always be read back). Returns 0,
 * or -EINVAL naming the bad field in err (always NUL-terminated when
 * errlen > 0). */
int wg_session_encode(const struct wg_session *rec, struct wg_session_hash *out, char *err,
                      size_t errlen);

/* Decodes HGETALL's field/value pairs. Strict, for input that may be hostile
 * or garbled: id and state are required; every known field must be in bounds
 * and well-formed (numbers, IPs, hex ids, UTF-8 text without NUL); a field
 * given twice is an error; unknown fields are ignored (newer writers may add
 * some). On success *ret_rec is filled (it must hold nothing owned); on
 * failure it is left alone and the result is -EBADMSG (err names the field
 * and the problem, never echoing the value), -ENOMEM, or -EINVAL (kv NULL
 * with n > 0). */
int wg_session_decode(const struct wg_session_kv *kv, size_t n, struct wg_session *ret_rec,
                      char *err, size_t errlen);

/* Admin API shape: {"id", "state", "state_since", "host", "container_id",
 * "ip", "port", "last_active", "last_save": {"at", "ok", "exit_code",
 * "commit", "output"} | null, "error"}, plus "image", "created", "restarts",
 * "version", "spec" (the container spec as written, but "env" as the names
 * only: {} for none, null when unreadable) and "idle": {"stop_after_ms",
 * "pause_after_ms"} (overrides only).
 * Unset strings, a 0 port and unknown times are null. Returns a new
 * reference, or NULL when out of memory. */
json_t *wg_session_to_json(const struct wg_session *rec);

/* Field changes carried by a transition or an update (see common/store).
 * Only the fields whose WG_SF_ bit is in `set` are written. A string field
 * that is set to NULL or "" is removed from the record; so is a port of 0
 * and an idle override with has_ false. Values must pass the same checks as
 * wg_session_encode() (clean free text first with wg_session_clean_text()). */
enum wg_session_field {
    WG_SF_HOST = 1u << 0,
    WG_SF_CONTAINER_ID = 1u << 1,
    WG_SF_IP = 1u << 2,
    WG_SF_PORT = 1u << 3,
    WG_SF_IMAGE = 1u << 4,
    WG_SF_RESTARTS = 1u << 5,      /* set restarts to the value */
    WG_SF_RESTARTS_INCR = 1u << 6, /* add one, atomically (not with WG_SF_RESTARTS) */
    WG_SF_LAST_SAVE = 1u << 7,     /* all of last_save; at == 0 clears it */
    WG_SF_ERROR = 1u << 8,
    WG_SF_IDLE_STOP_AFTER = 1u << 9,
    WG_SF_IDLE_PAUSE_AFTER = 1u << 10,
    WG_SF_SPEC = 1u << 11,
    WG_SF_TEMPLATE = 1u << 12,
    WG_SF_GEN = 1u << 13, /* the access generation (create, revoke) */
    WG_SF_PIN = 1u << 14, /* pin and place_labels (create) */
};

struct wg_session_update {
    unsigned set; /* WG_SF_* */
    const char *host;
    const char *container_id;
    const char *ip;
    uint16_t port;
    const char *image;
    uint32_t restarts;
    struct {
        int64_t at;
        bool ok;
        int exit_code;
        const char *commit;
        const char *output;
    } last_save;
    const char *error;
    const char *spec;
    const char *template_name;
    uint64_t gen;
    bool has_idle_stop_after;
    uint64_t idle_stop_after_ms;
    bool has_idle_pause_after;
    uint64_t idle_pause_after_ms;
    bool pin;
    const char *place_labels; /* JSON object text; NULL or "" for none */
    /* The fence (not a field): when fence_host is set, the store refuses
     * the write with WG_STORE_FENCED unless the record's host is fence_host
     * and, when fence_epoch > 0, its epoch is fence_epoch. */
    const char *fence_host;
    uint64_t fence_epoch;
};

/* Encodes u as hash fields; a field to remove has an empty value. Restarts
 * increments are not fields: see wg_store_transition(). Returns 0 or -EINVAL
 * (err names the field). u may be NULL (no fields). */
int wg_session_update_encode(const struct wg_session_update *u, struct wg_session_hash *out,
                             char *err, size_t errlen);

/* Makes untrusted text (hook output, Docker messages) storable: keeps the
 * last dstlen-1 bytes at most, cut at a character boundary (the tail says
 * why a hook failed), turns invalid UTF-8, NUL and control bytes other than
 * \n and \t into '?'. Always NUL-terminates (dstlen > 0). Returns dst. */
char *wg_session_clean_text(char *dst, size_t dstlen, const char *src, size_t len);

#endif
