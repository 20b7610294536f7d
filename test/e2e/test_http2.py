"""End-to-end: HTTP/2 to clients over TLS (issue 14). Real clients (curl
--http2, h2load, headless Chromium, and a frame-by-frame client built on
Debian's python3-h2 for the hostile cases) against the real binary, with a
test CA made by the openssl CLI in the test's own directory.

Every request stream goes through the HTTP/1.1 pipeline (routing, holds,
access, limits), so these tests look at what HTTP/2 adds: ALPN, many streams
on one connection, flow control and the defences. Each hostile test keeps a
second, well-behaved client getting answers while the attack runs, and
checks the gateway's memory stays bounded."""

import asyncio
import contextlib
import json
import os
import signal
import threading
import time

import pytest

from browser_util import Cdp, Chromium
from h2_util import (ENHANCE_YOUR_CALM, ContinuationFrame, DataFrame, GoAwayFrame, HeadersFrame,
                     RawH2, RstStreamFrame, SettingsFrame, curl2, h2load, rss_kib)
from harness import upstream
from stack_util import APP_TEXT, DOMAIN, gw_config
from streams_util import WsEchoServer, proxy_config
from tls_util import fresh_ca, tls_block

MIB = 1024 * 1024


@pytest.fixture
def ca(e2e_tmp, request):
    return fresh_ca(e2e_tmp, "h2", request.node.name)


def h2_gw(start_wakegate, up_addr, ca, limits=None, http2=None, names=("app.test",)):
    cfg = proxy_config(up_addr, limits=limits)
    cfg["tls"] = tls_block([ca.leaf("app", list(names))])
    if http2 is not None:
        cfg["http2"] = http2
    return start_wakegate(cfg)


# ================================================================ requests

def test_curl_http2_and_http11_on_one_listener(start_wakegate, recording_upstream, ca):
    gw = h2_gw(start_wakegate, recording_upstream.address, ca)
    st, hdrs, body, version = curl2(gw.port, "app.test", "/hello?x=1", ca=ca.cert)
    assert (st, version) == (200, "2"), (st, version)
    assert body == b"ok GET /hello?x=1\n", body
    [hello] = [r for r in recording_upstream.requests if r.raw_head.startswith(b"GET /hello?x=1 ")]
    head = hello.raw_head.decode(errors="replace").lower()
    # The upstream gets HTTP/1.1 with the authority as Host, https, and the client.
    assert head.startswith("get /hello?x=1 http/1.1\r\n"), head
    assert "host: app.test:%d\r\n" % gw.port in head, head
    assert "x-forwarded-proto: https\r\n" in head, head
    assert "x-forwarded-for: 127.0.0.1\r\n" in head, head
    # Hop-by-hop fields never reach an HTTP/2 client.
    assert "connection" not in hdrs and "keep-alive" not in hdrs, hdrs
    st, _, body, version = curl2(gw.port, "app.test", "/one", ca=ca.cert, http="--http1.1")
    assert (st, version) == (200, "1.1") and body == b"ok GET /one\n"
    # A POST: its body reaches the upstream.
    st, _, body, version = curl2(gw.port, "app.test", "/post", ca=ca.cert, extra=["--data-binary", "abc"])
    assert (st, version) == (200, "2")
    # By path: with worker loops the upstream records each request when its
    # own pooled connection gives it up, not in the order they were sent.
    [post] = [r for r in recording_upstream.requests if r.raw_head.startswith(b"POST /post ")]
    assert post.body == b"abc"
    # The access log says which connection and stream a request came on.
    assert gw.wait_log(r"path=/hello status=200 .* proto=h2 h2_conn=\d+ h2_stream=1\b", timeout=5)
    m = gw.metrics()
    assert m["wakegate_http2_streams_total"] >= 2, m
    assert m['wakegate_tls_alpn_total{protocol="h2"}'] >= 2, m


