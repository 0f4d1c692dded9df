-- Several windows on one bucket (part 2 of the multi-window scripts, after clock.lua): the stored
-- state of every window, read like bucket.lua reads one. The state is one string value: per
-- window two little-endian doubles (tat, stored), then the expiry in us of the script clock (one
-- window: the one-window layout). ARGV[2] packs, per window, the six LimitParams and the
-- operation's two numbers (8 doubles). A tier with fewer windows than the state drops the extra
-- ones; a window the state lacks starts fresh.
-- Out: n (windows), m (stored windows kept), old (flat tat, stored), present, reset.
local n = #ARGV[2] / 64
local INF = math.huge
local present, reset, old, m = false, 0, {}, 0
local raw = redis.pcall('GET', KEYS[1])
if type(raw) == 'string' and #raw >= 24 and (#raw - 8) % 16 == 0 then
  local count = (#raw - 8) / 16
  local x = struct.unpack('<d', raw, 16 * count + 1)
  if x > now_u then
    present, m = true, count
    for j = 1, count do
      local t, s = struct.unpack('<dd', raw, 16 * j - 15)
      if t - now < 1e9 and now - t < 1e9 and s >= 0 and s < 1e15 then
        old[2 * j - 1], old[2 * j] = t, s
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
