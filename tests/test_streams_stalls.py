"""What stalls the worker's one loop, counted and logged: its phases (PhaseTimer), the
garbage collector's pauses; and the heap frozen after checkpoints and collected whole now
and then (streams/gc_pauses.py)."""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from streams.gc_pauses import GcPauses, HeapSettler
from streams.observability import PhaseTimer, StreamsMetrics


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Leave the collector as found: nothing frozen by a test stays frozen."""
    yield
    gc.unfreeze()


def test_pauses_are_counted_per_generation_and_long_ones_logged() -> None:
    registry = CollectorRegistry()
    pauses = GcPauses(registry, slow_s=0.0)  # every pause counts as long here
    pauses.install()
    try:
        with capture_logs() as logs:
            gc.collect(2)
    finally:
        pauses.uninstall()
    assert pauses not in gc.callbacks
    seconds = registry.get_sample_value("ioc_streams_gc_seconds_total", {"generation": "2"})
    assert seconds is not None and seconds > 0
    assert [e["generation"] for e in logs if e["event"] == "gc.slow"] == [2]


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_frozen_cycles_are_freed_by_the_periodic_whole_collection(unfrozen: None) -> None:
    now = [0.0]
    settler = HeapSettler(full_every_s=300.0, clock=lambda: now[0])
    garbage = Cycle()
    gone = weakref.ref(garbage)
    settler.settle()  # frozen while alive
    assert gc.get_freeze_count() > 0
    del garbage
    gc.collect()
    assert gone() is not None  # a cycle frozen while alive escapes ordinary collections
    now[0] = 299.0
    settler.settle()
    assert gone() is not None and settler.full_collections == 0
    now[0] = 300.0
    settler.settle()
    assert gone() is None and settler.full_collections == 1
    assert gc.get_freeze_count() > 0  # and what lives is frozen again


class Leaf:
    pass


def test_frozen_objects_without_cycles_are_still_freed(unfrozen: None) -> None:
    settler = HeapSettler(full_every_s=300.0, clock=lambda: 0.0)
    leaf = Leaf()
    gone = weakref.ref(leaf)
    settler.settle()
    del leaf
    assert gone() is None  # reference counting frees it at once, frozen or not


def test_phases_are_counted_and_a_long_one_logged() -> None:
    metrics = StreamsMetrics()
    timer = PhaseTimer(metrics.phase_seconds, slow_s=0.05)
    with capture_logs() as logs:
        timer("publish", time.perf_counter())
        took = timer("flush", time.perf_counter() - 0.06, records=12)
    assert took >= 0.06
    slow = [e for e in logs if e["event"] == "phase.slow"]
    assert [(e["phase"], e["records"]) for e in slow] == [("flush", 12)]
    flush = metrics.registry.get_sample_value("ioc_streams_phase_seconds_total", {"phase": "flush"})
    assert flush is not None and flush >= 0.06
    publish = metrics.registry.get_sample_value(
        "ioc_streams_phase_seconds_total", {"phase": "publish"}
    )
    assert publish is not None and publish < 0.05
