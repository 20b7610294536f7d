/* common/config_int.h - what the files of the configuration share (config.c,
 * config_parse.c, config_yaml.c, config_keys.c, config_routes.c,
 * config_env.c, config_validate.c). Not an API: nothing outside
 * common/config*.c includes it.
 *
 * Keys are described by tables of struct field (config_keys.c, and the
 * routes[] entries in config_routes.c). The YAML walk (config_yaml.c) and
 * the environment and flags (config_env.c) give every value to the same
 * setter, config_set_scalar(), which writes a problem without a location;
 * its caller knows where the text came from and adds "FILE:LINE: KEY",
 * "environment X" or "flag --x" in front (config_fail_at()). */
#ifndef WG_COMMON_CONFIG_INT_H
#define WG_COMMON_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <yaml.h>

#include "common/config.h"

/* The longest dotted key the walk builds ("routes[12].match.header.value"). */
#define PATH_MAX_KEY 256

/* What a key holds, so which setter or walk it takes. */
enum kind {
    K_MAP,         /* a nested mapping: sub */
    K_STR,         /* a non-empty string */
    K_ADDR,        /* struct wg_addr */
    K_UPSTREAM,    /* K_ADDR that also sets the route's has_upstream */
    K_DURATION,    /* uint64_t ms */
    K_SIZE,        /* size_t or uint64_t bytes */
    K_UINT,        /* unsigned */
    K_BOOL,        /* bool */
    K_ROLE,        /* enum wg_role */
    K_LEVEL,       /* enum wg_log_level */
    K_FORMAT,      /* enum wg_log_format */
    K_ON_FAILURE,  /* enum wg_save_failure */
    K_REDIS_URL,   /* char * */
    K_DOCKER_HOST, /* char * */
    K_HTTP_PATH,   /* char *: an origin-form request target, "/healthz" */
    K_PATHS,       /* char ** + size_t, each starting with '/' */
    K_STRLIST,     /* char ** + size_t, each non-empty */
    K_COMMAND,     /* NULL-terminated char ** + size_t, non-empty */
    K_CAPS,        /* char ** + size_t, Linux capability names, stored canonical */
    K_CPUS,        /* uint64_t nano CPUs from "0.5" */
    K_OVERRIDES,   /* unsigned mask of enum wg_override, from a list of names */
    K_WAKE_ON,     /* unsigned mask of enum wg_wake_class, from a list of names */
    K_TEMPLATES,   /* struct wg_sessions_cfg * + size_t, from a mapping of names */
    K_CIDRS,       /* struct wg_cidr * + size_t */
    K_ROUTES,      /* struct wg_route_cfg * + size_t */
    K_TLS_CERTS,   /* struct wg_tls_cert_cfg * + size_t */
    K_PORTS,       /* struct wg_named_port * + size_t, from a mapping of names */
    K_LABELMAP,    /* char *: a mapping of label -> string, kept as compact JSON text */
    K_MAIN_PORT,   /* a template's port: a number, or a name of its ports: */
    K_WORKERS,     /* unsigned: 1..WG_WORKERS_MAX, or "auto" (0) */
};

struct walk;

/* One key of a mapping: where its value lives (off from the base the walk
 * or the setter is given: struct wg_config, or a struct wg_route_cfg), and
 * its bounds. A table ends with a NULL key. */
struct field {
    const char *key;
    enum kind kind;
    size_t off;     /* in the struct the field lives in */
    size_t size;    /* sizeof the member, for numbers */
    size_t off_len; /* lists: the length member */
    uint64_t min, max;
    bool nullable; /* null (or "~") clears the value instead of being an error */
    const struct field *sub;
    size_t rebase; /* K_MAP: sub's offsets are from base + rebase */
    /* K_MAP: cross-field rules of that mapping, run after its keys. */
    int (*check)(struct walk *w, yaml_node_t *map, void *base);
};

/* A member of struct wg_config or struct wg_route_cfg, for struct field. */
#define IN_CFG(m) .off = offsetof(struct wg_config, m), .size = sizeof(((struct wg_config *)0)->m)
#define IN_ROUTE(m)                                                                                \
    .off = offsetof(struct wg_route_cfg, m), .size = sizeof(((struct wg_route_cfg *)0)->m)
