"""The user-score rpc service."""
