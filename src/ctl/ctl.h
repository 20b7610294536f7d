/* src/ctl/ctl.h - wakegatectl, the operator CLI (also `wakegate ctl ...`):
 * what the wakegatectl executable and `wakegate ctl` call.
 *
 * It talks to a running gateway's admin API over HTTP (libcurl) and, for
 * `doctor`, to Redis (hiredis, synchronous) and the Docker engine (libcurl)
 * directly. It is a short-lived process: blocking calls with bounded
 * timeouts are fine here, unlike in the proxy.
 *
 * Exit codes (also in `wakegatectl --help` and docs/cli.md): */
#ifndef WG_SRC_CTL_CTL_H
#define WG_SRC_CTL_CTL_H

#include <stddef.h>
#include <stdint.h>

enum wg_ctl_exit {
    WG_CTL_OK = 0,          /* done; doctor: every check OK or WARN */
    WG_CTL_FAILED = 1,      /* the operation failed (502, 504, 5xx); doctor: a check FAILed */
    WG_CTL_USAGE = 2,       /* bad command line (or the API answered 400) */
    WG_CTL_CONFIG = 3,      /* the configuration did not load */
    WG_CTL_UNREACHABLE = 4, /* no HTTP answer from the admin API: connect error, timeout */
    WG_CTL_NOT_FOUND = 5,   /* 404: no such session */
    WG_CTL_CONFLICT = 6,    /* 409: the API refused the command in this state */
    WG_CTL_AUTH = 7,        /* 401/403, or the gateway has no admin token configured */
};

/* Runs the CLI; argv[0] is the program name ("wakegatectl" or "ctl").
 * Returns one of enum wg_ctl_exit. */
int wg_ctl_main(int argc, char **argv);

/* Small pure helpers, public for the unit tests. */

/* A duration for a human, to the second: "12s", "4m05s", "2h", "2h05m",
 * "3d", "3d04h". Negative values print as "0s". Returns out. */
char *wg_ctl_fmt_duration(int64_t ms, char *out, size_t outlen);

/* The largest unit only, for "... ago": "20s", "3m", "2h", "4d". */
char *wg_ctl_fmt_ago(int64_t ms, char *out, size_t outlen);

/* The exit code for an HTTP status from the admin API; err is the API's
 * {"error": ...} text (may be NULL). */
int wg_ctl_exit_for_status(long status, const char *err);

#endif
