"""The codes the mapping looks for, and how a configured code matches a FHIR Coding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from producers.fhir.resources import Coding

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

    def matches(self, coding: Coding) -> bool:
        return coding.code == self.code and self.system in (None, coding.system)


def tokens(tokens: Sequence[str]) -> tuple[CodeToken, ...]:
    return tuple(CodeToken.parse(token) for token in tokens if token.strip())
