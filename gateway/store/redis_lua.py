"""Lua scripts of the Redis backend: every multi-key write that must be atomic.

Each script touches keys of ONE hash tag only (a tenant's ``{tenant}``, the
queue's ``{q}`` or the tenants' ``{tenants}``), so the layout works on Redis
Cluster. ``KEYS[1]`` is always a key of that tag (it routes the call); the
other keys are built from the tag's prefix passed as ``ARGV[1]``.

Optional string arguments are encoded as ``""`` for None and ``"+" .. value``
otherwise (``opt()`` below), so an empty string stays distinguishable.
"""

from __future__ import annotations

# A tenant script that fed the change feed returns {FED, tenant, earliest change time,
# its own result}; RedisStore unwraps that in a response callback (redis_webhooks).
FED = "\0fed"


def tenant_script(body: str) -> str:
    """A script on ``_COMMON`` that reports whether it fed the tenant's change feed."""
    return (
        "local FED_TP, FED_AT\nlocal function main()\n"
        + _COMMON
        + body
        + "\nend\nlocal out = main()\nif FED_TP then\n"
        + "  return {'\\0fed', string.match(FED_TP, '^.-:{(.*)}:$'), FED_AT, out}\n"
        + "end\nreturn out\n"
    )


# Shared Lua: the forward-only rule (gateway.models.can_transition) and one status move.
_COMMON = r"""
local RANK = {planned=0, queued=1, sending=2, sent=3, delivered=4, opened=5, read=6}
local FAIL = {failed=1, undelivered=1, bounced=1, expired=1, suppressed=1, cancelled=1}
local function can_move(old, new)
  if FAIL[old] then return false end
  if FAIL[new] then return RANK[old] < RANK['delivered'] end
  return RANK[new] > RANK[old]
end
local function opt(v)
  if v == nil or v == '' then return nil end
  return string.sub(v, 2)
end
local function split(s, sep)
  local out, i = {}, 1
  while true do
    local j = string.find(s, sep, i, true)
    if not j then out[#out + 1] = string.sub(s, i); return out end
    out[#out + 1] = string.sub(s, i, j - 1)
    i = j + 1
  end
end
-- The webhook change feed (see redis_webhooks): only while the tenant has an enabled
-- endpoint, into the tenant's own feed (its slot), committed with the change. The
-- script then reports the change to the caller (tenant_script below), which marks the
-- tenant pending in the queue's slot: a second step, as Cluster allows no other.
local function feed(tp, kind, data, at)
  if redis.call('EXISTS', tp .. 'wh:on') == 0 then return nil end
  local seq = redis.call('INCR', tp .. 'wh:seq')
  redis.call('ZADD', tp .. 'wh:feed', seq, seq .. '\31' .. kind .. '\31' .. at .. '\31'
    .. (type(data) == 'string' and data or cjson.encode(data)))
  FED_TP = tp
  if FED_AT == nil or tonumber(at) < tonumber(FED_AT) then FED_AT = at end
  return seq
end
local function move(tp, id, status, at, detail, reason, pid, segs)
  local key = tp .. 'd:' .. id
  local cur = redis.call('HMGET', key, 's', 'c', 'm', 'w')
  local old = cur[1]
  if not old then return 0 end
  if can_move(old, status) then
    local f = {'s', status, 'u', at}
    if reason then f[#f + 1] = 'r'; f[#f + 1] = reason end
    if pid then f[#f + 1] = 'p'; f[#f + 1] = pid end
    if segs then f[#f + 1] = 'n'; f[#f + 1] = segs end
    redis.call('HSET', key, unpack(f))
    local h = status .. '\31' .. at
    if detail then h = h .. '\31' .. detail end
    redis.call('RPUSH', tp .. 'h:' .. id, h)
    redis.call('HINCRBY', tp .. 'mc:' .. cur[3], old, -1)
    redis.call('HINCRBY', tp .. 'mc:' .. cur[3], status, 1)
    redis.call('HINCRBY', tp .. 'stats', cur[2] .. '\31' .. old, -1)
    redis.call('HINCRBY', tp .. 'stats', cur[2] .. '\31' .. status, 1)
    if status ~= 'planned' and status ~= 'queued' and status ~= 'sending' then
      feed(tp, 'delivery.updated', {message_id=cur[3], delivery_id=id, recipient_id=cur[4],
        channel=cur[2], status=status, reason=redis.call('HGET', key, 'r') or cjson.null}, at)
    end
    return 1
  end
  if pid or segs then
    local f = {}
    if pid then f[#f + 1] = 'p'; f[#f + 1] = pid end
    if segs then f[#f + 1] = 'n'; f[#f + 1] = segs end
    redis.call('HSET', key, unpack(f))
  end
  return 0
end
"""

