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
-- Counters (per message and status, per channel and status) summed over a script call
-- and written at its end (flush_counts, called by tenant_script): a key with one or two
-- fields changed takes an HINCRBY each, a key with more one HMGET and one HSET (the
-- script is atomic, so the read and write are one increment; an outcome batch moving
-- three channels' sends changes six fields of the channel counters).
local COUNTS = {}
local function count(key, field, n)
  local c = COUNTS[key]
  if not c then c = {}; COUNTS[key] = c end
  c[field] = (c[field] or 0) + n
end
local HMGET_FROM = 3  -- fields changed in one key from which HMGET + HSET is fewer commands
local function add_counts(key, fields)
  local names, deltas = {}, {}
  for field, n in pairs(fields) do
    if n ~= 0 then names[#names + 1] = field; deltas[#deltas + 1] = n end
  end
  if #names < HMGET_FROM then
    for i, field in ipairs(names) do redis.call('HINCRBY', key, field, deltas[i]) end
    return
  end
  local old = redis.call('HMGET', key, unpack(names))
  local args = {'HSET', key}
  for i, field in ipairs(names) do
    args[#args + 1] = field
    args[#args + 1] = string.format('%.0f', (tonumber(old[i]) or 0) + deltas[i])
  end
  redis.call(unpack(args))
end
local function flush_counts()
  for key, fields in pairs(COUNTS) do add_counts(key, fields) end
  COUNTS = {}
end
-- The webhook change feed (see redis/webhooks.py): only while the tenant has an enabled
-- endpoint, into the tenant's own feed (its slot), committed with the change. The
-- script then reports the change to the caller (tenant_script below), which marks the
-- tenant pending in the queue's slot: a second step, as Cluster allows no other.
-- Whether a tenant feeds, asked once per script call (nothing in one call turns it on).
local FEEDS = {}
local function feed(tp, kind, data, at)
  if FEEDS[tp] == nil then FEEDS[tp] = redis.call('EXISTS', tp .. K.WEBHOOKS_ON) == 1 end
  if not FEEDS[tp] then return nil end
  local seq = redis.call('INCR', tp .. K.TENANT_SEQ)
  redis.call('ZADD', tp .. K.TENANT_FEED, seq, seq .. '\31' .. kind .. '\31' .. at .. '\31'
    .. (type(data) == 'string' and data or cjson.encode(data)))
  FED_TP = tp
  if FED_AT == nil or tonumber(at) < tonumber(FED_AT) then FED_AT = at end
  return seq
end
-- History rows of a delivery live in its hash (hn rows, h1..hn; lists h:<id> of older
-- versions come first, see redis/deliveries.py history()).
local function move(tp, id, status, at, detail, reason, pid, segs)
  local key = tp .. K.DELIVERY .. id
  local cur = redis.call('HMGET', key, 's', 'c', 'm', 'w', 'r', 'hn')
  local old = cur[1]
  if not old then return 0 end
  local f = {}
  if pid then f[#f + 1] = 'p'; f[#f + 1] = pid end
  if segs then f[#f + 1] = 'n'; f[#f + 1] = segs end
  if not can_move(old, status) then
    if #f > 0 then redis.call('HSET', key, unpack(f)) end
    return 0
  end
  local h = status .. '\31' .. at
  if detail then h = h .. '\31' .. detail end
  local n = (tonumber(cur[6]) or 0) + 1
  f[#f + 1] = 's'; f[#f + 1] = status; f[#f + 1] = 'u'; f[#f + 1] = at
  f[#f + 1] = 'hn'; f[#f + 1] = n; f[#f + 1] = 'h' .. n; f[#f + 1] = h
  if reason then f[#f + 1] = 'r'; f[#f + 1] = reason end
  redis.call('HSET', key, unpack(f))
  count(tp .. K.COUNTS .. cur[3], old, -1)
  count(tp .. K.COUNTS .. cur[3], status, 1)
  count(tp .. K.STATS, cur[2] .. '\31' .. old, -1)
  count(tp .. K.STATS, cur[2] .. '\31' .. status, 1)
  if status ~= 'planned' and status ~= 'queued' and status ~= 'sending' then
    feed(tp, 'delivery.updated', {message_id=cur[3], delivery_id=id, recipient_id=cur[4],
      channel=cur[2], status=status, reason=reason or cur[5] or cjson.null}, at)
  end
  return 1
end
