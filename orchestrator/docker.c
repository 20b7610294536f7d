/* orchestrator/docker.c - Docker Engine API client on libcurl multi + libuv; see docker.h.
 *
 * Ownership, written down once:
 * - d owns three handles (curl_timer: curl's timeout; wake: delayed
 *   requests and the name lookup's deadline; defer: work for the next loop
 *   turn), one struct sock per socket curl asked us to watch, and, while a
 *   name lookup runs, one uv_getaddrinfo_t. d->refs counts them; d is freed
 *   when the count reaches 0 after wg_docker_free(). So d outlives every
 *   callback that runs inside a loop turn, and code that calls out to user
 *   code only re-checks d->closed afterwards (our `disposed` guard).
 * - A struct sock is freed only in its poll handle's close callback.
 * - A struct req is on at most one of d's lists (queued, active, delayed),
 *   as q->where says. It is unlinked before its outcome is delivered, so a
 *   callback never sees it on a list. An exec call is a struct exec_op that
 *   runs its three steps as reqs one after the other; the op is freed when
 *   its outcome is delivered.
 *
 * curl facts this file relies on:
 * - While curl runs one of our callbacks (socket, timer, write, header),
 *   curl_multi_add_handle/remove_handle/cleanup must not be called: they
 *   answer CURLM_RECURSIVE_API_CALL. User code runs inside curl only from
 *   the events stream's write and header callbacks; there d->in_curl is
 *   set, new calls are queued for the `defer` handle (they always are),
 *   a stopped stream is removed by `defer`, and wg_docker_free() leaves
 *   the curl teardown to drive(), after curl returns.
 * - curl_multi_remove_handle() drops the handle's pending DONE message, so
 *   a request removed while messages are read is never seen again.
 * - curl tells the socket callback CURL_POLL_REMOVE before it closes a
 *   socket, so a uv_poll handle never watches a closed descriptor.
 * - libuv stops a poll handle after an error (EPOLLERR) and reports
 *   UV_EBADF; we hand curl the readiness it waited for plus
 *   CURL_CSELECT_ERR, so it reads or writes, meets the real error and
 *   reports it, and we re-arm the handle if curl still wants it. */
#include "orchestrator/docker.h"
#include "common/utf8.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <time.h>

#include <curl/curl.h>

#include "common/buf.h"
#include "common/docker_host.h"
#include "common/list.h"
#include "common/log.h"

#define SUBSYS "docker"
#define QUOTED_MAX 300
#define VERSION_MAX 16
#define MESSAGE_MAX 512
#define ERROR_MAX 1024
#define EXEC_POLL_MS 10   /* between exec inspects while the exec still runs */
#define EXEC_POLL_MAX 200 /* inspects after the output ended */
#define TEXT_MAX 4096     /* one string of a create spec, exec argv... */

/* ---- types --------------------------------------------------------------------------------- */

enum neg {
    NEG_NONE,      /* version unknown; the first versioned call starts negotiation */
    NEG_RESOLVING, /* [transient] uv_getaddrinfo for a tcp host name */
    NEG_PINGING,   /* [transient] the negotiation ping is in flight */
    NEG_DONE,      /* d->version holds the version */
};

enum req_kind {
    RK_PING,
    RK_VERSION,
    RK_CREATE,
    RK_START,
    RK_STOP,
    RK_PAUSE,
    RK_UNPAUSE,
    RK_INSPECT,
    RK_REMOVE,
    RK_LIST,
    RK_LOGS,
    RK_EXEC_CREATE,
    RK_EXEC_START,
    RK_EXEC_INSPECT,
    RK_EVENTS,
};

enum req_where { RQ_NONE, RQ_QUEUED, RQ_ACTIVE, RQ_DELAYED };

/* Demultiplexes Docker's attach/log stream: frames of an 8-byte header
 * (stream, 0, 0, 0, big-endian length) and data. A stream whose first bytes
 * cannot be such a header (a container with a TTY) passes through raw. */
enum demux_mode { DM_DETECT = 0, DM_MUX, DM_RAW };
struct demux {
    unsigned char hdr[8];
    unsigned have;
    uint32_t left;
    int stream;
    enum demux_mode mode;
};
typedef void demux_fn(void *arg, int stream, const char *p, size_t n);

struct req;
struct exec_op;
typedef void finish_fn(struct req *q, int status, struct wg_docker_reply *r);

struct req {
    struct wg_list node;
    struct wg_docker *d;
    /* Texts a finishing request builds for its reply: they must outlive the
     * finish function's frame while the reply is delivered. */
    char finish_msg[MESSAGE_MAX];
    char finish_error[ERROR_MAX];
    enum req_kind kind;
    enum req_where where;
    uint64_t seq;
    const char *method;
    char *path; /* unversioned, with query */
    char *sent; /* as sent (versioned), once active */
    char *body; /* request body, or NULL */
    size_t body_len;
    CURL *easy;
    struct curl_slist *hdrs;
    struct curl_slist *resolve;
    uint32_t timeout_ms;   /* 0: none */
    uint64_t deadline;     /* uv_now() ms; 0: none */
    uint64_t not_before;   /* RQ_DELAYED: when to queue it */
    uint64_t t_sent;       /* uv_hrtime() */
    uint32_t timeout_used; /* what curl was given, ms (0: none) */
    long code;             /* response status, once known */
    struct wg_buf resp;    /* JSON body, error body, or the events line */
    struct wg_buf out;     /* logs, exec start: output tail */
    bool out_truncated;
    struct demux dm;
    bool versioned, ok_304, streamed;
    bool overflow;  /* a cap was hit; the write callback aborted */
    bool canceled;  /* events stream stopped; no callback runs */
    bool delivered; /* the outcome went out (free cancels the rest) */
    bool internal;  /* the negotiation ping */
    bool opened;    /* events: OPEN went out */
    char errbuf[CURL_ERROR_SIZE];
    char server_version[VERSION_MAX];
    finish_fn *finish;
    wg_docker_cb *cb;
    void *arg;
    struct exec_op *op;
    wg_docker_event_cb *ev_cb;
};

struct exec_op {
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

struct sock {
    uv_poll_t poll;
    struct wg_docker *d;
    curl_socket_t fd;
    int events; /* UV_READABLE | UV_WRITABLE as curl wants */
    bool closing;
    struct wg_list node; /* d->socks */
};

struct wg_docker {
    uv_loop_t *loop;
    struct wg_log *log;
    struct wg_docker_host h;
    char *tls_ca, *tls_cert, *tls_key;
    bool tls_skip_verify;
    int max_major, max_minor;
    uint32_t timeout_ms, connect_timeout_ms;
    size_t max_body, max_output;
    char qhost[QUOTED_MAX];

    CURLM *multi;
    uv_timer_t curl_timer;
    uv_timer_t wake;
    uv_idle_t defer;
    uv_getaddrinfo_t gai;
    bool gai_busy;
    unsigned refs;
    int in_curl;  /* inside curl_multi_socket_action() */
    bool closed;  /* wg_docker_free() ran */
    bool torn;    /* curl and the handles are being released */
    bool tearing; /* inside curl_multi_cleanup() */

    enum neg neg;
    char version[VERSION_MAX];
    char *resolve_entry; /* "name:port:addr[,addr]" for CURLOPT_RESOLVE */
    uint64_t resolve_deadline;

    struct wg_list queued, active, delayed, socks;
    uint64_t seq;
};

static void kick(struct wg_docker *d);
static void teardown(struct wg_docker *d);
static void release(struct wg_docker *d);
static void rearm_wake(struct wg_docker *d);
static int submit(struct req *q);
static void req_free(struct req *q);

/* ---- small helpers -------------------------------------------------------------------------- */

static const char *quote(char *dst, size_t dstlen, const char *s)
{
    return wg_log_quote(dst, dstlen, s, strlen(s));
}

static __attribute__((format(printf, 1, 2))) char *strf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&s, fmt, ap);
    va_end(ap);
    return n < 0 ? NULL : s;
}

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

/* A container id as Docker returns it: 64 lowercase hex digits. */
static bool is_full_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n != 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static bool session_valid(const char *s)
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

/* Valid UTF-8 without control characters, 1..max bytes (0 allowed when
 * empty_ok): what may go into a JSON string we build. */
/* Printable UTF-8 up to max bytes; lines lets newlines and tabs through
 * (scripts in a command line). */
static bool text_ok_lines(const char *s, size_t max, bool empty_ok, bool lines)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n;

    if (!s)
        return false;
    n = strlen(s);
    if ((n == 0 && !empty_ok) || n > max)
        return false;
    for (size_t i = 0; i < n;) {
        size_t len = wg_utf8_seq(p + i, n - i);
        if (len == 0 || (len == 1 && (p[i] < 0x20 || p[i] == 0x7f) &&
                         !(lines && (p[i] == '\n' || p[i] == '\t'))))
            return false;
        i += len;
    }
    return true;
}

static bool text_ok(const char *s, size_t max, bool empty_ok)
{
    return text_ok_lines(s, max, empty_ok, false);
}

static const char *json_str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* ---- host strings --------------------------------------------------------------------------- */

/* ---- API version ---------------------------------------------------------------------------- */

