"""End-to-end tests of "Sandboxed session containers" (issue 10): the limits,
capabilities and privileges wakegate gives a session's container, seen by
the engine itself, and what a fork bomb and a memory hog inside a session
do to it and to its neighbours.

Everything is real: the wakegate binary (role all), a redis-server and the
harness's private dockerd with the FROM-scratch busybox test image. Small
limits (64 MiB, 64 pids, half a CPU) keep the bomb and the hog quick and
harmless to the machine. Every wait is bounded.
"""

import time

import pytest

from stack_util import APP_TEXT, IMAGE, gw_config

pytestmark = pytest.mark.docker

MEMORY = 64 << 20
PIDS = 64
NANO_CPUS = 500_000_000

# The session's command for the hog: httpd serves (in the background), the
# main process waits for /tmp/hog and then becomes `tail /dev/zero`, which
# buffers a line that never ends until the kernel's OOM killer ends it.
HOG_CMD = ["/bin/sh", "-c",
           "httpd -p 8080 -h /www; while [ ! -e /tmp/hog ]; do sleep 0.1; done; exec tail /dev/zero"]


def sandbox_config(stack, **sessions):
    cfg = gw_config(stack.redis_server.url, stack.dockerd)
    cfg["sessions"]["limits"] = {"memory": "64MiB", "cpus": "0.5", "pids": PIDS}
    cfg["sessions"].update(sessions)
    return cfg


def wake(stack, sid, **fields):
    stack.create(sid, **fields)
    r = stack.get(sid, "/")
    assert r.status == 200 and APP_TEXT in r.body, (r, r.body[:200])
    rec = stack.record(sid)
    assert rec["state"] == "running", rec
    return rec["container_id"]


def pids_cgroup(dockerd, cid):
    """The directory of the container's pids cgroup on this host (v1 or v2),
    from its init's /proc/PID/cgroup."""
    pid = dockerd.inspect(cid)["State"]["Pid"]
    with open("/proc/%d/cgroup" % pid) as f:
        lines = f.read().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            return "/sys/fs/cgroup/pids" + path
    for line in lines:
        if line.startswith("0::"):
            return "/sys/fs/cgroup" + line[3:]
    raise AssertionError("no pids cgroup for %s: %r" % (cid, lines))


def read_cg(d, name):
    with open("%s/%s" % (d, name)) as f:
        return f.read().strip()


# ---------------------------------------------------------------- the HostConfig

