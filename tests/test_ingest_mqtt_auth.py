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
from ingest.service import serve
from ingest.settings import IngestSettings
from ioc.services import mqtt_accounts, timescale
from ioc.settings import ServiceSettings
from tests.db_helpers import migrated
from tests.ingest_keys import AIR_KEY, AIR_SECRET, MqttLogins, ensure_key, wait_login
from tests.test_ingest import (
    _free_port,
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


async def test_mqtt_messages_wait_while_the_keys_cannot_be_read(
    bootstrap_servers: str,
    mqtt_logins: MqttLogins,
    database_url: str,
    service_settings: ServiceSettings,
) -> None:
    """A message that arrives while the key list is too old to trust stays unacknowledged
    and is checked against the keys read later: here the key came back with a narrower
    scope, so the message is dead-lettered by that scope (with the old list it would have
    been published)."""
    tag = uuid.uuid4().hex[:6]
    device = (f"st-{tag}", f"stale-device-secret-{tag}")
    # the account on Mosquitto comes from the session's keys; the gateway reads its own db
    await ensure_key(database_url, *device, ["*"], ["*"])
    mqtt_accounts.sync_accounts(service_settings, database_url)
    await asyncio.to_thread(wait_login, mqtt_logins.address, device)
    admin = database_url.rsplit("/", 1)[0] + "/postgres"
    name = f"ioc_test_stale_mqtt_{tag}"
    own_db = database_url.rsplit("/", 1)[0] + f"/{name}"
    timescale.ensure_database(admin, name)
    await ensure_key(await migrated(own_db), *device, ["*"], ["*"])
    settings = IngestSettings(
        bootstrap_servers=bootstrap_servers,
        database_url=own_db,
        ingest_http_port=_free_port(),
        ingest_keys_refresh_s=0.2,
        ingest_keys_max_stale_s=1.0,
        mqtt_host=mqtt_logins.host,
        mqtt_port=mqtt_logins.port,
        mqtt_username=mqtt_logins.gateway[0],
        mqtt_password=mqtt_logins.gateway[1],
        ingest_mqtt_topic=f"ioc/events/{device[0]}/#",
        ingest_mqtt_client_id=f"ioc-ingest-stale-{tag}",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop))
    try:
        probe = air_event(f"STALE-PROBE-{tag}")
        deadline = time.monotonic() + 30
        while True:  # until the gateway subscribed and forwards
            await asyncio.to_thread(_publish, mqtt_logins.address, device, [encode(probe)])
            with contextlib.suppress(AssertionError):
                await _ids_until(bootstrap_servers, events_topic("air"), str(probe["id"]), 3)
                break
            assert time.monotonic() < deadline, "the gateway never forwarded the probe"
        timescale.drop_database(admin, name)
        bearer = {"Authorization": f"Bearer {device[1]}"}
        await _status_until(settings, bearer, 503, 15)  # the list is too old to trust
        held = encode(air_event(f"STALE-HELD-{tag}"))
        await asyncio.to_thread(_publish, mqtt_logins.address, device, [held])
        timescale.ensure_database(admin, name)
        await ensure_key(await migrated(own_db), *device, ["vn.ioc.water.*"], ["*"])
        letters = await _dead_letters(bootstrap_servers, {held})
        assert letters[held].reason == "type_not_allowed"
    finally:
        stop.set()
        await task
        timescale.drop_database(admin, name)
