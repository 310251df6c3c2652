"""The folder tree shows the dependency rule: domain/ imports no infrastructure or adapters."""

from __future__ import annotations

import ast
import sqlite3
from pathlib import Path

import pytest

from careledger.cli import main

DOMAIN = Path(__file__).resolve().parents[2] / "domain"
FORBIDDEN = {
    "faust",
    "aiokafka",
    "sqlalchemy",
    "asyncpg",
    "psycopg",
    "prometheus_client",
    "pydantic",
    "careledger",
    "consumers",
    "producers",
    "projections",
    "schemas",
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted(DOMAIN.glob("*.py")), ids=lambda p: p.name)
def test_domain_module_imports_no_infrastructure(path: Path) -> None:
    assert not imported_roots(path) & FORBIDDEN


def test_domain_uses_only_the_domain_part_of_eventsourcing() -> None:
    for path in DOMAIN.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("eventsourcing"):
                assert node.module == "eventsourcing.domain", (path.name, node.module)


def test_the_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from sqlalchemy import text\nimport aiokafka.structs\n")
    assert imported_roots(bad) & FORBIDDEN == {"sqlalchemy", "aiokafka"}


def test_a_store_names_only_domain_modules_so_moving_adapters_never_strands_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The recorder's topic (careledger.adapters.store:...) is configuration, never stored: an
    # existing store opens after the adapters move; only event topics are kept, all in domain/.
    database = tmp_path / "ledger.db"
    monkeypatch.setenv("CARELEDGER_DATABASE_URL", f"sqlite:///{database}")
    traffic = tmp_path / "traffic.jsonl"
    argv = ["simulate", "--patients", "20", "--days", "40", "--output", str(traffic)]
    assert main(argv) == 0
    assert main(["ingest", str(traffic)]) == 0
    capsys.readouterr()
    with sqlite3.connect(database) as connection:
        topics = {row[0] for row in connection.execute("SELECT DISTINCT topic FROM stored_events")}
        tables = [row[0] for row in connection.execute("SELECT sql FROM sqlite_master")]
    assert topics
    assert all(topic.startswith("domain.") for topic in topics), topics
    assert not any("careledger" in (sql or "") for sql in tables)


PROJECTIONS = DOMAIN.parent / "projections"
ENTRY_POINTS = ("careledger.cli", "careledger.commands")


def imported_modules(path: Path) -> set[str]:
    """Every absolute import in ``path``, lazy ones inside functions included."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def _is_entry_point(module: str) -> bool:
    return any(module == root or module.startswith(f"{root}.") for root in ENTRY_POINTS)


@pytest.mark.parametrize("path", sorted(PROJECTIONS.rglob("*.py")), ids=lambda p: p.name)
def test_projections_never_import_the_entry_points(path: Path) -> None:
    # Entry points depend on the projections, not the reverse (a lazy import back into
    # careledger.cli once closed an import cycle of six files).
    assert not {m for m in imported_modules(path) if _is_entry_point(m)}


def test_the_entry_point_check_catches_a_lazy_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f():\n    from careledger.cli import main\n\nfrom careledger import commands\n"
    )
    found = {m for m in imported_modules(bad) if _is_entry_point(m)}
    assert found == {"careledger.cli", "careledger.cli.main", "careledger.commands"}
