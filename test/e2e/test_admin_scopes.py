"""End-to-end: the two token scopes of the admin API (admin/listener_auth.c)
against the real gateway (role all), a real redis-server and the harness's
private dockerd with the busybox test image.

The gateway reads both tokens from 0600 files (admin.token_file,
admin.read_token_file). The read-only token lists, shows and follows the
events, and drives the dashboard in headless Chromium; every write with it
gets 403 and changes nothing (no record, no command, no container change);
the admin token does everything; a wrong or missing token is 401. Refusals
are counted on /metrics by reason. wakegatectl with only the read token:
ls, show and events work, wake and rm exit 7 saying the token is read-only.
"""

import asyncio
import http.client
import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import time

import pytest
import redis

from browser_util import Cdp, Chromium
from harness.wakegate import SANITIZER_MARKERS, clean_env, wakegate_bin

pytestmark = pytest.mark.docker

ADMIN = "scope-admin-5e1"
READ = "scope-read-c07"
HOST = "scopes-host"
IMAGE = "wakegate-test:latest"
READ_ONLY_ERROR = {"error": "token is read-only: this request needs the admin token"}


# ---------------------------------------------------------------- helpers

def call(gw, method, path, token=None, body=None, authz=None, timeout=20.0):
    """(status, {lowercase header: value}, parsed JSON or raw bytes)."""
    h = {}
    if token is not None:
        h["Authorization"] = "Bearer " + token
    if authz is not None:
        h["Authorization"] = authz
    data = None
    if body is not None:
        data = json.dumps(body)
        h["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection("127.0.0.1", gw.admin_port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        raw = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw
    return resp.status, hdrs, parsed


def refusals(gw):
    """{reason: count} of wakegate_admin_auth_failures_total (tokenless /metrics)."""
    st, _, raw = call(gw, "GET", "/metrics")
    assert st == 200, st
    text = raw.decode() if isinstance(raw, bytes) else raw
    assert text.count("# TYPE wakegate_admin_auth_failures_total counter") == 1, text[:400]
    got = {m.group(1): int(m.group(2)) for m in
           re.finditer(r'^wakegate_admin_auth_failures_total\{reason="([a-z_]+)"\} (\d+)$', text, re.M)}
    assert set(got) == {"missing", "invalid", "read_only"}, got
    return got


def session_containers(dockerd, sid):
    return dockerd.api_json("GET", "/containers/json", params={
        "all": "1", "filters": json.dumps({"label": ["wakegate.session=" + sid]})})


def ctl_bin():
    return pathlib.Path(wakegate_bin()).parent / "wakegatectl"


def ctl(*args, env=None, timeout=60):
    p = subprocess.run([str(ctl_bin()), *[str(a) for a in args]], env=clean_env(env), capture_output=True,
                       text=True, timeout=timeout)
    bad = [l for l in p.stderr.splitlines() if any(m in l for m in SANITIZER_MARKERS)]
    assert not bad, "sanitizer report from the CLI:\n" + p.stderr
    return p


def ctl_as(user, *args, timeout=60):
    """wakegatectl ARGS as another user (runuser keeps the environment)."""
    p = subprocess.run(["runuser", "-u", user, "--", str(ctl_bin()), *[str(a) for a in args]], env=clean_env(),
                       capture_output=True, text=True, timeout=timeout)
    bad = [l for l in p.stderr.splitlines() if any(m in l for m in SANITIZER_MARKERS)]
    assert not bad, "sanitizer report from the CLI:\n" + p.stderr
    return p


def read_events_until(gw, token, pred, since="0", timeout=20.0):
    """GET /v1/events?since=...: the parsed data of each event until pred(data)
    holds for one; (status, headers, [data...])."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.admin_port, timeout=timeout)
    seen = []
    try:
        conn.request("GET", "/v1/events?since=" + since, headers={"Authorization": "Bearer " + token})
        resp = conn.getresponse()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        if resp.status != 200:
            return resp.status, hdrs, resp.read()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = resp.readline()
            assert line, "the event stream ended"
            if line.startswith(b"data: "):
                data = json.loads(line[6:])
                seen.append(data)
                if pred(data):
                    return resp.status, hdrs, seen
        raise AssertionError("no matching event in %.0fs: %s" % (timeout, seen))
    finally:
        conn.close()


class ScopeStack:
    """One gateway (role all) with both tokens in 0600 files."""

    def __init__(self, redis_server, dockerd, start_wakegate, tmp):
        self.redis_server = redis_server
        self.dockerd = dockerd
        self.start_wakegate = start_wakegate
        self.tmp = pathlib.Path(tmp)
        self.token_file = self.tmp / "admin.token"
        self.read_token_file = self.tmp / "admin-read.token"
        for path, value in ((self.token_file, ADMIN), (self.read_token_file, READ)):
            path.write_text(value + "\n")
            os.chmod(path, 0o600)
        self.r = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=5,
                                      socket_connect_timeout=3)
        self.gw = None

    def config(self):
        return {
            "redis": {"url": self.redis_server.url},
            "docker": {"host": self.dockerd.host, "name": HOST},
            "admin": {"token_file": str(self.token_file), "read_token_file": str(self.read_token_file)},
            "sessions": {"image": IMAGE, "port": 8080, "wake_timeout": "15s", "save": {"timeout": "5s"}},
            "routes": [{"match": {"host": "{session}.preview.localhost"}, "access": "public"}],
            "log": {"level": "debug"},
        }

    def start(self):
        gw = self.start_wakegate(self.config(), args=["--role", "all"])
        self.gw = gw
        gw.wait_log(r"startup reconciliation done", timeout=15)
        deadline = time.monotonic() + 15
        while call(gw, "GET", "/readyz", timeout=2)[0] != 200:
            assert gw.alive(), gw.log_tail()
            assert time.monotonic() < deadline, "readyz not 200:\n" + gw.log_tail()
            time.sleep(0.05)
        return gw

    def create_and_wake(self, sid):
        st, _, got = call(self.gw, "POST", "/v1/sessions", ADMIN, {"id": sid})
        assert st == 201 and got["state"] == "asleep", (st, got)
        st, _, got = call(self.gw, "POST", "/v1/sessions/%s/wake?wait=1" % sid, ADMIN)
        assert st == 200 and got["state"] == "running", (st, got, self.gw.log_tail(30))
        return got

    def wait_state(self, sid, states, timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            st, _, got = call(self.gw, "GET", "/v1/sessions/" + sid, ADMIN)
            if st == 200 and got["state"] in states:
                return got
            if st == 404 and "gone" in states:
                return None
            assert time.monotonic() < deadline, (sid, st, got, self.gw.log_tail(30))
            time.sleep(0.05)

    def commands(self):
        return [f for _, f in self.r.xrange("wg:wake:" + HOST)]


@pytest.fixture
def stack(redis_server, dockerd, test_image, start_wakegate, e2e_tmp):
    assert test_image == IMAGE
    dockerd.remove_all_containers()
    s = ScopeStack(redis_server, dockerd, start_wakegate, tempfile.mkdtemp(prefix="scopes-", dir=e2e_tmp))
    try:
        yield s
    finally:
        dockerd.remove_all_containers()


# ---------------------------------------------------------------- the API

def test_read_token_reads_and_is_refused_every_write(stack):
    gw = stack.start()
    rec = stack.create_and_wake("s-scope-a")
    before = refusals(gw)
    assert before == {"missing": 0, "invalid": 0, "read_only": 0}, before

    # Reads: list, show (GET and HEAD), events replayed and streamed.
    st, _, got = call(gw, "GET", "/v1/sessions", READ)
    assert st == 200 and [s["id"] for s in got] == ["s-scope-a"], (st, got)
    assert got[0]["state"] == "running", got
    st, h, _ = call(gw, "HEAD", "/v1/sessions", READ)
    assert st == 200 and h["content-type"] == "application/json", (st, h)
    st, _, got = call(gw, "GET", "/v1/sessions/s-scope-a", READ)
    assert st == 200 and got["state"] == "running" and got["ip"] == rec["ip"], (st, got)
    st, _, _ = call(gw, "HEAD", "/v1/sessions/s-scope-a", READ)
    assert st == 200
    st, _, got = call(gw, "GET", "/v1/sessions/s-nope", READ)
    assert st == 404 and got == {"error": "no such session"}, (st, got)
    st, h, seen = read_events_until(gw, READ, lambda d: d.get("id") == "s-scope-a" and d.get("to") == "running")
    assert st == 200 and h["content-type"].startswith("text/event-stream"), (st, h)
    assert [(d["from"], d["to"]) for d in seen if d.get("id") == "s-scope-a"][-2:] == \
        [("asleep", "starting"), ("starting", "running")], seen

    # Writes: each 403 with the read-only error, and nothing happens.
    commands = stack.commands()
    gen = stack.r.hget("wg:session:s-scope-a", "gen")
    last_active = call(gw, "GET", "/v1/sessions/s-scope-a", ADMIN)[2]["last_active"]
    container = session_containers(stack.dockerd, "s-scope-a")
    assert len(container) == 1 and container[0]["State"] == "running", container
    writes = [
        ("POST", "/v1/sessions", {"id": "s-scope-b"}),
        ("POST", "/v1/sessions/s-scope-b/wake", None),
        ("POST", "/v1/sessions/s-scope-a/wake?wait=1", None),
        ("POST", "/v1/sessions/s-scope-a/sleep", None),
        ("POST", "/v1/sessions/s-scope-a/sleep?force=1", None),
        ("POST", "/v1/sessions/s-scope-a/keepalive", {"duration": "30m"}),
        ("DELETE", "/v1/sessions/s-scope-a", None),
        ("DELETE", "/v1/sessions/s-scope-a?force=1", None),
        # Minting a link or revoking every link is a write (admin only).
        ("POST", "/v1/sessions/s-scope-a/links", {"ttl": "1h"}),
        ("POST", "/v1/sessions/s-scope-a/revoke", None),
        # Not a route today: admin-only all the same (fail closed).
        ("GET", "/v1/sessions/s-scope-a/links", None),
        ("PUT", "/v1/sessions/s-scope-a", {}),
    ]
    for method, path, body in writes:
        st, h, got = call(gw, method, path, READ, body)
        assert st == 403 and got == READ_ONLY_ERROR, (method, path, st, got)
        assert 'error="insufficient_scope"' in h.get("www-authenticate", ""), (method, path, h)
    assert stack.r.exists("wg:session:s-scope-b") == 0
    assert stack.commands() == commands
    assert stack.r.hget("wg:session:s-scope-a", "state") == "running"
    assert stack.r.hget("wg:session:s-scope-a", "gen") == gen  # no revoke
    assert call(gw, "GET", "/v1/sessions/s-scope-a", ADMIN)[2]["last_active"] == last_active  # no keepalive
    after = session_containers(stack.dockerd, "s-scope-a")
    assert [(c["Id"], c["State"]) for c in after] == [(container[0]["Id"], "running")], after
    gw.wait_log(r"refused: read-only token on an admin request.*method=DELETE", timeout=5)

    # A wrong or missing token: 401 on reads and writes alike, never 403.
    for method, path in (("GET", "/v1/sessions"), ("GET", "/v1/events"), ("POST", "/v1/sessions"),
                         ("POST", "/v1/sessions/s-scope-a/wake")):
        for authz in ("Bearer wrong", "Bearer " + READ + "x", "Bearer " + ADMIN[:-1], "Basic " + READ):
            st, h, got = call(gw, method, path, authz=authz, body={} if method == "POST" else None)
            assert st == 401 and got == {"error": "unauthorized"}, (method, path, authz, st, got)
            assert 'error="invalid_token"' in h["www-authenticate"], h
        st, h, got = call(gw, method, path, body={} if method == "POST" else None)
        assert st == 401 and h["www-authenticate"] == 'Bearer realm="wakegate"', (method, path, st, h)

    # Tokenless as before: /metrics, /healthz, /readyz, the dashboard's files.
    for path in ("/metrics", "/healthz", "/readyz", "/dashboard"):
        assert call(gw, "GET", path)[0] == 200, path

    assert refusals(gw) == {"missing": 4, "invalid": 16, "read_only": len(writes)}


def test_admin_token_does_everything(stack):
    gw = stack.start()
    stack.create_and_wake("s-scope-c")
    st, _, got = call(gw, "POST", "/v1/sessions/s-scope-c/keepalive", ADMIN, {"duration": "10m"})
    assert st == 200, (st, got)
    st, _, got = call(gw, "POST", "/v1/sessions/s-scope-c/sleep?wait=1", ADMIN)
    assert st == 200 and got["state"] in ("asleep", "paused"), (st, got)
    st, _, got = call(gw, "POST", "/v1/sessions/s-scope-c/wake?wait=1", ADMIN)
    assert st == 200 and got["state"] == "running", (st, got)
    st, _, got = call(gw, "GET", "/v1/sessions", ADMIN)
    assert st == 200 and [s["id"] for s in got] == ["s-scope-c"], got
    st, _, seen = read_events_until(gw, ADMIN, lambda d: d.get("id") == "s-scope-c" and d.get("to") == "asleep")
    assert st == 200, st
    st, _, got = call(gw, "DELETE", "/v1/sessions/s-scope-c?force=1", ADMIN)
    assert st == 202, (st, got)
    stack.wait_state("s-scope-c", ("gone",))
    deadline = time.monotonic() + 15
    while session_containers(stack.dockerd, "s-scope-c"):
        assert time.monotonic() < deadline, session_containers(stack.dockerd, "s-scope-c")
        time.sleep(0.1)
    assert refusals(gw) == {"missing": 0, "invalid": 0, "read_only": 0}


def test_equal_tokens_are_a_configuration_error(stack, start_wakegate):
    stack.read_token_file.write_text(ADMIN + "\n")
    cfg = stack.config()
    path = stack.tmp / "same.yaml"
    start_wakegate.write_config(cfg, path)
    p = start_wakegate.run(["--config", path, "--check-config"])
    assert p.returncode != 0, p.stdout
    assert "admin.read_token_file" in p.stderr and "must differ" in p.stderr, p.stderr
    assert ADMIN not in p.stderr, p.stderr  # the error never shows the secret
    # The environment's read token is held to the same rule, and named.
    p = start_wakegate.run(["--config", path, "--check-config"], env={"WAKEGATE_ADMIN_READ_TOKEN": ADMIN})
    assert p.returncode != 0 and "WAKEGATE_ADMIN_READ_TOKEN: must differ" in p.stderr, p.stderr
    # A distinct one from the environment wins over the file.
    p = start_wakegate.run(["--config", path, "--check-config"], env={"WAKEGATE_ADMIN_READ_TOKEN": "other"})
    assert p.returncode == 0, p.stderr


# ---------------------------------------------------------------- wakegatectl

def test_ctl_with_only_the_read_token(stack):
    gw = stack.start()
    stack.create_and_wake("s-scope-d")
    url = "http://127.0.0.1:%d" % gw.admin_port
    commands = stack.commands()

    # From the environment, without a configuration file.
    env = {"WAKEGATE_ADMIN_READ_TOKEN": READ}
    p = ctl("--admin", url, "ls", env=env)
    assert p.returncode == 0 and "s-scope-d" in p.stdout and "running" in p.stdout, p.stderr
    p = ctl("--admin", url, "show", "s-scope-d", env=env)
    assert p.returncode == 0 and "running" in p.stdout, p.stderr
    p = ctl("--admin", url, "events", "--since", "0", env=env)
    assert p.returncode == 0 and "s-scope-d" in p.stdout, p.stderr
    for args in (("wake", "s-scope-d"), ("sleep", "s-scope-d"), ("rm", "s-scope-d", "--force")):
        p = ctl("--admin", url, *args, env=env)
        assert p.returncode == 7, (args, p.returncode, p.stderr)
        assert "403" in p.stderr and "token is read-only" in p.stderr, p.stderr
        assert "the token from WAKEGATE_ADMIN_READ_TOKEN is read-only" in p.stderr, p.stderr
        assert "needs the admin token" in p.stderr, p.stderr

    # From a configuration that has only admin.read_token_file.
    cfg = stack.tmp / "reader.yaml"
    cfg.write_text("admin:\n  listen: 127.0.0.1:%d\n  read_token_file: %s\n"
                   % (gw.admin_port, stack.read_token_file))
    p = ctl("--config", cfg, "ls", "--json")
    assert p.returncode == 0 and [s["id"] for s in json.loads(p.stdout)] == ["s-scope-d"], p.stderr
    p = ctl("--config", cfg, "wake", "s-scope-d")
    assert p.returncode == 7 and "the token from admin.read_token_file is read-only" in p.stderr, p.stderr

    # The read token given as --token, with the gateway's own configuration.
    p = ctl("--config", gw.config_path, "--token", READ, "ls")
    assert p.returncode == 0 and "s-scope-d" in p.stdout, p.stderr
    p = ctl("--config", gw.config_path, "--token", READ, "rm", "s-scope-d")
    assert p.returncode == 7 and "the token from --token is read-only" in p.stderr, p.stderr

    # The admin token, when there is one, wins over the read token.
    p = ctl("--config", gw.config_path, "wake", "s-scope-d")
    assert p.returncode == 0 and "wake queued for s-scope-d" in p.stdout, p.stderr
    p = ctl("--admin", url, "--token", ADMIN, "sleep", "s-scope-d", "--wait", env=env)
    assert p.returncode == 0, p.stderr

    # None of the refused commands reached the stream.
    ops = [c["op"] for c in stack.commands()[len(commands):]]
    assert ops == ["wake", "sleep"], ops
    assert refusals(gw)["read_only"] == 5


def test_ctl_as_a_user_who_can_read_only_the_read_token(stack):
    """The gateway's configuration, run by a user (nobody) who may not read
    admin.token_file: the CLI does not stop at it, and uses the read token."""
    gw = stack.start()
    stack.create_and_wake("s-scope-f")
    d = pathlib.Path(tempfile.mkdtemp(prefix="wg-scopes-user-", dir="/tmp"))
    try:
        os.chmod(d, 0o755)
        admin_file, read_file = d / "admin.token", d / "admin-read.token"
        admin_file.write_text(ADMIN + "\n")
        os.chmod(admin_file, 0o600)  # root's
        read_file.write_text(READ + "\n")
        os.chmod(read_file, 0o600)
        nobody = 65534
        os.chown(read_file, nobody, nobody)
        cfg = stack.config()
        cfg["admin"] = {"listen": "127.0.0.1:%d" % gw.admin_port, "token_file": str(admin_file),
                        "read_token_file": str(read_file)}
        both = d / "both.yaml"
        both.write_text(json.dumps(cfg))  # JSON is YAML
        cfg["admin"].pop("read_token_file")
        admin_only = d / "admin-only.yaml"
        admin_only.write_text(json.dumps(cfg))
        for f in (both, admin_only):
            os.chmod(f, 0o644)

        def as_nobody(*args):
            return ctl_as("nobody", *args)

        p = as_nobody("--config", both, "ls")
        assert p.returncode == 0 and "s-scope-f" in p.stdout, (p.returncode, p.stderr)
        p = as_nobody("--config", both, "wake", "s-scope-f")
        assert p.returncode == 7 and "the token from admin.read_token_file is read-only" in p.stderr, p.stderr
        p = as_nobody("--config", admin_only, "ls")
        assert p.returncode == 7 and "401" in p.stderr, p.stderr
        assert "no token was sent" in p.stderr and "(which this user cannot read)" in p.stderr, p.stderr
        # root reads the admin token from the same file and may write.
        p = ctl("--config", both, "sleep", "s-scope-f", "--force")
        assert p.returncode == 0, p.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- the dashboard

ROW_JS = """(() => {
  const r = document.querySelector('#sessions tr[data-id=%s]');
  if (!r || r.dataset.state !== %s) return null;
  return JSON.stringify({state: r.querySelector('.state').textContent,
                         cells: [...r.cells].map(c => c.textContent)});
})()"""

FEED_JS = """(() => {
  const li = [...document.querySelectorAll('#events li')].filter(
    li => li.dataset.session === %s && li.dataset.to === %s);
  return li.length ? JSON.stringify(li.map(l => l.dataset.eventId)) : null;
})()"""

CHART_JS = """(() => {
  const c = document.getElementById('chart');
  return c && +c.dataset.samples >= 1 ? c.dataset.samples : null;
})()"""


async def wait_js(cdp, expr, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        v = await cdp.evaluate(expr)
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        await asyncio.sleep(0.1)


async def _dashboard(ws_url, gw):
    async with Cdp(ws_url) as cdp:
        await cdp.send("Network.enable")
        await cdp.send("Page.enable")
        await cdp.send("Runtime.enable")
        nav = await cdp.send("Page.navigate", url="http://127.0.0.1:%d/dashboard#token=%s" % (gw.admin_port, READ))
        assert not nav.get("errorText"), nav
        row = json.loads(await wait_js(cdp, ROW_JS % (json.dumps("s-scope-e"), json.dumps("running")),
                                       "the row of s-scope-e"))
        feed = json.loads(await wait_js(cdp, FEED_JS % (json.dumps("s-scope-e"), json.dumps("running")),
                                        "s-scope-e -> running in the feed"))
        samples = await wait_js(cdp, CHART_JS, "the wake latency chart")
        conn = await cdp.evaluate("document.getElementById('conn').dataset.state")
        statuses = [(p["response"]["url"], p["response"]["status"])
                    for _, p in cdp.events_named("Network.responseReceived")]
        return row, feed, samples, conn, statuses


def test_dashboard_works_with_the_read_token(stack, e2e_tmp, artifacts):
    gw = stack.start()
    stack.create_and_wake("s-scope-e")
    b = Chromium(tempfile.mkdtemp(prefix="chromium-scopes-", dir=e2e_tmp), artifacts / "chromium-scopes.log")
    try:
        row, feed, samples, conn, statuses = asyncio.run(asyncio.wait_for(_dashboard(b.page_ws_url(), gw), 120))
    finally:
        b.stop()
    assert row["state"] == "running" and row["cells"][0] == "s-scope-e", row
    assert feed, feed
    assert int(samples) >= 1, samples
    assert conn == "live", conn
    api = [(u, s) for u, s in statuses if "/v1/" in u]
    assert any("/v1/sessions" in u and s == 200 for u, s in api), statuses
    assert any("/v1/events" in u and s == 200 for u, s in api), statuses
    assert not [(u, s) for u, s in statuses if s in (401, 403)], statuses
    assert refusals(gw) == {"missing": 0, "invalid": 0, "read_only": 0}
