"""The fixed set of rejection codes: small and stable, so each can be a metrics label."""

from typing import Final, Literal, get_args

Code = Literal[
    "too_large",
    "bad_encoding",
    "not_json",
    "not_object",
    "duplicate_key",
    "unsupported_specversion",
    "unknown_type",
    "unknown_field",
    "missing_field",
    "invalid_field",
    "time_in_future",
]

CODES: Final[frozenset[str]] = frozenset(get_args(Code))
