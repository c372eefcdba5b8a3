local tp, ttl = ARGV[1], tonumber(ARGV[2])
if not redis.call('SET', KEYS[1], ARGV[4], 'NX', 'EX', ttl) then return 0 end
local mid = opt(ARGV[5])
if mid then
  redis.call('ZADD', tp .. K.MESSAGE_REPLIES .. mid, ARGV[6], ARGV[3])
  redis.call('EXPIRE', tp .. K.MESSAGE_REPLIES .. mid, ttl)
end
redis.call('ZADD', tp .. K.REPLIES, ARGV[6], ARGV[3])
feed(tp, 'reply.received', {reply_id=ARGV[3], message_id=mid or cjson.null,
  recipient_id=opt(ARGV[7]) or cjson.null, channel=ARGV[8], body=ARGV[9]}, ARGV[6])
return 1
