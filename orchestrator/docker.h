/* orchestrator/docker.h - Docker Engine API client on a libuv loop (libcurl multi).
 *
 * One struct wg_docker talks to one engine. Transfers run on libcurl's multi
 * interface, driven by the loop: curl's sockets are watched with uv_poll
 * handles and its timeouts with a uv_timer. No call blocks the loop and no
 * thread is started per request; a TCP host name is resolved with
 * uv_getaddrinfo() (libuv's pool) and pinned for curl, so curl's resolver
 * never runs.
 *
 * Hosts:
 *   unix:///path/to/docker.sock        (the default: unix:///var/run/docker.sock)
 *   tcp://host:port                    port 2375, or 2376 with TLS; host may be
 *                                      "[v6 address]"; https when opts.tls
 *
 * API version. Every versioned path is sent as /v<version>/...; the version
 * is negotiated once from GET /_ping (the Api-Version header): the lower of
 * the engine's and WG_DOCKER_API_MAX (or opts.api_version). Calls issued
 * before that are held and sent when the ping answers; when it fails they
 * fail with its status, and the next call negotiates again. A connection
 * failure forgets the version (and a resolved address), so an engine that
 * was upgraded or moved is found again. An engine older than
 * WG_DOCKER_API_MIN fails every versioned call with -EPROTONOSUPPORT.
 *
 * Results. Each call's callback runs exactly once, never inside the call
 * that issued it, with status:
 *      0                      success: a 2xx answer, or 304 from start,
 *                             stop, pause, unpause ("already in that
 *                             state"), which r->http_status shows;
 *   > 0 WG_DOCKER_E*          the engine answered with an HTTP error;
 *                             r->message is Docker's own "message";
 *   < 0 -errno                no usable answer: -ECONNREFUSED or -ENOENT
 *                             (nobody at the socket), -EHOSTUNREACH (name
 *                             lookup), -ETIMEDOUT, -ECONNRESET (connection
 *                             lost, events stream ended), -EMSGSIZE (a
 *                             body over its cap), -EBADMSG (a 2xx body
 *                             that is not what the API documents), -EPROTO
 *                             (TLS), -EPROTONOSUPPORT (engine too old),
 *                             -ECANCELED (wg_docker_free() ran), -ENOMEM,
 *                             -EIO (other curl errors; r->message says).
 * r is never NULL and, like everything it points to, is valid only inside
 * the callback: copy what you keep. r->error is one line for a log, e.g.
 * "POST /v1.41/containers/x/start: 404 No such container: x".
 *
 * Safe inputs. Only strings that pass wg_docker_ref_valid() are put into a
 * path; query values are percent-encoded; request bodies are built with
 * jansson from validated fields. Calls given anything else return -EINVAL
 * and do not call back.
 *
 * Caps. Every buffer the engine can grow has a cap: JSON bodies
 * (opts.max_body; past it the call fails with -EMSGSIZE), exec and log
 * output (opts.max_output; only the tail is kept), one events line
 * (WG_DOCKER_MAX_EVENT_LINE; past it the stream ends with -EMSGSIZE).
 *
 * Logging: debug lines only (requests, negotiation); the caller logs the
 * outcome it acts on, with r->error. */
#ifndef WG_ORCHESTRATOR_DOCKER_H
#define WG_ORCHESTRATOR_DOCKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "common/docker_host.h"

struct wg_log;
struct wg_docker;        /* opaque */
struct wg_docker_events; /* opaque: one events stream */

#define WG_DOCKER_API_MAX "1.41" /* what this client speaks (Debian 12's engine) */
#define WG_DOCKER_API_MIN "1.25" /* HostConfig.Init, filters as JSON */

#define WG_DOCKER_TIMEOUT_MS 30000          /* per call, from when it is sent */
#define WG_DOCKER_CONNECT_TIMEOUT_MS 5000   /* connect (+ TLS handshake) */
#define WG_DOCKER_MAX_BODY (8u << 20)       /* JSON answers */
#define WG_DOCKER_MAX_LIST_BODY (64u << 20) /* the running list: ~6 KiB a row at 10,000 */
#define WG_DOCKER_MAX_OUTPUT (64u << 10)    /* exec and log output: tail kept */
#define WG_DOCKER_MAX_EVENT_LINE (64u << 10)
#define WG_DOCKER_REF_MAX 128 /* longest id or name accepted */

