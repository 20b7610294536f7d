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

/* Moves (or, with ARGV[3] == "", updates) one record. See
 * wg_store_transition() for the contract; the replies are
 *   {'missing'} | {'rejected', '', HGETALL, ZSCORE} | {'active', '', HGETALL, ZSCORE}
 *   | {'ok', event id, HGETALL, ZSCORE}.
 * KEYS: record, wg:events, wg:active, wg:sessions, wg:transient, wg:idle_short,
 * wg:counts.
 * ARGV: id, allowed current states ("*" = any value, else names separated by
 * spaces), new state ("" = no move), now (ms), events cap, detail ("" =
 * none), state channel, "1" to add one to restarts, idle cutoff ("" = none:
 * else the move is refused as 'active' when the wg:active score is later),
 * then field/value pairs (an empty value removes the field).
 * The record read back for the reply is taken before a destroyed record is
 * deleted, with its final state. */
const char store_script_transition[] = TRANSIENT_LUA IDLE_SHORT_LUA
    "local h, id = KEYS[1], ARGV[1]\n"
    "if redis.call('EXISTS', h) == 0 then return {'missing'} end\n"
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
    "for i = 10, #ARGV, 2 do\n"
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
    "elseif move and (to == 'asleep' or to == 'failed' or to == 'destroyed') then\n"
    "  local sc = tonumber(redis.call('ZSCORE', KEYS[3], id) or '')\n"
    "  local la = tonumber(redis.call('HGET', h, 'last_active') or '') or 0\n"
    "  if sc and sc > la then\n"
    "    redis.call('HSET', h, 'last_active', string.format('%d', math.floor(sc)))\n"
    "  end\n"
    "  redis.call('ZREM', KEYS[3], id)\n"
    "end\n"
    "local rec = redis.call('HGETALL', h)\n"
    "local msg = {id = id, state = to, v = v}\n"
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

/* Get-or-create. Replies {'exists', '', HGETALL, ZSCORE} or
 * {'created', event id, HGETALL, nil}.
 * KEYS: record, wg:events, wg:sessions, wg:active, wg:transient, wg:idle_short,
 * wg:counts.
 * ARGV: id, now, events cap, detail, state channel, then field/value pairs
 * (empty values skipped). */
const char store_script_create[] = IDLE_SHORT_LUA
    "local h, id, now = KEYS[1], ARGV[1], ARGV[2]\n"
    "if redis.call('EXISTS', h) == 1 then\n"
    "  return {'exists', '', redis.call('HGETALL', h), redis.call('ZSCORE', KEYS[4], id)}\n"
    "end\n"
    "redis.call('HSET', h, 'id', id, 'state', 'creating', 'state_since', now,\n"
    "           'created', now, 'v', '1')\n"
    "for i = 6, #ARGV, 2 do\n"
    "  if ARGV[i + 1] ~= '' then redis.call('HSET', h, ARGV[i], ARGV[i + 1]) end\n"
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
