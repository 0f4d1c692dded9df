-- DeadOp: a page of dead letters, oldest first: {key, attempts, error, died us}...
-- ARGV: [2] offset, [3] count, [4] keep us.
local now = now_us()
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]))
local off = tonumber(ARGV[2])
local page = redis.call('ZRANGE', KEYS[2], off, off + tonumber(ARGV[3]) - 1, 'WITHSCORES')
local out = {}
for i = 1, #page, 2 do
  local r = rec(page[i], now)
  if r and r[1] == 'x' then
    for _, v in ipairs({page[i], r[2], r[7] or '', page[i + 1]}) do out[#out + 1] = v end
  end
end
return out
