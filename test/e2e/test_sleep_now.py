"""End-to-end tests of "save and stop now" (issue 11).

An operator can save and stop a session that is in use: a tab's WebSocket
is open through the gateway, which keeps writing the session's activity.
A plain sleep is called off by that use (409); `POST
/v1/sessions/{id}/sleep?now=1` (and `wakegatectl sleep ID --now`) drains,
runs the save hook, stops the container and answers once the session is
asleep; the commit is in the session's bare remote and the WebSocket is
closed. A save that fails keeps the container awake and the answer says
why (409, with the hook's output).

Everything is real: the wakegate binary (role all), a redis-server, the
harness's private dockerd and git; the session's remote is a bare
repository on the host (test_sleep.py's helpers).
"""

import asyncio
import subprocess
import threading
import time

import pytest

from harness.util import wait_for
from test_ctl import ctl_bin, ctl_env, no_sanitizer_reports
from test_sleep import remote_head, remote_show, session_with_work, sleep_config

pytestmark = pytest.mark.docker


@pytest.fixture
def stack(stack, ws_image):
    return stack


def now_config(stack):
    # An idle tier far away: only the command puts the session to sleep.
    return sleep_config(stack, stop_after="10m")


class OpenSocket:
    """A WebSocket to the session through the gateway, held open in a thread
    (sending nothing; the gateway counts it as activity); records how it
    ended."""

    def __init__(self, gw, sid):
        self.url = "ws://127.0.0.1:%d/ws/%s/" % (gw.port, sid)
        self.opened = threading.Event()
        self.closed = threading.Event()
        self.close_code = None
        self.error = None
        self._stop = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()
        assert self.opened.wait(15), self.error

    async def _run(self):
        import websockets
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with websockets.connect(self.url, ping_interval=None, open_timeout=10) as ws:
                self.opened.set()
                try:
                    stop = asyncio.ensure_future(self._stop.wait())
                    recv = asyncio.ensure_future(ws.recv())
                    await asyncio.wait({stop, recv}, return_when=asyncio.FIRST_COMPLETED)
                    if recv.done():
                        recv.result()
                    else:
                        recv.cancel()
                except websockets.ConnectionClosed as e:
                    self.close_code = e.code
        except Exception as e:  # noqa: BLE001 - recorded for the assertion message
            self.error = repr(e)
        finally:
            self.closed.set()
            self.opened.set()

    def close(self):
        if self._stop is not None and not self.closed.is_set():
            self._loop.call_soon_threadsafe(self._stop.set)
        self.closed.wait(10)


def api_sleep(stack, sid, query):
    return stack.api("POST", "/v1/sessions/%s/sleep?%s" % (sid, query), timeout=60)


def test_plain_sleep_is_called_off_by_an_open_websocket(stack, tmp_path):
    """What an operator gets without now=1: the open tab wins."""
    stack.start(config=now_config(stack))
    sid = "s-busy"
    bare, rec = session_with_work(stack, tmp_path, sid, "busy work")
    sock = OpenSocket(stack.gw, sid)
    time.sleep(0.5)  # the stream's activity is written
    st, body = api_sleep(stack, sid, "wait=1")
    assert st == 409, (st, body)
    assert "the session was used" in body["error"], body
    assert stack.record(sid)["state"] == "running"
    assert not sock.closed.is_set()
    sock.close()
    assert stack.gw.stop() == 0


