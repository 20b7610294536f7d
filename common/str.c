/* common/str.c - see str.h. */
#include "common/str.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

char *wg_strf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&s, fmt, ap);
    va_end(ap);
    return n < 0 ? NULL : s;
}
