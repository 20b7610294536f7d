/* common/log.c - see log.h. */
#include "common/log.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/clock.h"

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int wg_log_level_parse(const char *s, enum wg_log_level *ret_level)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *ret_level = (enum wg_log_level)i;
            return 0;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *ret_level = WG_LOG_WARN;
        return 0;
    }
    return -EINVAL;
}

int wg_log_format_parse(const char *s, enum wg_log_format *ret_format)
{
    if (strcasecmp(s, "logfmt") == 0) {
        *ret_format = WG_LOG_LOGFMT;
        return 0;
    }
    if (strcasecmp(s, "json") == 0) {
        *ret_format = WG_LOG_JSON;
        return 0;
    }
    return -EINVAL;
}

const char *wg_log_level_name(enum wg_log_level level)
{
    if ((unsigned)level >= sizeof(level_names) / sizeof(level_names[0]))
        return "unknown";
    return level_names[level];
}

static bool needs_quote(const char *s, size_t len)
{
    if (len == 0)
        return true;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c >= 0x7f || c == '"' || c == '=' || c == '\\')
            return true;
    }
    return false;
}

char *wg_log_quote(char *dst, size_t dstlen, const char *src, size_t len)
{
    size_t o = 0;
    if (dstlen == 0)
        return dst;
    if (!needs_quote(src, len)) {
        size_t n = len < dstlen - 1 ? len : dstlen - 1;
        memcpy(dst, src, n);
        dst[n] = '\0';
        return dst;
    }
    /* Leave room for the closing quote and NUL. */
    if (dstlen < 3) {
        dst[0] = '\0';
        return dst;
    }
    dst[o++] = '"';
    for (size_t i = 0; i < len && o + 5 < dstlen; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c == '"' || c == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char)c;
        } else if (c < ' ' || c >= 0x7f) {
            static const char hex[] = "0123456789abcdef";
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        } else {
            dst[o++] = (char)c;
        }
    }
    dst[o++] = '"';
    dst[o] = '\0';
    return dst;
}

/* -?(0|[1-9][0-9]*): only these may be written as bare JSON numbers. */
static bool is_json_integer(const char *v, size_t n)
{
    size_t i = 0;
    if (i < n && v[i] == '-')
        i++;
    if (i >= n || n - i > 18)
        return false;
    if (v[i] == '0')
        return i + 1 == n;
    for (; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
    }
    return true;
}

/* Converts logfmt pairs (key=value key2="quoted value") into JSON members.
 * Values that look like plain integers stay numbers. */
static void kv_to_json(FILE *out, const char *kv)
{
    const char *p = kv;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *k = p;
        while (*p && *p != '=' && *p != ' ')
            p++;
        size_t klen = (size_t)(p - k);
        if (*p != '=') {
            fprintf(out, ",\"%.*s\":true", (int)klen, k);
            continue;
        }
        p++;
        fprintf(out, ",\"%.*s\":", (int)klen, k);
        if (*p == '"') {
            /* Already escaped for logfmt with \" and \\ and \xNN; JSON wants \u00NN. */
            p++;
            fputc('"', out);
            while (*p && *p != '"') {
                if (p[0] == '\\' && p[1] == 'x' && p[2] && p[3]) {
                    fprintf(out, "\\u00%c%c", p[2], p[3]);
                    p += 4;
                } else if (p[0] == '\\' && p[1]) {
                    fputc('\\', out);
                    fputc(p[1], out);
                    p += 2;
                } else {
                    fputc(*p++, out);
                }
            }
            if (*p == '"')
                p++;
            fputc('"', out);
        } else {
            const char *v = p;
            while (*p && *p != ' ')
                p++;
            size_t vlen = (size_t)(p - v);
            if (is_json_integer(v, vlen))
                fprintf(out, "%.*s", (int)vlen, v);
            else {
                fputc('"', out);
                for (size_t i = 0; i < vlen; i++) {
                    if (v[i] == '"' || v[i] == '\\')
                        fputc('\\', out);
                    fputc(v[i], out);
                }
                fputc('"', out);
            }
        }
    }
}

void wg_log_write(const struct wg_log *log, enum wg_log_level level, const char *subsys,
                  const char *msg, const char *kvfmt, ...)
{
    char kv[2048];
    char ts[64];
    int64_t now = wg_clock_wall_ms();
    time_t sec = (time_t)(now / 1000);
    struct tm tm;
    FILE *out = log->out ? log->out : stderr;
    va_list ap;

    va_start(ap, kvfmt);
    int n = vsnprintf(kv, sizeof(kv), kvfmt, ap);
    va_end(ap);
    if (n < 0)
        kv[0] = '\0';

    gmtime_r(&sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec % 61, (int)(now % 1000));

    /* One fprintf-run under the stream lock so concurrent writers never interleave. */
    flockfile(out);
    if (log->format == WG_LOG_JSON) {
        fprintf(out, "{\"ts\":\"%s\",\"level\":\"%s\",\"sub\":\"%s\",\"msg\":\"", ts,
                wg_log_level_name(level), subsys);
        for (const char *m = msg; *m; m++) {
            if (*m == '"' || *m == '\\')
                fputc('\\', out);
            fputc(*m, out);
        }
        fputc('"', out);
        kv_to_json(out, kv);
        fputs("}\n", out);
    } else {
        char qmsg[512];
        fprintf(out, "ts=%s level=%s sub=%s msg=%s%s%s\n", ts, wg_log_level_name(level), subsys,
                wg_log_quote(qmsg, sizeof(qmsg), msg, strlen(msg)), kv[0] ? " " : "", kv);
    }
    funlockfile(out);
}
