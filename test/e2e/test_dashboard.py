"""End-to-end tests of the dashboard on the admin listener (admin/dashboard.c,
admin/dashboard/*).

Plain HTTP: the embedded files are served byte for byte with their content
types and security headers, unknown paths get 404, / redirects, and the
dashboard opens no hole in the token check of /v1.

Browser: headless Chromium (browser_util.py) against a real gateway (role
all) with a real redis-server and the harness's private dockerd. Sessions
are created and woken through the admin API; the page is opened with
#token=...; everything is asserted through the DOM (Runtime.evaluate), the
DevTools Network events and a screenshot saved to
test-artifacts/e2e/dashboard.png.
"""

import asyncio
import json
import re
import struct
import tempfile
import time
import urllib.parse
import zlib

import pytest
import redis

from browser_util import Cdp, CdpError, Chromium
from harness.util import REPO_ROOT, free_port, wait_for

TOKEN = "dash-token-7"
HOST = "h-dash"
IMAGE = "wakegate-test:latest"
ASSETS = REPO_ROOT / "admin" / "dashboard"
METRIC = "wakegate_wake_duration_seconds"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}

TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


# ---------------------------------------------------------------- helpers

def admin(gw, method, path, token=None, body=None, headers=None, timeout=20.0):
    """One request to the admin listener -> (status, {lowercase name: value}, body bytes)."""
    r = gw.admin(method, path, body=body, token=token, headers=headers, timeout=timeout)
    return r.status, r.headers, r.body


def api(gw, method, path, body=None):
    r = gw.admin(method, path, body=body, token=TOKEN, timeout=20.0)
    return r.status, r.json()


def create_and_wake(gw, sid):
    st, got = api(gw, "POST", "/v1/sessions", {"id": sid})
    assert st == 201 and got["state"] == "asleep", (st, got)
    st, got = api(gw, "POST", "/v1/sessions/%s/wake?wait=1" % sid)
    assert st == 200 and got["state"] == "running", (st, got, gw.log_tail(30))
    return got


def wait_gone(gw, sid, timeout=15.0):
    wait_for(lambda: api(gw, "GET", "/v1/sessions/" + sid)[0] == 404, timeout,
             lambda: "%s to be gone after DELETE ?force=1\n%s" % (sid, gw.log_tail(30)), interval=0.05)


def wake_count(gw):
    """The count of the total-phase wake histogram in /metrics."""
    st, _, data = admin(gw, "GET", "/metrics")
    assert st == 200
    m = re.search(r'^%s_count\{phase="total"\} (\d+)$' % METRIC, data.decode(), re.M)
    assert m, "no %s_count{phase=\"total\"} in /metrics" % METRIC
    return int(m.group(1))


def gateway_config(redis_url, dockerd, port=None, admin_port=None):
    cfg = {
        "redis": {"url": redis_url},
        "docker": {"host": dockerd.host, "name": HOST, "max_concurrent_starts": 4},
        "admin": {"token": TOKEN},
        "sessions": {"image": IMAGE, "port": 8080, "wake_timeout": "15s"},
        "routes": [{"match": {"host": "{session}.preview.localhost"}, "access": "public"}],
        "log": {"level": "debug"},
    }
    if port:
        cfg["listen"] = "127.0.0.1:%d" % port
        cfg["admin"]["listen"] = "127.0.0.1:%d" % admin_port
    return cfg


def png_summary(data):
    """(width, height, distinct colours among sampled pixels) of an 8-bit
    RGB or RGBA PNG, decoded here (zlib + the five row filters)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    w, h, depth, ctype = ihdr[:4]
    assert depth == 8 and ctype in (2, 6), ihdr
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    prev = bytearray(stride)
    colours = set()
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        if y % 4 == 0:
            for x in range(0, w, 4):
                colours.add(bytes(line[x * bpp:x * bpp + 3]))
        prev = line
    return w, h, len(colours)


async def wait_js(cdp, expr, what, timeout=15.0):
    """Evaluates expr (which returns a JSON string or null) until it is
    truthy; returns it parsed."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = await cdp.evaluate(expr, timeout=3)
            if v:
                return json.loads(v)
        except (CdpError, asyncio.TimeoutError) as e:
            last = repr(e)
        await asyncio.sleep(0.1)
    try:
        text = await cdp.evaluate("document.body ? document.body.innerText : ''", timeout=3)
    except (CdpError, asyncio.TimeoutError):
        text = "?"
    raise AssertionError("%s: not seen within %.0fs (last error %s); the page says:\n%s"
                         % (what, timeout, last, (text or "")[:3000]))


