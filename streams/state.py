"""Durable state snapshots on a Kafka topic (the adapters' changelog).

Each stage writes the full state of a partition it owns as one record keyed by that
partition, and only then commits the offsets the state includes. Restoring reads the
topic to its end and keeps the newest record per key. With Apache Kafka the topic is
compacted (``cleanup.policy=compact``) so it stays one record per key; Tansu's in-memory
engine does not compact, so there it grows with the run (see docs/streams.md).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from events.brokers import refresh_metadata
from events.errors import ServiceError
from streams.settings import StreamsSettings, internal_topics


async def ensure_topics(settings: StreamsSettings) -> None:
    """Create the internal topics if they are missing (idempotent)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(t.name, t.partitions, 1, topic_configs=t.configs())
            for t in internal_topics(settings)
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            # another worker may create them at the same moment
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


async def read_to_end(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    handle: Callable[[TopicPartition, list[ConsumerRecord[bytes, bytes]]], None],
    *,
    max_records: int = 10_000,
    timeout_s: float = 120.0,
) -> None:
    """Hand every record of ``tps``, from their current positions to their ends, to ``handle``.

    The end is the high watermark of the fetch responses, not ``end_offsets()``: Tansu
    answers ListOffsets(latest) with the last *batch* (base offset + 1), so a reader that
    trusted it would miss that batch. aiokafka learns the high watermark of every assigned
    partition from its first fetch, even an empty one. Stopping early is never an option
    (a state read that stops early restores old or no state: lost events), so a broker that
    does not deliver the end in ``timeout_s`` is an error.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        batch = await consumer.getmany(*tps, timeout_ms=250, max_records=max_records)
        for tp, records in batch.items():
            handle(tp, records)
        highs = [consumer.highwater(tp) for tp in tps]
        positions = [await consumer.position(tp) for tp in tps]
        if all(h is not None and p >= h for h, p in zip(highs, positions, strict=True)):
            return
        if time.monotonic() > deadline:
            behind = {
                f"{tp.topic}:{tp.partition}": (p, h)
                for tp, p, h in zip(tps, positions, highs, strict=True)
            }
            raise ServiceError(
                f"the broker did not deliver the end of {behind} (position, high watermark) "
                f"within {timeout_s:.0f} s; is it overloaded or unreachable?"
            )


async def read_whole_topic(
    bootstrap_servers: str,
    topic: str,
    handle: Callable[[TopicPartition, list[ConsumerRecord[bytes, bytes]]], None],
) -> None:
    """Hand every record of every partition of ``topic``, from the beginning to the end
    (as :func:`read_to_end` defines it), to ``handle``; nothing if the topic is missing."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await reader.start()
    try:
        parts = reader.partitions_for_topic(topic)
        if not parts:
            # A fresh client may not have the topic's metadata yet (Apache Kafka answers the
            # first request with no topics, Tansu with all of them).
            await refresh_metadata(reader)
            parts = reader.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts or ())]
        if tps:
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            await read_to_end(reader, tps, handle)
    finally:
        await reader.stop()


async def load_snapshots(
    settings: StreamsSettings, prefix: bytes, raw: Callable[[bytes], bool] | None = None
) -> dict[bytes, Any]:
    """The newest snapshot of every key starting with ``prefix`` (JSON-decoded; the
    bytes as stored for the keys ``raw`` selects)."""
    tp = TopicPartition(settings.state_topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        fetch_max_bytes=settings.fetch_max_bytes,
        max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
    )
    await consumer.start()
    out: dict[bytes, Any] = {}

    def keep(_: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        for rec in records:
            if rec.key is None or not rec.key.startswith(prefix):
                continue
            if rec.value:
                out[rec.key] = rec.value if raw and raw(rec.key) else orjson.loads(rec.value)
            else:  # a tombstone: the state of this key was dropped
                out.pop(rec.key, None)

    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        await read_to_end(consumer, [tp], keep, timeout_s=settings.restore_timeout_s)
    finally:
        await consumer.stop()
    return out
