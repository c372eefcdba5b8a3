local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = qp .. K.WEBHOOK_MESSAGE .. id
  if ARGV[2] == 'delete' then
    local tenant = redis.call('HGET', key, 't')
    if tenant then redis.call('ZREM', qp .. K.TENANT_MESSAGES .. tenant, id) end
    redis.call('DEL', key, qp .. K.ATTEMPTS .. id)
    drop_job(ARGV[5] .. ':' .. id)
    n = n + 1
  elseif redis.call('HGET', key, 's') == 'pending' then
    redis.call('HSET', key, 's', 'failed', 'r', ARGV[3], 'u', ARGV[4])
    redis.call('HDEL', key, 'n')
    redis.call('EXPIRE', key, ARGV[6])
    redis.call('EXPIRE', qp .. K.ATTEMPTS .. id, ARGV[6])
    drop_job(ARGV[5] .. ':' .. id)
    n = n + 1
  end
end
if ARGV[2] == 'delete' then redis.call('DEL', KEYS[1]) end
return n
