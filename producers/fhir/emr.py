"""A simulated EMR: the simulator's clinical events of some patients, as FHIR R4 resources.

``careledger demo --fhir`` sends a share of the patients' visits, checkups, assessments, step
readings and voided visits as the EMR would (Encounter, Immunization, Procedure,
QuestionnaireResponse, Observation; an entered-in-error Encounter for a void) through the FHIR
gateway, and the rest of the traffic as CloudEvents. The gateway pseudonymises the patients,
so their FHIR interactions land on accounts of their own (as they would for an EMR whose
patients the clinic's other systems do not know by the same pseudonym).
"""

from __future__ import annotations

import zlib
from datetime import date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson

from producers.fhir import r4

_CLASS: Final = {"in_person": "AMB", "specialist": "AMB", "telehealth": "VR", "urgent_care": "EMER"}
_CARDIOLOGY: Final = {"coding": [{"system": "http://snomed.info/sct", "code": "394579002"}]}
_CHECKUP_CODES: Final = {
    "annual_wellness": (
        "Encounter",
        "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
        "G0438",
    ),
    "dental_cleaning": ("Procedure", "http://www.ada.org/cdt", "D1110"),
    "screening": ("Procedure", "http://www.ama-assn.org/go/cpt", "77067"),
}
_FHIR_ID_CHARS: Final = str.maketrans({"_": "-", ":": "."})

Resource = dict[str, Any]


class SimulatedEmr:
    """Turns v1 events of every ``share``-th patient (by a stable hash) into FHIR resources."""

    def __init__(self, zone: ZoneInfo, share: int = 4) -> None:
        self.zone = zone
        self.share = share
        self._encounters: dict[str, Resource] = {}  # event id -> its Encounter, for voids

    def resource(self, payload: bytes) -> Resource | None:
        """The FHIR resource for one simulated record, or None when it stays a CloudEvent."""
        try:
            event = orjson.loads(payload)
            kind, subject, event_id, at = (
                event["type"],
                event["subject"],
                event["id"],
                event["time"],
            )
            data = event["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None  # a malformed record: it keeps exercising the ledger's dead letters
        if not isinstance(subject, str) or zlib.crc32(subject.encode()) % self.share:
            return None
        patient = {"reference": f"Patient/{_fhir_id(subject)}"}
        match kind, data:
            case "visit.completed", {"visit_type": str(visit_type)}:
                encounter = self._encounter(event_id, patient, at, visit_type)
                self._encounters[event_id] = encounter
                return encounter
            case "checkup.completed", {"checkup_type": "vaccination"}:
                return _immunization(event_id, patient, at)
            case "checkup.completed", {"checkup_type": str(checkup)} if checkup in _CHECKUP_CODES:
                return _checkup(event_id, patient, at, checkup)
            case "assessment.completed", _:
                return {
                    "resourceType": "QuestionnaireResponse",
                    "id": _fhir_id(event_id),
                    "status": "completed",
                    "subject": patient,
                    "authored": at,
                }
            case "activity.reading", {"day": str(day), "value": int(value)}:
                return self._steps(event_id, patient, date.fromisoformat(day), value)
            case "interaction.voided", {"voided_id": str(voided)} if voided in self._encounters:
                void = dict(self._encounters.pop(voided), status=r4.ENTERED_IN_ERROR)
                void["meta"] = {"versionId": "2", "lastUpdated": at}
                return void
        return None

    def _encounter(self, event_id: str, patient: Resource, at: str, visit_type: str) -> Resource:
        encounter: Resource = {
            "resourceType": "Encounter",
            "id": _fhir_id(event_id),
            "meta": {"versionId": "1"},
            "status": "finished",
            "class": {"system": r4.ACT_CODE, "code": _CLASS[visit_type]},
            "subject": patient,
            "period": {"end": at},
        }
        if visit_type == "specialist":
            encounter["serviceType"] = _CARDIOLOGY
        return encounter

    def _steps(self, event_id: str, patient: Resource, day: date, value: int) -> Resource:
        start = datetime.combine(day, time(0), self.zone)
        end = datetime.combine(day + timedelta(days=1), time(0), self.zone)
        return {
            "resourceType": "Observation",
            "id": _fhir_id(event_id),
            "status": "final",
            "code": {"coding": [{"system": r4.LOINC, "code": "41950-7"}]},
            "subject": patient,
            "effectivePeriod": {"start": start.isoformat(), "end": end.isoformat()},
            "valueQuantity": {
                "value": value,
                "unit": "steps/day",
                "system": "http://unitsofmeasure.org",
                "code": "/d",
            },
        }


def _immunization(event_id: str, patient: Resource, at: str) -> Resource:
    return {
        "resourceType": "Immunization",
        "id": _fhir_id(event_id),
        "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "141"}]},
        "patient": patient,
        "occurrenceDateTime": at,
    }


def _checkup(event_id: str, patient: Resource, at: str, checkup: str) -> Resource:
    resource_type, system, code = _CHECKUP_CODES[checkup]
    concept = {"coding": [{"system": system, "code": code}]}
    if resource_type == "Encounter":
        return {
            "resourceType": "Encounter",
            "id": _fhir_id(event_id),
            "status": "finished",
            "class": {"system": r4.ACT_CODE, "code": "AMB"},
            "type": [concept],
            "subject": patient,
            "period": {"end": at},
        }
    return {
        "resourceType": "Procedure",
        "id": _fhir_id(event_id),
        "status": "completed",
        "code": concept,
        "subject": patient,
        "performedDateTime": at,
    }


def _fhir_id(text: str) -> str:
    """A FHIR id ([A-Za-z0-9-.]{1,64}) from a simulator id."""
    return text.translate(_FHIR_ID_CHARS)[-64:]
