"""The stream worker: thin aiokafka adapters around the sans-I/O stages.

Why aiokafka and not Faust agents: the per-record cost of Faust's consumer hand-off
(a task and futures per record, the Event object, the conductor) caps a Faust agent at
a few thousand events/s on this machine (see docs/streams.md and
``benchmarks/bench_streams.py``, which measures both in the same run). The adapters here
poll batches with ``getmany`` and hand whole batches to plain classes, so the only
per-event work is decoding, validating and folding into a pane.

Stage 1 (:class:`EventStage`, group ``<group_id>``): consumes every ``ioc.events.*``
topic; one :class:`~streams.aggregator.PartitionAggregator` per source partition.
Every ``publish_interval_s`` it publishes changed pane partials and watermarks to the
partials topic; every ``checkpoint_interval_s`` it writes each partition's snapshot to the
state topic, waits for the broker's acks, and only then commits the source offsets.

Stage 2 (:class:`MergeStage`, group ``<group_id>-merge``): consumes the partials
topic; one :class:`~streams.merger.KpiMerger` per partials partition. Every
``flush_interval_s`` it emits due KPI records; every ``checkpoint_interval_s`` (when
something changed) it writes its snapshot incrementally (changed pane cells, tombstones,
one meta record with windows, watermarks and position), waits for the acks, then
commits. A window emits at most once per flush, so a restored merger raises every
revision by the flushes of one checkpoint interval (+1): revisions keep growing across
crashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaProducer, TopicPartition

from events.brokers import producer_options
from events.errors import describe_exception
from events.health import Check, lag_check
from events.records import DeadLetter
from events.topics import DOMAINS
from streams.adapters import (
    CachedPartitioner,
    RebalanceListener,
    refetch,
    stage_consumer,
    window_failure,
)
from streams.aggregator import COMPONENT, PartitionAggregator
from streams.checkpoint import Checkpoint, OffsetTracker, run_checkpoint
from streams.gc_pauses import GcPauses, HeapSettler
from streams.kpis import KpiIndex
from streams.merger import KpiMerger
from streams.observability import StreamsMetrics, serve
from streams.settings import StreamsSettings
from streams.state import ensure_topics, load_snapshots
from streams.wire import (
    WATERMARK_KEY,
    decode_internal,
    encode_pane,
    encode_watermarks,
    is_ids_key,
    pane_key,
    parse_ids_key,
    stage1_ids_key,
    stage1_ids_prefix,
    stage1_state_key,
    stage2_cell_key,
    stage2_meta_key,
    stage2_prefix,
)

log = structlog.get_logger("streams")


class EventStage:
    """Stage 1: events -> pane partials, exact under crashes."""

    def __init__(
        self,
        settings: StreamsSettings,
        index: KpiIndex,
        producer: AIOKafkaProducer,
        metrics: StreamsMetrics,
    ) -> None:
        self.settings = settings
        self.index = index
        self.config = settings.engine_config()
        self.producer = producer
        self.metrics = metrics
        self.consumer = stage_consumer(settings, settings.group_id)
        self.aggs: dict[TopicPartition, PartitionAggregator] = {}
        self.pending: list[asyncio.Future[Any]] = []
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        # Records behind the high watermark per source partition, as of the last checkpoint
        # (readiness: caught up within IOC_STREAMS_READY_MAX_LAG).
        self.lags: dict[TopicPartition, int] = {}
        # Input counters per topic, labelled once (a label lookup per batch costs a lock).
        self._input: dict[str, Any] = {}
        self.after_checkpoint: Callable[[], None] | None = None  # HeapSettler.settle

    async def _restore(self, assigned: set[TopicPartition]) -> None:
        snaps = await load_snapshots(self.settings, b"events|", raw=is_ids_key)
        restored = 0
        for tp in sorted(assigned):
            agg = PartitionAggregator(tp.topic, tp.partition, self.index, self.config)
            snap = snaps.get(stage1_state_key(agg.source))
            if snap is not None:
                prefix = stage1_ids_prefix(agg.source)
                deltas = {
                    parse_ids_key(k, prefix): v for k, v in snaps.items() if k.startswith(prefix)
                }
                agg.restore(snap, deltas)
                restored += 1
                # Resume right after the state; offsets before are in it already.
                self.tracker.restore(tp, agg.applied + 1)
                self.consumer.seek(tp, agg.applied + 1)
            self.aggs[tp] = agg
        log.info(
            "stage1.assigned",
            partitions=len(assigned),
            restored=restored,
            identities=sum(len(a.seen) for a in self.aggs.values()),
        )

    async def _revoke(self, revoked: set[TopicPartition]) -> None:
        with contextlib.suppress(Exception):
            await self.checkpoint(only=revoked)
        for tp in revoked:
            self.aggs.pop(tp, None)
            self.lags.pop(tp, None)
        self.tracker.forget(revoked)

    async def publish(self) -> None:
        """Send changed pane partials and the watermarks to the second stage."""
        s = self.settings
        send = self.producer.send
        for agg in self.aggs.values():
            for u in agg.take_changes():
                self.pending.append(await send(s.partials_topic, encode_pane(u), key=pane_key(u)))
        if self.aggs:
            now = time.monotonic()
            counts = self.consumer.partitions_for_topic
            reports = [agg.report(now, len(counts(agg.topic) or ())) for agg in self.aggs.values()]
            body = encode_watermarks(reports)
            for part in range(s.partials_partitions):
                self.pending.append(
                    await send(s.partials_topic, body, key=WATERMARK_KEY, partition=part)
                )
            for r in reports:
                if r.watermark_ms is not None:
                    self.metrics.watermark.labels(r.source).set(r.watermark_ms / 1000)

    async def checkpoint(self, only: set[TopicPartition] | None = None) -> None:
        """Publish, store the snapshots durably, then commit the source offsets
        (:mod:`streams.checkpoint`)."""
        await self.publish()

        async def store(cp: Checkpoint[TopicPartition]) -> bool:
            send = self.producer.send
            state_topic = self.settings.state_topic
            stored: list[tuple[PartitionAggregator, bytes]] = []
            for tp in cp.offsets:
                agg = self.aggs[tp]
                for pane, seq, body in agg.take_id_deltas():
                    key = stage1_ids_key(agg.source, pane, seq)
                    self.pending.append(await send(state_topic, body, key=key))
                snap = orjson.dumps(agg.snapshot())
                self.pending.append(await send(state_topic, snap, key=stage1_state_key(agg.source)))
                stored.append((agg, snap))
            pending, self.pending = self.pending, []
            if pending:
                await asyncio.gather(*pending)
            for agg, snap in stored:
                agg.mark_durable(snap)
            return True

        if await run_checkpoint(self.tracker, store, self.consumer.commit, only=only):
            self.metrics.checkpoints.inc()
        if self.after_checkpoint is not None:
            self.after_checkpoint()

    def _refetch(self, tp: TopicPartition, offset: int) -> None:
        refetch(self.consumer, tp, offset)

    async def rewind(self, tp: TopicPartition, offset: int) -> None:
        """Fetch ``tp`` again from ``offset`` (after a rollback; the Faust host overrides)."""
        self._refetch(tp, offset)

    async def apply(self, tp: TopicPartition, records: list[Any]) -> bool:
        """Fold a fetched batch of a source partition into its aggregator and send its dead
        letters; False if the partition is not (or not yet) ours."""
        agg = self.aggs.get(tp)
        if agg is None:
            return False
        metrics = self.metrics
        counter = self._input.get(tp.topic)
        if counter is None:
            domain = tp.topic.removeprefix(self.settings.events_topic_prefix)
            counter = self._input[tp.topic] = metrics.input_events.labels(domain)
        counter.inc(len(records))
        before, skipped, duplicates = agg.processed, agg.skipped, agg.duplicates
        fallbacks = agg.fold_fallbacks
        for dl in agg.process(records):
            metrics.dead_letters.labels(dl.reason).inc()
            self.pending.append(
                await self.producer.send(self.settings.deadletter_topic, dl.to_json(), key=dl.key)
            )
        metrics.events.inc(agg.processed - before)
        metrics.replayed.inc(agg.skipped - skipped)
        metrics.duplicates.inc(agg.duplicates - duplicates)
        metrics.fold_fallbacks.inc(agg.fold_fallbacks - fallbacks)
        # After a rollback this moves back: no checkpoint covers what is fetched again.
        if agg.applied >= 0:
            self.tracker.advance(tp, agg.applied + 1)
        else:
            self.tracker.forget([tp])
        if agg.rewind_to is not None:
            offset, agg.rewind_to = agg.rewind_to, None
            metrics.rollbacks.inc()
            log.error("stage1.rolled_back", source=agg.source, refetch_from=offset)
            await self.rewind(tp, offset)
        return True

    def _lag(self) -> None:
        for tp, agg in self.aggs.items():
            high = self.consumer.highwater(tp)
            if high is not None:
                lag = self.lags[tp] = max(0, high - agg.applied - 1)
                self.metrics.lag.labels(agg.source).set(lag)

    @property
    def max_lag(self) -> int | None:
        """The largest lag measured over this worker's source partitions (None: none yet)."""
        return max(self.lags.values(), default=None)

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        listener = RebalanceListener(self._revoke, self._restore, self.consumer)
        self.consumer.subscribe([s.events_topic_prefix + d for d in DOMAINS], listener=listener)
        await self.consumer.start()
        next_publish = next_checkpoint = time.monotonic()
        try:
            while not stop.is_set():
                batch = await self.consumer.getmany(timeout_ms=100, max_records=s.max_poll_records)
                listener.check()
                # A full batch means a backlog: then partials go out with the checkpoints
                # only (each pane is sent once per second, not once per quarter second).
                catching_up = sum(len(r) for r in batch.values()) >= s.max_poll_records // 2
                for tp, records in batch.items():
                    if not await self.apply(tp, records):
                        # Fetched while its state is still being restored (the rebalance
                        # callback runs concurrently): fetch these again afterwards.
                        self._refetch(tp, records[0].offset)
                now = time.monotonic()
                if now >= next_checkpoint:
                    await self.checkpoint()
                    self._lag()
                    next_checkpoint = now + s.checkpoint_interval_s
                    next_publish = now + s.publish_interval_s
                elif now >= next_publish and not catching_up:
                    await self.publish()
                    next_publish = now + s.publish_interval_s
            await self.checkpoint()
        finally:
            await self.consumer.stop()


