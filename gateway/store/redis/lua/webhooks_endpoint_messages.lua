local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = qp .. 'wh:m:' .. id
  if ARGV[2] == 'delete' then
    local tenant = redis.call('HGET', key, 't')
    if tenant then redis.call('ZREM', qp .. 'wh:t:' .. tenant, id) end
    redis.call('DEL', key, qp .. 'wh:a:' .. id)
    drop_job(ARGV[5] .. ':' .. id)
    n = n + 1
  elseif redis.call('HGET', key, 's') == 'pending' then
    redis.call('HSET', key, 's', 'failed', 'r', ARGV[3], 'u', ARGV[4])
    redis.call('HDEL', key, 'n')
    redis.call('EXPIRE', key, ARGV[6])
    redis.call('EXPIRE', qp .. 'wh:a:' .. id, ARGV[6])
    drop_job(ARGV[5] .. ':' .. id)
    n = n + 1
  end
end
if ARGV[2] == 'delete' then redis.call('DEL', KEYS[1]) end
return n
