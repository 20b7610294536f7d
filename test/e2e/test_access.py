"""Private previews, end to end: session routes are private by default.

Against the real stack (the wakegate binary with role all, a redis-server,
the harness's private dockerd and its FROM-scratch busybox image) sessions
are created and their links minted through the admin API, and opened
through the public listener the way a browser or an API client would:

- without credentials: 401 (the sign-in page for a navigation, JSON
  otherwise), the engine shows no start, nothing is woken, and the answer is
  the same bytes for a session that does not exist;
- a link gives a 303 with the cookie, then 200 from the app; the header
  works too; session A's cookie on session B's host is refused;
- expired and revoked links and cookies: 401;
- a WebSocket upgrade works with the cookie and is refused without it;
- headless Chromium opens a link, lands on the app (through the waking
  page, whose status polls need the cookie too) and reloads it.

A second part runs a gateway with role proxy in front of the recording
upstream (the test writes the session records into Redis, as
test_proxy_sessions.py does, with their access generation), so every byte
the "container" receives is seen: our token, header and cookie never reach
it, the application's cookies and Authorization do, and the access log never
shows a token. Tokens there are minted by this file's own HMAC code, an
independent check of the format in common/access.h.
"""

import asyncio
import json
import os
import socket
import tempfile
import time
import urllib.parse
import urllib.request

import pytest
import redis

from harness import rawhttp
from harness.image import WS_IMAGE
from harness.util import wait_for
from browser_util import Cdp, CdpError, Chromium
from sessions_util import wait_subscribed, Orchestrator
from streams_util import ws_request
from stack_util import HOST, TOKEN, gw_config
from access_util import API, DOMAIN, NAV, SECRET, header, mint, put_record, secret_file, send

# The app on 8080, and a WebSocket endpoint on 8081 (harness/image.py).
IMAGE = WS_IMAGE
APP_TEXT = b"wakegate test image"


# ---------------------------------------------------------------- helpers

def ws_handshake(port, host, path, extra=(), timeout=15.0):
    """Sends a WebSocket upgrade; returns (status, raw head bytes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        key = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample
        s.sendall(ws_request(host=host, path=path, key=key, extra=extra))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head = buf.split(b"\r\n\r\n", 1)[0]
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else None
        if status == 101:
            # From the container's shell endpoint (its accept value is not
            # what this test checks).
            assert b"Sec-WebSocket-Accept: " in head, head
        return status, buf
    finally:
        s.close()


class Access:
    """One stack with private routes: {id}.preview.localhost (the app) and
    /ws/{id}/ (the WebSocket endpoint, port 8081)."""

    def __init__(self, stack, tmp):
        self.stack = stack
        self.cfg = cfg = gw_config(stack.redis_server.url, stack.dockerd, wake_timeout="20s")
        cfg["sessions"]["image"] = IMAGE
        cfg["sessions"]["page_after"] = "0s"  # the waking page at once, however fast the wake
        cfg["routes"] = [
            {"match": {"host": "{session}." + DOMAIN}},
            {"match": {"path_prefix": "/ws/{session}/"}, "strip_prefix": True, "port": 8081},
        ]
        cfg["access"] = {"secret_file": secret_file(tmp), "link_ttl_max": "2h"}
        self.gw = stack.start(cfg)

    def host(self, sid):
        return "%s.%s" % (sid, DOMAIN)

    def link(self, sid, ttl="1h"):
        st, got = self.stack.api("POST", "/v1/sessions/%s/links" % sid, {"ttl": ttl})
        assert st == 200, (st, got)
        return got

    def revoke(self, sid):
        st, got = self.stack.api("POST", "/v1/sessions/%s/revoke" % sid)
        assert st == 200 and got == {"id": sid, "revoked": True}, (st, got)

    def get(self, sid, target="/", headers=API, method="GET"):
        return send(self.gw, self.host(sid), target, headers, method)

    def visit(self, url):
        """Follows a link's URL as a browser would: the 303 and its cookie."""
        u = urllib.parse.urlsplit(url)
        target = u.path + ("?" + u.query if u.query else "")
        resp, _ = send(self.gw, u.hostname, target, NAV)
        return resp

    def no_start(self, sid, since_s):
        assert self.stack.actions(since_s, sid) == [], self.stack.actions(since_s, sid)
        assert self.stack.wake_commands(sid) == []
        assert self.stack.record(sid)["state"] == "asleep"


