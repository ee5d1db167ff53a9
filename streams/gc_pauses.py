"""How long Python's cyclic garbage collector stops the worker, and keeping it short.

The worker runs one loop: while the collector walks the heap, no batch is applied and no
KPI is emitted, and a full (generation 2) collection walks every object the windows,
panes and identities hold. Its pauses are counted (``ioc_streams_gc_seconds``) and a long
one is logged (``gc.slow``), so a stall on the wall can be told from a slow phase.

Measured in ``bench_e2e`` at +5,000 ev/s: a full collection every 1 to 3 s, 0.1 to 0.26 s
each, finding nothing to free (the state is a tree of dicts and partials that reference
counting frees). :class:`HeapSettler` therefore moves what exists after each checkpoint
out of the collector's sight (``gc.freeze``), so a collection walks only what was
allocated since; reference counting still frees frozen objects. Only garbage in
reference cycles that was alive at a freeze escapes, so every ``full_every_s`` the heap
is unfrozen and collected whole once (one longer pause), then frozen again.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

log = structlog.get_logger("streams")


class GcPauses:
    """A ``gc.callbacks`` hook: seconds per generation, and a log line for a long pause."""

    def __init__(self, registry: CollectorRegistry, slow_s: float = 0.1) -> None:
        self.seconds = Counter(
            "ioc_streams_gc_seconds",
            "Seconds the garbage collector stopped the worker, per generation",
            ["generation"],
            registry=registry,
        )
        self._by_generation = [self.seconds.labels(str(g)) for g in range(3)]
        self.slow_s = slow_s
        self.longest = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        generation = int(info.get("generation", 2))
        self._by_generation[generation].inc(took)
        self.longest = max(self.longest, took)
        if took >= self.slow_s:
            log.info(
                "gc.slow",
                generation=generation,
                seconds=round(took, 3),
                collected=info.get("collected"),
            )

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


class HeapSettler:
    """``settle()`` after each checkpoint: freeze the heap; now and then collect it whole."""

    def __init__(
        self, full_every_s: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.full_every_s = full_every_s
        self._clock = clock
        self._last_full = clock()
        self.full_collections = 0

    def settle(self) -> None:
        now = self._clock()
        if now - self._last_full >= self.full_every_s:
            self._last_full = now
            gc.unfreeze()
            gc.collect()
            self.full_collections += 1
        gc.freeze()
