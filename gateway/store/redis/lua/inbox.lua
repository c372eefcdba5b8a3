local tp, who, max, now, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {}
local function consider(mid)
  local d = nil
  for id in string.gmatch(redis.call('HGET', tp .. K.RECIPIENTS .. mid, who) or '', '%S+') do
    local h = redis.call('HMGET', tp .. K.DELIVERY .. id, 's', 'j', 'nb', 'c')
    if h[4] == 'inapp' then d = h end
  end
  if not d then
    redis.call('ZREM', KEYS[1], mid)  -- the delivery expired or was purged
    return 1
  end
  if d[1] == 'suppressed' or d[1] == 'cancelled' then return end
  if d[3] and tonumber(d[3]) > now then return end
  local m = redis.call('HGET', tp .. K.MESSAGE .. mid, 'j')
  if not m then return end
  out[#out + 1] = d[1]
  out[#out + 1] = d[2]
  out[#out + 1] = m
  out[#out + 1] = redis.call('HGET', tp .. K.READS .. mid, who) or ''
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
