local function put_message(id, tenant, endpoint, doc, status, attempts, next_at, reason,
    code, created, updated)
  local key = qp .. K.WEBHOOK_MESSAGE .. id
  if redis.call('EXISTS', key) == 1 then return 0 end
  local f = {'j', doc, 's', status, 'a', attempts, 'u', updated, 't', tenant, 'e', endpoint}
  if next_at ~= '' then f[#f + 1] = 'n'; f[#f + 1] = next_at end
  if reason ~= '' then f[#f + 1] = 'r'; f[#f + 1] = string.sub(reason, 2) end
  if code ~= '' then f[#f + 1] = 'c'; f[#f + 1] = code end
  redis.call('HSET', key, unpack(f))
  redis.call('ZADD', qp .. K.TENANT_MESSAGES .. tenant, created, id)
  redis.call('SADD', qp .. K.ENDPOINT_MESSAGES .. tenant .. '\31' .. endpoint, id)
  return 1
end
local function drop_job(id)
  local key = qp .. K.JOB .. id
  local j = read_job(key, {'x'})
  if j.k then
    drop_entry(j.k, j.x)
    redis.call('ZREM', qp .. K.WAITING .. j.k, id)
    redis.call('DEL', key)
  end
end
local function put_job(id, tenant, kind, ref, due, attempts)
  local key = qp .. K.JOB .. id
  if redis.call('EXISTS', key) == 1 then return end
  redis.call('HSET', key, 'k', kind, 't', tenant, 'r', ref, 'd', due, 'a', attempts)
  redis.call('ZADD', qp .. K.WAITING .. kind, due, id)
  lower_next(kind, '0', due)
  redis.call('SADD', qp .. K.KINDS, kind)
end
