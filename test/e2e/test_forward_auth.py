"""access.forward_auth, end to end: the operator's auth service decides for
private session routes (as nginx's auth_request and Traefik's ForwardAuth).

The real binary with role proxy and a real redis-server; the test writes the
session records (with their access generation) as an orchestrator would,
the session's "container" is the recording upstream, and the auth service is
a small HTTP server started here that records every sub-request:

- allow (2xx): the request reaches the session; the service saw the
  original method, URI, host, cookies (ours left out) and Authorization;
- deny: 401 and 403 are passed back with the service's WWW-Authenticate and
  Location; nothing reaches the session, nothing is woken;
- down (refused, or slower than access.forward_auth.timeout): 503, never an
  allow, no wake;
- the cache: one sub-request per credential within cache_ttl, at most
  cache_max answers (the oldest go first), failures never cached;
- a valid link token of ours needs no sub-request.
"""

import http.server
import json
import socket
import tempfile
import threading
import time
import urllib.request

import pytest
import redis

from harness.util import TcpServer
from sessions_util import Orchestrator, wait_subscribed
from access_util import API, DOMAIN, NAV, header, mint, put_record, secret_file, send

HOST = "h1"


class AuthServer:
    """Answers GET by self.decide(headers) -> (status, extra headers); keeps
    every sub-request's headers. stop() closes the port."""

    def __init__(self):
        self.seen = []
        self.delay = 0.0
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                with outer.lock:
                    outer.seen.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
                if outer.delay:
                    time.sleep(outer.delay)
                status, extra = outer.decide(self.headers)
                body = b"auth says %d\n" % status
                self.send_response(status)
                for k, v in extra:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def decide(h):
        cookie = h.get("Cookie") or ""
        if "user=mallory" in cookie:
            return 403, [("Location", "https://login.example.com/forbidden")]
        if any("user=" + u in cookie for u in ("alice", "bob", "carol")) or h.get("Authorization") == "Bearer ok":
            return 200, [("X-User", "alice")]
        return 401, [("WWW-Authenticate", 'Basic realm="previews"')]

    def count(self):
        with self.lock:
            return len(self.seen)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def auth():
    a = AuthServer()
    try:
        yield a
    finally:
        a.stop()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(start_wakegate, redis_server, auth_port, e2e_tmp, cache_ttl="30s", cache_max=100, timeout="500ms",
          key=False, trusted=None, max_in_flight=None, workers=None):
    access = {"forward_auth": {"url": "http://127.0.0.1:%d/verify" % auth_port, "timeout": timeout,
                               "cache_ttl": cache_ttl, "cache_max": cache_max}}
    if max_in_flight:
        access["forward_auth"]["max_in_flight"] = max_in_flight
    if key:
        access["secret_file"] = secret_file(tempfile.mkdtemp(prefix="fauth-", dir=e2e_tmp))
    cfg = {
        "redis": {"url": redis_server.url},
        "docker": {"name": HOST},
        "routes": [{"match": {"host": "{session}." + DOMAIN}}],
        "access": access,
        "log": {"level": "debug", "access": True},
    }
    if trusted:
        cfg["trusted_proxies"] = trusted
    if workers is not None:
        cfg["workers"] = workers
    gw = start_wakegate(cfg, args=["--role", "proxy"])
    wait_subscribed(Orchestrator(redis_server.url))
    return gw


def metrics(gw):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % gw.admin_port, timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("wakegate_forward_auth_") or line.startswith("wakegate_access_"):
            k, v = line.split()
            out[k] = float(v)
    return out


def wakes(r):
    return r.xrange("wg:wake:" + HOST)


