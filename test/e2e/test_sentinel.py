"""Redis Sentinel end to end: wakegate (role all, the test dockerd) finds the
master through three real sentinels (redis-server --sentinel) watching a real
master and replica on loopback (harness/sentinel.py), and follows failovers:

- kill -9 of the master: requests to a running session keep answering 200
  throughout, /readyz comes back to 200, a new wake works after it, and the
  session's version (`v` in Redis, "version" in the admin API) never goes back;
- SENTINEL FAILOVER while the old master stays up (+switch-master): every
  connection of wakegate moves to the new master; none is left on the old one
  (CLIENT LIST), and each connection logs that it followed.

Nothing here is optional: without Debian's redis-server or redis-sentinel
(or the test dockerd) the harness raises HarnessError and the test fails.
"""

import pathlib
import re
import subprocess
import threading
import time

import pytest

from harness import rawhttp
from harness.sentinel import RedisSentinelCluster
from harness.util import wait_for
from harness.wakegate import clean_env, wakegate_bin
from stack_util import APP_TEXT, DOMAIN, HOST, IMAGE, TOKEN, req

pytestmark = pytest.mark.docker


def sentinel_config(cluster, dockerd):
    return {
        "redis": {"sentinel": {"master": cluster.master_name, "addresses": cluster.addresses}},
        "docker": {"host": dockerd.host, "name": HOST, "max_concurrent_starts": 8},
        "admin": {"token": TOKEN},
        "sessions": {"image": IMAGE, "port": 8080, "wake_timeout": "20s"},
        "routes": [{"match": {"host": "{session}." + DOMAIN}, "access": "public"}],
        "log": {"level": "debug", "access": False},
    }


@pytest.fixture
def cluster(e2e_tmp, artifacts, request):
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:60]
    c = RedisSentinelCluster(pathlib.Path(e2e_tmp) / ("sentinel-" + name), pathlib.Path(artifacts) / ("sentinel-" + name))
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def gw(cluster, clean_engine, test_image, start_wakegate):
    g = start_wakegate(sentinel_config(cluster, clean_engine), args=["--role", "all"])
    g.wait_log(r"startup reconciliation done", timeout=20)
    g.wait_ready(timeout=15.0)
    return g


def get(gw, sid, path="/", timeout=15.0):
    r = rawhttp.send(gw.port, req(sid, path), timeout=timeout, until="responses")
    return r.responses[0] if r.responses else None


def create_and_wake(gw, sid):
    r = gw.admin("POST", "/v1/sessions", body={"id": sid}, token=TOKEN, timeout=20)
    assert r.status == 201, (r.status, r.body)
    resp = get(gw, sid, timeout=30)
    assert resp is not None and resp.status == 200 and APP_TEXT in resp.body, (resp, gw.log_tail(40))


def session_v(gw, sid):
    r = gw.admin("GET", "/v1/sessions/" + sid, token=TOKEN, timeout=3)
    if r.status != 200:
        return None
    return r.json_or_body()


class Load:
    """Requests to a running session in a loop, and its record's `v` through
    the API, until stop(); every answer is kept."""

    def __init__(self, gw, sid):
        self.gw, self.sid = gw, sid
        self.statuses = []
        self.latencies = []
        self.versions = []
        self._stop = threading.Event()
        self._t = [threading.Thread(target=self._requests, daemon=True),
                   threading.Thread(target=self._records, daemon=True)]
        for t in self._t:
            t.start()

    def _requests(self):
        while not self._stop.is_set():
            t0 = time.monotonic()
            resp = get(self.gw, self.sid, timeout=30)
            self.latencies.append(time.monotonic() - t0)
            self.statuses.append(resp.status if resp is not None else None)
            time.sleep(0.02)

    def _records(self):
        while not self._stop.is_set():
            try:
                rec = session_v(self.gw, self.sid)
            except OSError:
                rec = None
            if isinstance(rec, dict):
                self.versions.append((rec["version"], rec["state"]))
            time.sleep(0.05)

    def stop(self):
        self._stop.set()
        for t in self._t:
            t.join(timeout=40)
        # Informational (-s), never asserted.
        print("\n[sentinel] %d requests, slowest %.0f ms; %d record reads" % (
            len(self.statuses), 1000 * max(self.latencies or [0]), len(self.versions)))


