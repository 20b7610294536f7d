/* common/str.h - small string helpers shared by the parts. */
#ifndef WG_COMMON_STR_H
#define WG_COMMON_STR_H

/* A malloc'd printf: the caller frees the result; NULL when out of memory. */
char *wg_strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
