"""Stage 1: per-source-partition pane aggregation (sans-I/O).

One :class:`PartitionAggregator` owns one source partition (e.g. ``ioc.events.air`` #2).
It folds batches of raw records into pane partials, remembers the last offset it applied
(replayed offsets after a crash are skipped), tracks the partition's watermark and turns
bad and too-late records into dead letters. Its whole state is a small JSON document
(:meth:`snapshot`) that the adapter stores durably *before* committing the source offsets,
so a restarted worker resumes exactly where the stored state ends: no loss, no double
count, without Kafka transactions.

Changed panes are handed out as full partial states (:meth:`take_changes`), never as
deltas: publishing the same partial twice is harmless, which is what makes the second
stage (:mod:`streams.merger`) idempotent.

A record whose processing raises anything but a contract violation (a bug the record
provokes) may have been folded into some panes and not others. The aggregator then
rolls itself back to its last durable snapshot, quarantines the record's offset and asks
the adapter to fetch again from right after that snapshot (:attr:`rewind_to`): the
replay applies everything again except the quarantined record, which becomes a
``processing_error`` dead letter. No record can stop the worker, and none is counted
twice or half.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any, Protocol

import orjson

from events.binding import is_binary, structured_from_kafka
from events.envelope import DEFAULT_MAX_FUTURE_SKEW_S, Event, latest_event_ms
from events.errors import InvalidEventError
from events.errors import describe_exception as _describe
from events.fastdecode import Decoded, decode_fast
from events.records import DeadLetter
from streams.dedup import IdentityIndex, fingerprints, identity
from streams.folds import Batch, Fold, Group, clone, keeper, positions
from streams.kpis import CompiledKpi, KpiIndex
from streams.partials import Partial
from streams.windows import Watermark

COMPONENT = "streams"

PaneKey = tuple[str, str, int]  # (kpi, scope, pane start ms)


class SourceRecord(Protocol):
    """What the aggregator needs of a consumed record (aiokafka's ConsumerRecord fits)."""

    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]] | None: ...


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """The engine's time parameters (built from :class:`streams.settings.StreamsSettings`)."""

    pane_ms: int = 60_000
    lateness_ms: int = 120_000
    grace_ms: int = 120_000
    idle_timeout_s: float = 10.0
    live_interval_s: float = 1.0
    hopping_size_ms: int = 900_000
    hopping_hop_ms: int = 60_000
    hourly_ms: int = 3_600_000
    # Source topics are "<events_prefix><domain>" (tests use their own prefix).
    events_prefix: str = "ioc.events."
    # Events further ahead of the worker's clock are dead-lettered as future_time.
    max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S


@dataclass(frozen=True, slots=True)
class PaneUpdate:
    """The full current partial of one pane of one source partition."""

    source: str  # "<topic>:<partition>"
    version: int  # the source offset applied last when this state was taken
    kpi: str
    scope: str
    pane_ms: int
    partial: Partial


@dataclass(frozen=True, slots=True)
class WatermarkReport:
    source: str
    version: int
    watermark_ms: int | None
    idle: bool
    # Partitions of the source topic: a partition nobody reports on (being reassigned
    # after a crash) holds the topic's watermark back instead of being overlooked.
    topic_partitions: int = 0