@pytest.fixture
def stack(stack, ws_image):
    """conftest's stack, with the WebSocket image built."""
    return stack


@pytest.fixture
def acc(stack, e2e_tmp):
    return Access(stack, tempfile.mkdtemp(prefix="access-", dir=e2e_tmp))


pytestmark = pytest.mark.docker


# ---------------------------------------------------------------- the real stack

def test_without_credentials_401_no_wake_and_same_bytes_for_a_missing_session(acc):
    since = int(time.time()) - 1
    acc.stack.create("a-1")
    forged = mint("a-1", int(time.time()) + 3600, 1, key=b"x" * 32)
    cases = [
        ("/", NAV),
        ("/", API),
        ("/some/page?x=1", API),
        ("/_wakegate/status", API),
        ("/?wg_token=" + forged, NAV),
        ("/", API + (("X-Wakegate-Token", forged),)),
        ("/", API + (("Cookie", "wg_token=" + forged + "; other=1"),)),
        ("/", API + (("Authorization", "Bearer whatever"),)),
    ]
    for target, hdrs in cases:
        resp, raw = acc.get("a-1", target, hdrs)
        assert resp.status == 401, (target, resp, resp.body)
        assert header(resp, "WWW-Authenticate") == "Wakegate-Token"
        assert header(resp, "Cache-Control") == "no-store"
        if ("Sec-Fetch-Mode", "navigate") in hdrs:
            assert header(resp, "Content-Type").startswith("text/html")
            assert b"This preview is private" in resp.body
        else:
            assert header(resp, "Content-Type") == "application/json"
            assert json.loads(resp.body)["error"] == "unauthorized"
        assert b"a-1" not in resp.body
        # A session that does not exist: the very same bytes.
        _, raw_missing = acc.get("nobody-here", target, hdrs)
        assert raw_missing == raw, (target, raw, raw_missing)
    # The WebSocket endpoint and a HEAD: refused too.
    st, head = ws_handshake(acc.gw.port, "gw.test", "/ws/a-1/")
    assert st == 401, head
    resp, _ = acc.get("a-1", "/", API, method="HEAD")
    assert resp.status == 401
    # Nothing woke: no wake command, no engine event, still asleep.
    time.sleep(0.5)
    acc.no_start("a-1", since)
    assert any("sub=access" in l and "status=401" in l for l in acc.gw.log_lines())


