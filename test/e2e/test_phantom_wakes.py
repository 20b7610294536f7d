"""End-to-end tests of phantom wakes (issue 11): a template says which request
classes wake a sleeping session (wake_on: navigation, api, websocket).

Everything is real: the wakegate binary (role all), a redis-server, the
harness's private dockerd and the WebSocket test image. A background tab's
reconnects (a WebSocket upgrade, a fetch) to a session whose template wakes
on navigation only get 503 with Retry-After and the state, and the engine
shows no start; a human's navigation still wakes it.
"""

import json
import socket
import time

import pytest

from harness.image import WS_IMAGE
from stack_util import gw_config

pytestmark = pytest.mark.docker

WS_HEAD = ("GET /ws/%s/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-Fetch-Mode: websocket\r\nSec-Fetch-Dest: websocket\r\n\r\n")
NAVIGATE = [("Accept", "text/html,application/xhtml+xml"), ("Sec-Fetch-Mode", "navigate"),
            ("Sec-Fetch-Dest", "document"), ("User-Agent", "Mozilla/5.0")]
FETCH = [("Accept", "*/*"), ("Sec-Fetch-Mode", "cors"), ("Sec-Fetch-Dest", "empty"),
         ("User-Agent", "Mozilla/5.0")]


@pytest.fixture
def stack(stack, ws_image):
    """The conftest's stack, with the WebSocket image built."""
    return stack


def phantom_config(stack):
    cfg = gw_config(stack.redis_server.url, stack.dockerd, wake_timeout="30s")
    cfg["sessions"]["image"] = WS_IMAGE
    # A dev server's template: only a human's navigation wakes its sessions.
    cfg["templates"] = {"dev": {"image": WS_IMAGE, "wake_on": ["navigation"]}}
    cfg["routes"].append({"match": {"path_prefix": "/ws/{session}/"}, "strip_prefix": True, "port": 8081,
                          "access": "public"})
    return cfg


def ws_upgrade(port, sid, timeout=15.0):
    """A WebSocket handshake as a tab's reconnect sends it: (status, head, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall((WS_HEAD % sid).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":", 1)[1])
            while len(body) < n:
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
        return status, head.decode("latin-1"), body
    finally:
        s.close()


def assert_state_503(status, head_or_headers, body, state):
    assert status == 503, (status, head_or_headers, body)
    if isinstance(head_or_headers, str):
        assert "\r\nRetry-After: " in head_or_headers, head_or_headers
    else:
        assert head_or_headers.get("retry-after"), head_or_headers
    assert json.loads(body)["state"] == state, body


def no_start(stack, sid, since_s):
    """No wake command and no engine action for sid since since_s, and the
    record did not move."""
    time.sleep(1.0)  # what a wake would need to show up in the stream and the engine
    assert stack.wake_commands(sid, since_ms=int(since_s * 1000)) == []
    assert stack.actions(since_s, sid) == [], stack.actions(since_s, sid)


def test_a_template_that_wakes_on_navigation_only(stack):
    stack.start(config=phantom_config(stack))
    sid = "s-nav-only"
    stack.create(sid, template="dev")
    t0 = time.time()

    # The tab's WebSocket reconnect and its fetch: the state, no wake.
    status, head, body = ws_upgrade(stack.gw.port, sid)
    assert_state_503(status, head, body, "asleep")
    r = stack.get(sid, "/api", headers=FETCH)
    assert_state_503(r.status, r.headers, r.body, "asleep")
    no_start(stack, sid, t0)
    assert stack.record(sid)["state"] == "asleep"
    assert "create" not in stack.actions(0, sid)

    # A navigation wakes it.
    r = stack.get(sid, "/", headers=NAVIGATE)
    assert b"Waking up" in r.body or r.status == 200, (r.status, r.body[:200])
    stack.wait_state(sid, "running", timeout=15)
    assert "start" in stack.actions(t0, sid)
    status, _, _ = ws_upgrade(stack.gw.port, sid)
    assert status == 101  # running: every class is served

    # Asleep again: the reconnect does not undo the sleep.
    st, body = stack.api("POST", "/v1/sessions/%s/sleep?force=1&wait=1" % sid)
    assert st == 200, (st, body)
    stack.wait_state(sid, "asleep", timeout=15)
    t1 = time.time()
    for _ in range(3):
        status, head, body = ws_upgrade(stack.gw.port, sid)
        assert_state_503(status, head, body, "asleep")
    no_start(stack, sid, t1)
    assert stack.record(sid)["state"] == "asleep"
    assert stack.gw.stop() == 0


def test_by_default_every_class_wakes(stack):
    stack.start(config=phantom_config(stack))
    sid = "s-all"
    stack.create(sid)  # the sessions: template: wake_on defaults to all
    t0 = time.time()
    status, head, _ = ws_upgrade(stack.gw.port, sid, timeout=30)
    assert status == 101, head  # held while it woke, then switched
    assert stack.record(sid)["state"] == "running"
    assert "start" in stack.actions(t0, sid)
    assert stack.gw.stop() == 0
