"""Request-target bytes and singleton fields, end to end, from RFC 9110/9112.

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

Every refusal: Connection: close, a clean FIN, no byte at the upstream.
"""

import pytest

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
