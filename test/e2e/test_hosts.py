"""End-to-end tests of the operator's view of hosts: GET /v1/hosts and
`wakegatectl hosts` (issue 15).

One real gateway (role all, docker.name h1, its heartbeat written by its
orchestrator) and a real redis-server; the other hosts are heartbeat keys
and set members the test writes with the Redis client, as other
orchestrators and the placement side would: h2 lost (listed, no
heartbeat), h3 live with every capacity field of the issue's heartbeat,
h4 returning (listed lost, a heartbeat that is not JSON).
"""

import json
import os
import pathlib
import subprocess

import pytest

from harness.util import now_ms, wait_for
from harness.wakegate import SANITIZER_MARKERS, clean_env, wakegate_bin
from stack_util import HOST, TOKEN, gw_config

pytestmark = pytest.mark.docker

READ = "read-only-hosts-token"
H3 = {"name": "h3", "starts_in_flight": 0, "max_concurrent_starts": 8, "queued": 0,
      "running": 7, "sessions": 9, "cpus": 16, "mem_total": 34359738368, "max_sessions": 50,
      "labels": {"zone": "b", "gpu": "no"}, "future_field": [1, 2]}


def ctl(*args, env=None):
    p = subprocess.run([str(pathlib.Path(wakegate_bin()).parent / "wakegatectl"), *[str(a) for a in args]],
                       env=clean_env(env), capture_output=True, text=True, timeout=60)
    bad = [l for l in p.stderr.splitlines() if any(m in l for m in SANITIZER_MARKERS)]
    assert not bad, "sanitizer report from the CLI:\n" + p.stderr
    return p


def table(stdout):
    """hosts output -> [row dict], split on the header's column starts."""
    names = ["NAME", "STATE", "RUNNING", "SESSIONS", "MAX", "CPUS", "MEM", "LABELS", "AGE"]
    lines = stdout.rstrip("\n").split("\n")
    starts = [lines[0].index(n) for n in names]
    assert starts == sorted(starts), lines[0]
    rows = []
    for line in lines[1:]:
        rows.append({n: line[starts[i]:starts[i + 1] if i + 1 < len(names) else len(line)].strip()
                     for i, n in enumerate(names)})
    return rows


@pytest.fixture
def gw(stack, e2e_tmp):
    read_file = pathlib.Path(e2e_tmp) / "hosts-read.token"
    read_file.write_text(READ + "\n")
    os.chmod(read_file, 0o600)
    cfg = gw_config(stack.redis_server.url, stack.dockerd)
    cfg["admin"]["read_token_file"] = str(read_file)
    g = stack.start(cfg)
    wait_for(lambda: stack.r.exists("wg:host:" + HOST), 10, "h1's heartbeat", interval=0.05)
    return g


def hosts(gw, token=TOKEN):
    r = gw.admin("GET", "/v1/hosts", token=token)
    assert r.status == 200 and r.headers["content-type"] == "application/json", (r.status, r.body[:300])
    return json.loads(r.body)


def ageless(answer):
    return [{k: v for k, v in h.items() if k != "age_ms"} for h in answer["hosts"]]


def env_of(gw, token=TOKEN):
    return {"WAKEGATE_ADMIN_URL": "http://127.0.0.1:%d" % gw.admin_port, "WAKEGATE_ADMIN_TOKEN": token}


def test_this_hosts_heartbeat_carries_its_capacity(stack, gw):
    got = hosts(gw)
    assert got["source"] == "wg:hosts" and got["truncated"] is False, got
    [h1] = got["hosts"]
    assert h1["name"] == HOST and h1["state"] == "live" and h1["heartbeat"] is True, h1
    assert h1["listed_lost"] is False and 0 <= h1["age_ms"] < 10000, h1
    info = h1["info"]
    assert info["name"] == HOST and info["max_concurrent_starts"] == 8, h1
    # The engine's /info: the CPUs and memory of this machine.
    assert info["cpus"] == os.cpu_count() and info["mem_total"] > 0, info
    assert (info["running"], info["sessions"], info["max_sessions"], info["labels"]) == (0, 0, 0, {}), info
    p = ctl("hosts", env=env_of(gw))
    assert p.returncode == 0, p.stderr
    [row] = table(p.stdout)
    assert row["NAME"] == HOST and row["STATE"] == "live", row
    assert (row["RUNNING"], row["SESSIONS"], row["CPUS"], row["LABELS"]) == ("0", "0", str(os.cpu_count()), "-"), row
    assert row["MEM"].endswith("i") and row["AGE"].endswith("s"), row


