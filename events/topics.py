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


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    # Compacted topics keep the latest record per key: right for state (alerts),
    # wrong for streams of events.
    compacted: bool = False


# Event topics get 4 partitions: enough for two workers on this 2-core class of
# machine to split the load, few enough that per-partition watermarks advance quickly.
EVENT_PARTITIONS = 4

CONTRACT_TOPICS: tuple[TopicSpec, ...] = (
    *(TopicSpec(events_topic(d), EVENT_PARTITIONS) for d in DOMAINS),
    TopicSpec(KPI, 4),
    TopicSpec(ALERTS, 2),
    TopicSpec(ALERT_COMMANDS, 1),
    TopicSpec(DEADLETTER, 1),
)
