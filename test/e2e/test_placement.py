"""Placement across two Docker hosts, a lost host, and the re-placement of
its sessions (issue 15).

Two private dockerds (the session's and a second one this module starts),
an orchestrator for each (role orchestrator, docker.name pa and pb, one
shared redis-server, docker.heartbeat_ttl 3s), and one gateway with role
proxy through which every session is created and requested: the admin API
runs in a proxy-only gateway and speaks only to Redis.

- Sessions spread over both hosts by load; a host at docker.max_sessions
  gets none; a template with placement labels lands only on the host that
  has them; with both hosts full a create answers 503 with the reason.
- pb's orchestrator and dockerd are killed: within the heartbeat's TTL (and
  a sweep period) pb is marked lost and its sessions are `lost`; a request
  to one of them wakes it on pa (a 200 after the wake wait) and the record
  says so (host, epoch, a `replaced` event). A pinned session is not moved.
"""

import json
import os
import pathlib
import signal
import sys
import time

import pytest

import bus_util
import stack_util
from harness import image, rawhttp
from harness.dockerd import Dockerd
from harness.util import wait_for

TOKEN = stack_util.TOKEN
TTL = "3s"


@pytest.fixture(scope="module")
def dockerd_b(e2e_tmp, artifacts):
    """A second private dockerd (its own containerd and bridge) with the test image."""
    base = pathlib.Path(e2e_tmp) / "docker-b"
    logs = pathlib.Path(artifacts) / "docker-b"
    logs.mkdir(parents=True, exist_ok=True)
    d = Dockerd(base, logs)
    try:
        d.start()
        image.build_image(d, image.TEST_IMAGE)
        yield d
    finally:
        errors = d.stop()
        if errors:
            sys.stderr.write("placement: dockerd-b cleanup: %s\n" % "; ".join(errors))


def orch_cfg(redis_url, dockerd, name, max_sessions, labels=None):
    cfg = stack_util.orch_config(redis_url, dockerd, wake_timeout="15s")
    cfg["docker"].update({"name": name, "max_sessions": max_sessions, "heartbeat_ttl": TTL})
    if labels:
        cfg["docker"]["labels"] = labels
    cfg["templates"] = templates()
    return cfg


def templates():
    base = {"image": stack_util.IMAGE, "port": 8080}
    return {"ssd": dict(base, placement={"labels": {"disk": "ssd"}}),
            "pinned": dict(base, placement={"pin": True})}


def gw_cfg(redis_url):
    return {
        "redis": {"url": redis_url},
        "docker": {"name": "gw"},
        "admin": {"token": TOKEN},
        "sessions": {"image": stack_util.IMAGE, "port": 8080, "wake_timeout": "15s"},
        "templates": templates(),
        "routes": [{"match": {"host": "{session}." + stack_util.DOMAIN}, "access": "public"}],
        "log": {"level": "debug", "access": True},
    }


def create(gw, sid, **body):
    r = gw.admin("POST", "/v1/sessions", body=dict(body, id=sid), token=TOKEN, timeout=10.0)
    return r.status, r.json_or_body()


def get(gw, sid, timeout=30.0):
    r = rawhttp.send(gw.port, stack_util.req(sid), timeout=timeout, until="responses")
    assert r.responses, "no answer for %s within %.0fs (got %r); gateway tail:\n%s" % (
        sid, timeout, r.data[:300], gw.log_tail(30))
    return r.responses[0]


