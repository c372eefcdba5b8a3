if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[2]) then return 1 end
local n = tonumber(ARGV[5])
local i = 6
for _ = 1, n do
  put_message(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5],
    ARGV[i + 6], ARGV[i + 7], ARGV[i + 8], ARGV[i + 9], ARGV[i + 10])
  i = i + 11
end
while i <= #ARGV do
  put_job(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5])
  i = i + 6
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('ZREMRANGEBYSCORE', qp .. K.FEED, '-inf', ARGV[3])
if redis.call('ZCARD', qp .. K.FEED) > 0 then return 1 end
if redis.call('HLEN', qp .. K.PENDING) > 0 then return 1 end
drop_job(ARGV[4])
return 0
