-- RequeueOp: a dead delivery becomes pending again, due now, with its attempts reset (its
-- record kept without expiry again); 1 if requeued, 0 if the key has no dead delivery.
-- ARGV: [2] key.
local now = now_us()
local key = ARGV[2]
local r = rec(key, now)
if not r or r[1] ~= 'x' then return 0 end
local k = rkey(key)
redis.call('HSET', k, 'st', 'p', 'a', 0, 'n', us(now))
redis.call('HDEL', k, 'x')
redis.call('PERSIST', k)
redis.call('ZREM', KEYS[2], key)
redis.call('ZADD', KEYS[1], now, key)
return 1
