/* common/buf.c - see buf.h. */
#include "common/buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void wg_buf_init(struct wg_buf *b, size_t max)
{
    b->data = NULL;
    b->off = b->len = b->cap = 0;
    b->max = max;
}

void wg_buf_release(struct wg_buf *b)
{
    if (b == NULL)
        return;
    free(b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

int wg_buf_reserve(struct wg_buf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return 0;
    /* Reclaim consumed space before growing. */
    if (b->off > 0) {
        wg_buf_compact(b);
        if (b->cap - b->len >= n)
            return 0;
    }
    if (n > b->max || b->len > b->max - n)
        return -E2BIG;
    size_t want = b->len + n;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < want)
        ncap = ncap > SIZE_MAX / 2 ? want : ncap * 2;
    if (ncap > b->max)
        ncap = b->max;
    char *p = realloc(b->data, ncap);
    if (p == NULL)
        return -ENOMEM;
    b->data = p;
    b->cap = ncap;
    return 0;
}

int wg_buf_append(struct wg_buf *b, const void *p, size_t n)
{
    int r = wg_buf_reserve(b, n);
    if (r < 0)
        return r;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int wg_buf_appendf(struct wg_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    int r;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    r = wg_buf_reserve(b, (size_t)n + 1);
    if (r < 0)
        return r;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void wg_buf_consume(struct wg_buf *b, size_t n)
{
    if (n >= b->len - b->off) {
        b->off = b->len = 0;
        return;
    }
    b->off += n;
}

void wg_buf_compact(struct wg_buf *b)
{
    if (b->off == 0)
        return;
    size_t n = b->len - b->off;
    if (n)
        memmove(b->data, b->data + b->off, n);
    b->off = 0;
    b->len = n;
}
