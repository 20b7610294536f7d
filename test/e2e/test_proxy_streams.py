"""End-to-end: how wakegate moves bytes. Keep-alive and pipelining, streamed
bodies both ways at 1 GiB with flat memory, backpressure toward a slow reader,
WebSocket tunnels, server-sent events, the upstream pool and its retries.

Everything talks to the real binary on 127.0.0.1 through the conftest
fixtures (start_wakegate, recording upstreams, Debian's nginx)."""

import asyncio
import socket
import threading
import time

import pytest

from harness import rawhttp, upstream
from harness.upstream import pattern, response_bytes
from harness.util import wait_for
from streams_util import (GIB, MIB, BodyReader, CountingLargeBody, KeepaliveThenDrop, RssSampler,
                          WsEchoServer, close_after_each_response, connect, crc32_of_pattern,
                          crc32_of_zeros, first_then, metrics, program_lines, proxy_config, raw_get, read_head,
                          run_async, send_pattern, tunnel_echo_until_eof, tunnel_hold, upgrade_then, ws_request)

RSS_LIMIT_KIB = 64 * 1024


# ================================================================ keep-alive, pipelining

def test_keepalive_reuses_client_and_upstream_connection(start_wakegate, recording_upstream):
    gw = start_wakegate(proxy_config(recording_upstream.address))
    n = 6
    with rawhttp.connect(gw.port) as c:
        for i in range(n):
            c.send(raw_get("/ka/%d" % i))
            r = c.read_response()
            assert r.status == 200
            assert r.body == ("ok GET /ka/%d\n" % i).encode()
            assert (r.headers.get("connection") or "").lower() != "close"
        assert c.close_state(timeout=0.3) == "timeout", "client connection closed after keep-alive responses"
    reqs = recording_upstream.wait_for_requests(n)
    assert [r.target for r in reqs] == ["/ka/%d" % i for i in range(n)]
    assert len(recording_upstream.connections) == 1, recording_upstream.connections
    assert len(recording_upstream.connections[0].requests) == n


def test_pooled_upstream_connection_shared_across_client_connections(start_wakegate, recording_upstream):
    # One worker loop: the keep-alive pool is per loop.
    gw = start_wakegate(proxy_config(recording_upstream.address, workers=1))
    for i in range(4):
        r = rawhttp.send(gw.port, raw_get("/seq/%d" % i, extra="Connection: close\r\n"))
        assert r.status == 200 and r.response.body == ("ok GET /seq/%d\n" % i).encode()
    recording_upstream.wait_for_requests(4)
    # Client connections come and go; the upstream connection stays in the pool.
    assert len(recording_upstream.connections) == 1, recording_upstream.connections


def test_pipelined_requests_answered_in_order(start_wakegate, make_upstream):
    # The first request is the slowest: answers must still come back in order.
    delays = {"/p/1": 0.3, "/p/2": 0.1, "/p/3": 0.0}

    def handler(conn):
        for _ in range(10):
            req = conn.read_request()
            if req is None:
                return
            if conn.wait(delays.get(req.target, 0)):
                return
            conn.send(response_bytes(200, ("body-of-%s\n" % req.target).encode()))

    up = make_upstream(handler)
    gw = start_wakegate(proxy_config(up.address))
    data = raw_get("/p/1") + raw_get("/p/2") + raw_get("/p/3")
    r = rawhttp.send(gw.port, data, until="responses", n=3, timeout=5)
    assert [x.status for x in r.responses] == [200, 200, 200], r
    assert [x.body for x in r.responses] == [b"body-of-/p/1\n", b"body-of-/p/2\n", b"body-of-/p/3\n"]
    assert [q.target for q in up.requests] == ["/p/1", "/p/2", "/p/3"]


