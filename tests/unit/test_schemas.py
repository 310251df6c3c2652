"""Contract v1: what parse_interaction accepts, what it rejects, and how it says so.

Every rejection must carry a code from the fixed set and a reason naming the field and
rule, never the value: values may be PHI, so hostile values carry a sentinel that must
not appear anywhere in the exception text.
"""

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import generate
from schemas.codes import CODES
from schemas.v1 import (
    DEFAULT_PROGRAM_ID,
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    MODELS_BY_TYPE,
    PaymentRecordedV1,
    PointsAdjustedV1,
    ReviewSubmittedV1,
)
from schemas.validation import InvalidInteraction, parse_interaction

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
SECRET = "SECRET-PHI-123"

MINIMAL_DATA: dict[str, dict[str, Any]] = {
    "patient.enrolled": {"channel": "front_desk"},
    "visit.completed": {"visit_id": "v-1", "visit_type": "in_person"},
    "checkup.completed": {"checkup_type": "annual_wellness"},
    "assessment.completed": {"assessment_id": "a-1"},
    "review.submitted": {"rating": 5},
    "activity.reading": {"metric": "steps", "day": "2024-05-31", "value": 8000},
    "referral.made": {"referee": "p-2"},
    "payment.recorded": {"amount": "12.50", "currency": "EUR"},
    "redemption.requested": {"redemption_id": "r-1", "reward_id": "w-1"},
    "redemption.cancelled": {"redemption_id": "r-1"},
    "interaction.voided": {"voided_id": "e-0", "voided_source": "clinic/a", "reason": "dup_entry"},
    "points.adjusted": {
        "adjustment_id": "adj-1",
        "points": 250,
        "reason": "goodwill",
        "operator": "staff:77",
    },
    "consent.changed": {"marketing": True},
    "coverage.changed": {"payer_class": "medicare"},
    "account.erasure_requested": {"reason": "gdpr_art17"},
    "purchase.recorded": {
        "purchase_id": "pu-1",
        "partner_id": "pharmacy-1",
        "amount": "12.34",
        "currency": "CAD",
        "category": "front_store",
    },
    "engagement.recorded": {"engagement_id": "en-1", "action": "portal_login"},
    "reward.used": {"redemption_id": "r-1"},
    "membership.purchased": {
        "membership_id": "m-1",
        "plan_id": "annual",
        "amount": "480.00",
        "currency": "USD",
    },
    "membership.cancelled": {"membership_id": "m-1"},
    "prepayment.recorded": {"prepayment_id": "pp-1", "amount": "250.00", "currency": "GBP"},
}
OPTIONAL_DATA: dict[str, dict[str, Any]] = {
    "patient.enrolled": {"referred_by": "p-9"},
    "visit.completed": {"location_id": "loc:7"},
    "review.submitted": {"channel": "sms"},
    "activity.reading": {"device": "watch.1"},
    "redemption.requested": {"points": 500, "partner_id": "pharmacy-1"},
    "reward.used": {"location_id": "front-desk"},
    "payment.recorded": {"cashback_used": "1.50", "prepaid_used": "20.00"},
}


def event(event_type: str = "review.submitted", /, **overrides: Any) -> dict[str, Any]:
    """A minimal valid event as a dict; ``data_<name>`` overrides set data fields."""
    doc: dict[str, Any] = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "clinic/a",
        "type": event_type,
        "time": "2024-06-01T10:00:00+02:00",
        "subject": "p-1",
        "data": dict(MINIMAL_DATA[event_type]),
    }
    for key, value in overrides.items():
        if key.startswith("data_"):
            doc["data"][key.removeprefix("data_")] = value
        else:
            doc[key] = value
    return doc


def without(doc: dict[str, Any], path: str) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(doc))
    *parents, last = path.split(".")
    target = copy
    for name in parents:
        target = target[name]
    del target[last]
    return copy


def rejected(raw: bytes | str | dict[str, Any], code: str) -> InvalidInteraction:
    payload = json.dumps(raw) if isinstance(raw, dict) else raw
    with pytest.raises(InvalidInteraction) as caught:
        parse_interaction(payload, now=NOW)
    exc = caught.value
    assert exc.code == code, str(exc)
    assert str(exc) == f"{exc.code}: {exc.reason}"
    assert SECRET not in str(exc)
    return exc


