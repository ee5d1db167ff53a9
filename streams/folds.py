"""Batch folds: a batch's events folded into pane partials group by group (sans-I/O).

Folding event by event (:attr:`CompiledKpi.update`) costs a Python call and a few
attribute updates per event, KPI and scope: 9 of each for an air observation, about
half of what the worker spent per event. Here a batch of one event type is grouped once
per scope by (pane, scope); each payload field the KPIs read is taken out of the events
once per group (``operator.itemgetter`` in C); then each (KPI, scope, pane) partial takes
its group's values in a handful of C calls (``functools.reduce``, ``min``, ``max``).

Bit-identical to folding one by one, so a restored or rolled-back worker, whatever its
batch boundaries, produces the same partials: sums are left folds in offset order
(``reduce(operator.add)``, not ``sum()``, which compensates rounding since Python 3.12,
nor numpy's pairwise sums); ``min``/``max`` keep the first of equal values as the strict
comparisons of :meth:`Partial.add_value` do; ``last`` is the latest event time, the later
offset winning ties. ``tests/test_streams_folds.py`` checks this against
:attr:`CompiledKpi.update` on generated batches.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from functools import reduce
from operator import add, itemgetter
from typing import Any

from streams.partials import (
    _POLLUTANT_SET,
    POLLUTANTS,
    Partial,
    sketch_from_dict,
    sketch_to_dict,
)

Row = dict[str, Any]


class Group:
    """The events of one batch that fall into one (scope, pane): positions in the batch,
    and their columns (taken once, shared by every KPI of the group)."""

    __slots__ = ("_cols", "_pick", "batch", "n", "positions")

    def __init__(self, batch: Batch, positions: list[int]) -> None:
        self.batch = batch
        self.positions = positions
        self.n = len(positions)
        self._pick: Callable[[Sequence[Any]], Sequence[Any]]
        if self.n > 1:
            self._pick = itemgetter(*positions)
        elif self.n == 1:
            only = positions[0]
            self._pick = lambda seq: (seq[only],)
        else:  # (a where filter that keeps none of the group)
            self._pick = lambda seq: ()
        self._cols: dict[str, Sequence[Any]] = {}

    def col(self, name: str) -> Sequence[Any]:
        """The group's values of payload field ``name`` (None where absent)."""
        values = self._cols.get(name)
        if values is None:
            values = self._cols[name] = self._pick(self.batch.col(name))
        return values

    def present(self, name: str) -> tuple[Sequence[Any], Sequence[int]]:
        """The group's values of ``name`` where present (not None), with their times."""
        values = self.col(name)
        if name in self.batch.full:
            return values, self.times
        kept = [(v, t) for v, t in zip(values, self.times, strict=True) if v is not None]
        return [v for v, _ in kept], [t for _, t in kept]

    def values(self, name: str) -> Sequence[Any]:
        """The group's values of ``name`` where present (not None)."""
        values = self.col(name)
        if name in self.batch.full:
            return values
        return [v for v in values if v is not None]

    @property
    def times(self) -> Sequence[int]:
        return self.col(_TIMES)

    @property
    def rows(self) -> Sequence[Row]:
        return self.col(_ROWS)

    def where(self, keep: Callable[[Row], bool]) -> Group:
        """The sub-group of the events ``keep`` accepts (a KPI's ``where`` filter)."""
        rows = self.batch.rows
        return Group(self.batch, [i for i in self.positions if keep(rows[i])])


_TIMES = "\x00times"
_ROWS = "\x00rows"


class Batch:
    """Valid, on-time events of one type, in offset order: payloads and event times."""

    __slots__ = ("_cols", "full", "rows", "times")

    def __init__(self, rows: list[Row], times: list[int]) -> None:
        self.rows = rows
        self.times = times
        self._cols: dict[str, Sequence[Any]] = {_TIMES: times, _ROWS: rows}
        # the columns without a None (looked for once per batch, not once per group)
        self.full: set[str] = {_TIMES, _ROWS}

    def col(self, name: str) -> Sequence[Any]:
        values = self._cols.get(name)
        if values is None:
            try:  # in C while every row has the field (required ones always do)
                values = list(map(itemgetter(name), self.rows))
            except KeyError:
                values = [row.get(name) for row in self.rows]
            self._cols[name] = values
            if None not in values:
                self.full.add(name)
        return values


Fold = Callable[[Partial, Group], None]


