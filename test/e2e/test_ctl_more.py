"""End-to-end: the CLI's commands beyond ls/show/wake/sleep/rm/events/doctor
- create, keepalive, logs, exec - `show` with the spec and a failed
session's log tail, `--json` on each, and the bash completion script,
against the real gateway (role all), a real redis-server and the harness's
private dockerd with the busybox test image.

The CLI is the wakegatectl next to WAKEGATE_BIN, given the gateway's own
configuration file (test_ctl.CtlStack). Every assertion is on what the CLI
printed or its exit code, checked against the API, Redis (wg:events) or the
engine. Every wait is bounded.
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

from bus_util import write_record
from harness.procs import REGISTRY
from harness.util import now_ms, wait_for
from test_ctl import HOST, IMAGE, TOKEN, CtlStack, ctl_bin, ctl_env, no_sanitizer_reports, show_lines

pytestmark = pytest.mark.docker

READ_TOKEN = "ctl-read-t0ken"
REPO = pathlib.Path(__file__).resolve().parents[2]
COMPLETION = REPO / "scripts" / "completion" / "wakegatectl.bash"

# A command for the busybox image: lines on stdout and stderr, then the
# usual httpd on 8080 (the readiness port).
HTTPD = "exec /bin/busybox httpd -f -p 8080 -h /www"


class MoreStack(CtlStack):
    """CtlStack with a read-only token too."""

    def __init__(self, *a):
        super().__init__(*a)
        self.read_token_file = self.tmp / "read.token"
        self.read_token_file.write_text(READ_TOKEN + "\n")
        os.chmod(self.read_token_file, 0o600)

    def config(self, admin_listen=None):
        cfg = super().config(admin_listen)
        cfg["admin"]["read_token_file"] = str(self.read_token_file)
        cfg["sessions"]["binds"] = {"allow": [str(self.tmp) + "/"]}
        return cfg

    def events(self, sid, etype):
        return [f for _, f in self.r.xrange("wg:events") if f.get("id") == sid and f.get("type") == etype]


@pytest.fixture
def stack(redis_server, clean_engine, test_image, start_wakegate, e2e_tmp):
    assert test_image == IMAGE
    return MoreStack(redis_server, clean_engine, start_wakegate, tempfile.mkdtemp(prefix="ctlm-", dir=e2e_tmp))


def running(stack, sid, *cmd):
    """create SID --wait -- CMD...: the session runs; its record."""
    p = stack.ctl("create", sid, "--wait", *(("--",) + cmd if cmd else ()), timeout=60)
    assert p.returncode == 0, (p.stdout, p.stderr, stack.gw.log_tail(30))
    rec = stack.record(sid)
    assert rec["state"] == "running", rec
    return rec


# ================================================================ create, show

def test_create_with_a_spec_and_show_it_without_env_values(stack):
    stack.start()
    data = stack.tmp / "c1-data"
    data.mkdir()
    bind = "%s:/data:ro" % data
    p = stack.ctl("create", "c1", "--image", IMAGE, "--port", "8080", "--env", "GREETING=hello",
                  "--env", "API_KEY=hunter2-secret", "--label", "team=infra", "--label", "tier=dev",
                  "--bind", bind, "--idle-pause-after", "1m", "--idle-stop-after", "10m",
                  "--", "/bin/sh", "-c", "echo started; " + HTTPD)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "created c1 (template default, image %s, state asleep)\n" % IMAGE
    rec = stack.record("c1")
    assert rec["state"] == "asleep" and rec["port"] == 8080
    assert rec["idle"] == {"pause_after_ms": 60000, "stop_after_ms": 600000}
    # The API shows the spec, env as names only.
    assert rec["spec"]["cmd"] == ["/bin/sh", "-c", "echo started; " + HTTPD]
    assert rec["spec"]["env"] == ["GREETING", "API_KEY"]
    assert rec["spec"]["labels"] == {"team": "infra", "tier": "dev"}
    assert rec["spec"]["binds"] == [bind]
    # Redis holds the values (the container needs them); the API does not
    # give them to anyone.
    assert "hunter2-secret" in stack.r.hget("wg:session:c1", "spec")

    p = stack.ctl("show", "c1")
    assert p.returncode == 0, p.stderr
    kv = show_lines(p.stdout)
    assert kv["template"] == "default"
    assert kv["command"] == json.dumps(rec["spec"]["cmd"], separators=(",", ":"))
    assert kv["env"] == "GREETING, API_KEY (values not shown)"
    assert kv["labels"] == "team=infra, tier=dev"
    assert kv["binds"] == bind
    assert kv["idle policy"] == "pause after 1m00s, stop after 10m00s"
    assert kv["limits"] == "the template's" and kv["save hook"] == "the template's"
    assert kv["address"] == "- (port 8080)"
    for args in (("show", "c1"), ("show", "c1", "--json"), ("ls", "--json")):
        out = stack.ctl(*args)
        assert out.returncode == 0 and "hunter2" not in out.stdout, (args, out.stdout)
    # Nor to the read-only token.
    st, raw = stack.api("GET", "/v1/sessions/c1")
    assert st == 200 and b"hunter2" not in raw
    pj = stack.ctl("--token", READ_TOKEN, "show", "c1", "--json")
    assert pj.returncode == 0 and json.loads(pj.stdout) == rec and "hunter2" not in pj.stdout

    # The values did reach the container.
    p = stack.ctl("wake", "c1", "--wait", timeout=60)
    assert p.returncode == 0, p.stderr
    p = stack.ctl("exec", "c1", "--", "/bin/sh", "-c", 'echo "$API_KEY"')
    assert p.returncode == 0 and p.stdout == "hunter2-secret\n", (p.stdout, p.stderr)

    # --json: the API's record.
    pj = stack.ctl("create", "c2", "--json")
    assert pj.returncode == 0, pj.stderr
    j = json.loads(pj.stdout)
    assert j["id"] == "c2" and j["state"] == "asleep" and j["spec"] == {}
    assert j == stack.record("c2")


def test_create_refusals_and_usage(stack):
    gw = stack.start()
    assert stack.ctl("create", "e1").returncode == 0
    # An id that exists: the API's 200 (record unchanged) is exit 6.
    before = stack.record("e1")
    p = stack.ctl("create", "e1", "--env", "X=1")
    assert p.returncode == 6 and "exists" in p.stderr, (p.returncode, p.stderr)
    assert stack.record("e1") == before
    pj = stack.ctl("create", "e1", "--json")
    assert pj.returncode == 6 and json.loads(pj.stdout)["id"] == "e1"
    # The API's 400 names the field: exit 2, nothing created.
    p = stack.ctl("create", "e2", "--template", "nope")
    assert p.returncode == 2 and "400" in p.stderr and "template" in p.stderr, p.stderr
    p = stack.ctl("create", "e2", "--idle-pause-after", "1h", "--idle-stop-after", "1m")
    assert p.returncode == 2 and "idle.pause_after" in p.stderr, p.stderr
    p = stack.ctl("create", "e2", "--label", "wakegate.session=x")
    assert p.returncode == 2 and "labels" in p.stderr, p.stderr
    assert stack.api("GET", "/v1/sessions/e2")[0] == 404
    # The read-only token cannot create: 7.
    p = stack.ctl("--token", READ_TOKEN, "create", "e3")
    assert p.returncode == 7 and "403" in p.stderr, p.stderr
    # Usage, refused before any request.
    for args in (("create",), ("create", "Bad"), ("create", "e4", "--env", "NOEQUALS"),
                 ("create", "e4", "--env", "=v"), ("create", "e4", "--label", "x"),
                 ("create", "e4", "--port", "0"), ("create", "e4", "--port", "http"),
                 ("create", "e4", "-f"), ("create", "e4", "--tail", "3"),
                 ("show", "e1", "--env", "A=1"), ("ls", "--", "x"), ("wake", "e1", "--", "sh"),
                 ("keepalive", "e1"), ("keepalive", "e1", "1m", "x"),
                 ("logs", "e1", "--tail", "-1"), ("logs", "e1", "--tail", "many"),
                 ("logs", "e1", "--wait"), ("exec", "e1"), ("exec", "e1", "--"), ("exec", "e1", "ls")):
        p = stack.ctl(*args)
        assert p.returncode == 2, (args, p.returncode, p.stdout, p.stderr)
        assert p.stderr.startswith("wakegatectl: "), (args, p.stderr)
    assert stack.api("GET", "/v1/sessions/e4")[0] == 404
    for cmd in ("create", "keepalive", "logs", "exec"):
        p = stack.ctl(cmd, "--help")
        assert p.returncode == 0 and ("Usage: wakegatectl [OPTIONS] " + cmd) in p.stdout, (cmd, p.stdout)
        assert cmd in stack.ctl("--help").stdout


def test_create_wait_runs_it(stack):
    stack.start()
    p = stack.ctl("create", "w1", "--wait", timeout=60)
    assert p.returncode == 0, (p.stderr, stack.gw.log_tail(30))
    rec = stack.record("w1")
    assert rec["state"] == "running" and p.stdout == "w1 is running at %s:8080\n" % rec["ip"]
    assert stack.dockerd.inspect(rec["container_id"])["State"]["Running"] is True
    pj = stack.ctl("create", "w2", "--wait", "--json", timeout=60)
    assert pj.returncode == 0, pj.stderr
    j = json.loads(pj.stdout)
    assert j["id"] == "w2" and j["state"] == "running" and j["ip"]
    # A session that cannot start: create succeeds, the wait fails (exit 1).
    p = stack.ctl("create", "w3", "--wait", "--", "/bin/sh", "-c", "exit 3", timeout=90)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "502" in p.stderr, p.stderr
    assert stack.record("w3")["state"] == "failed"


# ================================================================ keepalive

def test_keepalive(stack):
    stack.start()
    stack.create("k1")
    # Asleep: not awake, exit 6, nothing changed.
    p = stack.ctl("keepalive", "k1", "10m")
    assert p.returncode == 6 and "409" in p.stderr and "not awake" in p.stderr, p.stderr
    assert stack.r.zscore("wg:active", "k1") is None
    running(stack, "k2")
    t0 = now_ms()
    p = stack.ctl("keepalive", "k2", "10m")
    assert p.returncode == 0, p.stderr
    score = stack.r.zscore("wg:active", "k2")
    assert t0 + 600_000 <= score <= now_ms() + 600_000, score
    m = re.fullmatch(r"k2 kept alive until (\S+) \(in (9m5\ds|10m00s), state running\)\n", p.stdout)
    assert m, p.stdout
    assert time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(score / 1000)) == m.group(1)
    pj = stack.ctl("keepalive", "k2", "1h", "--json")
    assert pj.returncode == 0, pj.stderr
    j = json.loads(pj.stdout)
    assert j["id"] == "k2" and j["state"] == "running" and j["keepalive_until"] == stack.r.zscore("wg:active", "k2")
    # A bad duration is the API's 400: exit 2; a missing session 5.
    p = stack.ctl("keepalive", "k2", "forever")
    assert p.returncode == 2 and "400" in p.stderr and "duration" in p.stderr, p.stderr
    p = stack.ctl("keepalive", "k2", "25h")
    assert p.returncode == 2 and "24h" in p.stderr, p.stderr
    assert stack.ctl("keepalive", "nobody", "1m").returncode == 5
    assert stack.ctl("--token", READ_TOKEN, "keepalive", "k2", "1m").returncode == 7


# ================================================================ logs

def test_logs_split_streams_tail_json(stack):
    stack.start()
    rec = running(stack, "l1", "/bin/sh", "-c",
                  "echo err-1 >&2; sleep 0.5; echo out-1; echo out-2; printf 'esc\\033[31m\\n'; " + HTTPD)
    p = stack.ctl("logs", "l1")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "out-1\nout-2\nesc?[31m\n", p.stdout
    assert p.stderr == "err-1\n", p.stderr
    # --tail: the last lines of the two streams together (the stderr line
    # came half a second before the others).
    p = stack.ctl("logs", "l1", "--tail", "2")
    assert p.returncode == 0 and p.stdout == "out-2\nesc?[31m\n" and p.stderr == "", (p.stdout, p.stderr)
    pj = stack.ctl("logs", "l1", "--json")
    assert pj.returncode == 0, pj.stderr
    lines = [json.loads(l) for l in pj.stdout.splitlines()]
    # Each stream in order (the engine may interleave the two either way);
    # JSON escapes the control byte, so it is kept as is.
    assert [l["line"] for l in lines if l["stream"] == "stdout"] == ["out-1", "out-2", "esc\x1b[31m"], lines
    assert [l["line"] for l in lines if l["stream"] == "stderr"] == ["err-1"], lines
    assert len(lines) == 4 and "\x1b" not in pj.stdout
    # The engine is this configuration's: the container really is the record's.
    assert stack.dockerd.inspect(rec["container_id"])["State"]["Running"] is True


def test_logs_follow_until_sigint(stack):
    stack.start()
    running(stack, "f1", "/bin/sh", "-c",
            "(i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.2; done) & " + HTTPD)
    out = stack.tmp / "logs.out"
    err = stack.tmp / "logs.err"
    proc = REGISTRY.spawn("wakegatectl-logs", [ctl_bin(), "--config", stack.gw.config_path, "logs", "f1", "-f",
                                               "--tail", "0"],
                          stdout_path=out, stderr_path=err, env=ctl_env())
    try:
        # --tail 0: only lines written after it started, and they keep coming.
        wait_for(lambda: len(re.findall(r"tick-\d+", out.read_text())) >= 3, 20,
                 lambda: "three ticks in:\n%s\n%s" % (out.read_text(), err.read_text()), interval=0.1)
        assert proc.poll() is None
        ticks = [int(n) for n in re.findall(r"tick-(\d+)", out.read_text())]
        assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), ticks
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=5) == 0, err.read_text()
    finally:
        REGISTRY.stop(proc)
    no_sanitizer_reports(err.read_text())


def test_logs_refusals(stack):
    stack.start()
    stack.create("a1")
    # Asleep, never woken: no container.
    p = stack.ctl("logs", "a1")
    assert p.returncode == 6 and "has no container" in p.stderr, p.stderr
    # Owned by another Docker host: named, exit 6, the engine not asked.
    write_record(stack.r, "o1", "running", "other-host", container_id="ab" * 32, ip="10.9.9.9", port="8080")
    p = stack.ctl("logs", "o1")
    assert p.returncode == 6, (p.returncode, p.stderr)
    assert "'other-host'" in p.stderr and "'%s'" % HOST in p.stderr, p.stderr
    p = stack.ctl("exec", "o1", "--", "true")
    assert p.returncode == 6 and "'other-host'" in p.stderr, p.stderr
    assert stack.events("o1", "exec") == []
    # Ours, but the container is gone from the engine: Docker's 404 is 5.
    write_record(stack.r, "g1", "asleep", HOST, container_id="cd" * 32)
    p = stack.ctl("logs", "g1")
    assert p.returncode == 5 and "404" in p.stderr, p.stderr
    assert stack.ctl("logs", "nobody").returncode == 5


# ================================================================ exec

def test_exec_output_exit_status_and_events(stack):
    stack.start()
    rec = running(stack, "x1")
    p = stack.ctl("exec", "x1", "--", "/bin/sh", "-c", "echo to-out; echo to-err >&2; exit 3")
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    assert p.stdout == "to-out\n" and p.stderr == "to-err\n", (p.stdout, p.stderr)
    # Recorded: the command before it ran, its status after.
    ex = stack.events("x1", "exec")
    assert len(ex) == 1, ex
    d = json.loads(ex[0]["detail"])
    assert d["cmd"] == ["/bin/sh", "-c", "echo to-out; echo to-err >&2; exit 3"]
    assert d["container"] == rec["container_id"] and d["from"] == "api" and d["user"]
    done = stack.events("x1", "exec_exit")
    assert len(done) == 1 and json.loads(done[0]["detail"])["exit_code"] == 3, done
    ids = [i for i, f in stack.r.xrange("wg:events") if f.get("id") == "x1" and f.get("type", "").startswith("exec")]
    assert len(ids) == 2
    # `events` prints them.
    p = stack.ctl("events", timeout=30)
    assert re.search(r"  x1\s+exec \{\"cmd\":\[\"/bin/sh\"", p.stdout), p.stdout
    assert re.search(r"  x1\s+exec_exit \{\"exit_code\":3,", p.stdout), p.stdout
    # Options after -- belong to the command.
    p = stack.ctl("exec", "x1", "--", "/bin/busybox", "echo", "--json", "-f")
    assert p.returncode == 0 and p.stdout == "--json -f\n", (p.stdout, p.stderr)
    # --json: the output as lines, then the status.
    pj = stack.ctl("--json", "exec", "x1", "--", "/bin/sh", "-c", "echo a; echo b >&2; exit 0")
    assert pj.returncode == 0, pj.stderr
    objs = [json.loads(l) for l in pj.stdout.splitlines()]
    # The two streams in either order (the engine copies each on its own).
    assert sorted(objs[:2], key=lambda o: o["stream"]) == [{"stream": "stderr", "line": "b"},
                                                             {"stream": "stdout", "line": "a"}], objs
    assert objs[2]["id"] == "x1" and objs[2]["exit_code"] == 0 and re.fullmatch(r"[0-9a-f]{64}", objs[2]["exec_id"])
    assert objs[2]["event_id"] in [i for i, f in stack.r.xrange("wg:events") if f.get("type") == "exec"]
    # A command the engine cannot start: Docker's status 126/127 style exit, recorded.
    p = stack.ctl("exec", "x1", "--", "/no/such/program")
    code = json.loads(stack.events("x1", "exec_exit")[-1]["detail"])["exit_code"]
    assert p.returncode == code and code in (126, 127), (p.returncode, code, p.stderr)


def test_exec_is_not_run_when_it_cannot_be_recorded(stack):
    stack.start()
    running(stack, "n1")
    # The read-only token reads the record but may not write the event:
    # exit 7, and the command did not run.
    p = stack.ctl("--token", READ_TOKEN, "exec", "n1", "--", "/bin/sh", "-c", "touch /tmp/ran")
    assert p.returncode == 7 and "403" in p.stderr and "not run" in p.stderr, p.stderr
    assert stack.events("n1", "exec") == []
    p = stack.ctl("exec", "n1", "--", "/bin/sh", "-c", "test -e /tmp/ran")
    assert p.returncode == 1, (p.returncode, p.stderr)
    # Not running: refused before anything, exit 6.
    stack.create("n2")
    p = stack.ctl("exec", "n2", "--", "true")
    assert p.returncode == 6 and "asleep" in p.stderr, p.stderr
    assert stack.events("n2", "exec") == []


def test_events_route_refusals(stack):
    stack.start()
    stack.create("v1")
    def post(sid, body, token=TOKEN):
        r = stack.gw.admin("POST", "/v1/sessions/%s/events" % sid, body=body, token=token, timeout=20)
        return r.status, json.loads(r.body) if r.body else None
    ok = {"type": "exec", "detail": {"cmd": ["true"]}}
    st, j = post("v1", ok)
    assert st == 201 and j["id"] == "v1" and j["type"] == "exec" and re.fullmatch(r"\d+-\d+", j["event_id"]), j
    assert json.loads(stack.events("v1", "exec")[0]["detail"]) == {"cmd": ["true"], "from": "api"}
    for body, word in (({"type": "transition", "detail": {}}, "type"), ({"type": "save", "detail": {}}, "type"),
                       ({"type": "exec", "detail": {}}, "detail.cmd"),
                       ({"type": "exec", "detail": {"cmd": ["x"], "to": "running"}}, "detail.to"),
                       ({"type": "exec_exit", "detail": {"exit_code": "0"}}, "exit_code"),
                       ({"type": "exec", "detail": {"cmd": ["x"], "container": "../x"}}, "container"),
                       ({"type": "exec", "detail": {"cmd": []}}, "cmd"), ({"type": "exec"}, "detail"),
                       ({"type": "exec", "detail": {"cmd": ["x"]}, "extra": 1}, "extra")):
        st, j = post("v1", body)
        assert st == 400 and word in j["error"], (body, st, j)
    assert post("nobody", ok)[0] == 404
    assert post("v1", ok, token=READ_TOKEN)[0] == 403
    assert post("v1", ok, token=None)[0] == 401
    assert len(stack.events("v1", "exec")) == 1


# ================================================================ show: a failed session's log tail

def test_show_prints_a_failed_sessions_log_tail(stack):
    stack.start()
    p = stack.ctl("create", "d1", "--wait", "--", "/bin/sh", "-c",
                  "echo boom-line-1; echo boom-line-2 >&2; exit 4", timeout=90)
    assert p.returncode == 1, (p.stdout, p.stderr)
    rec = stack.record("d1")
    assert rec["state"] == "failed" and rec["error"], rec
    p = stack.ctl("show", "d1", timeout=30)
    assert p.returncode == 0, p.stderr
    kv = show_lines(p.stdout)
    assert kv["error"] == rec["error"]
    assert kv["log tail"].startswith("the container's last lines, in its failure event of "), p.stdout
    assert "    | boom-line-1\n" in p.stdout and "    | boom-line-2\n" in p.stdout, p.stdout
    # The same lines the event carries.
    failed = [f for f in stack.events("d1", "transition") if f.get("to") == "failed"]
    assert "boom-line-1" in json.loads(failed[-1]["detail"])["logs"]
    # A session that did not fail has no such line.
    stack.create("d2")
    assert "log tail" not in show_lines(stack.ctl("show", "d2").stdout)


# ================================================================ bash completion

def complete(stack, line, env=None):
    """COMPREPLY of the completion function for `line` (the cursor at its
    end), with the CLI's directory on PATH."""
    words = line.split(" ")
    script = ('source "%s"; COMP_WORDS=(%s); COMP_CWORD=%d; COMP_LINE=%s; COMP_POINT=${#COMP_LINE}; '
              '_wakegatectl; printf "%%s\\n" "${COMPREPLY[@]}"') % (
        COMPLETION, " ".join("'%s'" % w for w in words), len(words) - 1, "'%s'" % line)
    e = ctl_env(env)
    e["PATH"] = "%s:%s" % (ctl_bin().parent, e.get("PATH", "/usr/bin:/bin"))
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], env=e, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return [l for l in p.stdout.splitlines() if l]


