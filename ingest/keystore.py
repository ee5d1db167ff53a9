"""Ingest keys in TimescaleDB (table ``ingest_keys``, migration 0006) and the gateway's
cache of them.

The gateway never asks the database per request: :class:`KeyCache` reloads every active
key each ``IOC_INGEST_KEYS_REFRESH_S`` (5 s), so a new key works, and a revoked one stops
working, within that time. When the database cannot be read, the last list is used for
at most ``IOC_INGEST_KEYS_MAX_STALE_S`` (60 s) after the last good load; past that the
gateway answers 503 rather than trust a list in which a revocation may be missing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog

from events.errors import ConfigurationError, describe_exception
from ingest.keys import IngestKey, check_name, check_patterns, find_key, hash_secret, new_secret

log = structlog.get_logger("ingest.keys")

# (name, secret) -> Mosquitto's hash of the secret for the MQTT account name, or None
MqttHasher = Callable[[str, str], str | None]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as `ioc ingest keys list` shows it (never its secret)."""

    name: str
    types: list[str]
    sources: list[str]
    created_at: datetime
    revoked_at: datetime | None


async def add_key(
    conn: asyncpg.Connection,
    name: str,
    types: Sequence[str],
    sources: Sequence[str],
    secret: str | None = None,
    mqtt_hash: MqttHasher | None = None,
) -> str:
    """Store a new key; returns its secret (a fresh random one unless given).
    ``mqtt_hash(name, secret)`` makes the hash of its MQTT account (None: no account)."""
    check_name(name)
    type_patterns = check_patterns("type", types)
    source_patterns = check_patterns("source", sources)
    secret = secret or new_secret()
    try:
        await conn.execute(
            "INSERT INTO ingest_keys (name, secret_hash, types, sources, mqtt_hash) "
            "VALUES ($1, $2, $3, $4, $5)",
            name,
            hash_secret(secret),
            type_patterns,
            source_patterns,
            mqtt_hash(name, secret) if mqtt_hash is not None else None,
        )
    except asyncpg.UniqueViolationError as exc:
        if "ingest_keys_active_name" in str(exc):
            raise ConfigurationError(
                f"an active key named {name!r} exists; revoke it first (ioc ingest keys revoke)"
            ) from None
        raise ConfigurationError("another active key has this secret; choose another") from None
    return secret


async def revoke_key(conn: asyncpg.Connection, name: str) -> bool:
    """Revoke the active key ``name``; False when there is none."""
    done = await conn.fetchval(
        "UPDATE ingest_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL "
        "RETURNING id",
        name,
    )
    return done is not None


async def list_keys(conn: asyncpg.Connection, include_revoked: bool = False) -> list[KeyInfo]:
    rows = await conn.fetch(
        "SELECT name, types, sources, created_at, revoked_at FROM ingest_keys "
        "WHERE $1 OR revoked_at IS NULL ORDER BY name, created_at",
        include_revoked,
    )
    return [
        KeyInfo(r["name"], list(r["types"]), list(r["sources"]), r["created_at"], r["revoked_at"])
        for r in rows
    ]


async def active_keys(conn: asyncpg.Connection) -> list[IngestKey]:
    rows = await conn.fetch(
        "SELECT name, secret_hash, types, sources FROM ingest_keys WHERE revoked_at IS NULL"
    )
    return [
        IngestKey(r["name"], bytes(r["secret_hash"]), tuple(r["types"]), tuple(r["sources"]))
        for r in rows
    ]


async def ensure_key(
    conn: asyncpg.Connection,
    name: str,
    secret: str,
    types: Sequence[str],
    sources: Sequence[str],
    mqtt_hash: MqttHasher | None = None,
) -> bool:
    """The active key ``name`` has this secret and scope afterwards (the demo key: its
    secret comes from a setting, so a changed setting replaces the key). True when it had
    to be (re)created."""
    wanted = IngestKey(
        name,
        hash_secret(secret),
        tuple(check_patterns("type", types)),
        tuple(check_patterns("source", sources)),
    )
    async with conn.transaction():
        current = [k for k in await active_keys(conn) if k.name == name]
        if current == [wanted]:
            return False
        await revoke_key(conn, name)
        await add_key(conn, name, types, sources, secret, mqtt_hash)
    return True


class KeysUnavailable(Exception):
    """The keys could not be read recently enough to trust them."""


class KeyCache:
    """The active keys, reloaded periodically by :meth:`run` (see the module docstring)."""

    def __init__(
        self,
        database_url: str,
        refresh_s: float,
        max_stale_s: float,
        refused_secrets: Sequence[str] = (),
    ) -> None:
        self._url = database_url
        # keys with these secrets are left out of every load (the demo's, in a deployment)
        self._refused = frozenset(hash_secret(s) for s in refused_secrets)
        self.refused_names: list[str] = []
        self._refresh_s = refresh_s
        self._max_stale_s = max_stale_s
        self._keys: list[IngestKey] = []
        self._loaded_at: float | None = None
        self._conn: asyncpg.Connection | None = None
        self.last_error = ""

    @property
    def keys(self) -> list[IngestKey]:
        return list(self._keys)

    def lookup(self, secret: str) -> IngestKey | None:
        """The key of this secret, None for an unknown secret; raises
        :class:`KeysUnavailable` when the list is too old to answer."""
        self._check_fresh()
        return find_key(self._keys, secret)

    def by_name(self, name: str) -> IngestKey | None:
        """The active key ``name`` (an MQTT device account), like :meth:`lookup`."""
        self._check_fresh()
        return next((k for k in self._keys if k.name == name), None)

    def _check_fresh(self) -> None:
        if self._loaded_at is None or time.monotonic() - self._loaded_at > self._max_stale_s:
            raise KeysUnavailable(self.last_error or "the key list was never loaded")

    async def reload(self) -> bool:
        """One load; False (and the previous list kept) when the database failed."""
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self._url, timeout=5)
            keys = await active_keys(self._conn)
        except asyncpg.UndefinedTableError:
            self.last_error = "table ingest_keys is missing: run `ioc db migrate`"
            log.warning("ingest_keys_unavailable", error=self.last_error)
            return False
        except Exception as exc:  # unreachable, dropped, or anything else: never stop reloading
            self.last_error = f"cannot read the ingest keys: {describe_exception(exc)}"
            log.warning("ingest_keys_unavailable", error=self.last_error)
            await self.close()
            return False
        self.refused_names = sorted(k.name for k in keys if k.secret_hash in self._refused)
        self._keys = [k for k in keys if k.secret_hash not in self._refused]
        self._loaded_at = time.monotonic()
        self.last_error = ""
        return True

    async def run(self) -> None:
        """Reload every refresh period, forever (until cancelled); the first load is the
        caller's :meth:`reload`."""
        try:
            while True:
                await asyncio.sleep(self._refresh_s)  # the refresh period, by design
                await self.reload()
        finally:
            await self.close()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()
