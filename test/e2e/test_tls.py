"""End-to-end: TLS termination on the public listener (tls:). Real clients
(curl --http1.1, openssl s_client, Python's ssl and websockets) against the
real binary, with a test CA and leaf certificates made by the openssl CLI in
the test's own directory."""

import asyncio
import os
import shutil
import signal
import socket
import ssl
import time

import pytest
import yaml

from harness import upstream
from harness.util import free_ports, wait_for
from stack_util import APP_TEXT, DOMAIN, host_of
from streams_util import WsEchoServer, proxy_config, run_async
from tls_util import fresh_ca, TlsConn, curl, s_client, serial_of, subject_cn, tls_block

MIB = 1024 * 1024


@pytest.fixture
def ca(e2e_tmp, request):
    return fresh_ca(e2e_tmp, "tls", request.node.name)


def tls_gw(start_wakegate, up_addr, pairs, limits=None, **tls_extra):
    cfg = proxy_config(up_addr, limits=limits)
    cfg["tls"] = tls_block(pairs, **tls_extra)
    return start_wakegate(cfg)


def raw_head_of(req):
    return req.raw_head.decode(errors="replace").lower()


# ================================================================ requests

def test_curl_static_route_sees_https_and_x_forwarded_proto(start_wakegate, recording_upstream, ca):
    pair = ca.leaf("app", ["app.test"])
    gw = tls_gw(start_wakegate, recording_upstream.address, [pair])
    st, hdrs, body = curl(gw.port, "app.test", "/hello?x=1", ca=ca.cert)
    assert st == 200 and body == b"ok GET /hello?x=1\n", (st, body)
    # HSTS is off by default.
    assert "strict-transport-security" not in hdrs, hdrs
    req = recording_upstream.requests[-1]
    head = raw_head_of(req)
    assert "x-forwarded-proto: https\r\n" in head, head
    assert "host: app.test:%d\r\n" % gw.port in head, head
    # A client's own X-Forwarded-Proto is not believed (no trusted proxy).
    st, _, _ = curl(gw.port, "app.test", "/2", ca=ca.cert, extra=["-H", "X-Forwarded-Proto: http"])
    assert st == 200
    assert "x-forwarded-proto: https\r\n" in raw_head_of(recording_upstream.requests[-1])
    m = gw.metrics()
    assert m['wakegate_tls_handshakes_total{result="ok"}'] == 2, m
    assert m["wakegate_tls_certificates"] == 1
    # The certificate's end of validity, to alert on: the test CA signs for 2 days.
    not_after = m['wakegate_tls_certificate_not_after_seconds{index="0",name="app.test"}']
    assert abs(not_after - (time.time() + 2 * 86400)) < 3600, not_after
    assert gw.wait_log(r"msg=\"certificate loaded\" index=0 name=app\.test .* days_left=[12]\b")


def test_hsts_on_tls_answers_replaces_the_upstreams(start_wakegate, make_upstream, ca):
    up = make_upstream(upstream.raw_response(upstream.response_bytes(
        headers=[("Strict-Transport-Security", "max-age=1")])))
    pair = ca.leaf("app", ["app.test"])
    gw = tls_gw(start_wakegate, up.address, [pair], hsts="max-age=31536000; includeSubDomains")
    st, hdrs, _ = curl(gw.port, "app.test", "/", ca=ca.cert)
    assert st == 200 and hdrs["strict-transport-security"] == "max-age=31536000; includeSubDomains", hdrs
    # Our own answers carry it too (a 405 for TRACE).
    st, hdrs, _ = curl(gw.port, "app.test", "/", ca=ca.cert, extra=["-X", "TRACE"])
    assert st == 405 and hdrs["strict-transport-security"].startswith("max-age=31536000"), (st, hdrs)


