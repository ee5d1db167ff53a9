"""Alerts: declarative rules, a sans-I/O state machine and a thin Kafka worker."""

from streams.alerts.engine import AlertEngine, CommandOutcome, CommandRejected
from streams.alerts.records import alert_id_for
from streams.alerts.rules import (
    RULES,
    AlarmLevelRule,
    RateOfChangeRule,
    Rule,
    SilenceRule,
    ThresholdRule,
    rules_json,
)

__all__ = [
    "RULES",
    "AlarmLevelRule",
    "AlertEngine",
    "CommandOutcome",
    "CommandRejected",
    "RateOfChangeRule",
    "Rule",
    "SilenceRule",
    "ThresholdRule",
    "alert_id_for",
    "rules_json",
]
