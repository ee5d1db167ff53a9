"""CloudEvents bindings against the real broker and TimescaleDB, with the official SDK
(``cloudevents`` on PyPI) as the client: HTTP binary and structured requests to the
gateway, Kafka binary and structured records read by the stream worker (its stage 1 on
consumed records, and the whole worker process: the same KPIs as from structured records)
and stored by the raw-event sink, every attribute kept."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cloudevents.core.bindings import http, kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from prometheus_client import CollectorRegistry

from events import topics
from events.binding import STRUCTURED_HEADERS
from events.envelope import epoch_ms
from events.records import DeadLetter
from ingest.settings import IngestSettings
from storage.metrics import SinkMetrics
from storage.service import sink_specs
from storage.settings import StorageSettings
from storage.sink import Sink
from streams.aggregator import EngineConfig, PartitionAggregator
from streams.kpis import KpiIndex
from tests.db_helpers import migrated
from tests.ingest_keys import AUTH
from tests.test_ingest import gateway  # noqa: F401 (the fixture)
from tests.test_streams_integration import (
    Topics,
    Workers,
    _create,
    assert_known_finals,
    known_air_events,
    workers_factory,  # noqa: F401 (the fixture)
)
from tests.waiting import until

pytestmark = pytest.mark.integration

EXTRA = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "ioc=1",
    "partitionkey": "HD-AQ-CE",
    "subject": "Trạm Phố Huế",
    "dataschema": "urn:vn-ioc:schema:v1:vn.ioc.air.observed",
    "sensorfirmware": "4.2.1",
}


def sdk_event(event_id: str, station: str, when: datetime, **attributes: Any) -> CloudEvent:
    return CloudEvent(
        attributes={
            "id": event_id,
            "source": f"/sensors/air/{station}",
            "type": "vn.ioc.air.observed",
            "time": when,
            "datacontenttype": "application/json; charset=utf-8",
            **EXTRA,
            **attributes,
        },
        data={"station_id": station, "district": "HD", "pm25": 38.5, "pm10": 61.0},
    )


async def _records(bootstrap: str, topic: str, ids: set[str]) -> dict[str, Any]:
    """The consumed records of ``topic`` holding the events ``ids`` (by id)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 30
        while set(found) < ids and time.monotonic() < deadline:
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                for r in recs:
                    try:
                        obj = orjson.loads(r.value)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(obj, dict) and obj.get("id") in ids:
                        found[obj["id"]] = r
    finally:
        await consumer.stop()
    return found


async def test_sdk_http_binary_and_structured_reach_kafka_whole_with_header_and_timestamp(
    gateway: IngestSettings,  # noqa: F811
) -> None:
    tag = uuid.uuid4().hex[:8]
    when = datetime.now(UTC).replace(microsecond=250_000)
    binary = http.to_binary(sdk_event(f"b-{tag}", "HD-AQ-CE", when), JSONFormat())
    structured = http.to_structured(sdk_event(f"s-{tag}", "HD-AQ-CE", when), JSONFormat())
    url = f"http://127.0.0.1:{gateway.ingest_http_port}/events"
    async with aiohttp.ClientSession() as client:
        for message in (binary, structured):
            headers = {**message.headers, **AUTH}
            async with client.post(url, data=message.body, headers=headers) as resp:
                assert resp.status == 202, await resp.text()
        # Broken binary requests: a required header missing, data that is not JSON.
        no_id = {k: v for k, v in binary.headers.items() if k != "ce-id"} | AUTH
        async with client.post(url, data=binary.body, headers=no_id) as resp:
            assert resp.status == 400
            answer = await resp.json()
            assert answer["error"] == "missing_attribute"
            assert "ce-id" in answer["detail"]
        as_text = {**binary.headers, "content-type": "text/plain", **AUTH}
        async with client.post(url, data=b"pm25=1", headers=as_text) as resp:
            assert resp.status == 415
    found = await _records(
        gateway.bootstrap_servers, topics.events_topic("air"), {f"b-{tag}", f"s-{tag}"}
    )
    assert set(found) == {f"b-{tag}", f"s-{tag}"}
    for record in found.values():
        assert list(record.headers) == [("content-type", b"application/cloudevents+json")]
        assert record.timestamp == epoch_ms(when)
        event = orjson.loads(record.value)
        assert {k: event[k] for k in EXTRA} == EXTRA
        assert record.key == b"HD-AQ-CE"