def test_large_bodies_both_ways_and_keepalive(start_wakegate, make_upstream, ca):
    n = 8 * MIB + 13
    down = make_upstream(upstream.large_body(n))
    pair = ca.leaf("app", ["app.test"])
    gw = tls_gw(start_wakegate, down.address, [pair])
    st, hdrs, body = curl(gw.port, "app.test", "/big", ca=ca.cert)
    assert st == 200 and len(body) == n and body == upstream.pattern(0, n)
    # An upload through TLS arrives whole (the echo upstream sends it back).
    echo = make_upstream(upstream.echo_body())
    gw2 = tls_gw(start_wakegate, echo.address, [pair])
    data = os.urandom(3 * MIB + 7)
    path = os.path.join(ca.d, "upload.bin")
    with open(path, "wb") as f:
        f.write(data)
    st, _, body = curl(gw2.port, "app.test", "/up", ca=ca.cert, extra=["--data-binary", "@" + path])
    assert st == 200 and body == data
    # Many requests on one TLS connection.
    c = TlsConn(gw2.port, "app.test", ca.cert)
    try:
        for i in range(50):
            st, _, _ = c.get("/k%d" % i)
            assert st == 200
    finally:
        c.close()
    assert gw2.metrics()['wakegate_tls_handshakes_total{result="ok"}'] == 2


def test_sse_through_tls(start_wakegate, make_upstream, ca):
    up = make_upstream(upstream.sse(["data: one\n\n", "data: two\n\n", "data: three\n\n"], interval=0.05))
    pair = ca.leaf("app", ["app.test"])
    gw = tls_gw(start_wakegate, up.address, [pair])
    st, hdrs, body = curl(gw.port, "app.test", "/events", ca=ca.cert, extra=["-N"])
    assert st == 200 and hdrs["content-type"] == "text/event-stream"
    assert body == b"data: one\n\ndata: two\n\ndata: three\n\n", body


def test_websocket_through_tls(start_wakegate, ca):
    import websockets

    srv = WsEchoServer()
    try:
        pair = ca.leaf("app", ["app.test"])
        gw = tls_gw(start_wakegate, srv.address, [pair])
        ctx = ssl.create_default_context(cafile=ca.cert)
        big = upstream.pattern(0, MIB + 5)

        async def go():
            sock = socket.create_connection(("127.0.0.1", gw.port))
            async with websockets.connect("wss://app.test:%d/ws" % gw.port, ssl=ctx, sock=sock,
                                          server_hostname="app.test", max_size=16 * MIB,
                                          open_timeout=5, close_timeout=5) as ws:
                got = []
                await ws.send("hello tls")
                got.append(await asyncio.wait_for(ws.recv(), 5))
                await ws.send(big)
                got.append(await asyncio.wait_for(ws.recv(), 10))
                for i in range(20):
                    await ws.send("m%d" % i)
                for i in range(20):
                    got.append(await asyncio.wait_for(ws.recv(), 5))
                return got
        got = run_async(go())
        assert got[0] == "hello tls" and got[1] == big and got[2:] == ["m%d" % i for i in range(20)]
        assert srv.paths == ["/ws"]
    finally:
        srv.stop()


# ================================================================ certificates and versions

def test_sni_picks_exact_wildcard_and_default(start_wakegate, recording_upstream, ca):
    default = ca.leaf("default", ["default.test"])
    exact = ca.leaf("exact", ["a.test", "b.test"])
    wild = ca.leaf("wild", ["*.preview.test"])
    # The exact name of a later certificate beats the wildcard of an earlier one.
    special = ca.leaf("special", ["x.preview.test"])
    gw = tls_gw(start_wakegate, recording_upstream.address, [default, wild, exact, special])

    def cn(name):
        rc, text = s_client(gw.port, name, ["-CAfile", ca.cert])
        assert rc == 0, text[-600:]
        return subject_cn(text), text

    for name, want in [("a.test", "a.test"), ("B.TEST", "a.test"), ("s-1.preview.test", "*.preview.test"),
                       ("x.preview.test", "x.preview.test"), ("deep.s-1.preview.test", "default.test"),
                       ("preview.test", "default.test"), ("other.test", "default.test")]:
        got, text = cn(name)
        assert got == want, (name, got, text[-400:])
    got, text = cn("s-1.preview.test")
    assert "Verify return code: 0 (ok)" in text, text[-400:]
    got, _ = cn(None)  # no SNI at all
    assert got == "default.test"
    # curl validates the chain and the name.
    st, _, _ = curl(gw.port, "s-9.preview.test", "/", ca=ca.cert)
    assert st == 200


