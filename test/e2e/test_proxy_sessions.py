"""End-to-end: the proxy side of session routes, against the real binary and a
real redis-server. The test plays the orchestrator through Redis: it writes
session records as common/store.c does, publishes wg:state messages, and
reads the wake commands the proxy adds to wg:wake:h1. Upstreams are the
harness's recording upstreams on 127.0.0.1 (record ip 127.0.0.1, port = the
upstream's port). The proxy runs with --role proxy, so nothing consumes the
wake stream but the test.

Routes (sessions_util.session_config):
    {session}.preview.localhost             -> record ip : record port
    /api/sessions/{session}/ (stripped)     -> record ip : the route's port
"""

import asyncio
import json
import socket
import statistics
import time

import pytest

from harness import rawhttp
from harness.upstream import echo_body, pattern
from sessions_util import (FastUpstream, Monitor, Orchestrator, Pending, ProxyEnv, assert_silent, collect, host_of,
                           one, req, session_config, start_proxy, wait_for)
from streams_util import WsEchoServer, tunnel_echo_until_eof, upgrade_then, ws_accept

LOCAL = "127.0.0.1"
LATENCIES = {}  # name -> list of seconds, printed at the end (run with -s to see)


@pytest.fixture
def make_env(redis_server, make_upstream, start_wakegate):
    def make(wake_timeout="2s", up_handler=None, path_handler=None):
        up = make_upstream(up_handler)
        up_path = make_upstream(path_handler)
        orch = Orchestrator(redis_server.url)
        # One worker loop: these tests count what one session cache does (its
        # Redis reads, its one wake command per wake, its hold caps, what it
        # knows when Redis goes away); each worker loop has its own cache
        # (test_workers.py covers several).
        cfg = session_config(redis_server.url, up.port, up_path.port, wake_timeout=wake_timeout,
                             workers=1)
        gw = start_proxy(start_wakegate, cfg, orch)
        return ProxyEnv(gw, orch, redis_server, up, up_path)
    return make


@pytest.fixture
def env(make_env):
    return make_env()


def api_get(sid, path="/data", route="host", extra=()):
    if route == "host":
        return req("GET", path, host=host_of(sid), headers=extra)
    return req("GET", "/api/sessions/%s%s" % (sid, path), host="gw.test", headers=extra)


def check_wake(entry, sid):
    assert entry["session"] == sid, entry
    assert entry["op"] == "wake", entry
    assert abs(int(entry["at"]) - time.time() * 1000) < 30000, entry
    assert "from" in entry and entry["from"], entry


def note_latency(name, values):
    LATENCIES.setdefault(name, []).extend(values)
    vs = sorted(values)
    print("\n[latency] %s: n=%d min=%.1fms median=%.1fms max=%.1fms" % (
        name, len(vs), vs[0] * 1000, statistics.median(vs) * 1000, vs[-1] * 1000))


# ================================================================ running sessions

def test_running_session_proxied_without_redis_round_trips(env):
    env.running("s1")
    r = one(env.port, api_get("s1", "/first"))
    assert r.status == 200 and r.body == b"ok GET /first\n", r
    r = one(env.port, api_get("s1", "/p", route="path"))
    assert r.status == 200 and r.body == b"ok GET /p\n", r  # prefix stripped, the route's port
    assert [q.target for q in env.up_path.requests] == ["/p"]
    before = env.orch.cmdstats()
    t0 = time.monotonic()
    assert before.get("hgetall", 0) >= 1, before  # the first request read the record

    # 100 more requests, over keep-alive connections and new ones, both routes.
    c = rawhttp.connect(env.port)
    for i in range(60):
        c.send(api_get("s1", "/ka%d" % i))
        resp = c.read_response()
        assert resp.status == 200 and resp.body == ("ok GET /ka%d\n" % i).encode(), (i, resp)
    c.close()
    for i in range(20):
        assert one(env.port, api_get("s1", "/new%d" % i)).status == 200
    for i in range(20):
        r = one(env.port, api_get("s1", "/p%d" % i, route="path"))
        assert r.status == 200 and r.body == ("ok GET /p%d\n" % i).encode(), r

    after = env.orch.cmdstats()
    elapsed = time.monotonic() - t0
    grown = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
    # Only our own INFO calls may have been counted: no read of a record, no
    # script, no wake, nothing else from the proxy but the checks of its state
    # channel (a PUBLISH every quarter of redis.state_timeout, 1 s: by time,
    # not by request).
    grown.pop("info", None)
    checks = grown.pop("publish", 0)
    assert checks <= elapsed / 0.25 + 2, (checks, elapsed)
    assert grown == {}, "Redis commands issued during 100 requests to a running session: %r" % grown
    assert len(env.up.requests) == 1 + 60 + 20
    assert env.orch.wakes() == []


