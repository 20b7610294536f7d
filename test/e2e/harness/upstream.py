"""A recording upstream: a TCP server on loopback that keeps the exact bytes
each connection delivered and answers through a pluggable handler.

A handler is a callable handler(conn) run in its own thread per accepted
connection. `conn` (an UpstreamConn) offers read_request(), send(), close(),
reset() and the `stopping` event. When the handler returns, the server closes
the socket (if the handler did not). Factories below build the handlers the
proxy tests need; pass one to RecordingUpstream(handler=...) or set_handler().
"""

import socket
import struct
import threading
import time

from . import http1

RECORD_LIMIT = 64 * 1024 * 1024  # bytes kept per connection; total_bytes counts all


class ConnRecord:
    """What one accepted connection delivered. data is exact up to RECORD_LIMIT."""

    def __init__(self, peer, record_limit):
        self.peer = peer
        self.accepted_at = time.monotonic()
        self._data = bytearray()
        self._limit = record_limit
        self._lock = threading.Lock()
        self.total_bytes = 0
        self.requests = []
        self.parse_error = None
        self.closed = threading.Event()
        self.close_reason = None  # "eof" (peer closed), "reset", "server", "stopped"

    def _add(self, data):
        with self._lock:
            self.total_bytes += len(data)
            room = self._limit - len(self._data)
            if room > 0:
                self._data += data[:room]

    @property
    def data(self):
        with self._lock:
            return bytes(self._data)

    @property
    def truncated(self):
        return self.total_bytes > len(self._data)

    def __repr__(self):
        return "<ConnRecord %s %d bytes %d requests closed=%s>" % (
            self.peer, self.total_bytes, len(self.requests), self.close_reason)


