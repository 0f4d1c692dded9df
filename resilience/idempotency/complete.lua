-- CompleteOp: store the outcome if (owner, fence) holds the claim (fencing); 1 if stored.
-- Idempotent for its owner: already done by the same (owner, fence) -> 1, record unchanged.
-- ARGV: [2] owner, [3] fence, [4] ttl us, [5] '1' when an outcome is retained, [6] the outcome.
local now = now_us()
local st, r = record(KEYS[1], now)
if st ~= 1 then return 0 end
if r[2] == 'd' and r[4] == ARGV[2] and r[5] == ARGV[3] then return 1 end
if not owned(r, ARGV[2], ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'st', 'd')
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], 'r', ARGV[6])
else
  redis.call('HDEL', KEYS[1], 'r')
end
expire(KEYS[1], now, tonumber(ARGV[4]))
return 1
