"""The checkpoint protocol (``streams/checkpoint.py``): crashes injected at every
boundary of a round, against a fake consumer (commits) and a fake producer (acks).

A toy stateful consumer sums the values of an input log; its state (sum, applied offset)
is its effect. After every crash it restarts the way the stream stages do: restore the
newest acknowledged snapshot, resume at the committed offset, skip what the state holds.
Whatever the crash point, the final sum counts every record exactly once, and an offset
is never committed before the snapshot that covers it was acknowledged.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from streams.checkpoint import Checkpoint, OffsetTracker, run_checkpoint

TP = ("input", 0)
LOG = [(i, i * 10 + 1) for i in range(40)]  # (offset, value)
TRUTH = sum(v for _, v in LOG)


class Crash(Exception):
    pass


@dataclass
class FakeConsumer:
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    crash_on_commit: bool = False

    async def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        if self.crash_on_commit:
            raise Crash("process killed while committing")
        self.committed.update(offsets)


@dataclass
class FakeProducer:
    """Snapshots acknowledged by the broker (the durable state topic)."""

    acked: list[tuple[int, int]] = field(default_factory=list)  # (sum, next offset)
    crash_before_ack: bool = False

    async def send_and_wait(self, snapshot: tuple[int, int]) -> None:
        await asyncio.sleep(0)
        if self.crash_before_ack:
            raise Crash("process killed before the broker acknowledged the snapshot")
        self.acked.append(snapshot)


@dataclass
class Summer:
    total: int = 0
    tracker: OffsetTracker[tuple[str, int]] = field(default_factory=OffsetTracker)
    skipped: int = 0

    def restore(self, producer: FakeProducer) -> int:
        """Newest durable snapshot; returns the offset to resume from."""
        self.total, position = producer.acked[-1] if producer.acked else (0, 0)
        self.tracker.restore(TP, position)
        return position

    def apply(self, records: list[tuple[int, int]]) -> None:
        for offset, value in records:
            if self.tracker.replayed(TP, offset):
                self.skipped += 1
                continue
            self.total += value
            self.tracker.advance(TP, offset + 1)

    async def checkpoint(self, producer: FakeProducer, consumer: FakeConsumer) -> dict[object, int]:
        async def store(cp: Checkpoint[tuple[str, int]]) -> bool:
            if cp.offsets:
                await producer.send_and_wait((self.total, cp.offsets[TP]))
            return True

        return await run_checkpoint(self.tracker, store, consumer.commit)


async def _run(crash_at: str, after_batches: int) -> tuple[Summer, FakeProducer, FakeConsumer]:
    producer, consumer = FakeProducer(), FakeConsumer()
    worker = Summer()
    pos = 0
    batches = 0
    crashed = False
    while pos < len(LOG):
        batch = LOG[pos : pos + 7]
        if crash_at == "mid_batch" and batches == after_batches and not crashed:
            worker.apply(batch[:3])  # killed while applying: nothing of it is durable
            crashed = True
        else:
            worker.apply(batch)
            pos = batch[-1][0] + 1
            batches += 1
            if crashed or batches != after_batches:
                await worker.checkpoint(producer, consumer)
                continue
            acked_before, committed_before = list(producer.acked), dict(consumer.committed)
            producer.crash_before_ack = crash_at == "before_ack"
            consumer.crash_on_commit = crash_at == "on_commit"
            if crash_at in ("before_ack", "on_commit"):
                with pytest.raises(Crash):
                    await worker.checkpoint(producer, consumer)
                if crash_at == "before_ack":
                    # nothing new is durable, so nothing new is committed
                    assert producer.acked == acked_before
                    assert consumer.committed == committed_before
                else:
                    # durable but not committed: the restart replays and skips
                    assert producer.acked[-1][1] == pos
                    assert consumer.committed == committed_before
            elif crash_at == "after_commit":
                await worker.checkpoint(producer, consumer)
                assert consumer.committed[TP] == pos == producer.acked[-1][1]
            producer.crash_before_ack = consumer.crash_on_commit = False
            crashed = True
        if crashed and crash_at != "none":
            # restart: a new process restores the durable state, resumes at the commit
            worker = Summer()
            resume_at = worker.restore(producer)
            assert resume_at >= consumer.committed.get(TP, 0)  # the state covers the commit
            pos = consumer.committed.get(TP, 0)
            crash_at = "none"
    await worker.checkpoint(producer, consumer)
    return worker, producer, consumer


@pytest.mark.parametrize(
    "crash_at", ["none", "mid_batch", "before_ack", "on_commit", "after_commit"]
)
@pytest.mark.parametrize("after_batches", [1, 3])
async def test_every_record_counts_once_whatever_the_crash_point(
    crash_at: str, after_batches: int
) -> None:
    worker, producer, consumer = await _run(crash_at, after_batches)
    assert worker.total == TRUTH
    assert consumer.committed[TP] == len(LOG) == producer.acked[-1][1]
    if crash_at == "on_commit":
        # the durable state was ahead of the commit: its records were replayed and skipped
        assert worker.skipped == 7


async def test_nothing_is_committed_when_the_store_gives_up() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.advance("p", 10)
    commits: list[dict[str, int]] = []

    async def give_up(_: Checkpoint[str]) -> bool:
        return False  # e.g. stopping during a database outage

    async def commit(offsets: dict[str, int]) -> None:
        commits.append(offsets)

    assert await run_checkpoint(tracker, give_up, commit) == {}
    assert commits == [] and tracker.durable == {}


async def test_unchanged_partitions_are_not_committed_again_and_only_limits_a_round() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    commits: list[dict[str, int]] = []

    async def store(_: Checkpoint[str]) -> bool:
        return True

    async def commit(offsets: dict[str, int]) -> None:
        commits.append(dict(offsets))

    tracker.advance("a", 5)
    tracker.advance("b", 3)
    assert await run_checkpoint(tracker, store, commit, only={"a"}) == {"a": 5}
    assert await run_checkpoint(tracker, store, commit) == {"b": 3}
    assert await run_checkpoint(tracker, store, commit) == {}
    tracker.advance("a", 4)  # a rollback to an earlier durable state: moves back
    assert tracker.begin().offsets == {"a": 4}
    tracker.forget(["a"])
    assert tracker.begin().offsets == {}
    assert commits == [{"a": 5}, {"b": 3}]


def test_replayed_records_are_those_before_the_restored_position() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.restore("p", 100)
    assert tracker.replayed("p", 99) and not tracker.replayed("p", 100)
    assert not tracker.replayed("q", 0)
    assert tracker.committable(Checkpoint({"p": 100})) == {"p": 100}
    assert tracker.committable(Checkpoint({"p": 101})) == {}  # not durable yet
