local tp = ARGV[1]
local function unindex(doc)
  local d = cjson.decode(doc)
  if d[1] ~= cjson.null then redis.call('HDEL', tp .. 'tok', d[1]) end
  if d[2] ~= cjson.null then redis.call('HDEL', tp .. 'fid', d[2]) end
end
