"""Helpers for test_proxy_rules.py: configs, canonical heads, refusal checks
and a few upstream handlers the harness does not have.

Everything talks to the real wakegate binary over loopback; nothing here
starts or stops processes (the conftest fixtures do that).
"""

import select
import socket
import threading
import time

import streams_util
from harness import http1, rawhttp
from harness.upstream import default_handler, response_bytes

PEER = "127.0.0.1"  # the address wakegate sees for our client sockets


# ---------------------------------------------------------------- config

def proxy_config(up, limits=None, upstream=None, **extra):
    """One catch-all static route to the recording upstream `up`, with debug
    and access logs."""
    return streams_util.proxy_config(up.address, limits, upstream, log={"level": "debug", "access": True}, **extra)


# ---------------------------------------------------------------- canonical heads

def canonical_head(method, target, host, fields=(), framing=None, xff=PEER, xfh=None, xfp="http"):
    """The exact head wakegate must forward (proxy/http_rebuild.h, wg_http_request_rebuild):
    request line in HTTP/1.1, Host first, the end-to-end fields in client
    order, then X-Forwarded-For/-Host/-Proto, then the framing it chose.
    framing: None, ("length", n) or "chunked"."""
    lines = ["%s %s HTTP/1.1" % (method, target)]
    if host is not None:
        lines.append("Host: %s" % host)
    lines += ["%s: %s" % kv for kv in fields]
    lines.append("X-Forwarded-For: %s" % xff)
    lines.append("X-Forwarded-Host: %s" % (host if xfh is None else xfh))
    lines.append("X-Forwarded-Proto: %s" % xfp)
    if framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
    elif framing is not None:
        lines.append("Content-Length: %d" % framing[1])
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def head_of(data):
    """The first head (through CRLFCRLF) in data."""
    i = data.find(b"\r\n\r\n")
    assert i >= 0, "no complete head in %r" % (data[:500],)
    return data[: i + 4]


def header_names(raw_head):
    _, hdrs = http1.parse_head(raw_head)
    return [k.lower() for k, _ in hdrs]


# ---------------------------------------------------------------- client side

def send(port, data, timeout=5.0, **kw):
    return rawhttp.send(port, data, timeout=timeout, **kw)


def assert_clean_close_after(r, n=1):
    """r (a RawResult read until close) holds exactly n complete responses,
    nothing after them, and ended with a FIN (recv returned b'')."""
    assert r.close == "eof", "expected a clean close (FIN) after the response, got %s; bytes %r" % (r.close, r.data[:600])
    assert len(r.responses) == n, "expected %d response(s), got %d in %r" % (n, len(r.responses), r.data[:600])
    last = r.responses[-1]
    if last.framing == "length":
        total = sum(len(x.raw_head) + len(x.body) + sum(len(i.raw_head) for i in x.interim) for x in r.responses)
        assert total == len(r.data), "bytes after the last response: %r" % (r.data[total:][:300],)


def assert_no_upstream_traffic(up, settle=0.1):
    time.sleep(settle)
    assert up.connections == [], "upstream got %d connection(s), bytes %r" % (len(up.connections), up.all_bytes()[:600])
    assert up.all_bytes() == b""


def assert_refused(gw, up, data, statuses, timeout=5.0):
    """Send data on a fresh connection; expect exactly one response with a
    status in `statuses`, Connection: close, a clean FIN after it, and no
    connection (no byte) at the upstream. Returns the response."""
    if isinstance(statuses, int):
        statuses = (statuses,)
    r = send(gw.port, data, timeout=timeout)
    assert r.responses, "no response to %r; got %r (close=%s)" % (data[:200], r.data[:300], r.close)
    resp = r.responses[0]
    assert resp.status in statuses, "status %d, expected one of %s, for %r" % (resp.status, statuses, data[:300])
    assert "close" in (resp.headers.get("connection") or "").lower(), "refusal without Connection: close: %r" % resp.raw_head
    assert_clean_close_after(r, 1)
    assert_no_upstream_traffic(up)
    return resp


