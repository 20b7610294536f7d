#!/usr/bin/python3
"""bench/access_cost.py - what the check of a private session route costs.

wakegate's CPU time per request through a private session route with a
valid cookie, against a public session route, same session, same upstream,
same request bytes (the cookie is sent to both: the public route strips it
too). The only difference is the check: the cookie parsed, the token's
HMAC-SHA256 computed and compared, its session, expiry and generation
checked against the session cache. The issue's target: at most 5%.

Runs on 127.0.0.1 inside one temp dir: a redis-server (unix socket), an
nginx upstream answering "ok", and two wakegate processes with role proxy
(one loop, access log off; one with the public route, one with the
private route, so neither tries the other's route first), the session
record written here as an orchestrator would.
Rounds alternate the two routes (public first in even rounds, private first
in odd ones); each run is wrk for BENCH_DURATION seconds, and wakegate's
utime + stime (/proc/PID/stat) before and after gives its CPU per request.
Every process started here is stopped by PID.

    bench/access_cost.py                      # 6 rounds x 5 s
    BENCH_ROUNDS=2 BENCH_DURATION=2 bench/access_cost.py
    BENCH_CALLGRIND=1 bench/access_cost.py    # instructions per request instead

With BENCH_CALLGRIND=1 each gateway runs under valgrind's callgrind, which
counts the instructions wakegate executes: a count that does not depend on
what else the machine is doing. Each route is driven twice, by a fresh
process each time, with BENCH_CG_SHORT and BENCH_CG_LONG keep-alive
requests (default 1,000 and 3,000); the difference of the two totals over
the difference of the counts is the cost of one request, without startup.

Environment: BENCH_WAKEGATE (default build-bench/src/wakegate, built here
with meson --buildtype=release unless BENCH_NO_BUILD=1), BENCH_ROUNDS,
BENCH_DURATION, BENCH_CONNS (default 50). Not a test: it asserts no speed;
it exits 1 only when a run is not clean (wrk errors, non-2xx answers).
"""

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "6"))
DUR = int(os.environ.get("BENCH_DURATION", "5"))
CONNS = int(os.environ.get("BENCH_CONNS", "50"))
SECRET = os.urandom(32)
SID = "bench-1"
GEN = int.from_bytes(os.urandom(8), "big") | 1
CLK = os.sysconf("SC_CLK_TCK")

procs = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv, log):
    p = subprocess.Popen(argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(p)
    return p


def stop_all():
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def cpu_ticks(pid):
    stat = open("/proc/%d/stat" % pid).read()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def wait_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("bench: nothing listens on %d" % port)


def mint(sid, expires, gen):
    body = "%s.%d.%016x" % (sid, expires, gen)
    mac = hmac.new(SECRET, b"wakegate-access-v1\n" + body.encode(), hashlib.sha256).digest()
    return body + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def wakegate_binary():
    wg = os.environ.get("BENCH_WAKEGATE")
    if wg:
        return wg
    build = os.path.join(ROOT, "build-bench")
    if os.environ.get("BENCH_NO_BUILD") != "1":
        if not os.path.isdir(build):
            subprocess.run(["meson", "setup", build, ROOT, "--buildtype=release"], check=True,
                           stdout=subprocess.DEVNULL)
        subprocess.run(["ninja", "-C", build, "src/wakegate"], check=True, stdout=subprocess.DEVNULL)
    return os.path.join(build, "src", "wakegate")


def wrk(port, host, cookie):
    out = subprocess.run(["wrk", "-t1", "-c%d" % CONNS, "-d%ds" % DUR, "-H", "Host: " + host,
                          "-H", "Cookie: theme=dark; wg_token=" + cookie, "http://127.0.0.1:%d/" % port],
                         capture_output=True, text=True, timeout=DUR + 30)
    text = out.stdout
    m = re.search(r"(\d+) requests in", text)
    clean = out.returncode == 0 and m and "Non-2xx" not in text and "Socket errors" not in text
    return int(m.group(1)) if m else 0, bool(clean), text


def keepalive_requests(port, host, cookie, n):
    """n GETs on one keep-alive connection; every answer must be 200."""
    req = ("GET / HTTP/1.1\r\nHost: %s\r\nCookie: theme=dark; wg_token=%s\r\n\r\n" % (host, cookie)).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    buf = b""
    try:
        for _ in range(n):
            s.sendall(req)
            while True:
                head, sep, rest = buf.partition(b"\r\n\r\n")
                if sep:
                    m = re.search(rb"(?i)content-length: *(\d+)", head)
                    need = int(m.group(1)) if m else 0
                    if len(rest) >= need:
                        if not head.startswith(b"HTTP/1.1 200"):
                            raise SystemExit("bench: not 200: %r" % head[:80])
                        buf = rest[need:]
                        break
                chunk = s.recv(65536)
                if not chunk:
                    raise SystemExit("bench: the gateway closed the connection")
                buf += chunk
    finally:
        s.close()


def callgrind_total(wg, cfg, port, host, cookie, n, out, log):
    """Instructions wakegate executed from start to exit with n requests."""
    p = start(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, wg, "--config", cfg,
               "--role", "proxy"], log)
    wait_port(port, timeout=60)
    # Until the gateway has subscribed and read the record (slow under
    # valgrind), then the pool warm.
    deadline = time.monotonic() + 60
    while True:
        try:
            keepalive_requests(port, host, cookie, 1)
            break
        except SystemExit:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    keepalive_requests(port, host, cookie, 20)
    keepalive_requests(port, host, cookie, n)
    p.send_signal(signal.SIGTERM)
    p.wait(60)
    for line in open(out):
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit("bench: no total in %s" % out)


