-- ReleaseOp: delete the claim held by (owner, fence) (its outcome is not stored); 1 if released.
-- ARGV: [2] owner, [3] fence.
local now = now_us()
local st, r = record(KEYS[1], now)
if st ~= 1 or not owned(r, ARGV[2], ARGV[3]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
