local qp = ARGV[1]
-- Lua would print 1.7e+15: integers go to Redis written out in full.
local function num(x) return string.format('%.0f', x) end
local GROUP = 'workers'
local function ensure_group(stream)
  if redis.call('EXISTS', stream) == 0 then
    redis.call('XGROUP', 'CREATE', stream, GROUP, '0', 'MKSTREAM')
  end
end
-- The sorted set a waiting job sits in: its kind's, in its lane.
local function waiting(kind, urgent)
  if urgent == '1' then return qp .. K.URGENT .. kind end
  return qp .. K.WAITING .. kind
end
local function drop_entry(kind, eid)
  if eid and eid ~= '' then
    redis.call('XACK', qp .. K.STREAM .. kind, GROUP, eid)
    redis.call('XDEL', qp .. K.STREAM .. kind, eid)
  end
end
-- Lists by key, each written with one command per key at the end of a call (bulk).
local function push(lists, key, v)
  local l = lists[key]
  if not l then l = {}; lists[key] = l end
  l[#l + 1] = v
end
local function bulk(lists, fn)
  for key, l in pairs(lists) do each_chunk(l, 200, function(part) fn(key, part) end) end
end
