"""End-to-end: the memory a client costs when it stops reading a large
response (issue 12, finding 4).

300 clients each ask Debian's nginx, through wakegate with its default
limits, for /1g.bin (1 GiB) and then read nothing. The bytes they do not
take fill, in order: the client's socket receive buffer and wakegate's send
buffer (kernel memory, not in wakegate's RSS), then wakegate's write queue
for that connection, and once that queue is at `limits.buffer_high_water`
wakegate stops reading the upstream, whose own socket buffers fill next and
stall nginx. So the only user-space memory a slow reader pins is its write
queue plus its connection state.

The bound asserted: VmRSS (from /proc/PID/status) while the 300 hang, at
its highest, is at most the baseline + 300 x 64 KiB (18.75 MiB). Why 64 KiB
per reader:

- the write queue: at most `limits.buffer_high_water` (32 KiB by default;
  every read from the upstream is cut to what is left under the mark) plus
  the rebuilt response head (a few hundred bytes here) and chunk framing
  (none here: nginx sends Content-Length);
- the connection: struct wg_conn (584 bytes), struct exchange (1,664 bytes
  plus the rebuilt request head kept for a retry), the borrowed upstream
  connection, two libuv TCP handles and a timer, with allocator headers:
  about 4 KiB;
- so about 37 KiB per reader in a release build (measured 35.8 KiB), and
  more under AddressSanitizer, which adds redzones and 1/8 of shadow memory
  (measured 46-47 KiB). 64 KiB leaves room for allocator rounding without
  letting a larger budget pass: the former default (256 KiB, plus one 64 KiB
  read past it) measured 313 KiB per reader in release, 380 KiB under ASan.

That is the size of nginx's default proxy buffers (proxy_buffer_size 4k
plus proxy_buffers 8 x 4k, 36 KiB; nginx then spills the rest to a temp
file, where wakegate applies backpressure instead). At limits.connections_max
(20,000) the bound gives 1.2 GiB at most, where the old default gave about
6 GiB.

While the 300 hang, a normal client gets full, correct answers; after they
close, their connections are gone and the gateway still answers.
Bounded: about 5 s, 300 client sockets (wakegate holds 600 fds for them).
"""

import resource
import socket
import time

from harness import rawhttp
from harness.upstream import pattern
from harness.util import wait_for
from streams_util import RssSampler, proxy_config, raw_get

N_READERS = 300
PER_READER_KIB = 64
BIG = "/1g.bin"
# Descriptors: the test's 300 sockets, wakegate's 600, nginx's 300, and room.
NOFILE_NEEDED = 4 * N_READERS + 256


def _raise_nofile():
    """wakegate inherits this process's RLIMIT_NOFILE: make sure the soft
    limit covers the test (raised up to the hard limit, never past it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < NOFILE_NEEDED:
        assert hard == resource.RLIM_INFINITY or hard >= NOFILE_NEEDED, (
            "RLIMIT_NOFILE hard limit %d is below the %d this test needs" % (hard, NOFILE_NEEDED))
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE_NEEDED, hard))


def _get_64k(gw):
    """A normal client: a fresh connection, the whole /64k.bin, checked."""
    r = rawhttp.send(gw.port, raw_get("/64k.bin", extra="Connection: close\r\n"), timeout=10)
    assert r.status == 200, r
    assert r.response.body == pattern(0, 64 * 1024), "wrong /64k.bin body (%d bytes)" % len(r.response.body)


def _sent_to_clients(gw):
    return gw.metrics()["wakegate_client_bytes_sent_total"]


def _wait_stalled(gw, timeout=20.0, quiet=1.0):
    """Until the bytes sent to clients have not grown for `quiet` seconds:
    every slow reader's buffers are full and the upstream reads stopped."""
    last = None
    since = time.monotonic()
    end = since + timeout
    while time.monotonic() < end:
        now = _sent_to_clients(gw)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.25)
    raise AssertionError("wakegate still sending to %d clients that read nothing after %.0f s"
                         % (N_READERS, timeout))


def _warm_up(gw):
    """Steady state before the baseline: the exchange cache, the upstream
    pool, and the allocator. Under AddressSanitizer freed memory sits in a
    quarantine (8 MiB with the harness's ASAN_OPTIONS) before it is reused,
    so every /metrics scrape grows RSS until it is full; the scrapes here
    fill it, so that the scrapes of the test do not count as slow readers'
    memory. In a release build they cost nothing lasting."""
    for _ in range(20):
        _get_64k(gw)
    for _ in range(150):
        gw.metrics()
    time.sleep(0.3)


def test_slow_readers_keep_rss_bounded_and_the_gateway_answers(start_wakegate, nginx_upstream):
    _raise_nofile()
    gw = start_wakegate(proxy_config(nginx_upstream.address, log={"level": "info", "access": False}))
    _warm_up(gw)
    base = gw.rss_kib()
    sent0 = _sent_to_clients(gw)
    bound = base + N_READERS * PER_READER_KIB

    readers = []
    with RssSampler(gw.pid, interval=0.05) as rss:
        try:
            for _ in range(N_READERS):
                s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
                s.sendall(("GET %s HTTP/1.1\r\nHost: app.test\r\n\r\n" % BIG).encode())
                readers.append(s)
            _wait_stalled(gw)
            m = gw.metrics()
            assert m["wakegate_connections_open"] == N_READERS, m["wakegate_connections_open"]
            # Each reader really got a response that stalled (its kernel buffers
            # hold at least 64 KiB): the memory is measured on real slow readers.
            stalled_sent = m["wakegate_client_bytes_sent_total"] - sent0
            assert stalled_sent >= N_READERS * 64 * 1024, stalled_sent

            # A normal client while they hang: full, correct answers.
            for _ in range(5):
                _get_64k(gw)
            r = rawhttp.send(gw.port, raw_get("/small.txt", extra="Connection: close\r\n"), timeout=10)
            assert r.status == 200 and r.response.body == b"hello from nginx\n", r
            time.sleep(0.3)
            peak = rss.max_kib
            queued = gw.metrics().get('wakegate_buffered_bytes{to="client"}')
        finally:
            for s in readers:
                s.close()

    print("\nslow readers: %d, wakegate VmRSS base %d KiB, peak %d KiB, +%d KiB = %.1f KiB per reader "
          "(bound %d KiB); queued to clients %s bytes"
          % (N_READERS, base, peak, peak - base, (peak - base) / N_READERS, bound, queued))
    assert peak <= bound, (
        "wakegate VmRSS reached %d KiB with %d clients not reading: +%d KiB over the %d KiB baseline, "
        "%.1f KiB per reader, over the %d KiB per reader allowed"
        % (peak, N_READERS, peak - base, base, (peak - base) / N_READERS, PER_READER_KIB))
    # The budget itself, as the gateway counts it: no connection queues past
    # the mark (32 KiB) plus its response head.
    assert queued is not None, "no wakegate_buffered_bytes{to=\"client\"} in /metrics"
    assert queued <= N_READERS * (32 * 1024 + 1024), queued

    # After the slow clients close: their connections go, and the gateway answers.
    wait_for(lambda: gw.metrics()["wakegate_connections_open"] == 0, 10,
             "the slow readers' connections to close")
    for _ in range(3):
        _get_64k(gw)
    assert gw.alive()
