"""The admin API's reference (docs/openapi.json), against the live API.

The unit test (test/unit/test_api.c) holds the document to the route table.
This one holds it to what the real binary (role all, a real redis-server,
the harness's dockerd) answers:

- /v1/openapi.json serves the document byte for byte as docs/ has it;
- every documented operation is called, and its status is one the document
  lists for it; a JSON answer is valid against the documented schema (a
  small validator below: type, required, properties, additionalProperties,
  enum, const, items, oneOf, $ref), so a field added or dropped fails here;
- on every documented path, a method nobody documented gets 405 with an
  Allow that lists exactly the documented methods.
"""

import json
import os
import pathlib
import socket
import tempfile

import pytest

from access_util import secret_file
from stack_util import TOKEN, gw_config

pytestmark = pytest.mark.docker

DOC_PATH = pathlib.Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
DOC = json.loads(DOC_PATH.read_text())
METHODS = ("get", "head", "post", "delete")


def resolve(ref):
    node = DOC
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def validate(value, schema, where="$"):
    """Raise AssertionError where value breaks schema (the subset we use)."""
    if "$ref" in schema:
        return validate(value, resolve(schema["$ref"]), where)
    if "oneOf" in schema:
        errors = []
        for s in schema["oneOf"]:
            try:
                validate(value, s, where)
                return
            except AssertionError as e:
                errors.append(str(e))
        raise AssertionError("%s: matches no oneOf: %s" % (where, errors))
    if "const" in schema:
        assert value == schema["const"], "%s: %r is not %r" % (where, value, schema["const"])
    if "enum" in schema:
        assert value in schema["enum"], "%s: %r not in %r" % (where, value, schema["enum"])
    types = schema.get("type")
    if types is not None:
        types = types if isinstance(types, list) else [types]
        ok = {"object": isinstance(value, dict), "array": isinstance(value, list),
              "string": isinstance(value, str), "boolean": isinstance(value, bool),
              "null": value is None,
              "integer": isinstance(value, int) and not isinstance(value, bool),
              "number": isinstance(value, (int, float)) and not isinstance(value, bool)}
        assert any(ok[t] for t in types), "%s: %r is not %s" % (where, value, types)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            assert k in value, "%s: required %r missing (got %s)" % (where, k, sorted(value))
        if schema.get("additionalProperties") is False:
            extra = set(value) - set(props)
            assert not extra, "%s: undocumented fields %s" % (where, sorted(extra))
        for k, v in value.items():
            if k in props:
                validate(v, props[k], "%s.%s" % (where, k))
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            validate(v, schema["items"], "%s[%d]" % (where, i))


def operation(path, method):
    return DOC["paths"][path][method.lower()]


def check(resp, path, method):
    """The status is documented for the operation; a JSON body fits its schema."""
    op = operation(path, method)
    code = str(resp.status)
    assert code in op["responses"], "%s %s answered %d, documented: %s (%r)" % (
        method, path, resp.status, sorted(op["responses"]), resp.body[:300])
    answer = op["responses"][code]
    if "$ref" in answer:
        answer = resolve(answer["$ref"])
    content = answer.get("content", {})
    ctype = resp.headers.get("content-type", "")
    if method != "HEAD" and "application/json" in content and ctype.startswith("application/json"):
        validate(json.loads(resp.body), content["application/json"]["schema"], "%s %s %d" % (method, path, resp.status))
    return resp


@pytest.fixture
def api(stack, e2e_tmp):
    cfg = gw_config(stack.redis_server.url, stack.dockerd)
    cfg["routes"] = [{"match": {"host": "{session}.preview.localhost"}}]
    cfg["access"] = {"secret_file": secret_file(tempfile.mkdtemp(prefix="openapi-", dir=e2e_tmp))}
    gw = stack.start(cfg)

    def call(method, path, body=None, template=None, query="", token=TOKEN):
        resp = gw.admin(method, path + query, body=body, token=token, timeout=30)
        return check(resp, template or path, method)
    call.gw = gw
    return call


def test_the_served_document_is_docs_openapi_json(api):
    r = api.gw.admin("GET", "/v1/openapi.json", token=TOKEN)
    assert r.status == 200 and r.headers["content-type"] == "application/json", r
    assert r.body == DOC_PATH.read_bytes()
    assert api.gw.admin("GET", "/v1/openapi.json").status == 401


