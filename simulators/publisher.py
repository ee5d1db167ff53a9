"""Sends records to Kafka with kafka-python: idempotent, acks=all, batched.

Idempotence: kafka-python enables it by default when the broker's API version allows it,
and needs a producer id from the broker (InitProducerId) before it sends anything. Tansu
0.6 grants one (checked: producer id 4, epoch 0). With ``idempotence="auto"`` we wait a
moment for the id and, if the broker never grants one, start again without idempotence
and say so in the log: acks=all still holds, but a retried batch could then be written
twice (the stream workers and the raw-event sink count a CloudEvent (source, id)
once). ``"on"`` makes that a hard error; ``"off"`` never asks.

Batching: one ``send`` per record (kafka-python has no batch API) into the producer's
accumulator, which the I/O thread drains in batches of up to ``batch_size`` bytes after
``linger_ms``. Delivery is tracked with one callback per topic-partition per call of
:meth:`KafkaPublisher.send`, on its last record (records of a partition complete in
order), not one per record.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

import structlog
from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from events.binding import STRUCTURED_HEADERS
from events.errors import ServiceError
from simulators.injection import Record
from simulators.settings import SimulatorSettings

log = structlog.get_logger(__name__)

_PRODUCER_ID_WAIT_S = 5.0
# Partition numbers of keys we have seen: sensors and gateways are a few hundred keys;
# business ids (dossiers, reports) are unbounded, so the cache is cleared when it fills.
_PARTITION_CACHE_MAX = 200_000
# One list for every record (neither client changes it): no list built per record.
STRUCTURED_HEADER_LIST = list(STRUCTURED_HEADERS)


def _producer_config(settings: SimulatorSettings, idempotent: bool) -> dict[str, Any]:
    return {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "acks": "all",
        "enable_idempotence": idempotent,
        "linger_ms": settings.linger_ms,
        "batch_size": settings.batch_size,
        "max_request_size": max(4 * 1024 * 1024, settings.batch_size * 2),
        "retries": 2_147_483_647,
        "delivery_timeout_ms": 120_000,
        "client_id": "ioc-simulator",
    }


def _has_producer_id(producer: KafkaProducer) -> bool:
    # kafka-python keeps the idempotence state in its transaction manager (no public
    # accessor); without one the producer is not idempotent.
    manager = getattr(producer, "_transaction_manager", None)
    return bool(manager is not None and manager.has_producer_id())


def create_producer(settings: SimulatorSettings) -> tuple[KafkaProducer, bool]:
    """A connected producer and whether it is idempotent."""
    want = settings.idempotence != "off"
    try:
        producer = KafkaProducer(**_producer_config(settings, want))
    except KafkaError as exc:
        raise ServiceError(
            f"cannot reach the broker at {settings.bootstrap_servers} ({exc}); is it running? "
            "(`ioc services up broker`, or set IOC_BOOTSTRAP_SERVERS)"
        ) from exc
    if not want:
        return producer, False
    deadline = time.monotonic() + _PRODUCER_ID_WAIT_S
    while time.monotonic() < deadline:
        if _has_producer_id(producer):
            return producer, True
        time.sleep(0.05)
    if settings.idempotence == "on":
        producer.close(timeout=5)
        raise ServiceError(
            "the broker did not grant a producer id (idempotence); "
            "set IOC_SIM_IDEMPOTENCE=auto or off"
        )
    log.warning("idempotence_unavailable", detail="broker granted no producer id; acks=all only")
    producer.close(timeout=5)
    return KafkaProducer(**_producer_config(settings, False)), False


class Publisher(Protocol):
    """What the publishing loop needs from a publisher (kafka-python or aiokafka)."""

    idempotent: bool
    sent: int
    acked: int
    failed: int

    @property
    def outstanding(self) -> int: ...

    def send(self, records: Sequence[Record]) -> None: ...

    def flush(self, timeout: float | None = 30.0) -> None: ...

    def close(self, timeout: float = 30.0) -> None: ...


def create_publisher(settings: SimulatorSettings) -> Publisher:
    """The publisher ``settings.effective_producer`` names."""
    if settings.effective_producer == "mqtt":
        from simulators.publisher_mqtt import MqttPublisher

        return MqttPublisher(settings)
    if settings.effective_producer == "http":
        from simulators.publisher_http import HttpPublisher

        return HttpPublisher(settings)
    if settings.effective_producer == "aiokafka":
        from simulators.publisher_aiokafka import AiokafkaPublisher

        return AiokafkaPublisher(settings)
    return KafkaPublisher(settings)


class PartitionCache:
    """Partition of each key with the Java client's default partitioner (murmur2 of the
    key), computed once per key: kafka-python's own partitioner call is a noticeable
    share of ``send()``, and both publishers must place keys identically."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._partition_of: dict[tuple[str, bytes], int] = {}

    def count(self, topic: str) -> int | None:
        return self._counts.get(topic)

    def set_count(self, topic: str, n: int) -> int:
        self._counts[topic] = n
        return n

    def partition(self, topic: str, key: bytes, n: int) -> int:
        cache_key = (topic, key)
        p = self._partition_of.get(cache_key)
        if p is None:
            if len(self._partition_of) >= _PARTITION_CACHE_MAX:
                self._partition_of.clear()
            p = self._partition_of[cache_key] = (murmur2(key) & 0x7FFFFFFF) % n
        return p


class KafkaPublisher:
    """Sends :class:`Record` batches and counts what the broker acknowledged."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.producer, self.idempotent = create_producer(settings)
        self._partitions = PartitionCache()
        self._lock = threading.Lock()
        self.sent = 0
        self.acked = 0
        self.failed = 0
        self.last_error: str | None = None

    @property
    def outstanding(self) -> int:
        """Records handed to the producer and not yet acknowledged or failed."""
        return self.sent - self.acked - self.failed

    def _partition(self, topic: str, key: bytes) -> int:
        n = self._partitions.count(topic)
        if n is None:
            parts = self.producer.partitions_for(topic)
            if not parts:
                raise ServiceError(f"topic {topic} does not exist; run `ioc services up`")
            n = self._partitions.set_count(topic, len(parts))
        return self._partitions.partition(topic, key, n)

    def send(self, records: Sequence[Record]) -> None:
        """Hand ``records`` to the producer (returns at once; delivery is asynchronous)."""
        send = self.producer.send
        partition = self._partition
        last: dict[tuple[str, int], tuple[Any, int]] = {}
        for r in records:
            p = partition(r.topic, r.key)
            # CloudEvents Kafka binding, structured mode: content-type header, and the
            # event time as the record timestamp.
            future = send(
                r.topic,
                value=r.value,
                key=r.key,
                partition=p,
                headers=STRUCTURED_HEADER_LIST,
                timestamp_ms=r.time_ms,
            )
            tp = (r.topic, p)
            prev = last.get(tp)
            last[tp] = (future, prev[1] + 1 if prev else 1)
        self.sent += len(records)
        for future, count in last.values():
            future.add_callback(self._on_acked, count)
            future.add_errback(self._on_failed, count)

    def _on_acked(self, count: int, _metadata: Any) -> None:
        with self._lock:
            self.acked += count

    def _on_failed(self, count: int, exc: BaseException) -> None:
        with self._lock:
            self.failed += count
            self.last_error = repr(exc)
        log.error("delivery_failed", records=count, error=repr(exc))

    def flush(self, timeout: float | None = 30.0) -> None:
        self.producer.flush(timeout=timeout)

    def close(self, timeout: float = 30.0) -> None:
        try:
            self.producer.flush(timeout=timeout)
        finally:
            self.producer.close(timeout=timeout)
