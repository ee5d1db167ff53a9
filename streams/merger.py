"""Stage 2: merge pane partials of every source partition into KPI records (sans-I/O).

A :class:`KpiMerger` receives, for the (kpi, scope) keys of its partition of the
partials topic, the latest full partial of every pane from every source partition, and
the watermark of every source partition. It keeps the partial with the highest version
(source offset) per (pane, source) — replays and duplicates overwrite a state with an
equal one — and assembles windows (1 min tumbling, 15 min hopping, 1 h tumbling) from
panes. It emits:

- live values (``final=false``) at most once per ``live_interval_s`` per window; of the
  overlapping hopping windows of a (kpi, scope), only the open one that closes next;
- the final value (``final=true``) once the watermark of the KPI's source topic passes
  the window end;
- a re-emission with a higher ``revision`` when a late event (within the grace) changes
  a window already final.

Merges run in sorted order, so the result is the same with one or many workers.

A window whose record cannot be built (an exception while merging or valuing it) is
*quarantined*: it is never emitted again, the failure is handed to the adapter
(:meth:`KpiMerger.take_failures`, which dead-letters it as ``processing_error``), and the
quarantine is part of the snapshot, so a restarted worker skips it instead of failing on
it again. Every other window goes on.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from events.errors import describe_exception
from events.records import KpiRecord
from streams.aggregator import EngineConfig, PaneUpdate, WatermarkReport
from streams.kpis import LATE_KPI_DOMAIN, CompiledKpi, KpiIndex
from streams.partials import Partial
from streams.schedule import DueIndex
from streams.windows import WindowAssigner, combined_watermark

CellKey = tuple[str, str]  # (kpi, scope)
WindowKey = tuple[str, str, int, int]  # (kpi, scope, size s (catalogue), start ms)
SeriesKey = tuple[str, str, int]  # (kpi, scope, size s): the windows of one hopping series
PaneKey = tuple[str, str, int]  # (kpi, scope, pane start ms)


@dataclass(slots=True)
class WindowState:
    revision: int = 0
    final: bool = False
    dirty: bool = False
    last_emit: float = -1e18  # monotonic seconds


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class KpiMerger:
    """Windows and KPI emission for the (kpi, scope) keys of one partials partition."""

    def __init__(self, index: KpiIndex, config: EngineConfig) -> None:
        self.index = index
        self.config = config
        self.assigners: dict[int, WindowAssigner] = {
            60: WindowAssigner(config.pane_ms, config.pane_ms),
            900: WindowAssigner(config.hopping_size_ms, config.hopping_hop_ms),
            3600: WindowAssigner(config.hourly_ms, config.hourly_ms),
        }
        # pane partials per (kpi, scope): pane start -> source -> (version, partial)
        self.panes: dict[CellKey, dict[int, dict[str, tuple[int, Partial]]]] = {}
        self.windows: dict[WindowKey, WindowState] = {}
        # Highest revision emitted per (kpi, scope), kept after its windows are forgotten:
        # a window created again later (a partial that arrives after the window expired,
        # e.g. from a partition that was idle) continues above it instead of at 1, so
        # consumers that keep the highest revision see the correction.
        self.revision_floor: dict[CellKey, int] = {}
        self.marks: dict[str, tuple[int, int | None, bool]] = {}  # source -> (v, wm, idle)
        self.topic_partitions: dict[str, int] = {}
        # Pane cells changed / forgotten since the last snapshot: snapshots are
        # incremental (one state record per cell), so their size follows the changes.
        self.changed: set[tuple[str, str, int]] = set()
        self.forgotten: set[tuple[str, str, int]] = set()
        self.emitted = 0
        # Windows that raised while being built: window -> why (kept until they expire).
        self.quarantined: dict[WindowKey, str] = {}
        self._failures: list[tuple[WindowKey, str]] = []
        # What a flush looks at, so its cost follows the changes, not the open windows:
        # windows that may emit a live value or a late correction,
        self._candidates: dict[WindowKey, None] = {}  # a set in insertion order
        # windows not yet final, due when their topic's watermark passes their end,
        self._closing: DueIndex[WindowKey] = DueIndex()
        # final windows, due to be forgotten at end + grace,
        self._expiring: DueIndex[WindowKey] = DueIndex()
        # pane cells, due to be forgotten once no window holds them any more,
        self._forgettable: DueIndex[PaneKey] = DueIndex()
        # the starts of every window of each hopping series, sorted (which one is open
        # and closes next: the only one with live values),
        self._series: dict[SeriesKey, list[int]] = {}
        # and what a restored snapshot holds of KPIs no longer in the catalogue.
        self._orphan_windows: list[WindowKey] = []
        self._orphan_cells: set[CellKey] = set()

    def _assigner(self, size_s: int) -> WindowAssigner:
        a = self.assigners.get(size_s)
        if a is None:
            raise KeyError(f"no window definition for {size_s} s")
        return a

    # -- input --------------------------------------------------------------------------

    def apply_pane(self, u: PaneUpdate) -> None:
        ck = self.index.by_id.get(u.kpi)
        if ck is None:
            return  # a KPI removed from the catalogue since the partial was written
        # Everything that can raise comes before the first change: a pane update is
        # applied whole or not at all.
        pane_end = u.pane_ms + self.config.pane_ms
        spans = [
            (size, self._assigner(size).windows_for_span(u.pane_ms, pane_end))
            for size in ck.windows
        ]
        cells = self.panes.setdefault((u.kpi, u.scope), {})
        cell = cells.get(u.pane_ms)
        if cell is None:
            cell = cells[u.pane_ms] = {}
            self._schedule_forget(ck, (u.kpi, u.scope, u.pane_ms))
        held = cell.get(u.source)
        if held is not None and held[0] > u.version:
            return  # an older state (a zombie or a replay): the newer one stays
        cell[u.source] = (u.version, u.partial)
        self.changed.add((u.kpi, u.scope, u.pane_ms))
        for size, starts in spans:
            for start in starts:
                wk = (u.kpi, u.scope, size, start)
                if wk in self.quarantined:
                    continue
                ws = self.windows.get(wk)
                if ws is None:
                    floor = self.revision_floor.get((u.kpi, u.scope), 0)
                    ws = self.windows[wk] = WindowState(revision=floor)
                    self._index_window(ck, wk, ws)
                ws.dirty = True
                self._candidates[wk] = None

    def _index_window(self, ck: CompiledKpi, wk: WindowKey, ws: WindowState) -> None:
        kpi, scope, size, start = wk
        assigner = self._assigner(size)
        topic = self._topic_of(ck)
        if ws.final:
            self._expiring.add(topic, assigner.end(start) + self.config.grace_ms, wk)
        else:
            self._closing.add(topic, assigner.end(start), wk)
        if not assigner.tumbling:
            bisect.insort(self._series.setdefault((kpi, scope, size), []), start)

    def _drop_window(self, wk: WindowKey) -> None:
        del self.windows[wk]
        self._candidates.pop(wk, None)
        kpi, scope, size, start = wk
        starts = self._series.get((kpi, scope, size))
        if starts is not None:
            starts.remove(start)
            if not starts:
                del self._series[(kpi, scope, size)]

    def _schedule_forget(self, ck: CompiledKpi, pane: PaneKey) -> None:
        # A pane is kept while a window holding it may still change: until the longest
        # window that holds it is past the grace.
        longest = max(self._assigner(s).size_ms for s in ck.windows)
        self._forgettable.add(self._topic_of(ck), pane[2] + longest + self.config.grace_ms, pane)

    def apply_watermark(self, r: WatermarkReport) -> None:
        held = self.marks.get(r.source)
        if held is None or r.version >= held[0]:
            self.marks[r.source] = (r.version, r.watermark_ms, r.idle)
        topic = r.source.rsplit(":", 1)[0]
        if r.topic_partitions > self.topic_partitions.get(topic, 0):
            self.topic_partitions[topic] = r.topic_partitions

    # -- watermarks ---------------------------------------------------------------------

    def topic_watermarks(self) -> dict[str, int | None]:
        """Combined watermark per source topic, plus LATE_KPI_DOMAIN over all topics."""
        per_topic: dict[str, list[tuple[int | None, bool]]] = {}
        for source, (_, wm, idle) in self.marks.items():
            per_topic.setdefault(source.rsplit(":", 1)[0], []).append((wm, idle))
        for topic, n in self.topic_partitions.items():
            marks = per_topic.setdefault(topic, [])
            # unreported partitions count as active and empty: they hold the topic back
            marks.extend([(None, False)] * (n - len(marks)))
        out = {topic: combined_watermark(m) for topic, m in per_topic.items()}
        out[LATE_KPI_DOMAIN] = combined_watermark([m for ms in per_topic.values() for m in ms])
        return out

    def _topic_of(self, ck: CompiledKpi) -> str:
        if ck.domain == LATE_KPI_DOMAIN:
            return LATE_KPI_DOMAIN
        return self.config.events_prefix + ck.domain

    # -- output -------------------------------------------------------------------------

    def window_partial(self, kpi: str, scope: str, size_s: int, start: int) -> Partial:
        merged = Partial()
        cells = self.panes.get((kpi, scope), {})
        end = self._assigner(size_s).end(start)
        for pane in range(start, end, self.config.pane_ms):
            cell = cells.get(pane)
            if cell:
                for source in sorted(cell):
                    merged.merge(cell[source][1])
        return merged

    def _record(self, wk: WindowKey, ws: WindowState, final: bool) -> KpiRecord:
        kpi, scope, size, start = wk
        ck = self.index.by_id[kpi]
        p = self.window_partial(kpi, scope, size, start)
        lo, hi, total = ck.record_stats(p)
        ws.revision += 1
        if ws.revision > self.revision_floor.get((kpi, scope), 0):
            self.revision_floor[(kpi, scope)] = ws.revision
        return KpiRecord(
            kpi=kpi,
            scope=scope,
            window_start=_utc(start),
            window_end=_utc(self._assigner(size).end(start)),
            value=ck.value(p),
            count=p.count,
            min=lo,
            max=hi,
            sum=total,
            final=final,
            revision=ws.revision,
        )

    def flush(self, now: float | None = None) -> list[KpiRecord]:
        """Records due now: finals whose window the watermark passed, late re-emissions
        and throttled live values. Also forgets windows and panes past the grace.

        Looks only at what may be due (see the indexes in ``__init__``): the windows
        whose end a watermark passed, and the windows changed since they last emitted.
        """
        now = time.monotonic() if now is None else now
        wms = self.topic_watermarks()
        interval = self.config.live_interval_s
        out: list[KpiRecord] = []
        for wk in self._orphan_windows:
            if wk in self.windows:
                self._drop_window(wk)
        self._orphan_windows.clear()
        # Finals, earliest end first.
        closed_series: set[SeriesKey] = set()
        for wk in self._closing.pop_due(wms):
            ws = self.windows.get(wk)
            if ws is None or ws.final:
                continue  # expired and gone, or the entry of an earlier life of it
            ws.final = True
            ws.dirty = False
            ws.last_emit = now
            self._emit(wk, ws, out)
            if wk in self.windows:
                self._expiring.add(
                    self._topic_of(self.index.by_id[wk[0]]),
                    self._assigner(wk[2]).end(wk[3]) + self.config.grace_ms,
                    wk,
                )
                if not self._assigner(wk[2]).tumbling:
                    closed_series.add((wk[0], wk[1], wk[2]))
        # A hopping series whose open window closed has a new one that closes next: if it
        # changed while it was not the next, its live value is due now.
        for series in closed_series:
            nxt = self._next_open(series, wms)
            if nxt is not None and self.windows[nxt].dirty:
                self._candidates[nxt] = None
        # Live values of open windows, late corrections of final ones, at most once per
        # interval each (a window not due yet stays a candidate).
        candidates, self._candidates = self._candidates, {}
        for wk in candidates:
            ws = self.windows.get(wk)
            if ws is None or not ws.dirty:
                continue
            size = wk[2]
            hopping_open = not (ws.final or self._assigner(size).tumbling)
            if hopping_open and self._next_open((wk[0], wk[1], size), wms) != wk:
                continue  # not the hopping window a wall shows; its final will come
            if now - ws.last_emit < interval:
                self._candidates[wk] = None
                continue
            ws.dirty = False
            ws.last_emit = now
            self._emit(wk, ws, out)
        # Final windows past the grace are forgotten, once their last correction is out.
        retry: list[WindowKey] = []
        for wk in self._expiring.pop_due(wms):
            ws = self.windows.get(wk)
            if ws is None or not ws.final:
                continue
            if ws.dirty:
                retry.append(wk)  # a correction waits for its interval: expire after it
                continue
            self._drop_window(wk)
        for wk in retry:
            self._expiring.add(self._topic_of(self.index.by_id[wk[0]]), 0, wk)
        self._expire_quarantine(wms)
        self._forget_panes(wms)
        self.emitted += len(out)
        return out

    def _emit(self, wk: WindowKey, ws: WindowState, out: list[KpiRecord]) -> None:
        """Append the window's record; a window whose record cannot be built is
        quarantined (dead-lettered by the adapter) and forgotten."""
        try:
            out.append(self._record(wk, ws, final=ws.final))
        except Exception as exc:
            why = describe_exception(exc)
            self.quarantined[wk] = why
            self._failures.append((wk, why))
            self._drop_window(wk)
            kpi, scope, size, _start = wk
            if not self._assigner(size).tumbling:
                # it may have been the series' open window: the next one takes its place
                self._candidates.update(
                    ((kpi, scope, size, s), None) for s in self._series.get((kpi, scope, size), ())
                )

    def _next_open(self, series: SeriesKey, wms: dict[str, int | None]) -> WindowKey | None:
        """The open window of a hopping series that closes next.

        A new event changes every overlapping hopping window that holds its pane (15 for
        15 min advancing 1 min). Only the one that closes next, the "last 15 minutes" a
        wall shows, gets live values; each of the others still emits its final value
        (and late corrections) when the watermark passes its end. That keeps live
        traffic at one record per (kpi, scope, size) and interval instead of 15.
        """
        starts = self._series.get(series)
        if not starts:
            return None
        kpi, scope, size = series
        ck = self.index.by_id.get(kpi)
        wm = wms.get(self._topic_of(ck)) if ck is not None else None
        # open: end > wm, i.e. start > wm - size
        i = 0 if wm is None else bisect.bisect_right(starts, wm - self._assigner(size).size_ms)
        return (kpi, scope, size, starts[i]) if i < len(starts) else None

    def take_failures(self) -> list[tuple[WindowKey, str]]:
        """Windows quarantined since the last call, with why (for dead letters)."""
        out, self._failures = self._failures, []
        return out

    def _expire_quarantine(self, wms: dict[str, int | None]) -> None:
        grace = self.config.grace_ms
        for wk in list(self.quarantined):
            kpi, _scope, size, start = wk
            ck = self.index.by_id.get(kpi)
            wm = None if ck is None else wms.get(self._topic_of(ck))
            if ck is None or (wm is not None and wm >= self._assigner(size).end(start) + grace):
                del self.quarantined[wk]

    def _forget_panes(self, wms: dict[str, int | None]) -> None:
        for cell_key in self._orphan_cells:
            self.panes.pop(cell_key, None)
            self.revision_floor.pop(cell_key, None)
        self._orphan_cells.clear()
        for kpi, scope, pane in self._forgettable.pop_due(wms):
            cells = self.panes.get((kpi, scope))
            if cells is None or cells.pop(pane, None) is None:
                continue  # already forgotten (an entry of an earlier life of the cell)
            self.forgotten.add((kpi, scope, pane))
            self.changed.discard((kpi, scope, pane))
            if not cells:
                del self.panes[(kpi, scope)]

    # -- durable state ------------------------------------------------------------------

    def snapshot_meta(self) -> dict[str, Any]:
        """Windows and watermarks (small): written whole with every snapshot."""
        return {
            "windows": [
                [kpi, scope, size, start, ws.revision, ws.final, ws.dirty]
                for (kpi, scope, size, start), ws in self.windows.items()
            ],
            "marks": [[s, v, wm, idle] for s, (v, wm, idle) in self.marks.items()],
            "floors": [[k, s, rev] for (k, s), rev in self.revision_floor.items()],
            "quarantined": [[*wk, why] for wk, why in self.quarantined.items()],
            "topic_partitions": self.topic_partitions,
        }

    def cell_state(self, kpi: str, scope: str, pane: int) -> dict[str, Any] | None:
        cell = self.panes.get((kpi, scope), {}).get(pane)
        if not cell:
            return None
        return {src: [v, part.to_dict()] for src, (v, part) in cell.items()}

    def take_cell_changes(self) -> list[tuple[tuple[str, str, int], dict[str, Any] | None]]:
        """(cell, state or None if forgotten) for every cell changed since the last call."""
        out = [(c, self.cell_state(*c)) for c in sorted(self.changed)]
        out += [(c, None) for c in sorted(self.forgotten)]
        self.changed.clear()
        self.forgotten.clear()
        return out

    def snapshot(self) -> dict[str, Any]:
        """Everything at once (tests, and the first snapshot of a fresh owner)."""
        cells = [
            [k, s, p, self.cell_state(k, s, p)] for (k, s), cs in self.panes.items() for p in cs
        ]
        return {**self.snapshot_meta(), "cells": cells}

    def restore(self, snap: dict[str, Any]) -> None:
        self.restore_meta(snap)
        for kpi, scope, pane, state in snap["cells"]:
            self.restore_cell(kpi, scope, int(pane), state)

    def restore_meta(self, snap: dict[str, Any]) -> None:
        self.windows = {
            (kpi, scope, int(size), int(start)): WindowState(int(rev), bool(fin), bool(dirty))
            for kpi, scope, size, start, rev, fin, dirty in snap["windows"]
        }
        self.marks = {s: (int(v), wm, bool(idle)) for s, v, wm, idle in snap["marks"]}
        self.revision_floor = {(k, s): int(rev) for k, s, rev in snap.get("floors", [])}
        self.quarantined = {
            (k, s, int(size), int(start)): str(why)
            for k, s, size, start, why in snap.get("quarantined", [])
        }
        self.topic_partitions = {t: int(n) for t, n in snap.get("topic_partitions", {}).items()}
        for due in (self._closing, self._expiring):
            due.clear()
        self._series.clear()
        self._candidates.clear()
        for wk, ws in self.windows.items():
            ck = self.index.by_id.get(wk[0])
            if ck is None:
                self._orphan_windows.append(wk)  # a KPI since removed: forgotten at flush
                continue
            self._index_window(ck, wk, ws)
            if ws.dirty:
                self._candidates[wk] = None

    def bump_revisions(self, n: int) -> None:
        """After a restore: revisions emitted after the snapshot (at most ``n`` per
        window) stay below every revision emitted from now on."""
        for ws in self.windows.values():
            ws.revision += n
        for cell in self.revision_floor:
            self.revision_floor[cell] += n

    def restore_cell(self, kpi: str, scope: str, pane: int, state: dict[str, Any]) -> None:
        ck = self.index.by_id.get(kpi)
        if ck is None:
            self._orphan_cells.add((kpi, scope))  # a KPI since removed: forgotten at flush
        else:
            self._schedule_forget(ck, (kpi, scope, pane))
        cell = self.panes.setdefault((kpi, scope), {}).setdefault(pane, {})
        for src, (v, d) in state.items():
            cell[src] = (int(v), Partial.from_dict(d))
