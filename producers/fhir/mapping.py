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
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson
from pydantic import TypeAdapter, ValidationError

from producers.fhir import r4
from producers.fhir.codes import (
    DEFAULT_ANNUAL_WELLNESS_CODES,
    DEFAULT_DENTAL_CLEANING_CODES,
    DEFAULT_SCREENING_CODES,
    DEFAULT_SPECIALIST_CODES,
    STEPS_CODES,
    CodeToken,
    tokens,
)
from producers.fhir.outcomes import (
    DEAD_LETTER_REASONS,
    DeadLetter,
    Mapped,
    Outcome,
    OutOfScope,
    Refused,
    Skipped,
)
from producers.fhir.pseudonyms import Pseudonyms
from producers.fhir.resources import (
    Bundle,
    Concept,
    Encounter,
    Immunization,
    Observation,
    Period,
    Procedure,
    Quantity,
    QuestionnaireResponse,
    Reference,
    Resource,
)
from producers.fhir.times import instant, period_end_day, rfc3339
from schemas.fields import EventSource, ProgramId
from schemas.v1 import CheckupType
from schemas.validation import InvalidInteraction, parse_interaction

__all__ = [
    "DEAD_LETTER_REASONS",
    "DEFAULT_ANNUAL_WELLNESS_CODES",
    "DEFAULT_DENTAL_CLEANING_CODES",
    "DEFAULT_SCREENING_CODES",
    "DEFAULT_SPECIALIST_CODES",
    "MAPPED_TYPES",
    "STEPS_CODES",
    "CodeToken",
    "DeadLetter",
    "Mapped",
    "MappingConfig",
    "Outcome",
    "Skipped",
    "Translator",
]

