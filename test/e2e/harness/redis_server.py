"""A private redis-server on a unix socket and a loopback TCP port, no persistence."""

import os
import pathlib
import socket
import time

from .procs import REGISTRY
from .util import HarnessError, free_port, tail, wait_until

REDIS_SERVER = "/usr/bin/redis-server"


class RedisServer:
    """One redis-server. start() and stop() may be called again for restart tests;
    the port, the socket path and the log file stay the same across restarts."""

    def __init__(self, base_dir, log_dir, port=None, bind="127.0.0.1"):
        self.dir = pathlib.Path(base_dir)
        self.bind = bind
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.unix_path = str(self.dir / "redis.sock")
        self.log_path = pathlib.Path(log_dir) / "redis.log"
        self.proc = None

    @property
    def url(self):
        return "redis://%s:%d/0" % (self.bind, self.port)

    @property
    def unix_url(self):
        return "unix://%s" % self.unix_path

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def argv(self):
        return [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", self.bind,
            # Off the loopback, Redis's protected mode refuses every client
            # of a server without a password, ours included.
            "--protected-mode", "yes" if self.bind == "127.0.0.1" else "no",
            "--unixsocket", self.unix_path,
            "--unixsocketperm", "700",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", "",
            "--databases", "16",
        ]

    def start(self, timeout=10.0):
        if self.proc is not None and self.proc.poll() is None:
            return self
        if not os.access(REDIS_SERVER, os.X_OK):
            raise HarnessError("%s not found: install the Debian package redis-server (scripts/install-deps.sh)" % REDIS_SERVER)
        with open(self.log_path, "ab") as f:
            f.write(b"--- harness: starting redis-server at %.3f\n" % time.time())
        self.proc = REGISTRY.spawn("redis-server", self.argv(), log_path=self.log_path, cwd=self.dir)
        try:
            wait_until(self._pong, timeout=timeout, what="redis-server PING on %s" % self.unix_path)
        except (TimeoutError, HarnessError) as e:
            code = self.proc.poll()
            self.stop()
            raise HarnessError("redis-server did not answer (exit code %s): %s\n--- log tail:\n%s" % (code, e, tail(self.log_path))) from None
        return self

    def _pong(self):
        if self.proc.poll() is not None:
            raise HarnessError("redis-server exited with %s" % self.proc.returncode)
        return self.command("PING") == b"+PONG"

    def command(self, *args, timeout=2.0):
        """Send one command over the TCP port in RESP and return the raw first reply line."""
        payload = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            payload += b"$%d\r\n%s\r\n" % (len(a), a)
        with socket.create_connection((self.bind, self.port), timeout=timeout) as s:
            s.sendall(payload)
            buf = b""
            while b"\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        return buf.split(b"\r\n", 1)[0]

    def stop(self, timeout=10.0):
        """SIGTERM by pid (no save is configured, so it exits at once). Returns the exit code."""
        if self.proc is None:
            return None
        code = REGISTRY.stop(self.proc, timeout=timeout)
        self.proc = None
        return code

    def restart(self):
        self.stop()
        return self.start()

    def flushall(self):
        return self.command("FLUSHALL")