def test_running_session_not_consulted_per_request_monitor(env):
    """The same with MONITOR: during 50 requests the proxy sends Redis nothing."""
    env.running("s1")
    assert one(env.port, api_get("s1", "/warm")).status == 200
    mon = Monitor(env.redis.port)
    try:
        for i in range(50):
            assert one(env.port, api_get("s1", "/m%d" % i)).status == 200
        # A marker command from us ends the window.
        marker = mon.sync(env.orch.r)
        # The checks of the state channel go by time, not by request.
        proxy_cmds = [a for _, a in mon.commands() if a != ["ECHO", marker]
                      and not (a[:1] == ["PUBLISH"] and a[1].startswith("wg:check:"))]
    finally:
        mon.close()
    assert proxy_cmds == [], "commands seen during 50 requests: %r" % proxy_cmds[:20]


def test_unknown_and_invalid_sessions_404_without_wake(env):
    env.running("s1")
    # Unknown ids, every request class, both routes.
    for data in (api_get("nosuch"),
                 req("POST", "/x", host=host_of("nosuch"), body=b"abc"),
                 req("GET", "/", host=host_of("nosuch"), headers=[("Sec-Fetch-Mode", "navigate")]),
                 req("GET", "/", host=host_of("nosuch"), headers=[("Accept", "text/html")]),
                 api_get("nosuch2", route="path"),
                 req("GET", "/api/sessions/nosuch3/", host="gw.test", headers=[("Accept", "text/html")])):
        r = one(env.port, data)
        assert r.status == 404, (data, r)
    r = one(env.port, req("GET", "/_wakegate/status", host=host_of("nosuch")))
    assert r.status == 404 and json.loads(r.body)["state"] == "unknown", r
    # Ids that are not ids: never looked up.
    bad = [
        req("GET", "/", host="a.b." + "preview.localhost"),      # '.' in the label: no route
        req("GET", "/api/sessions/%zz/x", host="gw.test"),
        req("GET", "/api/sessions/s%31/x", host="gw.test"),       # encoded, not decoded into an id
        req("GET", "/api/sessions/-lead/x", host="gw.test"),
        req("GET", "/api/sessions/_lead/x", host="gw.test"),
        req("GET", "/api/sessions/a%2Fb/x", host="gw.test"),
        req("GET", "/api/sessions/%s/x" % ("a" * 64), host="gw.test"),
        req("GET", "/", host="%s.preview.localhost" % ("a" * 64)),
        req("GET", "/", host="-x.preview.localhost"),
    ]
    for data in bad:
        r = one(env.port, data)
        assert r.status == 404, (data, r)
    assert env.up.requests == [] and env.up_path.requests == []
    stats = env.orch.cmdstats()
    assert "xadd" not in stats, stats
    assert env.orch.wakes() == []
    assert not env.orch.r.exists("wg:session:S1")
    # An uppercase host label is the lowercase session.
    r = one(env.port, req("GET", "/upper", host="S1.Preview.LOCALHOST"))
    assert r.status == 200 and r.body == b"ok GET /upper\n", r
    assert [q.target for q in env.up.requests] == ["/upper"]
    assert env.orch.wakes() == []


# ================================================================ held requests

def test_asleep_held_one_wake_for_50_released_on_running(env):
    sid = "sleepy"
    env.orch.put(sid, "asleep")
    ps = []
    for i in range(50):
        route = "host" if i % 2 == 0 else "path"
        ps.append(Pending(env.port, api_get(sid, "/h%d" % i, route=route), name="req%d/%s" % (i, route)))
    # Held: no answer for well over a second (more than the 1 s wake repeat window).
    assert_silent(ps, 1.3)
    wait_for(lambda: env.metric("wakegate_held_requests") == 50, 2, "50 held")
    wakes = env.orch.wakes()
    assert len(wakes) == 1, wakes
    check_wake(wakes[0], sid)
    assert env.up.connections == [] and env.up_path.connections == []
    assert env.metric("wakegate_wake_requests_total") == 1

    t_pub = env.running(sid)
    left = collect(ps, 5)
    assert left == [], "not released: %r" % [p.name for p in left]
    lat = [p.done_at - t_pub for p in ps]
    note_latency("release of 50 held API requests", lat)
    for i, p in enumerate(ps):
        r = p.response
        assert r.status == 200 and r.body == ("ok GET /h%d\n" % i).encode(), (p.name, r)
    assert sorted(q.target for q in env.up.requests) == sorted("/h%d" % i for i in range(0, 50, 2))
    assert sorted(q.target for q in env.up_path.requests) == sorted("/h%d" % i for i in range(1, 50, 2))
    assert len(env.orch.wakes()) == 1
    assert env.metric("wakegate_held_requests") == 0
    for p in ps:
        p.close()


