"""The harness checked against the real things: redis-server, dockerd, the
scratch image, git in a container, the recording upstream, the raw client,
process cleanup and the wakegate factory (with a stand-in binary, so these
tests do not depend on the proxy being finished). Debian's nginx, which the
proxy tests use as a real upstream, is not tested here: that would test
nginx, not wakegate."""

import hashlib
import os
import signal
import socket
import subprocess
import textwrap
import threading
import time

import pytest
import redis
import requests

import harness
from harness import http1, procs, rawhttp, upstream
from harness.dockerd import Dockerd, http_get_container
from harness.util import HarnessError, free_port, free_ports, wait_until

GIT = "/usr/bin/git"


# ---------------------------------------------------------------- utilities

def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(5)
    assert len(set(ports)) == 5
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))
    assert 1024 < free_port() < 65536


def test_wait_until_returns_value_and_times_out():
    t0 = time.monotonic()
    assert wait_until(lambda: time.monotonic() - t0 > 0.05 and "yes", timeout=2) == "yes"
    with pytest.raises(TimeoutError, match="the thing"):
        wait_until(lambda: 1 / 0, timeout=0.1, what="the thing")


def test_registry_stops_by_pid_and_reaps(tmp_path):
    p = procs.REGISTRY.spawn("sleeper", ["/bin/sleep", "60"], log_path=tmp_path / "sleep.log")
    assert p.poll() is None
    assert any(q is p for _, q in procs.REGISTRY.alive())
    code = procs.REGISTRY.stop(p, timeout=5)
    assert code == -signal.SIGTERM
    assert procs.pid_gone(p.pid)
    assert not any(q is p for _, q in procs.REGISTRY.alive())


def test_registry_kills_what_ignores_sigterm(tmp_path):
    p = procs.REGISTRY.spawn("stubborn", ["/bin/sh", "-c", "trap '' TERM; sleep 60 & wait"], log_path=tmp_path / "s.log")
    time.sleep(0.1)
    t0 = time.monotonic()
    code = procs.REGISTRY.stop(p, timeout=0.5)
    assert code == -signal.SIGKILL
    assert time.monotonic() - t0 < 5
    # The child `sleep` was in the group led by the shell and died with it.
    wait_until(lambda: not procs.processes_matching("sleep 60 & wait"), timeout=3)


# ---------------------------------------------------------------- redis

def test_redis_ping_set_get_over_tcp_and_unix(redis_server):
    assert redis_server.url == "redis://127.0.0.1:%d/0" % redis_server.port
    r = redis.Redis.from_url(redis_server.url)
    assert r.ping() is True
    assert r.set("wg:test", "value") is True
    assert r.get("wg:test") == b"value"
    u = redis.Redis(unix_socket_path=redis_server.unix_path)
    assert u.get("wg:test") == b"value"
    assert u.config_get("save")["save"] == ""
    assert u.config_get("appendonly")["appendonly"] == "no"
    assert r.xadd("wg:events", {"k": "v"})  # Redis 7 streams are there
    r.close()
    u.close()


def test_redis_stop_and_start_again(redis_server):
    pid1 = redis_server.pid
    r = redis.Redis.from_url(redis_server.url, socket_connect_timeout=0.5)
    r.set("k", "v")
    assert redis_server.stop() == 0
    assert procs.pid_gone(pid1)
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis.from_url(redis_server.url, socket_connect_timeout=0.5).ping()
    redis_server.start()
    assert redis_server.pid != pid1
    r2 = redis.Redis.from_url(redis_server.url)
    assert r2.ping() is True
    assert r2.get("k") is None  # no persistence
    r.close()
    r2.close()


# ---------------------------------------------------------------- docker