/* Positive outcomes: the engine answered with this HTTP status. */
enum {
    WG_DOCKER_ENOTFOUND = 1, /* 404: no such container, image or exec */
    WG_DOCKER_ECONFLICT = 2, /* 409: name in use, not running, already paused... */
    WG_DOCKER_EHTTP = 3,     /* any other non-success status */
};

/* Zero fields take the defaults above. */
struct wg_docker_opts {
    const char *host;        /* NULL: WG_DOCKER_DEFAULT_HOST; copied */
    bool tls;                /* tcp:// only: speak https */
    const char *tls_ca;      /* PEM CA bundle; NULL: the system's */
    const char *tls_cert;    /* PEM client certificate; NULL: none */
    const char *tls_key;     /* PEM client key; NULL: none */
    bool tls_skip_verify;    /* do not verify the engine's certificate (never by default) */
    const char *api_version; /* highest version to use, "1.N"; NULL: WG_DOCKER_API_MAX */
    uint32_t timeout_ms;
    uint32_t connect_timeout_ms;
    size_t max_body;
    size_t max_output;
};

/* A container as GET /containers/{id}/json describes it. Strings are never
 * NULL unless said so; "" when Docker gave none. */
struct wg_docker_container {
    const char *id;
    const char *name;   /* without the leading '/' */
    const char *image;  /* Config.Image, as created */
    const char *status; /* State.Status: created, running, paused, restarting,
                           removing, exited, dead */
    bool running, paused, restarting, oom_killed, dead;
    int exit_code;
    int pid;
    const char *error;                    /* State.Error */
    const char *health;                   /* State.Health.Status (starting, healthy, unhealthy);
                                             NULL when the image has no health check */
    const char *ip;                       /* default bridge address (NetworkSettings.IPAddress, else
                                             Networks.bridge, else the first network's) */
    const char *started_at, *finished_at; /* RFC 3339 as Docker wrote them */
    int64_t started_ms, finished_ms;      /* ms since the epoch; 0 for Docker's zero time */
    bool tty;
    json_t *labels; /* Config.Labels, an object (maybe empty); borrowed */
};

/* One row of GET /containers/json. */
struct wg_docker_summary {
    const char *id;
    const char *name; /* the first name, without '/' */
    const char *image;
    const char *state;  /* created, running, paused, exited, ... */
    const char *status; /* "Up 2 minutes (healthy)" */
    int64_t created;    /* seconds since the epoch */
    json_t *labels;     /* object; borrowed */
};

struct wg_docker_reply {
    const char *method;  /* "GET" ... */
    const char *path;    /* as sent, e.g. "/v1.41/containers/ab12/start" */
    long http_status;    /* 0 when no HTTP answer came */
    const char *message; /* Docker's "message", else the transport's text; "" if none */
    const char *error;   /* "METHOD PATH: STATUS MESSAGE", "" on success */
    const char *body;    /* raw body (not for streamed calls); NUL-terminated */
    size_t body_len;
    json_t *json;            /* the body parsed, or NULL; borrowed */
    const char *api_version; /* the negotiated version, or NULL */
    uint64_t elapsed_us;     /* from sending to the answer */

    /* Per call, filled on success: */
    const char *id;                              /* create: the new container's id */
    const struct wg_docker_container *container; /* inspect */
    const struct wg_docker_summary *containers;  /* list */
    const struct wg_docker_network *networks;    /* network list: those named exactly so */
    size_t n_networks;
    size_t n_containers;
    const char *output; /* logs, exec: stdout and stderr interleaved, demultiplexed */
    size_t output_len;
    bool output_truncated; /* only the last max_output bytes are here */
    int exit_code;         /* exec */
    uint64_t cpu_usage_ns; /* stats: the container's CPU time so far */
};

typedef void wg_docker_cb(int status, const struct wg_docker_reply *r, void *arg);

struct wg_docker_label {
    const char *key;
    const char *value;
};