def test_allow_deny_and_what_the_service_sees(redis_server, recording_upstream, start_wakegate, auth, e2e_tmp):
    r = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=3)
    gw = start(start_wakegate, redis_server, auth.port, e2e_tmp)
    put_record(r, "f-1", "running", 7, ip="127.0.0.1", port=recording_upstream.port)
    put_record(r, "f-2", "asleep", 8)
    host = "f-1." + DOMAIN

    # Allow: the request reaches the session, with its own cookies and Authorization.
    resp, _ = send(gw, host, "/x?q=1&wg_token=junk", API + (("Cookie", "user=alice; wg_token=zzz"),
                                                             ("Authorization", "Basic YTpi")))
    assert resp.status == 200 and resp.body == b"ok GET /x?q=1\n", (resp, resp.body)
    s = auth.seen[-1]
    assert s["path"] == "/verify", s
    h = s["headers"]
    assert h["x-forwarded-method"] == "GET" and h["x-forwarded-uri"] == "/x?q=1", h
    assert h["x-forwarded-host"] == host and h["x-forwarded-proto"] == "http", h
    assert h["x-forwarded-for"] == "127.0.0.1", h
    assert h["cookie"] == "user=alice" and h["authorization"] == "Basic YTpi", h
    assert h["connection"] == "close" and h["host"] == "127.0.0.1:%d" % auth.port, h
    seen = b"".join(c.data for c in recording_upstream.connections)
    assert b"Cookie: user=alice\r\n" in seen and b"Authorization: Basic YTpi\r\n" in seen, seen
    assert b"wg_token" not in seen, seen

    # Deny: 401 with the service's challenge (the sign-in page for a
    # navigation), 403 with its Location. Nothing reaches the session.
    n_up = len(recording_upstream.connections)
    resp, _ = send(gw, host, "/", API)
    assert resp.status == 401 and header(resp, "WWW-Authenticate") == 'Basic realm="previews"', resp
    resp, _ = send(gw, host, "/", NAV)
    assert resp.status == 401 and b"This preview is private" in resp.body
    resp, _ = send(gw, host, "/", API + (("Cookie", "user=mallory"),))
    assert resp.status == 403 and header(resp, "Location") == "https://login.example.com/forbidden", resp
    assert len(recording_upstream.connections) == n_up
    # A sleeping session is not woken by a denied request.
    resp, _ = send(gw, "f-2." + DOMAIN, "/", API + (("Cookie", "user=mallory"),))
    assert resp.status == 403
    resp, _ = send(gw, "f-2." + DOMAIN, "/", API)
    assert resp.status == 401
    time.sleep(0.3)
    assert wakes(r) == []
    # Allowed, it is: the request is held and a wake is sent (no
    # orchestrator here, so the hold is not waited for).
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sk:
        sk.sendall(b"GET / HTTP/1.1\r\nHost: f-2.%s\r\nAuthorization: Bearer ok\r\n\r\n" % DOMAIN.encode())
        deadline = time.monotonic() + 3
        while not wakes(r) and time.monotonic() < deadline:
            time.sleep(0.02)
    assert len(wakes(r)) == 1, wakes(r)


def test_down_or_slow_service_means_503_and_no_wake(redis_server, start_wakegate, auth, e2e_tmp):
    r = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=3)
    dead = free_port()  # nothing listens there
    gw = start(start_wakegate, redis_server, dead, e2e_tmp)
    put_record(r, "d-1", "asleep", 1)
    for hdrs in (API + (("Cookie", "user=alice"),), NAV, API):
        resp, _ = send(gw, "d-1." + DOMAIN, "/", hdrs)
        assert resp.status == 503, resp
    gw.stop()
    # Slower than the timeout (500 ms): 503 too.
    auth.delay = 2.0
    gw = start(start_wakegate, redis_server, auth.port, e2e_tmp)
    t0 = time.monotonic()
    resp, _ = send(gw, "d-1." + DOMAIN, "/", API + (("Cookie", "user=alice"),))
    assert resp.status == 503 and time.monotonic() - t0 < 1.8, resp
    time.sleep(0.3)
    assert wakes(r) == []
    assert r.hget("wg:session:d-1", "state") == "asleep"
    # A failure is never cached: the service back, the same credential is asked again.
    auth.delay = 0
    resp, _ = send(gw, "d-1." + DOMAIN, "/_wakegate/status", API + (("Cookie", "user=alice"),))
    assert resp.status == 200 and json.loads(resp.body)["state"] == "asleep", resp.body
    m = metrics(gw)
    assert m["wakegate_forward_auth_failures_total"] == 1 and m["wakegate_forward_auth_requests_total"] == 2, m
    assert any("forward auth failed, denying (503)" in l for l in gw.log_lines())