# --- accepted -----------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_minimal_event_of_every_type_is_accepted(event_type: str) -> None:
    parsed = parse_interaction(json.dumps(event(event_type)), now=NOW)
    assert isinstance(parsed, MODELS_BY_TYPE[event_type])
    assert parsed.programid == DEFAULT_PROGRAM_ID
    assert parsed.dedupe_key == ("clinic/a", "e-1")


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_event_with_all_optional_fields_is_accepted(event_type: str) -> None:
    doc = event(event_type, programid="north-2", datacontenttype="application/json")
    doc["data"].update(OPTIONAL_DATA.get(event_type, {}))
    parsed = parse_interaction(json.dumps(doc).encode(), now=NOW)
    assert parsed.programid == "north-2"
    assert parsed.datacontenttype == "application/json"
    assert parsed.data.model_dump(exclude_none=True).keys() == doc["data"].keys()


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_dumped_event_parses_back_to_an_equal_model(event_type: str) -> None:
    doc = event(event_type)
    doc["data"].update(OPTIONAL_DATA.get(event_type, {}))
    parsed = parse_interaction(json.dumps(doc), now=NOW)
    assert parse_interaction(parsed.model_dump_json(), now=NOW) == parsed


def test_fields_are_exposed_as_python_types() -> None:
    payment = parse_interaction(json.dumps(event("payment.recorded")), now=NOW)
    assert isinstance(payment, PaymentRecordedV1)
    assert payment.data.amount == Decimal("12.50")
    assert payment.time == datetime(2024, 6, 1, 8, 0, tzinfo=UTC)
    assert payment.time.utcoffset() == timedelta(hours=2)
    reading = parse_interaction(json.dumps(event("activity.reading")), now=NOW)
    assert reading.data.day == date(2024, 5, 31)  # type: ignore[union-attr]


def test_models_are_frozen() -> None:
    parsed = parse_interaction(json.dumps(event()), now=NOW)
    with pytest.raises(ValueError):
        parsed.id = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "time",
    [
        "2024-06-01T10:00:00Z",
        "2024-06-01t10:00:00z",
        "2024-06-01T10:00:00.123456789-05:30",
        "2024-06-01T10:00:00-00:00",
        "2024-06-02T11:00:00Z",  # 23 h ahead of NOW
        "2024-06-02T12:00:00Z",  # exactly 24 h ahead
        "1999-12-31T23:59:59+14:00",
    ],
)
def test_rfc3339_times_with_offset_are_accepted(time: str) -> None:
    assert parse_interaction(json.dumps(event(time=time)), now=NOW).time.tzinfo is not None


@pytest.mark.parametrize("amount", ["0.01", "1", "12.5", "12.50", "1000000.00", "1000000", "007"])
def test_valid_amounts_are_accepted(amount: str) -> None:
    parsed = parse_interaction(json.dumps(event("payment.recorded", data_amount=amount)), now=NOW)
    assert parsed.data.amount == Decimal(amount)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("data_rating", 1),
        ("data_rating", 5),
        ("data_points", 1),
        ("data_points", 10_000_000),
        ("data_value", 0),
        ("data_value", 200_000),
    ],
)
def test_integer_bounds_are_inclusive(field: str, value: int) -> None:
    event_type = {
        "data_rating": "review.submitted",
        "data_points": "redemption.requested",
        "data_value": "activity.reading",
    }[field]
    parse_interaction(json.dumps(event(event_type, **{field: value})), now=NOW)


def test_null_optional_fields_mean_absent() -> None:
    doc = event("patient.enrolled", data_referred_by=None, datacontenttype=None)
    parsed = parse_interaction(json.dumps(doc), now=NOW)
    assert parsed.data.referred_by is None  # type: ignore[union-attr]


# --- size, encoding, JSON -----------------------------------------------------------------


def _padded(size: int) -> bytes:
    raw = json.dumps(event()).encode()
    return raw + b" " * (size - len(raw))  # trailing whitespace is legal JSON


def test_exactly_max_bytes_is_not_rejected_for_size() -> None:
    raw = _padded(MAX_EVENT_BYTES)
    assert len(raw) == MAX_EVENT_BYTES
    assert isinstance(parse_interaction(raw, now=NOW), ReviewSubmittedV1)
    assert isinstance(parse_interaction(raw.decode(), now=NOW), ReviewSubmittedV1)


