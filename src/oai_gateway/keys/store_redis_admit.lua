-- One admission (SPEC §10.3), atomic, on the server's clock. The same rules as admission.py.
-- KEYS: 1 window log (ZSET request id -> admitted at), 2 window tokens (HASH request id ->
-- tokens, '#sum' -> their sum), 3 leases (ZSET request id -> expiry), 4 budget (HASH p, used).
-- ARGV: request id, rpm, tpm, max_parallel (0 = none), tokens, budget limit ('' = none),
-- budget period kind, budget cost, lease ttl (s), window (s); then any settlements of earlier
-- requests of this key, applied first (five ARGV each, see store_redis_settle.lua).
-- Returns {refusal (0 none, 1 requests, 2 tokens, 3 parallel, 4 budget), retry-after ms,
-- remaining requests (-1 = no rpm), reset ms, remaining tokens (-1 = no tpm), budget period}.
settle_from(11)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rid = ARGV[1]
local rpm, tpm, par = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local need = tonumber(ARGV[5])
local limit = tonumber(ARGV[6])
local kind, cost, ttl = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local WINDOW = tonumber(ARGV[10])

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

local function drop_expired()
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - WINDOW)
  local freed = 0
  for i = 1, #gone, 500 do -- in slices: unpack has a stack limit
    local slice = {unpack(gone, i, math.min(i + 499, #gone))}
    for _, v in ipairs(redis.call('HMGET', KEYS[2], unpack(slice))) do
      freed = freed + (tonumber(v) or 0)
    end
    redis.call('HDEL', KEYS[2], unpack(slice))
  end
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - WINDOW)
  end
  if freed ~= 0 then -- never -0: Redis would read "-0" as no integer
    redis.call('HINCRBY', KEYS[2], '#sum', -freed)
  end
end

local windowed = rpm > 0 or tpm > 0
local requests, tokens, oldest = 0, 0, nil
if windowed then
  drop_expired()
  requests = redis.call('ZCARD', KEYS[1])
  tokens = tonumber(redis.call('HGET', KEYS[2], '#sum') or '0')
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #first > 0 then oldest = tonumber(first[2]) end
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
  local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do
    excess = excess - (tonumber(redis.call('HGET', KEYS[2], all[i])) or 0)
    if excess <= 0 then retry = tonumber(all[i + 1]) + WINDOW - now break end
  end
end

if refused == 0 then
  if windowed then
    redis.call('ZADD', KEYS[1], now, rid)
    redis.call('HSET', KEYS[2], rid, need)
    redis.call('HINCRBY', KEYS[2], '#sum', need)
    redis.call('PEXPIRE', KEYS[1], math.ceil((WINDOW + 1) * 1000))
    redis.call('PEXPIRE', KEYS[2], math.ceil((WINDOW + 1) * 1000))
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
return {refused, math.floor(math.max(retry, 0) * 1000), remaining_requests,
  math.floor(math.max(reset, 0) * 1000), remaining_tokens, period}
