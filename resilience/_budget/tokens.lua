-- A shared gRFC A6 retry throttle's Redis twin: resilience/_budget/_store.py (_TokensOp) line by
-- line. The state is the tokens in thousandths, an integer string (absent: a full bucket),
-- written with SET PX ttl on every change.
-- ARGV[2] max tokens, ARGV[3] the tokens a success adds (thousandths), ARGV[4] successes and
-- ARGV[5] failures to count (successes first, then failures), ARGV[6] the TTL (ms). Reply:
-- {allowed (0/1: 2 * tokens > max), tokens, reset}; reset is 1 when the stored value was
-- undecodable (another type, not a non-negative integer): it was treated as absent and deleted.
local max, ratio = tonumber(ARGV[2]), tonumber(ARGV[3])
local successes, failures = tonumber(ARGV[4]), tonumber(ARGV[5])
local reset = 0
local tokens = max
local raw = redis.pcall('GET', KEYS[1])
if type(raw) == 'string' then
  local v = tonumber(raw)
  if v and v % 1 == 0 and v >= 0 then
    tokens = math.min(v, max)
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
redis.call('SET', KEYS[1], string.format('%d', tokens), 'PX', tonumber(ARGV[6]))
return {(2 * tokens > max) and 1 or 0, tokens, reset}
