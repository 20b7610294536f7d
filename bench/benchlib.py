#!/usr/bin/python3
"""bench/benchlib.py - helpers for bench/run.sh (stdlib only).

Subcommands:
  freeports N                     print N free 127.0.0.1 TCP ports
  get URL SIZE                    one GET; exit 0 iff 200 with a SIZE-byte body
  wait URL TIMEOUT                poll URL until it answers 200 (or fail)
  check-wrk FILE SIZE             exit 1 (and print why) if a wrk run had
                                  socket errors, non-2xx/3xx or short bodies
  idle LABEL PORT PATH COUNT PID [RSS_KIB_AFTER_MATRIX]
                                  idle keep-alive connection memory test
                                  against 127.0.0.1:PORT; prints one JSON object
  slow LABEL PORT PATH COUNT PID
                                  slow-reader memory test: COUNT clients send
                                  GET PATH to 127.0.0.1:PORT and read nothing;
                                  VmRSS of PID before and at its peak, one JSON
  rusage CPUFILE CMD...           run CMD, write its user+system CPU seconds
                                  to CPUFILE, exit with its status
  busy SECONDS                    CPU used by the whole machine over SECONDS
                                  (percent of one CPU) and its top processes
  report MANIFEST OUTJSON META    print the result table, write OUTJSON

Nothing here talks to anything but 127.0.0.1.
"""
import asyncio
import json
import os
import re
import socket
import statistics
import sys
import time
import urllib.parse
import urllib.request

UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
UNIT_B = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}


def _only_loopback(host):
    if host not in ("127.0.0.1", "localhost"):
        sys.exit("benchlib: refusing non-loopback host %r" % host)


# ---------------------------------------------------------------- ports, GET

def cmd_freeports(n):
    socks, ports = [], []
    for _ in range(int(n)):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    print(" ".join(map(str, ports)))


