local tp = ARGV[1]
local function unindex(doc)
  local d = cjson.decode(doc)
  if d[1] ~= cjson.null then redis.call('HDEL', tp .. K.TOKENS, d[1]) end
  if d[2] ~= cjson.null then redis.call('HDEL', tp .. K.FIDS, d[2]) end
end
