"""End-to-end: running wakegate. Command line, shutdown and reload signals,
access and structured logs, the admin listener and its metrics, and Debian's
nginx as a real upstream. Everything runs the real binary on 127.0.0.1."""

import json
import re
import signal
import socket
import time

import pytest
import yaml

from harness import rawhttp, upstream
from harness.upstream import pattern
from harness.util import wait_for
from streams_util import (admin_get, connect, metrics, parse_logfmt, program_lines, proxy_config, raw_get,
                          read_head, wait_access, wait_log)


# ================================================================ command line

def test_help_exits_0_with_usage(start_wakegate):
    for flag in ("--help", "-h"):
        r = start_wakegate.run([flag])
        assert r.returncode == 0, r
        assert "Usage: wakegate" in r.stdout
        assert "--check-config" in r.stdout and "--config" in r.stdout


def test_version_exits_0_with_version(start_wakegate):
    for flag in ("--version", "-V"):
        r = start_wakegate.run([flag])
        assert r.returncode == 0, r
        assert re.match(r"^wakegate \d+\.\d+\.\d+", r.stdout), r.stdout


def test_unknown_flag_is_usage_error_2(start_wakegate):
    r = start_wakegate.run(["--no-such-flag"])
    assert r.returncode == 2, r
    assert "Usage: wakegate" in r.stderr
    r = start_wakegate.run(["stray-argument"])
    assert r.returncode == 2, r
    assert "stray-argument" in r.stderr


def test_check_config_good_file(start_wakegate, tmp_path):
    cfg = tmp_path / "good.yaml"
    cfg.write_text(
        "listen: 127.0.0.1:1\n"
        "admin:\n  listen: 127.0.0.1:2\n"
        "routes:\n"
        "  - match: {host: api.test, path_prefix: /v1/}\n"
        "    strip_prefix: true\n"
        "    upstream: 127.0.0.1:9\n"
        "  - match: {path_prefix: /}\n"
        "    upstream: 127.0.0.1:10\n"
        "limits:\n  tunnel_idle: 5s\n  buffer_high_water: 128KiB\n"
        "upstream:\n  connect_timeout: 1s\n  response_timeout: 30s\n"
        "log:\n  level: debug\n  format: json\n  access: true\n"
        "shutdown_grace: 3s\n")
    r = start_wakegate.run(["--check-config", "--config", str(cfg)])
    assert r.returncode == 0, r
    assert "configuration OK" in r.stdout
    assert "routes        2" in r.stdout
    assert "127.0.0.1:9" in r.stdout and "(stripped)" in r.stdout


@pytest.mark.parametrize("text,line,key", [
    ("routes:\n  - match: {path_prefix: /}\n    upstream: 127.0.0.1:9\nlimits:\n  body_idle: forever\n", 5, "limits.body_idle"),
    ("routes:\n  - match: {path_prefix: /}\n    upstreem: 127.0.0.1:9\n", 3, "routes[0].upstreem"),
    ("listen: 127.0.0.1:1\nno_such_key: 1\n", 2, "no_such_key"),
    ("upstream:\n  connect_timeout: 1s\n  keepalive_max: lots\n", 3, "upstream.keepalive_max"),
], ids=["bad-duration", "unknown-route-key", "unknown-top-key", "bad-uint"])
def test_check_config_bad_file_names_file_line_key(start_wakegate, tmp_path, text, line, key):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    r = start_wakegate.run(["--check-config", "--config", str(cfg)])
    assert r.returncode != 0, r
    want = "%s:%d: %s" % (cfg, line, key)
    assert want in r.stderr, "expected %r in %r" % (want, r.stderr)
    assert "configuration OK" not in r.stdout


def test_check_config_yaml_syntax_error(start_wakegate, tmp_path):
    cfg = tmp_path / "syntax.yaml"
    cfg.write_text("routes:\n  - match: {path_prefix: /\n    upstream: 127.0.0.1:9\n")
    r = start_wakegate.run(["--check-config", "--config", str(cfg)])
    assert r.returncode != 0
    assert re.search(re.escape(str(cfg)) + r":\d+: ", r.stderr), r.stderr


# ================================================================ SIGTERM

