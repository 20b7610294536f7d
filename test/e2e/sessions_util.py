"""Helpers for the session-route tests (test_proxy_sessions.py,
test_activity.py, test_metrics.py): the test plays the orchestrator through
Redis (records, wg:state messages, the wake stream), watches Redis with
MONITOR, and drives many raw client connections at once.

Nothing here starts processes but through the conftest fixtures. Every loop
is bounded in count or time.
"""

import dataclasses
import json
import re
import selectors
import socket
import threading
import time

import redis

from harness import rawhttp
from harness.http1 import parse_responses
from harness.util import now_ms, wait_for

HOST = "h1"  # docker.name of the orchestrator the proxy sends wakes to
WAKE_KEY = "wg:wake:" + HOST
DOMAIN = "preview.localhost"


def session_config(redis_url, port, path_port, wake_timeout="2s", **top):
    """The configuration of the brief: a host route and a path route with
    its own port, non-waking /healthz and kube-probe."""
    cfg = {
        "redis": {"url": redis_url},
        "docker": {"name": HOST},
        "sessions": {"wake_timeout": wake_timeout, "port": port},
        "non_waking": {"paths": ["/healthz"], "user_agents": ["kube-probe"]},
        "routes": [
            # Public: these tests are about waking and routing, not access
            # (test_access.py covers private routes, the default).
            {"match": {"host": "{session}." + DOMAIN}, "access": "public"},
            {"match": {"path_prefix": "/api/sessions/{session}/"}, "strip_prefix": True, "port": path_port,
             "access": "public"},
        ],
    }
    cfg.update(top)
    return cfg


class Orchestrator:
    """Writes records and publishes state messages the way common/store.c
    does: one atomic step (MULTI/EXEC here, a Lua script there) that writes
    the hash, bumps v, keeps wg:sessions and publishes
    {"id","state","v"[,"ip","port"]} on wg:state."""

    def __init__(self, url):
        self.url = url
        self.r = redis.Redis.from_url(url, decode_responses=True, socket_timeout=3, socket_connect_timeout=3)
        self.versions = {}

    def reconnect(self):
        self.r = redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=3, socket_connect_timeout=3)

    def put(self, sid, state, ip=None, port=None, host=HOST, publish=True, version=None):
        """Write wg:session:{sid} in `state` (ip/port removed when None) with
        v one more than the last one written (or `version`), and publish the
        change unless publish is False. Returns the time.monotonic() just
        before the write went out."""
        v = version if version is not None else self.versions.get(sid, 0) + 1
        self.versions[sid] = v
        key = "wg:session:" + sid
        now = now_ms()
        fields = {"id": sid, "state": state, "state_since": str(now), "host": host, "v": str(v)}
        msg = {"id": sid, "state": state, "v": v}
        if ip is not None:
            fields["ip"] = ip
            msg["ip"] = ip
        if port is not None:
            fields["port"] = str(port)
            msg["port"] = port
        p = self.r.pipeline(transaction=True)
        if not self.r.hexists(key, "created"):
            p.hset(key, "created", str(now))
        p.hset(key, mapping=fields)
        gone = [f for f, val in (("ip", ip), ("port", port)) if val is None]
        if gone:
            p.hdel(key, *gone)
        p.sadd("wg:sessions", sid)
        if publish:
            p.publish("wg:state", json.dumps(msg))
        t = time.monotonic()
        p.execute()
        return t

    def publish_only(self, sid, state, ip=None, port=None):
        v = self.versions.get(sid, 0) + 1
        self.versions[sid] = v
        msg = {"id": sid, "state": state, "v": v}
        if ip is not None:
            msg["ip"] = ip
        if port is not None:
            msg["port"] = port
        t = time.monotonic()
        self.r.publish("wg:state", json.dumps(msg))
        return t

    def wakes(self, key=WAKE_KEY):
        """Entries of the wake stream as dicts (with "_id")."""
        out = []
        for eid, fields in self.r.xrange(key):
            d = dict(fields)
            d["_id"] = eid
            out.append(d)
        return out

    def wait_wakes(self, n, timeout=3.0, key=WAKE_KEY):
        deadline = time.monotonic() + timeout
        while True:
            w = self.wakes(key)
            if len(w) >= n or time.monotonic() > deadline:
                return w
            time.sleep(0.01)

    def cmdstats(self):
        """{"hgetall": calls, ...} from INFO commandstats."""
        info = self.r.info("commandstats")
        return {k[len("cmdstat_"):]: v["calls"] for k, v in info.items() if k.startswith("cmdstat_")}

    def subscribers(self, channel="wg:state"):
        return dict(self.r.pubsub_numsub(channel)).get(channel, 0)