class UpstreamConn:
    """The handler's view of one connection."""

    def __init__(self, server, sock, record):
        self.server = server
        self.sock = sock
        self.record = record
        self.reader = http1.Reader(sock, on_bytes=record._add)
        self.stopping = server._stopping
        self._closed = False

    def read_request(self, body_keep=None):
        """Next request, or None when the peer closed (or reset) between requests.
        body_keep: keep at most that many body bytes in memory (body_len is exact)."""
        try:
            req = http1.read_request(self.reader, body_keep=body_keep)
        except http1.Incomplete as e:
            self.record.parse_error = "incomplete: %s" % e
            return None
        except (ValueError, IndexError) as e:
            self.record.parse_error = "unparsable: %r" % (e,)
            return None
        if req is not None:
            self.record.requests.append(req)
            self.server._note_request()
        return req

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def wait(self, seconds):
        """Sleep up to seconds; True if the server is stopping."""
        return self.stopping.wait(seconds)

    def wait_peer_close(self, timeout=None):
        """Block until the peer closes (reading and recording whatever arrives),
        the server stops, or timeout. True if the peer closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.sock.settimeout(0.1)
        try:
            while not self.stopping.is_set():
                if deadline is not None and time.monotonic() > deadline:
                    return False
                try:
                    if not self.reader.fill():
                        return True
                except socket.timeout:
                    continue
                except OSError:
                    return True
            return False
        finally:
            self.sock.settimeout(None)

    def shutdown_write(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        if not self._closed:
            self._closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def reset(self):
        """Close with RST (SO_LINGER 0)."""
        if not self._closed:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            self.close()


# ---------------------------------------------------------------- responses

def response_bytes(status=200, body=b"ok\n", headers=None, reason=None, close=False, version="HTTP/1.1"):
    """A complete response with Content-Length."""
    if isinstance(body, str):
        body = body.encode()
    reasons = {100: "Continue", 101: "Switching Protocols", 103: "Early Hints", 200: "OK", 201: "Created",
               204: "No Content", 304: "Not Modified", 400: "Bad Request", 404: "Not Found",
               500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
    lines = ["%s %d %s" % (version, status, reason or reasons.get(status, "Status"))]
    hdrs = list(headers or [])
    names = {k.lower() for k, _ in hdrs}
    if "content-type" not in names:
        hdrs.append(("Content-Type", "text/plain"))
    if "content-length" not in names and "transfer-encoding" not in names and status not in (204, 304) and status >= 200:
        hdrs.append(("Content-Length", str(len(body))))
    if close:
        hdrs.append(("Connection", "close"))
    lines += ["%s: %s" % kv for kv in hdrs]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _wants_close(req):
    conn = ",".join(req.headers.get_all("connection")).lower()
    tokens = {t.strip() for t in conn.split(",")}
    if req.version == "HTTP/1.0":
        return "keep-alive" not in tokens
    return "close" in tokens


def pattern(offset, n):
    """n bytes of the deterministic pattern used for large bodies, from offset."""
    base = bytes(range(256)) * 257  # 65792 bytes, a multiple of 256
    out = bytearray()
    pos = offset % 256
    while n > 0:
        take = min(n, len(base) - pos)
        out += base[pos : pos + take]
        n -= take
        pos = 0
    return bytes(out)


# ---------------------------------------------------------------- handlers

def default_handler(conn):
    """Answer every request with 200 and body "ok <METHOD> <target>\\n"; keep-alive."""
    while True:
        req = conn.read_request(body_keep=1 << 20)
        if req is None:
            return
        close = _wants_close(req)
        body = ("ok %s %s\n" % (req.method, req.target)).encode("latin-1")
        conn.send(response_bytes(200, body if req.method != "HEAD" else b"", close=close,
                                 headers=[("Content-Length", str(len(body)))] if req.method == "HEAD" else None))
        if close:
            return


def raw_response(data, close=False, read_request=True, repeat=True):
    """Send fixed raw bytes in answer to each request (or once on connect with
    read_request=False). close: close the connection after sending."""
    if isinstance(data, str):
        data = data.encode("latin-1")

    def handler(conn):
        while True:
            if read_request and conn.read_request(body_keep=1 << 20) is None:
                return
            conn.send(data)
            if close or not repeat:
                if not close:
                    conn.wait_peer_close()
                return
            if not read_request:
                conn.wait_peer_close()
                return
    return handler


def echo_body(status=200, content_type="application/octet-stream"):
    """Answer each request with its own body (Content-Length framed)."""
    def handler(conn):
        while True:
            req = conn.read_request()
            if req is None:
                return
            conn.send(response_bytes(status, req.body, headers=[("Content-Type", content_type)], close=_wants_close(req)))
            if _wants_close(req):
                return
    return handler


def never_respond():
    """Read requests and never answer; hold the connection until the peer or the server closes it."""
    def handler(conn):
        conn.read_request(body_keep=1 << 20)
        conn.wait_peer_close()
    return handler


def slow_response(delay, body=b"slow\n", status=200):
    """Answer each request after `delay` seconds."""
    def handler(conn):
        while True:
            req = conn.read_request(body_keep=1 << 20)
            if req is None or conn.wait(delay):
                return
            conn.send(response_bytes(status, body, close=_wants_close(req)))
            if _wants_close(req):
                return
    return handler


def close_immediately(read_request=False, reset=False):
    """Close right after accept (or after reading one request); RST with reset=True."""
    def handler(conn):
        if read_request:
            conn.read_request(body_keep=1 << 20)
        if reset:
            conn.reset()
        else:
            conn.close()
    return handler


def sse(events, interval=0.1, framing="chunked", keep_open=False, sent_at=None):
    """Answer with text/event-stream, sending each event (str or bytes, the
    "data: ...\\n\\n" framing is the caller's) `interval` seconds apart.
    framing "chunked" ends with the last chunk; "close" closes the connection.
    keep_open: after the events, hold the stream open until the peer closes.
    sent_at: a list that gets the time.monotonic() just before each event goes out."""
    def handler(conn):
        req = conn.read_request(body_keep=1 << 20)
        if req is None:
            return
        head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        head += "Transfer-Encoding: chunked\r\n\r\n" if framing == "chunked" else "Connection: close\r\n\r\n"
        conn.send(head)
        for ev in events:
            if conn.wait(interval):
                return
            ev = ev.encode() if isinstance(ev, str) else ev
            if sent_at is not None:
                sent_at.append(time.monotonic())
            conn.send(b"%x\r\n%s\r\n" % (len(ev), ev) if framing == "chunked" else ev)
        if keep_open:
            conn.wait_peer_close()
            return
        if framing == "chunked":
            conn.send(b"0\r\n\r\n")
            conn.wait_peer_close(timeout=30)
    return handler


def large_body(n, chunked=False, chunk_size=64 * 1024, content_type="application/octet-stream"):
    """Stream a body of n bytes of pattern() to each request, Content-Length or chunked framed."""
    def handler(conn):
        while True:
            req = conn.read_request(body_keep=1 << 20)
            if req is None:
                return
            head = "HTTP/1.1 200 OK\r\nContent-Type: %s\r\n" % content_type
            head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else "Content-Length: %d\r\n\r\n" % n
            conn.send(head)
            if req.method != "HEAD":
                sent = 0
                while sent < n:
                    piece = pattern(sent, min(chunk_size, n - sent))
                    conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                    sent += len(piece)
                if chunked:
                    conn.send(b"0\r\n\r\n")
            if _wants_close(req):
                return
    return handler


def informational(interim=((100, ()),), final=None, delay=0.0):
    """Send 1xx responses (status, headers) before the final one.
    final defaults to a 200 with body "final\\n"."""
    def handler(conn):
        while True:
            req = conn.read_request(body_keep=1 << 20)
            if req is None:
                return
            for status, hdrs in interim:
                reason = {100: "Continue", 102: "Processing", 103: "Early Hints"}.get(status, "Info")
                conn.send(("HTTP/1.1 %d %s\r\n" % (status, reason) + "".join("%s: %s\r\n" % kv for kv in hdrs) + "\r\n").encode("latin-1"))
                if delay and conn.wait(delay):
                    return
            conn.send(final if final is not None else response_bytes(200, b"final\n", close=_wants_close(req)))
            if _wants_close(req):
                return
    return handler


def count_body(status=200):
    """Read each request's body without keeping it and answer "received=N"."""
    def handler(conn):
        while True:
            req = conn.read_request(body_keep=0)
            if req is None:
                return
            conn.send(response_bytes(status, ("received=%d\n" % req.body_len).encode(), close=_wants_close(req)))
            if _wants_close(req):
                return
    return handler


# ---------------------------------------------------------------- server

class RecordingUpstream:
    def __init__(self, handler=None, host="127.0.0.1", port=0, record_limit=RECORD_LIMIT):
        self.host = host
        self.handler = handler or default_handler
        self.record_limit = record_limit
        self.connections = []
        self._cond = threading.Condition()
        self._n_requests = 0
        self._stopping = threading.Event()
        self._live = set()
        self._threads = []
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((host, port))
        self._lsock.listen(128)
        self._lsock.settimeout(0.1)
        self.port = self._lsock.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, name="upstream-%d" % self.port, daemon=True)
        self._accept_thread.start()

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def set_handler(self, handler):
        """Use handler for connections accepted from now on."""
        self.handler = handler

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                sock, peer = self._lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rec = ConnRecord(peer, self.record_limit)
            with self._cond:
                self.connections.append(rec)
                self._live.add(sock)
                self._cond.notify_all()
            t = threading.Thread(target=self._serve, args=(sock, rec, self.handler), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, sock, rec, handler):
        conn = UpstreamConn(self, sock, rec)
        try:
            handler(conn)
            reason = "eof" if conn.reader.eof and not conn.reader.reset else ("reset" if conn.reader.reset else "server")
        except (BrokenPipeError, ConnectionResetError):
            reason = "reset"
        except OSError:
            reason = "stopped" if self._stopping.is_set() else "reset"
        except Exception as e:  # noqa: BLE001 - a handler bug must show in the record, not kill the thread silently
            rec.parse_error = "handler raised %r" % (e,)
            reason = "server"
        if self._stopping.is_set() and reason == "server":
            reason = "stopped"
        conn.close()
        with self._cond:
            self._live.discard(sock)
            rec.close_reason = reason
            rec.closed.set()
            self._cond.notify_all()

    def _note_request(self):
        with self._cond:
            self._n_requests += 1
            self._cond.notify_all()

    # ----- what tests read

    @property
    def requests(self):
        with self._cond:
            return [r for c in self.connections for r in c.requests]

    def all_bytes(self):
        """Everything received, connection after connection, in accept order."""
        with self._cond:
            conns = list(self.connections)
        return b"".join(c.data for c in conns)

    def reset(self):
        """Forget recorded connections and requests (live ones keep running)."""
        with self._cond:
            self.connections = []
            self._n_requests = 0

    def wait_for_requests(self, n, timeout=5.0):
        """Block until at least n requests were parsed since the last reset; return them.
        Raises TimeoutError with what was received so far."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._n_requests < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("upstream got %d of %d requests in %.1fs; bytes so far: %r"
                                       % (self._n_requests, n, timeout, b"".join(c.data for c in self.connections)[:2000]))
                self._cond.wait(left)
        return self.requests

    def wait_for_connections(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.connections) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("upstream accepted %d of %d connections in %.1fs" % (len(self.connections), n, timeout))
                self._cond.wait(left)
            return list(self.connections)

    def stop(self):
        """Stop accepting, close every live connection, join the threads."""
        self._stopping.set()
        try:
            self._lsock.close()
        except OSError:
            pass
        with self._cond:
            live = list(self._live)
        for s in live:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._accept_thread.join(timeout=5)
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
