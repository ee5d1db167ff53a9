"""One bad event must not stop or silence the pipeline (sans-I/O).

Time bounds (``bad_time``, ``future_time``), a watermark that one early source cannot run
away with, and isolation of records, pane updates and windows whose processing raises:
rolled back to the durable state and quarantined (stage 1), quarantined and snapshotted
(stage 2). The property test at the end drives stage 1, stage 2 and the alert engine with
arbitrary records: no exception escapes, and every input is applied or dead-lettered.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.envelope import MAX_EVENT_TIME, decode, latest_event_ms
from events.errors import InvalidEventError
from events.records import KpiRecord
from streams.aggregator import EngineConfig, PartitionAggregator
from streams.alerts.engine import AlertEngine
from streams.kpis import KpiIndex
from streams.merger import KpiMerger
from streams.partials import Partial
from streams.windows import Watermark
from streams.wire import decode_internal, encode_pane
from tests.streams_helpers import T0, Rec, air

MIN = 60_000
CFG = EngineConfig(idle_timeout_s=3600.0, live_interval_s=0.0)
INDEX = KpiIndex.from_catalogue()
NOW_S = (T0 + 30 * MIN) / 1000  # the workers' clock in these tests


def _at(text: str) -> bytes:
    event = orjson.loads(air(T0))
    event["time"] = text
    return orjson.dumps(event)


def _pm25(agg: PartitionAggregator, station: str = "HD-AQ-001") -> dict[int, int]:
    """pane start -> count of air.pm25.avg for one station."""
    return {
        p: part.count
        for (k, s, p), part in agg.panes.items()
        if k == "air.pm25.avg" and s == f"station:{station}"
    }


# -- time bounds ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "9999-12-31T23:59:59Z",
        "9000-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
    ],
)
def test_times_the_windows_cannot_represent_are_bad_time(text: str) -> None:
    with pytest.raises(InvalidEventError) as info:
        decode(_at(text))
    assert info.value.reason == "bad_time"


def test_the_newest_representable_time_is_accepted() -> None:
    assert decode(_at("8999-12-31T23:59:59Z")).time < MAX_EVENT_TIME


def test_future_time_beyond_the_skew_is_refused_and_within_it_accepted() -> None:
    now = T0 / 1000
    latest = latest_event_ms(now, 300)
    assert decode(air(T0 + 300_000), latest_ms=latest).time_ms == T0 + 300_000
    with pytest.raises(InvalidEventError) as info:
        decode(air(T0 + 300_001), latest_ms=latest)
    assert info.value.reason == "future_time"


def test_stage1_dead_letters_future_and_bad_times_with_their_reason() -> None:
    agg = PartitionAggregator("ioc.events.air", 0, INDEX, CFG)
    future = air(T0 + 40 * MIN)  # 10 minutes ahead of NOW_S; the bound is 5
    far = _at("9999-12-31T23:59:59Z")
    dead = agg.process([Rec(0, future), Rec(1, far), Rec(2, air(T0 + 29 * MIN))], NOW_S)
    assert [(d.reason, d.source_offset) for d in dead] == [("future_time", 0), ("bad_time", 1)]
    assert agg.watermark.max_event_ms == T0 + 29 * MIN  # neither moved the front


# -- a watermark that one early event cannot run away with -------------------------------


def test_an_early_event_moves_the_front_no_further_than_the_workers_clock() -> None:
    wm = Watermark(lateness_ms=0, grace_ms=0, idle_timeout_s=10)
    wm.observe(T0, clock_ms=T0 + MIN)
    wm.observe(T0 + 4 * MIN, clock_ms=T0 + MIN)  # a sensor clock four minutes ahead
    assert wm.max_event_ms == T0 + MIN
    wm.observe(T0 + 4 * MIN, clock_ms=T0 + 5 * MIN)  # its time has come
    assert wm.max_event_ms == T0 + 4 * MIN


def test_an_early_event_does_not_make_other_stations_too_late() -> None:
    """The second reproduction of the issue, in memory: one station four minutes ahead
    (within the skew bound), then on-time events of every station of the partition."""
    agg = PartitionAggregator("ioc.events.air", 0, INDEX, CFG)
    now = T0 + 20 * MIN
    stations = [f"HD-AQ-00{i}" for i in range(1, 5)]
    recs = [Rec(i, air(now - MIN, station_id=s)) for i, s in enumerate(stations)]
    recs.append(Rec(4, air(now + 4 * MIN, station_id="HD-AQ-FUT")))
    recs += [Rec(5 + i, air(now - 30_000, station_id=s)) for i, s in enumerate(stations * 10)]
    dead = agg.process(recs, now / 1000)
    assert dead == []
    pane = now - MIN
    assert all(_pm25(agg, s)[pane] == 11 for s in stations)


# -- stage 1: a record that raises is rolled back and quarantined ----------------------


def _index_failing_on(pm25: float) -> KpiIndex:
    """The catalogue, with the air.pm25 accumulation raising for one value after it has
    already folded the event into another KPI's pane (a half-applied record)."""
    by_type = dict(INDEX.by_type)
    kpis = list(by_type["vn.ioc.air.observed"])
    i = next(n for n, ck in enumerate(kpis) if ck.id == "air.pm25.avg")
    update = kpis[i].update

    def failing(p: Partial, data: dict[str, Any], t_ms: int) -> None:
        if data.get("pm25") == pm25:
            raise ZeroDivisionError("a bug this value provokes")
        update(p, data, t_ms)

    kpis[i] = dataclasses.replace(kpis[i], update=failing)
    kpis.append(kpis.pop(i))  # after the others: they have counted the record already
    by_type["vn.ioc.air.observed"] = tuple(kpis)
    return dataclasses.replace(INDEX, by_type=by_type)


