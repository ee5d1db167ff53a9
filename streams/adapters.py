"""Small pieces the stream stages' aiokafka adapters share (``streams/worker.py``)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from events.records import DeadLetter
from streams.aggregator import COMPONENT
from streams.merger import WindowKey
from streams.settings import StreamsSettings

log = structlog.get_logger("streams")


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        on_revoked: Callable[[set[TopicPartition]], Awaitable[None]],
        on_assigned: Callable[[set[TopicPartition]], Awaitable[None]],
        consumer: AIOKafkaConsumer | None = None,
    ) -> None:
        self._revoked = on_revoked
        self._assigned = on_assigned
        # Paused while their state is restored: the stage loop polls concurrently, and
        # every record it got meanwhile would be parsed, refused and fetched again (a
        # whole fetch round, ~100k records, at a worker's start).
        self._consumer = consumer
        # aiokafka logs and swallows a listener's exception and goes on consuming; a stage
        # must not run partitions whose state it could not restore, so its loop re-raises.
        self.failure: BaseException | None = None

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        tps = set(assigned)
        if self._consumer is not None:
            self._consumer.pause(*tps)
        try:
            await self._assigned(tps)
        except Exception as exc:
            log.error("restore.failed", error=str(exc))
            self.failure = exc
        finally:
            if self._consumer is not None:
                # (a partition revoked meanwhile is no longer ours to resume)
                with contextlib.suppress(Exception):
                    self._consumer.resume(*(tp for tp in tps if tp in self._consumer.assignment()))

    def check(self) -> None:
        if self.failure is not None:
            raise self.failure


class CachedPartitioner:
    """aiokafka's default partitioner (murmur2 of the key, as the Java client), with the
    partition of each key remembered: murmur2 is pure Python in aiokafka, and the worker
    sends the same few keys over and over (a pane's "kpi|scope", a window's record).
    The same partitions as the default, so records of a key stay in one partition."""

    MAX_KEYS = 100_000  # then forget all: the keys of old windows are not sent again

    def __init__(self) -> None:
        self._default = DefaultPartitioner()
        self._known: dict[tuple[bytes, int], int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(self._default(key, all_partitions, available))
        cache_key = (key, len(all_partitions))
        partition = self._known.get(cache_key)
        if partition is None or partition not in all_partitions:
            if len(self._known) >= self.MAX_KEYS:
                self._known.clear()
            partition = self._known[cache_key] = int(self._default(key, all_partitions, available))
        return partition


def refetch(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
    # Still assigned (restore running): rewind; revoked meanwhile: the new owner reads it.
    with contextlib.suppress(Exception):
        if tp in consumer.assignment():
            consumer.seek(tp, offset)


def stage_consumer(settings: StreamsSettings, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.max_poll_records,
        fetch_max_bytes=settings.fetch_max_bytes,
        max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
        fetch_max_wait_ms=100,
        session_timeout_ms=settings.session_timeout_ms,
        rebalance_timeout_ms=settings.rebalance_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
    )


def window_failure(tp: TopicPartition, wk: WindowKey, why: str) -> DeadLetter:
    """The dead letter of a window that could not be built (quarantined by its merger)."""
    kpi, scope, size, start = wk
    body = {"kpi": kpi, "scope": scope, "window_s": size, "window_start_ms": start}
    return DeadLetter(
        reason="processing_error",
        detail=why,
        source_topic=tp.topic,
        source_partition=tp.partition,
        source_offset=-1,
        value=orjson.dumps(body),
        key=f"{kpi}|{scope}".encode(),
        component=COMPONENT,
    )
