"""Mergeable partial aggregates (sans-I/O).

A :class:`Partial` holds everything any catalogue aggregation needs for one
(kpi, scope, pane) from one source partition: count, sum, min, max, last, the rate
numerator, the ratio denominator, a DDSketch for quantiles and per-pollutant sums for
AQI. Partials merge associatively, so a window's value is the merge of its panes'
partials over every source partition, in any grouping. Merges are done in a fixed
(sorted) order so float sums are bit-identical whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ddsketch import DDSketch

# DDSketch relative accuracy: quantiles are within 1 % of the true value.
SKETCH_ACCURACY = 0.01
POLLUTANTS: tuple[str, ...] = ("pm25", "pm10", "o3", "no2", "so2", "co")
_POLLUTANT_SET = frozenset(POLLUTANTS)


class Partial:
    """The mutable partial state of one aggregation cell."""

    __slots__ = ("count", "den", "hits", "last_t", "last_v", "max", "min", "pol", "sketch", "sum")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.min: float | None = None
        self.max: float | None = None
        self.last_t: int | None = None
        self.last_v: float | None = None
        self.hits = 0  # events that also match the rate numerator
        self.den = 0.0  # sum of the ratio denominator field
        self.sketch: DDSketch | None = None
        self.pol: dict[str, list[float]] | None = None  # pollutant -> [sum, count]

    # -- updates (hot path: one call per matching event) ------------------------------

    def add_value(self, v: float, t_ms: int) -> None:
        self.count += 1
        self.sum += v
        if self.min is None or v < self.min:
            self.min = v
        if self.max is None or v > self.max:
            self.max = v
        if self.last_t is None or t_ms >= self.last_t:
            self.last_t = t_ms
            self.last_v = v

    def add_sample(self, v: float, t_ms: int) -> None:
        self.add_value(v, t_ms)
        if self.sketch is None:
            self.sketch = DDSketch(SKETCH_ACCURACY)
        # DDSketch maps values > 0 logarithmically; durations of 0 go to its zero bucket.
        self.sketch.add(v)

    def add_pollutants(self, data: dict[str, Any]) -> None:
        self.count += 1
        pol = self.pol
        if pol is None:
            pol = self.pol = {}
        for name, v in data.items():
            if name in _POLLUTANT_SET and v is not None:
                cell = pol.get(name)
                if cell is None:
                    pol[name] = [float(v), 1.0]
                else:
                    cell[0] += v
                    cell[1] += 1.0

    # -- merge ----------------------------------------------------------------------

    def merge(self, other: Partial) -> None:
        self.count += other.count
        self.sum += other.sum
        if other.min is not None and (self.min is None or other.min < self.min):
            self.min = other.min
        if other.max is not None and (self.max is None or other.max > self.max):
            self.max = other.max
        if other.last_t is not None and (self.last_t is None or other.last_t >= self.last_t):
            self.last_t = other.last_t
            self.last_v = other.last_v
        self.hits += other.hits
        self.den += other.den
        if other.sketch is not None:
            if self.sketch is None:
                self.sketch = DDSketch(SKETCH_ACCURACY)
            self.sketch.merge(other.sketch)
        if other.pol is not None:
            if self.pol is None:
                self.pol = {}
            for name, (s, n) in other.pol.items():
                cell = self.pol.get(name)
                if cell is None:
                    self.pol[name] = [s, n]
                else:
                    cell[0] += s
                    cell[1] += n

    def copy(self) -> Partial:
        return Partial.from_dict(self.to_dict())

    def means(self) -> dict[str, float]:
        """Window-mean concentration of each pollutant seen (for AQI)."""
        if not self.pol:
            return {}
        return {name: s / n for name, (s, n) in self.pol.items() if n}

    # -- wire form --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"n": self.count}
        if self.sum:
            d["s"] = self.sum
        if self.min is not None:
            d["lo"] = self.min
            d["hi"] = self.max
        if self.last_t is not None:
            d["lt"] = self.last_t
            d["lv"] = self.last_v
        if self.hits:
            d["h"] = self.hits
        if self.den:
            d["d"] = self.den
        if self.sketch is not None:
            d["sk"] = sketch_to_dict(self.sketch)
        if self.pol is not None:
            d["p"] = self.pol
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Partial:
        p = cls()
        p.count = int(d["n"])
        p.sum = float(d.get("s", 0.0))
        p.min = d.get("lo")
        p.max = d.get("hi")
        p.last_t = d.get("lt")
        p.last_v = d.get("lv")
        p.hits = int(d.get("h", 0))
        p.den = float(d.get("d", 0.0))
        if "sk" in d:
            p.sketch = sketch_from_dict(d["sk"])
        if "p" in d:
            p.pol = {k: [float(v[0]), float(v[1])] for k, v in d["p"].items()}
        return p


def merge_all(partials: list[Partial]) -> Partial:
    out = Partial()
    for p in partials:
        out.merge(p)
    return out


def sketch_to_dict(s: DDSketch) -> dict[str, Any]:
    """DDSketch as plain JSON (its protobuf form would need another dependency)."""

    def bins(store: Any) -> dict[str, float]:
        return {str(i + store.offset): c for i, c in enumerate(store.bins) if c}

    return {
        "pos": bins(s._store) if s._store.count else {},
        "neg": bins(s._negative_store) if s._negative_store.count else {},
        "zero": s._zero_count,
        "count": s._count,
        "sum": s._sum,
        "min": s._min,
        "max": s._max,
    }


def sketch_from_dict(d: dict[str, Any]) -> DDSketch:
    s = DDSketch(SKETCH_ACCURACY)
    for k, c in d["pos"].items():
        s._store.add(int(k), c)
    for k, c in d["neg"].items():
        s._negative_store.add(int(k), c)
    s._zero_count = d["zero"]
    s._count = d["count"]
    s._sum = d["sum"]
    s._min = d["min"]
    s._max = d["max"]
    return s


Updater = Callable[[Partial, dict[str, Any], int], None]