@pytest.mark.parametrize("as_text", [False, True])
def test_one_byte_over_the_limit_is_too_large(as_text: bool) -> None:
    raw = _padded(MAX_EVENT_BYTES + 1)
    assert "65536" in rejected(raw.decode() if as_text else raw, "too_large").reason


def test_str_size_is_measured_in_utf8_bytes() -> None:
    # 30000 two-byte characters: 30000 str characters but 60000+ bytes with the envelope.
    doc = event(data_note="é" * 32800)
    assert len(json.dumps(doc, ensure_ascii=False)) < MAX_EVENT_BYTES
    rejected(json.dumps(doc, ensure_ascii=False), "too_large")


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps(event(subject="pé")).replace("\\u00e9", "é").encode("latin-1"),
        b"\xc0\xaf{}",  # overlong encoding
        b'{"a": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8
        '{"a": 1}'.encode("utf-16"),
        b"\xef\xbb\xbf" + json.dumps(event()).encode(),
        "\ufeff" + json.dumps(event()),
        json.dumps(event()).replace('"p-1"', '"p-\ud800"'),
    ],
    ids=["latin-1", "overlong", "encoded-surrogate", "utf-16", "bom-bytes", "bom-str", "str-surr"],
)
def test_bad_encodings_are_rejected(raw: bytes | str) -> None:
    assert rejected(raw, "bad_encoding").reason.startswith("payload:")


@pytest.mark.parametrize("where", ["subject", "data_channel", "data_" + SECRET])
def test_lone_surrogate_escapes_are_bad_encoding(where: str) -> None:
    doc = json.dumps(event(**{where: "PLACEHOLDER"}))
    rejected(doc.replace("PLACEHOLDER", f"{SECRET}\\ud800"), "bad_encoding")


def test_paired_surrogate_escapes_are_fine_until_the_field_rule() -> None:
    doc = json.dumps(event(subject="\U0001f600"))  # json.dumps writes \ud83d\ude00
    assert "\\ud83d" in doc
    assert rejected(doc, "invalid_field").reason.startswith("subject:")


def test_non_bytes_payload_is_rejected() -> None:
    with pytest.raises(InvalidInteraction) as caught:
        parse_interaction(None, now=NOW)  # type: ignore[arg-type]
    assert caught.value.code == "bad_encoding"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   ",
        b"not json",
        json.dumps(event())[:-1],
        json.dumps(event())[:40],
        b"{'id': 1}",
        b'{"a": 1,}',
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b'{"a": 1} {"b": 2}',
        b'{"a": ' + b"1" * 101 + b"}",
    ],
)
def test_non_json_is_rejected(raw: bytes | str) -> None:
    rejected(raw, "not_json")


@pytest.mark.parametrize("raw", [b"[]", b"[{}]", b'"event"', b"42", b"1.5", b"true", b"null"])
def test_top_level_must_be_an_object(raw: bytes) -> None:
    rejected(raw, "not_object")


@pytest.mark.parametrize(
    "raw",
    [
        '{"id": "a", "id": "b"}',
        json.dumps(event())[:-1] + ', "subject": "p-2"}',
        json.dumps(event()).replace('"rating": 5', '"rating": 5, "rating": 4'),
        '[{"x": 1, "x": 1}]',
    ],
)
def test_duplicate_keys_at_any_level_are_rejected(raw: str) -> None:
    rejected(raw, "duplicate_key")


def test_duplicate_unknown_key_is_not_echoed() -> None:
    reason = rejected(f'{{"{SECRET}": 1, "{SECRET}": 2}}', "duplicate_key").reason
    assert "(name withheld)" in reason


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 60_000,
        "[" * 30_000 + "]" * 30_000,
        '{"a":' * 13_000,
        json.dumps(event())[:-1] + ', "data": ' + "[" * 20_000 + "]" * 20_000 + "}",
    ],
)
def test_deep_nesting_is_rejected_without_crashing(raw: str) -> None:
    assert len(raw.encode()) <= MAX_EVENT_BYTES
    rejected(raw, "not_json")


def test_hundred_thousand_nested_arrays_are_rejected() -> None:
    rejected("[" * 100_000 + "]" * 100_000, "too_large")


