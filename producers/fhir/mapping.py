"""FHIR R4 resources to v1 interactions: a pure function from one Kafka message to outcomes.

One message holds one resource, or a Bundle (of any type) whose entries are taken one by one.
Each resource becomes exactly one outcome:

* :class:`Mapped`: a v1 CloudEvent, already validated by ``schemas.validation``, keyed by its
  pseudonymous subject. It carries the pseudonyms, program, codes, numbers and times of
  docs/fhir.md and nothing else of the resource.
* :class:`Skipped`: a resource the edge does not map (another type, not done yet, codes out
  of scope). Counted, never sent anywhere.
* :class:`DeadLetter`: a resource of a mapped type that cannot be mapped. It names the
  resource (type, id, versionId) and a reason code, never its body: the EMR keeps the original.

Resources are read through small pydantic models holding only the fields a mapping needs
(unknown fields are ignored, so names, addresses, narrative and notes are never even read),
and a model's validation errors are never shown (their messages quote input values).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any, Final, Literal, TypeAlias, get_args
from zoneinfo import ZoneInfo

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from producers.fhir import r4
from producers.fhir.pseudonyms import Pseudonyms
from schemas.fields import EventSource, ProgramId
from schemas.v1 import CheckupType
from schemas.validation import InvalidInteraction, parse_interaction

__all__ = [
    "DEFAULT_ANNUAL_WELLNESS_CODES",
    "DEFAULT_DENTAL_CLEANING_CODES",
    "DEFAULT_SCREENING_CODES",
    "DEFAULT_SPECIALIST_CODES",
    "STEPS_CODES",
    "CodeToken",
    "DeadLetter",
    "Mapped",
    "MappingConfig",
    "Outcome",
    "Skipped",
    "Translator",
]

# Defaults (docs/fhir.md). A bare code matches that code in any system; "system|code" pins it.
DEFAULT_ANNUAL_WELLNESS_CODES: Final = ("G0438", "G0439")  # HCPCS: Medicare annual wellness
DEFAULT_DENTAL_CLEANING_CODES: Final = ("D1110",)  # CDT: prophylaxis, adult
DEFAULT_SCREENING_CODES: Final = (
    "77067",  # CPT: screening mammography, bilateral
    "G0121",  # HCPCS: colorectal cancer screening, colonoscopy (not high risk)
    "G0105",  # HCPCS: colorectal cancer screening, colonoscopy (high risk)
    "G0104",  # HCPCS: colorectal cancer screening, flexible sigmoidoscopy
    "82270",  # CPT: occult blood, feces (screening)
    "G0101",  # HCPCS: cervical or vaginal cancer screening; pelvic and breast exam
    "71271",  # CPT: low-dose CT for lung cancer screening
    "G0442",  # HCPCS: annual alcohol misuse screening
    "G0444",  # HCPCS: annual depression screening
    "76706",  # CPT: ultrasound screening for abdominal aortic aneurysm
)
DEFAULT_SPECIALIST_CODES: Final = tuple(
    f"http://snomed.info/sct|{code}"
    for code in (
        "394579002",  # Cardiology
        "394582007",  # Dermatology
        "394583002",  # Endocrinology
        "394584008",  # Gastroenterology
        "394591006",  # Neurology
        "394594003",  # Ophthalmology
        "394801008",  # Trauma and orthopedics
    )
)
STEPS_CODES: Final = frozenset({"41950-7", "55423-8"})  # LOINC: steps in 24 h; steps, pedometer
MAX_BUNDLE_DEPTH: Final = 3  # a Bundle in a Bundle in a Bundle, and no deeper

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
"""Every reason a dead letter can carry, besides the v1 contract's codes (schemas.codes)."""

_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_PATIENT_REFERENCE = re.compile(
    r"(?:[a-z][a-z0-9+.-]*://[^\s/]+(?:/[^\s/]+)*/)?Patient/([A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)
_DATETIME = re.compile(
    r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2})"
    r"(?:T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?(Z|[+-][0-9]{2}:[0-9]{2}))?)?)?"
)
_SOURCE: Final = TypeAdapter[str](EventSource)
_PROGRAM: Final = TypeAdapter[str](ProgramId)


# ------------------------------------------------------------------------------ outcomes
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


class _Refused(Exception):
    """Raised inside a mapping when the resource must be dead-lettered with ``reason``."""

    def __init__(self, reason: DeadLetterReason) -> None:
        super().__init__(reason)
        self.reason: DeadLetterReason = reason


class _OutOfScope(Exception):
    """Raised inside a mapping when the resource is not one the edge maps."""

    def __init__(self, reason: SkipReason) -> None:
        super().__init__(reason)
        self.reason: SkipReason = reason