class MergeStage:
    """Stage 2: pane partials of every source partition -> KPI records on ``ioc.kpi``."""

    def __init__(
        self,
        settings: StreamsSettings,
        index: KpiIndex,
        producer: AIOKafkaProducer,
        metrics: StreamsMetrics,
    ) -> None:
        self.settings = settings
        self.index = index
        self.config = settings.engine_config()
        self.producer = producer
        self.metrics = metrics
        self.group = f"{settings.group_id}-merge"
        self.consumer = stage_consumer(settings, self.group)
        self.mergers: dict[TopicPartition, KpiMerger] = {}
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self.dead: list[DeadLetter] = []  # sent with the next flush
        self.on_records: Callable[[list[Any]], None] | None = None  # hook for benchmarks
        # Snapshots go out every checkpoint interval; a window emits at most once per
        # flush, so after a crash revisions jump by the flushes of one interval (+1).
        self._bump = int(settings.checkpoint_interval_s / settings.flush_interval_s) + 2

    async def _restore(self, assigned: set[TopicPartition]) -> None:
        snaps = await load_snapshots(self.settings, f"merge|{self.group}|".encode())
        for tp in sorted(assigned):
            merger = KpiMerger(self.index, self.config)
            meta = snaps.get(stage2_meta_key(self.group, tp.partition))
            if meta is not None:
                merger.restore_meta(meta)
                prefix = stage2_prefix(self.group, tp.partition) + b"cell|"
                for key, state in snaps.items():
                    if key.startswith(prefix):
                        kpi, scope, pane = key[len(prefix) :].decode().rsplit("|", 2)
                        merger.restore_cell(kpi, scope, int(pane), state)
                # Flushes after the last snapshot may have emitted (at most once per
                # window each) before the crash: the bump keeps later revisions above.
                merger.bump_revisions(int(meta["revision_bump"]))
                self.consumer.seek(tp, int(meta["position"]))
                self.tracker.restore(tp, int(meta["position"]))
            self.mergers[tp] = merger
        log.info("stage2.assigned", partitions=len(assigned))

    async def _revoke(self, revoked: set[TopicPartition]) -> None:
        with contextlib.suppress(Exception):
            await self.flush(only=revoked, force_snapshot=True)
        for tp in revoked:
            self.mergers.pop(tp, None)
        self.tracker.forget(revoked)

    async def flush(
        self, only: set[TopicPartition] | None = None, force_snapshot: bool = False
    ) -> int:
        """Emit due records; with ``force_snapshot`` also store the state and commit.
        Returns the number of records emitted."""
        pending: list[asyncio.Future[Any]] = []
        emitted: list[Any] = []
        now = time.monotonic()
        dead, self.dead = self.dead, []
        mine = [(tp, m) for tp, m in self.mergers.items() if only is None or tp in only]
        for tp, merger in mine:
            records = merger.flush(now)
            dead.extend(window_failure(tp, wk, why) for wk, why in merger.take_failures())
            for rec in records:
                pending.append(
                    await self.producer.send(
                        self.settings.kpi_topic, rec.to_json(), key=rec.key.encode()
                    )
                )
            emitted.extend(records)
        for dl in dead:
            self.metrics.dead_letters.labels(dl.reason).inc()
            pending.append(
                await self.producer.send(self.settings.deadletter_topic, dl.to_json(), key=dl.key)
            )

        async def store(cp: Checkpoint[TopicPartition]) -> bool:
            # Every merger with a position writes its snapshot, also when its input did
            # not move (its windows may have: revisions, finals), then all is acked.
            send = self.producer.send
            state_topic = self.settings.state_topic
            for tp, merger in mine:
                pos = self.tracker.position.get(tp)
                if pos is None:
                    continue
                for (kpi, scope, pane), state in merger.take_cell_changes():
                    key = stage2_cell_key(self.group, tp.partition, kpi, scope, pane)
                    value = orjson.dumps(state) if state is not None else None
                    pending.append(await send(state_topic, value, key=key))
                meta = {**merger.snapshot_meta(), "position": pos, "revision_bump": self._bump}
                key = stage2_meta_key(self.group, tp.partition)
                pending.append(await send(state_topic, orjson.dumps(meta), key=key))
            if pending:
                await asyncio.gather(*pending)
            return True

        if force_snapshot:
            await run_checkpoint(self.tracker, store, self.consumer.commit, only=only)
        elif pending:
            await asyncio.gather(*pending)
        if emitted:
            self.metrics.kpi_records.inc(len(emitted))
            if self.on_records is not None:
                self.on_records(emitted)
        return len(emitted)

    def apply(self, tp: TopicPartition, records: list[Any]) -> bool:
        """Feed a fetched batch of a partials partition to its merger; False if the
        partition is not (or not yet) ours."""
        merger = self.mergers.get(tp)
        if merger is None:
            return False
        for rec in records:
            try:
                item = decode_internal(rec.value or b"")
                if isinstance(item, list):
                    for report in item:
                        merger.apply_watermark(report)
                else:
                    merger.apply_pane(item)
            except Exception as exc:
                # Each update is applied whole or not at all: this one alone is lost.
                self.dead.append(
                    DeadLetter.of(rec, "processing_error", describe_exception(exc), COMPONENT)
                )
        self.tracker.advance(tp, records[-1].offset + 1)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        listener = RebalanceListener(self._revoke, self._restore, self.consumer)
        self.consumer.subscribe([s.partials_topic], listener=listener)
        await self.consumer.start()
        next_flush = next_checkpoint = time.monotonic()
        dirty = False  # input or output since the last snapshot
        try:
            while not stop.is_set():
                timeout = max(0, int((next_flush - time.monotonic()) * 1000))
                batch = await self.consumer.getmany(timeout_ms=timeout, max_records=50_000)
                listener.check()
                for tp, records in batch.items():
                    if not self.apply(tp, records):
                        refetch(self.consumer, tp, records[0].offset)
                        continue
                    dirty = True
                now = time.monotonic()
                if now >= next_flush:
                    # Snapshots only when something changed: an idle merger stays quiet.
                    snapshot = dirty and now >= next_checkpoint
                    if await self.flush(force_snapshot=snapshot):
                        dirty = True
                    if snapshot:
                        dirty = False
                        next_checkpoint = now + s.checkpoint_interval_s
                    next_flush = now + s.flush_interval_s
            await self.flush(force_snapshot=True)
        finally:
            await self.consumer.stop()


