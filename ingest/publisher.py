"""Publishing validated events (and dead letters) to Kafka with aiokafka."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from events.binding import STRUCTURED_HEADERS
from events.brokers import producer_options
from events.records import DeadLetter
from events.topics import DEADLETTER
from ingest.gateway import KafkaRecord


class Backpressure(Exception):
    """The producer already holds as many unacknowledged bytes as it may; retry later."""


class InflightBound:
    """Bytes handed to the producer and not yet acknowledged, and whether one more batch
    may join them: past ``limit`` it is refused at once (:class:`Backpressure`) instead of
    queueing in memory while the broker is slow or away. A batch is admitted whenever
    nothing is in flight, so a request larger than the limit still gets through alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bytes = 0

    @property
    def saturated(self) -> bool:
        """No batch would be admitted now."""
        return self.bytes >= self.limit

    def admit(self, size: int) -> None:
        if self.bytes and self.bytes + size > self.limit:
            raise Backpressure(
                f"{self.bytes} bytes await the broker's acknowledgement (limit {self.limit})"
            )
        self.bytes += size

    def release(self, size: int) -> None:
        self.bytes -= size


class KafkaPublisher:
    """Sends batches and returns only once the broker has acknowledged every record
    (acks=all), so a caller can acknowledge its own sender afterwards.

    ``max_inflight_bytes`` bounds (:class:`InflightBound`) what bounded callers — the HTTP
    gateway, with any number of concurrent requests — may have handed over unacknowledged.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        client_id: str = "ioc-ingest",
        max_inflight_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.inflight = InflightBound(max_inflight_bytes)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            **producer_options(bootstrap_servers),
            linger_ms=5,
            max_request_size=2 * 1024 * 1024,
        )

        self._started = False

    async def start(self) -> None:
        await self._producer.start()
        self._started = True

    async def stop(self) -> None:
        self._started = False
        await self._producer.stop()

    async def reachable(self, timeout_s: float = 3.0) -> tuple[bool, str]:
        """Whether the producer reaches a broker now: one metadata round trip (cached
        metadata would still list brokers that are gone)."""
        if not self._started:
            return False, "producer not started"
        try:
            cluster = await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout_s)
        except Exception as exc:  # any failure means: not connected, say why
            return False, f"no broker answered: {type(exc).__name__}: {exc}"
        return True, f"connected ({len(cluster.brokers())} broker(s))"

    async def publish(self, records: Sequence[KafkaRecord], bounded: bool = True) -> None:
        """Publish and wait for the acknowledgements. ``bounded=False`` is not refused by
        the in-flight bound (it still counts in it): the MQTT bridge forwards one batch at a
        time, which bounds it already, and must not lose its turn to HTTP clients."""
        size = sum(len(r.value) + len(r.key) for r in records)
        if bounded:
            self.inflight.admit(size)
        else:
            self.inflight.bytes += size
        try:
            # send() only appends to the producer's batch; the one await that matters is
            # the gather of the delivery futures, once per request or MQTT batch.
            # CloudEvents Kafka binding, structured mode: the content-type header says so,
            # and the record timestamp is the event time (validated: at most the allowed
            # skew ahead, so the broker's timestamp bounds never refuse it).
            futures = [
                await self._producer.send(
                    r.topic,
                    value=r.value,
                    key=r.key,
                    headers=list(STRUCTURED_HEADERS),
                    timestamp_ms=r.time_ms,
                )
                for r in records
            ]
            await asyncio.gather(*futures)
        finally:
            self.inflight.release(size)

    async def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        futures = [
            await self._producer.send(DEADLETTER, value=d.to_json(), key=d.key) for d in letters
        ]
        await asyncio.gather(*futures)
