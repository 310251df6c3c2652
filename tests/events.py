"""Builders for v1 CloudEvents as upstream systems would publish them."""

from __future__ import annotations

import itertools
import json
from datetime import datetime
from typing import Any

_ids = itertools.count(1)


def cloudevent(
    event_type: str,
    subject: str,
    time: str | datetime,
    data: dict[str, Any],
    *,
    id: str | None = None,
    source: str = "urn:careledger:test",
    programid: str | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": id or f"evt-{next(_ids)}",
        "source": source,
        "type": event_type,
        "time": time if isinstance(time, str) else time.isoformat(),
        "subject": subject,
        "data": data,
    }
    if programid:
        event["programid"] = programid
    return event


def jsonl(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)