def test_moderate_nesting_in_a_field_is_an_invalid_field() -> None:
    nested = "[" * 300 + "]" * 300
    raw = json.dumps(event()).replace('"rating": 5', f'"rating": {nested}')
    assert rejected(raw, "invalid_field").reason.startswith("data.rating:")


# --- envelope -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.3", "1", "1.0 ", "2.0", 1.0, 1, None, ["1.0"]])
def test_other_specversions_are_unsupported(version: object) -> None:
    assert rejected(event(specversion=version), "unsupported_specversion").reason.startswith(
        "specversion:"
    )


@pytest.mark.parametrize("event_type", ["patient.unknown", "", "Review.Submitted", 5, None, {}])
def test_unknown_types_are_rejected(event_type: object) -> None:
    doc = event()
    doc["type"] = event_type
    rejected(doc, "unknown_type")


@pytest.mark.parametrize(
    "field", ["specversion", "id", "source", "type", "time", "subject", "data"]
)
def test_missing_envelope_fields_are_named(field: str) -> None:
    exc = rejected(without(event(), field), "missing_field")
    assert exc.reason.startswith(f"{field}:")


@pytest.mark.parametrize("name", ["comment", "dataschema", "patient_name", "Id"])
def test_unknown_envelope_fields_are_rejected(name: str) -> None:
    exc = rejected(event(**{name: SECRET}), "unknown_field")
    assert exc.reason.startswith(f"{name}:")
    assert (exc.source, exc.source_id) == ("clinic/a", "e-1")


HOSTILE_IDS = [
    "a\nb",
    "ab\n",
    "a\x00b",
    "a\rb",
    "a b",
    "a\tb",
    "\x7f",
    "",
    "x" * 129,
    "é",
    "\uff41\uff42",  # fullwidth
    "ab\u202e",  # right-to-left override
    "a\u200bb",  # zero-width space
    5,
    None,
    True,
]


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_hostile_ids_are_rejected_with_a_specific_reason(bad: object) -> None:
    exc = rejected(event(id=bad), "invalid_field")
    assert exc.reason.startswith("id: must be 1 to 128 printable ASCII characters")
    assert exc.source_id is None
    assert exc.source == "clinic/a"


@pytest.mark.parametrize("bad", [*HOSTILE_IDS[:8], "x" * 257, "é"])
def test_hostile_sources_are_rejected(bad: object) -> None:
    exc = rejected(event(source=bad), "invalid_field")
    assert exc.reason.startswith("source: must be 1 to 256")
    assert (exc.source, exc.source_id) == (None, "e-1")


def test_longest_id_and_source_are_accepted() -> None:
    parsed = parse_interaction(json.dumps(event(id="!" * 128, source="~" * 256)), now=NOW)
    assert parsed.dedupe_key == ("~" * 256, "!" * 128)


@pytest.mark.parametrize("bad", ["", "a b", "p/1", "pé", "x" * 65, "p-1\n", 12, None])
def test_bad_subjects_are_rejected(bad: object) -> None:
    assert rejected(event(subject=bad), "invalid_field").reason.startswith("subject:")


@pytest.mark.parametrize("bad", ["", "Clinic", "-north", "north_2", "a" * 65, "nörth", 7, None])
def test_bad_program_ids_are_rejected(bad: object) -> None:
    assert rejected(event(programid=bad), "invalid_field").reason.startswith("programid:")


@pytest.mark.parametrize("bad", ["text/plain", "application/json; charset=utf-8", 1])
def test_other_content_types_are_rejected(bad: object) -> None:
    exc = rejected(event(datacontenttype=bad), "invalid_field")
    assert exc.reason.startswith("datacontenttype:")


