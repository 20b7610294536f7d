"""PROXY-RULES.md, end to end: "The parser", "Limits", "Headers" and the
parse-level parts of "Semantics", one test (or one table row) per rule.

Method: raw bytes over a loopback socket to the real wakegate binary, with a
recording upstream behind it that keeps the exact bytes it received.
- A refused request: the status, Connection: close, a clean FIN after the
  response (recv returns b'', not a reset), and NOTHING at the upstream.
- An accepted request: the exact forwarded head (canonical rebuild).
Every timeout is configured short so the whole file stays bounded in time.
"""

import time

import pytest

from harness import http1, rawhttp
from harness.upstream import count_body, echo_body, informational, large_body
from harness.util import wait_for

from rules_util import (
    PEER,
    accepted,
    assert_clean_close_after,
    assert_no_upstream_traffic,
    assert_refused,
    bad_once,
    by_path,
    canonical_head,
    default_handler,
    drain_until_close,
    expect_aware,
    head_of,
    head_then_hold,
    per_connection,
    proxy_config,
    response_bytes,
    send,
    small_rcvbuf_socket,
    wait_readable,
)

H = b"GET / HTTP/1.1\r\nHost: a\r\n"  # a valid request line + Host, to extend


@pytest.fixture
def up(recording_upstream):
    return recording_upstream


@pytest.fixture
def gw(start_wakegate, up):
    """wakegate with the default limits, one catch-all route to `up`."""
    return start_wakegate(proxy_config(up))


def _ids(table):
    return [row[0] for row in table]


# ======================================================================
# The parser: what llhttp (strict) accepts and the proxy must refuse itself
# ======================================================================

