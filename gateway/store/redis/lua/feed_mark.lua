local qp = string.sub(KEYS[1], 1, -(#K.PENDING + 1))
for i = 1, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], 1)
  local job = qp .. K.JOB .. 'webhook_fanout'
  if redis.call('EXISTS', job) == 0 then
    redis.call('HSET', job, 'k', 'webhook_fanout', 't', '', 'r', '', 'd', ARGV[i + 1], 'a', 0)
    redis.call('ZADD', qp .. K.WAITING .. 'webhook_fanout', ARGV[i + 1], 'webhook_fanout')
    redis.call('ZADD', qp .. K.NEXT_DUE, 'LT', ARGV[i + 1], '0\31webhook_fanout')
    redis.call('SADD', qp .. K.KINDS, 'webhook_fanout')
  end
end
return 1
