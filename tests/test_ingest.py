"""Ingest gateways: HTTP and MQTT into the real broker, bad input refused with reasons."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import paho.mqtt.client as mqtt
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion

from events import health
from events.brokers import refresh_metadata
from events.envelope import decode, encode, new_event
from events.errors import InvalidEventError
from events.records import DeadLetter
from events.topics import DEADLETTER, events_topic
from ingest.gateway import BATCH, RejectedRequest, parse_request
from ingest.service import serve
from ingest.settings import IngestSettings
from ioc.services import broker
from tests.ingest_keys import (
    ALL_KEY,
    ALL_SECRET,
    AUTH,
    MqttLogins,
    ensure_test_keys,
)
from tests.private_broker import private_broker
from tests.waiting import until

# The test device: the key test-all's MQTT account, which may write only below
# ioc/events/test-all/.
DEVICE = (ALL_KEY, ALL_SECRET)
DEVICE_TOPIC = f"ioc/events/{ALL_KEY}/air"


def air_event(station: str = "HD-AQ-001", pm25: float = 42.0) -> dict[str, object]:
    return new_event(
        "vn.ioc.air.observed",
        f"/sensors/air/{station}",
        {"station_id": station, "district": _district(), "pm25": pm25, "pm10": 60.0},
        time=datetime.now(UTC),
    )


def _district() -> str:
    from events.geography import DISTRICTS

    return next(iter(DISTRICTS))


# --- the sans-I/O core -------------------------------------------------------------


def test_a_valid_event_becomes_a_record_on_its_domain_topic_keyed_by_source() -> None:
    event = air_event("ST-1")
    [record] = parse_request(encode(event), "application/cloudevents+json", 10)
    assert record.topic == "ioc.events.air"
    assert record.key == b"ST-1"
    assert decode(record.value).id == event["id"]


def test_a_batch_with_invalid_items_names_each_and_publishes_nothing() -> None:
    bad_range = air_event(pm25=-5.0)
    unknown = {**air_event(), "type": "vn.ioc.air.teleported"}
    body = orjson.dumps([air_event(), bad_range, unknown])
    with pytest.raises(RejectedRequest) as caught:
        parse_request(body, BATCH, 10)
    assert [(r.index, r.reason) for r in caught.value.rejections] == [
        (1, "out_of_range"),
        (2, "unknown_type"),
    ]


def test_a_body_that_is_not_json_or_too_big_a_batch_is_refused() -> None:
    with pytest.raises(InvalidEventError) as not_json:
        parse_request(b"{nope", "application/json", 10)
    assert not_json.value.reason == "undecodable"
    with pytest.raises(InvalidEventError) as too_many:
        parse_request(orjson.dumps([air_event()] * 3), BATCH, 2)
    assert too_many.value.reason == "oversize"


# --- against the real broker and Mosquitto -----------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
async def gateway(
    bootstrap_servers: str, mqtt_logins: MqttLogins, database_url: str
) -> AsyncIterator[IngestSettings]:
    settings = IngestSettings(
        bootstrap_servers=bootstrap_servers,
        database_url=await ensure_test_keys(database_url),
        # short, so that the revocation test waits briefly
        ingest_keys_refresh_s=0.2,
        ingest_http_port=_free_port(),
        ingest_max_body_bytes=256 * 1024,
        mqtt_host=mqtt_logins.host,
        mqtt_port=mqtt_logins.port,
        mqtt_username=mqtt_logins.gateway[0],
        mqtt_password=mqtt_logins.gateway[1],
        ingest_mqtt_client_id=f"ioc-ingest-test-{uuid.uuid4().hex[:6]}",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop))
    async with aiohttp.ClientSession() as http:
        await _wait_healthy(http, f"http://127.0.0.1:{settings.ingest_http_port}/readyz")
    await _wait_mqtt_subscribed(settings)
    yield settings
    stop.set()
    await task


async def _wait_mqtt_subscribed(settings: IngestSettings) -> None:
    """Until a probe event published over MQTT reaches Kafka (the subscription is made
    right after connecting; a message published before it would be dropped, so the probe
    is published again each round)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None)
    await consumer.start()
    try:
        topic = events_topic("air")
        await refresh_metadata(consumer)  # Apache Kafka sends no topic's metadata unasked
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        assert parts, f"{topic} has no partitions"
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        for tp in parts:  # resolve the positions before the first probe
            await consumer.position(tp)
        sent: set[str] = set()
        deadline = time.monotonic() + 30
        while True:
            probe = air_event("PROBE")
            sent.add(str(probe["id"]))
            _publish_qos1(
                (settings.mqtt_host, settings.mqtt_port), DEVICE_TOPIC, encode(probe), DEVICE
            )
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for r in records:
                    with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                        if str(orjson.loads(r.value).get("id")) in sent:
                            return
            assert time.monotonic() < deadline, "the MQTT gateway never forwarded a probe"
    finally:
        await consumer.stop()


