-- One window's state in the multi-window scripts (after status.lua or refund.lua): (at, as) and
-- its interval kept in `state`, and the latest fresh_at() of the windows so far in fmax.
state[3 * i - 2], state[3 * i - 1], state[3 * i] = at, as, interval
local f = at
if max_tokens ~= 0 then f = at + (max_tokens - as) * cooldown end
if f > fmax then fmax = f end
