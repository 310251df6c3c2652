"""The demo's summary as a person reads it: aligned tables and a retention verdict.

``render`` is pure: it takes what the demo read from its metrics and read models and returns
text. Percentages are rounded for reading; ``careledger demo --json`` keeps the exact numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from careledger.report import Report
from careledger.report.data import CohortCell

RETENTION_FLOOR = 0.20  # the 12-month retention rule (ops/prometheus/alerts-retention.yml)
OUTCOMES = ("accepted", "duplicate", "rejected")
KPIS = (
    ("interactions", "interactions"),
    ("points_earned", "points earned"),
    ("points_redeemed", "points redeemed"),
    ("points_expired", "points expired"),
)


@dataclass(frozen=True)
class Retention12m:
    """A row of the view ``program_retention_12m``."""

    program_id: str
    as_of_month: date | None
    previous_patients: int
    retained_patients: int
    rate: float | None


@dataclass(frozen=True)
class DemoSummary:
    """Everything the summary shows."""

    heading: str
    machine: dict[str, Any]  # what --json prints: outcomes, tiers, KPIs, dead letters
    report: Report
    retention: Sequence[Retention12m]


def verdict(rate: float | None) -> str:
    if rate is None:
        return "no verdict: nobody was active in the previous 12 months"
    return "healthy" if rate >= RETENTION_FLOOR else "failing: below 20 %"


def render(summary: DemoSummary) -> str:
    parts = [
        summary.heading,
        _outcomes(summary.machine["events_by_outcome"]),
        _kpis(summary.machine["kpis"], summary.machine["dead_letters"]),
        *(_program(program, summary.retention) for program in summary.report.programs),
    ]
    return "\n\n".join(parts) + "\n"


def table(header: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "  ") -> str:
    """Columns padded to their widest cell: the first left-aligned, the rest right-aligned."""
    cells = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        first = row[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append(indent + "  ".join([first, *rest]).rstrip())
    return "\n".join(lines)


def _count(value: int | None) -> str:
    return f"{int(value or 0):,}"


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def _outcomes(outcomes: Mapping[str, int]) -> str:
    total = sum(outcomes.values())
    names = [*OUTCOMES, *sorted(set(outcomes) - set(OUTCOMES))]
    rows = [
        (name, _count(outcomes.get(name, 0)), _share(outcomes.get(name, 0), total))
        for name in names
    ]
    rows.append(("total", _count(total), ""))
    return "Records by outcome\n" + table(("outcome", "records", "share"), rows)


def _kpis(kpis: Mapping[str, Any], dead_letters: int) -> str:
    rows = [(label, _count(kpis.get(key))) for key, label in KPIS]
    rows.append(("dead letters", _count(dead_letters)))
    return "KPIs (whole period, every program)\n" + table(("kpi", "value"), rows)


def _program(program: Any, retention: Sequence[Retention12m]) -> str:
    patients = sum(tier.patients for tier in program.tiers)
    tiers = [(t.tier, _count(t.patients), _share(t.patients, patients)) for t in program.tiers]
    parts = [
        f"Program {program.program_id}",
        "Tiers\n" + table(("tier", "patients", "share"), tiers),
    ]
    parts.extend(_retention(row) for row in retention if row.program_id == program.program_id)
    if program.cohorts:
        parts.append(_cohorts(program.cohorts))
    return "\n\n".join(parts)


def _retention(row: Retention12m) -> str:
    as_of = f" as of {row.as_of_month:%Y-%m}" if row.as_of_month else ""
    if row.rate is None:
        figure = "-"
    else:
        figure = (
            f"{100 * row.rate:.1f} % ({row.retained_patients:,} of the "
            f"{row.previous_patients:,} patients active in the previous 12 months)"
        )
    return (
        f"12-month retention{as_of}: {figure}\n  verdict (rule: at least 20 %): {verdict(row.rate)}"
    )


def _cohorts(cells: Sequence[CohortCell]) -> str:
    """Percent of each monthly cohort active N months after it joined."""
    months = sorted({cell.cohort_month for cell in cells})
    width = max(cell.month_offset for cell in cells) + 1
    grid = {(cell.cohort_month, cell.month_offset): cell for cell in cells}
    sizes = {cell.cohort_month: cell.cohort_size for cell in cells}
    header = ["cohort", "patients", *(f"+{offset}" for offset in range(width))]
    rows = []
    for month in months:
        rates = [grid.get((month, offset)) for offset in range(width)]
        shown = [f"{100 * cell.retention_rate:.0f}" if cell else "" for cell in rates]
        rows.append([f"{month:%Y-%m}", _count(sizes[month]), *shown])
    title = "Retention cohorts (% of each month's new patients active N months later)"
    return title + "\n" + table(header, rows)