/* "1.41" -> 1, 41. Returns 0 or -EINVAL. */
static int version_parse(const char *s, size_t n, int *ret_major, int *ret_minor)
{
    long v[2] = {0, 0};
    size_t i = 0;

    for (int part = 0; part < 2; part++) {
        size_t start = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            v[part] = v[part] * 10 + (s[i] - '0');
            if (v[part] > 999)
                return -EINVAL;
            i++;
        }
        if (i == start)
            return -EINVAL;
        if (part == 0) {
            if (i >= n || s[i] != '.')
                return -EINVAL;
            i++;
        }
    }
    if (i != n)
        return -EINVAL;
    *ret_major = (int)v[0];
    *ret_minor = (int)v[1];
    return 0;
}

static int version_cmp(int amaj, int amin, int bmaj, int bmin)
{
    if (amaj != bmaj)
        return amaj < bmaj ? -1 : 1;
    return amin < bmin ? -1 : amin > bmin;
}

/* The version to use given the engine's (server, may be "" when it sent
 * none) and ours. Writes "M.m" to out. Returns 0, -EPROTONOSUPPORT when
 * the engine is older than WG_DOCKER_API_MIN, or -EINVAL for a malformed
 * server version. */
static int version_negotiate(const char *server, int our_major, int our_minor, char *out,
                             size_t outlen)
{
    int smaj, smin, minmaj, minmin;

    if (!server || !server[0]) {
        /* Engines before 1.25 send no Api-Version; ours is all we can try. */
        snprintf(out, outlen, "%d.%d", our_major, our_minor);
        return 0;
    }
    if (version_parse(server, strlen(server), &smaj, &smin) < 0)
        return -EINVAL;
    version_parse(WG_DOCKER_API_MIN, strlen(WG_DOCKER_API_MIN), &minmaj, &minmin);
    if (version_cmp(smaj, smin, minmaj, minmin) < 0)
        return -EPROTONOSUPPORT;
    if (version_cmp(smaj, smin, our_major, our_minor) < 0)
        snprintf(out, outlen, "%d.%d", smaj, smin);
    else
        snprintf(out, outlen, "%d.%d", our_major, our_minor);
    return 0;
}

/* If line (one header line as curl hands it, CRLF included) is `name:
 * value`, points *ret at the trimmed value and returns its length; else -1. */
static long header_value(const char *line, size_t n, const char *name, const char **ret)
{
    size_t nl = strlen(name);
    const char *v, *end;

    if (n <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return -1;
    v = line + nl + 1;
    end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *ret = v;
    return (long)(end - v);
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

/* RFC 3339 ("2024-05-01T10:20:30.123456789Z", or with +hh:mm) to ms since
 * the epoch. Docker's zero time ("0001-01-01T00:00:00Z"), anything before
 * 1970 and anything malformed give 0. */
static int64_t rfc3339_ms(const char *s)
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

/* ---- stream helpers: demultiplexer, output tail, lines -------------------------------------- */

static void demux_feed(struct demux *m, const char *p, size_t n, demux_fn *fn, void *arg)
{
    while (n > 0) {
        if (m->mode == DM_RAW) {
            fn(arg, 1, p, n);
            return;
        }
        if (m->left > 0) {
            size_t k = n < m->left ? n : m->left;
            fn(arg, m->stream, p, k);
            p += k;
            n -= k;
            m->left -= (uint32_t)k;
            continue;
        }
        m->hdr[m->have++] = (unsigned char)*p++;
        n--;
        if (m->mode == DM_DETECT) {
            unsigned i = m->have - 1;
            /* A frame header starts with stream 0-2 and three zero bytes. */
            if ((i == 0 && m->hdr[0] > 2) || (i >= 1 && i <= 3 && m->hdr[i] != 0)) {
                m->mode = DM_RAW;
                fn(arg, 1, (const char *)m->hdr, m->have);
                m->have = 0;
                continue;
            }
        }
        if (m->have < 8)
            continue;
        m->mode = DM_MUX;
        m->stream = m->hdr[0];
        m->left = (uint32_t)m->hdr[4] << 24 | (uint32_t)m->hdr[5] << 16 | (uint32_t)m->hdr[6] << 8 |
                  (uint32_t)m->hdr[7];
        m->have = 0;
    }
}

/* At the end of the stream: bytes still held while detecting were raw. */
static void demux_end(struct demux *m, demux_fn *fn, void *arg)
{
    if (m->mode == DM_DETECT && m->have > 0)
        fn(arg, 1, (const char *)m->hdr, m->have);
    m->have = 0;
}

/* Appends p to b keeping only the last cap bytes; *trunc is set when
 * anything was dropped. b must have been initialised with max > cap. */
static void tail_append(struct wg_buf *b, size_t cap, const char *p, size_t n, bool *trunc)
{
    size_t have = wg_buf_size(b);

    if (n >= cap) {
        if (n > cap || have > 0)
            *trunc = true;
        wg_buf_reset(b);
        p += n - cap;
        n = cap;
    } else if (have + n > cap) {
        wg_buf_consume(b, have + n - cap);
        *trunc = true;
    }
    if (wg_buf_append(b, p, n) < 0)
        *trunc = true; /* out of memory: this piece is lost */
}

typedef int line_fn(void *arg, const char *line, size_t len);

/* Splits p into '\n'-terminated lines, calling fn for each complete one; a
 * partial line waits in b. Returns 0, -EMSGSIZE when a line grows past cap,
 * -ENOMEM, or fn's non-zero answer (which stops the feed). */
static int lines_feed(struct wg_buf *b, size_t cap, const char *p, size_t n, line_fn *fn, void *arg)
{
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        int rc;

        if (wg_buf_size(b) + take > cap)
            return -EMSGSIZE;
        if (!nl)
            return wg_buf_append(b, p, n) < 0 ? -ENOMEM : 0;
        if (wg_buf_size(b) == 0) {
            rc = fn(arg, p, take);
        } else {
            if (wg_buf_append(b, p, take) < 0)
                return -ENOMEM;
            rc = fn(arg, wg_buf_head(b), wg_buf_size(b));
            wg_buf_reset(b);
        }
        if (rc)
            return rc;
        p += take + 1;
        n -= take + 1;
    }
    return 0;
}

/* ---- JSON: events, inspect, list, create ---------------------------------------------------- */

/* Fills ev from one parsed events line. Strings point into root. Returns 0
 * or -EBADMSG (not an event object). */
static int event_from_json(json_t *root, struct wg_docker_event *ev)
{
    json_t *actor, *attrs, *t;
    const char *s;

    memset(ev, 0, sizeof(*ev));
    if (!json_is_object(root))
        return -EBADMSG;
    ev->kind = WG_DOCKER_EVENT;
    ev->type = json_str(root, "Type");
    ev->action = json_str(root, "Action");
    if (!ev->action[0])
        ev->action = json_str(root, "status"); /* the pre-1.22 field */
    actor = json_object_get(root, "Actor");
    ev->id = json_str(actor, "ID");
    if (!ev->id[0])
        ev->id = json_str(root, "id");
    attrs = json_object_get(actor, "Attributes");
    ev->attributes = json_is_object(attrs) ? attrs : NULL;
    if (!ev->action[0] || !ev->id[0])
        return -EBADMSG;
    if (!ev->type[0])
        ev->type = "container";
    ev->name = json_str(attrs, "name");
    s = json_string_value(json_object_get(attrs, WG_DOCKER_SESSION_LABEL));
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
    const char *ip = json_str(net, "IPAddress");
    json_t *nets = json_object_get(net, "Networks"), *v;
    const char *k;

    if (ip[0])
        return ip;
    ip = json_str(json_object_get(nets, "bridge"), "IPAddress");
    if (ip[0])
        return ip;
    json_object_foreach(nets, k, v)
    {
        ip = json_str(v, "IPAddress");
        if (ip[0])
            return ip;
    }
    return "";
}

/* Fills c from an inspect answer; strings point into root (which may get
 * an empty Config.Labels added). Returns 0 or -EBADMSG. */
static int container_from_json(json_t *root, struct wg_docker_container *c)
{
    json_t *state, *config, *health;
    const char *name;

    memset(c, 0, sizeof(*c));
    state = json_object_get(root, "State");
    c->id = json_str(root, "Id");
    if (!json_is_object(state) || !c->id[0])
        return -EBADMSG;
    name = json_str(root, "Name");
    c->name = name[0] == '/' ? name + 1 : name;
    config = object_at(root, "Config");
    c->image = json_str(config, "Image");
    c->tty = json_is_true(json_object_get(config, "Tty"));
    c->labels = object_at(config, "Labels");
    if (!c->labels)
        return -ENOMEM;
    c->status = json_str(state, "Status");
    c->running = json_is_true(json_object_get(state, "Running"));
    c->paused = json_is_true(json_object_get(state, "Paused"));
    c->restarting = json_is_true(json_object_get(state, "Restarting"));
    c->oom_killed = json_is_true(json_object_get(state, "OOMKilled"));
    c->dead = json_is_true(json_object_get(state, "Dead"));
    c->exit_code = (int)json_integer_value(json_object_get(state, "ExitCode"));
    c->pid = (int)json_integer_value(json_object_get(state, "Pid"));
    c->error = json_str(state, "Error");
    health = json_object_get(state, "Health");
    c->health = json_is_object(health) ? json_str(health, "Status") : NULL;
    c->ip = container_ip(json_object_get(root, "NetworkSettings"));
    c->started_at = json_str(state, "StartedAt");
    c->finished_at = json_str(state, "FinishedAt");
    c->started_ms = rfc3339_ms(c->started_at);
    c->finished_ms = rfc3339_ms(c->finished_at);
    return 0;
}

/* Fills a new array from a list answer. Returns 0 (*ret NULL when empty),
 * -EBADMSG or -ENOMEM. */
static int summaries_from_json(json_t *root, struct wg_docker_summary **ret, size_t *ret_n)
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
        v[i].id = json_str(row, "Id");
        if (!json_is_object(row) || !v[i].id[0]) {
            free(v);
            return -EBADMSG;
        }
        name = name ? name : "";
        v[i].name = name[0] == '/' ? name + 1 : name;
        v[i].image = json_str(row, "Image");
        v[i].state = json_str(row, "State");
        v[i].status = json_str(row, "Status");
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

#define SPEC_FAIL(...)                                                                             \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
        rc = -EINVAL;                                                                              \
        goto out;                                                                                  \
    } while (0)

