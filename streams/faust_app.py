"""The stream worker hosted by Faust: a ``faust.App`` driving the same sans-I/O stages.

``ioc streams worker --engine faust`` runs this. Faust owns the consumer group (its
assignor and rebalance protocol, the consumer thread, flow control, the seek to committed
offsets after every rebalance) and the cadence (app timers); our code sees whole
``getmany`` batches through :class:`streams.faust_consumer.BatchConsumer` and drives:

- stage 1 (:class:`~streams.aggregator.PartitionAggregator` per source partition), and
- stage 2 (:class:`~streams.merger.KpiMerger` per partials partition),

through the very adapters of the aiokafka worker (:class:`streams.worker.EventStage`,
:class:`streams.worker.MergeStage`): the same publish, checkpoint (snapshot acked, then
offsets committed) and restore code, so exactness is the same: snapshots on the state
topic are acked before offsets are committed, and replayed offsets (Faust seeks to the
committed offset, which is at most the snapshot's applied offset + 1) are skipped.

Differences from the aiokafka worker: both stages share one consumer group (the app id,
``IOC_STREAMS_GROUP_ID``); Faust commits nothing itself (it never sees the records, so it
has no acks for them), we commit through its consumer thread.

Why not plain agents (``@app.agent`` over the topics): every record would pay Faust's
per-record hand-off (tasks/futures in the drain loop, a ``Message`` and an ``Event``, the
conductor), which measured an order of magnitude slower here (docs/streams.md), and
Faust acks/commits records when the agent moves on, not when our snapshot is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Mapping, Set
from pathlib import Path
from typing import Any, cast

import faust
import structlog
from aiokafka import TopicPartition
from faust.types import TP

from events.topics import DOMAINS
from streams.faust_consumer import BatchConsumer, BatchTransport
from streams.kpis import KpiIndex
from streams.observability import PhaseTimer
from streams.settings import StreamsSettings
from streams.worker import Worker

log = structlog.get_logger("streams")
# A loop phase at least this long is logged (phase.slow).
SLOW_PHASE_S = 0.5

# Period of the app timer that publishes, checkpoints and flushes when no batch arrives.
TICK_S = 0.1


class StreamsApp(faust.App):
    """A ``faust.App`` whose transport hands batches to :attr:`batch_handler`."""

    batch_handler: FaustStreamsHost | None = None

    def _new_transport(self) -> Any:
        return BatchTransport(self.conf.broker_consumer, self)


class _FaustConsumerView:
    """The part of the aiokafka consumer API the stages call, served by Faust's consumer."""

    def __init__(self, app: StreamsApp) -> None:
        self._app = app

    @property
    def _consumer(self) -> BatchConsumer:
        return cast(BatchConsumer, self._app.consumer)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        # Nothing to do: after every rebalance Faust seeks each assigned partition to its
        # committed offset, which is at most the restored applied offset + 1 (offsets are
        # committed only after the snapshot); the replayed records are skipped.
        return None

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not await self._consumer.commit_offsets(offsets):
            log.warning("faust.commit_skipped", partitions=len(offsets))

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        n = self._consumer.topic_partitions(topic)
        return set(range(n)) if n else None

    def highwater(self, tp: TopicPartition) -> int | None:
        high: int | None = self._consumer.highwater(tp)
        return high

    def assignment(self) -> Set[TP]:
        assigned: Set[TP] = self._consumer.assignment()
        return assigned

    async def rewind(self, tp: TopicPartition, offset: int) -> None:
        # A real seek (unlike ``seek`` above): after a rollback the stage must read this
        # partition again from its durable state, not from where the fetcher is.
        await self._consumer.seek(TP(tp.topic, tp.partition), offset)


