"""Raw HTTP/1.x client helpers: send exact bytes, read exact answers.

    r = send(port, b"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n")      # one shot
    r.status, r.response.headers, r.close                        # "eof", "reset" or "timeout"

    c = connect(port)                                             # step by step
    c.send(b"..."); resp = c.read_response(); c.expect_close()
"""

import socket
import time

from . import http1
from .http1 import Incomplete, parse_requests, parse_responses  # noqa: F401 - re-exported


RECEIVED_LIMIT = 16 * 1024 * 1024


class RawConnection:
    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = http1.connect(host, port, timeout)
        self.timeout = timeout
        self.received = bytearray()  # the first RECEIVED_LIMIT bytes that arrived
        self.received_total = 0
        self.reader = http1.Reader(self.sock, on_bytes=self._record, bufsize=256 * 1024)

    def _record(self, data):
        self.received_total += len(data)
        room = RECEIVED_LIMIT - len(self.received)
        if room > 0:
            self.received += data[:room]

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def send_slowly(self, data, chunk=1, delay=0.01):
        """Send data in pieces of `chunk` bytes, `delay` seconds apart."""
        if isinstance(data, str):
            data = data.encode("latin-1")
        for i in range(0, len(data), chunk):
            self.sock.sendall(data[i : i + chunk])
            time.sleep(delay)

    def read_response(self, method="GET", timeout=None, body_keep=None, include_interim=False):
        """Next response (1xx collected in .interim unless include_interim).
        Raises Incomplete if the connection closes first, socket.timeout on timeout."""
        self.sock.settimeout(timeout or self.timeout)
        return http1.read_response(self.reader, method=method, body_keep=body_keep, include_interim=include_interim)

    def read_some(self, timeout=None):
        """Whatever arrives next (buffered bytes first); b"" on EOF or reset."""
        if self.reader.buf:
            out = bytes(self.reader.buf)
            self.reader.buf.clear()
            return out
        self.sock.settimeout(timeout or self.timeout)
        if not self.reader.fill():
            return b""
        out = bytes(self.reader.buf)
        self.reader.buf.clear()
        return out

    def read_until_close(self, timeout=None):
        """(bytes, how): everything left until the peer closes; how is
        "eof" (clean FIN), "reset" (RST) or "timeout" (still open)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        out = bytearray(self.reader.buf)
        self.reader.buf.clear()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(out), "timeout"
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return bytes(out), "timeout"
            except ConnectionResetError:
                return bytes(out), "reset"
            if not data:
                return bytes(out), "eof"
            self._record(data)
            out += data

    def close_state(self, timeout=1.0):
        """"eof", "reset" or "timeout" (open), discarding any data that arrives."""
        return self.read_until_close(timeout)[1]

    def expect_close(self, timeout=None):
        """Assert the peer closes (FIN or RST) within timeout; return the trailing bytes."""
        data, how = self.read_until_close(timeout)
        assert how in ("eof", "reset"), "connection still open after %.1fs; got %r" % (timeout or self.timeout, data[:500])
        return data

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def reset(self):
        """Close with RST."""
        import struct
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RawResult:
    """What one send() got back: all bytes, how the connection ended, and
    the responses parsed from the bytes."""

    def __init__(self, data, close, methods):
        self.data = data
        self.close = close
        self.responses = parse_responses(data, methods)

    @property
    def response(self):
        assert self.responses, "no complete response in %r (close: %s)" % (self.data[:500], self.close)
        return self.responses[0]

    @property
    def status(self):
        return self.response.status

    def __repr__(self):
        return "<RawResult %s, close=%s, %d bytes>" % ([r.status for r in self.responses], self.close, len(self.data))


def connect(port, host="127.0.0.1", timeout=5.0):
    return RawConnection(port, host, timeout)


def send(port, data, host="127.0.0.1", timeout=5.0, methods=None, until="close", n=1, shutdown_write=False):
    """Send data (bytes) on a new connection and collect the answer.

    until="close": read until the peer closes or `timeout` passes;
    until="responses": stop once n complete responses arrived (or on close/timeout).
    shutdown_write: half-close after sending. methods: request methods in order
    (for HEAD framing). Returns RawResult; .close is "eof", "reset" or "timeout"
    ("open" when until="responses" stopped with the connection still up).
    """
    with RawConnection(port, host, timeout) as c:
        if isinstance(data, str):
            data = data.encode("latin-1")
        try:
            c.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if shutdown_write:
            try:
                c.shutdown_write()
            except OSError:
                pass
        if until == "close":
            data, how = c.read_until_close(timeout)
            return RawResult(data, how, methods)
        deadline = time.monotonic() + timeout
        buf = bytearray()
        how = "open"
        while len(parse_responses(bytes(buf), methods)) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                how = "timeout"
                break
            c.sock.settimeout(left)
            try:
                chunk = c.sock.recv(65536)
            except socket.timeout:
                how = "timeout"
                break
            except ConnectionResetError:
                how = "reset"
                break
            if not chunk:
                how = "eof"
                break
            buf += chunk
        return RawResult(bytes(buf), how, methods)


def request_bytes(method="GET", target="/", host="localhost", headers=None, body=b"", version="HTTP/1.1"):
    """Build a request; Content-Length is added for a non-empty body unless given."""
    if isinstance(body, str):
        body = body.encode()
    hdrs = list(headers or [])
    names = {k.lower() for k, _ in hdrs}
    if host is not None and "host" not in names:
        hdrs.insert(0, ("Host", host))
    if body and "content-length" not in names and "transfer-encoding" not in names:
        hdrs.append(("Content-Length", str(len(body))))
    head = "%s %s %s\r\n" % (method, target, version) + "".join("%s: %s\r\n" % kv for kv in hdrs) + "\r\n"
    return head.encode("latin-1") + body
