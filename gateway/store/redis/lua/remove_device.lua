local current = redis.call('HGET', tp .. K.DEVICES .. ARGV[2], ARGV[3])
if not current then return 0 end
unindex(current)
redis.call('HDEL', tp .. K.DEVICES .. ARGV[2], ARGV[3])
redis.call('INCRBY', KEYS[1], ARGV[4])  -- keys.version_step()
return 1
