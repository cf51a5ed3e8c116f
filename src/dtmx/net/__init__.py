"""Network code of the server, fenced here, one module per job (internal, not an API):

- `api_server`: the HTTP/1.1 server the API is served by (asyncio + httptools);
- `branch_client`: HTTP requests to branch URLs (`branch_pool` keeps the keep-alive
  connections, `branch_wire` builds requests and reads answers with httptools);
- `resp`: the pipelined Redis (RESP2) client of the Redis store.

Everything above it speaks in requests and answers; sockets, parsers and their limits
live here.
"""
