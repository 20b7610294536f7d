"""End-to-end tests of "the container's own work counts" (issue 11): its
CPU use, and its busy file.

Everything is real: the wakegate binary (role all), a redis-server and the
harness's private dockerd; the orchestrator samples the running
containers' CPU time from their cgroup files (the engine is local). A job
that burns CPU inside the container, with no request at all, keeps its
session awake for three times its idle timeout; once the job ends the
session sleeps at the idle timeout. Times are scaled down (stop_after 3 s,
cpu_interval 500 ms); every wait is bounded.
"""

import threading
import time

import pytest

from harness.util import wait_for
from stack_util import IMAGE, gw_config

pytestmark = pytest.mark.docker

STOP_AFTER_S = 3
BURN_S = 3 * STOP_AFTER_S


def cpu_config(stack, cpu_interval="500ms", **idle):
    cfg = gw_config(stack.redis_server.url, stack.dockerd)
    cfg["sessions"]["idle"] = dict({"stop_after": "%ds" % STOP_AFTER_S, "pause_after": "0s",
                                    "activity_interval": "200ms", "reap_every": "100ms",
                                    "drain": "300ms", "cpu_interval": cpu_interval,
                                    "cpu_threshold": "0.1"}, **idle)
    return cfg


def burn(stack, cid, seconds, check=True):
    """A job of `seconds` of busy CPU inside the container, started by
    docker exec (never through the gateway): a shell loop."""
    script = ("end=$(( $(date +%%s) + %d )); while [ $(date +%%s) -lt $end ]; do :; done" % seconds)
    return stack.dockerd.exec(cid, "sh", "-c", script, timeout=seconds + 30, check=check)


def states_seen(stack, sid):
    return [to for _, to in stack.transitions(sid)]


def test_cpu_bound_job_keeps_the_session_awake_until_it_ends(stack):
    gw = stack.start(config=cpu_config(stack))
    sid = "s-cpu"
    stack.create(sid)
    r = stack.get(sid, "/")
    assert r.status == 200, r
    rec = stack.wait_state(sid, "running", timeout=15)
    cid = rec["container_id"]

    # The job, with no traffic: three idle timeouts of CPU work.
    t0 = time.monotonic()
    job = threading.Thread(target=burn, args=(stack, cid, BURN_S), daemon=True)
    job.start()
    while job.is_alive():
        assert stack.record(sid)["state"] == "running", (
            "slept while its container worked, %.1fs into the job: %s" % (time.monotonic() - t0,
                                                                         states_seen(stack, sid)))
        time.sleep(0.1)
    job.join()
    burned = time.monotonic() - t0
    assert burned >= BURN_S - 1, burned
    assert states_seen(stack, sid)[-1] == "running", states_seen(stack, sid)
    assert "draining" not in states_seen(stack, sid), states_seen(stack, sid)

    # The job is over: the session sleeps at its idle timeout.
    stack.wait_state(sid, "asleep", timeout=STOP_AFTER_S + 15)
    assert not stack.dockerd.inspect(cid)["State"]["Running"]
    m = gw.metrics()
    assert m["wakegate_cpu_active_total"] >= 3, m.get("wakegate_cpu_active_total")
    assert m['wakegate_cpu_sample_files_total{result="ok"}'] >= 3
    # The local engine's files, not its stats API.
    assert m['wakegate_cpu_sample_calls_total{call="stats"}'] == 0
    assert gw.wait_log(r"container busy, session active.*session=s-cpu", timeout=1)
    assert stack.gw.stop() == 0


def test_an_idle_container_is_not_kept_awake(stack):
    """A running app that only waits (busybox httpd) stays under the
    threshold: the CPU sampler does not keep it awake."""
    gw = stack.start(config=cpu_config(stack))
    sid = "s-idle"
    stack.create(sid)
    assert stack.get(sid, "/").status == 200
    stack.wait_state(sid, "running", timeout=15)
    t0 = time.monotonic()
    stack.wait_state(sid, "asleep", timeout=STOP_AFTER_S + 10)
    assert time.monotonic() - t0 < STOP_AFTER_S + 10
    wait_for(lambda: gw.metrics()['wakegate_cpu_sample_passes_total{result="ok"}'] >= 2, 5,
             "two sampler passes")
    assert gw.metrics()["wakegate_cpu_active_total"] == 0
    assert stack.gw.stop() == 0


def test_the_threshold_is_the_templates_own(stack):
    """The template's threshold is read per container (its wakegate.template
    label): a template whose threshold is out of reach is never kept awake
    by its CPU, while the sessions: block's is."""
    cfg = cpu_config(stack)
    cfg["templates"] = {"lazy": {"image": IMAGE,
                                 "idle": {"stop_after": "%ds" % STOP_AFTER_S,
                                          "cpu_threshold": "1024"}}}
    stack.start(config=cfg)
    sid = "s-lazy"
    st, got = stack.api("POST", "/v1/sessions", {"id": sid, "template": "lazy"})
    assert st == 201, (st, got)
    assert stack.get(sid, "/").status == 200
    rec = stack.wait_state(sid, "running", timeout=15)
    labels = stack.dockerd.inspect(rec["container_id"])["Config"]["Labels"]
    assert labels.get("wakegate.template") == "lazy", labels
    # The stop ends the job (exit 137).
    job = threading.Thread(target=burn, args=(stack, rec["container_id"], BURN_S, False),
                           daemon=True)
    job.start()
    # It sleeps at its idle timeout although its container works.
    stack.wait_state(sid, "asleep", timeout=STOP_AFTER_S + 10)
    job.join(timeout=BURN_S + 30)
    assert stack.gw.stop() == 0


