/* admin/api_access.c - signed links of private sessions:
 *
 *   POST /v1/sessions/{id}/links  {"ttl": "1h"}  -> 200 {"id", "url", "token", "expires"}
 *   POST /v1/sessions/{id}/revoke                -> 200 {"id", "revoked": true}
 *
 * A link's token is signed with access.secret_file's key over the session
 * id, the expiry and the record's generation (common/access.h); revoke
 * writes a new random generation, published on wg:state, so every gateway's
 * session cache refuses the old links and cookies from the next request on.
 * The key is made on the first link: a gateway without access.secret_file
 * answers 503 and names the key. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/api_int.h"
#include "common/access.h"
#include "common/clock.h"
#include "common/container_spec.h"
#include "common/str.h"

/* Every state but destroyed: a revoke of a session being destroyed is moot. */
#define REVOKE_MASK (WG_SESSION_ANY & ~WG_SESSION_BIT(WG_SESSION_DESTROYED))

/* {"ttl": "1h"} or no body: the lifetime in ms, within access.link_ttl_max. */
static int parse_links_body(const struct wg_config *cfg, const char *body, size_t len,
                            uint64_t *ret_ms, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = NULL, *v;
    const char *k;
    uint64_t ms = cfg->access.link_ttl_ms;
    int rc = -EINVAL;

    if (body != NULL && len > 0) {
        root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
        if (root == NULL || !json_is_object(root)) {
            wg_errf(err, errlen, "body: must be a JSON object such as {\"ttl\": \"1h\"}");
            goto out;
        }
        json_object_foreach(root, k, v)
        {
            if (strcmp(k, "ttl") != 0) {
                wg_errf(err, errlen, "unknown field (only \"ttl\" is known)");
                goto out;
            }
            if (!json_is_null(v) && wg_container_spec_duration(v, "ttl", &ms, err, errlen) < 0)
                goto out;
        }
    }
    if (ms < 1000 || ms > cfg->access.link_ttl_max_ms) {
        wg_errf(err, errlen,
                "field \"ttl\": must be at least 1s and at most access.link_ttl_max (%" PRIu64 "s)",
                cfg->access.link_ttl_max_ms / 1000);
        goto out;
    }
    *ret_ms = ms;
    rc = 0;
out:
    json_decref(root);
    return rc;
}

/* Appends s with every {session} replaced by id. */
static void put_with_id(char *out, size_t outlen, size_t *o, const char *s, size_t n,
                        const char *id)
{
    static const char tok[] = "{session}";
    for (size_t i = 0; i < n && *o + 1 < outlen;) {
        if (n - i >= sizeof(tok) - 1 && memcmp(s + i, tok, sizeof(tok) - 1) == 0) {
            *o += (size_t)snprintf(out + *o, outlen - *o, "%s", id);
            i += sizeof(tok) - 1;
        } else {
            out[(*o)++] = s[i++];
        }
        if (*o >= outlen)
            *o = outlen - 1;
    }
    out[*o] = '\0';
}

/* access.link_url, else the first private session route: http://, its
 * host (or the listen address) and port, its path prefix. */
static void link_base(const struct wg_config *cfg, const char *id, char *out, size_t outlen)
{
    const struct wg_route_cfg *r = NULL;
    size_t o = 0;

    out[0] = '\0';
    if (cfg->access.link_url != NULL) {
        put_with_id(out, outlen, &o, cfg->access.link_url, strlen(cfg->access.link_url), id);
        return;
    }
    for (size_t i = 0; i < cfg->routes_len && r == NULL; i++)
        if (!cfg->routes[i].has_upstream && !cfg->routes[i].access_public)
            r = &cfg->routes[i];
    const char *listen = cfg->listen.text != NULL ? cfg->listen.text : "localhost";
    const char *colon = strrchr(listen, ':');
    const char *port = colon != NULL ? colon + 1 : "80";
    put_with_id(out, outlen, &o, "http://", 7, id);
    if (r != NULL && r->host != NULL) {
        put_with_id(out, outlen, &o, r->host, strlen(r->host), id);
    } else {
        /* No host condition: the listen address, "localhost" for a wildcard. */
        size_t hl = colon != NULL ? (size_t)(colon - listen) : strlen(listen);
        if (hl == 0 || (hl == 7 && memcmp(listen, "0.0.0.0", 7) == 0) ||
            (hl == 4 && memcmp(listen, "[::]", 4) == 0))
            put_with_id(out, outlen, &o, "localhost", 9, id);
        else
            put_with_id(out, outlen, &o, listen, hl, id);
    }
    if (strcmp(port, "80") != 0) {
        put_with_id(out, outlen, &o, ":", 1, id);
        put_with_id(out, outlen, &o, port, strlen(port), id);
    }
    if (r != NULL && r->path_prefix != NULL)
        put_with_id(out, outlen, &o, r->path_prefix, strlen(r->path_prefix), id);
    else
        put_with_id(out, outlen, &o, "/", 1, id);
}

