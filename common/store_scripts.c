/* common/store_scripts.c - the Lua scripts of the store (see store_int.h).
 *
 * Atomicity: every write that must not interleave with another actor's is
 * one Lua script (EVAL), so Redis runs it whole. Redis caches compiled
 * scripts by their SHA, so EVAL costs the script text on the wire only; the
 * texts are small. */
#include "common/store_int.h"

/* The transient states, as wg_session_state_transient() has them: a session
 * in one of them sits in wg:transient, scored by state_since. */
#define TRANSIENT_LUA                                                                              \
    "local TRANSIENT = {creating = true, starting = true, draining = true, saving = true,\n"       \
    "                   stopping = true}\n"

/* Keeps wg:idle_short (KEYS[6]) true for record h: the session's shortest
 * idle override that is on, so the reaper can widen its range for sessions
 * whose tiers are shorter than the configured ones. */
#define IDLE_SHORT_LUA                                                                             \
    "local function idle_short(h, id)\n"                                                           \
    "  local best = nil\n"                                                                         \
    "  for _, f in ipairs({'idle_pause_after_ms', 'idle_stop_after_ms'}) do\n"                     \
    "    local v = tonumber(redis.call('HGET', h, f) or '')\n"                                     \
    "    if v and v > 0 and (best == nil or v < best) then best = v end\n"                         \
    "  end\n"                                                                                      \
    "  if best then redis.call('ZADD', KEYS[6], best, id)\n"                                       \
    "  else redis.call('ZREM', KEYS[6], id) end\n"                                                 \
    "end\n"

/* Keeps wg:hostload and wg:host_sessions:{host} true when session id
 * leaves host `from` for host `to` ("" for none). The set's answer decides
 * the count, so a repeated call never counts twice; a leaving session is
 * also dropped from its old host's wg:lost_todo. */
#define HOME_LUA                                                                                   \
    "local function home(id, from, to)\n"                                                          \
    "  if from == to then return end\n"                                                            \
    "  if from ~= '' then\n"                                                                       \
    "    if redis.call('SREM', '" WG_STORE_KEY_HOST_SESSIONS_PREFIX "' .. from, id) == 1 then\n"   \
    "      redis.call('HINCRBY', '" WG_STORE_KEY_HOSTLOAD "', from, -1)\n"                         \
    "    end\n"                                                                                    \
    "    redis.call('SREM', '" WG_STORE_KEY_LOST_TODO_PREFIX "' .. from, id)\n"                    \
    "  end\n"                                                                                      \
    "  if to ~= '' then\n"                                                                         \
    "    if redis.call('SADD', '" WG_STORE_KEY_HOST_SESSIONS_PREFIX "' .. to, id) == 1 then\n"     \
    "      redis.call('HINCRBY', '" WG_STORE_KEY_HOSTLOAD "', to, 1)\n"                            \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "end\n"

/* The placement choice: returns a host, or nil and why. Live = in
 * wg:hosts, its heartbeat key exists, not in wg:lost_hosts; fits = has
 * every label of need_json ({"k":"v"}) in its heartbeat's labels, and its
 * homed count (wg:hostload, which the scripts keep exact, not the
 * heartbeat's possibly stale figure) is below its max_sessions (0: no
 * limit). Least loaded first: homed/max (homed when no max), then fewer
 * running, then the name, so the choice is deterministic. */
