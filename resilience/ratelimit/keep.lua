-- One window's state in the multi-window scripts (after status.lua or refund.lua): (at, as) kept
-- in `state`, and the latest fresh_at() of the windows so far in fmax.
state[2 * i - 1], state[2 * i] = at, as
local f = at
if max_tokens ~= 0 then f = at + (max_tokens - as) * cooldown end
if f > fmax then fmax = f end
