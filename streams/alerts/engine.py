"""The alert state machine, sans I/O.

Inputs: KPI window records (``events.records.KpiRecord``), a clock tick (wall time, for
silence when the whole stream is idle) and operator commands (``AlertCommand``). Outputs:
``AlertRecord`` transitions. No Kafka, no clocks of its own: the same inputs give the same
outputs, ids included, which is what makes a replay after a restart harmless.

Time is event time: a KPI observation happens at its ``window_end``. The windows of one
(kpi, scope) arrive out of order (``ioc.kpi`` is keyed per window, so they spread over its
partitions); each (rule, subject) keeps its recent windows and is judged at the newest one,
so a window that arrives late can complete a run but never moves the state backwards.
Raising and escalating use the newest window, live or final; clearing uses final windows
from the one that last raised or escalated the alert on (:mod:`streams.alerts.judge`).

Lifecycle: raised → (escalated) → (acknowledged) → cleared. One active alert per
(rule, subject). An escalation of an acknowledged alert re-opens it as ``escalated``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from events.flood import WATER_STATIONS
from events.records import (
    AlertCommand,
    AlertRecord,
    AlertState,
    KpiRecord,
)
from streams.alerts.judge import AlarmLevels, Judge, Track
from streams.alerts.records import alert_id_for, alert_title
from streams.alerts.rules import (
    RULES,
    Rule,
    SilenceRule,
    horizon_seconds,
    raise_after_seconds,
    rule_by_id,
    severity_at,
)

__all__ = [
    "AlarmLevels",
    "AlertEngine",
    "CommandOutcome",
    "CommandRejected",
    "flood_alarm_levels",
]

# How many command ids / cleared alert ids are remembered for idempotency and for telling
# "cleared" from "unknown" in rejections.
_MEMORY = 10_000
_BASE_WINDOW_SECONDS = 60  # the tumbling window every KPI has


def flood_alarm_levels(station_id: str) -> tuple[float, ...] | None:
    station = WATER_STATIONS.get(station_id)
    return None if station is None else tuple(station.alarm_levels)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _scope_kind(scope: str) -> str:
    return scope.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class CommandRejected:
    """A command that cannot be applied; the adapter makes it a DeadLetter."""

    command: AlertCommand
    reason: str  # "unknown_alert" | "alert_cleared" | "already_acknowledged"
    detail: str


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    records: tuple[AlertRecord, ...] = ()
    rejection: CommandRejected | None = None
    duplicate: bool = False


class AlertEngine:
    def __init__(
        self,
        rules: Iterable[Rule] = RULES,
        *,
        alarm_levels: AlarmLevels = flood_alarm_levels,
        silence_grace_seconds: int = 120,
        silence_settle_seconds: int = 5,
        silence_idle_advance: bool = True,
        final_lag_seconds: int = 600,
    ) -> None:
        self.rules = tuple(rules)
        self._judge = Judge(alarm_levels)
        self._rule = rule_by_id(self.rules)
        # How far behind the newest window a final record may still arrive and be judged:
        # finals come about window + allowed lateness (3 min) after a window starts, late
        # revisions up to the late grace (2 min) later. Windows are kept this much longer
        # than the rule's own horizon.
        self._final_lag_ms = final_lag_seconds * 1000
        # Wall time minus this is taken as a lower bound of event time when idle: the KPI
        # pipeline lags wall time by about its allowed lateness plus a window.
        self._grace_ms = silence_grace_seconds * 1000
        self._settle_ms = silence_settle_seconds * 1000
        self._idle_advance = silence_idle_advance
        self._by_kpi: dict[str, list[Rule]] = {}
        for rule in self.rules:
            self._by_kpi.setdefault(rule.kpi, []).append(rule)
        self._silence = tuple(r for r in self.rules if isinstance(r, SilenceRule))
        self._tracks: dict[tuple[str, str], Track] = {}
        self._active: dict[str, tuple[str, str]] = {}  # alert_id -> track key
        self._cleared: OrderedDict[str, None] = OrderedDict()
        self._commands: OrderedDict[str, None] = OrderedDict()
        self.clock_ms = 0  # event time: newest window_end seen
        self._checked_ms = 0
        self._ticks: deque[tuple[int, int]] = deque()  # (wall ms, clock ms) of ticks
        self._judged_ms = 0
        self._clock_window_ms = 1000 * min(
            (r.window_seconds for r in self._silence), default=_BASE_WINDOW_SECONDS
        )
        self.stale_records = 0  # windows older than the newest one of their track

    # ---- inputs -------------------------------------------------------------------

    def on_kpi(self, rec: KpiRecord) -> list[AlertRecord]:
        out: list[AlertRecord] = []
        start, end = _ms(rec.window_start), _ms(rec.window_end)
        for rule in self._by_kpi.get(rec.kpi, ()):
            if _scope_kind(rec.scope) != rule.scope or end - start != rule.window_seconds * 1000:
                continue
            track = self._tracks.get((rule.id, rec.scope))
            if track is None:
                track = self._tracks[(rule.id, rec.scope)] = Track()
            if isinstance(rule, SilenceRule):
                self._observe_presence(rule, rec.scope, track, rec, end, out)
            elif rec.value is not None:
                self._observe_value(rule, rec.scope, track, rec, start, end, out)
        if end - start == self._clock_window_ms and end > self.clock_ms:
            # Only base windows move the clock: the end of an open hourly or 15-minute
            # window lies up to an hour ahead of event time.
            self.clock_ms = end
        return out

    def tick(self, now: datetime) -> list[AlertRecord]:
        """Judge silence; the adapter calls it on a timer with the wall time.

        The clock is event time (the newest ``window_end`` of a base window), advanced
        when idle to ``now`` minus the grace (``silence_idle_advance``: the whole pipeline
        may be silent). Silence is judged at the clock as it was ``silence_settle_seconds``
        of wall time ago: when the event clock jumps (the pipeline resumes after a pause),
        the stations' windows of the new time arrive over the next seconds, and judging at
        once would call them all offline for a moment.
        """
        wall = _ms(now)
        clock = max(self.clock_ms, wall - self._grace_ms) if self._idle_advance else self.clock_ms
        self._ticks.append((wall, clock))
        while self._ticks and self._ticks[0][0] <= wall - self._settle_ms:
            self._judged_ms = max(self._judged_ms, self._ticks.popleft()[1])
        out: list[AlertRecord] = []
        self._check_silence(self._judged_ms, out)
        return out

    def on_command(self, cmd: AlertCommand) -> CommandOutcome:
        if cmd.command_id in self._commands:
            return CommandOutcome(duplicate=True)
        self._remember(self._commands, cmd.command_id)
        key = self._active.get(cmd.alert_id)
        if key is None:
            cleared = cmd.alert_id in self._cleared
            return CommandOutcome(
                rejection=CommandRejected(
                    cmd,
                    "alert_cleared" if cleared else "unknown_alert",
                    f"alert {cmd.alert_id} is {'already cleared' if cleared else 'not known'}",
                )
            )
        track = self._tracks[key]
        alert = track.alert
        assert alert is not None
        if cmd.command == "ack":
            if alert.state == "acknowledged":
                return CommandOutcome(
                    rejection=CommandRejected(
                        cmd,
                        "already_acknowledged",
                        f"alert {alert.alert_id} acknowledged by {alert.acknowledged_by}",
                    )
                )
            new = self._transition(alert, "acknowledged", cmd.at, acknowledged_by=cmd.by)
        elif cmd.command == "assign":
            new = self._transition(alert, alert.state, cmd.at, assignee=cmd.assignee)
        else:
            new = self._transition(alert, "cleared", cmd.at)
            track.suppressed = True
        self._set(track, new)
        return CommandOutcome(records=(new,))

    def restore(self, latest: Iterable[AlertRecord]) -> None:
        """Adopt the latest state of every alert (the compacted ``ioc.alerts`` topic).

        Call after replaying recent KPI records (whose outputs were discarded): the
        published states win over whatever the replay concluded.
        """
        for track in self._tracks.values():
            track.alert = None
        self._active.clear()
        for rec in sorted(latest, key=lambda r: (r.raised_at, r.revision)):
            if rec.state == "cleared":
                self._remember(self._cleared, rec.alert_id)
                continue
            track = self._tracks.setdefault((rec.rule, rec.subject), Track())
            if track.alert is not None:
                self._active.pop(track.alert.alert_id, None)
            self._set(track, rec)
            rule = self._rule.get(rec.rule)
            if rec.window_start is not None:
                track.anchor = _ms(rec.window_start)
            elif rule is not None and not isinstance(rule, SilenceRule):
                # A record from before window_start existed: raised_at is the end of the
                # raising window (escalations are unknown: the replay may know better).
                track.anchor = max(track.anchor, _ms(rec.raised_at) - rule.window_seconds * 1000)

    def active_alerts(self) -> list[AlertRecord]:
        return [a for key in self._active.values() if (a := self._tracks[key].alert)]

    # ---- threshold, alarm-level and rate-of-change rules ---------------------------

    def _observe_value(
        self,
        rule: Rule,
        subject: str,
        track: Track,
        rec: KpiRecord,
        start: int,
        end: int,
        out: list[AlertRecord],
    ) -> None:
        assert rec.value is not None
        win = end - start
        if not track.store(start, rec.value, rec.final, rec.revision):
            return
        if start < track.newest:
            self.stale_records += 1  # a late window: it may complete a run, so judge again
        else:
            track.newest = start
        newest = track.newest
        track.prune(newest - horizon_seconds(rule) * 1000 - 2 * win - self._final_lag_ms)
        judged = self._judge.at(rule, subject, track, newest)
        if judged is None:
            return
        level, _calm, measure, thresholds = judged
        alert = track.alert
        settled = None
        if level == 0 and (alert is not None or track.suppressed):
            settled = self._judge.settled(rule, subject, track, win)
            if settled is not None:
                track.suppressed = False
        live = newest not in track.finals
        if alert is None:
            if not level or track.suppressed:
                return
            need = raise_after_seconds(rule) * 1000
            if (
                need
                and newest + win - self._judge.run_start(rule, subject, track, newest, win) < need
            ):
                return
            new = self._raise(
                rule,
                subject,
                level,
                measure,
                thresholds,
                _dt(newest + win),
                window=newest,
                live=live,
            )
            track.anchor = newest
        elif level > alert.level:
            new = self._transition(
                alert,
                "escalated",
                _dt(newest + win),
                level=level,
                value=measure,
                threshold=thresholds[level - 1],
                severity=severity_at(rule, level),
                title=alert_title(rule, subject, level),
                title_en=alert_title(rule, subject, level, "en"),
                on_live_window=live,
                window_start=_dt(newest),
            )
            track.anchor = newest
        elif settled is not None:
            new = self._transition(alert, "cleared", _dt(settled[1]), value=settled[0])
        else:
            return
        self._set(track, new)
        out.append(new)

    # ---- silence rules -------------------------------------------------------------

    def _observe_presence(
        self,
        rule: SilenceRule,
        subject: str,
        track: Track,
        rec: KpiRecord,
        end: int,
        out: list[AlertRecord],
    ) -> None:
        if rec.count <= 0 or (track.last_seen is not None and end <= track.last_seen):
            return
        track.last_seen = end
        track.suppressed = False
        # Only a window after the raise clears: one from before it (late, from another
        # ioc.kpi partition) shows the station was there then, not that it is back. A live
        # count > 0 is enough: a count only grows, so the presence it shows is final.
        if track.alert is not None and end > _ms(track.alert.raised_at):
            new = self._transition(track.alert, "cleared", _dt(end), value=0.0)
            self._set(track, new)
            out.append(new)

    def _check_silence(self, clock_ms: int, out: list[AlertRecord]) -> None:
        if clock_ms <= self._checked_ms:
            return
        self._checked_ms = clock_ms
        for rule in self._silence:
            after = rule.after_seconds * 1000
            for (rule_id, subject), track in self._tracks.items():
                if rule_id != rule.id or track.alert is not None or track.suppressed:
                    continue
                if track.last_seen is None or clock_ms - track.last_seen < after:
                    continue
                silent_min = (clock_ms - track.last_seen) / 60_000
                new = self._raise(
                    rule,
                    subject,
                    1,
                    round(silent_min, 1),
                    (rule.after_seconds / 60,),
                    _dt(track.last_seen + after),
                )
                self._set(track, new)
                out.append(new)

    # ---- records -------------------------------------------------------------------

    def _raise(
        self,
        rule: Rule,
        subject: str,
        level: int,
        value: float,
        thresholds: tuple[float, ...],
        at: datetime,
        *,
        window: int | None = None,
        live: bool = False,
    ) -> AlertRecord:
        """A new alert; ``window`` is the start of the raising window (None for silence)."""
        return AlertRecord(
            alert_id=alert_id_for(rule.id, subject, at),
            rule=rule.id,
            subject=subject,
            state="raised",
            severity=severity_at(rule, level),
            level=level,
            title=alert_title(rule, subject, level),
            title_en=alert_title(rule, subject, level, "en"),
            kpi=rule.kpi,
            value=value,
            threshold=thresholds[level - 1],
            raised_at=at,
            updated_at=at,
            revision=1,
            window_start=None if window is None else _dt(window),
            on_live_window=live,
        )

    def _transition(
        self, alert: AlertRecord, state: AlertState, at: datetime, **changes: Any
    ) -> AlertRecord:
        return replace(
            alert,
            state=state,
            updated_at=max(at, alert.updated_at),
            revision=alert.revision + 1,
            **changes,
        )

    def _set(self, track: Track, alert: AlertRecord) -> None:
        if alert.state == "cleared":
            track.alert = None
            self._active.pop(alert.alert_id, None)
            self._remember(self._cleared, alert.alert_id)
        else:
            track.alert = alert
            self._active[alert.alert_id] = (alert.rule, alert.subject)

    @staticmethod
    def _remember(memory: OrderedDict[str, None], key: str) -> None:
        memory[key] = None
        if len(memory) > _MEMORY:
            memory.popitem(last=False)