def test_uploads_and_large_downloads(start_wakegate, make_upstream, ca):
    n = 8 * MIB + 13
    down = make_upstream(upstream.large_body(n))
    gw = h2_gw(start_wakegate, down.address, ca)
    st, _, body, version = curl2(gw.port, "app.test", "/big", ca=ca.cert)
    assert (st, version) == (200, "2") and len(body) == n and body == upstream.pattern(0, n)
    echo = make_upstream(upstream.echo_body())
    gw2 = h2_gw(start_wakegate, echo.address, ca)
    data = os.urandom(3 * MIB + 7)
    path = os.path.join(ca.d, "upload.bin")
    with open(path, "wb") as f:
        f.write(data)
    st, _, body, version = curl2(gw2.port, "app.test", "/up", ca=ca.cert, extra=["--data-binary", "@" + path])
    assert (st, version) == (200, "2") and body == data
    # HEAD: the head's length, no body.
    st, hdrs, body, _ = curl2(gw.port, "app.test", "/big", ca=ca.cert, extra=["-I"])
    assert st == 200 and hdrs.get("content-length") == str(n) and body.strip() == b""


def test_many_streams_on_one_connection(start_wakegate, nginx_upstream, ca):
    gw = h2_gw(start_wakegate, nginx_upstream.address, ca)
    r = h2load(gw.port, "app.test", "/small.txt", n=2000, clients=1, streams=100)
    assert r["protocol"] == "h2", r["text"]
    assert r["succeeded"] == 2000 and r["2xx"] == 2000, r["text"]
    m = gw.metrics()
    assert m['wakegate_tls_handshakes_total{result="ok"}'] == 1, m
    assert m["wakegate_http2_streams_total"] == 2000, m


def test_session_route_with_a_wake_over_http2(stack, ca):
    cfg = gw_config(stack.redis_server.url, stack.dockerd)
    cfg["tls"] = tls_block([ca.leaf("preview", ["*." + DOMAIN])])
    stack.start(cfg)
    stack.create("s1")
    st, _, body, version = curl2(stack.gw.port, "s1." + DOMAIN, "/", ca=ca.cert,
                                 extra=["-H", "Accept: */*"], timeout=30)
    assert (st, version) == (200, "2") and APP_TEXT in body, (st, version, body[:200])
    assert stack.record("s1")["state"] == "running"
    # A navigation to a session that does not exist: the pipeline's 404, over h2.
    st, _, _, version = curl2(stack.gw.port, "nope." + DOMAIN, "/", ca=ca.cert)
    assert (st, version) == (404, "2")


# ================================================================ browsers

PAGE_N = 200


def chromium_for_app_test(e2e_tmp, artifacts, name):
    """Headless Chromium that resolves app.test to us and takes the test CA's
    certificates (it has no way to be told of the CA itself)."""
    return Chromium(os.path.join(e2e_tmp, name), os.path.join(artifacts, name + ".log"),
                    extra_args=["--ignore-certificate-errors", "--host-resolver-rules=MAP app.test 127.0.0.1"])


def page_files():
    imgs = "".join('<script src="/m/%d.js"></script>' % i for i in range(PAGE_N))
    files = {"/index.html": "<!doctype html><title>h2</title>%s<script>window.done=1</script>" % imgs}
    for i in range(PAGE_N):
        files["/m/%d.js" % i] = "window.c=(window.c||0)+1;\n"
    return files


