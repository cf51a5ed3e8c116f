-- KEYS: hash of the category, its key index
-- ARGV: 1 key
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])