def test_save_and_stop_now_with_an_open_websocket(stack, tmp_path):
    stack.start(config=now_config(stack))
    sid = "s-now"
    bare, rec = session_with_work(stack, tmp_path, sid, "work to keep")
    before = remote_head(bare)
    sock = OpenSocket(stack.gw, sid)
    time.sleep(0.5)

    st, body = api_sleep(stack, sid, "wait=1&now=1")
    assert st == 200, (st, body)
    assert body["state"] == "asleep", body
    # The work is in the remote, in the commit the record names.
    assert remote_show(bare) == "work to keep\n"
    head = remote_head(bare)
    assert head != before and body["last_save"]["ok"] is True, body
    assert body["last_save"]["commit"] == head, (body["last_save"], head)
    assert not stack.dockerd.inspect(rec["container_id"])["State"]["Running"]
    # The client's stream ended with the session: "going away", from the
    # gateway, before the app's own end of the socket.
    assert sock.closed.wait(10), "the WebSocket is still open"
    assert sock.close_code == 1001, (sock.close_code, sock.error)
    # In order: drained, saved, stopped, with the command's detail.
    tail = stack.transitions(sid)[-4:]
    assert tail == [("running", "draining"), ("draining", "saving"), ("saving", "stopping"),
                    ("stopping", "asleep")], tail
    ev = [e for e in stack.events(sid) if e.get("to") == "draining"][-1]
    assert ev["detail_json"].get("now") is True, ev
    assert stack.gw.stop() == 0


def test_a_failed_save_keeps_the_session_running_and_says_why(stack, tmp_path):
    stack.start(config=now_config(stack))
    sid = "s-nowfail"
    bare, rec = session_with_work(stack, tmp_path, sid, "unsaveable",
                                  pre_receive="echo 'push refused by policy' >&2; exit 1")
    before = remote_head(bare)
    sock = OpenSocket(stack.gw, sid)
    time.sleep(0.5)

    st, body = api_sleep(stack, sid, "wait=1&now=1")
    assert st == 409, (st, body)
    assert "the save failed" in body["error"], body
    assert body["session"]["state"] == "running", body
    assert body["session"]["last_save"]["ok"] is False, body
    assert "push refused by policy" in body["session"]["last_save"]["output"], body
    assert remote_head(bare) == before
    assert stack.dockerd.inspect(rec["container_id"])["State"]["Running"]
    wait_for(lambda: stack.record(sid)["state"] == "running", 5, "running again")
    assert "stopping" not in [to for _, to in stack.transitions(sid)]
    sock.close()
    assert stack.gw.stop() == 0


def test_now_and_force_together_are_refused(stack, tmp_path):
    stack.start(config=now_config(stack))
    st, body = api_sleep(stack, "nobody", "now=1&force=1")
    assert st == 400 and "send one" in body["error"], (st, body)
    st, body = api_sleep(stack, "nobody", "now=maybe")
    assert st == 400 and "query now" in body["error"], (st, body)
    assert stack.gw.stop() == 0


def ctl(stack, *args, timeout=90):
    p = subprocess.run([str(ctl_bin()), "--config", stack.gw.config_path, *args], env=ctl_env(None),
                       capture_output=True, text=True, timeout=timeout)
    no_sanitizer_reports(p.stderr)
    return p


def test_wakegatectl_sleep_now(stack, tmp_path):
    stack.start(config=now_config(stack))
    sid = "c-now"
    bare, rec = session_with_work(stack, tmp_path, sid, "saved by the cli")
    sock = OpenSocket(stack.gw, sid)
    time.sleep(0.5)
    p = ctl(stack, "sleep", sid, "--now")
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    assert p.stdout.strip() == "%s is asleep" % sid, p.stdout
    assert remote_show(bare) == "saved by the cli\n"
    assert sock.closed.wait(10)

    # A failing save: exit 6 (refused) and the hook's output on stderr.
    sid2 = "c-nowfail"
    bare2, rec2 = session_with_work(stack, tmp_path, sid2, "x",
                                    pre_receive="echo 'no pushes today' >&2; exit 1")
    p = ctl(stack, "sleep", sid2, "--now")
    assert p.returncode == 6, (p.returncode, p.stdout, p.stderr)
    assert "the save failed" in p.stderr and "no pushes today" in p.stderr, p.stderr
    assert stack.record(sid2)["state"] == "running"

    p = ctl(stack, "sleep", sid2, "--now", "--force")
    assert p.returncode == 2 and "give one" in p.stderr, (p.returncode, p.stderr)
    p = ctl(stack, "rm", sid2, "--now")
    assert p.returncode == 2 and "--now does not apply" in p.stderr, (p.returncode, p.stderr)
    assert stack.gw.stop() == 0
