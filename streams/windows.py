"""Event-time windows and per-partition watermarks (sans-I/O).

Time is epoch milliseconds everywhere in the engine: the CloudEvent ``time`` of each
event (``Event.time_ms``), never the arrival time.

The engine aggregates events into *panes*: tumbling slices of ``pane_ms`` (the 1-minute
tumbling window). Every window the catalogue asks for (1 min tumbling, 15 min hopping by
1 min, 1 h tumbling) is a union of whole panes, so the hot path touches one pane per
event and (kpi, scope) whatever the number of overlapping windows; windows are assembled
from mergeable pane partials in the second stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from events.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class WindowAssigner:
    """Windows of ``size_ms`` starting every ``hop_ms`` (tumbling when they are equal)."""

    size_ms: int
    hop_ms: int

    def __post_init__(self) -> None:
        if self.size_ms <= 0 or self.hop_ms <= 0:
            raise ConfigurationError("window size and hop must be positive")
        if self.size_ms % self.hop_ms:
            raise ConfigurationError(
                f"window size {self.size_ms} ms must be a multiple of its hop {self.hop_ms} ms"
            )

    @property
    def tumbling(self) -> bool:
        return self.size_ms == self.hop_ms

    def windows_for(self, t_ms: int) -> list[int]:
        """Start (ms) of every window that contains instant ``t_ms``, oldest first."""
        last = t_ms - t_ms % self.hop_ms
        first = last - self.size_ms + self.hop_ms
        return list(range(first, last + 1, self.hop_ms))

    def windows_for_span(self, start_ms: int, end_ms: int) -> list[int]:
        """Start of every window that contains the whole span [start, end) (a pane)."""
        return [s for s in self.windows_for(start_ms) if s + self.size_ms >= end_ms]

    def end(self, start_ms: int) -> int:
        return start_ms + self.size_ms


def pane_start(t_ms: int, pane_ms: int) -> int:
    return t_ms - t_ms % pane_ms


@dataclass(slots=True)
class Watermark:
    """Event-time progress of one source partition.

    ``value`` is the partition's event-time *front* minus the allowed lateness: every
    window that ends at or before it is final. Events up to ``grace_ms`` behind the
    watermark are still applied (and make the second stage re-emit the window with a
    higher revision); older ones are *too late*.

    The front is the newest event time seen, but never later than the worker's clock at
    the time the event is applied (``observe(t, clock_ms)``): an event from a source whose
    clock runs ahead is applied to its window, yet moves the front no further than "now".
    So one early event cannot make the on-time events of the partition's other sources
    too late; they are too late only when they lag the worker's clock by more than the
    lateness plus the grace, which is when they would be too late anyway once any
    on-time source of the partition reports.

    A partition that received nothing for ``idle_timeout_s`` (wall clock) is *idle*:
    the second stage then ignores it when it takes the minimum over partitions, so a
    silent partition does not hold windows open forever.
    """

    lateness_ms: int
    grace_ms: int
    idle_timeout_s: float
    max_event_ms: int | None = None
    last_activity: float = field(default_factory=time.monotonic)

    @property
    def value(self) -> int | None:
        return None if self.max_event_ms is None else self.max_event_ms - self.lateness_ms

    def too_late(self, t_ms: int) -> bool:
        wm = self.value
        return wm is not None and t_ms < wm - self.grace_ms

    def observe(self, t_ms: int, clock_ms: int | None = None) -> None:
        if clock_ms is not None and t_ms > clock_ms:
            t_ms = clock_ms
        if self.max_event_ms is None or t_ms > self.max_event_ms:
            self.max_event_ms = t_ms

    def touch(self, now: float | None = None) -> None:
        self.last_activity = time.monotonic() if now is None else now

    def idle(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return now - self.last_activity >= self.idle_timeout_s


def combined_watermark(marks: list[tuple[int | None, bool]]) -> int | None:
    """The watermark of a set of partitions given (watermark, idle) per partition.

    The minimum over active partitions; a partition that is active but has not seen an
    event yet holds everything back (None). When every partition is idle, the maximum:
    nothing more is coming, so everything seen so far may close.
    """
    active = [wm for wm, idle in marks if not idle]
    if active:
        if any(wm is None for wm in active):
            return None
        return min(wm for wm in active if wm is not None)
    seen = [wm for wm, _ in marks if wm is not None]
    return max(seen) if seen else None
