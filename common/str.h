/* common/str.h - small string helpers shared by the parts. */
#ifndef WG_COMMON_STR_H
#define WG_COMMON_STR_H

#include <stddef.h>

/* A malloc'd printf: the caller frees the result; NULL when out of memory. */
char *wg_strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Writes a reason into err (when err is not NULL and errlen > 0) and
 * returns -EINVAL, for the parsers and validators that report why they
 * refused: `return wg_errf(err, errlen, "field \"%s\": ...", name);`. */
int wg_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
