local problems = {}
for i = 2, #KEYS do
  local owner = redis.call('HGET', KEYS[i], 'message_id')
  if not owner then
    table.insert(problems, i - 1); table.insert(problems, 'unknown')
  elseif owner ~= '' and owner ~= ARGV[1] then
    table.insert(problems, i - 1); table.insert(problems, 'used')
  end
end
if #problems > 0 then return problems end
for i = 2, #KEYS do
  if redis.call('HGET', KEYS[i], 'message_id') == '' then
    redis.call('HSET', KEYS[i], 'message_id', ARGV[1], 'used_at', ARGV[2], 'position', i - 2)
    redis.call('EXPIRE', KEYS[i], tonumber(ARGV[3]))
    redis.call('ZADD', KEYS[1], i - 2, redis.call('HGET', KEYS[i], 'id'))
  end
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return {}
