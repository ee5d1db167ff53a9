"""The one checkpoint protocol of every consumer here: effects durable, then offsets.

Stage 1, stage 2, the Faust-hosted worker, the storage sinks and the alerts worker turn
consumed records into effects (a state snapshot, rows in TimescaleDB, records on an output
topic). Each may commit a partition's offset only once the effects of every record before
it are durable, and never at all for work it gives up (a crash, a stop during an outage):
then whoever reads the partition next starts from the last commit and the effects are
made again, which the state (applied offsets, seen identities) or the idempotent writes
absorb. This module is that ordering, sans-I/O:

    tracker.advance(tp, next_offset)   # records before next_offset are in the effects
    cp = tracker.begin()               # what a checkpoint taken now covers
    ... store the effects and wait for every acknowledgement ...
    tracker.stored(cp)                 # durable: now the offsets may move
    ... commit cp.offsets ...
    tracker.committed(cp)

:func:`run_checkpoint` drives one round against two callables, so the adapters keep only
their I/O. A crash anywhere before ``committed`` leaves the last commit where it was;
:meth:`OffsetTracker.restore` takes a restored state's position, after which
:meth:`OffsetTracker.replayed` tells the records the state already holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)  # a partition: aiokafka's TopicPartition, Faust's TP


@dataclass(frozen=True, slots=True)
class Checkpoint(Generic[P]):
    """The next offset per partition that one checkpoint covers."""

    offsets: Mapping[P, int]


@dataclass(slots=True)
class OffsetTracker(Generic[P]):
    """Per partition: how far the effects reach, what is durable, what is committed."""

    position: dict[P, int] = field(default_factory=dict)  # next offset not in the effects
    durable: dict[P, int] = field(default_factory=dict)
    committed_at: dict[P, int] = field(default_factory=dict)

    def advance(self, tp: P, next_offset: int) -> None:
        """The effects now include every record of ``tp`` before ``next_offset`` and none
        after it (lower than before after a rollback to an earlier durable state)."""
        self.position[tp] = next_offset

    def restore(self, tp: P, next_offset: int) -> None:
        """A state restored from durable storage reaches ``next_offset``. The group's
        commit is at most there (a crash may have come between the acknowledgement and
        the commit), so the next round commits it again: harmless if it was."""
        self.position[tp] = self.durable[tp] = next_offset
        self.committed_at.pop(tp, None)

    def replayed(self, tp: P, offset: int) -> bool:
        """Whether the record at ``offset`` is already in the effects (a re-delivery after
        a restore or a rebalance): skip it."""
        return offset < self.position.get(tp, 0)

    def begin(self, only: Collection[P] | None = None) -> Checkpoint[P]:
        """The offsets a checkpoint taken now covers: partitions whose effects reach
        elsewhere than their last commit (all of them, or those in ``only``)."""
        return Checkpoint(
            {
                tp: pos
                for tp, pos in self.position.items()
                if (only is None or tp in only) and pos != self.committed_at.get(tp)
            }
        )

    def stored(self, cp: Checkpoint[P]) -> None:
        """Every effect ``cp`` covers is durable (the broker or database acknowledged)."""
        self.durable.update(cp.offsets)

    def committable(self, cp: Checkpoint[P]) -> dict[P, int]:
        """What of ``cp`` may be committed: only offsets whose effects are durable."""
        return {tp: pos for tp, pos in cp.offsets.items() if self.durable.get(tp) == pos}

    def committed(self, offsets: Mapping[P, int]) -> None:
        self.committed_at.update(offsets)

    def forget(self, tps: Collection[P]) -> None:
        """Partitions given up (revoked): their next owner starts from the commit."""
        for tp in tps:
            self.position.pop(tp, None)
            self.durable.pop(tp, None)
            self.committed_at.pop(tp, None)


async def run_checkpoint(
    tracker: OffsetTracker[P],
    store: Callable[[Checkpoint[P]], Awaitable[bool]],
    commit: Callable[[dict[P, int]], Awaitable[None]],
    *,
    only: Collection[P] | None = None,
    checkpoint: Checkpoint[P] | None = None,
) -> dict[P, int]:
    """One round: ``store`` the effects the checkpoint covers (returns False when it gave
    up, e.g. stopping during an outage: nothing is committed), then ``commit`` what is
    durable. The checkpoint is :meth:`OffsetTracker.begin` (``only``), or ``checkpoint``
    for an adapter that pipelines (the offsets of one batch while the next is read).
    Returns the offsets committed. An exception from either leaves the last commit where
    it was and propagates."""
    cp = tracker.begin(only) if checkpoint is None else checkpoint
    if not await store(cp):
        return {}
    tracker.stored(cp)
    offsets = tracker.committable(cp)
    if offsets:
        await commit(offsets)
        tracker.committed(offsets)
    return offsets
