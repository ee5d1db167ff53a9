"""Judging one (rule, subject) on its stored windows: the raise and the clear conditions.

Pure functions of a :class:`Track` (the recent windows of one KPI and scope); the engine
(:mod:`streams.alerts.engine`) decides what to do with the verdicts. The clearing rule
lives here because it is the delicate part: the stream worker sends live values of the
open window minutes before the final records of the windows that preceded it (a final
leaves when the watermark passes the window's end: window + allowed lateness + flush, about
three minutes after the window starts with the default settings), so "the newest final
window" is usually *older* than the window that raised an alert. An alert therefore
clears only on final windows that start at or after the window that last raised or
escalated it (:attr:`Track.anchor`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from events.records import AlertRecord
from streams.alerts.rules import (
    AlarmLevelRule,
    RateOfChangeRule,
    Rule,
    ThresholdRule,
    clear_after_seconds,
)

# station id -> (BĐ I, BĐ II, BĐ III) in metres, or None for an unknown station.
AlarmLevels = Callable[[str], tuple[float, ...] | None]
# (level reached, clear condition met, measured value, thresholds)
Verdict = tuple[int, bool, float, tuple[float, ...]]


@dataclass(slots=True)
class Track:
    """Condition state of one (rule, subject)."""

    # Recent windows of the KPI (window_start ms -> value), kept over the rule's horizon
    # plus the time a final takes to arrive: windows of one (kpi, scope) arrive out of
    # order (ioc.kpi is keyed per window, so they spread over its partitions), and finals
    # arrive minutes after the live values of later windows.
    values: dict[int, float] = field(default_factory=dict)
    finals: set[int] = field(default_factory=set)  # starts of the windows seen final
    revisions: dict[int, int] = field(default_factory=dict)  # of the stored values
    newest: int = -1  # start of the newest window seen (ms)
    newest_final: int = -1  # start of the newest window seen with final=true
    # Start of the window that last raised or escalated the alert (kept after an operator
    # clear, for the suppression): only final windows from this one on may clear it.
    anchor: int = -1
    last_seen: int | None = None  # silence: newest window_end with count > 0
    # After an operator clear, do not re-raise until the condition has cleared once.
    suppressed: bool = False
    alert: AlertRecord | None = None

    def store(self, start: int, value: float, final: bool, revision: int) -> bool:
        """Keep a window's value; False for a stale live value of a window already final
        (the final value stands). A live value with a higher revision is news: the stream
        worker re-creates a window it had finished when an idle partition delivers a late
        pane, and that window is live again until its new final."""
        if not final and start in self.finals and revision <= self.revisions[start]:
            return False
        self.values[start] = value
        self.revisions[start] = revision
        if final:
            self.finals.add(start)
            self.newest_final = max(self.newest_final, start)
        else:
            self.finals.discard(start)
        return True

    def prune(self, lower: int) -> None:
        if len(self.values) > 2 and min(self.values) < lower:
            self.values = {s: v for s, v in self.values.items() if s >= lower}
            self.revisions = {s: r for s, r in self.revisions.items() if s >= lower}
            self.finals = {s for s in self.finals if s >= lower}


class Judge:
    def __init__(self, alarm_levels: AlarmLevels) -> None:
        self._alarm_levels = alarm_levels

    def at(
        self, rule: Rule, subject: str, track: Track, window: int, *, finals_only: bool = False
    ) -> Verdict | None:
        """The verdict at ``window`` (a stored window start), or None when there is
        nothing to judge. ``finals_only``: a rate is measured over final windows only."""
        if isinstance(rule, RateOfChangeRule):
            return _judge_rate(rule, track, window, finals_only)
        return self.value(rule, subject, track.values[window])

    def value(self, rule: Rule, subject: str, value: float) -> Verdict | None:
        if isinstance(rule, ThresholdRule):
            if rule.direction == "above":
                level = sum(value > t for t in rule.levels)
                return level, value < rule.clear_at, value, rule.levels
            level = sum(value < t for t in rule.levels)
            return level, value > rule.clear_at, value, rule.levels
        if isinstance(rule, AlarmLevelRule):
            levels = self._alarm_levels(subject.partition(":")[2])
            if not levels:
                return None  # not a station of the registry: nothing to compare with
            level = sum(value >= t for t in levels)
            return level, value < levels[0] - rule.hysteresis, value, levels
        return None

    def run_start(
        self,
        rule: Rule,
        subject: str,
        track: Track,
        last: int,
        win: int,
        *,
        calm: bool = False,
        floor: int | None = None,
    ) -> int:
        """Start of the run of consecutive windows up to ``last`` that all breach (or, with
        ``calm``, all final, at or after ``floor`` and meeting the clear condition); a
        missing window ends the run."""
        start = last
        while (start - win) in track.values:
            prev = start - win
            if calm and (prev not in track.finals or (floor is not None and prev < floor)):
                break
            verdict = self.value(rule, subject, track.values[prev])
            if verdict is None or (not verdict[1] if calm else verdict[0] == 0):
                break
            start = prev
        return start

    def settled(self, rule: Rule, subject: str, track: Track, win: int) -> tuple[float, int] | None:
        """(measured value, time) when the alert of ``track`` may clear, else None.

        Only final values clear: a live value is partial (the count of a window that has
        just opened is tiny; clearing on it would make every count alert flap at each
        minute boundary), while raising may use live values (a partial count only grows).
        The clear is judged at the newest final window, and only when it starts at or
        after the anchor (the window that last raised or escalated the alert): a final of
        an older window, however it arrives (late, out of order, revised), describes the
        time before the breach and says nothing about its end. With ``clear_for_seconds``
        the calm run of final windows must lie after the anchor too.
        """
        final = track.newest_final
        if final < track.anchor or final not in track.finals:  # pruned, or live again
            return None
        verdict = self.at(rule, subject, track, final, finals_only=True)
        if verdict is None or not verdict[1]:
            return None
        need = clear_after_seconds(rule) * 1000
        if need:
            begin = self.run_start(rule, subject, track, final, win, calm=True, floor=track.anchor)
            if final + win - begin < need:
                return None
        return verdict[2], final + win


def _judge_rate(
    rule: RateOfChangeRule, track: Track, newest: int, finals_only: bool
) -> Verdict | None:
    value = track.values[newest]
    since = newest - rule.over_seconds * 1000
    before = sorted(
        (s, v)
        for s, v in track.values.items()
        if since <= s < newest and (not finals_only or s in track.finals)
    )
    if not before:
        return None
    if rule.mode == "rise":
        measure = value - before[0][1]
    else:
        if len(before) < rule.min_baseline_windows:
            return None
        baseline = sum(v for _, v in before) / len(before)
        if baseline <= 0:
            return None
        measure = value / baseline
    raised = measure >= rule.threshold and value >= rule.min_value
    return int(raised), measure < rule.clear_below, measure, (rule.threshold,)
