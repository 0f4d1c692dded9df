-- PutOp: enqueue the delivery unless the key has one (then nothing is written); reply
-- {created, st, a, g, n, e}. ARGV: [2] key, [3] payload, [4] payload type.
local now = now_us()
local key = ARGV[2]
local r = rec(key, now)
if r then return {0, r[1], r[2], r[3], r[4], r[7] or ''} end
local k = rkey(key)
redis.call('DEL', k)
redis.call('HSET', k, 'st', 'p', 'a', 0, 'g', 0, 'n', us(now), 'p', ARGV[3], 't', ARGV[4],
           'e', '')
redis.call('ZADD', KEYS[1], now, key)
return {1, 'p', 0, 0, now, ''}
