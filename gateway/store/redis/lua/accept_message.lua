local tp, ttl = ARGV[1], tonumber(ARGV[2])
local cur = redis.call('HMGET', KEYS[1], 'j', 'p')
if cur[1] then return {0, cur[1], cur[2] or ''} end
redis.call('HSET', KEYS[1], 'j', ARGV[4], 'c', ARGV[5])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', tp .. K.MESSAGES, ARGV[5], ARGV[3])
return {1}
