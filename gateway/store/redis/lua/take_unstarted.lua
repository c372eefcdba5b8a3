local key = qp .. K.JOB .. ARGV[2]
local j = read_job(key, {'x', 'a', 'p', 'l'})
if not j.k then return 0 end
if (tonumber(j.a) or 0) > 0 or (j.l and j.l ~= '') then return -1 end
drop_entry(j.k, j.x)
redis.call('ZREM', waiting(j.k, j.p), ARGV[2])
redis.call('DEL', key)
return 1
