"""Durable state snapshots on a Kafka topic (the adapters' changelog).

Each stage writes the full state of a partition it owns as one record keyed by that
partition, and only then commits the offsets the state includes. Restoring reads the
topic to its end and keeps the newest record per key. With Apache Kafka the topic is
compacted (``cleanup.policy=compact``) so it stays one record per key; Tansu's in-memory
engine does not compact, so there it grows with the run (see docs/streams.md).
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.settings import StreamsSettings


async def ensure_topics(settings: StreamsSettings) -> None:
    """Create the internal topics if they are missing (idempotent)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(settings.partials_topic, settings.partials_partitions, 1),
            NewTopic(settings.state_topic, 1, 1, topic_configs={"cleanup.policy": "compact"}),
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            # another worker may create them at the same moment
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


async def load_snapshots(settings: StreamsSettings, prefix: bytes) -> dict[bytes, dict[str, Any]]:
    """The newest snapshot of every key starting with ``prefix``."""
    tp = TopicPartition(settings.state_topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        fetch_max_bytes=settings.fetch_max_bytes,
        max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
    )
    await consumer.start()
    out: dict[bytes, dict[str, Any]] = {}
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        # Tansu answers ListOffsets(latest) wrongly, so the end is the high watermark of
        # the fetch responses; an empty topic may send none, hence the empty-poll limit.
        empty_polls = 0
        while empty_polls < 6:
            batch = await consumer.getmany(tp, timeout_ms=250, max_records=10_000)
            records = batch.get(tp, [])
            for rec in records:
                if rec.key is None or not rec.key.startswith(prefix):
                    continue
                if rec.value:
                    out[rec.key] = orjson.loads(rec.value)
                else:  # a tombstone: the state of this key was dropped
                    out.pop(rec.key, None)
            high = consumer.highwater(tp)
            if high is not None and await consumer.position(tp) >= high:
                break
            empty_polls = 0 if records else empty_polls + 1
    finally:
        await consumer.stop()
    return out
