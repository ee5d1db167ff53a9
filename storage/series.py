"""Reads of the HTTP read API (readapi/): KPI series from the windows or the rollups, the
latest windows, alerts. asyncpg, like the writers: the API holds a pool of connections
and asyncpg prepares and caches each statement per connection, which a request that
runs one statement on a hot path profits from (``storage.queries`` is psycopg, one
connection, for the push server's rare snapshots and the CLI).

Rows come back as dicts ready for orjson; times are the database's ``timestamptz``
values (UTC).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from readapi.params import SeriesPlan
from storage.queries import scope_like

# One point of a series: mean of the 60 s window values in the bucket, min/max over them,
# count and sum summed, and how many windows it holds.
_FROM_WINDOWS = """
SELECT time_bucket($5::interval, window_start, $3::timestamptz) AS t,
       avg(value), min(coalesce(min, value)), max(coalesce(max, value)), sum(sum),
       sum(count)::bigint, count(*)
FROM kpi_windows
WHERE kpi = $1 AND scope = $2 AND window_s = 60 AND window_start >= $3 AND window_start < $4
GROUP BY t ORDER BY t
"""

# The same point from a rollup: its value_avg is the mean of `windows` window values, so
# the weighted mean gives the same number the windows would (tests/test_readapi_db.py).
_FROM_ROLLUP = """
SELECT time_bucket($5::interval, bucket, $3::timestamptz) AS t,
       sum(value_avg * windows) / nullif(sum(windows) FILTER (WHERE value_avg IS NOT NULL), 0),
       min(value_min), max(value_max), sum(sum), sum(count)::bigint, sum(windows)
FROM {table}
WHERE kpi = $1 AND scope = $2 AND bucket >= $3 AND bucket < $4
GROUP BY t ORDER BY t
"""

SERIES_SQL = {
    "windows": _FROM_WINDOWS,
    "hourly": _FROM_ROLLUP.format(table="kpi_rollup_hourly"),
    "daily": _FROM_ROLLUP.format(table="kpi_rollup_daily"),
}

_LATEST = """
SELECT kpi, scope, window_start, window_end, value, count, min, max, sum, final, revision,
       computed_at
FROM kpi_latest
WHERE window_s = $1 AND ($2::text[] IS NULL OR kpi = ANY($2)) AND scope LIKE ANY($3)
ORDER BY kpi, scope LIMIT $4
"""

_ALERT_COLUMNS = (
    "alert_id", "rule", "subject", "state", "severity", "level", "title", "kpi", "value",
    "threshold", "raised_at", "updated_at", "acknowledged_by", "assignee", "revision",
    "window_start", "on_live_window",
)  # fmt: skip


def series_args(kpi: str, scope: str, plan: SeriesPlan) -> tuple[Any, ...]:
    """The parameters of ``SERIES_SQL[plan.source]`` (the benchmark runs the same)."""
    return (kpi, scope, plan.start, plan.end, timedelta(seconds=plan.bucket_s))


async def kpi_series(
    conn: asyncpg.Connection | asyncpg.Pool, kpi: str, scope: str, plan: SeriesPlan
) -> list[dict[str, Any]]:
    """At most ``plan.max_points`` points of one KPI and scope, oldest first; buckets
    without any window are absent (not null points)."""
    rows = await conn.fetch(SERIES_SQL[plan.source], *series_args(kpi, scope, plan))
    width = timedelta(seconds=plan.bucket_s)
    return [
        {
            "start": r[0],
            "end": r[0] + width,
            "value": r[1],
            "min": r[2],
            "max": r[3],
            "sum": r[4],
            "count": r[5],
            "windows": r[6],
        }
        for r in rows
    ]


async def latest_windows(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    kpis: Sequence[str] | None,
    scopes: Sequence[str] | None,
    window_s: int,
    limit: int,
) -> list[dict[str, Any]]:
    """The newest window (highest revision) per (kpi, scope) of one window size, from
    ``kpi_latest``; scopes may use ``*``."""
    patterns = [scope_like(s) for s in scopes] if scopes is not None else ["%"]
    rows = await conn.fetch(
        _LATEST, window_s, None if kpis is None else list(kpis), patterns, limit
    )
    return [dict(r) for r in rows]


def alerts_query(
    states: Sequence[str] | None, since: datetime | None, limit: int
) -> tuple[str, list[Any]]:
    """The SQL and its arguments for :func:`alerts`."""
    args: list[Any] = [limit]
    where: list[str] = []
    if states is not None:
        if "cleared" not in states:
            # Spelled out so the planner can use the partial index alerts_active.
            where.append("state <> 'cleared'")
        args.append(list(states))
        where.append(f"state = ANY(${len(args)}::text[])")
    if since is not None:
        args.append(since)
        where.append(f"updated_at >= ${len(args)}")
    sql = (
        f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alerts"
        f"{' WHERE ' + ' AND '.join(where) if where else ''}"
        " ORDER BY updated_at DESC LIMIT $1"
    )
    return sql, args


async def alerts(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    states: Sequence[str] | None,
    since: datetime | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Current state of the alerts in ``states`` (None: any) changed at or after
    ``since``, most recently changed first."""
    sql, args = alerts_query(states, since, limit)
    return [dict(r) for r in await conn.fetch(sql, *args)]
