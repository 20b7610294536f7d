/* orchestrator/docker_network.c - session networks on the engine: inspect
 * one, create one, and the rules an existing one must meet before a
 * session container joins it.
 *
 * The isolation is the engine's own firewall: a bridge network with
 * inter-container traffic off (enable_icc=false) drops traffic between
 * its containers, Docker's isolation chains drop traffic between two of
 * its networks, and an Internal network has no route off the host. What
 * the engine does not filter, traffic from a container to the host
 * itself, is left to one host rule on the bridge names we choose
 * (WG_DOCKER_BRIDGE_PREFIX; scripts/session-firewall.sh). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/labels.h"
#include "common/str.h"
#include "orchestrator/docker_int.h"

#define OPT_ICC "com.docker.network.bridge.enable_icc"
#define OPT_MASQ "com.docker.network.bridge.enable_ip_masquerade"
#define OPT_BRIDGE "com.docker.network.bridge.name"

static int network_from_json(json_t *root, struct wg_docker_network *n)
{
    json_t *opts = json_object_get(root, "Options");

    memset(n, 0, sizeof(*n));
    n->id = docker_json_str(root, "Id");
    n->name = docker_json_str(root, "Name");
    if (!json_is_object(root) || !n->id[0])
        return -EBADMSG;
    n->driver = docker_json_str(root, "Driver");
    n->bridge = docker_json_str(opts, OPT_BRIDGE);
    n->template = docker_json_str(json_object_get(root, "Labels"), WG_LABEL_NETWORK);
    n->internal = json_is_true(json_object_get(root, "Internal"));
    n->icc = strcmp(docker_json_str(opts, OPT_ICC), "false") != 0;
    return 0;
}

int wg_docker_network_check(const struct wg_docker_network *n,
                            const struct wg_docker_network_spec *spec, char *why, size_t whylen)
{
    size_t plen = strlen(WG_DOCKER_BRIDGE_PREFIX);

    if (!n->template[0])
        return wg_errf(why, whylen, "network %s was not made by wakegate (no %s label)", n->name,
                       WG_LABEL_NETWORK);
    if (strcmp(n->driver, "bridge") != 0)
        return wg_errf(why, whylen, "network %s has driver %s, not bridge", n->name, n->driver);
    if (n->icc)
        return wg_errf(why, whylen, "network %s lets its containers reach each other (%s)", n->name,
                       OPT_ICC);
    if (strncmp(n->bridge, WG_DOCKER_BRIDGE_PREFIX, plen) != 0)
        return wg_errf(why, whylen,
                       "network %s has bridge \"%s\", which the host rule for %s* does not cover",
                       n->name, n->bridge, WG_DOCKER_BRIDGE_PREFIX);
    if (n->internal == spec->egress)
        return wg_errf(why, whylen,
                       "network %s is %s but the template says egress: %s; remove the network "
                       "(docker network rm %s) once its containers are gone, and the next wake "
                       "makes it anew",
                       n->name, n->internal ? "internal" : "not internal",
                       spec->egress ? "true" : "false", n->name);
    return 0;
}

/* The engine's name filter matches substrings: only the networks named
 * exactly q->ref are kept. */
static void finish_network_list(struct docker_req *q, int status, struct wg_docker_reply *r)
{
    struct wg_docker_network *v = NULL;
    const char *name = q->ref;
    size_t n = 0;

    if (status == 0) {
        size_t len = json_array_size(r->json);
        v = calloc(len ? len : 1, sizeof(*v));
        if (!json_is_array(r->json) || v == NULL) {
            status = v ? -EBADMSG : -ENOMEM;
            r->message = v ? "the answer is not a list of networks" : "out of memory";
        }
        for (size_t i = 0; status == 0 && i < len; i++)
            if (network_from_json(json_array_get(r->json, i), &v[n]) == 0 &&
                strcmp(v[n].name, name) == 0)
                n++;
        r->networks = v;
        r->n_networks = n;
    }
    docker_deliver(q, status, r);
    free(v);
}

