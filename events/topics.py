"""Kafka topic names and partition counts: part of the public contract."""

from __future__ import annotations

from dataclasses import dataclass

DOMAINS: tuple[str, ...] = (
    "traffic",
    "air",
    "water",
    "energy",
    "parking",
    "services",
    "feedback",
    "emergency",
    "security",
    "payments",
)

EVENTS_PREFIX = "ioc.events."
KPI = "ioc.kpi"
ALERTS = "ioc.alerts"
ALERT_COMMANDS = "ioc.alerts.commands"
DEADLETTER = "ioc.deadletter"


def events_topic(domain: str) -> str:
    """The topic that carries the events of one domain."""
    return f"{EVENTS_PREFIX}{domain}"


HOUR_MS = 3_600_000
MIB = 1024 * 1024

# Retention bounds the broker's disk (Apache Kafka) for a demo that runs for weeks: a
# topic keeps at most ``retention.ms`` of records and at most ``retention.bytes`` per
# partition, whichever is reached first. Windows close within minutes and the sink
# writes every event to TimescaleDB, so hours of history on the broker are plenty.
# Segments roll every hour (or 16 MiB) because retention and compaction only ever drop
# whole closed segments: with Kafka's defaults (1 GiB, 7 days) nothing would be dropped
# for a week at the demo rate.
STREAM_RETENTION_MS = 6 * HOUR_MS
STREAM_RETENTION_BYTES = 64 * MIB
RARE_RETENTION_MS = 7 * 24 * HOUR_MS
SEGMENT_MS = HOUR_MS
SEGMENT_BYTES = 16 * MIB


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    # Compacted topics keep the latest record per key: right for state (alerts),
    # wrong for streams of events.
    compacted: bool = False
    retention_ms: int = STREAM_RETENTION_MS
    retention_bytes: int = STREAM_RETENTION_BYTES

    def configs(self) -> dict[str, str]:
        """The topic configs it is created with (and that ``ioc topics`` restores)."""
        common = {"segment.ms": str(SEGMENT_MS), "segment.bytes": str(SEGMENT_BYTES)}
        if self.compacted:
            # One record per key, kept forever: the size is bounded by the number of keys.
            return {"cleanup.policy": "compact", **common}
        return {
            "cleanup.policy": "delete",
            "retention.ms": str(self.retention_ms),
            "retention.bytes": str(self.retention_bytes),
            **common,
        }


# Event topics get 4 partitions: enough for two workers on this 2-core class of
# machine to split the load, few enough that per-partition watermarks advance quickly.
EVENT_PARTITIONS = 4

CONTRACT_TOPICS: tuple[TopicSpec, ...] = (
    *(TopicSpec(events_topic(d), EVENT_PARTITIONS) for d in DOMAINS),
    TopicSpec(KPI, 4),
    # Alert records are keyed by alert id and carry the alert's whole state: the latest
    # record per key is the alert, so the topic is compacted (the alerts worker restores
    # from it).
    TopicSpec(ALERTS, 2, compacted=True),
    TopicSpec(ALERT_COMMANDS, 1, retention_ms=RARE_RETENTION_MS),
    TopicSpec(DEADLETTER, 1, retention_ms=RARE_RETENTION_MS),
)
