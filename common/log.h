/* common/log.h - structured, leveled log lines (logfmt or JSON lines).
 *
 * One line per event: time, level, subsystem, message, then key=value pairs.
 * The logger is owned by the per-loop context; nothing here is global.
 * The level is checked before the arguments are formatted. */
#ifndef WG_COMMON_LOG_H
#define WG_COMMON_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

enum wg_log_level { WG_LOG_DEBUG = 0, WG_LOG_INFO, WG_LOG_WARN, WG_LOG_ERROR };
enum wg_log_format { WG_LOG_LOGFMT = 0, WG_LOG_JSON };

struct wg_log {
    enum wg_log_level level;
    enum wg_log_format format;
    FILE *out; /* not owned; stderr by default */
};

/* Parses "debug", "info", "warn" or "error". Returns 0 or -EINVAL. */
int wg_log_level_parse(const char *s, enum wg_log_level *ret_level);
/* Parses "logfmt" or "json". Returns 0 or -EINVAL. */
int wg_log_format_parse(const char *s, enum wg_log_format *ret_format);
const char *wg_log_level_name(enum wg_log_level level);

/* kv is zero or more pre-formatted " key=value" pairs, written as printf
 * format + args: for logfmt they are copied as is; for JSON each pair becomes
 * a member. Values with spaces must be quoted by the caller with %s of
 * wg_log_quote() output, or passed through the "%q"-free helpers below. */
void wg_log_write(const struct wg_log *log, enum wg_log_level level, const char *subsys,
                  const char *msg, const char *kvfmt, ...) __attribute__((format(printf, 5, 6)));

#define wg_log_enabled(log, lvl) ((log) != NULL && (lvl) >= (log)->level)

/* msg is a constant text; the rest is "key=value key2=value2" in printf form. */
#define WG_LOG(log, lvl, subsys, msg, ...)                                                         \
    do {                                                                                           \
        if (wg_log_enabled((log), (lvl)))                                                          \
            wg_log_write((log), (lvl), (subsys), (msg), __VA_ARGS__);                              \
    } while (0)

#define WG_DEBUG(log, subsys, msg, ...) WG_LOG(log, WG_LOG_DEBUG, subsys, msg, __VA_ARGS__)
#define WG_INFO(log, subsys, msg, ...) WG_LOG(log, WG_LOG_INFO, subsys, msg, __VA_ARGS__)
#define WG_WARN(log, subsys, msg, ...) WG_LOG(log, WG_LOG_WARN, subsys, msg, __VA_ARGS__)
#define WG_ERROR(log, subsys, msg, ...) WG_LOG(log, WG_LOG_ERROR, subsys, msg, __VA_ARGS__)

/* Writes src (len bytes) into dst as a logfmt-safe value: printable ASCII
 * without spaces or quotes is copied; anything else is double-quoted with
 * escapes. Always NUL-terminates; truncates to fit. Returns dst. */
char *wg_log_quote(char *dst, size_t dstlen, const char *src, size_t len);

#endif
