"""End-to-end tests of "Idle sessions sleep without losing work".

Everything is real: the wakegate binary (role all), a redis-server, the
harness's private dockerd, and git. Each session's remote is a bare
repository on the host, bind-mounted into its container at /remote; the
container clones it into /www/repo at start, so busybox httpd serves the
work tree through the gateway. The save hook is the built-in one (git add,
commit, push) unless a test says otherwise.

Timeouts are short (idle tiers of seconds) so that each cycle runs in a few
seconds; every wait is bounded.
"""

import asyncio
import os
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from harness.image import WS_IMAGE
from harness.util import wait_for
from stack_util import gw_config

pytestmark = pytest.mark.docker

# The test image with a WebSocket endpoint; with /remote bind-mounted its
# start script clones the work tree from it (harness/image.py).
IMAGE = WS_IMAGE
GIT = "/usr/bin/git"


@pytest.fixture
def stack(stack, ws_image):
    """The conftest's stack, with the WebSocket image built."""
    return stack


def sleep_config(stack, stop_after="2s", pause_after="0s", save=None, wake_timeout="30s", **idle):
    cfg = gw_config(stack.redis_server.url, stack.dockerd, wake_timeout=wake_timeout)
    cfg["sessions"]["image"] = IMAGE
    cfg["sessions"]["idle"] = dict({"stop_after": stop_after, "pause_after": pause_after,
                                    "activity_interval": "200ms", "reap_every": "100ms",
                                    "drain": "300ms"}, **idle)
    cfg["sessions"]["save"] = dict({"path": "/www/repo", "timeout": "5s", "retry_backoff": "500ms",
                                    "retry_max": "1s"}, **(save or {}))
    cfg["routes"].append({"match": {"path_prefix": "/ws/{session}/"}, "strip_prefix": True, "port": 8081,
                          "access": "public"})
    cfg["shutdown_grace"] = "3s"
    # Binds are refused unless the template allows their source (issue 10):
    # the bare repositories live under pytest's tmp_path.
    cfg["sessions"]["binds"] = {"allow": [tempfile.gettempdir()]}
    return cfg


def git(*args, cwd=None):
    return subprocess.run([GIT] + list(args), cwd=cwd, check=True, capture_output=True, text=True,
                          timeout=30).stdout


def bare_repo(tmp_path, name):
    """A bare repository with one commit on main (notes.txt = "first")."""
    bare = tmp_path / (name + ".git")
    git("init", "-q", "--bare", "-b", "main", str(bare))
    os.chmod(bare, 0o777)
    seed = tmp_path / (name + "-seed")
    git("init", "-q", "-b", "main", str(seed))
    (seed / "notes.txt").write_text("first\n")
    git("-c", "user.name=t", "-c", "user.email=t@t", "add", "-A", cwd=seed)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "seed", cwd=seed)
    git("push", "-q", str(bare), "main", cwd=seed)
    return bare


def remote_show(bare, path="notes.txt"):
    return git("--git-dir", str(bare), "show", "main:" + path)


def remote_head(bare):
    return git("--git-dir", str(bare), "rev-parse", "main").strip()


def create(stack, sid, bare, **fields):
    spec = {"binds": ["%s:/remote" % bare]}
    spec.update(fields)
    return stack.create(sid, **spec)


def wake_running(stack, sid):
    r = stack.get(sid, "/")
    assert r.status == 200, (r.status, r.body[:200])
    rec = stack.wait_state(sid, "running", timeout=10)
    return rec


def write_in(stack, rec, path, text):
    stack.dockerd.exec(rec["container_id"], "sh", "-c", "printf '%%s\\n' '%s' > %s" % (text, path))


def hook(bare, name, body):
    p = bare / "hooks" / name
    p.write_text("#!/bin/sh\n" + body + "\n")
    os.chmod(p, 0o755)
    return p


def session_with_work(stack, tmp_path, sid, work=None, pre_receive=None, **fields):
    """A running session (created with fields) whose work tree, a clone of
    its own bare remote, holds unsaved work in notes.txt when work is given;
    pre_receive, when given, is the body of the remote's pre-receive hook.
    Returns (bare, record)."""
    bare = bare_repo(tmp_path, sid)
    if pre_receive is not None:
        hook(bare, "pre-receive", pre_receive)
    create(stack, sid, bare, **fields)
    rec = wake_running(stack, sid)
    if work is not None:
        write_in(stack, rec, "/www/repo/notes.txt", work)
    return bare, rec


