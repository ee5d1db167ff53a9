"""The alert lifecycle judged on the right windows, with records in the order the stream
worker really emits them.

The stream worker emits live values (``final=false``) of the open window as events come,
and the final record of a window only when the watermark passes its end: with 60 s
windows and 120 s of allowed lateness, the final of window N arrives while window N+3 is
live. So a raise from a live window is followed, for minutes, by finals of windows that
started *before* it; and a count's first live value in a new window is tiny.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

import pytest

from events.records import AlertRecord, KpiRecord
from streams.alerts.engine import AlertEngine
from streams.alerts.rules import ThresholdRule
from tests.test_alerts_engine import T0, command, kpi

STATION = "HD-TV-AP"  # An Phụ: BĐ I/II/III = 2.1 / 2.5 / 2.9 m
SUBJECT = f"station:{STATION}"
LAG = 3  # the final of window N arrives while window N + LAG is live


@dataclass(frozen=True, slots=True)
class Step:
    record: KpiRecord
    out: tuple[AlertRecord, ...]


def realistic(
    name: str,
    scope: str,
    values: Sequence[float],
    *,
    lives: Sequence[float] = (1.0, 1.0),
    lag: int = LAG,
    final_first: bool = False,
) -> list[KpiRecord]:
    """The records of windows 0..len(values)-1 in the stream worker's order: in each
    minute m, the first live value of window m, then the final of window m - ``lag``, then
    more live values of window m. The first event of window m moves the watermark past
    the end of window m - ``lag``, so its final and the first live value of m leave in the
    same flush, and ioc.kpi partitions may deliver either first: ``final_first`` puts the
    final before it. ``lives`` are the fractions of the window's final value the
    successive live records carry (a count grows; the max of a steady level is there at
    once). The last finals drain after the last window."""
    out: list[KpiRecord] = []
    n = len(values)
    for m in range(n + lag):
        if m < n and not final_first:
            out.append(kpi(name, scope, m, values[m] * lives[0], final=False, revision=1))
        if 0 <= m - lag < n:
            rev = len(lives) + 1
            out.append(kpi(name, scope, m - lag, values[m - lag], final=True, revision=rev))
        if m < n:
            out += [
                kpi(name, scope, m, values[m] * f, final=False, revision=i + 1)
                for i, f in enumerate(lives)
                if i or final_first
            ]
    return out


def run(engine: AlertEngine, records: Sequence[KpiRecord]) -> list[Step]:
    return [Step(rec, tuple(engine.on_kpi(rec))) for rec in records]


def transitions(steps: Sequence[Step], rule: str) -> list[tuple[Step, AlertRecord]]:
    return [(s, a) for s in steps for a in s.out if a.rule == rule]


def at(m: int) -> object:
    return T0 + timedelta(minutes=m)


def flood(calm_before: int, high: int, calm_after: int) -> list[float]:
    return [1.23] * calm_before + [3.05] * high + [1.0] * calm_after


def ack_after_raise(engine: AlertEngine, steps: list[Step], rule: str) -> AlertRecord:
    [(_, raised)] = transitions(steps, rule)
    [acked] = engine.on_command(command(raised.alert_id, "ack", f"ack-{rule}")).records
    return acked


ORDERS = pytest.mark.parametrize("final_first", [False, True], ids=["live-first", "final-first"])


@ORDERS
def test_a_flood_alarm_clears_on_the_final_of_the_first_calm_window_only(
    final_first: bool,
) -> None:
    """Level above BĐ III for 6 windows, acknowledged, then lowered: one alert, raised on
    the live value of the first flood window, cleared by the final of the first calm one
    (never by a final of a window before the flood, never pruned away)."""
    engine = AlertEngine()
    values = flood(5, 6, 8)  # flood in windows 5..10, calm from 11
    records = realistic("water.level.max", SUBJECT, values, final_first=final_first)
    # Late revisions of a window before the flood, once while the flood is live and once
    # when the first calm window is live: neither may clear.
    late = kpi("water.level.max", SUBJECT, 4, 1.2, revision=9)
    for when in (at(7), at(11)):
        i = next(i for i, r in enumerate(records) if r.window_start == when)
        records.insert(i + 1, late)
    first_raise = next(i for i, r in enumerate(records) if r.window_start == at(5))
    head = run(engine, records[: first_raise + 1])
    acked = ack_after_raise(engine, head, "water.level.alarm")
    steps = head + run(engine, records[first_raise + 1 :])
    alarm = transitions(steps, "water.level.alarm")
    assert [(a.state, a.level) for _, a in alarm] == [("raised", 3), ("cleared", 3)]
    (raise_step, raised), (clear_step, cleared) = alarm
    assert raise_step.record.window_start == at(5) and not raise_step.record.final
    assert (clear_step.record.window_start, clear_step.record.final) == (at(11), True)
    assert raised.on_live_window and raised.window_start == at(5)
    assert (cleared.alert_id, cleared.value, cleared.acknowledged_by) == (
        raised.alert_id,
        1.0,
        acked.acknowledged_by,
    )
    assert cleared.updated_at == max(at(12), acked.updated_at)  # type: ignore[type-var]


@ORDERS
def test_a_short_flood_does_not_clear_on_a_final_from_before_it(final_first: bool) -> None:
    """The issue's run: the flood lasts one window and the first calm live value arrives
    while the newest final is still a pre-flood window (1.23 m)."""
    engine = AlertEngine()
    values = flood(5, 1, 8)  # flood in window 5 only
    records = realistic("water.level.max", SUBJECT, values, final_first=final_first)
    first_raise = next(i for i, r in enumerate(records) if r.window_start == at(5))
    head = run(engine, records[: first_raise + 1])
    ack_after_raise(engine, head, "water.level.alarm")
    steps = head + run(engine, records[first_raise + 1 :])
    alarm = transitions(steps, "water.level.alarm")
    assert [a.state for _, a in alarm] == ["raised", "cleared"]
    clear_step, cleared = alarm[1]
    # Not before the flood window itself is final; then by the first calm final after it.
    assert (clear_step.record.window_start, clear_step.record.final) == (at(6), True)
    assert cleared.value == 1.0 and cleared.acknowledged_by == "op.lan"


@ORDERS
def test_the_rising_alert_clears_on_the_rise_over_final_windows_after_it(
    final_first: bool,
) -> None:
    """Flat for 12 windows, one window 0.5 m up, then back: the rise alert must not
    clear on a final window from before the rise (a rise of 0.0)."""
    engine = AlertEngine()
    values = [1.0] * 12 + [1.5] + [1.0] * 6
    steps = run(
        engine, realistic("water.level.max", "station:TEST-RISE", values, final_first=final_first)
    )
    rising = transitions(steps, "water.level.rising")
    assert [a.state for _, a in rising] == ["raised", "cleared"]
    (raise_step, raised), (clear_step, cleared) = rising
    assert (raise_step.record.window_start, raise_step.record.final) == (at(12), False)
    assert (clear_step.record.window_start, clear_step.record.final) == (at(13), True)
    assert raised.value == pytest.approx(0.5) and raised.on_live_window
    assert cleared.value == pytest.approx(0.0)


def test_finals_from_before_the_breach_do_not_count_toward_clear_for_seconds() -> None:
    rule = ThresholdRule(
        id="test.aqi",
        title_vi="AQI",
        title_en="AQI",
        kpi="air.aqi.vn",
        scope="district",
        direction="above",
        levels=(150.0,),
        clear_at=130.0,
        clear_for_seconds=180,
        severities=("warning",),
    )
    engine = AlertEngine([rule])
    values = [100.0] * 10 + [170.0] + [100.0] * 6
    steps = run(engine, realistic("air.aqi.vn", "district:HD", values))
    found = transitions(steps, "test.aqi")
    assert [a.state for _, a in found] == ["raised", "cleared"]
    # Three calm final windows after the breach: 11, 12 and 13.
    assert (found[1][0].record.window_start, found[1][0].record.final) == (at(13), True)
    assert found[1][1].updated_at == at(14)


@ORDERS
def test_a_count_that_stays_high_is_one_alert_and_keeps_its_acknowledgement(
    final_first: bool,
) -> None:
    """A count restarts near zero in each new window; with the finals three windows
    behind, that tiny live value must not clear the alert on a pre-burst final (which
    would raise it again as a second alert, losing the acknowledgement)."""
    engine = AlertEngine()
    values = [0.0] * 5 + [30.0] * 10 + [0.0] * 6  # a burst in windows 5..14
    records = realistic(
        "security.cyber.count", "city", values, lives=(0.03, 0.5, 1.0), final_first=final_first
    )
    first = next(
        i
        for i, s in enumerate(run(AlertEngine(), records))
        if any(a.rule == "security.cyber.burst" for a in s.out)
    )
    head = run(engine, records[: first + 1])
    acked = ack_after_raise(engine, head, "security.cyber.burst")
    steps = head + run(engine, records[first + 1 :])
    burst = transitions(steps, "security.cyber.burst")
    assert {a.alert_id for _, a in burst} == {acked.alert_id}
    assert [a.state for _, a in burst] == ["raised", "cleared"]
    # Raised on the live values of window 6 (two windows for for_seconds = 120).
    assert burst[0][0].record.window_start == at(6)
    clear_step, cleared = burst[1]
    assert (clear_step.record.window_start, clear_step.record.final) == (at(15), True)
    assert cleared.acknowledged_by == "op.lan"


def test_a_late_window_with_events_does_not_clear_a_silence_alert() -> None:
    """A window from before the raise (delivered late from another ioc.kpi partition)
    shows the station was not silent then; it says nothing about now, so the alert stays
    (and is not raised a second time for the same silence)."""
    engine = AlertEngine(silence_idle_advance=False, silence_settle_seconds=5)
    quiet, busy = "station:TEST-QUIET", "station:TEST-BUSY"
    run(engine, [kpi("water.level.max", quiet, 0, 1.0)])
    run(engine, [kpi("water.level.max", busy, m, 1.0) for m in range(13)])
    wall = T0 + timedelta(hours=1)
    raised = engine.tick(wall) + engine.tick(wall + timedelta(seconds=5))
    assert [(a.subject, a.state, a.raised_at) for a in raised] == [(quiet, "raised", at(11))]
    # Window 4 of the quiet station arrives late: not a clear, not a new alert.
    assert run(engine, [kpi("water.level.max", quiet, 4, 1.0)])[0].out == ()
    run(engine, [kpi("water.level.max", busy, m, 1.0) for m in range(13, 16)])
    later = engine.tick(wall + timedelta(seconds=10)) + engine.tick(wall + timedelta(seconds=15))
    assert later == []
    assert [a.alert_id for a in engine.active_alerts()] == [raised[0].alert_id]
    # A window after the raise clears it (a live count > 0 already proves presence).
    [back] = run(engine, [kpi("water.level.max", quiet, 15, 1.0, final=False)])[0].out
    assert (back.alert_id, back.state, back.updated_at) == (raised[0].alert_id, "cleared", at(16))


@ORDERS
def test_an_acknowledged_alert_follows_the_same_clearing_rule(final_first: bool) -> None:
    values = flood(5, 1, 8)  # the short flood of the issue
    records = realistic("water.level.max", SUBJECT, values, final_first=final_first)

    def clears(ack: bool) -> list[tuple[KpiRecord, str]]:
        engine = AlertEngine()
        out: list[tuple[KpiRecord, str]] = []
        for rec in records:
            for a in engine.on_kpi(rec):
                if a.rule == "water.level.alarm":
                    out.append((rec, a.state))
                    if ack and a.state == "raised":
                        engine.on_command(command(a.alert_id, "ack", "c1"))
        return out

    acked = clears(ack=True)
    assert acked == clears(ack=False)
    assert [s for _, s in acked] == ["raised", "cleared"]
    assert (acked[1][0].window_start, acked[1][0].final) == (at(6), True)


def test_the_raising_or_escalating_window_and_whether_it_was_live_are_recorded() -> None:
    engine = AlertEngine()
    [raised] = run(engine, [kpi("water.level.max", SUBJECT, 0, 2.2)])[0].out
    assert (raised.level, raised.on_live_window, raised.window_start) == (1, False, at(0))
    step = run(engine, [kpi("water.level.max", SUBJECT, 1, 2.6, final=False)])
    [(_, esc)] = transitions(step, "water.level.alarm")
    assert (esc.state, esc.level, esc.on_live_window, esc.window_start) == (
        "escalated",
        2,
        True,
        at(1),
    )


def test_alert_records_round_trip_and_old_records_without_the_window_still_parse() -> None:
    engine = AlertEngine()
    [raised] = run(engine, [kpi("water.level.max", SUBJECT, 0, 3.05, final=False)])[0].out
    assert AlertRecord.from_json(raised.to_json()) == raised
    old = {k: v for k, v in raised.to_dict().items() if k not in ("window_start", "on_live_window")}
    parsed = AlertRecord.from_dict(old)
    assert (parsed.window_start, parsed.on_live_window) == (None, False)
    assert replace(parsed, window_start=at(0), on_live_window=True) == raised


@pytest.mark.parametrize("with_window", [True, False], ids=["record", "old-record"])
def test_a_restored_alert_still_clears_only_after_its_window(with_window: bool) -> None:
    """After a restart with no replayed history, the published record tells the anchor
    (``window_start``; for a record from before that field, ``raised_at`` − window)."""
    records = realistic("water.level.max", SUBJECT, flood(5, 1, 8), final_first=True)
    first_raise = next(i for i, r in enumerate(records) if r.window_start == at(5))
    [(_, raised)] = transitions(run(AlertEngine(), records[: first_raise + 1]), "water.level.alarm")
    published = raised if with_window else replace(raised, window_start=None)
    engine = AlertEngine()
    engine.restore([published])
    alarm = transitions(run(engine, records[first_raise + 1 :]), "water.level.alarm")
    assert [(s.record.window_start, s.record.final, a.state) for s, a in alarm] == [
        (at(6), True, "cleared")
    ]
    assert alarm[0][1].alert_id == raised.alert_id


def test_a_live_record_of_a_window_already_final_is_ignored_unless_newer() -> None:
    engine = AlertEngine()
    assert run(engine, [kpi("water.level.max", SUBJECT, 0, 1.0, revision=3)])[0].out == ()
    stale = kpi("water.level.max", SUBJECT, 0, 3.05, final=False, revision=2)
    assert run(engine, [stale])[0].out == ()
    assert engine.active_alerts() == []
    # The stream worker re-created the window (a late pane): a higher revision is news.
    [(_, raised)] = transitions(
        run(engine, [kpi("water.level.max", SUBJECT, 0, 3.05, final=False, revision=4)]),
        "water.level.alarm",
    )
    assert raised.on_live_window


def test_after_an_operator_clear_only_a_calm_final_after_the_anchor_lifts_the_suppression() -> None:
    engine = AlertEngine()
    [raised] = run(engine, [kpi("water.level.max", SUBJECT, 5, 3.05, final=False)])[0].out
    engine.on_command(command(raised.alert_id, "clear", "c1"))
    steps = run(
        engine,
        [
            kpi("water.level.max", SUBJECT, 6, 1.0, final=False),
            kpi("water.level.max", SUBJECT, 4, 1.23),  # final, calm, but before the flood
            kpi("water.level.max", SUBJECT, 7, 3.05, final=False),  # the same flood goes on
        ],
    )
    assert transitions(steps, "water.level.alarm") == []
    # A calm final after the anchor lifts it: the next breach is a new alert.
    steps = run(
        engine,
        [
            kpi("water.level.max", SUBJECT, 8, 1.0, final=False),
            kpi("water.level.max", SUBJECT, 8, 1.0),
            kpi("water.level.max", SUBJECT, 9, 3.05, final=False),
        ],
    )
    [(_, again)] = transitions(steps, "water.level.alarm")
    assert again.state == "raised" and again.alert_id != raised.alert_id


@pytest.mark.parametrize(("lag_s", "clears"), [(600, True), (0, False)])
def test_finals_are_judged_only_within_the_final_lag(lag_s: int, clears: bool) -> None:
    engine = AlertEngine(final_lag_seconds=lag_s)
    records = realistic("water.level.max", SUBJECT, flood(2, 2, 6))
    states = [a.state for _, a in transitions(run(engine, records[:-3]), "water.level.alarm")]
    assert states == (["raised", "cleared"] if clears else ["raised"])


@ORDERS
def test_a_surge_alert_is_one_alert_cleared_on_the_factor_over_final_windows(
    final_first: bool,
) -> None:
    """Reports per minute: 10, then 40 for four windows, then 10 again. A new window's
    first live count is tiny: it must not clear the surge on a pre-surge final."""
    engine = AlertEngine()
    values = [10.0] * 12 + [40.0] * 4 + [10.0] * 8
    records = realistic(
        "feedback.open.count",
        "district:KM",
        values,
        lives=(0.1, 0.5, 1.0),
        final_first=final_first,
    )
    surge = transitions(run(engine, records), "feedback.reports.surge")
    assert [a.state for _, a in surge] == ["raised", "cleared"]
    assert len({a.alert_id for _, a in surge}) == 1
    (raise_step, _), (clear_step, cleared) = surge
    assert (raise_step.record.window_start, raise_step.record.final) == (at(12), False)
    # Window 16 (10 reports) against the mean of the final windows 6..15 (22): 0.45×.
    assert (clear_step.record.window_start, clear_step.record.final) == (at(16), True)
    assert cleared.value == pytest.approx(10 / 22)
