"""End-to-end: the private redis-server that wakegate starts and supervises
when no redis.url is configured (redis.private, src/redis_child.c).

Each test gives its gateway a private directory under the session's tmp dir
(redis.private.dir), so nothing is written elsewhere. Processes are found
through /proc (the redis-server is a child of the wakegate pid) and stopped
by pid: wakegate's by the harness, the ones a test starts by the test.
"""

import json
import os
import re
import signal
import stat
import tempfile
import time

import pytest
import redis

from harness.procs import REGISTRY, pid_gone, proc_stat
from harness.util import wait_for

TOKEN = "priv-token"
HOST = "priv-host"


# ---------------------------------------------------------------- helpers

@pytest.fixture
def priv_dir(e2e_tmp):
    """A short private directory (the socket path must fit in 107 bytes)."""
    return tempfile.mkdtemp(prefix="rp-", dir=e2e_tmp)


def private_config(d, dockerd=None, **private):
    cfg = {"redis": {"private": dict({"dir": d}, **private)}, "admin": {"token": TOKEN}}
    if dockerd is not None:
        cfg["docker"] = {"host": dockerd.host, "name": HOST}
    return cfg


def gone(pid):
    """True when pid has exited. A zombie counts as gone; pytest is a child
    subreaper, so an orphaned one is ours to reap."""
    return pid_gone(pid, reap=True)


def redis_children(gw):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st and st[2] == gw.pid and st[0] == "redis-server" and st[1] != "Z":
                out.append(int(name))
    return out


def the_child(gw, timeout=5.0):
    kids = wait_for(lambda: redis_children(gw), timeout, "a redis-server child of wakegate pid %d" % gw.pid)
    assert len(kids) == 1, kids
    return kids[0]


def admin(gw, method, path, body=None, timeout=5.0):
    """(status, parsed JSON or text) of one admin request."""
    r = gw.admin(method, path, body=body, token=TOKEN, timeout=timeout)
    try:
        return r.status, json.loads(r.body)
    except ValueError:
        return r.status, r.body.decode(errors="replace")


def metric(gw, name):
    st, text = admin(gw, "GET", "/metrics")
    assert st == 200
    m = re.search(r"^%s (\d+)$" % re.escape(name), text, re.M)
    assert m, "no %s in /metrics" % name
    return int(m.group(1))


def socket_inodes(pid):
    out = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            m = re.match(r"socket:\[(\d+)\]$", os.readlink("/proc/%d/fd/%s" % (pid, fd)))
        except OSError:
            continue
        if m:
            out.add(m.group(1))
    return out


def tcp_inodes():
    out = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(path) as f:
            next(f)
            out.update(line.split()[9] for line in f)
    return out


def unix_listeners():
    """inode -> path of the listening unix sockets (/proc/net/unix)."""
    out = {}
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            # Num RefCount Protocol Flags Type St Inode [Path]; St 01 = listening
            if len(parts) >= 8 and parts[5] == "01":
                out[parts[6]] = parts[7]
    return out


def run_dir(d):
    return os.path.join(d, "run")


def sock_path(d):
    return os.path.join(d, "run", "redis.sock")


# ---------------------------------------------------------------- tests

