"""Every process the harness starts is recorded here and stopped by its pid.

Nothing in the harness stops a process by name. Fixtures stop their own
processes in teardown; `stop_all()` runs at session end and from atexit as a
safety net, so a failing test, an exception in a fixture or a Ctrl-C still
leaves nothing behind.

Processes are started in their own session (setsid) so a Ctrl-C on the
terminal reaches pytest only, and pytest's teardown stops them in order
(dockerd before containerd, say) instead of everything dying at once.
"""

import atexit
import ctypes
import errno
import os
import signal
import subprocess
import threading
import time

PR_SET_CHILD_SUBREAPER = 36


class Registry:
    def __init__(self):
        self._lock = threading.Lock()
        self._procs = []  # [(name, Popen)] in start order

    def spawn(self, name, argv, *, log_path=None, stdout_path=None, stderr_path=None, env=None, cwd=None):
        """Start argv with stdin from /dev/null and output to files; record it.

        log_path sends stdout and stderr to one file. Otherwise stdout_path and
        stderr_path are used (None means /dev/null). Returns the Popen.
        """
        files = []
        try:
            if log_path is not None:
                out = open(log_path, "ab")
                files.append(out)
                err = subprocess.STDOUT
            else:
                out = open(stdout_path, "ab") if stdout_path else subprocess.DEVNULL
                if stdout_path:
                    files.append(out)
                err = open(stderr_path, "ab") if stderr_path else subprocess.DEVNULL
                if stderr_path:
                    files.append(err)
            p = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=cwd,
                close_fds=True,
                start_new_session=True,
            )
        finally:
            for f in files:
                f.close()
        p.wg_name = name
        with self._lock:
            self._procs.append((name, p))
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=10.0):
        """Send sig to p's pid, wait up to timeout, then SIGKILL. Returns the exit code.

        Idempotent: a process that already exited is only reaped. The exit code
        follows Popen: negative for a signal.
        """
        try:
            if p.poll() is None:
                try:
                    os.kill(p.pid, sig)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    try:
                        os.kill(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    p.wait(timeout=10)
            # Each spawned process leads its own group (start_new_session), so
            # its pid names exactly the helpers it forked (nginx workers, say).
            # The group id cannot be reused while any member lives.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            _reap_group(p.pid)
            return p.returncode
        finally:
            self.forget(p)

    def forget(self, p):
        with self._lock:
            self._procs = [(n, q) for (n, q) in self._procs if q is not p]

    def alive(self):
        with self._lock:
            return [(n, p) for (n, p) in self._procs if p.poll() is None]

    def stop_all(self, timeout=5.0):
        """Stop every recorded process, newest first. Returns the names stopped."""
        with self._lock:
            procs = list(reversed(self._procs))
        stopped = []
        for name, p in procs:
            if p.poll() is None:
                stopped.append("%s[%d]" % (name, p.pid))
            try:
                self.stop(p, timeout=timeout)
            except Exception:  # noqa: BLE001 - the safety net must go on
                pass
        return stopped


REGISTRY = Registry()
atexit.register(REGISTRY.stop_all)


def become_subreaper():
    """Make this process the reaper of orphans of the processes it starts.

    containerd shims double-fork away from containerd. Without this they are
    re-parented to PID 1, which on some CI VMs never reaps, so each run would
    leave <defunct> entries. As a subreaper we adopt them and reap them by pid
    in `reap_adopted()`. Returns True on success.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except Exception:  # noqa: BLE001
        return False


def proc_stat(pid):
    """(comm, state, ppid, pgrp) of pid from /proc, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    lpar, rpar = data.index("("), data.rindex(")")
    comm = data[lpar + 1 : rpar]
    rest = data[rpar + 2 :].split()
    return comm, rest[0], int(rest[1]), int(rest[2])


def pid_gone(pid, reap=False):
    """True when pid has exited: no /proc entry, or a zombie. With reap, a
    zombie is reaped (pytest is a child subreaper, so an orphan is ours)."""
    st = proc_stat(pid)
    if st is None:
        return True
    if st[1] != "Z":
        return False
    if reap:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    return True


def _reap_group(pgid, timeout=2.0):
    """Reap members of process group pgid that were re-parented to us (we are a
    subreaper) after their leader died; they are ours and nobody else waits
    for them."""
    me = os.getpid()
    deadline = time.monotonic() + timeout
    while True:
        pending = False
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            st = proc_stat(int(name))
            if st is None or st[2] != me or st[3] != pgid:
                continue
            try:
                done, _ = os.waitpid(int(name), os.WNOHANG)
            except ChildProcessError:
                continue
            if done == 0:
                pending = True
        if not pending or time.monotonic() > deadline:
            return
        time.sleep(0.02)


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def processes_matching(substring):
    """Pids of live processes whose command line contains substring."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            pid = int(name)
            if pid != os.getpid() and substring in _cmdline(pid):
                out.append(pid)
    return out


def reap_adopted(cmdline_marker, comm_prefixes=("containerd-shim",), kill_after=5.0):
    """Stop and reap the orphans we adopted that belong to one of our daemons.

    An orphan is ours if its command line contains cmdline_marker (a path
    inside that daemon's private directory). Zombie children whose comm starts
    with one of comm_prefixes are reaped by pid: we never start such programs
    directly, so their exit status is nobody else's. Live matches get SIGTERM,
    then SIGKILL after kill_after seconds.
    """
    deadline = time.monotonic() + kill_after
    killed = False
    while True:
        live = processes_matching(cmdline_marker)
        if not live:
            break
        for pid in live:
            try:
                os.kill(pid, signal.SIGKILL if time.monotonic() > deadline else signal.SIGTERM)
                killed = True
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline + 2:
            break
        time.sleep(0.1)
    reap_zombies(comm_prefixes)
    return killed


def reap_zombies(comm_prefixes=("containerd-shim",)):
    """Reap our zombie children whose comm starts with one of comm_prefixes.
    The short-lived `containerd-shim-runc-v2 start` process exits after
    daemonizing, and as a subreaper we inherit it; we never start such
    programs ourselves, so no one else waits for them."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = proc_stat(int(name))
        if st and st[2] == me and st[1] == "Z" and st[0].startswith(tuple(comm_prefixes)):
            try:
                os.waitpid(int(name), os.WNOHANG)
            except ChildProcessError:
                pass
            except OSError as e:
                if e.errno != errno.ECHILD:
                    raise


OWNER_FILE = "owner.pid"


def cleanup_stale_sessions(parent="/tmp", prefix="wg-e2e-"):
    """Clean up after harness sessions that died without teardown (SIGKILL, OOM).

    A session directory holds owner.pid, the pid of its pytest. If that pid is
    gone, these are killed by pid: every process whose command line names the
    directory (dockerd, containerd, shims, nginx, wakegate) or whose working
    directory is inside it (redis-server, which rewrites its command line;
    every spawned process starts in the session tree), plus the containers in
    its cgroup. Then its mounts are detached and the directory is removed.
    Returns the directories cleaned.
    """
    import shutil

    from .util import umount_all

    cleaned = []
    for name in sorted(os.listdir(parent)):
        d = os.path.join(parent, name)
        if not name.startswith(prefix) or not os.path.isdir(d):
            continue
        try:
            with open(os.path.join(d, OWNER_FILE)) as f:
                owner = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if os.path.exists("/proc/%d" % owner):
            continue
        victims = (set(processes_matching(d + "/")) | set(processes_with_cwd_under(d))
                   | set(processes_in_cgroup(cgroup_parent_name(owner))))
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
                # Our processes lead their own group; take helpers such as
                # nginx workers, whose command lines do not name the directory.
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.2)
        remove_cgroup_dirs(cgroup_parent_name(owner))
        umount_all(d)
        shutil.rmtree(d, ignore_errors=True)
        cleaned.append(d)
    return cleaned


def processes_with_cwd_under(path):
    """Pids whose working directory is path or below (it may be deleted already).
    Catches programs that rewrite their command line, such as redis-server."""
    prefix = path.rstrip("/") + "/"
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cwd = os.readlink("/proc/%s/cwd" % entry)
            except OSError:
                continue
            if cwd == prefix[:-1] or cwd.startswith(prefix):
                out.append(int(entry))
    return out


def cgroup_parent_name(owner_pid):
    """The cgroup parent our dockerd gives its containers (--cgroup-parent)."""
    return "wg-e2e-docker-%d" % owner_pid


def processes_in_cgroup(name):
    """Pids whose cgroup path contains /name/ (containers of a given dockerd)."""
    out = []
    needle = "/%s/" % name
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cgroup" % entry) as f:
                    if needle in f.read():
                        out.append(int(entry))
            except OSError:
                pass
    return out


def remove_cgroup_dirs(name):
    """rmdir the (now empty) cgroup directories called name under every hierarchy."""
    base = "/sys/fs/cgroup"
    candidates = [os.path.join(base, name)]
    try:
        candidates += [os.path.join(base, h, name) for h in os.listdir(base)]
    except OSError:
        pass
    for d in candidates:
        if os.path.isdir(d):
            for sub in os.listdir(d):
                p = os.path.join(d, sub)
                if os.path.isdir(p):
                    try:
                        os.rmdir(p)
                    except OSError:
                        pass
            try:
                os.rmdir(d)
            except OSError:
                pass
