local qp = ARGV[1]
-- Lua would print 1.7e+15: integers go to Redis written out in full.
local function num(x) return string.format('%.0f', x) end
local GROUP = 'workers'
-- XREADGROUP of the n newest entries of a stream this script just added to; its group is
-- created (from the stream's start) when the read finds none, so a claim asks no EXISTS
-- per kind before it adds.
local function read_group(stream, consumer, n)
  local args = {'XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', n, 'STREAMS', stream, '>'}
  local r = redis.pcall(unpack(args))
  if type(r) == 'table' and r.err then
    if not string.find(r.err, 'NOGROUP', 1, true) then error(r) end
    redis.call('XGROUP', 'CREATE', stream, GROUP, '0', 'MKSTREAM')
    r = redis.call(unpack(args))
  end
  return r
end
-- The sorted set a waiting job sits in: its kind's, in its lane.
local function waiting(kind, urgent)
  if urgent == '1' then return qp .. K.URGENT .. kind end
  return qp .. K.WAITING .. kind
end
-- P:{q}:next: per waiting set (member "<lane>\31<kind>") a score no later than its
-- earliest due job, so a claim reads only the sets that may hold due work (claim.lua).
-- Every writer of a waiting set lowers it (ZADD LT); a claim sets it anew for each set
-- it read (set_next). A writer that did not (an older version's) delays its jobs until
-- the next claim that reads every set, at most a second later (redis/jobs.py).
local function hint(urgent, kind) return urgent .. '\31' .. kind end
-- ``first``: the score of the set's earliest member, known to the caller (claim.lua);
-- nil: the set is empty.
local function set_next(kind, urgent, first)
  if first then
    redis.call('ZADD', qp .. K.NEXT_DUE, first, hint(urgent, kind))
  else
    redis.call('ZREM', qp .. K.NEXT_DUE, hint(urgent, kind))
  end
end
local function lower_next(kind, urgent, due)
  redis.call('ZADD', qp .. K.NEXT_DUE, 'LT', due, hint(urgent, kind))
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
-- A job hash: k kind, t tenant, r ref, d due (µs), p '1' urgent, a attempts, e error; x l c
-- w while leased (stream entry, lease end, claim stamp, holder's consumer). A job queued
-- by add_jobs since 2026-12-07 keeps k t d p r packed in k
-- ("kind\31tenant\31due\31urgent\31ref": one HSETNX creates it, and an existing job of any
-- version has k); a field written later (d by a retry) wins over the packed value.
-- read_job(key, {'x', 'p'}) is one HMGET: {k = kind or nil (no such job), x = .., p = ..}.
local function read_job(key, names)
  local args = {'HMGET', key, 'k'}
  for _, name in ipairs(names) do args[#args + 1] = name end
  local v = redis.call(unpack(args))
  local j = {}
  for i, name in ipairs(names) do j[name] = v[i + 1] or nil end
  local k = v[1] or nil
  if k and string.find(k, '\31', 1, true) then
    local parts, from = {}, 1
    for i = 1, 4 do
      local sep = string.find(k, '\31', from, true)
      parts[i] = string.sub(k, from, sep - 1)
      from = sep + 1
    end
    local packed = {t = parts[2], d = parts[3], p = parts[4], r = string.sub(k, from)}
    for name, value in pairs(packed) do
      if j[name] == nil then j[name] = value end
    end
    k = parts[1]
  end
  j.k = k
  return j
end
