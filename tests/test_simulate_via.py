"""`ioc simulate --via http`: the simulator sends through the real ingest gateway with an
ingest key, and counts what the gateway answers (acknowledged, refused by index, refused
as a whole) the way it counts a broker's acknowledgements."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from events.catalogue import EVENT_TYPES
from events.envelope import new_event
from events.errors import ConfigurationError, ServiceError
from events.topics import DOMAINS, events_topic
from ingest.service import serve
from ingest.settings import IngestSettings
from simulators.injection import to_record
from simulators.publisher_http import HttpPublisher
from simulators.publisher_mqtt import MqttPublisher
from simulators.runner import run_worker
from simulators.settings import SimulatorSettings
from tests.ingest_keys import AIR_SECRET, ALL_KEY, ALL_SECRET, MqttLogins, ensure_test_keys
from tests.test_ingest import _free_port, _wait_healthy
from tests.waiting import until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def http_gateway(
    bootstrap_servers: str, database_url: str, mqtt_logins: MqttLogins
) -> AsyncIterator[str]:
    """The ingest gateway, HTTP and MQTT (with its own Mosquitto account)."""
    settings = IngestSettings(
        bootstrap_servers=bootstrap_servers,
        database_url=await ensure_test_keys(database_url),
        ingest_http_port=_free_port(),
        mqtt_host=mqtt_logins.host,
        mqtt_port=mqtt_logins.port,
        mqtt_username=mqtt_logins.gateway[0],
        mqtt_password=mqtt_logins.gateway[1],
        ingest_mqtt_client_id=f"ioc-ingest-sim-{uuid.uuid4().hex[:6]}",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop))
    url = f"http://127.0.0.1:{settings.ingest_http_port}"
    async with aiohttp.ClientSession() as http:
        await _wait_healthy(http, f"{url}/readyz")
    yield url
    stop.set()
    await task


async def _event_topic_ends(bootstrap: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = [
            TopicPartition(events_topic(d), p)
            for d in DOMAINS
            for p in consumer.partitions_for_topic(events_topic(d)) or ()
        ]
        return dict(await consumer.end_offsets(parts))
    finally:
        await consumer.stop()


def _settings(url: str, key: str, **more: object) -> SimulatorSettings:
    return SimulatorSettings(via="http", ingest_url=url, ingest_key=key, **more)  # type: ignore[arg-type]


async def test_the_simulator_publishes_through_the_gateway(
    bootstrap_servers: str, http_gateway: str
) -> None:
    before = await _event_topic_ends(bootstrap_servers)
    settings = _settings(http_gateway, ALL_SECRET, rate=400.0, duration=2.0, faults=False)
    assert settings.effective_producer == "http"
    progress = await asyncio.to_thread(run_worker, settings)
    assert progress.sent > 400 and progress.failed == 0
    assert progress.acked == progress.sent
    after = await _event_topic_ends(bootstrap_servers)
    # Every acknowledged event is on its topic: the gateway answered 202 only after Kafka.
    assert sum(after[tp] - before.get(tp, 0) for tp in after) == progress.acked


async def test_the_simulator_publishes_over_mqtt_as_a_keys_device(
    bootstrap_servers: str, http_gateway: str, mqtt_logins: MqttLogins
) -> None:
    before = await _event_topic_ends(bootstrap_servers)
    settings = SimulatorSettings(
        via="mqtt",
        ingest_key_name=ALL_KEY,
        ingest_key=ALL_SECRET,
        mqtt_host=mqtt_logins.host,
        mqtt_port=mqtt_logins.port,
        rate=300.0,
        duration=2.0,
        faults=False,
    )
    progress = await asyncio.to_thread(run_worker, settings)
    assert progress.sent > 300 and progress.failed == 0 and progress.acked == progress.sent

    # Mosquitto acknowledged them; the gateway forwards each to Kafka.
    async def landed() -> int | None:
        after = await _event_topic_ends(bootstrap_servers)
        n = sum(after[tp] - before.get(tp, 0) for tp in after)
        return n if n >= progress.acked else None

    assert await until(landed, f"{progress.acked} records", within=60, every=0.2) == progress.acked
    # A wrong secret is refused at connect, with the reason.
    wrong = settings.model_copy(update={"ingest_key": "not-the-secret"})
    with pytest.raises(ServiceError, match="Mosquitto refused the login 'test-all'"):
        MqttPublisher(wrong)


def _air(station: str, time: datetime | None = None) -> dict[str, object]:
    et = EVENT_TYPES["vn.ioc.air.observed"]
    data = {**et.example, "station_id": station}
    return new_event(et.type, f"/sensors/air/{station}", data, time=time or datetime.now(UTC))


async def test_refused_items_fail_and_the_rest_of_the_batch_is_published(
    http_gateway: str,
) -> None:
    tag = uuid.uuid4().hex[:6]
    future = datetime.now(UTC) + timedelta(days=3)  # past IOC_MAX_FUTURE_SKEW_S: refused
    records = [to_record(_air(f"V{tag}-{i}", future if i == 1 else None)) for i in range(3)]
    publisher = HttpPublisher(_settings(http_gateway, ALL_SECRET))
    publisher.send(records)
    await asyncio.to_thread(publisher.close, 30.0)
    assert (publisher.sent, publisher.acked, publisher.failed) == (3, 2, 1)
    assert publisher.last_error is not None and "future_time" in publisher.last_error


async def test_a_key_without_the_scope_or_an_unknown_key_fails_the_batch(
    http_gateway: str,
) -> None:
    et = EVENT_TYPES["vn.ioc.traffic.observed"]
    traffic = new_event(et.type, "/sensors/traffic/X", dict(et.example), time=datetime.now(UTC))
    for key, status in ((AIR_SECRET, "403"), ("not-a-key", "401")):
        publisher = HttpPublisher(_settings(http_gateway, key))
        publisher.send([to_record(traffic)])
        await asyncio.to_thread(publisher.close, 30.0)
        assert (publisher.acked, publisher.failed) == (0, 1)
        assert publisher.last_error is not None and publisher.last_error.startswith(status)


def test_malformed_bytes_go_straight_to_kafka_only() -> None:
    with pytest.raises(ConfigurationError, match="--malformed needs --via kafka"):
        SimulatorSettings(via="http", malformed=0.1)


async def test_the_command_says_who_acknowledged(http_gateway: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators", "--via", "http", "--ingest-url", http_gateway,
        "--ingest-key", ALL_SECRET, "--rate", "100", "--duration", "1", "--no-live",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert "1 x http producer acknowledged by the gateway" in err.decode()
