"""A Redis master, its replicas and three sentinels on loopback, for failover tests.

    cluster = RedisSentinelCluster(tmp_dir, log_dir).start()
    cluster.addresses          # ["127.0.0.1:PORT", ...] of the sentinels (redis.sentinel.addresses)
    cluster.master_name        # "wgmaster"            (redis.sentinel.master)
    cluster.master_addr()      # ("127.0.0.1", PORT), as the first running sentinel says now
    cluster.kill_master()      # SIGKILL of the current master's redis-server; returns its (host, port)
    cluster.wait_failover(old) # waits until every sentinel names a master other than old
    cluster.failover()         # SENTINEL FAILOVER: a switch while the old master stays up
    cluster.stop()             # every process, by pid

Processes are redis-server (master and replicas: `replicaof`) and
redis-sentinel (Debian's package of that name; scripts/install-deps.sh test),
each with its own port and directory under tmp_dir, started and stopped by
pid through harness.procs.REGISTRY. Sentinels use down-after-milliseconds
1000 and failover-timeout 5000 (arguments), so a failover takes about 2 s.
"""

import os
import pathlib
import socket
import time

from .procs import REGISTRY
from .util import HarnessError, free_port, tail, wait_until

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_SENTINEL = "/usr/bin/redis-sentinel"


def resp_command(host, port, *args, timeout=2.0):
    """One command in RESP over TCP; returns the parsed reply (bytes, int, list or None).
    An error reply comes back as an Exception instance (not raised)."""
    payload = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        payload += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(payload)
        f = s.makefile("rb")
        return _read_reply(f)