def test_dockerd_answers_ping_and_version(dockerd):
    assert dockerd.ping() == b"OK"
    assert dockerd.host == "unix://" + dockerd.sock
    assert os.path.exists(dockerd.sock)
    v = dockerd.version()
    assert v["ApiVersion"] == dockerd.api_version
    assert tuple(int(x) for x in v["ApiVersion"].split(".")) >= (1, 41)
    out = dockerd.cli("version", "--format", "{{.Server.APIVersion}}").stdout.strip()
    assert out == v["ApiVersion"]
    info = dockerd.api_json("GET", "/info")
    assert info["DockerRootDir"] == str(dockerd.dir / "data")
    with open("/proc/%d/cmdline" % dockerd.pid, "rb") as f:
        assert b"--bridge\0" + dockerd.bridge.encode() in f.read()


def test_dockerd_failure_reports_log_tail(e2e_tmp, tmp_path):
    """A dockerd that cannot start fails with its log tail and leaves nothing behind."""
    bad = Dockerd(os.path.join(e2e_tmp, "bad-docker"), tmp_path, extra_args=["--no-such-flag-for-test"])
    with pytest.raises(HarnessError) as ei:
        bad.start(timeout=20)
    msg = str(ei.value)
    assert "dockerd did not start" in msg
    assert "no-such-flag-for-test" in msg  # the log tail is in the message
    # Cleaned up: containerd stopped, bridge gone, directory gone.
    assert bad.containerd_pid is None or procs.pid_gone(bad.containerd_pid)
    links = subprocess.run(["ip", "-o", "link", "show", bad.bridge], capture_output=True, text=True)
    assert links.returncode != 0
    assert not os.path.exists(bad.dir)


def test_image_builds_from_scratch(dockerd, test_image):
    img = dockerd.api_json("GET", "/images/%s/json" % test_image)
    assert img["Config"]["Cmd"] == ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
    assert "8080/tcp" in img["Config"]["ExposedPorts"]
    hist = dockerd.api_json("GET", "/images/%s/history" % test_image)
    assert not any("FROM" in (h.get("CreatedBy") or "") and "scratch" not in (h.get("CreatedBy") or "") for h in hist)
    # Small: busybox + git + a few libs.
    assert img["Size"] < 64 * 1024 * 1024


def test_container_gets_bridge_ip_and_answers_http(dockerd, test_image):
    cid = dockerd.run(test_image, init=True, labels={"wakegate.session": "harness-http"})
    try:
        ip = dockerd.container_ip(cid)
        assert ip
        import ipaddress
        assert ipaddress.ip_address(ip) in dockerd.subnet
        status, body = http_get_container(ip, 8080, "/", timeout=10)
        assert status == 200
        assert b"wakegate test image" in body
        r = requests.get("http://%s:8080/" % ip, timeout=5)
        assert r.status_code == 200 and "wakegate test image" in r.text
        st = dockerd.inspect(cid)["State"]
        assert st["Running"] is True
        # pause / unpause / stop / start all work on this engine.
        dockerd.pause(cid)
        assert dockerd.inspect(cid)["State"]["Paused"] is True
        dockerd.unpause(cid)
        assert http_get_container(ip, 8080, "/", timeout=5)[0] == 200
        dockerd.stop_container(cid, t=1)
        # The init passed SIGTERM on (128 + 15): no SIGKILL (137) at -t 1.
        assert dockerd.inspect(cid)["State"]["ExitCode"] == 143
        dockerd.start_container(cid)
        ip2 = dockerd.container_ip(cid)
        assert http_get_container(ip2, 8080, "/", timeout=10)[0] == 200
    finally:
        dockerd.remove(cid)
    assert dockerd.api("GET", "/containers/%s/json" % cid).status == 404


