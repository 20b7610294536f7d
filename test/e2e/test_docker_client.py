"""orchestrator/docker against the real engine the harness starts.

The C driver test/e2e/tools/docker_probe (built by meson next to the binary)
runs a scripted sequence on the engine through the library and prints one
JSON object per step; these tests assert on every step. Failure paths use
real sockets too: a path where nothing exists, a socket nobody listens on, a
peer that accepts and never answers, and a TCP relay to the engine for the
tcp:// host form (name lookup included).

The probe runs under the sanitizers of its build; a report in its stderr, or
a loop that does not close cleanly at the end, fails the test.
"""

import errno
import ipaddress
import json
import os
import pathlib
import socket

import pytest

from docker_tls_util import TcpRelay, TlsRelay, make_tls_files
from harness import REGISTRY
from harness.dockerd import http_get_container
from harness.util import HarnessError, wait_for
from harness.wakegate import SANITIZER_MARKERS, wakegate_bin

pytestmark = pytest.mark.docker

SESSION_LABEL = "wakegate.session"


def probe_bin():
    p = os.environ.get("WAKEGATE_DOCKER_PROBE")
    path = pathlib.Path(p) if p else wakegate_bin().parent.parent / "test" / "e2e" / "tools" / "docker_probe"
    if not os.access(path, os.X_OK):
        raise HarnessError("%s not found: build with meson (it is test/e2e/tools/docker_probe in the build dir), "
                           "or set WAKEGATE_DOCKER_PROBE" % path)
    return path


class ProbeRun:
    def __init__(self, steps, lines, stderr):
        self.steps = steps
        self.lines = lines
        self.stderr = stderr

    def __getitem__(self, step):
        assert step in self.steps, "probe printed no step %r; stderr:\n%s" % (step, self.stderr[-3000:])
        return self.steps[step]


def probe_lines(out):
    """The probe's JSON lines so far (one object a step)."""
    return [json.loads(l) for l in out.read_text().splitlines() if l.strip()]


def run_probe(artifacts, name, *args, timeout=120):
    """Runs the probe to its end; returns its steps by name."""
    out = artifacts / ("docker-probe-%s.out" % name)
    err = artifacts / ("docker-probe-%s.err" % name)
    for f in (out, err):
        f.unlink(missing_ok=True)
    p = REGISTRY.spawn("docker_probe", [probe_bin(), *args], stdout_path=out, stderr_path=err)
    try:
        rc = p.wait(timeout=timeout)
    except Exception:
        REGISTRY.stop(p)
        raise
    REGISTRY.forget(p)
    stderr = err.read_text(errors="replace")
    lines = probe_lines(out)
    for marker in SANITIZER_MARKERS:
        assert marker not in stderr, "sanitizer report from the probe:\n" + stderr[-6000:]
    steps = {l["step"]: l for l in lines}
    assert rc == 0, "probe exited %d; stderr:\n%s\nstdout:\n%s" % (rc, stderr[-3000:], out.read_text()[-3000:])
    assert lines and lines[-1]["step"] == "end", lines[-3:]
    assert lines[-1]["loop_closed"] is True, "the probe's loop did not close cleanly"
    return ProbeRun(steps, lines, stderr)


def assert_ok(step, http=None):
    assert step["status"] == 0, step
    if http is not None:
        assert step["http"] == http, step


# ---------------------------------------------------------------- the whole life of a container

@pytest.fixture(scope="module")
def full_run(dockerd, test_image, artifacts):
    return run_probe(artifacts, "full", "full", dockerd.host, test_image)


def test_ping_negotiates_141(full_run, dockerd):
    ping = full_run["ping"]
    assert_ok(ping, 200)
    assert ping["api_version"] == "1.41"
    v = full_run["version"]
    assert_ok(v, 200)
    assert v["version"]["ApiVersion"] == "1.41"
    assert v["api_version"] == "1.41"


def test_create_and_inspect(full_run, dockerd, test_image):
    c = full_run["create"]
    assert_ok(c, 201)
    cid = c["id"]
    assert len(cid) == 64 and all(ch in "0123456789abcdef" for ch in cid)
    # The engine's own view of what we created: init, labels, env, port, cmd.
    created = full_run["inspect_created"]
    assert_ok(created, 200)
    assert created["container"]["state"] == "created"
    assert created["container"]["id"] == cid
    # The body as the engine stored it: test_created_container_as_the_engine_sees_it.


