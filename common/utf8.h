/* common/utf8.h - UTF-8 validation shared by every place that accepts text
 * from outside (records in Redis, Docker names and labels, JSON we build). */
#ifndef WG_COMMON_UTF8_H
#define WG_COMMON_UTF8_H

#include <stddef.h>

/* Length of the valid UTF-8 sequence at s (at most n bytes, n >= 1), or 0 if
 * it is invalid: no overlong forms, no surrogates, nothing past U+10FFFF. */
size_t wg_utf8_seq(const unsigned char *s, size_t n);

#endif