def assert_never_back(versions):
    vs = [v for v, _ in versions]
    assert len(vs) >= 2, "too few record reads to tell: %s" % versions
    for a, b in zip(vs, vs[1:]):
        assert b >= a, "v went back from %d to %d: %s" % (a, b, versions)


def test_kill_master_failover(cluster, gw):
    create_and_wake(gw, "s1")
    load = Load(gw, "s1")
    try:
        time.sleep(0.5)
        old = cluster.kill_master()
        new = cluster.wait_failover(old, timeout=30)
        wait_for(lambda: gw.readyz()[0] == 200, 30, "/readyz to answer 200 after the failover")
        gw.wait_log(r"following a failover: connected to the new master", timeout=10)
        time.sleep(1.0)  # requests go on against the new master
    finally:
        load.stop()
    bad = [s for s in load.statuses if s != 200]
    assert load.statuses and not bad, "non-200 answers during the failover: %s of %d\n%s" % (
        bad[:10], len(load.statuses), gw.log_tail(60))
    assert_never_back(load.versions)
    assert new != old
    # Wakes resume after the failover.
    create_and_wake(gw, "s2")
    rec = session_v(gw, "s2")
    assert rec["state"] == "running", rec
    m = gw.metrics()
    assert m.get("wakegate_redis_failovers_total", 0) >= 1, m.get("wakegate_redis_failovers_total")
    lines = gw.log_lines()
    assert any("sentinel answered" in ln and "%s:%d" % new in ln for ln in lines)
    # doctor asks the sentinels as wakegate does, and names the new master.
    p = subprocess.run([str(pathlib.Path(wakegate_bin()).parent / "wakegatectl"), "--config",
                        str(gw.config_path), "doctor"], env=clean_env(), capture_output=True,
                       text=True, timeout=90)
    sent = [ln for ln in p.stdout.splitlines() if ln[6:23].strip() == "redis sentinel"]
    assert len(sent) == 1 and ln_ok(sent[0]) and "%s:%d, which says ROLE master" % new in sent[0], p.stdout
    redis_line = [ln for ln in p.stdout.splitlines() if ln[6:23].strip() == "redis"]
    assert redis_line and ln_ok(redis_line[0]) and "%s:%d answered PING" % new in redis_line[0], p.stdout


def ln_ok(line):
    return line[:4].strip() == "OK"


def wakegate_clients(cluster, port):
    """Clients of the redis-server on port that are wakegate's: not a
    sentinel's (they name themselves sentinel-*), not replication, not this
    CLIENT LIST itself."""
    out = []
    for line in cluster.command(port, "CLIENT", "LIST").decode().splitlines():
        f = dict(kv.split("=", 1) for kv in line.split(" ") if "=" in kv)
        if f.get("name", "").startswith("sentinel-") or f.get("cmd") == "client|list":
            continue
        if "M" in f.get("flags", "") or "S" in f.get("flags", ""):
            continue
        out.append(line)
    return out


def test_switch_master_moves_every_connection(cluster, gw):
    create_and_wake(gw, "s1")
    old = cluster.master_addr()
    assert wakegate_clients(cluster, old[1]), "wakegate has no connection on the master?"
    load = Load(gw, "s1")
    try:
        cluster.failover()
        new = cluster.wait_failover(old, timeout=30)
        wait_for(lambda: not wakegate_clients(cluster, old[1]), 15,
                 lambda: "wakegate's connections to leave the old master: %s" % wakegate_clients(cluster, old[1]))
        wait_for(lambda: gw.readyz()[0] == 200, 30, "/readyz to answer 200 after the switch")
        time.sleep(1.0)
    finally:
        load.stop()
    # The old master is up, and the sentinels make it a replica (they tell
    # it a moment after the switch: wakegate left it before).
    wait_for(lambda: cluster.command(old[1], "ROLE")[0] == b"slave", 20, "the old master to become a replica")
    assert wakegate_clients(cluster, new[1]), "wakegate is not connected to the new master"
    bad = [s for s in load.statuses if s != 200]
    assert load.statuses and not bad, "non-200 answers during the switch: %s of %d" % (bad[:10], len(load.statuses))
    assert_never_back(load.versions)
    lines = gw.log_lines()
    assert any("+switch-master" in ln for ln in lines), "no +switch-master seen"
    # Every Redis connection of the process followed to the new master.
    moved = {m.group(1) for ln in lines if "following a failover" in ln
             for m in [re.search(r"name=(\S+)", ln)] if m}
    connected = {m.group(1) for ln in lines if "connected to the master the sentinels named" in ln
                 for m in [re.search(r"name=(\S+)", ln)] if m}
    assert connected and connected <= moved, (connected, moved)
    create_and_wake(gw, "s2")


