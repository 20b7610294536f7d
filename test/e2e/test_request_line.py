"""RFC 9112 request-line rules and the header look-alikes, end to end:
the answers a third-party HTTP/1.1 probe expects, through the real binary
with a recording upstream behind it.

- A malformed request line or version is 400; only a well-formed version
  with a major other than 1 is 505. An over-long method is 400 (501 is for
  a well-formed method we do not implement, 414 for a long target).
- A fragment, "%00" or a non-ASCII byte in the target, and an empty Host,
  are 400.
- "OPTIONS *" is answered by the gateway itself (200, Allow) and never
  reaches an upstream.
- A field whose name reads as a framing, hop-by-hop or forwarding header
  once "_" is taken for "-" (Transfer_Encoding, Content_Length,
  X_Forwarded_For) is 400: applications behind CGI-style gateways would
  take it for the real one.
- A response whose reason phrase holds a NUL or another control byte is a
  502, and the bytes never reach the client.
Every refusal: Connection: close, a clean FIN, nothing at the upstream.
"""

import pytest

from rules_util import accepted, assert_refused, by_path, proxy_config, send


@pytest.fixture
def up(recording_upstream):
    return recording_upstream


@pytest.fixture
def gw(start_wakegate, up):
    return start_wakegate(proxy_config(up))