def test_held_post_bodies_arrive_intact(make_env):
    env = make_env(wake_timeout="5s", up_handler=echo_body(), path_handler=echo_body())
    sid = "poster"
    env.orch.put(sid, "asleep")
    body_cl = pattern(0, 200 * 1024)
    chunks = [pattern(7, 1000), b"x" * 1, pattern(3, 70000), b"tail\r\n"]
    body_ch = b"".join(chunks)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    body_ex = pattern(11, 5000)
    body_split = pattern(5, 30000)

    p_cl = Pending(env.port, req("POST", "/cl", host=host_of(sid), body=body_cl), name="content-length")
    p_ch = Pending(env.port, req("POST", "/api/sessions/%s/ch" % sid, host="gw.test",
                                 headers=[("Transfer-Encoding", "chunked")]) + chunked, name="chunked")
    p_ex = Pending(env.port, req("PUT", "/ex", host=host_of(sid),
                                 headers=[("Content-Length", str(len(body_ex))), ("Expect", "100-continue")]),
                   name="expect-100")
    p_sp = Pending(env.port, req("POST", "/split", host=host_of(sid), body=body_split)[:-20000], name="split")
    ps = [p_cl, p_ch, p_ex, p_sp]
    assert_silent(ps, 0.6)  # not even a 100 Continue while the session sleeps
    assert len(env.orch.wakes()) == 1

    t_pub = env.running(sid)
    assert collect([p_cl, p_ch], 3) == []
    note_latency("release of held POST requests (200 KiB, chunked 70 KiB)", [p.done_at - t_pub for p in (p_cl, p_ch)])
    p_sp.send(body_split[-20000:])
    # The 100 Continue comes once the request can go upstream; then the body.
    deadline = time.monotonic() + 3
    while not p_ex.buf.startswith(b"HTTP/1.1 100"):
        assert time.monotonic() < deadline, "no 100 Continue after the session runs: %r" % bytes(p_ex.buf)
        collect([p_ex], 0.05)
        assert not p_ex.eof, bytes(p_ex.buf)
    assert p_ex.responses == [], "final response before the body was sent: %r" % bytes(p_ex.buf)
    p_ex.send(body_ex)
    left = collect(ps, 5)
    assert left == [], [p.name for p in left]
    assert p_cl.response.status == 200 and p_cl.response.body == body_cl
    assert p_ch.response.status == 200 and p_ch.response.body == body_ch
    assert p_ex.response.status == 200 and p_ex.response.body == body_ex
    assert p_sp.response.status == 200 and p_sp.response.body == body_split
    got = {q.target: q for q in env.up.requests + env.up_path.requests}
    assert set(got) == {"/cl", "/ch", "/ex", "/split"}, list(got)
    assert got["/cl"].body == body_cl and got["/cl"].method == "POST"
    assert got["/ch"].body == body_ch
    assert got["/ex"].body == body_ex and got["/ex"].method == "PUT"
    assert got["/split"].body == body_split
    assert len(env.orch.wakes()) == 1


def test_wake_goes_to_the_owning_hosts_stream(env):
    """The wake command goes to wg:wake:{host} of the record's host."""
    sid = "elsewhere"
    env.orch.put(sid, "asleep", host="h2")
    p = Pending(env.port, api_get(sid, "/e", route="path"), name="elsewhere")
    w = env.orch.wait_wakes(1, 3, key="wg:wake:h2")
    assert len(w) == 1, w
    check_wake(w[0], sid)
    assert_silent([p], 0.3)
    assert env.orch.wakes() == []  # nothing on this gateway's own host stream
    env.orch.put(sid, "running", ip=LOCAL, port=env.up.port, host="h2")
    assert collect([p], 2) == []
    assert p.response.status == 200 and p.response.body == b"ok GET /e\n"
    assert [q.target for q in env.up_path.requests] == ["/e"]


def test_wake_deadline_504_with_retry_after(env):
    sid = "slowpoke"
    env.orch.put(sid, "asleep")
    t0 = time.monotonic()
    ps = [Pending(env.port, api_get(sid, "/w%d" % i), name="w%d" % i) for i in range(3)]
    left = collect(ps, 6)
    assert left == [], [p.name for p in left]
    for p in ps:
        r = p.response
        elapsed = p.done_at - t0
        assert r.status == 504, r
        assert r.headers.get("retry-after") is not None, r.headers
        assert 1.9 <= elapsed <= 2.6, "504 after %.2fs, wake_timeout is 2s" % elapsed
    assert env.up.connections == []
    wakes = env.orch.wakes()
    assert len(wakes) == 1, wakes
    check_wake(wakes[0], sid)
    assert env.metric("wakegate_held_requests") == 0