def test_the_engines_stats_call_samples_when_files_are_not_used(stack):
    """idle.cpu_cgroup_files false (as for a remote engine): the same job
    keeps the session awake through the engine's one-shot stats call."""
    gw = stack.start(config=cpu_config(stack, cpu_cgroup_files=False))
    sid = "s-stats"
    stack.create(sid)
    assert stack.get(sid, "/").status == 200
    rec = stack.wait_state(sid, "running", timeout=15)
    job = threading.Thread(target=burn, args=(stack, rec["container_id"], BURN_S), daemon=True)
    job.start()
    while job.is_alive():
        assert stack.record(sid)["state"] == "running", states_seen(stack, sid)
        time.sleep(0.1)
    job.join()
    stack.wait_state(sid, "asleep", timeout=STOP_AFTER_S + 15)
    m = gw.metrics()
    assert m['wakegate_cpu_sample_calls_total{call="stats"}'] >= 3, m
    assert m['wakegate_cpu_sample_files_total{result="ok"}'] == 0
    assert m["wakegate_cpu_active_total"] >= 1
    assert stack.gw.stop() == 0


def heartbeat(stack, cid, seconds, path="/tmp/wakegate-busy", prelude="", check=True):
    """A job that waits (no CPU to speak of) and says it is busy: it touches
    the busy file once a second, started by docker exec."""
    script = "%s i=0; while [ $i -lt %d ]; do touch %s; sleep 1; i=$((i+1)); done" % (
        prelude, seconds, path)
    return stack.dockerd.exec(cid, "sh", "-c", script, timeout=seconds + 30, check=check)


def test_a_busy_file_keeps_a_waiting_job_awake(stack):
    gw = stack.start(config=cpu_config(stack))
    sid = "s-busy"
    stack.create(sid)
    assert stack.get(sid, "/").status == 200
    rec = stack.wait_state(sid, "running", timeout=15)
    t0 = time.monotonic()
    job = threading.Thread(target=heartbeat, args=(stack, rec["container_id"], BURN_S), daemon=True)
    job.start()
    while job.is_alive():
        assert stack.record(sid)["state"] == "running", (
            "slept while its container said busy, %.1fs in: %s" % (time.monotonic() - t0,
                                                                  states_seen(stack, sid)))
        time.sleep(0.1)
    job.join()
    stack.wait_state(sid, "asleep", timeout=STOP_AFTER_S + 15)
    m = gw.metrics()
    assert m["wakegate_busy_file_active_total"] >= 3, m
    assert m["wakegate_cpu_active_total"] == 0, m  # not its CPU
    assert stack.gw.stop() == 0


def test_a_busy_file_that_is_a_link_is_not_followed(stack):
    """The container cannot point its busy file elsewhere (it could name a
    file of the host): a link is refused, so touching its target keeps
    nothing awake."""
    gw = stack.start(config=cpu_config(stack))
    sid = "s-link"
    stack.create(sid)
    assert stack.get(sid, "/").status == 200
    rec = stack.wait_state(sid, "running", timeout=15)
    done = []
    job = threading.Thread(daemon=True, target=lambda: done.append(heartbeat(
        stack, rec["container_id"], BURN_S, "/tmp/real", "ln -s /tmp/real /tmp/wakegate-busy;",
        check=False)))
    job.start()
    stack.wait_state(sid, "asleep", timeout=STOP_AFTER_S + 10)
    assert gw.metrics()["wakegate_busy_file_active_total"] == 0
    job.join(timeout=BURN_S + 30)
    # The stop ended the job mid-way: it never ran to its end awake.
    assert done and done[0].returncode != 0, done
    assert stack.gw.stop() == 0


def test_the_save_hooks_own_work_does_not_call_the_sleep_off(stack):
    """The save hook runs in the container, so its CPU is the container's:
    a hook that works for 2 s (sampled four times a second) still ends in
    a stop, never back in running."""
    cfg = cpu_config(stack, cpu_interval="250ms")
    cfg["sessions"]["save"] = {
        "command": ["sh", "-c", "end=$(( $(date +%s) + 2 )); while [ $(date +%s) -lt $end ]; do :; done"],
        "timeout": "20s"}
    gw = stack.start(config=cfg)
    sid = "s-hook"
    stack.create(sid)
    assert stack.get(sid, "/").status == 200
    stack.wait_state(sid, "running", timeout=15)
    stack.wait_state(sid, "asleep", timeout=STOP_AFTER_S + 20)
    tail = stack.transitions(sid)[-4:]
    assert tail == [("running", "draining"), ("draining", "saving"), ("saving", "stopping"),
                    ("stopping", "asleep")], stack.transitions(sid)
    assert gw.metrics()['wakegate_saves_total{result="ok"}'] == 1
    assert stack.gw.stop() == 0