def test_pipelined_after_connection_close_is_ignored(start_wakegate, recording_upstream):
    gw = start_wakegate(proxy_config(recording_upstream.address))
    data = raw_get("/first") + raw_get("/closing", extra="Connection: close\r\n") + raw_get("/never")
    r = rawhttp.send(gw.port, data, timeout=5)
    assert r.close in ("eof", "reset")
    assert [x.body for x in r.responses] == [b"ok GET /first\n", b"ok GET /closing\n"]
    time.sleep(0.2)
    assert [q.target for q in recording_upstream.requests] == ["/first", "/closing"]


# ================================================================ big bodies, flat memory

def _upload(port, n, chunked, path="/upload", timeout=120):
    s = connect(port, timeout=timeout)
    try:
        head = "POST %s HTTP/1.1\r\nHost: nginx.test\r\nContent-Type: application/octet-stream\r\n" % path
        head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else "Content-Length: %d\r\n\r\n" % n
        s.sendall(head.encode())
        t0 = time.monotonic()
        sent = send_pattern(s, n, chunked=chunked)
        buf = bytearray()
        status, headers, rest = read_head(s, buf)
        body = BodyReader(s, rest, keep=4096)
        if (headers.get("transfer-encoding") or "").lower() == "chunked":
            body.read_chunked()
        else:
            body.read_length(int(headers.get("content-length") or 0))
        return status, headers, bytes(body.kept), sent, time.monotonic() - t0
    finally:
        s.close()


def _warm_pool(gw, path="/small.txt"):
    """One request so that wakegate holds a pooled upstream connection.

    The big-body tests below measure streaming and memory, so they start on a
    warm pool; a body that arrives while the first upstream connection is
    still being set up is the subject of the two tests that follow. The pool
    is per worker loop: their gateways run one (workers: 1), so the next
    connection finds it."""
    r = rawhttp.send(gw.port, raw_get(path, extra="Connection: close\r\n"), timeout=5)
    assert r.status in (200, 404), r


def _post_head(n, chunked, path="/sink"):
    head = "POST %s HTTP/1.1\r\nHost: a\r\n" % path
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else "Content-Length: %d\r\n\r\n" % n
    return head.encode()


def _chunk_frame(data):
    return b"%x\r\n" % len(data) + data + b"\r\n"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_upload_sent_with_head_to_fresh_upstream_connection(start_wakegate, make_upstream, chunked):
    """A client that sends its body right behind the head (what every client
    does without Expect) while wakegate is still connecting upstream: the body
    must be forwarded, not refused."""
    n = MIB
    up = make_upstream(upstream.count_body())
    gw = start_wakegate(proxy_config(up.address))
    s = connect(gw.port, timeout=10)
    try:
        s.sendall(_post_head(n, chunked))
        try:
            send_pattern(s, n, chunked=chunked, chunk_size=64 * 1024)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, headers, rest = read_head(s, bytearray())
    finally:
        s.close()
    assert status == 200, "POST with a %d-byte %s body sent right after the head got %d" % (
        n, "chunked" if chunked else "Content-Length", status)
    assert up.wait_for_requests(1)[0].body_len == n


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_upload_already_buffered_when_proxy_first_reads(start_wakegate, make_upstream, chunked):
    """Deterministic form of the test above: wakegate is stopped (SIGSTOP)
    while the client's head and the first ~100+ KiB of body land in its socket
    buffer, so its first reads see head and body together before any upstream
    connection exists. The body must be forwarded, not refused."""
    import os
    import signal as sig
    n = 512 * 1024
    body = pattern(0, n)
    wire = _chunk_frame(body) + b"0\r\n\r\n" if chunked else body
    up = make_upstream(upstream.count_body())
    gw = start_wakegate(proxy_config(up.address))
    s = connect(gw.port, timeout=10)
    os.kill(gw.pid, sig.SIGSTOP)
    try:
        data = _post_head(n, chunked) + wire
        s.setblocking(False)
        off = 0
        for _ in range(1000):
            try:
                k = s.send(data[off:])
            except BlockingIOError:
                break
            off += k
            if off >= 200 * 1024 or off == len(data):
                break
        assert off > 100 * 1024, "could only queue %d bytes" % off
    finally:
        os.kill(gw.pid, sig.SIGCONT)
    try:
        s.settimeout(10)
        try:
            s.sendall(data[off:])
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, headers, rest = read_head(s, bytearray())
    finally:
        s.close()
    assert status == 200, "POST (%s, %d bytes of head and body queued before wakegate read) got %d %s" % (
        "chunked" if chunked else "Content-Length", off, status, rest[:60])
    assert up.wait_for_requests(1)[0].body_len == n


