local m = redis.call('HMGET', KEYS[1], 's', 't')
if not m[1] or m[2] ~= ARGV[3] then return 0 end
if m[1] ~= 'failed' then return -1 end
redis.call('HSET', KEYS[1], 's', 'pending', 'a', 0, 'n', ARGV[4], 'u', ARGV[4])
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', qp .. K.ATTEMPTS .. ARGV[2])
local job = ARGV[5] .. ':' .. ARGV[2]
drop_job(job)
put_job(job, ARGV[3], ARGV[5], ARGV[2], ARGV[4], 0)
return 1
