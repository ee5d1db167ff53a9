"""The simulator's pure core: determinism, validity, scenario shapes, daily patterns,
faults, injections and pacing. No broker needed."""

from __future__ import annotations

import json
import math
import statistics
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from events import health
from events.aqi import vn_aqi
from events.catalogue import EVENT_TYPES, key_for
from events.envelope import decode, encode
from events.errors import ConfigurationError, InvalidEventError
from events.flood import WATER_STATIONS, alarm_level
from events.geography import DISTRICTS, SITE_RADIUS_KM
from simulators.command import RateMeter, render
from simulators.generator import ProvinceSimulator
from simulators.injection import MALFORMED_KINDS, Injector, malformed_bytes
from simulators.metrics import FAILURE_WINDOW_S, SimulatorMetrics
from simulators.model import build_province
from simulators.ratelimit import TokenBucket
from simulators.runner import Progress
from simulators.scenarios import SCENARIO_NAMES, ScenarioRun, Schedule, parse_scenarios
from simulators.settings import SimulatorSettings, default_start
from simulators.signals import FaultModel, local_clock

# Monday 2 March 2026, 07:00 in Vietnam (00:00 UTC): the morning rush is about to start.
MONDAY_7AM = datetime(2026, 3, 2, 0, 0, tzinfo=UTC).timestamp()
EVENTS_PER_SIM_S = 100


def make_sim(
    scenario: str = "none", seed: int = 7, start: float = MONDAY_7AM, faults: bool = False
) -> ProvinceSimulator:
    province = build_province(seed)
    schedule = Schedule(parse_scenarios(scenario), province, start)
    return ProvinceSimulator(
        province, schedule, seed=seed, faults=FaultModel(seed) if faults else None
    )


def simulate(
    sim: ProvinceSimulator, start: float, end: float, per_s: float = EVENTS_PER_SIM_S
) -> list[dict[str, Any]]:
    """Events for [start, end) in 5-second calls, like the publisher's batches."""
    out: list[dict[str, Any]] = []
    t = start
    while t < end:
        nxt = min(end, t + 5.0)
        out.extend(sim.generate(t, nxt, round((nxt - t) * per_s)))
        t = nxt
    return out


def epoch(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["time"]).timestamp()


def of_type(events: Iterable[dict[str, Any]], suffix: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == f"vn.ioc.{suffix}"]


@pytest.fixture(scope="module")
def all_scenarios() -> tuple[ProvinceSimulator, ScenarioRun, list[dict[str, Any]]]:
    """Every scenario at once: a minute of normal operation, the 15-minute runs, a minute after."""
    sim = make_sim(",".join(SCENARIO_NAMES), faults=True)
    runs = sim.schedule.runs()
    first = runs[0]
    events = simulate(sim, MONDAY_7AM, first.end_s + 60.0)
    return sim, first, events


def run_of(sim: ProvinceSimulator, name: str) -> ScenarioRun:
    return next(r for r in sim.schedule.runs() if r.name == name)


# -- determinism and validity ---------------------------------------------------------


def test_same_seed_gives_the_same_events_and_another_seed_does_not() -> None:
    a = simulate(make_sim("cycle", seed=11, faults=True), MONDAY_7AM, MONDAY_7AM + 120)
    b = simulate(make_sim("cycle", seed=11, faults=True), MONDAY_7AM, MONDAY_7AM + 120)
    c = simulate(make_sim("cycle", seed=12, faults=True), MONDAY_7AM, MONDAY_7AM + 120)
    assert len(a) == len(b) == 120 * EVENTS_PER_SIM_S
    assert [encode(e) for e in a] == [encode(e) for e in b]
    assert [e["data"] for e in a] != [e["data"] for e in c]
    assert len({e["id"] for e in a}) == len(a)


def test_every_generated_event_validates_and_every_type_is_produced(
    all_scenarios: tuple[ProvinceSimulator, ScenarioRun, list[dict[str, Any]]],
) -> None:
    _, _, events = all_scenarios
    for e in events:
        decoded = decode(encode(e))
        assert decoded.type == e["type"]
        assert key_for(decoded) == str(e["data"][EVENT_TYPES[e["type"]].key_field]).encode()
    assert {e["type"] for e in events} == set(EVENT_TYPES)
    times = [epoch(e) for e in events]
    assert times == sorted(times)


