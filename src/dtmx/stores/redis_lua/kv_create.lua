-- KEYS: hash of the category, its index (key -> creation sequence), the sequence counter
-- ARGV: 1 key, 2 record ("version\ncreate_time\nupdate_time\nvalue")
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1])
return 1
