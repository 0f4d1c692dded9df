-- The circuit breaker's Redis twin: resilience/circuit/_core.py line by line, 1-based (Lua
-- index = Python index + 1; CUR keeps the Python value). Run by the store operations of
-- resilience/circuit/_store.py after the store prelude (now_us).
-- The state is one string value: the list packed as little-endian doubles (exact for integers
-- below 2**53) followed by its expiry on the script clock, written with SET PX (one GET, one SET
-- per decision). ARGV[2] is the packed configuration (_options.lua_config), ARGV[3] the
-- operation: 'a' acquire, 'r' record (ARGV[4] permit, ARGV[5] outcome), 'm' manual (ARGV[4]
-- action; 0 = tick). The last three arguments of every operation are core.flush's pending
-- successes (permit, count, stale), recorded (rec(), core.record's twin) before the operation.
-- A transition is returned as three integers (-1, -1, -1: none); with pending successes it is
-- the operation's, else the flush's last. A forced-open state (open()) is written without PX
-- and with expiry inf: it never expires. Every reply ends with `reset`: 1 when the stored state
-- was undecodable (NaN, out of range, a half-open state with no permit and no timeout, another
-- type...): it was treated as absent and deleted (the pending successes are then recorded on
-- the fresh state).
local now = now_us()
local c = {struct.unpack('<' .. string.rep('d', #ARGV[2] / 8), ARGV[2])}
local fr, fc, sr, minc, nb, bus, hoc, hot, bad, ttl, cf =
  c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11]
local NCFG = 11  -- fixed configuration values; the open durations (microseconds) follow
local nopen = #c - NCFG - 1  -- the last value is struct.unpack's next position
local TOKEN, UNTIL, OPENS, PERMITS, PASSED, LAST = 1, 2, 3, 4, 5, 6
local STREAK = PASSED  -- CLOSED: failures since the last success (cf: consecutive_failures)
local CALLS, FAILS, SLOW, REJ, STALE, CUR, RING = 7, 8, 9, 10, 11, 12, 13
local RING0 = RING - 1  -- CUR holds core's (0-based) index of the newest bucket's calls
local CLOSED, OPEN, HALF_OPEN = 0, 1, 2  -- state codes: token % 4
local SUCCESS, FAILURE, SLOW_BIT, RELEASE = 0, 1, 2, -1  -- outcomes
local R_FAILURE_RATIO, R_FAILURE_COUNT, R_SLOW_RATIO, R_PROBE_FAILED = 1, 2, 3, 4  -- reasons
local R_PROBES_SUCCEEDED, R_OPEN_ELAPSED, R_HALF_OPEN_TIMEOUT, R_MANUAL = 5, 6, 7, 8
local R_CONSECUTIVE = 9
local M_TICK, M_OPEN, M_RESET = 0, 1, 3  -- manual actions (2: M_CLOSE)
local N = RING0 + 3 * nb
local fmt = '<' .. string.rep('d', N + 1)
local function fdiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local st
local reset = 0  -- 1: the stored state was undecodable (treated as absent, deleted, reported)
local function valid()
  -- integers (NaN, infinities and fractions fail v % 1 == 0); only UNTIL and LAST may be < 0
  for i = 1, N do
    local v = st[i]
    if v % 1 ~= 0 or (v < 0 and i ~= UNTIL and i ~= LAST) then return false end
  end
  local code, u, cur = st[TOKEN] % 4, st[UNTIL], st[CUR]
  if code == 3 or u < -1 or cur < RING0 or cur >= N or (cur - RING0) % 3 ~= 0 then
    return false
  end
  if st[LAST] > fdiv(now, bus) + nb then return false end
  if code == HALF_OPEN and u < 0 and st[PERMITS] <= 0 then return false end  -- no permit/timeout
  if code ~= CLOSED and u >= 0 then
    local longest = hot
    for i = NCFG + 1, NCFG + nopen do
      if c[i] > longest then longest = c[i] end
    end
    if u > now + longest then return false end
  end
  return true
end
local raw = redis.pcall('GET', KEYS[1])
if type(raw) == 'string' and #raw == 8 * (N + 1) then
  st = {struct.unpack(fmt, raw)}
  if st[N + 1] <= now then
    st = nil
  else
    st[N + 1], st[N + 2] = nil, nil
    if not valid() then st, reset = nil, 1 end
  end
elseif raw then
  reset = 1  -- another type or length
end
if reset == 1 then redis.call('DEL', KEYS[1]) end
if not st then
  st = {CLOSED, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, RING0}
  for i = RING, N do st[i] = 0 end
end
local function clear_window(t)
  local e = fdiv(t, bus)
  st[LAST] = e
  st[CUR] = RING0 + (e % nb) * 3
  st[CALLS], st[FAILS], st[SLOW], st[STREAK] = 0, 0, 0, 0
  for i = RING, N do st[i] = 0 end
end
local function roll(e)
  local last = st[LAST]
  if e - last >= nb then
    st[CALLS], st[FAILS], st[SLOW] = 0, 0, 0
    for i = RING, N do st[i] = 0 end
  else
    for k = last + 1, e do
      local i = RING + (k % nb) * 3
      st[CALLS] = st[CALLS] - st[i]
      st[FAILS] = st[FAILS] - st[i + 1]
      st[SLOW] = st[SLOW] - st[i + 2]
      st[i], st[i + 1], st[i + 2] = 0, 0, 0
    end
  end
  st[LAST] = e
  st[CUR] = RING0 + (e % nb) * 3
end
local tf, tt, tr = -1, -1, -1
local function go(to, reason)
  local tok = st[TOKEN]
  tf, tt, tr = tok % 4, to, reason
  st[TOKEN] = (math.floor(tok / 4) + 1) * 4 + to
  if to == OPEN then
    local opens = st[OPENS] + 1
    st[OPENS] = opens
    st[UNTIL] = now + c[NCFG + math.min(opens, nopen)]
  elseif to == HALF_OPEN then
    st[UNTIL] = -1
    st[PERMITS] = hoc
    st[PASSED] = 0
  else
    st[UNTIL] = -1
    st[OPENS] = 0
    clear_window(now)
  end
end
local function tick()
  local code = st[TOKEN] % 4
  local until_ = st[UNTIL]
  if code == OPEN and until_ >= 0 and now >= until_ then
    go(HALF_OPEN, R_OPEN_ELAPSED)
  elseif code == HALF_OPEN and until_ >= 0 and now >= until_ then
    go(OPEN, R_HALF_OPEN_TIMEOUT)
  end
end
local function evaluate()
  local calls = st[CALLS]
  if calls < minc then return 0 end
  local fails = st[FAILS]
  if fr ~= 0 and fails / calls >= fr then return R_FAILURE_RATIO end
  if fc ~= 0 and fails >= fc then return R_FAILURE_COUNT end
  if sr ~= 0 and st[SLOW] / calls >= sr then return R_SLOW_RATIO end
  return 0
end
local function save()
  if st[TOKEN] % 4 == OPEN and st[UNTIL] < 0 then
    -- forced open (open()): no timer and no TTL; it lasts until close() or reset()
    st[N + 1] = math.huge
    redis.call('SET', KEYS[1], struct.pack(fmt, unpack(st)))
    return
  end
  st[N + 1] = now + ttl
  redis.call('SET', KEYS[1], struct.pack(fmt, unpack(st)), 'PX', math.max(1, math.ceil(ttl / 1000)))
end
local function rec(permit, outcome)  -- core.record; true when the state changed
  local tok = st[TOKEN]
  if permit ~= tok then
    if outcome == RELEASE then return false end
    st[STALE] = st[STALE] + 1
    return true
  end
  local code = tok % 4
  if code == CLOSED then
    if outcome == RELEASE then return false end
    local e = fdiv(now, bus)
    if e > st[LAST] then roll(e) end
    local i = st[CUR] + 1
    st[i] = st[i] + 1
    st[CALLS] = st[CALLS] + 1
    if outcome ~= SUCCESS then
      if bit.band(outcome, FAILURE) ~= 0 then
        st[i + 1] = st[i + 1] + 1
        st[FAILS] = st[FAILS] + 1
      end
      if bit.band(outcome, SLOW_BIT) ~= 0 then
        st[i + 2] = st[i + 2] + 1
        st[SLOW] = st[SLOW] + 1
      end
    end
    if cf ~= 0 then
      if bit.band(outcome, FAILURE) ~= 0 then
        st[STREAK] = st[STREAK] + 1
        if st[STREAK] >= cf then
          go(OPEN, R_CONSECUTIVE)
          return true
        end
      else
        st[STREAK] = 0
      end
    end
    if st[FAILS] ~= 0 or st[SLOW] ~= 0 then
      local reason = evaluate()
      if reason ~= 0 then go(OPEN, reason) end
    end
    return true
  end
  if code == HALF_OPEN then
    if outcome == RELEASE then
      st[PERMITS] = st[PERMITS] + 1
      if st[PERMITS] + st[PASSED] >= hoc then st[UNTIL] = -1 end
    elseif bit.band(outcome, bad) ~= 0 then
      go(OPEN, R_PROBE_FAILED)
    else
      st[PASSED] = st[PASSED] + 1
      if st[PASSED] >= hoc then go(CLOSED, R_PROBES_SUCCEEDED) end
    end
    return true
  end
  return false
end
local na = #ARGV  -- core.flush: the last three arguments: successes reported late (permit, count, stale)
local ptok, pn, ps = tonumber(ARGV[na - 2]), tonumber(ARGV[na - 1]), tonumber(ARGV[na])
local dirty = false
if ps > 0 then
  st[STALE] = st[STALE] + ps
  dirty = true
end
for _ = 1, pn do
  if rec(ptok, SUCCESS) then dirty = true end
end
local op = ARGV[3]
if op == 'a' then
  tick()
  local tok = st[TOKEN]
  local code = tok % 4
  if code == CLOSED then
    if tf >= 0 or dirty then save() end
    return {tok, 0, tf, tt, tr, reset}
  end
  if code == HALF_OPEN and st[PERMITS] > 0 then
    st[PERMITS] = st[PERMITS] - 1
    if st[UNTIL] < 0 then st[UNTIL] = now + hot end
    save()
    return {tok, 0, tf, tt, tr, reset}
  end
  st[REJ] = st[REJ] + 1
  save()
  local u = st[UNTIL]
  if u >= 0 then u = u - now end
  return {-1, u, tf, tt, tr, reset}
end
if op == 'r' then
  if rec(tonumber(ARGV[4]), tonumber(ARGV[5])) or dirty then save() end
  return {tf, tt, tr, reset}
end
local action = tonumber(ARGV[4])
local code = st[TOKEN] % 4
if action == M_TICK then
  tick()
elseif action == M_OPEN then
  if code ~= OPEN then go(OPEN, R_MANUAL) end
  st[UNTIL] = -1
else
  if code ~= CLOSED then go(CLOSED, R_MANUAL) end
  if action == M_RESET then
    clear_window(now)
    st[OPENS], st[REJ], st[STALE] = 0, 0, 0
  end
end
code = st[TOKEN] % 4
if code == CLOSED then
  local e = fdiv(now, bus)
  if e > st[LAST] then roll(e) end
end
save()
local streak = 0
if code == CLOSED then streak = st[STREAK] end
return {tf, tt, tr, code, st[CALLS], st[FAILS], st[SLOW], st[REJ], st[STALE], st[OPENS],
        st[UNTIL], streak, now, reset}
