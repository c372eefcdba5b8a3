local now, interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now - (burst - 1) * interval
if wait < 0 then wait = 0 end
local function num(x) return string.format('%.0f', x) end
if max_wait >= 0 and wait > max_wait then return num(wait) end
local new_tat = tat + interval
redis.call('SET', KEYS[1], num(new_tat), 'PX', num(math.ceil((new_tat - now) / 1000) + 1000))
return num(wait)