def test_link_sets_the_cookie_then_the_app_answers(acc):
    since = int(time.time()) - 1
    acc.stack.create("s-1")
    acc.stack.create("s-2")
    got = acc.link("s-1", "1h")
    url = urllib.parse.urlsplit(got["url"])
    # Built from the first private route, on the public port.
    assert url.scheme == "http" and url.hostname == "s-1." + DOMAIN and url.port == acc.gw.port, got
    q = urllib.parse.parse_qs(url.query)
    token = q["wg_token"][0]
    assert token == got["token"]
    assert abs(got["expires"] / 1000 - (time.time() + 3600)) < 10, got
    assert got["expires"] // 1000 == int(token.split(".")[1])

    # The visit: 303 to the same URL without the token, with the cookie. No wake yet.
    resp = acc.visit(got["url"] .replace("/?", "/page?a=1&") + "&b=2")
    assert resp.status == 303, (resp, resp.body)
    assert header(resp, "Location") == "/page?a=1&b=2"
    cookie = header(resp, "Set-Cookie")
    assert cookie.startswith("wg_token=%s; " % token), cookie
    attrs = [a.strip() for a in cookie.split(";")[1:]]
    assert "Path=/" in attrs and "HttpOnly" in attrs and "SameSite=Lax" in attrs, attrs
    assert "Secure" not in attrs and not any(a.startswith("Domain") for a in attrs), attrs
    max_age = int([a for a in attrs if a.startswith("Max-Age=")][0].split("=")[1])
    assert 3500 < max_age <= 3601, max_age
    assert header(resp, "Referrer-Policy") == "no-referrer"
    time.sleep(0.3)
    acc.no_start("s-1", since)

    # Then the app, with the cookie (held while the session wakes).
    resp, _ = acc.get("s-1", "/", API + (("Cookie", "a=b; wg_token=" + token),))
    assert resp.status == 200 and APP_TEXT in resp.body, resp
    assert acc.stack.record("s-1")["state"] == "running"
    # Our header, for API clients.
    resp, _ = acc.get("s-1", "/", API + (("X-Wakegate-Token", token),))
    assert resp.status == 200 and APP_TEXT in resp.body
    # A navigation with the cookie lands on the app, not the sign-in page.
    resp, _ = acc.get("s-1", "/", NAV + (("Cookie", "wg_token=" + token),))
    assert resp.status == 200 and APP_TEXT in resp.body

    # Session A's cookie (or header, or link) on session B's host: 401, B never starts.
    for hdrs in (API + (("Cookie", "wg_token=" + token),), API + (("X-Wakegate-Token", token),)):
        resp, _ = acc.get("s-2", "/", hdrs)
        assert resp.status == 401
    resp, _ = acc.get("s-2", "/?wg_token=" + token, NAV)
    assert resp.status == 401
    acc.no_start("s-2", since)

    # The API's checks: a ttl over access.link_ttl_max, an unknown session.
    st, body = acc.stack.api("POST", "/v1/sessions/s-1/links", {"ttl": "3h"})
    assert st == 400 and "ttl" in body["error"], (st, body)
    st, body = acc.stack.api("POST", "/v1/sessions/s-1/links", {"tll": "1h"})
    assert st == 400, (st, body)
    st, body = acc.stack.api("POST", "/v1/sessions/nope/links", {"ttl": "1h"})
    assert st == 404, (st, body)
    st, body = acc.stack.api("POST", "/v1/sessions/nope/revoke")
    assert st == 404, (st, body)
    st, body = acc.stack.api("GET", "/v1/sessions/s-1/links")
    assert st == 405, (st, body)
    # The API never logs a token.
    assert not any(token in l for l in acc.gw.log_lines())


def test_expired_and_revoked_links_are_refused(acc):
    acc.stack.create("e-1")
    short = acc.link("e-1", "1s")
    tok = short["token"]
    resp = acc.visit(short["url"])
    assert resp.status == 303
    # Past its expiry: the link and its cookie are refused.
    time.sleep(max(0.0, short["expires"] / 1000 - time.time()) + 0.3)
    assert acc.visit(short["url"]).status == 401
    resp, _ = acc.get("e-1", "/", API + (("Cookie", "wg_token=" + tok),))
    assert resp.status == 401

    # Revoked: every link and cookie of the session, at once, on the gateway.
    good = acc.link("e-1", "1h")
    resp, _ = acc.get("e-1", "/", API + (("Cookie", "wg_token=" + good["token"]),))
    assert resp.status == 200 and APP_TEXT in resp.body
    other = acc.link("e-1", "2h")
    acc.revoke("e-1")
    deadline = time.monotonic() + 2
    while True:
        resp, _ = acc.get("e-1", "/", API + (("Cookie", "wg_token=" + good["token"]),))
        if resp.status == 401 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert resp.status == 401
    assert acc.visit(good["url"]).status == 401
    assert acc.visit(other["url"]).status == 401
    resp, _ = acc.get("e-1", "/", API + (("X-Wakegate-Token", other["token"]),))
    assert resp.status == 401
    # A new link after the revoke works.
    new = acc.link("e-1", "1h")
    assert acc.visit(new["url"]).status == 303
    resp, _ = acc.get("e-1", "/", API + (("Cookie", "wg_token=" + new["token"]),))
    assert resp.status == 200 and APP_TEXT in resp.body