def test_failed_while_held_504_then_503_without_new_wake(make_env):
    env = make_env(wake_timeout="10s")
    sid = "doomed"
    env.orch.put(sid, "asleep")
    ps = [Pending(env.port, api_get(sid, "/f%d" % i, route="host" if i % 2 else "path"), name="f%d" % i)
          for i in range(6)]
    ps.append(Pending(env.port, req("POST", "/post", host=host_of(sid), body=b"payload"), name="post"))
    assert_silent(ps, 0.4)
    env.orch.put(sid, "starting")
    assert_silent(ps, 0.2)
    t_pub = env.orch.put(sid, "failed")
    left = collect(ps, 3)
    assert left == [], [p.name for p in left]
    lat = [p.done_at - t_pub for p in ps]
    note_latency("504 after a failed message", lat)
    for p in ps:
        assert p.response.status == 504, (p.name, p.response)
        assert p.response.headers.get("retry-after") is not None
    assert len(env.orch.wakes()) == 1
    # Moments later: refused at once, no new wake, for every waking class.
    for data in (api_get(sid, "/again"),
                 req("GET", "/", host=host_of(sid), headers=[("Sec-Fetch-Mode", "navigate")]),
                 req("POST", "/api/sessions/%s/x" % sid, host="gw.test", body=b"1")):
        r = one(env.port, data)
        assert r.status == 503, (data, r)  # a request held to its deadline would get 504
        assert r.headers.get("retry-after") is not None, r.headers
    time.sleep(1.1)  # past the 1 s wake repeat window: still no wake
    assert one(env.port, api_get(sid, "/later")).status == 503
    assert len(env.orch.wakes()) == 1, env.orch.wakes()
    assert env.up.connections == [] and env.up_path.connections == []


# ================================================================ browsers, status, probes

def test_browser_navigation_gets_waking_page_and_wakes(env):
    env.orch.put("nav1", "asleep")
    env.orch.put("nav2", "asleep")
    env.orch.put("nav3", "asleep")
    r = one(env.port, req("GET", "/some/page", host=host_of("nav1"), headers=[("Sec-Fetch-Mode", "navigate")]))
    assert r.status == 503, r  # held for sessions.page_after, then the page (issue 11)
    assert r.headers.get("content-type").startswith("text/html"), r.headers
    assert "'/_wakegate/status'" in r.text, r.text
    assert "nav1" in r.text
    w = env.orch.wait_wakes(1)
    assert len(w) == 1
    check_wake(w[0], "nav1")

    r = one(env.port, req("GET", "/", host=host_of("nav2"),
                          headers=[("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")]))
    assert r.status == 503 and r.headers.get("content-type").startswith("text/html"), r
    assert "'/_wakegate/status'" in r.text

    r = one(env.port, req("GET", "/api/sessions/nav3/deep/page?x=1", host="gw.test",
                          headers=[("Sec-Fetch-Mode", "navigate"), ("Accept", "text/html")]))
    assert r.status == 503 and r.headers.get("content-type").startswith("text/html"), r
    assert "'/api/sessions/nav3/_wakegate/status'" in r.text, r.text
    w = env.orch.wait_wakes(3)
    assert sorted(e["session"] for e in w) == ["nav1", "nav2", "nav3"], w
    for e in w:
        check_wake(e, e["session"])
    assert env.up.connections == [] and env.up_path.connections == []

    # The status URL on the page works and does not wake.
    r = one(env.port, req("GET", "/api/sessions/nav3/_wakegate/status", host="gw.test"))
    assert r.status == 200 and json.loads(r.body)["state"] == "asleep", r
    assert len(env.orch.wakes()) == 3
    # Running: a navigation is proxied, no page.
    env.running("nav1")
    r = one(env.port, req("GET", "/some/page", host=host_of("nav1"), headers=[("Sec-Fetch-Mode", "navigate")]))
    assert r.status == 200 and r.body == b"ok GET /some/page\n", r


def test_status_endpoint_answers_without_waking(env):
    env.orch.put("st1", "asleep")
    for data, state in (
        (req("GET", "/_wakegate/status", host=host_of("st1")), "asleep"),
        (req("GET", "/_wakegate/status?t=1", host=host_of("st1"), headers=[("Accept", "text/html")]), "asleep"),
        (req("GET", "/api/sessions/st1/_wakegate/status", host="gw.test"), "asleep"),
        (req("GET", "/api/sessions/st1/_wakegate/status", host="gw.test",
             headers=[("Sec-Fetch-Mode", "navigate")]), "asleep"),
    ):
        r = one(env.port, data)
        assert r.status == 200, (data, r)
        assert r.headers.get("content-type").startswith("application/json"), r.headers
        assert json.loads(r.body)["state"] == state, r.body
    time.sleep(0.2)
    assert env.orch.wakes() == []
    env.orch.put("st1", "starting")
    r = one(env.port, req("GET", "/_wakegate/status", host=host_of("st1")))
    assert json.loads(r.body)["state"] == "starting", r.body
    env.running("st1")
    for data in (req("GET", "/_wakegate/status", host=host_of("st1")),
                 req("GET", "/api/sessions/st1/_wakegate/status", host="gw.test")):
        r = one(env.port, data)
        assert r.status == 200 and json.loads(r.body)["state"] == "running", r
    assert env.up.connections == [] and env.up_path.connections == []
    assert env.orch.wakes() == []


