"""The Redis bus and the Docker engine as end-to-end tests see them:
session records (read, and written as the store writes them), the events
stream, and the engine's own event log."""
import json
import time

from harness.util import now_ms


def write_record(r, sid, state, host, v=1, fresh=False, publish=False, **fields):
    """A session record written the way common/store.c leaves one, in one
    transaction: the hash (id, state, state_since and created now, host, v,
    then fields, which may override those) and its member in wg:sessions.
    fresh: the old hash is deleted first; publish: the state message
    {"id","state","v"} goes out on wg:state too."""
    now = str(now_ms())
    rec = {"id": sid, "state": state, "state_since": now, "created": now, "host": host, "v": str(v)}
    rec.update({k: str(x) for k, x in fields.items()})
    key = "wg:session:" + sid
    p = r.pipeline(transaction=True)
    if fresh:
        p.delete(key)
    p.hset(key, mapping=rec)
    p.sadd("wg:sessions", sid)
    if publish:
        p.publish("wg:state", json.dumps({"id": sid, "state": state, "v": v}))
    p.execute()


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
