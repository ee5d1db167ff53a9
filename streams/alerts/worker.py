"""The alerts worker: a thin aiokafka adapter around :class:`AlertEngine`.

Consumes ``ioc.kpi`` and ``ioc.alerts.commands``, produces ``ioc.alerts`` (key alert_id) and
``ioc.deadletter``. One batch at a time: decode, feed the engine, publish its outputs,
flush the producer, and only then commit the input offsets (at-least-once; the engine's
deterministic alert ids make a re-delivered batch produce the same records again).

Recovery after a restart: the KPI partitions are re-read from ``alerts_replay_records``
before the committed offsets with outputs discarded (rebuilds durations, rate history and
last-seen times), then the latest state of every alert from the compacted ``ioc.alerts``
topic is adopted, then live processing continues from the committed offsets. A partition
the group has no commit for starts at its end (older windows and commands are history),
and that position is committed before live processing, so a record arriving there while
the worker is down is still live after a restart.

The engine state is global (a (rule, subject) spans ``ioc.kpi`` partitions), so the worker
assigns itself every partition and runs as a single instance; the consumer group only
stores its offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic_settings import SettingsConfigDict

from events import topics
from events.brokers import producer_options, refresh_metadata
from events.errors import InvalidEventError, describe_exception
from events.health import Check, add_aiohttp_routes
from events.records import AlertCommand, AlertRecord, DeadLetter, KpiRecord
from events.settings import IocSettings
from streams.alerts.engine import AlertEngine
from streams.alerts.records import latest_by_id
from streams.checkpoint import Checkpoint, OffsetTracker, run_checkpoint
from streams.state import read_whole_topic

COMPONENT = "alerts"
log = structlog.get_logger(COMPONENT)


class AlertsSettings(IocSettings):
    """``IOC_*`` settings of the alerts worker."""

    model_config = SettingsConfigDict(env_prefix="IOC_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    alerts_group: str = "ioc-alerts"
    alerts_http_host: str = "127.0.0.1"
    alerts_http_port: int = 8094  # health + Prometheus metrics; 0 picks a free port
    # Per ioc.kpi partition, how many records before the committed offset are replayed
    # (outputs discarded) on start to rebuild durations and rate-of-change history.
    alerts_replay_records: int = 20_000
    alerts_tick_seconds: float = 1.0
    alerts_silence_grace_seconds: int = 120
    # Silence is judged at the event clock of this many seconds ago (see AlertEngine.tick).
    alerts_silence_settle_seconds: int = 5
    # Raise silence alerts from wall-clock time when no KPI record arrives at all.
    alerts_silence_wall_clock: bool = True
    alerts_max_batch: int = 5_000


async def _behind(consumer: AIOKafkaConsumer, targets: dict[TopicPartition, int]) -> bool:
    """Whether some partition's position is still before its target offset."""
    for tp, target in targets.items():
        if await consumer.position(tp) < target:
            return True
    return False


class AlertsMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.kpi_records = Counter("ioc_alerts_kpi_records", "KPI records applied", registry=r)
        self.commands = Counter(
            "ioc_alerts_commands", "operator commands by result", ["result"], registry=r
        )
        self.transitions = Counter(
            "ioc_alerts_transitions", "alert records published", ["state"], registry=r
        )
        self.deadletters = Counter(
            "ioc_alerts_dead_letters", "dead letters published", ["reason"], registry=r
        )
        self.active = Gauge("ioc_alerts_active", "active alerts", registry=r)
        self.batch_seconds = Histogram(
            "ioc_alerts_batch_seconds", "time to process and flush one batch", registry=r
        )