def test_chromium_loads_200_subresources_over_one_h2_connection(start_wakegate, nginx_upstream, ca, e2e_tmp,
                                                                  artifacts):
    for path, text in page_files().items():
        dst = nginx_upstream.www / path.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(text)
    gw = h2_gw(start_wakegate, nginx_upstream.address, ca)
    b = chromium_for_app_test(e2e_tmp, artifacts, "chromium-h2")
    try:
        async def load(cdp):
            cdp.events.clear()
            await cdp.send("Page.navigate", url="https://app.test:%d/index.html" % gw.port)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                v = await cdp.evaluate("window.done === 1 ? String(window.c) : ''")
                if v:
                    await asyncio.sleep(0.2)
                    return (int(v), [p["response"] for _, p in cdp.events_named("Network.responseReceived")],
                            [p for _, p in cdp.events_named("Network.loadingFailed")])
                await asyncio.sleep(0.1)
            raise AssertionError("the page did not load: %r" % cdp.events_named("Network.loadingFailed")[:3])

        async def go():
            async with Cdp(b.page_ws_url()) as cdp:
                await cdp.send("Page.enable")
                await cdp.send("Network.enable")
                for _ in range(3):
                    got = await load(cdp)
                    # Chromium aborts its requests when the host's interfaces
                    # change (another test's container going away): only
                    # then is the page loaded again.
                    if not any(f["errorText"] == "net::ERR_NETWORK_CHANGED" for f in got[2]):
                        break
                return got
        count, responses, failed = asyncio.run(go())
    finally:
        b.stop()
    assert count == PAGE_N, (count, failed[:3])
    scripts = [r for r in responses if "/m/" in r["url"]]
    page = [r for r in responses if r["url"].endswith("/index.html")]
    assert len(scripts) == PAGE_N and len(page) == 1, (len(scripts), len(page))
    # The page and its 200 scripts: HTTP/2; the scripts all on one
    # connection. (Chromium may load the page itself on a second socket it
    # opened speculatively at the navigation.)
    assert {r["protocol"] for r in scripts + page} == {"h2"}, {r["protocol"] for r in scripts + page}
    conns = {}
    for r in scripts + page:
        conns.setdefault(r["connectionId"], []).append(r["url"].rsplit("/", 1)[-1])
    assert len({r["connectionId"] for r in scripts}) == 1, {k: len(v) for k, v in conns.items()}
    assert all(r["status"] == 200 for r in scripts), [r["status"] for r in scripts if r["status"] != 200]
    m = gw.metrics()
    assert m["wakegate_http2_streams_total"] >= PAGE_N + 1, m


def test_browser_websocket_falls_back_to_http11(start_wakegate, ca, e2e_tmp, artifacts, nginx_upstream):
    """Without RFC 8441, a page loaded over h2 opens its WebSocket on an
    HTTP/1.1 connection: the echo works and the gateway saw one upgrade."""
    srv = WsEchoServer()
    try:
        gw = h2_gw(start_wakegate, srv.address, ca)
        b = chromium_for_app_test(e2e_tmp, artifacts, "chromium-ws")
        try:
            async def go():
                async with Cdp(b.page_ws_url()) as cdp:
                    await cdp.send("Page.enable")
                    await cdp.send("Page.navigate", url="https://app.test:%d/page" % gw.port)
                    await asyncio.sleep(0.5)
                    js = ("new Promise(r => { const w = new WebSocket('wss://app.test:%d/ws');"
                          "w.onopen = () => w.send('hi'); w.onmessage = e => r(e.data);"
                          "w.onerror = () => r('error'); setTimeout(() => r('timeout'), 8000); })" % gw.port)
                    # A change of the host's interfaces (another test's
                    # container going away) makes Chromium drop the socket:
                    # up to three tries; a real failure fails all three.
                    for _ in range(3):
                        got = await cdp.send("Runtime.evaluate", expression=js, awaitPromise=True,
                                             returnByValue=True, timeout=15)
                        if got["result"].get("value") == "hi":
                            break
                    return got
            got = asyncio.run(go())
        finally:
            b.stop()
    finally:
        srv.stop()
    assert got["result"]["value"] == "hi", got
    m = gw.metrics()
    assert m['wakegate_tls_alpn_total{protocol="h2"}'] >= 1, m
    assert m['wakegate_tls_alpn_total{protocol="http/1.1"}'] >= 1, m


# ================================================================ hostile clients

def normal_client_keeps_answering(gw, ca, stop, results):
    while not stop.is_set():
        try:
            st, _, _, version = curl2(gw.port, "app.test", "/small.txt", ca=ca.cert, timeout=10)
            results.append((st, version))
        except Exception as e:  # noqa: BLE001 - recorded and asserted below
            results.append(("error", str(e)))
        time.sleep(0.05)


BYSTANDERS = []


@pytest.fixture(autouse=True)
def _end_bystanders():
    yield
    while BYSTANDERS:
        BYSTANDERS.pop().end()


class Bystander:
    """A well-behaved HTTP/2 client making requests while an attack runs."""

    def __init__(self, gw, ca):
        BYSTANDERS.append(self)
        self.stop = threading.Event()
        self.results = []
        self.t = threading.Thread(target=normal_client_keeps_answering, args=(gw, ca, self.stop, self.results))
        self.t.start()

    def end(self):
        self.stop.set()
        self.t.join(30)

    def finish(self):
        time.sleep(0.3)
        self.end()
        ok = [r for r in self.results if r == (200, "2")]
        assert ok and len(ok) == len(self.results), self.results[-5:]
        return len(ok)