def test_create_same_name_conflicts(full_run):
    s = full_run["create_same_name"]
    assert s["status"] == 2 and s["http"] == 409, s  # WG_DOCKER_ECONFLICT
    assert "is already in use" in s["message"]
    assert s["error"].startswith("POST /v1.41/containers/create?name=wg-probe-")
    assert "409 Conflict." in s["error"]


def test_start_and_running_state(full_run, dockerd):
    assert_ok(full_run["start"], 204)
    again = full_run["start_again"]
    assert_ok(again, 304)  # already started counts as success
    r = full_run["inspect_running"]["container"]
    assert r["state"] == "running" and r["running"] is True and r["paused"] is False
    assert r["pid"] > 0
    assert r["started_ms"] > 1_600_000_000_000 and r["finished_ms"] == 0
    assert r["labels"][SESSION_LABEL].startswith("probe-")
    assert r["labels"]["wakegate.test"] == "probe"
    assert r["health"] is None
    # The address is on the harness's bridge.
    assert ipaddress.ip_address(r["ip"]) in ipaddress.ip_network(str(dockerd.subnet)), (r["ip"], dockerd.subnet)
    by_name = full_run["inspect_by_name"]["container"]
    assert by_name["id"] == full_run["create"]["id"]


def test_pause_unpause(full_run):
    assert_ok(full_run["pause"], 204)
    p = full_run["inspect_paused"]["container"]
    assert p["state"] == "paused" and p["paused"] is True
    again = full_run["pause_again"]
    assert again["status"] == 2 and again["http"] == 409, again
    assert "is already paused" in again["message"]
    assert_ok(full_run["unpause"], 204)


def test_exec_exit_code_and_output(full_run):
    hi = full_run["exec_hi"]
    assert_ok(hi)
    assert hi["exit_code"] == 3
    assert hi["output"] == "hi\n"
    assert hi["truncated"] is False

    both = full_run["exec_both"]
    assert_ok(both)
    assert both["exit_code"] == 0
    # stdout and stderr are both there, demultiplexed (no 8-byte headers).
    assert sorted(both["output"].splitlines()) == ["to-err", "to-out"]


def test_exec_output_keeps_the_tail(full_run):
    big = full_run["exec_big"]
    assert_ok(big)
    assert big["exit_code"] == 0
    assert big["truncated"] is True
    assert big["output_len"] == 64 * 1024
    assert big["output"].endswith("29999\n30000\n")
    assert "\x00" not in big["output"] and "\x01" not in big["output"]


def test_exec_transport_timeout(full_run):
    t = full_run["exec_timeout"]
    assert t["status"] == -errno.ETIMEDOUT, t
    assert t["ms"] < 2000, t
    assert "timed out after" in t["error"]
    assert t["output"] == "before-sleep\n"  # what it printed before the deadline


def test_exec_missing_binary(full_run):
    m = full_run["exec_missing"]
    assert_ok(m)
    assert m["exit_code"] in (126, 127)
    assert "no such file" in m["output"].lower()


def test_exec_on_stopped_container(full_run):
    s = full_run["exec_stopped"]
    assert s["status"] == 2 and s["http"] == 409, s
    assert "is not running" in s["message"]


def test_logs_tail(full_run):
    logs = full_run["logs"]
    assert_ok(logs, 200)
    assert sorted(logs["output"].splitlines()) == ["probe-err-line", "probe-log-line"]


def test_stop(full_run):
    stop = full_run["stop"]
    assert_ok(stop, 204)
    assert_ok(full_run["stop_again"], 304)
    e = full_run["inspect_exited"]["container"]
    assert e["state"] == "exited" and e["running"] is False
    # Created with an init, so SIGTERM ends it (128 + 15), not a SIGKILL at the 1 s timeout.
    assert e["exit_code"] == 143  # the init passes on SIGTERM's status
    assert e["finished_ms"] >= e["started_ms"] > 0
    assert e["ip"] == ""


def test_list_by_label(full_run):
    cid = full_run["create"]["id"]
    mine = full_run["list_session"]
    assert_ok(mine, 200)
    assert [c["id"] for c in mine["containers"]] == [cid]
    assert mine["containers"][0]["state"] == "exited"
    assert mine["containers"][0]["name"].startswith("wg-probe-")
    every = full_run["list_all"]
    assert cid in [c["id"] for c in every["containers"]]
    assert all(SESSION_LABEL in c["labels"] for c in every["containers"])