@pytest.mark.parametrize(
    ("time", "detail"),
    [
        ("2024-06-01T10:00:00", "no UTC offset"),
        ("2024-06-01 10:00:00", "no UTC offset"),
        ("2024-06-01T10:00", "no UTC offset"),
        ("2024-06-01", "not an RFC 3339 timestamp"),
        ("2024-06-01 10:00:00Z", "not an RFC 3339 timestamp"),
        ("20240601T100000Z", "not an RFC 3339 timestamp"),
        ("2024-06-01T10:00:00+0200", "not an RFC 3339 timestamp"),
        ("2024-06-01T10:00:00 Z", "not an RFC 3339 timestamp"),
        ("2024-06-01T10:00:00Z\n", "not an RFC 3339 timestamp"),
        ("", "not an RFC 3339 timestamp"),
        ("2024-02-30T10:00:00Z", "not a real date, time or offset"),
        ("2024-06-01T24:00:00Z", "not a real date, time or offset"),
        ("2016-12-31T23:59:60Z", "not a real date, time or offset"),
        ("2024-06-01T10:00:00+24:00", "not a real date, time or offset"),
        ("2024-06-01T10:00:00+01:60", "not a real date, time or offset"),
        (1717236000, "wrong JSON type"),
        (1717236000.5, "wrong JSON type"),
        (None, "wrong JSON type"),
    ],
)
def test_bad_times_are_rejected(time: object, detail: str) -> None:
    exc = rejected(event(time=time), "invalid_field")
    assert exc.reason.startswith("time: must be an RFC 3339 timestamp")
    assert exc.reason.endswith(f"({detail})")


def test_time_23h_ahead_is_accepted_and_25h_ahead_is_rejected() -> None:
    soon = (NOW + timedelta(hours=23)).isoformat()
    parse_interaction(json.dumps(event(time=soon)), now=NOW)
    later = (NOW + timedelta(hours=25)).astimezone(timezone(timedelta(hours=-7)))
    exc = rejected(event(time=later.isoformat()), "time_in_future")
    assert exc.reason.startswith("time:")
    assert (exc.source, exc.source_id) == ("clinic/a", "e-1")


def test_naive_now_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_interaction(json.dumps(event()), now=datetime(2024, 6, 1))  # noqa: DTZ001


# --- data ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "field"),
    [(t, f) for t, data in MINIMAL_DATA.items() for f in data],
)
def test_missing_data_fields_are_named(event_type: str, field: str) -> None:
    exc = rejected(without(event(event_type), f"data.{field}"), "missing_field")
    assert exc.reason == f"data.{field}: required field is missing"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
@pytest.mark.parametrize("name", ["text", "comment", "patient_name", "diagnosis"])
def test_unknown_data_fields_are_rejected(event_type: str, name: str) -> None:
    exc = rejected(event(event_type, **{f"data_{name}": SECRET}), "unknown_field")
    assert exc.reason.startswith(f"data.{name}: unknown field")


@pytest.mark.parametrize("name", [SECRET, "x" * 33, "naïve", "a b", ""])
def test_unsafe_unknown_field_names_are_withheld(name: str) -> None:
    exc = rejected(event(**{f"data_{name}": 1}), "unknown_field")
    assert exc.reason.startswith("data.(name withheld): unknown field")
    exc = rejected(event(**{name: 1}), "unknown_field")
    assert exc.reason.startswith("(name withheld): unknown field")


@pytest.mark.parametrize("bad", [[], "review", 5, None, True])
def test_data_must_be_an_object(bad: object) -> None:
    assert rejected(event(data=bad), "invalid_field").reason.startswith("data: must be a JSON")


INT_FIELDS = [
    ("review.submitted", "rating", 1, 5),
    ("activity.reading", "value", 0, 200_000),
    ("redemption.requested", "points", 1, 10_000_000),
]


@pytest.mark.parametrize(("event_type", "field", "low", "high"), INT_FIELDS)
@pytest.mark.parametrize("offset", ["below", "above"])
def test_integers_outside_their_range_are_rejected(
    event_type: str, field: str, low: int, high: int, offset: str
) -> None:
    value = low - 1 if offset == "below" else high + 1
    exc = rejected(event(event_type, **{f"data_{field}": value}), "invalid_field")
    assert exc.reason == f"data.{field}: must be an integer from {low} to {high} (out of range)"


@pytest.mark.parametrize(("event_type", "field", "low", "high"), INT_FIELDS)
@pytest.mark.parametrize("bad", [True, False, 3.0, 2.5, "3", "1e2", None, [3], {"n": 3}, 1e300])
def test_integers_are_strict(event_type: str, field: str, low: int, high: int, bad: object) -> None:
    if bad is None and field in OPTIONAL_DATA.get(event_type, {}):  # null: "not given"
        parsed = parse_interaction(json.dumps(event(event_type, **{f"data_{field}": bad})), now=NOW)
        assert getattr(parsed.data, field) is None
        return
    exc = rejected(event(event_type, **{f"data_{field}": bad}), "invalid_field")
    assert exc.reason.startswith(f"data.{field}: must be an integer from {low} to {high}")