async def hold_websocket(stack, gw, sid, seconds):
    """Holds a WebSocket to the session open through gateway gw for seconds,
    sending nothing, and asserts the session stays running all along."""
    import websockets

    url = "ws://127.0.0.1:%d/ws/%s/" % (gw.port, sid)
    async with websockets.connect(url, ping_interval=None, open_timeout=10) as ws:
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            await asyncio.sleep(0.2)
            assert stack.record(sid)["state"] == "running", stack.record(sid)
        assert ws.open


def metric(stack, name):
    return stack.gw.metrics()[name]


def last_save(stack, sid):
    """The record's last_save as the admin API shows it."""
    st, body = stack.api("GET", "/v1/sessions/" + sid)
    assert st == 200, (st, body)
    return body["last_save"] or {}


def states_seen(stack, sid):
    return [to for _, to in stack.transitions(sid)]


# ================================================================ saving work

def test_idle_session_saves_its_work_then_stops_and_wakes_with_it(stack, tmp_path):
    stack.start(config=sleep_config(stack))
    sid = "s-save"
    bare, rec = session_with_work(stack, tmp_path, sid)
    r = stack.get(sid, "/repo/notes.txt")
    assert r.status == 200 and r.body == b"first\n", r.body
    write_in(stack, rec, "/www/repo/notes.txt", "work of the session")
    write_in(stack, rec, "/www/repo/new-file.txt", "a new file")

    got = stack.wait_state(sid, "asleep", timeout=20)
    # The remote has a commit with both changes, and it is the one recorded.
    assert remote_show(bare) == "work of the session\n"
    assert remote_show(bare, "new-file.txt") == "a new file\n"
    head = remote_head(bare)
    subject = git("--git-dir", str(bare), "log", "-1", "--format=%s", "main").strip()
    assert subject.startswith("wakegate auto-save: session %s at " % sid), subject
    ls = last_save(stack, sid)
    assert ls["ok"] is True and ls["exit_code"] == 0, (got, ls)
    assert ls["commit"] == head, (ls, head)
    assert "pushed to the upstream" in ls["output"], ls
    assert not stack.dockerd.inspect(rec["container_id"])["State"]["Running"]
    # The sequence, in order, and the save before the stop.
    tail = stack.transitions(sid)[-4:]
    assert tail == [("running", "draining"), ("draining", "saving"), ("saving", "stopping"),
                    ("stopping", "asleep")], tail
    saves = stack.events(sid, "save")
    assert saves and saves[-1]["detail_json"]["commit"] == head, saves
    assert metric(stack, 'wakegate_saves_total{result="ok"}') >= 1
    assert metric(stack, 'wakegate_sleeps_total{reason="idle",tier="stop"}') == 1

    # Wake it with a request through the proxy: the saved work is there.
    r = stack.get(sid, "/repo/notes.txt")
    assert r.status == 200 and r.body == b"work of the session\n", (r.status, r.body)
    assert stack.record(sid)["state"] == "running"
    # A clean tree saves nothing new the next time: same commit, no new one.
    stack.wait_state(sid, "asleep", timeout=20)
    assert remote_head(bare) == head and last_save(stack, sid)["commit"] == head
    assert "work tree clean" in last_save(stack, sid)["output"]
    assert stack.gw.stop() == 0


# ================================================================ failing saves

