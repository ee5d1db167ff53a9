"""Versioned SQL migrations: ordered files ``migrations/NNNN_name.sql``, applied once each.

Applied when the storage process starts and by ``ioc db migrate``. A session-level advisory
lock makes two processes that start at once take turns; the second finds everything
applied. A file whose first line is ``-- requires: timescale`` runs only on the full
(Timescale License) edition and stays pending on the Apache edition, so it applies if the
server is upgraded.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import asyncpg

from events.errors import ConfigurationError

Edition = Literal["apache", "timescale"]
# Any constant shared by every process that migrates this schema ("ioc" + "mig" in hex).
MIGRATION_LOCK_KEY = 0x696F636D6967
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_REQUIRES_FULL = "-- requires: timescale"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def needs_full_edition(self) -> bool:
        return self.sql.lstrip().startswith(_REQUIRES_FULL)


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    version: int
    name: str
    state: Literal["applied", "pending", "skipped (needs full edition)"]


def load_migrations() -> list[Migration]:
    """Every migration shipped in the package, in version order."""
    found: list[Migration] = []
    for entry in resources.files("storage.migrations").iterdir():
        m = _FILE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text()))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise ConfigurationError(f"two migrations share a version number: {versions}")
    return found


async def detect_edition(conn: asyncpg.Connection) -> Edition:
    """The TimescaleDB edition of this database; refuses plain PostgreSQL."""
    installed = await conn.fetchval(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    )
    if installed is None:
        db = await conn.fetchval("SELECT current_database()")
        raise ConfigurationError(
            f"database {db!r} has no timescaledb extension: this is plain PostgreSQL, and the "
            "IOC storage needs TimescaleDB (use `ioc services up`, the docker-compose "
            "timescaledb service, or run CREATE EXTENSION timescaledb on a TimescaleDB server)"
        )
    license_name = await conn.fetchval("SELECT current_setting('timescaledb.license', true)")
    return "timescale" if license_name == "timescale" else "apache"


async def _ensure_extension(conn: asyncpg.Connection) -> None:
    available = await conn.fetchval(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    )
    if available:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")


async def _applied(conn: asyncpg.Connection) -> dict[int, str]:
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS ioc_schema_migrations (
               version    integer PRIMARY KEY,
               name       text NOT NULL,
               checksum   text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    rows = await conn.fetch("SELECT version, checksum FROM ioc_schema_migrations")
    return {int(r["version"]): str(r["checksum"]) for r in rows}


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Apply the pending migrations (each in its own transaction); returns those applied."""
    migrations = load_migrations()
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await _ensure_extension(conn)
        edition = await detect_edition(conn)
        applied = await _applied(conn)
        done: list[Migration] = []
        for mig in migrations:
            if mig.version in applied:
                if applied[mig.version] != mig.checksum:
                    raise ConfigurationError(
                        f"migration {mig.version:04d}_{mig.name}.sql changed after it was "
                        "applied; add a new migration instead of editing an applied one"
                    )
                continue
            if mig.needs_full_edition and edition != "timescale":
                continue
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO ioc_schema_migrations (version, name, checksum) "
                    "VALUES ($1, $2, $3)",
                    mig.version,
                    mig.name,
                    mig.checksum,
                )
            done.append(mig)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def status(conn: asyncpg.Connection) -> tuple[Edition, list[MigrationStatus]]:
    """The edition and the state of every migration, without changing anything."""
    edition = await detect_edition(conn)
    exists = await conn.fetchval("SELECT to_regclass('ioc_schema_migrations') IS NOT NULL")
    applied: set[int] = set()
    if exists:
        applied = {int(r[0]) for r in await conn.fetch("SELECT version FROM ioc_schema_migrations")}
    out: list[MigrationStatus] = []
    for mig in load_migrations():
        if mig.version in applied:
            state: Literal["applied", "pending", "skipped (needs full edition)"] = "applied"
        elif mig.needs_full_edition and edition != "timescale":
            state = "skipped (needs full edition)"
        else:
            state = "pending"
        out.append(MigrationStatus(mig.version, mig.name, state))
    return edition, out