def test_only_tls12_and_tls13(start_wakegate, recording_upstream, ca):
    pair = ca.leaf("app", ["app.test"])
    rsa = ca.leaf("rsa", ["rsa.test"], key_type="rsa")
    gw = tls_gw(start_wakegate, recording_upstream.address, [pair, rsa])
    for flag in ("-tls1_1", "-tls1"):
        # The client allows the old version (SECLEVEL=0); the gateway refuses it.
        rc, text = s_client(gw.port, "app.test", [flag, "-cipher", "DEFAULT@SECLEVEL=0"])
        assert rc != 0 and "alert protocol version" in text, text[-500:]
    rc, text = s_client(gw.port, "app.test", ["-tls1_2"])
    assert rc == 0 and "TLSv1.2" in text and "ECDHE-ECDSA-AES128-GCM-SHA256" in text, text[-500:]
    rc, text = s_client(gw.port, "rsa.test", ["-tls1_2"])
    assert rc == 0 and "ECDHE-RSA-AES128-GCM-SHA256" in text, text[-500:]
    # No CBC, no static RSA key exchange.
    rc, text = s_client(gw.port, "rsa.test", ["-tls1_2", "-cipher", "AES128-SHA:AES256-SHA256"])
    assert rc != 0, text[-500:]
    rc, text = s_client(gw.port, "app.test", ["-tls1_3"])
    assert rc == 0 and "TLSv1.3" in text, text[-500:]
    assert "Compression: NONE" in text
    m = gw.metrics()
    assert m['wakegate_tls_protocol_total{version="TLSv1.2"}'] == 2, m
    assert m['wakegate_tls_protocol_total{version="TLSv1.3"}'] == 1, m
    assert m['wakegate_tls_handshakes_total{result="failed"}'] >= 3, m
    assert gw.alive()


