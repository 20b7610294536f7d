"""A small, tolerant HTTP/1.1 message reader used on both sides of the proxy.

It is deliberately not strict: the tests use it to *observe* what wakegate
sends (the exact bytes are kept separately), so it accepts whatever it can
frame. Framing follows RFC 9112: chunked if the last transfer coding is
chunked, else Content-Length, else (responses only) until close.
"""

import json
import socket


class Incomplete(Exception):
    """The peer closed before a whole message arrived."""


class Reader:
    """Buffered reads from a socket. Every byte received goes through
    on_bytes(data) first, so callers can record exactly what arrived."""

    def __init__(self, sock, on_bytes=None, bufsize=65536):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False
        self.reset = False
        self.on_bytes = on_bytes
        self.bufsize = bufsize

    def fill(self, size=None):
        """Receive once (up to size bytes) into the buffer. False on EOF or reset.
        on_bytes may get bytes or a memoryview; it must copy what it keeps."""
        if self.eof:
            return False
        try:
            data = self.sock.recv(size or self.bufsize)
        except ConnectionResetError:
            self.eof = self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        if self.on_bytes:
            self.on_bytes(data)
        self.buf += data
        return True

    def read_until(self, delim, limit=1 << 20):
        """Bytes up to and including delim. Incomplete on EOF."""
        start = 0
        while True:
            i = self.buf.find(delim, start)
            if i >= 0:
                out = bytes(self.buf[: i + len(delim)])
                del self.buf[: i + len(delim)]
                return out
            if len(self.buf) > limit:
                raise Incomplete("no %r within %d bytes" % (delim, limit))
            start = max(0, len(self.buf) - len(delim) + 1)
            if not self.fill():
                raise Incomplete("EOF before %r (%d bytes buffered)" % (delim, len(self.buf)))

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self.fill():
                raise Incomplete("EOF after %d of %d bytes" % (len(self.buf), n))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def skip_exact(self, n, keep=0):
        """Consume n bytes; return only the first `keep` of them (for huge bodies).
        Reads straight into a reused buffer so a GiB costs no allocations."""
        kept = bytearray()
        if self.buf:
            take = min(n, len(self.buf))
            kept += self.buf[: min(take, keep)]
            del self.buf[:take]
            n -= take
        scratch = None
        while n > 0:
            if self.eof:
                raise Incomplete("EOF with %d bytes still expected" % n)
            if scratch is None:
                scratch = memoryview(bytearray(256 * 1024))
            try:
                k = self.sock.recv_into(scratch[: min(n, len(scratch))])
            except ConnectionResetError:
                self.eof = self.reset = True
                k = 0
            if k == 0:
                self.eof = True
                raise Incomplete("EOF with %d bytes still expected" % n)
            chunk = scratch[:k]
            if self.on_bytes:
                self.on_bytes(chunk)
            if len(kept) < keep:
                kept += chunk[: keep - len(kept)]
            n -= k
        return bytes(kept)

    def read_to_eof(self):
        while self.fill():
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def at_eof(self):
        """True if nothing is buffered and the peer has closed (may block for a read)."""
        return not self.buf and not self.fill()


class Headers(list):
    """A list of (name, value) str pairs in wire order, with case-insensitive lookup."""

    def get(self, name, default=None):
        name = name.lower()
        for k, v in self:
            if k.lower() == name:
                return v
        return default

    def get_all(self, name):
        name = name.lower()
        return [v for k, v in self if k.lower() == name]

    def __contains__(self, name):
        if isinstance(name, str):
            return self.get(name) is not None
        return list.__contains__(self, name)

    def names(self):
        return [k for k, _ in self]


def parse_head(raw):
    """(start_line, Headers) from a head ending in CRLFCRLF. Lines split on CRLF; a
    bare LF inside a line is left in place so tests can see it."""
    text = raw.decode("latin-1")
    lines = text.split("\r\n")
    while lines and lines[-1] == "":
        lines.pop()
    headers = Headers()
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            k, v = headers[-1]
            headers[-1] = (k, v + " " + line.strip())
            continue
        k, _, v = line.partition(":")
        headers.append((k, v.strip(" \t")))
    return (lines[0] if lines else ""), headers


def _is_chunked(headers):
    te = ",".join(headers.get_all("transfer-encoding"))
    codings = [c.strip().lower() for c in te.split(",") if c.strip()]
    return bool(codings) and codings[-1] == "chunked"


def read_chunked(reader, keep=None):
    """Read a chunked body. Returns (body, trailers Headers, body_len). With
    keep set only the first keep body bytes are returned; body_len counts all."""
    body = bytearray()
    total = 0
    while True:
        line = reader.read_until(b"\r\n", limit=64 * 1024)
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            break
        if keep is None:
            body += reader.read_exact(size)
        else:
            body += reader.skip_exact(size, keep=max(0, keep - len(body)))
        total += size
        reader.read_exact(2)
    trailers = Headers()
    while True:
        line = reader.read_until(b"\r\n", limit=64 * 1024)
        if line == b"\r\n":
            break
        k, _, v = line[:-2].decode("latin-1").partition(":")
        trailers.append((k, v.strip()))
    return bytes(body), trailers, total


