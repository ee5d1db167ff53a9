"""The ingest keys of the test session (in its database) and their MQTT accounts."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from ingest import keystore
from ioc.services.mqtt_accounts import mosquitto_hash
from tests.db_helpers import migrated
from tests.waiting import until_sync

# One key for anything, one scoped as the example. AUTH is the HTTP header.
ALL_KEY, ALL_SECRET = "test-all", "test-ingest-all-key"
AIR_KEY, AIR_SECRET = "test-air", "test-ingest-air-key"
AUTH = {"Authorization": f"Bearer {ALL_SECRET}"}


@dataclass(frozen=True, slots=True)
class MqttLogins:
    """Where Mosquitto listens and who may log in: the ingest gateway's own account and
    the device account of the key ``test-all`` (which writes below ioc/events/test-all/)."""

    host: str
    port: int
    gateway: tuple[str, str]
    device: tuple[str, str]

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


async def ensure_key(
    database_url: str, name: str, secret: str, types: list[str], sources: list[str]
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await keystore.ensure_key(conn, name, secret, types, sources, mosquitto_hash)
    finally:
        await conn.close()


async def ensure_test_keys(database_url: str) -> str:
    """The test keys exist in this database (migrated); returns its URL."""
    await migrated(database_url)
    await ensure_key(database_url, ALL_KEY, ALL_SECRET, ["*"], ["*"])
    await ensure_key(database_url, AIR_KEY, AIR_SECRET, ["vn.ioc.air.*"], ["/sensors/air/*"])
    return database_url


def wait_login(
    address: tuple[str, int], login: tuple[str, str], within_s: float = 15, accepted: bool = True
) -> None:
    """Until ``login`` can connect (or, ``accepted=False``, is refused): Mosquitto reloads
    its password file on SIGHUP, asynchronously."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    def answered_as_expected() -> bool:
        client = mqtt.Client(CallbackAPIVersion.VERSION2)
        client.username_pw_set(*login)
        try:
            client.connect(*address)
            client.loop(timeout=2)
            return bool(client.is_connected() == accepted)
        finally:
            client.disconnect()

    until_sync(answered_as_expected, f"{login[0]}: {accepted=} by Mosquitto", within_s, every=0.1)
