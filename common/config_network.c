/* common/config_network.c - the session network of a template: the keys
 * of sessions.network (name, subnet, egress), their check, and the name a
 * template's network has when none is given. How the network isolates is
 * in ARCHITECTURE.md ("Session networks"). */
#include "common/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/config_int.h"

/* Docker's own networks: joining one would undo the isolation (host
 * shares the host's stack, bridge is the shared default). */
static const char *const reserved[] = {"bridge", "host", "none", "default"};

/* A network name as Docker takes it, and short enough for the prefix
 * check of a container's name. */
static bool name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 64 || s[0] == '.' || s[0] == '_' || s[0] == '-')
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.'))
            return false;
    return true;
}

static int fail_at(struct walk *w, yaml_node_t *map, const char *key, const char *fmt,
                   const char *arg)
{
    yaml_node_t *net = config_walk_get(w, map, "network");
    yaml_node_t *n = net && net->type == YAML_MAPPING_NODE ? config_walk_get(w, net, key) : NULL;
    size_t old = config_walk_push(w, ".network.%s", key);
    int r = config_walk_fail(w, n ? n : map, fmt, arg);

    config_walk_pop(w, old);
    return r;
}

/* The subnet in canonical form, so what the engine is asked for is what
 * `docker network inspect` shows: IPv4, host bits zero, /8 to /29 (a
 * smaller one has no room for sessions). */
static int canonical_subnet(char **subnet)
{
    struct wg_cidr c;
    char text[INET_ADDRSTRLEN], out[INET_ADDRSTRLEN + 4];

    if (strchr(*subnet, '/') == NULL || wg_config_parse_cidr(*subnet, &c) < 0 ||
        c.family != AF_INET || c.prefix < 8 || c.prefix > 29 ||
        inet_ntop(AF_INET, c.addr, text, sizeof text) == NULL)
        return -1;
    snprintf(out, sizeof out, "%s/%u", text, c.prefix);
    return config_replace_str(subnet, out) < 0 ? -2 : 0;
}

int config_check_network(struct walk *w, yaml_node_t *map, struct wg_sandbox_cfg *sb)
{
    int r;

    if (sb->network != NULL) {
        if (!name_ok(sb->network))
            return fail_at(w, map, "name",
                           "invalid network name \"%s\" (use letters, digits, _ . -; at most 64)",
                           sb->network);
        for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
            if (strcasecmp(sb->network, reserved[i]) == 0)
                return fail_at(w, map, "name",
                               "\"%s\" is a network of the engine's own that sessions share "
                               "with everything; name one for wakegate to make",
                               sb->network);
    }
    if (sb->subnet != NULL) {
        r = canonical_subnet(&sb->subnet);
        if (r == -2)
            return -ENOMEM;
        if (r < 0)
            return fail_at(w, map, "subnet",
                           "invalid subnet \"%s\" (use an IPv4 network such as 10.80.0.0/20, "
                           "/8 to /29)",
                           sb->subnet);
    }
    return 0;
}

const char *wg_config_network_name(const struct wg_sessions_cfg *t, char *buf, size_t len)
{
    if (t->sandbox.network != NULL)
        return t->sandbox.network;
    snprintf(buf, len, "wakegate-%s", t->name ? t->name : "default");
    return buf;
}

const struct field config_network_fields[] = {
    {.key = "name", .kind = K_STR, IN_SESS(sandbox.network), .nullable = true},
    {.key = "subnet", .kind = K_STR, IN_SESS(sandbox.subnet), .nullable = true},
    {.key = "egress", .kind = K_BOOL, IN_SESS(sandbox.egress)},
    {.key = NULL},
};
