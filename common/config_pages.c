/* common/config_pages.c - sessions.waking_page: the operator's HTML for the
 * waking page of a template, read when the configuration is loaded (and
 * again at each reload), so a request never touches the file system. */
#include "common/config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/config_int.h"
#include "common/utf8.h"

/* Whether the page is UTF-8 text with no NUL or other control byte than
 * tab, CR and LF. */
static bool page_text_ok(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < len) {
        if (p[i] < 0x80) {
            if ((p[i] < 0x20 && p[i] != '\t' && p[i] != '\n' && p[i] != '\r') || p[i] == 0x7f)
                return false;
            i++;
            continue;
        }
        size_t n = wg_utf8_seq(p + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

int config_check_waking_page(struct walk *w, yaml_node_t *map, struct wg_sessions_cfg *t)
{
    yaml_node_t *n = config_walk_get(w, map, "waking_page");
    const char *path = t->waking_page;
    char *html = NULL;
    size_t len = 0, old;
    int r;

    if (n == NULL)
        return 0; /* not in this mapping: what an earlier one read stays */
    free(t->waking_page_html);
    t->waking_page_html = NULL;
    t->waking_page_len = 0;
    if (path == NULL)
        return 0;
    old = config_walk_push(w, ".waking_page");
    struct stat st;
    r = config_read_small(path, WG_WAKING_PAGE_MAX, &st, &html, &len);
    if (r == -EINVAL) {
        r = config_walk_fail(w, n, "%s is not a regular file", path);
        goto out;
    }
    if (r == -EFBIG) {
        r = config_walk_fail(w, n, "%s is larger than %d bytes", path, WG_WAKING_PAGE_MAX);
        goto out;
    }
    if (r < 0) {
        r = config_walk_fail(w, n, "cannot read %s: %s", path, strerror(-r));
        goto out;
    }
    if (!page_text_ok(html, len)) {
        free(html);
        r = config_walk_fail(w, n, "%s is not UTF-8 text (control bytes or invalid sequences)",
                             path);
        goto out;
    }
    t->waking_page_html = html;
    t->waking_page_len = len;
out:
    config_walk_pop(w, old);
    return r;
}
