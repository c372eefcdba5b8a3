for i = 2, #ARGV do
  local key = qp .. K.JOB .. ARGV[i]
  local j = redis.call('HMGET', key, 'k', 'x', 'p')
  if j[1] then
    drop_entry(j[1], j[2])
    redis.call('ZREM', waiting(j[1], j[3]), ARGV[i])
    redis.call('DEL', key)
  end
end
return 1
