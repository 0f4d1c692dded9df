-- The script clock (part 1 of every bucket script): now_u, integer us, and now, seconds.
-- Doubles in seconds (now = integer us / 1e6; Redis TIME is offset to a recent epoch so the
-- doubles keep sub-us precision). ARGV[1], when not empty, is the caller's clock in us.
local now_u, now
if ARGV[1] ~= '' then
  now_u = tonumber(ARGV[1])
  now = now_u / 1000000
else
  local t = redis.call('TIME')
  now_u = tonumber(t[1]) * 1000000 + tonumber(t[2])
  now = (now_u - 1700000000000000) / 1000000
end
