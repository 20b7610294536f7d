"""End-to-end: the operator CLI (wakegatectl, and `wakegate ctl`) against
the real gateway (role all: proxy, orchestrator and admin API in one
process), a real redis-server and the harness's private dockerd with the
busybox test image.

The CLI is the binary next to WAKEGATE_BIN (build-ctl/src/wakegatectl). It
is given the gateway's own configuration file (--config), so it finds the
admin listener and the token file the way an operator's would. Every
assertion is on what the CLI printed or its exit code, checked against the
API, Redis or the engine. Every wait is bounded.
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import tempfile
import time

import pytest
import redis

from bus_util import write_record
from harness.procs import REGISTRY
from harness.util import free_port, now_ms, wait_for
from harness.wakegate import SANITIZER_MARKERS, clean_env, wakegate_bin

pytestmark = pytest.mark.docker

TOKEN = "ctl-t0ken"
HOST = "ctl-host"
IMAGE = "wakegate-test:latest"


# ---------------------------------------------------------------- helpers

def ctl_bin():
    return pathlib.Path(wakegate_bin()).parent / "wakegatectl"


ctl_env = clean_env


def no_sanitizer_reports(text):
    bad = [l for l in text.splitlines() if any(m in l for m in SANITIZER_MARKERS)]
    assert not bad, "sanitizer report from the CLI:\n" + text


def run(argv, env=None, timeout=60):
    p = subprocess.run([str(a) for a in argv], env=ctl_env(env), capture_output=True, text=True, timeout=timeout)
    no_sanitizer_reports(p.stderr)
    return p


def ctl(*args, env=None, timeout=60):
    """wakegatectl ARGS...: CompletedProcess (text)."""
    return run([ctl_bin(), *args], env=env, timeout=timeout)


def table(stdout):
    """ls output -> (header columns, [row dict]); columns are split on the
    header's column starts, so the alignment itself is checked."""
    lines = stdout.rstrip("\n").split("\n")
    head = lines[0]
    names = ["ID", "STATE", "HOST", "IP", "IDLE", "LAST SAVE"]
    starts = [head.index(n) for n in names]
    assert starts == sorted(starts), head
    rows = []
    for line in lines[1:]:
        cells = {}
        for i, n in enumerate(names):
            end = starts[i + 1] if i + 1 < len(names) else len(line)
            # A cell never runs into the next column: its start is blank before.
            if i > 0:
                assert line[starts[i] - 1] == " ", (line, n)
            cells[n] = line[starts[i]:end].strip()
        rows.append(cells)
    return names, rows


