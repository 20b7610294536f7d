"""End-to-end tests of `access: public` set by a template (issue 10,
"Private previews"): a session route that does not say `access` follows
the session's template; a route that says `private` or `public` wins.

Real wakegate (role all), redis-server and the harness's dockerd. The
template "demo" is public, the default template private (the default).
"""

import tempfile
import time

import pytest

from access_util import API, DOMAIN, NAV, secret_file, send
from stack_util import APP_TEXT, IMAGE, gw_config

pytestmark = pytest.mark.docker

LOCKED = "locked." + DOMAIN  # a route that says access: private


@pytest.fixture
def gw(stack, e2e_tmp):
    cfg = gw_config(stack.redis_server.url, stack.dockerd, wake_timeout="20s")
    cfg["routes"] = [
        {"match": {"host": LOCKED, "path_prefix": "/s/{session}/"}, "strip_prefix": True,
         "access": "private"},
        {"match": {"host": "{session}." + DOMAIN}},
    ]
    cfg["templates"] = {"demo": {"image": IMAGE, "port": 8080, "access": "public"}}
    cfg["access"] = {"secret_file": secret_file(tempfile.mkdtemp(prefix="tacc-", dir=e2e_tmp))}
    return stack.start(cfg)


def get(gw, host, target="/", headers=API):
    return send(gw, host, target, headers)


def test_a_public_template_opens_its_sessions_on_routes_that_leave_it_to_the_template(stack, gw):
    since = int(time.time()) - 1
    stack.create("t-pub", template="demo")
    stack.create("t-priv")
    # The public template's session: no credential, it wakes and answers.
    resp, _ = get(gw, "t-pub." + DOMAIN)
    assert resp.status == 200 and APP_TEXT in resp.body, (resp, resp.body[:200])
    # The private one: 401 at once, and never woken; a session that does
    # not exist gets the very same bytes (navigation and API alike).
    for hdrs in (NAV, API):
        resp, raw = get(gw, "t-priv." + DOMAIN, headers=hdrs)
        assert resp.status == 401, resp
        _, raw_missing = get(gw, "nobody-here." + DOMAIN, headers=hdrs)
        assert raw_missing == raw
    # A route that says private wins over the template.
    resp, _ = get(gw, LOCKED, "/s/t-pub/")
    assert resp.status == 401, resp
    time.sleep(0.3)
    assert stack.actions(since, "t-priv") == []
    assert stack.record("t-priv")["state"] == "asleep"


def test_a_template_access_word_other_than_public_or_private_is_refused(stack, start_wakegate):
    cfg = gw_config(stack.redis_server.url, stack.dockerd)
    cfg["templates"] = {"demo": {"image": IMAGE, "access": "open"}}
    with pytest.raises(Exception) as e:
        start_wakegate(cfg, args=["--role", "all"])
    assert "templates.demo.access: \"open\" is not public or private" in str(e.value)
