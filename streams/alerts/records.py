"""How alert records are identified, labelled and reduced to their latest state."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime

from events.flood import WATER_STATIONS
from events.geography import DISTRICTS
from events.records import AlertRecord, format_time
from streams.alerts.rules import AlarmLevelRule, Rule, ThresholdRule

_ROMAN = ("", "I", "II", "III")


def alert_id_for(rule_id: str, subject: str, raised_at: datetime) -> str:
    """Deterministic: a replay of the same KPI records raises the same ids."""
    digest = hashlib.sha256(f"{rule_id}|{subject}|{format_time(raised_at)}".encode())
    return f"al-{digest.hexdigest()[:20]}"


def subject_label(subject: str) -> str:
    kind, _, code = subject.partition(":")
    if kind == "district" and code in DISTRICTS:
        return DISTRICTS[code].name_vi
    if kind == "station" and code in WATER_STATIONS:
        return WATER_STATIONS[code].name
    return "toàn tỉnh" if subject == "city" else code or subject


def alert_title(rule: Rule, subject: str, level: int) -> str:
    """Vietnamese first: the wall's default language."""
    suffix = f" – BĐ {_ROMAN[level]}" if isinstance(rule, AlarmLevelRule) else ""
    if isinstance(rule, ThresholdRule) and level > 1:
        suffix = f" – mức {level}"
    return f"{rule.title_vi}{suffix}: {subject_label(subject)}"


def latest_by_id(records: Iterable[AlertRecord]) -> Mapping[str, AlertRecord]:
    """Keep the highest revision of each alert (what compaction would keep)."""
    latest: dict[str, AlertRecord] = {}
    for rec in records:
        seen = latest.get(rec.alert_id)
        if seen is None or rec.revision >= seen.revision:
            latest[rec.alert_id] = rec
    return latest
