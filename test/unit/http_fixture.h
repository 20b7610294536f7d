/* test/unit/http_fixture.h - one head scanned and parsed the way the
 * listeners do it (common/http_head), for the unit tests that need a
 * parsed message. */
#ifndef WG_TEST_HTTP_FIXTURE_H
#define WG_TEST_HTTP_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>

#include <llhttp.h>

#include "common/config.h"
#include "common/http_head.h"

#define WG_TEST_HTTP_FIELDS 128

/* The default head limits of PROXY-RULES.md. */
extern const struct wg_limits wg_test_http_limits;

struct wg_test_http {
    llhttp_settings_t settings;
    llhttp_t parser;
    struct wg_http_msg msg;
    struct wg_http_field fields[WG_TEST_HTTP_FIELDS];
    size_t head_len;
};

/* Scans and parses raw (NUL-terminated) as a request or a response; the
 * parser stays ready for a body, pausing at its end. Returns 0, -1 while
 * the head is incomplete, or the status the scanner or parser chose. */
int wg_test_http_parse(struct wg_test_http *ps, const char *raw, bool response);

#endif
