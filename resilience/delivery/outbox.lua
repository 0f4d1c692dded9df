-- The shared helpers of the outbox scripts. KEYS[1]: the due sorted set (member: delivery key,
-- score: when it is due in us: its next attempt, or the end of its claim's lease); KEYS[2]: the
-- dead letters (score: when it died). A delivery's record is the hash base .. 'r:' .. key (the
-- same hash tag as KEYS[1]): {st: p(ending) f(in flight) d(elivered) x(dead), a: attempts,
-- g: fence, n: due us, p: payload, t: payload type, e: last error, x: expiry us once final}.
-- rec(key, now): the live record's fields {st, a, g, n, p, t, e}, or nil (absent, logically
-- expired, corrupt); final(): a delivery kept keep us, then gone; bury(): final and dead.
local base = string.sub(KEYS[1], 1, -2)
local function rkey(key)
  return base .. 'r:' .. key
end
local function rec(key, now)
  local k = rkey(key)
  local r = redis.pcall('HMGET', k, 'st', 'a', 'g', 'n', 'p', 't', 'e', 'x')
  if r['err'] or not r[1] then return nil end
  local x = tonumber(r[8])
  if x and x <= now then
    redis.call('DEL', k)
    return nil
  end
  r[2], r[3], r[4] = tonumber(r[2]), tonumber(r[3]), tonumber(r[4])
  if not r[2] or not r[3] or not r[4] then return nil end
  return r
end
local function final(key, now, keep)
  local k = rkey(key)
  redis.call('HSET', k, 'x', us(now + keep))
  redis.call('PEXPIRE', k, math.max(1, math.ceil(keep / 1000)))
  redis.call('ZREM', KEYS[1], key)
end
local function bury(key, now, keep, err)
  redis.call('HSET', rkey(key), 'st', 'x', 'e', err)
  final(key, now, keep)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - keep)
  redis.call('ZADD', KEYS[2], now, key)
  redis.call('PEXPIRE', KEYS[2], math.max(1, math.ceil(keep / 1000)))
end
