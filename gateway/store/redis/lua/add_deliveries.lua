-- Per delivery: EXISTS, HSET (its first history row included), EXPIRE; an in-app one
-- ZADD + EXPIRE of the inbox. Per call: the recipients' index (HMGET + HSET per message),
-- the latest delivery per address (MGET, then SET where newer) and the counters.
local tp, ttl = ARGV[1], tonumber(ARGV[2])
local new = 0
local recipients = {}  -- message -> {order = {who...}, ids = {who -> 'id id'}}
local latest = {}      -- la key -> greatest value of this call
local latest_keys = {}
local scores = {}      -- message -> its creation time (the inbox score) or false
local function add_recipient(mid, who, id)
  local r = recipients[mid]
  if not r then r = {order = {}, ids = {}}; recipients[mid] = r end
  if r.ids[who] then r.ids[who] = r.ids[who] .. ' ' .. id
  else r.order[#r.order + 1] = who; r.ids[who] = id end
end
local function note_latest(lk, value)
  if latest[lk] == nil then latest_keys[#latest_keys + 1] = lk end
  if latest[lk] == nil or value > latest[lk] then latest[lk] = value end
end
local function to_inbox(mid, who, at)
  if scores[mid] == nil then scores[mid] = redis.call('HGET', tp .. 'm:' .. mid, 'c') or false end
  local ib = tp .. 'ib:' .. who
  redis.call('ZADD', ib, scores[mid] or at, mid)  -- short members keep a compact listpack
  redis.call('EXPIRE', ib, ttl)
end
local function add(meta, doc)
  local f = split(meta, '\31')
  local id, mid, who, channel, status, created = f[1], f[2], f[3], f[4], f[5], f[6]
  local key = tp .. 'd:' .. id
  if redis.call('EXISTS', key) == 1 then return end
  local at = string.match(created, '^0*(%d+)$')
  local reason = opt(f[9])
  local first = status .. '\31' .. at
  if reason then first = first .. '\31' .. reason end
  local h = {'j', doc, 's', status, 'c', channel, 'm', mid, 'w', who, 'u', f[7],
    'hn', 1, 'h1', first}
  if f[8] ~= '' then h[#h + 1] = 'nb'; h[#h + 1] = f[8] end
  if reason then h[#h + 1] = 'r'; h[#h + 1] = reason end
  if opt(f[10]) then h[#h + 1] = 'p'; h[#h + 1] = opt(f[10]) end
  if opt(f[11]) then h[#h + 1] = 'n'; h[#h + 1] = opt(f[11]) end
  redis.call('HSET', key, unpack(h))
  redis.call('EXPIRE', key, ttl)
  add_recipient(mid, who, id)
  count(tp .. 'mc:' .. mid, status, 1)
  count(tp .. 'stats', channel .. '\31' .. status, 1)
  if f[12] ~= '' then note_latest(tp .. 'la:' .. f[12], created .. '\31' .. id) end
  if channel == 'inapp' then to_inbox(mid, who, at) end
  if status ~= 'planned' and status ~= 'queued' and status ~= 'sending' then
    feed(tp, 'delivery.updated', {message_id=mid, delivery_id=id, recipient_id=who,
      channel=channel, status=status, reason=reason or cjson.null}, at)
  end
  new = new + 1
end
local function index_recipients(mid, r)
  local mr = tp .. 'mr:' .. mid
  each_chunk(r.order, 200, function(whos)
    local cur = redis.call('HMGET', mr, unpack(whos))
    local f = {}
    for n, who in ipairs(whos) do
      f[#f + 1] = who
      f[#f + 1] = cur[n] and (cur[n] .. ' ' .. r.ids[who]) or r.ids[who]
    end
    redis.call('HSET', mr, unpack(f))
  end)
  redis.call('EXPIRE', mr, ttl)
  redis.call('EXPIRE', tp .. 'mc:' .. mid, ttl)
end
local function keep_latest()
  each_chunk(latest_keys, 200, function(keys)
    local cur = redis.call('MGET', unpack(keys))
    for n, lk in ipairs(keys) do
      if (not cur[n]) or latest[lk] > cur[n] then
        redis.call('SET', lk, latest[lk], 'EX', ttl)
      end
    end
  end)
end
for i = 3, #ARGV, 2 do add(ARGV[i], ARGV[i + 1]) end
for mid, r in pairs(recipients) do index_recipients(mid, r) end
keep_latest()
return new
