"""scripts/demo.sh driven as a user at a terminal drives it (test_quickstart.py,
test_demo_hygiene.py)."""

import os
import signal
import subprocess
import threading
import time

from harness.util import terminal_signals

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class DemoScript:
    """scripts/demo.sh in its own process group, with SIGINT as a terminal
    gives it; stdout collected in .lines, stderr to log_path."""

    def __init__(self, env, log_path):
        self.lines = []
        self.log = open(log_path, "w")
        self.p = subprocess.Popen(["bash", os.path.join(ROOT, "scripts/demo.sh")], cwd=ROOT, env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log,
                                  text=True, start_new_session=True, preexec_fn=terminal_signals)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, text, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in ln for ln in self.lines):
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError("demo.sh never printed %r (exit %r); stdout:\n%s" % (
            text, self.p.poll(), "\n".join(self.lines[-40:])))

    def ctrl_c(self, timeout=30):
        """Ctrl-C at the terminal: SIGINT to the process group. The exit code."""
        os.killpg(self.p.pid, signal.SIGINT)
        rc = self.p.wait(timeout)
        self.t.join(10)
        return rc

    def kill(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait(10)
        self.log.close()
