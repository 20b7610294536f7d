/* common/config_sandbox.c - the sandbox of a session container: the keys of
 * sessions.limits and sessions.capabilities, their parsers (CPUs,
 * capability names) and the check of user and runtime. The defaults and
 * their reasons are in docs/configuration.md ("Sandbox"). */
#include "common/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/config_int.h"
#include "common/str.h"

/* Docker refuses less than 6 MiB; a TiB is past any one host. */
#define MEMORY_MIN (6ull << 20)
#define MEMORY_MAX (1ull << 40)
/* The kernel's own ceiling of pid_max; fewer than 8 cannot run an init,
 * a shell and an app. */
#define PIDS_MIN 8u
#define PIDS_MAX 4194304u

/* The capabilities of Linux 6.x (capability.h), without "CAP_". */
static const char *const capabilities[] = {
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
};

const char *wg_config_capability(const char *s)
{
    if (s == NULL)
        return NULL;
    if (strncasecmp(s, "CAP_", 4) == 0)
        s += 4;
    for (size_t i = 0; i < sizeof capabilities / sizeof capabilities[0]; i++)
        if (strcasecmp(s, capabilities[i]) == 0)
            return capabilities[i];
    return NULL;
}

int wg_config_parse_cpus(const char *s, uint64_t *ret_nano)
{
    uint64_t whole, frac = 0, scale = 1000000000ull;
    size_t n = 0, f = 0;

    if (s == NULL)
        return -EINVAL;
    while (s[n] >= '0' && s[n] <= '9')
        n++;
    if (config_parse_digits(s, n, &whole) < 0 || whole > 1000000)
        return -EINVAL;
    if (s[n] == '.') {
        const char *d = s + n + 1;

        while (d[f] >= '0' && d[f] <= '9')
            f++;
        if (f == 0 || f > 9 || d[f] != '\0')
            return -EINVAL;
        for (size_t i = 0; i < f; i++) {
            scale /= 10;
            frac += (uint64_t)(d[i] - '0') * scale;
        }
    } else if (s[n] != '\0') {
        return -EINVAL;
    }
    *ret_nano = whole * 1000000000ull + frac;
    return 0;
}

/* A user as Docker takes it ("1000", "1000:1000", "app", "app:staff"):
 * what is sent stays one plain token. */
static bool user_ok(const char *s)
{
    size_t colons = 0;

    for (const char *p = s; *p; p++) {
        if (*p == ':')
            colons++;
        else if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                   (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.'))
            return false;
    }
    return colons <= 1 && s[0] != ':' && s[strlen(s) - 1] != ':';
}

/* An OCI runtime name as dockerd's --add-runtime takes it ("runsc"). */
static bool runtime_ok(const char *s)
{
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.'))
            return false;
    return s[0] != '\0';
}

int config_check_sandbox(struct walk *w, yaml_node_t *map, struct wg_sandbox_cfg *sb)
{
    yaml_node_t *n;
    size_t old;
    int r = 0;

    if (sb->user != NULL && !user_ok(sb->user)) {
        old = config_walk_push(w, ".user");
        n = config_walk_get(w, map, "user");
        r = config_walk_fail(w, n != NULL ? n : map,
                             "invalid user \"%s\" (use a uid, uid:gid, a name or name:group)",
                             sb->user);
        config_walk_pop(w, old);
        return r;
    }
    if (sb->runtime != NULL && !runtime_ok(sb->runtime)) {
        old = config_walk_push(w, ".runtime");
        n = config_walk_get(w, map, "runtime");
        r = config_walk_fail(w, n != NULL ? n : map,
                             "invalid runtime \"%s\" (use a name such as runsc: letters, digits, "
                             "_ . -)",
                             sb->runtime);
        config_walk_pop(w, old);
    }
    return r;
}

int config_set_capability(char **dst, const char *s, char *msg, size_t msglen)
{
    const char *c = wg_config_capability(s);

    if (c == NULL) {
        if (strcasecmp(s, "ALL") == 0 || strcasecmp(s, "CAP_ALL") == 0)
            return wg_errf(msg, msglen,
                           "\"%s\" would undo the sandbox's CapDrop ALL: name each "
                           "capability the app needs",
                           s);
        return wg_errf(msg, msglen,
                       "unknown capability \"%s\" (use a Linux name such as "
                       "NET_BIND_SERVICE)",
                       s);
    }
    *dst = strdup(c);
    if (*dst == NULL) {
        snprintf(msg, msglen, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

void config_sandbox_defaults(struct wg_sandbox_cfg *sb)
{
    /* A dev server (Vite, Jupyter with a kernel) fits in 1 GiB and one CPU;
     * more is the operator's choice, never an absent limit. */
    sb->memory_bytes = 1ull << 30;
    sb->nano_cpus = 1000000000ull;
    /* Enough for a language server, a watcher and a build's workers; a
     * fork bomb stops there. */
    sb->pids = 512;
}

void config_sandbox_free(struct wg_sandbox_cfg *sb)
{
    config_free_strv(sb->cap_add, sb->cap_add_len);
    sb->cap_add = NULL;
    sb->cap_add_len = 0;
    free(sb->user);
    sb->user = NULL;
    free(sb->runtime);
    sb->runtime = NULL;
    free(sb->network);
    sb->network = NULL;
    free(sb->subnet);
    sb->subnet = NULL;
}

const struct field config_sandbox_limits_fields[] = {
    {.key = "memory",
     .kind = K_SIZE,
     IN_SESS(sandbox.memory_bytes),
     .min = MEMORY_MIN,
     .max = MEMORY_MAX},
    {.key = "cpus", .kind = K_CPUS, IN_SESS(sandbox.nano_cpus)},
    {.key = "pids", .kind = K_UINT, IN_SESS(sandbox.pids), .min = PIDS_MIN, .max = PIDS_MAX},
    {.key = NULL},
};

/* The most a caller may ask for (limits_max); unset: the template's own
 * limit, so a caller can only lower it. */
const struct field config_sandbox_limits_max_fields[] = {
    {.key = "memory",
     .kind = K_SIZE,
     IN_SESS(limits_max.memory_bytes),
     .min = MEMORY_MIN,
     .max = MEMORY_MAX},
    {.key = "cpus", .kind = K_CPUS, IN_SESS(limits_max.nano_cpus)},
    {.key = "pids", .kind = K_UINT, IN_SESS(limits_max.pids), .min = PIDS_MIN, .max = PIDS_MAX},
    {.key = NULL},
};

const struct field config_sandbox_caps_fields[] = {
    {.key = "add", .kind = K_CAPS, IN_SESS(sandbox.cap_add), LEN_IN_SESS(sandbox.cap_add_len)},
    {.key = NULL},
};