class FaustStreamsHost(Worker):
    """The worker with its stages driven by a Faust app instead of two aiokafka loops."""

    engine = "faust"

    def __init__(self, settings: StreamsSettings, index: KpiIndex | None = None) -> None:
        super().__init__(settings, index)
        # Faust wants a data directory; with the memory store it stays empty. One per
        # group, reused by restarts (a SIGKILLed worker leaves nothing new behind).
        datadir = Path(tempfile.gettempdir()) / f"ioc-faust-{settings.group_id}"
        self.app = _new_app(settings, str(datadir))
        self.app.batch_handler = self
        view = _FaustConsumerView(self.app)
        # The stages' own aiokafka consumers are never started: Faust's consumer serves.
        self._unused = [self.events.consumer, self.merge.consumer]
        self.events.consumer = view
        self.merge.consumer = view
        self.events.rewind = view.rewind  # type: ignore[method-assign]
        # One lock: batches, timers and rebalance callbacks never interleave mid-step.
        self._lock = asyncio.Lock()
        self._closing = False
        now = time.monotonic()
        self._next_publish = self._next_checkpoint = now
        self._next_flush = self._next_merge_checkpoint = now
        self._catching_up = False
        self._last_batch = now
        self._merge_dirty = False  # input or output since the last stage-2 snapshot
        self._spent = PhaseTimer(self.metrics.phase_seconds, SLOW_PHASE_S)

    # -- called by BatchConsumer --------------------------------------------------------

    async def on_assigned(self, assigned: Set[TP]) -> None:
        async with self._lock:
            partials = self.settings.partials_topic
            tps = {TopicPartition(tp.topic, tp.partition) for tp in assigned}
            try:
                await self.events._restore({tp for tp in tps if tp.topic != partials})
                await self.merge._restore({tp for tp in tps if tp.topic == partials})
            except Exception as exc:
                # Never run partitions without their state: crash the app, run() raises.
                log.error("restore.failed", error=str(exc))
                await self.app.crash(exc)
                raise

    async def on_revoked(self, revoked: Set[TP]) -> None:
        async with self._lock:
            tps = {TopicPartition(tp.topic, tp.partition) for tp in revoked}
            await self.events._revoke(tps)
            await self.merge._revoke(tps)

    async def on_batch(self, records: Mapping[Any, list[Any]]) -> None:
        async with self._lock:
            if self._closing:
                return  # after the final checkpoint: the next owner reads these again
            started = time.perf_counter()
            await self._apply(records)
            self._spent("apply", started, records=sum(len(r) for r in records.values()))
            await self._tick()

    # -- batch application (the loop bodies of EventStage.run / MergeStage.run) ----------

    async def _apply(self, records: Mapping[Any, list[Any]]) -> None:
        s = self.settings
        total = 0
        for tp, recs in records.items():
            if tp.topic == s.partials_topic:
                # not ours (any more): its owner reads it from the commit
                if self.merge.apply(tp, recs):
                    self._merge_dirty = True
                continue
            if await self.events.apply(tp, recs):
                total += len(recs)
        # A large batch means a backlog: then partials go out with the checkpoints only.
        self._catching_up = total >= s.max_poll_records // 2
        self._last_batch = time.monotonic()

    async def _tick(self) -> None:
        s = self.settings
        now = time.monotonic()
        started = time.perf_counter()
        if now >= self._next_checkpoint:
            await self.events.checkpoint()
            self.events._lag()
            self._next_checkpoint = now + s.checkpoint_interval_s
            self._next_publish = now + s.publish_interval_s
            self._spent("checkpoint", started)
        elif now >= self._next_publish and not self._catching_up:
            await self.events.publish()
            self._next_publish = now + s.publish_interval_s
            self._spent("publish", started)
        if now >= self._next_flush:
            started = time.perf_counter()
            # Snapshots only when something changed: an idle merger stays quiet.
            snapshot = self._merge_dirty and now >= self._next_merge_checkpoint
            emitted = await self.merge.flush(force_snapshot=snapshot)
            if emitted:
                self._merge_dirty = True
            if snapshot:
                self._merge_dirty = False
                self._next_merge_checkpoint = now + s.checkpoint_interval_s
            self._next_flush = now + s.flush_interval_s
            self._spent("flush", started, records=emitted, snapshot=snapshot)

    async def on_timer(self) -> None:
        """App timer: publish/checkpoint/flush also while no batch arrives."""
        async with self._lock:
            if self._closing:
                return
            if time.monotonic() - self._last_batch > self.settings.publish_interval_s:
                self._catching_up = False  # no backlog any more: live cadence again
            await self._tick()

    # -- lifecycle ------------------------------------------------------------------------

    async def _drive(self, stop: asyncio.Event) -> None:
        for unused in self._unused:
            await unused.stop()  # never started; closed so they do not warn
        try:
            await self.app.start()
            while not (stop.is_set() or self.app.crashed):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
            if self.app.crashed:
                raise RuntimeError(f"faust app crashed: {self.app.crash_reason!r}")
            async with self._lock:
                # Final checkpoint while we still own the partitions.
                self._closing = True
                await self.events.checkpoint()
                await self.merge.flush(force_snapshot=True)
        finally:
            with contextlib.suppress(Exception):
                await self.app.stop()


def _new_app(settings: StreamsSettings, datadir: str) -> StreamsApp:
    s = settings
    app = StreamsApp(
        s.group_id,
        broker=f"kafka://{s.bootstrap_servers}",
        store="memory://",
        datadir=datadir,
        web_enabled=False,
        # Tansu-friendly group timings (measured: a worker joins in ~5 s with these).
        broker_session_timeout=s.session_timeout_ms / 1000,
        broker_rebalance_timeout=s.rebalance_timeout_ms / 1000,
        broker_heartbeat_interval=s.heartbeat_interval_ms / 1000,
        broker_max_poll_records=s.max_poll_records,
        consumer_max_fetch_size=s.max_partition_fetch_bytes,
        consumer_auto_offset_reset="earliest",
        # Our topics are created by the producers and streams.state.ensure_topics; Tansu's
        # DescribeConfigs returns nothing, so Faust must not manage topics itself.
        topic_allow_declare=False,
        topic_disable_leader=True,
        stream_wait_empty=False,
        stream_processing_timeout=s.faust_stall_warning_s,
    )
    # Subscribe through Faust's conductor (no agent: batches never reach a stream).
    topics = [s.events_topic_prefix + d for d in DOMAINS] + [s.partials_topic]
    app.topics.add(app.topic(*topics, value_serializer="raw"))

    async def tick() -> None:
        handler = app.batch_handler
        if handler is not None:
            await handler.on_timer()

    app.timer(TICK_S)(tick)
    # A tick that waits for a checkpoint's acks outlasts the 0.1 s period; mode then logs
    # "Timer ... is overlapping" (and "woke up too late") at warning level every time, a
    # line a second in the demo's output. Both are expected here and harmless: the next
    # tick simply starts late. Real errors of the timers are still logged.
    logging.getLogger("mode.timers").setLevel(logging.ERROR)
    return app