def test_inspect_shows_limits_and_dropped_privileges(stack):
    stack.start(sandbox_config(stack))
    cid = wake(stack, "sb-inspect")
    c = stack.dockerd.inspect(cid)
    hc = c["HostConfig"]
    assert hc["Memory"] == MEMORY, hc
    assert hc["MemorySwap"] == MEMORY, hc  # no swap beyond the limit
    assert hc["NanoCpus"] == NANO_CPUS, hc
    assert hc["PidsLimit"] == PIDS, hc
    assert hc["CapDrop"] == ["ALL"], hc
    assert not hc.get("CapAdd"), hc
    assert hc["SecurityOpt"] == ["no-new-privileges"], hc
    assert hc["Init"] is True, hc
    assert hc["ReadonlyRootfs"] is False, hc

    # The process really runs without capabilities and with no_new_privs.
    status = stack.dockerd.exec(cid, "cat", "/proc/1/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["CapEff"].strip(), 16) == 0, fields["CapEff"]
    assert int(fields["CapBnd"].strip(), 16) == 0, fields["CapBnd"]
    assert fields["NoNewPrivs"].strip() == "1", fields
    # Without CAP_CHOWN even root in the container cannot give a file away.
    r = stack.dockerd.exec(cid, "sh", "-c", "touch /tmp/f && chown 65534 /tmp/f", check=False)
    assert r.returncode != 0, r


def test_defaults_are_never_unlimited(stack):
    cfg = gw_config(stack.redis_server.url, stack.dockerd)
    stack.start(cfg)
    cid = wake(stack, "sb-defaults")
    hc = stack.dockerd.inspect(cid)["HostConfig"]
    assert hc["Memory"] == 1 << 30, hc
    assert hc["NanoCpus"] == 1_000_000_000, hc
    assert hc["PidsLimit"] == 512, hc
    assert hc["CapDrop"] == ["ALL"] and hc["SecurityOpt"] == ["no-new-privileges"], hc


def test_capabilities_read_only_root_and_user(stack):
    stack.start(sandbox_config(stack, capabilities={"add": ["cap_chown"]}, read_only_root=True,
                               user="0:0"))
    cid = wake(stack, "sb-ro")
    c = stack.dockerd.inspect(cid)
    hc = c["HostConfig"]
    assert hc["CapDrop"] == ["ALL"] and hc["CapAdd"] == ["CHOWN"], hc
    assert hc["ReadonlyRootfs"] is True and "/tmp" in hc["Tmpfs"], hc
    assert c["Config"]["User"] == "0:0", c["Config"]
    # The root file system refuses writes; /tmp takes them; CHOWN is back.
    r = stack.dockerd.exec(cid, "touch", "/www/x", check=False)
    assert r.returncode != 0 and "Read-only file system" in r.stderr + r.stdout, r
    stack.dockerd.exec(cid, "sh", "-c", "touch /tmp/f && chown 65534 /tmp/f")


def test_read_only_root_with_a_bind_on_tmp(stack, tmp_path):
    """The bind is the writable /tmp: no tmpfs beside it, which the engine
    would refuse as a duplicate mount point and fail the wake."""
    tmp_path.chmod(0o1777)
    stack.start(sandbox_config(stack, read_only_root=True, binds={"allow": [str(tmp_path)]}))
    cid = wake(stack, "sb-ro-tmp", binds=["%s:/tmp" % tmp_path])
    hc = stack.dockerd.inspect(cid)["HostConfig"]
    assert hc["ReadonlyRootfs"] is True and not hc.get("Tmpfs"), hc
    stack.dockerd.exec(cid, "sh", "-c", "echo kept > /tmp/f")
    assert (tmp_path / "f").read_text() == "kept\n"


def test_user_runs_the_app(stack):
    stack.start(sandbox_config(stack, user="65534:65534"))
    cid = wake(stack, "sb-user")
    assert stack.dockerd.exec(cid, "id", "-u").stdout.strip() == "65534"
    # The init and the app (busybox's httpd) run as that user too.
    top = stack.dockerd.cli("top", cid, "-o", "pid,uid,comm").stdout
    rows = [line.split() for line in top.splitlines()[1:] if line.strip()]
    assert len(rows) >= 2 and all(row[1] == "65534" for row in rows), top


def test_missing_runtime_fails_the_wake_naming_it(stack):
    stack.start(sandbox_config(stack, runtime="wg-no-such-runtime"))
    sid = "sb-runtime"
    stack.create(sid)
    r = stack.get(sid, "/")
    assert r.status >= 500, r
    rec = stack.wait_state(sid, "failed", timeout=10)
    assert "no runtime" in rec["error"] and "wg-no-such-runtime" in rec["error"], rec
    assert "sessions.runtime" in rec["error"], rec
    assert stack.dockerd.api_json("GET", "/containers/json", params={"all": "1"}) == []


# ---------------------------------------------------------------- abuse from inside

def test_fork_bomb_is_capped_and_neighbours_answer(stack):
    stack.start(sandbox_config(stack))
    bomb = wake(stack, "sb-bomb")
    wake(stack, "sb-calm")

    cg = pids_cgroup(stack.dockerd, bomb)
    assert read_cg(cg, "pids.max") == str(PIDS)
    # The classic bomb, detached, in the session's container: each shell
    # forks a copy of itself and recurses, forever.
    stack.dockerd.cli("exec", "-d", bomb, "sh", "-c", "f() { f & f; }; f")
    seen = []
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        n = int(read_cg(cg, "pids.current"))
        seen.append(n)
        assert n <= PIDS, seen
        # The neighbour answers while the bomb runs.
        r = stack.get("sb-calm", "/?during-bomb")
        assert r.status == 200 and APP_TEXT in r.body, r
    # The kernel refused the forks past the cap ("max N" counts them).
    refused = int(read_cg(cg, "pids.events").split()[1])
    assert refused > 0, (read_cg(cg, "pids.events"), seen)
    print("\n[bomb] pids seen %r, forks refused %d" % (seen[:20], refused))
    for _ in range(5):
        r = stack.get("sb-calm", "/?after-bomb")
        assert r.status == 200 and APP_TEXT in r.body, r
    stack.dockerd.remove(bomb)


def test_memory_hog_is_oom_killed_and_the_session_says_so(stack):
    stack.start(sandbox_config(stack))
    sid = "sb-hog"
    cid = wake(stack, sid, cmd=HOG_CMD)
    since = time.time()
    stack.dockerd.exec(cid, "touch", "/tmp/hog")
    rec = stack.wait_state(sid, "failed", timeout=30)
    assert rec["error"] == "the container was OOM-killed", rec
    assert stack.dockerd.inspect(cid)["State"]["OOMKilled"] is True
    assert "oom" in [e["Action"] for e in stack.docker_events(since, sid)]
    last = stack.events(sid, "transition")[-1]
    assert (last["from"], last["to"]) == ("running", "failed"), last
    assert last["detail_json"]["reason"] == "oom", last
    # The crash rules: an OOM is not restarted (it would only be killed again).
    time.sleep(1)
    assert stack.record(sid)["state"] == "failed"
    assert [a for a in stack.actions(since, sid) if a in ("start", "create")] == []