def test_the_cache_per_credential_and_its_bound(redis_server, recording_upstream, start_wakegate, auth, e2e_tmp):
    r = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=3)
    # One worker loop: the cache and its bound are per loop.
    gw = start(start_wakegate, redis_server, auth.port, e2e_tmp, cache_max=2, key=True, workers=1)
    put_record(r, "c-1", "running", 5, ip="127.0.0.1", port=recording_upstream.port)
    host = "c-1." + DOMAIN

    def get(user):
        resp, _ = send(gw, host, "/", API + (("Cookie", "user=%s" % user),))
        assert resp.status == 200, resp
        return auth.count()

    assert get("alice") == 1
    assert get("alice") == 1          # cached
    assert get("bob") == 2
    assert get("carol") == 3          # the bound: alice, the oldest, goes
    assert get("carol") == 3
    assert get("alice") == 4          # asked again; bob goes
    assert get("carol") == 4
    # A denial is cached as well.
    resp, _ = send(gw, host, "/", API)
    resp, _ = send(gw, host, "/", API)
    assert resp.status == 401 and auth.count() == 5
    m = metrics(gw)
    assert m["wakegate_forward_auth_cached"] == 2, m
    assert m["wakegate_forward_auth_cache_hits_total"] == 4, m
    # Our own link token needs no sub-request.
    tok = mint("c-1", int(time.time()) + 60, 5)
    resp, _ = send(gw, host, "/", API + (("X-Wakegate-Token", tok),))
    assert resp.status == 200 and auth.count() == 5


def test_a_yes_for_one_session_is_not_reused_for_another(redis_server, recording_upstream, start_wakegate, auth,
                                                          e2e_tmp):
    """The service decides per request (it is told the host): alice may open
    c-open, not c-closed. Her cached yes for c-open must not open c-closed."""
    def decide(h):
        cookie = h.get("Cookie") or ""
        if "user=alice" in cookie and h.get("X-Forwarded-Host", "").startswith("c-open."):
            return 200, []
        return 403, []
    auth.decide = decide
    r = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=3)
    # One worker loop: the test counts the sub-requests one loop's cache saves.
    gw = start(start_wakegate, redis_server, auth.port, e2e_tmp, workers=1)
    for sid in ("c-open", "c-closed"):
        put_record(r, sid, "running", 5, ip="127.0.0.1", port=recording_upstream.port)
    alice = API + (("Cookie", "user=alice"),)
    resp, _ = send(gw, "c-open." + DOMAIN, "/", alice)
    assert resp.status == 200 and auth.count() == 1, resp
    resp, _ = send(gw, "c-closed." + DOMAIN, "/", alice)
    assert resp.status == 403, resp
    assert auth.count() == 2, "the second session was answered from the first one's cache entry"
    resp, _ = send(gw, "c-open." + DOMAIN, "/", alice)
    assert resp.status == 200 and auth.count() == 2  # still cached for its own session


def test_any_other_answer_of_the_service_means_503_and_no_wake(redis_server, start_wakegate, auth, e2e_tmp):
    """Only 2xx allows and only 401/403 are passed back: a redirect, a
    5xx, a 404 or a 1xx-less oddity from the service is a failure (503),
    fails closed, is never cached and wakes nothing."""
    r = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=3)
    gw = start(start_wakegate, redis_server, auth.port, e2e_tmp)
    put_record(r, "o-1", "asleep", 1)
    for status, extra in ((500, []), (502, []), (302, [("Location", "https://login.example.com/")]),
                          (404, []), (407, [("Proxy-Authenticate", "Basic")])):
        auth.decide = lambda h, status=status, extra=extra: (status, extra)
        before = auth.count()
        resp, _ = send(gw, "o-1." + DOMAIN, "/", API + (("Cookie", "user=alice"),))
        assert resp.status == 503, (status, resp)
        assert header(resp, "Location") is None and header(resp, "Proxy-Authenticate") is None
        assert auth.count() == before + 1, status  # asked, and not from a cache
    time.sleep(0.3)
    assert wakes(r) == []
    assert r.hget("wg:session:o-1", "state") == "asleep"
    m = metrics(gw)
    assert m["wakegate_forward_auth_failures_total"] == 5, m


