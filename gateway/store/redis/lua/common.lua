-- Shared by the tenant scripts; can_move() is generated before this block
-- (scripts.status_rule, from gateway.models.can_transition).
local function opt(v)
  if v == nil or v == '' then return nil end
  return string.sub(v, 2)
end
local function split(s, sep)
  local out, i = {}, 1
  while true do
    local j = string.find(s, sep, i, true)
    if not j then out[#out + 1] = string.sub(s, i); return out end
    out[#out + 1] = string.sub(s, i, j - 1)
    i = j + 1
  end
end
-- The webhook change feed (see redis/webhooks.py): only while the tenant has an enabled
-- endpoint, into the tenant's own feed (its slot), committed with the change. The
-- script then reports the change to the caller (tenant_script below), which marks the
-- tenant pending in the queue's slot: a second step, as Cluster allows no other.
local function feed(tp, kind, data, at)
  if redis.call('EXISTS', tp .. K.WEBHOOKS_ON) == 0 then return nil end
  local seq = redis.call('INCR', tp .. K.TENANT_SEQ)
  redis.call('ZADD', tp .. K.TENANT_FEED, seq, seq .. '\31' .. kind .. '\31' .. at .. '\31'
    .. (type(data) == 'string' and data or cjson.encode(data)))
  FED_TP = tp
  if FED_AT == nil or tonumber(at) < tonumber(FED_AT) then FED_AT = at end
  return seq
end
local function move(tp, id, status, at, detail, reason, pid, segs)
  local key = tp .. K.DELIVERY .. id
  local cur = redis.call('HMGET', key, 's', 'c', 'm', 'w')
  local old = cur[1]
  if not old then return 0 end
  if can_move(old, status) then
    local f = {'s', status, 'u', at}
    if reason then f[#f + 1] = 'r'; f[#f + 1] = reason end
    if pid then f[#f + 1] = 'p'; f[#f + 1] = pid end
    if segs then f[#f + 1] = 'n'; f[#f + 1] = segs end
    redis.call('HSET', key, unpack(f))
    local h = status .. '\31' .. at
    if detail then h = h .. '\31' .. detail end
    redis.call('RPUSH', tp .. K.HISTORY .. id, h)
    redis.call('HINCRBY', tp .. K.COUNTS .. cur[3], old, -1)
    redis.call('HINCRBY', tp .. K.COUNTS .. cur[3], status, 1)
    redis.call('HINCRBY', tp .. K.STATS, cur[2] .. '\31' .. old, -1)
    redis.call('HINCRBY', tp .. K.STATS, cur[2] .. '\31' .. status, 1)
    if status ~= 'planned' and status ~= 'queued' and status ~= 'sending' then
      feed(tp, 'delivery.updated', {message_id=cur[3], delivery_id=id, recipient_id=cur[4],
        channel=cur[2], status=status, reason=redis.call('HGET', key, 'r') or cjson.null}, at)
    end
    return 1
  end
  if pid or segs then
    local f = {}
    if pid then f[#f + 1] = 'p'; f[#f + 1] = pid end
    if segs then f[#f + 1] = 'n'; f[#f + 1] = segs end
    redis.call('HSET', key, unpack(f))
  end
  return 0
end
