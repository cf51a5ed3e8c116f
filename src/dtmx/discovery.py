"""Service discovery (etcd): placeholder until the gRPC/etcd work lands."""

from __future__ import annotations

from typing import Any

from dtmx.errors import ConfigError
from dtmx.settings import Settings


async def register_from_settings(settings: Settings) -> Any:
    raise ConfigError("etcd registration is not available in this build")
