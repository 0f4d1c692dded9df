-- One window's parameters and state (inside the loops of the multi-window scripts): window i of
-- ARGV[2] and of `old` (a window the state lacks is fresh: idle, and cold with warm-up). A
-- window charged at another interval (the key changed tier) keeps the permits it spent: its
-- backlog is rescaled to the new interval; its warm-up tokens are capped at the new maximum.
local interval, burst, warning, max_tokens, slope, cooldown, arg1, arg2 =
  struct.unpack('<dddddddd', ARGV[2], 64 * i - 63)
local tat, stored = now, max_tokens
if i <= m then
  tat, stored = old[3 * i - 2], old[3 * i - 1]
  local was = old[3 * i]
  if was ~= interval and tat > now and was ~= INF and interval ~= INF then
    tat = now + (tat - now) * (interval / was)
  end
  if stored > max_tokens then stored = max_tokens end
end