@pytest.mark.slow
def test_upload_1gib_content_length_streams_with_flat_rss(start_wakegate, nginx_upstream):
    gw = start_wakegate(proxy_config(nginx_upstream.address, workers=1))
    _warm_pool(gw)
    base = gw.rss_kib()
    with RssSampler(gw.pid) as rss:
        status, headers, body, sent, secs = _upload(gw.port, GIB, chunked=False)
    print("upload CL 1 GiB: %.1fs, wakegate RSS base %d KiB max %d KiB over %d samples"
          % (secs, base, rss.max_kib, len(rss.samples)))
    assert sent == GIB
    assert status == 200, (status, body)
    assert body == b"received=%d\n" % GIB
    assert len(rss.samples) >= 5, rss
    assert rss.max_kib < RSS_LIMIT_KIB, rss


@pytest.mark.slow
def test_upload_chunked_256mib_streams_with_flat_rss(start_wakegate, nginx_upstream):
    n = 256 * MIB
    gw = start_wakegate(proxy_config(nginx_upstream.address, workers=1))
    _warm_pool(gw)
    with RssSampler(gw.pid) as rss:
        status, headers, body, sent, secs = _upload(gw.port, n, chunked=True)
    print("upload chunked 256 MiB: %.1fs, wakegate RSS max %d KiB over %d samples" % (secs, rss.max_kib, len(rss.samples)))
    assert sent == n
    assert status == 200, (status, body)
    # nginx reports the de-chunked body size it read.
    assert body == b"received=%d\n" % n
    assert rss.max_kib < RSS_LIMIT_KIB, rss