def accepted(gw, up, data, n=1, timeout=5.0):
    """Send data, wait for n requests at the upstream; returns (RawResult, requests)."""
    r = send(gw.port, data, timeout=timeout, until="responses", n=n)
    reqs = up.wait_for_requests(n, timeout=timeout)
    return r, reqs


def wait_readable(sock, timeout):
    r, _, _ = select.select([sock], [], [], timeout)
    return bool(r)


def small_rcvbuf_socket(port, rcvbuf=4096, timeout=5.0):
    """A client socket with a tiny receive buffer (set before connect)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def drain_until_close(sock, timeout=10.0):
    """(total bytes, how) reading everything until FIN/RST or timeout."""
    deadline = time.monotonic() + timeout
    total = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return total, "timeout"
        sock.settimeout(left)
        try:
            d = sock.recv(1 << 20)
        except socket.timeout:
            return total, "timeout"
        except ConnectionResetError:
            return total, "reset"
        if not d:
            return total, "eof"
        total += len(d)


# ---------------------------------------------------------------- upstream handlers

def per_connection(*handlers):
    """The nth accepted connection runs handlers[n] (the last one repeats)."""
    lock = threading.Lock()
    count = [0]

    def handler(conn):
        with lock:
            i = min(count[0], len(handlers) - 1)
            count[0] += 1
        return handlers[i](conn)
    return handler


def bad_once(raw, then_wait=True, gap=0.2):
    """Read one request, send raw bytes (a list: pieces `gap` seconds apart),
    then keep the connection open until the proxy closes it (so "closed" at
    the upstream means the proxy closed it), or close at once with
    then_wait=False."""
    pieces = raw if isinstance(raw, list) else [raw]
    pieces = [p.encode("latin-1") if isinstance(p, str) else p for p in pieces]

    def handler(conn):
        if conn.read_request(body_keep=1 << 20) is None:
            return
        for i, p in enumerate(pieces):
            if i and conn.wait(gap):
                return
            if p:
                conn.send(p)
        if then_wait:
            conn.wait_peer_close(timeout=10)
    return handler


def by_path(table, default=None):
    """Answer each request with table[path] (raw bytes, or a callable(req)
    returning bytes); keep-alive. Unknown paths get the default handler's answer."""
    def handler(conn):
        while True:
            req = conn.read_request(body_keep=1 << 20)
            if req is None:
                return
            path = req.target.split("?", 1)[0]
            ans = table.get(path, default)
            if ans is None:
                body = ("ok %s %s\n" % (req.method, req.target)).encode("latin-1")
                ans = response_bytes(200, body if req.method != "HEAD" else b"",
                                      headers=[("Content-Length", str(len(body)))])
            elif callable(ans):
                ans = ans(req)
            conn.send(ans)
    return handler


def head_then_hold():
    """Read only the request head (plus whatever body arrives) and hold the
    connection until the proxy closes it. For abort / limit tests."""
    def handler(conn):
        try:
            conn.reader.read_until(b"\r\n\r\n")
        except http1.Incomplete:
            return
        conn.wait_peer_close(timeout=15)
    return handler


def expect_aware(status=200):
    """Reads the head; if it carries Expect: 100-continue answers 100 first
    (as a real server would), then reads the body (Content-Length) and
    answers `status` with body "got=<body>"."""
    def handler(conn):
        while True:
            try:
                raw = conn.reader.read_until(b"\r\n\r\n")
            except http1.Incomplete:
                return
            _, hdrs = http1.parse_head(raw)
            if (hdrs.get("expect") or "").lower() == "100-continue":
                conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            n = int(hdrs.get("content-length") or 0)
            body = conn.reader.read_exact(n) if n else b""
            conn.record.requests.append(http1.Request(raw.split(b" ", 1)[0].decode(), "", "", hdrs, body, raw, False, None, n))
            conn.server._note_request()
            conn.send(response_bytes(status, b"got=" + body))
    return handler


__all__ = [
    "PEER", "proxy_config", "canonical_head", "head_of", "header_names", "send",
    "assert_clean_close_after", "assert_no_upstream_traffic", "assert_refused", "accepted",
    "wait_readable", "small_rcvbuf_socket", "drain_until_close", "per_connection", "bad_once",
    "by_path", "head_then_hold", "expect_aware", "default_handler", "response_bytes",
]