#define LEN_IN_CFG(m) .off_len = offsetof(struct wg_config, m)
/* A member of struct wg_sessions_cfg (the sessions: block and templates). */
#define IN_SESS(m)                                                                                 \
    .off = offsetof(struct wg_sessions_cfg, m), .size = sizeof(((struct wg_sessions_cfg *)0)->m)
#define LEN_IN_SESS(m) .off_len = offsetof(struct wg_sessions_cfg, m)

/* Where the YAML walk is: the document, and the dotted key of the node. */
struct walk {
    struct wg_config *cfg;
    yaml_document_t *doc;
    const char *file;
    char *err;
    size_t errlen;
    char path[PATH_MAX_KEY]; /* dotted key of the node being walked */
    size_t pathlen;
};

/* ---- config.c: ownership and error text ---- */

void config_free_strv(char **v, size_t n);
void config_free_routes(struct wg_route_cfg *routes, size_t n);
/* Replaces *dst with a copy of s (NULL clears it). Returns 0 or -ENOMEM. */
int config_replace_str(char **dst, const char *s);
bool config_has_ctl_or_space(const char *s);
/* "FILE:LINE: KEY: msg", "FILE: KEY: msg" without a line, "KEY: msg"
 * without a file. Returns -EINVAL. */
int config_fail_at(char *err, size_t errlen, const char *file, size_t line, const char *key,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* ---- config_parse.c ---- */

/* Decimal digits only: no sign, no spaces, no base prefix. */
int config_parse_digits(const char *s, size_t n, uint64_t *ret);

/* ---- config_yaml.c: the walk, for the per-mapping checks ---- */

/* Appends to the dotted key of the node being walked; returns the length to
 * give back to config_walk_pop(). */
size_t config_walk_push(struct walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void config_walk_pop(struct walk *w, size_t old);
/* Writes "FILE:LINE: KEY: msg" for node n at the current key. Returns -EINVAL. */
int config_walk_fail(struct walk *w, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A plain null: "", "~" or "null". */
bool config_walk_null(const yaml_node_t *n);
/* The value of key in a mapping node, or NULL. */
yaml_node_t *config_walk_get(struct walk *w, yaml_node_t *map, const char *key);
/* Walks a mapping whose keys are described by fields. */
int config_walk_map(struct walk *w, yaml_node_t *map, const struct field *fields, void *base);

/* A scalar's text (nullable: null gives NULL). Returns 0 or -EINVAL. */
int config_walk_scalar(struct walk *w, const yaml_node_t *n, bool nullable, const char **ret);

/* ---- config_keys.c ---- */

/* The keys of the file's top level, and of one template (relative to a
 * struct wg_sessions_cfg) with the checks of its mapping. */
extern const struct field config_top_fields[];
extern const struct field config_sessions_fields[];
int config_check_sessions(struct walk *w, yaml_node_t *map, void *base);
/* Sets one scalar field of base from text s (NULL only for nullable fields).
 * On failure writes the problem, without a location, to msg. */
int config_set_scalar(const struct field *f, void *base, const char *s, char *msg, size_t msglen);

/* A regular file that can be opened for reading; else why not, in msg.
 * Returns 0 or -EINVAL. */
int config_check_readable(const char *path, char *msg, size_t msglen);
/* Reads a regular file of at most max bytes whole. It is opened O_NONBLOCK,
 * so a FIFO put there by mistake cannot hang startup. *ret is malloc'd and
 * NUL-terminated (wipe it before freeing when it holds a secret); *st is
 * the file's stat whenever it could be taken. Returns 0, -EINVAL (not a
 * regular file), -EFBIG (more than max bytes), or -errno. */
int config_read_small(const char *path, size_t max, struct stat *st, char **ret, size_t *ret_len);

/* ---- config_sentinel.c ---- */

/* The keys of redis.sentinel, and the check of the redis: mapping (not both
 * redis.url and redis.sentinel). */
extern const struct field config_sentinel_fields[];
int config_sentinel_check_redis(struct walk *w, yaml_node_t *map, void *base);
int config_sentinel_check_map(struct walk *w, yaml_node_t *map, void *base);
/* With redis.sentinel: reads its password files and points redis_url at the
 * redis+sentinel:// URL built from it. Returns 0 or -EINVAL/-ENOMEM with the
 * error in err. */
int config_sentinel_resolve(struct wg_config *cfg, char *err, size_t errlen);
void config_sentinel_free(struct wg_redis_sentinel_cfg *s);

/* ---- config_tls.c ---- */

/* The keys of the tls: mapping and its check. */
extern const struct field config_tls_fields[];
int config_tls_check_map(struct walk *w, yaml_node_t *map, void *base);
int config_walk_tls_certs(struct walk *w, yaml_node_t *n, const struct field *f, void *base);
void config_tls_free(struct wg_tls_cfg *tls);

/* ---- config_templates.c ---- */

/* A template's built-in defaults (those of the sessions: block), named
 * name, letting a caller override only env. Returns 0 or -ENOMEM. */
int config_sessions_defaults(struct wg_sessions_cfg *t, const char *name);
void config_sessions_free(struct wg_sessions_cfg *t);
void config_free_templates(struct wg_sessions_cfg *t, size_t n);
int config_walk_templates(struct walk *w, yaml_node_t *n, const struct field *f, void *base);
int config_walk_overrides(struct walk *w, yaml_node_t *n, const struct field *f, void *base);
int config_walk_wake_on(struct walk *w, yaml_node_t *n, const struct field *f, void *base);
/* Checks t's binds.allow entries (map: the template's mapping). */
int config_check_binds_allow(struct walk *w, yaml_node_t *map, const struct wg_sessions_cfg *t);

/* ---- config_sandbox.c ---- */

/* The keys of sessions.limits and sessions.capabilities. */
extern const struct field config_sandbox_limits_fields[];
extern const struct field config_sandbox_caps_fields[];
extern const struct field config_sandbox_limits_max_fields[];
/* The documented limits (never unlimited). */
void config_sandbox_defaults(struct wg_sandbox_cfg *sb);
void config_sandbox_free(struct wg_sandbox_cfg *sb);
/* Checks user and runtime of the sessions mapping map. Returns 0 or -EINVAL. */
int config_check_sandbox(struct walk *w, yaml_node_t *map, struct wg_sandbox_cfg *sb);

int config_check_template_access(struct walk *w, yaml_node_t *map, struct wg_sessions_cfg *t);
/* sessions.waking_page: reads the file into t->waking_page_html. */
int config_check_waking_page(struct walk *w, yaml_node_t *map, struct wg_sessions_cfg *t);

/* ---- config_ports.c ---- */

int config_walk_ports(struct walk *w, yaml_node_t *n, const struct field *f, void *base);
/* ---- config_placement.c ---- */
int config_walk_labelmap(struct walk *w, yaml_node_t *n, const struct field *f, void *base);
extern const struct field config_placement_fields[];
void config_free_ports(struct wg_named_port *ports, size_t n);
/* port: as a name: the number of that entry of ports:. */
int config_check_ports(struct walk *w, yaml_node_t *map, struct wg_sessions_cfg *t);
/* K_MAIN_PORT: "8080" or a name, resolved by config_check_ports(). */
int config_set_main_port(struct wg_sessions_cfg *t, const char *s, char *msg, size_t msglen);

/* ---- config_network.c ---- */

extern const struct field config_network_fields[];
int config_check_network(struct walk *w, yaml_node_t *map, struct wg_sandbox_cfg *sb);
/* *dst = the canonical name of capability s; else why not, in msg. */
int config_set_capability(char **dst, const char *s, char *msg, size_t msglen);
/* ---- config_access.c ---- */

/* The keys of the access: mapping, and its check (keeps the line of
 * secret_file). */
extern const struct field config_access_fields[];
int config_access_check_map(struct walk *w, yaml_node_t *map, void *base);
/* Sets routes[].access_public; checks access.*, reads access.secret_file;
 * a private session route needs it outside role orchestrator. Returns 0,
 * -EINVAL (err set) or -ENOMEM. */
int config_check_access(struct wg_config *cfg, char *err, size_t errlen);

/* ---- config_routes.c ---- */

/* The keys of one routes[] entry. */
extern const struct field config_route_fields[];
/* Checks routes[i] as a whole; the error names its line when it came from a
 * file. Returns 0 or -EINVAL. */
int config_check_route(const struct wg_config *cfg, size_t i, char *err, size_t errlen);

#endif
