/* common/config_env.c - the environment (WAKEGATE_*) and the command-line
 * flags, through the same setters as the file. */
#include "common/config.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/config_int.h"

static const struct field env_fields[] = {
    {.key = "WAKEGATE_REDIS_URL", .kind = K_REDIS_URL, IN_CFG(redis_url)},
    {.key = "WAKEGATE_DOCKER_HOST", .kind = K_DOCKER_HOST, IN_CFG(docker_host)},
    {.key = "WAKEGATE_ADMIN_TOKEN", .kind = K_STR, IN_CFG(admin_token)},
    {.key = "WAKEGATE_ADMIN_READ_TOKEN", .kind = K_STR, IN_CFG(admin_read_token)},
    {.key = "WAKEGATE_LISTEN", .kind = K_ADDR, IN_CFG(listen)},
    {.key = "WAKEGATE_ADMIN_LISTEN", .kind = K_ADDR, IN_CFG(admin_listen)},
    {.key = "WAKEGATE_LOG_LEVEL", .kind = K_LEVEL, IN_CFG(log_level)},
    {.key = "WAKEGATE_WORKERS",
     .kind = K_WORKERS,
     IN_CFG(workers),
     .min = 1,
     .max = WG_WORKERS_MAX},
    {.key = NULL},
};

int wg_config_apply_env(struct wg_config *cfg, char *(*getenv_fn)(const char *), char *err,
                        size_t errlen)
{
    char msg[WG_CONFIG_ERR_MAX], key[64];
    int r = 0;

    if (getenv_fn == NULL)
        getenv_fn = getenv;
    for (const struct field *f = env_fields; f->key != NULL; f++) {
        const char *s = getenv_fn(f->key);

        /* Compose files often pass "VAR=" for "not set". */
        if (s == NULL || s[0] == '\0')
            continue;
        r = config_set_scalar(f, cfg, s, msg, sizeof msg);
        if (r < 0) {
            snprintf(key, sizeof key, "environment %s", f->key);
            config_fail_at(err, errlen, NULL, 0, key, "%s", msg);
            goto out;
        }
        if (f->kind == K_DOCKER_HOST)
            cfg->docker_host_line = -1;
    }
out:
    return r;
}

int wg_config_apply_flags(struct wg_config *cfg, const struct wg_config_flags *flags, char *err,
                          size_t errlen)
{
    const struct {
        const char *name;
        const char *value;
        struct field f;
    } map[] = {
        {"role", flags->role, {.kind = K_ROLE, IN_CFG(role)}},
        {"log-level", flags->log_level, {.kind = K_LEVEL, IN_CFG(log_level)}},
        {"listen", flags->listen, {.kind = K_ADDR, IN_CFG(listen)}},
        {"admin-listen", flags->admin_listen, {.kind = K_ADDR, IN_CFG(admin_listen)}},
    };
    char msg[WG_CONFIG_ERR_MAX], key[64];
    int r = 0;

    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (map[i].value == NULL)
            continue;
        r = config_set_scalar(&map[i].f, cfg, map[i].value, msg, sizeof msg);
        if (r < 0) {
            snprintf(key, sizeof key, "flag --%s", map[i].name);
            config_fail_at(err, errlen, NULL, 0, key, "%s", msg);
            goto out;
        }
    }
out:
    return r;
}