def add_values(p: Partial, values: Sequence[Any], times: Sequence[int]) -> None:
    """``p.add_value(v, t)`` for each pair in order, in a few C calls."""
    n = len(values)
    if not n:
        return
    p.count += n
    p.sum = reduce(add, values, p.sum)
    lo = min(values)
    if p.min is None or lo < p.min:
        p.min = lo
    hi = max(values)
    if p.max is None or hi > p.max:
        p.max = hi
    t_last = max(times)
    if p.last_t is None or t_last >= p.last_t:
        # the last event at the latest time wins, as ``t >= last_t`` lets it one by one
        at = n - 1 - list(reversed(times)).index(t_last) if times[-1] != t_last else n - 1
        p.last_t = t_last
        p.last_v = values[at]


def value_fold(field: str) -> Fold:
    def fold(p: Partial, g: Group) -> None:
        values, times = g.present(field)
        add_values(p, values, times)

    return fold


def sample_fold(field: str) -> Fold:
    def fold(p: Partial, g: Group) -> None:
        # DDSketch has no batch add; the sketch sums its values in order like this.
        for v, t in zip(*g.present(field), strict=True):
            p.add_sample(v, t)

    return fold


def count_fold(p: Partial, g: Group) -> None:
    p.count += g.n


def rate_fold(numerator: Callable[[Row], bool]) -> Fold:
    def fold(p: Partial, g: Group) -> None:
        p.count += g.n
        p.hits += sum(map(numerator, g.rows))

    return fold


def ratio_fold(field: str, denominator: str) -> Fold:
    def fold(p: Partial, g: Group) -> None:
        values, dens = g.col(field), g.col(denominator)
        if field not in g.batch.full or denominator not in g.batch.full:
            both = [
                (v, d, t)
                for v, d, t in zip(values, dens, g.times, strict=True)
                if v is not None and d is not None
            ]
            add_values(p, [v for v, _, _ in both], [t for _, _, t in both])
            p.den = reduce(add, [d for _, d, _ in both], p.den)
            return
        add_values(p, values, g.times)
        p.den = reduce(add, dens, p.den)

    return fold


def aqi_fold(p: Partial, g: Group) -> None:
    """``p.add_pollutants(row)`` for each row in order."""
    p.count += g.n
    pol = p.pol
    if pol is None:
        pol = p.pol = {}
    columns = {name: g.values(name) for name in POLLUTANTS}
    new = [name for name, vs in columns.items() if vs and name not in pol]
    if new:
        # New cells in the order the rows first name them (the order one by one).
        order: dict[str, None] = {}  # (a dict: ordered, and a fast `in`)
        for row in g.rows:
            for name, v in row.items():
                if (
                    name in _POLLUTANT_SET
                    and v is not None
                    and name not in pol
                    and name not in order
                ):
                    order[name] = None
            if len(order) == len(new):
                break
        for name in order:
            vs = columns[name]
            pol[name] = [reduce(add, vs[1:], float(vs[0])), float(len(vs))]
    for name, vs in columns.items():
        if vs and name not in new:
            cell = pol[name]
            cell[0] = reduce(add, vs, cell[0])
            cell[1] += len(vs)


def per_event(update: Callable[[Partial, Row, int], None]) -> Fold:
    """The fold of a KPI without a batch form (or whose ``update`` was replaced): its
    per-event updater, called for each event in order."""

    def fold(p: Partial, g: Group) -> None:
        for row, t in zip(g.rows, g.times, strict=True):
            update(p, row, t)

    return fold


def clone(p: Partial) -> Partial:
    """An independent copy of ``p`` (a batch folds into copies, committed when whole)."""
    q = Partial.__new__(Partial)
    q.count, q.sum, q.min, q.max = p.count, p.sum, p.min, p.max
    q.last_t, q.last_v, q.hits, q.den = p.last_t, p.last_v, p.hits, p.den
    q.pol = None if p.pol is None else {k: [s, n] for k, (s, n) in p.pol.items()}
    q.sketch = None
    if p.sketch is not None:
        q.sketch = sketch_from_dict(sketch_to_dict(p.sketch))
    return q


def positions(keys: Iterable[Hashable]) -> dict[Any, list[int]]:
    """Each distinct key with the positions where it occurs, in order."""
    out: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        at = out.get(key)
        if at is None:
            out[key] = [i]
        else:
            at.append(i)
    return out


def keeper(where: tuple[tuple[str, frozenset[Any]], ...]) -> Callable[[Row], bool] | None:
    """A KPI's ``where`` filter as a predicate on payloads (None: keeps all)."""
    if not where:
        return None
    return lambda row: all(row.get(name) in allowed for name, allowed in where)