def _drive(agg: PartitionAggregator, log: list[Rec], start: int, durable_at: int) -> list[Any]:
    """Feed ``log`` from ``start`` like the adapter does: batches of 4, the state made
    durable after offset ``durable_at``, fetching again from ``rewind_to``."""
    dead: list[Any] = []
    pos = start
    rewinds = 0
    while pos < len(log):
        batch = log[pos : pos + 4]
        dead += agg.process(batch, NOW_S)
        pos = batch[-1].offset + 1
        if agg.rewind_to is not None:
            pos, agg.rewind_to = agg.rewind_to, None
            rewinds += 1
            assert rewinds < 3, "the same record must not be rolled back again"
        elif agg.applied >= durable_at and agg._durable is None:
            agg.mark_durable(orjson.dumps(agg.snapshot()))
    return dead


def test_a_record_that_raises_is_rolled_back_quarantined_and_the_rest_counted_once() -> None:
    log = [Rec(i, air(T0 + i * 1000, pm25=13.0 if i == 9 else 20.0 + i)) for i in range(20)]
    agg = PartitionAggregator("ioc.events.air", 0, _index_failing_on(13.0), CFG)
    dead = _drive(agg, log, 0, durable_at=5)
    assert agg.rollbacks == 1
    assert [(d.reason, d.source_offset) for d in dead] == [("processing_error", 9)]
    assert "ZeroDivisionError: a bug this value provokes" in dead[0].detail
    # every other record counted exactly once, in every KPI (none half-applied)
    clean = PartitionAggregator("ioc.events.air", 0, INDEX, CFG)
    clean.process([r for r in log if r.offset != 9], NOW_S)
    assert {k: p.to_dict() for k, p in agg.panes.items()} == {
        k: p.to_dict() for k, p in clean.panes.items()
    }
    assert agg.applied == 19


def test_a_rollback_without_durable_state_replays_from_the_first_record() -> None:
    log = [Rec(100 + i, air(T0 + i * 1000, pm25=13.0 if i == 2 else 20.0)) for i in range(6)]
    agg = PartitionAggregator("ioc.events.air", 0, _index_failing_on(13.0), CFG)
    dead = agg.process(log, NOW_S)
    assert agg.rewind_to == 100 and dead == []
    agg.rewind_to = None
    # records prefetched before the rewind are ignored until the replay reaches them
    assert agg.process(log[4:], NOW_S) == []
    dead = agg.process(log, NOW_S)
    assert [d.source_offset for d in dead] == [102]
    assert sum(_pm25(agg).values()) == 5


def test_the_quarantine_survives_a_restart_until_a_later_state_is_durable() -> None:
    log = [Rec(i, air(T0 + i * 1000, pm25=13.0 if i == 6 else 20.0)) for i in range(12)]
    agg = PartitionAggregator("ioc.events.air", 0, _index_failing_on(13.0), CFG)
    agg.process(log[:4], NOW_S)
    agg.mark_durable(orjson.dumps(agg.snapshot()))
    agg.process(log[4:], NOW_S)
    assert agg.rewind_to == 4
    agg.rewind_to = None
    agg.process(log[4:8], NOW_S)
    snap = orjson.loads(orjson.dumps(agg.snapshot()))
    assert snap["quarantine"] == [[6, agg.quarantine[6]]]
    # a worker restarted from this state and fed offset 6 again does not fail on it
    again = PartitionAggregator("ioc.events.air", 0, _index_failing_on(13.0), CFG)
    again.restore({**snap, "applied": 5})
    dead = again.process(log[6:], NOW_S)
    assert [(d.reason, d.source_offset) for d in dead] == [("processing_error", 6)]
    assert again.rewind_to is None
    again.mark_durable(orjson.dumps(again.snapshot()))
    assert again.quarantine == {}


# -- stage 2: pane updates and windows that raise ---------------------------------------


def _updates(agg: PartitionAggregator) -> list[bytes]:
    return [encode_pane(u) for u in agg.take_changes()]


