"""Batch folds (streams.folds) are bit-identical to folding event by event, whatever the
batch boundaries; the aggregator's batch path equals its event-by-event path."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.catalogue import EVENT_TYPES
from streams.aggregator import EngineConfig, PartitionAggregator
from streams.folds import Batch, Group
from streams.kpis import KpiIndex
from streams.partials import Partial
from tests.streams_helpers import T0, Rec, raw_event

INDEX = KpiIndex.from_catalogue()
CFG = EngineConfig(idle_timeout_s=3600.0)
NOW_S = T0 / 1000 + 7200
TYPES = sorted(INDEX.by_type)


@st.composite
def _rows(draw: st.DrawFn, event_type: str) -> tuple[list[dict[str, Any]], list[int]]:
    et = EVENT_TYPES[event_type]
    rows: list[dict[str, Any]] = []
    times: list[int] = []
    for _ in range(draw(st.integers(1, 25))):
        row = dict(et.example)
        for f in et.fields:
            if not f.required and draw(st.booleans()):
                row.pop(f.name, None)
            elif f.kind in ("float", "int") and draw(st.booleans()):
                lo = int(f.minimum or 0)
                hi = min(int(f.maximum or 100), lo + 50)  # few distinct values: ties
                value: Any = draw(st.integers(lo, hi))
                if f.kind == "float" and draw(st.booleans()):
                    value = value + draw(st.sampled_from([0.1, 0.25, 1 / 3, 0.0]))
                row[f.name] = value
            elif f.kind == "enum" and f.choices:
                row[f.name] = draw(st.sampled_from(f.choices))
        rows.append(row)
        times.append(T0 + draw(st.integers(0, 5)))  # equal times: the later one is last
    return rows, times


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TYPES).flatmap(lambda t: st.tuples(st.just(t), _rows(t))), st.data())
def test_batch_folds_equal_one_by_one(
    case: tuple[str, tuple[list[dict[str, Any]], list[int]]], data: st.DataObject
) -> None:
    event_type, (rows, times) = case
    cut = data.draw(st.integers(0, len(rows)))
    for ck in INDEX.by_type[event_type]:
        keep = [i for i, row in enumerate(rows) if all(row.get(n) in a for n, a in ck.where)]
        one = Partial()
        for i in keep:
            ck.update(one, rows[i], times[i])
        batched = Partial()
        batch = Batch(rows, times)
        # two batches, cut anywhere: the result does not depend on the boundary
        for part in ([i for i in keep if i < cut], [i for i in keep if i >= cut]):
            if part:
                ck.fold(batched, Group(batch, part))
        assert batched.to_dict() == one.to_dict(), ck.id
        assert repr(batched.to_dict()) == repr(one.to_dict()), ck.id  # ints stay ints


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(TYPES),
            st.integers(-200_000, 900_000),  # some too late once the front moved on
            st.sampled_from(["HD", "NS", "GL"]),
            st.integers(0, 3),
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 17),
)
def test_the_aggregator_batch_path_equals_its_event_by_event_path(
    events: list[tuple[str, int, str, int]], size: int
) -> None:
    log: list[Rec] = []
    for i, (event_type, dt, district, dup) in enumerate(events):
        if dup == 3 and i >= 3:  # a copy of an earlier record (a producer's retry)
            log.append(Rec(i, log[i - 3].value))
            continue
        fields = {"district": district, EVENT_TYPES[event_type].key_field: f"{district}-{i % 3}"}
        log.append(Rec(i, raw_event(event_type, T0 + dt, f"e{i}", **fields)))
    batched = PartitionAggregator("ioc.events.x", 0, INDEX, CFG)
    dead_b = [
        d for s in range(0, len(log), size) for d in batched.process(log[s : s + size], NOW_S)
    ]
    one = PartitionAggregator("ioc.events.x", 0, INDEX, CFG)
    one._fold_batch = lambda fresh, dead: False  # type: ignore[method-assign]
    dead_o = [d for rec in log for d in one.process([rec], NOW_S)]
    assert {k: p.to_dict() for k, p in batched.panes.items()} == {
        k: p.to_dict() for k, p in one.panes.items()
    }
    assert [(d.reason, d.detail, d.source_offset) for d in dead_b] == [
        (d.reason, d.detail, d.source_offset) for d in dead_o
    ]
    assert (batched.processed, batched.too_late, batched.duplicates) == (
        one.processed,
        one.too_late,
        one.duplicates,
    )
    assert batched.watermark.max_event_ms == one.watermark.max_event_ms

    def changes(agg: PartitionAggregator) -> list[tuple[Any, ...]]:
        return sorted(
            (u.kpi, u.scope, u.pane_ms, u.version, repr(u.partial.to_dict()))
            for u in agg.take_changes()
        )

    assert changes(batched) == changes(one)


def test_a_batch_of_every_event_type_folds_as_a_batch() -> None:
    """No catalogue type needs the event-by-event path (which is for records that raise):
    every KPI has a batch fold that takes its events, filtered or not."""
    agg = PartitionAggregator("ioc.events.x", 0, INDEX, CFG)
    folded: list[bool] = []
    fold_batch = agg._fold_batch

    def spy(fresh: Any, dead: Any) -> bool:
        folded.append(fold_batch(fresh, dead))
        return folded[-1]

    agg._fold_batch = spy  # type: ignore[method-assign]
    log = [
        Rec(i, raw_event(t, T0 + i, f"e{i}", district=d))
        for i, (t, d) in enumerate((t, d) for t in sorted(EVENT_TYPES) for d in ("HD", "NS"))
    ]
    assert agg.process(log, NOW_S) == []
    assert folded == [True]
    assert agg.processed == len(log) and agg.fold_fallbacks == 0