def test_probes_and_non_waking_paths_get_503_without_waking(env):
    sid = "probed"
    env.orch.put(sid, "asleep")
    probes = [
        req("GET", "/", host=host_of(sid), headers=[("User-Agent", "kube-probe/1.29")]),
        req("GET", "/ready", host=host_of(sid), headers=[("User-Agent", "kube-probe/1.x"), ("Accept", "text/html")]),
        req("GET", "/healthz", host=host_of(sid)),
        req("GET", "/healthz?full=1", host=host_of(sid), headers=[("Sec-Fetch-Mode", "navigate")]),
        req("GET", "/api/sessions/%s/x" % sid, host="gw.test", headers=[("User-Agent", "Kube-Probe/1.2")]),
    ]
    for data in probes:
        r = one(env.port, data)
        assert r.status == 503, (data, r)  # a request held to its deadline would get 504
        assert r.headers.get("retry-after") is not None, r.headers
        assert json.loads(r.body)["state"] == "asleep", r.body
    time.sleep(0.2)
    assert env.orch.wakes() == []
    assert env.metric("wakegate_wakes_suppressed_total") == len(probes)
    assert env.up.connections == [] and env.up_path.connections == []

    env.running(sid)
    for data in probes:
        r = one(env.port, data)
        assert r.status == 200 and r.body.startswith(b"ok GET /"), (data, r)
    assert sorted(q.target for q in env.up.requests) == ["/", "/healthz", "/healthz?full=1", "/ready"]
    assert [q.target for q in env.up_path.requests] == ["/x"]
    assert env.orch.wakes() == []


# ================================================================ WebSocket

def test_websocket_held_then_tunnels(make_env):
    import websockets
    ws_up = WsEchoServer()
    try:
        env = make_env(wake_timeout="5s")
        sid = "wsock"
        env.orch.put(sid, "asleep")
        result = {}

        async def main():
            sock = socket.create_connection((LOCAL, env.port), timeout=5)
            sock.setblocking(False)

            async def opening():
                return await websockets.connect("ws://%s/ws/chat" % host_of(sid), sock=sock, open_timeout=10)
            task = asyncio.ensure_future(opening())
            await asyncio.sleep(0.6)
            assert not task.done(), "handshake finished while asleep: %r" % (task.result() if not task.exception() else task.exception())
            w = env.orch.wakes()
            assert len(w) == 1 and w[0]["session"] == sid, w
            t_pub = env.orch.put(sid, "running", ip=LOCAL, port=ws_up.port)
            ws = await asyncio.wait_for(task, 3)
            result["latency"] = time.monotonic() - t_pub
            for msg in ("hello", "x" * 70000, b"\x00\x01binary"):
                await ws.send(msg)
                back = await asyncio.wait_for(ws.recv(), 3)
                assert back == msg
            await ws.close()

        asyncio.run(asyncio.wait_for(main(), 20))
        note_latency("release of a held WebSocket handshake", [result["latency"]])
        assert ws_up.paths == ["/ws/chat"]
        assert ws_up.messages == ["hello", "x" * 70000, b"\x00\x01binary"]
        assert len(env.orch.wakes()) == 1
    finally:
        ws_up.stop()


def test_websocket_upgrade_on_path_route_held_then_tunnels(make_env):
    """A raw upgrade on the path route (the route's port): held while asleep,
    then 101 and a byte tunnel; bytes sent early right after the head are
    kept and delivered."""
    env = make_env(wake_timeout="5s", path_handler=upgrade_then(tunnel_echo_until_eof))
    sid = "wsraw"
    env.orch.put(sid, "asleep")
    key = "x3JJHMbDL1EzLkh9GBhXDw=="
    p = Pending(env.port, ("GET /api/sessions/%s/sock?room=1 HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n"
                           % (sid, key)).encode(), name="upgrade")
    assert_silent([p], 0.5)
    assert len(env.orch.wakes()) == 1
    env.running(sid)
    deadline = time.monotonic() + 3
    while b"\r\n\r\n" not in p.buf:
        assert time.monotonic() < deadline, bytes(p.buf)
        collect([p], 0.05)
        assert not p.eof or b"\r\n\r\n" in p.buf, bytes(p.buf)
    head, rest = bytes(p.buf).split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    fields = dict((k.strip().lower(), v.strip()) for k, v in
                  (ln.split(":", 1) for ln in head.decode("latin-1").split("\r\n")[1:]))
    assert fields.get("sec-websocket-accept") == ws_accept(key), head
    q = env.up_path.requests[0]
    assert q.target == "/sock?room=1" and q.headers.get("upgrade").lower() == "websocket", q
    payload = b"tunnel-bytes-" + pattern(0, 5000)
    p.send(payload)
    got = bytearray(rest)
    deadline = time.monotonic() + 3
    while len(got) < len(payload):
        assert time.monotonic() < deadline, "echo incomplete: %d of %d" % (len(got), len(payload))
        data = p.conn.read_some(timeout=1)
        assert data, "tunnel closed"
        got += data
    assert bytes(got) == payload
    p.close()


