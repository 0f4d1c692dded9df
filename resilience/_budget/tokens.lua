-- A shared gRFC A6 retry throttle's Redis twin: resilience/_budget/_store.py (_TokensOp) line by
-- line. Run after the store prelude (now_us). The state is one string value,
-- '<tokens in thousandths>:<expiry in µs of the script clock>' (absent or expired: a full
-- bucket), written on every change with a new expiry, and PX for the key's garbage collection
-- (the logical expiry follows the script clock, like every state).
-- ARGV[2] max tokens, ARGV[3] the tokens a success adds (thousandths), ARGV[4] successes and
-- ARGV[5] failures to count (successes first, then failures), ARGV[6] the TTL (µs). Reply:
-- {allowed (0/1: 2 * tokens > max), tokens, reset}; reset is 1 when the stored value was
-- undecodable (another type or format): it was treated as absent and deleted.
local now = now_us()
local max, ratio = tonumber(ARGV[2]), tonumber(ARGV[3])
local successes, failures = tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
local reset = 0
local tokens = max
local raw = redis.pcall('GET', KEYS[1])
if type(raw) == 'string' then
  local t, x = string.match(raw, '^(%d+):(%d+)$')
  if t then
    if tonumber(x) > now then tokens = math.min(tonumber(t), max) end
  else
    reset = 1
  end
elseif raw then
  reset = 1
end
if reset == 1 then redis.call('DEL', KEYS[1]) end
if successes == 0 and failures == 0 then
  return {(2 * tokens > max) and 1 or 0, tokens, reset}
end
tokens = math.min(max, tokens + ratio * successes)
tokens = math.max(0, tokens - 1000 * failures)
redis.call('SET', KEYS[1], us(tokens) .. ':' .. us(now + ttl), 'PX', math.max(1, math.ceil(ttl / 1000)))
return {(2 * tokens > max) and 1 or 0, tokens, reset}
