local qp = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT',
  tonumber(ARGV[3]), tonumber(ARGV[4]))
local dropped = 0
for _, id in ipairs(ids) do
  local key = qp .. K.WEBHOOK_MESSAGE .. id
  local m = redis.call('HMGET', key, 's', 't', 'e')
  if m[1] ~= 'pending' then
    if m[1] then
      redis.call('DEL', key, qp .. K.ATTEMPTS .. id)
      redis.call('SREM', qp .. K.ENDPOINT_MESSAGES .. m[2] .. '\31' .. m[3], id)
    end
    redis.call('ZREM', KEYS[1], id)
    dropped = dropped + 1
  end
end
return {dropped, #ids}
