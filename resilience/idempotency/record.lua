-- Idempotency record helpers shared by every record op (prepended to claim/renew/complete/release).
-- A record is a hash: v (version), st ('p' in progress, 'd' done), fp (fingerprint), o (owner),
-- g (fence), lu (lease end, integer us of the script clock), r (the stored outcome; absent when
-- not retained) and x (logical expiry, us). record() returns 0 (absent), 2 (corrupt) or 1, fields.
local function record(key, now)
  local st, r = load(key, now, 'v', 'st', 'fp', 'o', 'g', 'lu', 'r')
  if st ~= 1 then return st end
  if r[1] ~= '1' or (r[2] ~= 'p' and r[2] ~= 'd') or not r[3] or not r[4]
     or not r[5] or not string.match(r[5], '^%-?%d+$') or not tonumber(r[6] or '') then
    return 2
  end
  return 1, r
end
local function owned(r, owner, fence)
  return r[2] == 'p' and r[4] == owner and r[5] == fence
end
