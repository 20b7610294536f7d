"""End-to-end: the orchestrator runtime (orchestrator/orch, waker, reconcile,
probe) of the real binary against a real redis-server and the harness's
private dockerd, with the FROM-scratch busybox test images.

The tests play the admin API and the gateways through Redis: a record is
written the way wg_store_create() + the move to asleep leave it (see
make_record), and wakes are XADDed to wg:wake:h1 the way wg_store_wake_add()
writes them. Every assertion is on a real outcome: the record in Redis, the
events in wg:events, the container in Docker, an HTTP answer from the
container, the engine's own event log.

Wake timings (command -> running, and the orchestrator's own phase split
from its "session ready" log line) are printed and saved to
test-artifacts/e2e/orchestrator-timings.json.
"""

import json
import re
import threading
import time

import pytest
import redis

from harness import build_image
from harness.dockerd import http_get_container
from harness.util import now_ms, wait_for
from stack_util import GROUP, HOST, IMAGE, WAKE_KEY, OrchEnv, Timings, orch_config

pytestmark = pytest.mark.docker

# orchestrator/orch.h WG_ORCH_STUCK_SCAN_EVERY_MS
WG_STUCK_SCAN_S = 5.0
SLOW_HEALTH_IMAGE = "wakegate-test-slowhealth:latest"
record_timing = Timings("orchestrator-timings.json").record


# ---------------------------------------------------------------- helpers

