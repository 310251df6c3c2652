"""`careledger report --html`: its tables equal the read models, and chromium draws its charts.

A small `careledger demo` fills a ledger; the report is run as a process. The numbers are
checked against the read models queried here with plain SQL (months folded by the test itself,
not by the report's code), on SQLite and PostgreSQL. Then headless chromium renders the page: a
screenshot whose pixels hold the charts' colours, and a DOM that holds the four SVG charts.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import psycopg
import pytest

from careledger.report.data import CohortCell, MonthPoints, ProgramReport, Report, TierCount
from careledger.report.html import TITLES, render
from tests.conftest import PG_URL, Database

pytestmark = pytest.mark.integration

PROGRAM = "clinic-default"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def careledger(db: Database, cwd: Path, *args: str) -> str:
    env = {**os.environ, **db.env(), "CARELEDGER_METRICS_PORT": "0"}
    env.pop("CARELEDGER_KAFKA_BOOTSTRAP", None)  # the demo starts its embedded broker
    proc = subprocess.run(
        [sys.executable, "-m", "careledger.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def report_of_a_demo(db: Database, tmp_path: Path) -> str:
    careledger(db, tmp_path, "demo", "--patients", "40", "--days", "40")
    careledger(db, tmp_path, "report", "--html", str(tmp_path / "out.html"))
    return (tmp_path / "out.html").read_text(encoding="utf-8")


def query(db: Database, sql: str) -> list[tuple[Any, ...]]:
    if db.kind == "sqlite":
        import sqlite3

        with sqlite3.connect(db.url.removeprefix("sqlite:///")) as conn:
            return conn.execute(sql).fetchall()
    with psycopg.connect(PG_URL) as conn:
        conn.execute(f'SET search_path TO "{db.schema}"')
        return conn.execute(sql).fetchall()


class Tables(HTMLParser):
    """Every ``<table data-table=...>``: rows of (text, attributes) cells, header row left out."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, dict[str, str]]]]] = {}
        self._table: str | None = None
        self._cell: tuple[list[str], dict[str, str]] | None = None
        self._in_body = False
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._table = named["data-table"]
            self.tables[self._table] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._in_body:
            self._cell = ([], named)

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[0].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append(("".join(self._cell[0]), self._cell[1]))
            self._cell = None
        elif tag == "tbody":
            self._in_body = False


def month(day: object) -> str:
    return str(day)[:7]  # SQLite gives '2026-10-13', PostgreSQL a date: both start YYYY-MM


def expected_months(db: Database) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    days = query(
        db,
        "SELECT day, points_earned, points_redeemed, points_expired, points_reversed,"
        f" liability_points FROM program_kpis_daily WHERE program_id = '{PROGRAM}' ORDER BY day",
    )
    for key, group in itertools.groupby(days, key=lambda row: month(row[0])):
        yield key, list(group)


def test_the_report_tables_equal_the_read_models(database: Database, tmp_path: Path) -> None:
    page = report_of_a_demo(database, tmp_path)
    tables = Tables(page).tables
    # What a reader sees is the exact value in data-value, rounded for people.
    for text, cell in (cell for rows in tables.values() for row in rows for cell in row):
        if "data-active" in cell:
            assert text == f"{float(cell['data-value']):.1%} ({int(cell['data-active']):,})"
        elif "data-value" in cell:
            assert text == f"{int(cell['data-value']):,}"

    retention = {
        (row[0][0], i): (int(row[1][1]["data-value"]), int(cell["data-active"]), cell["data-value"])
        for row in tables["retention"]
        for i, (_, cell) in enumerate(row[2:])
        if "data-value" in cell
    }
    cohorts = query(
        database,
        "SELECT cohort_month, month_offset, cohort_size, active_patients, retention_rate"
        f" FROM retention_cohorts WHERE program_id = '{PROGRAM}'",
    )
    assert retention == {(month(c), o): (n, a, repr(r)) for c, o, n, a, r in cohorts}
    assert len(retention) >= 3

    tiers = {row[0][0]: int(row[1][1]["data-value"]) for row in tables["tiers"]}
    held = dict(
        query(
            database,
            f"SELECT tier, count(*) FROM balances WHERE program_id = '{PROGRAM}' GROUP BY tier",
        )
    )
    assert {tier: n for tier, n in tiers.items() if n} == held
    assert list(tiers)[:4] == ["bronze", "silver", "gold", "platinum"]  # the program's order

    months = list(expected_months(database))
    points = [[int(cell[1]["data-value"]) for cell in row[1:]] for row in tables["points"]]
    assert [row[0][0] for row in tables["points"]] == [key for key, _ in months]
    assert points == [[sum(day[k] for day in days) for k in (1, 2, 3, 4)] for _, days in months]
    assert sum(row[0] for row in points) > 0

    liability = [(r[0][0], r[1][0], int(r[2][1]["data-value"])) for r in tables["liability"]]
    assert liability == [(key, str(days[-1][0]), days[-1][5]) for key, days in months]

    # Aggregates only: no patient id anywhere in the page.
    patients = [pid for (pid,) in query(database, "SELECT patient_id FROM balances")]
    assert patients and not [pid for pid in patients if pid in page]

    # Self-contained and deterministic: a second run over the same ledger, the same bytes.
    assert not re.search(
        r"<script|<link|<img|@import|url\((?!#)|https?://(?!www\.w3\.org/2000/svg)", page
    )
    careledger(database, tmp_path, "report", "--html", str(tmp_path / "again.html"))
    assert (tmp_path / "again.html").read_text(encoding="utf-8") == page