def in_thread(fn, *args):
    """Runs a blocking API call off the event loop, so the DevTools reader keeps up."""
    return asyncio.get_running_loop().run_in_executor(None, fn, *args)


ROW_JS = """(() => {
  const r = document.querySelector('#sessions tr[data-id=%s]');
  if (!r || r.dataset.state !== %s) return null;
  return JSON.stringify({state: r.querySelector('.state').textContent,
                         cells: [...r.cells].map(c => c.textContent)});
})()"""

ROW_GONE_JS = """(() => document.querySelector('#sessions tbody tr') === null ||
   document.querySelector('#sessions tr[data-id=%s]') ? null :
   JSON.stringify([...document.querySelectorAll('#sessions tbody tr')].map(r => r.dataset.id)))()"""

FEED_JS = """JSON.stringify([...document.querySelectorAll('#events li')].map(li => ({
  id: li.dataset.eventId, s: li.dataset.session, t: li.dataset.type,
  f: li.dataset.from === undefined ? null : li.dataset.from,
  to: li.dataset.to === undefined ? null : li.dataset.to, text: li.textContent})))"""

CHART_JS = """(() => {
  const c = document.getElementById('chart');
  if (!c || +c.dataset.samples < %d) return null;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let bar = 0, ink = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] === 0) continue;
    ink++;
    if (d[i] === 31 && d[i + 1] === 111 && d[i + 2] === 235) bar++;
  }
  const t = document.getElementById('trend');
  return JSON.stringify({samples: +c.dataset.samples, bars: +c.dataset.bars, bar_pixels: bar, ink: ink,
                         trend_points: +(t.dataset.points || 0),
                         summary: document.getElementById('chart-summary').textContent});
})()"""


def feed_has(sid, to):
    """JS: the feed as JSON once it shows a transition of sid to `to`."""
    return ("(() => document.querySelector('#events li[data-session=%s][data-to=%s]') ? %s : null)()"
            % (json.dumps(sid), json.dumps(to), FEED_JS))


def stream_moves(entries, sid):
    """(from, to) of sid's transitions in wg:events entries, oldest first."""
    return [(f.get("from", ""), f["to"]) for _, f in entries if f.get("id") == sid and f.get("type") == "transition"]


def request_urls(cdp):
    return [p["request"]["url"] for _, p in cdp.events_named("Network.requestWillBeSent")]


def assert_loopback_only(urls):
    assert urls, "the page made no request at all"
    for u in urls:
        parts = urllib.parse.urlsplit(u)
        if parts.scheme in ("data", "blob", "about"):
            continue
        assert parts.scheme in ("http", "ws") and parts.hostname in LOOPBACK, \
            "the page requested something beyond loopback: %s" % u
        assert TOKEN not in u, "the token went into a URL: %s" % u


# ================================================================ plain HTTP

