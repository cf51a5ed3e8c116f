"""The user rpc service."""
