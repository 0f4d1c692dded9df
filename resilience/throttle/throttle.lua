-- The adaptive throttle's Redis twin: resilience/throttle/_core.py line by line, 1-based (Lua
-- index = Python index + 1). Run by resilience/throttle/_store.py after the store prelude
-- (now_us). The state is one string value: [LAST, REQUESTS, ACCEPTS, r0, a0, ...] packed as
-- little-endian doubles (exact for integers below 2**53), written with SET PX window (an
-- expired window is an empty one: expiry never changes a decision).
-- ARGV[2] buckets, ARGV[3] bucket width (µs), ARGV[4] k, ARGV[5] the probability cap, ARGV[6]
-- and ARGV[7] the calls finished since the caller's previous operation and how many of them
-- were accepted (core's `done`, `accepted`), ARGV[8] the uniform draw of this decision, or ''
-- for a snapshot. A rejected request is counted at once (core.reject). Reply: {rejected (0/1), retry_after_us, requests,
-- accepts, reset}; reset is 1 when the stored state was undecodable (another type or length,
-- negative or fractional counts, totals that do not add up, a bucket in the future): it was
-- treated as absent and deleted.
local now = now_us()
local nb, bus = tonumber(ARGV[2]), tonumber(ARGV[3])
local k, cap = tonumber(ARGV[4]), tonumber(ARGV[5])
local done, accepted = tonumber(ARGV[6]), tonumber(ARGV[7])
local draw = tonumber(ARGV[8])  -- nil: a snapshot
local LAST, REQ, ACC, RING = 1, 2, 3, 4
local N = 3 + 2 * nb
local fmt = '<' .. string.rep('d', N)
local function fdiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local e = fdiv(now, bus)
local st
local reset = 0
local function valid()
  local r, a = 0, 0
  for i = 1, N do
    local v = st[i]
    if v % 1 ~= 0 or v < 0 then return false end  -- NaN and infinities fail too
  end
  for i = RING, N, 2 do
    r, a = r + st[i], a + st[i + 1]
  end
  return st[LAST] <= e and r == st[REQ] and a == st[ACC]
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
  -- an empty window admits (p = 0) and reads nothing: with nothing to count, write nothing
  if done == 0 then return {0, 0, 0, 0, reset} end
  st = {e, 0, 0}
  for i = RING, N do st[i] = 0 end
end
local last = st[LAST]  -- core.roll_ring
if e > last then
  if e - last >= nb then
    for i = 2, N do st[i] = 0 end
  else
    for b = last + 1, e do
      local i = RING + 2 * (b % nb)
      st[REQ] = st[REQ] - st[i]
      st[ACC] = st[ACC] - st[i + 1]
      st[i], st[i + 1] = 0, 0
    end
  end
  st[LAST] = e
end
local i = RING + 2 * (st[LAST] % nb)  -- core._flush: done, accepted
if done ~= 0 then
  st[i] = st[i] + done
  st[REQ] = st[REQ] + done
  st[i + 1] = st[i + 1] + accepted
  st[ACC] = st[ACC] + accepted
end
local rejected, retry = 0, 0
if draw then  -- core.decide
  local req = st[REQ]
  local p = (req - k * st[ACC]) / (req + 1)
  if p > cap then p = cap end
  if draw < p then  -- core.reject
    st[i] = st[i] + 1
    st[REQ] = req + 1
    rejected, retry = 1, bus - (now - e * bus)
  end
end
if rejected == 0 and done == 0 then
  return {0, 0, st[REQ], st[ACC], reset}  -- nothing counted: the rolled state need not be written
end
redis.call('SET', KEYS[1], struct.pack(fmt, unpack(st)), 'PX', math.max(1, math.ceil(nb * bus / 1000)))
return {rejected, retry, st[REQ], st[ACC], reset}
