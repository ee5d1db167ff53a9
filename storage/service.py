"""The storage process: migrations, the three sinks, the maintenance job, health/metrics
(``/healthz``, ``/readyz``: events.health; ``/metrics``).

``python -m storage`` runs it (``ioc up`` starts it as the ``storage`` component).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial

import asyncpg
import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from events import topics
from events.brokers import producer_options
from events.errors import ServiceError
from events.health import Check, add_aiohttp_routes
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


async def database_check(database_url: str, timeout_s: float = 3.0) -> Check:
    """Reachable: a connection and one round trip now (the sinks' own connections may
    be idle or in a retry pause)."""
    try:
        conn = await asyncpg.connect(database_url, timeout=timeout_s)
        try:
            await conn.fetchval("SELECT 1", timeout=timeout_s)
        finally:
            await conn.close()
    except Exception as exc:  # any failure means: not reachable, say why
        return Check("database", False, f"{type(exc).__name__}: {exc}")
    return Check("database", True, "reachable")


def sink_checks(sinks: Sequence[Sink]) -> list[Check]:
    """One check per sink: running and not paused (waiting for the database)."""
    if not sinks:
        return [Check("sinks", False, "not started: migrations and alert reconciliation first")]
    checks = []
    for sink in sinks:
        h = sink.health
        if not h.running:
            checks.append(Check(f"sink_{sink.spec.name}", False, "not running"))
        elif h.paused_since is not None:
            for_s = time.monotonic() - h.paused_since
            why = f"paused {for_s:.0f} s, waiting for the database: {h.last_error}"
            checks.append(Check(f"sink_{sink.spec.name}", False, why))
        else:
            checks.append(Check(f"sink_{sink.spec.name}", True, "running"))
    return checks


def health_app(
    sinks: Sequence[Sink], registry: CollectorRegistry, database_url: str
) -> web.Application:
    """/healthz, /readyz (database reachable, every sink running and not paused) and
    /metrics. ``sinks`` may be filled later: the app serves while migrations wait."""

    async def readiness() -> list[Check]:
        return [await database_check(database_url), *sink_checks(sinks)]

    async def metrics(_request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    app = web.Application()
    add_aiohttp_routes(app, "storage", readiness)
    app.router.add_get("/metrics", metrics)
    return app


async def run_storage(settings: StorageSettings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set; sinks finish their batch in flight first."""
    registry = CollectorRegistry()
    metrics = SinkMetrics.create(registry)
    sinks: list[Sink] = []
    # Served from the start: alive (and saying why it is not ready) while the database
    # is not reachable yet.
    runner = web.AppRunner(health_app(sinks, registry, settings.database_url), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.storage_http_host, settings.storage_http_port)
    await site.start()
    log.info("health and metrics", port=settings.storage_http_port, started=time.time())
    try:
        await _run_sinks(settings, stop, metrics, sinks)
    finally:
        await runner.cleanup()


async def _run_sinks(
    settings: StorageSettings, stop: asyncio.Event, metrics: SinkMetrics, sinks: list[Sink]
) -> None:
    await migrate_when_reachable(settings.database_url, stop)
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
    sinks += [
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
    tasks = [asyncio.create_task(s.run(stop), name=f"sink-{s.spec.name}") for s in sinks]
    tasks.append(asyncio.create_task(maintenance_loop(settings, stop), name="maintenance"))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()  # a crashed sink ends the process; the supervisor restarts it
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()
