local tp, ttl = ARGV[1], tonumber(ARGV[2])
local new = 0
local touched = {}
for i = 3, #ARGV, 2 do
  local f = split(ARGV[i], '\31')
  local id, mid, who, channel, status, created = f[1], f[2], f[3], f[4], f[5], f[6]
  local key = tp .. K.DELIVERY .. id
  if redis.call('EXISTS', key) == 0 then
    local h = {'j', ARGV[i + 1], 's', status, 'c', channel, 'm', mid, 'w', who, 'u', f[7]}
    if f[8] ~= '' then h[#h + 1] = 'nb'; h[#h + 1] = f[8] end
    local reason = opt(f[9])
    if reason then h[#h + 1] = 'r'; h[#h + 1] = reason end
    if opt(f[10]) then h[#h + 1] = 'p'; h[#h + 1] = opt(f[10]) end
    if opt(f[11]) then h[#h + 1] = 'n'; h[#h + 1] = opt(f[11]) end
    redis.call('HSET', key, unpack(h))
    redis.call('EXPIRE', key, ttl)
    local first = status .. '\31' .. string.match(created, '^0*(%d+)$')
    if reason then first = first .. '\31' .. reason end
    redis.call('RPUSH', tp .. K.HISTORY .. id, first)
    redis.call('EXPIRE', tp .. K.HISTORY .. id, ttl)
    local ids = redis.call('HGET', tp .. K.RECIPIENTS .. mid, who)
    if ids then ids = ids .. ' ' .. id else ids = id end
    redis.call('HSET', tp .. K.RECIPIENTS .. mid, who, ids)
    redis.call('HINCRBY', tp .. K.COUNTS .. mid, status, 1)
    redis.call('HINCRBY', tp .. K.STATS, channel .. '\31' .. status, 1)
    touched[mid] = 1
    if f[12] ~= '' then
      local lk = tp .. K.LATEST .. f[12]
      local value = created .. '\31' .. id
      local cur = redis.call('GET', lk)
      if (not cur) or value > cur then redis.call('SET', lk, value, 'EX', ttl) end
    end
    if channel == 'inapp' then
      local score = redis.call('HGET', tp .. K.MESSAGE .. mid, 'c') or string.match(created, '^0*(%d+)$')
      local ib = tp .. K.INBOX .. who
      redis.call('ZADD', ib, score, mid)  -- short members keep the set a compact listpack
      redis.call('EXPIRE', ib, ttl)
    end
    if status ~= 'planned' and status ~= 'queued' and status ~= 'sending' then
      feed(tp, 'delivery.updated', {message_id=mid, delivery_id=id, recipient_id=who,
        channel=channel, status=status, reason=reason or cjson.null},
        string.match(created, '^0*(%d+)$'))
    end
    new = new + 1
  end
end
for mid, _ in pairs(touched) do
  redis.call('EXPIRE', tp .. K.RECIPIENTS .. mid, ttl)
  redis.call('EXPIRE', tp .. K.COUNTS .. mid, ttl)
end
return new