@pytest.mark.parametrize("marketing", [True, False])
def test_consent_is_true_or_false(marketing: bool) -> None:
    doc = event("consent.changed")
    doc["data"]["marketing"] = marketing
    parsed = parse_interaction(json.dumps(doc), now=NOW)
    assert parsed.data.marketing is marketing  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", ["true", 1, None, "yes"])
def test_consent_must_be_a_json_boolean(bad: object) -> None:
    doc = event("consent.changed")
    doc["data"]["marketing"] = bad
    exc = rejected(doc, "invalid_field")
    assert exc.reason.startswith("data.marketing: must be true or false")


ADJUSTMENT_RULE = "data.points: must be a non-zero integer from -1000000 to 1000000"


@pytest.mark.parametrize("points", [1, -1, 1_000_000, -1_000_000])
def test_adjustments_credit_or_debit_up_to_a_million(points: int) -> None:
    parsed = parse_interaction(json.dumps(event("points.adjusted", data_points=points)), now=NOW)
    assert isinstance(parsed, PointsAdjustedV1)
    assert parsed.data.points == points
    assert parsed.data.operator == "staff:77"


def test_an_adjustment_of_zero_is_refused_naming_the_field() -> None:
    exc = rejected(event("points.adjusted", data_points=0), "invalid_field")
    assert exc.reason == f"{ADJUSTMENT_RULE} (zero adjusts nothing)"


@pytest.mark.parametrize("points", [1_000_001, -1_000_001, 10**12])
def test_adjustments_beyond_a_million_are_out_of_range(points: int) -> None:
    exc = rejected(event("points.adjusted", data_points=points), "invalid_field")
    assert exc.reason == f"{ADJUSTMENT_RULE} (out of range)"
    assert str(points) not in exc.reason


@pytest.mark.parametrize("bad", [True, False, 3.0, "3", None, [3]])
def test_adjustment_points_are_strict_integers(bad: object) -> None:
    exc = rejected(event("points.adjusted", data_points=bad), "invalid_field")
    assert exc.reason == f"{ADJUSTMENT_RULE} (wrong JSON type)"


def test_huge_numbers_are_rejected_not_crashes() -> None:
    exc = rejected(event(data_rating=10**99), "invalid_field")
    assert exc.reason.endswith("(out of range)")
    overflowing = json.dumps(event()).replace('"rating": 5', '"rating": 1e400')  # float inf
    assert rejected(overflowing, "invalid_field").reason.endswith("(wrong JSON type)")


@pytest.mark.parametrize(
    "amount",
    [
        "0",
        "0.00",
        "1000000.01",
        "1.234",
        "-5",
        "+5",
        "1e3",
        " 5",
        "5 ",
        "5.",
        ".5",
        "",
        "1,5",
        "١٢",
        "NaN",
        "Infinity",
        "0x10",
        SECRET,
    ],
)
def test_bad_amount_strings_are_rejected(amount: str) -> None:
    exc = rejected(event("payment.recorded", data_amount=amount), "invalid_field")
    assert exc.reason.startswith("data.amount: must be a JSON string holding a decimal")


@pytest.mark.parametrize("amount", [5, 5.5, 0.1, True, None, ["5"]])
def test_amount_must_be_a_json_string(amount: object) -> None:
    exc = rejected(event("payment.recorded", data_amount=amount), "invalid_field")
    assert exc.reason.endswith("(wrong JSON type)")


@pytest.mark.parametrize("currency", ["eur", "EU", "EURO", "€", "E1R", 978])
def test_bad_currencies_are_rejected(currency: object) -> None:
    exc = rejected(event("payment.recorded", data_currency=currency), "invalid_field")
    assert exc.reason.startswith("data.currency:")


