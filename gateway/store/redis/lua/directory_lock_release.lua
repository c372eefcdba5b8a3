-- KEYS[1] a tenant's directory lock; ARGV[1] the holder's token: freed only by it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
