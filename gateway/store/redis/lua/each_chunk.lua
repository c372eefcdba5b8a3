-- Calls fn with the items of list in slices of at most n (unpack() has a stack limit).
local function each_chunk(list, n, fn)
  for i = 1, #list, n do
    local part = {}
    for j = i, math.min(i + n - 1, #list) do part[#part + 1] = list[j] end
    fn(part)
  end
end
