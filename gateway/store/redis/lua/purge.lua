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
