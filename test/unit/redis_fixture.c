/* test/unit/redis_fixture.c - see redis_fixture.h. */
#include "redis_fixture.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

int wg_test_redis_ping(const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    char buf[16] = "";
    int fd, ok = -1;

    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0 && write(fd, "PING\r\n", 6) == 6 &&
        read(fd, buf, sizeof(buf) - 1) > 0 && strncmp(buf, "+PONG", 5) == 0)
        ok = 0;
    close(fd);
    return ok;
}

void wg_test_redis_stop(struct wg_test_redis *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
        r->pid = 0;
    }
}

int wg_test_redis_start(struct wg_test_redis *r)
{
    pid_t pid;

    if (access(WG_TEST_REDIS_SERVER, X_OK) != 0) {
        fprintf(stderr, "%s is missing: apt-get install redis-server\n", WG_TEST_REDIS_SERVER);
        return -1;
    }
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(r->logfile, O_WRONLY | O_CREAT | O_APPEND, 0600);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(WG_TEST_REDIS_SERVER, "redis-server", "--port", "0", "--unixsocket", r->sock,
              "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", r->dir,
              "--enable-debug-command", "yes", (char *)NULL);
        _exit(127);
    }
    r->pid = pid;
    for (int i = 0; i < 500; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            r->pid = 0;
            fprintf(stderr, "redis-server exited early; see %s\n", r->logfile);
            return -1;
        }
        if (wg_test_redis_ping(r->sock) == 0)
            return 0;
        usleep(10000);
    }
    wg_test_redis_stop(r);
    return -1;
}

void wg_test_redis_remove_files(struct wg_test_redis *r)
{
    unlink(r->sock);
    if (getenv("WG_TEST_KEEP_LOG") == NULL)
        unlink(r->logfile);
    rmdir(r->dir);
}

int wg_test_redis_start_in_tmp(struct wg_test_redis *r, const char *name, char *url, size_t urllen)
{
    snprintf(r->dir, sizeof(r->dir), "/tmp/wg-%s-test-XXXXXX", name);
    if (!mkdtemp(r->dir))
        return -1;
    snprintf(r->sock, sizeof(r->sock), "%s/redis.sock", r->dir);
    snprintf(r->logfile, sizeof(r->logfile), "%s/redis.log", r->dir);
    snprintf(url, urllen, "unix://%s", r->sock);
    return wg_test_redis_start(r);
}