def test_rejected_push_keeps_the_container_awake_until_fixed(stack, tmp_path):
    stack.start(config=sleep_config(stack))
    sid = "s-reject"
    bare, rec = session_with_work(stack, tmp_path, sid, "unsaved work",
                                  pre_receive="echo 'push refused by policy' >&2; exit 1")
    reject = bare / "hooks" / "pre-receive"

    fails = wait_for(lambda: stack.events(sid, "save_failed"), 20, "a save_failed event")
    d = fails[0]["detail_json"]
    assert d["ok"] is False and d["exit_code"] != 0 and "push refused by policy" in d["output"], d
    got = stack.wait_state(sid, "running", timeout=10)
    ls = last_save(stack, sid)
    assert ls["ok"] is False and ls["exit_code"] != 0, (got, ls)
    assert "push refused by policy" in ls["output"], ls
    assert stack.dockerd.inspect(rec["container_id"])["State"]["Running"] is True
    # Retried with backoff while it fails; never stopped.
    wait_for(lambda: len(stack.events(sid, "save_failed")) >= 3, 20, "three failed attempts")
    assert "stopping" not in states_seen(stack, sid)
    assert stack.dockerd.inspect(rec["container_id"])["State"]["Running"] is True
    assert metric(stack, 'wakegate_saves_total{result="failed"}') >= 3
    assert metric(stack, "wakegate_save_failing_sessions") == 1
    # The work is still in the container, not on the remote.
    assert remote_show(bare) == "first\n"
    r = stack.get(sid, "/repo/notes.txt")
    assert r.status == 200 and r.body == b"unsaved work\n"

    reject.unlink()  # the cause is fixed
    stack.wait_state(sid, "asleep", timeout=20)
    assert last_save(stack, sid)["ok"] is True
    assert remote_show(bare) == "unsaved work\n"
    assert metric(stack, "wakegate_save_failing_sessions") == 0
    assert stack.gw.stop() == 0


def test_hanging_save_times_out_and_keeps_the_container_awake(stack, tmp_path):
    stack.start(config=sleep_config(stack, save={"timeout": "1s"}))
    sid = "s-hang"
    bare, rec = session_with_work(stack, tmp_path, sid, "slow work", pre_receive="sleep 4")
    hang = bare / "hooks" / "pre-receive"

    fails = wait_for(lambda: stack.events(sid, "save_failed"), 30, "a save_failed event")
    assert fails[0]["detail_json"].get("timeout") is True, fails[0]
    stack.wait_state(sid, "running", timeout=15)
    assert last_save(stack, sid)["ok"] is False
    assert stack.dockerd.inspect(rec["container_id"])["State"]["Running"] is True
    assert metric(stack, 'wakegate_saves_total{result="timeout"}') >= 1
    assert "stopping" not in states_seen(stack, sid)

    hang.unlink()
    stack.wait_state(sid, "asleep", timeout=40)
    assert last_save(stack, sid)["ok"] is True
    assert remote_show(bare) == "slow work\n"
    assert stack.gw.stop() == 0


# ================================================================ open streams

def test_open_websocket_keeps_the_session_awake(stack, tmp_path):
    stack.start(config=sleep_config(stack, stop_after="1s"))
    sid = "s-ws"
    session_with_work(stack, tmp_path, sid)

    asyncio.run(hold_websocket(stack, stack.gw, sid, 3.0))  # 3x the idle timeout, with no message sent
    assert "draining" not in states_seen(stack, sid)
    # Closed: the session goes to sleep.
    stack.wait_state(sid, "asleep", timeout=15)
    assert stack.gw.stop() == 0


def test_streams_on_two_gateways_each_keep_the_session_awake(stack, tmp_path):
    cfg = sleep_config(stack, stop_after="1s")
    stack.start(config=cfg)
    proxy = stack.start(config=cfg, role="proxy")  # a second gateway on the same Redis
    sid = "s-ws2"
    session_with_work(stack, tmp_path, sid)

    async def both():
        # The first gateway's stream closes after 1 s; the second one's alone
        # then keeps the session awake for 3x the idle timeout.
        await asyncio.gather(hold_websocket(stack, stack.gw, sid, 1.0),
                             hold_websocket(stack, proxy, sid, 4.0))

    asyncio.run(both())
    assert "draining" not in states_seen(stack, sid)
    stack.wait_state(sid, "asleep", timeout=15)
    assert proxy.stop() == 0
    assert stack.gw.stop() == 0


