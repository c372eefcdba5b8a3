local qp, tenant = ARGV[1], ARGV[2]
local last = tonumber(redis.call('HGET', KEYS[1], tenant) or '0')
for i = 3, #ARGV, 2 do
  local tseq = tonumber(ARGV[i])
  if tseq > last then
    local seq = redis.call('INCR', qp .. K.SEQ)
    redis.call('ZADD', qp .. K.FEED, seq, seq .. '\31' .. tenant .. '\31' .. ARGV[i + 1])
    last = tseq
  end
end
redis.call('HSET', KEYS[1], tenant, last)
return last
