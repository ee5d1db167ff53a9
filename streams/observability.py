"""Health (``/healthz``, ``/readyz``: events.health) and Prometheus metrics of a stream
worker, served over HTTP (aiohttp)."""

from __future__ import annotations

import time

import structlog
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from events.health import Checks, add_aiohttp_routes

log = structlog.get_logger("streams")


class PhaseTimer:
    """Counts the seconds of each phase of the Faust host's one loop
    (``ioc_streams_phase_seconds``) and logs a long one (``phase.slow``): while it runs,
    nothing else does, and events waiting meanwhile reach the wall that much later."""

    def __init__(self, seconds: Counter, slow_s: float) -> None:
        self._seconds = seconds
        self._by_phase: dict[str, Counter] = {}
        self.slow_s = slow_s

    def __call__(self, phase: str, started: float, **about: object) -> float:
        """``started``: ``time.perf_counter()`` when the phase began; returns its seconds."""
        took = time.perf_counter() - started
        counter = self._by_phase.get(phase)
        if counter is None:
            counter = self._by_phase[phase] = self._seconds.labels(phase)
        counter.inc(took)
        if took >= self.slow_s:
            log.info("phase.slow", phase=phase, seconds=round(took, 3), **about)
        return took


class StreamsMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.input_events = Counter(
            "ioc_streams_input_events",
            "Records read from ioc.events.<domain> (before validation, dedup and replay)",
            ["domain"],
            registry=r,
        )
        self.events = Counter("ioc_streams_events", "Events applied to windows", registry=r)
        self.replayed = Counter(
            "ioc_streams_replayed_events",
            "Replayed events skipped (already in the state)",
            registry=r,
        )
        self.dead_letters = Counter(
            "ioc_streams_dead_letters", "Records sent to ioc.deadletter", ["reason"], registry=r
        )
        self.duplicates = Counter(
            "ioc_streams_duplicates",
            "Repeats of an event identity (source, id) already applied, dropped",
            registry=r,
        )
        self.rollbacks = Counter(
            "ioc_streams_rollbacks",
            "Partitions rolled back to their durable state after a record raised "
            "(the record is quarantined and dead-lettered as processing_error)",
            registry=r,
        )
        self.fold_fallbacks = Counter(
            "ioc_streams_fold_fallbacks",
            "Batches applied event by event because folding them as a batch raised "
            "(expected with a record that raises; otherwise a bug in streams.folds)",
            registry=r,
        )
        self.kpi_records = Counter("ioc_streams_kpi_records", "KPI records emitted", registry=r)
        # Where the Faust host's single batch/timer loop spends its time: while one phase
        # runs (a checkpoint waiting for acknowledgements, say) no other does.
        self.phase_seconds = Counter(
            "ioc_streams_phase_seconds",
            "Seconds the Faust host spent per phase (apply, publish, checkpoint, flush)",
            ["phase"],
            registry=r,
        )
        self.checkpoints = Counter(
            "ioc_streams_checkpoints", "State snapshots committed", registry=r
        )
        self.watermark = Gauge(
            "ioc_streams_watermark_timestamp_seconds",
            "Watermark (event time, Unix seconds) per source partition",
            ["source"],
            registry=r,
        )
        self.lag = Gauge(
            "ioc_streams_lag_records",
            "Records behind the partition's end, per source partition",
            ["source"],
            registry=r,
        )


async def serve(host: str, port: int, metrics: StreamsMetrics, readiness: Checks) -> web.AppRunner:
    async def metrics_handler(_request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    add_aiohttp_routes(app, "streams", readiness)
    app.router.add_get("/metrics", metrics_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
