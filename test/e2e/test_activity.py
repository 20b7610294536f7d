"""End-to-end: session activity written by the proxy, requests during a
sleep, and the keepalive endpoint, against the real binary and a real
redis-server (no Docker).

The proxy tests play the orchestrator through Redis as test_proxy_sessions.py
does (sessions_util.Orchestrator), and also keep wg:active the way
common/store.c does: a session joins it on entering running. What the proxy
writes is read with MONITOR on the test's own redis-server: its touches are
the only `ZADD wg:active XX GT CH` commands (the test's own ZADDs have no
flags).

Every loop is bounded in count and time.
"""

import asyncio
import json
import socket
import time

import pytest
import redis

from bus_util import write_record
from harness import rawhttp
from harness.upstream import sse
from harness.util import now_ms
from sessions_util import (Monitor, Orchestrator, Pending, ProxyEnv, assert_silent, collect, host_of, one, req,
                           session_config, start_proxy, wait_for)
from streams_util import WsEchoServer, metrics

LOCAL = "127.0.0.1"
ACTIVE = "wg:active"
OLD = 1_000_000_000_000  # a score far in the past: "last active in 2001"


# ---------------------------------------------------------------- MONITOR and the proxy under test

def score(r, sid):
    """The session's wg:active score, or None."""
    s = r.zscore(ACTIVE, sid)
    return None if s is None else int(s)


class Env(ProxyEnv):
    def __init__(self, gw, orch, redis_server, up, interval):
        super().__init__(gw, orch, redis_server, up)
        self.r = orch.r
        self.interval = interval  # seconds

    def running(self, sid, port=None, score=OLD):
        """A running record, and its wg:active entry as the store makes it."""
        super().running(sid, port=port)
        self.r.zadd(ACTIVE, {sid: score})

    def score(self, sid):
        return score(self.r, sid)


@pytest.fixture
def make_env(redis_server, make_upstream, start_wakegate):
    def make(interval="1s", up_handler=None, wake_timeout="5s", workers=None):
        up = make_upstream(up_handler)
        orch = Orchestrator(redis_server.url)
        cfg = session_config(redis_server.url, up.port, up.port, wake_timeout=wake_timeout)
        if workers is not None:
            cfg["workers"] = workers
        cfg["sessions"]["idle"] = {"activity_interval": interval}
        gw = start_proxy(start_wakegate, cfg, orch)
        secs = float(interval[:-2]) / 1000 if interval.endswith("ms") else float(interval[:-1])
        return Env(gw, orch, redis_server, up, secs)
    return make


class ActivityMonitor(Monitor):
    def touches(self):
        """The proxy's activity batches: [(time, {member: score})]."""
        out = []
        for ts, args in self.commands():
            if len(args) >= 5 and args[0].upper() == "ZADD" and args[1] == ACTIVE and \
                    [a.upper() for a in args[2:5]] == ["XX", "GT", "CH"]:
                pairs = args[5:]
                out.append((ts, {pairs[i + 1]: int(pairs[i]) for i in range(0, len(pairs), 2)}))
        return out

    def touches_of(self, sid):
        return [(ts, m[sid]) for ts, m in self.touches() if sid in m]


@pytest.fixture
def monitor(redis_server):
    m = ActivityMonitor(redis_server.port)
    yield m
    m.close()


def get(sid, path="/data", headers=()):
    return req("GET", path, host=host_of(sid), headers=headers)


# ================================================================ (a) requests

