/* src/ctl/doctor.c - `doctor`: one line per check of the installation: the
 * configuration, the admin token's file (and the read-only token's), the
 * admin API, Redis (hiredis, synchronous), the Docker engine and its
 * socket; the isolation probe is doctor_probe.c. */
#include "src/ctl/ctl.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "common/clock.h"
#include "common/docker_host.h"
#include "common/redis_sentinel.h"
#include "common/redis_url.h"
#include "orchestrator/docker.h"
#include "src/ctl/ctl_int.h"

#define DOCTOR_REDIS_MS 3000 /* the Redis connect and PING, each */

static const char *const level_names[] = {"OK", "WARN", "FAIL", "SKIP"};
void ctl_report(struct doctor *d, const char *name, enum level lv, const char *fmt, ...)
{
    char raw[768];
    va_list ap;
    if (d->n >= CHECKS_MAX)
        return;
    struct check *k = &d->v[d->n++];
    snprintf(k->name, sizeof(k->name), "%s", name);
    k->lv = lv;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    ctl_clean_copy(k->detail, sizeof(k->detail), raw);
    if (!d->c->o.json) {
        printf("%-4s  %-17s %s\n", level_names[lv], k->name, k->detail);
        fflush(stdout);
    }
}

static bool check_config(struct doctor *d)
{
    const struct ctl *c = d->c;
    if (!c->cfg_ok) {
        ctl_report(d, "config", LV_FAIL, "%s", c->cfg_err);
        return false;
    }
    if (c->cfg.path != NULL)
        ctl_report(d, "config", LV_OK, "%s loads and validates", c->cfg.path);
    else
        ctl_report(d, "config", LV_OK,
                   "no file (--config or WAKEGATE_CONFIG): defaults and environment");
    return true;
}

/* The token must not be readable by every local user: its file, or the
 * configuration file when the token is written in it. */
static void check_token(struct doctor *d, bool env_token)
{
    const struct ctl *c = d->c;
    const struct wg_config *cfg = &c->cfg;
    const char *file = cfg->admin_token_file;
    const char *what = "admin.token_file";
    struct stat st;

    if (file == NULL && cfg->admin_token != NULL && !env_token && cfg->path != NULL) {
        file = cfg->path;
        what = "the configuration file holding admin.token";
    }
    if (file == NULL) {
        if (cfg->admin_token != NULL || c->token != NULL)
            ctl_report(d, "token", LV_OK, "from %s, no file to check",
                       c->token_src ? c->token_src : "the environment");
        else
            ctl_report(d, "token", LV_FAIL,
                       "no admin token configured: /v1 answers 503 (set admin.token_file)");
        return;
    }
    if (stat(file, &st) < 0) {
        ctl_report(d, "token", LV_FAIL, "%s %s: %s", what, file, strerror(errno));
        return;
    }
    unsigned mode = (unsigned)st.st_mode & 07777;
    if (st.st_mode & (S_IROTH | S_IWOTH))
        ctl_report(d, "token", LV_FAIL, "%s %s is world-%s (mode %04o): chmod 600 %s", what, file,
                   st.st_mode & S_IROTH ? "readable" : "writable", mode, file);
    else
        ctl_report(d, "token", LV_OK, "%s %s is not world-readable (mode %04o, owner uid %u)", what,
                   file, mode, (unsigned)st.st_uid);
}

/* The read-only token's file, held to the same rule: it lets its holder
 * read every session's record and event. Only when one is configured. */
static void check_read_token(struct doctor *d)
{
    const char *file = d->c->cfg.admin_read_token_file;
    struct stat st;

    if (file == NULL)
        return;
    if (stat(file, &st) < 0) {
        ctl_report(d, "read token", LV_FAIL, "admin.read_token_file %s: %s", file, strerror(errno));
        return;
    }
    unsigned mode = (unsigned)st.st_mode & 07777;
    if (st.st_mode & (S_IROTH | S_IWOTH))
        ctl_report(d, "read token", LV_FAIL,
                   "admin.read_token_file %s is world-%s (mode %04o): chmod 600 %s", file,
                   st.st_mode & S_IROTH ? "readable" : "writable", mode, file);
    else
        ctl_report(d, "read token", LV_OK,
                   "admin.read_token_file %s is not world-readable (mode %04o, owner uid %u)", file,
                   mode, (unsigned)st.st_uid);
}

/* GET base+path within DOCTOR_HTTP_MS; returns ctl_http_run()'s result. */
static int doctor_get(struct doctor *d, struct ctl_http *hc, const char *path, bool auth)
{
    ctl_http_init(hc, "GET");
    ctl_http_url(hc, "%s%s", d->c->base, path);
    hc->token = auth ? d->c->token : NULL;
    hc->total_ms = DOCTOR_HTTP_MS;
    return ctl_http_run(hc);
}