def test_sensor_events_carry_the_position_of_their_site_near_its_district_seat(
    all_scenarios: tuple[ProvinceSimulator, ScenarioRun, list[dict[str, Any]]],
) -> None:
    sim, _, events = all_scenarios
    located = {t for t, et in EVENT_TYPES.items() if et.field("lat") is not None}
    assert located == {
        f"vn.ioc.{n}"
        for n in (
            "traffic.observed",
            "traffic.incident",
            "air.observed",
            "water.observed",
            "water.quality",
            "energy.metered",
            "energy.streetlight",
            "energy.outage",
            "parking.occupancy",
        )
    }
    seen = set()
    for e in events:
        if e["type"] not in located or "lat" not in e["data"]:
            continue  # an injected malformed event may lack any field
        site = sim.province.site(str(e["data"][EVENT_TYPES[e["type"]].key_field]))
        assert (e["data"]["lat"], e["data"]["lon"]) == (site.lat, site.lon)
        seen.add(e["type"])
    assert seen == located
    for site in sim.province.all_sites():
        seat = DISTRICTS[site.district]
        km_north = (site.lat - seat.lat) * 111.32
        km_east = (site.lon - seat.lon) * 111.32 * math.cos(math.radians(seat.lat))
        if site.kind == "water_station":
            station = WATER_STATIONS[site.site_id]  # a real place on its river
            assert (site.lat, site.lon) == (station.lat, station.lon)
        else:
            assert 0.4 - 1e-6 <= math.hypot(km_north, km_east) <= SITE_RADIUS_KM + 1e-6
    # Hashed from the id, not drawn: another seed puts every site at the same place.
    other = build_province(sim.province.seed + 1)
    assert [(s.lat, s.lon) for s in other.air_stations] == [
        (s.lat, s.lon) for s in sim.province.air_stations
    ]


# -- scenario shapes ------------------------------------------------------------------


def test_flood_surge_crosses_alarm_levels_one_two_three_in_order(
    all_scenarios: tuple[ProvinceSimulator, ScenarioRun, list[dict[str, Any]]],
) -> None:
    sim, _, events = all_scenarios
    run = run_of(sim, "flood")
    readings = [
        (epoch(e), alarm_level(run.target, e["data"]["level_m"]))
        for e in of_type(events, "water.observed")
        if e["data"]["station_id"] == run.target
    ]
    assert len(readings) > 100
    before = [lvl for t, lvl in readings if t < run.start_s]
    assert before and max(before) == 0
    first_reached = {level: min(t for t, lvl in readings if lvl >= level) for level in (1, 2, 3)}
    assert run.start_s < first_reached[1] < first_reached[2] < first_reached[3] < run.peak_s
    after = [lvl for t, lvl in readings if t >= run.end_s]
    assert after and max(after) == 0


def test_pollution_episode_raises_vn_aqi_above_150_in_the_target_district(
    all_scenarios: tuple[ProvinceSimulator, ScenarioRun, list[dict[str, Any]]],
) -> None:
    sim, _, events = all_scenarios
    run = run_of(sim, "pollution")
    pollutants = ("pm25", "pm10", "no2", "so2", "co", "o3")

    def aqi(lo: float, hi: float) -> int:
        obs = [
            e["data"]
            for e in of_type(events, "air.observed")
            if e["data"]["district"] == run.target and lo <= epoch(e) < hi
        ]
        assert obs
        means = {p: statistics.fmean(o[p] for o in obs) for p in pollutants}
        result = vn_aqi(means)
        assert result is not None
        return result.value

    plateau = (
        run.start_s + 0.45 * (run.end_s - run.start_s),
        run.start_s + 0.65 * (run.end_s - run.start_s),
    )
    assert aqi(*plateau) > 150
    assert aqi(MONDAY_7AM, run.start_s) < 150


def test_traffic_incident_collapses_speed_on_its_segment_and_is_reported_then_cleared(
    all_scenarios: tuple[ProvinceSimulator, ScenarioRun, list[dict[str, Any]]],
) -> None:
    sim, _, events = all_scenarios
    run = run_of(sim, "traffic_incident")

    def speed(lo: float, hi: float) -> float:
        return statistics.fmean(
            e["data"]["avg_speed_kmh"]
            for e in of_type(events, "traffic.observed")
            if e["data"]["segment_id"] == run.target and lo <= epoch(e) < hi
        )

    span = run.end_s - run.start_s
    during = speed(run.start_s + 0.45 * span, run.start_s + 0.65 * span)
    assert during < 0.4 * speed(MONDAY_7AM, run.start_s)
    notices = [
        e["data"]["status"]
        for e in of_type(events, "traffic.incident")
        if e["data"]["segment_id"] == run.target and e["data"]["kind"] == "collision"
    ]
    assert notices[0] == "reported" and "cleared" in notices


