"""Small helpers shared by every fixture: ports, polling, paths, log tails."""

import ctypes
import os
import pathlib
import socket
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]


class HarnessError(RuntimeError):
    """A real dependency could not be started or stopped. Tests fail on it, never skip."""


def free_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago on host.

    The kernel picks it from the ephemeral range, so two calls in one run
    rarely collide; the caller binds it soon after. SO_REUSEADDR is not set so
    a port in TIME_WAIT is not handed out.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(n, host="127.0.0.1"):
    """n distinct free ports, all held open until every one is chosen."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until(fn, timeout=10.0, interval=0.02, what=None):
    """Call fn until it returns a truthy value; return that value.

    Exceptions from fn count as "not yet", except HarnessError, which means it
    never will be (a daemon exited) and propagates at once. On timeout raise
    TimeoutError whose message names `what` and the last exception seen.
    """
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except HarnessError:
            raise
        except Exception as e:  # noqa: BLE001 - polling treats errors as "not yet"
            last_exc = e
        if time.monotonic() >= deadline:
            msg = "timed out after %.1fs waiting for %s" % (timeout, what or getattr(fn, "__name__", "condition"))
            if last_exc is not None:
                msg += " (last error: %r)" % (last_exc,)
            raise TimeoutError(msg)
        time.sleep(interval)


def wait_for(pred, timeout, what, interval=0.02):
    """Call pred until it returns a truthy value; return that value.

    Unlike wait_until, an exception from pred is a failure, not "not yet":
    these waits check what wakegate answers, and an error there must show.
    On timeout raise AssertionError naming `what` (a string, or a callable
    returning one, called only then: a log tail, the last value seen).
    """
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what() if callable(what) else what))
        time.sleep(interval)


def now_ms():
    """The wall clock in milliseconds, as wakegate writes times into Redis."""
    return int(time.time() * 1000)


def tail(path, lines=40):
    """The last `lines` lines of a text file, or a note that it is missing."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return "<%s: %s>" % (path, e)
    return "\n".join(data.splitlines()[-lines:])


def artifacts_dir():
    """Where logs are kept after the run: $WAKEGATE_ARTIFACTS or <repo>/test-artifacts/e2e."""
    d = pathlib.Path(os.environ.get("WAKEGATE_ARTIFACTS") or (REPO_ROOT / "test-artifacts")) / "e2e"
    d.mkdir(parents=True, exist_ok=True)
    return d


def vm_rss_kib(pid):
    """VmRSS of pid in KiB (from /proc/PID/status), or None when it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def tcp_connectable(host, port, timeout=0.05):
    """True if a TCP connect to host:port succeeds within timeout."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


MNT_DETACH = 2


def mounts_under(path):
    """Mount points at or below path, deepest first (from /proc/self/mountinfo)."""
    prefix = str(path).rstrip("/") + "/"
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == prefix[:-1] or mp.startswith(prefix):
                out.append(mp)
    return sorted(set(out), key=len, reverse=True)


def umount_all(path):
    """Lazily unmount everything at or below path; return what could not be unmounted."""
    libc = ctypes.CDLL(None, use_errno=True)
    left = []
    for mp in mounts_under(path):
        if libc.umount2(mp.encode(), MNT_DETACH) != 0:
            left.append("%s (%s)" % (mp, os.strerror(ctypes.get_errno())))
    return left


class TcpServer:
    """A TCP listener on host that takes each connection, reads one request's
    bytes when it has an answer to send, sends answer (bytes) and closes.
    Without an answer it accepts and closes: something to connect to.
    .port, .accepted, close()."""

    def __init__(self, host="127.0.0.1", answer=None):
        import threading

        self.answer = answer
        self.accepted = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            try:
                if self.answer is not None:
                    c.settimeout(2)
                    c.recv(65536)
                    c.sendall(self.answer)
            except OSError:
                pass
            finally:
                c.close()

    def close(self):
        self.sock.close()