MAX_BUNDLE_DEPTH: Final = 3  # a Bundle in a Bundle in a Bundle, and no deeper
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_PATIENT_REFERENCE = re.compile(
    r"(?:[a-z][a-z0-9+.-]*://[^\s/]+(?:/[^\s/]+)*/)?Patient/([A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)
_SOURCE: Final = TypeAdapter[str](EventSource)
_PROGRAM: Final = TypeAdapter[str](ProgramId)


@dataclass(frozen=True)
class MappingConfig:
    """What the mapping needs to know besides the resource (built once, from settings)."""

    source: str
    program_id: str
    zone: ZoneInfo
    specialist: tuple[CodeToken, ...] = field(default=tokens(DEFAULT_SPECIALIST_CODES))
    checkups: Mapping[CheckupType, tuple[CodeToken, ...]] = field(
        default_factory=lambda: {
            "annual_wellness": tokens(DEFAULT_ANNUAL_WELLNESS_CODES),
            "dental_cleaning": tokens(DEFAULT_DENTAL_CLEANING_CODES),
            "screening": tokens(DEFAULT_SCREENING_CODES),
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
            tokens(specialist),
            {
                "annual_wellness": tokens(annual_wellness),
                "dental_cleaning": tokens(dental_cleaning),
                "screening": tokens(screening),
            },
        )


# ------------------------------------------------------------- the fields the edge reads
# --------------------------------------------------------------------------- the drafts
@dataclass(frozen=True)
class _Draft:
    """What a resource maps to before the envelope: the v1 type, its time and its data."""

    event_type: str
    at: datetime
    data: dict[str, Any]
    patient: Reference | None


@dataclass(frozen=True)
class _Kind:
    """A mapped resource type: its model, the statuses that map, and its mapping."""

    model: type[Resource]
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
            bundle = Bundle.model_validate(document)
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
                raise Refused("no_id")
            return self._mapped(kind, resource, resource_id, context, now)
        except ValidationError:
            return DeadLetter("invalid_resource", resource_type, resource_id, version_id)
        except Refused as refused:
            return DeadLetter(refused.reason, resource_type, resource_id, version_id)
        except InvalidInteraction as invalid:
            return DeadLetter(invalid.code, resource_type, resource_id, version_id)
        except OutOfScope as out:
            return Skipped(resource_type, out.reason)

    def _mapped(
        self, kind: _Kind, resource: Resource, resource_id: str, context: _Context, now: datetime
    ) -> Mapped:
        status = resource.status
        if status is None or status not in r4.STATUSES[resource.resourceType]:
            raise Refused("unknown_status")
        if status == "unknown":  # the EMR itself does not know whether it happened
            raise Refused("unknown_status")
        if status == r4.ENTERED_IN_ERROR:
            return self._void(kind, resource, resource_id, context, now)
        if status not in kind.done:
            raise OutOfScope("not_completed")
        draft = kind.draft(resource, context)
        event_id = context.pseudonyms.event_id(resource.resourceType, resource_id)
        return self._envelope(resource.resourceType, event_id, draft, context, now)

    def _void(
        self, kind: _Kind, resource: Resource, resource_id: str, context: _Context, now: datetime
    ) -> Mapped:
        """``interaction.voided`` for what the resource mapped to when it was done.

        Only a resource that would map when done is voided (a void of something never sent
        would be refused downstream). Its time is ``meta.lastUpdated`` (when the EMR marked it)
        or else the original's time: both come from the resource, so a redelivery is a twin.
        """
        original = kind.draft(resource, context)
        resource_type = resource.resourceType
        updated = resource.meta.lastUpdated if resource.meta else None
        at = instant(updated, context.config.zone)[0] if updated else original.at
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
            "time": rfc3339(draft.at),
            "subject": subject,
            "programid": context.config.program_id,
            "datacontenttype": "application/json",
            "data": draft.data,
        }
        value = orjson.dumps(event)
        parse_interaction(value, now=now)  # raises InvalidInteraction: a dead letter
        return Mapped(resource_type, draft.event_type, subject, value)


# -------------------------------------------------------------------------- the mappings
def _encounter(encounter: Encounter, context: _Context) -> _Draft:
    checkup = _checkup(encounter.type, context.config)
    at = _at(encounter.period, context.config.zone)
    if checkup is not None:
        return _Draft("checkup.completed", at(), {"checkup_type": checkup}, encounter.subject)
    if encounter.class_ is None:
        raise Refused("invalid_resource")  # Encounter.class is 1..1 in R4
    visit_type = _visit_type(encounter, context.config)
    visit_id = context.pseudonyms.local_id("visit", encounter.id or "")
    data = {"visit_id": visit_id, "visit_type": visit_type}
    return _Draft("visit.completed", at(), data, encounter.subject)


def _visit_type(encounter: Encounter, config: MappingConfig) -> str:
    assert encounter.class_ is not None
    if encounter.class_.system not in (None, r4.ACT_CODE):
        raise OutOfScope("not_mapped")
    match encounter.class_.code:
        case "EMER":
            return "urgent_care"
        case "AMB" | "VR" as code:
            service = [encounter.serviceType] if encounter.serviceType else []
            if _any_match([*encounter.type, *service], config.specialist):
                return "specialist"
            return "in_person" if code == "AMB" else "telehealth"
        case _:
            raise OutOfScope("not_mapped")


def _procedure(procedure: Procedure, context: _Context) -> _Draft:
    checkup = _checkup([procedure.code] if procedure.code else [], context.config)
    if checkup is None:
        raise OutOfScope("not_mapped")
    zone = context.config.zone
    if procedure.performedDateTime is not None:
        at = instant(procedure.performedDateTime, zone)[0]
    else:
        at = _at(procedure.performedPeriod, zone)()
    return _Draft("checkup.completed", at, {"checkup_type": checkup}, procedure.subject)


def _immunization(immunization: Immunization, context: _Context) -> _Draft:
    at = instant(immunization.occurrenceDateTime, context.config.zone)[0]
    return _Draft("checkup.completed", at, {"checkup_type": "vaccination"}, immunization.patient)


def _questionnaire_response(response: QuestionnaireResponse, context: _Context) -> _Draft:
    at = instant(response.authored, context.config.zone)[0]
    assessment_id = context.pseudonyms.local_id("assessment", response.id or "")
    return _Draft("assessment.completed", at, {"assessment_id": assessment_id}, response.subject)


def _observation(observation: Observation, context: _Context) -> _Draft:
    codings = observation.code.coding if observation.code else []
    if not any(c.system == r4.LOINC and c.code in STEPS_CODES for c in codings):
        raise OutOfScope("not_mapped")
    zone = context.config.zone
    if observation.effectiveDateTime is not None or observation.effectiveInstant is not None:
        at, _ = instant(observation.effectiveDateTime or observation.effectiveInstant, zone)
        day = at.astimezone(zone).date()
    else:
        at, day = period_end_day(observation.effectivePeriod, zone)
    data = {"metric": "steps", "day": day.isoformat(), "value": _steps(observation.valueQuantity)}
    return _Draft("activity.reading", at, data, observation.subject)


def _steps(quantity: Quantity | None) -> int:
    if quantity is None or quantity.value is None:
        raise Refused("missing_value")
    value = quantity.value
    if isinstance(value, float):
        if not value.is_integer():
            raise Refused("value_not_integer")
        value = int(value)
    if not 0 <= value <= 200_000:
        raise Refused("value_out_of_range")
    return value


_KINDS: Final[Mapping[str, _Kind]] = {
    "Encounter": _Kind(Encounter, frozenset({"finished"}), _encounter),
    "Procedure": _Kind(Procedure, frozenset({"completed"}), _procedure),
    "Immunization": _Kind(Immunization, frozenset({"completed"}), _immunization),
    "QuestionnaireResponse": _Kind(
        QuestionnaireResponse, frozenset({"completed", "amended"}), _questionnaire_response
    ),
    # R4's "corrected" is a kind of "amended" (the status hierarchy), so it maps too.
    "Observation": _Kind(Observation, frozenset({"final", "amended", "corrected"}), _observation),
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


def _patients_of(bundle: Bundle) -> dict[str, str]:
    """A Bundle's Patient entries by fullUrl, so ``urn:uuid:`` references resolve."""
    found = {}
    for entry in bundle.entry:
        resource = entry.resource or {}
        resource_id = _fhir_id(resource.get("id"))
        if entry.fullUrl and resource.get("resourceType") == "Patient" and resource_id:
            found[entry.fullUrl] = f"Patient/{resource_id}"
    return found


def _patient(reference: Reference | None, in_bundle: Mapping[str, str]) -> str:
    """The normalised Patient reference (``Patient/<id>``) the subject is derived from."""
    if reference is None:
        raise Refused("no_subject")
    if reference.reference is None:
        raise Refused("bad_subject")  # an identifier or display only: nothing stable
    if reference.reference in in_bundle:
        return in_bundle[reference.reference]
    match = _PATIENT_REFERENCE.fullmatch(reference.reference)
    if match is None:
        raise Refused("bad_subject")
    return f"Patient/{match.group(1)}"


def _checkup(concepts: Sequence[Concept], config: MappingConfig) -> CheckupType | None:
    for checkup, codes in config.checkups.items():
        if _any_match(concepts, codes):
            return checkup
    return None


def _any_match(concepts: Sequence[Concept], codes: Sequence[CodeToken]) -> bool:
    return any(t.matches(c) for concept in concepts for c in concept.coding for t in codes)


def _at(period: Period | None, zone: ZoneInfo) -> Callable[[], datetime]:
    """period.end, else period.start (deferred: an out-of-scope resource needs no time)."""

    def read() -> datetime:
        value = (period.end or period.start) if period else None
        return instant(value, zone)[0]

    return read