def test_remove_then_404(full_run):
    cid = full_run["create"]["id"]
    assert_ok(full_run["remove"], 204)
    for step, method, path in (("inspect_removed", "GET", "/v1.41/containers/%s/json" % cid),
                               ("remove_again", "DELETE", "/v1.41/containers/%s?force=1&v=1" % cid),
                               ("start_removed", "POST", "/v1.41/containers/%s/start" % cid)):
        s = full_run[step]
        assert s["status"] == 1 and s["http"] == 404, s  # WG_DOCKER_ENOTFOUND
        assert s["message"] == "No such container: %s" % cid
        assert s["error"] == "%s %s: 404 No such container: %s" % (method, path, cid)


def test_events_stream(full_run):
    cid = full_run["create"]["id"]
    assert full_run["events_start"]["rc"] == 0
    assert full_run["events_open"]["ok"] is True
    ev = full_run["events"]
    assert ev["ok"] is True, ev
    assert ev["opens"] == 1 and ev["ended"] is False
    mine = [e for e in ev["events"] if e["id"] == cid]
    # Only our session's container: the filter went to the engine.
    assert len(mine) == len(ev["events"])
    actions = [e["action"] for e in mine]
    for a in ("create", "start", "pause", "unpause", "die", "stop", "destroy"):
        assert a in actions, actions
    assert actions.index("start") < actions.index("pause") < actions.index("die") < actions.index("destroy")
    die = next(e for e in mine if e["action"] == "die")
    assert die["exit_code"] == 143
    assert die["session"].startswith("probe-")
    assert die["type"] == "container"
    exec_die = [e for e in mine if e["action"] == "exec_die"]
    assert 3 in [e["exit_code"] for e in exec_die]
    times = [e["time_ns"] for e in mine]
    assert times == sorted(times) and times[0] > 1_600_000_000 * 10**9


def test_events_since_replays(full_run):
    cid = full_run["create"]["id"]
    first = full_run["events"]["events"]
    ev = full_run["events_since"]
    assert ev["ok"] is True, ev
    replayed = [(e["action"], e["id"]) for e in ev["events"]]
    assert ("create", cid) in replayed and ("start", cid) in replayed
    assert replayed == [(e["action"], e["id"]) for e in first]


def test_refused_inputs(full_run):
    for step in ("bad_ref_start", "bad_ref_inspect", "bad_ref_empty", "bad_spec"):
        assert full_run[step]["rc"] == -errno.EINVAL, full_run[step]
    assert "session id" in full_run["bad_spec"]["err"]


def test_free_cancels_pending(full_run):
    f = full_run["free_pending"]
    assert f["inspect_done"] and f["exec_done"] and f["stream_ended"]
    assert f["inspect_status"] == f["exec_status"] == f["stream_status"] == -errno.ECANCELED


def test_nothing_left_behind(full_run, dockerd):
    cid = full_run["create"]["id"]
    assert dockerd.api("GET", "/containers/%s/json" % cid).status == 404


# ---------------------------------------------------------------- the create body, as the engine sees it

