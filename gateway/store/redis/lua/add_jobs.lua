-- ARGV: qp, then 9 per job: id tenant kind ref due attempts error lane score (the
-- score orders the waiting set: gateway/store/lanes.py, order_at).
-- Per job EXISTS + HSET; per call one ZADD per waiting set and one SADD.
local added = 0
local waits, kinds = {}, {}
for i = 2, #ARGV, 9 do
  local key = qp .. K.JOB .. ARGV[i]
  if redis.call('EXISTS', key) == 0 then
    local f = {'k', ARGV[i + 2], 't', ARGV[i + 1], 'r', ARGV[i + 3], 'd', ARGV[i + 4],
      'a', ARGV[i + 5]}
    if ARGV[i + 6] ~= '' then f[#f + 1] = 'e'; f[#f + 1] = string.sub(ARGV[i + 6], 2) end
    if ARGV[i + 7] == '1' then f[#f + 1] = 'p'; f[#f + 1] = '1' end
    redis.call('HSET', key, unpack(f))
    local z = waiting(ARGV[i + 2], ARGV[i + 7])
    push(waits, z, ARGV[i + 8])
    push(waits, z, ARGV[i])
    kinds[ARGV[i + 2]] = true
    added = added + 1
  end
end
bulk(waits, function(z, pairs_) redis.call('ZADD', z, unpack(pairs_)) end)
local names = {}
for kind in pairs(kinds) do names[#names + 1] = kind end
if #names > 0 then redis.call('SADD', KEYS[1], unpack(names)) end
return added
