/* common/http_head.h - HTTP/1.1 message heads: scanning and strict parsing
 * with llhttp, validated against PROXY-RULES.md. Both listeners (the public
 * proxy and the admin listener) read heads through it; the proxy's
 * canonical head rebuilders are in proxy/http_rebuild.h.
 *
 * Pure code: no sockets, no allocation except into caller-owned buffers.
 * A head is first scanned as bytes arrive (line ends, obs-fold, empty names,
 * size limits); once complete it is parsed by llhttp in one call, so every
 * span points into the caller's contiguous head buffer. Body bytes go through
 * the same llhttp parser afterwards, through the caller's body callbacks.
 *
 * Return codes: 0 is success, a positive value is the HTTP status to answer
 * with (400, 405, 413, 414, 417, 431, 501, 505 for requests; 502 for
 * responses), a negative value is -errno. */
#ifndef WG_COMMON_HTTP_HEAD_H
#define WG_COMMON_HTTP_HEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <llhttp.h>

#include "common/buf.h"
#include "common/config.h"

struct wg_http_field {
    const char *name;
    size_t name_len;
    const char *value; /* leading and trailing whitespace trimmed */
    size_t value_len;
};

/* Incremental head scanner state; zero it (or wg_http_scan_reset) per head. */
struct wg_http_scan {
    size_t pos;        /* bytes already scanned */
    size_t line_start; /* offset of the current line */
    unsigned fields;   /* header lines seen */
    bool is_response;
};

static inline void wg_http_scan_reset(struct wg_http_scan *s, bool is_response)
{
    s->pos = s->line_start = 0;
    s->fields = 0;
    s->is_response = is_response;
}

/* Longest request method accepted (the longest registered one is 17
 * bytes); a longer token is 400, not 501. */
#define WG_HTTP_METHOD_MAX 32

#define WG_HTTP_SCAN_MORE 0
#define WG_HTTP_SCAN_DONE 1
/* Scans buf[0, len) (the whole head so far; earlier bytes are not re-read).
 * Returns WG_HTTP_SCAN_MORE, WG_HTTP_SCAN_DONE with *ret_head_len set to the
 * length including the blank line, or an HTTP status: 400 (bare CR or LF,
 * obs-fold, empty field name, leading blank lines, a request line that is
 * not method SP target SP HTTP/d.d, a method over WG_HTTP_METHOD_MAX, a
 * target with a fragment, "%00" or a byte outside visible ASCII, a path
 * with a dot segment, a backslash or an encoded control byte), 505 (a
 * well-formed version other than 1.x), 414 (request line too
 * long), 431 (header line, head or field count too large). */
int wg_http_scan(struct wg_http_scan *s, const char *buf, size_t len, const struct wg_limits *lim,
                 size_t *ret_head_len);

/* One parsed message head. Spans point into the buffer given to llhttp. */
struct wg_http_msg {
    void *owner; /* the caller's, for its body callbacks */
    int error;   /* status set by a head callback before returning -1 */
    bool is_response;
    bool skip_body; /* response to HEAD: set by the caller before parsing */

    const char *method;
    size_t method_len;
    uint8_t method_id; /* llhttp_method_t */
    const char *target;
    size_t target_len;
    int status;
    const char *reason;
    size_t reason_len;
    uint8_t major, minor;

    struct wg_http_field *fields; /* caller-owned storage */
    size_t fields_len, fields_cap;

    /* derived in on_headers_complete */
    const char *host;
    size_t host_len;
    bool chunked;
    bool has_content_length;
    uint64_t content_length;
    bool conn_close;        /* Connection: close, or 1.0 without keep-alive */
    bool conn_upgrade;      /* Connection names upgrade */
    bool upgrade_websocket; /* a valid WebSocket upgrade request, or a 101 */
    bool expect_continue;
    bool headers_done;
    bool complete; /* on_message_complete ran */

    /* Chunked framing, watched beside llhttp. llhttp stops (HPE_PAUSED)
     * after the last chunk's size line; the caller then passes the trailer
     * section through the trailer scan before llhttp sees it, since
     * llhttp takes a bare LF there for a line end. */
    bool in_trailers;
    bool trailer_cr;          /* the last trailer byte was a CR */
    size_t trailer_line_len;  /* bytes of the current trailer line */
    size_t trailer_bytes;     /* bytes of the trailer section so far */
    size_t chunk_ext_line;    /* chunk-extension bytes of the current chunk line */
    uint64_t chunk_ext_bytes; /* chunk-extension bytes of the message */
};

/* Chunk extensions: at most this many bytes on one chunk line, and in one
 * message; more is refused (400 for a request, 502 for a response). */
#define WG_HTTP_CHUNK_EXT_LINE_MAX 1024
#define WG_HTTP_CHUNK_EXT_MSG_MAX (64 * 1024)

/* Prepares msg for a new head, keeping owner, fields storage and skip_body. */
void wg_http_msg_begin(struct wg_http_msg *msg);

/* Sets the head callbacks (message begin, method, url, status, version,
 * fields, headers complete) on settings. The caller adds on_body,
 * on_message_complete and may add others; parser->data must be the msg. */
void wg_http_settings_init(llhttp_settings_t *settings);

/* Runs llhttp over a complete head (as found by wg_http_scan) with a parser
 * whose data is msg, and validates it. The parser stays ready for the body.
 * Returns 0, or the status to answer with (request) / 502 (response). */
int wg_http_parse_head(llhttp_t *parser, struct wg_http_msg *msg, const char *head,
                       size_t head_len);

/* Whether a field is hop-by-hop for msg: the fixed list, or named by one of
 * msg's Connection headers. */
bool wg_http_field_is_hop(const struct wg_http_msg *msg, const struct wg_http_field *f);

/* Runs llhttp (p, whose data is msg) over body bytes data[0, len), the
 * trailer section through the trailer scan first. Returns llhttp's
 * answer (HPE_OK; HPE_PAUSED at the end of the message, or before a
 * trailer section still to come; or a failure) with *ret_used the bytes it
 * took. A refused trailer section is HPE_USER with msg->error set. */
llhttp_errno_t wg_http_execute_body(llhttp_t *p, struct wg_http_msg *msg, const char *data,
                                    size_t len, size_t trailer_max, size_t *ret_used);

/* Whether f's name is name[0, len) (no case). */
bool wg_http_field_named(const struct wg_http_field *f, const char *name, size_t len);

/* Finds the first field with this name (no case); NULL if none. */
const struct wg_http_field *wg_http_find(const struct wg_http_msg *msg, const char *name);

/* Case-insensitive: does the comma list value contain token? */
bool wg_http_list_has(const char *value, size_t len, const char *token);

/* Whether a method may be retried on a fresh connection. */
bool wg_http_method_idempotent(uint8_t method_id);

/* Standard reason phrase for our own responses ("Bad Request"). */
const char *wg_http_reason(int status);

#endif