/* What wg_docker_create() builds the body from. Every field is checked; NULL
 * arrays are absent, non-NULL ones end with a NULL entry. */
struct wg_docker_spec {
    const char *session;                  /* required: becomes label wakegate.session=<session>;
                                             [A-Za-z0-9_-], 1-128 bytes */
    const char *name;                     /* container name, or NULL (Docker picks one) */
    const char *image;                    /* required */
    const char *const *cmd;               /* argv; NULL: the image's CMD */
    const char *const *env;               /* "KEY=value" */
    const struct wg_docker_label *labels; /* more labels; key NULL ends the array */
    uint16_t port;                        /* exposed TCP port, 0: none */
    const char *const *binds;             /* "host-path:container-path[:options]" */
    const char *network_mode;             /* NULL: the default bridge */
    int64_t memory_bytes;                 /* 0: no limit; else MemorySwap the same (no swap) */
    int64_t nano_cpus;                    /* 0: no limit */
    int64_t pids_limit;                   /* 0: no limit */
    const char *const *cap_add;           /* capability names added after CapDrop ALL */
    bool read_only_root;                  /* ReadonlyRootfs, with a tmpfs on /tmp */
    const char *user;                     /* Config.User, or NULL: the image's */
    const char *runtime;                  /* HostConfig.Runtime, or NULL: the engine's default */
    /* Always set: HostConfig.Init (an init as PID 1, so stop is fast; see
     * DESIGN.md), CapDrop ["ALL"], SecurityOpt ["no-new-privileges"],
     * Tty false, no stdin. */
};

/* A session network (docker_network.c): a bridge on which the engine's own
 * firewall rules keep containers from each other (inter-container traffic
 * off) and, without egress, from everything but this host (Internal). Its
 * bridge is named WG_DOCKER_BRIDGE_PREFIX + 8 hex digits, so one host rule
 * (scripts/session-firewall.sh) covers every session network. */
#define WG_DOCKER_BRIDGE_PREFIX "wgs-"

struct wg_docker_network_spec {
    const char *name;     /* required; a Docker network name (wg_docker_ref_valid()) */
    const char *subnet;   /* IPAM subnet "10.0.0.0/24", or NULL: the engine's pools */
    const char *template; /* the label wakegate.network=<template> */
    bool egress;          /* false: Internal (no route off this host) */
};

/* What a network inspect answers; strings point into the reply. */
struct wg_docker_network {
    const char *id;
    const char *name;
    const char *driver;   /* "bridge" */
    const char *bridge;   /* Options com.docker.network.bridge.name, "" if none */
    const char *template; /* Labels wakegate.network, "" if none */
    bool internal;
    bool icc; /* inter-container traffic: on unless enable_icc is "false" */
};

/* Why the engine's network n cannot hold sessions of spec (written to why),
 * or 0 when it can: ours (labelled), a bridge with inter-container traffic
 * off, a bridge name the host rule covers, and Internal exactly when the
 * spec has no egress. Pure. */
int wg_docker_network_check(const struct wg_docker_network *n,
                            const struct wg_docker_network_spec *spec, char *why, size_t whylen);

/* One event of the /events stream. Strings are "" when absent unless said. */
enum wg_docker_event_kind {
    WG_DOCKER_EVENTS_OPEN, /* the stream is live (again); only kind is set */
    WG_DOCKER_EVENT,
};

struct wg_docker_event {
    enum wg_docker_event_kind kind;
    const char *type;    /* "container" */
    const char *action;  /* start, die, oom, stop, kill, pause, unpause, destroy,
                            "health_status: healthy", "exec_die", ... as Docker wrote it */
    const char *id;      /* Actor.ID */
    const char *name;    /* Attributes.name */
    const char *session; /* Attributes["wakegate.session"], or NULL */
    const char *health;  /* for health_status actions: "healthy"...; else NULL */
    int exit_code;       /* Attributes.exitCode, -1 when absent */
    int64_t time_ns;     /* timeNano */
    json_t *attributes;  /* Actor.Attributes (labels among them); borrowed */
};

/* ev is valid only inside the call. May call wg_docker_events_stop() on its
 * own stream, and wg_docker_free(). */
