-- A refund (part 2 of the refund script, between bucket.lua and save.lua): refund() gives a
-- reservation back, arg1 = its cost_time, arg2 = the warm-up tokens it took. Out: write
-- (at, as); no reply.
if not present then return nil end
local at = tat - arg1
if at < now then at = now end
local as = stored
if max_tokens ~= 0 then as = math.min(max_tokens, stored + arg2) end
local write, reply = true, nil
