"""End-to-end tests of "Templates: the operator decides, the API chooses"
and the "API policy" proofs of issue 10.

Everything is real: the wakegate binary (role all), a redis-server and the
harness's private dockerd with the FROM-scratch busybox test image. Each
refusal is a 400 whose error names the field, and the engine shows that no
container was made (`docker ps -a` on the test's dockerd) and Redis that no
record was. Every wait is bounded.
"""

import json
import os
import signal
import tempfile
import time

import pytest
import yaml

from stack_util import APP_TEXT, IMAGE, gw_config

pytestmark = pytest.mark.docker

MiB = 1 << 20
# The test image under another name: the template "small"'s own image, so
# what reaches the container is the template's, not sessions.image.
SMALL_IMAGE = "wakegate-test-small:latest"


@pytest.fixture
def stack(stack):
    """conftest's stack, with the test image also tagged as SMALL_IMAGE."""
    stack.dockerd.cli("tag", IMAGE, SMALL_IMAGE)
    return stack


@pytest.fixture
def work(e2e_tmp):
    """A directory the template "small" allows binds under."""
    d = tempfile.mkdtemp(prefix="tmpl-work-", dir=e2e_tmp)
    os.makedirs(os.path.join(d, "s1"))
    return d


def templates_config(stack, work):
    cfg = gw_config(stack.redis_server.url, stack.dockerd)
    cfg["templates"] = {
        "small": {
            "image": SMALL_IMAGE,
            "env": ["FROM_TEMPLATE=small", "SHARED=template"],
            "limits": {"memory": "96MiB", "cpus": "0.25", "pids": 48},
            "limits_max": {"memory": "128MiB"},
            "binds": {"allow": [work + "/"]},
            "overridable": ["limits"],
        },
    }
    return cfg


def containers(dockerd):
    """Every container on the engine, running or not (docker ps -a)."""
    return dockerd.cli("ps", "-a", "-q").stdout.split()


def refused(stack, body, field):
    """POST body: a 400 naming field, and nothing made in Redis or Docker."""
    st, got = stack.api("POST", "/v1/sessions", body)
    assert st == 400, (body, st, got)
    assert got["error"].startswith('field "%s"' % field), (body, got)
    assert stack.r.exists("wg:session:" + body["id"]) == 0, body
    # A request for it wakes nothing either: there is no such session.
    r = stack.get(body["id"], "/")
    assert r.status == 404, (body, r.status)
    assert containers(stack.dockerd) == [], body
    return got["error"]


def wake(stack, sid, **fields):
    stack.create(sid, **fields)
    r = stack.get(sid, "/")
    assert r.status == 200 and APP_TEXT in r.body, (r, r.body[:200])
    rec = stack.wait_state(sid, "running", timeout=10)
    return rec["container_id"]


# ---------------------------------------------------------------- refusals

def test_each_refusal_is_a_400_naming_the_field_and_creates_nothing(stack, work):
    stack.start(templates_config(stack, work))
    outside = tempfile.mkdtemp(prefix="tmpl-outside-", dir=os.path.dirname(work))

    why = refused(stack, {"id": "r-root", "binds": ["/:/host"]}, "binds[0]")
    assert "root" in why
    why = refused(stack, {"id": "r-sock", "template": "small",
                          "binds": ["/var/run/docker.sock:/var/run/docker.sock"]}, "binds[0]")
    assert "Docker socket" in why
    why = refused(stack, {"id": "r-sock2", "template": "small",
                          "binds": ["%s/s1:/w" % work, "/run/docker.sock:/s"]}, "binds[1]")
    assert "Docker socket" in why
    why = refused(stack, {"id": "r-run", "template": "small", "binds": ["/run/:/r"]}, "binds[0]")
    assert "/run" in why
    why = refused(stack, {"id": "r-dots", "template": "small",
                          "binds": ["%s/../%s:/w" % (work, os.path.basename(outside))]}, "binds[0]")
    assert ".." in why
    why = refused(stack, {"id": "r-outside", "template": "small", "binds": ["%s:/w" % outside]},
                  "binds[0]")
    assert "outside" in why
    # The default template allows no bind at all: fail closed.
    why = refused(stack, {"id": "r-default", "binds": ["%s/s1:/w" % work]}, "binds[0]")
    assert 'template "default"' in why
    why = refused(stack, {"id": "r-image", "template": "small", "image": "busybox:latest"}, "image")
    assert "not allowed" in why
    refused(stack, {"id": "r-image2", "image": SMALL_IMAGE}, "image")
    why = refused(stack, {"id": "r-tmpl", "template": "nope"}, "template")
    assert 'unknown template "nope"' in why
    why = refused(stack, {"id": "r-limit", "template": "small", "limits": {"memory": "256MiB"}},
                  "limits.memory")
    assert "maximum" in why
    refused(stack, {"id": "r-pids", "template": "small", "limits": {"pids": 49}}, "limits.pids")
    why = refused(stack, {"id": "r-cmd", "template": "small", "cmd": ["/bin/sh"]}, "cmd")
    assert "does not let a caller set it" in why
    # Nothing of it reached the engine's event log either.
    assert stack.dockerd.api_json("GET", "/containers/json", params={"all": "1"}) == []


