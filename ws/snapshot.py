"""Where snapshots come from: the history in TimescaleDB, merged with what this server has
seen on the stream since it started (the sink may lag behind the topic).

``SnapshotSource`` is the seam: the server needs only these three reads. The database
implementation uses the storage component's queries (``storage.queries``) over one
psycopg async connection, reopened after a failure.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Protocol

import structlog

from events.records import AlertRecord, KpiRecord

log = structlog.get_logger("ws.snapshot")


class SnapshotSource(Protocol):
    async def latest_kpis(
        self, kpis: list[str] | None, scopes: list[str] | None
    ) -> list[KpiRecord]: ...

    async def kpi_history(self, kpi: str, scope: str, since: datetime) -> list[KpiRecord]: ...

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
