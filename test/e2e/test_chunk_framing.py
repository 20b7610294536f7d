"""Chunked framing beside llhttp, end to end: the trailer section and chunk
extensions, both directions, through the real binary with a recording
upstream behind it.

llhttp, even in strict mode, takes a bare LF for the line end of a trailer
section: `0\\r\\n\\nGET /SMUGGLED ...` ended the message early and the rest
became a second request at the upstream. The proxy now checks the trailer
section's line ends itself before llhttp reads them (400 for a request,
502 or a close for a response), and caps chunk extensions (1 KiB on one
chunk line, 64 KiB in one message), which llhttp neither caps nor counts.
"""

import time

import pytest

from harness import rawhttp
from rules_util import by_path, proxy_config, send

SMUGGLE = b"GET /SMUGGLED HTTP/1.1\r\nHost: a\r\n\r\n"
POST = b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.fixture
def up(recording_upstream):
    return recording_upstream


@pytest.fixture
def gw(start_wakegate, up):
    return start_wakegate(proxy_config(up))


def send_pieces(port, pieces, gap, n=1):
    """Send pieces on one connection `gap` seconds apart (so they arrive in
    separate reads), then read until n responses or the close."""
    with rawhttp.RawConnection(port, "127.0.0.1", 5.0) as c:
        for i, p in enumerate(pieces):
            if i:
                time.sleep(gap)
            try:
                c.send(p)
            except (BrokenPipeError, ConnectionResetError):
                break
        data, how = c.read_until_close(2.0 if n else 5.0)
        return rawhttp.RawResult(data, how, None)


def assert_refused_mid_body(gw, up, data, status=400):
    """The client gets `status` and a clean close; whatever the upstream saw
    of the body, it never saw a second request."""
    r = send(gw.port, data, timeout=5.0)
    assert r.responses, "no response to %r: %r (%s)" % (data[:120], r.data[:300], r.close)
    assert r.responses[0].status == status, r.data[:300]
    assert len(r.responses) == 1, r.data[:600]
    assert r.close == "eof", r.close
    time.sleep(0.2)
    assert b"SMUGGLED" not in up.all_bytes(), up.all_bytes()[:600]
    assert all(q.target == "/p" for q in up.requests), [q.target for q in up.requests]
    assert gw.alive()


REFUSED = [
    ("last-chunk-then-bare-lf", POST + b"0\r\n\n" + SMUGGLE),
    ("trailer-field-then-bare-lf", POST + b"0\r\nX: y\r\n\n" + SMUGGLE),
    ("extension-then-bare-lf", POST + b"0;e=1\r\n\n" + SMUGGLE),
    ("data-then-trailer-bare-lf", POST + b"5\r\nhello\r\n0\r\n\n" + SMUGGLE),
    ("trailer-field-bare-lf-end", POST + b"0\r\nX: y\n\r\n" + SMUGGLE),
    ("trailer-bare-cr", POST + b"0\r\nX: y\rZ\r\n\r\n"),
    ("chunk-size-bare-lf", POST + b"5\nhello\r\n0\r\n\r\n"),
    ("extension-line-over-1k", POST + b"1;e=" + b"x" * 2000 + b"\r\na\r\n0\r\n\r\n"),
    ("extensions-over-64k", POST + (b"1;e=" + b"x" * 900 + b"\r\na\r\n") * 120 + b"0\r\n\r\n"),
]


@pytest.mark.parametrize("name,data", REFUSED, ids=[r[0] for r in REFUSED])
def test_bad_chunked_framing_is_refused(gw, up, name, data):
    assert_refused_mid_body(gw, up, data)


def test_bare_lf_split_across_reads_is_refused(gw, up):
    """The trailer check keeps its state between reads."""
    pieces = [POST + b"5\r\nhello\r\n0\r", b"\nX: y\r", b"\n\n" + SMUGGLE]
    r = send_pieces(gw.port, pieces, 0.15)
    assert r.responses and r.responses[0].status == 400, r.data[:300]
    time.sleep(0.2)
    assert b"SMUGGLED" not in up.all_bytes()


def test_trailers_and_small_extensions_pass(gw, up):
    data = (POST + b"5;name=v\r\nhello\r\n" + (b"1;e=" + b"x" * 100 + b"\r\na\r\n") * 50 +
            b"0\r\nX-T: 1\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n")
    r = send(gw.port, data, until="responses", n=2, timeout=5.0)
    assert [x.status for x in r.responses] == [200, 200], r.data[:400]
    reqs = up.wait_for_requests(2)
    assert reqs[0].body == b"hello" + b"a" * 50, reqs[0].body[:80]
    assert [q.target for q in reqs] == ["/p", "/two"]


def test_trailer_split_across_reads_passes(gw, up):
    pieces = [POST + b"2\r\nhi\r\n0\r", b"\nX-T: 1\r", b"\n\r", b"\n"]
    r = send_pieces(gw.port, pieces, 0.1)
    assert r.responses and r.responses[0].status == 200, r.data[:300]
    assert up.wait_for_requests(1)[0].body == b"hi"


def test_response_trailer_with_bare_lf_never_reaches_the_client_as_two_messages(start_wakegate, up):
    """An upstream whose chunked answer ends its trailer with a bare LF and
    then sends more bytes: the client gets a 502 (nothing was sent yet, the
    head waits for the first body bytes) or a cut response, never the extra
    bytes as a message of their own, and that upstream connection is not
    used again."""
    bad = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\n"
           b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nforged!")
    up.set_handler(by_path({"/bad": bad}))
    gw = start_wakegate(proxy_config(up))
    r = send(gw.port, b"GET /bad HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
             timeout=5.0)
    assert b"forged!" not in r.data, r.data[:400]
    if r.responses:
        assert [x.status for x in r.responses] == [502], r.data[:400]
    else:
        # Cut: the head and the first chunk went out, then the close, with
        # no last chunk, so the client knows the answer is incomplete.
        assert r.data.startswith(b"HTTP/1.1 200 OK\r\n"), r.data[:300]
        assert not r.data.endswith(b"0\r\n\r\n"), r.data[:300]
    assert r.close == "eof", r.close
    r2 = send(gw.port, b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n", until="responses", timeout=5.0)
    assert r2.responses[0].status == 200 and b"forged!" not in r2.data, r2.data[:300]