# ------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class CodeToken:
    """A code to match: ``system|code`` matches only in that system, a bare code in any."""

    code: str
    system: str | None = None

    @classmethod
    def parse(cls, token: str) -> CodeToken:
        system, bar, code = token.strip().rpartition("|")
        if not code or (bar and not system):
            raise ValueError("a code token is CODE or SYSTEM|CODE")
        return cls(code, system or None)

    def matches(self, coding: _Coding) -> bool:
        return coding.code == self.code and self.system in (None, coding.system)


def _tokens(tokens: Sequence[str]) -> tuple[CodeToken, ...]:
    return tuple(CodeToken.parse(token) for token in tokens if token.strip())


@dataclass(frozen=True)
class MappingConfig:
    """What the mapping needs to know besides the resource (built once, from settings)."""

    source: str
    program_id: str
    zone: ZoneInfo
    specialist: tuple[CodeToken, ...] = field(default=_tokens(DEFAULT_SPECIALIST_CODES))
    checkups: Mapping[CheckupType, tuple[CodeToken, ...]] = field(
        default_factory=lambda: {
            "annual_wellness": _tokens(DEFAULT_ANNUAL_WELLNESS_CODES),
            "dental_cleaning": _tokens(DEFAULT_DENTAL_CLEANING_CODES),
            "screening": _tokens(DEFAULT_SCREENING_CODES),
        }
    )

    def __post_init__(self) -> None:
        try:
            _SOURCE.validate_python(self.source)
            _PROGRAM.validate_python(self.program_id)
        except ValidationError:
            raise ValueError(
                "the FHIR source must be 1 to 256 printable ASCII characters and the program "
                "id a valid program id"
            ) from None

    @classmethod
    def from_lists(
        cls,
        source: str,
        program_id: str,
        zone: ZoneInfo,
        *,
        specialist: Sequence[str],
        annual_wellness: Sequence[str],
        dental_cleaning: Sequence[str],
        screening: Sequence[str],
    ) -> MappingConfig:
        """A config from code lists as the settings hold them (tokens, see :class:`CodeToken`)."""
        return cls(
            source,
            program_id,
            zone,
            _tokens(specialist),
            {
                "annual_wellness": _tokens(annual_wellness),
                "dental_cleaning": _tokens(dental_cleaning),
                "screening": _tokens(screening),
            },
        )


# ------------------------------------------------------------- the fields the edge reads
class _Fhir(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, populate_by_name=True)


class _Coding(_Fhir):
    system: str | None = None
    code: str | None = None


class _Concept(_Fhir):
    coding: list[_Coding] = []


class _Reference(_Fhir):
    reference: str | None = None


class _Period(_Fhir):
    start: str | None = None
    end: str | None = None


class _Quantity(_Fhir):
    value: int | float | None = None


class _Meta(_Fhir):
    versionId: str | None = None
    lastUpdated: str | None = None


class _Resource(_Fhir):
    resourceType: str
    id: str | None = None
    meta: _Meta | None = None
    status: str | None = None


class _Encounter(_Resource):
    class_: _Coding | None = Field(None, alias="class")
    type: list[_Concept] = []
    serviceType: _Concept | None = None
    period: _Period | None = None
    subject: _Reference | None = None


class _Procedure(_Resource):
    code: _Concept | None = None
    performedDateTime: str | None = None
    performedPeriod: _Period | None = None
    subject: _Reference | None = None


class _Immunization(_Resource):
    occurrenceDateTime: str | None = None
    patient: _Reference | None = None


class _QuestionnaireResponse(_Resource):
    authored: str | None = None
    subject: _Reference | None = None


class _Observation(_Resource):
    code: _Concept | None = None
    effectiveDateTime: str | None = None
    effectiveInstant: str | None = None
    effectivePeriod: _Period | None = None
    valueQuantity: _Quantity | None = None
    subject: _Reference | None = None


class _Entry(_Fhir):
    fullUrl: str | None = None
    resource: dict[str, Any] | None = None


class _Bundle(_Fhir):
    entry: list[_Entry] = []


# --------------------------------------------------------------------------- the drafts
@dataclass(frozen=True)
class _Draft:
    """What a resource maps to before the envelope: the v1 type, its time and its data."""

    event_type: str
    at: datetime
    data: dict[str, Any]
    patient: _Reference | None


@dataclass(frozen=True)
class _Kind:
    """A mapped resource type: its model, the statuses that map, and its mapping."""

    model: type[_Resource]
    done: frozenset[str]
    draft: Callable[[Any, _Context], _Draft]


