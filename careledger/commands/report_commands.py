"""``careledger report --html FILE``: the read models as one self-contained HTML page."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from careledger.report import collect, render
from careledger.report.data import Report
from careledger.settings import Settings
from projections.service import catch_up


def register(subparsers: Any) -> None:
    report = subparsers.add_parser("report", help="charts of the read models as one HTML file")
    report.add_argument("--html", required=True, type=Path, metavar="FILE", help="where to write")
    report.add_argument("--program", help="one program (default: every program with data)")
    report.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace, settings: Settings) -> int:
    """Catch the read models up, write the page; the stdout line is a JSON summary."""
    report = asyncio.run(_collect(settings, args.program))
    if args.program is not None and _is_empty(report):
        print(f"no read-model data for program {args.program}", file=sys.stderr)
        return 1
    size = _write(args.html, render(report))
    summary = {
        "html": str(args.html),
        "bytes": size,
        "programs": [program.program_id for program in report.programs],
        "as_of": report.as_of.isoformat() if report.as_of else None,
    }
    print(json.dumps(summary))
    return 0


async def _collect(settings: Settings, program_id: str | None) -> Report:
    # A report on stale read models would silently disagree with the ledger.
    await catch_up(settings)
    return await collect(settings, program_id)


def _is_empty(report: Report) -> bool:
    return all(
        not program.cohorts and not program.months and not any(t.patients for t in program.tiers)
        for program in report.programs
    )


def _write(path: Path, page: str) -> int:
    """Write through a temporary file and rename, so a reader never sees half a report."""
    data = page.encode("utf-8")
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
    return len(data)