@contextlib.contextmanager
def attack(gw, ca, settings=None):
    """An attacker's HTTP/2 connection (a RawH2, whose .rss_before is the
    gateway's RSS when it began) while a bystander makes requests. After
    it: every bystander request was answered, and the gateway's RSS grew
    by less than 64 MiB."""
    before = rss_kib(gw.pid)
    by = Bystander(gw, ca)
    c = RawH2(gw.port, "app.test", ca.cert, settings=settings)
    c.rss_before = before
    try:
        yield c
    finally:
        c.close()
    by.finish()
    after = rss_kib(gw.pid)
    assert after - before < 64 * 1024, (before, after)


def test_rapid_reset_ends_the_connection(start_wakegate, nginx_upstream, ca):
    gw = h2_gw(start_wakegate, nginx_upstream.address, ca)
    with attack(gw, ca) as c:
        frames = []
        for _ in range(5000):
            sid = c.new_stream()
            h = HeadersFrame(sid, c.header_block("/small.txt"))
            h.flags.add("END_HEADERS")
            h.flags.add("END_STREAM")
            frames += [h, RstStreamFrame(sid, 0x8)]
            if len(frames) >= 200:
                try:
                    c.send(*frames)
                except OSError:
                    break
                frames = []
        g = c.until_goaway()
    assert g is None or g.error_code == ENHANCE_YOUR_CALM, g.error_code
    m = gw.metrics()
    assert m["wakegate_http2_goaways_total{reason=\"calm\"}"] + m["wakegate_http2_goaways_total{reason=\"error\"}"] >= 1, m
    assert m["wakegate_http2_resets_received_total"] >= 1, m


def test_continuation_flood_ends_the_connection(start_wakegate, nginx_upstream, ca):
    gw = h2_gw(start_wakegate, nginx_upstream.address, ca)
    with attack(gw, ca) as c:
        sid = c.new_stream()
        c.send(HeadersFrame(sid, c.header_block("/small.txt")))
        block = c.enc.encode([("x-pad-%d" % i, "v" * 100) for i in range(50)])
        try:
            for _ in range(2000):
                c.send(ContinuationFrame(sid, block))
        except OSError:
            pass
        g = c.until_goaway()
    assert g is None or g.error_code != 0, g.error_code


def test_settings_and_ping_floods_end_the_connection(start_wakegate, nginx_upstream, ca):
    gw = h2_gw(start_wakegate, nginx_upstream.address, ca)
    with attack(gw, ca) as c:
        burst = b"".join(SettingsFrame(0).serialize() for _ in range(500))
        try:
            for _ in range(200):  # 100,000 SETTINGS, none of their ACKs read
                c.send_raw(burst)
        except OSError:
            pass
        g = c.until_goaway()
    assert g is None or g.error_code == ENHANCE_YOUR_CALM, g.error_code


def test_zero_window_stall_is_reset_and_memory_stays_bounded(start_wakegate, make_upstream, ca):
    big = 16 * MIB
    down = make_upstream(upstream.large_body(big))
    gw = h2_gw(start_wakegate, down.address, ca, limits={"send_idle": "2s"})
    # SETTINGS_INITIAL_WINDOW_SIZE = 0: no stream may send a byte of DATA.
    with attack(gw, ca, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}) as c:
        sids = [c.request("/big%d" % i) for i in range(20)]
        resets = set()
        deadline = time.monotonic() + 20
        while len(resets) < len(sids) and time.monotonic() < deadline:
            f = c.read_frame(timeout=20)
            if f is None:
                break
            if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                ack = SettingsFrame(0)
                ack.flags.add("ACK")
                c.send(ack)
            assert not (isinstance(f, DataFrame) and f.data), "DATA sent into a zero window"
            if isinstance(f, RstStreamFrame):
                resets.add(f.stream_id)
            if isinstance(f, GoAwayFrame):
                break
        mid = rss_kib(gw.pid)
        before = c.rss_before
    assert resets == set(sids), (resets, sids)
    # 20 streams of 16 MiB each did not come into memory: each stream holds
    # at most its buffer mark, and the upstream reads stopped.
    assert mid - before < 48 * 1024, (before, mid)
    m = gw.metrics()
    assert m["wakegate_http2_resets_sent_total"] >= 20, m


