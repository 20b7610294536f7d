/* src/ctl/hosts.c - `wakegatectl hosts`: the orchestrator hosts of GET
 * /v1/hosts as a table (NAME STATE RUNNING SESSIONS MAX CPUS MEM LABELS
 * AGE), or the API's JSON as is with --json. A heartbeat field the host's
 * orchestrator does not write shows as "-". */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "src/ctl/ctl.h"
#include "src/ctl/ctl_int.h"

enum { H_NAME, H_STATE, H_RUNNING, H_SESSIONS, H_MAX, H_CPUS, H_MEM, H_LABELS, H_AGE, H_NCOLS };

#define HOSTS_CELL_MAX 256

struct hrow {
    char cell[H_NCOLS][HOSTS_CELL_MAX];
};

/* A number of the heartbeat, or "-". */
static void num_cell(const json_t *info, const char *key, char *out, size_t outlen)
{
    const json_t *v = json_object_get(info, key);

    if (json_is_integer(v))
        snprintf(out, outlen, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_real(v))
        snprintf(out, outlen, "%.3g", json_real_value(v));
    else
        snprintf(out, outlen, "-");
}

/* Bytes as "512Mi", "7.6Gi"; "-" when absent. */
static void mem_cell(const json_t *info, char *out, size_t outlen)
{
    static const char *const units[] = {"B", "Ki", "Mi", "Gi", "Ti", "Pi"};
    const json_t *v = json_object_get(info, "mem_total");
    double b;
    size_t u = 0;

    if (!json_is_number(v) || json_number_value(v) < 0) {
        snprintf(out, outlen, "-");
        return;
    }
    b = json_number_value(v);
    while (b >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
        b /= 1024;
        u++;
    }
    snprintf(out, outlen, b < 10 && u > 0 ? "%.1f%s" : "%.0f%s", b, units[u]);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "k=v,k=v" by key, "-" when none. */
static void labels_cell(const json_t *info, char *out, size_t outlen)
{
    const json_t *labels = json_object_get(info, "labels");
    size_t n = json_is_object(labels) ? json_object_size(labels) : 0, i = 0, o = 0;
    const char **keys = calloc(n ? n : 1, sizeof(*keys));
    const char *k;
    json_t *v;

    out[0] = '\0';
    if (keys != NULL && n > 0) {
        json_object_foreach((json_t *)labels, k, v) keys[i++] = k;
        qsort(keys, n, sizeof(*keys), cmp_str);
        for (i = 0; i < n; i++) {
            const json_t *val = json_object_get(labels, keys[i]);
            int w = json_is_string(val)
                        ? snprintf(out + o, outlen - o, "%s%s=%s", o ? "," : "", keys[i],
                                   json_string_value(val))
                        : snprintf(out + o, outlen - o, "%s%s", o ? "," : "", keys[i]);
            if (w < 0 || o + (size_t)w >= outlen) {
                out[o] = '\0';
                break;
            }
            o += (size_t)w;
        }
    }
    free(keys);
    if (o == 0)
        snprintf(out, outlen, "-");
}

static void host_row(const json_t *h, struct hrow *r)
{
    const json_t *info = json_object_get(h, "info");
    const json_t *age = json_object_get(h, "age_ms");
    char tmp[HOSTS_CELL_MAX];

    ctl_clean_copy(r->cell[H_NAME], HOSTS_CELL_MAX, ctl_jstr(h, "name"));
    ctl_clean_copy(r->cell[H_STATE], HOSTS_CELL_MAX,
                   ctl_jstr(h, "state") ? ctl_jstr(h, "state") : "-");
    num_cell(info, "running", r->cell[H_RUNNING], HOSTS_CELL_MAX);
    num_cell(info, "sessions", r->cell[H_SESSIONS], HOSTS_CELL_MAX);
    num_cell(info, "max_sessions", r->cell[H_MAX], HOSTS_CELL_MAX);
    num_cell(info, "cpus", r->cell[H_CPUS], HOSTS_CELL_MAX);
    mem_cell(info, r->cell[H_MEM], HOSTS_CELL_MAX);
    labels_cell(info, tmp, sizeof(tmp));
    ctl_clean_copy(r->cell[H_LABELS], HOSTS_CELL_MAX, tmp);
    if (json_is_integer(age))
        wg_ctl_fmt_ago((int64_t)json_integer_value(age), r->cell[H_AGE], HOSTS_CELL_MAX);
    else
        snprintf(r->cell[H_AGE], HOSTS_CELL_MAX, "-");
}

int ctl_print_hosts(const json_t *answer)
{
    static const struct hrow head = {
        {"NAME", "STATE", "RUNNING", "SESSIONS", "MAX", "CPUS", "MEM", "LABELS", "AGE"}};
    const json_t *hosts = json_object_get(answer, "hosts");
    size_t n = json_array_size(hosts);
    struct hrow *rows;
    int w[H_NCOLS];

    if (!json_is_array(hosts) || (rows = calloc(n + 1, sizeof(*rows))) == NULL)
        return -1;
    rows[0] = head;
    for (size_t i = 0; i < n; i++)
        host_row(json_array_get(hosts, i), &rows[i + 1]);
    for (int k = 0; k < H_NCOLS; k++)
        w[k] = 0;
    for (size_t i = 0; i <= n; i++)
        for (int k = 0; k < H_NCOLS; k++)
            if ((int)strlen(rows[i].cell[k]) > w[k])
                w[k] = (int)strlen(rows[i].cell[k]);
    for (size_t i = 0; i <= n; i++) {
        for (int k = 0; k < H_NCOLS - 1; k++)
            printf("%-*s  ", w[k], rows[i].cell[k]);
        printf("%s\n", rows[i].cell[H_NCOLS - 1]);
    }
    if (json_is_true(json_object_get(answer, "truncated")))
        printf("(more hosts than one answer holds: the list is cut)\n");
    free(rows);
    return 0;
}

int ctl_cmd_hosts(struct ctl *c, const char *unused)
{
    (void)unused;
    return ctl_list(c, "/v1/hosts", false, ctl_print_hosts);
}
