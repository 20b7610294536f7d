"""Start the real wakegate binary with a generated configuration.

    gw = start_wakegate({"routes": [...]})          # dict -> YAML, ports filled in
    gw = start_wakegate(yaml_text)                  # str: {{port}}, {{admin_port}},
                                                    # {{listen}}, {{admin_listen}} substituted
    gw.port, gw.admin_port, gw.log_lines(), gw.stop() -> exit code

Listening addresses: for a dict, "listen" and "admin.listen" are set to
127.0.0.1 and harness-chosen free ports unless the dict already has them.
For a YAML string, every placeholder above is substituted; when the text has
no {{listen}}/{{port}} (or no {{admin_listen}}/{{admin_port}}) the address is
passed through WAKEGATE_LISTEN (WAKEGATE_ADMIN_LISTEN) instead.

No Redis unless the test asks: wakegate's default without redis.url is a
private redis-server of its own, but most tests run static routes only. So
a config (dict, or YAML string whose top level is a mapping) without a
top-level "redis" key gets NO_REDIS added; a test that wants the private
server or an external one says so with its own "redis" key (or with
WAKEGATE_REDIS_URL, which wins over the file anyway).

The process environment is the test's environment without any WAKEGATE_*
variable, plus the ones the harness sets, plus `env` (a value of None
removes a variable). stderr and stdout go to files under the artifacts
directory.
"""

import copy
import http.client
import json
import os
import pathlib
import re
import signal
import subprocess
import time

import yaml

from .http1 import ApiResponse
from .procs import REGISTRY, reap_zombies
from .util import REPO_ROOT, HarnessError, free_ports, tail, vm_rss_kib

# Added to configs that have no top-level "redis" key (see the docstring).
NO_REDIS = {"private": {"enabled": False}}

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer")


def clean_env(extra=None):
    """The test process's environment without WAKEGATE_* (so nothing of the
    caller's leaks into a gateway or CLI), plus extra; a None value removes
    the variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAKEGATE_")}
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def wakegate_bin():
    # Absolute: gateways are started from their own temporary directories.
    return pathlib.Path(os.environ.get("WAKEGATE_BIN") or (REPO_ROOT / "build" / "src" / "wakegate")).resolve()


def _port_of(addr):
    return int(str(addr).rsplit(":", 1)[1])


def _add_no_redis(text):
    """Appends NO_REDIS to a block-style YAML mapping without a top-level
    "redis" key. Anything else (flow style, not a mapping, YAML a test made
    invalid on purpose) is left as it is."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if doc is not None and (not isinstance(doc, dict) or "redis" in doc):
        return text
    if text.lstrip().startswith("{"):
        return text
    return text + ("" if text.endswith("\n") or not text else "\n") + "redis: {private: {enabled: false}}\n"


_METRIC_RX = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)$')


