-- KEYS: g, b
-- ARGV: 1 expect_status, then 6 values per branch (see add_branch).
-- Returns 1 if inserted, 0 if the global is missing or has another status,
-- -1 if a (branch_id, op) is already there (nothing inserted in either case).
local g, b = KEYS[1], KEYS[2]
if redis.call('HGET', g, 'status') ~= ARGV[1] then return 0 end
for a = 2, #ARGV, 6 do
  if redis.call('HEXISTS', b, 'i:' .. ARGV[a]) == 1 then return -1 end
end
for a = 2, #ARGV, 6 do add_branch(b, a) end
-- the branches live exactly as long as their global transaction
local ttl = redis.call('PTTL', g)
if ttl > 0 then redis.call('PEXPIRE', b, ttl) end
return 1