def test_assets_are_served_with_types_and_security_headers(start_wakegate):
    gw = start_wakegate({"admin": {"token": TOKEN}, "log": {"level": "warn"}})
    bodies = {}
    for name, ctype in TYPES.items():
        st, h, body = admin(gw, "GET", "/dashboard/" + name)
        assert st == 200, (name, st, body[:200])
        assert h["content-type"] == ctype, (name, h)
        # Embedded byte for byte at build time from the sources.
        assert body == (ASSETS / name).read_bytes(), name
        assert int(h["content-length"]) == len(body)
        csp = h.get("content-security-policy", "")
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, (name, csp)
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "*" not in csp, csp
        assert h.get("x-content-type-options") == "nosniff", (name, h)
        assert h.get("cache-control") == "no-store", (name, h)
        assert h.get("x-frame-options") == "DENY", (name, h)
        bodies[name] = body

    # /dashboard and /dashboard/ are the page itself; / redirects to it.
    for path in ("/dashboard", "/dashboard/", "/dashboard/?x=1"):
        st, h, body = admin(gw, "GET", path)
        assert st == 200 and h["content-type"].startswith("text/html") and body == bodies["index.html"], path
    st, h, _ = admin(gw, "GET", "/")
    assert st == 302 and h.get("location") == "/dashboard", (st, h)
    st, h, body = admin(gw, "HEAD", "/dashboard")
    assert st == 200 and body == b"" and int(h["content-length"]) == len(bodies["index.html"]), (st, h)

    # The page loads only its own files, and nothing names another origin.
    html = bodies["index.html"].decode()
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(r.startswith("/dashboard/") for r in refs), refs
    assert "<script>" not in html and "style=" not in html, "inline script or style would need 'unsafe-inline'"
    for name in ("index.html", "app.js", "style.css"):
        text = bodies[name].decode()
        assert not re.search(r"\b(?:https?|wss?|ftp):", text), "%s names another origin" % name
        assert "@import" not in text and "url(" not in text, name
    assert "new EventSource" not in bodies["app.js"].decode()  # it cannot send the token

    # Unknown paths: 404, never a file of the file system.
    for path in ("/dashboard/nope.js", "/dashboard/../../etc/passwd", "/dashboard/%2e%2e/app.js",
                 "/dashboardx", "/nope", "/dashboard/app.js/"):
        st, h, body = admin(gw, "GET", path)
        # A dot segment is refused with the request line (400), before any handler.
        assert st == (400 if ".." in path or "%2e" in path else 404), (path, st, body[:100])
        assert b"root:" not in body
    st, h, _ = admin(gw, "POST", "/dashboard", body={})
    assert st == 405 and "GET" in h.get("allow", ""), (st, h)

    # The built-in paths are not shadowed by the dashboard's "/" handler.
    st, _, body = admin(gw, "GET", "/healthz")
    assert st == 200 and b"ok" in body
    st, h, _ = admin(gw, "GET", "/metrics")
    assert st == 200 and h["content-type"].startswith("text/plain")

    # /v1 still needs the token, whatever the dashboard serves.
    for path in ("/v1/sessions", "/v1/events", "/v1/dashboard", "/v1"):
        st, h, _ = admin(gw, "GET", path)
        assert st == 401 and h.get("www-authenticate", "").startswith("Bearer"), (path, st, h)
        st, _, _ = admin(gw, "GET", path, token="wrong-" + TOKEN)
        assert st == 401, (path, st)
    assert gw.stop() == 0


def test_every_role_serves_the_dashboard(start_wakegate):
    index = (ASSETS / "index.html").read_bytes()
    for role in ("proxy", "orchestrator"):
        gw = start_wakegate({"admin": {"token": TOKEN}, "log": {"level": "warn"}}, args=["--role", role])
        st, h, body = admin(gw, "GET", "/dashboard")
        assert st == 200 and body == index and "content-security-policy" in h, (role, st)
        st, _, _ = admin(gw, "GET", "/dashboard/app.js")
        assert st == 200, role
        # No working admin API in these processes (no Redis): still 401
        # without the token; with it, a JSON error (404 from the dashboard
        # where no API is registered), never the page.
        st, _, _ = admin(gw, "GET", "/v1/sessions")
        assert st == 401, role
        st, h, body = admin(gw, "GET", "/v1/sessions", token=TOKEN)
        assert st in ((404,) if role == "proxy" else (404, 503)), (role, st, body)
        assert h["content-type"] == "application/json" and b"<html" not in body, (role, h, body)
        assert gw.stop() == 0, role


def test_v1_answers_503_without_a_token_configured_but_the_page_is_served(start_wakegate):
    gw = start_wakegate({"log": {"level": "error"}})
    st, _, body = admin(gw, "GET", "/dashboard")
    assert st == 200 and body == (ASSETS / "index.html").read_bytes()
    st, _, body = admin(gw, "GET", "/v1/sessions", token="anything")
    assert st == 503 and b"not configured" in body, (st, body)
    assert gw.stop() == 0


# ================================================================ the browser

@pytest.fixture
def dash_stack(redis_server, clean_engine, test_image, start_wakegate):
    assert test_image == IMAGE
    return redis_server, clean_engine


