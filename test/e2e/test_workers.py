"""End-to-end tests of the proxy's worker loops (workers: N).

The real binary with workers: 2: each loop is a thread with its own
listening socket (SO_REUSEPORT), proxy, Redis connection and session cache.
What must hold across the loops: the kernel spreads connections over both;
/metrics shows sums (and the spread, per loop); SIGHUP reaches every loop;
SIGTERM drains every loop; limits.connections_max is the gateway's; a herd
on one sleeping session across both loops gives one container start.

Every wait is bounded; every load loop is bounded in count and time.
"""

import re
import signal
import socket
import time

import pytest
import yaml

from harness import rawhttp
from harness.upstream import slow_response
from harness.util import wait_for
from sessions_util import Pending, collect
from stack_util import APP_TEXT, gw_config, req

WORKERS = 2
N_CONNS = 200


def get_once(port, host, path="/", timeout=5.0):
    """One request on a fresh connection (Connection: close): the response."""
    data = rawhttp.request_bytes("GET", path, host=host, headers=[("Connection", "close")])
    r = rawhttp.send(port, data, timeout=timeout, until="close")
    assert r.responses, "no response from 127.0.0.1:%d for %s%s: %r" % (port, host, path, r.data[:200])
    return r.responses[0]


def per_worker(m):
    return {int(re.search(r'worker="(\d+)"', k).group(1)): v
            for k, v in m.items() if k.startswith("wakegate_worker_connections_total{")}


def proxy_cfg(up, workers=WORKERS, **extra):
    cfg = {"workers": workers, "routes": [{"match": {"host": "a.test"}, "upstream": up.address}],
           "log": {"level": "info", "access": False}}
    cfg.update(extra)
    return cfg


def test_connections_spread_over_both_loops_and_metrics_are_sums(make_upstream, start_wakegate):
    up = make_upstream()
    gw = start_wakegate(proxy_cfg(up), args=["--role", "proxy"])
    gw.wait_ready(timeout=10)
    assert gw.wait_log(r"proxy worker loops started.*workers=2", timeout=5)

    for i in range(N_CONNS):
        assert get_once(gw.port, "a.test", "/n%d" % i).status == 200

    m = gw.metrics()
    spread = per_worker(m)
    assert m["wakegate_workers"] == WORKERS
    assert sorted(spread) == list(range(WORKERS)), spread
    assert all(v > 0 for v in spread.values()), "a loop got no connection: %r" % spread
    assert sum(spread.values()) == N_CONNS, spread
    assert m["wakegate_connections_accepted_total"] == N_CONNS
    assert m["wakegate_requests_total"] == N_CONNS
    assert m['wakegate_responses_total{class="2xx"}'] == N_CONNS
    assert m['wakegate_route_requests_total{route="0:host=a.test",class="2xx"}'] == N_CONNS
    assert m["wakegate_request_duration_seconds_count"] == N_CONNS
    assert m['wakegate_request_duration_seconds_bucket{le="+Inf"}'] == N_CONNS
    assert m["wakegate_connections_open"] == 0
    # Each family once, however many loops.
    text = gw.admin("GET", "/metrics").body.decode()
    assert text.count("# TYPE wakegate_requests_total ") == 1
    assert text.count("# TYPE wakegate_worker_connections_total ") == 1


def test_connection_ids_are_unique_across_loops(make_upstream, start_wakegate):
    up = make_upstream()
    cfg = proxy_cfg(up)
    cfg["log"] = {"level": "info", "access": True, "format": "json"}
    gw = start_wakegate(cfg, args=["--role", "proxy"])
    gw.wait_ready(timeout=10)
    for i in range(40):
        assert get_once(gw.port, "a.test", "/id%d" % i).status == 200
    spread = per_worker(gw.metrics())
    assert all(v > 0 for v in spread.values()), spread
    ids = []
    deadline = time.monotonic() + 5
    while len(ids) < 40 and time.monotonic() < deadline:
        ids = [ln.split('"conn":')[1].split(",")[0] for ln in gw.log_lines() if '"sub":"access"' in ln]
        time.sleep(0.05)
    assert len(ids) == 40 and len(set(ids)) == 40, ids


