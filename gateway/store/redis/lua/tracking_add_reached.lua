local tp, ttl = ARGV[1], tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV, 5 do
  local h, l = tp .. K.REACHED .. ARGV[i], tp .. K.REACHED_LIST .. ARGV[i]
  if redis.call('HSETNX', h, ARGV[i + 1], ARGV[i + 2]) == 1 then
    redis.call('RPUSH', l, ARGV[i + 1])
    redis.call('EXPIRE', h, ttl)
    redis.call('EXPIRE', l, ttl)
    feed(tp, 'message.reached', ARGV[i + 3], ARGV[i + 4])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
