"""Named ports of a session (issue 13): a template lists its ports by name,
and routes capture the name from the host or the path.

Everything is real: the wakegate binary (role all), a redis-server and the
harness's private dockerd. The session image serves three ports from
busybox httpd: "web" on 8080 (the test image's page), "api" on 8081, and
"slow" on 8082, which starts listening SLOW_S seconds after the container.

- Two ports of one session through a host route with the name as a label
  of its own, a host route with the name in the session's label (so a
  session id whose tail looks like a port name is not misread), and a path
  route.
- A name that no template has, and one that another template has, get 404
  and never wake the session: no wake command, no container.
- Readiness per port: with `ready: true` the wake waits for the named port,
  so a request to it on a sleeping session gets the port's answer. The
  control is the same template without `ready`: with upstream_recheck 0
  the request finds the port closed and gets 502.
"""

import pytest

from harness import image, rawhttp
from stack_util import APP_TEXT, DOMAIN, gw_config

pytestmark = pytest.mark.docker

PORTS_IMAGE = "wakegate-test-ports:latest"
SLOW_S = 2
API_TEXT = b"named port api"
SLOW_TEXT = b"named port slow"
START_SH = """#!/bin/sh
httpd -p 8081 -h /api
(sleep %d; exec httpd -f -p 8082 -h /slow) &
exec httpd -f -p 8080 -h /www
""" % SLOW_S

LABEL_DOMAIN = "p.localhost"  # {port}-{session}.p.localhost: one label
PATH_HOST = "paths.localhost"  # /s/{session}/{port}/


@pytest.fixture(scope="module")
def ports_image(dockerd, test_image):
    return image.build_image(dockerd, PORTS_IMAGE, cmd=["/bin/sh", "/start.sh"], extra_files={
        "/start.sh": START_SH,
        "/api/index.html": API_TEXT.decode() + "\n",
        "/slow/index.html": SLOW_TEXT.decode() + "\n",
    })


def ports_config(stack):
    cfg = gw_config(stack.redis_server.url, stack.dockerd)
    cfg["sessions"].update({
        "image": PORTS_IMAGE,
        "port": "web",
        "ports": {"web": 8080, "api": 8081},
        # A refused connect is a 502 at once, so only readiness can make the
        # slow port answer a request that woke its session.
        "upstream_recheck": "0s",
    })
    slow_ports = {"web": 8080, "api": 8081, "slow": {"port": 8082, "ready": True}}
    cfg["templates"] = {
        "slowready": {"image": PORTS_IMAGE, "port": "web", "ports": slow_ports},
        "noready": {"image": PORTS_IMAGE, "port": "web",
                    "ports": {"web": 8080, "api": 8081, "slow": 8082}},
        "other": {"image": PORTS_IMAGE, "ports": {"admin": 9000}},
    }
    cfg["routes"] = [
        {"match": {"host": "{port}.{session}." + DOMAIN}, "access": "public"},
        {"match": {"host": "{port}-{session}." + LABEL_DOMAIN}, "access": "public"},
        {"match": {"host": PATH_HOST, "path_prefix": "/s/{session}/{port}/"},
         "strip_prefix": True, "access": "public"},
        {"match": {"host": "{session}." + DOMAIN}, "access": "public"},
    ]
    return cfg


def get(stack, host, path="/", timeout=15.0):
    data = rawhttp.request_bytes("GET", path, host=host,
                                 headers=[("Accept", "*/*"), ("User-Agent", "ports-e2e")])
    r = rawhttp.send(stack.gw.port, data, timeout=timeout, until="responses")
    assert r.responses, "no response for %s%s (close=%s)\n%s" % (host, path, r.close,
                                                                 stack.gw.log_tail(30))
    return r.responses[0]


def containers_of(stack, sid):
    return stack.dockerd.cli("ps", "-a", "-q", "--filter", "label=wakegate.session=" + sid).stdout.split()


