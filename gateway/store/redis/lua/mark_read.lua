local tp, ttl, mid, who, at, via = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local ids = redis.call('HGET', tp .. K.RECIPIENTS .. mid, who)
if not ids then return 0 end
local inapp = {}
local any = false
for _, id in ipairs(split(ids, ' ')) do
  local d = redis.call('HMGET', tp .. K.DELIVERY .. id, 's', 'c')
  if d[1] and d[2] ~= 'none' and d[1] ~= 'suppressed' and d[1] ~= 'cancelled' then
    any = true
    if d[2] == 'inapp' then inapp[#inapp + 1] = id end
  end
end
if not any then return 0 end
local rk = tp .. K.READS .. mid
if redis.call('HSETNX', rk, who, at .. '\31' .. via) == 1 then
  redis.call('EXPIRE', rk, ttl)
  feed(tp, 'message.read', {message_id=mid, recipient_id=who, via=via}, at)
end
for _, id in ipairs(inapp) do move(tp, id, 'read', at, via, nil, nil, nil) end
return 1