#define PLACE_LUA                                                                                  \
    "local function place(need_json, exclude, fallback)\n"                                         \
    "  local need = {}\n"                                                                          \
    "  if need_json ~= '' then\n"                                                                  \
    "    local ok, t = pcall(cjson.decode, need_json)\n"                                           \
    "    if ok and type(t) == 'table' then need = t end\n"                                         \
    "  end\n"                                                                                      \
    "  local best, bkey = nil, nil\n"                                                              \
    "  local live, labelled = 0, 0\n"                                                              \
    "  for _, hn in ipairs(redis.call('ZRANGE', '" WG_STORE_KEY_HOSTS "', 0, -1)) do\n"            \
    "    local beat = false\n"                                                                     \
    "    if hn ~= exclude and not redis.call('ZSCORE', '" WG_STORE_KEY_LOST_HOSTS "', hn) then\n"  \
    "      beat = redis.call('GET', '" WG_STORE_KEY_HOST_PREFIX "' .. hn)\n"                       \
    "    end\n"                                                                                    \
    "    if beat then\n"                                                                           \
    "      live = live + 1\n"                                                                      \
    "      local ok, info = pcall(cjson.decode, beat)\n"                                           \
    "      if not ok or type(info) ~= 'table' then info = {} end\n"                                \
    "      local have = type(info.labels) == 'table' and info.labels or {}\n"                      \
    "      local fit = true\n"                                                                     \
    "      for k, v in pairs(need) do if have[k] ~= v then fit = false end end\n"                  \
    "      if fit then\n"                                                                          \
    "        labelled = labelled + 1\n"                                                            \
    "        local homed = tonumber(redis.call('HGET', '" WG_STORE_KEY_HOSTLOAD                    \
    "', hn) or '0') or 0\n"                                                                        \
    "        local max = tonumber(info.max_sessions) or 0\n"                                       \
    "        local load = homed\n"                                                                 \
    "        if max > 0 then load = homed / max end\n"                                             \
    "        local key = {info.engine == false and 1 or 0, load, tonumber(info.running) or 0, "    \
    "hn}\n"                                                                                        \
    "        local better = best == nil\n"                                                         \
    "        for i = 1, 4 do\n"                                                                    \
    "          if better or key[i] ~= bkey[i] then\n"                                              \
    "            better = better or key[i] < bkey[i]\n"                                            \
    "            break\n"                                                                          \
    "          end\n"                                                                              \
    "        end\n"                                                                                \
    "        if (max == 0 or homed < max) and better then best, bkey = hn, key end\n"              \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  if best then return best, '' end\n"                                                         \
    "  if live == 0 and fallback ~= '' then return fallback, '' end\n"                             \
    "  if live == 0 then return nil, 'no live host' end\n"                                         \
    "  if labelled == 0 then return nil, 'no live host has the labels ' .. need_json end\n"        \
    "  return nil, 'every live host is full'\n"                                                    \
    "end\n"

/* A move made inside a script of many sessions (the sweep, a re-place), to
 * lost or asleep only (states off wg:active): what the transition script
 * does for one move - v bumped, state_since, wg:transient, wg:counts,
 * wg:active left with its score kept in last_active, the event, the
 * message. */
#define MOVE_LUA                                                                                   \
    "local function move(h, id, cur, to, now, detail, evcap, chan)\n"                              \
    "  local v = (tonumber(redis.call('HGET', h, 'v') or '') or 0) + 1\n"                          \
    "  redis.call('HSET', h, 'v', string.format('%d', v), 'state', to, 'state_since', now)\n"      \
    "  if TRANSIENT[to] then redis.call('ZADD', '" WG_STORE_KEY_TRANSIENT "', now, id)\n"          \
    "  else redis.call('ZREM', '" WG_STORE_KEY_TRANSIENT "', id) end\n"                            \
    "  redis.call('HINCRBY', '" WG_STORE_KEY_COUNTS "', cur, -1)\n"                                \
    "  redis.call('HINCRBY', '" WG_STORE_KEY_COUNTS "', to, 1)\n"                                  \
    "  local sc = tonumber(redis.call('ZSCORE', '" WG_STORE_KEY_ACTIVE "', id) or '')\n"           \
    "  if sc then\n"                                                                               \
    "    local la = tonumber(redis.call('HGET', h, 'last_active') or '') or 0\n"                   \
    "    if sc > la then\n"                                                                        \
    "      redis.call('HSET', h, 'last_active', string.format('%d', math.floor(sc)))\n"            \
    "    end\n"                                                                                    \
    "    redis.call('ZREM', '" WG_STORE_KEY_ACTIVE "', id)\n"                                      \
    "  end\n"                                                                                      \
    "  redis.call('XADD', '" WG_STORE_KEY_EVENTS "', 'MAXLEN', '~', evcap, '*', 'id', id,\n"       \
    "             'type', 'transition', 'from', cur, 'to', to, 'at', now,\n"                       \
    "             'v', string.format('%d', v), 'detail', detail)\n"                                \
    "  local msg = {id = id, state = to, v = v}\n"                                                 \
    "  msg.ip = redis.call('HGET', h, 'ip') or nil\n"                                              \
    "  msg.port = tonumber(redis.call('HGET', h, 'port') or '')\n"                                 \
    "  msg.gen = redis.call('HGET', h, 'gen') or nil\n"                                            \
    "  msg.cid = redis.call('HGET', h, 'container_id') or nil\n"                                   \
    "  redis.call('PUBLISH', chan, cjson.encode(msg))\n"                                           \
    "end\n"

