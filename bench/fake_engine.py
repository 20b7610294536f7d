#!/usr/bin/python3
"""bench/fake_engine.py - a stand-in Docker engine for bench/cpu_sampling.sh.

Serves, on a unix socket, the calls the CPU sampler makes
(orchestrator/cpu_watch.c) for RUNNING running and STOPPED stopped session
containers that do not exist: GET /_ping, GET /v1.41/containers/json (the
status=running filter answers the running ones; without it, all),
GET /v1.41/containers/{id}/json (Pid) and GET /v1.41/containers/{id}/stats.
It also writes the fake /proc/PID/cgroup and cgroup v1 cpuacct.usage files
of the running ones under DIR/proc and DIR/cgroup, and each one's busy
file (DIR/proc/PID/root/tmp/wakegate-busy). It counts what it
answered and prints the counts to stdout when sent SIGUSR1.

Usage: fake_engine.py SOCKET DIR RUNNING STOPPED
"""

import json
import os
import signal
import socketserver
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler

SOCK, DIR, RUNNING, STOPPED = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
PARENT = "wg-bench"


def cid(i):
    return "%064x" % (0xabc0000000000000 + i)


def row(i, running):
    # The fields and size of a real row of dockerd 20.10 (about 1 KiB).
    return {"Id": cid(i), "Names": ["/wg-s%d" % i], "Image": "wakegate-demo:latest",
            "ImageID": "sha256:" + "0" * 64, "Command": "/start.sh", "Created": 1700000000,
            "Ports": [], "Labels": {"wakegate.session": "s%d" % i, "wakegate.port": "8080",
                                    "wakegate.template": "default"},
            "State": "running" if running else "exited",
            "Status": "Up 5 minutes" if running else "Exited (0) 5 minutes ago",
            "HostConfig": {"NetworkMode": "wakegate-default"},
            "NetworkSettings": {"Networks": {"wakegate-default": {
                "IPAMConfig": None, "Links": None, "Aliases": None, "NetworkID": "1" * 64,
                "EndpointID": "2" * 64, "Gateway": "10.0.0.1", "IPAddress": "10.0.%d.%d" % (i // 250, i % 250 + 2),
                "IPPrefixLen": 16, "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                "MacAddress": "02:42:0a:00:00:02", "DriverOpts": None}}},
            "Mounts": []}


RUN_BODY = json.dumps([row(i, True) for i in range(RUNNING)]).encode()
ALL_BODY = json.dumps([row(i, True) for i in range(RUNNING)] +
                      [row(RUNNING + i, False) for i in range(STOPPED)]).encode()
PID0 = 100000
counts = {"ping": 0, "list": 0, "inspect": 0, "stats": 0, "other": 0}
lock = threading.Lock()


def write_tree():
    for i in range(RUNNING):
        pdir = os.path.join(DIR, "proc", str(PID0 + i))
        os.makedirs(pdir, exist_ok=True)
        with open(os.path.join(pdir, "cgroup"), "w") as f:
            f.write("4:memory:/%s/%s\n2:cpu,cpuacct:/%s/%s\n0::/\n" % (PARENT, cid(i), PARENT, cid(i)))
        # The container's root, with its busy file (sessions.idle.busy_file).
        os.makedirs(os.path.join(pdir, "root", "tmp"), exist_ok=True)
        open(os.path.join(pdir, "root", "tmp", "wakegate-busy"), "w").close()
        cdir = os.path.join(DIR, "cgroup", "cpu,cpuacct", PARENT, cid(i))
        os.makedirs(cdir, exist_ok=True)
        with open(os.path.join(cdir, "cpuacct.usage"), "w") as f:
            f.write("%d\n" % (i * 1000))


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, code, body, ctype="application/json", extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Api-Version", "1.41")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def count(self, k):
        with lock:
            counts[k] += 1

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        parts = u.path.split("/")
        if u.path == "/_ping":
            self.count("ping")
            return self.send(200, b"OK", "text/plain")
        if u.path.endswith("/containers/json"):
            self.count("list")
            q = urllib.parse.parse_qs(u.query)
            f = json.loads(q.get("filters", ["{}"])[0])
            return self.send(200, RUN_BODY if "running" in f.get("status", []) else ALL_BODY)
        if len(parts) >= 5 and parts[2] == "containers":
            try:
                i = int(parts[3], 16) - 0xabc0000000000000
            except ValueError:
                i = -1
            if not 0 <= i < RUNNING + STOPPED:
                return self.send(404, b'{"message":"No such container"}')
            if parts[4] == "json":
                self.count("inspect")
                run = i < RUNNING
                return self.send(200, json.dumps({
                    "Id": cid(i), "Name": "/wg-s%d" % i,
                    "State": {"Status": "running" if run else "exited", "Running": run,
                              "Pid": PID0 + i if run else 0, "ExitCode": 0,
                              "StartedAt": "2024-01-01T00:00:00Z", "FinishedAt": "0001-01-01T00:00:00Z"},
                    "Config": {"Image": "wakegate-demo:latest", "Labels": {"wakegate.session": "s%d" % i}},
                    "NetworkSettings": {"IPAddress": "", "Networks": {}}}).encode())
            if parts[4] == "stats":
                self.count("stats")
                return self.send(200, json.dumps({"read": "2024-01-01T00:00:00Z", "cpu_stats": {
                    "cpu_usage": {"total_usage": i * 1000}, "online_cpus": 2}}).encode())
        self.count("other")
        return self.send(404, b'{"message":"page not found"}')


class S(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 1024  # the default 5 refuses the sampler's parallel connects


def report(signum, frame):
    with lock:
        print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    write_tree()
    if os.path.exists(SOCK):
        os.unlink(SOCK)
    srv = S(SOCK, H)
    signal.signal(signal.SIGUSR1, report)
    print("ready", flush=True)
    srv.serve_forever()