def test_sighup_changes_routes_in_every_loop_and_a_bad_file_keeps_them(make_upstream, start_wakegate):
    old, new = make_upstream(), make_upstream()
    gw = start_wakegate(proxy_cfg(old), args=["--role", "proxy"])
    gw.wait_ready(timeout=10)
    for i in range(10):
        get_once(gw.port, "a.test", "/before%d" % i)
    before = len(old.requests)

    with open(gw.config_path) as f:
        cfg = yaml.safe_load(f)
    cfg["routes"] = [{"match": {"host": "a.test"}, "upstream": new.address}]
    with open(gw.config_path, "w") as f:
        yaml.safe_dump(cfg, f)
    gw.send_signal(signal.SIGHUP)
    gw.wait_log(r"routes reloaded", timeout=5)
    wait_for(lambda: sum("worker loop took the reloaded routes" in ln for ln in gw.log_lines()) == WORKERS,
             5, "every worker loop to take the routes")

    for i in range(40):
        assert get_once(gw.port, "a.test", "/after%d" % i).status == 200
    assert len(old.requests) == before, "a fresh connection still used the old route"
    assert len(new.requests) == 40
    assert all(v > 0 for v in per_worker(gw.metrics()).values())

    # A bad file: every loop keeps what it has; said once.
    with open(gw.config_path, "w") as f:
        f.write("routes: [ {match: {host: a.test}, upstream: \n")
    gw.send_signal(signal.SIGHUP)
    gw.wait_log(r"reload failed, keeping the current routes", timeout=5)
    time.sleep(0.3)  # a second line, or a loop taking routes, would show up here
    lines = gw.log_lines()
    assert sum("reload failed, keeping the current routes" in ln for ln in lines) == 1, lines[-10:]
    assert sum("worker loop took the reloaded routes" in ln for ln in lines) == WORKERS
    for i in range(20):
        assert get_once(gw.port, "a.test", "/still%d" % i).status == 200
    assert len(new.requests) == 60 and len(old.requests) == before
    assert gw.alive()


def test_sigterm_drains_slow_requests_on_both_loops_and_exits_0(make_upstream, start_wakegate):
    slow = make_upstream(slow_response(1.5))
    gw = start_wakegate(proxy_cfg(slow, shutdown_grace="10s"), args=["--role", "proxy"])
    gw.wait_ready(timeout=10)
    n = 24
    pend = [Pending(gw.port, rawhttp.request_bytes("GET", "/slow%d" % i, host="a.test"), name="c%d" % i)
            for i in range(n)]
    # Every request is in flight (at the upstream) before the signal, on both loops.
    wait_for(lambda: gw.metrics()["wakegate_requests_total"] == n, 5, "every request in flight")
    spread = per_worker(gw.metrics())
    assert all(v > 0 for v in spread.values()), spread
    gw.send_signal(signal.SIGTERM)
    left = collect(pend, 10, n=1)
    assert not left, [(p.name, bytes(p.buf[:100]), p.eof) for p in left]
    for p in pend:
        assert p.responses[0].status == 200, p.responses[0]
        p.close()
    code = gw.wait_exit(timeout=10)
    assert code == 0, "exit %r; tail:\n%s" % (code, gw.log_tail())
    # Closed: nothing listens on the port any more.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", gw.port), timeout=1).close()


def test_second_sigterm_closes_every_loop_at_once(make_upstream, start_wakegate):
    slow = make_upstream(slow_response(20))
    gw = start_wakegate(proxy_cfg(slow, shutdown_grace="60s"), args=["--role", "proxy"])
    gw.wait_ready(timeout=10)
    n = 16
    pend = [Pending(gw.port, rawhttp.request_bytes("GET", "/slow%d" % i, host="a.test"), name="c%d" % i)
            for i in range(n)]
    wait_for(lambda: gw.metrics()["wakegate_requests_total"] == n, 5, "every request in flight")
    assert all(v > 0 for v in per_worker(gw.metrics()).values())
    gw.send_signal(signal.SIGTERM)
    gw.wait_log(r"draining connections", timeout=5)
    gw.send_signal(signal.SIGTERM)
    # Well before shutdown_grace (60 s) and the upstream's answer (20 s).
    code = gw.wait_exit(timeout=10)
    assert code == 0, "exit %r; tail:\n%s" % (code, gw.log_tail())
    left = collect(pend, 5, n=1)
    assert len(left) == n and all(p.eof for p in left), "a request was answered or left open"
    for p in pend:
        p.close()


