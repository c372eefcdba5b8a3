local key = KEYS[1]
if redis.call('HGET', key, 's') ~= 'pending' then return 0 end
local f = {'s', ARGV[5], 'u', ARGV[10]}
if ARGV[8] ~= '' then f[#f + 1] = 'r'; f[#f + 1] = string.sub(ARGV[8], 2)
else redis.call('HDEL', key, 'r') end
if ARGV[9] ~= '' then f[#f + 1] = 'c'; f[#f + 1] = ARGV[9] end
local pending = ARGV[5] == 'pending'
if pending and ARGV[7] ~= '' then f[#f + 1] = 'n'; f[#f + 1] = ARGV[7]
else redis.call('HDEL', key, 'n') end
redis.call('HSET', key, unpack(f))
redis.call('HINCRBY', key, 'a', tonumber(ARGV[6]))
if ARGV[4] ~= '' then redis.call('RPUSH', qp .. K.ATTEMPTS .. ARGV[2], ARGV[4]) end
local job = qp .. K.JOB .. ARGV[3]
if pending and ARGV[7] ~= '' then
  local j = read_job(job, {'x'})
  if j.k then
    drop_entry(j.k, j.x)
    redis.call('HSET', job, 'd', ARGV[7], 'x', '')
    if ARGV[8] ~= '' then redis.call('HSET', job, 'e', string.sub(ARGV[8], 2))
    else redis.call('HDEL', job, 'e') end
    redis.call('HDEL', job, 'l', 'c')
    redis.call('ZADD', qp .. K.WAITING .. j.k, ARGV[7], ARGV[3])
    lower_next(j.k, '0', ARGV[7])
  end
else
  drop_job(ARGV[3])
end
if not pending then
  redis.call('EXPIRE', key, ARGV[11])
  redis.call('EXPIRE', qp .. K.ATTEMPTS .. ARGV[2], ARGV[11])
end
return 1
