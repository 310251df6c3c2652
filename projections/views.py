"""SQL views over the read models: 12-month program retention.

Plain SQL that PostgreSQL and SQLite both accept, so analysts get the same numbers from either
store. Months are compared through ``month_index`` (``year * 12 + month - 1``) to avoid
dialect-specific date arithmetic.
"""

from __future__ import annotations

from sqlalchemy import Date, Float, Integer, Text, TextualSelect, text
from sqlalchemy.ext.asyncio import AsyncConnection

# The previous 12 months are months m-23 .. m-12, the last 12 months m-11 .. m, where m is
# the as-of month. Only ``active`` months count.
_FLAGS = """
    MAX(CASE WHEN a.month_index <= {m} - 12 THEN 1 ELSE 0 END) AS previous_12m,
    MAX(CASE WHEN a.month_index > {m} - 12 THEN 1 ELSE 0 END) AS last_12m
"""

_RATE = """
    COALESCE(SUM(f.previous_12m), 0) AS previous_patients,
    COALESCE(SUM(f.previous_12m * f.last_12m), 0) AS retained_patients,
    CASE WHEN SUM(f.previous_12m) > 0
         THEN CAST(SUM(f.previous_12m * f.last_12m) AS DOUBLE PRECISION) / SUM(f.previous_12m)
    END AS retention_rate
"""

RETENTION_12M = f"""
WITH latest AS (
    SELECT program_id, MAX(month_index) AS m, MAX(month) AS as_of_month
    FROM patient_activity_months GROUP BY program_id
), flags AS (
    SELECT a.program_id, a.patient_id, {_FLAGS.format(m="l.m")}
    FROM patient_activity_months a JOIN latest l ON l.program_id = a.program_id
    WHERE a.active AND a.month_index BETWEEN l.m - 23 AND l.m
    GROUP BY a.program_id, a.patient_id
)
SELECT l.program_id, l.as_of_month, {_RATE}
FROM latest l LEFT JOIN flags f ON f.program_id = l.program_id
GROUP BY l.program_id, l.as_of_month
"""

RETENTION_12M_MONTHLY = f"""
WITH months AS (
    SELECT DISTINCT program_id, month_index AS m, month AS as_of_month
    FROM patient_activity_months
), flags AS (
    SELECT mo.program_id, mo.m, a.patient_id, {_FLAGS.format(m="mo.m")}
    FROM months mo JOIN patient_activity_months a
      ON a.program_id = mo.program_id AND a.month_index BETWEEN mo.m - 23 AND mo.m
    WHERE a.active
    GROUP BY mo.program_id, mo.m, a.patient_id
)
SELECT mo.program_id, mo.as_of_month, {_RATE}
FROM months mo LEFT JOIN flags f ON f.program_id = mo.program_id AND f.m = mo.m
GROUP BY mo.program_id, mo.as_of_month
"""

VIEWS = {
    "program_retention_12m": RETENTION_12M,
    "program_retention_12m_monthly": RETENTION_12M_MONTHLY,
}


# Both views have these columns; typed so SQLite's text dates come back as dates.
COLUMNS = {
    "program_id": Text,
    "as_of_month": Date,
    "previous_patients": Integer,
    "retained_patients": Integer,
    "retention_rate": Float,
}


def select_view(name: str, order_by: str = "program_id, as_of_month") -> TextualSelect:
    """``SELECT *`` from a view, with typed result columns."""
    assert name in VIEWS
    return text(f"SELECT * FROM {name} ORDER BY {order_by}").columns(**COLUMNS)


async def create_views(conn: AsyncConnection) -> None:
    """Create the views if missing (on PostgreSQL, replace them: grants on them survive)."""
    create = (
        "CREATE OR REPLACE VIEW"
        if conn.dialect.name == "postgresql"
        else "CREATE VIEW IF NOT EXISTS"
    )
    for name, body in VIEWS.items():
        await conn.execute(text(f"{create} {name} AS {body}"))


async def drop_views(conn: AsyncConnection) -> None:
    for name in VIEWS:
        await conn.execute(text(f"DROP VIEW IF EXISTS {name}"))
