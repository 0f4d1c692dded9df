-- The last part of the multi-window scripts: when `write`, keep the k windows of `state` until
-- the latest fresh_at() of them (fmax; SET PX with the expiry packed in, as save.lua), or drop a
-- present state that is already fresh; return `reply`.
if write then
  local ttl = fmax - now
  if ttl > 0 then
    local ttl_us = math.ceil(ttl * 1000000 - 0.001)  -- stores.base.ttl_us
    state[3 * k + 1] = now_u + ttl_us
    redis.call('SET', KEYS[1], struct.pack('<' .. string.rep('d', 3 * k + 1), unpack(state)),
               'PX', math.max(1, math.min(1e13, math.ceil(ttl_us / 1000))))
  elseif present then
    redis.call('DEL', KEYS[1])
  end
end
return reply