def _get(url, timeout=2.0):
    _only_loopback(urllib.parse.urlsplit(url).hostname)
    req = urllib.request.Request(url, headers={"Connection": "close"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def cmd_get(url, size):
    try:
        status, body = _get(url)
    except Exception as e:  # noqa: BLE001 - report anything
        print("GET %s failed: %s" % (url, e), file=sys.stderr)
        return 1
    if status != 200 or len(body) != int(size):
        print("GET %s: status %d, %d body bytes (want 200, %s)" % (url, status, len(body), size),
              file=sys.stderr)
        return 1
    return 0


def cmd_wait(url, timeout):
    deadline = time.monotonic() + float(timeout)
    last = None
    while time.monotonic() < deadline:
        try:
            status, _ = _get(url, timeout=0.5)
            if status == 200:
                return 0
            last = "status %d" % status
        except Exception as e:  # noqa: BLE001
            last = str(e)
        time.sleep(0.05)
    print("timed out waiting for %s (%s)" % (url, last), file=sys.stderr)
    return 1


# ---------------------------------------------------------------- wrk output

def _dur(tok):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", tok)
    if not m:
        raise ValueError("bad duration %r" % tok)
    return float(m.group(1)) * UNIT_S[m.group(2)]


def parse_wrk(text):
    """Returns a dict of the numbers in `wrk --latency` output."""
    r = {"socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0}, "non2xx3xx": 0}
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+), ([0-9.]+)(B|KB|MB|GB|TB) read", text, re.M)
    if not m:
        raise ValueError("no 'requests in' line in wrk output")
    r["requests"] = int(m.group(1))
    r["duration_s"] = _dur(m.group(2))
    r["bytes_read"] = float(m.group(3)) * UNIT_B[m.group(4)]
    m = re.search(r"^Requests/sec:\s*([0-9.]+)", text, re.M)
    r["rps"] = float(m.group(1))
    for pct in ("50", "75", "90", "99"):
        m = re.search(r"^\s*%s(?:\.0+)?%%\s+([0-9.]+\w+)" % pct, text, re.M)
        if not m:
            raise ValueError("no %s%% latency line (was --latency given?)" % pct)
        r["p%s_ms" % pct] = _dur(m.group(1)) * 1e3
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        r["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                      map(int, m.groups())))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        r["non2xx3xx"] = int(m.group(1))
    return r


def wrk_problems(r, size):
    """Reasons a run is not clean; [] if it is."""
    out = []
    errs = sum(r["socket_errors"].values())
    if errs:
        out.append("socket errors: " + ", ".join("%s %d" % kv for kv in r["socket_errors"].items()))
    if r["non2xx3xx"]:
        out.append("%d non-2xx/3xx responses" % r["non2xx3xx"])
    if r["requests"] == 0:
        out.append("no requests completed")
    elif r["bytes_read"] / r["requests"] < 0.98 * size:
        # wrk prints "read" to 2 decimals of its unit, hence the slack.
        out.append("only %.0f bytes read per response, body is %d" %
                   (r["bytes_read"] / r["requests"], size))
    return out


def cmd_check_wrk(path, size):
    text = open(path).read()
    try:
        r = parse_wrk(text)
    except (ValueError, AttributeError) as e:
        print("cannot parse wrk output %s: %s" % (path, e), file=sys.stderr)
        return 1
    probs = wrk_problems(r, int(size))
    if probs:
        print("; ".join(probs))
        return 1
    return 0


# ---------------------------------------------------------------- rusage

def cmd_rusage(cpufile, *cmd):
    import subprocess
    p = subprocess.Popen(list(cmd))
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    with open(cpufile, "w") as f:
        f.write("%.3f\n" % (ru.ru_utime + ru.ru_stime))
    rc = p.returncode
    return rc if rc >= 0 else 128 - rc


# ---------------------------------------------------------------- background load

def _proc_ticks():
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        comm = st[st.index("(") + 1:st.rindex(")")]
        fields = st[st.rindex(")") + 2:].split()
        out[int(d)] = (comm, int(fields[11]) + int(fields[12]))
    return out


def _sys_busy_ticks():
    with open("/proc/stat") as f:
        v = list(map(int, f.readline().split()[1:]))
    idle = v[3] + v[4]  # idle + iowait
    return sum(v[:8]) - idle


def cmd_busy(seconds):
    """While our servers are idle, anything busy is someone else's load."""
    hz = os.sysconf("SC_CLK_TCK")
    p0, b0, t0 = _proc_ticks(), _sys_busy_ticks(), time.monotonic()
    time.sleep(float(seconds))
    p1, b1, t1 = _proc_ticks(), _sys_busy_ticks(), time.monotonic()
    wall = t1 - t0
    top = []
    for pid, (comm, ticks) in p1.items():
        if pid in p0 and pid != os.getpid():
            d = ticks - p0[pid][1]
            if d > 0:
                top.append((d / hz / wall * 100, pid, comm))
    top.sort(reverse=True)
    print(json.dumps({"busy_pct": round((b1 - b0) / hz / wall * 100, 1),
                      "top": ["%s[%d] %.0f%%" % (c, pid, pct) for pct, pid, c in top[:3]
                              if pct >= 5]}))
    return 0


# ---------------------------------------------------------------- idle memory

def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


async def _idle(host, port, path, count, pids, deadline_s):
    _only_loopback(host)
    req = ("GET %s HTTP/1.1\r\nHost: bench\r\nUser-Agent: wakegate-bench-idle\r\n\r\n"
           % path).encode()
    sem = asyncio.Semaphore(256)  # connects in flight at once
    conns, failures = [], []

    async def one(i):
        async with sem:
            try:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if m is None:
                    raise RuntimeError("no Content-Length")
                await reader.readexactly(int(m.group(1)))
                if status != 200:
                    raise RuntimeError("status %d" % status)
                conns.append((reader, writer))
            except Exception as e:  # noqa: BLE001
                failures.append("%s: %s" % (type(e).__name__, e))

    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(one(i)) for i in range(count)]
    done, pending = await asyncio.wait(tasks, timeout=deadline_s)
    for t in pending:
        t.cancel()
    if pending:
        failures.append("%d connections not done within %ss" % (len(pending), deadline_s))
    open_s = time.monotonic() - t0
    await asyncio.sleep(2.0)  # let the server settle (pool sweeps, frees)
    still_open = sum(1 for rd, _ in conns if not rd.at_eof())
    rss_loaded = {str(p): rss_kib(p) for p in pids}
    for _, w in conns:
        w.close()
    await asyncio.sleep(2.0)
    rss_after = {str(p): rss_kib(p) for p in pids}
    return {
        "requested": count,
        "established": len(conns),
        "still_open_at_measurement": still_open,
        "failures": len(failures),
        "failure_samples": sorted(set(failures))[:5],
        "open_seconds": round(open_s, 2),
        "rss_kib_loaded": rss_loaded,
        "rss_kib_after_close": rss_after,
    }


def cmd_idle(label, port, path, count, pid, rss_after_matrix=None):
    pids = [int(pid)]
    base = {str(p): rss_kib(p) for p in pids}
    res = asyncio.run(_idle("127.0.0.1", int(port), path, int(count), pids, deadline_s=60))
    res["rss_kib_idle0"] = base
    res["label"] = label
    res["measured_pid"] = int(pid)
    res["rss_kib_after_matrix"] = int(rss_after_matrix) if rss_after_matrix else None
    print(json.dumps(res))
    return 0


# ---------------------------------------------------------------- slow readers

def _sample_until_flat(pid, flat_s=2.0, limit_s=30.0):
    """VmRSS of pid every 50 ms until its peak has not grown for flat_s
    (every slow reader's buffers are full); returns (peak, seconds)."""
    t0 = time.monotonic()
    peak, since = rss_kib(pid), t0
    while time.monotonic() - t0 < limit_s:
        v = rss_kib(pid)
        if v > peak:
            peak, since = v, time.monotonic()
        elif time.monotonic() - since >= flat_s:
            break
        time.sleep(0.05)
    return peak, round(time.monotonic() - t0, 2)


def cmd_slow(label, port, path, count, pid):
    pid, count = int(pid), int(count)
    req = ("GET %s HTTP/1.1\r\nHost: bench\r\nUser-Agent: wakegate-bench-slow\r\n\r\n" % path).encode()
    base = rss_kib(pid)
    socks, failures = [], []
    try:
        for _ in range(count):
            try:
                s = socket.create_connection(("127.0.0.1", int(port)), timeout=5)
                s.sendall(req)
                socks.append(s)
            except OSError as e:
                failures.append("%s: %s" % (type(e).__name__, e))
        peak, secs = _sample_until_flat(pid)
        # Still open and still a response in progress: nothing was closed on us.
        alive = 0
        for s in socks:
            s.setblocking(False)
            try:
                alive += len(s.recv(1, socket.MSG_PEEK)) == 1
            except BlockingIOError:
                pass
            except OSError:
                pass
    finally:
        for s in socks:
            s.close()
    print(json.dumps({
        "label": label, "measured_pid": pid, "readers": count, "established": len(socks),
        "with_response_bytes": alive, "failures": len(failures),
        "failure_samples": sorted(set(failures))[:5], "settle_seconds": secs,
        "rss_kib_base": base, "rss_kib_peak": peak,
        "kib_per_reader": round((peak - base) / max(count, 1), 1),
    }))
    return 0


# ---------------------------------------------------------------- report

TARGETS = ("direct", "nginx", "wakegate")


def _fmt_ms(v):
    return "%.2fms" % v if v < 100 else "%.0fms" % v


def _fmt_kib(k):
    return "%.1f MiB" % (k / 1024.0)


def cmd_report(manifest, outjson, metajson):
    meta = json.load(open(metajson))
    rows = [l.rstrip("\n").split("\t") for l in open(manifest) if l.strip()]
    # size_label body_bytes conns round target file proxy_cpu_pct upstream_cpu_pct wrk_cpu_pct
    cells, errors = {}, []
    for label, body, conns, rnd, target, path, pcpu, ucpu, wcpu in rows:
        r = parse_wrk(open(path).read())
        r["round"] = int(rnd)
        r["proxy_cpu_pct"] = float(pcpu) if pcpu != "-" else None
        r["upstream_cpu_pct"] = float(ucpu) if ucpu != "-" else None
        r["wrk_cpu_pct"] = float(wcpu) if wcpu != "-" else None
        probs = wrk_problems(r, int(body))
        if probs:
            errors.append({"size": label, "connections": int(conns), "round": int(rnd),
                           "target": target, "problems": probs, "wrk_output": path})
        key = (int(body), int(conns))
        cell = cells.setdefault(key, {"size": label, "body_bytes": int(body),
                                      "connections": int(conns),
                                      "targets": {t: {"rounds": []} for t in TARGETS}})
        cell["targets"][target]["rounds"].append(r)

    busy = {}
    if meta.get("busy_file") and os.path.exists(meta["busy_file"]):
        for line in open(meta["busy_file"]):
            if line.strip():
                b, c, j = line.rstrip("\n").split("\t", 2)
                busy[(int(b), int(c))] = json.loads(j)
    meta.pop("busy_file", None)
    noisy = []

    out_cells = []
    for key in sorted(cells):
        cell = cells[key]
        cell["background_load_before"] = busy.get(key)
        if busy.get(key) and busy[key]["busy_pct"] > 20:
            noisy.append((cell["size"], cell["connections"], busy[key]))
        for t in TARGETS:
            rr = cell["targets"][t]["rounds"]
            if not rr:
                continue
            agg = cell["targets"][t]
            agg["rps"] = statistics.median(x["rps"] for x in rr)
            agg["p50_ms"] = statistics.median(x["p50_ms"] for x in rr)
            agg["p99_ms"] = statistics.median(x["p99_ms"] for x in rr)
            for k in ("proxy_cpu_pct", "upstream_cpu_pct", "wrk_cpu_pct"):
                v = [x[k] for x in rr if x[k] is not None]
                agg[k] = statistics.median(v) if v else None
        T = cell["targets"]
        if all("rps" in T[t] for t in TARGETS):
            cell["ratios"] = {
                "rps_wakegate_over_nginx": T["wakegate"]["rps"] / T["nginx"]["rps"],
                "rps_wakegate_over_direct": T["wakegate"]["rps"] / T["direct"]["rps"],
                "rps_nginx_over_direct": T["nginx"]["rps"] / T["direct"]["rps"],
                "p99_wakegate_over_nginx": T["wakegate"]["p99_ms"] / T["nginx"]["p99_ms"],
            }
        out_cells.append(cell)

    idle = {}
    for name, path in (meta.pop("idle_files", None) or {}).items():
        if os.path.exists(path) and os.path.getsize(path) > 0:
            idle[name] = json.load(open(path))

    # ---- table
    p = print
    p()
    p("wakegate benchmark  (%s)" % meta.get("date", ""))
    p("  wakegate %s (%s)   nginx %s   wrk %s" % (meta.get("git_commit", "?")[:12],
                                                 meta.get("git_state", "?"),
                                                 meta.get("nginx_version", "?"),
                                                 meta.get("wrk_version", "?")))
    p("  %s round(s) x %ss per target per cell, wrk -t1 --latency, order rotated per round;"
      " medians over rounds" % (meta.get("rounds"), meta.get("duration_s")))
    p("  pinning: %s" % meta.get("pinning"))
    p()
    hdr = "%-6s %5s  %-9s %11s %10s %10s %9s %9s %9s" % (
        "size", "conns", "target", "req/s", "p50", "p99", "proxyCPU", "upstrCPU", "wrkCPU")
    p(hdr)
    p("-" * len(hdr))
    for cell in out_cells:
        first = True
        for t in TARGETS:
            a = cell["targets"][t]
            if "rps" not in a:
                continue
            pc, uc, wc = ("%.0f%%" % a[k] if a[k] is not None else "-"
                          for k in ("proxy_cpu_pct", "upstream_cpu_pct", "wrk_cpu_pct"))
            p("%-6s %5s  %-9s %11.0f %10s %10s %9s %9s %9s" % (
                cell["size"] if first else "", cell["connections"] if first else "", t,
                a["rps"], _fmt_ms(a["p50_ms"]), _fmt_ms(a["p99_ms"]), pc, uc, wc))
            first = False
        bl = cell.get("background_load_before")
        if bl and bl["busy_pct"] > 20:
            p("%13s  !! background load before this cell: %.0f%% of a CPU %s" % (
                "", bl["busy_pct"], ", ".join(bl["top"])))
        if "ratios" in cell:
            rt = cell["ratios"]
            p("%13s  req/s wakegate/nginx %.2f   wakegate/direct %.2f (nginx/direct %.2f)"
              "   p99 wakegate/nginx %.2f"
              % ("", rt["rps_wakegate_over_nginx"], rt["rps_wakegate_over_direct"],
                 rt["rps_nginx_over_direct"], rt["p99_wakegate_over_nginx"]))
        p()

    if idle:
        p("idle keep-alive connections: RSS (VmRSS)")
        p("%-22s %12s %14s %12s %10s  %s" % ("process", "0 conns", "N idle conns", "per conn",
                                            "after close", "established/still open"))
        for name in ("nginx", "wakegate"):
            d = idle.get(name)
            if not d:
                continue
            pid = str(d["measured_pid"])
            z, l, a = d["rss_kib_idle0"][pid], d["rss_kib_loaded"][pid], d["rss_kib_after_close"][pid]
            n = d["still_open_at_measurement"] or 1
            p("%-22s %12s %14s %12s %10s  %d/%d of %d" % (
                d["label"], _fmt_kib(z), _fmt_kib(l), "%.2f KiB" % ((l - z) / n), _fmt_kib(a),
                d["established"], d["still_open_at_measurement"], d["requested"]))
            if d.get("rss_kib_after_matrix") is not None:
                p("%-22s   (RSS after the throughput matrix, before the restart: %s)"
                  % ("", _fmt_kib(d["rss_kib_after_matrix"])))
            if d["failures"]:
                p("%-22s   %d connection failures, e.g. %s" % ("", d["failures"],
                                                               d["failure_samples"]))
        p()

    result = {"meta": meta, "cells": out_cells, "idle_memory": idle, "errors": errors}
    with open(outjson, "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
        f.write("\n")
    p("wrote %s" % outjson)

    if noisy:
        p()
        p("WARNING: other processes used CPU during this run (%s); treat the numbers as noisy."
          % "; ".join("%s c=%d: %.0f%%" % (a, b, c["busy_pct"]) for a, b, c in noisy))
    bad = list(errors)
    if idle:
        for name in ("nginx", "wakegate"):
            d = idle.get(name)
            if d and (d["failures"] or d["still_open_at_measurement"] != d["requested"]):
                bad.append({"idle": name, "failures": d["failures"],
                            "still_open": d["still_open_at_measurement"]})
    if bad:
        p()
        p("!!! %d problem(s) - the numbers above are NOT clean:" % len(bad))
        for e in bad:
            if "idle" in e:
                p("!!!   idle test %(idle)s: %(failures)d failures, %(still_open)d still open" % e)
            else:
                p("!!!   %s c=%d round %d %s: %s  (%s)" % (e["size"], e["connections"], e["round"],
                                                        e["target"], "; ".join(e["problems"]),
                                                        e["wrk_output"]))
        return 1
    return 0


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    fn = {"freeports": cmd_freeports, "get": cmd_get, "wait": cmd_wait,
          "check-wrk": cmd_check_wrk, "idle": cmd_idle, "slow": cmd_slow, "busy": cmd_busy, "rusage": cmd_rusage, "report": cmd_report}.get(cmd)
    if fn is None:
        sys.exit(__doc__)
    return fn(*args) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
