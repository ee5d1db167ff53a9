"""History queries for the ws server and the CLI (psycopg, async, parameterised).

Each query has an index that serves it (checked with EXPLAIN in tests/test_storage_db.py):
- ``kpi_windows_since``: ``kpi_windows``' own time index (window_start DESC);
- ``latest_kpis``: table ``kpi_latest`` (primary key (kpi, scope, window_s));
- ``kpi_history``: ``kpi_windows_chart`` (kpi, scope, window_s, window_start DESC);
- ``active_alerts``: partial index ``alerts_active``;
- ``alert_history``: ``alert_transitions_by_time``;
- ``raw_events``: ``events_by_source`` (source, time DESC).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from events.records import AlertRecord, KpiRecord

AnyConn = psycopg.AsyncConnection[Any]

_KPI_SELECT = (
    "kpi, scope, window_start, window_end, value, count, min, max, sum, final, revision, "
    "computed_at"
)
_ALERT_SELECT = (
    "alert_id, rule, subject, state, severity, level, title, kpi, value, threshold, "
    "raised_at, updated_at, acknowledged_by, assignee, revision, window_start, on_live_window, "
    "title_en"
)


def scope_like(pattern: str) -> str:
    """A scope pattern with ``*`` wildcards as a LIKE pattern (``%``/``_`` taken literally)."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def _kpi(row: Sequence[Any]) -> KpiRecord:
    return KpiRecord(
        kpi=row[0],
        scope=row[1],
        window_start=row[2],
        window_end=row[3],
        value=row[4],
        count=int(row[5]),
        min=row[6],
        max=row[7],
        sum=row[8],
        final=bool(row[9]),
        revision=int(row[10]),
        computed_at=row[11],
    )


def _alert(row: Sequence[Any]) -> AlertRecord:
    return AlertRecord(
        alert_id=row[0],
        rule=row[1],
        subject=row[2],
        state=row[3],
        severity=row[4],
        level=int(row[5]),
        title=row[6],
        kpi=row[7],
        value=row[8],
        threshold=row[9],
        raised_at=row[10],
        updated_at=row[11],
        acknowledged_by=row[12],
        assignee=row[13],
        revision=int(row[14]),
        window_start=row[15],
        on_live_window=bool(row[16]),
        title_en=row[17],
    )


def _kpi_filters(
    params: dict[str, Any],
    kpis: Sequence[str] | None,
    scopes: Sequence[str] | None,
    window_s: int | None,
) -> list[str]:
    """WHERE conditions for a window size, KPI ids and scope patterns (``*`` allowed);
    their values go into ``params``."""
    where: list[str] = []
    if window_s is not None:
        where.append("window_s = %(window_s)s")
        params["window_s"] = window_s
    if kpis is not None:
        where.append("kpi = ANY(%(kpis)s)")
        params["kpis"] = list(kpis)
    if scopes is not None:
        where.append("scope LIKE ANY(%(scopes)s)")
        params["scopes"] = [scope_like(s) for s in scopes]
    return where


async def latest_kpis(
    conn: AnyConn,
    *,
    kpis: Sequence[str] | None = None,
    scopes: Sequence[str] | None = None,
    limit: int = 5000,
    window_s: int | None = 60,
) -> list[KpiRecord]:
    """The newest window (highest revision) per (kpi, scope); ``scopes`` may use ``*``.

    ``window_s`` picks the window size (60 s by default); None takes the newest window of
    any size per (kpi, scope).
    """
    params: dict[str, Any] = {"limit": limit}
    where = _kpi_filters(params, kpis, scopes, window_s)
    sql = (
        f"SELECT DISTINCT ON (kpi, scope) {_KPI_SELECT} FROM kpi_latest"
        f"{' WHERE ' + ' AND '.join(where) if where else ''}"
        " ORDER BY kpi, scope, window_start DESC, window_s LIMIT %(limit)s"
    )
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(sql.encode(), params)
        return [_kpi(r) for r in await cur.fetchall()]


