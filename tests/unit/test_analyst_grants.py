"""docs/sql/analyst_role.sql is generated from the read-model registry, never a second list."""

from __future__ import annotations

from pathlib import Path

from projections import grants
from projections.tables import READ_MODEL_TABLES, projection_positions
from projections.views import VIEWS


def test_the_committed_script_is_the_generated_one() -> None:
    assert grants.is_current(), "run `python -m projections.grants`"
    assert grants.main(["--check"]) == 0


def test_every_read_model_table_and_view_is_granted_and_nothing_else() -> None:
    names = grants.granted()
    assert names == [table.name for table in READ_MODEL_TABLES] + list(VIEWS)
    assert projection_positions.name not in names
    grant_list = grants.analyst_role_sql().split("GRANT SELECT ON\n", 1)[1].split("\nTO ")[0]
    assert [line.strip().rstrip(",") for line in grant_list.splitlines()] == names


def test_check_fails_on_a_stale_script_and_regenerating_fixes_it(tmp_path: Path) -> None:
    script = tmp_path / "analyst_role.sql"
    script.write_text(grants.analyst_role_sql().replace(f"    {grants.granted()[0]},\n", "", 1))
    assert grants.main(["--check", "--path", str(script)]) == 1
    assert grants.main(["--path", str(script)]) == 0
    assert grants.main(["--check", "--path", str(script)]) == 0