def test_a_window_that_cannot_be_built_is_quarantined_and_the_others_go_on() -> None:
    agg = PartitionAggregator("ioc.events.air", 0, INDEX, CFG)
    agg.process([Rec(0, air(T0)), Rec(1, air(T0 + 2 * MIN))], NOW_S)
    by_id = dict(INDEX.by_id)

    def broken(p: Partial) -> float | None:
        raise OverflowError("year 10000 is out of range")

    by_id["air.pm25.avg"] = dataclasses.replace(by_id["air.pm25.avg"], value=broken)
    merger = KpiMerger(dataclasses.replace(INDEX, by_id=by_id), CFG)
    for raw in _updates(agg):
        item = decode_internal(raw)
        assert not isinstance(item, list)
        merger.apply_pane(item)
    records = merger.flush(now=1.0)
    failures = merger.take_failures()
    assert {wk[0] for wk, _ in failures} == {"air.pm25.avg"}
    assert all("OverflowError" in why for _, why in failures)
    assert any(r.kpi == "air.pm10.avg" for r in records)  # the rest of the KPIs go on
    assert not any(r.kpi == "air.pm25.avg" for r in records)
    # the quarantine is part of the snapshot: a restored merger does not fail again
    restored = KpiMerger(merger.index, CFG)
    restored.restore(orjson.loads(orjson.dumps(merger.snapshot())))
    assert set(restored.quarantined) == {wk for wk, _ in failures}
    restored.flush(now=100.0)
    assert restored.take_failures() == []


# -- property test: arbitrary records through stage 1, stage 2 and the alert engine -------

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_TIMES = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59), timezones=st.just(UTC)
).map(lambda t: t.isoformat().replace("+00:00", "Z"))
_NUMBER = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from([0, -1, 1e308, -1e308, 5e-324]),
)
_FIELD = st.one_of(_NUMBER, _JSON, st.text(max_size=300), st.just(""))
_BASE = orjson.loads(air(T0))


@st.composite
def _raw_record(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["mutated", "json", "bytes", "special"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return orjson.dumps(draw(_JSON))
    if kind == "special":
        # NaN and infinities where JSON allows them (as numbers a lenient producer writes)
        text = (
            air(T0)
            .decode()
            .replace(
                '"pm25":',
                '"pm25":'
                + draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"]))
                + ',"x":',
            )
        )
        return text.encode()
    event = dict(_BASE)
    event["time"] = draw(_TIMES)
    data = dict(event["data"])
    for name in draw(st.lists(st.sampled_from([*data, "extra"]), max_size=3)):
        data[name] = draw(_FIELD)
    event["data"] = data
    if draw(st.booleans()):
        event[draw(st.sampled_from(["id", "source", "type", "specversion"]))] = draw(_FIELD)
    return orjson.dumps(event)


_KPI_RECORD = st.builds(
    KpiRecord,
    kpi=st.sampled_from(["water.level.max", "air.aqi.vn", "traffic.speed.avg", "x"]),
    scope=st.sampled_from(["station:HD-TV-AP", "district:HD", "city", ""]),
    window_start=st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    window_end=st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    value=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    count=st.integers(min_value=-5, max_value=2**40),
    final=st.booleans(),
    revision=st.integers(min_value=0, max_value=2**31),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_raw_record(), min_size=1, max_size=12), st.lists(_KPI_RECORD, max_size=6))
def test_no_exception_escapes_and_every_record_is_applied_or_dead_lettered(
    raws: list[bytes], kpis: list[KpiRecord]
) -> None:
    # valid neighbours: they must keep being counted whatever their bad neighbours are
    good = [air(T0 + 60_000 + i, station_id="HD-AQ-002") for i in range(3)]
    log = [Rec(i, raw) for i, raw in enumerate([*good, *raws])]
    agg = PartitionAggregator("ioc.events.air", 0, INDEX, CFG)
    dead = agg.process(log, NOW_S)
    assert agg.rewind_to is None
    dead_offsets = {d.source_offset for d in dead}
    assert len(dead_offsets) == len(dead)
    # each record applied, dead-lettered, or dropped as a repeat of an identity applied
    assert agg.processed + len(dead) + agg.duplicates == len(log)
    assert not dead_offsets & {0, 1, 2}
    assert sum(_pm25(agg, "HD-AQ-002").values()) >= 3
    # stage 2: every pane update is applied; every window flushes or is quarantined
    merger = KpiMerger(INDEX, CFG)
    for raw in _updates(agg):
        item = decode_internal(raw)
        assert not isinstance(item, list)
        merger.apply_pane(item)
    merger.apply_watermark(agg.report(topic_partitions=1))
    merger.flush(now=1.0)
    assert merger.take_failures() == []
    # the alert engine: any KPI record (any value, any window) is taken without raising
    engine = AlertEngine()
    for rec in kpis:
        engine.on_kpi(rec)
    engine.tick(datetime(2026, 12, 3, tzinfo=UTC))
