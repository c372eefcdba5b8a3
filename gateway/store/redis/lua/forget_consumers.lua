local qp = ARGV[1]
for _, kind in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local stream = qp .. K.STREAM .. kind
  if redis.call('EXISTS', stream) == 1 then
    for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, 'workers')) do
      local info = {}
      for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
      if info['pending'] == 0 and (info['name'] == ARGV[2] or info['idle'] > 86400000) then
        redis.call('XGROUP', 'DELCONSUMER', stream, 'workers', info['name'])
      end
    end
  end
end
return 1
