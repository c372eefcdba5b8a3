-- KEYS[1] a tenant's directory lock; ARGV: token, ttl in ms. 1 if the token held it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
