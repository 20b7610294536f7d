"""End-to-end: the Prometheus exposition on the admin listener's /metrics.

Every scrape goes through a strict parser written here (parse_exposition):
each family has exactly one # HELP and one # TYPE line, both before its
samples; a family's samples are contiguous; label syntax and escapes are
exact; histogram buckets are cumulative, strictly increasing in le and end
with le="+Inf", and _count equals the +Inf bucket; counters end in _total,
histograms (all durations) in _seconds, gauges in neither. It runs for role
proxy (with and without Redis), role all (orchestrator, Redis and the test
dockerd) and role orchestrator.

The counts asserted are exact: a fresh gateway gets a known number of
requests with known statuses through known routes: a static upstream
answering 200 or 404 by path, a slow one (200 ms), a session route (records
written to Redis by the test as the orchestrator would, or a real wake in
role all) and a header route whose value needs escaping in a label.
"""

import math
import os
import re
import signal
import time

import pytest
import yaml

from harness import rawhttp
from harness.upstream import response_bytes, slow_response
from sessions_util import Orchestrator, Pending, collect, host_of, one, req, start_proxy, wait_for
from stack_util import APP_TEXT, gw_config

LOCAL = "127.0.0.1"
HOST = "h1"

# ---------------------------------------------------------------- the strict parser

NAME_RX = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME_RX = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = ("counter", "gauge", "histogram")
HIST_SUFFIXES = ("_bucket", "_sum", "_count")


class Family:
    def __init__(self, name):
        self.name = name
        self.help = None
        self.type = None
        self.samples = []  # (sample name, {labels}, float value), in order


def _fail(lineno, line, why):
    raise AssertionError("/metrics line %d: %s: %r" % (lineno, why, line))


def _parse_labels(line, pos, lineno):
    """line[pos] is '{'. Returns ({name: value}, position after '}')."""
    labels = {}
    pos += 1
    try:
        while True:
            m = LABEL_NAME_RX.match(line, pos)
            if not m:
                _fail(lineno, line, "bad label name at %d" % pos)
            name = m.group(0)
            pos = m.end()
            if line[pos:pos + 2] != '="':
                _fail(lineno, line, "label %s: expected =\"" % name)
            pos += 2
            val = []
            while True:
                ch = line[pos]
                if ch == "\\":
                    nxt = line[pos + 1]
                    if nxt not in '\\"n':
                        _fail(lineno, line, "bad escape \\%s in label %s" % (nxt, name))
                    val.append({"\\": "\\", '"': '"', "n": "\n"}[nxt])
                    pos += 2
                elif ch == '"':
                    pos += 1
                    break
                elif ch == "\n":
                    _fail(lineno, line, "raw newline in label value")
                else:
                    val.append(ch)
                    pos += 1
            if name in labels:
                _fail(lineno, line, "label %s twice" % name)
            labels[name] = "".join(val)
            if line[pos] == ",":
                pos += 1
                continue
            if line[pos] != "}":
                _fail(lineno, line, "expected , or } at %d" % pos)
            return labels, pos + 1
    except IndexError:
        _fail(lineno, line, "label set cut short")


def _parse_value(text, lineno, line):
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?", text):
        _fail(lineno, line, "bad value %r (a timestamp or junk after the value?)" % text)
    return float(text)


def _family_of(sname, families, lineno, line):
    fam = families.get(sname)
    if fam is not None and fam.type != "histogram":
        return fam
    for suf in HIST_SUFFIXES:
        if sname.endswith(suf):
            base = families.get(sname[:-len(suf)])
            if base is not None and base.type == "histogram":
                return base
    _fail(lineno, line, "sample %s belongs to no family declared before it" % sname)


