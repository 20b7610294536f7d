"""End-to-end tests of streams that count only while they are used (issue 11).

Everything is real: the wakegate binary (role all), a redis-server, the
harness's private dockerd and the WebSocket test image (its endpoint on 8081
answers the handshake and then reads whatever comes, like a dev server's
hot-reload socket that the tab only keeps alive). The test is the browser
tab: a raw WebSocket client that sends pings, small heartbeat messages or
real data, and reads what the gateway sends back.

Times are scaled down: idle.stream_after 2s, idle.stop_after 3s. Every wait
is bounded.
"""

import os
import re
import socket
import struct
import time

import pytest

from harness.image import WS_IMAGE
from stack_util import gw_config
from streams_util import parse_logfmt, program_lines

pytestmark = pytest.mark.docker

STREAM_AFTER_S = 2.0
STOP_AFTER_S = 3.0


@pytest.fixture
def stack(stack, ws_image):
    """The conftest's stack, with the WebSocket image built."""
    return stack


def idle_config(stack, stream_after="2s", stop_after="3s", **idle):
    cfg = gw_config(stack.redis_server.url, stack.dockerd, wake_timeout="30s")
    cfg["sessions"]["image"] = WS_IMAGE
    cfg["sessions"]["idle"] = dict({"stop_after": stop_after, "pause_after": "0s",
                                    "activity_interval": "200ms", "reap_every": "100ms",
                                    "drain": "300ms", "stream_after": stream_after,
                                    "stream_heartbeat": 16}, **idle)
    cfg["routes"].append({"match": {"path_prefix": "/ws/{session}/"}, "strip_prefix": True, "port": 8081,
                          "access": "public"})
    return cfg


def running_session(stack, sid):
    stack.create(sid)
    r = stack.get(sid, "/")
    assert r.status == 200, (r.status, r.body[:200])
    return stack.wait_state(sid, "running", timeout=10)


def told_1001_then_asleep(stack, sid, tab):
    """The sleep closes the tab's socket with 1001, then the session is asleep."""
    assert tab.read_close(timeout=15) == (1001, "going away")
    tab.close()
    stack.wait_state(sid, "asleep", timeout=15)


# ---------------------------------------------------------------- a raw WebSocket client

