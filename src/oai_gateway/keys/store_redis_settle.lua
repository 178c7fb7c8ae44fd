-- The reconciliation of one admitted request; KEYS as in store_redis_admit.lua.
-- ARGV: request id, tokens delta, budget delta, budget period charged, release lease (1/0).
local rid = ARGV[1]
local tokens = tonumber(ARGV[2])
if tokens ~= 0 and redis.call('HEXISTS', KEYS[2], rid) == 1 then
  redis.call('HINCRBY', KEYS[2], rid, tokens)
  redis.call('HINCRBY', KEYS[2], '#sum', tokens)
end
local cost = tonumber(ARGV[3])
if cost ~= 0 and redis.call('HGET', KEYS[4], 'p') == ARGV[4] then
  redis.call('HINCRBYFLOAT', KEYS[4], 'used', cost)
end
if ARGV[5] == '1' then redis.call('ZREM', KEYS[3], rid) end
return 0