async def kpi_windows_since(
    conn: AnyConn,
    *,
    since: datetime,
    kpis: Sequence[str] | None = None,
    scopes: Sequence[str] | None = None,
    limit: int = 5000,
    window_s: int = 60,
) -> list[KpiRecord]:
    """Every window (its latest revision) starting at or after ``since``, oldest first;
    ``scopes`` may use ``*``. What a push-server client may have missed while away."""
    params: dict[str, Any] = {"limit": limit, "since": since}
    where = [*_kpi_filters(params, kpis, scopes, window_s), "window_start >= %(since)s"]
    sql = (
        f"SELECT {_KPI_SELECT} FROM kpi_windows WHERE {' AND '.join(where)}"
        " ORDER BY window_start, kpi, scope LIMIT %(limit)s"
    )
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(sql.encode(), params)
        return [_kpi(r) for r in await cur.fetchall()]


def bucket_seconds(since: datetime, until: datetime, window_s: int, max_points: int) -> int:
    """The smallest multiple of ``window_s`` that cuts [since, until) into ≤ max_points."""
    span = max((until - since).total_seconds(), window_s)
    per_point = span / max(max_points, 1)
    return max(1, math.ceil(per_point / window_s)) * window_s


async def kpi_history(
    conn: AnyConn,
    *,
    kpi: str,
    scope: str,
    since: datetime,
    until: datetime | None = None,
    max_points: int = 300,
    window_s: int = 60,
) -> list[KpiRecord]:
    """Windows of one kpi/scope in [since, until), downsampled server-side to ≤ max_points.

    A downsampled point covers ``bucket`` seconds: value = mean of the window values,
    count/sum summed, min/max over the windows, final only if all were final.
    """
    end = until if until is not None else datetime.now(since.tzinfo)
    bucket = bucket_seconds(since, end, window_s, max_points)
    params = {
        "kpi": kpi,
        "scope": scope,
        "window_s": window_s,
        "since": since,
        "until": end,
        "bucket": timedelta(seconds=bucket),
        "origin": since,
    }
    filters = (
        "kpi = %(kpi)s AND scope = %(scope)s AND window_s = %(window_s)s "
        "AND window_start >= %(since)s AND window_start < %(until)s"
    )
    if bucket == window_s:
        sql = f"SELECT {_KPI_SELECT} FROM kpi_windows WHERE {filters} ORDER BY window_start"
    else:
        sql = (
            "SELECT kpi, scope, b, b + %(bucket)s, avg(value), sum(count), "
            "min(coalesce(min, value)), max(coalesce(max, value)), sum(sum), bool_and(final), "
            "max(revision), max(computed_at) FROM ("
            "SELECT time_bucket(%(bucket)s, window_start, %(origin)s) AS b, * "
            f"FROM kpi_windows WHERE {filters}) w GROUP BY kpi, scope, b ORDER BY b"
        )
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(sql.encode(), params)
        return [_kpi(r) for r in await cur.fetchall()]


async def active_alerts(conn: AnyConn) -> list[AlertRecord]:
    """Alerts not cleared, most recently changed first."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(
            f"SELECT {_ALERT_SELECT} FROM alerts WHERE state <> 'cleared' "
            "ORDER BY updated_at DESC".encode()
        )
        return [_alert(r) for r in await cur.fetchall()]


async def alert_history(
    conn: AnyConn, *, since: datetime | None = None, limit: int = 200
) -> list[AlertRecord]:
    """Alert transitions (every state change), newest first."""
    where = "WHERE updated_at >= %(since)s" if since is not None else ""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(
            f"SELECT {_ALERT_SELECT} FROM alert_transitions {where} "
            "ORDER BY updated_at DESC LIMIT %(limit)s".encode(),
            {"since": since, "limit": limit},
        )
        return [_alert(r) for r in await cur.fetchall()]


async def raw_events(
    conn: AnyConn, *, source: str, since: datetime, until: datetime, limit: int = 1000
) -> list[dict[str, Any]]:
    """Raw events of one source in [since, until), oldest first, as CloudEvent dicts
    (with the extension attributes they were received with)."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(
            b"SELECT time, type, source, id, district, data, extensions FROM events "
            b"WHERE source = %(source)s AND time >= %(since)s AND time < %(until)s "
            b"ORDER BY time LIMIT %(limit)s",
            {"source": source, "since": since, "until": until, "limit": limit},
        )
        rows = await cur.fetchall()
    return [
        {
            "specversion": "1.0",
            "id": r[3],
            "source": r[2],
            "type": r[1],
            "time": r[0],
            "datacontenttype": "application/json",
            **(r[6] or {}),
            "data": r[5],
        }
        for r in rows
    ]