class Wakegate:
    """One running wakegate process."""

    def __init__(self, proc, port, admin_port, config_path, stderr_path, stdout_path):
        self.proc = proc
        self.port = port
        self.admin_port = admin_port
        self.config_path = config_path
        self.stderr_path = stderr_path
        self.stdout_path = stdout_path
        self.exit_code = None
        self.admin_host = "127.0.0.1"  # a test that listens elsewhere sets it

    @property
    def pid(self):
        return self.proc.pid

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def admin_url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.admin_port, path)

    def log_lines(self):
        """stderr so far, as a list of lines."""
        try:
            return pathlib.Path(self.stderr_path).read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def stdout_lines(self):
        try:
            return pathlib.Path(self.stdout_path).read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def log_tail(self, n=40):
        return tail(self.stderr_path, n)

    def wait_log(self, pattern, timeout=5.0):
        """Wait until a stderr line matches the regex pattern; return the line."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_lines():
                if rx.search(line):
                    return line
            if time.monotonic() > deadline:
                raise TimeoutError("no log line matching %r in %.1fs; tail:\n%s" % (pattern, timeout, self.log_tail()))
            time.sleep(0.02)

    def alive(self):
        return self.proc.poll() is None

    def rss_kib(self):
        """VmRSS of the process in KiB, from /proc/PID/status."""
        kib = vm_rss_kib(self.pid)
        if kib is None:
            raise HarnessError("no VmRSS for pid %d" % self.pid)
        return kib

    def fd_count(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def send_signal(self, sig):
        os.kill(self.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Send sig by pid, wait up to timeout (then SIGKILL). Returns the exit
        code: 0.. for a normal exit, -N when killed by signal N. Idempotent."""
        if self.exit_code is None:
            self.exit_code = REGISTRY.stop(self.proc, sig=sig, timeout=timeout)
        return self.exit_code

    def wait_exit(self, timeout=10.0):
        """Wait for the process to exit on its own; returns the exit code."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError("wakegate pid %d still running after %.1fs; tail:\n%s" % (self.pid, timeout, self.log_tail())) from None
        return self.stop()

    def healthz(self, timeout=1.0):
        """Status of GET /healthz on the admin listener, or None if it does not answer."""
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        try:
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            r.read()
            return r.status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def admin(self, method, path, body=None, token=None, headers=None, timeout=10.0):
        """One request to the admin listener; returns an ApiResponse.

        body: a dict or list goes as JSON, bytes or str as they are, either
        with Content-Type: application/json; token: sent as a Bearer
        Authorization; headers: added last, so they win."""
        h = {}
        if token is not None:
            h["Authorization"] = "Bearer " + token
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        conn = http.client.HTTPConnection(self.admin_host, self.admin_port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            raw = r.read()
            hdrs = {}
            for k, v in r.getheaders():  # a repeated field: its values joined, as getheader() does
                hdrs[k.lower()] = hdrs[k.lower()] + ", " + v if k.lower() in hdrs else v
            return ApiResponse(r.status, hdrs, raw)
        finally:
            conn.close()

    def readyz(self, timeout=2.0):
        """(status, body) of GET /readyz, or (None, b"") when it does not answer."""
        try:
            r = self.admin("GET", "/readyz", timeout=timeout)
        except (OSError, http.client.HTTPException):
            return None, b""
        return r.status, r.body

    def wait_ready(self, timeout=15.0):
        """Until /readyz answers 200; an AssertionError with the last answer
        and the stderr tail when it does not in time or the process exits."""
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.readyz()
            if status == 200:
                return
            if not self.alive() or time.monotonic() >= deadline:
                raise AssertionError("wakegate pid %d: /readyz %r %r after %.1fs (exit %r); stderr tail:\n%s"
                                     % (self.pid, status, body[:300], timeout, self.proc.poll(), self.log_tail()))
            time.sleep(0.02)

    def metrics(self):
        """/metrics as {"name{labels}": float}."""
        r = self.admin("GET", "/metrics", timeout=3.0)
        assert r.status == 200, "/metrics answered %d" % r.status
        out = {}
        for line in r.body.decode().splitlines():
            if not line or line.startswith("#"):
                continue
            m = _METRIC_RX.match(line.strip())
            assert m, "unparsable metrics line %r" % line
            out[m.group(1)] = float(m.group(2))
        return out

    def sanitizer_reports(self):
        return [line for line in self.log_lines() if any(m in line for m in SANITIZER_MARKERS)]


class WakegateFactory:
    """Callable: start_wakegate(config=None, env=None, args=None, wait=True, timeout=10)."""

    def __init__(self, base_dir, log_dir):
        self.dir = pathlib.Path(base_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = pathlib.Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.instances = []
        self.label = "wakegate"
        self._n = 0

    @property
    def bin(self):
        return wakegate_bin()

    def _check_bin(self):
        b = self.bin
        if not os.access(b, os.X_OK):
            raise HarnessError("wakegate binary %s not found or not executable; build it (meson compile -C build) or set WAKEGATE_BIN" % b)
        return b

    def _next_paths(self):
        self._n += 1
        stem = "%s-%d" % (re.sub(r"[^A-Za-z0-9_.-]+", "_", self.label)[:80], self._n)
        return self.dir / (stem + ".yaml"), self.log_dir / (stem + ".stderr.log"), self.log_dir / (stem + ".stdout.log")

    def write_config(self, config, path):
        """Write config to path; returns (port, admin_port, extra_env)."""
        port, admin_port = free_ports(2)
        extra_env = {}
        if config is None:
            config = {}
        if isinstance(config, dict):
            cfg = copy.deepcopy(config)
            if "listen" in cfg:
                port = _port_of(cfg["listen"])
            else:
                cfg["listen"] = "127.0.0.1:%d" % port
            admin = cfg.setdefault("admin", {}) or {}
            cfg["admin"] = admin
            if "listen" in admin:
                admin_port = _port_of(admin["listen"])
            else:
                admin["listen"] = "127.0.0.1:%d" % admin_port
            if "redis" not in cfg:
                cfg["redis"] = copy.deepcopy(NO_REDIS)
            text = yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False)
        else:
            text = str(config)
            has_listen = "{{listen}}" in text or "{{port}}" in text
            has_admin = "{{admin_listen}}" in text or "{{admin_port}}" in text
            text = (text.replace("{{listen}}", "127.0.0.1:%d" % port).replace("{{port}}", str(port))
                        .replace("{{admin_listen}}", "127.0.0.1:%d" % admin_port).replace("{{admin_port}}", str(admin_port)))
            if not has_listen:
                extra_env["WAKEGATE_LISTEN"] = "127.0.0.1:%d" % port
            if not has_admin:
                extra_env["WAKEGATE_ADMIN_LISTEN"] = "127.0.0.1:%d" % admin_port
            text = _add_no_redis(text)
        pathlib.Path(path).write_text(text)
        return port, admin_port, extra_env

    def __call__(self, config=None, env=None, args=None, wait=True, timeout=10.0):
        """Start wakegate; with wait, block until admin /healthz answers 200.

        On timeout or early exit raise HarnessError with the stderr tail. The
        listen ports from the env (WAKEGATE_LISTEN...) win over the file's,
        as in the binary itself.
        """
        b = self._check_bin()
        config_path, stderr_path, stdout_path = self._next_paths()
        port, admin_port, extra_env = self.write_config(config, config_path)
        merged = dict(extra_env)
        merged.update(env or {})
        if merged.get("WAKEGATE_LISTEN"):
            port = _port_of(merged["WAKEGATE_LISTEN"])
        if merged.get("WAKEGATE_ADMIN_LISTEN"):
            admin_port = _port_of(merged["WAKEGATE_ADMIN_LISTEN"])
        argv = [b, "--config", config_path, *(args or [])]
        # Truncate: artifacts outlive a run, and log_lines() must see this run only.
        with open(stderr_path, "wb") as f:
            f.write(("--- harness: %s\n" % " ".join(str(a) for a in argv)).encode())
        proc = REGISTRY.spawn("wakegate", argv, stdout_path=stdout_path, stderr_path=stderr_path, env=clean_env(merged),
                              cwd=self.dir)
        gw = Wakegate(proc, port, admin_port, config_path, stderr_path, stdout_path)
        self.instances.append(gw)
        if wait:
            deadline = time.monotonic() + timeout
            while gw.healthz(timeout=0.5) != 200:
                if proc.poll() is not None:
                    code = gw.stop()
                    raise HarnessError("wakegate exited with code %s before /healthz answered 200\n--- stderr tail:\n%s" % (code, gw.log_tail()))
                if time.monotonic() > deadline:
                    gw.stop()
                    raise HarnessError("wakegate /healthz on 127.0.0.1:%d did not answer 200 within %.1fs\n--- stderr tail:\n%s" % (admin_port, timeout, gw.log_tail()))
                time.sleep(0.02)
        return gw

    def run(self, args, env=None, timeout=10.0, input=None):
        """Run the binary to completion (e.g. --check-config); returns CompletedProcess (text)."""
        b = self._check_bin()
        return subprocess.run([str(b), *[str(a) for a in args]], env=clean_env(env), capture_output=True, text=True,
                              timeout=timeout, input=input)

    def stop_all(self):
        """Stop every instance this factory started; return their sanitizer reports."""
        reports = []
        for gw in self.instances:
            gw.stop()
            reports += gw.sanitizer_reports()
        self.instances = []
        reap_zombies()  # shims of containers wakegate started (we are their subreaper)
        return reports
