-- KEYS[1] the alert key of one phone number; ARGV: the oldest time kept (µs, members
-- before it go), the key's TTL in s, then score, member pairs (added if missing).
-- One script, not MULTI ... EXEC: the same three commands, atomic, two fewer per number.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local args = {'ZADD', KEYS[1], 'NX'}
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
redis.call(unpack(args))
return redis.call('EXPIRE', KEYS[1], ARGV[2])
