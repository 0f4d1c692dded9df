-- The one-window take's reply (after status.lua, the last part before save.lua): write (at, as) when `write`, and `reply`: six
-- packed doubles (allowed, plus 2 when the state was reset; wait or retry_after; cost_time;
-- taken; remaining; reset_after).
local write, reply = ok or present, nil
if ok then
  reply = struct.pack('<dddddd', 1 + 2 * reset, wait, cost_time, stored - stored2, remaining,
                      reset_after)
else
  reply = struct.pack('<dddddd', 2 * reset, wait, 0, 0, remaining, reset_after)
end