def test_private_redis_is_a_supervised_child_on_a_private_socket_and_keeps_sessions(
        start_wakegate, dockerd, priv_dir):
    gw = start_wakegate(private_config(priv_dir, dockerd), args=["--role", "all"])
    child = the_child(gw)
    gw.wait_log(r"sub=redis-server msg=\"private redis-server ready\" pid=%d " % child)

    # A unix socket in a 0700 directory, and no TCP listener at all.
    st = os.lstat(run_dir(priv_dir))
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700, oct(st.st_mode)
    assert stat.S_IMODE(os.stat(priv_dir).st_mode) == 0o700
    sst = os.lstat(sock_path(priv_dir))
    assert stat.S_ISSOCK(sst.st_mode) and stat.S_IMODE(sst.st_mode) & 0o077 == 0, oct(sst.st_mode)
    inodes = socket_inodes(child)
    listeners = unix_listeners()
    assert sock_path(priv_dir) in [listeners[i] for i in inodes if i in listeners], \
        "the child does not listen on %s" % sock_path(priv_dir)
    assert not inodes & tcp_inodes(), "redis-server has TCP sockets: %s" % (inodes & tcp_inodes())
    conf = open(os.path.join(run_dir(priv_dir), "redis.conf")).read()
    assert re.search(r"^port 0$", conf, re.M) and re.search(r"^appendonly yes$", conf, re.M), conf
    with open(os.path.join(run_dir(priv_dir), "redis-server.pid")) as f:
        assert int(f.read()) == child

    gw.wait_ready()
    assert metric(gw, "wakegate_redis_private_up") == 1
    assert metric(gw, "wakegate_redis_private_restarts_total") == 0
    # The child's output is in wakegate's log, one line per line.
    gw.wait_log(r"sub=redis-server msg=output pid=%d .*text=\"The server is now ready to accept connections" % child)

    st, body = admin(gw, "POST", "/v1/sessions", {"id": "keep-me", "env": ["A=1"]})
    assert st == 201, (st, body)
    # The record is in the private server, seen through its socket.
    r = redis.Redis(unix_socket_path=sock_path(priv_dir), decode_responses=True, socket_timeout=3)
    assert r.hget("wg:session:keep-me", "id") == "keep-me"
    r.close()

    # SIGTERM: wakegate stops the child (which writes its AOF) before exiting.
    assert gw.stop() == 0
    assert gone(child), "redis-server pid %d outlived wakegate" % child
    assert any("msg=\"redis-server stopped\" pid=%d exit_status=0 signal=0" % child in line for line in gw.log_lines())
    assert not os.path.exists(os.path.join(run_dir(priv_dir), "redis-server.pid"))
    assert os.listdir(os.path.join(priv_dir, "appendonlydir")), "no AOF written"

    # The next wakegate, a new child, the same data.
    gw2 = start_wakegate(private_config(priv_dir, dockerd), args=["--role", "all"])
    child2 = the_child(gw2)
    assert child2 != child
    gw2.wait_ready()
    st, body = admin(gw2, "GET", "/v1/sessions/keep-me")
    assert st == 200 and body["id"] == "keep-me" and body["host"] == HOST, (st, body)


def test_killed_redis_server_is_logged_and_restarted_with_its_data(start_wakegate, dockerd, priv_dir):
    gw = start_wakegate(private_config(priv_dir, dockerd), args=["--role", "all"])
    child = the_child(gw)
    gw.wait_ready()
    st, body = admin(gw, "POST", "/v1/sessions", {"id": "survivor"})
    assert st == 201, (st, body)

    os.kill(child, signal.SIGKILL)
    line = gw.wait_log(r"msg=\"redis-server exited unexpectedly, restarting it\" pid=%d " % child, timeout=5)
    assert "signal=9" in line and "restart_in_ms=100" in line, line
    assert "last_output=" in line and "ready to accept connections" in line, line
    child2 = wait_for(lambda: [p for p in redis_children(gw) if p != child], 5, "a new redis-server")[0]
    gw.wait_log(r"msg=\"redis-server started again\" pid=%d restarts=1" % child2)
    # The clients reconnect by themselves; readiness comes back.
    gw.wait_ready(timeout=10)
    assert metric(gw, "wakegate_redis_private_restarts_total") == 1
    assert metric(gw, "wakegate_redis_private_up") == 1
    st, body = admin(gw, "GET", "/v1/sessions/survivor")
    assert st == 200 and body["id"] == "survivor", (st, body)
    # A write after the restart works too.
    st, body = admin(gw, "POST", "/v1/sessions", {"id": "after-restart"})
    assert st == 201, (st, body)
    assert gw.stop() == 0
    assert gone(child2)


def test_sigkill_of_wakegate_leaves_no_redis_server_behind(start_wakegate, priv_dir):
    cfg = private_config(priv_dir)
    gw = start_wakegate(cfg, args=["--role", "proxy"])
    child = the_child(gw)
    gw.wait_ready()
    gw.stop(sig=signal.SIGKILL)
    # The kernel sends it SIGTERM (setpriv --pdeathsig); it writes its AOF and exits.
    wait_for(lambda: gone(child), 5, "redis-server pid %d to exit after wakegate's SIGKILL" % child)

    gw2 = start_wakegate(cfg, args=["--role", "proxy"])
    assert the_child(gw2) != child
    gw2.wait_ready()


