"""What the demo and the tests leave behind.

- scripts/demo.sh with an engine of its own, stopped with Ctrl-C (SIGINT to
  its process group, as a terminal sends it): wakegate's shutdown lines are in
  its log, the engine is stopped and nothing is left mounted under the demo's
  directory, no process of it remains and the directory can be removed; while
  it runs, `wakegate` and `wakegatectl` are on PATH and work as the README
  writes them (no --config), and everything the demo listens on is loopback.
- `wakegatectl doctor` says SKIP, and why, for a check it could not run.
- headless Chromium leaves no profile or singleton directory in /tmp.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import urllib.request

import pytest

from browser_util import Chromium
from demo_util import DemoScript
from harness.dockerd import pick_subnet
from harness.procs import processes_matching
from harness.util import free_port, mounts_under, umount_all
from harness.wakegate import clean_env, wakegate_bin

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SESSION = "s-demo"


class Demo(DemoScript):
    def ctrl_c(self, timeout=120):
        return super().ctrl_c(timeout)


def tcp_listeners():
    """[(local address, port, pid)] of every listening TCP socket (ss -ltnp)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, timeout=10, check=True).stdout
    found = []
    for line in out.splitlines():
        cols = line.split()
        addr, _, port = cols[3].rpartition(":")
        for pid in re.findall(r"pid=(\d+)", line):
            found.append((addr, int(port), int(pid)))
    return found


def new_tmp_entries(before):
    """Entries of /tmp made since `before` that look like the demo's stack
    (wakegate, its engine). Other programs share /tmp meanwhile (other test
    runs make wg-redis-test-*, wg-e2e-*), so only these names count."""
    marks = ("wakegate", "docker", "containerd")
    return sorted(e for e in set(os.listdir("/tmp")) - before if any(m in e for m in marks))


