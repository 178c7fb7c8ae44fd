-- The reconciliations of earlier admitted requests of one key; KEYS as in store_redis_admit.lua.
-- Five ARGV each, from `first` on: request id, tokens delta, budget delta, budget period
-- charged, release lease (1/0). The settlement script runs it from ARGV[1]; the admission
-- script from ARGV[11], so a settlement can ride along with the key's next admission.
local function settle_from(first)
  for i = first, #ARGV - 4, 5 do
    local rid = ARGV[i]
    local tokens = tonumber(ARGV[i + 1])
    if tokens ~= 0 and redis.call('HEXISTS', KEYS[2], rid) == 1 then
      redis.call('HINCRBY', KEYS[2], rid, tokens)
      redis.call('HINCRBY', KEYS[2], '#sum', tokens)
    end
    local cost = tonumber(ARGV[i + 2])
    if cost ~= 0 and redis.call('HGET', KEYS[4], 'p') == ARGV[i + 3] then
      redis.call('HINCRBYFLOAT', KEYS[4], 'used', cost)
    end
    if ARGV[i + 4] == '1' then redis.call('ZREM', KEYS[3], rid) end
  end
end