def test_sigterm_drains_in_flight_request_and_refuses_new(start_wakegate, make_upstream):
    up = make_upstream(upstream.slow_response(1.5, body=b"finished-late\n"))
    gw = start_wakegate(proxy_config(up.address, shutdown_grace="6s"))
    assert admin_get(gw, "/readyz")[0] == 200
    c = rawhttp.connect(gw.port, timeout=10)
    try:
        c.send(raw_get("/slow"))
        up.wait_for_requests(1)
        t0 = time.monotonic()
        gw.send_signal(signal.SIGTERM)
        wait_log(gw, r"draining connections", timeout=3)
        # Draining: not ready any more, and the public port refuses connections.
        assert admin_get(gw, "/readyz")[0] == 503
        assert gw.healthz() == 200
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", gw.port), timeout=2).close()
        # The request in flight still gets its whole answer.
        r = c.read_response(timeout=5)
        assert r.status == 200
        assert r.body == b"finished-late\n"
        assert (r.headers.get("connection") or "").lower() == "close"
        assert c.close_state(timeout=3) in ("eof", "reset")
        code = gw.wait_exit(timeout=6)
        took = time.monotonic() - t0
    finally:
        c.close()
    assert code == 0
    assert 1.0 <= took < 6.0, took


def test_sigterm_exits_at_grace_deadline_with_long_request(start_wakegate, make_upstream):
    up = make_upstream(upstream.slow_response(30, body=b"too-late\n"))
    gw = start_wakegate(proxy_config(up.address, shutdown_grace="1s"))
    c = rawhttp.connect(gw.port, timeout=10)
    try:
        c.send(raw_get("/very-slow"))
        up.wait_for_requests(1)
        t0 = time.monotonic()
        gw.send_signal(signal.SIGTERM)
        code = gw.wait_exit(timeout=8)
        took = time.monotonic() - t0
        data, how = c.read_until_close(timeout=3)
    finally:
        c.close()
    assert code == 0
    assert 0.9 <= took <= 3.0, took
    assert how in ("eof", "reset")
    assert b"too-late" not in data
    assert any("grace expired" in line for line in program_lines(gw))


def test_sigterm_with_idle_keepalive_connection_does_not_wait_for_the_grace(start_wakegate, recording_upstream):
    gw = start_wakegate(proxy_config(recording_upstream.address, shutdown_grace="10s"))
    c = rawhttp.connect(gw.port)
    try:
        c.send(raw_get("/idle"))
        assert c.read_response().status == 200
        gw.send_signal(signal.SIGTERM)
        code = gw.wait_exit(timeout=5)  # well inside the 10 s grace
        assert c.close_state(timeout=2) in ("eof", "reset")
    finally:
        c.close()
    assert code == 0
    # The idle connection was closed at once, not at the end of the grace.
    assert not any("grace expired" in line for line in program_lines(gw)), program_lines(gw)


# ================================================================ SIGHUP

def _rewrite_routes(gw, routes):
    cfg = yaml.safe_load(open(gw.config_path))
    cfg["routes"] = routes
    with open(gw.config_path, "w") as f:
        f.write(yaml.safe_dump(cfg, sort_keys=False))


def _wait_count(gw, pattern_, n, timeout=5.0):
    return wait_log(gw, pattern_, n=n, timeout=timeout)