def _read_reply(f):
    line = f.readline()
    if not line:
        raise HarnessError("connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        return Exception(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        if n < 0:
            return None
        return [_read_reply(f) for _ in range(n)]
    raise HarnessError("bad RESP line %r" % line)


class _Node:
    def __init__(self, name, port, dir_, log_path, argv):
        self.name, self.port, self.dir, self.log_path, self.argv = name, port, dir_, log_path, argv
        self.proc = None

    def start(self):
        with open(self.log_path, "ab") as f:
            f.write(b"--- harness: starting %s at %.3f\n" % (self.name.encode(), time.time()))
        self.proc = REGISTRY.spawn(self.name, self.argv, log_path=self.log_path, cwd=self.dir)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def ping(self):
        if not self.alive():
            raise HarnessError("%s exited with %s:\n%s" % (self.name, self.proc.returncode, tail(self.log_path)))
        try:
            return resp_command("127.0.0.1", self.port, "PING", timeout=1.0) == b"PONG"
        except OSError:
            return False

    def stop(self, sig=None):
        if self.proc is None:
            return None
        if sig is None:
            code = REGISTRY.stop(self.proc, timeout=10.0)
        else:
            code = REGISTRY.stop(self.proc, sig=sig, timeout=10.0)
        self.proc = None
        return code


class RedisSentinelCluster:
    """A master, `replicas` replicas and `sentinels` sentinels on 127.0.0.1.

    start() waits until every sentinel knows the master and its replicas;
    stop() stops everything (also after kill_master()). Nodes killed stay
    down: a failover test restarts nothing behind the test's back."""

    def __init__(self, base_dir, log_dir, master_name="wgmaster", replicas=1, sentinels=3,
                 down_after_ms=1000, failover_timeout_ms=5000):
        self.base = pathlib.Path(base_dir)
        self.log_dir = pathlib.Path(log_dir)
        self.master_name = master_name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.base.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.servers = []  # _Node; servers[0] is the first master
        self.sentinels = []
        first = free_port()
        for i in range(1 + replicas):
            port = first if i == 0 else free_port()
            d = self.base / ("redis-%d" % port)
            d.mkdir(exist_ok=True)
            argv = [
                REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1",
                "--protected-mode", "yes", "--dir", str(d), "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--logfile", "",
                # A master that lost its replicas still takes writes: the
                # failover test is about what a failover loses, not this.
                "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
            ]
            if i > 0:
                argv += ["--replicaof", "127.0.0.1", str(first)]
            self.servers.append(_Node("redis-%d" % port, port, d, self.log_dir / ("redis-%d.log" % port), argv))
        self.quorum = sentinels // 2 + 1
        for _ in range(sentinels):
            port = free_port()
            d = self.base / ("sentinel-%d" % port)
            d.mkdir(exist_ok=True)
            conf = d / "sentinel.conf"
            conf.write_text(
                "port %d\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\nlogfile \"\"\ndir %s\n"
                "sentinel monitor %s 127.0.0.1 %d %d\n"
                "sentinel down-after-milliseconds %s %d\n"
                "sentinel failover-timeout %s %d\n"
                "sentinel parallel-syncs %s 1\n"
                % (port, d, master_name, first, self.quorum, master_name, down_after_ms,
                   master_name, failover_timeout_ms, master_name))
            self.sentinels.append(_Node("sentinel-%d" % port, port, d, self.log_dir / ("sentinel-%d.log" % port),
                                        [REDIS_SENTINEL, str(conf)]))

    @property
    def addresses(self):
        """The sentinels as "127.0.0.1:PORT", for redis.sentinel.addresses."""
        return ["127.0.0.1:%d" % s.port for s in self.sentinels]

    def start(self, timeout=20.0):
        for prog, pkg in ((REDIS_SERVER, "redis-server"), (REDIS_SENTINEL, "redis-sentinel")):
            if not os.access(prog, os.X_OK):
                raise HarnessError("%s not found: install the Debian package %s (scripts/install-deps.sh test)"
                                   % (prog, pkg))
        try:
            for n in self.servers:
                n.start()
            for n in self.servers:
                wait_until(n.ping, timeout=timeout, what="%s PING" % n.name)
            wait_until(self._replicas_online, timeout=timeout, what="replicas in sync")
            for n in self.sentinels:
                n.start()
            for n in self.sentinels:
                wait_until(n.ping, timeout=timeout, what="%s PING" % n.name)
            wait_until(self._sentinels_ready, timeout=timeout, what="sentinels see the replicas and each other")
        except Exception:
            self.stop()
            raise
        return self

    def _replicas_online(self):
        master = self.servers[0]
        info = resp_command("127.0.0.1", master.port, "INFO", "replication")
        return ("connected_slaves:%d" % (len(self.servers) - 1)).encode() in info

    def _sentinels_ready(self):
        for s in self.sentinels:
            rep = resp_command("127.0.0.1", s.port, "SENTINEL", "master", self.master_name)
            if isinstance(rep, Exception):
                return False
            d = dict(zip(rep[::2], rep[1::2]))
            if int(d.get(b"num-slaves", 0)) < len(self.servers) - 1:
                return False
            if int(d.get(b"num-other-sentinels", 0)) < len(self.sentinels) - 1:
                return False
        return True

    def master_addr(self, sentinel=None):
        """(host, port) of the master as sentinel number `sentinel` names it
        (None: the first one running)."""
        if sentinel is None:
            sentinel = next((i for i, n in enumerate(self.sentinels) if n.alive()), 0)
        s = self.sentinels[sentinel]
        rep = resp_command("127.0.0.1", s.port, "SENTINEL", "get-master-addr-by-name", self.master_name)
        if not isinstance(rep, list):
            raise HarnessError("sentinel %d: %r" % (s.port, rep))
        return rep[0].decode(), int(rep[1])

    def node(self, port):
        """The redis-server _Node on port."""
        for n in self.servers:
            if n.port == port:
                return n
        raise HarnessError("no redis-server on port %d" % port)

    def command(self, port, *args, timeout=2.0):
        """One command to the redis-server on port (parsed reply)."""
        return resp_command("127.0.0.1", port, *args, timeout=timeout)

    def kill_master(self):
        """SIGKILL of the master's redis-server (no shutdown, no save). Returns its (host, port)."""
        import signal
        host, port = self.master_addr()
        self.node(port).stop(sig=signal.SIGKILL)
        return host, port

    def failover(self):
        """SENTINEL FAILOVER on the first live sentinel: the master moves while the old one stays up."""
        for s in self.sentinels:
            if s.alive():
                rep = resp_command("127.0.0.1", s.port, "SENTINEL", "failover", self.master_name)
                if isinstance(rep, Exception):
                    raise HarnessError("SENTINEL FAILOVER: %s" % rep)
                return
        raise HarnessError("no live sentinel")

    def wait_failover(self, old, timeout=30.0):
        """Waits until every live sentinel names a master other than old ((host, port)), and that
        master answers ROLE master. Returns the new (host, port)."""
        def moved():
            addrs = set()
            for i, s in enumerate(self.sentinels):
                if s.alive():
                    addrs.add(self.master_addr(i))
            if len(addrs) != 1:
                return None
            (addr,) = addrs
            if addr == tuple(old):
                return None
            role = resp_command(addr[0], addr[1], "ROLE")
            return addr if isinstance(role, list) and role[0] == b"master" else None
        return wait_until(moved, timeout=timeout, what="failover away from %s:%d" % tuple(old))

    def stop(self):
        for n in self.sentinels + self.servers:
            try:
                n.stop()
            except Exception:  # noqa: BLE001 - stop the others anyway
                pass
