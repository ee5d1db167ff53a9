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


def subject_label(subject: str, lang: str = "vi") -> str:
    kind, _, code = subject.partition(":")
    if kind == "district" and code in DISTRICTS:
        d = DISTRICTS[code]
        return d.name_en if lang == "en" else d.name_vi
    if kind == "station" and code in WATER_STATIONS:
        name = WATER_STATIONS[code].name
        return f"{name} station" if lang == "en" else name
    if subject == "city":
        return "whole province" if lang == "en" else "toàn tỉnh"
    return code or subject


def alert_title(rule: Rule, subject: str, level: int, lang: str = "vi") -> str:
    """Vietnamese by default (the wall's first language, the record's ``title``);
    ``lang="en"`` gives the record's ``title_en``, built the same way."""
    en = lang == "en"
    suffix = ""
    if isinstance(rule, AlarmLevelRule):
        suffix = f" – {'level' if en else 'BĐ'} {_ROMAN[level]}"
    elif isinstance(rule, ThresholdRule) and level > 1:
        suffix = f" – {'level' if en else 'mức'} {level}"
    text = rule.title_en if en else rule.title_vi
    return f"{text}{suffix}: {subject_label(subject, lang)}"


def latest_by_id(records: Iterable[AlertRecord]) -> Mapping[str, AlertRecord]:
    """Keep the highest revision of each alert (what compaction would keep)."""
    latest: dict[str, AlertRecord] = {}
    for rec in records:
        seen = latest.get(rec.alert_id)
        if seen is None or rec.revision >= seen.revision:
            latest[rec.alert_id] = rec
    return latest
