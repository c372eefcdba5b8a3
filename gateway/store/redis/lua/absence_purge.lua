local tp = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0,
  tonumber(ARGV[3]))
for _, mid in ipairs(ids) do
  local doc = redis.call('GET', tp .. K.ABSENCE .. mid)
  if doc then
    local r = cjson.decode(doc)
    local events = r.marks
    if type(r.cancel_event_id) == 'string' then events[#events + 1] = r.cancel_event_id end
    for _, ev in ipairs(events) do
      local k = tp .. K.ABSENCE_EVENT .. ev
      local v = redis.call('GET', k)
      if v and string.sub(v, 1, #mid + 1) == mid .. '\31' then redis.call('DEL', k) end
    end
    local days = r.data.days
    if type(days) ~= 'table' or #days == 0 then days = {r.data.date} end
    for _, day in ipairs(days) do
      if type(day) == 'string' then redis.call('SREM', tp .. K.ABSENCE_DAY .. day, mid) end
    end
    if r.key ~= '' then
      local k = tp .. K.ABSENCE_KEY .. r.key
      if redis.call('GET', k) == mid then redis.call('DEL', k) end
    end
  end
  redis.call('DEL', tp .. K.ABSENCE .. mid, tp .. K.EXPLANATIONS .. mid, tp .. K.EXPLANATION_LIST .. mid)
  redis.call('ZREM', KEYS[1], mid)
end
return #ids