typedef void wg_docker_event_cb(const struct wg_docker_event *ev, void *arg);

struct wg_docker_events_opts {
    const char *label; /* filter, "key" or "key=value"; NULL: WG_LABEL_SESSION */
    int64_t since_ns;  /* replay events from this time (ns since the epoch); 0: from now */
};

/* ---- setup ------------------------------------------------------------------------------- */

/* Nothing is sent until the first call. log may be NULL and must outlive d.
 * Returns 0 with *ret set, -EINVAL (reason in err) or -ENOMEM. */
int wg_docker_new(uv_loop_t *loop, const struct wg_docker_opts *opts, struct wg_log *log,
                  struct wg_docker **ret, char *err, size_t errlen);

/* NULL-safe and idempotent. Every pending callback runs with -ECANCELED
 * before this returns (the end callback of events streams too). Handles
 * close asynchronously; the memory goes on a later loop turn, so the loop
 * must run on. May be called from any callback of d. */
void wg_docker_free(struct wg_docker *d);

/* The negotiated version ("1.41"), or NULL before negotiation. */
const char *wg_docker_api_version(const struct wg_docker *d);

/* Whether the engine is reached over a unix socket: on this host, so its
 * containers' cgroup and /proc files are ours to read. */
bool wg_docker_is_local(const struct wg_docker *d);

/* A container id (12-64 lowercase hex) or name ([A-Za-z0-9][A-Za-z0-9_.-]*,
 * up to WG_DOCKER_REF_MAX bytes): what may go into a path. */
bool wg_docker_ref_valid(const char *ref);

/* ---- calls ------------------------------------------------------------------------------- */
/* Each returns 0 when cb will run; otherwise cb will not run and the
 * result is -EINVAL (bad argument), -ECANCELED (d is being freed) or
 * -ENOMEM. ref is an id or name (wg_docker_ref_valid()). */

/* GET /_ping; negotiates the version (r->api_version). */
int wg_docker_ping(struct wg_docker *d, wg_docker_cb *cb, void *arg);
/* GET /version: r->json. */
int wg_docker_version(struct wg_docker *d, wg_docker_cb *cb, void *arg);
/* GET /info: r->json (NCPU, MemTotal, ...). */
int wg_docker_info(struct wg_docker *d, wg_docker_cb *cb, void *arg);
/* GET /networks filtered by name: r->networks, those named exactly name
 * (the engine does not keep names unique: two creates that race both
 * succeed). */
int wg_docker_network_list(struct wg_docker *d, const char *name, wg_docker_cb *cb, void *arg);
/* POST /networks/create of a session network (see wg_docker_network_spec),
 * with a new random bridge name. 409 when the name is taken. Returns
 * -EINVAL for a bad spec, with the reason in err. */
int wg_docker_network_create(struct wg_docker *d, const struct wg_docker_network_spec *spec,
                             wg_docker_cb *cb, void *arg, char *err, size_t errlen);
/* POST /containers/create: r->id. Returns -EINVAL for a bad spec, with the
 * reason in err (may be NULL). */
int wg_docker_create(struct wg_docker *d, const struct wg_docker_spec *spec, wg_docker_cb *cb,
                     void *arg, char *err, size_t errlen);
int wg_docker_start(struct wg_docker *d, const char *ref, wg_docker_cb *cb, void *arg);
/* Docker sends SIGTERM, waits timeout_s, then SIGKILL; the call's own
 * timeout is opts.timeout_ms on top of that. */
int wg_docker_stop(struct wg_docker *d, const char *ref, unsigned timeout_s, wg_docker_cb *cb,
                   void *arg);
int wg_docker_pause(struct wg_docker *d, const char *ref, wg_docker_cb *cb, void *arg);
int wg_docker_unpause(struct wg_docker *d, const char *ref, wg_docker_cb *cb, void *arg);
/* r->container. */
int wg_docker_inspect(struct wg_docker *d, const char *ref, wg_docker_cb *cb, void *arg);
int wg_docker_remove(struct wg_docker *d, const char *ref, bool force, bool volumes,
                     wg_docker_cb *cb, void *arg);
/* All containers (running or not) carrying label ("key" or "key=value";
 * NULL: WG_LABEL_SESSION): r->containers. */
