"""A JSON reader stricter than ``json.loads``, for untrusted event payloads.

The standard reader keeps the last of two duplicate keys (so two systems can read one
payload differently), accepts NaN/Infinity, turns "\\ud800" escapes into lone surrogates
that cannot be encoded again, and converts digit strings of any length into ints (slow,
and over 4300 digits a ValueError). Each of those is rejected here with a specific code.
Messages never quote the payload: only key names that look like identifiers are named.
"""

import json
import re
from typing import Any, Final

from schemas.codes import Code

MAX_INT_DIGITS: Final = 100
_SAFE_NAME = re.compile(r"[A-Za-z0-9_]{1,32}")


class JsonRejected(Exception):
    """Raised when a payload is not acceptable JSON; ``code`` says which rule it broke."""

    def __init__(self, code: Code, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def safe_name(name: object) -> str:
    """A key name fit for a log or reason: identifiers pass, anything else may be PHI."""
    if isinstance(name, str) and _SAFE_NAME.fullmatch(name):
        return name
    return "(name withheld)"


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonRejected(
                    "duplicate_key", f"key {safe_name(key)} appears twice in one object"
                )
            seen.add(key)
    return obj


def _constant(name: str) -> Any:
    raise JsonRejected("not_json", "payload: NaN and Infinity are not JSON numbers")


def _integer(digits: str) -> int:
    if len(digits) > MAX_INT_DIGITS:
        raise JsonRejected(
            "not_json", f"payload: integer literal longer than {MAX_INT_DIGITS} digits"
        )
    return int(digits)


def _check_strings(doc: Any) -> None:
    """Reject lone surrogates in keys and strings; iterative so depth cannot overflow."""
    stack: list[tuple[str, Any]] = [("payload", doc)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                child = f"{path}.{safe_name(key)}" if path != "payload" else safe_name(key)
                _require_encodable(key, f"a key in {path}")
                stack.append((child, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
        elif isinstance(value, str):
            _require_encodable(value, path)


def _require_encodable(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise JsonRejected(
            "bad_encoding", f"{path}: contains a lone UTF-16 surrogate escape"
        ) from None


# One reader for every payload: ``json.loads`` with hooks builds a new decoder per call.
_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_object, parse_constant=_constant, parse_int=_integer
)


def load(text: str) -> Any:
    """Parse one JSON document, raising JsonRejected for anything the rules above forbid."""
    try:
        doc = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        # exc.msg is a fixed parser phrase such as "Expecting ',' delimiter"; no payload text.
        where = f"line {exc.lineno} column {exc.colno}"
        raise JsonRejected("not_json", f"payload: not valid JSON ({exc.msg} at {where})") from None
    except RecursionError:
        raise JsonRejected("not_json", "payload: JSON nested too deeply") from None
    # A lone surrogate can only come from a \uD8xx-\uDFxx escape: skip the walk without one.
    if "\\ud" in text or "\\uD" in text:
        _check_strings(doc)
    return doc
