"""What one resource becomes at the edge: a mapped interaction, a skip, or a dead letter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, TypeAlias, get_args

import orjson

SkipReason = Literal["unmapped_type", "not_completed", "not_mapped", "no_resource"]
DeadLetterReason = Literal[
    "not_json",
    "not_a_resource",
    "invalid_resource",
    "bundle_too_deep",
    "no_id",
    "unknown_status",
    "no_subject",
    "bad_subject",
    "missing_time",
    "imprecise_time",
    "invalid_time",
    "missing_value",
    "value_not_integer",
    "value_out_of_range",
]
DEAD_LETTER_REASONS: Final = frozenset(get_args(DeadLetterReason))


@dataclass(frozen=True)
class Mapped:
    """A validated v1 interaction to publish, keyed by its (pseudonymous) subject."""

    resource_type: str
    event_type: str
    key: str
    value: bytes


@dataclass(frozen=True)
class Skipped:
    """A resource the edge does not map; ``resource_type`` is already label-safe."""

    resource_type: str
    reason: SkipReason


@dataclass(frozen=True)
class DeadLetter:
    """A resource of a mapped type that cannot be mapped: its name and why, never its body."""

    reason: str
    resource_type: str | None = None
    resource_id: str | None = None
    version_id: str | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers naming the resource and the reason (absent fields are left out)."""
        named = (
            ("careledger.code", self.reason),
            ("careledger.fhir.resource_type", self.resource_type),
            ("careledger.fhir.id", self.resource_id),
            ("careledger.fhir.version_id", self.version_id),
        )
        return [(name, value.encode()) for name, value in named if value is not None]

    def value(self) -> bytes:
        """The same fields as a small JSON object (the dead letter's record value)."""
        return orjson.dumps(
            {
                "reason": self.reason,
                "resource_type": self.resource_type,
                "id": self.resource_id,
                "version_id": self.version_id,
            }
        )


Outcome: TypeAlias = Mapped | Skipped | DeadLetter


class Refused(Exception):
    """Raised inside a mapping when the resource must be dead-lettered with ``reason``."""

    def __init__(self, reason: DeadLetterReason) -> None:
        super().__init__(reason)
        self.reason: DeadLetterReason = reason


class OutOfScope(Exception):
    """Raised inside a mapping when the resource is not one the edge maps."""

    def __init__(self, reason: SkipReason) -> None:
        super().__init__(reason)
        self.reason: SkipReason = reason
