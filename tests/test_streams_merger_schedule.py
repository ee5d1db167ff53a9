"""Stage 2's flush looks only at what may be due (streams/schedule.py), and emits exactly
what a flush that scans every window would: checked against such a scanning flush (the
merger's earlier implementation, kept here as the reference) on random histories of
pane updates, watermarks, flushes and restores."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.records import KpiRecord
from streams.aggregator import EngineConfig, PaneUpdate, WatermarkReport
from streams.kpis import KpiIndex
from streams.merger import KpiMerger, WindowKey
from streams.partials import Partial
from streams.schedule import DueIndex

CFG = EngineConfig(idle_timeout_s=3600.0, live_interval_s=1.0)
INDEX = KpiIndex.from_catalogue()
T0 = 1_800_000_000_000 - 1_800_000_000_000 % 3_600_000
MIN = 60_000
MIN_TD = timedelta(minutes=1)
# 1-min and 15-min hopping windows; 1-min and hourly: two topics, so two watermarks.
KPIS = ("traffic.speed.avg", "air.pm25.avg")
DOMAIN = {"traffic.speed.avg": "traffic", "air.pm25.avg": "air"}
SCOPES = ("city", "station:A")
SOURCES = tuple(f"ioc.events.{d}:{p}" for d in ("traffic", "air") for p in (0, 1))


class ScanningMerger(KpiMerger):
    """The reference: every flush visits every window and every pane."""

    def flush(self, now: float | None = None) -> list[KpiRecord]:
        now = time.monotonic() if now is None else now
        wms = self.topic_watermarks()
        out: list[KpiRecord] = []
        expired: list[WindowKey] = []
        nearest: dict[tuple[str, str, int], int] = {}
        for kpi, scope, size, start in self.windows:
            wm = wms.get(self._topic_of(self.index.by_id[kpi]))
            if self._assigner(size).tumbling or (
                wm is not None and self._assigner(size).end(start) <= wm
            ):
                continue
            held = nearest.get((kpi, scope, size))
            nearest[(kpi, scope, size)] = start if held is None else min(held, start)
        live = {(k, s, z, start) for (k, s, z), start in nearest.items()}
        for wk, ws in self.windows.items():
            kpi, _scope, size, start = wk
            wm = wms.get(self._topic_of(self.index.by_id[kpi]))
            end = self._assigner(size).end(start)
            if wm is not None and wm >= end and not ws.final:
                ws.final, ws.dirty, ws.last_emit = True, False, now
                out.append(self._record(wk, ws, final=True))
            elif (
                ws.dirty
                and now - ws.last_emit >= self.config.live_interval_s
                and (ws.final or self._assigner(size).tumbling or wk in live)
            ):
                ws.dirty, ws.last_emit = False, now
                out.append(self._record(wk, ws, final=ws.final))
            if ws.final and not ws.dirty and wm is not None and wm >= end + CFG.grace_ms:
                expired.append(wk)
        for wk in expired:
            del self.windows[wk]
        for (kpi, scope), cells in list(self.panes.items()):
            wm = wms.get(self._topic_of(self.index.by_id[kpi]))
            longest = max(self._assigner(s).size_ms for s in self.index.by_id[kpi].windows)
            for pane in [p for p in cells if wm is not None and p + longest + CFG.grace_ms <= wm]:
                del cells[pane]
                self.forgotten.add((kpi, scope, pane))
                self.changed.discard((kpi, scope, pane))
            if not cells:
                del self.panes[(kpi, scope)]
        self.emitted += len(out)
        return out


def _as_rows(records: list[KpiRecord]) -> list[tuple[Any, ...]]:
    return sorted(
        (r.kpi, r.scope, r.window_start, r.window_end, r.final, r.revision, r.count, r.value)
        for r in records
    )


def _state(m: KpiMerger) -> tuple[Any, ...]:
    return (
        sorted(m.snapshot_meta()["windows"]),
        sorted((k, s, p) for (k, s), cells in m.panes.items() for p in cells),
        sorted(m.forgotten),
    )


op = st.one_of(
    st.tuples(
        st.just("pane"),
        st.sampled_from(KPIS),
        st.sampled_from(SCOPES),
        st.integers(0, 1),  # source partition
        st.integers(0, 25),  # pane (minutes after T0)
        st.floats(0, 500),
    ),
    # one partition's watermark, or both partitions' of a topic (minutes after T0)
    st.tuples(st.just("mark"), st.sampled_from(SOURCES), st.integers(-5, 45)),
    st.tuples(st.just("marks"), st.sampled_from(("traffic", "air")), st.integers(-5, 45)),
    st.tuples(st.just("flush"), st.floats(0.05, 3.0)),
    st.tuples(st.just("restore")),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=120))
def test_flush_emits_what_a_scan_of_every_window_emits(ops: list[tuple[Any, ...]]) -> None:
    fast, scan = KpiMerger(INDEX, CFG), ScanningMerger(INDEX, CFG)
    now, version, marks = 1000.0, 0, dict.fromkeys(SOURCES, -10)
    for o in ops:
        if o[0] == "pane":
            _, kpi, scope, partition, minute, value = o
            source = f"ioc.events.{DOMAIN[kpi]}:{partition}"
            version += 1
            partial = Partial()
            partial.add_value(value, T0 + minute * MIN + 1)
            u = PaneUpdate(source, version, kpi, scope, T0 + minute * MIN, partial)
            fast.apply_pane(u)
            scan.apply_pane(u)
        elif o[0] in ("mark", "marks"):
            sources = [o[1]] if o[0] == "mark" else [f"ioc.events.{o[1]}:{p}" for p in (0, 1)]
            for source in sources:
                marks[source] = max(marks[source], o[2])  # a partition's watermark only rises
                version += 1
                r = WatermarkReport(source, version, T0 + marks[source] * MIN, False, 2)
                fast.apply_watermark(r)
                scan.apply_watermark(r)
        elif o[0] == "flush":
            now += o[1]
            assert _as_rows(fast.flush(now)) == _as_rows(scan.flush(now))
            assert _state(fast) == _state(scan)
        else:  # a crash and a restore from the snapshot (what the adapter stores)
            snap = fast.snapshot()
            fast, scan = KpiMerger(INDEX, CFG), ScanningMerger(INDEX, CFG)
            fast.restore(snap)
            scan.restore(snap)
    now += 5
    assert _as_rows(fast.flush(now)) == _as_rows(scan.flush(now))


def test_a_flush_does_not_visit_windows_that_are_not_due() -> None:
    """Many stations' open windows, then one change: the flush looks at that one."""
    m = KpiMerger(INDEX, CFG)
    for s in range(200):
        p = Partial()
        p.add_value(10.0, T0 + 1)
        m.apply_pane(PaneUpdate(SOURCES[0], s + 1, KPIS[0], f"station:S{s}", T0, p))
    m.apply_watermark(WatermarkReport(SOURCES[0], 1000, T0 - MIN, False, 1))
    assert len(m.flush(1000.0)) == 200 * 2  # the 1-min and the next hopping window: live
    p = Partial()
    p.add_value(11.0, T0 + 2)
    m.apply_pane(PaneUpdate(SOURCES[0], 2000, KPIS[0], "station:S7", T0, p))
    assert len(m._candidates) == 16  # the 1-min and the 15 hopping windows holding the pane
    out = m.flush(1002.0)
    assert [(r.scope, r.window_end - r.window_start) for r in out] == [
        ("station:S7", MIN_TD),
        ("station:S7", 15 * MIN_TD),
    ]
    assert not m._candidates  # hopping windows not shown live wait for their finals
    assert len(m.windows) == 200 * 16


