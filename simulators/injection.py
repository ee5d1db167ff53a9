"""Turning generated events into records, with optional imperfect deliveries.

Real feeds are not clean: gateways buffer and resend, clocks drift, firmware emits
garbage. To test the rest of the pipeline (watermarks, lateness, de-duplication, dead
letters) the simulator can inject, as fractions of the events it sends:

- ``late``: the event time lies ``late_by_s`` (± 20 %) in the past — beyond any
  reasonable allowed lateness, so the stream engine must count it as too late;
- ``out_of_order``: the event time lies 1-30 s in the past — within allowed lateness,
  but behind events already sent;
- ``duplicates``: the same record (same CloudEvent id, same bytes) is sent twice;
- ``malformed``: the bytes break the contract in one of several ways, each of which
  ``events.envelope.decode`` must reject (see :data:`MALFORMED_KINDS`).

Pure: records go out as :class:`Record` tuples; the publisher does the I/O.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import orjson

from events.catalogue import EVENT_TYPES, key_for
from events.envelope import MAX_EVENT_BYTES, encode, epoch_ms, latest_event_ms

# Each kind names the decode failure reason it provokes.
MALFORMED_KINDS: tuple[str, ...] = (
    "undecodable",
    "not_an_object",
    "missing_attribute",
    "unsupported_specversion",
    "unknown_type",
    "bad_time",
    "missing_field",
    "oversize",
)


class Record(NamedTuple):
    """One Kafka record to send: where, with which key, what bytes, and what it is."""

    topic: str
    key: bytes
    value: bytes
    # "ok", "late", "out_of_order", "duplicate" or "malformed:<kind>"
    kind: str
    domain: str
    # The event time, the record's Kafka timestamp (CloudEvents Kafka binding); None lets
    # the producer use its clock (malformed records, times no receiver would accept).
    time_ms: int | None = None


def record_time_ms(event: Mapping[str, Any], now_s: float | None = None) -> int | None:
    """The Kafka timestamp of ``event``'s record: its event time, unless that is no valid
    event time (then None). A time further ahead than receivers allow is None too: the
    broker may refuse a timestamp that far ahead (Kafka 4: more than an hour, by default)
    and with it the whole batch, while the event should reach the dead letters."""
    ts = event.get("time")
    if isinstance(ts, str):
        try:
            ts = datetime.fromisoformat(ts)
        except ValueError:
            return None
    if not isinstance(ts, datetime) or ts.tzinfo is None:
        return None
    ms = epoch_ms(ts)
    latest = latest_event_ms(time.time() if now_s is None else now_s)
    return ms if 0 <= ms <= latest else None


def to_record(event: Mapping[str, Any], kind: str = "ok", now_s: float | None = None) -> Record:
    """The record of a well-formed event: the type's topic, ``key_for`` key, encoded value."""
    et = EVENT_TYPES[event["type"]]
    time_ms = record_time_ms(event, now_s)
    return Record(et.topic, key_for(event), encode(event), kind, et.domain, time_ms)


def _shift_time(event: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    shifted = dict(event)
    ts = event["time"]
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    shifted["time"] = ts - timedelta(seconds=seconds)
    return shifted


def malformed_bytes(event: Mapping[str, Any], kind: str) -> bytes:
    """``event`` broken in the way ``kind`` names; decoding the result must fail."""
    broken: dict[str, Any] = dict(event)
    data = dict(event.get("data") or {})
    if kind == "undecodable":
        raw = encode(event)
        return raw[: max(1, len(raw) // 2)]
    if kind == "not_an_object":
        return orjson.dumps([event.get("id"), event.get("type")])
    if kind == "missing_attribute":
        broken.pop("id", None)
    elif kind == "unsupported_specversion":
        broken["specversion"] = "0.3"
    elif kind == "unknown_type":
        broken["type"] = "vn.ioc.unknown.reading"
    elif kind == "bad_time":
        broken["time"] = "yesterday at noon"
    elif kind == "missing_field":
        data.pop("district", None)
        broken["data"] = data
    elif kind == "oversize":
        data["padding"] = "x" * (MAX_EVENT_BYTES + 1)
        broken["data"] = data
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return encode(broken)


@dataclass(slots=True)
class Injector:
    """Applies the configured injection fractions to a stream of events, deterministically
    for a seed."""

    seed: int = 0
    late: float = 0.0
    late_by_s: float = 900.0
    out_of_order: float = 0.0
    duplicates: float = 0.0
    malformed: float = 0.0
    _rng: random.Random = field(init=False, repr=False)
    _thresholds: tuple[float, float, float, float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"inject:{self.seed}")
        self._thresholds = (
            self.malformed,
            self.malformed + self.late,
            self.malformed + self.late + self.out_of_order,
            self.malformed + self.late + self.out_of_order + self.duplicates,
        )

    @property
    def active(self) -> bool:
        return self._thresholds[-1] > 0.0

    def records(self, events: Iterable[Mapping[str, Any]]) -> list[Record]:
        """Records for ``events``, with injections applied."""
        now = time.time()  # one clock read per batch for the timestamps' bound
        if not self.active:
            return [to_record(e, now_s=now) for e in events]
        rng = self._rng
        t_malformed, t_late, t_ooo, t_dup = self._thresholds
        out: list[Record] = []
        for event in events:
            u = rng.random()
            if u >= t_dup:
                out.append(to_record(event, now_s=now))
            elif u < t_malformed:
                kind = MALFORMED_KINDS[rng.randrange(len(MALFORMED_KINDS))]
                et = EVENT_TYPES[event["type"]]
                out.append(
                    Record(
                        et.topic,
                        key_for(event),
                        malformed_bytes(event, kind),
                        f"malformed:{kind}",
                        et.domain,
                    )
                )
            elif u < t_late:
                jitter = 1.0 + rng.uniform(-0.2, 0.2)
                late = _shift_time(event, self.late_by_s * jitter)
                out.append(to_record(late, "late", now))
            elif u < t_ooo:
                shifted = _shift_time(event, rng.uniform(1.0, 30.0))
                out.append(to_record(shifted, "out_of_order", now))
            else:
                record = to_record(event, now_s=now)
                out.append(record)
                out.append(record._replace(kind="duplicate"))
        return out
