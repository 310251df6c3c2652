"""The report as one self-contained HTML page: inline CSS, inline SVG, no script.

Each chart is followed by a table of the numbers it draws, so the page reads without the
pictures (screen readers, copy-paste into a spreadsheet) and tests can check the numbers. Cells
carry the exact value in ``data-value`` and a rounded, human one as text. The page depends only
on the data: the one time it shows is the ledger's latest event, so the same ledger always
renders the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime

from careledger.report.data import (
    GoalDayBin,
    MembershipMonth,
    MonthPoints,
    PartnerLiability,
    ProgramReport,
    Report,
    RewardVouchers,
)
from careledger.report.svg import PALETTE, Series, bar_chart, esc, grouped_bars, heatmap, line_chart

TITLES = {
    "retention": "Retention by cohort",
    "tiers": "Tier distribution",
    "points": "Points earned, redeemed and expired per month",
    "liability": "Points liability at month end",
    "partners": "Liability by partner",
    "goal-days": "Goal days in the latest 30 days",
    "rewards": "Redemptions per reward",
    "memberships": "Paid memberships per month",
}

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1b1f23; background: #fff; margin: 0 auto; max-width: 1200px; padding: 24px; }
h1 { font-size: 26px; margin: 0 0 4px; } h3 { font-size: 17px; margin: 24px 0 6px; }
h2 { font-size: 21px; margin: 36px 0 8px; border-bottom: 2px solid #d0d7de; padding-bottom: 4px; }
.meta, .note { color: #57606a; margin: 0 0 8px; }
figure { margin: 0 0 8px; } svg.chart { width: 100%; height: auto; display: block; }
svg text { font: 12px system-ui, sans-serif; fill: #1b1f23; }
svg text.axis { fill: #57606a; } svg text.value { font-weight: 600; }
svg text.cell { font-size: 11px; font-weight: 600; } svg text.light { fill: #fff; }
svg text.empty { font-size: 16px; fill: #57606a; } svg line.grid { stroke: #e6e9ed; }
table { border-collapse: collapse; margin: 4px 0 16px; font-variant-numeric: tabular-nums; }
caption { text-align: left; color: #57606a; padding-bottom: 4px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; white-space: nowrap; }
td { text-align: right; } .scroll { overflow-x: auto; }
table[data-table="retention"] { font-size: 12px; } td small { color: #57606a; }
th { background: #f6f8fa; text-align: left; } td.blank { background: #fafbfc; }
"""