class Tab:
    """A WebSocket to /ws/{sid}/ through the gateway, spoken by hand: frames
    masked as a browser masks them, the gateway's frames read back."""

    def __init__(self, port, sid, path=""):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.s.sendall(("GET /ws/%s/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n" % (sid, path)).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.s.recv(4096)
            assert chunk, "closed before the 101: %r" % buf
            buf += chunk
        head, self.rest = buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101 "), head
        self.sent = 0  # bytes of frames sent

    def send(self, opcode, payload, fin=True):
        key = os.urandom(4)
        n = len(payload)
        if n < 126:
            hdr = struct.pack("!BB", (0x80 if fin else 0) | opcode, 0x80 | n)
        else:
            hdr = struct.pack("!BBH", (0x80 if fin else 0) | opcode, 0x80 | 126, n)
        masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        self.s.sendall(hdr + key + masked)
        self.sent += len(hdr) + 4 + n

    def ping(self):
        self.send(0x9, b"hb")

    def text(self, payload):
        self.send(0x1, payload)

    def read_close(self, timeout):
        """The gateway's close frame, after whatever frames the app sent
        before it: (code, reason). Then the connection must end."""
        self.s.settimeout(timeout)
        buf = self.rest
        while True:
            while len(buf) < 2 or len(buf) < 2 + (buf[1] & 0x7F):
                chunk = self.s.recv(4096)
                assert chunk, "the connection ended without a close frame (got %r)" % buf[-32:]
                buf += chunk
            if buf[0] == 0x88:
                break
            assert buf[0] in (0x81, 0x82, 0x89, 0x8A) and buf[1] & 0x7F < 126, buf[:16]
            buf = buf[2 + (buf[1] & 0x7F):]  # the app's own frame
        assert buf[0] == 0x88, "not a close frame: %r" % buf[:16]
        n = buf[1] & 0x7F
        assert not buf[1] & 0x80, "a server frame must not be masked"
        code = struct.unpack("!H", buf[2:4])[0]
        reason = buf[4:2 + n].decode()
        # Our close answers theirs; then the gateway closes.
        self.send(0x8, struct.pack("!H", code))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.s.recv(4096):
                break
        else:
            raise AssertionError("the gateway did not close the connection after its close frame")
        return code, reason

    def close(self):
        self.s.close()


def keep_until_leaves_running(stack, sid, tab, send, limit_s):
    """Calls send(tab, i) every 0.1 s until the session leaves running (or
    limit_s). Returns the seconds it stayed running, or None."""
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < limit_s:
        send(tab, i)
        i += 1
        if stack.record(sid)["state"] != "running":
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


def only_heartbeats(tab, i):
    """What a dev server's tab sends while nobody uses it: a ping every
    0.5 s and a {"type":"ping"} message (15 bytes) every 1.5 s."""
    if i % 5 == 0:
        tab.ping()
    if i % 15 == 0:
        tab.text(b'{"type":"ping"}')


def real_data(tab, i):
    """A message of 64 bytes every 0.5 s (and the pings)."""
    if i % 5 == 0:
        tab.ping()
        tab.text(b"x" * 64)


def keystrokes(tab, i):
    """Typing: a 2-byte message every 0.3 s."""
    if i % 3 == 0:
        tab.text(b"0a")


def stream_access_lines(gw):
    out = []
    for line in program_lines(gw):
        if "msg=request" in line or " request " in line:
            f = parse_logfmt(line)
            if f.get("status") == "101" and "stream_ms" in f:
                out.append(f)
    return out


# ---------------------------------------------------------------- the tests

def test_a_websocket_that_only_pings_lets_its_session_sleep(stack):
    stack.start(config=idle_config(stack))
    sid = "s-pings"
    running_session(stack, sid)

    tab = Tab(stack.gw.port, sid)
    stayed = keep_until_leaves_running(stack, sid, tab, only_heartbeats, limit_s=30)
    assert stayed is not None, "the session never left running while its WebSocket only pinged"
    # The stream counted while it was young: past the tier alone the session
    # still ran (it sleeps after stream_after plus the tier).
    assert stayed > STOP_AFTER_S + 0.5, stayed
    print("only pings: the session left running %.2f s after the WebSocket opened "
          "(stream_after %.1f s + stop_after %.1f s)" % (stayed, STREAM_AFTER_S, STOP_AFTER_S))
    sent = tab.sent
    told_1001_then_asleep(stack, sid, tab)
    # The stream's access line, written when it closed: bytes both ways and
    # its duration.
    lines = stream_access_lines(stack.gw)
    assert len(lines) == 1, lines
    f = lines[0]
    assert int(f["bytes_in"]) >= sent, (f, sent)
    assert int(f["bytes_out"]) > 14, f  # the 101 head and our close frame
    assert int(f["stream_ms"]) >= int(stayed * 1000) - 500, (f, stayed)
    assert stack.gw.stop() == 0


def test_a_websocket_that_sends_data_keeps_its_session_awake(stack):
    stack.start(config=idle_config(stack))
    sid = "s-data"
    running_session(stack, sid)

    tab = Tab(stack.gw.port, sid)
    # Data for twice stream_after + stop_after: never left running.
    assert keep_until_leaves_running(stack, sid, tab, real_data, limit_s=10) is None
    # Typing (small messages in a burst) counts too.
    assert keep_until_leaves_running(stack, sid, tab, keystrokes, limit_s=7) is None
    assert "draining" not in [to for _, to in stack.transitions(sid)]
    # Then only heartbeats: it sleeps, and the tab is told.
    stayed = keep_until_leaves_running(stack, sid, tab, only_heartbeats, limit_s=30)
    assert stayed is not None and stayed > STOP_AFTER_S + 0.5, stayed
    told_1001_then_asleep(stack, sid, tab)
    assert stack.gw.stop() == 0


def test_stream_max_caps_a_stream_that_sends_data(stack):
    stack.start(config=idle_config(stack, stream_max="2s"))
    sid = "s-capped"
    running_session(stack, sid)

    tab = Tab(stack.gw.port, sid)
    # Data all along: the stream counts for stream_max, then the tier runs.
    stayed = keep_until_leaves_running(stack, sid, tab, real_data, limit_s=30)
    assert stayed is not None, "the session never left running"
    assert stayed > STOP_AFTER_S + 0.5, stayed
    print("\nstream_max 2 s, data all along: the session left running %.2f s after the WebSocket opened"
          % stayed)
    told_1001_then_asleep(stack, sid, tab)
    assert stack.gw.stop() == 0


def test_a_forced_sleep_closes_the_websocket_with_1001(stack):
    # Streams never stop counting here: only the sleep command ends it.
    stack.start(config=idle_config(stack, stream_after="0s", stop_after="20m"))
    sid = "s-force"
    running_session(stack, sid)

    tab = Tab(stack.gw.port, sid)
    tab.text(b"hello, this is more than a heartbeat")
    st, body = stack.api("POST", "/v1/sessions/%s/sleep?force=1" % sid)
    assert st in (200, 202), (st, body)
    told_1001_then_asleep(stack, sid, tab)
    assert stack.gw.wait_log(r"session left running, closing its WebSocket with 1001", timeout=5)
    assert stack.gw.stop() == 0


# ---------------------------------------------------------------- server-sent events

SSE_IMAGE = "wakegate-test-sse:latest"
# A CGI of busybox httpd: an event stream of comment heartbeats every 0.5 s,
# or (?data) of real events.
SSE_CGI = r"""#!/bin/sh
printf 'Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n'
if [ "$QUERY_STRING" = data ]; then
  while :; do printf 'event: tick\ndata: {"at": "%s", "pad": "0123456789abcdef"}\n\n' "$(date +%s)"; sleep 0.5; done
fi
while :; do printf ': ping\n\n'; sleep 0.5; done
"""


@pytest.fixture(scope="module")
def sse_image(dockerd, test_image):
    from harness import image
    return image.build_image(dockerd, SSE_IMAGE, extra_files={"/www/cgi-bin/sse": SSE_CGI},
                             dockerfile_extra="RUN chmod 755 /www/cgi-bin/sse\n")


class EventStream:
    """GET /cgi-bin/sse on the session's host, read as it comes."""

    def __init__(self, port, sid, query=""):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.s.sendall(("GET /cgi-bin/sse%s HTTP/1.1\r\nHost: %s.preview.localhost\r\n"
                        "Accept: text/event-stream\r\n\r\n" % (query, sid)).encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(4096)
            assert chunk, "closed before the head: %r" % self.buf
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert b"\r\nTransfer-Encoding: chunked" in head, head
        self.eof = False

    def pump(self, timeout=0.05):
        """Reads what arrived; True once the connection ended."""
        self.s.settimeout(timeout)
        try:
            chunk = self.s.recv(65536)
        except socket.timeout:
            return False
        if not chunk:
            self.eof = True
            return True
        self.buf += chunk
        return False

    def close(self):
        self.s.close()


def test_an_event_stream_of_comments_lets_its_session_sleep_and_is_ended(stack, sse_image):
    cfg = idle_config(stack)
    cfg["sessions"]["image"] = SSE_IMAGE
    stack.start(config=cfg)
    sid = "s-sse"
    running_session(stack, sid)

    es = EventStream(stack.gw.port, sid)
    t0 = time.monotonic()
    stayed = None
    while time.monotonic() - t0 < 30 and stayed is None:
        es.pump()
        if stack.record(sid)["state"] != "running":
            stayed = time.monotonic() - t0
    assert stayed is not None, "the session never left running while its event stream sent comments"
    assert stayed > STOP_AFTER_S + 0.5, stayed
    assert b": ping" in es.buf
    print("\ncomment-only SSE: the session left running %.2f s after the stream began" % stayed)
    # The stream is ended, not cut: the last chunk, then the connection closes.
    end = time.monotonic() + 15
    while not es.eof and time.monotonic() < end:
        es.pump(0.2)
    assert es.eof, "the stream did not end"
    assert es.buf.endswith(b"\r\n0\r\n\r\n"), es.buf[-80:]
    es.close()
    stack.wait_state(sid, "asleep", timeout=15)
    assert stack.gw.stop() == 0


def test_an_event_stream_with_data_keeps_its_session_awake(stack, sse_image):
    cfg = idle_config(stack)
    cfg["sessions"]["image"] = SSE_IMAGE
    stack.start(config=cfg)
    sid = "s-sse-data"
    running_session(stack, sid)

    es = EventStream(stack.gw.port, sid, "?data")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 9:
        es.pump()
        assert stack.record(sid)["state"] == "running", stack.record(sid)
    assert b"event: tick" in es.buf
    es.close()
    # Closed: the session sleeps after its tier.
    stack.wait_state(sid, "asleep", timeout=20)
    assert stack.gw.stop() == 0


# ---------------------------------------------------------------- what the app sends

WS_PUSH_IMAGE = "wakegate-test-wspush:latest"
# The WebSocket endpoint of the test image, whose app sends after the
# handshake: /push a 64-byte text message every 0.5 s, /pings a ping every
# 0.5 s (unmasked, as a server sends them), anything else nothing.
WS_PUSH_SH = r"""#!/bin/sh
key=
path=
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  [ -z "$line" ] && break
  case "$line" in
    GET\ *) path=${line#GET }; path=${path%% *};;
    [Ss]ec-[Ww]eb[Ss]ocket-[Kk]ey:*) key=$(printf '%s' "${line#*:}" | tr -d ' ');;
  esac
done
acc=$(printf '%s' "${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11" | sha1sum | cut -c1-40 | xxd -r -p | base64)
printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n' "$acc"
case "$path" in
  /push*) while :; do printf '\201\100'; printf '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'; sleep 0.5; done;;
  /pings*) while :; do printf '\211\000'; sleep 0.5; done;;
esac
exec cat >/dev/null
"""


@pytest.fixture(scope="module")
def ws_push_image(dockerd, test_image):
    from harness import image
    return image.build_image(dockerd, WS_PUSH_IMAGE,
                             extra_files={"/start.sh": image.WS_START_SH, "/ws.sh": WS_PUSH_SH},
                             dockerfile_extra="RUN chmod 755 /start.sh /ws.sh\n", cmd=["/start.sh"])


def drain(tab, i):
    """The tab reads what comes and sends nothing."""
    tab.s.settimeout(0.01)
    try:
        tab.rest += tab.s.recv(65536)
    except socket.timeout:
        pass


def test_an_app_that_sends_data_keeps_its_session_awake_and_its_pings_do_not(stack, ws_push_image):
    cfg = idle_config(stack)
    cfg["sessions"]["image"] = WS_PUSH_IMAGE
    stack.start(config=cfg)

    sid = "s-push"
    running_session(stack, sid)
    tab = Tab(stack.gw.port, sid, "push")
    assert keep_until_leaves_running(stack, sid, tab, drain, limit_s=9) is None
    assert b"0123456789abcdef" in tab.rest
    tab.close()

    sid = "s-app-pings"
    running_session(stack, sid)
    tab = Tab(stack.gw.port, sid, "pings")
    stayed = keep_until_leaves_running(stack, sid, tab, lambda t, i: None, limit_s=30)
    assert stayed is not None, "the session never left running while its app only pinged"
    assert stayed > STOP_AFTER_S + 0.5, stayed
    print("\napp pings only: the session left running %.2f s after the WebSocket opened" % stayed)
    told_1001_then_asleep(stack, sid, tab)
    assert stack.gw.stop() == 0