# ================================================================ caps

def test_hold_cap_and_held_metric(make_env):
    env = make_env(wake_timeout="30s")
    fast = FastUpstream()
    try:
        _hold_cap(env, fast)
    finally:
        fast.stop()


def _hold_cap(env, fast):
    sid = "capped"
    env.orch.put(sid, "asleep")
    first = [Pending(env.port, api_get(sid, "/c%d" % i), name="c%d" % i) for i in range(10)]
    wait_for(lambda: env.metric("wakegate_held_requests") == 10, 5, "held == 10")
    assert_silent(first, 0.2)
    assert env.metric("wakegate_held_requests") == 10
    cap = 1024  # WG_SESSION_CACHE_HOLD_PER_SESSION_MAX in proxy/session_cache.h
    rest = [Pending(env.port, api_get(sid, "/c%d" % i), name="c%d" % i) for i in range(10, cap)]
    ps = first + rest
    wait_for(lambda: env.metric("wakegate_held_requests") == cap, 10, "held == %d" % cap)
    over = [Pending(env.port, api_get(sid, "/over%d" % i), name="over%d" % i) for i in range(3)]
    left = collect(over, 3)
    assert left == [], [p.name for p in left]
    for p in over:
        assert p.response.status == 503, p.response
        assert p.response.headers.get("retry-after") is not None
    assert env.metric("wakegate_held_requests") == cap
    assert env.metric("wakegate_hold_refused_total") == 3
    assert_silent(ps[:50], 0.1)
    # Another session is not limited by this one's cap.
    env.running("other")
    assert one(env.port, api_get("other", "/fine")).status == 200
    # Release them all (to an upstream that takes 1024 connects at once).
    t_pub = env.running(sid, port=fast.port)
    left = collect(ps, 20)
    assert left == [], "%d not released" % len(left)
    lat = [p.done_at - t_pub for p in ps]
    note_latency("release of %d held requests" % cap, lat)
    bad = [(p.name, p.response.status, p.response.body) for p in ps if p.response.status != 200]
    assert bad == [], bad[:10]
    assert sorted(fast.targets) == sorted("/c%d" % i for i in range(cap))
    assert env.metric("wakegate_held_requests") == 0
    assert len(env.orch.wakes()) == 1
    for p in ps + over:
        p.close()


def test_held_metric_counts_and_reset_clients_leave(env):
    sid = "counted"
    env.orch.put(sid, "asleep")
    ps = [Pending(env.port, api_get(sid, "/n%d" % i), name="n%d" % i) for i in range(7)]
    wait_for(lambda: env.metric("wakegate_held_requests") == 7, 3, "held == 7")
    for p in ps[:3]:
        p.conn.reset()
    wait_for(lambda: env.metric("wakegate_held_requests") == 4, 1, "held == 4 after 3 clients reset")
    env.running(sid)
    assert collect(ps[3:], 3) == []
    assert all(p.response.status == 200 for p in ps[3:])
    assert sorted(q.target for q in env.up.requests) == ["/n3", "/n4", "/n5", "/n6"]
    assert env.metric("wakegate_held_requests") == 0


def test_held_client_that_closes_is_cleaned_up_by_the_deadline(env):
    """A client that closes (FIN) while its request is held: its slot is
    given back at the latest at its wake deadline, the others are unaffected
    and the proxy stays healthy. (Today the slot stays taken until the
    deadline: the FIN is taken as a half-close; see the report.)"""
    sid = "quitter"
    env.orch.put(sid, "asleep")
    t0 = time.monotonic()
    quitters = [Pending(env.port, api_get(sid, "/q%d" % i), name="q%d" % i) for i in range(3)]
    wait_for(lambda: env.metric("wakegate_held_requests") == 3, 1, "held == 3")
    time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
    t1 = time.monotonic()
    stayers = [Pending(env.port, api_get(sid, "/s%d" % i), name="s%d" % i) for i in range(2)]
    wait_for(lambda: env.metric("wakegate_held_requests") == 5, 1, "held == 5")
    for p in quitters:
        p.close()
    wait_for(lambda: env.metric("wakegate_held_requests") == 2, 2.6 - (time.monotonic() - t0),
             "held == 2 by the quitters' wake deadline (2 s)")
    assert_silent(stayers, max(0.0, 1.8 - (time.monotonic() - t1)))
    assert collect(stayers, 2) == []
    for p in stayers:
        assert p.response.status == 504, p.response
        assert 1.9 <= p.done_at - t1 <= 2.6
    assert env.metric("wakegate_held_requests") == 0
    env.running(sid)
    assert one(env.port, api_get(sid, "/ok")).status == 200
    assert [q.target for q in env.up.requests] == ["/ok"]


