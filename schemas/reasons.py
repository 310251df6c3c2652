"""Turn pydantic validation errors into a (code, reason) pair that is safe to log.

Pydantic's own messages and error dicts may carry the offending input, which can be PHI,
so reasons are rebuilt from three value-free parts: the field path (names from our schema,
or identifier-like unknown names), the field's rule (its description in the model) and a
fixed phrase for the kind of failure.
"""

from typing import Any, Final

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from schemas.codes import Code
from schemas.strict_json import safe_name

# Unknown fields first (the PHI risk), then missing, then invalid; within a code, by path,
# so the reported error does not depend on the order of keys in the payload.
_PRIORITY: Final[dict[Code, int]] = {"unknown_field": 0, "missing_field": 1, "invalid_field": 2}

_KINDS: Final = {
    "json_type": "wrong JSON type",
    "string_type": "wrong JSON type",
    "int_type": "wrong JSON type",
    "model_type": "wrong JSON type",
    "model_attributes_type": "wrong JSON type",
    "dict_type": "wrong JSON type",
    "literal_error": "not an allowed value",
    "string_too_short": "too short",
    "string_too_long": "too long",
    "string_pattern_mismatch": "disallowed characters or wrong format",
    "greater_than_equal": "out of range",
    "less_than_equal": "out of range",
    "timestamp_naive": "no UTC offset",
    "timestamp_format": "not an RFC 3339 timestamp",
    "timestamp_range": "not a real date, time or offset",
    "date_format": "not in YYYY-MM-DD form",
    "date_range": "not a real calendar date",
    "amount_format": "not a plain decimal with at most 2 places",
    "amount_range": "out of range",
    "points_zero": "zero adjusts nothing",
}


def _rule(model: type[BaseModel], names: list[str]) -> str | None:
    """The description of the field at ``names``, following nested models."""
    field = model.model_fields.get(names[0]) if names else None
    if field is None:
        return None
    nested = field.annotation
    if len(names) > 1 and isinstance(nested, type) and issubclass(nested, BaseModel):
        return _rule(nested, names[1:]) or field.description
    return field.description


def _one(model: type[BaseModel], error: ErrorDetails) -> tuple[Code, str, str]:
    """(code, path, reason) for one pydantic error."""
    names = [str(part) for part in error["loc"]]
    kind = error["type"]
    if kind == "extra_forbidden":
        path = ".".join([*names[:-1], safe_name(names[-1])])
        return "unknown_field", path, f"{path}: unknown field, not part of the v1 contract"
    path = ".".join(names) or "event"
    if kind == "missing":
        return "missing_field", path, f"{path}: required field is missing"
    rule = _rule(model, names) or "must match the v1 contract"
    detail = _KINDS.get(kind)
    return "invalid_field", path, f"{path}: {rule}" + (f" ({detail})" if detail else "")


def explain(model: type[BaseModel], exc: ValidationError, *, skip: int = 0) -> tuple[Code, str]:
    """The first error by a stable order as (code, reason), noting how many more there were.

    ``skip`` drops leading location parts, such as the tag a discriminated union adds.
    """
    found: list[tuple[int, str, Code, str]] = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        trimmed: Any = {**error, "loc": error["loc"][skip:]}
        code, path, reason = _one(model, trimmed)
        found.append((_PRIORITY[code], path, code, reason))
    found.sort()
    _, _, code, reason = found[0]
    more = len(found) - 1
    return code, reason + (f" (+{more} more)" if more else "")
