"""The alert rule catalogue: data, not code.

Every rule is a frozen dataclass naming the KPI it watches (an id of
``events.kpis.KPI_CATALOGUE``), the scope kind it applies to and its numbers. The engine
(:mod:`streams.alerts.engine`) interprets them; ``ioc alerts rules --json`` prints them and
``docs/alerts.md`` carries a table generated from them (a test keeps the two equal).

Four kinds:

- :class:`ThresholdRule`: the KPI is beyond ``levels[0]`` (``above``/``below``) for at least
  ``for_seconds`` of event time; it escalates when it passes ``levels[1]``, ``levels[2]``;
  it clears only once the value is back past ``clear_at`` (hysteresis).
- :class:`AlarmLevelRule`: like a threshold rule, but the levels are the flood alarm levels
  (BĐ I, II, III) of each station from ``events.flood``; it clears below BĐ I minus
  ``hysteresis``.
- :class:`RateOfChangeRule`: the change of the KPI over ``over_seconds``: ``rise`` (latest
  value minus the value ``over_seconds`` earlier) or ``factor`` (latest value divided by the
  mean of the windows of the preceding ``over_seconds``).
- :class:`SilenceRule`: a subject whose windows of the KPI had events (``count > 0``) stops
  for ``after_seconds`` of event time (or of wall-clock time when the whole stream is idle).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from events.records import AlertSeverity

ScopeKind = Literal["city", "district", "station"]
Direction = Literal["above", "below"]
RateMode = Literal["rise", "factor"]


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    id: str
    title_vi: str
    title_en: str
    kpi: str
    scope: ScopeKind
    direction: Direction
    # Raise at levels[0]; escalate at levels[1], levels[2] (ordered by severity).
    levels: tuple[float, ...]
    # Hysteresis: an active alert clears only when the value is back past this.
    clear_at: float
    for_seconds: int = 0
    clear_for_seconds: int = 0
    window_seconds: int = 60
    # Severity of each level (same length as levels).
    severities: tuple[AlertSeverity, ...] = ("warning", "critical", "critical")
    kind: Literal["threshold"] = "threshold"

    def __post_init__(self) -> None:
        _check_levels(self.id, self.direction, self.levels, self.clear_at, self.severities)


@dataclass(frozen=True, slots=True)
class AlarmLevelRule:
    id: str
    title_vi: str
    title_en: str
    kpi: str
    # Metres below BĐ I a level must fall to clear the alert.
    hysteresis: float
    scope: ScopeKind = "station"
    for_seconds: int = 0
    clear_for_seconds: int = 0
    window_seconds: int = 60
    severities: tuple[AlertSeverity, ...] = ("warning", "critical", "critical")
    levels_from: str = "events.flood.WATER_STATIONS"
    kind: Literal["alarm_level"] = "alarm_level"


@dataclass(frozen=True, slots=True)
class RateOfChangeRule:
    id: str
    title_vi: str
    title_en: str
    kpi: str
    scope: ScopeKind
    mode: RateMode
    # rise: raise when the rise over over_seconds is >= threshold (KPI unit);
    # factor: raise when latest / baseline mean >= threshold.
    threshold: float
    clear_below: float
    over_seconds: int
    # factor mode: the latest value must be at least this (1 -> 3 reports is no surge).
    min_value: float = 0.0
    # factor mode: fewer baseline windows than this is no baseline (e.g. after a start).
    min_baseline_windows: int = 3
    window_seconds: int = 60
    severity: AlertSeverity = "warning"
    kind: Literal["rate_of_change"] = "rate_of_change"

    def __post_init__(self) -> None:
        if self.clear_below > self.threshold:
            raise ValueError(f"rule {self.id}: clear_below above threshold")


@dataclass(frozen=True, slots=True)
class SilenceRule:
    id: str
    title_vi: str
    title_en: str
    kpi: str
    after_seconds: int
    scope: ScopeKind = "station"
    window_seconds: int = 60
    severity: AlertSeverity = "warning"
    kind: Literal["silence"] = "silence"


Rule = ThresholdRule | AlarmLevelRule | RateOfChangeRule | SilenceRule


def _check_levels(
    rule_id: str,
    direction: Direction,
    levels: tuple[float, ...],
    clear_at: float,
    severities: tuple[AlertSeverity, ...],
) -> None:
    if not 1 <= len(levels) <= 3 or len(severities) < len(levels):
        raise ValueError(f"rule {rule_id}: 1..3 levels, one severity each")
    ordered = sorted(levels, reverse=direction == "below")
    if list(levels) != ordered:
        raise ValueError(f"rule {rule_id}: levels must be ordered by severity")
    # Without a gap between raise and clear the alert would flap on noise.
    if (direction == "above" and clear_at >= levels[0]) or (
        direction == "below" and clear_at <= levels[0]
    ):
        raise ValueError(f"rule {rule_id}: clear_at must leave a hysteresis gap")


RULES: tuple[Rule, ...] = (
    ThresholdRule(
        id="air.aqi.high",
        title_vi="Chất lượng không khí xấu (VN_AQI > 150)",
        title_en="Poor air quality (VN_AQI > 150)",
        kpi="air.aqi.vn",
        scope="district",
        direction="above",
        levels=(150.0, 200.0, 300.0),
        clear_at=130.0,
        for_seconds=600,
    ),
    ThresholdRule(
        id="traffic.congestion",
        title_vi="Ùn tắc giao thông (tốc độ < 10 km/h)",
        title_en="Traffic congestion (speed < 10 km/h)",
        kpi="traffic.speed.avg",
        scope="district",
        direction="below",
        levels=(10.0, 5.0),
        clear_at=15.0,
        for_seconds=300,
        severities=("warning", "critical"),
    ),
    ThresholdRule(
        id="services.ontime.low",
        title_vi="Tỷ lệ hồ sơ đúng hạn thấp (< 80 %)",
        title_en="Low on-time rate of dossiers (< 80 %)",
        kpi="services.ontime.rate",
        scope="district",
        direction="below",
        levels=(80.0, 60.0),
        clear_at=85.0,
        for_seconds=600,
        severities=("warning", "critical"),
    ),
    AlarmLevelRule(
        id="water.level.alarm",
        title_vi="Mực nước vượt báo động",
        title_en="Water level above flood alarm level",
        kpi="water.level.max",
        hysteresis=0.1,
    ),
    RateOfChangeRule(
        id="water.level.rising",
        title_vi="Mực nước lên nhanh (> 0,3 m / 10 phút)",
        title_en="Water rising fast (> 0.3 m per 10 min)",
        kpi="water.level.max",
        scope="station",
        mode="rise",
        threshold=0.3,
        clear_below=0.1,
        over_seconds=600,
    ),
    RateOfChangeRule(
        id="feedback.reports.surge",
        title_vi="Phản ánh của người dân tăng đột biến (gấp 3)",
        title_en="Citizen reports per minute tripled",
        kpi="feedback.open.count",
        scope="district",
        mode="factor",
        threshold=3.0,
        clear_below=1.5,
        over_seconds=600,
        min_value=5.0,
    ),
    RateOfChangeRule(
        id="emergency.calls.spike",
        title_vi="Cuộc gọi khẩn cấp tăng đột biến (gấp 2)",
        title_en="Emergency calls per minute doubled",
        kpi="emergency.calls.count",
        scope="city",
        mode="factor",
        threshold=2.0,
        clear_below=1.3,
        over_seconds=900,
        min_value=8.0,
        severity="critical",
    ),
    RateOfChangeRule(
        id="security.portal.dos",
        title_vi="Nghi tấn công từ chối dịch vụ: lượt truy cập cổng DVC tăng vọt (gấp 5)",
        title_en="Suspected DoS: portal requests per minute up fivefold",
        kpi="services.portal.requests.sum",
        scope="city",
        mode="factor",
        threshold=5.0,
        clear_below=2.0,
        over_seconds=900,
        min_value=1000.0,
        severity="critical",
    ),
    ThresholdRule(
        id="services.portal.errors.high",
        title_vi="Cổng dịch vụ công trả lỗi nhiều (> 5 % yêu cầu)",
        title_en="Public-service portal failing (> 5 % of requests)",
        kpi="services.portal.errors.ratio",
        scope="city",
        direction="above",
        levels=(5.0, 20.0),
        clear_at=2.0,
        for_seconds=120,
        severities=("warning", "critical"),
    ),
    ThresholdRule(
        id="security.cyber.burst",
        title_vi="Dồn dập tấn công mạng vào hệ thống của tỉnh",
        title_en="Burst of cyber attacks on provincial systems",
        kpi="security.cyber.count",
        scope="city",
        direction="above",
        levels=(10.0, 50.0),
        clear_at=2.0,
        for_seconds=120,
        severities=("critical", "critical"),
    ),
    SilenceRule(
        id="water.station.offline",
        title_vi="Trạm đo mực nước mất tín hiệu",
        title_en="Water-level station offline",
        kpi="water.level.max",
        after_seconds=600,
    ),
    SilenceRule(
        id="air.station.offline",
        title_vi="Trạm quan trắc không khí mất tín hiệu",
        title_en="Air-quality station offline",
        kpi="air.pm25.avg",
        after_seconds=900,
    ),
)


def raise_after_seconds(rule: Rule) -> int:
    """How long (event time) the raise condition must hold."""
    return rule.for_seconds if isinstance(rule, ThresholdRule | AlarmLevelRule) else 0


def clear_after_seconds(rule: Rule) -> int:
    """How long (event time) the clear condition must hold."""
    return rule.clear_for_seconds if isinstance(rule, ThresholdRule | AlarmLevelRule) else 0


def horizon_seconds(rule: Rule) -> int:
    """How much window history the rule needs."""
    if isinstance(rule, RateOfChangeRule):
        return rule.over_seconds
    return max(raise_after_seconds(rule), clear_after_seconds(rule))


def severity_at(rule: Rule, level: int) -> AlertSeverity:
    if isinstance(rule, ThresholdRule | AlarmLevelRule):
        return rule.severities[min(level, len(rule.severities)) - 1]
    return rule.severity


def rule_by_id(rules: tuple[Rule, ...] = RULES) -> dict[str, Rule]:
    return {r.id: r for r in rules}


def rules_json(rules: tuple[Rule, ...] = RULES) -> list[dict[str, Any]]:
    """What ``ioc alerts rules --json`` prints."""
    return [asdict(r) for r in rules]


def _condition(rule: Rule) -> str:
    if isinstance(rule, ThresholdRule):
        sign = ">" if rule.direction == "above" else "<"
        steps = " → ".join(f"{sign} {v:g}" for v in rule.levels)
        dur = f" for {rule.for_seconds // 60} min" if rule.for_seconds else ""
        return f"{steps}{dur}; clears {'<' if sign == '>' else '>'} {rule.clear_at:g}"
    if isinstance(rule, AlarmLevelRule):
        return f"≥ BĐ I → II → III (per station); clears < BĐ I − {rule.hysteresis:g} m"
    if isinstance(rule, RateOfChangeRule):
        span = f"{rule.over_seconds // 60} min"
        if rule.mode == "rise":
            return f"rise ≥ {rule.threshold:g} over {span}; clears < {rule.clear_below:g}"
        return (
            f"≥ {rule.threshold:g}× mean of previous {span} (and ≥ {rule.min_value:g}); "
            f"clears < {rule.clear_below:g}×"
        )
    return f"no events for {rule.after_seconds // 60} min; clears on the next event"


def rules_markdown(rules: tuple[Rule, ...] = RULES) -> str:
    """The rules table of docs/alerts.md (a test checks the doc contains exactly this)."""
    lines = [
        "| rule | kind | KPI | scope | condition | severity | title (vi) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rules:
        sev = (
            " / ".join(r.severities)
            if isinstance(r, ThresholdRule | AlarmLevelRule)
            else r.severity
        )
        lines.append(
            f"| `{r.id}` | {r.kind} | `{r.kpi}` | {r.scope} | {_condition(r)} | {sev} "
            f"| {r.title_vi} |"
        )
    return "\n".join(lines) + "\n"
