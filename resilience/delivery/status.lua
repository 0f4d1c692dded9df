-- StatusOp: the delivery's {st, a, g, n, e}, or {} when the key has none.
-- ARGV: [2] key.
local r = rec(ARGV[2], now_us())
if not r then return {} end
return {r[1], r[2], r[3], r[4], r[7] or ''}
