local key = qp .. K.JOB .. ARGV[2]
local j = read_job(key, {'x', 'a', 'p', 'c'})
if not j.k then return 0 end
-- ARGV[6]: the claim stamp of the caller's lease ('' unknown; a job stored as claimed,
-- handed over in its process, has h + its due time as its stamp: add_jobs.lua). Another
-- claim took the job over after that lease ended (and may be sending it, or retried it):
-- the job is that claim's to give back, and the stalled first holder's retry or
-- give-back is ignored.
local lease = ARGV[6] or ''
if lease ~= '' and j.c ~= lease then return -1 end
drop_entry(j.k, j.x)
if ARGV[5] == '1' and (tonumber(j.a) or 0) > 0 then redis.call('HINCRBY', key, 'a', -1) end
redis.call('HSET', key, 'd', ARGV[3], 'e', ARGV[4], 'x', '')
redis.call('HDEL', key, 'l', 'c', 'w')
redis.call('ZADD', waiting(j.k, j.p), ARGV[3], ARGV[2])
lower_next(j.k, j.p or '0', ARGV[3])
return 1
