"""End-to-end tests of issue 15, "Beyond one core and one host", on one machine
with real processes (multihost_util.py): two dockerds on their own bridges,
an orchestrator for each, three proxy gateways with 2 worker loops each, and
a Redis master, a replica and three sentinels.

- placement: sessions created through different gateways spread over both
  hosts by load, and a host at its maximum gets none;
- a lost host: its sessions go `lost` within the heartbeat's expiry, a
  request wakes one on the other host with its work restored from git, and
  the host that comes back saves and removes its stale containers: no
  session ever has two containers;
- a Redis failover: requests to running sessions keep succeeding, the
  gateways follow the new master, wakes resume, no state goes backwards;
- a herd of 500 requests across the three gateways makes one engine start.
"""

import concurrent.futures
import os
import signal
import time

import pytest

import bus_util
from harness import image
from harness.dockerd import Dockerd
from harness.sentinel import RedisSentinelCluster
from harness.util import wait_for
from multihost_util import MASTER, Cluster, Traffic
from sessions_util import Pending, collect
from test_sleep import bare_repo, git, remote_show

pytestmark = pytest.mark.docker


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def dockerd2(e2e_tmp, artifacts):
    """The second Docker host: its own containerd, dockerd, bridge and data
    root, with the same test images. It runs with --live-restore, as a
    production host should: its containers outlive a crash of the engine,
    so a host that comes back still has them running (and saves them)."""
    logs = artifacts / "docker-h2"
    logs.mkdir(parents=True, exist_ok=True)
    d = Dockerd(os.path.join(e2e_tmp, "docker-h2"), logs, extra_args=["--live-restore"])
    d.start()
    try:
        image.build_image(d, image.TEST_IMAGE)
        image.build_image(d, image.WS_IMAGE, extra_files={"/start.sh": image.WS_START_SH, "/ws.sh": image.WS_SH},
                          dockerfile_extra="RUN chmod 755 /start.sh /ws.sh\n", cmd=["/start.sh"])
        yield d
    finally:
        d.stop()


@pytest.fixture
def cluster(e2e_tmp, artifacts, request, clean_engine, ws_image, dockerd2, start_wakegate):
    dockerd2.remove_all_containers()
    base = os.path.join(e2e_tmp, "sentinel-" + request.node.name[:40])
    sentinels = RedisSentinelCluster(base, artifacts / ("sentinel-" + request.node.name[:40]), master_name=MASTER)
    sentinels.start()
    try:
        yield Cluster(start_wakegate, sentinels, {"h1": clean_engine, "h2": dockerd2})
    finally:
        try:
            dockerd2.remove_all_containers()
        finally:
            sentinels.stop()


def create_many(c, sids, expect=(201,)):
    """Creates sids through the three gateways in turn, 8 at once; returns
    {sid: (status, answer)}."""
    def one(i_sid):
        i, sid = i_sid
        return sid, c.create(sid, gw=c.gws[i % len(c.gws)])
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        out = dict(pool.map(one, enumerate(sids)))
    bad = {s: v for s, v in out.items() if v[0] not in expect}
    assert not bad, list(bad.items())[:5]
    return out


def hosts_of(c, sids):
    counts = {}
    for sid in sids:
        h = c.record(sid).get("host")
        counts[h] = counts.get(h, 0) + 1
    return counts


# ---------------------------------------------------------------- placement

def test_sessions_spread_by_load_and_a_full_host_gets_none(cluster):
    c = cluster
    c.start_orch("h1", max_sessions=20)
    c.start_orch("h2", max_sessions=100)
    c.start_gateways(3)

    sids = ["p%03d" % i for i in range(100)]
    create_many(c, sids)
    counts = hosts_of(c, sids)
    print("\n[placement] 100 sessions: %r" % counts)
    assert set(counts) == {"h1", "h2"}, counts
    assert 0 < counts["h1"] <= 20 and counts["h2"] == 100 - counts["h1"], counts

    # Fill up: h1 reaches exactly its maximum, concurrent creates through
    # three gateways never give it a 21st; past both maxima a create is refused.
    more = ["q%03d" % i for i in range(20)]
    create_many(c, more)
    counts = hosts_of(c, sids + more)
    print("[placement] 120 sessions: %r" % counts)
    assert counts == {"h1": 20, "h2": 100}, counts
    st, got = c.create("one-too-many", gw=c.gws[2])
    assert st == 503, (st, got)
    assert c.record("one-too-many") == {}

    st, hosts = c.api("GET", "/v1/hosts", gw=c.gws[1])
    assert st == 200, (st, hosts)
    by_name = {h["name"]: h for h in hosts["hosts"]}
    assert {n: h["state"] for n, h in by_name.items()} == {"h1": "live", "h2": "live"}, by_name
    # The heartbeat's count lags by up to a beat; the placement's own count
    # (wg:hostload) is exact at once.
    assert c.redis().hgetall("wg:hostload") == {"h1": "20", "h2": "100"}
    wait_for(lambda: c.api("GET", "/v1/hosts")[1]["hosts"][0]["info"]["sessions"] == 20, 10,
             "h1's heartbeat to count its 20 sessions")
    assert by_name["h1"]["info"]["max_sessions"] == 20, by_name["h1"]


