-- One rate-limit bucket (resilience/ratelimit/_core.py in Lua), part 2 of the one-window scripts,
-- after clock.lua: the packed parameters and the stored state, number for number like Python.
-- Standalone (no store prelude, no closures): this runs on every decision.
-- Doubles in seconds (now = integer us / 1e6; Redis TIME is offset to a recent epoch so the
-- doubles keep sub-us precision). The state is one string value, three little-endian doubles
-- (tat, stored, expiry in us of the script clock). ARGV[2] packs the six LimitParams and the
-- operation's two numbers (arg1, arg2).
-- Out: now_u, now, the parameters, present (a live, decodable state), tat, stored and reset
-- (1: the stored value was undecodable and was deleted).
local interval, burst, warning, max_tokens, slope, cooldown, arg1, arg2 =
  struct.unpack('<dddddddd', ARGV[2])
local INF = math.huge
local present, tat, stored, reset = false, now, max_tokens, 0
local raw = redis.pcall('GET', KEYS[1])
if type(raw) == 'string' and #raw == 24 then
  local t, s, x = struct.unpack('<ddd', raw)
  if x > now_u then
    if t - now < 1e9 and now - t < 1e9 and s >= 0 and s < 1e15 then
      present, tat, stored = true, t, s
    else
      reset = 1  -- NaN, infinite or absurd: undecodable
    end
  end
elseif raw then
  reset = 1  -- another type or length
end
if reset == 1 then redis.call('DEL', KEYS[1]) end
