"""End-to-end test of an engine blip: dockerd killed and started again
while traffic goes to a running session and to a sleeping one.

Everything is real: the wakegate binary (role all), a redis-server and the
harness's private dockerd, which the test kills with SIGKILL (by its pid)
and starts again on the same socket, data root and containerd. What must
hold (issue 12, finding 3):

- an unreachable engine is not the session's failure: a wake asked for
  while dockerd is down is retried within the wake deadline, the session
  is never marked failed, and the held request is answered once the engine
  is back;
- a running session keeps being served across the restart: no 5xx. While
  dockerd is down its container runs on under containerd; the restarted
  engine (no --live-restore) stops it, and the next requests are held
  while the session is woken again, as for any sleeping session;
- afterwards every session wakes.
"""

import re
import threading
import time

import pytest

from harness import rawhttp
from harness.util import wait_for
from stack_util import gw_config, req

pytestmark = pytest.mark.docker

OUTAGE_S = 4.0  # dockerd is down this long (the issue saw 6 s; the wake timeout is 20 s)

# Each session's container serves its own id at /who, so an answer from
# another session's container (a reused address) is seen as one.
WHO_CMD = ["/bin/sh", "-c", "echo \"$WAKEGATE_SESSION\" > /www/who && exec /bin/httpd -f -p 8080 -h /www"]


def blip_config(stack, wake_timeout):
    cfg = gw_config(stack.redis_server.url, stack.dockerd, wake_timeout=wake_timeout)
    cfg["sessions"]["overridable"] = ["cmd"]
    return cfg


def who(sid):
    return (sid + "\n").encode()


class Traffic(threading.Thread):
    """GETs to one session, one at a time on fresh connections, until
    stopped: every answer's status and when it came."""

    def __init__(self, port, sid, pause=0.05):
        super().__init__(daemon=True)
        self.port, self.sid, self.pause = port, sid, pause
        self.results = []  # (monotonic time, status or None for no answer, body head)
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            t = time.monotonic()
            try:
                r = rawhttp.send(self.port, req(self.sid, "/who"), timeout=30, until="responses")
                rs = r.responses
                self.results.append((t, rs[0].status if rs else None, rs[0].body[:200] if rs else r.data[:200]))
            except OSError as e:
                self.results.append((t, None, repr(e).encode()))
            self.stop_ev.wait(self.pause)

    def stop(self):
        self.stop_ev.set()
        self.join(60)
        assert not self.is_alive(), "traffic to %s did not end" % self.sid

    def bad(self):
        """Answers that are not the session's own 200."""
        return [(round(t, 3), s, b) for (t, s, b) in self.results if s != 200 or b != who(self.sid)]


def held_get(port, sid, out):
    """One GET in a thread (held while the session wakes): its answer into out."""
    def run():
        r = rawhttp.send(port, req(sid, "/who"), timeout=60, until="responses")
        out.append(r.responses[0] if r.responses else None)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_engine_blip_running_and_sleeping_sessions(stack):
    dockerd = stack.dockerd
    gw = stack.start(blip_config(stack, "20s"))
    for sid in ("blip-run", "blip-sleep", "blip-late"):
        stack.create(sid, cmd=WHO_CMD)
    r = stack.get("blip-run", "/who")
    assert r.status == 200 and r.body == who("blip-run"), r
    run_container = stack.record("blip-run")["container_id"]

    traffic = Traffic(gw.port, "blip-run")
    traffic.start()
    wait_for(lambda: len(traffic.results) >= 5, 10, "traffic to the running session")
    restarted = False
    problems = []
    try:
        old_pid = dockerd.kill_dockerd()
        killed_at = time.monotonic()
        # A request to the sleeping session while the engine is unreachable:
        # held, and its wake retried, not failed.
        held = []
        th = held_get(gw.port, "blip-sleep", held)
        time.sleep(OUTAGE_S)
        rec = stack.record("blip-sleep")
        if rec["state"] == "failed":
            problems.append(("the engine's absence failed the session", rec))
        dockerd.restart_dockerd()
        restarted = True
        back_at = time.monotonic()
        th.join(40)
        if th.is_alive() or not held or held[0] is None:
            problems.append("the request held during the outage was never answered")
        elif held[0].status != 200 or held[0].body != who("blip-sleep"):
            problems.append(("the request held during the outage", held[0].status, held[0].body[:200]))
        # The restarted engine stops the running session's container
        # (no live-restore); keep the traffic on until the session runs
        # again in a new life of its container, and a little longer.
        wait_for(lambda: stack.record("blip-run").get("state") == "running" and any(
            t > back_at and s == 200 and b == who("blip-run") for (t, s, b) in traffic.results), 30,
            "the running session to answer again after the restart")
        time.sleep(2.0)
    finally:
        traffic.stop()
        if not restarted:
            dockerd.restart_dockerd()
    print("\n[blip] dockerd pid %d killed, down %.1f s; %d requests to the running session"
          % (old_pid, back_at - killed_at, len(traffic.results)))
    if traffic.bad():
        problems.append(("the running session saw answers other than 200 across the engine restart",
                         traffic.bad()[:10]))

    # Never failed, either of them.
    for sid in ("blip-run", "blip-sleep"):
        failed = [t for t in stack.transitions(sid) if t[1] == "failed"]
        if failed:
            problems.append((sid, "marked failed", failed))
    assert not problems, problems

    # Afterwards every session wakes: the two above and one never woken.
    for sid in ("blip-run", "blip-sleep", "blip-late"):
        r = stack.get(sid, "/who", timeout=30)
        assert r.status == 200 and r.body == who(sid), (sid, r, gw.log_tail(40))
        assert stack.record(sid)["state"] == "running"
    assert run_container  # the first life of its container, for the log


def test_engine_down_past_the_wake_deadline(stack):
    """The engine stays away longer than the wake deadline: the held request
    gets a 504 with Retry-After, the session is asleep (not failed) with
    the Docker call and its error, and the next request once the engine is
    back wakes it (no failed-session cool-down)."""
    dockerd = stack.dockerd
    gw = stack.start(blip_config(stack, "2s"))
    stack.create("blip-down", cmd=WHO_CMD)
    dockerd.kill_dockerd()
    try:
        r = stack.get("blip-down", "/who", timeout=20)
        assert r.status in (503, 504), r
        assert r.headers.get("retry-after"), r.headers
        rec = stack.wait_state("blip-down", ("asleep", "failed"), timeout=10)
        assert rec["state"] == "asleep", rec
        # The first Docker call of a first wake: the session network's
        # inspect (or the create), named with the engine's error.
        assert re.search(r"^Docker engine unreachable \(docker (network list|network create|create)\): .*"
                         r"(Connection refused|No such file)", rec.get("error", "")), rec
        gw.wait_log(r"Docker engine unreachable until the wake deadline, session asleep, not failed"
                    r".*session=blip-down.*call=\"?(network list|network create|create)", timeout=5)
    finally:
        dockerd.restart_dockerd()
    r = stack.get("blip-down", "/who", timeout=30)
    assert r.status == 200 and r.body == who("blip-down"), (r, gw.log_tail(30))
    assert ("starting", "failed") not in stack.transitions("blip-down")
    assert ("starting", "asleep") in stack.transitions("blip-down")
