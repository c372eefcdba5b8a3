-- Per delivery: HSET (its first history row included) + EXPIRE; an in-app one ZADD +
-- EXPIRE of the inbox. Per call and message: the recipients' index (HMGET, which also
-- tells which deliveries exist: a delivery and its index entry are written together
-- here and removed together by the purge, so no EXISTS per delivery, then HSET); per
-- call: the latest delivery per address (MGET, then SET where newer) and the counters.
local tp, ttl = ARGV[1], tonumber(ARGV[2])
local new = 0
local messages, order = {}, {}  -- message -> {whos = {who...}, ids = {who -> 'id id'}}
local known = {}                 -- delivery id -> true: stored, or added by this call
local latest, latest_keys = {}, {}  -- la key -> greatest value of this call
local scores = {}                -- message -> its creation time (the inbox score) or false
local function recipients(mid)
  local r = messages[mid]
  if not r then r = {whos = {}, ids = {}, seen = {}}; messages[mid] = r; order[#order + 1] = mid end
  return r
end
-- The recipients' index of each message named: which delivery ids it already holds.
local function read_index(rows)
  for _, f in ipairs(rows) do
    local r = recipients(f[2])
    if not r.seen[f[3]] then r.seen[f[3]] = true; r.whos[#r.whos + 1] = f[3] end
  end
  for _, mid in ipairs(order) do
    local r = messages[mid]
    each_chunk(r.whos, 200, function(whos)
      local cur = redis.call('HMGET', tp .. K.RECIPIENTS .. mid, unpack(whos))
      for n, who in ipairs(whos) do
        r.ids[who] = cur[n] or false
        for id in string.gmatch(cur[n] or '', '%S+') do known[id] = true end
      end
    end)
    r.whos, r.added = {}, {}
  end
end
local function note_latest(lk, value)
  if latest[lk] == nil then latest_keys[#latest_keys + 1] = lk end
  if latest[lk] == nil or value > latest[lk] then latest[lk] = value end
end
local function to_inbox(mid, who, at)
  if scores[mid] == nil then scores[mid] = redis.call('HGET', tp .. K.MESSAGE .. mid, 'c') or false end
  local ib = tp .. K.INBOX .. who
  redis.call('ZADD', ib, scores[mid] or at, mid)  -- short members keep a compact listpack
  redis.call('EXPIRE', ib, ttl)
end
local function add(f, doc)
  local id, mid, who, channel, status, created = f[1], f[2], f[3], f[4], f[5], f[6]
  if known[id] then return end
  known[id] = true
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
  local key = tp .. K.DELIVERY .. id
  redis.call('HSET', key, unpack(h))
  redis.call('EXPIRE', key, ttl)
  local r = messages[mid]
  if not r.added[who] then r.added[who] = true; r.whos[#r.whos + 1] = who end
  r.ids[who] = r.ids[who] and (r.ids[who] .. ' ' .. id) or id
  count(tp .. K.COUNTS .. mid, status, 1)
  count(tp .. K.STATS, channel .. '\31' .. status, 1)
  if f[12] ~= '' then note_latest(tp .. K.LATEST .. f[12], created .. '\31' .. id) end
  if channel == 'inapp' then to_inbox(mid, who, at) end
  if status ~= 'planned' and status ~= 'queued' and status ~= 'sending' then
    feed(tp, 'delivery.updated', {message_id=mid, delivery_id=id, recipient_id=who,
      channel=channel, status=status, reason=reason or cjson.null}, at)
  end
  new = new + 1
end
local function write_index(mid, r)
  if #r.whos == 0 then return end
  local mr = tp .. K.RECIPIENTS .. mid
  each_chunk(r.whos, 200, function(whos)
    local f = {}
    for _, who in ipairs(whos) do f[#f + 1] = who; f[#f + 1] = r.ids[who] end
    redis.call('HSET', mr, unpack(f))
  end)
  redis.call('EXPIRE', mr, ttl)
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
local rows = {}
for i = 3, #ARGV, 2 do rows[#rows + 1] = split(ARGV[i], '\31') end
read_index(rows)
for n, f in ipairs(rows) do add(f, ARGV[2 + 2 * n]) end
for _, mid in ipairs(order) do write_index(mid, messages[mid]) end
flush_counts()  -- now, so that the counts per message exist for their EXPIRE
for _, mid in ipairs(order) do
  if #messages[mid].whos > 0 then redis.call('EXPIRE', tp .. K.COUNTS .. mid, ttl) end
end
keep_latest()
return new