REFUSED = [
    # malformed versions: 400, not 505
    ("version-three-digits", b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400),
    ("version-no-minor", b"GET / HTTP/1\r\nHost: a\r\n\r\n", 400),
    ("version-lowercase-name", b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
    ("version-letters", b"GET / HTTP/a.b\r\nHost: a\r\n\r\n", 400),
    ("version-trailing-space", b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
    ("version-missing", b"GET /\r\nHost: a\r\n\r\n", 400),
    # well-formed but unsupported: 505
    ("version-2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    ("version-3.0", b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505),
    ("version-0.9", b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
    # separators
    ("two-spaces-after-method", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("two-spaces-before-version", b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("tab-separator", b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("leading-space", b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("method-with-slash", b"GE/T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    # an over-long method: 400, whole or still arriving
    ("method-33-bytes", b"A" * 33 + b" / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("method-10k", b"A" * 10000 + b" / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("method-10k-partial", b"A" * 10000, 400),
    # targets
    ("fragment-in-target", b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("encoded-nul-in-path", b"GET /a%00b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("non-ascii-in-target", b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("del-in-target", b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    # dot segments, also percent-encoded
    ("dot-dot-segment", b"GET /s/a/../b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("dot-segment", b"GET /s/./b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("encoded-dot-dot", b"GET /s/a/%2E%2e/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("trailing-dot-dot", b"GET /s/a/.. HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    # Host
    ("empty-host", b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
    ("empty-host-no-space", b"GET / HTTP/1.1\r\nHost:\r\n\r\n", 400),
    # look-alikes of framing, hop-by-hop and forwarding fields
    ("transfer_encoding", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer_Encoding: chunked\r\n\r\nhello", 400),
    ("content_length", b"POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\nContent-Length: 0\r\n\r\n", 400),
    ("x_forwarded_for", b"GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 10.9.9.9\r\n\r\n", 400),
    ("keep_alive", b"GET / HTTP/1.1\r\nHost: a\r\nKEEP_ALIVE: timeout=5\r\n\r\n", 400),
    ("x_real_ip", b"GET / HTTP/1.1\r\nHost: a\r\nx_real_ip: 10.9.9.9\r\n\r\n", 400),
    ("host_", b"GET / HTTP/1.1\r\nHost: a\r\nHost_: b\r\n\r\n", None),
]


@pytest.mark.parametrize("name,data,status", REFUSED, ids=[r[0] for r in REFUSED])
def test_request_line_and_lookalikes_refused(gw, up, name, data, status):
    if status is None:  # not a look-alike of anything: passes
        r, _ = accepted(gw, up, data)
        assert r.responses[0].status == 200, r.data[:200]
        return
    assert_refused(gw, up, data, status)


def test_unknown_well_formed_method_is_501(gw, up):
    assert_refused(gw, up, b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n", 501)


def test_long_target_is_still_414(gw, up):
    assert_refused(gw, up, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414)


def test_options_star_is_answered_by_the_gateway(gw, up):
    r = send(gw.port, b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
             until="responses", n=2)
    first, second = r.responses
    assert first.status == 200, first.raw_head
    allow = [m.strip() for m in (first.headers.get("allow") or "").split(",")]
    assert "GET" in allow and "OPTIONS" in allow and "TRACE" not in allow and "CONNECT" not in allow, allow
    assert first.body == b""
    # The connection stays usable and only the second request went upstream.
    assert second.status == 200 and second.body == b"ok GET /next\n", second.raw_head
    assert [q.target for q in up.requests] == ["/next"], [q.target for q in up.requests]


def test_underscore_names_that_mimic_nothing_pass(gw, up):
    """Only look-alikes of fields the proxy acts on are refused: an ordinary
    header with an underscore goes through as sent."""
    r, _ = accepted(gw, up, b"GET /u HTTP/1.1\r\nHost: a\r\nX_Api_Key: k1\r\n\r\n")
    assert r.responses[0].status == 200, r.data[:200]
    assert b"\r\nX_Api_Key: k1\r\n" in up.connections[0].data, up.connections[0].data


def test_plain_requests_still_pass(gw, up):
    for line in (b"GET / HTTP/1.1", b"GET /a%20b?x=1&y=%2F HTTP/1.1", b"PATCH /p HTTP/1.1",
                 b"GET /~user/a-b_c.d HTTP/1.1"):
        r = send(gw.port, line + b"\r\nHost: a\r\n\r\n", until="responses")
        assert r.response.status == 200, (line, r.data[:200])


@pytest.mark.parametrize("reason", [b"O\x00K", b"OK\x01", b"O\x7fK"], ids=["nul", "soh", "del"])
def test_reason_phrase_with_a_control_byte_is_502(start_wakegate, up, reason):
    up.set_handler(by_path({"/r": b"HTTP/1.1 200 " + reason + b"\r\nContent-Length: 2\r\n\r\nhi"}))
    gw = start_wakegate(proxy_config(up))
    r = send(gw.port, b"GET /r HTTP/1.1\r\nHost: a\r\n\r\n", until="responses")
    assert r.response.status == 502, r.data[:200]
    assert reason not in r.data, r.data[:200]


def test_reason_phrase_with_tab_and_obs_text_is_relayed(start_wakegate, up):
    up.set_handler(by_path({"/r": b"HTTP/1.1 200 All\tfine \xe9\r\nContent-Length: 2\r\n\r\nhi"}))
    gw = start_wakegate(proxy_config(up))
    r = send(gw.port, b"GET /r HTTP/1.1\r\nHost: a\r\n\r\n", until="responses")
    assert r.response.status == 200 and r.response.body == b"hi", r.data[:200]


def test_stripped_prefix_never_sends_a_dot_segment_upstream(start_wakegate, up):
    """With strip_prefix, "/s/a/../x" would match the prefix and reach the
    upstream as "/../x": refused before routing. Names with dots pass."""
    routes = [{"match": {"path_prefix": "/s/"}, "strip_prefix": True, "upstream": up.address}]
    gw = start_wakegate(proxy_config(up, routes=routes))
    assert_refused(gw, up, b"GET /s/a/../x HTTP/1.1\r\nHost: a\r\n\r\n", 400)
    r, reqs = accepted(gw, up, b"GET /s/a..b/.well-known/x.y HTTP/1.1\r\nHost: a\r\n\r\n")
    assert r.responses[0].status == 200, r.data[:200]
    assert reqs[0].target == "/a..b/.well-known/x.y", reqs[0].target