PARSER_TABLE = [
    # obs-fold
    ("obs-fold-content-length-after-host", H + b" Content-Length: 3\r\n\r\nabc", (400,)),
    ("obs-fold-value-continuation-sp", H + b"X-A: b\r\n c\r\n\r\n", (400,)),
    ("obs-fold-value-continuation-htab", H + b"X-A: b\r\n\tc\r\n\r\n", (400,)),
    ("obs-fold-first-field", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", (400,)),
    # empty header name
    ("empty-header-name", H + b": b\r\n\r\n", (400,)),
    ("empty-header-name-no-value", H + b":\r\n\r\n", (400,)),
    # bare LF line ends
    ("crlf-lf-end-of-head", H + b"\n", (400,)),
    ("bare-lf-request-line", b"GET / HTTP/1.1\nHost: a\r\n\r\n", (400,)),
    ("bare-lf-header-line", H + b"X-A: b\nX-B: c\r\n\r\n", (400,)),
    ("bare-lf-everywhere", b"GET / HTTP/1.1\nHost: a\n\n", (400,)),
    ("lf-crlf-end-of-head", H + b"X-A: b\n\r\n", (400,)),
    # Transfer-Encoding other than exactly "chunked"
    ("te-identity-chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", (400,)),
    ("te-chunked-identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", (400,)),
    ("te-identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", (400, 501)),
    ("te-gzip-chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", (400, 501)),
    ("te-gzip", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", (400, 501)),
    ("te-chunked-chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", (400,)),
    ("te-two-fields", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", (400,)),
    ("te-empty", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", (400,)),
    ("te-xchunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", (400, 501)),
    ("te-chunked-comma", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n0\r\n\r\n", (400,)),
    # Transfer-Encoding on HTTP/1.0
    ("te-on-http10", b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", (400,)),
    # HTTP/2.0 and HTTP/0.9 request lines
    ("version-2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", (505, 400)),
    ("version-0.9", b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", (505, 400)),
    ("version-0.9-simple-request", b"GET /\r\n\r\n", (505, 400)),
    # absolute-form (we are not a forward proxy) and other non-origin forms
    ("absolute-form-http", b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", (400,)),
    ("absolute-form-https", b"GET https://a/x HTTP/1.1\r\nHost: a\r\n\r\n", (400,)),
    ("authority-form-get", b"GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n", (400,)),
    ("asterisk-form-get", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", (400,)),
    # CONNECT and TRACE
    ("connect", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", (405,)),
    ("trace", b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n", (405,)),
]


@pytest.mark.parametrize("name,data,statuses", PARSER_TABLE, ids=_ids(PARSER_TABLE))
def test_parser_refuses(gw, up, name, data, statuses):
    assert_refused(gw, up, data, statuses)


# llhttp strict mode rejects these (the head ones); kept so nobody loosens it.
STRICT_HEAD_TABLE = [
    ("cl-and-te", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("te-and-cl", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
    ("duplicate-cl-same", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
    ("duplicate-cl-different", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    ("cl-list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc"),
    ("cl-negative", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
    ("cl-plus-sign", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc"),
    ("cl-hex", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc"),
    ("cl-alpha", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n"),
    ("cl-inner-space", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n" + b"x" * 12),
    ("cl-empty", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n"),
    ("cl-overflow", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
    ("bare-cr-in-value", H + b"X-A: b\rc\r\n\r\n"),
    ("bare-cr-in-request-line", b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("bare-cr-end-of-head", H + b"\rX\r\n\r\n"),
    ("bare-cr-after-head-crlf", H + b"\r\r\n"),
    ("ctl-in-target-soh", b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("ctl-in-target-nul", b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("ctl-in-target-esc", b"GET /a\x1bb HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("ctl-in-target-del", b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("ctl-in-target-htab", b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("ctl-in-target-ff", b"GET /a\x0cb HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("space-before-colon-host", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
    ("space-before-colon-field", H + b"X-A : b\r\n\r\n"),
    ("space-before-colon-cl", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\nabc"),
    ("htab-before-colon", H + b"X-A\t: b\r\n\r\n"),
    ("space-inside-header-name", H + b"X A: b\r\n\r\n"),
]


@pytest.mark.parametrize("name,data", STRICT_HEAD_TABLE, ids=_ids(STRICT_HEAD_TABLE))
def test_llhttp_strict_refuses(gw, up, name, data):
    assert_refused(gw, up, data, (400,))


# Body-level strict rows: the head is valid, so it may already be upstream
# when the body turns out bad. The client gets 400 and a clean close; the
# upstream never sees a complete request and its connection is closed, not
# pooled for the next client.
STRICT_BODY_TABLE = [
    ("chunk-size-not-hex", b"zz\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-negative", b"-5\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-overflow", b"fffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-empty", b"\r\nhello\r\n0\r\n\r\n"),
    ("chunk-data-not-followed-by-crlf", b"5\r\nhelloXX0\r\n\r\n"),
    ("chunk-size-bare-lf", b"5\nhello\r\n0\r\n\r\n"),
    ("chunk-size-bare-cr", b"5\rhello\r\n0\r\n\r\n"),
]


@pytest.mark.parametrize("name,body", STRICT_BODY_TABLE, ids=_ids(STRICT_BODY_TABLE))
def test_llhttp_strict_refuses_bad_chunk(start_wakegate, up, name, body):
    up.set_handler(per_connection(head_then_hold(), default_handler))
    gw = start_wakegate(proxy_config(up))
    data = b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    r = send(gw.port, data)
    assert r.responses and r.responses[0].status == 400, "got %r (close=%s)" % (r.data[:300], r.close)
    assert_clean_close_after(r, 1)
    time.sleep(0.2)  # let the upstream register a connect that was under way
    first = list(up.connections)
    for c in first:
        assert c.closed.wait(3), "upstream connection still open after the bad chunk: %r" % (c.data[:300],)
        assert http1.parse_requests(c.data) == [], "upstream saw a complete request: %r" % (c.data[:300],)
    # The next client gets a fresh upstream connection.
    r2 = send(gw.port, b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert r2.status == 200
    assert len(up.connections) == len(first) + 1


HOST_TABLE = [
    ("missing-on-http11", b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n"),
    ("twice-same", b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
    ("twice-different", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("twice-case", b"GET / HTTP/1.1\r\nHost: a\r\nhOST: a\r\n\r\n"),
    ("space-inside", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
    ("htab-inside", b"GET / HTTP/1.1\r\nHost: a\tb\r\n\r\n"),
    ("ctl-soh", b"GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n"),
    ("ctl-del", b"GET / HTTP/1.1\r\nHost: a\x7fb\r\n\r\n"),
    ("userinfo", b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n"),
    ("userinfo-password-port", b"GET / HTTP/1.1\r\nHost: user:pw@a:80\r\n\r\n"),
    ("twice-on-http10", b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("userinfo-on-http10", b"GET / HTTP/1.0\r\nHost: u@a\r\n\r\n"),
]


@pytest.mark.parametrize("name,data", HOST_TABLE, ids=_ids(HOST_TABLE))
def test_host_rules_refuse(gw, up, name, data):
    assert_refused(gw, up, data, (400,))


# The same refusals on the second request of a kept-alive connection: the
# answer must not depend on what came before on the connection.
SECOND_REQUEST_REFUSALS = [
    ("bare-lf", b"GET /2 HTTP/1.1\nHost: a\r\n\r\n", 400),
    ("obs-fold", b"GET /2 HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", 400),
    ("empty-name", b"GET /2 HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400),
    ("ctl-in-target", b"GET /2\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("missing-host", b"GET /2 HTTP/1.1\r\n\r\n", 400),
    ("trace", b"TRACE /2 HTTP/1.1\r\nHost: a\r\n\r\n", 405),
    ("request-line-too-long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    ("header-line-too-long", b"GET /2 HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
]


@pytest.mark.parametrize("mode", ["sequential", "pipelined"])
@pytest.mark.parametrize("name,second,status", SECOND_REQUEST_REFUSALS, ids=_ids(SECOND_REQUEST_REFUSALS))
def test_refusal_on_kept_alive_connection(gw, up, name, second, status, mode):
    first = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
    with rawhttp.connect(gw.port) as c:
        if mode == "sequential":
            c.send(first)
            assert c.read_response().status == 200
            c.send(second)
        else:
            c.send(first + second)
            assert c.read_response().status == 200
        data, how = c.read_until_close(timeout=5)
    r = rawhttp.RawResult(data, how, None)
    assert r.responses, "no %d for the second request, connection closed silently (%s, %r)" % (status, how, data[:200])
    assert r.status == status
    assert_clean_close_after(r, 1)
    time.sleep(0.1)
    assert [q.target for q in up.requests] == ["/1"]


# ======================================================================
# Headers: the forwarded head is rebuilt, canonical
# ======================================================================

def _forwarded(gw, up, data, n=1):
    r, reqs = accepted(gw, up, data, n=n)
    assert r.responses and r.responses[0].status == 200, "got %r" % (r.data[:300],)
    return r, reqs


def test_forwarded_head_is_canonical(gw, up):
    data = (b"GET /a/b?c=d&e=%20 HTTP/1.1\r\nUser-Agent: t/1\r\nhost: Example.com:8080\r\n"
            b"Accept:  */* \r\nX-Empty:\r\nX-Dup: 1\r\nX-Dup: 2\r\n\r\n")
    _forwarded(gw, up, data)
    assert up.connections[0].data == canonical_head(
        "GET", "/a/b?c=d&e=%20", "Example.com:8080",
        [("User-Agent", "t/1"), ("Accept", "*/*"), ("X-Empty", ""), ("X-Dup", "1"), ("X-Dup", "2")])


def test_http10_request_forwarded_as_http11(gw, up):
    _forwarded(gw, up, b"GET /x HTTP/1.0\r\nHost: a\r\nX-A: 1\r\n\r\n")
    assert up.connections[0].data == canonical_head("GET", "/x", "a", [("X-A", "1")])


def test_http10_without_host_gets_one_host_first(gw, up):
    _forwarded(gw, up, b"GET /x HTTP/1.0\r\nX-A: 1\r\n\r\n")
    head = up.connections[0].data
    lines = head.split(b"\r\n")
    assert lines[0] == b"GET /x HTTP/1.1"
    assert lines[1].startswith(b"Host: ") and len(lines[1]) > len(b"Host: ")
    assert sum(1 for ln in lines if ln.lower().startswith(b"host:")) == 1
    assert lines[2] == b"X-A: 1"


def test_hop_by_hop_request_headers_stripped(gw, up):
    data = (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Foo\r\nConnection: x-bar ,\r\n"
            b"X-Foo: 1\r\nX-Bar: 2\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n"
            b"TE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-Keep: yes\r\n\r\n")
    _forwarded(gw, up, data)
    assert up.connections[0].data == canonical_head("GET", "/", "a", [("X-Keep", "yes")])


def test_client_forwarding_headers_dropped_at_edge(gw, up):
    data = (b"GET / HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6\r\nHost: a\r\nx-forwarded-host: evil\r\n"
            b"X-FORWARDED-PROTO: https\r\nForwarded: for=6.6.6.6;proto=https\r\nX-Real-IP: 6.6.6.6\r\n"
            b"X-Keep: 1\r\n\r\n")
    _forwarded(gw, up, data)
    assert up.connections[0].data == canonical_head("GET", "/", "a", [("X-Keep", "1")])


CONNECTION_NAMES_OURS = [
    ("close-xff", "close, X-Forwarded-For"),
    ("all-forwarding", "X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto"),
    ("host-and-framing", "Host, Content-Length, Transfer-Encoding"),
    ("mixed-case", "x-forwarded-for,X-FORWARDED-HOST , x-Forwarded-Proto, close"),
]


@pytest.mark.parametrize("name,conn", CONNECTION_NAMES_OURS, ids=_ids(CONNECTION_NAMES_OURS))
def test_connection_cannot_remove_headers_we_add(gw, up, name, conn):
    data = ("POST /p HTTP/1.1\r\nHost: a\r\nConnection: %s\r\nX-Forwarded-For: 6.6.6.6\r\n"
            "X-Keep: 1\r\nContent-Length: 3\r\n\r\nabc" % conn).encode()
    _forwarded(gw, up, data)
    assert up.connections[0].data == canonical_head("POST", "/p", "a", [("X-Keep", "1")], framing=("length", 3)) + b"abc"


def test_trusted_proxy_forwarding_headers_kept_and_appended(start_wakegate, up):
    gw = start_wakegate(proxy_config(up, trusted_proxies=["127.0.0.0/8"]))
    data = (b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8, 9.9.9.9\r\n"
            b"X-Forwarded-Host: public.example\r\nX-Forwarded-Proto: https\r\nX-Keep: 1\r\n\r\n")
    _forwarded(gw, up, data)
    assert up.connections[0].data == canonical_head(
        "GET", "/", "a", [("X-Keep", "1")], xff="1.2.3.4, 5.6.7.8, 9.9.9.9, " + PEER,
        xfh="public.example", xfp="https")


def test_untrusted_peer_forwarding_headers_dropped(start_wakegate, up):
    gw = start_wakegate(proxy_config(up, trusted_proxies=["10.0.0.0/8", "::1/128"]))
    data = (b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Host: public.example\r\n"
            b"X-Forwarded-Proto: https\r\nForwarded: for=1.2.3.4\r\nX-Real-IP: 1.2.3.4\r\nX-Keep: 1\r\n\r\n")
    _forwarded(gw, up, data)
    assert up.connections[0].data == canonical_head("GET", "/", "a", [("X-Keep", "1")])


def test_content_length_framing_rewritten(gw, up):
    _forwarded(gw, up, b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\nX-A: 1\r\n\r\nhello")
    assert up.connections[0].data == canonical_head("POST", "/p", "a", [("X-A", "1")], framing=("length", 5)) + b"hello"


def test_chunked_framing_rewritten(gw, up):
    data = (b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
            b"5;ext=1\r\nhello\r\n006\r\n world\r\n0\r\n\r\n")
    _, reqs = _forwarded(gw, up, data)
    raw = up.connections[0].data
    head = head_of(raw)
    assert head == canonical_head("POST", "/p", "a", [("X-A", "1")], framing="chunked")
    assert reqs[0].body == b"hello world"
    body = raw[len(head):]
    # Re-framed by us: plain hex sizes, no extensions, ends with the last chunk.
    for line in body.split(b"\r\n")[::2]:
        assert b";" not in line and b" " not in line, "chunk line %r in %r" % (line, body)
    assert body.endswith(b"0\r\n\r\n"), body


def test_chunked_request_trailers(gw, up):
    """Trailers end a chunked body; the request must still be forwarded whole
    (a trailer section is a head-like field list: same parser paths)."""
    data = (b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n")
    r = send(gw.port, data, until="responses")
    assert gw.alive(), "wakegate died (exit %s) on a chunked request with a trailer" % gw.proc.poll()
    assert r.responses and r.status == 200, "got %r (%s)" % (r.data[:300], r.close)
    req = up.wait_for_requests(1)[0]
    assert req.body == b"hello"
    assert head_of(up.connections[0].data) == canonical_head("POST", "/p", "a", framing="chunked")


def test_chunked_response_trailers(start_wakegate, up):
    up.set_handler(by_path({"/t": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"}))
    gw = start_wakegate(proxy_config(up))
    r = send(gw.port, b"GET /t HTTP/1.1\r\nHost: a\r\n\r\nGET /again HTTP/1.1\r\nHost: a\r\n\r\n", until="responses", n=2)
    time.sleep(0.1)
    assert gw.alive(), "wakegate died (exit %s) on a chunked response with a trailer; client got %r" % (gw.proc.poll(), r.data[:200])
    assert [(x.status, x.body) for x in r.responses] == [(200, b"hello"), (200, b"ok GET /again\n")], r.data[:400]


def test_hop_by_hop_response_headers_stripped(start_wakegate, up):
    resp = (b"HTTP/1.1 200 OK\r\nConnection: X-Up, keep-alive\r\nX-Up: 1\r\nKeep-Alive: timeout=5\r\n"
            b"Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\n"
            b"X-End: 1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    up.set_handler(by_path({"/": resp}))
    gw = start_wakegate(proxy_config(up))
    r = send(gw.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", until="responses")
    resp = r.response
    assert resp.status == 200 and resp.body == b"ok"
    names = [k.lower() for k, _ in resp.headers]
    for hop in ("x-up", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"):
        assert hop not in names, "%s relayed: %r" % (hop, resp.raw_head)
    assert "x-end" in names
    assert names.count("transfer-encoding") + names.count("content-length") == 1, resp.raw_head
    assert [v.lower() for v in resp.headers.get_all("connection")] in ([], ["keep-alive"]), resp.raw_head


# ======================================================================
# Limits
# ======================================================================

def _fields(n, size=10):
    return b"".join(b"X-F%d: %s\r\n" % (i, b"v" * size) for i in range(n))


DEFAULT_LIMIT_REFUSALS = [
    ("request-line-over-8k", b"GET /" + b"a" * 8300 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    ("request-line-over-8k-partial", b"GET /" + b"a" * 9000, 414),
    ("header-line-over-8k", H + b"X-Big: " + b"b" * 8300 + b"\r\n\r\n", 431),
    ("header-line-over-8k-partial", H + b"X-Big: " + b"b" * 9000, 431),
    ("head-over-32k", H + b"".join(b"X-H%d: %s\r\n" % (i, b"h" * 7000) for i in range(5)) + b"\r\n", 431),
    ("fields-over-100", H + _fields(100) + b"\r\n", 431),
]


@pytest.mark.parametrize("name,data,status", DEFAULT_LIMIT_REFUSALS, ids=_ids(DEFAULT_LIMIT_REFUSALS))
def test_default_limits_refuse(gw, up, name, data, status):
    assert_refused(gw, up, data, (status,))


DEFAULT_LIMIT_ACCEPTS = [
    ("request-line-under-8k", "GET /" + "a" * 8000 + " HTTP/1.1", []),
    ("header-line-under-8k", "GET / HTTP/1.1", [("X-Big", "b" * 8000)]),
    ("head-under-32k", "GET / HTTP/1.1", [("X-H%d" % i, "h" * 7000) for i in range(4)]),
    ("fields-exactly-100", "GET / HTTP/1.1", [("X-F%d" % i, "v") for i in range(99)]),  # + Host = 100
]


@pytest.mark.parametrize("name,line,fields", DEFAULT_LIMIT_ACCEPTS, ids=_ids(DEFAULT_LIMIT_ACCEPTS))
def test_default_limits_accept_below(gw, up, name, line, fields):
    data = (line + "\r\nHost: a\r\n" + "".join("%s: %s\r\n" % kv for kv in fields) + "\r\n").encode()
    _forwarded(gw, up, data)
    method, target, _ = line.split(" ")
    assert up.connections[0].data == canonical_head(method, target, "a", fields)


def test_configured_head_limits(start_wakegate, up):
    gw = start_wakegate(proxy_config(up, limits={"request_line_max": "1KiB", "header_line_max": "1KiB",
                                                 "head_max": "4KiB", "header_count_max": 10}))
    assert_refused(gw, up, b"GET /" + b"a" * 1100 + b" HTTP/1.1\r\nHost: a\r\n\r\n", (414,))
    assert_refused(gw, up, H + b"X-Big: " + b"b" * 1100 + b"\r\n\r\n", (431,))
    assert_refused(gw, up, H + b"".join(b"X-H%d: %s\r\n" % (i, b"h" * 900) for i in range(5)) + b"\r\n", (431,))
    assert_refused(gw, up, H + _fields(10) + b"\r\n", (431,))
    # Just below each: accepted.
    _forwarded(gw, up, b"GET /" + b"a" * 900 + b" HTTP/1.1\r\nHost: a\r\n" + _fields(9) + b"\r\n")


def test_head_timeout_is_a_total_deadline_408(start_wakegate, up):
    gw = start_wakegate(proxy_config(up, limits={"head_timeout": "1s"}))
    c = rawhttp.connect(gw.port)
    partial = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"s" * 200
    t0 = time.monotonic()
    got_answer = False
    # One byte every 100 ms: each read is recent, only the total deadline can fire.
    for i in range(len(partial)):
        try:
            c.send(partial[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            break
        if wait_readable(c.sock, 0.1):
            got_answer = True
            break
        if time.monotonic() - t0 > 6:
            break
    elapsed = time.monotonic() - t0
    assert got_answer, "no answer after trickling the head for %.1fs (head_timeout 1s)" % elapsed
    assert 0.8 <= elapsed <= 3.0, "408 after %.2fs, head_timeout is 1s" % elapsed
    data, how = c.read_until_close(timeout=3)
    r = rawhttp.RawResult(data, how, None)
    assert r.status == 408
    assert_clean_close_after(r, 1)
    assert_no_upstream_traffic(up)


def test_head_timeout_partial_head_408(start_wakegate, up):
    gw = start_wakegate(proxy_config(up, limits={"head_timeout": "1s"}))
    t0 = time.monotonic()
    r = send(gw.port, b"GET / HTTP/1.1\r\nHost: a\r\n", timeout=5)
    elapsed = time.monotonic() - t0
    assert r.status == 408
    assert_clean_close_after(r, 1)
    assert elapsed < 3.0
    assert_no_upstream_traffic(up)


def test_head_timeout_on_keepalive_request_408(start_wakegate, up):
    gw = start_wakegate(proxy_config(up, limits={"head_timeout": "1s", "keepalive_idle": "10s"}))
    with rawhttp.connect(gw.port) as c:
        c.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert c.read_response().status == 200
        t0 = time.monotonic()
        c.send(b"GET /2 HTTP/1.1\r\nHost: a\r\n")
        data, how = c.read_until_close(timeout=5)
    elapsed = time.monotonic() - t0
    r = rawhttp.RawResult(data, how, None)
    assert r.status == 408, (data[:200], how)
    assert_clean_close_after(r, 1)
    assert 0.8 <= elapsed <= 3.0
    assert [q.target for q in up.requests] == ["/1"]


def test_silent_connection_closed_by_head_timeout(start_wakegate, up):
    gw = start_wakegate(proxy_config(up, limits={"head_timeout": "1s"}))
    t0 = time.monotonic()
    with rawhttp.connect(gw.port) as c:
        data, how = c.read_until_close(timeout=5)
    elapsed = time.monotonic() - t0
    assert how == "eof", "silent connection not closed cleanly (%s) after %.1fs" % (how, elapsed)
    assert 0.8 <= elapsed <= 3.0
    if data:  # a 408 is allowed; anything else is not
        r = rawhttp.RawResult(data, how, None)
        assert r.status == 408
        assert_clean_close_after(r, 1)
    assert_no_upstream_traffic(up)


def test_body_idle_closes(start_wakegate, up):
    up.set_handler(per_connection(head_then_hold(), default_handler))
    gw = start_wakegate(proxy_config(up, limits={"body_idle": "1s"}))
    t0 = time.monotonic()
    with rawhttp.connect(gw.port) as c:
        c.send(b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        data, how = c.read_until_close(timeout=6)
    elapsed = time.monotonic() - t0
    assert how in ("eof", "reset"), "connection still open %.1fs into a stalled body (body_idle 1s)" % elapsed
    assert 0.8 <= elapsed <= 3.5, "closed after %.2fs, body_idle is 1s" % elapsed
    if data:
        assert rawhttp.RawResult(data, how, None).status == 408, data[:300]
    conns = up.wait_for_connections(1)
    assert conns[0].closed.wait(3), "upstream connection left open after the client was closed for body idle"
    r = send(gw.port, b"GET /n HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert r.status == 200 and len(up.connections) == 2


def test_body_idle_counts_from_last_byte(start_wakegate, up):
    up.set_handler(echo_body())
    gw = start_wakegate(proxy_config(up, limits={"body_idle": "1s"}))
    with rawhttp.connect(gw.port) as c:
        c.send(b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\n")
        c.send_slowly(b"abcdef", chunk=1, delay=0.5)  # 3 s in all, never 1 s silent
        resp = c.read_response(timeout=5)
    assert resp.status == 200 and resp.body == b"abcdef"


def test_send_idle_closes_when_client_reads_nothing(start_wakegate, up):
    up.set_handler(large_body(64 * 1024 * 1024))
    gw = start_wakegate(proxy_config(up, limits={"send_idle": "1s"}))
    s = small_rcvbuf_socket(gw.port)
    try:
        s.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        conns = up.wait_for_connections(1)
        t0 = time.monotonic()
        assert conns[0].closed.wait(8), "upstream still streaming 8 s after the client stopped reading (send_idle 1s)"
        assert time.monotonic() - t0 < 6
        total, how = drain_until_close(s, timeout=20)
    finally:
        s.close()
    assert how in ("eof", "reset"), "client connection not closed (%s)" % how
    assert total < 64 * 1024 * 1024, "the whole body arrived: send_idle never fired"


@pytest.mark.slow
def test_slow_reader_memory_stays_flat(start_wakegate, up):
    n = 128 * 1024 * 1024
    up.set_handler(large_body(n))
    gw = start_wakegate(proxy_config(up, limits={"send_idle": "30s", "buffer_high_water": "256KiB"}))
    base = gw.rss_kib()
    with rawhttp.connect(gw.port, timeout=30) as c:
        c.send(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(2.0)  # read nothing
        grown = gw.rss_kib() - base
        assert grown < 32 * 1024, "wakegate RSS grew by %d KiB with a 128 MiB body and a stalled reader" % grown
        resp = c.read_response(timeout=30, body_keep=0)
    assert resp.status == 200 and resp.body_len == n


def test_keepalive_idle_closes_quietly(start_wakegate, up):
    gw = start_wakegate(proxy_config(up, limits={"keepalive_idle": "1s"}))
    with rawhttp.connect(gw.port) as c:
        c.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert c.read_response().status == 200
        t0 = time.monotonic()
        assert c.close_state(timeout=0.4) == "timeout", "closed before keepalive_idle"
        data, how = c.read_until_close(timeout=5)
        elapsed = time.monotonic() - t0
    assert how == "eof" and data == b"", "expected a quiet FIN, got %r (%s)" % (data[:200], how)
    assert elapsed <= 3.0


def test_requests_per_connection_max_sequential(start_wakegate, up):
    gw = start_wakegate(proxy_config(up, limits={"keepalive_requests_max": 3}))
    with rawhttp.connect(gw.port) as c:
        for i in (1, 2):
            c.send(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
            resp = c.read_response()
            assert resp.status == 200 and "close" not in (resp.headers.get("connection") or "")
        c.send(b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
        resp = c.read_response()
        assert resp.status == 200 and resp.body == b"ok GET /3\n"
        assert "close" in (resp.headers.get("connection") or "").lower(), resp.raw_head
        data, how = c.read_until_close(timeout=3)
    assert how == "eof" and data == b""


def test_requests_per_connection_max_pipelined(start_wakegate, up):
    gw = start_wakegate(proxy_config(up, limits={"keepalive_requests_max": 3}))
    data = b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(1, 6))
    r = send(gw.port, data)
    assert [x.body for x in r.responses] == [b"ok GET /1\n", b"ok GET /2\n", b"ok GET /3\n"]
    assert_clean_close_after(r, 3)
    time.sleep(0.1)
    assert [q.target for q in up.requests] == ["/1", "/2", "/3"]


def test_body_max_content_length_413_before_upstream(start_wakegate, up):
    gw = start_wakegate(proxy_config(up, limits={"body_max": "1KiB"}))
    assert_refused(gw, up, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n" + b"x" * 1025, (413,))
    # Only the head sent: still 413 at once, nothing upstream.
    assert_refused(gw, up, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n", (413,))
    # With Expect: 100-continue the 413 comes instead of any 100.
    resp = assert_refused(gw, up, b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n", (413,))
    assert resp.interim == []
    # At the limit: forwarded.
    _forwarded(gw, up, b"POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 1024\r\n\r\n" + b"y" * 1024)
    assert up.requests[0].body == b"y" * 1024


def test_body_max_chunked_413_and_upstream_not_reused(start_wakegate, up):
    up.set_handler(per_connection(head_then_hold(), default_handler))
    gw = start_wakegate(proxy_config(up, limits={"body_max": "1KiB"}))
    chunk = b"258\r\n" + b"z" * 600 + b"\r\n"
    r = send(gw.port, b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk + chunk + b"0\r\n\r\n")
    assert r.responses and r.responses[0].status == 413, "got %r (%s)" % (r.data[:300], r.close)
    assert_clean_close_after(r, 1)
    time.sleep(0.2)  # let the upstream register a connect that was under way
    first = list(up.connections)
    for c in first:
        assert c.closed.wait(3), "upstream connection left open after the 413"
        assert c.total_bytes < len(head_of(c.data)) + 1024 + 100, "more than body_max reached the upstream"
    r2 = send(gw.port, b"GET /n HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert r2.status == 200
    assert len(up.connections) == len(first) + 1


def test_body_max_chunked_under_limit_accepted(start_wakegate, up):
    up.set_handler(count_body())
    gw = start_wakegate(proxy_config(up, limits={"body_max": "1KiB"}))
    chunk = b"1f4\r\n" + b"z" * 500 + b"\r\n"
    r = send(gw.port, b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk + chunk + b"0\r\n\r\n",
             until="responses")
    assert r.status == 200 and r.response.body == b"received=1000\n"


def test_connections_max_refuses_new_keeps_existing(start_wakegate, up):
    gw = start_wakegate(proxy_config(up, limits={"connections_max": 2}))
    a = rawhttp.connect(gw.port)
    b = rawhttp.connect(gw.port)
    try:
        for c in (a, b):
            c.send(b"GET /ab HTTP/1.1\r\nHost: a\r\n\r\n")
            assert c.read_response().status == 200
        with rawhttp.connect(gw.port) as extra:
            try:
                extra.send(b"GET /extra HTTP/1.1\r\nHost: a\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            data, how = extra.read_until_close(timeout=3)
        assert how in ("eof", "reset"), "third connection kept open over connections_max=2"
        if data:
            assert rawhttp.RawResult(data, how, None).status == 503, data[:300]
        # Existing traffic is unaffected.
        a.send(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n")
        resp = a.read_response()
        assert resp.status == 200 and resp.body == b"ok GET /again\n"
        assert "/extra" not in [q.target for q in up.requests]
        # A slot frees up when one closes.
        b.close()

        def served():
            r = send(gw.port, b"GET /d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", timeout=2)
            return r.responses and r.status == 200
        wait_for(served, 3, "a new connection to be accepted after one closed", interval=0.1)
    finally:
        a.close()
        b.close()


# ======================================================================
# Semantics (parse-level)
# ======================================================================

def test_pipelined_requests_answered_in_order(start_wakegate, up):
    def slow(req):
        time.sleep(0.3)
        return response_bytes(200, b"slow " + req.target.encode() + b"\n")
    up.set_handler(by_path({"/1": slow}))
    gw = start_wakegate(proxy_config(up))
    data = (b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
    r = send(gw.port, data, until="responses", n=3)
    assert [x.body for x in r.responses] == [b"slow /1\n", b"ok POST /2\n", b"ok GET /3\n"]
    assert [(q.method, q.target, q.body) for q in up.requests] == [("GET", "/1", b""), ("POST", "/2", b"abc"), ("GET", "/3", b"")]


@pytest.mark.parametrize("trailing", [b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n", b"\x00\xffgarbage that is no request\r\n\r\n"],
                         ids=["next-request", "garbage"])
def test_bytes_after_connection_close_ignored(gw, up, trailing):
    r = send(gw.port, b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" + trailing)
    assert r.status == 200 and r.response.body == b"ok GET /1\n"
    assert "close" in (r.response.headers.get("connection") or "").lower()
    assert_clean_close_after(r, 1)
    time.sleep(0.1)
    assert [q.target for q in up.requests] == ["/1"]
    assert b"/2" not in up.all_bytes() and b"garbage" not in up.all_bytes()


def test_http10_closes_after_response(gw, up):
    r = send(gw.port, b"GET /x HTTP/1.0\r\nHost: a\r\n\r\n")
    assert r.status == 200 and r.response.body == b"ok GET /x\n"
    assert_clean_close_after(r, 1)


def test_http10_keep_alive_with_known_length(gw, up):
    with rawhttp.connect(gw.port) as c:
        c.send(b"GET /1 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
        resp = c.read_response()
        assert resp.status == 200 and resp.body == b"ok GET /1\n"
        assert (resp.headers.get("connection") or "").lower() == "keep-alive", resp.raw_head
        assert resp.headers.get("content-length") == "10"
        assert c.close_state(timeout=0.3) == "timeout", "closed a 1.0 keep-alive connection"
        c.send(b"GET /2 HTTP/1.0\r\nHost: a\r\n\r\n")
        data, how = c.read_until_close(timeout=3)
    r = rawhttp.RawResult(data, how, None)
    assert r.status == 200 and r.response.body == b"ok GET /2\n"
    assert_clean_close_after(r, 1)


@pytest.mark.parametrize("keep_alive", [False, True], ids=["plain", "keep-alive"])
def test_http10_never_gets_chunked(start_wakegate, up, keep_alive):
    up.set_handler(by_path({"/c": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"}))
    gw = start_wakegate(proxy_config(up))
    r = send(gw.port, b"GET /c HTTP/1.0\r\nHost: a\r\n" + (b"Connection: keep-alive\r\n" if keep_alive else b"") + b"\r\n")
    assert r.close == "eof", r
    head = head_of(r.data)
    assert b"transfer-encoding" not in head.lower(), head
    assert r.data[len(head):] == b"hello world", "body not de-chunked / close-delimited: %r" % r.data


NO_BODY_TABLE = [
    ("head-with-content-length", "HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", 200),
    ("head-with-chunked", "HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 200),
    ("204-with-content-length", "GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", 204),
    ("204-plain", "GET", b"HTTP/1.1 204 No Content\r\n\r\n", 204),
    ("304-with-content-length", "GET", b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 50\r\n\r\n", 304),
]


@pytest.mark.parametrize("name,method,raw,status", NO_BODY_TABLE, ids=_ids(NO_BODY_TABLE))
def test_no_body_responses_and_upstream_stays_usable(start_wakegate, up, name, method, raw, status):
    up.set_handler(by_path({"/nb": raw}))
    gw = start_wakegate(proxy_config(up))
    with rawhttp.connect(gw.port) as c:
        c.send(b"%s /nb HTTP/1.1\r\nHost: a\r\n\r\n" % method.encode())
        resp = c.read_response(method=method, timeout=3)
        assert resp.status == status and resp.body == b""
        assert not c.reader.buf and not wait_readable(c.sock, 0.3), "bytes after a bodiless response"
        c.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
        resp2 = c.read_response(timeout=3)
        assert resp2.status == 200 and resp2.body == b"ok GET /after\n"
    assert len(up.connections) == 1, "upstream connection not reused after a bodiless response"
    assert [q.target for q in up.connections[0].requests] == ["/nb", "/after"]


def test_expect_100_continue_answered_once(start_wakegate, up):
    up.set_handler(expect_aware())
    gw = start_wakegate(proxy_config(up))
    with rawhttp.connect(gw.port) as c:
        c.send(b"POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        interim = c.read_response(timeout=3, include_interim=True)
        assert interim.status == 100, "expected 100 Continue before the body, got %r" % interim.raw_head
        c.send(b"hello")
        resp = c.read_response(timeout=3)
    assert resp.status == 200 and resp.body == b"got=hello"
    assert resp.interim == [], "a second 100 Continue was relayed"


def test_expect_100_continue_never_to_http10(start_wakegate, up):
    up.set_handler(expect_aware())
    gw = start_wakegate(proxy_config(up))
    with rawhttp.connect(gw.port) as c:
        c.send(b"POST /e HTTP/1.0\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        assert not wait_readable(c.sock, 0.5), "answered a 1.0 client before its body: %r" % c.read_some()
        c.send(b"hello")
        data, how = c.read_until_close(timeout=3)
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    r = rawhttp.RawResult(data, how, None)
    assert r.response.body == b"got=hello" and r.response.interim == []
    assert_clean_close_after(r, 1)


def test_expect_100_not_doubled_when_upstream_also_sends_100(start_wakegate, up):
    up.set_handler(informational(interim=((100, ()),)))
    gw = start_wakegate(proxy_config(up))
    with rawhttp.connect(gw.port) as c:
        c.send(b"POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        first = c.read_response(timeout=3, include_interim=True)
        assert first.status == 100
        c.send(b"hello")
        resp = c.read_response(timeout=3)
    assert resp.status == 200 and resp.body == b"final\n"
    assert resp.interim == [], "100 Continue sent twice to the client"


@pytest.mark.parametrize("value", [b"something", b"100-continue, foo", b"101-continue"], ids=["unknown", "list", "101"])
def test_expect_unknown_417(gw, up, value):
    assert_refused(gw, up, b"POST / HTTP/1.1\r\nHost: a\r\nExpect: " + value + b"\r\nContent-Length: 3\r\n\r\nabc", (417,))


def test_1xx_relayed_before_final(start_wakegate, up):
    up.set_handler(informational(interim=((100, ()), (103, (("Link", "</s.css>; rel=preload"),))), delay=0.1))
    gw = start_wakegate(proxy_config(up))
    with rawhttp.connect(gw.port) as c:
        c.send(b"GET /i HTTP/1.1\r\nHost: a\r\n\r\n")
        resp = c.read_response(timeout=3)
        assert resp.status == 200 and resp.body == b"final\n"
        assert [i.status for i in resp.interim] == [100, 103], [i.raw_head for i in resp.interim]
        assert resp.interim[1].headers.get("link") == "</s.css>; rel=preload"
        c.send(b"GET /i2 HTTP/1.1\r\nHost: a\r\n\r\n")
        resp2 = c.read_response(timeout=3)
    assert resp2.status == 200 and [i.status for i in resp2.interim] == [100, 103]


def test_1xx_never_to_http10(start_wakegate, up):
    up.set_handler(informational(interim=((100, ()), (103, (("Link", "</s.css>; rel=preload"),))), delay=0.05))
    gw = start_wakegate(proxy_config(up))
    r = send(gw.port, b"GET /i HTTP/1.0\r\nHost: a\r\n\r\n")
    assert r.data.startswith(b"HTTP/1.1 200 "), r.data[:200]
    assert r.response.interim == [] and r.response.body == b"final\n"
    assert_clean_close_after(r, 1)


BAD_UPSTREAM = [
    # (name, raw response, upstream closes after sending)
    ("cl-and-te", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", False),
    ("two-cl-different", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", False),
    ("two-cl-same", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", False),
    ("cl-malformed", b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello", False),
    ("bad-chunk-size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", False),
    ("bad-chunk-after-bytes-sent", [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", b"zz\r\n"], False),
    ("bad-chunk-size-after-head-sent", [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"zz\r\nhello\r\n0\r\n\r\n"], False),
    ("chunk-data-no-crlf", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", False),
    ("te-not-chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nhello", False),
    ("oversized-head-line", b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 40000 + b"\r\nContent-Length: 2\r\n\r\nok", False),
    ("oversized-head-fields", b"HTTP/1.1 200 OK\r\n" + _fields(150) + b"Content-Length: 2\r\n\r\nok", False),
    ("bare-lf-head", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", False),
    ("obs-fold-head", b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 2\r\n\r\nok", False),
    ("not-http", b"SSH-2.0-OpenSSH_9.2\r\n\r\n", False),
    ("eof-before-head", b"", True),
    ("eof-mid-head", b"HTTP/1.1 200 OK\r\nContent-Le", True),
    ("eof-mid-body-length", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", True),
    ("eof-mid-chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", True),
]


@pytest.mark.parametrize("name,raw,eof", BAD_UPSTREAM, ids=_ids(BAD_UPSTREAM))
def test_bad_upstream_framing_502_and_not_reused(start_wakegate, up, name, raw, eof):
    up.set_handler(per_connection(bad_once(raw, then_wait=not eof), default_handler))
    gw = start_wakegate(proxy_config(up))
    r = send(gw.port, b"GET /bad HTTP/1.1\r\nHost: a\r\n\r\n", timeout=5)
    assert r.close in ("eof", "reset"), "client connection left open after bad upstream framing: %r" % (r.data[:300],)
    if r.responses and r.responses[0].status == 502:
        assert_clean_close_after(r, 1)
    else:
        # Only allowed once bytes of the response were already sent: then a
        # close, with no complete response.
        assert r.data, "closed without a 502 although nothing had been sent to the client"
        assert not r.responses, "relayed a complete response from a bad upstream: %r" % (r.data[:300],)
    first = up.wait_for_connections(1)[0]
    assert first.closed.wait(3), "the bad upstream connection is still open"
    r2 = send(gw.port, b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert r2.status == 200 and r2.response.body == b"ok GET /next\n"
    assert len(up.connections) == 2, "the bad upstream connection was reused"
    assert [q.target for q in up.connections[0].requests] == ["/bad"]


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_client_abort_mid_upload_closes_upstream(start_wakegate, up, how, framing):
    up.set_handler(per_connection(head_then_hold(), default_handler))
    gw = start_wakegate(proxy_config(up))
    c = rawhttp.connect(gw.port)
    if framing == "length":
        c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + b"u" * 1000)
    else:
        c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n" + b"u" * 1000 + b"\r\n")
    first = up.wait_for_connections(1)[0]
    wait_for(lambda: first.total_bytes >= 1000, 3, "the upload to reach the upstream")
    if how == "fin":
        c.close()
    else:
        c.reset()
    assert first.closed.wait(3), "upstream connection left open after the client aborted its upload"
    r2 = send(gw.port, b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert r2.status == 200
    assert len(up.connections) == 2, "upstream connection of an aborted upload was reused"


def test_bytes_after_upstream_response_not_relayed_and_not_reused(start_wakegate, up):
    """A response followed by stray bytes is complete and relayed as such;
    the stray bytes are never relayed and that connection is not pooled."""
    up.set_handler(per_connection(bad_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"),
                                  default_handler))
    gw = start_wakegate(proxy_config(up))
    with rawhttp.connect(gw.port) as c:
        c.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        resp = c.read_response(timeout=3)
        assert resp.status == 200 and resp.body == b"ok"
        c.send(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        resp2 = c.read_response(timeout=3)
    assert resp2.status == 200 and resp2.body == b"ok GET /2\n", "stray upstream bytes relayed as the next response"
    assert up.connections[0].closed.wait(3)
    assert len(up.connections) == 2
    assert [q.target for q in up.connections[0].requests] == ["/1"]
