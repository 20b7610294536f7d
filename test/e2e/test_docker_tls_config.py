"""End-to-end: docker.tls and docker.host of the configuration, in the real
binary (role orchestrator, the harness's redis-server) against the harness's
dockerd reached through the TLS relay of docker_tls_util (client
certificates required, as Docker's --tlsverify).

/readyz of an orchestrator is 200 only when Docker answered its ping and the
events stream is open, so a 200 proves that the binary spoke TLS with the
configured CA, client certificate and key. A wrong CA, or no client
certificate, keeps it at 503 with a log line naming the TLS error. Hosts and
TLS files that are wrong on their face stop startup with exit code 3.
"""

import json
import pathlib
import time

import pytest

from docker_tls_util import TlsRelay, make_tls_files

pytestmark = pytest.mark.docker

EXIT_CONFIG = 3


@pytest.fixture(scope="module")
def tls_files(e2e_tmp):
    return make_tls_files(pathlib.Path(e2e_tmp) / "tls-config")


@pytest.fixture
def relay(clean_engine, tls_files):
    # Nothing of another test may be adopted by this orchestrator's reconcile.
    r = TlsRelay(clean_engine.sock, tls_files)
    try:
        yield r
    finally:
        r.stop()


def tls_config(redis_server, relay, tls=None):
    return {
        "redis": {"url": redis_server.url},
        "docker": {"host": "tcp://127.0.0.1:%d" % relay.port, "name": "h-tls", "tls": tls},
        "log": {"level": "debug"},
    }


def files_tls(files, ca="ca.pem", client=True, **extra):
    tls = {"ca": str(files / ca)}
    if client:
        tls.update(cert=str(files / "client.pem"), key=str(files / "client.key"))
    tls.update(extra)
    return tls


def starting_line(gw):
    return gw.wait_log(r"orchestrator starting", timeout=5)


def test_readyz_through_tls_with_client_certificate(redis_server, relay, tls_files, start_wakegate):
    gw = start_wakegate(tls_config(redis_server, relay, files_tls(tls_files)), args=["--role", "orchestrator"])
    assert "tls=on" in starting_line(gw)
    gw.wait_ready(timeout=15)
    gw.wait_log(r"Docker engine answered.*host=tcp://127\.0\.0\.1:%d.*api=1\.41" % relay.port, timeout=5)
    gw.wait_log(r"startup reconciliation done", timeout=10)
    assert relay.conns >= 2, relay.conns  # the calls, and the events stream on its own connection
    assert relay.handshakes_failed == 0
    # It stays ready: the events stream is held open through the relay.
    time.sleep(1.0)
    assert gw.readyz()[0] == 200
    assert gw.stop() == 0


def test_wrong_ca_keeps_readyz_503_with_the_tls_error(redis_server, relay, tls_files, start_wakegate):
    gw = start_wakegate(tls_config(redis_server, relay, files_tls(tls_files, ca="other-ca.pem")),
                        args=["--role", "orchestrator"])
    line = gw.wait_log(r"Docker engine does not answer, not ready", timeout=10)
    assert "host=tcp://127.0.0.1:%d" % relay.port in line, line
    assert "SSL certificate problem" in line, line
    # Not a wait for a slow start: it never becomes ready.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        status, body = gw.readyz()
        assert status == 503, (status, body)
        time.sleep(0.1)
    assert b"does not answer" in body, body
    assert relay.handshakes_failed >= 1 and relay.conns == 0
    assert gw.stop() == 0


def test_missing_client_certificate_is_refused_by_the_engine(redis_server, relay, tls_files, start_wakegate):
    gw = start_wakegate(tls_config(redis_server, relay, files_tls(tls_files, client=False)),
                        args=["--role", "orchestrator"])
    gw.wait_log(r"Docker engine does not answer, not ready", timeout=10)
    # In TLS 1.3 the server refuses the certificate after the client's side of
    # the handshake is done: the client sees the alert or just a reset, as
    # timing has it, so the line's text is not asserted; the relay saw why.
    time.sleep(1.0)
    assert gw.readyz()[0] == 503
    assert relay.handshakes_failed >= 1 and relay.conns == 0
    assert gw.stop() == 0


