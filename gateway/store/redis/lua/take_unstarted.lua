local key = qp .. K.JOB .. ARGV[2]
local j = redis.call('HMGET', key, 'k', 'x', 'a', 'p', 'l')
if not j[1] then return 0 end
if tonumber(j[3]) > 0 or (j[5] and j[5] ~= '') then return -1 end
drop_entry(j[1], j[2])
redis.call('ZREM', waiting(j[1], j[4]), ARGV[2])
redis.call('DEL', key)
return 1
