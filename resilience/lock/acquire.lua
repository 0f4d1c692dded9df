-- AcquireOp: take the lock if it is free or its lease ended, with fence + 1 (a fresh key's
-- counter starts at the script clock in us, so it is above every fence of an expired counter);
-- {1, fence, 0} when acquired, {0, holder's fence, us left on its lease} when held.
-- ARGV: [2] lease us, [3] counter ttl us (>= lease), [4] owner.
local now = now_us()
local lease, keep, owner = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local st, o, fence, lu = lock_state(KEYS[1], now)
if st == 1 and o ~= '' and lu > now then return {0, fence, lu - now} end
local nxt
if st == 1 then
  nxt = fence + 1
else
  if st == 2 then redis.call('DEL', KEYS[1]) end
  nxt = math.max(1, now)
end
redis.call('HSET', KEYS[1], 'o', owner, 'g', us(nxt), 'lu', us(now + lease))
expire(KEYS[1], now, keep)
return {1, nxt, 0}