def test_created_container_as_the_engine_sees_it(dockerd, test_image, artifacts, e2e_tmp):
    """The probe creates and starts a container, then waits: the engine's own
    inspect shows what the create body asked for, and the app answers over
    the bridge. Then the probe stops and removes it."""
    out = artifacts / "docker-probe-up.out"
    err = artifacts / "docker-probe-up.err"
    gofile = pathlib.Path(e2e_tmp) / ("probe-go-%d" % os.getpid())
    for f in (out, err, gofile):
        f.unlink(missing_ok=True)
    p = REGISTRY.spawn("docker_probe", [probe_bin(), "up", dockerd.host, test_image, gofile],
                       stdout_path=out, stderr_path=err)
    try:
        def up():
            assert p.poll() is None, "probe exited early: %s" % err.read_text()[-3000:]
            steps = {l["step"]: l for l in probe_lines(out)}
            return steps if "inspect" in steps else None
        steps = wait_for(up, 60, "the probe to get the container running")
        assert_ok(steps["create"], 201)
        assert_ok(steps["start"], 204)
        cid = steps["create"]["id"]
        ours = steps["inspect"]["container"]

        info = dockerd.inspect(cid)
        assert info["HostConfig"]["Init"] is True
        assert info["HostConfig"]["Memory"] == 256 << 20
        assert info["Config"]["Tty"] is False and info["Config"]["OpenStdin"] is False
        assert "PROBE=1" in info["Config"]["Env"] and "EMPTY=" in info["Config"]["Env"]
        assert info["Config"]["Labels"][SESSION_LABEL] == "up-%d" % p.pid
        assert info["Config"]["Labels"]["wakegate.test"] == "probe"
        assert "8080/tcp" in info["Config"]["ExposedPorts"]
        assert info["Config"]["Cmd"][:2] == ["sh", "-c"]
        assert info["Config"]["Cmd"][2].endswith("exec httpd -f -p 8080 -h /www")
        # The library's parse agrees with the engine.
        assert ours["ip"] == info["NetworkSettings"]["IPAddress"] != ""
        assert ours["pid"] == info["State"]["Pid"]
        assert ours["state"] == info["State"]["Status"] == "running"

        status, body = http_get_container(ours["ip"], 8080, "/", timeout=10)
        assert status == 200 and b"wakegate test image" in body
    finally:
        gofile.touch()
        try:
            rc = p.wait(timeout=60)
        finally:
            REGISTRY.stop(p)
    stderr = err.read_text(errors="replace")
    for marker in SANITIZER_MARKERS:
        assert marker not in stderr, stderr[-6000:]
    steps = {l["step"]: l for l in probe_lines(out)}
    assert rc == 0, stderr[-3000:]
    assert_ok(steps["stop"], 204)
    assert_ok(steps["remove"], 204)
    assert steps["end"]["loop_closed"] is True
    assert dockerd.api("GET", "/containers/%s/json" % cid).status == 404


# ---------------------------------------------------------------- failure paths

def test_missing_container_404(dockerd, artifacts):
    r = run_probe(artifacts, "notfound", "notfound", dockerd.host)
    for step, method in (("start", "POST"), ("stop", "POST"), ("inspect", "GET"), ("pause", "POST"),
                         ("logs", "GET"), ("exec", "POST"), ("remove", "DELETE")):
        s = r[step]
        assert s["status"] == 1 and s["http"] == 404, s
        assert s["message"].startswith("No such container: wg-nonexistent-"), s
        assert s["error"].startswith("%s /v1.41/containers/wg-nonexistent-" % method), s
        assert s["error"].endswith(": 404 " + s["message"]), s


def test_socket_path_missing(e2e_tmp, artifacts):
    host = "unix://%s/no-such-dir/docker.sock" % e2e_tmp
    r = run_probe(artifacts, "nosock", "unreachable", host, timeout=20)
    pair = r["queued_pair"]
    assert pair["status_a"] == pair["status_b"] == -errno.ENOENT, pair
    assert "API version negotiation failed: GET /_ping: cannot connect to " + host in pair["error_a"]
    assert r["ping"]["status"] == -errno.ENOENT and r["ping"]["http"] == 0
    assert r["inspect"]["status"] == -errno.ENOENT
    assert r["events"]["status"] == -errno.ENOENT and r["events"]["opens"] == 0


