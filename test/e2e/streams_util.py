"""Helpers for test_proxy_streams.py and test_proxy_ops.py.

Nothing here starts wakegate or nginx: the conftest fixtures do. This module
adds what those two files need on top of the harness: a GET request's bytes,
an RSS sampler, /metrics and log readers, streaming senders and receivers
for GiB-sized bodies, a few recording-upstream handlers and a websockets echo
server run in a thread.
Every loop is bounded in count or time.
"""

import asyncio
import base64
import hashlib
import json
import re
import socket
import threading
import time
import zlib

from harness import http1
from harness.upstream import pattern, response_bytes
from harness.util import vm_rss_kib

MIB = 1 << 20
GIB = 1 << 30
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC11B65"


# ---------------------------------------------------------------- config

def proxy_config(upstream_addr, limits=None, upstream=None, log=None, routes=None, **top):
    """A config dict routing every path to upstream_addr (or the given routes)."""
    cfg = {"routes": routes if routes is not None else [{"match": {"path_prefix": "/"}, "upstream": upstream_addr}]}
    if limits:
        cfg["limits"] = dict(limits)
    if upstream:
        cfg["upstream"] = dict(upstream)
    if log:
        cfg["log"] = dict(log)
    cfg.update(top)
    return cfg


def raw_get(path, host="app.test", extra=""):
    """The bytes of a GET request; extra: more header lines, each ending in CRLF."""
    return ("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path, host, extra)).encode()


# ---------------------------------------------------------------- memory

class RssSampler:
    """Samples VmRSS of pid every `interval` seconds in a thread, for at most
    `limit` seconds. Use as a context manager; .max_kib, .samples."""

    def __init__(self, pid, interval=0.1, limit=600.0):
        self.pid = pid
        self.interval = interval
        self.limit = limit
        self.samples = []  # (monotonic, kib)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-%d" % pid)

    def _read(self):
        return vm_rss_kib(self.pid)

    def _run(self):
        end = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < end:
            v = self._read()
            if v is not None:
                self.samples.append((time.monotonic(), v))
            self._stop.wait(self.interval)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)
        v = self._read()
        if v is not None:
            self.samples.append((time.monotonic(), v))
        return self

    @property
    def max_kib(self):
        return max((v for _, v in self.samples), default=0)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return "<RssSampler pid=%d %d samples, max %d KiB>" % (self.pid, len(self.samples), self.max_kib)


# ---------------------------------------------------------------- admin

def admin_get(gw, path, timeout=3.0):
    """(status, headers dict lowercased, body bytes) of GET path on the admin listener."""
    r = gw.admin("GET", path, timeout=timeout)
    return r.status, r.headers, r.body


def metrics(gw):
    """/metrics as {"name{labels}": float}."""
    return gw.metrics()


# ---------------------------------------------------------------- logs

