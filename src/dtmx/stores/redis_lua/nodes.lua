-- KEYS: the server list (zset server -> alive until)
-- ARGV: 1 this server, 2 now, 3 alive until
-- Returns how many servers are alive, this one included.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return redis.call('ZCARD', KEYS[1])