@dataclass(frozen=True)
class _Context:
    config: MappingConfig
    pseudonyms: Pseudonyms
    patients: Mapping[str, str]  # a Bundle's fullUrl -> "Patient/<id>" of its entries


class Translator:
    """Turns one ``careledger.fhir.r4`` message into outcomes (see the module docstring)."""

    def __init__(self, config: MappingConfig, pseudonyms: Pseudonyms) -> None:
        if pseudonyms.source != config.source:
            raise ValueError("the pseudonyms must be the configured source's")
        self.config = config
        self.pseudonyms = pseudonyms

    def translate(self, raw: bytes | None, now: datetime) -> list[Outcome]:
        """Every outcome of one message, in entry order. ``now`` is the ingest clock."""
        try:
            document = orjson.loads(raw or b"")
        except orjson.JSONDecodeError:
            return [DeadLetter("not_json")]
        if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
            return [DeadLetter("not_a_resource")]
        context = _Context(self.config, self.pseudonyms, {})
        return list(self._resource(document, context, now, depth=0))

    def _resource(
        self, document: dict[str, Any], context: _Context, now: datetime, depth: int
    ) -> Iterator[Outcome]:
        kind = document["resourceType"]
        if kind == "Bundle":
            yield from self._bundle(document, context, now, depth)
        elif kind in _KINDS:
            yield self._one(_KINDS[kind], document, context, now)
        else:
            yield Skipped(r4.label(kind), "unmapped_type")

    def _bundle(
        self, document: dict[str, Any], context: _Context, now: datetime, depth: int
    ) -> Iterator[Outcome]:
        if depth >= MAX_BUNDLE_DEPTH:
            yield DeadLetter("bundle_too_deep", "Bundle", *_names(document))
            return
        try:
            bundle = _Bundle.model_validate(document)
        except ValidationError:
            yield DeadLetter("invalid_resource", "Bundle", *_names(document))
            return
        inner = _Context(context.config, context.pseudonyms, _patients_of(bundle))
        for entry in bundle.entry:
            resource = entry.resource
            if resource is None:  # e.g. a transaction's DELETE, a response without bodies
                yield Skipped("Bundle", "no_resource")
            elif not isinstance(resource.get("resourceType"), str):
                yield DeadLetter("not_a_resource")
            else:
                yield from self._resource(resource, inner, now, depth + 1)

    def _one(
        self, kind: _Kind, document: dict[str, Any], context: _Context, now: datetime
    ) -> Outcome:
        resource_type = document["resourceType"]
        resource_id, version_id = _names(document)
        try:
            resource = kind.model.model_validate(document)
            if resource.id is None or resource_id is None:
                raise _Refused("no_id")
            return self._mapped(kind, resource, resource_id, context, now)
        except ValidationError:
            return DeadLetter("invalid_resource", resource_type, resource_id, version_id)
        except _Refused as refused:
            return DeadLetter(refused.reason, resource_type, resource_id, version_id)
        except InvalidInteraction as invalid:
            return DeadLetter(invalid.code, resource_type, resource_id, version_id)
        except _OutOfScope as out:
            return Skipped(resource_type, out.reason)

    def _mapped(
        self, kind: _Kind, resource: _Resource, resource_id: str, context: _Context, now: datetime
    ) -> Mapped:
        status = resource.status
        if status is None or status not in r4.STATUSES[resource.resourceType]:
            raise _Refused("unknown_status")
        if status == "unknown":  # the EMR itself does not know whether it happened
            raise _Refused("unknown_status")
        if status == r4.ENTERED_IN_ERROR:
            return self._void(kind, resource, resource_id, context, now)
        if status not in kind.done:
            raise _OutOfScope("not_completed")
        draft = kind.draft(resource, context)
        event_id = context.pseudonyms.event_id(resource.resourceType, resource_id)
        return self._envelope(resource.resourceType, event_id, draft, context, now)

    def _void(
        self, kind: _Kind, resource: _Resource, resource_id: str, context: _Context, now: datetime
    ) -> Mapped:
        """``interaction.voided`` for what the resource mapped to when it was done.

        Only a resource that would map when done is voided (a void of something never sent
        would be refused downstream). Its time is ``meta.lastUpdated`` (when the EMR marked it)
        or else the original's time: both come from the resource, so a redelivery is a twin.
        """
        original = kind.draft(resource, context)
        resource_type = resource.resourceType
        updated = resource.meta.lastUpdated if resource.meta else None
        at = _instant(updated, context.config.zone)[0] if updated else original.at
        draft = _Draft(
            "interaction.voided",
            at,
            {
                "voided_id": context.pseudonyms.event_id(resource_type, resource_id),
                "voided_source": context.config.source,
                "reason": "entered_in_error",
            },
            original.patient,
        )
        void_id = context.pseudonyms.void_id(resource_type, resource_id)
        return self._envelope(resource_type, void_id, draft, context, now)

    def _envelope(
        self, resource_type: str, event_id: str, draft: _Draft, context: _Context, now: datetime
    ) -> Mapped:
        subject = context.pseudonyms.subject(_patient(draft.patient, context.patients))
        event = {
            "specversion": "1.0",
            "id": event_id,
            "source": context.config.source,
            "type": draft.event_type,
            "time": _rfc3339(draft.at),
            "subject": subject,
            "programid": context.config.program_id,
            "datacontenttype": "application/json",
            "data": draft.data,
        }
        value = orjson.dumps(event)
        parse_interaction(value, now=now)  # raises InvalidInteraction: a dead letter
        return Mapped(resource_type, draft.event_type, subject, value)