def test_due_index_pops_per_topic_in_time_order() -> None:
    due: DueIndex[str] = DueIndex()
    for t, item in ((30, "c"), (10, "a"), (20, "b")):
        due.add("x", t, item)
    due.add("y", 5, "y")
    assert due.pop_due({"x": 20, "y": None}) == ["a", "b"]
    assert len(due) == 2
    assert due.pop_due({"x": 100, "y": 5}) == ["c", "y"]


def test_a_correction_waiting_for_its_interval_is_emitted_before_the_window_is_forgotten() -> None:
    m = KpiMerger(INDEX, CFG)
    src = "ioc.events.traffic:0"

    def pane(version: int, value: float) -> PaneUpdate:
        p = Partial()
        p.add_value(value, T0 + 1)
        return PaneUpdate(src, version, KPIS[0], "city", T0, p)

    m.apply_pane(pane(1, 10.0))
    m.apply_watermark(WatermarkReport(src, 2, T0 + MIN, False, 1))
    final = [r for r in m.flush(1000.0) if r.window_end - r.window_start == MIN_TD]
    assert [(r.final, r.value) for r in final] == [(True, 10.0)]
    # A late event within the grace, and the watermark passes end + grace before the
    # correction's interval has run: it waits, and the window with it.
    m.apply_pane(pane(3, 30.0))
    m.apply_watermark(WatermarkReport(src, 4, T0 + MIN + CFG.grace_ms, False, 1))
    assert [r for r in m.flush(1000.5) if r.window_end - r.window_start == MIN_TD] == []
    assert (KPIS[0], "city", 60, T0) in m.windows
    late = [r for r in m.flush(1001.5) if r.window_end - r.window_start == MIN_TD]
    assert [(r.final, r.value, r.revision) for r in late] == [(True, 30.0, 2)]
    m.flush(1002.0)
    assert (KPIS[0], "city", 60, T0) not in m.windows
