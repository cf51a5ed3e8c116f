"""Tests of the mall (full mode: MariaDB, Redis, etcd, a real dtmx server)."""