def show_lines(stdout):
    """show output -> {key: value}: keys fill 13 columns, values start at 14
    (the alignment is part of what is checked)."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith("    | "):
            continue
        assert len(line) <= 13 or line[13] == " ", line
        out.setdefault(line[:13].strip(), line[14:])
    return out


class CtlStack:
    """One test's gateway (role all) on the shared dockerd and its own
    redis-server, with its token in a 0600 file."""

    def __init__(self, redis_server, dockerd, start_wakegate, tmp):
        self.redis_server = redis_server
        self.dockerd = dockerd
        self.start_wakegate = start_wakegate
        self.tmp = pathlib.Path(tmp)
        self.token_file = self.tmp / "admin.token"
        self.token_file.write_text(TOKEN + "\n")
        os.chmod(self.token_file, 0o600)
        self.r = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=5,
                                      socket_connect_timeout=3)
        self.gw = None

    def config(self, admin_listen=None):
        cfg = {
            "redis": {"url": self.redis_server.url},
            "docker": {"host": self.dockerd.host, "name": HOST},
            "admin": {"token_file": str(self.token_file)},
            "sessions": {"image": IMAGE, "port": 8080, "wake_timeout": "15s", "save": {"timeout": "5s"}},
            "routes": [{"match": {"host": "{session}.preview.localhost"}, "access": "public"}],
            "log": {"level": "debug"},
        }
        if admin_listen:
            cfg["admin"]["listen"] = admin_listen
        return cfg

    def start(self, admin_listen=None):
        # The harness polls 127.0.0.1 for /healthz: elsewhere, wait here.
        gw = self.start_wakegate(self.config(admin_listen), args=["--role", "all"], wait=admin_listen is None)
        if admin_listen:
            gw.admin_host = admin_listen.rsplit(":", 1)[0]
        self.gw = gw
        gw.wait_log(r"startup reconciliation done", timeout=15)
        gw.wait_ready(timeout=15)
        return gw

    def api(self, method, path, body=None, auth=True, timeout=20):
        """(status, raw body bytes) from the admin API."""
        r = self.gw.admin(method, path, body=body, token=TOKEN if auth else None, timeout=timeout)
        return r.status, r.body

    def create(self, sid):
        st, raw = self.api("POST", "/v1/sessions", {"id": sid})
        assert st == 201, (st, raw)

    def record(self, sid):
        st, raw = self.api("GET", "/v1/sessions/" + sid)
        assert st == 200, (st, raw)
        return json.loads(raw)

    def ctl(self, *args, **kw):
        return ctl("--config", self.gw.config_path, *args, **kw)

    def stream_count(self):
        st, raw = self.api("GET", "/metrics", auth=False)
        m = re.search(rb"^wakegate_api_event_streams (\d+)$", raw, re.M)
        return int(m.group(1)) if m else None

    def doctor_containers(self):
        return self.dockerd.api_json("GET", "/containers/json", params={
            "all": "1", "filters": json.dumps({"label": ["wakegate.doctor=1"]})})


@pytest.fixture
def stack(redis_server, clean_engine, test_image, start_wakegate, e2e_tmp):
    assert test_image == IMAGE
    return CtlStack(redis_server, clean_engine, start_wakegate, tempfile.mkdtemp(prefix="ctl-", dir=e2e_tmp))


# ================================================================ ls, show

def test_ls_show_table_and_json(stack):
    gw = stack.start()
    stack.create("alpha")
    stack.create("bravo")
    # A save history and old activity written the way the store writes them.
    t = now_ms()
    stack.r.hset("wg:session:alpha", mapping={
        "save_at": str(t - 200_000), "save_ok": "1", "save_exit_code": "0",
        "save_commit": "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
        "save_output": "[main a1b2c3d] autosave\n 1 file changed", "last_active": str(t - 245_000)})
    stack.r.hset("wg:session:bravo", mapping={
        "save_at": str(t - 20_000), "save_ok": "0", "save_exit_code": "1",
        "save_output": "fatal: unable to access remote", "error": "save failed: exit 1"})

    p = stack.ctl("ls")
    assert p.returncode == 0, p.stderr
    names, rows = table(p.stdout)
    by_id = {r["ID"]: r for r in rows}
    assert sorted(by_id) == ["alpha", "bravo"], p.stdout
    a, b = by_id["alpha"], by_id["bravo"]
    assert a["STATE"] == "asleep" and a["HOST"] == HOST and a["IP"] == "-"
    assert re.fullmatch(r"4m0[5-9]s", a["IDLE"]), a
    assert re.fullmatch(r"ok [34]m ago a1b2c3d", a["LAST SAVE"]), a
    assert b["IDLE"] == "-"
    assert re.fullmatch(r"FAILED exit 1 2\ds ago", b["LAST SAVE"]), b

    # --json: the API's JSON as is.
    pj = stack.ctl("ls", "--json")
    assert pj.returncode == 0, pj.stderr
    st, raw = stack.api("GET", "/v1/sessions")
    assert st == 200
    assert json.loads(pj.stdout) == json.loads(raw)
    assert [s["id"] for s in json.loads(pj.stdout)] == ["alpha", "bravo"]

    p = stack.ctl("show", "alpha")
    assert p.returncode == 0, p.stderr
    kv = show_lines(p.stdout)
    assert kv["id"] == "alpha" and kv["state"] == "asleep" and kv["host"] == HOST
    assert kv["image"] == IMAGE
    assert re.fullmatch(r"ok [34]m ago a1b2c3d", kv["last save"]), p.stdout
    assert "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678" in p.stdout
    assert "    | [main a1b2c3d] autosave\n    |  1 file changed\n" in p.stdout
    p = stack.ctl("show", "bravo")
    kv = show_lines(p.stdout)
    assert kv["error"] == "save failed: exit 1", p.stdout
    assert "    | fatal: unable to access remote" in p.stdout
    pj = stack.ctl("show", "bravo", "--json")
    assert pj.returncode == 0
    assert json.loads(pj.stdout) == stack.record("bravo")

    # `wakegate ctl` is the same CLI.
    p = run([wakegate_bin(), "ctl", "--config", gw.config_path, "ls", "--json"])
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == json.loads(raw)


# ================================================================ wake, sleep, rm, events

def test_wake_sleep_rm_and_events(stack):
    stack.start()
    stack.create("s1")
    p = stack.ctl("wake", "s1")
    assert p.returncode == 0, p.stderr
    assert re.fullmatch(r"wake queued for s1 \(state asleep, command \d+-\d+\)\n", p.stdout), p.stdout

    p = stack.ctl("wake", "s1", "--wait", timeout=60)
    assert p.returncode == 0, p.stderr
    rec = stack.record("s1")
    assert rec["state"] == "running" and rec["ip"], rec
    assert p.stdout == "s1 is running at %s:8080\n" % rec["ip"]
    info = stack.dockerd.inspect(rec["container_id"])
    assert info["State"]["Running"] is True

    names, rows = table(stack.ctl("ls").stdout)
    row = [r for r in rows if r["ID"] == "s1"][0]
    assert row["STATE"] == "running" and row["IP"] == rec["ip"]
    assert re.fullmatch(r"\d+s", row["IDLE"]), row
    kv = show_lines(stack.ctl("show", "s1").stdout)
    assert kv["state"] == "running" and kv["address"] == "%s:8080" % rec["ip"]
    assert kv["container"] == rec["container_id"]

    p = stack.ctl("sleep", "s1", "--force", "--wait", timeout=60)
    assert p.returncode == 0, (p.stdout, p.stderr, stack.gw.log_tail(30))
    assert p.stdout == "s1 is asleep\n"
    assert stack.record("s1")["state"] == "asleep"
    assert stack.dockerd.inspect(rec["container_id"])["State"]["Running"] is False

    # Events without -f: the stored transitions, then exit.
    p = stack.ctl("events", timeout=30)
    assert p.returncode == 0, p.stderr
    mine = [l for l in p.stdout.splitlines() if re.match(r"^\S+Z\s+s1\s", l)]
    moves = [m for m in (re.split(r"\s{2,}", l)[2].split(" {")[0] for l in mine) if " -> " in m]
    # Exactly the transitions in wg:events, in order (the sleep may go
    # through draining and saving first, or straight to stopping).
    stored_moves = ["%s -> %s" % (f["from"] or "(new)", f["to"]) for _, f in stack.r.xrange("wg:events")
                    if f.get("id") == "s1" and f.get("type") == "transition"]
    assert moves == stored_moves, p.stdout
    for want in ("(new) -> creating", "creating -> asleep", "asleep -> starting", "starting -> running",
                 "stopping -> asleep"):
        assert want in moves, (want, p.stdout)
    assert moves.index("asleep -> starting") < moves.index("starting -> running") < moves.index("stopping -> asleep")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z  s1 ", mine[0]), mine[0]
    pj = stack.ctl("events", "--json", timeout=30)
    evs = [json.loads(l) for l in pj.stdout.splitlines()]
    assert [(e["from"], e["to"]) for e in evs if e["id"] == "s1" and e["type"] == "transition"][:2] == \
        [("", "creating"), ("creating", "asleep")]
    stored = stack.r.xrange("wg:events")
    assert len(evs) == len(stored)
    # --since a stream id: only what follows it.
    second_last = stored[-2][0]
    pj = stack.ctl("events", "--json", "--since", second_last, timeout=30)
    assert [json.loads(l) for l in pj.stdout.splitlines()] == [evs[-1]]

    p = stack.ctl("rm", "s1", "--force")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("destroy queued for s1")
    wait_for(lambda: stack.api("GET", "/v1/sessions/s1")[0] == 404, 15,
             lambda: "s1 to be gone; tail:\n" + stack.gw.log_tail(30), interval=0.05)
    p = stack.ctl("show", "s1")
    assert p.returncode == 5 and "404" in p.stderr and "no such session" in p.stderr


def test_events_follow_gets_a_live_event_and_exits_0_on_sigint(stack):
    stack.start()
    stack.create("f1")
    out = stack.tmp / "events.out"
    err = stack.tmp / "events.err"
    proc = REGISTRY.spawn("wakegatectl-events", [ctl_bin(), "--config", stack.gw.config_path, "events", "-f"],
                          stdout_path=out, stderr_path=err, env=ctl_env())
    def while_alive(pred):
        assert proc.poll() is None, err.read_text()
        return pred()

    try:
        wait_for(lambda: while_alive(lambda: stack.stream_count() == 1), 10, "the CLI's stream to open", interval=0.05)
        # Without --since, -f prints only new events: nothing yet.
        time.sleep(0.3)
        assert out.read_text() == ""
        st, raw = stack.api("POST", "/v1/sessions/f1/wake")
        assert st == 202, raw
        wait_for(lambda: while_alive(lambda: re.search(r"  f1\s+starting -> running", out.read_text())), 20,
                 lambda: "f1 starting -> running in:\n" + out.read_text(), interval=0.05)
        assert re.search(r"  f1\s+asleep -> starting", out.read_text())
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=5) == 0, err.read_text()
    finally:
        REGISTRY.stop(proc)
    no_sanitizer_reports(err.read_text())
    wait_for(lambda: stack.stream_count() == 0, 5, "the CLI's stream to close", interval=0.05)


def test_events_follow_resumes_after_a_gateway_restart(stack):
    gw = stack.start()
    stack.create("r1")
    out = stack.tmp / "events.out"
    err = stack.tmp / "events.err"
    proc = REGISTRY.spawn("wakegatectl-events", [ctl_bin(), "--config", gw.config_path, "events", "-f"],
                          stdout_path=out, stderr_path=err, env=ctl_env())
    try:
        wait_for(lambda: stack.stream_count() == 1, 10, lambda: "the CLI's stream to open; " + err.read_text(),
                 interval=0.05)
        assert stack.api("POST", "/v1/sessions/r1/wake")[0] == 202
        wait_for(lambda: "r1" in out.read_text() and "starting -> running" in out.read_text(), 20,
                 lambda: "r1 starting -> running in:\n" + out.read_text(), interval=0.05)
        assert gw.stop() == 0
        # Written while no gateway runs: the CLI must replay it after it
        # reconnects (Last-Event-ID), not skip it.
        stack.r.xadd("wg:events", {"id": "r1", "type": "note", "at": str(now_ms()), "detail": '{"while":"down"}'})
        wait_for(lambda: "reconnecting" in err.read_text(), 10, lambda: "reconnecting in:\n" + err.read_text(),
                 interval=0.05)
        stack.start(admin_listen="127.0.0.1:%d" % gw.admin_port)
        stack.create("r2")
        wait_for(lambda: re.search(r"  r2\s+\(new\) -> creating", out.read_text()), 20,
                 lambda: "r2 (new) -> creating in:\n%s\n%s" % (out.read_text(), err.read_text()), interval=0.05)
        text = out.read_text()
        assert re.search(r"  r1\s+note \{\"while\":\"down\"\}", text), text
        assert text.index("note") < text.index("  r2 ")
        assert len(re.findall(r"  r1\s+starting -> running", text)) == 1  # nothing printed twice
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=5) == 0, err.read_text()
    finally:
        REGISTRY.stop(proc)
    e = err.read_text()
    no_sanitizer_reports(e)
    assert e.count("reconnecting") == 1, e


def test_event_text_cannot_drive_the_terminal(stack):
    stack.start()
    # A hand-written entry (anyone with Redis access can add one).
    stack.r.xadd("wg:events", {"id": "evil\x1b[31m", "type": "transition", "from": "asleep",
                               "to": "starting\x07", "at": str(now_ms())})
    p = stack.ctl("events", timeout=30)
    assert p.returncode == 0, p.stderr
    assert "\x1b" not in p.stdout and "\x07" not in p.stdout
    assert "evil?[31m" in p.stdout and "asleep -> starting?" in p.stdout


# ================================================================ exit codes

def test_exit_codes(stack):
    gw = stack.start()
    cfg = gw.config_path
    # 5: no such session, on every verb.
    for args in (("show", "nope"), ("wake", "nope"), ("sleep", "nope", "--force"), ("rm", "nope")):
        p = stack.ctl(*args)
        assert p.returncode == 5, (args, p.returncode, p.stderr)
        assert "404 Not Found: no such session" in p.stderr and "/v1/sessions/nope" in p.stderr, p.stderr
    # 7: a wrong token, from the flag and from the environment.
    p = stack.ctl("--token", "wrong", "ls")
    assert p.returncode == 7 and "401" in p.stderr and "--token" in p.stderr, p.stderr
    p = stack.ctl("ls", env={"WAKEGATE_ADMIN_TOKEN": "wrong"})
    assert p.returncode == 7 and "WAKEGATE_ADMIN_TOKEN" in p.stderr, p.stderr
    # The right token by flag works even without the file.
    p = ctl("--admin", "http://127.0.0.1:%d" % gw.admin_port, "--token", TOKEN, "ls", "--json")
    assert p.returncode == 0 and json.loads(p.stdout) == [], p.stderr
    # 4: nobody at the admin address (flag and environment).
    port = free_port()
    p = stack.ctl("--admin", "127.0.0.1:%d" % port, "ls")
    assert p.returncode == 4 and "127.0.0.1:%d" % port in p.stderr, p.stderr
    p = stack.ctl("events", "-f", env={"WAKEGATE_ADMIN_URL": "http://127.0.0.1:%d" % port})
    assert p.returncode == 4, p.stderr
    # 2: usage.
    for args in ((), ("bogus",), ("show",), ("show", "Bad_ID"), ("show", "a" * 64), ("show", "a/b"),
                 ("ls", "--wait"), ("wake", "x", "--force"), ("ls", "extra"), ("ls", "--nope"),
                 ("events", "--since", "yesterday"), ("show", "x", "y"), ("--admin", "ftp://x", "ls")):
        p = stack.ctl(*args)
        assert p.returncode == 2, (args, p.returncode, p.stdout, p.stderr)
        assert p.stderr.startswith("wakegatectl: "), (args, p.stderr)
    # Usage errors are refused before any request: the gateway saw none.
    assert not [l for l in gw.log_lines() if "Bad_ID" in l]
    # 3: a configuration that does not load, named with file, line and key.
    bad = stack.tmp / "bad.yaml"
    bad.write_text("admin:\n  listen: 127.0.0.1:%d\n  tokn: x\n" % gw.admin_port)
    p = ctl("--config", bad, "ls")
    assert p.returncode == 3 and "%s:3" % bad in p.stderr and "tokn" in p.stderr, p.stderr
    p = ctl("ls", env={"WAKEGATE_CONFIG": str(stack.tmp / "missing.yaml")})
    assert p.returncode == 3 and "missing.yaml" in p.stderr, p.stderr
    # --help and --version: 0.
    assert ctl("--version").stdout.startswith("wakegatectl ")
    for args in (("--help",), ("help",), ("events", "--help"), ("help", "doctor")):
        p = ctl(*args)
        assert p.returncode == 0 and "Usage: wakegatectl" in p.stdout, args
    assert "Exit codes" in ctl("--help").stdout


def test_wait_that_the_api_refuses_is_exit_6(stack):
    """409 -> 6: the session is destroyed while `wake --wait` waits. The
    record belongs to a host no orchestrator serves, so the test plays that
    orchestrator through Redis, the way common/store.c writes."""
    stack.start()
    write_record(stack.r, "c1", "asleep", "elsewhere")
    out, err = stack.tmp / "wake.out", stack.tmp / "wake.err"
    proc = REGISTRY.spawn("wakegatectl-wake", [ctl_bin(), "--config", stack.gw.config_path, "wake", "c1", "--wait"],
                          stdout_path=out, stderr_path=err, env=ctl_env())
    try:
        # The command is queued for that host: the API now waits.
        wait_for(lambda: stack.r.xlen("wg:wake:elsewhere") == 1, 10, lambda: "the wake command; " + err.read_text(),
                 interval=0.05)
        time.sleep(0.2)
        assert proc.poll() is None, err.read_text()
        p = stack.r.pipeline(transaction=True)
        p.delete("wg:session:c1")
        p.srem("wg:sessions", "c1")
        p.publish("wg:state", json.dumps({"id": "c1", "state": "destroyed", "v": 2}))
        p.execute()
        assert proc.wait(timeout=10) == 6, (err.read_text(), stack.gw.log_tail(30))
    finally:
        REGISTRY.stop(proc)
    e = err.read_text()
    no_sanitizer_reports(e)
    assert "409 Conflict: session was destroyed while waiting" in e and "/v1/sessions/c1/wake?wait=1" in e, e
    assert out.read_text() == ""


# ================================================================ doctor

def doctor(stack, *extra, **kw):
    p = stack.ctl("doctor", *extra, timeout=90, **kw)
    lines = {}
    for line in p.stdout.splitlines():
        # "LEVEL  NAME              DETAIL": fixed columns.
        assert line[4:6] == "  " and line[23] == " ", line
        lines[line[6:23].strip()] = (line[:4].strip(), line[24:])
    return p, lines


CHECKS = ["config", "token", "admin healthz", "admin readyz", "admin token", "redis", "docker",
          "docker access", "isolation redis", "isolation admin"]


def session_network_gateway(stack):
    """Wake a session so that the default template's session network
    exists; its IPv4 gateway (the host as a session sees it)."""
    stack.create("dr-net")
    st, raw = stack.api("POST", "/v1/sessions/dr-net/wake?wait=1", timeout=40)
    assert st == 200, (st, raw)
    net = stack.dockerd.api_json("GET", "/networks/wakegate-default")
    return net["IPAM"]["Config"][0]["Gateway"]


def test_doctor_skips_the_probe_before_the_session_network_exists(stack):
    stack.start()
    p, lines = doctor(stack)
    assert p.returncode == 0, (p.stdout, p.stderr)
    for check in ("isolation redis", "isolation admin"):
        st, detail = lines[check]
        assert st == "SKIP" and "session network wakegate-default does not exist yet" in detail, p.stdout


def test_doctor_all_ok_and_json(stack):
    stack.start()
    gwip = session_network_gateway(stack)
    p, lines = doctor(stack)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert list(lines) == CHECKS, p.stdout
    assert all(v[0] == "OK" for v in lines.values()), p.stdout
    assert str(stack.gw.config_path) in lines["config"][1]
    assert "mode 0600" in lines["token"][1]
    assert "127.0.0.1:%d" % stack.redis_server.port in lines["redis"][1]
    assert "API %s" % stack.dockerd.api_version in lines["docker"][1]
    # Both listeners are on loopback; the probe, on the session network,
    # tried its gateway.
    assert "loopback" in lines["isolation redis"][1] and "%s:%d refused" % (gwip, stack.redis_server.port) in lines["isolation redis"][1]
    assert "loopback" in lines["isolation admin"][1] and "%s:%d refused" % (gwip, stack.gw.admin_port) in lines["isolation admin"][1]
    # The probe container is gone.
    assert stack.doctor_containers() == []
    pj, _ = stack.ctl("doctor", "--json", timeout=90), None
    assert pj.returncode == 0, pj.stderr
    arr = json.loads(pj.stdout)
    assert [c["check"] for c in arr] == CHECKS and {c["status"] for c in arr} == {"OK"}
    assert all(c["detail"] for c in arr)


def test_doctor_fails_when_redis_is_stopped(stack):
    stack.start()
    stack.redis_server.stop()
    try:
        p, lines = doctor(stack)
        assert p.returncode == 1, p.stdout
        assert lines["redis"][0] == "FAIL" and "cannot connect" in lines["redis"][1], p.stdout
        assert lines["admin readyz"][0] == "FAIL" and "redis" in lines["admin readyz"][1], p.stdout
        assert lines["config"][0] == "OK" and lines["docker"][0] == "OK" and lines["admin healthz"][0] == "OK"
    finally:
        stack.redis_server.start()


def test_doctor_fails_on_a_world_readable_token_file(stack):
    stack.start()
    os.chmod(stack.token_file, 0o644)
    p, lines = doctor(stack)
    assert p.returncode == 1
    assert lines["token"][0] == "FAIL" and "world-readable" in lines["token"][1] and "0644" in lines["token"][1]
    assert lines["admin token"][0] == "OK"  # the token itself still works


def test_doctor_fails_when_a_container_can_reach_the_admin_listener(stack):
    stack.start()
    gwip = session_network_gateway(stack)
    stack.gw.stop()
    port = free_port()
    stack.start(admin_listen="%s:%d" % (gwip, port))
    p, lines = doctor(stack)
    assert p.returncode == 1, p.stdout
    st, detail = lines["isolation admin"]
    assert st == "FAIL" and "%s:%d accepts connections from a session container" % (gwip, port) in detail, p.stdout
    # Redis is still on loopback: that one passes, as does the rest.
    assert lines["isolation redis"][0] == "OK"
    assert lines["admin healthz"][0] == "OK" and gwip in lines["admin healthz"][1]
    assert stack.doctor_containers() == []


def test_doctor_reports_a_config_that_does_not_load(stack):
    bad = stack.tmp / "bad.yaml"
    bad.write_text("redis:\n  url: 42:nope\n")
    p = ctl("--config", bad, "doctor")
    assert p.returncode == 1
    assert re.match(r"^FAIL\s+config\s+%s:2" % re.escape(str(bad)), p.stdout), p.stdout
