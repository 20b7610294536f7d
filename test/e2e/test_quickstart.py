"""The README's quickstart, end to end: `scripts/demo.sh` as a user runs it.

The script installs (a no-op here), builds the release binary, builds the
demo image, starts wakegate with its own private redis-server, and creates
the session s-demo whose work goes to a bare git repository. The engine is
the test's private dockerd (WAKEGATE_DOCKER_HOST), so no traffic leaves the
machine. Then the story a reader follows: a browser opens the session (the
waking page, then the app), the counter is bumped, the idle session saves
the counter to git and stops, and the next visit wakes it with the counter
intact. Ctrl-C ends the script, and nothing it started is left running.
`wakegatectl` is the one the script installs (in a directory of the test's,
WAKEGATE_DEMO_BINDIR), run as the README writes it: no --config. The demo
with an engine of its own, and what Ctrl-C leaves: test_demo_hygiene.py.
"""

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import urllib.request

import pytest

from browser_util import Cdp, Chromium, watch_page
from demo_util import DemoScript
from harness.procs import processes_matching
from harness.util import free_port, wait_for

pytestmark = pytest.mark.docker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SESSION = "s-demo"
GIT = "/usr/bin/git"


class Script(DemoScript):
    def interrupt(self, timeout=30):
        return self.ctrl_c(timeout)


def http(url, host=None, timeout=15):
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read().decode()


def ctl_env(bindir):
    """The environment of a shell after the demo: its bin directory first on
    PATH, no WAKEGATE_* of the test's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAKEGATE_")}
    env["PATH"] = "%s:%s" % (bindir, env.get("PATH", "/usr/bin:/bin"))
    return env


def ctl_json(bindir, *args):
    out = subprocess.run(["wakegatectl", "--json"] + list(args), capture_output=True,
                         text=True, timeout=20, env=ctl_env(bindir))
    assert out.returncode == 0, (out.returncode, out.stderr)
    return json.loads(out.stdout)


async def browse(ws_url, url, want, timeout=40.0):
    """Navigate once; poll the DOM until `want` is in the page. Returns the
    titles seen and the final text."""
    async with Cdp(ws_url) as cdp:
        await cdp.send("Page.enable")
        nav = await cdp.send("Page.navigate", url=url)
        assert not nav.get("errorText"), nav
        titles, page = await watch_page(cdp, lambda p: want in p.get("b", ""), timeout, interval=0.1)
    assert page, "the page never showed %r; titles %r" % (want, titles)
    return titles, page["b"]


def test_quickstart_shows_the_whole_story(dockerd, e2e_tmp, artifacts):
    state = tempfile.mkdtemp(prefix="quickstart-", dir=e2e_tmp)
    bindir = os.path.join(state, "bin")
    port, admin = free_port(), free_port()
    env = dict(os.environ, WAKEGATE_DEMO_DIR=state, WAKEGATE_DEMO_PORT=str(port),
               WAKEGATE_DEMO_ADMIN=str(admin), WAKEGATE_DEMO_STOP_AFTER="4s",
               WAKEGATE_DOCKER_HOST=dockerd.host, WAKEGATE_DEMO_BINDIR=bindir)
    script = Script(env, artifacts / "quickstart.log")
    browser = None
    try:
        script.wait_line("quickstart: ready", timeout=900)  # a fresh release build on CI
        out = "\n".join(script.lines)
        assert "http://%s.localhost:%d/" % (SESSION, port) in out, out
        remote = os.path.join(state, "remotes", SESSION + ".git")

        # Its own Redis: a redis-server child of wakegate on a unix socket.
        assert os.path.exists(os.path.join(state, "redis")), os.listdir(state)
        rec = ctl_json(bindir, "show", SESSION)
        assert rec["state"] == "asleep" and not rec.get("container_id"), rec

        # A browser wakes it: the app with the session id (the waking page
        # first only when the wake is longer than sessions.page_after).
        browser = Chromium(tempfile.mkdtemp(prefix="chromium-", dir=e2e_tmp),
                           artifacts / "chromium-quickstart.log")
        url = "http://%s.localhost:%d/" % (SESSION, port)
        titles, body = asyncio.run(browse(browser.page_ws_url(), url, "Counter"))
        assert SESSION in body, body
        assert titles and titles[-1].startswith("wakegate demo"), titles
        assert ctl_json(bindir, "show", SESSION)["state"] == "running"

        # Count twice; nothing is saved yet.
        base = "http://127.0.0.1:%d/s/%s/" % (port, SESSION)
        for _ in range(2):
            st, page = http(base + "?incr=1")
            assert st == 200
        assert 'id="counter">2<' in page, page

        # Idle: saved to git, then stopped.
        seen = [None]

        def asleep():
            seen[0] = ctl_json(bindir, "show", SESSION)
            return seen[0]["state"] == "asleep"
        wait_for(asleep, 60, lambda: "the session to sleep: %r" % (seen[0],), interval=0.5)
        rec = seen[0]
        assert rec["state"] == "asleep", rec
        assert rec["last_save"]["ok"] is True, rec
        saved = subprocess.run([GIT, "--git-dir", remote, "show", "main:counter.txt"], check=True,
                               capture_output=True, text=True).stdout
        assert saved.strip() == "2"
        head = subprocess.run([GIT, "--git-dir", remote, "rev-parse", "main"], check=True,
                              capture_output=True, text=True).stdout.strip()
        assert rec["last_save"]["commit"] == head
        assert not dockerd.inspect(rec["container_id"])["State"]["Running"]

        # The next visit wakes it, counter intact.
        titles, body = asyncio.run(browse(browser.page_ws_url(), url, "Counter"))
        assert "Counter: 2" in body, body
        listing = subprocess.run(["wakegatectl", "ls"], capture_output=True, text=True, timeout=20,
                                 env=ctl_env(bindir))
        assert listing.returncode == 0 and SESSION in listing.stdout and "running" in listing.stdout, listing
    finally:
        if browser:
            browser.stop()
        rc = script.interrupt() if script.p.poll() is None else script.p.returncode
        script.kill()
    assert rc == 0, rc
    # Nothing it started is left: no wakegate or redis-server using its state dir.
    assert not processes_matching(state)
    shutil.rmtree(state)

