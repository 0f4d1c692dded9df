-- The status of one bucket (status() of _core.py), after report.lua: the whole permits left in
-- state (at, as) and the seconds until it is full. Out: remaining, reset_after.
local remaining, reset_after
local backlog = at - now
local above = 0.0
if max_tokens ~= 0 and interval ~= INF then
  local ss = as
  if backlog < 0 then ss = math.min(max_tokens, ss - backlog / cooldown) end
  above = ss - warning
end
if above > 0 then
  local room = (burst - 1.0) * interval * (1.0 - above / (max_tokens - warning))
  if backlog > 0 then room = room - backlog else backlog = 0.0 end
  local n = room / (interval + slope * above) + 1.0 + 1e-6
  if n > 0 then remaining = math.floor(n) else remaining = 0 end
  if remaining > math.floor(burst) then remaining = math.floor(burst) end
  reset_after = backlog
elseif backlog <= 0 then
  remaining, reset_after = math.floor(burst), 0.0
elseif interval == INF then
  remaining, reset_after = 0, 0.0
else
  local r = burst - backlog / interval + 1e-6
  if r > 0 then remaining = math.floor(r) else remaining = 0 end
  reset_after = backlog
end
