local tp, cutoff, budget = ARGV[1], ARGV[2], tonumber(ARGV[3])
local removed, ids = 0, {}
local more = 0
local old = redis.call('ZRANGEBYSCORE', tp .. K.MESSAGES, '-inf', '(' .. cutoff, 'LIMIT', 0, 100)
for _, mid in ipairs(old) do
  if removed >= budget then more = 1; break end
  local mr = tp .. K.RECIPIENTS .. mid
  local rows = redis.call('HGETALL', mr)
  local done = true
  for i = 1, #rows, 2 do
    if removed >= budget then done = false; break end
    for id in string.gmatch(rows[i + 1], '%S+') do
      local key = tp .. K.DELIVERY .. id
      local d = redis.call('HMGET', key, 's', 'c')
      if d[1] then
        redis.call('HINCRBY', tp .. K.STATS, d[2] .. '\31' .. d[1], -1)
        if d[2] == 'inapp' then redis.call('ZREM', tp .. K.INBOX .. rows[i], mid) end
      end
      redis.call('DEL', key, tp .. K.HISTORY .. id)
      removed = removed + 1
      ids[#ids + 1] = id
    end
    redis.call('HDEL', mr, rows[i])
  end
  if not done then more = 1; break end
  for _, rid in ipairs(redis.call('ZRANGE', tp .. K.MESSAGE_REPLIES .. mid, 0, -1)) do
    redis.call('DEL', tp .. K.REPLY .. rid)
    redis.call('ZREM', tp .. K.REPLIES, rid)
  end
  redis.call('DEL', tp .. K.MESSAGE .. mid, mr, tp .. K.COUNTS .. mid, tp .. K.READS .. mid,
    tp .. K.MESSAGE_REPLIES .. mid, tp .. K.REACHED .. mid, tp .. K.REACHED_LIST .. mid)
  redis.call('ZREM', tp .. K.MESSAGES, mid)
end
if more == 0 and #old == 100 then more = 1 end
if more == 0 then
  local reps = redis.call('ZRANGEBYSCORE', tp .. K.REPLIES, '-inf', '(' .. cutoff, 'LIMIT', 0, 1000)
  for _, rid in ipairs(reps) do
    redis.call('DEL', tp .. K.REPLY .. rid)
    redis.call('ZREM', tp .. K.REPLIES, rid)
  end
  if #reps == 1000 then more = 1 end
end
local out = {removed, more}
for _, id in ipairs(ids) do out[#out + 1] = id end
return out