def test_a_revoke_reaches_every_gateway(acc):
    """Two gateways on one Redis: a cookie works on both; a revoke made
    through one's API refuses it on the other at once, with no restart."""
    second = acc.stack.start_wakegate(acc.cfg, args=["--role", "proxy"])
    second.wait_ready(timeout=10)
    acc.stack.create("g-1")
    tok = acc.link("g-1", "1h")["token"]
    hdrs = API + (("Cookie", "wg_token=" + tok),)
    for gw in (acc.gw, second):
        resp, _ = send(gw, acc.host("g-1"), "/", hdrs)
        assert resp.status == 200 and APP_TEXT in resp.body, resp
    acc.revoke("g-1")
    wait_for(lambda: send(second, acc.host("g-1"), "/", hdrs)[0].status == 401, 3,
             "the second gateway to refuse the revoked cookie")
    assert send(acc.gw, acc.host("g-1"), "/", hdrs)[0].status == 401
    # A link made after the revoke works on both.
    new = acc.link("g-1", "1h")["token"]
    for gw in (acc.gw, second):
        resp, _ = send(gw, acc.host("g-1"), "/", API + (("X-Wakegate-Token", new),))
        assert resp.status == 200, resp


def test_websocket_needs_the_cookie(acc):
    acc.stack.create("w-1")
    got = acc.link("w-1", "1h")
    tok = got["token"]
    # On a path route the cookie is scoped to the session's path.
    resp, _ = send(acc.gw, "gw.test", "/ws/w-1/?wg_token=" + tok, NAV)
    assert resp.status == 303 and header(resp, "Location") == "/ws/w-1/"
    assert "; Path=/ws/w-1;" in header(resp, "Set-Cookie"), header(resp, "Set-Cookie")
    # Without credentials: refused, no start.
    st, head = ws_handshake(acc.gw.port, "gw.test", "/ws/w-1/")
    assert st == 401, head
    assert acc.stack.record("w-1")["state"] == "asleep"
    # With the cookie: the upgrade goes through (held while it wakes).
    st, head = ws_handshake(acc.gw.port, "gw.test", "/ws/w-1/", extra=(("Cookie", "wg_token=" + tok),))
    assert st == 101, head
    # The token in the query of an upgrade works too (no redirect for an upgrade).
    st, head = ws_handshake(acc.gw.port, "gw.test", "/ws/w-1/?wg_token=" + tok)
    assert st == 101, head
    # Another session's cookie: refused.
    acc.stack.create("w-2")
    st, head = ws_handshake(acc.gw.port, "gw.test", "/ws/w-2/", extra=(("Cookie", "wg_token=" + tok),))
    assert st == 401, head


# ---------------------------------------------------------------- what the upstream sees

def test_private_route_checks_without_redis_round_trips(redis_server, recording_upstream, start_wakegate, e2e_tmp):
    """The check is in process: 100 requests with a cookie (and with a
    revoked one) send Redis nothing (INFO commandstats); the generation
    comes from the cache, which wg:state keeps current."""
    up = recording_upstream
    r = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=3)
    cfg = {
        "redis": {"url": redis_server.url},
        "docker": {"name": HOST},
        "routes": [{"match": {"host": "{session}." + DOMAIN}}],
        "access": {"secret_file": secret_file(tempfile.mkdtemp(prefix="access-", dir=e2e_tmp))},
        "log": {"level": "info"},
        # It counts Redis commands after warming one loop's session cache:
        # each worker loop has a cache of its own, and the kernel may hand
        # a new connection to a loop that has not read the record yet.
        "workers": 1,
    }
    gw = start_wakegate(cfg, args=["--role", "proxy"])
    orch = Orchestrator(redis_server.url)
    wait_subscribed(orch)
    put_record(r, "n-1", "running", 7, ip="127.0.0.1", port=up.port)
    tok = mint("n-1", int(time.time()) + 600, 7)
    hdrs = API + (("Cookie", "wg_token=" + tok),)
    resp, _ = send(gw, "n-1." + DOMAIN, "/warm", hdrs)
    assert resp.status == 200, resp
    before = orch.cmdstats()
    t0 = time.monotonic()
    c = rawhttp.connect(gw.port)
    for i in range(100):
        c.send(rawhttp.request_bytes("GET", "/k%d" % i, host="n-1." + DOMAIN, headers=list(hdrs)))
        assert c.read_response().status == 200, i
    c.close()
    after = orch.cmdstats()
    grown = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
    grown.pop("info", None)
    # The checks of the state channel go by time (every quarter of
    # redis.state_timeout, 1 s), not by request.
    assert grown.pop("publish", 0) <= (time.monotonic() - t0) / 0.25 + 2, grown
    # Activity is written once per activity_interval (1 s), not per request.
    assert grown.get("zadd", 0) <= 2 and not {k for k in grown if k != "zadd"}, grown
    # A revoke reaches the cache by wg:state: refused at once, still no read.
    put_record(r, "n-1", "running", 8, ip="127.0.0.1", port=up.port, v=2)
    wait_for(lambda: send(gw, "n-1." + DOMAIN, "/r", hdrs)[0].status == 401, 5, "the revoke to reach the cache")
    before = orch.cmdstats()
    t0 = time.monotonic()
    for i in range(20):
        assert send(gw, "n-1." + DOMAIN, "/r%d" % i, hdrs)[0].status == 401
    after = orch.cmdstats()
    grown = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
    grown.pop("info", None)
    assert grown.pop("publish", 0) <= (time.monotonic() - t0) / 0.25 + 2, grown
    assert not {k for k in grown if k != "zadd"}, grown


