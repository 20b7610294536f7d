/* src/ctl/table.c - what wakegatectl prints for a human: the sessions
 * table of `ls`, the record of `show`, the event lines of `events`, and
 * the text helpers behind them (times, durations, terminal-safe text). */
#include "src/ctl/ctl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "common/clock.h"
#include "common/session.h"
#include "src/ctl/ctl_int.h"

char *wg_ctl_fmt_duration(int64_t ms, char *out, size_t outlen)
{
    int64_t s = ms < 0 ? 0 : ms / 1000;
    if (s < 60)
        snprintf(out, outlen, "%" PRId64 "s", s);
    else if (s < 3600)
        snprintf(out, outlen, "%" PRId64 "m%02" PRId64 "s", s / 60, s % 60);
    else if (s < 86400 && (s % 3600) / 60 == 0)
        snprintf(out, outlen, "%" PRId64 "h", s / 3600);
    else if (s < 86400)
        snprintf(out, outlen, "%" PRId64 "h%02" PRId64 "m", s / 3600, (s % 3600) / 60);
    else if ((s % 86400) / 3600 == 0)
        snprintf(out, outlen, "%" PRId64 "d", s / 86400);
    else
        snprintf(out, outlen, "%" PRId64 "d%02" PRId64 "h", s / 86400, (s % 86400) / 3600);
    return out;
}

char *wg_ctl_fmt_ago(int64_t ms, char *out, size_t outlen)
{
    int64_t s = ms < 0 ? 0 : ms / 1000;
    if (s < 60)
        snprintf(out, outlen, "%" PRId64 "s", s);
    else if (s < 3600)
        snprintf(out, outlen, "%" PRId64 "m", s / 60);
    else if (s < 86400)
        snprintf(out, outlen, "%" PRId64 "h", s / 3600);
    else
        snprintf(out, outlen, "%" PRId64 "d", s / 86400);
    return out;
}

char *ctl_fmt_time(int64_t ms, bool with_ms, char *out, size_t outlen)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char base[32];
    if (ms <= 0 || gmtime_r(&t, &tm) == NULL) {
        snprintf(out, outlen, "-");
        return out;
    }
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    if (with_ms)
        snprintf(out, outlen, "%s.%03dZ", base, (int)(ms % 1000));
    else
        snprintf(out, outlen, "%sZ", base);
    return out;
}

void ctl_print_quoted(const char *text)
{
    /* Line by line, each prefixed, so the tail reads as a quote. */
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char *one = strndup(p, len);
        fputs("    | ", stdout);
        ctl_put_clean(stdout, one ? one : "", false);
        putchar('\n');
        free(one);
        p += len + (nl ? 1 : 0);
    }
}

void ctl_put_clean(FILE *f, const char *s, bool keep_newlines)
{
    for (; s != NULL && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        bool ok = ch >= 0x20 && ch != 0x7f;
        if (!ok && keep_newlines && (ch == '\n' || ch == '\t'))
            ok = true;
        fputc(ok ? ch : '?', f);
    }
}

void ctl_clean_copy(char *dst, size_t dstlen, const char *src)
{
    size_t o = 0;
    for (; src != NULL && *src && o + 1 < dstlen; src++) {
        unsigned char ch = (unsigned char)*src;
        dst[o++] = ch >= 0x20 && ch != 0x7f ? (char)ch : '?';
    }
    dst[o] = '\0';
}

void ctl_msgf(char *out, size_t outlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, outlen, fmt, ap);
    va_end(ap);
}

const char *ctl_jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

