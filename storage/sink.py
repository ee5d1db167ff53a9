"""A Kafka → TimescaleDB sink: the I/O shell around ``rows`` (parse) and ``writers`` (merge).

Loop: collect a batch (by rows or time) → parse → write in one DB transaction → publish
dead letters → commit the offsets. Offsets are committed only after the transaction and
the dead letters are durable, so a crash replays at most the batch in flight, and the
idempotent merges make that replay harmless.

Database outage: the write fails with a connection error, the sink pauses its partitions
(the consumer stops fetching, memory stays at one batch), retries with exponential
backoff, and resumes when the write succeeds.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from events import topics
from events.records import DeadLetter
from storage.metrics import SinkMetrics
from storage.rows import PreparedBatch, Row, SourceRecord, dead_letter
from storage.writers import BatchWriter
from streams.checkpoint import Checkpoint, OffsetTracker, run_checkpoint

log = structlog.get_logger(__name__)

# Errors that reject the rows themselves; only these are bisected down to the rows to
# dead-letter: a data exception (SQLSTATE class 22, e.g. a NUL byte in text), an integrity
# violation (class 23; duplicates never get here, the writers merge them), or a value
# asyncpg cannot encode for its column (its client-side DataError, a ValueError).
ROW_REJECTED_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions._base.DataError,
)
# Everything else means the same write can succeed later, once the server is back or an
# operator fixed it (down, restarting, broken connection, deadlock with another writer,
# but also a dropped table, a missing grant or a read-only standby): the sink pauses and
# retries with backoff rather than turn good rows into dead letters.
# The server is down, restarting or overloaded, or the connection broke.
UNREACHABLE_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    # A connection whose server went away while it was idle can be left waiting for a
    # ReadyForQuery that never comes; its next BEGIN then fails client-side with "cannot
    # switch to state …; another operation is in progress". The connection is dropped
    # and the write retried, as for any broken connection.
    asyncpg.exceptions._base.InternalClientError,
)
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    *UNREACHABLE_DB_ERRORS,
    asyncpg.PostgresError,
)


class _CommitFailed(Exception):
    """The offset commit of a stored batch failed (it is read again, harmlessly)."""


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """What one sink consumes and how it writes."""

    name: str
    topics: tuple[str, ...]
    group_id: str
    merge: BatchWriter
    prepare: Callable[[Sequence[SourceRecord]], PreparedBatch]
    batch_rows: int
    batch_ms: int
    # Database connections writing parts of one batch at once: the merge runs in the
    # server, so two connections let it use two cores while this process decodes.
    writers: int = 1
    # Rows with equal keys go to the same writer. Two transactions inserting the same
    # unique key wait on each other, and with two such keys in opposite order they
    # deadlock; a duplicate (same source, same id) must therefore stay in one part.
    writer_key: Callable[[Row], Hashable] | None = None


def split_for_writers(
    batch: PreparedBatch, writers: int, key: Callable[[Row], Hashable] | None
) -> list[tuple[list[Row], list[SourceRecord]]]:
    """One part per writer (small batches are not worth splitting), by ``key`` if given."""
    n = writers if len(batch.rows) >= 1000 * writers else 1
    if n == 1:
        return [(batch.rows, batch.sources)] if batch.rows else []
    if key is None:
        size = -(-len(batch.rows) // n)
        return [
            (batch.rows[i : i + size], batch.sources[i : i + size])
            for i in range(0, len(batch.rows), size)
        ]
    parts: list[tuple[list[Row], list[SourceRecord]]] = [([], []) for _ in range(n)]
    for row, src in zip(batch.rows, batch.sources, strict=True):
        part = parts[hash(key(row)) % n]
        part[0].append(row)
        part[1].append(src)
    return [p for p in parts if p[0]]


@dataclass(slots=True)
class SinkHealth:
    running: bool = False
    paused_since: float | None = None
    last_commit: float | None = None
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "paused": self.paused_since is not None,
            "paused_for_s": None
            if self.paused_since is None
            else round(time.monotonic() - self.paused_since, 1),
            "last_commit_age_s": None
            if self.last_commit is None
            else round(time.time() - self.last_commit, 1),
            "last_error": self.last_error,
        }


# Rows decoded between two yields to the event loop while the previous batch is written.
# Decoding a whole 5,000-row batch in one go (~20 ms) stalls the write task: the server
# finishes the COPY and then idles until the loop sends the next statement. Yielding every
# 100 rows lets both cores work (`sink_rows_per_s` in docs/benchmarks.md; the rate
# before this change is in the commit that introduced it).
PREPARE_SLICE_ROWS = 100


async def prepare_interleaved(
    prepare: Callable[[Sequence[Any]], PreparedBatch], records: Sequence[Any]
) -> PreparedBatch:
    """``prepare(records)`` in slices, yielding to the loop between them (see above)."""
    if len(records) <= PREPARE_SLICE_ROWS:
        return prepare(records)
    out = PreparedBatch()
    for i in range(0, len(records), PREPARE_SLICE_ROWS):
        out.extend(prepare(records[i : i + PREPARE_SLICE_ROWS]))
        await asyncio.sleep(0)
    return out


class Sink:
    def __init__(
        self,
        spec: SinkSpec,
        *,
        bootstrap_servers: str,
        database_url: str,
        producer: AIOKafkaProducer,
        metrics: SinkMetrics,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        self.spec = spec
        self.health = SinkHealth()
        self._bootstrap = bootstrap_servers
        self._database_url = database_url
        self._producer = producer
        self._metrics = metrics
        self._retry_initial = retry_initial_s
        self._retry_max = retry_max_s
        self._conns: dict[int, asyncpg.Connection] = {}
        self._failing: set[int] = set()  # writer slots whose last attempt failed
        self._tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self._log = log.bind(sink=spec.name)

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *self.spec.topics,
            bootstrap_servers=self._bootstrap,
            group_id=self.spec.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.spec.batch_rows,
            # Bounded prefetch: at most this much waits in memory besides the batch.
            fetch_max_bytes=16 * 1024 * 1024,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            rebalance_timeout_ms=10_000,
            # A long database outage must not make the group evict us.
            max_poll_interval_ms=900_000,
        )

    async def run(self, stop: asyncio.Event) -> None:
        consumer = self._consumer()
        await consumer.start()
        self.health.running = True
        self._log.info("sink started", topics=list(self.spec.topics))
        # One batch is written (the server works) while the next one is fetched and
        # decoded (this process works): at most two batches are in memory.
        in_flight: asyncio.Task[None] | None = None
        try:
            while not stop.is_set():
                records = await self._collect(consumer, stop)
                if not records:
                    if in_flight is not None:
                        await in_flight
                        in_flight = None
                    continue
                offsets: dict[TopicPartition, int] = {}
                for rec in records:
                    offsets[TopicPartition(rec.topic, rec.partition)] = rec.offset + 1
                batch = await prepare_interleaved(self.spec.prepare, records)
                if in_flight is not None:
                    await in_flight  # batches are written and committed in order
                in_flight = asyncio.create_task(self._store(consumer, batch, offsets, stop))
            if in_flight is not None:
                await in_flight
        finally:
            if in_flight is not None and not in_flight.done():
                in_flight.cancel()
                await asyncio.gather(in_flight, return_exceptions=True)
            self.health.running = False
            await consumer.stop()
            for slot in list(self._conns):
                self._drop_connection(slot)
            self._log.info("sink stopped")

    async def _collect(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> list[Any]:
        """One batch: wait up to 1 s for a first record, then fill until rows or time."""
        records: list[Any] = []
        loop = asyncio.get_running_loop()
        limit = self.spec.batch_rows
        got = await consumer.getmany(timeout_ms=1000, max_records=limit)
        for part in got.values():
            records.extend(part)
        deadline = loop.time() + self.spec.batch_ms / 1000
        while records and len(records) < limit and not stop.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            got = await consumer.getmany(
                timeout_ms=max(1, int(remaining * 1000)), max_records=limit - len(records)
            )
            for part in got.values():
                records.extend(part)
        return records

    async def _store(
        self,
        consumer: AIOKafkaConsumer,
        batch: PreparedBatch,
        offsets: dict[TopicPartition, int],
        stop: asyncio.Event,
    ) -> None:
        """Write one batch, publish its dead letters, then commit its offsets."""

        async def store(_: Checkpoint[TopicPartition]) -> bool:
            dead = list(batch.dead)
            if batch.rows:
                parts = self._split(batch)
                results = await asyncio.gather(
                    *(
                        self._write(consumer, rows, sources, stop, slot)
                        for slot, (rows, sources) in enumerate(parts)
                    )
                )
                for written in results:
                    if written is None:  # stopping during an outage: nothing is committed
                        return False
                    dead.extend(written)
            if dead:
                await self._publish_dead(dead)
            return True

        async def commit(durable: dict[TopicPartition, int]) -> None:
            try:
                await consumer.commit(durable)
            except KafkaError as exc:
                # E.g. partitions moved to another member during the batch, or the
                # coordinator is away: whoever reads them next re-reads this batch, and
                # the idempotent merge ignores what we already wrote.
                raise _CommitFailed(str(exc)) from exc

        try:
            done = await run_checkpoint(
                self._tracker, store, commit, checkpoint=Checkpoint(offsets)
            )
        except _CommitFailed as exc:
            self._log.warning("offset commit failed; batch will be replayed", error=str(exc))
            return
        if not done:
            return
        self.health.last_commit = time.time()
        self._metrics.batches.labels(self.spec.name).inc()
        self._metrics.rows.labels(self.spec.name).inc(len(batch.rows))
        self._metrics.last_commit.labels(self.spec.name).set(self.health.last_commit)

    def _split(self, batch: PreparedBatch) -> list[tuple[list[Row], list[SourceRecord]]]:
        return split_for_writers(batch, self.spec.writers, self.spec.writer_key)

    async def _connection(self, slot: int) -> asyncpg.Connection:
        conn = self._conns.get(slot)
        if conn is None or conn.is_closed():
            conn = await asyncpg.connect(self._database_url, timeout=5)
            try:
                await self.spec.merge.prepare(conn)
            except BaseException:
                await conn.close()
                raise
            self._conns[slot] = conn
        return conn

    def _drop_connection(self, slot: int) -> None:
        conn = self._conns.pop(slot, None)
        if conn is not None:
            conn.terminate()

    async def _write(
        self,
        consumer: AIOKafkaConsumer,
        rows: list[Row],
        sources: list[SourceRecord],
        stop: asyncio.Event,
        slot: int = 0,
    ) -> list[DeadLetter] | None:
        """Write until it succeeds; returns dead letters of rows PostgreSQL rejects, or
        None when asked to stop before the write succeeded."""
        backoff = self._retry_initial
        while True:
            try:
                conn = await self._connection(slot)
                started = time.perf_counter()
                await self.spec.merge.write(conn, rows)
                self._metrics.batch_seconds.labels(self.spec.name).observe(
                    time.perf_counter() - started
                )
                break
            except ROW_REJECTED_ERRORS as exc:
                return await self._bisect(consumer, rows, sources, stop, slot, exc)
            except TRANSIENT_DB_ERRORS as exc:
                self._drop_connection(slot)
                self._failing.add(slot)
                self._metrics.db_errors.labels(self.spec.name).inc()
                self.health.last_error = f"{type(exc).__name__}: {exc}"
                if self.health.paused_since is None:
                    consumer.pause(*consumer.assignment())
                    self.health.paused_since = time.monotonic()
                    self._metrics.paused.labels(self.spec.name).set(1)
                    self._log.warning("database write failing; paused", error=str(exc))
                try:
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                    return None
                except TimeoutError:
                    backoff = min(backoff * 2, self._retry_max)
        self._failing.discard(slot)
        if self.health.paused_since is not None and not self._failing:
            outage = time.monotonic() - self.health.paused_since
            consumer.resume(*consumer.paused())
            self.health.paused_since = None
            self._metrics.paused.labels(self.spec.name).set(0)
            self._log.info("database back; resumed", paused_s=round(outage, 1))
        return []

    async def _bisect(
        self,
        consumer: AIOKafkaConsumer,
        rows: list[Row],
        sources: list[SourceRecord],
        stop: asyncio.Event,
        slot: int,
        exc: BaseException,
    ) -> list[DeadLetter] | None:
        """PostgreSQL rejected the batch: split it to isolate the rows it rejects."""
        if len(rows) == 1:
            self._log.warning("row rejected by the database", error=str(exc))
            return [dead_letter(sources[0], "db_rejected", str(exc), f"storage.{self.spec.name}")]
        mid = len(rows) // 2
        first = await self._write(consumer, rows[:mid], sources[:mid], stop, slot)
        if first is None:
            return None
        second = await self._write(consumer, rows[mid:], sources[mid:], stop, slot)
        return None if second is None else first + second

    async def _publish_dead(self, dead: list[DeadLetter]) -> None:
        """Send and wait: the dead letters are durable before the offsets move on."""
        while True:
            try:
                futures = [
                    await self._producer.send(topics.DEADLETTER, d.to_json(), key=d.key)
                    for d in dead
                ]
                await asyncio.gather(*futures)
                break
            except KafkaError as exc:
                self._log.warning("dead-letter publish failed; retrying", error=str(exc))
                await asyncio.sleep(1)
        for d in dead:
            self._metrics.dead_letters.labels(self.spec.name, d.reason).inc()
        self._log.info("dead letters published", reasons=dict(Counter(d.reason for d in dead)))