static void check_admin(struct doctor *d)
{
    struct ctl_http hc;
    char err[512];

    if (doctor_get(d, &hc, "/healthz", false) < 0) {
        ctl_report(d, "admin healthz", LV_FAIL, "%s (admin URL from %s)", hc.err, d->c->base_src);
    } else if (hc.status != 200) {
        ctl_report(d, "admin healthz", LV_FAIL, "%s answered %ld", hc.url, hc.status);
    } else {
        ctl_report(d, "admin healthz", LV_OK, "%s answered 200", hc.url);
        d->admin_up = true;
    }
    ctl_http_release(&hc);
    if (!d->admin_up) {
        ctl_report(d, "admin readyz", LV_SKIP, "not run: the admin API does not answer");
        ctl_report(d, "admin token", LV_SKIP, "not run: the admin API does not answer");
        return;
    }

    if (doctor_get(d, &hc, "/readyz", false) < 0) {
        ctl_report(d, "admin readyz", LV_FAIL, "%s", hc.err);
    } else if (hc.status == 200) {
        ctl_report(d, "admin readyz", LV_OK, "%s answered 200", hc.url);
    } else {
        json_t *j = json_loads(ctl_http_body(&hc), 0, NULL);
        const char *why = json_is_object(j) ? ctl_jstr(j, "reason") : NULL;
        ctl_report(d, "admin readyz", LV_FAIL, "%s answered %ld: %s", hc.url, hc.status,
                   why ? why : "not ready");
        json_decref(j);
    }
    ctl_http_release(&hc);

    if (d->c->token == NULL) {
        ctl_report(d, "admin token", LV_FAIL,
                   "no token to send: pass --token, set WAKEGATE_ADMIN_TOKEN or admin.token_file");
        return;
    }
    if (doctor_get(d, &hc, "/v1/sessions", true) < 0) {
        ctl_report(d, "admin token", LV_FAIL, "%s", hc.err);
        ctl_http_release(&hc);
        return;
    }
    ctl_api_error_text(&hc, err, sizeof(err));
    if (hc.status == 200) {
        json_t *j = json_loadb(wg_buf_head(&hc.body), wg_buf_size(&hc.body), 0, NULL);
        ctl_report(d, "admin token", LV_OK, "the token from %s is accepted (%zu sessions)%s",
                   d->c->token_src, json_array_size(j),
                   d->c->token_read_only ? "; it is the read-only one: ls, show, events, hosts"
                                         : "");
        json_decref(j);
    } else if (hc.status == 404) {
        ctl_report(d, "admin token", LV_WARN,
                   "%s answered 404: no session API here (role proxy, or no redis.url)", hc.url);
    } else {
        ctl_report(d, "admin token", LV_FAIL, "%s answered %ld%s%s (token from %s)", hc.url,
                   hc.status, err[0] ? ": " : "", err, d->c->token_src);
    }
    ctl_http_release(&hc);
}

void ctl_redis_shown(const struct wg_redis_url *u, char *out, size_t outlen)
{
    if (u->master_name && !u->host)
        snprintf(out, outlen, "%s", u->display);
    else if (u->is_unix)
        snprintf(out, outlen, "unix:%s", u->path);
    else if (strchr(u->host, ':') != NULL)
        snprintf(out, outlen, "[%s]:%u", u->host, u->port);
    else
        snprintf(out, outlen, "%s:%u", u->host, u->port);
}

/* redis.sentinel: asks the sentinels as wakegate does (the master's
 * address, then ROLE master there), reports what each said, and points t
 * at the master. */
static int find_master(struct doctor *d, struct wg_redis_url *t)
{
    struct wg_redis_sentinel_result res;

    wg_redis_sentinel_discover(t, 0, DOCTOR_REDIS_MS, &res);
    for (size_t i = 0; i < res.notes_len; i++) {
        const struct wg_redis_url_host *h = &t->sentinels[res.notes[i].sentinel];
        ctl_report(d, "redis sentinel", res.notes[i].ok ? LV_OK : LV_WARN,
                   "sentinel %s:%u, asked for master %s: %s", h->host, h->port, t->master_name,
                   res.notes[i].text);
    }
    if (res.status < 0) {
        ctl_report(d, "redis", LV_FAIL,
                   "no sentinel of redis.sentinel named a master that answers ROLE master");
        return -1;
    }
    free(t->host);
    t->host = strdup(res.host);
    t->port = res.port;
    if (!t->host) {
        ctl_report(d, "redis", LV_FAIL, "out of memory");
        return -1;
    }
    return 0;
}

