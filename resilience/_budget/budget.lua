-- A shared ratio retry budget's Redis twin: resilience/_budget/_store.py (_RatioOp) line by line,
-- 1-based (Lua index = Python index + 1). Run after the store prelude (now_us). The state is one
-- string value: [LAST, CALLS, RETRIES, c0, r0, c1, r1, ...] packed as little-endian doubles
-- (exact for integers below 2**53), written with SET PX window (an expired window is an empty
-- one: expiry never changes a decision).
-- ARGV[2] buckets, ARGV[3] bucket width (µs), ARGV[4] ratio, ARGV[5] reserve (min_per_second *
-- ttl), ARGV[6] calls to add, ARGV[7] deposits and ARGV[8] retries to take back (from the newest
-- buckets holding some), ARGV[9] 1 to decide one retry (counted when allowed). Reply: {allowed
-- (0/1), calls, retries, reset}; reset is 1 when the stored state was undecodable (another type
-- or length, negative or fractional counts, totals that do not add up): it was treated as
-- absent and deleted.
local now = now_us()
local nb, bus = tonumber(ARGV[2]), tonumber(ARGV[3])
local ratio, reserve = tonumber(ARGV[4]), tonumber(ARGV[5])
local calls, uncalls, unretries = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local withdraw = ARGV[9] == '1'
local LAST, CALLS, RETRIES, RING = 1, 2, 3, 4
local N = 3 + 2 * nb
local fmt = '<' .. string.rep('d', N)
local e = math.floor(now / bus)
if e * bus > now then e = e - 1 elseif (e + 1) * bus <= now then e = e + 1 end
local st
local reset = 0
local function valid()
  local c, r = 0, 0
  for i = 1, N do
    local v = st[i]
    if v % 1 ~= 0 or v < 0 then return false end  -- NaN and infinities fail too
  end
  for i = RING, N, 2 do
    c, r = c + st[i], r + st[i + 1]
  end
  return c == st[CALLS] and r == st[RETRIES]
end
local raw = redis.pcall('GET', KEYS[1])
if type(raw) == 'string' and #raw == 8 * N then
  st = {struct.unpack(fmt, raw)}
  st[N + 1] = nil  -- struct.unpack's next position
  if not valid() then st, reset = nil, 1 end
elseif raw then
  reset = 1
end
if reset == 1 then redis.call('DEL', KEYS[1]) end
if not st then
  st = {e, 0, 0}
  for i = RING, N do st[i] = 0 end
end
local last = st[LAST]  -- throttle core.roll_ring (the same ring)
if e > last then
  if e - last >= nb then
    for i = 2, N do st[i] = 0 end
  else
    for b = last + 1, e do
      local i = RING + 2 * (b % nb)
      st[CALLS] = st[CALLS] - st[i]
      st[RETRIES] = st[RETRIES] - st[i + 1]
      st[i], st[i + 1] = 0, 0
    end
  end
  st[LAST] = e
end
local function take(offset, n)  -- _take
  local taken = false
  for back = 0, nb - 1 do
    if n == 0 then break end
    local i = RING + 2 * ((st[LAST] - back) % nb) + offset
    local k = math.min(n, st[i])
    if k > 0 then
      st[i] = st[i] - k
      st[CALLS + offset] = st[CALLS + offset] - k
      n = n - k
      taken = true
    end
  end
  return taken
end
local cur = RING + 2 * (st[LAST] % nb)
local changed = false
if calls > 0 then
  st[cur] = st[cur] + calls
  st[CALLS] = st[CALLS] + calls
  changed = true
end
if uncalls > 0 and take(0, uncalls) then changed = true end
if unretries > 0 and take(1, unretries) then changed = true end
local allowed = 0
if withdraw and not (st[RETRIES] + 1 > ratio * st[CALLS] + reserve) then
  st[cur + 1] = st[cur + 1] + 1
  st[RETRIES] = st[RETRIES] + 1
  allowed, changed = 1, true
end
if changed then
  redis.call('SET', KEYS[1], struct.pack(fmt, unpack(st)), 'PX', math.max(1, math.ceil(nb * bus / 1000)))
end
return {allowed, st[CALLS], st[RETRIES], reset}