class AlertsWorker:
    def __init__(self, settings: AlertsSettings, engine: AlertEngine | None = None) -> None:
        self.settings = settings
        self.engine = engine or AlertEngine(
            silence_grace_seconds=settings.alerts_silence_grace_seconds,
            silence_settle_seconds=settings.alerts_silence_settle_seconds,
            silence_idle_advance=settings.alerts_silence_wall_clock,
        )
        self.metrics = AlertsMetrics()
        self.ready = asyncio.Event()
        self.http_port: int | None = None
        self._last_tick = 0.0
        self._tracker: OffsetTracker[TopicPartition] = OffsetTracker()

    # ---- lifecycle -------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        runner = await self._serve_http()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap_servers,
            **producer_options(self.settings.bootstrap_servers),
            linger_ms=5,
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=self.settings.alerts_group,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            max_poll_records=self.settings.alerts_max_batch,
        )
        await producer.start()
        await consumer.start()
        try:
            restored = await self._read_alerts()
            await self._recover(consumer, producer, restored)
            self.ready.set()
            log.info("ready", active=len(self.engine.active_alerts()))
            while not stop.is_set():
                await self._step(consumer, producer)
        finally:
            await consumer.stop()
            await producer.stop()
            await runner.cleanup()
            log.info("stopped")

    async def _read_alerts(self) -> list[AlertRecord]:
        """The latest state of every alert from the compacted ``ioc.alerts`` topic."""
        records: list[AlertRecord] = []

        def keep(_: TopicPartition, msgs: list[ConsumerRecord[bytes, bytes]]) -> None:
            for msg in msgs:
                try:
                    records.append(AlertRecord.from_json(msg.value or b""))
                except InvalidEventError as exc:
                    log.warning("bad alert record", offset=msg.offset, reason=exc.reason)

        # Up to the fetch high watermark: Tansu's end_offsets() stops a batch short.
        await read_whole_topic(self.settings.bootstrap_servers, topics.ALERTS, keep)
        return list(latest_by_id(records).values())

    async def _recover(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        restored: list[AlertRecord],
    ) -> None:
        await refresh_metadata(consumer)
        kpi_parts = [
            TopicPartition(topics.KPI, p)
            for p in sorted(consumer.partitions_for_topic(topics.KPI) or ())
        ]
        cmd_parts = [
            TopicPartition(topics.ALERT_COMMANDS, p)
            for p in sorted(consumer.partitions_for_topic(topics.ALERT_COMMANDS) or ())
        ]
        consumer.assign(kpi_parts + cmd_parts)
        starts = await consumer.beginning_offsets(kpi_parts + cmd_parts)
        ends = await consumer.end_offsets(kpi_parts + cmd_parts)
        live_from: dict[TopicPartition, int] = {}
        first_seen: dict[TopicPartition, int] = {}
        for tp in kpi_parts + cmd_parts:
            committed = await consumer.committed(tp)
            if committed is None:
                # A new group starts at the end: old commands and windows are history.
                live_from[tp] = first_seen[tp] = ends[tp]
            else:
                live_from[tp] = committed
            replay = self.settings.alerts_replay_records if tp.topic == topics.KPI else 0
            consumer.seek(tp, max(starts[tp], live_from[tp] - replay))
        if first_seen:
            # ...and that start is committed at once. Keys spread a subject's windows (and
            # commands) over partitions, so some partition may receive nothing before a
            # crash; without a commit there, the next start would take it for a new
            # group's and skip, as history, what arrived in it while the worker was down.
            await consumer.commit(first_seen)
        consumer.pause(*cmd_parts)
        begin = time.perf_counter()
        pending: list[ConsumerRecord[bytes, bytes]] = []
        replayed = 0
        while await _behind(consumer, {tp: live_from[tp] for tp in kpi_parts}):
            for tp, msgs in (await consumer.getmany(timeout_ms=500)).items():
                for msg in msgs:
                    if msg.offset >= live_from[tp]:
                        pending.append(msg)
                        continue
                    replayed += 1
                    # A bad record (or one the engine fails on) was dead-lettered when it
                    # was first consumed; raising here would make every restart fail again.
                    with contextlib.suppress(Exception):
                        self.engine.on_kpi(KpiRecord.from_json(msg.value or b""))
        self.engine.restore(restored)
        consumer.resume(*cmd_parts)
        took = time.perf_counter() - begin
        log.info(
            "recovered",
            replayed_kpi=replayed,
            replay_seconds=round(took, 2),
            replay_per_second=round(replayed / took) if took > 0 else None,
            restored_alerts=len(restored),
        )
        if pending:
            await self._publish(consumer, producer, pending, commit=False)

    async def _step(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        timeout = int(self.settings.alerts_tick_seconds * 1000)
        batches = await consumer.getmany(timeout_ms=timeout)
        msgs = [m for part in batches.values() for m in part]
        await self._publish(consumer, producer, msgs, commit=bool(msgs))

    async def _publish(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        msgs: Iterable[ConsumerRecord[bytes, bytes]],
        *,
        commit: bool,
    ) -> None:
        begin = time.perf_counter()
        outputs: list[AlertRecord] = []
        letters: list[DeadLetter] = []
        applied = 0
        for msg in msgs:
            self._apply(msg, outputs, letters)
            applied += msg.topic == topics.KPI
            if commit:
                self._tracker.advance(TopicPartition(msg.topic, msg.partition), msg.offset + 1)
        self.metrics.kpi_records.inc(applied)  # once per batch: no per-record metric locks
        # Silence is judged on a timer with the wall time (see AlertEngine.tick).
        now = time.monotonic()
        if now - self._last_tick >= self.settings.alerts_tick_seconds:
            self._last_tick = now
            outputs.extend(self.engine.tick(datetime.now(UTC)))
        # Outputs are rare (transitions only): one send per output is not a hot path.
        for rec in outputs:
            await producer.send(topics.ALERTS, rec.to_json(), key=rec.alert_id.encode())
            self.metrics.transitions.labels(rec.state).inc()
            log.info(
                "alert",
                alert_id=rec.alert_id,
                rule=rec.rule,
                subject=rec.subject,
                state=rec.state,
                alarm_level=rec.level,
                value=rec.value,
            )
        for dl in letters:
            await producer.send(topics.DEADLETTER, dl.to_json(), key=dl.key)
            self.metrics.deadletters.labels(dl.reason).inc()
            log.warning(
                "dead letter",
                reason=dl.reason,
                detail=dl.detail,
                topic=dl.source_topic,
                offset=dl.source_offset,
            )

        async def store(_: Checkpoint[TopicPartition]) -> bool:
            if outputs or letters:
                await producer.flush()  # only now are the effects durable on the broker
            return True

        if commit:
            await run_checkpoint(self._tracker, store, consumer.commit)
        else:
            await store(Checkpoint({}))
        self.metrics.active.set(len(self.engine.active_alerts()))
        if outputs or letters or commit:
            self.metrics.batch_seconds.observe(time.perf_counter() - begin)

    def _apply(
        self,
        msg: ConsumerRecord[bytes, bytes],
        outputs: list[AlertRecord],
        letters: list[DeadLetter],
    ) -> None:
        raw = msg.value or b""
        try:
            if msg.topic == topics.KPI:
                outputs.extend(self.engine.on_kpi(KpiRecord.from_json(raw)))
                return
            outcome = self.engine.on_command(AlertCommand.from_json(raw))
        except InvalidEventError as exc:
            letters.append(self._letter(msg, exc.reason, exc.detail))
            return
        except Exception as exc:  # a bug must not stop the alerts: park the record
            log.exception("record failed", topic=msg.topic, offset=msg.offset)
            letters.append(self._letter(msg, "processing_error", describe_exception(exc)))
            return
        if outcome.duplicate:
            self.metrics.commands.labels("duplicate").inc()
        elif outcome.rejection is not None:
            self.metrics.commands.labels("rejected").inc()
            rej = outcome.rejection
            letters.append(self._letter(msg, rej.reason, rej.detail))
        else:
            self.metrics.commands.labels("applied").inc()
            outputs.extend(outcome.records)

    @staticmethod
    def _letter(msg: ConsumerRecord[bytes, bytes], reason: str, detail: str) -> DeadLetter:
        return DeadLetter.of(msg, reason, detail, COMPONENT)

    # ---- health and metrics ----------------------------------------------------

    async def _serve_http(self) -> web.AppRunner:
        app = web.Application()
        add_aiohttp_routes(app, COMPONENT, self.readiness)
        app.router.add_get("/metrics", self._metrics_page)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.alerts_http_host, self.settings.alerts_http_port)
        await site.start()
        server: Any = site._server  # aiohttp exposes the bound port only here
        self.http_port = int(server.sockets[0].getsockname()[1])
        return runner

    async def readiness(self) -> list[Check]:
        """Ready once recovery is done: the KPI history replayed and every alert's state
        read back from ``ioc.alerts`` (before that, its alerts could be wrong)."""
        if not self.ready.is_set():
            return [Check("recovered", False, "replaying ioc.kpi and reading ioc.alerts")]
        active = len(self.engine.active_alerts())
        return [Check("recovered", True, f"live; {active} active alert(s)")]

    async def _metrics_page(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )
