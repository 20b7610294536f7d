#!/usr/bin/python3
"""Wake latency: first request to first byte through wakegate, against the
floor measured in the same run (Docker start, then the first answer straight
from the container).

Everything runs here, on loopback and on the bridge of a dockerd this script
starts itself: dockerd, redis-server and wakegate (release build), all stopped
by pid at the end. Rounds alternate floor / through-wakegate so both see the
same machine.

    bench/wake.sh                 # 15 rounds each
    WAKE_ROUNDS=5 bench/wake.sh
"""
import json
import os
import pathlib
import socket
import statistics
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "test" / "e2e"))

from harness import (REGISTRY, TEST_IMAGE, Dockerd, RedisServer,  # noqa: E402
                     WakegateFactory, build_image, free_port)

ROUNDS = int(os.environ.get("WAKE_ROUNDS", "15"))
TOKEN = "bench-token"
APP_PORT = 8080


def http_first_byte(host, port, host_header, path="/", timeout=30.0):
    """Sends one GET and returns (status, seconds to the first response byte)."""
    t0 = time.monotonic()
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                   % (path, host_header)).encode())
        first = s.recv(1)
        t1 = time.monotonic()
        rest = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        line = (first + rest).split(b"\r\n", 1)[0].decode("latin-1")
        return int(line.split()[1]), t1 - t0
    finally:
        s.close()


def probe_until_200(ip, port, deadline_s=30.0):
    """Short connect attempts every 1 ms, as DESIGN.md advises: never one long
    connect (the bridge's ARP entry may be gone). At least as tight as the
    orchestrator's own probe, so the floor is not flattered."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            s = socket.create_connection((ip, port), timeout=0.05)
        except OSError:
            time.sleep(0.001)
            continue
        try:
            s.settimeout(5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = s.recv(64)
            if data.startswith(b"HTTP/1.") and data.split()[1] == b"200":
                return True
        except OSError:
            pass
        finally:
            s.close()
        time.sleep(0.001)
    return False


def api(admin_port, method, path, body=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (admin_port, path), method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Bearer " + TOKEN,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.loads(r.read() or b"null")


def wait_state(admin_port, sid, states, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        _, rec = api(admin_port, "GET", "/v1/sessions/" + sid)
        if rec.get("state") in states:
            return rec
        time.sleep(0.05)
    raise RuntimeError("session %s not in %s after %.0fs" % (sid, states, timeout))


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def main():
    wg_bin = os.environ.get("WAKEGATE_BIN", str(ROOT / "build-bench" / "src" / "wakegate"))
    if not os.path.exists(wg_bin):
        sys.exit("no wakegate binary at %s (bench/wake.sh builds it)" % wg_bin)
    os.environ["WAKEGATE_BIN"] = wg_bin
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="wg-bench-wake-"))
    logs = tmp / "logs"
    logs.mkdir()
    dockerd = redis = None
    try:
        dockerd = Dockerd(tmp / "docker", logs)
        dockerd.start()
        build_image(dockerd, TEST_IMAGE)
        redis = RedisServer(tmp / "redis", logs)
        redis.start()
        gw_factory = WakegateFactory(tmp / "wakegate", logs)
        gw = gw_factory({
            "redis": {"url": redis.url},
            "docker": {"host": dockerd.host, "name": "bench"},
            "admin": {"token": TOKEN},
            "log": {"level": "warn", "access": False},
            "sessions": {"image": TEST_IMAGE, "port": APP_PORT, "wake_timeout": "30s"},
            "routes": [{"match": {"host": "{session}.wake.localhost"}}],
        }, timeout=30)

        # The floor: a container of the same image, started through the
        # Engine API, probed straight on its bridge address.
        cid = dockerd.create_container(TEST_IMAGE, labels={"bench": "floor"}, init=True)
        floor, through = [], []
        sid = "bench1"
        status, _ = api(gw.admin_port, "POST", "/v1/sessions", {"id": sid})
        assert status in (200, 201), status
        # First wake creates the container: not a measured round.
        st, _ = http_first_byte("127.0.0.1", gw.port, sid + ".wake.localhost")
        assert st == 200, "first wake answered %d" % st
        rec = wait_state(gw.admin_port, sid, ("running",))

        for i in range(ROUNDS):
            # floor round
            dockerd.api_json("POST", "/containers/%s/stop" % cid, params={"t": "1"})
            t0 = time.monotonic()
            dockerd.api_json("POST", "/containers/%s/start" % cid)
            ip = dockerd.api_json("GET", "/containers/%s/json" % cid)["NetworkSettings"]["IPAddress"]
            if not probe_until_200(ip, APP_PORT):
                raise RuntimeError("floor container never answered")
            floor.append(time.monotonic() - t0)

            # through wakegate: the session's container is stopped behind
            # wakegate's back is not what we want; stop it the way an operator
            # would see it, then wait for Redis to say asleep.
            rec = wait_state(gw.admin_port, sid, ("running",))
            dockerd.api_json("POST", "/containers/%s/stop" % rec["container_id"], params={"t": "1"})
            wait_state(gw.admin_port, sid, ("asleep", "failed"))
            st, ttfb = http_first_byte("127.0.0.1", gw.port, sid + ".wake.localhost")
            if st != 200:
                raise RuntimeError("round %d: wake through wakegate answered %d" % (i, st))
            through.append(ttfb)
            print("round %2d  floor %6.1f ms   through wakegate %6.1f ms" %
                  (i + 1, floor[-1] * 1000, through[-1] * 1000), flush=True)

        f50, t50 = statistics.median(floor), statistics.median(through)
        print()
        print("                    median      p90")
        print("floor (start->200)  %6.1f ms  %6.1f ms" % (f50 * 1000, pct(floor, 90) * 1000))
        print("through wakegate    %6.1f ms  %6.1f ms" % (t50 * 1000, pct(through, 90) * 1000))
        print("overhead (medians)  %6.1f ms   target <= 10 ms" % ((t50 - f50) * 1000))
        out = ROOT / "bench" / "results" / "wake-latest.json"
        out.write_text(json.dumps({"rounds": ROUNDS, "floor_s": floor, "through_s": through,
                                   "overhead_median_s": t50 - f50}, indent=1))
        print("wrote", out)
    finally:
        REGISTRY.stop_all()
        if redis is not None:
            redis.stop()
        if dockerd is not None:
            dockerd.stop()


if __name__ == "__main__":
    main()
