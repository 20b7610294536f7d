"""Helpers of the private-route tests (test_access.py, test_forward_auth.py):
credentials made as common/access.c makes them, requests through the
public listener, and records written as common/store's scripts write them."""

import base64
import hashlib
import hmac
import json
import os
import time

from harness import rawhttp
from stack_util import HOST

DOMAIN = "preview.localhost"
SECRET = b"0123456789abcdef0123456789abcdef-access-test"

NAV = (("Accept", "text/html,application/xhtml+xml"), ("Sec-Fetch-Mode", "navigate"),
       ("User-Agent", "access-e2e"))
API = (("Accept", "*/*"), ("User-Agent", "access-e2e"))


def secret_file(tmp):
    path = os.path.join(tmp, "access.key")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, SECRET)
    os.close(fd)
    return path


def mint(sid, expires, gen, key=SECRET):
    """A token as common/access.c makes it, computed here independently."""
    body = "%s.%d.%016x" % (sid, expires, gen)
    mac = hmac.new(key, b"wakegate-access-v1\n" + body.encode(), hashlib.sha256).digest()
    return body + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def send(gw, host, target, headers=(), method="GET", timeout=20.0):
    data = rawhttp.request_bytes(method, target, host=host, headers=list(headers))
    r = rawhttp.send(gw.port, data, timeout=timeout, until="responses", methods=[method])
    assert r.responses, "no response for %s %s (got %r)\n%s" % (host, target, r.data[:300], gw.log_tail(30))
    return r.responses[0], r.data


def header(resp, name):
    for k, v in resp.headers:
        if k.lower() == name.lower():
            return v
    return None


def put_record(r, sid, state, gen, ip=None, port=None, v=1):
    """The record and its wg:state message, with the access generation, as
    common/store's scripts write them."""
    key = "wg:session:" + sid
    now = str(int(time.time() * 1000))
    fields = {"id": sid, "state": state, "state_since": now, "created": now, "host": HOST,
              "v": str(v), "gen": str(gen)}
    msg = {"id": sid, "state": state, "v": v, "gen": str(gen)}
    if ip:
        fields.update(ip=ip, port=str(port))
        msg.update(ip=ip, port=port)
    p = r.pipeline(transaction=True)
    p.hset(key, mapping=fields)
    p.sadd("wg:sessions", sid)
    p.publish("wg:state", json.dumps(msg))
    p.execute()