def parse_exposition(text):
    """Parses the whole text strictly; returns {family name: Family}."""
    assert text.endswith("\n"), "exposition does not end with a newline"
    families = {}
    current = None
    closed = set()
    seen = set()
    for lineno, line in enumerate(text[:-1].split("\n"), 1):
        if line == "":
            _fail(lineno, line, "empty line")
        if line.startswith("#"):
            m = re.fullmatch(r"# (HELP|TYPE) (\S+) (.*)", line)
            if not m:
                _fail(lineno, line, "a comment other than HELP or TYPE")
            kind, name, rest = m.groups()
            if not NAME_RX.fullmatch(name):
                _fail(lineno, line, "bad metric name")
            fam = families.setdefault(name, Family(name))
            if fam.samples:
                _fail(lineno, line, "%s after the samples of %s" % (kind, name))
            if kind == "HELP":
                if fam.help is not None:
                    _fail(lineno, line, "second HELP for %s" % name)
                if re.search(r"\\[^\\n]", rest) or not rest.strip():
                    _fail(lineno, line, "HELP text empty or with a bad escape")
                fam.help = rest
            else:
                if fam.type is not None:
                    _fail(lineno, line, "second TYPE for %s" % name)
                if rest not in TYPES:
                    _fail(lineno, line, "type %r (this exporter has %s)" % (rest, "/".join(TYPES)))
                fam.type = rest
            if current is not None and current is not fam:
                closed.add(current.name)
                current = None
            continue
        m = NAME_RX.match(line)
        if not m:
            _fail(lineno, line, "not a sample")
        sname, pos = m.group(0), m.end()
        labels = {}
        if pos < len(line) and line[pos] == "{":
            labels, pos = _parse_labels(line, pos, lineno)
        if line[pos:pos + 1] != " ":
            _fail(lineno, line, "expected one space before the value")
        value = _parse_value(line[pos + 1:], lineno, line)
        fam = _family_of(sname, families, lineno, line)
        if fam.help is None or fam.type is None:
            _fail(lineno, line, "sample of %s before its HELP and TYPE" % fam.name)
        if fam.name in closed:
            _fail(lineno, line, "samples of %s are not contiguous" % fam.name)
        if current is not fam:
            if current is not None:
                closed.add(current.name)
            current = fam
        key = (sname, tuple(sorted(labels.items())))
        if key in seen:
            _fail(lineno, line, "the same series twice")
        seen.add(key)
        fam.samples.append((sname, labels, value))
    for fam in families.values():
        _check_family(fam)
    return families


def _check_family(fam):
    n = fam.name
    assert fam.help is not None and fam.type is not None, "%s lacks HELP or TYPE" % n
    assert fam.samples, "family %s has HELP/TYPE but no sample" % n
    assert n.startswith("wakegate_"), n
    for s in HIST_SUFFIXES:
        assert not n.endswith(s), "family name %s ends in %s" % (n, s)
    if fam.type == "counter":
        assert n.endswith("_total"), "counter %s does not end in _total" % n
        for _, labels, v in fam.samples:
            assert v >= 0 and v == int(v), "counter %s%s = %r" % (n, labels, v)
    elif fam.type == "gauge":
        assert not n.endswith("_total"), "gauge %s ends in _total" % n
    else:
        assert n.endswith("_seconds"), "histogram %s is not in seconds" % n
    if "duration" in n or "latency" in n:
        assert n.endswith("_seconds"), "%s: a duration not in _seconds" % n
    # One label set per family (histograms: plus le on buckets).
    names = set()
    for sname, labels, _ in fam.samples:
        keys = set(labels)
        if fam.type == "histogram" and sname.endswith("_bucket"):
            assert "le" in keys, "%s without le" % sname
            keys.discard("le")
        else:
            assert "le" not in keys, "%s with le" % sname
        names.add(tuple(sorted(keys)))
    assert len(names) == 1, "family %s mixes label sets %s" % (n, sorted(names))
    if fam.type == "histogram":
        _check_histogram(fam)