# -------------------------------------------------------------------------- the mappings
def _encounter(encounter: _Encounter, context: _Context) -> _Draft:
    checkup = _checkup(encounter.type, context.config)
    at = _at(encounter.period, context.config.zone)
    if checkup is not None:
        return _Draft("checkup.completed", at(), {"checkup_type": checkup}, encounter.subject)
    if encounter.class_ is None:
        raise _Refused("invalid_resource")  # Encounter.class is 1..1 in R4
    visit_type = _visit_type(encounter, context.config)
    visit_id = context.pseudonyms.local_id("visit", encounter.id or "")
    data = {"visit_id": visit_id, "visit_type": visit_type}
    return _Draft("visit.completed", at(), data, encounter.subject)


def _visit_type(encounter: _Encounter, config: MappingConfig) -> str:
    assert encounter.class_ is not None
    if encounter.class_.system not in (None, r4.ACT_CODE):
        raise _OutOfScope("not_mapped")
    match encounter.class_.code:
        case "EMER":
            return "urgent_care"
        case "AMB" | "VR" as code:
            service = [encounter.serviceType] if encounter.serviceType else []
            if _any_match([*encounter.type, *service], config.specialist):
                return "specialist"
            return "in_person" if code == "AMB" else "telehealth"
        case _:
            raise _OutOfScope("not_mapped")


def _procedure(procedure: _Procedure, context: _Context) -> _Draft:
    checkup = _checkup([procedure.code] if procedure.code else [], context.config)
    if checkup is None:
        raise _OutOfScope("not_mapped")
    zone = context.config.zone
    if procedure.performedDateTime is not None:
        at = _instant(procedure.performedDateTime, zone)[0]
    else:
        at = _at(procedure.performedPeriod, zone)()
    return _Draft("checkup.completed", at, {"checkup_type": checkup}, procedure.subject)


def _immunization(immunization: _Immunization, context: _Context) -> _Draft:
    at = _instant(immunization.occurrenceDateTime, context.config.zone)[0]
    return _Draft("checkup.completed", at, {"checkup_type": "vaccination"}, immunization.patient)


def _questionnaire_response(response: _QuestionnaireResponse, context: _Context) -> _Draft:
    at = _instant(response.authored, context.config.zone)[0]
    assessment_id = context.pseudonyms.local_id("assessment", response.id or "")
    return _Draft("assessment.completed", at, {"assessment_id": assessment_id}, response.subject)


def _observation(observation: _Observation, context: _Context) -> _Draft:
    codings = observation.code.coding if observation.code else []
    if not any(c.system == r4.LOINC and c.code in STEPS_CODES for c in codings):
        raise _OutOfScope("not_mapped")
    zone = context.config.zone
    if observation.effectiveDateTime is not None or observation.effectiveInstant is not None:
        at, _ = _instant(observation.effectiveDateTime or observation.effectiveInstant, zone)
        day = at.astimezone(zone).date()
    else:
        at, day = _period_end_day(observation.effectivePeriod, zone)
    data = {"metric": "steps", "day": day.isoformat(), "value": _steps(observation.valueQuantity)}
    return _Draft("activity.reading", at, data, observation.subject)


def _steps(quantity: _Quantity | None) -> int:
    if quantity is None or quantity.value is None:
        raise _Refused("missing_value")
    value = quantity.value
    if isinstance(value, float):
        if not value.is_integer():
            raise _Refused("value_not_integer")
        value = int(value)
    if not 0 <= value <= 200_000:
        raise _Refused("value_out_of_range")
    return value


