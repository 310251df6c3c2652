"""Wire schemas for patient interactions, separate from the domain events they feed.

``parse_interaction`` is the one way raw bytes become a model; ``schemas.v1`` holds the
pydantic models (the source of truth) and ``python -m schemas.generate`` publishes them as
JSON Schema under ``schemas/json/v1``.
"""

from schemas.codes import CODES, Code
from schemas.v1 import DEFAULT_PROGRAM_ID, EVENT_TYPES, MAX_EVENT_BYTES, InteractionV1
from schemas.validation import InvalidInteraction, parse_interaction

__all__ = [
    "CODES",
    "DEFAULT_PROGRAM_ID",
    "EVENT_TYPES",
    "MAX_EVENT_BYTES",
    "Code",
    "InteractionV1",
    "InvalidInteraction",
    "parse_interaction",
]