# ================================================================ edges

def test_header_limits_connect_and_host_fallback(start_wakegate, recording_upstream, ca):
    gw = h2_gw(start_wakegate, recording_upstream.address, ca, limits={"head_max": "4KiB"})
    c = RawH2(gw.port, "app.test", ca.cert)
    try:
        # Over limits.head_max: 431 on that stream; the connection goes on.
        sid = c.request("/big-head", extra=[("x-pad", "v" * 6000)])
        st, _ = c.response(sid)
        assert st == 431, st
        sid = c.request("/after")
        st, body = c.response(sid)
        assert st == 200 and body == b"ok GET /after\n", (st, body)
        # CONNECT (no :path) is not proxied.
        sid = c.new_stream()
        f = HeadersFrame(sid, c.enc.encode([(":method", "CONNECT"), (":authority", "example.com:443")]))
        f.flags.add("END_HEADERS")
        c.send(f)
        st, _ = c.response(sid)
        assert st == 405, st
        # No :authority: the Host field names the host.
        sid = c.new_stream()
        f = HeadersFrame(sid, c.enc.encode([(":method", "GET"), (":scheme", "https"), (":path", "/h"),
                                            ("host", "other.test")]))
        f.flags.add("END_HEADERS")
        f.flags.add("END_STREAM")
        c.send(f)
        st, _ = c.response(sid)
        assert st == 200
        assert "host: other.test\r\n" in recording_upstream.requests[-1].raw_head.decode().lower()
        # A path HTTP/1.1 could not carry in its request line: 400, never
        # a second request line for the pipeline.
        # (nghttp2 resets some such streams itself, before we see them.)
        for bad in ("/a HTTP/1.1\x7f/b", "/a b", "/a\tb"):
            sid = c.request(bad)
            try:
                st, _ = c.response(sid)
            except AssertionError as e:
                assert "reset" in str(e), e
                continue
            assert st == 400, (bad, st)
        assert not [r for r in recording_upstream.requests if " b" in r.raw_head.decode(errors="replace")
                    .split("\r\n")[0][4:-9]]
        # Cookie crumbs are joined into one field (RFC 9113 8.2.3).
        sid = c.request("/c", extra=[("cookie", "a=1"), ("cookie", "b=2")])
        st, _ = c.response(sid)
        assert st == 200
        assert "cookie: a=1; b=2\r\n" in recording_upstream.requests[-1].raw_head.decode().lower()
    finally:
        c.close()
    m = gw.metrics()
    assert m["wakegate_http2_headers_too_large_total"] == 1, m


def test_sigterm_sends_goaway_and_streams_under_way_finish(start_wakegate, make_upstream, ca):
    slow = make_upstream(upstream.slow_response(1.0, body=b"finished\n"))
    gw = h2_gw(start_wakegate, slow.address, ca)
    c = RawH2(gw.port, "app.test", ca.cert)
    try:
        sid = c.request("/slow")
        time.sleep(0.3)  # the request is at the upstream
        gw.send_signal(signal.SIGTERM)
        got_goaway = None
        status, body = None, b""
        from hpack import Decoder
        dec = Decoder()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            f = c.read_frame(timeout=10)
            if f is None:
                break
            if isinstance(f, GoAwayFrame):
                got_goaway = f
            if isinstance(f, HeadersFrame) and f.stream_id == sid:
                status = int(dict(dec.decode(f.data))[":status"])
            if isinstance(f, DataFrame) and f.stream_id == sid:
                body += f.data
                if "END_STREAM" in f.flags:
                    break
    finally:
        c.close()
    assert got_goaway is not None and got_goaway.error_code == 0, got_goaway
    assert got_goaway.last_stream_id >= sid
    assert (status, body) == (200, b"finished\n"), (status, body)
    assert gw.proc.wait(timeout=10) == 0