def test_two_ports_of_one_session_through_host_and_path_routes(stack, ports_image):
    stack.start(ports_config(stack))
    stack.create("s1")
    stack.create("app-api")

    # The first request wakes the session, on the named port it asked for.
    r = get(stack, "api.s1." + DOMAIN)
    assert r.status == 200 and API_TEXT in r.body, (r.status, r.body[:200])
    r = get(stack, "web.s1." + DOMAIN)
    assert r.status == 200 and APP_TEXT in r.body, (r.status, r.body[:200])
    # The main route still reaches the main port, named by port: web.
    r = stack.get("s1")
    assert r.status == 200 and APP_TEXT in r.body
    # The name in the session's label; names are case-blind like hosts.
    r = get(stack, "API-s1." + LABEL_DOMAIN)
    assert r.status == 200 and API_TEXT in r.body
    r = get(stack, "web-s1." + LABEL_DOMAIN)
    assert r.status == 200 and APP_TEXT in r.body
    # The path route, stripped to the app's own paths.
    r = get(stack, PATH_HOST, "/s/s1/api/index.html")
    assert r.status == 200 and API_TEXT in r.body
    r = get(stack, PATH_HOST, "/s/s1/web/")
    assert r.status == 200 and APP_TEXT in r.body

    # "app-api" ends like a port name: the port is the first label part,
    # so web-app-api is port web of session app-api, never port api of "app".
    r = get(stack, "web-app-api." + LABEL_DOMAIN)
    assert r.status == 200 and APP_TEXT in r.body
    r = get(stack, "api-app-api." + LABEL_DOMAIN)
    assert r.status == 200 and API_TEXT in r.body
    assert stack.record("app-api")["state"] == "running"
    assert stack.r.exists("wg:session:app") == 0
    # One container per session, however many ports were used.
    assert len(containers_of(stack, "s1")) == 1
    assert len(containers_of(stack, "app-api")) == 1


def test_unknown_port_name_is_404_and_wakes_nothing(stack, ports_image):
    stack.start(ports_config(stack))
    stack.create("s2")

    # No template has "nope": refused before any lookup.
    r = get(stack, "nope.s2." + DOMAIN)
    assert r.status == 404, r.status
    # "admin" is a port of the template "other", not of s2's: refused once
    # the record says which template s2 has, still without a wake.
    r = get(stack, "admin.s2." + DOMAIN)
    assert r.status == 404, r.status
    r = get(stack, PATH_HOST, "/s/s2/admin/")
    assert r.status == 404, r.status
    r = get(stack, "nope-s2." + LABEL_DOMAIN)
    assert r.status == 404, r.status
    assert stack.record("s2")["state"] == "asleep"
    assert stack.wake_commands("s2") == []
    assert containers_of(stack, "s2") == []
    m = stack.gw.metrics()
    assert m["wakegate_session_port_unknown_total"] == 4, m.get("wakegate_session_port_unknown_total")
    assert "no port of that name" in stack.gw.log_tail(200)

    # A known name of the session's own template does wake it.
    r = get(stack, "api.s2." + DOMAIN)
    assert r.status == 200 and API_TEXT in r.body


def test_readiness_waits_for_a_named_port(stack, ports_image):
    stack.start(ports_config(stack))
    stack.create("ready1", template="slowready")
    stack.create("control1", template="noready")

    # ready: true: the wake is not over before :8082 accepts, so the held
    # request gets the slow port's answer.
    r = get(stack, "slow.ready1." + DOMAIN, timeout=20)
    assert r.status == 200 and SLOW_TEXT in r.body, (r.status, r.body[:200])
    assert stack.record("ready1")["state"] == "running"

    # Without it the wake ends when the main port accepts, and the request
    # finds :8082 still closed (no recheck): the control that shows the
    # test can fail.
    r = get(stack, "slow.control1." + DOMAIN, timeout=20)
    assert r.status == 502, (r.status, r.body[:200])
    assert stack.record("control1")["state"] == "running"
