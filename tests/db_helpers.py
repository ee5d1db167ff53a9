"""Rows the push-server and wall tests put into the shared test database."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import asyncpg

from events.records import AlertRecord
from storage import migrate, writers
from storage.rows import alert_row


async def migrated(database_url: str) -> str:
    """The test database with the project's schema; returns its URL."""
    conn = await asyncpg.connect(database_url)
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()
    return database_url


@contextlib.asynccontextmanager
async def open_alerts(
    database_url: str, alerts: Sequence[AlertRecord]
) -> AsyncIterator[asyncpg.Connection]:
    """Store ``alerts`` as open alerts; clear them again on the way out (other tests'
    snapshots read the same database). Yields the connection."""
    conn = await asyncpg.connect(database_url)
    try:
        await migrate.migrate(conn)
        async with conn.transaction():
            await writers.ALERTS.prepare(conn)
            await writers.ALERTS.write(conn, [alert_row(a) for a in alerts])
        yield conn
    finally:
        try:
            cleared = [replace(a, state="cleared", revision=a.revision + 1) for a in alerts]
            async with conn.transaction():
                await writers.ALERTS.write(conn, [alert_row(a) for a in cleared])
        finally:
            await conn.close()