@pytest.mark.parametrize(
    ("event_type", "field", "bad"),
    [
        ("visit.completed", "visit_type", "home_visit"),
        ("visit.completed", "visit_type", "IN_PERSON"),
        ("visit.completed", "visit_id", "v 1"),
        ("visit.completed", "location_id", "x" * 65),
        ("checkup.completed", "checkup_type", "surgery"),
        ("assessment.completed", "assessment_id", ""),
        ("patient.enrolled", "channel", "Front Desk"),
        ("patient.enrolled", "channel", "x" * 33),
        ("patient.enrolled", "referred_by", "p/2"),
        ("review.submitted", "channel", "SMS"),
        ("activity.reading", "metric", "heart_rate"),
        ("activity.reading", "day", "2024-5-31"),
        ("activity.reading", "day", "2024-02-30"),
        ("activity.reading", "day", "2024-05-31T00:00:00Z"),
        ("activity.reading", "day", 20240531),
        ("activity.reading", "device", "watch 1"),
        ("referral.made", "referee", "é"),
        ("redemption.requested", "reward_id", 7),
        ("redemption.cancelled", "redemption_id", None),
        ("interaction.voided", "voided_id", "a\nb"),
        ("interaction.voided", "voided_source", "x" * 257),
        ("interaction.voided", "reason", "Patient asked to remove it"),
        ("points.adjusted", "adjustment_id", "adj 1"),
        ("points.adjusted", "reason", "Goodwill"),
        ("points.adjusted", "operator", "Dr. Smith"),
        ("points.adjusted", "operator", "staff/7"),
        ("points.adjusted", "operator", "x" * 65),
        ("points.adjusted", "operator", 7),
    ],
)
def test_bad_data_values_are_rejected(event_type: str, field: str, bad: object) -> None:
    exc = rejected(event(event_type, **{f"data_{field}": bad}), "invalid_field")
    assert exc.reason.startswith(f"data.{field}: must be")


def test_several_errors_report_a_stable_first_and_a_count() -> None:
    doc = event(subject="bad subject", data_rating=0)
    doc["data"]["zzz"] = 1
    reordered = {key: doc[key] for key in reversed(list(doc))}
    first = rejected(doc, "unknown_field")
    assert first.reason == "data.zzz: unknown field, not part of the v1 contract (+2 more)"
    assert rejected(reordered, "unknown_field").reason == first.reason
    only_invalid = rejected(event(subject="bad subject", data_rating=0), "invalid_field")
    assert only_invalid.reason.startswith("data.rating:")  # sorted by path


# --- PHI never leaks into a reason ----------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        event(id=f"{SECRET}\n"),
        event(source=f"{SECRET} "),
        event(subject=f"{SECRET}/x"),
        event(time=SECRET),
        event(time=f"2024-06-01T10:00:00 {SECRET}"),
        event(programid=SECRET),
        event(datacontenttype=SECRET),
        event(type=SECRET),
        event(specversion=SECRET),
        event(data=SECRET),
        event(data_rating=SECRET),
        event(data_channel=SECRET),
        event(**{SECRET: SECRET}),
        event(data_text=SECRET),
        event("payment.recorded", data_amount=SECRET),
        event("payment.recorded", data_currency=SECRET),
        event("visit.completed", data_visit_type=SECRET),
        event("activity.reading", data_day=SECRET),
        event("interaction.voided", data_reason=SECRET),
        event("points.adjusted", data_operator=f"Dr {SECRET}"),
        event("points.adjusted", data_reason=SECRET),
    ],
)
def test_rejections_never_echo_the_value(doc: dict[str, Any]) -> None:
    with pytest.raises(InvalidInteraction) as caught:
        parse_interaction(json.dumps(doc), now=NOW)
    exc = caught.value
    assert exc.code in CODES
    for text in (str(exc), exc.reason, repr(exc), str(exc.args), exc.source, exc.source_id):
        assert SECRET not in (text or "")


# --- unexpected failures still come out as InvalidInteraction --------------------------------


def test_unexpected_parser_failure_is_not_json_with_the_cause_kept(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(text: str) -> Any:
        raise TypeError(SECRET)

    monkeypatch.setattr("schemas.validation.strict_json.load", broken)
    exc = rejected(json.dumps(event()), "not_json")
    assert isinstance(exc.__cause__, TypeError)
    assert "TypeError" in caplog.text
    assert SECRET not in caplog.text


def test_unexpected_validator_failure_is_invalid_field(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def validate_python(self, value: object) -> Any:
            raise KeyError(SECRET)

    monkeypatch.setattr("schemas.validation._INTERACTION", Broken())
    exc = rejected(json.dumps(event()), "invalid_field")
    assert isinstance(exc.__cause__, KeyError)
    assert (exc.source, exc.source_id) == ("clinic/a", "e-1")


# --- properties ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
secret_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=6).map(lambda text: SECRET + text),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["a", SECRET]), children, max_size=2)
    ),
    max_leaves=8,
)


