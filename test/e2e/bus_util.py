"""What end-to-end tests read from the Redis bus and the Docker engine:
session records, the events stream, and the engine's own event log."""
import json
import time


def record(r, sid):
    return r.hgetall("wg:session:" + sid)


def wait_state(r, sid, states, timeout=15.0, poll=0.01, gw=None):
    """Polls the record until its state is in states; returns (record,
    seconds waited). The failure message carries wakegate's log tail."""
    if isinstance(states, str):
        states = (states,)
    t0 = time.monotonic()
    rec = {}
    while time.monotonic() - t0 < timeout:
        rec = record(r, sid)
        if rec.get("state") in states:
            return rec, time.monotonic() - t0
        time.sleep(poll)
    raise AssertionError("session %s never reached %s in %.1fs; record=%r\nwakegate tail:\n%s"
                         % (sid, states, timeout, rec, gw.log_tail(60) if gw else ""))


def events(r, sid, type_=None):
    """wg:events entries of one session (and type), oldest first; detail parsed."""
    out = []
    for eid, f in r.xrange("wg:events"):
        if f.get("id") == sid and (type_ is None or f.get("type") == type_):
            f = dict(f)
            f["_id"] = eid
            if "detail" in f:
                f["detail_json"] = json.loads(f["detail"])
            out.append(f)
    return out


def transitions(r, sid):
    return [(e["from"], e["to"]) for e in events(r, sid, "transition")]


def engine_events(dockerd, since_s, sid=None, actions=None):
    """The engine's own container event log from since_s (wall clock, s) until
    now, for one session's containers when sid is given."""
    filters = {"type": ["container"]}
    if sid:
        filters["label"] = ["wakegate.session=%s" % sid]
    if actions:
        filters["event"] = list(actions)
    resp = dockerd.api("GET", "/events", params={
        "since": "%.9f" % since_s, "until": "%.9f" % (time.time() + 0.001),
        "filters": json.dumps(filters)}, timeout=10)
    assert resp.status == 200, resp
    return [json.loads(line) for line in resp.body.decode().splitlines() if line.strip()]
