"""End-to-end tests of issue 15's returning host: its stale containers are
saved to a side ref and removed, never adopted, and the git restore
contract brings a session's work back in a fresh container.

Everything is real: the wakegate binary (role all, docker.name h1), a
redis-server, the harness's private dockerd and git. The session image is
the test image with deploy/session-entrypoint.sh as its entrypoint: with
WAKEGATE_GIT_REMOTE=/remote (a bare repository on a bind mount) and
WAKEGATE_WORK_PATH=/www/repo it clones the remote into a fresh container's
work tree before busybox httpd serves /www, so the work tree can be read
through the gateway at /repo/notes.txt.

The placement side (another host taking a lost host's sessions) is not in
this branch: the tests stand in for it by writing the record in Redis as a
re-place leaves it (host = another name, container_id and ip cleared), or
by deleting it (a destroy while the host was away) and listing h1 in
wg:lost_hosts, while this host's gateway is stopped or cut off from Redis.
"""

import json
import os
import pathlib
import signal
import time

import pytest

from harness import image
from harness.util import now_ms, wait_for
from stack_util import HOST
from test_sleep import bare_repo, git, remote_head, remote_show, sleep_config, wake_running, write_in

pytestmark = pytest.mark.docker

RESTORE_IMAGE = "wakegate-test-restore:latest"
ENTRYPOINT = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "session-entrypoint.sh"
OTHER = "h2"  # the host a stand-in re-place moves sessions to
RESTORE_ENV = ["WAKEGATE_GIT_REMOTE=/remote", "WAKEGATE_WORK_PATH=/www/repo"]


@pytest.fixture(scope="module")
def restore_image(dockerd, test_image):
    return image.build_image(
        dockerd, RESTORE_IMAGE,
        extra_files={"/usr/local/bin/session-entrypoint.sh": ENTRYPOINT.read_text()},
        dockerfile_extra='RUN ["/bin/chmod", "755", "/usr/local/bin/session-entrypoint.sh"]\n',
        cmd=["/usr/local/bin/session-entrypoint.sh", "httpd", "-f", "-p", "8080", "-h", "/www"])


@pytest.fixture
def stack(stack, restore_image):
    return stack


def config(stack):
    cfg = sleep_config(stack, stop_after="0s")  # no idle tier: nothing sleeps by itself
    cfg["sessions"]["image"] = RESTORE_IMAGE
    return cfg


def make_session(stack, tmp_path, sid):
    bare = bare_repo(tmp_path, sid)
    stack.create(sid, binds=["%s:/remote" % bare], env=RESTORE_ENV)
    rec = wake_running(stack, sid)
    return bare, rec


def read_work(stack, sid):
    r = stack.get(sid, "/repo/notes.txt")
    assert r.status == 200, (r.status, r.body[:200])
    return r.body.decode()


def push_newer(bare, tmp_path, text):
    """The live container's newer work, pushed to main (a clone of ours
    stands in for it). Returns the new main."""
    clone = tmp_path / ("newer-%d" % time.monotonic_ns())
    git("clone", "-q", "-b", "main", str(bare), str(clone))
    (clone / "notes.txt").write_text(text + "\n")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-am", "newer", cwd=clone)
    git("push", "-q", "origin", "main", cwd=clone)
    return remote_head(bare)


def replace_elsewhere(stack, sid, live=True):
    """The record as a re-place on host h2 leaves it; returns it. live: h2
    beats (a heartbeat key that outlives the test), as a host a session is
    placed on does; a record naming a host that is not live is left alone."""
    key = "wg:session:" + sid
    stack.r.hset(key, "host", OTHER)
    stack.r.hdel(key, "container_id", "ip")
    if live:
        stack.r.set("wg:host:" + OTHER, json.dumps({"name": OTHER, "at": now_ms()}), px=600000)
    return stack.r.hgetall(key)


def containers_of(stack, sid):
    return stack.dockerd.api_json("GET", "/containers/json", params={
        "all": "1", "filters": '{"label":["wakegate.session=%s"]}' % sid})


def wait_event(stack, sid, type_, timeout=20):
    got = []

    def seen():
        got[:] = stack.events(sid, type_)
        return bool(got)
    wait_for(seen, timeout, lambda: "a %s event of %s\nwakegate tail:\n%s"
             % (type_, sid, stack.gw.log_tail(60)), interval=0.05)
    return got[-1]["detail_json"]


