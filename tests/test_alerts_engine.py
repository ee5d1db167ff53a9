"""The alert state machine in memory: rules, durations, hysteresis, levels, commands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from events.flood import WATER_STATIONS, alarm_level
from events.records import AlertCommand, AlertRecord, KpiRecord
from streams.alerts.engine import AlertEngine
from streams.alerts.records import alert_id_for, alert_title
from streams.alerts.rules import RULES

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
STATION = sorted(WATER_STATIONS)[0]
LEVELS = WATER_STATIONS[STATION].alarm_levels


def kpi(
    name: str,
    scope: str,
    minute: float,
    value: float | None,
    *,
    count: int = 1,
    final: bool = True,
    window: int = 60,
    revision: int = 0,
) -> KpiRecord:
    start = T0 + timedelta(minutes=minute)
    return KpiRecord(
        kpi=name,
        scope=scope,
        window_start=start,
        window_end=start + timedelta(seconds=window),
        value=value,
        count=count,
        final=final,
        revision=revision,
        computed_at=start + timedelta(seconds=window),
    )


def feed(engine: AlertEngine, records: list[KpiRecord]) -> list[AlertRecord]:
    return [out for rec in records for out in engine.on_kpi(rec)]


def aqi(minute: float, value: float, **kw: object) -> KpiRecord:
    return kpi("air.aqi.vn", "district:HD", minute, value, **kw)  # type: ignore[arg-type]


def command(
    alert_id: str, name: str, cid: str, *, by: str = "op.lan", assignee: str | None = None
) -> AlertCommand:
    return AlertCommand(
        command_id=cid,
        alert_id=alert_id,
        command=name,  # type: ignore[arg-type]
        by=by,
        at=T0 + timedelta(hours=1),
        assignee=assignee,
    )


def raised_aqi(engine: AlertEngine) -> AlertRecord:
    out = feed(engine, [aqi(m, 170) for m in range(10)])
    assert [r.state for r in out] == ["raised"]
    return out[0]


def test_threshold_needs_its_duration() -> None:
    engine = AlertEngine()
    assert feed(engine, [aqi(m, 170) for m in range(9)]) == []
    [alert] = engine.on_kpi(aqi(9, 170))
    assert alert.state == "raised"
    assert alert.rule == "air.aqi.high" and alert.subject == "district:HD"
    assert alert.raised_at == T0 + timedelta(minutes=10)
    assert (alert.level, alert.severity, alert.threshold, alert.value) == (1, "warning", 150, 170)
    assert alert.revision == 1
    assert alert.alert_id == alert_id_for("air.aqi.high", "district:HD", alert.raised_at)


def test_a_dip_or_a_gap_restarts_the_duration() -> None:
    engine = AlertEngine()
    records = [aqi(m, 170) for m in range(6)] + [aqi(6, 140)]
    records += [aqi(m, 170) for m in range(7, 16)]  # 9 minutes: one short
    records += [aqi(m, 170) for m in range(17, 26)]  # after a missing minute: 9 again
    assert feed(engine, records) == []
    assert [r.state for r in engine.on_kpi(aqi(26, 170))] == ["raised"]


def test_live_values_count_toward_the_duration_and_final_values_replace_them() -> None:
    engine = AlertEngine()
    assert feed(engine, [aqi(m, 170) for m in range(9)]) == []
    # A live value of the 10th window below the threshold, then its final value above.
    assert engine.on_kpi(aqi(9, 120, final=False)) == []
    assert [r.state for r in engine.on_kpi(aqi(9, 171, final=True))] == ["raised"]


def test_hysteresis_prevents_flapping() -> None:
    engine = AlertEngine()
    alert = raised_aqi(engine)
    noisy = [aqi(10 + i, v) for i, v in enumerate([149, 155, 131, 145, 151, 130])]
    assert feed(engine, noisy) == []
    [cleared] = engine.on_kpi(aqi(16, 129))
    assert cleared.state == "cleared" and cleared.alert_id == alert.alert_id
    assert cleared.revision == 2 and cleared.value == 129
    assert engine.active_alerts() == []


def test_threshold_escalates_through_levels() -> None:
    engine = AlertEngine()
    alert = raised_aqi(engine)
    [second] = engine.on_kpi(aqi(10, 250))
    [third] = engine.on_kpi(aqi(11, 320))
    assert (second.state, second.level, second.severity, second.threshold) == (
        "escalated",
        2,
        "critical",
        200,
    )
    assert (third.level, third.revision, third.alert_id) == (3, 3, alert.alert_id)
    assert engine.on_kpi(aqi(12, 210)) == []  # no de-escalation; no clear above 130


def test_below_direction_rule_with_hysteresis() -> None:
    engine = AlertEngine()
    speed = [kpi("traffic.speed.avg", "district:CG", m, 8.0) for m in range(5)]
    [alert] = feed(engine, speed)
    assert (alert.rule, alert.state, alert.level) == ("traffic.congestion", "raised", 1)
    assert engine.on_kpi(kpi("traffic.speed.avg", "district:CG", 5, 4.0))[0].level == 2
    assert engine.on_kpi(kpi("traffic.speed.avg", "district:CG", 6, 12.0)) == []
    [cleared] = engine.on_kpi(kpi("traffic.speed.avg", "district:CG", 7, 16.0))
    assert cleared.state == "cleared"


def test_flood_alarm_levels_escalate_in_order_and_clear_with_hysteresis() -> None:
    engine = AlertEngine()
    bd1, bd2, bd3 = LEVELS
    subject = f"station:{STATION}"
    values = [bd1 - 0.5, bd1 + 0.01, bd2 + 0.01, bd3 + 0.2, bd1 - 0.05, bd1 - 0.2]
    out = [
        (m, r)
        for m, v in enumerate(values)
        for r in engine.on_kpi(kpi("water.level.max", subject, m, v))
        if r.rule == "water.level.alarm"
    ]
    assert [(m, r.state, r.level) for m, r in out] == [
        (1, "raised", 1),
        (2, "escalated", 2),
        (3, "escalated", 3),
        (5, "cleared", 3),
    ]
    assert [alarm_level(STATION, values[m]) for m, _ in out[:3]] == [1, 2, 3]
    assert "BĐ III" in out[2][1].title
    # Both languages, built the same way: rule title, level, subject.
    name = WATER_STATIONS[STATION].name
    assert out[0][1].title == f"Mực nước vượt báo động – BĐ I: {name}"
    assert out[0][1].title_en == f"Water level above flood alarm level – level I: {name} station"
    assert out[2][1].title_en == (
        f"Water level above flood alarm level – level III: {name} station"
    )
    assert {r.alert_id for _, r in out} == {out[0][1].alert_id}


def test_unknown_station_is_ignored_by_the_alarm_level_rule() -> None:
    engine = AlertEngine()
    assert engine.on_kpi(kpi("water.level.max", "station:NOT-A-STATION", 0, 99.0)) == []


def test_commands_ack_assign_clear_are_applied_and_echoed() -> None:
    engine = AlertEngine()
    alert = raised_aqi(engine)
    ack = engine.on_command(command(alert.alert_id, "ack", "c1", by="op.lan"))
    [acked] = ack.records
    assert (acked.state, acked.acknowledged_by, acked.revision) == ("acknowledged", "op.lan", 2)
    assert acked.updated_at == T0 + timedelta(hours=1)
    [assigned] = engine.on_command(
        command(alert.alert_id, "assign", "c2", assignee="doi.cnmt")
    ).records
    assert (assigned.state, assigned.assignee, assigned.revision) == (
        "acknowledged",
        "doi.cnmt",
        3,
    )
    [cleared] = engine.on_command(command(alert.alert_id, "clear", "c3")).records
    assert (cleared.state, cleared.revision) == ("cleared", 4)
    assert engine.active_alerts() == []


def test_bad_commands_are_rejected_with_a_reason() -> None:
    engine = AlertEngine()
    alert = raised_aqi(engine)
    unknown = engine.on_command(command("al-nope", "ack", "c1"))
    assert unknown.rejection is not None and unknown.rejection.reason == "unknown_alert"
    assert engine.on_command(command(alert.alert_id, "ack", "c2")).records
    again = engine.on_command(command(alert.alert_id, "ack", "c3", by="op.other"))
    assert again.rejection is not None and again.rejection.reason == "already_acknowledged"
    engine.on_command(command(alert.alert_id, "clear", "c4"))
    late = engine.on_command(command(alert.alert_id, "assign", "c5", assignee="x"))
    assert late.rejection is not None and late.rejection.reason == "alert_cleared"
    assert late.records == ()


def test_duplicate_command_ids_are_idempotent() -> None:
    engine = AlertEngine()
    alert = raised_aqi(engine)
    first = engine.on_command(command(alert.alert_id, "assign", "same", assignee="a"))
    second = engine.on_command(command(alert.alert_id, "assign", "same", assignee="a"))
    assert len(first.records) == 1 and not first.duplicate
    assert second.duplicate and second.records == () and second.rejection is None
    assert engine.active_alerts()[0].revision == 2


def test_escalation_reopens_an_acknowledged_alert() -> None:
    engine = AlertEngine()
    alert = raised_aqi(engine)
    engine.on_command(command(alert.alert_id, "ack", "c1"))
    [esc] = engine.on_kpi(aqi(10, 230))
    assert (esc.state, esc.level, esc.acknowledged_by) == ("escalated", 2, "op.lan")
    assert engine.on_command(command(alert.alert_id, "ack", "c2")).records[0].level == 2


def test_operator_clear_is_not_undone_until_the_condition_clears() -> None:
    engine = AlertEngine()
    alert = raised_aqi(engine)
    engine.on_command(command(alert.alert_id, "clear", "c1"))
    assert feed(engine, [aqi(m, 170) for m in range(10, 25)]) == []
    assert feed(engine, [aqi(25, 100)]) == []
    [again] = feed(engine, [aqi(m, 170) for m in range(26, 36)])
    assert again.state == "raised" and again.alert_id != alert.alert_id


def test_other_window_sizes_and_scopes_do_not_match() -> None:
    engine = AlertEngine()
    hourly = [aqi(60 * h, 300, window=3600) for h in range(3)]
    city = [kpi("air.aqi.vn", "city", m, 300) for m in range(15)]
    assert feed(engine, hourly + city) == []


def test_late_revision_of_an_older_window_does_not_move_the_state() -> None:
    engine = AlertEngine()
    alert = raised_aqi(engine)
    assert engine.on_kpi(aqi(10, 165)) == []
    assert engine.on_kpi(aqi(3, 20, revision=2)) == []  # late, older window
    assert engine.stale_records == 1
    assert engine.active_alerts() == [alert]


def test_rate_of_change_rise() -> None:
    engine = AlertEngine()
    subject = "station:TEST-RISE"  # not in the registry: only rate and silence apply
    slow = [kpi("water.level.max", subject, m, 1.0 + 0.02 * m) for m in range(12)]
    assert feed(engine, slow) == []
    fast = [kpi("water.level.max", subject, 12 + m, 1.24 + 0.05 * m) for m in range(8)]
    out = feed(engine, fast)
    assert [(r.rule, r.state) for r in out] == [("water.level.rising", "raised")]
    # Minute 16 (1.44 m) against minute 6 (1.12 m): the first rise of >= 0.3 m.
    assert out[0].raised_at == T0 + timedelta(minutes=17)
    assert out[0].value == pytest.approx(0.32)
    flat = [kpi("water.level.max", subject, 20 + m, 1.6) for m in range(11)]
    [cleared] = feed(engine, flat)
    assert cleared.state == "cleared" and cleared.alert_id == out[0].alert_id


def test_rate_of_change_factor_needs_a_baseline_and_a_minimum() -> None:
    engine = AlertEngine()
    reports = [kpi("feedback.open.count", "district:KM", m, 1.0) for m in range(10)]
    reports.append(kpi("feedback.open.count", "district:KM", 10, 4.0))  # 4x, but only 4
    assert feed(engine, reports) == []
    engine = AlertEngine()
    reports = [kpi("feedback.open.count", "district:KM", m, 10.0) for m in range(10)]
    assert feed(engine, reports) == []
    assert engine.on_kpi(kpi("feedback.open.count", "district:KM", 10, 29.0)) == []  # 2.9x
    [surge] = engine.on_kpi(kpi("feedback.open.count", "district:KM", 11, 36.0))
    assert (surge.rule, surge.state) == ("feedback.reports.surge", "raised")
    assert surge.value == pytest.approx(36 / 11.9)
    # A first value with no baseline is no surge.
    fresh = AlertEngine()
    assert fresh.on_kpi(kpi("emergency.calls.count", "city", 0, 500.0)) == []


def event_time_engine() -> AlertEngine:
    """Silence from event time only (no idle advance from the wall clock)."""
    return AlertEngine(silence_idle_advance=False, silence_settle_seconds=5)


def settled_tick(engine: AlertEngine, wall: datetime) -> list[AlertRecord]:
    """Two ticks 5 s apart: the second judges silence at the clock of the first."""
    first = engine.tick(wall)
    return first + engine.tick(wall + timedelta(seconds=5))


def test_silence_from_event_time() -> None:
    engine = event_time_engine()
    quiet, busy = "station:TEST-QUIET", "station:TEST-BUSY"
    records = [kpi("water.level.max", s, m, 1.0) for m in range(3) for s in (quiet, busy)]
    records += [kpi("water.level.max", busy, m, 1.0) for m in range(3, 12)]
    feed(engine, records)
    assert settled_tick(engine, T0) == []  # 9 minutes of silence so far
    engine.on_kpi(kpi("water.level.max", busy, 12, 1.0))
    assert engine.tick(T0 + timedelta(seconds=6)) == []  # not settled yet
    offline = [r for r in settled_tick(engine, T0 + timedelta(seconds=7))]
    assert [(r.rule, r.subject, r.state) for r in offline] == [
        ("water.station.offline", quiet, "raised")
    ]
    # Last window with events ended at minute 3; offline after 10 minutes of silence.
    assert offline[0].raised_at == T0 + timedelta(minutes=13)
    assert settled_tick(engine, T0 + timedelta(seconds=20)) == []  # one alert per subject
    [back] = engine.on_kpi(kpi("water.level.max", quiet, 14, 1.0))
    assert back.state == "cleared" and back.alert_id == offline[0].alert_id


def test_a_jump_of_the_event_clock_does_not_call_everyone_offline() -> None:
    # The pipeline resumes after a pause: the first window of the new time must not
    # make the stations whose windows follow it seconds later look silent.
    engine = event_time_engine()
    stations = [f"station:TEST-J{i}" for i in range(5)]
    feed(engine, [kpi("water.level.max", s, 0, 1.0) for s in stations])
    assert settled_tick(engine, T0) == []
    feed(engine, [kpi("water.level.max", stations[0], 60, 1.0)])
    assert engine.tick(T0 + timedelta(seconds=10)) == []
    feed(engine, [kpi("water.level.max", s, 60, 1.0) for s in stations[1:4]])
    assert engine.tick(T0 + timedelta(seconds=13)) == []
    late = engine.tick(T0 + timedelta(seconds=15))  # judged at the clock of second 10
    assert [(r.rule, r.subject) for r in late] == [("water.station.offline", stations[4])]


def test_long_windows_do_not_move_the_silence_clock() -> None:
    # An open hourly window ends up to an hour after the events seen so far.
    engine = event_time_engine()
    feed(engine, [kpi("water.level.max", "station:TEST-H", 0, 1.0)])
    feed(engine, [kpi("water.level.max", "city", 0, 1.0, window=3600, final=False)])
    feed(engine, [kpi("traffic.speed.avg", "city", 0, 30.0, window=900, final=False)])
    assert settled_tick(engine, T0) == []
    assert engine.clock_ms == int((T0 + timedelta(minutes=1)).timestamp() * 1000)


def test_empty_windows_do_not_count_as_presence() -> None:
    engine = event_time_engine()
    subject = "station:TEST-EMPTY"
    feed(engine, [kpi("water.level.max", subject, 0, 1.0)])
    records = [kpi("water.level.max", subject, m, None, count=0) for m in range(1, 11)]
    assert feed(engine, records) == []
    out = settled_tick(engine, T0)
    assert [(r.rule, r.state) for r in out] == [("water.station.offline", "raised")]


def test_silence_from_the_wall_clock_when_everything_is_idle() -> None:
    engine = AlertEngine(silence_grace_seconds=120, silence_settle_seconds=5)
    subject = "station:TEST-IDLE"
    feed(engine, [kpi("water.level.max", subject, 0, 1.0)])  # seen until T0 + 1 min
    # Ticks at 12:59 and 13:04: judged at 12:59 - 2 min (grace) = 10:59 -> still online.
    assert settled_tick(engine, T0 + timedelta(minutes=12, seconds=59)) == []
    # At 13:09 the tick of 13:04 has settled: 11:04 >= last seen (1:00) + 10 min.
    [alert] = engine.tick(T0 + timedelta(minutes=13, seconds=9))
    assert (alert.state, alert.subject) == ("raised", subject)
    assert alert.raised_at == T0 + timedelta(minutes=11)
    assert settled_tick(engine, T0 + timedelta(minutes=30)) == []  # one alert per subject


def test_replay_gives_the_same_records_and_ids() -> None:
    records = [aqi(m, 170 + 10 * m) for m in range(20)] + [aqi(20, 100)]
    records += [kpi("water.level.max", f"station:{STATION}", m, LEVELS[1]) for m in range(3)]
    assert feed(AlertEngine(), records) == feed(AlertEngine(), records)


def test_restore_continues_published_alerts() -> None:
    first = AlertEngine()
    alert = raised_aqi(first)
    [acked] = first.on_command(command(alert.alert_id, "ack", "c1")).records
    # A restarted engine: replayed KPI (outputs discarded), then the published states.
    second = AlertEngine()
    feed(second, [aqi(m, 170) for m in range(10)])
    second.restore([acked])
    assert second.active_alerts() == [acked]
    [cleared] = second.on_kpi(aqi(10, 100))
    assert (cleared.alert_id, cleared.state, cleared.revision) == (alert.alert_id, "cleared", 3)
    # Restoring a cleared state forgets the replayed alert.
    third = AlertEngine()
    feed(third, [aqi(m, 170) for m in range(10)])
    third.restore([cleared])
    assert third.active_alerts() == []
    assert third.on_command(command(alert.alert_id, "ack", "c9")).rejection is not None


def test_windows_arriving_out_of_order_give_the_same_alert() -> None:
    # ioc.kpi is keyed per window, so a scope's windows come from several partitions.
    in_order = feed(AlertEngine(), [aqi(m, 170) for m in range(10)])
    engine = AlertEngine()
    shuffled = [aqi(m, 170) for m in (0, 2, 1, 3, 5, 4, 6, 9, 8)]
    assert feed(engine, shuffled) == []  # window 7 is still missing
    assert engine.on_kpi(aqi(7, 170)) == in_order
    assert in_order[0].raised_at == T0 + timedelta(minutes=10)


def test_live_partial_values_never_clear() -> None:
    # Counts restart near zero when a window opens: clearing on them would flap.
    engine = AlertEngine()

    def cyber(minute: int, value: float, final: bool = True) -> KpiRecord:
        return kpi("security.cyber.count", "city", minute, value, final=final)

    [alert] = feed(engine, [cyber(0, 30), cyber(1, 30)])
    assert (alert.rule, alert.raised_at) == ("security.cyber.burst", T0 + timedelta(minutes=2))
    assert feed(engine, [cyber(2, 1, final=False), cyber(2, 25, final=False)]) == []
    assert feed(engine, [cyber(2, 31), cyber(3, 0, final=False)]) == []
    [cleared] = feed(engine, [cyber(3, 1), cyber(4, 0, final=False)])
    assert (cleared.state, cleared.updated_at) == ("cleared", T0 + timedelta(minutes=4))


def test_a_live_value_breaching_again_holds_the_clear() -> None:
    engine = AlertEngine()
    raised_aqi(engine)
    # The final value of minute 10 is calm, but minute 11 is already past 150 again.
    assert feed(engine, [aqi(11, 160, final=False), aqi(10, 120)]) == []
    [cleared] = feed(engine, [aqi(11, 125)])
    assert cleared.state == "cleared"


def test_alert_titles_in_both_languages_name_the_rule_level_and_subject() -> None:
    aqi = next(r for r in RULES if r.id == "air.aqi.high")
    assert alert_title(aqi, "district:HD", 1) == (
        "Chất lượng không khí xấu (VN_AQI > 150): Thành phố Hải Dương"
    )
    assert alert_title(aqi, "district:HD", 1, "en") == (
        "Poor air quality (VN_AQI > 150): Hai Duong City"
    )
    assert alert_title(aqi, "city", 2, "en").endswith(" – level 2: whole province")