/* A JSON array of the NULL-terminated strings, each checked by text_ok(). */
static int string_array(const char *const *v, const char *what, bool empty_items_ok, json_t **ret,
                        char *err, size_t errlen)
{
    json_t *a = json_array();
    int rc = 0;

    if (!a)
        return -ENOMEM;
    bool lines = strcmp(what, "argv") == 0 || strcmp(what, "cmd") == 0;

    for (size_t i = 0; v[i]; i++) {
        if (!text_ok_lines(v[i], TEXT_MAX, empty_items_ok, lines))
            SPEC_FAIL("%s[%zu] is empty, too long, or not printable UTF-8", what, i);
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

/* Builds the POST /containers/create body from spec. Every string is
 * checked, so nothing the caller passes can change the body's shape.
 * Returns 0 with *ret (owned by the caller), -EINVAL with a reason in err,
 * or -ENOMEM. */
static int create_body(const struct wg_docker_spec *s, json_t **ret, char *err, size_t errlen)
{
    json_t *body = NULL, *hc, *labels, *a = NULL;
    int rc = 0, bad = 0;

    if (errlen > 0)
        err[0] = '\0';
    if (!s)
        SPEC_FAIL("no spec");
    if (!session_valid(s->session))
        SPEC_FAIL("session id must be 1-128 characters of [A-Za-z0-9_-]");
    if (!text_ok(s->image, 512, false) || strpbrk(s->image, " "))
        SPEC_FAIL("image must be a non-empty name without spaces or control characters");
    if (s->name && !wg_docker_ref_valid(s->name))
        SPEC_FAIL("container name must match [A-Za-z0-9][A-Za-z0-9_.-]* (up to %d bytes)",
                  WG_DOCKER_REF_MAX);
    if (s->network_mode && (!text_ok(s->network_mode, 256, false) || strchr(s->network_mode, ' ')))
        SPEC_FAIL("network mode must be a name without spaces or control characters");
    if (s->memory_bytes < 0 || s->nano_cpus < 0)
        SPEC_FAIL("memory and CPU limits cannot be negative");
    if (s->cmd && !s->cmd[0])
        SPEC_FAIL("cmd is empty: pass NULL for the image's CMD");

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
     * on a NULL value): collect failures in `bad`, check once. */
    bad |= json_object_set_new(body, "HostConfig", hc);
    bad |= json_object_set_new(body, "Labels", labels);
    bad |= json_object_set_new(body, "Image", json_string(s->image));
    if (s->cmd) {
        if ((rc = string_array(s->cmd, "cmd", true, &a, err, errlen)) < 0)
            goto out;
        bad |= json_object_set_new(body, "Cmd", a);
    }
    if (s->env) {
        for (size_t i = 0; s->env[i]; i++) {
            const char *eq = strchr(s->env[i], '=');
            if (!eq || eq == s->env[i])
                SPEC_FAIL("env[%zu] must be KEY=value", i);
        }
        if ((rc = string_array(s->env, "env", false, &a, err, errlen)) < 0)
            goto out;
        bad |= json_object_set_new(body, "Env", a);
    }
    bad |= json_object_set_new(labels, WG_DOCKER_SESSION_LABEL, json_string(s->session));
    for (size_t i = 0; s->labels && s->labels[i].key; i++) {
        const struct wg_docker_label *l = &s->labels[i];
        if (!text_ok(l->key, 256, false) || !l->value || !text_ok(l->value, TEXT_MAX, true))
            SPEC_FAIL("labels[%zu] needs a printable key and value", i);
        if (json_object_get(labels, l->key))
            SPEC_FAIL("label \"%s\" is given twice or is reserved", l->key);
        bad |= json_object_set_new(labels, l->key, json_string(l->value));
    }
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
                SPEC_FAIL("binds[%zu] must be host-path:container-path[:options]", i);
        }
        if ((rc = string_array(s->binds, "binds", false, &a, err, errlen)) < 0)
            goto out;
        bad |= json_object_set_new(hc, "Binds", a);
    }
    if (s->network_mode)
        bad |= json_object_set_new(hc, "NetworkMode", json_string(s->network_mode));
    if (s->memory_bytes)
        bad |= json_object_set_new(hc, "Memory", json_integer(s->memory_bytes));
    if (s->nano_cpus)
        bad |= json_object_set_new(hc, "NanoCpus", json_integer(s->nano_cpus));
    if (bad) { /* every string was checked above: only memory can fail here */
        rc = -ENOMEM;
        goto out;
    }
    *ret = body;
    return 0;
out:
    if (rc == -ENOMEM)
        snprintf(err, errlen, "out of memory");
    json_decref(body);
    return rc;
}

/* ---- requests ------------------------------------------------------------------------------- */

static struct req *req_new(struct wg_docker *d, enum req_kind kind, const char *method, char *path,
                           finish_fn *finish, wg_docker_cb *cb, void *arg)
{
    struct req *q;

    if (!path)
        return NULL;
    q = calloc(1, sizeof(*q));
    if (!q) {
        free(path);
        return NULL;
    }
    wg_list_init(&q->node);
    q->d = d;
    q->kind = kind;
    q->method = method;
    q->path = path;
    q->finish = finish;
    q->cb = cb;
    q->arg = arg;
    q->versioned = kind != RK_PING;
    q->timeout_ms = d->timeout_ms;
    q->seq = ++d->seq;
    wg_buf_init(&q->resp, d->max_body + 1);
    wg_buf_init(&q->out, d->max_output + 1);
    return q;
}

/* Takes a JSON body (consumed). Returns 0 or -ENOMEM. */
static int req_set_json(struct req *q, json_t *body)
{
    q->body = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!q->body)
        return -ENOMEM;
    q->body_len = strlen(q->body);
    return 0;
}

static void req_free(struct req *q)
{
    if (!q)
        return;
    assert(!wg_list_linked(&q->node));
    if (q->easy)
        curl_easy_cleanup(q->easy);
    curl_slist_free_all(q->hdrs);
    curl_slist_free_all(q->resolve);
    wg_buf_release(&q->resp);
    wg_buf_release(&q->out);
    free(q->path);
    free(q->sent);
    free(q->body);
    free(q);
}

static void unlink_req(struct req *q)
{
    wg_list_remove(&q->node);
    q->where = RQ_NONE;
}

static void deliver(struct req *q, int status, const struct wg_docker_reply *r)
{
    if (q->delivered)
        return;
    q->delivered = true;
    if (q->cb)
        q->cb(status, r, q->arg);
}

/* Maps a curl failure to -errno; fills msg. */
static int curl_status(struct req *q, CURLcode cc, char *msg, size_t msglen)
{
    struct wg_docker *d = q->d;
    long oserr = 0;

    if (q->easy)
        curl_easy_getinfo(q->easy, CURLINFO_OS_ERRNO, &oserr);
    switch (cc) {
    case CURLE_COULDNT_CONNECT:
        snprintf(msg, msglen, "cannot connect to %s: %s", d->h.display,
                 oserr > 0 ? strerror((int)oserr) : "connection refused");
        return oserr > 0 ? -(int)oserr : -ECONNREFUSED;
    case CURLE_COULDNT_RESOLVE_HOST:
        snprintf(msg, msglen, "cannot resolve %s", d->h.display);
        return -EHOSTUNREACH;
    case CURLE_OPERATION_TIMEDOUT:
        snprintf(msg, msglen, "timed out after %u ms", (unsigned)q->timeout_used);
        return -ETIMEDOUT;
    case CURLE_OUT_OF_MEMORY:
        snprintf(msg, msglen, "out of memory");
        return -ENOMEM;
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
        snprintf(msg, msglen, "connection to %s lost: %s", d->h.display,
                 q->errbuf[0] ? q->errbuf : curl_easy_strerror(cc));
        return -ECONNRESET;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_USE_SSL_FAILED:
        snprintf(msg, msglen, "TLS with %s: %s", d->h.display,
                 q->errbuf[0] ? q->errbuf : curl_easy_strerror(cc));
        return -EPROTO;
    default:
        snprintf(msg, msglen, "%s", q->errbuf[0] ? q->errbuf : curl_easy_strerror(cc));
        return -EIO;
    }
}

