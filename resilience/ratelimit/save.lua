-- The last part of every bucket script: when `write`, keep (at, as) until fresh_at() (SET PX
-- with the expiry packed in), or drop a present state that is already fresh; return `reply`.
if write then
  local ttl = at
  if max_tokens ~= 0 then ttl = at + (max_tokens - as) * cooldown end
  ttl = ttl - now
  if ttl > 0 then
    local ttl_us = math.ceil(ttl * 1000000 - 0.001)  -- stores.base.ttl_us
    redis.call('SET', KEYS[1], struct.pack('<ddd', at, as, now_u + ttl_us),
               'PX', math.max(1, math.min(1e13, math.ceil(ttl_us / 1000))))
  elseif present then
    redis.call('DEL', KEYS[1])
  end
end
return reply
