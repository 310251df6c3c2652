"""Parse one raw interaction into a v1 model, or reject it with a dead-letter-ready reason.

Checks run cheapest and most fundamental first (size, encoding, JSON, shape, version, type,
fields, clock) so a hostile payload is refused before any costly work. A rejection carries a
code from the fixed set in ``schemas.codes`` and a reason that names the field and the rule
but never the offending value, because values may be PHI.
"""

import logging
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from pydantic import TypeAdapter, ValidationError

from schemas import strict_json
from schemas.codes import CODES, Code
from schemas.fields import EventId, EventSource, PatientId, ProgramId
from schemas.reasons import explain
from schemas.v1 import (
    DEFAULT_PROGRAM_ID,
    MAX_EVENT_BYTES,
    MODELS_BY_TYPE,
    SPEC_VERSION,
    InteractionV1,
)

__all__ = ["CODES", "FUTURE_TOLERANCE", "Code", "InvalidInteraction", "parse_interaction"]

FUTURE_TOLERANCE: Final = timedelta(hours=24)

_log = logging.getLogger(__name__)
_UTF8_BOM: Final = b"\xef\xbb\xbf"
_INTERACTION: Final = TypeAdapter[InteractionV1](InteractionV1)
_EVENT_ID: Final = TypeAdapter[str](EventId)
_EVENT_SOURCE: Final = TypeAdapter[str](EventSource)
_SUBJECT: Final = TypeAdapter[str](PatientId)
_PROGRAM: Final = TypeAdapter[str](ProgramId)


class InvalidInteraction(Exception):
    """Raised when a raw interaction breaks the v1 contract; safe to log and dead-letter.

    ``source``/``source_id`` are set only when the payload's own source and id were valid,
    so the dead-letter record can name the event without repeating hostile input; so are
    ``subject``/``program_id`` (never stored: the ledger seals the dead letter's id with that
    patient's key, so erasure shreds it too, ADR 0015).
    """

    def __init__(
        self,
        code: Code,
        reason: str,
        *,
        source: str | None = None,
        source_id: str | None = None,
    ) -> None:
        super().__init__(code, reason)
        self.code: Code = code
        self.reason = reason
        self.source = source
        self.source_id = source_id
        self.subject: str | None = None
        self.program_id: str | None = None

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


def parse_interaction(raw: bytes | str, *, now: datetime) -> InteractionV1:
    """Validate one structured-mode CloudEvent against contract v1.

    ``now`` is the ingest clock (tz-aware); a naive ``now`` is a caller bug and raises
    ValueError. Everything wrong with ``raw`` raises InvalidInteraction, nothing else.
    """
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    with _Guard("bad_encoding", "payload"):
        text = _decode(raw)
    with _Guard("not_json", "payload"):
        doc = strict_json.load(text)
    if not isinstance(doc, dict):
        raise InvalidInteraction("not_object", "payload: top-level JSON value must be an object")
    try:
        with _Guard("invalid_field", "event"):
            return _validate(doc, now)
    except InvalidInteraction as exc:
        exc.source = _valid_or_none(_EVENT_SOURCE, doc.get("source"))
        exc.source_id = _valid_or_none(_EVENT_ID, doc.get("id"))
        exc.subject = _valid_or_none(_SUBJECT, doc.get("subject"))
        exc.program_id = _valid_or_none(_PROGRAM, doc.get("programid", DEFAULT_PROGRAM_ID))
        raise


class _Guard:
    """Translate a stage's failures; an unexpected error is logged and kept as __cause__.

    A class rather than ``@contextmanager``: it wraps two stages of every event, and the
    generator-based form costs more than the stages it guards.
    """

    __slots__ = ("code", "where")

    def __init__(self, code: Code, where: str) -> None:
        self.code, self.where = code, where

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _: object
    ) -> Literal[False]:
        if exc is None or isinstance(exc, InvalidInteraction) or not isinstance(exc, Exception):
            return False
        if isinstance(exc, strict_json.JsonRejected):
            raise InvalidInteraction(exc.code, exc.reason) from None
        # Only the type is logged: the message of an unexpected error may quote the payload.
        code, where = self.code, self.where
        _log.error("unexpected %s checking %s; rejected as %s", type(exc).__name__, where, code)
        reason = f"{where}: could not be checked (internal {type(exc).__name__})"
        raise InvalidInteraction(code, reason) from exc


def _decode(raw: object) -> str:
    if isinstance(raw, str):
        if len(raw) > MAX_EVENT_BYTES:  # every character takes at least one byte
            raise _too_large()
        # surrogatepass lets the size check run first; the strict decode below refuses them.
        data = raw.encode("utf-8", "surrogatepass")
    elif isinstance(raw, bytes | bytearray | memoryview):
        data = bytes(raw)
    else:
        raise InvalidInteraction(
            "bad_encoding", f"payload: must be bytes or str, not {type(raw).__name__}"
        )
    if len(data) > MAX_EVENT_BYTES:
        raise _too_large()
    if data.startswith(_UTF8_BOM):
        raise InvalidInteraction("bad_encoding", "payload: must not start with a byte order mark")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInteraction(
            "bad_encoding", f"payload: not valid UTF-8 (at byte offset {exc.start})"
        ) from None


def _too_large() -> InvalidInteraction:
    return InvalidInteraction("too_large", f"payload: larger than {MAX_EVENT_BYTES} bytes")


def _validate(doc: dict[str, Any], now: datetime) -> InteractionV1:
    if "specversion" not in doc:
        raise InvalidInteraction("missing_field", "specversion: required field is missing")
    spec = doc["specversion"]
    if not isinstance(spec, str) or spec != SPEC_VERSION:
        raise InvalidInteraction(
            "unsupported_specversion", f'specversion: must be exactly "{SPEC_VERSION}"'
        )
    if "type" not in doc:
        raise InvalidInteraction("missing_field", "type: required field is missing")
    kind = doc["type"]
    if not isinstance(kind, str) or kind not in MODELS_BY_TYPE:
        raise InvalidInteraction("unknown_type", "type: not one of the v1 event types")
    try:
        event = _INTERACTION.validate_python(doc)
    except ValidationError as exc:
        # skip=1 drops the union tag that pydantic puts in front of every location.
        code, reason = explain(MODELS_BY_TYPE[kind], exc, skip=1)
        raise InvalidInteraction(code, reason) from None
    if event.time - now > FUTURE_TOLERANCE:
        raise InvalidInteraction(
            "time_in_future", "time: must not be more than 24 hours ahead of the ingest clock"
        )
    return event


def _valid_or_none(adapter: TypeAdapter[str], value: object) -> str | None:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None