# KEYS[1] tenant anchor. ARGV: tp, then 7 per move: id status at detail reason pid segs.
TRANSITION = tenant_script(
    r"""
local tp = ARGV[1]
local out = {}
for i = 2, #ARGV, 7 do
  out[#out + 1] = move(tp, ARGV[i], ARGV[i + 1], ARGV[i + 2], opt(ARGV[i + 3]),
    opt(ARGV[i + 4]), opt(ARGV[i + 5]), opt(ARGV[i + 6]))
end
return out
"""
)

# KEYS[1] the message hash. ARGV: tp ttl message_id json created_us
ACCEPT_MESSAGE = r"""
local tp, ttl = ARGV[1], tonumber(ARGV[2])
local cur = redis.call('HMGET', KEYS[1], 'j', 'p')
if cur[1] then return {0, cur[1], cur[2] or ''} end
redis.call('HSET', KEYS[1], 'j', ARGV[4], 'c', ARGV[5])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', tp .. 'msgs', ARGV[5], ARGV[3])
return {1}
"""

# KEYS[1] tenant anchor. ARGV: tp ttl, then 2 per delivery: meta json. meta fields (\31):
# id message recipient channel status created20 updated not_before reason pid segs addrkey
ADD_DELIVERIES = tenant_script(
    r"""
local tp, ttl = ARGV[1], tonumber(ARGV[2])
local new = 0
local touched = {}
for i = 3, #ARGV, 2 do
  local f = split(ARGV[i], '\31')
  local id, mid, who, channel, status, created = f[1], f[2], f[3], f[4], f[5], f[6]
  local key = tp .. 'd:' .. id
  if redis.call('EXISTS', key) == 0 then
    local h = {'j', ARGV[i + 1], 's', status, 'c', channel, 'm', mid, 'w', who, 'u', f[7]}
    if f[8] ~= '' then h[#h + 1] = 'nb'; h[#h + 1] = f[8] end
    local reason = opt(f[9])
    if reason then h[#h + 1] = 'r'; h[#h + 1] = reason end
    if opt(f[10]) then h[#h + 1] = 'p'; h[#h + 1] = opt(f[10]) end
    if opt(f[11]) then h[#h + 1] = 'n'; h[#h + 1] = opt(f[11]) end
    redis.call('HSET', key, unpack(h))
    redis.call('EXPIRE', key, ttl)
    local first = status .. '\31' .. string.match(created, '^0*(%d+)$')
    if reason then first = first .. '\31' .. reason end
    redis.call('RPUSH', tp .. 'h:' .. id, first)
    redis.call('EXPIRE', tp .. 'h:' .. id, ttl)
    local ids = redis.call('HGET', tp .. 'mr:' .. mid, who)
    if ids then ids = ids .. ' ' .. id else ids = id end
    redis.call('HSET', tp .. 'mr:' .. mid, who, ids)
    redis.call('HINCRBY', tp .. 'mc:' .. mid, status, 1)
    redis.call('HINCRBY', tp .. 'stats', channel .. '\31' .. status, 1)
    touched[mid] = 1
    if f[12] ~= '' then
      local lk = tp .. 'la:' .. f[12]
      local value = created .. '\31' .. id
      local cur = redis.call('GET', lk)
      if (not cur) or value > cur then redis.call('SET', lk, value, 'EX', ttl) end
    end
    if channel == 'inapp' then
      local score = redis.call('HGET', tp .. 'm:' .. mid, 'c') or string.match(created, '^0*(%d+)$')
      local ib = tp .. 'ib:' .. who
      redis.call('ZADD', ib, score, mid)  -- short members keep the set a compact listpack
      redis.call('EXPIRE', ib, ttl)
    end
    if status ~= 'planned' and status ~= 'queued' and status ~= 'sending' then
      feed(tp, 'delivery.updated', {message_id=mid, delivery_id=id, recipient_id=who,
        channel=channel, status=status, reason=reason or cjson.null},
        string.match(created, '^0*(%d+)$'))
    end
    new = new + 1
  end
end
for mid, _ in pairs(touched) do
  redis.call('EXPIRE', tp .. 'mr:' .. mid, ttl)
  redis.call('EXPIRE', tp .. 'mc:' .. mid, ttl)
end
return new
"""
)

