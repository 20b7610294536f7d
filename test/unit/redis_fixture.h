/* test/unit/redis_fixture.h - a private redis-server for unit tests that
 * need the real thing: on a unix socket in the caller's directory, no
 * persistence, killed by pid (and with the test process, via PDEATHSIG).
 * A missing redis-server is a failure, never a skip. */
#ifndef WG_TEST_REDIS_FIXTURE_H
#define WG_TEST_REDIS_FIXTURE_H

#include <sys/types.h>

#define WG_TEST_REDIS_SERVER "/usr/bin/redis-server"

struct wg_test_redis {
    pid_t pid;
    char dir[64];      /* set by the caller (a mkdtemp directory) */
    char sock[100];    /* set by the caller */
    char logfile[128]; /* set by the caller */
};

/* Starts redis-server on r->sock (DEBUG enabled, for DEBUG SLEEP) and waits
 * until it answers PING. Returns 0 or -1 with a message on stderr. */
int wg_test_redis_start(struct wg_test_redis *r);
/* Makes /tmp/wg-<name>-test-XXXXXX with redis.sock and redis.log in it,
 * writes "unix://<socket>" into url and starts the server there. Returns 0
 * or -1. */
int wg_test_redis_start_in_tmp(struct wg_test_redis *r, const char *name, char *url, size_t urllen);
/* Kills it by pid and reaps it; idempotent. */
void wg_test_redis_stop(struct wg_test_redis *r);
/* Removes the socket, the log (unless WG_TEST_KEEP_LOG is set) and the
 * directory, once the server is stopped. */
void wg_test_redis_remove_files(struct wg_test_redis *r);
/* 0 when the server at the unix socket path answers PING. */
int wg_test_redis_ping(const char *path);

#endif
