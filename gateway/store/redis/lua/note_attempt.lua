local cur = redis.call('HMGET', KEYS[1], 's', 'hn')
if cur[1] ~= 'sending' then return 0 end
local n = (tonumber(cur[2]) or 0) + 1
redis.call('HSET', KEYS[1], 'hn', n, 'h' .. n, 'sending' .. '\31' .. ARGV[1] .. '\31' .. ARGV[2])
return 1