def metric(gw, name):
    return gw.metrics().get(name, 0)


def test_write_lost_in_failover_is_noticed_and_repaired(cluster, gw):
    """The replica misses the wake's writes (stopped, its link cut), then the
    master dies and the replica is promoted: the record of a running session
    is back at `asleep`. The gateway notices (log + metric, the record's
    version went back) and the orchestrator's reconciliation after the
    reconnect makes it running again from Docker's truth."""
    import os
    import signal

    r = gw.admin("POST", "/v1/sessions", body={"id": "lw"}, token=TOKEN, timeout=20)
    assert r.status == 201, (r.status, r.body)
    master = cluster.master_addr()
    replica = next(n for n in cluster.servers if n.port != master[1])
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        cluster.command(master[1], "CLIENT", "KILL", "TYPE", "replica")
        resp = get(gw, "lw", timeout=30)
        assert resp is not None and resp.status == 200, resp
        before = session_v(gw, "lw")
        assert before["state"] == "running", before
        cluster.kill_master()
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
    new = cluster.wait_failover(master, timeout=40)
    assert new[1] == replica.port
    wait_for(lambda: metric(gw, "wakegate_session_versions_lost_total") >= 1, 30,
             lambda: "the gateway to notice the lost version\n" + gw.log_tail(60))
    lost = [ln for ln in gw.log_lines() if "lost in failover" in ln and "session=lw" in ln]
    assert lost and "old_v=%d" % before["version"] in lost[0], lost
    # Docker's truth comes back: running, at a version above the one read.
    wait_for(lambda: (session_v(gw, "lw") or {}).get("state") == "running", 30,
             lambda: "lw to be running again: %s\n%s" % (session_v(gw, "lw"), gw.log_tail(60)))
    resp = get(gw, "lw", timeout=30)
    assert resp is not None and resp.status == 200 and APP_TEXT in resp.body, resp


def test_a_dead_sentinel_is_passed_over(cluster, clean_engine, test_image, start_wakegate):
    """The first sentinel listed is down from the start: connections ask the
    next one, the +switch-master watchers move on to a live one, and a
    switch is still followed."""
    cluster.sentinels[0].stop()
    g = start_wakegate(sentinel_config(cluster, clean_engine), args=["--role", "all"])
    g.wait_log(r"startup reconciliation done", timeout=20)
    g.wait_ready(timeout=15.0)
    assert any("sentinel did not help" in ln and "127.0.0.1:%d" % cluster.sentinels[0].port in ln
               for ln in g.log_lines()), g.log_tail(40)
    create_and_wake(g, "s1")
    old = cluster.master_addr(sentinel=1)
    # The watchers subscribe on a live sentinel before the switch.
    wait_for(lambda: sum("subscribed" in ln and "-sentinel" in ln and "+switch-master" in ln
                         for ln in g.log_lines()) >= 3, 15, "three watchers subscribed")
    cluster.failover()
    new = cluster.wait_failover(old, timeout=30)
    wait_for(lambda: sum("following a failover" in ln for ln in g.log_lines()) >= 3, 15,
             lambda: "every connection to follow\n" + g.log_tail(40))
    wait_for(lambda: g.readyz()[0] == 200, 15, "/readyz 200")
    assert "%s:%d" % new in [ln for ln in g.log_lines() if "following a failover" in ln][0]
    create_and_wake(g, "s2")
