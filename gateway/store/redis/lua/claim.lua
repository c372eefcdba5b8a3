local now_ms, now_us = tonumber(ARGV[2]), tonumber(ARGV[3])
local lease_ms, limit, consumer = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local normal_reserved = tonumber(ARGV[7])
local scan = ARGV[8] == '1'
local t = redis.call('TIME')
local server_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local offset = tonumber(redis.call('GET', KEYS[1]) or '-1')
if offset < 0 then
  local skew = now_ms - server_ms
  if skew > 1000 then offset = skew + 86400000 else offset = 0 end
  redis.call('SET', KEYS[1], num(offset))
end
local stamp = now_ms - offset
local clamped = 0
if stamp > server_ms then clamped = 1 end
local lease_end = now_us + lease_ms * 1000
local out = {}
-- Per job taken: HMGET + HSET of its hash (the XCLAIM that stamps new entries is one
-- per stream and call: stamp_new). A lease still in the hash is one that ended (a retry
-- or give-back deletes it; a job stored as claimed has its hand-over's): the job is taken
-- over and says so in its last error (gateway/store/records.py, LEASE_ENDED).
local function take(kind, eid, id)
  local key = qp .. K.JOB .. id
  local j = read_job(key, {'t', 'r', 'd', 'e', 'p', 'a', 'l'})
  if not j.k then  -- ended meanwhile (finish_jobs.lua leaves such a member): nothing to do
    drop_entry(kind, eid)
    return
  end
  local a = (tonumber(j.a) or 0) + 1
  local f = {'HSET', key, 'a', a, 'x', eid, 'l', num(lease_end), 'c', ARGV[3], 'w', consumer}
  if j.l then
    j.e = 'lease_ended'
    f[#f + 1] = 'e'; f[#f + 1] = j.e
  end
  redis.call(unpack(f))
  out[#out + 1] = id; out[#out + 1] = j.t; out[#out + 1] = kind; out[#out + 1] = j.r
  out[#out + 1] = j.d; out[#out + 1] = a; out[#out + 1] = j.e or ''
  out[#out + 1] = j.p or '0'; out[#out + 1] = eid
end
local function stamp_new(stream, eids)
  each_chunk(eids, 200, function(part)
    local args = {'XCLAIM', stream, GROUP, consumer, 0}
    for _, eid in ipairs(part) do args[#args + 1] = eid end
    args[#args + 1] = 'TIME'; args[#args + 1] = num(stamp); args[#args + 1] = 'JUSTID'
    redis.call(unpack(args))
  end)
end
local kinds = {}
for i = 9, #ARGV do kinds[#kinds + 1] = ARGV[i] end
-- 1. Jobs of crashed (or too slow) workers: XAUTOCLAIM after the lease (when the caller
-- asks: it scans at most once a second, redis/jobs.py).
local min_idle = math.max(0, lease_ms + offset + server_ms - now_ms - 1000)
if scan then redis.call('SET', qp .. K.LEASE, lease_ms) end
for _, kind in ipairs(scan and kinds or {}) do
  local stream = qp .. K.STREAM .. kind
  if #out >= limit * 9 then break end
  if redis.call('EXISTS', stream) == 1 then
    local cursor = '0-0'
    repeat
      local want = limit - #out / 9
      -- JUSTID: the delivery counter moves only for entries really taken (take()).
      local r = redis.call('XAUTOCLAIM', stream, GROUP, consumer, num(min_idle), cursor,
        'COUNT', want, 'JUSTID')
      cursor = r[1]
      for _, eid in ipairs(r[2]) do
        local entry = redis.call('XRANGE', stream, eid, eid)[1]
        local id = entry and entry[2][2]
        local j = id and redis.call('HMGET', qp .. K.JOB .. id, 'x', 'l', 'c', 'w') or {}
        if j[1] ~= eid then
          drop_entry(kind, eid)  -- finished or retried meanwhile: a stale entry
        elseif tonumber(j[2]) > now_us then
          -- not over on the caller's clock: give the entry back to its holder (XAUTOCLAIM
          -- made it this caller's; XPENDING names who holds what) with its delivery time
          redis.call('XCLAIM', stream, GROUP, j[4] or consumer, 0, eid, 'TIME',
            num(math.floor(tonumber(j[3]) / 1000) - offset), 'JUSTID')
        else  -- counts in the entry's delivery counter, like XREADGROUP did
          redis.call('XCLAIM', stream, GROUP, consumer, 0, eid, 'TIME', num(stamp))
          take(kind, eid, id)
        end
      end
    until cursor == '0-0' or #out >= limit * 9
  end
end
-- 2. Due jobs, urgent lane first (the normal lane keeps normal_reserved of the claim:
-- gateway/store/lanes.py, take()), oldest due first over all kinds in each lane, moved
-- from the sorted sets into the streams (exactly once: ZREM and XADD in this one script)
-- and read by this consumer.
-- The sets read: every kind's in a claim that scans (at most once a second), else those
-- whose hint in P:{q}:next is due (queue_common.lua); each set read gets its hint anew.
local want = limit - #out / 9
local visit = {['1'] = {}, ['0'] = {}}
if scan then
  visit['1'], visit['0'] = kinds, kinds
elseif want > 0 then
  local mine = {}
  for _, kind in ipairs(kinds) do mine[kind] = true end
  for _, h in ipairs(redis.call('ZRANGEBYSCORE', qp .. K.NEXT_DUE, '-inf', ARGV[3])) do
    local urgent, kind = string.sub(h, 1, 1), string.sub(h, 3)
    if mine[kind] and visit[urgent] then visit[urgent][#visit[urgent] + 1] = kind end
  end
end
-- Each set read is its first want + 1 members by rank (one ZRANGE): the due ones are
-- candidates, and the first member this claim leaves is the set's new hint (none left:
-- the set is empty), so no second read of the set after the ZREM.
if want > 0 then
  local now = tonumber(ARGV[3])
  local lanes, firsts = {}, {}
  for _, urgent in ipairs({'1', '0'}) do
    local due = {}
    for _, kind in ipairs(visit[urgent]) do
      local z = redis.call('ZRANGE', waiting(kind, urgent), 0, want, 'WITHSCORES')
      firsts[hint(urgent, kind)] = z
      for i = 1, #z, 2 do
        if tonumber(z[i + 1]) <= now then due[#due + 1] = {tonumber(z[i + 1]), z[i], kind, urgent} end
      end
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
  local per_kind, zrem, taken = {}, {}, {}
  for i = 1, #due do
    local id, kind = due[i][2], due[i][3]
    per_kind[kind] = (per_kind[kind] or 0) + 1
    push(zrem, waiting(kind, due[i][4]), id)
    taken[due[i][4] .. '\31' .. id] = true
    redis.call('XADD', qp .. K.STREAM .. kind, '*', 'j', id)
  end
  bulk(zrem, function(z, ids) redis.call('ZREM', z, unpack(ids)) end)
  for _, urgent in ipairs({'1', '0'}) do
    for _, kind in ipairs(visit[urgent]) do
      local z, left = firsts[hint(urgent, kind)], nil
      for i = 1, #z, 2 do
        if not taken[urgent .. '\31' .. z[i]] then left = z[i + 1]; break end
      end
      set_next(kind, urgent, left)
    end
  end
  for _, kind in ipairs(kinds) do
    local n = per_kind[kind]
    if n then
      local stream = qp .. K.STREAM .. kind
      local r = read_group(stream, consumer, n)
      local eids = {}
      for _, entry in ipairs(r[1][2]) do
        eids[#eids + 1] = entry[1]
        take(kind, entry[1], entry[2][2])
      end
      stamp_new(stream, eids)
      per_kind[kind] = nil
    end
  end
end
out[#out + 1] = clamped
return out
