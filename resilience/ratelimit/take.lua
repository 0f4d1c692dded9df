-- One check (part 2 of the take script, between bucket.lua and save.lua): transition() on
-- copies of (tat, stored) (a rejection keeps, and reports on, the stored state), then status().
-- Out: write (at, as) when `write`, and `reply`: six packed doubles (allowed, plus 2 when the
-- state was reset; wait or retry_after; cost_time; taken; remaining; reset_after).
local cost, max_wait = arg1, arg2
local ok, tat2, stored2, wait, cost_time = true, tat, stored, 0.0, 0.0
if cost > 0 then
  if interval == INF then
    ok, wait = false, INF
  else
    local wt, ws = tat, stored
    if now > wt then
      if max_tokens ~= 0 then
        ws = math.min(max_tokens, ws + (now - wt) / cooldown)
      end
      wt = now
    end
    local tolerance = (burst - cost) * interval
    local above = 0.0
    if max_tokens ~= 0 then above = ws - warning end
    if above > 0 and tolerance > 0 then
      tolerance = tolerance * (1.0 - above / (max_tokens - warning))
    end
    wait = wt - now - tolerance
    if wait > max_wait + 1e-9 then
      ok = false
    else
      cost_time = cost * interval
      if max_tokens ~= 0 then
        if above > 0 then
          local k = above
          if cost < above then k = cost end
          cost_time = cost_time + k * (slope * (above - k / 2.0)
            + (burst - 1.0) * interval / (max_tokens - warning))
        end
        if ws > cost then ws = ws - cost else ws = 0.0 end
      end
      if not (wait > 1e-9) then wait = 0.0 end
      tat2, stored2 = wt + cost_time, ws
    end
  end
end
local at, as = tat2, stored2
if not ok then at, as = tat, stored end
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
local write, reply = ok or present, nil
if ok then
  reply = struct.pack('<dddddd', 1 + 2 * reset, wait, cost_time, stored - stored2, remaining,
                      reset_after)
else
  reply = struct.pack('<dddddd', 2 * reset, wait, 0, 0, remaining, reset_after)
end
