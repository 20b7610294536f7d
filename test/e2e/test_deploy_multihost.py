"""Tests of deploy/multihost/, the three-host reference deployment: the
binary accepts each host's file in both roles, the three files differ only
where a host must differ, and the Redis and Sentinel files agree with them.
"""

import subprocess

import yaml

from harness.util import REPO_ROOT
from harness.wakegate import clean_env, wakegate_bin

REF = REPO_ROOT / "deploy" / "multihost"
HOSTS = ("a", "b", "c")
PER_HOST = {("docker", "name"), ("docker", "labels"), ("sessions", "network")}


def load(h):
    return yaml.safe_load((REF / ("wakegate-host-%s.yaml" % h)).read_text())


def flatten(d, prefix=()):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and prefix + (k,) not in PER_HOST:
            out.update(flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def test_the_three_files_differ_only_per_host():
    flat = {h: flatten(load(h)) for h in HOSTS}
    for h in HOSTS[1:]:
        differ = {k for k in set(flat["a"]) | set(flat[h]) if flat["a"].get(k) != flat[h].get(k)}
        assert differ <= PER_HOST, (h, differ - PER_HOST)
    names = [load(h)["docker"]["name"] for h in HOSTS]
    subnets = [load(h)["sessions"]["network"]["subnet"] for h in HOSTS]
    assert names == ["host-a", "host-b", "host-c"]
    assert len(set(subnets)) == 3, subnets
    readme = (REF / "README.md").read_text()
    for s in subnets:
        assert s in readme, s


def test_redis_files_agree_with_the_gateways():
    sentinel = (REF / "redis" / "sentinel.conf").read_text().splitlines()
    monitor = next(line.split() for line in sentinel if line.startswith("sentinel monitor "))
    port = next(line.split()[1] for line in sentinel if line.startswith("port "))
    cfg = load("a")["redis"]["sentinel"]
    assert monitor[2] == cfg["master"]
    assert sorted(a.rsplit(":", 1)[1] for a in cfg["addresses"]) == [port] * 3
    assert "%s:6379" % monitor[3] in (REF / "redis" / "redis-replica.conf").read_text().replace(" 6379", ":6379")
    assert int(monitor[5]) == 2  # a quorum of two of three


def test_each_file_validates_in_both_roles(tmp_path):
    token = tmp_path / "admin.token"
    token.write_text("multihost-reference-token\n")
    token.chmod(0o600)
    secret = tmp_path / "access.secret"
    secret.write_bytes(b"s" * 48 + b"\n")
    secret.chmod(0o600)
    for h in HOSTS:
        cfg = load(h)
        cfg["admin"]["token_file"] = str(token)
        cfg["access"]["secret_file"] = str(secret)
        path = tmp_path / ("host-%s.yaml" % h)
        path.write_text(yaml.safe_dump(cfg))
        for role in ("proxy", "orchestrator"):
            r = subprocess.run([str(wakegate_bin()), "--config", str(path), "--role", role, "--check-config"],
                               env=clean_env(), capture_output=True, text=True, timeout=20)
            assert r.returncode == 0, (h, role, r.stdout, r.stderr)