def test_verify_false_accepts_an_unknown_engine_certificate(redis_server, relay, tls_files, start_wakegate):
    tls = files_tls(tls_files, ca="other-ca.pem", verify=False)
    gw = start_wakegate(tls_config(redis_server, relay, tls), args=["--role", "orchestrator"])
    assert "tls=unverified" in starting_line(gw)
    gw.wait_ready(timeout=15)
    assert gw.stop() == 0


@pytest.mark.parametrize("check", [False, True], ids=["start", "check-config"])
def test_bad_docker_host_exits_3_naming_the_line(redis_server, start_wakegate, e2e_tmp, check):
    text = ("redis: {url: \"%s\"}\n"
            "docker:\n"
            "  name: h-tls\n"
            "  host: \"tcp://127.0.0.1:99999\"\n" % redis_server.url)
    path = pathlib.Path(e2e_tmp) / ("bad-host-%s.yaml" % check)
    path.write_text(text)
    args = ["--config", path, "--role", "orchestrator"] + (["--check-config"] if check else [])
    r = start_wakegate.run(args, env={"WAKEGATE_ADMIN_LISTEN": "127.0.0.1:0", "WAKEGATE_LISTEN": "127.0.0.1:0"})
    assert r.returncode == EXIT_CONFIG, (r.returncode, r.stdout, r.stderr)
    assert ("%s:4: docker.host: invalid Docker host \"tcp://127.0.0.1:99999\": bad port in the Docker host: "
            "expected 1-65535" % path) in r.stderr, r.stderr


def test_docker_host_from_environment_is_checked_too(start_wakegate):
    r = start_wakegate.run(["--check-config"], env={"WAKEGATE_DOCKER_HOST": "tcp://[::1:2376"})
    assert r.returncode == EXIT_CONFIG, (r.returncode, r.stderr)
    assert "environment WAKEGATE_DOCKER_HOST: invalid Docker host \"tcp://[::1:2376\": unterminated [" in r.stderr, \
        r.stderr


def test_unreadable_tls_files_and_unix_host_exit_3(start_wakegate, tls_files, e2e_tmp):
    cases = [
        ("docker:\n  host: \"tcp://127.0.0.1:2376\"\n  tls:\n    ca: \"%s\"\n    cert: /nonexistent/client.pem\n"
         "    key: \"%s\"\n" % (tls_files / "ca.pem", tls_files / "client.key"),
         ":5: docker.tls.cert: cannot read \"/nonexistent/client.pem\": No such file or directory"),
        ("docker:\n  host: \"tcp://127.0.0.1:2376\"\n  tls:\n    key: \"%s\"\n" % (tls_files / "client.key"),
         ":4: docker.tls.key: set docker.tls.cert and docker.tls.key together"),
        ("docker:\n  host: \"unix:///var/run/docker.sock\"\n  tls:\n    ca: \"%s\"\n" % (tls_files / "ca.pem"),
         ":4: docker.tls: needs a tcp:// docker.host"),
    ]
    for i, (text, want) in enumerate(cases):
        path = pathlib.Path(e2e_tmp) / ("bad-tls-%d.yaml" % i)
        path.write_text(text)
        r = start_wakegate.run(["--check-config", "--config", path])
        assert r.returncode == EXIT_CONFIG, (i, r.returncode, r.stderr)
        assert str(path) + want in r.stderr, (i, r.stderr)
    # And a good one passes --check-config.
    good = pathlib.Path(e2e_tmp) / "good-tls.yaml"
    good.write_text(json.dumps({"docker": {"host": "tcp://127.0.0.1:2376", "tls": files_tls(tls_files)}}))
    r = start_wakegate.run(["--check-config", "--config", good])
    assert r.returncode == 0, r.stderr
