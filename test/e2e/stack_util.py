"""The stack of the Docker tests: a redis-server, the session's dockerd and
the wakegate processes a test starts, with what the tests read from them.

    Stack     role all: sessions made through the admin API and woken by
              requests to their preview URLs (test_wake_e2e, test_sleep,
              test_metrics).
    OrchEnv   role orchestrator: the test plays the admin API and the
              gateways through Redis (test_orchestrator, test_readiness_http).

Nothing here starts a process but through the start_wakegate fixture; the
conftest's clean_engine fixture empties the engine around each test.
"""

import json
import re

import redis

import bus_util
from harness import rawhttp
from harness.util import artifacts_dir, now_ms, wait_for

HOST = "h1"  # docker.name of the orchestrator
DOMAIN = "preview.localhost"
TOKEN = "t"
IMAGE = "wakegate-test:latest"
APP_TEXT = b"wakegate test image"
WAKE_KEY = "wg:wake:" + HOST
GROUP = "orchestrators"


def gw_config(redis_url, dockerd, wake_timeout="10s", level="debug"):
    """Role all: the session route {session}.preview.localhost, the test image."""
    return {
        "redis": {"url": redis_url},
        "docker": {"host": dockerd.host, "name": HOST, "max_concurrent_starts": 8},
        "admin": {"token": TOKEN},
        # The other images test_wake_e2e.py creates sessions from: a template
        # refuses any image it does not list.
        "sessions": {"image": IMAGE, "port": 8080, "wake_timeout": wake_timeout,
                     "images": ["wakegate-test-wake-slowhealth:latest", "wakegate-test-healthcheck:latest"]},
        "non_waking": {"paths": ["/healthz"], "user_agents": ["kube-probe"]},
        # Public: these stacks are about waking (test_access.py covers private routes).
        "routes": [{"match": {"host": "{session}." + DOMAIN}, "access": "public"}],
        "log": {"level": level, "access": True},
    }


def orch_config(redis_url, dockerd, wake_timeout="10s", max_starts=8, **extra):
    """Role orchestrator on the test image."""
    cfg = {
        "redis": {"url": redis_url},
        "docker": {"host": dockerd.host, "name": HOST, "max_concurrent_starts": max_starts},
        "sessions": {"image": IMAGE, "port": 8080, "wake_timeout": wake_timeout},
        "log": {"level": "debug"},
    }
    cfg.update(extra)
    return cfg


def host_of(sid):
    return "%s.%s" % (sid, DOMAIN)


def req(sid, path="/", headers=(), method="GET"):
    """An API-style request (Accept: */*): held while the session wakes."""
    hdrs = [("Accept", "*/*"), ("User-Agent", "wake-e2e")]
    names = {k.lower() for k, _ in headers}
    hdrs = [(k, v) for k, v in hdrs if k.lower() not in names] + list(headers)
    return rawhttp.request_bytes(method, path, host=host_of(sid), headers=hdrs)


class Timings:
    """Timings a test prints (-s) and keeps in test-artifacts/e2e/<filename>;
    informational, never asserted."""

    def __init__(self, filename):
        self.filename = filename
        self.values = {}

    def record(self, name, **values):
        self.values[name] = values
        print("\n[timing] %s: %s" % (name, ", ".join("%s=%s" % kv for kv in values.items())))
        try:
            (artifacts_dir() / self.filename).write_text(json.dumps(self.values, indent=2, sort_keys=True) + "\n")
        except OSError:
            pass


class _Bus:
    """What both stacks read: the records and events in Redis, the engine's log."""

    def __init__(self, redis_server, dockerd, start_wakegate):
        self.redis_server = redis_server
        self.dockerd = dockerd
        self.start_wakegate = start_wakegate
        self.r = self._redis()
        self.gw = None

    def _redis(self):
        return redis.Redis.from_url(self.redis_server.url, decode_responses=True, socket_timeout=5,
                                    socket_connect_timeout=3)

    def reconnect_redis(self):
        self.r = self._redis()

    def record(self, sid):
        return bus_util.record(self.r, sid)

    def events(self, sid, type_=None):
        return bus_util.events(self.r, sid, type_)

    def transitions(self, sid):
        return bus_util.transitions(self.r, sid)

    def docker_events(self, since_s, sid=None, actions=None):
        return bus_util.engine_events(self.dockerd, since_s, sid, actions)


