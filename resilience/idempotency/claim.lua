-- ClaimOp: absent -> claimed (fence 1); done -> replay; live lease -> in_progress (us left);
-- expired lease -> taken over with fence + 1; another fingerprint -> reused (record untouched).
-- ARGV: [2] lease us, [3] ttl us, [4] fingerprint, [5] owner.
local now = now_us()
local lease, ttl, fp, owner = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
local st, r = record(KEYS[1], now)
local function claimed(fence)
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'v', '1', 'st', 'p', 'fp', fp, 'o', owner, 'g', us(fence),
             'lu', us(now + lease))
  expire(KEYS[1], now, ttl + lease)
end
if st == 0 then
  claimed(1)
  return {'claimed', 1, 0}
end
if st == 2 then return {'corrupt', 0, 0} end
local fence = tonumber(r[5])
if r[3] ~= fp then return {'reused', fence, 0} end
if r[2] == 'd' then
  if r[7] then return {'replay', fence, r[7]} end
  return {'replay', fence}
end
local lu = tonumber(r[6])
if lu > now then return {'in_progress', fence, lu - now} end
claimed(fence + 1)
return {'claimed', fence + 1, 1}