def test_connections_max_holds_for_the_gateway(make_upstream, start_wakegate):
    up = make_upstream()
    cap, n = 10, 40
    gw = start_wakegate(proxy_cfg(up, limits={"connections_max": cap, "head_timeout": "30s"}),
                        args=["--role", "proxy"])
    gw.wait_ready(timeout=10)
    socks = [socket.create_connection(("127.0.0.1", gw.port), timeout=5) for _ in range(n)]
    try:
        wait_for(lambda: gw.metrics()["wakegate_connections_accepted_total"]
                 + gw.metrics()["wakegate_connections_refused_total"] == n, 5, "every connect decided")
        m = gw.metrics()
        assert m["wakegate_connections_open"] == cap, m["wakegate_connections_open"]
        assert m["wakegate_connections_accepted_total"] == cap
        assert m["wakegate_connections_refused_total"] == n - cap
        spread = per_worker(m)
        assert sum(spread.values()) == cap, spread
    finally:
        for s in socks:
            s.close()
    # The slots come back: fresh connections are served again.
    wait_for(lambda: gw.metrics()["wakegate_connections_open"] == 0, 5, "the connections closed")
    for i in range(20):
        assert get_once(gw.port, "a.test", "/again%d" % i).status == 200


def test_a_second_gateway_on_the_same_port_cannot_listen(make_upstream, start_wakegate):
    """SO_REUSEPORT lets the loops of one gateway share the port, never a
    second gateway by mistake: it exits 4 (cannot listen), as with one loop."""
    up = make_upstream()
    first = start_wakegate(proxy_cfg(up), args=["--role", "proxy"])
    first.wait_ready(timeout=10)
    cfg = proxy_cfg(up)
    cfg["listen"] = "127.0.0.1:%d" % first.port
    second = start_wakegate(cfg, args=["--role", "proxy"], wait=False)
    code = second.wait_exit(timeout=10)
    assert code == 4, (code, second.log_tail())
    assert any("cannot listen" in ln and "address already in use" in ln for ln in second.log_lines())
    for i in range(20):
        assert get_once(first.port, "a.test", "/first%d" % i).status == 200
    assert sum(per_worker(first.metrics()).values()) == 20


def test_redis_connections_are_counted_per_loop(redis_server, make_upstream, start_wakegate):
    up = make_upstream()
    cfg = proxy_cfg(up, redis={"url": redis_server.url})
    gw = start_wakegate(cfg, args=["--role", "proxy"])
    gw.wait_ready(timeout=10)
    # The main loop's command connection and one per worker loop.
    wait_for(lambda: gw.metrics()["wakegate_redis_connects_total"] == 1 + WORKERS, 5,
             "every command connection up")
    assert gw.metrics()["wakegate_redis_connected"] == 1


@pytest.mark.docker
def test_herd_on_one_sleeping_session_across_both_loops_makes_one_start(stack):
    cfg = gw_config(stack.redis_server.url, stack.dockerd, level="info")
    cfg["workers"] = WORKERS
    gw = stack.start(config=cfg)
    sid = "s-workers-herd"
    stack.create(sid)
    # Each loop's cache sees the session asleep (the status never wakes it).
    for _ in range(20):
        assert stack.status_state(sid) == "asleep"

    n_conns, per_conn = 60, 3
    conns = []
    for i in range(n_conns):
        data = b"".join(req(sid, "/?c=%d&r=%d" % (i, j)) for j in range(per_conn))
        conns.append((Pending(gw.port, None, name="c%d" % i), data))
    t_since = time.time()
    for p, data in conns:
        p.send(data)
    pend = [p for p, _ in conns]
    left = collect(pend, 60, n=per_conn)
    assert not left, [(p.name, len(p.responses), bytes(p.buf[:200]), p.eof) for p in left[:5]]
    for p in pend:
        for resp in p.responses[:per_conn]:
            assert resp.status == 200 and APP_TEXT in resp.body, resp
        p.close()
    spread = per_worker(gw.metrics())
    assert all(v > 0 for v in spread.values()), spread
    time.sleep(1.0)  # a late second start would show up here
    starts = stack.docker_events(t_since, sid, ["start"])
    assert len(starts) == 1, starts
    m = gw.metrics()
    assert m['wakegate_held_requests_released_total{outcome="served"}'] >= 1