def _check_histogram(fam):
    groups = {}
    for sname, labels, v in fam.samples:
        key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
        g = groups.setdefault(key, {"buckets": [], "sum": None, "count": None})
        if sname.endswith("_bucket"):
            g["buckets"].append((labels["le"], v))
        elif sname.endswith("_sum"):
            g["sum"] = v
        else:
            g["count"] = v
    for key, g in groups.items():
        what = "%s%s" % (fam.name, dict(key))
        b = g["buckets"]
        assert b, "%s has no buckets" % what
        assert b[-1][0] == "+Inf", "%s: last bucket le=%s, not +Inf" % (what, b[-1][0])
        assert sum(1 for le, _ in b if le == "+Inf") == 1, what
        les = [float(le) if le != "+Inf" else math.inf for le, _ in b]
        assert all(a < c for a, c in zip(les, les[1:])), "%s: le not increasing: %s" % (what, les)
        counts = [v for _, v in b]
        assert all(v == int(v) and v >= 0 for v in counts), what
        assert all(a <= c for a, c in zip(counts, counts[1:])), "%s: not cumulative: %s" % (what, counts)
        assert g["sum"] is not None and g["sum"] >= 0, "%s: _sum missing or negative" % what
        assert g["count"] is not None, "%s: _count missing" % what
        assert g["count"] == counts[-1], "%s: _count %s != +Inf bucket %s" % (what, g["count"], counts[-1])


# ---------------------------------------------------------------- reading it

class Scrape:
    def __init__(self, text):
        self.text = text
        self.families = parse_exposition(text)

    def value(self, name, **labels):
        """The value of the series name{labels} (exactly those labels), or None."""
        for fam in self.families.values():
            for sname, l, v in fam.samples:
                if sname == name and l == labels:
                    return v
        return None

    def series(self, name):
        return [(l, v) for fam in self.families.values() for s, l, v in fam.samples if s == name]

    def hist(self, name, **labels):
        """{le text: cumulative count}, sum, count of one histogram series."""
        buckets = {}
        for l, v in self.series(name + "_bucket"):
            rest = dict(l)
            le = rest.pop("le")
            if rest == labels:
                buckets[le] = v
        return buckets, self.value(name + "_sum", **labels), self.value(name + "_count", **labels)

    def routes(self):
        """{route label: {class: count}} of wakegate_route_requests_total."""
        out = {}
        for l, v in self.series("wakegate_route_requests_total"):
            out.setdefault(l["route"], {})[l["class"]] = v
        return out


def scrape(gw):
    r = gw.admin("GET", "/metrics", timeout=5)
    assert r.status == 200, (r.status, r.body[:200])
    assert r.headers.get("content-type") == "text/plain; version=0.0.4; charset=utf-8", r.headers.get("content-type")
    return Scrape(r.body.decode("utf-8"))


CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def assert_routes(s, want):
    """Every route's every class equals want (missing classes: 0)."""
    got = s.routes()
    assert set(got) == set(want), "route labels %s, expected %s" % (sorted(got), sorted(want))
    for route, classes in got.items():
        assert set(classes) == set(CLASSES), (route, classes)
        expect = {k: want[route].get(k, 0) for k in CLASSES}
        assert classes == expect, "route %r: %s, expected %s" % (route, classes, expect)


def assert_routes_sum_to_responses(s):
    got = s.routes()
    for k in CLASSES:
        total = sum(c[k] for c in got.values())
        assert total == s.value("wakegate_responses_total", **{"class": k}), (k, total, got)


REDIS_FAMILIES = ("wakegate_redis_connected", "wakegate_redis_connects_total",
                  "wakegate_redis_commands_total", "wakegate_redis_errors_total")
PROXY_FAMILIES = ("wakegate_route_requests_total", "wakegate_request_duration_seconds",
                  "wakegate_upstream_latency_seconds", "wakegate_wake_first_byte_seconds",
                  "wakegate_held_requests_released_total", "wakegate_responses_total",
                  "wakegate_requests_total")
ORCH_FAMILIES = ("wakegate_wakes_total", "wakegate_wake_duration_seconds",
                 "wakegate_docker_errors_total", "wakegate_sleeps_total", "wakegate_saves_total",
                 "wakegate_save_duration_seconds")
SESSION_FAMILIES = ("wakegate_held_requests", "wakegate_wakes_suppressed_total")