def test_upstream_never_sees_our_credentials_and_the_log_never_shows_them(redis_server, recording_upstream,
                                                                          start_wakegate, e2e_tmp):
    up = recording_upstream
    r = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=3)
    cfg = {
        "redis": {"url": redis_server.url},
        "docker": {"name": HOST},
        "routes": [
            {"match": {"host": "{session}." + DOMAIN}},
            {"match": {"path_prefix": "/p/{session}/"}, "strip_prefix": True},
        ],
        "access": {"secret_file": secret_file(tempfile.mkdtemp(prefix="access-", dir=e2e_tmp))},
        "log": {"level": "debug", "access": True},
        # The test plays the TLS-terminating proxy in front (for Secure).
        "trusted_proxies": ["127.0.0.1/32"],
    }
    gw = start_wakegate(cfg, args=["--role", "proxy"])
    wait_subscribed(Orchestrator(redis_server.url))
    gen = 0x1234_5678_9abc_def0 + 2 ** 63  # past 2^53: the cache must keep all 64 bits
    put_record(r, "u-1", "running", gen, ip="127.0.0.1", port=up.port)
    tok = mint("u-1", int(time.time()) + 600, gen)
    app = "sess=app-cookie; theme=dark"

    # Every way in, with the app's own cookies and Authorization alongside ours.
    resp, _ = send(gw, "u-1." + DOMAIN, "/a?x=1", API + (("Cookie", "%s; wg_token=%s" % (app, tok)),
                                                            ("Authorization", "Bearer app-token")))
    assert resp.status == 200 and resp.body == b"ok GET /a?x=1\n", resp.body
    resp, _ = send(gw, "u-1." + DOMAIN, "/b", API + (("X-Wakegate-Token", tok), ("Cookie", "wg_token=" + tok),
                                                      ("Cookie", app)))
    assert resp.status == 200 and resp.body == b"ok GET /b\n", resp.body
    resp, _ = send(gw, "u-1." + DOMAIN, "/c?wg_token=%s&y=2" % tok, API, method="POST")
    assert resp.status == 200 and resp.body == b"ok POST /c?y=2\n", resp.body
    resp, _ = send(gw, "gw.test", "/p/u-1/d?wg_token=" + tok, API, method="DELETE")
    assert resp.status == 200 and resp.body == b"ok DELETE /d\n", resp.body
    # At most 8 tokens are checked per request: junk first costs the valid one.
    junk = "; ".join("wg_token=%s" % mint("u-1", int(time.time()) + 600, gen, key=b"k" * 32) for _ in range(8))
    resp, _ = send(gw, "u-1." + DOMAIN, "/g", API + (("Cookie", junk + "; wg_token=" + tok),))
    assert resp.status == 401
    junk = "; ".join("wg_token=junk%d" % i for i in range(7))
    resp, _ = send(gw, "u-1." + DOMAIN, "/g", API + (("Cookie", junk + "; wg_token=" + tok),))
    assert resp.status == 200
    # The link's visit is answered by the gateway (303), never by the app.
    resp, _ = send(gw, "u-1." + DOMAIN, "/e?wg_token=" + tok, NAV)
    assert resp.status == 303 and header(resp, "Location") == "/e"
    assert "Secure" not in header(resp, "Set-Cookie")
    # Under TLS (a trusted proxy's X-Forwarded-Proto: https) the cookie is Secure.
    resp, _ = send(gw, "u-1." + DOMAIN, "/e?wg_token=" + tok, NAV + (("X-Forwarded-Proto", "https"),))
    assert resp.status == 303 and header(resp, "Set-Cookie").endswith("; HttpOnly; SameSite=Lax; Secure")

    seen = b"".join(c.data for c in up.connections)
    assert seen.count(b"\r\n\r\n") >= 5, seen
    assert tok.encode() not in seen and b"wg_token" not in seen.lower(), seen
    assert b"x-wakegate-token" not in seen.lower(), seen
    assert b"Cookie: sess=app-cookie; theme=dark\r\n" in seen, seen
    assert b"Authorization: Bearer app-token\r\n" in seen, seen
    assert b"GET /e" not in seen

    # A generation the cache does not hold (a revoke elsewhere): refused at once.
    put_record(r, "u-1", "running", gen + 1, ip="127.0.0.1", port=up.port, v=2)
    deadline = time.monotonic() + 2
    while True:
        resp, _ = send(gw, "u-1." + DOMAIN, "/f", API + (("X-Wakegate-Token", tok),))
        if resp.status == 401 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert resp.status == 401
    resp, _ = send(gw, "u-1." + DOMAIN, "/f", API + (("X-Wakegate-Token", mint("u-1", int(time.time()) + 60,
                                                                                gen + 1)),))
    assert resp.status == 200

    # The access log has the requests (a line is written after its
    # response: wait for the last), never a token or a cookie.
    deadline = time.monotonic() + 5
    while True:
        lines = [l for l in gw.log_lines() if "sub=access" in l]
        if len(lines) >= 10 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(lines) >= 10, lines
    assert not any(tok in l or "wg_token" in l for l in gw.log_lines()), [l for l in lines if "wg_token" in l]
    m = {}
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % gw.admin_port, timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("wakegate_access_"):
            k, v = line.split()
            m[k] = int(v)
    assert m["wakegate_access_links_total"] == 2 and m["wakegate_access_denied_total"] >= 1, m


