"""Shared plumbing of the mall services: config, database, cache, discovery, tracing."""
