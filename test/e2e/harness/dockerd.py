"""An isolated Docker engine for the tests, and a small client for it.

The engine is fully private to one pytest session:

- its own containerd (started by us, with root, state and sockets in our
  directory), so a system containerd at /run/containerd/containerd.sock is
  never used. dockerd 20.10 silently attaches to that socket when it exists,
  which would mix our containers with the host's;
- its own dockerd with its own socket, data root, exec root, pid file and an
  empty --config-file, so /etc/docker/daemon.json is never read;
- its own Linux bridge `wgt<pytest pid>n<k>` with a /24 that overlaps nothing on
  the host. A system dockerd (if any) owns docker0 and 172.17.0.0/16; a second
  daemon on docker0 would fight over addresses and iptables chains. The daemon
  runs with --iptables=false --ip-masq=false --ip-forward=false: the host
  reaches containers directly through the bridge route and needs no rules, the
  host firewall and sysctls are left alone, and containers cannot reach
  anything outside (test traffic stays on this machine).

Only the standard library talks to it: http.client over the unix socket for
the Engine API, and Debian's /usr/bin/docker CLI with -H for builds.
"""

import calendar
import http.client
import ipaddress
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse

from .http1 import ApiResponse
from .procs import REGISTRY, cgroup_parent_name, reap_adopted, reap_zombies, remove_cgroup_dirs
from .util import HarnessError, mounts_under, tail, umount_all, wait_until