@pytest.mark.docker
def test_demo_ctrl_c_keeps_the_shutdown_log_and_leaves_nothing(e2e_tmp, artifacts):
    """No engine given: demo.sh starts dockerd itself. Its engine gets a
    bridge of the test's (no iptables), so nothing outside this machine is
    touched."""
    bridge = "wgh%dn0" % os.getpid()
    subnet = pick_subnet()
    gateway = next(subnet.hosts())
    subprocess.run(["ip", "link", "del", bridge], capture_output=True)
    for cmd in (["ip", "link", "add", "name", bridge, "type", "bridge"],
                ["ip", "addr", "add", "%s/%d" % (gateway, subnet.prefixlen), "dev", bridge],
                ["ip", "link", "set", bridge, "up"]):
        subprocess.run(cmd, check=True, capture_output=True)
    tmp_before = set(os.listdir("/tmp"))
    # A short path: containerd's sockets live under the engine's exec root.
    state = tempfile.mkdtemp(prefix="qh-", dir="/tmp")
    bindir = os.path.join(state, "bin")
    port, admin = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("WAKEGATE_DOCKER_HOST", "DOCKER_HOST")}
    env.update(WAKEGATE_DEMO_DIR=state, WAKEGATE_DEMO_PORT=str(port), WAKEGATE_DEMO_ADMIN=str(admin),
               WAKEGATE_DEMO_OWN_DOCKERD="1", WAKEGATE_DEMO_BINDIR=bindir,
               WAKEGATE_DEMO_DOCKERD_FLAGS="--bridge=%s --iptables=false --ip-masq=false "
                                           "--ip-forward=false --userland-proxy=false" % bridge)
    demo = Demo(env, artifacts / "demo-hygiene.log")
    dockerd_pid = wg_pid = None
    rc = None
    try:
        demo.wait_line("quickstart: ready", timeout=900)
        out = "\n".join(demo.lines)
        wg_pid = int(re.search(r"wakegate is running \(pid (\d+)\) on 127\.0\.0\.1 only", out).group(1))
        dockerd_pid = int(open(os.path.join(state, "docker", "dockerd.pid")).read())
        assert mounts_under(os.path.join(state, "docker")), "the engine mounts nothing? the test proves nothing"
        with urllib.request.urlopen("http://127.0.0.1:%d/s/%s/?incr=1" % (port, SESSION), timeout=60) as r:
            assert r.status == 200 and 'id="counter">1<' in r.read().decode()

        # Built without the tests: the demo's packages have no cmocka.
        deps = subprocess.run(["meson", "introspect", os.path.join(ROOT, "build-demo"), "--dependencies"],
                              capture_output=True, text=True, timeout=60, check=True).stdout
        names = {d["name"] for d in json.loads(deps)}
        assert "libuv" in names and "cmocka" not in names, names

        # On PATH as the README writes them: no --config, no WAKEGATE_*.
        shell = clean_env({"PATH": "%s:/usr/bin:/bin:/usr/sbin:/sbin" % bindir})
        ver = subprocess.run(["wakegate", "--version"], capture_output=True, text=True, env=shell, timeout=10)
        assert ver.returncode == 0 and "wakegate" in ver.stdout, ver
        ls = subprocess.run(["wakegatectl", "ls"], capture_output=True, text=True, env=shell, timeout=20)
        assert ls.returncode == 0 and SESSION in ls.stdout and "running" in ls.stdout, ls
        assert "%s/wakegatectl ls" % bindir in out, out   # what the script tells the reader
        shown = subprocess.run(["wakegatectl", "--json", "show", SESSION], capture_output=True, text=True,
                               env=shell, timeout=20)
        assert shown.returncode == 0 and json.loads(shown.stdout)["state"] == "running", shown
        # Its doctor never says OK for a check it did not run.
        doc = subprocess.run(["wakegatectl", "doctor"], capture_output=True, text=True, env=shell, timeout=120)
        (artifacts / "demo-hygiene-doctor.txt").write_text(doc.stdout + doc.stderr)
        for line in doc.stdout.splitlines():
            assert not (line.startswith("OK") and "not probed" in line), doc.stdout
        iso = [ln for ln in doc.stdout.splitlines() if "isolation admin" in ln]
        assert iso and (iso[0].startswith("OK") and "refused a probe container" in iso[0]
                        or iso[0].startswith("SKIP") and "not probed: " in iso[0]), doc.stdout

        # It listens on loopback only: wakegate on its two ports, its
        # redis-server and its engine on no TCP port at all.
        ours = set(processes_matching(state)) | {wg_pid}
        # (Each worker loop listens on the public port with a socket of its
        # own, SO_REUSEPORT: one address, as many sockets as loops.)
        mine = [(a, p) for a, p, pid in tcp_listeners() if pid in ours]
        assert sorted(set(mine)) == sorted([("127.0.0.1", port), ("127.0.0.1", admin)]), mine

        # A mount the engine did not clean up (as after an engine that died):
        # the script unmounts whatever is left under its engine's directory.
        leftover = os.path.join(state, "docker", "exec", "leftover")
        os.makedirs(leftover)
        subprocess.run(["mount", "--bind", leftover, leftover], check=True)
        # The session network the wake made: its bridge must not outlive
        # the engine on the host.
        nets = subprocess.run(["docker", "-H", "unix://%s/docker/docker.sock" % state, "network", "ls", "-q",
                               "--filter", "label=wakegate.network"], capture_output=True, text=True, timeout=30)
        bridges = [subprocess.run(["docker", "-H", "unix://%s/docker/docker.sock" % state, "network", "inspect",
                                   "-f", '{{index .Options "com.docker.network.bridge.name"}}', n],
                                  capture_output=True, text=True, timeout=30).stdout.strip()
                   for n in nets.stdout.split()]
        assert bridges and all(b.startswith("wgs-") for b in bridges), (nets.stdout, bridges)
        rc = demo.ctrl_c()
        left = [b for b in bridges if os.path.exists("/sys/class/net/" + b)]
        assert not left, "the demo left its session network's bridge on the host: %s" % left
    finally:
        if rc is None:
            demo.kill()
            for pid in processes_matching(state):
                os.kill(pid, signal.SIGKILL)
        demo.log.close()
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        mounted = mounts_under(state)
        umount_all(state)  # also when a check below fails: the test leaves nothing
    try:
        check_after_ctrl_c(demo, rc, state, mounted, dockerd_pid, wg_pid, tmp_before)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def check_after_ctrl_c(demo, rc, state, mounted, dockerd_pid, wg_pid, tmp_before):
    stdout = "\n".join(demo.lines)
    assert rc == 0, (rc, stdout)
    # The shutdown lines, to the last one (the private redis-server stopped).
    log = open(os.path.join(state, "wakegate.log")).read()
    tail = log[log.index('msg="stop signal, draining"'):]
    assert "signal=SIGTERM" in tail.splitlines()[0], tail
    assert 'msg="connections closed and sleeps settled, exiting"' in tail, tail
    assert 'msg="redis-server stopped"' in tail.splitlines()[-1], tail
    # The engine stopped, nothing mounted, nothing running.
    assert "stopping the Docker engine it started" in stdout, stdout
    assert not os.path.exists("/proc/%d" % dockerd_pid), "dockerd left running"
    assert not os.path.exists("/proc/%d" % wg_pid), "wakegate left running"
    assert mounted == [], mounted
    assert not processes_matching(state)
    # Its directory goes with an ordinary rm, and nothing else of it is in /tmp.
    shutil.rmtree(state)
    assert not os.path.exists(state)
    assert new_tmp_entries(tmp_before) == []


