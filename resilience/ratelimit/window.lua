-- One window's parameters and state (inside the loops of the multi-window scripts): window i of
-- ARGV[2] and of `old` (a window the state lacks is fresh: idle, and cold with warm-up).
local interval, burst, warning, max_tokens, slope, cooldown, arg1, arg2 =
  struct.unpack('<dddddddd', ARGV[2], 64 * i - 63)
local tat, stored = now, max_tokens
if i <= m then tat, stored = old[2 * i - 1], old[2 * i] end
