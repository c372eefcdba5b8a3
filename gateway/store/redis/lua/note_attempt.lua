if redis.call('HGET', KEYS[1], 's') ~= 'sending' then return 0 end
redis.call('RPUSH', KEYS[2], 'sending' .. '\31' .. ARGV[1] .. '\31' .. ARGV[2])
return 1