async def test_sdk_kafka_binary_and_structured_are_folded_and_stored_with_extensions(
    bootstrap_servers: str, database_url: str, producer: AIOKafkaProducer
) -> None:
    tag = uuid.uuid4().hex[:8]
    topic, station = f"test.ce.{tag}", f"CE-{tag}"
    when = datetime.now(UTC).replace(microsecond=0)
    binary = kafka.to_binary(sdk_event(f"{tag}-b", station, when), JSONFormat())
    structured = kafka.to_structured(sdk_event(f"{tag}-s", station, when), JSONFormat())
    broken = kafka.to_binary(sdk_event(f"{tag}-x", station, when), JSONFormat())
    no_time = [(k, v) for k, v in broken.headers.items() if k != "ce_time"]
    for value, headers in (
        (binary.value, list(binary.headers.items())),
        (structured.value, list(structured.headers.items())),
        (broken.value, no_time),
        (b"{not json", list(broken.headers.items())),
    ):
        await producer.send_and_wait(topic, value, key=station.encode(), headers=headers)

    # Stage 1 of the stream worker, on the records as the broker hands them over.
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap_servers, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + 30
        while len(records) < 4 and time.monotonic() < deadline:
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                records += recs
    finally:
        await consumer.stop()
    agg = PartitionAggregator(topic, 0, KpiIndex.from_catalogue(), EngineConfig())
    dead = agg.process(sorted(records, key=lambda r: r.offset))
    assert agg.processed == 2
    assert [d.reason for d in dead] == ["missing_attribute", "undecodable"]

    # The raw-event sink on the same topic: both events stored with every attribute.
    await migrated(database_url)
    settings = StorageSettings(
        bootstrap_servers=bootstrap_servers,
        database_url=database_url,
        raw_group_id=f"test-raw-{tag}",
    )
    raw = next(s for s in sink_specs(settings) if s.name == "raw")
    sink = Sink(
        dataclasses.replace(raw, topics=(topic,)),
        bootstrap_servers=bootstrap_servers,
        database_url=database_url,
        producer=producer,
        metrics=SinkMetrics.create(CollectorRegistry()),
    )
    stop = asyncio.Event()
    runner = asyncio.create_task(sink.run(stop))
    conn = await asyncpg.connect(database_url)
    try:
        source = f"/sensors/air/{station}"

        async def stored() -> bool:
            n = await conn.fetchval("SELECT count(*) FROM events WHERE source = $1", source)
            return bool(n == 2)

        await until(stored, "the raw sink to store both events", within=60, every=0.3)
        rows = await conn.fetch(
            "SELECT id, time, extensions FROM events WHERE source = $1 ORDER BY id", source
        )
        assert [r["id"] for r in rows] == [f"{tag}-b", f"{tag}-s"]
        for row in rows:
            assert row["time"] == when
            assert orjson.loads(row["extensions"]) == EXTRA
        letters = await _dead_letters(bootstrap_servers, topic, 2)
        assert sorted(d.reason for d in letters) == ["missing_attribute", "undecodable"]
        assert any("ce_time" in d.detail for d in letters)
    finally:
        await conn.close()
        stop.set()
        await asyncio.wait_for(runner, 30)


async def _dead_letters(
    bootstrap: str, source_topic: str, want: int, topic: str = topics.DEADLETTER
) -> list[DeadLetter]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: list[DeadLetter] = []
    try:
        deadline = time.monotonic() + 30
        while len(found) < want and time.monotonic() < deadline:
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                for r in recs:
                    letter = DeadLetter.from_json(r.value)
                    if letter.source_topic == source_topic:
                        found.append(letter)
    finally:
        await consumer.stop()
    return found


@pytest.mark.parametrize("engine", ["aiokafka", "faust"])
async def test_the_stream_worker_gives_exact_kpis_from_binary_records_too(
    bootstrap_servers: str,
    workers_factory: list[Workers],  # noqa: F811
    tmp_path: Path,
    engine: str,
) -> None:
    """The known events of tests/test_streams_integration.py, every other one re-written
    by the SDK in binary mode: the final windows are exactly those of all the events, and
    a binary record without its ce_type header is a dead letter saying so."""
    t = Topics()
    await _create(bootstrap_servers, t, ("ce",))
    workers = Workers({**t.env(bootstrap_servers, "ce"), "IOC_STREAMS_ENGINE": engine}, tmp_path)
    workers_factory.append(workers)
    workers.start()
    values, expected = known_air_events()
    fmt = JSONFormat()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, linger_ms=5, acks="all")
    await producer.start()
    try:
        futures = []
        broken: kafka.KafkaMessage | None = None
        for i, (partition, raw) in enumerate(values):
            message = kafka.KafkaMessage(headers=dict(STRUCTURED_HEADERS), key=None, value=raw)
            if i % 2:
                message = kafka.to_binary(kafka.from_structured(message, fmt), fmt)
                broken = broken or message
            headers = list(message.headers.items())
            futures.append(
                await producer.send(t.air, message.value, partition=partition, headers=headers)
            )
        assert broken is not None
        no_type = [(k, v) for k, v in broken.headers.items() if k != "ce_type"]
        futures.append(await producer.send(t.air, broken.value, partition=0, headers=no_type))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    await assert_known_finals(bootstrap_servers, t.kpi("ce"), expected, 90)
    letters = await _dead_letters(bootstrap_servers, t.air, 1, t.dead)  # the test's own
    assert [d.reason for d in letters] == ["missing_attribute"]
    assert "ce_type" in letters[0].detail