def ctl(*args, env=None, timeout=60):
    ctl_bin = os.path.join(os.path.dirname(str(wakegate_bin())), "wakegatectl")
    return subprocess.run([ctl_bin, *args], env=clean_env(env), capture_output=True, text=True, timeout=timeout)


def doctor_lines(stdout):
    lines = {}
    for line in stdout.splitlines():
        assert line[4:6] == "  " and line[23] == " ", line
        lines[line[6:23].strip()] = (line[:4].strip(), line[24:])
    return lines


def test_doctor_says_skip_and_why_for_a_check_it_did_not_run(tmp_path):
    """No Docker engine answers and no Redis is configured: the isolation
    checks cannot run. They say SKIP with the reason, never OK."""
    cfg = tmp_path / "wakegate.yaml"
    cfg.write_text(
        'listen: "127.0.0.1:%d"\n'
        'admin: { listen: "127.0.0.1:%d" }\n'
        'redis: { private: { enabled: false } }\n'
        'docker: { host: "unix://%s/nothing.sock" }\n'
        'sessions: { image: "wakegate-test:latest", port: 8080 }\n'
        'routes:\n  - match: { path_prefix: "/" }\n    upstream: "127.0.0.1:9"\n'
        % (free_port(), free_port(), tmp_path))
    p = ctl("--config", str(cfg), "doctor", env={"WAKEGATE_ADMIN_TOKEN": "t" * 32})
    lines = doctor_lines(p.stdout)
    assert p.returncode == 1, p.stdout  # the admin API and the engine FAIL
    assert lines["docker"][0] == "FAIL" and lines["admin healthz"][0] == "FAIL", p.stdout
    for check in ("admin readyz", "admin token"):
        assert lines[check] == ("SKIP", "not run: the admin API does not answer"), p.stdout
    st, detail = lines["isolation admin"]
    assert st == "SKIP" and detail.startswith("not probed: the Docker engine does not answer"), p.stdout
    st, detail = lines["isolation redis"]
    assert st == "SKIP" and "no redis.url configured" in detail, p.stdout
    pj = ctl("--config", str(cfg), "doctor", "--json", env={"WAKEGATE_ADMIN_TOKEN": "t" * 32})
    by = {c["check"]: c for c in json.loads(pj.stdout)}
    assert pj.returncode == 1
    assert {k for k, c in by.items() if c["status"] == "SKIP"} == {
        "admin readyz", "admin token", "isolation admin", "isolation redis"}, pj.stdout


def test_chromium_leaves_nothing_in_tmp(e2e_tmp, artifacts):
    d = tempfile.mkdtemp(prefix="chromium-hyg-", dir=e2e_tmp)
    b = Chromium(d, artifacts / "chromium-hygiene.log")
    try:
        assert b.page_ws_url()
        # Its profile is in d, and the singleton directory the profile points
        # to is in d's tmp, not in /tmp.
        sock = os.readlink(os.path.join(d, "profile", "SingletonSocket"))
        assert sock.startswith(os.path.join(d, "tmp", "org.chromium.")), sock
    finally:
        b.stop()
    assert not os.path.exists(d), os.listdir(d)