_LOGFMT_RX = re.compile(r'([A-Za-z0-9_.\-]+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_logfmt(line):
    """{key: value} of one logfmt line (quotes removed, escapes kept simple)."""
    out = {}
    for k, v in _LOGFMT_RX.findall(line):
        if v.startswith('"') and v.endswith('"') and len(v) >= 2:
            v = v[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[k] = v
    return out


def program_lines(gw):
    """stderr lines written by this wakegate process: the lines after the
    "--- harness:" marker that names its config file, up to the next marker.
    The harness appends to a file named after the test, so earlier (or
    concurrent) runs of the same test leave their lines in it too."""
    lines = gw.log_lines()
    mine = " %s" % gw.config_path  # the marker names this run's private config file
    start, end = 0, len(lines)
    for i, line in enumerate(lines):
        if line.startswith("--- harness:"):
            if line.endswith(mine) or mine + " " in line:
                start, end = i + 1, len(lines)
            elif start and end == len(lines) and i >= start:
                end = i
    return lines[start:end]


def wait_log(gw, rx, n=1, timeout=5.0):
    """Wait until at least n of this process's stderr lines match regex rx; return the matches."""
    rx = re.compile(rx)
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in program_lines(gw) if rx.search(line)]
        if len(found) >= n:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError("%d of %d log lines matching %r in %.1fs; tail:\n%s"
                               % (len(found), n, rx.pattern, timeout, "\n".join(program_lines(gw)[-30:])))
        time.sleep(0.02)


def access_lines(gw):
    return [parse_logfmt(line) for line in program_lines(gw) if "sub=access" in line]


def wait_access(gw, n, timeout=5.0):
    """Wait for at least n access lines; return them parsed."""
    deadline = time.monotonic() + timeout
    while True:
        lines = access_lines(gw)
        if len(lines) >= n or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


# ---------------------------------------------------------------- raw sockets

def connect(port, timeout=10.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_head(sock, buf, limit=64 * 1024):
    """Read until CRLFCRLF into bytearray buf; return (status, Headers, rest bytes).
    rest is what followed the head in the same reads."""
    while b"\r\n\r\n" not in buf:
        assert len(buf) < limit, "no response head within %d bytes: %r" % (limit, bytes(buf[:300]))
        data = sock.recv(65536)
        assert data, "connection closed before a response head; got %r" % bytes(buf[:300])
        buf += data
    i = buf.index(b"\r\n\r\n") + 4
    start, headers = http1.parse_head(bytes(buf[:i]))
    status = int(start.split(" ")[1])
    return status, headers, bytes(buf[i:])


_PATTERN_MIB = pattern(0, MIB)  # pattern() repeats every 256 bytes, so any MiB-aligned piece is this


def send_pattern(sock, n, chunked=False, chunk_size=MIB):
    """Send n bytes of pattern() generated on the fly, raw or chunk-framed.
    Returns the number of body bytes sent."""
    view = memoryview(_PATTERN_MIB)
    sent = 0
    while sent < n:
        k = min(chunk_size, n - sent, MIB)
        piece = view[:k]  # offsets are multiples of MIB until the last piece
        if chunked:
            sock.sendall(b"%x\r\n" % k)
            sock.sendall(piece)
            sock.sendall(b"\r\n")
        else:
            sock.sendall(piece)
        sent += k
    if chunked:
        sock.sendall(b"0\r\n\r\n")
    return sent


class BodyReader:
    """Receives a response body from a socket without keeping it: counts bytes
    and keeps a CRC32. Handles Content-Length and chunked framing."""

    def __init__(self, sock, rest=b"", keep=0):
        self.sock = sock
        self.keep = keep
        self.kept = bytearray()  # the first `keep` body bytes
        self.pending = bytearray(rest)
        self.count = 0
        self.crc = 0
        self.scratch = bytearray(MIB)
        self.view = memoryview(self.scratch)

    def _take(self, data):
        if len(self.kept) < self.keep:
            self.kept += data[: self.keep - len(self.kept)]
        self.count += len(data)
        self.crc = zlib.crc32(data, self.crc)

    def read_length(self, n, on_progress=None):
        """Consume exactly n body bytes."""
        if self.pending:
            k = min(n, len(self.pending))
            self._take(bytes(self.pending[:k]))
            del self.pending[:k]
            n -= k
        while n > 0:
            k = self.sock.recv_into(self.view[: min(n, MIB)])
            if k == 0:
                raise http1.Incomplete("EOF with %d body bytes still expected (got %d)" % (n, self.count))
            self._take(self.view[:k])
            n -= k
            if on_progress:
                on_progress(self.count)
        return self.count

    def _fill(self):
        data = self.sock.recv(256 * 1024)
        if not data:
            raise http1.Incomplete("EOF inside a chunked body after %d bytes" % self.count)
        self.pending += data

    def _line(self):
        for _ in range(100000):
            i = self.pending.find(b"\r\n")
            if i >= 0:
                line = bytes(self.pending[:i])
                del self.pending[: i + 2]
                return line
            assert len(self.pending) < 4096, "chunk size line too long: %r" % bytes(self.pending[:100])
            self._fill()
        raise AssertionError("no chunk line")

    def read_chunked(self, max_chunks=10_000_000):
        for _ in range(max_chunks):
            size = int(self._line().split(b";")[0], 16)
            if size == 0:
                while self._line() != b"":
                    pass
                return self.count
            left = size
            while left > 0:
                if not self.pending:
                    self._fill()
                k = min(left, len(self.pending))
                self._take(bytes(self.pending[:k]))
                del self.pending[:k]
                left -= k
            while len(self.pending) < 2:
                self._fill()
            assert self.pending[:2] == b"\r\n", "chunk data not followed by CRLF: %r" % bytes(self.pending[:10])
            del self.pending[:2]
        raise AssertionError("too many chunks")


def crc32_of_zeros(n):
    crc = 0
    z = bytes(MIB)
    while n > 0:
        k = min(n, MIB)
        crc = zlib.crc32(z[:k] if k < MIB else z, crc)
        n -= k
    return crc


def crc32_of_pattern(n):
    crc = 0
    off = 0
    while off < n:
        k = min(MIB, n - off)
        crc = zlib.crc32(memoryview(_PATTERN_MIB)[:k], crc)
        off += k
    return crc


# ---------------------------------------------------------------- upstream handlers

def ws_accept(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_request(host="ws.test", path="/ws", key="dGhlIHNhbXBsZSBub25jZQ==", extra=()):
    lines = ["GET %s HTTP/1.1" % path, "Host: %s" % host, "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Version: 13"]
    if key is not None:
        lines.append("Sec-WebSocket-Key: %s" % key)
    lines += ["%s: %s" % kv for kv in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def upgrade_then(after):
    """Upstream handler: read the upgrade request, answer 101 with the right
    Sec-WebSocket-Accept, then call after(conn, req)."""
    def handler(conn):
        req = conn.read_request(body_keep=1 << 20)
        if req is None:
            return
        key = req.headers.get("sec-websocket-key") or ""
        conn.send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Accept: %s\r\n\r\n" % ws_accept(key))
        after(conn, req)
    return handler


def tunnel_echo_until_eof(conn, req, limit_s=20.0):
    """After a 101: echo every byte back until the peer half-closes, then send
    b"bye-after-eof" and close."""
    conn.sock.settimeout(0.2)
    end = time.monotonic() + limit_s
    # Bytes already buffered by the request reader came right after the head.
    if conn.reader.buf:
        conn.send(bytes(conn.reader.buf))
        conn.reader.buf.clear()
    while time.monotonic() < end and not conn.stopping.is_set():
        try:
            data = conn.sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return
        if not data:
            conn.send(b"bye-after-eof")
            return
        conn.record._add(data)
        conn.send(data)


def tunnel_hold(conn, req):
    """After a 101: record whatever arrives until the peer closes (or the server stops)."""
    conn.wait_peer_close(timeout=30)


class KeepaliveThenDrop:
    """Answers the first request on each connection (keep-alive, no
    Connection: close); on a connection's second request it records it and
    closes without answering, as an upstream whose idle close raced with reuse."""

    def __init__(self):
        self.lock = threading.Lock()
        self.dropped = []  # (conn index, method, target, body)

    def __call__(self, conn):
        first = conn.read_request()
        if first is None:
            return
        body = ("first %s %s %s\n" % (first.method, first.target, first.body.decode("latin-1"))).encode()
        conn.send(response_bytes(200, body))
        second = conn.read_request()
        if second is not None:
            with self.lock:
                self.dropped.append((second.method, second.target, second.body))
        conn.close()


def close_after_each_response(conn):
    """Answer one request (keep-alive framing, no Connection: close), then close."""
    req = conn.read_request()
    if req is None:
        return
    conn.send(response_bytes(200, ("once %s\n" % req.target).encode()))
    conn.close()


def first_then(first, then, later=10):
    """Answer a connection's first request with the raw bytes `first` and
    each later one (up to `later`) with `then`."""
    def handler(conn):
        if conn.read_request() is None:
            return
        conn.send(first)
        for _ in range(later):
            if conn.read_request() is None:
                return
            conn.send(then)
    return handler


class CountingLargeBody:
    """Streams n bytes of pattern() (Content-Length) per request and counts how
    many it has handed to the kernel so far (.sent), for backpressure tests."""

    def __init__(self, n, piece=256 * 1024):
        self.n = n
        self.piece = piece
        self.sent = 0
        self.done = threading.Event()

    def __call__(self, conn):
        req = conn.read_request()
        if req is None:
            return
        conn.send("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % self.n)
        view = memoryview(_PATTERN_MIB)
        while self.sent < self.n and not conn.stopping.is_set():
            k = min(self.piece, self.n - self.sent)
            conn.sock.sendall(view[:k])  # piece divides MIB, so offsets stay aligned
            self.sent += k
        self.done.set()
        conn.wait_peer_close(timeout=60)


# ---------------------------------------------------------------- websockets

class WsEchoServer:
    """A python3-websockets echo server on 127.0.0.1 in its own thread and
    event loop. Records every message it received and each request path."""

    def __init__(self):
        import websockets  # noqa: F401 - fail early if missing
        self.messages = []
        self.paths = []
        self.port = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop = None
        self._error = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="ws-echo")
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("websockets echo server did not start")
        if self._error:
            raise self._error

    async def _echo(self, ws, path=None):
        self.paths.append(path if path is not None else getattr(ws, "path", None))
        async for msg in ws:
            self.messages.append(msg)
            await ws.send(msg)

    async def _main(self):
        import websockets
        self._stop = asyncio.Event()
        try:
            server = await websockets.serve(self._echo, "127.0.0.1", 0, max_size=16 * MIB)
        except Exception as e:  # noqa: BLE001
            self._error = e
            self._ready.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def stop(self):
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)


def run_async(coro, timeout=30.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def json_lines(lines):
    return [json.loads(line) for line in lines]
