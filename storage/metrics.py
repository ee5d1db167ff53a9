"""Prometheus metrics of the storage process (one registry per process, passed in)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True, slots=True)
class SinkMetrics:
    rows: Counter
    dead_letters: Counter
    batches: Counter
    db_errors: Counter
    paused: Gauge
    batch_seconds: Histogram
    last_commit: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> SinkMetrics:
        return cls(
            rows=Counter(
                "ioc_sink_rows", "Rows handed to the database", ["sink"], registry=registry
            ),
            dead_letters=Counter(
                "ioc_sink_dead_letters",
                "Records sent to ioc.deadletter",
                ["sink", "reason"],
                registry=registry,
            ),
            batches=Counter(
                "ioc_sink_batches",
                "Batches committed (database, then offsets)",
                ["sink"],
                registry=registry,
            ),
            db_errors=Counter(
                "ioc_sink_db_errors",
                "Failed database writes (retried)",
                ["sink"],
                registry=registry,
            ),
            paused=Gauge(
                "ioc_sink_paused",
                "1 while the sink waits for the database",
                ["sink"],
                registry=registry,
            ),
            batch_seconds=Histogram(
                "ioc_sink_batch_seconds",
                "Database write time of one batch",
                ["sink"],
                registry=registry,
            ),
            last_commit=Gauge(
                "ioc_sink_last_commit_timestamp_seconds",
                "Time of the last offset commit",
                ["sink"],
                registry=registry,
            ),
        )