def test_keepalive_holds_off_the_reaper_for_its_duration(stack, tmp_path):
    stack.start(config=sleep_config(stack, stop_after="1s"))
    sid = "s-keep"
    session_with_work(stack, tmp_path, sid)
    t0 = time.monotonic()
    st, body = stack.api("POST", "/v1/sessions/%s/keepalive" % sid, {"duration": "3s"})
    assert st == 200 and body["state"] == "running", (st, body)
    # No request is sent: the keepalive alone keeps it awake past the tier.
    while time.monotonic() - t0 < 3.0:
        assert stack.record(sid)["state"] == "running", stack.record(sid)
        time.sleep(0.1)
    assert "draining" not in states_seen(stack, sid)
    # Then the usual idle time, and it sleeps.
    stack.wait_state(sid, "asleep", timeout=15)
    assert stack.gw.stop() == 0


# ================================================================ requests during a sleep

def test_request_during_saving_cancels_the_sleep_and_is_served(stack, tmp_path):
    stack.start(config=sleep_config(stack))
    sid = "s-cancel"
    # A slow push keeps the session in saving.
    bare, rec = session_with_work(stack, tmp_path, sid, "saved while used", pre_receive="sleep 3")

    stack.wait_state(sid, "saving", timeout=20)
    stack.wait_gateway_sees(sid, "saving")
    r = stack.get(sid, "/repo/notes.txt")
    assert r.status == 200 and r.body == b"saved while used\n", (r.status, r.body)
    # Answered while the push was still in flight (its hook sleeps 3 s).
    assert remote_show(bare) == "first\n", "the request waited for the save"
    assert stack.transitions(sid)[-1] == ("saving", "running"), stack.transitions(sid)[-3:]
    assert stack.dockerd.inspect(rec["container_id"])["State"]["Running"] is True
    # The save in flight still finishes and is recorded.
    wait_for(lambda: stack.events(sid, "save"), 10, "the save event")
    assert remote_show(bare) == "saved while used\n"
    assert metric(stack, 'wakegate_sleeps_cancelled_total{state="saving"}') == 1
    assert stack.gw.stop() == 0