def metric_value(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError("no metric %s in:\n%s" % (name, text[:3000]))


@pytest.fixture
def env(redis_server, clean_engine, test_image, start_wakegate):
    # The engine is shared by the whole session: clean_engine starts from no
    # containers so nothing of another test is adopted here.
    return OrchEnv(redis_server, clean_engine, start_wakegate, orch_config(redis_server.url, clean_engine))


def wake_to_running(env, sid, **rec):
    env.make_record(sid, **rec)
    t0 = time.monotonic()
    env.wake(sid)
    got, _ = env.wait_state(sid, ("running", "failed"), timeout=15)
    assert got["state"] == "running", got
    return got, time.monotonic() - t0


# ---------------------------------------------------------------- wake

def test_wake_creates_starts_and_publishes_running(env):
    gw = env.start()
    status, body = env.get("/readyz")
    assert status == 200, body
    hb = json.loads(env.r.get("wg:host:" + HOST))
    assert hb["name"] == HOST and hb["max_concurrent_starts"] == 8 and hb["starts_in_flight"] == 0
    assert 0 < env.r.pttl("wg:host:" + HOST) <= 10000

    spec = {"env": ["GREETING=hello"], "labels": {"team": "e2e"}}
    rec, waited = wake_to_running(env, "s-wake", spec=spec)
    assert rec["ip"] and rec["port"] == "8080" and len(rec["container_id"]) == 64
    assert rec.get("restarts", "0") == "0" and "error" not in rec
    status, body = http_get_container(rec["ip"], 8080, "/", timeout=5)
    assert status == 200 and b"wakegate test image" in body

    c = env.dockerd.inspect(rec["container_id"])
    assert c["Name"] == "/wg-s-wake"
    assert c["Config"]["Labels"]["wakegate.session"] == "s-wake"
    assert c["Config"]["Labels"]["wakegate.port"] == "8080"
    assert c["Config"]["Labels"]["team"] == "e2e"
    assert "GREETING=hello" in c["Config"]["Env"]
    assert c["HostConfig"]["Init"] is True
    assert c["State"]["Running"] is True

    assert env.transitions("s-wake") == [("asleep", "starting"), ("starting", "running")]
    running_ev = env.events("s-wake", "transition")[-1]["detail_json"]
    assert running_ev["reason"] == "ready" and running_ev["via"] == "tcp"
    assert env.pending() == 0

    fields = env.ready_line("s-wake")
    record_timing("create+start (cold)", command_to_running_ms=round(waited * 1000),
                  docker_ms=fields["docker_ms"], start_to_ready_ms=fields["ready_ms"],
                  total_ms=fields["total_ms"], probes=fields["probes"])
    m = env.metrics()
    assert metric_value(m, 'wakegate_wakes_total{outcome="ready"}') == 1
    assert metric_value(m, "wakegate_starts_in_flight") == 0
    assert 'wakegate_wake_duration_seconds_count{phase="ready"} 1' in m

    # A second wake of a running session changes nothing.
    env.wake("s-wake", frm="gw2")
    gw.wait_log(r"session already running, nothing to do.*session=s-wake", timeout=5)
    assert env.transitions("s-wake") == [("asleep", "starting"), ("starting", "running")]

    # Stopped by hand, then woken again: start only (no second create).
    t_since = time.time()
    env.dockerd.stop_container(rec["container_id"])
    env.wait_state("s-wake", "asleep", timeout=5)
    env.wake("s-wake")
    rec2, waited2 = env.wait_state("s-wake", "running", timeout=15)
    assert rec2["container_id"] == rec["container_id"]
    creates = env.docker_events(t_since, "s-wake", ["create"])
    starts = env.docker_events(t_since, "s-wake", ["start"])
    assert creates == [] and len(starts) == 1
    fields = gw.log_lines()
    ready = [ln for ln in fields if "session ready" in ln and "session=s-wake" in ln][-1]
    f = dict(re.findall(r"(\w+)=(\S+)", ready))
    record_timing("start (warm, container exists)", command_to_running_ms=round(waited2 * 1000),
                  docker_ms=f["docker_ms"], start_to_ready_ms=f["ready_ms"], total_ms=f["total_ms"])
    env.stop()


def test_herd_of_wakes_makes_exactly_one_docker_start(env):
    env.start()
    sid = "s-herd"
    env.make_record(sid)
    t_since = time.time()
    barrier = threading.Barrier(20)
    errors = []

    def gateway(i):
        try:
            r = redis.Redis.from_url(env.redis_server.url, decode_responses=True, socket_timeout=5)
            barrier.wait(timeout=5)
            r.xadd(WAKE_KEY, {"session": sid, "op": "wake", "at": str(now_ms()), "from": "gw%d" % i})
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=gateway, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors, errors
    rec, _ = env.wait_state(sid, ("running", "failed"), timeout=15)
    assert rec["state"] == "running", rec
    # Late wakes after ready are no-ops too.
    for i in range(3):
        env.wake(sid, frm="late%d" % i)
    wait_for(lambda: env.pending() == 0, 5, "every wake command to be acknowledged")
    assert env.r.xlen(WAKE_KEY) == 23
    time.sleep(0.3)
    starts = env.docker_events(t_since, sid, ["start"])
    creates = env.docker_events(t_since, sid, ["create"])
    assert len(starts) == 1, starts
    assert len(creates) == 1, creates
    assert env.transitions(sid) == [("asleep", "starting"), ("starting", "running")]
    m = env.metrics()
    assert metric_value(m, "wakegate_wake_commands_total") == 23
    assert metric_value(m, "wakegate_wake_commands_coalesced_total") >= 1
    env.stop()


def test_paused_container_wakes_by_unpause(env):
    gw = env.start()
    sid = "s-pause"
    rec, _ = wake_to_running(env, sid)
    cid = rec["container_id"]
    # Paused by hand: Docker's truth reaches the record through the events stream.
    env.dockerd.pause(cid)
    env.wait_state(sid, "paused", timeout=5)
    gw.wait_log(r"reconciling session with Docker.*session=%s.*docker=paused" % sid, timeout=5)
    t_since = time.time()
    t0 = time.monotonic()
    env.wake(sid)
    rec2, _ = env.wait_state(sid, "running", timeout=10)
    waited = time.monotonic() - t0
    assert rec2["container_id"] == cid and rec2["ip"] == rec["ip"]
    assert env.dockerd.inspect(cid)["State"]["Paused"] is False
    assert [e["Action"] for e in env.docker_events(t_since, sid)] == ["unpause"]
    status, _ = http_get_container(rec2["ip"], 8080, "/", timeout=5)
    assert status == 200
    ready = [ln for ln in gw.log_lines() if "session ready" in ln and "session=%s " % sid in ln][-1]
    f = dict(re.findall(r"(\w+)=(\S+)", ready))
    record_timing("unpause", command_to_running_ms=round(waited * 1000), docker_ms=f["docker_ms"],
                  start_to_ready_ms=f["ready_ms"], total_ms=f["total_ms"])
    assert (("running", "paused") in env.transitions(sid)
            and env.transitions(sid)[-2:] == [("paused", "starting"), ("starting", "running")])
    env.stop()


def test_healthcheck_image_is_ready_only_when_healthy(env, dockerd, test_image_healthcheck):
    # Healthy only 2 s after start, though httpd answers at once: a TCP
    # probe would call it ready far too early.
    build_image(dockerd, SLOW_HEALTH_IMAGE,
                dockerfile_extra='HEALTHCHECK --interval=200ms --timeout=1s --retries=100 '
                                 'CMD ["/bin/test", "-f", "/tmp/ready"]',
                cmd=["/bin/sh", "-c", "(sleep 2; touch /tmp/ready) & exec httpd -f -p 8080 -h /www"])
    env.start()
    rec, waited = wake_to_running(env, "s-slowhealth", image=SLOW_HEALTH_IMAGE)
    ev = env.events("s-slowhealth", "transition")
    starting_at = int([e for e in ev if e["to"] == "starting"][-1]["at"])
    running = [e for e in ev if e["to"] == "running"][-1]
    assert int(running["at"]) - starting_at >= 2000, (starting_at, running)
    assert running["detail_json"]["via"] == "health"
    assert env.container("s-slowhealth")["State"]["Health"]["Status"] == "healthy"
    record_timing("healthcheck turning healthy after 2 s", command_to_running_ms=round(waited * 1000))

    # The fixture image: healthy as soon as httpd answers.
    rec, waited = wake_to_running(env, "s-health", image=test_image_healthcheck)
    assert env.container("s-health")["State"]["Health"]["Status"] == "healthy"
    assert env.events("s-health", "transition")[-1]["detail_json"]["via"] == "health"
    status, _ = http_get_container(rec["ip"], 8080, "/", timeout=5)
    assert status == 200
    record_timing("healthcheck image (500 ms interval)", command_to_running_ms=round(waited * 1000))
    env.stop()


def test_never_listening_container_fails_by_the_deadline_with_its_logs(env):
    env.configure(wake_timeout="3s")
    env.start()
    sid = "s-deaf"
    spec = {"cmd": ["/bin/sh", "-c", "echo booting deaf-app; echo 'fatal: cannot bind :8080' >&2; sleep 1000"]}
    env.make_record(sid, spec=spec)
    t0 = time.monotonic()
    env.wake(sid)
    rec, _ = env.wait_state(sid, ("failed", "running"), timeout=10)
    took = time.monotonic() - t0
    assert rec["state"] == "failed", rec
    assert 2.9 <= took <= 5.0, took
    assert "wake timeout" in rec["error"] and "marking session failed" in rec["error"]
    failed = env.events(sid, "transition")[-1]
    assert (failed["from"], failed["to"]) == ("starting", "failed")
    d = failed["detail_json"]
    assert d["reason"] == "wake timeout"
    assert "booting deaf-app" in d["logs"] and "fatal: cannot bind :8080" in d["logs"]
    # Stopped, so a later wake starts clean.
    wait_for(lambda: env.dockerd.inspect(rec["container_id"])["State"]["Running"] is False, 5,
             "the container to stop", interval=0.05)
    m = env.metrics()
    assert metric_value(m, 'wakegate_wakes_total{outcome="timeout"}') == 1
    # Within the cool-down a wake does not retry; with force it does.
    env.wake(sid)
    env.gw.wait_log(r"not retrying before its cool-down.*session=%s" % sid, timeout=5)
    assert env.record(sid)["state"] == "failed"
    env.wake(sid, force=True)
    env.wait_state(sid, "starting", timeout=5)
    env.wait_state(sid, "failed", timeout=10)
    env.stop()


def test_crash_loop_restarts_with_backoff_then_fails(env):
    env.start()
    sid = "s-crash"
    # Ready at once, then exits 3 a second later, every time.
    spec = {"cmd": ["/bin/sh", "-c", "httpd -p 8080 -h /www; sleep 1; echo crashing now; exit 3"]}
    env.make_record(sid, spec=spec)
    t0 = time.monotonic()
    env.wake(sid)
    env.wait_state(sid, "running", timeout=10)
    seen = [{}]

    def failed_for_good():
        seen[0] = env.record(sid)
        return seen[0].get("state") == "failed" and "crash loop" in seen[0].get("error", "")
    wait_for(failed_for_good, 40, lambda: "a crash loop failure: %r\n%s" % (seen[0], env.gw.log_tail(40)),
             interval=0.05)
    rec = seen[0]
    took = time.monotonic() - t0
    assert rec.get("state") == "failed" and "crash loop" in rec["error"], (rec, env.gw.log_tail(40))
    assert rec["restarts"] == "3"
    tr = env.transitions(sid)
    # ready, crash -> failed -> restart, three times, then the final failure.
    assert tr.count(("starting", "running")) == 4, tr
    assert tr.count(("running", "failed")) == 4, tr
    assert tr.count(("failed", "starting")) == 3, tr
    fails = [e["detail_json"] for e in env.events(sid, "transition") if e["to"] == "failed"]
    assert [f.get("restart_in_ms") for f in fails] == [1000, 2000, 4000, None], fails
    assert all(f["exit_code"] == 3 for f in fails)
    assert fails[-1]["reason"] == "crash loop"
    assert 1 + 1 + 2 + 4 <= took <= 30, took
    env.stop()


# ---------------------------------------------------------------- Docker's truth

def _moved_by_the_die_event(gw, sid, cid, how):
    """The orchestrator moved the record off running because the engine's
    events stream said the container died (its death path runs on nothing
    else), not because a later recheck found it so."""
    gw.wait_log(r'msg="docker event" session=%s container=%s action="die"' % (sid, cid[:12]), timeout=5)
    gw.wait_log(r'msg="container %s[^"]*" session=%s container=%s' % (how, sid, cid[:12]), timeout=5)


def test_docker_kill_or_stop_by_hand_leaves_running(env):
    gw = env.start()
    rec, _ = wake_to_running(env, "s-kill")
    time.sleep(0.2)
    t0 = time.monotonic()
    env.dockerd.api_json("POST", "/containers/%s/kill" % rec["container_id"])
    got, _ = env.wait_state("s-kill", ("asleep", "failed"), timeout=2, poll=0.002)
    took = time.monotonic() - t0
    assert got["state"] == "asleep" and "ip" not in got, got
    ev = env.events("s-kill", "transition")[-1]
    assert (ev["from"], ev["to"]) == ("running", "asleep")
    assert ev["detail_json"] == {"reason": "stopped", "exit_code": 137}
    _moved_by_the_die_event(gw, "s-kill", rec["container_id"], "stopped outside wakegate")
    record_timing("docker kill -> record asleep", ms=round(took * 1000))

    rec, _ = wake_to_running(env, "s-stop")
    env.dockerd.stop_container(rec["container_id"], t=5)
    got, _ = env.wait_state("s-stop", ("asleep", "failed"), timeout=2, poll=0.002)
    assert got["state"] == "asleep"
    # Ended by the SIGTERM through the init (128 + 15), not killed at -t 5.
    assert env.events("s-stop", "transition")[-1]["detail_json"]["exit_code"] == 143
    _moved_by_the_die_event(gw, "s-stop", rec["container_id"], "stopped outside wakegate")

    # A crash (non-zero exit, no kill): failed, with the code.
    spec = {"cmd": ["/bin/sh", "-c",
                    "rm -f /tmp/die; httpd -p 8080 -h /www; while [ ! -f /tmp/die ]; do sleep 0.05; done; exit 7"]}
    rec, _ = wake_to_running(env, "s-exit", spec=spec)
    env.dockerd.exec(rec["container_id"], "touch", "/tmp/die")
    got, _ = env.wait_state("s-exit", ("asleep", "failed"), timeout=3, poll=0.002)
    assert got["state"] == "failed" and "exited with 7" in got["error"], got
    d = env.events("s-exit", "transition")[-1]["detail_json"]
    assert d["reason"] == "exit" and d["exit_code"] == 7
    _moved_by_the_die_event(gw, "s-exit", rec["container_id"], "crashed")
    # Within 10 s of its start that was a crash: it is restarted after 1 s.
    got, _ = env.wait_state("s-exit", "running", timeout=10)
    assert got["restarts"] == "1" and got["container_id"] == rec["container_id"]
    assert env.transitions("s-exit")[-3:] == [("running", "failed"), ("failed", "starting"),
                                              ("starting", "running")]
    gw.wait_log(r"container crashed, marking session failed and restarting.*session=s-exit", timeout=2)
    env.stop()


def test_restart_corrects_records_from_docker(env):
    gw = env.start()
    rec_a, _ = wake_to_running(env, "s-truth-a")
    rec_b, _ = wake_to_running(env, "s-truth-b")
    env.stop()
    # While wakegate is down, Redis and Docker drift apart.
    env.r.hset("wg:session:s-truth-a", mapping={"state": "asleep"})
    env.r.hdel("wg:session:s-truth-a", "ip")
    env.dockerd.remove(rec_b["container_id"])
    env.make_record("s-truth-c", state="starting")  # a wake a crash left behind
    # Failed in Redis, yet its container (made by hand, another name) runs.
    cid_d = env.dockerd.run(IMAGE, labels={"wakegate.session": "s-truth-d"}, init=True)
    env.make_record("s-truth-d", state="failed", container_id=cid_d, error="old failure")
    env.start()
    got_a, _ = env.wait_state("s-truth-a", "running", timeout=5)
    assert got_a["ip"] == rec_a["ip"] and got_a["container_id"] == rec_a["container_id"]
    got_b, _ = env.wait_state("s-truth-b", "asleep", timeout=5)
    assert "container_id" not in got_b and "ip" not in got_b
    got_c, _ = env.wait_state("s-truth-c", "running", timeout=15)  # the wake was resumed
    status, _ = http_get_container(got_c["ip"], 8080, "/", timeout=5)
    assert status == 200
    got_d, _ = env.wait_state("s-truth-d", "running", timeout=15)
    assert got_d["container_id"] == cid_d and "error" not in got_d
    assert len(env.docker_events(0, "s-truth-d", ["create"])) == 1  # none made by wakegate
    assert env.transitions("s-truth-d")[-2:] == [("failed", "starting"), ("starting", "running")]
    for sid, to in (("s-truth-a", "running"), ("s-truth-b", "asleep")):
        rc = env.events(sid, "reconcile")
        assert rc and rc[-1]["detail_json"]["to"] == to, rc
    assert env.events("s-truth-c", "reconcile")[-1]["detail_json"]["action"] == "resume"
    log = "\n".join(env.gw.log_lines())
    assert "reconciling session with Docker" in log and "session=s-truth-a" in log
    env.stop()


def test_labelled_container_without_a_record_is_adopted(env, dockerd):
    cid = dockerd.run(IMAGE, labels={"wakegate.session": "s-adopted", "wakegate.port": "8080"},
                      init=True)
    stopped = dockerd.create_container(IMAGE, labels={"wakegate.session": "s-adopted-stopped"})
    env.start()
    rec, _ = env.wait_state("s-adopted", "running", timeout=5)
    assert rec["host"] == HOST and rec["container_id"] == cid and rec["port"] == "8080"
    assert rec["ip"] == dockerd.container_ip(cid) and rec["image"] == IMAGE
    assert "s-adopted" in env.r.smembers("wg:sessions")
    assert env.transitions("s-adopted") == [("", "creating"), ("creating", "running")]
    rec2, _ = env.wait_state("s-adopted-stopped", "asleep", timeout=5)
    assert rec2["container_id"] == stopped
    # The adopted stopped session wakes like any other, with the same container.
    env.wake("s-adopted-stopped")
    rec3, _ = env.wait_state("s-adopted-stopped", "running", timeout=10)
    assert rec3["container_id"] == stopped
    m = env.metrics()
    assert metric_value(m, "wakegate_sessions_adopted_total") == 2
    env.stop()


def test_container_started_by_hand_is_noticed(env, dockerd):
    env.start()
    rec, _ = wake_to_running(env, "s-byhand")
    dockerd.stop_container(rec["container_id"])
    env.wait_state("s-byhand", "asleep", timeout=5)
    dockerd.start_container(rec["container_id"])
    got, _ = env.wait_state("s-byhand", "running", timeout=5)
    assert got["ip"] == dockerd.container_ip(rec["container_id"])
    env.stop()


# ---------------------------------------------------------------- the stream

def test_wakes_left_pending_by_a_crash_are_taken_again(env):
    env.start()
    env.stop()
    env.make_record("s-pending")
    env.wake("s-pending")
    # A previous life read it (XREADGROUP) and died before acknowledging it.
    got = env.r.xreadgroup(GROUP, HOST, {WAKE_KEY: ">"}, count=10)
    assert got and got[0][1][0][1]["session"] == "s-pending"
    assert env.pending() == 1
    # A wake sent while no orchestrator ran.
    env.make_record("s-queued")
    env.wake("s-queued")
    # And one too old to act on.
    env.make_record("s-stale")
    env.wake("s-stale", at=now_ms() - 60000)
    env.start()
    env.wait_state("s-pending", "running", timeout=15)
    env.wait_state("s-queued", "running", timeout=15)
    env.gw.wait_log(r"older than the wake timeout, skipping.*session=s-stale", timeout=5)
    assert env.record("s-stale")["state"] == "asleep"
    wait_for(lambda: env.pending() == 0, 5, "every wake command to be acknowledged")
    env.stop()


def test_starts_beyond_the_cap_queue(env):
    env.configure(max_starts=2)
    env.start()
    sids = ["s-cap-%d" % i for i in range(6)]
    for sid in sids:
        env.make_record(sid)
    for sid in sids:
        env.wake(sid)
    for sid in sids:
        env.wait_state(sid, "running", timeout=20)
    queued = [ln for ln in env.gw.log_lines() if "start queued" in ln]
    assert len(queued) >= 3, queued
    assert all(int(re.search(r"in_flight=(\d+)", ln).group(1)) <= 2 for ln in queued)
    hb = json.loads(env.r.get("wg:host:" + HOST))
    assert hb["max_concurrent_starts"] == 2
    env.stop()


def test_forced_sleep_and_destroy(env):
    env.start()
    rec, _ = wake_to_running(env, "s-sleep")
    env.wake("s-sleep", op="sleep", force=True)
    got, _ = env.wait_state("s-sleep", "asleep", timeout=10)
    assert env.dockerd.inspect(rec["container_id"])["State"]["Running"] is False
    assert env.transitions("s-sleep")[-2:] == [("running", "stopping"), ("stopping", "asleep")]
    # Without force the save must run first, and a stopped container that was
    # never saved cannot be: refused, with an event, and nothing removed.
    env.wake("s-sleep", op="destroy")
    env.gw.wait_log(r"destroy without force refused.*session=s-sleep", timeout=5)
    refused = wait_for(lambda: env.events("s-sleep", "destroy_refused"), 5, "a destroy_refused event")
    assert refused and "force=1" in refused[0]["detail_json"]["reason"]
    assert env.record("s-sleep")["state"] == "asleep"
    env.wake("s-sleep", op="destroy", force=True)
    wait_for(lambda: not env.r.exists("wg:session:s-sleep"), 10, "the record of s-sleep to go")
    assert env.dockerd.api("GET", "/containers/%s/json" % rec["container_id"]).status == 404
    env.stop()


def test_sigterm_during_a_wake_exits_cleanly_and_the_next_run_finishes_it(env):
    env.configure(wake_timeout="4s")
    gw = env.start()
    sid = "s-interrupted"
    slow = {"cmd": ["/bin/sh", "-c", "sleep 1.5; exec httpd -f -p 8080 -h /www"]}
    env.make_record(sid, spec=slow)
    env.wake(sid)
    env.wait_state(sid, "starting", timeout=5)
    time.sleep(0.3)
    assert gw.stop() == 0
    assert env.record(sid)["state"] == "starting"
    env.start()
    rec, _ = env.wait_state(sid, ("running", "failed"), timeout=10)
    assert rec["state"] == "running", rec
    assert env.events(sid, "reconcile")[-1]["detail_json"]["action"] == "resume"
    env.stop()


def test_no_docker_means_not_ready_and_nothing_written(redis_server, start_wakegate):
    cfg = {"redis": {"url": redis_server.url},
           "docker": {"host": "unix:///nonexistent/wg-orch-test.sock", "name": HOST}}
    gw = start_wakegate(cfg, args=["--role", "orchestrator"])
    gw.wait_log(r"Docker engine does not answer, not ready", timeout=5)
    resp = gw.admin("GET", "/readyz", timeout=5)
    assert resp.status == 503 and "Docker" in resp.body.decode()
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    assert sorted(r.keys("wg:*")) == []
    assert gw.stop() == 0


def test_redis_down_at_start_then_restarted(env, redis_server):
    redis_server.stop()
    gw = env.start(wait_ready=False)
    gw.wait_log(r"reconciliation failed, retrying", timeout=10)
    redis_server.start()
    gw.wait_log(r"startup reconciliation done", timeout=15)
    env.reconnect_redis()
    rec, _ = wake_to_running(env, "s-redis-a")
    # Redis restarts empty (no persistence): records and the consumer group
    # are gone. Docker's truth brings the running session's record back.
    redis_server.restart()
    t_back = time.monotonic()
    env.reconnect_redis()
    back, _ = env.wait_state("s-redis-a", "running", timeout=15, poll=0.01)
    record_timing("Redis restarted empty -> running record re-adopted",
                  ms=round((time.monotonic() - t_back) * 1000))
    assert back["container_id"] == rec["container_id"] and back["ip"] == rec["ip"]
    assert back["host"] == HOST
    gw.wait_log(r"Redis is back, reconciling with Docker again", timeout=5)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            env.make_record("s-redis-b")
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    env.wake("s-redis-b")
    got, _ = env.wait_state("s-redis-b", ("running", "failed"), timeout=20)
    assert got["state"] == "running", got
    env.stop()


def test_admin_api_create_then_wake_wait(env, dockerd):
    """The whole control path through the admin API: POST /v1/sessions
    writes the record, POST .../wake?wait=1 queues the command on
    wg:wake:h1 and answers once the orchestrator published running."""
    env.configure(admin={"token": "t0k"})
    gw = env.start()

    def call(method, path, body=None):
        r = gw.admin(method, path, body=body, token="t0k", timeout=20)
        return r.status, r.json()

    st, body = call("POST", "/v1/sessions", {"id": "s-api", "env": ["FROM_API=1"],
                                             "labels": {"origin": "api"}})
    assert st == 201 and body["state"] == "asleep" and body["host"] == HOST, (st, body)
    t0 = time.monotonic()
    st, body = call("POST", "/v1/sessions/s-api/wake?wait=1")
    took = time.monotonic() - t0
    assert st == 200 and body["state"] == "running" and body["ip"], (st, body)
    status, _ = http_get_container(body["ip"], 8080, "/", timeout=5)
    assert status == 200
    c = dockerd.inspect(body["container_id"])
    assert "FROM_API=1" in c["Config"]["Env"] and c["Config"]["Labels"]["origin"] == "api"
    record_timing("admin API wake?wait=1 (create+start)", http_ms=round(took * 1000))
    env.stop()


def test_container_exiting_while_starting_is_restarted_then_fails(env):
    env.configure(wake_timeout="20s")
    env.start()
    sid = "s-early-exit"
    env.make_record(sid, spec={"cmd": ["/bin/sh", "-c", "echo exiting early; exit 5"]})
    t_since = time.time()
    t0 = time.monotonic()
    env.wake(sid)
    rec, _ = env.wait_state(sid, ("failed", "running"), timeout=20)
    took = time.monotonic() - t0
    assert rec["state"] == "failed", rec
    assert "exited with 5" in rec["error"] and rec["restarts"] == "3", rec
    assert 1 + 2 + 4 <= took < 15, took
    d = env.events(sid, "transition")[-1]["detail_json"]
    assert d["reason"] == "exit" and d["exit_code"] == 5 and d["restarts"] == 3
    assert "exiting early" in d["logs"]
    assert len(env.docker_events(t_since, sid, ["start"])) == 4  # the first + 3 restarts
    assert env.transitions(sid) == [("asleep", "starting"), ("starting", "failed")]
    env.stop()


def test_record_without_a_host_is_claimed_by_the_stream_owner(env):
    env.start()
    env.make_record("s-nohost", host="")
    env.r.hdel("wg:session:s-nohost", "host")
    env.wake("s-nohost")
    rec, _ = env.wait_state("s-nohost", "running", timeout=15)
    assert rec["host"] == HOST
    env.stop()


def test_periodic_scan_recovers_a_session_stuck_in_a_transient_state(env):
    """While running, the orchestrator finds sessions stuck in a transient
    state through wg:transient (not by reading every record) and recovers
    them; a fresh transient session is left alone."""
    for i in range(50):
        env.make_record("calm%d" % i, state="asleep")
    env.start()
    old = now_ms() - 10 * 60 * 1000
    env.make_record("stuck1", state="creating", state_since=str(old))
    env.make_record("fresh1", state="creating")
    # As the store's create script indexes them.
    env.r.zadd("wg:transient", {"stuck1": old, "fresh1": now_ms()})

    rec, waited = env.wait_state("stuck1", "asleep", timeout=WG_STUCK_SCAN_S + 5)
    assert env.r.zscore("wg:transient", "stuck1") is None  # the move took it out
    moves = env.transitions("stuck1")
    assert moves[-1] == ("creating", "asleep"), moves
    assert env.record("fresh1")["state"] == "creating"
    assert env.r.zscore("wg:transient", "fresh1") is not None
    # A window in which only wakegate talks to Redis: at least one more scan,
    # with 53 records in Redis and nothing stuck.
    env.r.config_resetstat()
    time.sleep(WG_STUCK_SCAN_S + 0.5)
    stats = env.r.info("commandstats")
    hgetall = stats.get("cmdstat_hgetall", {}).get("calls", 0)
    assert "cmdstat_smembers" not in stats, stats.get("cmdstat_smembers")
    assert hgetall < 10, "the scan read %d records; only stuck candidates may be read" % hgetall