# ---------------------------------------------------------------- what a template gives

def test_template_image_limits_env_and_binds_reach_the_container(stack, work):
    stack.start(templates_config(stack, work))
    cid = wake(stack, "t-small", template="small", env=["SHARED=caller"],
               binds=["%s/./s1/:/data" % work])
    rec = stack.record("t-small")
    assert rec["template"] == "small" and rec["image"] == SMALL_IMAGE, rec
    c = stack.dockerd.inspect(cid)
    hc = c["HostConfig"]
    assert c["Config"]["Image"] == SMALL_IMAGE
    assert hc["Memory"] == 96 * MiB and hc["NanoCpus"] == 250_000_000 and hc["PidsLimit"] == 48, hc
    assert hc["CapDrop"] == ["ALL"] and hc["SecurityOpt"] == ["no-new-privileges"], hc
    env = c["Config"]["Env"]
    assert "FROM_TEMPLATE=small" in env and "SHARED=caller" in env and "SHARED=template" not in env, env
    assert hc["Binds"] == ["%s/./s1/:/data" % work], hc
    # The API shows the template.
    st, got = stack.api("GET", "/v1/sessions/t-small")
    assert st == 200 and got["template"] == "small", got

    # A caller may lower a limit, up to the template's maximum.
    cid = wake(stack, "t-lower", template="small", limits={"memory": "128MiB", "pids": 16})
    hc = stack.dockerd.inspect(cid)["HostConfig"]
    assert hc["Memory"] == 128 * MiB and hc["PidsLimit"] == 16 and hc["NanoCpus"] == 250_000_000, hc

    # The default template is the sessions: block, as before templates.
    cid = wake(stack, "t-default")
    assert stack.record("t-default")["template"] == "default"
    assert stack.dockerd.inspect(cid)["Config"]["Image"] == IMAGE
    hc = stack.dockerd.inspect(cid)["HostConfig"]
    assert hc["Memory"] == 1 << 30 and hc["PidsLimit"] == 512, hc


def test_what_overridable_lets_a_caller_set_reaches_the_container(stack, work):
    """cmd, labels, port, idle and save pass only where the template's
    overridable lists them, and an image only where its images list does;
    what passes is what the engine and the record show."""
    cfg = templates_config(stack, work)
    cfg["templates"]["open"] = {"image": IMAGE, "images": ["wakegate-test-small:*"],
                                "overridable": ["cmd", "labels", "port", "idle", "save"]}
    stack.start(cfg)
    asked = {"cmd": ["httpd", "-f", "-p", "8090", "-h", "/www"], "port": 8090,
             "labels": {"team": "blue"}, "idle": {"stop_after": "7m"},
             "save": {"command": ["/bin/true"], "timeout": "9s"}}
    # The template "small" lists only limits: each of these is refused.
    for field, value in asked.items():
        why = refused(stack, {"id": "r-ov-" + field, "template": "small", field: value}, field)
        assert "does not let a caller set it" in why, why
    refused(stack, {"id": "r-ov-image", "template": "open", "image": "wakegate-test-other:latest"}, "image")

    cid = wake(stack, "o-all", template="open", image=SMALL_IMAGE, **asked)
    c = stack.dockerd.inspect(cid)
    assert c["Config"]["Image"] == SMALL_IMAGE
    assert c["Config"]["Cmd"] == asked["cmd"], c["Config"]
    assert c["Config"]["Labels"]["team"] == "blue" and c["Config"]["Labels"]["wakegate.port"] == "8090"
    rec = stack.record("o-all")
    assert rec["port"] == "8090" and rec["idle_stop_after_ms"] == str(7 * 60 * 1000), rec
    spec = json.loads(rec["spec"])
    assert spec["save"]["command"] == ["/bin/true"], spec