SLACK = 0.002  # wakegate's clock reads are millisecond-grained


def assert_hist_agrees(buckets, spans, les):
    """Each observation lies in one of spans, (least, most) seconds as the
    client saw it from outside. So bucket le holds at least the spans that
    end below le and at most those that start below it (with SLACK)."""
    for le in les:
        surely = sum(1 for _, hi in spans if hi + SLACK <= float(le))
        maybe = sum(1 for lo, _ in spans if lo - SLACK <= float(le))
        assert surely <= buckets[le] <= maybe, "bucket le=%s holds %d, the client saw %d to %d: %r %r" % (
            le, buckets[le], surely, maybe, buckets, spans)


def has_all(s, names):
    missing = [n for n in names if n not in s.families]
    assert not missing, "missing families %s" % missing


def has_none(s, names):
    there = [n for n in names if n in s.families]
    assert not there, "unexpected families %s" % there


# ---------------------------------------------------------------- upstreams

def status_by_path(conn):
    """200 for any path but /missing..., which gets 404; keep-alive."""
    while True:
        r = conn.read_request(body_keep=1 << 20)
        if r is None:
            return
        status = 404 if r.target.startswith("/missing") else 200
        conn.send(response_bytes(status, b"x\n"))


ODD = 'a"b\\c'  # a header value with a quote and a backslash: both escaped in the label

L_STATIC = "0:host=static.test"
L_SLOW = "1:host=slow.test"
L_SESSION = "2:host=<session>.preview.localhost"
L_ODD = '3:path=/odd/,header=X-Odd:' + ODD


def proxy_config(redis_url, up, slow, sess_port, wake_timeout="2s"):
    cfg = {
        "docker": {"name": HOST},
        "sessions": {"wake_timeout": wake_timeout, "port": sess_port},
        "non_waking": {"paths": ["/healthz"], "user_agents": ["kube-probe"]},
        "routes": [
            {"match": {"host": "static.test"}, "upstream": "127.0.0.1:%d" % up.port},
            {"match": {"host": "slow.test"}, "upstream": "127.0.0.1:%d" % slow.port},
            {"match": {"host": "{session}.preview.localhost"}, "access": "public"},
            {"match": {"path_prefix": "/odd/", "header": {"name": "X-Odd", "value": ODD}},
             "upstream": "127.0.0.1:%d" % up.port},
        ],
    }
    if redis_url:
        cfg["redis"] = {"url": redis_url}
    return cfg


@pytest.fixture
def proxy(redis_server, make_upstream, start_wakegate):
    """A role-proxy gateway on Redis with the four routes above; the test
    plays the orchestrator (Orchestrator writes records and state messages)."""
    class P:
        pass
    p = P()
    p.up = make_upstream(status_by_path)
    p.slow = make_upstream(slow_response(0.2))
    p.sess = make_upstream()
    p.orch = Orchestrator(redis_server.url)
    p.redis = redis_server

    def start(wake_timeout="2s", workers=None):
        cfg = proxy_config(redis_server.url, p.up, p.slow, p.sess.port, wake_timeout)
        if workers is not None:
            cfg["workers"] = workers
        p.gw = start_proxy(start_wakegate, cfg, p.orch)
        return p.gw
    p.start = start
    return p


def get(port, host, path="/", headers=(), timeout=5.0):
    return one(port, req("GET", path, host=host, headers=headers), timeout=timeout)


# ---------------------------------------------------------------- role proxy

