"""The ledger of what each way in acknowledged, and its comparison with what came out.

Pure: no I/O. An event is *attempted* once it was sent at least once (whatever the
answer) and *acknowledged* once a way in confirmed it (Kafka ack, HTTP 202, MQTT PUBACK).
Every copy sent of one event carries the same id, source and time, so the pipeline must
count it once.

- **lost**: acknowledged but missing (from its final KPI window, from the raw table, or a
  too-late one from the dead letters).
- **duplicated**: counted more than once (a window count above the number of distinct
  events attempted in it; a raw row more than once).
- **misplaced**: counted where it does not belong (a too-late event in a window, an
  on-time one dead-lettered, a raw row or window nobody attempted).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

WINDOW_MS = 60_000

WAYS = ("kafka", "http", "mqtt")


@dataclass(frozen=True, slots=True)
class Planned:
    """One event of the run (every copy sent of it is byte for byte the same)."""

    id: str
    source: str
    station: str
    time_ms: int
    too_late: bool = False

    @property
    def window(self) -> int:
        return self.time_ms - self.time_ms % WINDOW_MS


@dataclass
class Ledger:
    """What was sent and what was acknowledged, per event and per way in."""

    events: dict[str, Planned] = field(default_factory=dict)
    attempts: Counter[str] = field(default_factory=Counter)  # copies sent, by event id
    acked: Counter[str] = field(default_factory=Counter)  # copies acknowledged, by event id
    by_way: Counter[str] = field(default_factory=Counter)  # acknowledged copies, by way in
    failed_by_way: Counter[str] = field(default_factory=Counter)  # unacknowledged attempts

    def attempt(self, event: Planned) -> None:
        self.events.setdefault(event.id, event)
        self.attempts[event.id] += 1

    def ack(self, event: Planned, way: str) -> None:
        self.acked[event.id] += 1
        self.by_way[way] += 1

    def fail(self, way: str) -> None:
        self.failed_by_way[way] += 1

    def acknowledged(self) -> list[Planned]:
        return [self.events[i] for i in self.acked]

    @property
    def duplicates_sent(self) -> int:
        return sum(n - 1 for n in self.attempts.values() if n > 1)

    def windows(self, *, acked_only: bool) -> Counter[tuple[str, int]]:
        """Distinct on-time events per (station, 1-min window start)."""
        ids = self.acked if acked_only else self.attempts
        return Counter((e.station, e.window) for i in ids if not (e := self.events[i]).too_late)


@dataclass(frozen=True, slots=True)
class Observed:
    """What the pipeline produced for the run's stations."""

    # final 1-min window counts per (station, window start); the highest revision
    final_counts: dict[tuple[str, int], int]
    # raw `events` rows per event id (the table is unique on time, source, id)
    raw_rows: dict[str, int]
    # dead-letter reasons per event id
    dead_letters: dict[str, list[str]]


@dataclass(frozen=True, slots=True)
class Verdict:
    events: int  # distinct events acknowledged
    copies: int  # copies acknowledged (duplicates included)
    lost: int
    duplicated: int
    misplaced: int
    too_late_sent: int
    too_late_dead_lettered: int
    details: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.misplaced == 0


def compare(ledger: Ledger, seen: Observed) -> Verdict:
    """The ledger against the final windows, the raw table and the dead letters."""
    lost = duplicated = misplaced = 0
    details: list[str] = []
    must = ledger.windows(acked_only=True)
    may = ledger.windows(acked_only=False)
    for key in sorted(set(must) | set(may) | set(seen.final_counts)):
        got = seen.final_counts.get(key)
        if got is None and key in may:
            lost += must.get(key, 0)
            if must.get(key, 0):
                details.append(f"no final window for {key[0]} @ {key[1]}")
            continue
        got = got or 0
        if key not in may:
            misplaced += got
            details.append(f"window {key[0]} @ {key[1]} counts {got}, none sent on time")
        elif got < must[key]:
            lost += must[key] - got
            details.append(f"window {key[0]} @ {key[1]}: {got} < {must[key]} acknowledged")
        elif got > may[key]:
            duplicated += got - may[key]
            details.append(f"window {key[0]} @ {key[1]}: {got} > {may[key]} sent")
    for event in ledger.acknowledged():
        rows = seen.raw_rows.get(event.id, 0)
        if rows == 0:
            lost += 1
            details.append(f"raw row missing: {event.id}")
        elif rows > 1:
            duplicated += rows - 1
            details.append(f"raw rows ×{rows}: {event.id}")
        reasons = seen.dead_letters.get(event.id, [])
        if event.too_late and "too_late" not in reasons:
            lost += 1
            details.append(f"too-late event not dead-lettered too_late: {event.id}")
        wrong = [r for r in reasons if r != "too_late" or not event.too_late]
        if wrong:
            misplaced += 1
            details.append(f"{event.id} dead-lettered {wrong}")
    unknown = [i for i in seen.raw_rows if i not in ledger.events]
    misplaced += len(unknown)
    details.extend(f"raw row of an event never sent: {i}" for i in unknown[:10])
    too_late = [e for e in ledger.acknowledged() if e.too_late]
    return Verdict(
        events=len(ledger.acked),
        copies=sum(ledger.acked.values()),
        lost=lost,
        duplicated=duplicated,
        misplaced=misplaced,
        too_late_sent=len(too_late),
        too_late_dead_lettered=sum(
            1 for e in too_late if "too_late" in seen.dead_letters.get(e.id, [])
        ),
        details=tuple(details),
    )