int wg_docker_list(struct wg_docker *d, const char *label, wg_docker_cb *cb, void *arg);
/* The running containers (not paused) carrying label (NULL:
 * WG_LABEL_SESSION): r->containers. Its answer may reach
 * WG_DOCKER_MAX_LIST_BODY. */
int wg_docker_list_running(struct wg_docker *d, const char *label, wg_docker_cb *cb, void *arg);
/* GET /containers/{ref}/stats?stream=false&one-shot=true: r->cpu_usage_ns.
 * Slow on some engines (dockerd 20.10: ~1-2 s), so callers bound how many
 * they have in flight. */
int wg_docker_stats(struct wg_docker *d, const char *ref, wg_docker_cb *cb, void *arg);
/* The last `tail` lines of stdout and stderr: r->output. */
int wg_docker_logs(struct wg_docker *d, const char *ref, unsigned tail, wg_docker_cb *cb,
                   void *arg);
/* Runs argv in the container (exec create, start attached, inspect) and
 * gives r->exit_code and the tail of its output. timeout_ms (0: opts'
 * timeout) bounds the whole call; the engine cannot kill an exec, so on
 * -ETIMEDOUT the process runs on: wrap argv in an in-container `timeout`.
 * On an HTTP error r describes the step that failed. r->output holds what
 * the exec printed, also when it failed after it started (a timeout). */
int wg_docker_exec(struct wg_docker *d, const char *ref, const char *const *argv,
                   uint32_t timeout_ms, wg_docker_cb *cb, void *arg);
/* wg_docker_exec() with env ("NAME=value" entries, NULL-terminated; NULL
 * for none) added to the container's environment for this exec only. */
int wg_docker_exec_env(struct wg_docker *d, const char *ref, const char *const *argv,
                       const char *const *env, uint32_t timeout_ms, wg_docker_cb *cb, void *arg);

/* ---- events ------------------------------------------------------------------------------ */

/* Opens GET /events filtered to type=container and the label. ev_cb gets
 * WG_DOCKER_EVENTS_OPEN once the engine accepted the stream, then each
 * event. end_cb runs once when the stream ends: an HTTP error, a transport
 * error, -ECONNRESET when the engine closed it, -EMSGSIZE for an oversized
 * line, -ECANCELED from wg_docker_free(); then reconnect with since_ns set
 * to the last event's time_ns. No timeout applies once open. Returns 0 with
 * *ret set (valid until end_cb runs or wg_docker_events_stop()), -EINVAL,
 * -ECANCELED or -ENOMEM. */
int wg_docker_events_start(struct wg_docker *d, const struct wg_docker_events_opts *opts,
                           wg_docker_event_cb *ev_cb, wg_docker_cb *end_cb, void *arg,
                           struct wg_docker_events **ret);

/* Ends the stream; no callback of it runs afterwards. NULL-safe. */
void wg_docker_events_stop(struct wg_docker_events *e);

/* ---- the stream demultiplexer (pure; also used by wakegatectl) ---- */

/* Demultiplexes Docker's attach/log stream: frames of an 8-byte header
 * (stream, 0, 0, 0, big-endian length) and data. A stream whose first bytes
 * cannot be such a header (a container with a TTY) passes through raw, as
 * stream 1. Zero it to start. */
enum wg_docker_demux_mode { WG_DOCKER_DM_DETECT = 0, WG_DOCKER_DM_MUX, WG_DOCKER_DM_RAW };
struct wg_docker_demux {
    unsigned char hdr[8];
    unsigned have;
    uint32_t left;
    int stream;
    enum wg_docker_demux_mode mode;
};
/* Data of stream (1 stdout, 2 stderr; 0 stdin). */
typedef void wg_docker_demux_fn(void *arg, int stream, const char *p, size_t n);
void wg_docker_demux_feed(struct wg_docker_demux *m, const char *p, size_t n,
                          wg_docker_demux_fn *fn, void *arg);
/* At the end of the stream: bytes still held while detecting were raw. */
void wg_docker_demux_end(struct wg_docker_demux *m, wg_docker_demux_fn *fn, void *arg);

#endif