def test_hosts_without_the_hosts_set_come_from_a_scan_of_heartbeats(stack):
    """A deployment whose orchestrators predate placement writes heartbeats
    but no wg:hosts: a gateway without an orchestrator (role proxy, with the
    admin API) finds them by a bounded SCAN."""
    cfg = gw_config(stack.redis_server.url, stack.dockerd)
    g = stack.start(cfg, role="proxy")
    old = {"name": "old1", "starts_in_flight": 0, "max_concurrent_starts": 8, "queued": 0, "at": now_ms()}
    stack.r.set("wg:host:old1", json.dumps(old), px=60000)
    assert not stack.r.exists("wg:hosts")
    got = hosts(g)
    assert got["source"] == "scan" and got["truncated"] is False, got
    [h] = got["hosts"]
    assert h["name"] == "old1" and h["state"] == "live" and h["info"] == old, h
    p = ctl("hosts", env=env_of(g))
    assert p.returncode == 0, p.stderr
    [row] = table(p.stdout)
    # A heartbeat without capacity: those columns say "-".
    assert [row[k] for k in ("RUNNING", "SESSIONS", "MAX", "CPUS", "MEM", "LABELS")] == ["-"] * 6, row


def test_live_lost_and_returning_hosts_with_their_heartbeats(stack, gw):
    r = stack.r
    # Sorted sets, as the orchestrators keep them (host -> last beat, and
    # host -> when it was marked lost).
    r.zadd("wg:hosts", {HOST: now_ms(), "h2": now_ms(), "h3": now_ms(), "h4": now_ms()})
    r.zadd("wg:lost_hosts", {"h2": now_ms(), "h4": now_ms()})
    beat = dict(H3, at=now_ms() - 125000)
    r.set("wg:host:h3", json.dumps(beat), px=60000)
    r.set("wg:host:h4", "not json", px=60000)
    got = hosts(gw)
    assert got["source"] == "wg:hosts" and got["truncated"] is False, got
    by = {h["name"]: h for h in got["hosts"]}
    assert [h["name"] for h in got["hosts"]] == [HOST, "h2", "h3", "h4"]
    assert by[HOST]["state"] == "live"
    assert by["h2"] == {"name": "h2", "state": "lost", "heartbeat": False, "listed_lost": True,
                        "age_ms": None, "info": None}
    assert by["h3"]["state"] == "live" and by["h3"]["info"] == beat, by["h3"]
    assert 125000 <= by["h3"]["age_ms"] < 135000, by["h3"]
    assert by["h4"]["state"] == "returning" and by["h4"]["info"] is None and by["h4"]["age_ms"] is None, by["h4"]
    # The read-only token reads it, like the session list; a write is 405
    # for everyone.
    assert ageless(hosts(gw, token=READ)) == ageless(got)
    assert gw.admin("DELETE", "/v1/hosts", token=TOKEN).status == 405
    assert gw.admin("GET", "/v1/hosts").status == 401
    head = gw.admin("HEAD", "/v1/hosts", token=READ)
    assert head.status == 200 and head.body == b"", head

    p = ctl("hosts", env=env_of(gw))
    assert p.returncode == 0, p.stderr
    rows = {row["NAME"]: row for row in table(p.stdout)}
    assert rows["h3"] == {"NAME": "h3", "STATE": "live", "RUNNING": "7", "SESSIONS": "9", "MAX": "50",
                          "CPUS": "16", "MEM": "32Gi", "LABELS": "gpu=no,zone=b", "AGE": "2m"}, rows["h3"]
    assert rows["h2"]["STATE"] == "lost" and rows["h2"]["AGE"] == "-", rows["h2"]
    assert rows["h4"]["STATE"] == "returning" and rows["h4"]["MEM"] == "-", rows["h4"]
    # --json: the API's answer as it came.
    p = ctl("hosts", "--json", env=env_of(gw, READ))
    assert p.returncode == 0, p.stderr
    assert ageless(json.loads(p.stdout)) == ageless(got)
    # Exit codes as the other list commands: a bad token 7, no gateway 4.
    assert ctl("hosts", env=env_of(gw, "wrong")).returncode == 7
    p = ctl("hosts", env={"WAKEGATE_ADMIN_URL": "http://127.0.0.1:1", "WAKEGATE_ADMIN_TOKEN": TOKEN})
    assert p.returncode == 4, (p.stdout, p.stderr)
    p = ctl("hosts", "extra", env=env_of(gw))
    assert p.returncode == 2, p.stderr
    assert "hosts" in ctl("help", "hosts").stdout
