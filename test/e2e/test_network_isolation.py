"""End-to-end tests of the session networks (issue 10, "Network isolation"):
what a session's container can and cannot reach, with the engine's own
firewall rules and the host rules of scripts/session-firewall.sh.

The Docker host is a network namespace this module creates: its own
containerd and dockerd with --iptables on, so the engine writes its real
rules there and the machine's own firewall is never touched. A veth pair
joins it to the machine, which plays the gateway's host on the same LAN:

    machine (gateway host)                     namespace (Docker host)
    wakegate, redis-server on lan_ip  ── veth ──  dockerd (+ Docker API on TCP)
    "internet" listener on 203.0.113.1            wgs-… bridges: sessions

wakegate reaches its sessions through a route to their subnets, as a
gateway on another host does. Every reachability check is a real TCP
connect from inside a session (busybox nc), bounded by a 2 s timeout.
"""

import pathlib
import socket
import subprocess
import sys

import pytest

from harness import image
from harness.dockerd import Dockerd, pick_subnet
from harness.redis_server import RedisServer
from stack_util import APP_TEXT, IMAGE, TOKEN, gw_config, host_of
from harness import rawhttp
from harness.util import TcpServer, free_port, wait_for

pytestmark = pytest.mark.docker

REPO = pathlib.Path(__file__).resolve().parents[2]
FIREWALL = REPO / "scripts" / "session-firewall.sh"
DOCKER_API_PORT = 2375
INTERNET_IP = "203.0.113.1"  # TEST-NET-3: stands for any public address


