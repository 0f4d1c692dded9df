-- SettleOp: end the claim (key, fence) if it is still the delivery's: mode 'd' delivered,
-- 'r' rescheduled after delay us, 'x' dead, 'l' released (due now, the attempt given back);
-- 1 if done, 0 if refused (another claim's fence, or the delivery is gone or final).
-- ARGV: [2] key, [3] fence, [4] mode, [5] delay us, [6] error, [7] keep us.
local now = now_us()
local key, mode, keep = ARGV[2], ARGV[4], tonumber(ARGV[7])
local r = rec(key, now)
if not r or r[1] ~= 'f' or r[3] ~= tonumber(ARGV[3]) then return 0 end
local k = rkey(key)
if mode == 'd' then
  redis.call('HSET', k, 'st', 'd', 'n', 0)
  final(key, now, keep)
elseif mode == 'x' then
  bury(key, now, keep, ARGV[6])
elseif mode == 'r' then
  local n = now + math.max(1, tonumber(ARGV[5]))
  redis.call('HSET', k, 'st', 'p', 'n', us(n), 'e', ARGV[6])
  redis.call('ZADD', KEYS[1], n, key)
else
  redis.call('HSET', k, 'st', 'p', 'a', math.max(0, r[2] - 1), 'n', us(now))
  redis.call('ZADD', KEYS[1], now, key)
end
return 1