static bool connect_failure(CURLcode cc)
{
    return cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
           cc == CURLE_SSL_CONNECT_ERROR;
}

/* The engine may have been restarted, upgraded or moved: negotiate (and
 * look the name up) again on the next call. */
static void forget_engine(struct wg_docker *d)
{
    if (d->neg != NEG_DONE)
        return;
    d->neg = NEG_NONE;
    d->version[0] = '\0';
    free(d->resolve_entry);
    d->resolve_entry = NULL;
}

/* The HTTP status is shown only when it is the outcome (status > 0): a
 * transfer may fail after a 200 head, e.g. an exec that outlives its
 * timeout. */
static void format_error(char *out, size_t outlen, const struct wg_docker_reply *r, int status)
{
    if (status > 0)
        snprintf(out, outlen, "%s %s: %ld %s", r->method, r->path, r->http_status, r->message);
    else
        snprintf(out, outlen, "%s %s: %s", r->method, r->path, r->message);
}

/* Settles q with a status that has no HTTP answer behind it (cancel, a
 * failed negotiation, a deadline passed before sending). */
static void req_fail(struct req *q, int status, const char *message)
{
    struct wg_docker *d = q->d;
    struct wg_docker_reply r;
    char error[ERROR_MAX];

    memset(&r, 0, sizeof(r));
    r.method = q->method;
    r.path = q->sent ? q->sent : q->path;
    r.message = message;
    r.error = error;
    r.body = "";
    r.api_version = d->neg == NEG_DONE ? d->version : NULL;
    format_error(error, sizeof(error), &r, status);
    q->finish(q, status, &r);
}

/* q's transfer ended (q is unlinked and off the multi handle). */
static void req_done(struct req *q, CURLcode cc)
{
    struct wg_docker *d = q->d;
    struct wg_docker_reply r;
    char msg[MESSAGE_MAX], error[ERROR_MAX], qerr[QUOTED_MAX];
    json_t *json = NULL;
    int status = 0;
    long code = 0;

    memset(&r, 0, sizeof(r));
    msg[0] = error[0] = '\0';
    r.method = q->method;
    r.path = q->sent ? q->sent : q->path;
    r.message = msg;
    r.error = error;
    r.body = "";
    r.elapsed_us = (uv_hrtime() - q->t_sent) / 1000;
    if (q->easy)
        curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &code);
    r.http_status = code;

    if (q->overflow) {
        snprintf(msg, sizeof(msg), "answer larger than %zu bytes",
                 q->kind == RK_EVENTS && code / 100 == 2 ? (size_t)WG_DOCKER_MAX_EVENT_LINE
                                                         : d->max_body);
        status = -EMSGSIZE;
    } else if (cc != CURLE_OK) {
        status = curl_status(q, cc, msg, sizeof(msg));
        if (connect_failure(cc))
            forget_engine(d);
    } else {
        bool body_is_data = q->streamed && code / 100 == 2;
        if (!body_is_data && wg_buf_append(&q->resp, "", 1) == 0) {
            r.body = wg_buf_head(&q->resp);
            r.body_len = wg_buf_size(&q->resp) - 1;
            if (r.body_len > 0)
                json = json_loadb(r.body, r.body_len, 0, NULL);
        }
        r.json = json;
        if (code / 100 == 2 || (code == 304 && q->ok_304)) {
            status = 0;
        } else {
            const char *m = json_string_value(json_object_get(json, "message"));
            status = code == 404   ? WG_DOCKER_ENOTFOUND
                     : code == 409 ? WG_DOCKER_ECONFLICT
                                   : WG_DOCKER_EHTTP;
            if (m)
                r.message = m;
            else if (r.body_len > 0)
                snprintf(msg, sizeof(msg), "%.*s", (int)strcspn(r.body, "\r\n"), r.body);
            else
                snprintf(msg, sizeof(msg), "HTTP %ld", code);
        }
    }
    r.api_version = d->neg == NEG_DONE ? d->version : NULL;
    if (status != 0)
        format_error(error, sizeof(error), &r, status);
    WG_DEBUG(d->log, SUBSYS, "request done",
             "req=%llu method=%s path=%s http=%ld status=%d us=%llu%s%s",
             (unsigned long long)q->seq, q->method, r.path, code, status,
             (unsigned long long)r.elapsed_us, status ? " error=" : "",
             status ? quote(qerr, sizeof(qerr), error) : "");
    q->finish(q, status, &r);
    json_decref(json);
}

/* ---- curl callbacks: bodies and headers ----------------------------------------------------- */

static void out_sink(void *arg, int stream, const char *p, size_t n)
{
    struct req *q = arg;

    (void)stream; /* stdout and stderr interleave, as a terminal shows them */
    tail_append(&q->out, q->d->max_output, p, n, &q->out_truncated);
}

static int event_line(void *arg, const char *line, size_t len)
{
    struct req *q = arg;
    struct wg_docker *d = q->d;
    struct wg_docker_event ev;
    json_t *root;

    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
        len--;
    if (len == 0)
        return 0;
    root = json_loadb(line, len, 0, NULL);
    if (root && event_from_json(root, &ev) == 0)
        q->ev_cb(&ev, q->arg);
    else
        WG_DEBUG(d->log, SUBSYS, "events line ignored", "req=%llu len=%zu",
                 (unsigned long long)q->seq, len);
    json_decref(root);
    return q->canceled || d->closed ? 1 : 0;
}

static size_t write_cb(char *p, size_t size, size_t nmemb, void *arg)
{
    struct req *q = arg;
    struct wg_docker *d = q->d;
    size_t n = size * nmemb;
    int rc;

    if (q->canceled || d->closed)
        return 0; /* aborts the transfer */
    if (!q->code)
        curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &q->code);
    if (q->streamed && q->code / 100 == 2) {
        if (q->kind == RK_EVENTS) {
            rc = lines_feed(&q->resp, WG_DOCKER_MAX_EVENT_LINE, p, n, event_line, q);
            if (rc < 0)
                q->overflow = true;
            return rc ? 0 : n;
        }
        demux_feed(&q->dm, p, n, out_sink, q);
        return n;
    }
    if (wg_buf_size(&q->resp) + n > d->max_body || wg_buf_append(&q->resp, p, n) < 0) {
        q->overflow = true;
        return 0;
    }
    return n;
}

static size_t header_cb(char *p, size_t size, size_t nmemb, void *arg)
{
    struct req *q = arg;
    struct wg_docker *d = q->d;
    size_t n = size * nmemb;
    const char *v;
    long vn;

    if (q->canceled || d->closed)
        return 0;
    if (n >= 5 && strncmp(p, "HTTP/", 5) == 0) {
        q->code = 0; /* a new response (after a 1xx) */
        q->server_version[0] = '\0';
    }
    if (q->kind == RK_PING && (vn = header_value(p, n, "Api-Version", &v)) > 0 &&
        (size_t)vn < sizeof(q->server_version)) {
        memcpy(q->server_version, v, (size_t)vn);
        q->server_version[vn] = '\0';
    }
    if (q->kind == RK_EVENTS && !q->opened && (n == 2 || n == 1) &&
        (p[0] == '\r' || p[0] == '\n')) {
        long code = 0;
        curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &code);
        if (code / 100 == 2) {
            struct wg_docker_event ev;
            memset(&ev, 0, sizeof(ev));
            ev.kind = WG_DOCKER_EVENTS_OPEN;
            ev.type = ev.action = ev.id = ev.name = "";
            ev.exit_code = -1;
            q->opened = true;
            q->ev_cb(&ev, q->arg);
            if (q->canceled || d->closed)
                return 0;
        }
    }
    return n;
}

/* ---- sending -------------------------------------------------------------------------------- */

