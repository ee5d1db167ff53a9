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

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from events.errors import describe_exception
from events.records import KpiRecord
from streams.aggregator import EngineConfig, PaneUpdate, WatermarkReport
from streams.kpis import LATE_KPI_DOMAIN, CompiledKpi, KpiIndex
from streams.partials import Partial
from streams.windows import WindowAssigner, combined_watermark

CellKey = tuple[str, str]  # (kpi, scope)
WindowKey = tuple[str, str, int, int]  # (kpi, scope, size s (catalogue), start ms)


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
        cell = self.panes.setdefault((u.kpi, u.scope), {}).setdefault(u.pane_ms, {})
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
                ws.dirty = True

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
        and throttled live values. Also forgets windows and panes past the grace."""
        now = time.monotonic() if now is None else now
        wms = self.topic_watermarks()
        interval = self.config.live_interval_s
        grace = self.config.grace_ms
        out: list[KpiRecord] = []
        expired: list[WindowKey] = []
        by_id = self.index.by_id
        live_hopping = self._live_hopping_windows(wms)
        for wk, ws in self.windows.items():
            kpi, _scope, size, start = wk
            ck = by_id.get(kpi)
            if ck is None:
                expired.append(wk)
                continue
            wm = wms.get(self._topic_of(ck))
            end = self._assigner(size).end(start)
            closed = wm is not None and wm >= end
            try:
                if closed and not ws.final:
                    ws.final = True
                    ws.dirty = False
                    ws.last_emit = now
                    out.append(self._record(wk, ws, final=True))
                elif (
                    ws.dirty
                    and now - ws.last_emit >= interval
                    and (ws.final or self._assigner(size).tumbling or wk in live_hopping)
                ):
                    # live value of an open window, or a late update of a final one
                    ws.dirty = False
                    ws.last_emit = now
                    out.append(self._record(wk, ws, final=ws.final))
            except Exception as exc:
                why = describe_exception(exc)
                self.quarantined[wk] = why
                self._failures.append((wk, why))
                expired.append(wk)
                continue
            if ws.final and not ws.dirty and wm is not None and wm >= end + grace:
                expired.append(wk)
        for wk in expired:
            del self.windows[wk]
        self._expire_quarantine(wms)
        self._forget_panes(wms)
        self.emitted += len(out)
        return out

    def _live_hopping_windows(self, wms: dict[str, int | None]) -> set[WindowKey]:
        """Per (kpi, scope, size) of a hopping window, the open window that closes next.

        A new event changes every overlapping hopping window that holds its pane (15 for
        15 min advancing 1 min). Only the one that closes next, the "last 15 minutes" a
        wall shows, gets live values; each of the others still emits its final value
        (and late corrections) when the watermark passes its end. That keeps live
        traffic at one record per (kpi, scope, size) and interval instead of 15.
        """
        nearest: dict[tuple[str, str, int], int] = {}
        for kpi, scope, size, start in self.windows:
            assigner = self.assigners.get(size)
            if assigner is None or assigner.tumbling:
                continue
            ck = self.index.by_id.get(kpi)
            wm = wms.get(self._topic_of(ck)) if ck is not None else None
            if wm is not None and assigner.end(start) <= wm:
                continue  # closed: its final is due, not a live value
            key = (kpi, scope, size)
            held = nearest.get(key)
            if held is None or start < held:
                nearest[key] = start
        return {(kpi, scope, size, start) for (kpi, scope, size), start in nearest.items()}

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
        grace = self.config.grace_ms
        for (kpi, scope), cells in list(self.panes.items()):
            ck = self.index.by_id.get(kpi)
            wm = None if ck is None else wms.get(self._topic_of(ck))
            if ck is None:
                del self.panes[(kpi, scope)]
                self.revision_floor.pop((kpi, scope), None)
                continue
            if wm is None:
                continue
            longest = max(self._assigner(s).size_ms for s in ck.windows)
            for pane in [p for p in cells if p + longest + grace <= wm]:
                del cells[pane]
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

    def bump_revisions(self, n: int) -> None:
        """After a restore: revisions emitted after the snapshot (at most ``n`` per
        window) stay below every revision emitted from now on."""
        for ws in self.windows.values():
            ws.revision += n
        for cell in self.revision_floor:
            self.revision_floor[cell] += n

    def restore_cell(self, kpi: str, scope: str, pane: int, state: dict[str, Any]) -> None:
        cell = self.panes.setdefault((kpi, scope), {}).setdefault(pane, {})
        for src, (v, d) in state.items():
            cell[src] = (int(v), Partial.from_dict(d))