int64_t ctl_jint(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

/* "ok 3m ago a1b2c3d", "FAILED exit 1 20s ago" or "-". */
static void fmt_save(const json_t *save, int64_t now, char *out, size_t outlen)
{
    char ago[16];
    if (!json_is_object(save)) {
        snprintf(out, outlen, "-");
        return;
    }
    wg_ctl_fmt_ago(now - ctl_jint(save, "at"), ago, sizeof(ago));
    if (json_is_true(json_object_get(save, "ok"))) {
        const char *commit = ctl_jstr(save, "commit");
        snprintf(out, outlen, "ok %s ago%s%.7s", ago, commit ? " " : "", commit ? commit : "");
    } else {
        snprintf(out, outlen, "FAILED exit %" PRId64 " %s ago", ctl_jint(save, "exit_code"), ago);
    }
}

enum { COL_ID, COL_STATE, COL_HOST, COL_IP, COL_IDLE, COL_SAVE, NCOLS };

struct row {
    char cell[NCOLS][WG_SESSION_HOST_MAX + 1];
};

static void ls_row(const json_t *s, int64_t now, struct row *r)
{
    const char *ip = ctl_jstr(s, "ip");
    int64_t last = ctl_jint(s, "last_active");
    ctl_clean_copy(r->cell[COL_ID], sizeof(r->cell[0]), ctl_jstr(s, "id"));
    ctl_clean_copy(r->cell[COL_STATE], sizeof(r->cell[0]), ctl_jstr(s, "state"));
    ctl_clean_copy(r->cell[COL_HOST], sizeof(r->cell[0]),
                   ctl_jstr(s, "host") ? ctl_jstr(s, "host") : "-");
    ctl_clean_copy(r->cell[COL_IP], sizeof(r->cell[0]), ip ? ip : "-");
    if (last > 0)
        wg_ctl_fmt_duration(now - last, r->cell[COL_IDLE], sizeof(r->cell[0]));
    else
        snprintf(r->cell[COL_IDLE], sizeof(r->cell[0]), "-");
    fmt_save(json_object_get(s, "last_save"), now, r->cell[COL_SAVE], sizeof(r->cell[0]));
}

static void ls_print(const struct row *rows, size_t n)
{
    static const struct row head = {{"ID", "STATE", "HOST", "IP", "IDLE", "LAST SAVE"}};
    int w[NCOLS];
    for (int k = 0; k < NCOLS; k++)
        w[k] = (int)strlen(head.cell[k]);
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < NCOLS; k++)
            if ((int)strlen(rows[i].cell[k]) > w[k])
                w[k] = (int)strlen(rows[i].cell[k]);
    for (size_t i = 0; i <= n; i++) {
        const struct row *r = i == 0 ? &head : &rows[i - 1];
        for (int k = 0; k < NCOLS - 1; k++)
            printf("%-*s  ", w[k], r->cell[k]);
        printf("%s\n", r->cell[NCOLS - 1]);
    }
}