/* Configures q's easy handle. Returns 0 or -ENOMEM. */
static int setup_easy(struct req *q, const char *url, uint32_t timeout_ms)
{
    struct wg_docker *d = q->d;
    CURL *e = curl_easy_init();
    CURLcode cc = CURLE_OK;

    if (!e)
        return -ENOMEM;
    q->easy = e;
    q->hdrs = curl_slist_append(NULL, "Expect:"); /* no 100-continue round trip */
    if (q->hdrs && strcmp(q->method, "POST") == 0)
        q->hdrs = curl_slist_append(q->hdrs, "Content-Type: application/json");
    if (!q->hdrs)
        return -ENOMEM;
    if (!d->h.is_unix && d->resolve_entry) {
        q->resolve = curl_slist_append(NULL, d->resolve_entry);
        if (!q->resolve)
            return -ENOMEM;
    }

#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (cc == CURLE_OK)                                                                        \
            cc = curl_easy_setopt(e, opt, val);                                                    \
    } while (0)
    SET(CURLOPT_URL, url);
    SET(CURLOPT_PRIVATE, q);
    SET(CURLOPT_ERRORBUFFER, q->errbuf);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    SET(CURLOPT_USERAGENT, "wakegate/" WG_VERSION);
    SET(CURLOPT_HTTPHEADER, q->hdrs);
    SET(CURLOPT_WRITEFUNCTION, write_cb);
    SET(CURLOPT_WRITEDATA, q);
    SET(CURLOPT_HEADERFUNCTION, header_cb);
    SET(CURLOPT_HEADERDATA, q);
    SET(CURLOPT_CONNECTTIMEOUT_MS, (long)d->connect_timeout_ms);
    SET(CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    if (d->h.is_unix) {
        SET(CURLOPT_UNIX_SOCKET_PATH, d->h.path);
    } else {
        SET(CURLOPT_TCP_KEEPALIVE, 1L);
        if (q->resolve)
            SET(CURLOPT_RESOLVE, q->resolve);
    }
    if (d->h.tls) {
        if (d->tls_ca)
            SET(CURLOPT_CAINFO, d->tls_ca);
        if (d->tls_cert)
            SET(CURLOPT_SSLCERT, d->tls_cert);
        if (d->tls_key)
            SET(CURLOPT_SSLKEY, d->tls_key);
        SET(CURLOPT_SSL_VERIFYPEER, d->tls_skip_verify ? 0L : 1L);
        SET(CURLOPT_SSL_VERIFYHOST, d->tls_skip_verify ? 0L : 2L);
    }
    if (strcmp(q->method, "POST") == 0) {
        SET(CURLOPT_POST, 1L);
        SET(CURLOPT_POSTFIELDS, q->body ? q->body : "");
        SET(CURLOPT_POSTFIELDSIZE, (long)q->body_len);
    } else if (strcmp(q->method, "GET") != 0) {
        SET(CURLOPT_CUSTOMREQUEST, q->method);
    }
#undef SET
    return cc == CURLE_OK ? 0 : -ENOMEM;
}

/* Hands q (unlinked) to curl. On failure q's outcome is delivered and q is
 * freed; the caller re-checks d->closed. Called from pump() only, so never
 * inside curl. */
static void activate(struct req *q)
{
    struct wg_docker *d = q->d;
    uint64_t now = uv_now(d->loop);
    uint32_t timeout = q->timeout_ms;
    char *url = NULL;
    int rc;

    if (q->deadline) {
        if (q->deadline <= now) {
            req_fail(q, -ETIMEDOUT, "timed out before it could be sent");
            req_free(q);
            return;
        }
        if (!timeout || q->deadline - now < timeout)
            timeout = (uint32_t)(q->deadline - now);
    }
    q->sent = q->versioned ? strf("/v%s%s", d->version, q->path) : strdup(q->path);
    url = q->sent ? strf("%s%s", d->h.base, q->sent) : NULL;
    q->timeout_used = timeout;
    rc = url ? setup_easy(q, url, timeout) : -ENOMEM;
    if (rc == 0 && curl_multi_add_handle(d->multi, q->easy) != CURLM_OK)
        rc = -ENOMEM;
    free(url);
    if (rc < 0) {
        req_fail(q, rc, "out of memory");
        req_free(q);
        return;
    }
    q->where = RQ_ACTIVE;
    wg_list_push_back(&d->active, &q->node);
    q->t_sent = uv_hrtime();
    WG_DEBUG(d->log, SUBSYS, "request", "req=%llu method=%s path=%s host=%s",
             (unsigned long long)q->seq, q->method, q->sent, d->qhost);
}

/* Queues q for the next loop turn. Returns 0, or -ECANCELED (q untouched;
 * the caller frees it). */
static int submit(struct req *q)
{
    struct wg_docker *d = q->d;

    if (d->closed)
        return -ECANCELED;
    q->where = RQ_QUEUED;
    wg_list_push_back(&d->queued, &q->node);
    kick(d);
    return 0;
}

/* ---- negotiation ---------------------------------------------------------------------------- */

/* Fails every queued versioned request: negotiation failed. */
static void fail_queued(struct wg_docker *d, int status, const char *why)
{
    char msg[MESSAGE_MAX];
    struct wg_list *n;

    snprintf(msg, sizeof(msg), "API version negotiation failed: %s", why);
    /* Each delivery may change the lists: take the first one every time. */
    for (;;) {
        struct req *q = NULL;
        if (d->closed)
            return; /* wg_docker_free() cancels the rest */
        for (n = d->queued.next; n != &d->queued; n = n->next) {
            struct req *c = wg_container_of(n, struct req, node);
            if (c->versioned) {
                q = c;
                break;
            }
        }
        if (!q)
            return;
        unlink_req(q);
        req_fail(q, status, msg);
        req_free(q);
    }
}

static void neg_failed(struct wg_docker *d, int status, const char *why)
{
    char qwhy[QUOTED_MAX];

    d->neg = NEG_NONE;
    WG_DEBUG(d->log, SUBSYS, "negotiation failed", "host=%s status=%d reason=%s", d->qhost, status,
             quote(qwhy, sizeof(qwhy), why));
    fail_queued(d, status, why);
}

static void finish_ping(struct req *q, int status, struct wg_docker_reply *r)
{
    struct wg_docker *d = q->d;
    char version[VERSION_MAX];

    if (status == 0) {
        int rc = version_negotiate(q->server_version, d->max_major, d->max_minor, version,
                                   sizeof(version));
        if (rc < 0) {
            status = rc == -EINVAL ? -EBADMSG : rc;
            snprintf(q->finish_msg, sizeof(q->finish_msg), "engine API version \"%s\" is %s",
                     q->server_version,
                     rc == -EINVAL ? "malformed" : "older than " WG_DOCKER_API_MIN);
            r->message = q->finish_msg;
            format_error(q->finish_error, sizeof(q->finish_error), r, status);
            r->error = q->finish_error;
        } else if (!d->closed) {
            snprintf(d->version, sizeof(d->version), "%s", version);
            if (d->neg != NEG_DONE)
                WG_DEBUG(d->log, SUBSYS, "api version negotiated", "host=%s engine=%s using=%s",
                         d->qhost, q->server_version[0] ? q->server_version : "none", version);
            d->neg = NEG_DONE;
            r->api_version = d->version;
            kick(d);
        }
    }
    if (q->internal) {
        if (status != 0 && d->neg == NEG_PINGING && !d->closed)
            neg_failed(d, status, r->error);
        return;
    }
    deliver(q, status, r);
}

static int neg_ping(struct wg_docker *d)
{
    struct req *q = req_new(d, RK_PING, "GET", strdup("/_ping"), finish_ping, NULL, NULL);

    if (!q)
        return -ENOMEM;
    q->internal = true;
    q->timeout_ms = d->connect_timeout_ms + d->timeout_ms;
    d->neg = NEG_PINGING;
    return submit(q);
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct wg_docker *d = req->data;
    struct wg_buf b;
    char addr[INET6_ADDRSTRLEN], why[256];
    int n = 0;

    d->gai_busy = false;
    if (d->torn) {
        uv_freeaddrinfo(res);
        release(d);
        return;
    }
    d->refs--;
    if (d->neg != NEG_RESOLVING) { /* the deadline passed meanwhile */
        uv_freeaddrinfo(res);
        return;
    }
    d->resolve_deadline = 0;
    if (status < 0) {
        uv_freeaddrinfo(res);
        snprintf(why, sizeof(why), "cannot resolve %s: %s", d->h.display, uv_strerror(status));
        neg_failed(d, -EHOSTUNREACH, why);
        return;
    }
    wg_buf_init(&b, 4096);
    wg_buf_appendf(&b, "%s:%u:", d->h.name, d->h.port);
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET)
            uv_ip4_name((const struct sockaddr_in *)ai->ai_addr, addr, sizeof(addr));
        else if (ai->ai_family == AF_INET6)
            uv_ip6_name((const struct sockaddr_in6 *)ai->ai_addr, addr, sizeof(addr));
        else
            continue;
        if (wg_buf_appendf(&b, ai->ai_family == AF_INET6 ? "%s[%s]" : "%s%s", n ? "," : "", addr) ==
            0)
            n++;
    }
    uv_freeaddrinfo(res);
    if (n == 0 || wg_buf_append(&b, "", 1) < 0) {
        wg_buf_release(&b);
        snprintf(why, sizeof(why), "cannot resolve %s: no usable address", d->h.display);
        neg_failed(d, -EHOSTUNREACH, why);
        return;
    }
    free(d->resolve_entry);
    d->resolve_entry = b.data; /* NUL-terminated above; ours now */
    WG_DEBUG(d->log, SUBSYS, "resolved", "host=%s entry=%s", d->qhost, d->resolve_entry);
    if (neg_ping(d) < 0)
        neg_failed(d, -ENOMEM, "out of memory");
}

/* Starts negotiation (d->neg == NEG_NONE): a name lookup first for a tcp
 * host name, then the ping. */
