-- One admission (SPEC §10.3), atomic, on the server's clock. The same rules as admission.py.
-- KEYS: 1 window requests (HASH slot -> requests admitted in it, '#sum' -> their sum, '#min'
-- -> the oldest slot), 2 window tokens (HASH slot -> tokens, '#sum'), 3 leases (ZSET request
-- id -> expiry), 4 budget (HASH p, used). A slot is 1/60 of the window, counted from the
-- epoch; an entry counts until its slot's end plus the window (60-61 s), as in the SQLite store.
-- ARGV: request id, rpm, tpm, max_parallel (0 = none), tokens, budget limit ('' = none),
-- budget period kind, budget cost, lease ttl (s), window (s); then any settlements of earlier
-- requests of this key, applied first (six ARGV each, see store_redis_settle.lua).
-- Returns {refusal (0 none, 1 requests, 2 tokens, 3 parallel, 4 budget), retry-after ms,
-- remaining requests (-1 = no rpm), reset ms, remaining tokens (-1 = no tpm), budget period,
-- the slot the request was counted in (-1 = none)}.
settle_from(11)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rid = ARGV[1]
local rpm, tpm, par = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local need = tonumber(ARGV[5])
local limit = tonumber(ARGV[6])
local kind, cost, ttl = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local WINDOW = tonumber(ARGV[10])
local WIDTH = WINDOW / 60
local first = math.floor((now - WINDOW) / WIDTH) -- the oldest slot still in the window
local slot = math.floor(now / WIDTH)

local function period_of(seconds)
  local day = math.floor(seconds / 86400)
  if kind == 'day' then return day end
  if kind == 'week' then return math.floor((day + 3) / 7) end
  if kind ~= 'month' then return 0 end
  -- the civil date of a day number, for the month index year * 12 + month - 1
  local z = day + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y * 12 + m - 1
end

-- Slots that left the window go, and their counts with them; the oldest one left, or nil.
-- Runs when '#min' fell out of the window: about once a slot width per busy key.
local function drop_expired()
  local dead, oldest = {}, nil
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    local s = tonumber(field)
    if s then
      if s < first then dead[#dead + 1] = field
      elseif not oldest or s < oldest then oldest = s end
    end
  end
  for k = 1, 2 do
    if #dead > 0 then
      local gone = 0
      for _, v in ipairs(redis.call('HMGET', KEYS[k], unpack(dead))) do
        gone = gone + (tonumber(v) or 0)
      end
      redis.call('HDEL', KEYS[k], unpack(dead))
      if gone ~= 0 then redis.call('HINCRBY', KEYS[k], '#sum', -gone) end
    end
  end
  if oldest then redis.call('HSET', KEYS[1], '#min', oldest) else redis.call('HDEL', KEYS[1], '#min') end
  return oldest
end

local windowed = rpm > 0 or tpm > 0
local requests, tokens, oldest, min = 0, 0, nil, nil
if windowed then
  local head = redis.call('HMGET', KEYS[1], '#sum', '#min')
  min = tonumber(head[2])
  if min and min < first then
    min = drop_expired()
    head = redis.call('HMGET', KEYS[1], '#sum')
  end
  requests = tonumber(head[1]) or 0
  tokens = tonumber(redis.call('HGET', KEYS[2], '#sum') or '0')
  if min then oldest = (min + 1) * WIDTH end -- the end of the oldest slot
end
local leases = 0
if par > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  leases = redis.call('ZCARD', KEYS[3])
end
local period, used = period_of(now), 0
if limit then
  local b = redis.call('HMGET', KEYS[4], 'p', 'used')
  if b[1] and tonumber(b[1]) == period then used = tonumber(b[2]) end
end

local fit = math.min(need, tpm)
local refused = 0
if rpm > 0 and requests >= rpm then refused = 1
elseif tpm > 0 and tokens + fit > tpm then refused = 2
elseif par > 0 and leases >= par then refused = 3
elseif limit and used >= limit then refused = 4 end

local reset = 0
if oldest then reset = oldest + WINDOW - now end
local retry = 0
if refused == 1 then retry = reset
elseif refused == 3 then retry = 1
elseif refused == 2 then
  local excess = tokens + fit - tpm
  retry = WINDOW
  local slots = {}
  local all = redis.call('HGETALL', KEYS[2])
  for i = 1, #all, 2 do
    local s = tonumber(all[i])
    if s and s >= first then slots[#slots + 1] = {s, tonumber(all[i + 1])} end
  end
  table.sort(slots, function(a, b) return a[1] < b[1] end)
  for _, entry in ipairs(slots) do
    excess = excess - entry[2]
    if excess <= 0 then retry = (entry[1] + 1) * WIDTH + WINDOW - now break end
  end
end

if refused == 0 then
  if windowed then
    redis.call('HINCRBY', KEYS[1], slot, 1)
    redis.call('HINCRBY', KEYS[1], '#sum', 1)
    if not min or slot < min then redis.call('HSET', KEYS[1], '#min', slot) end
    redis.call('HINCRBY', KEYS[2], slot, need)
    redis.call('HINCRBY', KEYS[2], '#sum', need)
    local keep = math.ceil((WINDOW + WIDTH + 1) * 1000)
    redis.call('PEXPIRE', KEYS[1], keep)
    redis.call('PEXPIRE', KEYS[2], keep)
    requests, tokens = requests + 1, tokens + need
    if not oldest then reset = WINDOW end
  end
  if par > 0 then
    redis.call('ZADD', KEYS[3], now + ttl, rid)
    redis.call('PEXPIRE', KEYS[3], math.ceil((ttl + 1) * 1000))
  end
  if limit then
    redis.call('HSET', KEYS[4], 'p', period, 'used', used + cost)
  end
end

local remaining_requests, remaining_tokens = -1, -1
if rpm > 0 then remaining_requests = math.max(rpm - requests, 0) end
if tpm > 0 then remaining_tokens = math.max(tpm - tokens, 0) end
local counted = -1
if refused == 0 and windowed then counted = slot end
-- retry-after in whole ms, rounded up: a refusal never says "now" while the entry is still in.
return {refused, math.ceil(math.max(retry, 0) * 1000), remaining_requests,
  math.floor(math.max(reset, 0) * 1000), remaining_tokens, period, counted}
