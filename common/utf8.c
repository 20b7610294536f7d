/* common/utf8.c - see utf8.h. */
#include "common/utf8.h"

#include <stdint.h>
#include <string.h>

size_t wg_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    uint32_t cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

bool wg_text_ok(const char *s, size_t max, bool empty_ok, bool lines)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n;

    if (!s)
        return false;
    n = strlen(s);
    if ((n == 0 && !empty_ok) || n > max)
        return false;
    for (size_t i = 0; i < n;) {
        size_t len = wg_utf8_seq(p + i, n - i);
        if (len == 0 || (len == 1 && (p[i] < 0x20 || p[i] == 0x7f) &&
                         !(lines && (p[i] == '\n' || p[i] == '\t'))))
            return false;
        i += len;
    }
    return true;
}