def start_gateway(start_wakegate, redis_url, dockerd, port=None, admin_port=None):
    gw = start_wakegate(gateway_config(redis_url, dockerd, port, admin_port), args=["--role", "all"])
    gw.wait_log(r"startup reconciliation done", timeout=15)
    gw.wait_ready(timeout=15.0)
    return gw


async def _dashboard_session(ws_url, gw, r, shot_path):
    seen = {}
    async with Cdp(ws_url) as cdp:
        await cdp.send("Network.enable")
        await cdp.send("Page.enable")
        await cdp.send("Runtime.enable")
        await cdp.send("Log.enable")
        await cdp.send("Network.setCacheDisabled", cacheDisabled=True)
        nav = await cdp.send("Page.navigate", url="http://127.0.0.1:%d/dashboard#token=%s" % (gw.admin_port, TOKEN))
        assert not nav.get("errorText"), nav

        # 1. The sessions table lists the running session with its state.
        row = await wait_js(cdp, ROW_JS % (json.dumps("s-dash-a"), json.dumps("running")), "row of s-dash-a")
        seen["row_a"] = row
        st, rec = await in_thread(api, gw, "GET", "/v1/sessions/s-dash-a")
        seen["rec_a"] = rec

        # 2. The feed replayed the transitions so far, exactly those of wg:events.
        await wait_js(cdp, feed_has("s-dash-a", "running"), "s-dash-a -> running in the feed")
        seen["feed_before"] = json.loads(await cdp.evaluate(FEED_JS))
        seen["stream_before"] = [(i, f) for i, f in r.xrange("wg:events")]

        # 3. The chart has drawn the one wake of /metrics.
        seen["chart_before"] = await wait_js(cdp, CHART_JS % 1, "the wake latency chart")
        seen["count_before"] = await in_thread(wake_count, gw)

        # 4. Things that happen after the page loaded show up live.
        t_after = time.time()
        await in_thread(create_and_wake, gw, "s-dash-b")
        await wait_js(cdp, feed_has("s-dash-b", "running"), "s-dash-b -> running in the feed (live)")
        await wait_js(cdp, ROW_JS % (json.dumps("s-dash-b"), json.dumps("running")), "row of s-dash-b")
        st, _ = await in_thread(api, gw, "DELETE", "/v1/sessions/s-dash-a?force=1")
        assert st == 202, st
        await in_thread(wait_gone, gw, "s-dash-a")
        await wait_js(cdp, feed_has("s-dash-a", "destroyed"), "s-dash-a -> destroyed in the feed (live)")
        seen["rows_after"] = await wait_js(cdp, ROW_GONE_JS % json.dumps("s-dash-a"), "s-dash-a leaving the table")
        seen["chart_after"] = await wait_js(cdp, CHART_JS % 2, "the second wake in the chart")
        seen["count_after"] = await in_thread(wake_count, gw)
        seen["feed_after"] = json.loads(await cdp.evaluate(FEED_JS))
        seen["stream_after"] = [(i, f) for i, f in r.xrange("wg:events", min="%d" % int(t_after * 1000 - 5))]

        seen["href"] = await cdp.evaluate("location.href")
        seen["stored"] = await cdp.evaluate("sessionStorage.getItem('wakegate.admin_token')")
        seen["conn"] = await cdp.evaluate("document.getElementById('conn').dataset.state")
        await asyncio.sleep(0.3)  # let the fresh-row highlight fade a little for the picture
        seen["shot"] = await cdp.screenshot(str(shot_path))
        seen["urls"] = request_urls(cdp)
        seen["requests"] = [p["request"] for _, p in cdp.events_named("Network.requestWillBeSent")]
        seen["log_errors"] = [p["entry"] for _, p in cdp.events_named("Log.entryAdded")
                              if p["entry"].get("level") == "error"]
        seen["exceptions"] = [p for _, p in cdp.events_named("Runtime.exceptionThrown")]
    return seen


