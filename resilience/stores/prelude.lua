-- The prelude of every resilience script (see resilience/stores/redis.py, LUA_NOW).
local function now_us()
  if ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function us(n)
  return string.format('%d', n)
end
local function load(key, now, ...)
  local vals = redis.pcall('HMGET', key, 'x', ...)
  if vals['err'] then return 2 end
  local x = table.remove(vals, 1)
  if not x then
    for i = 1, select('#', ...) do
      if vals[i] then return 2 end
    end
    return 0
  end
  x = tonumber(x)
  if not x then return 2 end
  if x <= now then
    redis.call('DEL', key)
    return 0
  end
  return 1, vals
end
local function expire(key, now, ttl)
  redis.call('HSET', key, 'x', us(now + ttl))
  redis.call('PEXPIRE', key, math.max(1, math.ceil(ttl / 1000)))
end