def test_ctrl_c_then_sigterm_stops_redis_cleanly_before_wakegate_exits(start_wakegate, priv_dir):
    """A Ctrl-C reaches the whole process group, and scripts often follow it
    with a SIGTERM (scripts/demo.sh does): the child is in a session of its
    own, so only wakegate sees the SIGINT; the SIGTERM arriving while the
    child stops must not kill wakegate before the child is gone."""
    gw = start_wakegate(private_config(priv_dir), args=["--role", "proxy"])
    child = the_child(gw)
    assert os.getsid(child) != os.getsid(gw.pid), "redis-server shares wakegate's session"
    gw.wait_ready()
    os.killpg(gw.pid, signal.SIGINT)  # the harness starts wakegate as a group leader
    os.kill(gw.pid, signal.SIGTERM)
    assert gw.wait_exit(timeout=15) == 0
    assert gone(child)
    text = "\n".join(gw.log_lines())
    assert "msg=\"redis-server stopped\" pid=%d exit_status=0 signal=0" % child in text, gw.log_tail()
    assert "exited unexpectedly" not in text


def test_stale_redis_server_in_the_pid_file_is_stopped_and_only_that(start_wakegate, priv_dir):
    cfg = private_config(priv_dir)
    # A first run writes run/redis.conf; then play "wakegate was killed and
    # its redis-server survived": start that server ourselves (by the same
    # config, so /proc shows it as this directory's server) and record it.
    gw = start_wakegate(cfg, args=["--role", "proxy"])
    the_child(gw)
    assert gw.stop() == 0
    conf = os.path.join(run_dir(priv_dir), "redis.conf")
    pidfile = os.path.join(run_dir(priv_dir), "redis-server.pid")
    stale = REGISTRY.spawn("stale-redis", ["/usr/bin/redis-server", conf], log_path=os.path.join(priv_dir, "stale.log"),
                           cwd=priv_dir)
    try:
        r = redis.Redis(unix_socket_path=sock_path(priv_dir), socket_timeout=1)
        wait_for(lambda: _pings(r), 5, "the stale redis-server")
        with open(pidfile, "w") as f:
            f.write("%d\n" % stale.pid)

        gw2 = start_wakegate(cfg, args=["--role", "proxy"])
        gw2.wait_log(r"msg=\"stopping the redis-server an earlier wakegate left running\" pid=%d " % stale.pid)
        assert stale.wait(timeout=5) == 0, "the stale server did not exit cleanly"
        child = the_child(gw2)
        assert child != stale.pid
        gw2.wait_ready()
        assert gw2.stop() == 0
    finally:
        REGISTRY.stop(stale)

    # A pid file naming a process that is not our redis-server: left alone.
    bystander = REGISTRY.spawn("bystander", ["/bin/sleep", "60"])
    try:
        with open(pidfile, "w") as f:
            f.write("%d\n" % bystander.pid)
        gw3 = start_wakegate(cfg, args=["--role", "proxy"])
        gw3.wait_log(r"not our redis-server; leaving it alone\" pidfile=\S+ pid=%d" % bystander.pid)
        gw3.wait_ready()
        assert bystander.poll() is None, "wakegate killed a process it did not start"
        assert gw3.stop() == 0
    finally:
        REGISTRY.stop(bystander)


def _pings(r):
    try:
        return r.ping()
    except redis.RedisError:
        return False


