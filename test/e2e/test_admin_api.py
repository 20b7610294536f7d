"""End-to-end: the admin API (/v1/...) of the real binary against a real
redis-server. The Docker host points at a socket that does not exist: these
tests look at what the API writes to Redis and answers, not at containers.
Where a test needs a session to change state it plays the orchestrator
through Redis itself, on a record whose host no orchestrator serves."""

import json
import socket
import threading
import time

import pytest
import redis

from bus_util import write_record
from harness import rawhttp
from harness.util import wait_for

TOKEN = "t0k"
HOST = "api-host"           # docker.name: where commands for API-made sessions go
ELSEWHERE = "other-host"    # a host no orchestrator serves, for records made by hand


def api_config(redis_url, token=TOKEN, **sessions):
    cfg = {
        "redis": {"url": redis_url},
        "docker": {"host": "unix:///nonexistent/wakegate-test-docker.sock", "name": HOST},
        # The images and bind sources the tests below name (issue 10: a
        # template refuses any other).
        "sessions": {"wake_timeout": "2s", "images": ["other:1", "registry.local/*"],
                     "binds": {"allow": ["/srv/", "cache"]}},
        "log": {"level": "debug"},
    }
    cfg["sessions"].update(sessions)
    if token is not None:
        cfg["admin"] = {"token": token}
    return cfg


class Api:
    def __init__(self, gw, redis_url):
        self.gw = gw
        self.r = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=3)

    def call(self, method, path, body=None, headers=None, auth=True, timeout=10.0):
        """(status, headers lowercased, parsed JSON or raw bytes)."""
        r = self.gw.admin(method, path, body=body, token=TOKEN if auth else None, headers=headers, timeout=timeout)
        return r.status, r.headers, r.json_or_body()

    def wakes(self, host=HOST):
        return [dict(f, _id=i) for i, f in self.r.xrange("wg:wake:" + host)]

    def events(self):
        return [dict(f, _id=i) for i, f in self.r.xrange("wg:events")]

    def put_record(self, sid, state, host=ELSEWHERE, v=1, error=None, publish=False):
        """A record written the way common/store.c writes one."""
        extra = {} if error is None else {"error": error}
        write_record(self.r, sid, state, host, v=v, publish=publish, **extra)


@pytest.fixture
def api(redis_server, start_wakegate):
    gw = start_wakegate(api_config(redis_server.url), args=["--role", "orchestrator"])
    return Api(gw, redis_server.url)


def api_writes(r):
    """What the API could have written: records, the session set, events,
    wake commands. (The orchestrator part keeps its own keys: its
    heartbeat, the consumer group of its wake stream.)"""
    wakes = {k: r.xlen(k) for k in r.keys("wg:wake:*")}
    return {"records": sorted(r.keys("wg:session*")), "events": r.xlen("wg:events"),
            "commands": sum(wakes.values())}


NOTHING = {"records": [], "events": 0, "commands": 0}


# ================================================================ authentication

def test_v1_needs_the_bearer_token(api):
    st, h, body = api.call("GET", "/v1/sessions", auth=False)
    assert st == 401
    assert h.get("www-authenticate", "").startswith("Bearer"), h
    assert body == {"error": "unauthorized"}
    for value in ("Bearer wrong", "Bearer t0k0", "Bearer t0", "Basic dDBrOg==", "t0k", "Bearer"):
        st, h, _ = api.call("GET", "/v1/sessions", auth=False, headers={"Authorization": value})
        assert st == 401, value
        assert "www-authenticate" in h, value
    st, _, body = api.call("GET", "/v1/sessions", auth=False, headers={"Authorization": "bearer  " + TOKEN})
    assert st == 200 and body == []
    # Every /v1 path and method is protected, known or not.
    for method, path in (("POST", "/v1/sessions"), ("GET", "/v1/events"), ("DELETE", "/v1/sessions/x"),
                         ("GET", "/v1/nope"), ("GET", "/v1")):
        st, _, _ = api.call(method, path, auth=False, body={} if method == "POST" else None)
        assert st == 401, (method, path)
    assert api_writes(api.r) == NOTHING