def test_template_readiness_is_the_sessions_own(stack, work):
    cfg = templates_config(stack, work)
    cfg["templates"]["probed"] = {"image": IMAGE, "readiness": {"http_path": "/index.html"}}
    stack.start(cfg)
    wake(stack, "rd-http", template="probed")
    wake(stack, "rd-tcp")
    via = {sid: [e["detail_json"].get("via") for e in stack.events(sid, "transition")
                 if e["to"] == "running"][-1] for sid in ("rd-http", "rd-tcp")}
    assert via == {"rd-http": "http", "rd-tcp": "tcp"}, via


# ---------------------------------------------------------------- reload

def test_sighup_adds_a_template_for_sessions_created_afterwards(stack, work):
    gw = stack.start(templates_config(stack, work))
    st, got = stack.api("POST", "/v1/sessions", {"id": "h-1", "template": "late"})
    assert st == 400 and got["error"].startswith('field "template"'), got

    cfg = yaml.safe_load(open(gw.config_path))
    cfg["templates"]["late"] = {"image": IMAGE, "limits": {"pids": 40, "memory": "80MiB"}}
    with open(gw.config_path, "w") as f:
        f.write(yaml.safe_dump(cfg, sort_keys=False))
    gw.send_signal(signal.SIGHUP)
    gw.wait_log(r"templates reloaded.*templates=2", timeout=5)

    cid = wake(stack, "h-1", template="late")
    hc = stack.dockerd.inspect(cid)["HostConfig"]
    assert hc["PidsLimit"] == 40 and hc["Memory"] == 80 * MiB, hc

    # A broken file changes nothing: "late" stays usable.
    with open(gw.config_path, "a") as f:
        f.write("templates: [this is not a mapping\n")
    gw.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while not any("reload failed" in line for line in gw.log_lines()):
        assert time.monotonic() < deadline, gw.log_tail()
        time.sleep(0.05)
    cid = wake(stack, "h-2", template="late")
    assert stack.dockerd.inspect(cid)["HostConfig"]["PidsLimit"] == 40

    # A session of a template that a reload then removes does not get some
    # other sandbox: its first wake fails, naming the template.
    stack.create("h-3", template="late")
    del cfg["templates"]["late"]
    with open(gw.config_path, "w") as f:
        f.write(yaml.safe_dump(cfg, sort_keys=False))
    gw.send_signal(signal.SIGHUP)
    gw.wait_log(r"templates reloaded.*templates=1", timeout=5)
    r = stack.get("h-3", "/")
    assert r.status >= 500, r
    rec = stack.wait_state("h-3", "failed", timeout=10)
    assert 'template "late" is not configured' in rec["error"], rec
    assert not [c for c in containers(stack.dockerd)
                if stack.dockerd.inspect(c)["Config"]["Labels"].get("wakegate.session") == "h-3"]


def test_first_wakes_of_a_template_at_once_all_run(stack, work):
    """The engine does not keep network names unique: wakes that race to
    make a template's network may make two. Every wake still runs, on a
    network of that name that isolates."""
    cfg = templates_config(stack, work)
    cfg["templates"]["herd"] = {"image": IMAGE}
    stack.start(cfg)
    sids = ["herd-%d" % i for i in range(6)]
    for sid in sids:
        stack.create(sid, template="herd")
    for sid in sids:
        st, _ = stack.api("POST", "/v1/sessions/%s/wake" % sid)
        assert st == 202, st
    for sid in sids:
        rec = stack.wait_state(sid, "running", timeout=20)
        nets = stack.dockerd.inspect(rec["container_id"])["NetworkSettings"]["Networks"]
        assert list(nets) == ["wakegate-herd"], nets
    for n in stack.dockerd.api_json("GET", "/networks"):
        if n["Name"] == "wakegate-herd":
            assert n["Options"]["com.docker.network.bridge.enable_icc"] == "false", n
