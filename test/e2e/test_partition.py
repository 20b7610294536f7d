"""A gateway cut off from Redis while the orchestrator is not (issue 12,
finding 2): the gateway's session cache must never send a session's
requests to another session's container.

Two wakegate processes share one redis-server: an orchestrator (role
orchestrator: the admin API and Docker) connected to it directly, and a
gateway (role proxy) connected through a TCP relay that the test cuts
(every relayed connection closed, new ones refused) and restores.

Scenario: wake A through the gateway, cut the gateway's link, force A to
sleep and wake B through the admin API. Docker gives B the address A had.
The gateway still holds A as running at that address; requests for A must
get 503 with Retry-After (and a log line that says why), never B's body. A
session C that ran before the cut, reached over a keep-alive connection the
gateway opened while Redis confirmed C's container, is still served over
that connection. Once the link is back, A wakes again and answers as A.

The sessions run an app that answers every request with its session's name
over keep-alive connections (busybox nc, one shell per connection), so a
wrong answer is visible and the gateway can pool connections to it.
"""

import re
import selectors
import socket
import threading
import time

import pytest

import stack_util
from harness import image, rawhttp
from harness.util import free_port, wait_for

WHO_IMAGE = "wakegate-test-who:latest"
# One connection: every request is answered with the session's name; the
# connection stays open for the next one (HTTP/1.1 keep-alive).
WHO_SH = r"""#!/bin/sh
body="session=$WAKEGATE_SESSION"
cr=$(printf '\r')
while IFS= read -r line; do
  while IFS= read -r h; do
    case "$h" in ""|"$cr") break;; esac
  done
  printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s' "${#body}" "$body"
done
"""


@pytest.fixture(scope="module")
def who_image(dockerd, test_image):
    return image.build_image(dockerd, WHO_IMAGE, extra_files={"/who.sh": WHO_SH},
                             dockerfile_extra='RUN ["/bin/chmod", "755", "/who.sh"]',
                             cmd=["/bin/busybox", "nc", "-ll", "-p", "8080", "-e", "/who.sh"])