static void check_redis(struct doctor *d)
{
    const char *url = d->c->cfg.redis_url;
    struct wg_redis_url t;
    struct timeval tv = {DOCTOR_REDIS_MS / 1000, (DOCTOR_REDIS_MS % 1000) * 1000};
    redisContext *rc = NULL;
    redisReply *reply = NULL;
    char shown[400];
    int64_t t0;

    memset(&t, 0, sizeof(t));
    if (url == NULL) {
        ctl_report(d, "redis", LV_WARN, "redis.url is not set: no sessions, no admin API");
        return;
    }
    /* It was validated with the configuration: this only takes it apart. */
    if (wg_redis_url_parse(url, &t, NULL, 0) < 0) {
        ctl_report(d, "redis", LV_FAIL, "redis.url cannot be taken apart");
        goto out;
    }
    if (t.master_name && find_master(d, &t) < 0)
        goto out;
    ctl_redis_shown(&t, shown, sizeof(shown));
    t0 = wg_clock_mono_ms();
    rc = t.is_unix ? redisConnectUnixWithTimeout(t.path, tv)
                   : redisConnectWithTimeout(t.host, t.port, tv);
    if (rc == NULL || rc->err) {
        ctl_report(d, "redis", LV_FAIL, "cannot connect to %s: %s", shown,
                   rc ? rc->errstr : "out of memory");
        goto out;
    }
    redisSetTimeout(rc, tv);
    if (t.password != NULL) {
        reply = t.user != NULL ? redisCommand(rc, "AUTH %s %s", t.user, t.password)
                               : redisCommand(rc, "AUTH %s", t.password);
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            ctl_report(d, "redis", LV_FAIL, "%s refused AUTH: %s", shown,
                       reply ? reply->str : rc->errstr);
            goto out;
        }
        freeReplyObject(reply);
        reply = NULL;
    }
    reply = redisCommand(rc, "PING");
    if (reply == NULL) {
        ctl_report(d, "redis", LV_FAIL, "%s: PING: %s", shown, rc->errstr);
    } else if (reply->type != REDIS_REPLY_STATUS || strcmp(reply->str, "PONG") != 0) {
        ctl_report(d, "redis", LV_FAIL, "%s answered PING with %s", shown,
                   reply->str ? reply->str : "something else");
    } else {
        ctl_report(d, "redis", LV_OK, "%s answered PING (%" PRId64 " ms)", shown,
                   wg_clock_mono_ms() - t0);
    }
out:
    freeReplyObject(reply);
    redisFree(rc);
    wg_redis_url_release(&t);
}

int ctl_docker_ep_init(struct docker_ep *e, const char *host, const struct wg_docker_tls_cfg *tls)
{
    struct wg_docker_host h;
    char why[256];
    bool use_tls = tls && tls->enabled;
    int r;

    memset(e, 0, sizeof(*e));
    snprintf(e->version, sizeof(e->version), "%s", WG_DOCKER_API_MAX);
    r = wg_docker_host_parse(host, use_tls, &h, why, sizeof why);
    if (r < 0)
        return r;
    if (h.is_unix && strlen(h.path) >= sizeof(e->unix_path))
        r = -EINVAL;
    else if (strlen(h.base) >= sizeof(e->base))
        r = -EINVAL;
    if (r == 0) {
        snprintf(e->unix_path, sizeof(e->unix_path), "%s", h.is_unix ? h.path : "");
        snprintf(e->base, sizeof(e->base), "%s", h.base);
        e->tls = use_tls ? tls : NULL;
    }
    wg_docker_host_release(&h);
    return r;
}

void ctl_dk_request(const struct docker_ep *e, struct ctl_http *hc, const char *method,
                    const char *path, bool versioned, const char *body, long total_ms)
{
    ctl_http_init(hc, method);
    ctl_http_url(hc, "%s%s%s%s", e->base, versioned ? "/v" : "", versioned ? e->version : "", path);
    hc->unix_socket = e->unix_path[0] ? e->unix_path : NULL;
    hc->tls = e->tls;
    hc->json_body = body;
    hc->total_ms = total_ms;
}

int ctl_docker_call(struct doctor *d, struct ctl_http *hc, const char *method, const char *path,
                    bool versioned, const char *body, long total_ms)
{
    ctl_dk_request(&d->dk, hc, method, path, versioned, body, total_ms);
    return ctl_http_run(hc);
}

void ctl_docker_message(struct ctl_http *hc, char *out, size_t outlen)
{
    json_t *j = json_loads(ctl_http_body(hc), 0, NULL);
    const char *m = json_is_object(j) ? ctl_jstr(j, "message") : NULL;
    ctl_clean_copy(out, outlen, m ? m : "");
    json_decref(j);
}

int ctl_docker_api_minor(const char *v)
{
    char *end;
    if (strncmp(v, "1.", 2) != 0 || !isdigit((unsigned char)v[2]))
        return -1;
    long n = strtol(v + 2, &end, 10);
    return *end == '\0' && n < 1000 ? (int)n : -1;
}

