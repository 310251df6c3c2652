"""The FHIR R4 edge's mapping: every mapped case, Bundles, skipped types, dead-letter reasons,
stable ids, and pseudonyms (tests/fhir/*.json are the inputs; docs/fhir.md the rules)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from producers.fhir.mapping import (
    DEAD_LETTER_REASONS,
    CodeToken,
    DeadLetter,
    Mapped,
    MappingConfig,
    Outcome,
    Skipped,
)
from producers.fhir.pseudonyms import Pseudonyms, WeakPseudonymKey
from schemas.codes import CODES
from schemas.fields import PatientId
from schemas.validation import parse_interaction
from tests.fhir_support import KEY, NOW, SOURCE, ZONE, pseudonyms, raw, resource, translator

SUBJECT = pseudonyms().subject("Patient/pat-5521")


def outcomes(document: dict[str, Any], **overrides: Any) -> list[Outcome]:
    return translator(**overrides).translate(raw(document), NOW)


def one(document: dict[str, Any], **overrides: Any) -> Outcome:
    (outcome,) = outcomes(document, **overrides)
    return outcome


def event(document: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    outcome = one(document, **overrides)
    assert isinstance(outcome, Mapped), outcome
    parsed: dict[str, Any] = orjson.loads(outcome.value)
    assert outcome.key == parsed["subject"]
    assert outcome.event_type == parsed["type"]
    parse_interaction(outcome.value, now=NOW)  # exactly the v1 contract
    return parsed


# ---------------------------------------------------------------------------- mapped cases
@pytest.mark.parametrize(
    ("name", "visit_type", "time"),
    [
        ("encounter-amb", "in_person", "2025-06-03T08:00:00Z"),  # period.end
        ("encounter-vr", "telehealth", "2025-06-04T14:00:00Z"),  # no end: period.start
        ("encounter-emer", "urgent_care", "2025-06-06T01:40:00Z"),
        ("encounter-specialist", "specialist", "2025-06-06T08:45:00Z"),  # serviceType code
    ],
)
def test_a_finished_encounter_is_a_visit_by_its_class(
    name: str, visit_type: str, time: str
) -> None:
    out = event(resource(name))
    assert out["type"] == "visit.completed"
    assert out["data"]["visit_type"] == visit_type
    assert out["time"] == time
    assert out["source"] == SOURCE
    assert out["programid"] == "clinic-default"
    assert out["subject"] == SUBJECT
    assert set(out["data"]) == {"visit_id", "visit_type"}


def test_the_visit_id_is_a_keyed_hash_of_the_encounter_id_not_the_id() -> None:
    out = event(resource("encounter-amb"))
    assert out["data"]["visit_id"] == pseudonyms().local_id("visit", "enc-1001")
    assert "enc-1001" not in orjson.dumps(out).decode()


def test_a_specialist_code_in_encounter_type_also_counts() -> None:
    specialist = {"coding": [{"system": "http://snomed.info/sct", "code": "394582007"}]}
    out = event(resource("encounter-vr", type=[specialist]))
    assert out["data"]["visit_type"] == "specialist"


def test_specialist_codes_are_configurable() -> None:
    document = resource("encounter-amb")  # its type is SNOMED 185349003
    assert event(document)["data"]["visit_type"] == "in_person"
    config_tokens = (CodeToken.parse("http://snomed.info/sct|185349003"),)
    assert event(document, specialist=config_tokens)["data"]["visit_type"] == "specialist"
    other_system = (CodeToken.parse("http://loinc.org|185349003"),)
    assert event(document, specialist=other_system)["data"]["visit_type"] == "in_person"


@pytest.mark.parametrize(
    ("name", "checkup", "time"),
    [
        ("encounter-annual-wellness", "annual_wellness", "2025-06-07T09:40:00Z"),
        ("procedure-dental-cleaning", "dental_cleaning", "2025-06-10T10:15:00Z"),
        ("procedure-screening", "screening", "2025-06-11T13:20:00Z"),  # performedPeriod.end
        ("immunization", "vaccination", "2025-06-13T09:15:00Z"),
        # A date alone is the start of that day in the program's time zone (Europe/Berlin).
        ("immunization-date-only", "vaccination", "2025-06-13T22:00:00Z"),
    ],
)
def test_checkups(name: str, checkup: str, time: str) -> None:
    out = event(resource(name))
    assert out["type"] == "checkup.completed"
    assert out["data"] == {"checkup_type": checkup}
    assert out["time"] == time


def test_checkup_code_lists_are_configurable() -> None:
    appendectomy = resource("procedure-appendectomy")
    assert one(appendectomy) == Skipped("Procedure", "not_mapped")
    checkups = {"screening": (CodeToken.parse("80146002"),)}
    assert event(appendectomy, checkups=checkups)["data"] == {"checkup_type": "screening"}


def test_a_completed_questionnaire_response_is_an_assessment_at_authored() -> None:
    out = event(resource("questionnaireresponse"))
    assert out["type"] == "assessment.completed"
    assert out["time"] == "2025-06-16T16:30:00Z"
    assert out["data"] == {"assessment_id": pseudonyms().local_id("assessment", "qr-4001")}
    amended = event(resource("questionnaireresponse", status="amended"))
    assert amended["id"] == out["id"]


def test_a_final_steps_observation_is_the_day_of_its_local_time() -> None:
    # 23:30 in Berlin is 21:30 UTC: still the 17th in the program's time zone.
    out = event(resource("observation-steps"))
    assert out["type"] == "activity.reading"
    assert out["data"] == {"metric": "steps", "day": "2025-06-17", "value": 8432}
    assert out["time"] == "2025-06-17T21:30:00Z"


def test_the_local_day_follows_the_program_time_zone() -> None:
    from zoneinfo import ZoneInfo

    out = event(resource("observation-steps"), zone=ZoneInfo("Asia/Tokyo"))
    assert out["data"]["day"] == "2025-06-18"  # 21:30 UTC is the next morning in Tokyo


def test_a_steps_period_counts_for_its_end_day_and_midnight_closes_the_day_before() -> None:
    out = event(resource("observation-steps-period"))  # amended, 12000.0, [18th, 19th 00:00)
    assert out["data"] == {"metric": "steps", "day": "2025-06-18", "value": 12000}
    assert out["time"] == "2025-06-18T22:00:00Z"
    later = resource("observation-steps-period")
    later["effectivePeriod"] = {"start": "2025-06-18T06:00:00Z", "end": "2025-06-18T20:00:00Z"}
    assert event(later)["data"]["day"] == "2025-06-18"


def test_a_corrected_observation_maps_like_amended() -> None:
    assert event(resource("observation-steps", status="corrected"))["type"] == "activity.reading"


def test_an_entered_in_error_resource_voids_what_it_mapped_to() -> None:
    original = event(resource("encounter-amb"))
    void = event(resource("encounter-amb-entered-in-error"))
    assert void["type"] == "interaction.voided"
    assert void["data"] == {
        "voided_id": original["id"],
        "voided_source": original["source"],
        "reason": "entered_in_error",
    }
    assert void["subject"] == original["subject"]
    assert void["id"] != original["id"]
    assert void["time"] == "2025-06-04T07:00:00Z"  # meta.lastUpdated


def test_an_entered_in_error_without_last_updated_takes_the_original_time() -> None:
    void = event(resource("immunization", status="entered-in-error", meta={"versionId": "2"}))
    assert void["time"] == "2025-06-13T09:15:00Z"


def test_an_entered_in_error_resource_that_never_mapped_voids_nothing() -> None:
    assert one(resource("encounter-inpatient", status="entered-in-error")) == Skipped(
        "Encounter", "not_mapped"
    )


# ------------------------------------------------------------------------------ same twice
def test_the_same_resource_twice_is_the_same_interaction() -> None:
    first = one(resource("encounter-amb"))
    second = one(resource("encounter-amb"))
    assert first == second


def test_a_new_version_keeps_the_cloudevent_id() -> None:
    first = event(resource("encounter-amb"))
    changed = resource("encounter-amb", meta={"versionId": "3"})
    changed["period"] = {"end": "2025-06-03T11:00:00+02:00"}
    second = event(changed)
    assert second["id"] == first["id"]  # the ledger sees a changed twin: an id_conflict
    assert second["time"] != first["time"]


def test_ids_depend_on_the_key() -> None:
    other = Pseudonyms(b"another key that is 32 bytes or more", SOURCE)
    assert other.event_id("Encounter", "enc-1001") != pseudonyms().event_id("Encounter", "enc-1001")
    assert other.subject("Patient/pat-5521") != SUBJECT


# ----------------------------------------------------------------------------- pseudonyms
def test_relative_absolute_and_versioned_patient_references_are_one_subject() -> None:
    for reference in (
        "Patient/pat-5521",
        "Patient/pat-5521/_history/3",
        "https://emr.example.org/fhir/Patient/pat-5521",
    ):
        document = resource("encounter-emer", subject={"reference": reference})
        assert event(document)["subject"] == SUBJECT


def test_the_subject_fits_the_v1_pattern_and_depends_on_the_source() -> None:
    from pydantic import TypeAdapter

    TypeAdapter(PatientId).validate_python(SUBJECT)
    other_emr = Pseudonyms(KEY, "urn:careledger:emr:ashbury")
    assert other_emr.subject("Patient/pat-5521") != SUBJECT


def test_a_short_key_is_refused() -> None:
    with pytest.raises(WeakPseudonymKey):
        Pseudonyms(b"too short", SOURCE)
    assert "key" not in repr(Pseudonyms(KEY, SOURCE)).replace("Pseudonyms", "")
    assert KEY.decode() not in repr(Pseudonyms(KEY, SOURCE))


# --------------------------------------------------------------------------------- Bundles
def test_a_collection_bundle_is_taken_entry_by_entry() -> None:
    results = outcomes(resource("bundle-collection"))
    assert [type(r).__name__ for r in results] == ["Skipped", "Mapped", "Mapped", "Skipped"]
    assert results[0] == Skipped("Patient", "unmapped_type")
    assert results[3] == Skipped("Condition", "unmapped_type")
    visit, steps = results[1], results[2]
    assert isinstance(visit, Mapped) and isinstance(steps, Mapped)
    # The urn:uuid reference resolves to the Bundle's Patient entry: one patient, one subject.
    assert visit.key == steps.key == pseudonyms().subject("Patient/pat-7730")


def test_a_transaction_bundle_maps_its_resources_and_names_what_it_cannot() -> None:
    results = outcomes(resource("bundle-transaction"))
    kinds = [
        (type(r).__name__, getattr(r, "event_type", getattr(r, "reason", ""))) for r in results
    ]
    assert kinds == [
        ("Mapped", "checkup.completed"),
        ("Mapped", "assessment.completed"),
        ("DeadLetter", "no_id"),  # a POST without a server id has no stable identity
        ("Skipped", "no_resource"),  # a DELETE entry carries no resource
    ]
    assert results[2] == DeadLetter("no_id", "Encounter")


def test_a_bundle_inside_a_bundle_is_taken_too_up_to_a_depth() -> None:
    inner = resource("bundle-collection")
    outer = {"resourceType": "Bundle", "type": "batch", "entry": [{"resource": inner}]}
    assert len([r for r in outcomes(outer) if isinstance(r, Mapped)]) == 2
    deep: dict[str, Any] = inner
    for _ in range(3):
        deep = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": deep}]}
    assert outcomes(deep) == [DeadLetter("bundle_too_deep", "Bundle", "bundle-coll-1")]


def test_an_empty_bundle_maps_to_nothing() -> None:
    assert outcomes({"resourceType": "Bundle", "type": "searchset", "total": 0}) == []


# -------------------------------------------------------------------------------- skipped
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("patient", Skipped("Patient", "unmapped_type")),
        ("condition", Skipped("Condition", "unmapped_type")),
        ("encounter-in-progress", Skipped("Encounter", "not_completed")),
        ("encounter-inpatient", Skipped("Encounter", "not_mapped")),
        ("procedure-appendectomy", Skipped("Procedure", "not_mapped")),
        ("immunization-not-done", Skipped("Immunization", "not_completed")),
        ("observation-heart-rate", Skipped("Observation", "not_mapped")),
        ("observation-preliminary", Skipped("Observation", "not_completed")),
    ],
)
def test_skipped(name: str, expected: Skipped) -> None:
    assert one(resource(name)) == expected


def test_a_type_r4_does_not_define_is_counted_as_other() -> None:
    assert one({"resourceType": "Josephine", "id": "x"}) == Skipped("other", "unmapped_type")


def test_a_questionnaire_response_in_progress_is_skipped() -> None:
    assert one(resource("questionnaireresponse", status="in-progress")) == Skipped(
        "QuestionnaireResponse", "not_completed"
    )


# --------------------------------------------------------------------------- dead letters
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("encounter-no-subject", DeadLetter("no_subject", "Encounter", "enc-1008", "1")),
        ("encounter-group-subject", DeadLetter("bad_subject", "Encounter", "enc-1009")),
        ("encounter-no-period", DeadLetter("missing_time", "Encounter", "enc-1010")),
        ("encounter-unknown-status", DeadLetter("unknown_status", "Encounter", "enc-1011", "4")),
        ("immunization-imprecise", DeadLetter("imprecise_time", "Immunization", "imm-3003")),
        ("immunization-future", DeadLetter("time_in_future", "Immunization", "imm-3005")),
        (
            "questionnaireresponse-no-authored",
            DeadLetter("missing_time", "QuestionnaireResponse", "qr-4002"),
        ),
        (
            "observation-steps-out-of-range",
            DeadLetter("value_out_of_range", "Observation", "obs-5003", "7"),
        ),
        ("observation-steps-fraction", DeadLetter("value_not_integer", "Observation", "obs-5004")),
    ],
)
def test_dead_letters(name: str, expected: DeadLetter) -> None:
    assert one(resource(name)) == expected


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"status": "unknown"}, "unknown_status"),
        ({"status": None}, "unknown_status"),
        ({"status": 3}, "invalid_resource"),
        ({"id": None}, "no_id"),
        ({"id": "has spaces"}, "no_id"),
        ({"valueQuantity": None}, "missing_value"),
        ({"valueQuantity": {"value": -1}}, "value_out_of_range"),
        ({"valueQuantity": {"value": "8000"}}, "invalid_resource"),
        ({"effectiveDateTime": "17 June 2025"}, "invalid_time"),
        ({"effectiveDateTime": "2025-02-30T10:00:00Z"}, "invalid_time"),
        ({"effectiveDateTime": "2025"}, "imprecise_time"),
        ({"effectiveDateTime": None}, "missing_time"),
        ({"subject": {"identifier": {"value": "MRN-77120934"}}}, "bad_subject"),
        ({"subject": {"reference": "#contained-patient"}}, "bad_subject"),
    ],
)
def test_dead_letter_reasons(changes: dict[str, Any], reason: str) -> None:
    document = resource("observation-steps")
    for name, value in changes.items():
        if value is None:
            document.pop(name, None)
        else:
            document[name] = value
    outcome = one(document)
    assert isinstance(outcome, DeadLetter), outcome
    assert outcome.reason == reason
    assert outcome.reason in DEAD_LETTER_REASONS | CODES


def test_a_message_that_is_not_a_resource_is_a_dead_letter() -> None:
    t = translator()
    assert t.translate(b"\xff not json", NOW) == [DeadLetter("not_json")]
    assert t.translate(b"[1, 2]", NOW) == [DeadLetter("not_a_resource")]
    assert t.translate(b'{"id": "x"}', NOW) == [DeadLetter("not_a_resource")]
    assert t.translate(None, NOW) == [DeadLetter("not_json")]


def test_a_dead_letter_names_the_resource_and_reason_only() -> None:
    letter = one(resource("observation-steps-out-of-range"))
    assert isinstance(letter, DeadLetter)
    assert dict(letter.headers()) == {
        "careledger.code": b"value_out_of_range",
        "careledger.fhir.resource_type": b"Observation",
        "careledger.fhir.id": b"obs-5003",
        "careledger.fhir.version_id": b"7",
    }
    assert orjson.loads(letter.value()) == {
        "reason": "value_out_of_range",
        "resource_type": "Observation",
        "id": "obs-5003",
        "version_id": "7",
    }


def test_an_id_that_is_not_a_fhir_id_never_reaches_a_header() -> None:
    document = resource("encounter-no-subject", id="Josephine Quixley")
    letter = one(document)
    assert letter == DeadLetter("no_id", "Encounter", None, "1")


# ------------------------------------------------------------------------------- config
def test_code_tokens() -> None:
    assert CodeToken.parse("G0438") == CodeToken("G0438")
    assert CodeToken.parse(" http://loinc.org|41950-7 ") == CodeToken("41950-7", "http://loinc.org")
    for bad in ("", "|x", "http://loinc.org|"):
        with pytest.raises(ValueError):
            CodeToken.parse(bad)


def test_the_config_refuses_a_source_or_program_the_contract_would_refuse() -> None:
    with pytest.raises(ValueError):
        MappingConfig("has spaces", "clinic-default", ZONE)
    with pytest.raises(ValueError):
        MappingConfig(SOURCE, "Not A Program", ZONE)


def test_another_program_id_is_carried() -> None:
    assert event(resource("immunization"), program_id="coalition-health")["programid"] == (
        "coalition-health"
    )