def test_requests_write_at_most_once_per_interval(make_env, monitor):
    env = make_env(interval="1s")
    sid = "busy"
    env.running(sid)
    monitor.reset(env.r)

    c = rawhttp.connect(env.port)
    t0 = time.monotonic()
    first_wall = now_ms()
    for i in range(200):
        c.send(get(sid, "/r%d" % i))
        resp = c.read_response()
        assert resp.status == 200 and resp.body == ("ok GET /r%d\n" % i).encode(), (i, resp)
        # ~3 s in all, whatever each round trip costs.
        time.sleep(max(0.0, t0 + (i + 1) * 3.0 / 200 - time.monotonic()))
    last_wall = now_ms()
    c.close()
    # The last request's activity goes out on the next flush.
    time.sleep(env.interval * 1.5)
    monitor.sync(env.r)
    elapsed = time.monotonic() - t0

    writes = monitor.touches_of(sid)
    bound = int(elapsed / env.interval) + 1
    assert 2 <= len(writes) <= bound, "%d writes in %.2fs (bound %d): %r" % (len(writes), elapsed, bound, writes)
    times = [ts for ts, _ in writes]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(g >= env.interval * 0.9 for g in gaps), "writes closer than the interval: %r" % gaps
    scores = [s for _, s in writes]
    assert scores == sorted(scores) and first_wall - 200 <= scores[0], scores
    score = env.score(sid)
    assert score == scores[-1], (score, scores)
    assert last_wall - 200 <= score <= now_ms() + 100, (score, last_wall)
    # Nothing else per request: the first one read the record, and that was all.
    others = [a for _, a in monitor.commands()
              if a and a[0].upper() in ("HGETALL", "EVAL", "EVALSHA", "XADD", "HSET", "ZRANGEBYSCORE")]
    assert others == [["HGETALL", "wg:session:" + sid]], others[:10]

    m = metrics(env.gw)
    assert m["wakegate_activity_writes_total"] >= len(writes), m
    assert m["wakegate_activity_batches_total"] >= len(writes), m
    assert m["wakegate_activity_write_errors_total"] == 0, m
    assert m["wakegate_session_exchanges_open"] == 0, m


def test_many_sessions_in_one_interval_go_out_in_one_batch(make_env, monitor):
    env = make_env(interval="1s")
    sids = ["many%02d" % i for i in range(60)]
    for sid in sids:
        env.running(sid)
    # Each session's first request reads its record; those writes go by first.
    c = rawhttp.connect(env.port)
    for sid in sids:
        c.send(get(sid, "/warm"))
        assert c.read_response().status == 200
    time.sleep(env.interval * 2.5)
    monitor.sync(env.r)
    warm = [m for _, m in monitor.touches()]
    assert warm and set().union(*warm) == set(sids), warm
    monitor.clear()
    batches_before = env.metric("wakegate_activity_batches_total")

    t0 = time.monotonic()
    for sid in sids:
        c.send(get(sid, "/burst"))
        assert c.read_response().status == 200
    burst = time.monotonic() - t0
    c.close()
    time.sleep(env.interval * 1.5)
    monitor.sync(env.r)

    # One ZADD per flush, whatever the number of sessions: the flush timer
    # starts at the burst's first request, so a burst within one interval
    # is one batch (one more for each interval it spans).
    batches = monitor.touches()
    bound = 1 + int(burst / env.interval)
    assert 1 <= len(batches) <= bound, "expected %d ZADD(s) at most for a %.2fs burst, got %d: %r" % (
        bound, burst, len(batches), batches)
    assert set().union(*(b for _, b in batches)) == set(sids)
    for sid in sids:
        assert env.score(sid) == [b[sid] for _, b in batches if sid in b][-1] > OLD
    assert env.metric("wakegate_activity_batches_total") == batches_before + len(batches)


def test_touch_never_resurrects_a_session_that_left_wg_active(make_env, monitor):
    """ZADD XX: a session whose entry is gone (it went to sleep meanwhile) is
    not added back by late activity."""
    env = make_env(interval="300ms")
    env.running("gone")
    assert one(env.port, get("gone")).status == 200
    env.r.zrem(ACTIVE, "gone")
    time.sleep(env.interval * 2.5)
    monitor.sync(env.r)
    assert monitor.touches_of("gone"), "the proxy wrote nothing"
    assert env.score("gone") is None


