"""MQTT ingest with keys: a device account per ingest key (written only below
ioc/events/<name>/), and the gateway checks that key's scopes on what arrives (the real
gateway, broker, Mosquitto and TimescaleDB)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import asyncpg
import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaConsumer
from paho.mqtt.enums import CallbackAPIVersion

from events.envelope import encode
from events.records import DeadLetter
from events.topics import DEADLETTER, events_topic
from ingest import keystore
from ingest.keys import key_name_of_topic
from ingest.settings import IngestSettings
from ioc.services import mqtt_accounts
from ioc.settings import ServiceSettings
from tests.ingest_keys import AIR_KEY, AIR_SECRET, MqttLogins, ensure_key, wait_login
from tests.test_ingest import (
    air_event,
    gateway,  # noqa: F401  (the real HTTP/MQTT gateway fixture)
)
from tests.test_ingest_auth import _ids_until, _status_until, water_event


def test_the_key_of_an_mqtt_topic_is_its_level_below_ioc_events() -> None:
    assert key_name_of_topic("ioc/events/air-gw/air/HD-1") == "air-gw"
    assert key_name_of_topic("ioc/events/air-gw") == "air-gw"
    for topic in ("ioc/events/", "ioc/events", "other/ioc/events/x/y", "ioc/eventsx/a/b"):
        assert key_name_of_topic(topic) is None, topic


async def _dead_letters(bootstrap: str, payloads: set[bytes]) -> dict[bytes, DeadLetter]:
    """The dead letters of these payloads, read from the start of ioc.deadletter."""
    consumer = AIOKafkaConsumer(
        DEADLETTER, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: dict[bytes, DeadLetter] = {}
    try:
        deadline = time.monotonic() + 30
        while set(found) < payloads:
            assert time.monotonic() < deadline, f"dead letters missing: {payloads - set(found)}"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    with contextlib.suppress(Exception):  # other tests' records too
                        letter = DeadLetter.from_json(r.value)
                        if letter.value in payloads:
                            found[letter.value] = letter
    finally:
        await consumer.stop()
    return found


def _publish(address: tuple[str, int], login: tuple[str, str], items: list[bytes]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.username_pw_set(*login)
    client.connect(*address)
    client.loop_start()
    try:
        for payload in items:
            client.publish(f"ioc/events/{login[0]}/air", payload, qos=1).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()


async def test_mqtt_events_outside_the_devices_key_scope_are_dead_lettered(
    gateway: IngestSettings,  # noqa: F811
    mqtt_logins: MqttLogins,
    service_settings: ServiceSettings,
) -> None:
    good = air_event("MQTT-SCOPE-OK")
    foreign_source = encode({**air_event("MQTT-SCOPE"), "source": "/sensors/water/MQTT-SCOPE"})
    foreign_type = encode(water_event("MQTT-SCOPE"))
    device = (AIR_KEY, AIR_SECRET)
    await asyncio.to_thread(
        _publish, mqtt_logins.address, device, [foreign_source, foreign_type, encode(good)]
    )
    letters = await _dead_letters(gateway.bootstrap_servers, {foreign_source, foreign_type})
    assert letters[foreign_source].reason == "source_not_allowed"
    assert letters[foreign_type].reason == "type_not_allowed"
    assert letters[foreign_type].source_topic == f"mqtt:ioc/events/{AIR_KEY}/air"
    ids = await _ids_until(gateway.bootstrap_servers, events_topic("air"), str(good["id"]))
    assert str(good["id"]) in ids

    # A device whose key is revoked while it is still logged in: its events are refused
    # as soon as the gateway reloads its keys.
    name = f"mq-{uuid.uuid4().hex[:6]}"
    secret = f"mqtt-device-secret-{name}"
    await ensure_key(gateway.database_url, name, secret, ["*"], ["*"])
    mqtt_accounts.sync_accounts(service_settings, gateway.database_url)
    await asyncio.to_thread(wait_login, mqtt_logins.address, (name, secret))
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.username_pw_set(name, secret)
    client.connect(*mqtt_logins.address)
    client.loop_start()
    try:
        conn = await asyncpg.connect(gateway.database_url)
        try:
            assert await keystore.revoke_key(conn, name)
        finally:
            await conn.close()
        await _status_until(gateway, {"Authorization": f"Bearer {secret}"}, 401, 10)
        late = encode(air_event("MQTT-REVOKED"))
        client.publish(f"ioc/events/{name}/air", late, qos=1).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()
    letters = await _dead_letters(gateway.bootstrap_servers, {late})
    assert letters[late].reason == "unknown_key"
