-- Which state a take reports on and writes (after take.lua): the new one when admitted, else the
-- stored one (a rejection changes nothing). Out: at, as.
local at, as = tat2, stored2
if not ok then at, as = tat, stored end