def test_session_resumption_tls13_and_tls12(start_wakegate, recording_upstream, ca):
    pair = ca.leaf("app", ["app.test"])
    gw = tls_gw(start_wakegate, recording_upstream.address, [pair], ticket_rotate="1h")
    for version in ("-tls1_3", "-tls1_2"):
        sess = os.path.join(ca.d, "sess" + version)
        # TLS 1.3 tickets come after the handshake: read until the server closes.
        rc, text = s_client(gw.port, "app.test", [version, "-sess_out", sess, "-ign_eof"],
                            stdin=b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        assert rc == 0 and "New," in text, text[-500:]
        rc, text = s_client(gw.port, "app.test", [version, "-sess_in", sess])
        assert rc == 0 and "Reused," in text, (version, text[-500:])
    # A resumption gets a fresh ticket, so a client resumes again and again.
    sess = os.path.join(ca.d, "sess-chain")
    s_client(gw.port, "app.test", ["-tls1_3", "-sess_out", sess, "-ign_eof"],
             stdin=b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
    for i in range(3):
        rc, text = s_client(gw.port, "app.test", ["-tls1_3", "-sess_in", sess, "-sess_out", sess, "-ign_eof"],
                            stdin=b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        assert rc == 0 and "Reused," in text, (i, text[-500:])
    m = gw.metrics()
    assert m["wakegate_tls_resumptions_total"] == 5, m


def test_sighup_swaps_the_certificate_and_keeps_open_connections(start_wakegate, recording_upstream, ca):
    cert, key = ca.leaf("app", ["app.test"])
    gw = tls_gw(start_wakegate, recording_upstream.address, [(cert, key)])
    old_serial = serial_of(gw.port, "app.test", ca.cert)
    c = TlsConn(gw.port, "app.test", ca.cert)
    try:
        assert c.get("/before")[0] == 200
        # A new certificate for the same name, written over the same files.
        new_cert, new_key = ca.leaf("app2", ["app.test"], org="renewed")
        shutil.copy(new_cert, cert)
        shutil.copy(new_key, key)
        gw.send_signal(signal.SIGHUP)
        gw.wait_log(r"certificates reloaded", timeout=5)
        new_serial = serial_of(gw.port, "app.test", ca.cert)
        assert new_serial != old_serial, (old_serial, new_serial)
        # The open connection still works, on its old certificate.
        for i in range(3):
            st, _, body = c.get("/after%d" % i)
            assert st == 200 and body == b"ok GET /after%d\n" % i
        # A key that does not match: logged, and the current certificate stays.
        other_cert, other_key = ca.leaf("other", ["other.test"])
        shutil.copy(other_key, key)
        gw.send_signal(signal.SIGHUP)
        gw.wait_log(r"certificate reload failed", timeout=5)
        line = [x for x in gw.log_lines() if "certificate reload failed" in x][-1]
        assert "level=error" in line and "tls.certificates[0].key" in line and "does not match" in line, line
        assert serial_of(gw.port, "app.test", ca.cert) == new_serial
        assert c.get("/still")[0] == 200
        # A missing file: the configuration does not load, the certificates stay.
        os.unlink(cert)
        gw.send_signal(signal.SIGHUP)
        wait_for(lambda: len([x for x in gw.log_lines() if "certificate reload failed" in x]) == 2, 5,
                 "the second failed reload")
        assert serial_of(gw.port, "app.test", ca.cert) == new_serial
        m = gw.metrics()
        assert m['wakegate_tls_certificate_reloads_total{result="ok"}'] == 1, m
        assert m['wakegate_tls_certificate_reloads_total{result="failed"}'] == 2, m
    finally:
        c.close()


def _check_config_error(start_wakegate, cfg_text, want):
    gwf = start_wakegate
    path = os.path.join(gwf.dir, "bad-tls.yaml")
    with open(path, "w") as f:
        f.write(cfg_text)
    for args in (["--check-config", "--config", path], ["--config", path]):
        r = gwf.run(args, env={"WAKEGATE_LISTEN": "127.0.0.1:0", "WAKEGATE_ADMIN_LISTEN": "127.0.0.1:0"})
        assert r.returncode == 3, (args, r)
        for w in want:
            assert w in r.stderr, (w, r.stderr)
    return path


def _cfg_text(cert, key):
    return ("redis:\n  private:\n    enabled: false\n"
            "routes:\n  - match: {path_prefix: /}\n    upstream: 127.0.0.1:9\n"
            "tls:\n  certificates:\n    - cert: %s\n      key: %s\n" % (cert, key))


def test_bad_certificate_files_are_config_errors_naming_file_line_and_key(start_wakegate, ca):
    cert, key = ca.leaf("app", ["app.test"])
    other_cert, other_key = ca.leaf("other", ["other.test"])
    missing = os.path.join(ca.d, "nope.pem")
    path = _check_config_error(start_wakegate, _cfg_text(missing, key),
                               ["bad-tls.yaml:9: tls.certificates[0].cert", "cannot read", missing])
    _check_config_error(start_wakegate, _cfg_text(cert, ca.d),
                        [path + ":10: tls.certificates[0].key", "not a regular file"])
    garbage = os.path.join(ca.d, "garbage.pem")
    with open(garbage, "w") as f:
        f.write("not a certificate\n")
    _check_config_error(start_wakegate, _cfg_text(garbage, key),
                        [path + ":9: tls.certificates[0].cert", "cannot load the certificate chain"])
    _check_config_error(start_wakegate, _cfg_text(cert, other_key),
                        [path + ":10: tls.certificates[0].key", "does not match the certificate"])
    r = start_wakegate.run(["--check-config", "--config", _write(start_wakegate, _cfg_text(cert, key))],
                           env={"WAKEGATE_LISTEN": "127.0.0.1:0"})
    assert r.returncode == 0 and "tls           1 certificate" in r.stdout, r


def _write(gwf, text):
    path = os.path.join(gwf.dir, "good-tls.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


# ================================================================ hostile clients

def test_garbage_and_silence_on_the_tls_port_are_closed_and_counted(start_wakegate, recording_upstream, ca):
    pair = ca.leaf("app", ["app.test"])
    gw = tls_gw(start_wakegate, recording_upstream.address, [pair], limits={"head_timeout": "1s"})
    for payload in (os.urandom(4000), b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n", b"\x16\x03\x01\x00\x05hello"):
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                d = s.recv(4096)
                if not d:
                    break
                data += d
            # At most a TLS alert record, never an HTTP answer.
            assert not data.startswith(b"HTTP/"), data[:100]
        finally:
            s.close()
    # A client that connects and says nothing is closed at limits.head_timeout.
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    t0 = time.monotonic()
    try:
        assert s.recv(10) == b""
    finally:
        s.close()
    assert time.monotonic() - t0 < 4
    # Nor does trickling a ClientHello a byte at a time push the deadline back.
    hello = _client_hello_bytes()
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    t0 = time.monotonic()
    closed = False
    try:
        for b in hello:
            try:
                s.sendall(bytes([b]))
            except OSError:
                closed = True
                break
            time.sleep(0.05)
            if time.monotonic() - t0 > 4:
                break
        if not closed:
            s.settimeout(3)
            try:
                closed = s.recv(10) == b""
            except ConnectionResetError:
                closed = True
    finally:
        s.close()
    assert closed and time.monotonic() - t0 < 4.5, time.monotonic() - t0
    st, _, _ = curl(gw.port, "app.test", "/", ca=ca.cert)
    assert st == 200 and gw.alive()
    m = gw.metrics()
    assert m['wakegate_tls_handshakes_total{result="failed"}'] >= 2, m
    assert m['wakegate_tls_handshakes_total{result="timeout"}'] == 2, m
    assert m['wakegate_tls_handshakes_total{result="ok"}'] == 1, m


def _client_hello_bytes():
    """A real ClientHello, as Python's ssl writes it into a memory BIO."""
    ctx = ssl.create_default_context()
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="app.test")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


# ================================================================ redirect listener

def _raw(port, data):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(data)
        out = b""
        while True:
            d = s.recv(4096)
            if not d:
                return out
            out += d
    finally:
        s.close()


def test_redirect_listener_answers_308_to_https_on_our_port(start_wakegate, recording_upstream, ca):
    pair = ca.leaf("app", ["app.test"])
    rport = free_ports(1)[0]
    gw = tls_gw(start_wakegate, recording_upstream.address, [pair], redirect_listen="127.0.0.1:%d" % rport)
    out = _raw(rport, b"GET /p/q?x=1&y=%2F HTTP/1.1\r\nHost: App.Test:8080\r\nUser-Agent: t\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 308 "), out
    assert b"\r\nLocation: https://app.test:%d/p/q?x=1&y=%%2F\r\n" % gw.port in out, out
    # curl follows it to the TLS listener.
    import subprocess
    p = subprocess.run(["curl", "-sS", "-L", "--cacert", ca.cert, "--resolve", "app.test:%d:127.0.0.1" % rport,
                        "--resolve", "app.test:%d:127.0.0.1" % gw.port, "http://app.test:%d/follow" % rport],
                       capture_output=True, timeout=20)
    assert p.returncode == 0 and p.stdout == b"ok GET /follow\n", p
    # Never an open redirect: absolute-form targets, odd hosts and no Host are 400.
    for bad in (b"GET http://evil.test/ HTTP/1.1\r\nHost: app.test\r\n\r\n",
                b"GET //evil.test/ HTTP/1.1\r\nHost: evil.test@app.test\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: app.test/evil\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: app.test:80x\r\n\r\n",
                b"GET / HTTP/1.1\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n"):
        out = _raw(rport, bad)
        assert out.startswith(b"HTTP/1.1 400 "), (bad, out)
    # "//evil.test/" stays a path of our host.
    out = _raw(rport, b"GET //evil.test/ HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert b"Location: https://app.test:%d//evil.test/\r\n" % gw.port in out, out


# ================================================================ a session route

@pytest.mark.docker
def test_session_route_over_tls_wakes_the_session(stack, ca):
    pair = ca.leaf("preview", ["*." + DOMAIN])
    cfg = stack_gw_config(stack)
    cfg["tls"] = tls_block([pair])
    stack.start(cfg)
    sid = "tls-1"
    stack.create(sid)
    st, _, body = curl(stack.gw.port, host_of(sid), "/", ca=ca.cert, extra=["-H", "Accept: */*"], timeout=30)
    assert st == 200 and APP_TEXT in body, (st, body[:200])
    assert stack.record(sid)["state"] == "running"


def stack_gw_config(stack):
    from stack_util import gw_config
    return gw_config(stack.redis_server.url, stack.dockerd)


# ================================================================ more of the connection

def test_pipelined_requests_in_one_record(start_wakegate, recording_upstream, ca):
    pair = ca.leaf("app", ["app.test"])
    gw = tls_gw(start_wakegate, recording_upstream.address, [pair])
    c = TlsConn(gw.port, "app.test", ca.cert)
    try:
        # Three requests in one write (one TLS record): three answers, in order.
        c.sock.sendall(b"".join(b"GET /p%d HTTP/1.1\r\nHost: app.test\r\n\r\n" % i for i in range(3)))
        for i in range(3):
            st, _, body = c.read_response()
            assert st == 200 and body == b"ok GET /p%d\n" % i, (i, st, body)
    finally:
        c.close()


def test_slow_tls_reader_is_held_to_the_buffer_mark(start_wakegate, make_upstream, ca):
    n = 256 * MIB
    up = make_upstream(upstream.large_body(n))
    pair = ca.leaf("app", ["app.test"])
    gw = tls_gw(start_wakegate, up.address, [pair], limits={"buffer_high_water": "32KiB"})
    c = TlsConn(gw.port, "app.test", ca.cert)
    try:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        c.sock.sendall(b"GET /big HTTP/1.1\r\nHost: app.test\r\n\r\n")
        time.sleep(1.5)  # read nothing
        m = gw.metrics()
        # The mark, plus one read's records, plus a head.
        assert m['wakegate_buffered_bytes{to="client"}'] <= 32 * 1024 + 80 * 1024, m
        got = 0
        c.sock.settimeout(10)
        while got < 4 * MIB:
            d = c.sock.recv(65536)
            assert d, "closed early"
            got += len(d)
    finally:
        c.close()
    assert gw.alive()


def test_private_route_cookie_is_secure_over_our_tls(redis_server, recording_upstream, start_wakegate, e2e_tmp, ca):
    import tempfile
    import redis as redis_mod
    from access_util import DOMAIN as ADOMAIN, NAV, mint, put_record, secret_file
    from sessions_util import Orchestrator, wait_subscribed
    from stack_util import HOST

    r = redis_mod.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=3)
    pair = ca.leaf("preview", ["*." + ADOMAIN])
    cfg = {
        "redis": {"url": redis_server.url},
        "docker": {"name": HOST},
        "routes": [{"match": {"host": "{session}." + ADOMAIN}}],
        "access": {"secret_file": secret_file(tempfile.mkdtemp(prefix="access-", dir=e2e_tmp))},
        "tls": tls_block([pair], hsts="max-age=600"),
    }
    gw = start_wakegate(cfg, args=["--role", "proxy"])
    wait_subscribed(Orchestrator(redis_server.url))
    gen = 0x1234_5678_9abc_def0
    put_record(r, "u-1", "running", gen, ip="127.0.0.1", port=recording_upstream.port)
    tok = mint("u-1", int(time.time()) + 600, gen)
    hdrs = []
    for k, v in NAV:
        hdrs += ["-H", "%s: %s" % (k, v)]
    st, h, _ = curl(gw.port, "u-1." + ADOMAIN, "/e?wg_token=" + tok, ca=ca.cert, extra=hdrs)
    assert st == 303 and h["location"] == "/e", (st, h)
    assert h["set-cookie"].endswith("; HttpOnly; SameSite=Lax; Secure"), h
    # Our own answers carry HSTS too: the 303, the 401 without a credential.
    assert h["strict-transport-security"] == "max-age=600", h
    st, h, _ = curl(gw.port, "u-1." + ADOMAIN, "/e", ca=ca.cert, extra=hdrs)
    assert st == 401 and h["strict-transport-security"] == "max-age=600", (st, h)