def test_request_during_stopping_is_held_and_wakes_the_session_again(stack, tmp_path):
    stack.start(config=sleep_config(stack))
    sid = "s-stopping"
    # The app ignores SIGTERM: the stop takes the whole stop timeout.
    bare, rec = session_with_work(stack, tmp_path, sid, env=["IGNORE_TERM=1"])
    stack.wait_state(sid, "stopping", timeout=20)
    stack.wait_gateway_sees(sid, "stopping")
    results = []
    threads = [threading.Thread(target=lambda: results.append(stack.get(sid, "/", timeout=40)))
               for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 5
    assert [r.status for r in results] == [200] * 5, [r.status for r in results]
    seen = states_seen(stack, sid)
    i = len(seen) - 1 - seen[::-1].index("stopping")
    assert seen[i:i + 4] == ["stopping", "asleep", "starting", "running"], seen
    assert stack.record(sid)["state"] == "running"
    assert stack.dockerd.inspect(rec["container_id"])["State"]["Running"] is True
    assert stack.gw.stop() == 0


# ================================================================ pause tier

def test_pause_tier_freezes_and_unpauses_on_the_first_request(stack, tmp_path):
    stack.start(config=sleep_config(stack, pause_after="1s", stop_after="60s"))
    sid = "s-pause"
    bare, rec = session_with_work(stack, tmp_path, sid)
    stack.wait_state(sid, "paused", timeout=15)
    assert stack.transitions(sid)[-2:] == [("running", "draining"), ("draining", "paused")]
    wait_for(lambda: stack.dockerd.inspect(rec["container_id"])["State"]["Paused"], 5, "docker pause")
    assert not stack.events(sid, "save"), "the pause tier saves only with save.before_pause"
    stack.wait_gateway_sees(sid, "paused")
    t_since = time.time()
    r = stack.get(sid, "/")
    assert r.status == 200
    assert stack.actions(t_since, sid, ("create", "start", "unpause")) == ["unpause"]
    assert stack.dockerd.inspect(rec["container_id"])["State"]["Paused"] is False
    assert metric(stack, 'wakegate_sleeps_total{reason="idle",tier="pause"}') >= 1
    assert stack.gw.stop() == 0


def test_paused_session_is_saved_then_stopped_at_the_stop_tier(stack, tmp_path):
    stack.start(config=sleep_config(stack, pause_after="500ms", stop_after="3s"))
    sid = "s-tiers"
    bare, rec = session_with_work(stack, tmp_path, sid, "paused work")
    stack.wait_state(sid, "paused", timeout=10)
    stack.wait_state(sid, "asleep", timeout=20)
    seen = states_seen(stack, sid)
    assert seen[-4:] == ["paused", "saving", "stopping", "asleep"], seen
    assert last_save(stack, sid)["ok"] is True
    assert remote_show(bare) == "paused work\n"
    assert stack.gw.stop() == 0


# ================================================================ robustness

def test_kill_during_save_then_restart_loses_no_work(stack, tmp_path):
    cfg = sleep_config(stack)
    gw = stack.start(config=cfg)
    sid = "s-crash"
    bare, rec = session_with_work(stack, tmp_path, sid, "work before the crash", pre_receive="sleep 2")
    slow = bare / "hooks" / "pre-receive"
    stack.wait_state(sid, "saving", timeout=20)
    gw.send_signal(signal.SIGKILL)
    gw.wait_exit(timeout=5)
    assert stack.record(sid)["state"] == "saving"
    slow.unlink()

    stack.start(config=cfg)
    stack.wait_state(sid, "asleep", timeout=30)
    assert last_save(stack, sid)["ok"] is True
    assert remote_show(bare) == "work before the crash\n"
    recs = [e for e in stack.events(sid, "reconcile")]
    assert recs, "the restart recovered the saving state with an event"
    r = stack.get(sid, "/repo/notes.txt")
    assert r.status == 200 and r.body == b"work before the crash\n"
    assert stack.gw.stop() == 0


def test_sigterm_rolls_back_a_sleep_in_flight(stack, tmp_path):
    cfg = sleep_config(stack, save={"timeout": "10s"})
    cfg["shutdown_grace"] = "1s"
    gw = stack.start(config=cfg)
    sid = "s-term"
    bare, rec = session_with_work(stack, tmp_path, sid, "in flight", pre_receive="sleep 5")
    stack.wait_state(sid, "saving", timeout=20)
    t0 = time.monotonic()
    assert gw.stop() == 0
    assert time.monotonic() - t0 < 5
    got = stack.record(sid)
    assert got["state"] == "running", got
    assert stack.transitions(sid)[-1] == ("saving", "running")
    assert stack.dockerd.inspect(rec["container_id"])["State"]["Running"] is True


def test_reaper_leaves_other_hosts_sessions_alone(stack, tmp_path):
    stack.start(config=sleep_config(stack, stop_after="500ms"))
    now = int(time.time() * 1000)
    stack.r.hset("wg:session:s-other", mapping={"id": "s-other", "state": "running", "state_since": now - 60000,
                                               "host": "h2", "v": 1, "ip": "10.99.0.9", "port": 8080})
    stack.r.sadd("wg:sessions", "s-other")
    stack.r.zadd("wg:active", {"s-other": now - 60000})
    time.sleep(1.5)
    assert stack.r.hget("wg:session:s-other", "state") == "running"
    assert not stack.r.exists("wg:lock:s-other")
    assert metric(stack, "wakegate_reaper_passes_total") >= 5
    assert stack.gw.stop() == 0


def test_label_override_shorter_than_the_default_tier(stack, tmp_path):
    # The default tier is a minute; the container's label says one second.
    bare = bare_repo(tmp_path, "s-label")
    cid = stack.dockerd.run(IMAGE, init=True, binds=["%s:/remote" % bare],
                            labels={"wakegate.session": "s-label", "wakegate.idle.stop_after": "1s"})
    stack.start(config=sleep_config(stack, stop_after="60s"))
    rec = stack.wait_state("s-label", ("running", "draining", "saving"), timeout=20)  # adopted at startup
    assert rec["container_id"] == cid and rec["idle_stop_after_ms"] == "1000", rec
    assert stack.r.zscore("wg:idle_short", "s-label") == 1000
    stack.wait_state("s-label", "asleep", timeout=20)
    assert last_save(stack, "s-label")["ok"] is True
    assert last_save(stack, "s-label")["commit"] == remote_head(bare)
    assert stack.gw.stop() == 0


# ================================================================ by command

def test_api_sleep_saves_force_skips_and_delete_saves_before_removing(stack, tmp_path):
    stack.start(config=sleep_config(stack, stop_after="0s"))  # no idle tier: only commands
    sid = "s-api"
    bare, rec = session_with_work(stack, tmp_path, sid, "saved by sleep")
    st, body = stack.api("POST", "/v1/sessions/%s/sleep?wait=1" % sid)
    assert st == 200 and body["state"] == "asleep", (st, body)
    assert body["last_save"]["ok"] is True and body["last_save"]["commit"] == remote_head(bare)
    assert remote_show(bare) == "saved by sleep\n"
    assert [to for _, to in stack.transitions(sid)][-4:] == ["draining", "saving", "stopping", "asleep"]
    assert stack.events(sid, "save")[-1]["detail_json"]["reason"] == "api"

    # force=1: no save, straight to stopping.
    wake_running(stack, sid)
    write_in(stack, rec, "/www/repo/notes.txt", "not saved")
    n_saves = len(stack.events(sid, "save"))
    st, body = stack.api("POST", "/v1/sessions/%s/sleep?wait=1&force=1" % sid)
    assert st == 200 and body["state"] == "asleep", (st, body)
    assert len(stack.events(sid, "save")) == n_saves
    assert stack.transitions(sid)[-2:] == [("running", "stopping"), ("stopping", "asleep")]
    assert remote_show(bare) == "saved by sleep\n"

    # DELETE without force: the save runs first, then the container and record go.
    wake_running(stack, sid)
    st, _ = stack.api("DELETE", "/v1/sessions/%s" % sid)
    assert st == 202, st
    wait_for(lambda: not stack.r.exists("wg:session:" + sid), 20, "the record to go")
    assert remote_show(bare) == "not saved\n"  # the destroy saved the work first
    assert stack.dockerd.api("GET", "/containers/%s/json" % rec["container_id"]).status == 404
    assert stack.gw.stop() == 0


def test_api_sleep_wait_answers_409_when_the_save_fails(stack, tmp_path):
    stack.start(config=sleep_config(stack, stop_after="0s"))
    sid = "s-api-fail"
    bare, rec = session_with_work(stack, tmp_path, sid, "kept",
                                  pre_receive="echo refused >&2; exit 1")
    st, body = stack.api("POST", "/v1/sessions/%s/sleep?wait=1" % sid)
    assert st == 409, (st, body)
    assert "save failed" in body["error"] and body["session"]["state"] == "running", body
    assert body["session"]["last_save"]["ok"] is False
    # A destroy is refused too, and removes nothing.
    st, _ = stack.api("DELETE", "/v1/sessions/%s" % sid)
    assert st == 202
    wait_for(lambda: stack.events(sid, "destroy_refused"), 20, "destroy_refused")
    assert stack.record(sid)["state"] == "running"
    assert stack.dockerd.inspect(rec["container_id"])["State"]["Running"] is True
    assert stack.gw.stop() == 0


def test_saved_before_the_pause_then_stopped_without_a_second_save(stack, tmp_path):
    stack.start(config=sleep_config(stack, pause_after="500ms", stop_after="3s",
                                    save={"before_pause": True}))
    sid = "s-prepaused"
    bare, rec = session_with_work(stack, tmp_path, sid, "saved before the pause")
    stack.wait_state(sid, "paused", timeout=10)
    assert stack.transitions(sid)[-3:] == [("running", "draining"), ("draining", "saving"),
                                          ("saving", "paused")]
    assert remote_show(bare) == "saved before the pause\n"
    got = stack.wait_state(sid, "asleep", timeout=20)
    assert stack.transitions(sid)[-2:] == [("paused", "stopping"), ("stopping", "asleep")]
    assert len(stack.events(sid, "save")) == 1  # nothing ran in the frozen container since
    c = stack.dockerd.inspect(rec["container_id"])["State"]
    assert c["Running"] is False and c["Paused"] is False, c
    # It was thawed for a clean stop: a SIGTERM exit through the init (128 +
    # 15), not a SIGKILL (137) after the stop timeout.
    assert c["ExitCode"] == 143, (c, got)
    assert stack.gw.stop() == 0
