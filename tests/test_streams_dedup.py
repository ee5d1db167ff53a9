"""De-duplication on the CloudEvent identity (source, id) in stage 1 (sans-I/O)."""

from __future__ import annotations

import numpy as np
import orjson

from streams.aggregator import EngineConfig, PartitionAggregator
from streams.dedup import IdentityIndex, PaneIdentities, fingerprints, identity
from streams.kpis import KpiIndex
from tests.streams_helpers import T0, Rec, air

MIN = 60_000
CFG = EngineConfig(idle_timeout_s=3600.0)
INDEX = KpiIndex.from_catalogue()
NOW_S = (T0 + 60 * MIN) / 1000


def _fp(*pairs: tuple[int, int]) -> np.ndarray:
    return np.array(pairs, dtype=np.uint64).reshape(-1, 2)


def test_first_occurrences_are_admitted_and_repeats_are_not() -> None:
    idx = IdentityIndex()
    fp = fingerprints([identity("/s/a", "1"), identity("/s/a", "2"), identity("/s/a", "1")])
    assert idx.admit([T0, T0, T0], fp).tolist() == [True, True, False]
    again = fingerprints([identity("/s/a", "2"), identity("/s/b", "2"), identity("/s/a", "3")])
    assert idx.admit([T0, T0, T0], again).tolist() == [False, True, True]
    assert len(idx) == 4


def test_an_identity_is_per_source_and_id() -> None:
    a, b = fingerprints([identity("/s/a", "1"), identity("/s/b", "1")])
    assert not np.array_equal(a, b)
    assert identity("/s/a", "1") != identity("/s/a\x001", "")  # NUL cannot join two ids


def test_a_collision_of_the_first_64_bits_does_not_drop_a_distinct_event() -> None:
    idx = IdentityIndex()
    assert idx.admit([T0], _fp((7, 1))).tolist() == [True]
    # same first 64 bits, other last 64: distinct, in another batch and within one batch
    assert idx.admit([T0], _fp((7, 2))).tolist() == [True]
    assert idx.admit([T0, T0, T0], _fp((7, 3), (7, 2), (7, 3))).tolist() == [True, False, False]
    assert idx.admit([T0], _fp((7, 1))).tolist() == [False]
    assert len(idx) == 3


def test_memory_is_sixteen_bytes_per_identity() -> None:
    idx = IdentityIndex()
    n = 50_000
    fp = fingerprints([identity("/sensors/air/HD-AQ-001", f"sim42-0-{i}") for i in range(n)])
    idx.admit([T0 + (i % 5) * MIN for i in range(n)], fp)
    assert len(idx) == n
    assert idx.nbytes == 16 * n


def test_deltas_restore_the_index_and_forgotten_panes_become_tombstones() -> None:
    idx = IdentityIndex()
    idx.admit([T0, T0 + MIN], _fp((1, 1), (2, 2)))
    first = idx.take_deltas(None)
    assert [(p, s) for p, s, _ in first] == [(T0, 1), (T0 + MIN, 1)]
    idx.admit([T0 + MIN], _fp((3, 3)))
    second = idx.take_deltas(None)
    assert [(p, s) for p, s, _ in second] == [(T0 + MIN, 2)]
    assert idx.take_deltas(None) == []  # nothing new: nothing to store
    stored = {(p, s): b for p, s, b in first + second if b is not None}
    again = IdentityIndex()
    again.restore(orjson.loads(orjson.dumps(idx.snapshot())), stored)
    assert again.admit([T0, T0 + MIN, T0 + MIN], _fp((1, 1), (3, 3), (4, 4))).tolist() == [
        False,
        False,
        True,
    ]
    # the pane of T0 falls behind the horizon: its deltas are tombstoned
    assert again.take_deltas(T0 + 1)[:1] == [(T0, 1, None)]
    assert T0 not in again.panes


def test_discard_fresh_forgets_only_what_was_not_taken_yet() -> None:
    idx = IdentityIndex()
    idx.admit([T0], _fp((1, 1)))
    idx.take_deltas(None)
    idx.admit([T0, T0], _fp((2, 2), (3, 3)))
    idx.discard_fresh()
    assert idx.admit([T0, T0], _fp((1, 1), (2, 2))).tolist() == [False, True]


def test_pane_identities_contains_handles_an_empty_pane() -> None:
    assert PaneIdentities().contains(_fp((1, 1))).tolist() == [False]


# -- in the aggregator --------------------------------------------------------------------


def _pm25_count(agg: PartitionAggregator) -> int:
    return sum(
        p.count
        for (k, s, _), p in agg.panes.items()
        if k == "air.pm25.avg" and s == "station:HD-AQ-001"
    )


def test_re_sent_events_count_once_and_are_counted_as_duplicates() -> None:
    """The issue's measurement: 600 events for one station, then 100 of them re-sent
    byte for byte (a gateway resending after a lost ack): the count stays 600."""
    events = [air(T0 + i * 100, event_id=f"e{i}", station_id="HD-AQ-001") for i in range(600)]
    log = [Rec(i, raw) for i, raw in enumerate(events)]
    log += [Rec(600 + i, events[i * 6]) for i in range(100)]
    agg = PartitionAggregator("ioc.events.air", 0, INDEX, CFG)
    for start in range(0, len(log), 128):
        assert agg.process(log[start : start + 128], NOW_S) == []
    assert _pm25_count(agg) == 600
    assert agg.duplicates == 100 and agg.processed == 600


def test_a_duplicate_after_a_restore_is_still_dropped() -> None:
    """A worker killed after its checkpoint restores the seen identities with its panes."""
    events = [air(T0 + i * 100, event_id=f"e{i}") for i in range(50)]
    agg = PartitionAggregator("ioc.events.air", 0, INDEX, CFG)
    agg.process([Rec(i, raw) for i, raw in enumerate(events)], NOW_S)
    stored = {(p, s): b for p, s, b in agg.take_id_deltas() if b is not None}
    snap = orjson.loads(orjson.dumps(agg.snapshot()))
    restarted = PartitionAggregator("ioc.events.air", 0, INDEX, CFG)
    restarted.restore(snap, stored)
    assert restarted.applied == 49
    # re-delivered under new offsets (a producer retry), mixed with new events
    again = [Rec(50 + i, events[i]) for i in range(20)]
    again += [Rec(70 + i, air(T0 + 5000 + i, event_id=f"new{i}")) for i in range(5)]
    restarted.process(again, NOW_S)
    assert restarted.duplicates == 20
    assert _pm25_count(restarted) == 55


def test_a_rollback_forgets_the_identities_it_will_see_again() -> None:
    """A poison record rolls the partition back: the events after the durable state are
    applied again by the replay, so they must not count as repeats of themselves."""
    events = [air(T0 + i * 100, event_id=f"e{i}") for i in range(10)]
    log = [Rec(i, raw) for i, raw in enumerate(events)]
    agg = PartitionAggregator("ioc.events.air", 0, INDEX, CFG)
    agg.process(log[:4], NOW_S)
    agg.take_id_deltas()
    agg.mark_durable(orjson.dumps(agg.snapshot()))
    agg.process(log[4:8], NOW_S)
    agg._roll_back(6, "simulated")  # what a record that raises triggers
    assert agg.rewind_to == 4
    agg.rewind_to = None
    agg.process(log[4:], NOW_S)
    assert agg.duplicates == 0
    assert _pm25_count(agg) == 9  # offset 6 is quarantined, the others count once