class Relay:
    """A TCP relay on 127.0.0.1 to target (host, port), run by one thread.
    cut() closes every relayed connection and the listening socket (new
    connections are refused); restore() listens again on the same port.
    freeze() keeps every connection open but carries nothing any more, and
    accepts new ones without connecting them: a partition that drops
    packets, where no peer learns anything."""

    def __init__(self, target):
        self.target = target
        self.port = free_port()
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.wake_r, self.wake_w = socket.socketpair()
        self.sel.register(self.wake_r, selectors.EVENT_READ, ("wake", None))
        self.listener = None
        self.peers = {}  # socket -> its other end
        self.ops = []
        self.stopping = False
        self.frozen = False
        self.accepted = 0
        self._listen()
        self.thread = threading.Thread(target=self._run, name="redis-relay", daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def _listen(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        s.setblocking(False)
        self.listener = s
        self.sel.register(s, selectors.EVENT_READ, ("listen", None))

    def _close_all(self):
        if self.listener is not None:
            self.sel.unregister(self.listener)
            self.listener.close()
            self.listener = None
        for s in list(self.peers):
            self._drop(s)

    def _drop(self, s):
        other = self.peers.pop(s, None)
        for x in (s, other):
            if x is None:
                continue
            self.peers.pop(x, None)
            try:
                self.sel.unregister(x)
            except (KeyError, ValueError):
                pass
            try:
                x.close()
            except OSError:
                pass

    def _call(self, op):
        """Runs op on the relay's thread and waits for it."""
        done = threading.Event()
        with self.lock:
            self.ops.append((op, done))
        self.wake_w.send(b"x")
        assert done.wait(5), "the relay thread did not answer"

    def cut(self):
        self._call(self._close_all)

    def restore(self):
        def op():
            self.frozen = False
            self._listen()
        self._call(op)

    def freeze(self):
        def op():
            self.frozen = True
        self._call(op)

    def stop(self):
        self.stopping = True
        self._call(self._close_all)
        self.thread.join(5)
        self.wake_r.close()
        self.wake_w.close()

    def _run(self):
        while not self.stopping:
            for key, _ in self.sel.select(0.5):
                kind, _ = key.data
                if kind == "wake":
                    self.wake_r.recv(64)
                    with self.lock:
                        ops, self.ops = self.ops, []
                    for op, done in ops:
                        op()
                        done.set()
                elif kind == "listen":
                    self._accept()
                elif key.fileobj in self.peers:
                    self._pump(key.fileobj)

    def _accept(self):
        try:
            c, _ = self.listener.accept()
        except OSError:
            return
        if self.frozen:
            c.setblocking(False)
            self.sel.register(c, selectors.EVENT_READ, ("peer", None))
            self.peers[c] = None
            return
        try:
            u = socket.create_connection(self.target, timeout=2)
        except OSError:
            c.close()
            return
        self.accepted += 1
        for s in (c, u):
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, ("peer", None))
        self.peers[c] = u
        self.peers[u] = c

    def _pump(self, s):
        try:
            data = s.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(s)
            return
        if self.frozen or self.peers.get(s) is None:
            return  # dropped on the floor
        try:
            self.peers[s].setblocking(True)
            self.peers[s].sendall(data)
            self.peers[s].setblocking(False)
        except OSError:
            self._drop(s)


@pytest.fixture
def relay(redis_server):
    r = Relay(("127.0.0.1", redis_server.port))
    try:
        yield r
    finally:
        r.stop()


def orch_cfg(redis_url, dockerd):
    cfg = stack_util.orch_config(redis_url, dockerd, wake_timeout="10s")
    cfg["admin"] = {"token": stack_util.TOKEN}
    cfg["sessions"]["image"] = WHO_IMAGE
    return cfg


def proxy_cfg(redis_url):
    return {
        "redis": {"url": redis_url},
        "docker": {"name": stack_util.HOST},
        # How long a request waits for Redis when nothing proves where its
        # session's container is, as it would wait for a wake.
        "sessions": {"port": 8080, "wake_timeout": "3s"},
        "routes": [{"match": {"host": "{session}." + stack_util.DOMAIN}, "access": "public"}],
        "log": {"level": "debug", "access": True},
        # One worker loop: the proof of a container's address is a pooled
        # connection and the cache's memory, both per loop, and the test
        # counts what one cache holds.
        "workers": 1,
    }


def get(gw, sid, timeout=15.0):
    r = rawhttp.send(gw.port, stack_util.req(sid), timeout=timeout, until="responses")
    assert r.responses, "no answer for %s within %.0fs (got %r); gateway tail:\n%s" % (
        sid, timeout, r.data[:300], gw.log_tail(30))
    return r.responses[0]


def api(orch, method, path):
    r = orch.admin(method, path, token=stack_util.TOKEN, timeout=20.0)
    return r.status, r.json_or_body()


def start_stack(redis_server, relay, dockerd, start_wakegate):
    """The orchestrator on Redis, the gateway through the relay, sessions A,
    B and C, A and C woken by requests through the gateway, which then holds
    them as running and keeps an idle keep-alive connection to each
    container. Returns (bus, orchestrator, gateway, A's address)."""
    bus = stack_util._Bus(redis_server, dockerd, start_wakegate)
    orch = start_wakegate(orch_cfg(redis_server.url, dockerd), args=["--role", "orchestrator"])
    orch.wait_log(r"startup reconciliation done", timeout=15)
    orch.wait_ready(timeout=10)
    gw = start_wakegate(proxy_cfg(relay.url), args=["--role", "proxy"])
    gw.wait_ready(timeout=10)
    for sid in ("a", "b", "c"):
        r = orch.admin("POST", "/v1/sessions", body={"id": sid}, token=stack_util.TOKEN)
        assert r.status == 201, (r.status, r.body)
    for sid in ("a", "c"):
        for _ in range(2):
            resp = get(gw, sid)
            assert resp.status == 200 and resp.body == b"session=" + sid.encode(), (resp.status, resp.body)
    return bus, orch, gw, bus.record("a")["ip"]


def move_a_address_to_b(orch, a_ip):
    """Through the orchestrator: A forced to sleep, B woken on A's address."""
    st, got = api(orch, "POST", "/v1/sessions/a/sleep?wait=1&force=1")
    assert st == 200 and got["state"] == "asleep", (st, got)
    st, got = api(orch, "POST", "/v1/sessions/b/wake?wait=1")
    assert st == 200 and got["state"] == "running", (st, got)
    assert got["ip"] == a_ip, "Docker gave B %s, not A's old address %s: the scenario needs the reuse" % (
        got["ip"], a_ip)


def assert_a_refused(gw):
    """A's entry in the gateway still says running at A's old address,
    where B now runs, and no live connection to A's container proves the
    address A's: three requests at once are held for Redis, then get 503
    with Retry-After, never B's answer."""
    got = [None] * 3

    def one(i):
        got[i] = get(gw, "a", timeout=20)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for resp in got:
        assert resp is not None, "no answer for A"
        assert resp.body != b"session=b", "B's container answered a request for A"
        assert resp.status == 503, (resp.status, resp.body)
        assert resp.headers.get("retry-after"), resp.headers
    gw.wait_log(r"holding the request.*session=a\b", timeout=1)
    line = gw.wait_log(r"returning 503.*session=a\b", timeout=1)
    assert "redis" in line.lower(), line


def test_partitioned_gateway_never_answers_with_another_session(redis_server, relay, clean_engine, who_image,
                                                                start_wakegate):
    bus, orch, gw, a_ip = start_stack(redis_server, relay, clean_engine, start_wakegate)

    # The gateway loses Redis; the orchestrator does not.
    relay.cut()
    gw.wait_log(r"state channel lost", timeout=10)
    move_a_address_to_b(orch, a_ip)

    assert_a_refused(gw)

    # C: the connection opened while Redis confirmed C's container still
    # reaches that container.
    resp = get(gw, "c")
    assert resp.status == 200 and resp.body == b"session=c", (resp.status, resp.body)
    m = gw.metrics()
    assert m['wakegate_session_unconfirmed_requests_total{outcome="held"}'] == 3, m
    assert m["wakegate_session_unconfirmed_refused_total"] == 3, m
    assert m['wakegate_session_unconfirmed_requests_total{outcome="proven"}'] == 1, m

    # Link back: the gateway reads the records again; A wakes and is A.
    relay.restore()
    assert_recovers(gw, bus)


def assert_recovers(gw, bus):
    wait_for(lambda: gw.readyz()[0] == 200, 15, "the gateway ready again")
    resp = get(gw, "b")
    assert resp.status == 200 and resp.body == b"session=b", (resp.status, resp.body)
    resp = get(gw, "a", timeout=20)
    assert resp.status == 200 and resp.body == b"session=a", (resp.status, resp.body)
    assert bus.record("a")["state"] == "running"


def test_silent_partition_is_doubt_too(redis_server, relay, clean_engine, who_image, start_wakegate):
    """The link to Redis stops carrying bytes, and nothing closes: the
    gateway's subscriber hears nothing and would not notice for as long as
    TCP keepalive takes. Its own checks on the state channel stop coming
    back, so after redis.state_timeout (1 s) it is in doubt: not ready, and
    A's stale entry is refused as when the link is cut."""
    bus, orch, gw, a_ip = start_stack(redis_server, relay, clean_engine, start_wakegate)

    relay.freeze()
    noticed = True
    try:
        wait_for(lambda: gw.readyz()[0] == 503, 5, "the gateway not ready once its state channel is silent")
    except (AssertionError, TimeoutError):
        noticed = False
    move_a_address_to_b(orch, a_ip)
    assert_a_refused(gw)
    assert noticed, "the gateway never noticed its silent state channel"
    gw.wait_log(r"state channel silent", timeout=1)
    resp = get(gw, "c")
    assert resp.status == 200 and resp.body == b"session=c", (resp.status, resp.body)

    relay.cut()  # the held connections go; the gateway connects again
    relay.restore()
    assert_recovers(gw, bus)