def test_behind_a_trusted_proxy_the_service_sees_the_client_chain(redis_server, recording_upstream, start_wakegate,
                                                                   auth, e2e_tmp):
    """The service gets the X-Forwarded-For the upstream gets: the trusted
    load balancer's list, then the peer; an untrusted client's own list is
    dropped."""
    r = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=3)
    gw = start(start_wakegate, redis_server, auth.port, e2e_tmp, trusted=["127.0.0.1/32"])
    put_record(r, "x-1", "running", 3, ip="127.0.0.1", port=recording_upstream.port)
    resp, _ = send(gw, "x-1." + DOMAIN, "/", API + (("Cookie", "user=alice"),
                                                    ("X-Forwarded-For", "203.0.113.9")))
    assert resp.status == 200, resp
    assert auth.seen[-1]["headers"]["x-forwarded-for"] == "203.0.113.9, 127.0.0.1", auth.seen[-1]
    seen = b"".join(c.data for c in recording_upstream.connections)
    assert b"X-Forwarded-For: 203.0.113.9, 127.0.0.1\r\n" in seen, seen
    gw.stop()
    gw = start(start_wakegate, redis_server, auth.port, e2e_tmp)
    resp, _ = send(gw, "x-1." + DOMAIN, "/", API + (("Cookie", "user=bob"), ("X-Forwarded-For", "203.0.113.9")))
    assert resp.status == 200, resp
    assert auth.seen[-1]["headers"]["x-forwarded-for"] == "127.0.0.1", auth.seen[-1]


@pytest.mark.parametrize("answer", [b"HTTP/1.1 2001 OK\r\n\r\n", b"HTTP/1.1 20 OK\r\n\r\n",
                                    b"HTTP/1.x 200 OK\r\n\r\n", b"HTTP/2 200\r\n\r\n", b"200 OK\r\n\r\n"])
def test_a_malformed_status_line_from_the_service_is_a_failure(redis_server, start_wakegate, e2e_tmp, answer):
    r = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=3)
    raw = TcpServer("127.0.0.1", answer)
    try:
        gw = start(start_wakegate, redis_server, raw.port, e2e_tmp)
        put_record(r, "m-1", "asleep", 1)
        resp, _ = send(gw, "m-1." + DOMAIN, "/", API + (("Cookie", "user=alice"),))
        assert resp.status == 503, (answer, resp)
        assert wakes(r) == []
    finally:
        raw.close()


def test_concurrent_requests_with_one_credential_ask_once(redis_server, recording_upstream, start_wakegate, auth,
                                                         e2e_tmp):
    """A page's first load: 20 requests with the same cookie at once, while
    the service takes 300 ms. One sub-request; all 20 are answered."""
    import concurrent.futures

    r = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=3)
    gw = start(start_wakegate, redis_server, auth.port, e2e_tmp, cache_ttl="0s")
    put_record(r, "j-1", "running", 2, ip="127.0.0.1", port=recording_upstream.port)
    auth.delay = 0.3
    before = auth.count()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        got = list(pool.map(lambda i: send(gw, "j-1." + DOMAIN, "/m%d.js" % i, API + (("Cookie", "user=carol"),))[0],
                            range(20)))
    assert [g.status for g in got] == [200] * 20, [g.status for g in got]
    asked = auth.count() - before
    assert asked < 20, asked  # the requests that arrived while one was in flight joined it
    m = metrics(gw)
    assert m["wakegate_forward_auth_joined_total"] == 20 - asked, m
    assert m["wakegate_forward_auth_requests_total"] == asked, m
    assert asked <= 3, asked


def test_sub_requests_on_the_wire_are_capped(redis_server, recording_upstream, start_wakegate, auth, e2e_tmp):
    """max_in_flight 2: five requests with five credentials at once while the
    service is slow; two are asked, three get 503 at once (fail closed)."""
    import concurrent.futures

    r = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=3)
    # One worker loop: max_in_flight is per loop.
    gw = start(start_wakegate, redis_server, auth.port, e2e_tmp, cache_ttl="0s", timeout="2s", max_in_flight=2,
               workers=1)
    put_record(r, "k-1", "running", 2, ip="127.0.0.1", port=recording_upstream.port)
    auth.delay = 0.8
    users = ["alice", "bob", "carol", "alice; x=1", "bob; x=2"]
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        got = list(pool.map(lambda u: send(gw, "k-1." + DOMAIN, "/", API + (("Cookie", "user=" + u),))[0], users))
    statuses = sorted(g.status for g in got)
    assert statuses == [200, 200, 503, 503, 503], statuses