static void check_docker(struct doctor *d)
{
    const struct wg_config *cfg = &d->c->cfg;
    const char *host = cfg->docker_host ? cfg->docker_host : WG_DOCKER_DEFAULT_HOST;
    struct ctl_http hc;

    if (ctl_docker_ep_init(&d->dk, host, &cfg->docker_tls) < 0) {
        ctl_report(d, "docker", LV_FAIL, "docker.host %s cannot be taken apart", host);
        return;
    }
    if (ctl_docker_call(d, &hc, "GET", "/_ping", false, NULL, DOCTOR_HTTP_MS) < 0) {
        ctl_report(d, "docker", LV_FAIL, "%s: %s", host, hc.err);
    } else if (hc.status != 200) {
        ctl_report(d, "docker", LV_FAIL, "%s: GET /_ping answered %ld", host, hc.status);
    } else {
        int have = ctl_docker_api_minor(hc.api_version),
            min = ctl_docker_api_minor(WG_DOCKER_API_MIN);
        if (have < 0) {
            ctl_report(d, "docker", LV_WARN, "%s answered /_ping without an API version", host);
        } else if (have < min) {
            ctl_report(d, "docker", LV_FAIL,
                       "%s: engine API %s is older than the %s wakegate needs", host,
                       hc.api_version, WG_DOCKER_API_MIN);
        } else {
            if (have < ctl_docker_api_minor(WG_DOCKER_API_MAX))
                ctl_msgf(d->dk.version, sizeof(d->dk.version), "%s", hc.api_version);
            ctl_report(d, "docker", LV_OK, "%s answered /_ping: API %s%s%s, using %s", host,
                       hc.api_version, hc.server[0] ? ", " : "", hc.server, d->dk.version);
            d->docker_up = true;
        }
    }
    ctl_http_release(&hc);
}

static void check_docker_access(struct doctor *d)
{
    const struct docker_ep *e = &d->dk;
    struct stat st;

    if (e->unix_path[0] == '\0') {
        if (e->tls == NULL)
            ctl_report(d, "docker access", LV_WARN,
                       "%s is plain tcp: whoever reaches it controls the engine (use docker.tls)",
                       e->base);
        else if (!e->tls->verify)
            ctl_report(d, "docker access", LV_WARN,
                       "%s: TLS without verifying the engine's certificate", e->base);
        else
            ctl_report(d, "docker access", LV_OK, "%s: TLS, the engine's certificate verified",
                       e->base);
        return;
    }
    if (stat(e->unix_path, &st) < 0) {
        ctl_report(d, "docker access", LV_FAIL, "%s: %s", e->unix_path, strerror(errno));
        return;
    }
    unsigned mode = (unsigned)st.st_mode & 07777;
    if (!S_ISSOCK(st.st_mode))
        ctl_report(d, "docker access", LV_FAIL, "%s is not a socket", e->unix_path);
    else if (st.st_mode & S_IWOTH)
        ctl_report(d, "docker access", LV_FAIL,
                   "%s is world-writable (mode %04o): every local user controls the engine",
                   e->unix_path, mode);
    else if (access(e->unix_path, R_OK | W_OK) < 0)
        ctl_report(d, "docker access", LV_FAIL,
                   "%s (mode %04o, uid %u, gid %u) is not read-writable for uid %u: %s",
                   e->unix_path, mode, (unsigned)st.st_uid, (unsigned)st.st_gid, (unsigned)getuid(),
                   strerror(errno));
    else
        ctl_report(d, "docker access", LV_OK, "%s is accessible (mode %04o, uid %u, gid %u)",
                   e->unix_path, mode, (unsigned)st.st_uid, (unsigned)st.st_gid);
}

static void doctor_print_json(const struct doctor *d)
{
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < d->n; i++)
        json_array_append_new(a, json_pack("{s:s, s:s, s:s}", "check", d->v[i].name, "status",
                                           level_names[d->v[i].lv], "detail", d->v[i].detail));
    char *text = a ? json_dumps(a, JSON_COMPACT) : NULL;
    if (text != NULL)
        printf("%s\n", text);
    free(text);
    json_decref(a);
}

int ctl_cmd_doctor(struct ctl *c, const char *unused)
{
    struct doctor *d = calloc(1, sizeof(*d));
    int rc = WG_CTL_OK;
    if (d == NULL)
        return WG_CTL_FAILED;
    d->c = c;
    if (check_config(d)) {
        check_token(d, c->env_token);
        check_read_token(d);
        check_admin(d);
        check_redis(d);
        check_docker(d);
        check_docker_access(d);
        ctl_check_isolation(d);
    }
    if (c->o.json)
        doctor_print_json(d);
    for (size_t i = 0; i < d->n; i++)
        if (d->v[i].lv == LV_FAIL)
            rc = WG_CTL_FAILED;
    free(d);
    return rc;
}
