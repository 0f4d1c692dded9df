-- One window's part of the multi-window take's reply (after keep.lua, in the second loop): five
-- doubles (cost_time, taken, remaining, reset_after, its own retry_after).
if all_ok then
  out[5 * i - 4], out[5 * i - 3] = cost_time, stored - stored2
else
  out[5 * i - 4], out[5 * i - 3] = 0, 0
end
out[5 * i - 2], out[5 * i - 1] = remaining, reset_after
if w[3] then out[5 * i] = 0 else out[5 * i] = w[6] end
