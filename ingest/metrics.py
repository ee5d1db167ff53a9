"""Prometheus metrics of the ingest gateways (one registry per gateway process)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


@dataclass
class IngestMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.accepted = Counter(
            "ioc_ingest_events_accepted_total",
            "Events validated and published to Kafka",
            ["gateway"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "ioc_ingest_events_rejected_total",
            "Events refused (HTTP 4xx or dead letter), by reason",
            ["gateway", "reason"],
            registry=self.registry,
        )
        self.publish_errors = Counter(
            "ioc_ingest_publish_errors_total",
            "Batches that could not be published to Kafka",
            ["gateway"],
            registry=self.registry,
        )

        self.refused_requests = Counter(
            "ioc_ingest_requests_refused_total",
            "HTTP requests refused for their key or the gateway's load, by reason "
            "(missing_key, unknown_key, out_of_scope, busy, auth_unavailable)",
            ["reason"],
            registry=self.registry,
        )
        self.inflight_bytes = Gauge(
            "ioc_ingest_inflight_bytes",
            "Bytes of events handed to the Kafka producer, not yet acknowledged",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
