"""Where snapshots come from: the history in TimescaleDB, merged with what this server has
seen on the stream since it started (the sink may lag behind the topic).

``SnapshotSource`` is the seam: the server needs only these three reads. The database
implementation uses the storage component's queries (``storage.queries``) over one
psycopg async connection, reopened after a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import orjson
import structlog

from events.records import AlertRecord, KpiRecord

log = structlog.get_logger("ws.snapshot")


_SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


def alert_snapshot_order(alerts: Sequence[AlertRecord]) -> list[AlertRecord]:
    """The order a bounded alert snapshot keeps: most severe first, unacknowledged before
    acknowledged, then the most recently changed (what an operator must see first)."""
    return sorted(
        alerts,
        key=lambda a: (
            _SEVERITY_RANK.get(a.severity, 3),
            a.state == "acknowledged",
            -a.updated_at.timestamp(),
        ),
    )


def fit_snapshot(head: dict[str, Any], items: Sequence[bytes], max_bytes: int) -> int:
    """How many of ``items`` (encoded, in order) a snapshot frame can carry so that the
    whole frame, ``head`` plus the items plus an ``omitted`` count, stays within
    ``max_bytes``. A client whose frame limit is 1 MiB (python-websockets' default, and
    most libraries') would otherwise close the connection on a large snapshot."""
    # The frame as encode_frame writes it: head, ',"items":[', the items joined by commas,
    # ']}', plus ',"omitted":N' when some are left out.
    total = len(items)
    used = len(orjson.dumps(head)) + len(b',"items":[]')
    omitted_field = len(b',"omitted":')
    best = 0 if used + omitted_field + len(str(total)) <= max_bytes else -1
    for n, item in enumerate(items, start=1):
        used += len(item) + (1 if n > 1 else 0)
        extra = omitted_field + len(str(total - n)) if n < total else 0
        if used + extra <= max_bytes:
            best = n
        elif used > max_bytes:
            break  # the omitted count shrinks by a few bytes at most; the items only grow
    return max(best, 0)


class SnapshotSource(Protocol):
    async def latest_kpis(
        self, kpis: list[str] | None, scopes: list[str] | None
    ) -> list[KpiRecord]: ...

    async def kpi_history(self, kpi: str, scope: str, since: datetime) -> list[KpiRecord]: ...

    async def kpi_windows(
        self, kpis: list[str] | None, scopes: list[str] | None, since: datetime
    ) -> list[KpiRecord]: ...

    async def active_alerts(self) -> list[AlertRecord]: ...

    async def close(self) -> None: ...


class NoSnapshotSource:
    """No database configured: snapshots come from the stream alone."""

    async def latest_kpis(
        self, kpis: list[str] | None, scopes: list[str] | None
    ) -> list[KpiRecord]:
        return []

    async def kpi_history(self, kpi: str, scope: str, since: datetime) -> list[KpiRecord]:
        return []

    async def kpi_windows(
        self, kpis: list[str] | None, scopes: list[str] | None, since: datetime
    ) -> list[KpiRecord]:
        return []

    async def active_alerts(self) -> list[AlertRecord]:
        return []

    async def close(self) -> None:
        return None


class DatabaseSnapshotSource:
    """Reads through ``storage.queries`` (one connection; snapshots are rare, not hot)."""

    def __init__(self, database_url: str, *, max_points: int = 300) -> None:
        self._url = database_url
        self._max_points = max_points
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        return self._conn

    async def _run(self, what: str, **kwargs: Any) -> Any:
        from storage import queries

        async with self._lock:
            try:
                conn = await self._connection()
                return await getattr(queries, what)(conn, **kwargs)
            except Exception:
                # Drop the connection so the next snapshot reconnects; the caller turns
                # the failure into a snapshot_unavailable error frame.
                await self.close()
                raise

    async def latest_kpis(
        self, kpis: list[str] | None, scopes: list[str] | None
    ) -> list[KpiRecord]:
        result: list[KpiRecord] = await self._run("latest_kpis", kpis=kpis, scopes=scopes)
        return result

    async def kpi_history(self, kpi: str, scope: str, since: datetime) -> list[KpiRecord]:
        result: list[KpiRecord] = await self._run(
            "kpi_history", kpi=kpi, scope=scope, since=since, max_points=self._max_points
        )
        return result

    async def kpi_windows(
        self, kpis: list[str] | None, scopes: list[str] | None, since: datetime
    ) -> list[KpiRecord]:
        result: list[KpiRecord] = await self._run(
            "kpi_windows_since", kpis=kpis, scopes=scopes, since=since
        )
        return result

    async def active_alerts(self) -> list[AlertRecord]:
        result: list[AlertRecord] = await self._run("active_alerts")
        return result

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception as exc:  # closing a broken connection may fail; nothing to do
                log.debug("close_failed", error=str(exc))