def test_dos_burst_multiplies_portal_requests_and_raises_ddos_reports(
    all_scenarios: tuple[ProvinceSimulator, ScenarioRun, list[dict[str, Any]]],
) -> None:
    sim, _, events = all_scenarios
    run = run_of(sim, "dos")

    def requests(lo: float, hi: float) -> float:
        return statistics.fmean(
            e["data"]["requests"] for e in of_type(events, "services.portal") if lo <= epoch(e) < hi
        )

    span = run.end_s - run.start_s
    assert requests(run.start_s + 0.45 * span, run.start_s + 0.65 * span) > 6 * requests(
        MONDAY_7AM, run.start_s
    )
    ddos = [e for e in of_type(events, "security.cyber") if e["data"]["kind"] == "ddos"]
    assert len(ddos) > 50
    assert all(run.start_s <= epoch(e) < run.end_s for e in ddos)


def test_report_spike_multiplies_new_reports_from_the_target_district(
    all_scenarios: tuple[ProvinceSimulator, ScenarioRun, list[dict[str, Any]]],
) -> None:
    sim, _, events = all_scenarios
    run = run_of(sim, "report_spike")

    def opened_per_min(lo: float, hi: float) -> float:
        n = sum(
            1
            for e in of_type(events, "feedback.report")
            if e["data"]["district"] == run.target
            and e["data"]["status"] == "opened"
            and lo <= epoch(e) < hi
        )
        return n / ((hi - lo) / 60.0)

    span = run.end_s - run.start_s
    assert opened_per_min(run.start_s + 0.45 * span, run.start_s + 0.65 * span) > 4 * (
        opened_per_min(MONDAY_7AM, run.start_s) + 0.5
    )


def test_cycle_runs_every_scenario_in_turn() -> None:
    province = build_province(3)
    schedule = Schedule(("cycle",), province, MONDAY_7AM)
    names = [r.name for r in schedule.runs()]
    assert names == list(SCENARIO_NAMES)
    first = schedule.runs()[0]
    assert schedule.active(first.start_s - 1) == ()
    assert [r.name for r in schedule.active(first.peak_s)] == [first.name]


# -- daily patterns -------------------------------------------------------------------


def _window(hour_local: float, minutes: float = 10.0, seed: int = 5) -> list[dict[str, Any]]:
    # Monday in Vietnam: hour_local - 7 h in UTC on 2 March 2026.
    start = MONDAY_7AM + (hour_local - 7.0) * 3600.0
    return simulate(make_sim(seed=seed, start=start), start, start + minutes * 60.0)


def test_rush_hour_traffic_is_heavier_and_slower_than_night_traffic() -> None:
    rush = of_type(_window(7.5), "traffic.observed")
    night = of_type(_window(2.0), "traffic.observed")
    assert local_clock(epoch(rush[0]))[0] == pytest.approx(7.5, abs=0.01)
    rush_count = statistics.fmean(e["data"]["vehicle_count"] for e in rush)
    night_count = statistics.fmean(e["data"]["vehicle_count"] for e in night)
    assert rush_count > 5 * night_count
    rush_speed = statistics.fmean(e["data"]["avg_speed_kmh"] for e in rush)
    night_speed = statistics.fmean(e["data"]["avg_speed_kmh"] for e in night)
    assert rush_speed < 0.8 * night_speed


def test_dossiers_follow_office_hours_and_streetlights_follow_the_night() -> None:
    morning, night = _window(9.5), _window(22.5)
    assert len(of_type(morning, "services.dossier")) > 4 * len(of_type(night, "services.dossier"))
    lit_night = statistics.fmean(
        e["data"]["lamps_on"] for e in of_type(night, "energy.streetlight")
    )
    lit_day = statistics.fmean(
        e["data"]["lamps_on"] for e in of_type(morning, "energy.streetlight")
    )
    assert lit_night > 30 and lit_day < 1


