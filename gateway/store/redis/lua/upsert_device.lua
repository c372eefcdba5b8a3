local who, id, doc = ARGV[2], ARGV[3], ARGV[4]
local me = who .. '\31' .. id
local addresses = {{'tok', opt(ARGV[5])}, {'fid', opt(ARGV[6])}}
for _, a in ipairs(addresses) do
  if a[2] then
    local owner = redis.call('HGET', tp .. a[1], a[2])
    if owner and owner ~= me then
      local o = split(owner, '\31')
      local old = redis.call('HGET', tp .. K.DEVICES .. o[1], o[2])
      redis.call('HDEL', tp .. K.DEVICES .. o[1], o[2])
      if old then unindex(old) end
    end
  end
end
local current = redis.call('HGET', tp .. K.DEVICES .. who, id)
if current then unindex(current) end
redis.call('HSET', tp .. K.DEVICES .. who, id, doc)
for _, a in ipairs(addresses) do
  if a[2] then redis.call('HSET', tp .. a[1], a[2], me) end
end
redis.call('INCRBY', KEYS[1], ARGV[7])  -- keys.version_step()
return 1
