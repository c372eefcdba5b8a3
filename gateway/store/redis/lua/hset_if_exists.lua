if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HSET', KEYS[1], unpack(ARGV))
end
return 0
