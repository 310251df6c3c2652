"""The FHIR test resources are valid FHIR, checked by a maintained model package.

``fhir.resources`` ships R4B (4.3.0) models for pydantic 2 (its R4-only releases need
pydantic 1). For the resources here (Patient, Condition, Encounter, Procedure, Immunization,
QuestionnaireResponse, Observation, Bundle) R4 and R4B define the same elements, so a
resource valid under R4B is valid R4. The models refuse unknown elements, a missing required
element (Encounter.status, Immunization.occurrence[x]) and wrong types.
"""

from __future__ import annotations

import pytest
from fhir.resources.R4B import get_fhir_model_class

from producers.fhir import r4
from producers.fhir.mapping import MAPPED_TYPES
from tests.fhir_support import all_resources, resource


@pytest.mark.parametrize("name", all_resources())
def test_the_test_resource_is_valid_fhir(name: str) -> None:
    document = resource(name)
    model = get_fhir_model_class(document["resourceType"])
    parsed = model.model_validate(document)
    assert parsed.get_resource_type() == document["resourceType"]


def test_the_models_do_refuse_what_is_not_fhir() -> None:
    encounter = get_fhir_model_class("Encounter")
    with pytest.raises(ValueError):
        encounter.model_validate(resource("encounter-amb", reason="free text"))
    without_status = resource("encounter-amb")
    del without_status["status"]
    with pytest.raises(ValueError):
        encounter.model_validate(without_status)


def test_every_mapped_type_and_case_has_a_test_resource() -> None:
    types = {resource(name)["resourceType"] for name in all_resources()}
    assert types >= MAPPED_TYPES | {"Bundle", "Patient", "Condition"}
    assert MAPPED_TYPES <= r4.RESOURCE_TYPES


def test_the_r4_type_names_are_fhir_type_names() -> None:
    # R4B dropped a few R4 resources (the MedicinalProduct* and Substance* families and the
    # evidence syntheses); every other R4 name must be a model there.
    dropped = {n for n in r4.RESOURCE_TYPES if n.startswith(("MedicinalProduct", "Substance"))} | {
        "EffectEvidenceSynthesis",
        "RiskEvidenceSynthesis",
    }
    for name in sorted(r4.RESOURCE_TYPES - dropped - {"Substance"}):
        get_fhir_model_class(name)