/* Moves (or, with ARGV[3] == "", updates) one record. See
 * wg_store_transition() for the contract; the replies are
 *   {'missing'} | {'rejected', '', HGETALL, ZSCORE} | {'active', '', HGETALL, ZSCORE}
 *   | {'fenced', '', HGETALL, ZSCORE} | {'ok', event id, HGETALL, ZSCORE}.
 * KEYS: record, wg:events, wg:active, wg:sessions, wg:transient, wg:idle_short,
 * wg:counts.
 * ARGV: id, allowed current states ("*" = any value, else names separated by
 * spaces), new state ("" = no move), now (ms), events cap, detail ("" =
 * none), state channel, "1" to add one to restarts, idle cutoff ("" = none:
 * else the move is refused as 'active' when the wg:active score is later),
 * the fence host ("" = none: else the move is refused as 'fenced' when the
 * record's host is another), the fence epoch ("" = none: else refused when
 * the record's epoch differs), then field/value pairs (an empty value
 * removes the field). A change of host (or a destroy) moves the session's
 * wg:hostload count and wg:host_sessions membership.
 * The record read back for the reply is taken before a destroyed record is
 * deleted, with its final state. */
const char store_script_transition[] = TRANSIENT_LUA IDLE_SHORT_LUA HOME_LUA
    "local h, id = KEYS[1], ARGV[1]\n"
    "if redis.call('EXISTS', h) == 0 then return {'missing'} end\n"
    "local oldhost = redis.call('HGET', h, 'host') or ''\n"
    "if ARGV[10] ~= '' then\n"
    "  local ep = redis.call('HGET', h, 'epoch') or ''\n"
    "  if (oldhost ~= '' and oldhost ~= ARGV[10]) or (ARGV[11] ~= '' and ep ~= ARGV[11]) then\n"
    "    return {'fenced', '', redis.call('HGETALL', h), redis.call('ZSCORE', KEYS[3], id)}\n"
    "  end\n"
    "end\n"
    "local cur = redis.call('HGET', h, 'state') or ''\n"
    "local ok = ARGV[2] == '*'\n"
    "if not ok then\n"
    "  for s in string.gmatch(ARGV[2], '%S+') do\n"
    "    if s == cur then ok = true break end\n"
    "  end\n"
    "end\n"
    "if not ok then\n"
    "  return {'rejected', '', redis.call('HGETALL', h), redis.call('ZSCORE', KEYS[3], id)}\n"
    "end\n"
    "if ARGV[9] ~= '' then\n"
    "  local sc = redis.call('ZSCORE', KEYS[3], id)\n"
    "  if sc and tonumber(sc) > tonumber(ARGV[9]) then\n"
    "    return {'active', '', redis.call('HGETALL', h), sc}\n"
    "  end\n"
    "end\n"
    "local to, now = ARGV[3], ARGV[4]\n"
    "local move = to ~= ''\n"
    "if not move then to = cur end\n"
    "local v = (tonumber(redis.call('HGET', h, 'v') or '') or 0) + 1\n"
    "redis.call('HSET', h, 'v', string.format('%d', v))\n"
    "for i = 12, #ARGV, 2 do\n"
    "  if ARGV[i + 1] == '' then redis.call('HDEL', h, ARGV[i])\n"
    "  else redis.call('HSET', h, ARGV[i], ARGV[i + 1]) end\n"
    "end\n"
    "if ARGV[8] == '1' then redis.call('HINCRBY', h, 'restarts', 1) end\n"
    "if move then redis.call('HSET', h, 'state', to, 'state_since', now) end\n"
    "if move then\n"
    "  if TRANSIENT[to] then redis.call('ZADD', KEYS[5], now, id)\n"
    "  else redis.call('ZREM', KEYS[5], id) end\n"
    "  redis.call('HINCRBY', KEYS[7], cur, -1)\n"
    "  if to ~= 'destroyed' then redis.call('HINCRBY', KEYS[7], to, 1) end\n"
    "end\n"
    "if move and to == 'running' and cur ~= 'draining' and cur ~= 'saving' then\n"
    "  redis.call('ZADD', KEYS[3], 'GT', now, id)\n"
    "elseif move and (to == 'asleep' or to == 'failed' or to == 'destroyed' or to == 'lost') then\n"
    "  local sc = tonumber(redis.call('ZSCORE', KEYS[3], id) or '')\n"
    "  local la = tonumber(redis.call('HGET', h, 'last_active') or '') or 0\n"
    "  if sc and sc > la then\n"
    "    redis.call('HSET', h, 'last_active', string.format('%d', math.floor(sc)))\n"
    "  end\n"
    "  redis.call('ZREM', KEYS[3], id)\n"
    "end\n"
    "local rec = redis.call('HGETALL', h)\n"
    "local msg = {id = id, state = to, v = v}\n"
    "if to == 'destroyed' then home(id, oldhost, '')\n"
    "else home(id, oldhost, redis.call('HGET', h, 'host') or '') end\n"
    "if to == 'destroyed' then\n"
    "  redis.call('DEL', h)\n"
    "  redis.call('SREM', KEYS[4], id)\n"
    "  redis.call('ZREM', KEYS[6], id)\n"
    "else\n"
    "  idle_short(h, id)\n"
    "  msg.ip = redis.call('HGET', h, 'ip') or nil\n"
    "  msg.port = tonumber(redis.call('HGET', h, 'port') or '')\n"
    "  msg.gen = redis.call('HGET', h, 'gen') or nil\n"
    "  msg.cid = redis.call('HGET', h, 'container_id') or nil\n"
    "end\n"
    "local eid = ''\n"
    "if move then\n"
    "  local ev = {'id', id, 'type', 'transition', 'from', cur, 'to', to, 'at', now,\n"
    "              'v', string.format('%d', v)}\n"
    "  if ARGV[6] ~= '' then ev[#ev + 1] = 'detail'; ev[#ev + 1] = ARGV[6] end\n"
    "  eid = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(ev))\n"
    "end\n"
    "redis.call('PUBLISH', ARGV[7], cjson.encode(msg))\n"
    "return {'ok', eid, rec, redis.call('ZSCORE', KEYS[3], id)}\n";