def test_a_private_route_without_a_key_refuses_to_start(start_wakegate, e2e_tmp):
    cfg = {"routes": [{"match": {"host": "{session}." + DOMAIN}}]}
    r = start_wakegate.run(["--check-config", "--config", write_yaml(e2e_tmp, cfg)])
    assert r.returncode != 0
    assert "access.secret_file: not set, and routes[0] is a private session route" in r.stderr, r.stderr
    # A key readable by others is refused too.
    key = os.path.join(tempfile.mkdtemp(prefix="access-", dir=e2e_tmp), "k")
    with open(key, "wb") as f:
        f.write(SECRET)
    os.chmod(key, 0o644)
    cfg["access"] = {"secret_file": key}
    r = start_wakegate.run(["--check-config", "--config", write_yaml(e2e_tmp, cfg)])
    assert r.returncode != 0 and "readable by group or others" in r.stderr, r.stderr
    os.chmod(key, 0o600)
    r = start_wakegate.run(["--check-config", "--config", write_yaml(e2e_tmp, cfg)])
    assert r.returncode == 0, r.stderr
    # A key too short to be a key, or a file too large to hold only one.
    for content, why in ((b"x" * 31, "fewer than 32 bytes"), (b"x" * 4097, "larger than 4096 bytes")):
        with open(key, "wb") as f:
            f.write(content)
        r = start_wakegate.run(["--check-config", "--config", write_yaml(e2e_tmp, cfg)])
        assert r.returncode != 0 and why in r.stderr and "access.secret_file" in r.stderr, r.stderr