async def _find(bootstrap: str, topic: str, wanted: set[str], key: str) -> dict[str, bytes]:
    """Read ``topic`` from the start until every wanted id (by ``key``) is found."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-ingest-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found: dict[str, bytes] = {}
    try:
        deadline = time.monotonic() + 30
        while set(found) < wanted and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    # Contract topics also hold other tests' (and the simulator's deliberately
                    # malformed) records: look only at JSON objects.
                    try:
                        obj = orjson.loads(r.value)
                    except orjson.JSONDecodeError:
                        continue
                    ident = obj.get(key) if isinstance(obj, dict) else None
                    if ident in wanted:
                        found[ident] = r.value
    finally:
        await consumer.stop()
    return found


async def test_http_events_reach_their_topic(gateway: IngestSettings) -> None:
    events = [air_event(f"HTTP-{i}") for i in range(5)]
    url = f"http://127.0.0.1:{gateway.ingest_http_port}/events"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            url,
            data=encode(events[0]),
            headers={"Content-Type": "application/cloudevents+json", **AUTH},
        ) as one:
            assert one.status == 202
            assert await one.json() == {"accepted": 1}
        async with http.post(
            url, data=orjson.dumps(events[1:]), headers={"Content-Type": BATCH, **AUTH}
        ) as many:
            assert many.status == 202
            assert await many.json() == {"accepted": 4}
    found = await _find(
        gateway.bootstrap_servers, events_topic("air"), {str(e["id"]) for e in events}, "id"
    )
    assert len(found) == 5


async def test_http_bad_input_gets_4xx_with_a_reason(gateway: IngestSettings) -> None:
    url = f"http://127.0.0.1:{gateway.ingest_http_port}/events"
    async with aiohttp.ClientSession() as http:
        json = {"Content-Type": "application/json", **AUTH}
        async with http.post(url, data=b"{", headers=json) as r:
            assert r.status == 400
            assert (await r.json())["error"] == "undecodable"
        async with http.post(url, data=encode(air_event(pm25=-1)), headers=json) as r:
            assert r.status == 400
            body = await r.json()
            assert body["error"] == "invalid_events"
            assert body["rejected"][0]["reason"] == "out_of_range"
        async with http.post(url, data=b"x", headers={"Content-Type": "text/plain", **AUTH}) as r:
            assert r.status == 415
        big = b"[" + b" " * (300 * 1024) + b"]"
        async with http.post(url, data=big, headers={"Content-Type": BATCH, **AUTH}) as r:
            assert r.status == 413
            assert (await r.json())["error"] == "oversize"
        async with http.get(f"http://127.0.0.1:{gateway.ingest_http_port}/metrics") as r:
            text = await r.text()
            assert 'ioc_ingest_events_rejected_total{gateway="http",reason="out_of_range"}' in text


async def test_mqtt_events_reach_kafka_and_bad_ones_the_dead_letter_topic(
    gateway: IngestSettings,
) -> None:
    good = air_event("MQTT-1")
    bad_payload = orjson.dumps({**air_event("MQTT-2"), "specversion": "0.3"})
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.username_pw_set(*DEVICE)
    client.connect(gateway.mqtt_host, gateway.mqtt_port)
    client.loop_start()
    try:
        client.publish(DEVICE_TOPIC, encode(good), qos=1).wait_for_publish(5)
        client.publish(DEVICE_TOPIC, bad_payload, qos=1).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()
    found = await _find(gateway.bootstrap_servers, events_topic("air"), {str(good["id"])}, "id")
    assert str(good["id"]) in found
    consumer = AIOKafkaConsumer(
        DEADLETTER,
        bootstrap_servers=gateway.bootstrap_servers,
        group_id=f"test-ingest-dl-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    letters: list[DeadLetter] = []
    try:
        deadline = time.monotonic() + 30
        while not letters and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                letters += [
                    d
                    for d in (DeadLetter.from_json(r.value) for r in records)
                    if d.value == bad_payload
                ]
    finally:
        await consumer.stop()
    assert len(letters) == 1
    assert letters[0].reason == "unsupported_specversion"
    assert letters[0].source_topic == f"mqtt:{DEVICE_TOPIC}"
    assert letters[0].component == "ingest.mqtt"


async def test_http_answers_503_while_the_broker_cannot_take_the_events_and_429_meanwhile(
    tmp_path: Path, database_url: str
) -> None:
    """While one request waits for a broker that is away, the producer holds its bytes:
    more than IOC_INGEST_MAX_INFLIGHT_BYTES in flight is refused at once with 429 and
    Retry-After instead of queueing in memory."""
    with private_broker(tmp_path) as own:
        settings = IngestSettings(
            bootstrap_servers=own.bootstrap_servers,
            ingest_http_port=_free_port(),
            database_url=await ensure_test_keys(database_url),
            ingest_max_inflight_bytes=1,  # anything beside one request in flight is too much
            ingest_retry_after_s=3,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(serve(settings, mqtt=False, stop=stop))
        base = f"http://127.0.0.1:{settings.ingest_http_port}"
        headers = {"Content-Type": "application/cloudevents+json", **AUTH}
        try:
            async with aiohttp.ClientSession() as http:
                await _wait_healthy(http, f"{base}/readyz")
                async with http.get(f"{base}/healthz") as r:
                    health.validate(health.HEALTHZ, r.status, await r.json())
                async with http.post(
                    f"{base}/events", data=encode(air_event("UP")), headers=headers
                ) as r:
                    assert (r.status, await r.json()) == (202, {"accepted": 1})
                broker.down(own)  # the broker goes away; the gateway keeps running
                lost = air_event("DOWN")
                held = asyncio.create_task(
                    http.post(
                        f"{base}/events",
                        data=encode(lost),
                        headers=headers,
                        timeout=aiohttp.ClientTimeout(total=120),
                    )
                )

                async def in_flight() -> bool:
                    text = await _get(http, f"{base}/metrics")
                    return _metric(text, "ioc_ingest_inflight_bytes") >= 1

                await until(in_flight, "the held request to reach the producer", within=20)
                async with http.post(
                    f"{base}/events", data=encode(air_event("BUSY")), headers=headers
                ) as r:
                    assert r.status == 429
                    assert r.headers["Retry-After"] == "3"
                    assert (await r.json())["error"] == "busy"
                async with await held as r:
                    assert r.status == 503
                    assert (await r.json())["error"] == "unavailable"
                text = await _get(http, f"{base}/metrics")
                assert 'ioc_ingest_publish_errors_total{gateway="http"} 1.0' in text
                assert 'ioc_ingest_requests_refused_total{reason="busy"} 1.0' in text
                assert _metric(text, "ioc_ingest_inflight_bytes") == 0
                # Not ready while no broker answers, and says so; still alive.
                async with http.get(f"{base}/readyz") as r:
                    body = await r.json()
                    health.validate(health.READYZ, r.status, body)
                assert r.status == 503 and not body["checks"]["producer"]["ok"], body
                async with http.get(f"{base}/healthz") as r:
                    assert r.status == 200
        finally:
            stop.set()
            await task


async def _get(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as r:
        return await r.text()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics")


async def _wait_healthy(http: aiohttp.ClientSession, url: str) -> None:
    async def ready() -> dict[str, Any] | None:
        try:
            async with http.get(url) as resp:
                return await resp.json() if resp.status == 200 else None
        except aiohttp.ClientConnectionError:
            return None

    body = await until(ready, f"{url} to answer 200", within=20, every=0.1)
    health.validate(health.READYZ, 200, body)
    assert body["component"] == "ingest"


def _publish_qos1(
    address: tuple[str, int], topic: str, payload: bytes, login: tuple[str, str]
) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.username_pw_set(*login)
    client.connect(*address)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()


def _committed(path: str) -> bytes:
    return (Path(__file__).resolve().parent.parent / path).read_bytes()


async def test_http_serves_the_json_schemas_and_the_openapi_document(
    gateway: IngestSettings,
) -> None:
    """As committed (`ioc schemas`), and every documented operation is answered."""
    base = f"http://127.0.0.1:{gateway.ingest_http_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/schemas/v1/index.json") as r:
            assert r.status == 200
            names = [entry["name"] for entry in (await r.json(content_type=None))["schemas"]]
        assert "cloudevent.json" in names and "kpi-window.json" in names
        for name in ["index.json", *names]:
            async with http.get(f"{base}/schemas/v1/{name}") as r:
                assert r.status == 200, name
                media = "application/json" if name == "index.json" else "application/schema+json"
                assert r.content_type == media
                assert await r.read() == _committed(f"schemas/v1/{name}")
        async with http.get(f"{base}/schemas/v1/vn.ioc.air.teleported.json") as r:
            assert r.status == 404
            assert (await r.json())["error"] == "unknown_schema"
        async with http.get(f"{base}/openapi.json") as r:
            assert r.status == 200
            served = await r.read()
        assert served == _committed("docs/openapi.json")
        for path, item in orjson.loads(served)["paths"].items():
            if "servers" in item:
                continue  # the read API's paths: served on its own port (test_readapi_db)
            for method in item:
                url = base + path.replace("{name}", "cloudevent.json")
                async with http.request(method, url, data=b"[]") as r:
                    # POST [] is an empty batch: answered by the route (202, nothing sent)
                    assert r.status not in (404, 405), (method, path, r.status)