def test_weekend_has_no_morning_rush() -> None:
    saturday = MONDAY_7AM + 5 * 86400 + 0.5 * 3600  # Saturday 07:30
    weekend = of_type(
        simulate(make_sim(start=saturday), saturday, saturday + 600), "traffic.observed"
    )
    weekday = of_type(_window(7.5), "traffic.observed")
    assert statistics.fmean(e["data"]["vehicle_count"] for e in weekend) < 0.6 * statistics.fmean(
        e["data"]["vehicle_count"] for e in weekday
    )


# -- sensor faults --------------------------------------------------------------------


def test_fault_model_is_deterministic_and_rare() -> None:
    model = FaultModel(seed=9)
    states = Counter(model.state(i, MONDAY_7AM + b * 1800) for i in range(300) for b in range(100))
    assert states == Counter(
        FaultModel(seed=9).state(i, MONDAY_7AM + b * 1800) for i in range(300) for b in range(100)
    )
    assert 0.005 < states["stuck"] / 30000 < 0.02
    assert 0.01 < states["dropout"] / 30000 < 0.035


def test_stuck_sensors_repeat_their_reading_and_dropped_out_ones_fall_silent() -> None:
    sim = make_sim(seed=21, faults=True)
    faults = sim.faults
    assert faults is not None
    events = simulate(sim, MONDAY_7AM, MONDAY_7AM + 1800.0, per_s=60)
    by_segment: dict[str, list[dict[str, Any]]] = {}
    for e in of_type(events, "traffic.observed"):
        by_segment.setdefault(e["data"]["segment_id"], []).append(e["data"])
    states = {s.site_id: faults.state(s.index, MONDAY_7AM) for s in sim.province.segments}
    assert "stuck" in states.values() or "dropout" in states.values()
    for segment_id, state in states.items():
        readings = by_segment.get(segment_id, [])
        if state == "dropout":
            assert readings == []
        elif state == "stuck" and len(readings) > 2:
            assert all(r == readings[1] for r in readings[1:])
        elif state == "ok":
            assert len({r["avg_speed_kmh"] for r in readings}) > 1


# -- injections -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_each_kind_of_malformed_event_is_rejected_for_that_reason(kind: str) -> None:
    event = make_sim().generate(MONDAY_7AM, MONDAY_7AM + 1, 1)[0]
    with pytest.raises(InvalidEventError) as err:
        decode(malformed_bytes(event, kind))
    assert err.value.reason == kind


def test_injector_applies_its_fractions() -> None:
    events = simulate(make_sim(seed=2), MONDAY_7AM, MONDAY_7AM + 100)
    injector = Injector(
        seed=1, late=0.05, late_by_s=900, out_of_order=0.05, duplicates=0.05, malformed=0.05
    )
    records = injector.records(events)
    kinds = Counter(r.kind.split(":")[0] for r in records)
    n = len(events)
    for kind in ("late", "out_of_order", "duplicate", "malformed"):
        assert 0.035 * n < kinds[kind] < 0.065 * n, kind
    assert len(records) == n + kinds["duplicate"]
    original_time = {e["id"]: epoch(e) for e in events}
    for r in records:
        if r.kind.startswith("malformed"):
            with pytest.raises(InvalidEventError):
                decode(r.value)
            continue
        decoded = decode(r.value)
        assert r.topic == EVENT_TYPES[decoded.type].topic and r.key == key_for(decoded)
        lag = original_time[decoded.id] - decoded.time.timestamp()
        if r.kind == "late":
            assert 700 < lag < 1100
        elif r.kind == "out_of_order":
            assert 0.9 < lag <= 30.1
        else:
            assert abs(lag) < 0.002
    assert Injector().records(events[:10]) == [
        r for r in Injector(seed=5).records(events[:10]) if r.kind == "ok"
    ]


# -- pacing and settings ----------------------------------------------------------------


def test_token_bucket_paces_batches_to_the_rate_and_catches_up_after_a_stall() -> None:
    bucket = TokenBucket.for_rate(20_000)
    taken, now = 0, 0.0
    while now < 10.0:
        taken += bucket.take(now, most=1000)
        now += 0.01 if not 4.0 <= now < 4.5 else 0.5  # one half-second stall
    assert 20_000 * 10 * 0.98 < taken <= 20_000 * 10 + 1
    slow = TokenBucket.for_rate(3.0)
    assert slow.take(0.0) == 1
    assert slow.take(0.2) == 0
    assert slow.wait_time(0.2) == pytest.approx(1 / 3 - 0.2, abs=0.01)
    assert slow.take(1.0) == 3  # 0.6 left + 0.8 s x 3/s