def check_side_ref(bare, save, sid, text):
    ref = save["ref"]
    assert ref.startswith("refs/heads/wakegate/stale/%s/%s-" % (sid, HOST)), ref
    assert save["ok"] is True, save
    side = git("--git-dir", str(bare), "rev-parse", ref).strip()
    assert save["commit"] == side, (save, side)
    assert git("--git-dir", str(bare), "show", "%s:notes.txt" % ref) == text + "\n"


def metric(stack, name):
    return stack.gw.metrics().get(name, 0)


def test_a_record_naming_a_host_that_is_not_live_leaves_the_container(stack, tmp_path):
    """docker.name changed (or two engines mixed up): every record names a
    host with no heartbeat. Only a live host takes a session from this one,
    so the container is left running, with a warning, and nothing is saved
    aside or removed."""
    sid = "s-renamed"
    cfg = config(stack)
    stack.start(config=cfg)
    bare, rec = make_session(stack, tmp_path, sid)
    assert stack.gw.stop() == 0
    before = replace_elsewhere(stack, sid, live=False)
    stack.start(config=cfg)
    stack.gw.wait_log(r"record names another host that is not live: left alone.*session=%s" % sid, timeout=20)
    [c] = containers_of(stack, sid)
    assert c["Id"] == rec["container_id"] and c["State"] == "running", c
    assert not stack.events(sid, "stale_removed")
    assert stack.r.hgetall("wg:session:" + sid) == before
    assert stack.gw.stop() == 0


def test_returning_host_saves_its_stale_container_aside_removes_it_and_work_comes_back(stack, tmp_path):
    sid = "s-stale"
    cfg = config(stack)
    stack.start(config=cfg)
    bare, rec = make_session(stack, tmp_path, sid)
    # The fresh container cloned the remote (the restore contract).
    assert read_work(stack, sid) == "first\n"
    write_in(stack, rec, "/www/repo/notes.txt", "stale work")
    assert stack.gw.stop() == 0
    # While this host is away, the session is placed on h2, whose container
    # saves newer work to main.
    newer = push_newer(bare, tmp_path, "newer work")
    before = replace_elsewhere(stack, sid)

    stack.start(config=cfg)
    ev = wait_event(stack, sid, "stale_removed")
    assert ev["host"] == HOST and ev["record_host"] == OTHER, ev
    assert ev["container"] == rec["container_id"] and ev["docker"] == "running", ev
    assert ev["removed"] is True, ev
    check_side_ref(bare, ev["save"], sid, "stale work")
    # The main line keeps the live container's newer work.
    assert remote_head(bare) == newer and remote_show(bare) == "newer work\n"
    # Never adopted, never written: the record is h2's, as it was (same v).
    assert stack.r.hgetall("wg:session:" + sid) == before
    assert containers_of(stack, sid) == []
    assert not stack.events(sid, "reconcile"), stack.events(sid, "reconcile")
    assert metric(stack, "wakegate_stale_containers_removed_total") == 1
    assert metric(stack, "wakegate_sessions_adopted_total") == 0
    stack.gw.wait_log(r"removed a stale container.*session=%s" % sid, timeout=5)

    # The session comes back to this host (the stand-in again: asleep, no
    # container): a fresh container restores the newer work from git.
    assert stack.gw.stop() == 0
    stack.r.hset("wg:session:" + sid, mapping={"host": HOST, "state": "asleep"})
    stack.start(config=cfg)
    assert read_work(stack, sid) == "newer work\n"
    again = stack.record(sid)
    assert again["state"] == "running" and again["container_id"] != rec["container_id"], again
    assert len(containers_of(stack, sid)) == 1
    assert stack.gw.stop() == 0