def test_placement_spread_max_labels_and_a_lost_host(redis_server, clean_engine, test_image, dockerd_b,
                                                     start_wakegate):
    bus = stack_util._Bus(redis_server, clean_engine, start_wakegate)
    r = bus.r
    pa = start_wakegate(orch_cfg(redis_server.url, clean_engine, "pa", 4), args=["--role", "orchestrator"])
    pb = start_wakegate(orch_cfg(redis_server.url, dockerd_b, "pb", 3, {"disk": "ssd"}),
                        args=["--role", "orchestrator"])
    for o in (pa, pb):
        o.wait_log(r"startup reconciliation done", timeout=20)
        o.wait_ready(timeout=10)
    gw = start_wakegate(gw_cfg(redis_server.url), args=["--role", "proxy"])
    gw.wait_ready(timeout=10)
    wait_for(lambda: r.exists("wg:host:pa") and r.exists("wg:host:pb"), timeout=10, what="both heartbeats")
    assert set(r.zrange("wg:hosts", 0, -1)) == {"pa", "pb"}
    hb = wait_for(lambda: (lambda h: h if h["cpus"] >= 1 else None)(json.loads(r.get("wg:host:pb"))),
                  timeout=5, what="pb's heartbeat with the engine's figures")
    assert hb["max_sessions"] == 3 and hb["labels"] == {"disk": "ssd"}, hb
    assert hb["cpus"] >= 1 and hb["mem_total"] > 0, hb
    assert 0 < r.pttl("wg:host:pb") <= 3000

    # Spread by load: least homed first (ties by name).
    hosts = {}
    for sid in ("s1", "s2", "s3", "s4"):
        st, body = create(gw, sid)
        assert st == 201, (st, body)
        hosts[sid] = body["host"]
        assert body["epoch"] == 1, body
    assert sorted(hosts.values()) == ["pa", "pa", "pb", "pb"], hosts
    # Labels: only pb has disk=ssd; it is then at its max (3).
    st, body = create(gw, "ssd1", template="ssd")
    assert st == 201 and body["host"] == "pb", (st, body)
    # pb full: the next ones go to pa until pa is full too.
    for sid in ("s5", "s6"):
        st, body = create(gw, sid)
        assert st == 201 and body["host"] == "pa", (st, body)
    st, body = create(gw, "s7")
    assert st == 503 and "every live host is full" in body["error"], (st, body)
    st, body = create(gw, "ssd2", template="ssd")
    assert st == 503, (st, body)
    assert r.hgetall("wg:hostload") == {"pa": "4", "pb": "3"}
    assert not r.exists("wg:session:s7")
    wait_for(lambda: json.loads(r.get("wg:host:pa"))["sessions"] == 4, timeout=5, what="pa's heartbeat count")
    m = gw.admin("GET", "/metrics").body.decode()
    assert 'wakegate_placements_total{outcome="placed"} 7' in m, m
    assert 'wakegate_placements_total{outcome="full"} 2' in m, m

    # Make room on pa for the re-placement, and run a session on pb.
    st, _ = gw.admin("DELETE", "/v1/sessions/s6?force=1", token=TOKEN).status, None
    assert st in (200, 202), st
    wait_for(lambda: r.hget("wg:hostload", "pa") == "3", timeout=15, what="s6 destroyed")
    on_b = [s for s, h in hosts.items() if h == "pb"][0]
    resp = get(gw, on_b)
    assert resp.status == 200 and stack_util.APP_TEXT in resp.body, (resp.status, resp.body[:200])
    assert bus.record(on_b)["state"] == "running"
    st, body = create(gw, "pin1", template="pinned", host="pb")
    assert st == 201 and body["host"] == "pb" and body["pin"] is True, (st, body)

    # pb dies: its orchestrator and its engine.
    t0 = time.monotonic()
    os.kill(pb.proc.pid, signal.SIGKILL)
    dockerd_b.kill_dockerd()
    wait_for(lambda: r.zscore("wg:lost_hosts", "pb") is not None, timeout=10, what="pb marked lost")
    lost_after = time.monotonic() - t0
    wait_for(lambda: all(bus.record(s)["state"] == "lost" for s in (on_b, "ssd1", "pin1")),
             timeout=10, what="pb's sessions lost")
    assert lost_after < 3 + 1 + 2, lost_after  # the TTL, a sweep period, slack
    ev = [e for e in bus_util.events(r, None) if e.get("type") == "host_lost"]
    assert ev and ev[-1]["host"] == "pb", ev
    assert 'wakegate_hosts{state="lost"} 1' in pa.admin("GET", "/metrics").body.decode()

    # A request to a lost session wakes it on pa: only the wake wait is seen.
    resp = get(gw, on_b, timeout=30)
    assert resp.status == 200 and stack_util.APP_TEXT in resp.body, (resp.status, resp.body[:200], gw.log_tail(30))
    rec = bus.record(on_b)
    assert rec["state"] == "running" and rec["host"] == "pa" and rec["epoch"] == "2", rec
    assert r.hgetall("wg:hostload") == {"pa": "4", "pb": "3"}
    rep = bus_util.events(r, on_b, "replaced")
    assert rep and json.loads(rep[-1]["detail"])["to_host"] == "pa", rep

    # A pinned session waits for its host: its wake stays on pb's stream.
    r.xtrim("wg:wake:pb", maxlen=0)
    st = gw.admin("POST", "/v1/sessions/pin1/wake", token=TOKEN).status
    assert st == 202, st
    assert r.xlen("wg:wake:pb") == 1
    assert bus.record("pin1")["state"] == "lost" and bus.record("pin1")["host"] == "pb"


def test_a_redis_stall_longer_than_the_ttl_calls_no_host_lost(redis_server, clean_engine, test_image, dockerd_b,
                                                              start_wakegate):
    """Redis stops answering for longer than the heartbeat TTL (SIGSTOP, as a
    stalled or failing-over master): every heartbeat expires at once. The
    first orchestrator back must not call the other lost before it has had a
    TTL to beat again, or a Redis blip would move a whole host's sessions."""
    if dockerd_b.pid is None:  # the test before killed it
        dockerd_b.restart_dockerd()
    bus = stack_util._Bus(redis_server, clean_engine, start_wakegate)
    r = bus.r
    orchs = [start_wakegate(orch_cfg(redis_server.url, clean_engine, "pa", 0), args=["--role", "orchestrator"]),
             start_wakegate(orch_cfg(redis_server.url, dockerd_b, "pb", 0), args=["--role", "orchestrator"])]
    for o in orchs:
        o.wait_log(r"startup reconciliation done", timeout=20)
    gw = start_wakegate(gw_cfg(redis_server.url), args=["--role", "proxy"])
    gw.wait_ready(timeout=10)
    for sid, host in (("stall-a", "pa"), ("stall-b", "pb")):
        st, body = create(gw, sid, host=host)
        assert st == 201, (st, body)
    wait_for(lambda: r.exists("wg:host:pa") and r.exists("wg:host:pb"), timeout=10, what="both heartbeats")

    # The orchestrators judge other hosts only after a TTL of Redis: wait
    # until they sweep, as a running deployment does.
    wait_for(lambda: r.exists("wg:sweep_at"), timeout=15, what="the first sweep")
    os.kill(redis_server.pid, signal.SIGSTOP)
    try:
        time.sleep(5.0)  # past the 3 s TTL: both heartbeat keys expire
    finally:
        os.kill(redis_server.pid, signal.SIGCONT)
    # Both orchestrators come back and beat; two TTLs later, still nobody lost.
    bus.reconnect_redis()
    wait_for(lambda: bus.r.exists("wg:host:pa") and bus.r.exists("wg:host:pb"), timeout=15,
             what="both heartbeats after the stall")
    time.sleep(6.0)
    lost = [f for _, f in bus.r.xrange("wg:events") if f.get("type") == "host_lost"]
    assert lost == [], lost
    assert bus.r.zrange("wg:lost_hosts", 0, -1) == []
    for sid in ("stall-a", "stall-b"):
        assert bus.record(sid)["state"] == "asleep", bus.record(sid)