# KEYS[1] a global address key. ARGV: value ttl. Keeps the greatest value (created20\31id\31t).
KEEP_GREATEST = r"""
local cur = redis.call('GET', KEYS[1])
if (not cur) or ARGV[1] > cur then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
return 1
"""

# KEYS[1] tenant anchor. ARGV: tp ttl message recipient at via
MARK_READ = tenant_script(
    r"""
local tp, ttl, mid, who, at, via = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local ids = redis.call('HGET', tp .. 'mr:' .. mid, who)
if not ids then return 0 end
local inapp = {}
local any = false
for _, id in ipairs(split(ids, ' ')) do
  local d = redis.call('HMGET', tp .. 'd:' .. id, 's', 'c')
  if d[1] and d[2] ~= 'none' and d[1] ~= 'suppressed' and d[1] ~= 'cancelled' then
    any = true
    if d[2] == 'inapp' then inapp[#inapp + 1] = id end
  end
end
if not any then return 0 end
local rk = tp .. 'rd:' .. mid
if redis.call('HSETNX', rk, who, at .. '\31' .. via) == 1 then
  redis.call('EXPIRE', rk, ttl)
  feed(tp, 'message.read', {message_id=mid, recipient_id=who, via=via}, at)
end
for _, id in ipairs(inapp) do move(tp, id, 'read', at, via, nil, nil, nil) end
return 1
"""
)

# KEYS[1] the reply key. ARGV: tp ttl reply_id json message_id(opt) received_us person(opt)
# channel body
ADD_REPLY = tenant_script(
    r"""
local tp, ttl = ARGV[1], tonumber(ARGV[2])
if not redis.call('SET', KEYS[1], ARGV[4], 'NX', 'EX', ttl) then return 0 end
local mid = opt(ARGV[5])
if mid then
  redis.call('ZADD', tp .. 'mrep:' .. mid, ARGV[6], ARGV[3])
  redis.call('EXPIRE', tp .. 'mrep:' .. mid, ttl)
end
redis.call('ZADD', tp .. 'reps', ARGV[6], ARGV[3])
feed(tp, 'reply.received', {reply_id=ARGV[3], message_id=mid or cjson.null,
  recipient_id=opt(ARGV[7]) or cjson.null, channel=ARGV[8], body=ARGV[9]}, ARGV[6])
return 1
"""
)