def test_every_documented_operation_answers_as_documented(api):
    S, ID = "/v1/sessions", "/v1/sessions/{id}"
    api("POST", S, {"id": "oa-1"})
    api("POST", S, {"id": "oa-1"})  # 200: exists
    api("POST", S, {"id": "oa-2", "idle": {"pause_after": "1h", "stop_after": "1m"}})  # 400
    api("POST", S, {"id": "oa-ro"}, token="not-a-token")  # 401
    api("GET", S)
    api("HEAD", S)
    api("GET", "/v1/sessions/oa-1", template=ID)
    api("HEAD", "/v1/sessions/oa-1", template=ID)
    api("GET", "/v1/sessions/nobody", template=ID)  # 404
    api("GET", "/v1/sessions/Bad.Id", template=ID)  # 400
    api("POST", "/v1/sessions/oa-1/keepalive", {"duration": "1m"}, template=ID + "/keepalive")  # 409: asleep
    api("POST", "/v1/sessions/oa-1/wake", template=ID + "/wake")  # 202
    r = api("POST", "/v1/sessions/oa-1/wake", template=ID + "/wake", query="?wait=1")
    assert r.status == 200, r
    r = api("POST", "/v1/sessions/oa-1/keepalive", {"duration": "1m"}, template=ID + "/keepalive")
    assert r.status == 200, r
    api("POST", "/v1/sessions/oa-1/keepalive", {"nap": "1m"}, template=ID + "/keepalive")  # 400
    r = api("POST", "/v1/sessions/oa-1/links", {"ttl": "10m"}, template=ID + "/links")
    assert r.status == 200, r
    api("POST", "/v1/sessions/nobody/links", {"ttl": "10m"}, template=ID + "/links")  # 404
    r = api("POST", "/v1/sessions/oa-1/revoke", template=ID + "/revoke")
    assert r.status == 200, r
    r = api("POST", "/v1/sessions/oa-1/events", {"type": "exec", "detail": {"cmd": ["true"]}},
            template=ID + "/events")
    assert r.status == 201, r
    api("POST", "/v1/sessions/oa-1/events", {"type": "save", "detail": {}}, template=ID + "/events")  # 400
    api("POST", "/v1/sessions/nobody/events", {"type": "exec_exit", "detail": {"exit_code": 0}},
        template=ID + "/events")  # 404
    r = api("POST", "/v1/sessions/oa-1/sleep", template=ID + "/sleep", query="?wait=1&force=1")
    assert r.status == 200, r
    api("POST", "/v1/sessions/oa-1/sleep", template=ID + "/sleep", query="?wait=maybe")  # 400
    r = api("DELETE", "/v1/sessions/oa-1", template=ID, query="?force=1")
    assert r.status == 202, r
    api("GET", "/v1/openapi.json")
    api("HEAD", "/v1/openapi.json")
    r = api("GET", "/v1/hosts")
    assert r.status == 200 and [h["name"] for h in json.loads(r.body)["hosts"]] == ["h1"], r
    api("HEAD", "/v1/hosts")
    for path in ("/healthz", "/readyz", "/metrics"):
        api("GET", path, token=None)
    # The event stream: its head, then a replayed event.
    with socket.create_connection(("127.0.0.1", api.gw.admin_port), timeout=10) as s:
        s.sendall(b"GET /v1/events?since=0 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n\r\n" % TOKEN.encode())
        data = b""
        while b"\ndata:" not in data:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 200 ") and "text/event-stream" in head, head
    assert "200" in operation("/v1/events", "GET")["responses"]
    r = api("GET", "/v1/events", query="?since=x")  # 400
    assert r.status == 400


def test_undocumented_methods_get_405_with_the_documented_allow(api):
    for path, item in DOC["paths"].items():
        documented = [m.upper() for m in METHODS if m in item]
        live = path.replace("{id}", "oa-x")
        r = api.gw.admin("PUT", live, token=TOKEN, body={})
        assert r.status == 405, (path, r.status, r.body[:200])
        allow = [m.strip() for m in r.headers.get("allow", "").split(",") if m.strip()]
        if path in ("/healthz", "/readyz", "/metrics"):
            # The listener's own paths: GET and HEAD both, documented as GET.
            assert allow == ["GET", "HEAD"], (path, allow)
            continue
        assert allow == documented, (path, allow, documented)