# ---------------------------------------------------------------- a lost host

def kill_host(c, name):
    """The host's orchestrator and dockerd die (SIGKILL, by pid). Its
    containers live on under containerd, out of anyone's reach: no gateway
    routes to them once their sessions are lost."""
    c.orchs[name].send_signal(signal.SIGKILL)
    c.orchs[name].wait_exit(timeout=10)
    c.engines[name].kill_dockerd()


def live_containers(c, sid):
    return [(name, ct["Id"][:12]) for name in c.engines for ct in c.containers(name, sid)
            if ct["State"] in ("running", "paused", "restarting")]


def test_a_lost_host_moves_its_sessions_and_cleans_up_when_back(cluster, tmp_path):
    c = cluster
    c.start_orch("h1", max_sessions=50)
    c.start_orch("h2", max_sessions=50)
    c.start_gateways(3)

    # Three sessions on h2, each with its own bare remote: work saved by a
    # sleep, then woken again, so they run on h2 when it dies; a fourth that
    # stays asleep and that nobody asks for while h2 is away.
    sids = ["work-a", "work-b", "work-c", "idle-d"]
    bares = {}
    for sid in sids:
        bares[sid] = bare_repo(tmp_path, sid)
        st, got = c.create(sid, host="h2", binds=["%s:/remote" % bares[sid]])
        assert st == 201 and got["host"] == "h2", (st, got)
    for sid in sids[:3]:
        r = c.get(sid, "/repo/notes.txt")
        assert r.status == 200 and r.body == b"first\n", (r.status, r.body[:200])
        rec = c.wait_state(sid, "running")
        c.engines["h2"].exec(rec["container_id"], "sh", "-c", "echo 'work of %s' > /www/repo/notes.txt" % sid)
        st, got = c.api("POST", "/v1/sessions/%s/sleep?now=1&wait=1" % sid, timeout=60)
        assert st == 200, (st, got)
        assert remote_show(bares[sid]) == "work of %s\n" % sid
        r = c.get(sid, "/repo/notes.txt", gw=c.gws[1])
        assert r.status == 200 and r.body == ("work of %s\n" % sid).encode(), r.body[:200]
        # Unsaved work, done after the last save: it stays in h2's container.
        rec = c.wait_state(sid, "running")
        c.engines["h2"].exec(rec["container_id"], "sh", "-c", "echo 'unsaved' > /www/repo/later.txt")
    before = {sid: int(c.record(sid)["v"]) for sid in sids}

    killed_at = time.monotonic()
    kill_host(c, "h2")
    for sid in sids:
        c.wait_state(sid, "lost", timeout=20)
    lost_after = time.monotonic() - killed_at
    print("\n[lost] h2 killed; its sessions lost after %.1f s (heartbeat TTL 3 s)" % lost_after)
    st, hosts = c.api("GET", "/v1/hosts")
    assert {h["name"]: h["state"] for h in hosts["hosts"]} == {"h1": "live", "h2": "lost"}, hosts

    # A request wakes each on h1 through any gateway: the client sees the
    # wake wait, then the work that the last save pushed.
    for i, sid in enumerate(sids[:3]):
        t0 = time.monotonic()
        r = c.get(sid, "/repo/notes.txt", gw=c.gws[i % 3], timeout=60)
        assert r.status == 200, (r.status, r.body[:300])
        assert r.body == ("work of %s\n" % sid).encode(), r.body[:200]
        rec = c.wait_state(sid, "running")
        assert rec["host"] == "h1" and int(rec["epoch"]) == 2, rec
        assert int(c.record(sid)["v"]) > before[sid], (before[sid], c.record(sid))
        print("[lost] %s answered from h1 after %.1f s" % (sid, time.monotonic() - t0))
    assert c.session("idle-d")["state"] == "lost"

    # The host comes back: the containers of the moved sessions are saved to
    # a side branch (never over the newer work) and removed; the session that
    # nobody asked for is h2's again, as Docker shows it.
    c.engines["h2"].restart_dockerd()
    c.start_orch("h2", max_sessions=50)
    wait_for(lambda: all(not c.containers("h2", sid) for sid in sids[:3]), 60,
             "h2 to remove the stale containers of the moved sessions")
    r = c.redis()
    for sid in sids[:3]:
        [ev] = bus_util.events(r, sid, "stale_removed")
        detail = ev["detail_json"]
        assert detail["removed"] is True and detail["save"]["ok"] is True, detail
        ref = detail["save"]["ref"]
        assert ref.startswith("refs/heads/wakegate/stale/"), ref
        assert git("--git-dir", str(bares[sid]), "show", "%s:later.txt" % ref) == "unsaved\n"
        assert remote_show(bares[sid]) == "work of %s\n" % sid  # the main line is untouched
        rec = c.record(sid)
        assert rec["host"] == "h1" and rec["state"] == "running", rec
    c.wait_state("idle-d", "asleep", timeout=20)
    assert c.record("idle-d")["host"] == "h2"
    for sid in sids:
        assert len(live_containers(c, sid)) <= 1, (sid, live_containers(c, sid))
        total = len(c.containers("h1", sid)) + len(c.containers("h2", sid))
        assert total <= 1, (sid, c.containers("h1", sid), c.containers("h2", sid))


