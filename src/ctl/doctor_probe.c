/* src/ctl/doctor_probe.c - doctor's isolation check: can a session
 * container reach Redis or the admin listener? A probe container from
 * sessions.image (labelled wakegate.doctor=1, removed afterwards) tries to
 * connect to each with nc. */
#include "src/ctl/ctl.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/labels.h"
#include "common/redis_url.h"
#include "common/str.h"
#include "src/ctl/ctl_int.h"

#define PROBE_WAIT_MS 20000L /* the probe container, start to exit */
#define PROBE_CONNECT_S 2    /* nc -w inside the probe */
#define PROBE_TARGETS_MAX 4

struct probe_target {
    const char *check;                 /* "isolation redis" */
    char listen[INET6_ADDRSTRLEN + 8]; /* where the service is, as configured */
    char addr[INET6_ADDRSTRLEN];       /* what the probe connects to */
    unsigned port;
    bool loopback; /* configured on loopback: the probe tries the gateway */
    int open;      /* -1 not probed, 0 refused, 1 reachable */
};

/* The default template's session network as the wakes use it (the
 * lowest id of those named so, orchestrator/wake_network.c): its id and
 * its IPv4 gateway, the host as a session container sees it. id is ""
 * when the engine has no such network yet (the first wake makes it), gw
 * "" when it names no IPv4 gateway. */
struct session_net {
    char name[80];
    char id[80];
    char gw[INET6_ADDRSTRLEN];
};

static void session_network(struct doctor *d, struct session_net *n)
{
    struct ctl_http hc;
    char *filters, *esc = NULL, path[512];

    memset(n, 0, sizeof(*n));
    {
        char buf[sizeof(n->name)];
        snprintf(n->name, sizeof(n->name), "%s",
                 wg_config_network_name(&d->c->cfg.sessions, buf, sizeof(buf)));
    }
    filters = wg_strf("{\"name\":[\"%s\"]}", n->name);
    if (filters != NULL)
        esc = curl_easy_escape(NULL, filters, 0);
    free(filters);
    if (esc == NULL)
        return;
    snprintf(path, sizeof(path), "/networks?filters=%s", esc);
    curl_free(esc);
    if (ctl_docker_call(d, &hc, "GET", path, true, NULL, DOCTOR_HTTP_MS) == 0 && hc.status == 200) {
        json_t *j = json_loads(ctl_http_body(&hc), 0, NULL), *best = NULL, *v;
        size_t i;
        json_array_foreach(j, i, v)
        {
            const char *name = ctl_jstr(v, "Name"), *id = ctl_jstr(v, "Id");
            if (name && id && strcmp(name, n->name) == 0 &&
                (best == NULL || strcmp(id, ctl_jstr(best, "Id")) < 0))
                best = v;
        }
        if (best != NULL) {
            json_t *cfgs = json_object_get(json_object_get(best, "IPAM"), "Config");
            snprintf(n->id, sizeof(n->id), "%s", ctl_jstr(best, "Id"));
            for (size_t k = 0; k < json_array_size(cfgs) && !n->gw[0]; k++) {
                const char *gw = ctl_jstr(json_array_get(cfgs, k), "Gateway");
                struct in_addr a;
                if (gw != NULL && inet_pton(AF_INET, gw, &a) == 1)
                    snprintf(n->gw, sizeof(n->gw), "%s", gw);
            }
        }
        json_decref(j);
    }
    ctl_http_release(&hc);
}

static bool sa_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return false;
}

static bool sa_any(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return false;
}

/* Fills t from a configured address. A loopback or wildcard listener is
 * tried at the session network's gateway (a wildcard one answers there; a loopback
 * one must not), anything else at its own address. */
