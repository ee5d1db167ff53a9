"""The periodic maintenance job: retention per table and the KPI rollups.

Apache edition: ``drop_chunks`` on the hypertables by the configured ages (whole chunks
only, so a chunk goes once its newest possible row is older than the limit). Full
edition: the same ages as background retention policies (added idempotently). Both:
hourly and daily rollups of the 60 s KPI windows recomputed over a look-back period, so
late revisions are folded in; alert history is kept unless an age is configured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from storage.migrate import Edition, detect_edition

# (table, time column) of the hypertables with retention.
_HYPERTABLES = {"events": "time", "kpi_windows": "window_start"}

_ROLLUP = """
INSERT INTO {table} (kpi, scope, bucket, value_avg, value_min, value_max, value_last, sum,
                     count, windows)
SELECT kpi, scope, time_bucket($1::interval, window_start) AS bucket,
       avg(value), min(coalesce(min, value)), max(coalesce(max, value)),
       (array_agg(value ORDER BY window_start DESC))[1], sum(sum), sum(count), count(*)
FROM kpi_windows
WHERE window_s = 60 AND window_start >= time_bucket($1::interval, $2::timestamptz)
GROUP BY kpi, scope, bucket
ON CONFLICT (kpi, scope, bucket) DO UPDATE SET
    value_avg = EXCLUDED.value_avg, value_min = EXCLUDED.value_min,
    value_max = EXCLUDED.value_max, value_last = EXCLUDED.value_last, sum = EXCLUDED.sum,
    count = EXCLUDED.count, windows = EXCLUDED.windows
"""


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Ages after which rows go; None keeps a table forever."""

    events: timedelta | None = timedelta(days=7)
    kpi_windows: timedelta | None = timedelta(days=400)
    alerts: timedelta | None = None

    @classmethod
    def from_days(cls, events: int, kpi_windows: int, alerts: int) -> RetentionPolicy:
        def age(days: int) -> timedelta | None:
            return timedelta(days=days) if days > 0 else None

        return cls(age(events), age(kpi_windows), age(alerts))

    def for_table(self, table: str) -> timedelta | None:
        age: timedelta | None = getattr(self, table)
        return age


@dataclass(slots=True)
class MaintenanceReport:
    edition: Edition
    dropped_chunks: dict[str, int] = field(default_factory=dict)
    deleted_alert_transitions: int = 0
    rollup_rows: dict[str, int] = field(default_factory=dict)


async def apply_retention(
    conn: asyncpg.Connection, policy: RetentionPolicy, report: MaintenanceReport
) -> None:
    for table in _HYPERTABLES:
        age = policy.for_table(table)
        if report.edition == "timescale":
            await conn.execute(
                "SELECT remove_retention_policy($1::regclass, if_exists => true)", table
            )
            if age is not None:
                await conn.execute(
                    "SELECT add_retention_policy($1::regclass, $2::interval)", table, age
                )
            continue
        if age is None:
            continue
        dropped = await conn.fetch(
            "SELECT drop_chunks($1::regclass, older_than => $2::interval)", table, age
        )
        report.dropped_chunks[table] = len(dropped)
    if policy.alerts is not None:
        # Only history of alerts that are over: the current state of an open alert stays.
        status = await conn.execute(
            "DELETE FROM alert_transitions t WHERE updated_at < now() - $1::interval "
            "AND EXISTS (SELECT 1 FROM alerts a WHERE a.alert_id = t.alert_id "
            "AND a.state = 'cleared' AND a.updated_at < now() - $1::interval)",
            policy.alerts,
        )
        report.deleted_alert_transitions = int(status.rsplit(" ", 1)[-1])


async def refresh_rollups(
    conn: asyncpg.Connection, since: datetime, report: MaintenanceReport
) -> None:
    """Recompute the hourly and daily rollup buckets that overlap [since, now)."""
    for table, width in (
        ("kpi_rollup_hourly", timedelta(hours=1)),
        ("kpi_rollup_daily", timedelta(days=1)),
    ):
        status = await conn.execute(_ROLLUP.format(table=table), width, since)
        report.rollup_rows[table] = int(status.rsplit(" ", 1)[-1])


async def run_maintenance(
    conn: asyncpg.Connection,
    policy: RetentionPolicy,
    *,
    rollup_since: datetime,
) -> MaintenanceReport:
    """One pass of the job: retention, then rollups (one transaction each)."""
    report = MaintenanceReport(edition=await detect_edition(conn))
    async with conn.transaction():
        await apply_retention(conn, policy, report)
    async with conn.transaction():
        await refresh_rollups(conn, rollup_since, report)
    return report
