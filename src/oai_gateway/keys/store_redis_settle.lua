-- The reconciliations of earlier admitted requests of one key; KEYS as in store_redis_admit.lua.
-- Six ARGV each, from `first` on: request id, the window slot it was counted in ('' = none),
-- tokens delta, budget delta, budget period charged, release lease (1/0). The settlement
-- script runs it from ARGV[1]; the admission script from ARGV[11], so a settlement can ride
-- along with the key's next admission. A slot already gone from the window is not corrected.
local function settle_from(first)
  for i = first, #ARGV - 5, 6 do
    local rid, slot = ARGV[i], ARGV[i + 1]
    local tokens = tonumber(ARGV[i + 2])
    if tokens ~= 0 and slot ~= '' and redis.call('HEXISTS', KEYS[2], slot) == 1 then
      redis.call('HINCRBY', KEYS[2], slot, tokens)
      redis.call('HINCRBY', KEYS[2], '#sum', tokens)
    end
    local cost = tonumber(ARGV[i + 3])
    if cost ~= 0 and redis.call('HGET', KEYS[4], 'p') == ARGV[i + 4] then
      redis.call('HINCRBYFLOAT', KEYS[4], 'used', cost)
    end
    if ARGV[i + 5] == '1' then redis.call('ZREM', KEYS[3], rid) end
  end
end
