"""Argument types the subcommands share."""

from __future__ import annotations

import argparse
from datetime import datetime


def instant(text: str) -> datetime:
    """An RFC 3339 timestamp with its offset (``Z`` or ``+01:00``); a naive one is refused."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError("expected an RFC 3339 timestamp") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("the timestamp needs an offset, e.g. Z or +01:00")
    return value
