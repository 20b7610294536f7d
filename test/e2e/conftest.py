"""pytest fixtures for wakegate's end-to-end tests. See README.md in this folder.

Run with Debian's interpreter: /usr/bin/python3 -m pytest test/e2e
A dependency that cannot start makes the test fail (HarnessError); nothing
here ever skips.
"""

import os
import shutil
import signal
import sys
import tempfile

import pytest

import stack_util
from harness import image, procs, rawhttp
from harness.dockerd import Dockerd, remove_stale_bridges
from harness.nginx import NginxUpstream
from harness.procs import REGISTRY
from harness.redis_server import RedisServer
from harness.upstream import RecordingUpstream
from harness.util import artifacts_dir
from harness.wakegate import WakegateFactory

_TMP = None


def _raise_interrupt(signum, frame):
    # Turn SIGTERM/SIGHUP into KeyboardInterrupt so pytest unwinds and every
    # fixture teardown stops its processes by pid.
    raise KeyboardInterrupt("signal %d" % signum)


def pytest_configure(config):
    if not sys.executable.startswith("/usr/bin/python3"):
        sys.stderr.write("warning: e2e tests expect Debian's /usr/bin/python3, running under %s\n" % sys.executable)
    procs.become_subreaper()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)


def pytest_unconfigure(config):
    left = REGISTRY.stop_all()
    if left:
        sys.stderr.write("harness: stopped processes still running at exit: %s\n" % ", ".join(left))
    global _TMP
    if _TMP and os.path.isdir(_TMP) and not os.environ.get("WAKEGATE_KEEP_TMP"):
        shutil.rmtree(_TMP, ignore_errors=True)


def _session_tmp():
    # Short path under /tmp: unix socket paths must stay under 108 bytes.
    global _TMP
    if _TMP is None:
        cleaned = procs.cleanup_stale_sessions("/tmp", "wg-e2e-") + remove_stale_bridges()
        if cleaned:
            sys.stderr.write("harness: cleaned up after dead sessions: %s\n" % ", ".join(cleaned))
        _TMP = tempfile.mkdtemp(prefix="wg-e2e-", dir="/tmp")
        with open(os.path.join(_TMP, procs.OWNER_FILE), "w") as f:
            f.write("%d\n" % os.getpid())
    return _TMP


@pytest.fixture(scope="session")
def e2e_tmp():
    """The session's private directory (/tmp/wg-e2e-XXXXXXXX), removed at the end
    unless WAKEGATE_KEEP_TMP is set."""
    return _session_tmp()


@pytest.fixture(scope="session")
def artifacts():
    """Where logs are kept after the run (test-artifacts/e2e)."""
    return artifacts_dir()


# ---------------------------------------------------------------- redis

@pytest.fixture
def redis_server(e2e_tmp, artifacts, request):
    """A fresh redis-server per test (it starts in milliseconds), on a unix
    socket and a loopback TCP port, no persistence. .url, .unix_path,
    .unix_url, .pid, .stop(), .start(), .restart(). Stopped by pid."""
    d = tempfile.mkdtemp(prefix="redis-", dir=e2e_tmp)
    srv = RedisServer(d, artifacts)
    srv.log_path = artifacts / ("redis-%s.log" % _safe(request.node.name))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- docker

@pytest.fixture(scope="session")
def dockerd(e2e_tmp, artifacts):
    """One private dockerd (with its own containerd and bridge) for the session.
    .host, .sock, .pid, .api(...), .api_json(...), .cli(...), container helpers.
    Containers are removed and both daemons stopped by pid at the end."""
    d = Dockerd(os.path.join(e2e_tmp, "docker"), artifacts)
    d.start()
    try:
        yield d
    finally:
        errors = d.stop()
        if errors:
            sys.stderr.write("harness: dockerd cleanup: %s\n" % "; ".join(errors))


@pytest.fixture
def clean_engine(dockerd):
    """The session's dockerd with no container when the test starts and none
    left after it: an orchestrator adopts nothing of another test, and
    nothing of this one outlives it."""
    dockerd.remove_all_containers()
    try:
        yield dockerd
    finally:
        dockerd.remove_all_containers()


@pytest.fixture
def stack(redis_server, clean_engine, test_image, start_wakegate):
    """A stack_util.Stack (redis-server, the clean engine, role-all gateways
    the test starts with .start()) on the test image."""
    assert test_image == stack_util.IMAGE
    return stack_util.Stack(redis_server, clean_engine, start_wakegate)


@pytest.fixture(scope="session")
def ws_image(dockerd, test_image):
    """Tag of the test image with a WebSocket endpoint on 8081 (harness/image.py)."""
    return image.build_image(dockerd, image.WS_IMAGE,
                             extra_files={"/start.sh": image.WS_START_SH, "/ws.sh": image.WS_SH},
                             dockerfile_extra="RUN chmod 755 /start.sh /ws.sh\n", cmd=["/start.sh"])


@pytest.fixture(scope="session")
def test_image(dockerd):
    """Tag of the FROM-scratch busybox+git image; CMD serves /www on :8080."""
    return image.build_image(dockerd, image.TEST_IMAGE)


@pytest.fixture(scope="session")
def test_image_healthcheck(dockerd):
    """Tag of the same image with a HEALTHCHECK (wget of :8080 every 500 ms)."""
    return image.build_image(dockerd, image.TEST_IMAGE_HEALTHY, dockerfile_extra=image.HEALTHCHECK_EXTRA)


# ---------------------------------------------------------------- upstreams

@pytest.fixture
def recording_upstream():
    """A RecordingUpstream on 127.0.0.1 with the default handler; stopped after the test."""
    up = RecordingUpstream()
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture
def make_upstream():
    """Factory for more recording upstreams: make_upstream(handler=None)."""
    made = []

    def make(handler=None, **kw):
        up = RecordingUpstream(handler, **kw)
        made.append(up)
        return up

    try:
        yield make
    finally:
        for up in made:
            up.stop()


@pytest.fixture(scope="session")
def nginx_upstream(e2e_tmp, artifacts):
    """Debian's nginx serving /small.txt, /64k.bin, /1g.bin and the /upload
    and /discard sinks on 127.0.0.1. Stopped by pid."""
    n = NginxUpstream(os.path.join(e2e_tmp, "nginx"), artifacts)
    n.start()
    try:
        yield n
    finally:
        n.stop()


# ---------------------------------------------------------------- wakegate

@pytest.fixture
def start_wakegate(e2e_tmp, artifacts, request):
    """Factory: start_wakegate(config, env=None, args=None, wait=True, timeout=10)
    -> Wakegate. Every instance is stopped by pid after the test; a sanitizer
    report in its stderr fails the test."""
    f = WakegateFactory(os.path.join(e2e_tmp, "wakegate"), artifacts / "wakegate")
    f.label = request.node.name
    try:
        yield f
    finally:
        reports = f.stop_all()
        if reports:
            pytest.fail("sanitizer reports in wakegate stderr:\n" + "\n".join(reports[:20]), pytrace=False)


@pytest.fixture
def wakegate(start_wakegate):
    """Alias of start_wakegate."""
    return start_wakegate


@pytest.fixture
def raw_http():
    """The harness.rawhttp module: send(port, bytes), connect(port), request_bytes(...)."""
    return rawhttp


def _safe(name):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:100]
