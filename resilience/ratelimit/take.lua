-- One check (the take script: clock.lua, bucket.lua, take.lua, report.lua, status.lua,
-- reply.lua, save.lua; run once per window by the multi-window take): transition() on copies
-- of (tat, stored). Out: ok, tat2, stored2, wait (or retry_after) and cost_time.
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
