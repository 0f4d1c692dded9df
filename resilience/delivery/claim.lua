-- ClaimOp: take up to limit deliveries due by the cutoff (a pending one, or one whose claim's
-- lease ended), each with attempts + 1, fence + 1 and a lease; one whose lease ended with every
-- attempt used is dead-lettered instead. Reply {now, {key, fence, attempt, payload, type}...,
-- dead keys...} as {now, n_claimed, claimed fields..., dead keys...}.
-- ARGV: [2] cutoff us ('' = now), [3] limit, [4] lease us, [5] max attempts, [6] keep us.
local now = now_us()
local cutoff = tonumber(ARGV[2]) or now
local lease, max, keep = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', 0, tonumber(ARGV[3]))
local out, dead = {now, 0}, {}
for _, key in ipairs(due) do
  local r = rec(key, now)
  if not r or (r[1] ~= 'p' and r[1] ~= 'f') then
    redis.call('ZREM', KEYS[1], key)
  elseif r[1] == 'f' and r[2] >= max then
    bury(key, now, keep, 'lease expired')
    dead[#dead + 1] = key
  else
    local a, g = r[2] + 1, r[3] + 1
    redis.call('HSET', rkey(key), 'st', 'f', 'a', a, 'g', g, 'n', us(now + lease))
    redis.call('ZADD', KEYS[1], now + lease, key)
    out[2] = out[2] + 1
    for _, v in ipairs({key, g, a, r[5] or '', r[6] or 'b'}) do out[#out + 1] = v end
  end
end
for _, key in ipairs(dead) do out[#out + 1] = key end
return out