static void negotiate(struct wg_docker *d)
{
    char port[8];
    struct addrinfo hints;
    int rc;

    if (d->h.is_unix || d->h.numeric || d->resolve_entry) {
        if (neg_ping(d) < 0)
            neg_failed(d, -ENOMEM, "out of memory");
        return;
    }
    if (d->gai_busy) {
        /* An earlier lookup that timed out is stuck in the resolver; its
         * request cannot be reused until it returns. */
        neg_failed(d, -EHOSTUNREACH, "previous name lookup still running");
        return;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%u", d->h.port);
    rc = uv_getaddrinfo(d->loop, &d->gai, gai_cb, d->h.name, port, &hints);
    if (rc < 0) {
        neg_failed(d, -EHOSTUNREACH, uv_strerror(rc));
        return;
    }
    d->gai_busy = true;
    d->refs++;
    d->neg = NEG_RESOLVING;
    d->resolve_deadline = uv_now(d->loop) + d->connect_timeout_ms;
    rearm_wake(d);
}

/* ---- the loop side: deferred work, delayed requests ----------------------------------------- */

/* Removes stopped streams, sends what can be sent, starts negotiation when
 * a versioned call waits for it. Runs from `defer`, never inside curl. */
static void pump(struct wg_docker *d)
{
    struct wg_list *n, *next;
    bool waiting;

    for (n = d->active.next; n != &d->active; n = next) {
        struct req *q = wg_container_of(n, struct req, node);
        next = n->next;
        if (q->canceled) {
            curl_multi_remove_handle(d->multi, q->easy);
            unlink_req(q);
            req_free(q);
        }
    }
    /* activate() may deliver a failure, whose callback may change the
     * lists: look for the first sendable one afresh each time. */
    for (;;) {
        struct req *q = NULL;
        waiting = false;
        for (n = d->queued.next; n != &d->queued; n = n->next) {
            struct req *c = wg_container_of(n, struct req, node);
            if (!c->versioned || d->neg == NEG_DONE) {
                q = c;
                break;
            }
            waiting = true;
        }
        if (!q)
            break;
        unlink_req(q);
        activate(q);
        if (d->closed)
            return;
    }
    if (waiting && d->neg == NEG_NONE)
        negotiate(d);
}

static void defer_cb(uv_idle_t *h)
{
    struct wg_docker *d = h->data;

    uv_idle_stop(h); /* a kick() during pump() starts it again */
    if (!d->closed)
        pump(d);
}

static void kick(struct wg_docker *d)
{
    if (!d->torn)
        uv_idle_start(&d->defer, defer_cb);
}

static void wake_cb(uv_timer_t *t)
{
    struct wg_docker *d = t->data;
    uint64_t now = uv_now(d->loop);
    struct wg_list *n, *next;
    char why[256];

    if (d->closed)
        return;
    for (n = d->delayed.next; n != &d->delayed; n = next) {
        struct req *q = wg_container_of(n, struct req, node);
        next = n->next;
        if (q->not_before <= now) {
            unlink_req(q);
            submit(q); /* d is open: cannot fail */
        }
    }
    if (d->neg == NEG_RESOLVING && d->resolve_deadline && d->resolve_deadline <= now) {
        d->resolve_deadline = 0;
        snprintf(why, sizeof(why), "name lookup for %s timed out after %u ms", d->h.display,
                 d->connect_timeout_ms);
        neg_failed(d, -ETIMEDOUT, why); /* gai_cb will find neg moved on */
        if (d->closed)
            return;
    }
    rearm_wake(d);
}

static void rearm_wake(struct wg_docker *d)
{
    uint64_t due = 0, now = uv_now(d->loop);
    struct wg_list *n;

    if (d->torn)
        return;
    for (n = d->delayed.next; n != &d->delayed; n = n->next) {
        struct req *q = wg_container_of(n, struct req, node);
        if (!due || q->not_before < due)
            due = q->not_before;
    }
    if (d->neg == NEG_RESOLVING && d->resolve_deadline && (!due || d->resolve_deadline < due))
        due = d->resolve_deadline;
    if (!due)
        uv_timer_stop(&d->wake);
    else
        uv_timer_start(&d->wake, wake_cb, due > now ? due - now : 0, 0);
}

static void delay(struct req *q, uint32_t ms)
{
    struct wg_docker *d = q->d;

    q->where = RQ_DELAYED;
    q->not_before = uv_now(d->loop) + ms;
    wg_list_push_back(&d->delayed, &q->node);
    rearm_wake(d);
}

/* ---- curl on the loop ----------------------------------------------------------------------- */

/* Delivers the transfers curl finished. Never inside curl. */
static void check_done(struct wg_docker *d)
{
    CURLMsg *m;
    int left;

    while (!d->closed && (m = curl_multi_info_read(d->multi, &left))) {
        CURL *e = m->easy_handle;
        CURLcode cc = m->data.result;
        struct req *q = NULL;

        if (m->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&q);
        curl_multi_remove_handle(d->multi, e); /* m is gone from here on */
        unlink_req(q);
        if (!q->canceled)
            req_done(q, cc);
        req_free(q);
    }
}

static void drive(struct wg_docker *d, curl_socket_t s, int flags)
{
    int running;

    d->in_curl++;
    curl_multi_socket_action(d->multi, s, flags, &running);
    d->in_curl--;
    if (!d->closed)
        check_done(d);
    if (d->closed && !d->in_curl)
        teardown(d);
}

static void sock_closed(uv_handle_t *h)
{
    struct sock *k = h->data;
    struct wg_docker *d = k->d;

    free(k);
    release(d);
}

static void sock_close(struct sock *k)
{
    if (k->closing)
        return;
    k->closing = true;
    wg_list_remove(&k->node);
    uv_close((uv_handle_t *)&k->poll, sock_closed);
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
    struct sock *k = h->data;
    struct wg_docker *d = k->d;
    int flags = 0;

    if (status < 0) /* libuv stopped the handle: let curl meet the error */
        events = k->events;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    if (status < 0)
        flags |= CURL_CSELECT_ERR;
    drive(d, k->fd, flags);
    /* k's memory lasts until its close callback, later in this loop turn. */
    if (status < 0 && !k->closing && k->events && !d->torn)
        uv_poll_start(&k->poll, k->events, poll_cb);
}

static int socket_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct wg_docker *d = userp;
    struct sock *k = socketp;

    (void)e;
    if (what == CURL_POLL_REMOVE) {
        if (k) {
            sock_close(k);
            if (!d->tearing)
                curl_multi_assign(d->multi, s, NULL);
        }
        return 0;
    }
    if (d->torn)
        return 0;
    if (!k) {
        k = calloc(1, sizeof(*k));
        if (!k)
            return -1;
        if (uv_poll_init_socket(d->loop, &k->poll, s) < 0) {
            free(k);
            return -1;
        }
        k->poll.data = k;
        k->d = d;
        k->fd = s;
        wg_list_push_back(&d->socks, &k->node);
        d->refs++;
        curl_multi_assign(d->multi, s, k);
    }
    k->events =
        ((what & CURL_POLL_IN) ? UV_READABLE : 0) | ((what & CURL_POLL_OUT) ? UV_WRITABLE : 0);
    if (k->events)
        uv_poll_start(&k->poll, k->events, poll_cb);
    else
        uv_poll_stop(&k->poll);
    return 0;
}

static void curl_timer_cb(uv_timer_t *t)
{
    struct wg_docker *d = t->data;

    if (!d->closed)
        drive(d, CURL_SOCKET_TIMEOUT, 0);
}