def test_host_cut_off_from_redis_removes_a_paused_stale_container_when_redis_is_back(stack, tmp_path):
    sid = "s-cutoff"
    cfg = config(stack)
    stack.start(config=cfg)
    bare, rec = make_session(stack, tmp_path, sid)
    write_in(stack, rec, "/www/repo/notes.txt", "work of the cut-off host")
    stack.dockerd.pause(rec["container_id"])
    stack.wait_state(sid, "paused", timeout=10)  # Docker's truth: the events stream
    newer = push_newer(bare, tmp_path, "newer elsewhere")
    before = replace_elsewhere(stack, sid)
    # The host's Redis connections drop (a partition that heals): on the
    # way back its orchestrator reconciles with Docker again.
    stack.r.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    stack.gw.wait_log(r"Redis is back, reconciling with Docker again", timeout=15)
    ev = wait_event(stack, sid, "stale_removed")
    assert ev["docker"] == "paused" and ev["record_host"] == OTHER and ev["removed"] is True, ev
    check_side_ref(bare, ev["save"], sid, "work of the cut-off host")
    assert remote_head(bare) == newer
    assert stack.r.hgetall("wg:session:" + sid) == before
    assert containers_of(stack, sid) == []
    # The container's die and destroy events did not move h2's record.
    time.sleep(0.5)
    assert stack.r.hgetall("wg:session:" + sid) == before
    assert stack.gw.stop() == 0


def test_container_of_a_session_destroyed_while_this_host_was_lost_is_removed_not_adopted(stack, tmp_path):
    cfg = config(stack)
    stack.start(config=cfg)
    gone_bare, gone = make_session(stack, tmp_path, "s-gone")
    kept_bare, kept = make_session(stack, tmp_path, "s-kept")
    write_in(stack, gone, "/www/repo/notes.txt", "last work of a destroyed session")
    assert stack.gw.stop() == 0
    for sid in ("s-gone", "s-kept"):
        stack.r.delete("wg:session:" + sid)
        stack.r.srem("wg:sessions", sid)
    # The first life: h1 is listed lost. A record missing for a container
    # that wakegate made (label wakegate.host) means it was destroyed.
    stack.r.zadd("wg:lost_hosts", {HOST: now_ms()})
    hand = stack.dockerd.run(RESTORE_IMAGE, labels={"wakegate.session": "s-by-hand"},
                             cmd=["httpd", "-f", "-p", "8080", "-h", "/www"])
    stack.start(config=cfg)
    ev = wait_event(stack, "s-gone", "stale_removed")
    assert ev["record_host"] is None and ev["removed"] is True, ev
    check_side_ref(gone_bare, ev["save"], "s-gone", "last work of a destroyed session")
    wait_event(stack, "s-kept", "stale_removed")
    assert not stack.r.exists("wg:session:s-gone") and not stack.r.exists("wg:session:s-kept")
    assert containers_of(stack, "s-gone") == [] and containers_of(stack, "s-kept") == []
    # A container made by hand (no wakegate.host) is adopted as always.
    got = stack.wait_state("s-by-hand", "running", timeout=10)
    assert got["container_id"] == hand and got["host"] == HOST, got
    stack.gw.wait_log(r"this host was marked lost while it was away", timeout=5)
    assert stack.gw.stop() == 0

    # Not lost: a missing record went with Redis's data, and adoption
    # brings it back (test_orchestrator.py's Redis restart, the same rule).
    stack.r.srem("wg:lost_hosts", HOST)
    stack.start(config=cfg)
    _, back = make_session(stack, tmp_path, "s-back")
    assert stack.gw.stop() == 0
    stack.r.delete("wg:session:s-back")
    stack.r.srem("wg:sessions", "s-back")
    stack.start(config=cfg)
    got = stack.wait_state("s-back", "running", timeout=10)
    assert got["container_id"] == back["container_id"], got
    assert not stack.events("s-back", "stale_removed")
    assert stack.gw.stop() == 0


def test_stale_container_started_by_hand_is_saved_aside_and_its_events_never_move_the_record(stack, tmp_path):
    sid = "s-by-event"
    cfg = config(stack)
    stack.start(config=cfg)
    bare, rec = make_session(stack, tmp_path, sid)
    write_in(stack, rec, "/www/repo/notes.txt", "work left in a stopped container")
    # Stopped outside wakegate: the session is asleep here, container kept.
    stack.dockerd.stop_container(rec["container_id"])
    stack.wait_state(sid, "asleep", timeout=10)
    # The session moves to h2 while this host runs on (the stand-in).
    before = replace_elsewhere(stack, sid)
    # Someone starts the old container by hand: Docker's start event finds
    # a session homed elsewhere; the container is stale.
    stack.dockerd.start_container(rec["container_id"])
    ev = wait_event(stack, sid, "stale_removed")
    assert ev["record_host"] == OTHER and ev["docker"] == "running" and ev["removed"] is True, ev
    check_side_ref(bare, ev["save"], sid, "work left in a stopped container")
    assert containers_of(stack, sid) == []
    # Neither the start, nor the die and destroy of the removal, moved h2's record.
    time.sleep(0.5)
    assert stack.r.hgetall("wg:session:" + sid) == before
    stack.gw.wait_log(r"recheck of a session homed on another host, not touching it", timeout=5)
    assert stack.gw.stop() == 0