def test_dashboard_shows_sessions_events_and_wake_latency(dash_stack, start_wakegate, e2e_tmp, artifacts):
    redis_server, dockerd = dash_stack
    gw = start_gateway(start_wakegate, redis_server.url, dockerd)
    r = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=5)
    create_and_wake(gw, "s-dash-a")
    shot = artifacts / "dashboard.png"
    if shot.exists():
        shot.unlink()
    b = Chromium(tempfile.mkdtemp(prefix="chromium-dash-", dir=e2e_tmp), artifacts / "chromium-dashboard.log")
    try:
        seen = asyncio.run(asyncio.wait_for(_dashboard_session(b.page_ws_url(), gw, r, shot), 120))
    finally:
        b.stop()

    # The row shows what the API says.
    rec = seen["rec_a"]
    cells = seen["row_a"]["cells"]
    assert seen["row_a"]["state"] == "running" and cells[0] == "s-dash-a", cells
    assert cells[5] == HOST and cells[6] == "%s:%d" % (rec["ip"], rec["port"]), (cells, rec)
    if rec["last_active"]:
        assert re.match(r"^\d+(\.\d)? (ms|s|min)", cells[3]), cells  # idle = now - last_active
    assert rec["last_save"] is None and cells[4] == "never", (cells, rec)

    # The replayed feed is the stream: the same ids, and every transition of s-dash-a.
    feed_ids = {e["id"] for e in seen["feed_before"]}
    stream_ids = {i for i, _ in seen["stream_before"]}
    assert stream_ids <= feed_ids, (stream_ids - feed_ids, seen["feed_before"])
    moves = [(e["f"], e["to"]) for e in reversed(seen["feed_before"]) if e["s"] == "s-dash-a" and e["t"] == "transition"]
    assert moves == stream_moves(seen["stream_before"], "s-dash-a"), moves
    assert moves[0][0] == "" and moves[-2:] == [("asleep", "starting"), ("starting", "running")], moves
    assert any("asleep → starting" in e["text"] for e in seen["feed_before"]), seen["feed_before"]

    # Events after the load arrived live, each once, in the stream's order.
    after = [e for e in seen["feed_after"] if e["id"] not in feed_ids]
    live_ids = [e["id"] for e in reversed(after)]
    assert len(live_ids) == len(set(live_ids)), live_ids
    assert [i for i, _ in seen["stream_after"]] == [i for i in live_ids if i in {j for j, _ in seen["stream_after"]}]
    b_moves = [(e["f"], e["to"]) for e in reversed(after) if e["s"] == "s-dash-b" and e["t"] == "transition"]
    assert b_moves == stream_moves(seen["stream_after"], "s-dash-b"), b_moves
    assert b_moves[0][0] == "" and b_moves[-2:] == [("asleep", "starting"), ("starting", "running")], b_moves
    assert any(e["s"] == "s-dash-a" and e["to"] == "destroyed" for e in after), after
    assert "s-dash-a" not in seen["rows_after"] and "s-dash-b" in seen["rows_after"], seen["rows_after"]

    # The chart drew the histogram of /metrics: its count, bars in the bar colour.
    c1, c2 = seen["chart_before"], seen["chart_after"]
    assert c1["samples"] == seen["count_before"] >= 1 and c1["bars"] >= 1 and c1["bar_pixels"] > 200, c1
    assert c2["samples"] == seen["count_after"] >= 2 and c2["bar_pixels"] >= c1["bar_pixels"], c2
    assert c2["trend_points"] >= 1 and "wakes" in c2["summary"], c2

    # The token came from the fragment, left the address bar, and went only
    # into the Authorization header.
    assert seen["href"] == "http://127.0.0.1:%d/dashboard" % gw.admin_port, seen["href"]
    assert seen["stored"] == TOKEN
    assert seen["conn"] == "live", seen["conn"]
    assert_loopback_only(seen["urls"])
    paths = {urllib.parse.urlsplit(u).path for u in seen["urls"]}
    assert {"/dashboard", "/dashboard/app.js", "/dashboard/style.css", "/v1/sessions", "/v1/events",
            "/metrics"} <= paths, paths
    v1 = [q for q in seen["requests"] if urllib.parse.urlsplit(q["url"]).path.startswith("/v1/")]
    assert v1 and all(q["headers"].get("Authorization") == "Bearer " + TOKEN for q in v1), v1[:3]
    assert not seen["exceptions"], seen["exceptions"]
    assert not seen["log_errors"], seen["log_errors"]  # CSP violations and failed loads land here

    # The screenshot shows a page, not a blank.
    png = shot.read_bytes()
    assert len(png) == seen["shot"] and len(png) > 20000, len(png)
    w, h, colours = png_summary(png)
    assert w >= 800 and h >= 400 and colours >= 20, (w, h, colours)
    assert gw.stop() == 0


