/* proxy/pages.c - see pages.h. */
#include "proxy/pages.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "common/utf8.h"

/* snprintf's count, clamped to what buf holds. */
static size_t fitted(int n, size_t len)
{
    if (n < 0)
        return 0;
    return (size_t)n < len ? (size_t)n : len - 1;
}

size_t wg_pages_status(char *buf, size_t len, const char *id, const char *state)
{
    int n = snprintf(buf, len, "{\"session\":\"%s\",\"state\":\"%s\"}\n", id, state);
    return fitted(n, len);
}

/* An output that counts what it would write past its end. */
struct out {
    char *buf;
    size_t len, n;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->n < o->len) {
        size_t room = o->len - o->n;
        memcpy(o->buf + o->n, s, n < room ? n : room);
    }
    o->n += n;
}

/* s HTML-escaped: & < > " ' as references, control bytes dropped (but tab
 * and newline), invalid UTF-8 as U+FFFD. */
static void put_escaped(struct out *o, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t n = strlen((const char *)p), i = 0;

    while (i < n) {
        unsigned char ch = p[i];
        size_t k;
        switch (ch) {
        case '&':
            put(o, "&amp;", 5);
            i++;
            continue;
        case '<':
            put(o, "&lt;", 4);
            i++;
            continue;
        case '>':
            put(o, "&gt;", 4);
            i++;
            continue;
        case '"':
            put(o, "&quot;", 6);
            i++;
            continue;
        case '\'':
            put(o, "&#39;", 5);
            i++;
            continue;
        default:
            break;
        }
        if (ch < 0x80) {
            if (ch >= 0x20 || ch == '\t' || ch == '\n')
                put(o, (const char *)p + i, 1);
            i++;
            continue;
        }
        k = wg_utf8_seq(p + i, n - i);
        if (k == 0) {
            put(o, "\xef\xbf\xbd", 3);
            i++;
            continue;
        }
        put(o, (const char *)p + i, k);
        i += k;
    }
}

size_t wg_pages_render(char *buf, size_t len, const char *tpl, size_t tpl_len,
                       const struct wg_page_facts *f)
{
    static const struct {
        const char *name;
        size_t off;
    } vars[] = {
        {"{{session}}", offsetof(struct wg_page_facts, id)},
        {"{{state}}", offsetof(struct wg_page_facts, state)},
        {"{{reason}}", offsetof(struct wg_page_facts, reason)},
        {"{{status_url}}", offsetof(struct wg_page_facts, status_url)},
    };
    struct out o = {.buf = buf, .len = len};
    size_t i = 0;

    while (i < tpl_len) {
        const char *open = memchr(tpl + i, '{', tpl_len - i);
        size_t upto = open ? (size_t)(open - tpl) : tpl_len;
        put(&o, tpl + i, upto - i);
        i = upto;
        if (open == NULL)
            break;
        bool done = false;
        for (size_t v = 0; v < sizeof(vars) / sizeof(vars[0]) && !done; v++) {
            size_t vl = strlen(vars[v].name);
            if (tpl_len - i >= vl && memcmp(tpl + i, vars[v].name, vl) == 0) {
                put_escaped(&o, *(const char *const *)((const char *)f + vars[v].off));
                i += vl;
                done = true;
            }
        }
        if (!done) {
            put(&o, "{", 1);
            i++;
        }
    }
    return o.n;
}

/* The failed page's part: the reason, and a link that tries again (the
 * same address: a navigation, which wakes once the failure cooldown is
 * over). */
static void put_failed(struct out *o, const struct wg_page_facts *f)
{
    static const char a[] = "<p id=\"r\">This session failed to start";
    static const char b[] = "</p>\n<p><a href=\"\">Try again</a></p>";
    put(o, a, sizeof(a) - 1);
    if (f->reason != NULL && f->reason[0] != '\0') {
        put(o, ": <code>", 8);
        put_escaped(o, f->reason);
        put(o, "</code>", 7);
    }
    put(o, b, sizeof(b) - 1);
}

size_t wg_pages_waking(char *buf, size_t len, const struct wg_page_facts *f)
{
    bool failed = strcmp(f->state, "failed") == 0;
    char failed_part[2400];
    struct out fo = {.buf = failed_part, .len = sizeof(failed_part) - 1};

    if (failed)
        put_failed(&fo, f);
    if (fo.n > fo.len)
        fo.n = 0; /* no room: no reason */
    failed_part[fo.n] = '\0';
    int n = snprintf(
        buf, len,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width\">"
        "<title>%s %s</title>"
        "<style>body{font:16px system-ui,sans-serif;margin:20vh auto;max-width:32em;"
        "text-align:center;color:#333}.d{display:inline-block;width:.6em;height:.6em;"
        "border-radius:50%%;background:#48c;animation:p 1s infinite alternate}"
        "@keyframes p{from{opacity:.2}to{opacity:1}}</style></head>\n"
        "<body><p><span class=\"d\"></span></p><h1>%s %s</h1>"
        "<p id=\"s\">state: %s</p>%s\n"
        "<script>(function(){var u=%s%s%s,t=Date.now();if(%s)return;function poll(){"
        "fetch(u,{cache:'no-store'}).then(function(r){return r.json()}).then(function(j){"
        "document.getElementById('s').textContent='state: '+j.state;"
        "if(j.state==='running'){location.reload();return}"
        "if(j.state==='failed'&&Date.now()-t>3000){location.reload();return}"
        "setTimeout(poll,300)})"
        ".catch(function(){setTimeout(poll,1000)})}setTimeout(poll,200)})();</script>"
        "</body></html>\n",
        failed ? "Could not wake" : "Waking", f->id, failed ? "Could not wake" : "Waking up", f->id,
        f->state, failed_part, "'", f->status_url, "'", failed ? "true" : "false");
    if (n < 0 || (size_t)n >= len)
        n = snprintf(buf, len, "waking %s\n", f->id);
    return fitted(n, len);
}