# KEYS[1] the recipient's inbox (message ids by the message's time). ARGV: tp recipient
# max_score now limit [message_id]. Returns status, delivery json, message json, read
# ("at\31via" or "") per item, newest first.
INBOX = r"""
local tp, who, max, now, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {}
local function consider(mid)
  local d = nil
  for id in string.gmatch(redis.call('HGET', tp .. 'mr:' .. mid, who) or '', '%S+') do
    local h = redis.call('HMGET', tp .. 'd:' .. id, 's', 'j', 'nb', 'c')
    if h[4] == 'inapp' then d = h end
  end
  if not d then
    redis.call('ZREM', KEYS[1], mid)  -- the delivery expired or was purged
    return 1
  end
  if d[1] == 'suppressed' or d[1] == 'cancelled' then return end
  if d[3] and tonumber(d[3]) > now then return end
  local m = redis.call('HGET', tp .. 'm:' .. mid, 'j')
  if not m then return end
  out[#out + 1] = d[1]
  out[#out + 1] = d[2]
  out[#out + 1] = m
  out[#out + 1] = redis.call('HGET', tp .. 'rd:' .. mid, who) or ''
  return 0
end
if ARGV[6] and ARGV[6] ~= '' then
  if redis.call('ZSCORE', KEYS[1], ARGV[6]) then consider(ARGV[6]) end
  return out
end
-- Keyset paging: with ARGV[7] (the last message id seen) and an inclusive max (its
-- score), members of that score are skipped up to and including that id.
local bid = ARGV[7]
if bid == '' then bid = nil end
local edge = tonumber(max)
local offset, chunk = 0, math.max(limit * 2, 20)
while #out < limit * 4 do
  local page = redis.call('ZREVRANGEBYSCORE', KEYS[1], max, '-inf', 'WITHSCORES', 'LIMIT',
    offset, chunk)
  local gone = 0
  for i = 1, #page, 2 do
    if #out >= limit * 4 then break end
    local mid = page[i]
    if not (bid and tonumber(page[i + 1]) == edge and mid >= bid) then
      gone = gone + (consider(mid) or 0)
    end
  end
  if #page < chunk * 2 then break end
  offset = offset + chunk - gone
end
return out
"""

# KEYS[1] tenant anchor. ARGV: tp cutoff_us budget. Deletes messages created before the
# cutoff with their deliveries, history, reads and replies, and replies received before it.
# Returns {deliveries removed, 1 if there is more to do, removed delivery ids...}.
PURGE = r"""
local tp, cutoff, budget = ARGV[1], ARGV[2], tonumber(ARGV[3])
local removed, ids = 0, {}
local more = 0
local old = redis.call('ZRANGEBYSCORE', tp .. 'msgs', '-inf', '(' .. cutoff, 'LIMIT', 0, 100)
for _, mid in ipairs(old) do
  if removed >= budget then more = 1; break end
  local mr = tp .. 'mr:' .. mid
  local rows = redis.call('HGETALL', mr)
  local done = true
  for i = 1, #rows, 2 do
    if removed >= budget then done = false; break end
    for id in string.gmatch(rows[i + 1], '%S+') do
      local key = tp .. 'd:' .. id
      local d = redis.call('HMGET', key, 's', 'c')
      if d[1] then
        redis.call('HINCRBY', tp .. 'stats', d[2] .. '\31' .. d[1], -1)
        if d[2] == 'inapp' then redis.call('ZREM', tp .. 'ib:' .. rows[i], mid) end
      end
      redis.call('DEL', key, tp .. 'h:' .. id)
      removed = removed + 1
      ids[#ids + 1] = id
    end
    redis.call('HDEL', mr, rows[i])
  end
  if not done then more = 1; break end
  for _, rid in ipairs(redis.call('ZRANGE', tp .. 'mrep:' .. mid, 0, -1)) do
    redis.call('DEL', tp .. 'r:' .. rid)
    redis.call('ZREM', tp .. 'reps', rid)
  end
  redis.call('DEL', tp .. 'm:' .. mid, mr, tp .. 'mc:' .. mid, tp .. 'rd:' .. mid,
    tp .. 'mrep:' .. mid, tp .. 'rch:' .. mid, tp .. 'rchl:' .. mid)
  redis.call('ZREM', tp .. 'msgs', mid)
end
if more == 0 and #old == 100 then more = 1 end
if more == 0 then
  local reps = redis.call('ZRANGEBYSCORE', tp .. 'reps', '-inf', '(' .. cutoff, 'LIMIT', 0, 1000)
  for _, rid in ipairs(reps) do
    redis.call('DEL', tp .. 'r:' .. rid)
    redis.call('ZREM', tp .. 'reps', rid)
  end
  if #reps == 1000 then more = 1 end
end
local out = {removed, more}
for _, id in ipairs(ids) do out[#out + 1] = id end
return out
"""