def test_requests_by_route_and_class_and_latency_histograms(proxy):
    gw = proxy.start()
    s0 = scrape(gw)
    has_all(s0, PROXY_FAMILIES + REDIS_FAMILIES + SESSION_FAMILIES)
    has_none(s0, ORCH_FAMILIES)
    # Every route has its series from the start, at 0, with its readable label.
    assert_routes(s0, {"none": {}, L_STATIC: {}, L_SLOW: {}, L_SESSION: {}, L_ODD: {}})
    assert '{route="3:path=/odd/,header=X-Odd:a\\"b\\\\c",class="2xx"} 0\n' in s0.text, s0.text
    assert s0.hist("wakegate_request_duration_seconds")[2] == 0

    # What each request took as the client saw it, (at least, at most): the
    # histograms must agree with that (assert_hist_agrees).
    spans, upstream_spans = [], []

    def timed(n_requests, n_upstream, fn, *args, least=0.0, **kw):
        t0 = time.monotonic()
        v = fn(*args, **kw)
        span = (least, time.monotonic() - t0)
        spans.extend([span] * n_requests)
        upstream_spans.extend([span] * n_upstream)
        return v

    for i in range(5):
        assert timed(1, 1, get, gw.port, "static.test", "/ok/%d" % i).status == 200
    # One keep-alive connection: three 404s from the upstream, then a host no
    # route matches (our 404, which closes): the route is per request.
    data = b"".join(req("GET", "/missing/%d" % i, host="static.test") for i in range(3))
    data += req("GET", "/", host="nowhere.test")
    r = timed(4, 3, rawhttp.send, gw.port, data, timeout=5, until="responses", n=4)
    assert [x.status for x in r.responses] == [404] * 4, r.responses
    for _ in range(2):
        assert timed(1, 1, get, gw.port, "slow.test", least=0.2).status == 200
    proxy.orch.put("s-run", "running", ip=LOCAL, port=proxy.sess.port)
    for i in range(4):
        assert timed(1, 1, get, gw.port, host_of("s-run"), "/p%d" % i).status == 200
    assert timed(1, 0, get, gw.port, host_of("s-nope")).status == 404  # no such session: the session route's 4xx
    for _ in range(2):
        assert timed(1, 1, get, gw.port, "any.test", "/odd/x", headers=[("X-Odd", ODD)]).status == 200
    bad = timed(1, 0, rawhttp.send, gw.port, b"GET / HTTP/1.1\r\nHost: static.test\r\nBad Name: x\r\n\r\n",
                timeout=5)
    assert bad.status == 400, bad.data[:200]

    s = scrape(gw)
    assert_routes(s, {
        "none": {"4xx": 2},  # the unmatched host and the malformed head
        L_STATIC: {"2xx": 5, "4xx": 3},
        L_SLOW: {"2xx": 2},
        L_SESSION: {"2xx": 4, "4xx": 1},
        L_ODD: {"2xx": 2},
    })
    assert_routes_sum_to_responses(s)
    n_requests = 19
    n_upstream = 5 + 3 + 2 + 4 + 2
    assert s.value("wakegate_requests_total") == n_requests

    buckets, total, count = s.hist("wakegate_request_duration_seconds")
    assert count == n_requests, (count, s.text)
    # All but the two slow ones (200 ms) within 0.1 s, the slow ones within
    # 0.25 s, as far as the client's own times say.
    assert_hist_agrees(buckets, spans, ("0.1", "0.25"))
    assert total >= 0.4, total

    buckets, total, count = s.hist("wakegate_upstream_latency_seconds")
    assert count == n_upstream, (count, buckets)
    assert_hist_agrees(buckets, upstream_spans, ("0.1", "0.25"))
    assert buckets["+Inf"] == n_upstream, buckets
    assert 0.4 <= total <= sum(hi for _, hi in upstream_spans) + SLACK * n_upstream, (total, upstream_spans)
    assert set(buckets) == {"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
                            "0.25", "0.5", "1", "2.5", "5", "10", "30", "+Inf"}, sorted(buckets)

    # Nothing was held for a wake (the first session request waited only for
    # its record).
    assert s.hist("wakegate_wake_first_byte_seconds")[2] == 0
    for o in ("served", "timeout", "failed", "abandoned"):
        assert s.value("wakegate_held_requests_released_total", outcome=o) == 0, o
    assert gw.stop() == 0


