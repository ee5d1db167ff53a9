"""The simulator against the real broker: what is published arrives on the right topic
with the right key, the CloudEvents structured-mode header and the event time as its
timestamp, as many times as it was sent; the CLI runs end to end."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
from kafka import KafkaConsumer, TopicPartition

from events.brokers import is_tansu
from events.catalogue import EVENT_TYPES, key_for
from events.envelope import Event, decode
from events.errors import InvalidEventError
from events.topics import DOMAINS, events_topic
from simulators.runner import run
from simulators.settings import SimulatorSettings

pytestmark = [pytest.mark.integration, pytest.mark.broker_sensitive, pytest.mark.timeout(120)]


def _end_offsets(consumer: KafkaConsumer) -> dict[TopicPartition, int]:
    partitions = [
        TopicPartition(events_topic(d), p)
        for d in DOMAINS
        for p in sorted(consumer.partitions_for_topic(events_topic(d)) or ())
    ]
    return dict(consumer.end_offsets(partitions))


# (headers, timestamp) of the records _read_from returned, by event id
_stamps: dict[str, tuple[list[tuple[str, bytes]], int]] = {}


def _read_from(
    consumer: KafkaConsumer, start: dict[TopicPartition, int], prefix: str, expected: int
) -> tuple[list[tuple[str, bytes | None, Event]], int]:
    """Our decodable records (ids starting with ``prefix``) from ``start`` on, and the
    number of undecodable ones seen on the way.

    Reads until ``expected`` of ours arrived instead of up to end offsets taken after
    publishing: Tansu's ListOffsets(latest) lags behind the last acknowledged batch
    for a moment (measured: 20-30 of 3,700 records beyond it).
    """
    consumer.assign(list(start))
    for tp, offset in start.items():
        consumer.seek(tp, offset)
    ours: list[tuple[str, bytes | None, Event]] = []
    undecodable = 0
    deadline = time.monotonic() + 30
    while len(ours) < expected and time.monotonic() < deadline:
        for tp, batch in consumer.poll(timeout_ms=500, max_records=5000).items():
            for r in batch:
                try:
                    event = decode(r.value)
                except InvalidEventError:
                    undecodable += 1
                    continue
                if event.id.startswith(prefix):
                    ours.append((tp.topic, r.key, event))
                    _stamps[event.id] = (list(r.headers), r.timestamp)
    return ours, undecodable


@pytest.mark.parametrize("producer", ["kafka-python", "aiokafka"])
def test_published_events_arrive_on_their_topics_with_their_keys(
    bootstrap_servers: str, producer: str
) -> None:
    seed = random.randrange(1_000_000)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    try:
        before = _end_offsets(consumer)
        started_ms = int(time.time() * 1000)
        settings = SimulatorSettings(
            bootstrap_servers=bootstrap_servers,
            rate=1500,
            duration=2.5,
            seed=seed,
            scenario="cycle",
            speed=120,
            duplicates=0.02,
            malformed=0.01,
            workers=1,
            producer=producer,
        )
        total = run(settings)
        expected = total.sent - total.by_kind["malformed"]
        ours, undecodable = _read_from(consumer, before, f"sim{seed}-", expected)
    finally:
        consumer.close()
    # Idempotent on Apache Kafka with either client; Tansu refuses aiokafka's.
    assert total.idempotent == (producer == "kafka-python" or not is_tansu(bootstrap_servers))
    assert total.failed == 0 and total.acked == total.sent
    assert 2500 < total.sent < 4500
    assert len(ours) == expected
    ids: Counter[str] = Counter()
    for topic, key, event in ours:
        ids[event.id] += 1
        assert topic == EVENT_TYPES[event.type].topic
        assert key == key_for(event)
    assert undecodable >= total.by_kind["malformed"] > 0
    assert sum(1 for n in ids.values() if n == 2) == total.by_kind["duplicate"] > 0
    # CloudEvents Kafka binding: structured mode, said by the header; the record timestamp
    # is the event time (the simulated clock runs 120x: times further ahead than receivers
    # accept get the producer's clock, see simulators.injection.record_time_ms).
    stamps = [_stamps[event.id] for _, _, event in ours]
    assert {tuple(h) for h, _ in stamps} == {(("content-type", b"application/cloudevents+json"),)}
    near = [(event, ts) for (_, _, event), (_, ts) in zip(ours, stamps, strict=True)
            if event.time_ms < started_ms + 200_000]  # fmt: skip
    assert len(near) > 100
    assert all(ts == event.time_ms for event, ts in near)
    assert {t.split(".")[2] for t in {EVENT_TYPES[e].topic for e in EVENT_TYPES}} == set(DOMAINS)
    assert set(total.by_domain) == set(DOMAINS)


def test_cli_runs_two_publishing_processes_and_reports_the_totals(bootstrap_servers: str) -> None:
    start = datetime(2026, 3, 2, 0, 0, tzinfo=UTC).isoformat()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulators",
            "--rate",
            "2000",
            "--duration",
            "3",
            "--workers",
            "2",
            "--scenario",
            "flood",
            "--speed",
            "60",
            "--start",
            start,
            "--bootstrap-servers",
            bootstrap_servers,
            "--no-live",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "failed 0" in proc.stderr
    assert "2 x kafka-python producer idempotent, acks=all" in proc.stderr
    sent = int(proc.stderr.split("sent ", 1)[1].split(" ", 1)[0].replace(",", ""))
    assert 4000 < sent < 7000