# ================================================================ Redis outages

def test_redis_restart_while_traffic_flows(env):
    env.running("live")
    env.orch.put("dozy", "asleep")
    env.orch.put("held", "asleep")
    assert one(env.port, api_get("live", "/warm")).status == 200
    r = one(env.port, req("GET", "/_wakegate/status", host=host_of("dozy")))
    assert json.loads(r.body)["state"] == "asleep"  # dozy is cached too
    hp = Pending(env.port, api_get("held", "/h"), name="held-before-outage")
    assert_silent([hp], 0.3)
    assert len(env.orch.wakes()) == 1

    env.redis.stop()
    t_down = time.monotonic()
    # A request held when Redis goes away is answered, not left hanging.
    assert collect([hp], 2) == []
    assert hp.response.status == 503 and hp.response.headers.get("retry-after") is not None, hp.response
    wait_for(lambda: env.gw.readyz()[0] == 503, 2, "/readyz 503 while Redis is down")

    ka = rawhttp.connect(env.port)
    n_ok = 0
    i = 0
    while time.monotonic() - t_down < 2.2:
        i += 1
        if i % 2:
            ka.send(api_get("live", "/d%d" % i))
            r = ka.read_response(timeout=2)
        else:
            r = one(env.port, api_get("live", "/d%d" % i, route="path" if i % 4 == 0 else "host"), timeout=2)
        assert r.status == 200 and r.body == ("ok GET /d%d\n" % i).encode(), (i, r)
        n_ok += 1
        if i % 10 == 0:
            assert env.gw.readyz()[0] == 503
        time.sleep(0.01)
    ka.close()
    assert n_ok >= 20
    # Sleeping, unknown: refused at once.
    for data in (api_get("dozy", "/x"), api_get("dozy", "/x", route="path"),
                 req("GET", "/", host=host_of("dozy"), headers=[("Sec-Fetch-Mode", "navigate")]),
                 api_get("neverseen", "/x")):
        r = one(env.port, data, timeout=3)
        assert r.status == 503, (data, r)  # a request held to its deadline would get 504
        assert r.headers.get("retry-after") is not None
    status, body = env.gw.readyz()
    assert status == 503, body

    env.redis.start()
    t_up = time.monotonic()
    env.orch.reconnect()
    env.running("live")
    env.orch.put("dozy", "asleep")
    env.orch.put("held", "asleep")
    wait_for(lambda: env.gw.readyz()[0] == 200, 15, "/readyz 200 after Redis is back")
    note_latency("Redis back -> /readyz 200", [time.monotonic() - t_up])
    assert one(env.port, api_get("live", "/after")).status == 200
    # A wake works again.
    p = Pending(env.port, api_get("dozy", "/wake-again"), name="wake-again")
    w = env.orch.wait_wakes(1, 3)
    assert len(w) == 1, w
    check_wake(w[0], "dozy")
    assert_silent([p], 0.2)
    env.running("dozy")
    assert collect([p], 2) == []
    assert p.response.status == 200 and p.response.body == b"ok GET /wake-again\n"


def test_resubscription_rereads_sessions_changed_while_down(env, make_upstream):
    """While Redis was away the session went to sleep (no message reached
    the proxy). After reconnection a request must be held and wake it, not
    go to the old address."""
    env.running("moved")
    assert one(env.port, api_get("moved", "/before")).status == 200
    env.redis.stop()
    wait_for(lambda: env.gw.readyz()[0] == 503, 2, "/readyz 503")
    env.redis.start()
    env.orch.reconnect()
    env.orch.put("moved", "asleep", publish=False)  # v continues: 2
    wait_for(lambda: env.gw.readyz()[0] == 200, 15, "/readyz 200")
    n_before = len(env.up.requests)
    p = Pending(env.port, api_get("moved", "/after"), name="after-reconnect")
    try:
        assert_silent([p], 0.5)
    finally:
        wrong = [q.target for q in env.up.requests[n_before:]]
    assert wrong == [], "proxied to the old address after reconnection: %r" % wrong
    w = env.orch.wait_wakes(1, 3)
    assert len(w) == 1 and w[0]["session"] == "moved", w
    new_up = make_upstream()
    env.orch.put("moved", "running", ip=LOCAL, port=new_up.port)
    assert collect([p], 2) == []
    assert p.response.status == 200
    assert [q.target for q in new_up.requests] == ["/after"]
    assert [q.target for q in env.up.requests[n_before:]] == []