def test_held_requests_wake_first_byte_and_release_outcomes(proxy):
    gw = proxy.start(wake_timeout="1s")
    orch = proxy.orch
    for sid in ("s-wake", "s-late", "s-fail", "s-gone"):
        orch.put(sid, "asleep")

    # served: held while the session wakes, released by the running message.
    t_sent = time.monotonic()
    p = Pending(gw.port, req("GET", "/", host=host_of("s-wake")), name="wake")
    assert len(orch.wait_wakes(1)) == 1
    time.sleep(0.3)
    orch.put("s-wake", "starting")
    time.sleep(0.1)
    t_running = orch.put("s-wake", "running", ip=LOCAL, port=proxy.sess.port)
    assert not collect([p], 5), p.buf
    t_done = p.done_at
    assert p.response.status == 200
    s = scrape(gw)
    buckets, total, count = s.hist("wakegate_wake_first_byte_seconds")
    assert count == 1, s.text
    span = (t_running - t_sent - 0.05, t_done - t_sent + 0.05)
    assert span[0] <= total <= span[1], (total, t_running - t_sent, t_done - t_sent)
    assert_hist_agrees(buckets, [span], ("0.25", "1"))  # held ~0.4 s: above 0.25 s
    assert s.value("wakegate_held_requests_released_total", outcome="served") == 1

    # timeout: nobody wakes it; 504 at sessions.wake_timeout.
    late = Pending(gw.port, req("GET", "/", host=host_of("s-late")), name="late")
    # failed: the session fails while held; 504 at once.
    fail = Pending(gw.port, req("GET", "/", host=host_of("s-fail")), name="fail")
    # abandoned: the client goes away while held.
    gone = Pending(gw.port, req("GET", "/", host=host_of("s-gone")), name="gone")
    wait_for(lambda: scrape(gw).value("wakegate_held_requests") == 3, 3, "three requests held")
    # The gauge also counts a request still waiting for its record: wait until
    # each is held for a wake (it sent one), or a slow record read would make
    # the failed session's 504 an answer to a request never held for a wake.
    assert len(orch.wait_wakes(4)) == 4
    orch.put("s-fail", "failed")
    gone.close()
    assert not collect([late, fail], 5)
    assert late.response.status == 504 and fail.response.status == 504
    wait_for(lambda: scrape(gw).value("wakegate_held_requests_released_total", outcome="abandoned") == 1,
             3, "the abandoned hold counted")

    s = scrape(gw)
    assert {o: s.value("wakegate_held_requests_released_total", outcome=o)
            for o in ("served", "timeout", "failed", "abandoned")} == \
        {"served": 1, "timeout": 1, "failed": 1, "abandoned": 1}
    assert s.value("wakegate_held_requests") == 0
    assert s.hist("wakegate_wake_first_byte_seconds")[2] == 1  # only the one that was served
    # The session route answered 200 once and 504 twice; the abandoned one got no response.
    assert s.routes()[L_SESSION] == {"1xx": 0, "2xx": 1, "3xx": 0, "4xx": 0, "5xx": 2}
    assert_routes_sum_to_responses(s)
    assert s.hist("wakegate_request_duration_seconds")[2] == 3
    # A probe for a sleeping session wakes nothing and holds nothing.
    before = s.value("wakegate_wakes_suppressed_total")
    assert get(gw.port, host_of("s-late"), "/healthz").status == 503
    s = scrape(gw)
    assert s.value("wakegate_wakes_suppressed_total") == before + 1
    assert s.value("wakegate_held_requests_released_total", outcome="timeout") == 1
    assert gw.stop() == 0


def redis_counts(gw):
    s = scrape(gw)
    return {
        "connected": s.value("wakegate_redis_connected"),
        "connects": s.value("wakegate_redis_connects_total"),
        "commands": s.value("wakegate_redis_commands_total"),
        "timeout": s.value("wakegate_redis_errors_total", kind="timeout"),
        "connection": s.value("wakegate_redis_errors_total", kind="connection"),
        "reply": s.value("wakegate_redis_errors_total", kind="reply"),
    }