def render(report: Report) -> str:
    """The whole page for ``report``."""
    as_of = (
        f'<time datetime="{esc(_iso(report.as_of))}">{esc(_iso(report.as_of))}</time>'
        if report.as_of
        else "no events yet"
    )
    body = [
        "<header><h1>careledger program report</h1>",
        f'<p class="meta">Ledger as of its latest event: {as_of}. Aggregates only: '
        "no patient appears in this report.</p></header>",
    ]
    if not report.programs:
        body.append('<p class="note">The read models hold no program yet.</p>')
    body += [_program(program) for program in report.programs]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>careledger report</title><style>{CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def _iso(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else ""


def _program(program: ProgramReport) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", program.program_id.lower()).strip("-") or "program"
    return (
        f'<section class="program" data-program="{esc(program.program_id)}">'
        f"<h2>Program {esc(program.program_id)}</h2>"
        + _retention(f"{slug}-retention", program)
        + _tiers(f"{slug}-tiers", program)
        + _points(f"{slug}-points", program.months)
        + _liability(f"{slug}-liability", program.months)
        + (_partners(f"{slug}-partners", program.partners) if program.partners else "")
        + (_goal_days(f"{slug}-goal-days", program.goal_days) if program.goal_days else "")
        + (_rewards(f"{slug}-rewards", program.rewards) if program.rewards else "")
        + (_memberships(f"{slug}-memberships", program.memberships) if program.memberships else "")
        + "</section>"
    )


def _figure(kind: str, chart: str, note: str) -> str:
    return f'<h3>{esc(TITLES[kind])}</h3><p class="note">{esc(note)}</p><figure>{chart}</figure>'


def _table(kind: str, caption: str, head: Sequence[str], rows: Sequence[str]) -> str:
    header = "".join(f'<th scope="col">{esc(name)}</th>' for name in head)
    return (
        f'<div class="scroll"><table data-table="{esc(kind)}"><caption>{esc(caption)}</caption>'
        f"<thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _int(value: int) -> str:
    return f'<td data-value="{esc(value)}">{esc(f"{value:,}")}</td>'


def _month(month: date) -> str:
    return month.strftime("%Y-%m")


def _retention(chart_id: str, program: ProgramReport) -> str:
    cohorts = sorted({cell.cohort_month for cell in program.cohorts})
    offsets = range(max((cell.month_offset for cell in program.cohorts), default=-1) + 1)
    sizes = {cell.cohort_month: cell.cohort_size for cell in program.cohorts}
    by_key = {(cell.cohort_month, cell.month_offset): cell for cell in program.cohorts}
    rows = [f"{_month(c)} (n={sizes[c]:,})" for c in cohorts]
    row_of = {c: i for i, c in enumerate(cohorts)}
    cells = {
        (row_of[cell.cohort_month], cell.month_offset): (
            cell.retention_rate,
            f"{cell.retention_rate:.0%}",
            f"{_month(cell.cohort_month)}, month {cell.month_offset}: "
            f"{cell.active_patients:,} of {cell.cohort_size:,} active "
            f"({cell.retention_rate:.1%})",
        )
        for cell in program.cohorts
    }
    chart = heatmap(chart_id, TITLES["retention"], rows, [f"M{o}" for o in offsets], cells)
    table_rows = []
    for c in cohorts:
        tds = [f'<th scope="row">{esc(_month(c))}</th>', _int(sizes[c])]
        for offset in offsets:
            cell = by_key.get((c, offset))
            tds.append(
                '<td class="blank"></td>'
                if cell is None
                else f'<td data-value="{esc(repr(cell.retention_rate))}" '
                f'data-active="{esc(cell.active_patients)}">{esc(f"{cell.retention_rate:.1%}")} '
                f"<small>({esc(f'{cell.active_patients:,}')})</small></td>"
            )
        table_rows.append(f"<tr>{''.join(tds)}</tr>")
    head = ["cohort", "size", *(f"M{o}" for o in offsets)]
    note = (
        "Each row is the patients who joined in that month; each column, the share of them "
        "active that many months later."
    )
    caption = (
        "Retention rate (active patients) by cohort month (size: patients who joined) "
        "and months since joining (M0, M1, ...)"
    )
    return _figure("retention", chart, note) + _table("retention", caption, head, table_rows)


def _tiers(chart_id: str, program: ProgramReport) -> str:
    names = [t.tier for t in program.tiers]
    counts = [t.patients for t in program.tiers]
    chart = bar_chart(chart_id, TITLES["tiers"], names, counts)
    total = sum(counts)
    rows = [
        f'<tr><th scope="row">{esc(t.tier)}</th>{_int(t.patients)}'
        f"<td>{esc(f'{(t.patients / total if total else 0):.1%}')}</td></tr>"
        for t in program.tiers
    ]
    note = f"Patients by their current tier ({total:,} patients)."
    caption = "Patients per tier"
    return _figure("tiers", chart, note) + _table(
        "tiers", caption, ["tier", "patients", "share"], rows
    )


def _points(chart_id: str, months: Sequence[MonthPoints]) -> str:
    labels = [_month(m.month) for m in months]
    series = [
        Series("earned", PALETTE[0], [m.earned for m in months]),
        Series("redeemed", PALETTE[1], [m.redeemed for m in months]),
        Series("expired", PALETTE[2], [m.expired for m in months]),
        Series("reversed", PALETTE[3], [m.reversed for m in months]),
    ]
    chart = grouped_bars(chart_id, TITLES["points"], labels, series)
    rows = [
        f'<tr><th scope="row">{esc(_month(m.month))}</th>{_int(m.earned)}{_int(m.redeemed)}'
        f"{_int(m.expired)}{_int(m.reversed)}</tr>"
        for m in months
    ]
    note = "Points that entered and left patients' balances in each calendar month (UTC)."
    head = ["month", "earned", "redeemed", "expired", "reversed"]
    return _figure("points", chart, note) + _table("points", "Points per month", head, rows)


def _liability(chart_id: str, months: Sequence[MonthPoints]) -> str:
    labels = [_month(m.month) for m in months]
    values = [m.liability_points for m in months]
    chart = line_chart(chart_id, TITLES["liability"], labels, values, PALETTE[0])
    rows = [
        f'<tr><th scope="row">{esc(_month(m.month))}</th>'
        f"<td>{esc(m.liability_day.isoformat())}</td>{_int(m.liability_points)}</tr>"
        for m in months
    ]
    note = (
        "Points earned and not yet redeemed, expired or reversed: what the program still owes, "
        "at the last day of each month with activity."
    )
    head = ["month", "as of day", "liability points"]
    return _figure("liability", chart, note) + _table(
        "liability", "Outstanding points at month end", head, rows
    )


def _money(value: object) -> str:
    if value is None:
        return '<td data-value="">n/a</td>'
    return f'<td data-value="{esc(value)}">{esc(f"{value:,}")}</td>'


def _partners(chart_id: str, partners: Sequence[PartnerLiability]) -> str:
    names = [p.partner for p in partners]
    chart = bar_chart(chart_id, TITLES["partners"], names, [p.outstanding for p in partners])
    rows = [
        f'<tr><th scope="row">{esc(p.partner)}</th>{_int(p.issued)}{_int(p.redeemed)}'
        f"{_int(p.expired)}{_int(p.reversed)}{_int(p.outstanding)}"
        f"{_money(p.outstanding_value)}</tr>"
        for p in partners
    ]
    note = (
        "Points each partner issued that are still in patients' lots, and their value at the "
        "program's point value: what each partner funds when they are redeemed."
    )
    head = ["partner", "issued", "redeemed", "expired", "reversed", "outstanding", "value"]
    return _figure("partners", chart, note) + _table(
        "partners", "Outstanding points by issuing partner", head, rows
    )


def _goal_days(chart_id: str, bins: Sequence[GoalDayBin]) -> str:
    labels = [str(b.goal_days_30) for b in bins]
    chart = bar_chart(chart_id, TITLES["goal-days"], labels, [b.patients for b in bins])
    rows = [f'<tr><th scope="row">{esc(b.goal_days_30)}</th>{_int(b.patients)}</tr>' for b in bins]
    total = sum(b.patients for b in bins)
    note = (
        f"Patients by goal days in the 30 days ending with their latest goal day "
        f"({total:,} patients with a goal day)."
    )
    return _figure("goal-days", chart, note) + _table(
        "goal-days",
        "Patients by goal days in their latest 30 days",
        ["goal days", "patients"],
        rows,
    )


def _rewards(chart_id: str, rewards: Sequence[RewardVouchers]) -> str:
    labels = [r.reward_id for r in rewards]
    series = [
        Series("issued", PALETTE[0], [r.issued for r in rewards]),
        Series("used", PALETTE[1], [r.used for r in rewards]),
        Series("expired", PALETTE[2], [r.expired for r in rewards]),
        Series("cancelled", PALETTE[3], [r.cancelled for r in rewards]),
    ]
    chart = grouped_bars(chart_id, TITLES["rewards"], labels, series)
    rows = [
        f'<tr><th scope="row">{esc(r.reward_id)}</th>{_int(r.issued)}{_int(r.used)}'
        f"{_int(r.expired)}{_int(r.cancelled)}</tr>"
        for r in rewards
    ]
    note = (
        "Vouchers issued per catalogue reward (and stamp card), and how many were used, "
        "expired unused or cancelled with their redemption; the rest are still open."
    )
    head = ["reward", "issued", "used", "expired", "cancelled"]
    return _figure("rewards", chart, note) + _table("rewards", "Vouchers per reward", head, rows)


def _memberships(chart_id: str, months: Sequence[MembershipMonth]) -> str:
    labels = [_month(m.month) for m in months]
    series = [
        Series("active", PALETTE[0], [m.active for m in months]),
        Series("started", PALETTE[1], [m.started for m in months]),
        Series("renewed", PALETTE[2], [m.renewed for m in months]),
        Series("lapsed", PALETTE[3], [m.lapsed for m in months]),
    ]
    chart = grouped_bars(chart_id, TITLES["memberships"], labels, series)
    rows = [
        f'<tr><th scope="row">{esc(_month(m.month))}</th>{_int(m.active)}{_int(m.started)}'
        f"{_int(m.renewed)}{_int(m.lapsed)}{_money(m.revenue)}</tr>"
        for m in months
    ]
    note = (
        "Memberships with a paid period in each calendar month (UTC; months already paid "
        "ahead included), started, renewed and lapsed, and the revenue of starts and renewals."
    )
    head = ["month", "active", "started", "renewed", "lapsed", "revenue"]
    return _figure("memberships", chart, note) + _table(
        "memberships", "Memberships per month", head, rows
    )