def test_records_recreated_after_redis_data_loss_are_believed(env, make_upstream):
    """Redis restarted empty (no persistence): the orchestrator writes the
    records anew, so v starts again at 1. The proxy must believe them after
    it resubscribes, though their v is lower than what it cached."""
    for _ in range(4):
        env.running("reborn")  # v = 4
    assert one(env.port, api_get("reborn", "/before")).status == 200
    env.redis.stop()
    wait_for(lambda: env.gw.readyz()[0] == 503, 2, "/readyz 503")
    env.redis.start()
    env.orch.reconnect()
    env.orch.versions.clear()
    new_up = make_upstream()
    env.orch.put("reborn", "creating", publish=False)                     # v = 1, as wg_store_create
    env.orch.put("reborn", "asleep", publish=False)                       # v = 2
    wait_for(lambda: env.gw.readyz()[0] == 200, 15, "/readyz 200")
    # The first use after the reconnection re-reads the record (whether that
    # first request is held is test_resubscription_rereads_...'s business).
    first = Pending(env.port, api_get("reborn", "/first"), name="first-after-reconnect")
    wait_for(lambda: env.orch.cmdstats().get("hgetall", 0) >= 1, 2, "the record re-read")
    time.sleep(0.2)
    n_before = len(env.up.requests)
    p = Pending(env.port, api_get("reborn", "/after"), name="after-data-loss")
    assert_silent([p], 0.5)
    assert [q.target for q in env.up.requests[n_before:]] == [], \
        "the re-read record (asleep, v=2) was ignored: still proxied to the address from before the loss"
    w = env.orch.wait_wakes(1, 3)
    assert len(w) == 1, w
    env.orch.put("reborn", "running", ip=LOCAL, port=new_up.port)        # v = 3 (< 4 cached)
    assert collect([p], 2) == [], "held request not released by a running message with v=3"
    assert p.response.status == 200
    assert "/after" in [q.target for q in new_up.requests]
    first.close()


def test_state_messages_release_and_ordering(env, make_upstream):
    """Held requests wait through transient states; an old (lower v) message
    does not undo a newer one."""
    sid = "ordered"
    env.orch.put(sid, "asleep")
    p = Pending(env.port, api_get(sid, "/o"), name="ordered")
    assert_silent([p], 0.3)
    env.orch.put(sid, "starting")
    assert_silent([p], 0.3)
    t_pub = env.running(sid)
    assert collect([p], 2) == []
    assert p.response.status == 200
    note_latency("release after starting -> running", [p.done_at - t_pub])
    # A stale message (v lower than the last) saying asleep is ignored.
    v = env.orch.versions[sid]
    env.orch.r.publish("wg:state", json.dumps({"id": sid, "state": "asleep", "v": v - 2}))
    time.sleep(0.1)
    r = one(env.port, api_get(sid, "/still"))
    assert r.status == 200 and r.body == b"ok GET /still\n"
    # A newer message moving it elsewhere is followed at once.
    other = make_upstream()
    env.orch.put(sid, "running", ip=LOCAL, port=other.port)
    time.sleep(0.05)
    r = one(env.port, api_get(sid, "/moved"))
    assert r.status == 200
    assert [q.target for q in other.requests] == ["/moved"]
    assert len(env.orch.wakes()) == 1


# ================================================================ pooled connections

def test_pooled_connections_dropped_when_a_session_leaves_its_address(env):
    """PROXY-RULES: when a session's container changes address, its pooled
    connections are dropped. Both routes' ports go (the host route reaches the
    record's port, the path route its own)."""
    env.running("s1")
    assert one(env.port, api_get("s1", "/a")).status == 200
    assert one(env.port, api_get("s1", "/b", route="path")).status == 200
    wait_for(lambda: env.metric("wakegate_upstream_idle_connections") == 2, 3,
             "two pooled upstream connections")
    conns = list(env.up.connections) + list(env.up_path.connections)
    assert len(conns) == 2 and not any(c.closed.is_set() for c in conns), conns

    env.orch.put("s1", "asleep")  # the container left 127.0.0.1: stopped
    wait_for(lambda: env.metric("wakegate_upstream_idle_connections") == 0, 3,
             "pooled connections dropped")
    for c in conns:
        assert c.closed.wait(3), "upstream connection still open after the session left: %r" % c
        assert c.close_reason == "eof", c

    # Back at the same address: new connections, nothing stale reused.
    env.running("s1")
    assert one(env.port, api_get("s1", "/c")).status == 200
    assert len(env.up.connections) == 2
