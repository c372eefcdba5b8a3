local tp, ttl, mid, id = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local h, l = tp .. K.EXPLANATIONS .. mid, tp .. K.EXPLANATION_LIST .. mid
if redis.call('HSETNX', h, id, ARGV[5]) == 0 then return 0 end
redis.call('RPUSH', l, id)
redis.call('EXPIRE', h, ttl)
redis.call('EXPIRE', l, ttl)
if ARGV[7] then feed(tp, 'absence.explained', ARGV[7], ARGV[6]) end
return 1
