"""custom_data: the JSON object text in which a transaction type keeps its own settings."""

from __future__ import annotations

from typing import Any

import orjson

from dtmx.errors import BadRequest


def custom_object(custom_data: str) -> dict[str, Any]:
    """`custom_data` decoded; BadRequest unless it is the JSON text of an object."""
    try:
        raw = orjson.loads(custom_data)
    except orjson.JSONDecodeError:
        raise BadRequest("custom_data must be JSON text") from None
    if not isinstance(raw, dict):
        raise BadRequest("custom_data must be a JSON object")
    return raw
