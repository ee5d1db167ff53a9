"""Database writes of the sinks: binary COPY into a per-connection temp table, then one
set-based merge per target table, all in one transaction (raw events first try a plain
insert, see :class:`InsertFirst`).

Every merge is idempotent, so a batch that is written again after a crash or a database
outage (its offsets were not committed) changes nothing:
- raw events: ``ON CONFLICT DO NOTHING`` on (time, source, id);
- KPI windows: the higher ``revision`` wins, an older or equal one never overwrites;
- alerts: transitions are keyed by (alert_id, revision); the current state keeps the
  highest revision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from storage.rows import ALERT_COLUMNS, EVENT_COLUMNS, KPI_COLUMNS, Row


class BatchWriter(Protocol):
    """What a sink needs of its database writes."""

    async def prepare(self, conn: asyncpg.Connection) -> None: ...

    async def write(self, conn: asyncpg.Connection, rows: Sequence[Row]) -> int: ...


@dataclass(frozen=True, slots=True)
class StagedMerge:
    """COPY rows into ``staging`` (a temp table) and run ``merges`` from it."""

    staging: str
    staging_ddl: str
    columns: tuple[str, ...]
    merges: tuple[str, ...]

    async def prepare(self, conn: asyncpg.Connection) -> None:
        """Create the temp table once per connection (rows vanish at each commit)."""
        await conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {self.staging} ({self.staging_ddl}) "
            "ON COMMIT DELETE ROWS"
        )

    async def write(self, conn: asyncpg.Connection, rows: Sequence[Row]) -> int:
        """Write ``rows``; returns how many rows the first merge inserted or changed."""
        changed = 0
        async with conn.transaction():
            await conn.copy_records_to_table(self.staging, records=rows, columns=list(self.columns))
            for i, sql in enumerate(self.merges):
                status = await conn.execute(sql)
                if i == 0:
                    changed = int(status.rsplit(" ", 1)[-1])
        return changed


@dataclass(frozen=True, slots=True)
class InsertFirst:
    """COPY into staging, then a plain ``INSERT … SELECT``; the ``ON CONFLICT`` merge only
    for batches holding rows the table already has.

    Raw events are new in the common case, and a plain insert skips the speculative
    insertion that ``ON CONFLICT`` pays per row (``benchmarks/bench_sink.py`` measures both
    paths: ``sink_rows_per_s`` and ``sink_staged_rows_per_s``). When a row of the batch is
    already stored (a replay after a crash, a duplicate delivery), the insert fails with a
    unique violation inside its savepoint, which rolls back alone, and the staged merge
    runs over the same staging rows and skips the duplicates. Either way the result is the
    same and idempotent. COPY still goes to the staging table, which has no constraints:
    rows PostgreSQL rejects fail there, as in every other sink, and never in the middle of
    a COPY into the hypertable.
    """

    staged: StagedMerge
    insert: str

    async def prepare(self, conn: asyncpg.Connection) -> None:
        await self.staged.prepare(conn)

    async def write(self, conn: asyncpg.Connection, rows: Sequence[Row]) -> int:
        staged = self.staged
        async with conn.transaction():
            await conn.copy_records_to_table(
                staged.staging, records=rows, columns=list(staged.columns)
            )
            try:
                async with conn.transaction():  # a savepoint
                    status = await conn.execute(self.insert)
            except asyncpg.UniqueViolationError:
                status = await conn.execute(staged.merges[0])
        return int(status.rsplit(" ", 1)[-1])


_EVENT_COLS = ", ".join(EVENT_COLUMNS)
_RAW_EVENTS_STAGED = StagedMerge(
    staging="events_staging",
    staging_ddl=(
        "time timestamptz, type text, source text, id text, district text, data jsonb, "
        "extensions jsonb"
    ),
    columns=EVENT_COLUMNS,
    merges=(
        # Sorted on time, the leading column of the unique index: inserts walk the index
        # in order (measured ~10-40 % faster than unsorted on this machine).
        f"INSERT INTO events ({_EVENT_COLS}) SELECT {_EVENT_COLS} FROM events_staging "
        "ORDER BY time ON CONFLICT (time, source, id) DO NOTHING",
    ),
)
RAW_EVENTS = InsertFirst(
    staged=_RAW_EVENTS_STAGED,
    insert=f"INSERT INTO events ({_EVENT_COLS}) SELECT {_EVENT_COLS} FROM events_staging",
)

_KPI_COLS = ", ".join(KPI_COLUMNS)
_KPI_UPDATE = ", ".join(
    f"{c} = EXCLUDED.{c}" for c in KPI_COLUMNS if c not in ("kpi", "scope", "window_start")
)
KPI_WINDOWS = StagedMerge(
    staging="kpi_staging",
    staging_ddl=(
        "kpi text, scope text, window_start timestamptz, window_end timestamptz, "
        "value double precision, count bigint, min double precision, max double precision, "
        "sum double precision, final boolean, revision bigint, computed_at timestamptz"
    ),
    columns=KPI_COLUMNS,
    merges=(
        # DISTINCT ON: one row per key per statement (ON CONFLICT DO UPDATE cannot touch a
        # row twice), the highest revision of the batch.
        f"""INSERT INTO kpi_windows ({_KPI_COLS})
            SELECT DISTINCT ON (kpi, scope, window_start, window_end) {_KPI_COLS}
            FROM kpi_staging
            ORDER BY kpi, scope, window_start, window_end, revision DESC
            ON CONFLICT (kpi, scope, window_start, window_end) DO UPDATE SET {_KPI_UPDATE}
            WHERE kpi_windows.revision < EXCLUDED.revision""",
        f"""INSERT INTO kpi_latest (window_s, {_KPI_COLS})
            SELECT DISTINCT ON (kpi, scope, window_s) * FROM (
                SELECT extract(epoch FROM window_end - window_start)::integer AS window_s,
                       {_KPI_COLS}
                FROM kpi_staging) s
            ORDER BY kpi, scope, window_s, window_start DESC, revision DESC
            ON CONFLICT (kpi, scope, window_s) DO UPDATE SET window_start = EXCLUDED.window_start,
                {_KPI_UPDATE}
            WHERE (kpi_latest.window_start, kpi_latest.revision)
                < (EXCLUDED.window_start, EXCLUDED.revision)""",
    ),
)

_ALERT_COLS = ", ".join(ALERT_COLUMNS)
_ALERT_UPDATE = ", ".join(f"{c} = EXCLUDED.{c}" for c in ALERT_COLUMNS if c != "alert_id")
ALERTS = StagedMerge(
    staging="alert_staging",
    staging_ddl=(
        "alert_id text, rule text, subject text, state text, severity text, level integer, "
        "title text, kpi text, value double precision, threshold double precision, "
        "raised_at timestamptz, updated_at timestamptz, acknowledged_by text, "
        "assignee text, revision bigint, window_start timestamptz, on_live_window boolean, "
        "title_en text"
    ),
    columns=ALERT_COLUMNS,
    merges=(
        f"INSERT INTO alert_transitions ({_ALERT_COLS}) SELECT {_ALERT_COLS} "
        "FROM alert_staging ON CONFLICT (alert_id, revision) DO NOTHING",
        f"""INSERT INTO alerts ({_ALERT_COLS})
            SELECT DISTINCT ON (alert_id) {_ALERT_COLS} FROM alert_staging
            ORDER BY alert_id, revision DESC
            ON CONFLICT (alert_id) DO UPDATE SET {_ALERT_UPDATE}
            WHERE alerts.revision < EXCLUDED.revision""",
    ),
)