def test_bash_completion(stack):
    assert COMPLETION.is_file()
    gw = stack.start()
    stack.create("alpha")
    stack.create("alps")
    stack.create("bravo")
    cfg = str(gw.config_path)
    cmds = set(complete(stack, "wakegatectl "))
    assert {"ls", "show", "wake", "sleep", "rm", "events", "doctor", "create", "keepalive", "logs",
            "exec", "help"} <= cmds, cmds
    assert complete(stack, "wakegatectl ke") == ["keepalive"]
    # Session ids from `ls --json`, with the options given on the line.
    assert sorted(complete(stack, "wakegatectl --config %s show al" % cfg)) == ["alpha", "alps"]
    assert sorted(complete(stack, "wakegatectl logs b", env={"WAKEGATE_CONFIG": cfg})) == ["bravo"]
    # Flags of the command.
    assert set(complete(stack, "wakegatectl --config %s logs alpha -" % cfg)) >= {"-f", "--tail", "--json"}
    assert "--tail" not in complete(stack, "wakegatectl --config %s show alpha --" % cfg)
    assert set(complete(stack, "wakegatectl create x --") ) >= {"--template", "--env", "--wait", "--image"}
    # No gateway: no ids, no error.
    assert complete(stack, "wakegatectl --admin 127.0.0.1:1 show a") == []