static void target_from_sa(struct probe_target *t, const struct sockaddr *sa, const char *gw)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, ip, sizeof(ip));
        port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, ip, sizeof(ip));
        port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    }
    snprintf(t->listen, sizeof(t->listen), "%s%s%s:%u", sa->sa_family == AF_INET6 ? "[" : "", ip,
             sa->sa_family == AF_INET6 ? "]" : "", port);
    t->port = port;
    t->loopback = sa_loopback(sa);
    t->open = -1;
    if (t->loopback || sa_any(sa))
        snprintf(t->addr, sizeof(t->addr), "%s", gw);
    else
        snprintf(t->addr, sizeof(t->addr), "%s", ip);
}

/* The probe's shell script. Exit 3: no nc; 4: nc cannot even reach a
 * listener inside the container (an nc without -e, say), so a refusal
 * would prove nothing; 10 + bit i: target i accepted a connection.
 * Addresses are inet_ntop() output and ports numbers: nothing to quote. */
static void probe_script(const struct probe_target *t, size_t n, struct wg_buf *out)
{
    wg_buf_appendf(out,
                   "command -v nc >/dev/null 2>&1 || exit 3\n"
                   "nc -l -p 39999 -e true </dev/null >/dev/null 2>&1 &\n"
                   "i=0\n"
                   "until nc -w %d 127.0.0.1 39999 -e true </dev/null >/dev/null 2>&1; do\n"
                   "  i=$((i+1)); [ $i -ge 20 ] && exit 4; sleep 0.1\n"
                   "done\n"
                   "r=10\n",
                   PROBE_CONNECT_S);
    for (size_t i = 0; i < n; i++)
        wg_buf_appendf(out,
                       "if nc -w %d %s %u -e true </dev/null >/dev/null 2>&1; then "
                       "r=$((r+%u)); fi\n",
                       PROBE_CONNECT_S, t[i].addr, t[i].port, 1u << i);
    wg_buf_appendf(out, "exit $r\n");
}

/* The probe joins the session network, where session containers are. */
static char *probe_body(const char *image, const char *script, const char *network)
{
    json_t *b = json_pack("{s:s, s:[s,s,s], s:[], s:{s:s}, s:b, s:{s:b, s:s}}", "Image", image,
                          "Entrypoint", "/bin/sh", "-c", script, "Cmd", "Labels", WG_LABEL_DOCTOR,
                          "1", "Tty", 0, "HostConfig", "AutoRemove", 0, "NetworkMode", network);
    char *text = b ? json_dumps(b, JSON_COMPACT) : NULL;
    json_decref(b);
    return text;
}

/* Creates, runs, waits for and removes one probe container. Returns its
 * exit code, or -1 with why set. */