def test_redis_errors_by_kind_and_the_connected_gauge(proxy):
    # One worker loop: the test counts the connects of the one command
    # connection (each worker loop has its own; test_workers.py sums them).
    gw = proxy.start(workers=1)
    m = redis_counts(gw)
    assert m["connected"] == 1 and m["connects"] == 1, m
    assert m["timeout"] == m["connection"] == m["reply"] == 0, m

    # reply: Redis refuses writes over maxmemory, so the wake (a write) gets an error answer.
    proxy.orch.put("s-oom", "asleep")
    assert proxy.redis.command("CONFIG", "SET", "maxmemory", "1") == b"+OK"
    try:
        page = get(gw.port, host_of("s-oom"), headers=[("Accept", "text/html")])
        assert page.status == 503, page  # the waking page; the wake itself failed
        wait_for(lambda: redis_counts(gw)["reply"] >= 1, 5, "a Redis error reply counted")
    finally:
        assert proxy.redis.command("CONFIG", "SET", "maxmemory", "0") == b"+OK"
    proxy.orch.put("s-live", "running", ip=LOCAL, port=proxy.sess.port)
    assert get(gw.port, host_of("s-live")).status == 200
    before = redis_counts(gw)
    assert before["commands"] > m["commands"], (m, before)

    # connection: Redis goes away; commands fail fast while it is gone. The
    # running session is served from the cache, and its activity write (a
    # command on the shared connection, each sessions.idle.activity_interval)
    # fails.
    proxy.redis.stop()
    wait_for(lambda: redis_counts(gw)["connected"] == 0, 5, "wakegate_redis_connected 0")
    assert get(gw.port, host_of("s-unknown-1")).status == 503
    assert get(gw.port, host_of("s-live")).status == 200
    wait_for(lambda: redis_counts(gw)["connection"] > before["connection"], 5, "a connection error counted")
    proxy.redis.start()
    wait_for(lambda: redis_counts(gw)["connected"] == 1, 15, "wakegate_redis_connected 1 again")
    m = redis_counts(gw)
    assert m["connects"] == 2, m

    # timeout: Redis stops answering (SIGSTOP); the record read waits out its
    # 5 s command timeout, then the connection is dropped. The request itself
    # gets 503 once the state channel's own checks have not come back for
    # redis.state_timeout (1 s, before the 2 s wake deadline): the gateway is
    # in doubt. First the state channel is back too (/readyz), or the cache
    # would refuse at once, reading nothing.
    wait_for(lambda: gw.readyz()[0] == 200, 15, "/readyz 200 after the restart")
    proxy.orch.reconnect()
    pid = proxy.redis.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        assert get(gw.port, host_of("s-unknown-2"), timeout=10).status == 503
        wait_for(lambda: redis_counts(gw)["timeout"] > m["timeout"], 8, "a Redis timeout counted")
        assert time.monotonic() - t0 >= 4.5
        after = redis_counts(gw)
        assert after["timeout"] >= m["timeout"] + 1, (m, after)  # the read, maybe an activity write
        assert after["connected"] == 0, after
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: redis_counts(gw)["connected"] == 1, 15, "wakegate_redis_connected 1 after SIGCONT")
    m = redis_counts(gw)
    assert m["connects"] == 3 and m["reply"] >= 1 and m["connection"] >= 1 and m["timeout"] >= 1, m
    assert gw.stop() == 0


