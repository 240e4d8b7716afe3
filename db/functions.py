"""SQL functions that give the same answer on SQLite and PostgreSQL, compiled per dialect."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

HOUR_FORMAT = "%Y-%m-%d %H"  # how ``utc_hour`` reads, for ``datetime.strptime``


class utc_hour(FunctionElement[str]):  # noqa: N801 (named like the SQL functions it stands beside)
    """The UTC hour a timestamp falls in, as text: ``'2026-11-23 09'``, so rows group by hour on either database."""

    type = String()
    name = "utc_hour"
    inherit_cache = True


@compiles(utc_hour)
def _utc_hour_sqlite(element: utc_hour, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite stores these columns as UTC text ('2026-11-23 09:15:02.123456'), which strftime reads.
    return f"strftime('%Y-%m-%d %H', {compiler.process(element.clauses, **kw)})"


@compiles(utc_hour, "postgresql")
def _utc_hour_postgresql(element: utc_hour, compiler: SQLCompiler, **kw: Any) -> str:
    # AT TIME ZONE, so the session's own time zone setting cannot move the hour.
    return f"to_char({compiler.process(element.clauses, **kw)} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24')"
