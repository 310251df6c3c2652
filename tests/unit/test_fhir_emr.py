"""The demo's simulated EMR writes valid FHIR R4 that the gateway maps, every resource."""

from __future__ import annotations

from collections import Counter
from datetime import date
from zoneinfo import ZoneInfo

import orjson
from fhir.resources.R4B import get_fhir_model_class

from producers.fhir.emr import SimulatedEmr
from producers.fhir.mapping import Mapped
from producers.simulator import simulate
from tests.fhir_support import NOW, translator


def test_the_simulated_emr_writes_valid_fhir_that_maps_to_the_same_interaction_kinds() -> None:
    emr = SimulatedEmr(ZoneInfo("Europe/Berlin"))
    t = translator()
    kinds: Counter[str] = Counter()
    taken = total = 0
    for event in simulate(120, 90, 7, date(2025, 1, 1)):
        total += 1
        resource = emr.resource(event.payload)
        if resource is None:
            continue
        taken += 1
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        (outcome,) = t.translate(orjson.dumps(resource), NOW)
        assert isinstance(outcome, Mapped), (resource["resourceType"], outcome)
        assert outcome.event_type == event.event_type
        kinds[outcome.event_type] += 1
    assert 0.1 < taken / total < 0.4  # about a quarter of the patients
    assert {"visit.completed", "checkup.completed", "activity.reading"} <= set(kinds)


def test_a_voided_visit_becomes_an_entered_in_error_encounter_that_voids_it() -> None:
    emr = SimulatedEmr(ZoneInfo("UTC"), share=1)
    visit = {
        "specversion": "1.0",
        "id": "emr-1-1",
        "source": "urn:sim:emr",
        "type": "visit.completed",
        "time": "2025-03-01T10:00:00Z",
        "subject": "p-1",
        "data": {"visit_id": "v1", "visit_type": "specialist"},
    }
    void = dict(
        visit,
        id="emr-1-2",
        type="interaction.voided",
        time="2025-03-02T10:00:00Z",
        data={"voided_id": "emr-1-1", "voided_source": "urn:sim:emr", "reason": "duplicate"},
    )
    t = translator()
    (mapped,) = t.translate(orjson.dumps(emr.resource(orjson.dumps(visit))), NOW)
    (voided,) = t.translate(orjson.dumps(emr.resource(orjson.dumps(void))), NOW)
    assert isinstance(mapped, Mapped) and isinstance(voided, Mapped)
    assert orjson.loads(mapped.value)["data"]["visit_type"] == "specialist"
    assert orjson.loads(voided.value)["data"]["voided_id"] == orjson.loads(mapped.value)["id"]
    assert emr.resource(b"not json") is None
