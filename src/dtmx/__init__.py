"""dtmx: a distributed transaction manager wire-compatible with DTM, and its Python SDK."""

__version__ = "0.1.0"