def callgrind_compare(wg, tmp, configs, targets, token):
    short = int(os.environ.get("BENCH_CG_SHORT", "1000"))
    long_ = int(os.environ.get("BENCH_CG_LONG", "3000"))
    per = {}
    for name in ("public", "private"):
        cfg, port = configs[name]
        a = callgrind_total(wg, cfg, port, targets[name], token, short, os.path.join(tmp, "cg.%s.short" % name),
                            os.path.join(tmp, "cg-%s.log" % name))
        b = callgrind_total(wg, cfg, port, targets[name], token, long_, os.path.join(tmp, "cg.%s.long" % name),
                            os.path.join(tmp, "cg-%s.log" % name))
        per[name] = (b - a) / (long_ - short)
        print("%-7s %d requests: %d instructions; %d requests: %d; per request: %.0f"
              % (name, short, a, long_, b, per[name]))
    print("\ninstructions per request: public %.0f, private (cookie checked) %.0f: %+.1f%%"
          % (per["public"], per["private"], (per["private"] - per["public"]) / per["public"] * 100))


def main():
    wg = wakegate_binary()
    for tool in ("wrk", "nginx", "redis-server"):
        if shutil.which(tool) is None:
            raise SystemExit("bench: %s not found" % tool)
    tmp = tempfile.mkdtemp(prefix="wakegate-access-bench.")
    ok = True
    try:
        # redis
        sock = os.path.join(tmp, "redis.sock")
        start(["redis-server", "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no",
               "--dir", tmp], os.path.join(tmp, "redis.log"))
        r = redis.Redis(unix_socket_path=sock, decode_responses=True)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        # upstream nginx
        up = free_port()
        os.makedirs(os.path.join(tmp, "nginx"))
        conf = os.path.join(tmp, "nginx", "nginx.conf")
        temps = "".join("    %s_temp_path %s/nginx/%s;\n" % (d, tmp, d)
                        for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        open(conf, "w").write(
            "worker_processes 1;\ndaemon off;\npid %s/nginx/nginx.pid;\nerror_log %s/nginx/error.log warn;\n"
            "events { worker_connections 4096; }\nhttp {\n    access_log off;\n%s"
            "    keepalive_requests 100000000;\n"
            "    server { listen 127.0.0.1:%d; location / { return 200 \"ok\\n\"; } }\n}\n"
            % (tmp, tmp, temps, up))
        start(["nginx", "-c", conf, "-p", os.path.join(tmp, "nginx")], os.path.join(tmp, "nginx.log"))
        wait_port(up)
        # wakegate, role proxy
        key = os.path.join(tmp, "access.key")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, SECRET)
        os.close(fd)
        # Two gateways, one route each, so neither pays for trying the
        # other's route first.
        gws = {}
        for name, route in (("public", {"match": {"host": "{session}.pub.test"}, "access": "public"}),
                            ("private", {"match": {"host": "{session}.priv.test"}})):
            port, admin = free_port(), free_port()
            cfg = os.path.join(tmp, "wakegate-%s.yaml" % name)
            open(cfg, "w").write(json.dumps({
                "listen": "127.0.0.1:%d" % port, "admin": {"listen": "127.0.0.1:%d" % admin},
                # Under callgrind the loop runs many times slower: the
                # state channel's check must not take that for silence.
                "redis": {"url": "unix://" + sock, "state_timeout": "30s"}, "docker": {"name": "h1"},
                "routes": [route], "access": {"secret_file": key},
                "log": {"level": "warn", "access": False},
            }))
            if os.environ.get("BENCH_CALLGRIND") == "1":
                gws[name] = (cfg, port)
                continue
            p = start([wg, "--config", cfg, "--role", "proxy"], os.path.join(tmp, "wakegate-%s.log" % name))
            wait_port(port)
            gws[name] = (p, port)
        now = str(int(time.time() * 1000))
        r.hset("wg:session:" + SID, mapping={"id": SID, "state": "running", "state_since": now,
                                             "created": now, "host": "h1", "v": "1", "gen": str(GEN),
                                             "ip": "127.0.0.1", "port": str(up)})
        r.sadd("wg:sessions", SID)
        token = mint(SID, int(time.time()) + 3600, GEN)
        targets = {"public": SID + ".pub.test", "private": SID + ".priv.test"}
        if os.environ.get("BENCH_CALLGRIND") == "1":
            callgrind_compare(wg, tmp, gws, targets, token)
            return 0
        # warm-up, and a check that both routes answer 200 through the session
        for name, host in targets.items():
            n, clean, text = wrk(gws[name][1], host, token)
            if not clean:
                print("bench: warm-up of %s not clean:\n%s" % (name, text), file=sys.stderr)
                ok = False
        us = {"public": [], "private": []}
        rps = {"public": [], "private": []}
        for i in range(ROUNDS):
            order = ["public", "private"] if i % 2 == 0 else ["private", "public"]
            for name in order:
                p, port = gws[name]
                c0 = cpu_ticks(p.pid)
                t0 = time.monotonic()
                n, clean, text = wrk(port, targets[name], token)
                t1 = time.monotonic()
                c1 = cpu_ticks(p.pid)
                if not clean or n == 0:
                    print("bench: %s round %d not clean:\n%s" % (name, i, text), file=sys.stderr)
                    ok = False
                    continue
                us[name].append((c1 - c0) / CLK * 1e6 / n)
                rps[name].append(n / (t1 - t0))
                print("round %d %-7s %9d requests %8.0f req/s %6.2f us CPU/request"
                      % (i, name, n, rps[name][-1], us[name][-1]))
        if us["public"] and us["private"]:
            pub, priv = statistics.median(us["public"]), statistics.median(us["private"])
            print("\nmedian CPU per request: public %.2f us, private (cookie checked) %.2f us: %+.1f%%"
                  % (pub, priv, (priv - pub) / pub * 100))
            print("median req/s: public %.0f, private %.0f"
                  % (statistics.median(rps["public"]), statistics.median(rps["private"])))
            # Each round's two runs are adjacent in time, so their ratio is
            # less exposed to what else the machine does than the medians.
            pairs = [b / a - 1 for a, b in zip(us["public"], us["private"])]
            print("median of the per-round differences: %+.1f%% (rounds: %s)"
                  % (statistics.median(pairs) * 100, " ".join("%+.1f" % (x * 100) for x in pairs)))
    finally:
        stop_all()
        if os.environ.get("BENCH_KEEP_TMP") == "1":
            print("bench: kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