def source_name(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


class PartitionAggregator:
    """Pane partials, applied offset and watermark of one source partition."""

    def __init__(self, topic: str, partition: int, index: KpiIndex, config: EngineConfig) -> None:
        self.topic = topic
        self.partition = partition
        self.source = source_name(topic, partition)
        self.index = index
        self.config = config
        self.applied = -1
        self.watermark = Watermark(config.lateness_ms, config.grace_ms, config.idle_timeout_s)
        self.panes: dict[PaneKey, Partial] = {}
        self._dirty: set[PaneKey] = set()
        self.seen = IdentityIndex()  # identities applied, by pane (streams.dedup)
        # event type -> its KPIs and their batch folds (KpiIndex.folds_for)
        self._plans: dict[str, tuple[tuple[CompiledKpi, Fold], ...]] = {}
        # offset -> why: records that raised while being applied; skipped on replay
        self.quarantine: dict[int, str] = {}
        # What a rollback returns to: the last snapshot known durable (None: the empty
        # state before ``_base_offset``, the first offset this aggregator applied).
        self._durable: bytes | None = None
        self._base_offset: int | None = None
        # Set by a rollback: the adapter fetches again from this offset. Until a record at
        # or before ``_poison`` arrives, fetched records after it are stale (prefetched
        # before the rewind) and are ignored: they come again.
        self.rewind_to: int | None = None
        self._poison: int | None = None
        self._clock_ms: int | None = None  # the worker's clock for the current batch
        # counters for metrics (not part of the durable state)
        self.processed = 0
        self.skipped = 0
        self.dead = 0
        self.too_late = 0
        self.rollbacks = 0
        self.duplicates = 0
        self.fold_fallbacks = 0  # batches applied event by event (their folding raised)

    # -- hot path ---------------------------------------------------------------------

    def process(
        self, records: Iterable[SourceRecord], now_s: float | None = None
    ) -> list[DeadLetter]:
        """Apply a batch in offset order; returns the dead letters it produced.

        ``now_s`` is the worker's wall clock (epoch seconds), for the future-time bound.
        After a rollback (:attr:`rewind_to` set) the rest of the batch is not applied.
        """
        dead: list[DeadLetter] = []
        now_s = time.time() if now_s is None else now_s
        self._clock_ms = int(now_s * 1000)
        latest = latest_event_ms(now_s, self.config.max_future_skew_s)
        applied = self.applied
        poison = self._poison
        processed = self.processed
        quarantine = self.quarantine
        valid: list[tuple[SourceRecord, bytes, Decoded]] = []
        for rec in records:
            offset = rec.offset
            if poison is not None:
                if offset > poison:
                    continue  # prefetched before the rewind: it is fetched again
                poison = self._poison = None
            if offset <= applied:
                self.skipped += 1  # replayed after a crash: already in the state
                continue
            if self._base_offset is None:
                self._base_offset = offset
            applied = self.applied = offset
            raw = rec.value if rec.value is not None else b""
            why = quarantine.get(offset) if quarantine else None
            if why is not None:
                dead.append(self._dead_letter(rec, raw, "processing_error", why))
                continue
            headers = rec.headers
            try:
                if headers and is_binary(headers):
                    # CloudEvents binary mode: into the structured form once; the dead
                    # letter of a record that fails later carries that form (headers and
                    # all), one that cannot be converted its value.
                    raw = structured_from_kafka(headers, rec.value)
                ev = decode_fast(raw, latest)
            except InvalidEventError as exc:
                dead.append(self._dead_letter(rec, raw, exc.reason, exc.detail))
                continue
            except Exception as exc:  # nothing was applied yet: the record alone fails
                dead.append(self._dead_letter(rec, raw, "processing_error", _describe(exc)))
                continue
            valid.append((rec, raw, ev))
        if not valid:
            self.dead += len(dead)
            return dead
        # Repeats of an identity already applied (in an earlier batch or this one) are
        # dropped: one vectorised look-up per batch, not one per event.
        pane_ms = self.config.pane_ms
        first = self.seen.admit(
            [ev.time_ms - ev.time_ms % pane_ms for _, _, ev in valid],
            fingerprints([identity(ev.source, ev.id) for _, _, ev in valid]),
        ).tolist()
        fresh = [v for v, new in zip(valid, first, strict=True) if new]
        self.duplicates += len(valid) - len(fresh)
        # The whole batch at once (streams.folds); if that raises, nothing of it was
        # applied, and event by event finds the record that raises and rolls back.
        if not self._fold_batch(fresh, dead):
            self.fold_fallbacks += 1
            for rec, raw, ev in fresh:
                try:
                    late = self._apply(ev)
                except Exception as exc:
                    self._roll_back(rec.offset, _describe(exc))
                    break
                if late is not None:
                    dead.append(self._dead_letter(rec, raw, "too_late", late))
        self.dead += len(dead)
        if self.processed != processed:
            self.watermark.touch()
        return dead

    def _fold_batch(
        self, fresh: list[tuple[SourceRecord, bytes, Decoded]], dead: list[DeadLetter]
    ) -> bool:
        """Apply ``fresh`` (valid, first of their identity) as :meth:`_apply` would one by
        one; False, with nothing applied, if folding raises."""
        wmark = self.watermark
        front = wmark.max_event_ms
        behind = wmark.lateness_ms + wmark.grace_ms
        clock = self._clock_ms
        late: list[tuple[SourceRecord, bytes, Decoded, int]] = []
        by_type: dict[str, tuple[list[dict[str, Any]], list[int]]] = {}
        for rec, raw, ev in fresh:
            t_ms = ev.time_ms
            if front is not None and t_ms < front - behind:
                late.append((rec, raw, ev, front))
                continue
            seen = clock if clock is not None and t_ms > clock else t_ms
            if front is None or seen > front:
                front = seen
            cols = by_type.get(ev.type)
            if cols is None:
                cols = by_type[ev.type] = ([], [])
            cols[0].append(ev.data)
            cols[1].append(t_ms)
        staged: dict[PaneKey, Partial] = {}
        try:
            for event_type, (rows, times) in by_type.items():
                self._fold_type(event_type, Batch(rows, times), staged)
        except Exception:
            return False
        # Commit: nothing below raises.
        self.panes.update(staged)
        self._dirty.update(staged)
        wmark.max_event_ms = front
        self.processed += len(fresh) - len(late)
        for rec, raw, ev, at in late:
            self._count_late(ev.district, at)
            dead.append(self._dead_letter(rec, raw, "too_late", _late_detail(ev)))
        return True

    def _fold_type(self, event_type: str, batch: Batch, staged: dict[PaneKey, Partial]) -> None:
        plan = self._plans.get(event_type)
        if plan is None:
            plan = self._plans[event_type] = self.index.folds_for(event_type)
        if not plan:
            return
        pane_ms = self.config.pane_ms
        kinds = {kind for ck, _ in plan for kind in ck.scopes}
        panes_of = [t_ms - t_ms % pane_ms for t_ms in batch.times]
        # Events by (pane, district, station): one dict operation per event; the groups
        # of each scope are unions of these, put back in offset order by sorted() (C).
        districts = batch.col("district") if "district" in kinds else repeat("")
        stations: Iterable[str] = repeat("")
        if "station" in kinds:
            stations = map(str, batch.col(self.index.key_field[event_type]))
        # (strict=False: the scopes not asked for are endless repeats of "")
        finest = positions(zip(panes_of, districts, stations, strict=False))
        unions: dict[tuple[str, int], list[list[int]]] = {}
        for (pane, district, station), at in finest.items():
            if "city" in kinds:
                unions.setdefault(("city", pane), []).append(at)
            if "district" in kinds:
                unions.setdefault(("district:" + district, pane), []).append(at)
            if "station" in kinds:
                unions.setdefault(("station:" + station, pane), []).append(at)
        groups = {
            key: Group(batch, parts[0] if len(parts) == 1 else sorted(chain(*parts)))
            for key, parts in unions.items()
        }
        panes = self.panes
        for ck, fold in plan:
            keep = keeper(ck.where)
            for (scope, pane), group in groups.items():
                if scope.partition(":")[0] not in ck.scopes:
                    continue
                g = group if keep is None else group.where(keep)
                if not g.n:
                    continue
                key = (ck.id, scope, pane)
                p = staged.get(key)
                if p is None:
                    old = panes.get(key)
                    p = staged[key] = Partial() if old is None else clone(old)
                fold(p, g)

    def _apply(self, ev: Event | Decoded) -> str | None:
        """Fold one valid event into its panes; the reason it is too late, else None."""
        t_ms = ev.time_ms
        wmark = self.watermark
        if wmark.too_late(t_ms):
            if wmark.max_event_ms is not None:
                self._count_late(ev.district, wmark.max_event_ms)
            else:
                self.too_late += 1
            return _late_detail(ev)
        wmark.observe(t_ms, self._clock_ms)
        self.processed += 1
        kpis = self.index.by_type.get(ev.type)
        if not kpis:
            return None
        panes = self.panes
        dirty = self._dirty
        data = ev.data
        pane = t_ms - t_ms % self.config.pane_ms
        district = None
        station = None
        for ck in kpis:
            if ck.where:
                ok = True
                for name, allowed in ck.where:
                    if data.get(name) not in allowed:
                        ok = False
                        break
                if not ok:
                    continue
            for kind in ck.scopes:
                if kind == "city":
                    scope = "city"
                elif kind == "district":
                    if district is None:
                        district = "district:" + ev.district
                    scope = district
                else:
                    if station is None:
                        station = "station:" + str(data.get(self.index.key_field[ev.type]))
                    scope = station
                key = (ck.id, scope, pane)
                p = panes.get(key)
                if p is None:
                    p = panes[key] = Partial()
                ck.update(p, data, t_ms)
                dirty.add(key)
        return None

    def _roll_back(self, offset: int, why: str) -> None:
        """Back to the last durable state, with ``offset`` quarantined (see module doc)."""
        quarantine = {**self.quarantine, offset: why}
        durable, base = self._durable, self._base_offset
        counters = (self.processed, self.skipped, self.dead, self.too_late, self.rollbacks)
        duplicates = self.duplicates
        fresh = PartitionAggregator(self.topic, self.partition, self.index, self.config)
        if durable is not None:
            fresh.restore(orjson.loads(durable))
        # The identities seen since the durable state are seen again by the replay.
        self.seen.discard_fresh()
        # Everything after the durable state is applied again by the replay.
        self.applied = fresh.applied
        self.watermark = fresh.watermark
        self.panes = fresh.panes
        # The replay touches again every pane changed since the durable state.
        self._dirty = set()
        self.quarantine = quarantine
        self.processed, self.skipped, self.dead, self.too_late, rollbacks = counters
        self.rollbacks = rollbacks + 1
        self.duplicates = duplicates
        self.rewind_to = self.applied + 1 if durable is not None else base
        self._poison = offset

    def mark_durable(self, snapshot: bytes) -> None:
        """The adapter stored ``snapshot`` (this aggregator's :meth:`snapshot`) durably."""
        self._durable = snapshot
        applied = self.applied
        # Offsets up to the durable state are never fetched again: forget them.
        self.quarantine = {o: why for o, why in self.quarantine.items() if o > applied}

    def _count_late(self, district: str, front_ms: int) -> None:
        """Count a too-late event; ``front_ms`` is the partition's event-time front when
        it came."""
        self.too_late += 1
        late = self.index.late
        if late is None:
            return
        # Counted in the pane of the partition's event-time front: deterministic on replay.
        t = front_ms
        pane = t - t % self.config.pane_ms
        for kind in late.scopes:
            scope = "city" if kind == "city" else f"district:{district}"
            if kind == "station":
                continue
            key = (late.id, scope, pane)
            p = self.panes.get(key)
            if p is None:
                p = self.panes[key] = Partial()
            p.count += 1
            self._dirty.add(key)

    def _dead_letter(self, rec: SourceRecord, raw: bytes, reason: str, detail: str) -> DeadLetter:
        return DeadLetter(
            reason=reason,
            detail=detail,
            source_topic=self.topic,
            source_partition=self.partition,
            source_offset=rec.offset,
            value=raw,
            key=rec.key,
            component=COMPONENT,
        )

    # -- hand-off to the second stage ---------------------------------------------------

    def take_changes(self) -> list[PaneUpdate]:
        """Full states of the panes changed since the last call; drops panes that can
        no longer change (behind the watermark by more than the grace)."""
        aliases = self.index.aliases
        out: list[PaneUpdate] = []
        for k in sorted(self._dirty):
            part = self.panes[k]
            out.append(PaneUpdate(self.source, self.applied, k[0], k[1], k[2], part))
            for alias in aliases.get(k[0], ()):
                out.append(PaneUpdate(self.source, self.applied, alias, k[1], k[2], part))
        self._dirty.clear()
        wm = self.watermark.value
        if wm is not None:
            horizon = wm - self.config.grace_ms
            pane_ms = self.config.pane_ms
            for key in [k for k in self.panes if k[2] + pane_ms <= horizon]:
                del self.panes[key]
        return out

    def report(self, now: float | None = None, topic_partitions: int = 0) -> WatermarkReport:
        return WatermarkReport(
            self.source,
            self.applied,
            self.watermark.value,
            self.watermark.idle(now),
            topic_partitions,
        )

    # -- durable state ------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "applied": self.applied,
            "max_event_ms": self.watermark.max_event_ms,
            "quarantine": [[o, why] for o, why in self.quarantine.items()],
            "ids": self.seen.snapshot(),
            "panes": [[k, s, p, part.to_dict()] for (k, s, p), part in self.panes.items()],
        }

    def take_id_deltas(self) -> list[tuple[int, int, bytes | None]]:
        """The identities added since the last call, and tombstones of the identity
        buckets of panes the watermark left behind (see :meth:`IdentityIndex.take_deltas`):
        stored apart from :meth:`snapshot`, which names the deltas it is made of."""
        wm = self.watermark.value
        pane_ms = self.config.pane_ms
        horizon = None if wm is None else wm - self.config.grace_ms - pane_ms + 1
        return self.seen.take_deltas(horizon)

    def restore(
        self, snap: dict[str, Any], id_deltas: dict[tuple[int, int], bytes] | None = None
    ) -> None:
        """From :meth:`snapshot`; with ``id_deltas`` ((pane, seq) -> stored delta) also
        the identities seen (without: they stay as they are)."""
        self.applied = int(snap["applied"])
        self.watermark.max_event_ms = snap["max_event_ms"]
        self.watermark.touch(time.monotonic())
        self.quarantine = {int(o): str(why) for o, why in snap.get("quarantine", ())}
        self._durable = orjson.dumps(snap)  # what it was restored from is durable
        if id_deltas is not None and "ids" in snap:
            self.seen.restore(snap["ids"], id_deltas)
        self.panes = {(k, s, int(p)): Partial.from_dict(d) for k, s, p, d in snap["panes"]}
        self._dirty.clear()


def _late_detail(ev: Event | Decoded) -> str:
    return (
        f"event time {ev.time.isoformat()} is behind "
        f"the watermark by more than the allowed lateness"
    )