def run(*cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    return r


@pytest.fixture(scope="module")
def world(e2e_tmp, artifacts):
    """The namespace's engine with the test image, the session subnets routed
    from the machine, a redis-server on the LAN address, and the listeners."""
    base = pathlib.Path(e2e_tmp) / "netns-docker"
    logs = pathlib.Path(artifacts) / "netns-docker"
    logs.mkdir(parents=True, exist_ok=True)
    d = Dockerd(base, logs, netns=True, extra_args=["-H", "tcp://0.0.0.0:%d" % DOCKER_API_PORT])
    cleanups = [d.stop]
    try:
        d.start()
        # Off the namespace, everything goes to the machine (the LAN).
        d.in_netns("ip", "route", "add", "default", "via", d.host_ip)
        subnets = []
        for _ in range(2):
            s = pick_subnet()
            d.route_to(s)
            subnets.append(s)
        run("ip", "addr", "add", INTERNET_IP + "/32", "dev", d.veth)
        # A second address of the machine: not a gateway.
        other = str(list(d.subnet.hosts())[2])
        run("ip", "addr", "add", "%s/%d" % (other, d.subnet.prefixlen), "dev", d.veth)
        image.build_image(d, IMAGE)
        redis = RedisServer(base / "redis", logs, bind=d.host_ip)
        redis.start()
        cleanups.insert(0, redis.stop)
        internet = TcpServer(INTERNET_IP)
        cleanups.insert(0, internet.close)
        yield {"docker": d, "subnets": subnets, "redis": redis, "internet": internet, "other_ip": other}
    finally:
        for c in cleanups:
            try:
                c()
            except Exception as e:  # noqa: BLE001
                sys.stderr.write("network isolation teardown: %r\n" % (e,))


def firewall(world, *args):
    """scripts/session-firewall.sh inside the namespace, as the Docker host's
    operator runs it."""
    return world["docker"].in_netns("sh", str(FIREWALL), *args, check=False)


def reach(world, cid, ip, port):
    """True when a TCP connect from inside the container succeeds in 2 s."""
    r = world["docker"].exec(cid, "sh", "-c", "echo | nc -w 2 %s %d" % (ip, port), check=False)
    return r.returncode == 0


def config(world):
    d, (net_a, net_b) = world["docker"], world["subnets"]
    cfg = gw_config(world["redis"].url, d)
    cfg["sessions"]["network"] = {"subnet": str(net_a)}
    cfg["templates"] = {"open": {"image": IMAGE, "port": 8080,
                                 "network": {"subnet": str(net_b), "egress": True}}}
    return cfg


def start(world, start_wakegate, admin_port):
    cfg = config(world)
    # An admin listener on every address: reachable on the LAN (the
    # mistake a session must still not be able to use).
    cfg["admin"]["listen"] = "0.0.0.0:%d" % admin_port
    gw = start_wakegate(cfg, args=["--role", "all"])
    gw.wait_log(r"startup reconciliation done", timeout=15)
    gw.wait_ready(timeout=10)
    return gw


def create(gw, sid, **fields):
    body = {"id": sid}
    body.update(fields)
    r = gw.admin("POST", "/v1/sessions", body=body, token=TOKEN)
    assert r.status == 201, (r.status, r.body)


def get(gw, sid, timeout=20):
    r = rawhttp.send(gw.port, rawhttp.request_bytes("GET", "/", host=host_of(sid), headers=[("Accept", "*/*")]),
                     timeout=timeout, until="responses")
    assert r.responses, (sid, r.data[:200], gw.log_tail(30))
    return r.responses[0]


def container_of(world, sid):
    for c in world["docker"].api_json("GET", "/containers/json", params={"all": "1"}):
        if c["Labels"].get("wakegate.session") == sid:
            return c["Id"]
    raise AssertionError("no container for %s" % sid)


def test_sessions_reach_neither_each_other_nor_the_hosts(world, start_wakegate):
    d = world["docker"]
    assert firewall(world, "apply", "--allow-from", d.host_ip + "/32").returncode == 0
    admin_port = free_port()
    gw = start(world, start_wakegate, admin_port)
    try:
        for sid, tpl in (("iso-a1", None), ("iso-a2", None), ("iso-b1", "open")):
            create(gw, sid, **({"template": tpl} if tpl else {}))
            r = get(gw, sid)
            assert r.status == 200 and APP_TEXT in r.body, (sid, r, gw.log_tail(30))
        a1, a2, b1 = (container_of(world, s) for s in ("iso-a1", "iso-a2", "iso-b1"))
        ip = {c: d.container_ip(c) for c in (a1, a2, b1)}

        # The engine's view: each on its template's network, which lets no
        # two containers meet, and only the egress one routes off the host.
        for c, net, internal in ((a1, "wakegate-default", True), (b1, "wakegate-open", False)):
            assert list(d.inspect(c)["NetworkSettings"]["Networks"]) == [net]
            n = d.api_json("GET", "/networks/" + net)
            assert n["Options"]["com.docker.network.bridge.enable_icc"] == "false", n
            assert n["Options"]["com.docker.network.bridge.name"].startswith("wgs-"), n
            assert n["Internal"] is internal and n["Labels"]["wakegate.network"] in net, n
        gw_net_a = str(next(world["subnets"][0].hosts()))

        targets = {
            "another session, same template": (ip[a2], 8080),
            "another template's session": (ip[b1], 8080),
            "the Docker API (the session network's gateway)": (gw_net_a, DOCKER_API_PORT),
            "the Docker API (the host's LAN address)": (d.ns_ip, DOCKER_API_PORT),
            "the admin listener": (d.host_ip, admin_port),
            "Redis": (d.host_ip, world["redis"].port),
        }
        # Controls: each session reaches its own app, and only the egress
        # one reaches the internet.
        assert reach(world, a1, "127.0.0.1", 8080)
        assert reach(world, b1, "127.0.0.1", 8080)
        assert reach(world, b1, INTERNET_IP, world["internet"].port)
        assert not reach(world, a1, INTERNET_IP, world["internet"].port)
        for what, (host, port) in targets.items():
            assert not reach(world, a1, host, port), "internal session reached %s (%s:%d)" % (what, host, port)
        for what, (host, port) in targets.items():
            if host == ip[b1]:
                host = ip[a1]
                what = "another template's session"
            assert not reach(world, b1, host, port), "egress session reached %s (%s:%d)" % (what, host, port)

        # Only the gateway reaches a session's port: another address of the
        # same machine does not.
        with pytest.raises(OSError):
            c = socket.create_connection((ip[a1], 8080), timeout=2, source_address=(world["other_ip"], 0))
            c.close()
        socket.create_connection((ip[a1], 8080), timeout=2, source_address=(d.host_ip, 0)).close()

        # What the host rules add: without them the engine alone lets a
        # session open the Docker API on its gateway address, and an egress
        # session the admin listener on the LAN.
        assert firewall(world, "status").returncode == 0
        assert firewall(world, "remove").returncode == 0
        assert firewall(world, "status").returncode == 3
        assert reach(world, a1, gw_net_a, DOCKER_API_PORT)
        assert reach(world, b1, d.host_ip, admin_port)
        assert not reach(world, a1, ip[a2], 8080)  # the engine's own rule stays
        assert firewall(world, "apply", "--allow-from", d.host_ip + "/32").returncode == 0
        assert not reach(world, a1, gw_net_a, DOCKER_API_PORT)
        assert not reach(world, b1, d.host_ip, admin_port)
        assert get(gw, "iso-a1").status == 200
    finally:
        firewall(world, "remove")


def test_a_network_that_would_not_isolate_is_never_joined(world, start_wakegate):
    """A network of the template's name that lets containers meet (made by
    hand, or not by wakegate) fails the wake, naming it; no container."""
    d = world["docker"]
    assert firewall(world, "apply", "--allow-from", d.host_ip + "/32").returncode == 0
    try:
        d.api_json("POST", "/networks/create", body={
            "Name": "loose", "Driver": "bridge", "CheckDuplicate": True,
            "Labels": {"wakegate.network": "loose"},
            "Options": {"com.docker.network.bridge.name": "wgs-handmade"}})
        cfg = config(world)
        cfg["templates"]["loose"] = {"image": IMAGE, "port": 8080, "network": {"name": "loose"}}
        gw = start_wakegate(cfg, args=["--role", "all"])
        gw.wait_log(r"startup reconciliation done", timeout=15)
        create(gw, "iso-loose", template="loose")
        r = get(gw, "iso-loose")
        assert r.status in (502, 503, 504), r
        wait_for(lambda: any("lets its containers reach each other" in line for line in gw.log_lines()), 10,
                 "the wake's failure naming the network")
        assert not [c for c in d.api_json("GET", "/containers/json", params={"all": "1"})
                    if c["Labels"].get("wakegate.session") == "iso-loose"]
    finally:
        firewall(world, "remove")
        d.api("DELETE", "/networks/loose")
