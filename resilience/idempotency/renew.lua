-- RenewOp: extend the lease of the claim held by (owner, fence); 1 if held, else 0.
-- ARGV: [2] owner, [3] fence, [4] lease us, [5] ttl us.
local now = now_us()
local lease, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local st, r = record(KEYS[1], now)
if st ~= 1 or not owned(r, ARGV[2], ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'lu', us(now + lease))
expire(KEYS[1], now, ttl + lease)
return 1