static int probe_run(struct doctor *d, const char *image, const char *script, const char *network,
                     char *why, size_t whylen)
{
    struct ctl_http hc;
    char path[256], msg[256], name[64], id[80] = "";
    char *body = probe_body(image, script, network);
    int code = -1;

    snprintf(name, sizeof(name), "wg-doctor-%d-%" PRId64, (int)getpid(), wg_clock_wall_ms());
    snprintf(path, sizeof(path), "/containers/create?name=%s", name);
    if (body == NULL || ctl_docker_call(d, &hc, "POST", path, true, body, DOCTOR_HTTP_MS) < 0) {
        ctl_msgf(why, whylen, "create: %s", body ? hc.err : "out of memory");
        goto out_call;
    }
    if (hc.status != 201) {
        ctl_docker_message(&hc, msg, sizeof(msg));
        if (hc.status == 404)
            snprintf(why, whylen, "sessions.image %s is not on the engine (%s)", image, msg);
        else
            snprintf(why, whylen, "create: %ld %s", hc.status, msg);
        goto out_call;
    }
    json_t *j = json_loads(ctl_http_body(&hc), 0, NULL);
    ctl_clean_copy(id, sizeof(id), json_is_object(j) ? ctl_jstr(j, "Id") : NULL);
    json_decref(j);
    ctl_http_release(&hc);
    if (id[0] == '\0' || strspn(id, "0123456789abcdef") != strlen(id)) {
        snprintf(why, whylen, "create: the engine gave no container id");
        goto out;
    }

    snprintf(path, sizeof(path), "/containers/%s/start", id);
    if (ctl_docker_call(d, &hc, "POST", path, true, NULL, DOCTOR_HTTP_MS) < 0 ||
        (hc.status != 204 && hc.status != 304)) {
        ctl_docker_message(&hc, msg, sizeof(msg));
        ctl_msgf(why, whylen, "start: %s", hc.status ? msg : hc.err);
        goto out_remove;
    }
    ctl_http_release(&hc);
    snprintf(path, sizeof(path), "/containers/%s/wait", id);
    if (ctl_docker_call(d, &hc, "POST", path, true, NULL, PROBE_WAIT_MS) < 0 || hc.status != 200) {
        ctl_docker_message(&hc, msg, sizeof(msg));
        ctl_msgf(why, whylen, "wait: %s", hc.status ? msg : hc.err);
        goto out_remove;
    }
    j = json_loads(ctl_http_body(&hc), 0, NULL);
    if (json_is_integer(json_object_get(j, "StatusCode")))
        code = (int)ctl_jint(j, "StatusCode");
    else
        snprintf(why, whylen, "wait: no StatusCode in the answer");
    json_decref(j);
out_remove:
    ctl_http_release(&hc);
    /* Always, so a failed probe leaves nothing behind. */
    snprintf(path, sizeof(path), "/containers/%s?force=1", id);
    if (ctl_docker_call(d, &hc, "DELETE", path, true, NULL, DOCTOR_HTTP_MS) < 0 ||
        (hc.status != 204 && hc.status != 404))
        fprintf(stderr, PROG ": doctor: probe container %s not removed (label %s=1)\n", name,
                WG_LABEL_DOCTOR);
out_call:
    ctl_http_release(&hc);
out:
    free(body);
    return code;
}

/* One line per target once the probe ran (or could not). */
static void isolation_report(struct doctor *d, const struct probe_target *t, const char *image,
                             const char *cannot)
{
    if (t->open == 1)
        ctl_report(d, t->check, LV_FAIL,
                   "%s:%u accepts connections from a session container (%s; configured %s)%s",
                   t->addr, t->port, image, t->listen,
                   t->loopback ? ": the port is bound beyond loopback" : "");
    else if (t->open == 0 && t->loopback)
        ctl_report(d, t->check, LV_OK,
                   "%s is loopback: containers cannot reach it (%s:%u refused a probe container)",
                   t->listen, t->addr, t->port);
    else if (t->open == 0)
        ctl_report(d, t->check, LV_OK, "%s:%u is not reachable from a session container (%s)",
                   t->addr, t->port, image);
    else if (t->loopback)
        ctl_report(d, t->check, LV_SKIP,
                   "not probed: %s (%s is loopback: containers should not reach it)", cannot,
                   t->listen);
    else
        ctl_report(d, t->check, LV_WARN, "%s: cannot tell, %s", t->listen, cannot);
}

/* Builds the Redis target; false when there is nothing to probe (a line
 * was reported). */
