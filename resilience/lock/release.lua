-- ReleaseOp: free the lock held by (owner, fence), keeping its fence counter for keep us; 1 if
-- it was still held (lease not ended), 0 otherwise (another holder's lock is never touched).
-- ARGV: [2] owner, [3] fence, [4] counter ttl us.
local now = now_us()
local st, o, fence, lu = lock_state(KEYS[1], now)
if st ~= 1 or o ~= ARGV[2] or fence ~= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'o', '')
expire(KEYS[1], now, tonumber(ARGV[4]))
if lu > now then return 1 end
return 0