def test_health_metrics_and_readiness_need_no_token(api):
    st, _, body = api.call("GET", "/healthz", auth=False)
    assert st == 200 and body == {"status": "ok"}
    st, h, _ = api.call("GET", "/metrics", auth=False)
    assert st == 200 and h["content-type"].startswith("text/plain")
    st, _, _ = api.call("GET", "/readyz", auth=False)
    assert st in (200, 503)  # the Docker host is fake; it answers either way


def test_no_token_configured_refuses_v1_with_503(redis_server, start_wakegate):
    gw = start_wakegate(api_config(redis_server.url, token=None), args=["--role", "orchestrator"])
    a = Api(gw, redis_server.url)
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer anything"}):
        st, _, body = a.call("GET", "/v1/sessions", auth=False, headers=headers)
        assert st == 503 and body == {"error": "admin token not configured"}
    assert a.call("GET", "/healthz", auth=False)[0] == 200
    assert api_writes(a.r) == NOTHING


def test_public_listener_never_serves_the_api(redis_server, start_wakegate):
    gw = start_wakegate(api_config(redis_server.url))  # role all: proxy and API
    a = Api(gw, redis_server.url)
    assert a.call("GET", "/v1/sessions")[0] == 200
    for path in ("/v1/sessions", "/v1/events", "/healthz"):
        r = rawhttp.send(gw.port, ("GET %s HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer t0k\r\n"
                                   "Connection: close\r\n\r\n" % path).encode(), timeout=3)
        assert r.status == 404, (path, r.data[:200])
        assert b"[" not in r.response.body and b"text/event-stream" not in r.data


# ================================================================ create

def test_create_201_then_get_or_create_200(api):
    body = {"id": "s-1", "cmd": ["sh", "-c", "httpd"], "env": ["A=1", "B="], "labels": {"team": "x"},
            "binds": ["/srv/s-1:/workspace", "cache:/root/.cache:ro"], "idle": {"pause_after": "30s", "stop_after": "20m"},
            "save": {"command": ["git", "push"], "timeout": "10s"}}
    st, _, rec = api.call("POST", "/v1/sessions", body)
    assert st == 201, rec
    assert rec["id"] == "s-1" and rec["state"] == "asleep"
    assert rec["host"] == HOST and rec["image"] == "wakegate-demo:latest" and rec["port"] == 8080
    assert rec["container_id"] is None and rec["ip"] is None and rec["last_save"] is None and rec["error"] is None
    assert rec["idle"] == {"pause_after_ms": 30000, "stop_after_ms": 1200000}
    for k in ("state_since", "last_active"):
        assert k in rec
    h = api.r.hgetall("wg:session:s-1")
    assert h["state"] == "asleep" and h["host"] == HOST and h["port"] == "8080"
    spec = json.loads(h["spec"])
    assert spec == {k: body[k] for k in ("cmd", "env", "labels", "binds", "save")}
    assert "idle" not in spec and "id" not in spec
    assert api.r.sismember("wg:sessions", "s-1")
    ev = [e for e in api.events() if e["id"] == "s-1"]
    assert [(e["from"], e["to"]) for e in ev] == [("", "creating"), ("creating", "asleep")]

    # The same id again, even with another body: 200 and the record unchanged.
    st, _, again = api.call("POST", "/v1/sessions", {"id": "s-1", "image": "other:1", "port": 9000})
    assert st == 200
    assert again == rec
    assert api.r.hgetall("wg:session:s-1") == h
    assert len([e for e in api.events() if e["id"] == "s-1"]) == 2


