"""Headless Chromium driven through the DevTools protocol, for the browser
tests of test_wake_e2e.py.

    b = Chromium(tmp_dir, log_path)      # starts /usr/bin/chromium --headless=new
    ws_url = b.page_ws_url()             # the about:blank page target
    async with Cdp(ws_url) as cdp:       # python3-websockets (asyncio; 10.4 has no sync client)
        await cdp.send("Page.enable")
        ...
        titles, page = await watch_page(cdp, until, timeout)
    b.stop()                             # by pid (and its own process group); removes tmp_dir

tmp_dir is Chromium's own: its profile, HOME and TMPDIR (where it makes its
org.chromium.Chromium.* singleton directories) are inside it, and stop()
removes it, so no profile or singleton directory is left in /tmp.

Chromium is started through the harness's process registry: its own session
and process group, stdin from /dev/null, output to a log file, stopped by
pid at the end of the test (and by the registry's safety net at exit).
Nothing here touches a network beyond loopback: the flags turn off
background networking, component updates, sync and QUIC, and no proxy is
used.
"""

import asyncio
import base64
import itertools
import json
import os
import pathlib
import shutil
import time
import urllib.request

import websockets

from harness.procs import REGISTRY, reap_zombies
from harness.util import HarnessError, free_port, tail

CHROMIUM = "/usr/bin/chromium"


class Chromium:
    def __init__(self, tmp_dir, log_path, extra_args=(), timeout=30.0):
        if not os.access(CHROMIUM, os.X_OK):
            raise HarnessError("%s not found: install the Debian package chromium (scripts/install-deps.sh)"
                               % CHROMIUM)
        self.dir = pathlib.Path(tmp_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = pathlib.Path(log_path)
        self.port = free_port()
        self.argv = [
            CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-extensions",
            "--disable-dev-shm-usage", "--no-proxy-server", "--disable-features=HttpsUpgrades",
            "--remote-allow-origins=*", "--window-size=1000,700",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=%d" % self.port,
            "--user-data-dir=%s" % (self.dir / "profile"), *extra_args, "about:blank",
        ]
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
        env["HOME"] = str(self.dir)
        # Chromium makes a singleton directory in TMPDIR at every start and
        # leaves it when it is killed: keep it in the directory stop() removes.
        (self.dir / "tmp").mkdir(exist_ok=True)
        env["TMPDIR"] = str(self.dir / "tmp")
        with open(self.log_path, "wb") as f:
            f.write(("--- %s\n" % " ".join(self.argv)).encode())
        self.proc = REGISTRY.spawn("chromium", self.argv, log_path=self.log_path, env=env, cwd=str(self.dir))
        self._wait_up(timeout)

    @property
    def pid(self):
        return self.proc.pid

    def _get_json(self, path, timeout=2.0):
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                "http://127.0.0.1:%d%s" % (self.port, path), timeout=timeout) as r:
            return json.loads(r.read().decode())

    def _wait_up(self, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError("chromium exited with %s before its DevTools port answered\n--- log tail:\n%s"
                                   % (self.proc.returncode, tail(self.log_path, 40)))
            try:
                self._get_json("/json/version", timeout=1.0)
                return
            except (OSError, ValueError) as e:
                last = e
            time.sleep(0.05)
        self.stop()
        raise HarnessError("chromium's DevTools port %d did not answer within %.0fs (%r)\n--- log tail:\n%s"
                           % (self.port, timeout, last, tail(self.log_path, 40)))

    def page_ws_url(self, timeout=10.0):
        """webSocketDebuggerUrl of the first page target (GET /json)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                for t in self._get_json("/json"):
                    if t.get("type") == "page" and t.get("webSocketDebuggerUrl"):
                        return t["webSocketDebuggerUrl"]
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise HarnessError("chromium shows no page target\n--- log tail:\n%s" % tail(self.log_path, 40))
            time.sleep(0.05)

    def stop(self):
        """SIGTERM by pid, SIGKILL after 5 s; then its process group (the
        zygote, renderers and utility processes it forked). Then its
        directory: profile, HOME and TMPDIR."""
        code = REGISTRY.stop(self.proc, timeout=5.0)
        reap_zombies(comm_prefixes=("chrom",))
        if not os.environ.get("WAKEGATE_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        return code


class CdpError(RuntimeError):
    pass


PAGE_JS = ("JSON.stringify({t: document.title, u: location.href, "
           "b: document.body ? document.body.innerText : ''})")


async def watch_page(cdp, until, timeout, interval=0.05, on_page=None):
    """Reads the page ({"t": title, "u": address, "b": text}) every
    `interval` seconds until until(page) is true, awaiting on_page(page) for
    each reading first. Returns the titles it went through, in order, and
    that page, or None when timeout passed first. A reading that fails (a
    navigation replacing the context) is skipped."""
    titles = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = await cdp.evaluate(PAGE_JS, timeout=3)
        except (CdpError, asyncio.TimeoutError):
            await asyncio.sleep(interval)
            continue
        page = json.loads(v) if v else {}
        if not titles or titles[-1] != page.get("t", ""):
            titles.append(page.get("t", ""))
        if on_page:
            await on_page(page)
        if until(page):
            return titles, page
        await asyncio.sleep(interval)
    return titles, None


class Cdp:
    """A DevTools protocol session over one WebSocket. Events are kept in
    .events as (time.monotonic(), method, params), in arrival order."""

    def __init__(self, ws_url):
        self.ws_url = ws_url
        self.ws = None
        self.events = []
        self._ids = itertools.count(1)
        self._waiting = {}
        self._reader = None

    async def __aenter__(self):
        self.ws = await websockets.connect(self.ws_url, max_size=None, ping_interval=None, open_timeout=10)
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc):
        if self._reader:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - closing anyway
                pass
        if self.ws:
            await self.ws.close()

    async def _read(self):
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if "id" in msg:
                    fut = self._waiting.pop(msg["id"], None)
                    if fut and not fut.done():
                        fut.set_result(msg)
                else:
                    self.events.append((time.monotonic(), msg.get("method"), msg.get("params", {})))
        finally:
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(CdpError("DevTools connection closed"))
            self._waiting.clear()

    async def send(self, method, timeout=10.0, **params):
        """One command; returns its result or raises CdpError."""
        i = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._waiting[i] = fut
        await self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        msg = await asyncio.wait_for(fut, timeout)
        if "error" in msg:
            raise CdpError("%s: %s" % (method, msg["error"]))
        return msg.get("result", {})

    async def evaluate(self, expression, timeout=5.0):
        """Runtime.evaluate returning the value; CdpError on an exception in
        the page or while a navigation replaces the context."""
        r = await self.send("Runtime.evaluate", timeout=timeout, expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise CdpError("evaluate: %s" % r["exceptionDetails"].get("text"))
        return r.get("result", {}).get("value")

    async def screenshot(self, path):
        """Page.captureScreenshot to path (PNG); returns its size in bytes."""
        r = await self.send("Page.captureScreenshot", timeout=15.0, format="png")
        data = base64.b64decode(r["data"])
        pathlib.Path(path).write_bytes(data)
        return len(data)

    def events_named(self, method):
        return [(t, p) for (t, m, p) in self.events if m == method]
