local key = qp .. K.JOB .. ARGV[2]
local j = redis.call('HMGET', key, 'k', 'x', 'a', 'p')
if not j[1] then return 0 end
drop_entry(j[1], j[2])
if ARGV[5] == '1' and tonumber(j[3]) > 0 then redis.call('HINCRBY', key, 'a', -1) end
redis.call('HSET', key, 'd', ARGV[3], 'e', ARGV[4], 'x', '')
redis.call('HDEL', key, 'l', 'c')
redis.call('ZADD', waiting(j[1], j[4]), ARGV[3], ARGV[2])
return 1