def test_create_takes_image_and_port(api):
    st, _, rec = api.call("POST", "/v1/sessions", {"id": "p1", "image": "registry.local/app:2", "port": 3000,
                                                   "cmd": None})
    assert st == 201
    assert rec["image"] == "registry.local/app:2" and rec["port"] == 3000
    assert "spec" not in api.r.hgetall("wg:session:p1")


def test_create_for_a_client_that_left_still_ends_asleep(api):
    body = json.dumps({"id": "left"}).encode()
    s = socket.create_connection(("127.0.0.1", api.gw.admin_port), timeout=3)
    s.sendall(b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0k\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    s.close()
    wait_for(lambda: api.r.hget("wg:session:left", "state") == "asleep", 3,
             lambda: "the record to be asleep: %r" % api.r.hgetall("wg:session:left"), interval=0.01)
    assert api.gw.alive()


BAD_BODIES = [
    (b"", "body"),
    (b"{", "body"),
    (b"[1]", "body"),
    (b'"s"', "body"),
    (b'{"id":"a","id":"b"}', "body"),
    ({"image": "x"}, 'field \\"id\\"'),
    ({"id": 7}, 'field \\"id\\"'),
    ({"id": "Upper"}, 'field \\"id\\"'),
    ({"id": "-lead"}, 'field \\"id\\"'),
    ({"id": "a" * 64}, 'field \\"id\\"'),
    ({"id": "ok", "imagee": "x"}, 'unknown field \\"imagee\\"'),
    ({"id": "ok", "image": ""}, 'field \\"image\\"'),
    ({"id": "ok", "image": "has space"}, 'field \\"image\\"'),
    ({"id": "ok", "image": 5}, 'field \\"image\\"'),
    ({"id": "ok", "port": 0}, 'field \\"port\\"'),
    ({"id": "ok", "port": 65536}, 'field \\"port\\"'),
    ({"id": "ok", "port": "80"}, 'field \\"port\\"'),
    ({"id": "ok", "port": 80.5}, 'field \\"port\\"'),
    ({"id": "ok", "cmd": "sh"}, 'field \\"cmd\\"'),
    ({"id": "ok", "cmd": ["sh", 1]}, 'field \\"cmd[1]\\"'),
    ({"id": "ok", "env": ["NOEQUALS"]}, 'field \\"env[0]\\"'),
    ({"id": "ok", "env": ["=v"]}, 'field \\"env[0]\\"'),
    ({"id": "ok", "labels": ["a"]}, 'field \\"labels\\"'),
    ({"id": "ok", "labels": {"a": 1}}, 'field \\"labels.a\\"'),
    ({"id": "ok", "labels": {"wakegate.session": "x"}}, 'field \\"labels.wakegate.session\\"'),
    ({"id": "ok", "binds": ["/only"]}, 'field \\"binds[0]\\"'),
    ({"id": "ok", "binds": ["/a:relative"]}, 'field \\"binds[0]\\"'),
    ({"id": "ok", "binds": ["/a:/b:rx"]}, 'field \\"binds[0]\\"'),
    ({"id": "ok", "idle": {"stop_after": "soon"}}, 'field \\"idle.stop_after\\"'),
    ({"id": "ok", "idle": {"stop_after": 5}}, 'field \\"idle.stop_after\\"'),
    ({"id": "ok", "idle": {"sleep_after": "5s"}}, 'unknown field \\"idle.sleep_after\\"'),
    ({"id": "ok", "idle": "5s"}, 'field \\"idle\\"'),
    ({"id": "ok", "idle": {"pause_after": "30m", "stop_after": "10m"}},
     'field \\"idle.pause_after\\": 1800000ms is not shorter than idle.stop_after'),
    ({"id": "ok", "save": {"command": []}}, 'field \\"save.command\\"'),
    ({"id": "ok", "save": {"timeout": "0s"}}, 'field \\"save.timeout\\"'),
    ({"id": "ok", "save": {"on_failure": "explode"}}, 'field \\"save.on_failure\\"'),
    ({"id": "ok", "save": {"extra": 1}}, 'unknown field \\"save.extra\\"'),
    ({"id": "ok", "cmd": ["x" * 4000] * 5}, "16384"),
    # What the Docker client would refuse at the first wake (issue 12): one
    # string over 4096 bytes, a control character outside a command.
    ({"id": "ok", "cmd": ["x" * 20000]}, 'field \\"cmd[0]\\": must be UTF-8 text of at most 4096 bytes'),
    ({"id": "ok", "env": ["A=b\nc"]}, 'field \\"env[0]\\": must be UTF-8 text'),
    ({"id": "ok", "env": ["A=\u0007"]}, 'field \\"env[0]\\"'),
    ({"id": "ok", "labels": {"k": "v\r"}}, 'field \\"labels.k\\": must be UTF-8 text'),
    ({"id": "ok", "binds": ["/srv/a\x7f:/c"]}, 'field \\"binds[0]\\"'),
]


@pytest.mark.parametrize("body,named", BAD_BODIES, ids=[str(i) for i in range(len(BAD_BODIES))])
def test_create_rejects_bad_bodies_and_writes_nothing(api, body, named):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    st, _, answer = api.call("POST", "/v1/sessions", raw)
    assert st == 400, answer
    assert isinstance(answer, dict) and set(answer) == {"error"}, answer
    assert named in json.dumps(answer), answer
    assert api_writes(api.r) == NOTHING


# ================================================================ read

def test_list_get_404_400_405(api):
    for sid in ("b2", "a1", "c3"):
        assert api.call("POST", "/v1/sessions", {"id": sid})[0] == 201
    st, _, lst = api.call("GET", "/v1/sessions")
    assert st == 200 and [s["id"] for s in lst] == ["a1", "b2", "c3"]
    st, _, one = api.call("GET", "/v1/sessions/b2")
    assert st == 200 and one == lst[1]
    for k in ("id", "state", "state_since", "host", "container_id", "ip", "port", "last_active", "last_save", "error"):
        assert k in one, k
    st, _, body = api.call("GET", "/v1/sessions/zz")
    assert st == 404 and "error" in body
    for path in ("/v1/nothing", "/v1/sessions/a1/poke", "/v1/sessions/a1/wake/x", "/v1/sessions/"):
        assert api.call("GET", path)[0] == 404, path
    st, h, _ = api.call("PUT", "/v1/sessions/a1")
    assert st == 405 and "DELETE" in h["allow"]
    st, h, _ = api.call("GET", "/v1/sessions/a1/wake")
    assert st == 405 and h["allow"] == "POST"
    st, h, _ = api.call("POST", "/v1/events", {})
    assert st == 405 and h["allow"] == "GET"


def test_ids_in_paths_are_checked_before_redis(api, redis_server):
    # With Redis gone, anything that asked it would be a 503: a 400 proves
    # the id was refused first.
    redis_server.stop()
    for method, path in (("GET", "/v1/sessions/UPPER"), ("GET", "/v1/sessions/a.b"),
                         ("GET", "/v1/sessions/%2e%2e"), ("POST", "/v1/sessions/-x/wake"),
                         ("POST", "/v1/sessions/a_/sleep?wait=1"), ("DELETE", "/v1/sessions/x%20y?force=1"),
                         ("GET", "/v1/sessions/" + "a" * 64)):
        st, _, body = api.call(method, path)
        if path.startswith("/v1/sessions/a_/"):
            assert st == 503, (path, body)  # a valid id: Redis is asked, and is down
        elif "%2e" in path:
            assert st == 400, (path, body)  # a dot segment: refused with the request line
        else:
            assert st == 400 and body == {"error": "invalid session id"}, path
    st, _, body = api.call("POST", "/v1/sessions", {"id": "BAD"})
    assert st == 400
    st, h, body = api.call("POST", "/v1/sessions", {"id": "good"})
    assert st == 503 and body == {"error": "redis unavailable"} and "retry-after" in h


# ================================================================ commands

def test_wake_sleep_destroy_queue_commands(api):
    # A record on a host no orchestrator serves, so nothing acts on them.
    api.put_record("w1", "asleep")
    st, _, body = api.call("POST", "/v1/sessions/w1/wake")
    assert st == 202, body
    assert body["state"] == "asleep" and body["op"] == "wake" and body["id"] == "w1"
    st, _, body = api.call("POST", "/v1/sessions/w1/sleep")
    assert st == 202 and body["op"] == "sleep"
    st, _, body = api.call("DELETE", "/v1/sessions/w1")
    assert st == 202 and body["op"] == "destroy" and body["force"] is False
    st, _, body = api.call("DELETE", "/v1/sessions/w1?force=1")
    assert st == 202 and body["force"] is True
    w = api.wakes(ELSEWHERE)
    assert [(e["session"], e["op"], e.get("from"), e.get("force")) for e in w] == [
        ("w1", "wake", "api", None), ("w1", "sleep", "api", None), ("w1", "destroy", "api", None),
        ("w1", "destroy", "api", "1")]
    assert body["command_id"] == w[-1]["_id"]
    for e in w:
        assert int(e["at"]) > 0
    # Unknown session: 404 and no command.
    st, _, _ = api.call("POST", "/v1/sessions/ghost/wake")
    assert st == 404
    st, _, _ = api.call("DELETE", "/v1/sessions/ghost?force=1")
    assert st == 404
    assert len(api.wakes(ELSEWHERE)) == 4 and api.wakes() == []
    st, _, body = api.call("POST", "/v1/sessions/w1/wake?wait=maybe")
    assert st == 400 and "wait" in body["error"]
    st, _, body = api.call("DELETE", "/v1/sessions/w1?force=yes")
    assert st == 400 and "force" in body["error"]
    assert len(api.wakes(ELSEWHERE)) == 4


def test_commands_for_api_sessions_go_to_docker_name(api):
    assert api.call("POST", "/v1/sessions", {"id": "mine"})[0] == 201
    st, _, body = api.call("POST", "/v1/sessions/mine/wake")
    assert st == 202
    w = api.wakes(HOST)
    assert [(e["session"], e["op"], e["from"]) for e in w] == [("mine", "wake", "api")]
    assert body["command_id"] == w[0]["_id"]


def _in_thread(fn):
    out = {}

    def run():
        try:
            out["result"] = fn()
        except Exception as e:  # noqa: BLE001 - reported by the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _wait_command(api, sid, op, host=ELSEWHERE, timeout=3.0):
    wait_for(lambda: any(e["session"] == sid and e["op"] == op for e in api.wakes(host)), timeout,
             "a %s command for %s on wg:wake:%s" % (op, sid, host), interval=0.01)


def _waiting(api, sid, op):
    """POST /v1/sessions/{sid}/{op}?wait=1 in a thread, once its command is
    queued (the API now waits): (thread, {"result": ...} when answered)."""
    t, out = _in_thread(lambda: api.call("POST", "/v1/sessions/%s/%s?wait=1" % (sid, op)))
    _wait_command(api, sid, op)
    return t, out


def _answer(t, out):
    """The waiting call's (status, headers, body), once it is answered (5 s at most)."""
    t.join(5)
    return out["result"]


def test_wake_wait_answers_when_running(api):
    api.put_record("ww", "asleep")
    t, out = _waiting(api, "ww", "wake")
    time.sleep(0.2)
    assert t.is_alive(), out  # still waiting: asleep is not running
    api.put_record("ww", "starting", v=2, publish=True)
    time.sleep(0.2)
    assert t.is_alive(), out
    api.r.hset("wg:session:ww", mapping={"ip": "10.1.2.3", "port": "8080"})
    api.put_record("ww", "running", v=3, publish=True)
    st, _, body = _answer(t, out)
    assert st == 200, body
    assert body["state"] == "running" and body["ip"] == "10.1.2.3"


def test_wake_wait_already_running_answers_without_a_change(api):
    api.put_record("wr", "running")
    st, _, body = api.call("POST", "/v1/sessions/wr/wake?wait=1")
    assert st == 200 and body["state"] == "running"
    assert [e["op"] for e in api.wakes(ELSEWHERE)] == ["wake"]


def test_wake_wait_failed_is_502_with_the_error(api):
    # Failed before the wake: that old failure does not end the wait...
    api.put_record("wf", "failed", error="old failure")
    t, out = _waiting(api, "wf", "wake")
    time.sleep(0.3)
    assert t.is_alive(), out
    # ...a new one after a start does.
    api.put_record("wf", "starting", v=2, publish=True)
    api.put_record("wf", "failed", v=3, error="start deadline passed", publish=True)
    st, _, body = _answer(t, out)
    assert st == 502, body
    assert body["error"] == "start deadline passed"
    assert body["session"]["state"] == "failed"


def test_wake_wait_times_out_with_504_and_retry_after(redis_server, start_wakegate):
    gw = start_wakegate(api_config(redis_server.url, wake_timeout="1s"), args=["--role", "orchestrator"])
    a = Api(gw, redis_server.url)
    a.put_record("slow", "asleep")
    t0 = time.monotonic()
    st, h, body = a.call("POST", "/v1/sessions/slow/wake?wait=1")
    took = time.monotonic() - t0
    assert st == 504, body
    assert int(h["retry-after"]) > 0
    assert body["state"] == "asleep"
    assert 0.9 <= took < 2.5, took


def test_sleep_wait_answers_when_asleep_or_paused(api):
    api.put_record("sl", "running")
    t, out = _waiting(api, "sl", "sleep")
    api.put_record("sl", "draining", v=2, publish=True)
    time.sleep(0.2)
    assert t.is_alive(), out
    api.put_record("sl", "paused", v=3, publish=True)
    st, _, body = _answer(t, out)
    assert st == 200 and body["state"] == "paused"


def test_wait_sees_a_silent_change_by_polling(api):
    # No message at all: the record changes silently. The wait's slow poll
    # of the record still finds it.
    api.put_record("quiet", "asleep")
    t, out = _waiting(api, "quiet", "wake")
    api.put_record("quiet", "running", v=2, publish=False)
    st, _, body = _answer(t, out)
    assert st == 200 and body["state"] == "running"


def test_client_gone_while_waiting_is_forgotten(api):
    api.put_record("gone", "asleep")
    s = socket.create_connection(("127.0.0.1", api.gw.admin_port), timeout=3)
    s.sendall(b"POST /v1/sessions/gone/wake?wait=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0k\r\n"
              b"Content-Length: 0\r\n\r\n")
    _wait_command(api, "gone", "wake")
    s.close()
    time.sleep(0.2)
    api.put_record("gone", "running", v=2, publish=True)
    time.sleep(0.3)
    # Still serving, nothing crashed (the sanitizer build checks the rest).
    assert api.call("GET", "/v1/sessions/gone")[0] == 200
    assert api.gw.alive()


# ================================================================ events

class Sse:
    """A raw SSE client: sends the request, decodes chunked framing, splits
    messages. Comments are kept as {"comment": text}."""

    def __init__(self, port, path="/v1/events", headers=None, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))
        h = {"Host": "admin", "Authorization": "Bearer " + TOKEN, "Accept": "text/event-stream"}
        h.update(headers or {})
        req = "GET %s HTTP/1.1\r\n%s\r\n" % (path, "".join("%s: %s\r\n" % kv for kv in h.items()))
        self.sock.sendall(req.encode())
        self.raw = b""
        self.status = None
        self.headers = {}
        self.body = b""
        self.messages = []
        self.eof = False

    def _pump(self, timeout):
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except OSError:
            self.eof = True
            return False
        if not chunk:
            self.eof = True
            return False
        self.raw += chunk
        self._parse()
        return True

    def _parse(self):
        if self.status is None:
            if b"\r\n\r\n" not in self.raw:
                return
            head, self.raw = self.raw.split(b"\r\n\r\n", 1)
            lines = head.decode().split("\r\n")
            self.status = int(lines[0].split()[1])
            self.headers = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:]}
        while True:  # chunked
            if b"\r\n" not in self.raw:
                return
            size_line, rest = self.raw.split(b"\r\n", 1)
            size = int(size_line, 16)
            if len(rest) < size + 2:
                return
            self.body += rest[:size]
            self.raw = rest[size + 2:]
            if size == 0:
                self.eof = True
                return
            while b"\n\n" in self.body:
                msg, self.body = self.body.split(b"\n\n", 1)
                self.messages.append(_sse_parse(msg.decode()))

    def wait_for(self, pred, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not pred(self.messages):
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                raise AssertionError("SSE: condition not met in %.1fs (eof=%s); messages: %r" % (timeout, self.eof, self.messages[-10:]))
            self._pump(min(left, 0.5))
        return self.messages

    def events(self):
        return [m for m in self.messages if "id" in m]

    def close(self):
        self.sock.close()


def _sse_parse(text):
    m = {}
    for line in text.split("\n"):
        if line.startswith(":"):
            m["comment"] = line[1:].strip()
        elif ":" in line:
            k, v = line.split(":", 1)
            m[k] = v[1:] if v.startswith(" ") else v
    if "data" in m:
        m["json"] = json.loads(m["data"])
    return m


def test_events_replay_after_last_event_id_then_live(api):
    assert api.call("POST", "/v1/sessions", {"id": "e1"})[0] == 201
    assert api.call("POST", "/v1/sessions", {"id": "e2"})[0] == 201
    evs = api.events()
    assert [(e["id"], e["to"]) for e in evs] == [("e1", "creating"), ("e1", "asleep"), ("e2", "creating"),
                                                 ("e2", "asleep")]
    first = evs[0]["_id"]
    sse = Sse(api.gw.admin_port, headers={"Last-Event-ID": first})
    try:
        sse.wait_for(lambda ms: len([m for m in ms if "id" in m]) >= 3)
        assert sse.status == 200
        assert sse.headers["content-type"].startswith("text/event-stream")
        got = sse.events()
        assert [m["id"] for m in got] == [e["_id"] for e in evs[1:]]
        assert got[0]["event"] == "transition"
        assert got[0]["json"] == {"id": "e1", "type": "transition", "from": "creating", "to": "asleep",
                                  "at": int(evs[1]["at"]), "v": 2, "detail": {"by": "api"}}
        # Live: a transition shows up on the open stream.
        assert api.call("POST", "/v1/sessions", {"id": "e3"})[0] == 201
        sse.wait_for(lambda ms: sum(1 for m in ms if m.get("json", {}).get("id") == "e3") >= 2, timeout=3)
        ids = [m["id"] for m in sse.events()]
        assert ids == [e["_id"] for e in api.events()[1:]]
        assert len(ids) == len(set(ids))
    finally:
        sse.close()


def test_events_since_query_zero_and_live_only(api):
    assert api.call("POST", "/v1/sessions", {"id": "q1"})[0] == 201
    evs = api.events()
    everything = Sse(api.gw.admin_port, path="/v1/events?since=0")
    live_only = Sse(api.gw.admin_port)
    try:
        everything.wait_for(lambda ms: len([m for m in ms if "id" in m]) >= 2)
        assert [m["id"] for m in everything.events()] == [e["_id"] for e in evs]
        live_only.wait_for(lambda ms: any(m.get("comment") for m in ms))  # the hello comment
        time.sleep(0.3)
        assert live_only.events() == []
        # An event added by someone else (the store's event shape).
        eid = api.r.xadd("wg:events", {"id": "q1", "type": "save", "at": "123", "detail": '{"ok":true}'})
        for c in (everything, live_only):
            c.wait_for(lambda ms: any(m.get("id") == eid for m in ms), timeout=3)
        m = [m for m in live_only.events() if m["id"] == eid][0]
        assert m["event"] == "save" and m["json"] == {"id": "q1", "type": "save", "at": 123, "detail": {"ok": True}}
        assert [m["id"] for m in live_only.events()] == [eid]
    finally:
        everything.close()
        live_only.close()


def test_events_since_the_largest_id_is_live_only(api):
    sse = Sse(api.gw.admin_port, headers={"Last-Event-ID": "18446744073709551615-18446744073709551615"})
    try:
        sse.wait_for(lambda ms: any(m.get("comment") for m in ms))
        assert sse.status == 200
        time.sleep(0.3)
        assert api.call("POST", "/v1/sessions", {"id": "after-max"})[0] == 201
        sse.wait_for(lambda ms: len([m for m in ms if "id" in m]) >= 2, timeout=3)
    finally:
        sse.close()


def test_events_bad_last_event_id_is_400(api):
    for headers, path in (({"Last-Event-ID": "abc"}, "/v1/events"), ({}, "/v1/events?since=1-x"),
                          ({"Last-Event-ID": "1-2-3"}, "/v1/events")):
        st, _, body = api.call("GET", path, headers=headers)
        assert st == 400 and "error" in body, (headers, path)


def test_events_many_clients_one_reader(api):
    conns0 = len(api.r.client_list())
    clients = [Sse(api.gw.admin_port) for _ in range(20)]
    try:
        for c in clients:
            c.wait_for(lambda ms: any(m.get("comment") for m in ms))
        time.sleep(0.3)
        assert api.call("POST", "/v1/sessions", {"id": "fan"})[0] == 201
        for c in clients:
            c.wait_for(lambda ms: len([m for m in ms if "id" in m]) >= 2, timeout=3)
        # One reader connection for all of them, not one each.
        assert len(api.r.client_list()) - conns0 <= 2
        xreads = api.r.info("commandstats").get("cmdstat_xread", {}).get("calls", 0)
        assert xreads < 20, xreads
    finally:
        for c in clients:
            c.close()


@pytest.mark.slow
def test_events_heartbeat(api):
    sse = Sse(api.gw.admin_port)
    try:
        sse.wait_for(lambda ms: any(m.get("comment") == "ping" for m in ms), timeout=20)
    finally:
        sse.close()


@pytest.mark.slow
def test_events_client_that_reads_nothing_is_dropped(api):
    sse = Sse(api.gw.admin_port, rcvbuf=4096)
    try:
        sse.wait_for(lambda ms: any(m.get("comment") for m in ms))
        rss0 = api.gw.rss_kib()
        detail = json.dumps({"pad": "x" * 15000})
        # ~24 MiB of events, far past what the kernel and the 1 MiB cap hold.
        for i in range(1600):
            api.r.xadd("wg:events", {"id": "flood", "type": "flood", "at": str(i), "detail": detail})
        time.sleep(1.5)
        rss1 = api.gw.rss_kib()
        assert rss1 - rss0 < 64 * 1024, (rss0, rss1)
        # Reading now: the stream ends (dropped) long before the last event.
        deadline = time.monotonic() + 20
        while not sse.eof and time.monotonic() < deadline:
            sse._pump(0.5)
        assert sse.eof, "slow client was not dropped"
        seen = [m["json"]["at"] for m in sse.events() if m.get("event") == "flood"]
        assert len(seen) < 1600
        assert api.gw.alive() and api.call("GET", "/v1/sessions")[0] == 200
    finally:
        sse.close()
