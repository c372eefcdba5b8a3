-- ARGV: qp, then 9 per job: id tenant kind ref due attempts error lane score (the
-- score orders the waiting set: gateway/store/lanes.py, order_at).
-- Per new job one HSETNX (the packed fields, read_job; no-op for an existing job), an
-- HSET only for attempts or an error carried over (a job with attempts is stored as
-- claimed, gateway/urgent_handoff.py: its due time is its lease's end, l, and, marked
-- h so that no claim's stamp can equal it, its claim stamp c, which the process that
-- stored it holds: redis/jobs.py, hold_handed); per call one ZADD per waiting set,
-- one ZADD LT of the sets' hints (P:{q}:next, by the same score) and one SADD.
local added = 0
local waits, kinds, firsts = {}, {}, {}
for i = 2, #ARGV, 9 do
  local key = qp .. K.JOB .. ARGV[i]
  local packed = ARGV[i + 2] .. '\31' .. ARGV[i + 1] .. '\31' .. ARGV[i + 4] .. '\31'
    .. ARGV[i + 7] .. '\31' .. ARGV[i + 3]
  if redis.call('HSETNX', key, 'k', packed) == 1 then
    local f = {}
    if ARGV[i + 5] ~= '0' then
      f[#f + 1] = 'a'; f[#f + 1] = ARGV[i + 5]
      f[#f + 1] = 'l'; f[#f + 1] = ARGV[i + 4]; f[#f + 1] = 'c'; f[#f + 1] = 'h' .. ARGV[i + 4]
    end
    if ARGV[i + 6] ~= '' then f[#f + 1] = 'e'; f[#f + 1] = string.sub(ARGV[i + 6], 2) end
    if #f > 0 then redis.call('HSET', key, unpack(f)) end
    local z = waiting(ARGV[i + 2], ARGV[i + 7])
    push(waits, z, ARGV[i + 8])
    push(waits, z, ARGV[i])
    local h = hint(ARGV[i + 7], ARGV[i + 2])
    if not firsts[h] or tonumber(ARGV[i + 8]) < tonumber(firsts[h]) then firsts[h] = ARGV[i + 8] end
    kinds[ARGV[i + 2]] = true
    added = added + 1
  end
end
bulk(waits, function(z, pairs_) redis.call('ZADD', z, unpack(pairs_)) end)
local lows = {'ZADD', qp .. K.NEXT_DUE, 'LT'}
for h, score in pairs(firsts) do lows[#lows + 1] = score; lows[#lows + 1] = h end
if #lows > 3 then redis.call(unpack(lows)) end
local names = {}
for kind in pairs(kinds) do names[#names + 1] = kind end
if #names > 0 then redis.call('SADD', KEYS[1], unpack(names)) end
return added