class ApiResponse:
    """A whole answer of an API (the engine's, wakegate's admin listener):
    .status, .headers (as its client gives them) and .body (bytes)."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        """The body parsed as JSON; None for an empty body."""
        return json.loads(self.body) if self.body else None

    def json_or_body(self):
        """The body parsed as JSON, or the raw bytes when it is not JSON."""
        try:
            return self.json()
        except ValueError:
            return self.body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "<ApiResponse %d %r>" % (self.status, self.body[:200])


class Request:
    def __init__(self, method, target, version, headers, body, raw_head, chunked, trailers, body_len):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        self.raw_head = raw_head
        self.chunked = chunked
        self.trailers = trailers
        self.body_len = body_len

    @property
    def path(self):
        return self.target

    def __repr__(self):
        return "<Request %s %s %s %d body bytes>" % (self.method, self.target, self.version, self.body_len)


def read_request(reader, body_keep=None):
    """Read one request. None if the peer closed cleanly before any byte of it.
    body_keep limits how much of the body is kept in memory (body_len is exact)."""
    while not reader.buf:
        if not reader.fill():
            return None
    # Tolerate blank lines before a request (RFC 9112 2.2).
    while reader.buf[:2] == b"\r\n":
        del reader.buf[:2]
        while not reader.buf:
            if not reader.fill():
                return None
    raw_head = reader.read_until(b"\r\n\r\n", limit=1 << 20)
    start, headers = parse_head(raw_head)
    parts = start.split(" ")
    method = parts[0]
    target = parts[1] if len(parts) > 1 else ""
    version = parts[2] if len(parts) > 2 else ""
    chunked = _is_chunked(headers)
    trailers = Headers()
    if chunked:
        body, trailers, body_len = read_chunked(reader, keep=body_keep)
    else:
        cl = headers.get("content-length")
        n = int(cl) if cl and cl.strip().isdigit() else 0
        body = reader.read_exact(n) if body_keep is None else reader.skip_exact(n, keep=body_keep)
        body_len = n
    return Request(method, target, version, headers, body, raw_head, chunked, trailers, body_len)


class Response:
    def __init__(self, version, status, reason, headers, body, raw_head, chunked, trailers, body_len, framing):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.raw_head = raw_head
        self.chunked = chunked
        self.trailers = trailers
        self.body_len = body_len
        self.framing = framing  # "none", "length", "chunked" or "close"
        self.interim = []  # 1xx responses that came before this one

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "<Response %d %s, %d body bytes (%s)>" % (self.status, self.reason, self.body_len, self.framing)


def read_response(reader, method="GET", body_keep=None, include_interim=False):
    """Read one response to a request with `method`.

    1xx responses (except 101) are collected into .interim of the final one,
    unless include_interim is set, in which case a 1xx is returned by itself.
    Incomplete if the peer closes before a status line; returns what arrived
    for a close-delimited body.
    """
    interim = []
    while True:
        raw_head = reader.read_until(b"\r\n\r\n", limit=1 << 20)
        start, headers = parse_head(raw_head)
        parts = start.split(" ", 2)
        version = parts[0]
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        if 100 <= status < 200 and status != 101:
            r = Response(version, status, reason, headers, b"", raw_head, False, Headers(), 0, "none")
            if include_interim:
                return r
            interim.append(r)
            continue
        break
    chunked = False
    trailers = Headers()
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200 or (method == "CONNECT" and 200 <= status < 300):
        body, body_len, framing = b"", 0, "none"
    elif _is_chunked(headers):
        chunked = True
        body, trailers, body_len = read_chunked(reader, keep=body_keep)
        framing = "chunked"
    elif headers.get("content-length") is not None:
        n = int(headers.get("content-length"))
        body = reader.read_exact(n) if body_keep is None else reader.skip_exact(n, keep=body_keep)
        body_len, framing = n, "length"
    else:
        body = reader.read_to_eof()
        body_len, framing = len(body), "close"
        if body_keep is not None:
            body = body[:body_keep]
    r = Response(version, status, reason, headers, body, raw_head, chunked, trailers, body_len, framing)
    r.interim = interim
    return r


class _BytesSock:
    """A socket stand-in that yields a fixed byte string, for parsing captured data."""

    def __init__(self, data):
        self.data = memoryview(data)

    def recv(self, n):
        out, self.data = bytes(self.data[:n]), self.data[n:]
        return out

    def recv_into(self, buf):
        k = min(len(buf), len(self.data))
        buf[:k] = self.data[:k]
        self.data = self.data[k:]
        return k


def parse_responses(data, methods=None):
    """Every complete response in data (bytes), in order. methods lists the
    request method of each, for HEAD; missing entries mean GET. A trailing
    partial response is left out."""
    reader = Reader(_BytesSock(bytes(data)))
    out = []
    methods = list(methods or [])
    while True:
        if not reader.buf and not reader.fill():
            break
        m = methods[len(out)] if len(out) < len(methods) else "GET"
        try:
            out.append(read_response(reader, method=m))
        except (Incomplete, ValueError, IndexError):
            break
    return out


def parse_requests(data):
    """Every complete request in data (bytes), in order."""
    reader = Reader(_BytesSock(bytes(data)))
    out = []
    while True:
        try:
            r = read_request(reader)
        except (Incomplete, ValueError, IndexError):
            break
        if r is None:
            break
        out.append(r)
    return out


def connect(host, port, timeout):
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s