def wait_subscribed(orch, n=1, timeout=5.0):
    """Until wg:state has at least n subscribers (the proxy's cache)."""
    wait_for(lambda: orch.subscribers() >= n, timeout, "%d subscriber(s) on wg:state" % n, interval=0.01)


@dataclasses.dataclass
class ProxyEnv:
    """A role-proxy gateway, the Orchestrator the test plays, the
    redis-server, and the upstreams its records point at: up (a host route
    reaches the record's port) and up_path (the path route's own port)."""

    gw: object
    orch: Orchestrator
    redis: object
    up: object
    up_path: object = None

    @property
    def port(self):
        return self.gw.port

    def running(self, sid, publish=True, port=None):
        """A running record at 127.0.0.1:(port or up's); returns the time of the write."""
        return self.orch.put(sid, "running", ip="127.0.0.1", port=port or self.up.port, publish=publish)

    def metric(self, name):
        return self.gw.metrics().get(name)


def start_proxy(start_wakegate, cfg, orch):
    """A role-proxy gateway on cfg, once its session cache follows wg:state
    (orch sees the subscriber) and /readyz answers 200."""
    gw = start_wakegate(cfg, args=["--role", "proxy"])
    wait_subscribed(orch)
    gw.wait_ready(timeout=5)
    return gw


# ---------------------------------------------------------------- MONITOR

_ARG_RX = re.compile(r'"((?:[^"\\]|\\.)*)"')