def test_socket_nobody_listening(e2e_tmp, artifacts):
    path = os.path.join(e2e_tmp, "refused.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(path)  # bound, never listening: connect() is refused
        r = run_probe(artifacts, "refused", "unreachable", "unix://" + path, timeout=20)
    finally:
        s.close()
        os.unlink(path)
    assert r["ping"]["status"] == -errno.ECONNREFUSED, r["ping"]
    assert r["queued_pair"]["status_a"] == -errno.ECONNREFUSED
    assert r["events"]["status"] == -errno.ECONNREFUSED


def test_silent_engine_times_out(e2e_tmp, artifacts):
    path = os.path.join(e2e_tmp, "silent.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(path)
        s.listen(64)  # connections complete in the backlog; nothing is ever answered
        r = run_probe(artifacts, "silent", "unreachable", "unix://" + path,
                      "--timeout-ms", "300", "--connect-timeout-ms", "300", timeout=30)
    finally:
        s.close()
        os.unlink(path)
    assert r["ping"]["status"] == -errno.ETIMEDOUT, r["ping"]
    assert 250 <= r["ping"]["ms"] < 1500, r["ping"]
    assert r["queued_pair"]["status_a"] == -errno.ETIMEDOUT
    assert r["queued_pair"]["ms"] < 2500
    # The events stream has no timeout once open, but the negotiation ping does.
    assert r["events"]["status"] == -errno.ETIMEDOUT


def test_body_cap(dockerd, artifacts):
    r = run_probe(artifacts, "caps", "caps", dockerd.host, "--max-body", "64")
    assert_ok(r["ping"], 200)
    v = r["version"]
    assert v["status"] == -errno.EMSGSIZE, v
    assert "larger than 64 bytes" in v["message"]


# ---------------------------------------------------------------- tcp:// through a relay to the engine

@pytest.mark.parametrize("hostname", ["127.0.0.1", "localhost"])
def test_tcp_host(dockerd, artifacts, hostname):
    relay = TcpRelay(dockerd.sock)
    try:
        r = run_probe(artifacts, "tcp-" + hostname, "notfound", "tcp://%s:%d" % (hostname, relay.port), timeout=30)
    finally:
        relay.stop()
    s = r["start"]
    assert s["status"] == 1 and s["http"] == 404, s
    assert s["api_version"] == "1.41"
    assert s["message"].startswith("No such container: ")
    # Keep-alive: the seven calls and the ping share few connections.
    assert 1 <= relay.conns <= 3, relay.conns


# ---------------------------------------------------------------- tcp:// with TLS through a relay

@pytest.fixture(scope="module")
def tls_files(e2e_tmp):
    """A CA, a server certificate for localhost/127.0.0.1, a client certificate,
    and a second CA that signed nothing of ours."""
    return make_tls_files(pathlib.Path(e2e_tmp) / "tls")


def test_tls_host(dockerd, artifacts, tls_files):
    relay = TlsRelay(dockerd.sock, tls_files)
    f = tls_files
    try:
        good = run_probe(artifacts, "tls", "notfound", "tcp://localhost:%d" % relay.port, "--tls",
                         "--tls-ca", f / "ca.pem", "--tls-cert", f / "client.pem", "--tls-key", f / "client.key",
                         timeout=30)
        # The engine's certificate is not signed by the CA we trust: refused
        # before any request is sent.
        wrong_ca = run_probe(artifacts, "tls-wrong-ca", "unreachable", "tcp://localhost:%d" % relay.port, "--tls",
                             "--tls-ca", f / "other-ca.pem", "--tls-cert", f / "client.pem",
                             "--tls-key", f / "client.key", timeout=30)
        skip = run_probe(artifacts, "tls-skip-verify", "notfound", "tcp://127.0.0.1:%d" % relay.port, "--tls",
                         "--tls-skip-verify", "--tls-cert", f / "client.pem", "--tls-key", f / "client.key",
                         timeout=30)
    finally:
        relay.stop()
    s = good["start"]
    assert s["status"] == 1 and s["http"] == 404, s
    assert s["message"].startswith("No such container: ") and s["api_version"] == "1.41"
    for step in ("ping", "inspect"):
        w = wrong_ca[step]
        assert w["status"] == -errno.EPROTO, w
        assert "TLS with tcp://localhost:%d: SSL certificate problem" % relay.port in w["message"], w
    assert skip["inspect"]["status"] == 1 and skip["inspect"]["http"] == 404, skip["inspect"]


# ---------------------------------------------------------------- latencies on the real engine

def test_call_latencies(dockerd, test_image, artifacts):
    """Five rounds of create, start, pause, unpause, stop (-t 1), remove, all
    answered with success. Each is timed from call to callback; the medians
    land in test-artifacts/docker-latency.json, for reading, not asserted
    (speed is bench/'s business)."""
    r = run_probe(artifacts, "cycles5", "cycles", dockerd.host, test_image, "5")
    c = r["cycles"]
    medians = {op: round(c[op + "_median"], 1) for op in ("create", "start", "pause", "unpause", "stop", "remove")}
    (artifacts / "docker-latency.json").write_text(json.dumps({"medians_ms": medians, "runs_ms": {
        op: [round(t, 1) for t in c[op]] for op in medians}}, indent=2) + "\n")
    print("docker call medians (ms):", medians)
    for op in medians:
        assert all(t >= 0 for t in c[op]), (op, c[op])  # -1: the call failed
