local now = tonumber(ARGV[2])
local out = {}
-- Only pending entries idle for at least the lease of the last claim that scanned (the
-- claim's own test, claim.lua) can have an ended lease; without one, all are read.
local lease_ms = tonumber(redis.call('GET', qp .. K.LEASE) or '')
local min_idle = 0
if lease_ms then
  local t = redis.call('TIME')
  local server_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local offset = math.max(0, tonumber(redis.call('GET', qp .. K.CLOCK) or '0'))
  min_idle = math.max(0, lease_ms + offset + server_ms - math.floor(now / 1000) - 1000)
end
-- The earliest due time (<= now) in a waiting set. A score is never later than its job's
-- due time, but ranked urgent work sits up to RANKS seconds ahead of it (lanes.order_at),
-- before older unranked work (a retry, an ended lease): jobs are read in score order until
-- the next score is no earlier than the earliest due time found (none after it can be
-- earlier: exact), at most STATS_READS jobs (then the age found is a lower bound).
local STATS_READS = 1000
local function oldest_due(z)
  local best, from = nil, '-inf'
  local read, page = 0, 100
  while read < STATS_READS do
    local top = best and ('(' .. num(best)) or ARGV[2]
    local ids = redis.call('ZRANGEBYSCORE', z, from, top, 'WITHSCORES', 'LIMIT', read, page)
    for i = 1, #ids, 2 do
      local d = tonumber(read_job(qp .. K.JOB .. ids[i], {'d'}).d)
      if d and d <= now and (best == nil or d < best) then best = d end
      if best and tonumber(ids[i + 1]) >= best then return best end
    end
    if #ids < 2 * page then return best end
    read = read + page
  end
  return best
end
for _, kind in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local count = 0
  local oldest = nil
  for _, urgent in ipairs({'1', '0'}) do
    local z = waiting(kind, urgent)
    count = count + redis.call('ZCARD', z)
    local d = oldest_due(z)
    if d and (oldest == nil or d < oldest) then oldest = d end
  end
  local stream = qp .. K.STREAM .. kind
  if redis.call('EXISTS', stream) == 1 then
    local pending = redis.call('XPENDING', stream, GROUP, 'IDLE', num(min_idle), '-', '+', 10000)
    for _, p in ipairs(pending) do
      local entry = redis.call('XRANGE', stream, p[1], p[1])
      if entry[1] then
        local j = read_job(qp .. K.JOB .. entry[1][2][2], {'l', 'd'})
        if j.l and tonumber(j.l) <= now then
          count = count + 1
          local d = tonumber(j.d)
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