class Monitor:
    """MONITOR on its own connection, in a thread: every command the server
    runs, as (server time in s, [args])."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
        buf = b""
        while b"+OK\r\n" not in buf:
            chunk = self.sock.recv(4096)
            assert chunk, "MONITOR connection closed"
            buf += chunk
        self._buf = buf.split(b"+OK\r\n", 1)[1]
        self._lock = threading.Lock()
        self._cmds = []
        self._stop = False
        self.sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, daemon=True, name="monitor")
        self._thread.start()

    def _run(self):
        while not self._stop:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            self._buf += chunk
            while b"\r\n" in self._buf:
                line, self._buf = self._buf.split(b"\r\n", 1)
                text = line.decode("utf-8", "replace")
                if not text.startswith("+"):
                    continue
                ts = float(text[1:].split(" ", 1)[0])
                args = [a.encode().decode("unicode_escape") for a in _ARG_RX.findall(text)]
                with self._lock:
                    self._cmds.append((ts, args))

    def commands(self):
        with self._lock:
            return list(self._cmds)

    def clear(self):
        with self._lock:
            self._cmds = []

    def reset(self, r):
        """Forgets every command sent before this call (on r or elsewhere)."""
        self.sync(r)
        self.clear()

    def sync(self, r):
        """Returns once every command sent before this call has been seen;
        returns the marker (an ECHO argument) that proved it."""
        marker = "sync-%d" % time.monotonic_ns()
        r.echo(marker)
        wait_for(lambda: any(a[:1] == ["ECHO"] and a[1:2] == [marker] for _, a in self.commands()),
                 5, "MONITOR to show the marker", interval=0.01)
        return marker

    def close(self):
        self._stop = True
        self._thread.join(timeout=5)
        self.sock.close()


# ---------------------------------------------------------------- clients

def req(method="GET", target="/", host=None, headers=(), body=b""):
    return rawhttp.request_bytes(method, target, host=host, headers=list(headers), body=body)


def host_of(sid):
    return "%s.%s" % (sid, DOMAIN)


class Pending:
    """One raw client connection with a request sent, whose answer is read
    later (many of these are watched at once by collect())."""

    def __init__(self, port, data=None, name="", methods=None):
        self.name = name
        self.conn = rawhttp.connect(port, timeout=10)
        self.sock = self.conn.sock
        self.buf = bytearray()
        self.eof = False
        self.done_at = None
        self.methods = methods
        if data:
            self.conn.send(data)

    def send(self, data):
        self.conn.send(data)

    def feed(self):
        """Reads what is there. Returns False on EOF or reset."""
        try:
            self.sock.settimeout(0)
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return True
        except (ConnectionResetError, OSError):
            self.eof = True
            return False
        finally:
            self.sock.settimeout(10)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    @property
    def responses(self):
        return parse_responses(bytes(self.buf), self.methods)

    @property
    def response(self):
        rs = self.responses
        assert rs, "%s: no complete response in %r (eof=%s)" % (self.name, bytes(self.buf[:300]), self.eof)
        return rs[0]

    def close(self):
        self.conn.close()


def assert_silent(pendings, seconds):
    """No connection receives a byte (nor closes) for `seconds`."""
    sel = selectors.DefaultSelector()
    for p in pendings:
        sel.register(p.sock, selectors.EVENT_READ, p)
    try:
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for key, _ in sel.select(left):
                p = key.data
                p.feed()
                raise AssertionError("%s answered while it should be held: %r (eof=%s)"
                                     % (p.name, bytes(p.buf[:300]), p.eof))
    finally:
        sel.close()


def collect(pendings, timeout, n=1):
    """Reads every connection until it has n complete responses (or closes,
    or timeout passes); sets .done_at (time.monotonic()) when the n-th one
    is complete. Returns the ones not done."""
    sel = selectors.DefaultSelector()
    left_over = []
    for p in pendings:
        if p.done_at is None:
            sel.register(p.sock, selectors.EVENT_READ, p)
            left_over.append(p)
    try:
        deadline = time.monotonic() + timeout
        waiting = set(left_over)
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(left):
                p = key.data
                alive = p.feed()
                if len(p.responses) >= n:
                    p.done_at = time.monotonic()
                if p.done_at is not None or not alive:
                    sel.unregister(p.sock)
                    waiting.discard(p)
        return [p for p in left_over if p.done_at is None]
    finally:
        sel.close()


def one(port, data, timeout=5.0, methods=None):
    """Send one request on a new connection; the first complete response."""
    r = rawhttp.send(port, data, timeout=timeout, until="responses", methods=methods)
    return r.response


class FastUpstream:
    """A minimal HTTP/1.1 upstream for many connections at once: one thread,
    one selector, listen backlog 4096 (the recording upstream's 128 drops
    SYNs under a burst of 1000 connects, which then wait for the kernel's
    1 s SYN retry). Bodiless requests only; answers 200 "ok <target>\\n",
    keep-alive. .targets lists what it answered."""

    def __init__(self):
        import threading
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4096)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.targets = []
        self.accepted = 0
        self._stop = False
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.lsock, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, daemon=True, name="fast-upstream")
        self._thread.start()

    def _run(self):
        bufs = {}
        while not self._stop:
            for key, _ in self._sel.select(0.1):
                if key.data is None:
                    for _ in range(256):
                        try:
                            s, _ = self.lsock.accept()
                        except (BlockingIOError, OSError):
                            break
                        s.setblocking(False)
                        self.accepted += 1
                        bufs[s] = bytearray()
                        self._sel.register(s, selectors.EVENT_READ, "c")
                    continue
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._sel.unregister(s)
                    bufs.pop(s, None)
                    s.close()
                    continue
                b = bufs[s]
                b += data
                while b"\r\n\r\n" in b:
                    head, _, rest = bytes(b).partition(b"\r\n\r\n")
                    b[:] = rest
                    target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1")
                    self.targets.append(target)
                    body = ("ok %s\n" % target).encode()
                    try:
                        s.setblocking(True)
                        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                        s.setblocking(False)
                    except OSError:
                        pass
        for key in list(self._sel.get_map().values()):
            key.fileobj.close()
        self._sel.close()

    def stop(self):
        self._stop = True
        self._thread.join(timeout=5)
