"""An alternative publisher for high rates: aiokafka on its own event loop.

kafka-python's ``send()`` costs ~40 µs per record in pure Python; aiokafka's ``send()``
(C-accelerated record builder) costs ~7 µs on this machine class (see
docs/benchmarks.md). The generator stays in the caller's thread; this publisher runs
aiokafka on an event loop in a background thread and gets one hand-off per batch of
records (``run_coroutine_threadsafe``), never per record. (aiokafka's ``send_batch``
looked cheaper still, but it waits while the partition has a batch queued: with the
small per-partition batches of a paced run it fell to a few thousand records/s.)

Idempotence: Tansu 0.6 answers aiokafka 0.14's InitProducerId with UnknownError (-1)
(kafka-python's request version works). With ``idempotence="auto"`` this publisher then
falls back to acks=all without idempotence and logs it; ``"on"`` makes it an error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from events.errors import ServiceError
from simulators.injection import Record
from simulators.publisher import STRUCTURED_HEADER_LIST, PartitionCache
from simulators.settings import SimulatorSettings

log = structlog.get_logger(__name__)
T = TypeVar("T")


class AiokafkaPublisher:
    """Same interface as :class:`simulators.publisher.KafkaPublisher`."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self._settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="aiokafka-publisher", daemon=True
        )
        self._thread.start()
        self._partitions = PartitionCache()
        self._pending: set[concurrent.futures.Future[None]] = set()
        self._order: asyncio.Lock | None = None
        # records of a hand-off already counted as acked/failed (by id of its list)
        self._settled: dict[int, int] = {}
        self.sent = 0
        self.acked = 0
        self.failed = 0
        self.last_error: str | None = None
        try:
            self.producer, self.idempotent = self._call(self._start())
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _new_producer(self, idempotent: bool) -> AIOKafkaProducer:
        s = self._settings
        return AIOKafkaProducer(
            bootstrap_servers=s.bootstrap_servers.split(","),
            acks="all",
            enable_idempotence=idempotent,
            linger_ms=s.linger_ms,
            max_batch_size=s.batch_size,
            max_request_size=max(4 * 1024 * 1024, s.batch_size * 2),
            client_id="ioc-simulator",
        )

    async def _start(self) -> tuple[AIOKafkaProducer, bool]:
        self._order = asyncio.Lock()
        want = self._settings.idempotence != "off"
        producer = self._new_producer(want)
        try:
            await producer.start()
            return producer, want
        except KafkaError as exc:
            await producer.stop()
            if not want or self._settings.idempotence == "on":
                raise ServiceError(
                    f"cannot start a producer for {self._settings.bootstrap_servers}: {exc!r}"
                ) from exc
            log.warning("idempotence_unavailable", producer="aiokafka", error=repr(exc))
        producer = self._new_producer(False)
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise ServiceError(
                f"cannot reach the broker at {self._settings.bootstrap_servers} ({exc!r})"
            ) from exc
        return producer, False

    @property
    def outstanding(self) -> int:
        return self.sent - self.acked - self.failed

    def send(self, records: Sequence[Record]) -> None:
        """Queue ``records`` for sending (returns at once)."""
        if not records:
            return
        self.sent += len(records)
        future = asyncio.run_coroutine_threadsafe(self._send(list(records)), self._loop)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def _partition(self, topic: str, key: bytes) -> int:
        n = self._partitions.count(topic)
        if n is None:
            parts = await self.producer.partitions_for(topic)
            if not parts:
                raise ServiceError(f"topic {topic} does not exist; run `ioc services up`")
            n = self._partitions.set_count(topic, len(parts))
        return self._partitions.partition(topic, key, n)

    async def _send(self, records: list[Record]) -> None:
        try:
            await self._send_batches(records)
        except Exception as exc:  # never leave records neither acked nor failed
            settled = self._settled.pop(id(records), 0)
            self.failed += len(records) - settled
            self.last_error = repr(exc)
            log.error("send_failed", records=len(records) - settled, error=repr(exc))
        else:
            self._settled.pop(id(records), None)

    async def _send_batches(self, records: list[Record]) -> None:
        producer = self.producer
        # Last delivery future and record count per topic-partition: records of one
        # partition are acknowledged in order, so one callback per partition suffices.
        last: dict[tuple[str, int], tuple[asyncio.Future[Any], int]] = {}
        assert self._order is not None
        # One hand-off at a time keeps the records of a partition in order even when
        # ``send`` waits for room in the accumulator.
        async with self._order:
            for r in records:
                p = await self._partition(r.topic, r.key)
                # CloudEvents Kafka binding, structured mode: content-type header, and
                # the event time as the record timestamp.
                future = await producer.send(
                    r.topic,
                    r.value,
                    r.key,
                    partition=p,
                    timestamp_ms=r.time_ms,
                    headers=STRUCTURED_HEADER_LIST,
                )
                prev = last.get((r.topic, p))
                last[(r.topic, p)] = (future, prev[1] + 1 if prev else 1)
        deliveries = list(last.values())
        results = await asyncio.gather(*(f for f, _ in deliveries), return_exceptions=True)
        for (_, count), result in zip(deliveries, results, strict=True):
            if isinstance(result, BaseException):
                self.failed += count
                self.last_error = repr(result)
                log.error("delivery_failed", records=count, error=repr(result))
            else:
                self.acked += count
            self._settled[id(records)] = self._settled.get(id(records), 0) + count

    def flush(self, timeout: float | None = 30.0) -> None:
        pending = list(self._pending)
        if pending:
            concurrent.futures.wait(pending, timeout=timeout)
        for f in pending:
            if f.done() and f.exception() is not None:
                self.last_error = repr(f.exception())

    def close(self, timeout: float = 30.0) -> None:
        try:
            self.flush(timeout)
            self._call(self.producer.stop(), timeout)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