def _period_end_day(period: _Period | None, zone: ZoneInfo) -> tuple[datetime, date]:
    """The day a period's total belongs to: its end's local day, or the day before when it
    ends at exactly local midnight (a day's total is often written [00:00, next 00:00))."""
    if period is None or period.end is None:
        raise _Refused("missing_time")
    at, has_time = _instant(period.end, zone)
    local = at.astimezone(zone)
    if has_time and local.time() == time(0, 0):
        return at, local.date() - timedelta(days=1)
    return at, local.date()


_KINDS: Final[Mapping[str, _Kind]] = {
    "Encounter": _Kind(_Encounter, frozenset({"finished"}), _encounter),
    "Procedure": _Kind(_Procedure, frozenset({"completed"}), _procedure),
    "Immunization": _Kind(_Immunization, frozenset({"completed"}), _immunization),
    "QuestionnaireResponse": _Kind(
        _QuestionnaireResponse, frozenset({"completed", "amended"}), _questionnaire_response
    ),
    # R4's "corrected" is a kind of "amended" (the status hierarchy), so it maps too.
    "Observation": _Kind(_Observation, frozenset({"final", "amended", "corrected"}), _observation),
}
MAPPED_TYPES: Final = frozenset(_KINDS)


# ------------------------------------------------------------------------------ helpers
def _names(document: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The resource's id and meta.versionId, only when they are valid FHIR ids (they go into
    dead-letter headers, which must never carry arbitrary text)."""
    resource_id = document.get("id")
    meta = document.get("meta")
    version_id = meta.get("versionId") if isinstance(meta, dict) else None
    return _fhir_id(resource_id), _fhir_id(version_id)


def _fhir_id(value: object) -> str | None:
    return value if isinstance(value, str) and _FHIR_ID.fullmatch(value) else None


def _patients_of(bundle: _Bundle) -> dict[str, str]:
    """A Bundle's Patient entries by fullUrl, so ``urn:uuid:`` references resolve."""
    found = {}
    for entry in bundle.entry:
        resource = entry.resource or {}
        resource_id = _fhir_id(resource.get("id"))
        if entry.fullUrl and resource.get("resourceType") == "Patient" and resource_id:
            found[entry.fullUrl] = f"Patient/{resource_id}"
    return found


def _patient(reference: _Reference | None, in_bundle: Mapping[str, str]) -> str:
    """The normalised Patient reference (``Patient/<id>``) the subject is derived from."""
    if reference is None:
        raise _Refused("no_subject")
    if reference.reference is None:
        raise _Refused("bad_subject")  # an identifier or display only: nothing stable
    if reference.reference in in_bundle:
        return in_bundle[reference.reference]
    match = _PATIENT_REFERENCE.fullmatch(reference.reference)
    if match is None:
        raise _Refused("bad_subject")
    return f"Patient/{match.group(1)}"


def _checkup(concepts: Sequence[_Concept], config: MappingConfig) -> CheckupType | None:
    for checkup, tokens in config.checkups.items():
        if _any_match(concepts, tokens):
            return checkup
    return None


def _any_match(concepts: Sequence[_Concept], tokens: Sequence[CodeToken]) -> bool:
    return any(t.matches(c) for concept in concepts for c in concept.coding for t in tokens)


def _at(period: _Period | None, zone: ZoneInfo) -> Callable[[], datetime]:
    """period.end, else period.start (deferred: an out-of-scope resource needs no time)."""

    def read() -> datetime:
        value = (period.end or period.start) if period else None
        return _instant(value, zone)[0]

    return read


def _instant(value: str | None, zone: ZoneInfo) -> tuple[datetime, bool]:
    """A FHIR dateTime as an aware datetime, and whether it had a time of day.

    A full date without a time is the start of that day in the program's time zone; a year
    or a year and month alone is too imprecise to earn anything by.
    """
    if value is None:
        raise _Refused("missing_time")
    match = _DATETIME.fullmatch(value)
    if match is None:
        raise _Refused("invalid_time")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if day is None:
        raise _Refused("imprecise_time")
    try:
        if hour is None:
            return datetime(int(year), int(month), int(day), tzinfo=zone), False
        micros = int((fraction or "0").ljust(6, "0")[:6])
        tz = UTC if offset == "Z" else _offset(offset)
        at = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tz
        )
    except ValueError:
        raise _Refused("invalid_time") from None
    return at, True


def _offset(text: str) -> timezone:
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 14 or minutes > 59:
        raise ValueError("offset out of range")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if text[0] == "-" else delta)


def _rfc3339(at: datetime) -> str:
    utc = at.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{utc.microsecond:06d}Z" if utc.microsecond else f"{text}Z"
