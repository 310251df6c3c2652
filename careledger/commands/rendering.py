"""JSON for humans and machines: decimals as strings, times as RFC 3339."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    raise TypeError(f"cannot render {type(value).__name__}")


def to_json(value: Any) -> str:
    """Render ``value`` as JSON with careledger's conventions."""
    return json.dumps(value, default=_default)