def test_git_in_container_pushes_to_bare_repo_on_bind_mount(dockerd, test_image, tmp_path):
    bare = tmp_path / "repo.git"
    subprocess.run([GIT, "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    cid = dockerd.run(test_image, init=True, binds=["%s:/srv/repo.git" % bare])
    try:
        r = dockerd.exec(cid, "sh", "-c", textwrap.dedent("""
            set -e
            mkdir -p /work && cd /work
            git init -q
            echo 'saved by the hook' > notes.txt
            git add -A
            git commit -q -m 'auto-save from container'
            git push -q /srv/repo.git HEAD:refs/heads/main
            git rev-parse HEAD
        """))
        head = r.stdout.strip().splitlines()[-1]
        assert len(head) == 40
    finally:
        dockerd.remove(cid)
    log = subprocess.run([GIT, "--git-dir", str(bare), "log", "--format=%H %s", "main"],
                         check=True, capture_output=True, text=True).stdout.strip()
    assert log == "%s auto-save from container" % head
    show = subprocess.run([GIT, "--git-dir", str(bare), "show", "main:notes.txt"], check=True, capture_output=True, text=True)
    assert show.stdout == "saved by the hook\n"


def test_healthcheck_image_becomes_healthy(dockerd, test_image_healthcheck):
    img = dockerd.api_json("GET", "/images/%s/json" % test_image_healthcheck)
    assert img["Config"]["Healthcheck"]["Test"][0] == "CMD"
    cid = dockerd.run(test_image_healthcheck, init=True)
    try:
        wait_until(lambda: dockerd.inspect(cid)["State"]["Health"]["Status"] == "healthy", timeout=20,
                   what="container health to become healthy")
    finally:
        dockerd.remove(cid)


# ---------------------------------------------------------------- recording upstream + raw client

def test_recording_upstream_records_exact_bytes(recording_upstream, raw_http):
    req1 = b"GET /a?b=c HTTP/1.1\r\nHost: up\r\nX-Odd:  spaced \r\n\r\n"
    req2 = b"POST /p HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\n"
    req3 = b"PUT /q HTTP/1.1\r\nHost: up\r\nContent-Length: 4\r\nConnection: close\r\n\r\nwxyz"
    res = raw_http.send(recording_upstream.port, req1 + req2 + req3, methods=["GET", "POST", "PUT"])
    assert res.close == "eof"
    assert [r.status for r in res.responses] == [200, 200, 200]
    assert res.responses[0].body == b"ok GET /a?b=c\n"
    reqs = recording_upstream.wait_for_requests(3)
    assert recording_upstream.all_bytes() == req1 + req2 + req3
    assert len(recording_upstream.connections) == 1
    assert [r.method for r in reqs] == ["GET", "POST", "PUT"]
    assert reqs[0].headers.get("x-odd") == "spaced"
    assert reqs[1].chunked and reqs[1].body == b"abc" and reqs[1].trailers == [("T", "1")]
    assert reqs[2].body == b"wxyz"
    recording_upstream.reset()
    assert recording_upstream.all_bytes() == b"" and recording_upstream.requests == []


def test_recording_upstream_keeps_connections_apart(recording_upstream, raw_http):
    for i in range(3):
        raw_http.send(recording_upstream.port, b"GET /%d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" % i)
    recording_upstream.wait_for_requests(3)
    assert [c.data for c in recording_upstream.connections] == [
        b"GET /%d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" % i for i in range(3)]
    for c in recording_upstream.connections:
        assert c.closed.wait(2)
    with pytest.raises(TimeoutError):
        recording_upstream.wait_for_requests(4, timeout=0.2)


def test_handler_raw_response_and_echo(make_upstream, raw_http):
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"
    up = make_upstream(upstream.raw_response(raw, close=True))
    res = raw_http.send(up.port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert res.data == raw and res.close == "eof"
    echo = make_upstream(upstream.echo_body())
    res = raw_http.send(echo.port, raw_http.request_bytes("POST", "/e", body=b"payload"), until="responses")
    assert res.response.body == b"payload"


def test_handler_close_reset_and_never(make_upstream, raw_http):
    closing = make_upstream(upstream.close_immediately())
    assert raw_http.send(closing.port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").close in ("eof", "reset")
    resetting = make_upstream(upstream.close_immediately(read_request=True, reset=True))
    assert raw_http.send(resetting.port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").close == "reset"
    silent = make_upstream(upstream.never_respond())
    res = raw_http.send(silent.port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", timeout=0.5)
    assert res.close == "timeout" and res.data == b""
    silent.wait_for_requests(1)
    slow = make_upstream(upstream.slow_response(0.3))
    t0 = time.monotonic()
    res = raw_http.send(slow.port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", until="responses")
    assert res.status == 200 and time.monotonic() - t0 >= 0.3


def test_handler_sse_large_and_informational(make_upstream):
    sse = make_upstream(upstream.sse(["data: one\n\n", "data: two\n\n"], interval=0.2))
    with rawhttp.connect(sse.port) as c:
        c.send(b"GET /events HTTP/1.1\r\nHost: h\r\nAccept: text/event-stream\r\n\r\n")
        t0 = time.monotonic()
        first = b""
        while b"data: one" not in first:
            first += c.read_some()
        assert 0.15 < time.monotonic() - t0 < 1.5
        assert b"data: two" not in first  # the second event comes later
        rest = c.read_some(timeout=2)
        while b"0\r\n\r\n" not in first + rest:
            rest += c.read_some(timeout=2)
        resp = http1.parse_responses(first + rest)[0]
        assert resp.headers.get("content-type") == "text/event-stream"
        assert resp.body == b"data: one\n\ndata: two\n\n"

    n = 5 * 1024 * 1024 + 7
    for chunked in (False, True):
        big = make_upstream(upstream.large_body(n, chunked=chunked))
        with rawhttp.connect(big.port) as c:
            c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            resp = c.read_response()
        assert resp.body_len == n and resp.framing == ("chunked" if chunked else "length")
        assert hashlib.sha256(resp.body).digest() == hashlib.sha256(upstream.pattern(0, n)).digest()

    info = make_upstream(upstream.informational([(100, ()), (103, [("Link", "</s.css>; rel=preload")])]))
    with rawhttp.connect(info.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        resp = c.read_response()
    assert [r.status for r in resp.interim] == [100, 103]
    assert resp.interim[1].headers.get("link") == "</s.css>; rel=preload"
    assert resp.status == 200 and resp.body == b"final\n"


def test_count_body_handler_and_client_abort_is_seen(make_upstream):
    up = make_upstream(upstream.count_body())
    with rawhttp.connect(up.port) as c:
        c.send(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 10000000\r\n\r\n")
        c.send(b"z" * 10_000_000)
        resp = c.read_response()
    assert resp.body == b"received=10000000\n"
    # An abort mid-body shows in the record as a peer close with a partial request.
    up.reset()
    c = rawhttp.connect(up.port)
    c.send(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nonly-part")
    conn = up.wait_for_connections(1)[0]
    c.close()
    assert conn.closed.wait(3)
    assert conn.close_reason == "eof" and conn.requests == [] and "incomplete" in conn.parse_error
    assert conn.data.endswith(b"only-part")


def test_raw_client_parses_pipelined_head_and_sees_close(make_upstream, raw_http):
    up = make_upstream()
    data = (b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n"
            b"GET /g HTTP/1.1\r\nHost: h\r\n\r\n")
    res = raw_http.send(up.port, data, methods=["HEAD", "GET"], until="responses", n=2)
    assert res.close == "open"
    assert [r.status for r in res.responses] == [200, 200]
    assert res.responses[0].body == b"" and res.responses[0].headers.get("content-length") == "11"
    assert res.responses[1].body == b"ok GET /g\n"
    # A clean close is "eof", not "timeout".
    with raw_http.connect(up.port) as c:
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        resp = c.read_response()
        assert resp.status == 200
        assert c.close_state(timeout=2) == "eof"


# ---------------------------------------------------------------- wakegate factory

STUB = r'''#!/usr/bin/python3
# Stand-in for the wakegate binary: parses --config, honours WAKEGATE_*_LISTEN,
# answers /healthz on the admin port and 200 on the public port.
import http.server, os, sys, threading, signal, yaml
args = sys.argv[1:]
cfg = yaml.safe_load(open(args[args.index("--config") + 1])) or {}
if cfg.get("fail"):
    sys.stderr.write("fatal: config says fail\n"); sys.exit(3)
listen = os.environ.get("WAKEGATE_LISTEN") or cfg["listen"]
admin = os.environ.get("WAKEGATE_ADMIN_LISTEN") or cfg["admin"]["listen"]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"stub " + self.path.encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        sys.stderr.write("access %s\n" % (a[1:],)); sys.stderr.flush()
def serve(addr):
    h, p = addr.rsplit(":", 1)
    s = http.server.ThreadingHTTPServer((h, int(p)), H)
    threading.Thread(target=s.serve_forever, daemon=True).start()
serve(listen); serve(admin)
sys.stderr.write("info: stub up listen=%s admin=%s\n" % (listen, admin)); sys.stderr.flush()
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
signal.pause()
'''


@pytest.fixture
def stub_bin(tmp_path, monkeypatch):
    p = tmp_path / "wakegate-stub"
    p.write_text(STUB)
    p.chmod(0o755)
    monkeypatch.setenv("WAKEGATE_BIN", str(p))
    return p


def test_wakegate_factory_with_stub(stub_bin, start_wakegate):
    gw = start_wakegate({"routes": [{"match": {"host": "{session}.preview.localhost"}}]})
    assert gw.healthz() == 200
    assert requests.get(gw.url("/x"), timeout=5).text == "stub /x"
    assert any("stub up listen=127.0.0.1:%d" % gw.port in line for line in gw.log_lines())
    gw.wait_log(r"access .*GET /x")
    assert gw.rss_kib() > 0 and gw.fd_count() > 0
    cfg = harness.wakegate.yaml.safe_load(open(gw.config_path))
    assert cfg["listen"] == "127.0.0.1:%d" % gw.port and cfg["admin"]["listen"] == "127.0.0.1:%d" % gw.admin_port
    assert cfg["routes"][0]["match"]["host"] == "{session}.preview.localhost"
    pid = gw.pid
    assert gw.stop() == 0
    assert procs.pid_gone(pid)

    # YAML text: ports through placeholders or the environment.
    gw2 = start_wakegate("listen: '{{listen}}'\nadmin: {listen: '{{admin_listen}}'}\n")
    assert requests.get(gw2.admin_url("/healthz"), timeout=5).status_code == 200
    gw3 = start_wakegate("redis: {url: 'redis://127.0.0.1:1/0'}\n")
    assert any("stub up listen=127.0.0.1:%d admin=127.0.0.1:%d" % (gw3.port, gw3.admin_port) in l for l in gw3.log_lines())
    # The teardown stops gw2 and gw3 by pid.


def test_wakegate_factory_reports_early_exit(stub_bin, start_wakegate):
    with pytest.raises(HarnessError) as ei:
        start_wakegate({"fail": True})
    assert "exited with code 3" in str(ei.value)
    assert "fatal: config says fail" in str(ei.value)
    r = start_wakegate.run(["--config", "/nonexistent"], timeout=10)
    assert r.returncode != 0


def test_wakegate_factory_missing_binary(start_wakegate, monkeypatch, tmp_path):
    monkeypatch.setenv("WAKEGATE_BIN", str(tmp_path / "nope"))
    with pytest.raises(HarnessError, match="not found"):
        start_wakegate({})


def test_background_threads_do_not_leak(make_upstream):
    before = threading.active_count()
    up = make_upstream(upstream.never_respond())
    conns = [rawhttp.connect(up.port) for _ in range(5)]
    for c in conns:
        c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    up.wait_for_requests(5)
    up.stop()
    for c in conns:
        assert c.close_state(timeout=2) in ("eof", "reset")
        c.close()
    wait_until(lambda: threading.active_count() <= before, timeout=5, what="upstream threads to end")