@pytest.mark.slow
def test_upload_chunked_body_arrives_chunked_and_intact(start_wakegate, make_upstream):
    """A chunked upload keeps its bytes: the recording upstream sees a
    chunked request whose de-chunked body is exactly what was sent."""
    n = 8 * MIB + 12345
    up = make_upstream(upstream.count_body())
    gw = start_wakegate(proxy_config(up.address, workers=1))
    _warm_pool(gw)
    s = connect(gw.port)
    try:
        s.sendall(b"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        send_pattern(s, n, chunked=True, chunk_size=100_000)
        status, headers, rest = read_head(s, bytearray())
    finally:
        s.close()
    assert status == 200
    post = [q for q in up.wait_for_requests(2) if q.method == "POST"]
    assert len(post) == 1
    assert post[0].chunked and post[0].body_len == n
    assert "content-length" not in post[0].headers
    assert len(up.connections) == 1, "the warm pooled connection was not reused"



@pytest.mark.slow
def test_download_1gib_from_nginx_streams_with_flat_rss(start_wakegate, nginx_upstream):
    gw = start_wakegate(proxy_config(nginx_upstream.address))
    expected_crc = crc32_of_zeros(GIB)
    s = connect(gw.port, timeout=60)
    try:
        with RssSampler(gw.pid) as rss:
            t0 = time.monotonic()
            s.sendall(raw_get("/1g.bin", host="nginx.test"))
            status, headers, rest = read_head(s, bytearray())
            assert status == 200
            assert headers.get("content-length") == str(GIB)
            body = BodyReader(s, rest)
            body.read_length(GIB)
            secs = time.monotonic() - t0
        # The connection is still usable afterwards: the framing was exact.
        s.sendall(raw_get("/small.txt", host="nginx.test"))
        status2, headers2, rest2 = read_head(s, bytearray())
    finally:
        s.close()
    print("download 1 GiB: %.1fs, wakegate RSS max %d KiB over %d samples" % (secs, rss.max_kib, len(rss.samples)))
    assert body.count == GIB
    assert body.crc == expected_crc
    assert status2 == 200
    assert len(rss.samples) >= 5, rss
    assert rss.max_kib < RSS_LIMIT_KIB, rss


@pytest.mark.slow
def test_download_chunked_from_upstream_streams_intact(start_wakegate, make_upstream):
    n = 64 * MIB
    up = make_upstream(upstream.large_body(n, chunked=True, chunk_size=MIB))
    gw = start_wakegate(proxy_config(up.address))
    s = connect(gw.port, timeout=30)
    try:
        with RssSampler(gw.pid) as rss:
            s.sendall(raw_get("/big"))
            status, headers, rest = read_head(s, bytearray())
            assert status == 200
            assert (headers.get("transfer-encoding") or "").lower() == "chunked"
            body = BodyReader(s, rest)
            body.read_chunked()
    finally:
        s.close()
    assert body.count == n
    assert body.crc == crc32_of_pattern(n)
    assert rss.max_kib < RSS_LIMIT_KIB, rss


# ================================================================ backpressure

@pytest.mark.slow
def test_slow_reader_backpressure_keeps_rss_flat_and_completes(start_wakegate, make_upstream):
    n = 200 * MIB
    src = CountingLargeBody(n)
    up = make_upstream(src)
    gw = start_wakegate(proxy_config(up.address))
    s = connect(gw.port, timeout=60)
    # A small receive buffer so the kernel holds little on the client side.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        with RssSampler(gw.pid) as rss:
            s.sendall(raw_get("/firehose"))
            # Read nothing for 3 s.
            time.sleep(3.0)
            sent_while_paused = src.sent
            rss_paused = rss.max_kib
            # Then a slow trickle: 16 KiB every 20 ms for 2 s.
            status, headers, rest = read_head(s, bytearray())
            assert status == 200 and headers.get("content-length") == str(n)
            body = BodyReader(s, rest)
            end = time.monotonic() + 2.0
            for _ in range(1000):
                if time.monotonic() > end:
                    break
                body.read_length(16 * 1024)
                time.sleep(0.02)
            sent_while_slow = src.sent
            # Resume at full speed.
            body.read_length(n - body.count)
    finally:
        s.close()
    print("slow reader: upstream sent %.1f MiB while the client read nothing, %.1f MiB during the trickle; "
          "RSS max %d KiB (paused %d KiB)" % (sent_while_paused / MIB, sent_while_slow / MIB, rss.max_kib, rss_paused))
    assert body.count == n
    assert body.crc == crc32_of_pattern(n)
    # Backpressure reached the upstream: it could not push everything.
    assert sent_while_paused < 48 * MIB, sent_while_paused
    assert sent_while_slow < 64 * MIB, sent_while_slow
    assert rss.max_kib < RSS_LIMIT_KIB, rss


# ================================================================ WebSocket

def _ws_roundtrip(port, path="/ws"):
    import websockets

    async def go():
        async with websockets.connect("ws://127.0.0.1:%d%s" % (port, path), max_size=16 * MIB,
                                      open_timeout=5, close_timeout=5) as ws:
            got = []
            await ws.send("hello text")
            got.append(await asyncio.wait_for(ws.recv(), 5))
            await ws.send(b"\x00\x01binary\xff")
            got.append(await asyncio.wait_for(ws.recv(), 5))
            big = pattern(0, MIB + 7)
            await ws.send(big)
            got.append(await asyncio.wait_for(ws.recv(), 10))
            for i in range(20):
                await ws.send("msg %d" % i)
            for i in range(20):
                got.append(await asyncio.wait_for(ws.recv(), 5))
            return got, big
    return run_async(go())


def test_websocket_echo_through_proxy(start_wakegate):
    srv = WsEchoServer()
    try:
        gw = start_wakegate(proxy_config(srv.address))
        got, big = _ws_roundtrip(gw.port)
        assert got[0] == "hello text"
        assert got[1] == b"\x00\x01binary\xff"
        assert got[2] == big
        assert got[3:] == ["msg %d" % i for i in range(20)]
        assert srv.messages[:2] == ["hello text", b"\x00\x01binary\xff"]
        # The connection went through the proxy as an upgrade on a GET.
        assert srv.paths == ["/ws"]
    finally:
        srv.stop()


def test_websocket_missing_key_is_400_and_upstream_sees_nothing(start_wakegate, recording_upstream):
    gw = start_wakegate(proxy_config(recording_upstream.address))
    r = rawhttp.send(gw.port, ws_request(key=None), timeout=3)
    assert r.status == 400
    assert r.close in ("eof", "reset")
    time.sleep(0.2)
    assert recording_upstream.connections == []


def test_upgrade_answered_200_is_a_normal_response_not_a_tunnel(start_wakegate, make_upstream):
    def handler(conn):
        req = conn.read_request()
        if req is None:
            return
        conn.send(response_bytes(200, b"no upgrade for you\n"))
        # If the proxy wrongly tunnelled, these later client bytes would show up here.
        conn.wait_peer_close(timeout=5)

    up = make_upstream(handler)
    gw = start_wakegate(proxy_config(up.address))
    with rawhttp.connect(gw.port) as c:
        c.send(ws_request())
        r = c.read_response()
        assert r.status == 200
        assert r.body == b"no upgrade for you\n"
        assert "upgrade" not in r.headers
        # Not a tunnel: raw bytes sent now must not reach the upstream as-is.
        try:
            c.send(b"\x81\x05hello")
        except OSError:
            pass
        c.read_until_close(timeout=1.0)
    time.sleep(0.2)
    assert b"\x81\x05hello" not in up.all_bytes()
    assert len(up.requests) == 1


def test_upgrade_pipelined_bytes_reach_upstream_after_101(start_wakegate, make_upstream):
    """The client sends the upgrade request and its first frame in one write,
    then waits: the frame must reach the upstream without any further client
    byte."""
    up = make_upstream(upgrade_then(tunnel_hold))
    gw = start_wakegate(proxy_config(up.address))
    early = b"\x81\x85" + b"\x01\x02\x03\x04" + bytes(b ^ m for b, m in zip(b"early", b"\x01\x02\x03\x04\x01"))
    with rawhttp.connect(gw.port) as c:
        c.send(ws_request() + early)
        r = c.read_response()
        assert r.status == 101
        assert r.headers.get("sec-websocket-accept")
        up.wait_for_connections(1)
        rec = up.connections[0]
        wait_for(lambda: early in rec.data, 3, lambda: "the pipelined frame at the upstream, which got %r" % rec.data)
        data = rec.data
    head_end = data.index(b"\r\n\r\n") + 4
    assert data[head_end:] == early, "upstream got %r after the upgrade head (expected the pipelined frame)" % data[head_end:]


def test_tunnel_passes_half_close_both_ways(start_wakegate, make_upstream):
    up = make_upstream(upgrade_then(tunnel_echo_until_eof))
    gw = start_wakegate(proxy_config(up.address))
    with rawhttp.connect(gw.port) as c:
        c.send(ws_request())
        r = c.read_response()
        assert r.status == 101
        c.send(b"ping-1")
        got = bytearray()
        deadline = time.monotonic() + 3
        while len(got) < 6 and time.monotonic() < deadline:
            got += c.read_some(timeout=3)
        assert bytes(got) == b"ping-1"
        # Client half-closes: the upstream sees EOF and still gets to answer.
        c.shutdown_write()
        rest, how = c.read_until_close(timeout=5)
    assert rest == b"bye-after-eof"
    assert how == "eof"


def test_tunnel_idle_timeout_closes_both_sides(start_wakegate, make_upstream):
    up = make_upstream(upgrade_then(tunnel_hold))
    gw = start_wakegate(proxy_config(up.address, limits={"tunnel_idle": "600ms"}))
    with rawhttp.connect(gw.port) as c:
        c.send(ws_request())
        r = c.read_response()
        assert r.status == 101
        t0 = time.monotonic()
        # Traffic keeps it alive for a while...
        for i in range(4):
            time.sleep(0.3)
            c.send(b"tick")
        alive_until = time.monotonic()
        assert c.close_state(timeout=0.1) == "timeout", "tunnel closed while traffic flowed"
        # ...then silence closes it.
        data, how = c.read_until_close(timeout=5)
        closed_after = time.monotonic() - alive_until
    assert how in ("eof", "reset")
    assert 0.4 <= closed_after <= 2.5, closed_after
    rec = up.wait_for_connections(1)[0]
    assert rec.closed.wait(3), "upstream side of the tunnel stayed open"
    assert rec.data.count(b"tick") == 4
    assert time.monotonic() - t0 < 10


# ================================================================ server-sent events

def test_sse_events_arrive_as_sent(start_wakegate, make_upstream):
    events = ["data: event %d\n\n" % i for i in range(5)]
    sent_at = []
    up = make_upstream(upstream.sse(events, interval=0.3, keep_open=True, sent_at=sent_at))
    gw = start_wakegate(proxy_config(up.address))
    s = connect(gw.port)
    arrivals = []
    try:
        t0 = time.monotonic()
        s.sendall(raw_get("/events", extra="Accept: text/event-stream\r\n"))
        status, headers, rest = read_head(s, bytearray())
        head_at = time.monotonic() - t0
        assert status == 200
        assert headers.get("content-type") == "text/event-stream"
        assert (headers.get("transfer-encoding") or "").lower() == "chunked"
        buf = bytearray(rest)
        seen = 0
        s.settimeout(3)
        deadline = time.monotonic() + 6
        while seen < len(events) and time.monotonic() < deadline:
            if buf.count(b"\n\n") <= seen:
                data = s.recv(65536)
                assert data, "stream closed after %d events" % seen
                buf += data
            now = time.monotonic() - t0
            while buf.count(b"\n\n") > seen:
                seen += 1
                arrivals.append(now)
        assert seen == len(events)
        text = bytes(buf)
        for ev in events:
            assert ev.encode() in text
        # The stream stays open after the last event: no terminating chunk, no close.
        s.settimeout(0.5)
        try:
            more = s.recv(65536)
        except socket.timeout:
            more = None
        assert more is None, "stream ended or sent more after the events: %r" % more
    finally:
        s.close()
    gaps = [round(b - a, 3) for a, b in zip(arrivals, arrivals[1:])]
    print("SSE head after %.3fs, events at %s, gaps %s" % (head_at, [round(a, 3) for a in arrivals], gaps))
    # Each event reached the client before the upstream sent the next one:
    # relayed as it came, not held back for more.
    sent = [t - t0 for t in sent_at]
    assert all(a < n for a, n in zip(arrivals, sent[1:])), (arrivals, sent)
    for g in gaps:
        assert 0.15 <= g, gaps


# ================================================================ pool, timeouts, retries

def test_response_timeout_gives_504(start_wakegate, make_upstream):
    up = make_upstream(upstream.never_respond())
    gw = start_wakegate(proxy_config(up.address, upstream={"response_timeout": "700ms"}))
    t0 = time.monotonic()
    r = rawhttp.send(gw.port, raw_get("/hang"), timeout=5)
    took = time.monotonic() - t0
    assert r.status == 504
    assert 0.5 <= took <= 3.0, took
    up.wait_for_requests(1)
    assert any("response header timeout" in line for line in program_lines(gw))


def test_connect_timeout_gives_504(start_wakegate):
    # A loopback listener whose accept queue is full drops further SYNs, so a
    # connect to it hangs until wakegate's connect_timeout.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            f = socket.socket()
            f.setblocking(False)
            try:
                f.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(f)
        time.sleep(0.2)
        gw = start_wakegate(proxy_config("127.0.0.1:%d" % port, upstream={"connect_timeout": "700ms"}))
        t0 = time.monotonic()
        r = rawhttp.send(gw.port, raw_get("/blackhole"), timeout=6)
        took = time.monotonic() - t0
    finally:
        for f in fillers:
            f.close()
        lsock.close()
    assert r.status == 504, r
    assert 0.5 <= took <= 3.5, took
    assert any("connect timeout" in line for line in program_lines(gw))


def test_connection_refused_gives_502_after_one_retry(start_wakegate):
    with socket.socket() as tmp:
        tmp.bind(("127.0.0.1", 0))
        dead = tmp.getsockname()[1]
    gw = start_wakegate(proxy_config("127.0.0.1:%d" % dead))
    before = metrics(gw)
    r = rawhttp.send(gw.port, raw_get("/refused"), timeout=5)
    assert r.status == 502
    after = metrics(gw)
    assert after["wakegate_upstream_retries_total"] - before["wakegate_upstream_retries_total"] == 1
    assert after["wakegate_upstream_errors_total"] - before["wakegate_upstream_errors_total"] == 2
    assert any("retrying" in line for line in program_lines(gw))


def test_get_on_dead_pooled_connection_is_retried_and_succeeds(start_wakegate, make_upstream):
    h = KeepaliveThenDrop()
    up = make_upstream(h)
    gw = start_wakegate(proxy_config(up.address))
    with rawhttp.connect(gw.port) as c:
        c.send(raw_get("/one"))
        r1 = c.read_response()
        assert r1.status == 200 and r1.body == b"first GET /one \n"
        before = metrics(gw)
        # The pooled connection is reused for /two; the upstream reads it and
        # closes without answering. wakegate must replay the GET on a fresh one.
        c.send(raw_get("/two"))
        r2 = c.read_response()
    assert r2.status == 200, r2
    assert r2.body == b"first GET /two \n"
    after = metrics(gw)
    assert after["wakegate_upstream_retries_total"] - before["wakegate_upstream_retries_total"] == 1
    assert h.dropped == [("GET", "/two", b"")]
    assert len(up.connections) == 2


def test_post_on_dead_pooled_connection_is_not_duplicated(start_wakegate, make_upstream):
    h = KeepaliveThenDrop()
    up = make_upstream(h)
    gw = start_wakegate(proxy_config(up.address))
    with rawhttp.connect(gw.port) as c:
        c.send(raw_get("/prime"))
        assert c.read_response().status == 200
        c.send(b"POST /pay HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\npay-me-once")
        r = c.read_response()
    time.sleep(0.3)
    posts = [q for q in up.requests if q.method == "POST"]
    assert len(posts) == 1, "POST reached the upstream %d times: %r" % (len(posts), posts)
    assert posts[0].body == b"pay-me-once"
    assert r.status == 502, r
    # Only the one connection that died carried it; no fresh one was opened for it.
    assert len(up.connections) == 1


def test_upstream_closing_after_each_response_is_harmless(start_wakegate, make_upstream):
    up = make_upstream(close_after_each_response)
    gw = start_wakegate(proxy_config(up.address))
    with rawhttp.connect(gw.port) as c:
        for i in range(5):
            c.send(raw_get("/c/%d" % i))
            r = c.read_response()
            assert r.status == 200 and r.body == ("once /c/%d\n" % i).encode(), r
            time.sleep(0.05 if i % 2 else 0)
    assert len(up.connections) == 5
    assert all(len(rec.requests) == 1 for rec in up.connections)


@pytest.mark.parametrize("bad", [
    # two Content-Lengths: refused before any byte reaches the client
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    # Content-Length with Transfer-Encoding
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    # a bad chunk size after the head went out
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
], ids=["two-cl", "cl-and-te", "bad-chunk"])
def test_upstream_connection_with_framing_error_is_never_reused(start_wakegate, make_upstream, bad):
    """The first answer on every upstream connection is broken; later ones are
    fine. A second request must never land on the broken connection."""
    up = make_upstream(first_then(bad, response_bytes(200, b"reused-after-error\n")))
    # One worker loop: with two, the second client connection might meet the
    # other loop's (empty) pool and prove nothing.
    gw = start_wakegate(proxy_config(up.address, workers=1))
    r1 = rawhttp.send(gw.port, raw_get("/broken"), timeout=3)
    if r1.responses:
        assert r1.status == 502, r1
    else:
        assert r1.close in ("eof", "reset"), r1  # the head had gone out: close
    r2 = rawhttp.send(gw.port, raw_get("/next", extra="Connection: close\r\n"), timeout=3)
    time.sleep(0.2)
    assert len(up.connections[0].requests) == 1, "the connection that sent bad framing got another request"
    assert len(up.connections) == 2
    assert b"reused-after-error" not in r2.data


def test_bytes_after_a_complete_response_poison_the_connection(start_wakegate, make_upstream):
    """An upstream that sends a second, unrequested response right behind the
    first: those bytes must never be handed to the next request."""
    extra = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nsmuggled\n"
    up = make_upstream(first_then(response_bytes(200, b"first\n") + extra, response_bytes(200, b"same-connection\n")))
    gw = start_wakegate(proxy_config(up.address))
    with rawhttp.connect(gw.port) as c:
        c.send(raw_get("/one"))
        r1 = c.read_response()
        assert r1.status == 200 and r1.body == b"first\n"
        time.sleep(0.2)
        c.send(raw_get("/two"))
        r2 = c.read_response()
    assert r2.body != b"smuggled\n", "the unrequested response was delivered to the next request"
    assert r2.status == 200 and r2.body == b"first\n"
    assert len(up.connections) == 2
    assert len(up.connections[0].requests) == 1


@pytest.mark.slow
def test_slow_upstream_reader_backpressure_on_upload(start_wakegate, make_upstream):
    """The upstream reads nothing for 3 s while the client uploads 200 MiB as
    fast as it can: wakegate stops reading the client, memory stays flat, and
    the whole body arrives once the upstream reads again."""
    n = 200 * MIB
    state = {"stalled_until": None}

    def handler(conn):
        for _ in range(5):
            # Read the head only (the reader fills at most its buffer).
            head = conn.reader.read_until(b"\r\n\r\n")
            if head.startswith(b"GET"):
                conn.send(response_bytes(200, b"warm\n"))
                continue
            state["stalled_until"] = time.monotonic() + 3.0
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            time.sleep(3.0)
            conn.reader.skip_exact(n, keep=0)
            conn.send(response_bytes(200, b"received=%d\n" % n))
            return

    up = make_upstream(handler, record_limit=0)
    gw = start_wakegate(proxy_config(up.address, workers=1))
    _warm_pool(gw)
    s = connect(gw.port, timeout=60)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    progress = {"sent": 0}

    def sender():
        s.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % n)
        view = memoryview(pattern(0, MIB))
        for _ in range(n // MIB):
            s.sendall(view)
            progress["sent"] += MIB

    t = threading.Thread(target=sender, daemon=True)
    try:
        with RssSampler(gw.pid) as rss:
            t.start()
            wait_for(lambda: state["stalled_until"] is not None, 5, "the upload to reach the upstream", interval=0.01)
            time.sleep(max(0.0, state["stalled_until"] - time.monotonic() - 0.3))
            sent_during_stall = progress["sent"]
            t.join(timeout=60)
            assert not t.is_alive(), "upload did not finish"
            status, headers, rest = read_head(s, bytearray())
    finally:
        s.close()
    print("slow upstream reader: client got %.1f MiB out during the 3 s stall; RSS max %d KiB"
          % (sent_during_stall / MIB, rss.max_kib))
    assert status == 200
    assert sent_during_stall < 48 * MIB, sent_during_stall
    assert rss.max_kib < RSS_LIMIT_KIB, rss