# ================================================================ (b) streams

def _score_samples(env, sid, seconds):
    """The score every interval/4 for `seconds`: the distinct values, in order."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s = env.score(sid)
        if not out or out[-1] != s:
            out.append(s)
        time.sleep(env.interval / 4)
    return out


def _assert_stops_after_close(env, monitor, sid, closed_wall):
    # The end of the stream is written once, on the next flush; then nothing.
    time.sleep(env.interval * 1.5)
    final = env.score(sid)
    assert closed_wall - env.interval * 1000 <= final <= now_ms(), (final, closed_wall)
    monitor.sync(env.r)
    n = len(monitor.touches_of(sid))
    time.sleep(env.interval * 3)
    monitor.sync(env.r)
    assert env.score(sid) == final, "the score moved after the stream closed"
    assert len(monitor.touches_of(sid)) == n, "writes after the stream closed"
    assert env.metric("wakegate_session_exchanges_open") == 0


def test_websocket_open_keeps_the_session_active(make_env, monitor):
    import websockets
    ws_up = WsEchoServer()
    try:
        env = make_env(interval="500ms")
        sid = "wsact"
        env.running(sid, port=ws_up.port)
        monitor.reset(env.r)
        out = {}

        async def main():
            sock = socket.create_connection((LOCAL, env.port), timeout=5)
            sock.setblocking(False)
            ws = await websockets.connect("ws://%s/ws" % host_of(sid), sock=sock, open_timeout=5,
                                          ping_interval=None)
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), 3) == "hello"
            out["opened"] = now_ms()
            # Silence both ways for 4 intervals: the open tunnel is the activity.
            loop = asyncio.get_running_loop()
            out["samples"] = await loop.run_in_executor(None, _score_samples, env, sid, env.interval * 4)
            out["open_gauge"] = env.metric("wakegate_session_exchanges_open")
            await ws.close()
            out["closed"] = now_ms()

        asyncio.run(asyncio.wait_for(main(), 30))
        samples = [s for s in out["samples"] if s is not None]
        assert len(samples) >= 3, "the score did not advance every interval: %r" % samples
        assert samples == sorted(samples) and samples[-1] >= out["opened"] + 2 * env.interval * 1000, \
            (samples, out["opened"])
        assert out["open_gauge"] == 1
        writes = monitor.touches_of(sid)
        assert len(writes) >= 3, writes
        assert ws_up.messages == ["hello"]  # nothing else crossed the tunnel
        _assert_stops_after_close(env, monitor, sid, out["closed"])
    finally:
        ws_up.stop()


def test_sse_stream_keeps_the_session_active(make_env, monitor):
    """Events 1 s apart, the interval 0.5 s: the score moves between events
    too (the open stream is the activity, not its bytes), and stops once the
    stream has ended."""
    events = ["data: %d\n\n" % i for i in range(3)]
    env = make_env(interval="500ms", up_handler=sse(events, interval=1.0, framing="chunked"))
    sid = "sseact"
    env.running(sid)
    monitor.reset(env.r)
    c = rawhttp.connect(env.port)
    c.send(get(sid, "/events", headers=[("Accept", "text/event-stream")]))
    got = b""
    deadline = time.monotonic() + 5
    while b"data: 0" not in got:
        assert time.monotonic() < deadline, got
        data = c.read_some(timeout=2)
        assert data, "stream closed: %r" % got
        got += data
    assert got.startswith(b"HTTP/1.1 200"), got
    opened = now_ms()
    samples = [s for s in _score_samples(env, sid, env.interval * 3) if s is not None]
    assert len(samples) >= 3, "the score did not advance every interval: %r" % samples
    assert samples[-1] >= opened + env.interval * 1000, (samples, opened)
    assert env.metric("wakegate_session_exchanges_open") == 1
    deadline = time.monotonic() + 5
    while not got.endswith(b"0\r\n\r\n"):
        assert time.monotonic() < deadline, got
        data = c.read_some(timeout=3)
        assert data, "stream closed before its end: %r" % got
        got += data
    ended = now_ms()
    assert b"data: 2" in got, got
    _assert_stops_after_close(env, monitor, sid, ended)
    c.close()


# ================================================================ (c) probes

def test_probes_do_not_count_as_activity(make_env, monitor):
    env = make_env(interval="300ms")
    sid = "probed"
    env.running(sid)
    monitor.reset(env.r)
    probes = [get(sid, "/healthz"), get(sid, "/healthz?deep=1"),
              get(sid, "/data", headers=[("User-Agent", "kube-probe/1.29")]),
              get(sid, "/_wakegate/status")]
    for _ in range(5):
        for p in probes:
            assert one(env.port, p).status == 200
    # The non-waking ones were proxied to the running session all the same.
    targets = [q.target for q in env.up.requests]
    assert targets.count("/healthz") == 5 and targets.count("/data") == 5, targets
    time.sleep(env.interval * 3)
    monitor.sync(env.r)
    assert monitor.touches() == [], monitor.touches()
    assert env.score(sid) == OLD
    # The same session does move on a plain request: the check above can fail.
    assert one(env.port, get(sid, "/real")).status == 200
    wait_for(lambda: env.score(sid) > OLD, env.interval * 4, "a plain request to move the score")


# ================================================================ (d) during a sleep

@pytest.mark.parametrize("state", ["draining", "saving", "stopping"])
def test_requests_during_a_sleep_are_held_and_wake(make_env, state):
    # One worker loop: the test counts the wake commands of one session
    # cache (each loop's cache sends its own; the orchestrator coalesces).
    env = make_env(interval="500ms", wake_timeout="10s", workers=1)
    sid = "sleepy-" + state
    env.orch.put(sid, state, ip=LOCAL, port=env.up.port)
    api = Pending(env.port, get(sid, "/api/x"), name="api")
    nav = Pending(env.port, get(sid, "/page", headers=[("Sec-Fetch-Mode", "navigate"),
                                                      ("Accept", "text/html")]), name="navigation")
    # Probes get the state at once and wake nothing.
    r = one(env.port, get(sid, "/healthz"))
    assert r.status == 503 and json.loads(r.body) == {"session": sid, "state": state}, r
    r = one(env.port, get(sid, "/_wakegate/status"))
    assert r.status == 200 and json.loads(r.body)["state"] == state, r
    assert_silent([api, nav], 0.6)
    wakes = env.orch.wait_wakes(1)
    assert len(wakes) == 1, wakes
    assert wakes[0]["session"] == sid and wakes[0]["op"] == "wake", wakes
    assert env.up.requests == []

    env.orch.put(sid, "running", ip=LOCAL, port=env.up.port)
    assert collect([api, nav], 5) == [], "held requests not released"
    assert api.response.status == 200 and api.response.body == b"ok GET /api/x\n", api.response
    assert nav.response.status == 200 and nav.response.body == b"ok GET /page\n", nav.response
    assert len(env.orch.wakes()) == 1
    api.close()
    nav.close()


def test_asleep_navigation_still_gets_the_waking_page(make_env):
    """Unchanged outside the sleep sequence: asleep -> waking page."""
    env = make_env()
    env.orch.put("zzz", "asleep")
    r = one(env.port, get("zzz", "/", headers=[("Sec-Fetch-Mode", "navigate")]))
    assert r.status == 503 and b"Waking up zzz" in r.body, r
    assert len(env.orch.wait_wakes(1)) == 1


# ================================================================ (e) keepalive

TOKEN = "ka-token"


class Api:
    def __init__(self, gw, r):
        self.gw = gw
        self.r = r

    def call(self, method, path, body=None, auth=True):
        resp = self.gw.admin(method, path, body=body, token=TOKEN if auth else None)
        return resp.status, resp.json_or_body()

    def put(self, sid, state, score=None):
        write_record(self.r, sid, state, "nobody-serves-this")
        if score is not None:
            self.r.zadd(ACTIVE, {sid: score})

    def score(self, sid):
        return score(self.r, sid)


@pytest.fixture
def api(redis_server, start_wakegate):
    cfg = {
        "redis": {"url": redis_server.url},
        "docker": {"host": "unix:///nonexistent/wakegate-test-docker.sock", "name": "ka-host"},
        "admin": {"token": TOKEN},
    }
    gw = start_wakegate(cfg, args=["--role", "orchestrator"])
    return Api(gw, redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=5))


def ka(sid):
    return "/v1/sessions/%s/keepalive" % sid


def test_keepalive_moves_the_score_forward_only(api):
    api.put("kept", "running", score=OLD)
    t = now_ms()
    st, body = api.call("POST", ka("kept"), {"duration": "10m"})
    assert st == 200, body
    assert body["id"] == "kept" and body["state"] == "running", body
    until = body["keepalive_until"]
    assert t + 600_000 <= until <= now_ms() + 600_000, (t, until)
    assert api.score("kept") == until

    # Shorter: never moves activity back; the answer says how long it is kept.
    st, body = api.call("POST", ka("kept"), {"duration_ms": 1000})
    assert st == 200 and body["keepalive_until"] == until, body
    assert api.score("kept") == until

    # Longer, in ms.
    st, body = api.call("POST", ka("kept"), {"duration_ms": 3_600_000})
    assert st == 200 and body["keepalive_until"] > until, body
    assert api.score("kept") == body["keepalive_until"]

    # A paused session is awake too (it stays in wg:active).
    api.put("frozen", "paused", score=OLD)
    st, body = api.call("POST", ka("frozen"), {"duration": "30s"})
    assert st == 200 and body["state"] == "paused" and api.score("frozen") == body["keepalive_until"], body


def test_keepalive_refuses_sessions_that_are_not_awake(api):
    api.put("sleeper", "asleep")
    st, body = api.call("POST", ka("sleeper"), {"duration": "10m"})
    assert st == 409, body
    assert body["state"] == "asleep" and body["id"] == "sleeper" and "error" in body, body
    assert api.score("sleeper") is None  # XX: not added
    st, body = api.call("POST", ka("nosuch"), {"duration": "10m"})
    assert st == 404, body
    assert api.score("nosuch") is None


@pytest.mark.parametrize("body", [
    None, b"", b"not json", b"[1]", {}, {"duration": "10"}, {"duration": "0s"}, {"duration": "25h"},
    {"duration": 600}, {"duration_ms": -1}, {"duration_ms": 0}, {"duration_ms": 86_400_001},
    {"duration_ms": "600000"}, {"duration_ms": 1.5}, {"duration": "1m", "extra": 1},
    {"duration": "1m", "duration_ms": 60000},
])
def test_keepalive_bad_duration_is_400(api, body):
    api.put("kept", "running", score=OLD)
    st, got = api.call("POST", ka("kept"), body)
    assert st == 400, (body, got)
    assert isinstance(got, dict) and "error" in got, got
    assert api.score("kept") == OLD


def test_keepalive_limits_and_auth(api):
    api.put("kept", "running", score=OLD)
    st, body = api.call("POST", ka("kept"), {"duration": "24h"})
    assert st == 200, body
    st, _ = api.call("POST", ka("kept"), {"duration": "10m"}, auth=False)
    assert st == 401
    st, _ = api.call("GET", ka("kept"))
    assert st == 405
    st, _ = api.call("POST", ka("Bad.Id"), {"duration": "10m"})
    assert st == 400
    st, _ = api.call("POST", "/v1/sessions/kept/keepalive/more", {"duration": "10m"})
    assert st == 404
