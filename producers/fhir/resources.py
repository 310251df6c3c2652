"""The few fields of FHIR R4 resources the mapping reads, as strict pydantic models.

Unknown fields are ignored, so the rest of a resource (names, addresses, narrative, notes) is
never even read. A validation error's message quotes input values: never show one.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FhirModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, populate_by_name=True)


class Coding(FhirModel):
    system: str | None = None
    code: str | None = None


class Concept(FhirModel):
    coding: list[Coding] = []


class Reference(FhirModel):
    reference: str | None = None


class Period(FhirModel):
    start: str | None = None
    end: str | None = None


class Quantity(FhirModel):
    value: int | float | None = None


class Meta(FhirModel):
    versionId: str | None = None
    lastUpdated: str | None = None


class Resource(FhirModel):
    resourceType: str
    id: str | None = None
    meta: Meta | None = None
    status: str | None = None


class Encounter(Resource):
    class_: Coding | None = Field(None, alias="class")
    type: list[Concept] = []
    serviceType: Concept | None = None
    period: Period | None = None
    subject: Reference | None = None


class Procedure(Resource):
    code: Concept | None = None
    performedDateTime: str | None = None
    performedPeriod: Period | None = None
    subject: Reference | None = None


class Immunization(Resource):
    occurrenceDateTime: str | None = None
    patient: Reference | None = None


class QuestionnaireResponse(Resource):
    authored: str | None = None
    subject: Reference | None = None


class Observation(Resource):
    code: Concept | None = None
    effectiveDateTime: str | None = None
    effectiveInstant: str | None = None
    effectivePeriod: Period | None = None
    valueQuantity: Quantity | None = None
    subject: Reference | None = None


class Entry(FhirModel):
    fullUrl: str | None = None
    resource: dict[str, Any] | None = None


class Bundle(FhirModel):
    entry: list[Entry] = []
