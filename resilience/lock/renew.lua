-- RenewOp: extend the lease held by (owner, fence) if it has not ended; 1 if renewed, else 0.
-- ARGV: [2] owner, [3] fence, [4] lease us, [5] counter ttl us.
local now = now_us()
local st, o, fence, lu = lock_state(KEYS[1], now)
if st ~= 1 or o ~= ARGV[2] or fence ~= tonumber(ARGV[3]) or lu <= now then return 0 end
redis.call('HSET', KEYS[1], 'lu', us(now + tonumber(ARGV[4])))
expire(KEYS[1], now, tonumber(ARGV[5]))
return 1