# ---------------------------------------------------------------- a Redis failover

def test_a_redis_failover_keeps_running_sessions_served(cluster):
    c = cluster
    c.start_orch("h1", max_sessions=50)
    c.start_orch("h2", max_sessions=50)
    c.start_gateways(3)
    running = ["run-%d" % i for i in range(4)]
    create_many(c, running + ["later"])
    for sid in running:
        assert c.get(sid).status == 200
    for sid in running:
        c.wait_state(sid, "running")
    before = {sid: c.session(sid) for sid in running}

    traffic = Traffic(c, running).start()
    time.sleep(1.0)
    old = c.sentinels.master_addr()
    t0 = time.monotonic()
    c.sentinels.kill_master()
    new = c.sentinels.wait_failover(old, timeout=60)
    failed_over = time.monotonic() - t0
    assert new != old
    time.sleep(2.0)
    results = traffic.stop()
    bad = [r for r in results if r[2] != 200]
    print("\n[failover] master %s -> %s in %.1f s; %d requests to running sessions, %d not 200"
          % (old, new, failed_over, len(results), len(bad)))
    assert len(results) > 50, len(results)
    assert not bad, bad[:10]

    for gw in c.gws + list(c.orchs.values()):
        wait_for(lambda gw=gw: gw.readyz()[0] == 200, 30,
                 "every process to be ready again on the new master")
    # Wakes resume: a sleeping session wakes through each gateway's cache.
    r = c.get("later", gw=c.gws[2], timeout=60)
    assert r.status == 200, (r.status, r.body[:200])
    after = {sid: c.session(sid) for sid in running}
    for sid in running:
        assert after[sid]["state"] == "running", after[sid]
        assert int(after[sid]["version"]) >= int(before[sid]["version"]), (before[sid], after[sid])


# ---------------------------------------------------------------- the herd

def test_a_herd_across_three_gateways_makes_one_start(cluster):
    c = cluster
    c.start_orch("h1", max_sessions=50)
    c.start_orch("h2", max_sessions=50)
    c.start_gateways(3)
    sid = "herd"
    create_many(c, [sid])
    host = c.record(sid)["host"]
    # Every gateway worker follows wg:state before the herd.
    wait_for(lambda: dict(c.redis().pubsub_numsub("wg:state")).get("wg:state", 0) >= 6, 10,
             "six gateway workers to subscribe to wg:state")

    n_conns, per_conn = 100, 5
    pend = []
    t_since = time.time()
    for i in range(n_conns):
        gw = c.gws[i % 3]
        data = b"".join(
            b"GET /?c=%d&r=%d HTTP/1.1\r\nHost: %s.preview.localhost\r\nAccept: */*\r\nUser-Agent: herd\r\n\r\n"
            % (i, j, sid.encode()) for j in range(per_conn))
        p = Pending(gw.port, None, name="c%d" % i)
        p.send(data)
        pend.append(p)
    left = collect(pend, 70, n=per_conn)
    assert not left, [(p.name, len(p.responses)) for p in left[:5]]
    statuses = {}
    for p in pend:
        for resp in p.responses[:per_conn]:
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
        p.close()
    assert statuses == {200: n_conns * per_conn}, statuses
    time.sleep(1.0)
    starts = sum(len(bus_util.engine_events(c.engines[h], t_since, sid, ["start"])) for h in c.engines)
    creates = sum(len(bus_util.engine_events(c.engines[h], t_since, sid, ["create"])) for h in c.engines)
    print("\n[herd] 500 requests over 3 gateways x 2 workers: %r, starts=%d on %s" % (statuses, starts, host))
    assert starts == 1 and creates == 1, (starts, creates)