def write_yaml(tmp, cfg):
    import yaml
    d = tempfile.mkdtemp(prefix="access-cfg-", dir=tmp)
    path = os.path.join(d, "wakegate.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


# ---------------------------------------------------------------- the browser

async def _until_app(cdp, timeout):
    """Polls the page until it shows the app; returns {t, u, b, c} or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = await cdp.evaluate("JSON.stringify({t: document.title, u: location.href, c: document.cookie, "
                                   "b: document.body ? document.body.innerText : ''})", timeout=3)
        except (CdpError, asyncio.TimeoutError):
            await asyncio.sleep(0.05)
            continue
        page = json.loads(v) if v else {}
        if APP_TEXT.decode() in page.get("b", ""):
            return page
        await asyncio.sleep(0.05)
    return None


async def _journey(ws_url, link, timeout=30.0):
    seen = {}
    async with Cdp(ws_url) as cdp:
        await cdp.send("Network.enable")
        await cdp.send("Page.enable")
        await cdp.send("Network.setCacheDisabled", cacheDisabled=True)
        nav = await cdp.send("Page.navigate", url=link)
        assert not nav.get("errorText"), nav
        seen["first"] = await _until_app(cdp, timeout)
        cookies = await cdp.send("Network.getAllCookies")
        seen["cookies"] = cookies.get("cookies", [])
        n_docs = len([1 for _, p in cdp.events_named("Network.responseReceived") if p.get("type") == "Document"])
        await cdp.send("Page.reload", ignoreCache=True)
        await asyncio.sleep(0.3)
        seen["reload"] = await _until_app(cdp, 10)
        seen["documents"] = [
            (p["response"]["url"], p["response"]["status"])
            for _, p in cdp.events_named("Network.responseReceived") if p.get("type") == "Document"]
        seen["n_before_reload"] = n_docs
        seen["redirects"] = [
            (p["redirectResponse"]["url"], p["redirectResponse"]["status"], p["request"]["url"])
            for _, p in cdp.events_named("Network.requestWillBeSent") if p.get("redirectResponse")]
    return seen


def test_browser_opens_the_link_lands_on_the_app_and_reloads(acc, e2e_tmp, artifacts):
    sid = "b-1"
    acc.stack.create(sid)
    link = acc.link(sid, "1h")
    app_url = "http://%s.%s:%d/" % (sid, DOMAIN, acc.gw.port)
    b = Chromium(tempfile.mkdtemp(prefix="chromium-", dir=e2e_tmp), artifacts / "chromium-access.log")
    try:
        seen = asyncio.run(asyncio.wait_for(_journey(b.page_ws_url(), link["url"]), 90))
    finally:
        b.stop()
    print("\n[browser] redirects=%r documents=%r" % (seen.get("redirects"), seen["documents"]))
    assert seen["first"], "the link never showed the app: %r\n%s" % (seen, acc.gw.log_tail(40))
    # Landed on the app, the token gone from the address bar, the cookie not
    # readable by scripts.
    assert seen["first"]["u"] == app_url, seen["first"]
    assert "wg_token" not in seen["first"]["c"], seen["first"]
    docs = seen["documents"]
    assert seen["redirects"][0] == (link["url"], 303, app_url), seen["redirects"]
    assert docs[0] == (app_url, 503), docs
    # The waking page, whose status polls carried the cookie, then the app.
    assert seen["n_before_reload"] >= 2, docs
    ours = [c for c in seen["cookies"] if c["name"] == "wg_token"]
    assert len(ours) == 1 and ours[0]["httpOnly"] and ours[0]["sameSite"] == "Lax", ours
    assert ours[0]["domain"] == "%s.%s" % (sid, DOMAIN) and ours[0]["path"] == "/", ours
    # A reload works with the cookie alone.
    assert seen["reload"] and seen["reload"]["u"] == app_url, seen
    assert docs[seen["n_before_reload"]:] and all(s == 200 for _, s in docs[seen["n_before_reload"]:]), docs
