-- The shared helper of the lock scripts: a lock is a hash {o: owner ('' when free), g: fence,
-- lu: lease end us, x: expiry of the fence counter (see the prelude's load)}.
local function lock_state(key, now)
  local st, r = load(key, now, 'o', 'g', 'lu')
  if st ~= 1 then return st end
  local fence, lu = tonumber(r[2]), tonumber(r[3])
  if not r[1] or not fence or not lu then return 2 end
  return 1, r[1], fence, lu
end