def test_server_wakegate_did_not_start_on_the_socket_is_refused_with_exit_3(start_wakegate, priv_dir):
    os.makedirs(run_dir(priv_dir), mode=0o700)
    foreign = REGISTRY.spawn("foreign-redis", [
        "/usr/bin/redis-server", "--port", "0", "--unixsocket", sock_path(priv_dir), "--unixsocketperm", "700",
        "--save", "", "--appendonly", "no", "--dir", priv_dir], log_path=os.path.join(priv_dir, "foreign.log"),
        cwd=priv_dir)
    try:
        r = redis.Redis(unix_socket_path=sock_path(priv_dir), socket_timeout=1)
        wait_for(lambda: _pings(r), 5, "the foreign redis-server")
        gw = start_wakegate(private_config(priv_dir), args=["--role", "proxy"], wait=False)
        assert gw.wait_exit(timeout=10) == 3
        assert any("a server wakegate did not start answers on the private socket" in l for l in gw.log_lines())
        assert foreign.poll() is None, "wakegate stopped a server it did not start"
    finally:
        REGISTRY.stop(foreign)


def test_two_wakegates_cannot_share_one_directory(start_wakegate, priv_dir):
    cfg = private_config(priv_dir)
    gw = start_wakegate(cfg, args=["--role", "proxy"])
    child = the_child(gw)
    other = start_wakegate(cfg, args=["--role", "proxy"], wait=False)
    assert other.wait_exit(timeout=10) == 3
    assert any("redis.private.dir is used by another wakegate" in l and "other_pid=%d" % gw.pid in l
               for l in other.log_lines()), other.log_tail()
    # The first one and its server are untouched.
    assert not gone(child) and redis_children(gw) == [child]
    gw.wait_ready()


def test_missing_redis_server_is_a_configuration_error(start_wakegate, priv_dir):
    missing = os.path.join(priv_dir, "no-such-redis-server")
    gw = start_wakegate(private_config(priv_dir, server=missing), wait=False)
    assert gw.wait_exit(timeout=10) == 3
    err = "\n".join(gw.log_lines())
    assert 'redis.private.server: redis-server "%s" cannot be run: No such file or directory' % missing in err, err
    assert 'apt-get install redis-server' in err
    assert not os.path.exists(run_dir(priv_dir)), "a refused configuration created files"

    # --check-config refuses it the same way, and a name not in PATH too.
    cfg_path = os.path.join(priv_dir, "check.yaml")
    with open(cfg_path, "w") as f:
        f.write("redis:\n  private:\n    server: no-such-redis-server\n")
    r = start_wakegate.run(["--check-config", "--config", cfg_path], env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 3, r
    assert '%s:3: redis.private.server: "no-such-redis-server" not found in PATH (/usr/bin:/bin)' % cfg_path in r.stderr
    assert "apt-get install redis-server" in r.stderr


def test_check_config_names_the_redis_in_use(start_wakegate, priv_dir):
    cfg_path = os.path.join(priv_dir, "c.yaml")
    with open(cfg_path, "w") as f:
        f.write("redis: {private: {dir: %s}}\n" % priv_dir)
    r = start_wakegate.run(["--check-config", "--config", cfg_path])
    assert r.returncode == 0, r
    assert re.search(r"^  redis +private: /\S*redis-server, dir %s, unix://%s$" % (re.escape(priv_dir), re.escape(sock_path(priv_dir))),
                     r.stdout, re.M), r.stdout
    assert not os.path.exists(run_dir(priv_dir)), "--check-config must not create the directory"

    r = start_wakegate.run(["--check-config", "--config", cfg_path], env={"WAKEGATE_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert r.returncode == 0 and re.search(r"^  redis +redis://127.0.0.1:1/0$", r.stdout, re.M), r.stdout

    with open(cfg_path, "w") as f:
        f.write("redis: {private: {enabled: false}}\n")
    r = start_wakegate.run(["--check-config", "--config", cfg_path])
    assert r.returncode == 0 and re.search(r"^  redis +none \(redis.private.enabled is false\)$", r.stdout, re.M), r.stdout


def test_harness_default_starts_no_redis(start_wakegate, recording_upstream):
    """Configs without a redis key get redis.private.enabled: false from the
    harness (test/e2e/README.md), so static-route tests start no server."""
    gw = start_wakegate({"routes": [{"match": {"path_prefix": "/"}, "upstream": recording_upstream.address}]})
    assert "enabled: false" in open(gw.config_path).read()
    time.sleep(0.2)
    assert redis_children(gw) == []
    assert not any("sub=redis-server" in l for l in gw.log_lines())
    st, body = gw.readyz()
    assert st == 200, body
