local tp = ARGV[1]
local out = {}
for i = 2, #ARGV, 7 do
  out[#out + 1] = move(tp, ARGV[i], ARGV[i + 1], ARGV[i + 2], opt(ARGV[i + 3]),
    opt(ARGV[i + 4]), opt(ARGV[i + 5]), opt(ARGV[i + 6]))
end
return out
