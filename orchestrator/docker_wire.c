/* orchestrator/docker_wire.c - the Docker client's pure parts below JSON:
 * the Api-Version header and the version to use, the multiplexed output of
 * logs and exec, the output tail, and the events stream's lines. No I/O:
 * the unit test walks them directly. See docker_int.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "orchestrator/docker_int.h"

/* ---- API version ---------------------------------------------------------------------------- */

int docker_version_parse(const char *s, size_t n, int *ret_major, int *ret_minor)
{
    long v[2] = {0, 0};
    size_t i = 0;

    for (int part = 0; part < 2; part++) {
        size_t start = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            v[part] = v[part] * 10 + (s[i] - '0');
            if (v[part] > 999)
                return -EINVAL;
            i++;
        }
        if (i == start)
            return -EINVAL;
        if (part == 0) {
            if (i >= n || s[i] != '.')
                return -EINVAL;
            i++;
        }
    }
    if (i != n)
        return -EINVAL;
    *ret_major = (int)v[0];
    *ret_minor = (int)v[1];
    return 0;
}

static int version_cmp(int amaj, int amin, int bmaj, int bmin)
{
    if (amaj != bmaj)
        return amaj < bmaj ? -1 : 1;
    return amin < bmin ? -1 : amin > bmin;
}

int docker_version_negotiate(const char *server, int our_major, int our_minor, char *out,
                             size_t outlen)
{
    int smaj, smin, minmaj, minmin;

    if (!server || !server[0]) {
        /* Engines before 1.25 send no Api-Version; ours is all we can try. */
        snprintf(out, outlen, "%d.%d", our_major, our_minor);
        return 0;
    }
    if (docker_version_parse(server, strlen(server), &smaj, &smin) < 0)
        return -EINVAL;
    docker_version_parse(WG_DOCKER_API_MIN, strlen(WG_DOCKER_API_MIN), &minmaj, &minmin);
    if (version_cmp(smaj, smin, minmaj, minmin) < 0)
        return -EPROTONOSUPPORT;
    if (version_cmp(smaj, smin, our_major, our_minor) < 0)
        snprintf(out, outlen, "%d.%d", smaj, smin);
    else
        snprintf(out, outlen, "%d.%d", our_major, our_minor);
    return 0;
}

long docker_header_value(const char *line, size_t n, const char *name, const char **ret)
{
    size_t nl = strlen(name);
    const char *v, *end;

    if (n <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return -1;
    v = line + nl + 1;
    end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *ret = v;
    return (long)(end - v);
}

/* ---- stream helpers: demultiplexer, output tail, lines -------------------------------------- */

void wg_docker_demux_feed(struct wg_docker_demux *m, const char *p, size_t n,
                          wg_docker_demux_fn *fn, void *arg)
{
    while (n > 0) {
        if (m->mode == WG_DOCKER_DM_RAW) {
            fn(arg, 1, p, n);
            return;
        }
        if (m->left > 0) {
            size_t k = n < m->left ? n : m->left;
            fn(arg, m->stream, p, k);
            p += k;
            n -= k;
            m->left -= (uint32_t)k;
            continue;
        }
        m->hdr[m->have++] = (unsigned char)*p++;
        n--;
        if (m->mode == WG_DOCKER_DM_DETECT) {
            unsigned i = m->have - 1;
            /* A frame header starts with stream 0-2 and three zero bytes. */
            if ((i == 0 && m->hdr[0] > 2) || (i >= 1 && i <= 3 && m->hdr[i] != 0)) {
                m->mode = WG_DOCKER_DM_RAW;
                fn(arg, 1, (const char *)m->hdr, m->have);
                m->have = 0;
                continue;
            }
        }
        if (m->have < 8)
            continue;
        m->mode = WG_DOCKER_DM_MUX;
        m->stream = m->hdr[0];
        m->left = (uint32_t)m->hdr[4] << 24 | (uint32_t)m->hdr[5] << 16 | (uint32_t)m->hdr[6] << 8 |
                  (uint32_t)m->hdr[7];
        m->have = 0;
    }
}

void wg_docker_demux_end(struct wg_docker_demux *m, wg_docker_demux_fn *fn, void *arg)
{
    if (m->mode == WG_DOCKER_DM_DETECT && m->have > 0)
        fn(arg, 1, (const char *)m->hdr, m->have);
    m->have = 0;
}

void docker_tail_append(struct wg_buf *b, size_t cap, const char *p, size_t n, bool *trunc)
{
    size_t have = wg_buf_size(b);

    if (n >= cap) {
        if (n > cap || have > 0)
            *trunc = true;
        wg_buf_reset(b);
        p += n - cap;
        n = cap;
    } else if (have + n > cap) {
        wg_buf_consume(b, have + n - cap);
        *trunc = true;
    }
    if (wg_buf_append(b, p, n) < 0)
        *trunc = true; /* out of memory: this piece is lost */
}

int docker_lines_feed(struct wg_buf *b, size_t cap, const char *p, size_t n, docker_line_fn *fn,
                      void *arg)
{
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        int rc;

        if (wg_buf_size(b) + take > cap)
            return -EMSGSIZE;
        if (!nl)
            return wg_buf_append(b, p, n) < 0 ? -ENOMEM : 0;
        if (wg_buf_size(b) == 0) {
            rc = fn(arg, p, take);
        } else {
            if (wg_buf_append(b, p, take) < 0)
                return -ENOMEM;
            rc = fn(arg, wg_buf_head(b), wg_buf_size(b));
            wg_buf_reset(b);
        }
        if (rc)
            return rc;
        p += take + 1;
        n -= take + 1;
    }
    return 0;
}