# KEYS[1] tenants hash, KEYS[2] key-hash index. ARGV: id key_hash json
CREATE_TENANT = r"""
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1
then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

# ----------------------------------------------------------------------------- work queue
#
# Per job kind a stream ``s:<kind>`` with the consumer group ``workers`` and a sorted set
# ``z:<kind>`` of waiting jobs by due time (``u:<kind>`` for the urgent lane, see
# gateway/store/lanes.py); per job a hash ``j:<id>``: k kind, t tenant, r ref, d due (µs),
# a attempts, e last error, x stream entry id while leased, l lease end (µs), c claim time
# (µs), p '1' in the urgent lane (absent: normal, as every job of older versions).
# Times are on the CALLER's clock (the Protocol passes ``now``).
#
# Leases and XAUTOCLAIM: a pending entry's delivery time is set (XCLAIM ... TIME) to the
# claim time on the caller's clock minus a per-keyspace offset K (``clock``; 0 for real
# clocks), so XAUTOCLAIM's "idle >= min-idle-time", measured on Redis's clock, becomes
# "lease ended on the caller's clock" with min-idle-time = lease + K + (redis now - now).
# The lease end kept in the job hash has the last word, so a clock far off can make a
# claim later, never earlier.

_QUEUE_COMMON = r"""
local qp = ARGV[1]
-- Lua would print 1.7e+15: integers go to Redis written out in full.
local function num(x) return string.format('%.0f', x) end
local GROUP = 'workers'
local function ensure_group(stream)
  if redis.call('EXISTS', stream) == 0 then
    redis.call('XGROUP', 'CREATE', stream, GROUP, '0', 'MKSTREAM')
  end
end
-- The sorted set a waiting job sits in: its kind's, in its lane.
local function waiting(kind, urgent)
  if urgent == '1' then return qp .. 'u:' .. kind end
  return qp .. 'z:' .. kind
end
local function drop_entry(kind, eid)
  if eid and eid ~= '' then
    redis.call('XACK', qp .. 's:' .. kind, GROUP, eid)
    redis.call('XDEL', qp .. 's:' .. kind, eid)
  end
end
"""

# KEYS[1] the kinds set. ARGV: qp, then 8 per job: id tenant kind ref due_us attempts error
# urgent(1/0)
ADD_JOBS = (
    _QUEUE_COMMON
    + r"""
