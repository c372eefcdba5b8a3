-- Per job one HMGET; per call one XACK and one XDEL per stream, one ZREM per waiting
-- set, one DEL.
local acks, waits, dels = {}, {}, {}
for i = 2, #ARGV do
  local key = qp .. 'j:' .. ARGV[i]
  local j = redis.call('HMGET', key, 'k', 'x', 'p')
  if j[1] then
    if j[2] and j[2] ~= '' then push(acks, j[1], j[2]) end
    push(waits, waiting(j[1], j[3]), ARGV[i])
    dels[#dels + 1] = key
  end
end
bulk(acks, function(kind, eids)
  redis.call('XACK', qp .. 's:' .. kind, GROUP, unpack(eids))
  redis.call('XDEL', qp .. 's:' .. kind, unpack(eids))
end)
bulk(waits, function(z, ids) redis.call('ZREM', z, unpack(ids)) end)
each_chunk(dels, 200, function(keys) redis.call('DEL', unpack(keys)) end)
return 1