/* Get-or-create, with placement. Replies {'exists', '', HGETALL, ZSCORE},
 * {'unplaced', reason} or {'created', event id, HGETALL, nil}.
 * KEYS: record, wg:events, wg:sessions, wg:active, wg:transient, wg:idle_short,
 * wg:counts.
 * ARGV: id, now, events cap, detail, state channel, placement ("" = the
 * host in the fields, unchecked: an adoption; "place" = choose a live host
 * with the labels, or ARGV[7] when no host at all is live and it is not
 * ""; "host" = ARGV[7], which must be live), host, labels
 * JSON, pin ("1"), then field/value pairs (empty values skipped). A record
 * with a host is counted in wg:hostload and wg:host_sessions:{host}, at
 * epoch 1. */
const char store_script_create[] = IDLE_SHORT_LUA PLACE_LUA HOME_LUA
    "local h, id, now = KEYS[1], ARGV[1], ARGV[2]\n"
    "if redis.call('EXISTS', h) == 1 then\n"
    "  return {'exists', '', redis.call('HGETALL', h), redis.call('ZSCORE', KEYS[4], id)}\n"
    "end\n"
    "local host = nil\n"
    "if ARGV[6] == 'place' then\n"
    "  local why\n"
    "  host, why = place(ARGV[8], '', ARGV[7])\n"
    "  if not host then return {'unplaced', why} end\n"
    "elseif ARGV[6] == 'host' then\n"
    "  if redis.call('ZSCORE', '" WG_STORE_KEY_LOST_HOSTS "', ARGV[7]) or\n"
    "     redis.call('EXISTS', '" WG_STORE_KEY_HOST_PREFIX "' .. ARGV[7]) == 0 then\n"
    "    return {'unplaced', 'host ' .. ARGV[7] .. ' is not live'}\n"
    "  end\n"
    "  host = ARGV[7]\n"
    "end\n"
    "redis.call('HSET', h, 'id', id, 'state', 'creating', 'state_since', now,\n"
    "           'created', now, 'v', '1')\n"
    "for i = 10, #ARGV, 2 do\n"
    "  if ARGV[i + 1] ~= '' then redis.call('HSET', h, ARGV[i], ARGV[i + 1]) end\n"
    "end\n"
    "if host then redis.call('HSET', h, 'host', host) end\n"
    "if ARGV[8] ~= '' then redis.call('HSET', h, 'place_labels', ARGV[8]) end\n"
    "if ARGV[9] == '1' then redis.call('HSET', h, 'pin', '1') end\n"
    "local home_host = redis.call('HGET', h, 'host')\n"
    "if home_host then\n"
    "  home(id, '', home_host)\n"
    "  if not redis.call('HGET', h, 'epoch') then redis.call('HSET', h, 'epoch', '1') end\n"
    "end\n"
    "redis.call('SADD', KEYS[3], id)\n"
    "redis.call('ZADD', KEYS[5], now, id)\n"
    "redis.call('HINCRBY', KEYS[7], 'creating', 1)\n"
    "idle_short(h, id)\n"
    "local ev = {'id', id, 'type', 'transition', 'from', '', 'to', 'creating', 'at', now,\n"
    "            'v', '1'}\n"
    "if ARGV[4] ~= '' then ev[#ev + 1] = 'detail'; ev[#ev + 1] = ARGV[4] end\n"
    "local eid = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ev))\n"
    "local msg = {id = id, state = 'creating', v = 1}\n"
    "msg.ip = redis.call('HGET', h, 'ip') or nil\n"
    "msg.port = tonumber(redis.call('HGET', h, 'port') or '')\n"
    "msg.gen = redis.call('HGET', h, 'gen') or nil\n"
    "msg.cid = redis.call('HGET', h, 'container_id') or nil\n"
    "redis.call('PUBLISH', ARGV[5], cjson.encode(msg))\n"
    "return {'created', eid, redis.call('HGETALL', h), false}\n";