int wg_docker_network_list(struct wg_docker *d, const char *name, wg_docker_cb *cb, void *arg)
{
    char *filters, *path;
    struct docker_req *q;
    int rc;

    if (!wg_docker_ref_valid(name))
        return -EINVAL;
    filters = wg_strf("{\"name\":[\"%s\"]}", name);
    char *esc = filters ? curl_easy_escape(NULL, filters, 0) : NULL;
    free(filters);
    if (esc == NULL)
        return -ENOMEM;
    path = wg_strf("/networks?filters=%s", esc);
    curl_free(esc);
    if (path == NULL)
        return -ENOMEM;
    rc = docker_call(d, RK_NETWORK_LIST, "GET", path, finish_network_list, cb, arg, &q);
    if (rc < 0)
        return rc;
    snprintf(q->ref, sizeof(q->ref), "%s", name);
    if ((rc = docker_submit(q)) < 0)
        docker_req_free(q);
    return rc;
}

static void finish_network_create(struct docker_req *q, int status, struct wg_docker_reply *r)
{
    if (status == 0) {
        r->id = docker_json_str(r->json, "Id");
        if (!r->id[0]) {
            status = -EBADMSG;
            r->message = "the answer has no network Id";
        }
    }
    docker_deliver(q, status, r);
}

static int network_create_body(const struct wg_docker_network_spec *s, const char *bridge,
                               json_t **ret)
{
    json_t *body = json_object(), *opts = json_object(), *labels = json_object();
    json_t *ipam = NULL;
    int bad = !body || !opts || !labels;

    bad |= json_object_set_new(opts, OPT_ICC, json_string("false"));
    bad |= json_object_set_new(opts, OPT_MASQ, json_string(s->egress ? "true" : "false"));
    bad |= json_object_set_new(opts, OPT_BRIDGE, json_string(bridge));
    bad |= json_object_set_new(labels, WG_LABEL_NETWORK, json_string(s->template));
    bad |= json_object_set_new(body, "Name", json_string(s->name));
    bad |= json_object_set_new(body, "Driver", json_string("bridge"));
    bad |= json_object_set_new(body, "CheckDuplicate", json_true());
    bad |= json_object_set_new(body, "Internal", json_boolean(!s->egress));
    bad |= json_object_set(body, "Options", opts);
    bad |= json_object_set(body, "Labels", labels);
    if (s->subnet) {
        ipam = json_pack("{s:[{s:s}]}", "Config", "Subnet", s->subnet);
        bad |= !ipam || json_object_set_new(body, "IPAM", ipam);
    }
    json_decref(opts);
    json_decref(labels);
    if (bad) {
        json_decref(body);
        return -ENOMEM;
    }
    *ret = body;
    return 0;
}

int wg_docker_network_create(struct wg_docker *d, const struct wg_docker_network_spec *spec,
                             wg_docker_cb *cb, void *arg, char *err, size_t errlen)
{
    char bridge[16];
    uint32_t rnd;
    json_t *body = NULL;
    int rc;

    if (!spec || !wg_docker_ref_valid(spec->name) || !spec->template ||
        !docker_text_ok(spec->template, 128, false) ||
        (spec->subnet && !docker_text_ok(spec->subnet, 64, false)))
        return wg_errf(err, errlen, "a session network needs a valid name and template");
    /* The bridge's name is on the host, beside other engines' bridges: a
     * random one cannot clash with a name another engine derived. */
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return wg_errf(err, errlen, "no random bytes for the bridge name");
    snprintf(bridge, sizeof(bridge), "%s%08x", WG_DOCKER_BRIDGE_PREFIX, (unsigned)rnd);
    rc = network_create_body(spec, bridge, &body);
    if (rc < 0)
        return rc;
    return docker_call_json(d, RK_NETWORK_CREATE, "POST", strdup("/networks/create"), body,
                            finish_network_create, cb, arg);
}
