"""Helpers of test_http2.py: real HTTP/2 clients pointed at a gateway.

- curl2(): curl --http2 (ALPN h2) over TLS, with the HTTP version it used.
- h2load(): nghttp2-client's load tool, for many streams on few connections.
- RawH2: a TLS connection that speaks HTTP/2 frame by frame (hyperframe and
  hpack, from Debian's python3-h2), for the hostile tests: it sends what a
  well-behaved client never would and reads what comes back.
- rss_kib(): a process's resident memory, for "bounded memory".
"""

import re
import socket
import ssl
import struct
import time

from hpack import Encoder
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,
                              RstStreamFrame, SettingsFrame, WindowUpdateFrame)

from tls_util import curl_full, run

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ENHANCE_YOUR_CALM = 0xB
PROTOCOL_ERROR = 0x1


def curl2(port, host, path="/", ca=None, extra=(), timeout=20, http="--http2"):
    """curl --http2 (ALPN h2) over TLS: tls_util.curl_full()'s (status,
    headers, body, http_version)."""
    return curl_full(port, host, path, ca, extra, timeout, http)


def h2load(port, host, path, n, clients=1, streams=100, timeout=60, extra=()):
    """h2load over TLS (h2 by ALPN): its summary as a dict of counts."""
    url = "https://%s:%d%s" % (host, port, path)
    p = run(["h2load", "-n", str(n), "-c", str(clients), "-m", str(streams),
             "--connect-to=127.0.0.1:%d" % port, *extra, url], timeout=timeout, check=False)
    text = (p.stdout + p.stderr).decode(errors="replace")
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored", text)
    s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    proto = re.search(r"Application protocol: (\S+)", text)
    if not m or not s:
        raise AssertionError("h2load said:\n" + text[-2000:])
    keys = ("total", "started", "done", "succeeded", "failed", "errored")
    out = dict(zip(keys, map(int, m.groups())))
    out.update(dict(zip(("2xx", "3xx", "4xx", "5xx"), map(int, s.groups()))))
    out["protocol"] = proto.group(1) if proto else None
    out["text"] = text
    return out


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


class RawH2:
    """HTTP/2 over TLS, frame by frame."""

    def __init__(self, port, host, ca=None, settings=None, timeout=10):
        ctx = ssl.create_default_context(cafile=ca) if ca else ssl._create_unverified_context()
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname=host)
        assert self.sock.selected_alpn_protocol() == "h2", self.sock.selected_alpn_protocol()
        self.host = host
        self.enc = Encoder()
        self.buf = b""
        self.next_id = 1
        f = SettingsFrame(0)
        for k, v in (settings or {}).items():
            f.settings[k] = v
        self.send_raw(PREFACE + f.serialize())

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, *frames):
        self.send_raw(b"".join(f.serialize() for f in frames))

    def header_block(self, path="/", method="GET", extra=()):
        hdrs = [(":method", method), (":scheme", "https"), (":authority", self.host), (":path", path)]
        return self.enc.encode(hdrs + list(extra))

    def new_stream(self):
        sid = self.next_id
        self.next_id += 2
        return sid

    def request(self, path="/", method="GET", end_stream=True, extra=()):
        sid = self.new_stream()
        f = HeadersFrame(sid, self.header_block(path, method, extra))
        f.flags.add("END_HEADERS")
        if end_stream:
            f.flags.add("END_STREAM")
        self.send(f)
        return sid

    def read_frame(self, timeout=10):
        """The next frame, or None at the end of the connection."""
        self.sock.settimeout(timeout)
        while len(self.buf) < 9:
            d = self._recv()
            if not d:
                return None
            self.buf += d
        f, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
        while len(self.buf) < 9 + length:
            d = self._recv()
            if not d:
                return None
            self.buf += d
        f.parse_body(memoryview(self.buf[9:9 + length]))
        self.buf = self.buf[9 + length:]
        return f

    def _recv(self):
        try:
            return self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            return b""

    def until_goaway(self, timeout=20):
        """Reads (answering nothing) until GOAWAY or the end: the GOAWAY frame or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                f = self.read_frame(timeout=max(0.1, deadline - time.monotonic()))
            except socket.timeout:
                break
            if f is None:
                return None
            if isinstance(f, GoAwayFrame):
                return f
        raise AssertionError("neither GOAWAY nor the end within %ds" % timeout)

    def response(self, sid, timeout=10):
        """(status, body) of stream sid, acknowledging SETTINGS and opening windows."""
        status, body = None, b""
        deadline = time.monotonic() + timeout
        from hpack import Decoder
        dec = getattr(self, "dec", None) or Decoder()
        self.dec = dec
        while time.monotonic() < deadline:
            f = self.read_frame(timeout=max(0.1, deadline - time.monotonic()))
            if f is None:
                raise AssertionError("connection ended before stream %d answered" % sid)
            if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                ack = SettingsFrame(0)
                ack.flags.add("ACK")
                self.send(ack)
            if isinstance(f, HeadersFrame):
                hdrs = dec.decode(f.data)
                if f.stream_id == sid:
                    for k, v in hdrs:
                        if k in (":status", b":status"):
                            status = int(v)
                    if "END_STREAM" in f.flags:
                        return status, body
            if isinstance(f, DataFrame):
                if f.flow_controlled_length:
                    self.send(WindowUpdateFrame(0, f.flow_controlled_length),
                              WindowUpdateFrame(f.stream_id, f.flow_controlled_length))
                if f.stream_id == sid:
                    body += f.data
                    if "END_STREAM" in f.flags:
                        return status, body
            if isinstance(f, RstStreamFrame) and f.stream_id == sid:
                raise AssertionError("stream %d reset (%d)" % (sid, f.error_code))
            if isinstance(f, GoAwayFrame):
                raise AssertionError("GOAWAY (%d) before stream %d answered" % (f.error_code, sid))
        raise AssertionError("stream %d: no answer within %ds" % (sid, timeout))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


__all__ = ["RawH2", "curl2", "h2load", "rss_kib", "ContinuationFrame", "DataFrame", "GoAwayFrame",
           "HeadersFrame", "RstStreamFrame", "SettingsFrame", "WindowUpdateFrame", "ENHANCE_YOUR_CALM",
           "PROTOCOL_ERROR", "struct"]