int ctl_print_sessions(const json_t *sessions)
{
    size_t n = json_array_size(sessions);
    struct row *rows = calloc(n ? n : 1, sizeof(*rows));
    int64_t now = wg_clock_wall_ms();

    if (rows == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        ls_row(json_array_get(sessions, i), now, &rows[i]);
    ls_print(rows, n);
    free(rows);
    return 0;
}

static void kv_time(const char *key, const json_t *rec, const char *field, const char *rel,
                    int64_t now)
{
    char t[40], d[24];
    int64_t ms = ctl_jint(rec, field);
    if (ms <= 0)
        return;
    printf("%-13s %s (%s %s)\n", key, ctl_fmt_time(ms, false, t, sizeof(t)), rel,
           wg_ctl_fmt_duration(now - ms, d, sizeof(d)));
}

static void kv_str(const char *key, const char *value)
{
    printf("%-13s ", key);
    ctl_put_clean(stdout, value ? value : "-", false);
    putchar('\n');
}

static void show_save(const json_t *save, int64_t now)
{
    char line[128], t[40];
    fmt_save(save, now, line, sizeof(line));
    kv_str("last save", line);
    if (!json_is_object(save))
        return;
    printf("%-13s %s, exit %" PRId64 "%s%s\n", "  at",
           ctl_fmt_time(ctl_jint(save, "at"), false, t, sizeof(t)), ctl_jint(save, "exit_code"),
           ctl_jstr(save, "commit") ? ", commit " : "",
           ctl_jstr(save, "commit") ? ctl_jstr(save, "commit") : "");
    const char *output = ctl_jstr(save, "output");
    if (output == NULL || output[0] == '\0')
        return;
    printf("  output\n");
    ctl_print_quoted(output);
}

void ctl_print_record(const json_t *rec)
{
    int64_t now = wg_clock_wall_ms();
    char buf[128];
    const json_t *idle = json_object_get(rec, "idle");

    kv_str("id", ctl_jstr(rec, "id"));
    kv_str("state", ctl_jstr(rec, "state"));
    kv_time("  since", rec, "state_since", "for", now);
    kv_str("host", ctl_jstr(rec, "host"));
    kv_str("image", ctl_jstr(rec, "image"));
    kv_str("container", ctl_jstr(rec, "container_id"));
    if (ctl_jstr(rec, "ip") != NULL) {
        snprintf(buf, sizeof(buf), "%s:%" PRId64, ctl_jstr(rec, "ip"), ctl_jint(rec, "port"));
        kv_str("address", buf);
    } else {
        snprintf(buf, sizeof(buf), "- (port %" PRId64 ")", ctl_jint(rec, "port"));
        kv_str("address", buf);
    }
    kv_time("created", rec, "created", "age", now);
    if (ctl_jint(rec, "last_active") > 0)
        kv_time("last active", rec, "last_active", "idle", now);
    else
        kv_str("last active", "-");
    printf("%-13s %" PRId64 "\n", "restarts", ctl_jint(rec, "restarts"));
    if (json_is_object(idle)) {
        char p[24] = "-", s[24] = "-";
        if (json_object_get(idle, "pause_after_ms"))
            wg_ctl_fmt_duration(ctl_jint(idle, "pause_after_ms"), p, sizeof(p));
        if (json_object_get(idle, "stop_after_ms"))
            wg_ctl_fmt_duration(ctl_jint(idle, "stop_after_ms"), s, sizeof(s));
        printf("%-13s pause after %s, stop after %s\n", "idle policy", p, s);
    }
    ctl_print_spec(rec);
    show_save(json_object_get(rec, "last_save"), now);
    kv_str("error", ctl_jstr(rec, "error"));
    printf("%-13s %" PRId64 "\n", "version", ctl_jint(rec, "version"));
}

void ctl_print_event(const char *data)
{
    json_t *j = json_loads(data, 0, NULL);
    char t[40], what[96];
    if (!json_is_object(j)) {
        ctl_put_clean(stdout, data, false);
        putchar('\n');
        json_decref(j);
        return;
    }
    const char *type = ctl_jstr(j, "type");
    if (type != NULL && strcmp(type, "transition") == 0) {
        const char *from = ctl_jstr(j, "from");
        snprintf(what, sizeof(what), "%s -> %s", from && from[0] ? from : "(new)",
                 ctl_jstr(j, "to") ? ctl_jstr(j, "to") : "?");
    } else {
        snprintf(what, sizeof(what), "%s", type ? type : "event");
    }
    /* The API checks session ids, but an entry written by hand is not:
     * every text from the entry is printed cleaned. */
    char sid[80];
    ctl_clean_copy(sid, sizeof(sid), ctl_jstr(j, "id") ? ctl_jstr(j, "id") : "-");
    printf("%s  %-20s  ", ctl_fmt_time(ctl_jint(j, "at"), true, t, sizeof(t)), sid);
    ctl_put_clean(stdout, what, false);
    const json_t *detail = json_object_get(j, "detail");
    if (detail != NULL && !json_is_null(detail)) {
        char *d = json_dumps(detail, JSON_COMPACT | JSON_ENCODE_ANY);
        putchar(' ');
        ctl_put_clean(stdout, d ? d : "?", false);
        free(d);
    }
    putchar('\n');
    json_decref(j);
}
