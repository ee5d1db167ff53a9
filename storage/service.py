"""The storage process: migrations, the three sinks, the maintenance job, health/metrics.

``python -m storage`` runs it (``ioc up`` starts it as the ``storage`` component).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import asyncpg
import orjson
import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from events import topics
from events.brokers import producer_options
from events.errors import ServiceError
from storage import rows, writers
from storage.metrics import SinkMetrics
from storage.migrate import migrate
from storage.reconcile import reconcile_alerts
from storage.retention import RetentionPolicy, run_maintenance
from storage.settings import StorageSettings
from storage.sink import TRANSIENT_DB_ERRORS, UNREACHABLE_DB_ERRORS, Sink, SinkSpec

log = structlog.get_logger(__name__)


def sink_specs(settings: StorageSettings) -> list[SinkSpec]:
    decode_row = rows.event_row_decoder()
    return [
        SinkSpec(
            name="raw",
            topics=tuple(topics.events_topic(d) for d in topics.DOMAINS),
            group_id=settings.raw_group_id,
            merge=writers.RAW_EVENTS,
            prepare=partial(
                rows.event_rows,
                decode_row=decode_row,
                component="storage.raw",
                max_future_skew_s=settings.max_future_skew_s,
            ),
            batch_rows=settings.sink_raw_batch_rows,
            batch_ms=settings.sink_raw_batch_ms,
            writers=settings.sink_raw_writers,
            writer_key=rows.event_writer_key,
        ),
        SinkSpec(
            name="kpi",
            topics=(topics.KPI,),
            group_id=settings.kpi_group_id,
            merge=writers.KPI_WINDOWS,
            prepare=partial(rows.kpi_rows, component="storage.kpi"),
            batch_rows=settings.sink_record_batch_rows,
            batch_ms=settings.sink_record_batch_ms,
        ),
        SinkSpec(
            name="alerts",
            topics=(topics.ALERTS,),
            group_id=settings.alerts_group_id,
            merge=writers.ALERTS,
            prepare=partial(rows.alert_rows, component="storage.alerts"),
            batch_rows=settings.sink_record_batch_rows,
            batch_ms=settings.sink_record_batch_ms,
        ),
    ]


async def migrate_when_reachable(database_url: str, stop: asyncio.Event) -> None:
    """Apply migrations, waiting (with backoff) while the database is not reachable yet."""
    delay = 0.5
    while True:
        try:
            conn = await asyncpg.connect(database_url, timeout=5)
        except UNREACHABLE_DB_ERRORS as exc:
            log.warning("database not reachable; waiting", error=str(exc), retry_s=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            if stop.is_set():
                raise ServiceError("stopped before the database was reachable") from exc
            delay = min(delay * 2, 10.0)
            continue
        try:
            applied = await migrate(conn)
        finally:
            await conn.close()
        log.info("schema ready", applied=[f"{m.version:04d}_{m.name}" for m in applied])
        return


async def maintenance_loop(settings: StorageSettings, stop: asyncio.Event) -> None:
    policy = RetentionPolicy.from_days(
        settings.retention_events_days, settings.retention_kpi_days, settings.retention_alerts_days
    )
    while not stop.is_set():
        since = datetime.now(UTC) - timedelta(hours=settings.rollup_lookback_hours)
        try:
            conn = await asyncpg.connect(settings.database_url, timeout=5)
            try:
                report = await run_maintenance(conn, policy, rollup_since=since)
            finally:
                await conn.close()
            log.info(
                "maintenance done",
                dropped_chunks=report.dropped_chunks,
                rollup_rows=report.rollup_rows,
            )
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("maintenance failed; next run later", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.maintenance_interval_s)


def health_app(sinks: Sequence[Sink], registry: CollectorRegistry) -> web.Application:
    async def health(_request: web.Request) -> web.Response:
        body: dict[str, Any] = {s.spec.name: s.health.as_dict() for s in sinks}
        ok = all(s.health.running and s.health.paused_since is None for s in sinks)
        return web.Response(
            body=orjson.dumps({"ok": ok, "sinks": body}),
            status=200 if ok else 503,
            content_type="application/json",
        )

    async def metrics(_request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


async def run_storage(settings: StorageSettings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set; sinks finish their batch in flight first."""
    await migrate_when_reachable(settings.database_url, stop)
    registry = CollectorRegistry()
    metrics = SinkMetrics.create(registry)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        **producer_options(settings.bootstrap_servers),
    )
    await producer.start()
    # Before the sinks: alerts the database holds open but the alert topic forgot
    # (a restarted in-memory broker) are cleared, so the wall does not keep them for ever.
    await reconcile_alerts(
        settings.database_url, settings.bootstrap_servers, topics.ALERTS, producer
    )
    sinks = [
        Sink(
            spec,
            bootstrap_servers=settings.bootstrap_servers,
            database_url=settings.database_url,
            producer=producer,
            metrics=metrics,
            retry_initial_s=settings.sink_retry_initial_s,
            retry_max_s=settings.sink_retry_max_s,
        )
        for spec in sink_specs(settings)
    ]
    runner = web.AppRunner(health_app(sinks, registry), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.storage_http_host, settings.storage_http_port)
    await site.start()
    log.info("health and metrics", port=settings.storage_http_port, started=time.time())
    tasks = [asyncio.create_task(s.run(stop), name=f"sink-{s.spec.name}") for s in sinks]
    tasks.append(asyncio.create_task(maintenance_loop(settings, stop), name="maintenance"))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()  # a crashed sink ends the process; the supervisor restarts it
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()
        await producer.stop()