def _outcome(raw: bytes | str) -> InvalidInteraction | None:
    try:
        parse_interaction(raw, now=NOW)
    except InvalidInteraction as exc:
        assert exc.code in CODES
        return exc
    return None


@given(st.binary(max_size=512))
def test_arbitrary_bytes_parse_or_raise_a_known_code(raw: bytes) -> None:
    _outcome(raw)


@given(json_values)
def test_arbitrary_json_values_parse_or_raise_a_known_code(value: object) -> None:
    _outcome(json.dumps(value))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(EVENT_TYPES),
    st.sampled_from(
        [
            *["id", "source", "time", "subject", "programid", "data", "type", "specversion"],
            *sorted({f"data.{name}" for data in MINIMAL_DATA.values() for name in data}),
            SECRET,
        ]
    ),
    secret_values,
)
def test_mutated_events_parse_or_raise_without_echoing(
    event_type: str, field: str, value: object
) -> None:
    doc = event(event_type)
    if field.startswith("data."):
        doc["data"][field.removeprefix("data.")] = value
    else:
        doc[field] = value
    exc = _outcome(json.dumps(doc))
    if exc is not None:
        assert SECRET not in str(exc)


@given(
    st.integers(min_value=1, max_value=5),
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1000000"), places=2),
    st.datetimes(
        min_value=datetime(1970, 1, 1),  # noqa: DTZ001
        max_value=datetime(2024, 6, 1),  # noqa: DTZ001
        timezones=st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m))),
    ),
)
def test_valid_events_round_trip(rating: int, amount: Decimal, time: datetime) -> None:
    review = parse_interaction(
        json.dumps(event(time=time.isoformat(), data_rating=rating)), now=NOW
    )
    assert parse_interaction(review.model_dump_json(), now=NOW) == review
    payment = parse_interaction(
        json.dumps(event("payment.recorded", data_amount=str(amount))), now=NOW
    )
    assert payment.data.amount == amount  # type: ignore[union-attr]
    assert parse_interaction(payment.model_dump_json(), now=NOW) == payment


# --- published JSON Schema ------------------------------------------------------------------


def test_committed_json_schemas_match_the_models() -> None:
    assert generate.check() == [], "run `python -m schemas.generate`"


def test_schema_files_name_their_dialect_id_and_title() -> None:
    for event_type in EVENT_TYPES:
        schema = json.loads((generate.SCHEMA_DIR / f"{event_type}.json").read_text())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == f"https://careledger.dev/schemas/v1/{event_type}.json"
        assert schema["title"] == event_type
        assert schema["additionalProperties"] is False
    index = json.loads((generate.SCHEMA_DIR / "index.json").read_text())
    assert [entry["type"] for entry in index["events"]] == list(EVENT_TYPES)


def test_program_file_schema_is_published_with_the_file_field_names() -> None:
    schema = json.loads((generate.JSON_DIR / generate.PROGRAM_SCHEMA).read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "https://careledger.dev/schemas/program.schema.json"
    assert schema["title"] == "careledger program"
    assert schema["required"] == ["program_id", "timezone", "versions"]
    window = schema["$defs"]["Window"]["properties"]
    assert set(window) == {"from", "until"}  # the alias a program file uses, not from_


def test_check_names_stale_missing_and_stray_files(tmp_path: Path) -> None:
    assert generate.main(["--dir", str(tmp_path)]) == 0
    assert generate.check(tmp_path) == []
    (tmp_path / "v1" / "review.submitted.json").write_text("{}\n")
    (tmp_path / "v1" / "index.json").unlink()
    (tmp_path / "v1" / "old.json").write_text("{}\n")
    (tmp_path / generate.PROGRAM_SCHEMA).write_text("{}\n")
    (tmp_path / "stray.json").write_text("{}\n")
    assert generate.check(tmp_path) == [
        "program.schema.json",
        "stray.json",
        "v1/index.json",
        "v1/old.json",
        "v1/review.submitted.json",
    ]
    assert generate.main(["--check", "--dir", str(tmp_path)]) == 1
    generate.write(tmp_path)
    assert generate.main(["--check", "--dir", str(tmp_path)]) == 0
    assert not (tmp_path / "stray.json").exists()
