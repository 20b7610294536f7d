"""RFC 9110/9112 conformance, end to end: path bytes, singleton fields, 100 (Continue) and 405.

Raw bytes to the real binary with a recording upstream behind it:

- RFC 9112 section 3.2 / RFC 3986 section 3.3: origin-form is an
  absolute-path of pchars (unreserved, pct-encoded, sub-delims, ':' and
  '@'). A backslash is not one; an upstream may take it for '/'. A
  percent-encoded control byte in the path (%00-%1f, %7f, e.g. "%0d%0a")
  turns into a line break in an upstream that decodes the path into a
  header. Both are 400 in the path; the query keeps them (a form sent by
  GET encodes a textarea's line breaks there).
- RFC 9110 section 5.3: a sender MUST NOT generate two field lines of a
  field that is not a list. Content-Type (section 8.3) and Authorization
  (section 11.6.2) each hold one value; given twice, the gateway and the
  upstream, or two parsers behind it, act on different ones. 400.
- RFC 9110 section 10.1.1: a server MAY omit the 100 (Continue) when it has
  already received the content. A body that came with its head gets only
  the final response; one still missing gets the 100 first.
- RFC 9110 section 15.5.6: a 405 carries Allow (CONNECT and TRACE, which
  the gateway refuses).

Every refusal: Connection: close, a clean FIN, no byte at the upstream.
"""

import pytest

from harness import rawhttp
from rules_util import accepted, assert_refused, proxy_config


@pytest.fixture
def up(recording_upstream):
    return recording_upstream


@pytest.fixture
def gw(start_wakegate, up):
    return start_wakegate(proxy_config(up))


REFUSED_TARGETS = [
    ("backslash", b"GET /path\\file HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("backslash-dot-dot", b"GET /s/a\\..\\b HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("encoded-crlf", b"GET /path%0d%0aX-Injected:%20true HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("encoded-lf-upper", b"GET /a%0A HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("encoded-unit-separator", b"GET /a%1f HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("encoded-del", b"GET /a%7F HTTP/1.1\r\nHost: a\r\n\r\n"),
]


@pytest.mark.parametrize("name,data", REFUSED_TARGETS, ids=[r[0] for r in REFUSED_TARGETS])
def test_unsafe_path_bytes_are_400(gw, up, name, data):
    """RFC 9112 section 3.2 (origin-form = absolute-path [ "?" query ]) and
    RFC 3986 section 3.3 (path = pchars): a backslash, or a percent-encoded
    control byte, in the path is an invalid request-target; RFC 9112
    section 3 says a server SHOULD answer an invalid request-line with 400."""
    assert_refused(gw, up, data, 400)


def test_the_same_bytes_in_the_query_pass(gw, up):
    """RFC 3986 section 3.4: the query is the application's; line breaks a
    GET form encodes there, and a backslash, reach the upstream as sent."""
    target = "/search?q=a\\b&t=l1%0D%0Al2"
    r, reqs = accepted(gw, up, b"GET " + target.encode() + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert r.responses[0].status == 200, r.data[:200]
    assert reqs[0].target == target, reqs[0].target


def test_encoded_printable_bytes_in_the_path_pass(gw, up):
    """pct-encoded is a pchar (RFC 3986 section 3.3): only encoded control
    bytes are refused, not "%20", "%2F", "%7E" or "%30"."""
    target = "/a%20b/c%2Fd%7E%30"
    r, reqs = accepted(gw, up, b"GET " + target.encode() + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert r.responses[0].status == 200, r.data[:200]
    assert reqs[0].target == target, reqs[0].target


REFUSED_FIELDS = [
    ("content-type-twice",
     b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n"
     b"Content-Type: text/html\r\n\r\nhello"),
    ("content-type-twice-other-case",
     b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\ncontent-type: a/b\r\n"
     b"CONTENT-TYPE: a/b\r\n\r\nhi"),
    ("authorization-twice",
     b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer one\r\nAuthorization: Bearer two\r\n\r\n"),
]


@pytest.mark.parametrize("name,data", REFUSED_FIELDS, ids=[r[0] for r in REFUSED_FIELDS])
def test_singleton_fields_given_twice_are_400(gw, up, name, data):
    """RFC 9110 section 5.3: a sender MUST NOT generate multiple field lines
    with the same name unless the field is defined as a list; Content-Type
    (section 8.3) and Authorization (section 11.6.2) are single values.
    Which one counts is not defined, so the request is ambiguous: 400."""
    assert_refused(gw, up, data, 400)


def test_singleton_fields_once_pass(gw, up):
    """One Content-Type and one Authorization are forwarded unchanged."""
    data = (b"POST /p HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer one\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
    r, reqs = accepted(gw, up, data)
    assert r.responses[0].status == 200, r.data[:200]
    raw = up.connections[0].data
    assert raw.count(b"\r\nAuthorization: Bearer one\r\n") == 1, raw
    assert raw.count(b"\r\nContent-Type: text/plain\r\n") == 1, raw


def _expect_request(body, length=None):
    length = len(body) if length is None else length
    return (b"POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % length) + body


@pytest.mark.parametrize("warm_pool", [False, True], ids=["fresh-upstream", "pooled-upstream"])
def test_no_100_continue_when_the_body_came_with_the_head(gw, up, warm_pool):
    """RFC 9110 section 10.1.1: a server MAY omit sending a 100 (Continue)
    response if it has already received some or all of the content. When
    the whole Content-Length body arrives with the head, the only response
    is the final one (on a new upstream connection and on a pooled one)."""
    if warm_pool:
        r, _ = accepted(gw, up, b"GET /warm HTTP/1.1\r\nHost: a\r\n\r\n")
        assert r.responses[0].status == 200, r.data[:200]
    with rawhttp.connect(gw.port) as c:
        c.send(_expect_request(b"hello"))
        resp = c.read_response(timeout=5, include_interim=True)
    assert resp.status == 200, resp.raw_head
    assert resp.interim == [], "a 100 Continue for a body already received: %r" % resp.raw_head
    assert up.wait_for_requests(2 if warm_pool else 1)[-1].body == b"hello"


def test_100_continue_while_the_body_is_still_missing(gw, up):
    """RFC 9110 section 10.1.1: with part of the body still to come, the
    client is told to go on (100), then gets the final response."""
    with rawhttp.connect(gw.port) as c:
        c.send(_expect_request(b"hel", length=5))
        first = c.read_response(timeout=5, include_interim=True)
        assert first.status == 100, first.raw_head
        c.send(b"lo")
        resp = c.read_response(timeout=5)
    assert resp.status == 200 and resp.interim == [], resp.raw_head
    assert up.wait_for_requests(1)[0].body == b"hello"


@pytest.mark.parametrize("data", [
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n",
], ids=["connect", "trace"])
def test_405_names_the_allowed_methods(gw, up, data):
    """RFC 9110 section 15.5.6: the server MUST generate an Allow header
    field in a 405 (Method Not Allowed) response, listing the methods the
    target supports. CONNECT (section 9.3.6) and TRACE (section 9.3.8) are
    refused by the gateway; its Allow names what it passes on, and neither
    of them."""
    resp = assert_refused(gw, up, data, 405)
    allow = [m.strip() for m in (resp.headers.get("allow") or "").split(",") if m.strip()]
    assert "GET" in allow and "POST" in allow, resp.raw_head
    assert "CONNECT" not in allow and "TRACE" not in allow, resp.raw_head
