-- ARGV: qp, then 4 per job: id, and its kind, stream entry and lane if the caller
-- holds it since its claim ('' '' '' otherwise: read from the job hash, one HMGET).
-- Per call one XACK and one XDEL per stream, one ZREM per waiting set, one DEL.
-- A job the caller names with its stream entry (held since its claim) left its waiting
-- set at that claim (claim.lua moves it in the same script), so it takes no ZREM; one
-- taken over after its lease and retried by another process is back in its set, without
-- a hash once ended here, and the claim that meets it drops it (claim.lua, take).
local acks, waits, dels = {}, {}, {}
local function finish(id, kind, eid, urgent, named)
  if eid and eid ~= '' then push(acks, kind, eid) end
  if not (named and eid ~= '') then push(waits, waiting(kind, urgent), id) end
  dels[#dels + 1] = qp .. K.JOB .. id
end
for i = 2, #ARGV, 4 do
  if ARGV[i + 1] ~= '' then
    finish(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], true)
  else
    local j = read_job(qp .. K.JOB .. ARGV[i], {'x', 'p'})
    if j.k then finish(ARGV[i], j.k, j.x, j.p, false) end
  end
end
bulk(acks, function(kind, eids)
  redis.call('XACK', qp .. K.STREAM .. kind, GROUP, unpack(eids))
  redis.call('XDEL', qp .. K.STREAM .. kind, unpack(eids))
end)
bulk(waits, function(z, ids) redis.call('ZREM', z, unpack(ids)) end)
each_chunk(dels, 200, function(keys) redis.call('DEL', unpack(keys)) end)
return 1