DOCKERD = "/usr/sbin/dockerd"
CONTAINERD = "/usr/bin/containerd"
DOCKER_CLI = "/usr/bin/docker"  # Debian's docker.io CLI; never a docker from /usr/local
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
BRIDGE_PREFIX = "wgt"


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket; the Host header is a dummy."""

    def __init__(self, unix_path, timeout=60.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = unix_path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.unix_path)
        except OSError:
            s.close()
            raise
        self.sock = s


class DockerApiError(RuntimeError):
    def __init__(self, method, path, resp):
        super().__init__("%s %s -> %d: %s" % (method, path, resp.status, resp.text.strip()[:500]))
        self.response = resp


# ---------------------------------------------------------------- networking

def _ip_json(*args):
    out = subprocess.run(["ip", "-j", *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out) if out.strip() else []


def _host_networks():
    """Every IPv4 network the host has an address in or a route to."""
    nets = []
    for link in _ip_json("-4", "addr", "show"):
        for a in link.get("addr_info", []):
            nets.append(ipaddress.ip_network("%s/%s" % (a["local"], a["prefixlen"]), strict=False))
    for r in _ip_json("-4", "route", "show", "table", "all"):
        dst = r.get("dst")
        if dst and dst != "default":
            try:
                nets.append(ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False))
            except ValueError:
                pass
    return nets


def pick_subnet():
    """A /24 in 10.213.0.0/16 (then 172.29.0.0/16) that overlaps no host network.

    The third octet starts from our pid so two concurrent runs are unlikely to
    try the same one first.
    """
    used = _host_networks()
    for base in ("10.213.0.0/16", "172.29.0.0/16"):
        subnets = list(ipaddress.ip_network(base).subnets(new_prefix=24))
        start = os.getpid() % len(subnets)
        for i in range(len(subnets)):
            cand = subnets[(start + i) % len(subnets)]
            if not any(cand.overlaps(n) for n in used):
                return cand
    raise HarnessError("no free /24 for the test bridge in 10.213.0.0/16 or 172.29.0.0/16")


def remove_stale_bridges():
    """Delete wgt<pid>n<k> bridges left by a harness whose pid is gone (e.g. SIGKILLed)."""
    removed = []
    for link in _ip_json("link", "show", "type", "bridge"):
        name = link.get("ifname", "")
        m = re.fullmatch(BRIDGE_PREFIX + r"(\d+)n\d+", name)
        if m:
            pid = int(m.group(1))
            if pid != os.getpid() and not os.path.exists("/proc/%d" % pid):
                subprocess.run(["ip", "link", "del", name], capture_output=True)
                removed.append(name)
    for name in os.listdir("/run/netns") if os.path.isdir("/run/netns") else []:
        m = re.fullmatch(BRIDGE_PREFIX + r"(\d+)ns\d+", name)
        if m and int(m.group(1)) != os.getpid() and not os.path.exists("/proc/%s" % m.group(1)):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            removed.append(name)
    return removed


# ---------------------------------------------------------------- the daemon

class Dockerd:
    """containerd + dockerd + bridge in base_dir; logs in log_dir.

    Attributes once started: host ("unix://…/docker.sock"), sock, pid,
    bridge, subnet, gateway, api_version.
    """

    _count = 0

    def __init__(self, base_dir, log_dir, extra_args=(), netns=False):
        self.dir = pathlib.Path(base_dir)
        self.log_dir = pathlib.Path(log_dir)
        self.extra_args = list(extra_args)
        self.sock = str(self.dir / "docker.sock")
        self.host = "unix://" + self.sock
        self.containerd_sock = str(self.dir / "containerd" / "containerd.sock")
        Dockerd._count += 1
        self.bridge = "%s%dn%d" % (BRIDGE_PREFIX, os.getpid(), Dockerd._count)
        self.subnet = None
        self.gateway = None
        self.api_version = None
        self.cgroup_parent = cgroup_parent_name(os.getpid())
        self.dockerd_log = self.log_dir / "dockerd.log"
        self.containerd_log = self.log_dir / "containerd.log"
        self._dockerd = None
        self._containerd = None
        self._bridge_made = False
        # With netns, the engine runs in a network namespace of ours with its
        # own firewall (--iptables on), joined to the host by a veth pair:
        # host_ip on our side, ns_ip on the engine's.
        self.netns = ("%s%dns%d" % (BRIDGE_PREFIX, os.getpid(), Dockerd._count)) if netns else None
        self.veth = "%s%dv%d" % (BRIDGE_PREFIX, os.getpid(), Dockerd._count)
        self.host_ip = None
        self.ns_ip = None
        self._netns_made = False

    @property
    def pid(self):
        return self._dockerd.pid if self._dockerd else None

    @property
    def containerd_pid(self):
        return self._containerd.pid if self._containerd else None

    # ----- start

    def start(self, timeout=60.0):
        for exe in (DOCKERD, CONTAINERD, DOCKER_CLI, "/usr/bin/runc"):
            if not os.access(exe, os.X_OK):
                raise HarnessError("%s not found: install the Debian package docker.io (scripts/install-deps.sh)" % exe)
        if os.geteuid() != 0:
            raise HarnessError("dockerd needs root; the e2e tests run as root (uid is %d)" % os.geteuid())
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout):
        (self.dir / "containerd").mkdir(parents=True, exist_ok=True)
        (self.dir / "cli").mkdir(exist_ok=True)
        remove_stale_bridges()
        if self.netns:
            self._make_netns()
        else:
            self._make_bridge()

        env = {"PATH": SYSTEM_PATH, "HOME": str(self.dir), "LANG": "C.UTF-8"}
        cfg = self.dir / "containerd" / "config.toml"
        cfg.write_text(
            'version = 2\n'
            'root = "{d}/root"\n'
            'state = "{d}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            '[grpc]\n  address = "{sock}"\n'
            '[ttrpc]\n  address = ""\n'
            '[debug]\n  address = "{d}/debug.sock"\n  level = "info"\n'
            '[metrics]\n  address = ""\n'.format(d=self.dir / "containerd", sock=self.containerd_sock)
        )
        self._containerd = REGISTRY.spawn("containerd", [CONTAINERD, "--config", cfg], log_path=self.containerd_log, env=env,
                                         cwd=self.dir)
        try:
            wait_until(lambda: self._alive(self._containerd, "containerd") and os.path.exists(self.containerd_sock),
                       timeout=timeout, what="containerd socket %s" % self.containerd_sock)
        except (TimeoutError, HarnessError) as e:
            raise HarnessError("containerd did not start: %s\n--- containerd log tail:\n%s" % (e, tail(self.containerd_log))) from None

        (self.dir / "daemon.json").write_text("{}\n")
        argv = [
            DOCKERD,
            "--config-file", self.dir / "daemon.json",
            "--host", self.host,
            "--data-root", self.dir / "data",
            "--exec-root", self.dir / "exec",
            "--pidfile", self.dir / "dockerd.pid",
            "--containerd", self.containerd_sock,
            *self._network_args(),
            "--userland-proxy=false",
            "--shutdown-timeout", "3",
            # Containers go under a cgroup named after us, so a later run can
            # find (and kill) them if this one dies without its teardown.
            "--cgroup-parent", "/" + self.cgroup_parent,
            "--log-level", "info",
            *self.extra_args,
        ]
        if self.netns:
            # nsenter joins the network namespace only: the engine keeps the
            # host's mounts, so its mounts under our directory stay ours to see.
            argv = ["/usr/bin/nsenter", "--net=/run/netns/" + self.netns, "--", *argv]
        self._dockerd_argv, self._dockerd_env = argv, env
        self._dockerd = REGISTRY.spawn("dockerd", argv, log_path=self.dockerd_log, env=env, cwd=self.dir)
        try:
            wait_until(self._ping_ok, timeout=timeout, interval=0.05, what="dockerd /_ping on %s" % self.sock)
        except (TimeoutError, HarnessError) as e:
            raise HarnessError(
                "dockerd did not start: %s\n--- dockerd log tail:\n%s\n--- containerd log tail:\n%s"
                % (e, tail(self.dockerd_log), tail(self.containerd_log, 15))
            ) from None

    def _make_bridge(self):
        self.subnet = pick_subnet()
        self.gateway = next(self.subnet.hosts())
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        for cmd in (
            ["ip", "link", "add", "name", self.bridge, "type", "bridge"],
            ["ip", "addr", "add", "%s/%d" % (self.gateway, self.subnet.prefixlen), "dev", self.bridge],
            ["ip", "link", "set", self.bridge, "up"],
        ):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise HarnessError("%s failed: %s" % (" ".join(cmd), r.stderr.strip()))
            self._bridge_made = True

    def _network_args(self):
        if not self.netns:
            # Session networks get /24s from a range of their own (the
            # engine skips any that a host route already covers).
            return ["--bridge", self.bridge, "--iptables=false", "--ip-masq=false", "--ip-forward=false",
                    "--default-address-pool", "base=10.214.0.0/16,size=24"]
        # In our namespace the engine's own firewall rules are the subject of
        # the test; its default bridge gets a /24 the namespace alone sees.
        return ["--bip", "172.31.254.1/24"]

    def _make_netns(self):
        """A network namespace with a veth to the host on a free /24: the host
        is .1, the engine's side .2 (ns_ip); the host route to the engine's
        session networks is added with route_to()."""
        net = pick_subnet()
        hosts = list(net.hosts())
        self.subnet = net
        self.host_ip, self.ns_ip = str(hosts[0]), str(hosts[1])
        peer = self.veth + "p"
        cmds = [
            ["ip", "netns", "add", self.netns],
            ["ip", "link", "add", self.veth, "type", "veth", "peer", "name", peer],
            ["ip", "link", "set", peer, "netns", self.netns],
            ["ip", "addr", "add", "%s/%d" % (self.host_ip, net.prefixlen), "dev", self.veth],
            ["ip", "link", "set", self.veth, "up"],
            ["ip", "-n", self.netns, "link", "set", "lo", "up"],
            ["ip", "-n", self.netns, "addr", "add", "%s/%d" % (self.ns_ip, net.prefixlen), "dev", peer],
            ["ip", "-n", self.netns, "link", "set", peer, "up"],
        ]
        for i, cmd in enumerate(cmds):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise HarnessError("%s failed: %s" % (" ".join(cmd), r.stderr.strip()))
            if i == 0:
                self._netns_made = True

    def route_to(self, subnet):
        """Route subnet (a session network of the engine) from the host
        through the veth, as a gateway on another host would reach it."""
        r = subprocess.run(["ip", "route", "replace", str(subnet), "via", self.ns_ip, "dev", self.veth],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise HarnessError("ip route replace %s: %s" % (subnet, r.stderr.strip()))

    def in_netns(self, *cmd, check=True, timeout=60):
        """Run a command in the engine's network namespace (iptables, ss, …)."""
        r = subprocess.run(["/usr/bin/nsenter", "--net=/run/netns/" + self.netns, "--", *cmd],
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise HarnessError("%s in %s: exit %d: %s" % (" ".join(cmd), self.netns, r.returncode, r.stderr.strip()))
        return r

    @staticmethod
    def _alive(p, name):
        if p.poll() is not None:
            raise HarnessError("%s exited with code %s" % (name, p.returncode))
        return True

    def _ping_ok(self):
        self._alive(self._dockerd, "dockerd")
        if not os.path.exists(self.sock):
            return False
        conn = UnixHTTPConnection(self.sock, timeout=2)
        try:
            conn.request("GET", "/_ping")
            r = conn.getresponse()
            body = r.read()
            if r.status == 200 and body == b"OK":
                self.api_version = r.getheader("API-Version")
                return True
            return False
        finally:
            conn.close()

    # ----- an engine blip: dockerd killed and started again

    def kill_dockerd(self):
        """SIGKILL dockerd by its pid, as a crash would, and reap it. containerd
        and the container shims live on (they are not dockerd's children), so
        the containers keep running; the socket file stays behind, refusing
        connections. Returns the old pid."""
        p = self._dockerd
        if p is None or p.poll() is not None:
            raise HarnessError("dockerd is not running")
        REGISTRY.stop(p, sig=signal.SIGKILL, timeout=10)
        self._dockerd = None
        return p.pid

    def restart_dockerd(self, timeout=60.0):
        """Start dockerd again after kill_dockerd(), with the same arguments (socket,
        data root, exec root, containerd, bridge), and wait for its /_ping. Without
        --live-restore (we never pass it) the restarted engine stops the containers
        that outlived the old one."""
        if self._dockerd is not None and self._dockerd.poll() is None:
            raise HarnessError("dockerd is still running (pid %d)" % self._dockerd.pid)
        self._dockerd = REGISTRY.spawn("dockerd", self._dockerd_argv, log_path=self.dockerd_log,
                                       env=self._dockerd_env, cwd=self.dir)
        try:
            wait_until(self._ping_ok, timeout=timeout, interval=0.05, what="dockerd /_ping on %s" % self.sock)
        except (TimeoutError, HarnessError) as e:
            raise HarnessError("dockerd did not start again: %s\n--- dockerd log tail:\n%s"
                               % (e, tail(self.dockerd_log))) from None
        return self._dockerd.pid

    # ----- stop

    def stop(self):
        """Remove our containers, stop dockerd then containerd by pid, reap
        adopted shims, unmount what is left under our directory, delete the
        bridge and the directory. Safe to call twice and after a failed start."""
        errors = []
        if self._dockerd is not None and self._dockerd.poll() is None:
            try:
                self.remove_all_containers()
            except Exception as e:  # noqa: BLE001
                errors.append("removing containers: %r" % (e,))
        if self._dockerd is not None:
            REGISTRY.stop(self._dockerd, timeout=20)
        if self._containerd is not None:
            REGISTRY.stop(self._containerd, timeout=10)
        reap_adopted(str(self.dir))
        remove_cgroup_dirs(self.cgroup_parent)
        left = umount_all(self.dir) if self.dir.exists() else []
        if left:
            errors.append("could not unmount: %s" % ", ".join(left))
        if self._bridge_made:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
            self._bridge_made = False
        if self._netns_made:
            # Deleting the namespace deletes the veth pair, and with it the
            # host's routes through it.
            subprocess.run(["ip", "link", "del", self.veth], capture_output=True)
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
            self._netns_made = False
        if not mounts_under(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)
        return errors

    def remove_all_containers(self):
        for c in self.api_json("GET", "/containers/json", params={"all": "1"}):
            self.api("DELETE", "/containers/%s" % c["Id"], params={"force": "1", "v": "1"})
        # The session networks wakegate made, now empty: their bridges and
        # subnets go with them.
        self.api("POST", "/networks/prune", params={"filters": json.dumps({"label": ["wakegate.network"]})})

    # ----- Engine API

    def api(self, method, path, body=None, params=None, timeout=60.0, headers=None, raw_body=None):
        """One Engine API call. path is unversioned ("/containers/json"); the
        negotiated version is prefixed. body is JSON-encoded; raw_body is sent
        as is. Returns ApiResponse (any status)."""
        if path != "/_ping" and self.api_version and not path.startswith("/v"):
            path = "/v%s%s" % (self.api_version, path)
        if params:
            path += "?" + urllib.parse.urlencode(params)
        hdrs = dict(headers or {})
        data = raw_body
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn = UnixHTTPConnection(self.sock, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            return ApiResponse(r.status, dict(r.getheaders()), r.read())
        finally:
            conn.close()

    def api_json(self, method, path, body=None, params=None, ok=(200, 201, 204, 304), timeout=60.0):
        """api() that raises DockerApiError unless the status is in ok; returns the parsed JSON."""
        r = self.api(method, path, body=body, params=params, timeout=timeout)
        if r.status not in ok:
            raise DockerApiError(method, path, r)
        return r.json()

    def ping(self):
        return self.api("GET", "/_ping").body

    def version(self):
        return self.api_json("GET", "/version")

    # ----- container helpers (tests use these to set the scene; wakegate itself
    # talks to the engine on its own)

    def create_container(self, image, cmd=None, name=None, labels=None, env=None, binds=None,
                         init=False, healthcheck=None, extra=None, host_config=None):
        """POST /containers/create; returns the id. env is a dict, binds a list of
        "host:container[:ro]" strings, extra/host_config are merged in."""
        cfg = {"Image": image, "Labels": labels or {}}
        if cmd is not None:
            cfg["Cmd"] = list(cmd)
        if env:
            cfg["Env"] = ["%s=%s" % kv for kv in env.items()]
        if healthcheck is not None:
            cfg["Healthcheck"] = healthcheck
        hc = {"Init": bool(init)}
        if binds:
            hc["Binds"] = list(binds)
        hc.update(host_config or {})
        cfg["HostConfig"] = hc
        cfg.update(extra or {})
        params = {"name": name} if name else None
        return self.api_json("POST", "/containers/create", body=cfg, params=params)["Id"]

    def start_container(self, cid):
        self.api_json("POST", "/containers/%s/start" % cid)
        reap_zombies()

    def stop_container(self, cid, t=1):
        self.api_json("POST", "/containers/%s/stop" % cid, params={"t": str(t)}, timeout=t + 30)

    def pause(self, cid):
        self.api_json("POST", "/containers/%s/pause" % cid)

    def unpause(self, cid):
        self.api_json("POST", "/containers/%s/unpause" % cid)

    def remove(self, cid, force=True):
        self.api_json("DELETE", "/containers/%s" % cid, params={"force": "1" if force else "0", "v": "1"}, ok=(204, 404))

    def inspect(self, cid):
        return self.api_json("GET", "/containers/%s/json" % cid)

    def container_ip(self, cid):
        """The address on the default bridge, else on the first network that
        gave one (session containers are on their template's network)."""
        ns = self.inspect(cid)["NetworkSettings"]
        if ns.get("IPAddress"):
            return ns["IPAddress"]
        for net in (ns.get("Networks") or {}).values():
            if net.get("IPAddress"):
                return net["IPAddress"]
        return ""

    def run(self, image, **kw):
        """create_container + start; returns the id."""
        cid = self.create_container(image, **kw)
        self.start_container(cid)
        return cid

    def logs(self, cid):
        """stdout+stderr of a container (no tty), demultiplexed."""
        r = self.api("GET", "/containers/%s/logs" % cid, params={"stdout": "1", "stderr": "1"})
        out, data = bytearray(), r.body
        while len(data) >= 8:
            n = int.from_bytes(data[4:8], "big")
            out += data[8 : 8 + n]
            data = data[8 + n :]
        return bytes(out)

    # ----- CLI

    def cli_env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update({"DOCKER_CONFIG": str(self.dir / "cli"), "DOCKER_BUILDKIT": "0", "PATH": SYSTEM_PATH})
        return env

    def cli(self, *args, check=True, timeout=300, input=None):
        """Run Debian's docker CLI against this daemon; returns CompletedProcess
        (text). On failure with check=True raises HarnessError with its output."""
        argv = [DOCKER_CLI, "-H", self.host, *[str(a) for a in args]]
        r = subprocess.run(argv, env=self.cli_env(), capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise HarnessError("%s failed (%d):\n%s\n%s" % (" ".join(argv), r.returncode, r.stdout[-4000:], r.stderr[-4000:]))
        return r

    def exec(self, cid, *cmd, check=True, timeout=120):
        """docker exec; returns CompletedProcess."""
        return self.cli("exec", cid, *cmd, check=check, timeout=timeout)


def rfc3339_ns(s):
    """Docker's RFC 3339 timestamp with nanoseconds (UTC, "Z") -> ns since the epoch."""
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?Z$", s)
    assert m, s
    secs = calendar.timegm(tuple(int(x) for x in m.groups()[:6]) + (0, 0, 0))
    frac = (m.group(7) or "0")[:9].ljust(9, "0")
    return secs * 1_000_000_000 + int(frac)


def http_get_container(ip, port=8080, path="/", timeout=10.0, connect_timeout=0.05):
    """GET http://ip:port/path, retried with short connects until timeout.

    Short, repeated connect attempts matter right after a start: the bridge's
    ARP entries may be gone and the first SYN waits for the kernel's ARP retry
    (about 1 s); see DESIGN.md. Returns (status, body).
    """
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            s = socket.create_connection((ip, port), timeout=connect_timeout)
        except OSError as e:
            last = e
            time.sleep(0.02)
            continue
        try:
            s.settimeout(max(0.5, deadline - time.monotonic()))
            s.sendall(("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path, ip)).encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            return int(head.split(b" ", 2)[1]), body
        except (OSError, IndexError, ValueError) as e:
            last = e
            time.sleep(0.02)
        finally:
            s.close()
    raise TimeoutError("no HTTP answer from %s:%d%s within %.1fs (last error: %r)" % (ip, port, path, timeout, last))