local added = 0
for i = 2, #ARGV, 8 do
  local key = qp .. 'j:' .. ARGV[i]
  if redis.call('EXISTS', key) == 0 then
    local f = {'k', ARGV[i + 2], 't', ARGV[i + 1], 'r', ARGV[i + 3], 'd', ARGV[i + 4],
      'a', ARGV[i + 5]}
    if ARGV[i + 6] ~= '' then f[#f + 1] = 'e'; f[#f + 1] = string.sub(ARGV[i + 6], 2) end
    if ARGV[i + 7] == '1' then f[#f + 1] = 'p'; f[#f + 1] = '1' end
    redis.call('HSET', key, unpack(f))
    redis.call('ZADD', waiting(ARGV[i + 2], ARGV[i + 7]), ARGV[i + 4], ARGV[i])
    redis.call('SADD', KEYS[1], ARGV[i + 2])
    added = added + 1
  end
end
return added
"""
)

# KEYS[1] the clock key. ARGV: qp now_ms now_us lease_ms limit consumer normal_reserved
# kind... Returns 8 per job (id tenant kind ref due attempts error urgent), then the clamp
# warning flag.
CLAIM = (
    _QUEUE_COMMON
    + r"""
local now_ms, now_us = tonumber(ARGV[2]), tonumber(ARGV[3])
local lease_ms, limit, consumer = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local normal_reserved = tonumber(ARGV[7])
local t = redis.call('TIME')
local server_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local K = tonumber(redis.call('GET', KEYS[1]) or '-1')
if K < 0 then
  local skew = now_ms - server_ms
  if skew > 1000 then K = skew + 86400000 else K = 0 end
  redis.call('SET', KEYS[1], num(K))
end
local stamp = now_ms - K
local clamped = 0
if stamp > server_ms then clamped = 1 end
local lease_end = now_us + lease_ms * 1000
local out = {}
local function take(kind, stream, eid, id, redelivery)
  local key = qp .. 'j:' .. id
  if redelivery then  -- counts in the entry's delivery counter, like XREADGROUP did
    redis.call('XCLAIM', stream, GROUP, consumer, 0, eid, 'TIME', num(stamp))
  else
    redis.call('XCLAIM', stream, GROUP, consumer, 0, eid, 'TIME', num(stamp), 'JUSTID')
  end
  local a = redis.call('HINCRBY', key, 'a', 1)
  redis.call('HSET', key, 'x', eid, 'l', num(lease_end), 'c', ARGV[3])
  local j = redis.call('HMGET', key, 't', 'r', 'd', 'e', 'p')
  out[#out + 1] = id; out[#out + 1] = j[1]; out[#out + 1] = kind; out[#out + 1] = j[2]
  out[#out + 1] = j[3]; out[#out + 1] = a; out[#out + 1] = j[4] or ''
  out[#out + 1] = j[5] or '0'
end
local kinds = {}
for i = 8, #ARGV do kinds[#kinds + 1] = ARGV[i] end
-- 1. Jobs of crashed (or too slow) workers: XAUTOCLAIM after the lease.
local min_idle = math.max(0, lease_ms + K + server_ms - now_ms - 1000)
for _, kind in ipairs(kinds) do
  local stream = qp .. 's:' .. kind
  if #out >= limit * 8 then break end
  if redis.call('EXISTS', stream) == 1 then
    local cursor = '0-0'
    repeat
      local want = limit - #out / 8
      -- JUSTID: the delivery counter moves only for entries really taken (take()).
      local r = redis.call('XAUTOCLAIM', stream, GROUP, consumer, num(min_idle), cursor,
        'COUNT', want, 'JUSTID')
      cursor = r[1]
      for _, eid in ipairs(r[2]) do
        local entry = redis.call('XRANGE', stream, eid, eid)[1]
        local id = entry and entry[2][2]
        local j = id and redis.call('HMGET', qp .. 'j:' .. id, 'x', 'l', 'c') or {}
        if j[1] ~= eid then
          drop_entry(kind, eid)  -- finished or retried meanwhile: a stale entry
        elseif tonumber(j[2]) > now_us then
          -- not over on the caller's clock: give the entry its delivery time back
          redis.call('XCLAIM', stream, GROUP, consumer, 0, eid, 'TIME',
            num(math.floor(tonumber(j[3]) / 1000) - K), 'JUSTID')
        else
          take(kind, stream, eid, id, true)
        end
      end
    until cursor == '0-0' or #out >= limit * 8
  end
end
-- 2. Due jobs, urgent lane first (the normal lane keeps normal_reserved of the claim:
-- gateway/store/lanes.py, take()), oldest due first over all kinds in each lane, moved
-- from the sorted sets into the streams (exactly once: ZREM and XADD in this one script)
-- and read by this consumer.
local want = limit - #out / 8
if want > 0 then
  local lanes = {}
  for _, urgent in ipairs({'1', '0'}) do
    local due = {}
    for _, kind in ipairs(kinds) do
      local z = redis.call('ZRANGEBYSCORE', waiting(kind, urgent), '-inf', ARGV[3],
        'WITHSCORES', 'LIMIT', 0, want)
      for i = 1, #z, 2 do due[#due + 1] = {tonumber(z[i + 1]), z[i], kind, urgent} end
    end
    table.sort(due, function(a, b)
      if a[1] ~= b[1] then return a[1] < b[1] end
      return a[2] < b[2]
    end)
    lanes[urgent] = due
  end
  local n_normal = math.min(#lanes['0'], math.max(normal_reserved, want - #lanes['1']))
  local n_urgent = math.min(#lanes['1'], want - n_normal)
  local due = {}
  for i = 1, n_urgent do due[#due + 1] = lanes['1'][i] end
  for i = 1, n_normal do due[#due + 1] = lanes['0'][i] end
  local per_kind = {}
  for i = 1, #due do
    local id, kind = due[i][2], due[i][3]
    local stream = qp .. 's:' .. kind
    ensure_group(stream)
    redis.call('ZREM', waiting(kind, due[i][4]), id)
    redis.call('XADD', stream, '*', 'j', id)
    per_kind[kind] = (per_kind[kind] or 0) + 1
  end
  for _, kind in ipairs(kinds) do
    local n = per_kind[kind]
    if n then
      local stream = qp .. 's:' .. kind
      local r = redis.call('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', n,
        'STREAMS', stream, '>')
      for _, entry in ipairs(r[1][2]) do take(kind, stream, entry[1], entry[2][2]) end
      per_kind[kind] = nil
    end
  end
end
out[#out + 1] = clamped
return out
"""
)

# KEYS[1] the kinds set. ARGV: qp job_id...
FINISH_JOBS = (
    _QUEUE_COMMON
    + r"""
for i = 2, #ARGV do
  local key = qp .. 'j:' .. ARGV[i]
  local j = redis.call('HMGET', key, 'k', 'x', 'p')
  if j[1] then
    drop_entry(j[1], j[2])
    redis.call('ZREM', waiting(j[1], j[3]), ARGV[i])
    redis.call('DEL', key)
  end
end
return 1
"""
)

# KEYS[1] the kinds set. ARGV: qp job_id due_us error give_back(1: attempts - 1, not below 0)
RETRY_JOB = (
    _QUEUE_COMMON
    + r"""
local key = qp .. 'j:' .. ARGV[2]
local j = redis.call('HMGET', key, 'k', 'x', 'a', 'p')
if not j[1] then return 0 end
drop_entry(j[1], j[2])
if ARGV[5] == '1' and tonumber(j[3]) > 0 then redis.call('HINCRBY', key, 'a', -1) end
redis.call('HSET', key, 'd', ARGV[3], 'e', ARGV[4], 'x', '')
redis.call('HDEL', key, 'l', 'c')
redis.call('ZADD', waiting(j[1], j[4]), ARGV[3], ARGV[2])
return 1
"""
)

# KEYS[1] the kinds set. ARGV: qp now_us. Returns kind waiting oldest_due_us|'' per kind.
QUEUE_STATS = (
    _QUEUE_COMMON
    + r"""
local now = tonumber(ARGV[2])
local out = {}
for _, kind in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local count = 0
  local oldest = nil
  for _, urgent in ipairs({'1', '0'}) do
    local z = waiting(kind, urgent)
    count = count + redis.call('ZCARD', z)
    local first = redis.call('ZRANGEBYSCORE', z, '-inf', ARGV[2], 'WITHSCORES', 'LIMIT', 0, 1)
    if first[2] and (oldest == nil or tonumber(first[2]) < oldest) then
      oldest = tonumber(first[2])
    end
  end
  local stream = qp .. 's:' .. kind
  if redis.call('EXISTS', stream) == 1 then
    local pending = redis.call('XPENDING', stream, GROUP, '-', '+', 10000)
    for _, p in ipairs(pending) do
      local entry = redis.call('XRANGE', stream, p[1], p[1])
      if entry[1] then
        local j = redis.call('HMGET', qp .. 'j:' .. entry[1][2][2], 'l', 'd')
        if j[1] and tonumber(j[1]) <= now then
          count = count + 1
          local d = tonumber(j[2])
          if d <= now and (oldest == nil or d < oldest) then oldest = d end
        end
      end
    end
  end
  if count > 0 then
    out[#out + 1] = kind; out[#out + 1] = count
    out[#out + 1] = oldest and string.format('%.0f', oldest) or ''
  end
end
return out
"""
)

# KEYS[1] the kinds set. ARGV: qp consumer. Removes this consumer (if it holds nothing)
# and consumers that hold nothing and were idle a day (killed processes) from the groups.
FORGET_CONSUMERS = r"""
local qp = ARGV[1]
for _, kind in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local stream = qp .. 's:' .. kind
  if redis.call('EXISTS', stream) == 1 then
    for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, 'workers')) do
      local info = {}
      for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
      if info['pending'] == 0 and (info['name'] == ARGV[2] or info['idle'] > 86400000) then
        redis.call('XGROUP', 'DELCONSUMER', stream, 'workers', info['name'])
      end
    end
  end
end
return 1
"""

# KEYS[1] the limit's key. ARGV: now_us interval_us burst max_wait_us (-1: none)
# GCRA: returns the µs to wait for the slot it took; a wait above max_wait takes nothing.
ACQUIRE_RATE = r"""
local now, interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now - (burst - 1) * interval
if wait < 0 then wait = 0 end
local function num(x) return string.format('%.0f', x) end
if max_wait >= 0 and wait > max_wait then return num(wait) end
local new_tat = tat + interval
redis.call('SET', KEYS[1], num(new_tat), 'PX', num(math.ceil((new_tat - now) / 1000) + 1000))
return num(wait)
"""

# KEYS[1] tenant anchor. ARGV: tp kind data_json at_us. The change's seq, or nil.
APPEND_CHANGE = tenant_script(
    r"""
return feed(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"""
)

_DEVICE_COMMON = r"""
local tp = ARGV[1]
local function unindex(doc)
  local d = cjson.decode(doc)
  if d[1] ~= cjson.null then redis.call('HDEL', tp .. 'tok', d[1]) end
  if d[2] ~= cjson.null then redis.call('HDEL', tp .. 'fid', d[2]) end
end
"""

# KEYS[1] the devices version. ARGV: tp person device_id doc token(opt) fid(opt)
# A token or fid belongs to one device: another device holding it is removed.
UPSERT_DEVICE = tenant_script(
    _DEVICE_COMMON
    + r"""
local who, id, doc = ARGV[2], ARGV[3], ARGV[4]
local me = who .. '\31' .. id
local addresses = {{'tok', opt(ARGV[5])}, {'fid', opt(ARGV[6])}}
for _, a in ipairs(addresses) do
  if a[2] then
    local owner = redis.call('HGET', tp .. a[1], a[2])
    if owner and owner ~= me then
      local o = split(owner, '\31')
      local old = redis.call('HGET', tp .. 'dev:' .. o[1], o[2])
      redis.call('HDEL', tp .. 'dev:' .. o[1], o[2])
      if old then unindex(old) end
    end
  end
end
local current = redis.call('HGET', tp .. 'dev:' .. who, id)
if current then unindex(current) end
redis.call('HSET', tp .. 'dev:' .. who, id, doc)
for _, a in ipairs(addresses) do
  if a[2] then redis.call('HSET', tp .. a[1], a[2], me) end
end
redis.call('INCR', KEYS[1])
return 1
"""
)

# KEYS[1] the devices version. ARGV: tp person device_id
REMOVE_DEVICE = (
    _DEVICE_COMMON
    + r"""
local current = redis.call('HGET', tp .. 'dev:' .. ARGV[2], ARGV[3])
if not current then return 0 end
unindex(current)
redis.call('HDEL', tp .. 'dev:' .. ARGV[2], ARGV[3])
redis.call('INCR', KEYS[1])
return 1
"""
)