/* Compare-and-delete / compare-and-pexpire: only the token's holder may
 * release or extend, so a holder whose lock expired cannot drop the next
 * holder's. */
const char store_script_unlock[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";
const char store_script_extend[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                   "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                                   "end\n"
                                   "return 0\n";

/* The heartbeat: ARGV name, json, ttl (ms), now, events cap. Replies
 * {back, homed}: back is 1 when the host came back from wg:lost_hosts,
 * homed its wg:hostload count. Its wg:lost_todo is
 * dropped: sessions the sweep had not moved yet stay as they are, on a host
 * that answers again. */
const char store_script_beat[] =
    "local name, back = ARGV[1], 0\n"
    "redis.call('SET', '" WG_STORE_KEY_HOST_PREFIX "' .. name, ARGV[2], 'PX', ARGV[3])\n"
    "redis.call('ZADD', '" WG_STORE_KEY_HOSTS "', ARGV[4], name)\n"
    "if redis.call('ZREM', '" WG_STORE_KEY_LOST_HOSTS "', name) == 1 then\n"
    "  redis.call('DEL', '" WG_STORE_KEY_LOST_TODO_PREFIX "' .. name)\n"
    "  redis.call('XADD', '" WG_STORE_KEY_EVENTS "', 'MAXLEN', '~', ARGV[5], '*', 'type',\n"
    "             'host_back', 'host', name, 'at', ARGV[4])\n"
    "  back = 1\n"
    "end\n"
    "return {back, tonumber(redis.call('HGET', '" WG_STORE_KEY_HOSTLOAD "', name) or '0') or 0}\n";

/* The lost-host sweep: ARGV now, batch, events cap, state channel, the
 * sweeper's own host ("" = none: it runs the sweep, so it is alive even
 * if its heartbeat lapsed under load; it is never marked lost), the
 * heartbeat TTL (ms). Replies {hosts, live, lost, newly lost, moved, left,
 * held ms}. Idempotent: a host is marked once (ZADD NX's answer), its ids
 * are queued once, and each queued id is popped once and moved only if it
 * is still homed there and neither lost nor gone.
 *
 * A gap between two sweeps (by Redis's own clock, whoever swept) longer
 * than two thirds of a TTL (two missed periods: heartbeats go every third)
 * means nobody could sweep: Redis stalled, restarted or failed over, and
 * every heartbeat may have lapsed at once, not because the hosts died. Then nothing is judged for a
 * TTL (wg:sweep_hold), so every host beats again first; a sweep that was queued behind the stall
 * and runs the moment Redis answers again is held the same way. */
const char store_script_sweep[] = TRANSIENT_LUA MOVE_LUA
    "local now, batch, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[6])\n"
    "local t = redis.call('TIME')\n"
    "local rnow = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local last = tonumber(redis.call('GET', '" WG_STORE_KEY_SWEEP_AT "') or '')\n"
    "redis.call('SET', '" WG_STORE_KEY_SWEEP_AT "', string.format('%d', rnow))\n"
    "if last and rnow - last > ttl * 2 / 3 then\n"
    "  redis.call('SET', '" WG_STORE_KEY_SWEEP_HOLD "', string.format('%d', rnow + ttl))\n"
    "end\n"
    "local hold = (tonumber(redis.call('GET', '" WG_STORE_KEY_SWEEP_HOLD "') or '') or 0) - rnow\n"
    "if hold > 0 then\n"
    "  return {redis.call('ZCARD', '" WG_STORE_KEY_HOSTS "'), 0,\n"
    "          redis.call('ZCARD', '" WG_STORE_KEY_LOST_HOSTS "'), 0, 0, 0, hold}\n"
    "end\n"
    "local hosts = redis.call('ZRANGE', '" WG_STORE_KEY_HOSTS "', 0, -1)\n"
    "local live, newly, moved, left = 0, 0, 0, 0\n"
    "for _, hn in ipairs(hosts) do\n"
    "  if hn == ARGV[5] or redis.call('EXISTS', '" WG_STORE_KEY_HOST_PREFIX "' .. hn) == 1 then\n"
    "    if not redis.call('ZSCORE', '" WG_STORE_KEY_LOST_HOSTS "', hn) then live = live + 1 end\n"
    "  elseif redis.call('ZADD', '" WG_STORE_KEY_LOST_HOSTS "', 'NX', now, hn) == 1 then\n"
    "    newly = newly + 1\n"
    "    local n = redis.call('SUNIONSTORE', '" WG_STORE_KEY_LOST_TODO_PREFIX "' .. hn,\n"
    "                         '" WG_STORE_KEY_HOST_SESSIONS_PREFIX "' .. hn)\n"
    "    redis.call('XADD', '" WG_STORE_KEY_EVENTS "', 'MAXLEN', '~', ARGV[3], '*', 'type',\n"
    "               'host_lost', 'host', hn, 'at', now, 'detail',\n"
    "               cjson.encode({host = hn, sessions = n}))\n"
    "  end\n"
    "end\n"
    "for _, hn in ipairs(redis.call('ZRANGE', '" WG_STORE_KEY_LOST_HOSTS "', 0, -1)) do\n"
    "  local todo = '" WG_STORE_KEY_LOST_TODO_PREFIX "' .. hn\n"
    "  while moved < batch do\n"
    "    local id = redis.call('SPOP', todo)\n"
    "    if not id then break end\n"
    "    local h = '" WG_STORE_KEY_SESSION_PREFIX "' .. id\n"
    "    local cur = redis.call('HGET', h, 'state')\n"
    "    if cur and cur ~= 'lost' and cur ~= 'destroyed' and redis.call('HGET', h, 'host') == hn "
    "then\n"
    "      move(h, id, cur, 'lost', now, cjson.encode({reason = 'host lost', host = hn}),\n"
    "           ARGV[3], ARGV[4])\n"
    "      moved = moved + 1\n"
    "    end\n"
    "  end\n"
    "  left = left + redis.call('SCARD', todo)\n"
    "end\n"
    "return {#hosts, live, redis.call('ZCARD', '" WG_STORE_KEY_LOST_HOSTS
    "'), newly, moved, left, 0}\n";

/* A command for a session's host: ARGV id, the caller's host, now, wake
 * cap, events cap, state channel, op, at, from ("" = none), force ("1"),
 * now flag ("1"). The stream is the record's host (the caller's only when
 * there is none). A wake of a lost, unpinned session whose host is not
 * live re-places it first (see wg_store_wake_add()). Replies
 * {'ok', entry id, host} or {'unplaced', reason}. */
const char store_script_wake[] = TRANSIENT_LUA PLACE_LUA HOME_LUA MOVE_LUA
    "local id, now = ARGV[1], ARGV[3]\n"
    "local h = '" WG_STORE_KEY_SESSION_PREFIX "' .. id\n"
    "local target = ARGV[2]\n"
    "local st = redis.call('HGET', h, 'state')\n"
    "if st then\n"
    "  local rh = redis.call('HGET', h, 'host') or ''\n"
    "  if rh ~= '' then target = rh end\n"
    "  if st == 'lost' and ARGV[7] == 'wake' and redis.call('HGET', h, 'pin') ~= '1' and\n"
    "     (rh == '' or redis.call('ZSCORE', '" WG_STORE_KEY_LOST_HOSTS "', rh) or\n"
    "      redis.call('EXISTS', '" WG_STORE_KEY_HOST_PREFIX "' .. rh) == 0) then\n"
    "    local nh, why = place(redis.call('HGET', h, 'place_labels') or '', rh, '')\n"
    "    if not nh then return {'unplaced', why} end\n"
    "    home(id, rh, nh)\n"
    "    local ep = (tonumber(redis.call('HGET', h, 'epoch') or '') or 0) + 1\n"
    "    redis.call('HSET', h, 'host', nh, 'epoch', string.format('%d', ep))\n"
    "    redis.call('HDEL', h, 'container_id', 'ip')\n"
    "    local d = cjson.encode({reason = 'replaced', from_host = rh, to_host = nh, epoch = ep})\n"
    "    move(h, id, 'lost', 'asleep', now, d, ARGV[5], ARGV[6])\n"
    "    redis.call('XADD', '" WG_STORE_KEY_EVENTS "', 'MAXLEN', '~', ARGV[5], '*', 'id', id,\n"
    "               'type', 'replaced', 'at', now, 'detail', d)\n"
    "    target = nh\n"
    "  end\n"
    "end\n"
    "local e = {'session', id, 'op', ARGV[7], 'at', ARGV[8]}\n"
    "if ARGV[9] ~= '' then e[#e + 1] = 'from'; e[#e + 1] = ARGV[9] end\n"
    "if ARGV[10] == '1' then e[#e + 1] = 'force'; e[#e + 1] = '1' end\n"
    "if ARGV[11] == '1' then e[#e + 1] = 'now'; e[#e + 1] = '1' end\n"
    "local eid = redis.call('XADD', '" WG_STORE_KEY_WAKE_PREFIX "' .. target, 'MAXLEN', '~',\n"
    "                       ARGV[4], '*', unpack(e))\n"
    "return {'ok', eid, target}\n";

/* Records homed on a host that the sets do not know yet (written before
 * placement): ARGV name, "1" on the last call of a round, then ids. Each id
 * whose record names the host joins wg:host_sessions:{name}; the last call
 * drops members whose record is gone or homed elsewhere, and sets the
 * host's wg:hostload to the set's size, so the count heals at each boot.
 * Replies the number of ids added. */
const char store_script_adopt[] =
    "local name, hs = ARGV[1], '" WG_STORE_KEY_HOST_SESSIONS_PREFIX "' .. ARGV[1]\n"
    "local added = 0\n"
    "for i = 3, #ARGV do\n"
    "  local h = '" WG_STORE_KEY_SESSION_PREFIX "' .. ARGV[i]\n"
    "  if redis.call('HGET', h, 'host') == name then\n"
    "    added = added + redis.call('SADD', hs, ARGV[i])\n"
    /* A record from before placement has no epoch: it gets the first, so
     * the epoch fence holds for it once it is re-placed and comes back. */
    "    redis.call('HSETNX', h, 'epoch', '1')\n"
    "  end\n"
    "end\n"
    "if ARGV[2] == '1' then\n"
    "  for _, id in ipairs(redis.call('SMEMBERS', hs)) do\n"
    "    if redis.call('HGET', '" WG_STORE_KEY_SESSION_PREFIX "' .. id, 'host') ~= name then\n"
    "      redis.call('SREM', hs, id)\n"
    "    end\n"
    "  end\n"
    "  redis.call('HSET', '" WG_STORE_KEY_HOSTLOAD "', name, redis.call('SCARD', hs))\n"
    "end\n"
    "return added\n";