def test_settings_reject_bad_scenarios_and_impossible_fractions() -> None:
    with pytest.raises(ConfigurationError, match="unknown scenario"):
        parse_scenarios("flood,tsunami")
    assert parse_scenarios("none") == ()
    with pytest.raises(ConfigurationError, match="> 1"):
        SimulatorSettings(late=0.6, malformed=0.6)
    assert SimulatorSettings(rate=50_000, workers=0).effective_workers >= 1


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_metrics_endpoint_serves_health_and_counts_deltas() -> None:
    metrics = SimulatorMetrics()
    metrics.serve("127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{metrics.port}"
        status, before = _get(f"{base}/readyz")  # nothing acknowledged yet
        health.validate(health.READYZ, status, before)
        assert status == 503 and not before["checks"]["producer"]["ok"]
        first = Progress(sent=10, acked=8, by_domain=Counter(air=6, water=4))
        metrics.update(first)
        later = Progress(sent=25, acked=25, by_domain=Counter(air=15, water=10))
        later.by_kind["duplicate"] = 2
        metrics.update(later)
        alive, ready = _get(f"{base}/healthz"), _get(f"{base}/readyz")
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        metrics.update(Progress(sent=30, acked=27, failed=3))  # the broker refused 3
        failing = _get(f"{base}/readyz")
    finally:
        metrics.close()
    health.validate(health.HEALTHZ, *alive)
    health.validate(health.READYZ, *ready)
    assert ready[0] == 200 and ready[1]["component"] == "simulator"
    assert set(ready[1]["checks"]) == {"producer", "sends"}
    health.validate(health.READYZ, *failing)
    assert failing[0] == 503 and not failing[1]["checks"]["sends"]["ok"]
    # A failure older than the window no longer counts.
    later = time.monotonic() + FAILURE_WINDOW_S + 1
    assert all(c.ok for c in metrics.readiness(now=later))
    assert 'ioc_simulator_events_total{domain="air"} 15.0' in text
    assert 'ioc_simulator_injected_total{kind="duplicate"} 2.0' in text
    assert "ioc_simulator_acked_total 25.0" in text
    assert "ioc_simulator_events_per_second" not in text  # rate() of the counter instead


def test_progress_line_shows_rates_per_domain_and_the_scenario() -> None:
    meter = RateMeter()
    settings = SimulatorSettings(rate=500, speed=60)
    first = Progress(sent=100, acked=100, by_domain=Counter(air=40, traffic=60))
    meter.update(first, min_interval_s=0.0)
    second = Progress(
        sent=1100,
        acked=1000,
        by_domain=Counter(air=440, traffic=660),
        scenarios=("flood:HD-TV-PL",),
        sim_time=datetime(2026, 3, 2, 1, 0, tzinfo=UTC),
    )
    second.by_kind["duplicate"] = 7
    meter.update(second, min_interval_s=0.0)
    line = render(second, meter, settings).plain
    assert "ev/s" in line and "target 500" in line and "acked 1,000" in line
    assert "air " in line and "traffic " in line and "payments 0" in line
    assert "flood:HD-TV-PL" in line and "duplicate 7" in line and "x60" in line
    assert meter.rate > 0 and meter.by_domain["traffic"] > meter.by_domain["air"] > 0


def test_faster_than_real_time_never_runs_ahead_of_the_clock() -> None:
    """Gateways and workers refuse event times more than IOC_MAX_FUTURE_SKEW_S ahead of
    their clock: a run at ``speed`` x with a duration ends at the wall clock instead."""
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    fast = SimulatorSettings(speed=60, duration=10)
    start = default_start(fast, now)
    assert start == now - timedelta(seconds=590)
    assert start + timedelta(seconds=10 * 60) == now + timedelta(seconds=10)  # ends at the clock
    assert default_start(SimulatorSettings(duration=10), now) == now
    given = datetime(2026, 1, 1, tzinfo=UTC)
    assert default_start(SimulatorSettings(speed=60, duration=10, start=given), now) == given
