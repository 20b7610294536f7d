/* common/utf8.h - UTF-8 validation shared by every place that accepts text
 * from outside (records in Redis, Docker names and labels, JSON we build). */
#ifndef WG_COMMON_UTF8_H
#define WG_COMMON_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Longest string of a container spec the Docker client sends (one cmd,
 * env, bind or label value). */
#define WG_TEXT_MAX 4096

/* Length of the valid UTF-8 sequence at s (at most n bytes, n >= 1), or 0 if
 * it is invalid: no overlong forms, no surrogates, nothing past U+10FFFF. */
size_t wg_utf8_seq(const unsigned char *s, size_t n);

/* Whether s is valid UTF-8 of at most max bytes (empty only with empty_ok)
 * without control characters; with lines, newline and tab pass (scripts in
 * a command). The one rule for text that goes into a container spec: the
 * admin API applies it on create and the Docker client before it sends. */
bool wg_text_ok(const char *s, size_t max, bool empty_ok, bool lines);

#endif