static bool redis_probe_target(struct doctor *d, struct probe_target *t, const char *gw)
{
    struct wg_redis_url r;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char port[8], shown[400];
    bool probe = false;

    if (d->c->cfg.redis_url == NULL) {
        ctl_report(d, "isolation redis", LV_SKIP,
                   "no redis.url configured: nothing on TCP to probe");
        return false;
    }
    if (wg_redis_url_parse(d->c->cfg.redis_url, &r, NULL, 0) < 0) {
        ctl_report(d, "isolation redis", LV_WARN, "redis.url cannot be taken apart");
        return false;
    }
    ctl_redis_shown(&r, shown, sizeof(shown));
    snprintf(port, sizeof(port), "%u", r.master_name ? r.sentinels[0].port : r.port);
    if (r.master_name) {
        /* The first sentinel: containers must reach no part of Redis. */
        if (getaddrinfo(r.sentinels[0].host, port, &hints, &res) != 0 || res == NULL)
            ctl_report(d, "isolation redis", LV_WARN, "cannot resolve %s", r.sentinels[0].host);
        else
            probe = true;
    } else if (r.is_unix)
        ctl_report(d, "isolation redis", LV_OK,
                   "%s is a unix socket: containers reach it only if it is bind-mounted into them",
                   shown);
    else if (getaddrinfo(r.host, port, &hints, &res) != 0 || res == NULL)
        ctl_report(d, "isolation redis", LV_WARN, "cannot resolve %s", r.host);
    else
        probe = true;
    if (probe) {
        t->check = "isolation redis";
        target_from_sa(t, res->ai_addr, gw);
        freeaddrinfo(res);
    }
    wg_redis_url_release(&r);
    return probe;
}

void ctl_check_isolation(struct doctor *d)
{
    const char *image = d->c->cfg.sessions.image;
    struct probe_target t[PROBE_TARGETS_MAX];
    char cannot[512] = "", *script = NULL;
    struct session_net net = {.gw = ""};
    struct wg_buf sb;
    size_t n = 0, nprobe = 0;

    wg_buf_init(&sb, 64 * 1024);
    if (d->docker_up)
        session_network(d, &net);
    if (redis_probe_target(d, &t[n], net.gw))
        n++;
    t[n].check = "isolation admin";
    target_from_sa(&t[n], (const struct sockaddr *)&d->c->cfg.admin_listen.sa, net.gw);
    n++;

    if (!d->docker_up)
        snprintf(cannot, sizeof(cannot), "the Docker engine does not answer");
    else if (net.id[0] == '\0')
        snprintf(cannot, sizeof(cannot),
                 "the session network %s does not exist yet (the first wake makes it)", net.name);
    else if (net.gw[0] == '\0')
        snprintf(cannot, sizeof(cannot),
                 "the engine names no IPv4 gateway for the session network %s", net.name);
    else if (image == NULL || image[0] == '\0')
        snprintf(cannot, sizeof(cannot), "sessions.image is not set");
    if (cannot[0] == '\0') {
        /* Probe what has an address, in order; bit i is t[i]. */
        for (size_t i = 0; i < n; i++)
            if (t[i].addr[0] && strchr(t[i].addr, ':') == NULL)
                nprobe = i + 1;
            else if (t[i].addr[0])
                t[i].addr[0] = '\0'; /* IPv6: session networks have none */
        probe_script(t, nprobe, &sb);
        if (wg_buf_append(&sb, "", 1) == 0)
            script = sb.data;
        int code = script ? probe_run(d, image, script, net.id, cannot, sizeof(cannot)) : -1;
        if (script == NULL)
            snprintf(cannot, sizeof(cannot), "out of memory");
        else if (code == 3)
            snprintf(cannot, sizeof(cannot), "sessions.image %s has no nc to probe with", image);
        else if (code == 4)
            snprintf(cannot, sizeof(cannot),
                     "the nc of %s cannot connect even inside the container (busybox nc with -e "
                     "is needed)",
                     image);
        else if (code >= 10 && code < 10 + (1 << nprobe))
            for (size_t i = 0; i < nprobe; i++)
                t[i].open = t[i].addr[0] ? ((code - 10) >> i) & 1 : -1;
        else if (code >= 0)
            snprintf(cannot, sizeof(cannot), "the probe container exited %d", code);
    }
    for (size_t i = 0; i < n; i++) {
        if (t[i].open < 0 && cannot[0] == '\0')
            snprintf(cannot, sizeof(cannot), "no IPv4 address to probe");
        isolation_report(d, &t[i], image ? image : "-", cannot);
    }
    wg_buf_release(&sb);
}
