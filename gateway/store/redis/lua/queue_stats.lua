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
for _, kind in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local count = 0
  local oldest = nil
  for _, urgent in ipairs({'1', '0'}) do
    local z = waiting(kind, urgent)
    count = count + redis.call('ZCARD', z)
    -- The due time of the lane's next job (the score may be earlier: lanes.order_at).
    local first = redis.call('ZRANGEBYSCORE', z, '-inf', ARGV[2], 'LIMIT', 0, 1)[1]
    local d = first and tonumber(read_job(qp .. K.JOB .. first, {'d'}).d)
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
