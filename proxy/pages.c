/* proxy/pages.c - see pages.h. */
#include "proxy/pages.h"

#include <stdio.h>

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

size_t wg_pages_waking(char *buf, size_t len, const char *id, const char *state,
                       const char *status_url)
{
    int n = snprintf(
        buf, len,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width\">"
        "<title>Waking %s</title>"
        "<style>body{font:16px system-ui,sans-serif;margin:20vh auto;max-width:32em;"
        "text-align:center;color:#333}.d{display:inline-block;width:.6em;height:.6em;"
        "border-radius:50%%;background:#48c;animation:p 1s infinite alternate}"
        "@keyframes p{from{opacity:.2}to{opacity:1}}</style></head>\n"
        "<body><p><span class=\"d\"></span></p><h1>Waking up %s</h1>"
        "<p id=\"s\">state: %s</p>\n"
        "<script>(function(){var u=%s%s%s,t=Date.now();function poll(){"
        "fetch(u,{cache:'no-store'}).then(function(r){return r.json()}).then(function(j){"
        "document.getElementById('s').textContent='state: '+j.state;"
        "if(j.state==='running'){location.reload();return}"
        "if(j.state==='failed'&&Date.now()-t>3000){document.getElementById('s').textContent="
        "'this session failed to start';return}setTimeout(poll,300)})"
        ".catch(function(){setTimeout(poll,1000)})}setTimeout(poll,200)})();</script>"
        "</body></html>\n",
        id, id, state, "'", status_url, "'");
    if (n < 0 || (size_t)n >= len)
        n = snprintf(buf, len, "waking %s\n", id);
    return fitted(n, len);
}