# ================================================================ the host dies

def kill_host(stack, dockerd):
    """The host dies: its gateway and its dockerd are SIGKILLed (containerd
    and the shims live on)."""
    stack.gw.stop(sig=signal.SIGKILL)
    dockerd.kill_dockerd()


def test_lost_host_without_live_restore_comes_back_with_stopped_stale_containers_removed_unsaved(stack, tmp_path):
    """The issue's scenario on this engine: without live-restore the
    restarted dockerd stops the containers, so the stale container cannot
    run the save hook; it is removed without one (docs/sessions.md)."""
    sid = "s-died"
    cfg = config(stack)
    stack.start(config=cfg)
    bare, rec = make_session(stack, tmp_path, sid)
    seed = remote_head(bare)
    kill_host(stack, stack.dockerd)
    restarted = False
    try:
        before = replace_elsewhere(stack, sid)
        stack.dockerd.restart_dockerd()
        restarted = True
    finally:
        if not restarted:
            stack.dockerd.restart_dockerd()
    stack.start(config=cfg)
    ev = wait_event(stack, sid, "stale_removed")
    assert ev["docker"] == "exited" and ev["save"] is None and ev["removed"] is True, ev
    assert stack.r.hgetall("wg:session:" + sid) == before
    assert containers_of(stack, sid) == []
    assert remote_head(bare) == seed
    assert git("--git-dir", str(bare), "for-each-ref", "refs/heads/wakegate/") == ""
    assert stack.gw.stop() == 0


@pytest.fixture
def live_restore_engine(e2e_tmp, artifacts, restore_image):
    """A second, private dockerd with --live-restore: containers outlive it."""
    from harness.dockerd import Dockerd
    d = Dockerd(os.path.join(e2e_tmp, "docker-live-restore"), pathlib.Path(artifacts) / "docker-live-restore",
                extra_args=["--live-restore"])
    d.log_dir.mkdir(parents=True, exist_ok=True)
    d.start()
    try:
        image.build_image(d, RESTORE_IMAGE,
                          extra_files={"/usr/local/bin/session-entrypoint.sh": ENTRYPOINT.read_text()},
                          dockerfile_extra='RUN ["/bin/chmod", "755", "/usr/local/bin/session-entrypoint.sh"]\n',
                          cmd=["/usr/local/bin/session-entrypoint.sh", "httpd", "-f", "-p", "8080", "-h", "/www"])
        yield d
    finally:
        if d.pid is None:
            d.restart_dockerd()
        d.remove_all_containers()
        d.stop()


def test_lost_host_with_live_restore_saves_its_running_stale_container_aside(stack, tmp_path, live_restore_engine):
    d = live_restore_engine
    sid = "s-lived"
    cfg = config(stack)
    cfg["docker"]["host"] = d.host
    stack.start(config=cfg)
    bare, rec = make_session(stack, tmp_path, sid)
    d.exec(rec["container_id"], "sh", "-c", "printf '%s\\n' 'unsaved when the host died' > /www/repo/notes.txt")
    kill_host(stack, d)
    before = replace_elsewhere(stack, sid)
    newer = push_newer(bare, tmp_path, "newer on h2")
    d.restart_dockerd()
    stack.start(config=cfg)
    ev = wait_event(stack, sid, "stale_removed")
    assert ev["docker"] == "running" and ev["removed"] is True, ev
    check_side_ref(bare, ev["save"], sid, "unsaved when the host died")
    assert remote_head(bare) == newer
    assert stack.r.hgetall("wg:session:" + sid) == before
    assert d.api_json("GET", "/containers/json", params={"all": "1"}) == []
    assert stack.gw.stop() == 0
