"""Operator commands: `dtmx tx|topics|servers` against a running server, and
`dtmx barrier prune` against a business database. Standard library plus the SDK's
dependencies only (prune imports the database driver it needs when it runs)."""
