local cur = redis.call('GET', KEYS[1])
if (not cur) or ARGV[1] > cur then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
return 1