class Worker:
    """Both stages, one producer, and the health/metrics endpoint.

    :meth:`run` sets up and tears down what every engine shares; :meth:`_drive` runs the
    stages (here: one aiokafka consumer loop per stage; ``streams.faust_app`` overrides it).
    """

    engine = "aiokafka"

    def __init__(self, settings: StreamsSettings, index: KpiIndex | None = None) -> None:
        self.settings = settings
        self.index = index or KpiIndex.from_catalogue()
        self.metrics = StreamsMetrics()
        self.gc_pauses = GcPauses(self.metrics.registry)
        self.heap = HeapSettler()
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            **producer_options(settings.bootstrap_servers),
            linger_ms=5,
            max_batch_size=1024 * 1024,
            partitioner=CachedPartitioner(),
            max_request_size=8 * 1024 * 1024,
        )
        self.events = EventStage(settings, self.index, self.producer, self.metrics)
        self.merge = MergeStage(settings, self.index, self.producer, self.metrics)
        self.events.after_checkpoint = self.heap.settle

    def progress(self) -> dict[str, Any]:
        """What the worker holds now (the terminal's progress line)."""
        return {
            "engine": self.engine,
            "source_partitions": sorted(a.source for a in self.events.aggs.values()),
            "merge_partitions": sorted(tp.partition for tp in self.merge.mergers),
            "events": sum(a.processed for a in self.events.aggs.values()),
        }

    async def readiness(self) -> list[Check]:
        """Assigned, restored (a stage holds the state of every partition it was given),
        and caught up within ``ready_max_lag`` records (``/readyz``)."""
        assigned: set[tuple[str, int]] = set()
        for consumer in {id(c): c for c in (self.events.consumer, self.merge.consumer)}.values():
            with contextlib.suppress(Exception):  # not started yet: nothing assigned
                assigned |= {(tp.topic, tp.partition) for tp in consumer.assignment()}
        held = {(tp.topic, tp.partition) for tp in (*self.events.aggs, *self.merge.mergers)}
        missing = assigned - held
        return [
            Check("assigned", bool(assigned), f"{len(assigned)} partition(s) assigned"),
            Check(
                "restored",
                bool(assigned) and not missing,
                f"state of {len(assigned & held)}/{len(assigned)} partition(s) restored",
            ),
            lag_check(self.events.max_lag, self.settings.ready_max_lag),
        ]

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        # What exists now (modules, catalogue, settings) lives as long as the process:
        # out of the collector's sight. Each full collection otherwise walked all of it
        # again while the hot path allocates its per-batch dicts and tuples; freezing cut
        # the worker's CPU per event by about a quarter in bench_streams.
        gc.collect()
        gc.freeze()
        await ensure_topics(s)
        await self.producer.start()
        runner = None
        if s.http_port:
            runner = await serve(s.http_host, s.http_port, self.metrics, self.readiness)
        log.info(
            "worker.started",
            engine=self.engine,
            bootstrap=s.bootstrap_servers,
            http_port=s.http_port,
        )
        self.gc_pauses.install()
        try:
            await self._drive(stop)
        finally:
            self.gc_pauses.uninstall()
            await self.producer.stop()
            if runner is not None:
                await runner.cleanup()

    async def _drive(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self.events.run(stop)),
            asyncio.create_task(self.merge.run(stop)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        stop.set()
        await asyncio.gather(*tasks)