static int timer_fn(CURLM *m, long timeout_ms, void *userp)
{
    struct wg_docker *d = userp;

    (void)m;
    if (d->torn)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&d->curl_timer);
    else /* 0: on the next loop turn, never from inside curl */
        uv_timer_start(&d->curl_timer, curl_timer_cb, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- lifetime ------------------------------------------------------------------------------- */

static void handle_closed(uv_handle_t *h)
{
    release(h->data);
}

/* Drops one reference (a handle or the name lookup); the last frees d. Only
 * reachable after teardown(). */
static void release(struct wg_docker *d)
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

static void free_list(struct wg_docker *d, struct wg_list *l)
{
    while (!wg_list_empty(l)) {
        struct req *q = wg_container_of(l->next, struct req, node);
        if (q->where == RQ_ACTIVE)
            curl_multi_remove_handle(d->multi, q->easy);
        unlink_req(q);
        req_free(q);
    }
}

/* Releases curl and closes every handle. Reached from wg_docker_free()
 * outside curl, or from drive() once curl has returned; idempotent. */
static void teardown(struct wg_docker *d)
{
    if (d->torn)
        return;
    d->torn = true;
    free_list(d, &d->active);
    free_list(d, &d->queued);
    free_list(d, &d->delayed);
    d->tearing = true;
    curl_multi_cleanup(d->multi);
    d->multi = NULL;
    d->tearing = false;
    while (!wg_list_empty(&d->socks))
        sock_close(wg_container_of(d->socks.next, struct sock, node));
    if (d->gai_busy)
        uv_cancel((uv_req_t *)&d->gai); /* may fail if running; gai_cb drops its ref */
    uv_close((uv_handle_t *)&d->curl_timer, handle_closed);
    uv_close((uv_handle_t *)&d->wake, handle_closed);
    uv_close((uv_handle_t *)&d->defer, handle_closed);
}

static void cancel_list(struct wg_list *l)
{
    /* No callback can change the lists now: calls answer -ECANCELED and
     * wg_docker_events_stop() does nothing once d is closed. */
    for (struct wg_list *n = l->next; n != l; n = n->next) {
        struct req *q = wg_container_of(n, struct req, node);
        if (!q->canceled && !q->delivered)
            req_fail(q, -ECANCELED, "canceled: the Docker client is shutting down");
        q->delivered = true;
    }
}

void wg_docker_free(struct wg_docker *d)
{
    if (!d || d->closed)
        return;
    d->closed = true;
    cancel_list(&d->active);
    cancel_list(&d->queued);
    cancel_list(&d->delayed);
    if (!d->in_curl)
        teardown(d);
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
    rc = wg_docker_host_parse(o.host, o.tls, &d->h, err, errlen);
    if (rc < 0)
        goto out;
    if (version_parse(o.api_version ? o.api_version : WG_DOCKER_API_MAX,
                      strlen(o.api_version ? o.api_version : WG_DOCKER_API_MAX), &d->max_major,
                      &d->max_minor) < 0) {
        snprintf(err, errlen, "API version must look like 1.41");
        rc = -EINVAL;
        goto out;
    }
    if ((o.tls_ca || o.tls_cert || o.tls_key) && !o.tls) {
        snprintf(err, errlen, "TLS files are given but TLS is off");
        rc = -EINVAL;
        goto out;
    }
    if (!!o.tls_cert != !!o.tls_key) {
        snprintf(err, errlen, "a TLS client certificate needs its key, and a key its certificate");
        rc = -EINVAL;
        goto out;
    }
    if ((o.tls_ca && !(d->tls_ca = strdup(o.tls_ca))) ||
        (o.tls_cert && !(d->tls_cert = strdup(o.tls_cert))) ||
        (o.tls_key && !(d->tls_key = strdup(o.tls_key)))) {
        rc = -ENOMEM;
        goto out;
    }
    d->tls_skip_verify = o.tls_skip_verify;
    d->timeout_ms = o.timeout_ms ? o.timeout_ms : WG_DOCKER_TIMEOUT_MS;
    d->connect_timeout_ms =
        o.connect_timeout_ms ? o.connect_timeout_ms : WG_DOCKER_CONNECT_TIMEOUT_MS;
    d->max_body = o.max_body ? o.max_body : WG_DOCKER_MAX_BODY;
    d->max_output = o.max_output ? o.max_output : WG_DOCKER_MAX_OUTPUT;
    quote(d->qhost, sizeof(d->qhost), d->h.display);

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "curl_global_init failed");
        rc = -ENOMEM;
        goto out;
    }
    d->multi = curl_multi_init();
    if (!d->multi) {
        curl_global_cleanup();
        rc = -ENOMEM;
        goto out;
    }
    curl_multi_setopt(d->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(d->multi, CURLMOPT_SOCKETDATA, d);
    curl_multi_setopt(d->multi, CURLMOPT_TIMERFUNCTION, timer_fn);
    curl_multi_setopt(d->multi, CURLMOPT_TIMERDATA, d);

    d->loop = loop;
    d->log = log;
    wg_list_init(&d->queued);
    wg_list_init(&d->active);
    wg_list_init(&d->delayed);
    wg_list_init(&d->socks);
    /* Past this point nothing fails: these inits cannot, for a valid loop. */
    uv_timer_init(loop, &d->curl_timer);
    uv_timer_init(loop, &d->wake);
    uv_idle_init(loop, &d->defer);
    d->curl_timer.data = d->wake.data = d->defer.data = d->gai.data = d;
    d->refs = 3;
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

const char *wg_docker_api_version(const struct wg_docker *d)
{
    return d && d->neg == NEG_DONE ? d->version : NULL;
}

/* ---- calls ---------------------------------------------------------------------------------- */

static void finish_plain(struct req *q, int status, struct wg_docker_reply *r)
{
    deliver(q, status, r);
}

static void finish_create(struct req *q, int status, struct wg_docker_reply *r)
{
    if (status == 0) {
        r->id = json_string_value(json_object_get(r->json, "Id"));
        if (!is_full_id(r->id)) {
            r->id = NULL;
            status = -EBADMSG;
            r->message = "the answer has no container Id";
        }
    }
    deliver(q, status, r);
}

static void finish_inspect(struct req *q, int status, struct wg_docker_reply *r)
{
    struct wg_docker_container c;

    if (status == 0) {
        int rc = container_from_json(r->json, &c);
        if (rc < 0) {
            status = rc;
            r->message = rc == -ENOMEM ? "out of memory" : "the answer is not a container";
        } else {
            r->container = &c;
        }
    }
    deliver(q, status, r);
}

static void finish_list(struct req *q, int status, struct wg_docker_reply *r)
{
    struct wg_docker_summary *v = NULL;
    size_t n = 0;

    if (status == 0) {
        int rc = summaries_from_json(r->json, &v, &n);
        if (rc < 0) {
            status = rc;
            r->message = rc == -ENOMEM ? "out of memory" : "the answer is not a container list";
        }
        r->containers = v;
        r->n_containers = n;
    }
    deliver(q, status, r);
    free(v);
}

static void finish_logs(struct req *q, int status, struct wg_docker_reply *r)
{
    if (status == 0) {
        demux_end(&q->dm, out_sink, q);
        r->output = wg_buf_size(&q->out) ? wg_buf_head(&q->out) : "";
        r->output_len = wg_buf_size(&q->out);
        r->output_truncated = q->out_truncated;
    }
    deliver(q, status, r);
}

static int simple_call(struct wg_docker *d, enum req_kind kind, const char *method, char *path,
                       finish_fn *finish, wg_docker_cb *cb, void *arg, struct req **ret)
{
    struct req *q;
    int rc;

    if (!d)
        return -EINVAL;
    if (d->closed) {
        free(path);
        return -ECANCELED;
    }
    q = req_new(d, kind, method, path, finish, cb, arg);
    if (!q)
        return -ENOMEM;
    if (ret) { /* the caller adjusts q, then submits */
        *ret = q;
        return 0;
    }
    rc = submit(q);
    if (rc < 0)
        req_free(q);
    return rc;
}

int wg_docker_ping(struct wg_docker *d, wg_docker_cb *cb, void *arg)
{
    return simple_call(d, RK_PING, "GET", strdup("/_ping"), finish_ping, cb, arg, NULL);
}

int wg_docker_version(struct wg_docker *d, wg_docker_cb *cb, void *arg)
{
    return simple_call(d, RK_VERSION, "GET", strdup("/version"), finish_plain, cb, arg, NULL);
}

int wg_docker_create(struct wg_docker *d, const struct wg_docker_spec *spec, wg_docker_cb *cb,
                     void *arg, char *err, size_t errlen)
{
    char dummy[1], *name = NULL, *path;
    json_t *body = NULL;
    struct req *q;
    int rc;

    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    if (!d)
        return -EINVAL;
    if (d->closed)
        return -ECANCELED;
    rc = create_body(spec, &body, err, errlen);
    if (rc < 0)
        return rc;
    if (spec->name) {
        name = curl_easy_escape(NULL, spec->name, 0);
        if (!name) {
            json_decref(body);
            return -ENOMEM;
        }
        path = strf("/containers/create?name=%s", name);
        curl_free(name);
    } else {
        path = strdup("/containers/create");
    }
    rc = simple_call(d, RK_CREATE, "POST", path, finish_create, cb, arg, &q);
    if (rc < 0) {
        json_decref(body);
        return rc;
    }
    if ((rc = req_set_json(q, body)) < 0 || (rc = submit(q)) < 0)
        req_free(q);
    return rc;
}

static int container_action(struct wg_docker *d, enum req_kind kind, const char *ref,
                            const char *action, wg_docker_cb *cb, void *arg)
{
    struct req *q;
    int rc;

    if (!wg_docker_ref_valid(ref))
        return -EINVAL;
    rc = simple_call(d, kind, "POST", strf("/containers/%s/%s", ref, action), finish_plain, cb, arg,
                     &q);
    if (rc < 0)
        return rc;
    q->ok_304 = true;
    if ((rc = submit(q)) < 0)
        req_free(q);
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
    struct req *q;
    int rc;

    if (!wg_docker_ref_valid(ref) || timeout_s > 86400)
        return -EINVAL;
    snprintf(action, sizeof(action), "stop?t=%u", timeout_s);
    rc = simple_call(d, RK_STOP, "POST", strf("/containers/%s/%s", ref, action), finish_plain, cb,
                     arg, &q);
    if (rc < 0)
        return rc;
    q->ok_304 = true;
    q->timeout_ms = d->timeout_ms + timeout_s * 1000u;
    if ((rc = submit(q)) < 0)
        req_free(q);
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
    return simple_call(d, RK_INSPECT, "GET", strf("/containers/%s/json", ref), finish_inspect, cb,
                       arg, NULL);
}

int wg_docker_remove(struct wg_docker *d, const char *ref, bool force, bool volumes,
                     wg_docker_cb *cb, void *arg)
{
    if (!wg_docker_ref_valid(ref))
        return -EINVAL;
    return simple_call(d, RK_REMOVE, "DELETE",
                       strf("/containers/%s?force=%d&v=%d", ref, force ? 1 : 0, volumes ? 1 : 0),
                       finish_plain, cb, arg, NULL);
}

/* `filters` query value for the label filter (and type=container when
 * with_type): {"label":["k=v"]}, percent-encoded. NULL when out of memory. */
static char *label_filters(const char *label, bool with_type)
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

static bool label_ok(const char *label)
{
    return text_ok(label, 512, false) && label[0] != '=';
}

int wg_docker_list(struct wg_docker *d, const char *label, wg_docker_cb *cb, void *arg)
{
    char *f, *path;

    if (!label)
        label = WG_DOCKER_SESSION_LABEL;
    if (!d || !label_ok(label))
        return -EINVAL;
    f = label_filters(label, false);
    if (!f)
        return -ENOMEM;
    path = strf("/containers/json?all=1&filters=%s", f);
    free(f);
    return simple_call(d, RK_LIST, "GET", path, finish_list, cb, arg, NULL);
}

int wg_docker_logs(struct wg_docker *d, const char *ref, unsigned tail, wg_docker_cb *cb, void *arg)
{
    struct req *q;
    int rc;

    if (!wg_docker_ref_valid(ref))
        return -EINVAL;
    rc = simple_call(d, RK_LOGS, "GET",
                     strf("/containers/%s/logs?stdout=1&stderr=1&tail=%u", ref, tail), finish_logs,
                     cb, arg, &q);
    if (rc < 0)
        return rc;
    q->streamed = true;
    if ((rc = submit(q)) < 0)
        req_free(q);
    return rc;
}

/* ---- exec: create, start attached, inspect -------------------------------------------------- */

static void exec_step(struct req *q, int status, struct wg_docker_reply *r);

static void exec_deliver(struct exec_op *op, int status, struct wg_docker_reply *r)
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
static int exec_next(struct exec_op *op, enum req_kind kind, const char *method, char *path,
                     json_t *body, uint32_t delay_ms)
{
    struct wg_docker *d = op->d;
    struct req *q;
    int rc;

    if (d->closed) {
        free(path);
        json_decref(body);
        return -ECANCELED;
    }
    q = req_new(d, kind, method, path, exec_step, NULL, NULL);
    if (!q) {
        json_decref(body);
        return -ENOMEM;
    }
    if (body && (rc = req_set_json(q, body)) < 0) {
        req_free(q);
        return rc;
    }
    q->op = op;
    q->deadline = op->deadline;
    q->timeout_ms = op->timeout_ms;
    q->streamed = kind == RK_EXEC_START;
    if (delay_ms) {
        delay(q, delay_ms);
        return 0;
    }
    rc = submit(q);
    if (rc < 0)
        req_free(q);
    return rc;
}

static void exec_step(struct req *q, int status, struct wg_docker_reply *r)
{
    struct exec_op *op = q->op;
    struct wg_docker *d = q->d;
    char error[ERROR_MAX];
    json_t *code;
    int rc = 0;

    q->op = NULL;
    if (q->delivered || !op)
        return;
    q->delivered = true;
    if (q->kind == RK_EXEC_START) {
        /* Keep what it printed, also when the step failed (a timeout). */
        demux_end(&q->dm, out_sink, q);
        op->out = q->out;
        op->truncated = q->out_truncated;
        wg_buf_init(&q->out, 0);
    }
    if (status != 0) {
        exec_deliver(op, status, r);
        return;
    }
    switch (q->kind) {
    case RK_EXEC_CREATE: {
        const char *id = json_string_value(json_object_get(r->json, "Id"));
        if (!is_full_id(id)) {
            r->message = "the answer has no exec Id";
            status = -EBADMSG;
            break;
        }
        snprintf(op->exec_id, sizeof(op->exec_id), "%s", id);
        rc = exec_next(op, RK_EXEC_START, "POST", strf("/exec/%s/start", op->exec_id),
                       json_pack("{s:b,s:b}", "Detach", 0, "Tty", 0), 0);
        break;
    }
    case RK_EXEC_START:
        rc = exec_next(op, RK_EXEC_INSPECT, "GET", strf("/exec/%s/json", op->exec_id), NULL, 0);
        break;
    case RK_EXEC_INSPECT:
        code = json_object_get(r->json, "ExitCode");
        /* The output can end a moment before the engine records the exit. */
        if (json_is_true(json_object_get(r->json, "Running")) || !json_is_integer(code)) {
            if (++op->polls > EXEC_POLL_MAX || uv_now(d->loop) + EXEC_POLL_MS >= op->deadline) {
                r->message = "the exec's output ended but it did not exit in time";
                status = -ETIMEDOUT;
                break;
            }
            rc = exec_next(op, RK_EXEC_INSPECT, "GET", strf("/exec/%s/json", op->exec_id), NULL,
                           EXEC_POLL_MS);
            break;
        }
        r->exit_code = (int)json_integer_value(code);
        exec_deliver(op, 0, r);
        return;
    default:
        assert(!"not an exec step");
        return;
    }
    if (status == 0 && rc == 0)
        return;
    if (status == 0) {
        status = rc;
        r->message =
            rc == -ECANCELED ? "canceled: the Docker client is shutting down" : "out of memory";
    }
    format_error(error, sizeof(error), r, status);
    r->error = error;
    exec_deliver(op, status, r);
}

int wg_docker_exec(struct wg_docker *d, const char *ref, const char *const *argv,
                   uint32_t timeout_ms, wg_docker_cb *cb, void *arg)
{
    struct exec_op *op;
    json_t *cmd = NULL, *body;
    char dummy[1];
    int rc;

    if (!d || !wg_docker_ref_valid(ref) || !argv || !argv[0])
        return -EINVAL;
    if (d->closed)
        return -ECANCELED;
    rc = string_array(argv, "argv", true, &cmd, dummy, sizeof(dummy));
    if (rc < 0)
        return rc;
    body = json_pack("{s:b,s:b,s:b,s:b,s:o}", "AttachStdin", 0, "AttachStdout", 1, "AttachStderr",
                     1, "Tty", 0, "Cmd", cmd);
    if (!body)
        return -ENOMEM;
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
    rc = exec_next(op, RK_EXEC_CREATE, "POST", strf("/containers/%s/exec", op->ref), body, 0);
    if (rc < 0)
        free(op);
    return rc;
}

/* ---- events --------------------------------------------------------------------------------- */

static void finish_events(struct req *q, int status, struct wg_docker_reply *r)
{
    if (status == 0) { /* a 2xx stream that ended: the engine closed it */
        status = -ECONNRESET;
        r->message = "the engine closed the events stream";
        format_error(q->finish_error, sizeof(q->finish_error), r, status);
        r->error = q->finish_error;
    }
    deliver(q, status, r);
}

int wg_docker_events_start(struct wg_docker *d, const struct wg_docker_events_opts *opts,
                           wg_docker_event_cb *ev_cb, wg_docker_cb *end_cb, void *arg,
                           struct wg_docker_events **ret)
{
    const char *label = opts && opts->label ? opts->label : WG_DOCKER_SESSION_LABEL;
    int64_t since = opts ? opts->since_ns : 0;
    char *f, *path;
    struct req *q;
    int rc;

    if (!d || !ev_cb || !ret || !label_ok(label) || since < 0)
        return -EINVAL;
    f = label_filters(label, true);
    if (!f)
        return -ENOMEM;
    if (since > 0)
        path = strf("/events?filters=%s&since=%lld.%09lld", f, (long long)(since / 1000000000),
                    (long long)(since % 1000000000));
    else
        path = strf("/events?filters=%s", f);
    free(f);
    rc = simple_call(d, RK_EVENTS, "GET", path, finish_events, end_cb, arg, &q);
    if (rc < 0)
        return rc;
    q->ev_cb = ev_cb;
    q->streamed = true;
    q->timeout_ms = 0;
    /* The buffer holds an error body or one partial line. */
    wg_buf_init(&q->resp,
                (d->max_body > WG_DOCKER_MAX_EVENT_LINE ? d->max_body : WG_DOCKER_MAX_EVENT_LINE) +
                    1);
    if ((rc = submit(q)) < 0) {
        req_free(q);
        return rc;
    }
    *ret = (struct wg_docker_events *)q;
    return 0;
}

void wg_docker_events_stop(struct wg_docker_events *e)
{
    struct req *q = (struct req *)e;
    struct wg_docker *d;

    if (!q)
        return;
    d = q->d;
    if (d->closed || q->canceled)
        return; /* wg_docker_free() settles it */
    q->canceled = true;
    q->delivered = true;
    switch (q->where) {
    case RQ_QUEUED:
    case RQ_DELAYED:
        unlink_req(q);
        req_free(q);
        break;
    case RQ_ACTIVE:
        if (d->in_curl) {
            kick(d); /* pump() removes it once curl has returned */
        } else {
            curl_multi_remove_handle(d->multi, q->easy);
            unlink_req(q);
            req_free(q);
        }
        break;
    case RQ_NONE:
        break; /* its outcome is being delivered: freed after */
    }
}
