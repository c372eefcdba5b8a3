local added = 0
for i = 2, #ARGV, 8 do
  local key = qp .. K.JOB .. ARGV[i]
  if redis.call('EXISTS', key) == 0 then
    local f = {'k', ARGV[i + 2], 't', ARGV[i + 1], 'r', ARGV[i + 3], 'd', ARGV[i + 4],
      'a', ARGV[i + 5]}
    if ARGV[i + 6] ~= '' then f[#f + 1] = 'e'; f[#f + 1] = string.sub(ARGV[i + 6], 2) end
    if ARGV[i + 7] == '1' then f[#f + 1] = 'p'; f[#f + 1] = '1' end
    redis.call('HSET', key, unpack(f))
    redis.call('ZADD', waiting(ARGV[i + 2], ARGV[i + 7]), ARGV[i + 4], ARGV[i])
    redis.call('SADD', KEYS[1], ARGV[i + 2])
    added = added + 1
  end
end
return added