def test_every_value_is_escaped() -> None:
    hostile = '<script>alert("x")</script>&'
    program = ProgramReport(
        hostile,
        (CohortCell(date(2026, 1, 1), 0, 3, 3, 1.0),),
        (TierCount(hostile, 2),),
        (MonthPoints(date(2026, 1, 1), 10, 0, 0, 0, 10, date(2026, 1, 31)),),
    )
    page = render(Report(None, (program,)))
    assert (
        "<script" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page
    )
    assert render(Report(None, (program,))) == page


def chromium() -> str:
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if found is None:
        pytest.fail("chromium is not installed: run scripts/install-browser.sh (Debian's chromium)")
    return found


def png_colours(path: Path) -> set[bytes]:
    """The distinct RGB(A) pixel values of an 8-bit RGB or RGBA, non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + size]))
        pos += 12 + size
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour_type, interlace) in ((8, 2, 0), (8, 6, 0))
    bpp = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = width * bpp
    previous, colours = bytearray(stride), set[bytes]()
    for r in range(height):
        start = r * (stride + 1)
        line = unfilter(raw[start], bytearray(raw[start + 1 : start + 1 + stride]), previous, bpp)
        colours.update(bytes(line[i : i + bpp]) for i in range(0, stride, bpp))
        previous = line
    return colours


def unfilter(kind: int, line: bytearray, up: bytearray, bpp: int) -> bytearray:
    """Undo one scanline's PNG filter (None, Sub, Up, Average, Paeth)."""
    for i in range(len(line)):
        a = line[i - bpp] if i >= bpp else 0
        b, c = up[i], (up[i - bpp] if i >= bpp else 0)
        if kind == 1:
            line[i] = (line[i] + a) & 255
        elif kind == 2:
            line[i] = (line[i] + b) & 255
        elif kind == 3:
            line[i] = (line[i] + (a + b) // 2) & 255
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    return line


def test_chromium_draws_the_charts(sqlite_database: Database, tmp_path: Path) -> None:
    browser = chromium()
    report_of_a_demo(sqlite_database, tmp_path)
    html, png = tmp_path / "out.html", tmp_path / "shot.png"
    common = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]

    shot = subprocess.run(
        [*common, f"--screenshot={png}", "--window-size=1280,2000", html.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.returncode == 0, shot.stderr[-3000:]
    colours = png_colours(png)
    assert len(colours) > 20, f"a blank screenshot: {len(colours)} colours"
    # Solid fills are painted with their exact colours: the earned bars' blue and the heatmap's
    # full-retention navy (every cohort's month 0) are on screen, so the SVG charts were drawn.
    assert {bytes.fromhex("0072b2"), bytes.fromhex("08306b")} <= {c[:3] for c in colours}

    dom = subprocess.run(
        [*common, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-3000:]
    svgs = re.findall(r"<svg\b.*?</svg>", dom.stdout, flags=re.DOTALL)
    assert len(svgs) == 4
    demo_charts = list(TITLES.values())[:4]  # (partners and goal days: coalition, activity)
    for svg, title in zip(svgs, demo_charts, strict=True):
        assert f">{title}</title>" in svg


def test_liability_by_partner_and_the_goal_day_distribution(
    database: Database, tmp_path: Path
) -> None:
    """A coalition's partners and an activity program's goal days, as the read models say."""
    import asyncio

    from projections.service import catch_up
    from tests.integration.test_projections_support import (
        activity,
        apply,
        coalition,
        ledger_for,
        settings_for,
    )

    apply(ledger_for(database), [*coalition(), *activity()])
    asyncio.run(catch_up(settings_for(database)))
    pages = {}
    for program in ("coalition-health", "activity-motion"):
        out = tmp_path / f"{program}.html"
        careledger(database, tmp_path, "report", "--html", str(out), "--program", program)
        pages[program] = out.read_text(encoding="utf-8")

    coalition_page = pages["coalition-health"]
    assert TITLES["partners"] in coalition_page and TITLES["goal-days"] not in coalition_page
    partners = [
        (row[0][0], *(cell[1]["data-value"] for cell in row[1:]))
        for row in Tables(coalition_page).tables["partners"]
    ]
    liability = query(
        database,
        "SELECT partner, issued, redeemed, expired, reversed, outstanding, outstanding_value"
        " FROM partner_liability WHERE program_id = 'coalition-health' ORDER BY partner",
    )
    cents = Decimal("0.01")  # (SQLite hands the value back as a float)
    assert partners == [
        (*(str(v) for v in row[:-1]), str(Decimal(str(row[-1])).quantize(cents)))
        for row in liability
    ]
    assert partners[0] == ("clinic-main", "205", "100", "0", "0", "105", "1.05")

    motion_page = pages["activity-motion"]
    assert TITLES["goal-days"] in motion_page and TITLES["partners"] not in motion_page
    bins = [(r[0][0], int(r[1][1]["data-value"])) for r in Tables(motion_page).tables["goal-days"]]
    assert bins == [(str(n), 1 if n == 10 else 0) for n in range(11)]  # walt: 10 goal days


def test_redemptions_per_reward_and_the_membership_kpis(database: Database, tmp_path: Path) -> None:
    """membership-plus's vouchers per reward and its memberships per month, as the read
    models say; a program without either shows neither."""
    import asyncio

    from projections.service import catch_up
    from tests.integration.test_projections_support import (
        DISCOUNTS,
        PLUS,
        PLUS_MAINTENANCE,
        apply,
        clinic_discounts,
        ledger_for,
        membership_plus,
        settings_for,
    )

    ledger = ledger_for(database)
    apply(ledger, [*membership_plus(), *clinic_discounts()])
    ledger.maintain(PLUS, PLUS_MAINTENANCE)
    asyncio.run(catch_up(settings_for(database)))
    pages = {}
    for program in (PLUS, DISCOUNTS):
        out = tmp_path / f"{program}.html"
        careledger(database, tmp_path, "report", "--html", str(out), "--program", program)
        pages[program] = out.read_text(encoding="utf-8")

    tables = Tables(pages[PLUS]).tables
    rewards = [
        (row[0][0], *(cell[1]["data-value"] for cell in row[1:])) for row in tables["rewards"]
    ]
    assert rewards == [("parking-pass", "3", "1", "1", "1")]  # r1 used, r2 expired, r3 cancelled
    counted = query(
        database,
        "SELECT reward_id, count(*), sum(CASE WHEN status = 'used' THEN 1 ELSE 0 END) FROM vouchers"
        f" WHERE program_id = '{PLUS}' GROUP BY reward_id",
    )
    assert [(r[0], str(r[1]), str(r[2])) for r in counted] == [rewards[0][:3]]
    memberships = [
        (row[0][0], *(cell[1]["data-value"] for cell in row[1:])) for row in tables["memberships"]
    ]
    kpis = query(
        database,
        "SELECT month, active, started, renewed, lapsed, revenue FROM membership_kpis_monthly"
        f" WHERE program_id = '{PLUS}' ORDER BY month",
    )
    cents = Decimal("0.01")  # (SQLite hands the value back as a float)
    assert memberships == [
        (month(row[0]), *(str(v) for v in row[1:5]), str(Decimal(str(row[5])).quantize(cents)))
        for row in kpis
    ]
    assert memberships[:3] == [
        ("2026-01", "2", "2", "0", "0", "525.00"),
        ("2026-02", "2", "0", "1", "0", "45.00"),
        ("2026-03", "2", "0", "0", "1", "0.00"),
    ]
    assert TITLES["rewards"] in pages[PLUS] and TITLES["memberships"] in pages[PLUS]
    # clinic-discounts: the stamp card's voucher, no memberships
    discounts = Tables(pages[DISCOUNTS]).tables
    assert [row[0][0] for row in discounts["rewards"]] == ["free-service"]
    assert TITLES["memberships"] not in pages[DISCOUNTS]
