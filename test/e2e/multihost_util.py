"""The multi-host stack of test_multihost.py, all real processes on this machine:

- two Docker hosts: the session's dockerd (conftest) and a second Dockerd of
  this module, each with its own containerd, bridge and data root;
- an orchestrator for each (role orchestrator, docker.name h1 / h2);
- three gateways (role proxy, 2 worker loops each), the admin API on each;
- Redis through Sentinel: a master, a replica and three sentinels
  (harness/sentinel.py).

Nothing here starts a process but through the conftest's start_wakegate
factory and the harness classes, and every wait is bounded.
"""

import json
import tempfile
import threading
import time

import redis

from harness import rawhttp
from harness.image import WS_IMAGE
from harness.util import wait_for

TOKEN = "t"
DOMAIN = "preview.localhost"
MASTER = "wgmaster"
HEARTBEAT_TTL = "3s"


def redis_cfg(cluster):
    return {"sentinel": {"master": MASTER, "addresses": cluster.addresses}}


def sessions_cfg():
    """The template every process shares (a gateway and an orchestrator must
    agree on it): the WebSocket test image, whose start script clones /remote
    into /www/repo when the work tree is missing (the restore contract)."""
    return {"image": WS_IMAGE, "port": 8080, "wake_timeout": "30s",
            "binds": {"allow": [tempfile.gettempdir()]},
            "save": {"path": "/www/repo", "timeout": "10s"},
            "idle": {"stop_after": "1h", "pause_after": "0s"}}


def orch_config(cluster, name, dockerd, max_sessions, labels=None):
    return {
        "redis": redis_cfg(cluster),
        "docker": {"host": dockerd.host, "name": name, "max_concurrent_starts": 8,
                   "max_sessions": max_sessions, "labels": labels or {}, "heartbeat_ttl": HEARTBEAT_TTL},
        "sessions": sessions_cfg(),
        "admin": {"token": TOKEN},
        "log": {"level": "debug"},
        "shutdown_grace": "3s",
    }


def gateway_config(cluster):
    return {
        "redis": redis_cfg(cluster),
        "workers": 2,
        "sessions": sessions_cfg(),
        "admin": {"token": TOKEN},
        "non_waking": {"paths": ["/healthz"]},
        "routes": [{"match": {"host": "{session}." + DOMAIN}, "access": "public"}],
        "log": {"level": "info", "access": False},
        "shutdown_grace": "3s",
    }


class Cluster:
    """The processes of one test, and what the test reads from them."""

    def __init__(self, start_wakegate, sentinels, engines):
        self.start_wakegate = start_wakegate
        self.sentinels = sentinels
        self.engines = engines  # {"h1": Dockerd, "h2": Dockerd}
        self.orchs = {}
        self.gws = []

    # ---- processes
    def start_orch(self, name, max_sessions, labels=None):
        gw = self.start_wakegate(orch_config(self.sentinels, name, self.engines[name], max_sessions, labels),
                                 args=["--role", "orchestrator"])
        gw.wait_log(r"startup reconciliation done", timeout=30)
        gw.wait_ready(timeout=15)
        self.orchs[name] = gw
        return gw

    def start_gateways(self, n=3):
        for _ in range(n):
            gw = self.start_wakegate(gateway_config(self.sentinels), args=["--role", "proxy"])
            gw.wait_ready(timeout=15)
            self.gws.append(gw)
        return self.gws

    # ---- Redis, always the current master
    def redis(self):
        host, port = self.sentinels.master_addr()
        return redis.Redis(host=host, port=port, decode_responses=True, socket_timeout=5,
                           socket_connect_timeout=3)

    def record(self, sid):
        return self.redis().hgetall("wg:session:" + sid)

    # ---- the admin API (of any gateway)
    def api(self, method, path, body=None, gw=None, timeout=20.0):
        r = (gw or self.gws[0]).admin(method, path, body=body, token=TOKEN, timeout=timeout)
        return r.status, r.json_or_body()

    def create(self, sid, gw=None, **fields):
        body = {"id": sid}
        body.update(fields)
        return self.api("POST", "/v1/sessions", body, gw=gw)

    def session(self, sid, gw=None):
        st, got = self.api("GET", "/v1/sessions/" + sid, gw=gw)
        assert st == 200, (st, got)
        return got

    def wait_state(self, sid, states, timeout=30.0):
        if isinstance(states, str):
            states = (states,)
        seen = {}

        def reached():
            seen.update(self.session(sid))
            return seen.get("state") in states
        wait_for(reached, timeout, lambda: "%s to reach %s; last %r\norchestrators:\n%s" % (
            sid, states, seen, "\n".join("%s:\n%s" % (n, g.log_tail(30)) for n, g in self.orchs.items())),
            interval=0.05)
        return dict(seen)

    # ---- requests through the public listeners
    def get(self, sid, path="/", gw=None, timeout=40.0):
        gw = gw or self.gws[0]
        data = rawhttp.request_bytes("GET", path, host="%s.%s" % (sid, DOMAIN),
                                     headers=[("Accept", "*/*"), ("User-Agent", "multihost-e2e")])
        r = rawhttp.send(gw.port, data, timeout=timeout, until="responses")
        assert r.responses, "no answer for %s%s in %.0fs (got %r)\n%s" % (sid, path, timeout, r.data[:200],
                                                                       gw.log_tail(30))
        return r.responses[0]

    # ---- the engines
    def containers(self, name, sid=None):
        """Containers of wakegate sessions on host name (all states)."""
        label = "wakegate.session" if sid is None else "wakegate.session=" + sid
        return self.engines[name].api_json("GET", "/containers/json",
                                           params={"all": "1", "filters": json.dumps({"label": [label]})})


class Traffic:
    """Requests in a loop from threads until stop(): (time, sid, status or
    the error) of each, for the tests that must see no failure while
    something dies underneath."""

    def __init__(self, cluster, sids, threads_per_gw=1):
        self.cluster = cluster
        self.sids = list(sids)
        self.results = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(gw, i), daemon=True)
                         for i, gw in enumerate(cluster.gws) for _ in range(threads_per_gw)]

    def _run(self, gw, i):
        n = i
        while not self._stop.is_set():
            sid = self.sids[n % len(self.sids)]
            n += 1
            try:
                status = self.cluster.get(sid, "/", gw=gw, timeout=10).status
            except Exception as e:  # noqa: BLE001 - recorded and asserted on
                status = repr(e)
            with self._lock:
                self.results.append((time.monotonic(), sid, status))
            time.sleep(0.02)

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return self.results