class Stack(_Bus):
    """One test's stack: the redis-server, the shared dockerd, and the
    wakegate processes this test starts (role all is .gw)."""

    # ---- wakegate
    def start(self, config=None, role="all", wake_timeout="10s", level="debug"):
        cfg = config or gw_config(self.redis_server.url, self.dockerd, wake_timeout=wake_timeout, level=level)
        gw = self.start_wakegate(cfg, args=["--role", role])
        if role == "all":
            gw.wait_log(r"startup reconciliation done", timeout=15)
        gw.wait_ready(timeout=10.0)
        if role == "all":
            self.gw = gw
        return gw

    # ---- the admin API
    def api(self, method, path, body=None, gw=None, timeout=20.0):
        """(status, parsed JSON or the raw body) of an admin API call with the token."""
        r = (gw or self.gw).admin(method, path, body=body, token=TOKEN, timeout=timeout)
        return r.status, r.json_or_body()

    def create(self, sid, **fields):
        body = {"id": sid}
        body.update(fields)
        st, got = self.api("POST", "/v1/sessions", body)
        assert st == 201, (st, got)
        assert got["id"] == sid and got["state"] == "asleep" and got["host"] == HOST, got
        return got

    # ---- requests through the public listener
    def get(self, sid, path="/", headers=(), gw=None, timeout=15.0):
        gw = gw or self.gw
        r = rawhttp.send(gw.port, req(sid, path, headers), timeout=timeout, until="responses")
        rs = r.responses
        assert rs, "no response for %s%s within %.0fs (close=%s, got %r)\nwakegate tail:\n%s" % (
            sid, path, timeout, r.close, r.data[:300], gw.log_tail(40))
        return rs[0]

    def status_state(self, sid, gw=None):
        """The public listener's /_wakegate/status (never wakes)."""
        resp = self.get(sid, "/_wakegate/status", gw=gw, timeout=5)
        return json.loads(resp.body)["state"] if resp.status == 200 else None

    def wait_gateway_sees(self, sid, state, gw=None, timeout=5.0):
        """Until the gateway's in-process cache shows state (so the next
        request is decided on it)."""
        seen = [None]

        def sees():
            seen[0] = self.status_state(sid, gw)
            return seen[0] == state
        wait_for(sees, timeout, lambda: "the gateway to show %s as %r, not %r" % (sid, state, seen[0]),
                          interval=0.01)

    # ---- records and events
    def wait_state(self, sid, states, timeout=15.0, poll=0.01):
        return bus_util.wait_state(self.r, sid, states, timeout, poll, self.gw)[0]

    def wake_commands(self, sid, since_ms=0):
        return [f for _, f in self.r.xrange(WAKE_KEY)
                if f.get("session") == sid and int(f.get("at", "0")) >= since_ms]

    # ---- Docker
    def actions(self, since_s, sid, interesting=("create", "start", "restart", "unpause", "pause", "stop", "die", "kill")):
        return [e["Action"] for e in self.docker_events(since_s, sid) if e["Action"] in interesting]


class OrchEnv(_Bus):
    """A role-orchestrator gateway whose admin API and gateways the test
    plays through Redis: records written the way wg_store_create() + the move
    to asleep leave them, wakes XADDed the way wg_store_wake_add() does."""

    def __init__(self, redis_server, dockerd, start_wakegate, config):
        super().__init__(redis_server, dockerd, start_wakegate)
        self.config = config

    # ---- the binary
    def configure(self, **kw):
        """The next start's configuration: orch_config(**kw) on this stack."""
        self.config = orch_config(self.redis_server.url, self.dockerd, **kw)

    def start(self, wait_ready=True):
        self.gw = self.start_wakegate(self.config, args=["--role", "orchestrator"])
        if wait_ready:
            self.gw.wait_log(r"startup reconciliation done", timeout=15)
        return self.gw

    def stop(self):
        code = self.gw.stop()
        assert code == 0, "wakegate exited with %r; tail:\n%s" % (code, self.gw.log_tail())
        return code

    # ---- records, as common/store.c writes them
    def make_record(self, sid, image=None, port=None, spec=None, state="asleep", host=HOST, **fields):
        """wg_store_create(id, {host, image, port, spec}) then creating ->
        asleep, as the admin API does: HSET the record, SADD wg:sessions."""
        if image:
            fields["image"] = image
        if port:
            fields["port"] = port
        if spec is not None:
            fields["spec"] = json.dumps(spec, separators=(",", ":"))
        bus_util.write_record(self.r, sid, state, host, v=2, fresh=True, **fields)

    def wake(self, sid, frm="gw1", at=None, op="wake", force=False):
        fields = {"session": sid, "op": op, "at": str(at if at is not None else now_ms())}
        if frm:
            fields["from"] = frm
        if force:
            fields["force"] = "1"
        return self.r.xadd(WAKE_KEY, fields, maxlen=10000, approximate=True)

    def wait_state(self, sid, states, timeout=15.0, poll=0.005):
        """(record, seconds waited) once the state is in states."""
        return bus_util.wait_state(self.r, sid, states, timeout, poll, self.gw)

    def pending(self):
        try:
            return self.r.xpending(WAKE_KEY, GROUP)["pending"]
        except redis.ResponseError:
            return None

    # ---- Docker
    def container(self, sid):
        rec = self.record(sid)
        return self.dockerd.inspect(rec["container_id"])

    # ---- the admin listener (no API here: no token)
    def metrics(self):
        return self.gw.admin("GET", "/metrics", timeout=5).body.decode()

    def get(self, path):
        r = self.gw.admin("GET", path, timeout=5)
        return r.status, r.body.decode()

    def ready_line(self, sid):
        """The orchestrator's "session ready" log line for sid, as a dict of its fields."""
        line = self.gw.wait_log(r"session ready.*session=%s\b" % re.escape(sid), timeout=5)
        return dict(re.findall(r"(\w+)=(\S+)", line))