async def _reconnect_session(ws_url, gw, restart):
    seen = {}
    async with Cdp(ws_url) as cdp:
        await cdp.send("Network.enable")
        await cdp.send("Page.enable")
        nav = await cdp.send("Page.navigate", url="http://127.0.0.1:%d/dashboard#token=%s" % (gw.admin_port, TOKEN))
        assert not nav.get("errorText"), nav
        await wait_js(cdp, feed_has("s-dash-r", "running"), "s-dash-r -> running in the feed")
        seen["last_id"] = await wait_js(
            cdp, "document.getElementById('conn').dataset.state === 'live' ? "
                 "JSON.stringify(document.querySelector('#events li').dataset.eventId) : null", "a live stream")
        seen["feed_before"] = json.loads(await cdp.evaluate(FEED_JS))
        # The gateway goes away under the open stream, and comes back.
        seen["stop_code"] = await in_thread(gw.stop)
        await wait_js(cdp, "document.getElementById('conn').dataset.state === 'reconnecting' ? '1' : null",
                      "the page noticing the lost stream", timeout=10)
        gw2 = await in_thread(restart)
        seen["gw2"] = gw2
        await wait_js(cdp, "document.getElementById('conn').dataset.state === 'live' ? '1' : null",
                      "the page reconnecting", timeout=30)
        st, _ = await in_thread(api, gw2, "DELETE", "/v1/sessions/s-dash-r?force=1")
        assert st == 202, st
        await wait_js(cdp, feed_has("s-dash-r", "destroyed"), "an event after the reconnect", timeout=20)
        seen["feed_after"] = json.loads(await cdp.evaluate(FEED_JS))
        seen["events_requests"] = [p["request"] for _, p in cdp.events_named("Network.requestWillBeSent")
                                   if urllib.parse.urlsplit(p["request"]["url"]).path == "/v1/events"]
        seen["urls"] = request_urls(cdp)
    return seen


def test_event_feed_reconnects_with_last_event_id(dash_stack, start_wakegate, e2e_tmp, artifacts):
    redis_server, dockerd = dash_stack
    port, admin_port = free_port(), free_port()
    gw = start_gateway(start_wakegate, redis_server.url, dockerd, port, admin_port)
    create_and_wake(gw, "s-dash-r")

    def restart():
        return start_gateway(start_wakegate, redis_server.url, dockerd, port, admin_port)

    b = Chromium(tempfile.mkdtemp(prefix="chromium-dash-", dir=e2e_tmp), artifacts / "chromium-dashboard-reconnect.log")
    try:
        seen = asyncio.run(asyncio.wait_for(_reconnect_session(b.page_ws_url(), gw, restart), 120))
    finally:
        b.stop()
    assert seen["stop_code"] == 0
    reqs = seen["events_requests"]
    assert len(reqs) >= 2, reqs
    # The first connect asks for a replay by time; a reconnect resumes after
    # the last id it saw, so nothing is missed or shown twice.
    assert "since=" in reqs[0]["url"] and "Last-Event-ID" not in reqs[0]["headers"], reqs[0]
    resumed = [q for q in reqs[1:] if q["headers"].get("Last-Event-ID") == seen["last_id"]]
    assert resumed and "since=" not in resumed[0]["url"], (seen["last_id"], reqs)
    ids = [e["id"] for e in seen["feed_after"]]
    assert len(ids) == len(set(ids)), ids
    assert ids[len(ids) - len(seen["feed_before"]):] == [e["id"] for e in seen["feed_before"]]
    assert any(e["s"] == "s-dash-r" and e["to"] == "destroyed" for e in seen["feed_after"])
    assert_loopback_only(seen["urls"])
    assert seen["gw2"].stop() == 0
