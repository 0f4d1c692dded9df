-- The multi-window take's verdict (after take.lua, in the first loop): a request is admitted
-- only if every window admits it; the wait is the longest admitted wait, retry_after the latest
-- of the windows that refused.
if ok then
  if wait > wmax then wmax = wait end
else
  all_ok = false
  if wait > rmax then rmax = wait end
end
T[i] = {tat, stored, ok, tat2, stored2, wait, cost_time}