def test_reload_keeps_the_totals_of_unchanged_routes(make_upstream, start_wakegate):
    slow = make_upstream(slow_response(0.5))
    routes = [
        {"match": {"host": "a.test"}, "upstream": "127.0.0.1:%d" % slow.port},
        {"match": {"host": "b.test"}, "upstream": "127.0.0.1:%d" % slow.port},
    ]
    gw = start_wakegate({"routes": routes}, args=["--role", "proxy"])
    s = scrape(gw)
    has_none(s, REDIS_FAMILIES + ORCH_FAMILIES + SESSION_FAMILIES)  # no Redis: no session cache
    has_all(s, PROXY_FAMILIES)
    assert get(gw.port, "a.test").status == 200
    assert get(gw.port, "b.test").status == 200
    assert get(gw.port, "c.test").status == 404
    assert_routes(scrape(gw), {"none": {"4xx": 1}, "0:host=a.test": {"2xx": 1}, "1:host=b.test": {"2xx": 1}})

    # Requests in flight on both routes while route 1 changes to c.test.
    pend = [Pending(gw.port, req("GET", "/", host=h), name=h) for h in ("a.test", "b.test")]
    slow.wait_for_requests(4, timeout=5)
    with open(gw.config_path) as f:
        cfg = yaml.safe_load(f)
    cfg["routes"][1] = {"match": {"host": "c.test"}, "upstream": "127.0.0.1:%d" % slow.port}
    with open(gw.config_path, "w") as f:
        yaml.safe_dump(cfg, f)
    gw.send_signal(signal.SIGHUP)
    gw.wait_log(r"routes reloaded", timeout=5)
    assert not collect(pend, 5)
    assert all(p.response.status == 200 for p in pend)
    assert get(gw.port, "c.test").status == 200

    s = scrape(gw)
    # a.test kept its total and its request in flight; b.test's row went
    # with its route; c.test started at 0; none carries on.
    assert_routes(s, {"none": {"4xx": 1}, "0:host=a.test": {"2xx": 2}, "1:host=c.test": {"2xx": 1}})
    assert s.value("wakegate_responses_total", **{"class": "2xx"}) == 5
    assert s.hist("wakegate_request_duration_seconds")[2] == 6
    assert gw.stop() == 0


# ---------------------------------------------------------------- role all and orchestrator

@pytest.mark.docker
def test_role_all_wake_first_byte_covers_the_wake(stack, redis_server, dockerd, make_upstream):
    up = make_upstream(status_by_path)
    cfg = gw_config(redis_server.url, dockerd)
    cfg["routes"].append({"match": {"host": "static.test"}, "upstream": "127.0.0.1:%d" % up.port})
    gw = stack.start(config=cfg)
    s0 = scrape(gw)
    has_all(s0, PROXY_FAMILIES + REDIS_FAMILIES + ORCH_FAMILIES + SESSION_FAMILIES)
    assert_routes(s0, {"none": {}, "0:host=<session>.preview.localhost": {}, "1:host=static.test": {}})

    sid = "s-metrics"
    stack.create(sid)
    r = stack.get(sid, "/")  # held while the container is created and started
    assert r.status == 200 and APP_TEXT in r.body, r
    assert get(gw.port, "static.test", "/missing").status == 404

    s = scrape(gw)
    assert s.value("wakegate_wakes_total", outcome="ready") == 1
    wake = s.hist("wakegate_wake_duration_seconds", phase="total")
    assert wake[2] == 1, s.text
    fb = s.hist("wakegate_wake_first_byte_seconds")
    assert fb[2] == 1, s.text
    # The hold starts before the wake command and ends after the record says
    # running, so it covers the orchestrator's whole wake.
    assert fb[1] >= wake[1] > 0, (fb[1], wake[1])
    assert s.value("wakegate_held_requests_released_total", outcome="served") == 1
    assert_routes(s, {"none": {}, "0:host=<session>.preview.localhost": {"2xx": 1},
                      "1:host=static.test": {"4xx": 1}})
    assert_routes_sum_to_responses(s)
    assert s.hist("wakegate_upstream_latency_seconds")[2] == 2
    assert s.value("wakegate_redis_connected") == 1
    assert s.value("wakegate_docker_errors_total") == 0
    assert gw.stop() == 0


@pytest.mark.docker
def test_role_orchestrator_exposition(stack, redis_server, dockerd):
    gw = stack.start(config=gw_config(redis_server.url, dockerd), role="orchestrator")
    gw.wait_log(r"startup reconciliation done", timeout=15)
    s = scrape(gw)
    has_all(s, REDIS_FAMILIES + ORCH_FAMILIES)
    has_none(s, PROXY_FAMILIES + SESSION_FAMILIES)
    assert s.value("wakegate_redis_connected") == 1
    assert gw.stop() == 0
