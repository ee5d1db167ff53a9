"""Kafka side of the push server: consume ``ioc.kpi`` and ``ioc.alerts``, produce operator
commands to ``ioc.alerts.commands`` and unusable records to ``ioc.deadletter``.

Stateless on purpose: no consumer group, the partitions are assigned manually (KPIs from
``IOC_WS_KPI_REWIND_S`` back, alerts from the beginning so the open ones are known),
nothing is committed.
Several servers behind a load balancer each see every record.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from events import topics
from events.brokers import producer_options
from events.errors import InvalidEventError
from events.records import AlertCommand, AlertRecord, DeadLetter, KpiRecord
from ws.server import PushServer

log = structlog.get_logger("ws.bridge")


class KafkaBridge:
    def __init__(self, server: PushServer, bootstrap_servers: str) -> None:
        self._server = server
        self._bootstrap = bootstrap_servers
        self._consumer: Any = None
        self._producer: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self._server.settings
        options = await asyncio.to_thread(producer_options, self._bootstrap)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap, **options, linger_ms=0, client_id="ioc-ws"
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            client_id="ioc-ws",
            fetch_max_wait_ms=s.ws_consumer_poll_ms,
        )
        await self._consumer.start()
        parts: list[TopicPartition] = []
        for topic in (topics.KPI, topics.ALERTS):
            for p in sorted(await self._wait_partitions(topic)):
                parts.append(TopicPartition(topic, p))
        self._consumer.assign(parts)
        kpi_parts = [tp for tp in parts if tp.topic == topics.KPI]
        alert_parts = [tp for tp in parts if tp.topic == topics.ALERTS]
        await self._seek_kpis(kpi_parts, s.ws_kpi_rewind_s)
        if s.ws_alerts_from_beginning:
            await self._consumer.seek_to_beginning(*alert_parts)
        else:
            await self._consumer.seek_to_end(*alert_parts)
        # Resolve the lazy seeks now, so "ready" means "everything from here on is seen".
        for tp in parts:
            await self._consumer.position(tp)
        self._server.consumer_ready = True
        self._task = asyncio.create_task(self._consume())

    async def _seek_kpis(self, parts: list[TopicPartition], rewind_s: float) -> None:
        """``ioc.kpi`` from ``rewind_s`` back (what a restarted server missed while down),
        from the end for a partition with nothing newer or a broker that cannot tell."""
        found: dict[TopicPartition, Any] = {}
        if rewind_s > 0:
            since_ms = int((time.time() - rewind_s) * 1000)
            try:
                found = await self._consumer.offsets_for_times({tp: since_ms for tp in parts})
            except Exception as exc:  # a broker without ListOffsets by time
                log.warning("kpi_rewind_unavailable", error=str(exc))
        rest = []
        for tp in parts:
            at = found.get(tp)
            if at is None:
                rest.append(tp)
            else:
                self._consumer.seek(tp, at.offset)
        if rest:
            await self._consumer.seek_to_end(*rest)

    async def _wait_partitions(self, topic: str) -> set[int]:
        for _ in range(100):
            found = self._consumer.partitions_for_topic(topic)
            if found:
                return set(found)
            await self._consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"topic {topic} has no partitions (is the broker set up?)")

    async def _consume(self) -> None:
        poll = self._server.settings.ws_consumer_poll_ms
        while True:
            batches = await self._consumer.getmany(timeout_ms=poll, max_records=5000)
            kpis: list[KpiRecord] = []
            alerts: list[AlertRecord] = []
            dead: list[DeadLetter] = []
            for tp, records in batches.items():
                for msg in records:
                    try:
                        if tp.topic == topics.KPI:
                            kpis.append(KpiRecord.from_json(msg.value))
                        else:
                            alerts.append(AlertRecord.from_json(msg.value))
                    except InvalidEventError as exc:
                        dead.append(DeadLetter.of(msg, exc.reason, exc.detail, "ws"))
            if kpis:
                self._server.on_kpis(kpis)
            if alerts:
                self._server.on_alerts(alerts)
            if dead:
                log.warning("dead_letters", count=len(dead), reason=dead[0].reason)
                for letter in dead:
                    await self._producer.send(topics.DEADLETTER, letter.to_json(), key=letter.key)

    async def send_command(self, command: AlertCommand) -> None:
        await self._producer.send_and_wait(
            topics.ALERT_COMMANDS, command.to_json(), key=command.alert_id.encode()
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
