"""End-to-end: sessions.readiness.http_path in the real orchestrator (role
orchestrator, the harness's redis-server and dockerd), played through Redis
as in test_orchestrator.py, whose Env helper this reuses.

The image's app listens at once (busybox httpd) but its readiness endpoint,
a CGI script, answers 503 for the first 2 s after the container started and
200 after. With http_path the session must reach running only after the
200; without it, the TCP probe calls it running at once. busybox httpd runs
CGI only under /cgi-bin/, hence that path. The script logs every request
it serves, so the test also sees what the probe sent and how often.
"""

import time

import pytest

from harness import build_image
from harness.dockerd import rfc3339_ns
from stack_util import OrchEnv, orch_config

pytestmark = pytest.mark.docker

SLOW_READY_IMAGE = "wakegate-test-slowready:latest"
READY_PATH = "/cgi-bin/ready"

# busybox httpd sends a CGI's output as is when it starts with "HTTP".
READY_CGI = r"""#!/bin/sh
if [ -f /tmp/ready ]; then s="200 OK"; else s="503 Service Unavailable"; fi
echo "$REQUEST_METHOD $REQUEST_URI ${s%% *} host=$HTTP_HOST" >> /tmp/probes.log
printf 'HTTP/1.0 %s\r\nContent-Type: text/plain\r\n\r\n%s\n' "$s" "$s"
"""


@pytest.fixture(scope="module")
def slow_ready_image(dockerd):
    return build_image(dockerd, SLOW_READY_IMAGE,
                       extra_files={READY_PATH.replace("/cgi-bin", "/www/cgi-bin"): READY_CGI},
                       dockerfile_extra='RUN ["/bin/chmod", "755", "/www/cgi-bin/ready"]',
                       cmd=["/bin/sh", "-c", "(sleep 2; touch /tmp/ready) & exec httpd -f -p 8080 -h /www"])


@pytest.fixture
def make_env(redis_server, clean_engine, test_image, start_wakegate):
    """make_env(readiness=None, wake_timeout="10s") -> a started stack_util.OrchEnv."""
    def make(readiness=None, wake_timeout="10s"):
        cfg = orch_config(redis_server.url, clean_engine, wake_timeout=wake_timeout)
        if readiness is not None:
            cfg["sessions"]["readiness"] = readiness
        e = OrchEnv(redis_server, clean_engine, start_wakegate, cfg)
        e.start()
        return e
    return make


def wake_and_wait(env, sid, image, timeout=15):
    """Wakes sid; returns (final record, ms from starting to running or failed, last transition)."""
    env.make_record(sid, image=image)
    env.wake(sid)
    rec, _ = env.wait_state(sid, ("running", "failed"), timeout=timeout)
    ev = env.events(sid, "transition")
    starting_at = int([e for e in ev if e["to"] == "starting"][-1]["at"])
    last = ev[-1]
    return rec, int(last["at"]) - starting_at, last


def probe_log(env, sid):
    """The readiness requests the container's CGI served: [(method, uri, status, host)]."""
    out = env.dockerd.exec(env.record(sid)["container_id"], "/bin/sh", "-c",
                           "cat /tmp/probes.log 2>/dev/null || true").stdout
    rows = []
    for line in out.splitlines():
        method, uri, status, host = line.split(" ")
        rows.append((method, uri, status, host[len("host="):]))
    return rows


def test_http_path_waits_for_2xx(make_env, slow_ready_image):
    env = make_env(readiness={"http_path": READY_PATH})
    sid = "s-http-ready"
    rec, took_ms, running = wake_and_wait(env, sid, slow_ready_image)
    assert rec["state"] == "running", rec
    assert (running["from"], running["to"]) == ("starting", "running")
    assert running["detail_json"]["via"] == "http"
    # 503 for 2 s after the container started, which is after starting.
    assert took_ms >= 2000, took_ms
    fields = env.ready_line(sid)
    assert fields["via"] == "http"
    assert int(fields["probes"]) >= 2, fields

    rows = probe_log(env, sid)
    assert rows, "the CGI served no readiness request"
    # What the probe sent: GET of the path, Host ip:port.
    assert {(m, u, h) for m, u, _, h in rows} == {("GET", READY_PATH, "%s:8080" % rec["ip"])}, rows[:5]
    statuses = [s for _, _, s, _ in rows]
    assert statuses[0] == "503" and statuses[-1] == "200", statuses[:3] + statuses[-3:]
    assert statuses.count("200") == 1, "the probe stops at the first 200"
    assert statuses.count("503") >= 2, "503 is retried at the interval"
    assert env.stop() == 0


def test_without_http_path_a_connect_is_enough(make_env, slow_ready_image):
    env = make_env()
    sid = "s-tcp-ready"
    rec, took_ms, running = wake_and_wait(env, sid, slow_ready_image)
    assert rec["state"] == "running", rec
    assert running["detail_json"]["via"] == "tcp"
    # The app listens at once: running before its /ready could say 200, which
    # is 2 s after the container started.
    started_ms = rfc3339_ns(env.container(sid)["State"]["StartedAt"]) // 1_000_000
    assert int(running["at"]) < started_ms + 2000, (running, started_ms)
    # No HTTP request was made.
    assert probe_log(env, sid) == []
    assert env.stop() == 0


def test_http_path_never_2xx_fails_by_the_deadline(make_env, slow_ready_image):
    # busybox httpd answers 404 for a path that does not exist, for ever.
    env = make_env(readiness={"http_path": "/nope", "interval": "20ms"}, wake_timeout="3s")
    sid = "s-http-never"
    t0 = time.monotonic()
    rec, took_ms, failed = wake_and_wait(env, sid, slow_ready_image)
    assert rec["state"] == "failed", rec
    assert (failed["from"], failed["to"]) == ("starting", "failed")
    assert failed["detail_json"]["reason"] == "wake timeout"
    assert 2900 <= took_ms <= 5000, took_ms
    assert time.monotonic() - t0 < 8
    assert env.stop() == 0


def test_healthcheck_image_ignores_http_path(make_env, test_image_healthcheck):
    # The fixture image has no /nope, but a HEALTHCHECK: health decides.
    env = make_env(readiness={"http_path": "/nope"})
    sid = "s-http-health"
    rec, _, running = wake_and_wait(env, sid, test_image_healthcheck)
    assert rec["state"] == "running", rec
    assert running["detail_json"]["via"] == "health"
    assert env.container(sid)["State"]["Health"]["Status"] == "healthy"
    assert env.stop() == 0