def test_sighup_reloads_routes_and_keeps_open_connections(start_wakegate, make_upstream):
    a = make_upstream()
    b = make_upstream()
    route_a = {"match": {"path_prefix": "/a/"}, "upstream": a.address}
    route_b = {"match": {"path_prefix": "/b/"}, "upstream": b.address}
    gw = start_wakegate(proxy_config(None, routes=[route_a]))
    assert rawhttp.send(gw.port, raw_get("/b/before"), timeout=3).status == 404

    c = rawhttp.connect(gw.port)
    try:
        c.send(raw_get("/a/1"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"ok GET /a/1\n"
        local = c.sock.getsockname()

        _rewrite_routes(gw, [route_a, route_b])
        gw.send_signal(signal.SIGHUP)
        _wait_count(gw, r"routes reloaded", 1)

        # Same socket: still open, and the new route works on it.
        assert c.close_state(timeout=0.2) == "timeout"
        c.send(raw_get("/b/2"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"ok GET /b/2\n"
        c.send(raw_get("/a/3"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"ok GET /a/3\n"
        assert c.sock.getsockname() == local

        # A broken file: logged, and the routes stay as they were.
        with open(gw.config_path, "a") as f:
            f.write("  - match: {path_prefix: /c/}\n    upstream: [this is not an address\n")
        gw.send_signal(signal.SIGHUP)
        _wait_count(gw, r"reload failed", 1)
        err = [line for line in program_lines(gw) if "reload failed" in line][-1]
        assert "level=error" in err
        assert str(gw.config_path) in err

        c.send(raw_get("/b/4"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"ok GET /b/4\n"
        assert c.close_state(timeout=0.2) == "timeout"
    finally:
        c.close()
    assert rawhttp.send(gw.port, raw_get("/c/5"), timeout=3).status == 404
    assert [q.target for q in b.requests] == ["/b/2", "/b/4"]
    assert [q.target for q in a.requests] == ["/a/1", "/a/3"]
    assert gw.alive()


def test_sighup_with_invalid_route_keeps_old_routes(start_wakegate, make_upstream):
    a = make_upstream()
    route_a = {"match": {"path_prefix": "/a/"}, "upstream": a.address}
    gw = start_wakegate(proxy_config(None, routes=[route_a]))
    # Valid YAML, invalid configuration: a route with an unknown key.
    _rewrite_routes(gw, [{"match": {"path_prefix": "/z/"}, "upstreams": a.address}])
    gw.send_signal(signal.SIGHUP)
    _wait_count(gw, r"reload failed", 1)
    assert rawhttp.send(gw.port, raw_get("/a/ok"), timeout=3).status == 200
    assert rawhttp.send(gw.port, raw_get("/z/no"), timeout=3).status == 404
    assert gw.alive()


# ================================================================ logs

_ACCESS_FIELDS = ("conn", "method", "host", "path", "status", "bytes_in", "bytes_out", "upstream",
                  "upstream_ms", "total_ms")


def test_access_log_line_per_request_with_fields(start_wakegate, make_upstream):
    up = make_upstream(upstream.echo_body())
    routes = [{"match": {"path_prefix": "/app/"}, "upstream": up.address}]
    gw = start_wakegate(proxy_config(None, routes=routes))

    req1 = raw_get("/app/one?secret=1", host="acc.test", extra="Connection: close\r\n")
    r1 = rawhttp.send(gw.port, req1, timeout=3)
    req2 = b"POST /app/two HTTP/1.1\r\nHost: acc.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    r2 = rawhttp.send(gw.port, req2, timeout=3)
    req3 = raw_get("/nowhere", host="acc.test")
    r3 = rawhttp.send(gw.port, req3, timeout=3)
    assert (r1.status, r2.status, r3.status) == (200, 200, 404)

    lines = wait_access(gw, 3)
    assert len(lines) == 3, lines
    for ln in lines:
        for k in _ACCESS_FIELDS:
            assert k in ln, "access line lacks %s: %r" % (k, ln)
        assert ln["sub"] == "access"
        assert int(ln["total_ms"]) >= 0
    a1, a2, a3 = lines
    assert (a1["method"], a1["host"], a1["path"], a1["status"]) == ("GET", "acc.test", "/app/one", "200")
    assert "secret" not in " ".join(program_lines(gw)), "the query string leaked into the log"
    assert a1["upstream"] == up.address and int(a1["upstream_ms"]) >= 0
    assert int(a1["bytes_in"]) == len(req1)
    assert int(a1["bytes_out"]) == len(r1.data)
    assert (a2["method"], a2["path"], a2["status"]) == ("POST", "/app/two", "200")
    assert int(a2["bytes_in"]) == len(req2)
    assert int(a2["bytes_out"]) == len(r2.data)
    assert (a3["method"], a3["path"], a3["status"], a3["upstream"]) == ("GET", "/nowhere", "404", "-")
    assert int(a3["bytes_out"]) == len(r3.data)
    assert len({a1["conn"], a2["conn"], a3["conn"]}) == 3


def test_access_log_keepalive_requests_share_conn_id(start_wakegate, recording_upstream):
    gw = start_wakegate(proxy_config(recording_upstream.address))
    with rawhttp.connect(gw.port) as c:
        for i in range(3):
            c.send(raw_get("/k/%d" % i))
            assert c.read_response().status == 200
    lines = wait_access(gw, 3)
    assert [ln["path"] for ln in lines] == ["/k/0", "/k/1", "/k/2"]
    assert len({ln["conn"] for ln in lines}) == 1


def test_logs_are_logfmt_by_default(start_wakegate, recording_upstream):
    gw = start_wakegate(proxy_config(recording_upstream.address))
    assert rawhttp.send(gw.port, raw_get("/x", extra="Connection: close\r\n"), timeout=3).status == 200
    wait_access(gw, 1)
    lines = program_lines(gw)
    assert len(lines) >= 2
    for line in lines:
        kv = parse_logfmt(line)
        assert {"ts", "level", "sub", "msg"} <= set(kv), "not a logfmt line: %r" % line
        assert re.match(r"^ts=\S+ level=\w+ ", line), line


def test_logs_are_json_with_log_format_json(start_wakegate, recording_upstream):
    gw = start_wakegate(proxy_config(recording_upstream.address, log={"format": "json"}))
    req = raw_get("/json/path?q=1", host="j.test", extra="Connection: close\r\n")
    r = rawhttp.send(gw.port, req, timeout=3)
    assert r.status == 200
    # Hosts that look like numbers must still come out as JSON strings.
    for host in ("127.0.0.1", "0123"):
        assert rawhttp.send(gw.port, raw_get("/h", host=host, extra="Connection: close\r\n"), timeout=3).status == 200
    wait_for(lambda: sum('"access"' in line for line in program_lines(gw)) >= 3, 5, "three access lines")
    gw.stop()
    lines = program_lines(gw)
    assert len(lines) >= 3
    parsed, bad = [], []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError as e:
            bad.append("%s\n    %s" % (line, e))
    assert not bad, "%d of %d log lines are not JSON:\n%s" % (len(bad), len(lines), "\n".join(bad))
    assert all(isinstance(p, dict) and "msg" in p and "level" in p for p in parsed)
    acc = [p for p in parsed if p.get("sub") == "access"]
    assert len(acc) == 3, parsed
    assert [x.get("host") for x in acc[1:]] == ["127.0.0.1", "0123"]
    a = acc[0]
    assert a.get("method") == "GET" and a.get("path") == "/json/path" and str(a.get("status")) == "200"
    assert a.get("host") == "j.test"
    assert str(a.get("bytes_out")) == str(len(r.data))


# ================================================================ admin

def test_admin_health_and_readiness(start_wakegate, recording_upstream):
    gw = start_wakegate(proxy_config(recording_upstream.address))
    st, hdrs, body = admin_get(gw, "/healthz")
    assert st == 200
    st, hdrs, body = admin_get(gw, "/readyz")
    assert st == 200
    st, _, _ = admin_get(gw, "/no-such-admin-path")
    assert st == 404
    # Nothing of that went to the upstream.
    time.sleep(0.1)
    assert recording_upstream.connections == []


def test_public_listener_never_serves_admin_paths(start_wakegate, make_upstream):
    up = make_upstream()
    gw = start_wakegate(proxy_config(up.address))
    for path in ("/healthz", "/readyz", "/metrics"):
        r = rawhttp.send(gw.port, raw_get(path, extra="Connection: close\r\n"), timeout=3)
        assert r.status == 200
        assert r.response.body == ("ok GET %s\n" % path).encode(), "public %s answered by the admin handler: %r" % (path, r.data[:300])
    # Three connections, maybe on three worker loops with their own pooled
    # upstream connections: the upstream may record them in any order.
    assert sorted(q.target for q in up.requests) == ["/healthz", "/metrics", "/readyz"]


def test_public_admin_path_without_route_is_404(start_wakegate, make_upstream):
    up = make_upstream()
    gw = start_wakegate(proxy_config(None, routes=[{"match": {"path_prefix": "/app/"}, "upstream": up.address}]))
    for path in ("/healthz", "/metrics"):
        r = rawhttp.send(gw.port, raw_get(path), timeout=3)
        assert r.status == 404, r
        assert b"wakegate_" not in r.data
    assert up.connections == []


def test_metrics_counters_increase_with_traffic(start_wakegate, recording_upstream):
    gw = start_wakegate(proxy_config(None, routes=[{"match": {"path_prefix": "/app/"}, "upstream": recording_upstream.address}]))
    m0 = metrics(gw)
    for name in ("wakegate_requests_total", "wakegate_upstream_retries_total", "wakegate_connections_open",
                 "wakegate_connections_accepted_total", "wakegate_client_bytes_sent_total"):
        assert name in m0, "missing %s in /metrics" % name
    with rawhttp.connect(gw.port) as c:
        for i in range(5):
            c.send(raw_get("/app/%d" % i))
            assert c.read_response().status == 200
        m_open = metrics(gw)
        assert m_open["wakegate_connections_open"] == m0["wakegate_connections_open"] + 1
    assert rawhttp.send(gw.port, raw_get("/missing"), timeout=3).status == 404
    def closed():
        m = metrics(gw)
        return m if m["wakegate_connections_open"] == m0["wakegate_connections_open"] else None
    m1 = wait_for(closed, 3, "the client connections to be closed", interval=0.05)
    assert m1["wakegate_requests_total"] - m0["wakegate_requests_total"] == 6
    assert m1["wakegate_connections_accepted_total"] - m0["wakegate_connections_accepted_total"] == 2
    assert m1['wakegate_responses_total{class="2xx"}'] - m0.get('wakegate_responses_total{class="2xx"}', 0) == 5
    assert m1['wakegate_responses_total{class="4xx"}'] - m0.get('wakegate_responses_total{class="4xx"}', 0) == 1
    assert m1["wakegate_client_bytes_sent_total"] > m0["wakegate_client_bytes_sent_total"]
    assert m1["wakegate_client_bytes_received_total"] > m0["wakegate_client_bytes_received_total"]
    assert m1["wakegate_connections_open"] == m0["wakegate_connections_open"]


# ================================================================ nginx as the upstream

def test_nginx_get_head_post_through_proxy(start_wakegate, nginx_upstream):
    gw = start_wakegate(proxy_config(nginx_upstream.address))
    with rawhttp.connect(gw.port, timeout=10) as c:
        c.send(raw_get("/small.txt", host="n.test"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello from nginx\n"
        assert "nginx" in (r.headers.get("server") or "")

        c.send(b"HEAD /64k.bin HTTP/1.1\r\nHost: n.test\r\n\r\n")
        r = c.read_response(method="HEAD")
        assert r.status == 200
        assert r.headers.get("content-length") == "65536"
        assert r.body == b""

        # The connection stayed in sync after the HEAD.
        c.send(raw_get("/64k.bin", host="n.test"))
        r = c.read_response()
        assert r.status == 200 and r.body == pattern(0, 65536)

        body = pattern(7, 100_000)
        c.send(b"POST /upload HTTP/1.1\r\nHost: n.test\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        r = c.read_response()
        assert r.status == 200 and r.body == b"received=100000\n"

        c.send(b"POST /upload HTTP/1.1\r\nHost: n.test\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == b"received=11\n"

        c.send(raw_get("/does-not-exist", host="n.test"))
        r = c.read_response()
        assert r.status == 404
        assert c.close_state(timeout=0.2) == "timeout", "a relayed 404 closed the client connection"

        c.send(raw_get("/small.txt", host="n.test"))
        etag = c.read_response().headers.get("etag")
        assert etag
        c.send(raw_get("/small.txt", host="n.test", extra="If-None-Match: %s\r\n" % etag))
        r = c.read_response()
        assert r.status == 304 and r.body == b""
        c.send(raw_get("/small.txt", host="n.test"))
        assert c.read_response().body == b"hello from nginx\n"


def test_nginx_many_keepalive_requests(start_wakegate, nginx_upstream):
    gw = start_wakegate(proxy_config(nginx_upstream.address))
    s = connect(gw.port)
    try:
        for i in range(50):
            s.sendall(raw_get("/small.txt?i=%d" % i, host="n.test"))
            status, headers, rest = read_head(s, bytearray())
            assert status == 200
            body = bytearray(rest)
            for _ in range(100):
                if len(body) >= 17:
                    break
                body += s.recv(100)
            assert bytes(body) == b"hello from nginx\n"
    finally:
        s.close()
    m = metrics(gw)
    assert m["wakegate_upstream_errors_total"] == 0
    assert m["wakegate_upstream_retries_total"] == 0
    assert m['wakegate_responses_total{class="2xx"}'] == 50
    assert m["wakegate_connections_accepted_total"] == 1