static void on_links_get(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    if (!api_call_resume(c, res, "get"))
        return;
    struct wg_api *api = c->api;
    char tok[WG_ACCESS_TOKEN_MAX + 1], url[1024 + WG_ACCESS_TOKEN_MAX + 16];
    int64_t expires = c->link_expires;

    if (wg_access_mint(api->access_key, c->id, expires, res->rec->gen, tok, sizeof(tok)) < 0) {
        api_call_error(c, 500, NULL, "cannot sign the link");
        api_call_maybe_free(c);
        return;
    }
    link_base(api->cfg, c->id, url, 1024);
    size_t n = strlen(url);
    snprintf(url + n, sizeof(url) - n, "%s" WG_ACCESS_QUERY "=%s",
             strchr(url, '?') != NULL ? "&" : "?", tok);
    api->links++;
    /* The token is a credential: never in the log. */
    WG_INFO(api->log, API_SUBSYS, "signed link made", "id=%s expires=%" PRId64, c->id, expires);
    api_call_respond(c, 200, "Cache-Control: no-store\r\n",
                     json_pack("{s:s, s:s, s:s, s:I}", "id", c->id, "url", url, "token", tok,
                               "expires", (json_int_t)expires * 1000));
    api_call_maybe_free(c);
}

void api_handle_links(struct wg_api *api, struct wg_admin_req *req,
                      const struct wg_admin_request *info, const char *id)
{
    char err[API_ERR_MAX];
    uint64_t ms = 0;

    if (api->access_key == NULL && api->cfg->access.secret != NULL &&
        wg_access_key_new(api->cfg->access.secret, api->cfg->access.secret_len, &api->access_key) <
            0) {
        wg_admin_respond_error(req, 500, NULL, "cannot load the access key");
        return;
    }
    if (api->access_key == NULL) {
        wg_admin_respond_error(req, 503, NULL,
                               "access.secret_file is not set: this gateway cannot sign links");
        return;
    }
    if (parse_links_body(api->cfg, info->body, info->body_len, &ms, err, sizeof(err)) < 0) {
        wg_admin_respond_error(req, 400, NULL, err);
        return;
    }
    struct call *c = api_call_new(api, req, C_LINKS, id);
    if (c == NULL)
        return;
    /* Whole seconds, rounded up: a link never lives shorter than asked. */
    c->link_expires = (wg_clock_wall_ms() + (int64_t)ms + 999) / 1000;
    int rc = wg_store_get(api->store, id, on_links_get, c);
    if (rc == 0)
        c->pending++;
    else
        api_call_fail(c, rc, "", "get");
    api_call_maybe_free(c);
}

static void on_revoked(const struct wg_store_res *res, void *arg)
{
    struct call *c = arg;
    if (!api_call_resume(c, res, "revoke"))
        return;
    c->api->revokes++;
    WG_INFO(c->api->log, API_SUBSYS, "links revoked", "id=%s", c->id);
    api_call_respond(c, 200, NULL, json_pack("{s:s, s:b}", "id", c->id, "revoked", 1));
    api_call_maybe_free(c);
}

void api_handle_revoke(struct wg_api *api, struct wg_admin_req *req, const char *id)
{
    struct wg_session_update u = {.set = WG_SF_GEN, .gen = wg_access_new_gen()};
    struct call *c = api_call_new(api, req, C_REVOKE, id);
    if (c == NULL)
        return;
    int rc = wg_store_update(api->store, id, REVOKE_MASK, &u, on_revoked, c);
    if (rc == 0)
        c->pending++;
    else
        api_call_fail(c, rc, "", "revoke");
    api_call_maybe_free(c);
}
