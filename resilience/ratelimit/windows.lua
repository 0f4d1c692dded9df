-- Several windows on one bucket (part 2 of the multi-window scripts, after clock.lua): the stored
-- state of every window, read like bucket.lua reads one. The state is one string value: per
-- window three little-endian doubles (tat, stored, the interval it was charged at), then the
-- expiry in us of the script clock. ARGV[2] packs, per window, the six LimitParams and the
-- operation's two numbers (8 doubles). A tier with fewer windows than the state drops the extra
-- ones; a window the state lacks starts fresh (window.lua carries the others over).
-- Out: n (windows), m (stored windows kept), old (flat tat, stored, interval), present, reset.
local n = #ARGV[2] / 64
local INF = math.huge
local present, reset, old, m = false, 0, {}, 0
local raw = redis.pcall('GET', KEYS[1])
if type(raw) == 'string' and #raw >= 32 and (#raw - 8) % 24 == 0 then
  local count = (#raw - 8) / 24
  local x = struct.unpack('<d', raw, 24 * count + 1)
  if x > now_u then
    present, m = true, count
    for j = 1, count do
      local t, s, v = struct.unpack('<ddd', raw, 24 * j - 23)
      if t - now < 1e9 and now - t < 1e9 and s >= 0 and s < 1e15 and v > 0 then
        old[3 * j - 2], old[3 * j - 1], old[3 * j] = t, s, v
      else
        reset = 1  -- NaN, infinite or absurd: undecodable
      end
    end
  end
elseif raw then
  reset = 1  -- another type or length
end
if reset == 1 then
  present, old, m = false, {}, 0
  redis.call('DEL', KEYS[1])
end
if m > n then m = n end
local fmax, state = -INF, {}
